//! RFC 8785 (JSON Canonicalization Scheme, JCS) checker for `object_json`.
//!
//! Owns: deciding whether a byte string is exactly the canonical RFC 8785 serialization of a JSON
//! value and, when it is not, naming the first byte where it differs from that form and why.
//! [`canonicalize`] produces the canonical form itself, for tests and tools.
//!
//! Never: rewrites or "repairs" what it judges, panics, or recurses without bound.
//!
//! Limits: arrays and objects nested deeper than [`MAX_DEPTH`] levels are rejected as invalid;
//! numbers must fit an IEEE 754 double (`1e400` is invalid, `1e-400` reads as 0); strings must be
//! valid UTF-8 with no lone surrogates (I-JSON). Duplicate object keys are reported as not canonical.
//! Work is linear in the input, apart from sorting each object's keys (n log n); the parsed tree
//! takes about 32 bytes per JSON value (a 4 MiB `[0,0,…]` peaks near 80 MB).

use std::ops::Range;

/// Deepest nesting of arrays and objects accepted; one more level is an [`JcsError::Invalid`].
pub const MAX_DEPTH: usize = 64;
/// Most bytes of input or canonical text quoted in an error reason.
const CONTEXT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcsError {
    #[error("object_json is not valid JSON at byte {position}: {reason}")]
    Invalid { position: usize, reason: String },
    #[error("object_json is not in canonical form (RFC 8785) at byte {position}: {reason}")]
    NotCanonical { position: usize, reason: String },
}

/// Ok(()) when `input` is exactly the RFC 8785 canonical serialization of a JSON value.
pub fn check_canonical(input: &[u8]) -> Result<(), JcsError> {
    let doc = parse(input)?;
    let canon = doc.serialize();
    let Some(position) = first_mismatch(input, &canon) else {
        return doc.duplicate_error().map_or(Ok(()), Err);
    };
    match doc.duplicate_error() {
        Some(dup @ JcsError::NotCanonical { position: at, .. }) if at <= position => Err(dup),
        _ => {
            let reason = match locate(&doc, input) {
                Some((at, reason)) if at == position => reason,
                _ => expected_found(canon.get(position..), input.get(position..)),
            };
            Err(not_canonical(position, reason))
        }
    }
}

/// The canonical serialization of `input` (used by tests and tools).
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, JcsError> {
    let doc = parse(input)?;
    match doc.duplicate_error() {
        Some(dup) => Err(dup),
        None => Ok(doc.serialize()),
    }
}

/// A parsed value. Leaves keep their canonical text in [`Doc::text`] and the length of their
/// spelling in the input; object members are kept in canonical order.
enum Node {
    Leaf { raw_len: usize, canon: Range<usize> },
    Array(Vec<Node>),
    Object(Vec<Member>),
}

struct Member {
    key: String,
    /// Index of the member in input order.
    rank: usize,
    /// Input offset of the key's opening quote.
    at: usize,
    raw_len: usize,
    canon: Range<usize>,
    value: Node,
}

#[derive(Default)]
struct Doc {
    root: Option<Node>,
    text: Vec<u8>,
    /// Earliest duplicate key: its input offset and canonical text.
    duplicate: Option<(usize, Range<usize>)>,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    doc: Doc,
}

fn parse(input: &[u8]) -> Result<Doc, JcsError> {
    if input.is_empty() {
        return Err(invalid(0, "empty input"));
    }
    let mut p = Parser::at(input, 0);
    p.skip_ws();
    p.doc.root = Some(p.value(0)?);
    p.skip_ws();
    match p.peek() {
        Some(_) => Err(p.unexpected("end of input")),
        None => Ok(p.doc),
    }
}

fn invalid(position: usize, reason: impl Into<String>) -> JcsError {
    let reason = reason.into();
    JcsError::Invalid { position, reason }
}

fn not_canonical(position: usize, reason: String) -> JcsError {
    JcsError::NotCanonical { position, reason }
}

