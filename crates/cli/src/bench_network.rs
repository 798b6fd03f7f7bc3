//! `deai bench network`: flags, and the table or JSON of `deai_bench::network`'s report (the
//! whole network in this process against the bare engine). Exits nonzero when a request was
//! lost or duplicated, or a job ended final but not accepted (rejected, expired, unresolved);
//! jobs still pending after `--settle-secs` are reported only.

use crate::output::json_line;
use crate::{load_engine, resolve_model, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use deai_bench::network::{self, Report};
use std::sync::Arc;

#[derive(Args)]
pub struct NetworkBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Honest workers in the devnet.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// First loopback port of the devnet (chain p2p BASE.., chain HTTP BASE+100..,
    /// gateway BASE+200, workers BASE+201..); default: a free range.
    #[arg(long)]
    port_base: Option<u16>,
    /// Repetitions of the bare and the one-client measurements (medians are reported).
    #[arg(long = "reps", short = 'R', default_value_t = 5)]
    reps: usize,
    /// max_tokens of the bare and one-client requests.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Concurrent streaming clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds the concurrent clients keep sending requests.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// max_tokens of the concurrent requests (the workers run one job at a time, so requests
    /// queue: keep each short enough that the gateway's 120 s worker timeout is not reached).
    #[arg(long, default_value_t = 32)]
    concurrent_max_tokens: usize,
    #[command(flatten)]
    request: crate::ChatRequestArgs,
    /// Longest wait at the end for every job of the run to be final on chain.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// Override the devnet's job timeout (blocks from escrow to receipt before a job expires
    /// and the client is refunded); default: the devnet's own (`devnet_params`).
    #[arg(long)]
    job_timeout: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn bench(a: NetworkBench) -> Result<()> {
    if a.workers == 0 || a.workers > 16 {
        bail!("--workers must be 1..=16, got {}", a.workers);
    }
    if a.reps == 0 || a.max_tokens == 0 || a.concurrent_max_tokens == 0 || a.clients == 0 {
        bail!("--reps, --max-tokens, --concurrent-max-tokens and --clients must be at least 1");
    }
    if a.port_base.is_some_and(|p| p == 0 || p > 65_000) {
        bail!("--port-base must be in 1..=65000 (the devnet uses ports up to BASE+216)");
    }
    let model = resolve_model(a.model.model.as_deref())?;
    let engine = Arc::new(load_engine(&a.model)?);
    let report = network::run(&network::Options {
        model_name: crate::devnet_cmd::model_name(&model),
        model,
        engine,
        workers: a.workers,
        port_base: a.port_base,
        reps: a.reps,
        max_tokens: a.max_tokens,
        clients: a.clients,
        secs: a.secs,
        concurrent_max_tokens: a.concurrent_max_tokens,
        seed: a.request.seed,
        prompt: a.request.prompt,
        settle_secs: a.settle_secs,
        job_timeout: a.job_timeout,
    })?;
    if a.json {
        println!("{}", json_line(&report));
    } else {
        print_table(&report);
    }
    if let Some(why) = report.failure() {
        bail!("{why}");
    }
    Ok(())
}

fn print_table(j: &Report) {
    println!(
        "machine: {}; load average at start {}; engine threads {}; {} workers",
        j.machine, j.loadavg_at_start, j.threads, j.workers
    );
    println!(
        "one client: prompt {} tokens, max_tokens {} ({} generated), medians of {}",
        j.prompt_tokens, j.max_tokens, j.output_tokens, j.reps
    );
    println!(
        "{:<32} {:>10} {:>8} {:>10} {:>12}",
        "", "tokens/s", "ratio", "TTFT ms", "added ms"
    );
    println!(
        "{:<32} {:>10.1} {:>8} {:>10.1} {:>12}",
        "bare engine", j.bare_tps, "1.00x", j.bare_ttft_ms, "-"
    );
    println!(
        "{:<32} {:>10.1} {:>7.2}x {:>10.1} {:>12.1}",
        "gateway+worker, back to back", j.e2e_tps, j.ratio, j.e2e_ttft_ms, j.ttft_added_ms
    );
    println!(
        "{:<32} {:>10.1} {:>7.2}x {:>10} {:>12.1}",
        "  same, verification competes",
        j.competing_e2e_tps,
        j.competing_ratio,
        "",
        j.competing_ttft_added_ms
    );
    println!(
        "{:<32} {:>10.1} {:>7.2}x {:>10.1} {:>12.1}",
        "gateway+worker, validators idle",
        j.quiet_e2e_tps,
        j.quiet_ratio,
        j.quiet_e2e_ttft_ms,
        j.quiet_ttft_added_ms
    );
    println!(
        "back to back, re-execution yielded {:.1} s in all (cap {} ms per receipt), {} chunks \
         ran out of patience",
        j.verify_yield_s, j.verify_patience_ms, j.verify_forced_chunks
    );
    println!(
        "response headers after {:.1} ms (idle {:.1}); last token -> final chunk {:.1} ms \
         (idle {:.1}); one chain read {:.2} ms",
        j.e2e_headers_ms, j.quiet_headers_ms, j.e2e_tail_ms, j.quiet_tail_ms, j.chain_get_ms
    );
    println!(
        "{} concurrent clients for {} s (max_tokens {}): {} requests, {} lost, {} duplicated",
        j.clients, j.secs, j.concurrent_max_tokens, j.requests, j.lost, j.duplicated
    );
    println!(
        "  {:.1} completion tokens/s over {:.1} s = {:.2}x one bare engine at max_tokens {} ({:.1} tokens/s)",
        j.concurrent_tps,
        j.concurrent_wall_s,
        j.concurrent_ratio,
        j.concurrent_max_tokens,
        j.bare_short_tps
    );
    println!(
        "  latency p50 {:.0} ms p99 {:.0} ms; TTFT p50 {:.0} ms p99 {:.0} ms",
        j.concurrent_latency_p50_ms,
        j.concurrent_latency_p99_ms,
        j.concurrent_ttft_p50_ms,
        j.concurrent_ttft_p99_ms
    );
    println!(
        "settlement: {} jobs, {} accepted, {} rejected, {} expired/unresolved, {} pending after {:.1} s",
        j.jobs,
        j.accepted,
        j.rejected,
        j.expired + j.unresolved,
        j.pending,
        j.settle_s
    );
    if j.expired + j.unresolved > 0 {
        println!(
            "  {} expired, {} unresolved: job_timeout is {} blocks = {:.0} s at the {:.1} blocks/s \
             seen under load; slowest accepted request {:.0} ms, fastest not accepted {:.0} ms",
            j.expired,
            j.unresolved,
            j.job_timeout_blocks,
            j.job_timeout_blocks as f64 / j.concurrent_blocks_per_s,
            j.concurrent_blocks_per_s,
            j.accepted_max_latency_ms,
            j.not_accepted_min_latency_ms
        );
    }
    if j.total_lost != j.lost || j.total_duplicated != j.duplicated {
        println!(
            "all phases: {} requests, {} lost, {} duplicated",
            j.total_requests, j.total_lost, j.total_duplicated
        );
    }
    for p in &j.problems {
        println!("  {p}");
    }
}
