//! Runs the `nft` command (nftables' command-line tool, a package dependency: no netfilter
//! library is linked into the agent).

use std::io::Write;
use std::process::{Command, Stdio};

use super::ruleset::TABLE;

/// What failed running `nft`.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` is not on `PATH`.
    #[error("the nft command was not found; install nftables (Debian/Ubuntu: apt install nftables; Alibaba Cloud Linux: yum install nftables)")]
    NotInstalled,
    /// `nft` said the operation is not permitted (not root, or no `CAP_NET_ADMIN`).
    #[error("nft was not permitted to read or change the firewall; run as root")]
    NotPermitted,
    /// `nft` failed otherwise; its stderr, trimmed.
    #[error("nft failed: {0}")]
    Failed(String),
    /// `nft` could not be started or talked to.
    #[error("running nft: {0}")]
    Io(#[from] std::io::Error),
}

/// Loads `script` with `nft -f -` (one transaction: all of it or nothing).
///
/// # Errors
/// [`NftError`].
pub fn load(script: &str) -> Result<(), NftError> {
    let mut child = command()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes());
    let out = child.wait_with_output()?;
    written?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failure(&out.stderr))
    }
}

/// `nft -j list table inet <TABLE>`: the table as JSON, or `None` when it is not loaded.
///
/// # Errors
/// [`NftError`].
pub fn list_table() -> Result<Option<String>, NftError> {
    let out = command()
        .args(["-j", "list", "table", "inet", TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error)?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file or directory") {
        Ok(None)
    } else {
        Err(failure(&out.stderr))
    }
}

fn command() -> Command {
    let mut cmd = Command::new("nft");
    // nft's messages in English, which `list_table` reads.
    cmd.env("LC_ALL", "C");
    cmd
}

fn spawn_error(e: std::io::Error) -> NftError {
    if e.kind() == std::io::ErrorKind::NotFound {
        NftError::NotInstalled
    } else {
        NftError::Io(e)
    }
}

fn failure(stderr: &[u8]) -> NftError {
    let text = String::from_utf8_lossy(stderr);
    if text.contains("Operation not permitted") {
        NftError::NotPermitted
    } else {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        NftError::Failed(crate::logging::escape_line(&lines.join(" | ")))
    }
}
