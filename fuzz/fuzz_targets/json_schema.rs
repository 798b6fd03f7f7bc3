//! Structured outputs (`deai_engine::json_schema`): the schema compiler, the canonical-text
//! decoder receipts use, and the output grammar. Input: schema text, a zero byte, output bytes.
//! Nothing panics; a canonical text that decodes is exactly the decoded schema's canonical
//! text; a compiled schema's canonical text decodes to the same schema; the fast `accepts`
//! agrees with the full walk; every prefix of an accepted output is accepted; and an output
//! the grammar calls complete parses with serde_json.

#![no_main]

use deai_engine::json_schema::{Json, JsonSchema};
use libfuzzer_sys::fuzz_target;

fn check(schema: &JsonSchema, out: &[u8]) {
    let start = schema.start();
    let whole = schema.after(&start, out);
    assert_eq!(schema.accepts(&start, out), whole.is_some());
    if let Some(st) = &whole {
        for i in 0..out.len() {
            assert!(schema.after(&start, &out[..i]).is_some(), "a prefix was refused");
        }
        if schema.is_complete(st) && !schema.canonical().starts_with("{\"orText\"") {
            serde_json::from_slice::<serde_json::Value>(out).expect("a complete output parses");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (text, out) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(s) = JsonSchema::from_canonical(text) {
        assert_eq!(s.canonical(), text);
        check(&s, out);
    }
    if let Ok(j) = serde_json::from_str::<Json>(text) {
        for s in [JsonSchema::compile(&j), JsonSchema::tool_calls_or_text(&[("f".into(), j.clone())])]
            .into_iter()
            .flatten()
        {
            assert_eq!(JsonSchema::from_canonical(s.canonical()).unwrap(), s);
            check(&s, out);
        }
    }
});
