//! The refresher's own errors: a source's failure, or credentials it refuses on arrival.

use crate::credentials::state::Unavailable;
use crate::credentials::SourceError;

/// Why one refresh attempt failed. `Display` is one short line for logs, for callers' 503
/// messages and for `/v1/health`; it never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError<E> {
    /// The source's fetch failed (its `Display`, unchanged).
    #[error(transparent)]
    Source(E),
    /// The credentials' `Expiration` was already inside the expiry margin
    /// (`[credentials] expiry_margin_secs`) when they arrived: they are never served, the
    /// credentials held (if any) stay, and the refresher backs off as after any failure.
    #[error("credentials already expired on arrival (Expiration {expiration})")]
    ExpiredOnArrival {
        /// The `Expiration` received, as `YYYY-MM-DDTHH:MM:SSZ`.
        expiration: String,
    },
}

impl<E: SourceError> SourceError for RefreshError<E> {
    /// The source error's kind, or `expired_on_arrival`.
    fn kind(&self) -> &'static str {
        match self {
            RefreshError::Source(e) => e.kind(),
            RefreshError::ExpiredOnArrival { .. } => "expired_on_arrival",
        }
    }

    /// The source error's, if any; credentials expired on arrival withdraw nothing.
    fn withdrawn(&self) -> Option<Unavailable> {
        match self {
            RefreshError::Source(e) => e.withdrawn(),
            RefreshError::ExpiredOnArrival { .. } => None,
        }
    }
}
