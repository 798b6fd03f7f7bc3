//! `deai node` joining a chain run by `deai chain run`, each a separate process: a new key
//! funded by the faucet becomes a staked, registered worker with a gateway in one node,
//! the four genesis validators run the validator role in their own nodes, and a chat request
//! through the gateway is answered and accepted on chain. Then two more worker processes
//! join, and the one serving a streaming request is killed (SIGKILL) mid-stream: the client
//! still gets one complete answer, from the other, and the dead worker's escrow stays held
//! on chain until its job times out. Bad configurations get clear errors.
//!
//! Needs the real model (`DEAI_MODEL_PATH`, set by `scripts/test.sh`; `DEAI_HOME` holds it).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const DEAD_PROXY: &str = "http://127.0.0.1:9";

fn deai(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(args)
        .env("HTTP_PROXY", DEAD_PROXY)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Proc(Child, std::path::PathBuf);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(log: &Path, args: &[&str]) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_deai"))
            .args(args)
            .env("HTTP_PROXY", DEAD_PROXY)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap(),
        log.to_path_buf(),
    )
}

fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- {}\n{}",
                p.1.display(),
                std::fs::read_to_string(&p.1).unwrap_or_default()
            )
        })
        .collect()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Waits until the gateway routes to `n` qualified workers.
