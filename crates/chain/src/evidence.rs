//! Checking equivocation evidence before the ledger slashes on it.
//!
//! A `ReportEquivocation` transaction carries a simplex activity (two conflicting votes of
//! one validator in one view) as commonware encodes it. The ledger cannot check consensus
//! signatures (it must not depend on the consensus engine), so the chain does: a node admits
//! such a transaction to its mempool, proposes it and votes for a block that carries it only
//! if [`EvidenceCheck::check`] passes. The check is a pure function of the bytes and the
//! genesis validator set, so every honest node gives the same answer.

use crate::app::Scheme;
use crate::block::Digest;
use crate::node::{address, NAMESPACE};
use commonware_consensus::simplex::types::{Activity, Attributable};
use commonware_consensus::Viewable;
use commonware_cryptography::ed25519::PublicKey;
use commonware_parallel::Sequential;
use commonware_utils::ordered::Set;
use deai_ledger::{SignedTx, TxKind};

/// Verifies equivocation evidence against the (fixed, genesis) validator set.
#[derive(Clone)]
pub struct EvidenceCheck {
    participants: Set<PublicKey>,
    scheme: Scheme,
}

impl EvidenceCheck {
    pub fn new(participants: Set<PublicKey>) -> Self {
        EvidenceCheck {
            scheme: Scheme::verifier(NAMESPACE, participants.clone()),
            participants,
        }
    }

    /// Is `evidence` a validly signed pair of conflicting votes by `offender` in `view`?
    pub fn check(&self, offender: &[u8; 32], view: u64, evidence: &[u8]) -> Result<(), String> {
        let cfg =
            commonware_cryptography::certificate::Verifier::certificate_codec_config(&self.scheme);
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
        let pk = self
            .participants
            .get(signer.get() as usize)
            .ok_or("evidence names a signer outside the validator set")?;
        if address(pk) != *offender {
            return Err(format!(
                "evidence was signed by {}, not by the reported validator",
                hex::encode(address(pk))
            ));
        }
        if v.get() != view {
            return Err(format!("evidence is for view {}, not {view}", v.get()));
        }
        // Each vote is one ed25519 signature, verified on its own: the rng is never drawn
        // from, so the answer is the same on every node.
        let mut rng = commonware_utils::rng::TestRng::new(0);
        if !a.verify(&mut rng, &self.scheme, &Sequential) {
            return Err("evidence signatures do not verify".into());
        }
        Ok(())
    }

    /// Checks `t` if it is a `ReportEquivocation` (other kinds pass).
    pub fn check_tx(&self, t: &SignedTx) -> Result<(), String> {
        match &t.tx.kind {
            TxKind::ReportEquivocation {
                offender,
                view,
                evidence,
            } => self.check(offender, *view, evidence),
            _ => Ok(()),
        }
    }

    /// Checks every `ReportEquivocation` among `txs`; the first bad one is an error.
    pub fn check_txs(&self, txs: &[SignedTx]) -> Result<(), String> {
        for (i, t) in txs.iter().enumerate() {
            self.check_tx(t)
                .map_err(|e| format!("transaction {i}: {e}"))?;
        }
        Ok(())
    }
}