impl<'a> Parser<'a> {
    fn at(input: &'a [u8], pos: usize) -> Self {
        let doc = Doc::default();
        Parser { input, pos, doc }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then `byte` or fails naming `what` was expected.
    fn require(&mut self, byte: u8, what: &str) -> Result<(), JcsError> {
        self.skip_ws();
        match self.eat(byte) {
            true => Ok(()),
            false => Err(self.unexpected(what)),
        }
    }

    fn unexpected(&self, expected: &str) -> JcsError {
        let found = match self.peek() {
            None => "end of input".to_string(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", char::from(b)),
            Some(b) => format!("byte 0x{b:02x}"),
        };
        invalid(self.pos, format!("expected {expected} but found {found}"))
    }

    fn value(&mut self, depth: usize) -> Result<Node, JcsError> {
        let (start, from) = (self.pos, self.doc.text.len());
        let rest = self.input.get(start..).unwrap_or_default();
        match self.peek() {
            Some(b'[' | b'{') if depth >= MAX_DEPTH => {
                let reason = format!("nesting deeper than {MAX_DEPTH} levels");
                return Err(invalid(start, reason));
            }
            Some(b'[') => return self.array(depth + 1),
            Some(b'{') => return self.object(depth + 1),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b'"') => {
                self.string()?;
            }
            _ => {
                let word = [&b"true"[..], b"false", b"null"]
                    .into_iter()
                    .find(|w| rest.starts_with(w));
                let word = word.ok_or_else(|| self.unexpected("a JSON value"))?;
                self.pos += word.len();
                self.doc.text.extend_from_slice(word);
            }
        }
        let raw_len = self.pos - start;
        let canon = from..self.doc.text.len();
        Ok(Node::Leaf { raw_len, canon })
    }

    fn array(&mut self, depth: usize) -> Result<Node, JcsError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if !self.eat(b']') {
            loop {
                self.skip_ws();
                items.push(self.value(depth)?);
                self.skip_ws();
                if self.eat(b']') {
                    break;
                }
                self.require(b',', "',' or ']'")?;
            }
        }
        Ok(Node::Array(items))
    }

    fn object(&mut self, depth: usize) -> Result<Node, JcsError> {
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_ws();
        let mut done = self.eat(b'}');
        while !done {
            self.skip_ws();
            let (at, from) = (self.pos, self.doc.text.len());
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a string key"));
            }
            let key = self.string()?;
            let (raw_len, canon) = (self.pos - at, from..self.doc.text.len());
            self.require(b':', "':'")?;
            self.skip_ws();
            let value = self.value(depth)?;
            let rank = members.len();
            members.push(Member {
                key,
                rank,
                at,
                raw_len,
                canon,
                value,
            });
            self.skip_ws();
            done = self.eat(b'}');
            if !done {
                self.require(b',', "',' or '}'")?;
            }
        }
        self.sort_members(&mut members);
        Ok(Node::Object(members))
    }

    /// Sorts members by key as UTF-16 code units (stable, so equal keys keep input order),
    /// noting the earliest duplicate key seen so far.
    fn sort_members(&mut self, members: &mut [Member]) {
        members.sort_by(|a, b| a.key.encode_utf16().cmp(b.key.encode_utf16()));
        for pair in members.windows(2) {
            if let [a, later] = pair
                && a.key == later.key
                && self.doc.duplicate.as_ref().is_none_or(|d| later.at < d.0)
            {
                self.doc.duplicate = Some((later.at, later.canon.clone()));
            }
        }
    }

    /// Parses a number and appends its ECMAScript `Number.prototype.toString` form (-0 is "0").
    fn number(&mut self) -> Result<(), JcsError> {
        let start = self.pos;
        self.eat(b'-');
        if self.eat(b'0') {
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(invalid(self.pos - 1, "leading zeros are not allowed"));
            }
        } else {
            self.digits()?;
        }
        if self.eat(b'.') {
            self.digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _sign = self.eat(b'+') || self.eat(b'-');
            self.digits()?;
        }
        let raw = self.input.get(start..self.pos).unwrap_or_default();
        let text = std::str::from_utf8(raw).unwrap_or_default();
        let value = match text.parse::<f64>().ok() {
            Some(v) if v.is_finite() => v,
            Some(_) => return Err(invalid(start, "number is too large for a 64-bit float")),
            None => return Err(invalid(start, "invalid number")),
        };
        let mut buffer = ryu_js::Buffer::new();
        self.doc
            .text
            .extend_from_slice(buffer.format_finite(value).as_bytes());
        Ok(())
    }

    fn digits(&mut self) -> Result<(), JcsError> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.unexpected("a digit"));
        }
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        Ok(())
    }

    /// Parses the string whose opening quote is at `self.pos`, appends its canonical form to
    /// the text and returns its value.
    fn string(&mut self) -> Result<String, JcsError> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            let run = self.pos;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            match std::str::from_utf8(self.input.get(run..self.pos).unwrap_or_default()) {
                Ok(text) => s.push_str(text),
                Err(e) => return Err(invalid(run + e.valid_up_to(), "invalid UTF-8 in string")),
            }
            match self.peek() {
                None => return Err(invalid(self.pos, "unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => s.push(self.escape()?),
                Some(b) => {
                    let reason = format!("control byte 0x{b:02x} must be escaped");
                    return Err(invalid(self.pos, reason));
                }
            }
        }
        self.pos += 1;
        write_string(&s, &mut self.doc.text);
        Ok(s)
    }

    /// Decodes the escape sequence at `self.pos` (a backslash) and steps past it.
    fn escape(&mut self) -> Result<char, JcsError> {
        let at = self.pos;
        let c = match self.input.get(at + 1) {
            Some(b'u') => return self.unicode_escape(),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(_) => {
                let reason = format!("invalid escape {}", show(self.rest(at, 2)));
                return Err(invalid(at, reason));
            }
            None => return Err(invalid(at + 1, "unterminated string")),
        };
        self.pos += 2;
        Ok(c)
    }

    fn unicode_escape(&mut self) -> Result<char, JcsError> {
        let at = self.pos;
        let unit = self.hex4(at + 2)?;
        self.pos = at + 6;
        let code = match unit {
            0xD800..=0xDBFF if self.rest(self.pos, 2) == b"\\u" => match self.hex4(self.pos + 2)? {
                low @ 0xDC00..=0xDFFF => {
                    self.pos += 6;
                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                }
                _ => u32::MAX,
            },
            _ => unit,
        };
        char::from_u32(code).ok_or_else(|| invalid(at, format!("lone surrogate \\u{unit:04x}")))
    }

    fn hex4(&self, at: usize) -> Result<u32, JcsError> {
        let mut value = 0;
        for i in at..at + 4 {
            match self.input.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                Some(digit) => value = value * 16 + digit,
                None => return Err(invalid(i, "expected 4 hex digits after \\u")),
            }
        }
        Ok(value)
    }

    fn rest(&self, at: usize, len: usize) -> &[u8] {
        let end = self.input.len().min(at.saturating_add(len));
        self.input.get(at..end).unwrap_or_default()
    }
}

