//! Credentials: the validated value, the refresh schedule, the refresher and the state it
//! publishes, for any [`Source`] of credentials.
//!
//! - [`Credentials`], [`format_utc`]: one credential generation, validated, and the time format
//!   the metadata service and the served body use (`value`, a leaf module).
//! - [`Source`], [`SourceError`], [`Fetched`]: what the refresher asks of an upstream. The
//!   instance role from the metadata service ([`crate::sources::metadata`]) is one source; a
//!   role assumed through STS is another, driven by the same refresher.
//! - [`schedule`]: pure functions that decide when to refresh and how long to back off.
//! - [`refresher`]: the background task that owns time for one source: first fetch, refresh,
//!   backoff, rotation detection, expiry margin. It is the only writer of its [`State`]; its
//!   own failures are a [`RefreshError`].
//! - [`state`]: the snapshot the refresher publishes and the socket server reads without ever
//!   blocking on an upstream.
//!
//! Dependencies point one way: sources depend on this module (they build [`Credentials`] and
//! implement [`Source`]), never the reverse.

pub mod policy;
pub mod refresher;
pub mod schedule;
mod source;
pub mod state;
mod value;

pub use policy::RefreshPolicy;
pub use refresher::{RecordRefresh, RefreshError, Refresher};
pub use source::{Fetched, Source, SourceError};
pub use state::{Issued, NearExpiry, State, Unavailable};
pub(crate) use value::ResponseBody;
pub use value::{format_utc, Credentials};
