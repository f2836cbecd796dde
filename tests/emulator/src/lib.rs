//! An emulator of the Alibaba Cloud ECS instance metadata service (`http://100.100.100.200`) as
//! far as RAM role credentials (and the instance's region and id) go: hardened-mode metadata tokens, the two credential paths,
//! credential rotation, and scriptable faults. It is a real HTTP/1.1 server (hyper on tokio) on
//! a local port, for our end-to-end tests, for the agent's `dev` mode, and for users' own tests.
//!
//! # What it emulates, and where each behaviour comes from
//!
//! Sources: the ECS documentation "实例元数据" / `ModifyInstanceMetadataOptions`, summarised in
//! `docs/metadata-service.md`.
//!
//! | request | answer | source |
//! |---|---|---|
//! | `PUT /latest/api/token`, `X-aliyun-ecs-metadata-token-ttl-seconds: 1..=21600` | 200, the metadata token as plain text, valid for the TTL | documented |
//! | same, TTL missing, not a number or out of range | 400, "Missing or Invalid Parameters" | documented |
//! | any request carrying `X-Forwarded-For` | 403 | documented for the token PUT; applied to GETs too |
//! | `GET /latest/api/token` (or any method but PUT) | 405 | observed for GET, not documented |
//! | GET with an unknown metadata token | 401 | documented |
//! | GET with an expired metadata token (TTL over, or [`Emulator::expire_tokens`]) | 401 | **inferred** (undocumented) |
//! | GET without a metadata token, hardened-only instance ([`EmulatorConfig::hardened_only`], the default) | 403 | documented |
//! | GET without a metadata token, normal mode | served | documented |
//! | `GET /latest/meta-data/ram/security-credentials/` | 200, the role name, plain text | documented |
//! | `GET /latest/meta-data/ram/security-credentials/<role>` | 200, the credential JSON | documented |
//! | `GET /latest/meta-data/region-id` / `instance-id` | 200, [`EmulatorConfig::region_id`] / [`EmulatorConfig::instance_id`], plain text (same metadata token rules) | documented |
//! | either credential path with no role attached, or a wrong role name; any other path | 404 with an HTML page containing `<title>404 - Not Found</title>` | documented |
//! | non-GET on a metadata path | 405 | **inferred** |
//!
//! Header names are case-insensitive (HTTP). The credential JSON is
//! `{"AccessKeyId":"STS.…","AccessKeySecret":"…","Expiration":"…","SecurityToken":"…","LastUpdated":"…","Code":"Success"}`
//! in that order; times are UTC `YYYY-MM-DDTHH:MM:SSZ`, whole seconds. `Expiration −
//! LastUpdated` is [`EmulatorConfig::credential_lifetime`] (default 6 h, as in every documented
//! example). The rotation schedule is **not** documented ("updated periodically"): the emulator
//! serves the same generation until [`EmulatorConfig::effective_rotate_after`] has passed since
//! `LastUpdated` (default: 1 h before `Expiration`), then a new one (new AccessKeyId,
//! AccessKeySecret, SecurityToken, `LastUpdated` = now). Bodies of error pages other than 404,
//! the `Content-Type` headers (`text/plain`, `text/html`) and the key and token lengths are
//! **inferred** to look realistic.
//!
//! Not emulated: other metadata paths, rate limiting (script it with [`Fault::Status`]`(429)`),
//! the "endpoint disabled" state (shut the emulator down, or use [`Fault::Reset`]).
//!
//! # Test controls
//!
//! Through [`Emulator`]: faults per [`Endpoint`] ([`Emulator::set_fault`]), role attach/detach,
//! [`Emulator::rotate_now`], [`Emulator::expire_tokens`], request [`Counts`], [`Gate`]s that hold
//! requests open, and the values served ([`Emulator::current_credentials`]). The wall clock is
//! injectable ([`EmulatorConfig::clock`], [`ManualClock`]).
//!
//! # Control API
//!
//! With [`EmulatorConfig::control_api`] (default on), the same port also answers under
//! `/_emulator/` (never counted, gated or faulted). Answers are JSON; errors are
//! `{"error":"…"}` with 400 (bad parameters), 404 (unknown route, or no role) or 405.
//!
//! | request | effect |
//! |---|---|
//! | `GET /_emulator/counts` | [`Counts`] as JSON: `{"total":…,"token_puts":…,"tokens_issued":…,"role_list_gets":…,"credential_gets":…,"unauthorized":…,"forbidden":…}` |
//! | `POST /_emulator/reset-counts` | [`Emulator::reset_counts`] |
//! | `GET /_emulator/credentials` | the credential JSON currently served (404 if no role) |
//! | `POST /_emulator/fault?endpoint=E&status=CODE[&times=N\|always]` | [`Emulator::add_fault`] with [`Fault::Status`] |
//! | `POST /_emulator/fault?endpoint=E&kind=K[&…][&times=…]` | [`Emulator::add_fault`]; `times` defaults to 1 |
//! | `POST /_emulator/clear` | [`Emulator::clear_faults`] |
//! | `POST /_emulator/detach` / `attach?role=NAME` | [`Emulator::detach_role`] / [`Emulator::attach_role`] |
//! | `POST /_emulator/rotate` | [`Emulator::rotate_now`] (409 if no role) |
//! | `POST /_emulator/expire-tokens` | [`Emulator::expire_tokens`] |
//!
//! `E` is `token`, `role-list`, `credentials` or `any`. `K` is one of `delay&ms=N`, `hang`,
//! `hang-after-headers`, `slow-body&chunk=BYTES&interval_ms=N`, `reset`, `malformed-json`,
//! `html-200`, `oversized&bytes=N`, `missing-field&field=NAME`, `empty-field&field=NAME`,
//! `code-not-success`, `expired`, `fractional-seconds`, `numeric-offset`, `years-ahead` (the
//! [`Fault`] variants in that order). Example:
//! `curl -X POST 'http://127.0.0.1:PORT/_emulator/fault?endpoint=credentials&status=503&times=3'`.
//!
//! # Example
//!
//! ```no_run
//! use ecs_metadata_emulator::{Emulator, EmulatorConfig, Endpoint, Fault, Times};
//!
//! # async fn example() -> std::io::Result<()> {
//! let emulator = Emulator::start_local(EmulatorConfig::default())?;
//! // Point the code under test at `emulator.endpoint()` (e.g. "http://127.0.0.1:40123").
//! emulator.set_fault(Endpoint::Credentials, Fault::Status(503), Times::Next(2));
//! // … run the code under test …
//! assert_eq!(emulator.counts().credential_gets, 3);
//! let served = emulator.current_credentials().expect("a role is attached");
//! assert!(served.access_key_id.starts_with("STS."));
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`EmulatorConfig`] and its default consts.
//! - [`clock`]: the injectable wall clock.
//! - `state`: the shared state behind one mutex (tokens, role, generation, counts, faults).
//! - `protocol`: the documented request rules; `shape`: faults that edit bodies; `body`: the
//!   response body (whole, never, slow); `server`: accept loop and request pipeline;
//!   `control`: the `/_emulator/` API.
//! - [`sts`]: the STS emulator ([`sts::StsEmulator`], `AssumeRole` over HTTPS), beside this one:
//!   it accepts the credentials this emulator issues ([`Emulator::key_store`]).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod body;
pub mod clock;
pub mod config;
mod control;
mod credentials;
mod fault;
mod gate;
mod protocol;
mod server;
mod shape;
mod state;
pub mod sts;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clock::{ManualClock, SharedTimeSource, SystemClock, TimeSource};
pub use config::EmulatorConfig;
pub use credentials::{format_utc, EmulatedCredentials};
pub use fault::{Endpoint, Fault, Times};
pub use gate::Gate;
pub use protocol::{FORWARDED_FOR_HEADER, TOKEN_HEADER, TOKEN_TTL_HEADER};
pub use state::Counts;

