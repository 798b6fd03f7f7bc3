//! `deai bench proof`: the receipt's tamper-detection matrix (every class of lie a worker
//! could tell, each case checked by the verifier), false rejections of honest receipts across
//! thread counts and prefix caching, proof size and overhead, and verify time against
//! generation time.

use crate::engines::engine_at;
use anyhow::{Context, Result};
use deai_engine::gguf::{requantize, WType};
use deai_engine::{Engine, GenParams, SamplingParams, StopReason};
use deai_proof::tamper::reseal;
use deai_proof::verify as check;
use deai_proof::{build_receipt, JobSpec, ProofConfig, Receipt, SigningKey};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// The model's GGUF.
    pub model: PathBuf,
    /// Kernel threads of the verifier (honest workers run with 1 and with this many, at
    /// least 2).
    pub threads: usize,
    /// Cases per tamper class, at least 1.
    pub cases: usize,
    /// Tokens to generate per run, at least 1.
    pub tokens: usize,
}

/// One tamper class: how many of its cases the verifier rejected for the right reason.
#[derive(Clone, Debug, Serialize)]
pub struct TamperRow {
    pub class: String,
    pub cases: usize,
    pub detected: usize,
    /// Tampers whose claims all turned out true, replaced by another try.
    pub redrawn: usize,
}

/// The honest side: false rejections, proof size and cost, verification against generation.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub honest_runs: usize,
    pub false_rejects: usize,
    pub proof_bytes_per_token: f64,
    pub proof_overhead_pct: f64,
    /// Per run.
    pub verify_ms: f64,
    pub generate_ms: f64,
    pub verify_over_generate: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub classes: Vec<TamperRow>,
    pub summary: Summary,
}

const TOPICS: [&str; 10] = [
    "a robot who learns to paint",
    "the history of bread",
    "why the sky is blue",
    "a lighthouse keeper",
    "how bees make honey",
    "a city under the sea",
    "the first computer",
    "a dragon who fears fire",
    "learning to ride a bicycle",
    "the moon landing",
];

