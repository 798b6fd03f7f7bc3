//! Inference jobs: opening one with escrow, the worker's receipt, challenges, validator
//! verdicts, and settlement (paying the worker, or refunding the client and slashing the
//! worker), plus the one price function both the ledger and the nodes bill by.

use super::{
    bps_of, err, upsert_vote, ChallengeRecord, Commit, Job, JobStatus, Key, Pov, ReceiptRecord,
    Res, Settlement, State, Vote, DL_JOB,
};
use crate::tx::Address;
use deai_types::Hash256;
use std::collections::BTreeMap;

/// What `tokens` tokens cost at `price_per_1k` per thousand: `tokens * price_per_1k / 1000`,
/// rounded up (a single token at any positive price costs at least 1), saturating at
/// `u64::MAX`. The ledger bills a receipt this way (capped by the job's escrow), so a client
/// or gateway that escrows `job_cost(max_tokens, price)` covers any receipt up to
/// `max_tokens`.
pub fn job_cost(tokens: u64, price_per_1k: u64) -> u64 {
    ((tokens as u128 * price_per_1k as u128).div_ceil(1000)).min(u64::MAX as u128) as u64
}

/// The stake a receipt billing `cost` locks until it settles: `cost x collateral_bps /
/// 10000`, rounded down, saturating at `u64::MAX` ([`Params::check_incentives`] says why).
/// Workers and gateways call it to know whether a worker can take a job.
///
/// [`Params::check_incentives`]: super::Params::check_incentives
pub fn collateral(cost: u64, collateral_bps: u64) -> u64 {
    ((cost as u128 * collateral_bps as u128) / super::BPS as u128).min(u64::MAX as u128) as u64
}

/// What a committee member commits to before it may reveal its verdict on `job`: its vote
/// and its proof of verification, bound to the member (a copied commitment is useless) and
/// blinded by its `salt` (without it, a vote with a guessable proof, such as a rejection
/// with none, could be read off the commitment before the reveals).
pub fn verdict_commitment(
    voter: &Address,
    job: &Hash256,
    accept: bool,
    pov: &Hash256,
    salt: &Hash256,
) -> Hash256 {
    Hash256::digest_parts(
        "deai-verdict-commit-v2",
        &[
            voter,
            job.as_bytes(),
            &[accept as u8],
            pov.as_bytes(),
            salt.as_bytes(),
        ],
    )
}

/// The salt a member blinds its commitment on `job` with: derived from its secret key, so
/// nobody else can compute it and the member can again after a restart.
pub fn verdict_salt(secret_key: &[u8; 32], job: &Hash256) -> Hash256 {
    Hash256::digest_parts("deai-verdict-salt-v1", &[secret_key, job.as_bytes()])
}

/// The tag of a proof of verification: what a committee member commits to and reveals, and
/// what the chain records for every judge of a job. A committee's revealed tags do not give
/// away the proofs themselves, which every validator judging the job after it is escalated
/// must reveal (the chain tags them and compares all tags as one group): so the proof a
/// committee opened cannot be copied by a validator that did not re-execute.
pub fn pov_tag(pov: &Hash256) -> Hash256 {
    Hash256::digest_parts("deai-pov-tag-v1", &[pov.as_bytes()])
}

/// The key every validator computes its proof of verification on `job` under
/// (`deai_proof::pov_digest`): the value of its beacon round (`round_value`) if the beacon
/// sampled it, which its committee used and the validators judging it after an escalation
/// must match; a fixed key for a job judged by every validator without being sampled (one
/// challenged by a client, or whose round got no value in time). `None` while a sampled
/// job's value is not known to the caller. The key only has to be the same for every
/// honest judge: a proof cannot be computed without the recomputed hidden rows.
pub fn pov_key(job: &Job, round_value: Option<Hash256>) -> Option<Hash256> {
    match job.sampled_at {
        Some(_) => round_value,
        None => Some(Hash256::digest_parts("deai-pov-unsampled-v1", &[])),
    }
}

impl State {
    fn job_mut(&mut self, j: &Hash256) -> Option<&mut Job> {
        self.dirty.insert(Key::Job(*j));
        self.jobs.get_mut(j)
    }

    /// Releases the collateral a job's receipt locked (it has settled).
    fn unlock_collateral(&mut self, r: &ReceiptRecord) {
        if let Some(w) = self.workers.get_mut(&r.worker) {
            w.locked = w.locked.saturating_sub(r.collateral);
            self.dirty.insert(Key::Worker(r.worker));
        }
    }

    fn set_job_deadline(&mut self, id: Hash256, old: u64, new: u64) {
        self.deadlines.remove(&(old, DL_JOB, id.0));
        self.deadlines.insert((new, DL_JOB, id.0));
    }

