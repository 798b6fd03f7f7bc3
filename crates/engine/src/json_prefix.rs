//! A byte-level automaton for prefixes of one JSON object: the grammar behind
//! `response_format: {"type": "json_object"}` (the sampler's step 0, [`crate::sampler`]).
//!
//! [`JsonPrefix`] accepts exactly the byte strings that some continuation turns into a JSON text
//! (RFC 8259) whose top-level value is an object, ending at that object's closing brace:
//! whitespace before it, none after. Strings must be well-formed UTF-8 (no overlong forms,
//! no surrogate code points), may not contain raw control characters, and their `\u`
//! escapes must name Unicode scalar values (a high surrogate immediately followed by an
//! escaped low one, never a lone surrogate). Nesting is capped at [`MAX_DEPTH`].
//!
//! Two limits go beyond the RFC so that every complete output parses with common JSON
//! libraries (serde_json, Python's `json`, JavaScript's `JSON.parse` keep numbers as finite
//! doubles): at most [`MAX_NUMBER_DIGITS`] digits in a number's integer part and in its
//! fraction, and at most [`MAX_EXPONENT_DIGITS`] exponent digits, so no number overflows.
//!
//! The state is `Copy` and a few bytes long, so the sampler can try every token of the
//! vocabulary from the current state without allocating.

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: u8 = 64;
/// Most digits in a number's integer part, and in its fraction.
pub const MAX_NUMBER_DIGITS: u8 = 100;
/// Most digits in a number's exponent (so `|exponent| <= 99`).
pub const MAX_EXPONENT_DIGITS: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Num {
    /// After `-`: a digit must follow.
    Minus,
    /// A leading `0`: no more integer digits.
    Zero,
    /// This many integer digits so far.
    Int(u8),
    /// After `.`: a digit must follow.
    Dot,
    /// This many fraction digits so far.
    Frac(u8),
    /// After `e`/`E`: a sign or a digit.
    E,
    /// After the exponent's sign: a digit.
    ESign,
    /// This many exponent digits so far.
    Exp(u8),
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int(_) | Num::Frac(_) | Num::Exp(_))
    }
}

