//! The gateway: an OpenAI-compatible HTTP API in front of the network.
//!
//! For each request it authenticates the API key (one ledger account per key), tokenizes the
//! prompt, picks a worker from the ledger's registry (model, then recent failures, load and
//! price), signs an `OpenJob` escrowing the request's maximum cost, sends the job to the
//! worker and relays its tokens (as one JSON answer or as server-sent events). A worker that
//! refuses, fails or drops mid-stream is replaced by the next one with a fresh job; its
//! unused escrow comes back to the client when that job times out on chain. Because a job's
//! output is fixed by its seed on one kernel profile, a replacement's text continues where
//! the client's stream stopped.
//!
//! Every answer names its receipt (`x-deai-receipt` header, `deai` field), which
//! `GET /v1/receipts/{id}` serves with its verification status and ledger record.

use crate::ledger_client::{LedgerClient, Signer, WorkerEntry};
use crate::proto::{RunEvent, RunRequest};
use crate::worker::job_cost;
use crate::{http_error, HttpError};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deai_engine::json_schema::{Json as OrderedJson, JsonSchema};
use deai_engine::sampler::{self, TokenLogprobs, MAX_TOP_LOGPROBS};
use deai_engine::tokenizer::{chat_prompt, ChatMessage, Tokenizer};
use deai_engine::{GenParams, SamplingParams, StopReason};
use deai_ledger::{Address, TxKind};
use deai_types::Hash256;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A model the gateway offers: its public name, weights hash and tokenizer.
#[derive(Clone)]
pub struct CatalogEntry {
    pub name: String,
    pub id: Hash256,
    pub tokenizer: Arc<Tokenizer>,
    pub n_ctx: usize,
}

pub struct GatewayConfig {
    pub models: Vec<CatalogEntry>,
    /// API key -> the ledger account that pays for its requests.
    pub api_keys: Vec<(String, Arc<Signer>)>,
    /// Workers tried per request before giving up.
    pub attempts: usize,
    /// Longest silence from a worker before it counts as failed.
    pub worker_timeout: Duration,
    /// Receipts relayed by this gateway are kept under `dir/receipts/`.
    pub dir: PathBuf,
    /// Route only to workers with at least one accepted job on chain (their capability
    /// challenge, see `verifier`).
    pub require_qualified: bool,
}

struct Inner {
    cfg: GatewayConfig,
    ledger: LedgerClient,
    registry: tokio::sync::Mutex<Option<(Instant, Vec<WorkerEntry>)>>,
    /// Requests in flight per worker.
    load: Mutex<HashMap<Address, u64>>,
    /// Failures per worker seen by this gateway.
    failures: Mutex<HashMap<Address, u64>>,
    /// Jobs sent per worker: among equals, the least used goes first.
    assigned: Mutex<HashMap<Address, u64>>,
}

#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

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
    if crate::proto::receipt_digest(&bytes) != digest {
        return Err("its digest does not match its bytes".into());
    }
    Ok(r)
}

/// How much of a request's output the client already has, across worker attempts.
#[derive(Default)]
struct Sent {
    bytes: usize,
    tokens: usize,
}

