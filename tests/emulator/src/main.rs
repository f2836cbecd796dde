//! `ecs-metadata-emulator`: runs the ECS metadata service emulator (and, with `--sts-listen`,
//! the STS emulator beside it) until interrupted.
//!
//! Prints `listening on http://ADDR` on stdout once bound, so scripts can read the port, then
//! with `--sts-listen` `sts listening on https://ADDR`, and runs until Ctrl-C (SIGINT). See the library docs for the protocol and the `/_emulator/`
//! control API, and the README's "The emulator on its own" for running the agent against it
//! (`cargo run -p ecs-metadata-emulator -- --listen 127.0.0.1:9100`, then
//! `ecs-credential-agent serve --endpoint http://127.0.0.1:9100`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ecs_metadata_emulator::sts::{KeyStore, StsConfig, StsEmulator, TargetRole};
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
    /// Also run the STS emulator (AssumeRole over HTTPS) on this address; port 0 picks a free
    /// port. It accepts the metadata emulator's credentials as the RAM role --role-name.
    #[arg(long, requires = "sts_ca_file")]
    sts_listen: Option<SocketAddr>,
    /// Where the STS emulator writes its CA certificate (PEM): the agent's `[sts] ca_file`.
    #[arg(long, requires = "sts_listen")]
    sts_ca_file: Option<PathBuf>,
    /// A role the STS emulator lets --role-name (and every --sts-access-key user) assume:
    /// `acs:ram::<account>:role/<name>`, optionally `,max=SECONDS` for its MaxSessionDuration
    /// [default max: 3600]. Repeat for more roles.
    #[arg(
        long = "sts-role",
        value_name = "ARN[,max=SECONDS]",
        requires = "sts_listen"
    )]
    sts_roles: Vec<String>,
    /// A long-term AccessKey the STS emulator accepts, as `USER:ACCESS_KEY_ID:ACCESS_KEY_SECRET`
    /// (test values only: the command line is visible to other users). Repeatable.
    #[arg(
        long = "sts-access-key",
        value_name = "USER:ID:SECRET",
        requires = "sts_listen"
    )]
    sts_access_keys: Vec<String>,
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

impl Args {
    /// The STS emulator's configuration, when `--sts-listen` is given.
    fn sts_config(&self, keys: KeyStore) -> Result<Option<StsConfig>, String> {
        let Some(listen) = self.sts_listen else {
            return Ok(None);
        };
        let mut principals = vec![self.role_name.clone()];
        for spec in &self.sts_access_keys {
            let mut parts = spec.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(user), Some(id), Some(secret))
                    if !user.is_empty() && !id.is_empty() && !secret.is_empty() =>
                {
                    keys.add_long_term(user, id, secret);
                    principals.push(user.to_owned());
                }
                _ => {
                    return Err(
                        "--sts-access-key must be USER:ACCESS_KEY_ID:ACCESS_KEY_SECRET".into(),
                    )
                }
            }
        }
        let mut roles = Vec::new();
        for spec in &self.sts_roles {
            let (arn, max) = match spec.split_once(",max=") {
                Some((arn, max)) => {
                    let secs: u64 = max
                        .parse()
                        .map_err(|_| format!("--sts-role {spec:?}: max must be whole seconds"))?;
                    (arn, Duration::from_secs(secs))
                }
                None => (
                    spec.as_str(),
                    ecs_metadata_emulator::sts::DEFAULT_MAX_SESSION_DURATION,
                ),
            };
            let mut role = TargetRole::new(arn, &self.role_name).with_max_session_duration(max);
            role.permitted = principals.clone();
            role.trusted = principals.clone();
            roles.push(role);
        }
        Ok(Some(StsConfig {
            listen,
            ca_file: self.sts_ca_file.clone(),
            keys,
            roles,
            ..StsConfig::default()
        }))
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
    let sts = match args.sts_config(emulator.key_store()).and_then(|config| {
        config
            .map(|c| StsEmulator::start(c).map_err(|e| e.to_string()))
            .transpose()
    }) {
        Ok(sts) => sts,
        Err(e) => {
            eprintln!("ecs-metadata-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut lines = format!("listening on {}\n", emulator.endpoint());
    if let Some(sts) = &sts {
        lines.push_str(&format!("sts listening on {}\n", sts.endpoint()));
    }
    if stdout
        .write_all(lines.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("ecs-metadata-emulator: cannot wait for Ctrl-C: {e}");
    }
    if let Some(sts) = sts {
        sts.shutdown().await;
    }
    emulator.shutdown().await;
    ExitCode::SUCCESS
}
