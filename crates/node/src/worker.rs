//! The worker role: serves one model for pay. It checks that a job is escrowed by a signed
//! `OpenJob` naming it, runs the engine, streams tokens back, stores the signed receipt on
//! disk, and posts the receipt's digest and address on chain once the job is finalized.
//!
//! A request is worth running only if its escrow can exist: the `OpenJob` must be signed for
//! this worker's chain, with a nonce the client's account has not used yet (unless that
//! transaction is the one that opened the job). Until the worker has seen the escrow
//! finalized on chain it computes at most [`FREE_TOKENS`] output tokens; then it waits for
//! the escrow at most [`ESCROW_WAIT`] (or its `post_timeout`, if shorter) and otherwise stops
//! the run with an error and no receipt. The engine never waits for a slow reader: a run's
//! events queue in memory (at most `max_tokens` of them), and a client that disconnects
//! cancels its run, releasing the engine.
//!
//! [`Tamper`] is the seam through which a worker could lie about a job: the `faults` module
//! (cargo feature `faults`) plays the cheating workers through it, so that tests and the demo
//! can show the validators catching them. An honest worker has none.

use crate::proto::{RunEvent, RunRequest};
use crate::{http_error, HttpError};
use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use deai_client::Signer;
use deai_engine::{Engine, Generation};
use deai_ledger::{Address, TxKind};
use deai_proof::{build_receipt, receipt_digest, ProofConfig, Receipt};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Output tokens a worker computes for a job before it has seen the job's escrow finalized
/// on chain: the most a request that never pays can get (with its prompt's prefill).
pub const FREE_TOKENS: usize = 16;

/// Longest a run waits, after [`FREE_TOKENS`] tokens, for its escrow to be finalized before
/// it is cancelled (no receipt); a worker whose `post_timeout` is shorter waits that long.
pub const ESCROW_WAIT: Duration = Duration::from_secs(20);

/// How often a run's escrow is looked up on chain while it is not yet finalized.
const ESCROW_POLL: Duration = Duration::from_millis(100);

/// The seam through which a worker could lie about a job. Each hook receives what the honest
/// worker produced at one point of a run and returns what is streamed, signed or stored
/// instead; every default passes it through. An honest worker has no tamper; the cheating
/// workers validators and the gateway must catch implement it in `faults` (cargo feature
/// `faults`).
pub trait Tamper: Send + Sync + std::fmt::Debug {
    /// The engine to run jobs on instead of the registered one.
    fn engine(&self) -> Option<&Engine> {
        None
    }

    /// What to stream for the `index`th generated token (0-based) of a run on `engine`, in
    /// order: `None` ends the response mid-stream.
    fn token(&self, _engine: &Engine, _index: usize, event: RunEvent) -> Vec<Option<RunEvent>> {
        vec![Some(event)]
    }

    /// After generation on `engine`, before the receipt is built: may rewrite the generation
    /// (which the receipt then signs), returns further token events to stream, or fails the
    /// job.
    fn generated(&self, _engine: &Engine, _g: &mut Generation) -> Result<Vec<RunEvent>> {
        Ok(vec![])
    }

    /// The signed receipt before it is stored, streamed and posted: may change it (and
    /// re-sign it with `key`).
    fn receipt(&self, _r: &mut Receipt, _key: &SigningKey) -> Result<()> {
        Ok(())
    }
}

/// The identity tamper: what an honest worker does at every hook.
#[derive(Debug)]
struct Untampered;

impl Tamper for Untampered {}

pub struct WorkerConfig {
    pub model_id: Hash256,
    /// Price per 1000 tokens (prompt + output).
    pub price_per_1k: u64,
    pub hardware: String,
    /// Receipts are stored under `dir/receipts/`.
    pub dir: PathBuf,
    /// How this worker lies ([`Tamper`]); `None` for an honest worker.
    pub tamper: Option<Arc<dyn Tamper>>,
    /// How long to wait for a job's escrow to be finalized before giving up on posting (and,
    /// capped by [`ESCROW_WAIT`], before cancelling a run past its [`FREE_TOKENS`]).
    pub post_timeout: Duration,
    /// Jobs served untampered before `tamper` applies (1: a worker that passes its
    /// capability challenge and lies afterwards).
    pub tamper_after: u64,
}

