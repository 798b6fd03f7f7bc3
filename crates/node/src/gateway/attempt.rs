//! One choice of a request on one worker: derive the job and sign its escrow, send it to the
//! worker ([`WorkerClient`]), pass on only the output the client does not have yet (a
//! replacement worker repeats its predecessor's tokens), authenticate the worker's receipt,
//! and keep it ([`Store`]).

use super::store::Store;
use crate::proto::{RunEvent, RunRequest};
use crate::worker_client::WorkerClient;
use deai_client::{Signer, WorkerEntry};
use deai_engine::sampler::TokenLogprobs;
use deai_engine::{GenParams, StopReason};
use deai_ledger::job_cost;
use deai_ledger::{Address, TxKind};
use deai_types::Hash256;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Longest a worker's run may last in all (its silences are limited separately).
const RUN_LIMIT: Duration = Duration::from_secs(3600);

/// What the dispatcher tells the handler.
pub(super) enum Out {
    /// New text, and the log-probabilities of the tokens that carried it when the request
    /// asked for them (a token whose bytes end mid-character comes with empty text).
    Text {
        text: String,
        logprobs: Vec<(u32, TokenLogprobs)>,
    },
    Done {
        job: Hash256,
        stop_reason: StopReason,
        prompt_tokens: usize,
        output_tokens: usize,
        worker: Address,
    },
    Failed(String),
}

/// One choice of a request: what every worker attempt for it runs.
pub(super) struct Choice {
    /// The choice's request id (its receipt id for the client).
    pub(super) request: Hash256,
    /// The account that pays.
    pub(super) client: Arc<Signer>,
    pub(super) model: Hash256,
    pub(super) prompt_tokens: Vec<u32>,
    pub(super) params: GenParams,
    pub(super) top_logprobs: Option<usize>,
}

/// How much of a request's output the client already has, across worker attempts.
#[derive(Default)]
pub(super) struct Sent {
    bytes: usize,
    tokens: usize,
}

/// One worker's output as it arrives, measured against what the client already has.
struct Relay<'a> {
    sent: &'a mut Sent,
    /// Whether the client asked for logprobs.
    logprobs: bool,
    /// Bytes of text this worker produced so far.
    produced: usize,
    /// The tokens this worker streamed (its receipt must sign exactly these).
    streamed: Vec<u32>,
    /// This worker's whole answer.
    answer: String,
}

impl<'a> Relay<'a> {
    fn new(sent: &'a mut Sent, logprobs: bool) -> Self {
        Relay {
            sent,
            logprobs,
            produced: 0,
            streamed: Vec::new(),
            answer: String::new(),
        }
    }

    /// Takes the worker's next token; returns what of it the client has not been sent yet.
    fn token(&mut self, token: u32, text: &str, logprobs: Option<TokenLogprobs>) -> Option<Out> {
        self.answer.push_str(text);
        // A replacement worker repeats the same tokens (same seed): pass on only what the
        // client does not have yet.
        let end = self.produced + text.len();
        let mut piece = String::new();
        if end > self.sent.bytes {
            let skip = self.sent.bytes.saturating_sub(self.produced);
            piece = text.get(skip..).unwrap_or(text).to_string();
            self.sent.bytes = end;
        }
        self.produced = end;
        let mut lps = Vec::new();
        let k = self.streamed.len();
        if k >= self.sent.tokens {
            if let Some(lp) = logprobs.filter(|_| self.logprobs) {
                lps.push((token, lp));
            }
            self.sent.tokens = k + 1;
        }
        self.streamed.push(token);
        (!piece.is_empty() || !lps.is_empty()).then_some(Out::Text {
            text: piece,
            logprobs: lps,
        })
    }
}

