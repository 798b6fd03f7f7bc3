//! The kernel-profile guarantee on generated models: decode, full prefill and prefix-reusing
//! prefill give bit-identical hidden states and logits at any thread count, for every weight
//! format. (`tests/real_model.rs` checks the same on SmolLM2.)

use deai_engine::gguf::WType;
use deai_engine::testing::{tiny_model_gguf, TinySpec};
use deai_engine::{
    Engine, EngineConfig, EngineError, GenParams, Model, SamplingParams, StopReason,
};
use std::io::Write;

fn load(spec: &TinySpec, threads: usize, prefix_bytes: usize) -> Engine {
    load_on(spec, threads, prefix_bytes, false)
}

fn load_on(spec: &TinySpec, threads: usize, prefix_bytes: usize, force_portable: bool) -> Engine {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&tiny_model_gguf(spec)).unwrap();
    let model = Model::load(f.path()).unwrap();
    Engine::new(
        model,
        EngineConfig {
            threads,
            prefix_cache_bytes: prefix_bytes,
            force_portable,
        },
    )
    .unwrap()
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % (vocab - 3) + 3) as u32)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// (hidden, logits) of every position, three ways.
fn three_ways(e: &Engine, toks: &[u32]) -> [(Vec<u32>, Vec<u32>); 3] {
    let full = e.prefill_all(toks, 0).unwrap();
    let mut cache = e.new_cache(toks.len()).unwrap();
    let (mut h, mut l) = (vec![], vec![]);
    for t in toks {
        let o = e.forward(&[*t], &mut cache, 0).unwrap();
        h.extend(o.hidden);
        l.extend(o.logits);
    }
    let split = toks.len() / 2 + 1;
    let mut cache = e.new_cache(toks.len()).unwrap();
    let a = e.forward(&toks[..split], &mut cache, 0).unwrap();
    let b = e.forward(&toks[split..], &mut cache, 0).unwrap();
    let ph = [a.hidden, b.hidden].concat();
    let pl = [a.logits, b.logits].concat();
    [
        (bits(&full.hidden), bits(&full.logits)),
        (bits(&h), bits(&l)),
        (bits(&ph), bits(&pl)),
    ]
}

#[test]
fn decode_prefill_and_prefix_reuse_are_bit_identical_for_every_format() {
    for wtype in [
        WType::Q4_0,
        WType::Q4_1,
        WType::Q8_0,
        WType::F16,
        WType::F32,
    ] {
        let spec = TinySpec {
            wtype,
            ..TinySpec::default()
        };
        let e = load(&spec, 2, 0);
        let toks = tokens(37, e.model.cfg.vocab);
        let [full, decode, split] = three_ways(&e, &toks);
        assert_eq!(full.0.len(), 37 * 64);
        assert_eq!(full.1.len(), 37 * e.model.cfg.vocab);
        assert!(full.0.iter().all(|b| f32::from_bits(*b).is_finite()));
        assert_eq!(full, decode, "{wtype:?}: decode differs from prefill");
        assert_eq!(full, split, "{wtype:?}: prefix-reusing prefill differs");
        // Sanity: the outputs depend on the input (a changed token changes later rows).
        let mut other = toks.clone();
        other[3] = 5;
        let o = e.prefill_all(&other, 0).unwrap();
        assert_eq!(bits(&o.hidden[..3 * 64]), full.0[..3 * 64]);
        assert_ne!(bits(&o.hidden[3 * 64..]), full.0[3 * 64..]);
    }
}

#[test]
fn portable_kernels_give_the_same_bits_as_simd() {
    for wtype in [WType::Q4_0, WType::Q4_1, WType::Q8_0, WType::F32] {
        let spec = TinySpec {
            wtype,
            ..TinySpec::default()
        };
        let toks = tokens(23, 263);
        let simd = load_on(&spec, 2, 0, false);
        let portable = load_on(&spec, 2, 0, true);
        assert_eq!(portable.profile().cpu_features, "portable");
        assert_eq!(portable.profile().id, simd.profile().id);
        let a = simd.prefill_all(&toks, 0).unwrap();
        let b = portable.prefill_all(&toks, 0).unwrap();
        assert_eq!(bits(&a.hidden), bits(&b.hidden), "{wtype:?}");
        assert_eq!(bits(&a.logits), bits(&b.logits), "{wtype:?}");
    }
}

