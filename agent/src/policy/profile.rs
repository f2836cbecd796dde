//! `[[profile]]`: one application's RAM role, and the selector that says which callers are
//! that application. Parsed by hand (the `settings::section!` macro declares single tables, not
//! arrays of tables) in [`parse_profiles`], every problem reported at once, each naming the
//! profile (by name, else by its position) and the key.
//!
//! User and group names are resolved to ids when the file is read (at start and at each
//! reload), and a `policy_file` is read then too: an unknown name or an unreadable file is a
//! configuration error, never a selector that silently matches nobody.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::settings::did_you_mean;

/// The longest profile name: the STS `RoleSessionName` is `<instance-id>.<name>`, at most 64
/// characters, and an ECS instance id (`i-` and 20 characters) takes 22 of them and the dot one.
pub const MAX_NAME_LEN: usize = 41;
/// `duration_secs` by default: STS's own default session duration.
pub const DEFAULT_DURATION_SECS: u32 = 3600;
/// The shortest session STS grants, in seconds.
pub const MIN_DURATION_SECS: u32 = 900;
/// The longest session STS grants (a role's `MaxSessionDuration` may allow up to this), in
/// seconds.
pub const MAX_DURATION_SECS: u32 = 43_200;
/// The longest session policy STS accepts, in characters.
pub const MAX_POLICY_LEN: usize = 2048;

/// The keys of a `[[profile]]` table.
const PROFILE_KEYS: &[&str] = &[
    "name",
    "match",
    "role_arn",
    "policy",
    "policy_file",
    "duration_secs",
];
/// The keys of a profile's `match` table.
const MATCH_KEYS: &[&str] = &["uid", "user", "gid", "group", "unit", "exe", "exe_sha256"];

/// One `[[profile]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `name`: `[A-Za-z0-9_-]`, 1 to [`MAX_NAME_LEN`] characters, unique; in logs, metrics
    /// and the STS `RoleSessionName`.
    pub name: String,
    /// `match`: which callers the profile serves (every key given must match).
    pub selector: Selector,
    /// `role_arn`: `acs:ram::<account id>:role/<role name>`.
    pub role_arn: String,
    /// The session policy: `policy`, or the text of `policy_file` as read at load or reload;
    /// valid JSON of 1 to [`MAX_POLICY_LEN`] characters.
    pub policy: Option<String>,
    /// `policy_file`, when the policy came from a file.
    pub policy_file: Option<PathBuf>,
    /// `duration_secs`: the session's lifetime asked of STS, [`MIN_DURATION_SECS`] to
    /// [`MAX_DURATION_SECS`].
    pub duration_secs: u32,
}

/// A profile's `match`: every key given must match the caller ([`Selector::matches`](super::selector)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `uid`: the caller's effective uid.
    pub uid: Option<u32>,
    /// `user`: a user name and the uid it resolved to when the file was read.
    pub user: Option<(String, u32)>,
    /// `gid`: the caller's primary or a supplementary gid.
    pub gid: Option<u32>,
    /// `group`: a group name and the gid it resolved to, primary or supplementary.
    pub group: Option<(String, u32)>,
    /// `unit`: the caller's full cgroup v2 path (`/system.slice/billing.service`), compared
    /// exactly: never a suffix, so a look-alike cgroup in a user's delegated tree does not
    /// match.
    pub unit: Option<String>,
    /// `exe`: the caller's executable, an absolute path.
    pub exe: Option<PathBuf>,
    /// `exe_sha256`: the SHA-256 of the caller's executable file.
    pub exe_sha256: Option<[u8; 32]>,
}

impl Selector {
    /// Whether a key reads the caller's process (`unit`, `exe`, `exe_sha256`), which needs the
    /// privilege [`probe`](super::probe) checks.
    pub fn reads_process(&self) -> bool {
        self.unit.is_some() || self.exe.is_some() || self.exe_sha256.is_some()
    }
}

/// Reads the `[[profile]]` array: the profiles in file order, or every problem found, each
/// as `[[profile]] "name" key: what` (`[[profile]] #N key: what` when the name is missing or
/// invalid; N counts from 1).
///
/// # Errors
/// One line per problem.
pub fn parse_profiles(value: &toml::Value) -> Result<Vec<Spec>, Vec<String>> {
    let Some(items) = value.as_array() else {
        return Err(vec![
            "[profile]: profiles are an array of tables: write [[profile]] above each".to_owned(),
        ]);
    };
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    let mut names = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let Some(table) = item.as_table() else {
            problems.push(format!("[[profile]] #{}: expected a table", i + 1));
            continue;
        };
        let mut found = Vec::new();
        let (label, spec) = read_profile(i, table, &mut found);
        if let Some(spec) = &spec {
            if !names.insert(spec.name.clone()) {
                found.push("name: another [[profile]] has this name; names must be unique".into());
            }
        }
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("[[profile]] {label} {p}")),
        );
        specs.extend(spec);
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