/// Where a `\u` escape stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Esc {
    /// `left` hex digits of an escape still to come; `first` is its first digit once read,
    /// `high` whether it is a high surrogate (`D800`-`DBFF`).
    Code { left: u8, first: u8, high: bool },
    /// After a high surrogate: `\` must follow...
    PairBackslash,
    /// ...then `u`...
    PairU,
    /// ...then the `left` hex digits still to come of a low surrogate (`DC00`-`DFFF`).
    Low { left: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Inside a `\u` escape (or a surrogate pair of them).
    Hex {
        key: bool,
        esc: Esc,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
            b'1'..=b'9' => Mode::Num(Num::Int(1)),
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
            (Num::Minus, b'1'..=b'9') => Num::Int(1),
            (Num::Int(d), b'0'..=b'9') if d < MAX_NUMBER_DIGITS => Num::Int(d + 1),
            (Num::Zero | Num::Int(_), b'.') => Num::Dot,
            (Num::Dot, b'0'..=b'9') => Num::Frac(1),
            (Num::Frac(d), b'0'..=b'9') if d < MAX_NUMBER_DIGITS => Num::Frac(d + 1),
            (Num::Zero | Num::Int(_) | Num::Frac(_), b'e' | b'E') => Num::E,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign, b'0'..=b'9') => Num::Exp(1),
            (Num::Exp(d), b'0'..=b'9') if d < MAX_EXPONENT_DIGITS => Num::Exp(d + 1),
            // A digit past a cap: no continuation makes this number acceptable.
            (_, b'0'..=b'9') => return false,
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

    /// One byte of a `\u` escape. The code must be a Unicode scalar value: `D800`-`DBFF` needs
    /// an escaped `DC00`-`DFFF` right after it, and `DC00`-`DFFF` alone is refused, each at
    /// the first byte that decides it.
    fn escape_byte(&mut self, key: bool, esc: Esc, b: u8) -> bool {
        let digit = (b as char).to_digit(16).map(|d| d as u8);
        let next = match (esc, digit) {
            (Esc::Code { left, first, high }, Some(d)) => match left {
                4 => Esc::Code {
                    left: 3,
                    first: d,
                    high: false,
                },
                // `D` then `C`-`F`: a lone low surrogate; `D` then `8`-`B`: a high one.
                3 if first == 0xd && d >= 0xc => return false,
                3 => Esc::Code {
                    left: 2,
                    first,
                    high: first == 0xd && d >= 0x8,
                },
                2 => Esc::Code {
                    left: 1,
                    first,
                    high,
                },
                _ if high => Esc::PairBackslash,
                _ => {
                    self.mode = Mode::Str { key };
                    return true;
                }
            },
            (Esc::PairBackslash, _) if b == b'\\' => Esc::PairU,
            (Esc::PairU, _) if b == b'u' => Esc::Low { left: 4 },
            (Esc::Low { left: 4 }, Some(0xd)) => Esc::Low { left: 3 },
            (Esc::Low { left: 3 }, Some(d)) if d >= 0xc => Esc::Low { left: 2 },
            (Esc::Low { left: 2 }, Some(_)) => Esc::Low { left: 1 },
            (Esc::Low { left: 1 }, Some(_)) => {
                self.mode = Mode::Str { key };
                return true;
            }
            _ => return false,
        };
        self.mode = Mode::Hex { key, esc: next };
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
                    b'u' => Mode::Hex {
                        key,
                        esc: Esc::Code {
                            left: 4,
                            first: 0,
                            high: false,
                        },
                    },
                    _ => return false,
                };
                true
            }
            Mode::Hex { key, esc } => self.escape_byte(key, esc, b),
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

/// One JSON string (from just after its opening quote) or number inside a larger document,
/// lexed by the same rules as [`JsonPrefix`] (UTF-8, escapes, surrogate pairs, digit caps).
/// [`crate::json_schema`] uses it for the free-form parts of a schema-shaped output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScalarLex(JsonPrefix);

/// What a byte does to a [`ScalarLex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lexed {
    /// The byte belongs to the scalar, which may go on.
    More(ScalarLex),
    /// The byte closed the string (its closing quote).
    Closed,
    /// The number was complete before this byte, which belongs to what follows it.
    Ended,
    /// No continuation makes this a JSON string or number.
    Fail,
}

impl ScalarLex {
    /// Inside a string value, just after the opening quote.
    pub fn string() -> Self {
        ScalarLex(JsonPrefix {
            mode: Mode::Str { key: false },
            stack: 0,
            depth: 1,
        })
    }

    /// Before a number's first byte.
    pub fn number() -> Self {
        ScalarLex(JsonPrefix {
            mode: Mode::Value,
            stack: 0,
            depth: 1,
        })
    }

    /// Whether the scalar may end before the next byte (a number with all its parts).
    pub fn number_complete(&self) -> bool {
        matches!(self.0.mode, Mode::Num(n) if n.complete())
    }

    /// Digits so far in the part of the number being written (integer part or fraction; 0
    /// elsewhere).
    pub fn digits(&self) -> u8 {
        match self.0.mode {
            Mode::Num(Num::Int(d) | Num::Frac(d)) => d,
            _ => 0,
        }
    }

