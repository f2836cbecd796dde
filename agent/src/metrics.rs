//! Prometheus metrics: one [`Metrics`] registry, fed by the metadata client, the refresher and
//! the socket server, exposed as OpenMetrics text (the `prometheus-client` crate's encoder).
//!
//! # Where it is served
//!
//! - `GET /metrics` on the agent socket, to allowed callers (like every other route).
//! - `GET /metrics` on the optional loopback TCP address `[metrics] listen`
//!   ([`server::metrics_listener`](crate::server::metrics_listener)), with no
//!   peer check: metrics carry no secret. Nothing else is served there (every other path is 404).
//!
//! # Metrics
//!
//! All names start with `ecs_credential_agent_`; times are in seconds; counters end in `_total`.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `credentials_expires_in_seconds` | gauge | | seconds until `Expiration` of the held credentials (0 when none are held), at scrape time on the monotonic clock |
//! | `credentials_generation` | gauge | | generation number of the held credentials (0 when none) |
//! | `ready` | gauge | | 1 while servable credentials are held, else 0 |
//! | `credentials_stale` | gauge | | 1 while credentials are served although the last refresh failed |
//! | `last_refresh_success_timestamp_seconds` | gauge | | Unix time of the last successful fetch (0 before the first) |
//! | `refreshes_total` | counter | `result` | refresh attempts by outcome: `success` (new generation), `unchanged`, or an error kind ([`error_kind`]) |
//! | `metadata_requests_total` | counter | `endpoint`, `status` | metadata service requests; `endpoint` is `token`, `role_list` or `credentials`; `status` the HTTP status or `error` |
//! | `metadata_request_duration_seconds` | histogram | `endpoint` | metadata service request latency |
//! | `socket_requests_total` | counter | `endpoint`, `status` | socket requests; `endpoint` is `credentials`, `health`, `metrics` or `other` |
//! | `callers_denied_total` | counter | | requests refused because the caller's uid and groups are not allowed |
//! | `connections_rejected_total` | counter | | connections refused beyond `max_connections` |
//!
//! The outcomes `success` and `unchanged` and the three latency histograms are exposed (at 0)
//! from the start; other labelled series appear with their first sample.
//!
//! No label or value ever holds a secret, a metadata token, an `AccessKeyId` or a request path
//! as sent (label values come from fixed sets, so cardinality is bounded).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

use crate::credentials::state::{State, StateReceiver};
use crate::metadata::{MetadataError, ROLE_LIST_PATH, TOKEN_PATH};

/// The `Content-Type` of the exposition (OpenMetrics text 1.0.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The prefix of every metric name.
pub const PREFIX: &str = "ecs_credential_agent";

/// Upper bounds (seconds) of the metadata request latency buckets: the default per-request
/// deadline is 3 s ([`crate::metadata::client::request_deadline`]).
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Labels of `refreshes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    result: &'static str,
}

/// Labels of `metadata_requests_total` and `socket_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: String,
}

