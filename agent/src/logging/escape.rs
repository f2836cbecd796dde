//! Escaping in every log format, so that no logged value can end a line, start a terminal
//! escape sequence or reorder the text around it: callers choose their executable's path
//! (newlines, `ESC [2J` and all), and text quoted from the metadata service or STS is theirs.
//!
//! - **text and journal** ([`EscapedFields`]): every field, the message included, is written
//!   with each [unsafe](is_unsafe) character escaped (`\n`, `\r`, `\t`, `\u{1b}`); a string
//!   field (`role = name.as_str()`) is also quoted, with `"` and `\` escaped, so that spaces,
//!   `=` or quotes inside it cannot pass for another field. tracing-subscriber's own text
//!   format escapes only some terminal controls, and only in the message.
//! - **json** ([`JsonEscapes`]): serde_json escapes quotes, backslashes and C0 controls; the
//!   writer escapes what it leaves (DEL, C1, the format characters) as `\uXXXX` (a surrogate
//!   pair past the BMP), which JSON decodes to the same value.
//!
//! The journal gets the text lines on stderr (systemd's stream protocol: one record per line),
//! so one event is one record as long as no value holds a line break, which the text escaping
//! guarantees.

use std::fmt::{self, Write as _};
use std::io;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// Whether `c` must not reach a log line as itself: a control character (C0 — line feed,
/// carriage return, `ESC` — DEL, and C1, whose `U+009B` starts a terminal sequence too), or a
/// Unicode format character that moves, hides or breaks text (general category `Cf`, Unicode
/// 15: bidirectional overrides, isolates and marks, the Arabic letter mark `U+061C`
/// included; zero-width characters; the tag characters `U+E0000..`, invisible text; the
/// byte-order mark), or the line and paragraph separators: the client library's
/// [`is_format`](ecs_credential_client::is_format), so its agent messages lose the same set.
pub(crate) fn is_unsafe(c: char) -> bool {
    c.is_control() || ecs_credential_client::is_format(c)
}

/// A `fmt::Write` that writes every [unsafe](is_unsafe) character escaped (`\n`, `\r`, `\t`,
/// else `\u{…}` in hexadecimal), and, when `quoting`, `"` and `\` as `\"` and `\\`.
struct Escaping<'a, W: fmt::Write> {
    inner: &'a mut W,
    quoting: bool,
}

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| is_unsafe(c) || self.quoting && is_quote(c)) {
            self.inner.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            match c {
                '\n' => self.inner.write_str("\\n")?,
                '\r' => self.inner.write_str("\\r")?,
                '\t' => self.inner.write_str("\\t")?,
                '"' | '\\' if self.quoting => write!(self.inner, "\\{c}")?,
                _ => write!(self.inner, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.inner.write_str(rest)
    }
}

/// `text` with every [unsafe](is_unsafe) character escaped as in a log line (`\n`, `\u{1b}`),
/// for text written to stderr outside the log (the fatal-error line).
pub(crate) fn escape_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut escaping = Escaping {
        inner: &mut out,
        quoting: false,
    };
    escaping
        .write_str(text)
        .expect("writing to a String cannot fail");
    out
}

fn is_quote(c: char) -> bool {
    c == '"' || c == '\\'
}

/// The field formatter of the text and journal styles: `message name=value name="text"`, like
/// tracing-subscriber's default, with every value escaped (module docs). Field names are not
/// styled (no italics on a terminal): only the level keeps its colour.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer,
            result: Ok(()),
            empty: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldVisitor<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    empty: bool,
}

impl FieldVisitor<'_> {
    /// Writes one field: `name=` (none for the message), then `value` escaped, quoted when
    /// `quoted`.
    fn field(&mut self, field: &Field, quoted: bool, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.empty) {
                self.writer.write_char(' ')?;
            }
            if name != "message" {
                write!(self.writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
            }
            let q = if quoted { "\"" } else { "" };
            self.writer.write_str(q)?;
            Escaping {
                inner: &mut self.writer,
                quoting: quoted,
            }
            .write_fmt(value)?;
            self.writer.write_str(q)
        })();
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let quoted = field.name() != "message";
        self.field(field, quoted, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, false, format_args!("{value:?}"));
    }
}

/// A [`MakeWriter`] for the json style: escapes what serde_json leaves raw (module docs).
#[derive(Debug, Clone)]
pub(crate) struct JsonEscapes<M>(pub(crate) M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonEscapes<M> {
    type Writer = JsonEscaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonEscaping(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        JsonEscaping(self.0.make_writer_for(meta))
    }
}

/// What serde_json leaves raw that must not be: [`is_unsafe`] past the C0 controls (which
/// serde_json escapes). Each is written `\uXXXX`, as a surrogate pair past the BMP (the tag
/// characters).
fn json_unsafe(c: char) -> bool {
    c >= ' ' && is_unsafe(c)
}

/// The writer of [`JsonEscapes`]. tracing-subscriber writes each event as one buffer of
/// UTF-8 text (a JSON object and its newline), so each buffer is escaped whole.
#[derive(Debug)]
pub(crate) struct JsonEscaping<W>(W);

impl<W: io::Write> io::Write for JsonEscaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(text) = std::str::from_utf8(buf)
            .ok()
            .filter(|t| t.contains(json_unsafe))
        else {
            return self.0.write(buf);
        };
        let mut escaped = String::with_capacity(buf.len() + 16);
        for c in text.chars() {
            if json_unsafe(c) {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    let _ = write!(escaped, "\\u{unit:04x}");
                }
            } else {
                escaped.push(c);
            }
        }
        self.0.write_all(escaped.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
