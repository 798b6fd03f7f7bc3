//! Training over the network: a **coordinator** (aggregator with the validator's duty for
//! training jobs) and **training workers**, speaking HTTP.
//!
//! Each round the coordinator publishes the round's inputs; workers fetch the checkpoint and
//! their assigned shard by hash (and check the hash), run the inner steps, and post a signed
//! contribution, naming the URL where they answer openings. The round closes when the job's
//! worker count has submitted (a refused submission counts if it was signed by its worker;
//! one from an unstaked key does not) or its deadline passes (a missing worker never stalls
//! it);
//! the coordinator then draws the challenge, fetches the openings it needs from each worker,
//! re-executes the challenged step (`deai_train::verify`), merges what passed and publishes
//! the next checkpoint.
//!
//! Coordinator routes: `GET /train/v1/job`, `GET /train/v1/round`,
//! `GET /train/v1/checkpoints/{hash}`, `GET /train/v1/shards/{hash}`,
//! `POST /train/v1/contributions` (header `x-deai-worker-url`), `GET /train/v1/reports`,
//! `GET /train/v1/evidence/{round}` (what the last two closed rounds used, for
//! [`audit_remote`]). Worker route: `GET /train/v1/open/{round}/{step}`.

use crate::{http_client, http_error, HttpError};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use deai_client::Signer;
use deai_ledger::tx::MAX_TRAIN_WORKERS;
use deai_ledger::{Address, TxKind};
use deai_train::diloco::{JobSpec, Opener, RoundSpec, Tamper, WorkerRun};
use deai_train::verify::RoundReport;
use deai_train::{checkpoint, Coordinator, TrainError, Weights};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most shards, and bytes per shard, an audit downloads (bounds what a coordinator can make
/// a validator fetch).
pub const MAX_AUDIT_SHARDS: usize = 1024;
pub const MAX_AUDIT_SHARD: usize = 256 << 20;

/// How long a coordinator waits for the validators to settle a proposed round.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest contribution body (int8 pseudo-gradients are ~1 byte per parameter).
pub const MAX_CONTRIBUTION: usize = 64 << 20;
/// Largest opening a coordinator reads (a train state is 12 bytes per parameter).
pub const MAX_OPENING: usize = 512 << 20;

/// What `GET /train/v1/round` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundInfo {
    pub spec: RoundSpec,
    /// The coordinator's commitment to this round's challenge secret, fixed before any
    /// contribution arrives; the round's report reveals the secret
    /// (`deai_train::verify::challenge_commitment`).
    pub challenge_commitment: Hash256,
    /// The checkpoint before this round's (what a stale worker would start from).
    pub previous: Option<Hash256>,
    /// All rounds are done; `spec.checkpoint` is the final model.
    pub done: bool,
    pub pending: usize,
    /// Workers that submitted this round, admitted or refused.
    pub attempted: usize,
    pub deadline_ms_left: u64,
    /// The previous round is being verified and recorded: `spec` may already name the next
    /// round, but contributions to it are refused until this clears.
    #[serde(default)]
    pub closing: bool,
}

/// What the routes read. Published by the aggregator (after each submission and when a
/// round closes), so that no route waits while a round is verified.
struct CoInner {
    job: JobSpec,
    spec: RoundSpec,
    challenge_commitment: Hash256,
    previous: Option<Hash256>,
    pending: usize,
    attempted: usize,
    reports: Vec<RoundReport>,
    /// safetensors bytes of the current and previous checkpoints and outer-optimizer
    /// states, by hash.
    checkpoints: HashMap<Hash256, Arc<Vec<u8>>>,
    /// Encoded evidence of the last two closed rounds, by round.
    evidence: std::collections::BTreeMap<u32, Arc<Vec<u8>>>,
    shards: HashMap<Hash256, Arc<Vec<u8>>>,
    /// Where each pending contributor answers openings.
    urls: HashMap<[u8; 32], String>,
    opened_at: Instant,
    /// The round is being closed: late contributions are refused from here on.
    closing: bool,
    done: bool,
}

