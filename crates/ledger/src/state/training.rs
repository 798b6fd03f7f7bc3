//! Training jobs on the ledger: DiLoCo rounds whose contributors are paid or slashed by the
//! job's coordinator, one transaction per round.
//!
//! The chain does not re-execute training (that is the coordinator's job, off chain, with
//! `deai_train::verify`); it holds the escrow, checks who may close which round, pays each
//! round's reward to the accepted contributors, slashes the rejected ones and records the
//! checkpoint hash every round produced. A job whose coordinator stops posting expires after
//! `job_timeout` blocks per round and the rest of its escrow goes back to the owner.

use super::{err, Key, Res, State, DL_TRAIN};
use crate::tx::{Address, MAX_TRAIN_WORKERS};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// Most rounds one training job may escrow.
pub const MAX_TRAIN_ROUNDS: u32 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingStatus {
    /// Waiting for round `rounds_done` to be posted.
    Running,
    /// Every round was posted.
    Finished,
    /// A round was not posted before its deadline; the rest of the escrow was refunded.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingJob {
    #[serde(with = "crate::tx::hex_addr")]
    pub owner: Address,
    #[serde(with = "crate::tx::hex_addr")]
    pub coordinator: Address,
    pub rounds: u32,
    /// Most contributors one round may accept.
    pub workers: u32,
    pub reward_per_round: u64,
    /// The initial checkpoint, then the one each posted round produced.
    pub checkpoint: Hash256,
    /// Digest of the last posted round report.
    pub last_report: Option<Hash256>,
    pub rounds_done: u32,
    pub opened_at: u64,
    /// The height at whose end the next round times out.
    pub deadline: u64,
    pub status: TrainingStatus,
    /// Escrow not yet paid or refunded.
    pub escrow: u64,
    /// Paid to contributors so far.
    pub paid: u64,
    /// Refunded to the owner (rounding remainders, rounds nobody passed, expiry).
    pub refunded: u64,
    /// Contributions accepted / rejected over all rounds.
    pub accepted: u64,
    pub rejected: u64,
    /// Taken from rejected contributors' stake.
    pub slashed: u64,
}

impl TrainingJob {
    /// Escrow accounting: what was escrowed is paid, refunded or still held.
    pub(super) fn escrow_balanced(&self) -> bool {
        let total = self.rounds as u128 * self.reward_per_round as u128;
        self.paid as u128 + self.refunded as u128 + self.escrow as u128 == total
    }
}

impl State {
    pub fn training(&self, id: &Hash256) -> Option<&TrainingJob> {
        self.trainings.get(id)
    }

    pub fn trainings(&self) -> impl Iterator<Item = (&Hash256, &TrainingJob)> {
        self.trainings.iter()
    }

    fn training_mut(&mut self, id: &Hash256) -> Option<&mut TrainingJob> {
        self.dirty.insert(Key::Training(*id));
        self.trainings.get_mut(id)
    }

    pub(super) fn open_training(
        &mut self,
        from: Address,
        job: Hash256,
        checkpoint: Hash256,
        (rounds, workers, reward_per_round): (u32, u32, u64),
        coordinator: Address,
    ) -> Res {
        if self.trainings.contains_key(&job) {
            return err(format!("training job {} already exists", job.short()));
        }
        if rounds == 0 || rounds > MAX_TRAIN_ROUNDS {
            return err(format!("rounds must be 1..={MAX_TRAIN_ROUNDS}"));
        }
        if workers == 0 || workers as usize > MAX_TRAIN_WORKERS {
            return err(format!("workers must be 1..={MAX_TRAIN_WORKERS}"));
        }
        if reward_per_round == 0 {
            return err("reward per round must be positive");
        }
        if !self.is_active_validator(&coordinator) {
            return err("the coordinator is not an active validator");
        }
        let escrow = (rounds as u64)
            .checked_mul(reward_per_round)
            .ok_or("rounds x reward overflows")?;
        self.debit(&from, escrow, "training escrow")?;
        let h = self.meta.height;
        let deadline = h.saturating_add(self.meta.params.job_timeout);
        self.trainings.insert(
            job,
            TrainingJob {
                owner: from,
                coordinator,
                rounds,
                workers,
                reward_per_round,
                checkpoint,
                last_report: None,
                rounds_done: 0,
                opened_at: h,
                deadline,
                status: TrainingStatus::Running,
                escrow,
                paid: 0,
                refunded: 0,
                accepted: 0,
                rejected: 0,
                slashed: 0,
            },
        );
        self.dirty.insert(Key::Training(job));
        self.deadlines.insert((deadline, DL_TRAIN, job.0));
        Ok(())
    }