/// Writes `s` as an RFC 8785 string: only `"`, `\` and control characters are escaped.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if u32::from(c) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes())
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}

impl Doc {
    fn slice(&self, range: &Range<usize>) -> &[u8] {
        self.text.get(range.clone()).unwrap_or_default()
    }

    fn duplicate_error(&self) -> Option<JcsError> {
        let (position, canon) = self.duplicate.as_ref()?;
        let reason = format!("duplicate key {}", show_key(self.slice(canon)));
        Some(not_canonical(*position, reason))
    }

    fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len());
        if let Some(root) = &self.root {
            self.write(root, &mut out);
        }
        out
    }

    fn write(&self, node: &Node, out: &mut Vec<u8>) {
        let comma = |n: usize, out: &mut Vec<u8>| (n > 0).then(|| out.push(b','));
        match node {
            Node::Leaf { canon, .. } => out.extend_from_slice(self.slice(canon)),
            Node::Array(items) => {
                out.push(b'[');
                for (n, item) in items.iter().enumerate() {
                    comma(n, out);
                    self.write(item, out);
                }
                out.push(b']');
            }
            Node::Object(members) => {
                out.push(b'{');
                for (n, member) in members.iter().enumerate() {
                    comma(n, out);
                    out.extend_from_slice(self.slice(&member.canon));
                    out.push(b':');
                    self.write(&member.value, out);
                }
                out.push(b'}');
            }
        }
    }
}

/// Offset of the first byte where `a` and `b` differ (the shorter one's end if one is a prefix).
fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() == b.len() => None,
        None => Some(a.len().min(b.len())),
    }
}

/// A first difference found by [`Walk`]: input offset and reason.
type Found = (usize, String);

/// Walks the input alongside the canonical form; everything before `pos` is already equal.
struct Walk<'a> {
    doc: &'a Doc,
    input: &'a [u8],
    pos: usize,
}

/// Where and why `input` first departs from the canonical form of `doc`, found structurally.
fn locate(doc: &Doc, input: &[u8]) -> Option<Found> {
    let mut walk = Walk { doc, input, pos: 0 };
    let root = doc.root.as_ref()?;
    walk.node(root).and_then(|()| walk.gap()).err()
}

