//! Process hygiene and signals, called from the thin `main`.
//!
//! - [`harden`]: no core dumps (`RLIMIT_CORE` 0) and not dumpable (`PR_SET_DUMPABLE` 0), so
//!   neither a crash nor a same-uid `ptrace`/`/proc/<pid>/mem` reader gets the secrets in
//!   memory. The kernel shows a non-dumpable process's `/proc/<pid>` files as owned by root.
//! - [`shutdown_signal`]: a future that completes on SIGTERM or SIGINT.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Disables core dumps and marks the process not dumpable.
///
/// # Errors
/// The `setrlimit(2)` or `prctl(2)` error, which the caller should treat as fatal: a security
/// daemon that cannot protect its memory should not start.
pub fn harden() -> nix::Result<()> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

/// Raises the soft open-files limit to the hard limit, so `[server] max_connections` (default
/// 1024) connections fit beside the agent's own descriptors; returns the new soft limit.
///
/// # Errors
/// The `getrlimit(2)`/`setrlimit(2)` error.
pub fn raise_open_files_limit() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// Completes when the process receives SIGTERM or SIGINT, and says which. A second SIGTERM or
/// SIGINT after that ends the process at once with status 1, without waiting for in-flight
/// requests (an operator pressing Ctrl-C twice means it).
///
/// # Errors
/// Installing a signal handler failed (for example in a sandbox that forbids it).
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tokio::spawn(async move {
            let second = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(
                signal = second,
                "second signal: exiting now without waiting for in-flight requests"
            );
            std::process::exit(1);
        });
        first
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harden_turns_off_core_dumps_and_dumpable() {
        harden().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    }

    #[test]
    fn open_files_soft_limit_reaches_the_hard_limit() {
        let n = raise_open_files_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(n, hard);
    }
}