#[test]
fn thread_count_does_not_change_bits() {
    let spec = TinySpec {
        d_model: 128,
        d_ff: 352,
        ..TinySpec::default()
    };
    let toks = tokens(29, 263);
    let reference = three_ways(&load(&spec, 1, 0), &toks);
    for threads in [2, 3, 8] {
        assert_eq!(
            three_ways(&load(&spec, threads, 0), &toks),
            reference,
            "{threads} threads"
        );
    }
}

#[test]
fn generation_with_prefix_cache_matches_cold_run() {
    let spec = TinySpec::default();
    let cold = load(&spec, 2, 0);
    let warm = load(&spec, 2, 64 << 20);
    let system = tokens(30, cold.model.cfg.vocab);
    let params = GenParams {
        max_tokens: 12,
        sampling: SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            seed: 99,
            ..Default::default()
        },
        stop: vec![],
    };
    // Warm the cache with a first request sharing the system prefix.
    let mut first = system.clone();
    first.extend([40, 41, 42]);
    warm.generate(&first, &params, |_| {}).unwrap();
    let mut second = system.clone();
    second.extend([50, 51]);
    let a = cold.generate(&second, &params, |_| {}).unwrap();
    let b = warm.generate(&second, &params, |_| {}).unwrap();
    assert_eq!(a.cached_tokens, 0);
    assert_eq!(b.cached_tokens, 30, "the shared prefix is reused");
    assert_eq!(a.output_tokens, b.output_tokens);
    assert_eq!(bits(&a.hidden), bits(&b.hidden));
    assert_eq!(
        a.hidden.len(),
        (second.len() + a.output_tokens.len() - 1) * 64
    );
    // Multi-turn: the whole previous exchange is a prefix of the next prompt.
    let mut third = second.clone();
    third.extend(&b.output_tokens);
    third.extend([60]);
    let c = warm.generate(&third, &params, |_| {}).unwrap();
    assert!(c.cached_tokens >= second.len() + b.output_tokens.len() - 1);
    let c_cold = cold.generate(&third, &params, |_| {}).unwrap();
    assert_eq!(c.output_tokens, c_cold.output_tokens);
    assert_eq!(bits(&c.hidden), bits(&c_cold.hidden));
}

#[test]
fn streaming_pieces_and_stop_reasons() {
    let e = load(&TinySpec::default(), 2, 0);
    let prompt = tokens(5, e.model.cfg.vocab);
    let mut pieces = String::new();
    let mut n = 0;
    let g = e
        .generate(
            &prompt,
            &GenParams {
                max_tokens: 9,
                ..Default::default()
            },
            |ev| {
                pieces.push_str(ev.text);
                n += 1;
            },
        )
        .unwrap();
    assert_eq!(n, g.output_tokens.len());
    assert_eq!(pieces, g.text);
    if g.stop_reason == StopReason::MaxTokens {
        assert_eq!(g.output_tokens.len(), 9);
    } else {
        assert_eq!(g.stop_reason, StopReason::Eos);
    }
    // Greedy generation equals argmax over a validator's prefill logits.
    let all: Vec<u32> = prompt.iter().chain(&g.output_tokens).copied().collect();
    let v = e
        .prefill_all(&all[..all.len() - 1], prompt.len() - 1)
        .unwrap();
    let vocab = e.model.cfg.vocab;
    for (i, t) in g.output_tokens.iter().enumerate() {
        let row = &v.logits[i * vocab..(i + 1) * vocab];
        assert_eq!(deai_engine::sampler::argmax(row), *t);
    }
    assert_eq!(bits(&v.hidden), bits(&g.hidden));
}

