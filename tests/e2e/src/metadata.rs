//! The metadata service side: the emulator in this process, on loopback.

use std::time::Duration;

use ecs_metadata_emulator::{Emulator, EmulatorConfig};

/// Starts an emulator on 127.0.0.1 with a free port.
///
/// # Panics
/// When it cannot listen.
pub async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), config).expect("start the metadata emulator")
}

/// An emulator config with credentials of `lifetime_secs` that rotate after `rotate_secs`.
pub fn short_lived(lifetime_secs: u64, rotate_secs: u64) -> EmulatorConfig {
    EmulatorConfig {
        credential_lifetime: Duration::from_secs(lifetime_secs),
        rotate_after: Some(Duration::from_secs(rotate_secs)),
        ..EmulatorConfig::default()
    }
}
