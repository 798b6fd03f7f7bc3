//! `deai bench sampler`: what the sampler's step 0 (penalties, `logit_bias`, the JSON-object
//! grammar) costs a worker when it decodes and a validator when it replays, against plain
//! sampling measured in the same run on the same prompt.

use anyhow::{bail, Result};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, GenParams, SamplingParams};
use deai_proof::{build_receipt, JobSpec, ProofConfig, SigningKey};
use deai_types::Hash256;
use serde::Serialize;
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tokens to decode per case, at least 1 (a JSON answer may stop earlier, when its object
    /// closes).
    pub gen_tokens: usize,
    /// Timed repetitions per case, alternating the cases; the best is reported (at least 1).
    pub reps: usize,
}

/// One sampler configuration, against the first (plain greedy).
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub case: &'static str,
    pub tokens: usize,
    pub decode_tps: f64,
    pub decode_ratio: f64,
    pub verify_ms: f64,
    pub verify_ms_per_token: f64,
    pub verify_per_token_ratio: f64,
}

/// The run: the model's vocabulary, the kernels, and every case.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub vocab: usize,
    pub kernel_profile: String,
    pub cases: Vec<Case>,
}

struct Measured {
    name: &'static str,
    sampling: SamplingParams,
    decode_tps: f64,
    tokens: usize,
    verify_ms: f64,
}

impl Measured {
    fn new(name: &'static str, sampling: SamplingParams) -> Self {
        Measured {
            name,
            sampling,
            decode_tps: 0.0,
            tokens: 0,
            verify_ms: f64::INFINITY,
        }
    }
}

/// Decodes and verifies the same prompt under each sampler configuration on `engine`, whose
/// weights have the id `model_id`.
pub fn run(engine: &Engine, model_id: Hash256, o: &Options) -> Result<Report> {
    let prompt = engine.model.tokenizer.encode(
        &chat_prompt(
            &[ChatMessage {
                role: "user".into(),
                content: "Describe a cat as a JSON object with the keys name, color and age, \
                          then say why cats are good pets."
                    .into(),
            }],
            true,
        ),
        true,
    )?;
    let plain = SamplingParams::default();
    // The most a request may bias: 300 ids, the vocabulary's last ones.
    let vocab = engine.model.cfg.vocab as u32;
    let biased = vocab.saturating_sub(300)..vocab;
    let mut cases = [
        Measured::new("plain greedy", plain.clone()),
        Measured::new(
            "penalties + logit_bias",
            SamplingParams {
                presence_penalty: 0.5,
                frequency_penalty: 0.5,
                logit_bias: biased.map(|t| (t, -1.0)).collect(),
                ..plain.clone()
            },
        ),
        Measured::new(
            "json_object",
            SamplingParams {
                json_object: true,
                ..plain.clone()
            },
        ),
        Measured::new(
            "json_schema",
            SamplingParams {
                json_schema: Some(bench_schema()),
                ..plain.clone()
            },
        ),
    ];
    let key = SigningKey::from_bytes(&[7; 32]);
    for rep in 0..o.reps {
        for c in cases.iter_mut() {
            let params = GenParams {
                max_tokens: o.gen_tokens,
                sampling: c.sampling.clone(),
                stop: vec![],
            };
            let g = engine.generate(&prompt, &params, |_| {})?;
            let n = g.output_tokens.len();
            c.tokens = n;
            c.decode_tps = c.decode_tps.max(n as f64 / (g.decode_ms / 1e3));
            let job = JobSpec {
                model_id,
                prompt_tokens: prompt.clone(),
                params,
                nonce: [rep as u8; 32],
            };
            let r = build_receipt(
                &job,
                &g,
                engine.model.cfg.d_model,
                &engine.profile(),
                ProofConfig::default(),
                &key,
            )?;
            let t0 = Instant::now();
            let report = deai_proof::verify(&r, engine, &model_id);
            c.verify_ms = c.verify_ms.min(t0.elapsed().as_secs_f64() * 1e3);
            if !report.accepted() {
                bail!(
                    "{}: the honest receipt was rejected: {:?}",
                    c.name,
                    report.first_failure()
                );
            }
        }
    }
    let base = &cases[0];
    let base_per_token = base.verify_ms / base.tokens as f64;
    let rows = cases
        .iter()
        .map(|c| Case {
            case: c.name,
            tokens: c.tokens,
            decode_tps: c.decode_tps,
            decode_ratio: c.decode_tps / base.decode_tps,
            verify_ms: c.verify_ms,
            verify_ms_per_token: c.verify_ms / c.tokens as f64,
            verify_per_token_ratio: (c.verify_ms / c.tokens as f64) / base_per_token,
        })
        .collect();
    Ok(Report {
        vocab: engine.model.cfg.vocab,
        kernel_profile: engine.profile().display_string(),
        cases: rows,
    })
}

/// The structured-output case: a string, a number and a list of strings, so the run spends
/// its tokens in every kind of schema state.
fn bench_schema() -> deai_engine::json_schema::JsonSchema {
    let schema: deai_engine::json_schema::Json = serde_json::from_str(
        r#"{"type": "object", "properties": {"answer": {"type": "string"},
            "confidence": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}}}"#,
    )
    .expect("the bench schema is JSON");
    deai_engine::json_schema::JsonSchema::compile_object(&schema)
        .expect("the bench schema compiles")
}
