//! One test per check: an honest receipt passes it, and the same receipt with only the field
//! that check guards tampered fails it.

use super::*;
use crate::{build_receipt, JobSpec, ProofConfig};
use deai_engine::testing::{tiny_model_gguf, TinySpec};
use deai_engine::{EngineConfig, GenParams, Model};
use ed25519_dalek::SigningKey;

/// A tiny engine, its model id, and an honest signed receipt of a greedy run on it.
struct Honest {
    engine: Engine,
    model_id: Hash256,
    receipt: Receipt,
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn honest() -> Honest {
    let bytes = tiny_model_gguf(&TinySpec::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let engine = Engine::new(Model::load(&path).unwrap(), EngineConfig::default()).unwrap();
    let model_id = Hash256::digest(&bytes);
    let prompt: Vec<u32> = (0..12).map(|i| 3 + (i * 31) % 250).collect();
    let params = GenParams {
        max_tokens: 8,
        ..GenParams::default()
    };
    let job = JobSpec {
        model_id,
        prompt_tokens: prompt.clone(),
        params: params.clone(),
        nonce: [4; 32],
    };
    let g = engine.generate(&prompt, &params, |_| {}).unwrap();
    let receipt = build_receipt(
        &job,
        &g,
        engine.model.cfg.d_model,
        &engine.profile(),
        ProofConfig::default(),
        &key(),
    )
    .unwrap();
    assert!(
        receipt.output_tokens.len() >= 2,
        "{:?}",
        receipt.output_tokens
    );
    Honest {
        engine,
        model_id,
        receipt,
    }
}

/// Re-sign after an edit, so that only the edited field's own check can object.
fn resign(r: &mut Receipt) {
    r.sign(&key()).unwrap();
}

fn assert_pass(c: &Check, name: &str) {
    assert_eq!(c.name, name);
    assert!(c.ok, "honest receipt failed {name}: {}", c.detail);
}

fn assert_fail(c: &Check, name: &str) {
    assert_eq!(c.name, name);
    assert!(!c.ok, "tampered receipt passed {name}: {}", c.detail);
}

#[test]
fn verify_with_runs_every_check_in_order() {
    let h = honest();
    let cfg = VerifyConfig {
        expected_worker: Some(key().verifying_key().to_bytes()),
        ..VerifyConfig::default()
    };
    let rep = verify_with(&h.receipt, &h.engine, &h.model_id, &cfg);
    let names: Vec<&str> = rep.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "encoding",
            "signature",
            "worker_key",
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
        ]
    );
    assert!(rep.accepted(), "{:?}", rep.first_failure());
}

#[test]
fn report_accepts_only_when_every_check_passes() {
    let pass = check("a", true, "", None);
    let fail = check("b", false, "", Some(3));
    assert_eq!(report(vec![pass.clone()]).verdict, Verdict::Accept);
    let rep = report(vec![pass, fail.clone()]);
    assert_eq!(rep.verdict, Verdict::Reject);
    assert_eq!(rep.first_failure(), Some(&fail));
}

#[test]
fn encoding_rejects_a_field_out_of_the_format() {
    let mut r = honest().receipt;
    assert_pass(&check_encoding(&r), "encoding");
    r.profile_id = String::new();
    assert_fail(&check_encoding(&r), "encoding");
}

#[test]
fn signature_rejects_a_changed_signature_or_content() {
    let mut r = honest().receipt;
    assert_pass(&check_signature(&r), "signature");
    r.signature[0] ^= 1;
    assert_fail(&check_signature(&r), "signature");
    let mut r = honest().receipt;
    r.timings.decode_us += 1;
    assert_fail(&check_signature(&r), "signature");
}

#[test]
fn worker_key_rejects_another_worker() {
    let r = honest().receipt;
    assert!(check_worker_key(&r, None).is_none());
    let mine = key().verifying_key().to_bytes();
    assert_pass(&check_worker_key(&r, Some(mine)).unwrap(), "worker_key");
    assert_fail(&check_worker_key(&r, Some([7; 32])).unwrap(), "worker_key");
}

#[test]
fn job_id_rejects_content_it_does_not_hash_and_another_job() {
    let mut r = honest().receipt;
    assert_pass(&check_job_id(&r, None), "job_id");
    assert_pass(&check_job_id(&r, Some(r.job_id)), "job_id");
    assert_fail(&check_job_id(&r, Some([7; 32])), "job_id");
    r.job_nonce[0] ^= 1;
    resign(&mut r);
    assert_fail(&check_job_id(&r, None), "job_id");
}

#[test]
fn model_id_rejects_another_model() {
    let h = honest();
    assert_pass(&check_model_id(&h.receipt, &h.model_id), "model_id");
    assert_fail(
        &check_model_id(&h.receipt, &Hash256::digest(b"other weights")),
        "model_id",
    );
}

