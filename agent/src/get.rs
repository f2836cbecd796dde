//! The `get` command: fetch the credentials from a running agent through the client library
//! and print them, for scripts.

use std::io::Write;
use std::path::PathBuf;

use ecs_credential_client::{Credentials, Error};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::credentials::{format_utc, ResponseBody};

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The credentials-URI JSON shape (`Code`, `AccessKeyId`, `AccessKeySecret`,
    /// `SecurityToken`, `Expiration`, `LastUpdated`): the socket's body byte for byte, then a
    /// newline.
    Json,
    /// `export` lines with the variable names the Alibaba Cloud SDKs and CLI read:
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`,
    /// `ALIBABA_CLOUD_SECURITY_TOKEN`.
    Env,
    /// The aliyun CLI's External-mode answer (`aliyun configure set --mode External
    /// --process-command "ecs-credential-agent get --format aliyun-cli"`): one JSON object,
    /// `{"mode":"StsToken","access_key_id":…,"access_key_secret":…,"sts_token":…,"expiration":…}`,
    /// then a newline. `expiration` is RFC 3339 UTC (`2024-11-08T09:44:50Z`); the CLI itself
    /// ignores it (docs/aliyun-cli.md).
    AliyunCli,
}

/// The aliyun CLI's External-mode JSON: the CLI decodes the command's stdout into its profile
/// (aliyun-cli `config/profile.go`: field names are the profile's JSON keys, and `mode` must be
/// `StsToken` for an AccessKey pair with a SecurityToken; docs/aliyun-cli.md).
#[derive(serde::Serialize)]
struct AliyunCliProfile<'a> {
    mode: &'static str,
    access_key_id: &'a str,
    access_key_secret: &'a str,
    sts_token: &'a str,
    expiration: &'a str,
}

/// Exit status when the agent is not running or has no credentials (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status when the agent answered something unexpected (`EX_PROTOCOL`).
pub const EXIT_PROTOCOL: u8 = 76;
/// Exit status when the agent refused this caller (`EX_NOPERM`).
pub const EXIT_NOPERM: u8 = 77;
/// Exit status when the socket path could lead to another user's fake agent, so `get` did not
/// connect (`EX_CONFIG`: the path, or the directories on it, must be fixed;
/// [`ecs_credential_client::path_check`]).
pub const EXIT_UNSAFE_SOCKET_PATH: u8 = 78;

/// Runs `get`; prints the credentials to stdout or an error to stderr, and returns the exit
/// status.
pub fn run(socket: Option<PathBuf>, format: Format) -> u8 {
    let creds = match fetch("get", socket) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let text = render(&creds, format);
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return 1;
    }
    0
}

/// Fetches the credentials from the agent at `socket` (else `$ECS_CREDENTIAL_AGENT_SOCKET`,
/// else the default path) through the client library, for the command named `command`.
///
/// # Errors
/// The exit status to return, after printing `ecs-credential-agent COMMAND: <what failed>` on
/// stderr: 1 when the client cannot start, else [`EXIT_UNAVAILABLE`], [`EXIT_NOPERM`],
/// [`EXIT_UNSAFE_SOCKET_PATH`] or [`EXIT_PROTOCOL`].
pub(crate) fn fetch(command: &str, socket: Option<PathBuf>) -> Result<Credentials, u8> {
    let mut builder = ecs_credential_client::blocking::Client::builder();
    if let Some(path) = socket {
        builder = builder.socket_path(path);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ecs-credential-agent {command}: cannot start the client: {e}");
            return Err(1);
        }
    };
    client.credentials().map_err(|e| {
        eprintln!("ecs-credential-agent {command}: {}", explain(&e));
        exit_status(&e)
    })
}

fn exit_status(e: &Error) -> u8 {
    match e {
        Error::AgentNotRunning { .. } | Error::Unavailable { .. } => EXIT_UNAVAILABLE,
        Error::PermissionDenied { .. } => EXIT_NOPERM,
        Error::UnsafeSocketPath { .. } => EXIT_UNSAFE_SOCKET_PATH,
        _ => EXIT_PROTOCOL,
    }
}

