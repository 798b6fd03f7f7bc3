//! A closed round's evidence: what the coordinator received while closing it, and its
//! binary encoding.
//!
//! Owns [`RoundEvidence`] (admitted contributions, the openings fetched while challenging
//! them, refused slashable contributions), the limits on its size, and [`Recording`], the
//! opener wrapper through which the coordinator ([`crate::verify`]) keeps what each worker
//! answered. Re-checking a round from its evidence is [`crate::audit`]'s job; both stand on
//! this module, so neither needs the other's internals.

use crate::diloco::Opener;
use crate::{Result, TrainError};
use deai_types::codec::{Reader, Writer};
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
