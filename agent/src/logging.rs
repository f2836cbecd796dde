//! Log output on stderr, and the log level that `SIGHUP` can change.
//!
//! Three line styles ([`Style`]):
//!
//! - **journal**: stderr is connected to the systemd journal (`JOURNAL_STREAM` holds the
//!   `device:inode` of stderr, systemd.exec(5)): plain lines without timestamp or colour, since
//!   the journal records its own time and metadata;
//! - **text**: the usual lines with a UTC timestamp, coloured only when stderr is a terminal;
//! - **json**: one JSON object per line, for log shippers (`[log] format = "json"` /
//!   `--log-format json`), whatever stderr is.
//!
//! Every value is written escaped in all three styles (module `escape`): no value the agent does not
//! control (a caller's executable path, text from the metadata service or STS) can end a line,
//! forge a field or reach a terminal as an escape sequence. Log such a value as a string field
//! (`exe = exe.as_str()`), which the text styles quote, not with `%` (written unquoted).
//!
//! The filter is `RUST_LOG` if set and valid, else `[log] level`; both are checked by
//! [`parse_level`] (every directive names a level; see module `level`); [`LogReload::set_level`] replaces it
//! (unless `RUST_LOG` is set, which keeps precedence). The audit trail ([`AUDIT_TARGET`] at
//! `info` and above) is written whatever the filter says: neither `[log] level` (at start or
//! after `SIGHUP`) nor `RUST_LOG` can silence it, only raise its detail (`audit=debug`).

mod escape;
mod level;

use std::os::fd::AsFd;

use tracing::Level;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

pub(crate) use escape::escape_line;
use escape::{EscapedFields, JsonEscapes};
pub use level::{parse_level, LEVELS};

use crate::settings::{section, Text};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Timestamped lines; `ansi`: with colour.
    Text {
        /// Colour escape codes (only for a terminal).
        ansi: bool,
    },
    /// Lines for the journal: no timestamp, no colour.
    Journal,
    /// One JSON object per line.
    Json,
}

impl Style {
    /// The style for `format` given where stderr goes (see the module docs).
    pub fn for_stderr(format: LogFormat) -> Style {
        match format {
            LogFormat::Json => Style::Json,
            LogFormat::Text if stderr_is_journal() => Style::Journal,
            LogFormat::Text => Style::Text {
                ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            },
        }
    }
}

/// Whether stderr is the journal: `JOURNAL_STREAM` matches stderr's device and inode.
pub fn stderr_is_journal() -> bool {
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    let var = std::env::var("JOURNAL_STREAM").ok();
    journal_stream_matches(var.as_deref(), stat.st_dev, stat.st_ino)
}

/// Whether `journal_stream` (`JOURNAL_STREAM`, `"<device>:<inode>"` in decimal) names the file
/// with device `dev` and inode `ino`.
pub fn journal_stream_matches(journal_stream: Option<&str>, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// The `tracing` target of the audit trail (`server::audit`), written at every log level.
pub const AUDIT_TARGET: &str = "audit";

/// The formatting layer for `style`, writing to `writer`, every value escaped (module `escape`).
pub fn fmt_layer<S, W>(style: Style, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer();
    match style {
        Style::Text { ansi } => layer
            .fmt_fields(EscapedFields)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        Style::Journal => layer
            .fmt_fields(EscapedFields)
            .without_time()
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
        Style::Json => layer
            .json()
            .flatten_event(true)
            .with_writer(JsonEscapes(writer))
            .boxed(),
    }
}

/// What is written: what `level` lets through, and the audit trail ([`AUDIT_TARGET`] at
/// `info` and above) whatever `level` says.
fn with_audit<S>(level: reload::Layer<EnvFilter, S>) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    level.or(Targets::new().with_target(AUDIT_TARGET, Level::INFO))
}

/// The subscriber [`init`] installs: `filter` (reloadable, see [`LogReload`]) or the audit
/// trail, formatted in `style` to `writer`.
fn subscriber<W>(
    filter: EnvFilter,
    rust_log: bool,
    style: Style,
    writer: W,
) -> (impl tracing::Subscriber + Send + Sync, LogReload)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter);
    let layer = fmt_layer(style, writer).with_filter(with_audit(filter));
    let subscriber = tracing_subscriber::registry().with(layer);
    (subscriber, LogReload { handle, rust_log })
}

