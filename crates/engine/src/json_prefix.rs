//! A byte-level automaton for prefixes of one JSON object: the grammar behind
//! `response_format: {"type": "json_object"}` (the sampler's step 0, [`crate::sampler`]).
//!
//! [`JsonPrefix`] accepts exactly the byte strings that some continuation turns into a JSON text
//! (RFC 8259) whose top-level value is an object, ending at that object's closing brace:
//! whitespace before it, none after. Strings must be well-formed UTF-8 (no overlong forms,
//! no surrogate code points; `\u` escapes are not paired up, as the RFC's grammar allows) and
//! may not contain raw control characters. Nesting is capped at [`MAX_DEPTH`].
//!
//! The state is `Copy` and a few bytes long, so the sampler can try every token of the
//! vocabulary from the current state without allocating.

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    /// After `-`: a digit must follow.
    Minus,
    /// A leading `0`: no more integer digits.
    Zero,
    Int,
    /// After `.`: a digit must follow.
    Dot,
    Frac,
    /// After `e`/`E`: a sign or a digit.
    E,
    /// After the exponent's sign: a digit.
    ESign,
    Exp,
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Before the top-level object: whitespace or `{`.
    Start,
    /// A value must start (after `:`, or after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrFirst,
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    ObjKey,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the innermost container's closing bracket.
    After,
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    /// `left` hex digits of a `\u` escape still to come.
    Hex {
        key: bool,
        left: u8,
    },
    /// Inside a UTF-8 sequence: the next byte must be in `lo..=hi`, then `left - 1` more
    /// continuation bytes.
    Utf8 {
        key: bool,
        left: u8,
        lo: u8,
        hi: u8,
    },
    Num(Num),
    /// The rest of `true`, `false` or `null`.
    Lit(&'static [u8]),
    /// The top-level object is closed: nothing more may follow.
    Done,
}

/// Where a byte string stands in the JSON-object grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonPrefix {
    mode: Mode,
    /// Bit `i` set: the container at depth `i` is an object (else an array).
    stack: u64,
    depth: u8,
}

impl Default for JsonPrefix {
    fn default() -> Self {
        Self::new()
    }
}

