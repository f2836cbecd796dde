//! Errors of the metadata client, named by what failed.

use std::time::Duration;

use super::config::DEFAULT_ENDPOINT;
use crate::credentials::{SourceError, Unavailable};

/// What went wrong talking to the metadata service. `Display` is one short line for logs and
/// for callers' 503 messages; it never contains a secret or the metadata token.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// `PUT /latest/api/token` answered 403 (for example a request carrying `X-Forwarded-For`).
    #[error("metadata token refused (HTTP 403 on {path})")]
    TokenRefused {
        /// The request path.
        path: &'static str,
    },
    /// A `GET` without a metadata token answered 403: the instance is in hardened-only mode
    /// (`HttpTokens=required`) and no token could be obtained.
    #[error(
        "metadata service requires a metadata token (hardened-only instance) and none was obtained"
    )]
    HardenedModeRequired,
    /// The metadata token was rejected (HTTP 401) even after a fresh one was fetched.
    #[error("metadata token rejected (HTTP 401) after renewal")]
    TokenRejected,
    /// HTTP 404 on the role list or credential path.
    #[error("no RAM role attached to this instance (or wrong role name){}", role_hint(.role_name))]
    RoleNotAttached {
        /// The role name asked for, if any.
        role_name: Option<String>,
    },
    /// Another status the retry table does not retry (400, 405, other 4xx).
    #[error("metadata service answered HTTP {status} on {method} {path}")]
    Rejected {
        /// HTTP method.
        method: &'static str,
        /// Request path (the role name may appear; it is not secret).
        path: String,
        /// HTTP status code.
        status: u16,
    },
    /// HTTP 429 or 5xx: throttled or failing; retried with backoff.
    #[error("metadata service unavailable: HTTP {status} on {path}")]
    Unavailable {
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
    },
    /// Could not connect (refused, unreachable, connect timeout), or the connection broke
    /// before a whole answer came (reset, closed).
    #[error("cannot connect to the metadata service at {endpoint}: {reason}")]
    Unreachable {
        /// The configured endpoint.
        endpoint: String,
        /// What the connection attempt reported.
        reason: String,
    },
    /// Connected, but the peer does not answer like the ECS metadata service: not HTTP at all,
    /// an HTML page with 200, a metadata token or role list of the wrong shape. Usually a wrong
    /// `[metadata] endpoint`, or a proxy or captive portal in the way. `shape` describes what
    /// came (status, `Content-Type`, length), never its content. Not transient.
    #[error(
        "{endpoint} does not answer like the ECS metadata service: {shape} in answer to \
         {method} {path}; check [metadata] endpoint (on ECS it is {DEFAULT_ENDPOINT})"
    )]
    NotMetadataService {
        /// The configured endpoint.
        endpoint: String,
        /// HTTP method of the request answered so.
        method: &'static str,
        /// Request path (the role name may appear; it is not secret).
        path: String,
        /// What the answer looked like, e.g. "not HTTP (invalid HTTP version parsed)" or
        /// "HTTP 200 with Content-Type text/html, 35 bytes: an HTML page instead of a
        /// metadata token".
        shape: String,
    },
    /// Connected, but the response did not arrive in time.
    #[error("metadata service did not answer {path} within {0:?}", .after)]
    Timeout {
        /// Request path.
        path: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The response was not what the protocol documents: malformed JSON, a missing or empty
    /// field, `Code` other than `Success`, a bad time format, a body over the size cap. (An
    /// HTML page, an answer that is not HTTP, or a metadata token or role list of the wrong
    /// shape is [`NotMetadataService`](MetadataError::NotMetadataService).)
    #[error("invalid response from the metadata service on {path}: {what}")]
    InvalidResponse {
        /// Request path.
        path: String,
        /// What was wrong, never including a field's value when the field is secret.
        what: String,
    },
    /// A `[metadata]` setting the client cannot use (for example an endpoint that is not
    /// `http://host[:port]`, or an implausible configured role name). Not transient.
    #[error("invalid [metadata] {key} {value:?}: {reason}")]
    InvalidConfig {
        /// The configuration key, e.g. `endpoint`.
        key: &'static str,
        /// The value given (never a secret).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials' `Expiration` was already past (or inside the expiry margin) on arrival.
    #[error("credentials already expired on arrival (Expiration {expiration})")]
    ExpiredOnArrival {
        /// The `Expiration` received, as sent.
        expiration: String,
    },
}

fn role_hint(role: &Option<String>) -> String {
    match role {
        Some(r) => format!(": role {r:?} not found"),
        None => String::new(),
    }
}

impl MetadataError {
    /// A fixed word per variant, for the `result` label of the refresh metric and for health
    /// output: `token_refused`, `hardened_mode_required`, `token_rejected`,
    /// `role_not_attached`, `rejected`, `unavailable`, `unreachable`, `not_metadata_service`,
    /// `timeout`, `invalid_response`, `invalid_config`, `expired_on_arrival`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataError::TokenRefused { .. } => "token_refused",
            MetadataError::HardenedModeRequired => "hardened_mode_required",
            MetadataError::TokenRejected => "token_rejected",
            MetadataError::RoleNotAttached { .. } => "role_not_attached",
            MetadataError::Rejected { .. } => "rejected",
            MetadataError::Unavailable { .. } => "unavailable",
            MetadataError::Unreachable { .. } => "unreachable",
            MetadataError::NotMetadataService { .. } => "not_metadata_service",
            MetadataError::Timeout { .. } => "timeout",
            MetadataError::InvalidResponse { .. } => "invalid_response",
            MetadataError::InvalidConfig { .. } => "invalid_config",
            MetadataError::ExpiredOnArrival { .. } => "expired_on_arrival",
        }
    }

    /// Whether another attempt may succeed soon without anything changing on the caller's side
    /// (429, 5xx, connection errors and timeouts). The refresher backs off after every error
    /// regardless; this only decides retries within one fetch.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MetadataError::Unavailable { .. }
                | MetadataError::Unreachable { .. }
                | MetadataError::Timeout { .. }
        )
    }
}

impl SourceError for MetadataError {
    fn kind(&self) -> &'static str {
        MetadataError::kind(self)
    }

    /// [`RoleNotAttached`](MetadataError::RoleNotAttached) (HTTP 404) withdraws the instance
    /// role's credentials; every other error leaves them served until the expiry margin.
    fn withdrawn(&self) -> Option<Unavailable> {
        match self {
            MetadataError::RoleNotAttached { role_name } => Some(Unavailable::RoleNotAttached {
                role_name: role_name.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
