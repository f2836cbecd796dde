//! Who sent a request, and whether STS would believe it: the signature (V2 or V3), the
//! AccessKey and its SecurityToken, the time stamp and the nonce. Checks run in this order and
//! the first failure answers:
//!
//! | check | refusal |
//! |---|---|
//! | a V3 `Authorization` header or a V2 `Signature` parameter, well formed | `IncompleteSignature` |
//! | `AccessKeyId`, time stamp, nonce present | `MissingParameter` |
//! | time stamp within [`MAX_SKEW`] of the emulator's clock | `InvalidTimeStamp.Expired` |
//! | AccessKeyId known | `InvalidAccessKeyId.NotFound` |
//! | an `STS.` key comes with a SecurityToken | `MissingSecurityToken` |
//! | that SecurityToken is the key's own | `InvalidSecurityToken.MismatchWithAccessKey` |
//! | the key has not expired | `InvalidSecurityToken.Expired` |
//! | the signature matches (V3: every `x-acs-*` header and `host` signed, the body's hash) | `SignatureDoesNotMatch` |
//! | the nonce was not used by an accepted request in the last 2 × [`MAX_SKEW`] | `SignatureNonceUsed` |

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::StsError;
use super::keys::{KeyStore, Principal};
use super::sign::{self, V3Input, V3_ALGORITHM};

/// Largest accepted difference between a request's time stamp and the emulator's clock (the
/// documented 15 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Nonces are swept once this many are stored.
const NONCE_SWEEP_THRESHOLD: usize = 4096;

/// A request as received: method, decoded query and form body, headers, raw body.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) form: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Received {
    /// Query ∪ form body (the body wins on a repeated key).
    pub(crate) fn params(&self) -> BTreeMap<String, String> {
        self.query.iter().chain(&self.form).cloned().collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The signature scheme a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RPC V2, `HMAC-SHA1`.
    V2,
    /// V3, `ACS3-HMAC-SHA256`.
    V3,
}

/// A request whose signature, key and token checked out.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    pub(crate) scheme: Scheme,
    pub(crate) action: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) params: BTreeMap<String, String>,
}

/// What each scheme says about the signer, before the key is looked up.
struct Claims<'a> {
    scheme: Scheme,
    access_key_id: String,
    security_token: Option<String>,
    nonce: String,
    timestamp: &'a str,
    action: Option<String>,
    version: Option<String>,
}

/// Nonces of accepted requests and when they were seen.
#[derive(Debug, Default)]
pub(crate) struct Nonces(Mutex<HashMap<String, SystemTime>>);

impl Nonces {
    /// Records `nonce`; `false` if it was seen within 2 × [`MAX_SKEW`] before `now`.
    fn record(&self, nonce: &str, now: SystemTime) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |at: &SystemTime| now.duration_since(*at).unwrap_or_default() < 2 * MAX_SKEW;
        if seen.len() >= NONCE_SWEEP_THRESHOLD {
            seen.retain(|_, at| fresh(at));
        }
        if seen.get(nonce).is_some_and(fresh) {
            return false;
        }
        seen.insert(nonce.to_owned(), now);
        true
    }
}

/// Checks `req` (see the module table).
///
/// # Errors
///
/// The first refusal in the module table's order.
pub(crate) fn verify(
    req: &Received,
    keys: &KeyStore,
    nonces: &Nonces,
    now: SystemTime,
) -> Result<Verified, StsError> {
    let params = req.params();
    let claims = match req.header("authorization") {
        Some(auth) => v3_claims(req, auth)?.0,
        None if params.contains_key("Signature") => v2_claims(&params)?,
        None => {
            return Err(StsError::with(
                "IncompleteSignature",
                "The request is not signed.",
            ))
        }
    };
    check_time(claims.timestamp, now)?;
    let key = keys
        .get(&claims.access_key_id)
        .ok_or_else(|| StsError::of("InvalidAccessKeyId.NotFound"))?;
    match (&key.security_token, &claims.security_token) {
        (None, _) => {}
        (Some(_), None) => return Err(StsError::of("MissingSecurityToken")),
        (Some(want), Some(got)) if !sign::same(want, got) => {
            return Err(StsError::of("InvalidSecurityToken.MismatchWithAccessKey"))
        }
        (Some(_), Some(_)) => {}
    }
    if key
        .expiration
        .is_some_and(|until| OffsetDateTime::from(now) >= until)
    {
        return Err(StsError::of("InvalidSecurityToken.Expired"));
    }
    let matches = match claims.scheme {
        Scheme::V2 => v2_matches(req, &params, &key.access_key_secret),
        Scheme::V3 => v3_matches(req, &key.access_key_secret)?,
    };
    if !matches {
        return Err(StsError::of("SignatureDoesNotMatch"));
    }
    if !nonces.record(&claims.nonce, now) {
        return Err(StsError::of("SignatureNonceUsed"));
    }
    Ok(Verified {
        principal: key.principal,
        scheme: claims.scheme,
        action: claims.action,
        version: claims.version,
        params,
    })
}