struct Inner {
    cfg: WorkerConfig,
    engine: Arc<Engine>,
    signer: Arc<Signer>,
    /// This worker's public base URL (receipt pointers are built from it).
    url: String,
    /// Jobs this worker has run or is running: a replayed request is refused.
    seen: Mutex<HashSet<Hash256>>,
    /// One run at a time on this worker's engine; `busy` counts the jobs waiting and running
    /// and those in their queue check ([`Place`]).
    gate: tokio::sync::Semaphore,
    busy: AtomicU64,
    served: AtomicU64,
    /// Wall time spent running jobs (generation + proof), for revenue per compute-hour.
    compute_us: AtomicU64,
    /// Moving average of one job's wall time (queue wait excluded), microseconds; 0 before
    /// the first job.
    mean_job_us: AtomicU64,
    /// Jobs refused because they would not start before their deadline.
    refused_busy: AtomicU64,
    clock: crate::BlockClock,
    /// The chain this worker's ledger node runs (read once).
    chain_id: tokio::sync::OnceCell<Hash256>,
    /// Collateral reserved for admitted jobs whose receipts are not on chain yet.
    reserved: AtomicU64,
}

#[derive(Clone)]
pub struct Worker(Arc<Inner>);

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        engine: Arc<Engine>,
        signer: impl Into<Arc<Signer>>,
        url: String,
    ) -> Result<Self> {
        std::fs::create_dir_all(cfg.dir.join("receipts"))
            .with_context(|| format!("creating {}", cfg.dir.display()))?;
        Ok(Worker(Arc::new(Inner {
            cfg,
            engine,
            signer: signer.into(),
            url,
            seen: Mutex::new(HashSet::new()),
            gate: tokio::sync::Semaphore::new(1),
            busy: AtomicU64::new(0),
            served: AtomicU64::new(0),
            compute_us: AtomicU64::new(0),
            mean_job_us: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            clock: Default::default(),
            chain_id: tokio::sync::OnceCell::new(),
            reserved: AtomicU64::new(0),
        })))
    }

    pub fn address(&self) -> Address {
        self.0.signer.address()
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// Stakes the minimum and registers on the ledger (idempotent: skips what is done).
    pub async fn join(&self) -> Result<()> {
        let s = &self.0.signer;
        let ledger = s.ledger();
        let params = ledger.params().await?;
        let (_, stake, _) = ledger.account(&s.address()).await?;
        let t = Duration::from_secs(60);
        if stake < params.min_worker_stake {
            s.submit_and_wait(
                TxKind::Stake {
                    amount: params.min_worker_stake - stake,
                },
                t,
            )
            .await?;
        }
        let registered = ledger
            .workers()
            .await?
            .into_iter()
            .any(|w| w.address == s.address() && w.worker.endpoint == self.0.url);
        if !registered {
            s.submit_and_wait(
                TxKind::RegisterWorker {
                    models: vec![self.0.cfg.model_id],
                    profile: self.0.engine.profile().id,
                    hardware: self.0.cfg.hardware.clone(),
                    price_per_1k: self.0.cfg.price_per_1k,
                    endpoint: self.0.url.clone(),
                },
                t,
            )
            .await?;
        }
        let n = self.repost_pending().await?;
        if n > 0 {
            tracing::info!("posted {n} receipts left unposted before a restart");
        }
        Ok(())
    }

    /// After a restart: posts the receipts stored on disk whose jobs are still open on chain
    /// and assigned to this worker (a crash between answering and posting loses no pay).
    /// Returns how many it posted.
    pub async fn repost_pending(&self) -> Result<usize> {
        let dir = self.0.cfg.dir.join("receipts");
        let mut posted = 0;
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(e) = entries.next_entry().await? {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = tokio::fs::read_to_string(&path).await else {
                continue;
            };
            let Ok(r) = Receipt::from_json(&text) else {
                tracing::warn!("{}: not a receipt; skipped", path.display());
                continue;
            };
            let job = Hash256(r.job_id);
            self.0.seen.lock().unwrap().insert(job);
            let open = matches!(
                self.0.signer.ledger().job(&job).await?,
                Some(j) if j.status == deai_ledger::state::JobStatus::Open
                    && j.worker == Some(self.address())
            );
            if !open {
                continue;
            }
            let tokens = (r.prompt_tokens.len() + r.output_tokens.len()) as u32;
            post_receipt(self, job, receipt_digest(&r.to_bytes()?), tokens).await;
            posted += 1;
        }
        Ok(posted)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/worker/v1/run", post(run))
            .route("/worker/v1/receipts/{job}", get(receipt))
            .route("/worker/v1/health", get(health))
            .merge(deai_explorer::router(deai_explorer::UiConfig::WORKER))
            .fallback(chain_proxy)
            .layer(axum::extract::DefaultBodyLimit::max(crate::MAX_BODY))
            .layer(axum::middleware::map_response(crate::close_if_body_unread))
            .with_state(self.clone())
    }

    /// The id of the chain this worker serves (its ledger node's, asked once).
    async fn chain_id(&self) -> Result<Hash256> {
        let ledger = self.0.signer.ledger();
        Ok(*self
            .0
            .chain_id
            .get_or_try_init(|| ledger.chain_id())
            .await?)
    }

    /// How long a run past [`FREE_TOKENS`] waits for its escrow.
    fn escrow_wait(&self) -> Duration {
        self.0.cfg.post_timeout.min(ESCROW_WAIT)
    }

    pub(crate) fn receipt_path(&self, job: &Hash256) -> PathBuf {
        self.0.cfg.dir.join("receipts").join(format!("{job}.json"))
    }

    /// Checks that `req` is a job this worker should run: its model, a valid signed
    /// `OpenJob` for this worker's chain naming exactly this job, this worker and enough
    /// escrow, from a client whose finalized balance covers it and whose finalized nonce has
    /// not passed the transaction's (unless the job is already on chain), and not seen before.
    /// Returns the job id and its place in this worker's queue.
    async fn admit(&self, req: &RunRequest) -> Result<(Hash256, Place, Reserved), HttpError> {
        let i = &self.0;
        if req.model_id != i.cfg.model_id {
            return Err(http_error(
                StatusCode::NOT_FOUND,
                "this worker does not serve that model",
            ));
        }
        let job = req.job_id();
        let tx = &req.open_job;
        tx.verify_signature()
            .map_err(|e| http_error(StatusCode::BAD_REQUEST, format!("open_job: {e}")))?;
        let TxKind::OpenJob {
            job: j,
            model,
            max_tokens,
            escrow,
            worker,
            app,
            client,
        } = &tx.tx.kind
        else {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "open_job is not an OpenJob transaction",
            ));
        };
        // A gateway's escrow for a client that keeps its key comes from the client.
        let gateway = client.filter(|c| *c != tx.tx.from).map(|_| tx.tx.from);
        let payer = client.unwrap_or(tx.tx.from);
        let bad = |m: &str| Err(http_error(StatusCode::BAD_REQUEST, m.to_string()));
        let unavailable =
            |e: anyhow::Error| http_error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"));
        let chain = self.chain_id().await.map_err(unavailable)?;
        if tx.tx.chain != chain {
            return bad(&format!(
                "open_job is signed for chain {}, but this worker serves chain {chain}: its \
                 escrow can never exist there",
                tx.tx.chain
            ));
        }
        if *j != job {
            return bad("open_job names another job");
        }
        if *model != i.cfg.model_id || *worker != Some(self.address()) {
            return bad("open_job is for another model or worker");
        }
        if (*max_tokens as usize) < req.params.max_tokens {
            return bad("open_job escrows fewer tokens than max_tokens");
        }
        let need = deai_ledger::job_cost(
            req.prompt_tokens
                .len()
                .saturating_add(req.params.max_tokens) as u64,
            i.cfg.price_per_1k,
        );
        // An app's and a gateway's fees come out of the escrow on top of the cost: it must
        // leave room for the most they can be, or the ledger bills this worker less.
        let surcharge = match app.is_some() || gateway.is_some() {
            true => deai_ledger::state::max_surcharge_bps(),
            false => 0,
        };
        if deai_ledger::state::billable(*escrow, surcharge) < need {
            return Err(http_error(
                StatusCode::PAYMENT_REQUIRED,
                format!(
                    "escrow {escrow} is below this worker's price for the job ({need}, plus \
                     {surcharge} bps of room for app and gateway fees)"
                ),
            ));
        }
        let ledger = i.signer.ledger();
        let unavailable =
            |e: anyhow::Error| http_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        let (nonce, fee_payer_short) = {
            let (balance, _, nonce) = ledger.account(&tx.tx.from).await.map_err(unavailable)?;
            (nonce, balance < tx.tx.fee)
        };
        let (balance, _, _) = ledger.account(&payer).await.map_err(unavailable)?;
        let fee = if payer == tx.tx.from { tx.tx.fee } else { 0 };
        // A gateway that names a client must hold its allowance, or the escrow never exists.
        let allowed = match gateway {
            None => true,
            Some(g) => {
                let a = ledger.allowance(&payer, &g).await.map_err(unavailable)?;
                let h = ledger.height().await.map_err(unavailable)?;
                a.is_some_and(|a| a.remaining >= *escrow && a.expires > h)
            }
        };
        let stale = tx.tx.nonce < nonce;
        let short = balance < escrow.saturating_add(fee) || fee_payer_short || !allowed;
        // Only when something looks wrong: the escrow may already be taken (finalized), by
        // this very transaction.
        if (stale || short) && i.signer.ledger().job(&job).await.ok().flatten().is_none() {
            if stale {
                return bad(&format!(
                    "open_job has nonce {}, below the client's finalized nonce {nonce}: that \
                     nonce is spent, so this escrow can never be finalized",
                    tx.tx.nonce
                ));
            }
            return Err(http_error(
                StatusCode::PAYMENT_REQUIRED,
                match allowed {
                    true => "the client's balance does not cover the escrow",
                    false => {
                        "the client does not allow this gateway the escrow (no, spent or \
                              expiring allowance)"
                    }
                },
            ));
        }
        let reserved = self.reserve_collateral(*escrow).await?;
        // Take a place in the queue before the queue check (whose ledger reads take a
        // while), so that jobs admitted together each see the others ahead of them; only a
        // request that is otherwise acceptable holds one.
        let ahead = i.busy.fetch_add(1, Ordering::Relaxed);
        let place = Place(self.clone());
        self.check_queue(ahead).await?;
        if !i.seen.lock().unwrap().insert(job) || self.receipt_path(&job).exists() {
            return Err(http_error(
                StatusCode::CONFLICT,
                format!("job {job} was already run (replay)"),
            ));
        }
        Ok((job, place, reserved))
    }

    /// Reserves the collateral this job's receipt will lock (`escrow` bounds what it bills):
    /// the worker's free stake on chain (stake less what its posted receipts lock), less
    /// what the jobs it admitted but has not receipted yet will lock, must cover it, or the
    /// ledger would refuse the receipt and the work would go unpaid (503: the gateway tries
    /// another worker). Released when the guard drops, after the receipt is posted.
    async fn reserve_collateral(&self, escrow: u64) -> Result<Reserved, HttpError> {
        let i = &self.0;
        let ledger = i.signer.ledger();
        let unavailable =
            |e: anyhow::Error| http_error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"));
        let bps = ledger.params().await.map_err(unavailable)?.collateral_bps;
        let need = deai_ledger::collateral(escrow, bps);
        let me = ledger
            .worker(&self.address())
            .await
            .map_err(unavailable)?
            .filter(|w| w.worker.active)
            .ok_or_else(|| {
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this worker is not an active registered worker on chain",
                )
            })?;
        let held = i
            .reserved
            .fetch_add(need, Ordering::SeqCst)
            .saturating_add(need);
        let guard = Reserved(self.clone(), need);
        let free = me.stake.saturating_sub(me.worker.locked);
        if held > free {
            return Err(http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "worker's free stake {free} does not cover the collateral of its jobs in \
                     flight and this one ({held}); try another worker"
                ),
            ));
        }
        Ok(guard)
    }
}

