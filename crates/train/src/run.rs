//! Whole runs: the single-worker AdamW baseline and DiLoCo rounds with a set of workers (in
//! one process), with progress events for the CLI, plus a small SVG loss plot.

use crate::data::Shard;
use crate::diloco::{JobSpec, Tamper, WorkerRun};
use crate::model::{Net, Weights};
use crate::optim::{train_step, TrainState};
use crate::verify::{Coordinator, RoundReport};
use crate::Result;
use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::time::Instant;

/// Progress of a run.
pub enum Event<'a> {
    /// An inner step finished (`worker` is the index in the worker list; 0 for baselines).
    Step {
        round: u32,
        worker: usize,
        step: u32,
        loss: f32,
    },
    /// A baseline evaluation.
    Eval {
        step: u64,
        loss: f32,
    },
    Round(&'a RoundReport),
}

/// Result of a single-worker run.
pub struct BaselineRun {
    pub weights: Weights,
    /// `(step, validation loss)`, including step 0 and the last step.
    pub evals: Vec<(u64, f32)>,
    pub tokens: u64,
    pub seconds: f64,
}

/// Plain AdamW on `data` for `steps` steps (batch and schedule from `job.train`, batch
/// multiplied by `batch_mult`), evaluating every `eval_every` steps.
#[allow(clippy::too_many_arguments)]
pub fn train_baseline(
    job: &JobSpec,
    init: &Weights,
    data: &Shard,
    val: &Shard,
    steps: u64,
    batch_mult: usize,
    eval_every: u64,
    eval_windows: usize,
    mut on: impl FnMut(Event),
) -> Result<BaselineRun> {
    let mut cfg = job.train.clone();
    cfg.batch *= batch_mult.max(1);
    cfg.total_steps = steps;
    let net = Net::new(init)?;
    let evals_b = val.eval_batches(job.model.seq_len, 16, eval_windows);
    let mut state = TrainState::fresh(init.clone());
    let mut evals = vec![(0, net.eval_loss(&evals_b)?)];
    let t0 = Instant::now();
    let mut eval_time = 0f64;
    for s in 0..steps {
        let loss = train_step(&net, &mut state, data, &cfg, cfg.seed, s)?;
        on(Event::Step {
            round: 0,
            worker: 0,
            step: s as u32 + 1,
            loss,
        });
        if (s + 1) % eval_every.max(1) == 0 || s + 1 == steps {
            let te = Instant::now();
            net.load(&state.weights)?;
            let l = net.eval_loss(&evals_b)?;
            eval_time += te.elapsed().as_secs_f64();
            evals.push((s + 1, l));
            on(Event::Eval {
                step: s + 1,
                loss: l,
            });
        }
    }
    Ok(BaselineRun {
        weights: state.weights,
        evals,
        tokens: steps * (cfg.batch * job.model.seq_len) as u64,
        seconds: t0.elapsed().as_secs_f64() - eval_time,
    })
}

/// A worker taking part in a local DiLoCo run.
pub struct LocalWorker {
    pub key: SigningKey,
    /// How it lies ([`Tamper`]); `None` for an honest worker.
    pub tamper: Option<Arc<dyn Tamper>>,
    /// Its last contribution's bytes (what a tamper that [`Tamper::resends`] sends again).
    last: Option<Vec<u8>>,
}

impl LocalWorker {
    pub fn new(key: SigningKey, tamper: Option<Arc<dyn Tamper>>) -> Self {
        LocalWorker {
            key,
            tamper,
            last: None,
        }
    }
}

/// One DiLoCo round with `workers`: each trains (through its tamper, if any) and submits its
/// bytes, then the coordinator challenges and merges. A worker whose tamper resends submits
/// its previous round's contribution again when it has one (and trains otherwise). Returns
/// the report and the worker compute time in seconds.
pub fn run_round(
    co: &mut Coordinator,
    workers: &mut [LocalWorker],
    on: &mut dyn FnMut(Event),
) -> Result<(RoundReport, f64)> {
    let spec = co.round_spec();
    let mut runs: Vec<(usize, WorkerRun)> = vec![];
    let t0 = Instant::now();
    for (i, w) in workers.iter_mut().enumerate() {
        let tamper = w.tamper.as_deref();
        if let (true, Some(old)) = (tamper.is_some_and(|t| t.resends()), &w.last) {
            let _ = co.submit(old);
            continue;
        }
        let run = WorkerRun::run(
            &w.key,
            &co.job,
            &spec,
            &co.weights,
            co.previous.as_ref(),
            co.shards(),
            tamper,
            |step, loss| {
                on(Event::Step {
                    round: spec.round,
                    worker: i,
                    step,
                    loss,
                })
            },
        )?;
        let bytes = run.contribution.to_bytes();
        let _ = co.submit(&bytes);
        w.last = Some(bytes);
        runs.push((i, run));
    }
    let compute = t0.elapsed().as_secs_f64();
    let openers: Vec<([u8; 32], &dyn crate::diloco::Opener)> = runs
        .iter()
        .map(|(i, r)| {
            (
                workers[*i].key.verifying_key().to_bytes(),
                r as &dyn crate::diloco::Opener,
            )
        })
        .collect();
    // The challenge is drawn from the coordinator's secret, after every commitment.
    let report = co.close_round(&openers)?;
    on(Event::Round(&report));
    Ok((report, compute))
}

/// An SVG line chart of `series` (name, points), for loss curves.
pub fn plot_svg(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let (w, h, m) = (720.0, 420.0, 60.0);
    let pts = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">loss</text>\n",
        w / 2.0,
        xml(title),
        h - m,
        w - m,
        h - m,
        h - m,
        w / 2.0,
        h - 16.0,
        xml(x_label),
        h / 2.0,
        h / 2.0
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.3}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}</text>\n",
            m - 6.0,
            sy(y) + 4.0,
            y,
            sx(x),
            h - m + 16.0,
            x
        );
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = p
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>\n",
            path.join(" "),
            w - m - 150.0,
            m + 16.0 * (i as f64 + 1.0),
            xml(name)
        );
    }
    s + "</svg>\n"
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
