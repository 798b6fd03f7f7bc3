//! A block: its validity, applying it, the per-transaction dispatcher and the deadlines
//! that fall due at its end.

use super::{
    err, u64_of, Key, Res, State, DL_EXECUTE, DL_JOB, DL_TRAIN, DL_UNBOND, DL_UNDELEGATE,
    DL_VOTE_END,
};
use crate::tx::{Address, SignedTx, Tx, TxKind, MAX_TX_BYTES};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 10_000;

/// Why a block cannot be applied. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block height {got} does not follow {have}")]
    Height { have: u64, got: u64 },
    #[error("{0} transactions exceed the block limit {MAX_BLOCK_TXS}")]
    TooManyTxs(usize),
    #[error("transaction {index}: {reason}")]
    Tx { index: usize, reason: String },
}

/// What one transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxOutcome {
    pub id: Hash256,
    /// `None` when the action took effect, else why it did not (fee and nonce still count).
    pub error: Option<String>,
}

/// What a block did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResult {
    pub height: u64,
    pub state_root: Hash256,
    pub outcomes: Vec<TxOutcome>,
    /// Jobs and proposals that reached an outcome at the end of this block.
    pub events: Vec<String>,
}

impl State {
    /// Checks everything about `tx` that makes a block containing it invalid, given the
    /// sender's expected nonce. Signatures are checked separately (in a batch).
    fn check_static(&self, tx: &SignedTx, expected_nonce: u64) -> Res {
        let t = &tx.tx;
        if t.chain != self.meta.chain_id {
            return err("wrong chain id");
        }
        if t.nonce != expected_nonce {
            return err(format!(
                "nonce {} but the account expects {expected_nonce}",
                t.nonce
            ));
        }
        if t.fee < self.meta.params.min_fee {
            return err(format!(
                "fee {} below the minimum {}",
                t.fee, self.meta.params.min_fee
            ));
        }
        if tx.to_bytes().len() > MAX_TX_BYTES {
            return err("transaction too large");
        }
        Ok(())
    }

    /// Mempool admission: the checks that make a block invalid, with `pending_fees` the
    /// fees of the sender's transactions admitted before this one: the sender's balance
    /// must cover them all.
    pub fn check_tx(&self, tx: &SignedTx, expected_nonce: u64, pending_fees: u64) -> Res {
        self.check_static(tx, expected_nonce)?;
        tx.verify_signature()?;
        let balance = self.account(&tx.tx.from).balance;
        let fees = pending_fees as u128 + tx.tx.fee as u128;
        if (balance as u128) < fees {
            return err(format!(
                "balance {balance} does not cover the fees of this and the sender's pending \
                 transactions ({fees})"
            ));
        }
        Ok(())
    }

