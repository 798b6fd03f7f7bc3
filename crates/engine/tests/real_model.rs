//! The kernel-profile guarantee and the generation loop on the real SmolLM2-135M-Instruct
//! model (`DEAI_MODEL_PATH`; `scripts/test.sh` sets it, CI always runs these tests):
//!
//! - token-by-token decode, one full prefill and a prefill that reuses a cached prefix give
//!   bit-identical hidden states and logits, at 1, 2 and 3 threads;
//! - `Engine::generate` reuses a shared system prompt from the prefix cache without changing a
//!   bit, its greedy output is the argmax of the validator's one-pass `prefill_all` logits, and
//!   seeded sampling replays exactly (from the engine and from the validator's logits);
//! - a real question gets a real answer.
//!
//! Without `DEAI_MODEL_PATH` every test prints `SKIPPED: set DEAI_MODEL_PATH` and passes.
//! Set but pointing nowhere is a failure (CI must not silently skip).

use deai_engine::kv::PrefixCache;
use deai_engine::sampler::{self, argmax};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, EngineConfig, GenParams, Generation, Model, SamplingParams, StopReason};
use std::path::{Path, PathBuf};

fn model_path(test: &str) -> Option<PathBuf> {
    match std::env::var_os("DEAI_MODEL_PATH") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "DEAI_MODEL_PATH={} is not a file (unset it to skip the real-model tests)",
                p.display()
            );
            Some(p)
        }
        _ => {
            eprintln!("SKIPPED: set DEAI_MODEL_PATH to the SmolLM2-135M-Instruct GGUF ({test})");
            None
        }
    }
}

