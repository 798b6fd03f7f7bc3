//! The worker attacked through its HTTP API, against a fake chain node on loopback that
//! serves what the worker and the gateway read (status, accounts, jobs, workers) and records
//! what they submit. Run as an attacker would: requests that can never pay, requests that
//! pay late or never, a reader that never reads, and a client that leaves mid-run.
//! (`worker::tests`; the gateway's tests use [`FakeChain`] and [`TestWorker`] too.)

use super::*;
use crate::worker_client::WorkerClient;
use axum::extract::State;
use deai_client::ChainClient;
use deai_engine::{EngineConfig, GenParams};
use deai_ledger::{SignedTx, Tx};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

/// The fake chain's id.
pub(crate) const CHAIN: Hash256 = Hash256([7; 32]);
/// The model the test workers serve (the tiny generated one).
pub(crate) const MODEL: Hash256 = Hash256([9; 32]);
/// The test workers' price per 1000 tokens.
pub(crate) const PRICE: u64 = 1_000;

/// What the fake chain holds.
#[derive(Default)]
pub(crate) struct ChainState {
    /// Finalized account nonces (0 where absent).
    pub nonces: HashMap<Address, u64>,
    /// Whether a submitted `OpenJob` is finalized at once (else only by [`FakeChain::open`]).
    pub finalize: bool,
    /// Finalized jobs, as the chain API shows them.
    pub jobs: HashMap<Hash256, Value>,
    /// The registry, as `/v1/workers` lists it.
    pub workers: Vec<Value>,
    /// Every transaction submitted.
    pub submitted: Vec<SignedTx>,
    /// (client, gateway) -> what the client still lets the gateway escrow.
    pub allowances: HashMap<(Address, Address), u64>,
    /// Registered app ids.
    pub apps: Vec<Hash256>,
}

type Shared = Arc<Mutex<ChainState>>;

/// A chain node's HTTP API, faked on loopback.
pub(crate) struct FakeChain {
    pub url: String,
    pub state: Shared,
}

impl FakeChain {
    /// Starts one; `finalize`: whether escrows are finalized as soon as they are submitted.
    pub async fn start(finalize: bool) -> FakeChain {
        let state: Shared = Arc::new(Mutex::new(ChainState {
            finalize,
            ..Default::default()
        }));
        let router = Router::new()
            .route("/v1/status", get(status))
            .route("/v1/params", get(params))
            .route("/v1/account/{a}", get(account))
            .route("/v1/job/{id}", get(job))
            .route("/v1/workers", get(workers))
            .route("/v1/worker/{a}", get(worker))
            .route("/v1/allowance/{c}/{g}", get(allowance))
            .route("/v1/app/{id}", get(app))
            .route("/v1/tx", post(submit))
            .route("/v1/tx/{id}", get(tx_status))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeChain { url, state }
    }

    pub fn ledger(&self) -> ChainClient {
        ChainClient::new(&self.url)
    }

    /// Finalizes the escrow `tx` opens (its job appears, its sender's nonce moves past it).
    pub fn open(&self, tx: &SignedTx) {
        open_job(&mut self.state.lock().unwrap(), tx);
    }

    /// Lists `w` in the registry at `endpoint`, asking `price` per 1000 tokens (the
    /// gateway tries the cheapest first).
    pub fn register(&self, w: Address, endpoint: &str, price: u64) {
        self.state.lock().unwrap().workers.push(json!({
            "address": hex::encode(w),
            "stake": 1_000_000,
            "worker": {
                "models": [MODEL], "profile": "test", "hardware": "test",
                "price_per_1k": price, "endpoint": endpoint, "active": true,
                "registered_at": 1, "jobs_done": 1, "jobs_rejected": 0, "tokens_served": 0,
                "earned": 0, "slashed": 0, "locked": 0,
            },
        }));
    }
}

fn open_job(st: &mut ChainState, tx: &SignedTx) {
    let TxKind::OpenJob {
        job,
        model,
        max_tokens,
        escrow,
        worker,
        ..
    } = &tx.tx.kind
    else {
        return;
    };
    let client = match &tx.tx.kind {
        TxKind::OpenJob {
            client: Some(c), ..
        } => *c,
        _ => tx.tx.from,
    };
    st.jobs.insert(
        *job,
        json!({
            "client": hex::encode(client), "model": model, "max_tokens": max_tokens,
            "escrow": escrow, "worker": worker.map(hex::encode), "opened_at": 10,
            "deadline": 1_000, "status": "open", "receipt": null, "challenge": null,
            "verdicts": [], "settlement": null,
        }),
    );
    let n = st.nonces.entry(tx.tx.from).or_default();
    *n = (*n).max(tx.tx.nonce + 1);
}

