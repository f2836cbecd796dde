//! Scriptable faults: what can go wrong, where, and how often.

use std::time::Duration;

use serde::Serialize;

/// The metadata paths a fault or a [`Gate`](crate::Gate) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `/latest/api/token` (any method).
    Token,
    /// `GET /latest/meta-data/ram/security-credentials/` (the role name).
    RoleList,
    /// `GET /latest/meta-data/ram/security-credentials/<role>` (any role name).
    Credentials,
    /// Every metadata request, including `region-id`, `instance-id` and unknown paths; never
    /// the control API.
    Any,
}

impl Endpoint {
    /// Parses the control API's spelling: `token`, `role-list`, `credentials`, `any`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(Self::Token),
            "role-list" | "role_list" => Some(Self::RoleList),
            "credentials" => Some(Self::Credentials),
            "any" => Some(Self::Any),
            _ => None,
        }
    }

    /// Whether a request to `route` belongs to this endpoint.
    pub(crate) fn matches(self, route: Route) -> bool {
        match self {
            Self::Any => true,
            Self::Token => route == Route::Token,
            Self::RoleList => route == Route::RoleList,
            Self::Credentials => route == Route::Credentials,
        }
    }
}

/// Where a metadata request goes, by path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Token,
    RoleList,
    Credentials,
    /// `/latest/meta-data/region-id` or `/latest/meta-data/instance-id`.
    InstanceFact,
    Other,
}

impl Route {
    pub(crate) const CREDENTIALS_PREFIX: &'static str =
        "/latest/meta-data/ram/security-credentials/";
    pub(crate) const TOKEN_PATH: &'static str = "/latest/api/token";
    pub(crate) const REGION_ID_PATH: &'static str = "/latest/meta-data/region-id";
    pub(crate) const INSTANCE_ID_PATH: &'static str = "/latest/meta-data/instance-id";

    pub(crate) fn of(path: &str) -> Self {
        match path.strip_prefix(Self::CREDENTIALS_PREFIX) {
            Some("") => Self::RoleList,
            Some(_) => Self::Credentials,
            None if path == Self::TOKEN_PATH => Self::Token,
            None if path == Self::REGION_ID_PATH || path == Self::INSTANCE_ID_PATH => {
                Self::InstanceFact
            }
            None => Self::Other,
        }
    }
}

/// How many matching requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` matching requests (0 = none).
    Next(u32),
    /// Every matching request until [`Emulator::clear_faults`](crate::Emulator::clear_faults).
    Always,
}

/// One way the metadata service misbehaves.
///
/// When it acts:
/// - `Status`, `Delay`, `Hang`, `Reset` act before the request is looked at (a `Status` fault
///   answers even a request without a valid metadata token);
/// - `HangAfterHeaders` and `SlowBody` shape whatever answer the request would get;
/// - `MalformedJson`, `HtmlWith200`, `OversizedBody` replace the body of an answer that would be
///   200 (on any endpoint);
/// - the credential-field faults (`MissingField` … `ExpirationYearsAhead`) edit the credential
///   JSON of a 200 answer and only ever match credential requests, even when set on
///   [`Endpoint::Any`].
///
/// A fault that matched a request is used up even if the answer was not a 200 it could edit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status; 404 carries the documented HTML page, others a similar page.
    /// A number that is not a valid HTTP status answers 500.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Accept the request and never answer (the connection stays open).
    Hang,
    /// Send the status line and headers, with a `Content-Length`, then never send the body.
    HangAfterHeaders,
    /// Send the body `chunk_bytes` at a time (at least 1), waiting `interval` before each chunk.
    SlowBody {
        /// Bytes per chunk.
        chunk_bytes: usize,
        /// Wait before each chunk.
        interval: Duration,
    },
    /// Close the connection without answering (TCP RST).
    Reset,
    /// 200 with the JSON cut off in the middle.
    MalformedJson,
    /// 200 with an HTML page (as a captive portal or a misrouted proxy would send).
    HtmlWith200,
    /// 200 with a body of exactly this many bytes: on the credentials endpoint a valid credential
    /// JSON padded with an extra `Padding` field, elsewhere `A` repeated.
    OversizedBody(usize),
    /// Credential JSON without the named field (e.g. `"SecurityToken"`).
    MissingField(String),
    /// Credential JSON with the named field set to `""`.
    EmptyField(String),
    /// Credential JSON with `"Code":"Failure"`.
    CodeNotSuccess,
    /// Credential JSON whose `Expiration` is 60 s in the past (and `LastUpdated` one lifetime
    /// before that); keys unchanged.
    ExpiredCredentials,
    /// `Expiration` with fractional seconds: `YYYY-MM-DDTHH:MM:SS.123Z` (same second).
    FractionalSecondsExpiration,
    /// `Expiration` with a numeric offset: `YYYY-MM-DDTHH:MM:SS+08:00` (same instant).
    NumericOffsetExpiration,
    /// `Expiration` ten years after `LastUpdated`.
    ExpirationYearsAhead,
}

