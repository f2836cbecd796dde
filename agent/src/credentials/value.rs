//! The credential value types every module shares: one validated generation
//! ([`Credentials`]), the served JSON shape ([`ResponseBody`]) and the time format
//! ([`format_utc`]). A leaf: it depends on no other module of the crate.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// One credential generation of a RAM role (the instance role, or a role assumed through STS),
/// validated by the source that fetched it.
///
/// Shape: the metadata service's credential JSON (`AccessKeyId`, `AccessKeySecret`,
/// `SecurityToken`, `Expiration`, `LastUpdated`), see the ECS documentation "实例元数据" and
/// `docs/metadata-service.md` §Credential JSON. Both times are UTC and whole seconds
/// (fractions are truncated toward the past when parsed).
///
/// `Debug` never prints `AccessKeySecret` or `SecurityToken`; both zeroize their memory on drop.
pub struct Credentials {
    /// `AccessKeyId`, e.g. `STS.NT…`; not secret, logged in the audit trail.
    pub access_key_id: String,
    /// `AccessKeySecret`; secret.
    pub access_key_secret: SecretString,
    /// `SecurityToken`; secret, often over 1 KB.
    pub security_token: SecretString,
    /// `Expiration`: after this instant the STS service rejects the credentials.
    pub expiration: OffsetDateTime,
    /// `LastUpdated`: when the metadata service issued this generation.
    pub last_updated: OffsetDateTime,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"** redacted **")
            .field("security_token", &"** redacted **")
            .field("expiration", &format_utc(self.expiration))
            .field("last_updated", &format_utc(self.last_updated))
            .finish()
    }
}

impl Credentials {
    /// The response body served on `GET /v1/credentials`: exactly the credentials-URI shape
    /// (`Code`, `AccessKeyId`, `AccessKeySecret`, `SecurityToken`, `Expiration`, `LastUpdated`;
    /// times as `YYYY-MM-DDTHH:MM:SSZ`), which the official SDKs' "credentials URI" provider and
    /// the aliyun CLI accept (`docs/metadata-service.md` §Credentials URI).
    ///
    /// The buffer zeroizes on drop; serialise it once per generation, not per request.
    pub fn to_response_body(&self) -> Zeroizing<Vec<u8>> {
        let expiration = format_utc(self.expiration);
        let last_updated = format_utc(self.last_updated);
        let body = ResponseBody {
            code: "Success",
            access_key_id: &self.access_key_id,
            access_key_secret: self.access_key_secret.expose_secret(),
            security_token: self.security_token.expose_secret(),
            expiration: &expiration,
            last_updated: Some(&last_updated),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(
            256 + self.security_token.expose_secret().len(),
        ));
        // Serialising plain strings into a Vec cannot fail.
        serde_json::to_writer(&mut *out, &body).expect("serialise credential body");
        out
    }

    /// Whether `other` is the same credential generation (same `AccessKeyId` and `LastUpdated`).
    pub fn same_generation(&self, other: &Credentials) -> bool {
        self.access_key_id == other.access_key_id && self.last_updated == other.last_updated
    }
}

/// The credentials-URI JSON shape, fields in the order the agent serves them (`Code` first).
/// Used for the socket's response body and by `get --format json`, so both print the same.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ResponseBody<'a> {
    pub(crate) code: &'a str,
    pub(crate) access_key_id: &'a str,
    pub(crate) access_key_secret: &'a str,
    pub(crate) security_token: &'a str,
    pub(crate) expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_updated: Option<&'a str>,
}

/// Formats a UTC time as the metadata service does: `YYYY-MM-DDTHH:MM:SSZ` (the client
/// library's, so the agent and its clients write one format).
pub use ecs_credential_client::format_utc;
