//! The ECS instance metadata service client, hardened (token) mode.
//!
//! It knows HTTP, the metadata token, the paths, the retry table and the response format; it
//! knows nothing about schedules or callers. Its output is validated [`Credentials`] or a typed
//! [`MetadataError`].
//!
//! - [`client`]: requests, timeouts, the retry table, no proxy ever.
//! - [`token`]: the cached metadata token and its renewal.
//! - [`response`]: parsing and validating the role name and credential JSON.
//! - [`error`]: the error type, [`MetadataError`], and what each variant means.
//!
//! Protocol facts: ECS documentation "实例元数据" (instance metadata) and "加固模式" (hardened
//! mode); summarised, with sources, in `docs/metadata-service.md`.

pub mod client;
pub mod config;
pub mod error;
pub mod response;
pub mod token;

use std::future::Future;

pub use client::Client;
pub use error::MetadataError;

use crate::credentials::Credentials;

/// Path of the hardened-mode token (`PUT`).
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Path listing the attached RAM role (`GET`; the role name as plain text).
pub const ROLE_LIST_PATH: &str = "/latest/meta-data/ram/security-credentials/";
/// Header carrying the requested metadata token TTL on the token `PUT`, in seconds (1..=21600).
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// Header carrying the metadata token on every `GET`.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";

/// The `endpoint` label of a metadata service request path in metrics: `token`, `role_list` or
/// `credentials`.
pub fn endpoint_label(path: &str) -> &'static str {
    match path {
        TOKEN_PATH => "token",
        ROLE_LIST_PATH => "role_list",
        _ => "credentials",
    }
}

/// The result of one successful fetch: the RAM role and its current credentials.
#[derive(Debug)]
pub struct Fetched {
    /// The RAM role name the credentials belong to (configured or discovered).
    pub role_name: String,
    /// The validated credentials (not yet expired on arrival).
    pub credentials: Credentials,
    /// The metadata service's clock when it answered the credential `GET` (its `Date` header,
    /// whole seconds), if it sent one: the clock `Expiration` was written by, so the refresher
    /// can tell when the local clock is behind.
    pub service_time: Option<std::time::SystemTime>,
}

/// Fetches the instance's RAM role credentials. Implemented by [`Client`] against the real
/// service, and by in-memory fakes in tests of the refresher.
pub trait FetchCredentials: Send + Sync + 'static {
    /// Discovers the role (unless configured) and fetches its credentials: one refresh attempt,
    /// including the retries the retry table allows within it.
    ///
    /// # Errors
    /// A [`MetadataError`] naming what failed.
    fn fetch(&self) -> impl Future<Output = Result<Fetched, MetadataError>> + Send;
}