fn engine(path: &Path, threads: usize, prefix_cache_bytes: usize) -> Engine {
    Engine::load(
        path,
        EngineConfig {
            threads,
            prefix_cache_bytes,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

const SYSTEM: &str = "You are a concise assistant. Answer in one short sentence, \
                      use plain words and never make up facts.";

/// ChatML prompt ids for one user message under [`SYSTEM`].
fn chat_ids(m: &Model, user: &str) -> Vec<u32> {
    let text = chat_prompt(&[msg("system", SYSTEM), msg("user", user)], true);
    m.tokenizer.encode(&text, true).unwrap()
}

/// Hidden states and logits (as bits) of every position of `toks`, computed three ways:
/// one full prefill, token-by-token decode, and a prefill that takes positions `..split`
/// from a [`PrefixCache`] filled by an earlier, separate prefill of that prefix.
fn three_ways(e: &Engine, toks: &[u32], split: usize) -> [(Vec<u32>, Vec<u32>); 3] {
    let full = e.prefill_all(toks, 0).unwrap();

    let mut cache = e.new_cache(toks.len()).unwrap();
    let (mut h, mut l) = (vec![], vec![]);
    for t in toks {
        let o = e.forward(&[*t], &mut cache, 0).unwrap();
        h.extend(o.hidden);
        l.extend(o.logits);
    }

    let d = e.model.cfg.d_model;
    let mut prefix = PrefixCache::new(1 << 30);
    let mut first = e.new_cache(split).unwrap();
    let a = e.forward(&toks[..split], &mut first, 0).unwrap();
    prefix.insert(&toks[..split], &first, &a.hidden);
    drop(first);
    let mut cache = e.new_cache(toks.len()).unwrap();
    let hit = prefix.lookup(toks, toks.len() - 1, d, &mut cache);
    assert_eq!(hit.len, split, "the whole cached prefix is reused");
    let b = e.forward(&toks[split..], &mut cache, 0).unwrap();
    let ph = [hit.hidden, b.hidden].concat();
    // Logits of the reused positions come from the prefill that filled the cache.
    let pl = [a.logits, b.logits].concat();
    [
        (bits(&full.hidden), bits(&full.logits)),
        (bits(&h), bits(&l)),
        (bits(&ph), bits(&pl)),
    ]
}

#[test]
fn decode_prefill_and_prefix_reuse_are_bit_identical_at_1_2_3_threads() {
    let Some(path) = model_path("bit-identity") else {
        return;
    };
    let mut reference: Option<[(Vec<u32>, Vec<u32>); 3]> = None;
    let mut toks = vec![];
    for threads in [1, 2, 3] {
        let e = engine(&path, threads, 0);
        assert_eq!(e.threads(), threads);
        if toks.is_empty() {
            // A ~60-token chat prompt plus a few tokens of an answer.
            toks = chat_ids(
                &e.model,
                "Name the largest planet in the solar system, and say in a few words why \
                 it is so much bigger than the Earth.",
            );
            toks.extend(e.model.tokenizer.encode("Jupiter is the", false).unwrap());
            assert!((55..=80).contains(&toks.len()), "{} tokens", toks.len());
        }
        // The split point lies inside the user message.
        let split = toks.len() * 2 / 3;
        let got = three_ways(&e, &toks, split);
        let [full, decode, reused] = &got;
        let (d, v) = (e.model.cfg.d_model, e.model.cfg.vocab);
        assert_eq!(full.0.len(), toks.len() * d);
        assert_eq!(full.1.len(), toks.len() * v);
        assert!(full.0.iter().all(|b| f32::from_bits(*b).is_finite()));
        assert!(full.1.iter().all(|b| f32::from_bits(*b).is_finite()));
        assert!(
            full == decode,
            "{threads} threads: decode differs from prefill"
        );
        assert!(
            full == reused,
            "{threads} threads: prefix-reusing prefill differs"
        );
        match &reference {
            None => reference = Some(got),
            Some(r) => assert!(*r == got, "{threads} threads differ from 1 thread"),
        }
    }
    // The comparison is not vacuous: the rows depend on the input, and only from the
    // changed position on.
    let e = engine(&path, 2, 0);
    let mut other = toks.clone();
    let at = toks.len() - 5;
    other[at] = e.model.tokenizer.encode(" Saturn", false).unwrap()[0];
    assert_ne!(other[at], toks[at]);
    let o = e.prefill_all(&other, at).unwrap();
    let d = e.model.cfg.d_model;
    let r = &reference.unwrap()[0];
    assert_eq!(bits(&o.hidden[..at * d]), r.0[..at * d]);
    assert_ne!(bits(&o.hidden[at * d..]), r.0[at * d..]);
    assert_ne!(bits(&o.logits), r.1[at * e.model.cfg.vocab..]);
}

/// The validator path: one `prefill_all` over prompt + output reproduces the hidden states
/// bit for bit, and its logits replay the sampler to the same tokens.
fn check_against_validator(e: &Engine, g: &Generation, p: &SamplingParams) {
    let n_out = g.output_tokens.len();
    assert!(n_out >= 1);
    let fed: Vec<u32> = g
        .prompt_tokens
        .iter()
        .chain(&g.output_tokens[..n_out - 1])
        .copied()
        .collect();
    let from = g.prompt_tokens.len() - 1;
    let v = e.prefill_all(&fed, from).unwrap();
    assert!(bits(&v.hidden) == bits(&g.hidden), "hidden states differ");
    let vocab = e.model.cfg.vocab;
    assert_eq!(v.logits.len(), n_out * vocab);
    for (i, row) in v.logits.chunks(vocab).enumerate() {
        let pos = (g.prompt_tokens.len() + i) as u64;
        assert_eq!(
            sampler::sample(row, p, pos),
            g.output_tokens[i],
            "output token {i}"
        );
        if p.is_greedy() {
            assert_eq!(argmax(row), g.output_tokens[i], "greedy token {i}");
        }
    }
}

#[test]
fn generation_reuses_shared_system_prompt_and_replays_exactly() {
    let Some(path) = model_path("generation") else {
        return;
    };
    let warm = engine(&path, 2, 64 << 20);
    let cold = engine(&path, 1, 0);
    let greedy = GenParams {
        max_tokens: 6,
        ..GenParams::default()
    };
    let first = chat_ids(&warm.model, "What colour is the sky on a clear day?");
    let second = chat_ids(&warm.model, "How many legs does a spider have?");
    let shared = first
        .iter()
        .zip(&second)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        shared >= 20,
        "the system prompt is a shared prefix ({shared})"
    );

    let g1 = warm.generate(&first, &greedy, |_| {}).unwrap();
    assert_eq!(g1.cached_tokens, 0);
    let mut streamed = String::new();
    let g2 = warm
        .generate(&second, &greedy, |ev| streamed.push_str(ev.text))
        .unwrap();
    assert_eq!(
        g2.cached_tokens, shared,
        "the shared system prompt is reused"
    );
    assert_eq!(streamed, g2.text);
    let c2 = cold.generate(&second, &greedy, |_| {}).unwrap();
    assert_eq!(c2.cached_tokens, 0);
    assert_eq!(g2.output_tokens, c2.output_tokens);
    assert!(bits(&g2.hidden) == bits(&c2.hidden), "cached run differs");
    assert_eq!(g2.text, c2.text);
    assert_eq!(
        g2.hidden.len(),
        (second.len() + g2.output_tokens.len() - 1) * warm.model.cfg.d_model
    );
    check_against_validator(&cold, &g2, &greedy.sampling);
    let (hits, reused, _) = warm.prefix_cache_stats();
    assert!(hits >= 1 && reused >= shared as u64);

    // Seeded sampling: the same seed gives the same tokens on two engines (one of them
    // serving part of the prompt from its cache), a different seed gives other tokens.
    let sampled = |seed| GenParams {
        max_tokens: 8,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed,
            ..Default::default()
        },
        stop: vec![],
    };
    let poem = chat_ids(&warm.model, "Write a short poem about anything you like.");
    let a = warm.generate(&poem, &sampled(7), |_| {}).unwrap();
    let b = cold.generate(&poem, &sampled(7), |_| {}).unwrap();
    assert!(a.cached_tokens > 0);
    assert_eq!(a.output_tokens, b.output_tokens);
    assert!(bits(&a.hidden) == bits(&b.hidden));
    check_against_validator(&cold, &a, &sampled(7).sampling);
    let c = cold.generate(&poem, &sampled(8), |_| {}).unwrap();
    assert_ne!(
        a.output_tokens, c.output_tokens,
        "seeds 7 and 8 sample alike"
    );
    check_against_validator(&cold, &c, &sampled(8).sampling);
    // Top-k / top-p sampling replays too.
    let nucleus = GenParams {
        sampling: SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            seed: 3,
            ..Default::default()
        },
        ..sampled(3)
    };
    let d = warm.generate(&poem, &nucleus, |_| {}).unwrap();
    check_against_validator(&cold, &d, &nucleus.sampling);
}

