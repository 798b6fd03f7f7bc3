//! `deai bench engine`: prefill and decode speed of the engine next to llama.cpp on the same
//! GGUF, measured in the same run (this machine is noisy, so only ratios are meaningful), plus
//! validator prefill time and peak memory.

use crate::engines::engine_with_threads;
use crate::scripts::run_python_helper;
use crate::sys::peak_rss_mb;
use anyhow::{bail, Context, Result};
use deai_engine::gguf::{requantize, WType};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{sampler, Engine};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A weight format the bench measures: the model's own Q4_1, or a re-quantization of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    Q4_1,
    Q8_0,
    Q4_0,
}

impl Weights {
    /// The formats of a comma-separated list (`q4_1,q8_0`).
    pub fn parse_list(s: &str) -> Result<Vec<Weights>> {
        s.split(',')
            .map(str::trim)
            .map(|w| match w {
                "q4_1" => Ok(Weights::Q4_1),
                "q8_0" => Ok(Weights::Q8_0),
                "q4_0" => Ok(Weights::Q4_0),
                other => bail!("unknown weight format {other:?} (q4_1, q8_0, q4_0)"),
            })
            .collect()
    }

    /// The name in reports: `Q4_1`, `Q8_0`, `Q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            Weights::Q4_1 => "Q4_1",
            Weights::Q8_0 => "Q8_0",
            Weights::Q4_0 => "Q4_0",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// The Q4_1 GGUF; the other formats are re-quantized from it next to it (once).
    pub model: PathBuf,
    pub weights: Vec<Weights>,
    /// Kernel threads of the engine and of llama.cpp.
    pub threads: usize,
    /// Python with llama-cpp-python installed; without it the baseline fields are `None`.
    pub baseline_python: Option<PathBuf>,
    /// Tokens to decode per case (at least 1).
    pub gen_tokens: usize,
    /// Timed repetitions per case, the best is reported (at least 1).
    pub reps: usize,
}

/// One case: a weight format on a short or a long prompt.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub weights: &'static str,
    pub prompt: &'static str,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub threads: usize,
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub baseline_prefill_tps: Option<f64>,
    pub baseline_decode_tps: Option<f64>,
    pub prefill_ratio: Option<f64>,
    pub decode_ratio: Option<f64>,
    /// The validator's one prefill over prompt + generated tokens.
    pub validate_ms: f64,
    pub generate_ms: f64,
    pub validate_over_generate: f64,
    pub peak_rss_mb: f64,
    /// `llama-cpp-python VERSION`, when a baseline ran.
    pub baseline: Option<String>,
    pub kernel_profile: String,
}

const LONG_TEXT: &str =
    "The network is a set of machines that do not trust each other. Each of them \
serves inference for pay, and each answer carries a receipt: the identity of the weights, \
commitments to the prompt and the output, the sampling parameters and seed, and a compact proof \
of the hidden states the model went through. Validators recompute the hidden states with one \
prefill pass, which is much cheaper than generating token by token, and compare them with the \
commitments. ";

fn prompts(e: &Engine) -> Result<Vec<(&'static str, Vec<u32>)>> {
    let tok = &e.model.tokenizer;
    let short = chat_prompt(
        &[ChatMessage {
            role: "user".into(),
            content: "What is the capital of France? Answer in one sentence.".into(),
        }],
        true,
    );
    let mut long_user = String::new();
    while tok.encode(&long_user, false)?.len() < 640 {
        long_user.push_str(LONG_TEXT);
    }
    long_user.push_str("\nSummarize the text above in three sentences.");
    let long = chat_prompt(
        &[ChatMessage {
            role: "user".into(),
            content: long_user,
        }],
        true,
    );
    Ok(vec![
        ("short", tok.encode(&short, true)?),
        ("long", tok.encode(&long, true)?),
    ])
}

struct Measured {
    prefill_tps: f64,
    decode_tps: f64,
    validate_ms: f64,
    generate_ms: f64,
}

/// Greedy continuation of `prompt` for exactly `n` tokens (stop tokens do not end it), so both
/// engines decode the same sequence.
fn continuation(e: &Engine, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut cache = e.new_cache(prompt.len() + n)?;
    let mut out = e.forward(prompt, &mut cache, prompt.len() - 1)?;
    let mut toks = vec![];
    for _ in 0..n {
        let t = sampler::argmax(&out.logits);
        toks.push(t);
        out = e.forward(&[t], &mut cache, 0)?;
    }
    Ok(toks)
}

