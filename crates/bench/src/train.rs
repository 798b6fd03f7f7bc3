//! `deai bench train`: the training targets in one run (see BENCHMARKS.md). DiLoCo against a
//! single-worker AdamW baseline on the same tokens (loss ratio), the traffic against
//! data-parallel fp32 gradients (communication ratio), what verifying and auditing a round
//! cost beside computing it, the worker loop's throughput against a plain candle loop, every
//! cheater class caught, no honest worker accused across thread counts, and the detection
//! rate of the worker that skips one step.

use anyhow::{bail, Context, Result};
use deai_node::train_net::job::{worker_keys, JobOptions, PreparedJob};
use deai_train::data::Shard;
use deai_train::faults::Behavior;
use deai_train::run::{self, LocalWorker};
use deai_train::Coordinator;
use serde::Serialize;
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Training text: `shakespeare`, `synthetic` or a directory of .txt files.
    pub corpus: String,
    /// Model size: tiny, small or demo.
    pub preset: String,
    pub workers: u32,
    /// Inner steps per round.
    pub inner_steps: u32,
    pub rounds: u32,
    /// Sequences per worker step; the baseline takes workers x batch.
    pub batch: usize,
    /// Trials per cheater class (each with other keys, so another challenged step).
    pub trials: u32,
    /// Inner steps per round in the cheater and false-accusation trials.
    pub trial_inner_steps: u32,
    /// Trials of the worker that skips one step.
    pub skip_one_trials: u32,
    /// Inner AdamW learning rate (the baseline's too).
    pub lr: f32,
    /// Inner steps of each round's learning-rate ramp.
    pub round_warmup: u64,
    pub outer_lr: f32,
    pub outer_momentum: f32,
}

/// The measurements; serialized, the fields of `deai bench train --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub preset: String,
    pub params: usize,
    pub workers: u32,
    pub inner_steps: u32,
    pub rounds: u32,
    pub batch: usize,
    pub baseline_batch: usize,
    pub lr: f32,
    pub round_warmup: u64,
    pub outer_lr: f32,
    pub outer_momentum: f32,
    /// Tokens the baseline trained on (DiLoCo's workers together train on as many).
    pub tokens: u64,
    pub loss_baseline: f32,
    pub loss_diloco: f32,
    pub loss_ratio: f32,
    /// Data-parallel fp32 gradient bytes per round over DiLoCo's bytes per contribution.
    pub comm_ratio: f64,
    pub bytes_per_contribution: f64,
    /// Verification time over worker compute time.
    pub verify_cost_ratio: f64,
    /// Time auditing every round from its evidence over worker compute time.
    pub audit_cost_ratio: f64,
    /// Steps re-executed over steps trained.
    pub verify_steps_ratio: f64,
    pub worker_tokens_per_s: f64,
    pub plain_candle_tokens_per_s: f64,
    pub worker_loop_tokens_per_s: f64,
    /// Plain candle loop over the worker loop.
    pub throughput_ratio: f64,
    pub baseline_tokens_per_s: f64,
    pub cheaters_caught: u32,
    pub cheaters_total: u32,
    /// Each cheater class's `caught/trials`.
    pub per_class: serde_json::Map<String, serde_json::Value>,
    pub false_accusations: u32,
    pub honest_checked: u32,
    pub diloco_rounds: f64,
    pub skip_one_caught: u32,
    pub skip_one_trials: u32,
    pub skip_one_expected_rate: f64,
}

