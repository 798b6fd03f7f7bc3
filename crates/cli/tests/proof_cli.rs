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

#[test]
fn bench_sampler_json_on_a_tiny_model() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let model = h.join("tiny.gguf");
    std::fs::write(&model, tiny_model_gguf(&TinySpec::default())).unwrap();
    let m = model.to_str().unwrap();
    let o = deai(
        h,
        &[
            "bench",
            "sampler",
            "-m",
            m,
            "--gen-tokens",
            "8",
            "--reps",
            "1",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cases = v["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "plain greedy",
            "penalties + logit_bias",
            "json_object",
            "json_schema"
        ]
    );
    for c in cases {
        assert!(c["decode_tps"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["verify_ms"].as_f64().unwrap() > 0.0, "{c}");
        assert!((1..=8).contains(&c["tokens"].as_u64().unwrap()), "{c}");
    }
    assert_eq!(cases[0]["decode_ratio"], 1.0);
    let o = deai(h, &["bench", "sampler", "-m", m, "--reps", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--reps"), "{}", text(&o.stderr));
}

/// `--presence-penalty`, `--frequency-penalty` and `--logit-bias` go into a version-2 receipt
/// that `deai verify` replays; a bias outside the vocabulary is a clear error.
#[test]
fn penalties_and_logit_bias_are_signed_and_verified() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let model = h.join("tiny.gguf");
    std::fs::write(&model, tiny_model_gguf(&TinySpec::default())).unwrap();
    let m = model.to_str().unwrap();
    let receipt = h.join("adjusted.json");
    let r = receipt.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "hello", "--raw", "-m", m, "-n", "30", "--json"];
        args.extend_from_slice(extra);
        deai(h, &args)
    };
    let adjusted = run(&[
        "--presence-penalty",
        "1.5",
        "--frequency-penalty=-0.5",
        "--logit-bias",
        "17=4",
        "--logit-bias",
        "3=-100",
        "--receipt",
        r,
    ]);
    assert!(adjusted.status.success(), "{}", text(&adjusted.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    assert_eq!(v["version"], 2, "{v}");
    assert_eq!(v["sampling"]["presence_penalty"], 1.5);
    assert_eq!(
        v["sampling"]["logit_bias"],
        serde_json::json!([[3, -100.0], [17, 4.0]])
    );
    let o = deai(h, &["verify", r, "--json", "-m", m]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // The same run without them picks other tokens (so the flags did something).
    let plain = run(&[]);
    assert!(plain.status.success());
    let tokens = |o: &Output| {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["output_tokens"].clone()
    };
    assert!(tokens(&plain).is_array());
    assert_ne!(tokens(&adjusted), tokens(&plain));
    // --json-object: the text is a JSON object prefix, the grammar is signed and replayed.
    let jr = h.join("json.json");
    let o = run(&["--json-object", "--receipt", jr.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let answer = out["text"].as_str().unwrap();
    assert!(
        deai_engine::json_prefix::JsonPrefix::new()
            .after(answer.as_bytes())
            .is_some(),
        "{answer:?}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&jr).unwrap()).unwrap();
    assert_eq!(v["sampling"]["json_object"], true, "{v}");
    let o = deai(h, &["verify", jr.to_str().unwrap(), "-m", m]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // --json-schema: the text is a prefix of a value of the schema, whose canonical text is
    // signed in the receipt and replayed by `deai verify`.
    let schema = h.join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"word": {"type": "string"}, "n": {"type": "integer"}}}"#,
    )
    .unwrap();
    let sr = h.join("schema-receipt.json");
    let o = run(&[
        "--json-schema",
        schema.to_str().unwrap(),
        "--receipt",
        sr.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let answer = out["text"].as_str().unwrap();
    assert!(answer.starts_with(r#"{"word": ""#), "{answer:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&sr).unwrap()).unwrap();
    assert_eq!(
        v["sampling"]["json_schema"], r#"{"object":[["word","string"],["n","integer"]]}"#,
        "{v}"
    );
    let o = deai(h, &["verify", sr.to_str().unwrap(), "-m", m]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // A receipt whose schema was swapped for another is refused.
    let swapped = std::fs::read_to_string(&sr)
        .unwrap()
        .replace(r#"[\"n\",\"integer\"]"#, r#"[\"n\",\"number\"]"#);
    assert!(swapped.contains("number"), "{swapped}");
    let tampered = h.join("tampered.json");
    std::fs::write(&tampered, swapped).unwrap();
    let o = deai(h, &["verify", tampered.to_str().unwrap(), "-m", m]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // Schemas it cannot honour are refused before the model loads.
    let bad = h.join("bad-schema.json");
    for (content, says) in [
        (r#"{"type": "string"}"#, "top level must be of type object"),
        (
            r#"{"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}"#,
            "\"maxLength\" is not supported",
        ),
        ("not json", "is not JSON"),
    ] {
        std::fs::write(&bad, content).unwrap();
        let o = run(&["--json-schema", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{content}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(says),
            "{content}: {}",
            text(&o.stderr)
        );
    }
    let o = run(&["--json-schema", schema.to_str().unwrap(), "--json-object"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    // Out of range, repeated, unparsable, outside the vocabulary.
    for (args, says, code) in [
        (&["--presence-penalty", "2.5"][..], "presence_penalty", 1),
        (&["--logit-bias", "5=101"], "logit_bias", 1),
        (&["--logit-bias", "5=1", "--logit-bias", "5=2"], "twice", 1),
        (&["--logit-bias", "5"], "TOKEN=BIAS", 2),
        (&["--logit-bias", "x=1"], "not a token id", 2),
        (&["--logit-bias", "999999=1"], "token 999999", 1),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(says),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
}
