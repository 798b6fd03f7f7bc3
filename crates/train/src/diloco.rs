//! DiLoCo rounds: the job, per-round assignment from public randomness, int8 pseudo-gradients,
//! signed contributions that commit to every inner step, and the worker that produces them,
//! with the [`Tamper`] seam through which a cheating worker (`faults`) lies.
//!
//! A round: every worker starts from the round's checkpoint with fresh AdamW moments, runs
//! `H` inner steps on its assigned shard with its assigned seed, and sends
//! `Δ = θ_start − θ_end` quantized to int8 (one f32 scale per 64 values), the hash of its
//! train state after every step (`H + 1` leaves), and its signature. Resetting the inner
//! moments every round makes a contribution a pure function of public inputs, so any
//! validator can re-execute any step of it, and workers can join or leave between rounds.

use crate::config::{config_id, ModelConfig, TrainConfig};
use crate::data::Shard;
use crate::model::{Net, Weights};
use crate::optim::{train_step, TrainState};
use crate::{Result, TrainError};
use deai_types::codec::{Reader, Writer};
use deai_types::Hash256;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Values per int8 block (one f32 scale each).
pub const QBLOCK: usize = 64;
/// Largest |mean loss| a contribution may report.
pub const MAX_MEAN_LOSS: f32 = 1e6;
/// Most inner steps per round a job may ask for (bounds the leaves a decoder accepts).
pub const MAX_INNER_STEPS: u32 = 10_000;

/// A training job: what to train, on which shards, and how rounds run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Inner steps per round (DiLoCo's H).
    pub inner_steps: u32,
    pub rounds: u32,
    /// Contributions merged per round (the workers the job pays for).
    pub workers: u32,
    pub outer_lr: f32,
    pub outer_momentum: f32,
    /// Training shards (content hashes); each worker gets one per round.
    pub shards: Vec<Hash256>,
    pub val_shard: Hash256,
    /// Consecutive inner steps a validator re-executes per challenged contribution.
    pub verify_steps: u32,
    /// Paid per round, split among accepted contributions.
    pub reward_per_round: u64,
}

impl JobSpec {
    pub fn id(&self) -> Hash256 {
        let json = serde_json::to_vec(self).expect("job serializes");
        Hash256::digest_parts("deai-train-job-v1", &[&json])
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(TrainError::Config(s));
        if self.inner_steps == 0 || self.inner_steps > MAX_INNER_STEPS {
            return bad(format!(
                "inner_steps {} must be in 1..={MAX_INNER_STEPS}",
                self.inner_steps
            ));
        }
        if self.verify_steps == 0 || self.verify_steps > self.inner_steps {
            return bad(format!(
                "verify_steps {} must be in 1..=inner_steps",
                self.verify_steps
            ));
        }
        if self.rounds == 0 || self.workers == 0 || self.shards.is_empty() {
            return bad("rounds, workers and shards must be non-zero".into());
        }
        self.model.validate()?;
        self.train.validate()?;
        let ok = |v: f32| v.is_finite() && v >= 0.0;
        if !ok(self.outer_lr) || !ok(self.outer_momentum) || self.outer_momentum >= 1.0 {
            return bad(format!(
                "outer lr {} / momentum {} out of range",
                self.outer_lr, self.outer_momentum
            ));
        }
        Ok(())
    }

    /// Digest binding the job, its configs and shards (for signatures).
    pub fn config_id(&self) -> Hash256 {
        config_id(&self.model, &self.train)
    }
}

/// One round's public inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSpec {
    pub job: Hash256,
    pub round: u32,
    /// Hash of the weights every contribution must start from.
    pub checkpoint: Hash256,
    /// Public randomness (a finalized block digest on the network) that assigns shards and
    /// seeds, unknown before the round opens.
    pub randomness: Hash256,
}

impl RoundSpec {
    /// The inputs of round `round` of job `job` from `checkpoint`: the randomness is derived
    /// from the three, so a worker can check what a coordinator hands it.
    pub fn new(job: Hash256, round: u32, checkpoint: Hash256) -> Self {
        RoundSpec {
            job,
            round,
            checkpoint,
            randomness: Hash256::digest_parts(
                "deai-train-round-v1",
                &[job.as_bytes(), &round.to_le_bytes(), checkpoint.as_bytes()],
            ),
        }
    }

