//! `ecs-credential-client`: the library an application on an Alibaba Cloud ECS instance links
//! to get its RAM role's STS credentials from `ecs-credential-agent`, instead of carrying a
//! long-term AccessKey.
//!
//! # Background
//!
//! A long-term AccessKey in a config file, an environment variable or an image is the most
//! common way Alibaba Cloud accounts leak. On ECS, a RAM role bound to the instance gives
//! short-lived STS credentials (`AccessKeyId`, `AccessKeySecret`, `SecurityToken`, valid until
//! `Expiration`) through the instance metadata service. `ecs-credential-agent` fetches them in
//! hardened mode, refreshes them ahead of expiry, and serves them to allowed local users over a
//! Unix socket. This crate is the application's side of that socket: one call, cached, with
//! errors that say what to fix.
//!
//! # Example
//!
//! ```no_run
//! use ecs_credential_client::{Client, Error, ExposeSecret};
//!
//! /// Before each request to sign: cheap while cached.
//! async fn sign_request(client: &Client) -> Result<(), Error> {
//!     let creds = client.credentials().await?;
//!     println!("signing as {}", creds.access_key_id);
//!     let _secret: &str = creds.access_key_secret.expose_secret(); // only where you sign
//!     Ok(())
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = Client::new(); // one per process; clones share the cache
//! if let Err(e) = sign_request(&client).await {
//!     eprintln!("{e}"); // Display: one line saying what failed and what to do
//! }
//! # }
//! ```
//!
//! Without an async runtime, use [`blocking::Client`] the same way. A runnable example is
//! `examples/print_identity.rs`.
//!
//! With the cargo feature `reqsign`, `reqsign::AgentCredentialProvider` lets
//! `reqsign-aliyun-oss` (and so OpenDAL's OSS service) sign with the agent's credentials;
//! example: `examples/oss_sign.rs`.
//!
//! # Caching
//!
//! [`Client::credentials`] returns the cached credentials while more than
//! [`ClientBuilder::refresh_before`] (default [`DEFAULT_REFRESH_BEFORE`]) remains before their
//! `Expiration`, and otherwise asks the agent; concurrent callers of one [`Client`] (and its
//! clones) wait for one shared request. The agent itself refreshes well before expiry, so a
//! fetch normally returns a new generation. Should the agent hand out credentials with less
//! than the margin left, they are returned (they are valid) and asked for again on the next
//! call. If asking fails while cached credentials are still valid, those are returned and a
//! warning is logged through `tracing`. Credentials whose `Expiration` has passed are never
//! returned. Do not keep a [`Credentials`] value yourself: call `credentials()` per request.
//!
//! # Errors and what to do
//!
//! | [`Error`] | means | do |
//! | --- | --- | --- |
//! | [`Error::AgentNotRunning`] | no agent on the socket (see [Retries](#retries)) | start the agent (`systemctl status ecs-credential-agent`), check the socket path |
//! | [`Error::PermissionDenied`] | socket not accessible, or the agent refuses this uid/gid | run as an allowed user, or allow it in the agent's config |
//! | [`Error::UnsafeSocketPath`] | another non-root user owns a directory or link on the socket path, or others may write to a directory on it, so it could lead to a fake agent | fix the path's ownership and modes (see [`path_check`]), or use the default path |
//! | [`Error::Unavailable`] | agent up, but no valid credentials (starting, no RAM role attached, metadata service unreachable) | read the message; retry later; attach a RAM role |
//! | [`Error::Protocol`] | timeout, or an answer this client does not understand | check client and agent versions; report a bug |
//!
//! No error message ever contains a secret.
//!
//! # Retries
//!
//! A fetch is retried only when a restarting or starting agent explains the failure:
//! [`ClientBuilder::unavailable_retries`] times (default [`DEFAULT_UNAVAILABLE_RETRIES`]), with
//! pauses doubling from [`ClientBuilder::retry_backoff`] (default [`DEFAULT_RETRY_BACKOFF`]).
//!
//! | failure | retried | why |
//! | --- | --- | --- |
//! | the socket, or a directory on its path, does not exist (`ENOENT`) | no: [`Error::AgentNotRunning`] at once | no agent is running: the agent removes its socket when it stops, so that clients fail fast, and under socket activation (the shipped units) systemd keeps the socket in place across restarts, with requests queued |
//! | connection refused (`ECONNREFUSED`: a socket file nobody listens on) | yes | an agent that crashed or was killed left its socket; the next one, started by its supervisor, replaces it |
//! | `503` (`CredentialsUnavailable`, `TooManyConnections`) | yes | the agent is starting and has no credentials yet, or is briefly full |
//! | `EACCES`, `403`, an unsafe socket path | no | retrying cannot change who this process is or who owns the path |
//! | timeout, malformed answer, other status | no | a bug or version mismatch; waiting again would double the delay |
//!
//! So `get` or an application started while no agent runs fails within a few system calls.
//! One consequence: an agent restarted *without* socket activation (`serve` run by hand, or a
//! unit without the `.socket`) has no socket between stopping and binding again, and requests
//! made in that moment fail; run it socket-activated for restarts that lose no request.
//!
//! # Socket path
//!
//! In order: [`ClientBuilder::socket_path`], else the environment variable [`SOCKET_ENV`]
//! (`ECS_CREDENTIAL_AGENT_SOCKET`) if set and non-empty, else [`DEFAULT_SOCKET_PATH`]. It is
//! resolved once, when the client is built. Before each connection the path is checked
//! ([`check_socket_path`]): every directory and symbolic link on it must belong to root or to
//! this process's user, and no directory on it may be writable by others without the sticky
//! bit; otherwise [`Error::UnsafeSocketPath`], because another user could make the path lead to
//! a fake agent serving credentials of their choosing.
//!
//! # Threads
//!
//! [`Client`] is `Clone + Send + Sync`; clones share the cache. Build one per process and clone
//! it where needed. It spawns no task, so it works on any tokio runtime (current-thread or
//! multi-thread); it uses tokio's networking and timers, so the runtime needs both enabled.
//! [`blocking::Client`] must not be called from within an async runtime.
//!
//! # Layout
//!
//! - `client`: [`Client`], [`ClientBuilder`]: cache, single-flight, retries.
//! - `transport`: one HTTP/1.1 `GET` over the Unix socket (hyper).
//! - `credentials`: [`Credentials`], [`Health`] and their parsing.
//! - `error`: [`Error`].
//! - [`path_check`]: whether a socket path can be trusted (shared with the agent).
//! - [`blocking`]: the blocking client.
//! - `reqsign` (feature `reqsign`): a credential provider for `reqsign-aliyun-oss`, the OSS
//!   signer of OpenDAL.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
// Doc tests (these docs' and the README's, below) fail on any warning, such as an unused
// import: `cargo test --workspace` runs them, in CI too.
#![doc(test(attr(deny(warnings))))]