fn wait_workers(
    c: &reqwest::blocking::Client,
    gw: &str,
    n: u64,
    secs: u64,
    logs: &dyn Fn() -> String,
) {
    let t0 = Instant::now();
    loop {
        let ok = c
            .get(format!("{gw}/v1/models"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|v| v["data"][0]["deai"]["workers"] == n);
        if ok {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "{}", logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn nodes_join_a_chain_and_serve_a_verified_answer() {
    if std::env::var_os("DEAI_MODEL_PATH").is_none_or(|p| p.is_empty()) {
        eprintln!("SKIPPED: set DEAI_MODEL_PATH (and DEAI_HOME) to run the node roles test");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let chain_dir = t.join("chain");
    let c = chain_dir.to_str().unwrap();
    let base = common::free_ports(14);
    let (p2p, http_port) = (base, base + 4);
    let o = deai(&[
        "chain",
        "init",
        "--dir",
        c,
        "--p2p-port",
        &p2p.to_string(),
        "--http-port",
        &http_port.to_string(),
        "--allow-model",
        "default",
        "--sample-rate-bps",
        "10000",
        // Blocks take milliseconds on loopback: give the validators time to vote under load.
        "--challenge-window",
        "1500",
        "--verdict-window",
        "1500",
        "--job-timeout",
        "1500",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let chain = spawn(&t.join("chain.log"), &["chain", "run", "--dir", c]);
    let url = format!("http://127.0.0.1:{http_port}");
    let t0 = Instant::now();
    while deai(&["chain", "status", "--url", &url]).status.code() != Some(0)
        || !text(&deai(&["chain", "status", "--url", &url])).contains("\"height\"")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{}",
            logs(&[&chain])
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A fresh key: refused as a worker until funded, refused as a validator.
    let wkey = t.join("worker.key");
    let o = deai(&["keys", "new", "--out", wkey.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let addr = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(addr.len(), 64, "{addr}");
    let o = deai(&["keys", "new", "--out", wkey.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not overwriting"),
        "{}",
        text(&o)
    );
    let wk = wkey.to_str().unwrap();
    let o = deai(&["node", "--role", "worker", "--chain", &url, "--key", wk]);
    assert!(
        !o.status.success() && text(&o).contains("fund it"),
        "{}",
        text(&o)
    );
    let o = deai(&["node", "--role", "validator", "--chain", &url, "--key", wk]);
    assert!(
        !o.status.success() && text(&o).contains("not an active validator"),
        "{}",
        text(&o)
    );
    let o = deai(&["node", "--role", "wizard", "--key", wk]);
    assert!(
        !o.status.success() && text(&o).contains("unknown role"),
        "{}",
        text(&o)
    );
    let bad_cfg = t.join("bad.toml");
    std::fs::write(
        &bad_cfg,
        "chain = \"x\"\nroles = [\"worker\"]\ncolour = 1\n",
    )
    .unwrap();
    let o = deai(&["node", "--config", bad_cfg.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("colour"),
        "{}",
        text(&o)
    );
    let faucet = chain_dir.join("keys/faucet.key");
    let o = deai(&[
        "tx",
        "--url",
        &url,
        "--key",
        faucet.to_str().unwrap(),
        "transfer",
        "--to",
        &addr,
        "--amount",
        "100000",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // The worker + gateway node, from a config file.
    let (wport, gport) = (base + 8, base + 9);
    let cfg = t.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "chain = \"{url}\"\nkey = \"{wk}\"\nroles = [\"worker\", \"gateway\"]\ndata = \"{}\"\n\
             [worker]\nlisten = \"127.0.0.1:{wport}\"\nprice_per_1k = 500\n\
             [gateway]\nlisten = \"127.0.0.1:{gport}\"\n\
             [[gateway.api_keys]]\nkey = \"sk-test-node-roles\"\naccount_key = \"{}\"\n",
            t.join("data").display(),
            faucet.display()
        ),
    )
    .unwrap();
    let node = spawn(
        &t.join("node.log"),
        &["node", "--config", cfg.to_str().unwrap()],
    );
    // Validator 0 also serves the explorer (the validator role has no API of its own).
    let explorer = format!("127.0.0.1:{}", base + 10);
    let validators: Vec<Proc> = (0..4)
        .map(|i| {
            let k = chain_dir.join(format!("keys/validator-{i}.key"));
            let mut args = vec![
                "node",
                "--role",
                "validator",
                "--chain",
                &url,
                "--key",
                k.to_str().unwrap(),
            ];
            if i == 0 {
                args.extend(["--validator-listen", &explorer]);
            }
            spawn(&t.join(format!("validator-{i}.log")), &args)
        })
        .collect();
    let all = || {
        let mut v = vec![&chain, &node];
        v.extend(validators.iter());
        logs(&v)
    };
    let gw = format!("http://127.0.0.1:{gport}");
    let c = http();
    wait_workers(&c, &gw, 1, 120, &all);
    // The validator's explorer: its config, the page, and the chain's routes forwarded.
    let ui: serde_json::Value = c
        .get(format!("http://{explorer}/ui/config.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ui["service"], "validator", "{ui}");
    assert_eq!(ui["chain"], true);
    let page = c.get(format!("http://{explorer}/")).send().unwrap();
    assert!(page.text().unwrap().contains("/ui/app.js"));
    let st: serde_json::Value = c
        .get(format!("http://{explorer}/v1/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(st["height"].as_u64().unwrap() > 0, "{st}");
    let write = c.post(format!("http://{explorer}/v1/tx")).send().unwrap();
    assert_eq!(write.status(), 404, "writes are not forwarded");
    let r: serde_json::Value = c
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth("sk-test-node-roles")
        .json(&serde_json::json!({
            "model": "SmolLM2-135M-Instruct", "max_tokens": 12, "seed": 1,
            "messages": [{ "role": "user", "content": "What is 2+2?" }],
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["deai"]["worker"], addr, "{r}\n{}", all());
    let id = r["deai"]["receipt_id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let view = loop {
        let v: serde_json::Value = c
            .get(format!("{gw}/v1/receipts/{id}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["verification"] != "pending" {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{v}\n{}", all());
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(view["verification"], "accepted", "{view}\n{}", all());
    let s = &view["ledger"]["settlement"];
    assert!(s["worker_paid"].as_u64().unwrap() > 0, "{view}");
    // Three verdicts, all from the validator nodes.
    assert!(
        view["ledger"]["verdicts"].as_array().unwrap().len() >= 3,
        "{view}"
    );

    // `deai status` shows the money: the worker earned, at a positive revenue per
    // compute-hour, and the job is counted as accepted.
    let o = deai(&["status", "--url", &url, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(st["jobs"]["accepted"].as_u64().unwrap() >= 1, "{st}");
    let w = &st["workers"][0];
    assert_eq!(w["address"], addr, "{st}");
    assert!(w["earned"].as_u64().unwrap() > 0, "{st}");
    assert!(w["compute_ms"].as_u64().unwrap() > 0, "{st}");
    assert!(
        w["revenue_per_compute_hour"].as_f64().unwrap() > 0.0,
        "{st}"
    );
    assert_eq!(st["validators"].as_array().unwrap().len(), 4, "{st}");
    // Every contributor kind is listed (none registered on this chain).
    for kind in [
        "model royalties",
        "datasets",
        "apps",
        "gateways",
        "delegations (value)",
    ] {
        assert_eq!(st["contributors"][kind]["count"], 0, "{st}");
    }
    let o = deai(&["status", "--url", &url]);
    assert!(
        o.status.success() && text(&o).contains("revenue/compute-hour"),
        "{}",
        text(&o)
    );
    let o = deai(&["status", "--url", "http://127.0.0.1:1"]);
    assert!(
        !o.status.success() && text(&o).contains("cannot reach"),
        "{}",
        text(&o)
    );

    // Two worker-only processes, cheaper than the first, so that routing prefers them.
    let mut extra: Vec<(String, Option<Proc>)> = vec![];
    for i in 0..2u16 {
        let k = t.join(format!("worker-{i}.key"));
        let o = deai(&["keys", "new", "--out", k.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let a = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let o = deai(&[
            "tx",
            "--url",
            &url,
            "--key",
            faucet.to_str().unwrap(),
            "transfer",
            "--to",
            &a,
            "--amount",
            "100000",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let cfg = t.join(format!("worker-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "chain = \"{url}\"\nkey = \"{}\"\nroles = [\"worker\"]\ndata = \"{}\"\n\
                 [worker]\nlisten = \"127.0.0.1:{}\"\nprice_per_1k = 100\n",
                k.display(),
                t.join(format!("data-{i}")).display(),
                base + 12 + i
            ),
        )
        .unwrap();
        let p = spawn(
            &t.join(format!("worker-{i}.log")),
            &["node", "--config", cfg.to_str().unwrap()],
        );
        extra.push((a, Some(p)));
    }
    let all2 = |extra: &[(String, Option<Proc>)]| {
        let mut v = vec![&chain, &node];
        v.extend(validators.iter());
        v.extend(extra.iter().filter_map(|(_, p)| p.as_ref()));
        logs(&v)
    };
    wait_workers(&c, &gw, 3, 240, &|| all2(&extra));
    let req = serde_json::json!({
        "model": "SmolLM2-135M-Instruct", "max_tokens": 200, "seed": 11, "temperature": 0.7,
        "messages": [{ "role": "user", "content": "Write a long story about a lighthouse keeper and a storm at sea." }],
    });
    let reference: serde_json::Value = c
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth("sk-test-node-roles")
        .json(&req)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let reference_job = reference["deai"]["job"].as_str().unwrap().to_string();
    let reference = reference["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{reference}"))
        .to_string();
    let mut stream_req = req.clone();
    stream_req["stream"] = serde_json::json!(true);
    let resp = c
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth("sk-test-node-roles")
        .json(&stream_req)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(resp));
    let (mut text, mut last, mut killed) = (String::new(), serde_json::Value::Null, None);
    let mut done = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert!(
            v.get("error").is_none(),
            "stream error: {v}\n{}",
            all2(&extra)
        );
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        if !v["choices"][0]["finish_reason"].is_null() {
            last = v;
            continue;
        }
        if killed.is_none() && !text.is_empty() {
            // The first tokens arrived: find the worker that holds the open job (its escrow
            // may take a block or two to finalize) and kill it.
            let t0 = Instant::now();
            let job = loop {
                let open: serde_json::Value = c
                    .get(format!("{url}/v1/jobs?status=open"))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                // (The reference answer's job may still wait for its receipt.)
                let found = open["jobs"].as_array().unwrap().iter().find(|j| {
                    let w = j["job"]["worker"].as_str().unwrap_or_default();
                    j["id"] != reference_job.as_str() && extra.iter().any(|(a, _)| a == w)
                });
                if let Some(j) = found {
                    break j.clone();
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    let recent: serde_json::Value = c
                        .get(format!("{url}/v1/jobs?limit=3"))
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    panic!(
                        "no open job on an extra worker ({extra:?}): {open}\nrecent: {recent}\ntext so far: {text:?}",
                        extra = extra.iter().map(|e| &e.0).collect::<Vec<_>>()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let w = job["job"]["worker"].as_str().unwrap().to_string();
            let (_, p) = extra.iter_mut().find(|(a, _)| *a == w).unwrap();
            let mut p = p.take().unwrap();
            p.0.kill().unwrap();
            p.0.wait().unwrap();
            killed = Some((w, job["id"].as_str().unwrap().to_string(), p));
        }
    }
    assert!(done, "the stream ends with [DONE]");
    let (dead, dead_job, _p) = killed.expect("the stream produced tokens");
    let survivor = last["deai"]["worker"].as_str().unwrap().to_string();
    assert_ne!(
        survivor, dead,
        "the answer was finished by another worker: {last}"
    );
    assert_eq!(
        text, reference,
        "the failed-over stream neither lost nor repeated text"
    );
    // The dead worker's job still holds its escrow (the ledger refunds it at the job's
    // timeout, `job_timeout` blocks after it opened; see the ledger's timeout test).
    let j: serde_json::Value = c
        .get(format!("{url}/v1/job/{dead_job}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(j["job"]["status"], "open", "{j}");
    assert!(j["job"]["escrow"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(
        j["job"]["deadline"].as_u64().unwrap(),
        j["job"]["opened_at"].as_u64().unwrap() + 1500,
        "{j}"
    );
}
