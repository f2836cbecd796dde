//! The start-up check for selectors that read the caller's process (`unit`, `exe`,
//! `exe_sha256`): the agent must be able to read another process's `/proc/<pid>/exe` and
//! `/proc/<pid>/cgroup`.
//!
//! Reading `/proc/<pid>/exe` of another user's process passes a `PTRACE_MODE_READ_FSCREDS`
//! check (proc(5)): the agent must be root or hold `CAP_SYS_PTRACE`; and systemd's
//! `ProtectProc=invisible` (which the packaged unit sets) hides other users' processes
//! altogether. Without that privilege such selectors would silently match nobody, so a
//! configuration that has them is refused instead, naming the drop-in that grants what they
//! need ([`PROCESS_SELECTORS_DROP_IN`]).

use super::profile::Spec;

/// The packaged drop-in that lets the agent read other processes' `/proc/<pid>/exe` and
/// `cgroup` (link it into `/etc/systemd/system/ecs-credential-agent.service.d/`).
pub const PROCESS_SELECTORS_DROP_IN: &str =
    "/usr/share/ecs-credential-agent/process-selectors.conf";

/// How many other processes the check tries at most before it gives up.
const MAX_TRIED: usize = 64;

/// Checks, when any profile in `profiles` has a `unit`, `exe` or `exe_sha256` selector, that
/// this process can read another process's `/proc/<pid>/exe` and `/proc/<pid>/cgroup`: it
/// tries the processes it can see (for a non-root agent only other users' — its own prove
/// nothing; at most 64) and passes at the first one it can read. Pid 1 alone is not a good
/// witness: in some sandboxes (containers, CI runners) it is unreadable even to root.
///
/// # Errors
/// A configuration problem naming the profile, what could not be read (or that no other
/// user's process is visible, which is what `ProtectProc=invisible` does) and
/// [`PROCESS_SELECTORS_DROP_IN`].
pub fn check_process_selectors(profiles: &[Spec]) -> Result<(), String> {
    if !profiles.iter().any(|p| p.selector.reads_process()) {
        return Ok(());
    }
    check_process_selectors_among(profiles, other_processes())
}

/// [`check_process_selectors`] against process `pid` alone.
#[cfg(test)]
pub(crate) fn check_process_selectors_on(profiles: &[Spec], pid: u32) -> Result<(), String> {
    check_process_selectors_among(profiles, [pid])
}

/// The pids to try: every process but this one for root, other users' processes otherwise,
/// in `/proc` order, at most [`MAX_TRIED`].
fn other_processes() -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id();
    let euid = nix::unistd::geteuid().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .parse::<u32>()
                .ok()
                .map(|pid| (pid, e))
        })
        .filter(|(pid, _)| *pid != me)
        .filter(|(_, e)| euid == 0 || e.metadata().is_ok_and(|m| m.uid() != euid))
        .map(|(pid, _)| pid)
        .take(MAX_TRIED)
        .collect()
}

/// Passes when one of `pids` has a readable `/proc/<pid>/exe` and `/proc/<pid>/cgroup`.
pub(crate) fn check_process_selectors_among(
    profiles: &[Spec],
    pids: impl IntoIterator<Item = u32>,
) -> Result<(), String> {
    let Some(first) = profiles.iter().find(|p| p.selector.reads_process()) else {
        return Ok(());
    };
    let mut failed: Option<String> = None;
    for pid in pids {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
        let why = match (exe, cgroup) {
            (Ok(_), Ok(_)) => return Ok(()),
            (Err(e), _) => format!("/proc/{pid}/exe: {e}"),
            (_, Err(e)) => format!("/proc/{pid}/cgroup: {e}"),
        };
        failed.get_or_insert(why);
    }
    let failed = failed.unwrap_or_else(|| "no other user's process is visible".to_owned());
    Err(format!(
        "[[profile]] {:?} match: unit, exe and exe_sha256 selectors need to read other \
         processes' /proc/<pid>/exe and /proc/<pid>/cgroup, and the agent cannot ({failed}); \
         install the drop-in {PROCESS_SELECTORS_DROP_IN} (README, \"Profiles\") or use uid, \
         user, gid and group selectors only",
        first.name
    ))
}
