//! `bench`: the agent measured beside its floor and its alternatives, in one run, with the
//! performance targets checked (see `run.rs` and the README's "Performance" section).
//!
//! `bench` alone runs the full benchmark (about five minutes); `bench --smoke` a few seconds
//! that check only counts (the cold-start herd makes one token PUT and one credential GET, a
//! profile's makes one `AssumeRole`, no request fails, over the socket and the loopback
//! listener, for an instance-role and a profile caller); `bench --profiles-only` the profile
//! comparison alone (`profile/`). The other subcommands are the benchmark's own child
//! processes.

#![forbid(unsafe_code)]

mod load;
mod lookup;
mod procfs;
mod profile;
mod raw;
mod report;
mod run;
mod servers;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use load::{Addr, Mode, Window};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks ecs-credential-agent against its floor and alternatives")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: run::Options,
}

/// The benchmark's child processes (not for direct use).
#[derive(Debug, Subcommand)]
enum Cmd {
    /// The floor server: canned response bytes from FILE.
    #[command(hide = true)]
    Floor { socket: PathBuf, response: PathBuf },
    /// Bare hyper returning the body in FILE, on a Unix socket or `127.0.0.1:PORT`.
    #[command(hide = true)]
    Hyper {
        socket: Addr,
        body: PathBuf,
        /// Run the accept loop in a task on a worker thread instead of in the runtime's
        /// `block_on` (where the agent runs its own).
        #[arg(long)]
        accept_on_worker: bool,
    },
    /// Socket (or, raw client only, loopback TCP) load over a window.
    #[command(hide = true)]
    Load {
        socket: Addr,
        mode: Mode,
        concurrency: usize,
        warmup_ms: u64,
        duration_ms: u64,
        /// The raw client (threads, blocking sockets), or an async tokio client.
        #[arg(long, value_enum, default_value_t = Client::Raw)]
        client: Client,
    },
    /// Exactly N requests with the raw client (`callgrind.sh`).
    #[command(hide = true)]
    Requests {
        socket: Addr,
        mode: Mode,
        concurrency: usize,
        n: u64,
    },
    /// A metadata emulator on loopback: prints its endpoint, runs until killed (`callgrind.sh`).
    #[command(hide = true)]
    Emulator {
        /// Also an STS emulator (the profile's role), its CA written to this file; prints
        /// `sts listening on ENDPOINT`.
        #[arg(long)]
        sts_ca_file: Option<PathBuf>,
    },
    /// Writes the body of one `GET /v1/credentials` on SOCKET to FILE (`callgrind.sh`).
    #[command(hide = true)]
    Fetch { socket: PathBuf, body: PathBuf },
    /// The client library, cached or not.
    #[command(hide = true)]
    ClientLib {
        socket: PathBuf,
        #[arg(action = clap::ArgAction::Set)]
        cached: bool,
        concurrency: usize,
        warmup_ms: u64,
        duration_ms: u64,
    },
    /// Token PUT + credential GET against the metadata emulator.
    #[command(hide = true)]
    Direct {
        addr: String,
        role: String,
        concurrency: usize,
        warmup_ms: u64,
        duration_ms: u64,
    },
    /// The cold-start herd.
    #[command(hide = true)]
    Herd {
        socket: PathBuf,
        n: usize,
        timeout_ms: u64,
    },
    /// Holds N idle connections until stdin gets a line.
    #[command(hide = true)]
    Hold { socket: PathBuf, n: usize },
}

/// The load generator of `bench load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Client {
    /// [`raw::raw_load`].
    Raw,
    /// [`load::socket_load`].
    Tokio,
}

fn window(warmup_ms: u64, duration_ms: u64) -> Window {
    Window {
        warmup: Duration::from_millis(warmup_ms),
        duration: Duration::from_millis(duration_ms),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(cmd) = cli.cmd else {
        return run::main(cli.run);
    };
    procfs::raise_open_files_limit();
    // The raw client runs no async runtime at all.
    let result = match cmd {
        Cmd::Load {
            socket,
            mode,
            concurrency,
            warmup_ms,
            duration_ms,
            client: Client::Raw,
        } => Some(raw::raw_load(
            &socket,
            mode,
            concurrency,
            raw::Until::Window(window(warmup_ms, duration_ms)),
        )),
        Cmd::Requests {
            socket,
            mode,
            concurrency,
            n,
        } => Some(raw::raw_load(
            &socket,
            mode,
            concurrency,
            raw::Until::Requests(n),
        )),
        Cmd::Fetch { socket, body } => {
            return match run::get_once(&socket) {
                Some(raw) => {
                    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    std::fs::write(body, &raw[head_end..]).expect("write the body");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("bench fetch: no 200 answer on {}", socket.display());
                    ExitCode::FAILURE
                }
            };
        }
        cmd => {
            return run_async(cmd);
        }
    };
    print_result(result);
    ExitCode::SUCCESS
}

fn print_result(result: Option<load::LoadResult>) {
    if let Some(result) = result {
        println!(
            "{}",
            serde_json::to_string(&result).expect("serialise the result")
        );
    }
}

/// The subcommands that run on the agent's runtime.
fn run_async(cmd: Cmd) -> ExitCode {
    let rt = servers::agent_like_runtime();
    let result = match cmd {
        Cmd::Floor { socket, response } => {
            let response = std::fs::read(response).expect("read the response file");
            rt.block_on(servers::floor(&socket, response));
            return ExitCode::SUCCESS;
        }
        Cmd::Hyper {
            socket,
            body,
            accept_on_worker,
        } => {
            let body = std::fs::read(body).expect("read the body file");
            if accept_on_worker {
                let server = rt.spawn(async move { servers::bare_hyper(socket, body).await });
                let _ = rt.block_on(server);
            } else {
                rt.block_on(servers::bare_hyper(socket, body));
            }
            return ExitCode::SUCCESS;
        }
        Cmd::Emulator { sts_ca_file } => {
            rt.block_on(servers::emulator(sts_ca_file));
            return ExitCode::SUCCESS;
        }
        Cmd::Load {
            socket,
            mode,
            concurrency,
            warmup_ms,
            duration_ms,
            client: Client::Tokio,
        } => rt.block_on(load::socket_load(
            match socket {
                Addr::Unix(path) => path,
                Addr::Tcp(_) => panic!("the tokio client speaks over a Unix socket only"),
            },
            mode,
            concurrency,
            window(warmup_ms, duration_ms),
        )),
        Cmd::ClientLib {
            socket,
            cached,
            concurrency,
            warmup_ms,
            duration_ms,
        } => rt.block_on(load::client_lib_load(
            socket,
            cached,
            concurrency,
            window(warmup_ms, duration_ms),
        )),
        Cmd::Direct {
            addr,
            role,
            concurrency,
            warmup_ms,
            duration_ms,
        } => rt.block_on(load::direct_load(
            addr,
            role,
            concurrency,
            window(warmup_ms, duration_ms),
        )),
        Cmd::Herd {
            socket,
            n,
            timeout_ms,
        } => rt.block_on(load::herd(socket, n, Duration::from_millis(timeout_ms))),
        Cmd::Hold { socket, n } => rt.block_on(load::hold(socket, n)),
        Cmd::Load { .. } | Cmd::Requests { .. } | Cmd::Fetch { .. } => {
            unreachable!("run without a runtime")
        }
    };
    print_result(Some(result));
    ExitCode::SUCCESS
}
