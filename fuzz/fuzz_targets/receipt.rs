//! Arbitrary bytes as a receipt: decoding returns an error or a receipt whose canonical
//! encoding is exactly the input; it never panics. The JSON view is fuzzed the same way.

#![no_main]

use deai_proof::Receipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Receipt::decode(data) {
        let b = r.to_bytes().expect("a decoded receipt re-encodes");
        assert_eq!(b, data, "decoding accepted a non-canonical encoding");
        let _ = r.verify_signature();
        let back = Receipt::from_json(&r.to_json()).expect("JSON view round-trips");
        assert_eq!(back, r);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Receipt::from_json(s);
    }
});