/// One profile table (the `i`th, from 0): its label in problems, and the spec when it has no
/// problem (pushed to `problems` as `key: what`).
fn read_profile(
    i: usize,
    table: &toml::Table,
    problems: &mut Vec<String>,
) -> (String, Option<Spec>) {
    let name = match table.get("name") {
        None => Err("name: required ([A-Za-z0-9_-], 1 to 41 characters)".to_owned()),
        Some(v) => v
            .as_str()
            .ok_or_else(|| "name: expected a string".to_owned())
            .and_then(|s| check_name(s).map_err(|e| format!("name: {e}"))),
    };
    let label = match &name {
        Ok(n) => format!("{n:?}"),
        Err(_) => format!("#{}", i + 1),
    };
    let before = problems.len();
    if let Err(e) = &name {
        problems.push(e.clone());
    }
    for key in table.keys() {
        if !PROFILE_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "{key}: unknown key (known: {}){}",
                PROFILE_KEYS.join(", "),
                did_you_mean(key, PROFILE_KEYS)
            ));
        }
    }
    let selector = match table.get("match") {
        None => Err(vec![
            "match: required, e.g. match = { user = \"billing\" }".into()
        ]),
        Some(v) => read_selector(v),
    };
    let role_arn = match table.get("role_arn").map(|v| v.as_str()) {
        None => Err("required, e.g. \"acs:ram::123456789012:role/billing-app\"".to_owned()),
        Some(None) => Err("expected a string".to_owned()),
        Some(Some(s)) => check_role_arn(s),
    }
    .map_err(|e| format!("role_arn: {e}"));
    let policy = read_policy(table);
    let duration = match table.get("duration_secs") {
        None => Ok(DEFAULT_DURATION_SECS),
        Some(v) => v
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(n))
            .ok_or_else(|| {
                format!(
                    "duration_secs: expected an integer from {MIN_DURATION_SECS} to \
                     {MAX_DURATION_SECS}, got {v}"
                )
            }),
    };
    let selector = selector.map_err(|e| problems.extend(e)).ok();
    let role_arn = role_arn.map_err(|e| problems.push(e)).ok();
    let policy = policy.map_err(|e| problems.push(e)).ok();
    let duration = duration.map_err(|e| problems.push(e)).ok();
    if problems.len() > before {
        return (label, None);
    }
    let (Ok(name), Some(selector), Some(role_arn), Some((policy, policy_file)), Some(d)) =
        (name, selector, role_arn, policy, duration)
    else {
        return (label, None);
    };
    let spec = Spec {
        name,
        selector,
        role_arn,
        policy,
        policy_file,
        duration_secs: d,
    };
    (label, Some(spec))
}

/// `spec` as a `[[profile]]` table that [`parse_profiles`] reads back to the same value (a
/// `policy_file` is named, and read again).
pub fn render(spec: &Spec) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let sel = &spec.selector;
    let mut keys = Vec::new();
    keys.extend(sel.uid.map(|u| format!("uid = {u}")));
    keys.extend(sel.user.as_ref().map(|u| format!("user = {}", q(&u.0))));
    keys.extend(sel.gid.map(|g| format!("gid = {g}")));
    keys.extend(sel.group.as_ref().map(|g| format!("group = {}", q(&g.0))));
    keys.extend(sel.unit.as_ref().map(|u| format!("unit = {}", q(u))));
    let exe = sel.exe.as_ref().map(|e| e.display().to_string());
    keys.extend(exe.map(|e: String| format!("exe = {}", q(&e))));
    let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    keys.extend(
        sel.exe_sha256
            .as_ref()
            .map(|h| format!("exe_sha256 = {}", q(&hex(h)))),
    );
    let mut out = format!(
        "[[profile]]\nname = {}\nmatch = {{ {} }}\nrole_arn = {}\nduration_secs = {}\n",
        q(&spec.name),
        keys.join(", "),
        q(&spec.role_arn),
        spec.duration_secs
    );
    match (&spec.policy_file, &spec.policy) {
        (Some(file), _) => out += &format!("policy_file = {}\n", q(&file.display().to_string())),
        (None, Some(policy)) => out += &format!("policy = {}\n", q(policy)),
        (None, None) => {}
    }
    out
}

/// `name`: `[A-Za-z0-9_-]`, 1 to [`MAX_NAME_LEN`] characters.
fn check_name(s: &str) -> Result<String, String> {
    let ok = (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9_-] (the STS RoleSessionName \
             <instance-id>.<name> must fit 64), got {s:?}"
        ))
    }
}