/// Runs every measurement; `log` gets a line at each phase and per cheater class.
pub fn run(o: &Options, log: impl Fn(&str)) -> Result<Report> {
    let s = PreparedJob::new(
        &JobOptions {
            corpus: o.corpus.clone(),
            preset: o.preset.clone(),
            workers: o.workers,
            inner_steps: o.inner_steps,
            rounds: o.rounds,
            batch: o.batch,
            lr: o.lr,
            round_warmup: o.round_warmup,
            outer_lr: o.outer_lr,
            outer_momentum: o.outer_momentum,
            verify_steps: 1,
            seed: 1,
        },
        &deai_models::default_home(),
    )?;
    let tokens_per_step = s.tokens_per_step();

    // 1. Single-worker AdamW with the same total tokens: batch x workers, R x H steps.
    let all = Shard {
        tokens: s.data.train.iter().flat_map(|x| x.tokens.clone()).collect(),
    };
    let steps = o.rounds as u64 * o.inner_steps as u64;
    log(&format!(
        "baseline: {steps} steps of batch {}",
        o.batch * o.workers as usize
    ));
    let base = run::train_baseline(
        &s.job,
        &s.init,
        &all,
        &s.data.val,
        steps,
        o.workers as usize,
        steps,
        64,
        |_| {},
    )?;
    let loss_baseline = base.evals.last().map(|e| e.1).unwrap_or(f32::NAN);

    // 2. DiLoCo with honest workers.
    log(&format!(
        "diloco: {} workers x {} rounds x {} steps",
        o.workers, o.rounds, o.inner_steps
    ));
    let mut co = Coordinator::new(
        s.job.clone(),
        s.init.clone(),
        s.data.train.clone(),
        s.data.val.clone(),
    )?;
    let mut workers: Vec<LocalWorker> = worker_keys(o.workers, 1)
        .into_iter()
        .map(|k| LocalWorker::new(k, None))
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
    let fp32_per_round = 4.0 * s.init.n_params() as f64 * o.inner_steps as f64;
    let comm_ratio = fp32_per_round / bytes_per_contribution;
    let worker_tok_s = contributions as f64 * o.inner_steps as f64 * tokens_per_step / compute;
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
    trial.job.inner_steps = o.trial_inner_steps;
    trial.job.train.warmup_steps = 1;
    trial.job.validate()?;
    let s = &trial;
    let mut caught = 0;
    let mut total = 0;
    let mut per_class = serde_json::Map::new();
    for class in Behavior::CHEATERS {
        let mut c = 0;
        for trial in 0..o.trials {
            total += 1;
            if cheater_caught(s, class, trial)? {
                c += 1;
                caught += 1;
            }
        }
        log(&format!("{:<17} caught {c}/{}", class.name(), o.trials));
        per_class.insert(
            class.name().into(),
            serde_json::json!(format!("{c}/{}", o.trials)),
        );
    }
    let (false_accusations, honest_checked) = false_accusations(s, o.trials)?;
    // 5. The worker that skips one step of H: each trial has other keys, so another
    // challenged step and another skipped one.
    let mut skip_one_caught = 0;
    for trial in 0..o.skip_one_trials {
        if cheater_caught(s, Behavior::SkipOneStep, 500 + trial)? {
            skip_one_caught += 1;
        }
    }
    let skip_one_expected =
        deai_train::diloco::skip_detection_probability(s.job.inner_steps, s.job.verify_steps);
    log(&format!(
        "{:<17} caught {skip_one_caught}/{} (expected rate {skip_one_expected:.3})",
        Behavior::SkipOneStep.name(),
        o.skip_one_trials
    ));

    Ok(Report {
        preset: o.preset.clone(),
        params: s.init.n_params(),
        workers: o.workers,
        inner_steps: o.inner_steps,
        rounds: o.rounds,
        batch: o.batch,
        baseline_batch: o.batch * o.workers as usize,
        lr: o.lr,
        round_warmup: o.round_warmup,
        outer_lr: s.job.outer_lr,
        outer_momentum: s.job.outer_momentum,
        tokens: base.tokens,
        loss_baseline,
        loss_diloco,
        loss_ratio: loss_diloco / loss_baseline,
        comm_ratio,
        bytes_per_contribution,
        verify_cost_ratio: verify_time / compute,
        audit_cost_ratio: audit_time / compute,
        verify_steps_ratio: verify_steps as f64 / (contributions as f64 * o.inner_steps as f64),
        worker_tokens_per_s: worker_tok_s,
        plain_candle_tokens_per_s: plain_tok_s,
        worker_loop_tokens_per_s: worker_loop_tok_s,
        throughput_ratio: plain_tok_s / worker_loop_tok_s,
        baseline_tokens_per_s: base.tokens as f64 / base.seconds,
        cheaters_caught: caught,
        cheaters_total: total,
        per_class,
        false_accusations,
        honest_checked,
        diloco_rounds: rounds,
        skip_one_caught,
        skip_one_trials: o.skip_one_trials,
        skip_one_expected_rate: skip_one_expected,
    })
}

/// Tokens/s of a plain candle loop on the same model: forward, backward, AdamW as tensor
/// ops on the `Var`s, no hashing or host copies.
fn plain_candle_tok_s(s: &PreparedJob, steps: u64) -> Result<f64> {
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
fn worker_loop_tok_s_of(s: &PreparedJob, steps: u32) -> Result<f64> {
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
        None,
        |_, _| {},
    )?;
    Ok(steps as f64 * (job.train.batch * job.model.seq_len) as f64 / t.elapsed().as_secs_f64())
}

/// One round with an honest worker and a `class` cheater (keys vary with `trial`, so the
/// challenged step does too); true if the cheater's contribution was rejected.
fn cheater_caught(s: &PreparedJob, class: Behavior, trial: u32) -> Result<bool> {
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
        LocalWorker::new(keys[0].clone(), None),
        LocalWorker::new(keys[1].clone(), class.tamper()),
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
fn false_accusations(s: &PreparedJob, trials: u32) -> Result<(u32, u32)> {
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
                None,
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