/// Changes the log filter of the running process (see [`init`]).
#[derive(Debug, Clone)]
pub struct LogReload {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it keeps precedence over `[log] level`.
    rust_log: bool,
}

impl LogReload {
    /// Replaces the filter with `level` (a `tracing` filter such as `debug` or
    /// `info,audit=debug`). Returns `Ok(false)` without a change while `RUST_LOG` is set.
    ///
    /// # Errors
    /// The filter does not parse, or the subscriber is gone; the message says which.
    pub fn set_level(&self, level: &str) -> Result<bool, String> {
        if self.rust_log {
            return Ok(false);
        }
        let filter = EnvFilter::builder()
            .parse(level)
            .map_err(|e| format!("not a valid log filter ({e}): {level:?}"))?;
        self.handle
            .reload(filter)
            .map(|()| true)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    }
}

/// Installs the global subscriber on stderr in the style [`Style::for_stderr`] picks, with
/// a reloadable filter. Returns `None` when a global subscriber was already installed.
///
/// `RUST_LOG`, when set, replaces `[log] level` if [`parse_level`] accepts it; otherwise it is
/// ignored (`[log] level` applies) and a warning naming it is logged: a stray `RUST_LOG` meant
/// for another program must neither stop the agent nor silence its log.
pub fn init(log: &Config) -> Option<LogReload> {
    let env = std::env::var("RUST_LOG").ok();
    let checked = env.as_deref().map(parse_level);
    let filter = match &checked {
        Some(Ok(v)) => EnvFilter::new(v),
        _ => EnvFilter::new(&log.level),
    };
    let rust_log = matches!(checked, Some(Ok(_)));
    let style = Style::for_stderr(log.format);
    let (subscriber, reload) = subscriber(filter, rust_log, style, std::io::stderr);
    let installed = subscriber.try_init().ok().map(|()| reload);
    if let (Some(value), Some(Err(problem))) = (env.as_deref(), &checked) {
        tracing::warn!(
            rust_log = value,
            problem = problem.as_str(),
            level = log.level.as_str(),
            "RUST_LOG ignored: not a valid log filter; [log] level applies"
        );
    }
    installed
}

/// `[log] level` by default.
pub const DEFAULT_LEVEL: &str = "info";

