//! The gateway of `deai devnet` through the unmodified `openai` Python package: a devnet in a
//! child process (4 validators, 2 workers on the default model, the gateway), then
//! `scripts/openai_client_test.py` against it (models, chat with and without streaming,
//! legacy completions, OpenAI errors, and the receipt accepted by the validators); then, on
//! the same devnet, `deai verify --onchain` on a receipt the gateway served (accepted, with
//! the job proven against the finality certificate), against another chain's validators
//! (rejected) and on a receipt that never went on chain (rejected).
//!
//! Needs `python3` with `openai` installed (`pip install openai`); without it the test prints
//! `skipping: pip install openai` and passes, unless `DEAI_REQUIRE_OPENAI=1` (set by CI), which
//! makes it fail. The model comes from `DEAI_HOME` (set by `scripts/test.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

/// How long the devnet may take to answer `/v1/models` (loads the model, starts the chain).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the Python checks may take (generation on a small CPU plus the verdicts).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether `python3` can import `openai`; prints the reason when it cannot.
fn have_openai() -> bool {
    match Command::new("python3")
        .args(["-c", "import openai; print(openai.__version__)"])
        .output()
    {
        Ok(o) if o.status.success() => {
            eprintln!(
                "python3 has openai {}",
                String::from_utf8_lossy(&o.stdout).trim()
            );
            true
        }
        Ok(o) => {
            eprintln!(
                "`python3 -c 'import openai'` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("cannot run python3: {e}");
            false
        }
    }
}

#[test]
fn openai_python_client_talks_to_the_devnet_gateway() {
    if !have_openai() {
        if std::env::var("DEAI_REQUIRE_OPENAI").as_deref() == Ok("1") {
            panic!(
                "DEAI_REQUIRE_OPENAI=1 but python3 cannot import the `openai` package: \
                 run `python3 -m pip install openai` (.ci/run does)"
            );
        }
        eprintln!("skipping: pip install openai");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("scripts/openai_client_test.py");
    assert!(script.is_file(), "{} is missing", script.display());

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("devnet");
    let log_path = tmp.path().join("devnet.log");
    let t0 = Instant::now();
    // Ready when the gateway answers /v1/models.
    let (_devnet, info) = common::start_devnet(
        env!("CARGO_BIN_EXE_deai"),
        &dir,
        &log_path,
        START_TIMEOUT,
        |http, info| {
            let gateway = info["gateway"].as_str().unwrap_or_default();
            http.get(format!("{gateway}/v1/models"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        },
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = t0.elapsed();
    let gateway = info["gateway"].as_str().expect("devnet.json: gateway");
    let api_key = info["api_key"].as_str().expect("devnet.json: api_key");
    let model = info["model"].as_str().expect("devnet.json: model");
    eprintln!("devnet up in {started:.1?}: gateway {gateway}, model {model}");

    // The checks, with a time limit.
    let t1 = Instant::now();
    let (status, output) = common::run_python(
        &script,
        &[gateway, api_key, model],
        &tmp.path().join("client.log"),
        CLIENT_TIMEOUT,
    );
    println!("{output}");
    eprintln!(
        "openai client checks took {:.1?} (devnet start {started:.1?})",
        t1.elapsed()
    );
    match status {
        Some(true) => {}
        Some(false) => panic!(
            "scripts/openai_client_test.py failed:\n{output}\n\
             devnet log (last lines):\n{}",
            common::log_tail(&log_path, 80)
        ),
        None => panic!(
            "scripts/openai_client_test.py did not finish within {CLIENT_TIMEOUT:?}:\n{output}\n\
             devnet log (last lines):\n{}",
            common::log_tail(&log_path, 80)
        ),
    }

    // `deai verify --onchain`: a receipt served by the gateway, checked offline and against
    // the chain with a state proof signed by the genesis validators.
    let chain = info["chain"][0].as_str().expect("devnet.json: chain");
    let r: serde_json::Value = http
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(api_key)
        .json(&serde_json::json!({
            "model": model, "max_tokens": 12, "seed": 3,
            "messages": [{ "role": "user", "content": "Name a fruit." }],
        }))
        .timeout(Duration::from_secs(300))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = r["deai"]["receipt_id"]
        .as_str()
        .expect("receipt id")
        .to_string();
    let t2 = Instant::now();
    let view: serde_json::Value = loop {
        let v: serde_json::Value = http
            .get(format!("{gateway}/v1/receipts/{id}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["verification"] != "pending" {
            break v;
        }
        assert!(t2.elapsed() < Duration::from_secs(180), "no verdict: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(view["verification"], "accepted", "{view}");
    let receipt_path = tmp.path().join("receipt.json");
    std::fs::write(&receipt_path, view["receipt"].to_string()).unwrap();
    let verify = |receipt: &Path, genesis: &Path| {
        Command::new(env!("CARGO_BIN_EXE_deai"))
            .arg("verify")
            .arg(receipt)
            .args(["--onchain", chain, "--genesis"])
            .arg(genesis)
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let o = verify(&receipt_path, &dir.join("genesis.json"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("onchain_proof") && text(&o).contains("accepted and settled"));
    // Another chain's validators did not sign this chain's blocks.
    let other = tmp.path().join("other-chain");
    let o = Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(["chain", "init", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(&receipt_path, &other.join("genesis.json"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("does not verify"), "{}", text(&o));
    // A receipt made offline was never on chain: the proof shows the job absent.
    let offline = tmp.path().join("offline.json");
    let o = Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(["run", "Name a fruit.", "-n", "4", "--receipt"])
        .arg(&offline)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(&offline, &dir.join("genesis.json"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("absent"), "{}", text(&o));
}
