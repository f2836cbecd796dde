//! The STS side of a fault-matrix row ([`StsSetup`], [`Sts`]): an STS emulator beside the row's
//! metadata emulator, sharing its key store (so the instance role's credentials sign
//! `AssumeRole`), and a `[[profile]]` matching the probers' uid (first match wins), so the same
//! probers and the same [`Checker`](super::Checker) exercise the profile's assumed role instead
//! of the instance role.
//!
//! STS grants sessions of at least 900 s ([`MIN_DURATION`]); rows that watch a refresh need one
//! within seconds. [`StsSetup::sessions_of`] runs the emulator's clock behind true time
//! ([`LaggingClock`]): a 900 s session it grants then ends `lifetime` after true time, while its
//! answers' `Date` header (hyper's, from the system clock) and the request time stamps it
//! checks (within 15 minutes) stay true.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecs_metadata_emulator::config::DEFAULT_ROLE_NAME;
use ecs_metadata_emulator::sts::{
    KeyStore, Principal, RoleCounts, StsConfig, StsCounts, StsEmulator, TargetRole, MIN_DURATION,
};
use ecs_metadata_emulator::{Emulator, TimeSource};

use super::Sample;
use crate::agent::AgentConfig;

/// The role a row's profile assumes unless the row says otherwise.
pub const ROLE_ARN: &str = "acs:ram::123456789012:role/matrix-app";
/// The profile's name (in the agent's logs and in the `RoleSessionName`).
pub const PROFILE: &str = "fm-app";
/// `[sts] connect_timeout_ms` of STS rows (TLS handshake included): test scale, with room for a
/// loaded machine.
pub const STS_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// `[sts] read_timeout_ms` of STS rows: short, so a hanging STS shows within seconds.
pub const STS_READ_TIMEOUT: Duration = Duration::from_millis(1000);
/// One `AssumeRole`'s deadline as the agent sets it (connect + 2 × read): a hanging STS shows
/// after it, and a request already hanging when a fault clears runs into it.
pub const STS_REQUEST_DEADLINE: Duration =
    STS_CONNECT_TIMEOUT.saturating_add(STS_READ_TIMEOUT.saturating_mul(2));
/// Session lifetime for rows that watch a refresh: the agent refreshes at about half-life (7–8
/// s) and serves until 15 s, so a fault at the refresh (even one running into
/// [`STS_READ_TIMEOUT`]) shows while the cached credentials are still valid.
pub const WARM_SESSION: Duration = Duration::from_secs(16);
/// How long a row waits for an event it asserts on (generous: CI runs the matrix again under
/// busy loops).
pub const EVENT_WITHIN: Duration = Duration::from_secs(60);

/// Called with the row's STS and metadata emulators before the agent starts.
pub type BeforeStart = Box<dyn Fn(&StsEmulator, &Emulator) + Send + Sync>;

/// How a row's STS emulator and profile are set up.
pub struct StsSetup {
    /// The roles the emulator knows.
    pub roles: Vec<TargetRole>,
    /// The profile's `role_arn`.
    pub role_arn: &'static str,
    /// The profile's `duration_secs`.
    pub duration_secs: u32,
    /// The profile's session `policy` (JSON), if any.
    pub policy: Option<String>,
    /// How far behind true time the emulator's clock starts ([`LaggingClock`]).
    pub clock_behind: Duration,
    /// Applied before the agent starts (a fault present from the start).
    pub before_start: BeforeStart,
}

impl std::fmt::Debug for StsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsSetup")
            .field("roles", &self.roles)
            .field("role_arn", &self.role_arn)
            .field("duration_secs", &self.duration_secs)
            .field("policy", &self.policy)
            .field("clock_behind", &self.clock_behind)
            .finish_non_exhaustive()
    }
}

impl Default for StsSetup {
    /// [`ROLE_ARN`], assumable by the metadata emulator's role ([`DEFAULT_ROLE_NAME`]), sessions
    /// of 900 s by a true clock, no policy, no fault.
    fn default() -> StsSetup {
        StsSetup {
            roles: vec![TargetRole::new(ROLE_ARN, DEFAULT_ROLE_NAME)],
            role_arn: ROLE_ARN,
            duration_secs: MIN_DURATION.as_secs() as u32,
            policy: None,
            clock_behind: Duration::ZERO,
            before_start: Box::new(|_, _| {}),
        }
    }
}

