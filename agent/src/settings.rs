//! How a configuration key is declared: once, beside the code that uses it.
//!
//! Each module that reads configuration owns its section as a typed value and declares it with
//! `section!`: one line per key gives the field, its type, its default, the key's name in the
//! file, how the file's value is read and checked (a [`Codec`]), and whether a reload applies it
//! ([`Reload`]); the field's doc comment is the key's documentation. Everything else is derived
//! from that declaration by [`crate::config`] and [`crate::reload`]: parsing with every problem
//! named, unknown-key suggestions, which changed keys need a restart, the README's
//! configuration table and the example file's checks, and the fuzz target's bounds.
//!
//! This module knows no section: it is the vocabulary the owners and the parser share, so that
//! data flows one way (owners → `settings` ← `config`).

use std::fmt;
use std::time::Duration;

mod mode;

pub use mode::{parse_mode, Mode};

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// `SIGHUP` applies it (see [`crate::reload`] for what "applies" means per section).
    Live,
    /// Kept until the agent restarts; a reload that changes it logs a warning naming it.
    Restart,
}

/// One declared key of a section `C`: everything the parser, the reloader and the docs need.
/// Made by `section!`; the function pointers read or write the one field the key names.
pub struct Key<C: 'static> {
    /// The key's name in the file, e.g. `token_ttl_secs`.
    pub name: &'static str,
    /// The field's doc comment (its lines joined): the key's documentation.
    pub doc: &'static str,
    /// Whether a reload applies it.
    pub reload: Reload,
    /// Reads the file's value into the section.
    ///
    /// # Errors
    /// What is wrong with the value, e.g. `expected an integer from 1 to 21600, got 0`.
    pub set: fn(&mut C, &toml::Value) -> Result<(), String>,
    /// The value in TOML (`21600`, `"0600"`, `[0]`), or `None` when unset.
    pub show: fn(&C) -> Option<String>,
    /// Whether the key's value differs between two sections.
    pub changed: fn(&C, &C) -> bool,
    /// Copies the key's value from another section (a restart-only key keeps its old value).
    pub keep: fn(&mut C, &C),
    /// The accepted range of an integer key, as written in the file.
    pub bounds: fn() -> Option<(u64, u64)>,
}

impl<C> fmt::Debug for Key<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("reload", &self.reload)
            .field("bounds", &(self.bounds)())
            .finish_non_exhaustive()
    }
}

impl<C> Key<C> {
    /// The documentation as one line (the doc comment's lines joined, trimmed).
    pub fn doc_line(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A configuration section declared with `section!`.
pub trait Section: Default + Clone + PartialEq + fmt::Debug + 'static {
    /// The section's name in the file, e.g. `metadata` for `[metadata]`.
    const NAME: &'static str;
    /// Every key of the section, in the order the docs list them.
    fn keys() -> &'static [Key<Self>];
    /// Checks between keys, run after every key was read: `(key, problem)` pairs.
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// How a key's value is read from the file and written back.
pub trait Codec<T> {
    /// Reads and checks the file's value.
    ///
    /// # Errors
    /// What is wrong, naming what was expected and what was given.
    fn decode(&self, value: &toml::Value) -> Result<T, String>;
    /// The value as TOML, `None` when unset.
    fn encode(&self, value: &T) -> Option<String>;
    /// The accepted integer range, for integer keys.
    fn bounds(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A value as the problem messages show it: strings quoted, everything else as TOML.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn integer(v: &toml::Value, min: u64, max: u64) -> Result<u64, String> {
    match v.as_integer().and_then(|i| u64::try_from(i).ok()) {
        Some(x) if (min..=max).contains(&x) => Ok(x),
        _ => Err(format!(
            "expected an integer from {min} to {max}, got {}",
            show(v)
        )),
    }
}

/// A duration written as whole seconds (keys ending in `_secs`), `min..=max`.
#[derive(Debug, Clone, Copy)]
pub struct Secs(pub u64, pub u64);

impl Codec<Duration> for Secs {
    fn decode(&self, v: &toml::Value) -> Result<Duration, String> {
        integer(v, self.0, self.1).map(Duration::from_secs)
    }
    fn encode(&self, d: &Duration) -> Option<String> {
        Some(d.as_secs().to_string())
    }
    fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.0, self.1))
    }
}

/// A duration written as whole milliseconds (keys ending in `_ms`), `min..=max`.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub u64, pub u64);

impl Codec<Duration> for Millis {
    fn decode(&self, v: &toml::Value) -> Result<Duration, String> {
        integer(v, self.0, self.1).map(Duration::from_millis)
    }
    fn encode(&self, d: &Duration) -> Option<String> {
        Some(d.as_millis().to_string())
    }
    fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.0, self.1))
    }
}

/// A count, `min..=max`.
#[derive(Debug, Clone, Copy)]
pub struct Count(pub u64, pub u64);

