//! The shapes of AccessKeys: what an AccessKeyId and an AccessKeySecret look like, what a
//! placeholder looks like, and how an AccessKeyId is printed (masked).

use std::fmt;

/// `LTAI`: the case-sensitive prefix of today's AccessKeyIds.
pub(crate) const LTAI: &[u8] = b"LTAI";
/// The shortest tail after `LTAI` (older 16-character ids).
pub(crate) const LTAI_TAIL_MIN: usize = 12;
/// The longest tail after `LTAI` (current 24-character ids).
pub(crate) const LTAI_TAIL_MAX: usize = 20;
/// The length of a legacy AccessKeyId (no prefix): found only when assigned to a well-known name.
pub(crate) const LEGACY_ID_LEN: usize = 16;
/// The length of an AccessKeySecret.
pub(crate) const SECRET_LEN: usize = 30;
/// A run of this many equal characters marks a placeholder (`xxxxx`, `00000`). A random
/// 20-character tail has such a run with a probability of about 1e-6.
const PLACEHOLDER_RUN: usize = 5;
/// Fewer distinct characters than this mark a placeholder (`abababab…`).
const PLACEHOLDER_DISTINCT: usize = 5;

/// An AccessKeyId found on the host, held in full (to compare with an ActionTrail report and
/// for `--show-ids`). `Display` and `Debug` print it masked: its first 4 characters, `…`, its
/// last 4.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKeyId(String);