    /// Escrows `escrow` from the client for a job on `model`, optionally for one worker,
    /// brought by `app`; sent by the client itself or, for `client`, by a gateway it
    /// authorized (`contributors`).
    pub(super) fn open_job(
        &mut self,
        from: Address,
        job: Hash256,
        (model, max_tokens, escrow, worker): (Hash256, u32, u64, Option<Address>),
        app: Option<Hash256>,
        client: Option<Address>,
    ) -> Res {
        if self.jobs.contains_key(&job) {
            return err(format!("job {} already exists", job.short()));
        }
        if !self.meta.params.model_allowed(&model) {
            return err(format!(
                "model {} is not allowed by governance",
                model.short()
            ));
        }
        if escrow == 0 || max_tokens == 0 {
            return err("escrow and max_tokens must be positive");
        }
        if let Some(w) = worker {
            match self.workers.get(&w) {
                Some(wk) if wk.active && wk.models.contains(&model) => {}
                _ => return err("the named worker is not an active worker for this model"),
            }
        }
        // The app's fee and the gateway's are fixed now: a later change cannot reach an
        // escrow already given.
        let app_bps = match app {
            None => 0,
            Some(id) => match self.apps.get(&id) {
                Some(a) => a.fee_bps.min(self.meta.params.app_fee_cap_bps),
                None => return err(format!("unknown app {}", id.short())),
            },
        };
        let (payer, gateway) = match client {
            Some(c) if c != from => {
                self.check_allowance(&c, &from, escrow)?;
                (c, Some(from))
            }
            _ => (from, None),
        };
        let have = self.account(&payer).balance;
        if have < escrow {
            return err(format!("escrow: the client's balance {have} < {escrow}"));
        }
        if gateway.is_some() {
            self.spend_allowance(&payer, &from, escrow);
        }
        let gateway_bps = gateway.map_or(0, |_| self.meta.params.gateway_fee_bps);
        let royalty_bps = match self.royalties.contains_key(&model) {
            true => self.meta.params.royalty_bps,
            false => 0,
        };
        self.debit(&payer, escrow, "escrow")?;
        let h = self.meta.height;
        let deadline = h.saturating_add(self.meta.params.job_timeout);
        self.jobs.insert(
            job,
            Job {
                client: payer,
                model,
                max_tokens,
                escrow,
                worker,
                opened_at: h,
                deadline,
                status: JobStatus::Open,
                receipt: None,
                challenge: None,
                verdicts: Vec::new(),
                settlement: None,
                committee: Vec::new(),
                escalated: false,
                sampled_at: None,
                commits: Vec::new(),
                povs: Vec::new(),
                quorum_commits: Vec::new(),
                reveals_open: false,
                app,
                app_bps,
                gateway,
                gateway_bps,
                royalty_bps,
            },
        );
        self.dirty.insert(Key::Job(job));
        self.deadlines.insert((deadline, DL_JOB, job.0));
        Ok(())
    }

    /// The worker's receipt for an open job, billed at its price ([`job_cost`], capped by
    /// the escrow); the challenge window starts.
    pub(super) fn post_receipt(
        &mut self,
        from: Address,
        job: Hash256,
        receipt: Hash256,
        tokens: u32,
        pointer: &str,
    ) -> Res {
        let h = self.meta.height;
        let j = self.jobs.get(&job).ok_or("unknown job")?;
        if j.status != JobStatus::Open {
            return err(format!("job is {:?}, not open", j.status));
        }
        let w = self
            .workers
            .get(&from)
            .ok_or("sender is not a registered worker")?;
        if !w.active {
            return err("worker is inactive (slashed)");
        }
        // Receipts are judged under the profiles the chain accepts when they are posted.
        if !self.meta.params.profile_allowed(&w.profile) {
            return err(format!(
                "the worker's kernel profile {:?} is no longer accepted",
                w.profile
            ));
        }
        match j.worker {
            Some(assigned) if assigned != from => return err("job is assigned to another worker"),
            None if !w.models.contains(&j.model) => {
                return err("worker does not serve the job's model")
            }
            _ => {}
        }
        if tokens == 0 {
            return err("tokens must be positive");
        }
        let p = &self.meta.params;
        // The app's and the gateway's fees come on top of the cost, out of the escrow.
        let cap = super::billable(j.escrow, j.app_bps + j.gateway_bps);
        let cost = job_cost(tokens as u64, w.price_per_1k).min(cap);
        // Stake backs every receipt until it settles: the minimum, plus collateral that
        // grows with what the receipt bills (Params::check_incentives).
        let stake = self.account(&from).stake;
        if stake < p.min_worker_stake {
            return err(format!(
                "stake {stake} below the worker minimum {}",
                p.min_worker_stake
            ));
        }
        let collateral = collateral(cost, p.collateral_bps);
        let free = stake.saturating_sub(w.locked);
        if free < collateral {
            return err(format!(
                "free stake {free} (stake {stake}, {} locked) does not cover this receipt's \
                 collateral {collateral}",
                w.locked
            ));
        }
        let wm = self.workers.get_mut(&from).expect("checked above");
        wm.locked += collateral;
        self.dirty.insert(Key::Worker(from));
        let (old, new) = (
            j.deadline,
            h.saturating_add(self.meta.params.challenge_window),
        );
        let beacon_round = self.enroll_receipt(job);
        let jm = self.job_mut(&job).expect("checked above");
        jm.status = JobStatus::Receipted;
        jm.worker = Some(from);
        jm.deadline = new;
        jm.receipt = Some(ReceiptRecord {
            worker: from,
            digest: receipt,
            tokens,
            pointer: pointer.to_string(),
            posted_at: h,
            cost,
            collateral,
            beacon_round,
        });
        self.set_job_deadline(job, old, new);
        Ok(())
    }

