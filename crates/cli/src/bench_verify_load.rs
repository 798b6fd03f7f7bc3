//! `deai bench verify-load`: flags, and the table or JSON of `deai_bench::verify_load`'s
//! report (what verification costs and catches on a devnet with committees, a lazy
//! validator and two cheating workers). Prints the targets the run missed; `--strict` makes
//! them an error.

use crate::output::json_line;
use crate::{load_engine, resolve_model, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use deai_bench::verify_load::{self, Report};
use std::sync::Arc;

#[derive(Args)]
pub struct VerifyLoadBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Validators of the devnet's chain (the last is lazy).
    #[arg(long, default_value_t = 7)]
    validators: usize,
    /// Honest workers (a fake-proof and an altered-output cheater join them).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Chat requests sent, one after another.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// max_tokens of every request.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Bare generations measured.
    #[arg(long = "reps", short = 'R', default_value_t = 5)]
    reps: usize,
    #[command(flatten)]
    request: crate::ChatRequestArgs,
    /// Longest wait at the end for every job to be final on chain.
    #[arg(long, default_value_t = 300)]
    settle_secs: u64,
    /// The chain's sample rate in basis points (default: the chain default, 1000 = 10 %).
    #[arg(long)]
    sample_rate_bps: Option<u64>,
    /// First loopback port of the devnet (chain p2p BASE.., chain HTTP BASE+100..,
    /// gateway BASE+200, workers BASE+201..); default: a free range.
    #[arg(long)]
    port_base: Option<u16>,
    /// Exit nonzero when a target is missed.
    #[arg(long)]
    strict: bool,
    /// Print one JSON object (the last line).
    #[arg(long)]
    json: bool,
}

pub fn bench(a: VerifyLoadBench) -> Result<()> {
    verify_load::validate(a.validators, a.workers, a.jobs, a.reps, a.max_tokens)?;
    if let Some(v) = a.sample_rate_bps {
        deai_ledger::state::Params::check(deai_ledger::Param::SampleRateBps, v)
            .map_err(|e| anyhow::anyhow!("--sample-rate-bps: {e}"))?;
    }
    if a.port_base.is_some_and(|p| p == 0 || p > 65_000) {
        bail!("--port-base must be in 1..=65000");
    }
    let model = resolve_model(a.model.model.as_deref())?;
    let engine = Arc::new(load_engine(&a.model)?);
    let verify_engine = Arc::new(load_engine(&a.model)?.sharing_gate(&engine));
    let report = verify_load::run(&verify_load::Options {
        model_name: crate::devnet_cmd::model_name(&model),
        model,
        engine,
        verify_engine,
        validators: a.validators,
        workers: a.workers,
        jobs: a.jobs,
        max_tokens: a.max_tokens,
        reps: a.reps,
        seed: a.request.seed,
        prompt: a.request.prompt,
        settle_secs: a.settle_secs,
        port_base: a.port_base,
        sample_rate_bps: a.sample_rate_bps,
    })?;
    let missed = report.failures();
    if a.json {
        println!("{}", json_line(&report));
    } else {
        print_table(&report);
        for m in &missed {
            println!("target missed: {m}");
        }
    }
    if a.strict && !missed.is_empty() {
        bail!("targets missed: {}", missed.join("; "));
    }
    Ok(())
}

fn print_table(j: &Report) {
    println!(
        "machine: {} (kernels {}); load average at start {}; engine threads {}",
        j.machine, j.kernels, j.loadavg_at_start, j.threads
    );
    println!(
        "devnet: {} validators (1 lazy), {} honest workers, {} cheaters; sample rate {:.1} %, \
         committees of {}",
        j.validators,
        j.workers,
        j.cheaters,
        j.sample_rate_bps as f64 / 100.0,
        j.committee_size
    );
    println!(
        "{} requests ({} lost), prompt {} tokens, max_tokens {}; {} jobs: {} accepted, {} \
         rejected, {} expired, {} unresolved, {} pending after {:.0} s",
        j.requests,
        j.lost,
        j.prompt_tokens,
        j.max_tokens,
        j.jobs,
        j.accepted,
        j.rejected,
        j.expired,
        j.unresolved,
        j.pending,
        j.settle_s
    );
    for u in &j.unsettled {
        println!("  {u}");
    }
    println!(
        "throughput: bare {:.1} tokens/s, end to end {:.1} tokens/s = {:.2}x; {} re-executions \
         ran out of patience and ran beside generation",
        j.bare_tps, j.e2e_tps, j.ratio, j.patience_timeouts
    );
    println!(
        "kernel CPU: workers {:.1} s, validators {:.1} s: verify_overhead {:.3} (expected \
         {:.3} = sample rate x committee x {:.3} per re-execution with the prompt cached; \
         {:.3} cold at {:.3}); {} sampled, {} escalated",
        j.generate_cpu_s,
        j.verify_cpu_s,
        j.verify_overhead,
        j.expected_overhead,
        j.reexec_per_generation,
        j.expected_overhead_cold,
        j.reexec_per_generation_cold,
        j.sampled,
        j.escalated
    );
    println!(
        "cheats: {} served, {} sampled ({:.1} %), {} caught, {} paid; the cheaters' pay minus \
         slashes: {}",
        j.cheats,
        j.cheats_sampled,
        j.detection_rate * 100.0,
        j.cheats_caught,
        j.cheats_paid,
        j.cheaters_net
    );
    println!(
        "lazy validator: earned {}, slashed {} over {} committees; honest validators earned \
         {:.1} on average; false slashes {}",
        j.lazy_validator_earned,
        j.lazy_validator_slashed,
        j.lazy_validator_assigned,
        j.honest_validator_earned,
        j.false_slashes
    );
    println!(
        "{:>9} {:>5} {:>9} {:>7} {:>6} {:>8} {:>8} {:>14}",
        "validator", "lazy", "assigned", "missed", "wrong", "earned", "slashed", "latency blocks"
    );
    for v in &j.per_validator {
        println!(
            "{:>9} {:>5} {:>9} {:>7} {:>6} {:>8} {:>8} {:>14.1}",
            v.index,
            if v.lazy { "yes" } else { "" },
            v.assigned,
            v.missed,
            v.wrong,
            v.earned,
            v.slashed,
            v.latency_blocks
        );
    }
    for p in &j.problems {
        println!("  {p}");
    }
}
