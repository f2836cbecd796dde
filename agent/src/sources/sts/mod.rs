//! The STS source: a RAM role assumed with the instance role's credentials (`AssumeRole`).
//!
//! Placeholder for the profile registry's contract: only [`RoleSpec`] lives here until the STS
//! client lands (it owns this module).

/// What one profile asks STS for: the role, the session policy and the duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// The profile's name (the `RoleSessionName` is `<instance-id>.<profile>`).
    pub profile: String,
    /// `acs:ram::<account id>:role/<role name>`.
    pub role_arn: String,
    /// The session policy (JSON), if any.
    pub policy: Option<String>,
    /// The session's lifetime asked of STS, seconds (900 to 43200).
    pub duration_secs: u32,
}