async fn status() -> Json<Value> {
    Json(json!({ "chain_id": CHAIN, "height": 10 }))
}

async fn params() -> Json<Value> {
    Json(json!({ "params": deai_ledger::state::Params::default() }))
}

async fn account(State(st): State<Shared>, Path(a): Path<String>) -> Json<Value> {
    let mut addr = [0u8; 32];
    hex::decode_to_slice(&a, &mut addr).unwrap();
    let n = st.lock().unwrap().nonces.get(&addr).copied().unwrap_or(0);
    Json(
        json!({ "account": { "balance": 1_000_000_000u64, "stake": 0, "nonce": n },
                 "next_nonce": n }),
    )
}

async fn job(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let id: Hash256 = id.parse().unwrap();
    match st.lock().unwrap().jobs.get(&id) {
        Some(j) => Json(json!({ "job": j })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such job" })),
        )
            .into_response(),
    }
}

async fn allowance(State(st): State<Shared>, Path((c, g)): Path<(String, String)>) -> Json<Value> {
    let (mut client, mut gateway) = ([0u8; 32], [0u8; 32]);
    hex::decode_to_slice(&c, &mut client).unwrap();
    hex::decode_to_slice(&g, &mut gateway).unwrap();
    let left = st
        .lock()
        .unwrap()
        .allowances
        .get(&(client, gateway))
        .copied();
    Json(json!({
        "height": 10,
        "allowance": left.map(|remaining| json!({
            "remaining": remaining, "expires": 1_000, "spent": 0, "earned": 0,
        })),
    }))
}

async fn app(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let id: Hash256 = id.parse().unwrap();
    match st.lock().unwrap().apps.contains(&id) {
        true => Json(json!({ "app": {
            "owner": hex::encode([1u8; 32]), "name": "app", "fee_bps": 100,
            "registered_at": 1, "jobs": 0, "earned": 0,
        } }))
        .into_response(),
        false => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such app" })),
        )
            .into_response(),
    }
}

async fn workers(State(st): State<Shared>) -> Json<Value> {
    Json(json!({ "workers": st.lock().unwrap().workers }))
}

/// A worker listed in the registry, or else any key as an active worker staking 1,000,000
/// with nothing locked (the fake chain's workers are all registered).
async fn worker(State(st): State<Shared>, Path(a): Path<String>) -> Json<Value> {
    let st = st.lock().unwrap();
    if let Some(w) = st.workers.iter().find(|w| w["address"] == a.as_str()) {
        return Json(w.clone());
    }
    Json(json!({
        "address": a,
        "stake": 1_000_000,
        "worker": {
            "models": [MODEL], "profile": "test", "hardware": "test",
            "price_per_1k": PRICE, "endpoint": "", "active": true,
            "registered_at": 1, "jobs_done": 1, "jobs_rejected": 0, "tokens_served": 0,
            "earned": 0, "slashed": 0, "locked": 0,
        },
    }))
}

async fn submit(State(st): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let tx: SignedTx = serde_json::from_value(body["tx"].clone()).unwrap();
    let mut st = st.lock().unwrap();
    if st.finalize {
        open_job(&mut st, &tx);
    }
    st.submitted.push(tx.clone());
    Json(json!({ "id": tx.id() }))
}

async fn tx_status() -> Json<Value> {
    Json(json!({ "status": "finalized", "height": 11 }))
}

use axum::response::IntoResponse;

