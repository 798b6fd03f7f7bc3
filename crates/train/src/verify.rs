//! Checking contributions before they count, and the round coordinator that merges them.
//!
//! Free checks (no model compute) catch replays, stale checkpoints, wrong shards and bad
//! signatures. A challenge then re-executes `verify_steps` consecutive inner steps chosen
//! from randomness the worker could not know when it committed, from the worker's own
//! opened state, and compares every resulting state hash with the committed leaves exactly
//! (same kernel profile). A mismatch is narrowed by bisection over the committed leaves to
//! the first step whose re-execution disagrees, so a third party can settle the dispute by
//! re-running that one step. Finally the worker opens its end state, which must hash to the
//! last leaf and reproduce the pseudo-gradient bit for bit.
//!
//! The challenge must be unpredictable to the worker when it commits: a worker that knows
//! which window will be re-executed computes only that window and commits anything else
//! (an arbitrary end state, hence an arbitrary pseudo-gradient). So the coordinator draws a
//! secret when a round opens and publishes only its commitment
//! ([`challenge_commitment`]); once the round's contributions are fixed, the challenge
//! randomness is [`challenge_randomness`] over the secret and the admitted contributions'
//! ids, and the report reveals the secret, so anyone can recompute every draw. This defends
//! against workers only: the coordinator knows the secret all along, so a worker colluding
//! with it could grind its commitments into the window it computed (see [`crate::audit`]).

use crate::data::Shard;
use crate::diloco::{Contribution, Int8Delta, JobSpec, Opener, RoundSpec};
use crate::evidence::{Recording, RoundEvidence, MAX_EVIDENCE_ITEMS};
use crate::model::{Net, Weights};
use crate::optim::{train_step, Nesterov, TrainState};
use crate::{Result, TrainError};
use deai_types::Hash256;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashSet};

/// The commitment to a round's challenge secret, published when the round opens.
pub fn challenge_commitment(secret: &Hash256) -> Hash256 {
    Hash256::digest_parts("deai-train-challenge-commit-v1", &[secret.as_bytes()])
}

/// A round's challenge randomness: the coordinator's secret (committed when the round
/// opened, revealed in the report) over the round's inputs and the ids of the contributions
/// it admitted, in worker-key order. Nobody knows it before every contribution is fixed.
pub fn challenge_randomness(
    secret: &Hash256,
    round: &RoundSpec,
    contributions: &[Hash256],
) -> Hash256 {
    let ids: Vec<u8> = contributions.iter().flat_map(|c| c.0).collect();
    Hash256::digest_parts(
        "deai-train-challenge-v2",
        &[
            secret.as_bytes(),
            round.job.as_bytes(),
            &round.round.to_le_bytes(),
            round.checkpoint.as_bytes(),
            round.randomness.as_bytes(),
            &ids,
        ],
    )
}

/// Why a contribution was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    BadSignature,
    WrongJob,
    /// Not this round's: a late or replayed contribution.
    WrongRound,
    /// This worker already contributed this round, or these exact bytes were seen.
    Duplicate,
    StaleCheckpoint,
    WrongShard,
    Malformed,
    /// The worker could not open a committed state, or the opening does not hash to it.
    BadOpening,
    /// Re-executing the step does not give the committed state.
    StepMismatch,
    /// The pseudo-gradient is not the quantized difference of the committed states.
    DeltaMismatch,
    /// Refused before any check by the node's admission policy (e.g. the worker holds less
    /// than the ledger's worker stake).
    NotAdmitted,
}

impl Reason {
    /// Whether a contribution refused for this reason proves its signer cheated, so that
    /// the signer may be slashed. A bad signature proves nothing about the named key; a
    /// wrong round or a duplicate may be a late or replayed copy of honest work (a replay
    /// carries its victim's signature); an unreachable worker may have crashed.
    pub fn slashable(&self) -> bool {
        matches!(
            self,
            Reason::StaleCheckpoint
                | Reason::WrongShard
                | Reason::StepMismatch
                | Reason::DeltaMismatch
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    /// First inner step (1-based) whose re-execution disagrees, when one was found.
    pub first_bad_step: Option<u32>,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            first_bad_step: None,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.detail)?;
        if let Some(s) = self.first_bad_step {
            write!(f, " (first bad step {s})")?;
        }
        Ok(())
    }
}