/// Labels of `metadata_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The agent's metrics. Cloning is cheap (an `Arc`); every clone records into the same
/// registry. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    refreshes: Family<RefreshLabels, Counter>,
    metadata_requests: Family<RequestLabels, Counter>,
    metadata_latency: HistogramFamily,
    socket_requests: Family<RequestLabels, Counter>,
    /// The `socket_requests` series of `GET /v1/credentials` answered 200 (the hot path), taken
    /// from the family on first use, so counting it needs no label hashing or lock.
    credentials_ok: OnceLock<Counter>,
    callers_denied: Counter,
    connections_rejected: Counter,
    state: Arc<StateGauges>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric of the module docs registered. The state gauges read
    /// nothing (not ready, 0) until [`Metrics::observe_state`] is called.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let refreshes = Family::<RefreshLabels, Counter>::default();
        let metadata_requests = Family::<RequestLabels, Counter>::default();
        let metadata_latency = HistogramFamily::new_with_constructor(latency_histogram);
        let socket_requests = Family::<RequestLabels, Counter>::default();
        let callers_denied = Counter::default();
        let connections_rejected = Counter::default();
        let state = Arc::new(StateGauges::default());
        registry.register(
            "refreshes",
            "Credential refresh attempts by result: success (new generation), unchanged, or the error kind",
            refreshes.clone(),
        );
        registry.register(
            "metadata_requests",
            "Requests to the metadata service by endpoint (token, role_list, credentials) and HTTP status (or error)",
            metadata_requests.clone(),
        );
        registry.register_with_unit(
            "metadata_request_duration",
            "Latency of requests to the metadata service by endpoint",
            Unit::Seconds,
            metadata_latency.clone(),
        );
        registry.register(
            "socket_requests",
            "Requests on the agent socket by endpoint (credentials, health, metrics, other) and HTTP status",
            socket_requests.clone(),
        );
        registry.register(
            "callers_denied",
            "Socket requests refused because the caller's uid and groups are not allowed",
            callers_denied.clone(),
        );
        registry.register(
            "connections_rejected",
            "Socket connections refused with 503 TooManyConnections beyond max_connections",
            connections_rejected.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&state)));
        for result in ["success", "unchanged"] {
            let _ = refreshes.get_or_create(&RefreshLabels { result });
        }
        for endpoint in ["token", "role_list", "credentials"] {
            let _ = metadata_latency.get_or_create(&EndpointLabels { endpoint });
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                refreshes,
                metadata_requests,
                metadata_latency,
                socket_requests,
                credentials_ok: OnceLock::new(),
                callers_denied,
                connections_rejected,
                state,
            }),
        }
    }

    /// Reads the state gauges (expiry, generation, readiness, staleness, last success) from
    /// `state` at every scrape. A later call replaces the receiver.
    pub fn observe_state(&self, state: StateReceiver) {
        if let Ok(mut slot) = self.inner.state.receiver.lock() {
            *slot = Some(state);
        }
    }

    /// The whole registry as OpenMetrics text (ending in `# EOF`), served with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; the encoder only propagates the writer's errors.
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("encoding metrics into a String");
        out
    }

    /// Records a refresh attempt's outcome: `Ok(true)` a new generation, `Ok(false)` the same
    /// generation again, `Err` the error (by [`error_kind`]).
    pub fn refresh(&self, outcome: Result<bool, &MetadataError>) {
        let result = match outcome {
            Ok(true) => "success",
            Ok(false) => "unchanged",
            Err(e) => error_kind(e),
        };
        self.inner
            .refreshes
            .get_or_create(&RefreshLabels { result })
            .inc();
    }

    /// Records one metadata service request to `path` that took `latency`, answered with HTTP
    /// `status` (`None` when no status arrived: connection error, timeout, body error).
    pub fn metadata_request(&self, path: &str, status: Option<u16>, latency: std::time::Duration) {
        let endpoint = metadata_endpoint(path);
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.inner
            .metadata_requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.inner
            .metadata_latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(latency.as_secs_f64());
    }

    /// Records one socket request to `path` answered with HTTP `status`.
    pub fn socket_request(&self, path: &str, status: u16) {
        self.socket_request_to(socket_endpoint(path), status);
    }

    /// [`Metrics::socket_request`] with the `endpoint` label already derived from the path
    /// ([`socket_endpoint`]).
    pub(crate) fn socket_request_to(&self, endpoint: &'static str, status: u16) {
        if (endpoint, status) == ("credentials", 200) {
            let ok = self.inner.credentials_ok.get_or_init(|| {
                self.inner
                    .socket_requests
                    .get_or_create(&RequestLabels {
                        endpoint,
                        status: status.to_string(),
                    })
                    .clone()
            });
            ok.inc();
            return;
        }
        let labels = RequestLabels {
            endpoint,
            status: status.to_string(),
        };
        self.inner.socket_requests.get_or_create(&labels).inc();
    }

    /// Records a request refused because the caller is not allowed.
    pub fn caller_denied(&self) {
        self.inner.callers_denied.inc();
    }

    /// Records a connection refused beyond `max_connections`.
    pub fn connection_rejected(&self) {
        self.inner.connections_rejected.inc();
    }
}

