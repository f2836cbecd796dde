//! Prometheus metrics: one [`Metrics`] registry, fed by the metadata client, the refresher and
//! the socket server, exposed as OpenMetrics text (the `prometheus-client` crate's encoder).
//!
//! This module is a sink: it knows no domain type. Callers hand it fixed words (an error's
//! `kind()`, a route's label, a metadata endpoint's label) and numbers; the credential gauges are
//! read at scrape time through a function the daemon installs ([`Metrics::observe_credentials`]).
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
//! | `refreshes_total` | counter | `result` | refresh attempts by outcome: `success` (new generation), `unchanged`, or the error's kind (a fixed word, e.g. `timeout`) |
//! | `metadata_requests_total` | counter | `endpoint`, `status` | metadata service requests; `endpoint` is `token`, `role_list` or `credentials`; `status` the HTTP status or `error` |
//! | `metadata_request_duration_seconds` | histogram | `endpoint` | metadata service request latency |
//! | `socket_requests_total` | counter | `endpoint`, `status` | Unix socket requests; `endpoint` is `credentials`, `health`, `metrics` or `other` |
//! | `bridge_requests_total` | counter | `endpoint`, `status` | requests on the loopback TCP listener (`[bridge] listen`), labelled as `socket_requests_total` |
//! | `bridge_callers_unidentified_total` | counter | | loopback TCP connections refused (403) because their caller's socket was not found open in the kernel's socket table |
//! | `callers_denied_total` | counter | | callers refused because their uid and groups are not allowed: a connection at accept, or a request on a connection whose caller a reload revoked |
//! | `connections_rejected_total` | counter | | connections refused beyond `max_connections` |
//! | `connections_rejected_per_uid_total` | counter | | connections refused beyond `max_connections_per_uid` (their uid held its share) |
//!
//! | `profile_refreshes_total` | counter | `profile`, `result` | a profile's refresh attempts (AssumeRole), labelled as `refreshes_total`; `profile` names the first profile of those that share the refresher (same role, policy and duration) |
//! | `profile_credentials_served_total` | counter | `profile` | `GET /v1/credentials` answered 200 with the profile's credentials (both transports) |
//! | `profile_ready` | gauge | `profile` | 1 while the profile's servable credentials are held, else 0 |
//! | `profile_credentials_expires_in_seconds` | gauge | `profile` | as `credentials_expires_in_seconds`, for the profile's credentials |
//! | `profile_credentials_generation` | gauge | `profile` | as `credentials_generation`, for the profile's credentials |
//! | `profile_credentials_stale` | gauge | `profile` | as `credentials_stale`, for the profile's credentials |
//!
//! The metrics without `profile` in their name are the instance role's, as before profiles
//! existed (`socket_requests_total` and `bridge_requests_total` count every caller's requests).
//! Profile names come from the configuration file, never from a caller.
//!
//! `callers_denied_total` and the `connections_rejected` counters count both transports (one
//! `max_connections` and one set of per-uid shares covers both).
//!
//! The outcomes `success` and `unchanged` and the three latency histograms are exposed (at 0)
//! from the start; other labelled series appear with their first sample.
//!
//! No label or value ever holds a secret, a metadata token, an `AccessKeyId` or a request path
//! as sent (label values come from fixed sets, so cardinality is bounded).

pub mod config;
mod profile;

pub use profile::Served;
use profile::{ProfileGauges, ProfileLabels};

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

/// The `Content-Type` of the exposition (OpenMetrics text 1.0.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The prefix of every metric name.
pub const PREFIX: &str = "ecs_credential_agent";