    pub fn step(self, b: u8) -> Lexed {
        let number_byte = b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
        match self.0.mode {
            Mode::Value if !(b == b'-' || b.is_ascii_digit()) => return Lexed::Fail,
            Mode::Num(n) if !number_byte => {
                return if n.complete() {
                    Lexed::Ended
                } else {
                    Lexed::Fail
                }
            }
            _ => {}
        }
        let mut s = self.0;
        if !s.step(b) {
            return Lexed::Fail;
        }
        if s.mode == Mode::After {
            Lexed::Closed
        } else {
            Lexed::More(ScalarLex(s))
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

    /// Whether `s` has an exponent of three or more digits (`e100`, `E-007`).
    fn long_exponent(s: &[u8]) -> bool {
        s.windows(2).enumerate().any(|(i, w)| {
            matches!(w[0], b'e' | b'E')
                && s[i + 1..]
                    .iter()
                    .skip(usize::from(matches!(w[1], b'+' | b'-')))
                    .take_while(|b| b.is_ascii_digit())
                    .count()
                    >= 3
        })
    }

    #[test]
    fn whole_objects_are_complete_and_every_prefix_is_a_prefix() {
        let docs: [&[u8]; 10] = [
            b"{}",
            b" \n{ }",
            br#"{"a": 1, "b": [true, false, null, -0.5e+10, 0, 12.25E-3], "c": {"d": "x\"\\\/\b\f\n\r\t\u00e9"}}"#,
            br#"{"nested": [[[{}]], [], {"k": []}]}"#,
            "{\"utf8\": \"h\u{e9}llo \u{20ac} \u{1f600}\"}".as_bytes(),
            br#"{"n":-12}"#,
            br#"{"e":1e5,"f":0.0}"#,
            br#"{"s":"","t":"a b"}"#,
            br#"{"pair":"\ud83d\ude00","bmp":"\uD7FF\uE000\u0000"}"#,
            br#"{"big":-1e99,"small":1E-99}"#,
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
            // Lone and unpaired surrogate escapes.
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\udc00"}"#,
            br#"{"a":"\ud800\u0041"}"#,
            br#"{"a":"\ud800x"}"#,
            br#"{"a":"\ud800\ud800"}"#,
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
        // A lone low surrogate is refused at its second digit, a missing pair at once.
        assert!(prefix(br#"{"a":"\ud"#));
        assert!(!prefix(br#"{"a":"\udc"#));
        assert!(prefix(br#"{"a":"\ud83d"#));
        assert!(!prefix(br#"{"a":"\ud83d""#));
        assert!(prefix(br#"{"a":"\ud83d\ud"#));
        assert!(!prefix(br#"{"a":"\ud83d\ud8"#));
    }

    /// Numbers stay finite doubles: at most 100 integer and 100 fraction digits, two exponent
    /// digits (serde_json refuses `1e999`, Python and JavaScript turn it into infinity).
    #[test]
    fn numbers_are_capped_to_finite_doubles() {
        let num = |n: &str| complete(format!("{{\"a\":{n}}}").as_bytes());
        let digits = |k: usize| "9".repeat(k);
        assert!(num(&digits(100)));
        assert!(!num(&digits(101)));
        assert!(num(&format!("0.{}", digits(100))));
        assert!(!num(&format!("0.{}", digits(101))));
        assert!(num("1e99") && num("-1E+99") && num("5e-99"));
        assert!(!num("1e100") && !num("1e-100"));
        // The largest accepted number is finite for serde_json.
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{\"a\":{}.{}e99}}", digits(100), digits(100))).unwrap();
        assert!(v["a"].as_f64().unwrap().is_finite());
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
        let alphabet = b"{}[]:,\" 0-1.eE+tfnrulasx\\d8c";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut complete_seen = 0;
        for _ in 0..200_000 {
            let len = 2 + (next() % 15) as usize;
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
            // Exponents of 3+ digits are this grammar's own limit (serde_json takes 1e100);
            // the check is loose (it also matches inside strings), so such inputs are skipped.
            if long_exponent(&s) {
                continue;
            }
            assert_eq!(complete(&s), serde_ok, "{}", String::from_utf8_lossy(&s));
            complete_seen += usize::from(serde_ok);
        }
        assert!(complete_seen > 50, "only {complete_seen} objects generated");
    }
}
