//! JSON text written straight into a line buffer: what the event records (one per traced call)
//! are written with. Building a serde record for each cost owned strings per field and
//! serde_json's key escaping; here keys are constants written as they are, numbers are
//! formatted with `itoa`, and only strings that can hold special characters are escaped. The
//! output is byte for byte what serde_json writes for the same record (the tests of
//! `json::encode_event` compare the two).

/// A member's key with its quotes and colon (`"pid":`), made by [`key!`] from a literal: one
/// constant written in one piece rather than a quote, the key, a quote and a colon. Keys are
/// this crate's constants: plain ASCII, nothing to escape.
#[derive(Clone, Copy)]
pub struct Key(pub(crate) &'static str);

/// `key!("pid")`: the [`Key`] `"pid":`.
macro_rules! key {
    ($k:literal) => {
        $crate::sink::ndjson::Key(concat!("\"", $k, "\":"))
    };
}
pub(crate) use key;

/// An object being written: a comma before every member but the first.
pub struct Obj<'o> {
    out: &'o mut String,
    empty: bool,
}

impl<'o> Obj<'o> {
    /// Opens an object at the end of `out`.
    #[inline]
    pub fn open(out: &'o mut String) -> Self {
        out.push('{');
        Self { out, empty: true }
    }

    /// Writes `"key":`, after a comma but for the first member.
    #[expect(
        clippy::inline_always,
        reason = "measured: left to the inliner, this was a call per member with a copy of unknown length (callgrind)"
    )]
    #[inline(always)]
    fn key(&mut self, key: Key) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push_str(key.0);
    }

    /// A string member, escaped.
    #[inline]
    pub fn str(&mut self, key: Key, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    /// A string member that is one of this crate's names (an action, a syscall, an errno):
    /// plain ASCII, written as it is.
    #[expect(
        clippy::inline_always,
        reason = "measured: left to the inliner, this was a call per member with a copy of unknown length (callgrind)"
    )]
    #[inline(always)]
    pub fn name(&mut self, key: Key, value: &str) {
        self.key(key);
        self.out.push('"');
        self.out.push_str(value);
        self.out.push('"');
    }

    /// A string member written by `f` (a number in a string, a timestamp): `f` writes only
    /// characters that need no escaping.
    #[inline]
    pub fn str_with(&mut self, key: Key, f: impl FnOnce(&mut String)) {
        self.key(key);
        self.out.push('"');
        f(self.out);
        self.out.push('"');
    }

    /// An integer member.
    #[inline]
    pub fn int(&mut self, key: Key, value: impl itoa::Integer) {
        self.key(key);
        int(self.out, value);
    }

    /// An integer member when there is a value; left out when not (serde's
    /// `skip_serializing_if = "Option::is_none"`).
    #[inline]
    pub fn opt_int(&mut self, key: Key, value: Option<impl itoa::Integer>) {
        if let Some(value) = value {
            self.int(key, value);
        }
    }

    /// A string member when there is a value; left out when not.
    #[inline]
    pub fn opt_str(&mut self, key: Key, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// A boolean member.
    #[inline]
    pub fn bool(&mut self, key: Key, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// A nested object member; close it before writing on.
    #[inline]
    pub fn obj(&mut self, key: Key) -> Obj<'_> {
        self.key(key);
        Obj::open(self.out)
    }

    /// An array member: `"key":[` (the caller writes the items and `]`).
    #[inline]
    pub fn array(&mut self, key: Key) -> &mut String {
        self.key(key);
        self.out.push('[');
        self.out
    }

    #[inline]
    pub fn close(self) {
        self.out.push('}');
    }
}

/// Appends an integer.
#[inline]
pub fn int(out: &mut String, value: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// Appends an unsigned integer, a single digit (most raw syscall arguments are 0) without
/// going through `itoa`'s buffer and a copy of unknown length.
#[inline]
pub fn uint(out: &mut String, value: u64) {
    match u8::try_from(value) {
        Ok(digit @ 0..10) => out.push(char::from(b'0' + digit)),
        _ => int(out, value),
    }
}

/// Appends `0x` and the lowercase hex digits of `value` (`format!("0x{value:x}")`).
pub fn hex(out: &mut String, value: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = value;
    loop {
        i -= 1;
        buf[i] = HEX_DIGITS[usize::try_from(v & 0xf).unwrap_or(0)];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.push_str("0x");
    ascii(out, &buf[i..]);
}

/// Appends bytes that are ASCII (digits written into a buffer). Checked with `is_ascii`, a
/// word at a time, instead of `str::from_utf8`, whose validation of such short buffers was
/// about a hundred instructions a call on the hot path.
#[inline]
pub fn ascii(out: &mut String, bytes: &[u8]) {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends a JSON string literal, escaped exactly as serde_json escapes: `"` and `\`, the
/// control characters (`\b`, `\t`, `\n`, `\f`, `\r`, the rest as `\u00xx`); everything else,
/// DEL and non-ASCII included, as it is.
#[inline]
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    escaped(out, s);
    out.push('"');
}

/// Appends `s` escaped as inside a JSON string literal (see [`string`]).
pub fn escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    // Most strings (commands, names, the boot id) have nothing to escape: one pass that only
    // tests, then one copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\t' => "\\t",
            b'\r' => "\\r",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        // `i` is at an ASCII byte: a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
            out.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for s in [
            "",
            "plain",
            "we\"ird\n\u{1}",
            "back\\slash",
            "\u{7f}é€😀",
            &all,
        ] {
            let mut out = String::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn uint_matches_display() {
        for v in [0, 1, 9, 10, 99, 255, 256, u64::MAX] {
            let mut out = String::new();
            uint(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }

    #[test]
    fn hex_matches_format() {
        for v in [0, 1, 0xf, 0x10, 0x7f00_0000_0000, u64::MAX] {
            let mut out = String::new();
            hex(&mut out, v);
            assert_eq!(out, format!("0x{v:x}"));
        }
    }

    #[test]
    fn objects_put_commas_between_members() {
        let mut out = String::new();
        let mut o = Obj::open(&mut out);
        o.int(key!("a"), -1i64);
        let mut inner = o.obj(key!("b"));
        inner.bool(key!("c"), true);
        inner.close();
        let items = o.array(key!("d"));
        items.push_str("1,2]");
        o.str(key!("e"), "x");
        o.close();
        assert_eq!(out, r#"{"a":-1,"b":{"c":true},"d":[1,2],"e":"x"}"#);
    }
}
