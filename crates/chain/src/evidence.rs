//! Checking equivocation evidence before the ledger slashes on it.
//!
//! A `ReportEquivocation` transaction carries a simplex activity (two conflicting votes of
//! one validator in one view) as commonware encodes it. The ledger cannot check consensus
//! signatures (it must not depend on the consensus engine), so the chain does: a node admits
//! such a transaction to its mempool, proposes it and votes for a block that carries it only
//! if [`EvidenceCheck::check`] passes. The check is a pure function of the bytes and the
//! validator set of the activity's epoch, looked up only among epochs up to the one of the
//! block being checked, so every honest node gives the same answer.
//!
//! Views restart in every epoch, so the ledger's `view` of a report is the [`round_id`]
//! `epoch << 32 | view`, which grows across epochs.

use crate::block::Digest;
use crate::epoch::Epochs;
use crate::scheme::{address, Scheme};
use commonware_consensus::simplex::types::{Activity, Attributable};
use commonware_consensus::{Epochable, Viewable};
use commonware_parallel::Sequential;
use deai_ledger::{SignedTx, TxKind};

/// The ledger's id of a consensus round: `epoch << 32 | view` (`None` past 32 bits each).
pub fn round_id(epoch: u64, view: u64) -> Option<u64> {
    (epoch < 1 << 32 && view < 1 << 32).then_some(epoch << 32 | view)
}

/// Verifies equivocation evidence against the validator set of its epoch.
#[derive(Clone)]
pub struct EvidenceCheck {
    epochs: Epochs,
}

impl EvidenceCheck {
    pub fn new(epochs: Epochs) -> Self {
        EvidenceCheck { epochs }
    }

    /// Is `evidence` a validly signed pair of conflicting votes by `offender` in the round
    /// `round` ([`round_id`]) of an epoch no later than `max_epoch`?
    pub fn check(
        &self,
        offender: &[u8; 32],
        round: u64,
        evidence: &[u8],
        max_epoch: u64,
    ) -> Result<(), String> {
        // Any set's config bounds the decoding the same way: an activity is two votes.
        let cfg = <Scheme as commonware_cryptography::certificate::Verifier>::certificate_codec_config_unbounded();
        let a = <Activity<Scheme, Digest> as commonware_codec::Decode>::decode_cfg(
            bytes::Bytes::copy_from_slice(evidence),
            &cfg,
        )
        .map_err(|e| format!("evidence does not decode as a simplex activity: {e}"))?;
        let (signer, v) = match &a {
            Activity::ConflictingNotarize(c) => (c.signer(), c.view()),
            Activity::ConflictingFinalize(c) => (c.signer(), c.view()),
            Activity::NullifyFinalize(c) => (c.signer(), c.view()),
            _ => return Err("evidence is a simplex activity but not an equivocation".into()),
        };
        let epoch = a.epoch().get();
        if epoch > max_epoch {
            return Err(format!(
                "evidence is from epoch {epoch}, after this block's epoch {max_epoch}"
            ));
        }
        let set = self.epochs.get(epoch).ok_or_else(|| {
            format!("evidence is from epoch {epoch}, which this node has not reached")
        })?;
        let pk = set
            .participants
            .get(signer.get() as usize)
            .ok_or("evidence names a signer outside the epoch's validator set")?;
        if address(pk) != *offender {
            return Err(format!(
                "evidence was signed by {}, not by the reported validator",
                hex::encode(address(pk))
            ));
        }
        if round_id(epoch, v.get()) != Some(round) {
            return Err(format!(
                "evidence is for epoch {epoch} view {}, not round {round}",
                v.get()
            ));
        }
        // Each vote is one ed25519 signature, verified on its own: the rng is never drawn
        // from, so the answer is the same on every node.
        let mut rng = commonware_utils::rng::TestRng::new(0);
        if !a.verify(&mut rng, &*set.verifier, &Sequential) {
            return Err("evidence signatures do not verify".into());
        }
        Ok(())
    }

    /// Checks `t` if it is a `ReportEquivocation` (other kinds pass).
    pub fn check_tx(&self, t: &SignedTx, max_epoch: u64) -> Result<(), String> {
        match &t.tx.kind {
            TxKind::ReportEquivocation {
                offender,
                view,
                evidence,
            } => self.check(offender, *view, evidence, max_epoch),
            _ => Ok(()),
        }
    }

    /// Checks every `ReportEquivocation` among `txs` of a block at `height`; the first bad
    /// one is an error.
    pub fn check_txs(&self, txs: &[SignedTx], height: u64) -> Result<(), String> {
        let max_epoch = self.epochs.epoch_of(height);
        for (i, t) in txs.iter().enumerate() {
            self.check_tx(t, max_epoch)
                .map_err(|e| format!("transaction {i}: {e}"))?;
        }
        Ok(())
    }
}
