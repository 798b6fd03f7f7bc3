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

/// What the dispatcher tells the handler.
enum Out {
    Text(String),
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

    /// Checks the request, then starts dispatching it; returns the request id and the
    /// stream of its output.
    async fn start(
        &self,
        client: Arc<Signer>,
        model: &CatalogEntry,
        prompt_tokens: Vec<u32>,
        params: GenParams,
        prompt: Value,
    ) -> Result<(Hash256, tokio::sync::mpsc::Receiver<Out>), HttpError> {
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
        let need = job_cost(total, first.worker.price_per_1k);
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
        if balance < need.saturating_add(1) {
            return Err(http_error(
                StatusCode::PAYMENT_REQUIRED,
                format!("this request may cost {need}; the account holds {balance}"),
            ));
        }
        let request = Hash256(deai_proof::random_nonce());
        // The prompt, for its owner only (`GET /v1/receipts/{id}` with the same API key):
        // `prompt` is `{"owner": <SHA-256 of the API key>, "prompt": ...}`.
        let mut record = prompt;
        record["client"] = json!(hex::encode(client.address()));
        let path = self.conversation_path(&request, "prompt.json");
        if let Err(e) = tokio::fs::write(&path, record.to_string()).await {
            tracing::warn!("cannot keep the prompt of request {request}: {e}");
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let g = self.clone();
        let model_id = model.id;
        tokio::spawn(async move {
            g.dispatch(
                request,
                client,
                model_id,
                prompt_tokens,
                params,
                workers,
                tx,
            )
            .await
        });
        Ok((request, rx))
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        request: Hash256,
        client: Arc<Signer>,
        model: Hash256,
        prompt_tokens: Vec<u32>,
        params: GenParams,
        workers: Vec<WorkerEntry>,
        out: tokio::sync::mpsc::Sender<Out>,
    ) {
        let mut sent = 0usize; // bytes of text the client already has
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
        w: &WorkerEntry,
        sent: &mut usize,
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
                    RunEvent::Token { text, .. } => {
                        answer.push_str(&text);
                        let end = produced + text.len();
                        if end > *sent {
                            let skip = sent.saturating_sub(produced);
                            let piece = text.get(skip..).unwrap_or(&text).to_string();
                            if out.send(Out::Text(piece)).await.is_err() {
                                // The client left; the worker still finishes and is paid.
                            }
                            *sent = end;
                        }
                        produced = end;
                    }
                    RunEvent::Done {
                        job: done_job,
                        stop_reason,
                        prompt_tokens,
                        output_tokens,
                        receipt,
                        ..
                    } => {
                        if done_job != job {
                            anyhow::bail!("worker answered for another job");
                        }
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
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    content: Value,
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: Value,
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

impl Common {
    /// Refuses OpenAI features this gateway does not implement when a request asks for them
    /// (rather than silently answering without them), and names fields OpenAI does not know.
    fn check_rest(&self) -> Result<(), HttpError> {
        for (k, v) in &self.rest {
            let off = match k.as_str() {
                k if IGNORED_PARAMS.contains(&k) => true,
                // Chat takes a bool, completions a count.
                "logprobs" | "echo" => {
                    v.is_null() || *v == Value::Bool(false) || v.as_u64() == Some(0)
                }
                "top_logprobs" | "presence_penalty" | "frequency_penalty" => {
                    v.is_null() || v.as_f64() == Some(0.0)
                }
                "best_of" => v.is_null() || v.as_u64() == Some(1),
                "logit_bias" => v.is_null() || v.as_object().is_some_and(|m| m.is_empty()),
                "tools" | "functions" => v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
                "tool_choice" | "function_call" => v.is_null() || v.as_str() == Some("none"),
                "response_format" => v.is_null() || v["type"].as_str() == Some("text"),
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

    fn params(&self, prompt_len: usize, n_ctx: usize) -> Result<GenParams, HttpError> {
        self.check_rest()?;
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        if self.n.is_some_and(|n| n != 1) {
            return Err(bad("n must be 1: each answer is one verifiable job".into()));
        }
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
                temperature: temperature as f32,
                top_k: 0,
                top_p: top_p as f32,
                // No seed asked: draw one (it is in the receipt, so the run stays checkable).
                seed: self.seed.unwrap_or_else(|| {
                    u64::from_le_bytes(deai_proof::random_nonce()[..8].try_into().expect("8 bytes"))
                }),
            },
            stop,
        })
    }
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
    let mut msgs = Vec::new();
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer"
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
        msgs.push(ChatMessage {
            role: role.to_string(),
            content: message_text(&m.content)?,
        });
    }
    let text = chat_prompt(&msgs, true);
    let tokens = model
        .tokenizer
        .encode(&text, true)
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let params = req.common.params(tokens.len(), model.n_ctx)?;
    let stream = req.common.stream.unwrap_or(false);
    let prompt = json!(msgs
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect::<Vec<_>>());
    let prompt = json!({ "owner": key_hash(&headers), "prompt": prompt });
    respond(g, client, model, tokens, params, stream, true, prompt).await
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
    let params = req.common.params(tokens.len(), model.n_ctx)?;
    let stream = req.common.stream.unwrap_or(false);
    respond(
        g,
        client,
        model,
        tokens,
        params,
        stream,
        false,
        json!({ "owner": key_hash(&headers), "prompt": prompt }),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    g: Gateway,
    client: Arc<Signer>,
    model: CatalogEntry,
    tokens: Vec<u32>,
    params: GenParams,
    stream: bool,
    chat: bool,
    prompt: Value,
) -> Result<Response, HttpError> {
    let (request, mut rx) = g.start(client, &model, tokens, params, prompt).await?;
    let id = if chat {
        format!("chatcmpl-{request}")
    } else {
        format!("cmpl-{request}")
    };
    let created = now_secs();
    let name = model.name.clone();
    let receipt_header = [("x-deai-receipt", request.to_string())];
    let deai = move |job: Hash256, worker: Address| {
        json!({ "receipt_id": request, "job": job, "worker": hex::encode(worker),
                "receipt_url": format!("/v1/receipts/{request}") })
    };
    if !stream {
        let mut text = String::new();
        loop {
            match rx.recv().await {
                Some(Out::Text(t)) => text.push_str(&t),
                Some(Out::Done {
                    job,
                    stop_reason,
                    prompt_tokens,
                    output_tokens,
                    worker,
                }) => {
                    let choice = if chat {
                        json!({ "index": 0, "message": { "role": "assistant", "content": text },
                                "logprobs": null, "finish_reason": finish_reason(stop_reason) })
                    } else {
                        json!({ "index": 0, "text": text, "logprobs": null,
                                "finish_reason": finish_reason(stop_reason) })
                    };
                    let body = json!({
                        "id": id, "object": if chat { "chat.completion" } else { "text_completion" },
                        "created": created, "model": name, "choices": [choice],
                        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                                   "total_tokens": prompt_tokens + output_tokens },
                        "deai": deai(job, worker),
                    });
                    return Ok((receipt_header, Json(body)).into_response());
                }
                Some(Out::Failed(e)) => {
                    return Err(http_error(StatusCode::BAD_GATEWAY, e).with_code("worker_failed"))
                }
                None => return Err(http_error(StatusCode::BAD_GATEWAY, "request dropped")),
            }
        }
    }
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = move |delta: Value, finish: Option<&str>, extra: Option<(Value, Value)>| {
        let choice = if chat {
            json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                    "logprobs": null, "finish_reason": finish })
        };
        let mut c = json!({ "id": id, "object": object, "created": created, "model": name,
                            "choices": [choice] });
        if let Some((usage, d)) = extra {
            c["usage"] = usage;
            c["deai"] = d;
        }
        Event::default().data(c.to_string())
    };
    let events = async_stream_events(rx, chunk, deai, chat);
    Ok((receipt_header, Sse::new(events)).into_response())
}

type ChunkFn = dyn Fn(Value, Option<&str>, Option<(Value, Value)>) -> Event + Send + Sync;

/// Turns dispatcher output into SSE events: a role chunk, content chunks, a final chunk with
/// the finish reason, usage and receipt, then `[DONE]`.
fn async_stream_events(
    rx: tokio::sync::mpsc::Receiver<Out>,
    chunk: impl Fn(Value, Option<&str>, Option<(Value, Value)>) -> Event + Send + Sync + 'static,
    deai: impl Fn(Hash256, Address) -> Value + Send + Sync + 'static,
    chat: bool,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let chunk: Arc<ChunkFn> = Arc::new(chunk);
    let deai = Arc::new(deai);
    let first = if chat {
        Some(json!({ "role": "assistant", "content": "" }))
    } else {
        None
    };
    futures::stream::unfold((rx, first, false), move |(mut rx, first, ended)| {
        let chunk = chunk.clone();
        let deai = deai.clone();
        async move {
            if ended {
                return None;
            }
            if let Some(f) = first {
                return Some((Ok(chunk(f, None, None)), (rx, None, false)));
            }
            let ev = match rx.recv().await {
                Some(Out::Text(t)) => chunk(json!({ "content": t }), None, None),
                Some(Out::Done { job, stop_reason, prompt_tokens, output_tokens, worker }) => {
                    let usage = json!({ "prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                                        "total_tokens": prompt_tokens + output_tokens });
                    let last = chunk(json!({}), Some(finish_reason(stop_reason)), Some((usage, deai(job, worker))));
                    return Some((Ok(last), (rx, None, true)));
                }
                Some(Out::Failed(e)) => {
                    let ev = Event::default().data(
                        json!({ "error": { "message": e, "type": "server_error", "code": "worker_failed" } })
                            .to_string(),
                    );
                    return Some((Ok(ev), (rx, None, true)));
                }
                None => return None,
            };
            Some((Ok(ev), (rx, None, false)))
        }
    })
    .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }))
}

#[cfg(test)]
mod param_tests {
    use super::*;

    fn check(extra: Value) -> Result<(), (StatusCode, String, &'static str)> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        req.common
            .params(3, 2048)
            .map(|_| ())
            .map_err(|e| (e.status, e.message, e.code))
    }

    #[test]
    fn unsupported_features_are_refused_and_unknown_fields_named() {
        // Known parameters, ignored ones and features left at their "off" values pass.
        for ok in [
            json!({"temperature": 0.5, "seed": 1, "stop": ["x"], "n": 1}),
            json!({"user": "u", "metadata": {"a": "b"}, "store": false}),
            json!({"stream_options": {"include_usage": true}}),
            json!({"logprobs": false, "presence_penalty": 0, "frequency_penalty": 0.0}),
            json!({"tools": [], "tool_choice": "none", "logit_bias": {}}),
            json!({"response_format": {"type": "text"}, "best_of": 1, "suffix": ""}),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
        // Asking for a feature this gateway does not have is a 400 naming it.
        for (bad, name) in [
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"logit_bias": {"42": 5}}), "logit_bias"),
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (json!({"tool_choice": "auto"}), "tool_choice"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
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
}