fn measure(e: &Engine, prompt: &[u32], gen: &[u32], reps: usize) -> Result<Measured> {
    let mut best = Measured {
        prefill_tps: 0.0,
        decode_tps: 0.0,
        validate_ms: f64::INFINITY,
        generate_ms: f64::INFINITY,
    };
    for _ in 0..reps {
        let mut cache = e.new_cache(prompt.len() + gen.len())?;
        let t = Instant::now();
        e.forward(prompt, &mut cache, prompt.len() - 1)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for tok in gen {
            e.forward(&[*tok], &mut cache, 0)?;
        }
        let decode = t.elapsed().as_secs_f64();
        // The validator: one prefill over prompt + generated tokens, logits for the generated.
        let all: Vec<u32> = prompt.iter().chain(gen).copied().collect();
        let t = Instant::now();
        e.prefill_all(&all, prompt.len() - 1)?;
        let validate = t.elapsed().as_secs_f64();
        best.prefill_tps = best.prefill_tps.max(prompt.len() as f64 / prefill);
        best.decode_tps = best.decode_tps.max(gen.len() as f64 / decode);
        best.validate_ms = best.validate_ms.min(validate * 1e3);
        best.generate_ms = best.generate_ms.min(decode * 1e3);
    }
    Ok(best)
}

#[derive(serde::Deserialize)]
struct Baseline {
    prefill_tps: f64,
    decode_tps: f64,
    version: String,
}

fn baseline(
    py: &Path,
    model: &Path,
    prompt: &[u32],
    gen: &[u32],
    threads: usize,
    reps: usize,
) -> Result<Baseline> {
    let input = serde_json::json!({
        "model": model, "prompt": prompt, "gen": gen, "threads": threads, "reps": reps,
    });
    let last = run_python_helper(py, "llamacpp_bench.py", &input, "llama.cpp baseline")?;
    serde_json::from_str(&last).with_context(|| format!("baseline printed {last:?}"))
}

/// The GGUF of each weight format, re-quantizing the Q4_1 file where it was not yet.
fn weight_files(o: &Options) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut cases = vec![];
    for &w in &o.weights {
        let wt = match w {
            Weights::Q4_1 => {
                cases.push((w.name(), o.model.clone()));
                continue;
            }
            Weights::Q8_0 => WType::Q8_0,
            Weights::Q4_0 => WType::Q4_0,
        };
        let name = w.name();
        let dst = o.model.with_extension(format!("{name}.gguf"));
        if !dst.exists() {
            eprintln!(
                "re-quantizing {} to {name} -> {}",
                o.model.display(),
                dst.display()
            );
            requantize(&o.model, &dst, wt)?;
        }
        cases.push((name, dst));
    }
    Ok(cases)
}

/// Measures every weight format on both prompts; `on_row` sees each row as soon as it is
/// measured (the whole run takes minutes), and all of them come back at the end.
pub fn run(o: &Options, mut on_row: impl FnMut(&Row)) -> Result<Vec<Row>> {
    let mut rows = vec![];
    for (name, path) in weight_files(o)? {
        let engine = engine_with_threads(&path, o.threads)?;
        for (label, prompt) in prompts(&engine)? {
            let gen = continuation(&engine, &prompt, o.gen_tokens)?;
            let m = measure(&engine, &prompt, &gen, o.reps)?;
            let base = match &o.baseline_python {
                Some(py) => Some(baseline(py, &path, &prompt, &gen, o.threads, o.reps)?),
                None => None,
            };
            let ratio = |x: f64, y: Option<f64>| y.map(|y| x / y);
            let (bp, bd) = (
                base.as_ref().map(|x| x.prefill_tps),
                base.as_ref().map(|x| x.decode_tps),
            );
            let row = Row {
                weights: name,
                prompt: label,
                prompt_tokens: prompt.len(),
                gen_tokens: gen.len(),
                threads: o.threads,
                prefill_tps: m.prefill_tps,
                decode_tps: m.decode_tps,
                baseline_prefill_tps: bp,
                baseline_decode_tps: bd,
                prefill_ratio: ratio(m.prefill_tps, bp),
                decode_ratio: ratio(m.decode_tps, bd),
                validate_ms: m.validate_ms,
                generate_ms: m.generate_ms,
                validate_over_generate: m.validate_ms / m.generate_ms,
                peak_rss_mb: peak_rss_mb(),
                baseline: base
                    .as_ref()
                    .map(|x| format!("llama-cpp-python {}", x.version)),
                kernel_profile: engine.profile().display_string(),
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_lists_parse() {
        assert_eq!(
            Weights::parse_list("q4_1, q8_0,q4_0").unwrap(),
            [Weights::Q4_1, Weights::Q8_0, Weights::Q4_0]
        );
        let e = Weights::parse_list("q4_1,f16").unwrap_err().to_string();
        assert!(e.contains("\"f16\""), "{e}");
    }
}