/// What the dispatcher tells the handler.
enum Out {
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

impl Gateway {
    pub fn new(cfg: GatewayConfig, ledger: LedgerClient) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cfg.dir.join("receipts"))?;
        std::fs::create_dir_all(cfg.dir.join("requests"))?;
        Ok(Gateway(Arc::new(Inner {
            cfg,
            ledger,
            registry: tokio::sync::Mutex::new(None),
            load: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            assigned: Mutex::new(HashMap::new()),
        })))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/models", get(models))
            .route("/v1/models/{id}", get(model_info))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/receipts/{id}", get(receipt))
            .route("/v1/gateway/status", get(gateway_status))
            .merge(deai_explorer::router(deai_explorer::UiConfig::GATEWAY))
            .fallback(chain_proxy)
            .layer(axum::extract::DefaultBodyLimit::max(crate::MAX_BODY))
            .layer(axum::middleware::map_response(crate::close_if_body_unread))
            .with_state(self.clone())
    }

    fn auth(&self, headers: &HeaderMap) -> Result<Arc<Signer>, HttpError> {
        let h = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                http_error(
                    StatusCode::UNAUTHORIZED,
                    "missing API key: send `Authorization: Bearer <key>`",
                )
            })?;
        let key = h.strip_prefix("Bearer ").unwrap_or(h).trim();
        self.0
            .cfg
            .api_keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| http_error(StatusCode::UNAUTHORIZED, "invalid API key"))
    }

    fn model(&self, name: &str) -> Result<&CatalogEntry, HttpError> {
        self.0
            .cfg
            .models
            .iter()
            .find(|m| m.name == name || m.id.to_string() == name)
            .ok_or_else(|| {
                http_error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "the model `{name}` does not exist here; GET /v1/models lists the served ones"
                    ),
                )
                .with_code("model_not_found")
            })
    }

    /// Active, staked workers serving `model`, best first.
    async fn candidates(&self, model: &Hash256) -> Result<Vec<WorkerEntry>, HttpError> {
        let mut reg = self.0.registry.lock().await;
        let fresh = reg
            .as_ref()
            .is_some_and(|(t, _)| t.elapsed() < Duration::from_millis(500));
        if !fresh {
            let list = self.0.ledger.workers().await.map_err(|e| {
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("ledger unavailable: {e:#}"),
                )
            })?;
            *reg = Some((Instant::now(), list));
        }
        let min_stake = 1; // the ledger enforces its own minimum at registration
        let load = self.0.load.lock().unwrap().clone();
        let fails = self.0.failures.lock().unwrap().clone();
        let assigned = self.0.assigned.lock().unwrap().clone();
        let mut c: Vec<WorkerEntry> = reg
            .as_ref()
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.worker.active && w.stake >= min_stake && w.worker.models.contains(model))
            .filter(|w| !self.0.cfg.require_qualified || w.worker.jobs_done > 0)
            .collect();
        c.sort_by_key(|w| {
            (
                fails.get(&w.address).copied().unwrap_or(0),
                w.worker.jobs_rejected,
                load.get(&w.address).copied().unwrap_or(0),
                w.worker.price_per_1k,
                assigned.get(&w.address).copied().unwrap_or(0),
                w.address,
            )
        });
        Ok(c)
    }

    /// Checks the request, then starts dispatching its `n` choices, each a job of its own
    /// (choice `i` samples with seed `seed + i`); returns each choice's request id (its
    /// receipt id) and the stream of its output.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        client: Arc<Signer>,
        model: &CatalogEntry,
        prompt_tokens: Vec<u32>,
        params: GenParams,
        top_logprobs: Option<usize>,
        n: usize,
        prompt: Value,
    ) -> Result<Vec<(Hash256, tokio::sync::mpsc::Receiver<Out>)>, HttpError> {
        let total = prompt_tokens.len().saturating_add(params.max_tokens);
        if total > model.n_ctx {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "this model's context is {} tokens; the prompt has {} and max_tokens is {}",
                    model.n_ctx,
                    prompt_tokens.len(),
                    params.max_tokens
                ),
            )
            .with_code("context_length_exceeded"));
        }
        let workers = self.candidates(&model.id).await?;
        let Some(first) = workers.first() else {
            return Err(http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no active worker serves {} right now", model.name),
            )
            .with_code("no_worker"));
        };
        // Each choice escrows its maximum cost and pays a transaction fee.
        let need = job_cost(total, first.worker.price_per_1k)
            .saturating_add(client.fee())
            .saturating_mul(n as u64);
        let (balance, _, _) = self
            .0
            .ledger
            .account(&client.address())
            .await
            .map_err(|e| {
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("ledger unavailable: {e:#}"),
                )
            })?;
        if balance < need {
            return Err(http_error(
                StatusCode::PAYMENT_REQUIRED,
                format!("this request may cost {need}; the account holds {balance}"),
            ));
        }
        // Spread the choices over the workers that rank equal first (no failures seen, as few
        // rejections as the best): workers run one job at a time, so choices sent to one
        // worker would queue behind each other.
        let fails = self.0.failures.lock().unwrap().clone();
        let rank = |w: &WorkerEntry| {
            (
                fails.get(&w.address).copied().unwrap_or(0),
                w.worker.jobs_rejected,
            )
        };
        let peers = workers
            .iter()
            .take_while(|w| rank(w) == rank(first))
            .count();
        let mut runs = Vec::with_capacity(n);
        for i in 0..n {
            let mut workers = workers.clone();
            workers[..peers].rotate_left(i % peers);
            let request = Hash256(deai_proof::random_nonce());
            // The prompt, for its owner only (`GET /v1/receipts/{id}` with the same API key):
            // `prompt` is `{"owner": <SHA-256 of the API key>, "prompt": ...}`.
            let mut record = prompt.clone();
            record["client"] = json!(hex::encode(client.address()));
            let path = self.conversation_path(&request, "prompt.json");
            if let Err(e) = tokio::fs::write(&path, record.to_string()).await {
                tracing::warn!("cannot keep the prompt of request {request}: {e}");
            }
            let mut params = params.clone();
            params.sampling.seed = params.sampling.seed.wrapping_add(i as u64);
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            let g = self.clone();
            let (client, model_id) = (client.clone(), model.id);
            let prompt_tokens = prompt_tokens.clone();
            tokio::spawn(async move {
                g.dispatch(
                    request,
                    client,
                    model_id,
                    prompt_tokens,
                    params,
                    top_logprobs,
                    workers,
                    tx,
                )
                .await
            });
            runs.push((request, rx));
        }
        Ok(runs)
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        request: Hash256,
        client: Arc<Signer>,
        model: Hash256,
        prompt_tokens: Vec<u32>,
        params: GenParams,
        top_logprobs: Option<usize>,
        workers: Vec<WorkerEntry>,
        out: tokio::sync::mpsc::Sender<Out>,
    ) {
        // What the client already has: bytes of text, and tokens whose logprobs it was sent.
        let mut sent = Sent::default();
        let mut errors = Vec::new();
        for w in workers.iter().take(self.0.cfg.attempts.max(1)) {
            *self.0.load.lock().unwrap().entry(w.address).or_default() += 1;
            *self
                .0
                .assigned
                .lock()
                .unwrap()
                .entry(w.address)
                .or_default() += 1;
            let r = self
                .attempt(
                    request,
                    &client,
                    model,
                    &prompt_tokens,
                    &params,
                    top_logprobs,
                    w,
                    &mut sent,
                    &out,
                )
                .await;
            *self.0.load.lock().unwrap().entry(w.address).or_default() -= 1;
            match r {
                Ok(_job) => return,
                Err(e) => {
                    tracing::warn!(worker = %hex::encode(&w.address[..6]), "attempt failed: {e:#}");
                    *self
                        .0
                        .failures
                        .lock()
                        .unwrap()
                        .entry(w.address)
                        .or_default() += 1;
                    errors.push(format!("worker {}: {e:#}", hex::encode(&w.address[..6])));
                }
            }
        }
        let _ = out
            .send(Out::Failed(format!(
                "no worker completed the request ({})",
                errors.join("; ")
            )))
            .await;
    }

    /// One worker, one job. Returns the job id once the worker's `Done` arrived.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        request: Hash256,
        client: &Signer,
        model: Hash256,
        prompt_tokens: &[u32],
        params: &GenParams,
        top_logprobs: Option<usize>,
        w: &WorkerEntry,
        sent: &mut Sent,
        out: &tokio::sync::mpsc::Sender<Out>,
    ) -> anyhow::Result<Hash256> {
        let nonce = deai_proof::random_nonce();
        let job = Hash256(
            deai_proof::JobSpec {
                model_id: model,
                prompt_tokens: prompt_tokens.to_vec(),
                params: params.clone(),
                nonce,
            }
            .id(),
        );
        let escrow = job_cost(
            prompt_tokens.len() + params.max_tokens,
            w.worker.price_per_1k,
        );
        let kind = TxKind::OpenJob {
            job,
            model,
            max_tokens: params.max_tokens as u32,
            escrow,
            worker: Some(w.address),
        };
        // Submitting through the signer re-signs the escrow if the client's account was used
        // elsewhere (another gateway, `deai tx`) and its nonce moved on; otherwise the escrow
        // would never reach the chain and the worker would serve the request unpaid.
        let open_job = match client.submit_signed(kind.clone()).await {
            Ok((_, tx)) => tx,
            Err(e) => {
                // The worker re-submits the escrow it is handed: give it a signed one anyway.
                tracing::debug!("gateway's escrow submission: {e:#}");
                client.sign(kind).await?
            }
        };
        let req = RunRequest {
            model_id: model,
            prompt_tokens: prompt_tokens.to_vec(),
            params: params.clone(),
            nonce,
            open_job,
            top_logprobs: top_logprobs.and_then(|k| u8::try_from(k).ok()),
        };
        let url = format!("{}/worker/v1/run", w.worker.endpoint.trim_end_matches('/'));
        let http = crate::http_client(&url, Duration::from_secs(3600));
        let mut resp =
            tokio::time::timeout(self.0.cfg.worker_timeout, http.post(&url).json(&req).send())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no answer within {:?}", self.0.cfg.worker_timeout)
                })??;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("HTTP {status}: {body}");
        }
        let mut buf: Vec<u8> = Vec::new();
        let mut produced = 0usize;
        let mut streamed: Vec<u32> = Vec::new();
        let mut answer = String::new();
        loop {
            let chunk = tokio::time::timeout(self.0.cfg.worker_timeout, resp.chunk())
                .await
                .map_err(|_| anyhow::anyhow!("silent for {:?}", self.0.cfg.worker_timeout))??;
            let Some(chunk) = chunk else {
                anyhow::bail!("stream ended before the receipt");
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let ev: RunEvent = serde_json::from_slice(&line)?;
                match ev {
                    RunEvent::Token {
                        token,
                        text,
                        logprobs,
                    } => {
                        answer.push_str(&text);
                        // A replacement worker repeats the same tokens (same seed): pass on
                        // only what the client does not have yet.
                        let end = produced + text.len();
                        let mut piece = String::new();
                        if end > sent.bytes {
                            let skip = sent.bytes.saturating_sub(produced);
                            piece = text.get(skip..).unwrap_or(&text).to_string();
                            sent.bytes = end;
                        }
                        produced = end;
                        let mut lps = Vec::new();
                        let k = streamed.len();
                        if k >= sent.tokens {
                            if let Some(lp) = logprobs.filter(|_| top_logprobs.is_some()) {
                                lps.push((token, lp));
                            }
                            sent.tokens = k + 1;
                        }
                        streamed.push(token);
                        if !piece.is_empty() || !lps.is_empty() {
                            let msg = Out::Text {
                                text: piece,
                                logprobs: lps,
                            };
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
                        // The client's usage and finish reason come from the signed receipt,
                        // not from the worker's unsigned summary next to it.
                        let r = check_receipt(&receipt, job, &w.address, receipt_digest)
                            .map_err(|e| anyhow::anyhow!("unacceptable receipt: {e}"))?;
                        if streamed != r.output_tokens {
                            anyhow::bail!(
                                "unacceptable receipt: it signs {} output tokens that are not \
                                 the {} streamed",
                                r.output_tokens.len(),
                                streamed.len()
                            );
                        }
                        let (stop_reason, prompt_tokens, output_tokens) =
                            (r.stop_reason, r.prompt_tokens.len(), r.output_tokens.len());
                        let dir = &self.0.cfg.dir;
                        let path = dir.join("receipts").join(format!("{job}.json"));
                        tokio::fs::write(&path, serde_json::to_vec_pretty(&receipt)?).await?;
                        // Request id -> the job that answered it (survives restarts).
                        let req_path = dir.join("requests").join(request.to_string());
                        tokio::fs::write(&req_path, job.to_string()).await?;
                        // ... and back, and the answer (shown to the request's owner).
                        let job_path = self.conversation_path(&job, "request");
                        tokio::fs::write(&job_path, request.to_string()).await?;
                        let answer_path = self.conversation_path(&request, "answer.txt");
                        tokio::fs::write(&answer_path, &answer).await?;
                        let _ = out
                            .send(Out::Done {
                                job,
                                stop_reason,
                                prompt_tokens,
                                output_tokens,
                                worker: w.address,
                            })
                            .await;
                        return Ok(job);
                    }
                    RunEvent::Error { message } => anyhow::bail!("worker error: {message}"),
                }
            }
        }
    }

    /// The receipt of request or job `id`, with its ledger record and verification status.
    fn conversation_path(&self, id: &Hash256, what: &str) -> PathBuf {
        self.0.cfg.dir.join("requests").join(format!("{id}.{what}"))
    }

    /// The prompt and answer of `request`, if `viewer` is the account that paid for it.
    /// The prompt and answer of `request`, if `viewer` (the SHA-256 of an API key) is the key
    /// that sent it: two keys paying from one account do not see each other's prompts.
    async fn conversation(&self, request: &Hash256, viewer: Option<Hash256>) -> Option<Value> {
        let viewer = viewer?;
        let rec: Value = serde_json::from_slice(
            &tokio::fs::read(self.conversation_path(request, "prompt.json"))
                .await
                .ok()?,
        )
        .ok()?;
        if rec["owner"].as_str()? != viewer.to_string() {
            return None;
        }
        let answer = tokio::fs::read_to_string(self.conversation_path(request, "answer.txt"))
            .await
            .ok();
        Some(json!({ "prompt": rec["prompt"], "answer": answer }))
    }

    /// Per registered worker: requests in flight, failures and jobs sent as this gateway
    /// sees them, and the compute time the worker reports (`/worker/v1/health`, asked with
    /// a short timeout; `null` when it does not answer), for revenue per compute-hour.
    async fn worker_stats(&self) -> Value {
        // Active workers serving a model of this gateway, at most 64, each asked once with a
        // short timeout (anyone can register an endpoint: keep this probe small).
        let registered: Vec<WorkerEntry> = self
            .0
            .ledger
            .workers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|w| {
                w.worker.active
                    && self
                        .0
                        .cfg
                        .models
                        .iter()
                        .any(|m| w.worker.models.contains(&m.id))
            })
            .take(64)
            .collect();
        let health = futures::future::join_all(registered.iter().map(|w| {
            let url = format!(
                "{}/worker/v1/health",
                w.worker.endpoint.trim_end_matches('/')
            );
            async move {
                let http = crate::http_client(&url, Duration::from_secs(3));
                let r = http.get(&url).send().await.ok()?;
                r.json::<Value>().await.ok()
            }
        }))
        .await;
        let load = self.0.load.lock().unwrap().clone();
        let failures = self.0.failures.lock().unwrap().clone();
        let assigned = self.0.assigned.lock().unwrap().clone();
        let list: Vec<Value> = registered
            .iter()
            .zip(health)
            .map(|(w, h)| {
                let a = &w.address;
                json!({
                    "address": hex::encode(a),
                    "in_flight": load.get(a).copied().unwrap_or(0),
                    "failures": failures.get(a).copied().unwrap_or(0),
                    "assigned": assigned.get(a).copied().unwrap_or(0),
                    "reachable": h.is_some(),
                    "compute_ms": h.as_ref().and_then(|h| h["compute_ms"].as_u64()),
                    "busy": h.as_ref().and_then(|h| h["busy"].as_u64()),
                    "mean_job_ms": h.as_ref().and_then(|h| h["mean_job_ms"].as_u64()),
                    "refused_busy": h.as_ref().and_then(|h| h["refused_busy"].as_u64()),
                })
            })
            .collect();
        json!({
            "models": self.0.cfg.models.iter().map(|m| &m.name).collect::<Vec<_>>(),
            "workers": list,
        })
    }

    async fn receipt_view(&self, id: Hash256, viewer: Option<Hash256>) -> Result<Value, HttpError> {
        let mapped: Option<Hash256> =
            tokio::fs::read_to_string(self.0.cfg.dir.join("requests").join(id.to_string()))
                .await
                .ok()
                .and_then(|s| s.trim().parse().ok());
        let job = mapped.unwrap_or(id);
        let request = match mapped {
            Some(_) => Some(id),
            None => tokio::fs::read_to_string(self.conversation_path(&id, "request"))
                .await
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        };
        let conversation = match request {
            Some(r) => self.conversation(&r, viewer).await,
            None => None,
        };
        let path = self.0.cfg.dir.join("receipts").join(format!("{job}.json"));
        let receipt: Option<Value> = tokio::fs::read(&path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let on_chain = self.0.ledger.job(&job).await.map_err(|e| {
            http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("ledger unavailable: {e:#}"),
            )
        })?;
        if receipt.is_none() && on_chain.is_none() {
            return Err(http_error(
                StatusCode::NOT_FOUND,
                format!("no receipt or job {id}"),
            ));
        }
        let digest_matches = match (&receipt, &on_chain) {
            (Some(r), Some(j)) => j.receipt.as_ref().map(|rec| {
                deai_proof::Receipt::from_json(&r.to_string())
                    .ok()
                    .and_then(|r| r.to_bytes().ok())
                    .is_some_and(|b| crate::proto::receipt_digest(&b) == rec.digest)
            }),
            _ => None,
        };
        let verification = match on_chain.as_ref().map(|j| j.status) {
            Some(deai_ledger::state::JobStatus::Accepted) => "accepted",
            Some(deai_ledger::state::JobStatus::Rejected) => "rejected",
            Some(deai_ledger::state::JobStatus::Expired) => "expired",
            Some(deai_ledger::state::JobStatus::Unresolved) => "unresolved",
            _ => "pending",
        };
        let mut view = json!({
            "id": id,
            "job": job,
            "verification": verification,
            "receipt": receipt,
            "ledger": on_chain.map(|j| json!({
                "status": j.status,
                "worker": j.worker.map(hex::encode),
                "escrow": j.escrow,
                "receipt_digest_matches": digest_matches,
                "verdicts": j.verdicts,
                "settlement": j.settlement,
                "opened_at": j.opened_at,
            })),
        });
        if let Some(c) = conversation {
            view["conversation"] = c;
        }
        Ok(view)
    }
}