/// The coordinator role.
#[derive(Clone)]
pub struct TrainCoordinator {
    inner: Arc<Mutex<CoInner>>,
    /// The aggregator. Held for the whole of a round's closing (re-executing challenged
    /// steps, merging, evaluating), so routes never take it: only a submission does, and
    /// only while the round is open. Lock order: `inner` before `co`, never the reverse.
    co: Arc<Mutex<Coordinator>>,
    deadline: Duration,
    /// Records the job's rounds on the ledger (see [`TrainCoordinator::with_ledger`]).
    ledger: Option<Arc<Signer>>,
    /// Where validators reach this coordinator (named in every `train_round`).
    public_url: Arc<std::sync::OnceLock<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TrainCoordinator {
    /// A coordinator for `co`'s job; a round closes `deadline` after it opens at the latest.
    pub fn new(co: Coordinator, deadline: Duration) -> Result<Self> {
        let mut checkpoints = HashMap::new();
        for w in [co.weights.clone(), co.outer_state()] {
            checkpoints.insert(w.hash(), Arc::new(checkpoint::to_safetensors(&w)?));
        }
        let shards = co
            .shards()
            .iter()
            .map(|s| (s.id(), Arc::new(s.to_bytes())))
            .collect();
        Ok(TrainCoordinator {
            inner: Arc::new(Mutex::new(CoInner {
                job: co.job.clone(),
                spec: co.round_spec(),
                challenge_commitment: co.challenge_commitment(),
                previous: co.previous.as_ref().map(|w| w.hash()),
                pending: co.pending(),
                attempted: co.attempted(),
                reports: co.reports.clone(),
                checkpoints,
                shards,
                urls: HashMap::new(),
                evidence: Default::default(),
                opened_at: Instant::now(),
                closing: false,
                done: co.round >= co.job.rounds,
            })),
            co: Arc::new(Mutex::new(co)),
            deadline,
            ledger: None,
            public_url: Default::default(),
        })
    }

    /// Records every round on the ledger with `signer`, the coordinator named by the job's
    /// `open_training` transaction (opened on chain beforehand, with this job's id): each
    /// round is proposed by a `train_round` transaction (merged checkpoint, report digest,
    /// who is paid, who is slashed, this coordinator's URL) and the next round opens only
    /// once a validator quorum has accepted it ([`TrainAuditor`]). Contributions from keys
    /// without the ledger's minimum worker stake are refused. Set the URL validators reach
    /// this coordinator at with [`TrainCoordinator::set_public_url`] before the first round
    /// closes.
    pub fn with_ledger(mut self, signer: impl Into<Arc<Signer>>) -> Self {
        self.ledger = Some(signer.into());
        self
    }

    /// The URL validators fetch this coordinator's reports and evidence from.
    pub fn set_public_url(&self, url: &str) {
        let _ = self.public_url.set(url.trim_end_matches('/').to_string());
    }

    /// The digest of a round report as recorded on chain: SHA-256 over its JSON form as
    /// `GET /train/v1/reports` serves it.
    pub fn report_digest(r: &RoundReport) -> Hash256 {
        let json = serde_json::to_vec(r).expect("reports serialize");
        Hash256::digest_parts("deai-train-report-v1", &[&json])
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/train/v1/job", get(job))
            .route("/train/v1/round", get(round))
            .route("/train/v1/checkpoints/{hash}", get(checkpoint_bytes))
            .route("/train/v1/shards/{hash}", get(shard_bytes))
            .route("/train/v1/contributions", post(contribute))
            .route("/train/v1/reports", get(reports))
            .route("/train/v1/evidence/{round}", get(evidence_bytes))
            .merge(deai_explorer::router(deai_explorer::UiConfig::TRAINING))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTRIBUTION))
            .layer(axum::middleware::map_response(crate::close_if_body_unread))
            .with_state(self.clone())
    }

    pub fn info(&self) -> RoundInfo {
        let i = lock(&self.inner);
        RoundInfo {
            spec: i.spec,
            challenge_commitment: i.challenge_commitment,
            previous: i.previous,
            done: i.done,
            pending: i.pending,
            attempted: i.attempted,
            deadline_ms_left: self
                .deadline
                .saturating_sub(i.opened_at.elapsed())
                .as_millis() as u64,
            closing: i.closing,
        }
    }

    pub fn reports(&self) -> Vec<RoundReport> {
        lock(&self.inner).reports.clone()
    }

    /// The current weights (waits while a round is being closed).
    pub fn weights(&self) -> Weights {
        self.coordinator().weights.clone()
    }

    /// The aggregator itself, locked. A round's closing holds it throughout. Of the routes
    /// only a submission to an open round takes it (briefly); the others never wait for it
    /// (a test holds it to show that). For reading: hold it briefly, since a submission
    /// waits for it, and change nothing through it (the routes would not see the change).
    pub fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        lock(&self.co)
    }

    /// Closes rounds until the job is done: a round closes when the job's worker count has
    /// submitted (admitted or refused), or at its deadline.
    pub async fn run(&self) -> Result<()> {
        loop {
            let ready = {
                let i = lock(&self.inner);
                if i.done {
                    return Ok(());
                }
                !i.closing
                    && (i.attempted >= i.job.workers as usize
                        || i.opened_at.elapsed() >= self.deadline)
            };
            if ready {
                self.close_round().await?;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn close_round(&self) -> Result<()> {
        // From here on contributions are refused without touching the aggregator.
        let urls = {
            let mut i = lock(&self.inner);
            i.closing = true;
            std::mem::take(&mut i.urls)
        };
        // The challenge draw comes after every commitment of the round.
        let (randomness, needs) = {
            let co = lock(&self.co);
            // The secret behind it was committed when the round opened; the set of
            // contributions is fixed now (closing refuses new ones).
            let randomness = co.challenge_randomness();
            let check = co.round_check();
            let needs: Vec<([u8; 32], String, u32, Vec<u32>)> = co
                .pending_contributions()
                .map(|c| {
                    let s = check.challenged_start(c, randomness);
                    let mut steps = vec![co.job.inner_steps];
                    if s > 1 {
                        steps.push(s - 1);
                    }
                    let url = urls.get(&c.worker).cloned().unwrap_or_default();
                    (c.worker, url, c.round, steps)
                })
                .collect();
            (randomness, needs)
        };
        let mut fetched: Vec<([u8; 32], Prefetched)> = vec![];
        for (worker, url, round, steps) in needs {
            let mut p = Prefetched::default();
            for step in steps {
                p.0.insert(step, fetch_opening(&url, round, step).await);
            }
            fetched.push((worker, p));
        }
        let co = self.co.clone();
        let (report, job_id, next) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut co = lock(&co);
            let openers: Vec<([u8; 32], &dyn Opener)> = fetched
                .iter()
                .map(|(w, p)| (*w, p as &dyn Opener))
                .collect();
            let report = co.close_round(&openers)?;
            debug_assert_eq!(report.challenge, randomness);
            tracing::info!(
                "training round {} closed: {} accepted, {} rejected, eval loss {:.4}",
                report.round,
                report.accepted.len(),
                report.rejected.len(),
                report.eval_loss
            );
            let next = Published {
                spec: co.round_spec(),
                challenge_commitment: co.challenge_commitment(),
                done: co.round >= co.job.rounds,
                checkpoint: Arc::new(checkpoint::to_safetensors(&co.weights)?),
                outer_state: Arc::new(checkpoint::to_safetensors(&co.outer_state())?),
                evidence: Arc::new(co.take_evidence().map(|e| e.to_bytes()).unwrap_or_default()),
            };
            Ok((report, co.job.id(), next))
        })
        .await??;
        {
            let mut i = lock(&self.inner);
            let prev = report.checkpoint;
            i.checkpoints.insert(next.spec.checkpoint, next.checkpoint);
            i.checkpoints
                .insert(report.next_outer_state, next.outer_state);
            i.evidence.insert(report.round, next.evidence);
            while i.evidence.len() > 2 {
                i.evidence.pop_first();
            }
            i.reports.push(report.clone());
            // Kept: the current checkpoint and outer state, and the start of every round
            // whose evidence is kept (what an auditor replays it from; the last one is also
            // the previous checkpoint).
            let mut keep = vec![next.spec.checkpoint, report.next_outer_state];
            for r in i.evidence.keys() {
                if let Some(rep) = i.reports.iter().rev().find(|x| x.round == *r) {
                    keep.extend([rep.checkpoint, rep.outer_state]);
                }
            }
            i.checkpoints.retain(|h, _| keep.contains(h));
            i.spec = next.spec;
            i.challenge_commitment = next.challenge_commitment;
            i.previous = Some(prev);
            i.pending = 0;
            i.attempted = 0;
            i.done = next.done;
        }
        if let Some(signer) = &self.ledger {
            self.post_round(signer, job_id, &report).await?;
        }
        let mut i = lock(&self.inner);
        i.closing = false;
        i.opened_at = Instant::now();
        Ok(())
    }

    /// Closes `report`'s round on chain and waits until it is final.
    async fn post_round(&self, signer: &Signer, job: Hash256, report: &RoundReport) -> Result<()> {
        let on_chain = signer
            .ledger()
            .training(&job)
            .await?
            .with_context(|| format!("training job {} is not on the ledger", job.short()))?;
        // Exactly the report's lists (validators check that), cut to what the ledger takes;
        // the ledger pays only those still holding the worker stake at settlement.
        let (accepted, rejected) = proposed_lists(report, on_chain.workers)?;
        let url = self
            .public_url
            .get()
            .context("the coordinator's public URL is not set (set_public_url)")?
            .clone();
        let f = signer
            .submit_and_wait(
                TxKind::TrainRound {
                    job,
                    round: report.round,
                    checkpoint: report.next_checkpoint,
                    report: Self::report_digest(report),
                    accepted,
                    rejected,
                    url,
                },
                Duration::from_secs(120),
            )
            .await
            .with_context(|| format!("proposing round {} on the ledger", report.round))?;
        if let Some(e) = f.error {
            bail!("the ledger refused round {}: {e}", report.round);
        }
        tracing::info!(
            "training round {} proposed on the ledger at height {}; waiting for the validators",
            report.round,
            f.height
        );
        // The next round opens on a settled checkpoint only.
        let t0 = Instant::now();
        loop {
            let t = signer
                .ledger()
                .training(&job)
                .await?
                .context("the training job left the ledger")?;
            if t.rounds_done > report.round {
                tracing::info!(
                    "training round {} settled by a validator quorum",
                    report.round
                );
                return Ok(());
            }
            if t.status != deai_ledger::TrainingStatus::Running {
                bail!(
                    "training job {} is {:?}: round {} was not accepted",
                    job.short(),
                    t.status,
                    report.round
                );
            }
            if t0.elapsed() > SETTLE_TIMEOUT {
                bail!(
                    "round {} has no validator quorum after {} s",
                    report.round,
                    SETTLE_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The payees and slashes a round's proposal lists: the report's `paid_keys` (at most the
/// job's worker count) and `slashed_keys` (at most what the transaction has room for).
pub fn proposed_lists(r: &RoundReport, workers: u32) -> Result<(Vec<Address>, Vec<Address>)> {
    let keys = |v: &[String]| -> Result<Vec<[u8; 32]>> {
        v.iter()
            .map(|h| {
                let mut k = [0u8; 32];
                hex::decode_to_slice(h, &mut k).context("a report key is not 32 hex bytes")?;
                Ok(k)
            })
            .collect()
    };
    let mut accepted = keys(&r.paid_keys)?;
    accepted.truncate((workers as usize).min(MAX_TRAIN_WORKERS));
    let mut rejected = keys(&r.slashed_keys)?;
    rejected.truncate(MAX_TRAIN_WORKERS - accepted.len());
    Ok((accepted, rejected))
}

/// What a closed round hands to the routes.
struct Published {
    spec: RoundSpec,
    challenge_commitment: Hash256,
    done: bool,
    /// safetensors bytes of the new checkpoint (`spec.checkpoint`) and outer state.
    checkpoint: Arc<Vec<u8>>,
    outer_state: Arc<Vec<u8>>,
    /// The closed round's encoded evidence.
    evidence: Arc<Vec<u8>>,
}

/// Openings fetched before the (blocking) challenge runs.
#[derive(Default)]
struct Prefetched(HashMap<u32, std::result::Result<Vec<u8>, String>>);

impl Opener for Prefetched {
    fn open(&self, step: u32) -> deai_train::Result<Vec<u8>> {
        match self.0.get(&step) {
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err(e)) => Err(TrainError::Rejected(e.clone())),
            None => Err(TrainError::Rejected(format!(
                "opening of step {step} was not fetched"
            ))),
        }
    }
}

async fn fetch_opening(url: &str, round: u32, step: u32) -> std::result::Result<Vec<u8>, String> {
    if url.is_empty() {
        return Err("the worker gave no opening URL".into());
    }
    let full = format!("{}/train/v1/open/{round}/{step}", url.trim_end_matches('/'));
    let mut resp = http_client(url, Duration::from_secs(120))
        .get(&full)
        .send()
        .await
        .map_err(|e| format!("GET {full}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {full}: {}", resp.status()));
    }
    let mut out = vec![];
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {full}: {e}"))? {
        if out.len() + chunk.len() > MAX_OPENING {
            return Err(format!("opening over {MAX_OPENING} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn job(State(s): State<TrainCoordinator>) -> Json<JobSpec> {
    Json(lock(&s.inner).job.clone())
}

async fn round(State(s): State<TrainCoordinator>) -> Json<RoundInfo> {
    Json(s.info())
}

async fn reports(State(s): State<TrainCoordinator>) -> Json<Vec<RoundReport>> {
    Json(s.reports())
}

fn parse_hash(h: &str) -> Result<Hash256, HttpError> {
    h.parse().map_err(|_| {
        http_error(
            StatusCode::BAD_REQUEST,
            format!("{h:?} is not a 64-hex-digit hash"),
        )
    })
}

async fn checkpoint_bytes(
    State(s): State<TrainCoordinator>,
    Path(h): Path<String>,
) -> Result<Bytes, HttpError> {
    let h = parse_hash(&h)?;
    let b = lock(&s.inner).checkpoints.get(&h).cloned();
    b.map(|b| Bytes::from_owner(ArcBytes(b))).ok_or_else(|| {
        http_error(
            StatusCode::NOT_FOUND,
            format!(
                "no checkpoint or outer state {h} (served: the current ones and the starts of the last two closed rounds)"
            ),
        )
    })
}

/// Shared bytes served without a copy per request.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

async fn evidence_bytes(
    State(s): State<TrainCoordinator>,
    Path(round): Path<u32>,
) -> Result<Bytes, HttpError> {
    let b = lock(&s.inner).evidence.get(&round).cloned();
    b.map(|b| Bytes::from_owner(ArcBytes(b))).ok_or_else(|| {
        http_error(
            StatusCode::NOT_FOUND,
            format!("no evidence of round {round} (only the last two closed rounds are kept)"),
        )
    })
}

async fn shard_bytes(
    State(s): State<TrainCoordinator>,
    Path(h): Path<String>,
) -> Result<Vec<u8>, HttpError> {
    let h = parse_hash(&h)?;
    let b = lock(&s.inner).shards.get(&h).cloned();
    b.map(|b| b.to_vec())
        .ok_or_else(|| http_error(StatusCode::NOT_FOUND, format!("no shard {h} in this job")))
}

#[derive(Serialize)]
struct Admitted {
    round: u32,
    pending: usize,
}

/// A worker's opening URL must be http(s) and point back at the address the contribution
/// came from, so that a contribution cannot make the coordinator fetch from anywhere else
/// (openings are fetched without following redirects). Behind a reverse proxy every worker
/// appears at the proxy's address: run the coordinator on its own port.
fn check_opening_url(url: &str, peer: Option<SocketAddr>) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|_| {
        "header x-deai-worker-url must be the worker's opening URL (http://HOST:PORT)".to_string()
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "the opening URL must be http or https, not {}",
            u.scheme()
        ));
    }
    let Some(peer) = peer else {
        return Err("the coordinator cannot see the contribution's source address".into());
    };
    let ip = peer.ip().to_canonical();
    let same = match u.host() {
        Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4) == ip,
        Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6).to_canonical() == ip,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost") && ip.is_loopback(),
        None => false,
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "the opening URL must point at the address the contribution came from ({ip}), not {}",
            u.host_str().unwrap_or("nowhere")
        ))
    }
}

