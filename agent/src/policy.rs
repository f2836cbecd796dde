//! Authorization: one function, [`authorize`], judges a [`Caller`] against the rules in force
//! and says what it may get.
//!
//! Root and the uid the agent runs as are always allowed ([`Trusted`]): both can read the
//! credentials anyway (root can read the agent's memory; the agent's own uid is the agent).
//! `[server] allowed_uids` and `allowed_gids` add other callers; by default there are none.
//!
//! Depends only on [`identity`](crate::identity): the server builds the [`Rules`] from its
//! configuration. A connection is judged at accept (a denied caller is answered and closed
//! at once), and again at its next request after a reload (`SIGHUP`) changed the rules.

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
}

/// What a caller may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The instance role's credentials, on these grounds.
    InstanceRole(Grounds),
    /// Nothing: the connection is answered `403 Forbidden` and closed.
    Denied,
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
        !matches!(self, Decision::Denied)
    }
}

/// Judges `caller` under `rules`: trusted uids first, then its uid, its primary gid, and its
/// supplementary gids (read only when nothing before decided).
pub fn authorize(caller: &Caller, rules: Rules<'_>) -> Decision {
    if rules.trusted.contains(caller.uid) {
        return Decision::InstanceRole(Grounds::Trusted);
    }
    if rules.allowed_uids.contains(&caller.uid) {
        return Decision::InstanceRole(Grounds::Uid);
    }
    // No gid to match: the gid and groups are not even read (for a TCP caller they would
    // come from the user database).
    if rules.allowed_gids.is_empty() {
        return Decision::Denied;
    }
    let gid = caller.gid();
    if rules.allowed_gids.contains(&gid) {
        return Decision::InstanceRole(Grounds::PrimaryGid(gid));
    }
    match caller
        .groups()
        .iter()
        .find(|g| rules.allowed_gids.contains(g))
    {
        Some(&g) => Decision::InstanceRole(Grounds::SupplementaryGid(g)),
        None => Decision::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::new(uid, gid, groups.to_vec(), Some(1234))
    }

    fn rules<'a>(uids: &'a [u32], gids: &'a [u32]) -> Rules<'a> {
        Rules {
            trusted: Trusted::agent_uid(999),
            allowed_uids: uids,
            allowed_gids: gids,
        }
    }

    #[test]
    fn authorize_table() {
        use Decision::{Denied, InstanceRole};
        let default = crate::server::config::Config::default();
        let defaults = rules(&default.allowed_uids, &default.allowed_gids);
        let untrusting = Rules {
            trusted: Trusted::nobody(),
            ..rules(&[], &[])
        };
        let rows: &[(&str, Caller, Rules<'_>, Decision)] = &[
            (
                "root by default",
                caller(0, 0, &[]),
                defaults,
                InstanceRole(Grounds::Trusted),
            ),
            (
                "the agent's own uid by default",
                caller(999, 999, &[]),
                defaults,
                InstanceRole(Grounds::Trusted),
            ),
            (
                "root when the lists are empty",
                caller(0, 0, &[0]),
                rules(&[], &[]),
                InstanceRole(Grounds::Trusted),
            ),
            (
                "another user by default",
                caller(1000, 1000, &[1000]),
                defaults,
                Denied,
            ),
            (
                "uid listed",
                caller(1000, 1000, &[]),
                rules(&[1000], &[]),
                InstanceRole(Grounds::Uid),
            ),
            (
                "primary gid",
                caller(1000, 50, &[]),
                rules(&[], &[50]),
                InstanceRole(Grounds::PrimaryGid(50)),
            ),
            (
                "supplementary gid",
                caller(1000, 1000, &[10, 60]),
                rules(&[], &[60]),
                InstanceRole(Grounds::SupplementaryGid(60)),
            ),
            (
                "nobody denied",
                caller(65534, 65534, &[65534]),
                defaults,
                Denied,
            ),
            (
                "gid not uid",
                caller(50, 1000, &[]),
                rules(&[], &[50]),
                Denied,
            ),
            (
                "root judged by the rules when nothing is trusted (tests)",
                caller(0, 0, &[0]),
                untrusting,
                Denied,
            ),
        ];
        for (name, c, r, want) in rows {
            assert_eq!(authorize(c, *r), *want, "{name}");
            assert_eq!(want.is_allowed(), *want != Denied);
        }
    }

    #[test]
    fn this_process_trusts_root_and_itself_only() {
        let me = nix::unistd::geteuid().as_raw();
        let t = Trusted::this_process();
        assert!(t.contains(0) && t.contains(me));
        if me != 65533 {
            assert!(!t.contains(65533));
        }
        assert!(!Trusted::nobody().contains(0));
    }

    /// A loopback TCP caller's gid and groups come from the user database (microseconds per
    /// connection): a caller the uid alone decides for never reads it.
    #[test]
    fn a_tcp_caller_judged_by_its_uid_reads_no_user_database() {
        use crate::identity::TcpOwner;
        let owner = TcpOwner {
            uid: 1000,
            inode: 1,
            cgroup_id: None,
        };
        let rows: &[(Rules<'_>, Decision)] = &[
            (rules(&[1000], &[]), Decision::InstanceRole(Grounds::Uid)),
            (rules(&[1000], &[50]), Decision::InstanceRole(Grounds::Uid)),
            (rules(&[], &[]), Decision::Denied),
        ];
        for (r, want) in rows {
            let c = Caller::of_tcp_owner(&owner);
            assert_eq!(authorize(&c, *r), *want);
            assert!(!c.user_database_read(), "{want:?}");
        }
        // Gids to match and the uid not allowed: the user database decides.
        let c = Caller::of_tcp_owner(&owner);
        let _ = authorize(&c, rules(&[], &[50]));
        assert!(c.user_database_read());
    }
}