/// Collateral reserved for an admitted job until its receipt is on chain (or it failed).
struct Reserved(Worker, u64);

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0 .0.reserved.fetch_sub(self.1, Ordering::SeqCst);
    }
}

impl Worker {
    /// Refuses (503) a job that would wait behind `ahead` jobs (queued or running) longer
    /// than half its deadline ([`admission`]): it would likely expire on chain before its
    /// receipt lands, refunding the client and leaving this worker unpaid, while another
    /// worker may be free.
    async fn check_queue(&self, ahead: u64) -> Result<(), HttpError> {
        let i = &self.0;
        let mean = i.mean_job_us.load(Ordering::Relaxed);
        if ahead == 0 || mean == 0 {
            return Ok(());
        }
        let ledger = i.signer.ledger();
        let unavailable =
            |e: anyhow::Error| http_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        let height = ledger.height().await.map_err(unavailable)?;
        let timeout = ledger.params().await.map_err(unavailable)?.job_timeout;
        let (elapsed, blocks) = i.clock.observe(height);
        admission(ahead, Duration::from_micros(mean), elapsed, blocks, timeout).map_err(|why| {
            i.refused_busy.fetch_add(1, Ordering::Relaxed);
            http_error(StatusCode::SERVICE_UNAVAILABLE, why)
        })
    }