#[test]
fn bad_requests_are_clear_errors() {
    let e = load(
        &TinySpec {
            n_ctx: 64,
            ..TinySpec::default()
        },
        1,
        0,
    );
    let p = GenParams::default();
    assert!(matches!(
        e.generate(&[], &p, |_| {}),
        Err(EngineError::EmptyPrompt)
    ));
    let long = tokens(70, e.model.cfg.vocab);
    let err = e.generate(&long, &p, |_| {}).unwrap_err();
    assert!(
        matches!(err, EngineError::ContextOverflow { n_ctx: 64, .. }),
        "{err}"
    );
    let err = e
        .generate(
            &long[..60],
            &GenParams {
                max_tokens: 10,
                ..p.clone()
            },
            |_| {},
        )
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let mut bad = p.clone();
    bad.sampling.temperature = -1.0;
    assert!(matches!(
        e.generate(&[5], &bad, |_| {}),
        Err(EngineError::InvalidParam(_))
    ));
    bad.sampling.temperature = 1.0;
    bad.sampling.top_p = 0.0;
    assert!(matches!(
        e.generate(&[5], &bad, |_| {}),
        Err(EngineError::InvalidParam(_))
    ));
    let err = e
        .generate(
            &[5],
            &GenParams {
                max_tokens: usize::MAX,
                ..p.clone()
            },
            |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::ContextOverflow { .. }), "{err}");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&tiny_model_gguf(&TinySpec::default())).unwrap();
    let cfg = EngineConfig {
        threads: 100_000,
        ..EngineConfig::default()
    };
    let err = Engine::new(Model::load(f.path()).unwrap(), cfg)
        .err()
        .expect("too many threads");
    assert!(matches!(err, EngineError::InvalidParam(_)), "{err}");
    let err = e.prefill_all(&[5, 100_000], 0).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

#[test]
fn corrupt_and_truncated_files_are_errors_not_panics() {
    let bytes = tiny_model_gguf(&TinySpec::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    // Truncations at many points, including inside the header and inside tensor data.
    let cuts = [
        0,
        3,
        4,
        8,
        23,
        24,
        100,
        1000,
        bytes.len() / 2,
        bytes.len() - 1,
    ];
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(Model::load(&path).is_err(), "truncated at {cut} loaded");
    }
    // Flipped bytes across the header: an error or a model, never a panic.
    for i in (0..4096.min(bytes.len())).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        std::fs::write(&path, &b).unwrap();
        let _ = Model::load(&path);
    }
    // Unknown architecture is refused by name.
    let mut b = bytes.clone();
    let at = b.windows(5).position(|w| w == b"llama").unwrap();
    b[at..at + 5].copy_from_slice(b"llamb");
    std::fs::write(&path, &b).unwrap();
    let err = Model::load(&path)
        .err()
        .expect("unknown arch refused")
        .to_string();
    assert!(err.contains("llamb"), "{err}");
    assert!(Model::load(&dir.path().join("missing.gguf")).is_err());
}

