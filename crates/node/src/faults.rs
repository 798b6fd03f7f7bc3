//! Byzantine inference workers, for tests and the demo (cargo feature `faults`, off by
//! default), in the style of commonware's `simplex/mocks`: each cheating class that the
//! validators or the gateway must catch is its own type lying through the honest worker's
//! [`Tamper`] seam, and [`Behavior`] names them for the devnet and its command line. The
//! honest worker ([`crate::worker`]) holds no cheating branch.
//!
//! Training cheaters live in `deai_train::faults`.

use crate::proto::RunEvent;
use crate::worker::Tamper;
use anyhow::{bail, Result};
use deai_engine::{Engine, Generation};
use deai_proof::Receipt;
use ed25519_dalek::SigningKey;
use std::sync::Arc;

/// How a worker treats its jobs: honest, or one of the cheating classes.
#[derive(Clone)]
pub enum Behavior {
    Honest,
    /// Replaces one output token (text and receipt) and re-signs the receipt ([`AlterOutput`]).
    AlterOutput,
    /// Sends a receipt whose activation proof was not computed ([`FakeProof`]).
    FakeProof,
    /// Runs other weights while claiming the registered model ([`OtherWeights`]).
    OtherWeights(Arc<Engine>),
    /// Drops the connection after this many tokens and never posts a receipt ([`DieAfter`]).
    DieAfter(usize),
    /// Streams another first token than the one it signs ([`MisreportStream`]).
    MisreportStream,
}

impl std::fmt::Debug for Behavior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Behavior::Honest => "honest",
            Behavior::AlterOutput => "alter-output",
            Behavior::FakeProof => "fake-proof",
            Behavior::OtherWeights(_) => "other-weights",
            Behavior::DieAfter(_) => "die-after",
            Behavior::MisreportStream => "misreport-stream",
        })
    }
}

impl Behavior {
    /// The tamper a worker playing this behavior runs with: `None` for an honest one.
    pub fn tamper(self) -> Option<Arc<dyn Tamper>> {
        Some(match self {
            Behavior::Honest => return None,
            Behavior::AlterOutput => Arc::new(AlterOutput),
            Behavior::FakeProof => Arc::new(FakeProof),
            Behavior::OtherWeights(e) => Arc::new(OtherWeights(e)),
            Behavior::DieAfter(n) => Arc::new(DieAfter(n)),
            Behavior::MisreportStream => Arc::new(MisreportStream),
        })
    }
}

/// Replaces the first output token (text and receipt) with the next token id, streams the
/// altered tokens at once after generation (the text all in the first), and signs them.
#[derive(Debug)]
pub struct AlterOutput;

impl Tamper for AlterOutput {
    fn token(&self, _: &Engine, _: usize, _: RunEvent) -> Vec<Option<RunEvent>> {
        vec![]
    }

    fn generated(&self, engine: &Engine, g: &mut Generation) -> Result<Vec<RunEvent>> {
        if let Some(t) = g.output_tokens.first_mut() {
            *t = (*t + 1) % engine.model.tokenizer.vocab_size() as u32;
        }
        g.text = engine.model.tokenizer.decode(&g.output_tokens);
        Ok(g.output_tokens
            .iter()
            .enumerate()
            .map(|(k, &token)| RunEvent::Token {
                token,
                text: if k == 0 {
                    g.text.clone()
                } else {
                    String::new()
                },
                logprobs: None,
            })
            .collect())
    }
}

/// Sends a receipt whose activation proof was not computed (zeroed commitments), re-signed.
#[derive(Debug)]
pub struct FakeProof;

impl Tamper for FakeProof {
    fn receipt(&self, r: &mut Receipt, key: &SigningKey) -> Result<()> {
        for c in &mut r.proof.chunks {
            c.digest = [0; 8];
            c.coeffs.iter_mut().for_each(|x| *x = 0);
        }
        r.sign(key)?;
        Ok(())
    }
}

/// Runs other weights (e.g. one layer perturbed) while claiming the registered model.
pub struct OtherWeights(pub Arc<Engine>);

impl std::fmt::Debug for OtherWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtherWeights")
    }
}

impl Tamper for OtherWeights {
    fn engine(&self) -> Option<&Engine> {
        Some(&self.0)
    }
}

/// Drops the connection after this many tokens, as a killed process would, and never posts
/// a receipt.
#[derive(Debug)]
pub struct DieAfter(pub usize);

impl Tamper for DieAfter {
    fn token(&self, _: &Engine, index: usize, event: RunEvent) -> Vec<Option<RunEvent>> {
        match index + 1 {
            sent if sent < self.0 => vec![Some(event)],
            sent if sent == self.0 => vec![Some(event), None],
            _ => vec![],
        }
    }

    fn generated(&self, _: &Engine, _: &mut Generation) -> Result<Vec<RunEvent>> {
        bail!("simulated crash mid-stream")
    }
}

/// Signs an honest receipt but streams another first token id than the one it signs (a
/// worker relaying one answer and getting paid for another).
#[derive(Debug)]
pub struct MisreportStream;

impl Tamper for MisreportStream {
    fn token(&self, engine: &Engine, index: usize, event: RunEvent) -> Vec<Option<RunEvent>> {
        let event = match event {
            RunEvent::Token {
                token,
                text,
                logprobs,
            } if index == 0 => RunEvent::Token {
                token: (token + 1) % engine.model.tokenizer.vocab_size() as u32,
                text,
                logprobs,
            },
            other => other,
        };
        vec![Some(event)]
    }
}

