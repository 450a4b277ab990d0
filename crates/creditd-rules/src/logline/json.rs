//! A strict reader of one JSON object per line that keeps every top-level value's type.
//!
//! serde_json turns an integer beyond `u64` into a float (so two long request ids can read
//! as the same number) and rejects the whole document for a number beyond `f64` (so one
//! `1e400` in an optional field would quarantine a valid call). DESIGN §2.1 decides per field
//! and per JSON type, so this reader hands out each member with its type and, for an integer,
//! its exact text. Everything else follows RFC 8259 as serde_json does: the same documents are
//! rejected (bad syntax, control characters or lone surrogates in strings, trailing text),
//! and nesting is limited to 128 levels so that no line can exhaust the stack.

use std::borrow::Cow;

/// A member's value, as much of it as the field rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Bool,
    Str(Cow<'a, str>),
    /// An integer, as written: `-?(0|[1-9][0-9]*)`, of any length.
    Int(&'a str),
    /// A number with a fraction or an exponent, of any size.
    Float,
    Array,
    Object,
}

/// Nesting deeper than this is rejected (serde_json's limit is of the same order).
const MAX_DEPTH: usize = 128;

/// Reads `line` as one JSON object, calling `member` with each key and value in order.
/// `Err(())` when the line is not exactly one JSON object (surrounding whitespace allowed).
pub fn object_members<'a>(
    line: &'a str,
    mut member: impl FnMut(Cow<'a, str>, Value<'a>),
) -> Result<(), ()> {
    let mut p = Parser {
        s: line,
        b: line.as_bytes(),
        i: 0,
    };
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            p.expect(b'"')?;
            let key = p.string(true)?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = p.value(1)?;
            member(key, value);
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(()),
            }
        }
    }
    p.ws();
    if p.i == p.b.len() {
        Ok(())
    } else {
        Err(())
    }
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Result<(), ()> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(())
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A value starting at the current byte; `depth` counts the containers around it.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, ()> {
        match self.peek().ok_or(())? {
            b'"' => {
                self.i += 1;
                // Strings inside containers are checked, not decoded.
                self.string(depth == 1).map(Value::Str)
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true", Value::Bool),
            b'f' => self.literal(b"false", Value::Bool),
            b'n' => self.literal(b"null", Value::Null),
            b'[' => {
                self.i += 1;
                self.array(depth + 1)?;
                Ok(Value::Array)
            }
            b'{' => {
                self.i += 1;
                self.object(depth + 1)?;
                Ok(Value::Object)
            }
            _ => Err(()),
        }
    }

    fn literal(&mut self, word: &[u8], v: Value<'a>) -> Result<Value<'a>, ()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(())
        }
    }

    /// The rest of an array whose `[` is consumed.
    fn array(&mut self, depth: usize) -> Result<(), ()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(b']') => return Ok(()),
                _ => return Err(()),
            }
        }
    }

    /// The rest of an object whose `{` is consumed.
    fn object(&mut self, depth: usize) -> Result<(), ()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.expect(b'"')?;
            self.string(false)?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(b'}') => return Ok(()),
                _ => return Err(()),
            }
        }
    }

    /// The rest of a string whose opening quote is consumed. Decoded when `decode` is set
    /// (borrowed when it has no escapes), else only checked (and returned empty).
    fn string(&mut self, decode: bool) -> Result<Cow<'a, str>, ()> {
        let start = self.i;
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            let c = self.next().ok_or(())?;
            match c {
                b'"' => {
                    let end = self.i - 1;
                    if !decode {
                        return Ok(Cow::Borrowed(""));
                    }
                    return Ok(match owned {
                        None => Cow::Borrowed(&self.s[start..end]),
                        Some(mut s) => {
                            s.push_str(&self.s[run..end]);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let escape_at = self.i - 1;
                    let ch = self.escape()?;
                    if decode {
                        let s = owned.get_or_insert_with(String::new);
                        s.push_str(&self.s[run..escape_at]);
                        s.push(ch);
                    }
                    run = self.i;
                }
                0x00..=0x1F => return Err(()),
                _ => {}
            }
        }
    }

    /// One escape after its backslash.
    fn escape(&mut self) -> Result<char, ()> {
        Ok(match self.next().ok_or(())? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                match hi {
                    0xD800..=0xDBFF => {
                        // A leading surrogate needs its trailing half right after it.
                        if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                            return Err(());
                        }
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(());
                        }
                        let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(code).ok_or(())?
                    }
                    0xDC00..=0xDFFF => return Err(()),
                    _ => char::from_u32(hi).ok_or(())?,
                }
            }
            _ => return Err(()),
        })
    }

    fn hex4(&mut self) -> Result<u32, ()> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = (self.next().ok_or(())? as char).to_digit(16).ok_or(())?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    /// A number: its text when it is an integer, else `Float`. No size limit applies: the
    /// field rules decide what a number too large for them means.
    fn number(&mut self) -> Result<Value<'a>, ()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(()),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
            integer = false;
        }
        Ok(if integer {
            Value::Int(&self.s[start..self.i])
        } else {
            Value::Float
        })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), ()> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(());
        }
        self.digits();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(line: &str) -> Result<Vec<(String, Value<'_>)>, ()> {
        let mut out = Vec::new();
        object_members(line, |k, v| out.push((k.into_owned(), v)))?;
        Ok(out)
    }

    #[test]
    fn every_type_with_integers_kept_exact() {
        let m = members(
            r#" {"a":null,"b":true,"c":false,"d":"x\"\u00e9\ud83d\ude00","e":-0,"f":18446744073709551616123,"g":1.5,"h":1e400,"i":[1,[{}]],"j":{"k":[]},"\u0074s":"t"} "#,
        )
        .unwrap();
        let want = vec![
            ("a", Value::Null),
            ("b", Value::Bool),
            ("c", Value::Bool),
            ("d", Value::Str(Cow::Owned("x\"é😀".into()))),
            ("e", Value::Int("-0")),
            ("f", Value::Int("18446744073709551616123")),
            ("g", Value::Float),
            ("h", Value::Float),
            ("i", Value::Array),
            ("j", Value::Object),
            ("ts", Value::Str(Cow::Borrowed("t"))),
        ];
        let got: Vec<(&str, Value)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn what_serde_json_rejects_is_rejected() {
        for bad in [
            "",
            "{",
            "[]",
            "{} x",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":[1,]}"#,
            r#"{"a":{"b"}}"#,
            r#"{a:1}"#,
            r#"{"a":NaN}"#,
        ] {
            assert_eq!(members(bad), Err(()), "{bad}");
            assert!(
                !matches!(
                    serde_json::from_str::<serde_json::Value>(bad),
                    Ok(serde_json::Value::Object(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_exhausting_the_stack() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(members(&deep), Err(()));
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(members(&fine).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON value, rendered by serde_json (integers of every size included).
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(|i| serde_json::json!(i)),
                any::<u64>().prop_map(|u| serde_json::json!(u)),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| serde_json::json!(f)),
                "\\PC{0,12}".prop_map(serde_json::Value::String),
                any::<String>().prop_map(serde_json::Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6)
                        .prop_map(serde_json::Value::Array),
                    proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Every object serde_json writes reads back with the same keys, types, strings
            /// and integer texts.
            #[test]
            fn objects_read_back_as_serde_json_wrote_them(
                members_in in proptest::collection::btree_map("\\PC{0,8}", json_value(), 0..8),
            ) {
                let obj = serde_json::Value::Object(members_in.clone().into_iter().collect());
                let line = serde_json::to_string(&obj).unwrap();
                let got = members(&line).unwrap();
                prop_assert_eq!(got.len(), members_in.len());
                for ((k, v), (gk, gv)) in members_in.iter().zip(&got) {
                    prop_assert_eq!(k, gk);
                    let ok = match (v, gv) {
                        (serde_json::Value::Null, Value::Null) => true,
                        (serde_json::Value::Bool(_), Value::Bool) => true,
                        (serde_json::Value::String(s), Value::Str(g)) => s == g,
                        (serde_json::Value::Number(n), Value::Int(t)) => n.to_string() == *t,
                        (serde_json::Value::Number(n), Value::Float) => n.is_f64(),
                        (serde_json::Value::Array(_), Value::Array) => true,
                        (serde_json::Value::Object(_), Value::Object) => true,
                        _ => false,
                    };
                    prop_assert!(ok, "{:?} read as {:?} in {}", v, gv, line);
                }
            }

            /// On arbitrary text the reader accepts exactly what serde_json accepts as an
            /// object (numbers beyond `f64` aside, which serde_json refuses and this reader
            /// leaves to the field rules), and never panics.
            #[test]
            fn accepts_what_serde_json_accepts(line in "[{}\\[\\]\",:0-9.eE+\\-a-z\\\\ ]{0,40}") {
                same_verdict_as_serde_json(&line)?;
            }

            /// The same on valid objects with one byte dropped or one character inserted.
            #[test]
            fn accepts_what_serde_json_accepts_near_valid_objects(
                members_in in proptest::collection::btree_map("\\PC{0,4}", json_value(), 1..5),
                at in any::<proptest::sample::Index>(),
                insert in proptest::option::of(prop_oneof![
                    Just('"'), Just('\\'), Just(','), Just(':'), Just('{'), Just('}'),
                    Just('['), Just(']'), Just('e'), Just('.'), Just('-'), Just('0'),
                    Just('\u{1}'), Just('u'),
                ]),
            ) {
                let obj = serde_json::Value::Object(members_in.into_iter().collect());
                let mut line = serde_json::to_string(&obj).unwrap();
                let mut i = at.index(line.len());
                while !line.is_char_boundary(i) {
                    i -= 1;
                }
                match insert {
                    Some(c) => line.insert(i, c),
                    None => {
                        line.remove(i);
                    }
                }
                same_verdict_as_serde_json(&line)?;
            }
        }

        fn same_verdict_as_serde_json(line: &str) -> Result<(), TestCaseError> {
            let theirs = match serde_json::from_str::<serde_json::Value>(line) {
                // serde_json refuses numbers beyond f64; this reader leaves them to the rules.
                Err(e) if e.to_string().starts_with("number out of range") => return Ok(()),
                r => matches!(r, Ok(serde_json::Value::Object(_))),
            };
            prop_assert_eq!(members(line).is_ok(), theirs, "{}", line);
            Ok(())
        }
    }
}
