//! One choice of a request on one worker: derive the job and sign its escrow, send it to the
//! worker ([`WorkerClient`]), pass on only the output the client does not have yet (a
//! replacement worker repeats its predecessor's tokens), authenticate the worker's receipt,
//! and keep it ([`Store`]).
//!
//! Every piece of text the client reads is derived here from the worker's token ids, by the
//! gateway's own tokenizer with the engine's stop handling ([`OutputText`]); the receipt
//! signs those ids. The worker's `text` fields are ignored. A streamed answer never splices
//! two workers' outputs: a replacement must reproduce, from its own ids, all the text (and
//! the tokens whose logprobs) the client was already sent, or it fails too.

use super::store::Store;
use crate::proto::{RunEvent, RunRequest};
use crate::worker_client::WorkerClient;
use deai_client::WorkerEntry;
use deai_engine::sampler::TokenLogprobs;
use deai_engine::tokenizer::Tokenizer;
use deai_engine::{GenParams, OutputText, StopReason};
use deai_ledger::job_cost;
use deai_ledger::{Address, TxKind};
use deai_types::Hash256;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Longest a worker's run may last in all (its silences are limited separately).
const RUN_LIMIT: Duration = Duration::from_secs(3600);

/// What the dispatcher tells the handler.
#[derive(Debug)]
pub(super) enum Out {
    /// New text, and the log-probabilities of the tokens that carried it when the request
    /// asked for them (a token whose bytes end mid-character comes with empty text).
    Text {
        text: String,
        logprobs: Vec<(u32, TokenLogprobs)>,
    },
    /// The choice is answered: its whole text and (when asked) every token's logprobs, all
    /// from the one attempt whose receipt signs them.
    Done {
        job: Hash256,
        stop_reason: StopReason,
        prompt_tokens: usize,
        output_tokens: usize,
        worker: Address,
        text: String,
        logprobs: Vec<(u32, TokenLogprobs)>,
    },
    Failed(String),
}

/// One choice of a request: what every worker attempt for it runs.
pub(super) struct Choice {
    /// The choice's request id (its receipt id for the client).
    pub(super) request: Hash256,
    /// The account that pays (and the app that brought the request).
    pub(super) client: super::Payer,
    pub(super) model: Hash256,
    pub(super) prompt_tokens: Vec<u32>,
    pub(super) params: GenParams,
    pub(super) top_logprobs: Option<usize>,
    /// Streamed to the client as it comes (else answered once, from one attempt only).
    pub(super) stream: bool,
    /// The model's tokenizer: the client's text is derived from token ids with it.
    pub(super) tokenizer: Arc<Tokenizer>,
}

/// What a streaming client was already sent of a choice, across worker attempts: the text,
/// and the tokens whose logprobs it got (when it asked for them).
#[derive(Default)]
pub(super) struct Sent {
    text: String,
    ids: Vec<u32>,
}

/// One worker's output as it arrives: its token ids, the text they make, and (streaming)
/// what of it the client has not been sent yet.
struct Relay<'a> {
    sent: &'a mut Sent,
    tokenizer: &'a Tokenizer,
    /// Whether new output goes to the client before the receipt.
    stream: bool,
    /// Whether the client asked for logprobs.
    logprobs: bool,
    max_tokens: usize,
    /// The text of `streamed`, as the engine makes it.
    text: OutputText,
    /// The tokens this worker streamed (its receipt must sign exactly these).
    streamed: Vec<u32>,
    /// This worker's whole answer so far: the text of its ids.
    answer: String,
    /// Each token's logprobs, when asked.
    lps: Vec<(u32, TokenLogprobs)>,
}

impl<'a> Relay<'a> {
    fn new(sent: &'a mut Sent, choice: &'a Choice) -> Self {
        Relay {
            sent,
            tokenizer: &choice.tokenizer,
            stream: choice.stream,
            logprobs: choice.top_logprobs.is_some(),
            max_tokens: choice.params.max_tokens,
            text: OutputText::new(&choice.params.stop, choice.params.max_tokens),
            streamed: Vec::new(),
            answer: String::new(),
            lps: Vec::new(),
        }
    }

