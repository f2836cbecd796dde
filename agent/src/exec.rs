//! The `exec` command: fetch the credentials from a running agent, then replace this process
//! with a command that finds them in its environment, for short jobs and for programs that
//! read only the environment.
//!
//! The command gets [`ENV_ACCESS_KEY_ID`], [`ENV_ACCESS_KEY_SECRET`], [`ENV_SECURITY_TOKEN`]
//! (the variables the Alibaba Cloud SDKs and the aliyun CLI read first) and
//! [`ENV_METADATA_DISABLED`]` = true` (so an SDK whose credentials run out does not fall back to
//! the metadata service behind the agent's back), on top of the rest of this process's
//! environment. The credentials are not refreshed: a command that runs longer than their
//! remaining lifetime fails then, which is why `exec` refuses to start when less than
//! `--min-lifetime` is left ([`DEFAULT_MIN_LIFETIME`]).
//!
//! The process is replaced (`execvp`): the command keeps this process's pid, and its exit
//! status and signals are the caller's to see, with no `exec` in between. Before the
//! replacement `std`'s `exec` empties the signal mask and restores `SIGPIPE` to its default
//! (the Rust runtime ignores it), so the command starts as a shell would start it.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::credentials::format_utc;
use crate::time::{SystemClock, TimeSource};

/// `--min-lifetime` by default: 15 minutes, the window in which the Python and Node SDKs
/// already treat credentials as stale.
pub const DEFAULT_MIN_LIFETIME: Duration = Duration::from_secs(900);

/// Exit status when the credentials expire in less than `--min-lifetime` (`EX_TEMPFAIL`: the
/// agent fetches new ones before they expire; try again later).
pub const EXIT_TOO_LITTLE_LIFETIME: u8 = 75;
/// Exit status when the command was found but could not be run (not executable, a
/// directory…), as a shell's.
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit status when the command was not found, as a shell's.
pub const EXIT_NOT_FOUND: u8 = 127;

/// The AccessKeyId's variable.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// The AccessKeySecret's variable.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// The SecurityToken's variable.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
/// `true` keeps the SDKs' default credential chains away from the metadata service.
pub const ENV_METADATA_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";

/// What `exec` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--socket`: the agent's socket (default: as `get`).
    pub socket: Option<PathBuf>,
    /// `--min-lifetime`: refuse when the credentials expire sooner than this.
    pub min_lifetime: Duration,
    /// The command and its arguments; never empty (the command line requires one).
    pub command: Vec<OsString>,
}

