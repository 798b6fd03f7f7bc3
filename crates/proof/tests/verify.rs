//! Honest runs are accepted; every tamper class is rejected by a content check (tampered
//! receipts are re-signed with the worker key, so the signature alone cannot catch them).

use deai_engine::gguf::WType;
use deai_engine::testing::{tiny_model_gguf, TinySpec};
use deai_engine::{Engine, EngineConfig, GenParams, Model, SamplingParams, StopReason};
use deai_proof::activation;
use deai_proof::receipt::{self, Receipt};
use deai_proof::{
    build_receipt, verify, verify_with, JobSpec, ProofConfig, SigningKey, VerifyConfig,
};
use deai_types::Hash256;

struct Tiny {
    engine: Engine,
    id: Hash256,
}

fn tiny(spec: &TinySpec, threads: usize, prefix: usize) -> Tiny {
    let bytes = tiny_model_gguf(spec);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let model = Model::load(&path).unwrap();
    Tiny {
        engine: Engine::new(
            model,
            EngineConfig {
                threads,
                prefix_cache_bytes: prefix,
                ..EngineConfig::default()
            },
        )
        .unwrap(),
        id: Hash256::digest(&bytes),
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn prompt(seed: u32) -> Vec<u32> {
    (0..12).map(|i| 3 + (i * 31 + seed * 7) % 250).collect()
}

fn greedy(n: usize) -> GenParams {
    GenParams {
        max_tokens: n,
        ..GenParams::default()
    }
}

fn sampled(n: usize, seed: u64) -> GenParams {
    GenParams {
        max_tokens: n,
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            seed,
            ..Default::default()
        },
        stop: vec![],
    }
}

/// Run `prompt` on `t` as job `nonce` and return the signed receipt.
fn run(t: &Tiny, model_id: Hash256, prompt: &[u32], params: &GenParams, nonce: u8) -> Receipt {
    let job = JobSpec {
        model_id,
        prompt_tokens: prompt.to_vec(),
        params: params.clone(),
        nonce: [nonce; 32],
    };
    let g = t.engine.generate(prompt, params, |_| {}).unwrap();
    let r = build_receipt(
        &job,
        &g,
        t.engine.model.cfg.d_model,
        &t.engine.profile(),
        ProofConfig::default(),
        &key(),
    )
    .unwrap();
    // Both encodings round-trip.
    let b = r.to_bytes().unwrap();
    assert_eq!(Receipt::decode(&b).unwrap(), r);
    assert_eq!(Receipt::from_json(&r.to_json()).unwrap(), r);
    r
}

/// Make the receipt self-consistent again after tampering, as a cheating worker would
/// (`deai_proof::tamper::reseal`, with the test key).
fn reseal(r: &mut Receipt, rebuild_proof_on: Option<&Engine>) {
    deai_proof::tamper::reseal(r, rebuild_proof_on, &key()).unwrap();
}

fn failing(rep: &deai_proof::Report) -> Vec<String> {
    rep.checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.clone())
        .collect()
}

/// Rejected, signature valid, and every named check failed.
fn assert_caught(rep: &deai_proof::Report, by: &[&str]) {
    let f = failing(rep);
    assert!(!rep.accepted(), "accepted a tampered receipt");
    assert!(
        rep.check("signature").unwrap().ok,
        "re-signed receipt: {f:?}"
    );
    for b in by {
        assert!(f.iter().any(|x| x == b), "{b} did not fail; failing: {f:?}");
    }
}