    /// Challenges a receipt inside its window, posting the bond; every validator judges it
    /// now, within the verdict window. A sampled job cannot be challenged: its committee
    /// already re-executes it (and a dissent escalates it), and a worker that knows its
    /// receipt will be checked must not earn the reporter's share of its own slash through
    /// a second account.
    pub(super) fn challenge(&mut self, from: Address, job: Hash256) -> Res {
        let h = self.meta.height;
        let j = self.jobs.get(&job).ok_or("unknown job")?;
        if j.status != JobStatus::Receipted {
            return err(format!(
                "job is {:?}; only a receipted job can be challenged",
                j.status
            ));
        }
        if j.worker == Some(from) {
            return err("a worker cannot challenge its own receipt");
        }
        let old = j.deadline;
        let bond = self.meta.params.challenge_bond;
        self.debit(&from, bond, "challenge bond")?;
        let new = h.saturating_add(self.meta.params.verdict_window);
        let jm = self.job_mut(&job).expect("checked above");
        jm.status = JobStatus::Challenged;
        jm.deadline = new;
        jm.challenge = Some(ChallengeRecord {
            challenger: from,
            bond,
            at: h,
        });
        self.set_job_deadline(job, old, new);
        Ok(())
    }

    /// A validator's plain verdict, on a chain without a beacon: a receipted or challenged
    /// job is settled by more than two thirds of the active stake. On a chain with one,
    /// every verdict is sealed and opened with a proof of verification ([`Self::verdict_commit`],
    /// [`Self::verdict_reveal`]): a sampled job is judged by its committee alone (unanimity
    /// settles it, any disagreement escalates it to every validator), a challenged (or
    /// escalated) one by more than two thirds of the active stake.
    pub(super) fn verdict(&mut self, from: Address, job: Hash256, accept: bool) -> Res {
        let min = self.meta.params.min_validator_stake;
        let j = self.jobs.get(&job).ok_or("unknown job")?;
        if !self.validators.contains_key(&from) || self.account(&from).stake < min {
            return err("sender is not an active validator");
        }
        match j.status {
            JobStatus::Sampled if !j.committee.contains(&from) => {
                return err("sender is not on this job's committee")
            }
            JobStatus::Sampled => {
                return err(
                    "a sampled job is judged by commit and reveal (verdict_commit, then \
                     verdict_reveal with the proof of verification)",
                )
            }
            JobStatus::Receipted if self.meta.beacon.is_some() => {
                return err(
                    "the beacon has not sampled this job: only its committee, or every \
                     validator once it is challenged, may judge it",
                )
            }
            JobStatus::Challenged | JobStatus::Receipted => {}
            s => return err(format!("job is {s:?}; no verdict possible")),
        }
        if j.verdicts.iter().any(|v| v.voter == from) {
            return err("validator already gave a verdict on this job");
        }
        if j.commits.iter().any(|c| c.voter == from) {
            // Its vote is sealed: a plain one would let a member that committed to a
            // made-up proof vote (and be paid) without ever opening it.
            return err(
                "this member committed to a verdict on this job: open it with verdict_reveal",
            );
        }
        if self.meta.beacon.is_some() {
            // A plain vote carries no proof of verification: it would pay a validator that
            // never re-ran the job.
            return err(
                "a challenged job is judged by commit and reveal (verdict_commit, then \
                 verdict_reveal with the proof of verification, once the reveals open)",
            );
        }
        let jm = self.job_mut(&job).expect("checked above");
        upsert_vote(&mut jm.verdicts, from, accept);
        if let Some(v) = self.validators.get_mut(&from) {
            v.verdicts += 1;
        }
        self.dirty.insert(Key::Validator(from));
        self.settle_by_quorum(job);
        Ok(())
    }

    /// Settles a challenged (or escalated) job once more than two thirds of the active
    /// stake agree.
    fn settle_by_quorum(&mut self, job: Hash256) {
        if self.jobs[&job].status != JobStatus::Challenged
            && self.jobs[&job].status != JobStatus::Receipted
        {
            return;
        }
        match self.quorum(&self.jobs[&job].verdicts) {
            Some(false) => self.reject_job(job),
            Some(true) => self.accept_job(job),
            None => {}
        }
    }

    /// A committee member seals its verdict on a sampled job; on a chain with a beacon,
    /// any active validator seals its verdict on a challenged (or escalated) one.
    pub(super) fn verdict_commit(
        &mut self,
        from: Address,
        job: Hash256,
        commitment: Hash256,
    ) -> Res {
        let j = self.jobs.get(&job).ok_or("unknown job")?;
        if j.status == JobStatus::Challenged && self.meta.beacon.is_some() {
            return self.quorum_commit(from, job, commitment);
        }
        if j.status != JobStatus::Sampled {
            return err(format!(
                "job is {:?}; only a sampled or challenged job takes commitments",
                j.status
            ));
        }
        if !j.committee.contains(&from) {
            return err("sender is not on this job's committee");
        }
        let at = match j.commits.binary_search_by(|c| c.voter.cmp(&from)) {
            Ok(_) => return err("this member already committed"),
            Err(at) => at,
        };
        let h = self.meta.height;
        let window = self.meta.params.verdict_window;
        let jm = self.job_mut(&job).expect("checked above");
        jm.commits.insert(
            at,
            Commit {
                voter: from,
                commitment,
            },
        );
        // The last commitment opens the reveals: every member gets a whole verdict window
        // for its reveal, so a member committing at the deadline cannot make the others
        // miss it.
        let old = jm.deadline;
        if jm.commits.len() == jm.committee.len() {
            let new = old.max(h.saturating_add(window));
            jm.deadline = new;
            self.set_job_deadline(job, old, new);
        }
        Ok(())
    }