/// The error as `get` prints it. A `403` already names the refused uid and gid and the keys
/// that would allow them (the agent's message); a socket this process may not open (`EACCES`)
/// gets the same: this process's uid and gid, and the keys to change.
fn explain(e: &Error) -> String {
    match e {
        Error::PermissionDenied {
            source: Some(_), ..
        } => format!(
            "{e}; this process is uid {} (gid {}): the agent's [server] socket_group and \
             socket_mode decide who may open the socket, [server] allowed_uids and \
             allowed_gids who is served",
            nix::unistd::geteuid(),
            nix::unistd::getegid()
        ),
        _ => e.to_string(),
    }
}

/// The text to print; zeroized when dropped, since it holds the secrets.
fn render(c: &Credentials, format: Format) -> Zeroizing<String> {
    match format {
        Format::Json => {
            let expiration = format_utc(c.expiration);
            let last_updated = c.last_updated.map(format_utc);
            let body = ResponseBody {
                code: "Success",
                access_key_id: &c.access_key_id,
                access_key_secret: c.access_key_secret.expose_secret(),
                security_token: c.security_token.expose_secret(),
                expiration: &expiration,
                last_updated: last_updated.as_deref(),
            };
            let mut out = Zeroizing::new(serde_json::to_string(&body).expect("serialise strings"));
            out.push('\n');
            out
        }
        Format::AliyunCli => {
            let expiration = format_utc(c.expiration);
            let profile = AliyunCliProfile {
                mode: "StsToken",
                access_key_id: &c.access_key_id,
                access_key_secret: c.access_key_secret.expose_secret(),
                sts_token: c.security_token.expose_secret(),
                expiration: &expiration,
            };
            let mut out =
                Zeroizing::new(serde_json::to_string(&profile).expect("serialise strings"));
            out.push('\n');
            out
        }
        Format::Env => Zeroizing::new(format!(
            "export ALIBABA_CLOUD_ACCESS_KEY_ID={}\nexport ALIBABA_CLOUD_ACCESS_KEY_SECRET={}\nexport ALIBABA_CLOUD_SECURITY_TOKEN={}\n",
            shell_quote(&c.access_key_id),
            Zeroizing::new(shell_quote(c.access_key_secret.expose_secret())).as_str(),
            Zeroizing::new(shell_quote(c.security_token.expose_secret())).as_str(),
        )),
    }
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 11, item 7): a socket this process may not open said only "run as a
    /// user the agent allows".
    #[test]
    fn a_socket_this_process_may_not_open_names_its_ids_and_the_keys() {
        let e = Error::PermissionDenied {
            path: PathBuf::from("/run/a.sock"),
            message: "this process may not open the socket".to_owned(),
            source: Some(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        let text = explain(&e);
        let ids = format!(
            "uid {} (gid {})",
            nix::unistd::geteuid(),
            nix::unistd::getegid()
        );
        for needle in [ids.as_str(), "socket_group", "socket_mode", "allowed_uids"] {
            assert!(text.contains(needle), "{needle:?} not in {text:?}");
        }
        let refused = Error::PermissionDenied {
            path: PathBuf::from("/run/a.sock"),
            message: "caller uid 7 (gid 7) is not allowed".to_owned(),
            source: None,
        };
        assert_eq!(explain(&refused), refused.to_string());
    }

    fn sample() -> Credentials {
        Credentials {
            access_key_id: "STS.id\"1".to_owned(),
            access_key_secret: "secret'2".into(),
            security_token: "token\\3".into(),
            expiration: time::macros::datetime!(2024-11-08 09:44:50 UTC),
            last_updated: None,
        }
    }

    /// The aliyun CLI reads exactly these keys (`config/profile.go`, `Profile`'s JSON tags) and
    /// accepts only the mode spelled `StsToken` in its `switch`.
    #[test]
    fn aliyun_cli_format_has_the_profile_keys_and_the_sts_token_mode() {
        let text = render(&sample(), Format::AliyunCli);
        assert!(text.ends_with("}\n"), "{:?}", text.as_str());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected = serde_json::json!({
            "mode": "StsToken",
            "access_key_id": "STS.id\"1",
            "access_key_secret": "secret'2",
            "sts_token": "token\\3",
            "expiration": "2024-11-08T09:44:50Z",
        });
        assert_eq!(v, expected);
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
        assert_eq!(shell_quote("plain"), "'plain'");
    }
}