fn ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonPrefix {
    /// The empty prefix.
    pub fn new() -> Self {
        JsonPrefix {
            mode: Mode::Start,
            stack: 0,
            depth: 0,
        }
    }

    /// Whether the bytes so far are a complete JSON object.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// The state after `bytes`, or `None` if no continuation makes them a JSON object.
    #[must_use]
    pub fn after(mut self, bytes: &[u8]) -> Option<Self> {
        for &b in bytes {
            if !self.step(b) {
                return None;
            }
        }
        Some(self)
    }

    fn top_is_object(&self) -> bool {
        self.depth > 0 && self.stack >> (self.depth - 1) & 1 == 1
    }

    fn push(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        if object {
            self.stack |= 1 << self.depth;
        } else {
            self.stack &= !(1 << self.depth);
        }
        self.depth += 1;
        self.mode = if object {
            Mode::ObjFirst
        } else {
            Mode::ArrFirst
        };
        true
    }

    fn pop(&mut self) -> bool {
        self.depth -= 1;
        self.mode = if self.depth == 0 {
            Mode::Done
        } else {
            Mode::After
        };
        true
    }

    fn value_start(&mut self, b: u8) -> bool {
        self.mode = match b {
            b'{' => return self.push(true),
            b'[' => return self.push(false),
            b'"' => Mode::Str { key: false },
            b'-' => Mode::Num(Num::Minus),
            b'0' => Mode::Num(Num::Zero),
            b'1'..=b'9' => Mode::Num(Num::Int),
            b't' => Mode::Lit(b"rue"),
            b'f' => Mode::Lit(b"alse"),
            b'n' => Mode::Lit(b"ull"),
            _ => return false,
        };
        true
    }

    fn string_byte(&mut self, key: bool, b: u8) -> bool {
        let utf8 = |left, lo, hi| Mode::Utf8 { key, left, lo, hi };
        self.mode = match b {
            b'"' if key => Mode::Colon,
            b'"' => Mode::After,
            b'\\' => Mode::Escape { key },
            0x00..=0x1f => return false,
            0x20..=0x7f => return true,
            0xc2..=0xdf => utf8(1, 0x80, 0xbf),
            0xe0 => utf8(2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee..=0xef => utf8(2, 0x80, 0xbf),
            0xed => utf8(2, 0x80, 0x9f),
            0xf0 => utf8(3, 0x90, 0xbf),
            0xf1..=0xf3 => utf8(3, 0x80, 0xbf),
            0xf4 => utf8(3, 0x80, 0x8f),
            _ => return false,
        };
        true
    }

    fn number_byte(&mut self, n: Num, b: u8) -> bool {
        let next = match (n, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Num::Exp,
            // The number ends; the byte belongs to what follows it.
            _ if n.complete() => {
                self.mode = Mode::After;
                return self.step(b);
            }
            _ => return false,
        };
        self.mode = Mode::Num(next);
        true
    }

    /// Consume one byte; `false` (state unspecified) if no JSON object has the prefix.
    fn step(&mut self, b: u8) -> bool {
        match self.mode {
            Mode::Start => ws(b) || (b == b'{' && self.push(true)),
            Mode::Value => ws(b) || self.value_start(b),
            Mode::ArrFirst => ws(b) || (b == b']' && self.pop()) || self.value_start(b),
            Mode::ObjFirst | Mode::ObjKey => {
                if ws(b) {
                    return true;
                }
                match b {
                    b'"' => {
                        self.mode = Mode::Str { key: true };
                        true
                    }
                    b'}' if self.mode == Mode::ObjFirst => self.pop(),
                    _ => false,
                }
            }
            Mode::Colon => {
                if b == b':' {
                    self.mode = Mode::Value;
                }
                ws(b) || b == b':'
            }
            Mode::After => match b {
                _ if ws(b) => true,
                b',' => {
                    self.mode = if self.top_is_object() {
                        Mode::ObjKey
                    } else {
                        Mode::Value
                    };
                    true
                }
                b'}' if self.top_is_object() => self.pop(),
                b']' if !self.top_is_object() => self.pop(),
                _ => false,
            },
            Mode::Str { key } => self.string_byte(key, b),
            Mode::Escape { key } => {
                self.mode = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Mode::Str { key },
                    b'u' => Mode::Hex { key, left: 4 },
                    _ => return false,
                };
                true
            }
            Mode::Hex { key, left } => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                self.mode = if left == 1 {
                    Mode::Str { key }
                } else {
                    Mode::Hex {
                        key,
                        left: left - 1,
                    }
                };
                true
            }
            Mode::Utf8 { key, left, lo, hi } => {
                if !(lo..=hi).contains(&b) {
                    return false;
                }
                self.mode = if left == 1 {
                    Mode::Str { key }
                } else {
                    Mode::Utf8 {
                        key,
                        left: left - 1,
                        lo: 0x80,
                        hi: 0xbf,
                    }
                };
                true
            }
            Mode::Num(n) => self.number_byte(n, b),
            Mode::Lit(rest) => {
                if rest.first() != Some(&b) {
                    return false;
                }
                self.mode = if rest.len() == 1 {
                    Mode::After
                } else {
                    Mode::Lit(&rest[1..])
                };
                true
            }
            Mode::Done => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(s: &[u8]) -> bool {
        JsonPrefix::new().after(s).is_some_and(|p| p.is_complete())
    }

    fn prefix(s: &[u8]) -> bool {
        JsonPrefix::new().after(s).is_some()
    }

    #[test]
    fn whole_objects_are_complete_and_every_prefix_is_a_prefix() {
        let docs: [&[u8]; 8] = [
            b"{}",
            b" \n{ }",
            br#"{"a": 1, "b": [true, false, null, -0.5e+10, 0, 12.25E-3], "c": {"d": "x\"\\\/\b\f\n\r\t\u00e9"}}"#,
            br#"{"nested": [[[{}]], [], {"k": []}]}"#,
            "{\"utf8\": \"h\u{e9}llo \u{20ac} \u{1f600}\"}".as_bytes(),
            br#"{"n":-12}"#,
            br#"{"e":1e5,"f":0.0}"#,
            br#"{"s":"","t":"a b"}"#,
        ];
        for d in docs {
            assert!(complete(d), "{}", String::from_utf8_lossy(d));
            for n in 0..d.len() {
                let p = JsonPrefix::new().after(&d[..n]);
                assert!(
                    p.is_some_and(|p| !p.is_complete()),
                    "prefix {n} of {}",
                    String::from_utf8_lossy(d)
                );
            }
            // serde_json agrees these are JSON objects.
            let v: serde_json::Value = serde_json::from_slice(d).unwrap();
            assert!(v.is_object());
        }
    }

    #[test]
    fn non_json_is_refused_at_the_first_bad_byte() {
        for bad in [
            &b"[]"[..],
            b"\"s\"",
            b"1",
            b"x",
            b"{a",
            b"{\"a\" 1",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{\"a\":01}",
            b"{\"a\":-}",
            b"{\"a\":1.}",
            b"{\"a\":1e}",
            b"{\"a\":.5}",
            b"{\"a\":tru}",
            b"{\"a\":True}",
            b"{\"a\":[1,]}",
            b"{\"a\":[1}",
            b"{\"a\":{]}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\u12g4\"}",
            b"{}{",
            b"{} ",
            b"{\"a\":\"\xc0\xaf\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":\"\xe2\x82\"}",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(!complete(bad), "{}", String::from_utf8_lossy(bad));
            let ok = serde_json::from_slice::<serde_json::Value>(bad)
                .map(|v| v.is_object() && !bad.ends_with(b" "))
                .unwrap_or(false);
            assert!(!ok, "serde_json takes {}", String::from_utf8_lossy(bad));
        }
        // Refused as soon as the bad byte arrives, not only at the end.
        assert!(prefix(b"{\"a\":1"));
        assert!(!prefix(b"{\"a\":1,}"));
        assert!(!prefix(b"{\"a\":x"));
        assert!(prefix(b"{\"a\":\"\xe2\x82"));
        assert!(!prefix(b"{\"a\":\"\xe2\x82\x22"));
    }

    #[test]
    fn nesting_is_capped() {
        let deep = |n: usize| {
            let mut s = b"{\"a\":".to_vec();
            s.extend(std::iter::repeat_n(b'[', n));
            s
        };
        assert!(prefix(&deep(MAX_DEPTH as usize - 1)));
        assert!(!prefix(&deep(MAX_DEPTH as usize)));
    }

    /// Against serde_json on random short byte strings over JSON's alphabet: whatever the
    /// automaton calls complete parses as an object, and every object serde_json parses
    /// (without trailing whitespace) is complete.
    #[test]
    fn agrees_with_serde_json_on_random_strings() {
        let alphabet = b"{}[]:,\" 0-1.eE+tfnrulasx\\";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut complete_seen = 0;
        for _ in 0..200_000 {
            let len = 2 + (next() % 12) as usize;
            let s: Vec<u8> = (0..len)
                .map(|i| {
                    if i == 0 {
                        b'{'
                    } else {
                        alphabet[(next() % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let serde_ok = !s.ends_with(b" ")
                && serde_json::from_slice::<serde_json::Value>(&s).is_ok_and(|v| v.is_object());
            assert_eq!(complete(&s), serde_ok, "{}", String::from_utf8_lossy(&s));
            complete_seen += usize::from(serde_ok);
        }
        assert!(complete_seen > 50, "only {complete_seen} objects generated");
    }
}