fn missing(name: &str) -> StsError {
    StsError::with(
        "MissingParameter",
        format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
    )
}

fn v2_claims(params: &BTreeMap<String, String>) -> Result<Claims<'_>, StsError> {
    let get = |name: &str| params.get(name).ok_or_else(|| missing(name));
    if get("SignatureMethod")? != "HMAC-SHA1" || get("SignatureVersion")? != "1.0" {
        return Err(StsError::with(
            "IncompleteSignature",
            "SignatureMethod must be HMAC-SHA1 and SignatureVersion 1.0.",
        ));
    }
    Ok(Claims {
        scheme: Scheme::V2,
        access_key_id: get("AccessKeyId")?.clone(),
        security_token: params.get("SecurityToken").cloned(),
        nonce: get("SignatureNonce")?.clone(),
        timestamp: get("Timestamp")?,
        action: params.get("Action").cloned(),
        version: params.get("Version").cloned(),
    })
}

fn v2_matches(req: &Received, params: &BTreeMap<String, String>, secret: &str) -> bool {
    let signed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| *k != "Signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let want = sign::v2_signature(&req.method, &signed, secret);
    sign::same(&want, &params["Signature"])
}

/// The parts of `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(auth: &str) -> Result<Authorization<'_>, StsError> {
    let incomplete = || {
        StsError::with(
            "IncompleteSignature",
            "Authorization must be `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.",
        )
    };
    let rest = auth
        .strip_prefix(V3_ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(incomplete)?;
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(incomplete)?;
        fields.insert(k, v);
    }
    let field = |name| fields.get(name).copied().ok_or_else(incomplete);
    Ok(Authorization {
        credential: field("Credential")?,
        signed_headers: field("SignedHeaders")?.split(';').collect(),
        signature: field("Signature")?,
    })
}

fn v3_claims<'a>(
    req: &'a Received,
    auth: &'a str,
) -> Result<(Claims<'a>, Authorization<'a>), StsError> {
    let parsed = parse_authorization(auth)?;
    let header = |name: &str| req.header(name).ok_or_else(|| missing(name));
    let claims = Claims {
        scheme: Scheme::V3,
        access_key_id: parsed.credential.to_owned(),
        security_token: req.header("x-acs-security-token").map(str::to_owned),
        nonce: header("x-acs-signature-nonce")?.to_owned(),
        timestamp: header("x-acs-date")?,
        action: req.header("x-acs-action").map(str::to_owned),
        version: req.header("x-acs-version").map(str::to_owned),
    };
    Ok((claims, parsed))
}

/// Whether a V3 request's signature matches. Refuses (as `SignatureDoesNotMatch`, naming the
/// header) a request that leaves `host` or an `x-acs-*` header unsigned, or whose
/// `x-acs-content-sha256` is not the body's hash.
fn v3_matches(req: &Received, secret: &str) -> Result<bool, StsError> {
    let (_, auth) = v3_claims(req, req.header("authorization").unwrap_or_default())?;
    let unsigned = req
        .headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| *name == "host" || name.starts_with("x-acs-"))
        .find(|name| !auth.signed_headers.contains(name));
    if let Some(name) = unsigned {
        return Err(StsError::with(
            "SignatureDoesNotMatch",
            format!("Header {name} must be signed."),
        ));
    }
    let hashed = req
        .header("x-acs-content-sha256")
        .ok_or_else(|| missing("x-acs-content-sha256"))?;
    if !sign::same(hashed, &sign::sha256_hex(&req.body)) {
        return Ok(false);
    }
    let mut headers = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        // A signed header that is absent signs as empty; it cannot match a real signer's.
        let value = req.header(name).unwrap_or_default();
        headers.push(((*name).to_owned(), value.to_owned()));
    }
    let input = V3Input {
        method: &req.method,
        query: &req.query,
        headers: &headers,
        hashed_payload: hashed,
    };
    Ok(sign::same(
        &sign::v3_signature(&input, secret),
        auth.signature,
    ))
}

fn check_time(timestamp: &str, now: SystemTime) -> Result<(), StsError> {
    let at = OffsetDateTime::parse(timestamp, &Rfc3339).map_err(|_| {
        StsError::with(
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    })?;
    let now = OffsetDateTime::from(now);
    if (now - at).unsigned_abs() > MAX_SKEW {
        return Err(StsError::of("InvalidTimeStamp.Expired"));
    }
    Ok(())
}