impl Codec<usize> for Count {
    fn decode(&self, v: &toml::Value) -> Result<usize, String> {
        integer(v, self.0, self.1).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
    }
    fn encode(&self, n: &usize) -> Option<String> {
        Some(n.to_string())
    }
    fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.0, self.1))
    }
}

/// `true` or `false`.
#[derive(Debug, Clone, Copy)]
pub struct Flag;

impl Codec<bool> for Flag {
    fn decode(&self, v: &toml::Value) -> Result<bool, String> {
        v.as_bool()
            .ok_or_else(|| format!("expected true or false, got {}", show(v)))
    }
    fn encode(&self, b: &bool) -> Option<String> {
        Some(b.to_string())
    }
}

/// An array of uids or gids, each from 0 to 4294967294 (`u32::MAX` is the kernel's "no id").
#[derive(Debug, Clone, Copy)]
pub struct Ids;

impl Codec<Vec<u32>> for Ids {
    fn decode(&self, v: &toml::Value) -> Result<Vec<u32>, String> {
        let items = v.as_array().ok_or_else(|| {
            format!(
                "expected an array of ids such as [0, 1000], got {}",
                show(v)
            )
        })?;
        items
            .iter()
            .map(
                |item| match item.as_integer().and_then(|i| u32::try_from(i).ok()) {
                    Some(id) if id != u32::MAX => Ok(id),
                    _ => Err(format!(
                        "expected ids from 0 to 4294967294, got {}",
                        show(item)
                    )),
                },
            )
            .collect()
    }
    fn encode(&self, ids: &Vec<u32>) -> Option<String> {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        Some(format!("[{}]", list.join(", ")))
    }
}

/// A string read by the owner's own rule: `parse` checks it and makes the typed value, `print`
/// gives the string back (so `parse(print(x)) == x`).
pub struct Text<T> {
    /// Checks and converts the string.
    pub parse: fn(&str) -> Result<T, String>,
    /// The string the value was read from.
    pub print: fn(&T) -> String,
}

impl<T> Text<T> {
    /// A text key whose type reads itself with `FromStr` (error text: what was wrong and what
    /// was given) and prints itself with `Display`.
    pub fn of() -> Text<T>
    where
        T: std::str::FromStr<Err = String> + fmt::Display,
    {
        Text {
            parse: |s| s.parse(),
            print: |t| t.to_string(),
        }
    }
}

impl<T> fmt::Debug for Text<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Text")
    }
}

impl<T> Codec<T> for Text<T> {
    fn decode(&self, v: &toml::Value) -> Result<T, String> {
        match v.as_str() {
            Some(s) => (self.parse)(s),
            None => Err(not_a_string(v)),
        }
    }
    fn encode(&self, t: &T) -> Option<String> {
        Some(toml::Value::String((self.print)(t)).to_string())
    }
}

/// "expected a string, got …", with the quoted spelling when the value was a bare number or
/// word (`got 8080; write it in quotes: "8080"`).
pub(crate) fn not_a_string(v: &toml::Value) -> String {
    let bare = match v {
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            format!("; write it in quotes: \"{v}\"")
        }
        _ => String::new(),
    };
    format!("expected a string, got {}{bare}", show(v))
}

/// A key that may be left unset (`None`); a value in the file is read by the inner codec.
#[derive(Debug, Clone, Copy)]
pub struct Optional<C>(pub C);

impl<T, C: Codec<T>> Codec<Option<T>> for Optional<C> {
    fn decode(&self, v: &toml::Value) -> Result<Option<T>, String> {
        self.0.decode(v).map(Some)
    }
    fn encode(&self, t: &Option<T>) -> Option<String> {
        t.as_ref().and_then(|t| self.0.encode(t))
    }
    fn bounds(&self) -> Option<(u64, u64)> {
        self.0.bounds()
    }
}

/// Reads `table` into `section`, every key by its declaration; returns one problem per bad or
/// unknown key, as `[section] key: what` (the section's cross-key checks run last).
pub fn read<S: Section>(section: &mut S, table: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in table {
        match S::keys().iter().find(|k| k.name == name) {
            Some(key) => {
                if let Err(e) = (key.set)(section, value) {
                    problems.push(format!("[{}] {name}: {e}", S::NAME));
                }
            }
            None => problems.push(format!("[{}] {name}: {}", S::NAME, unknown_key::<S>(name))),
        }
    }
    if problems.is_empty() {
        for (key, problem) in section.check() {
            problems.push(format!("[{}] {key}: {problem}", S::NAME));
        }
    }
    problems
}

