//! Credential generations: creating them, and the JSON the metadata service serves.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use time::{OffsetDateTime, UtcOffset};

/// Length of the random part of an `AccessKeyId` after `STS.` (real ones: about 25).
const ACCESS_KEY_ID_RANDOM_LEN: usize = 25;
/// Length of an `AccessKeySecret` (real ones: 44).
const ACCESS_KEY_SECRET_LEN: usize = 44;
/// Range of `SecurityToken` lengths; real STS tokens are roughly 1000–1500 characters.
const SECURITY_TOKEN_LEN: std::ops::RangeInclusive<usize> = 1000..=1500;

/// One credential generation as the emulator serves it on
/// `GET /latest/meta-data/ram/security-credentials/<role>`.
///
/// `Debug` prints neither `AccessKeySecret` nor `SecurityToken`.
#[derive(Clone, PartialEq, Eq)]
pub struct EmulatedCredentials {
    /// The RAM role these credentials belong to.
    pub role_name: String,
    /// `AccessKeyId`: `STS.` followed by 25 random letters and digits.
    pub access_key_id: String,
    /// `AccessKeySecret`: 44 random letters and digits.
    pub access_key_secret: String,
    /// `SecurityToken`: `CAIS` followed by base64-like characters, 1000–1500 characters in all.
    pub security_token: String,
    /// `Expiration`, UTC, whole seconds: `last_updated` + the credential lifetime.
    pub expiration: OffsetDateTime,
    /// `LastUpdated`, UTC, whole seconds: when this generation was issued.
    pub last_updated: OffsetDateTime,
}

impl fmt::Debug for EmulatedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedCredentials")
            .field("role_name", &self.role_name)
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"** redacted **")
            .field("security_token", &"** redacted **")
            .field("expiration", &format_utc(self.expiration))
            .field("last_updated", &format_utc(self.last_updated))
            .finish()
    }
}

impl EmulatedCredentials {
    /// A fresh generation for `role_name`, issued at `now` (truncated to whole seconds) and
    /// valid for `lifetime` (whole seconds).
    pub fn generate(role_name: &str, now: SystemTime, lifetime: Duration) -> Self {
        let mut rng = rand::rng();
        let last_updated = whole_seconds(now);
        let token_len = rng.random_range(SECURITY_TOKEN_LEN);
        Self {
            role_name: role_name.to_owned(),
            access_key_id: format!(
                "STS.{}",
                Alphanumeric.sample_string(&mut rng, ACCESS_KEY_ID_RANDOM_LEN)
            ),
            access_key_secret: Alphanumeric.sample_string(&mut rng, ACCESS_KEY_SECRET_LEN),
            security_token: security_token(&mut rng, token_len),
            expiration: last_updated + Duration::from_secs(lifetime.as_secs()),
            last_updated,
        }
    }

    /// `Expiration` as served: `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn expiration_str(&self) -> String {
        format_utc(self.expiration)
    }

    /// `LastUpdated` as served: `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn last_updated_str(&self) -> String {
        format_utc(self.last_updated)
    }

    /// The exact JSON body served for this generation, fields in the documented order:
    /// `AccessKeyId, AccessKeySecret, Expiration, SecurityToken, LastUpdated, Code`.
    pub fn to_json(&self) -> String {
        render_fields(&self.fields())
    }

    /// The body's fields in documented order, as (name, value) pairs; faults edit these.
    pub(crate) fn fields(&self) -> Vec<(String, String)> {
        [
            ("AccessKeyId", self.access_key_id.clone()),
            ("AccessKeySecret", self.access_key_secret.clone()),
            ("Expiration", self.expiration_str()),
            ("SecurityToken", self.security_token.clone()),
            ("LastUpdated", self.last_updated_str()),
            ("Code", "Success".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Renders (name, string value) pairs as one JSON object, in order.
pub(crate) fn render_fields(fields: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Serialising a &str cannot fail.
        out.push_str(&serde_json::to_string(name).expect("serialise field name"));
        out.push(':');
        out.push_str(&serde_json::to_string(value).expect("serialise field value"));
    }
    out.push('}');
    out
}

/// A UTC time truncated to whole seconds.
pub(crate) fn whole_seconds(t: SystemTime) -> OffsetDateTime {
    let t = OffsetDateTime::from(t);
    t.replace_nanosecond(0).expect("0 ns is always valid")
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the metadata service's time format (`docs/metadata-service.md` §Times).
pub fn format_utc(t: OffsetDateTime) -> String {
    format_at(t, UtcOffset::UTC, "", "Z")
}

/// The same instant in `offset`, with `fraction` after the seconds and `suffix` (a zone).
pub(crate) fn format_at(
    t: OffsetDateTime,
    offset: UtcOffset,
    fraction: &str,
    zone: &str,
) -> String {
    let t = t.to_offset(offset);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn security_token(rng: &mut impl Rng, len: usize) -> String {
    const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut token = String::with_capacity(len);
    token.push_str("CAIS");
    while token.len() < len {
        token.push(char::from(BASE64[rng.random_range(0..BASE64.len())]));
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn generation_has_documented_shape() {
        let c =
            EmulatedCredentials::generate("r", at(1_731_037_490, 999), Duration::from_secs(21_600));
        assert!(c.access_key_id.starts_with("STS."));
        assert_eq!(c.access_key_id.len(), 4 + ACCESS_KEY_ID_RANDOM_LEN);
        assert_eq!(c.access_key_secret.len(), ACCESS_KEY_SECRET_LEN);
        assert!(SECURITY_TOKEN_LEN.contains(&c.security_token.len()));
        assert_eq!(c.last_updated_str(), "2024-11-08T03:44:50Z");
        assert_eq!(c.expiration_str(), "2024-11-08T09:44:50Z");
    }

    #[test]
    fn json_is_in_documented_order_and_parses() {
        let c = EmulatedCredentials::generate("r", at(1_731_037_490, 0), Duration::from_secs(60));
        let json = c.to_json();
        let order = [
            "AccessKeyId",
            "AccessKeySecret",
            "Expiration",
            "SecurityToken",
            "LastUpdated",
            "Code",
        ];
        let positions: Vec<usize> = order.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Code"], "Success");
        assert_eq!(v["SecurityToken"], c.security_token.as_str());
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = EmulatedCredentials::generate("r", at(0, 0), Duration::from_secs(60));
        let dbg = format!("{c:?}");
        assert!(dbg.contains(&c.access_key_id));
        assert!(!dbg.contains(&c.access_key_secret));
        assert!(!dbg.contains(&c.security_token[..40]));
    }

    #[test]
    fn format_at_offset_and_fraction() {
        let t = whole_seconds(at(1_731_037_490, 0));
        let plus8 = UtcOffset::from_hms(8, 0, 0).unwrap();
        assert_eq!(
            format_at(t, plus8, "", "+08:00"),
            "2024-11-08T11:44:50+08:00"
        );
        assert_eq!(
            format_at(t, UtcOffset::UTC, ".123", "Z"),
            "2024-11-08T03:44:50.123Z"
        );
    }
}