/// What a passed challenge cost the validator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeCost {
    /// Inner steps re-executed.
    pub steps: u32,
    /// Bytes of openings received.
    pub opening_bytes: u64,
}

/// A round's public inputs, as a validator holds them.
pub struct RoundCheck<'a> {
    pub job: &'a JobSpec,
    pub round: &'a RoundSpec,
    pub checkpoint: &'a Weights,
    /// The job's training shards, in job order.
    pub shards: &'a [Shard],
    /// Hash of the fresh train state at `checkpoint` (every leaf 0).
    pub start_leaf: Hash256,
}

impl<'a> RoundCheck<'a> {
    pub fn new(
        job: &'a JobSpec,
        round: &'a RoundSpec,
        checkpoint: &'a Weights,
        shards: &'a [Shard],
    ) -> Self {
        RoundCheck {
            job,
            round,
            checkpoint,
            shards,
            start_leaf: TrainState::fresh(checkpoint.clone()).hash(),
        }
    }

    fn assigned(&self, c: &Contribution) -> &Shard {
        &self.shards[self.round.shard_index(&c.worker, self.shards.len())]
    }

    /// Checks that need no model compute.
    pub fn precheck(&self, c: &Contribution) -> std::result::Result<(), Rejection> {
        use Reason::*;
        c.verify_signature()
            .map_err(|e| Rejection::new(BadSignature, e.to_string()))?;
        if c.job != self.round.job {
            return Err(Rejection::new(WrongJob, format!("job {}", c.job.short())));
        }
        if c.round != self.round.round {
            return Err(Rejection::new(
                WrongRound,
                format!(
                    "contribution for round {}, this is round {}",
                    c.round, self.round.round
                ),
            ));
        }
        if c.checkpoint != self.round.checkpoint {
            return Err(Rejection::new(
                StaleCheckpoint,
                format!(
                    "started from {}, the round's checkpoint is {}",
                    c.checkpoint.short(),
                    self.round.checkpoint.short()
                ),
            ));
        }
        let want = self.assigned(c).id();
        if c.shard != want {
            return Err(Rejection::new(
                WrongShard,
                format!("trained on {}, assigned {}", c.shard.short(), want.short()),
            ));
        }
        let h = self.job.inner_steps as usize;
        if c.leaves.len() != h + 1 {
            return Err(Rejection::new(
                Malformed,
                format!("{} leaves for {h} inner steps", c.leaves.len()),
            ));
        }
        if c.leaves[0] != self.start_leaf {
            return Err(Rejection::new(
                StaleCheckpoint,
                "the first committed state is not the round's checkpoint with fresh moments",
            ));
        }
        Ok(())
    }