// ---- OpenAI request shapes -------------------------------------------------------------

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMsg>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
struct ChatMsg {
    role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts; `null` in an assistant
    /// message that calls tools.
    #[serde(default)]
    content: Value,
    /// An assistant message's tool calls (sent back by the client with the tools' results).
    #[serde(default)]
    tool_calls: Option<Value>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: Value,
    /// Answer with the prompt followed by the completion.
    echo: Option<Value>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize, Default)]
struct Common {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Option<Value>,
    stream: Option<bool>,
    n: Option<u64>,
    /// Chat: a bool; completions: how many alternatives (0..=5).
    logprobs: Option<Value>,
    /// Chat only: alternatives per token (0..=20), with `logprobs: true`.
    top_logprobs: Option<Value>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    /// `{"token id": bias}`, bias in -100..=100.
    logit_bias: Option<Value>,
    /// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", ...}` (kept
    /// in document order: a schema's property order is the output's key order).
    response_format: Option<OrderedJson>,
    /// Chat: `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
    tools: Option<OrderedJson>,
    /// Chat: `"none"`, `"auto"` (the default with tools), `"required"` or
    /// `{"type": "function", "function": {"name": ...}}`.
    tool_choice: Option<OrderedJson>,
    /// Every other field, checked by [`Common::check_rest`].
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// OpenAI parameters accepted and ignored: they do not change the answer.
const IGNORED_PARAMS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
    // `include_usage`: the final chunk always carries `usage`.
    "stream_options",
];

const DEFAULT_MAX_TOKENS: usize = 256;
const MAX_STOPS: usize = 4;
/// Most choices (`n`) per request: each is a separate job, escrowed and verified on its own.
const MAX_CHOICES: usize = 8;

