//! Training jobs on the ledger: DiLoCo rounds whose contributors are paid or slashed once a
//! validator quorum has checked the coordinator's round.
//!
//! The chain does not re-execute training (the coordinator does, off chain, with
//! `deai_train::verify`, and validators replay its round from the evidence it serves with
//! `deai_train::audit`); it holds the escrow, checks who may propose which round, and
//! settles a proposed round (`train_round`) once validators holding more than two thirds
//! of the active stake accept it (`train_verdict`; the coordinator's stake counts as
//! accepting): the accepted contributors share the round's reward, the rejected ones are
//! slashed, the checkpoint hash is recorded. More than two thirds rejecting it slashes the
//! coordinator and ends the job, refunding the owner. A job whose round is not proposed and
//! settled within `job_timeout` blocks expires and the rest of its escrow goes back to the
//! owner.

use super::{err, upsert_vote, Key, Res, State, Vote, DL_TRAIN};
use crate::tx::{Address, DataShard, MAX_STR, MAX_TRAIN_WORKERS};
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
    /// A round was not posted and settled before its deadline; the rest of the escrow was
    /// refunded.
    Expired,
    /// A validator quorum rejected a proposed round: the coordinator was slashed and the
    /// rest of the escrow refunded.
    Rejected,
}

/// A round the coordinator proposed, waiting for the validators' verdicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRound {
    pub round: u32,
    pub checkpoint: Hash256,
    pub report: Hash256,
    #[serde(with = "crate::tx::hex_addrs")]
    pub accepted: Vec<Address>,
    #[serde(with = "crate::tx::hex_addrs")]
    pub rejected: Vec<Address>,
    /// Where the coordinator serves the round's report and evidence.
    pub url: String,
    pub proposed_at: u64,
    /// By validator key, ascending (the coordinator's own accepting vote included).
    pub votes: Vec<Vote>,
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
    /// The initial checkpoint, then the one each settled round produced.
    pub checkpoint: Hash256,
    /// The coordinator's commitment to round 0's challenge secret, given when the job opened.
    pub first_commitment: Hash256,
    /// Digest of the last settled round report.
    pub last_report: Option<Hash256>,
    /// The proposed round waiting for verdicts, if any.
    #[serde(default)]
    pub pending: Option<PendingRound>,
    pub rounds_done: u32,
    pub opened_at: u64,
    /// The height at whose end the next round times out.
    pub deadline: u64,
    pub status: TrainingStatus,
    /// Escrow not yet paid or refunded.
    pub escrow: u64,
    /// Paid to contributors so far.
    pub paid: u64,
    /// Paid to the validators who accepted settled rounds (`validator_fee_bps` of each
    /// round's reward, for judging it) and to the treasury (`treasury_bps`).
    pub fees: u64,
    /// Refunded to the owner (rounding remainders, rounds nobody passed, expiry).
    pub refunded: u64,
    /// Contributions accepted / rejected over all rounds.
    pub accepted: u64,
    pub rejected: u64,
    /// Taken from rejected contributors' stake.
    pub slashed: u64,
    /// The registered dataset shards it trains on.
    #[serde(default)]
    pub data: Vec<crate::tx::DataShard>,
    /// Accepted contributions per contributor (sorted; at most [`MAX_CREDITED`]
    /// contributors), the trainers' weights in the royalty of the model it produces.
    #[serde(default)]
    pub credits: Vec<Credit>,
}

/// Most contributors one training job credits for royalties.
pub const MAX_CREDITED: usize = 1_024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    #[serde(with = "crate::tx::hex_addr")]
    pub to: Address,
    pub accepted: u64,
}

