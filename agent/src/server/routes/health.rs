//! `GET /v1/health`: the caller's credentials' state (its profile's, else the instance
//! role's), and every profile's for root and the agent's own uid.

use bytes::Bytes;
use http::StatusCode;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{json_response, Reply};
use crate::credentials::state::StateReceiver;
use crate::credentials::{format_utc, State};
use crate::profiles;

/// The `GET /v1/health` body. Keys are PascalCase like the credential JSON; no secrets.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `"Ok"`, `"Stale"` (served, but the last refresh failed) or `"Unavailable"`.
    pub status: &'static str,
    /// RAM role of the held credentials.
    pub role_name: Option<String>,
    /// `Expiration` of the held credentials (`YYYY-MM-DDTHH:MM:SSZ`).
    pub expiration: Option<String>,
    /// Seconds until `Expiration`.
    pub seconds_left: Option<u64>,
    /// Generation number of the held credentials.
    pub generation: Option<u64>,
    /// Wall time of the last successful fetch.
    pub last_success: Option<String>,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
    /// Whether credentials are served although the last refresh failed.
    pub stale: bool,
    /// Local wall clock minus the metadata service's clock (its `Date`, else `LastUpdated`) at
    /// the last fetch, seconds.
    pub clock_skew_seconds: Option<i64>,
    /// One line for humans.
    pub message: String,
    /// The caller's profile, when its credentials are a profile's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Every profile's health by name (root and the agent's own uid only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<std::collections::BTreeMap<String, Health>>,
}

impl Health {
    /// The health of `state` at monotonic time `now`.
    pub fn of(state: &State, now: Instant) -> Health {
        let servable = state.credentials_at(now);
        let stale = state.is_stale(now);
        let held = state.credentials.as_deref();
        let (status, message) = match &servable {
            Ok(_) if stale => (
                "Stale",
                "serving valid credentials; the last refresh failed".to_owned(),
            ),
            Ok(_) => ("Ok", "serving valid credentials".to_owned()),
            Err(why) => ("Unavailable", why.message()),
        };
        Health {
            status,
            role_name: held.map(|c| c.role_name.clone()),
            expiration: held.map(|c| format_utc(c.expiration)),
            seconds_left: held.map(|c| c.seconds_left(now)),
            generation: held.map(|c| c.generation),
            last_success: state
                .last_success
                .map(|t| format_utc(OffsetDateTime::from(t))),
            last_error: state.last_error.clone(),
            stale,
            clock_skew_seconds: state.clock_skew_secs,
            message,
            profile: None,
            profiles: None,
        }
    }
}

/// `GET /v1/health`: 200 while the credentials of `state` (`profile`'s, when named) are
/// servable, else 503; with `all`, also every profile's health (`Profiles`).
pub fn health(state: &StateReceiver, profile: Option<&str>, all: Option<&profiles::Set>) -> Reply {
    let now = Instant::now();
    let mut health = Health::of(&state.borrow(), now);
    health.profile = profile.map(str::to_owned);
    health.profiles = all.filter(|set| !set.profiles.is_empty()).map(|set| {
        set.profiles
            .iter()
            .map(|p| (p.name.to_string(), Health::of(&p.state.borrow(), now)))
            .collect()
    });
    let status = match health.status {
        "Unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    // Serialising strings and integers into a Vec cannot fail.
    let body = serde_json::to_vec(&health).expect("serialise health");
    json_response(status, Bytes::from(body))
}
