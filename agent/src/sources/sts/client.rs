//! The HTTPS side of the STS client: TLS, the signed `AssumeRole` request, reading the answer.
//!
//! # Transport
//!
//! HTTPS only, HTTP/1.1 (module `https`), rustls with the `ring` provider. Trusted roots: the
//! system's trust store (read once at start by `rustls-native-certs`: `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`, else the distribution's bundle) plus the certificates of `[sts] ca_file`, if
//! set. No redirects, no proxy unless `[sts] proxy` is set (`HTTPS_PROXY` and friends are
//! ignored), no retries inside a call (the refresher backs off). Limits: `connect_timeout` to
//! connect and finish the TLS handshake, and `connect_timeout + 2 × read_timeout` for the whole
//! call. Bodies over [`MAX_BODY_BYTES`](super::response::MAX_BODY_BYTES) are refused.
//!
//! # Request
//!
//! `POST https://<endpoint>/?<query>` with an empty body, signed with `ACS3-HMAC-SHA256`
//! ([`super::sign`]). POST with the parameters in the query is what the generated STS SDK
//! (`sts-20150401`) sends for this RPC-style API, and the V3 document's own example is a POST;
//! GET would be signed the same way. Headers: `host`, `x-acs-action: AssumeRole`,
//! `x-acs-version: 2015-04-01`, `x-acs-date` (UTC, from the injected clock),
//! `x-acs-signature-nonce` (128 random bits, hex), `x-acs-content-sha256` (of the empty body),
//! `x-acs-security-token` (the instance role's SecurityToken), all signed, then
//! `Authorization`. Query: `RoleArn`, `RoleSessionName`, `DurationSeconds` (always: omitted, STS
//! grants 3600 s whatever the role allows) and `Policy` when the profile sets one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, USER_AGENT};
use http_body_util::Empty;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::config::{Config, Endpoint};
use super::error::{self, StsError};
use super::https::{innermost, Https};
use super::{response, sign};
use crate::credentials::{format_utc, Credentials};
use crate::time::SharedTimeSource;

/// `x-acs-version` of STS `AssumeRole`.
pub const API_VERSION: &str = "2015-04-01";

/// A `[sts]` setting the client cannot use. Fatal at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StsConfigError {
    /// `[sts] ca_file` cannot be read or holds no PEM certificate.
    #[error("[sts] ca_file {path:?}: {reason}")]
    CaFile {
        /// The configured path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No trusted root certificate at all: the system store is empty or unreadable and no
    /// `ca_file` is set.
    #[error(
        "no trusted root certificates for STS: the system trust store is empty or unreadable \
         (install ca-certificates, or set SSL_CERT_FILE) and [sts] ca_file is unset"
    )]
    NoTrustRoots,
    /// rustls refused the TLS configuration.
    #[error("cannot set up TLS for STS: {0}")]
    Tls(String),
}

/// The credentials a call is signed with: the instance role's. `Debug` shows the AccessKeyId
/// only.
pub struct SigningKey {
    /// `AccessKeyId` (not secret).
    pub access_key_id: String,
    /// `AccessKeySecret`.
    pub access_key_secret: SecretString,
    /// `SecurityToken`, sent as `x-acs-security-token`.
    pub security_token: SecretString,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// One `AssumeRole` call's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `RoleArn`.
    pub role_arn: &'a str,
    /// `RoleSessionName`.
    pub role_session_name: &'a str,
    /// `DurationSeconds`.
    pub duration_secs: u32,
    /// `Policy`, when the profile sets a session policy.
    pub policy: Option<&'a str>,
}

/// A successful call: the new credentials and STS's `Date` header, if it sent one.
#[derive(Debug)]
pub struct Assumed {
    /// The new credentials (`LastUpdated` = local time of the answer).
    pub credentials: Credentials,
    /// STS's clock when it answered.
    pub service_time: Option<SystemTime>,
}

/// The STS HTTPS client, shared by every profile.
#[derive(Debug)]
pub struct Client {
    https: Https,
    deadline: Duration,
    time: SharedTimeSource,
}