#[test]
fn honest_runs_accept_across_threads_cache_and_sampling() {
    let spec = TinySpec::default();
    let verifier = tiny(&spec, 1, 0);
    let mut n = 0;
    for threads in [1, 2] {
        for prefix in [0, 8 << 20] {
            let w = tiny(&spec, threads, prefix);
            for (i, params) in [greedy(40), sampled(40, 7), sampled(33, 11)]
                .iter()
                .enumerate()
            {
                // Twice: with the prefix cache on, the second run reuses the prompt.
                for rep in 0..2 {
                    let r = run(&w, w.id, &prompt(i as u32), params, rep);
                    let report = verify(&r, &verifier.engine, &verifier.id);
                    assert!(report.accepted(), "{:?}", report.first_failure());
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 24);
}

#[test]
fn honest_stop_string_and_eos_runs_accept() {
    let t = tiny(&TinySpec::default(), 2, 0);
    // Stop string: stop at an ASCII character that first appears a few tokens into the
    // valid UTF-8 prefix of an unconstrained run (the engine searches that prefix).
    let tok = &t.engine.model.tokenizer;
    let mut picked = None;
    for seed in 0..100 {
        let base = t
            .engine
            .generate(&prompt(3), &sampled(40, seed), |_| {})
            .unwrap();
        let b: Vec<u8> = base
            .output_tokens
            .iter()
            .flat_map(|&i| tok.token_bytes(i).unwrap_or_default())
            .collect();
        let valid = match std::str::from_utf8(&b) {
            Ok(s) => s.to_string(),
            Err(e) => String::from_utf8(b[..e.valid_up_to()].to_vec()).unwrap(),
        };
        let found = valid
            .char_indices()
            .skip(2)
            .find(|(i, c)| c.is_ascii_alphanumeric() && !valid[..*i].contains(*c));
        if let Some((_, c)) = found {
            picked = Some((seed, c.to_string()));
            break;
        }
    }
    let (seed, ch) = picked.expect("a run with an ASCII character");
    let mut params = sampled(40, seed);
    params.stop = vec![ch];
    let r = run(&t, t.id, &prompt(3), &params, 1);
    assert_eq!(r.stop_reason, StopReason::StopString);
    assert!(verify(&r, &t.engine, &t.id).accepted());
    // Falsified: claim max_tokens instead.
    let mut bad = r.clone();
    bad.stop_reason = StopReason::MaxTokens;
    reseal(&mut bad, None);
    assert_caught(&verify(&bad, &t.engine, &t.id), &["termination"]);

    // EOS: find a seed whose hot sampled run ends on a stop token.
    let mut found = false;
    for seed in 0..200 {
        let mut p = sampled(64, seed);
        p.sampling.temperature = 3.0;
        p.sampling.top_k = 0;
        p.sampling.top_p = 1.0;
        let g = t.engine.generate(&prompt(1), &p, |_| {}).unwrap();
        if g.stop_reason == StopReason::Eos {
            let r = run(&t, t.id, &prompt(1), &p, 2);
            assert!(verify(&r, &t.engine, &t.id).accepted());
            let mut bad = r.clone();
            bad.stop_reason = StopReason::MaxTokens;
            reseal(&mut bad, None);
            assert_caught(&verify(&bad, &t.engine, &t.id), &["termination"]);
            found = true;
            break;
        }
    }
    assert!(found, "no seed ended on EOS");
}

#[test]
fn tampered_content_is_caught_by_content_checks() {
    let t = tiny(&TinySpec::default(), 2, 0);
    let e = &t.engine;
    let honest = run(&t, t.id, &prompt(0), &sampled(40, 3), 1);
    let check = |r: &Receipt| verify(r, e, &t.id);
    assert!(check(&honest).accepted());

    // Prompt changed by one token: stale proof, then a proof rebuilt on the new prompt.
    for rebuild in [false, true] {
        let mut r = honest.clone();
        r.prompt_tokens[5] = r.prompt_tokens[5] % 200 + 4;
        reseal(&mut r, rebuild.then_some(e));
        let by: &[&str] = if rebuild {
            &["sampling"]
        } else {
            &["activations"]
        };
        assert_caught(&check(&r), by);
    }
    // One output token replaced.
    for rebuild in [false, true] {
        let mut r = honest.clone();
        r.output_tokens[5] = if r.output_tokens[5] == 100 { 101 } else { 100 };
        reseal(&mut r, rebuild.then_some(e));
        let rep = check(&r);
        assert_caught(&rep, &["sampling"]);
        assert_eq!(rep.check("sampling").unwrap().position, Some(5));
    }
    // Output truncated (proof rebuilt for the shorter output) and extended.
    let mut r = honest.clone();
    r.output_tokens.truncate(30);
    reseal(&mut r, Some(e));
    assert_caught(&check(&r), &["termination"]);
    let mut r = honest.clone();
    r.output_tokens.push(50);
    reseal(&mut r, Some(e));
    assert_caught(&check(&r), &["termination"]);
    // Sampling parameters changed (job id recomputed, proof rebuilt).
    for f in [
        |r: &mut Receipt| r.sampling.temperature = 0.0,
        |r: &mut Receipt| r.sampling.temperature = 0.5,
        |r: &mut Receipt| r.sampling.top_p = 0.3,
        |r: &mut Receipt| r.sampling.seed += 1,
    ] as [fn(&mut Receipt); 4]
    {
        let mut r = honest.clone();
        f(&mut r);
        reseal(&mut r, Some(e));
        assert_caught(&check(&r), &["sampling"]);
    }
    // Stop reason falsified.
    for reason in [StopReason::Eos, StopReason::StopString] {
        let mut r = honest.clone();
        r.stop_reason = reason;
        reseal(&mut r, None);
        assert_caught(&check(&r), &["termination"]);
    }
}

/// Across kernel profiles the sampling replay accepts a near-tie within `logit_tol` and
/// nothing further; on one profile it stays exact.
#[test]
fn cross_profile_replay_uses_the_logit_tolerance() {
    let t = tiny(&TinySpec::default(), 2, 0);
    let e = &t.engine;
    let honest = run(&t, t.id, &prompt(2), &greedy(40), 1);
    // The same receipt as if made under another kernel profile.
    let other = |mut r: Receipt| {
        r.profile_id = "other-profile-v1".into();
        r.profile_detail = "other-profile-v1/test".into();
        reseal(&mut r, None);
        r
    };
    let cfg = |tol: f32| VerifyConfig {
        greedy_tol: tol,
        cross_profiles: vec!["other-profile-v1".into()],
        ..VerifyConfig::default()
    };
    let rep = verify_with(&other(honest.clone()), e, &t.id, &cfg(0.0));
    assert!(rep.accepted(), "{:?}", rep.first_failure());
    // The profile-downgrade attack: without a calibration for that profile the same receipt
    // is rejected, whatever its tolerance would have allowed.
    let rep = verify_with(&other(honest.clone()), e, &t.id, &VerifyConfig::default());
    assert!(!rep.accepted());
    let c = rep.check("kernel_profile").unwrap();
    assert!(!c.ok && c.detail.contains("no calibration"), "{c:?}");

    // The output position whose runner-up is closest to the max.
    let p = honest.prompt_tokens.len();
    let mut fed = honest.prompt_tokens.clone();
    fed.extend_from_slice(&honest.output_tokens[..honest.output_tokens.len() - 1]);
    let logits = e.prefill_all(&fed, p - 1).unwrap().logits;
    let vocab = e.model.cfg.vocab;
    let (j, runner_up, gap) = logits
        .chunks(vocab)
        .enumerate()
        .map(|(i, row)| {
            let best = deai_engine::sampler::argmax(row);
            let (ru, lv) = row
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != best as usize)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            (i, ru as u32, row[best as usize] - lv)
        })
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .unwrap();
    assert!(gap > 0.0, "exact tie in the tiny model's logits");
    // A worker that picked the runner-up there and stopped.
    let mut cheat = honest.clone();
    cheat.output_tokens.truncate(j + 1);
    cheat.output_tokens[j] = runner_up;
    cheat.max_tokens = (j + 1) as u32;
    cheat.stop_reason = StopReason::MaxTokens;
    reseal(&mut cheat, Some(e));
    // Same profile: exact, rejected at j.
    let rep = verify_with(&cheat, e, &t.id, &cfg(gap * 2.0));
    assert_caught(&rep, &["sampling"]);
    assert_eq!(rep.check("sampling").unwrap().position, Some(j as u64));
    // Another profile: within the tolerance it is a near-tie, below it a rejection.
    let cross = other(cheat);
    let rep = verify_with(&cross, e, &t.id, &cfg(gap * 1.01));
    assert!(rep.accepted(), "{:?}", rep.first_failure());
    assert!(rep.check("sampling").unwrap().detail.contains("tolerance"));
    let rep = verify_with(&cross, e, &t.id, &cfg(gap * 0.5));
    assert_caught(&rep, &["sampling"]);
    assert_eq!(rep.check("sampling").unwrap().position, Some(j as u64));
}

#[test]
fn different_weights_are_caught() {
    let spec = TinySpec::default();
    let claimed = tiny(&spec, 2, 0);
    for other in [
        TinySpec {
            seed: 2,
            ..spec.clone()
        },
        TinySpec {
            wtype: WType::Q8_0,
            ..spec.clone()
        },
        TinySpec {
            wtype: WType::Q4_0,
            ..spec.clone()
        },
    ] {
        let cheap = tiny(&other, 2, 0);
        // The worker runs `cheap` but claims the model id of `claimed`.
        for params in [greedy(40), sampled(40, 1)] {
            let r = run(&cheap, claimed.id, &prompt(2), &params, 1);
            let rep = verify(&r, &claimed.engine, &claimed.id);
            assert_caught(&rep, &["activations"]);
        }
    }
}

#[test]
fn one_layer_perturbed_by_noise_is_caught() {
    let spec = TinySpec::default();
    let claimed = tiny(&spec, 2, 0);
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    std::fs::write(&src, tiny_model_gguf(&spec)).unwrap();
    assert!(deai_engine::gguf::perturb_tensor(&src, &dst, "no.such.tensor", 0.1, 1).is_err());
    for (layer, rel) in [(0, 0.05f32), (1, 0.02)] {
        let name = format!("blk.{layer}.ffn_down.weight");
        deai_engine::gguf::perturb_tensor(&src, &dst, &name, rel, 7).unwrap();
        let cheap = Tiny {
            engine: Engine::new(Model::load(&dst).unwrap(), EngineConfig::default()).unwrap(),
            id: claimed.id,
        };
        for params in [greedy(40), sampled(40, 1)] {
            let r = run(&cheap, claimed.id, &prompt(3), &params, 1);
            let rep = verify(&r, &claimed.engine, &claimed.id);
            assert_caught(&rep, &["activations"]);
        }
    }
}

#[test]
fn signature_forgery_key_swap_and_replay_are_caught() {
    let t = tiny(&TinySpec::default(), 2, 0);
    let e = &t.engine;
    let a = run(&t, t.id, &prompt(0), &greedy(40), 1);
    let b = run(&t, t.id, &prompt(1), &greedy(40), 2);
    // Forged signature.
    let mut r = a.clone();
    r.signature[3] ^= 1;
    let rep = verify(&r, e, &t.id);
    assert!(!rep.accepted() && !rep.check("signature").unwrap().ok);
    // Key swapped without re-signing.
    let mut r = a.clone();
    r.worker_key = SigningKey::from_bytes(&[1u8; 32])
        .verifying_key()
        .to_bytes();
    assert!(!verify(&r, e, &t.id).check("signature").unwrap().ok);
    // Re-signed by another key: caught when the verifier expects the worker.
    let mut r = a.clone();
    r.sign(&SigningKey::from_bytes(&[1u8; 32])).unwrap();
    let cfg = VerifyConfig {
        expected_worker: Some(key().verifying_key().to_bytes()),
        ..VerifyConfig::default()
    };
    let rep = verify_with(&r, e, &t.id, &cfg);
    assert!(!rep.accepted() && !rep.check("worker_key").unwrap().ok);
    // A's proof replayed onto job B.
    let mut r = b.clone();
    r.proof = a.proof.clone();
    r.sign(&key()).unwrap();
    assert_caught(&verify(&r, e, &t.id), &["activations"]);
    // A's run relabelled as job B (id bound to content): caught by the job id check.
    let mut r = a.clone();
    r.job_id = b.job_id;
    r.job_nonce = b.job_nonce;
    r.sign(&key()).unwrap();
    assert_caught(&verify(&r, e, &t.id), &["job_id"]);
    // A's honest receipt shown for job B when the verifier knows which job it asked for.
    let cfg = VerifyConfig {
        expected_job_id: Some(b.job_id),
        ..VerifyConfig::default()
    };
    assert!(!verify_with(&a, e, &t.id, &cfg).check("job_id").unwrap().ok);
    // Wrong model id claimed.
    let rep = verify(&a, e, &Hash256::digest(b"another model"));
    assert!(!rep.check("model_id").unwrap().ok);
}

#[test]
fn every_check_runs_after_a_failure() {
    let t = tiny(&TinySpec::default(), 1, 0);
    let mut r = run(&t, t.id, &prompt(0), &greedy(10), 1);
    r.signature = [0; 64];
    r.output_tokens[2] = 7;
    let rep = verify(&r, &t.engine, &t.id);
    let names: Vec<&str> = rep.checks.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "encoding",
        "signature",
        "job_id",
        "model_id",
        "kernel_profile",
        "prompt_commitment",
        "output_commitment",
        "parameters",
        "prefill",
        "activations",
        "sampling",
        "termination",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(rep.first_failure().unwrap().name, "signature");
    assert!(!rep.check("output_commitment").unwrap().ok);
    assert!(!rep.check("sampling").unwrap().ok);
}

#[test]
fn proof_is_at_most_8_bytes_per_token() {
    let t = tiny(&TinySpec::default(), 2, 0);
    for n in [32, 64, 100, 128] {
        let r = run(&t, t.id, &prompt(0), &greedy(n), 1);
        let per = r.proof.encoded_len() as f64 / n as f64;
        assert!(per <= 8.0, "{n} tokens: {per} bytes/token");
    }
}

/// The real model (set DEAI_MODEL_PATH to a GGUF file): honest greedy and sampled runs are
/// accepted at <= 8 proof bytes per token; a replaced output token, a changed prompt token and
/// other weights (the same model re-quantized to Q8_0) are rejected by content checks.
#[test]
fn real_model_when_available() {
    let Some(path) = std::env::var_os("DEAI_MODEL_PATH") else {
        eprintln!("SKIPPED: set DEAI_MODEL_PATH to run receipts on the real model");
        return;
    };
    let path = std::path::PathBuf::from(path);
    let load = |p: &std::path::Path| Tiny {
        engine: Engine::load(p, EngineConfig::default()).unwrap(),
        id: Hash256::digest(&std::fs::read(p).unwrap()),
    };
    let t = load(&path);
    let toks = t
        .engine
        .model
        .tokenizer
        .encode(
            "<|im_start|>user\nWrite a long story about a robot who learns to paint.<|im_end|>\n<|im_start|>assistant\n",
            true,
        )
        .unwrap();
    let honest = run(&t, t.id, &toks, &greedy(64), 1);
    let rep = verify(&honest, &t.engine, &t.id);
    assert!(rep.accepted(), "{:?}", rep.first_failure());
    let n = honest.output_tokens.len();
    let per = honest.proof.encoded_len() as f64 / n as f64;
    eprintln!(
        "real model: proof {} bytes for {n} tokens ({per:.2} B/token)",
        honest.proof.encoded_len()
    );
    if n == 64 {
        assert!(per <= 8.0);
    }
    let sampled_run = run(&t, t.id, &toks, &sampled(48, 5), 2);
    assert!(verify(&sampled_run, &t.engine, &t.id).accepted());

    let mut bad = honest.clone();
    bad.output_tokens[3] = (bad.output_tokens[3] + 1) % 1000 + 10;
    reseal(&mut bad, Some(&t.engine));
    assert_caught(&verify(&bad, &t.engine, &t.id), &["sampling"]);
    let mut bad = honest.clone();
    bad.prompt_tokens[3] = (bad.prompt_tokens[3] + 1) % 1000 + 10;
    reseal(&mut bad, None);
    assert_caught(&verify(&bad, &t.engine, &t.id), &["activations"]);

    // Other weights: the same model re-quantized, claiming the original's id.
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("q8.gguf");
    deai_engine::gguf::requantize(&path, &q8, WType::Q8_0).unwrap();
    let other = load(&q8);
    let r = run(&other, t.id, &toks, &greedy(32), 3);
    assert_caught(&verify(&r, &t.engine, &t.id), &["activations"]);
}

/// Penalties and `logit_bias` are part of the sampler the verifier replays: a run that used
/// them verifies (version-2 receipt); tokens sampled without them do not pass under a receipt
/// that claims them, nor the other way round.
#[test]
fn logit_adjustments_are_replayed_and_dropping_them_is_caught() {
    let t = tiny(&TinySpec::default(), 2, 0);
    let e = &t.engine;
    let adjust = |mut p: GenParams| {
        p.sampling.presence_penalty = 1.5;
        p.sampling.frequency_penalty = 0.5;
        p.sampling.logit_bias = vec![(17, 3.0), (200, -100.0)];
        p
    };
    for (i, plain) in [greedy(40), sampled(40, 5)].into_iter().enumerate() {
        let adjusted = adjust(plain.clone());
        let honest = run(&t, t.id, &prompt(i as u32), &adjusted, 1);
        assert_eq!(honest.version, receipt::VERSION_ADJUSTED);
        let rep = verify(&honest, e, &t.id);
        assert!(rep.accepted(), "{:?}", rep.first_failure());
        let unadjusted = run(&t, t.id, &prompt(i as u32), &plain, 1);
        assert_eq!(unadjusted.version, receipt::VERSION);
        assert_ne!(
            honest.output_tokens, unadjusted.output_tokens,
            "the adjustments must change this run for the test to mean anything"
        );
        assert_ne!(honest.job_id, unadjusted.job_id);
        // Sampled without the adjustments, claimed with them (and the reverse); job id,
        // commitments and proof made consistent, re-signed.
        for (mut r, claim) in [
            (unadjusted.clone(), adjusted.sampling.clone()),
            (honest.clone(), plain.sampling.clone()),
        ] {
            r.sampling = claim;
            r.version = receipt::version_for(&r.sampling);
            reseal(&mut r, Some(e));
            assert_caught(&verify(&r, e, &t.id), &["sampling"]);
        }
    }
}

/// The bytes of a receipt's output tokens, stop tokens left out.
fn output_bytes(r: &Receipt, e: &Engine) -> Vec<u8> {
    let tok = &e.model.tokenizer;
    r.output_tokens
        .iter()
        .filter(|&&x| !tok.stop_ids().contains(&x))
        .flat_map(|&x| tok.text_piece(x).unwrap().to_vec())
        .collect()
}

/// `json_object` is part of the replayed sampler: the output of a constrained run is a JSON
/// object prefix (whole when it stopped on its own) and verifies; tokens sampled without the
/// grammar fail under a receipt that claims it, and the reverse.
#[test]
fn json_object_runs_verify_and_the_grammar_cannot_be_dropped() {
    use deai_engine::json_prefix::JsonPrefix;
    let t = tiny(&TinySpec::default(), 2, 0);
    let e = &t.engine;
    for (i, plain) in [greedy(60), sampled(60, 9)].into_iter().enumerate() {
        let mut json = plain.clone();
        json.sampling.json_object = true;
        let honest = run(&t, t.id, &prompt(10 + i as u32), &json, 1);
        assert_eq!(honest.version, receipt::VERSION_ADJUSTED);
        let rep = verify(&honest, e, &t.id);
        assert!(rep.accepted(), "{:?}", rep.first_failure());
        let body = output_bytes(&honest, e);
        let state = JsonPrefix::new()
            .after(&body)
            .expect("the output is a JSON prefix");
        assert_eq!(
            state.is_complete(),
            honest.stop_reason == StopReason::Eos,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let unconstrained = run(&t, t.id, &prompt(10 + i as u32), &plain, 1);
        assert_ne!(honest.output_tokens, unconstrained.output_tokens);
        for (mut r, claim) in [
            (unconstrained.clone(), json.sampling.clone()),
            (honest.clone(), plain.sampling.clone()),
        ] {
            r.sampling = claim;
            r.version = receipt::version_for(&r.sampling);
            reseal(&mut r, Some(e));
            assert_caught(&verify(&r, e, &t.id), &["sampling"]);
        }
    }
}

/// `json_schema` is part of the replayed sampler too: a constrained run's output is a prefix of
/// one value of the schema, and neither dropping the schema nor claiming another passes.
#[test]
fn json_schema_runs_verify_and_the_schema_cannot_be_dropped_or_swapped() {
    use deai_engine::json_schema::{Json, JsonSchema};
    let compile = |text: &str| {
        let j: Json = serde_json::from_str(text).unwrap();
        JsonSchema::compile_object(&j).unwrap()
    };
    let schema = compile(
        r#"{"type": "object", "properties": {"n": {"type": "integer"}, "tag": {"enum": ["x", "y"]}, "s": {"type": "string"}}}"#,
    );
    let other = compile(
        r#"{"type": "object", "properties": {"n": {"type": "integer"}, "tag": {"enum": ["x", "z"]}, "s": {"type": "string"}}}"#,
    );
    let t = tiny(&TinySpec::default(), 2, 0);
    let e = &t.engine;
    for (i, plain) in [greedy(60), sampled(60, 9)].into_iter().enumerate() {
        let mut constrained = plain.clone();
        constrained.sampling.json_schema = Some(schema.clone());
        let honest = run(&t, t.id, &prompt(20 + i as u32), &constrained, 1);
        assert_eq!(honest.version, receipt::VERSION_ADJUSTED);
        let rep = verify(&honest, e, &t.id);
        assert!(rep.accepted(), "{:?}", rep.first_failure());
        let body = output_bytes(&honest, e);
        let state = schema
            .after(&schema.start(), &body)
            .expect("the output is a prefix of a value of the schema");
        assert_eq!(
            schema.is_complete(&state),
            honest.stop_reason == StopReason::Eos,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            body.starts_with(br#"{"n": "#),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let unconstrained = run(&t, t.id, &prompt(20 + i as u32), &plain, 1);
        assert_ne!(honest.output_tokens, unconstrained.output_tokens);
        let mut swapped = constrained.sampling.clone();
        swapped.json_schema = Some(other.clone());
        let mut as_object = constrained.sampling.clone();
        as_object.json_schema = None;
        as_object.json_object = true;
        for (mut r, claim) in [
            (unconstrained.clone(), constrained.sampling.clone()),
            (honest.clone(), plain.sampling.clone()),
            (honest.clone(), as_object),
        ] {
            r.sampling = claim;
            r.version = receipt::version_for(&r.sampling);
            reseal(&mut r, Some(e));
            assert_caught(&verify(&r, e, &t.id), &["sampling"]);
        }
        // Another schema is another job: the receipt's job id no longer matches.
        let mut r = honest.clone();
        r.sampling = swapped;
        assert_ne!(
            receipt::job_id(&r.model_id, &r.prompt_tokens, &r.gen_params(), &r.job_nonce),
            honest.job_id
        );
        assert!(!verify(&r, e, &t.id).accepted());
    }
}

/// The proof of verification: the same on every honest verifier of the profile (any thread
/// count, at once or as background work), different under another key or for another job's
/// tokens, and absent without a key.
#[test]
fn proof_of_verification_is_the_same_on_every_honest_verifier_and_keyed() {
    let spec = TinySpec::default();
    let w = tiny(&spec, 2, 0);
    let r = run(&w, w.id, &prompt(3), &sampled(24, 5), 0);
    let with = |t: &Tiny, key: [u8; 32], patience: Option<std::time::Duration>| {
        let cfg = VerifyConfig {
            pov_key: Some(key),
            background_patience: patience,
            ..Default::default()
        };
        let rep = verify_with(&r, &t.engine, &t.id, &cfg);
        assert!(rep.accepted(), "{:?}", rep.first_failure());
        rep.pov.expect("a pov when keyed")
    };
    let (a, b) = (tiny(&spec, 1, 0), tiny(&spec, 2, 8 << 20));
    let k = [7u8; 32];
    let pov = with(&a, k, None);
    assert_eq!(pov, with(&b, k, None));
    assert_eq!(pov, with(&b, k, Some(std::time::Duration::from_millis(5))));
    assert_ne!(pov, with(&a, [8u8; 32], None));
    // What it digests: the verifier's recomputed output rows under the key.
    let d = a.engine.model.cfg.d_model;
    let mut fed = r.prompt_tokens.clone();
    fed.extend_from_slice(&r.output_tokens[..r.output_tokens.len() - 1]);
    let out = a
        .engine
        .prefill_all(&fed, r.prompt_tokens.len() - 1)
        .unwrap();
    let rows =
        activation::output_rows(&out.hidden, d, r.prompt_tokens.len(), r.output_tokens.len())
            .unwrap();
    assert_eq!(pov, deai_proof::pov_digest(&k, &r.job_id, rows));
    // Another job's tokens give another digest.
    let other = run(&w, w.id, &prompt(4), &sampled(24, 5), 1);
    let cfg = VerifyConfig {
        pov_key: Some(k),
        ..Default::default()
    };
    assert_ne!(verify_with(&other, &a.engine, &a.id, &cfg).pov, Some(pov));
    assert_eq!(verify(&r, &a.engine, &a.id).pov, None);
}