    /// An active validator seals its verdict on a challenged (or escalated) job: the
    /// commitment of [`verdict_commitment`] to its vote and its proof of verification itself
    /// (not its tag). The reveals open once every active validator has committed (or, for a
    /// committee member, voted or committed on the committee), or when the commit phase
    /// runs out; no commitment is taken after, so nobody can copy a revealed proof.
    fn quorum_commit(&mut self, from: Address, job: Hash256, commitment: Hash256) -> Res {
        let min = self.meta.params.min_validator_stake;
        if !self.validators.contains_key(&from) || self.account(&from).stake < min {
            return err("sender is not an active validator");
        }
        let j = &self.jobs[&job];
        if j.worker == Some(from) {
            // A worker with a validator's stake would accept its own cheat. (Its client may
            // judge, as any validator: a validator running a capability challenge is the
            // client of its job, and on a small validator set its vote may be needed for a
            // quorum.)
            return err("the job's worker cannot judge it");
        }
        if j.reveals_open {
            return err("the commitments on this job are closed: its reveals are open");
        }
        if j.verdicts.iter().any(|v| v.voter == from) {
            return err("validator already gave a verdict on this job");
        }
        if j.commits.iter().any(|c| c.voter == from) {
            return err(
                "this member committed to a verdict on this job: open it with verdict_reveal",
            );
        }
        if j.committee.binary_search(&from).is_ok() {
            // Its commitment would be to the tag of its proof, the committee's kind: one sent
            // while the job was sampled and landing after it escalated must not be taken
            // for a judge's (a member that never committed was slashed for missing).
            return err("a committee member judges this job by its committee commitment only");
        }
        let at = match j.quorum_commits.binary_search_by(|c| c.voter.cmp(&from)) {
            Ok(_) => return err("this validator already committed"),
            Err(at) => at,
        };
        let jm = self.job_mut(&job).expect("checked above");
        jm.quorum_commits.insert(
            at,
            Commit {
                voter: from,
                commitment,
            },
        );
        if self.every_judge_committed(&job) {
            self.open_reveals(job);
        }
        Ok(())
    }

    /// Whether every judge of `job` outside its committee (every active validator but the
    /// committee's members and the job's worker) has sealed its verdict.
    fn every_judge_committed(&self, job: &Hash256) -> bool {
        let j = &self.jobs[job];
        self.active_validators().iter().all(|(a, _)| {
            j.worker == Some(*a)
                || j.committee.binary_search(a).is_ok()
                || j.quorum_commits
                    .binary_search_by(|c| c.voter.cmp(a))
                    .is_ok()
        })
    }

    /// Whether every validator that sealed a verdict on `job` (on its committee or after)
    /// has opened it.
    fn every_seal_opened(&self, job: &Hash256) -> bool {
        let j = &self.jobs[job];
        j.commits.iter().chain(&j.quorum_commits).all(|c| {
            j.verdicts
                .binary_search_by(|v| v.voter.cmp(&c.voter))
                .is_ok()
        })
    }

    /// Opens the reveals of a challenged job's sealed verdicts: every validator that
    /// committed gets a whole verdict window to reveal.
    fn open_reveals(&mut self, id: Hash256) {
        let h = self.meta.height;
        let window = self.meta.params.verdict_window;
        let jm = self.job_mut(&id).expect("exists");
        jm.reveals_open = true;
        let old = jm.deadline;
        let new = old.max(h.saturating_add(window));
        jm.deadline = new;
        self.set_job_deadline(id, old, new);
    }

    /// A validator opens its sealed verdict on a challenged job once the reveals are open:
    /// its vote counts toward the quorum, the tag of its proof joins the committee's (if
    /// any) in one group, and only the accepting judges whose tag is the majority's are
    /// paid ([`Self::accept_job`]).
    fn quorum_reveal(
        &mut self,
        from: Address,
        job: Hash256,
        accept: bool,
        pov: Hash256,
        salt: Hash256,
    ) -> Res {
        let j = &self.jobs[&job];
        if !j.reveals_open {
            return err(
                "reveals open once every judge off the committee has committed or the commit \
                 phase ends",
            );
        }
        if j.verdicts.iter().any(|v| v.voter == from) {
            return err("this validator already revealed");
        }
        let c = j
            .quorum_commits
            .iter()
            .find(|c| c.voter == from)
            .expect("checked by the caller");
        if c.commitment != verdict_commitment(&from, &job, accept, &pov, &salt) {
            return err("the reveal does not open this validator's commitment");
        }
        let jm = self.job_mut(&job).expect("checked above");
        upsert_vote(&mut jm.verdicts, from, accept);
        jm.povs.push(Pov {
            voter: from,
            pov: pov_tag(&pov),
        });
        if let Some(v) = self.validators.get_mut(&from) {
            v.verdicts += 1;
        }
        self.dirty.insert(Key::Validator(from));
        // Settled once every seal is open (or at the reveal deadline), not at the first
        // quorum: a proposer could otherwise pick which reveals make it, and so which proof
        // is the majority's.
        if self.every_seal_opened(&job) {
            self.settle_by_quorum(job);
        }
        Ok(())
    }

