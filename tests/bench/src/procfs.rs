//! What the kernel tells about a process: memory (`/proc/<pid>/status`) and CPU time
//! (`/proc/<pid>/task/*/schedstat`, nanoseconds).

use std::time::Duration;

/// `VmRSS` and `VmHWM` (peak RSS) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time used so far by every thread of `pid` (threads that exited are not counted, which
/// the agent's fixed set of runtime threads does not do while idle).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Raises the soft open-files limit to the hard limit (1000 connections need it), as the
/// agent does for itself.
pub fn raise_open_files_limit() {
    if let Err(e) = ecs_credential_agent::process::raise_open_files_limit() {
        eprintln!("bench: cannot raise the open-files limit: {e}");
    }
}