impl Common {
    /// Refuses OpenAI features this gateway does not implement when a request asks for them
    /// (rather than silently answering without them), and names fields OpenAI does not know.
    fn check_rest(&self) -> Result<(), HttpError> {
        for (k, v) in &self.rest {
            let off = match k.as_str() {
                k if IGNORED_PARAMS.contains(&k) => true,
                "echo" => v.is_null() || *v == Value::Bool(false),
                "best_of" => v.is_null() || v.as_u64() == Some(1),
                // The deprecated forms of `tools` and `tool_choice`.
                "functions" => v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
                "function_call" => v.is_null() || v.as_str() == Some("none"),
                "suffix" => v.is_null() || v.as_str() == Some(""),
                _ => {
                    return Err(http_error(
                        StatusCode::BAD_REQUEST,
                        format!("Unrecognized request argument supplied: {k}"),
                    )
                    .with_code("unknown_parameter"))
                }
            };
            if !off {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{k} is not supported by this gateway (answers are plain text from one \
                         verifiable run); leave it unset"
                    ),
                )
                .with_code("unsupported_parameter"));
            }
        }
        Ok(())
    }

    /// Choices to generate: `n` in 1..=[`MAX_CHOICES`] (default 1), each its own job.
    fn n(&self) -> Result<usize, HttpError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES as u64).contains(&n) => Ok(n as usize),
            Some(n) => Err(http_error(
                StatusCode::BAD_REQUEST,
                format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
            )
            .with_code("invalid_value")),
        }
    }

    /// How many alternatives per token to report, if the request asked for logprobs at all.
    /// Chat: `logprobs: true` with `top_logprobs` in 0..=20; completions: `logprobs` in 0..=5
    /// (OpenAI's limits).
    fn top_logprobs(&self, chat: bool) -> Result<Option<usize>, HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m).with_code("invalid_value");
        let count = |v: &Value, name: &str, max: usize| match v.as_u64() {
            Some(k) if k as usize <= max => Ok(k as usize),
            _ => Err(bad(format!(
                "{name} must be an integer between 0 and {max}, got {v}"
            ))),
        };
        let top = self.top_logprobs.as_ref().filter(|v| !v.is_null());
        let on = self.logprobs.as_ref().filter(|v| !v.is_null());
        if !chat {
            if top.is_some() {
                return Err(bad(
                    "top_logprobs is a chat parameter; completions take logprobs: <count>".into(),
                ));
            }
            if on == Some(&Value::Bool(false)) {
                return Ok(None);
            }
            return on.map(|v| count(v, "logprobs", 5)).transpose();
        }
        let off = on.is_none_or(|v| *v == Value::Bool(false) || v.as_u64() == Some(0));
        match on {
            _ if off => match top {
                Some(v) if v.as_u64() != Some(0) => {
                    Err(bad("top_logprobs needs logprobs: true".into()))
                }
                _ => Ok(None),
            },
            Some(Value::Bool(true)) => Ok(Some(
                top.map(|v| count(v, "top_logprobs", MAX_TOP_LOGPROBS))
                    .transpose()?
                    .unwrap_or(0),
            )),
            Some(v) => Err(bad(format!("logprobs must be a boolean, got {v}"))),
            None => Ok(None),
        }
    }

    /// `logit_bias` as the sampler takes it: ids parsed, below `vocab`, sorted, each bias in
    /// range.
    fn logit_bias(&self, vocab: usize) -> Result<Vec<(u32, f32)>, HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        let map = match &self.logit_bias {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(m)) => m,
            Some(v) => {
                return Err(bad(format!(
                    "logit_bias must be an object mapping token ids to biases, got {v}"
                )))
            }
        };
        if map.len() > sampler::MAX_LOGIT_BIAS {
            return Err(bad(format!(
                "logit_bias has {} entries, at most {} are allowed",
                map.len(),
                sampler::MAX_LOGIT_BIAS
            )));
        }
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            let t = k
                .parse::<u32>()
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| {
                    bad(format!(
                        "logit_bias key {k:?} is not a token id of this model (0..{vocab})"
                    ))
                })?;
            let b = v
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    bad(format!(
                        "logit_bias for token {k} must be a number between -100 and 100, got {v}"
                    ))
                })?;
            // `+ 0.0` turns -0 into 0 (receipts keep one encoding per value).
            out.push((t, b as f32 + 0.0));
        }
        out.sort_by_key(|(t, _)| *t);
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(bad("logit_bias names a token id twice".into()));
        }
        Ok(out)
    }

    /// The output grammar `response_format` asks for: `(json_object, schema)`. As OpenAI
    /// requires, JSON mode needs the prompt to mention JSON (a model not told to write JSON can
    /// fill its budget with whitespace, which that grammar allows; a schema's layout allows
    /// none).
    fn output_format(&self, prompt: &str) -> Result<(bool, Option<JsonSchema>), HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        let Some(v) = self
            .response_format
            .as_ref()
            .filter(|v| **v != OrderedJson::Null)
        else {
            return Ok((false, None));
        };
        match v.get("type").and_then(OrderedJson::as_str) {
            Some("text") => Ok((false, None)),
            Some("json_object") => {
                if !prompt.to_lowercase().contains("json") {
                    return Err(bad(
                        "'messages' (or the prompt) must contain the word 'json' in some form, \
                         to use 'response_format' of type 'json_object'"
                            .into(),
                    ));
                }
                Ok((true, None))
            }
            Some("json_schema") => {
                let spec = v.get("json_schema").ok_or_else(|| {
                    bad("response_format json_schema needs a json_schema object".into())
                })?;
                let name = spec.get("name").and_then(OrderedJson::as_str).unwrap_or("");
                if !valid_name(name) {
                    return Err(bad(format!(
                        "response_format.json_schema.name must be 1-64 letters, digits, _ or -, \
                         got {name:?}"
                    ))
                    .with_code("invalid_value"));
                }
                let schema = spec
                    .get("schema")
                    .ok_or_else(|| bad("response_format.json_schema needs a schema".into()))?;
                let schema = JsonSchema::compile_object(schema).map_err(|e| {
                    bad(format!("response_format.json_schema: {e}")).with_code("invalid_value")
                })?;
                Ok((false, Some(schema)))
            }
            _ => Err(bad(format!(
                "response_format must be {{\"type\": \"text\"}}, {{\"type\": \"json_object\"}} \
                 or {{\"type\": \"json_schema\", ...}}, got {}",
                v.to_text()
            ))),
        }
    }

    /// The tools the model may call and how (`None`: no tools, or `tool_choice: "none"`).
    fn tools(&self) -> Result<Option<Tools>, HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m).with_code("invalid_value");
        let no_tools = || match &self.tool_choice {
            None | Some(OrderedJson::Null) => Ok(None),
            Some(OrderedJson::String(c)) if c == "none" || c == "auto" => Ok(None),
            Some(c) => Err(bad(format!("tool_choice {} needs tools", c.to_text()))),
        };
        let list = match &self.tools {
            None | Some(OrderedJson::Null) => return no_tools(),
            Some(OrderedJson::Array(a)) if a.is_empty() => return no_tools(),
            Some(OrderedJson::Array(a)) => a,
            Some(v) => return Err(bad(format!("tools must be a list, got {}", v.to_text()))),
        };
        if list.len() > MAX_TOOLS {
            return Err(bad(format!(
                "tools lists {} functions, at most {MAX_TOOLS} are allowed",
                list.len()
            )));
        }
        let mut tools: Vec<Tool> = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let f = match (
                t.get("type").and_then(OrderedJson::as_str),
                t.get("function"),
            ) {
                (Some("function"), Some(f)) => f,
                _ => {
                    return Err(bad(format!(
                        "tools[{i}] must be {{\"type\": \"function\", \"function\": {{...}}}}"
                    )))
                }
            };
            let name = f.get("name").and_then(OrderedJson::as_str).unwrap_or("");
            if !valid_name(name) {
                return Err(bad(format!(
                    "tools[{i}].function.name must be 1-64 letters, digits, _ or -, got {name:?}"
                )));
            }
            if tools.iter().any(|t| t.name == name) {
                return Err(bad(format!("tools names the function {name:?} twice")));
            }
            let description = match f.get("description") {
                None | Some(OrderedJson::Null) => None,
                Some(OrderedJson::String(d)) => Some(d.clone()),
                Some(_) => {
                    return Err(bad(format!(
                        "tools[{i}].function.description must be a string"
                    )))
                }
            };
            let parameters = match f.get("parameters") {
                None | Some(OrderedJson::Null) => OrderedJson::Object(vec![
                    ("type".into(), OrderedJson::String("object".into())),
                    ("properties".into(), OrderedJson::Object(vec![])),
                ]),
                Some(p) => p.clone(),
            };
            tools.push(Tool {
                name: name.to_string(),
                description,
                parameters,
            });
        }
        let choice = match &self.tool_choice {
            None | Some(OrderedJson::Null) => ToolChoice::Auto,
            Some(OrderedJson::String(c)) => match c.as_str() {
                "none" => {
                    // Unused, but still checked: a bad definition is an error either way.
                    JsonSchema::tool_calls(
                        &tools
                            .iter()
                            .map(|t| (t.name.clone(), t.parameters.clone()))
                            .collect::<Vec<_>>(),
                    )
                    .map_err(|e| bad(format!("tools: {e}")))?;
                    return Ok(None);
                }
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(bad(format!(
                        "tool_choice must be \"none\", \"auto\", \"required\" or a function, got \
                         {other:?}"
                    )))
                }
            },
            Some(c) => match c
                .get("function")
                .filter(|_| c.get("type").and_then(OrderedJson::as_str) == Some("function"))
                .and_then(|f| f.get("name"))
                .and_then(OrderedJson::as_str)
            {
                Some(n) if tools.iter().any(|t| t.name == n) => ToolChoice::Named(n.to_string()),
                Some(n) => {
                    return Err(bad(format!(
                        "tool_choice names {n:?}, which is not in tools"
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "tool_choice must be a string or {{\"type\": \"function\", \"function\": \
                         {{\"name\": ...}}}}, got {}",
                        c.to_text()
                    )))
                }
            },
        };
        // The grammar: a call of one of the allowed tools (or, with "auto", plain text).
        let allowed: Vec<(String, OrderedJson)> = tools
            .iter()
            .filter(|t| match &choice {
                ToolChoice::Named(n) => t.name == *n,
                _ => true,
            })
            .map(|t| (t.name.clone(), t.parameters.clone()))
            .collect();
        let grammar = match choice {
            ToolChoice::Auto => JsonSchema::tool_calls_or_text(&allowed),
            _ => JsonSchema::tool_calls(&allowed),
        }
        .map_err(|e| bad(format!("tools: {e}")))?;
        Ok(Some(Tools {
            tools,
            choice,
            grammar,
        }))
    }

    /// The generation parameters; `prompt` is what the client wrote (the messages' text, or
    /// the completion prompt).
    fn params(
        &self,
        prompt: &str,
        prompt_len: usize,
        n_ctx: usize,
        vocab: usize,
        tools: Option<&Tools>,
    ) -> Result<GenParams, HttpError> {
        self.check_rest()?;
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        let max = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => return Err(bad("max_tokens must be at least 1".into())),
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
            None => DEFAULT_MAX_TOKENS.min(n_ctx.saturating_sub(prompt_len).max(1)),
        };
        let temperature = self.temperature.unwrap_or(0.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(format!(
                "temperature must be between 0 and 2, got {temperature}"
            )));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad(format!("top_p must be in (0, 1], got {top_p}")));
        }
        let penalty = |name: &str, v: Option<f64>| match v.unwrap_or(0.0) {
            v if (-2.0..=2.0).contains(&v) => Ok(v as f32 + 0.0),
            v => Err(bad(format!("{name} must be between -2 and 2, got {v}"))),
        };
        let presence_penalty = penalty("presence_penalty", self.presence_penalty)?;
        let frequency_penalty = penalty("frequency_penalty", self.frequency_penalty)?;
        let logit_bias = self.logit_bias(vocab)?;
        let (json_object, mut json_schema) = self.output_format(prompt)?;
        if let Some(t) = tools {
            if json_object || json_schema.is_some() {
                return Err(bad(
                    "tools and a JSON response_format both constrain the answer; use one".into(),
                ));
            }
            json_schema = Some(t.grammar.clone());
        }
        let stop: Vec<String> = match &self.stop {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("stop must be a string or a list of strings".into()))?,
            Some(_) => return Err(bad("stop must be a string or a list of strings".into())),
        };
        if stop.len() > MAX_STOPS || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Err(bad(format!(
                "at most {MAX_STOPS} non-empty stop strings of up to 256 bytes"
            )));
        }
        Ok(GenParams {
            max_tokens: max,
            sampling: SamplingParams {
                temperature: temperature as f32 + 0.0,
                top_k: 0,
                top_p: top_p as f32,
                presence_penalty,
                frequency_penalty,
                logit_bias,
                json_object,
                json_schema,
                // No seed asked: draw one (it is in the receipt, so the run stays checkable).
                seed: self.seed.unwrap_or_else(|| {
                    u64::from_le_bytes(deai_proof::random_nonce()[..8].try_into().expect("8 bytes"))
                }),
            },
            stop,
        })
    }
}

/// Most functions in `tools`.
const MAX_TOOLS: usize = 32;

/// OpenAI's rule for function and schema names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Tool {
    name: String,
    description: Option<String>,
    parameters: OrderedJson,
}

enum ToolChoice {
    Auto,
    Required,
    Named(String),
}

/// A request's tools: shown to the model in the system message, and its output constrained to
/// `grammar` (a call, or with "auto" a call or plain text).
struct Tools {
    tools: Vec<Tool>,
    choice: ToolChoice,
    grammar: JsonSchema,
}

impl Tools {
    /// What the model is told, appended to the system message.
    fn instructions(&self) -> String {
        let mut s = String::from(
            "You can call these functions. To call one, reply with only a JSON object \
             {\"name\": <function name>, \"arguments\": <its arguments>}.\n",
        );
        for t in &self.tools {
            let mut f = vec![("name".to_string(), OrderedJson::String(t.name.clone()))];
            if let Some(d) = &t.description {
                f.push(("description".into(), OrderedJson::String(d.clone())));
            }
            f.push(("parameters".into(), t.parameters.clone()));
            s.push_str(&OrderedJson::Object(f).to_text());
            s.push('\n');
        }
        s.push_str(&match &self.choice {
            ToolChoice::Auto => "If no function helps, answer in plain text.".to_string(),
            ToolChoice::Required => "Reply with a function call.".to_string(),
            ToolChoice::Named(n) => format!("Reply with a call to {n}."),
        });
        s
    }
}

/// An output in the tool-call layout the grammar enforces,
/// `{"name": "<name>", "arguments": <arguments>}`: `(name, arguments text)`, the arguments as
/// the model wrote them. `None` for anything else (plain text, or a call cut short).
fn tool_call(text: &str) -> Option<(String, String)> {
    let v: OrderedJson = serde_json::from_str(text).ok()?;
    let v = &v;
    let name = v.get("name")?.as_str()?;
    let head = format!(
        "{{\"name\": {}, \"arguments\": ",
        serde_json::to_string(name).ok()?
    );
    let args = text.strip_prefix(&head)?.strip_suffix('}')?;
    match v {
        OrderedJson::Object(m) if m.len() == 2 && matches!(m[1].1, OrderedJson::Object(_)) => {
            Some((name.to_string(), args.to_string()))
        }
        _ => None,
    }
}

/// The `tool_calls` entry of an answer that called `name` (its id derived from the request).
fn tool_call_json(request: &Hash256, name: &str, args: &str) -> Value {
    json!({ "id": format!("call_{}", &request.to_string()[..24]), "type": "function",
            "function": { "name": name, "arguments": args } })
}

