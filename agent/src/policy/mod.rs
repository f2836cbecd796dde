//! Authorization: one function, [`authorize`], judges a [`Caller`] against the rules in force
//! and says what it may get: the instance role, a profile's RAM role, or nothing.
//!
//! In this order ([`authorize`]):
//!
//! 1. the first `[[profile]]` (file order) whose selector matches the caller ([`Spec`],
//!    [`selector`]): that profile, whether or not the caller is in `allowed_uids` /
//!    `allowed_gids`, root included (a profile's selector both admits and maps);
//! 2. root and the uid the agent runs as ([`Trusted`]): the instance role (both can read the
//!    credentials anyway: root can read the agent's memory; the agent's own uid is the agent);
//! 3. callers admitted by `[server] allowed_uids` / `allowed_gids`: the instance role while
//!    `[profiles] unmatched = "instance-role"` (the default), `403` with `"deny"`;
//! 4. everyone else: `403`.
//!
//! - [`profile`]: `[[profile]]`, parsed and validated ([`Spec`], [`Selector`]).
//! - [`selector`]: matching a selector against a caller.
//! - [`config`]: `[profiles] unmatched`.
//! - [`probe`]: the start-up check that process selectors can work.
//!
//! Depends on [`identity`](crate::identity) (and `settings` for its section): the server builds
//! the [`Rules`] from its configuration. A connection is judged at accept (a denied caller is
//! answered and closed at once), and again at its next request after a reload (`SIGHUP`)
//! changed the rules.

pub mod config;
pub mod probe;
pub mod profile;
pub mod selector;

pub use config::Unmatched;
pub use profile::{Selector, Spec};

use crate::identity::Caller;

/// The uids always allowed, whatever `allowed_uids` and `allowed_gids` say: root, and the uid
/// the agent runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    /// The agent's own (effective) uid; `None` trusts no uid at all (tests only).
    agent_uid: Option<u32>,
}

impl Trusted {
    /// Root and this process's effective uid.
    pub fn this_process() -> Trusted {
        Trusted {
            agent_uid: Some(nix::unistd::geteuid().as_raw()),
        }
    }

    /// Root and `uid`, as if the agent ran as `uid`.
    pub fn agent_uid(uid: u32) -> Trusted {
        Trusted {
            agent_uid: Some(uid),
        }
    }

    /// No uid, not even root: every caller is judged by the rules alone. Only for tests, which
    /// run as root or as the agent's own uid and still need denied callers.
    #[doc(hidden)]
    pub fn nobody() -> Trusted {
        Trusted { agent_uid: None }
    }

    /// Whether `uid` is always allowed.
    pub fn contains(self, uid: u32) -> bool {
        self.agent_uid.is_some_and(|agent| uid == 0 || uid == agent)
    }
}

/// The rules a caller is judged by: whom the instance role's credentials are served to.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Uids always allowed (root and the agent's own).
    pub trusted: Trusted,
    /// Other uids that may get them (`[server] allowed_uids`).
    pub allowed_uids: &'a [u32],
    /// Gids, primary or supplementary, whose members may get them (`[server] allowed_gids`).
    pub allowed_gids: &'a [u32],
    /// The profiles, in file order (`[[profile]]`).
    pub profiles: &'a [Spec],
    /// What a caller admitted by the lists but matched by no profile gets.
    pub unmatched: Unmatched,
}

/// What a caller may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The instance role's credentials, on these grounds.
    InstanceRole(Grounds),
    /// The credentials of the profile at this index of [`Rules::profiles`].
    Profile(usize),
    /// Nothing: the connection is answered `403 Forbidden` and closed.
    Denied,
    /// Nothing: admitted by `allowed_uids`/`allowed_gids`, but no profile matches and
    /// `[profiles] unmatched = "deny"` (answered `403 Forbidden`, saying so).
    Unmatched,
}

/// Why a caller may have the instance role's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grounds {
    /// Its uid is root or the agent's own ([`Trusted`]).
    Trusted,
    /// Its uid is in `allowed_uids`.
    Uid,
    /// Its primary gid (given) is in `allowed_gids`.
    PrimaryGid(u32),
    /// One of its supplementary gids (given) is in `allowed_gids`.
    SupplementaryGid(u32),
}

impl Decision {
    /// Whether the caller may be served.
    pub fn is_allowed(self) -> bool {
        !matches!(self, Decision::Denied | Decision::Unmatched)
    }
}

/// Judges `caller` under `rules` (module docs): the first matching profile, then trusted
/// uids, then its uid, its primary gid and its supplementary gids (read only when nothing
/// before decided), under `unmatched`.
pub fn authorize(caller: &Caller, rules: Rules<'_>) -> Decision {
    if let Some(i) = rules
        .profiles
        .iter()
        .position(|p| p.selector.matches(caller))
    {
        return Decision::Profile(i);
    }
    if rules.trusted.contains(caller.uid) {
        return Decision::InstanceRole(Grounds::Trusted);
    }
    match admitted(caller, &rules) {
        Some(_) if rules.unmatched == Unmatched::Deny => Decision::Unmatched,
        Some(grounds) => Decision::InstanceRole(grounds),
        None => Decision::Denied,
    }
}

/// On what grounds `allowed_uids` / `allowed_gids` admit `caller`, if they do.
fn admitted(caller: &Caller, rules: &Rules<'_>) -> Option<Grounds> {
    if rules.allowed_uids.contains(&caller.uid) {
        return Some(Grounds::Uid);
    }
    // No gid to match: the gid and groups are not even read (for a TCP caller they would
    // come from the user database).
    if rules.allowed_gids.is_empty() {
        return None;
    }
    let gid = caller.gid();
    if rules.allowed_gids.contains(&gid) {
        return Some(Grounds::PrimaryGid(gid));
    }
    caller
        .groups()
        .iter()
        .find(|g| rules.allowed_gids.contains(g))
        .map(|&g| Grounds::SupplementaryGid(g))
}

#[cfg(test)]
mod tests;
