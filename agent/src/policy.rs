//! Authorization: one function, [`authorize`], judges a [`Caller`] against the rules in force
//! and says what it may get.
//!
//! Depends only on [`identity`](crate::identity): the server builds the [`Rules`] from its
//! configuration for each connection (the rules in force when it was accepted; a reload
//! changes them for the connections accepted after it).

use crate::identity::Caller;

/// The rules a caller is judged by: whom the instance role's credentials are served to.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Uids that may get them (`[server] allowed_uids`).
    pub allowed_uids: &'a [u32],
    /// Gids, primary or supplementary, whose members may get them (`[server] allowed_gids`).
    pub allowed_gids: &'a [u32],
}

/// What a caller may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The instance role's credentials, on these grounds.
    InstanceRole(Grounds),
    /// Nothing: every request is answered `403 Forbidden`.
    Denied,
}

/// Why a caller may have the instance role's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grounds {
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

/// Judges `caller` under `rules`: its uid first, then its primary gid, then its supplementary
/// gids.
pub fn authorize(caller: &Caller, rules: Rules<'_>) -> Decision {
    if rules.allowed_uids.contains(&caller.uid) {
        return Decision::InstanceRole(Grounds::Uid);
    }
    if rules.allowed_gids.contains(&caller.gid) {
        return Decision::InstanceRole(Grounds::PrimaryGid(caller.gid));
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
            allowed_uids: uids,
            allowed_gids: gids,
        }
    }

    #[test]
    fn authorize_table() {
        use Decision::{Denied, InstanceRole};
        let default = crate::server::config::Config::default();
        let defaults = rules(&default.allowed_uids, &default.allowed_gids);
        let rows: &[(&str, Caller, Rules<'_>, Decision)] = &[
            (
                "root by default",
                caller(0, 0, &[]),
                defaults,
                InstanceRole(Grounds::Uid),
            ),
            (
                "uid listed",
                caller(1000, 1000, &[]),
                rules(&[0, 1000], &[]),
                InstanceRole(Grounds::Uid),
            ),
            (
                "primary gid",
                caller(1000, 50, &[]),
                rules(&[0], &[50]),
                InstanceRole(Grounds::PrimaryGid(50)),
            ),
            (
                "supplementary gid",
                caller(1000, 1000, &[10, 60]),
                rules(&[0], &[60]),
                InstanceRole(Grounds::SupplementaryGid(60)),
            ),
            (
                "nobody denied",
                caller(65534, 65534, &[65534]),
                defaults,
                Denied,
            ),
            (
                "root denied when list empty",
                caller(0, 0, &[0]),
                rules(&[], &[]),
                Denied,
            ),
            (
                "gid not uid",
                caller(50, 1000, &[]),
                rules(&[], &[50]),
                Denied,
            ),
        ];
        for (name, c, r, want) in rows {
            assert_eq!(authorize(c, *r), *want, "{name}");
            assert_eq!(want.is_allowed(), *want != Denied);
        }
    }
}