#[test]
fn kernel_profile_accepts_a_foreign_profile_only_with_a_calibration_for_it() {
    let r = honest().receipt;
    let here = KernelProfile::current().id;
    assert_pass(&check_kernel_profile(&r, &here, &[]), "kernel_profile");
    // Verified on a machine of another profile: only if that machine was told the receipt's
    // profile is one it has thresholds for.
    assert_pass(
        &check_kernel_profile(&r, "another-profile", std::slice::from_ref(&r.profile_id)),
        "kernel_profile",
    );
    assert_fail(
        &check_kernel_profile(&r, "another-profile", &[]),
        "kernel_profile",
    );
    assert_fail(
        &check_kernel_profile(&r, "another-profile", &["a-third-profile".into()]),
        "kernel_profile",
    );
}

#[test]
fn prompt_commitment_rejects_a_commitment_to_other_tokens() {
    let mut r = honest().receipt;
    assert_pass(&check_prompt_commitment(&r), "prompt_commitment");
    r.prompt_commitment[0] ^= 1;
    resign(&mut r);
    assert_fail(&check_prompt_commitment(&r), "prompt_commitment");
}

#[test]
fn output_commitment_rejects_a_commitment_to_other_tokens() {
    let mut r = honest().receipt;
    assert_pass(&check_output_commitment(&r), "output_commitment");
    r.output_commitment[0] ^= 1;
    resign(&mut r);
    assert_fail(&check_output_commitment(&r), "output_commitment");
}

#[test]
fn parameters_reject_more_output_than_max_tokens_and_a_bias_outside_the_vocabulary() {
    let h = honest();
    let vocab = h.engine.model.cfg.vocab;
    let mut r = h.receipt.clone();
    assert_pass(&check_parameters(&r, vocab), "parameters");
    r.max_tokens = r.output_tokens.len() as u32 - 1;
    assert_fail(&check_parameters(&r, vocab), "parameters");
    let mut r = h.receipt;
    r.sampling.logit_bias = vec![(vocab as u32, 1.0)];
    assert_fail(&check_parameters(&r, vocab), "parameters");
}

#[test]
fn prefill_rejects_a_token_outside_the_vocabulary() {
    let h = honest();
    let (c, out) = run_prefill(&h.receipt, &h.engine, None);
    assert_pass(&c, "prefill");
    assert!(out.is_some());
    let mut r = h.receipt;
    r.output_tokens[0] = h.engine.model.cfg.vocab as u32;
    let (c, out) = run_prefill(&r, &h.engine, None);
    assert_fail(&c, "prefill");
    assert!(out.is_none());
}

#[test]
fn activations_reject_a_changed_chunk_commitment() {
    let h = honest();
    let d = h.engine.model.cfg.d_model;
    let th = Thresholds::default();
    let (_, out) = run_prefill(&h.receipt, &h.engine, None);
    assert_pass(
        &check_activations(&h.receipt, out.as_ref(), d, true, &th),
        "activations",
    );
    let mut r = h.receipt.clone();
    r.proof.chunks[0].digest[0] ^= 1;
    resign(&mut r);
    let c = check_activations(&r, out.as_ref(), d, true, &th);
    assert_fail(&c, "activations");
    assert_eq!(c.position, Some(0));
    assert_fail(
        &check_activations(&h.receipt, None, d, true, &th),
        "activations",
    );
}

#[test]
fn sampling_rejects_a_token_the_sampler_did_not_pick() {
    let h = honest();
    let cfg = VerifyConfig::default();
    let (_, out) = run_prefill(&h.receipt, &h.engine, None);
    assert_pass(
        &check_sampling(&h.receipt, &h.engine, out.as_ref(), true, &cfg),
        "sampling",
    );
    let mut r = h.receipt.clone();
    let vocab = h.engine.model.cfg.vocab as u32;
    r.output_tokens[0] = (r.output_tokens[0] + 1) % vocab;
    let (_, out) = run_prefill(&r, &h.engine, None);
    let c = check_sampling(&r, &h.engine, out.as_ref(), true, &cfg);
    assert_fail(&c, "sampling");
    assert_eq!(c.position, Some(0));
    assert_fail(
        &check_sampling(&h.receipt, &h.engine, None, true, &cfg),
        "sampling",
    );
}

#[test]
fn termination_rejects_a_stop_reason_the_output_does_not_show() {
    let h = honest();
    let tok = &h.engine.model.tokenizer;
    let mut r = h.receipt;
    assert_pass(&check_termination(&r, tok), "termination");
    // No stop strings were asked for, so none can have ended the run.
    r.stop_reason = StopReason::StopString;
    resign(&mut r);
    assert_fail(&check_termination(&r, tok), "termination");
}

#[test]
fn valid_prefix_stops_before_a_broken_character() {
    assert_eq!(valid_prefix(b"ab"), "ab");
    assert_eq!(valid_prefix(&[b'a', 0xc3]), "a");
}