    /// Folds one job's wall time into the moving average (weight 1/8).
    fn record_job_time(&self, d: Duration) {
        let us = d.as_micros().clamp(1, u64::MAX as u128) as u64;
        let _ = self
            .0
            .mean_job_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 { us } else { old - old / 8 + us / 8 })
            });
    }
}

/// Whether a job may queue behind `ahead` jobs of `mean_job` each: refused when that wait
/// exceeds half of its deadline of `job_timeout` blocks at the block time observed (`elapsed`
/// over `blocks`). Admits while the block time is unknown.
pub fn admission(
    ahead: u64,
    mean_job: Duration,
    elapsed: Duration,
    blocks: u64,
    job_timeout: u64,
) -> Result<(), String> {
    if blocks == 0 {
        return Ok(());
    }
    let wait = mean_job.as_secs_f64() * ahead as f64;
    let budget = elapsed.as_secs_f64() / blocks as f64 * job_timeout as f64 / 2.0;
    if wait > budget {
        return Err(format!(
            "worker busy: {ahead} jobs ahead, about {wait:.1} s before this one would start, \
             more than half of its {job_timeout}-block deadline (~{:.1} s at the current block \
             time); try another worker",
            budget * 2.0
        ));
    }
    Ok(())
}

async fn health(AxState(w): AxState<Worker>) -> Json<serde_json::Value> {
    Json(json!({
        "address": hex::encode(w.address()),
        "model_id": w.0.cfg.model_id,
        "profile": w.0.engine.profile().id,
        "price_per_1k": w.0.cfg.price_per_1k,
        "busy": w.0.busy.load(Ordering::Relaxed),
        "served": w.0.served.load(Ordering::Relaxed),
        "compute_ms": w.0.compute_us.load(Ordering::Relaxed) / 1000,
        "mean_job_ms": w.0.mean_job_us.load(Ordering::Relaxed) / 1000,
        "refused_busy": w.0.refused_busy.load(Ordering::Relaxed),
    }))
}