/// A worker on the tiny model, serving on loopback against `chain`.
pub(crate) struct TestWorker {
    pub worker: Worker,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl TestWorker {
    pub async fn start(
        chain: &FakeChain,
        tamper: Option<Arc<dyn Tamper>>,
        post_timeout: Duration,
    ) -> TestWorker {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(crate::testing::tiny_model(), EngineConfig::default()).unwrap();
        let signer = Signer::new(deai_proof::generate_key(), CHAIN, 1, chain.ledger());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cfg = WorkerConfig {
            model_id: MODEL,
            price_per_1k: PRICE,
            hardware: "test".into(),
            dir: dir.path().to_path_buf(),
            tamper,
            post_timeout,
            tamper_after: 0,
        };
        let worker = Worker::new(cfg, Arc::new(engine), signer, url.clone()).unwrap();
        let router = worker.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        TestWorker {
            worker,
            url,
            _dir: dir,
        }
    }

    /// The receipt this worker stored for `job`.
    pub fn receipt(&self, job: &Hash256) -> Receipt {
        let text = std::fs::read_to_string(self.worker.receipt_path(job)).unwrap();
        Receipt::from_json(&text).unwrap()
    }

    fn client(&self) -> WorkerClient {
        WorkerClient::new(&self.url, Duration::from_secs(120), Duration::from_secs(60))
    }
}

/// Generation parameters for `max_tokens` tokens that never stop early (stop tokens banned).
fn long(max_tokens: usize) -> GenParams {
    let mut p = GenParams {
        max_tokens,
        ..Default::default()
    };
    let mut stops = crate::testing::tiny_model().tokenizer.stop_ids();
    stops.sort_unstable();
    stops.dedup();
    p.sampling.logit_bias = stops.into_iter().map(|t| (t, -100.0)).collect();
    p.sampling.seed = 11;
    p
}

/// A job for `worker` with the client's `OpenJob` signed by `key` for `chain` at `nonce`.
fn job_request(
    key: &SigningKey,
    worker: Address,
    params: GenParams,
    chain: Hash256,
    nonce: u64,
) -> RunRequest {
    let prompt = vec![5, 6, 7];
    let job_nonce = deai_proof::random_nonce();
    let spec = deai_proof::JobSpec {
        model_id: MODEL,
        prompt_tokens: prompt.clone(),
        params: params.clone(),
        nonce: job_nonce,
    };
    let escrow = deai_ledger::job_cost((prompt.len() + params.max_tokens) as u64, PRICE);
    let open_job = Tx {
        chain,
        from: [0; 32],
        nonce,
        fee: 1,
        kind: TxKind::OpenJob {
            job: Hash256(spec.id()),
            model: MODEL,
            max_tokens: params.max_tokens as u32,
            escrow,
            worker: Some(worker),
            app: None,
            client: None,
        },
    }
    .sign(key);
    RunRequest {
        model_id: MODEL,
        prompt_tokens: prompt,
        params,
        nonce: job_nonce,
        open_job,
        top_logprobs: None,
    }
}

/// Every event of a run, read to its end.
async fn events(w: &TestWorker, req: &RunRequest) -> anyhow::Result<Vec<RunEvent>> {
    w.client().run(req).await?.remaining_events().await
}

fn tokens(evs: &[RunEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e, RunEvent::Token { .. }))
        .count()
}