    /// A committee member opens its commitment, once every member has committed (so none
    /// can copy another's proof of verification). When all have revealed: the same vote
    /// and the same proof from every member settles the job; anything else escalates it.
    pub(super) fn verdict_reveal(
        &mut self,
        from: Address,
        job: Hash256,
        accept: bool,
        pov: Hash256,
        salt: Hash256,
    ) -> Res {
        let h = self.meta.height;
        let j = self.jobs.get(&job).ok_or("unknown job")?;
        if j.status == JobStatus::Challenged && j.quorum_commits.iter().any(|c| c.voter == from) {
            return self.quorum_reveal(from, job, accept, pov, salt);
        }
        let escalated = j.status == JobStatus::Challenged && j.escalated;
        if j.status != JobStatus::Sampled && !escalated {
            return err(format!(
                "job is {:?}; only a sampled or escalated job takes reveals",
                j.status
            ));
        }
        let Some(c) = j.commits.iter().find(|c| c.voter == from) else {
            return err("sender has no commitment on this job");
        };
        // Once escalated, the commitments are closed: a member that committed opens its
        // own (its vote counts toward the quorum, its proof toward its pay).
        if !escalated && j.commits.len() < j.committee.len() {
            return err("reveals open once every committee member has committed");
        }
        if j.povs.iter().any(|p| p.voter == from) {
            return err("this member already revealed");
        }
        if c.commitment != verdict_commitment(&from, &job, accept, &pov, &salt) {
            return err("the reveal does not open this member's commitment");
        }
        let since = j.sampled_at;
        let jm = self.job_mut(&job).expect("checked above");
        upsert_vote(&mut jm.verdicts, from, accept);
        jm.povs.push(Pov { voter: from, pov });
        if let Some(v) = self.validators.get_mut(&from) {
            v.verdicts += 1;
            if let Some(at) = since {
                v.committee_votes += 1;
                v.latency_blocks += h.saturating_sub(at);
            }
        }
        self.dirty.insert(Key::Validator(from));
        if escalated {
            if self.every_seal_opened(&job) {
                self.settle_by_quorum(job);
            }
            return Ok(());
        }
        let j = &self.jobs[&job];
        if j.povs.len() < j.committee.len() {
            return Ok(());
        }
        let yes = j.verdicts.iter().filter(|v| v.yes).count();
        let same_pov = j.povs.windows(2).all(|w| w[0].pov == w[1].pov);
        if yes == j.verdicts.len() && same_pov {
            self.accept_job(job);
        } else if yes == 0 {
            self.reject_job(job);
        } else if !same_pov {
            self.escalate(job, "its members' proofs of verification differ");
        } else {
            self.escalate(job, "its committee disagreed");
        }
        Ok(())
    }

    /// The tag of the proof of verification that judges holding a strict majority of the
    /// stake of those who voted `yes` and revealed a proof agree on, if any. Weighed by
    /// stake, not counted: many small identities do not outvote one large honest judge.
    fn proof_majority(&self, j: &Job, yes: bool) -> Option<Hash256> {
        let mut weights: BTreeMap<Hash256, u128> = BTreeMap::new();
        let mut total = 0u128;
        for p in &j.povs {
            if j.verdicts
                .iter()
                .any(|v| v.voter == p.voter && v.yes == yes)
            {
                let w = self.account(&p.voter).stake as u128;
                *weights.entry(p.pov).or_default() += w;
                total += w;
            }
        }
        let (best, w) = weights.into_iter().max_by_key(|(_, w)| *w)?;
        (w * 2 > total).then_some(best)
    }

    /// The judges that voted `yes` with a proof of verification other than the majority's
    /// ([`Self::proof_majority`]), and whether there was such a majority (without one,
    /// nobody can be told apart: no judge that voted `yes` with a proof is paid).
    fn off_majority(&self, j: &Job, yes: bool) -> (Vec<Address>, bool) {
        let best = self.proof_majority(j, yes);
        let off = j
            .povs
            .iter()
            .filter(|p| {
                j.verdicts
                    .iter()
                    .any(|v| v.voter == p.voter && v.yes == yes)
            })
            .filter(|p| best != Some(p.pov))
            .map(|p| p.voter)
            .collect();
        (off, best.is_some())
    }

    /// Hands a sampled job to every validator: the verdict window starts again and more
    /// than two thirds of the active stake decides (at once, when the committee's votes
    /// already make that quorum: nobody else may be left to vote). On a chain with a beacon
    /// that window is the commit phase of [`Self::quorum_commit`].
    pub(super) fn escalate(&mut self, id: Hash256, why: &str) {
        let h = self.meta.height;
        let window = self.meta.params.verdict_window;
        let jm = self.job_mut(&id).expect("exists");
        let old = jm.deadline;
        jm.status = JobStatus::Challenged;
        jm.escalated = true;
        jm.deadline = h.saturating_add(window);
        let new = jm.deadline;
        self.set_job_deadline(id, old, new);
        self.events
            .push(format!("job {} escalated: {why}", id.short()));
        self.settle_by_quorum(id);
        if self.jobs[&id].status == JobStatus::Challenged
            && self.meta.beacon.is_some()
            && self.every_judge_committed(&id)
        {
            self.open_reveals(id);
        }
    }