async fn receipt(
    AxState(w): AxState<Worker>,
    Path(job): Path<String>,
) -> Result<Response, HttpError> {
    let job: Hash256 = job
        .parse()
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, format!("bad job id: {e}")))?;
    let text = tokio::fs::read_to_string(w.receipt_path(&job))
        .await
        .map_err(|_| http_error(StatusCode::NOT_FOUND, format!("no receipt for job {job}")))?;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(text))
        .expect("static response parts"))
}

/// A job's place in this worker's queue: counted in `busy` until dropped (when the job is
/// refused, or when its run ends).
struct Place(Worker);

impl Drop for Place {
    fn drop(&mut self) {
        self.0 .0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run(
    AxState(w): AxState<Worker>,
    body: Result<Json<RunRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let Json(req) = body.map_err(|e| http_error(StatusCode::BAD_REQUEST, e.body_text()))?;
    req.params
        .sampling
        .validate()
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Some(k) = req
        .top_logprobs
        .filter(|&k| usize::from(k) > deai_engine::sampler::MAX_TOP_LOGPROBS)
    {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            format!(
                "top_logprobs must be at most {}, got {k}",
                deai_engine::sampler::MAX_TOP_LOGPROBS
            ),
        ));
    }
    let (job, place, reserved) = w.admit(&req).await?;
    // Make sure the escrow reaches the chain even if the gateway's copy was lost.
    let _ = w.0.signer.ledger().submit(&req.open_job).await;
    // `None` on the channel aborts the response mid-stream (a simulated crash). Unbounded, so
    // that the engine never waits for a slow reader: a run sends at most `max_tokens` token
    // events (and a tamper's extras) and one last event.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Option<RunEvent>>();
    // Published by the escrow watcher once the job's escrow is finalized on chain.
    let paid = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_escrow(w.clone(), req.clone(), job, paid.clone()));
    let w2 = w.clone();
    tokio::spawn(async move {
        let permit = w2.0.gate.acquire().await.expect("semaphore never closed");
        if tx.is_closed() {
            // The client left while the job queued: nothing to run it for.
            watcher.abort();
            return;
        }
        let w3 = w2.clone();
        let tx2 = tx.clone();
        let t0 = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || execute(&w3, &req, job, &tx2, &paid)).await;
        watcher.abort();
        w2.0.compute_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        w2.record_job_time(t0.elapsed());
        drop(permit);
        drop(place);
        match out {
            Ok(Ok((bytes, tokens))) => {
                w2.0.served.fetch_add(1, Ordering::Relaxed);
                post_receipt(&w2, job, receipt_digest(&bytes), tokens).await;
                // On chain now (or given up): the ledger's lock replaces the reservation.
                drop(reserved);
            }
            Ok(Err(e)) => {
                let _ = tx.send(Some(RunEvent::Error {
                    message: format!("{e:#}"),
                }));
            }
            Err(e) => {
                let _ = tx.send(Some(RunEvent::Error {
                    message: format!("worker task failed: {e}"),
                }));
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).expect("events serialize");
        line.push(b'\n');
        Some((
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line)),
            rx,
        ))
    });
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .header("x-deai-job", job.to_string())
        .body(Body::from_stream(stream))
        .expect("static response parts"))
}