/// Authenticates a worker's last message before the client is told its answer is done: the
/// receipt must be for this job (a replayed receipt names another job id, since each job has
/// a fresh nonce), signed by the key the ledger registers for the worker the job was sent to,
/// and match the digest the worker says it posts on chain (the chain's copy is compared when
/// the receipt is viewed); the caller also checks that the tokens it streamed are the
/// receipt's, so a worker cannot stream one answer and sign another. It does not re-run the
/// model: validators do that.
fn check_receipt(
    receipt: &Value,
    job: Hash256,
    worker: &Address,
    digest: Hash256,
) -> Result<deai_proof::Receipt, String> {
    let r = deai_proof::Receipt::from_json(&receipt.to_string())?;
    if r.job_id != job.0 {
        return Err(format!("it is for job {}, not {job}", Hash256(r.job_id)));
    }
    if &r.worker_key != worker {
        return Err(format!(
            "it is signed by {}, not by the registered worker {}",
            hex::encode(r.worker_key),
            hex::encode(worker)
        ));
    }
    r.verify_signature()?;
    let bytes = r.to_bytes().map_err(|e| e.to_string())?;
    if deai_proof::receipt_digest(&bytes) != digest {
        return Err("its digest does not match its bytes".into());
    }
    Ok(r)
}

/// A fresh job for `choice` on worker `w` (a new nonce, so a new job id), with the client's
/// signed `OpenJob` escrowing its maximum cost: `(job id, what the worker is sent)`.
async fn open_job(choice: &Choice, w: &WorkerEntry) -> anyhow::Result<(Hash256, RunRequest)> {
    let nonce = deai_proof::random_nonce();
    let job = Hash256(
        deai_proof::JobSpec {
            model_id: choice.model,
            prompt_tokens: choice.prompt_tokens.clone(),
            params: choice.params.clone(),
            nonce,
        }
        .id(),
    );
    let escrow = job_cost(
        (choice.prompt_tokens.len() + choice.params.max_tokens) as u64,
        w.worker.price_per_1k,
    );
    let kind = TxKind::OpenJob {
        job,
        model: choice.model,
        max_tokens: choice.params.max_tokens as u32,
        escrow,
        worker: Some(w.address),
    };
    // Submitting through the signer re-signs the escrow if the client's account was used
    // elsewhere (another gateway, `deai tx`) and its nonce moved on; otherwise the escrow
    // would never reach the chain and the worker would serve the request unpaid.
    let open_job = match choice.client.submit_signed(kind.clone()).await {
        Ok((_, tx)) => tx,
        Err(e) => {
            // The worker re-submits the escrow it is handed: give it a signed one anyway.
            tracing::debug!("gateway's escrow submission: {e:#}");
            choice.client.sign(kind).await?
        }
    };
    let req = RunRequest {
        model_id: choice.model,
        prompt_tokens: choice.prompt_tokens.clone(),
        params: choice.params.clone(),
        nonce,
        open_job,
        top_logprobs: choice.top_logprobs.and_then(|k| u8::try_from(k).ok()),
    };
    Ok((job, req))
}