/// Sets one key from a command-line flag; the problem names the key and the flag.
///
/// # Errors
/// `[section] key (--flag): what`, or an unknown key (a programming error, reported the same).
pub fn set_from_flag<S: Section>(
    section: &mut S,
    name: &str,
    flag: &str,
    value: toml::Value,
) -> Result<(), String> {
    let key = S::keys().iter().find(|k| k.name == name);
    let result = match key {
        Some(key) => (key.set)(section, &value),
        None => Err(unknown_key::<S>(name)),
    };
    result.map_err(|e| format!("[{}] {name} ({flag}): {e}", S::NAME))
}

/// "unknown key (known: …)", with the closest known name suggested when one is close.
fn unknown_key<S: Section>(name: &str) -> String {
    let known: Vec<&str> = S::keys().iter().map(|k| k.name).collect();
    format!(
        "unknown key (known: {}){}",
        known.join(", "),
        did_you_mean(name, &known)
    )
}

/// `; did you mean "x"?` when a known name is within a small edit distance of `name`.
pub fn did_you_mean(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map_or_else(String::new, |(_, k)| format!("; did you mean {k:?}?"))
}

/// The keys whose values differ between `old` and `new` and that need a restart, as
/// `[section] key`; each of them is reset to its old value in `new`.
pub fn keep_restart_keys<S: Section>(old: &S, new: &mut S) -> Vec<String> {
    let mut changed = Vec::new();
    for key in S::keys().iter().filter(|k| k.reload == Reload::Restart) {
        if (key.changed)(old, new) {
            changed.push(format!("[{}] {}", S::NAME, key.name));
            (key.keep)(new, old);
        }
    }
    changed
}

/// The section as TOML (`[name]` and every key that is set), which [`read`] reads back to the
/// same value.
pub fn render<S: Section>(section: &S) -> String {
    let mut out = format!("[{}]\n", S::NAME);
    for key in S::keys() {
        if let Some(v) = (key.show)(section) {
            out.push_str(&format!("{} = {v}\n", key.name));
        }
    }
    out
}

/// Every integer key's value with its declared range, `([section] key, value, min, max)`.
pub fn bounded_values<S: Section>(section: &S) -> Vec<(String, u64, u64, u64)> {
    S::keys()
        .iter()
        .filter_map(|k| {
            let (min, max) = (k.bounds)()?;
            let value = (k.show)(section)?.parse().ok()?;
            Some((format!("[{}] {}", S::NAME, k.name), value, min, max))
        })
        .collect()
}

/// One row of the configuration reference (README table, example file checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `[section] key`.
    pub key: String,
    /// The default as TOML, or `None` when unset by default.
    pub default: Option<String>,
    /// Whether a reload applies it.
    pub reload: Reload,
    /// The key's documentation, one line.
    pub doc: String,
}

/// The reference rows of a section, in declaration order.
pub fn reference<S: Section>() -> Vec<Reference> {
    let defaults = S::default();
    S::keys()
        .iter()
        .map(|k| Reference {
            key: format!("[{}] {}", S::NAME, k.name),
            default: (k.show)(&defaults),
            reload: k.reload,
            doc: k.doc_line(),
        })
        .collect()
}

/// Declares a configuration section: the struct, its `Default`, and its [`Section`] key table,
/// from one line per key:
///
/// ```text
/// section! {
///     /// `[metadata]`: how to reach the metadata service.
///     pub struct Config["metadata"] {
///         /// Metadata token TTL asked for, in seconds.
///         token_ttl: Duration = DEFAULT_TOKEN_TTL, "token_ttl_secs", Secs(1, 21_600), Restart;
///     }
///     check = cross_checks; // optional: fn(&Config) -> Vec<(&'static str, String)>
/// }
/// ```
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident[$section:literal] {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty = $default:expr, $key:literal, $codec:expr, $reload:ident;
            )*
        }
        $(check = $check:path;)?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            const KEYS: &'static [$crate::settings::Key<$name>] = &[
                $(
                    $crate::settings::Key {
                        name: $key,
                        doc: concat!($($doc, " ",)*),
                        reload: $crate::settings::Reload::$reload,
                        set: |c: &mut $name, v: &toml::Value| {
                            c.$field = $crate::settings::Codec::<$ty>::decode(&$codec, v)?;
                            Ok(())
                        },
                        show: |c: &$name| $crate::settings::Codec::<$ty>::encode(&$codec, &c.$field),
                        changed: |a: &$name, b: &$name| a.$field != b.$field,
                        keep: |c: &mut $name, old: &$name| c.$field = old.$field.clone(),
                        bounds: || $crate::settings::Codec::<$ty>::bounds(&$codec),
                    },
                )*
            ];
        }

        impl $crate::settings::Section for $name {
            const NAME: &'static str = $section;
            fn keys() -> &'static [$crate::settings::Key<$name>] {
                $name::KEYS
            }
            $(
                fn check(&self) -> Vec<(&'static str, String)> {
                    $check(self)
                }
            )?
        }
    };
}
pub(crate) use section;

#[cfg(test)]
mod tests;