section! {
    /// `[log]`: what is logged and how lines look.
    pub struct Config["log"] {
        /// log filter: a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or
        /// comma-separated `target=level` directives with an optional default level
        /// (`info,audit=debug`); any other word is a configuration error; a valid `RUST_LOG`
        /// overrides it; the audit trail is written whatever it says
        level: String = DEFAULT_LEVEL.to_owned(), "level",
            Text { parse: parse_level, print: String::clone }, Live;
        /// `text` or `json` (text lines lose their timestamp and colour when stderr is the
        /// journal)
        format: LogFormat = LogFormat::Text, "format", Text::of(), Restart;
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Arc, Mutex};

    #[test]
    fn journal_stream_must_name_stderrs_device_and_inode() {
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        let v = format!("{}:{}", m.dev(), m.ino());
        assert!(journal_stream_matches(Some(&v), m.dev(), m.ino()));
        assert!(!journal_stream_matches(Some(&v), m.dev(), m.ino() + 1));
        assert!(!journal_stream_matches(None, m.dev(), m.ino()));
        assert!(!journal_stream_matches(Some("garbage"), m.dev(), m.ino()));
        assert!(!journal_stream_matches(Some("1:x"), 1, 0));
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn one_line(style: Style) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::registry().with(fmt_layer(style, move || buf.clone()));
        tracing::subscriber::with_default(sub, || tracing::warn!(answer = 42, "hello"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn journal_lines_have_no_timestamp_and_no_colour() {
        let line = one_line(Style::Journal);
        assert!(line.starts_with(" WARN "), "{line:?}");
        assert!(line.contains("hello answer=42"), "{line:?}");
        assert!(!line.contains('\x1b'), "{line:?}");
        assert_eq!(line.lines().count(), 1);
        let text = one_line(Style::Text { ansi: false });
        let year = &text[..4];
        assert!(
            year.bytes().all(|b| b.is_ascii_digit()),
            "timestamp first: {text:?}"
        );
        assert!(text.contains("Z  WARN "), "{text:?}");
        let json: serde_json::Value = serde_json::from_str(one_line(Style::Json).trim()).unwrap();
        assert_eq!(json["level"], "WARN");
        assert_eq!(json["message"], "hello");
        assert_eq!(json["answer"], 42);
    }

    #[test]
    fn set_level_changes_the_filter_unless_rust_log_rules() {
        let buf = Buf::default();
        let out = buf.clone();
        let (sub, log) = subscriber(EnvFilter::new("warn"), false, Style::Journal, move || {
            buf.clone()
        });
        tracing::subscriber::with_default(sub, || {
            tracing::info!("before");
            assert_eq!(log.set_level("info"), Ok(true));
            tracing::info!("after");
            assert!(log.set_level("info,[").is_err());
            let pinned = LogReload {
                rust_log: true,
                ..log.clone()
            };
            assert_eq!(pinned.set_level("error"), Ok(false));
            tracing::info!("still info");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("before"), "{text}");
        assert!(text.contains("after"), "{text}");
        assert!(text.contains("still info"), "{text}");
    }

    /// The lines written while `f` runs under [`init`]'s subscriber with `filter` in `style`.
    fn lines_under(filter: &str, style: Style, f: impl FnOnce(&LogReload)) -> Vec<String> {
        let buf = Buf::default();
        let out = buf.clone();
        let (sub, log) = subscriber(EnvFilter::new(filter), false, style, move || buf.clone());
        tracing::subscriber::with_default(sub, || f(&log));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_audit_is_written_whatever_the_level() {
        for level in ["warn", "error", "off", "warn,audit=off", "audit=error"] {
            let lines = lines_under(level, Style::Journal, |log| {
                tracing::info!(target: AUDIT_TARGET, event = "issued", "audited first");
                tracing::info!("not audited");
                assert_eq!(log.set_level("off"), Ok(true));
                tracing::info!(target: AUDIT_TARGET, event = "issued", "audited after SIGHUP");
                tracing::warn!(target: AUDIT_TARGET, event = "denied", "denial audited");
                tracing::debug!(target: AUDIT_TARGET, "audit detail, not asked for");
            });
            let text = lines.join("\n");
            assert_eq!(lines.len(), 3, "level {level:?}: {text}");
            assert!(text.contains("audited first"), "{level:?}: {text}");
            assert!(text.contains("audited after SIGHUP"), "{level:?}: {text}");
            assert!(text.contains("denial audited"), "{level:?}: {text}");
        }
        // RUST_LOG (kept over `[log] level`) cannot silence it either; `audit=debug` adds detail.
        let buf = Buf::default();
        let out = buf.clone();
        let (sub, log) = subscriber(EnvFilter::new("off"), true, Style::Journal, move || {
            buf.clone()
        });
        tracing::subscriber::with_default(sub, || {
            assert_eq!(log.set_level("info"), Ok(false));
            tracing::info!(target: AUDIT_TARGET, "audited under RUST_LOG=off");
            tracing::info!("not audited");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("audited under RUST_LOG=off"), "{text}");
        let lines = lines_under("warn,audit=debug", Style::Journal, |_| {
            tracing::debug!(target: AUDIT_TARGET, "audit detail");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
    }

    /// A value with a line break, a whole forged line after it, a terminal escape (clear the
    /// screen), a C1 CSI, DEL, quotes, `=` and spaces, and a bidirectional override.
    const FORGED: &str = "/tmp/x\n2026-01-01T00:00:00Z  INFO audit: credentials issued to caller \
                          uid=0 access_key_id=STS.FORGED\r\u{1b}[2J\u{9b}31m\u{7f} \"q\" a=b \u{202e}";

    fn hostile_event() {
        tracing::info!(target: AUDIT_TARGET, event = "issued", exe = FORGED, uid = 1000,
            "credentials issued to caller");
        tracing::warn!(error = %FORGED, shown = ?FORGED, "refresh failed: {FORGED}");
    }

    /// No unsafe character, once the formatter's own colours (`ESC [ … m`) are taken out.
    fn assert_no_raw_control(lines: &[String]) {
        for line in lines {
            let mut plain = String::new();
            let mut rest = line.as_str();
            while let Some(at) = rest.find("\x1b[") {
                plain.push_str(&rest[..at]);
                let sgr = rest[at + 2..].find(|c: char| !c.is_ascii_digit() && c != ';');
                let end = sgr.filter(|&e| rest[at + 2 + e..].starts_with('m'));
                let Some(end) = end else {
                    panic!("not a colour: {line:?}")
                };
                rest = &rest[at + 3 + end..];
            }
            plain.push_str(rest);
            let bad: Vec<char> = plain.chars().filter(|&c| escape::is_unsafe(c)).collect();
            assert!(bad.is_empty(), "raw {bad:?} in {line:?}");
        }
    }

    #[test]
    fn text_and_journal_escape_every_value_and_quote_strings() {
        for style in [
            Style::Journal,
            Style::Text { ansi: false },
            Style::Text { ansi: true },
        ] {
            let lines = lines_under("info", style, |_| hostile_event());
            assert_eq!(lines.len(), 2, "{style:?}: one line per event: {lines:#?}");
            assert_no_raw_control(&lines);
            let escaped = r#"exe="/tmp/x\n2026-01-01T00:00:00Z  INFO audit: credentials issued to caller uid=0 access_key_id=STS.FORGED\r\u{1b}[2J\u{9b}31m\u{7f} \"q\" a=b \u{202e}" uid=1000"#;
            assert!(lines[0].contains(escaped), "{style:?}: {}", lines[0]);
            assert!(
                lines[1].contains(r"refresh failed: /tmp/x\n2026"),
                "{}",
                lines[1]
            );
            assert!(lines[1].contains(r"error=/tmp/x\n2026"), "{}", lines[1]);
            assert!(lines[1].contains(r#"shown="/tmp/x\n2026"#), "{}", lines[1]);
        }
    }

    /// Format characters beyond the bidirectional overrides: the Arabic letter mark (a bidi
    /// mark like U+200F), tag characters (invisible text, past the BMP), the soft hyphen and
    /// the Mongolian vowel separator. None reaches a line raw in any style; JSON decodes them
    /// back (tags as a surrogate pair).
    #[test]
    fn every_format_character_is_escaped_in_every_style() {
        const HIDDEN: &str = "STS.ok\u{61c}\u{e0001}\u{e0041}\u{e007f}\u{ad}\u{180e}\u{fffb}";
        let planted = [
            '\u{61c}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{e007f}',
            '\u{ad}',
            '\u{180e}',
            '\u{fffb}',
        ];
        let event = || {
            tracing::info!(target: AUDIT_TARGET, exe = HIDDEN, shown = ?HIDDEN, error = %HIDDEN,
                "issued to {HIDDEN}");
        };
        for style in [Style::Journal, Style::Text { ansi: false }, Style::Json] {
            let lines = lines_under("info", style, |_| event());
            assert_eq!(lines.len(), 1, "{style:?}: {lines:#?}");
            assert!(
                !lines[0].contains(planted),
                "{style:?}: raw in {:?}",
                lines[0]
            );
            if style == Style::Json {
                let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
                assert_eq!(v["exe"], HIDDEN, "{}", lines[0]);
                assert_eq!(v["error"], HIDDEN, "{}", lines[0]);
                assert!(lines[0].contains(r"\udb40\udc41"), "{}", lines[0]);
            } else {
                assert!(
                    lines[0].contains(r#"exe="STS.ok\u{61c}\u{e0001}\u{e0041}"#),
                    "{}",
                    lines[0]
                );
                assert!(lines[0].contains(r"error=STS.ok\u{61c}"), "{}", lines[0]);
            }
        }
    }

    #[test]
    fn json_escapes_every_control_and_format_character() {
        let lines = lines_under("info", Style::Json, |_| hostile_event());
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_no_raw_control(&lines);
        let issued: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(issued["exe"], FORGED, "{}", lines[0]);
        assert_eq!(issued["uid"], 1000);
        let failed: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(failed["error"], FORGED, "{}", lines[1]);
        assert!(lines[1].contains(r"\u009b31m\u007f"), "{}", lines[1]);
    }
}