/// A lazy validator: drawn for a committee, it seals an acceptance without re-running the
/// job, under a proof of verification it made up (the best it can do without the hidden
/// rows: a digest of what is public), and reveals it once every member has committed; on
/// a challenged or escalated job it seals an acceptance too, under the best proof it can
/// find: the tag its committee revealed most often (copied), or a made-up one, and reveals
/// it once the reveals open. Run in place of a validator's
/// [`crate::verifier::Verifier`] (`DevnetOptions::no_verifier`) to show that proof of
/// verification makes laziness unpaid and slashed.
pub struct LazyValidator {
    signer: Arc<deai_client::Signer>,
}

impl LazyValidator {
    pub fn new(signer: Arc<deai_client::Signer>) -> Self {
        LazyValidator { signer }
    }

    /// One pass: commits, reveals and plain acceptances it has not sent yet. Returns how
    /// many transactions it submitted.
    pub async fn pass(&self) -> Result<usize> {
        use deai_ledger::state::{verdict_commitment, verdict_salt, JobStatus};
        use deai_ledger::TxKind;
        let ledger = self.signer.ledger();
        let me = self.signer.address();
        let salt = |job: &deai_types::Hash256| verdict_salt(&self.signer.key().to_bytes(), job);
        let mut txs = Vec::new();
        for (id, job) in ledger.jobs_drawn(&me, 200).await? {
            let Some(r) = &job.receipt else { continue };
            let pov = made_up_pov(&id, &r.digest);
            match job.commits.iter().find(|c| c.voter == me) {
                None => txs.push(TxKind::VerdictCommit {
                    job: id,
                    commitment: verdict_commitment(&me, &id, true, &pov, &salt(&id)),
                }),
                Some(_)
                    if job.commits.len() == job.committee.len()
                        && job.povs.iter().all(|p| p.voter != me) =>
                {
                    txs.push(TxKind::VerdictReveal {
                        job: id,
                        accept: true,
                        pov,
                        salt: salt(&id),
                    })
                }
                Some(_) => {}
            }
        }
        for (id, job) in ledger.jobs_due("challenged", 200).await? {
            if job.status != JobStatus::Challenged || job.verdicts.iter().any(|v| v.voter == me) {
                continue;
            }
            let Some(r) = &job.receipt else { continue };
            // Committed before the job escalated: the chain makes it open that commitment.
            if job.commits.iter().any(|c| c.voter == me) {
                txs.push(TxKind::VerdictReveal {
                    job: id,
                    accept: true,
                    pov: made_up_pov(&id, &r.digest),
                    salt: salt(&id),
                });
                continue;
            }
            let guess = copied_pov(&job).unwrap_or_else(|| made_up_pov(&id, &r.digest));
            let sealed = job.quorum_commits.iter().any(|c| c.voter == me);
            match (sealed, job.reveals_open) {
                (false, false) => txs.push(TxKind::VerdictCommit {
                    job: id,
                    commitment: verdict_commitment(&me, &id, true, &guess, &salt(&id)),
                }),
                // The guess is recomputed from the chain: the copied tag may have changed
                // since (a committee reveal landing after the commitment); try both.
                (true, true) => {
                    let mine = job.quorum_commits.iter().find(|c| c.voter == me);
                    let pov = [guess, made_up_pov(&id, &r.digest)]
                        .into_iter()
                        .find(|p| {
                            mine.is_some_and(|c| {
                                c.commitment == verdict_commitment(&me, &id, true, p, &salt(&id))
                            })
                        })
                        .unwrap_or(guess);
                    txs.push(TxKind::VerdictReveal {
                        job: id,
                        accept: true,
                        pov,
                        salt: salt(&id),
                    })
                }
                _ => {}
            }
        }
        let n = txs.len();
        for kind in txs {
            // Sent once per pass: a pending one is refused on chain the second time, which
            // costs this validator a fee, not the test its point.
            self.signer.submit(kind).await?;
        }
        Ok(n)
    }

    /// Runs until the process ends: waits for its transactions to land between passes.
    pub async fn run(self, every: std::time::Duration) {
        loop {
            match self.pass().await {
                Ok(0) => {}
                Ok(_) => tokio::time::sleep(std::time::Duration::from_secs(2)).await,
                Err(e) => tracing::debug!("lazy validator: {e:#}"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The tag most of a job's committee revealed, which a lazy validator may hope to pass off
/// as its own proof after an escalation (the chain tags what it reveals, so it cannot).
fn copied_pov(job: &deai_ledger::state::Job) -> Option<deai_types::Hash256> {
    let mut counts = std::collections::BTreeMap::new();
    for p in &job.povs {
        *counts.entry(p.pov).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p)
}

/// A lazy validator's proof of verification, made up from public data (the job and its
/// receipt digest) since it never computed the hidden rows.
fn made_up_pov(job: &deai_types::Hash256, receipt: &deai_types::Hash256) -> deai_types::Hash256 {
    deai_types::Hash256::digest_parts("deai-lazy-pov", &[job.as_bytes(), receipt.as_bytes()])
}