    fn draw(&self, what: &str, worker: &[u8; 32]) -> u64 {
        let h = Hash256::digest_parts(
            "deai-train-assign-v1",
            &[
                what.as_bytes(),
                self.randomness.as_bytes(),
                &self.round.to_le_bytes(),
                worker,
            ],
        );
        u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes"))
    }

    /// Index of the shard `worker` trains on this round.
    pub fn shard_index(&self, worker: &[u8; 32], n_shards: usize) -> usize {
        (self.draw("shard", worker) % n_shards.max(1) as u64) as usize
    }

    /// Seed of `worker`'s batches this round.
    pub fn seed(&self, worker: &[u8; 32]) -> u64 {
        self.draw("seed", worker)
    }

    /// Global step of inner step `h` (the schedule runs across rounds).
    pub fn global_step(&self, job: &JobSpec, h: u32) -> u64 {
        self.round as u64 * job.inner_steps as u64 + h as u64
    }
}

/// An int8 pseudo-gradient: per tensor, one f32 scale per [`QBLOCK`] values and the values.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Delta {
    pub scales: Vec<Vec<f32>>,
    pub values: Vec<Vec<i8>>,
}

impl Int8Delta {
    /// Quantizes `delta` (round to nearest, scale = max |x| / 127 per block).
    pub fn quantize(delta: &[Vec<f32>]) -> Self {
        let mut scales = vec![];
        let mut values = vec![];
        for t in delta {
            let mut s = Vec::with_capacity(t.len().div_ceil(QBLOCK));
            let mut q = Vec::with_capacity(t.len());
            for block in t.chunks(QBLOCK) {
                let max = block.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = max / 127.0;
                s.push(scale);
                for x in block {
                    let v = if scale > 0.0 {
                        (x / scale).round()
                    } else {
                        0.0
                    };
                    q.push(v.clamp(-127.0, 127.0) as i8);
                }
            }
            scales.push(s);
            values.push(q);
        }
        Int8Delta { scales, values }
    }

    /// The pseudo-gradient of a run from `start` to `end`, quantized.
    pub fn between(start: &Weights, end: &Weights) -> Self {
        let delta: Vec<Vec<f32>> = start
            .tensors
            .iter()
            .zip(&end.tensors)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
            .collect();
        Self::quantize(&delta)
    }

    pub fn dequantize(&self) -> Vec<Vec<f32>> {
        self.scales
            .iter()
            .zip(&self.values)
            .map(|(s, q)| {
                q.chunks(QBLOCK)
                    .zip(s)
                    .flat_map(|(b, sc)| b.iter().map(move |v| *v as f32 * sc))
                    .collect()
            })
            .collect()
    }

    /// Bytes on the wire: per tensor, its scales then its values.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.values.len() as u32);
        for (s, q) in self.scales.iter().zip(&self.values) {
            w.u32(q.len() as u32);
            for x in s {
                w.raw(&x.to_le_bytes());
            }
            w.raw(&q.iter().map(|v| *v as u8).collect::<Vec<_>>());
        }
    }

    /// Decodes a pseudo-gradient that must have exactly `cfg`'s shapes, finite non-negative
    /// scales and values in -127..=127.
    pub fn decode(r: &mut Reader, cfg: &ModelConfig) -> Result<Self> {
        let layout = cfg.tensors();
        let bad =
            |e: deai_types::codec::DecodeError| TrainError::Decode(format!("pseudo-gradient: {e}"));
        let n = r.count("tensors", layout.len()).map_err(bad)?;
        if n != layout.len() {
            return Err(TrainError::Shape(format!(
                "pseudo-gradient has {n} tensors, the model has {}",
                layout.len()
            )));
        }
        let mut scales = vec![];
        let mut values = vec![];
        for (name, shape) in &layout {
            let want: usize = shape.iter().product();
            let len = r.u32("tensor length").map_err(bad)? as usize;
            if len != want {
                return Err(TrainError::Shape(format!(
                    "pseudo-gradient {name} has {len} values, expected {want}"
                )));
            }
            let nb = len.div_ceil(QBLOCK);
            let s: Vec<f32> = r
                .raw(nb * 4, "scales")
                .map_err(bad)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(x) = s.iter().find(|x| !x.is_finite() || **x < 0.0) {
                return Err(TrainError::NonFinite(format!(
                    "pseudo-gradient {name} scale {x}"
                )));
            }
            let q: Vec<i8> = r
                .raw(len, "values")
                .map_err(bad)?
                .iter()
                .map(|v| *v as i8)
                .collect();
            if q.contains(&i8::MIN) {
                return Err(TrainError::Decode(format!(
                    "pseudo-gradient {name} holds -128"
                )));
            }
            scales.push(s);
            values.push(q);
        }
        Ok(Int8Delta { scales, values })
    }

    pub fn wire_bytes(&self) -> usize {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.0.len()
    }
}