/// Whether the contribution's (claimed) worker holds the ledger's minimum worker stake; the
/// signature is checked after this, by the coordinator.
/// Errors are `Ok(detail)` for a refusal that counts as the worker's attempt, `Err(detail)`
/// when the ledger could not be read (the worker may retry).
async fn check_stake(signer: &Signer, body: &[u8]) -> Result<Result<(), String>, String> {
    let Some(worker) = deai_train::diloco::Contribution::worker_of(body) else {
        return Ok(Err("the contribution names no worker".into()));
    };
    let ledger = signer.ledger();
    let unavailable = |e: anyhow::Error| format!("the ledger is unavailable: {e:#}");
    let min = ledger.params().await.map_err(unavailable)?.min_worker_stake;
    let stake = ledger.account(&worker).await.map_err(unavailable)?.1;
    if stake < min {
        return Ok(Err(format!(
            "worker {} has stake {stake}, below the ledger's worker minimum {min}: stake first",
            hex::encode(&worker[..6])
        )));
    }
    Ok(Ok(()))
}

async fn contribute(
    State(s): State<TrainCoordinator>,
    peer: Option<axum::extract::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Admitted>, (StatusCode, Json<serde_json::Value>)> {
    let url = headers
        .get("x-deai-worker-url")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let refuse = |status: StatusCode, r: serde_json::Value| {
        (status, Json(serde_json::json!({ "error": r })))
    };
    if let Err(detail) = check_opening_url(&url, peer.map(|p| p.0 .0)) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"reason": "malformed", "detail": detail}),
        ));
    }
    if let Some(signer) = &s.ledger {
        let checked = check_stake(signer, &body).await.map_err(|detail| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"reason": "ledger-unavailable", "detail": detail}),
            )
        })?;
        if let Err(detail) = checked {
            {
                let mut i = lock(&s.inner);
                if !i.done && !i.closing {
                    let mut co = lock(&s.co);
                    co.refuse(&body, detail.clone());
                    i.attempted = co.attempted();
                }
            }
            return Err(refuse(
                StatusCode::FORBIDDEN,
                serde_json::json!({"reason": "not-staked", "detail": detail}),
            ));
        }
    }
    let mut i = lock(&s.inner);
    if i.done || i.closing {
        let detail = if i.done {
            "the job is done"
        } else {
            "the round is closing: the contribution came after its deadline"
        };
        return Err(refuse(
            StatusCode::CONFLICT,
            serde_json::json!({"reason": "wrong-round", "detail": detail}),
        ));
    }
    // `closing` is false under `inner`, so no round is being closed: `co` is free.
    let mut co = lock(&s.co);
    let submitted = co.submit(&body);
    (i.pending, i.attempted) = (co.pending(), co.attempted());
    let round = co.round;
    drop(co);
    match submitted {
        Ok(w) => {
            i.urls.insert(w, url);
            Ok(Json(Admitted {
                round,
                pending: i.pending,
            }))
        }
        Err(r) => {
            let status = match r.reason {
                deai_train::Reason::Duplicate | deai_train::Reason::WrongRound => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::BAD_REQUEST,
            };
            Err(refuse(status, serde_json::to_value(&r).unwrap_or_default()))
        }
    }
}

