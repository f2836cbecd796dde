//! The ECS instance metadata service client, hardened (token) mode.
//!
//! The instance role's [credential source](crate::credentials::Source). It knows HTTP, the
//! metadata token, the paths, the retry table and the response format; it knows nothing about
//! schedules or callers. Its output is validated
//! [`Credentials`](crate::credentials::Credentials) or a typed [`MetadataError`].
//!
//! - [`client`]: requests, timeouts, the retry table, no proxy ever; also the instance facts
//!   (region id, instance id) the STS client needs ([`Client::instance_facts`]).
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

pub use client::{Client, InstanceFacts};
pub use error::MetadataError;

/// Path of the hardened-mode token (`PUT`).
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Path listing the attached RAM role (`GET`; the role name as plain text).
pub const ROLE_LIST_PATH: &str = "/latest/meta-data/ram/security-credentials/";
/// Path of the instance's region id (`GET`; plain text such as `cn-hangzhou`).
pub const REGION_ID_PATH: &str = "/latest/meta-data/region-id";
/// Path of the instance id (`GET`; plain text such as `i-bp67acfmxazb4ph3xxxx`).
pub const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
/// Header carrying the requested metadata token TTL on the token `PUT`, in seconds (1..=21600).
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// Header carrying the metadata token on every `GET`.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";

/// The `endpoint` label of a metadata service request path in metrics: `token`, `role_list`,
/// `region_id`, `instance_id` or `credentials`.
pub fn endpoint_label(path: &str) -> &'static str {
    match path {
        TOKEN_PATH => "token",
        ROLE_LIST_PATH => "role_list",
        REGION_ID_PATH => "region_id",
        INSTANCE_ID_PATH => "instance_id",
        _ => "credentials",
    }
}