/// Watches the chain until `job`'s escrow is finalized as `req` says (open, for this model
/// and worker, from the client its `OpenJob` names (its signer, or the client a gateway
/// signed for), billing at least this worker's price once the app's and gateway's fees
/// recorded on chain are set aside), then sets `paid`. Runs until then or until aborted (when the run ends); a job found in
/// another state or shape is never paid for.
async fn watch_escrow(w: Worker, req: RunRequest, job: Hash256, paid: Arc<AtomicBool>) {
    let i = &w.0;
    let need = deai_ledger::job_cost(
        req.prompt_tokens
            .len()
            .saturating_add(req.params.max_tokens) as u64,
        i.cfg.price_per_1k,
    );
    let client = match &req.open_job.tx.kind {
        TxKind::OpenJob {
            client: Some(c), ..
        } => *c,
        _ => req.open_job.tx.from,
    };
    loop {
        match i.signer.ledger().job(&job).await {
            Ok(Some(j)) => {
                // The fees on top come from the escrow that landed (another OpenJob of the
                // same job id may name an app the one handed to this worker did not).
                let billable =
                    deai_ledger::state::billable(j.escrow, j.app_bps.saturating_add(j.gateway_bps));
                let ours = j.status == deai_ledger::state::JobStatus::Open
                    && j.model == i.cfg.model_id
                    && j.worker == Some(w.address())
                    && j.client == client
                    && billable >= need;
                if ours {
                    paid.store(true, Ordering::Release);
                } else {
                    tracing::warn!(%job, "the job on chain is not the escrow this run needs");
                }
                return;
            }
            _ => tokio::time::sleep(ESCROW_POLL).await,
        }
    }
}

