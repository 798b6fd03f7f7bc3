//! `deai bench verify-load`: what verification costs and catches on a devnet run at the
//! chain's default sampling, with committees drawn by the beacon (issue 24's benchmark).
//!
//! The devnet has `validators` validators (7 by default), `workers` honest workers and two
//! cheaters that pass their capability challenge and cheat afterwards (one posts receipts
//! whose activation proof was never computed, [`FakeProof`]; one alters a token and re-signs,
//! [`AlterOutput`]). The last validator is lazy ([`LazyValidator`]): drawn for a committee, it
//! commits to an acceptance under a proof of verification it made up, without re-running.
//! Chain parameters are the defaults (`Params::default()`: 10 % sampling, committees of 3,
//! its slashes and fees) with the devnet's windows, which CPU re-execution at devnet block
//! rates needs.
//!
//! Workers and validators run on two engines of the same model: the workers' and the
//! validators' (its own kernel threads, yielding to the workers' generation through a shared
//! gate, as one engine's background work does). That lets the run count each role's kernel
//! CPU time apart ([`Engine::kernel_cpu_time`]); sampling, proofs, HTTP and consensus are in
//! neither.
//!
//! - **bare**: `Engine::generate` on the chat prompt the gateway builds, on the workers'
//!   engine, inside the running devnet (its consensus shares the cores, no job in flight),
//!   `reps` times before the load and again after every job settled: output tokens / wall
//!   time over both sets. One isolated prefill of the same prompt and answer on the
//!   validators' engine beside one generation gives the per-job re-execution cost
//!   (`reexec_per_generation`, with the prompt in the validator's prefix cache as a validator
//!   that saw it before has it; `_cold` without), and with the sample rate and committee
//!   size the expected overhead;
//! - **load**: `jobs` streaming chat requests from one client, back to back, through the
//!   gateway; then every job must settle (`settle_secs`);
//! - **measured**: `verify_overhead` = the validators' kernel CPU time / the workers' over the
//!   load phase and its settlement; `e2e_tps` = completion tokens / request time over every
//!   request; the jobs each cheater served (`cheats`), the sampled ones, the rejected ones;
//!   validator earnings and slashes from the ledger's validator records.
//!
//! [`Report::failures`] lists the targets the run missed.
//!
//! [`FakeProof`]: deai_node::faults::FakeProof
//! [`AlterOutput`]: deai_node::faults::AlterOutput
//! [`LazyValidator`]: deai_node::faults::LazyValidator

use crate::network::{bare_once, stream_chat};
use crate::stats::{median, round3 as r};
use crate::sys::{cpu_model, loadavg};
use anyhow::{ensure, Context, Result};
use deai_client::ChainClient;
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::Engine;
use deai_ledger::state::{JobStatus, Params, BPS};
use deai_ledger::{Address, Job};
use deai_node::devnet::{self, DevnetInfo, DevnetOptions, Runner as _};
use deai_node::faults::{Behavior, LazyValidator};
use deai_types::Hash256;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone)]
pub struct Options {
    pub model: PathBuf,
    pub model_name: String,
    /// The workers' engine (bare runs too).
    pub engine: Arc<Engine>,
    /// The validators' engine: the same model, its own threads, sharing `engine`'s gate
    /// ([`Engine::sharing_gate`]).
    pub verify_engine: Arc<Engine>,
    /// Validators of the chain (the last one is lazy), 4..=99.
    pub validators: usize,
    /// Honest workers (two cheaters join them), 1..=16.
    pub workers: usize,
    /// Chat requests of the load phase.
    pub jobs: usize,
    /// max_tokens of every request.
    pub max_tokens: usize,
    /// Bare generations before the load and again after it (their total tokens / total time
    /// is `bare_tps`).
    pub reps: usize,
    pub seed: u64,
    pub prompt: String,
    /// Longest wait for every job to be final after the last request.
    pub settle_secs: u64,
    /// First loopback port of the devnet; `None`: a free range.
    pub port_base: Option<u16>,
    /// The chain's sample rate; `None`: `Params::default()`'s.
    pub sample_rate_bps: Option<u64>,
}

