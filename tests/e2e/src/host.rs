//! The machine the suites run on: privileges, limits, and another process seen from `/proc`.

use std::time::Duration;

/// Whether this process runs as root (some tests need it and skip visibly otherwise, see
/// [`require_root!`](crate::require_root)).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Raises this process's open-files soft limit to the hard limit (for tests with a thousand
/// clients).
///
/// # Panics
/// When the limit cannot be read or set.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// A `kB` line of `/proc/<pid>/status` (`key` with its colon: `"VmRSS:"`, `"VmHWM:"`), in
/// KiB; `None` when the process is gone or has no such line.
pub fn try_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// [`try_status_kib`] of a process that must be there.
///
/// # Panics
/// When the process is gone or the line is missing.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    try_status_kib(pid, key).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// How many descriptors process `pid` holds (`/proc/<pid>/fd`). The agent is not dumpable, so
/// its `/proc/<pid>/fd` is root's: callers skip descriptor checks (visibly) unless root.
///
/// # Panics
/// When the directory cannot be read.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the agent's /proc/<pid>/fd (needs root or the same uid)")
        .count()
}

/// [`fd_count`] once it has stopped changing for 100 ms (the last connection a test closed may
/// take the agent a moment to notice).
///
/// # Panics
/// When it still changes after 5 s.
pub async fn settled_fd_count(pid: u32) -> usize {
    let mut last = fd_count(pid);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fd_count(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the agent's descriptor count never settled")
}
