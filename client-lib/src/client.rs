//! The async [`Client`]: socket path, in-process cache, single-flight fetch, retries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::credentials::{format_utc, Credentials, Health};
use crate::error::{sanitize_agent_message, Error};
use crate::transport::{self, Response};
use crate::{resolve_socket_path, SOCKET_ENV};

/// Default for [`ClientBuilder::refresh_before`]: re-fetch once less than 5 minutes remain.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Default for [`ClientBuilder::request_timeout`]: one try (connect, request, body).
///
/// Longer than the agent's default `first_credentials_wait_ms` (5 s), so a request that waits
/// for the agent's first credentials gets the agent's answer (credentials, or its reason for a
/// 503) rather than a client-side timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ClientBuilder::unavailable_retries`]: tries after the first one.
pub const DEFAULT_UNAVAILABLE_RETRIES: u32 = 3;
/// Default for [`ClientBuilder::retry_backoff`]: the first pause; each later one doubles.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Path of the credential endpoint on the agent's socket.
const CREDENTIALS_PATH: &str = "/v1/credentials";
/// Path of the health endpoint on the agent's socket.
const HEALTH_PATH: &str = "/v1/health";

/// The wall clock, injectable in tests.
pub(crate) type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Options for a [`Client`]; start from [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    socket_path: Option<PathBuf>,
    refresh_before: Duration,
    request_timeout: Duration,
    unavailable_retries: u32,
    retry_backoff: Duration,
    clock: Clock,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("socket_path", &self.socket_path)
            .field("refresh_before", &self.refresh_before)
            .field("request_timeout", &self.request_timeout)
            .field("unavailable_retries", &self.unavailable_retries)
            .field("retry_backoff", &self.retry_backoff)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            socket_path: None,
            refresh_before: DEFAULT_REFRESH_BEFORE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            unavailable_retries: DEFAULT_UNAVAILABLE_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            clock: system_clock(),
        }
    }
}