/// One validator's record at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct ValidatorRow {
    pub index: usize,
    pub lazy: bool,
    /// Committees it was drawn for, deadlines it missed, verdicts against the outcome.
    pub assigned: u64,
    pub missed: u64,
    pub wrong: u64,
    pub earned: u64,
    pub slashed: u64,
    /// Mean blocks from a job's sampling to its committee verdict.
    pub latency_blocks: f64,
}

/// Everything the run measured (rates rounded to 3 decimals).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: String,
    /// The CPU features the kernels ran with (`avx2+fma+f16c` with `DEAI_NO_VNNI=1`, as CI's
    /// AVX2-only machines run them).
    pub kernels: String,
    pub loadavg_at_start: String,
    pub threads: usize,
    pub validators: usize,
    pub workers: usize,
    pub cheaters: usize,
    pub sample_rate_bps: u64,
    pub committee_size: u64,
    pub max_tokens: usize,
    pub prompt_tokens: usize,
    /// Requests sent, lost (HTTP error, error event, stream cut) and jobs seen on chain.
    pub requests: usize,
    pub lost: usize,
    pub jobs: usize,
    pub bare_tps: f64,
    pub e2e_tps: f64,
    /// `e2e_tps / bare_tps`.
    pub ratio: f64,
    /// Re-executions (or the checks after them) that ran out of patience during the load
    /// phase and then ran beside generation: how often verification took cores from a
    /// client.
    pub patience_timeouts: u64,
    /// Kernel CPU seconds over the load phase and its settlement.
    pub generate_cpu_s: f64,
    pub verify_cpu_s: f64,
    /// `verify_cpu_s / generate_cpu_s`.
    pub verify_overhead: f64,
    /// One re-execution's kernel CPU time / one generation's (prompt in the worker's prefix
    /// cache), alone on the engines: with the prompt in the validator's prefix cache as well
    /// (what a validator that saw the prompt before runs), and cold.
    pub reexec_per_generation: f64,
    pub reexec_per_generation_cold: f64,
    /// `sample_rate x committee_size x reexec_per_generation`: the overhead with every
    /// sampled job judged by its committee alone (no escalation).
    pub expected_overhead: f64,
    /// The same with cold re-executions (no prompt prefix in the validators' cache): every
    /// job has its own prompt, or each validator sees it first. All requests of this run
    /// share one prompt, so the measured overhead is the cached case.
    pub expected_overhead_cold: f64,
    /// Jobs the beacon sampled, and those that escalated to every validator.
    pub sampled: usize,
    pub escalated: usize,
    pub accepted: usize,
    pub rejected: usize,
    /// Final but neither accepted nor rejected: expired (no receipt in time), unresolved (no
    /// quorum in time: nobody paid); and not final yet.
    pub expired: usize,
    pub unresolved: usize,
    /// Of those (expired, unresolved, pending), the ones an honest worker served: a missed
    /// target. A cheater's job may expire legitimately: once one of its cheats is rejected
    /// it is inactive, and the chain refuses the receipts it still had to post (the client
    /// is refunded at the job's timeout).
    pub honest_unsettled: usize,
    /// One line per job neither accepted nor rejected: whose, its receipt, committee,
    /// escalation and votes.
    pub unsettled: Vec<String>,
    pub pending: usize,
    /// Jobs the cheaters served (receipt posted), of those sampled, rejected, and paid.
    pub cheats: usize,
    pub cheats_sampled: usize,
    pub cheats_caught: usize,
    pub cheats_paid: usize,
    /// `cheats_sampled / cheats`: the detection probability per cheating job.
    pub detection_rate: f64,
    /// What cheating brought the cheaters in all: pay minus slashes, from their worker
    /// records (their capability challenges, answered honestly, included).
    pub cheaters_net: i64,
    /// The lazy validator's fee income and slashes, against an honest validator's mean.
    pub lazy_validator_earned: u64,
    pub lazy_validator_slashed: u64,
    pub lazy_validator_assigned: u64,
    pub honest_validator_earned: f64,
    /// Honest validators slashed or recorded wrong, plus honest workers' rejected jobs.
    pub false_slashes: u64,
    pub per_validator: Vec<ValidatorRow>,
    pub settle_s: f64,
    pub problems: Vec<String>,
}

