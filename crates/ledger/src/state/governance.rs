//! Stake-weighted governance of the protocol parameters: proposals, votes, the tally at the
//! end of the voting period and execution after the delay.

use super::{
    err, id_bytes, upsert_vote, Key, Params, Proposal, ProposalStatus, Res, State, BPS, DL_EXECUTE,
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
                status: ProposalStatus::Voting,
                yes_stake: 0,
                no_stake: 0,
            },
        );
        self.dirty.insert(Key::Proposal(id));
        self.deadlines.insert((end, DL_VOTE_END, id_bytes(id)));
        Ok(())
    }

    /// A staker's vote (a later vote replaces its earlier one); it weighs the voter's stake
    /// at the tally.
    pub(super) fn vote(&mut self, from: Address, proposal: u64, yes: bool) -> Res {
        let p = self.proposals.get(&proposal).ok_or("unknown proposal")?;
        if p.status != ProposalStatus::Voting {
            return err("voting on this proposal has ended");
        }
        if self.account(&from).stake == 0 {
            return err("only stakers may vote");
        }
        self.dirty.insert(Key::Proposal(proposal));
        let p = self.proposals.get_mut(&proposal).expect("checked above");
        upsert_vote(&mut p.votes, from, yes);
        Ok(())
    }

    /// Counts the votes at the end of the voting period, by the voters' stake then.
    pub(super) fn tally(&mut self, id: u64, h: u64) {
        let Some(p) = self.proposals.get(&id).cloned() else {
            return;
        };
        if p.status != ProposalStatus::Voting {
            return;
        }
        let (mut yes, mut no) = (0u128, 0u128);
        for v in &p.votes {
            let s = self.account(&v.voter).stake as u128;
            if v.yes {
                yes += s
            } else {
                no += s
            }
        }
        let params = &self.meta.params;
        let total = self.meta.total_stake as u128;
        let quorum = (yes + no) * BPS as u128 >= total * params.quorum_bps as u128;
        let passed = quorum && yes * BPS as u128 > (yes + no) * params.threshold_bps as u128;
        let exec = h.saturating_add(params.execution_delay);
        self.dirty.insert(Key::Proposal(id));
        let pm = self.proposals.get_mut(&id).expect("exists");
        pm.yes_stake = yes as u64;
        pm.no_stake = no as u64;
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
        let before = self.meta.params.clone();
        let params = &mut self.meta.params;
        match p.change {
            ParamChange::Set { param, value } => *params.slot(param) = value,
            ParamChange::AllowModel { model } => {
                if let Err(i) = params.allowed_models.binary_search(&model) {
                    params.allowed_models.insert(i, model);
                }
            }
            ParamChange::DisallowModel { model } => {
                params.allowed_models.retain(|m| *m != model);
            }
        }
        self.dirty.insert(Key::Proposal(id));
        // A combination the single-parameter check could not see: undo it, and close the
        // proposal so that nothing (a restart included) retries it.
        if let Err(e) = self.meta.params.validate() {
            self.meta.params = before;
            self.proposals.get_mut(&id).expect("exists").status = ProposalStatus::Failed;
            self.events.push(format!("proposal {id} failed: {e}"));
            return;
        }
        self.proposals.get_mut(&id).expect("exists").status = ProposalStatus::Executed;
        self.events.push(format!("proposal {id} executed"));
    }
}
