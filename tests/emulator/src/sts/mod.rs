//! An emulator of Alibaba Cloud STS `AssumeRole` over HTTPS, beside the metadata emulator.
//!
//! It serves HTTPS on `127.0.0.1` with a certificate made at start for `127.0.0.1` and
//! `localhost`, signed by a throw-away CA whose PEM it writes to [`StsConfig::ca_file`] (the
//! agent's `[sts] ca_file`) and returns ([`StsEmulator::ca_pem`]). It answers `AssumeRole`
//! (`Version=2015-04-01`, GET or POST, parameters in the query or a form body) as STS
//! documents it:
//!
//! - it verifies both signatures itself (its own code, not the agent's): V3
//!   `ACS3-HMAC-SHA256` and RPC V2 `HMAC-SHA1`, tested against the published test vectors;
//! - it knows which AccessKeys exist through a [`KeyStore`] shared with the metadata emulator
//!   ([`Emulator::key_store`](crate::Emulator::key_store)), so the instance role's credentials
//!   are accepted as that role; long-term keys are added with [`KeyStore::add_long_term`];
//!   the credentials it issues are added too (role chaining works);
//! - refusals carry the documented JSON (`RequestId`, `HostId`, `Code`, `Message`,
//!   `Recommend`): the tables in `verify` (signature, key, token, time, nonce) and `assume`
//!   (parameters, roles, permission, trust) list every code in the order checked;
//! - faults ([`StsFault`]) per role or for all, and call counts per role ([`StsCounts`]) that
//!   tests can wait on ([`StsEmulator::wait_for`]).
//!
//! `docs/sts-emulator.md` gives the sources and the codes' statuses and messages.
//!
//! # Example
//!
//! ```no_run
//! use ecs_metadata_emulator::sts::{FaultScope, StsConfig, StsEmulator, StsFault, TargetRole};
//! use ecs_metadata_emulator::{Emulator, EmulatorConfig, Times};
//!
//! # async fn example() -> std::io::Result<()> {
//! let metadata = Emulator::start_local(EmulatorConfig::default())?;
//! let arn = "acs:ram::123456789012:role/billing-app";
//! let sts = StsEmulator::start(StsConfig {
//!     keys: metadata.key_store(),
//!     roles: vec![TargetRole::new(arn, "EcsRamRoleDemo")],
//!     ca_file: Some("/tmp/sts-ca.pem".into()),
//!     ..StsConfig::default()
//! })?;
//! // Point the agent at `sts.endpoint()` (`https://127.0.0.1:PORT`) with `[sts] ca_file`.
//! sts.add_fault(FaultScope::Role(arn.into()), StsFault::Throttling, Times::Next(1));
//! // … run the code under test …
//! sts.wait_for(|c| c.role(arn).accepted >= 1).await;
//! sts.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod assume;
mod error;
mod keys;
mod server;
pub mod sign;
mod state;
mod tls;
mod verify;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use assume::{DEFAULT_DURATION, MAX_POLICY_CHARS, MIN_DURATION, VERSION};
pub use error::StsError;
pub use keys::{AccessKey, KeyStore, Principal};
pub use state::{FaultScope, RoleCounts, StsCounts, StsFault};
pub use verify::{Scheme, MAX_SKEW};

use crate::clock::{SharedTimeSource, SystemClock};
use crate::Times;

/// `MaxSessionDuration` of a role unless set: STS's default.
pub const DEFAULT_MAX_SESSION_DURATION: Duration = Duration::from_secs(3600);

/// A RAM role callers may assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRole {
    /// `acs:ram::<account>:role/<name>`, compared exactly with `RoleArn`.
    pub arn: String,
    /// The role's `MaxSessionDuration` (STS allows 3600–43200 s): the largest
    /// `DurationSeconds` accepted.
    pub max_session_duration: Duration,
    /// Principals ([`Principal::name`]) holding `sts:AssumeRole` on this role.
    pub permitted: Vec<String>,
    /// Principals the role's trust policy names.
    pub trusted: Vec<String>,
}

