//! The structural scanner: follows JSON strings and nesting byte by byte (`memchr` inside
//! strings) to find where each record ends, detects `{"Events"|"Records": […]}` wrappers, and
//! hands over to line mode when records turn out to be one per line.

use memchr::{memchr, memchr2};

use super::{Kind, Open, Origin, Record, Splitter, Top};

impl Splitter {
    /// Structural mode: follows strings and nesting to find each record's end.
    pub(super) fn scan(&mut self, sink: &mut dyn FnMut(Record<'_>)) {
        while self.pos < self.end && !self.line_mode {
            if self.escape_pending {
                self.escape_pending = false;
                self.pos += 1;
                continue;
            }
            if self.in_string {
                self.scan_string(sink);
                continue;
            }
            if let Some(r) = self.rec.filter(|r| r.kind == Kind::Junk) {
                match memchr(b'\n', &self.buf[self.pos..self.end]) {
                    Some(i) => {
                        let nl = self.pos + i;
                        self.rec = None;
                        self.emit_bytes(sink, r.start, nl, r.line, r.origin, r.too_long);
                        self.pos = nl;
                    }
                    None => self.pos = self.end,
                }
                continue;
            }
            let p = self.pos;
            let b = self.buf[p];
            self.pos += 1;
            self.structural(sink, b, p);
        }
    }

    fn scan_string(&mut self, sink: &mut dyn FnMut(Record<'_>)) {
        match memchr2(b'"', b'\\', &self.buf[self.pos..self.end]) {
            None => self.pos = self.end,
            Some(i) => {
                let p = self.pos + i;
                if self.buf[p] == b'\\' {
                    if p + 1 < self.end {
                        self.pos = p + 2;
                    } else {
                        self.pos = p + 1;
                        self.escape_pending = true;
                    }
                } else {
                    self.pos = p + 1;
                    self.in_string = false;
                    self.string_end(sink, p);
                }
            }
        }
    }

    fn structural(&mut self, sink: &mut dyn FnMut(Record<'_>), b: u8, p: usize) {
        if let Some(r) = self.rec.filter(|r| r.kind == Kind::Scalar) {
            if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                self.rec = None;
                self.emit_bytes(sink, r.start, p, r.line, r.origin, r.too_long);
            }
        }
        match b {
            b'\n' => self.line += 1,
            b' ' | b'\t' | b'\r' => {}
            b'"' => self.string_start(p),
            b'{' | b'[' => self.open(b, p),
            b'}' | b']' => self.close(sink, p),
            b',' if self.depth == 1 && self.top == Top::Object => {
                self.expect_key = true;
                self.pending_wrapper = None;
            }
            b':' if self.depth == 1 && self.top == Top::Object => self.expect_key = false,
            b',' | b':' => {}
            _ => self.scalar_byte(p),
        }
    }

    fn at_record_level(&self) -> bool {
        self.rec.is_none() && self.record_depth == Some(self.depth)
    }

    fn start(&mut self, p: usize, kind: Kind) {
        self.rec = Some(Open {
            start: p,
            line: self.line,
            depth: self.depth,
            kind,
            origin: self.origin,
            too_long: false,
        });
    }

    fn scalar_byte(&mut self, p: usize) {
        if self.at_record_level() {
            let kind = if self.depth == 0 {
                Kind::Junk
            } else {
                Kind::Scalar
            };
            self.start(p, kind);
        }
    }

    fn string_start(&mut self, p: usize) {
        self.in_string = true;
        if self.at_record_level() {
            let kind = if self.depth == 0 {
                Kind::Junk
            } else {
                Kind::String
            };
            self.start(p, kind);
            self.in_string = kind == Kind::String;
        } else if self.depth == 1 && self.top == Top::Object && self.expect_key {
            self.key_start = Some(p + 1);
        }
    }

    fn string_end(&mut self, sink: &mut dyn FnMut(Record<'_>), p: usize) {
        if let Some(r) = self
            .rec
            .filter(|r| r.kind == Kind::String && r.depth == self.depth)
        {
            self.rec = None;
            self.emit_bytes(sink, r.start, p + 1, r.line, r.origin, r.too_long);
        }
        if let Some(k) = self.key_start.take() {
            self.pending_wrapper = match &self.buf[k..p] {
                b"Events" => Some(Origin::Events),
                b"Records" => Some(Origin::Records),
                _ => None,
            };
        }
    }

    fn open(&mut self, b: u8, p: usize) {
        if self.depth == 0 && self.rec.is_none() {
            self.top = if b == b'[' { Top::Array } else { Top::Object };
            self.origin = Origin::Stream;
            if b == b'[' {
                self.record_depth = Some(1);
                self.array_first = true;
            } else {
                self.expect_key = true;
                self.start(p, Kind::Container);
            }
            self.depth = 1;
            return;
        }
        if self.depth == 1 && self.top == Top::Object && b == b'[' {
            if let Some(origin) = self.pending_wrapper.take() {
                self.rec = None;
                self.record_depth = Some(2);
                self.origin = origin;
                self.array_first = true;
                self.depth = 2;
                return;
            }
        }
        if self.at_record_level() {
            self.start(p, Kind::Container);
        }
        self.depth += 1;
    }

    fn close(&mut self, sink: &mut dyn FnMut(Record<'_>), p: usize) {
        if self.depth == 0 {
            // An unbalanced closing bracket: report it as a record of its own.
            self.start(p, Kind::Junk);
            return;
        }
        self.depth -= 1;
        if let Some(r) = self
            .rec
            .filter(|r| r.kind == Kind::Container && r.depth == self.depth)
        {
            self.rec = None;
            let first = self.records == 0 && self.depth == 0;
            let first_element = self.depth > 0 && std::mem::take(&mut self.array_first);
            self.emit_bytes(sink, r.start, p + 1, r.line, r.origin, r.too_long);
            let one_line = !self.buf[r.start..p].contains(&b'\n');
            if first && one_line && self.followed_by(None) {
                self.line_mode = true;
            } else if first_element && one_line && self.followed_by(Some(b',')) {
                self.line_mode = true;
                self.array_lines = true;
            }
        }
        if self.depth == 1 && self.top == Top::Object && self.record_depth == Some(2) {
            self.record_depth = None;
            self.origin = Origin::Stream;
        }
        if self.depth == 0 {
            self.top = Top::None;
            self.record_depth = Some(0);
            self.origin = Origin::Stream;
            self.pending_wrapper = None;
            self.expect_key = false;
        }
    }

    /// True when `sep` (if any), then only spaces, then a newline (or, without `sep`, the
    /// chunk's end) follow `pos`; consumes them up to the newline so line mode starts there.
    fn followed_by(&mut self, sep: Option<u8>) -> bool {
        let rest = &self.buf[self.pos..self.end];
        let spaces = |from: usize| {
            from + rest[from.min(rest.len())..]
                .iter()
                .take_while(|&&c| matches!(c, b' ' | b'\t' | b'\r'))
                .count()
        };
        let mut n = spaces(0);
        if let Some(sep) = sep {
            if rest.get(n) != Some(&sep) {
                return false;
            }
            n = spaces(n + 1);
        }
        match rest.get(n) {
            Some(b'\n') => {}
            None if sep.is_none() => {}
            _ => return false,
        }
        self.pos += n;
        true
    }
}
