//! `ecs-metadata-emulator`: runs the ECS metadata service emulator until interrupted.
//!
//! Prints `listening on http://ADDR` on stdout once bound, so scripts can read the port, and
//! runs until Ctrl-C (SIGINT). See the library docs for the protocol and the `/_emulator/`
//! control API, and the README's "The emulator on its own" for running the agent against it
//! (`cargo run -p ecs-metadata-emulator -- --listen 127.0.0.1:9100`, then
//! `ecs-credential-agent serve --endpoint http://127.0.0.1:9100`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ecs_metadata_emulator::{Emulator, EmulatorConfig};

/// Emulates the ECS instance metadata service (hardened mode, RAM role credentials) on a local
/// port, with a control API under /_emulator/.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name of the attached RAM role.
    #[arg(long, default_value = ecs_metadata_emulator::config::DEFAULT_ROLE_NAME)]
    role_name: String,
    /// Start with no RAM role attached.
    #[arg(long)]
    no_role: bool,
    /// Normal mode: also serve GETs without a metadata token (default: hardened-only, 403).
    #[arg(long)]
    normal_mode: bool,
    /// Credential lifetime (Expiration − LastUpdated) in seconds [default: 21600].
    #[arg(long)]
    lifetime_secs: Option<u64>,
    /// Seconds after LastUpdated at which a new credential generation is served
    /// [default: lifetime − 3600, or half the lifetime if under 2 h].
    #[arg(long)]
    rotate_after_secs: Option<u64>,
    /// Served on /latest/meta-data/region-id.
    #[arg(long, default_value = ecs_metadata_emulator::config::DEFAULT_REGION_ID)]
    region_id: String,
    /// Served on /latest/meta-data/instance-id.
    #[arg(long, default_value = ecs_metadata_emulator::config::DEFAULT_INSTANCE_ID)]
    instance_id: String,
    /// Turn off the /_emulator/ control API.
    #[arg(long)]
    no_control_api: bool,
}

impl Args {
    fn config(&self) -> EmulatorConfig {
        let defaults = EmulatorConfig::default();
        EmulatorConfig {
            role_name: (!self.no_role).then(|| self.role_name.clone()),
            hardened_only: !self.normal_mode,
            credential_lifetime: self
                .lifetime_secs
                .map_or(defaults.credential_lifetime, Duration::from_secs),
            rotate_after: self.rotate_after_secs.map(Duration::from_secs),
            control_api: !self.no_control_api,
            region_id: self.region_id.clone(),
            instance_id: self.instance_id.clone(),
            ..defaults
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let emulator = match Emulator::start(args.listen, args.config()) {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("ecs-metadata-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening on {}", emulator.endpoint())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("ecs-metadata-emulator: cannot wait for Ctrl-C: {e}");
    }
    emulator.shutdown().await;
    ExitCode::SUCCESS
}
