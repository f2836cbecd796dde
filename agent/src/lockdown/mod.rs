//! `ecs-credential-agent lockdown apply | status | remove`: one nftables table of the agent's
//! own that lets only root and the agent's user reach the metadata service, so that no other
//! local process bypasses the agent. See `docs/lockdown.md` for the design and its limits.
//!
//! - [`ruleset`]: the `nft` scripts, pure functions of the allowed uids;
//! - [`nft`]: runs the `nft` command;
//! - [`status`]: parses `nft -j list table`;
//! - [`probe`]: a connection as an unprivileged uid, which must be reset.
//!
//! # Exit statuses
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done; `status`: the table is loaded (and, with `--probe`, the probe was reset) |
//! | 1 | `nft` failed otherwise (its message is printed) |
//! | 3 | `status`: the table is not loaded |
//! | 4 | `status`: loaded but incomplete, or `--probe` was not reset |
//! | 67 | `apply`: the `--user` does not exist (`EX_NOUSER`), or is `nobody` (uid 65534) |
//! | 69 | `nft` is not installed (`EX_UNAVAILABLE`) |
//! | 77 | not permitted: run as root (`EX_NOPERM`) |

pub mod nft;
pub mod probe;
pub mod ruleset;
pub mod status;

use nft::NftError;
pub use ruleset::{METADATA_ADDR, TABLE};

/// The user `apply` allows besides root when `--user` is not given: the packaged service's.
pub const DEFAULT_USER: &str = "ecs-credential-agent";

/// Exit status: done (see the module docs for the table).
pub const EXIT_OK: u8 = 0;
/// Exit status: `nft` failed for another reason.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of `status`: the table is not loaded.
pub const EXIT_NOT_LOADED: u8 = 3;
/// Exit status of `status`: loaded but incomplete, or the probe was not reset.
pub const EXIT_NOT_EFFECTIVE: u8 = 4;
/// Exit status of `apply`: the user does not exist (`EX_NOUSER`).
pub const EXIT_NO_USER: u8 = 67;
/// Exit status: `nft` is not installed (`EX_UNAVAILABLE`).
pub const EXIT_NO_NFT: u8 = 69;
/// Exit status: not permitted, not root (`EX_NOPERM`).
pub const EXIT_NO_PERMISSION: u8 = 77;

/// Interfaces whose names show container networks, whose traffic to the metadata service is
/// forwarded (dropped by the table) rather than sent by a local user.
const CONTAINER_INTERFACES: &[&str] = &["docker", "cni", "podman", "br-", "virbr", "lxcbr", "cbr0"];

/// `lockdown apply --user USER`: loads the table allowing root and `user` (a name or a uid
/// that exists); prints what it did, and a warning when container networks exist.
pub fn apply(user: &str) -> u8 {
    let (uid, name) = match resolve_user(user) {
        Ok(found) => found,
        Err(why) => return fail(EXIT_NO_USER, &why),
    };
    if let Err(e) = nft::load(&ruleset::apply_script(&[uid])) {
        return nft_failed(&e);
    }
    println!("lockdown applied: only uid 0 and uid {uid} ({}) reach {METADATA_ADDR} (table inet {TABLE}); others get a TCP reset, forwarded traffic is dropped", crate::logging::escape_line(&name));
    warn_containers();
    EXIT_OK
}

/// `lockdown remove`: deletes the table (done when it is absent).
pub fn remove() -> u8 {
    match nft::load(&ruleset::remove_script()) {
        Ok(()) => {
            println!("lockdown removed: table inet {TABLE} is gone; every local user reaches {METADATA_ADDR} again");
            EXIT_OK
        }
        Err(e) => nft_failed(&e),
    }
}

/// `lockdown status [--probe]`: whether the table is loaded, which uids it allows, and with
/// `probe` whether an unprivileged connection is reset.
pub fn show_status(probe: bool) -> u8 {
    let json = match nft::list_table() {
        Ok(Some(json)) => json,
        Ok(None) => {
            println!("lockdown: not loaded (no table inet {TABLE}); every local user reaches {METADATA_ADDR}");
            warn_containers();
            return EXIT_NOT_LOADED;
        }
        Err(e) => return nft_failed(&e),
    };
    let table = match status::parse(&json) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_FAILURE, &e.to_string()),
    };
    let uids: Vec<String> = table.allowed_uids.iter().map(u32::to_string).collect();
    println!("lockdown: loaded (table inet {TABLE})");
    println!("allowed uids: {}", uids.join(", "));
    println!(
        "others: {}",
        if table.resets_others {
            "TCP reset"
        } else {
            "NOT reset"
        }
    );
    println!(
        "forwarded: {}",
        if table.drops_forwarded {
            "dropped"
        } else {
            "NOT dropped"
        }
    );
    let mut code = if table.resets_others && table.drops_forwarded {
        EXIT_OK
    } else {
        EXIT_NOT_EFFECTIVE
    };
    if probe {
        code = code.max(run_probe());
    }
    warn_containers();
    code
}

