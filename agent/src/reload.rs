//! `SIGHUP`: reload the configuration from the same file and flags, without dropping
//! connections or cached credentials.
//!
//! What a reload applies follows from each key's declaration ([`Reload`]; the README's
//! configuration table has a column for it):
//!
//! | key | on reload |
//! |---|---|
//! | `[log]` keys declared [`Reload::Live`] (`level`) | applied at once (unless `RUST_LOG` is set, which keeps precedence) |
//! | `[server]` keys declared [`Reload::Live`] | applied to connections accepted from then on (an open connection keeps the values it was accepted with, except the rules: `allowed_uids` and `allowed_gids` judge it again at its next request) |
//! | `[profiles] unmatched` and every `[[profile]]` | applied at once, to open connections too: each is judged again at its next request; refreshers whose (role, policy, duration) is unchanged are kept ([`profiles::Registry::reconcile`]) |
//! | keys declared [`Reload::Restart`] | kept; a warning names each changed key, which needs a restart |
//!
//! Only `[log]`, `[server]` and `[profiles]` have live keys; a test fails when a key elsewhere
//! is declared live without this module applying it. A `policy_file` is read again at each
//! reload, and user and group names resolved again. The server configuration and the profiles
//! are published together ([`Published`]), so a connection sees both from the same reload.
//!
//! An invalid file is rejected as a whole: the error is returned (the daemon logs it) and the
//! configuration in force does not change. So is a file with profiles when the agent runs
//! without a profile source, and one whose process selectors (`unit`, `exe`, `exe_sha256`)
//! the agent lacks the privilege for ([`probe`](crate::policy::probe)).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, ConfigError, Overrides};
use crate::logging::LogReload;
use crate::policy::probe;
use crate::profiles::{self, Registry};
use crate::server::{ConfigReceiver, Published};
#[cfg(doc)]
use crate::settings::Reload;

/// Where the configuration came from, so it can be read again.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--config FILE` (`None`: the default path).
    pub path: Option<PathBuf>,
    /// The command-line flags, applied over the file again on every reload.
    pub overrides: Overrides,
    /// The log filter handle (`None` when logging was set up elsewhere).
    pub log: Option<LogReload>,
}

/// Reloads the configuration on request and publishes the server part and the profiles.
#[derive(Debug)]
pub struct Reloader {
    source: Source,
    current: Config,
    server: watch::Sender<Arc<Published>>,
    /// The profiles' refreshers (`None`: the agent runs without a profile source, and a
    /// configuration with profiles is refused).
    registry: Option<Registry>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Whether the server configuration in force changed.
    pub server_changed: bool,
    /// Whether `[profiles]` or a `[[profile]]` changed.
    pub profiles_changed: bool,
    /// Whether the log filter changed.
    pub log_level_changed: bool,
    /// Changed keys that take effect only after a restart, e.g. `"[server] socket_path"`.
    pub needs_restart: Vec<String>,
}

impl Reloader {
    /// A reloader for `current` (loaded from `source`, and checked with [`check_profiles`]),
    /// its profiles' refreshers started in `registry`, and the receiver for the server.
    pub fn new(
        source: Source,
        current: Config,
        mut registry: Option<Registry>,
    ) -> (Reloader, ConfigReceiver) {
        let published = publish(&current, registry.as_mut());
        let (server, rx) = watch::channel(published);
        let r = Reloader {
            source,
            current,
            server,
            registry,
        };
        (r, rx)
    }

    /// The configuration in force.
    pub fn current(&self) -> &Config {
        &self.current
    }

    /// Reads the file and flags again and applies what can change while running (see the
    /// module docs).
    ///
    /// # Errors
    /// The new configuration is invalid ([`ConfigError`], every problem listed); nothing changed.
    pub fn reload(&mut self) -> Result<Reloaded, ConfigError> {
        let mut new = Config::load(self.source.path.as_deref(), &self.source.overrides)?;
        check_profiles(&new, self.registry.is_some()).map_err(|problem| ConfigError {
            source_name: self.source.path.as_deref().map_or_else(
                || crate::config::DEFAULT_CONFIG_PATH.to_owned(),
                |p| p.display().to_string(),
            ),
            problems: vec![problem],
        })?;
        let needs_restart = new.keep_restart_keys(&self.current);
        let mut log_level_changed = false;
        if new.log.level != self.current.log.level {
            if let Some(log) = &self.source.log {
                match log.set_level(&new.log.level) {
                    Ok(changed) => log_level_changed = changed,
                    Err(e) => tracing::warn!(error = %e, "[log] level not changed"),
                }
            }
        }
        let server_changed = new.server != self.current.server;
        let profiles_changed =
            new.profiles != self.current.profiles || new.profile_list != self.current.profile_list;
        if server_changed || profiles_changed {
            self.server
                .send_replace(publish(&new, self.registry.as_mut()));
        }
        self.current = new;
        Ok(Reloaded {
            server_changed,
            profiles_changed,
            log_level_changed,
            needs_restart,
        })
    }
}