impl Client {
    /// A client for `config`, reading the wall clock from `time` (`x-acs-date`, `LastUpdated`).
    ///
    /// # Errors
    /// [`StsConfigError`]: `ca_file` unreadable or empty, no trusted roots at all, or a TLS
    /// configuration rustls refuses.
    pub fn new(config: &Config, time: SharedTimeSource) -> Result<Client, StsConfigError> {
        let tls = tls_config(config.ca_file.as_deref())?;
        Ok(Client {
            https: Https::new(tls, config.proxy.as_ref(), config.connect_timeout),
            deadline: config.connect_timeout + 2 * config.read_timeout,
            time,
        })
    }

    /// Calls `AssumeRole` on `endpoint` with `call`, signed with `key`.
    ///
    /// # Errors
    /// [`StsError`]: STS's error answers mapped by [`error::from_answer`]; `Unreachable`,
    /// `Timeout` for transport failures; `InvalidResponse` for an answer that is not the
    /// documented JSON.
    pub async fn assume_role(
        &self,
        endpoint: &Endpoint,
        key: &SigningKey,
        call: &Call<'_>,
    ) -> Result<Assumed, StsError> {
        let request = self.signed_request(endpoint, key, call)?;
        let answer = tokio::time::timeout(self.deadline, self.https.exchange(endpoint, request))
            .await
            .map_err(|_| StsError::Timeout {
                endpoint: endpoint.to_string(),
                after: self.deadline,
            })??;
        let (status, body) = (answer.status, answer.body);
        if status != 200 {
            return Err(error::from_answer(status, &body, call.role_arn));
        }
        let credentials = response::parse_credentials(&body, self.time.now())?;
        Ok(Assumed {
            credentials,
            service_time: answer.date,
        })
    }

    /// The signed `POST` for `call`.
    fn signed_request(
        &self,
        endpoint: &Endpoint,
        key: &SigningKey,
        call: &Call<'_>,
    ) -> Result<http::Request<Empty<Bytes>>, StsError> {
        let date = format_utc(OffsetDateTime::from(self.time.now()));
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let hashed_payload = sign::hex_sha256(b"");
        let duration = call.duration_secs.to_string();
        let mut query = vec![
            ("RoleArn", call.role_arn),
            ("RoleSessionName", call.role_session_name),
            ("DurationSeconds", duration.as_str()),
        ];
        if let Some(policy) = call.policy {
            query.push(("Policy", policy));
        }
        let token = key.security_token.expose_secret();
        let headers = [
            ("host", endpoint.authority()),
            ("x-acs-action", "AssumeRole"),
            ("x-acs-version", API_VERSION),
            ("x-acs-date", date.as_str()),
            ("x-acs-signature-nonce", nonce.as_str()),
            ("x-acs-content-sha256", hashed_payload.as_str()),
            ("x-acs-security-token", token),
        ];
        let signed = sign::Request {
            method: "POST",
            query: &query,
            headers: &headers,
            hashed_payload: &hashed_payload,
        };
        let authorization = sign::authorization(
            &signed,
            &key.access_key_id,
            key.access_key_secret.expose_secret(),
        );
        let mut builder = http::Request::post(format!("/?{}", sign::canonical_query(&query)))
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("ecs-credential-agent/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers
            .iter()
            .chain([&("authorization", authorization.as_str())])
        {
            // Every value but the instance role's SecurityToken is built here from checked
            // parts: only the token can fail, and it names nothing of the token's content.
            let mut value =
                HeaderValue::from_str(value).map_err(|_| StsError::InstanceRoleUnavailable {
                    role_arn: call.role_arn.to_owned(),
                    reason: format!("its {name} header value is not valid in HTTP"),
                })?;
            value.set_sensitive(matches!(*name, "x-acs-security-token" | "authorization"));
            builder = builder.header(*name, value);
        }
        builder
            .body(Empty::new())
            .map_err(|e| StsError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: format!("cannot build the request: {}", innermost(&e)),
            })
    }
}

/// The rustls configuration: the system's roots plus `ca_file`'s certificates, `ring`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "cannot read part of the system trust store");
    }
    let (system, ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let bad = |reason: String| StsConfigError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read it ({e})")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM file ({e})")))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".to_owned()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| bad(format!("a certificate is not usable as a root ({e})")))?;
        }
    }
    if roots.is_empty() {
        return Err(StsConfigError::NoTrustRoots);
    }
    tracing::debug!(
        system_roots = system,
        ignored,
        total_roots = roots.len(),
        "STS trust roots loaded"
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StsConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
