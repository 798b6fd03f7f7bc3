//! A devnet survives a crash: `deai devnet` runs in a child process, is killed with SIGKILL
//! while one chat job's receipt waits for its verdicts and another job's escrow is open with
//! no worker to answer it, and is started again on the same directory and ports.
//!
//! Checked after the restart: every validator is at least as high as before the kill; the
//! finalized blocks from before the kill are unchanged and the pre-kill state root is still
//! the one the genesis validators certified (light-client checked); the first job keeps its
//! record and is accepted by a quorum of the resumed verifiers; the gateway still serves its
//! receipt by request id; the orphan escrow expires and comes back in full; the client's
//! balance moves across the restart only by those settlements, and in total by exactly the
//! fees plus the settled costs; and a request after the restart gives the same answer for the
//! same seed.
//!
//! Needs the real model: `DEAI_MODEL_PATH` (set by `scripts/test.sh`); without it the test
//! prints `SKIPPED` and passes.

use deai_chain::lightclient::{verify_state_proof, Proven, StateProof};
use deai_ledger::state::Key;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

/// Every child runs with a dead HTTP proxy in its environment: loopback traffic (CLI to
/// chain, gateway to workers, verifiers to receipts) must not go through it.
const DEAD_PROXY: &str = "http://127.0.0.1:9";
/// How long the devnet may take to answer `/v1/models` (loads the model, starts the chain).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a chat request, and the verdicts on its receipt, may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the orphan escrow may take to expire (the devnet's `job_timeout` is 600 blocks).
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(240);
const PROMPT: &str = "Name three primary colors.";
const SEED: u64 = 11;
const MAX_TOKENS: u64 = 16;
/// The orphan job's escrow and token limit.
const ORPHAN_ESCROW: u64 = 77;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The devnet process (killed when the test ends, passing or not) and what talks to it.
struct Devnet {
    dir: PathBuf,
    log: PathBuf,
    base: u16,
    model: PathBuf,
    http: reqwest::blocking::Client,
    child: Option<Child>,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "devnet log {} (last lines):\n{}",
                self.log.display(),
                common::log_tail(&self.log, 80)
            );
        }
    }
}