fn run_probe() -> u8 {
    match probe::run() {
        Ok(outcome) => {
            println!(
                "probe: uid {} connecting to {}: {}",
                probe::PROBE_UID,
                probe::PROBE_ADDR,
                outcome.word()
            );
            if outcome == probe::Outcome::Reset {
                EXIT_OK
            } else {
                EXIT_NOT_EFFECTIVE
            }
        }
        Err(e) => fail(
            EXIT_NO_PERMISSION,
            &format!(
                "cannot run the probe (this binary as uid {}): {e}; run as root, from a path uid {} may execute",
                probe::PROBE_UID,
                probe::PROBE_UID
            ),
        ),
    }
}

/// The uid and name of `user`, a user name or a numeric uid of an existing user.
fn resolve_user(user: &str) -> Result<(u32, String), String> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found {
        // `nobody` is the overflow uid many unprivileged daemons share, and the uid `status
        // --probe` tests the reset with: allowing it would open the service to all of them.
        Ok(Some(u)) if u.uid.as_raw() == probe::PROBE_UID => Err(format!(
            "user {:?} (uid {}) is shared by unprivileged daemons and is the uid `status --probe` connects as; run the agent as a user of its own (the packages create ecs-credential-agent)",
            crate::logging::escape_line(&u.name),
            probe::PROBE_UID
        )),
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.name)),
        Ok(None) => Err(format!(
            "no user {user:?} on this system; create the agent's user first (the packages do), or name an existing one with --user"
        )),
        Err(e) => Err(format!("looking up user {user:?}: {e}")),
    }
}

/// Prints a warning when an interface of a container network exists.
fn warn_containers() {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    let names = entries.filter_map(|e| e.ok()?.file_name().into_string().ok());
    let found = container_interfaces(names);
    if found.is_empty() {
        return;
    }
    eprintln!(
        "warning: container networks exist ({}): their traffic to {METADATA_ADDR} is forwarded and dropped by the lockdown; their workloads must fetch credentials from the agent (README, \"Metadata lockdown\")",
        crate::logging::escape_line(&found.join(", "))
    );
}

/// The names among `names` that show container networks ([`CONTAINER_INTERFACES`]), sorted.
fn container_interfaces(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut found: Vec<String> = names
        .filter(|n| CONTAINER_INTERFACES.iter().any(|p| n.starts_with(p)))
        .collect();
    found.sort();
    found
}

fn nft_failed(e: &NftError) -> u8 {
    let code = match e {
        NftError::NotInstalled => EXIT_NO_NFT,
        NftError::NotPermitted => EXIT_NO_PERMISSION,
        NftError::Failed(_) | NftError::Io(_) => EXIT_FAILURE,
    };
    fail(code, &e.to_string())
}

fn fail(code: u8, why: &str) -> u8 {
    eprintln!("ecs-credential-agent lockdown: {why}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_or_uid_and_missing_ones_refused() {
        assert_eq!(resolve_user("root").unwrap(), (0, "root".to_owned()));
        assert_eq!(resolve_user("0").unwrap(), (0, "root".to_owned()));
        let why = resolve_user("no-such-user-eca").unwrap_err();
        assert!(
            why.starts_with("no user \"no-such-user-eca\" on this system;"),
            "{why}"
        );
        assert!(resolve_user("4000000000").is_err());
        let why = resolve_user(&probe::PROBE_UID.to_string()).unwrap_err();
        assert!(why.contains("shared by unprivileged daemons"), "{why}");
    }

    #[test]
    fn container_networks_by_interface_name() {
        let names = [
            "lo", "eth0", "veth12ab", "podman0", "docker0", "br-5e1f", "cni0", "virbr0",
        ];
        assert_eq!(
            container_interfaces(names.iter().map(|n| n.to_string())),
            ["br-5e1f", "cni0", "docker0", "podman0", "virbr0"]
        );
        assert!(container_interfaces(["lo", "eth0"].iter().map(|n| n.to_string())).is_empty());
    }
}