    /// Closes one round: pays the accepted contributors equal shares of the round's reward
    /// (the remainder, or the whole reward when nobody passed, goes back to the owner) and
    /// slashes each rejected one (half to the coordinator, the rest burned).
    pub(super) fn train_round(
        &mut self,
        from: Address,
        id: Hash256,
        round: u32,
        checkpoint: Hash256,
        report: Hash256,
        (accepted, rejected): (&[Address], &[Address]),
    ) -> Res {
        let t = self
            .trainings
            .get(&id)
            .ok_or("unknown training job")?
            .clone();
        if t.status != TrainingStatus::Running {
            return err(format!("training job is {:?}", t.status));
        }
        if from != t.coordinator {
            return err("only the job's coordinator posts rounds");
        }
        if !self.is_active_validator(&from) {
            return err("the coordinator is no longer an active validator");
        }
        if round != t.rounds_done {
            return err(format!(
                "round {round} but the job expects {}",
                t.rounds_done
            ));
        }
        if accepted.len() > t.workers as usize {
            return err(format!(
                "{} accepted contributions but the job takes {}",
                accepted.len(),
                t.workers
            ));
        }
        let mut all: Vec<Address> = accepted.iter().chain(rejected).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return err("a contributor is listed twice");
        }
        if rejected.contains(&t.owner) || rejected.contains(&from) {
            return err("the owner or coordinator cannot be a rejected contributor");
        }
        let min = self.meta.params.min_worker_stake;
        if let Some(a) = accepted.iter().find(|a| self.account(a).stake < min) {
            return err(format!(
                "contributor {} has stake {} below the worker minimum {min}",
                hex::encode(&a[..4]),
                self.account(a).stake
            ));
        }
        let reward = t.reward_per_round.min(t.escrow);
        let (share, refund) = match accepted.len() as u64 {
            0 => (0, reward),
            n => (reward / n, reward % n),
        };
        for a in accepted {
            self.credit(a, share);
        }
        self.credit(&t.owner, refund);
        let mut slashed = 0u64;
        for r in rejected {
            let s = self.slash_holdings(r);
            let to_coordinator = s / 2;
            self.credit(&from, to_coordinator);
            self.meta.burned += s - to_coordinator;
            slashed += s;
            if let Some(w) = self.workers.get_mut(r) {
                w.slashed += s;
                w.active = false;
                self.dirty.insert(Key::Worker(*r));
            }
        }
        let h = self.meta.height;
        let next_deadline = h.saturating_add(self.meta.params.job_timeout);
        let tm = self.training_mut(&id).expect("checked above");
        tm.escrow -= reward;
        tm.paid += share * accepted.len() as u64;
        tm.refunded += refund;
        tm.accepted += accepted.len() as u64;
        tm.rejected += rejected.len() as u64;
        tm.slashed += slashed;
        tm.checkpoint = checkpoint;
        tm.last_report = Some(report);
        tm.rounds_done += 1;
        let finished = tm.rounds_done == tm.rounds;
        // After the last round nothing is left (each round released its reward); the
        // escrow is zero and the job leaves the deadline index.
        if finished {
            tm.status = TrainingStatus::Finished;
        } else {
            tm.deadline = next_deadline;
        }
        self.deadlines.remove(&(t.deadline, DL_TRAIN, id.0));
        if !finished {
            self.deadlines.insert((next_deadline, DL_TRAIN, id.0));
        }
        self.events.push(format!(
            "training {} round {round}: {} accepted, {} rejected, {slashed} slashed{}",
            id.short(),
            accepted.len(),
            rejected.len(),
            if finished { "; finished" } else { "" }
        ));
        Ok(())
    }

    /// A round was not posted in time: the job ends and the owner gets the rest back.
    pub(super) fn training_timeout(&mut self, id: Hash256, h: u64) {
        let Some(t) = self.trainings.get(&id).cloned() else {
            return;
        };
        if t.status != TrainingStatus::Running || t.deadline > h {
            return;
        }
        self.credit(&t.owner, t.escrow);
        let tm = self.training_mut(&id).expect("exists");
        tm.refunded += tm.escrow;
        tm.escrow = 0;
        tm.status = TrainingStatus::Expired;
        self.events.push(format!(
            "training {} expired after {} rounds; owner refunded {}",
            id.short(),
            t.rounds_done,
            t.escrow
        ));
    }

    fn is_active_validator(&self, a: &Address) -> bool {
        self.validators.contains_key(a)
            && self.account(a).stake >= self.meta.params.min_validator_stake
    }
}
