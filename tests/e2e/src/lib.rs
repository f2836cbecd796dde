//! The end-to-end harness of `ecs-credential-agent`: the metadata emulator in the test process,
//! the agent as a real child process on a socket in a temporary directory, and a raw HTTP/1.1
//! client. The suites are in `tests/`; this package also builds the agent's command line as the
//! binary `e2e-agent` (`src/bin/e2e-agent.rs`), with test-only hooks, for them to run, and
//! `e2e-metadata-call` (one metadata token request, for the lockdown test to run as a given uid).
//!
//! Everything talks over loopback or Unix sockets; the agent is always given the emulator's
//! endpoint, never the real metadata address.
//!
//! # Layout
//!
//! - [`agent`]: [`AgentConfig`] (test-scale configuration keys and environment) and
//!   [`TestAgent`], started through [`TestAgent::builder`] (directory, socket path, a wrapper
//!   command such as `setpriv` or `unshare`, systemd socket activation) and read from (answers,
//!   logs, exit status, memory).
//! - [`http`]: the raw client and [`Response`].
//! - [`metadata`]: the emulator on `127.0.0.1:0`.
//! - [`matrix`]: the fault matrix's harness (a row's [`Run`](matrix::Run), the shared
//!   [`Checker`](matrix::Checker) of served credentials).
//! - [`sts`]: per-application profiles: the metadata and STS emulators sharing one key store
//!   ([`StsRig`](sts::StsRig)), target roles, `[sts]` and `[[profile]]` configuration.
//! - [`nobody`]: callers as uid 65534; [`host`]: privileges, limits, `/proc`; [`wait`]:
//!   [`eventually`]; [`secrets`]: [`assert_no_secret`].
//!
//! # Which agent binary
//!
//! A suite passes the binary to run: [`agent_bin!()`] in the test file, which expands there to
//! `env!("CARGO_BIN_EXE_e2e-agent")`. Cargo sets that variable only while compiling the
//! package's integration tests and benches, not this library, so the library cannot name the
//! binary itself; the macro keeps the one spelling here. The alternative, guessing
//! `target/<profile>/e2e-agent` from [`std::env::current_exe`], breaks whenever the test
//! executable is not where cargo's layout puts it (`--target` triples, `cargo nextest`
//! archives, a copied test binary); the path cargo hands the test at compile time is the one it
//! built, always. The hostile suite may run another build instead
//! ([`agent_bin_under_test`], `ECS_AGENT_BIN`).
//!
//! # Example
//!
//! ```ignore
//! use ecs_credential_agent_e2e::*;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn serves_the_emulator_s_credentials() {
//!     let emu = emulator(Default::default()).await;
//!     let config = AgentConfig::new(&emu.endpoint());
//!     let agent = TestAgent::builder(agent_bin!(), &config).start().await;
//!     let served = agent.credentials().await;
//!     let emulated = emu.current_credentials().unwrap();
//!     assert_eq!(served["AccessKeyId"], emulated.access_key_id.as_str());
//! }
//! ```
//!
//! (`ignore`: a doctest is not an integration test, so `agent_bin!()` has no binary there.)

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod agent;
pub mod host;
pub mod http;
pub mod matrix;
pub mod metadata;
pub mod nobody;
pub mod secrets;
pub mod sts;
pub mod wait;

pub use agent::{agent_bin_under_test, AgentBuilder, AgentConfig, TestAgent};
pub use host::{is_root, raise_open_files_limit};
pub use http::{parse_response, request, Response};
pub use metadata::{emulator, short_lived};
pub use nobody::{get_as_nobody, NOBODY};
pub use secrets::assert_no_secret;
pub use wait::eventually;

/// The `e2e-agent` binary this package builds, as a `&'static Path`. Use it in the package's
/// integration tests only: it expands there to `env!("CARGO_BIN_EXE_e2e-agent")`, which cargo
/// sets for them (see the crate docs).
#[macro_export]
macro_rules! agent_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_e2e-agent"))
    };
}

/// Skips the calling test with a visible message unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("SKIPPED: {} needs root (CI runs as root)", module_path!());
            return;
        }
    };
}
