//! The HTTP side of the metadata client: requests, timeouts, the retry table, no proxy ever.
//!
//! See [`Client`] for the retry table. Parsing lives in [`super::response`], the metadata token
//! cache in [`super::token`].

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::config::{Config as MetadataConfig, MAX_TOKEN_TTL};
use super::response::{self, MAX_BODY_BYTES};
use super::token::TokenCache;
use super::{MetadataError, ROLE_LIST_PATH, TOKEN_HEADER, TOKEN_PATH, TOKEN_TTL_HEADER};
use crate::credentials::{format_utc, Fetched, Source};
use crate::metrics::Metrics;
use crate::time::SharedTimeSource;

/// The hardened-mode metadata service client: the instance role's [`Source`] of credentials.
///
/// One [`fetch`](Source::fetch) is: get the metadata token (cached, see
/// [`TokenCache`]); discover the role with `GET /latest/meta-data/ram/security-credentials/`
/// unless `[metadata] role_name` is set; `GET …/security-credentials/<role>`; parse and validate
/// ([`response::parse_credentials`]).
///
/// # Transport
///
/// Plain HTTP/1.1 (the service has no TLS), never through a proxy (`HTTP_PROXY`, `http_proxy`,
/// `ALL_PROXY` are ignored), never following redirects, never sending `X-Forwarded-For` (the
/// service refuses a token `PUT` carrying it), a fresh connection per request (no stale pooled
/// connections after an hour idle). Limits per request: `connect_timeout` to connect,
/// `read_timeout` for each read, and an overall deadline of [`request_deadline`]
/// (`connect_timeout + 2 × read_timeout`, 3 s by default) so a server trickling bytes cannot
/// hold a fetch forever. Bodies over [`MAX_BODY_BYTES`] are refused without being read.
///
/// # Retry table
///
/// Within one fetch the only retry is the 401 row; every other error is returned at once. The
/// refresher ([`crate::credentials::refresher`]) backs off and tries again, forever, after any
/// error; "transient" ([`MetadataError::is_transient`]) only says the error may clear by itself.
///
/// | request | answer | outcome |
/// |---|---|---|
/// | token `PUT` | 200 with a plain-text token | token cached for its TTL |
/// | token `PUT` | 200 with an HTML page, an empty token, a token over 1 KiB or not printable ASCII | [`NotMetadataService`](MetadataError::NotMetadataService) |
/// | token `PUT` | 400 | [`Rejected`](MetadataError::Rejected), no retry |
/// | token `PUT` | 403 | [`TokenRefused`](MetadataError::TokenRefused) ("metadata token refused") |
/// | token `PUT` | 405, other 3xx/4xx, 2xx other than 200 | `Rejected`, no retry |
/// | token `PUT` | 429, 5xx | [`Unavailable`](MetadataError::Unavailable), transient |
/// | token `PUT` failed | (with `allow_imdsv1_fallback = true`) | the `GET`s go without a token, with a warning |
/// | `GET` | 200 | ok |
/// | `GET` with token | 401 | drop the token, `PUT` a new one, retry that `GET` once; 401 again → [`TokenRejected`](MetadataError::TokenRejected) |
/// | `GET` without token | 401 | `Rejected` |
/// | `GET` without token | 403 | [`HardenedModeRequired`](MetadataError::HardenedModeRequired) |
/// | `GET` with token | 403 | `Rejected` |
/// | `GET` | 404 | [`RoleNotAttached`](MetadataError::RoleNotAttached), with the role name asked for |
/// | `GET` | 400, 405, other 3xx/4xx, 2xx other than 200 | `Rejected` |
/// | `GET` | 429, 5xx | `Unavailable`, transient |
/// | any | refused, unreachable, connect timeout, reset | [`Unreachable`](MetadataError::Unreachable), transient |
/// | any | connected, but the answer is not HTTP | `NotMetadataService` |
/// | `GET` | 200 with an HTML page, or a role list that is not a single role name | `NotMetadataService` |
/// | any | no answer within `read_timeout` or the deadline | [`Timeout`](MetadataError::Timeout), transient |
/// | any | body over 64 KiB, bad JSON or fields | [`InvalidResponse`](MetadataError::InvalidResponse) |
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host[:port]`, no trailing slash.
    endpoint: String,
    role_name: Option<String>,
    token: TokenCache,
    allow_imdsv1_fallback: bool,
    read_timeout: Duration,
    connect_timeout: Duration,
    deadline: Duration,
    time: SharedTimeSource,
    /// Where each request's endpoint, status and latency are recorded, if anywhere.
    metrics: Option<Metrics>,
}

/// What a status code on the token `PUT` means (the first rows of the table on [`Client`]).
///
/// # Errors
/// The [`MetadataError`] for every status but 200.
pub fn classify_token_put(status: u16) -> Result<(), MetadataError> {
    match status {
        200 => Ok(()),
        403 => Err(MetadataError::TokenRefused { path: TOKEN_PATH }),
        429 | 500..=599 => Err(MetadataError::Unavailable {
            path: TOKEN_PATH.to_owned(),
            status,
        }),
        _ => Err(MetadataError::Rejected {
            method: "PUT",
            path: TOKEN_PATH.to_owned(),
            status,
        }),
    }
}

/// What to do after a `GET` answered.
#[derive(Debug)]
pub enum GetOutcome {
    /// 200: use the body.
    Ok,
    /// 401 with a token: renew the metadata token and retry once.
    RenewToken,
    /// Anything else: fail the fetch with this error.
    Fail(MetadataError),
}

/// What a status code on a `GET` of `path` means (the `GET` rows of the table on [`Client`]).
/// `with_token` says whether the request carried a metadata token; `role_name` is the role asked
/// for, if any.
pub fn classify_get(
    status: u16,
    with_token: bool,
    path: &str,
    role_name: Option<&str>,
) -> GetOutcome {
    let rejected = || MetadataError::Rejected {
        method: "GET",
        path: path.to_owned(),
        status,
    };
    GetOutcome::Fail(match status {
        200 => return GetOutcome::Ok,
        401 if with_token => return GetOutcome::RenewToken,
        403 if !with_token => MetadataError::HardenedModeRequired,
        404 => MetadataError::RoleNotAttached {
            role_name: role_name.map(str::to_owned),
        },
        429 | 500..=599 => MetadataError::Unavailable {
            path: path.to_owned(),
            status,
        },
        _ => rejected(),
    })
}

/// The overall deadline of one request: `connect_timeout + 2 × read_timeout` (one read timeout
/// for the response head, one for the body).
pub fn request_deadline(config: &MetadataConfig) -> Duration {
    config.connect_timeout + 2 * config.read_timeout
}

/// A response: status, `Content-Type`, and (for 200 only) the body, zeroized on drop.
struct Answer {
    status: u16,
    content_type: Option<String>,
    /// The `Date` header, when present and valid.
    date: Option<std::time::SystemTime>,
    body: Zeroizing<Vec<u8>>,
}

impl Client {
    /// A client for `config`, reading the wall clock from `time` (to check `Expiration` on
    /// arrival). The metadata token TTL is clamped to 1..=21600 s.
    ///
    /// # Errors
    /// [`MetadataError::InvalidConfig`] naming the endpoint when it is not `http://host[:port]`
    /// (no path, query, user or password), or the role name when it is not a plausible RAM role
    /// name ([`response::check_role_name`]).
    pub fn new(config: &MetadataConfig, time: SharedTimeSource) -> Result<Client, MetadataError> {
        let endpoint = parse_endpoint(&config.endpoint)?;
        if let Some(role) = &config.role_name {
            response::check_role_name(role).map_err(|reason| MetadataError::InvalidConfig {
                key: "role_name",
                value: role.to_string(),
                reason,
            })?;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .pool_max_idle_per_host(0)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("ecs-credential-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MetadataError::Unreachable {
                endpoint: endpoint.clone(),
                reason: format!(
                    "cannot set up the HTTP client: {}",
                    transport::innermost(&e)
                ),
            })?;
        let ttl_secs = config.token_ttl.as_secs().clamp(1, MAX_TOKEN_TTL.as_secs());
        Ok(Client {
            http,
            endpoint,
            role_name: config.role_name.as_deref().map(str::to_owned),
            token: TokenCache::new(Duration::from_secs(ttl_secs)),
            allow_imdsv1_fallback: config.allow_imdsv1_fallback,
            read_timeout: config.read_timeout,
            connect_timeout: config.connect_timeout,
            deadline: request_deadline(config),
            time,
            metrics: None,
        })
    }

    /// This client, recording every request (endpoint, HTTP status or error, latency) in
    /// `metrics` ([`Metrics::metadata_request`]).
    pub fn with_metrics(mut self, metrics: Metrics) -> Client {
        self.metrics = Some(metrics);
        self
    }

    async fn fetch_once(&self) -> Result<Fetched, MetadataError> {
        let mut token = self.session_token().await?;
        let role_name = match &self.role_name {
            Some(role) => role.clone(),
            None => {
                let answer = self.get(ROLE_LIST_PATH, &mut token, None).await?;
                response::reject_html(answer.content_type.as_deref(), &answer.body, "a role name")
                    .and_then(|()| response::parse_role_name(&answer.body))
                    .map_err(|shape| self.not_the_service("GET", ROLE_LIST_PATH, &answer, shape))?
            }
        };
        let path = format!("{ROLE_LIST_PATH}{role_name}");
        let answer = self.get(&path, &mut token, Some(&role_name)).await?;
        response::reject_html(answer.content_type.as_deref(), &answer.body, "JSON")
            .map_err(|shape| self.not_the_service("GET", &path, &answer, shape))?;
        let credentials = response::parse_credentials(&answer.body, self.time.now(), &path)?;
        tracing::debug!(
            role_name,
            access_key_id = credentials.access_key_id,
            expiration = format_utc(credentials.expiration),
            last_updated = format_utc(credentials.last_updated),
            "fetched credentials"
        );
        Ok(Fetched {
            role_name,
            credentials,
            service_time: answer.date,
        })
    }

    /// The metadata token for this fetch, or `None` when the token `PUT` failed and the
    /// tokenless fallback is allowed.
    async fn session_token(&self) -> Result<Option<SecretString>, MetadataError> {
        match self.token.get_or_put(|| self.put_token()).await {
            Ok(token) => Ok(Some(token)),
            Err(error) if self.allow_imdsv1_fallback => {
                tracing::warn!(
                    error = error.to_string().as_str(),
                    "metadata token PUT failed; falling back to GETs without a metadata token \
                     (allow_imdsv1_fallback = true)"
                );
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// `PUT /latest/api/token`, returning the token.
    async fn put_token(&self) -> Result<SecretString, MetadataError> {
        let ttl_secs = self.token.ttl().as_secs();
        let header = (TOKEN_TTL_HEADER, HeaderValue::from(ttl_secs));
        let answer = self.send(Method::PUT, TOKEN_PATH, Some(header)).await?;
        classify_token_put(answer.status)?;
        let content_type = answer.content_type.as_deref();
        let token = response::reject_html(content_type, &answer.body, "a metadata token")
            .and_then(|()| response::parse_token(&answer.body))
            .map_err(|shape| self.not_the_service("PUT", TOKEN_PATH, &answer, shape))?;
        tracing::debug!(
            token_len = token.expose_secret().len(),
            ttl_secs,
            "metadata token obtained"
        );
        Ok(token)
    }

    /// `GET path` with `token` (if any), applying the `GET` rows of the retry table; a renewed
    /// token replaces `token` for the rest of the fetch.
    async fn get(
        &self,
        path: &str,
        token: &mut Option<SecretString>,
        role_name: Option<&str>,
    ) -> Result<Answer, MetadataError> {
        let mut renewed = false;
        loop {
            let header = match token.as_ref() {
                Some(t) => Some((TOKEN_HEADER, token_header(t, path)?)),
                None => None,
            };
            let answer = self.send(Method::GET, path, header).await?;
            match classify_get(answer.status, token.is_some(), path, role_name) {
                GetOutcome::Ok => return Ok(answer),
                GetOutcome::Fail(error) => return Err(error),
                GetOutcome::RenewToken if renewed => return Err(MetadataError::TokenRejected),
                GetOutcome::RenewToken => {
                    tracing::debug!(path, "metadata token rejected (401); renewing it once");
                    if let Some(rejected) = token.take() {
                        self.token.invalidate(&rejected).await;
                    }
                    *token = Some(self.token.get_or_put(|| self.put_token()).await?);
                    renewed = true;
                }
            }
        }
    }

    /// One request within [`request_deadline`]; reads the body (capped) only on 200.
    async fn send(
        &self,
        method: Method,
        path: &str,
        header: Option<(&'static str, HeaderValue)>,
    ) -> Result<Answer, MetadataError> {
        let started = Instant::now();
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.endpoint));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|e| self.transport_error(&e, &method, path))?;
            self.read_answer(response, &method, path).await
        };
        let result = match tokio::time::timeout(self.deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(MetadataError::Timeout {
                path: path.to_owned(),
                after: self.deadline,
            }),
        };
        let elapsed = started.elapsed();
        if let Some(metrics) = &self.metrics {
            metrics.metadata_request(
                super::endpoint_label(path),
                result.as_ref().ok().map(|a| a.status),
                elapsed,
            );
        }
        let latency_ms = elapsed.as_millis() as u64;
        match &result {
            Ok(a) => {
                tracing::debug!(%method, path, status = a.status, latency_ms, "metadata request")
            }
            Err(error) => {
                tracing::debug!(%method, path, error = error.to_string().as_str(), latency_ms,
                    "metadata request failed")
            }
        }
        result
    }

    async fn read_answer(
        &self,
        mut response: reqwest::Response,
        method: &Method,
        path: &str,
    ) -> Result<Answer, MetadataError> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let date = response
            .headers()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(response::parse_http_date);
        let mut body = Zeroizing::new(Vec::new());
        if status != 200 {
            return Ok(Answer {
                status,
                content_type,
                date,
                body,
            });
        }
        let announced = response.headers().get(CONTENT_LENGTH);
        if announced
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(response::body_too_large(path));
        }
        // Allocated once at the cap: the buffer never reallocates, leaving no unzeroized copy.
        body.reserve_exact(MAX_BODY_BYTES);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, method, path))?
        {
            response::append_capped(&mut body, &chunk, path)?;
        }
        Ok(Answer {
            status,
            content_type,
            date,
            body,
        })
    }

    /// The error for a transport failure `e` of `method path` ([`transport::classify`]).
    fn transport_error(&self, e: &reqwest::Error, method: &Method, path: &str) -> MetadataError {
        let limits = transport::Limits {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        };
        transport::classify(e, &self.endpoint, method, path, limits)
    }

    /// [`MetadataError::NotMetadataService`] for `answer` to `method path`, of `shape`.
    fn not_the_service(
        &self,
        method: &'static str,
        path: &str,
        answer: &Answer,
        shape: response::Shape,
    ) -> MetadataError {
        let content_type = answer.content_type.as_deref();
        let answered = response::describe_answer(answer.status, content_type, answer.body.len());
        MetadataError::NotMetadataService {
            endpoint: self.endpoint.clone(),
            method,
            path: path.to_owned(),
            shape: format!("{answered}: {shape}"),
        }
    }
}