/// One worker, one job: relays the worker's new output to `out`, and once its receipt
/// checks out, keeps it in `store` and sends `Done`. Returns the job id; an error when the
/// worker refused, failed, went silent for longer than `silence` or answered with an
/// unacceptable receipt (the caller then tries the next worker).
pub(super) async fn attempt(
    choice: &Choice,
    w: &WorkerEntry,
    silence: Duration,
    store: &Store,
    sent: &mut Sent,
    out: &tokio::sync::mpsc::Sender<Out>,
) -> anyhow::Result<Hash256> {
    let (job, req) = open_job(choice, w).await?;
    let worker = WorkerClient::new(&w.worker.endpoint, RUN_LIMIT, silence);
    let mut events = worker.run(&req).await?;
    let mut relay = Relay::new(sent, choice.top_logprobs.is_some());
    loop {
        let Some(ev) = events.next_event().await? else {
            anyhow::bail!("stream ended before the receipt");
        };
        match ev {
            RunEvent::Token {
                token,
                text,
                logprobs,
            } => {
                if let Some(msg) = relay.token(token, &text, logprobs) {
                    if out.send(msg).await.is_err() {
                        // The client left; the worker still finishes and is paid.
                    }
                }
            }
            RunEvent::Done {
                job: done_job,
                receipt,
                receipt_digest,
                ..
            } => {
                if done_job != job {
                    anyhow::bail!("worker answered for another job");
                }
                // The client's usage and finish reason come from the signed receipt, not
                // from the worker's unsigned summary next to it.
                let r = check_receipt(&receipt, job, &w.address, receipt_digest)
                    .map_err(|e| anyhow::anyhow!("unacceptable receipt: {e}"))?;
                if relay.streamed != r.output_tokens {
                    anyhow::bail!(
                        "unacceptable receipt: it signs {} output tokens that are not the {} \
                         streamed",
                        r.output_tokens.len(),
                        relay.streamed.len()
                    );
                }
                store
                    .keep_answer(&choice.request, &job, &receipt, &relay.answer)
                    .await?;
                let _ = out
                    .send(Out::Done {
                        job,
                        stop_reason: r.stop_reason,
                        prompt_tokens: r.prompt_tokens.len(),
                        output_tokens: r.output_tokens.len(),
                        worker: w.address,
                    })
                    .await;
                return Ok(job);
            }
            RunEvent::Error { message } => anyhow::bail!("worker error: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TinyJob;
    use serde_json::json;

    #[test]
    fn a_receipt_is_accepted_only_from_its_worker_for_its_job() {
        let t = TinyJob::new();
        let (engine, r, job) = (&t.engine, t.receipt.clone(), t.id());
        let worker: Address = r.worker_key;
        let digest = deai_proof::receipt_digest(&r.to_bytes().unwrap());
        let json: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(check_receipt(&json, job, &worker, digest).unwrap(), r);
        // Replayed onto another job.
        let err = check_receipt(&json, Hash256([0; 32]), &worker, digest).unwrap_err();
        assert!(err.contains("is for job"), "{err}");
        // Sent back by another key than the registered worker's.
        let err = check_receipt(&json, job, &[7; 32], digest).unwrap_err();
        assert!(err.contains("registered worker"), "{err}");
        // Edited after signing.
        let mut edited = json.clone();
        let vocab = engine.model.cfg.vocab as u32;
        edited["output_tokens"][0] = json!((r.output_tokens[0] + 1) % vocab);
        let err = check_receipt(&edited, job, &worker, digest).unwrap_err();
        assert!(err.contains("signature"), "{err}");
        // A digest that is not these bytes'; and no receipt at all.
        let err = check_receipt(&json, job, &worker, Hash256([3; 32])).unwrap_err();
        assert!(err.contains("digest"), "{err}");
        assert!(check_receipt(&json!({"job_id": 1}), job, &worker, digest).is_err());
    }

    #[test]
    fn a_replacement_worker_passes_on_only_what_the_client_lacks() {
        let lp = |x: f32| {
            Some(TokenLogprobs {
                logprob: x,
                top: vec![],
            })
        };
        let text_of = |o: Option<Out>| match o {
            Some(Out::Text { text, logprobs }) => Some((text, logprobs.len())),
            Some(_) => panic!("not text"),
            None => None,
        };
        let mut sent = Sent::default();
        // The first worker streams two tokens, then fails.
        let mut first = Relay::new(&mut sent, true);
        assert_eq!(
            text_of(first.token(1, "He", lp(-0.1))),
            Some(("He".into(), 1))
        );
        assert_eq!(
            text_of(first.token(2, "llo", lp(-0.2))),
            Some(("llo".into(), 1))
        );
        // Its replacement repeats them (same seed): nothing new until the third token.
        let mut second = Relay::new(&mut sent, true);
        assert_eq!(text_of(second.token(1, "He", lp(-0.1))), None);
        assert_eq!(text_of(second.token(2, "llo", lp(-0.2))), None);
        assert_eq!(
            text_of(second.token(3, " you", lp(-0.3))),
            Some((" you".into(), 1))
        );
        // Its receipt is checked against all it streamed, and its whole answer is kept.
        assert_eq!(second.streamed, vec![1, 2, 3]);
        assert_eq!(second.answer, "Hello you");
        // Logprobs the client did not ask for are not passed on.
        let mut sent = Sent::default();
        let mut plain = Relay::new(&mut sent, false);
        assert_eq!(
            text_of(plain.token(1, "Hi", lp(-0.1))),
            Some(("Hi".into(), 0))
        );
    }
}
