//! The JSON-object grammar behind `response_format: json_object` against serde_json: bytes the
//! automaton calls a complete object parse as an object with serde_json; serde_json's objects
//! (without trailing whitespace) are complete unless they pass one of the grammar's own
//! limits (nesting, number digits); every prefix of an accepted string is accepted; it never
//! panics.

#![no_main]

use deai_engine::json_prefix::{JsonPrefix, MAX_DEPTH, MAX_EXPONENT_DIGITS, MAX_NUMBER_DIGITS};
use libfuzzer_sys::fuzz_target;

/// Whether `data` may pass a limit the grammar adds to the RFC: deep nesting (counted
/// loosely: every bracket byte), a long run of digits, or a long exponent.
fn beyond_limits(data: &[u8]) -> bool {
    let brackets = data.iter().filter(|&&b| b == b'{' || b == b'[').count();
    let longest_digits = data
        .split(|b| !b.is_ascii_digit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    let long_exponent = data.windows(2).enumerate().any(|(i, w)| {
        matches!(w[0], b'e' | b'E')
            && data[i + 1..]
                .iter()
                .skip(usize::from(matches!(w[1], b'+' | b'-')))
                .take_while(|b| b.is_ascii_digit())
                .count()
                > MAX_EXPONENT_DIGITS as usize
    });
    brackets >= MAX_DEPTH as usize || longest_digits > MAX_NUMBER_DIGITS as usize || long_exponent
}

fuzz_target!(|data: &[u8]| {
    let state = JsonPrefix::new().after(data);
    let complete = state.is_some_and(|s| s.is_complete());
    let serde_object = !data.last().is_some_and(|b| b" \t\n\r".contains(b))
        && serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| v.is_object());
    if complete {
        assert!(serde_object, "{:?}", String::from_utf8_lossy(data));
    } else if serde_object {
        assert!(beyond_limits(data), "{:?}", String::from_utf8_lossy(data));
    }
    if state.is_some() {
        for n in 0..data.len() {
            assert!(JsonPrefix::new().after(&data[..n]).is_some());
        }
    }
});