    /// Takes `verdict_slash` from each validator that voted `!outcome` on a settled job
    /// (burned; counted in its record).
    fn slash_wrong_verdicts(&mut self, j: &Job, outcome: bool) -> u64 {
        let amount = self.meta.params.verdict_slash;
        let mut burned = 0;
        for v in j.verdicts.iter().filter(|v| v.yes != outcome) {
            burned += self.slash_validator(&v.voter, amount);
            if let Some(val) = self.validators.get_mut(&v.voter) {
                val.wrong += 1;
            }
        }
        burned
    }

    /// Takes up to `amount` from a validator's stake and unbonding funds, burned; returns
    /// what was taken.
    /// Takes `amount` from a validator's holdings and the same share of its delegators'
    /// pool, and burns both; returns what was taken in all.
    fn slash_validator(&mut self, who: &Address, amount: u64) -> u64 {
        let held = self.account(who).holdings();
        let take = self.take_holdings(who, amount);
        self.meta.burned += take;
        let pool = self.slash_pool(who, take, held);
        if let Some(v) = self.validators.get_mut(who) {
            v.slashed += take + pool;
        }
        self.dirty.insert(Key::Validator(*who));
        take + pool
    }

    /// Pays `fee` in equal parts to `voters` (the remainder to the treasury); returns what
    /// they got.
    fn pay_voters(&mut self, voters: &[Address], fee: u64) -> u64 {
        if voters.is_empty() {
            return 0;
        }
        let each = fee / voters.len() as u64;
        for v in voters {
            self.pay_validator(v, each);
        }
        each * voters.len() as u64
    }

    /// The side of `votes` holding more than two thirds of the active validator stake, if
    /// either does (votes of keys that are no longer active validators weigh nothing).
    pub(super) fn quorum(&self, votes: &[Vote]) -> Option<bool> {
        let active: BTreeMap<Address, u64> = self.active_validators().into_iter().collect();
        let total: u128 = active.values().map(|s| *s as u128).sum();
        let (mut yes, mut no) = (0u128, 0u128);
        for v in votes {
            let s = *active.get(&v.voter).unwrap_or(&0) as u128;
            if v.yes {
                yes += s
            } else {
                no += s
            }
        }
        if no * 3 > total * 2 {
            Some(false)
        } else if yes * 3 > total * 2 {
            Some(true)
        } else {
            None
        }
    }

    /// Pays the worker, the validators who accepted it, the model's royalty and the
    /// treasury out of the cost, and the app's and gateway's fees on top of it; refunds the
    /// rest of the escrow; a failed challenger's bond goes to the worker.
    pub(super) fn accept_job(&mut self, id: Hash256) {
        let h = self.meta.height;
        let j = self.jobs[&id].clone();
        let r = j.receipt.clone().expect("accepted jobs have receipts");
        self.unlock_collateral(&r);
        let p = &self.meta.params;
        let cost = r.cost.min(j.escrow);
        // Params::validate keeps the two shares within the cost; the clamps make that
        // impossible to break even if a bad parameter set slipped through.
        let treasury_cut = bps_of(cost, p.treasury_bps).min(cost);
        let mut validator_fee = bps_of(cost, p.validator_fee_bps).min(cost - treasury_cut);
        // At the share fixed when the job opened; none if governance ended the royalty since.
        let royalty_cut = match self.royalties.contains_key(&j.model) {
            true => bps_of(cost, j.royalty_bps).min(cost - treasury_cut - validator_fee),
            false => 0,
        };
        let worker_paid = cost - treasury_cut - validator_fee - royalty_cut;
        // post_receipt capped the cost so that both fees fit in the escrow.
        let app_paid = bps_of(cost, j.app_bps).min(j.escrow - cost);
        let gateway_paid = bps_of(cost, j.gateway_bps).min(j.escrow - cost - app_paid);
        let refund = j.escrow - cost - app_paid - gateway_paid;
        // Accepting judges are paid only with a proof of verification the majority of them
        // (by stake) shares; a proven mismatch is slashed like a wrong verdict. (Plain votes,
        // on a chain without a beacon, carry no proof and are paid.)
        let (off, majority) = self.off_majority(&j, true);
        let (unpaid, unproven) = match majority {
            true => (off.clone(), off),
            false => (off, Vec::new()),
        };
        let voters: Vec<Address> = j
            .verdicts
            .iter()
            .filter(|v| v.yes && !unpaid.contains(&v.voter))
            .map(|v| v.voter)
            .collect();
        // What the validators actually got; the rest goes to the treasury.
        let paid = self.pay_voters(&voters, validator_fee);
        let royalty = self.pay_royalty(&j.model, royalty_cut);
        let treasury = treasury_cut + validator_fee - paid + royalty_cut - royalty;
        validator_fee = paid;
        self.pay_surcharges(
            &j.client,
            j.app.map(|a| (a, app_paid)),
            j.gateway.map(|g| (g, gateway_paid)),
        );
        let mut burned = self.slash_wrong_verdicts(&j, true);
        let amount = self.meta.params.verdict_slash;
        for v in &unproven {
            burned += self.slash_validator(v, amount);
            if let Some(val) = self.validators.get_mut(v) {
                val.wrong += 1;
            }
        }
        self.credit(&r.worker, worker_paid);
        self.credit(&j.client, refund);
        self.pay_treasury(treasury);
        let mut bond_to_worker = 0;
        if let Some(c) = &j.challenge {
            bond_to_worker = c.bond;
            self.credit(&r.worker, c.bond);
        }
        if let Some(w) = self.workers.get_mut(&r.worker) {
            w.jobs_done += 1;
            w.tokens_served += r.tokens as u64;
            w.earned += worker_paid + bond_to_worker;
        }
        self.dirty.insert(Key::Worker(r.worker));
        let jm = self.job_mut(&id).expect("exists");
        jm.status = JobStatus::Accepted;
        jm.settlement = Some(Settlement {
            height: h,
            worker_paid: worker_paid + bond_to_worker,
            validator_fee,
            treasury_cut: treasury,
            client_refund: refund,
            burned,
            royalty,
            app_paid,
            gateway_paid,
            ..Default::default()
        });
        self.deadlines.remove(&(j.deadline, DL_JOB, id.0));
        self.events.push(format!("job {} accepted", id.short()));
    }