/// Builds honest receipts on several worker configurations and checks them, then tampers
/// with them class by class and checks that the verifier rejects each tamper.
pub fn run(b: &Options) -> Result<Report> {
    let path: &Path = &b.model;
    let model_id = deai_models::sha256_file(path)?;
    let threads = b.threads;
    let engine_with = engine_at;
    let verifier = engine_with(path, threads, 0)?;
    // Honest workers: threads 1 / N, prefix cache off / on.
    let mut workers = vec![];
    for t in [1, threads.max(2)] {
        for prefix in [0, 64 << 20] {
            workers.push(engine_with(path, t, prefix)?);
        }
    }
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let other_key = SigningKey::from_bytes(&[8u8; 32]);
    let tok = &verifier.model.tokenizer;
    let prompt = |i: usize| -> Result<Vec<u32>> {
        let text = format!(
            "<|im_start|>user\nWrite a story about {} (number {i}).<|im_end|>\n<|im_start|>assistant\n",
            TOPICS[i % TOPICS.len()]
        );
        Ok(tok.encode(&text, true)?)
    };
    let params = |i: usize| GenParams {
        max_tokens: b.tokens,
        sampling: if i.is_multiple_of(2) {
            SamplingParams::default()
        } else {
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                seed: i as u64,
                ..Default::default()
            }
        },
        stop: vec![],
    };
    let run_on =
        |e: &Engine, id: deai_types::Hash256, i: usize, k: &SigningKey| -> Result<(Receipt, f64)> {
            let p = prompt(i)?;
            let gp = params(i);
            let t0 = Instant::now();
            let g = e.generate(&p, &gp, |_| {})?;
            let gen_ms = t0.elapsed().as_secs_f64() * 1e3;
            let job = JobSpec {
                model_id: id,
                prompt_tokens: p,
                params: gp,
                nonce: [i as u8; 32],
            };
            let r = build_receipt(
                &job,
                &g,
                e.model.cfg.d_model,
                &e.profile(),
                ProofConfig::default(),
                k,
            )?;
            Ok((r, gen_ms))
        };

    // Honest side.
    let (mut honest, mut false_rejects) = (vec![], 0usize);
    let (mut gen_ms, mut verify_ms, mut proof_us, mut proof_bytes, mut out_tokens) =
        (0.0, 0.0, 0u64, 0usize, 0usize);
    for i in 0..b.cases {
        for (w, e) in workers.iter().enumerate() {
            let (r, ms) = run_on(e, model_id, i, &key)?;
            let t0 = Instant::now();
            let rep = check(&r, &verifier, &model_id);
            verify_ms += t0.elapsed().as_secs_f64() * 1e3;
            gen_ms += ms;
            proof_us += r.timings.proof_us;
            proof_bytes += r.proof.encoded_len();
            out_tokens += r.output_tokens.len();
            if !rep.accepted() {
                false_rejects += 1;
                eprintln!(
                    "false reject (case {i}, worker {w}): {:?}",
                    rep.first_failure()
                );
            }
            if w == 0 {
                honest.push(r);
            }
        }
    }
    let honest_runs = b.cases * workers.len();

    // Tamper matrix.
    // A tamper gets the case index, the attempt (see `truthful` below) and the honest receipt.
    type Tamper<'a> = Box<dyn Fn(usize, usize, &Receipt) -> Result<Receipt> + 'a>;
    let edit = |f: fn(&mut Receipt, usize), rebuild: bool| -> Tamper {
        let (v, k) = (&verifier, &key);
        Box::new(move |_, attempt, r: &Receipt| {
            let mut r = r.clone();
            f(&mut r, attempt);
            reseal(&mut r, rebuild.then_some(v), k).map_err(anyhow::Error::msg)?;
            Ok(r)
        })
    };
    let dir = tempfile_dir()?;
    let q8 = dir.join("requantized-q8_0.gguf");
    requantize(path, &q8, WType::Q8_0)?;
    let cheap = engine_with(&q8, threads, 0)?;
    let _ = std::fs::remove_file(&q8);
    // The middle layer's feed-forward output matrix with 2 % noise (relative to its RMS).
    let noisy = dir.join("one-layer-noise.gguf");
    let layer = verifier.model.cfg.n_layer / 2;
    let tensor = format!("blk.{layer}.ffn_down.weight");
    deai_engine::gguf::perturb_tensor(path, &noisy, &tensor, 0.02, 11)?;
    let perturbed = engine_with(&noisy, threads, 0)?;
    let _ = std::fs::remove_file(&noisy);
    let classes: Vec<(&str, Tamper)> = vec![
        (
            "different_weights",
            Box::new(|i, _, _: &Receipt| Ok(run_on(&cheap, model_id, i, &key)?.0)),
        ),
        (
            "one_layer_perturbed",
            Box::new(|i, _, _: &Receipt| Ok(run_on(&perturbed, model_id, i, &key)?.0)),
        ),
        (
            "system_prompt_token_changed",
            edit(
                |r, attempt| {
                    // Positions 4.. lie inside the system message of the chat template.
                    let j = (4 + attempt).min(r.prompt_tokens.len() - 1);
                    r.prompt_tokens[j] = other_token(r.prompt_tokens[j]);
                },
                true,
            ),
        ),
        (
            "prompt_token_changed",
            edit(
                |r, attempt| {
                    let j = (r.prompt_tokens.len() / 2 + attempt) % r.prompt_tokens.len();
                    r.prompt_tokens[j] = other_token(r.prompt_tokens[j]);
                },
                false,
            ),
        ),
        (
            "prompt_token_changed_rebuilt",
            edit(
                |r, attempt| {
                    let j = (r.prompt_tokens.len() / 2 + attempt) % r.prompt_tokens.len();
                    r.prompt_tokens[j] = other_token(r.prompt_tokens[j]);
                },
                true,
            ),
        ),
        (
            "output_token_replaced",
            edit(
                |r, _| {
                    let j = r.output_tokens.len() / 2;
                    r.output_tokens[j] = other_token(r.output_tokens[j]);
                },
                true,
            ),
        ),
        (
            "output_truncated",
            edit(
                |r, _| {
                    let n = r.output_tokens.len();
                    r.output_tokens.truncate((n / 2).max(1));
                },
                true,
            ),
        ),
        (
            "output_extended",
            edit(|r, _| r.output_tokens.push(100), true),
        ),
        (
            "temperature_changed",
            edit(
                |r, _| {
                    r.sampling.temperature = if r.sampling.temperature == 0.0 {
                        0.9
                    } else {
                        0.0
                    }
                },
                true,
            ),
        ),
        (
            "top_p_changed",
            edit(
                |r, _| {
                    r.sampling.temperature = r.sampling.temperature.max(0.8);
                    r.sampling.top_p = 0.3;
                },
                true,
            ),
        ),
        (
            "seed_changed",
            edit(
                |r, _| {
                    r.sampling.temperature = r.sampling.temperature.max(0.8);
                    r.sampling.seed ^= 0x5eed;
                },
                true,
            ),
        ),
        (
            "stop_reason_falsified",
            edit(
                |r, _| {
                    r.stop_reason = if r.stop_reason == StopReason::Eos {
                        StopReason::MaxTokens
                    } else {
                        StopReason::Eos
                    }
                },
                false,
            ),
        ),
        (
            "signature_forged",
            Box::new(|_, _, r: &Receipt| {
                let mut r = r.clone();
                r.signature[7] ^= 0x40;
                Ok(r)
            }),
        ),
        (
            "key_swapped",
            Box::new(|_, _, r: &Receipt| {
                let mut r = r.clone();
                r.worker_key = other_key.verifying_key().to_bytes();
                Ok(r)
            }),
        ),
        (
            "proof_replayed",
            Box::new(|i, _, r: &Receipt| {
                let donor = run_on(&verifier, model_id, i + 1001, &key)?.0;
                let mut r = r.clone();
                r.proof = donor.proof.clone();
                if r.proof.chunks.len() != donor.proof.chunks.len()
                    || r.output_tokens.len() != donor.output_tokens.len()
                {
                    r.output_tokens = donor.output_tokens.clone();
                    r.output_commitment = deai_proof::receipt::output_commitment(&r.output_tokens);
                }
                r.sign(&key)?;
                Ok(r)
            }),
        ),
    ];
    // A tampered receipt whose every claim is true (an honest run on its claimed model,
    // prompt and sampling gives exactly its output and stop reason: e.g. a changed prompt
    // token that does not change the answer) is not a tamper: such a case is redrawn with
    // the next attempt (another token position) and counted as `redrawn`.
    let truthful = |t: &Receipt| -> Result<bool> {
        if t.model_id != model_id {
            return Ok(false);
        }
        let g = verifier.generate(&t.prompt_tokens, &t.gen_params(), |_| {})?;
        Ok(g.output_tokens == t.output_tokens && g.stop_reason == t.stop_reason)
    };
    const ATTEMPTS: usize = 8;
    let mut rows = vec![];
    for (name, f) in &classes {
        let (mut detected, mut redrawn) = (0, 0);
        for (i, r) in honest.iter().enumerate() {
            let mut t = f(i, 0, r)?;
            let mut rep = check(&t, &verifier, &model_id);
            // Only the prompt-token classes vary with the attempt.
            let tries = if name.contains("prompt_token") {
                ATTEMPTS
            } else {
                1
            };
            for attempt in 1..tries {
                if !(rep.accepted() && truthful(&t)?) {
                    break;
                }
                redrawn += 1;
                t = f(i, attempt, r)?;
                rep = check(&t, &verifier, &model_id);
            }
            // Detection must come from a content check unless the class is about signatures.
            let sig_class = name.starts_with("signature") || name.starts_with("key");
            let content = rep
                .checks
                .iter()
                .any(|c| !c.ok && c.name != "signature" && c.name != "encoding");
            if !rep.accepted() && (sig_class || content) {
                detected += 1;
            }
        }
        rows.push(TamperRow {
            class: name.to_string(),
            cases: honest.len(),
            detected,
            redrawn,
        });
    }
    let _ = std::fs::remove_dir(&dir);

    let bpt = proof_bytes as f64 / out_tokens.max(1) as f64;
    let overhead = proof_us as f64 / 1e3 / gen_ms.max(1e-9) * 100.0;
    let (vm, gm) = (verify_ms / honest_runs as f64, gen_ms / honest_runs as f64);
    Ok(Report {
        classes: rows,
        summary: Summary {
            honest_runs,
            false_rejects,
            proof_bytes_per_token: bpt,
            proof_overhead_pct: overhead,
            verify_ms: vm,
            generate_ms: gm,
            verify_over_generate: vm / gm.max(1e-9),
        },
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = deai_models::default_home()
        .join("tmp")
        .join(format!("bench-proof-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// A different token id that stays inside any vocabulary larger than 4.
fn other_token(t: u32) -> u32 {
    if t > 3 {
        t - 1
    } else {
        t + 1
    }
}
