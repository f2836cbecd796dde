//! The emulator's mutable state, shared by the server and the [`Emulator`](crate::Emulator)
//! handle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;

use crate::clock::SharedTimeSource;
use crate::config::EmulatorConfig;
use crate::credentials::EmulatedCredentials;
use crate::fault::{Endpoint, Fault, FaultRules, Route, Times};
use crate::gate::GateShared;
use crate::sts::{AccessKey, KeyStore, Principal};

/// Length of an issued metadata token.
const METADATA_TOKEN_LEN: usize = 56;
/// Expired metadata tokens are swept once this many are stored.
const TOKEN_SWEEP_THRESHOLD: usize = 4096;

/// How many requests the emulator has seen since start or [`Emulator::reset_counts`]
/// (control API requests are never counted).
///
/// [`Emulator::reset_counts`]: crate::Emulator::reset_counts
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Every metadata request, whatever its path, method and answer.
    pub total: u64,
    /// `PUT /latest/api/token`, whatever the answer.
    pub token_puts: u64,
    /// Metadata tokens issued (200 answers to a token PUT).
    pub tokens_issued: u64,
    /// `GET /latest/meta-data/ram/security-credentials/`, whatever the answer.
    pub role_list_gets: u64,
    /// `GET /latest/meta-data/ram/security-credentials/<any role>`, whatever the answer.
    pub credential_gets: u64,
    /// Answers with status 401 (including ones forced by a fault).
    pub unauthorized: u64,
    /// Answers with status 403 (including ones forced by a fault).
    pub forbidden: u64,
}

/// Settings fixed at start.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) hardened_only: bool,
    pub(crate) max_token_ttl_secs: u64,
    pub(crate) lifetime: Duration,
    pub(crate) rotate_after: Duration,
    pub(crate) control_api: bool,
    pub(crate) region_id: String,
    pub(crate) instance_id: String,
    pub(crate) clock: SharedTimeSource,
}

/// How many issued metadata tokens [`Shared::issued_tokens`] remembers.
pub(crate) const ISSUED_HISTORY: usize = 1024;

/// `Debug` counts the metadata tokens instead of printing them.
#[derive(Default)]
struct State {
    /// The attached role and its current credential generation.
    role: Option<EmulatedCredentials>,
    /// Issued metadata tokens and when each one's TTL ends.
    tokens: HashMap<String, SystemTime>,
    /// Every metadata token issued, newest last, at most [`ISSUED_HISTORY`] (tests scan logs
    /// for them).
    issued: std::collections::VecDeque<String>,
    counts: Counts,
    faults: FaultRules,
    gates: Vec<Arc<GateShared>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("role", &self.role)
            .field(
                "tokens",
                &format_args!("** {} redacted **", self.tokens.len()),
            )
            .field(
                "issued",
                &format_args!("** {} redacted **", self.issued.len()),
            )
            .field("counts", &self.counts)
            .field("faults", &self.faults)
            .field("gates", &self.gates)
            .finish()
    }
}

/// Settings plus the state behind a mutex.
///
/// A `std::sync::Mutex` rather than tokio's: every critical section is a few map or counter
/// operations with no `.await` inside, so the lock is never held across a suspension point and
/// blocking on it is cheaper than an async lock (the tokio docs recommend exactly this).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    state: Mutex<State>,
    /// Every credential generation issued, for the STS emulator to accept.
    pub(crate) keys: KeyStore,
}

