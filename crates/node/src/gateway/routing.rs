//! Choosing workers and failing over: the ledger's registry (cached briefly) filtered to
//! active, staked workers of a model whose free stake covers the job's collateral, ranked by
//! what this gateway saw of them (failures, rejections, price, load, use); a request's choices spread over the best-ranked workers,
//! each choice tried on one worker after another until one completes it.

use super::attempt::{attempt, Choice, Out, Sent};
use super::config::{CatalogEntry, GatewayConfig};
use super::store::Store;
use super::Payer;
use crate::{http_error, HttpError};
use axum::http::StatusCode;
use deai_client::{ChainClient, WorkerEntry};
use deai_engine::GenParams;
use deai_ledger::job_cost;
use deai_ledger::Address;
use deai_types::Hash256;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the ledger's worker registry is reused before it is read again.
const REGISTRY_TTL: Duration = Duration::from_millis(500);

/// What this gateway saw of each worker.
#[derive(Clone, Default)]
pub(super) struct Tally {
    /// Requests in flight per worker.
    pub(super) load: HashMap<Address, u64>,
    /// Failures per worker seen by this gateway.
    pub(super) failures: HashMap<Address, u64>,
    /// Jobs sent per worker: among equals, the least used goes first.
    pub(super) assigned: HashMap<Address, u64>,
}

/// The gateway's choice of workers, and the dispatch of each choice with failover.
pub(super) struct Routing {
    ledger: ChainClient,
    store: Store,
    /// Workers tried per choice before giving up.
    attempts: usize,
    /// Longest silence from a worker before it counts as failed.
    worker_timeout: Duration,
    /// Route only to workers with at least one accepted job on chain.
    require_qualified: bool,
    registry: tokio::sync::Mutex<Option<(Instant, Vec<WorkerEntry>)>>,
    /// The chain's `collateral_bps`, read with the registry.
    collateral_bps: std::sync::atomic::AtomicU64,
    tally: Mutex<Tally>,
}

