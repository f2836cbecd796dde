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

/// Checks, when any profile in `profiles` has a `unit`, `exe` or `exe_sha256` selector, that
/// this process can read another process's `/proc/<pid>/exe` and `/proc/<pid>/cgroup` (pid 1,
/// unless the agent is pid 1, when there is no other process to try and nothing is checked).
///
/// # Errors
/// A configuration problem naming the profile, what could not be read and
/// [`PROCESS_SELECTORS_DROP_IN`].
pub fn check_process_selectors(profiles: &[Spec]) -> Result<(), String> {
    if std::process::id() == 1 {
        return Ok(());
    }
    check_process_selectors_on(profiles, 1)
}

/// [`check_process_selectors`] against process `pid`.
pub(crate) fn check_process_selectors_on(profiles: &[Spec], pid: u32) -> Result<(), String> {
    let Some(first) = profiles.iter().find(|p| p.selector.reads_process()) else {
        return Ok(());
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
    let failed = match (exe, cgroup) {
        (Ok(_), Ok(_)) => return Ok(()),
        (Err(e), _) => format!("/proc/{pid}/exe: {e}"),
        (_, Err(e)) => format!("/proc/{pid}/cgroup: {e}"),
    };
    Err(format!(
        "[[profile]] {:?} match: unit, exe and exe_sha256 selectors need to read other \
         processes' /proc/<pid>/exe and /proc/<pid>/cgroup, and the agent cannot ({failed}); \
         install the drop-in {PROCESS_SELECTORS_DROP_IN} (README, \"Profiles\") or use uid, \
         user, gid and group selectors only",
        first.name
    ))
}