impl TrainingJob {
    /// Escrow accounting: what was escrowed is paid, refunded or still held.
    pub(super) fn escrow_balanced(&self) -> bool {
        let total = self.rounds as u128 * self.reward_per_round as u128;
        self.paid as u128 + self.fees as u128 + self.refunded as u128 + self.escrow as u128 == total
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
        (checkpoint, first_commitment): (Hash256, Hash256),
        (rounds, workers, reward_per_round): (u32, u32, u64),
        coordinator: Address,
        data: &[DataShard],
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
        self.check_training_data(data)?;
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
                first_commitment,
                last_report: None,
                pending: None,
                rounds_done: 0,
                opened_at: h,
                deadline,
                status: TrainingStatus::Running,
                escrow,
                paid: 0,
                fees: 0,
                refunded: 0,
                accepted: 0,
                rejected: 0,
                slashed: 0,
                data: data.to_vec(),
                credits: Vec::new(),
            },
        );
        self.dirty.insert(Key::Training(job));
        self.deadlines.insert((deadline, DL_TRAIN, job.0));
        Ok(())
    }

    /// Proposes one round's result; it settles when a validator quorum accepts it
    /// ([`State::train_verdict`]), at once if the coordinator alone holds the quorum.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_round(
        &mut self,
        from: Address,
        id: Hash256,
        round: u32,
        checkpoint: Hash256,
        report: Hash256,
        (accepted, rejected): (&[Address], &[Address]),
        url: &str,
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
        if t.pending.is_some() {
            return err(format!(
                "round {round} is already proposed and waits for verdicts"
            ));
        }
        if url.len() > MAX_STR
            || !(url.starts_with("http://") || url.starts_with("https://"))
            || url.chars().any(|c| !c.is_ascii_graphic())
        {
            return err("the round's URL must be an http(s) URL of printable ASCII");
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
        // Contributors below the worker stake are listed anyway and not paid at settlement:
        // the lists are exactly the report's, which validators check.
        let h = self.meta.height;
        let deadline = h.saturating_add(self.meta.params.job_timeout);
        let tm = self.training_mut(&id).expect("checked above");
        tm.pending = Some(PendingRound {
            round,
            checkpoint,
            report,
            accepted: accepted.to_vec(),
            rejected: rejected.to_vec(),
            url: url.to_string(),
            proposed_at: h,
            votes: vec![Vote {
                voter: from,
                yes: true,
            }],
        });
        // The validators get a full window to check it.
        tm.deadline = deadline;
        self.deadlines.remove(&(t.deadline, DL_TRAIN, id.0));
        self.deadlines.insert((deadline, DL_TRAIN, id.0));
        self.events.push(format!(
            "training {} round {round} proposed: {} accepted, {} rejected",
            id.short(),
            accepted.len(),
            rejected.len()
        ));
        self.tally_training(id);
        Ok(())
    }

    /// A validator's verdict on the proposed round (the one whose report digest is
    /// `report`).
    pub(super) fn train_verdict(
        &mut self,
        from: Address,
        id: Hash256,
        round: u32,
        report: Hash256,
        accept: bool,
    ) -> Res {
        if !self.is_active_validator(&from) {
            return err("sender is not an active validator");
        }
        let t = self.trainings.get(&id).ok_or("unknown training job")?;
        if t.status != TrainingStatus::Running {
            return err(format!("training job is {:?}", t.status));
        }
        let p = t
            .pending
            .as_ref()
            .ok_or("no round of this job waits for verdicts")?;
        if p.round != round || p.report != report {
            return err(format!(
                "the proposed round is {} with report {}",
                p.round,
                p.report.short()
            ));
        }
        if p.votes.iter().any(|v| v.voter == from) {
            return err("validator already gave a verdict on this round");
        }
        let tm = self.training_mut(&id).expect("checked above");
        let p = tm.pending.as_mut().expect("checked above");
        upsert_vote(&mut p.votes, from, accept);
        self.tally_training(id);
        Ok(())
    }

    /// Settles or rejects the proposed round once more than two thirds of the active
    /// validator stake is on one side.
    fn tally_training(&mut self, id: Hash256) {
        let Some(p) = self.trainings.get(&id).and_then(|t| t.pending.clone()) else {
            return;
        };
        match self.quorum(&p.votes) {
            Some(false) => self.reject_training_round(id, &p),
            Some(true) => self.settle_training_round(id, &p),
            None => {}
        }
    }

    /// A quorum found the coordinator's round false: the coordinator loses `slash_bps` of its
    /// holdings (`reporter_bps` of it split among the rejecting validators, the rest
    /// burned), nobody is paid
    /// or slashed for the round, and the job ends with the rest of its escrow refunded.
    fn reject_training_round(&mut self, id: Hash256, p: &PendingRound) {
        let t = self.trainings[&id].clone();
        let held = self.account(&t.coordinator).holdings();
        let s = self.slash_holdings(&t.coordinator, 0);
        // Its delegators' pool loses the same share, burned.
        self.slash_pool(&t.coordinator, s, held);
        let rejecters: Vec<Address> = p.votes.iter().filter(|v| !v.yes).map(|v| v.voter).collect();
        let reward = super::bps_of(s, self.meta.params.reporter_bps);
        let each = reward / rejecters.len().max(1) as u64;
        for r in &rejecters {
            self.credit(r, each);
        }
        self.meta.burned += s - each * rejecters.len() as u64;
        self.credit(&t.owner, t.escrow);
        let tm = self.training_mut(&id).expect("exists");
        tm.refunded += tm.escrow;
        tm.escrow = 0;
        tm.pending = None;
        tm.status = TrainingStatus::Rejected;
        self.deadlines.remove(&(t.deadline, DL_TRAIN, id.0));
        self.events.push(format!(
            "training {} round {}: rejected by the validators; coordinator slashed {s}, owner refunded {}",
            id.short(),
            p.round,
            t.escrow
        ));
    }

    /// Settles the proposed round. Of the round's reward, `treasury_bps` goes to the
    /// treasury and `validator_fee_bps` to the validators whose verdicts accepted it (the
    /// coordinator's proposal included), in equal shares, for judging it, as for inference
    /// jobs; the accepted contributors share the rest equally (the remainder, or all of it
    /// when nobody passed or kept the worker stake, goes back to the owner). Each rejected
    /// contributor is slashed (`reporter_bps` to the coordinator, the rest burned).
    fn settle_training_round(&mut self, id: Hash256, p: &PendingRound) {
        let t = self.trainings[&id].clone();
        let (from, round, checkpoint, report) = (t.coordinator, p.round, p.checkpoint, p.report);
        let min = self.meta.params.min_worker_stake;
        // A contributor below the worker stake (never staked, or unstaked since) is not paid.
        let accepted: Vec<Address> = p
            .accepted
            .iter()
            .filter(|a| self.account(a).stake >= min)
            .copied()
            .collect();
        let rejected = &p.rejected;
        let reward = t.reward_per_round.min(t.escrow);
        let params = &self.meta.params;
        let treasury_cut = super::bps_of(reward, params.treasury_bps).min(reward);
        let judging = super::bps_of(reward, params.validator_fee_bps).min(reward - treasury_cut);
        let pool = reward - treasury_cut - judging;
        let judges: Vec<Address> = p.votes.iter().filter(|v| v.yes).map(|v| v.voter).collect();
        let each = judging / judges.len().max(1) as u64;
        // The division's remainder goes to the treasury.
        let treasury = treasury_cut + judging - each * judges.len() as u64;
        for v in &judges {
            self.pay_validator(v, each);
        }
        self.pay_treasury(treasury);
        let (share, refund) = match accepted.len() as u64 {
            0 => (0, pool),
            n => (pool / n, pool % n),
        };
        for a in &accepted {
            self.credit(a, share);
        }
        self.credit(&t.owner, refund);
        let mut slashed = 0u64;
        for r in rejected {
            let s = self.slash_holdings(r, 0);
            let to_coordinator = super::bps_of(s, self.meta.params.reporter_bps);
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
        let tm = self.training_mut(&id).expect("exists");
        tm.pending = None;
        tm.escrow -= reward;
        tm.paid += share * accepted.len() as u64;
        tm.fees += treasury_cut + judging;
        tm.refunded += refund;
        tm.accepted += accepted.len() as u64;
        for a in &accepted {
            match tm.credits.binary_search_by(|c| c.to.cmp(a)) {
                Ok(i) => tm.credits[i].accepted += 1,
                Err(i) if tm.credits.len() < MAX_CREDITED => tm.credits.insert(
                    i,
                    Credit {
                        to: *a,
                        accepted: 1,
                    },
                ),
                Err(_) => {}
            }
        }
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
        tm.pending = None;
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