fn done(evs: &[RunEvent]) -> bool {
    evs.iter().any(|e| matches!(e, RunEvent::Done { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_job_for_another_chain_or_a_spent_nonce_gets_no_work() {
    let chain = FakeChain::start(false).await;
    let w = TestWorker::start(&chain, None, Duration::from_secs(5)).await;
    let me = w.worker.address();
    let key = deai_proof::generate_key();
    // Signed for another chain: its escrow can never exist on this one.
    let req = job_request(&key, me, long(4), Hash256([1; 32]), 0);
    let err = w.client().run(&req).await.err().unwrap().to_string();
    assert!(err.contains("400") && err.contains("chain"), "{err}");
    // A nonce the client's account has already spent, on a job that is not on chain.
    let client = key.verifying_key().to_bytes();
    chain.state.lock().unwrap().nonces.insert(client, 5);
    let req = job_request(&key, me, long(4), CHAIN, 3);
    let err = w.client().run(&req).await.err().unwrap().to_string();
    assert!(err.contains("400") && err.contains("nonce 3"), "{err}");
    assert!(!w.worker.receipt_path(&req.job_id()).exists());
    assert_eq!(w.worker.0.served.load(Ordering::Relaxed), 0);
    // The same nonce is fine when it is the transaction that opened the job.
    chain.open(&req.open_job);
    let evs = events(&w, &req).await.unwrap();
    assert_eq!(tokens(&evs), 4);
    assert!(done(&evs), "{evs:?}");
    // And a fresh nonce on this chain, escrow finalized: served.
    let req = job_request(&key, me, long(4), CHAIN, 6);
    chain.open(&req.open_job);
    assert!(done(&events(&w, &req).await.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_escrow_never_lands_gets_at_most_the_free_tokens() {
    let chain = FakeChain::start(false).await;
    let w = TestWorker::start(&chain, None, Duration::from_millis(300)).await;
    let me = w.worker.address();
    let key = deai_proof::generate_key();
    // The attacker's OpenJob is well formed but never reaches the chain.
    let req = job_request(&key, me, long(60), CHAIN, 0);
    let evs = events(&w, &req).await.unwrap();
    assert_eq!(tokens(&evs), FREE_TOKENS, "{evs:?}");
    assert!(!done(&evs), "no receipt for an unpaid job");
    match evs.last() {
        Some(RunEvent::Error { message }) => {
            assert!(message.contains("not finalized"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!w.worker.receipt_path(&req.job_id()).exists());
    // A job within the free tokens needs no wait (it is paid for when posted).
    let req = job_request(&key, me, long(FREE_TOKENS), CHAIN, 1);
    assert!(done(&events(&w, &req).await.unwrap()));
    // An escrow that lands while the run waits: the run goes on to the end.
    let w = TestWorker::start(&chain, None, Duration::from_secs(30)).await;
    let req = job_request(&key, w.worker.address(), long(60), CHAIN, 2);
    let (late, tx) = (chain.state.clone(), req.open_job.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        open_job(&mut late.lock().unwrap(), &tx);
    });
    let evs = events(&w, &req).await.unwrap();
    assert_eq!(tokens(&evs), 60);
    assert!(done(&evs), "{evs:?}");
}

/// Counts the tokens a worker generates, slowly.
#[derive(Debug, Default)]
struct Slow(AtomicUsize);

impl Tamper for Slow {
    fn token(&self, _engine: &Engine, _index: usize, event: RunEvent) -> Vec<Option<RunEvent>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        vec![Some(event)]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_does_not_pin_the_worker() {
    let chain = FakeChain::start(true).await;
    let w = TestWorker::start(&chain, None, Duration::from_secs(5)).await;
    let me = w.worker.address();
    let key = deai_proof::generate_key();
    // More events than any bounded queue the engine could wait on would hold.
    let slow = job_request(&key, me, long(400), CHAIN, 0);
    chain.open(&slow.open_job);
    let held = run(State(w.worker.clone()), Ok(Json(slow.clone())))
        .await
        .unwrap();
    // Its body is never polled; the next job still completes.
    let next = job_request(&key, me, long(4), CHAIN, 1);
    chain.open(&next.open_job);
    let evs = tokio::time::timeout(Duration::from_secs(60), events(&w, &next))
        .await
        .expect("the second job was stuck behind a reader that never reads")
        .unwrap();
    assert!(done(&evs), "{evs:?}");
    // The unread run was not cut short either: all of it waits for its reader.
    let body = axum::body::to_bytes(held.into_body(), usize::MAX)
        .await
        .unwrap();
    let evs: Vec<RunEvent> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(tokens(&evs), 400);
    assert!(done(&evs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_run_frees_the_engine_and_gets_no_receipt() {
    let chain = FakeChain::start(true).await;
    let slow = Arc::new(Slow::default());
    let w = TestWorker::start(&chain, Some(slow.clone()), Duration::from_secs(5)).await;
    let me = w.worker.address();
    let key = deai_proof::generate_key();
    // 400 tokens at 5 ms each would hold the engine for 2 s.
    let left = job_request(&key, me, long(400), CHAIN, 0);
    let resp = run(State(w.worker.clone()), Ok(Json(left.clone())))
        .await
        .unwrap();
    let mut body = resp.into_body().into_data_stream();
    use futures::StreamExt;
    body.next().await.unwrap().unwrap();
    drop(body);
    let next = job_request(&key, me, long(4), CHAIN, 1);
    let evs = events(&w, &next).await.unwrap();
    assert!(done(&evs), "{evs:?}");
    // The left run stopped within a token or so of the client leaving.
    let generated = slow.0.load(Ordering::Relaxed);
    assert!(generated < 100, "{generated} tokens generated for nobody");
    assert!(!w.worker.receipt_path(&left.job_id()).exists());
    assert_eq!(w.worker.0.served.load(Ordering::Relaxed), 1);
}

/// A worker whose free stake cannot cover a job's collateral refuses it (503) rather than run
/// it and have its receipt refused on chain; with the stake there, the same job runs, and the
/// reservation is released once the receipt is posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_job_its_free_stake_cannot_back() {
    let chain = FakeChain::start(true).await;
    let w = TestWorker::start(&chain, None, Duration::from_secs(5)).await;
    let me = w.worker.address();
    let key = deai_proof::generate_key();
    let entry = |stake: u64, locked: u64| {
        json!({
            "address": hex::encode(me),
            "stake": stake,
            "worker": {
                "models": [MODEL], "profile": "test", "hardware": "test",
                "price_per_1k": PRICE, "endpoint": w.url, "active": true,
                "registered_at": 1, "jobs_done": 1, "jobs_rejected": 0, "tokens_served": 0,
                "earned": 0, "slashed": 0, "locked": locked,
            },
        })
    };
    // 7 tokens at 1,000 per 1k: escrow 7, collateral 70 at the default 10x. Stake 100 with
    // 40 locked by receipts already posted leaves 60.
    chain.state.lock().unwrap().workers = vec![entry(100, 40)];
    let req = job_request(&key, me, long(4), CHAIN, 0);
    let err = w.client().run(&req).await.err().unwrap().to_string();
    assert!(
        err.contains("503") && err.contains("free stake 60"),
        "{err}"
    );
    assert_eq!(w.worker.0.reserved.load(Ordering::SeqCst), 0);
    chain.state.lock().unwrap().workers = vec![entry(100, 30)];
    let req = job_request(&key, me, long(4), CHAIN, 1);
    assert!(done(&events(&w, &req).await.unwrap()));
    let t0 = std::time::Instant::now();
    while w.worker.0.reserved.load(Ordering::SeqCst) != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "reservation never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway names a rich client that never authorized it (or one whose allowance is spent),
/// or names an app without leaving room for its fee: the escrow would never land or would
/// bill the worker less, so the worker does no work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_the_clients_allowance_gets_no_work() {
    let chain = FakeChain::start(false).await;
    let w = TestWorker::start(&chain, None, Duration::from_secs(5)).await;
    let me = w.worker.address();
    let gateway = deai_proof::generate_key();
    let victim: Address = [0xc1; 32];
    let with = |req: &mut RunRequest, app: Option<Hash256>, client: Option<Address>, scale: u64| {
        let mut tx = req.open_job.tx.clone();
        if let TxKind::OpenJob {
            app: a,
            client: c,
            escrow,
            ..
        } = &mut tx.kind
        {
            *a = app;
            *c = client;
            *escrow = *escrow * scale / 10;
        }
        req.open_job = tx.sign(&gateway);
    };
    // No allowance at all.
    let mut req = job_request(&gateway, me, long(4), CHAIN, 0);
    with(&mut req, None, Some(victim), 15);
    let err = w.client().run(&req).await.err().unwrap().to_string();
    assert!(err.contains("402") && err.contains("allow"), "{err}");
    // An allowance smaller than the escrow.
    let g = gateway.verifying_key().to_bytes();
    chain
        .state
        .lock()
        .unwrap()
        .allowances
        .insert((victim, g), 1);
    let err = w.client().run(&req).await.err().unwrap().to_string();
    assert!(err.contains("402") && err.contains("allow"), "{err}");
    // An app named with the bare price as escrow: no room for the fees on top.
    let mut req = job_request(&gateway, me, long(4), CHAIN, 0);
    with(&mut req, Some(Hash256([0xab; 32])), None, 10);
    let err = w.client().run(&req).await.err().unwrap().to_string();
    assert!(err.contains("402") && err.contains("room"), "{err}");
    assert_eq!(w.worker.0.served.load(Ordering::Relaxed), 0);
    // Enough allowance and room: served.
    chain
        .state
        .lock()
        .unwrap()
        .allowances
        .insert((victim, g), 1_000_000);
    let mut req = job_request(&gateway, me, long(4), CHAIN, 0);
    with(&mut req, None, Some(victim), 15);
    chain.open(&req.open_job);
    assert!(done(&events(&w, &req).await.unwrap()));
}
