//! `AssumeRole` itself: the parameter constraints, the target roles' permissions and trust
//! policies, and the success body. Checks run in this order; the first failure answers:
//!
//! | check | refusal |
//! |---|---|
//! | `Action=AssumeRole` | 404 `InvalidAction.NotFound` |
//! | `Version=2015-04-01` | 400 `InvalidVersion` |
//! | `RoleArn`, `RoleSessionName` present | 400 `MissingParameter` |
//! | `RoleArn` is `acs:ram::<account digits>:role/<name>` | 400 `InvalidParameter.RoleArn` |
//! | `RoleSessionName` is 2–64 of `A–Z a–z 0–9 . @ - _` | 400 `InvalidParameter.RoleSessionName` |
//! | `Policy`, if sent, is 1–2048 characters | 400 `InvalidParameter.PolicySize` |
//! | … and a JSON object | 400 `InvalidParameter.PolicyGrammar` |
//! | `ExternalId`, if sent, is 2–1224 of `[\w+=,.@:/-]` | 400 `InvalidParameter.ExternalId` |
//! | the role exists | 404 `EntityNotExist.Role` |
//! | the caller holds `sts:AssumeRole` on it ([`TargetRole::permitted`]) | 403 `NoPermission` |
//! | its trust policy names the caller ([`TargetRole::trusted`]) | 403 `NoPermission` |
//! | `DurationSeconds` (default 3600) is 900 ..= the role's `MaxSessionDuration` | 400 `InvalidParameter.DurationSeconds` |

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::Serialize;

use super::error::StsError;
use super::keys::{AccessKey, KeyStore, Principal};
use super::TargetRole;
use crate::credentials::{format_utc, EmulatedCredentials};

/// The only API version STS has.
pub const VERSION: &str = "2015-04-01";
/// `DurationSeconds` when the request has none.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// The shortest `DurationSeconds` STS accepts.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// The longest session policy, in characters.
pub const MAX_POLICY_CHARS: usize = 2048;

/// A granted `AssumeRole`, before it is rendered.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) role_arn: String,
    pub(crate) role_name: String,
    pub(crate) session_name: String,
    pub(crate) duration: Duration,
}

/// Checks an `AssumeRole` request from `principal` (see the module table).
///
/// # Errors
///
/// The first refusal in the module table's order.
pub(crate) fn check(
    action: Option<&str>,
    version: Option<&str>,
    params: &BTreeMap<String, String>,
    principal: &Principal,
    roles: &[TargetRole],
) -> Result<Grant, StsError> {
    if action != Some("AssumeRole") {
        return Err(StsError::of("InvalidAction.NotFound"));
    }
    if version != Some(VERSION) {
        return Err(StsError::of("InvalidVersion"));
    }
    let get = |name: &str| {
        params.get(name).map(String::as_str).ok_or_else(|| {
            StsError::with(
                "MissingParameter",
                format!("{name} is mandatory for this action."),
            )
        })
    };
    let role_arn = get("RoleArn")?;
    let session_name = get("RoleSessionName")?;
    let role_name =
        role_name_of(role_arn).ok_or_else(|| StsError::of("InvalidParameter.RoleArn"))?;
    if !session_name_ok(session_name) {
        return Err(StsError::of("InvalidParameter.RoleSessionName"));
    }
    if let Some(policy) = params.get("Policy") {
        check_policy(policy)?;
    }
    if let Some(external_id) = params.get("ExternalId") {
        if !external_id_ok(external_id) {
            return Err(StsError::with(
                "InvalidParameter.ExternalId",
                "The parameter ExternalId is wrongly formed.",
            ));
        }
    }
    let role = roles.iter().find(|r| r.arn == role_arn).ok_or_else(|| {
        StsError::with(
            "EntityNotExist.Role",
            format!("The role not exists: {role_arn}."),
        )
    })?;
    check_access(role, principal)?;
    let duration = duration(params.get("DurationSeconds"), role)?;
    Ok(Grant {
        role_arn: role_arn.to_owned(),
        role_name: role_name.to_owned(),
        session_name: session_name.to_owned(),
        duration,
    })
}

/// `<name>` of `acs:ram::<digits>:role/<name>`, when the ARN has that shape.
fn role_name_of(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (account, name) = rest.split_once(":role/")?;
    let account_ok = !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit());
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    (account_ok && name_ok).then_some(name)
}

fn session_name_ok(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".@-_".contains(&b))
}

fn external_id_ok(id: &str) -> bool {
    (2..=1224).contains(&id.chars().count())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b))
}

fn check_policy(policy: &str) -> Result<(), StsError> {
    let chars = policy.chars().count();
    if chars == 0 || chars > MAX_POLICY_CHARS {
        return Err(StsError::of("InvalidParameter.PolicySize"));
    }
    match serde_json::from_str::<serde_json::Value>(policy) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(StsError::of("InvalidParameter.PolicyGrammar")),
    }
}