impl Report {
    /// The targets this run missed (empty: all met). Detection is judged on the
    /// cheats that were sampled: all of them must be caught.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.verify_overhead > 0.10 {
            f.push(format!("verify_overhead {} > 0.10", self.verify_overhead));
        }
        if self.ratio < 0.9 {
            f.push(format!("e2e_tps / bare_tps {} < 0.9", self.ratio));
        }
        if self.cheats_caught < self.cheats_sampled {
            f.push(format!(
                "{} of {} sampled cheats were caught",
                self.cheats_caught, self.cheats_sampled
            ));
        }
        if self.lazy_validator_earned > 0 {
            f.push(format!(
                "the lazy validator earned {}",
                self.lazy_validator_earned
            ));
        }
        if self.lazy_validator_assigned > 0 && self.lazy_validator_slashed == 0 {
            f.push("the lazy validator sat on committees and was not slashed".into());
        }
        if self.false_slashes > 0 {
            f.push(format!("{} false slashes", self.false_slashes));
        }
        if self.cheaters_net > 0 {
            f.push(format!("the cheaters came out {} ahead", self.cheaters_net));
        }
        if self.honest_unsettled > 0 {
            f.push(format!(
                "{} honest workers' jobs neither accepted nor rejected ({} expired, {} \
                 unresolved, {} not final in all)",
                self.honest_unsettled, self.expired, self.unresolved, self.pending
            ));
        }
        if self.jobs + self.lost != self.requests {
            f.push(format!(
                "{} requests answered, {} jobs found on chain",
                self.requests - self.lost,
                self.jobs
            ));
        }
        if self.lost > 0 {
            f.push(format!("{} requests lost", self.lost));
        }
        f
    }
}

/// Checks the sizes of a run before anything is loaded or started.
pub fn validate(
    validators: usize,
    workers: usize,
    jobs: usize,
    reps: usize,
    max_tokens: usize,
) -> Result<()> {
    ensure!(
        (4..=99).contains(&validators),
        "validators must be 4..=99, got {validators}"
    );
    ensure!(
        (1..=16).contains(&workers),
        "workers must be 1..=16, got {workers}"
    );
    ensure!(
        jobs > 0 && reps > 0 && max_tokens > 0,
        "jobs, reps and max_tokens must be at least 1"
    );
    Ok(())
}

/// Kernel CPU time of `e`, or an error saying this platform cannot count it.
fn cpu(e: &Engine) -> Result<Duration> {
    e.kernel_cpu_time()
        .context("per-thread CPU time is not available here (Linux /proc needed)")
}

/// [`cpu`] off the async runtime (it waits for every kernel thread of the pool).
async fn cpu_now(e: &Arc<Engine>) -> Result<Duration> {
    let e = e.clone();
    tokio::task::spawn_blocking(move || cpu(&e)).await?
}

/// Every job `client` opened (all pages).
async fn jobs_of(chain: &ChainClient, client: &Address) -> Result<Vec<(Hash256, Job)>> {
    let (page, total) = chain.account_jobs(client, 1000).await?;
    ensure!(
        total <= 1000,
        "{total} jobs: more than one page of the chain's job index"
    );
    Ok(page)
}

