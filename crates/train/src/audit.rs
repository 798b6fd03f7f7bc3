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
use deai_types::codec::{Reader, Writer};
use deai_types::Hash256;
use std::cell::RefCell;

/// Largest contribution an evidence file may hold.
pub const MAX_EVIDENCE_CONTRIBUTION: usize = 64 << 20;
/// Largest opening (a train state is 12 bytes per parameter).
pub const MAX_EVIDENCE_OPENING: usize = 512 << 20;
/// Most contributions, workers, proofs and openings per worker in one evidence file.
pub const MAX_EVIDENCE_ITEMS: usize = 4096;

/// One opening as the coordinator received it: the step, and the bytes or why there were
/// none.
pub type Opened = (u32, std::result::Result<Vec<u8>, String>);

/// What a round's closing used, as the coordinator received it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundEvidence {
    pub round: u32,
    /// Evaluation windows of the report's `eval_loss`.
    pub eval_windows: u32,
    /// Canonical bytes of the admitted contributions, in worker-key order.
    pub contributions: Vec<Vec<u8>>,
    /// Per worker with an opening URL: each opening asked for, in order, and its bytes or
    /// the reason there were none.
    pub openings: Vec<([u8; 32], Vec<Opened>)>,
    /// Signed contributions refused at submission for a slashable reason.
    pub slash_proofs: Vec<Vec<u8>>,
}

impl RoundEvidence {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(b"DRE1");
        w.u32(self.round).u32(self.eval_windows);
        w.u32(self.contributions.len() as u32);
        for c in &self.contributions {
            w.bytes(c);
        }
        w.u32(self.openings.len() as u32);
        for (worker, opened) in &self.openings {
            w.raw(worker);
            w.u32(opened.len() as u32);
            for (step, r) in opened {
                w.u32(*step);
                match r {
                    Ok(b) => w.u8(1).bytes(b),
                    Err(e) => w.u8(0).str(e),
                };
            }
        }
        w.u32(self.slash_proofs.len() as u32);
        for p in &self.slash_proofs {
            w.bytes(p);
        }
        w.into_bytes()
    }

    /// Decodes evidence; malformed, truncated, oversized or trailing input is an error.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |e: deai_types::codec::DecodeError| TrainError::Decode(format!("evidence: {e}"));
        let mut r = Reader::new(b);
        if r.raw(4, "magic").map_err(bad)? != b"DRE1" {
            return Err(TrainError::Decode("evidence: bad magic".into()));
        }
        let round = r.u32("round").map_err(bad)?;
        let eval_windows = r.u32("eval windows").map_err(bad)?;
        let items = |r: &mut Reader, what| r.count(what, MAX_EVIDENCE_ITEMS).map_err(bad);
        let n = items(&mut r, "contributions")?;
        let mut contributions = Vec::with_capacity(n);
        for _ in 0..n {
            let c = r.bytes("contribution", MAX_EVIDENCE_CONTRIBUTION);
            contributions.push(c.map_err(bad)?.to_vec());
        }
        let n = items(&mut r, "workers")?;
        let mut openings = Vec::with_capacity(n);
        for _ in 0..n {
            let worker = r.arr("worker").map_err(bad)?;
            let m = items(&mut r, "openings")?;
            let mut opened = Vec::with_capacity(m);
            for _ in 0..m {
                let step = r.u32("step").map_err(bad)?;
                let res = match r.u8("opened").map_err(bad)? {
                    1 => Ok(r
                        .bytes("opening", MAX_EVIDENCE_OPENING)
                        .map_err(bad)?
                        .to_vec()),
                    0 => Err(r.str("opening error", 4096).map_err(bad)?),
                    t => return Err(TrainError::Decode(format!("evidence: opening tag {t}"))),
                };
                opened.push((step, res));
            }
            openings.push((worker, opened));
        }
        let n = items(&mut r, "slash proofs")?;
        let mut slash_proofs = Vec::with_capacity(n);
        for _ in 0..n {
            let p = r.bytes("slash proof", MAX_EVIDENCE_CONTRIBUTION);
            slash_proofs.push(p.map_err(bad)?.to_vec());
        }
        r.finish().map_err(bad)?;
        Ok(RoundEvidence {
            round,
            eval_windows,
            contributions,
            openings,
            slash_proofs,
        })
    }
}

/// Wraps a worker's opener and keeps what it answered, in order.
pub(crate) struct Recording<'a> {
    inner: &'a dyn Opener,
    pub(crate) log: RefCell<Vec<Opened>>,
}

impl<'a> Recording<'a> {
    pub(crate) fn new(inner: &'a dyn Opener) -> Self {
        Recording {
            inner,
            log: RefCell::new(vec![]),
        }
    }
}

impl Opener for Recording<'_> {
    fn open(&self, step: u32) -> Result<Vec<u8>> {
        let r = self.inner.open(step);
        let kept = match &r {
            Ok(b) => Ok(b.clone()),
            Err(e) => Err(e.to_string().chars().take(1024).collect()),
        };
        self.log.borrow_mut().push((step, kept));
        r
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_and_refuses_malformed_bytes() {
        let e = RoundEvidence {
            round: 3,
            eval_windows: 8,
            contributions: vec![vec![1, 2, 3], vec![]],
            openings: vec![
                (
                    [7; 32],
                    vec![(4, Ok(vec![9; 10])), (2, Err("timed out".into()))],
                ),
                ([8; 32], vec![]),
            ],
            slash_proofs: vec![vec![5; 4]],
        };
        let b = e.to_bytes();
        assert_eq!(RoundEvidence::from_bytes(&b).unwrap(), e);
        for n in 0..b.len() {
            assert!(RoundEvidence::from_bytes(&b[..n]).is_err(), "prefix {n}");
        }
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(RoundEvidence::from_bytes(&trailing).is_err());
        let mut tag = b.clone();
        // The first opening's tag follows magic, round, windows, the contributions
        // (count, two length-prefixed items), the worker count, key, count and step.
        let at = 4 + 4 + 4 + 4 + (4 + 3) + 4 + 4 + 32 + 4 + 4;
        assert_eq!(tag[at], 1);
        tag[at] = 2;
        let err = RoundEvidence::from_bytes(&tag).unwrap_err().to_string();
        assert!(err.contains("tag"), "{err}");
        let mut huge = b"DRE1".to_vec();
        huge.extend(0u32.to_le_bytes());
        huge.extend(0u32.to_le_bytes());
        huge.extend(u32::MAX.to_le_bytes());
        assert!(RoundEvidence::from_bytes(&huge).is_err());
    }
}
