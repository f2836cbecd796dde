//! `[profiles]`: what happens to callers no `[[profile]]` matches, declared once
//! ([`crate::settings`]). The profiles themselves are an array of tables, read by
//! [`parse_profiles`](super::profile::parse_profiles).

use crate::settings::{section, Text};

section! {
    /// `[profiles]`: callers no `[[profile]]` matches. A reload applies it to open
    /// connections at their next request.
    pub struct Config["profiles"] {
        /// a caller no `[[profile]]` matches, admitted by `allowed_uids`/`allowed_gids`:
        /// `"instance-role"` serves it the instance role, `"deny"` answers 403 (root and the
        /// agent's own uid always get the instance role)
        unmatched: Unmatched = Unmatched::InstanceRole, "unmatched", Text::of(), Live;
    }
}

/// `[profiles] unmatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Callers admitted by `allowed_uids`/`allowed_gids` get the instance role (the default:
    /// installations without profiles keep working).
    #[default]
    InstanceRole,
    /// They get `403`: once each application has its profile, a caller no profile names
    /// holds no credentials at all.
    Deny,
}

impl std::str::FromStr for Unmatched {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "instance-role" => Ok(Unmatched::InstanceRole),
            "deny" => Ok(Unmatched::Deny),
            other => Err(format!(
                "expected \"instance-role\" or \"deny\", got {other:?}"
            )),
        }
    }
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unmatched::InstanceRole => "instance-role",
            Unmatched::Deny => "deny",
        })
    }
}
