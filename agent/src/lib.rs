//! `ecs-credential-agent`: serves an Alibaba Cloud ECS instance's RAM role STS credentials to
//! local callers over a root-only Unix socket, so that no application on the instance needs a
//! long-term AccessKey.
//!
//! # Background
//!
//! A leaked AccessKey lets an attacker act as the account. Alibaba Cloud's guidance for ECS is
//! to bind a RAM role to the instance and use the short-lived STS credentials the instance
//! metadata service hands out, in hardened (token) mode only. The official SDKs read the
//! metadata service directly from every process, ask for a new metadata token before every
//! request, and (in older releases) refresh only in the last minutes. This agent does it once
//! per instance, well: it caches the metadata token, refreshes the credentials well before they
//! expire, survives metadata outages without ever serving expired credentials, and decides who
//! may have them by the caller's uid/gid (`SO_PEERCRED`), auditing every issuance.
//!
//! # Layout
//!
//! Data flows one way:
//! metadata service → [`sources::metadata`] client → [`credentials::refresher`] →
//! [`credentials::State`] ← [`server`] ← callers. No top-level module names another that names
//! it back, directly or through others: `tests/module_graph.rs` reads the module tree and fails
//! on a cycle. The leaves — [`time`], [`heartbeat`], [`process`], [`settings`] and
//! [`identity`] — import no other module; [`metrics`], a sink that knows no domain type, imports
//! only `settings` (for its configuration section).
//!
//! - [`settings`]: how a configuration key is declared, once, by the module that uses it (its
//!   section: `sources::metadata::config`, `sources::sts::config`, `server::config`,
//!   `credentials::policy`, `logging::Config`, `systemd::config`, `metrics::config`).
//! - [`config`]: parses the TOML file and the flags into those sections; nothing else.
//! - [`credentials`]: the credential value types, the [`Source`](credentials::Source) trait a
//!   credential source implements, the refresh schedule (pure), the refresher (owns time for one
//!   source, generic over it) and the published state. Uses no source.
//! - [`sources`]: credential sources, each knowing one upstream and returning validated
//!   credentials or a typed error: [`sources::metadata`], the hardened-mode metadata client
//!   (metadata token cache, retry table, parsing) for the instance role; [`sources::sts`], the
//!   profiles' roles assumed through STS:
//!   the STS client (`ACS3-HMAC-SHA256` signing, HTTPS with the system's trust store, `AssumeRole`,
//!   STS's error codes in words) for a profile's RAM role, signed with the instance role's
//!   credentials.
//! - [`identity`]: the [`Caller`](identity::Caller) a transport captures at accept (uid, gid,
//!   groups, pid, a pidfd or `/proc` handle on its process); a leaf, and the only module that
//!   reads the peer's socket options.
//! - [`policy`]: [`authorize`](policy::authorize), the one judgement of a caller against the
//!   rules in force (the `[[profile]]` selectors first, then the uid and group lists); depends
//!   only on `identity` (and `settings` for `[profiles]`).
//! - [`profiles`]: one refresher per distinct profile role (built through a factory the daemon
//!   is given), reconciled on reload, and the profile set the server answers profile callers
//!   from.
//! - [`server`]: the Unix socket (bind safely), admission, connections, routes, audit trail,
//!   and the loopback TCP listener for metrics.
//! - [`metrics`]: Prometheus metrics, on the socket (`GET /metrics`) and an optional loopback
//!   TCP address ([`server::metrics_listener`]).
//! - [`process`]: process hygiene (not dumpable, no core dumps) and signals.
//! - [`systemd`]: readiness, status and watchdog notifications, socket activation;
//!   [`heartbeat`]: the loops' liveness; [`reload`]: `SIGHUP`; [`logging`]: stderr, the journal.
//! - [`time`]: the injected wall clock.
//! - [`cli`]: the command line; [`get`] prints the credentials for scripts and the aliyun CLI,
//!   [`exec`] runs a command with them in its environment, [`env_cmd`] prints the environment
//!   that points an SDK at the loopback listener; [`lockdown`] locks the metadata service to
//!   root and the agent's user with an nftables table of its own (the `nft` command).
//! - `dev` (feature `dev`): the agent against the built-in metadata emulator.
//! - `test_support` (tests only): fixtures shared by several modules' unit tests.
//!
//! Unit tests sit at the bottom of the file they test, in `#[cfg(test)] mod tests`; when they
//! outgrow it, the same module's body moves to `<file>/tests.rs` (or `<file>/tests/` for
//! several files). End-to-end tests live in the `ecs-credential-agent-e2e` package.
//!
//! # Security model
//!
//! The socket file's mode (default `0600`, root only) is the first gate; the caller's uid and
//! groups, read from the kernel when each connection is accepted ([`identity`]) and judged by
//! [`policy`] (root and the agent's own uid always allowed), are the second: a denied caller is
//! answered `403` at accept and takes no connection slot. Secrets
//! (`AccessKeySecret`, `SecurityToken`, the metadata token) live in types that zeroize on drop and
//! print redacted; they never reach a log line. The process is not dumpable and writes no core
//! file. Root on the instance can read anything, and a process that can reach the metadata
//! service itself bypasses the agent: see the README.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_code)] // audited exceptions: `identity::unix` reads SO_PEERGROUPS with libc::getsockopt;
                      // `systemd::activation` takes ownership of the socket systemd passed as fd 3
                      // and sets its close-on-exec flag with fcntl;
                      // `server::memory` calls glibc's malloc_trim after a burst of connections closed

pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
#[cfg(feature = "dev")]
pub mod dev;
pub mod env_cmd;
pub mod exec;
pub mod get;
pub mod heartbeat;
pub mod identity;
pub mod lockdown;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod process;
pub mod profiles;
pub mod reload;
pub mod server;
pub mod settings;
pub mod sources;
pub mod systemd;
#[cfg(test)]
mod test_logs;
#[cfg(test)]
pub(crate) mod test_support;
pub mod time;