/// The `endpoint` label of a metadata service request path.
fn metadata_endpoint(path: &str) -> &'static str {
    match path {
        TOKEN_PATH => "token",
        ROLE_LIST_PATH => "role_list",
        _ => "credentials",
    }
}

/// The `endpoint` label of a socket request path (unknown paths are `other`, so a caller cannot
/// create label values).
pub(crate) fn socket_endpoint(path: &str) -> &'static str {
    match path {
        "/v1/credentials" => "credentials",
        "/v1/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    }
}

/// The `result` label of a failed refresh: one fixed word per [`MetadataError`] variant.
pub fn error_kind(error: &MetadataError) -> &'static str {
    match error {
        MetadataError::TokenRefused { .. } => "token_refused",
        MetadataError::HardenedModeRequired => "hardened_mode_required",
        MetadataError::TokenRejected => "token_rejected",
        MetadataError::RoleNotAttached { .. } => "role_not_attached",
        MetadataError::Rejected { .. } => "rejected",
        MetadataError::Unavailable { .. } => "unavailable",
        MetadataError::Unreachable { .. } => "unreachable",
        MetadataError::Timeout { .. } => "timeout",
        MetadataError::InvalidResponse { .. } => "invalid_response",
        MetadataError::InvalidConfig { .. } => "invalid_config",
        MetadataError::ExpiredOnArrival { .. } => "expired_on_arrival",
    }
}

/// The gauges computed from the refresher's [`State`] at scrape time.
#[derive(Debug, Default)]
struct StateGauges {
    receiver: Mutex<Option<StateReceiver>>,
}

/// The state gauges' values at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StateValues {
    expires_in: f64,
    generation: i64,
    ready: i64,
    stale: i64,
    last_success: f64,
}

impl StateValues {
    fn of(state: &State, now: Instant) -> StateValues {
        let held = state.credentials.as_deref();
        let last_success = state
            .last_success
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs() as f64);
        StateValues {
            expires_in: held.map_or(0.0, |c| {
                c.expires_at.saturating_duration_since(now).as_secs_f64()
            }),
            generation: held.map_or(0, |c| i64::try_from(c.generation).unwrap_or(i64::MAX)),
            ready: i64::from(state.credentials_at(now).is_ok()),
            stale: i64::from(state.is_stale(now)),
            last_success,
        }
    }
}

impl Collector for StateGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = match self.receiver.lock() {
            Ok(rx) => rx.as_ref().map(|rx| rx.borrow().clone()),
            Err(_) => None,
        };
        let v = StateValues::of(&state.unwrap_or_default(), Instant::now());
        let seconds = Some(&Unit::Seconds);
        let f64_gauges = [
            (
                "credentials_expires_in",
                "Seconds until Expiration of the held credentials (0 when none are held).",
                v.expires_in,
            ),
            (
                "last_refresh_success_timestamp",
                "Unix time of the last successful credential fetch (0 before the first).",
                v.last_success,
            ),
        ];
        for (name, help, value) in f64_gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, seconds, gauge.metric_type())?)?;
        }
        let i64_gauges = [
            (
                "credentials_generation",
                "Generation number of the held credentials (0 when none are held).",
                v.generation,
            ),
            (
                "ready",
                "1 while valid credentials are held and served, else 0.",
                v.ready,
            ),
            (
                "credentials_stale",
                "1 while valid credentials are served although the last refresh failed, else 0.",
                v.stale,
            ),
        ];
        for (name, help, value) in i64_gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