/// A worker's signed result for one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    pub job: Hash256,
    pub round: u32,
    pub worker: [u8; 32],
    /// Checkpoint the worker claims to have started from.
    pub checkpoint: Hash256,
    /// Shard the worker claims to have trained on.
    pub shard: Hash256,
    /// Hash of the train state before step 1 and after each of the `H` steps.
    pub leaves: Vec<Hash256>,
    /// Mean inner loss (reported, not trusted).
    pub mean_loss: f32,
    pub delta: Int8Delta,
    pub signature: [u8; 64],
}

impl Contribution {
    fn body(&self) -> Writer {
        let mut w = Writer::new();
        w.raw(b"DCB1");
        w.raw(self.job.as_bytes());
        w.u32(self.round);
        w.raw(&self.worker);
        w.raw(self.checkpoint.as_bytes());
        w.raw(self.shard.as_bytes());
        w.u32(self.leaves.len() as u32);
        for l in &self.leaves {
            w.raw(l.as_bytes());
        }
        w.raw(&self.mean_loss.to_le_bytes());
        self.delta.encode(&mut w);
        w
    }

    fn signing_digest(&self) -> Hash256 {
        Hash256::digest_parts("deai-contribution-v1", &[&self.body().0])
    }

    pub fn sign(mut self, key: &SigningKey) -> Self {
        self.worker = key.verifying_key().to_bytes();
        self.signature = key.sign(self.signing_digest().as_bytes()).to_bytes();
        self
    }

    pub fn verify_signature(&self) -> Result<()> {
        let vk = VerifyingKey::from_bytes(&self.worker)
            .map_err(|_| TrainError::Rejected("worker key is not a valid ed25519 point".into()))?;
        vk.verify(
            self.signing_digest().as_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| TrainError::Rejected("bad signature".into()))
    }

    /// Identity of the contribution (covers the signature too).
    pub fn id(&self) -> Hash256 {
        Hash256::digest_parts("deai-contribution-id-v1", &[&self.to_bytes()])
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = self.body();
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// The worker key of encoded contribution bytes, read without decoding the rest (it sits
    /// after the magic, the job and the round).
    pub fn worker_of(bytes: &[u8]) -> Option<[u8; 32]> {
        bytes.get(40..72)?.try_into().ok()
    }

    /// Decodes a contribution for a job training `cfg`; any malformed, oversized or
    /// wrongly shaped input is an error.
    pub fn from_bytes(b: &[u8], cfg: &ModelConfig) -> Result<Self> {
        let bad =
            |e: deai_types::codec::DecodeError| TrainError::Decode(format!("contribution: {e}"));
        let mut r = Reader::new(b);
        if r.raw(4, "magic").map_err(bad)? != b"DCB1" {
            return Err(TrainError::Decode("contribution: bad magic".into()));
        }
        let job = Hash256(r.arr("job").map_err(bad)?);
        let round = r.u32("round").map_err(bad)?;
        let worker = r.arr("worker").map_err(bad)?;
        let checkpoint = Hash256(r.arr("checkpoint").map_err(bad)?);
        let shard = Hash256(r.arr("shard").map_err(bad)?);
        let n = r
            .count("leaves", MAX_INNER_STEPS as usize + 1)
            .map_err(bad)?;
        let leaves = (0..n)
            .map(|_| r.arr("leaf").map(Hash256))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        let mean_loss = f32::from_le_bytes(r.arr("mean loss").map_err(bad)?);
        // Reported, not trusted, but averaged into the report: bounded so that the average
        // stays finite (a byte model's loss starts near ln 259 = 5.6).
        if !(mean_loss.is_finite() && mean_loss.abs() <= MAX_MEAN_LOSS) {
            return Err(TrainError::Decode(format!(
                "contribution: mean loss {mean_loss} is not a finite value within ±{MAX_MEAN_LOSS}"
            )));
        }
        let delta = Int8Delta::decode(&mut r, cfg)?;
        let signature = r.arr("signature").map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok(Contribution {
            job,
            round,
            worker,
            checkpoint,
            shard,
            leaves,
            mean_loss,
            delta,
            signature,
        })
    }
}

/// The probability that a challenge of `k` consecutive steps, its start uniform over
/// `1..=H-k+1`, covers one skipped step chosen uniformly in `1..=H`: every start covers
/// exactly `k` of the `H` steps, so `k / H`.
pub fn skip_detection_probability(h: u32, k: u32) -> f64 {
    let h = h.max(1);
    k.clamp(1, h) as f64 / h as f64
}

/// The seam through which a training worker could lie. Each hook receives what an honest
/// worker would use at one point of a round and returns what this worker uses instead; every
/// default passes the honest value through. An honest worker has no tamper (`None`); the
/// cheater classes the verifier must catch implement it in `faults` (cargo feature `faults`).
pub trait Tamper: Send + Sync + std::fmt::Debug {
    /// A name for reports (what the worker plays).
    fn name(&self) -> &str;