impl Shared {
    pub(crate) fn new(config: &EmulatorConfig) -> Self {
        let settings = Settings {
            hardened_only: config.hardened_only,
            max_token_ttl_secs: config.max_token_ttl_secs,
            lifetime: config.effective_lifetime(),
            rotate_after: config.effective_rotate_after(),
            control_api: config.control_api,
            region_id: config.region_id.clone(),
            instance_id: config.instance_id.clone(),
            clock: Arc::clone(&config.clock),
        };
        let shared = Self {
            settings,
            state: Mutex::default(),
            keys: KeyStore::new(),
        };
        if let Some(role) = &config.role_name {
            shared.attach_role(role);
        }
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a panic elsewhere (a failed
        // assertion in a test thread) does not make it unusable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.settings.clock.now()
    }

    /// Counts one metadata request by route and method.
    pub(crate) fn count_request(&self, route: Route, is_get: bool, is_put: bool) {
        let counts = &mut self.lock().counts;
        counts.total += 1;
        match route {
            Route::Token if is_put => counts.token_puts += 1,
            Route::RoleList if is_get => counts.role_list_gets += 1,
            Route::Credentials if is_get => counts.credential_gets += 1,
            _ => {}
        }
    }

    /// Counts one answer by status.
    pub(crate) fn count_answer(&self, status: u16) {
        let counts = &mut self.lock().counts;
        match status {
            401 => counts.unauthorized += 1,
            403 => counts.forbidden += 1,
            _ => {}
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.lock().counts
    }

    pub(crate) fn reset_counts(&self) {
        self.lock().counts = Counts::default();
    }

    /// Issues a metadata token valid for `ttl_secs`.
    pub(crate) fn issue_token(&self, ttl_secs: u64) -> String {
        let now = self.now();
        let token = Alphanumeric.sample_string(&mut rand::rng(), METADATA_TOKEN_LEN);
        let mut state = self.lock();
        if state.tokens.len() >= TOKEN_SWEEP_THRESHOLD {
            state.tokens.retain(|_, until| *until > now);
        }
        state
            .tokens
            .insert(token.clone(), now + Duration::from_secs(ttl_secs));
        state.counts.tokens_issued += 1;
        if state.issued.len() >= ISSUED_HISTORY {
            state.issued.pop_front();
        }
        state.issued.push_back(token.clone());
        token
    }

    /// Whether `token` was issued and its TTL has not ended.
    pub(crate) fn token_valid(&self, token: &str) -> bool {
        let now = self.now();
        self.lock()
            .tokens
            .get(token)
            .is_some_and(|until| *until > now)
    }

    /// The metadata tokens issued so far (at most the last [`ISSUED_HISTORY`]).
    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.iter().cloned().collect()
    }

    pub(crate) fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The attached role's name.
    pub(crate) fn role_name(&self) -> Option<String> {
        self.lock().role.as_ref().map(|c| c.role_name.clone())
    }

    /// The credentials currently served, rotated first if `rotate_after` has passed since
    /// `LastUpdated`; `None` when no role is attached.
    pub(crate) fn current_credentials(&self) -> Option<EmulatedCredentials> {
        let now = self.now();
        let mut state = self.lock();
        let current = state.role.as_mut()?;
        let issued = SystemTime::from(current.last_updated);
        let age = now.duration_since(issued).unwrap_or_default();
        if age >= self.settings.rotate_after {
            *current = self.generate(&current.role_name, now);
        }
        Some(current.clone())
    }

    /// Attaches `role` (replacing any other) with a new credential generation.
    pub(crate) fn attach_role(&self, role: &str) {
        let creds = self.generate(role, self.now());
        self.lock().role = Some(creds);
    }

    /// A new credential generation for `role`, registered in [`Self::keys`] as that role's
    /// STS key until its `Expiration`.
    fn generate(&self, role: &str, now: SystemTime) -> EmulatedCredentials {
        let creds = EmulatedCredentials::generate(role, now, self.settings.lifetime);
        self.keys.insert(
            &creds.access_key_id,
            AccessKey {
                principal: Principal::Role(role.to_owned()),
                access_key_secret: creds.access_key_secret.clone(),
                security_token: Some(creds.security_token.clone()),
                expiration: Some(creds.expiration),
            },
        );
        creds
    }

    pub(crate) fn detach_role(&self) {
        self.lock().role = None;
    }

    /// Starts a new credential generation now; `false` when no role is attached.
    pub(crate) fn rotate_now(&self) -> bool {
        let now = self.now();
        let mut state = self.lock();
        match state.role.as_mut() {
            Some(current) => {
                *current = self.generate(&current.role_name, now);
                true
            }
            None => false,
        }
    }

    pub(crate) fn add_fault(&self, endpoint: Endpoint, fault: Fault, times: Times) {
        self.lock().faults.add(endpoint, fault, times);
    }

    pub(crate) fn set_fault(&self, endpoint: Endpoint, fault: Fault, times: Times) {
        let mut state = self.lock();
        state.faults.clear_endpoint(endpoint);
        state.faults.add(endpoint, fault, times);
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub(crate) fn take_fault(&self, route: Route) -> Option<Fault> {
        self.lock().faults.take(route)
    }

    pub(crate) fn add_gate(&self, gate: Arc<GateShared>) {
        self.lock().gates.push(gate);
    }

    pub(crate) fn remove_gate(&self, gate: &Arc<GateShared>) {
        self.lock().gates.retain(|g| !Arc::ptr_eq(g, gate));
    }

    /// The gates a request to `route` must pass, in the order they were made.
    pub(crate) fn gates_for(&self, route: Route) -> Vec<Arc<GateShared>> {
        let state = self.lock();
        state
            .gates
            .iter()
            .filter(|g| g.matches(route))
            .cloned()
            .collect()
    }
}