/// A validator's background prefill (chunked, yielding to generation) gives the same bits as
/// the one-shot prefill, for every `logits_from` (before, inside and after the chunks), and
/// waits while generation runs on the same engine.
#[test]
fn background_prefill_is_bit_identical_and_yields_to_generation() {
    use deai_engine::sched::BACKGROUND_CHUNK;
    use std::sync::Arc;
    use std::time::Duration;
    for wtype in [WType::Q4_1, WType::Q8_0, WType::F32] {
        let spec = TinySpec {
            wtype,
            ..TinySpec::default()
        };
        let e = load(&spec, 2, 0);
        let n = 3 * BACKGROUND_CHUNK + 5;
        let toks = tokens(n, e.model.cfg.vocab);
        for from in [
            0,
            1,
            BACKGROUND_CHUNK,
            BACKGROUND_CHUNK + 3,
            n - 1,
            n,
            n + 9,
        ] {
            let a = e.prefill_all(&toks, from).unwrap();
            let b = e
                .prefill_all_background(&toks, from, Duration::from_secs(5))
                .unwrap();
            assert_eq!(a.logits_from, b.logits_from, "{wtype:?} from {from}");
            assert_eq!(bits(&a.hidden), bits(&b.hidden), "{wtype:?} from {from}");
            assert_eq!(bits(&a.logits), bits(&b.logits), "{wtype:?} from {from}");
        }
    }
    // Bad input gives the same errors as the one-shot path.
    let e = Arc::new(load(&TinySpec::default(), 2, 0));
    assert!(matches!(
        e.prefill_all_background(&[], 0, Duration::ZERO),
        Err(EngineError::EmptyPrompt)
    ));
    assert!(e
        .prefill_all_background(&[5, 100_000], 0, Duration::ZERO)
        .is_err());

    // While generation holds the engine, background work does not start a chunk; once it
    // ends, the prefill completes with the same result.
    let toks = tokens(40, e.model.cfg.vocab);
    let want = bits(&e.prefill_all(&toks, 0).unwrap().hidden);
    let before = e.yield_stats();
    let (tx, rx) = std::sync::mpsc::channel();
    let guard_done = {
        let e2 = e.clone();
        let toks = toks.clone();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _g = e2.interactive();
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        held_rx.recv().unwrap();
        let e3 = e.clone();
        std::thread::spawn(move || {
            let out = e3
                .prefill_all_background(&toks, 0, Duration::from_secs(60))
                .unwrap();
            tx.send(bits(&out.hidden)).unwrap();
        });
        (holder, release_tx)
    };
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "background prefill ran while generation held the engine"
    );
    guard_done.1.send(()).unwrap();
    guard_done.0.join().unwrap();
    let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(got, want);
    let after = e.yield_stats();
    assert!(after.waited >= before.waited + Duration::from_millis(200));
    assert_eq!(after.forced_chunks, before.forced_chunks);

    // Out of patience: it runs even though generation never ends.
    let _g = e.interactive();
    let out = e
        .prefill_all_background(&toks, 0, Duration::from_millis(30))
        .unwrap();
    assert_eq!(bits(&out.hidden), want);
    assert_eq!(e.yield_stats().forced_chunks, after.forced_chunks + 1);
}

#[test]
fn a_cached_background_prefill_reuses_only_the_prompt_and_gives_the_same_bits() {
    use std::time::Duration;
    let patience = Duration::from_secs(5);
    for wtype in [WType::Q4_1, WType::F32] {
        let spec = TinySpec {
            wtype,
            ..TinySpec::default()
        };
        let e = load(&spec, 2, 64 << 20);
        let prompt = tokens(37, e.model.cfg.vocab);
        let mut a = prompt.clone();
        a.extend([3, 4, 5, 6, 7]);
        let mut b = prompt.clone();
        b.extend([9, 8, 7]);
        let from = prompt.len() - 1;
        for (seq, want_reused) in [(&a, 0), (&b, from), (&a, from)] {
            let want = e.prefill_all(seq, from).unwrap();
            let (got, reused) = e
                .prefill_all_background_cached(seq, from, patience)
                .unwrap();
            assert_eq!(reused, want_reused, "{wtype:?}");
            assert_eq!(got.logits_from, want.logits_from);
            assert_eq!(bits(&got.hidden), bits(&want.hidden), "{wtype:?}");
            assert_eq!(bits(&got.logits), bits(&want.logits), "{wtype:?}");
        }
        // A sequence the cache holds whole still has its positions from logits_from on
        // computed (and they are the same bits).
        let (again, reused) = e.prefill_all_background_cached(&a, 2, patience).unwrap();
        assert_eq!(reused, 2);
        assert_eq!(
            bits(&again.hidden),
            bits(&e.prefill_all(&a, 2).unwrap().hidden)
        );
        // With no cache budget nothing is reused.
        let cold = load(&spec, 2, 0);
        cold.prefill_all_background_cached(&a, from, patience)
            .unwrap();
        assert_eq!(
            cold.prefill_all_background_cached(&a, from, patience)
                .unwrap()
                .1,
            0
        );
    }
}

