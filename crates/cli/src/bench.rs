//! `deai bench`: the subcommands and their flags, and `deai bench engine`'s table. Every
//! harness lives in `deai-bench`; each `bench_*` module here turns flags into its options,
//! calls it and prints its report as a table or as JSON.

use crate::output::json_line;
use crate::{resolve_model, ModelArgs};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use deai_bench::engine::{self, Weights};
use deai_engine::EngineConfig;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Engine speed vs llama.cpp (llama-cpp-python) for short and long prompts, Q4_1 and Q8_0.
    Engine(EngineBench),
    /// Receipts: tamper-detection matrix, false rejections, proof size and overhead, verify
    /// time vs generation time.
    Proof(crate::bench_proof::ProofBench),
    /// The ledger on consensus: finalized transfers and receipts per second, finality latency
    /// (p50/p99), and state-root cost at 10k vs 1M accounts; validators on loopback.
    Chain(crate::chain_cmd::BenchChainArgs),
    /// The network end to end: a devnet in this process (4 validators, workers, gateway);
    /// streaming tokens/s and time to first token through the gateway vs the bare engine,
    /// concurrent streaming clients (lost, duplicated, throughput), and every job settled.
    Network(crate::bench_network::NetworkBench),
    /// Verification under load: a devnet of 7 validators (one lazy) with committees at the
    /// default sample rate, honest and cheating workers; validator vs worker CPU time,
    /// end-to-end vs bare tokens/s, cheats sampled and caught, the lazy validator's pay.
    VerifyLoad(crate::bench_verify_load::VerifyLoadBench),
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
    /// The money attacks (fake and inflated receipts, fee-free spam, governance freeze,
    /// flash-staked votes, stake-and-leave) run as the attacker would on the ledger every
    /// validator runs: attempts, successes, attacker profit, honest loss, false slashes.
    Attacks(crate::bench_attacks::AttacksBench),
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
        BenchCmd::Proof(b) => crate::bench_proof::bench(b),
        BenchCmd::Chain(b) => crate::chain_cmd::bench_chain(b),
        BenchCmd::Network(b) => crate::bench_network::bench(b),
        BenchCmd::VerifyLoad(b) => crate::bench_verify_load::bench(b),
        BenchCmd::Train(b) => crate::train_cmd::bench(b),
        BenchCmd::Explorer(b) => crate::bench_explorer::bench(b),
        BenchCmd::Sampler(b) => crate::bench_sampler::bench(b),
        BenchCmd::Attacks(b) => crate::bench_attacks::bench(b),
    }
}

fn engine_bench(b: EngineBench) -> Result<()> {
    if b.gen_tokens == 0 || b.reps == 0 {
        bail!("--gen-tokens and --reps must be at least 1");
    }
    let model = resolve_model(b.model.model.as_deref())?;
    let weights = Weights::parse_list(&b.weights)?;
    let threads = b
        .model
        .threads
        .unwrap_or_else(|| EngineConfig::default().threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
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
    let opts = engine::Options {
        model,
        weights,
        threads,
        baseline_python: b.baseline_python,
        gen_tokens: b.gen_tokens,
        reps: b.reps,
    };
    engine::run(&opts, |row| {
        if b.json {
            println!("{}", json_line(row));
        } else {
            print_engine_row(row);
        }
    })?;
    Ok(())
}

fn print_engine_row(m: &engine::Row) {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let r = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
    println!(
        "{:<5} {:>6} | {:>9.1} {:>9} {:>6} | {:>8.1} {:>8} {:>6} | {:>8.0} {:>8.0} {:>7.3} | {:>7.0}",
        m.weights, m.prompt_tokens, m.prefill_tps, f(m.baseline_prefill_tps), r(m.prefill_ratio),
        m.decode_tps, f(m.baseline_decode_tps), r(m.decode_ratio),
        m.validate_ms, m.generate_ms, m.validate_over_generate, m.peak_rss_mb
    );
}