fn check_access(role: &TargetRole, principal: &Principal) -> Result<(), StsError> {
    let name = principal.name();
    if !role.permitted.iter().any(|p| p == name) {
        return Err(StsError::with(
            "NoPermission",
            format!(
                "You are not authorized to do this action. {principal} has no sts:AssumeRole permission on {}.",
                role.arn
            ),
        ));
    }
    if !role.trusted.iter().any(|p| p == name) {
        return Err(StsError::with(
            "NoPermission",
            format!(
                "You are not authorized to do this action. The trust policy of {} does not name {principal}.",
                role.arn
            ),
        ));
    }
    Ok(())
}

fn duration(sent: Option<&String>, role: &TargetRole) -> Result<Duration, StsError> {
    let Some(sent) = sent else {
        return Ok(DEFAULT_DURATION);
    };
    let refuse = || {
        StsError::with(
            "InvalidParameter.DurationSeconds",
            format!(
                "The Min/Max value of DurationSeconds is 15min/{}s (the role's MaxSessionDuration).",
                role.max_session_duration.as_secs()
            ),
        )
    };
    let secs: u64 = sent.parse().map_err(|_| refuse())?;
    let wanted = Duration::from_secs(secs);
    if wanted < MIN_DURATION || wanted > role.max_session_duration {
        return Err(refuse());
    }
    Ok(wanted)
}

/// Issues credentials for `grant` (registered in `keys` as the role's), expiring `duration`
/// after `now` — or at `now` when `expired_on_arrival` — and renders the success body.
pub(crate) fn issue(
    grant: &Grant,
    keys: &KeyStore,
    now: SystemTime,
    expired_on_arrival: bool,
    request_id: &str,
) -> String {
    let lifetime = if expired_on_arrival {
        Duration::ZERO
    } else {
        grant.duration
    };
    // Expiration = whole_seconds(now) + lifetime: `now` itself when expired on arrival.
    let creds = EmulatedCredentials::generate(&grant.role_name, now, lifetime);
    keys.insert(
        &creds.access_key_id,
        AccessKey {
            principal: Principal::Role(grant.role_name.clone()),
            access_key_secret: creds.access_key_secret.clone(),
            security_token: Some(creds.security_token.clone()),
            expiration: Some(creds.expiration),
        },
    );
    render(grant, &creds, request_id)
}

fn render(grant: &Grant, creds: &EmulatedCredentials, request_id: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Body<'a> {
        request_id: &'a str,
        assumed_role_user: User,
        credentials: Creds<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct User {
        arn: String,
        assumed_role_id: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Creds<'a> {
        access_key_id: &'a str,
        access_key_secret: &'a str,
        security_token: &'a str,
        expiration: String,
    }
    let account = grant.role_arn["acs:ram::".len()..]
        .split(':')
        .next()
        .unwrap_or_default();
    let role_id: u64 = rand::rng().random_range(100_000_000_000_000_000..1_000_000_000_000_000_000);
    let body = Body {
        request_id,
        assumed_role_user: User {
            arn: format!(
                "acs:ram::{account}:assumed-role/{}/{}",
                grant.role_name, grant.session_name
            ),
            assumed_role_id: format!("{role_id}:{}", grant.session_name),
        },
        credentials: Creds {
            access_key_id: &creds.access_key_id,
            access_key_secret: &creds.access_key_secret,
            security_token: &creds.security_token,
            expiration: format_utc(creds.expiration),
        },
    };
    serde_json::to_string(&body).expect("serialising strings cannot fail")
}

/// A request id in the real shape: upper-case hex `8-4-4-4-12`.
pub(crate) fn request_id() -> String {
    let n: u128 = rand::rng().random();
    let s = format!("{n:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_shape() {
        assert_eq!(
            role_name_of("acs:ram::123456789012:role/billing-app"),
            Some("billing-app")
        );
        for bad in [
            "",
            "acs:ram::role/x",
            "acs:ram::12a:role/x",
            "acs:ram::1:role/",
            "acs:ram::1:user/x",
            "arn:aws:iam::1:role/x",
        ] {
            assert_eq!(role_name_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn session_name_constraints() {
        assert!(session_name_ok("ab"));
        assert!(session_name_ok(&"a".repeat(64)));
        assert!(session_name_ok("i-bp67acfmxazb4ph0emu1.billing@x_y-z"));
        assert!(!session_name_ok("a"));
        assert!(!session_name_ok(&"a".repeat(65)));
        for bad in ["a b", "a=b", "a,b", "a+b", "a/b"] {
            assert!(!session_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn request_id_shape() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