    /// Refunds the client, slashes the worker (at least the receipt's collateral; stake
    /// first, then unbonding funds), pays a challenger `reporter_bps` of the slash plus its
    /// bond back and the rejecting validators the job's validator fee out of the slash,
    /// slashes the validators that accepted it, and burns the rest.
    fn reject_job(&mut self, id: Hash256) {
        let h = self.meta.height;
        let j = self.jobs[&id].clone();
        let worker = j.worker.expect("rejected jobs have a worker");
        let collateral = j.receipt.as_ref().map_or(0, |r| r.collateral);
        if let Some(r) = &j.receipt {
            self.unlock_collateral(r);
        }
        let slash = self.slash_holdings(&worker, collateral);
        let p = &self.meta.params;
        // A challenger earns `reporter_bps` of the slash. The rejecting validators earn what
        // accepting would have paid them (the job's validator fee), never more, so that a
        // false rejection is no better a business than an honest acceptance.
        let reward = match &j.challenge {
            Some(_) => bps_of(slash, p.reporter_bps),
            None => 0,
        };
        let cost = j.receipt.as_ref().map_or(0, |r| r.cost.min(j.escrow));
        let fee = bps_of(cost, p.validator_fee_bps).min(slash - reward);
        let mut challenger_paid = 0;
        if let Some(c) = &j.challenge {
            self.credit(&c.challenger, c.bond + reward);
            challenger_paid = c.bond + reward;
        }
        // A rejecting judge is paid only if its proof of verification is the rejecting
        // majority's (an honest re-run of a bad receipt yields the same rows; a receipt
        // nobody could fetch yields none for all): one that rejected without re-running
        // earns nothing. It is not slashed for it: a judge that could not fetch the receipt
        // has no proof through no fault of its own.
        let (unpaid, _) = self.off_majority(&j, false);
        let voters: Vec<Address> = j
            .verdicts
            .iter()
            .filter(|v| !v.yes && !unpaid.contains(&v.voter))
            .map(|v| v.voter)
            .collect();
        let paid = self.pay_voters(&voters, fee);
        let burned = slash - reward - paid;
        // Counted in `meta.burned` by `slash_validator`.
        let wrong = self.slash_wrong_verdicts(&j, false);
        self.meta.burned += burned;
        self.credit(&j.client, j.escrow);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.jobs_rejected += 1;
            w.slashed += slash;
            w.active = false;
        }
        self.dirty.insert(Key::Worker(worker));
        let jm = self.job_mut(&id).expect("exists");
        jm.status = JobStatus::Rejected;
        jm.settlement = Some(Settlement {
            height: h,
            client_refund: j.escrow,
            slashed: slash,
            burned: burned + wrong,
            validator_fee: paid,
            challenger_paid,
            ..Default::default()
        });
        self.deadlines.remove(&(j.deadline, DL_JOB, id.0));
        self.events.push(format!(
            "job {} rejected; worker slashed {slash}",
            id.short()
        ));
    }

    /// The height after which a receipt whose beacon round still has no value is handed to
    /// every validator: the challenge window, its round's length and a verdict window after
    /// it was posted.
    fn beacon_patience(&self, j: &Job) -> u64 {
        let p = &self.meta.params;
        let period = self.meta.beacon.as_ref().map_or(0, |b| b.period);
        let posted = j.receipt.as_ref().map_or(0, |r| r.posted_at);
        posted
            .saturating_add(p.challenge_window)
            .saturating_add(period)
            .saturating_add(p.verdict_window)
    }

    /// Whether a receipted job still waits for its beacon round's value.
    fn awaits_beacon(&self, j: &Job) -> bool {
        match j.receipt.as_ref().and_then(|r| r.beacon_round) {
            Some(round) => self.beacon_round(round).is_none_or(|b| b.value.is_none()),
            None => false,
        }
    }

    /// A job's phase ran out at the end of block `h`: an open job expires; a receipted one
    /// is accepted (once its beacon round has a value); a sampled one escalates (its
    /// committee members that did not commit, or once all had, did not reveal, are slashed
    /// `verdict_slash`); a challenged one is unresolved.
    pub(super) fn job_timeout(&mut self, id: Hash256, h: u64) {
        let Some(j) = self.jobs.get(&id).cloned() else {
            return;
        };
        if j.deadline != h && j.deadline > h {
            return;
        }
        match j.status {
            JobStatus::Open => {
                self.credit(&j.client, j.escrow);
                let jm = self.job_mut(&id).expect("exists");
                jm.status = JobStatus::Expired;
                jm.settlement = Some(Settlement {
                    height: h,
                    client_refund: j.escrow,
                    ..Default::default()
                });
                self.events
                    .push(format!("job {} expired; client refunded", id.short()));
            }
            // Not settled before its round's beacon says whether it is re-executed: wait
            // (the value's arrival reschedules it), and if the beacon stalls for a whole
            // round plus a verdict window, every validator judges it.
            JobStatus::Receipted if self.awaits_beacon(&j) => {
                let give_up = self.beacon_patience(&j);
                if h >= give_up {
                    self.escalate(id, "its beacon round got no value in time");
                } else {
                    let jm = self.job_mut(&id).expect("exists");
                    jm.deadline = give_up;
                    self.set_job_deadline(id, j.deadline, give_up);
                }
            }
            JobStatus::Receipted => self.accept_job(id),
            JobStatus::Sampled => {
                // Missed: not committing while others waited, or, once all had committed,
                // not revealing.
                let amount = self.meta.params.verdict_slash;
                let all_committed = j.commits.len() == j.committee.len();
                for m in &j.committee {
                    let missed = if all_committed {
                        j.povs.iter().all(|p| p.voter != *m)
                    } else {
                        j.commits.iter().all(|c| c.voter != *m)
                    };
                    if missed {
                        self.slash_validator(m, amount);
                        if let Some(v) = self.validators.get_mut(m) {
                            v.missed += 1;
                        }
                    }
                }
                self.escalate(id, "its committee missed the deadline");
            }
            // The commit phase ran out: the validators that committed reveal now.
            JobStatus::Challenged if self.meta.beacon.is_some() && !j.reveals_open => {
                self.open_reveals(id);
            }
            // The reveal window ran out: a judge that sealed a verdict and kept it back (to
            // see which side wins first) loses `verdict_slash`; the opened votes settle it
            // if they make a quorum.
            JobStatus::Challenged if self.meta.beacon.is_some() => {
                let amount = self.meta.params.verdict_slash;
                for c in &j.quorum_commits {
                    if j.verdicts.iter().all(|v| v.voter != c.voter) {
                        self.slash_validator(&c.voter, amount);
                        if let Some(v) = self.validators.get_mut(&c.voter) {
                            v.missed += 1;
                        }
                    }
                }
                self.settle_by_quorum(id);
                if self.jobs[&id].status == JobStatus::Challenged {
                    self.unresolve(id, h, &j);
                }
            }
            JobStatus::Challenged => self.unresolve(id, h, &j),
            _ => {}
        }
    }

    /// No quorum by a challenged job's deadline: the client's escrow and the challenger's
    /// bond are refunded and the worker's collateral released.
    fn unresolve(&mut self, id: Hash256, h: u64, j: &Job) {
        self.credit(&j.client, j.escrow);
        let bond = j.challenge.as_ref().map_or(0, |c| c.bond);
        if let Some(c) = &j.challenge {
            self.credit(&c.challenger, c.bond);
        }
        if let Some(r) = &j.receipt {
            self.unlock_collateral(r);
        }
        let jm = self.job_mut(&id).expect("exists");
        jm.status = JobStatus::Unresolved;
        jm.settlement = Some(Settlement {
            height: h,
            client_refund: j.escrow,
            challenger_paid: bond,
            ..Default::default()
        });
        self.events.push(format!(
            "job {} unresolved; escrow and bond refunded",
            id.short()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::job_cost;

    #[test]
    fn job_cost_rounds_up_and_saturates() {
        // Exact thousands.
        assert_eq!(job_cost(1000, 1), 1);
        assert_eq!(job_cost(2000, 50), 100);
        assert_eq!(job_cost(0, 50), 0);
        assert_eq!(job_cost(1234, 0), 0);
        // Any fraction of a unit is billed as a whole one.
        assert_eq!(job_cost(1, 1), 1);
        assert_eq!(job_cost(1001, 1), 2);
        assert_eq!(job_cost(999, 1), 1);
        assert_eq!(job_cost(1500, 3), 5); // 4.5
        assert_eq!(job_cost(10, 150), 2); // 1.5
        assert_eq!(job_cost(100, 7), 1); // 0.7
                                         // The product does not overflow before the division ...
        assert_eq!(job_cost(u32::MAX as u64, u64::MAX), u64::MAX);
        assert_eq!(job_cost(u64::MAX, 1000), u64::MAX);
        assert_eq!(job_cost(u64::MAX, 1), u64::MAX.div_ceil(1000));
        assert_eq!(job_cost(1_000_000, u64::MAX / 1000), u64::MAX / 1000 * 1000);
        // ... and a cost beyond u64 saturates.
        assert_eq!(job_cost(u64::MAX, 1001), u64::MAX);
        assert_eq!(job_cost(u64::MAX, u64::MAX), u64::MAX);
    }
}