    /// Whether to send last round's contribution again instead of training (when there is
    /// one).
    fn resends(&self) -> bool {
        false
    }

    /// Whether [`Tamper::start`] wants the previous round's checkpoint (a network worker
    /// fetches it only then).
    fn wants_previous(&self) -> bool {
        false
    }

    /// The weights to start the round from, given the round's `checkpoint` and the one
    /// before it, when the caller has it.
    fn start(&self, checkpoint: &Weights, _previous: Option<&Weights>) -> Weights {
        checkpoint.clone()
    }

    /// The shard to train on, given the job's shards and the assigned index.
    fn shard(&self, shards: &[Shard], assigned: usize) -> Shard {
        shards[assigned].clone()
    }

    /// Whether inner step `step` (of `inner_steps`, round seed `seed`) is only counted, not
    /// computed.
    fn skips(&self, _seed: u64, _step: u32, _inner_steps: u32) -> bool {
        false
    }

    /// Rewrites the pseudo-gradient before it is signed.
    fn delta(&self, _delta: &mut Int8Delta) {}
}

/// The identity tamper: what an honest worker does at every hook.
#[derive(Debug)]
struct Untampered;

impl Tamper for Untampered {
    fn name(&self) -> &str {
        "honest"
    }
}

/// What a worker computed in one round; it answers validators' openings.
pub struct WorkerRun {
    pub contribution: Contribution,
    /// Train states kept every `keep_every` steps (state `i` at index `i / keep_every`).
    kept: Vec<TrainState>,
    keep_every: u32,
    inputs: RunInputs,
}

/// What a worker trains from, after its tamper (if any) is applied.
struct RunInputs {
    start: Weights,
    shard: Shard,
    seed: u64,
    round: RoundSpec,
    job: JobSpec,
    /// The inner steps the tamper only counts ([`Tamper::skips`]), ascending; empty for an
    /// honest worker.
    skipped: Vec<u32>,
}

impl RunInputs {
    /// Inner step `h` (1-based) from `state`, as this worker does it.
    fn advance(&self, net: &Net, state: &mut TrainState, h: u32) -> Result<f32> {
        if self.skipped.binary_search(&h).is_ok() {
            state.step += 1;
            return Ok(0.0);
        }
        let g = self.round.global_step(&self.job, h - 1);
        train_step(net, state, &self.shard, &self.job.train, self.seed, g)
    }
}

/// Keep at most ~256 MB of train states for openings; recompute the rest on demand.
fn keep_every(cfg: &ModelConfig, h: u32) -> u32 {
    let state_bytes = 12 * cfg.n_params() as u64;
    let budget = 256u64 << 20;
    let fits = (budget / state_bytes.max(1)).max(1);
    (h as u64).div_ceil(fits).max(1) as u32
}

impl WorkerRun {
    /// Runs `H` inner steps for `round` and signs the contribution; `tamper` (`None` for an
    /// honest worker) may change what it trains from and what it sends. `checkpoint` is the
    /// round's checkpoint; `previous` the one before, when the caller has it (only a tamper
    /// reads it); `shards` the job's training shards in job order.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        key: &SigningKey,
        job: &JobSpec,
        round: &RoundSpec,
        checkpoint: &Weights,
        previous: Option<&Weights>,
        shards: &[Shard],
        tamper: Option<&dyn Tamper>,
        mut on_step: impl FnMut(u32, f32),
    ) -> Result<WorkerRun> {
        let tamper = tamper.unwrap_or(&Untampered);
        let me = key.verifying_key().to_bytes();
        let idx = round.shard_index(&me, shards.len());
        let assigned = shards[idx].id();
        let shard = tamper.shard(shards, idx);
        let start = tamper.start(checkpoint, previous);
        let seed = round.seed(&me);
        let inputs = RunInputs {
            start: start.clone(),
            shard,
            seed,
            round: *round,
            job: job.clone(),
            skipped: (1..=job.inner_steps)
                .filter(|&h| tamper.skips(seed, h, job.inner_steps))
                .collect(),
        };
        let net = Net::new(&start)?;
        let keep = keep_every(&job.model, job.inner_steps);
        let mut state = TrainState::fresh(start);
        let mut leaves = vec![state.hash()];
        let mut kept = vec![state.clone()];
        let mut loss_sum = 0f64;
        for h in 1..=job.inner_steps {
            let loss = inputs.advance(&net, &mut state, h)?;
            loss_sum += loss as f64;
            on_step(h, loss);
            leaves.push(state.hash());
            if h % keep == 0 {
                kept.push(state.clone());
            }
        }
        let mut delta = Int8Delta::between(&inputs.start, &state.weights);
        tamper.delta(&mut delta);
        let contribution = Contribution {
            job: round.job,
            round: round.round,
            worker: me,
            checkpoint: round.checkpoint,
            shard: assigned,
            leaves,
            mean_loss: (loss_sum / job.inner_steps as f64) as f32,
            delta,
            signature: [0; 64],
        }
        .sign(key);
        Ok(WorkerRun {
            contribution,
            kept,
            keep_every: keep,
            inputs,
        })
    }

