//! Verification of a receipt by one validator prefill over prompt + output.
//!
//! Every check runs even after one fails, so a report shows which content checks catch a
//! tampered receipt, not only the signature.

use crate::activation::{self, Thresholds};
use crate::receipt::{self, Receipt};
use deai_engine::{sampler, Engine, KernelProfile, StopReason};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// Default cross-profile tolerances ([`VerifyConfig::greedy_tol`], [`VerifyConfig::logit_tol`]),
/// derived by `deai calibrate` for SmolLM2-135M Q4_1 against llama.cpp (rule and data in
/// BENCHMARKS.md, "Cross-profile sampling tolerance").
pub const GREEDY_TOL: f32 = 0.43;
pub const LOGIT_TOL: f32 = 1.6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject,
}

/// One named check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// Index of the first failing output token (or chunk start), where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn accepted(&self) -> bool {
        self.verdict == Verdict::Accept
    }

    /// The first failing check, in check order.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Verifier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyConfig {
    /// Cross-profile activation thresholds.
    pub thresholds: Thresholds,
    /// Cross-profile greedy near-tie tolerance: a token within it of the recomputed maximum
    /// is accepted ([`sampler::accepts_within`] with temperature 0).
    pub greedy_tol: f32,
    /// Cross-profile sampling tolerance: the width of the window in which honest
    /// profiles' logit shifts lie at one position ([`sampler::accepts_within`]: picks whose
    /// draw lies within the boundaries it can move). Both are calibrated by `deai calibrate`
    /// and never used when the profile ids match: then the replay is exact.
    pub logit_tol: f32,
    /// The job the verifier expects this receipt to answer (None: any).
    pub expected_job_id: Option<[u8; 32]>,
    /// The worker key the verifier expects (None: any).
    pub expected_worker: Option<[u8; 32]>,
    /// Reject receipts made under another kernel profile instead of comparing within
    /// thresholds.
    pub require_same_profile: bool,
    /// Run the prefill as background work that yields to generation on the same engine for
    /// up to this long ([`Engine::prefill_all_background`]; same bits). None: at once.
    pub background_patience: Option<std::time::Duration>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            thresholds: Thresholds::default(),
            greedy_tol: GREEDY_TOL,
            logit_tol: LOGIT_TOL,
            expected_job_id: None,
            expected_worker: None,
            require_same_profile: false,
            background_patience: None,
        }
    }
}

/// Verify `r` with `engine` (which must hold the model whose weights file hashes to
/// `model_id`) using the default settings.
pub fn verify(r: &Receipt, engine: &Engine, model_id: &Hash256) -> Report {
    verify_with(r, engine, model_id, &VerifyConfig::default())
}

struct Checks(Vec<Check>);
impl Checks {
    fn add(&mut self, name: &str, ok: bool, detail: impl Into<String>, position: Option<u64>) {
        self.0.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
            position,
        });
    }
}

/// The valid UTF-8 prefix of `b` (as the engine's stop-string search sees it).
fn valid_prefix(b: &[u8]) -> &str {
    match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
    }
}

