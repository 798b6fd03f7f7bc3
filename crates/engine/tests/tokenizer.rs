//! Tokenizer tests: a tiny generated vocabulary whose ids can be worked out by hand, metadata
//! validation, GGUF loading, and (when `DEAI_MODEL_PATH` names the SmolLM2 GGUF) bit-exact
//! agreement with llama.cpp on the cases of `fixtures/tokenizer_llamacpp.json`, which
//! `scripts/gen_tokenizer_fixture.py` generates with llama-cpp-python.

use candle_core::quantized::gguf_file::{self, Value};
use deai_engine::gguf::GgufFile;
use deai_engine::tokenizer::{chat_prompt, ChatMessage, Tokenizer};
use deai_engine::EngineError;
use proptest::prelude::*;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// A tiny vocabulary: the 256 byte tokens, a few merges and some special tokens.
// ---------------------------------------------------------------------------------------------

/// GPT-2's `bytes_to_unicode`, written out independently of the engine's table.
fn bytes_to_unicode() -> Vec<char> {
    let mut printable: Vec<u32> = (0x21..=0x7E)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

struct Tiny {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

/// Ids 0..=255: byte tokens in byte order. Then merged tokens, then specials.
fn tiny() -> Tiny {
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    let mut types = vec![1; 256];
    let merges: Vec<&str> = vec![
        "h e",    // rank 0 -> "he"
        "l l",    // rank 1 -> "ll"
        "he ll",  // rank 2 -> "hell"
        "hell o", // rank 3 -> "hello"
        "Ġ w",    // rank 4 -> "Ġw"
        "a a",    // rank 5 -> "aa"
        "b c",    // rank 6 -> "bc"
        "a b",    // rank 7 -> "ab"
        "1 2",    // rank 8 -> "12" (never applies with the smollm pre-tokenizer)
        "Ġw o",   // rank 9 -> "Ġwo"
    ];
    for m in &merges {
        let (l, r) = m.split_once(' ').unwrap();
        let t = format!("{l}{r}");
        if !tokens.contains(&t) {
            tokens.push(t);
            types.push(1);
        }
    }
    for (t, ty) in [
        ("<|im_start|>", 3),
        ("<|im_end|>", 3),
        ("<x>", 3),
        ("<x>y", 3),
        ("<user>", 4),
    ] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    Tiny {
        tokens,
        types,
        merges: merges.iter().map(|s| s.to_string()).collect(),
    }
}

fn tiny_tok(pre: &str) -> Tokenizer {
    let t = tiny();
    Tokenizer::from_parts(t.tokens, t.types, t.merges, pre, None, Some(257)).unwrap()
}

/// Token id by vocabulary text, panicking if absent.
fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.token_id(text)
        .unwrap_or_else(|| panic!("{text:?} not in vocab"))
}

/// Byte-token ids of an ASCII string.
fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect() // byte tokens are ids 0..=255 in byte order
}

#[test]
fn tiny_merges_follow_rank_order() {
    let tok = tiny_tok("smollm");
    assert_eq!(tok.vocab_size(), tiny().tokens.len());
    // h e l l o -> he l l o -> he ll o -> hell o -> hello
    assert_eq!(tok.encode("hello", false).unwrap(), vec![id(&tok, "hello")]);
    // " world": the space joins the letters (` ?\p{L}+`); Ġ w -> Ġw, then Ġw o -> Ġwo.
    assert_eq!(
        tok.encode("hello world", false).unwrap(),
        [vec![id(&tok, "hello"), id(&tok, "Ġwo")], bytes("rld")].concat()
    );
    // "b c" (rank 6) beats "a b" (rank 7): a|bc, not ab|c.
    assert_eq!(
        tok.encode("abc", false).unwrap(),
        vec![id(&tok, "a"), id(&tok, "bc")]
    );
    // Equal ranks go left to right: aa|a, and aa|aa.
    assert_eq!(
        tok.encode("aaa", false).unwrap(),
        vec![id(&tok, "aa"), id(&tok, "a")]
    );
    assert_eq!(
        tok.encode("aaaa", false).unwrap(),
        vec![id(&tok, "aa"), id(&tok, "aa")]
    );
    assert_eq!(tok.encode("", true).unwrap(), Vec::<u32>::new());
}