#[test]
fn answers_a_question() {
    let Some(path) = model_path("answer") else {
        return;
    };
    let e = engine(&path, 2, 0);
    let c = &e.model.cfg;
    assert_eq!((c.vocab, c.n_layer), (49152, 30));
    assert_eq!(e.model.tokenizer.vocab_size(), 49152);
    // Under SmolLM2's default system prompt the first answer token is a near-tie: "L" leads
    // "The" by 0.2 in these logits, and an f64 reference on dequantized weights has "The"
    // 0.08 ahead. A plain system prompt makes the answer clear.
    let prompt = chat_ids(&e.model, "What is the capital of France?");
    let params = GenParams {
        max_tokens: 24,
        ..GenParams::default()
    };
    let g = e.generate(&prompt, &params, |_| {}).unwrap();
    eprintln!("answer: {:?} ({:?})", g.text, g.stop_reason);
    assert!(!g.text.trim().is_empty());
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    let stops = e.model.tokenizer.stop_ids();
    match g.stop_reason {
        StopReason::Eos => assert!(stops.contains(g.output_tokens.last().unwrap())),
        StopReason::MaxTokens => assert_eq!(g.output_tokens.len(), params.max_tokens),
        StopReason::StopString => panic!("no stop strings were given"),
    }
    let content: Vec<u32> = g
        .output_tokens
        .iter()
        .copied()
        .filter(|t| !stops.contains(t))
        .collect();
    assert_eq!(e.model.tokenizer.decode(&content), g.text);
}
