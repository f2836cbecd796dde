//! Scanning text for secrets without quoting them.

/// Fails when `text` holds any of `secrets` or its first 16 characters (a truncated print is
/// still a leak). `what` names the text in the failure, which never quotes the secret.
///
/// # Panics
/// On a leak, when `secrets` is empty, or when a secret is shorter than 16 bytes.
pub fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    assert!(!secrets.is_empty(), "no secrets to look for in {what}");
    for s in secrets {
        assert!(s.len() >= 16, "secret too short to scan for");
        assert!(!text.contains(s.as_str()), "a secret is in {what}");
        assert!(!text.contains(&s[..16]), "a secret prefix is in {what}");
    }
}