/// `role_arn`: `acs:ram::<digits>:role/<name>`.
fn check_role_arn(s: &str) -> Result<String, String> {
    let ok = s
        .strip_prefix("acs:ram::")
        .and_then(|rest| rest.split_once(":role/"))
        .is_some_and(|(account, role)| {
            !account.is_empty()
                && account.bytes().all(|b| b.is_ascii_digit())
                && (1..=64).contains(&role.len())
                && role
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected acs:ram::<account id>:role/<role name>, got {s:?}"
        ))
    }
}

/// `policy` or `policy_file` (not both): the policy text and the file it came from.
fn read_policy(table: &toml::Table) -> Result<(Option<String>, Option<PathBuf>), String> {
    match (table.get("policy"), table.get("policy_file")) {
        (Some(_), Some(_)) => Err("policy: give policy or policy_file, not both".to_owned()),
        (None, None) => Ok((None, None)),
        (Some(v), None) => {
            let text = v.as_str().ok_or("policy: expected a JSON string")?;
            check_policy(text).map_err(|e| format!("policy: {e}"))?;
            Ok((Some(text.to_owned()), None))
        }
        (None, Some(v)) => {
            let path = v
                .as_str()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .ok_or_else(|| format!("policy_file: expected an absolute path, got {v}"))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("policy_file: cannot read {}: {e}", path.display()))?;
            let text = text.trim().to_owned();
            check_policy(&text).map_err(|e| format!("policy_file: {}: {e}", path.display()))?;
            Ok((Some(text), Some(path)))
        }
    }
}

/// A session policy: 1 to [`MAX_POLICY_LEN`] characters of valid JSON.
fn check_policy(text: &str) -> Result<(), String> {
    let len = text.chars().count();
    if !(1..=MAX_POLICY_LEN).contains(&len) {
        return Err(format!(
            "a session policy is 1 to {MAX_POLICY_LEN} characters, got {len}"
        ));
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// A profile's `match` table: problems as `match.key: what`.
fn read_selector(v: &toml::Value) -> Result<Selector, Vec<String>> {
    let Some(t) = v.as_table() else {
        return Err(vec![
            "match: expected a table, e.g. match = { user = \"billing\" }".into(),
        ]);
    };
    if t.is_empty() {
        return Err(vec![format!(
            "match: give at least one of {}",
            MATCH_KEYS.join(", ")
        )]);
    }
    let mut s = Selector::default();
    let mut problems = Vec::new();
    for (key, v) in t {
        let read = match key.as_str() {
            "uid" => id(v).map(|n| s.uid = Some(n)),
            "user" => text(v).and_then(user).map(|u| s.user = Some(u)),
            "gid" => id(v).map(|n| s.gid = Some(n)),
            "group" => text(v).and_then(group).map(|g| s.group = Some(g)),
            "unit" => text(v).and_then(unit).map(|u| s.unit = Some(u)),
            "exe" => text(v).map(PathBuf::from).and_then(|p| {
                if p.is_absolute() {
                    s.exe = Some(p);
                    Ok(())
                } else {
                    Err(format!("expected an absolute path, got {v}"))
                }
            }),
            "exe_sha256" => text(v).and_then(sha256).map(|h| s.exe_sha256 = Some(h)),
            _ => Err(format!(
                "unknown key (known: {}){}",
                MATCH_KEYS.join(", "),
                did_you_mean(key, MATCH_KEYS)
            )),
        };
        if let Err(e) = read {
            problems.push(format!("match.{key}: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

fn id(v: &toml::Value) -> Result<u32, String> {
    v.as_integer()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("expected an integer from 0 to {}, got {v}", u32::MAX))
}

fn text(v: &toml::Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, got {v}"))
}

fn user(name: &str) -> Result<(String, u32), String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((name.to_owned(), u.uid.as_raw())),
        Ok(None) => Err(format!("no user named {name:?} on this system")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

fn group(name: &str) -> Result<(String, u32), String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok((name.to_owned(), g.gid.as_raw())),
        Ok(None) => Err(format!("no group named {name:?} on this system")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// A cgroup path as `/proc/<pid>/cgroup` writes it: a leading slash, no empty, `.` or `..`
/// component, no trailing slash (except the root `/`).
fn unit(s: &str) -> Result<String, String> {
    let ok = s == "/"
        || (s.starts_with('/')
            && s[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\n')));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected the full cgroup path as /proc/<pid>/cgroup shows it (leading slash), e.g. \
             \"/system.slice/billing.service\", got {s:?}"
        ))
    }
}

fn sha256(s: &str) -> Result<[u8; 32], String> {
    let bad = || format!("expected 64 hexadecimal digits, got {s:?}");
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
