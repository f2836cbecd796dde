//! Fixtures shared by the unit tests of several modules (compiled for tests only).

use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::credentials::{Credentials, Issued};

/// The `AccessKeySecret` of every [`issued`] generation: a marker that must appear in the
/// credentials body and nowhere else (no log line, status text, metric or error).
pub(crate) const SECRET: &str = "SECRET-MARKER-a8f3e1";
/// The `SecurityToken` of every [`issued`] generation, a marker like [`SECRET`].
pub(crate) const TOKEN: &str = "TOKEN-MARKER-77c2d9";

/// A fixed wall-clock instant (tests never read `SystemTime::now`).
pub(crate) fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Generation `generation` of the RAM role `EcsRole` with `AccessKeyId` `key`, received at
/// [`wall`] and now on tokio's clock (paused or not), valid for `lifetime` and not served
/// within `margin` of its `Expiration`; its secret and token are [`SECRET`] and [`TOKEN`].
///
/// # Panics
///
/// When `lifetime` does not exceed `margin` (such credentials are refused on arrival).
pub(crate) fn issued(generation: u64, key: &str, lifetime: Duration, margin: Duration) -> Issued {
    let received = wall();
    let creds = Credentials {
        access_key_id: key.to_owned(),
        access_key_secret: SecretString::from(SECRET),
        security_token: SecretString::from(TOKEN),
        expiration: OffsetDateTime::from(received + lifetime),
        last_updated: OffsetDateTime::from(received),
    };
    Issued::new(
        generation,
        "EcsRole".to_owned(),
        &creds,
        received,
        Instant::now(),
        margin,
    )
    .expect("lifetime exceeds margin")
}

/// A profile's fake source: credentials with `AccessKeyId` `key` (valid 6 h from the wall
/// clock `time` reads), or, with `fail`, that error every time.
#[derive(Debug)]
pub(crate) struct FixedSource {
    pub(crate) key: String,
    pub(crate) fail: Option<String>,
    pub(crate) time: crate::time::SharedTimeSource,
}

/// [`FixedSource`]'s error: its text is the reason callers are told.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FixedError(pub(crate) String);

impl crate::credentials::SourceError for FixedError {
    fn kind(&self) -> &'static str {
        "fixed_failure"
    }
}

impl crate::credentials::Source for FixedSource {
    type Error = FixedError;

    fn fetch(
        &self,
    ) -> impl std::future::Future<Output = Result<crate::credentials::Fetched, FixedError>> + Send
    {
        let now = OffsetDateTime::from(self.time.now())
            .replace_nanosecond(0)
            .expect("zero nanoseconds");
        let result = match &self.fail {
            Some(why) => Err(FixedError(why.clone())),
            None => Ok(crate::credentials::Fetched {
                role_name: format!("role-{}", self.key),
                credentials: Credentials {
                    access_key_id: self.key.clone(),
                    access_key_secret: SecretString::from(SECRET),
                    security_token: SecretString::from(TOKEN),
                    expiration: now + Duration::from_secs(6 * 3600),
                    last_updated: now,
                },
                service_time: None,
            }),
        };
        async move { result }
    }

    fn label(&self) -> &str {
        &self.key
    }
}