/// Runs the benchmark: a devnet in this process, then the measurements.
pub fn run(o: &Options) -> Result<Report> {
    validate(o.validators, o.workers, o.jobs, o.reps, o.max_tokens)?;
    let model_id = deai_models::sha256_file(&o.model)?;
    let text = chat_prompt(
        &[ChatMessage {
            role: "user".into(),
            content: o.prompt.clone(),
        }],
        true,
    );
    let ids = o.engine.model.tokenizer.encode(&text, true)?;
    let cheaters = [Behavior::FakeProof, Behavior::AlterOutput];
    let nworkers = o.workers + cheaters.len();
    let base = match o.port_base {
        Some(p) => p,
        None => {
            let offsets: Vec<u16> = (0..o.validators as u16)
                .chain(100..100 + o.validators as u16)
                .chain(200..=200 + nworkers as u16)
                .collect();
            deai_chain::ports::free_port_base(&offsets)?
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("deai-bench-verify-load-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let lazy = o.validators - 1;
    let mut workers = vec![None; o.workers];
    workers.extend(cheaters.into_iter().map(Behavior::tamper));
    let defaults = Params::default();
    let windows = devnet::devnet_params();
    let opts = DevnetOptions {
        dir: dir.clone(),
        model_path: o.model.clone(),
        model_name: o.model_name.clone(),
        base_port: base,
        validators: o.validators,
        workers,
        cheaters_pass_challenge: true,
        price_per_1k: 1_000,
        engine: o.engine.clone(),
        verify_engine: Some(o.verify_engine.clone()),
        model_id,
        params: Params {
            challenge_window: windows.challenge_window,
            verdict_window: windows.verdict_window,
            job_timeout: windows.job_timeout,
            sample_rate_bps: o.sample_rate_bps.unwrap_or(defaults.sample_rate_bps),
            ..defaults
        }
        .fit_periods(deai_ledger::state::DEFAULT_EPOCH_LENGTH),
        no_verifier: vec![lazy],
    };
    let load0 = loadavg();
    let o = o.clone();
    devnet::runner(&dir).start(|ctx| async move {
        eprintln!(
            "starting a devnet ({} validators, {} honest workers, 2 cheaters) in {} on ports {base}.. ...",
            o.validators,
            o.workers,
            dir.display()
        );
        let net = devnet::start(&ctx, opts).await?;
        tokio::spawn(LazyValidator::new(net.validators[lazy].clone()).run(Duration::from_millis(200)));
        let cheater_addrs: HashSet<Address> = net.workers[o.workers..]
            .iter()
            .map(|w| w.address())
            .collect();
        let lazy_addr = net.validators[lazy].address();
        let validator_addrs: Vec<Address> = net.validators.iter().map(|s| s.address()).collect();
        measure(
            net.info.clone(),
            ids,
            o,
            Roles {
                cheaters: cheater_addrs,
                lazy: lazy_addr,
                validators: validator_addrs,
            },
            load0,
        )
        .await
    })
}

/// Who plays which part in the devnet.
struct Roles {
    cheaters: HashSet<Address>,
    lazy: Address,
    validators: Vec<Address>,
}

async fn measure(
    info: DevnetInfo,
    ids: Vec<u32>,
    o: Options,
    roles: Roles,
    loadavg_at_start: String,
) -> Result<Report> {
    let chain = ChainClient::new(&info.chain[0]);
    let params = chain.params().await?;
    let gen = crate::network::params(o.max_tokens, o.seed);

    // Bare, inside the running devnet, and re-executions against generations.
    eprintln!("bare engine and re-execution, {} runs each ...", o.reps);
    let (engine, verify) = (o.engine.clone(), o.verify_engine.clone());
    let ids2 = ids.clone();
    let g = gen.clone();
    let (bare_before, reexec_per_generation, reexec_cold) =
        tokio::task::spawn_blocking(move || {
            bare_once(&engine, &ids2, &g)?; // the prompt into the prefix cache, as the workers
            let bare = bare_runs(&engine, &ids2, &g, o.reps)?;
            // The re-execution a validator runs (prefill over prompt + output, logits from the
            // last prompt position) against one generation, `reps` times: with the prompt in
            // the validator's prefix cache, and cold.
            let (mut cached, mut cold) = (Vec::new(), Vec::new());
            for _ in 0..o.reps {
                let g0 = cpu(&engine)?;
                let out = engine.generate(&ids2, &g, |_| {})?;
                let g1 = cpu(&engine)?;
                let mut all = ids2.clone();
                all.extend(&out.output_tokens);
                let fed = &all[..all.len() - 1];
                let from = ids2.len() - 1;
                let v0 = cpu(&verify)?;
                verify.prefill_all(fed, from)?;
                let v1 = cpu(&verify)?;
                verify.prefill_all_background_cached(fed, from, Duration::ZERO)?;
                let v2 = cpu(&verify)?;
                verify.prefill_all_background_cached(fed, from, Duration::ZERO)?;
                let v3 = cpu(&verify)?;
                let per = |v: Duration| v.as_secs_f64() / (g1 - g0).as_secs_f64().max(1e-9);
                cached.push(per(v3 - v2));
                cold.push(per(v1 - v0));
            }
            anyhow::Ok((bare, median(&cached), median(&cold)))
        })
        .await??;

    // The load: one client, back to back.
    let (w0, v0) = (cpu_now(&o.engine).await?, cpu_now(&o.verify_engine).await?);
    let forced0 = o.engine.yield_stats().forced_chunks;
    eprintln!("{} requests through the gateway ...", o.jobs);
    let http = reqwest::Client::new();
    let (mut tokens, mut secs, mut lost) = (0u64, 0f64, 0usize);
    let mut problems = Vec::new();
    let mut sent: HashSet<String> = HashSet::new();
    for i in 0..o.jobs {
        match stream_chat(&http, &info, &o.prompt, o.seed, o.max_tokens).await {
            Ok(s) => {
                tokens += s.completion_tokens;
                secs += s.total_ms / 1e3;
                sent.insert(s.job);
            }
            Err(e) => {
                lost += 1;
                if problems.len() < 5 {
                    problems.push(format!("request {i} lost: {e}"));
                }
            }
        }
        if (i + 1) % 50 == 0 {
            eprintln!("  {} sent", i + 1);
        }
    }

    // Settlement: every job the client opened since the load began.
    let t0 = Instant::now();
    let settle = Duration::from_secs(o.settle_secs);
    let load_jobs = |all: Vec<(Hash256, Job)>| -> Vec<(Hash256, Job)> {
        all.into_iter()
            .filter(|(id, _)| sent.contains(&id.to_string()))
            .collect()
    };
    let mut jobs = load_jobs(jobs_of(&chain, &info.client).await?);
    while (jobs.len() < sent.len() || jobs.iter().any(|(_, j)| !j.status.is_final()))
        && t0.elapsed() < settle
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        jobs = load_jobs(jobs_of(&chain, &info.client).await?);
    }
    let settle_s = t0.elapsed().as_secs_f64();
    let (w1, v1) = (cpu_now(&o.engine).await?, cpu_now(&o.verify_engine).await?);
    let patience_timeouts = o.engine.yield_stats().forced_chunks - forced0;
    let (gen_cpu, ver_cpu) = ((w1 - w0).as_secs_f64(), (v1 - v0).as_secs_f64());
    // Bare again, the chain idle as before the load: the mean of both sets.
    let (engine, ids2, reps) = (o.engine.clone(), ids.clone(), o.reps);
    let bare_after =
        tokio::task::spawn_blocking(move || bare_runs(&engine, &ids2, &gen, reps)).await??;
    let bare_tps = (bare_before.0 + bare_after.0) as f64 / (bare_before.1 + bare_after.1).max(1e-9);

    let count = |f: &dyn Fn(&Job) -> bool| jobs.iter().filter(|(_, j)| f(j)).count();
    let was_sampled = |j: &Job| j.sampled_at.is_some() || !j.committee.is_empty();
    let cheat =
        |j: &Job| j.receipt.is_some() && j.worker.is_some_and(|w| roles.cheaters.contains(&w));
    let cheats = count(&cheat);
    let cheats_sampled = count(&|j| cheat(j) && was_sampled(j));
    let cheats_caught = count(&|j| cheat(j) && j.status == JobStatus::Rejected);
    let cheats_paid = count(&|j| cheat(j) && j.status == JobStatus::Accepted);

    // Validators' records, and honest workers' rejections.
    let vals = chain.validators_json().await?;
    let mut per_validator = Vec::new();
    let mut false_slashes = 0;
    for v in vals["validators"].as_array().context("validators")? {
        let addr = v["address"].as_str().unwrap_or_default();
        let Some(index) = roles.validators.iter().position(|a| hex::encode(a) == addr) else {
            continue;
        };
        let rec = &v["validator"];
        let n = |k: &str| rec[k].as_u64().unwrap_or(0);
        let lazy = roles.validators[index] == roles.lazy;
        let row = ValidatorRow {
            index,
            lazy,
            assigned: n("assigned"),
            missed: n("missed"),
            wrong: n("wrong"),
            earned: n("earned"),
            slashed: n("slashed"),
            latency_blocks: r(n("latency_blocks") as f64 / n("committee_votes").max(1) as f64),
        };
        if !lazy && (row.slashed > 0 || row.wrong > 0) {
            false_slashes += 1;
        }
        per_validator.push(row);
    }
    per_validator.sort_by_key(|v| v.index);
    let mut cheaters_net = 0i64;
    for w in chain.workers().await? {
        if roles.cheaters.contains(&w.address) {
            cheaters_net += w.worker.earned as i64 - w.worker.slashed as i64;
        } else if w.worker.jobs_rejected > 0 {
            false_slashes += w.worker.jobs_rejected;
        }
    }
    let honest: Vec<&ValidatorRow> = per_validator.iter().filter(|v| !v.lazy).collect();
    let lazy_row = per_validator
        .iter()
        .find(|v| v.lazy)
        .context("the lazy validator has no record")?;
    let status = |s: JobStatus| count(&|j| j.status == s);
    let e2e_tps = tokens as f64 / secs.max(1e-9);
    let s = params.sample_rate_bps as f64 / BPS as f64;
    Ok(Report {
        machine: cpu_model(),
        kernels: o.engine.profile().cpu_features,
        loadavg_at_start,
        threads: o.engine.threads(),
        validators: o.validators,
        workers: o.workers,
        cheaters: roles.cheaters.len(),
        sample_rate_bps: params.sample_rate_bps,
        committee_size: params.committee_size,
        max_tokens: o.max_tokens,
        prompt_tokens: ids.len(),
        requests: o.jobs,
        lost,
        jobs: jobs.len(),
        bare_tps: r(bare_tps),
        e2e_tps: r(e2e_tps),
        ratio: r(e2e_tps / bare_tps),
        generate_cpu_s: r(gen_cpu),
        verify_cpu_s: r(ver_cpu),
        verify_overhead: r(ver_cpu / gen_cpu.max(1e-9)),
        reexec_per_generation: r(reexec_per_generation),
        reexec_per_generation_cold: r(reexec_cold),
        expected_overhead: r(s * params.committee_size as f64 * reexec_per_generation),
        expected_overhead_cold: r(s * params.committee_size as f64 * reexec_cold),
        sampled: count(&was_sampled),
        escalated: count(&|j| j.escalated),
        accepted: status(JobStatus::Accepted),
        rejected: status(JobStatus::Rejected),
        expired: status(JobStatus::Expired),
        unresolved: status(JobStatus::Unresolved),
        honest_unsettled: count(&|j| {
            !matches!(j.status, JobStatus::Accepted | JobStatus::Rejected)
                && !j.worker.is_some_and(|w| roles.cheaters.contains(&w))
        }),
        unsettled: jobs
            .iter()
            .filter(|(_, j)| !matches!(j.status, JobStatus::Accepted | JobStatus::Rejected))
            .map(|(id, j)| {
                format!(
                    "job {id}: {:?}, cheater's: {}, receipt: {}, committee of {}, escalated: {}, \
                     {} verdicts, {} commits, {} reveals",
                    j.status,
                    j.worker.is_some_and(|w| roles.cheaters.contains(&w)),
                    j.receipt.is_some(),
                    j.committee.len(),
                    j.escalated,
                    j.verdicts.len(),
                    j.commits.len(),
                    j.povs.len()
                )
            })
            .collect(),
        pending: count(&|j| !j.status.is_final()),
        cheats,
        cheats_sampled,
        cheats_caught,
        cheats_paid,
        detection_rate: r(cheats_sampled as f64 / cheats.max(1) as f64),
        cheaters_net,
        patience_timeouts,
        lazy_validator_earned: lazy_row.earned,
        lazy_validator_slashed: lazy_row.slashed,
        lazy_validator_assigned: lazy_row.assigned,
        honest_validator_earned: r(
            honest.iter().map(|v| v.earned as f64).sum::<f64>() / honest.len().max(1) as f64
        ),
        false_slashes,
        per_validator,
        settle_s: r(settle_s),
        problems,
    })
}

/// `reps` bare generations: (output tokens, seconds) in all.
fn bare_runs(
    e: &Engine,
    ids: &[u32],
    gen: &deai_engine::GenParams,
    reps: usize,
) -> Result<(usize, f64)> {
    let (mut tokens, mut secs) = (0usize, 0f64);
    for _ in 0..reps {
        let t0 = Instant::now();
        tokens += bare_once(e, ids, gen)?.tokens;
        secs += t0.elapsed().as_secs_f64();
    }
    ensure!(tokens > 0, "the bare runs generated nothing");
    Ok((tokens, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            machine: String::new(),
            kernels: String::new(),
            loadavg_at_start: String::new(),
            threads: 2,
            validators: 7,
            workers: 2,
            cheaters: 2,
            sample_rate_bps: 1000,
            committee_size: 3,
            max_tokens: 16,
            prompt_tokens: 30,
            requests: 10,
            lost: 0,
            jobs: 10,
            bare_tps: 40.0,
            e2e_tps: 38.0,
            ratio: 0.95,
            generate_cpu_s: 10.0,
            verify_cpu_s: 0.5,
            verify_overhead: 0.05,
            reexec_per_generation: 0.2,
            reexec_per_generation_cold: 0.5,
            expected_overhead: 0.06,
            expected_overhead_cold: 0.15,
            sampled: 1,
            escalated: 0,
            accepted: 9,
            rejected: 1,
            expired: 0,
            unresolved: 0,
            honest_unsettled: 0,
            unsettled: vec![],
            pending: 0,
            cheats: 3,
            cheats_sampled: 1,
            cheats_caught: 1,
            cheats_paid: 2,
            detection_rate: 0.333,
            cheaters_net: -100,
            patience_timeouts: 0,
            lazy_validator_earned: 0,
            lazy_validator_slashed: 1000,
            lazy_validator_assigned: 1,
            honest_validator_earned: 12.0,
            false_slashes: 0,
            per_validator: vec![],
            settle_s: 1.0,
            problems: vec![],
        }
    }

    #[test]
    fn failures_name_each_missed_target() {
        assert!(report().failures().is_empty());
        let missed = Report {
            verify_overhead: 0.2,
            ratio: 0.5,
            cheats_caught: 0,
            lazy_validator_earned: 5,
            lazy_validator_slashed: 0,
            false_slashes: 1,
            lost: 2,
            cheaters_net: 1,
            unresolved: 1,
            honest_unsettled: 1,
            ..report()
        };
        let f = missed.failures();
        assert_eq!(f.len(), 10, "{f:?}");
        for want in [
            "verify_overhead",
            "e2e_tps",
            "sampled cheats",
            "lazy validator earned",
            "not slashed",
            "false slashes",
            "lost",
            "came out",
            "1 honest workers' jobs",
            "jobs found on chain",
        ] {
            assert!(f.iter().any(|l| l.contains(want)), "{want}: {f:?}");
        }
    }

    #[test]
    fn bad_options_are_refused_before_anything_starts() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            deai_engine::testing::tiny_model_gguf(&Default::default()),
        )
        .unwrap();
        let e = Arc::new(Engine::load(f.path(), Default::default()).unwrap());
        let o = Options {
            model: PathBuf::from("/nonexistent"),
            model_name: "m".into(),
            engine: e.clone(),
            verify_engine: e,
            validators: 7,
            workers: 2,
            jobs: 1,
            max_tokens: 1,
            reps: 1,
            seed: 1,
            prompt: "hi".into(),
            settle_secs: 1,
            port_base: None,
            sample_rate_bps: None,
        };
        for (bad, want) in [
            (
                Options {
                    validators: 3,
                    ..o.clone()
                },
                "validators",
            ),
            (
                Options {
                    workers: 0,
                    ..o.clone()
                },
                "workers",
            ),
            (
                Options {
                    jobs: 0,
                    ..o.clone()
                },
                "jobs",
            ),
        ] {
            let err = run(&bad).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