    /// The first re-executed step of a challenge: `1..=H-k+1`, drawn from `randomness`
    /// (published after the contribution was committed) and the contribution's id.
    pub fn challenged_start(&self, c: &Contribution, randomness: Hash256) -> u32 {
        let h = Hash256::digest_parts(
            "deai-train-challenge-v1",
            &[randomness.as_bytes(), c.id().as_bytes()],
        );
        let span = (self.job.inner_steps - self.job.verify_steps + 1) as u64;
        1 + (u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes")) % span) as u32
    }

    fn opened(
        &self,
        c: &Contribution,
        opener: &dyn Opener,
        step: u32,
        cost: &mut ChallengeCost,
    ) -> std::result::Result<TrainState, Rejection> {
        if step == 0 {
            return Ok(TrainState::fresh(self.checkpoint.clone()));
        }
        let b = opener
            .open(step)
            .map_err(|e| Rejection::new(Reason::BadOpening, format!("opening step {step}: {e}")))?;
        cost.opening_bytes += b.len() as u64;
        let s = TrainState::from_bytes(&b, &self.job.model)
            .map_err(|e| Rejection::new(Reason::BadOpening, format!("opening step {step}: {e}")))?;
        if s.hash() != c.leaves[step as usize] || s.step != step as u64 {
            return Err(Rejection::new(
                Reason::BadOpening,
                format!("the state opened for step {step} is not the committed one"),
            ));
        }
        Ok(s)
    }

    /// Re-executes the challenged steps and checks the end state and pseudo-gradient.
    /// Call [`RoundCheck::precheck`] first.
    pub fn challenge(
        &self,
        c: &Contribution,
        opener: &dyn Opener,
        randomness: Hash256,
    ) -> std::result::Result<ChallengeCost, Rejection> {
        let mut cost = ChallengeCost::default();
        let k = self.job.verify_steps;
        let s = self.challenged_start(c, randomness);
        let mut state = self.opened(c, opener, s - 1, &mut cost)?;
        let net = Net::new(&state.weights)
            .map_err(|e| Rejection::new(Reason::BadOpening, e.to_string()))?;
        let shard = self.assigned(c);
        let seed = self.round.seed(&c.worker);
        let mut mine = Vec::with_capacity(k as usize);
        for h in s..s + k {
            let g = self.round.global_step(self.job, h - 1);
            if let Err(e) = train_step(&net, &mut state, shard, &self.job.train, seed, g) {
                // The honest step from the worker's own committed state fails (e.g. NaN).
                mine.push(Hash256([0; 32]));
                tracing::debug!("re-execution of step {h} failed: {e}");
                break;
            }
            mine.push(state.hash());
            cost.steps += 1;
        }
        // Bisection: once re-execution diverges from the committed chain it stays diverged
        // (the next step starts from a different state), so the first bad step is the
        // partition point of "agrees with the committed leaf".
        let agrees = |i: usize| mine.get(i) == Some(&c.leaves[s as usize + i]);
        if !agrees(k as usize - 1) {
            let (mut lo, mut hi) = (0usize, k as usize - 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if agrees(mid) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let step = s + lo as u32;
            return Err(Rejection {
                reason: Reason::StepMismatch,
                detail: format!("re-executing inner step {step} does not give the committed state"),
                first_bad_step: Some(step),
            });
        }
        let end = self.opened(c, opener, self.job.inner_steps, &mut cost)?;
        if Int8Delta::between(self.checkpoint, &end.weights) != c.delta {
            return Err(Rejection::new(
                Reason::DeltaMismatch,
                "the pseudo-gradient is not the quantized difference between the checkpoint and the committed end state",
            ));
        }
        Ok(cost)
    }
}

/// What happened in one round. Its JSON (losses that are NaN print as `null`) is what
/// `/train/v1/reports` serves and what the ledger's report digest covers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: u32,
    /// The checkpoint the round started from and the one it produced.
    pub checkpoint: Hash256,
    pub next_checkpoint: Hash256,
    /// The outer optimizer's momentum before and after the round, as weights of the same
    /// shapes (content hashes; the coordinator serves both like checkpoints).
    pub outer_state: Hash256,
    pub next_outer_state: Hash256,
    pub accepted: Vec<String>,
    pub rejected: Vec<(String, Rejection)>,
    /// Full keys (hex) of the accepted contributors that did not also cheat this round:
    /// who the ledger pays.
    pub paid_keys: Vec<String>,
    /// Full keys (hex) of the workers whose own signed contribution was refused for a
    /// [`Reason::slashable`] reason: who the ledger slashes.
    pub slashed_keys: Vec<String>,
    #[serde(deserialize_with = "nan_if_null")]
    pub eval_loss: f32,
    /// The challenge: the commitment published when the round opened, the secret behind it
    /// (revealed now), the randomness drawn from it and the admitted contributions
    /// ([`challenge_randomness`]), and the next round's commitment.
    pub challenge_commitment: Hash256,
    pub challenge_secret: Hash256,
    pub challenge: Hash256,
    pub next_challenge_commitment: Hash256,
    /// Mean reported inner loss of accepted contributions.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f32,
    /// Bytes of accepted contributions (what crossed the network to the aggregator).
    pub contribution_bytes: u64,
    pub verify: ChallengeCost,
    /// Wall time of the challenges (re-execution and checks, not evaluation).
    pub verify_seconds: f64,
    pub reward_each: u64,
}

/// The aggregator: holds the global weights and outer optimizer, admits contributions,
/// challenges them, and applies the outer Nesterov step to the average of accepted ones.
pub struct Coordinator {
    pub job: JobSpec,
    pub weights: Weights,
    pub previous: Option<Weights>,
    outer: Nesterov,
    pub round: u32,
    shards: Vec<Shard>,
    /// The held-out shard; an auditor without it does not evaluate (`eval_loss` is NaN).
    val: Option<Shard>,
    /// Ids of contributions admitted this round and the previous one (older ones fail the
    /// round check anyway), so the set stays bounded over a long job.
    seen: HashSet<Hash256>,
    seen_previous: HashSet<Hash256>,
    pending: BTreeMap<[u8; 32], Contribution>,
    early_rejects: Vec<(Option<[u8; 32]>, Rejection)>,
    /// Bytes of this round's contributions refused for a slashable reason (first per worker).
    slash_proofs: Vec<Vec<u8>>,
    /// What the last closed round used, for auditors.
    evidence: Option<RoundEvidence>,
    /// Workers with a proven key that submitted this round (see [`Coordinator::submit`]).
    attempted: HashSet<[u8; 32]>,
    /// Every worker admitted in some round of this job (a known participant).
    participants: HashSet<[u8; 32]>,
    pub reports: Vec<RoundReport>,
    /// This round's inputs and the hash of its fresh start state, kept while the weights stay
    /// (each costs a pass over every weight; workers poll the round and submit often).
    spec: RoundSpec,
    start_leaf: Hash256,
    /// Draws each round's challenge secret (seeded from the OS; see
    /// [`Coordinator::seed_challenges`]), and this round's secret.
    secrets: ChaCha20Rng,
    secret: Hash256,
    /// Evaluation windows per round (bounded for speed).
    pub eval_windows: usize,
}

/// serde_json writes a NaN float as `null`; read it back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

fn draw_secret(rng: &mut ChaCha20Rng) -> Hash256 {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    Hash256(b)
}

/// Refusals at submission kept per round in the report.
pub const MAX_EARLY_REJECTS: usize = 256;

fn who(w: &[u8; 32]) -> String {
    hex::encode(&w[..6])
}

impl Coordinator {
    pub fn new(job: JobSpec, init: Weights, shards: Vec<Shard>, val: Shard) -> Result<Self> {
        Self::build(job, init, shards, Some(val))
    }

