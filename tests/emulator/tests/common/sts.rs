//! A signing HTTPS client for the STS emulator's tests: V2 and V3 requests built with the
//! emulator's public signer, sent with hyper over tokio-rustls trusting the emulator's CA.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ecs_metadata_emulator::sts::sign::{self, V3Input, V3_ALGORITHM};
use ecs_metadata_emulator::sts::StsEmulator;
use ecs_metadata_emulator::EmulatedCredentials;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const ROLE_ARN: &str = "acs:ram::123456789012:role/billing-app";
pub const INSTANCE_ROLE: &str = "EcsRamRoleDemo";

/// The signer's key: AccessKeyId, AccessKeySecret, and the SecurityToken of an STS key.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl From<&EmulatedCredentials> for Key {
    fn from(c: &EmulatedCredentials) -> Self {
        Key {
            id: c.access_key_id.clone(),
            secret: c.access_key_secret.clone(),
            token: Some(c.security_token.clone()),
        }
    }
}

/// One request before signing.
#[derive(Clone)]
pub struct Call {
    pub method: &'static str,
    /// AssumeRole's own parameters (RoleArn, …), without the common ones.
    pub params: Vec<(String, String)>,
    /// V2: put every parameter in a form body instead of the query.
    pub in_body: bool,
    /// The time stamp to sign (default: now).
    pub timestamp: Option<time::OffsetDateTime>,
    /// The nonce to sign (default: a fresh one).
    pub nonce: Option<String>,
    pub action: &'static str,
    pub version: &'static str,
}

impl Call {
    pub fn assume(role_arn: &str, session: &str) -> Call {
        Call {
            method: "GET",
            params: vec![
                ("RoleArn".into(), role_arn.into()),
                ("RoleSessionName".into(), session.into()),
            ],
            in_body: false,
            timestamp: None,
            nonce: None,
            action: "AssumeRole",
            version: "2015-04-01",
        }
    }

    pub fn param(mut self, name: &str, value: &str) -> Call {
        self.params.retain(|(k, _)| k != name);
        self.params.push((name.into(), value.into()));
        self
    }

    pub fn without(mut self, name: &str) -> Call {
        self.params.retain(|(k, _)| k != name);
        self
    }

    fn timestamp(&self) -> String {
        let t = self
            .timestamp
            .unwrap_or_else(time::OffsetDateTime::now_utc)
            .replace_nanosecond(0)
            .unwrap();
        ecs_metadata_emulator::format_utc(t)
    }

    fn nonce(&self) -> String {
        self.nonce
            .clone()
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
    }
}

/// A request ready to send.
#[derive(Clone, Debug)]
pub struct Wire {
    pub method: &'static str,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<(String, String)>,
}

impl Wire {
    /// Replaces a query parameter's value (after signing).
    pub fn set_query(&mut self, name: &str, value: &str) {
        let slot = self.query.iter_mut().find(|(k, _)| k == name).unwrap();
        slot.1 = value.into();
    }

    pub fn query_value(&self, name: &str) -> &str {
        &self.query.iter().find(|(k, _)| k == name).unwrap().1
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| k != name);
        self.headers.push((name.into(), value.into()));
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| k != name);
    }
}

/// Signs `call` with RPC V2 (HMAC-SHA1).
pub fn v2(call: &Call, key: &Key) -> Wire {
    let mut params = call.params.clone();
    for (k, v) in [
        ("Action", call.action.to_owned()),
        ("Version", call.version.to_owned()),
        ("Format", "JSON".to_owned()),
        ("AccessKeyId", key.id.clone()),
        ("SignatureMethod", "HMAC-SHA1".to_owned()),
        ("SignatureVersion", "1.0".to_owned()),
        ("SignatureNonce", call.nonce()),
        ("Timestamp", call.timestamp()),
    ] {
        params.push((k.to_owned(), v));
    }
    if let Some(token) = &key.token {
        params.push(("SecurityToken".into(), token.clone()));
    }
    let signature = sign::v2_signature(call.method, &params, &key.secret);
    params.push(("Signature".into(), signature));
    let (query, body) = if call.in_body {
        (Vec::new(), params)
    } else {
        (params, Vec::new())
    };
    Wire {
        method: call.method,
        query,
        headers: Vec::new(),
        body,
    }
}

