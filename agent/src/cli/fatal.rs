//! The one line a fatal error prints on stderr before the process exits:
//!
//! ```text
//! ecs-credential-agent: <what failed>: <cause>; <what to do>
//! ```
//!
//! Configuration errors (read before logging starts) and start-up failures (after) look the
//! same, plain and untimestamped, whatever the log style; the exit status follows
//! ([`AgentError::exit_status`]). Every value in the line is escaped like a log value, so a
//! path or an OS message cannot end the line or reach a terminal as an escape sequence.

use crate::daemon::AgentError;
use crate::logging::escape_line;
use crate::server::bridge::BridgeBindError;
use crate::server::SocketBindError;

/// The line for `e` (without the trailing newline): what failed and why ([`AgentError`]'s
/// message, which names the key, path or address), then what to do about it.
pub(crate) fn line(e: &AgentError) -> String {
    // The socket errors say what is wrong with the path, not that the agent could not listen.
    let failed = match e {
        AgentError::Bind(_) => "cannot listen on the socket: ",
        _ => "",
    };
    escape_line(&format!(
        "ecs-credential-agent: {failed}{e}; {}",
        what_to_do(e)
    ))
}

/// What the operator can do about `e`, in a few words that name the key or flag to change.
fn what_to_do(e: &AgentError) -> &'static str {
    match e {
        AgentError::Config(c) => c.what_to_do(),
        AgentError::Bind(SocketBindError::AlreadyServing(_)) => {
            "stop the other agent first (systemctl stop ecs-credential-agent), or give this one \
             another [server] socket_path (--socket)"
        }
        AgentError::Bind(SocketBindError::UnknownGroup { .. }) => {
            "set [server] socket_group to a group that exists on this system"
        }
        AgentError::Bind(_) => {
            "fix the directory named (root-owned, not writable by group or others), or choose \
             another [server] socket_path (--socket)"
        }
        AgentError::Activation(_) => {
            "fix the .socket unit: exactly one ListenStream= with a socket path"
        }
        AgentError::Metadata(_) => "check [metadata] endpoint (--endpoint)",
        AgentError::MetricsBind(_) => {
            "set [metrics] listen to a free loopback address, or leave it unset"
        }
        AgentError::BridgeBind(BridgeBindError::Bind { .. }) => {
            "set [bridge] listen to a free port on 127.0.0.1, or leave it unset"
        }
        AgentError::BridgeBind(BridgeBindError::SockDiag(_)) => {
            "allow AF_NETLINK (systemd RestrictAddressFamilies=), or leave [bridge] listen unset"
        }
        AgentError::Harden(_) => {
            "run the agent where setrlimit(2) and prctl(2) are allowed (the shipped systemd \
             unit allows them)"
        }
        AgentError::Io { .. } => "see the cause above; start the agent again once it is fixed",
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Config;

    /// `ecs-credential-agent: <what failed>: <cause>; <what to do>`, one line.
    fn assert_one_styled_line(line: &str) {
        assert!(line.starts_with("ecs-credential-agent: "), "{line}");
        assert!(!line.contains('\n'), "one line: {line:?}");
        let (failed, todo) = line.rsplit_once("; ").expect("what to do after '; '");
        assert!(failed.matches(": ").count() >= 2, "{line}");
        assert!(!todo.is_empty(), "{line}");
    }

    #[test]
    fn a_configuration_error_is_one_line_naming_every_key() {
        let text = "[server]\nsocket_mode = 600\n[log]\nlevel = \"warning\"\n";
        let e = AgentError::Config(Config::parse("/etc/x.toml", text).unwrap_err());
        let shown = line(&e);
        assert_one_styled_line(&shown);
        assert!(
            shown.starts_with(
                "ecs-credential-agent: invalid configuration in /etc/x.toml: [log] level: \"warning\" is not a log level"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("; [server] socket_mode: expected a quoted octal string, got 600"),
            "{shown}"
        );
        assert!(shown.ends_with("and start the agent again"), "{shown}");
        assert_eq!(e.exit_status(), 78);
    }

    #[test]
    fn a_start_up_failure_has_the_same_style() {
        let e = AgentError::Bind(SocketBindError::InspectParent {
            path: PathBuf::from("/nonexistent\n/x"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        let shown = line(&e);
        assert_one_styled_line(&shown);
        assert!(
            shown.starts_with(
                r#"ecs-credential-agent: cannot listen on the socket: socket directory "/nonexistent\n/x" is unusable: "#
            ),
            "{shown}"
        );
        assert!(shown.contains("[server] socket_path (--socket)"), "{shown}");
        let busy = AgentError::Bind(SocketBindError::AlreadyServing(PathBuf::from(
            "/run/a.sock",
        )));
        assert_one_styled_line(&line(&busy));
        assert_eq!(busy.exit_status(), 69);
    }
}