    fn build(job: JobSpec, init: Weights, shards: Vec<Shard>, val: Option<Shard>) -> Result<Self> {
        job.validate()?;
        init.check()?;
        if init.cfg != job.model {
            return Err(TrainError::Config(
                "initial weights are for another model config".into(),
            ));
        }
        let ids: Vec<Hash256> = shards.iter().map(|s| s.id()).collect();
        if ids != job.shards || val.as_ref().is_some_and(|v| v.id() != job.val_shard) {
            return Err(TrainError::Config(
                "shards do not match the job's shard list".into(),
            ));
        }
        let (spec, start_leaf) = Self::round_inputs(&job, 0, &init);
        let mut secrets = ChaCha20Rng::from_rng(OsRng)
            .map_err(|e| TrainError::Config(format!("no OS randomness: {e}")))?;
        let secret = draw_secret(&mut secrets);
        Ok(Coordinator {
            spec,
            start_leaf,
            secrets,
            secret,
            outer: Nesterov::new(&init, job.outer_lr, job.outer_momentum),
            job,
            weights: init,
            previous: None,
            round: 0,
            shards,
            val,
            seen: HashSet::new(),
            seen_previous: HashSet::new(),
            pending: BTreeMap::new(),
            early_rejects: vec![],
            slash_proofs: vec![],
            evidence: None,
            attempted: HashSet::new(),
            participants: HashSet::new(),
            reports: vec![],
            eval_windows: 64,
        })
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// A coordinator for round `round` of `job`, from that round's checkpoint, outer
    /// momentum and challenge secret: how an auditor replays a round
    /// ([`crate::audit::audit_round`]). Without `val` rounds are not evaluated.
    pub fn resume(
        job: JobSpec,
        checkpoint: Weights,
        outer_state: &Weights,
        round: u32,
        secret: Hash256,
        shards: Vec<Shard>,
        val: Option<Shard>,
    ) -> Result<Self> {
        if round >= job.rounds {
            return Err(TrainError::Config(format!(
                "round {round} but the job has {} rounds",
                job.rounds
            )));
        }
        if outer_state.cfg != job.model
            || outer_state.tensors.len() != checkpoint.tensors.len()
            || outer_state
                .tensors
                .iter()
                .zip(&checkpoint.tensors)
                .any(|(a, b)| a.len() != b.len())
        {
            return Err(TrainError::Shape(
                "the outer state does not have the model's shapes".into(),
            ));
        }
        let mut co = Self::build(job, checkpoint, shards, val)?;
        co.outer.buf = outer_state.tensors.clone();
        co.round = round;
        (co.spec, co.start_leaf) = Self::round_inputs(&co.job, round, &co.weights);
        co.secret = secret;
        Ok(co)
    }

    /// The outer optimizer's momentum, as weights of the model's shapes.
    pub fn outer_state(&self) -> Weights {
        Weights {
            cfg: self.job.model.clone(),
            tensors: self.outer.buf.clone(),
        }
    }

    /// What the last closed round used ([`crate::audit`]), taken out (it holds the
    /// openings: megabytes per contribution).
    pub fn take_evidence(&mut self) -> Option<RoundEvidence> {
        self.evidence.take()
    }

    /// Draws this and every later round's challenge secret from `seed` instead of the OS,
    /// so that runs repeat exactly (tests, benchmarks). Whoever knows the seed knows every
    /// challenge in advance: never on a network.
    pub fn seed_challenges(&mut self, seed: u64) {
        self.secrets = ChaCha20Rng::seed_from_u64(seed);
        self.secret = draw_secret(&mut self.secrets);
    }

    /// The commitment to this round's challenge secret: publish it when the round opens.
    pub fn challenge_commitment(&self) -> Hash256 {
        challenge_commitment(&self.secret)
    }

    /// This round's challenge randomness over the contributions admitted so far; call it
    /// once the round is closed to submissions ([`Coordinator::close_round`] draws the same).
    pub fn challenge_randomness(&self) -> Hash256 {
        let ids: Vec<Hash256> = self.pending.values().map(|c| c.id()).collect();
        challenge_randomness(&self.secret, &self.spec, &ids)
    }

    /// This round's public inputs. Locally the randomness is derived from the job and the
    /// checkpoint; on a network it is a finalized block digest.
    pub fn round_spec(&self) -> RoundSpec {
        self.spec
    }

    fn round_inputs(job: &JobSpec, round: u32, weights: &Weights) -> (RoundSpec, Hash256) {
        let spec = RoundSpec::new(job.id(), round, weights.hash());
        (spec, TrainState::fresh(weights.clone()).hash())
    }

    /// The check of this round's contributions, with the cached start leaf.
    pub fn round_check(&self) -> RoundCheck<'_> {
        RoundCheck {
            job: &self.job,
            round: &self.spec,
            checkpoint: &self.weights,
            shards: &self.shards,
            start_leaf: self.start_leaf,
        }
    }

