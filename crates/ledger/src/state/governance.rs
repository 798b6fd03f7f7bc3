//! Stake-weighted governance of the protocol parameters: proposals, votes, the tally at the
//! end of the voting period and execution after the delay.

use super::{
    err, id_bytes, Key, Params, Proposal, ProposalStatus, Res, StakeVote, State, BPS, DL_EXECUTE,
    DL_VOTE_END,
};
use crate::tx::{Address, ParamChange};

impl State {
    /// A staker proposes a parameter change; voting runs for `voting_period` blocks.
    pub(super) fn propose(&mut self, from: Address, change: &ParamChange) -> Res {
        if self.account(&from).stake == 0 {
            return err("only stakers may propose");
        }
        match change {
            ParamChange::Set { param, value } => Params::check(*param, *value)?,
            ParamChange::AllowModel { .. } | ParamChange::DisallowModel { .. } => {}
            ParamChange::AllowProfile { profile } if profile.is_empty() => {
                return err("a kernel profile id must not be empty")
            }
            ParamChange::AllowProfile { .. } => {}
            ParamChange::DisallowProfile { profile } => {
                if self.meta.params.profiles.len() == 1 && self.meta.params.profile_allowed(profile)
                {
                    return err("the last accepted kernel profile cannot be disallowed");
                }
            }
            ParamChange::SetRoyalty { beneficiaries, .. } => {
                Self::check_beneficiaries(beneficiaries)?
            }
            // Whether the job finished (and the treasury holds the grant) is checked again
            // when the proposal executes.
            ParamChange::AllowTrainedModel { training, .. } => {
                if !self.trainings.contains_key(training) {
                    return err(format!("unknown training job {}", training.short()));
                }
            }
            ParamChange::Grant { amount, .. } if *amount == 0 => {
                return err("a grant must be positive")
            }
            ParamChange::Grant { .. } => {}
        }
        let h = self.meta.height;
        let id = self.meta.next_proposal;
        self.meta.next_proposal += 1;
        let end = h.saturating_add(self.meta.params.voting_period);
        self.proposals.insert(
            id,
            Proposal {
                id,
                proposer: from,
                change: change.clone(),
                created: h,
                voting_end: end,
                execute_at: None,
                votes: Vec::new(),
                total_stake: self.meta.total_stake.saturating_add(self.meta.delegated),
                status: ProposalStatus::Voting,
                yes_stake: 0,
                no_stake: 0,
            },
        );
        self.dirty.insert(Key::Proposal(id));
        self.deadlines.insert((end, DL_VOTE_END, id_bytes(id)));
        Ok(())
    }

    /// A staker's vote (a later vote replaces its earlier one), weighing its stake now.
    /// Stake bonded after the proposal opened cannot vote on it, so nobody can stake (or
    /// borrow stake) just for one tally; stake unstaked after voting stays slashable for
    /// the unbonding period, which outlasts any vote.
    pub(super) fn vote(&mut self, from: Address, proposal: u64, yes: bool) -> Res {
        let p = self.proposals.get(&proposal).ok_or("unknown proposal")?;
        if p.status != ProposalStatus::Voting {
            return err("voting on this proposal has ended");
        }
        let created = p.created;
        let acct = self.account(&from);
        // Its delegations made before the proposal opened, and whether it is a validator
        // whose pool has some: they weigh when the vote ends (`tally`).
        let delegations = self.delegations_of(&from);
        let delegates = delegations.iter().any(|(v, _, value)| {
            *value > 0 && self.delegation(&from, v).is_some_and(|d| d.since < created)
        });
        let has_pool = self.validators.get(&from).is_some_and(|v| v.pool > 0);
        if acct.stake == 0 && delegations.is_empty() && !has_pool {
            return err("only stakers and delegators may vote");
        }
        // `>=`: stake bonded in the proposal's own block (a Stake after the Propose) is
        // not in its quorum base either.
        let own = if acct.bonded_at < created {
            acct.stake
        } else {
            0
        };
        if own == 0 && !delegates && !has_pool {
            return err(format!(
                "stake was added at height {} after proposal {proposal} opened at {created}; \
                 only stake bonded (or delegated) before a proposal votes on it",
                acct.bonded_at
            ));
        }
        self.dirty.insert(Key::Proposal(proposal));
        let p = self.proposals.get_mut(&proposal).expect("checked above");
        let vote = StakeVote {
            voter: from,
            yes,
            stake: own,
        };
        match p.votes.binary_search_by(|v| v.voter.cmp(&from)) {
            Ok(i) => p.votes[i] = vote,
            Err(i) => p.votes.insert(i, vote),
        }
        Ok(())
    }

