//! The one error type of this crate, named by what the application should do about it.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Longest agent-supplied message kept in an [`Error`], in characters.
const MAX_AGENT_MESSAGE_CHARS: usize = 300;

/// Why no credentials (or no health report) could be had from the agent.
///
/// Each variant says what to do:
///
/// | variant | typical cause | what to do |
/// | --- | --- | --- |
/// | [`AgentNotRunning`](Error::AgentNotRunning) | socket missing (not retried), connection refused (retried) | start `ecs-credential-agent`, check the socket path |
/// | [`PermissionDenied`](Error::PermissionDenied) | socket not accessible (`EACCES`), or the agent answered `403 Forbidden` | run as an allowed uid/gid, or allow this one in the agent's config |
/// | [`UnsafeSocketPath`](Error::UnsafeSocketPath) | a directory or link on the socket path belongs to another non-root user, or others may write to a directory on it ([`crate::path_check`]) | fix the path's ownership and modes, or use the default path |
/// | [`Unavailable`](Error::Unavailable) | the agent answered `503` (starting, no RAM role attached, metadata service unreachable, …) after the client's retries | read the message; retry later; check the RAM role |
/// | [`Protocol`](Error::Protocol) | timeout, unexpected status, malformed JSON, missing field, expired credentials served | a bug or version mismatch between client and agent; report it |
///
/// `Display` is one short line; the underlying cause, if any, is reachable through
/// [`source()`](std::error::Error::source). No message ever contains `AccessKeySecret` or
/// `SecurityToken`: the client never copies response bodies of successful requests into errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The agent's socket could not be reached: it does not exist, nothing listens on it, or it
    /// is not a socket. A refused connection was retried first; a missing socket was not (see
    /// the [retry table](crate#retries)).
    #[error("cannot connect to socket {}: is ecs-credential-agent running?", path.display())]
    AgentNotRunning {
        /// The socket path tried.
        path: PathBuf,
        /// The `connect(2)` error.
        #[source]
        source: io::Error,
    },
    /// This process may not have credentials: the socket refused the connection (`EACCES`) or
    /// the agent answered `403 Forbidden` for this caller's uid/gid.
    #[error("permission denied by ecs-credential-agent at {}: {message}", path.display())]
    PermissionDenied {
        /// The socket path tried.
        path: PathBuf,
        /// The agent's `Message`, or a description of the `connect(2)` failure.
        message: String,
        /// The `connect(2)` error, when the refusal came from the file system.
        #[source]
        source: Option<io::Error>,
    },
    /// The socket path could lead to another user's fake agent, so the client did not connect:
    /// see [`crate::path_check`] for the rule. Not retried.
    #[error("refusing the socket path {}: {source}", path.display())]
    UnsafeSocketPath {
        /// The socket path tried.
        path: PathBuf,
        /// Which component is unsafe, and why.
        #[source]
        source: crate::path_check::UnsafeSocketPath,
    },
    /// The agent answered `503` on every try: it has no valid credentials to give right now.
    #[error("credentials unavailable from ecs-credential-agent ({code}): {message}")]
    Unavailable {
        /// The agent's stable error code, e.g. `CredentialsUnavailable` or `TooManyConnections`.
        code: String,
        /// The agent's reason, e.g. "agent is starting: no credentials fetched yet".
        message: String,
    },
    /// The agent's answer was not what this client understands, or did not come in time.
    #[error("unexpected response from ecs-credential-agent: {what}")]
    Protocol {
        /// What was wrong, in words (never response data that could hold a secret).
        what: String,
        /// The underlying error, if any (I/O, HTTP, timeout).
        #[source]
        source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    },
}

impl Error {
    /// A [`Protocol`](Error::Protocol) error without an underlying cause.
    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Error::Protocol {
            what: what.into(),
            source: None,
        }
    }

    /// A [`Protocol`](Error::Protocol) error caused by `source`.
    pub(crate) fn protocol_from(
        what: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Error::Protocol {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Whether trying again shortly may help, because a restarting or starting agent explains
    /// the failure: a socket nobody listens on (`ECONNREFUSED`) or a `503`. The
    /// [retry table](crate#retries) says why each case is retried or not.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::AgentNotRunning { source, .. } => {
                source.kind() == io::ErrorKind::ConnectionRefused
            }
            Error::Unavailable { .. } => true,
            Error::PermissionDenied { .. }
            | Error::UnsafeSocketPath { .. }
            | Error::Protocol { .. } => false,
        }
    }
}

/// An agent-supplied message, made safe to embed in a one-line error: control characters and
/// [format characters](is_format) become spaces and the length is capped at
/// [`MAX_AGENT_MESSAGE_CHARS`].
pub(crate) fn sanitize_agent_message(message: &str) -> String {
    let mut out: String = message
        .chars()
        .take(MAX_AGENT_MESSAGE_CHARS)
        .map(|c| {
            if c.is_control() || is_format(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    if message.chars().count() > MAX_AGENT_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// Whether `c` is a Unicode format character (general category `Cf`, Unicode 15) or a line or
/// paragraph separator: invisible characters that reorder the text around them on a terminal
/// (bidirectional overrides, isolates and marks), hide text (tag characters) or break lines.
/// Public so that the agent's log escaping (`logging::escape`) refuses the same set.
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}'
        | '\u{890}'..='\u{891}' | '\u{8E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// A timeout, as an error value to put behind [`Error::Protocol`]'s `source`.
#[derive(Debug)]
pub(crate) struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out")
    }
}

impl StdError for TimedOut {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_messages_are_single_line_and_capped() {
        assert_eq!(sanitize_agent_message("a\nb\tc"), "a b c");
        let long = "x".repeat(1000);
        let got = sanitize_agent_message(&long);
        assert_eq!(got.chars().count(), MAX_AGENT_MESSAGE_CHARS + 1);
        assert!(got.ends_with('…'));
    }

    /// Bidirectional overrides, isolates and marks, tag characters (invisible text), zero-width
    /// and line-separator characters cannot reorder or hide what `get` prints.
    #[test]
    fn agent_messages_lose_format_characters() {
        let planted = "uid\u{202e}0001 \u{2066}x\u{2069}\u{61c}\u{e0041}\u{200b}\u{2028}\u{ad}end";
        let got = sanitize_agent_message(planted);
        assert_eq!(got, "uid 0001  x      end", "{got:?}");
        assert!(!got.chars().any(is_format), "{got:?}");
    }

    #[test]
    fn only_restart_like_failures_are_transient() {
        let path = PathBuf::from("/x.sock");
        let not_running = |kind| Error::AgentNotRunning {
            path: path.clone(),
            source: io::Error::from(kind),
        };
        // A missing socket means no agent (module docs of the crate, "Retries").
        assert!(!not_running(io::ErrorKind::NotFound).is_transient());
        assert!(not_running(io::ErrorKind::ConnectionRefused).is_transient());
        assert!(!not_running(io::ErrorKind::InvalidInput).is_transient());
        assert!(Error::Unavailable {
            code: "CredentialsUnavailable".into(),
            message: "starting".into()
        }
        .is_transient());
        assert!(!Error::protocol("bad").is_transient());
        assert!(!Error::PermissionDenied {
            path,
            message: "no".into(),
            source: None
        }
        .is_transient());
    }
}