pub mod blocking;
mod client;
mod credentials;
mod error;
pub mod path_check;
#[cfg(feature = "reqsign")]
pub mod reqsign;
mod transport;

#[cfg(test)]
mod tests;

/// The repository's README, whose `rust` blocks run as this crate's doc tests, so its
/// example compiles, without a warning, against this version of the crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}

use std::ffi::OsString;
use std::path::PathBuf;

pub use client::{
    Client, ClientBuilder, DEFAULT_REFRESH_BEFORE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BACKOFF,
    DEFAULT_UNAVAILABLE_RETRIES,
};
pub use credentials::{format_utc, Credentials, Health};
pub use error::{is_format, Error};
pub use path_check::{check_socket_path, UnsafeSocketPath};
/// Re-exported so callers can read secrets without naming a matching `secrecy` version.
pub use secrecy::{ExposeSecret, SecretString};

/// Environment variable naming the agent's socket, used when the builder names none.
pub const SOCKET_ENV: &str = "ECS_CREDENTIAL_AGENT_SOCKET";

/// The agent's default socket path, used when neither the builder nor [`SOCKET_ENV`] names one.
pub const DEFAULT_SOCKET_PATH: &str = "/run/ecs-credential-agent/agent.sock";

/// The socket path: `explicit`, else `env` (the value of [`SOCKET_ENV`]) if non-empty, else
/// [`DEFAULT_SOCKET_PATH`].
fn resolve_socket_path(explicit: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    explicit
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}