impl Devnet {
    /// Panics with `msg` (the log's end is printed when `self` is dropped).
    fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("{msg}")
    }

    /// Starts `deai devnet --dir DIR --port-base BASE`, its output appended to the log.
    fn start(&mut self, run: &str) {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "===== test: {run} =====").unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_deai"))
                .args(["devnet", "--dir", self.dir.to_str().unwrap()])
                .args(["--port-base", &self.base.to_string()])
                // The orphan escrow must expire within the test: 600 blocks, not the default.
                .args(["--job-timeout", "600"])
                .args(["--model", self.model.to_str().unwrap()])
                .env("HTTP_PROXY", DEAD_PROXY)
                .env("http_proxy", DEAD_PROXY)
                .env_remove("NO_PROXY")
                .env_remove("no_proxy")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    /// SIGKILL: no graceful shutdown of anything.
    fn kill(&mut self) {
        let mut c = self.child.take().expect("the devnet is running");
        c.kill().unwrap();
        let status = c.wait().unwrap();
        assert!(!status.success(), "killed, yet {status}");
    }

    /// Waits for `devnet.json` and a gateway that answers `/v1/models` with a worker.
    fn wait_ready(&mut self) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.fail(format!("`deai devnet` exited early ({status})"));
            }
            let info = std::fs::read(self.dir.join("devnet.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if let Some(info) = info {
                let gateway = info["gateway"].as_str().unwrap_or_default();
                let models = self
                    .http
                    .get(format!("{gateway}/v1/models"))
                    .send()
                    .ok()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.json::<Value>().ok());
                if models.is_some_and(|m| m["data"][0]["deai"]["workers"].as_u64() >= Some(1)) {
                    return info;
                }
            }
            if t0.elapsed() > START_TIMEOUT {
                self.fail(format!(
                    "the gateway did not answer /v1/models with a worker within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET `url` as JSON; `None` on 404.
    fn try_get(&self, url: &str) -> Option<Value> {
        let r = self
            .http
            .get(url)
            .send()
            .unwrap_or_else(|e| self.fail(format!("GET {url}: {e}")));
        let status = r.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let body = r.text().unwrap_or_default();
        if !status.is_success() {
            self.fail(format!("GET {url}: {status}: {body}"));
        }
        Some(
            serde_json::from_str(&body)
                .unwrap_or_else(|e| self.fail(format!("GET {url}: not JSON ({e}): {body}"))),
        )
    }

    fn get(&self, url: &str) -> Value {
        self.try_get(url)
            .unwrap_or_else(|| self.fail(format!("GET {url}: 404")))
    }

    /// Calls `f` until it gives `Some`, failing after `timeout`.
    fn poll<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(x) = f() {
                return x;
            }
            if t0.elapsed() > timeout {
                self.fail(format!("{what}: not within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A non-streaming chat request; returns the request id (`x-deai-receipt`) and the body.
    fn chat(&self, info: &Value) -> (String, Value) {
        let gateway = info["gateway"].as_str().unwrap();
        let r = self
            .http
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth(info["api_key"].as_str().unwrap())
            .timeout(JOB_TIMEOUT)
            .json(&json!({
                "model": info["model"],
                "messages": [{ "role": "user", "content": PROMPT }],
                "max_tokens": MAX_TOKENS,
                "seed": SEED,
            }))
            .send()
            .unwrap_or_else(|e| self.fail(format!("chat request: {e}")));
        let status = r.status();
        let request = r
            .headers()
            .get("x-deai-receipt")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r.text().unwrap_or_default();
        if !status.is_success() || request.is_empty() {
            self.fail(format!(
                "chat answered {status} (receipt {request:?}): {body}"
            ));
        }
        (request, serde_json::from_str(&body).unwrap())
    }

    /// `deai tx --url URL --key KEY ARGS...`
    fn tx(&self, url: &str, key: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_deai"))
            .args(["tx", "--url", url, "--key", key.to_str().unwrap()])
            .args(args)
            .env("HTTP_PROXY", DEAD_PROXY)
            .env("http_proxy", DEAD_PROXY)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The account's finalized (balance, nonce, height).
    fn account(&self, chain: &str, who: &str) -> (u64, u64, u64) {
        let v = self.get(&format!("{chain}/v1/account/{who}"));
        (
            v["account"]["balance"].as_u64().unwrap(),
            v["account"]["nonce"].as_u64().unwrap(),
            v["height"].as_u64().unwrap(),
        )
    }

    fn job(&self, chain: &str, id: &str) -> Option<Value> {
        self.try_get(&format!("{chain}/v1/job/{id}"))
            .map(|v| v["job"].clone())
    }

    fn height(&self, chain: &str) -> u64 {
        self.get(&format!("{chain}/v1/status"))["height"]
            .as_u64()
            .unwrap()
    }

    /// The account's state proof, checked against the genesis validators.
    fn proven_account(&self, chain: &str, who: &str, validators: &[[u8; 32]]) -> Proven {
        let p: StateProof =
            serde_json::from_value(self.get(&format!("{chain}/v1/proof/account/{who}"))).unwrap();
        let mut addr = [0u8; 32];
        hex::decode_to_slice(who, &mut addr).unwrap();
        let proven = verify_state_proof(validators, &Key::Account(addr), &p)
            .unwrap_or_else(|e| self.fail(format!("the account proof from {chain}: {e}")));
        assert!(proven.value.is_some(), "the client's account is missing");
        proven
    }
}

fn status_of(job: &Value) -> &str {
    job["status"].as_str().unwrap_or_default()
}

#[test]
fn devnet_restart_loses_no_finalized_state_or_escrow() {
    let Some(model) = std::env::var_os("DEAI_MODEL_PATH").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED: set DEAI_MODEL_PATH to the SmolLM2-135M-Instruct GGUF (devnet restart)"
        );
        return;
    };
    assert!(
        model.is_file(),
        "DEAI_MODEL_PATH={} is not a file",
        model.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Devnet {
        dir: tmp.path().join("devnet"),
        log: tmp.path().join("devnet.log"),
        base: common::free_devnet_base(),
        model,
        http: reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        child: None,
    };
    let t_all = Instant::now();

    // 1. Start, wait for the gateway.
    net.start("first start");
    let info = net.wait_ready();
    eprintln!("devnet up in {:.1?}", t_all.elapsed());
    let chains: Vec<String> = info["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(chains.len(), 4, "{info}");
    let chain = chains[0].as_str();
    let client = info["client"].as_str().unwrap().to_string();
    let model_id = info["model_id"].as_str().unwrap().to_string();
    let client_key = net.dir.join("keys/client.key");
    let (genesis, _) = deai_chain::local::load(&net.dir).unwrap();
    let validators: Vec<[u8; 32]> = genesis.validators.iter().map(|v| v.address).collect();
    let min_fee = net.get(&format!("{chain}/v1/params"))["params"]["min_fee"]
        .as_u64()
        .unwrap();
    let (balance0, nonce0, _) = net.account(chain, &client);

    // 3 (done first, so that it is still open at the kill). An escrow no worker will answer:
    // the client opens a job and nobody runs it.
    let orphan = hex::encode(deai_proof::random_nonce());
    let fee = min_fee.to_string();
    let escrow = ORPHAN_ESCROW.to_string();
    let o = net.tx(
        chain,
        &client_key,
        &[
            "--fee",
            &fee,
            "open-job",
            "--job",
            &orphan,
            "--model",
            &model_id,
            "--max-tokens",
            "8",
            "--escrow",
            &escrow,
        ],
    );
    if !o.status.success() || !text(&o).contains("finalized at height") {
        net.fail(format!("deai tx open-job failed: {}", text(&o)));
    }

    // 2. A chat request through the gateway.
    let t_chat = Instant::now();
    let (request, body) = net.chat(&info);
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let job1 = body["deai"]["job"].as_str().unwrap().to_string();
    eprintln!(
        "answer in {:.1?}: {answer:?} (job {job1}, request {request})",
        t_chat.elapsed()
    );
    // As soon as the worker's receipt is final (its verdicts may still be pending), take a
    // snapshot and kill the whole devnet.
    let j1_before = net.poll("the first job's receipt on chain", JOB_TIMEOUT, || {
        net.job(chain, &job1).filter(|j| status_of(j) != "open")
    });
    let o_before = net.job(chain, &orphan).unwrap();
    let (balance1, nonce1, h_account1) = net.account(chain, &client);
    let heights_before: Vec<u64> = chains.iter().map(|c| net.height(c)).collect();
    let proven1 = net.proven_account(chain, &client, &validators);
    let heights_of_blocks = [
        proven1.height,
        j1_before["opened_at"].as_u64().unwrap(),
        j1_before["receipt"]["posted_at"].as_u64().unwrap(),
        o_before["opened_at"].as_u64().unwrap(),
    ];
    // A block without `observed_ms`: that is when the serving node applied it (its own
    // clock, re-stamped when a restart replays the blocks), not part of the block.
    let block = |net: &Devnet, url: &str, h: &u64| {
        let mut b = net.get(&format!("{url}/v1/block/{h}"));
        b.as_object_mut().map(|o| o.remove("observed_ms"));
        b
    };
    let blocks_before: Vec<Value> = heights_of_blocks
        .iter()
        .map(|h| block(&net, chain, h))
        .collect();
    net.kill();
    eprintln!(
        "killed at heights {heights_before:?}: first job {} with {} verdict(s), orphan {}",
        status_of(&j1_before),
        j1_before["verdicts"].as_array().unwrap().len(),
        status_of(&o_before)
    );
    assert_eq!(
        status_of(&o_before),
        "open",
        "the orphan escrow settled before the kill (deadline {}): this machine is too slow \
         for the test's timing",
        o_before["deadline"]
    );
    assert_eq!(o_before["escrow"], ORPHAN_ESCROW, "{o_before}");
    assert_eq!(o_before["client"], client.as_str(), "{o_before}");
    assert_eq!(j1_before["client"], client.as_str(), "{j1_before}");
    assert_eq!(
        blocks_before[0]["header"]["state_root"],
        proven1.state_root.to_string(),
        "the certified header differs from the block the node serves"
    );

    // 5. Restart on the same directory and ports.
    let t_restart = Instant::now();
    net.start("restart after SIGKILL");
    let info2 = net.wait_ready();
    let restart_time = t_restart.elapsed();
    eprintln!("restarted in {restart_time:.1?}");
    for k in ["gateway", "chain", "api_key", "model", "model_id", "client"] {
        assert_eq!(info2[k], info[k], "devnet.json's {k} changed on resume");
    }

    // 6. Nothing finalized was lost.
    for (c, h) in chains.iter().zip(&heights_before) {
        let now = net.height(c);
        assert!(now >= *h, "{c}: height {now} after the restart, {h} before");
    }
    // The same blocks, from another validator.
    for (h, before) in heights_of_blocks.iter().zip(&blocks_before) {
        let after = block(&net, &chains[1], h);
        assert_eq!(&after, before, "block {h} changed across the restart");
    }
    let proven2 = net.proven_account(&chains[3], &client, &validators);
    assert!(proven2.height >= proven1.height);
    // The records of both jobs are intact; the client sent nothing meanwhile.
    let j1_after = net.job(chains[2].as_str(), &job1).unwrap();
    for k in [
        "client",
        "model",
        "escrow",
        "max_tokens",
        "worker",
        "opened_at",
        "receipt",
    ] {
        assert_eq!(j1_after[k], j1_before[k], "the first job's {k} changed");
    }
    for v in j1_before["verdicts"].as_array().unwrap() {
        assert!(
            j1_after["verdicts"].as_array().unwrap().contains(v),
            "verdict {v} lost: {j1_after}"
        );
    }
    let o_after = net.job(chain, &orphan).unwrap();
    for k in ["client", "escrow", "opened_at", "deadline"] {
        assert_eq!(o_after[k], o_before[k], "the orphan job's {k} changed");
    }
    assert_eq!(
        net.account(chain, &client).1,
        nonce1,
        "the client's nonce moved"
    );

    // The first job is accepted by a quorum of verdicts (the verifiers resume after the
    // restart), and the gateway still serves its receipt by request id.
    let gateway = info["gateway"].as_str().unwrap();
    let view = net.poll("the first job's verdict", JOB_TIMEOUT, || {
        let v = net.get(&format!("{gateway}/v1/receipts/{request}"));
        (v["verification"] != "pending").then_some(v)
    });
    eprintln!(
        "first job {} {:.1?} after the restart",
        view["verification"],
        t_restart.elapsed()
    );
    assert_eq!(
        view["verification"],
        "accepted",
        "the honest first job was not accepted after the restart (receipt {} at the kill). \
         A verifier that cannot fetch a receipt votes reject (Verifier::check), and \
         deai_node::devnet::start spawns the verifiers before the workers serve receipts \
         again: {view}",
        status_of(&j1_before)
    );
    assert_eq!(view["job"], job1.as_str(), "{view}");
    assert!(view["receipt"].is_object(), "receipt not served: {view}");
    assert_eq!(view["ledger"]["receipt_digest_matches"], true, "{view}");
    let j1 = net.job(chain, &job1).unwrap();
    assert_eq!(status_of(&j1), "accepted", "{j1}");
    let verdicts = j1["verdicts"].as_array().unwrap();
    assert!(
        verdicts.len() >= 3 && verdicts.iter().all(|v| v["yes"] == true),
        "accepted without a quorum of accepting verdicts: {j1}"
    );
    // The worker still serves the receipt its pointer names.
    let pointer = j1["receipt"]["pointer"].as_str().unwrap();
    assert!(net.get(pointer).is_object());

    // The orphan escrow expires and comes back in full.
    let orphan_job = net.poll("the orphan escrow's expiry", EXPIRY_TIMEOUT, || {
        net.job(chain, &orphan).filter(|j| status_of(j) != "open")
    });
    eprintln!(
        "orphan escrow {} {:.1?} after the restart",
        status_of(&orphan_job),
        t_restart.elapsed()
    );
    assert_eq!(status_of(&orphan_job), "expired", "{orphan_job}");
    let s = &orphan_job["settlement"];
    assert_eq!(s["client_refund"], ORPHAN_ESCROW, "{orphan_job}");
    for k in [
        "worker_paid",
        "validator_fee",
        "treasury_cut",
        "slashed",
        "burned",
    ] {
        assert_eq!(s[k], 0, "{orphan_job}");
    }

    // Across the restart the client's balance moved only by the refunds of the jobs that
    // settled after the snapshot.
    let client_jobs = |net: &Devnet| -> Vec<Value> {
        net.get(&format!("{chain}/v1/jobs?account={client}&limit=1000"))["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].clone())
            .filter(|j| j["client"] == client.as_str())
            .collect()
    };
    let refunds_after_snapshot: u64 = client_jobs(&net)
        .iter()
        .filter(|j| j["settlement"]["height"].as_u64().unwrap_or(0) > h_account1)
        .map(|j| j["settlement"]["client_refund"].as_u64().unwrap())
        .sum();
    let (balance_t, nonce_t, _) = net.account(chain, &client);
    assert_eq!(nonce_t, nonce1);
    assert_eq!(
        balance_t,
        balance1 + refunds_after_snapshot,
        "balance {balance1} at height {h_account1} before the kill"
    );

    // 7. A request after the restart works, and the same seed gives the same answer.
    let (request2, body2) = net.chat(&info2);
    assert_eq!(
        body2["choices"][0]["message"]["content"].as_str(),
        Some(answer.as_str()),
        "{body2}"
    );
    let job2 = body2["deai"]["job"].as_str().unwrap().to_string();
    assert_ne!(job2, job1);
    let view2 = net.poll("the second job's verdict", JOB_TIMEOUT, || {
        let v = net.get(&format!("{gateway}/v1/receipts/{request2}"));
        (v["verification"] != "pending").then_some(v)
    });
    assert_eq!(view2["verification"], "accepted", "{view2}");

    // In total: the initial balance less a fee per transaction and each job's settled cost.
    let jobs = client_jobs(&net);
    let (balance_end, nonce_end, _) = net.account(chain, &client);
    let txs = nonce_end - nonce0;
    assert_eq!(txs, 3, "three OpenJob transactions expected: {jobs:?}");
    assert_eq!(jobs.len() as u64, txs, "{jobs:?}");
    let mut costs = 0;
    for j in &jobs {
        let s = &j["settlement"];
        assert!(s.is_object(), "unsettled: {j}");
        costs += j["escrow"].as_u64().unwrap() - s["client_refund"].as_u64().unwrap();
    }
    assert_eq!(
        balance_end,
        balance0 - min_fee * txs - costs,
        "initial {balance0}, {txs} transactions, settled costs {costs}"
    );
    eprintln!(
        "devnet restart test passed in {:.1?} (final balance {balance_end}, costs {costs})",
        t_all.elapsed()
    );
}
