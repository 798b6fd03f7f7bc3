//! `deai run --receipt`, `deai verify`, `deai inspect` and `deai keys` end to end on a tiny
//! generated model, with `DEAI_HOME` in a temporary directory.

use deai_engine::testing::{tiny_model_gguf, TinySpec};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn deai(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(args)
        .env("DEAI_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_receipt_verify_inspect() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let model = h.join("tiny.gguf");
    std::fs::write(&model, tiny_model_gguf(&TinySpec::default())).unwrap();
    let m = model.to_str().unwrap();
    let receipt = h.join("out.json");
    let r = receipt.to_str().unwrap();

    // The first --receipt creates the worker key.
    let o = deai(
        h,
        &[
            "run",
            "hello",
            "--raw",
            "-m",
            m,
            "-n",
            "40",
            "--temperature",
            "0.8",
            "--seed",
            "3",
            "--receipt",
            r,
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(h.join("keys/worker.key").exists());
    let o = deai(h, &["keys", "new"]);
    assert!(o.status.success());
    let public = text(&o.stdout).trim().to_string();
    assert_eq!(public.len(), 64);

    // Honest: accept, exit 0, every check ok.
    let o = deai(h, &["verify", r, "--json", "-m", m]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "accept");
    let checks = v["checks"].as_array().unwrap();
    assert!(
        checks.len() >= 10
            && checks
                .iter()
                .all(|c| c["ok"] == true && c["name"].is_string() && c["detail"].is_string())
    );
    let o = deai(h, &["verify", r, "-m", m]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("ACCEPT"));

    let o = deai(h, &["inspect", r]);
    assert!(o.status.success());
    let s = text(&o.stdout);
    assert!(
        s.contains("signature      valid") && s.contains(&public),
        "{s}"
    );

    // Tampered output token: reject (exit 1), and the JSON shows which checks fail.
    let mut j: Value = serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    let t = j["output_tokens"][4].as_u64().unwrap();
    j["output_tokens"][4] = Value::from(if t == 100 { 101 } else { 100 });
    let bad = h.join("bad.json");
    std::fs::write(&bad, j.to_string()).unwrap();
    let o = deai(h, &["verify", bad.to_str().unwrap(), "--json", "-m", m]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "reject");
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["signature", "output_commitment", "sampling"] {
        assert!(failed.contains(&name), "{failed:?}");
    }

    // Not a receipt: exit 2.
    std::fs::write(&bad, "{\"nope\": 1}").unwrap();
    let o = deai(h, &["verify", bad.to_str().unwrap(), "-m", m]);
    assert_eq!(o.status.code(), Some(2));
    let o = deai(
        h,
        &["verify", h.join("missing.json").to_str().unwrap(), "-m", m],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_proof_json_on_a_tiny_model() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let model = h.join("tiny.gguf");
    std::fs::write(&model, tiny_model_gguf(&TinySpec::default())).unwrap();
    let o = deai(
        h,
        &[
            "bench",
            "proof",
            "-m",
            model.to_str().unwrap(),
            "--cases",
            "1",
            "--tokens",
            "12",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, classes) = lines.split_last().unwrap();
    assert!(classes.len() >= 10);
    for c in classes {
        assert_eq!(c["cases"], c["detected"], "{c}");
    }
    assert_eq!(summary["false_rejects"], 0);
    assert_eq!(summary["honest_runs"], 4);
    assert!(summary["proof_bytes_per_token"].as_f64().unwrap() > 0.0);
}