/// A training worker: follows a coordinator's rounds, trains (through its [`Tamper`], if
/// any), posts contributions and answers openings.
#[derive(Clone)]
pub struct TrainWorker {
    key: Arc<SigningKey>,
    coordinator: String,
    /// How it lies; `None` for an honest worker.
    tamper: Option<Arc<dyn Tamper>>,
    /// This worker's own URL (where openings are served).
    pub url: String,
    runs: Arc<Mutex<HashMap<u32, Arc<WorkerRun>>>>,
    /// Leave after this many contributions (tests: a worker that goes away).
    pub max_rounds: Option<u32>,
}

impl TrainWorker {
    pub fn new(
        key: SigningKey,
        coordinator: &str,
        tamper: Option<Arc<dyn Tamper>>,
        url: &str,
    ) -> Self {
        TrainWorker {
            key: Arc::new(key),
            coordinator: coordinator.trim_end_matches('/').to_string(),
            tamper,
            url: url.to_string(),
            runs: Arc::new(Mutex::new(HashMap::new())),
            max_rounds: None,
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/train/v1/open/{round}/{step}", get(open))
            .with_state(self.clone())
    }

    async fn get_bytes(&self, path: &str, limit: usize) -> Result<Vec<u8>> {
        get_bytes(&self.coordinator, path, limit).await
    }

    async fn checkpoint(&self, h: Hash256) -> Result<Weights> {
        fetch_checkpoint(&self.coordinator, h).await
    }

    /// Takes part in rounds until the job is done (or `max_rounds` contributions); calls
    /// `on_step(round, step, loss)` after every inner step.
    pub async fn run(&self, on_step: Arc<dyn Fn(u32, u32, f32) + Send + Sync>) -> Result<u32> {
        let client = http_client(&self.coordinator, Duration::from_secs(30));
        let job: JobSpec = client
            .get(format!("{}/train/v1/job", self.coordinator))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut shards = vec![];
        for h in &job.shards {
            let b = self
                .get_bytes(&format!("/train/v1/shards/{h}"), 1 << 30)
                .await?;
            shards.push(deai_train::data::Shard::from_bytes(&b, Some(*h))?);
        }
        let mut done_rounds = 0u32;
        let mut last_round = None;
        let mut last_bytes: Option<Vec<u8>> = None;
        loop {
            let info: RoundInfo = client
                .get(format!("{}/train/v1/round", self.coordinator))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if info.done || self.max_rounds.is_some_and(|m| done_rounds >= m) {
                return Ok(done_rounds);
            }
            if info.closing || last_round == Some(info.spec.round) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let resends = self.tamper.as_ref().is_some_and(|t| t.resends());
            if let (true, Some(old)) = (resends, &last_bytes) {
                // Its tamper resends last round's contribution instead of training.
                let resp = client
                    .post(format!("{}/train/v1/contributions", self.coordinator))
                    .header("x-deai-worker-url", &self.url)
                    .body(old.clone())
                    .send()
                    .await?;
                tracing::debug!("replay answered {}", resp.status());
                last_round = Some(info.spec.round);
                done_rounds += 1;
                continue;
            }
            // The round's inputs follow from the job, the round and the checkpoint: a
            // coordinator that hands this worker other randomness (to frame it with a
            // wrong-shard "proof") is refused.
            if info.spec != RoundSpec::new(job.id(), info.spec.round, info.spec.checkpoint) {
                bail!(
                    "the coordinator's round {} inputs are not derived from the job and checkpoint",
                    info.spec.round
                );
            }
            let start = self.checkpoint(info.spec.checkpoint).await?;
            let previous = match info.previous {
                Some(p) if self.tamper.as_ref().is_some_and(|t| t.wants_previous()) => {
                    Some(self.checkpoint(p).await?)
                }
                _ => None,
            };
            let (key, job2, shards2, tamper, spec) = (
                self.key.clone(),
                job.clone(),
                shards.clone(),
                self.tamper.clone(),
                info.spec,
            );
            let cb = on_step.clone();
            let run = tokio::task::spawn_blocking(move || {
                WorkerRun::run(
                    &key,
                    &job2,
                    &spec,
                    &start,
                    previous.as_ref(),
                    &shards2,
                    tamper.as_deref(),
                    |s, l| cb(spec.round, s, l),
                )
            })
            .await??;
            let bytes = run.contribution.to_bytes();
            last_bytes = Some(bytes.clone());
            self.runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(info.spec.round, Arc::new(run));
            let resp = client
                .post(format!("{}/train/v1/contributions", self.coordinator))
                .header("x-deai-worker-url", &self.url)
                .body(bytes)
                .send()
                .await?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if status == reqwest::StatusCode::CONFLICT {
                    // Late (the round closed at its deadline) or a duplicate.
                    tracing::info!(
                        "round {}: contribution too late ({status}): {body}",
                        info.spec.round
                    );
                } else {
                    tracing::warn!(
                        "round {}: contribution refused ({status}): {body}",
                        info.spec.round
                    );
                }
            }
            last_round = Some(info.spec.round);
            done_rounds += 1;
            // Keep the last two rounds' runs for openings.
            self.runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|r, _| r + 2 > info.spec.round);
        }
    }
}