    /// Counts the votes at the end of the voting period by the stake each weighed when it
    /// was cast, against all stake when the proposal opened.
    pub(super) fn tally(&mut self, id: u64, h: u64) {
        let Some(p) = self.proposals.get(&id).cloned() else {
            return;
        };
        if p.status != ProposalStatus::Voting {
            return;
        }
        let (mut yes, mut no) = (0u128, 0u128);
        for v in &p.votes {
            if v.yes {
                yes += v.stake as u128
            } else {
                no += v.stake as u128
            }
        }
        // Each delegation made before the proposal opened weighs what it is worth now, once:
        // with its delegator's vote if it voted, else with its validator's.
        let voted: std::collections::BTreeMap<Address, bool> =
            p.votes.iter().map(|v| (v.voter, v.yes)).collect();
        for ((d, v), del) in self.delegations.iter() {
            if del.since >= p.created {
                continue;
            }
            let value = self.share_value(v, del.shares) as u128;
            match voted.get(d).or_else(|| voted.get(v)) {
                Some(true) => yes += value,
                Some(false) => no += value,
                None => {}
            }
        }
        let params = &self.meta.params;
        let total = p.total_stake as u128;
        let quorum = (yes + no) * BPS as u128 >= total * params.quorum_bps as u128;
        let passed = quorum && yes * BPS as u128 > (yes + no) * params.threshold_bps as u128;
        let exec = h.saturating_add(params.execution_delay);
        self.dirty.insert(Key::Proposal(id));
        let pm = self.proposals.get_mut(&id).expect("exists");
        pm.yes_stake = yes.min(u64::MAX as u128) as u64;
        pm.no_stake = no.min(u64::MAX as u128) as u64;
        if passed {
            pm.status = ProposalStatus::Passed;
            pm.execute_at = Some(exec);
            self.deadlines.insert((exec, DL_EXECUTE, id_bytes(id)));
            self.events
                .push(format!("proposal {id} passed; executes at {exec}"));
        } else {
            pm.status = ProposalStatus::Rejected;
            self.events.push(format!("proposal {id} rejected"));
        }
    }

    /// Applies a passed proposal once its execution delay is over.
    pub(super) fn execute_proposal(&mut self, id: u64) {
        let Some(p) = self.proposals.get(&id).cloned() else {
            return;
        };
        if p.status != ProposalStatus::Passed {
            return;
        }
        self.dirty.insert(Key::Proposal(id));
        let applied = match &p.change {
            ParamChange::SetRoyalty {
                model,
                beneficiaries,
            } => {
                self.set_royalty(*model, beneficiaries);
                Ok(())
            }
            ParamChange::AllowTrainedModel { model, training } => {
                self.allow_trained_model(*model, *training)
            }
            ParamChange::Grant { to, amount } => self.grant(*to, *amount),
            change => self.change_params(change),
        };
        if let Err(e) = applied {
            self.proposals.get_mut(&id).expect("exists").status = ProposalStatus::Failed;
            self.events.push(format!("proposal {id} failed: {e}"));
            return;
        }
        self.proposals.get_mut(&id).expect("exists").status = ProposalStatus::Executed;
        self.events.push(format!("proposal {id} executed"));
    }

    /// Applies a change to the parameters, or undoes it: a combination the
    /// single-parameter check could not see, or a validator minimum that would leave too
    /// little stake to reach verdicts, closes the proposal as failed so that nothing (a
    /// restart included) retries it.
    fn change_params(&mut self, change: &ParamChange) -> Res {
        let before = self.meta.params.clone();
        let params = &mut self.meta.params;
        match change {
            ParamChange::Set { param, value } => *params.slot(*param) = *value,
            ParamChange::AllowModel { model } => {
                if let Err(i) = params.allowed_models.binary_search(model) {
                    params.allowed_models.insert(i, *model);
                }
            }
            ParamChange::DisallowModel { model } => {
                params.allowed_models.retain(|m| m != model);
            }
            ParamChange::AllowProfile { profile } => {
                if let Err(i) = params.profiles.binary_search(profile) {
                    params.profiles.insert(i, profile.clone());
                }
            }
            ParamChange::DisallowProfile { profile } => {
                params.profiles.retain(|p| p != profile);
            }
            ParamChange::SetRoyalty { .. }
            | ParamChange::AllowTrainedModel { .. }
            | ParamChange::Grant { .. } => unreachable!("not a parameter change"),
        }
        let checked = self
            .meta
            .params
            .validate_for(self.meta.epoch_length)
            .and_then(|()| self.check_validator_liveness(&before));
        if checked.is_err() {
            self.meta.params = before;
        }
        checked
    }

    /// A new validator minimum must leave at least two thirds of the stake that counts
    /// under `before` counting, or verdicts (and the validator set) could stall for good.
    fn check_validator_liveness(&self, before: &Params) -> Result<(), String> {
        let now: u128 = self.active_validators().iter().map(|v| v.1 as u128).sum();
        let min = before.min_validator_stake;
        let was: u128 = self
            .validators
            .keys()
            .map(|a| self.account(a).stake)
            .filter(|s| *s >= min)
            .map(|s| s as u128)
            .sum();
        if now * 3 < was * 2 {
            return Err(format!(
                "min_validator_stake {} would leave validators holding {now} of the {was} \
                 stake that votes on verdicts now (less than two thirds)",
                self.meta.params.min_validator_stake
            ));
        }
        Ok(())
    }
}
