//! The STS client: a profile's RAM role assumed with the instance role's credentials.
//!
//! Each profile's [`AssumedRole`] is a [credential source](crate::credentials::Source) driven by
//! its own refresher, exactly like the instance role. One fetch is one `AssumeRole` call
//! (Version `2015-04-01`), signed with `ACS3-HMAC-SHA256` with the instance role's credentials
//! currently servable (the instance role's refresher is the only place they come from; with none
//! servable the fetch fails, it never falls back to anything). The [`Assumer`] is shared by every
//! profile: the HTTPS client, the endpoint, and the instance facts (region and instance id) read
//! once from the metadata service.
//!
//! - [`sign`]: the V3 signature, tested against the published example.
//! - [`client`]: TLS, the signed request, reading the answer.
//! - [`response`]: parsing the documented answer.
//! - [`error`]: [`StsError`], and how STS's error codes map to it.
//! - [`config`]: the `[sts]` section.
//!
//! `RoleSessionName` is `<instance-id>.<profile>` ([`role_session_name`]), so ActionTrail shows
//! which application on which instance made each call.
//!
//! # Behaviour
//!
//! - `DurationSeconds` is always sent (left out, STS grants 3600 s whatever the role allows).
//!   `InvalidParameter.DurationSeconds` is retried once within the same fetch with
//!   [`FALLBACK_DURATION_SECS`], with one warning naming the profile and the target role's
//!   `MaxSessionDuration`.
//! - Credentials expiring within the expiry margin on arrival are refused by the refresher, as
//!   for the instance role (`RefreshError::ExpiredOnArrival`).
//! - Errors keep STS's `Code` and `RequestId`, never its `Message` ([`error`] says why), and
//!   never withdraw credentials already held: those stay served until the expiry margin, as
//!   STS itself honours them until `Expiration`.
//!
//! # Sources
//!
//! - V3 signature: <https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature>
//!   (its example is the test vector in [`sign`]).
//! - `AssumeRole` parameters and errors: the API reference
//!   (<https://www.alibabacloud.com/help/doc-detail/28763.htm>, older edition) and the generated
//!   SDK's `sts-20150401` `AssumeRoleRequest` (`RoleSessionName` 2 to 64 characters of
//!   `A–Z a–z 0–9 . @ - _`).
//! - `MaxSessionDuration`: <https://www.alibabacloud.com/help/en/ram/user-guide/specify-the-maximum-session-duration-for-a-ram-role>.
//! - Endpoints `sts.<region>` / `sts-vpc.<region>.aliyuncs.com`: `aliyun/credentials-go`,
//!   `credentials/providers/ram_role_arn.go`.

pub mod client;
pub mod config;
pub mod error;
mod https;
pub mod response;
pub mod sign;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::OnceCell;

pub use self::client::StsConfigError;
use self::client::{Call, Client, SigningKey};
use self::config::Endpoint;
pub use self::error::StsError;
use crate::credentials::state::{wait_for_credentials, StateReceiver};
use crate::credentials::{Fetched, Source, Unavailable};
use crate::sources::metadata;
use crate::time::SharedTimeSource;

/// How long a profile's fetch waits for the instance role's first credentials while the agent
/// starts (the instance role's refresher fetches at the same time).
pub const INSTANCE_ROLE_WAIT: Duration = Duration::from_secs(10);

/// The length of an ECS instance id (`i-` and 20 characters).
pub const INSTANCE_ID_LEN: usize = 22;
/// The longest `RoleSessionName` STS accepts.
pub const MAX_ROLE_SESSION_NAME_LEN: usize = 64;
/// The longest profile name: `<instance-id>.<profile>` must fit [`MAX_ROLE_SESSION_NAME_LEN`]
/// with a [`INSTANCE_ID_LEN`]-character instance id (64 − 22 − 1 = 41).
pub const MAX_PROFILE_NAME_LEN: usize = MAX_ROLE_SESSION_NAME_LEN - INSTANCE_ID_LEN - 1;
/// `DurationSeconds` retried once when STS refuses the configured one
/// (`InvalidParameter.DurationSeconds`): STS's default, which every role allows.
pub const FALLBACK_DURATION_SECS: u32 = 3600;