/// Waits (blocking) until `paid` is set, at most `wait`, and no longer once the client is
/// gone; returns whether the escrow was seen.
fn wait_for_escrow(
    paid: &AtomicBool,
    wait: Duration,
    tx: &tokio::sync::mpsc::UnboundedSender<Option<RunEvent>>,
) -> bool {
    let t0 = std::time::Instant::now();
    while !paid.load(Ordering::Acquire) {
        if t0.elapsed() >= wait || tx.is_closed() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Runs the job on the engine (blocking), streaming tokens into `tx`; stores the receipt and
/// returns its canonical bytes and the billed token count. Past [`FREE_TOKENS`] output
/// tokens it goes on only once `paid` (the escrow is finalized), waiting for it at most the
/// worker's escrow wait; it stops as soon as `tx`'s receiver is gone (the client left).
fn execute(
    w: &Worker,
    req: &RunRequest,
    job: Hash256,
    tx: &tokio::sync::mpsc::UnboundedSender<Option<RunEvent>>,
    paid: &AtomicBool,
) -> Result<(Vec<u8>, u32)> {
    let i = &w.0;
    let tamper: &dyn Tamper = match &i.cfg.tamper {
        Some(t) if i.served.load(Ordering::Relaxed) >= i.cfg.tamper_after => t.as_ref(),
        _ => &Untampered,
    };
    let engine: &Engine = tamper.engine().unwrap_or(&i.engine);
    let send = |ev: Option<RunEvent>| {
        let _ = tx.send(ev);
    };
    let mut index = 0usize;
    let top = req.top_logprobs.map(usize::from);
    let wait = w.escrow_wait();
    let mut unpaid = false;
    let run = engine.generate_cancellable(&req.prompt_tokens, &req.params, top, |ev| {
        if tx.is_closed() {
            // The client disconnected: free the engine for the next job.
            return ControlFlow::Break(());
        }
        let event = RunEvent::Token {
            token: ev.token,
            text: ev.text.to_string(),
            logprobs: ev.logprobs.clone(),
        };
        tamper
            .token(engine, index, event)
            .into_iter()
            .for_each(send);
        index += 1;
        // Unpaid work is bounded: no token past the free ones before the escrow is final.
        let more = index < req.params.max_tokens;
        if more
            && index >= FREE_TOKENS
            && !paid.load(Ordering::Acquire)
            && !wait_for_escrow(paid, wait, tx)
        {
            unpaid = !tx.is_closed();
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    let mut g = match run {
        Err(deai_engine::EngineError::Cancelled) if unpaid => anyhow::bail!(
            "the escrow of job {job} was not finalized on chain within {wait:?} after \
             {FREE_TOKENS} unpaid tokens: run stopped, no receipt"
        ),
        Err(deai_engine::EngineError::Cancelled) => {
            anyhow::bail!("the client disconnected: run of job {job} stopped, no receipt")
        }
        r => r?,
    };
    for event in tamper.generated(engine, &mut g)? {
        send(Some(event));
    }
    let mut r: Receipt = build_receipt(
        &req.spec(),
        &g,
        engine.model.cfg.d_model,
        &engine.profile(),
        ProofConfig::default(),
        i.signer.key(),
    )?;
    tamper.receipt(&mut r, i.signer.key())?;
    let bytes = r.to_bytes()?;
    let json = r.to_json();
    let path = w.receipt_path(&job);
    let tmp = path.with_extension("tmp");
    write_durably(&tmp, &path, json.as_bytes())?;
    let tokens = (r.prompt_tokens.len() + r.output_tokens.len()) as u32;
    let _ = tx.send(Some(RunEvent::Done {
        job,
        stop_reason: r.stop_reason,
        prompt_tokens: r.prompt_tokens.len(),
        output_tokens: r.output_tokens.len(),
        receipt: serde_json::from_str(&json)?,
        receipt_digest: receipt_digest(&bytes),
    }));
    Ok((bytes, tokens))
}

/// Writes `bytes` to `tmp`, flushes it to disk, renames it to `path` and flushes the
/// directory: a receipt whose digest goes on chain must survive a crash (the validators and
/// the client fetch it later, and a worker that cannot produce it is slashed).
fn write_durably(tmp: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(tmp, path).with_context(|| format!("storing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Waits for the job's escrow to be finalized, then posts the receipt digest and pointer.
async fn post_receipt(w: &Worker, job: Hash256, digest: Hash256, tokens: u32) {
    let ledger = w.0.signer.ledger();
    let t0 = tokio::time::Instant::now();
    loop {
        match ledger.job(&job).await {
            Ok(Some(_)) => break,
            _ if t0.elapsed() > w.0.cfg.post_timeout => {
                tracing::warn!(%job, "escrow never finalized; receipt not posted");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let pointer = format!("{}/worker/v1/receipts/{job}", w.0.url);
    let kind = TxKind::PostReceipt {
        job,
        receipt: digest,
        tokens,
        pointer,
    };
    match w
        .0
        .signer
        .submit_and_wait(kind, Duration::from_secs(60))
        .await
    {
        Ok(f) => tracing::info!(%job, height = f.height, "receipt posted"),
        Err(e) => tracing::warn!(%job, "posting the receipt failed: {e:#}"),
    }
}

/// Fallback: the chain's query routes, forwarded to this worker's ledger node (for the
/// explorer it serves); else a 404.
async fn chain_proxy(
    AxState(w): AxState<Worker>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    crate::chain_proxy::forward(w.0.signer.ledger(), method, uri).await
}

#[cfg(test)]
mod admission_tests {
    use super::admission;
    use std::time::Duration;

    #[test]
    fn a_job_is_refused_only_when_its_queue_wait_exceeds_half_its_deadline() {
        let s = Duration::from_secs;
        // Block time unknown yet: admitted.
        assert!(admission(100, s(10), s(5), 0, 60).is_ok());
        // 1 s blocks, 60-block deadline: 30 s of queue allowed.
        assert!(admission(3, s(10), s(10), 10, 60).is_ok());
        let err = admission(4, s(10), s(10), 10, 60).unwrap_err();
        assert!(err.contains("4 jobs ahead"), "{err}");
        assert!(err.contains("60-block deadline"), "{err}");
        // Faster blocks shrink the budget: 0.1 s blocks, 30 s wait vs 3 s budget.
        assert!(admission(3, s(10), s(1), 10, 60).is_err());
        // Nothing ahead never refuses.
        assert!(admission(0, s(1_000), s(1), 10, 1).is_ok());
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
pub(crate) mod tests;
