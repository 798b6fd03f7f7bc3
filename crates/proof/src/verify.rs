//! Verification of a receipt by one validator prefill over prompt + output.
//!
//! Every check runs even after one fails, so a report shows which content checks catch a
//! tampered receipt, not only the signature.

use crate::activation::{self, Thresholds};
use crate::receipt::{self, Receipt};
use deai_engine::model::ForwardOut;
use deai_engine::tokenizer::Tokenizer;
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
    /// The proof of verification ([`pov_digest`]) when [`VerifyConfig::pov_key`] was given
    /// and the prefill ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pov: Option<[u8; 32]>,
}

/// The proof of verification: a digest, keyed by `key` (the beacon value of the job's
/// round, unknown when the worker answered), of the hidden states this verifier recomputed
/// for the output positions. Only a re-execution yields it (the receipt's chunk digests hash
/// the same rows without the key), and honest verifiers of one kernel profile get it bit for
/// bit, so committee members can commit to it and be compared.
pub fn pov_digest(key: &[u8; 32], job_id: &[u8; 32], rows: &[f32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"deai-pov-v1");
    h.update(key);
    h.update(job_id);
    for x in rows {
        h.update(x.to_le_bytes());
    }
    h.finalize().into()
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
    /// Foreign kernel profiles whose receipts are compared within `thresholds` (the ones
    /// `deai calibrate` measured against this verifier's profile). A receipt under any other
    /// foreign profile is rejected: a worker may not choose a profile just for the looser
    /// comparison. Empty (the default): same profile only.
    pub cross_profiles: Vec<String>,
    /// Run the prefill as background work that yields to generation on the same engine for
    /// up to this long ([`Engine::prefill_all_background`]; same bits). None: at once.
    pub background_patience: Option<std::time::Duration>,
    /// Compute the proof of verification ([`pov_digest`]) under this key.
    pub pov_key: Option<[u8; 32]>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            thresholds: Thresholds::default(),
            greedy_tol: GREEDY_TOL,
            logit_tol: LOGIT_TOL,
            expected_job_id: None,
            expected_worker: None,
            cross_profiles: Vec::new(),
            background_patience: None,
            pov_key: None,
        }
    }
}

/// Verify `r` with `engine` (which must hold the model whose weights file hashes to
/// `model_id`) using the default settings.
pub fn verify(r: &Receipt, engine: &Engine, model_id: &Hash256) -> Report {
    verify_with(r, engine, model_id, &VerifyConfig::default())
}

/// Verify `r` with `engine` (which must hold the model whose weights file hashes to
/// `model_id`) under `cfg`: each check below in turn, every one even after a failure.
pub fn verify_with(r: &Receipt, engine: &Engine, model_id: &Hash256, cfg: &VerifyConfig) -> Report {
    let here = KernelProfile::current();
    let exact = r.profile_id == here.id;
    let vocab = engine.model.cfg.vocab;
    let mut checks = vec![check_encoding(r), check_signature(r)];
    checks.extend(check_worker_key(r, cfg.expected_worker));
    checks.extend([
        check_job_id(r, cfg.expected_job_id),
        check_model_id(r, model_id),
        check_kernel_profile(r, &here.id, &cfg.cross_profiles),
        check_prompt_commitment(r),
        check_output_commitment(r),
        check_parameters(r, vocab),
    ]);
    // One deadline for the prefill and the checks after it.
    let deadline = cfg
        .background_patience
        .map(deai_engine::sched::deadline_after);
    let (prefill, out) = run_prefill(r, engine, cfg.background_patience);
    checks.push(prefill);
    // The checks below are background work too (sampling replay over every output
    // position's logits): they wait for their turn and hold off the other validators' work.
    let _turn = deadline.map(|d| engine.background_turn(Some(d)));
    checks.extend([
        check_activations(
            r,
            out.as_ref(),
            engine.model.cfg.d_model,
            exact,
            &cfg.thresholds,
        ),
        check_sampling(r, engine, out.as_ref(), exact, cfg),
        check_termination(r, &engine.model.tokenizer),
    ]);
    let d = engine.model.cfg.d_model;
    let pov = cfg.pov_key.as_ref().and_then(|key| {
        let o = out.as_ref()?;
        let rows =
            activation::output_rows(&o.hidden, d, r.prompt_tokens.len(), r.output_tokens.len())?;
        Some(pov_digest(key, &r.job_id, rows))
    });
    Report {
        pov,
        ..report(checks)
    }
}

/// The verdict over `checks`: accept only when every one passed.
fn report(checks: Vec<Check>) -> Report {
    let verdict = if checks.iter().all(|x| x.ok) {
        Verdict::Accept
    } else {
        Verdict::Reject
    };
    Report {
        verdict,
        checks,
        pov: None,
    }
}

fn check(name: &str, ok: bool, detail: impl Into<String>, position: Option<u64>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
        position,
    }
}

/// `encoding`: the receipt has a canonical v1/v2 encoding.
fn check_encoding(r: &Receipt) -> Check {
    match r.to_bytes() {
        Ok(_) => check("encoding", true, "canonical v1", None),
        Err(e) => check("encoding", false, e.to_string(), None),
    }
}

