//! The profiles' credentials: one [`Refresher`] per distinct (RAM role, session policy,
//! duration), reconciled with the `[[profile]]` list at start and at each reload, and the
//! [`Set`] the server answers profile callers from.
//!
//! Refreshers are built through a [`Factory`] the daemon passes in (the STS source in
//! production, fakes in tests), so this module knows no upstream. Two profiles with the same
//! role ARN, policy text and duration share one refresher, and so one `AssumeRole` schedule and
//! one set of credentials. A reload keeps every refresher whose key is unchanged (no new
//! `AssumeRole`, the credentials held stay), starts the new ones and drops the removed ones.
//!
//! Refreshers start at once, not at a profile's first caller: the first caller does not wait
//! for an `AssumeRole` round trip, and a profile whose role cannot be assumed says so in the
//! log, in `/v1/health` and in `profile_ready` from the start instead of at its first request.
//! The cost is at most one `AssumeRole` per refresh period for a profile nobody calls (with
//! the default 3600 s, 10 per 6 hours).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::credentials::refresher::{RecordRefresh, RefreshError, Refresher};
use crate::credentials::state::StateReceiver;
use crate::credentials::{RefreshPolicy, Source, SourceError};
use crate::metrics::{CredentialGauges, Metrics, Served};
use crate::policy::{Spec, Unmatched};
use crate::sources::sts::RoleSpec;
use crate::time::SharedTimeSource;

/// Builds the refresher of one profile's credentials (called once per distinct key, at start
/// and when a reload adds a key).
pub type Factory = Box<dyn FnMut(&RoleSpec) -> Refresher + Send>;

/// What makes two profiles share credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    role_arn: String,
    policy: Option<String>,
    duration_secs: u32,
}

impl Key {
    fn of(spec: &Spec) -> Key {
        Key {
            role_arn: spec.role_arn.clone(),
            policy: spec.policy.clone(),
            duration_secs: spec.duration_secs,
        }
    }
}

/// The running refreshers of the profiles, by key.
pub struct Registry {
    factory: Factory,
    running: HashMap<Key, Refresher>,
    metrics: Metrics,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

/// The profiles in force, as the server reads them (published with the server
/// configuration, so a connection sees both from the same reload).
#[derive(Debug, Default)]
pub struct Set {
    /// `[profiles] unmatched`.
    pub unmatched: Unmatched,
    /// `[[profile]]`, in file order.
    pub specs: Vec<Spec>,
    /// What the server needs of `specs[i]`, at index `i`.
    pub profiles: Vec<Profile>,
}

/// What a connection keeps of its caller's profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name.
    pub name: Arc<str>,
    /// Its credentials (shared with every profile of the same key).
    pub state: StateReceiver,
    /// Its `profile_credentials_served_total` series.
    pub served: Served,
}

impl Set {
    /// Each profile's name and credential gauges at `now` (for
    /// [`Metrics::observe_profiles`]).
    pub fn gauges(&self, now: Instant) -> Vec<(String, CredentialGauges)> {
        self.profiles
            .iter()
            .map(|p| (p.name.to_string(), p.state.borrow().gauges(now)))
            .collect()
    }
}

impl Registry {
    /// A registry with no profile, building refreshers with `factory` and counting each
    /// profile's answers in `metrics`.
    pub fn new(factory: Factory, metrics: Metrics) -> Registry {
        Registry {
            factory,
            running: HashMap::new(),
            metrics,
        }
    }

    /// Brings the running refreshers in line with `specs` (module docs) and returns the set
    /// the server answers from.
    pub fn reconcile(&mut self, specs: &[Spec], unmatched: Unmatched) -> Set {
        let mut kept: HashMap<Key, Refresher> = HashMap::new();
        let mut profiles = Vec::with_capacity(specs.len());
        for spec in specs {
            let key = Key::of(spec);
            if !kept.contains_key(&key) {
                let refresher = match self.running.remove(&key) {
                    Some(running) => running,
                    None => {
                        tracing::info!(
                            profile = spec.name.as_str(),
                            role_arn = spec.role_arn.as_str(),
                            duration_secs = spec.duration_secs,
                            "starting the profile's credential refresher"
                        );
                        (self.factory)(&role_spec(spec))
                    }
                };
                kept.insert(key.clone(), refresher);
            }
            profiles.push(Profile {
                name: Arc::from(spec.name.as_str()),
                state: kept[&key].subscribe(),
                served: self.metrics.profile_served(&spec.name),
            });
        }
        // What is left ran for profiles no longer configured: dropping stops them.
        for (key, _) in self.running.drain() {
            tracing::info!(
                role_arn = key.role_arn.as_str(),
                "stopping a profile refresher no profile uses any more"
            );
        }
        self.running = kept;
        Set {
            unmatched,
            specs: specs.to_vec(),
            profiles,
        }
    }

    /// How many refreshers run (one per distinct key).
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

/// What the factory is asked for `spec`.
fn role_spec(spec: &Spec) -> RoleSpec {
    RoleSpec {
        profile: spec.name.clone(),
        role_arn: spec.role_arn.clone(),
        policy: spec.policy.clone(),
        duration_secs: spec.duration_secs,
    }
}

/// A [`Factory`] that refreshes the source `make` builds for each profile under `policy`
/// (`[credentials]`, as the instance role), reading the wall clock from `time` and recording
/// each attempt in `metrics` under the profile's name (`profile_refreshes_total`).
pub fn factory<S: Source>(
    mut make: impl FnMut(&RoleSpec) -> S + Send + 'static,
    policy: RefreshPolicy,
    time: SharedTimeSource,
    metrics: Metrics,
) -> Factory {
    Box::new(move |spec: &RoleSpec| {
        let record = ProfileRefreshes {
            metrics: metrics.clone(),
            profile: spec.profile.clone(),
        };
        Refresher::builder(make(spec), policy.clone(), time.clone())
            .metrics(record)
            .spawn()
    })
}

/// Records a profile refresher's attempts under its profile's name.
struct ProfileRefreshes {
    metrics: Metrics,
    profile: String,
}

impl<E: SourceError> RecordRefresh<E> for ProfileRefreshes {
    fn record(&self, outcome: Result<bool, &RefreshError<E>>) {
        self.metrics
            .profile_refresh(&self.profile, outcome.map_err(SourceError::kind));
    }
}

#[cfg(test)]
mod tests;
