//! The emulator's configuration, with every default in one place.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{SharedTimeSource, SystemClock};

/// Default RAM role name, the one used in the ECS documentation's examples.
pub const DEFAULT_ROLE_NAME: &str = "EcsRamRoleDemo";

/// Default credential lifetime (`Expiration − LastUpdated`): every documented example shows 6 h
/// (`docs/metadata-service.md` §Rotation and role changes).
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// How long before `Expiration` a new credential generation appears by default, when the
/// lifetime allows it (see [`EmulatorConfig::effective_rotate_after`]). The real schedule is
/// undocumented; 1 h before expiry is an assumption.
pub const DEFAULT_ROTATE_BEFORE_EXPIRY: Duration = Duration::from_secs(3600);

/// Default `/latest/meta-data/region-id`: the region of the ECS documentation's examples.
pub const DEFAULT_REGION_ID: &str = "cn-hangzhou";

/// Default `/latest/meta-data/instance-id`: the shape of a real one (`i-` and 20 lower-case
/// letters and digits, 22 characters in all).
pub const DEFAULT_INSTANCE_ID: &str = "i-bp67acfmxazb4ph0emu1";

/// Largest metadata token TTL, in seconds, accepted by `PUT /latest/api/token` (documented range
/// 1..=21600).
pub const DEFAULT_MAX_TOKEN_TTL_SECS: u64 = 21_600;

/// Configuration of an [`Emulator`](crate::Emulator).
///
/// `Default` gives a hardened-only instance in [`DEFAULT_REGION_ID`], id
/// [`DEFAULT_INSTANCE_ID`], with role [`DEFAULT_ROLE_NAME`] attached,
/// [`DEFAULT_CREDENTIAL_LIFETIME`], the default rotation point, the real clock, and the control
/// API on.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The attached RAM role; `None` = no role attached (both credential paths answer 404).
    pub role_name: Option<String>,
    /// `true`: hardened-only instance (`HttpTokens=required`): a GET without a metadata token is
    /// refused with 403. `false`: normal mode, tokenless GETs are served.
    pub hardened_only: bool,
    /// `Expiration − LastUpdated` of each credential generation. At least 1 s is used.
    pub credential_lifetime: Duration,
    /// Time after `LastUpdated` at which the next GET gets a new credential generation; `None`
    /// = the default, see [`EmulatorConfig::effective_rotate_after`].
    pub rotate_after: Option<Duration>,
    /// Largest accepted metadata token TTL in seconds; the smallest is always 1.
    pub max_token_ttl_secs: u64,
    /// Served on `GET /latest/meta-data/region-id` (plain text), e.g. `cn-hangzhou`.
    pub region_id: String,
    /// Served on `GET /latest/meta-data/instance-id` (plain text), e.g. `i-bp67acfmxazb4ph0emu1`.
    pub instance_id: String,
    /// Serve the control API under `/_emulator/` on the same port (see the crate docs).
    pub control_api: bool,
    /// The wall clock behind `LastUpdated`, `Expiration`, rotation and metadata token TTLs.
    pub clock: SharedTimeSource,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            role_name: Some(DEFAULT_ROLE_NAME.to_owned()),
            hardened_only: true,
            credential_lifetime: DEFAULT_CREDENTIAL_LIFETIME,
            rotate_after: None,
            max_token_ttl_secs: DEFAULT_MAX_TOKEN_TTL_SECS,
            region_id: DEFAULT_REGION_ID.to_owned(),
            instance_id: DEFAULT_INSTANCE_ID.to_owned(),
            control_api: true,
            clock: Arc::new(SystemClock),
        }
    }
}

impl EmulatorConfig {
    /// The credential lifetime actually used: [`Self::credential_lifetime`], at least 1 s and
    /// truncated to whole seconds (the wire format has no fractions).
    pub fn effective_lifetime(&self) -> Duration {
        Duration::from_secs(self.credential_lifetime.as_secs().max(1))
    }

    /// The rotation point actually used, measured from `LastUpdated`.
    ///
    /// - explicit [`Self::rotate_after`]: clamped to `1 s ..= lifetime`, so the emulator never
    ///   keeps serving a generation past its `Expiration` (the real service does not; use
    ///   [`Fault::ExpiredCredentials`](crate::Fault::ExpiredCredentials) for that);
    /// - default: lifetime − [`DEFAULT_ROTATE_BEFORE_EXPIRY`] when the lifetime is at least twice
    ///   that (6 h → 5 h), otherwise half the lifetime (30 min → 15 min).
    pub fn effective_rotate_after(&self) -> Duration {
        let lifetime = self.effective_lifetime();
        match self.rotate_after {
            Some(after) => after.clamp(Duration::from_secs(1), lifetime),
            None if lifetime >= 2 * DEFAULT_ROTATE_BEFORE_EXPIRY => {
                lifetime - DEFAULT_ROTATE_BEFORE_EXPIRY
            }
            None => lifetime / 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(lifetime: u64, rotate_after: Option<u64>) -> EmulatorConfig {
        EmulatorConfig {
            credential_lifetime: Duration::from_secs(lifetime),
            rotate_after: rotate_after.map(Duration::from_secs),
            ..EmulatorConfig::default()
        }
    }

    #[test]
    fn rotate_after_table() {
        let rows: &[(u64, Option<u64>, u64)] = &[
            (21_600, None, 18_000),  // 6 h → 5 h
            (7_200, None, 3_600),    // exactly 2 h → 1 h
            (1_800, None, 900),      // short lifetime → half
            (1, None, 0),            // 1 s → 0.5 s, truncated below
            (21_600, Some(60), 60),  // explicit
            (600, Some(9_999), 600), // clamped to lifetime
            (600, Some(0), 1),       // clamped to 1 s
            (0, None, 0),            // lifetime raised to 1 s
        ];
        for &(lifetime, explicit, want) in rows {
            let got = with(lifetime, explicit).effective_rotate_after();
            assert_eq!(
                got.as_secs(),
                want,
                "lifetime {lifetime}, rotate_after {explicit:?}"
            );
        }
    }

    #[test]
    fn default_instance_id_has_the_real_shape() {
        let id = DEFAULT_INSTANCE_ID;
        assert_eq!(id.len(), 22);
        assert!(id.starts_with("i-"));
        assert!(id[2..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    #[test]
    fn lifetime_is_whole_seconds_and_at_least_one() {
        let lifetime = |d| EmulatorConfig {
            credential_lifetime: d,
            ..EmulatorConfig::default()
        };
        let got = lifetime(Duration::from_millis(2_900)).effective_lifetime();
        assert_eq!(got, Duration::from_secs(2));
        assert_eq!(
            lifetime(Duration::ZERO).effective_lifetime(),
            Duration::from_secs(1)
        );
    }
}