impl StsSetup {
    /// The default, with sessions ending `lifetime` (under 900 s) after true time.
    pub fn sessions_of(lifetime: Duration) -> StsSetup {
        StsSetup {
            clock_behind: MIN_DURATION.saturating_sub(lifetime),
            ..StsSetup::default()
        }
    }

    /// The `[[profile]]` table: this setup's role, matching callers of effective uid `uid`.
    pub fn profile_toml(&self, uid: u32) -> String {
        let mut t = format!(
            "\n[[profile]]\nname = {PROFILE:?}\nmatch = {{ uid = {uid} }}\nrole_arn = {:?}\n\
             duration_secs = {}\n",
            self.role_arn, self.duration_secs
        );
        if let Some(policy) = &self.policy {
            t.push_str(&format!("policy = {policy:?}\n"));
        }
        t
    }
}

/// The STS emulator's wall clock: true time less an adjustable lag.
#[derive(Debug, Default)]
pub struct LaggingClock {
    behind_ms: AtomicU64,
}

impl LaggingClock {
    /// Runs the clock `behind` true time from now on.
    pub fn set_behind(&self, behind: Duration) {
        let ms = u64::try_from(behind.as_millis()).unwrap_or(u64::MAX);
        self.behind_ms.store(ms, Ordering::Relaxed);
    }
}

impl TimeSource for LaggingClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() - Duration::from_millis(self.behind_ms.load(Ordering::Relaxed))
    }
}

/// A row's STS emulator, its clock, and the role the row's profile assumes.
#[derive(Debug)]
pub struct Sts {
    /// The emulator (faults, counts).
    pub emu: StsEmulator,
    /// Its clock.
    pub clock: Arc<LaggingClock>,
    /// The profile's `role_arn`.
    pub role_arn: &'static str,
}

impl Sts {
    /// Starts the emulator for `setup` beside `metadata` (its key store), its CA file in `dir`,
    /// and points `config` at it: `[sts] endpoint`, `ca_file`, the test-scale timeouts, and the
    /// profile matching the test's own effective uid (the probers').
    ///
    /// # Errors
    /// When the emulator cannot start.
    pub fn start(
        setup: &StsSetup,
        metadata: &Emulator,
        dir: &Path,
        config: &mut AgentConfig,
    ) -> Result<Sts, String> {
        let clock = Arc::new(LaggingClock::default());
        clock.set_behind(setup.clock_behind);
        let ca_file = dir.join("sts-ca.pem");
        let emu = StsEmulator::start(StsConfig {
            keys: metadata.key_store(),
            roles: setup.roles.clone(),
            ca_file: Some(ca_file.clone()),
            clock: clock.clone(),
            ..StsConfig::default()
        })
        .map_err(|e| format!("STS emulator: {e}"))?;
        (setup.before_start)(&emu, metadata);
        let ms = |d: Duration| d.as_millis().to_string();
        config.set("sts", "endpoint", &format!("{:?}", emu.endpoint()));
        config.set(
            "sts",
            "ca_file",
            &format!("{:?}", ca_file.display().to_string()),
        );
        config.set("sts", "connect_timeout_ms", &ms(STS_CONNECT_TIMEOUT));
        config.set("sts", "read_timeout_ms", &ms(STS_READ_TIMEOUT));
        config.raw(&setup.profile_toml(nix::unistd::geteuid().as_raw()));
        Ok(Sts {
            emu,
            clock,
            role_arn: setup.role_arn,
        })
    }

    /// The calls naming the profile's role so far.
    pub fn role(&self) -> RoleCounts {
        self.emu.counts().role(self.role_arn)
    }

    /// Waits (up to [`EVENT_WITHIN`]) until `done` holds for the emulator's counts; `what`
    /// names the event in the error.
    ///
    /// # Errors
    /// When it did not happen in time, with the counts.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl FnMut(&StsCounts) -> bool,
    ) -> Result<StsCounts, String> {
        tokio::time::timeout(EVENT_WITHIN, self.emu.wait_for(done))
            .await
            .map_err(|_| {
                format!(
                    "STS: {what} did not happen within {EVENT_WITHIN:?}; counts {:?}",
                    self.emu.counts()
                )
            })
    }

    /// Every `200` in `samples` carries credentials this emulator issued for the profile's role
    /// (looked up in `keys`): never the instance role's, never anything else.
    ///
    /// # Errors
    /// As [`only_assumed_served`].
    pub fn only_assumed_served(&self, keys: &KeyStore, samples: &[Sample]) -> Result<(), String> {
        only_assumed_served(keys, self.role_arn, samples)
    }
}

