//! `deai train`, `deai model export` and `deai bench train` as processes, on a tiny model and
//! synthetic data (no network): DiLoCo over loopback HTTP with a cheater, the exported model
//! served and its receipt verified, the same checkpoint at 1 and 2 threads, and bad flags.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn deai(home: &Path, args: &[&str], threads: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deai"));
    c.args(args)
        .env("DEAI_HOME", home)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9");
    if let Some(t) = threads {
        c.env("RAYON_NUM_THREADS", t);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

const TINY: [&str; 10] = [
    "--corpus",
    "synthetic",
    "--preset",
    "tiny",
    "--workers",
    "2",
    "--inner-steps",
    "3",
    "--batch",
    "4",
];

#[test]
fn diloco_over_http_rejects_the_cheater_and_the_model_serves_and_verifies() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let mut args = vec!["train"];
    args.extend(TINY);
    args.extend([
        "--rounds",
        "2",
        "--cheater",
        "wrong-shard",
        "--json",
        "--out",
    ]);
    let out_s = out.to_str().unwrap();
    args.push(out_s);
    let stdout = ok(&deai(home.path(), &args, None));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "two round reports and a summary: {stdout}");
    for r in &lines[..2] {
        assert_eq!(r["accepted"].as_array().unwrap().len(), 2, "{r}");
        let rej = r["rejected"].as_array().unwrap();
        assert_eq!(rej.len(), 1, "{r}");
        assert_eq!(rej[0][1]["reason"], "step-mismatch", "{r}");
        assert!(rej[0][1]["first_bad_step"].as_u64().unwrap() >= 1);
    }
    let summary = &lines[2];
    let ckpt = summary["checkpoint"].as_str().unwrap();
    assert_eq!(summary["checkpoint_hash"], lines[1]["next_checkpoint"]);
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));

    // Export, serve with a receipt, verify offline.
    let gguf = out.join("model.gguf");
    ok(&deai(
        home.path(),
        &[
            "model",
            "export",
            "--checkpoint",
            ckpt,
            "--out",
            gguf.to_str().unwrap(),
        ],
        None,
    ));
    let receipt = out.join("r.json");
    let gen = ok(&deai(
        home.path(),
        &[
            "run",
            "-m",
            gguf.to_str().unwrap(),
            "--raw",
            "-n",
            "6",
            "--receipt",
            receipt.to_str().unwrap(),
            "the king",
        ],
        None,
    ));
    assert!(!gen.is_empty());
    let v = deai(
        home.path(),
        &[
            "verify",
            receipt.to_str().unwrap(),
            "-m",
            gguf.to_str().unwrap(),
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&v.stdout).contains("ACCEPT"));
    assert_eq!(v.status.code(), Some(0));

    // A corrupt checkpoint is refused with a reason.
    let bad = out.join("bad.safetensors");
    std::fs::write(&bad, b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage").unwrap();
    let e = deai(
        home.path(),
        &["model", "export", "--checkpoint", bad.to_str().unwrap()],
        None,
    );
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("error:"));
}

/// Every round was settled by the verdicts of the three validators other than the
/// coordinator, after replaying it: 3 of 4 equal stakes is the quorum (the coordinator's
/// proposal counts as accepting), so each round needed two, and none was rejected. Returns
/// the judges' summaries.
fn settled_by_the_other_validators(chain: &Value, rounds: u64) -> &Vec<Value> {
    let judges = chain["validators"].as_array().unwrap();
    assert_eq!(judges.len(), 3, "{chain}");
    let accepted: u64 = judges
        .iter()
        .map(|v| v["accepted_rounds"].as_u64().unwrap())
        .sum();
    assert!(accepted >= 2 * rounds, "{chain}");
    assert!(judges.iter().all(|v| v["rejected_rounds"] == 0), "{chain}");
    judges
}