    /// Admits a contribution's bytes for this round (free checks only) and returns its
    /// worker. A rejected one is recorded in the round's report; nothing already admitted
    /// changes.
    ///
    /// A worker counts towards [`Coordinator::attempted`] only once it is proven to have
    /// tried this round: its contribution was admitted, or refused though it is for this job
    /// and round and signed by its worker (not a replay of last round's bytes). Junk naming
    /// other workers' keys, or old signed contributions replayed by anyone, count for
    /// nothing, so neither can close a round early.
    pub fn submit(&mut self, bytes: &[u8]) -> std::result::Result<[u8; 32], Rejection> {
        let worker = Contribution::worker_of(bytes);
        let r = self.admit(bytes);
        match &r {
            Ok(k) => {
                self.attempted.insert(*k);
                self.participants.insert(*k);
            }
            Err(e) => {
                if let Some(k) = self.tried_this_round(bytes, false) {
                    self.attempted.insert(k);
                }
                self.record_early_reject(worker, e.clone(), bytes)
            }
        }
        r
    }

    /// Records a contribution the node refused before [`Coordinator::submit`] (its
    /// admission policy): the refusal is in the round's report. Never slashable; it counts
    /// towards closing the round only from a worker admitted in an earlier round, signed by
    /// it (a stranger's key, or junk naming a participant's, counts for nothing).
    pub fn refuse(&mut self, bytes: &[u8], detail: impl Into<String>) {
        let worker = Contribution::worker_of(bytes);
        // A participant of earlier rounds refused now (say, slashed below the stake) has
        // tried: the round need not wait for it, once its signature shows the key is its.
        if let Some(k) = self.tried_this_round(bytes, true) {
            self.attempted.insert(k);
        }
        self.record_early_reject(worker, Rejection::new(Reason::NotAdmitted, detail), bytes);
    }