/// An assistant message's `tool_calls`, as the text the model wrote for them (one call per
/// line, in the layout the tool grammar enforces).
fn past_calls(calls: &Value) -> Result<String, HttpError> {
    let bad = || {
        http_error(
            StatusCode::BAD_REQUEST,
            "tool_calls must be a list of {\"type\": \"function\", \"function\": {\"name\", \
             \"arguments\"}}",
        )
    };
    let mut lines = Vec::new();
    for c in calls.as_array().ok_or_else(bad)? {
        let f = &c["function"];
        let (Some(name), Some(args)) = (f["name"].as_str(), f["arguments"].as_str()) else {
            return Err(bad());
        };
        lines.push(format!(
            "{{\"name\": {}, \"arguments\": {args}}}",
            serde_json::to_string(name).map_err(|_| bad())?
        ));
    }
    Ok(lines.join("\n"))
}

fn message_text(content: &Value) -> Result<String, HttpError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => {
                        return Err(http_error(
                            StatusCode::BAD_REQUEST,
                            "only text content parts are supported",
                        ))
                    }
                }
            }
            Ok(s)
        }
        _ => Err(http_error(
            StatusCode::BAD_REQUEST,
            "message content must be a string or a list of text parts",
        )),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, HttpError> {
    body.map(|Json(b)| b).map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        http_error(status, format!("malformed request body: {}", e.body_text()))
    })
}

/// Renders token log-probabilities as OpenAI does: chat's `{"content": [{token, logprob,
/// bytes, top_logprobs}]}`, or completions' `{tokens, token_logprobs, top_logprobs,
/// text_offset}` (offsets in characters from the start of the prompt, `prompt_chars` being
/// its length, as OpenAI counts them; counted across a stream's chunks).
/// `null` when the request did not ask for logprobs.
fn logprobs_renderer(
    tok: Arc<Tokenizer>,
    asked: bool,
    chat: bool,
    prompt_chars: usize,
) -> impl Fn(&[(u32, TokenLogprobs)]) -> Value + Send + Sync + 'static {
    let offset = Mutex::new(prompt_chars);
    // JSON has no infinity: OpenAI writes an impossible token's logprob as -9999.
    let num = |x: f32| {
        if x.is_finite() {
            json!(x)
        } else {
            json!(-9999.0)
        }
    };
    move |lps| {
        if !asked {
            return Value::Null;
        }
        let view = |id: u32| {
            let bytes = tok.token_bytes(id).unwrap_or_default();
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        };
        if chat {
            let content: Vec<Value> = lps
                .iter()
                .map(|(id, lp)| {
                    let (text, bytes) = view(*id);
                    let top: Vec<Value> = lp
                        .top
                        .iter()
                        .map(|(alt, l)| {
                            let (t, b) = view(*alt);
                            json!({ "token": t, "logprob": num(*l), "bytes": b })
                        })
                        .collect();
                    json!({ "token": text, "logprob": num(lp.logprob), "bytes": bytes,
                            "top_logprobs": top })
                })
                .collect();
            return json!({ "content": content, "refusal": null });
        }
        let mut off = offset.lock().unwrap_or_else(|e| e.into_inner());
        let (mut tokens, mut values, mut tops, mut offsets) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, lp) in lps {
            let (text, _) = view(*id);
            offsets.push(*off);
            *off += text.chars().count();
            tokens.push(text);
            values.push(num(lp.logprob));
            let top: serde_json::Map<String, Value> = lp
                .top
                .iter()
                .map(|(alt, l)| (view(*alt).0, num(*l)))
                .collect();
            tops.push(Value::Object(top));
        }
        json!({ "tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                "text_offset": offsets })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(s: StopReason) -> &'static str {
    match s {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

// ---- handlers ----------------------------------------------------------------------------

/// A model's entry in OpenAI's shape, with deai's extras.
fn model_json(m: &CatalogEntry, workers: usize) -> Value {
    json!({
        "id": m.name, "object": "model", "created": 0, "owned_by": "deai",
        "deai": { "model_id": m.id, "workers": workers, "context_length": m.n_ctx },
    })
}

async fn models(AxState(g): AxState<Gateway>) -> Result<Json<Value>, HttpError> {
    let mut data = Vec::new();
    for m in &g.0.cfg.models {
        data.push(model_json(m, g.candidates(&m.id).await?.len()));
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn model_info(
    AxState(g): AxState<Gateway>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let m = g.model(&id)?;
    Ok(Json(model_json(m, g.candidates(&m.id).await?.len())))
}

async fn receipt(
    AxState(g): AxState<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    // An API key is optional here; a wrong one is refused rather than silently ignored.
    let viewer = match headers.contains_key("authorization") {
        true => {
            g.auth(&headers)?;
            key_hash(&headers)
        }
        false => None,
    };
    let id = id
        .trim_start_matches("chatcmpl-")
        .trim_start_matches("cmpl-");
    let id: Hash256 = id
        .parse()
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, format!("bad receipt id: {e}")))?;
    Ok(Json(g.receipt_view(id, viewer).await?))
}

/// SHA-256 of the request's API key (what a stored prompt is keyed to, never the key).
fn key_hash(headers: &HeaderMap) -> Option<Hash256> {
    let h = headers.get("authorization")?.to_str().ok()?;
    let key = h.strip_prefix("Bearer ").unwrap_or(h).trim();
    Some(Hash256::digest_parts(
        "deai-gateway-api-key-v1",
        &[key.as_bytes()],
    ))
}

async fn gateway_status(AxState(g): AxState<Gateway>) -> Json<Value> {
    Json(g.worker_stats().await)
}

/// Fallback: the chain's query routes, forwarded to the ledger node; else a 404.
async fn chain_proxy(
    AxState(g): AxState<Gateway>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    crate::chain_proxy::forward(&g.0.ledger, method, uri).await
}

async fn chat_completions(
    AxState(g): AxState<Gateway>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let client = g.auth(&headers)?;
    let req = json_body(body)?;
    let model = g.model(&req.model)?.clone();
    if req.messages.is_empty() {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            "messages must not be empty",
        ));
    }
    let tools = req.common.tools()?;
    let mut msgs = Vec::new();
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer" | "tool"
        ) {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                format!("unknown role {:?}", m.role),
            ));
        }
        let role = if m.role == "developer" {
            "system"
        } else {
            &m.role
        };
        if m.tool_calls.as_ref().is_some_and(|c| !c.is_null()) && role != "assistant" {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "tool_calls belong to assistant messages, not {:?} ones",
                    m.role
                ),
            ));
        }
        let mut content = match &m.content {
            Value::Null if m.tool_calls.is_some() => String::new(),
            c => message_text(c)?,
        };
        // An assistant's earlier calls, written as the model writes them.
        if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) {
            let calls = past_calls(calls)?;
            if !calls.is_empty() {
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&calls);
            }
        }
        msgs.push(ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    if let Some(t) = &tools {
        match msgs.first_mut() {
            Some(m) if m.role == "system" => {
                m.content = format!("{}\n\n{}", m.content, t.instructions())
            }
            _ => msgs.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: format!(
                        "{}\n\n{}",
                        deai_engine::tokenizer::DEFAULT_SYSTEM_PROMPT,
                        t.instructions()
                    ),
                },
            ),
        }
    }
    let text = chat_prompt(&msgs, true);
    let tokens = model
        .tokenizer
        .encode(&text, true)
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let said: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
    let params = req.common.params(
        &said.join("\n"),
        tokens.len(),
        model.n_ctx,
        model.tokenizer.vocab_size(),
        tools.as_ref(),
    )?;
    let top = req.common.top_logprobs(true)?;
    if tools.is_some() && top.is_some() {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            "logprobs with tools is not supported by this gateway; ask for one or the other",
        )
        .with_code("unsupported_parameter"));
    }
    let stream = req.common.stream.unwrap_or(false);
    let prompt = json!(msgs
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect::<Vec<_>>());
    let prompt = json!({ "owner": key_hash(&headers), "prompt": prompt });
    let n = req.common.n()?;
    let reply = Reply {
        top_logprobs: top,
        n,
        stream,
        chat: true,
        echo: None,
        tools: tools.is_some(),
    };
    respond(g, client, model, tokens, params, reply, prompt).await
}

async fn completions(
    AxState(g): AxState<Gateway>,
    headers: HeaderMap,
    body: Result<Json<CompletionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let client = g.auth(&headers)?;
    let req = json_body(body)?;
    let model = g.model(&req.model)?.clone();
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        _ => {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "prompt must be one string",
            ))
        }
    };
    if prompt.is_empty() {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            "prompt must not be empty",
        ));
    }
    let tokens = model
        .tokenizer
        .encode(&prompt, false)
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let empty = |v: &Option<OrderedJson>, off: &OrderedJson| {
        v.as_ref()
            .is_none_or(|v| *v == OrderedJson::Null || v == off)
    };
    if !empty(&req.common.tools, &OrderedJson::Array(vec![]))
        || !empty(&req.common.tool_choice, &OrderedJson::String("none".into()))
    {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            "tools and tool_choice are chat parameters (POST /v1/chat/completions)",
        )
        .with_code("invalid_value"));
    }
    let params = req.common.params(
        &prompt,
        tokens.len(),
        model.n_ctx,
        model.tokenizer.vocab_size(),
        None,
    )?;
    let top = req.common.top_logprobs(false)?;
    let n = req.common.n()?;
    let stream = req.common.stream.unwrap_or(false);
    let echo = match &req.echo {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) if top.is_some() => {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "echo with logprobs is not supported by this gateway (prompt tokens get no \
                 logprobs); ask for one or the other",
            )
            .with_code("unsupported_parameter"))
        }
        Some(Value::Bool(true)) => Some(prompt.clone()),
        Some(v) => {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                format!("echo must be a boolean, got {v}"),
            )
            .with_code("invalid_value"))
        }
    };
    respond(
        g,
        client,
        model,
        tokens,
        params,
        Reply {
            top_logprobs: top,
            n,
            stream,
            chat: false,
            echo,
            tools: false,
        },
        json!({ "owner": key_hash(&headers), "prompt": prompt }),
    )
    .await
}