impl Routing {
    pub(super) fn new(cfg: &GatewayConfig, ledger: ChainClient, store: Store) -> Self {
        Routing {
            ledger,
            store,
            attempts: cfg.attempts,
            worker_timeout: cfg.worker_timeout,
            require_qualified: cfg.require_qualified,
            registry: tokio::sync::Mutex::new(None),
            collateral_bps: std::sync::atomic::AtomicU64::new(0),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// What this gateway saw of each worker so far.
    pub(super) fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Active, staked workers serving `model`, best first.
    pub(super) async fn candidates(&self, model: &Hash256) -> Result<Vec<WorkerEntry>, HttpError> {
        let mut reg = self.registry.lock().await;
        let fresh = reg
            .as_ref()
            .is_some_and(|(t, _)| t.elapsed() < REGISTRY_TTL);
        if !fresh {
            let list = self.ledger.workers().await.map_err(|e| {
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("ledger unavailable: {e:#}"),
                )
            })?;
            *reg = Some((Instant::now(), list));
            if let Ok(p) = self.ledger.params().await {
                self.collateral_bps
                    .store(p.collateral_bps, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let min_stake = 1; // the ledger enforces its own minimum at registration
        let seen = self.tally();
        let mut c: Vec<WorkerEntry> = reg
            .as_ref()
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.worker.active && w.stake >= min_stake && w.worker.models.contains(model))
            .filter(|w| !self.require_qualified || w.worker.jobs_done > 0)
            .collect();
        // Price before load: a busy cheap worker queues the job or refuses it (503, and the
        // next is tried); an idle dear one must not win just by being idle.
        c.sort_by_key(|w| {
            (
                seen.failures.get(&w.address).copied().unwrap_or(0),
                w.worker.jobs_rejected,
                w.worker.price_per_1k,
                seen.load.get(&w.address).copied().unwrap_or(0),
                seen.assigned.get(&w.address).copied().unwrap_or(0),
                w.address,
            )
        });
        Ok(c)
    }

    /// Checks the request, then starts dispatching its `n` choices, each a job of its own
    /// (choice `i` samples with seed `seed + i`); returns each choice's request id (its
    /// receipt id) and the stream of its output. `prompt` is kept for its owner.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
        self: &Arc<Self>,
        client: Payer,
        model: &CatalogEntry,
        prompt_tokens: Vec<u32>,
        params: GenParams,
        top_logprobs: Option<usize>,
        n: usize,
        stream: bool,
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
        let mut workers = self.candidates(&model.id).await?;
        // Only workers whose free stake covers this job's collateral can post its receipt
        // (the ledger refuses the rest, leaving the work unpaid).
        let bps = self
            .collateral_bps
            .load(std::sync::atomic::Ordering::Relaxed);
        workers.retain(|w| {
            let escrow = job_cost(total as u64, w.worker.price_per_1k);
            w.stake.saturating_sub(w.worker.locked) >= deai_ledger::collateral(escrow, bps)
        });
        let Some(first) = workers.first() else {
            return Err(http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no active worker serves {} right now", model.name),
            )
            .with_code("no_worker"));
        };
        // Each choice escrows its maximum cost (and room for the app's and gateway's fees)
        // and pays a transaction fee.
        let escrow = deai_ledger::state::escrow_for(
            job_cost(total as u64, first.worker.price_per_1k),
            client.surcharge_bps(),
        );
        let need = escrow
            .saturating_add(client.signer.fee())
            .saturating_mul(n as u64);
        // An escrow naming an unknown app never lands: each worker tried would serve its
        // free tokens for nothing.
        if let Some(app) = client.app {
            let known = self.ledger.app(&app).await.map_err(|e| {
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("ledger unavailable: {e:#}"),
                )
            })?;
            if known.is_none() {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    format!("X-Deai-App names no registered app ({app})"),
                ));
            }
        }
        if let Some(c) = client.client {
            let gateway = client.signer.address();
            let allowed = self.ledger.allowance(&c, &gateway).await.map_err(|e| {
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("ledger unavailable: {e:#}"),
                )
            })?;
            let left = allowed.map_or(0, |a| a.remaining);
            if left < escrow.saturating_mul(n as u64) {
                return Err(http_error(
                    StatusCode::PAYMENT_REQUIRED,
                    format!(
                        "this request may escrow {}; the client allows this gateway ({}) {left} \
                         more (`deai tx authorize --gateway {}`)",
                        escrow.saturating_mul(n as u64),
                        hex::encode(gateway),
                        hex::encode(gateway)
                    ),
                ));
            }
        }
        let (balance, _, _) = self.ledger.account(&client.account()).await.map_err(|e| {
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
        let fails = self.tally().failures;
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
            record["client"] = json!(hex::encode(client.account()));
            if let Err(e) = self.store.keep_prompt(&request, &record).await {
                tracing::warn!("cannot keep the prompt of request {request}: {e}");
            }
            let mut params = params.clone();
            params.sampling.seed = params.sampling.seed.wrapping_add(i as u64);
            let choice = Choice {
                request,
                client: client.clone(),
                model: model.id,
                prompt_tokens: prompt_tokens.clone(),
                params,
                top_logprobs,
                stream,
                tokenizer: model.tokenizer.clone(),
            };
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            let routing = self.clone();
            tokio::spawn(async move { routing.dispatch(choice, workers, tx).await });
            runs.push((request, rx));
        }
        Ok(runs)
    }

    /// Tries `choice` on `workers` in order, at most `attempts` of them, until one completes
    /// it; tells `out` that it failed otherwise.
    async fn dispatch(
        &self,
        choice: Choice,
        workers: Vec<WorkerEntry>,
        out: tokio::sync::mpsc::Sender<Out>,
    ) {
        // What a streaming client already has: text, and tokens whose logprobs it was sent.
        let mut sent = Sent::default();
        let mut errors = Vec::new();
        for w in workers.iter().take(self.attempts.max(1)) {
            {
                let mut t = self.tally.lock().unwrap();
                *t.load.entry(w.address).or_default() += 1;
                *t.assigned.entry(w.address).or_default() += 1;
            }
            let r = attempt(
                &choice,
                w,
                self.worker_timeout,
                &self.store,
                &mut sent,
                &out,
            )
            .await;
            *self
                .tally
                .lock()
                .unwrap()
                .load
                .entry(w.address)
                .or_default() -= 1;
            match r {
                Ok(_job) => return,
                Err(e) => {
                    tracing::warn!(worker = %hex::encode(&w.address[..6]), "attempt failed: {e:#}");
                    *self
                        .tally
                        .lock()
                        .unwrap()
                        .failures
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
}
