//! The network end to end, in one process per test (`deai_node::devnet`): a 4-validator
//! chain on loopback, workers running the real SmolLM2 model, every validator verifying
//! receipts, and the OpenAI-compatible gateway, driven by a real HTTP client.
//!
//! - cheating workers (altered output, fake activation proof, other weights) are rejected
//!   by a validator quorum, slashed and dropped from routing while an honest worker is paid;
//! - a worker that dies mid-stream is replaced, the client's stream has no gap or repeat,
//!   and the dead worker's escrow comes back: no funds are lost;
//! - malformed, unauthenticated, oversized, forged and replayed requests get clear errors.
//!
//! Needs `DEAI_MODEL_PATH` (set by `scripts/test.sh`); without it each test prints SKIPPED.

use deai_client::{ChainClient, Signer};
use deai_engine::{Engine, EngineConfig};
use deai_ledger::state::{JobStatus, Params};
use deai_ledger::{Address, TxKind};
use deai_node::devnet::{self, Devnet, DevnetOptions, Runner as _};
use deai_node::faults::Behavior;
use deai_node::proto::RunRequest;
use deai_types::Hash256;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The devnets of these tests share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn model_path(test: &str) -> Option<PathBuf> {
    match std::env::var_os("DEAI_MODEL_PATH") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "DEAI_MODEL_PATH={} is not a file", p.display());
            Some(p)
        }
        _ => {
            eprintln!("SKIPPED: set DEAI_MODEL_PATH to the SmolLM2-135M-Instruct GGUF ({test})");
            None
        }
    }
}

fn engine(path: &std::path::Path) -> Arc<Engine> {
    Arc::new(Engine::load(path, EngineConfig::default()).unwrap())
}

/// A port base with every port the devnet uses free.
fn free_base() -> u16 {
    let offsets: Vec<u16> = (0..4).chain(100..104).chain(200..210).collect();
    deai_chain::ports::free_port_base(&offsets).unwrap()
}

/// Chain parameters for tests: every receipt verified, short windows (loopback blocks take a
/// few milliseconds, so 1500 blocks is seconds; 150 let a failed capability challenge settle
/// as accepted before the validators' verdicts landed on a loaded machine).
fn params() -> Params {
    Params {
        job_timeout: 1500,
        challenge_window: 1500,
        verdict_window: 1500,
        ..devnet::devnet_params()
    }
    .fit_periods(deai_ledger::state::DEFAULT_EPOCH_LENGTH)
}

/// Runs `f` against a fresh devnet with `workers` (cheaters pass their capability challenge
/// and cheat afterwards).
fn with_devnet<F, Fut>(test: &str, workers: impl FnOnce(&std::path::Path) -> Vec<Behavior>, f: F)
where
    F: FnOnce(Devnet, PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    with_devnet_opts(test, workers, true, f)
}

fn with_devnet_opts<F, Fut>(
    test: &str,
    workers: impl FnOnce(&std::path::Path) -> Vec<Behavior>,
    cheaters_pass_challenge: bool,
    f: F,
) where
    F: FnOnce(Devnet, PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    with_devnet_full(
        test,
        workers,
        cheaters_pass_challenge,
        Vec::new(),
        params(),
        f,
    )
}

fn with_devnet_full<F, Fut>(
    test: &str,
    workers: impl FnOnce(&std::path::Path) -> Vec<Behavior>,
    cheaters_pass_challenge: bool,
    no_verifier: Vec<usize>,
    params: Params,
    f: F,
) where
    F: FnOnce(Devnet, PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Some(path) = model_path(test) else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("devnet");
    let workers = workers(tmp.path())
        .into_iter()
        .map(Behavior::tamper)
        .collect();
    let opts = DevnetOptions {
        dir: dir.clone(),
        model_path: path.clone(),
        model_name: "SmolLM2-135M-Instruct".into(),
        base_port: free_base(),
        validators: 4,
        workers,
        cheaters_pass_challenge,
        price_per_1k: 1_000,
        engine: engine(&path),
        verify_engine: None,
        model_id: deai_models_sha256(&path),
        params,
        no_verifier,
    };
    devnet::runner(&dir).start(|ctx| async move {
        let net = devnet::start(&ctx, opts).await.expect("devnet starts");
        f(net, dir).await;
    });
}

