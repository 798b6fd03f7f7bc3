//! Re-checking a closed round from its evidence, without trusting the coordinator.
//!
//! When a round closes, the coordinator keeps its [`RoundEvidence`]: every contribution it
//! admitted, every opening it fetched while challenging them (bytes, or why the worker did
//! not answer), and the signed contributions it refused for a slashable reason. With the
//! round's start checkpoint and outer-optimizer state (both content-addressed, named in the
//! report) and the challenge secret the report reveals, [`audit_round`] replays the round's
//! closing on a fresh [`Coordinator`] and requires the same challenge, the same verdicts,
//! the same payees and slashes, the same merged checkpoint and outer state. A coordinator
//! whose report pays a contribution that fails its challenge, slashes one without proof,
//! merges something else, or reveals a secret other than the one it committed to fails the
//! audit.
//!
//! What an audit cannot see: contributions the coordinator never admitted (a worker it
//! ignored is neither paid nor slashed, and says so off chain), whether a worker it calls
//! unreachable really was, and collusion: the coordinator knows its secret from the start,
//! so a worker it colludes with can grind its commitments until the challenge lands on the
//! one window it computed, and the coordinator can steer the draw by leaving contributions
//! out. The commitment defends against workers, not against the coordinator; mixing in a
//! randomness beacon fixed after the close (a finalized block digest) is the next step.
//! The audit checks a report against itself and its evidence; that the report is the one
//! recorded on the ledger is for the caller to check (its digest,
//! `TrainCoordinator::report_digest`).

use crate::data::Shard;
use crate::diloco::{Contribution, JobSpec, Opener};
use crate::model::Weights;
use crate::verify::{challenge_commitment, Coordinator, RoundReport};
use crate::{Result, TrainError};
use deai_types::Hash256;

pub use crate::evidence::{
    Opened, RoundEvidence, MAX_EVIDENCE_CONTRIBUTION, MAX_EVIDENCE_ITEMS, MAX_EVIDENCE_OPENING,
};

/// Answers openings from recorded evidence: the first answer recorded for each step.
struct Replay<'a>(&'a [Opened]);

impl Opener for Replay<'_> {
    fn open(&self, step: u32) -> Result<Vec<u8>> {
        match self.0.iter().find(|(s, _)| *s == step) {
            Some((_, Ok(b))) => Ok(b.clone()),
            Some((_, Err(e))) => Err(TrainError::Rejected(e.clone())),
            None => Err(TrainError::Rejected(format!(
                "the evidence holds no opening of step {step}"
            ))),
        }
    }
}

/// What an auditor holds for one round besides the evidence.
pub struct AuditInputs<'a> {
    pub job: &'a JobSpec,
    /// The round's start checkpoint (`report.checkpoint`) and outer-optimizer momentum
    /// (`report.outer_state`, stored as weights of the same shapes).
    pub checkpoint: &'a Weights,
    pub outer_state: &'a Weights,
    /// The job's training shards, in job order.
    pub shards: &'a [Shard],
    /// The held-out shard, to re-check `eval_loss`; without it the loss is not checked.
    pub val: Option<&'a Shard>,
    /// The challenge commitment published before the round's contributions: the previous
    /// report's `next_challenge_commitment`, or for round 0 what `/train/v1/round` showed.
    pub committed: Hash256,
}

/// Replays `report`'s round from `evidence` and returns the auditor's own report; any
/// disagreement with the coordinator's report is an error naming the first field found.
pub fn audit_round(
    a: &AuditInputs,
    report: &RoundReport,
    evidence: &RoundEvidence,
) -> Result<RoundReport> {
    fn fail<T>(what: String) -> Result<T> {
        Err(TrainError::Rejected(format!("audit: {what}")))
    }
    if evidence.round != report.round {
        return fail(format!(
            "evidence of round {} for the report of round {}",
            evidence.round, report.round
        ));
    }
    if a.checkpoint.hash() != report.checkpoint {
        return fail("the checkpoint given is not the round's".into());
    }
    if a.outer_state.hash() != report.outer_state {
        return fail("the outer state given is not the round's".into());
    }
    if report.challenge_commitment != a.committed
        || challenge_commitment(&report.challenge_secret) != a.committed
    {
        return fail(
            "the revealed challenge secret does not match the commitment published before the round"
                .into(),
        );
    }
    let mut co = Coordinator::resume(
        a.job.clone(),
        a.checkpoint.clone(),
        a.outer_state,
        report.round,
        report.challenge_secret,
        a.shards.to_vec(),
        a.val.cloned(),
    )?;
    co.eval_windows = evidence.eval_windows as usize;
    for b in &evidence.contributions {
        if let Err(e) = co.submit(b) {
            let who = Contribution::worker_of(b)
                .map(hex::encode)
                .unwrap_or_default();
            return fail(format!(
                "the coordinator admitted {who}'s contribution, refused here: {e}"
            ));
        }
    }
    for b in &evidence.slash_proofs {
        match co.submit(b) {
            Err(e) if e.reason.slashable() => {}
            other => {
                return fail(format!(
                    "a slash proof does not prove a slashable fault here: {other:?}"
                ))
            }
        }
    }
    let replays: Vec<([u8; 32], Replay)> = evidence
        .openings
        .iter()
        .map(|(w, o)| (*w, Replay(o)))
        .collect();
    let openers: Vec<([u8; 32], &dyn Opener)> = replays
        .iter()
        .map(|(w, r)| (*w, r as &dyn Opener))
        .collect();
    let mine = co.close_round(&openers)?;
    let same = |what: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            fail(format!("{what} differs"))
        }
    };
    same("the challenge", mine.challenge == report.challenge)?;
    same("the accepted list", mine.accepted == report.accepted)?;
    same("the paid keys", mine.paid_keys == report.paid_keys)?;
    same("the slashed keys", mine.slashed_keys == report.slashed_keys)?;
    same(
        "the merged checkpoint",
        mine.next_checkpoint == report.next_checkpoint,
    )?;
    same(
        "the outer state",
        mine.next_outer_state == report.next_outer_state,
    )?;
    // JSON prints every non-finite float as null: such losses compare equal.
    let same_loss =
        |x: f32, y: f32| x.to_bits() == y.to_bits() || !(x.is_finite() || y.is_finite());
    same(
        "the reported train loss",
        same_loss(mine.train_loss, report.train_loss),
    )?;
    if a.val.is_some() {
        same("the eval loss", same_loss(mine.eval_loss, report.eval_loss))?;
    }
    Ok(mine)
}