/// Upper bounds (seconds) of the metadata request latency buckets: the default per-request
/// deadline is 3 s (connect 1 s + 2 × read 1 s).
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Labels of `refreshes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    result: &'static str,
}

/// Labels of `profile_refreshes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileRefreshLabels {
    profile: String,
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
    bridge_requests: Family<RequestLabels, Counter>,
    /// The `bridge_requests` series of `GET /v1/credentials` answered 200, as `credentials_ok`.
    bridge_credentials_ok: OnceLock<Counter>,
    bridge_callers_unidentified: Counter,
    callers_denied: Counter,
    connections_rejected: Counter,
    connections_rejected_per_uid: Counter,
    state: Arc<StateGauges>,
    profile_refreshes: Family<ProfileRefreshLabels, Counter>,
    profile_served: Family<ProfileLabels, Counter>,
    profile_state: Arc<ProfileGauges>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric of the module docs registered. The credential gauges
    /// read nothing (not ready, 0) until [`Metrics::observe_credentials`] is called.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let refreshes = Family::<RefreshLabels, Counter>::default();
        let metadata_requests = Family::<RequestLabels, Counter>::default();
        let metadata_latency = HistogramFamily::new_with_constructor(latency_histogram);
        let socket_requests = Family::<RequestLabels, Counter>::default();
        let bridge_requests = Family::<RequestLabels, Counter>::default();
        let bridge_callers_unidentified = Counter::default();
        let callers_denied = Counter::default();
        let connections_rejected = Counter::default();
        let connections_rejected_per_uid = Counter::default();
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
            "bridge_requests",
            "Requests on the loopback TCP listener by endpoint (credentials, health, metrics, other) and HTTP status",
            bridge_requests.clone(),
        );
        registry.register(
            "bridge_callers_unidentified",
            "Loopback TCP connections refused because their caller's socket was not found open in the kernel's socket table",
            bridge_callers_unidentified.clone(),
        );
        registry.register(
            "callers_denied",
            "Callers refused because their uid and groups are not allowed (a connection at accept, or a request after a reload revoked its caller)",
            callers_denied.clone(),
        );
        registry.register(
            "connections_rejected",
            "Socket connections refused with 503 TooManyConnections beyond max_connections",
            connections_rejected.clone(),
        );
        registry.register(
            "connections_rejected_per_uid",
            "Socket connections refused with 503 TooManyConnections beyond max_connections_per_uid",
            connections_rejected_per_uid.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&state)));
        let profile_refreshes = Family::<ProfileRefreshLabels, Counter>::default();
        let profile_served = Family::<ProfileLabels, Counter>::default();
        let profile_state = Arc::new(ProfileGauges::default());
        registry.register(
            "profile_refreshes",
            "A profile's credential refresh attempts by result: success (new generation), unchanged, or the error kind",
            profile_refreshes.clone(),
        );
        registry.register(
            "profile_credentials_served",
            "GET /v1/credentials answered 200 with a profile's credentials",
            profile_served.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&profile_state)));
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
                bridge_requests,
                bridge_credentials_ok: OnceLock::new(),
                bridge_callers_unidentified,
                callers_denied,
                connections_rejected,
                connections_rejected_per_uid,
                state,
                profile_refreshes,
                profile_served,
                profile_state,
            }),
        }
    }

    /// Reads the credential gauges (expiry, generation, readiness, staleness, last success)
    /// from `read` at every scrape, called with the scrape's instant on the monotonic clock. A
    /// later call replaces the function.
    pub fn observe_credentials(
        &self,
        read: impl Fn(Instant) -> CredentialGauges + Send + Sync + 'static,
    ) {
        if let Ok(mut slot) = self.inner.state.read.lock() {
            *slot = Some(Box::new(read));
        }
    }

    /// Reads each profile's credential gauges (`(profile name, gauges)`) from `read` at every
    /// scrape, as [`Metrics::observe_credentials`] does for the instance role.
    pub fn observe_profiles(
        &self,
        read: impl Fn(Instant) -> Vec<(String, CredentialGauges)> + Send + Sync + 'static,
    ) {
        if let Ok(mut slot) = self.inner.profile_state.read.lock() {
            *slot = Some(Box::new(read));
        }
    }

    /// Records a refresh attempt of `profile`'s credentials, as [`Metrics::refresh`].
    pub fn profile_refresh(&self, profile: &str, outcome: Result<bool, &'static str>) {
        let result = match outcome {
            Ok(true) => "success",
            Ok(false) => "unchanged",
            Err(kind) => kind,
        };
        let labels = ProfileRefreshLabels {
            profile: profile.to_owned(),
            result,
        };
        self.inner.profile_refreshes.get_or_create(&labels).inc();
    }

    /// The counter of `GET /v1/credentials` answered 200 with `profile`'s credentials: taken
    /// once per connection, so counting a request is one atomic increment.
    pub fn profile_served(&self, profile: &str) -> Served {
        let labels = ProfileLabels {
            profile: profile.to_owned(),
        };
        Served(self.inner.profile_served.get_or_create(&labels).clone())
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
    /// generation again, `Err(kind)` a failure by its error's fixed kind word (`timeout`,
    /// `role_not_attached`…).
    pub fn refresh(&self, outcome: Result<bool, &'static str>) {
        let result = match outcome {
            Ok(true) => "success",
            Ok(false) => "unchanged",
            Err(kind) => kind,
        };
        self.inner
            .refreshes
            .get_or_create(&RefreshLabels { result })
            .inc();
    }

    /// Records one metadata service request to `endpoint` (`token`, `role_list` or
    /// `credentials`) that took `latency`, answered with HTTP `status` (`None` when no status
    /// arrived: connection error, timeout, body error).
    pub fn metadata_request(&self, endpoint: &'static str, status: Option<u16>, latency: Duration) {
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

    /// Records one socket request to the route labelled `endpoint` (`credentials`, `health`,
    /// `metrics` or `other`) answered with HTTP `status`.
    pub fn socket_request(&self, endpoint: &'static str, status: u16) {
        count_request(
            &self.inner.socket_requests,
            &self.inner.credentials_ok,
            endpoint,
            status,
        );
    }

    /// Records one request on the loopback TCP listener, labelled as [`Metrics::socket_request`].
    pub fn bridge_request(&self, endpoint: &'static str, status: u16) {
        count_request(
            &self.inner.bridge_requests,
            &self.inner.bridge_credentials_ok,
            endpoint,
            status,
        );
    }

    /// Records a loopback TCP connection refused because its caller could not be identified.
    pub fn bridge_caller_unidentified(&self) {
        self.inner.bridge_callers_unidentified.inc();
    }

    /// Records a caller refused because it is not allowed (a connection at accept, or a
    /// request after a reload revoked it).
    pub fn caller_denied(&self) {
        self.inner.callers_denied.inc();
    }

    /// Records a connection refused beyond `max_connections`.
    pub fn connection_rejected(&self) {
        self.inner.connections_rejected.inc();
    }

    /// Records a connection refused because its uid holds `max_connections_per_uid` already.
    pub fn connection_rejected_per_uid(&self) {
        self.inner.connections_rejected_per_uid.inc();
    }
}

/// The credential gauges' values at one instant, as the credentials module computes them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CredentialGauges {
    /// Until `Expiration` of the held credentials (zero when none are held).
    pub expires_in: Duration,
    /// Generation number of the held credentials (0 when none).
    pub generation: u64,
    /// Servable credentials are held.
    pub ready: bool,
    /// Credentials are served although the last refresh failed.
    pub stale: bool,
    /// When the last successful fetch arrived, if any.
    pub last_success: Option<SystemTime>,
}