impl Fault {
    /// Whether this fault can apply to a request to `route`.
    pub(crate) fn applies_to(&self, route: Route) -> bool {
        !self.edits_credentials() || route == Route::Credentials
    }

    /// Whether this fault edits the credential JSON (and so applies to credential GETs only).
    pub(crate) fn edits_credentials(&self) -> bool {
        matches!(
            self,
            Self::MissingField(_)
                | Self::EmptyField(_)
                | Self::CodeNotSuccess
                | Self::ExpiredCredentials
                | Self::FractionalSecondsExpiration
                | Self::NumericOffsetExpiration
                | Self::ExpirationYearsAhead
        )
    }
}

#[derive(Debug)]
struct Rule {
    endpoint: Endpoint,
    fault: Fault,
    /// `None` = always.
    remaining: Option<u32>,
}

/// The scripted faults, consulted in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct FaultRules {
    rules: Vec<Rule>,
}

impl FaultRules {
    /// Appends a rule.
    pub(crate) fn add(&mut self, endpoint: Endpoint, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Next(0) => return,
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        self.rules.push(Rule {
            endpoint,
            fault,
            remaining,
        });
    }

    /// Drops every rule set for exactly `endpoint`.
    pub(crate) fn clear_endpoint(&mut self, endpoint: Endpoint) {
        self.rules.retain(|r| r.endpoint != endpoint);
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The first rule matching a request to `route`, used up by one.
    pub(crate) fn take(&mut self, route: Route) -> Option<Fault> {
        let i = self
            .rules
            .iter()
            .position(|r| r.endpoint.matches(route) && r.fault.applies_to(route))?;
        let rule = &mut self.rules[i];
        let fault = rule.fault.clone();
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(i);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/latest/api/token"), Route::Token);
        assert_eq!(
            Route::of("/latest/meta-data/ram/security-credentials/"),
            Route::RoleList
        );
        assert_eq!(
            Route::of("/latest/meta-data/ram/security-credentials/R"),
            Route::Credentials
        );
        assert_eq!(
            Route::of("/latest/meta-data/ram/security-credentials"),
            Route::Other
        );
        assert_eq!(
            Route::of("/latest/meta-data/instance-id"),
            Route::InstanceFact
        );
        assert_eq!(
            Route::of("/latest/meta-data/region-id"),
            Route::InstanceFact
        );
        assert_eq!(Route::of("/latest/meta-data/instance-id/"), Route::Other);
    }

    #[test]
    fn next_n_is_used_up_in_order() {
        let mut rules = FaultRules::default();
        rules.add(Endpoint::Credentials, Fault::Status(503), Times::Next(2));
        rules.add(Endpoint::Any, Fault::Hang, Times::Next(1));
        assert_eq!(rules.take(Route::Token), Some(Fault::Hang));
        assert_eq!(rules.take(Route::Credentials), Some(Fault::Status(503)));
        assert_eq!(rules.take(Route::Credentials), Some(Fault::Status(503)));
        assert_eq!(rules.take(Route::Credentials), None);
    }

    #[test]
    fn always_stays_and_zero_times_is_nothing() {
        let mut rules = FaultRules::default();
        rules.add(Endpoint::Token, Fault::Reset, Times::Next(0));
        assert_eq!(rules.take(Route::Token), None);
        rules.add(Endpoint::Token, Fault::Reset, Times::Always);
        for _ in 0..3 {
            assert_eq!(rules.take(Route::Token), Some(Fault::Reset));
        }
        rules.clear_endpoint(Endpoint::Token);
        assert_eq!(rules.take(Route::Token), None);
    }

    #[test]
    fn credential_field_faults_skip_other_endpoints() {
        let mut rules = FaultRules::default();
        rules.add(Endpoint::Any, Fault::CodeNotSuccess, Times::Next(1));
        assert_eq!(rules.take(Route::Token), None);
        assert_eq!(rules.take(Route::RoleList), None);
        assert_eq!(rules.take(Route::Credentials), Some(Fault::CodeNotSuccess));
    }
}