fn deai_models_sha256(path: &std::path::Path) -> Hash256 {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    Hash256(Sha256::digest(&bytes).into())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// One non-streaming chat request; returns the response body (asserting 200).
async fn chat(net: &Devnet, content: &str, seed: u64) -> Value {
    let r = http()
        .post(format!("{}/v1/chat/completions", net.info.gateway))
        .bearer_auth(&net.info.api_key)
        .json(&json!({
            "model": net.info.model,
            "messages": [{ "role": "user", "content": content }],
            "max_tokens": 24, "seed": seed,
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let receipt = r.headers().get("x-deai-receipt").cloned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        receipt.unwrap().to_str().unwrap(),
        v["deai"]["receipt_id"].as_str().unwrap(),
        "the header names the receipt"
    );
    v
}

fn job_of(v: &Value) -> Hash256 {
    v["deai"]["job"].as_str().unwrap().parse().unwrap()
}

/// Waits until every job in `jobs` is final on chain; returns their records.
async fn wait_final(
    ledger: &ChainClient,
    jobs: &[Hash256],
    secs: u64,
) -> HashMap<Hash256, deai_ledger::state::Job> {
    let t0 = tokio::time::Instant::now();
    loop {
        let mut all = HashMap::new();
        for j in jobs {
            if let Some(job) = ledger.job(j).await.unwrap() {
                if job.status.is_final() {
                    all.insert(*j, job);
                }
            }
        }
        if all.len() == jobs.len() {
            return all;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{} of {} jobs final after {secs} s",
            all.len(),
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn cheaters_are_rejected_slashed_and_dropped_while_the_honest_worker_is_paid() {
    let workers = |tmp: &std::path::Path| {
        let path = model_path("cheaters").unwrap();
        let noisy = tmp.join("noisy.gguf");
        deai_engine::gguf::perturb_tensor(&path, &noisy, "blk.0.ffn_down.weight", 0.02, 7).unwrap();
        vec![
            Behavior::Honest,
            Behavior::AlterOutput,
            Behavior::FakeProof,
            Behavior::OtherWeights(engine(&noisy)),
        ]
    };
    with_devnet("cheaters", workers, |net, _dir| async move {
        let addr: Vec<Address> = net.workers.iter().map(|w| w.address()).collect();
        let honest = addr[0];
        let stake0: Vec<u64> = {
            let mut v = Vec::new();
            for a in &addr {
                v.push(net.ledger.account(a).await.unwrap().1);
            }
            v
        };
        // Round-robin routing among equals: the first four requests reach all four workers.
        let mut jobs: Vec<(Hash256, Address)> = Vec::new();
        let mut answers: Vec<Value> = Vec::new();
        for i in 0..4 {
            let v = chat(&net, &format!("Name a color. Request {i}."), i).await;
            let mut w = [0u8; 32];
            hex::decode_to_slice(v["deai"]["worker"].as_str().unwrap(), &mut w).unwrap();
            jobs.push((job_of(&v), w));
            answers.push(v);
        }
        let served: std::collections::HashSet<Address> = jobs.iter().map(|j| j.1).collect();
        assert_eq!(served.len(), 4, "each worker got a job");
        let ids: Vec<Hash256> = jobs.iter().map(|j| j.0).collect();
        let done = wait_final(&net.ledger, &ids, 120).await;
        for (job, w) in &jobs {
            let status = done[job].status;
            if *w == honest {
                assert_eq!(status, JobStatus::Accepted, "the honest job is accepted");
                let s = done[job].settlement.as_ref().unwrap();
                assert!(s.worker_paid > 0 && s.slashed == 0);
            } else {
                assert_eq!(status, JobStatus::Rejected, "a cheater's job is rejected");
                let s = done[job].settlement.as_ref().unwrap();
                assert_eq!(s.worker_paid, 0);
                assert!(s.slashed > 0 && s.burned > 0);
                assert_eq!(
                    s.client_refund, done[job].escrow,
                    "the client gets it all back"
                );
            }
        }
        // `order=deadline` lists the same jobs, soonest deadline first (what validators check
        // next); an unknown order is a 400.
        let g = &net.info.gateway;
        let list = |order: &'static str| async move {
            let v: Value = get_json(format!("{g}/v1/jobs?limit=1000{order}")).await;
            v["jobs"].as_array().unwrap().clone()
        };
        let (newest, due) = (list("").await, list("&order=deadline").await);
        assert!(newest.len() >= jobs.len());
        let ids = |l: &[Value]| {
            let mut v: Vec<String> = l.iter().map(|j| j["id"].to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(ids(&newest), ids(&due));
        let deadlines: Vec<u64> = due
            .iter()
            .map(|j| j["job"]["deadline"].as_u64().unwrap())
            .collect();
        assert!(deadlines.windows(2).all(|w| w[0] <= w[1]), "{deadlines:?}");
        assert_eq!(raw_get(g, "/v1/jobs?order=oldest").await, 400);
        // The explorer's view through the gateway (chain routes proxied to the ledger node):
        // each job's trail names its escrow, receipt and every verdict, with the verdicts'
        // votes matching the outcome; the prompt and answer are shown to their owner only.
        for (k, (job, _)) in jobs.iter().enumerate() {
            let v: Value = get_json(format!("{g}/v1/job/{job}")).await;
            let trail = v["trail"].as_array().expect("trail");
            let types: Vec<&str> = trail.iter().map(|t| t["type"].as_str().unwrap()).collect();
            assert_eq!(types.first(), Some(&"open_job"), "{v}");
            assert!(types.contains(&"post_receipt"), "{types:?}");
            let votes: Vec<bool> = trail
                .iter()
                // Plain verdicts, and a committee's revealed ones.
                .filter(|t| {
                    (t["type"] == "verdict" || t["type"] == "verdict_reveal")
                        && t["error"].is_null()
                })
                .map(|t| t["yes"].as_bool().unwrap())
                .collect();
            assert_eq!(votes.len(), done[job].verdicts.len(), "{v}");
            let accepted = done[job].status == JobStatus::Accepted;
            assert!(votes.iter().all(|&y| y == accepted), "{votes:?}");
            let heights: Vec<u64> = trail
                .iter()
                .map(|t| t["height"].as_u64().unwrap())
                .collect();
            assert!(heights.windows(2).all(|w| w[0] <= w[1]), "trail in order");

            let rid = answers[k]["deai"]["receipt_id"].as_str().unwrap();
            let url = format!("{g}/v1/receipts/{rid}");
            let mine: Value = http()
                .get(&url)
                .bearer_auth(&net.info.api_key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let conv = &mine["conversation"];
            assert_eq!(
                conv["prompt"][0]["content"],
                format!("Name a color. Request {k}."),
                "{mine}"
            );
            assert_eq!(
                conv["answer"], answers[k]["choices"][0]["message"]["content"],
                "the stored answer is the one the client got"
            );
            let anon: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
            assert!(
                anon.get("conversation").is_none(),
                "no key, no prompt: {anon}"
            );
            assert_eq!(anon["job"], job.to_string());
            let wrong = http()
                .get(&url)
                .bearer_auth("sk-nope")
                .send()
                .await
                .unwrap();
            assert_eq!(wrong.status(), 401);
        }
        // Workers answer their health probe within its 3 s timeout; retry once or twice in
        // case a loaded machine delays one.
        let mut stats = Value::Null;
        for _ in 0..3 {
            stats = get_json(format!("{g}/v1/gateway/status")).await;
            let reported = stats["workers"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["compute_ms"].as_u64().is_some_and(|ms| ms > 0))
            });
            if reported {
                break;
            }
        }
        let assigned: u64 = stats["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["assigned"].as_u64().unwrap())
            .sum();
        assert!(assigned >= 1, "{stats}");
        // Only active workers are probed: the three cheaters were deactivated when their jobs
        // were rejected (above), so the honest worker is listed, with its compute time.
        let listed = stats["workers"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{stats}");
        assert_eq!(listed[0]["address"], hex::encode(honest), "{stats}");
        assert!(
            listed
                .iter()
                .any(|w| w["compute_ms"].as_u64().is_some_and(|ms| ms > 0)),
            "{stats}"
        );
        // The worker's job-time average (its admission estimate) is running, it is idle
        // now, and it refused nothing: one request at a time never queues.
        assert!(
            listed[0]["mean_job_ms"].as_u64().is_some_and(|ms| ms > 0),
            "{stats}"
        );
        assert_eq!(listed[0]["busy"].as_u64(), Some(0), "{stats}");
        assert_eq!(listed[0]["refused_busy"].as_u64(), Some(0), "{stats}");
        // Dot segments cannot climb out of the forwarded routes (sent raw: reqwest would
        // normalise them away).
        for path in [
            "/v1/status/../../worker/v1/health",
            "/v1/status/%2e%2e/%2E%2E/x",
            "/v1/blocks/..%2f..%2fx",
        ] {
            assert_eq!(raw_get(g, path).await, 404, "{path}");
        }
        assert_eq!(raw_get(g, "/v1/status").await, 200);
        let nope = http().post(format!("{g}/v1/tx")).send().await.unwrap();
        assert_eq!(
            nope.status(),
            404,
            "the gateway forwards reads, never writes"
        );

        // What each validator found: content checks, not the signature, caught the cheats.
        for v in &net.verifiers {
            for f in v.findings.lock().unwrap().iter().filter(|f| !f.accept) {
                let reason = f.reason.clone().unwrap();
                eprintln!("rejected {}: {reason}", f.job);
                assert!(!reason.starts_with("signature"), "{reason}");
            }
        }
        let on_chain = net.ledger.workers().await.unwrap();
        for (k, a) in addr.iter().enumerate() {
            let w = on_chain.iter().find(|w| w.address == *a).unwrap();
            let stake = net.ledger.account(a).await.unwrap().1;
            if *a == honest {
                assert!(w.worker.active && w.worker.earned > 0 && w.worker.slashed == 0);
                assert_eq!(stake, stake0[k]);
            } else {
                assert!(!w.worker.active, "worker {k} is deactivated");
                assert!(
                    w.worker.slashed > 0 && stake < stake0[k],
                    "worker {k} lost stake"
                );
            }
        }
        // From now on only the honest worker gets jobs, and they are paid.
        let mut more = Vec::new();
        for i in 0..3 {
            let v = chat(&net, "Say hello.", 100 + i).await;
            assert_eq!(v["deai"]["worker"].as_str().unwrap(), hex::encode(honest));
            more.push(job_of(&v));
        }
        let done = wait_final(&net.ledger, &more, 120).await;
        assert!(done.values().all(|j| j.status == JobStatus::Accepted));
    });
}

/// The status code of `GET path` sent byte for byte to the server at `base` (http://host:port).
/// GET `url` and parse the JSON body (panics on any failure: this is a test).
async fn get_json(url: String) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

async fn raw_get(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..buf.len().min(32)]).to_string();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Reads an SSE response; returns the concatenated content, the final chunk and the
/// concatenated `logprobs.content` entries.
async fn read_sse(r: reqwest::Response) -> (String, Value, Vec<Value>) {
    let body = r.text().await.unwrap();
    let mut text = String::new();
    let mut lps = Vec::new();
    let mut last = Value::Null;
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        assert!(!done, "nothing after [DONE]");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert!(v.get("error").is_none(), "stream error: {v}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if let Some(l) = v["choices"][0]["logprobs"]["content"].as_array() {
            lps.extend(l.iter().cloned());
        }
        if !v["choices"][0]["finish_reason"].is_null() {
            last = v;
        }
    }
    assert!(done, "the stream ends with [DONE]: {body}");
    (text, last, lps)
}

#[test]
fn a_worker_dying_mid_stream_is_replaced_and_no_escrow_is_lost() {
    with_devnet(
        "failover",
        |_| vec![Behavior::DieAfter(3), Behavior::Honest],
        |net, _dir| async move {
            let dying = net.workers[0].address();
            let client = net.info.client;
            let (balance0, _, nonce0) = net.ledger.account(&client).await.unwrap();
            let req = json!({
                "model": net.info.model,
                "messages": [{ "role": "user", "content": "Write a short sentence about the sea." }],
                "max_tokens": 24, "seed": 7, "stream": true,
                "logprobs": true, "top_logprobs": 2,
            });
            // Two streams: whichever order routing picks, one of them meets the dying worker.
            let mut texts = Vec::new();
            let mut logprobs = Vec::new();
            let mut jobs = Vec::new();
            for _ in 0..2 {
                let r = http()
                    .post(format!("{}/v1/chat/completions", net.info.gateway))
                    .bearer_auth(&net.info.api_key)
                    .json(&req)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                assert!(r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/event-stream"));
                let (text, last, lps) = read_sse(r).await;
                assert!(!text.is_empty());
                logprobs.push(lps);
                assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
                assert_ne!(last["deai"]["worker"].as_str().unwrap(), hex::encode(dying));
                jobs.push(
                    last["deai"]["job"]
                        .as_str()
                        .unwrap()
                        .parse::<Hash256>()
                        .unwrap(),
                );
                texts.push(text);
            }
            // The same seeded request, non-streaming: the failed-over stream lost and
            // repeated nothing.
            let mut plain = req.clone();
            plain["stream"] = json!(false);
            let r = http()
                .post(format!("{}/v1/chat/completions", net.info.gateway))
                .bearer_auth(&net.info.api_key)
                .json(&plain)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            let reference = v["choices"][0]["message"]["content"].as_str().unwrap();
            assert_eq!(texts[0], reference);
            assert_eq!(texts[1], reference);
            // ... and so are the logprobs: one entry per token of the answer, none repeated.
            let reference_lps = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
            let spelled: Vec<u8> = reference_lps
                .iter()
                .flat_map(|t| t["bytes"].as_array().unwrap().iter())
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            assert_eq!(String::from_utf8(spelled).unwrap(), reference);
            assert!(reference_lps.len() > 3, "the dying worker sent 3 tokens");
            assert_eq!(&logprobs[0], reference_lps);
            assert_eq!(&logprobs[1], reference_lps);
            jobs.push(job_of(&v));
            // The job given to the dying worker expires and its escrow comes back.
            // (Any status: under load it may already have expired.)
            let dead: Vec<Hash256> = net
                .ledger
                .jobs("", 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|(_, j)| j.worker == Some(dying) && j.client == client)
                .map(|(id, _)| id)
                .collect();
            assert_eq!(
                dead.len(),
                1,
                "exactly one client job went to the dying worker"
            );
            let mut all = jobs.clone();
            all.extend(&dead);
            let done = wait_final(&net.ledger, &all, 180).await;
            let d = &done[&dead[0]];
            assert_eq!(d.status, JobStatus::Expired);
            assert_eq!(d.settlement.as_ref().unwrap().client_refund, d.escrow);
            for j in &jobs {
                assert_eq!(done[j].status, JobStatus::Accepted);
            }
            // Conservation for the client: what left its balance is exactly the fees plus
            // what its jobs cost; every unspent escrow came back.
            let (balance1, _, nonce1) = net.ledger.account(&client).await.unwrap();
            let fees = (nonce1 - nonce0) * net.ledger.params().await.unwrap().min_fee;
            let spent: u64 = done
                .values()
                .map(|j| j.escrow - j.settlement.as_ref().unwrap().client_refund)
                .sum();
            assert_eq!(balance0 - balance1, fees + spent);
        },
    );
}

#[test]
fn a_worker_streaming_other_tokens_than_it_signs_is_not_relayed() {
    with_devnet(
        "misreport",
        |_| vec![Behavior::MisreportStream, Behavior::Honest],
        |net, _dir| async move {
            let liar = net.workers[0].address();
            let honest = net.workers[1].address();
            // Whichever worker routing tries first, every answer the client gets finishes
            // with the honest worker's receipt: the liar's `done` is refused and the request
            // fails over.
            let mut answers = Vec::new();
            for i in 0..3 {
                let v = chat(&net, "Name a planet.", 11 + i).await;
                assert_eq!(
                    v["deai"]["worker"].as_str().unwrap(),
                    hex::encode(honest),
                    "{v}"
                );
                answers.push(v);
            }
            // The liar did serve the client: its escrowed jobs exist on chain (its receipts
            // are honest, so validators may still pay them; the client was not given their
            // answers). Its capability challenge is a validator's job, not counted here.
            let liar_jobs = net
                .ledger
                .jobs("", 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|(_, j)| j.worker == Some(liar) && j.client == net.info.client)
                .count();
            assert!(liar_jobs >= 1, "routing tried the liar at least once");
            let g: Value = get_json(format!("{}/v1/gateway/status", net.info.gateway)).await;
            // ... and the gateway counts each refused `done` as that worker's failure.
            let liar_hex = hex::encode(liar);
            let failures = g["workers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["address"] == liar_hex.as_str())
                .map(|w| w["failures"].as_u64().unwrap())
                .unwrap();
            assert_eq!(failures as usize, liar_jobs, "{g}");
        },
    );
}

#[test]
fn gateway_and_worker_refuse_bad_input_with_clear_errors() {
    with_devnet(
        "bad input",
        |_| vec![Behavior::Honest],
        |net, dir| async move {
            let g = &net.info.gateway;
            let c = http();
            let post = |body: Value, key: Option<&str>| {
                let mut r = c.post(format!("{g}/v1/chat/completions")).json(&body);
                if let Some(k) = key {
                    r = r.bearer_auth(k);
                }
                r.send()
            };
            let key = net.info.api_key.as_str();
            let ok = json!({ "model": net.info.model, "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 4 });
            let with = |k: &str, v: Value| {
                let mut b = ok.clone();
                b[k] = v;
                b
            };
            let long = "word ".repeat(9000);
            let cases: Vec<(Value, Option<&str>, u16, &str)> = vec![
                (ok.clone(), None, 401, "invalid_api_key"),
                (ok.clone(), Some("sk-wrong"), 401, "invalid_api_key"),
                (
                    with("model", json!("gpt-9")),
                    Some(key),
                    404,
                    "model_not_found",
                ),
                (
                    with("temperature", json!(5)),
                    Some(key),
                    400,
                    "invalid_request",
                ),
                (with("top_p", json!(0)), Some(key), 400, "invalid_request"),
                (with("n", json!(9)), Some(key), 400, "invalid_value"),
                (
                    with("top_logprobs", json!(3)),
                    Some(key),
                    400,
                    "invalid_value",
                ),
                (
                    with("max_tokens", json!(0)),
                    Some(key),
                    400,
                    "invalid_request",
                ),
                (
                    with("max_tokens", json!(u64::MAX)),
                    Some(key),
                    400,
                    "context_length_exceeded",
                ),
                (
                    with("stop", json!(["a", "b", "c", "d", "e"])),
                    Some(key),
                    400,
                    "invalid_request",
                ),
                (with("stop", json!(7)), Some(key), 400, "invalid_request"),
                (
                    with("messages", json!([])),
                    Some(key),
                    400,
                    "invalid_request",
                ),
                (
                    with("messages", json!([{ "role": "wizard", "content": "x" }])),
                    Some(key),
                    400,
                    "invalid_request",
                ),
                (
                    with("messages", json!([{ "role": "user", "content": long }])),
                    Some(key),
                    400,
                    "context_length_exceeded",
                ),
                (
                    json!({ "model": net.info.model }),
                    Some(key),
                    400,
                    "invalid_request",
                ),
            ];
            for (body, k, status, code) in cases {
                let r = post(body.clone(), k).await.unwrap();
                assert_eq!(r.status().as_u16(), status, "{body}");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], code, "{v}");
                assert!(!v["error"]["message"].as_str().unwrap().is_empty());
            }
            // Malformed JSON and an oversized body.
            let r = c
                .post(format!("{g}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body("{\"model\": ")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400);
            let r = c
                .post(format!("{g}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(vec![b' '; 5 << 20])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 413);
            // The rest of the body was never read: the connection is not reused.
            assert_eq!(r.headers()["connection"], "close");
            // Model lookup and unknown routes answer in the same error shape.
            let r = c
                .get(format!("{g}/v1/models/{}", net.info.model))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["deai"]["workers"], 1);
            let r = c.get(format!("{g}/v1/models/gpt-9")).send().await.unwrap();
            assert_eq!(r.status(), 404);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "model_not_found");
            let r = c.get(format!("{g}/v1/nothing/here")).send().await.unwrap();
            assert_eq!(r.status(), 404);
            let v: Value = r.json().await.unwrap();
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no such route"));
            // Unknown and malformed receipt ids.
            let r = c
                .get(format!("{g}/v1/receipts/{}", "ab".repeat(32)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404);
            let r = c.get(format!("{g}/v1/receipts/zz")).send().await.unwrap();
            assert_eq!(r.status(), 400);

            // A worker refuses forged, underpaid, misdirected and replayed jobs.
            let worker = &net.workers[0];
            let chain = net.ledger.chain_id().await.unwrap();
            let key_bytes = deai_chain::local::read_key(&dir.join("keys/client.key")).unwrap();
            let client = Signer::new(
                ed25519_dalek::SigningKey::from_bytes(&key_bytes),
                chain,
                1,
                net.ledger.clone(),
            );
            let model_id = net.info.model_id;
            let make = |nonce: u8| {
                let params = deai_engine::GenParams {
                    max_tokens: 4,
                    ..Default::default()
                };
                let spec = deai_proof::JobSpec {
                    model_id,
                    prompt_tokens: vec![1, 2, 3],
                    params: params.clone(),
                    nonce: [nonce; 32],
                };
                (Hash256(spec.id()), params)
            };
            let run = |req: RunRequest| {
                c.post(format!("{}/worker/v1/run", worker.url()))
                    .json(&req)
                    .send()
            };
            let open = |job: Hash256, escrow: u64, to: Address| TxKind::OpenJob {
                job,
                model: model_id,
                max_tokens: 4,
                escrow,
                worker: Some(to),
                app: None,
                client: None,
            };
            let (job, params) = make(1);
            let signed = client.sign(open(job, 100, worker.address())).await.unwrap();
            let req = RunRequest {
                model_id,
                prompt_tokens: vec![1, 2, 3],
                params: params.clone(),
                nonce: [1; 32],
                open_job: signed.clone(),
                top_logprobs: None,
            };
            // Forged: the escrow edited after signing.
            let mut forged = req.clone();
            if let TxKind::OpenJob { escrow, .. } = &mut forged.open_job.tx.kind {
                *escrow = 1_000_000;
            }
            assert_eq!(run(forged).await.unwrap().status(), 400);
            // Another job's escrow.
            let mut other = req.clone();
            other.nonce = [2; 32];
            assert_eq!(run(other).await.unwrap().status(), 400);
            // The real one runs; a replay is refused.
            let r = run(req.clone()).await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            assert!(body.lines().last().unwrap().contains("\"done\""), "{body}");
            let r = run(req.clone()).await.unwrap();
            assert_eq!(r.status(), 409);
            // Escrow below the worker's price, and a job for someone else.
            let (job3, _) = make(3);
            let cheap = client.sign(open(job3, 1, worker.address())).await.unwrap();
            let r = run(RunRequest {
                nonce: [3; 32],
                open_job: cheap,
                ..req.clone()
            })
            .await
            .unwrap();
            assert_eq!(r.status(), 402);
            let (job4, _) = make(4);
            let misdirected = client.sign(open(job4, 100, [9; 32])).await.unwrap();
            let r = run(RunRequest {
                nonce: [4; 32],
                open_job: misdirected,
                ..req.clone()
            })
            .await
            .unwrap();
            assert_eq!(r.status(), 400);
            // After all that the network still answers, and the job run directly is settled.
            let v = chat(&net, "Say yes.", 1).await;
            let done = wait_final(&net.ledger, &[job, job_of(&v)], 120).await;
            assert!(done.values().all(|j| j.status == JobStatus::Accepted));
            let _ = c;
        },
    );
}

#[test]
fn a_worker_without_the_model_fails_its_capability_challenge_and_gets_no_jobs() {
    let workers = |tmp: &std::path::Path| {
        let path = model_path("capability challenge").unwrap();
        let noisy = tmp.join("noisy.gguf");
        deai_engine::gguf::perturb_tensor(&path, &noisy, "blk.3.attn_q.weight", 0.02, 9).unwrap();
        vec![Behavior::Honest, Behavior::OtherWeights(engine(&noisy))]
    };
    with_devnet_opts(
        "capability challenge",
        workers,
        false,
        |net, _dir| async move {
            let (honest, impostor) = (net.workers[0].address(), net.workers[1].address());
            let reg = net.ledger.workers().await.unwrap();
            let w = |a: Address| reg.iter().find(|e| e.address == a).unwrap().worker.clone();
            // The devnet waited for both challenges: the honest worker qualified with one
            // accepted job; the impostor's challenge was rejected and it was slashed.
            assert!(
                w(honest).active && w(honest).jobs_done == 1,
                "{:?}",
                w(honest)
            );
            let imp = w(impostor);
            assert!(
                !imp.active && imp.jobs_done == 0 && imp.jobs_rejected == 1,
                "{imp:?}"
            );
            assert!(imp.slashed > 0);
            // Exactly one validator ran each challenge, and the impostor's failed. (A
            // challenger may still be filing its on-chain challenge after the verdicts
            // landed: wait for every probe to finish.)
            let t0 = std::time::Instant::now();
            while net
                .verifiers
                .iter()
                .any(|v| v.probes.lock().unwrap().values().any(Option::is_none))
            {
                assert!(
                    t0.elapsed() < Duration::from_secs(90),
                    "a capability challenge never finished"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut ran: HashMap<Address, Vec<bool>> = HashMap::new();
            for v in &net.verifiers {
                for (a, r) in v.probes.lock().unwrap().iter() {
                    ran.entry(*a)
                        .or_default()
                        .push(r.expect("challenge finished"));
                }
            }
            assert_eq!(ran[&honest], vec![true]);
            assert_eq!(ran[&impostor], vec![false]);
            // Clients only ever reach the honest worker.
            for i in 0..3 {
                let v = chat(&net, "Say hi.", i).await;
                assert_eq!(v["deai"]["worker"].as_str().unwrap(), hex::encode(honest));
            }
        },
    );
}

/// Validator 3 of the devnet is lazy (`faults::LazyValidator`): drawn for a committee, it
/// seals and reveals an acceptance under a made-up proof of verification, never running
/// the model. Its proof differs from the one its honest fellow members recomputed, so each
/// of its jobs escalates; the job still settles accepted (the worker is honest), and the
/// lazy validator is unpaid and slashed for every committee it sat on, while no honest
/// validator ever is.
#[test]
fn a_lazy_validator_earns_nothing_and_is_slashed() {
    const LAZY: usize = 3;
    let workers = |_: &std::path::Path| vec![Behavior::Honest];
    with_devnet_full(
        "lazy validator",
        workers,
        true,
        vec![LAZY],
        // The devnet's own verdict window: an honest member missing its commitment under
        // load (1500 blocks is seconds) would blur what the test measures.
        Params {
            verdict_window: devnet::devnet_params().verdict_window,
            ..params()
        }
        .fit_periods(deai_ledger::state::DEFAULT_EPOCH_LENGTH),
        |net, _dir| async move {
            let lazy = net.validators[LAZY].address();
            let stake0 = net.ledger.account(&lazy).await.unwrap().1;
            tokio::spawn(
                deai_node::faults::LazyValidator::new(net.validators[LAZY].clone())
                    .run(Duration::from_millis(200)),
            );
            // Requests until the beacon has put the lazy validator on two committees (each
            // job draws 3 of the 4 validators; at most 10 requests).
            let mut jobs = Vec::new();
            let mut drawn = 0;
            for i in 0..10u64 {
                let v = chat(&net, &format!("Name a planet. Request {i}."), i).await;
                jobs.push(job_of(&v));
                let settled = wait_final(&net.ledger, &jobs, 240).await;
                drawn = settled
                    .values()
                    .filter(|j| j.committee.contains(&lazy))
                    .count();
                if drawn >= 2 {
                    break;
                }
            }
            assert!(drawn >= 2, "the lazy validator was drawn {drawn} times");
            let settled = wait_final(&net.ledger, &jobs, 240).await;
            for (id, j) in &settled {
                assert_eq!(j.status, JobStatus::Accepted, "job {id}: {j:?}");
                if j.committee.contains(&lazy) {
                    assert!(j.escalated, "a made-up proof passed its committee: {j:?}");
                }
            }
            let vals = net.ledger.validators_json().await.unwrap();
            for v in vals["validators"].as_array().unwrap() {
                let rec = &v["validator"];
                let is_lazy = v["address"].as_str() == Some(&hex::encode(lazy));
                let (earned, wrong, slashed) = (
                    rec["earned"].as_u64().unwrap(),
                    rec["wrong"].as_u64().unwrap(),
                    rec["slashed"].as_u64().unwrap(),
                );
                if is_lazy {
                    // Every committee it sat on (the capability challenges' jobs too) cost
                    // it: a made-up proof (wrong) or, drawn before it started, a miss.
                    let (assigned, missed) = (
                        rec["assigned"].as_u64().unwrap(),
                        rec["missed"].as_u64().unwrap(),
                    );
                    assert_eq!(earned, 0, "the lazy validator was paid: {v}");
                    assert!(wrong >= drawn as u64, "{v}");
                    assert_eq!(wrong + missed, assigned, "{v}");
                    let per = deai_ledger::state::Params::default().verdict_slash;
                    assert_eq!(slashed, assigned * per, "{v}");
                } else {
                    assert!(earned > 0, "an honest validator went unpaid: {v}");
                    assert_eq!((wrong, slashed), (0, 0), "an honest validator slashed: {v}");
                }
            }
            let stake = net.ledger.account(&lazy).await.unwrap().1;
            assert!(
                stake < stake0,
                "the lazy validator's stake {stake0} -> {stake}"
            );
        },
    );
}