/// Signs `call` with V3 (ACS3-HMAC-SHA256), parameters in the query, `host` = `authority`.
pub fn v3(call: &Call, key: &Key, authority: &str) -> Wire {
    let empty = sign::sha256_hex(b"");
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), authority.into()),
        ("x-acs-action".into(), call.action.into()),
        ("x-acs-version".into(), call.version.into()),
        ("x-acs-date".into(), call.timestamp()),
        ("x-acs-signature-nonce".into(), call.nonce()),
        ("x-acs-content-sha256".into(), empty.clone()),
    ];
    if let Some(token) = &key.token {
        headers.push(("x-acs-security-token".into(), token.clone()));
    }
    let signature = sign::v3_signature(
        &V3Input {
            method: call.method,
            query: &call.params,
            headers: &headers,
            hashed_payload: &empty,
        },
        &key.secret,
    );
    let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    let auth = format!(
        "{V3_ALGORITHM} Credential={},SignedHeaders={},Signature={signature}",
        key.id,
        names.join(";")
    );
    headers.push(("authorization".into(), auth));
    Wire {
        method: call.method,
        query: call.params.clone(),
        headers,
        body: Vec::new(),
    }
}

/// An STS answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or_default()
    }

    /// Asserts a refusal with `status` and `code`, in the documented error shape.
    pub fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{:#}",
            self.body
        );
        for field in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
            assert!(
                self.body[field].as_str().is_some_and(|v| !v.is_empty()),
                "no {field} in {:#}",
                self.body
            );
        }
    }

    /// Asserts success and returns `Credentials`.
    pub fn credentials(&self) -> Key {
        assert_eq!(self.status, 200, "{:#}", self.body);
        let c = &self.body["Credentials"];
        Key {
            id: c["AccessKeyId"].as_str().unwrap().into(),
            secret: c["AccessKeySecret"].as_str().unwrap().into(),
            token: Some(c["SecurityToken"].as_str().unwrap().into()),
        }
    }
}

/// Sends `wire` to `sts` over HTTPS, trusting only the emulator's CA. The future does not
/// borrow `sts`.
pub fn send(
    sts: &StsEmulator,
    wire: &Wire,
) -> impl std::future::Future<Output = Result<Answer, String>> + Send + 'static {
    let (addr, ca_pem, wire) = (sts.addr(), sts.ca_pem().to_owned(), wire.clone());
    async move { send_to(addr, &ca_pem, &wire).await }
}

/// An unsigned `Action=AssumeRole` GET to `addr`, trusting the CA certificates in `ca_pem`.
pub async fn send_unsigned(addr: SocketAddr, ca_pem: &[u8]) -> Answer {
    let wire = Wire {
        method: "GET",
        query: vec![("Action".into(), "AssumeRole".into())],
        headers: Vec::new(),
        body: Vec::new(),
    };
    let ca_pem = std::str::from_utf8(ca_pem).expect("PEM is ASCII");
    let answer = tokio::time::timeout(super::PROMPT, send_to(addr, ca_pem, &wire));
    answer
        .await
        .expect("STS answers promptly")
        .expect("an answer")
}

async fn send_to(addr: SocketAddr, ca_pem: &str, wire: &Wire) -> Result<Answer, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let encode = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", sign::percent_encode(k), sign::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let mut builder = http::Request::builder()
        .method(wire.method)
        .uri(format!("/?{}", encode(&wire.query)));
    if !wire.headers.iter().any(|(k, _)| k == "host") {
        builder = builder.header("host", addr.to_string());
    }
    for (k, v) in &wire.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if !wire.body.is_empty() {
        builder = builder.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = builder
        .body(Full::new(Bytes::from(encode(&wire.body))))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))?;
    Ok(Answer { status, body })
}