/// How to answer a request: the OpenAI shape and options around the runs.
struct Reply {
    top_logprobs: Option<usize>,
    n: usize,
    stream: bool,
    /// Chat completion objects (else legacy `text_completion`s).
    chat: bool,
    /// Completions' `echo`: this text (the prompt) before each choice's answer.
    echo: Option<String>,
    /// Chat with tools: an answer in the tool-call layout is returned as `tool_calls`.
    tools: bool,
}

async fn respond(
    g: Gateway,
    client: Arc<Signer>,
    model: CatalogEntry,
    tokens: Vec<u32>,
    params: GenParams,
    reply: Reply,
    prompt: Value,
) -> Result<Response, HttpError> {
    let Reply {
        top_logprobs,
        n,
        stream,
        chat,
        echo,
        tools,
    } = reply;
    // Completions count logprob text offsets from the start of the prompt.
    let prompt_chars = prompt["prompt"].as_str().map_or(0, |p| p.chars().count());
    let runs = g
        .start(client, &model, tokens, params, top_logprobs, n, prompt)
        .await?;
    let n = runs.len();
    let first = runs[0].0;
    let id = if chat {
        format!("chatcmpl-{first}")
    } else {
        format!("cmpl-{first}")
    };
    let created = now_secs();
    let name = model.name.clone();
    let ids: Vec<String> = runs.iter().map(|(r, _)| r.to_string()).collect();
    let receipt_header = [("x-deai-receipt", ids.join(","))];
    // One renderer per choice: completions count text offsets per choice.
    let renders: Vec<_> = (0..n)
        .map(|_| {
            let tok = model.tokenizer.clone();
            logprobs_renderer(tok, top_logprobs.is_some(), chat, prompt_chars)
        })
        .collect();
    if !stream {
        // Read every choice's channel at once: a choice left unread would stall its worker.
        let answers =
            futures::future::join_all(runs.into_iter().map(|(request, rx)| collect(request, rx)))
                .await;
        let mut choices = Vec::new();
        let mut done = Vec::new();
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        for (i, a) in answers.into_iter().enumerate() {
            let a = a?;
            let lp = renders[i](&a.logprobs);
            let finish = finish_reason(a.stop_reason);
            let call = tools.then(|| tool_call(&a.text)).flatten();
            choices.push(if let Some((name, args)) = call {
                let call = tool_call_json(&a.request, &name, &args);
                json!({ "index": i,
                        "message": { "role": "assistant", "content": null, "tool_calls": [call] },
                        "logprobs": lp, "finish_reason": "tool_calls" })
            } else if chat {
                json!({ "index": i, "message": { "role": "assistant", "content": a.text },
                        "logprobs": lp, "finish_reason": finish })
            } else {
                let text = format!("{}{}", echo.as_deref().unwrap_or(""), a.text);
                json!({ "index": i, "text": text, "logprobs": lp, "finish_reason": finish })
            });
            prompt_tokens = a.prompt_tokens;
            completion_tokens += a.output_tokens;
            done.push((a.request, a.job, a.worker));
        }
        let body = json!({
            "id": id, "object": if chat { "chat.completion" } else { "text_completion" },
            "created": created, "model": name, "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
            "deai": deai_field(&done),
        });
        return Ok((receipt_header, Json(body)).into_response());
    }
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = move |i: usize,
                      delta: Value,
                      lps: &[(u32, TokenLogprobs)],
                      finish: Option<&str>,
                      extra: Option<(Value, Value)>| {
        let lp = if lps.is_empty() {
            Value::Null
        } else {
            renders[i](lps)
        };
        let choice = if chat {
            json!({ "index": i, "delta": delta, "logprobs": lp, "finish_reason": finish })
        } else {
            json!({ "index": i, "text": delta.get("content").cloned().unwrap_or(json!("")),
                    "logprobs": lp, "finish_reason": finish })
        };
        let mut c = json!({ "id": id, "object": object, "created": created, "model": name,
                            "choices": [choice] });
        if let Some((usage, d)) = extra {
            c["usage"] = usage;
            c["deai"] = d;
        }
        Event::default().data(c.to_string())
    };
    // Chat opens each choice with its role; an echoing completion with the prompt.
    let opening = match (chat, echo) {
        (true, _) => Some(json!({ "role": "assistant", "content": "" })),
        (false, Some(p)) => Some(json!({ "content": p })),
        (false, None) => None,
    };
    let events = stream_events(runs, chunk, opening, tools);
    Ok((receipt_header, Sse::new(events)).into_response())
}

/// One choice, read to its end.
struct Answer {
    request: Hash256,
    text: String,
    logprobs: Vec<(u32, TokenLogprobs)>,
    job: Hash256,
    stop_reason: StopReason,
    prompt_tokens: usize,
    output_tokens: usize,
    worker: Address,
}

async fn collect(
    request: Hash256,
    mut rx: tokio::sync::mpsc::Receiver<Out>,
) -> Result<Answer, HttpError> {
    let mut text = String::new();
    let mut lps = Vec::new();
    loop {
        match rx.recv().await {
            Some(Out::Text { text: t, logprobs }) => {
                text.push_str(&t);
                lps.extend(logprobs);
            }
            Some(Out::Done {
                job,
                stop_reason,
                prompt_tokens,
                output_tokens,
                worker,
            }) => {
                return Ok(Answer {
                    request,
                    text,
                    logprobs: lps,
                    job,
                    stop_reason,
                    prompt_tokens,
                    output_tokens,
                    worker,
                })
            }
            Some(Out::Failed(e)) => {
                return Err(http_error(StatusCode::BAD_GATEWAY, e).with_code("worker_failed"))
            }
            None => return Err(http_error(StatusCode::BAD_GATEWAY, "request dropped")),
        }
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens })
}

/// The answer's `deai` field: the first choice's request (= receipt id), job and worker, and
/// with several choices, `choices` listing each one's.
fn deai_field(done: &[(Hash256, Hash256, Address)]) -> Value {
    let one = |(request, job, worker): &(Hash256, Hash256, Address)| {
        json!({ "receipt_id": request, "job": job, "worker": hex::encode(worker),
                "receipt_url": format!("/v1/receipts/{request}") })
    };
    let mut d = done.first().map(one).unwrap_or(Value::Null);
    if done.len() > 1 {
        d["choices"] = done.iter().map(one).collect();
    }
    d
}

fn worker_failed(message: &str) -> Event {
    Event::default().data(
        json!({ "error": { "message": message, "type": "server_error", "code": "worker_failed" } })
            .to_string(),
    )
}

type ChunkFn = dyn Fn(usize, Value, &[(u32, TokenLogprobs)], Option<&str>, Option<(Value, Value)>) -> Event
    + Send
    + Sync;

/// What a stream of `n` choices has seen so far.
struct StreamState {
    merged: futures::stream::SelectAll<futures::stream::BoxStream<'static, (usize, Out)>>,
    /// Opening chunks still to send, one per choice (chat: the role; an echoing completion:
    /// the prompt).
    opening: std::collections::VecDeque<usize>,
    requests: Vec<Hash256>,
    done: Vec<Option<(Hash256, Hash256, Address)>>,
    prompt_tokens: usize,
    completion_tokens: usize,
    ended: bool,
    /// With tools, per choice: the text held back while it may be a tool call (empty, or
    /// starting with `{`); `None` once it is plain text, which streams as it comes.
    held: Vec<Option<String>>,
    /// Events to send before reading more output.
    pending: std::collections::VecDeque<Event>,
}

/// Turns the dispatchers' output into SSE events: a role chunk per choice, content chunks
/// (each naming its choice's `index`), a final chunk per choice with its finish reason (the
/// last one to finish also carries `usage` and `deai` for all of them), then `[DONE]`.
fn stream_events(
    runs: Vec<(Hash256, tokio::sync::mpsc::Receiver<Out>)>,
    chunk: impl Fn(usize, Value, &[(u32, TokenLogprobs)], Option<&str>, Option<(Value, Value)>) -> Event
        + Send
        + Sync
        + 'static,
    open_delta: Option<Value>,
    tools: bool,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let chunk: Arc<ChunkFn> = Arc::new(chunk);
    let n = runs.len();
    let requests = runs.iter().map(|(r, _)| *r).collect();
    let merged = futures::stream::select_all(runs.into_iter().enumerate().map(|(i, (_, rx))| {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) })
            .map(move |o| (i, o))
            .boxed()
    }));
    let state = StreamState {
        merged,
        opening: if open_delta.is_some() {
            (0..n).collect()
        } else {
            Default::default()
        },
        requests,
        done: vec![None; n],
        prompt_tokens: 0,
        completion_tokens: 0,
        ended: false,
        held: vec![tools.then(String::new); n],
        pending: Default::default(),
    };
    let open_delta = Arc::new(open_delta.unwrap_or_default());
    futures::stream::unfold(state, move |mut st| {
        let chunk = chunk.clone();
        let open_delta = open_delta.clone();
        async move {
            if let Some(i) = st.opening.pop_front() {
                return Some((Ok(chunk(i, (*open_delta).clone(), &[], None, None)), st));
            }
            loop {
                if let Some(ev) = st.pending.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.ended {
                    return None;
                }
                match st.merged.next().await {
                    Some((i, Out::Text { text, logprobs })) => match &mut st.held[i] {
                        Some(buf) => {
                            buf.push_str(&text);
                            if !buf.is_empty() && !buf.starts_with('{') {
                                // Plain text: send what was held, then stream.
                                let t = std::mem::take(buf);
                                st.held[i] = None;
                                st.pending.push_back(chunk(
                                    i,
                                    json!({ "content": t }),
                                    &[],
                                    None,
                                    None,
                                ));
                            }
                        }
                        None => st.pending.push_back(chunk(
                            i,
                            json!({ "content": text }),
                            &logprobs,
                            None,
                            None,
                        )),
                    },
                    Some((
                        i,
                        Out::Done {
                            job,
                            stop_reason,
                            prompt_tokens,
                            output_tokens,
                            worker,
                        },
                    )) => {
                        st.done[i] = Some((st.requests[i], job, worker));
                        st.prompt_tokens = prompt_tokens;
                        st.completion_tokens += output_tokens;
                        let mut finish = finish_reason(stop_reason);
                        if let Some(buf) = st.held[i].take() {
                            if let Some((name, args)) = tool_call(&buf) {
                                let mut call = tool_call_json(&st.requests[i], &name, &args);
                                call["index"] = json!(0);
                                st.pending.push_back(chunk(
                                    i,
                                    json!({ "tool_calls": [call] }),
                                    &[],
                                    None,
                                    None,
                                ));
                                finish = "tool_calls";
                            } else if !buf.is_empty() {
                                // A call cut short: the text as it is.
                                st.pending.push_back(chunk(
                                    i,
                                    json!({ "content": buf }),
                                    &[],
                                    None,
                                    None,
                                ));
                            }
                        }
                        let extra = st.done.iter().all(Option::is_some).then(|| {
                            st.ended = true;
                            let done: Vec<_> = st.done.iter().flatten().copied().collect();
                            (
                                usage(st.prompt_tokens, st.completion_tokens),
                                deai_field(&done),
                            )
                        });
                        st.pending
                            .push_back(chunk(i, json!({}), &[], Some(finish), extra));
                    }
                    Some((_, Out::Failed(e))) => {
                        st.ended = true;
                        st.pending.push_back(worker_failed(&e));
                    }
                    // Every channel closed, yet a choice never finished (its dispatcher is gone).
                    None => {
                        st.ended = true;
                        st.pending.push_back(worker_failed("request dropped"));
                    }
                }
            }
        }
    })
    .chain(futures::stream::once(async {
        Ok(Event::default().data("[DONE]"))
    }))
}