pub fn verify_with(r: &Receipt, engine: &Engine, model_id: &Hash256, cfg: &VerifyConfig) -> Report {
    let mut c = Checks(vec![]);
    let here = KernelProfile::current();

    // Encoding and signature.
    match r.to_bytes() {
        Ok(_) => c.add("encoding", true, "canonical v1", None),
        Err(e) => c.add("encoding", false, e.to_string(), None),
    }
    match r.verify_signature() {
        Ok(()) => c.add(
            "signature",
            true,
            format!("ed25519 by {}", hex::encode(r.worker_key)),
            None,
        ),
        Err(e) => c.add("signature", false, e, None),
    }
    if let Some(w) = cfg.expected_worker {
        let ok = w == r.worker_key;
        c.add(
            "worker_key",
            ok,
            if ok {
                "expected worker".to_string()
            } else {
                format!(
                    "expected {}, got {}",
                    hex::encode(w),
                    hex::encode(r.worker_key)
                )
            },
            None,
        );
    }

    // Ids and commitments.
    let params = r.gen_params();
    let job = receipt::job_id(&r.model_id, &r.prompt_tokens, &params, &r.job_nonce);
    let job_ok = job == r.job_id && cfg.expected_job_id.is_none_or(|e| e == r.job_id);
    c.add(
        "job_id",
        job_ok,
        if job == r.job_id {
            match cfg.expected_job_id {
                Some(e) if e != r.job_id => format!("expected job {}", hex::encode(e)),
                _ => "job id = hash of model, prompt, parameters and nonce".into(),
            }
        } else {
            format!(
                "job id does not match its content (content hashes to {})",
                hex::encode(job)
            )
        },
        None,
    );
    c.add(
        "model_id",
        r.model_id == *model_id,
        format!(
            "receipt {} / verifier {}",
            r.model_id.short(),
            model_id.short()
        ),
        None,
    );
    let exact = r.profile_id == here.id;
    c.add(
        "kernel_profile",
        exact || !cfg.require_same_profile,
        if exact {
            format!("{}: exact comparison", r.profile_id)
        } else {
            format!(
                "receipt {} vs verifier {}: comparison within thresholds",
                r.profile_id, here.id
            )
        },
        None,
    );
    let pc = receipt::prompt_commitment(&r.prompt_tokens) == r.prompt_commitment;
    c.add(
        "prompt_commitment",
        pc,
        if pc {
            "binds the prompt tokens"
        } else {
            "does not match the prompt tokens"
        },
        None,
    );
    let oc = receipt::output_commitment(&r.output_tokens) == r.output_commitment;
    c.add(
        "output_commitment",
        oc,
        if oc {
            "binds the output tokens"
        } else {
            "does not match the output tokens"
        },
        None,
    );
    let pv = params.sampling.validate_for_vocab(engine.model.cfg.vocab);
    c.add(
        "parameters",
        pv.is_ok() && !r.output_tokens.is_empty() && r.output_tokens.len() <= r.max_tokens as usize,
        match &pv {
            Err(e) => e.to_string(),
            Ok(()) => format!(
                "{} output tokens, max_tokens {}",
                r.output_tokens.len(),
                r.max_tokens
            ),
        },
        None,
    );

    // The validator prefill: prompt + all output tokens but the last.
    let p = r.prompt_tokens.len();
    let n = r.output_tokens.len();
    let cfgm = &engine.model.cfg;
    let d = cfgm.d_model;
    let vocab = cfgm.vocab;
    let mut fed: Vec<u32> = r.prompt_tokens.clone();
    fed.extend_from_slice(&r.output_tokens[..n.saturating_sub(1)]);
    let bad_tok = r
        .prompt_tokens
        .iter()
        .chain(&r.output_tokens)
        .position(|&t| t as usize >= vocab);
    let patience = cfg.background_patience;
    // One deadline for the prefill and the checks after it.
    let deadline = patience.map(deai_engine::sched::deadline_after);
    let forward = if p == 0 || n == 0 {
        Err("empty prompt or output".to_string())
    } else if let Some(i) = bad_tok {
        Err(format!("token #{i} is outside the vocabulary ({vocab})"))
    } else {
        match patience {
            Some(patience) => engine.prefill_all_background(&fed, p - 1, patience),
            None => engine.prefill_all(&fed, p - 1),
        }
        .map_err(|e| e.to_string())
    };
    let out = match forward {
        Ok(o) => {
            c.add(
                "prefill",
                true,
                format!("{} positions recomputed", fed.len()),
                None,
            );
            Some(o)
        }
        Err(e) => {
            c.add("prefill", false, e, None);
            None
        }
    };

    // The checks below are background work too (sampling replay over every output
    // position's logits): they wait for their turn and hold off the other validators' work.
    let _turn = deadline.map(|d| engine.background_turn(Some(d)));

    // Activations.
    match &out {
        None => c.add("activations", false, "not run: no prefill", None),
        Some(o) => {
            let rows = activation::output_rows(&o.hidden, d, p, n);
            let pr = &r.proof;
            let expected = activation::n_chunks(n, pr.chunk_size);
            match rows {
                None => c.add(
                    "activations",
                    false,
                    "hidden states do not cover the output",
                    None,
                ),
                Some(_) if pr.chunks.len() != expected => c.add(
                    "activations",
                    false,
                    format!("{} chunks, expected {expected}", pr.chunks.len()),
                    None,
                ),
                Some(rows) => {
                    let per = pr.chunk_size as usize * d;
                    let mut first_bad: Option<(usize, String)> = None;
                    let mut bad = 0;
                    for (j, (chunk, rows)) in pr.chunks.iter().zip(rows.chunks(per)).enumerate() {
                        let k = activation::k_for(rows.len() / d, pr.chunk_size, pr.top_k);
                        let res = activation::check_chunk(
                            chunk,
                            &r.job_id,
                            j,
                            d,
                            rows,
                            k,
                            exact,
                            &cfg.thresholds,
                        );
                        if !res.ok {
                            bad += 1;
                            if first_bad.is_none() {
                                first_bad = Some((j, res.detail));
                            }
                        }
                    }
                    match first_bad {
                        None => c.add(
                            "activations",
                            true,
                            format!(
                                "{expected} chunks {}",
                                if exact {
                                    "match exactly"
                                } else {
                                    "within thresholds"
                                }
                            ),
                            None,
                        ),
                        Some((j, detail)) => c.add(
                            "activations",
                            false,
                            format!("{bad}/{expected} chunks fail; chunk {j}: {detail}"),
                            Some((j * pr.chunk_size as usize) as u64),
                        ),
                    }
                }
            }
        }
    }

    // Sampling replay.
    match &out {
        None => c.add("sampling", false, "not run: no prefill", None),
        Some(o) if o.logits.len() != n * vocab || pv.is_err() => c.add(
            "sampling",
            false,
            "not run: invalid parameters or logits",
            None,
        ),
        Some(o) => {
            let s = &r.sampling;
            let mut first: Option<(usize, String)> = None;
            let mut ties = 0;
            let mut counts = sampler::Adjuster::new(s, &engine.model.tokenizer);
            for (i, &tok) in r.output_tokens.iter().enumerate() {
                let row = counts.adjust(&o.logits[i * vocab..(i + 1) * vocab]);
                let row = &row[..];
                counts.push(tok);
                let want = sampler::sample(row, s, (p + i) as u64);
                if want == tok {
                    continue;
                }
                let tol = if s.is_greedy() {
                    cfg.greedy_tol
                } else {
                    cfg.logit_tol
                };
                if !exact && sampler::accepts_within(row, s, (p + i) as u64, tok, tol) {
                    ties += 1;
                    continue;
                }
                first = Some((i, format!("token #{i} is {tok}, the sampler picks {want}")));
                break;
            }
            match first {
                None => c.add(
                    "sampling",
                    true,
                    format!(
                        "{n} tokens replayed ({}){}",
                        if s.is_greedy() {
                            "greedy"
                        } else {
                            "seeded sampler"
                        },
                        if ties > 0 {
                            format!(", {ties} within the cross-profile tolerance")
                        } else {
                            String::new()
                        }
                    ),
                    None,
                ),
                Some((i, d)) => c.add("sampling", false, d, Some(i as u64)),
            }
        }
    }

    // Termination.
    let stops = engine.model.tokenizer.stop_ids();
    let is_stop = |t: &u32| stops.contains(t);
    let last = r.output_tokens.last().copied();
    let early_stop = r.output_tokens[..n.saturating_sub(1)]
        .iter()
        .position(is_stop);
    let bytes_of = |toks: &[u32]| -> Vec<u8> {
        toks.iter()
            .flat_map(|&t| engine.model.tokenizer.token_bytes(t).unwrap_or_default())
            .collect()
    };
    let stop_strings: Vec<&String> = r.stop.iter().filter(|s| !s.is_empty()).collect();
    let text_hits = |toks: &[u32]| {
        let b = bytes_of(toks);
        let s = valid_prefix(&b);
        stop_strings.iter().any(|st| s.contains(st.as_str()))
    };
    let within = n <= r.max_tokens as usize;
    let (ok, detail, pos) = if let Some(i) = early_stop {
        (
            false,
            format!("stop token at #{i} before the end"),
            Some(i as u64),
        )
    } else if !within {
        (
            false,
            format!("{n} tokens exceed max_tokens {}", r.max_tokens),
            Some(r.max_tokens as u64),
        )
    } else {
        let body = &r.output_tokens[..n.saturating_sub(1)];
        match r.stop_reason {
            StopReason::Eos => {
                let ok = last.is_some_and(|t| is_stop(&t)) && !text_hits(body);
                (
                    ok,
                    if ok {
                        "ends with a stop token".into()
                    } else {
                        "last token is not a stop token (or a stop string came first)".to_string()
                    },
                    (!ok).then_some(n.saturating_sub(1) as u64),
                )
            }
            StopReason::MaxTokens => {
                let ok = n == r.max_tokens as usize
                    && !last.is_some_and(|t| is_stop(&t))
                    && !text_hits(&r.output_tokens);
                (
                    ok,
                    if ok {
                        format!("{n} = max_tokens, no stop token or string")
                    } else {
                        format!(
                            "{n} tokens (max {}), or a stop token/string ended it earlier",
                            r.max_tokens
                        )
                    },
                    (!ok).then_some(n.saturating_sub(1) as u64),
                )
            }
            StopReason::StopString => {
                let ok = !last.is_some_and(|t| is_stop(&t))
                    && text_hits(&r.output_tokens)
                    && !text_hits(body);
                (
                    ok,
                    if ok {
                        "the last token completes a stop string".into()
                    } else {
                        "the output does not end at a stop string".to_string()
                    },
                    (!ok).then_some(n.saturating_sub(1) as u64),
                )
            }
        }
    };
    c.add("termination", ok, detail, pos);

    let verdict = if c.0.iter().all(|x| x.ok) {
        Verdict::Accept
    } else {
        Verdict::Reject
    };
    Report {
        verdict,
        checks: c.0,
    }
}
