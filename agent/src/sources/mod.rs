//! Credential sources: each knows one upstream (HTTP, signing, parsing) and returns validated
//! [`Credentials`](crate::credentials::Credentials) or a typed error. A source knows nothing of
//! schedules or callers: it implements [`credentials::Source`](crate::credentials::Source), and
//! the [refresher](crate::credentials::refresher) owns time for it.
//!
//! - [`metadata`]: the instance role, from the ECS instance metadata service in hardened mode.
//! - [`sts`]: a profile's RAM role, assumed through STS `AssumeRole` with the instance role's
//!   credentials, driven by a refresher of its own like the instance role.
//!
//! Dependencies point one way: sources use `credentials` (the value types and the [`Source`]
//! trait), `metrics` and `time`; `credentials` never uses a source.
//!
//! [`Source`]: crate::credentials::Source

pub mod metadata;
pub mod sts;