/// Reads the credential gauges at a scrape.
type ReadGauges = Box<dyn Fn(Instant) -> CredentialGauges + Send + Sync>;

/// The credential gauges, computed at scrape time by the installed function.
#[derive(Default)]
struct StateGauges {
    read: Mutex<Option<ReadGauges>>,
}

impl std::fmt::Debug for StateGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateGauges")
    }
}

impl Collector for StateGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = match self.read.lock() {
            Ok(read) => read.as_ref().map(|read| read(Instant::now())),
            Err(_) => None,
        }
        .unwrap_or_default();
        let last_success = g
            .last_success
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs() as f64);
        let seconds = Some(&Unit::Seconds);
        let f64_gauges = [
            (
                "credentials_expires_in",
                "Seconds until Expiration of the held credentials (0 when none are held).",
                g.expires_in.as_secs_f64(),
            ),
            (
                "last_refresh_success_timestamp",
                "Unix time of the last successful credential fetch (0 before the first).",
                last_success,
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
                i64::try_from(g.generation).unwrap_or(i64::MAX),
            ),
            (
                "ready",
                "1 while valid credentials are held and served, else 0.",
                i64::from(g.ready),
            ),
            (
                "credentials_stale",
                "1 while valid credentials are served although the last refresh failed, else 0.",
                i64::from(g.stale),
            ),
        ];
        for (name, help, value) in i64_gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Counts one request in `family`; `GET /v1/credentials` answered 200, the hot path, goes to
/// its series taken once into `ok` (no label `String`, no lookup under the family's lock).
fn count_request(
    family: &Family<RequestLabels, Counter>,
    ok: &OnceLock<Counter>,
    endpoint: &'static str,
    status: u16,
) {
    let labels = || RequestLabels {
        endpoint,
        status: status.to_string(),
    };
    if (endpoint, status) == ("credentials", 200) {
        ok.get_or_init(|| family.get_or_create(&labels()).clone())
            .inc();
        return;
    }
    family.get_or_create(&labels()).inc();
}

#[cfg(test)]
mod tests;