/// What one profile assumes: the target role, the session policy and the duration asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleSpec {
    /// The profile's name (`[A-Za-z0-9_-]`, at most [`MAX_PROFILE_NAME_LEN`] characters): the
    /// source's label and the end of `RoleSessionName`.
    pub profile: String,
    /// `RoleArn`: `acs:ram::<account id>:role/<role name>`.
    pub role_arn: String,
    /// `Policy`: the session policy (JSON, 1 to 2048 characters), if any.
    pub policy: Option<String>,
    /// `DurationSeconds`: 900 up to the target role's `MaxSessionDuration` (at most 43200).
    pub duration_secs: u32,
}

/// `RoleSessionName` for `profile` on the instance `instance_id`: `<instance-id>.<profile>`.
///
/// # Errors
/// What is wrong when the name is not 2 to 64 characters of `A–Z a–z 0–9 . @ - _` (the
/// current AssumeRole constraint), quoted escaped.
pub fn role_session_name(instance_id: &str, profile: &str) -> Result<String, String> {
    let name = format!("{instance_id}.{profile}");
    let len = name.chars().count();
    if !(2..=MAX_ROLE_SESSION_NAME_LEN).contains(&len) {
        return Err(format!(
            "RoleSessionName {name:?} is {len} characters; STS accepts 2 to \
             {MAX_ROLE_SESSION_NAME_LEN} (with a {INSTANCE_ID_LEN}-character instance id, profile \
             names of at most {MAX_PROFILE_NAME_LEN} characters)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-' | '_')))
    {
        return Err(format!(
            "RoleSessionName {name:?} contains {c:?}; STS accepts only A-Z a-z 0-9 . @ - _"
        ));
    }
    Ok(name)
}

/// The role name in a RAM role ARN (`acs:ram::<account>:role/<name>` → `<name>`), or `None`
/// when `arn` has no `:role/` part.
pub fn role_name_from_arn(arn: &str) -> Option<&str> {
    arn.split_once(":role/")
        .map(|(_, name)| name.rsplit('/').next().unwrap_or(name))
        .filter(|name| !name.is_empty())
}

/// What is resolved once per agent: the instance id and the endpoint (from the region when
/// `[sts] endpoint` is unset).
#[derive(Debug)]
struct Resolved {
    instance_id: String,
    endpoint: Endpoint,
}

/// Everything the profiles share: the STS client, the instance role's state, the metadata
/// client for the instance facts.
#[derive(Debug)]
pub struct Assumer {
    client: Client,
    configured_endpoint: Option<Endpoint>,
    metadata: Arc<metadata::Client>,
    instance: StateReceiver,
    resolved: OnceCell<Resolved>,
}

impl Assumer {
    /// An assumer for `[sts]` `config`, signing with the instance role's credentials published
    /// in `instance`, reading the instance facts through `metadata` (at the first fetch, again
    /// at each fetch until it succeeds once), and the wall clock from `time`.
    ///
    /// # Errors
    /// [`StsConfigError`] when the HTTPS client cannot be set up (see [`Client::new`]).
    pub fn new(
        config: &config::Config,
        metadata: Arc<metadata::Client>,
        instance: StateReceiver,
        time: SharedTimeSource,
    ) -> Result<Arc<Assumer>, StsConfigError> {
        Ok(Arc::new(Assumer {
            client: Client::new(config, time)?,
            configured_endpoint: config.endpoint.clone(),
            metadata,
            instance,
            resolved: OnceCell::new(),
        }))
    }

    /// The instance id and endpoint, read once.
    async fn resolved(&self) -> Result<&Resolved, metadata::MetadataError> {
        self.resolved
            .get_or_try_init(|| async {
                let facts = self.metadata.instance_facts().await?;
                let endpoint = match &self.configured_endpoint {
                    Some(e) => e.clone(),
                    None => Endpoint::for_region(&facts.region_id),
                };
                tracing::info!(
                    instance_id = facts.instance_id.as_str(),
                    region_id = facts.region_id.as_str(),
                    endpoint = %endpoint,
                    "STS endpoint and instance id resolved"
                );
                Ok(Resolved {
                    instance_id: facts.instance_id,
                    endpoint,
                })
            })
            .await
    }

    /// The instance role's credentials servable now, as a signing key. While the agent has
    /// never held them (it is starting), waits up to [`INSTANCE_ROLE_WAIT`] for the instance
    /// role's first fetch instead of failing at once (which would log a failed refresh for
    /// every profile at every start); never waits once the instance role has been served.
    async fn signing_key(&self, role_arn: &str) -> Result<SigningKey, StsError> {
        let unavailable = |reason: String| StsError::InstanceRoleUnavailable {
            role_arn: role_arn.to_owned(),
            reason,
        };
        let mut instance = self.instance.clone();
        let issued = wait_for_credentials(&mut instance, INSTANCE_ROLE_WAIT)
            .await
            .map_err(|reason| unavailable(reason.message()))?;
        // The served body is the one copy of the instance role's secrets the refresher keeps.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            access_key_id: String,
            access_key_secret: String,
            security_token: String,
        }
        let body: Body = serde_json::from_slice(&issued.body)
            .map_err(|_| unavailable("the served credential body is unreadable".to_owned()))?;
        Ok(SigningKey {
            access_key_id: body.access_key_id,
            access_key_secret: SecretString::from(body.access_key_secret),
            security_token: SecretString::from(body.security_token),
        })
    }
}

/// One profile's RAM role, assumed through STS: a [`Source`] for a refresher.
#[derive(Debug)]
pub struct AssumedRole {
    assumer: Arc<Assumer>,
    spec: RoleSpec,
    /// `DurationSeconds` asked for: `spec.duration_secs` until STS refuses it, then
    /// [`FALLBACK_DURATION_SECS`].
    duration_secs: AtomicU32,
}

impl AssumedRole {
    /// The source for `spec`, sharing `assumer` with the other profiles.
    pub fn new(assumer: Arc<Assumer>, spec: RoleSpec) -> AssumedRole {
        let duration_secs = AtomicU32::new(spec.duration_secs);
        AssumedRole {
            assumer,
            spec,
            duration_secs,
        }
    }

    /// The profile this source serves.
    pub fn spec(&self) -> &RoleSpec {
        &self.spec
    }

    async fn fetch_once(&self) -> Result<Fetched, StsError> {
        let spec = &self.spec;
        let role_arn = spec.role_arn.as_str();
        let key = self.assumer.signing_key(role_arn).await?;
        let resolved =
            self.assumer
                .resolved()
                .await
                .map_err(|source| StsError::InstanceFactsUnavailable {
                    role_arn: role_arn.to_owned(),
                    source,
                })?;
        let session_name =
            role_session_name(&resolved.instance_id, &spec.profile).map_err(|reason| {
                StsError::InvalidSessionName {
                    role_arn: role_arn.to_owned(),
                    reason,
                }
            })?;
        let mut call = Call {
            role_arn,
            role_session_name: &session_name,
            duration_secs: self.duration_secs.load(Ordering::Relaxed),
            policy: spec.policy.as_deref(),
        };
        let client = &self.assumer.client;
        let assumed = match client.assume_role(&resolved.endpoint, &key, &call).await {
            Err(e) if e.is_duration_rejected() && call.duration_secs != FALLBACK_DURATION_SECS => {
                // Remembered: the next refreshes ask for 3600 at once (one call, no warning
                // each time); a reload that changes the profile starts a new source.
                self.duration_secs
                    .store(FALLBACK_DURATION_SECS, Ordering::Relaxed);
                tracing::warn!(
                    profile = spec.profile.as_str(),
                    role_arn,
                    duration_secs = spec.duration_secs,
                    "STS refused DurationSeconds {} (InvalidParameter.DurationSeconds): the \
                     target role's MaxSessionDuration is below the configured duration_secs; \
                     retrying with {FALLBACK_DURATION_SECS} (lower duration_secs, or raise the \
                     role's MaxSessionDuration)",
                    spec.duration_secs
                );
                call.duration_secs = FALLBACK_DURATION_SECS;
                client.assume_role(&resolved.endpoint, &key, &call).await?
            }
            other => other?,
        };
        tracing::debug!(
            profile = spec.profile.as_str(),
            role_arn,
            access_key_id = assumed.credentials.access_key_id.as_str(),
            expiration = crate::credentials::format_utc(assumed.credentials.expiration),
            "assumed role"
        );
        Ok(Fetched {
            role_name: role_name_from_arn(role_arn).unwrap_or(role_arn).to_owned(),
            credentials: assumed.credentials,
            service_time: assumed.service_time,
        })
    }
}

impl Source for AssumedRole {
    type Error = StsError;

    async fn fetch(&self) -> Result<Fetched, StsError> {
        self.fetch_once().await
    }

    /// The profile name.
    fn label(&self) -> &str {
        &self.spec.profile
    }

    /// [`Unavailable::AssumeRoleFailing`]: callers see that STS refuses, and why, not a
    /// metadata service failure.
    fn failing(&self, since: std::time::SystemTime, error: String) -> Unavailable {
        Unavailable::AssumeRoleFailing { since, error }
    }
}

#[cfg(test)]
mod tests;