    /// The worker whose refused `bytes` show it tried this round: a contribution for this job
    /// and round, signed by its worker, not a copy of last round's (published) bytes, and,
    /// with `participant`, from a worker admitted in an earlier round. Anything else (junk,
    /// a forged key, a replay of old signed bytes by anyone) proves nothing.
    fn tried_this_round(&self, bytes: &[u8], participant: bool) -> Option<[u8; 32]> {
        let c = Contribution::from_bytes(bytes, &self.job.model).ok()?;
        let ok = c.job == self.spec.job
            && c.round == self.spec.round
            && !self.seen_previous.contains(&c.id())
            && (!participant || self.participants.contains(&c.worker))
            && c.verify_signature().is_ok();
        ok.then_some(c.worker)
    }

    /// Keeps at most [`MAX_EARLY_REJECTS`] refusals per round for the report (a flood of
    /// junk must not grow it without bound); each worker's first slashable one is always
    /// kept, with its bytes: the proof an auditor re-checks (at most
    /// [`MAX_EVIDENCE_ITEMS`] proofs; past that a refusal is not slashed).
    fn record_early_reject(&mut self, worker: Option<[u8; 32]>, e: Rejection, bytes: &[u8]) {
        if e.reason.slashable() {
            let first = !self
                .early_rejects
                .iter()
                .any(|(w, r)| *w == worker && r.reason.slashable());
            if first && self.slash_proofs.len() < MAX_EVIDENCE_ITEMS {
                self.slash_proofs.push(bytes.to_vec());
                self.early_rejects.push((worker, e));
                return;
            }
            if first {
                return;
            }
        }
        if self.early_rejects.len() < MAX_EARLY_REJECTS {
            self.early_rejects.push((worker, e));
        }
    }

    fn admit(&mut self, bytes: &[u8]) -> std::result::Result<[u8; 32], Rejection> {
        let c = Contribution::from_bytes(bytes, &self.job.model)
            .map_err(|e| Rejection::new(Reason::Malformed, e.to_string()))?;
        let id = c.id();
        if self.seen.contains(&id) || self.seen_previous.contains(&id) {
            return Err(Rejection::new(
                Reason::Duplicate,
                "these exact bytes were already submitted",
            ));
        }
        self.round_check().precheck(&c)?;
        if self.pending.len() >= MAX_EVIDENCE_ITEMS {
            return Err(Rejection::new(
                Reason::NotAdmitted,
                "the round holds the most contributions one round's evidence may carry",
            ));
        }
        if self.pending.contains_key(&c.worker) {
            return Err(Rejection::new(
                Reason::Duplicate,
                "this worker already contributed this round",
            ));
        }
        self.seen.insert(id);
        let worker = c.worker;
        self.pending.insert(worker, c);
        Ok(worker)
    }

    /// Contributions admitted this round, by worker key.
    pub fn pending_contributions(&self) -> impl Iterator<Item = &Contribution> {
        self.pending.values()
    }

    /// Distinct workers with a proven key that submitted this round, admitted or refused
    /// (see [`Coordinator::submit`]; a round need not wait for a worker whose contribution
    /// was already refused).
    pub fn attempted(&self) -> usize {
        self.attempted.len()
    }

