//! Arbitrary UTF-8 through the tiny byte-level vocabulary (`deai_engine::testing`), whose 256
//! byte tokens cover every string: encoding never fails or panics, gives in-range ids, is
//! deterministic, and decodes back to the input, with and without special-token parsing.
//! The first input byte picks the mode; the rest is the text.

#![no_main]

use deai_engine::testing::tiny_vocab;
use deai_engine::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let (tokens, types, merges) = tiny_vocab();
        Tokenizer::from_parts(tokens, types, merges, "smollm", Some(1), Some(2))
            .expect("the tiny vocabulary is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let tok = tokenizer();
    let special = mode & 1 == 1;
    let ids = tok.encode(text, special).expect("encoding never fails");
    assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
    assert!(ids.len() <= text.len(), "more tokens than bytes");
    assert_eq!(tok.encode(text, special).unwrap(), ids, "not deterministic");
    assert_eq!(tok.decode(&ids), text, "decode(encode(s)) != s");
    if !special {
        // Special-token text is plain text here: no control token may appear.
        assert!(ids.iter().all(|&i| !tok.is_control(i)), "{ids:?}");
    }
});