#[test]
fn diloco_on_chain_pays_the_honest_slashes_the_cheater_and_records_every_checkpoint() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let mut args = vec!["train", "--onchain"];
    args.extend(TINY);
    args.extend([
        "--rounds",
        "3",
        "--cheater",
        "scaled-delta",
        "--json",
        "--out",
    ]);
    args.push(out.to_str().unwrap());
    let stdout = ok(&deai(home.path(), &args, None));
    let raw: Vec<&str> = stdout.lines().collect();
    let lines: Vec<Value> = raw
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "three round reports and a summary: {stdout}"
    );
    // Round 1 catches the cheater; slashed below the worker stake, it is refused after.
    let reasons: Vec<&str> = lines[..3]
        .iter()
        .map(|r| r["rejected"][0][1]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["delta-mismatch", "not-admitted", "not-admitted"]);
    for r in &lines[..3] {
        assert_eq!(r["paid_keys"].as_array().unwrap().len(), 2, "{r}");
    }
    assert_eq!(lines[0]["slashed_keys"].as_array().unwrap().len(), 1);
    assert!(lines[1]["slashed_keys"].as_array().unwrap().is_empty());

    let summary = &lines[3];
    let chain = &summary["onchain"];
    let t = &chain["training"];
    assert_eq!(t["status"], "finished", "{chain}");
    assert_eq!(t["rounds_done"], 3);
    assert_eq!(t["checkpoint"], summary["checkpoint_hash"], "{chain}");
    assert_eq!(t["escrow"], 0);
    assert!(t["pending"].is_null(), "{chain}");
    settled_by_the_other_validators(chain, 3);
    // The chain commits to the last round's report exactly as the coordinator serves it.
    let digest = deai_types::Hash256::digest_parts("deai-train-report-v1", &[raw[2].as_bytes()]);
    assert_eq!(t["last_report"], digest.to_hex(), "{chain}");
    assert_eq!(
        (t["accepted"].as_u64(), t["rejected"].as_u64()),
        (Some(6), Some(1))
    );
    // Each round's reward: 5 % to the treasury, 10 % to the validators who accepted it (for
    // judging it), the rest to the contributors.
    let reward = t["reward_per_round"].as_u64().unwrap();
    let pool = reward - reward / 20 - reward / 10;
    assert_eq!(t["paid"].as_u64(), Some(3 * pool));
    assert_eq!(t["fees"].as_u64(), Some(3 * (reward - pool)));
    let slashed = t["slashed"].as_u64().unwrap();
    assert!(slashed > 0);
    let workers = chain["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3);
    let (honest, cheat): (Vec<&Value>, Vec<&Value>) =
        workers.iter().partition(|w| w["role"] == "honest");
    let min_stake = honest[0]["stake"].as_u64().unwrap();
    for w in &honest {
        assert_eq!(w["stake"].as_u64(), Some(min_stake));
        // Genesis funds minus the stake and one fee, plus half of each round's pool.
        assert!(w["balance"].as_u64().unwrap() > 1_000_000 - min_stake - 100 + 3 * pool / 2 - 1);
    }
    assert_eq!(cheat[0]["stake"].as_u64(), Some(min_stake - slashed));
    assert!(cheat[0]["balance"].as_u64().unwrap() < 1_000_000 - min_stake);

    // The same job cannot be started again on that chain.
    let again = deai(home.path(), &args, None);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("cannot be resumed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn the_single_worker_baseline_gives_the_same_checkpoint_at_one_and_two_threads() {
    let home = tempfile::tempdir().unwrap();
    let hash = |threads: &str| {
        let out = home.path().join(format!("t{threads}"));
        let mut args = vec!["train", "--local"];
        args.extend(TINY);
        args.extend(["--rounds", "2", "--json", "--out", out.to_str().unwrap()]);
        let stdout = ok(&deai(home.path(), &args, Some(threads)));
        let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        last["checkpoint_hash"].as_str().unwrap().to_string()
    };
    let one = hash("1");
    assert_eq!(one.len(), 64);
    assert_eq!(one, hash("2"));
}

#[test]
fn bench_train_reports_every_metric_and_catches_every_cheater() {
    let home = tempfile::tempdir().unwrap();
    let o = deai(
        home.path(),
        &[
            "bench",
            "train",
            "--corpus",
            "synthetic",
            "--preset",
            "tiny",
            "--workers",
            "2",
            "--inner-steps",
            "4",
            "--rounds",
            "2",
            "--batch",
            "4",
            "--trials",
            "1",
            "--trial-inner-steps",
            "2",
            "--skip-one-trials",
            "6",
            "--json",
        ],
        None,
    );
    let j: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    for k in [
        "loss_diloco",
        "loss_baseline",
        "comm_ratio",
        "verify_cost_ratio",
        "cheaters_caught",
        "cheaters_total",
        "false_accusations",
        "throughput_ratio",
        "audit_cost_ratio",
    ] {
        assert!(j.get(k).is_some_and(|v| !v.is_null()), "missing {k}: {j}");
    }
    assert_eq!(j["cheaters_total"], 7);
    assert_eq!(j["cheaters_caught"], 7, "{j}");
    assert_eq!(j["false_accusations"], 0, "{j}");
    assert!(j["comm_ratio"].as_f64().unwrap() > 1.0);
    // Skipping one of 2 steps with one re-executed: caught half the time on average. Each
    // trial is decided by its challenge draw (a train test checks that), so no count is
    // asserted here; the bench fails if an honest worker is not accepted in any trial.
    assert_eq!(j["skip_one_trials"], 6);
    assert_eq!(j["skip_one_expected_rate"], 0.5);
    // The bench's own outer default (plain averaging), the same tokens for the baseline.
    assert_eq!(j["outer_lr"], 1.0, "{j}");
    assert_eq!(j["outer_momentum"], 0.0, "{j}");
    assert_eq!(j["round_warmup"], 6, "{j}");
    assert_eq!(
        (j["batch"].as_u64(), j["baseline_batch"].as_u64()),
        (Some(4), Some(8))
    );
}

#[test]
fn bad_flags_get_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["train", "--preset", "huge", "--corpus", "synthetic"],
            "unknown preset",
        ),
        (
            &["train", "--corpus", "synthetic", "-m", "default"],
            "need --devnet",
        ),
        (
            &[
                "train",
                "--corpus",
                "synthetic",
                "--preset",
                "tiny",
                "--cheater",
                "lazy",
            ],
            "unknown cheater",
        ),
        (
            &["train", "--corpus", "/nonexistent/dir", "--preset", "tiny"],
            "/nonexistent/dir",
        ),
        (
            &[
                "train",
                "--corpus",
                "synthetic",
                "--preset",
                "tiny",
                "--inner-steps",
                "0",
            ],
            "inner_steps",
        ),
    ];
    for (args, want) in cases {
        let o = deai(home.path(), args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Usage errors (exit 2): where the job runs is one choice.
    let o = deai(home.path(), &["train", "--devnet", "--onchain"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}

#[test]
fn deai_train_audit_rechecks_the_rounds_a_running_coordinator_closed() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let mut args: Vec<&str> = vec!["train"];
    args.extend(TINY);
    let out_s = out.to_str().unwrap();
    args.extend([
        "--rounds",
        "2",
        "--cheater",
        "scaled-delta",
        "--linger",
        "120",
        "--out",
        out_s,
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(&args)
        .env("DEAI_HOME", home.path())
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut url, mut commitment) = (String::new(), String::new());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("coordinator on ") {
            url = u.to_string();
        }
        if let Some(c) = line.strip_prefix("round 1 challenge commitment ") {
            commitment = c.split_whitespace().next().unwrap().to_string();
        }
        if line.starts_with("training done") {
            break;
        }
    }
    assert!(
        url.starts_with("http://") && commitment.len() == 64,
        "{url} {commitment}"
    );
    let audit = |extra: &[&str]| {
        let mut a = vec!["train", "audit", "--coordinator", &url, "--json"];
        a.extend(extra);
        deai(home.path(), &a, None)
    };
    // Both rounds check out (round 1 against the commitment printed before it began): the
    // honest workers paid, the cheater slashed, the same checkpoints.
    let o = audit(&["--round", "1", "--round", "2", "--commitment", &commitment]);
    let lines: Vec<Value> = ok(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["paid_keys"].as_array().unwrap().len(), 2, "{l}");
        assert_eq!(l["slashed_keys"].as_array().unwrap().len(), 1, "{l}");
    }
    // Another commitment for round 1 is a failed audit (exit 1), not an error.
    let o = audit(&["--round", "1", "--commitment", &"0".repeat(64)]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("commitment"));
    // Without a commitment, round 1 cannot be audited; round 0 is not a round; nothing
    // listens at a wrong URL: errors (exit 2).
    for bad in [vec!["--round", "1"], vec!["--round", "0"]] {
        assert_eq!(audit(&bad).status.code(), Some(2), "{bad:?}");
    }
    let o = deai(
        home.path(),
        &["train", "audit", "--coordinator", "http://127.0.0.1:9"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    let _ = child.kill();
    let _ = child.wait();
}

/// `deai train --devnet`: the training job runs on the inference devnet (the real model
/// served by its gateway at the same time). The test chats through the gateway while the job
/// opens, sees the validators settle both the inference receipt and every training round,
/// and ends the linger with Ctrl-C. Needs the real model (`DEAI_MODEL_PATH`).
#[test]
fn diloco_on_the_inference_devnet_shares_its_chain_and_validators() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let Some(model) = std::env::var_os("DEAI_MODEL_PATH").filter(|p| !p.is_empty()) else {
        eprintln!("SKIPPED: set DEAI_MODEL_PATH to run training on the inference devnet");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let mut args = vec!["train", "--devnet", "-m", model.to_str().unwrap()];
    args.extend(TINY);
    args.extend(["--rounds", "3", "--linger", "300", "--json", "--out"]);
    args.push(out.to_str().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(&args)
        .env("DEAI_HOME", home.path())
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let mut seen = vec![];
    let mut wait_for = |needle: &str| -> String {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(300) {
            match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(l) => {
                    seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        panic!("no {needle:?} on stderr:\n{}", seen.join("\n"));
    };
    // "gateway: http://127.0.0.1:P/v1 (model "M", api key K) answers ..."
    let line = wait_for("answers chat requests");
    let gateway = line.split_whitespace().nth(1).unwrap().to_string();
    let api_key = line
        .split("api key ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .unwrap();
    let r = http
        .post(format!("{gateway}/chat/completions"))
        .bearer_auth(api_key)
        .json(&serde_json::json!({
            "model": "SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    let receipt = r.headers()["x-deai-receipt"].to_str().unwrap().to_string();
    let base = gateway.trim_end_matches("/v1");
    let t0 = std::time::Instant::now();
    let verdict = loop {
        let v: Value = http
            .get(format!("{base}/v1/receipts/{receipt}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["verification"] != "pending" || t0.elapsed().as_secs() > 240 {
            break v["verification"].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(verdict, "accepted");
    wait_for("training done");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    assert!(
        status.success(),
        "{status:?}\n{stdout}\n{}",
        seen.join("\n")
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let chain = &summary["onchain"];
    let t = &chain["training"];
    assert_eq!(t["status"], "finished", "{chain}");
    assert_eq!(t["rounds_done"], 3);
    assert_eq!(t["checkpoint"], summary["checkpoint_hash"], "{chain}");
    assert_eq!(
        (t["escrow"].as_u64(), t["accepted"].as_u64()),
        (Some(0), Some(6))
    );
    assert_eq!(
        t["fees"].as_u64(),
        Some(3 * 150_000),
        "treasury and judging shares"
    );
    let judges = settled_by_the_other_validators(chain, 3);
    // ... and were paid for it (their earnings also count inference verdicts).
    for v in judges {
        let earned = v["earned"].as_u64().unwrap();
        assert!(
            earned >= v["accepted_rounds"].as_u64().unwrap() * 33_333,
            "{v}"
        );
    }
    // The workers were funded on the running chain (no genesis accounts), staked and paid.
    for w in chain["workers"].as_array().unwrap() {
        assert!(w["stake"].as_u64().unwrap() > 0, "{w}");
        assert!(w["balance"].as_u64().unwrap() >= 3 * 850_000 / 2, "{w}");
    }
}