    /// Whether `txs` form a valid block on top of this state (signatures included): among
    /// other things, each sender's balance before the block covers the fees of all its
    /// transactions in it (they are charged before any of them acts).
    pub fn validate_block(&self, txs: &[SignedTx]) -> Result<(), BlockError> {
        if txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTxs(txs.len()));
        }
        let mut senders: BTreeMap<Address, (u64, u128)> = BTreeMap::new();
        for (i, tx) in txs.iter().enumerate() {
            let from = tx.tx.from;
            let (n, fees) = senders
                .entry(from)
                .or_insert_with(|| (self.account(&from).nonce, 0));
            self.check_static(tx, *n)
                .map_err(|reason| BlockError::Tx { index: i, reason })?;
            *n += 1;
            *fees += tx.tx.fee as u128;
            let balance = self.account(&from).balance;
            if *fees > balance as u128 {
                return Err(BlockError::Tx {
                    index: i,
                    reason: format!(
                        "the sender's balance {balance} does not cover the fees of its \
                         transactions in this block ({fees})"
                    ),
                });
            }
        }
        verify_signatures(txs)
    }

    /// Applies block `height` with `txs`. On error nothing changed.
    pub fn apply_block(
        &mut self,
        height: u64,
        txs: &[SignedTx],
    ) -> Result<BlockResult, BlockError> {
        if height != self.meta.height + 1 {
            return Err(BlockError::Height {
                have: self.meta.height,
                got: height,
            });
        }
        self.validate_block(txs)?;
        self.meta.height = height;
        self.dirty.insert(Key::Meta);
        // Every fee first: validation checked each sender can pay all of its own, so no
        // action in the block (a transfer, a stake) can leave a fee unpaid.
        for tx in txs {
            self.pay_fee(&tx.tx);
        }
        let mut outcomes = Vec::with_capacity(txs.len());
        for tx in txs {
            let error = self.execute(tx).err();
            outcomes.push(TxOutcome { id: tx.id(), error });
        }
        self.end_block(height);
        self.flush();
        Ok(BlockResult {
            height,
            state_root: self.root,
            outcomes,
            events: std::mem::take(&mut self.events),
        })
    }

    /// Runs one transaction of a valid block (its nonce and fee already counted): the
    /// handler of its kind acts or says why not.
    fn execute(&mut self, tx: &SignedTx) -> Res {
        let t = &tx.tx;
        let from = t.from;
        match &t.kind {
            TxKind::Transfer { to, amount } => self.transfer(from, to, *amount),
            TxKind::Stake { amount } => self.stake(from, *amount),
            TxKind::Unstake { amount } => self.unstake(from, *amount),
            TxKind::RegisterWorker {
                models,
                profile,
                hardware,
                price_per_1k,
                endpoint,
            } => self.register_worker(from, models, profile, hardware, *price_per_1k, endpoint),
            TxKind::RegisterValidator { endpoint, p2p } => {
                self.register_validator(from, endpoint, p2p)
            }
            TxKind::OpenJob {
                job,
                model,
                max_tokens,
                escrow,
                worker,
                app,
                client,
            } => self.open_job(
                from,
                *job,
                (*model, *max_tokens, *escrow, *worker),
                *app,
                *client,
            ),
            TxKind::PostReceipt {
                job,
                receipt,
                tokens,
                pointer,
            } => self.post_receipt(from, *job, *receipt, *tokens, pointer),
            TxKind::Challenge { job } => self.challenge(from, *job),
            TxKind::Verdict { job, accept } => self.verdict(from, *job, *accept),
            TxKind::ReportEquivocation { offender, view, .. } => {
                self.report_equivocation(from, *offender, *view)
            }
            TxKind::OpenTraining {
                job,
                checkpoint,
                commitment,
                rounds,
                workers,
                reward_per_round,
                coordinator,
                data,
            } => self.open_training(
                from,
                *job,
                (*checkpoint, *commitment),
                (*rounds, *workers, *reward_per_round),
                *coordinator,
                data,
            ),
            TxKind::TrainVerdict {
                job,
                round,
                report,
                accept,
            } => self.train_verdict(from, *job, *round, *report, *accept),
            TxKind::TrainRound {
                job,
                round,
                checkpoint,
                report,
                accepted,
                rejected,
                url,
            } => self.train_round(
                from,
                *job,
                *round,
                *checkpoint,
                *report,
                (accepted, rejected),
                url,
            ),
            TxKind::Propose { change } => self.propose(from, change),
            TxKind::BeaconShare { round, signature } => self.beacon_share(from, *round, signature),
            TxKind::VerdictCommit { job, commitment } => {
                self.verdict_commit(from, *job, *commitment)
            }
            TxKind::VerdictReveal {
                job,
                accept,
                pov,
                salt,
            } => self.verdict_reveal(from, *job, *accept, *pov, *salt),
            TxKind::Vote { proposal, yes } => self.vote(from, *proposal, *yes),
            TxKind::RegisterDataset { license, shards } => {
                self.register_dataset(from, license, shards)
            }
            TxKind::RegisterApp { name, fee_bps } => self.register_app(from, name, *fee_bps),
            TxKind::Authorize {
                gateway,
                limit,
                expires,
            } => self.authorize(from, *gateway, *limit, *expires),
            TxKind::Delegate { validator, amount } => self.delegate(from, *validator, *amount),
            TxKind::Undelegate {
                validator,
                amount,
                to,
            } => self.undelegate(from, *validator, *amount, *to),
        }
    }

    /// Bumps the sender's nonce and moves the fee to the treasury (validation made sure the
    /// balance covers it).
    fn pay_fee(&mut self, t: &Tx) {
        let acct = self.acct_mut(&t.from);
        acct.nonce += 1;
        let fee = t.fee.min(acct.balance);
        acct.balance -= fee;
        self.pay_treasury(fee);
    }

    // ----- end of block -----------------------------------------------------------------

    fn end_block(&mut self, h: u64) {
        self.close_beacon_round(h);
        while let Some(first) = self.deadlines.get_min().copied().filter(|d| d.0 <= h) {
            self.deadlines.remove(&first);
            let (_, kind, id) = first;
            match kind {
                DL_UNBOND => self.release_unbonding(id, h),
                DL_JOB => self.job_timeout(Hash256(id), h),
                DL_VOTE_END => self.tally(u64_of(&id), h),
                DL_EXECUTE => self.execute_proposal(u64_of(&id)),
                DL_TRAIN => self.training_timeout(Hash256(id), h),
                DL_UNDELEGATE => self.release_leaving(id, h),
                _ => unreachable!("only the six kinds are inserted"),
            }
        }
        if self.is_epoch_end(h) {
            self.settle_pool_weights();
            let next = self.next_validator_set();
            // With no staked validator left the chain could never finalize again: keep the
            // old set, which can still finalize the unstake being undone.
            if next.is_empty() {
                self.events.push(format!(
                    "epoch {}: no validator meets the minimum stake, the set is unchanged",
                    self.epoch_of(h) + 1
                ));
            } else if next != self.meta.validator_set {
                self.events.push(format!(
                    "epoch {}: validator set of {} (was {})",
                    self.epoch_of(h) + 1,
                    next.len(),
                    self.meta.validator_set.len()
                ));
                self.meta.validator_set = next;
            }
        }
    }
}

/// Verifies every signature in a block strictly, as [`SignedTx::verify_signature`] does
/// (`verify_strict`: no weak keys, no small-order or non-canonical points, so a signature
/// has one valid form and a transaction one id). A batch check would accept some of those.
fn verify_signatures(txs: &[SignedTx]) -> Result<(), BlockError> {
    for (i, tx) in txs.iter().enumerate() {
        tx.verify_signature().map_err(|reason| BlockError::Tx {
            index: i,
            reason: reason.into(),
        })?;
    }
    Ok(())
}