#[test]
fn an_engine_sharing_a_gate_yields_to_the_other_and_counts_its_own_cpu_time() {
    use std::sync::Arc;
    use std::time::Duration;
    let spec = TinySpec::default();
    let worker = Arc::new(load(&spec, 2, 0));
    let validator = Arc::new(load(&spec, 2, 0).sharing_gate(&worker));
    let toks = tokens(
        3 * deai_engine::sched::BACKGROUND_CHUNK,
        worker.model.cfg.vocab,
    );
    let want = bits(&worker.prefill_all(&toks, 0).unwrap().hidden);

    // Generation on the worker's engine holds off background work on the validator's.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let w2 = worker.clone();
    let holder = std::thread::spawn(move || {
        let _g = w2.interactive();
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    held_rx.recv().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (v2, toks2) = (validator.clone(), toks.clone());
    std::thread::spawn(move || {
        let out = v2
            .prefill_all_background(&toks2, 0, Duration::from_secs(60))
            .unwrap();
        tx.send(bits(&out.hidden)).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the validator's engine ran while the worker's generated"
    );
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), want);

    // Kernel CPU time: each engine's own pool, growing only with its own work.
    let (Some(w0), Some(v0)) = (worker.kernel_cpu_time(), validator.kernel_cpu_time()) else {
        // Not Linux: nothing to count with (the gate was checked above).
        eprintln!("no per-thread CPU time here");
        return;
    };
    for _ in 0..200 {
        validator.prefill_all(&toks, 0).unwrap();
    }
    let (w1, v1) = (
        worker.kernel_cpu_time().unwrap(),
        validator.kernel_cpu_time().unwrap(),
    );
    assert!(
        v1 > v0,
        "the validator's work was not counted: {v0:?} -> {v1:?}"
    );
    assert!(
        w1 - w0 < (v1 - v0) / 4,
        "the worker's pool was charged for the validator's work: worker {:?}, validator {:?}",
        w1 - w0,
        v1 - v0
    );
}

#[test]
fn logprobs_describe_the_validators_logits_and_leave_the_tokens_alone() {
    let e = load(&TinySpec::default(), 2, 0);
    let prompt = tokens(6, e.model.cfg.vocab);
    let params = GenParams {
        max_tokens: 12,
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: 0,
            top_p: 0.9,
            seed: 5,
            ..Default::default()
        },
        stop: vec![],
    };
    let plain = e.generate(&prompt, &params, |_| {}).unwrap();
    let mut seen = Vec::new();
    let g = e
        .generate_with_logprobs(&prompt, &params, Some(4), |ev| {
            seen.push((ev.token, ev.logprobs.clone()))
        })
        .unwrap();
    assert_eq!(
        g.output_tokens, plain.output_tokens,
        "sampling is untouched"
    );
    assert_eq!(seen.len(), g.output_tokens.len());
    // Each figure is the log-softmax of a validator's prefill logits at that position.
    let all: Vec<u32> = prompt.iter().chain(&g.output_tokens).copied().collect();
    let v = e
        .prefill_all(&all[..all.len() - 1], prompt.len() - 1)
        .unwrap();
    let vocab = e.model.cfg.vocab;
    let stops = e.model.tokenizer.stop_ids();
    for (i, (tok, lp)) in seen.iter().enumerate() {
        if stops.contains(tok) {
            assert!(lp.is_none(), "a stop token carries no logprobs");
            continue;
        }
        let lp = lp.as_ref().expect("asked for logprobs");
        let row = &v.logits[i * vocab..(i + 1) * vocab];
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        assert!(
            (lp.logprob as f64 - (row[*tok as usize] as f64 - lse)).abs() < 1e-4,
            "position {i}"
        );
        assert_eq!(lp.top.len(), 4);
        assert_eq!(lp.top[0].0, deai_engine::sampler::argmax(row));
        assert!(lp.logprob <= lp.top[0].1);
    }
    // No logprobs asked: none computed. Over the cap: a clear error.
    e.generate(&prompt, &params, |ev| assert!(ev.logprobs.is_none()))
        .unwrap();
    let err = e
        .generate_with_logprobs(&prompt, &params, Some(21), |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("top_logprobs"), "{err}");
}