impl Walk<'_> {
    /// Canonical text never has whitespace between tokens; the input may.
    fn gap(&self) -> Result<(), Found> {
        match self.input.get(self.pos) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => {
                Err((self.pos, "whitespace is not allowed".into()))
            }
            _ => Ok(()),
        }
    }

    /// Steps over a structural byte (`,` `:` `]` `}`) that both texts have here.
    fn punct(&mut self) -> Result<(), Found> {
        self.gap()?;
        self.pos += 1;
        Ok(())
    }

    /// The next `len` bytes of input.
    fn token(&self, len: usize) -> &[u8] {
        self.input
            .get(self.pos..self.pos.saturating_add(len))
            .unwrap_or_default()
    }

    fn node(&mut self, node: &Node) -> Result<(), Found> {
        self.gap()?;
        match node {
            Node::Leaf { raw_len, canon } => return self.leaf(*raw_len, self.doc.slice(canon)),
            Node::Array(items) => {
                self.pos += 1;
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        self.punct()?;
                    }
                    self.node(item)?;
                }
            }
            Node::Object(members) => {
                self.pos += 1;
                for (n, member) in members.iter().enumerate() {
                    if n > 0 {
                        self.punct()?;
                    }
                    self.gap()?;
                    if member.rank != n {
                        let have = members.iter().find(|m| m.rank == n).unwrap_or(member);
                        return Err(self.misplaced_key(member, have));
                    }
                    self.leaf(member.raw_len, self.doc.slice(&member.canon))?;
                    self.punct()?;
                    self.node(&member.value)?;
                }
            }
        }
        self.punct()
    }

    /// The input has member `have` where the canonical form has member `want`.
    fn misplaced_key(&self, want: &Member, have: &Member) -> Found {
        let (raw, canon) = (self.token(have.raw_len), self.doc.slice(&want.canon));
        let off = first_mismatch(raw, canon).unwrap_or(0);
        let reason = string_reason(raw, canon, off).unwrap_or_else(|| {
            let (want, have) = (show_key(canon), show_key(self.doc.slice(&have.canon)));
            format!("object keys must be sorted: {want} before {have}")
        });
        (self.pos + off, reason)
    }

    fn leaf(&mut self, raw_len: usize, canon: &[u8]) -> Result<(), Found> {
        let raw = self.token(raw_len);
        let Some(off) = first_mismatch(raw, canon) else {
            self.pos += raw_len;
            return Ok(());
        };
        let reason = match raw.first() {
            Some(b'"') => string_reason(raw, canon, off),
            _ => Some(format!("number must be written {}", show(canon))),
        };
        let reason = reason.unwrap_or_else(|| expected_found(canon.get(off..), raw.get(off..)));
        Err((self.pos + off, reason))
    }
}

/// For two string tokens that agree before `off`: when the characters at `off` are the same
/// but spelled differently, `expected "<canonical spelling>" but found "<input spelling>"`.
fn string_reason(raw: &[u8], canon: &[u8], off: usize) -> Option<String> {
    let mut i = 1;
    loop {
        let (raw_len, raw_char) = string_unit(raw, i)?;
        let (canon_len, canon_char) = string_unit(canon, i)?;
        if off < i + raw_len.max(canon_len) {
            let (want, have) = (canon.get(i..i + canon_len), raw.get(i..i + raw_len));
            return (raw_char == canon_char).then(|| expected_found(want, have));
        }
        i += raw_len;
    }
}

/// Length and character of the escape or character at `s[i]` in a valid string token; the
/// closing quote reads as `None`.
fn string_unit(s: &[u8], i: usize) -> Option<(usize, Option<char>)> {
    let mut p = Parser::at(s, i);
    let c = match p.peek()? {
        b'"' => None,
        b'\\' => Some(p.escape().ok()?),
        lead => {
            let len = match lead {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            p.pos += len;
            let text = std::str::from_utf8(s.get(i..i + len)?).ok()?;
            Some(text.chars().next()?)
        }
    };
    Some((p.pos.max(i + 1) - i, c))
}

fn expected_found(want: Option<&[u8]>, have: Option<&[u8]>) -> String {
    let want = show(want.unwrap_or_default());
    let have = show(have.unwrap_or_default());
    format!("expected \"{want}\" but found \"{have}\"")
}

/// A canonical key token (with its quotes) shown as `"key"`, shortened if long.
fn show_key(canon: &[u8]) -> String {
    let inner = canon.get(1..canon.len().saturating_sub(1));
    format!("\"{}\"", show(inner.unwrap_or_default()))
}

/// At most [`CONTEXT`] bytes of `bytes` as text, cut on a character boundary, `…` if cut.
fn show(bytes: &[u8]) -> String {
    let mut end = bytes.len().min(CONTEXT);
    while end > CONTEXT - 3 && bytes.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
        end -= 1;
    }
    let text = String::from_utf8_lossy(bytes.get(..end).unwrap_or_default());
    match end < bytes.len() {
        true => format!("{text}…"),
        false => text.into_owned(),
    }
}

#[cfg(test)]
#[path = "jcs_tests.rs"]
mod tests;