use state::Shared;

/// A running emulator. Dropping it stops the server (like [`Emulator::shutdown`] without
/// waiting).
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The bind error, or an error if called outside a tokio runtime.
    pub fn start(addr: SocketAddr, config: EmulatorConfig) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("emulator: cannot listen on {addr}: {e}"))
        })?;
        Self::from_listener(listener, config)
    }

    /// Serves on a listener the caller bound, on the current tokio runtime: for example one
    /// bound inside a network namespace the test created, where the emulator takes the metadata
    /// service's own address.
    ///
    /// # Errors
    ///
    /// An error from the listener, or if called outside a tokio runtime.
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: EmulatorConfig,
    ) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("Emulator::start must be called inside a tokio runtime")
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared::new(&config));
        let (shutdown, stop) = oneshot::channel();
        let task = runtime.spawn(server::run(listener, Arc::clone(&shared), stop));
        Ok(Self {
            shared,
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// [`Emulator::start`] on `127.0.0.1:0`.
    ///
    /// # Errors
    ///
    /// As [`Emulator::start`].
    pub fn start_local(config: EmulatorConfig) -> io::Result<Self> {
        Self::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request counts since start or the last [`Emulator::reset_counts`].
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Sets every count to zero.
    pub fn reset_counts(&self) {
        self.shared.reset_counts();
    }

    /// Replaces the faults set for exactly `endpoint` with `fault`, applied to the next matching
    /// requests `times` (see [`Fault`] for when each kind acts). Faults set on other endpoint
    /// values stay; when several match a request, the one set first applies.
    pub fn set_fault(&self, endpoint: Endpoint, fault: Fault, times: Times) {
        self.shared.set_fault(endpoint, fault, times);
    }

    /// Appends a fault after the ones already set, e.g. two 503s then a hang.
    pub fn add_fault(&self, endpoint: Endpoint, fault: Fault, times: Times) {
        self.shared.add_fault(endpoint, fault, times);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Detaches the RAM role: both credential paths answer 404.
    pub fn detach_role(&self) {
        self.shared.detach_role();
    }

    /// Attaches `role_name`, replacing any attached role, with a new credential generation.
    pub fn attach_role(&self, role_name: &str) {
        self.shared.attach_role(role_name);
    }

    /// The attached role's name, if any.
    pub fn role_name(&self) -> Option<String> {
        self.shared.role_name()
    }

    /// Starts a new credential generation now (new keys, `LastUpdated` = now). Returns `false`
    /// (and does nothing) when no role is attached.
    pub fn rotate_now(&self) -> bool {
        self.shared.rotate_now()
    }

    /// The AccessKeys of every credential generation this emulator has issued (each accepted
    /// until its `Expiration` as [`sts::Principal::Role`] of the attached role), for
    /// [`sts::StsConfig::keys`]: the STS emulator then accepts the instance role's
    /// credentials. Detaching the role does not revoke issued keys (the real ones stay valid
    /// until they expire too); [`sts::KeyStore::remove`] does.
    pub fn key_store(&self) -> sts::KeyStore {
        self.shared.keys.clone()
    }

    /// Invalidates every metadata token issued so far: GETs carrying them get 401.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    /// Every metadata token issued so far, oldest first (the last 1024), so tests can check
    /// that none of them reached a log line.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued_tokens()
    }

    /// The credentials a credential GET would get now (after any due rotation), without
    /// faults; `None` when no role is attached.
    pub fn current_credentials(&self) -> Option<EmulatedCredentials> {
        self.shared.current_credentials()
    }

    /// Starts holding every request to `endpoint` open until [`Gate::release`] (or the gate is
    /// dropped).
    pub fn gate(&self, endpoint: Endpoint) -> Gate {
        let (gate, inner) = Gate::new(endpoint, &self.shared);
        self.shared.add_gate(inner);
        gate
    }

    /// Stops accepting, drops every open connection (held and hanging ones included) and waits
    /// for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
