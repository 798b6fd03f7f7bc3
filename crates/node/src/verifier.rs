//! The validator's verification duty: pick receipts to check at the governance sample rate
//! (and every challenged one), fetch each from the worker's pointer, check it against what
//! is on chain, re-run it with the proof crate (one prefill), and post a verdict.
//!
//! Which receipts are sampled is decided by the digest of the block that finalized the
//! receipt, which the worker does not know when it answers, and is the same for every
//! validator, so that a quorum forms on the same jobs.

use crate::ledger_client::Signer;
use crate::proto::receipt_digest;
use deai_engine::Engine;
use deai_ledger::state::{Job, JobStatus, BPS};
use deai_ledger::TxKind;
use deai_proof::Receipt;
use deai_types::Hash256;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub job: Hash256,
    pub accept: bool,
    /// The first failed check, when rejected.
    pub reason: Option<String>,
}

pub struct Verifier {
    signer: Signer,
    engine: Arc<Engine>,
    model_id: Hash256,
    done: Mutex<HashSet<Hash256>>,
    /// Every verdict this validator gave, newest last (for status pages and tests).
    pub findings: Mutex<Vec<Finding>>,
}

/// True when the receipt of `job`, finalized in the block with digest `block`, falls in the
/// sample at `rate_bps`.
pub fn sampled(job: &Hash256, block: &Hash256, rate_bps: u64) -> bool {
    let h = Hash256::digest_parts("deai-sample-v1", &[job.as_bytes(), block.as_bytes()]);
    let x = u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes"));
    x % BPS < rate_bps
}

impl Verifier {
    pub fn new(signer: Signer, engine: Arc<Engine>, model_id: Hash256) -> Self {
        Verifier {
            signer,
            engine,
            model_id,
            done: Mutex::new(HashSet::new()),
            findings: Mutex::new(Vec::new()),
        }
    }

    /// Checks once for receipts to verify; returns what it verified.
    pub async fn tick(&self) -> anyhow::Result<Vec<Finding>> {
        let ledger = self.signer.ledger();
        let params = ledger.params().await?;
        let me = self.signer.address();
        let mut todo: Vec<(Hash256, Job)> = ledger.jobs("challenged", 200).await?;
        todo.extend(ledger.jobs("receipted", 200).await?);
        let mut out = Vec::new();
        for (id, job) in todo {
            if self.done.lock().unwrap().contains(&id) || job.verdicts.iter().any(|v| v.voter == me)
            {
                continue;
            }
            let Some(rec) = &job.receipt else { continue };
            if job.model != self.model_id {
                continue; // another model: validators with that model check it
            }
            if job.status != JobStatus::Challenged {
                let Some(block) = ledger.block_digest(rec.posted_at).await? else {
                    continue;
                };
                if !sampled(&id, &block, params.sample_rate_bps) {
                    self.done.lock().unwrap().insert(id);
                    continue;
                }
            }
            let finding = self.check(&id, &job).await;
            self.done.lock().unwrap().insert(id);
            let kind = TxKind::Verdict {
                job: id,
                accept: finding.accept,
            };
            match self.signer.submit(kind).await {
                Ok(_) => {
                    tracing::info!(job = %id, accept = finding.accept, reason = ?finding.reason, "verdict")
                }
                Err(e) => tracing::warn!(job = %id, "verdict not submitted: {e:#}"),
            }
            self.findings.lock().unwrap().push(finding.clone());
            out.push(finding);
        }
        Ok(out)
    }

    /// Runs until the process ends, checking every `every`.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::debug!("verifier: {e:#}");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Fetches and checks the receipt of `job`. Any failure to produce a matching, valid
    /// receipt is a reject.
    pub async fn check(&self, id: &Hash256, job: &Job) -> Finding {
        let reject = |reason: String| Finding {
            job: *id,
            accept: false,
            reason: Some(reason),
        };
        let Some(rec) = &job.receipt else {
            return reject("no receipt posted".into());
        };
        let text = match self.fetch(&rec.pointer).await {
            Ok(t) => t,
            Err(e) => return reject(format!("receipt unavailable at {}: {e:#}", rec.pointer)),
        };
        let r = match Receipt::from_json(&text) {
            Ok(r) => r,
            Err(e) => return reject(format!("receipt does not decode: {e}")),
        };
        match r.to_bytes() {
            Ok(b) if receipt_digest(&b) == rec.digest => {}
            _ => return reject("receipt does not match the digest on chain".into()),
        }
        if Hash256(r.job_id) != *id {
            return reject("receipt is for another job".into());
        }
        if Some(r.worker_key) != job.worker {
            return reject("receipt is signed by another key than the job's worker".into());
        }
        if r.model_id != job.model {
            return reject("receipt names another model than the job".into());
        }
        if (r.prompt_tokens.len() + r.output_tokens.len()) as u32 != rec.tokens {
            return reject("billed tokens differ from the receipt".into());
        }
        let engine = self.engine.clone();
        let model_id = self.model_id;
        let report =
            tokio::task::spawn_blocking(move || deai_proof::verify(&r, &engine, &model_id)).await;
        match report {
            Ok(rep) if rep.accepted() => Finding {
                job: *id,
                accept: true,
                reason: None,
            },
            Ok(rep) => reject(
                rep.first_failure()
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .unwrap_or_else(|| "rejected".into()),
            ),
            Err(e) => reject(format!("verification task failed: {e}")),
        }
    }

    async fn fetch(&self, pointer: &str) -> anyhow::Result<String> {
        if !pointer.starts_with("http://") && !pointer.starts_with("https://") {
            anyhow::bail!("pointer is not an http(s) URL");
        }
        let client = crate::http_client(pointer, Duration::from_secs(10));
        let r = client.get(pointer).send().await?;
        if !r.status().is_success() {
            anyhow::bail!("HTTP {}", r.status());
        }
        let b = r.bytes().await?;
        if b.len() > crate::MAX_BODY {
            anyhow::bail!("receipt larger than {} bytes", crate::MAX_BODY);
        }
        Ok(String::from_utf8(b.to_vec())?)
    }
}