#[test]
fn tiny_bytes_without_tokens_are_dropped() {
    // Like SmolLM2's vocabulary, which lacks a token for 0x04: llama.cpp emits nothing for it.
    let mut t = tiny();
    t.tokens[0x04] = "unused".into();
    let tok = Tokenizer::from_parts(t.tokens, t.types, t.merges, "smollm", None, None).unwrap();
    assert_eq!(
        tok.encode("he\x04llo", false).unwrap(),
        vec![id(&tok, "he"), id(&tok, "ll"), id(&tok, "o")]
    );
    assert_eq!(tok.encode("\x04", false).unwrap(), Vec::<u32>::new());
}

#[test]
fn tiny_pre_tokenizer_boundaries() {
    let tok = tiny_tok("smollm");
    // smollm: every digit is its own piece, so "1 2" never merges.
    assert_eq!(tok.encode("a12", false).unwrap(), bytes("a12"));
    // gpt-2: "12" is one ` ?\p{N}+` piece and merges.
    let gpt2 = tiny_tok("gpt-2");
    assert_eq!(
        gpt2.encode("a12", false).unwrap(),
        vec![id(&gpt2, "a"), id(&gpt2, "12")]
    );
    // Pieces never merge across: "he" + "'s" + " he": 'h','e' merge inside "he" only.
    assert_eq!(
        tok.encode("he's he", false).unwrap(),
        [
            vec![id(&tok, "he")],
            bytes("'s"),
            bytes(" "),
            vec![id(&tok, "he")]
        ]
        .concat()
    );
    // "a  w": the run of two spaces leaves its last space to the next word (`\s+(?!\S)`).
    assert_eq!(
        tok.encode("a  w", false).unwrap(),
        [bytes("a"), bytes(" "), vec![id(&tok, "Ġw")]].concat()
    );
    // A newline does not prefix a word: "\nw" -> "\n", "w".
    assert_eq!(tok.encode("\nw", false).unwrap(), bytes("\nw"));
    // Non-ASCII text falls back to its UTF-8 bytes.
    assert_eq!(
        tok.encode("é", false).unwrap(),
        vec![0xC3, 0xA9] // byte tokens are ids 0..=255
    );
}

#[test]
fn tiny_special_tokens() {
    let tok = tiny_tok("smollm");
    let start = id(&tok, "<|im_start|>");
    let end = id(&tok, "<|im_end|>");
    assert_eq!(
        tok.encode("<|im_start|>he<|im_end|>", true).unwrap(),
        vec![start, id(&tok, "he"), end]
    );
    // Without parse_special, control tokens are plain text.
    assert_eq!(
        tok.encode("<|im_start|>", false).unwrap(),
        bytes("<|im_start|>")
    );
    // ... but user-defined tokens are still matched (as in llama.cpp and HF tokenizers).
    let user = id(&tok, "<user>");
    assert_eq!(
        tok.encode("<user>he", false).unwrap(),
        vec![user, id(&tok, "he")]
    );
    // Longest special first: "<x>y" wins over "<x>".
    assert_eq!(
        tok.encode("<x>y<x>", true).unwrap(),
        vec![id(&tok, "<x>y"), id(&tok, "<x>")]
    );
    // Adjacent and repeated specials.
    assert_eq!(
        tok.encode("<|im_end|><|im_start|><|im_start|>", true)
            .unwrap(),
        vec![end, start, start]
    );
    assert!(tok.is_control(start));
    assert!(!tok.is_control(user));
    assert!(!tok.is_control(id(&tok, "he")));
    assert!(!tok.is_control(u32::MAX));
    assert_eq!(tok.token_bytes(start).unwrap(), b"<|im_start|>");
    assert_eq!(tok.token_bytes(id(&tok, "Ġwo")).unwrap(), b" wo");
    assert_eq!(tok.token_bytes(u32::MAX), None);
    assert_eq!(
        tok.decode(&[start, id(&tok, "hello"), end]),
        "<|im_start|>hello<|im_end|>"
    );
    // EOS (257 = "ll") first, then the ChatML end token; no <|endoftext|> in this vocab.
    assert_eq!(tok.eos_id(), Some(257));
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.stop_ids(), vec![257, end]);
    // Debug prints a summary, not the vocabulary.
    assert!(format!("{tok:?}").len() < 200);
}