    /// The canonical bytes of the train state after `step` inner steps (an opening).
    pub fn open(&self, step: u32) -> Result<Vec<u8>> {
        if step > self.inputs.job.inner_steps {
            return Err(TrainError::Rejected(format!(
                "no step {step} in this round"
            )));
        }
        let k = (step / self.keep_every) as usize;
        let mut state = self.kept[k.min(self.kept.len() - 1)].clone();
        if state.step < step as u64 {
            let net = Net::new(&state.weights)?;
            for h in state.step as u32 + 1..=step {
                self.inputs.advance(&net, &mut state, h)?;
            }
        }
        Ok(state.to_bytes())
    }
}

/// Anything that can answer openings for a contribution (a local run, or a remote worker).
pub trait Opener {
    fn open(&self, step: u32) -> Result<Vec<u8>>;
}

impl Opener for WorkerRun {
    fn open(&self, step: u32) -> Result<Vec<u8>> {
        WorkerRun::open(self, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_round_trip_is_within_half_a_step_per_block() {
        let t: Vec<f32> = (0..200)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
            .collect();
        let q = Int8Delta::quantize(std::slice::from_ref(&t));
        let back = &q.dequantize()[0];
        for (blk, (a, b)) in t.chunks(QBLOCK).zip(back.chunks(QBLOCK)).enumerate() {
            let s = q.scales[0][blk];
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= s * 0.5 + 1e-9, "{x} {y} {s}");
            }
        }
        let zero = Int8Delta::quantize(&[vec![0.0; 10]]);
        assert_eq!(zero.dequantize(), vec![vec![0.0; 10]]);
    }

    #[test]
    fn assignment_depends_on_randomness_and_worker() {
        let r = RoundSpec {
            job: Hash256([1; 32]),
            round: 3,
            checkpoint: Hash256([2; 32]),
            randomness: Hash256([3; 32]),
        };
        let hits: std::collections::BTreeSet<usize> =
            (0..64u8).map(|w| r.shard_index(&[w; 32], 8)).collect();
        assert!(hits.len() >= 6, "{hits:?}");
        let r2 = RoundSpec {
            randomness: Hash256([4; 32]),
            ..r
        };
        assert!((0..16u8).any(|w| r.seed(&[w; 32]) != r2.seed(&[w; 32])));
    }

    #[test]
    fn skip_detection_probability_counts_covering_windows() {
        // Count (start, skipped step) pairs where the window covers the step, as the
        // challenge draws them (`RoundCheck::challenged_start`: start in 1..=H-k+1).
        for h in 1..=12u32 {
            for k in 1..=h {
                let starts = h - k + 1;
                let covered = (1..=starts)
                    .flat_map(|s| (1..=h).map(move |step| (s, step)))
                    .filter(|(s, step)| *s <= *step && *step < *s + k)
                    .count();
                let brute = covered as f64 / (h * starts) as f64;
                assert!((skip_detection_probability(h, k) - brute).abs() < 1e-12);
            }
        }
        assert!((skip_detection_probability(30, 1) - 1.0 / 30.0).abs() < 1e-12);
    }
}