    /// Takes the worker's next token (its text, if it sent any, is not even looked at);
    /// returns what the client should be sent now, if anything. An error when the worker
    /// streams more tokens than the job allows, or (streaming) when its output contradicts
    /// what the client already has from an earlier attempt.
    fn token(
        &mut self,
        token: u32,
        logprobs: Option<TokenLogprobs>,
    ) -> Result<Option<Out>, String> {
        if self.streamed.len() >= self.max_tokens {
            return Err(format!(
                "it streamed more than the job's {} tokens",
                self.max_tokens
            ));
        }
        let (piece, _) = self.text.push(self.tokenizer, token);
        self.answer.push_str(&piece);
        let k = self.streamed.len();
        self.streamed.push(token);
        let lp = logprobs.filter(|_| self.logprobs);
        if let Some(lp) = &lp {
            self.lps.push((token, lp.clone()));
        }
        if !self.stream {
            return Ok(None);
        }
        // A replacement worker repeats the same tokens (same seed): it must reproduce what
        // the client has, and only what the client lacks is passed on.
        let common = self.answer.len().min(self.sent.text.len());
        if self.answer.as_bytes()[..common] != self.sent.text.as_bytes()[..common] {
            return Err("its output differs from the text the client was already streamed".into());
        }
        let mut lps = Vec::new();
        if self.logprobs {
            match self.sent.ids.get(k) {
                Some(&had) if had != token => {
                    return Err(format!(
                        "its token {k} differs from the one the client was already streamed"
                    ))
                }
                Some(_) => {}
                None => {
                    self.sent.ids.push(token);
                    lps.extend(lp.map(|lp| (token, lp)));
                }
            }
        }
        // `sent.text` is a prefix of `answer`, so its length is a character boundary there.
        let new = self.answer.get(self.sent.text.len()..).unwrap_or("");
        self.sent.text.push_str(new);
        Ok((!new.is_empty() || !lps.is_empty()).then(|| Out::Text {
            text: new.to_string(),
            logprobs: lps,
        }))
    }