    /// Workers whose contributions wait for the round to close.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Challenges every admitted contribution (openings through `openers`; a worker with no
    /// opener fails its challenge), merges the accepted ones, evaluates, and opens the next
    /// round. A round with no accepted contribution keeps the weights.
    pub fn close_round(&mut self, openers: &[([u8; 32], &dyn Opener)]) -> Result<RoundReport> {
        let spec = self.round_spec();
        let randomness = self.challenge_randomness();
        let (challenge_commitment, challenge_secret) = (self.challenge_commitment(), self.secret);
        let pending = std::mem::take(&mut self.pending);
        self.seen_previous = std::mem::take(&mut self.seen);
        self.attempted.clear();
        let mut rejected_keys = std::mem::take(&mut self.early_rejects);
        let mut evidence = RoundEvidence {
            round: self.round,
            eval_windows: self.eval_windows as u32,
            contributions: pending.values().map(|c| c.to_bytes()).collect(),
            openings: vec![],
            slash_proofs: std::mem::take(&mut self.slash_proofs),
        };
        let mut accepted = vec![];
        let mut verify = ChallengeCost::default();
        let t_verify = std::time::Instant::now();
        {
            let check = self.round_check();
            for (w, c) in pending {
                let res = match openers.iter().find(|(k, _)| *k == w) {
                    Some((_, o)) => {
                        let rec = Recording::new(*o);
                        let r = check.challenge(&c, &rec, randomness);
                        evidence.openings.push((w, rec.log.into_inner()));
                        r
                    }
                    None => Err(Rejection::new(
                        Reason::BadOpening,
                        "the worker is unreachable",
                    )),
                };
                match res {
                    Ok(cost) => {
                        verify.steps += cost.steps;
                        verify.opening_bytes += cost.opening_bytes;
                        accepted.push(c);
                    }
                    Err(e) => rejected_keys.push((Some(w), e)),
                }
            }
        }
        let verify_seconds = t_verify.elapsed().as_secs_f64();
        // Every slashable reason is checked after the signature, so the key signed it.
        let mut slashed: Vec<[u8; 32]> = rejected_keys
            .iter()
            .filter(|(_, e)| e.reason.slashable())
            .filter_map(|(k, _)| *k)
            .collect();
        slashed.sort_unstable();
        slashed.dedup();
        let rejected: Vec<(String, Rejection)> = rejected_keys
            .into_iter()
            .map(|(k, e)| (k.map(|k| who(&k)).unwrap_or_else(|| "?".into()), e))
            .collect();
        let old = self.weights.clone();
        let outer_state = self.outer_state().hash();
        if !accepted.is_empty() {
            let n = accepted.len() as f64;
            let mut sum: Vec<Vec<f64>> = old.tensors.iter().map(|t| vec![0.0; t.len()]).collect();
            for c in &accepted {
                for (s, d) in sum.iter_mut().zip(c.delta.dequantize()) {
                    s.iter_mut().zip(d).for_each(|(a, b)| *a += b as f64);
                }
            }
            let avg: Vec<Vec<f32>> = sum
                .into_iter()
                .map(|t| t.into_iter().map(|v| (v / n) as f32).collect())
                .collect();
            self.outer.step(&mut self.weights, &avg);
            self.weights.check()?;
        }
        let eval_loss = self.eval()?;
        // The next round's secret, drawn only once nothing above can fail (a failed close
        // keeps the published commitment valid).
        self.secret = draw_secret(&mut self.secrets);
        let report = RoundReport {
            round: self.round,
            checkpoint: spec.checkpoint,
            next_checkpoint: self.weights.hash(),
            outer_state,
            next_outer_state: self.outer_state().hash(),
            train_loss: if accepted.is_empty() {
                f32::NAN
            } else {
                accepted.iter().map(|c| c.mean_loss).sum::<f32>() / accepted.len() as f32
            },
            contribution_bytes: accepted.iter().map(|c| c.to_bytes().len() as u64).sum(),
            reward_each: self.job.reward_per_round / accepted.len().max(1) as u64,
            accepted: accepted.iter().map(|c| who(&c.worker)).collect(),
            paid_keys: accepted
                .iter()
                .filter(|c| slashed.binary_search(&c.worker).is_err())
                .map(|c| hex::encode(c.worker))
                .collect(),
            slashed_keys: slashed.iter().map(hex::encode).collect(),
            rejected,
            eval_loss,
            challenge_commitment,
            challenge_secret,
            challenge: randomness,
            next_challenge_commitment: self.challenge_commitment(),
            verify,
            verify_seconds,
        };
        self.previous = Some(old);
        self.round += 1;
        (self.spec, self.start_leaf) = Self::round_inputs(&self.job, self.round, &self.weights);
        self.reports.push(report.clone());
        self.evidence = Some(evidence);
        Ok(report)
    }

    /// Validation loss of the current weights (NaN for a coordinator without the held-out
    /// shard, see [`Coordinator::resume`]).
    pub fn eval(&self) -> Result<f32> {
        let Some(val) = &self.val else {
            return Ok(f32::NAN);
        };
        let net = Net::new(&self.weights)?;
        let b = val.eval_batches(self.job.model.seq_len, 16, self.eval_windows);
        net.eval_loss(&b)
    }
}