/// The coordinator did not serve what a judgment needs: unreachable, an error status, a
/// body cut short, or bytes that do not decode or hash to what was asked. Only such
/// failures count toward rejecting a round for unavailability ([`unavailable_verdict`]),
/// not the validator's own limits (sizes, shard counts, its replay's time).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unserved(pub String);

fn unserved(what: impl std::fmt::Display) -> anyhow::Error {
    Unserved(what.to_string()).into()
}

/// GET `base` + `path`, at most `limit` bytes.
async fn get_bytes(base: &str, path: &str, limit: usize) -> Result<Vec<u8>> {
    let url = format!("{base}{path}");
    let mut resp = http_client(base, Duration::from_secs(120))
        .get(&url)
        .send()
        .await
        .map_err(|e| unserved(format!("GET {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(unserved(format!("GET {url}: {}", resp.status())));
    }
    let mut out = vec![];
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| unserved(format!("GET {url}: {e}")))?
    {
        if out.len() + c.len() > limit {
            bail!("GET {url}: more than {limit} bytes");
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// A checkpoint (or outer state) by hash from a coordinator at `base`, hash checked.
async fn fetch_checkpoint(base: &str, h: Hash256) -> Result<Weights> {
    let path = format!("/train/v1/checkpoints/{h}");
    let b = get_bytes(base, &path, checkpoint::MAX_CHECKPOINT_BYTES).await?;
    checkpoint::from_safetensors(&b, Some(h))
        .map_err(|e| unserved(format!("GET {base}{path}: {e}")))
}

async fn get_json<T: serde::de::DeserializeOwned>(base: &str, path: &str) -> Result<T> {
    let b = get_bytes(base, path, 64 << 20).await?;
    serde_json::from_slice(&b)
        .map_err(|e| unserved(format!("GET {base}{path}: malformed JSON: {e}")))
}

/// Audits round `round` of the job a coordinator at `coordinator` runs: fetches the job,
/// the round's report and evidence, its start checkpoint and outer state and the training
/// shards (each checked by hash), and replays the round
/// ([`deai_train::audit::audit_round`]). The challenge commitment is the previous report's;
/// round 0's must be given (as `/train/v1/round` showed it before the round's
/// contributions). The round must start where the previous report ended. The report
/// history itself comes from the coordinator: that it is the one the ledger recorded (each
/// round's report digest, [`TrainCoordinator::report_digest`]) is not checked here. The
/// held-out shard is not served, so the eval loss is not re-checked. Returns the auditor's
/// own report; a disagreement is a `TrainError::Rejected` starting with `audit:`.
pub async fn audit_remote(
    coordinator: &str,
    round: u32,
    round0_commitment: Option<Hash256>,
) -> Result<RoundReport> {
    let base = coordinator.trim_end_matches('/');
    let job: JobSpec = get_json(base, "/train/v1/job").await?;
    let reports = reports_at(base).await?;
    let report = reports
        .iter()
        .find(|r| r.round == round)
        .with_context(|| format!("the coordinator has no report of round {round}"))?
        .clone();
    let prev = reports.iter().find(|p| round > 0 && p.round == round - 1);
    let committed = match (round, prev) {
        (0, _) => round0_commitment.context(
            "round 0's challenge commitment must be given (the round's /train/v1/round showed it)",
        )?,
        (_, Some(p)) => p.next_challenge_commitment,
        (r, None) => bail!("no report of round {} to take the commitment from", r - 1),
    };
    audit_fetched(base, job, report, prev, committed).await
}

/// The round reports a coordinator at `base` serves (`GET /train/v1/reports`).
pub async fn reports_at(base: &str) -> Result<Vec<RoundReport>> {
    get_json(base.trim_end_matches('/'), "/train/v1/reports").await
}

/// A disagreement found by an audit (as opposed to an audit that could not run).
fn disagreement(what: String) -> anyhow::Error {
    TrainError::Rejected(format!("audit: {what}")).into()
}

/// Whether `e` is an audit's finding against the coordinator; its message if so.
pub fn audit_finding(e: &anyhow::Error) -> Option<String> {
    match e.downcast_ref::<TrainError>() {
        Some(TrainError::Rejected(m)) if m.starts_with("audit:") => Some(m.clone()),
        _ => None,
    }
}

/// The continuity checks and the replay of `report`'s round from what the coordinator at
/// `base` serves (`prev`: the report before it, for continuity).
async fn audit_fetched(
    base: &str,
    job: JobSpec,
    report: RoundReport,
    prev: Option<&RoundReport>,
    committed: Hash256,
) -> Result<RoundReport> {
    let round = report.round;
    // Each round starts where the one before ended; round 0 with zero momentum.
    if let Some(prev) = prev {
        if (prev.next_checkpoint, prev.next_outer_state) != (report.checkpoint, report.outer_state)
        {
            return Err(disagreement(format!(
                "round {round} does not start from the checkpoint and outer state round {} ended with",
                prev.round
            )));
        }
    }
    let checkpoint = fetch_checkpoint(base, report.checkpoint).await?;
    let outer_state = fetch_checkpoint(base, report.outer_state).await?;
    if round == 0 && outer_state.tensors.iter().flatten().any(|x| *x != 0.0) {
        return Err(disagreement("round 0's outer state is not zero".into()));
    }
    if job.shards.len() > MAX_AUDIT_SHARDS {
        bail!(
            "the job names {} shards; an audit fetches at most {MAX_AUDIT_SHARDS}",
            job.shards.len()
        );
    }
    let mut shards = vec![];
    for h in &job.shards {
        let b = get_bytes(base, &format!("/train/v1/shards/{h}"), MAX_AUDIT_SHARD).await?;
        shards.push(
            deai_train::data::Shard::from_bytes(&b, Some(*h))
                .map_err(|e| unserved(format!("shard {}: {e}", h.short())))?,
        );
    }
    let ev = get_bytes(base, &format!("/train/v1/evidence/{round}"), 4 << 30).await?;
    let evidence = deai_train::audit::RoundEvidence::from_bytes(&ev)
        .map_err(|e| unserved(format!("round {round}'s evidence: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let inputs = deai_train::audit::AuditInputs {
            job: &job,
            checkpoint: &checkpoint,
            outer_state: &outer_state,
            shards: &shards,
            val: None,
            committed,
        };
        Ok(deai_train::audit::audit_round(&inputs, &report, &evidence)?)
    })
    .await?
}

/// A validator's decision on a proposed training round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundVerdict {
    Accept,
    /// The round is false; the reason.
    Reject(String),
}

/// Decides on round `p`, proposed on the ledger for training job `id` (whose finalized
/// record is `t`), from what the coordinator serves at `p.url`, anchored to the ledger:
/// the served job is `id`; the served report is the proposed one (digest) and produced the
/// proposed checkpoint; it starts from the ledger's checkpoint; the report before it is the
/// one the ledger settled (its digest), and gives the challenge commitment; the proposed
/// payees and slashes are the report's; and the round replays from its evidence
/// ([`deai_train::audit::audit_round`]). Round 0's commitment is the one the job was opened
/// with (`first_commitment`). `Err` when it cannot decide now (the coordinator unreachable, a
/// fetch failed): try again later; a round nobody can judge expires with the job.
pub async fn judge_round(
    id: Hash256,
    t: &deai_ledger::TrainingJob,
    p: &deai_ledger::state::PendingRound,
) -> Result<RoundVerdict> {
    let base = p.url.trim_end_matches('/');
    let reject = |m: String| Ok(RoundVerdict::Reject(m));
    let job: JobSpec = get_json(base, "/train/v1/job").await?;
    if job.id() != id {
        return reject(format!(
            "the coordinator serves job {}, not {}",
            job.id().short(),
            id.short()
        ));
    }
    let reports = reports_at(base).await?;
    let report = reports
        .iter()
        .find(|r| r.round == p.round)
        .ok_or_else(|| {
            unserved(format!(
                "the coordinator serves no report of round {}",
                p.round
            ))
        })?
        .clone();
    if TrainCoordinator::report_digest(&report) != p.report {
        return reject("the served report is not the one proposed on the ledger".into());
    }
    if report.next_checkpoint != p.checkpoint {
        return reject("the proposed checkpoint is not the report's".into());
    }
    if report.checkpoint != t.checkpoint {
        return reject("the round does not start from the ledger's checkpoint".into());
    }
    let prev = match p.round {
        0 => None,
        r => {
            let prev = reports.iter().find(|x| x.round == r - 1);
            match prev {
                Some(x) if Some(TrainCoordinator::report_digest(x)) == t.last_report => Some(x),
                _ => {
                    return reject(format!(
                        "round {}'s served report is not the one the ledger settled",
                        r - 1
                    ))
                }
            }
        }
    };
    // Exactly the report's lists: leaving an honest worker unpaid or a cheater unslashed
    // is as false as the reverse.
    let Ok((accepted, rejected)) = proposed_lists(&report, t.workers) else {
        return reject("the report's keys are malformed".into());
    };
    if p.accepted != accepted {
        return reject("the proposed payees are not the report's paid keys".into());
    }
    if p.rejected != rejected {
        return reject("the proposed slashes are not the report's slashed keys".into());
    }
    let committed = prev.map_or(t.first_commitment, |x| x.next_challenge_commitment);
    match audit_fetched(base, job, report, prev, committed).await {
        Ok(_) => Ok(RoundVerdict::Accept),
        Err(e) => match audit_finding(&e) {
            Some(m) => reject(m),
            None => Err(e),
        },
    }
}

/// Failed attempts to judge a round before [`unavailable_verdict`] may reject it.
pub const UNAVAILABLE_ATTEMPTS: u32 = 3;

/// What a validator answers for round `p` of job `t` after `failures` attempts to judge it
/// failed because the coordinator did not serve what the judgment needs ([`Unserved`];
/// `last` the latest error), at ledger height `height`: nothing yet, or, once at least
/// [`UNAVAILABLE_ATTEMPTS`] such attempts failed and half the judging window (the blocks
/// from the proposal to the job's deadline) has passed, a reject. Any other failure (the
/// validator's own limits, its replay running out of time) never rejects. A proposal whose
/// evidence cannot be had is not a round anyone can check; rejecting it in time slashes the
/// coordinator, where silence would let the job expire with the coordinator unpunished.
/// Every validator reads the same heights, so the honest ones reach this point together.
/// An honest coordinator loses its stake this way only if more than two thirds of the
/// validator stake could not reach it for half the window.
pub fn unavailable_verdict(
    t: &deai_ledger::TrainingJob,
    p: &deai_ledger::state::PendingRound,
    height: u64,
    failures: u32,
    last: &anyhow::Error,
) -> Option<RoundVerdict> {
    let half = p.proposed_at + t.deadline.saturating_sub(p.proposed_at) / 2;
    let unserved = last.downcast_ref::<Unserved>().is_some();
    (unserved && failures >= UNAVAILABLE_ATTEMPTS && height >= half).then(|| {
        RoundVerdict::Reject(format!(
            "the coordinator did not serve round {}'s report and evidence through half the \
             judging window (blocks {}..{}, {failures} attempts): {last:#}",
            p.round, p.proposed_at, half
        ))
    })
}

/// The validator's duty for training jobs: every proposed round it has not judged yet is
/// replayed from the coordinator's evidence ([`judge_round`]) and answered with a
/// `train_verdict`. Run one per validator key; the job's own coordinator does not judge
/// its rounds (its proposal counts as accepting).
pub struct TrainAuditor {
    signer: Arc<Signer>,
    /// Rounds whose judgment failed (coordinator unreachable, bad data), and when to retry:
    /// a coordinator that cannot be judged must not make the auditor re-download it
    /// continuously.
    retry: Mutex<HashMap<(Hash256, u32), Instant>>,
    /// Failed attempts per round (see [`unavailable_verdict`]).
    failures: Mutex<HashMap<(Hash256, u32), u32>>,
}

/// Longest one judgment may take (downloads and the replay) before it is abandoned.
pub const JUDGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Wait before judging a round again after a failed attempt.
pub const JUDGE_RETRY: Duration = Duration::from_secs(20);

impl TrainAuditor {
    /// `signer` may be shared with the validator's other duties (one nonce sequence per
    /// account).
    pub fn new(signer: impl Into<Arc<Signer>>) -> Self {
        TrainAuditor {
            signer: signer.into(),
            retry: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Judges rounds until the task is dropped.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::debug!("training auditor: {e:#}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// One pass over the ledger's training jobs; returns the verdicts posted.
    pub async fn tick(&self) -> Result<usize> {
        let me = self.signer.address();
        let mut posted = 0;
        let list = self.signer.ledger().pending_trainings().await?;
        lock(&self.retry).retain(|_, at| *at > Instant::now());
        lock(&self.failures).retain(|(id, round), _| {
            list.iter()
                .any(|(j, t)| j == id && t.pending.as_ref().is_some_and(|p| p.round == *round))
        });
        for (id, t) in list {
            let Some(p) = &t.pending else { continue };
            if t.status != deai_ledger::TrainingStatus::Running
                || t.coordinator == me
                || p.votes.iter().any(|v| v.voter == me)
                || lock(&self.retry).contains_key(&(id, p.round))
            {
                continue;
            }
            let judged = tokio::time::timeout(JUDGE_TIMEOUT, judge_round(id, &t, p)).await;
            let verdict = match judged.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))) {
                Ok(v) => v,
                Err(e) => {
                    lock(&self.retry).insert((id, p.round), Instant::now() + JUDGE_RETRY);
                    let failures = {
                        let mut f = lock(&self.failures);
                        let n = f.entry((id, p.round)).or_insert(0);
                        *n += u32::from(e.downcast_ref::<Unserved>().is_some());
                        *n
                    };
                    // Unknown height (the chain node hiccuped): no verdict this time.
                    let height = self.signer.ledger().height().await.unwrap_or(0);
                    match unavailable_verdict(&t, p, height, failures, &e) {
                        Some(v) => v,
                        None => {
                            tracing::debug!(
                                "training {} round {}: cannot judge yet: {e:#}",
                                id.short(),
                                p.round
                            );
                            continue;
                        }
                    }
                }
            };
            if let RoundVerdict::Reject(why) = &verdict {
                tracing::warn!(
                    "training {} round {}: rejecting: {why}",
                    id.short(),
                    p.round
                );
            }
            // A verdict that lands after the round settled (others were faster) is refused
            // on chain; that must not stop the pass over the other jobs.
            let sent = self
                .signer
                .submit_and_wait(
                    TxKind::TrainVerdict {
                        job: id,
                        round: p.round,
                        report: p.report,
                        accept: verdict == RoundVerdict::Accept,
                    },
                    Duration::from_secs(60),
                )
                .await;
            match sent {
                Ok(f) if f.error.is_none() => posted += 1,
                Ok(f) => tracing::info!(
                    "training {} round {}: verdict refused: {:?}",
                    id.short(),
                    p.round,
                    f.error
                ),
                Err(e) => tracing::info!(
                    "training {} round {}: verdict not recorded: {e:#}",
                    id.short(),
                    p.round
                ),
            }
        }
        Ok(posted)
    }
}

async fn open(
    State(w): State<TrainWorker>,
    Path((round, step)): Path<(u32, u32)>,
) -> Result<Vec<u8>, HttpError> {
    let run = w
        .runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&round)
        .cloned()
        .ok_or_else(|| {
            http_error(
                StatusCode::NOT_FOUND,
                format!("no contribution for round {round}"),
            )
        })?;
    tokio::task::spawn_blocking(move || run.open(step))
        .await
        .map_err(|e| http_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Serves `w`'s opening route on `addr`; returns the worker with its URL set.
pub async fn serve_worker(mut w: TrainWorker, addr: SocketAddr) -> Result<TrainWorker> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    w.url = format!("http://{bound}");
    let router = w.router();
    tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    Ok(w)
}
