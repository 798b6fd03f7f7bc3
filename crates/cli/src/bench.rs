//! `deai bench engine`: prefill and decode speed of the engine next to llama.cpp on the same
//! GGUF, measured in the same run (this machine is noisy, so only ratios are meaningful), plus
//! validator prefill time and peak memory.

use crate::{load_engine, resolve_model, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use deai_engine::gguf::{requantize, WType};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{sampler, Engine, EngineConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Engine speed vs llama.cpp (llama-cpp-python) for short and long prompts, Q4_1 and Q8_0.
    Engine(EngineBench),
    /// Receipts: tamper-detection matrix, false rejections, proof size and overhead, verify
    /// time vs generation time.
    Proof(crate::proof_cmd::ProofBench),
    /// The ledger on consensus: finalized transfers and receipts per second, finality latency
    /// (p50/p99), and state-root cost at 10k vs 1M accounts; validators on loopback.
    Chain(crate::chain_cmd::BenchChainArgs),
    /// The network end to end: a devnet in this process (4 validators, workers, gateway);
    /// streaming tokens/s and time to first token through the gateway vs the bare engine,
    /// concurrent streaming clients (lost, duplicated, throughput), and every job settled.
    Network(crate::bench_network::NetworkBench),
    /// Training: DiLoCo vs single-worker AdamW loss at equal tokens, communication ratio,
    /// verification cost, cheater detection, false accusations across thread counts, and
    /// throughput vs a plain candle loop.
    Train(crate::train_cmd::TrainBench),
    /// The sampler's step 0 (penalties, logit_bias, the JSON-object grammar): decode speed and
    /// validator replay time vs plain sampling on the same prompt.
    Sampler(crate::bench_sampler::SamplerBench),
    /// The explorer's queries at 100k blocks / 10k jobs vs a small chain, over HTTP; with
    /// `--browser`, page loads and first paint in headless Chromium.
    Explorer(crate::bench_explorer::ExplorerBench),
}

#[derive(Args)]
pub struct EngineBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Python with llama-cpp-python installed (scripts/bench-engine.sh makes one). Without it
    /// the baseline columns are empty.
    #[arg(long)]
    baseline_python: Option<PathBuf>,
    /// Tokens to decode per case.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Timed repetitions per case (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Only the given weight formats (comma separated: q4_1,q8_0).
    #[arg(long, default_value = "q4_1,q8_0")]
    weights: String,
    /// One JSON object per case.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Engine(b) => engine_bench(b),
        BenchCmd::Proof(b) => crate::proof_cmd::bench(b),
        BenchCmd::Chain(b) => crate::chain_cmd::bench_chain(b),
        BenchCmd::Network(b) => crate::bench_network::bench(b),
        BenchCmd::Train(b) => crate::train_cmd::bench(b),
        BenchCmd::Explorer(b) => crate::bench_explorer::bench(b),
        BenchCmd::Sampler(b) => crate::bench_sampler::bench(b),
    }
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

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
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
    let last = crate::run_python_helper(py, "llamacpp_bench.py", &input, "llama.cpp baseline")?;
    serde_json::from_str(&last).with_context(|| format!("baseline printed {last:?}"))
}

fn engine_bench(b: EngineBench) -> Result<()> {
    if b.gen_tokens == 0 || b.reps == 0 {
        bail!("--gen-tokens and --reps must be at least 1");
    }
    let q41 = resolve_model(b.model.model.as_deref())?;
    let mut cases: Vec<(&str, PathBuf)> = vec![];
    for w in b.weights.split(',').map(str::trim) {
        match w {
            "q4_1" => cases.push(("Q4_1", q41.clone())),
            "q8_0" | "q4_0" => {
                let (name, wt) = if w == "q8_0" {
                    ("Q8_0", WType::Q8_0)
                } else {
                    ("Q4_0", WType::Q4_0)
                };
                let dst = q41.with_extension(format!("{name}.gguf"));
                if !dst.exists() {
                    eprintln!(
                        "re-quantizing {} to {name} -> {}",
                        q41.display(),
                        dst.display()
                    );
                    requantize(&q41, &dst, wt)?;
                }
                cases.push((name, dst));
            }
            other => bail!("unknown weight format {other:?} (q4_1, q8_0, q4_0)"),
        }
    }
    let threads = b
        .model
        .threads
        .unwrap_or_else(|| EngineConfig::default().threads);
    if !b.json {
        println!(
            "{:<5} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>7} | {:>7}",
            "wts",
            "prompt",
            "prefill/s",
            "llama.cpp",
            "ratio",
            "decode/s",
            "llama.cpp",
            "ratio",
            "valid ms",
            "gen ms",
            "v/g",
            "rss MB"
        );
    }
    for (name, path) in cases {
        let engine = load_engine(&ModelArgs {
            model: Some(path.display().to_string()),
            threads: Some(threads),
        })?;
        for (label, prompt) in prompts(&engine)? {
            let gen = continuation(&engine, &prompt, b.gen_tokens)?;
            let m = measure(&engine, &prompt, &gen, b.reps)?;
            let base = match &b.baseline_python {
                Some(py) => Some(baseline(py, &path, &prompt, &gen, threads, b.reps)?),
                None => None,
            };
            let rss = peak_rss_mb();
            let ratio = |x: f64, y: Option<f64>| y.map(|y| x / y);
            let (bp, bd) = (
                base.as_ref().map(|x| x.prefill_tps),
                base.as_ref().map(|x| x.decode_tps),
            );
            if b.json {
                let j = serde_json::json!({
                    "weights": name, "prompt": label, "prompt_tokens": prompt.len(),
                    "gen_tokens": gen.len(), "threads": threads,
                    "prefill_tps": m.prefill_tps, "decode_tps": m.decode_tps,
                    "baseline_prefill_tps": bp, "baseline_decode_tps": bd,
                    "prefill_ratio": ratio(m.prefill_tps, bp), "decode_ratio": ratio(m.decode_tps, bd),
                    "validate_ms": m.validate_ms, "generate_ms": m.generate_ms,
                    "validate_over_generate": m.validate_ms / m.generate_ms,
                    "peak_rss_mb": rss,
                    "baseline": base.as_ref().map(|x| format!("llama-cpp-python {}", x.version)),
                    "kernel_profile": engine.profile().display_string(),
                });
                println!("{j}");
            } else {
                let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
                let r = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
                println!(
                    "{:<5} {:>6} | {:>9.1} {:>9} {:>6} | {:>8.1} {:>8} {:>6} | {:>8.0} {:>8.0} {:>7.3} | {:>7.0}",
                    name, prompt.len(), m.prefill_tps, f(bp), r(ratio(m.prefill_tps, bp)),
                    m.decode_tps, f(bd), r(ratio(m.decode_tps, bd)),
                    m.validate_ms, m.generate_ms, m.validate_ms / m.generate_ms, rss
                );
            }
        }
    }
    Ok(())
}
