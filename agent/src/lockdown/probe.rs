//! `status --probe`: a TCP connection to the metadata service as an unprivileged uid, which
//! the loaded table must answer with a reset.
//!
//! The connection is made by a child: this same binary, re-run as
//! `lockdown probe-connect` with [`PROBE_UID`] as its uid and gid and no supplementary groups
//! (`std`'s `Command::uid`, which drops the groups when run by root). It only connects and
//! closes; it sends no request. Its exit status carries the [`Outcome`].

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The uid (and gid) the probe connects as: `nobody` (65534).
pub const PROBE_UID: u32 = 65534;

/// The probe's destination: the metadata service's HTTP port.
pub const PROBE_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(100, 100, 100, 200),
    80,
));

/// How long the probe waits for its connection to be answered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of the probe's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused with a reset (`ECONNREFUSED`): the lockdown works.
    Reset,
    /// The connection was accepted: the unprivileged uid reaches the metadata service.
    Connected,
    /// No answer within [`PROBE_TIMEOUT`] (dropped, or the service is unreachable anyway).
    TimedOut,
    /// Another error (no route, …).
    Other,
}

impl Outcome {
    const fn code(self) -> u8 {
        match self {
            Outcome::Reset => 10,
            Outcome::Connected => 11,
            Outcome::TimedOut => 12,
            Outcome::Other => 13,
        }
    }

    fn from_code(code: Option<i32>) -> Outcome {
        [Outcome::Reset, Outcome::Connected, Outcome::TimedOut]
            .into_iter()
            .find(|o| Some(i32::from(o.code())) == code)
            .unwrap_or(Outcome::Other)
    }

    /// One word for `status`'s output.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Reset => "reset",
            Outcome::Connected => "connected",
            Outcome::TimedOut => "timed out",
            Outcome::Other => "failed (no route, or another error)",
        }
    }
}

/// The child's side (`lockdown probe-connect`): connects to `addr` and returns the exit
/// status that carries the [`Outcome`].
pub fn connect(addr: SocketAddr) -> u8 {
    let outcome = match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(_) => Outcome::Connected,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Reset,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::TimedOut,
        Err(_) => Outcome::Other,
    };
    outcome.code()
}

/// Runs the probe child as [`PROBE_UID`] and returns its [`Outcome`].
///
/// # Errors
/// When this binary cannot be found or run (or the uid cannot be changed: not root).
pub fn run() -> std::io::Result<Outcome> {
    let exe = std::env::current_exe()?;
    let status = Command::new(exe)
        .args(["lockdown", "probe-connect"])
        .uid(PROBE_UID)
        .gid(PROBE_UID)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(Outcome::from_code(status.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_round_trip() {
        for o in [
            Outcome::Reset,
            Outcome::Connected,
            Outcome::TimedOut,
            Outcome::Other,
        ] {
            assert_eq!(Outcome::from_code(Some(i32::from(o.code()))), o);
        }
        assert_eq!(Outcome::from_code(Some(0)), Outcome::Other);
        assert_eq!(Outcome::from_code(None), Outcome::Other);
    }

    #[test]
    fn a_closed_loopback_port_is_a_reset() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(connect(addr), Outcome::Connected.code());
        drop(listener);
        assert_eq!(connect(addr), Outcome::Reset.code());
    }
}
