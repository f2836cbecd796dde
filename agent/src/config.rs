//! Configuration: the TOML file and the command-line flags, parsed into each module's own
//! section, every bad key reported at once.
//!
//! This module only parses. Each section is declared once by the module that uses it
//! (`settings::section!`): its keys, types, defaults, ranges, and whether a reload
//! applies them. The sections of the file are listed once, in [`Config`]'s declaration below;
//! parsing, unknown-key suggestions, reload classification ([`Config::keep_restart_keys`]), the
//! reference table ([`Config::reference`], the README's "Configuration" table) and the fuzz
//! target's bounds ([`Config::bounded_values`]) all follow from those declarations.

use std::path::{Path, PathBuf};

use crate::logging::LogFormat;
use crate::settings::{self, Reference, Section};

/// Default configuration file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ecs-credential-agent/config.toml";

/// Lists the file's sections once: the [`Config`] struct and everything done section by
/// section follow from the list.
macro_rules! sections {
    ($( $(#[doc = $doc:literal])* $field:ident: $ty:ty, )*) => {
        /// The whole validated configuration, one typed section per module.
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            /// `[[profile]]`, in file order (an array of tables, read by
            /// [`parse_profiles`](crate::policy::profile::parse_profiles); live on reload).
            pub profile_list: Vec<crate::policy::Spec>,
        }

        impl Config {
            /// The section names, in the order the file's documentation lists them.
            pub fn section_names() -> Vec<&'static str> {
                vec![$( <$ty as Section>::NAME, )*]
            }

            /// The sections that declare a key named `key`, in declaration order.
            pub fn sections_declaring(key: &str) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(
                    if <$ty as Section>::keys().iter().any(|k| k.name == key) {
                        out.push(<$ty as Section>::NAME);
                    }
                )*
                out
            }

            /// Reads section `name` from `table`: `None` when no section has that name.
            fn read_section(&mut self, name: &str, table: &toml::Table) -> Option<Vec<String>> {
                $(
                    if name == <$ty as Section>::NAME {
                        return Some(settings::read(&mut self.$field, table));
                    }
                )*
                None
            }

            /// Keys that differ between `old` and `self` and need a restart (`[section] key`,
            /// declaration order); each is reset to its value in `old`, so `self` then holds
            /// only what a reload may apply.
            pub fn keep_restart_keys(&mut self, old: &Config) -> Vec<String> {
                let mut changed = Vec::new();
                $( changed.extend(settings::keep_restart_keys(&old.$field, &mut self.$field)); )*
                changed
            }

            /// The configuration as a TOML document that [`Config::parse`] reads back to the
            /// same value (unset keys are left out).
            pub fn to_toml(&self) -> String {
                let mut parts = vec![$( settings::render(&self.$field), )*];
                parts.extend(self.profile_list.iter().map(crate::policy::profile::render));
                parts.join("\n")
            }

            /// Every key with its default, reload behaviour and documentation: the README's
            /// "Configuration" table and the example file are checked against it.
            pub fn reference() -> Vec<Reference> {
                let mut rows = Vec::new();
                $( rows.extend(settings::reference::<$ty>()); )*
                rows
            }

            /// Every integer key's value with its declared range, `(key, value, min, max)`.
            pub fn bounded_values(&self) -> Vec<(String, u64, u64, u64)> {
                let mut out = Vec::new();
                $( out.extend(settings::bounded_values(&self.$field)); )*
                out
            }
        }
    };
}

sections! {
    /// `[metadata]`.
    metadata: crate::sources::metadata::config::Config,
    /// `[server]`.
    server: crate::server::config::Config,
    /// `[credentials]`.
    credentials: crate::credentials::policy::RefreshPolicy,
    /// `[log]`.
    log: crate::logging::Config,
    /// `[systemd]`.
    systemd: crate::systemd::config::Config,
    /// `[metrics]`.
    metrics: crate::metrics::config::Config,
    /// `[bridge]`.
    bridge: crate::server::bridge::config::Config,
    /// `[profiles]`.
    profiles: crate::policy::config::Config,
    /// `[sts]`.
    sts: crate::sources::sts::config::Config,
}

/// A configuration that could not be used: every problem found, each naming its key.
///
/// `Display` is one line: `invalid configuration in FILE: [section] key: problem; [section]
/// key: problem` (each problem starts with the key it names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration in {source_name}: {}", .problems.join("; "))]
pub struct ConfigError {
    /// Where the configuration came from (a file path, or "command line").
    pub source_name: String,
    /// One line per problem, e.g. `[server] max_connections: expected an integer from 1 to 1000000, got "many"`.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// What the operator can do about it, for the end of a one-line message: check the file's
    /// path when it could not be read, correct the flag when a command-line value is wrong
    /// (`source_name` starts with `--`), else correct the keys named.
    pub fn what_to_do(&self) -> &'static str {
        if self
            .problems
            .iter()
            .all(|p| p.starts_with("cannot read the file"))
        {
            "check the file's path and permissions (--config FILE) and start the agent again"
        } else if self.source_name.starts_with("--") {
            "correct the flag named (--help) and start the agent again"
        } else {
            "correct the keys named (README, \"Configuration\") and start the agent again"
        }
    }
}

