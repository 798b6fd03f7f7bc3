//! The one check of a receipt against its job's record on chain, used by the validators
//! before they re-run a receipt ([`crate::verifier`]) and by `deai verify --onchain`.
//!
//! A receipt that passes is the very one the worker posted for this job: same digest, same
//! job, signed by the job's assigned worker who also posted it, for the job's model, and
//! billing exactly the tokens it holds. What the receipt *proves* about the model run is
//! `deai-proof`'s to check; this module checks only that the ledger and the receipt agree.

use deai_ledger::state::{Job, ReceiptRecord};
use deai_proof::Receipt;
use deai_types::Hash256;

/// How a receipt and its job's record on chain disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The job has no receipt posted.
    NoReceipt,
    /// The chain holds another digest (or the receipt does not encode).
    Digest {
        chain: Hash256,
        receipt: Option<Hash256>,
    },
    /// The receipt names another job.
    OtherJob,
    /// The receipt's signer is not the job's assigned worker, or not who posted it.
    OtherWorker,
    /// The receipt names another model than the job.
    OtherModel,
    /// The tokens billed on chain are not the receipt's prompt plus output tokens.
    BilledTokens { chain: u32, receipt: usize },
    /// The receipt declares another kernel profile than its worker registered on chain (a
    /// worker may not pick the looser cross-profile thresholds for itself).
    OtherProfile { registered: String, receipt: String },
    /// The receipt's worker is not registered on chain.
    UnknownWorker,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::NoReceipt => write!(f, "no receipt posted"),
            Mismatch::Digest {
                chain,
                receipt: Some(r),
            } => write!(
                f,
                "receipt does not match the digest on chain (the chain holds {}, this receipt is {})",
                chain.short(),
                r.short()
            ),
            Mismatch::Digest {
                chain,
                receipt: None,
            } => write!(
                f,
                "receipt does not match the digest on chain (the chain holds {}, this receipt does not encode)",
                chain.short()
            ),
            Mismatch::OtherJob => write!(f, "receipt is for another job"),
            Mismatch::OtherWorker => write!(
                f,
                "receipt is signed by another key than the job's worker (or its poster)"
            ),
            Mismatch::OtherModel => write!(f, "receipt names another model than the job"),
            Mismatch::BilledTokens { chain, receipt } => write!(
                f,
                "billed tokens differ from the receipt ({chain} on chain, {receipt} in the receipt)"
            ),
            Mismatch::OtherProfile {
                registered,
                receipt,
            } => write!(
                f,
                "receipt declares kernel profile {receipt:?} but its worker registered {registered:?}"
            ),
            Mismatch::UnknownWorker => write!(f, "the receipt's worker is not registered"),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Checks that `r` declares the kernel profile its worker registered (`worker`, the
/// worker's record on chain, `None` if it has none).
pub fn receipt_matches_worker(
    r: &Receipt,
    worker: Option<&deai_ledger::state::Worker>,
) -> Result<(), Mismatch> {
    let w = worker.ok_or(Mismatch::UnknownWorker)?;
    if w.profile != r.profile_id {
        return Err(Mismatch::OtherProfile {
            registered: w.profile.clone(),
            receipt: r.profile_id.clone(),
        });
    }
    Ok(())
}

/// Checks that `r` is the receipt posted on chain for job `id` (record `job`); returns the
/// posted record.
pub fn receipt_matches_job<'a>(
    r: &Receipt,
    id: &Hash256,
    job: &'a Job,
) -> Result<&'a ReceiptRecord, Mismatch> {
    let rec = job.receipt.as_ref().ok_or(Mismatch::NoReceipt)?;
    let digest = r.digest().ok();
    if digest != Some(rec.digest) {
        return Err(Mismatch::Digest {
            chain: rec.digest,
            receipt: digest,
        });
    }
    if Hash256(r.job_id) != *id {
        return Err(Mismatch::OtherJob);
    }
    if Some(r.worker_key) != job.worker || rec.worker != r.worker_key {
        return Err(Mismatch::OtherWorker);
    }
    if r.model_id != job.model {
        return Err(Mismatch::OtherModel);
    }
    let held = r.prompt_tokens.len() + r.output_tokens.len();
    if held != rec.tokens as usize {
        return Err(Mismatch::BilledTokens {
            chain: rec.tokens,
            receipt: held,
        });
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deai_ledger::state::JobStatus;

    /// A receipt from the tiny generated model, and the job record an honest worker's post
    /// leaves on chain for it.
    fn honest() -> (Receipt, Hash256, Job) {
        let t = crate::testing::TinyJob::new();
        let (r, spec) = (t.receipt, t.spec);
        let worker = r.worker_key;
        let job = Job {
            client: [1; 32],
            model: spec.model_id,
            max_tokens: 4,
            escrow: 100,
            worker: Some(worker),
            opened_at: 1,
            deadline: 10,
            status: JobStatus::Receipted,
            receipt: Some(ReceiptRecord {
                worker,
                digest: r.digest().unwrap(),
                tokens: (r.prompt_tokens.len() + r.output_tokens.len()) as u32,
                pointer: "http://127.0.0.1:1/r".into(),
                posted_at: 2,
                cost: 1,
                collateral: 10,
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
        };
        (r, Hash256(spec.id()), job)
    }

    #[test]
    fn the_posted_receipt_matches_and_every_disagreement_is_named() {
        let (r, id, job) = honest();
        assert_eq!(
            receipt_matches_job(&r, &id, &job),
            Ok(job.receipt.as_ref().unwrap())
        );

        let mut j = job.clone();
        j.receipt = None;
        assert_eq!(receipt_matches_job(&r, &id, &j), Err(Mismatch::NoReceipt));

        // The worker posted another digest (say, of a receipt it never served).
        let mut j = job.clone();
        j.receipt.as_mut().unwrap().digest = Hash256([3; 32]);
        assert!(matches!(
            receipt_matches_job(&r, &id, &j),
            Err(Mismatch::Digest { .. })
        ));

        // Looked up under another job id.
        assert_eq!(
            receipt_matches_job(&r, &Hash256([0; 32]), &job),
            Err(Mismatch::OtherJob)
        );

        // Assigned to, or posted by, someone else.
        let mut j = job.clone();
        j.worker = Some([7; 32]);
        assert_eq!(receipt_matches_job(&r, &id, &j), Err(Mismatch::OtherWorker));
        let mut j = job.clone();
        j.receipt.as_mut().unwrap().worker = [7; 32];
        assert_eq!(receipt_matches_job(&r, &id, &j), Err(Mismatch::OtherWorker));

        let mut j = job.clone();
        j.model = Hash256([8; 32]);
        assert_eq!(receipt_matches_job(&r, &id, &j), Err(Mismatch::OtherModel));

        // Billed for more tokens than the receipt holds (the pay-for-nothing attack).
        let mut j = job.clone();
        j.receipt.as_mut().unwrap().tokens += 1000;
        let e = receipt_matches_job(&r, &id, &j).unwrap_err();
        assert!(matches!(e, Mismatch::BilledTokens { .. }), "{e}");
        assert!(e.to_string().contains("billed tokens differ"), "{e}");
    }

    /// The profile-downgrade attack: the worker re-signs its receipt under another kernel
    /// profile (whose cross-profile thresholds are looser) than the one it registered.
    #[test]
    fn a_receipt_must_declare_its_workers_registered_profile() {
        let (r, _, _) = honest();
        let w = |profile: &str| deai_ledger::state::Worker {
            models: vec![],
            profile: profile.into(),
            hardware: String::new(),
            price_per_1k: 1,
            endpoint: String::new(),
            active: true,
            registered_at: 0,
            jobs_done: 0,
            jobs_rejected: 0,
            tokens_served: 0,
            earned: 0,
            slashed: 0,
            locked: 0,
        };
        assert_eq!(receipt_matches_worker(&r, Some(&w(&r.profile_id))), Ok(()));
        let e = receipt_matches_worker(&r, Some(&w("llama.cpp-cpu"))).unwrap_err();
        assert!(matches!(e, Mismatch::OtherProfile { .. }), "{e}");
        assert!(e.to_string().contains("registered"), "{e}");
        assert_eq!(
            receipt_matches_worker(&r, None),
            Err(Mismatch::UnknownWorker)
        );
    }
}
