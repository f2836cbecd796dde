//! [`Mode`]: permission bits as a quoted octal string.

use super::{not_a_string, Codec};

/// Permission bits written as a quoted octal string (`"0600"`, `"660"`, `"0o640"`), up to
/// `"0777"`. A bare number (`600`) is refused with the quoted spelling to write instead
/// (`"0600"`): TOML would read `600` as decimal, and `0600` is not valid TOML.
#[derive(Debug, Clone, Copy)]
pub struct Mode;

impl Codec<u32> for Mode {
    fn decode(&self, v: &toml::Value) -> Result<u32, String> {
        match v {
            toml::Value::String(s) => parse_mode(s),
            toml::Value::Integer(i) => match parse_mode(&i.to_string()) {
                Ok(m) => Err(format!(
                    "expected a quoted octal string, got {i}; write \"{m:04o}\" (with the quotes)"
                )),
                Err(e) => Err(e),
            },
            other => Err(not_a_string(other)),
        }
    }
    fn encode(&self, m: &u32) -> Option<String> {
        Some(format!("\"{m:04o}\""))
    }
}

/// Parses an octal permission string such as `"0600"` or `"660"`.
///
/// # Errors
/// Anything but 1 to 4 octal digits (an optional `0o` prefix) up to `0777`.
pub fn parse_mode(m: &str) -> Result<u32, String> {
    let digits = m.strip_prefix("0o").unwrap_or(m);
    let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(v) if octal && v <= 0o777 => Ok(v),
        _ => Err(format!(
            "expected an octal permission string from \"0000\" to \"0777\" such as \"0600\", got {m:?}"
        )),
    }
}