/// What the server is given for `config`: its server configuration and its profiles, their
/// refreshers reconciled in `registry` (no profile without one).
pub fn publish(config: &Config, registry: Option<&mut Registry>) -> Arc<Published> {
    let profiles = match registry {
        Some(r) => r.reconcile(&config.profile_list, config.profiles.unmatched),
        None => profiles::Set {
            unmatched: config.profiles.unmatched,
            ..profiles::Set::default()
        },
    };
    Arc::new(Published {
        server: config.server.clone(),
        profiles: Arc::new(profiles),
    })
}

/// Checks what the file alone cannot: profiles need a profile source (`has_source`), and
/// process selectors need the privilege to read other processes ([`probe`]).
///
/// # Errors
/// One configuration problem, naming the key.
pub fn check_profiles(config: &Config, has_source: bool) -> Result<(), String> {
    if let (false, Some(first)) = (has_source, config.profile_list.first()) {
        return Err(format!(
            "[[profile]] {:?}: profiles need the STS client, which could not be set up at \
             start (the warning logged then says why); fix [sts] and restart the agent",
            first.name
        ));
    }
    probe::check_process_selectors(&config.profile_list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reload_applies_server_keys_and_keeps_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "[server]\nsocket_path = \"/run/a.sock\"\nallowed_uids = [0]\n",
        );
        let source = Source {
            path: Some(path.clone()),
            ..Source::default()
        };
        let current = Config::load(Some(&path), &Overrides::default()).unwrap();
        let (mut r, rx) = Reloader::new(source, current, None);
        write(
            &dir,
            "[server]\nsocket_path = \"/run/b.sock\"\nallowed_uids = [1000]\nidle_timeout_ms = 5\n\
             [metadata]\nendpoint = \"http://127.0.0.1:1\"\n",
        );
        let done = r.reload().unwrap();
        assert!(done.server_changed);
        assert_eq!(
            done.needs_restart,
            vec!["[metadata] endpoint", "[server] socket_path"]
        );
        let server = rx.borrow().clone();
        assert_eq!(server.allowed_uids, vec![1000]);
        assert_eq!(server.idle_timeout, Duration::from_millis(5));
        assert_eq!(server.socket_path, PathBuf::from("/run/a.sock"));
        assert_eq!(
            &*r.current().metadata.endpoint,
            crate::sources::metadata::config::DEFAULT_ENDPOINT
        );
        // The same file again: nothing new to apply, the restart keys are still reported.
        let again = r.reload().unwrap();
        assert!(!again.server_changed);
        assert_eq!(again.needs_restart.len(), 2);
    }

    #[test]
    fn only_keys_this_module_applies_are_declared_live() {
        use crate::settings::Reload;
        for row in Config::reference() {
            if row.reload == Reload::Live {
                assert!(
                    row.key.starts_with("[server] ")
                        || row.key == "[log] level"
                        || row.key == "[profiles] unmatched",
                    "{} is declared live, but reload() does not apply it",
                    row.key
                );
            }
        }
    }

    #[test]
    fn an_invalid_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[server]\nallowed_uids = [7]\n");
        let source = Source {
            path: Some(path.clone()),
            ..Source::default()
        };
        let current = Config::load(Some(&path), &Overrides::default()).unwrap();
        let (mut r, rx) = Reloader::new(source, current.clone(), None);
        write(
            &dir,
            "[server]\nallowed_uids = [8]\nmax_connections = \"many\"\n",
        );
        let e = r.reload().unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
        assert_eq!(rx.borrow().allowed_uids, vec![7]);
        assert_eq!(r.current(), &current);
    }

    #[test]
    fn flags_still_override_the_file_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[log]\nlevel = \"info\"\n");
        let overrides = Overrides {
            log_level: Some("debug".into()),
            ..Overrides::default()
        };
        let current = Config::load(Some(&path), &overrides).unwrap();
        let source = Source {
            path: Some(path.clone()),
            overrides,
            log: None,
        };
        let (mut r, _rx) = Reloader::new(source, current, None);
        write(&dir, "[log]\nlevel = \"warn\"\n");
        r.reload().unwrap();
        assert_eq!(r.current().log.level, "debug");
    }

    /// A registry whose factory counts the refreshers it builds.
    fn counting_registry() -> (Registry, Arc<std::sync::atomic::AtomicUsize>) {
        use crate::test_support::FixedSource;
        use crate::time::{SharedTimeSource, SystemClock};
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&built);
        let time: SharedTimeSource = Arc::new(SystemClock);
        let source_time = Arc::clone(&time);
        let make = move |spec: &crate::sources::sts::RoleSpec| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            FixedSource {
                key: spec.profile.clone(),
                fail: None,
                time: Arc::clone(&source_time),
            }
        };
        let metrics = crate::metrics::Metrics::new();
        let factory = profiles::factory(make, Default::default(), time, metrics.clone());
        (Registry::new(factory, metrics), built)
    }

    fn profile(name: &str, uid: u32, duration: u32) -> String {
        format!(
            "[[profile]]\nname = \"{name}\"\nmatch = {{ uid = {uid} }}\n\
             role_arn = \"acs:ram::1:role/{name}\"\nduration_secs = {duration}\n"
        )
    }

    #[tokio::test]
    async fn a_reload_publishes_profiles_and_keeps_unchanged_refreshers() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &profile("a", 1000, 3600));
        let source = Source {
            path: Some(path.clone()),
            ..Source::default()
        };
        let current = Config::load(Some(&path), &Overrides::default()).unwrap();
        let (registry, built) = counting_registry();
        let (mut r, rx) = Reloader::new(source, current, Some(registry));
        assert_eq!(rx.borrow().profiles.specs[0].name, "a");
        assert_eq!(built.load(Ordering::SeqCst), 1);
        let a_state = rx.borrow().profiles.profiles[0].state.clone();
        // `a` unchanged, `b` added, `unmatched` changed: published, one new refresher.
        let text = format!(
            "[profiles]\nunmatched = \"deny\"\n{}{}",
            profile("a", 1000, 3600),
            profile("b", 1001, 900)
        );
        write(&dir, &text);
        let done = r.reload().unwrap();
        assert!(done.profiles_changed && !done.server_changed);
        assert!(done.needs_restart.is_empty(), "{:?}", done.needs_restart);
        let published = rx.borrow().clone();
        assert_eq!(published.profiles.unmatched, crate::policy::Unmatched::Deny);
        assert_eq!(published.profiles.specs.len(), 2);
        assert!(published.profiles.profiles[0].state.same_channel(&a_state));
        assert_eq!(built.load(Ordering::SeqCst), 2);
        // The same file again: nothing to publish, nothing built.
        assert!(!r.reload().unwrap().profiles_changed);
        assert_eq!(built.load(Ordering::SeqCst), 2);
        // An invalid profile: rejected whole, the profiles in force stay.
        write(&dir, &profile("bad name", 1000, 3600));
        let e = r.reload().unwrap_err().to_string();
        assert!(e.contains("[[profile]] #1 name"), "{e}");
        assert_eq!(rx.borrow().profiles.specs.len(), 2);
    }

    #[test]
    fn profiles_without_a_profile_source_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[server]\nallowed_uids = [7]\n");
        let source = Source {
            path: Some(path.clone()),
            ..Source::default()
        };
        let current = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert!(check_profiles(&current, false).is_ok());
        let (mut r, rx) = Reloader::new(source, current, None);
        write(&dir, &profile("a", 1000, 3600));
        let e = r.reload().unwrap_err().to_string();
        assert!(
            e.contains("[[profile]] \"a\": profiles need the STS client"),
            "{e}"
        );
        assert!(rx.borrow().profiles.specs.is_empty());
        let with = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert!(check_profiles(&with, true).is_ok());
        assert!(check_profiles(&with, false).is_err());
    }
}