#[cfg(test)]
mod param_tests {
    use super::*;

    fn check(extra: Value) -> Result<(), (StatusCode, String, &'static str)> {
        params(extra).map(|_| ())
    }

    fn params(extra: Value) -> Result<GenParams, (StatusCode, String, &'static str)> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        req.common
            .params("reply in JSON", 3, 2048, 1000, None)
            .map_err(|e| (e.status, e.message, e.code))
    }

    #[test]
    fn penalties_and_logit_bias_reach_the_sampler_in_canonical_form() {
        let p = params(json!({
            "presence_penalty": 0.5, "frequency_penalty": -0.0,
            "logit_bias": {"999": -100, "7": 2.5, "0": 0}
        }))
        .unwrap()
        .sampling;
        assert_eq!(p.presence_penalty, 0.5);
        // -0 becomes 0: a receipt has one encoding per value.
        assert_eq!(p.frequency_penalty.to_bits(), 0);
        assert_eq!(p.logit_bias, vec![(0, 0.0), (7, 2.5), (999, -100.0)]);
        assert!(p.validate_for_vocab(1000).is_ok());
        // JSON mode, when the prompt mentions JSON (as OpenAI requires).
        let json = json!({"response_format": {"type": "json_object"}});
        assert!(params(json.clone()).unwrap().sampling.json_object);
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [], "response_format": {"type": "json_object"}
        }))
        .unwrap();
        let e = req.common.params("hi", 3, 2048, 1000, None).unwrap_err();
        assert!(
            e.message.contains("must contain the word 'json'"),
            "{}",
            e.message
        );
        let (_, msg, _) = params(json!({"response_format": {"type": "xml"}})).unwrap_err();
        assert!(msg.starts_with("response_format must be"), "{msg}");
        // Left out: nothing adjusts the logits, so the receipt stays version 1.
        assert!(!params(json!({})).unwrap().sampling.adjusts_logits());
        let many: serde_json::Map<String, Value> =
            (0..301).map(|i| (i.to_string(), json!(1))).collect();
        for (bad, says) in [
            (
                json!({"presence_penalty": 2.5}),
                "presence_penalty must be between -2 and 2",
            ),
            (
                json!({"frequency_penalty": -3}),
                "frequency_penalty must be between -2 and 2",
            ),
            (
                json!({"logit_bias": {"1000": 1}}),
                "not a token id of this model (0..1000)",
            ),
            (json!({"logit_bias": {"x": 1}}), "not a token id"),
            (json!({"logit_bias": {"-1": 1}}), "not a token id"),
            (json!({"logit_bias": {"5": 101}}), "between -100 and 100"),
            (json!({"logit_bias": {"5": "high"}}), "between -100 and 100"),
            (
                json!({"logit_bias": {"5": 1, "05": 2}}),
                "names a token id twice",
            ),
            (json!({"logit_bias": [1, 2]}), "must be an object"),
            (json!({"logit_bias": Value::Object(many)}), "at most 300"),
        ] {
            let (status, msg, _) = params(bad.clone()).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(msg.contains(says), "{bad}: {msg}");
        }
    }

    #[test]
    fn unsupported_features_are_refused_and_unknown_fields_named() {
        // Known parameters, ignored ones and features left at their "off" values pass.
        for ok in [
            json!({"temperature": 0.5, "seed": 1, "stop": ["x"], "n": 1}),
            json!({"user": "u", "metadata": {"a": "b"}, "store": false}),
            json!({"stream_options": {"include_usage": true}}),
            json!({"logprobs": false, "presence_penalty": 0.5, "frequency_penalty": 0.0}),
            json!({"tools": [], "tool_choice": "none", "logit_bias": {"42": 5}}),
            json!({"response_format": {"type": "text"}, "best_of": 1, "suffix": ""}),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
        // Asking for a feature this gateway does not have is a 400 naming it.
        for (bad, name) in [
            (json!({"echo": true}), "echo"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
            (json!({"best_of": 3}), "best_of"),
        ] {
            let (status, msg, code) = check(bad.clone()).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(code, "unsupported_parameter", "{bad}");
            assert!(msg.starts_with(name), "{bad}: {msg}");
        }
        // A field OpenAI does not know either is named, as OpenAI does.
        let (status, msg, code) = check(json!({"temprature": 1})).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code, "unknown_parameter");
        assert_eq!(msg, "Unrecognized request argument supplied: temprature");
    }

    /// A chat request from JSON text (so object members keep their order, as over HTTP).
    fn chat(text: &str) -> ChatRequest {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn json_schema_response_formats_compile_in_property_order() {
        let req = chat(
            r#"{"model": "m", "messages": [], "response_format": {"type": "json_schema",
                "json_schema": {"name": "city_info", "strict": true, "schema": {"type": "object",
                "properties": {"name": {"type": "string"}, "country": {"type": "string"},
                "population": {"type": "integer"}},
                "required": ["name", "country", "population"], "additionalProperties": false}}}}"#,
        );
        // No "json" in the prompt needed: the schema's layout leaves no room for whitespace.
        let p = req
            .common
            .params("hi", 3, 2048, 1000, None)
            .unwrap()
            .sampling;
        let schema = p.json_schema.expect("a schema");
        assert!(!p.json_object);
        assert_eq!(
            schema.canonical(),
            r#"{"object":[["name","string"],["country","string"],["population","integer"]]}"#
        );
        let out = br#"{"name": "Paris", "country": "France", "population": 2100000}"#;
        let st = schema.after(&schema.start(), out).unwrap();
        assert!(schema.is_complete(&st));
        for (bad, says) in [
            (r#"{"type": "json_schema"}"#, "needs a json_schema object"),
            (
                r#"{"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}"#,
                "name must be",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "a b", "schema": {"type": "object"}}}"#,
                "name must be",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "x"}}"#,
                "needs a schema",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string"}}}"#,
                "top level must be of type object",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}}}"#,
                "\"format\" is not supported",
            ),
        ] {
            let req = chat(&format!(
                r#"{{"model": "m", "messages": [], "response_format": {bad}}}"#
            ));
            let e = req.common.params("hi", 3, 2048, 1000, None).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn tools_become_a_call_grammar_and_instructions() {
        let tools = r#"[{"type": "function", "function": {"name": "get_weather",
            "description": "Weather in a city", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}}}},
            {"type": "function", "function": {"name": "now"}}]"#;
        let with = |choice: &str| {
            chat(&format!(
                r#"{{"model": "m", "messages": [], "tools": {tools}{choice}}}"#
            ))
        };
        // The default ("auto"): a call or plain text.
        let req = with("");
        let t = req.common.tools().unwrap().expect("tools");
        assert!(matches!(t.choice, ToolChoice::Auto));
        assert!(t.grammar.canonical().starts_with(r#"{"orText":"#));
        let text = t.instructions();
        assert!(text.contains(r#"{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object","properties":{"city""#), "{text}");
        assert!(
            text.contains(r#"{"name":"now","parameters":{"type":"object","properties":{}}}"#),
            "{text}"
        );
        let p = req
            .common
            .params("hi", 3, 2048, 1000, Some(&t))
            .unwrap()
            .sampling;
        assert_eq!(p.json_schema.as_ref(), Some(&t.grammar));
        // A named function: only its calls.
        let t = with(r#", "tool_choice": {"type": "function", "function": {"name": "now"}}"#)
            .common
            .tools()
            .unwrap()
            .unwrap();
        let g = &t.grammar;
        let call = br#"{"name": "now", "arguments": {}}"#;
        assert!(g.is_complete(&g.after(&g.start(), call).unwrap()));
        assert!(g.after(&g.start(), br#"{"name": "get_weather""#).is_none());
        assert!(g.after(&g.start(), b"Hello").is_none());
        // "required": any tool's call, never text.
        let t = with(r#", "tool_choice": "required""#)
            .common
            .tools()
            .unwrap()
            .unwrap();
        let g = &t.grammar;
        let call = br#"{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}"#;
        assert!(g.is_complete(&g.after(&g.start(), call).unwrap()));
        assert!(g.after(&g.start(), b"Hello").is_none());
        // "none" and an empty list: no tools.
        assert!(with(r#", "tool_choice": "none""#)
            .common
            .tools()
            .unwrap()
            .is_none());
        assert!(chat(r#"{"model": "m", "messages": [], "tools": []}"#)
            .common
            .tools()
            .unwrap()
            .is_none());
        // Parsing the answer back: the arguments exactly as written.
        assert_eq!(
            tool_call(std::str::from_utf8(call).unwrap()),
            Some((
                "get_weather".into(),
                r#"{"city": "Oslo", "unit": "c"}"#.into()
            ))
        );
        assert_eq!(tool_call("Hello"), None);
        assert_eq!(tool_call(r#"{"name": "now", "arguments": {"#), None);
        assert_eq!(tool_call(r#"{"name":"now","arguments":{}}"#), None);
        // Bad tool definitions and choices are 400s that say why.
        for (extra, says) in [
            (r#", "tool_choice": "sometimes""#, "tool_choice must be"),
            (
                r#", "tool_choice": {"type": "function", "function": {"name": "later"}}"#,
                "not in tools",
            ),
            (r#", "tool_choice": 5"#, "tool_choice must be"),
            (
                r#", "tool_choice": {"function": {"name": "now"}}"#,
                "tool_choice must be",
            ),
            (
                r#", "response_format": {"type": "json_object"}"#,
                "both constrain",
            ),
        ] {
            let req = with(extra);
            let e = req
                .common
                .tools()
                .and_then(|t| req.common.params("json", 3, 2048, 1000, t.as_ref()))
                .unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
        for (tools, says) in [
            (r#"{"type": "function"}"#, "must be a list"),
            (r#"[{"type": "function"}]"#, "tools[0] must be"),
            (
                r#"[{"type": "function", "function": {"name": "a.b"}}]"#,
                "name must be",
            ),
            (
                r#"[{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]"#,
                "twice",
            ),
            (
                r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]"#,
                "must be of type object",
            ),
            (
                r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"$ref": "y"}}}}}]"#,
                "does not name an entry",
            ),
        ] {
            let req = chat(&format!(
                r#"{{"model": "m", "messages": [], "tools": {tools}}}"#
            ));
            let e = req.common.tools().err().expect(tools);
            assert!(e.message.contains(says), "{tools}: {}", e.message);
        }
        // With "none" the tools are unused, but a bad definition is still an error.
        let req = chat(
            r#"{"model": "m", "messages": [], "tool_choice": "none", "tools": [{"type": "function",
                "function": {"name": "f", "parameters": {"type": "string"}}}]}"#,
        );
        assert!(req.common.tools().is_err());
        // Without tools, tool_choice may only say none or auto.
        for (choice, ok) in [
            (r#""none""#, true),
            (r#""auto""#, true),
            (r#""required""#, false),
        ] {
            let req = chat(&format!(
                r#"{{"model": "m", "messages": [], "tool_choice": {choice}}}"#
            ));
            assert_eq!(req.common.tools().is_ok(), ok, "{choice}");
        }
        // Earlier calls in the conversation are shown to the model as it writes them.
        let calls = json!([{"id": "call_1", "type": "function",
                            "function": {"name": "now", "arguments": "{}"}}]);
        assert_eq!(
            past_calls(&calls).unwrap(),
            r#"{"name": "now", "arguments": {}}"#
        );
        assert!(past_calls(&json!([{"function": {"name": "now"}}])).is_err());
    }

    /// A generated tiny model, loaded as the engine loads any GGUF file.
    fn tiny_model() -> deai_engine::Model {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        std::fs::write(
            &path,
            deai_engine::testing::tiny_model_gguf(&Default::default()),
        )
        .unwrap();
        deai_engine::Model::load(&path).unwrap()
    }

    #[test]
    fn a_receipt_is_accepted_only_from_its_worker_for_its_job() {
        use deai_engine::{Engine, EngineConfig};
        let engine = Engine::new(tiny_model(), EngineConfig::default()).unwrap();
        let spec = deai_proof::JobSpec {
            model_id: Hash256([9; 32]),
            prompt_tokens: vec![5, 6, 7],
            params: GenParams {
                max_tokens: 4,
                ..Default::default()
            },
            nonce: [1; 32],
        };
        let g = engine
            .generate(&spec.prompt_tokens, &spec.params, |_| {})
            .unwrap();
        let key = deai_proof::generate_key();
        let worker: Address = key.verifying_key().to_bytes();
        let r = deai_proof::build_receipt(
            &spec,
            &g,
            engine.model.cfg.d_model,
            &engine.profile(),
            deai_proof::ProofConfig::default(),
            &key,
        )
        .unwrap();
        let job = Hash256(spec.id());
        let digest = crate::proto::receipt_digest(&r.to_bytes().unwrap());
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
    fn n_is_one_to_eight_choices() {
        let n = |v: Value| {
            let c: Common = serde_json::from_value(v).unwrap();
            c.n().map_err(|e| (e.status, e.message))
        };
        assert_eq!(n(json!({})), Ok(1));
        assert_eq!(n(json!({"n": 1})), Ok(1));
        assert_eq!(n(json!({"n": 8})), Ok(MAX_CHOICES));
        for bad in [0, 9] {
            let (status, msg) = n(json!({ "n": bad })).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(msg, format!("n must be between 1 and 8, got {bad}"));
        }
    }

    #[test]
    fn several_choices_list_every_receipt() {
        let a = (Hash256([1; 32]), Hash256([2; 32]), [3u8; 32]);
        let b = (Hash256([4; 32]), Hash256([5; 32]), [6u8; 32]);
        let one = deai_field(&[a]);
        assert_eq!(one["receipt_id"], json!(a.0));
        assert!(one.get("choices").is_none());
        let two = deai_field(&[a, b]);
        assert_eq!(
            two["receipt_id"],
            json!(a.0),
            "the first choice's, as with n = 1"
        );
        assert_eq!(two["choices"][1]["job"], json!(b.1));
        assert_eq!(two["choices"][1]["worker"], json!(hex::encode(b.2)));
    }

    #[test]
    fn logprobs_follow_openais_shapes_and_limits() {
        let top = |chat: bool, extra: Value| {
            let c: Common = serde_json::from_value(extra).unwrap();
            c.top_logprobs(chat).map_err(|e| (e.status, e.message))
        };
        // Chat: a bool, alternatives only with it, at most 20.
        assert_eq!(top(true, json!({})), Ok(None));
        assert_eq!(top(true, json!({"logprobs": false})), Ok(None));
        assert_eq!(
            top(true, json!({"logprobs": false, "top_logprobs": 0})),
            Ok(None)
        );
        assert_eq!(top(true, json!({"logprobs": true})), Ok(Some(0)));
        assert_eq!(
            top(true, json!({"logprobs": true, "top_logprobs": 20})),
            Ok(Some(20))
        );
        for bad in [
            json!({"logprobs": true, "top_logprobs": 21}),
            json!({"logprobs": true, "top_logprobs": -1}),
            json!({"logprobs": true, "top_logprobs": "3"}),
            json!({"top_logprobs": 2}),
            json!({"logprobs": 3}),
            json!({"logprobs": "yes"}),
        ] {
            let (status, msg) = top(true, bad.clone()).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(msg.contains("logprobs"), "{bad}: {msg}");
        }
        // Completions: a count up to 5; top_logprobs is not theirs.
        assert_eq!(top(false, json!({"logprobs": 0})), Ok(Some(0)));
        assert_eq!(top(false, json!({"logprobs": 5})), Ok(Some(5)));
        assert_eq!(top(false, json!({"logprobs": null})), Ok(None));
        assert_eq!(
            top(false, json!({"logprobs": false})),
            Ok(None),
            "off, as before"
        );
        assert_eq!(
            top(true, json!({"logprobs": 0})),
            Ok(None),
            "off, as before"
        );
        for bad in [
            json!({"logprobs": 6}),
            json!({"logprobs": true}),
            json!({"top_logprobs": 1}),
        ] {
            assert!(top(false, bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn logprobs_render_as_openai_writes_them() {
        let tok = Arc::new(tiny_model().tokenizer);
        let lps = vec![
            (
                10u32,
                TokenLogprobs {
                    logprob: -0.25,
                    top: vec![(10, -0.25), (11, f32::NEG_INFINITY)],
                },
            ),
            (
                12,
                TokenLogprobs {
                    logprob: -1.5,
                    top: vec![(13, -0.5), (12, -1.5)],
                },
            ),
        ];
        let text = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id).unwrap()).into_owned();
        let chat = logprobs_renderer(tok.clone(), true, true, 0)(&lps);
        let c = &chat["content"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["token"], json!(text(10)));
        assert_eq!(c[0]["logprob"], json!(-0.25));
        assert_eq!(c[0]["bytes"], json!(tok.token_bytes(10).unwrap()));
        // No infinity in JSON: an impossible alternative is -9999, as OpenAI writes it.
        assert_eq!(c[0]["top_logprobs"][1]["logprob"], json!(-9999.0));
        assert_eq!(c[1]["top_logprobs"][0]["token"], json!(text(13)));
        // Completions: parallel lists, offsets counted across chunks of one stream.
        let render = logprobs_renderer(tok.clone(), true, false, 7);
        let first = render(&lps[..1]);
        let second = render(&lps[1..]);
        assert_eq!(first["tokens"], json!([text(10)]));
        assert_eq!(first["token_logprobs"], json!([-0.25]));
        assert_eq!(
            first["text_offset"],
            json!([7]),
            "counted from the prompt's start"
        );
        assert_eq!(second["text_offset"], json!([7 + text(10).chars().count()]));
        assert_eq!(second["top_logprobs"][0][text(13)], json!(-0.5));
        // Not asked: null.
        assert_eq!(logprobs_renderer(tok, false, true, 0)(&lps), Value::Null);
    }
}