/// Every `200` in `samples` carries an AccessKeyId that `keys` holds as role `role_arn`'s (the
/// name after `:role/`): an assumed session of that role, never the instance role's
/// credentials, never anything else.
///
/// # Errors
/// The first other AccessKeyId served, whose it is, and how many there were.
pub fn only_assumed_served(
    keys: &KeyStore,
    role_arn: &str,
    samples: &[Sample],
) -> Result<(), String> {
    let name = role_arn.split_once(":role/").map_or(role_arn, |(_, n)| n);
    let role = Principal::Role(name.to_owned());
    let other: Vec<(&Sample, Option<Principal>)> = samples
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| (s, keys.get(&s.access_key_id).map(|k| k.principal)))
        .filter(|(_, whose)| whose.as_ref() != Some(&role))
        .collect();
    match other.first() {
        None => Ok(()),
        Some((s, whose)) => Err(format!(
            "{} answers served credentials other than the profile's assumed role {role_arn}; \
             first: AccessKeyId {} of {whose:?} over {:?}",
            other.len(),
            s.access_key_id,
            s.transport
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ecs_metadata_emulator::sts::AccessKey;

    use super::*;
    use crate::matrix::Transport;

    fn sample(status: u16, access_key_id: &str) -> Sample {
        let now = Instant::now();
        Sample {
            transport: Transport::Socket,
            sent: now,
            received: now,
            status,
            code: String::new(),
            message: String::new(),
            access_key_id: access_key_id.to_owned(),
        }
    }

    fn role_key(keys: &KeyStore, id: &str, role: &str) {
        keys.insert(
            id,
            AccessKey {
                principal: Principal::Role(role.to_owned()),
                access_key_secret: format!("{id}-secret"),
                security_token: Some(format!("{id}-token")),
                expiration: None,
            },
        );
    }

    #[test]
    fn only_the_profile_s_assumed_role_passes() {
        let keys = KeyStore::new();
        role_key(&keys, "STS.assumed", "matrix-app");
        role_key(&keys, "STS.instance", DEFAULT_ROLE_NAME);
        let fine = [sample(200, "STS.assumed"), sample(503, "")];
        assert_eq!(only_assumed_served(&keys, ROLE_ARN, &fine), Ok(()));
        for bad in ["STS.instance", "STS.unknown"] {
            let samples = [sample(200, "STS.assumed"), sample(200, bad)];
            let e = only_assumed_served(&keys, ROLE_ARN, &samples).unwrap_err();
            assert!(e.starts_with("1 answers") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn sessions_of_runs_the_clock_behind_by_the_rest_of_900_s() {
        let setup = StsSetup::sessions_of(WARM_SESSION);
        assert_eq!(setup.clock_behind + WARM_SESSION, MIN_DURATION);
        let clock = LaggingClock::default();
        clock.set_behind(setup.clock_behind);
        let lagging = clock.now();
        let behind = SystemTime::now().duration_since(lagging).unwrap();
        assert!(
            behind >= setup.clock_behind && behind < setup.clock_behind + Duration::from_secs(5)
        );
    }

    #[test]
    fn profile_toml_matches_the_uid_and_carries_the_policy() {
        let setup = StsSetup {
            policy: Some(r#"{"Version":"1"}"#.to_owned()),
            ..StsSetup::default()
        };
        let toml = setup.profile_toml(1234);
        assert!(
            toml.contains("\n[[profile]]\nname = \"fm-app\"\nmatch = { uid = 1234 }\n"),
            "{toml}"
        );
        assert!(
            toml.contains(&format!("role_arn = \"{ROLE_ARN}\"\nduration_secs = 900\n")),
            "{toml}"
        );
        assert!(toml.contains(r#"policy = "{\"Version\":\"1\"}""#), "{toml}");
    }
}
