//! The `env` command: print the environment an application needs to fetch the credentials
//! through the loopback listener (`[bridge] listen`) with its SDK's default credential chain,
//! unmodified.
//!
//! Two variables, neither of them secret:
//!
//! - [`ENV_CREDENTIALS_URI`]` = http://127.0.0.1:<port>/v1/credentials`, the port from
//!   `[bridge] listen` of the agent's configuration (read as `serve` reads it);
//! - [`ENV_METADATA_DISABLED`](crate::exec::ENV_METADATA_DISABLED)` = true`: the Python, Node,
//!   Java and Go SDKs' default chains try the ECS metadata service before the credentials URI,
//!   and would bypass the agent without it.
//!
//! as shell `export` lines, systemd `Environment=` lines or Dockerfile `ENV` lines.

use std::net::SocketAddrV4;
use std::path::Path;

use crate::config::{Config, Overrides, DEFAULT_CONFIG_PATH};
use crate::exec::ENV_METADATA_DISABLED;
use crate::logging::escape_line;
use crate::server::bridge::config::SUGGESTED_PORT;

/// The variable the SDKs' default credential chains read the credentials URI from.
pub const ENV_CREDENTIALS_URI: &str = "ALIBABA_CLOUD_CREDENTIALS_URI";

/// Exit status when the configuration cannot be read or `[bridge] listen` is unset
/// (`EX_CONFIG`, as `serve`'s configuration errors).
pub const EXIT_CONFIG: u8 = 78;

/// How `env` writes each `NAME=value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `export NAME=value`, for `eval "$(ecs-credential-agent env)"` or a profile script.
    Shell,
    /// `Environment=NAME=value`, for a unit's `[Service]` section or a drop-in.
    Systemd,
    /// `ENV NAME=value`, for a Dockerfile (the container must share the host's network to
    /// reach its loopback).
    Dockerfile,
}

/// Runs `env` with the configuration file `source` (`None`: [`DEFAULT_CONFIG_PATH`] if it
/// exists, as `serve` reads it) and returns the exit status: 0 after printing the lines,
/// [`EXIT_CONFIG`] after saying on stderr what is wrong with the configuration or how to set
/// `[bridge] listen`.
pub fn run(source: Option<&Path>, format: Format) -> u8 {
    match listen_address(source) {
        Ok(listen) => {
            print!("{}", render(listen, format));
            0
        }
        Err(why) => {
            eprintln!(
                "{}",
                escape_line(&format!("ecs-credential-agent env: {why}"))
            );
            EXIT_CONFIG
        }
    }
}

/// `[bridge] listen` of the configuration in `source`.
///
/// # Errors
/// The configuration is invalid, or the key is unset: what to do, in one line.
fn listen_address(source: Option<&Path>) -> Result<SocketAddrV4, String> {
    let config = Config::load(source, &Overrides::default())
        .map_err(|e| format!("{e}; {}", e.what_to_do()))?;
    config.bridge.listen.ok_or_else(|| {
        let file = source.map_or(DEFAULT_CONFIG_PATH.to_owned(), |p| p.display().to_string());
        // Without --config, a missing default file means the defaults apply: say so, rather
        // than send the reader to look for a key in a file that is not there.
        let missing = if source.is_none() && !Path::new(DEFAULT_CONFIG_PATH).exists() {
            " (no such file: the defaults apply; pass --config FILE for another)"
        } else {
            ""
        };
        format!(
            "[bridge] listen is not set in {file}{missing}, so the agent serves no credentials \
             URI; set it, e.g. listen = \"127.0.0.1:{SUGGESTED_PORT}\" under [bridge], and \
             restart the agent"
        )
    })
}

/// The lines for a listener on `listen`, each ending with a newline.
pub fn render(listen: SocketAddrV4, format: Format) -> String {
    let uri = format!("http://{listen}/v1/credentials");
    let prefix = match format {
        Format::Shell => "export ",
        Format::Systemd => "Environment=",
        Format::Dockerfile => "ENV ",
    };
    [
        (ENV_CREDENTIALS_URI, uri.as_str()),
        (ENV_METADATA_DISABLED, "true"),
    ]
    .iter()
    .map(|(name, value)| format!("{prefix}{name}={value}\n"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, SUGGESTED_PORT);

    #[test]
    fn each_format_has_the_uri_and_the_metadata_switch() {
        assert_eq!(
            render(LISTEN, Format::Shell),
            "export ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:17301/v1/credentials\n\
             export ALIBABA_CLOUD_ECS_METADATA_DISABLED=true\n"
        );
        assert_eq!(
            render(LISTEN, Format::Systemd),
            "Environment=ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:17301/v1/credentials\n\
             Environment=ALIBABA_CLOUD_ECS_METADATA_DISABLED=true\n"
        );
        assert_eq!(
            render(LISTEN, Format::Dockerfile),
            "ENV ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:17301/v1/credentials\n\
             ENV ALIBABA_CLOUD_ECS_METADATA_DISABLED=true\n"
        );
    }

    #[test]
    fn the_port_comes_from_the_listen_address() {
        let text = render(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9), Format::Shell);
        assert!(
            text.contains("=http://127.0.0.1:9/v1/credentials\n"),
            "{text}"
        );
    }

    fn listen_in(toml: &str) -> Result<SocketAddrV4, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        listen_address(Some(&path))
    }

    #[test]
    fn the_listen_address_is_read_from_the_file() {
        assert_eq!(
            listen_in("[bridge]\nlisten = \"127.0.0.1:17301\"\n"),
            Ok(LISTEN)
        );
    }

    #[test]
    fn unset_listen_says_what_to_set() {
        let e = listen_in("[server]\nallowed_uids = [1000]\n").unwrap_err();
        for needle in [
            "[bridge] listen is not set in ",
            "config.toml",
            "listen = \"127.0.0.1:17301\" under [bridge]",
        ] {
            assert!(e.contains(needle), "{needle:?} not in {e}");
        }
    }

    #[test]
    fn an_invalid_configuration_names_the_key() {
        let e = listen_in("[bridge]\nlisten = \"0.0.0.0:17301\"\n").unwrap_err();
        assert!(e.contains("[bridge] listen"), "{e}");
        assert!(e.contains("must be 127.0.0.1"), "{e}");
    }
}