#[test]
fn tiny_long_input_is_fast_and_round_trips() {
    let tok = tiny_tok("smollm");
    // One 20k-byte word (worst case for a quadratic merge loop) and a long mixed text.
    let word = "a".repeat(20_000);
    let t0 = Instant::now();
    let ids = tok.encode(&word, false).unwrap();
    assert_eq!(ids, vec![id(&tok, "aa"); 10_000]);
    let mixed = "hello world 123, he's here!\n".repeat(400);
    let ids2 = tok.encode(&mixed, true).unwrap();
    let dt = t0.elapsed();
    assert_eq!(tok.decode(&ids2), mixed);
    assert!(dt.as_secs_f64() < 2.0, "too slow: {dt:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn tiny_round_trip(s in "\\PC{0,40}|[ \\t\\n\\r\\u{a0}\\u{3000}a-c0-9'<>|_]{0,40}") {
        let tok = tiny_tok("smollm");
        let ids = tok.encode(&s, true).unwrap();
        prop_assert_eq!(tok.decode(&ids), s.clone());
        let ids = tok.encode(&s, false).unwrap();
        prop_assert_eq!(tok.decode(&ids), s);
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals and malformed metadata
// ---------------------------------------------------------------------------------------------

fn unsupported_msg(r: deai_engine::Result<Tokenizer>) -> String {
    match r {
        Err(EngineError::Unsupported(m)) => m,
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got a tokenizer"),
    }
}

fn tokenizer_msg(r: deai_engine::Result<Tokenizer>) -> String {
    match r {
        Err(EngineError::Tokenizer(m)) => m,
        Err(e) => panic!("expected a Tokenizer error, got {e}"),
        Ok(_) => panic!("expected a Tokenizer error, got a tokenizer"),
    }
}

#[test]
fn unknown_pre_is_refused() {
    for pre in ["llama-bpe", "default", "", "gpt2", "qwen2"] {
        let t = tiny();
        let m = unsupported_msg(Tokenizer::from_parts(
            t.tokens, t.types, t.merges, pre, None, None,
        ));
        assert!(m.contains(&format!("{pre:?}")), "{m}");
    }
    for pre in ["smollm", "starcoder", "gpt-2"] {
        let t = tiny();
        Tokenizer::from_parts(t.tokens, t.types, t.merges, pre, None, None).unwrap();
    }
}

#[test]
fn malformed_parts_are_errors() {
    let build = |f: &dyn Fn(&mut Tiny), bos: Option<u32>| {
        let mut t = tiny();
        f(&mut t);
        Tokenizer::from_parts(t.tokens, t.types, t.merges, "smollm", bos, None)
    };
    let m = tokenizer_msg(build(
        &|t| {
            t.types.pop();
        },
        None,
    ));
    assert!(m.contains("token types"), "{m}");
    let m = tokenizer_msg(build(&|t| t.merges.push("h zz".into()), None));
    assert!(m.contains("\"zz\""), "{m}");
    let m = tokenizer_msg(build(&|t| t.merges.push("hello".into()), None));
    assert!(m.contains("no separating space"), "{m}");
    // Both halves exist but their concatenation is not a token.
    let m = tokenizer_msg(build(&|t| t.merges.push("x y".into()), None));
    assert!(m.contains("\"xy\""), "{m}");
    let m = tokenizer_msg(build(&|_| {}, Some(100_000)));
    assert!(m.contains("out of range"), "{m}");
    // Missing byte token for space ("Ġ") or printable ASCII: not a byte-level vocabulary.
    let m = tokenizer_msg(build(&|t| t.tokens[0x20] = "not-a-byte".into(), None));
    assert!(m.contains("0x20"), "{m}");
    let m = tokenizer_msg(build(
        &|t| t.tokens[b'q' as usize] = "not-a-byte".into(),
        None,
    ));
    assert!(m.contains("0x71"), "{m}");
    let m = tokenizer_msg(build(&|t| t.tokens[260] = "a".into(), None));
    assert!(m.contains("duplicate"), "{m}");
    let m = tokenizer_msg(Tokenizer::from_parts(
        vec![],
        vec![],
        vec![],
        "smollm",
        None,
        None,
    ));
    assert!(m.contains("empty"), "{m}");
}

/// Writes a GGUF with metadata only (no tensors) and opens it.
fn gguf_with(md: &[(&str, Value)]) -> (tempfile::NamedTempFile, GgufFile) {
    let f = tempfile::NamedTempFile::new().unwrap();
    let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut w = std::fs::File::create(f.path()).unwrap();
    gguf_file::write(&mut w, &refs, &[]).unwrap();
    drop(w);
    let g = GgufFile::open(f.path()).unwrap();
    (f, g)
}

fn tiny_metadata(model: Option<&str>, pre: Option<&str>) -> Vec<(&'static str, Value)> {
    let t = tiny();
    let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let mut md = vec![
        ("tokenizer.ggml.tokens", strs(t.tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(t.types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strs(t.merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(256)),
        ("tokenizer.ggml.eos_token_id", Value::U32(257)),
    ];
    if let Some(m) = model {
        md.push(("tokenizer.ggml.model", Value::String(m.into())));
    }
    if let Some(p) = pre {
        md.push(("tokenizer.ggml.pre", Value::String(p.into())));
    }
    md
}

#[test]
fn from_gguf_loads_and_refuses() {
    let (_f, g) = gguf_with(&tiny_metadata(Some("gpt2"), Some("smollm")));
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let direct = tiny_tok("smollm");
    let text = "<|im_start|>hello world 12 aaa<|im_end|>";
    assert_eq!(
        tok.encode(text, true).unwrap(),
        direct.encode(text, true).unwrap()
    );
    assert_eq!(tok.bos_id(), Some(256));
    assert_eq!(tok.eos_id(), Some(257));

    let (_f, g) = gguf_with(&tiny_metadata(Some("llama"), Some("smollm")));
    let m = unsupported_msg(Tokenizer::from_gguf(&g));
    assert!(m.contains("\"llama\""), "{m}");
    let (_f, g) = gguf_with(&tiny_metadata(None, Some("smollm")));
    let m = unsupported_msg(Tokenizer::from_gguf(&g));
    assert!(m.contains("tokenizer.ggml.model"), "{m}");
    let (_f, g) = gguf_with(&tiny_metadata(Some("gpt2"), None));
    let m = unsupported_msg(Tokenizer::from_gguf(&g));
    assert!(m.contains("tokenizer.ggml.pre"), "{m}");
    let (_f, g) = gguf_with(&tiny_metadata(Some("gpt2"), Some("falcon")));
    let m = unsupported_msg(Tokenizer::from_gguf(&g));
    assert!(m.contains("\"falcon\""), "{m}");

    // Wrong metadata types are Tokenizer errors, not panics.
    let mut md = tiny_metadata(Some("gpt2"), Some("smollm"));
    md.retain(|(k, _)| *k != "tokenizer.ggml.merges");
    let (_f, g) = gguf_with(&md);
    assert!(tokenizer_msg(Tokenizer::from_gguf(&g)).contains("merges"));
    md.push(("tokenizer.ggml.merges", Value::U32(3)));
    let (_f, g) = gguf_with(&md);
    assert!(tokenizer_msg(Tokenizer::from_gguf(&g)).contains("merges"));
    let mut md = tiny_metadata(Some("gpt2"), Some("smollm"));
    md[1].1 = Value::Array(vec![Value::F32(1.0); 262]);
    let (_f, g) = gguf_with(&md);
    assert!(tokenizer_msg(Tokenizer::from_gguf(&g)).contains("token_type"));
    let mut md = tiny_metadata(Some("gpt2"), Some("smollm"));
    md[3].1 = Value::U32(1_000_000);
    let (_f, g) = gguf_with(&md);
    assert!(tokenizer_msg(Tokenizer::from_gguf(&g)).contains("out of range"));
}

// ---------------------------------------------------------------------------------------------
// Chat template
// ---------------------------------------------------------------------------------------------

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn chat_prompt_matches_smollm2_template() {
    assert_eq!(
        chat_prompt(&[msg("user", "Hi")], true),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        chat_prompt(&[msg("system", "S"), msg("user", "U")], false),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
    );
    assert_eq!(chat_prompt(&[], true), "<|im_start|>assistant\n");
    assert_eq!(chat_prompt(&[], false), "");
}

// ---------------------------------------------------------------------------------------------
// Agreement with llama.cpp on the real model
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Fixture {
    model_sha256: String,
    llama_cpp_python_version: String,
    cases: Vec<Case>,
    chats: Vec<Chat>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    prompt: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_llamacpp.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Chat prompts rendered by the GGUF's own jinja template (no model needed).
#[test]
fn chat_prompt_matches_fixture_renderings() {
    let fx = fixture();
    assert!(!fx.chats.is_empty());
    for c in &fx.chats {
        assert_eq!(chat_prompt(&c.messages, c.add_generation_prompt), c.prompt);
    }
}

/// The real SmolLM2 tokenizer, or `None` (with a note) when `DEAI_MODEL_PATH` is not set.
fn real_tokenizer() -> Option<Tokenizer> {
    let path = match std::env::var_os("DEAI_MODEL_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            eprintln!("SKIPPED: DEAI_MODEL_PATH is not set; set it to the SmolLM2-135M-Instruct GGUF to compare with llama.cpp");
            return None;
        }
    };
    if !path.is_file() {
        eprintln!("SKIPPED: DEAI_MODEL_PATH={} does not exist", path.display());
        return None;
    }
    let g = GgufFile::open(&path).unwrap();
    Some(Tokenizer::from_gguf(&g).unwrap())
}

fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn real_model_matches_llama_cpp() {
    let Some(tok) = real_tokenizer() else { return };
    let fx = fixture();
    let path = PathBuf::from(std::env::var_os("DEAI_MODEL_PATH").unwrap());
    let sha = sha256_hex(&path);
    if sha != fx.model_sha256 {
        eprintln!(
            "note: the fixture was generated from a GGUF with sha256 {}, DEAI_MODEL_PATH has {sha}; \
             comparing anyway (any SmolLM2 GGUF has the same tokenizer)",
            fx.model_sha256
        );
    }
    let mut failures = Vec::new();
    for c in &fx.cases {
        let got = tok.encode(&c.text, true).unwrap();
        if got != c.ids {
            failures.push(format!(
                "{:?}\n   llama.cpp: {:?}\n   ours:      {:?}",
                c.text, c.ids, got
            ));
        }
    }
    for c in &fx.chats {
        let got = tok.encode(&c.prompt, true).unwrap();
        if got != c.ids {
            failures.push(format!(
                "chat {:?}\n   llama.cpp: {:?}\n   ours:      {:?}",
                c.prompt, c.ids, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from llama-cpp-python {}:\n{}",
        failures.len(),
        fx.cases.len() + fx.chats.len(),
        fx.llama_cpp_python_version,
        failures.join("\n")
    );
}

#[test]
fn real_model_round_trips_and_metadata() {
    let Some(tok) = real_tokenizer() else { return };
    // SmolLM2 has no token for 21 bytes (e.g. 0x04, 0xF1); llama.cpp drops them, and so do we.
    let t = bytes_to_unicode();
    let has_token = |b: u8| tok.token_id(&t[b as usize].to_string()).is_some();
    assert_eq!((0..=255u8).filter(|&b| !has_token(b)).count(), 21);
    assert_eq!(tok.encode("\x04", true).unwrap(), Vec::<u32>::new());
    let mut checked = 0;
    for c in &fixture().cases {
        if !c.text.bytes().all(has_token) {
            continue;
        }
        checked += 1;
        // Special tokens decode to their own text, so both modes round-trip.
        for special in [false, true] {
            let ids = tok.encode(&c.text, special).unwrap();
            assert_eq!(tok.decode(&ids), c.text, "special={special}");
        }
    }
    assert!(checked > 60, "only {checked} cases round-tripped");
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.stop_ids(), vec![2, 0]);
    assert!((0..17).all(|i| tok.is_control(i)));
    assert!(!tok.is_control(17));
    // Without parse_special, "<|im_end|>" is ordinary text.
    let plain = tok.encode("<|im_end|>", false).unwrap();
    assert!(plain.len() > 1 && !plain.contains(&2));
}

#[test]
fn real_model_long_prompt_is_fast() {
    let Some(tok) = real_tokenizer() else { return };
    let t = bytes_to_unicode();
    let has_token = |b: u8| tok.token_id(&t[b as usize].to_string()).is_some();
    let fx = fixture();
    let mut text = String::new();
    while text.chars().count() < 10_000 {
        for c in fx.cases.iter().filter(|c| c.text.bytes().all(has_token)) {
            text.push_str(&c.text);
        }
    }
    // Plus the worst cases for the merge loop: one 10k-letter word and a 10k-space run.
    let word: String = "abcdefghij".repeat(1_000);
    let spaces = " ".repeat(10_000);
    for input in [&text, &word, &spaces] {
        let t0 = Instant::now();
        let ids = tok.encode(input, true).unwrap();
        let dt = t0.elapsed();
        eprintln!(
            "encoded {} chars into {} tokens in {dt:?}",
            input.chars().count(),
            ids.len()
        );
        assert!(tok.decode(&ids) == *input, "round trip failed");
        assert!(dt.as_secs_f64() < 1.0, "too slow: {dt:?}");
    }
}
