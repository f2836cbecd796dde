//! Per-application profiles' side of the harness: the metadata emulator and an STS emulator
//! sharing its key store (so STS accepts the instance role's credentials, and knows whose every
//! AccessKeyId is), target roles whose permissions and trust policies name the instance role,
//! and the agent's `[sts]` and `[[profile]]` configuration.
//!
//! # Example
//!
//! ```ignore
//! let rig = StsRig::start(&["billing-app"]).await;
//! let mut config = rig.config();
//! add_profiles(&mut config, &[Profile::new("billing", "uid = 0", &role_arn("billing-app"))]);
//! let agent = TestAgent::builder(agent_bin!(), &config).start().await;
//! let served = agent.credentials().await;
//! assert_eq!(rig.role_of(served["AccessKeyId"].as_str().unwrap()), Some("billing-app".into()));
//! ```

use std::path::Path;

use ecs_metadata_emulator::config::DEFAULT_ROLE_NAME;
use ecs_metadata_emulator::sts::{Principal, StsConfig, StsEmulator, TargetRole};
use ecs_metadata_emulator::{Emulator, EmulatorConfig};

use crate::agent::AgentConfig;

/// The account every target role of [`role_arn`] belongs to.
pub const ACCOUNT_ID: &str = "123456789012";

/// The instance role the metadata emulator serves (the principal target roles trust).
pub const INSTANCE_ROLE: &str = DEFAULT_ROLE_NAME;

/// `acs:ram::<ACCOUNT_ID>:role/<role_name>`.
pub fn role_arn(role_name: &str) -> String {
    format!("acs:ram::{ACCOUNT_ID}:role/{role_name}")
}

/// The metadata emulator (instance role [`INSTANCE_ROLE`]) and an STS emulator that accepts
/// its credentials, with the CA file the agent's `[sts] ca_file` names in a temporary
/// directory. Both stop when dropped.
#[derive(Debug)]
pub struct StsRig {
    /// The metadata emulator on `127.0.0.1`.
    pub metadata: Emulator,
    /// The STS emulator on `127.0.0.1` (HTTPS).
    pub sts: StsEmulator,
    /// Holds the CA file.
    _dir: tempfile::TempDir,
}

impl StsRig {
    /// Both emulators, with one target role per name in `roles` ([`role_arn`]) that the
    /// instance role may assume (`sts:AssumeRole` granted, named by the trust policy).
    ///
    /// # Panics
    /// When an emulator cannot start (outside a tokio runtime, no loopback).
    pub async fn start(roles: &[&str]) -> StsRig {
        let roles = roles
            .iter()
            .map(|r| TargetRole::new(&role_arn(r), INSTANCE_ROLE))
            .collect();
        StsRig::with_roles(EmulatorConfig::default(), roles).await
    }

    /// Both emulators: the metadata emulator with `metadata`, STS knowing exactly `roles`.
    ///
    /// # Panics
    /// As [`StsRig::start`].
    pub async fn with_roles(metadata: EmulatorConfig, roles: Vec<TargetRole>) -> StsRig {
        let metadata = crate::metadata::emulator(metadata).await;
        let dir = tempfile::Builder::new()
            .prefix("eca-sts-")
            .tempdir()
            .unwrap();
        let sts = StsEmulator::start(StsConfig {
            keys: metadata.key_store(),
            roles,
            ca_file: Some(dir.path().join("sts-ca.pem")),
            ..StsConfig::default()
        })
        .expect("start the STS emulator");
        StsRig {
            metadata,
            sts,
            _dir: dir,
        }
    }

    /// [`AgentConfig::new`] against the metadata emulator, with `[sts]` pointing at the STS
    /// emulator ([`use_sts`]).
    pub fn config(&self) -> AgentConfig {
        let mut config = AgentConfig::new(&self.metadata.endpoint());
        use_sts(&mut config, &self.sts);
        config
    }

    /// Whose `access_key_id` is: the instance role's (from the metadata emulator) or a target
    /// role's (issued by STS); `None` when neither emulator issued it.
    pub fn principal(&self, access_key_id: &str) -> Option<Principal> {
        self.sts.keys().get(access_key_id).map(|k| k.principal)
    }

    /// The name of the RAM role `access_key_id` belongs to ([`INSTANCE_ROLE`] for the instance
    /// role's); `None` when unknown or a user's.
    pub fn role_of(&self, access_key_id: &str) -> Option<String> {
        match self.principal(access_key_id)? {
            Principal::Role(name) => Some(name),
            Principal::User(_) => None,
        }
    }

    /// The AccessKeySecret and SecurityToken of `access_key_id`, for
    /// [`assert_no_secret`](crate::assert_no_secret).
    ///
    /// # Panics
    /// When the key is unknown or has no SecurityToken (every role key has one).
    pub fn secrets_of(&self, access_key_id: &str) -> Vec<String> {
        let key = self
            .sts
            .keys()
            .get(access_key_id)
            .unwrap_or_else(|| panic!("{access_key_id} was issued by neither emulator"));
        vec![
            key.access_key_secret,
            key.security_token
                .expect("a role's key has a SecurityToken"),
        ]
    }
}

/// Sets `[sts] endpoint` and `[sts] ca_file` to `sts`'s (which must have written its CA file).
///
/// # Panics
/// When `sts` has no CA file.
pub fn use_sts(config: &mut AgentConfig, sts: &StsEmulator) {
    let ca_file = sts.ca_file().expect("the STS emulator wrote its CA file");
    config
        .set("sts", "endpoint", &toml_string(&sts.endpoint()))
        .set("sts", "ca_file", &toml_path(ca_file));
}

/// One `[[profile]]` table.
#[derive(Debug, Clone)]
pub struct Profile {
    name: String,
    selector: String,
    role_arn: String,
    keys: Vec<(String, String)>,
}

impl Profile {
    /// `name = "<name>"`, `match = { <selector> }` (the inline table's body as TOML, e.g.
    /// `uid = 5001` or `exe = "/usr/bin/billing"`: see [`toml_string`]), `role_arn`.
    pub fn new(name: &str, selector: &str, role_arn: &str) -> Profile {
        Profile {
            name: name.to_owned(),
            selector: selector.to_owned(),
            role_arn: role_arn.to_owned(),
            keys: Vec::new(),
        }
    }

    /// Adds `key = value` (`value` a TOML literal), e.g. `("duration_secs", "900")`.
    pub fn key(mut self, key: &str, value: &str) -> Profile {
        self.keys.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The table as TOML.
    pub fn toml(&self) -> String {
        let mut out = format!(
            "[[profile]]\nname = {}\nmatch = {{ {} }}\nrole_arn = {}\n",
            toml_string(&self.name),
            self.selector,
            toml_string(&self.role_arn)
        );
        for (k, v) in &self.keys {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}

/// Appends `profiles`' tables, in order, to `config` ([`AgentConfig::raw`]).
pub fn add_profiles(config: &mut AgentConfig, profiles: &[Profile]) {
    for p in profiles {
        config.raw(&p.toml());
    }
}

/// `s` as a TOML basic string (quoted, escaped).
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `path` as a TOML basic string.
///
/// # Panics
/// When the path is not UTF-8.
pub fn toml_path(path: &Path) -> String {
    toml_string(path.to_str().expect("a UTF-8 path"))
}