impl TargetRole {
    /// A role `arn` that `principal` (a role or user name) may assume: permitted and trusted,
    /// with [`DEFAULT_MAX_SESSION_DURATION`].
    pub fn new(arn: &str, principal: &str) -> Self {
        Self {
            arn: arn.to_owned(),
            max_session_duration: DEFAULT_MAX_SESSION_DURATION,
            permitted: vec![principal.to_owned()],
            trusted: vec![principal.to_owned()],
        }
    }

    /// The same role with `MaxSessionDuration` = `max`.
    pub fn with_max_session_duration(mut self, max: Duration) -> Self {
        self.max_session_duration = max;
        self
    }
}

/// Configuration of an [`StsEmulator`].
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// Where to listen; default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// Where to write the CA certificate's PEM (created or replaced); `None`: not written.
    pub ca_file: Option<PathBuf>,
    /// The AccessKeys accepted; share [`Emulator::key_store`](crate::Emulator::key_store).
    pub keys: KeyStore,
    /// The roles that exist.
    pub roles: Vec<TargetRole>,
    /// The clock request time stamps are checked against and `Expiration` is computed from.
    pub clock: SharedTimeSource,
}

impl Default for StsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ca_file: None,
            keys: KeyStore::new(),
            roles: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What the server task and the handle share.
#[derive(Debug)]
pub(crate) struct Inner {
    keys: KeyStore,
    roles: Vec<TargetRole>,
    clock: SharedTimeSource,
    nonces: verify::Nonces,
    script: state::Script,
}

/// A running STS emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct StsEmulator {
    inner: Arc<Inner>,
    addr: SocketAddr,
    ca_pem: String,
    ca_file: Option<PathBuf>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StsEmulator {
    /// Makes the certificates, writes the CA's PEM to [`StsConfig::ca_file`], binds
    /// [`StsConfig::listen`] and serves on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Certificate generation, writing the CA file, binding, or being called outside a tokio
    /// runtime.
    pub fn start(config: StsConfig) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("StsEmulator::start must be called inside a tokio runtime")
        })?;
        let tls = tls::make()?;
        if let Some(path) = &config.ca_file {
            write_replacing(path, &tls.ca_pem).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("STS emulator: cannot write {}: {e}", path.display()),
                )
            })?;
        }
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("STS emulator: cannot listen on {}: {e}", config.listen),
            )
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let inner = Arc::new(Inner {
            keys: config.keys,
            roles: config.roles,
            clock: config.clock,
            nonces: verify::Nonces::default(),
            script: state::Script::default(),
        });
        let (shutdown, stop) = oneshot::channel();
        let task = runtime.spawn(server::run(
            listener,
            tls.acceptor,
            Arc::clone(&inner),
            stop,
        ));
        Ok(Self {
            inner,
            addr,
            ca_pem: tls.ca_pem,
            ca_file: config.ca_file,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `https://127.0.0.1:PORT` (no path): the agent's `[sts] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM of the CA that signed the server certificate (trust it to reach the emulator).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where the CA's PEM was written ([`StsConfig::ca_file`]).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The AccessKeys accepted (the one given in [`StsConfig::keys`]).
    pub fn keys(&self) -> KeyStore {
        self.inner.keys.clone()
    }

    /// Arms `fault` for requests in `scope`, the next `times` (after any armed before it).
    pub fn add_fault(&self, scope: FaultScope, fault: StsFault, times: Times) {
        self.inner.script.add_fault(scope, fault, times);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.inner.script.clear_faults();
    }

    /// Calls since start or [`Self::reset_counts`].
    pub fn counts(&self) -> StsCounts {
        self.inner.script.counts()
    }

    /// Sets every count to zero.
    pub fn reset_counts(&self) {
        self.inner.script.reset_counts();
    }

    /// Resolves, with the counts, once `done` holds for them (checked now and after every
    /// call). Pair it with a timeout in tests.
    pub async fn wait_for(&self, done: impl FnMut(&StsCounts) -> bool) -> StsCounts {
        self.inner.script.wait_for(done).await
    }

    /// Stops accepting, drops every open connection (hanging ones included) and waits for the
    /// server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Writes `contents` to a new file beside `path` and renames it over `path`: a reader never sees
/// a half-written PEM, and a symlink planted at `path` is replaced, not followed.
fn write_replacing(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let n = STAGED.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    let staging = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staging)?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| std::fs::rename(&staging, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written
}

impl Drop for StsEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
