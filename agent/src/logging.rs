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
//! The filter is `RUST_LOG` if set, else `[log] level`; [`LogReload::set_level`] replaces it
//! (unless `RUST_LOG` is set, which keeps precedence).

use std::os::fd::AsFd;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

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

/// The formatting layer for `style`, writing to `writer`.
pub fn fmt_layer<S, W>(style: Style, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match style {
        Style::Text { ansi } => layer.with_ansi(ansi).boxed(),
        Style::Journal => layer.without_time().with_ansi(false).boxed(),
        Style::Json => layer.json().flatten_event(true).boxed(),
    }
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
pub fn init(log: &Config) -> Option<LogReload> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let rust_log = env.is_some();
    let filter = env.unwrap_or_else(|| EnvFilter::new(&log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let style = Style::for_stderr(log.format);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(style, std::io::stderr))
        .try_init()
        .ok()
        .map(|()| LogReload { handle, rust_log })
}

/// `[log] level` by default.
pub const DEFAULT_LEVEL: &str = "info";

section! {
    /// `[log]`: what is logged and how lines look.
    pub struct Config["log"] {
        /// log filter (`info`, `debug`, `info,audit=debug`); `RUST_LOG` overrides it
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

/// Checks a log filter (`tracing_subscriber`'s `EnvFilter` syntax).
///
/// # Errors
/// `not a valid log filter (…), got "…"`.
pub fn parse_level(l: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(l)
        .map(|_| l.to_owned())
        .map_err(|e| format!("not a valid log filter ({e}), got {l:?}"))
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
        let (filter, handle) = reload::Layer::new(EnvFilter::new("warn"));
        let sub = tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer(Style::Journal, move || buf.clone()));
        let log = LogReload {
            handle: handle.clone(),
            rust_log: false,
        };
        tracing::subscriber::with_default(sub, || {
            tracing::info!("before");
            assert_eq!(log.set_level("info"), Ok(true));
            tracing::info!("after");
            assert!(log.set_level("info,[").is_err());
            let pinned = LogReload {
                handle,
                rust_log: true,
            };
            assert_eq!(pinned.set_level("error"), Ok(false));
            tracing::info!("still info");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("before"), "{text}");
        assert!(text.contains("after"), "{text}");
        assert!(text.contains("still info"), "{text}");
    }
}
