//! After an answer: the gateway holds the receipt it was served, so it can tell when the
//! worker posts something else on chain. It watches the job until a receipt is posted and
//! challenges one whose digest or billed token count is not the served receipt's (a worker
//! billing for work it did not serve, or for more tokens than it served). The validators
//! then compare the posted digest and count with the receipt the worker must produce
//! (`onchain::receipt_matches_job`) and reject it, refunding the client and paying it its
//! bond back plus the reporter's share of the slash.

use deai_client::Signer;
use deai_ledger::state::{Job, JobStatus};
use deai_ledger::TxKind;
use deai_types::Hash256;
use std::sync::Arc;
use std::time::Duration;

/// What the client was served for a job: the receipt's digest and its prompt plus output
/// token count (what the ledger must bill).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub digest: Hash256,
    pub tokens: u32,
}

/// What to do about a job's record on chain, given what was served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// No receipt posted yet: look again later.
    Wait,
    /// The posted receipt is the served one (or the job is settled): stop watching.
    Done,
    /// The posted receipt differs: challenge it, for this reason.
    Challenge(String),
}

/// The rule: a receipted job whose posted digest or billed tokens differ from what was
/// served is challenged (a sampled one cannot be: its committee re-executes it already).
pub fn judge(job: Option<&Job>, served: Served) -> Watch {
    let Some(job) = job else {
        return Watch::Wait; // the escrow is not final yet
    };
    match (job.status, &job.receipt) {
        (JobStatus::Open, _) => Watch::Wait,
        (JobStatus::Receipted, Some(r)) if r.digest != served.digest => Watch::Challenge(format!(
            "posted digest {} is not the served receipt's {}",
            r.digest.short(),
            served.digest.short()
        )),
        (JobStatus::Receipted, Some(r)) if r.tokens != served.tokens => Watch::Challenge(format!(
            "billed {} tokens, the served receipt holds {}",
            r.tokens, served.tokens
        )),
        _ => Watch::Done,
    }
}

/// How often the watcher looks, and for how long at most.
const EVERY: Duration = Duration::from_millis(500);
const PATIENCE: Duration = Duration::from_secs(600);

/// Watches `job` in the background with the paying client's signer (which also pays the
/// challenge bond).
pub fn spawn(client: Arc<Signer>, job: Hash256, served: Served) {
    tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        while t0.elapsed() < PATIENCE {
            let record = client.ledger().job(&job).await;
            let verdict = match &record {
                Ok(j) => judge(j.as_ref(), served),
                Err(_) => Watch::Wait,
            };
            match verdict {
                Watch::Wait => tokio::time::sleep(EVERY).await,
                Watch::Done => return,
                Watch::Challenge(why) => {
                    tracing::warn!(%job, "challenging the posted receipt: {why}");
                    if let Err(e) = client.submit(TxKind::Challenge { job }).await {
                        tracing::warn!(%job, "challenge not submitted: {e:#}");
                    }
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use deai_ledger::state::ReceiptRecord;

    fn job(status: JobStatus, digest: Hash256, tokens: u32) -> Job {
        Job {
            client: [1; 32],
            model: Hash256([2; 32]),
            max_tokens: 8,
            escrow: 100,
            worker: Some([3; 32]),
            opened_at: 1,
            deadline: 10,
            status,
            receipt: (status != JobStatus::Open).then(|| ReceiptRecord {
                worker: [3; 32],
                digest,
                tokens,
                pointer: "http://127.0.0.1:1/r".into(),
                posted_at: 2,
                cost: 10,
                collateral: 100,
                beacon_round: None,
            }),
            challenge: None,
            verdicts: vec![],
            settlement: None,
            committee: vec![],
            escalated: false,
            sampled_at: None,
            commits: vec![],
            povs: vec![],
            quorum_commits: vec![],
            reveals_open: false,
            app: None,
            app_bps: 0,
            gateway: None,
            gateway_bps: 0,
            royalty_bps: 0,
        }
    }

    /// A worker that posts another digest (a receipt it never served) or bills more tokens
    /// than it served is challenged; the served receipt, an open job and a settled one are not.
    #[test]
    fn the_gateway_challenges_only_a_receipt_it_was_not_served() {
        let served = Served {
            digest: Hash256([9; 32]),
            tokens: 20,
        };
        assert_eq!(judge(None, served), Watch::Wait);
        assert_eq!(
            judge(Some(&job(JobStatus::Open, served.digest, 0)), served),
            Watch::Wait
        );
        assert_eq!(
            judge(Some(&job(JobStatus::Receipted, served.digest, 20)), served),
            Watch::Done
        );
        let fake = judge(
            Some(&job(JobStatus::Receipted, Hash256([8; 32]), 20)),
            served,
        );
        assert!(
            matches!(&fake, Watch::Challenge(w) if w.contains("digest")),
            "{fake:?}"
        );
        let inflated = judge(
            Some(&job(JobStatus::Receipted, served.digest, 4_000_000)),
            served,
        );
        assert!(
            matches!(&inflated, Watch::Challenge(w) if w.contains("billed")),
            "{inflated:?}"
        );
        // Already challenged or settled: nothing more to do.
        assert_eq!(
            judge(
                Some(&job(JobStatus::Accepted, Hash256([8; 32]), 20)),
                served
            ),
            Watch::Done
        );
    }
}