impl ClientBuilder {
    /// The agent's socket. When not set, [`SOCKET_ENV`] is used if set and non-empty, else
    /// [`DEFAULT_SOCKET_PATH`](crate::DEFAULT_SOCKET_PATH). Checked before every connection
    /// ([`check_socket_path`](crate::check_socket_path)): a path another user could redirect
    /// gives [`Error::UnsafeSocketPath`].
    pub fn socket_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket_path = Some(path.into());
        self
    }

    /// Re-fetch when less than this remains before `Expiration` (default
    /// [`DEFAULT_REFRESH_BEFORE`]). Cached credentials are returned while more remains.
    pub fn refresh_before(mut self, margin: Duration) -> Self {
        self.refresh_before = margin;
        self
    }

    /// Time allowed for one try: connect, request and the whole response (default
    /// [`DEFAULT_REQUEST_TIMEOUT`]). Retries each get their own.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many times to try again after a failure a restarting or starting agent explains
    /// (connection refused, `503`; see the retry table in the [crate docs](crate#retries))
    /// (default [`DEFAULT_UNAVAILABLE_RETRIES`]; `0` tries once). A missing socket is not
    /// retried.
    pub fn unavailable_retries(mut self, retries: u32) -> Self {
        self.unavailable_retries = retries;
        self
    }

    /// The pause before the first retry; each later one doubles (default
    /// [`DEFAULT_RETRY_BACKOFF`]: 100, 200, 400 ms).
    pub fn retry_backoff(mut self, first: Duration) -> Self {
        self.retry_backoff = first;
        self
    }

    /// Replaces the wall clock (tests of the cache).
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The client. The socket path is resolved now (reading [`SOCKET_ENV`] if needed); nothing
    /// is connected until the first request.
    pub fn build(self) -> Client {
        let env = std::env::var_os(SOCKET_ENV);
        self.build_with_env(env)
    }

    /// [`build`](ClientBuilder::build) with the environment variable's value given, so tests
    /// need not touch the process-global environment.
    pub(crate) fn build_with_env(self, env: Option<std::ffi::OsString>) -> Client {
        let socket_path = resolve_socket_path(self.socket_path, env);
        Client {
            inner: Arc::new(Inner {
                socket_path,
                refresh_before: self.refresh_before,
                request_timeout: self.request_timeout,
                unavailable_retries: self.unavailable_retries,
                retry_backoff: self.retry_backoff,
                clock: self.clock,
                cached: StdMutex::new(None),
                fetch: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// A client of `ecs-credential-agent`. Cheap to clone: clones share one cache.
///
/// `Send + Sync`; use it from any tokio runtime (no task is spawned).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    socket_path: PathBuf,
    refresh_before: Duration,
    request_timeout: Duration,
    unavailable_retries: u32,
    retry_backoff: Duration,
    clock: Clock,
    /// The last credentials fetched. A std mutex: held only to clone or replace, never across
    /// an `.await`.
    cached: StdMutex<Option<Credentials>>,
    /// Held while fetching, so that concurrent callers share one fetch.
    fetch: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("socket_path", &self.inner.socket_path)
            .field("refresh_before", &self.inner.refresh_before)
            .field("request_timeout", &self.inner.request_timeout)
            .field("unavailable_retries", &self.inner.unavailable_retries)
            .field("retry_backoff", &self.inner.retry_backoff)
            .finish_non_exhaustive()
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// How usable credentials are at an instant, given the refresh margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// More than the margin remains: serve from cache.
    Fresh,
    /// Still valid, but within the margin: fetch anew; serve only if fetching fails.
    Expiring,
    /// `Expiration` has passed (or is now): never serve.
    Expired,
}

/// Classifies credentials expiring at `expiration` at `now` with margin `refresh_before`.
pub(crate) fn freshness(
    now: OffsetDateTime,
    expiration: OffsetDateTime,
    refresh_before: Duration,
) -> Freshness {
    let left = expiration - now;
    if left <= time::Duration::ZERO {
        Freshness::Expired
    } else if left > refresh_before {
        Freshness::Fresh
    } else {
        Freshness::Expiring
    }
}

/// The pause before retry number `retry` (0-based): `first × 2^retry`, capped at 2^10 × first.
pub(crate) fn backoff(first: Duration, retry: u32) -> Duration {
    first.saturating_mul(1u32 << retry.min(10))
}

/// Runs `attempt` until it succeeds, fails with an error that is not transient
/// ([`Error::is_transient`]: the retry table in the [crate docs](crate#retries)), or has been
/// retried `retries` times; before retry `n` (0-based) it sleeps [`backoff`]`(first, n)`.
pub(crate) async fn with_retries<T, F, Fut>(
    retries: u32,
    first: Duration,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut retry = 0;
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && retry < retries => {
                let pause = backoff(first, retry);
                tracing::debug!(error = %e, retry, ?pause, "agent unavailable; retrying");
                tokio::time::sleep(pause).await;
                retry += 1;
            }
            other => return other,
        }
    }
}

impl Client {
    /// A client with default options, at the socket named by [`SOCKET_ENV`] or else
    /// [`DEFAULT_SOCKET_PATH`](crate::DEFAULT_SOCKET_PATH).
    pub fn new() -> Client {
        ClientBuilder::default().build()
    }

    /// Options: socket path, refresh margin, timeout, retries.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket_path
    }

    /// Valid credentials: from the in-process cache while more than
    /// [`refresh_before`](ClientBuilder::refresh_before) remains before `Expiration`, else
    /// fetched from the agent (concurrent callers share one fetch). Call it before every
    /// request you sign; it is cheap when cached.
    ///
    /// Credentials fetched with less than the margin left are returned (they are valid) and
    /// fetched anew on the next call. If a fetch fails while cached credentials are still
    /// valid, those are returned instead (unless the agent refused this caller). Credentials
    /// whose `Expiration` has passed are never returned.
    ///
    /// # Errors
    ///
    /// See [`Error`]: a refused connection and `503` are retried
    /// [`unavailable_retries`](ClientBuilder::unavailable_retries) times first; everything else,
    /// a missing socket included, fails at once (the [retry table](crate#retries)).
    pub async fn credentials(&self) -> Result<Credentials, Error> {
        if let Some(fresh) = self.cached_if(|f| f == Freshness::Fresh) {
            return Ok(fresh);
        }
        let _fetching = self.inner.fetch.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(fresh) = self.cached_if(|f| f == Freshness::Fresh) {
            return Ok(fresh);
        }
        match self.fetch_credentials().await {
            Ok(credentials) => {
                *self.lock_cache() = Some(credentials.clone());
                Ok(credentials)
            }
            Err(e @ Error::PermissionDenied { .. }) => {
                *self.lock_cache() = None;
                Err(e)
            }
            Err(e) => match self.cached_if(|f| f == Freshness::Expiring) {
                Some(still_valid) => {
                    tracing::warn!(
                        error = %e,
                        access_key_id = %still_valid.access_key_id,
                        "refreshing credentials from ecs-credential-agent failed; using cached credentials until they expire"
                    );
                    Ok(still_valid)
                }
                None => Err(e),
            },
        }
    }

    /// The agent's health report. `503` (no valid credentials) is a successful [`Health`] with
    /// [`status`](Health::status) `503`; it is not retried.
    ///
    /// # Errors
    ///
    /// [`Error::AgentNotRunning`], [`Error::PermissionDenied`] and [`Error::UnsafeSocketPath`]
    /// as for [`credentials`](Client::credentials); [`Error::Protocol`] for another status or a body
    /// that is not JSON.
    pub async fn health(&self) -> Result<Health, Error> {
        let inner = &self.inner;
        let response =
            transport::get(&inner.socket_path, HEALTH_PATH, inner.request_timeout).await?;
        match response.status {
            200 | 503 => Health::from_body(response.status, &response.body),
            _ => Err(self.status_error(HEALTH_PATH, &response)),
        }
    }

    /// A clone of the cached credentials if their freshness now satisfies `accept`.
    fn cached_if(&self, accept: impl Fn(Freshness) -> bool) -> Option<Credentials> {
        let now = (self.inner.clock)();
        let cache = self.lock_cache();
        cache
            .as_ref()
            .filter(|c| accept(freshness(now, c.expiration, self.inner.refresh_before)))
            .cloned()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Credentials>> {
        // A panic while holding the lock cannot leave the Option half-written.
        self.inner
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One fetch with retries of transient failures ([`with_retries`]); refuses expired
    /// credentials.
    async fn fetch_credentials(&self) -> Result<Credentials, Error> {
        let inner = &self.inner;
        with_retries(inner.unavailable_retries, inner.retry_backoff, || {
            self.try_fetch_credentials()
        })
        .await
    }

    async fn try_fetch_credentials(&self) -> Result<Credentials, Error> {
        let inner = &self.inner;
        let response =
            transport::get(&inner.socket_path, CREDENTIALS_PATH, inner.request_timeout).await?;
        if response.status != 200 {
            return Err(self.status_error(CREDENTIALS_PATH, &response));
        }
        let credentials = Credentials::from_body(&response.body)?;
        let now = (inner.clock)();
        if freshness(now, credentials.expiration, inner.refresh_before) == Freshness::Expired {
            return Err(Error::protocol(format!(
                "the agent served credentials {} that expired at {} (now {}); is the clock right?",
                credentials.access_key_id,
                format_utc(credentials.expiration),
                format_utc(now)
            )));
        }
        Ok(credentials)
    }

    /// The error for a non-`200` answer, from its status and JSON `{"Code","Message"}` body.
    ///
    /// Only called for error statuses, whose bodies never hold credentials.
    fn status_error(&self, path: &str, response: &Response) -> Error {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct ErrorBody {
            code: Option<String>,
            message: Option<String>,
        }
        let body: Option<ErrorBody> = serde_json::from_slice(&response.body).ok();
        let (code, message) = body.map_or((None, None), |b| (b.code, b.message));
        let code = code.map_or_else(|| "unknown".to_owned(), |c| sanitize_agent_message(&c));
        let message = message.map(|m| sanitize_agent_message(&m));
        let status = response.status;
        match status {
            403 => Error::PermissionDenied {
                path: self.inner.socket_path.clone(),
                message: message.unwrap_or_else(|| "the agent refused this caller".to_owned()),
                source: None,
            },
            503 => Error::Unavailable {
                code,
                message: message.unwrap_or_else(|| "no reason given".to_owned()),
            },
            _ => Error::protocol(format!(
                "GET {path} answered HTTP {status} {code}: {}",
                message.as_deref().unwrap_or("no message")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn freshness_table() {
        let now = datetime!(2024-11-08 09:00:00 UTC);
        let margin = Duration::from_secs(300);
        let at = |secs: i64| now + time::Duration::seconds(secs);
        for (expires_in, want) in [
            (3600, Freshness::Fresh),
            (301, Freshness::Fresh),
            (300, Freshness::Expiring),
            (1, Freshness::Expiring),
            (0, Freshness::Expired),
            (-60, Freshness::Expired),
        ] {
            assert_eq!(freshness(now, at(expires_in), margin), want, "{expires_in}");
        }
        // A zero margin serves credentials until the last second.
        assert_eq!(freshness(now, at(1), Duration::ZERO), Freshness::Fresh);
    }

    /// How many attempts [`with_retries`] makes (3 retries allowed) when every attempt fails
    /// with `error()`, on paused time: the count of "connections", not a duration.
    async fn attempts_on(error: impl Fn() -> Error) -> usize {
        let attempts = std::cell::Cell::new(0);
        let result: Result<(), Error> = with_retries(3, Duration::from_millis(100), || {
            attempts.set(attempts.get() + 1);
            let e = error();
            async move { Err(e) }
        })
        .await;
        assert!(result.is_err());
        attempts.get()
    }

    fn not_running(kind: std::io::ErrorKind) -> Error {
        Error::AgentNotRunning {
            path: PathBuf::from("/run/x/agent.sock"),
            source: std::io::Error::from(kind),
        }
    }

    /// Retry table, row 1: a missing socket (or directory) means no agent; one attempt.
    #[tokio::test(start_paused = true)]
    async fn no_retry_when_the_socket_does_not_exist() {
        let attempts = attempts_on(|| not_running(std::io::ErrorKind::NotFound)).await;
        assert_eq!(attempts, 1);
    }

    /// Retry table, row 2: a socket nobody listens on is what a crashed agent leaves until its
    /// supervisor restarts it.
    #[tokio::test(start_paused = true)]
    async fn retry_connection_refused() {
        let attempts = attempts_on(|| not_running(std::io::ErrorKind::ConnectionRefused)).await;
        assert_eq!(attempts, 4, "one try and three retries");
    }

    /// Retry table, row 3: `503` while the agent starts or is full.
    #[tokio::test(start_paused = true)]
    async fn retry_503() {
        let attempts = attempts_on(|| Error::Unavailable {
            code: "CredentialsUnavailable".into(),
            message: "agent is starting".into(),
        })
        .await;
        assert_eq!(attempts, 4, "one try and three retries");
    }

    /// Retry table, row 4: refusals retrying cannot change.
    #[tokio::test(start_paused = true)]
    async fn no_retry_when_refused() {
        let denied = attempts_on(|| Error::PermissionDenied {
            path: PathBuf::from("/run/x/agent.sock"),
            message: "no".into(),
            source: None,
        })
        .await;
        let eacces = attempts_on(|| not_running(std::io::ErrorKind::PermissionDenied)).await;
        assert_eq!((denied, eacces), (1, 1));
    }

    /// Retry table, row 5: a timeout or an answer this client does not understand.
    #[tokio::test(start_paused = true)]
    async fn no_retry_on_protocol_errors() {
        assert_eq!(attempts_on(|| Error::protocol("timed out")).await, 1);
    }

    /// A retried failure that clears: the next attempt's success is returned.
    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_then_success_succeeds() {
        let attempts = std::cell::Cell::new(0);
        let got = with_retries(3, Duration::from_millis(100), || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                match n {
                    1 => Err(not_running(std::io::ErrorKind::ConnectionRefused)),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(got.ok(), Some(2));
    }

    #[test]
    fn backoff_doubles_from_the_first_pause() {
        let first = Duration::from_millis(100);
        let got: Vec<_> = (0..4).map(|r| backoff(first, r).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800]);
        assert_eq!(backoff(first, 40), backoff(first, 10));
    }
}