impl Source for Client {
    type Error = MetadataError;

    async fn fetch(&self) -> Result<Fetched, MetadataError> {
        self.fetch_once().await
    }

    /// `instance role` (the role's name is logged with each generation).
    fn label(&self) -> &str {
        "instance role"
    }
}

/// The `X-aliyun-ecs-metadata-token` header value, marked sensitive.
fn token_header(token: &SecretString, path: &str) -> Result<HeaderValue, MetadataError> {
    let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
        MetadataError::InvalidResponse {
            path: path.to_owned(),
            what: "metadata token is not a valid header value".to_owned(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Checks `endpoint` is `http://host[:port]` and returns it without a trailing slash.
///
/// # Errors
/// [`MetadataError::InvalidConfig`] saying what is wrong.
pub fn parse_endpoint(endpoint: &str) -> Result<String, MetadataError> {
    let bad = |reason: &str| MetadataError::InvalidConfig {
        key: "endpoint",
        value: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if url.scheme() != "http" {
        return Err(bad(
            "must start with http:// (the metadata service is plain HTTP)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user or password"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "must be http://host[:port] with no path, query or fragment",
        ));
    }
    Ok(url.origin().ascii_serialization())
}

mod facts;
mod transport;

pub use facts::InstanceFacts;

#[cfg(test)]
mod tests;