    /// Once the receipt signs `streamed`: checks that this worker's whole output, ending as
    /// the receipt says, covers all the client was sent, and returns its text.
    fn finish(&self, stop_reason: StopReason) -> Result<String, String> {
        if self.text.end() != Some(stop_reason) {
            return Err(format!(
                "its tokens end with {:?}, not the {stop_reason:?} it signs",
                self.text.end()
            ));
        }
        let covered =
            self.answer.starts_with(&self.sent.text) && self.streamed.starts_with(&self.sent.ids);
        if self.stream && !covered {
            return Err(
                "its answer does not cover the text the client was already streamed".into(),
            );
        }
        Ok(self.answer.clone())
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
    let payer = &choice.client;
    let escrow = deai_ledger::state::escrow_for(
        job_cost(
            (choice.prompt_tokens.len() + choice.params.max_tokens) as u64,
            w.worker.price_per_1k,
        ),
        payer.surcharge_bps(),
    );
    let kind = TxKind::OpenJob {
        job,
        model: choice.model,
        max_tokens: choice.params.max_tokens as u32,
        escrow,
        worker: Some(w.address),
        app: payer.app,
        client: payer.client,
    };
    // Submitting through the signer re-signs the escrow if the client's account was used
    // elsewhere (another gateway, `deai tx`) and its nonce moved on; otherwise the escrow
    // would never reach the chain and the worker would serve the request unpaid.
    let open_job = match payer.signer.submit_signed(kind.clone()).await {
        Ok((_, tx)) => tx,
        Err(e) => {
            // The worker re-submits the escrow it is handed: give it a signed one anyway.
            tracing::debug!("gateway's escrow submission: {e:#}");
            payer.signer.sign(kind).await?
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
    let mut relay = Relay::new(sent, choice);
    loop {
        let Some(ev) = events.next_event().await? else {
            anyhow::bail!("stream ended before the receipt");
        };
        match ev {
            // The worker's `text` is ignored: the client's comes from the ids.
            RunEvent::Token {
                token, logprobs, ..
            } => {
                let next = relay
                    .token(token, logprobs)
                    .map_err(|e| anyhow::anyhow!("worker output refused: {e}"))?;
                if let Some(msg) = next {
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
                let text = relay
                    .finish(r.stop_reason)
                    .map_err(|e| anyhow::anyhow!("unacceptable receipt: {e}"))?;
                store
                    .keep_answer(&choice.request, &job, &receipt, &text)
                    .await?;
                // Hold the worker to this receipt on chain: another digest or token count
                // posted for the job is challenged.
                super::watch::spawn(
                    choice.client.signer.clone(),
                    job,
                    super::watch::Served {
                        digest: receipt_digest,
                        tokens: (r.prompt_tokens.len() + r.output_tokens.len()) as u32,
                    },
                );
                let _ = out
                    .send(Out::Done {
                        job,
                        stop_reason: r.stop_reason,
                        prompt_tokens: r.prompt_tokens.len(),
                        output_tokens: r.output_tokens.len(),
                        worker: w.address,
                        text,
                        logprobs: relay.lps,
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

    /// A choice on the tiny model: `max_tokens` tokens, stop string `stop`.
    fn choice(stream: bool, logprobs: bool, max_tokens: usize, stop: &[&str]) -> Choice {
        let ledger = deai_client::ChainClient::new("http://127.0.0.1:9");
        Choice {
            request: Hash256([1; 32]),
            client: super::super::Payer {
                signer: Arc::new(deai_client::Signer::new(
                    deai_proof::generate_key(),
                    Hash256([7; 32]),
                    1,
                    ledger,
                )),
                client: None,
                app: None,
            },
            model: Hash256([9; 32]),
            prompt_tokens: vec![5, 6, 7],
            params: GenParams {
                max_tokens,
                stop: stop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            top_logprobs: logprobs.then_some(1),
            stream,
            tokenizer: Arc::new(crate::testing::tiny_model().tokenizer),
        }
    }

    /// The tiny vocabulary's token for one ASCII byte.
    fn byte(c: &Choice, b: u8) -> u32 {
        (0..512)
            .find(|&i| c.tokenizer.token_bytes(i) == Some(vec![b]))
            .unwrap()
    }

    fn lp(x: f32) -> Option<TokenLogprobs> {
        Some(TokenLogprobs {
            logprob: x,
            top: vec![],
        })
    }

    fn text_of(o: Result<Option<Out>, String>) -> Option<(String, usize)> {
        match o.unwrap() {
            Some(Out::Text { text, logprobs }) => Some((text, logprobs.len())),
            Some(_) => panic!("not text"),
            None => None,
        }
    }

    #[test]
    fn the_client_reads_the_text_of_the_ids_with_the_engines_stop_handling() {
        let c = choice(true, false, 8, &["lo"]);
        let [h, e, l, o] = [b'h', b'e', b'l', b'o'].map(|b| byte(&c, b));
        let mut sent = Sent::default();
        let mut r = Relay::new(&mut sent, &c);
        assert_eq!(text_of(r.token(h, None)), Some(("h".into(), 0)));
        assert_eq!(text_of(r.token(e, None)), Some(("e".into(), 0)));
        // `l` may start the stop string `lo`: held back, as the engine holds it.
        assert_eq!(text_of(r.token(l, None)), None);
        // `lo` is the stop string: the text ends before it.
        assert_eq!(text_of(r.token(o, None)), None);
        assert_eq!(r.finish(StopReason::StopString).unwrap(), "he");
        // A receipt that says otherwise about how the ids end is refused.
        let err = r.finish(StopReason::MaxTokens).unwrap_err();
        assert!(err.contains("StopString"), "{err}");
        // No more tokens than the job allows.
        let c = choice(true, false, 2, &[]);
        let mut sent = Sent::default();
        let mut r = Relay::new(&mut sent, &c);
        r.token(h, None).unwrap();
        r.token(h, None).unwrap();
        let err = r.token(h, None).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn a_replacement_worker_passes_on_only_what_the_client_lacks_and_never_splices() {
        let c = choice(true, true, 8, &[]);
        let [h, e, y, x] = [b'h', b'e', b'y', b'x'].map(|b| byte(&c, b));
        let mut sent = Sent::default();
        // The first worker streams two tokens, then fails.
        let mut first = Relay::new(&mut sent, &c);
        assert_eq!(text_of(first.token(h, lp(-0.1))), Some(("h".into(), 1)));
        assert_eq!(text_of(first.token(e, lp(-0.2))), Some(("e".into(), 1)));
        // Its replacement repeats them (same seed): nothing new until the third token.
        let mut second = Relay::new(&mut sent, &c);
        assert_eq!(text_of(second.token(h, lp(-0.1))), None);
        assert_eq!(text_of(second.token(e, lp(-0.2))), None);
        assert_eq!(text_of(second.token(y, lp(-0.3))), Some(("y".into(), 1)));
        // Its receipt is checked against all it streamed, and its whole answer is kept.
        assert_eq!(second.streamed, vec![h, e, y]);
        assert_eq!(second.answer, "hey");
        assert_eq!(second.lps.len(), 3);
        // A third worker whose output contradicts what the client has is refused at once,
        // before anything of it is passed on.
        let mut third = Relay::new(&mut sent, &c);
        assert_eq!(text_of(third.token(h, lp(-0.1))), None);
        let err = third.token(x, lp(-0.1)).unwrap_err();
        assert!(err.contains("differs"), "{err}");
        assert_eq!(sent.text, "hey");
        // With logprobs, any other token than one the client has logprobs for is refused.
        let mut other = Relay::new(&mut sent, &c);
        let stop = c.tokenizer.stop_ids()[0];
        assert_eq!(text_of(other.token(h, lp(-0.1))), None);
        let err = other.token(stop, None).unwrap_err();
        assert!(err.contains("token 1 differs"), "{err}");
        // One that agrees but ends (its receipt) before covering what the client has is
        // refused too: the client must not keep text no receipt signs.
        let c = choice(true, false, 8, &[]);
        let mut sent = Sent::default();
        let mut first = Relay::new(&mut sent, &c);
        for t in [h, e, y] {
            first.token(t, None).unwrap();
        }
        let mut short = Relay::new(&mut sent, &c);
        assert_eq!(text_of(short.token(h, None)), None);
        assert_eq!(text_of(short.token(e, None)), None);
        assert_eq!(text_of(short.token(stop, None)), None);
        let err = short.finish(StopReason::Eos).unwrap_err();
        assert!(err.contains("does not cover"), "{err}");
        assert_eq!(sent.text, "hey");
        // Logprobs the client did not ask for are not passed on.
        let mut sent = Sent::default();
        let mut plain = Relay::new(&mut sent, &c);
        assert_eq!(text_of(plain.token(h, lp(-0.1))), Some(("h".into(), 0)));
    }

    #[test]
    fn a_json_answer_is_the_successful_attempts_alone() {
        let c = choice(false, true, 3, &[]);
        let [h, e, y, x] = [b'h', b'e', b'y', b'x'].map(|b| byte(&c, b));
        let mut sent = Sent::default();
        // A failed attempt's output goes nowhere...
        let mut first = Relay::new(&mut sent, &c);
        assert_eq!(text_of(first.token(x, lp(-0.1))), None);
        assert_eq!(text_of(first.token(x, lp(-0.1))), None);
        // ...and does not constrain the next one, whose answer is its own ids' text.
        let mut second = Relay::new(&mut sent, &c);
        for t in [h, e, y] {
            assert_eq!(text_of(second.token(t, lp(-0.5))), None);
        }
        assert_eq!(second.finish(StopReason::MaxTokens).unwrap(), "hey");
        assert_eq!(
            second.lps.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            [h, e, y]
        );
    }
}