impl AccessKeyId {
    /// Wraps an id made of ASCII letters and digits (at least 8 characters).
    pub(crate) fn new(bytes: &[u8]) -> Self {
        debug_assert!(bytes.len() >= 8 && bytes.iter().all(u8::is_ascii_alphanumeric));
        Self(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The whole id (for `--show-ids` and comparisons).
    pub fn full(&self) -> &str {
        &self.0
    }

    /// The id masked: `LTAI…WXYZ`.
    pub fn masked(&self) -> String {
        let n = self.0.len();
        format!("{}…{}", &self.0[..4], &self.0[n - 4..])
    }

    /// The id as printed: whole with `show_ids`, else masked.
    pub fn shown(&self, show_ids: bool) -> String {
        if show_ids {
            self.0.clone()
        } else {
            self.masked()
        }
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKeyId({})", self.masked())
    }
}

/// Whether `c` is an ASCII letter or digit (the characters keys are made of).
#[inline]
pub(crate) fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// Whether a run of key characters is an obvious placeholder: a run of
/// [`PLACEHOLDER_RUN`] equal characters, fewer than [`PLACEHOLDER_DISTINCT`] distinct
/// characters, or the word `example` (any case).
pub(crate) fn is_placeholder(token: &[u8]) -> bool {
    let mut run = 0;
    let mut prev = None;
    let mut seen = [false; 128];
    let mut distinct = 0;
    for &c in token {
        run = if prev == Some(c) { run + 1 } else { 1 };
        if run >= PLACEHOLDER_RUN {
            return true;
        }
        prev = Some(c);
        let slot = &mut seen[usize::from(c & 0x7f)];
        if !*slot {
            *slot = true;
            distinct += 1;
        }
    }
    distinct < PLACEHOLDER_DISTINCT || token.windows(7).any(|w| w.eq_ignore_ascii_case(b"example"))
}

/// Words that mark a value assigned to an AccessKeyId name as a placeholder
/// (`yourAccessKeyId1`); checked on legacy ids only (lowercase, matched in any case).
const PLACEHOLDER_WORDS: [&[u8]; 8] = [
    b"your",
    b"access",
    b"secret",
    b"keyid",
    b"sample",
    b"dummy",
    b"test",
    b"changeme",
];

/// Whether a token (a maximal run of key characters) is shaped like a secret or a legacy id
/// of `len` characters: that length, an uppercase letter and a lowercase letter or a digit
/// (keys are drawn from all 62 letters and digits: a random 30-character token lacks an
/// uppercase letter with a probability of about 1e-7, a 16-character one about 2e-4; a
/// lowercase hex digest, a lowercase word, a number or an upper-case constant is rejected),
/// not a placeholder.
pub(crate) fn is_random_token(token: &[u8], len: usize) -> bool {
    token.len() == len
        && token.iter().any(u8::is_ascii_uppercase)
        && token
            .iter()
            .any(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !is_placeholder(token)
}

/// Whether a value assigned to an AccessKeyId name is a legacy AccessKeyId: a random token of
/// [`LEGACY_ID_LEN`] characters with none of the [`PLACEHOLDER_WORDS`].
pub(crate) fn is_legacy_id(token: &[u8]) -> bool {
    is_random_token(token, LEGACY_ID_LEN)
        && !PLACEHOLDER_WORDS
            .iter()
            .any(|w| token.windows(w.len()).any(|t| t.eq_ignore_ascii_case(w)))
}

/// If `text[at..]` starts an AccessKeyId (`LTAI` + 12–20 key characters, not preceded or
/// followed by a key character, not a placeholder), its length.
pub(crate) fn ltai_id_at(text: &[u8], at: usize) -> Option<usize> {
    if at > 0 && is_key_char(text[at - 1]) {
        return None;
    }
    let tail_start = at + LTAI.len();
    let tail_len = text[tail_start..]
        .iter()
        .take(LTAI_TAIL_MAX + 1)
        .take_while(|c| is_key_char(**c))
        .count();
    let tail = &text[tail_start..tail_start + tail_len];
    ((LTAI_TAIL_MIN..=LTAI_TAIL_MAX).contains(&tail_len) && !is_placeholder(tail))
        .then_some(LTAI.len() + tail_len)
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake keys built at test time (the source holds no `LTAI` look-alike a scanner would
    //! flag).

    /// A deterministic pseudo-random run of `len` key characters from `seed`: no two equal
    /// characters side by side, at least one lowercase letter, one digit and one uppercase letter.
    pub(crate) fn token(seed: u64, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out: Vec<u8> = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let c = CHARS[(state % CHARS.len() as u64) as usize];
            if out.last() != Some(&c) {
                out.push(c);
            }
        }
        out[0] = b'a' + (seed % 26) as u8;
        out[1] = b'0' + (seed % 10) as u8;
        out[2] = b'A' + (seed % 26) as u8;
        String::from_utf8(out).expect("ASCII")
    }

    /// A fake `LTAI` AccessKeyId with a tail of `tail` characters.
    pub(crate) fn ltai(seed: u64, tail: usize) -> String {
        format!("{}{}", ["LT", "AI"].concat(), token(seed, tail))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{ltai, token};
    use super::*;

    #[test]
    fn masks_first_and_last_four() {
        let full = ltai(1, 20);
        let id = AccessKeyId::new(full.as_bytes());
        let masked = format!("{}…{}", &full[..4], &full[20..]);
        assert_eq!(id.masked(), masked);
        assert_eq!(
            format!("{id} {id:?}"),
            format!("{masked} AccessKeyId({masked})")
        );
        assert_eq!(id.shown(true), full);
    }

    #[test]
    fn ltai_ids_by_length_and_boundary() {
        for (tail, want) in [(11, None), (12, Some(16)), (20, Some(24)), (21, None)] {
            assert_eq!(ltai_id_at(ltai(2, tail).as_bytes(), 0), want, "tail {tail}");
        }
        let id = ltai(3, 12);
        assert_eq!(
            ltai_id_at(format!("x{id}").as_bytes(), 1),
            None,
            "after a letter"
        );
        assert_eq!(ltai_id_at(format!("_{id}_").as_bytes(), 1), Some(16));
    }

    #[test]
    fn placeholders() {
        assert!(is_placeholder(b"xxxxxxxxxxxxxxxxxxxx"));
        assert!(is_placeholder(b"5tXXXXXXXXXXXXXXXXXX"));
        assert!(is_placeholder(b"abababababababab"));
        assert!(is_placeholder(b"5tExampleKey1234"));
        assert!(!is_placeholder(token(4, 20).as_bytes()));
        let stars = format!("{}****************", ["LT", "AI"].concat());
        assert_eq!(ltai_id_at(stars.as_bytes(), 0), None);
        assert!(is_random_token(token(5, 30).as_bytes(), 30));
        assert!(
            !is_random_token(b"0123456789abcdef0123456789abcd", 30),
            "lowercase hex"
        );
        assert!(
            !is_random_token(b"THISISANUPPERCASECONSTANTNAMEX", 30),
            "upper case"
        );
        assert!(
            is_random_token(b"ThisIsJustAVeryLongWordInCamel", 30),
            "camel case"
        );
        assert!(is_legacy_id(token(6, 16).as_bytes()));
        assert!(!is_legacy_id(b"yourAccessKeyId1"));
        assert!(!is_legacy_id(b"MyTestKeyValue12"));
    }
}