/// Runs `exec`. Returns only when the command could not be started: the exit status, after a
/// message on stderr (`get`'s statuses for the agent's errors, [`EXIT_TOO_LITTLE_LIFETIME`],
/// [`EXIT_NOT_FOUND`], [`EXIT_CANNOT_EXECUTE`]). Never prints a secret.
pub fn run(options: Options) -> u8 {
    let Some((program, args)) = options.command.split_first() else {
        eprintln!("ecs-credential-agent exec: no command given");
        return EXIT_NOT_FOUND;
    };
    let creds = match crate::get::fetch("exec", options.socket) {
        Ok(c) => c,
        Err(status) => return status,
    };
    if let Err(why) = check_lifetime(SystemClock.now(), creds.expiration, options.min_lifetime) {
        eprintln!("ecs-credential-agent exec: {why}");
        return EXIT_TOO_LITTLE_LIFETIME;
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env(ENV_ACCESS_KEY_ID, &creds.access_key_id)
        .env(
            ENV_ACCESS_KEY_SECRET,
            creds.access_key_secret.expose_secret(),
        )
        .env(ENV_SECURITY_TOKEN, creds.security_token.expose_secret())
        .env(ENV_METADATA_DISABLED, "true");
    drop(creds);
    // Returns only on failure.
    let error = command.exec();
    let (status, what) = exec_failure(program, &error);
    eprintln!("ecs-credential-agent exec: {}: {what}", shown(program));
    status
}

/// Whether credentials expiring at `expiration` have at least `min_lifetime` left at `now`.
///
/// # Errors
/// When they do not: one line saying when they expire, how long that is, and what to do.
pub fn check_lifetime(
    now: SystemTime,
    expiration: OffsetDateTime,
    min_lifetime: Duration,
) -> Result<(), String> {
    let now = OffsetDateTime::from(now);
    let left = expiration - now;
    if left >= min_lifetime {
        return Ok(());
    }
    let when = if left.is_positive() {
        format!(
            "expire at {} (in {})",
            format_utc(expiration),
            human(left.unsigned_abs())
        )
    } else {
        format!("expired at {}", format_utc(expiration))
    };
    Err(format!(
        "the credentials {when}, less than --min-lifetime {} s: the command would lose them \
         while it runs. The agent fetches new ones before they expire: try again later \
         (`ecs-credential-agent get` shows the current Expiration), or pass a smaller \
         --min-lifetime if the command finishes sooner",
        min_lifetime.as_secs()
    ))
}

/// The exit status and the shell-like reason for a failed `execvp` of `program`.
fn exec_failure(program: &OsStr, error: &std::io::Error) -> (u8, String) {
    let has_slash = program.as_encoded_bytes().contains(&b'/');
    match error.kind() {
        std::io::ErrorKind::NotFound if has_slash => {
            (EXIT_NOT_FOUND, "No such file or directory".to_owned())
        }
        std::io::ErrorKind::NotFound => (EXIT_NOT_FOUND, "command not found".to_owned()),
        std::io::ErrorKind::PermissionDenied => {
            (EXIT_CANNOT_EXECUTE, "Permission denied".to_owned())
        }
        _ => (EXIT_CANNOT_EXECUTE, error.to_string()),
    }
}

/// `program` for a message: lossy UTF-8, control characters escaped.
fn shown(program: &OsStr) -> String {
    program
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `1 h 2 min 3 s`, `4 min 5 s`, `6 s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, s) => format!("{h} h {m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const EXPIRATION: OffsetDateTime = time::macros::datetime!(2024-11-08 09:44:50 UTC);

    fn at_secs_before_expiration(secs: i64) -> SystemTime {
        let t = EXPIRATION.unix_timestamp() - secs;
        UNIX_EPOCH + Duration::from_secs(t as u64)
    }

    #[test]
    fn enough_lifetime_passes_at_and_above_the_minimum() {
        let min = DEFAULT_MIN_LIFETIME;
        assert!(check_lifetime(at_secs_before_expiration(900), EXPIRATION, min).is_ok());
        assert!(check_lifetime(at_secs_before_expiration(3600), EXPIRATION, min).is_ok());
        assert!(check_lifetime(at_secs_before_expiration(0), EXPIRATION, Duration::ZERO).is_ok());
    }

    #[test]
    fn too_little_lifetime_says_when_and_what_to_do() {
        let e = check_lifetime(
            at_secs_before_expiration(899),
            EXPIRATION,
            DEFAULT_MIN_LIFETIME,
        )
        .unwrap_err();
        for needle in [
            "expire at 2024-11-08T09:44:50Z (in 14 min 59 s)",
            "--min-lifetime 900 s",
            "try again later",
        ] {
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
    }

    #[test]
    fn already_expired_credentials_say_so() {
        let e = check_lifetime(
            at_secs_before_expiration(-5),
            EXPIRATION,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("expired at 2024-11-08T09:44:50Z"), "{e}");
    }

    #[test]
    fn exec_failures_map_to_the_shell_s_statuses() {
        let not_found = std::io::Error::from(std::io::ErrorKind::NotFound);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            exec_failure(OsStr::new("nope"), &not_found),
            (127, "command not found".to_owned())
        );
        assert_eq!(
            exec_failure(OsStr::new("./nope"), &not_found),
            (127, "No such file or directory".to_owned())
        );
        assert_eq!(
            exec_failure(OsStr::new("/etc"), &denied),
            (126, "Permission denied".to_owned())
        );
    }

    #[test]
    fn control_characters_in_the_program_name_are_escaped() {
        assert_eq!(shown(OsStr::new("a\nb\u{1b}")), "a\\nb\\u{1b}");
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(human(Duration::from_secs(6)), "6 s");
        assert_eq!(human(Duration::from_secs(245)), "4 min 5 s");
        assert_eq!(human(Duration::from_secs(3723)), "1 h 2 min 3 s");
    }
}