/// `signature`: the worker key signed the canonical bytes.
fn check_signature(r: &Receipt) -> Check {
    match r.verify_signature() {
        Ok(()) => check(
            "signature",
            true,
            format!("ed25519 by {}", hex::encode(r.worker_key)),
            None,
        ),
        Err(e) => check("signature", false, e, None),
    }
}

/// `worker_key`: the receipt is signed by the expected worker (no check when none is expected).
fn check_worker_key(r: &Receipt, expected: Option<[u8; 32]>) -> Option<Check> {
    let w = expected?;
    let ok = w == r.worker_key;
    Some(check(
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
    ))
}

/// `job_id`: the job id is the hash of the model, prompt, parameters and nonce, and is the
/// expected job's (when one is expected).
fn check_job_id(r: &Receipt, expected: Option<[u8; 32]>) -> Check {
    let job = receipt::job_id(&r.model_id, &r.prompt_tokens, &r.gen_params(), &r.job_nonce);
    let ok = job == r.job_id && expected.is_none_or(|e| e == r.job_id);
    check(
        "job_id",
        ok,
        if job == r.job_id {
            match expected {
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
    )
}

/// `model_id`: the receipt names the verifier's model.
fn check_model_id(r: &Receipt, model_id: &Hash256) -> Check {
    check(
        "model_id",
        r.model_id == *model_id,
        format!(
            "receipt {} / verifier {}",
            r.model_id.short(),
            model_id.short()
        ),
        None,
    )
}

/// `kernel_profile`: equal profile ids are compared exactly; a foreign profile the verifier
/// was told it has a calibration for (`cross_profiles`) within thresholds; any other is
/// rejected.
fn check_kernel_profile(r: &Receipt, here: &str, cross: &[String]) -> Check {
    let exact = r.profile_id == here;
    let known = cross.contains(&r.profile_id);
    check(
        "kernel_profile",
        exact || known,
        if exact {
            format!("{}: exact comparison", r.profile_id)
        } else if known {
            format!(
                "receipt {} vs verifier {}: comparison within thresholds",
                r.profile_id, here
            )
        } else {
            format!(
                "receipt under foreign kernel profile {} (verifier {}) with no calibration for \
                 it: name it as a cross profile (`deai verify --cross-profile {}`) to compare \
                 within the calibrated thresholds",
                r.profile_id, here, r.profile_id
            )
        },
        None,
    )
}

/// `prompt_commitment`: the commitment binds the prompt tokens.
fn check_prompt_commitment(r: &Receipt) -> Check {
    let ok = receipt::prompt_commitment(&r.prompt_tokens) == r.prompt_commitment;
    check(
        "prompt_commitment",
        ok,
        if ok {
            "binds the prompt tokens"
        } else {
            "does not match the prompt tokens"
        },
        None,
    )
}

/// `output_commitment`: the commitment binds the output tokens.
fn check_output_commitment(r: &Receipt) -> Check {
    let ok = receipt::output_commitment(&r.output_tokens) == r.output_commitment;
    check(
        "output_commitment",
        ok,
        if ok {
            "binds the output tokens"
        } else {
            "does not match the output tokens"
        },
        None,
    )
}

/// `parameters`: the sampling settings are valid for a vocabulary of `vocab` tokens, and the
/// output is non-empty and within `max_tokens`.
fn check_parameters(r: &Receipt, vocab: usize) -> Check {
    let pv = r.sampling.validate_for_vocab(vocab);
    check(
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
    )
}

/// `prefill`: the validator prefill over the prompt and all output tokens but the last (as
/// background work yielding for up to `patience`, when given). Returns its hidden states and
/// logits when it ran.
fn run_prefill(
    r: &Receipt,
    engine: &Engine,
    patience: Option<std::time::Duration>,
) -> (Check, Option<ForwardOut>) {
    let p = r.prompt_tokens.len();
    let n = r.output_tokens.len();
    let vocab = engine.model.cfg.vocab;
    let mut fed: Vec<u32> = r.prompt_tokens.clone();
    fed.extend_from_slice(&r.output_tokens[..n.saturating_sub(1)]);
    let bad_tok = r
        .prompt_tokens
        .iter()
        .chain(&r.output_tokens)
        .position(|&t| t as usize >= vocab);
    let forward = if p == 0 || n == 0 {
        Err("empty prompt or output".to_string())
    } else if let Some(i) = bad_tok {
        Err(format!("token #{i} is outside the vocabulary ({vocab})"))
    } else {
        match patience {
            // A prompt prefix this engine computed before is taken from its prefix cache
            // (the same bits); the output positions are always recomputed.
            Some(patience) => engine.prefill_all_background_cached(&fed, p - 1, patience),
            None => engine.prefill_all(&fed, p - 1).map(|out| (out, 0)),
        }
        .map_err(|e| e.to_string())
    };
    match forward {
        Ok((o, reused)) => (
            check(
                "prefill",
                true,
                match reused {
                    0 => format!("{} positions recomputed", fed.len()),
                    n => format!(
                        "{} positions recomputed, {n} prompt positions from the prefix cache",
                        fed.len() - n
                    ),
                },
                None,
            ),
            Some(o),
        ),
        Err(e) => (check("prefill", false, e, None), None),
    }
}

/// `activations`: every chunk's commitment matches the recomputed hidden states of the output
/// positions (exactly when `exact`, else within `thresholds`).
fn check_activations(
    r: &Receipt,
    out: Option<&ForwardOut>,
    d: usize,
    exact: bool,
    thresholds: &Thresholds,
) -> Check {
    let Some(o) = out else {
        return check("activations", false, "not run: no prefill", None);
    };
    let n = r.output_tokens.len();
    let pr = &r.proof;
    let expected = activation::n_chunks(n, pr.chunk_size);
    let Some(rows) = activation::output_rows(&o.hidden, d, r.prompt_tokens.len(), n) else {
        return check(
            "activations",
            false,
            "hidden states do not cover the output",
            None,
        );
    };
    if pr.chunks.len() != expected {
        return check(
            "activations",
            false,
            format!("{} chunks, expected {expected}", pr.chunks.len()),
            None,
        );
    }
    let per = pr.chunk_size as usize * d;
    let mut first_bad: Option<(usize, String)> = None;
    let mut bad = 0;
    for (j, (chunk, rows)) in pr.chunks.iter().zip(rows.chunks(per)).enumerate() {
        let k = activation::k_for(rows.len() / d, pr.chunk_size, pr.top_k);
        let res = activation::check_chunk(chunk, &r.job_id, j, d, rows, k, exact, thresholds);
        if !res.ok {
            bad += 1;
            if first_bad.is_none() {
                first_bad = Some((j, res.detail));
            }
        }
    }
    match first_bad {
        None => check(
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
        Some((j, detail)) => check(
            "activations",
            false,
            format!("{bad}/{expected} chunks fail; chunk {j}: {detail}"),
            Some((j * pr.chunk_size as usize) as u64),
        ),
    }
}

/// `sampling`: replaying the sampler on the recomputed logits picks every output token (exactly
/// when `exact`, else within the configured cross-profile tolerance).
fn check_sampling(
    r: &Receipt,
    engine: &Engine,
    out: Option<&ForwardOut>,
    exact: bool,
    cfg: &VerifyConfig,
) -> Check {
    let p = r.prompt_tokens.len();
    let n = r.output_tokens.len();
    let vocab = engine.model.cfg.vocab;
    let o = match out {
        None => return check("sampling", false, "not run: no prefill", None),
        Some(o) if o.logits.len() != n * vocab || r.sampling.validate_for_vocab(vocab).is_err() => {
            return check(
                "sampling",
                false,
                "not run: invalid parameters or logits",
                None,
            )
        }
        Some(o) => o,
    };
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
        None => check(
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
        Some((i, d)) => check("sampling", false, d, Some(i as u64)),
    }
}

/// The valid UTF-8 prefix of `b` (as the engine's stop-string search sees it).
fn valid_prefix(b: &[u8]) -> &str {
    match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// `termination`: the output ends where and how the stop reason says (a stop token, a stop
/// string or `max_tokens`), and nothing that would have stopped it comes earlier.
fn check_termination(r: &Receipt, tokenizer: &Tokenizer) -> Check {
    let n = r.output_tokens.len();
    let stops = tokenizer.stop_ids();
    let is_stop = |t: &u32| stops.contains(t);
    let last = r.output_tokens.last().copied();
    let early_stop = r.output_tokens[..n.saturating_sub(1)]
        .iter()
        .position(is_stop);
    let bytes_of = |toks: &[u32]| -> Vec<u8> {
        toks.iter()
            .flat_map(|&t| tokenizer.token_bytes(t).unwrap_or_default())
            .collect()
    };
    let stop_strings: Vec<&String> = r.stop.iter().filter(|s| !s.is_empty()).collect();
    let text_hits = |toks: &[u32]| {
        let b = bytes_of(toks);
        let s = valid_prefix(&b);
        stop_strings.iter().any(|st| s.contains(st.as_str()))
    };
    if let Some(i) = early_stop {
        return check(
            "termination",
            false,
            format!("stop token at #{i} before the end"),
            Some(i as u64),
        );
    }
    if n > r.max_tokens as usize {
        return check(
            "termination",
            false,
            format!("{n} tokens exceed max_tokens {}", r.max_tokens),
            Some(r.max_tokens as u64),
        );
    }
    let body = &r.output_tokens[..n.saturating_sub(1)];
    let (ok, detail) = match r.stop_reason {
        StopReason::Eos => {
            let ok = last.is_some_and(|t| is_stop(&t)) && !text_hits(body);
            (
                ok,
                if ok {
                    "ends with a stop token".into()
                } else {
                    "last token is not a stop token (or a stop string came first)".to_string()
                },
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
            )
        }
    };
    check(
        "termination",
        ok,
        detail,
        (!ok).then_some(n.saturating_sub(1) as u64),
    )
}

#[cfg(test)]
mod tests;
