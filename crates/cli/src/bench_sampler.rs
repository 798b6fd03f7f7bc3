//! `deai bench sampler`: what the sampler's step 0 (penalties, `logit_bias`, the JSON-object
//! grammar) costs a worker when it decodes and a validator when it replays, against plain
//! sampling measured in the same run on the same prompt.

use crate::{load_engine, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, GenParams, SamplingParams};
use deai_proof::{build_receipt, JobSpec, ProofConfig, SigningKey};
use std::time::Instant;

#[derive(Args)]
pub struct SamplerBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens to decode per case (a JSON answer may stop earlier, when its object closes).
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Timed repetitions per case, alternating the cases (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

struct Case {
    name: &'static str,
    sampling: SamplingParams,
    decode_tps: f64,
    tokens: usize,
    verify_ms: f64,
}

pub fn bench(b: SamplerBench) -> Result<()> {
    if b.gen_tokens == 0 || b.reps == 0 {
        bail!("--gen-tokens and --reps must be at least 1");
    }
    let engine = load_engine(&b.model)?;
    let path = crate::resolve_model(b.model.model.as_deref())?;
    let model_id = deai_models::sha256_file(&path)?;
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
    let mut cases = vec![
        Case {
            name: "plain greedy",
            sampling: plain.clone(),
            decode_tps: 0.0,
            tokens: 0,
            verify_ms: f64::INFINITY,
        },
        Case {
            name: "penalties + logit_bias",
            sampling: SamplingParams {
                presence_penalty: 0.5,
                frequency_penalty: 0.5,
                logit_bias: biased.map(|t| (t, -1.0)).collect(),
                ..plain.clone()
            },
            decode_tps: 0.0,
            tokens: 0,
            verify_ms: f64::INFINITY,
        },
        Case {
            name: "json_object",
            sampling: SamplingParams {
                json_object: true,
                ..plain.clone()
            },
            decode_tps: 0.0,
            tokens: 0,
            verify_ms: f64::INFINITY,
        },
        Case {
            name: "json_schema",
            sampling: SamplingParams {
                json_schema: Some(bench_schema()),
                ..plain.clone()
            },
            decode_tps: 0.0,
            tokens: 0,
            verify_ms: f64::INFINITY,
        },
    ];
    let key = SigningKey::from_bytes(&[7; 32]);
    for rep in 0..b.reps {
        for c in cases.iter_mut() {
            let params = GenParams {
                max_tokens: b.gen_tokens,
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
            let report = deai_proof::verify(&r, &engine, &model_id);
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
    report(&engine, &cases, b.json);
    Ok(())
}

fn report(engine: &Engine, cases: &[Case], json: bool) {
    let base = &cases[0];
    if json {
        let rows: Vec<_> = cases
            .iter()
            .map(|c| {
                serde_json::json!({
                    "case": c.name, "tokens": c.tokens, "decode_tps": c.decode_tps,
                    "decode_ratio": c.decode_tps / base.decode_tps, "verify_ms": c.verify_ms,
                    "verify_ms_per_token": c.verify_ms / c.tokens as f64,
                    "verify_per_token_ratio": (c.verify_ms / c.tokens as f64)
                        / (base.verify_ms / base.tokens as f64),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "vocab": engine.model.cfg.vocab,
                "kernel_profile": engine.profile().display_string(),
                "cases": rows,
            })
        );
        return;
    }
    println!(
        "vocab {}, {}; best of the repetitions, cases alternated",
        engine.model.cfg.vocab,
        engine.profile().display_string()
    );
    println!(
        "{:<24} {:>6} {:>10} {:>7} {:>10} {:>10} {:>7}",
        "case", "tokens", "decode/s", "ratio", "verify ms", "ms/token", "ratio"
    );
    for c in cases {
        let per = c.verify_ms / c.tokens as f64;
        println!(
            "{:<24} {:>6} {:>10.1} {:>6.3}x {:>10.1} {:>10.2} {:>6.3}x",
            c.name,
            c.tokens,
            c.decode_tps,
            c.decode_tps / base.decode_tps,
            c.verify_ms,
            per,
            per / (base.verify_ms / base.tokens as f64)
        );
    }
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