/// Values given on the command line; each one overrides the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--role-name`.
    pub role_name: Option<String>,
    /// `--socket`.
    pub socket_path: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads `path` (or [`DEFAULT_CONFIG_PATH`] when `None`; a missing default file means all
    /// defaults, a missing explicit file is an error), then applies `overrides`.
    ///
    /// # Errors
    /// [`ConfigError`] listing every unreadable, unknown or invalid key at once.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let unreadable = |name: String, e: std::io::Error| ConfigError {
            source_name: name,
            problems: vec![format!("cannot read the file: {e}")],
        };
        let (name, text) = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => (p.display().to_string(), t),
                Err(e) => return Err(unreadable(p.display().to_string(), e)),
            },
            None => match std::fs::read_to_string(DEFAULT_CONFIG_PATH) {
                Ok(t) => (DEFAULT_CONFIG_PATH.to_owned(), t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (DEFAULT_CONFIG_PATH.to_owned(), String::new())
                }
                Err(e) => return Err(unreadable(DEFAULT_CONFIG_PATH.to_owned(), e)),
            },
        };
        let mut config = Config::parse(&name, &text)?;
        config.apply(overrides).map_err(|problems| ConfigError {
            source_name: "command line".to_owned(),
            problems,
        })?;
        Ok(config)
    }

    /// Parses and validates a TOML document; `source_name` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem: TOML syntax, unknown sections or keys, wrong
    /// types, values out of range.
    pub fn parse(source_name: &str, text: &str) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: source_name.to_owned(),
            problems,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(vec![toml_problem(text, &e)]))?;
        let mut config = Config::default();
        let mut problems = Vec::new();
        for (section, value) in &table {
            if section == PROFILE_ARRAY {
                match crate::policy::profile::parse_profiles(value) {
                    Ok(list) => config.profile_list = list,
                    Err(found) => problems.extend(found),
                }
                continue;
            }
            let Some(keys) = value.as_table() else {
                problems.push(key_outside_sections(section));
                continue;
            };
            match config.read_section(section, keys) {
                Some(found) => problems.extend(found),
                None => {
                    let known = Config::section_names();
                    problems.push(format!(
                        "[{section}]: unknown section (known: {}){}",
                        known.join(", "),
                        settings::did_you_mean(section, &known)
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }

    /// Applies the command-line flags, each read by its key's own declaration.
    fn apply(&mut self, o: &Overrides) -> Result<(), Vec<String>> {
        use toml::Value;
        let text = |s: &str| Value::String(s.to_owned());
        let results = [
            o.endpoint.as_deref().map(|e| {
                settings::set_from_flag(&mut self.metadata, "endpoint", "--endpoint", text(e))
            }),
            o.role_name.as_deref().map(|r| {
                settings::set_from_flag(&mut self.metadata, "role_name", "--role-name", text(r))
            }),
            o.socket_path.as_deref().map(|p| {
                let p = Value::String(p.display().to_string());
                settings::set_from_flag(&mut self.server, "socket_path", "--socket", p)
            }),
            o.log_level
                .as_deref()
                .map(|l| settings::set_from_flag(&mut self.log, "level", "--log-level", text(l))),
        ];
        if let Some(f) = o.log_format {
            self.log.format = f;
        }
        let problems: Vec<String> = results
            .into_iter()
            .flatten()
            .filter_map(Result::err)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// The name of the array of tables `[[profile]]`.
const PROFILE_ARRAY: &str = "profile";

/// The problem for `key = …` written before any `[section]` line: the section it belongs in
/// (found in the sections' declarations), else the sections there are.
fn key_outside_sections(key: &str) -> String {
    let owners = Config::sections_declaring(key);
    if owners.is_empty() {
        let known = Config::section_names();
        return format!(
            "{key}: a key outside any section, and no section has it; keys go below a section \
             line ({}){}",
            known
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", "),
            settings::did_you_mean(key, &known)
        );
    }
    let owners: Vec<String> = owners.iter().map(|s| format!("[{s}]")).collect();
    format!(
        "{key}: a key outside its section; it belongs in {}: move it below the {} line",
        owners.join(" or "),
        owners[0]
    )
}

/// A TOML syntax error with its line and column (1-based).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "not valid TOML at line {line}, column {column}: {}",
                e.message()
            )
        }
        None => format!("not valid TOML: {}", e.message()),
    }
}

#[cfg(test)]
mod tests;
