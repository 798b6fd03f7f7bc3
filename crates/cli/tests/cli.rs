//! The `deai` binary end to end: outputs, exit codes and error messages.
//!
//! Every test runs the real binary with `DEAI_HOME` set to its own empty temporary directory
//! and names its model with `-m PATH`, so nothing is ever downloaded. Fast cases use tiny
//! generated models (`deai_engine::testing`); the cases marked "real model" use the SmolLM2
//! GGUF named by `DEAI_MODEL_PATH` (set by `scripts/test.sh` and CI) and print
//! `SKIPPED: set DEAI_MODEL_PATH` when it is unset.

use deai_engine::testing::{tiny_model_gguf, TinySpec};
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tempfile::TempDir;

/// A temporary `DEAI_HOME` (and scratch directory) for one test.
struct Env {
    home: TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    /// Writes a tiny model with context `n_ctx` and returns its path (outside the store).
    fn tiny(&self, n_ctx: usize) -> PathBuf {
        let p = self.path(&format!("tiny-{n_ctx}.gguf"));
        let spec = TinySpec {
            n_ctx,
            ..TinySpec::default()
        };
        std::fs::write(&p, tiny_model_gguf(&spec)).unwrap();
        p
    }

    fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deai"));
        c.args(args)
            .env("DEAI_HOME", self.home.path())
            .env_remove("DEAI_FORCE_PORTABLE")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::null());
        c
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn real_model(test: &str) -> Option<PathBuf> {
    match std::env::var_os("DEAI_MODEL_PATH") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "DEAI_MODEL_PATH={} is not a file (unset it to skip the real-model tests)",
                p.display()
            );
            Some(p)
        }
        _ => {
            eprintln!("SKIPPED: set DEAI_MODEL_PATH to the SmolLM2-135M-Instruct GGUF ({test})");
            None
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_panic(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && !stdout(o).contains("panicked"),
        "{what}: panicked:\n{err}"
    );
}

/// Succeeded, printed nothing alarming; returns stdout.
fn ok(o: &Output, what: &str) -> String {
    no_panic(o, what);
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstderr: {}",
        o.status,
        stderr(o)
    );
    stdout(o)
}

/// Failed with exit code `code`, without a panic, with `needle` (case-insensitive) in an
/// `error:` message on stderr and nothing on stdout. Runtime errors (exit 1) are one line;
/// usage errors (exit 2) come with clap's usage hint.
fn fails(o: &Output, code: i32, needle: &str, what: &str) {
    no_panic(o, what);
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: stderr: {err}");
    assert!(err.starts_with("error: "), "{what}: stderr: {err}");
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "{what}: stderr: {err}");
    }
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: expected {needle:?} in stderr: {err}"
    );
    assert!(o.stdout.is_empty(), "{what}: stdout: {}", stdout(o));
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/fixtures/tokenizer_llamacpp.json"
    );
    json(&std::fs::read_to_string(p).unwrap())
}

/// Checks the fields of `run --json` output; returns it.
fn run_json(out: &str, max_tokens: usize) -> Value {
    let j = json(out);
    let toks = u32s(&j["output_tokens"]);
    assert!(
        (1..=max_tokens).contains(&toks.len()),
        "{} tokens",
        toks.len()
    );
    assert!(!u32s(&j["prompt_tokens"]).is_empty());
    assert!(j["text"].is_string());
    match j["stop_reason"].as_str() {
        Some("max_tokens") => assert_eq!(toks.len(), max_tokens),
        Some("eos") | Some("stop_string") => {}
        r => panic!("stop_reason {r:?}"),
    }
    assert!(j["kernel_profile"]
        .as_str()
        .unwrap()
        .starts_with("deai-cpu-bi-v1"));
    j
}

// ---------------------------------------------------------------------------------------------
// Real model
// ---------------------------------------------------------------------------------------------

#[test]
fn tokenize_matches_llama_cpp() {
    let Some(m) = real_model("tokenize") else {
        return;
    };
    let env = Env::new();
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    for text in [
        "<|im_start|>user\nHi<|im_end|>",
        "text with <|endoftext|> inside and <|im_end|><|im_start|> adjacent",
        "caf\u{e9} na\u{ef}ve r\u{e9}sum\u{e9}",
    ] {
        let case = cases
            .iter()
            .find(|c| c["text"] == text)
            .unwrap_or_else(|| panic!("fixture has no case {text:?}"));
        let want = u32s(&case["ids"]);
        let out = ok(
            &env.run(&[
                OsStr::new("tokenize"),
                text.as_ref(),
                "--json".as_ref(),
                "-m".as_ref(),
                m.as_os_str(),
            ]),
            text,
        );
        let got = json(&out);
        assert_eq!(got.as_object().unwrap().keys().collect::<Vec<_>>(), ["ids"]);
        assert_eq!(u32s(&got["ids"]), want, "{text:?}");
    }
    // Without --json: one line per token, ids first.
    let out = ok(
        &env.run(&[
            OsStr::new("tokenize"),
            "Hello world".as_ref(),
            "-m".as_ref(),
            m.as_os_str(),
        ]),
        "plain tokenize",
    );
    let ids: Vec<u32> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, [19556, 905]);
}

#[test]
fn run_real_model_json_and_seeded_replay() {
    let Some(m) = real_model("run") else {
        return;
    };
    let env = Env::new();
    let m = m.to_str().unwrap();
    let sampled = |seed: &str| {
        let o = env.run(&[
            "run",
            "Hi",
            "-n",
            "8",
            "--json",
            "--temperature",
            "0.9",
            "--seed",
            seed,
            "-t",
            "2",
            "-m",
            m,
        ]);
        run_json(&ok(&o, "run --json"), 8)
    };
    let a = sampled("5");
    let b = sampled("5");
    assert_eq!(a["output_tokens"], b["output_tokens"]);
    assert_eq!(a["text"], b["text"]);
    // The chat template and tokenizer give llama.cpp's prompt ids.
    let chat = fixture()["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["messages"] == serde_json::json!([{"role": "user", "content": "Hi"}])
                && c["add_generation_prompt"] == true
        })
        .cloned()
        .expect("fixture has the chat case for \"Hi\"");
    assert_eq!(u32s(&a["prompt_tokens"]), u32s(&chat["ids"]));

    // Greedy: streamed stdout is the JSON text, and the run repeats.
    let greedy = ["run", "Hi", "-n", "8", "-m", m];
    let j = run_json(
        &ok(
            &env.run(&[&greedy[..], &["--json"]].concat()),
            "greedy --json",
        ),
        8,
    );
    let o = env.run(&greedy);
    let streamed = ok(&o, "greedy streamed");
    assert_eq!(streamed, format!("{}\n", j["text"].as_str().unwrap()));
    assert!(stderr(&o).contains("prompt tokens"), "{}", stderr(&o));
}

#[test]
fn truncated_real_model_fails_cleanly() {
    let Some(m) = real_model("truncated") else {
        return;
    };
    let env = Env::new();
    let bytes = std::fs::read(&m).unwrap();
    // Inside the metadata (the vocabulary), and inside the tensor data.
    for (i, cut) in [300_000, bytes.len() / 2].into_iter().enumerate() {
        let p = env.path(&format!("cut-{i}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let o = env.run(&[
            OsStr::new("run"),
            "Hi".as_ref(),
            "-m".as_ref(),
            p.as_os_str(),
        ]);
        fails(&o, 1, "GGUF", &format!("cut at {cut}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Tiny generated models
// ---------------------------------------------------------------------------------------------

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn with_model(args: &[&str], model: &Path) -> Vec<OsString> {
    let mut v = os(args);
    v.push("-m".into());
    v.push(model.into());
    v
}

#[test]
fn corrupt_model_files_fail_cleanly() {
    let env = Env::new();
    let tiny = tiny_model_gguf(&TinySpec::default());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("random".into(), random.clone()),
        ("magic+random".into(), [&b"GGUF"[..], &random].concat()),
        (
            "header+random".into(),
            [&tiny[..24], &random].concat(), // valid magic, version and counts
        ),
    ];
    for cut in [3, 4, 8, 16, 24, 100, 1000, tiny.len() / 2, tiny.len() - 1] {
        files.push((format!("tiny cut at {cut}"), tiny[..cut].to_vec()));
    }
    // A flipped byte in the tensor data is a valid (different) model; in the header it is not.
    let mut bad_count = tiny.clone();
    bad_count[16] = 0xff; // metadata count
    files.push(("bad metadata count".into(), bad_count));
    for (i, (what, bytes)) in files.iter().enumerate() {
        let p = env.path(&format!("bad-{i}.gguf"));
        std::fs::write(&p, bytes).unwrap();
        let o = env.run(&with_model(&["run", "hi", "--raw", "-n", "2"], &p));
        no_panic(&o, what);
        fails(&o, 1, "GGUF", what);
        // `tokenize` reads only the metadata: a file cut inside the tensor data still works.
        let o = env.run(&with_model(&["tokenize", "hi"], &p));
        if !o.status.success() {
            fails(&o, 1, "GGUF", what);
        }
        no_panic(&o, what);
    }
    // model info names the file too.
    let p = env.path("bad-1.gguf");
    let o = env.run(&[
        OsStr::new("model"),
        "info".as_ref(),
        "--model".as_ref(),
        p.as_os_str(),
    ]);
    fails(&o, 1, "bad-1.gguf", "model info");
}

/// A GGUF header whose only metadata is `general.alignment = 0`: candle's parser divides by
/// it. The engine catches that panic, but the default panic hook has already printed
/// "thread 'main' panicked at .../gguf_file.rs: attempt to divide by zero" to stderr.
#[test]
fn zero_alignment_fails_without_a_panic_message() {
    let env = Env::new();
    let key = b"general.alignment";
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes()); // version
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(4u32.to_le_bytes()); // type u32
    b.extend(0u32.to_le_bytes()); // value
    let p = env.path("align0.gguf");
    std::fs::write(&p, b).unwrap();
    let o = env.run(&with_model(&["run", "hi", "--raw"], &p));
    fails(&o, 1, "GGUF", "general.alignment = 0");
    let o = env.run(&with_model(&["tokenize", "hi"], &p));
    fails(&o, 1, "GGUF", "general.alignment = 0");
}

#[test]
fn missing_or_unknown_models_fail_cleanly() {
    let env = Env::new();
    let cases: &[(&str, &str)] = &[
        ("/nonexistent/dir/model.gguf", "no such file"),
        ("./missing.gguf", "no such file"),
        ("deadbeefdeadbeef", "no installed model"),
        ("DEADBEEF00", "no installed model"),
        ("abc123", "at least 8 hex"),
        ("not-a-model", "expected `default`"),
    ];
    for (spec, needle) in cases {
        let o = env.run(&["run", "hi", "-m", spec]);
        fails(&o, 1, needle, spec);
        let o = env.run(&["tokenize", "hi", "-m", spec]);
        fails(&o, 1, needle, spec);
    }
    let o = env.run(&["run", "hi", "-m", env.home.path().to_str().unwrap()]);
    fails(&o, 1, "directory", "a directory");
}

#[test]
fn bad_parameters_fail_before_any_work() {
    let env = Env::new();
    let m = env.tiny(512);
    let cases: &[(&[&str], &str)] = &[
        (&["run", ""], "empty prompt"),
        (&["run", "  \n\t "], "empty prompt"),
        (&["run", "hi", "--temperature", "-1"], "temperature"),
        (&["run", "hi", "--temperature=-1"], "temperature"),
        (&["run", "hi", "--temperature", "NaN"], "temperature"),
        (&["run", "hi", "--top-p", "0"], "top_p"),
        (&["run", "hi", "--top-p", "1.5"], "top_p"),
        (&["run", "hi", "--top-p", "-0.5"], "top_p"),
        (&["run", "hi", "-n", "0"], "--max-tokens"),
        (&["run", "hi", "--threads", "0"], "--threads"),
        (&["run", "hi", "-t", "0"], "--threads"),
        (&["chat", "-n", "0"], "--max-tokens"),
        (&["chat", "--top-p", "2"], "top_p"),
    ];
    for (args, needle) in cases {
        let what = args.join(" ");
        fails(&env.run(&with_model(args, &m)), 1, needle, &what);
        // Checked before the model is even looked at.
        fails(
            &env.run(&with_model(args, Path::new("/nonexistent.gguf"))),
            1,
            needle,
            &what,
        );
    }
    // Values clap cannot parse are usage errors (exit 2).
    for args in [
        &["run", "hi", "-n", "-3"][..],
        &["run", "hi", "-n", "many"],
        &["run", "hi", "--seed", "x"],
        &["run", "hi", "--temperature", "hot"],
        &["run", "hi", "--bogus"],
        &["run"],
    ] {
        let o = env.run(&with_model(args, &m));
        fails(&o, 2, "", &args.join(" "));
    }
}

#[test]
fn prompt_over_context_fails_cleanly() {
    let env = Env::new();
    let m = env.tiny(32);
    // The tiny vocabulary is byte-level: 40 letters without merges are 40 tokens.
    let long = "abcdefghij".repeat(4);
    let o = env.run(&with_model(&["run", &long, "--raw", "-n", "1"], &m));
    fails(&o, 1, "context overflow", "40-token prompt");
    // The prompt fits, but not with the tokens asked for.
    let o = env.run(&with_model(&["run", "abcd", "--raw", "-n", "30"], &m));
    fails(&o, 1, "context overflow", "prompt + -n over the context");
    // The chat template alone is longer than 32 tokens.
    let o = env.run(&with_model(&["run", "hi", "-n", "1"], &m));
    fails(&o, 1, "context overflow", "chat prompt");
    // Exactly full: 4 prompt tokens + 28 generated (the last one is never fed).
    let o = env.run(&with_model(
        &["run", "abcd", "--raw", "-n", "29", "--json"],
        &m,
    ));
    run_json(&ok(&o, "prompt + -n - 1 = n_ctx"), 29);
}

/// `-n` near `usize::MAX`: `Engine::generate` computes `prompt.len() + max_tokens - 1`
/// unchecked, which panics with "attempt to add with overflow" where overflow checks are on
/// (dev and test builds) and wraps to a small, wrong capacity in release builds.
#[test]
fn huge_max_tokens_is_a_context_overflow() {
    let env = Env::new();
    let m = env.tiny(32);
    let max = usize::MAX.to_string();
    let o = env.run(&with_model(&["run", "hi", "--raw", "-n", &max], &m));
    fails(&o, 1, "context overflow", "-n usize::MAX");
}

#[test]
fn non_utf8_input_fails_cleanly() {
    let env = Env::new();
    let m = env.tiny(512);
    let bad = OsStr::from_bytes(b"caf\xe9 \xff\xfe");
    // Arguments: a usage error from the parser.
    let o = env.run(&[OsStr::new("run"), bad, "-m".as_ref(), m.as_os_str()]);
    fails(&o, 2, "UTF-8", "non-UTF-8 prompt");
    let o = env.run(&[OsStr::new("tokenize"), bad, "-m".as_ref(), m.as_os_str()]);
    fails(&o, 2, "UTF-8", "non-UTF-8 tokenize text");
    let o = env.run(&[OsStr::new("run"), "hi".as_ref(), "-m".as_ref(), bad]);
    fails(&o, 2, "UTF-8", "non-UTF-8 model");
    // Standard input.
    let args = with_model(&["run", "-", "--raw", "-n", "2"], &m);
    let o = env.run_stdin(&args, b"caf\xe9 \xff\xfe");
    fails(&o, 1, "stdin is not valid UTF-8", "non-UTF-8 stdin");
    let o = env.run_stdin(&args, b"");
    fails(&o, 1, "empty prompt", "empty stdin");
    // Valid stdin works and equals the same prompt given as an argument.
    let json_args = with_model(&["run", "-", "--raw", "-n", "3", "--json"], &m);
    let from_stdin = run_json(&ok(&env.run_stdin(&json_args, b"hello"), "stdin"), 3);
    let o = env.run(&with_model(
        &["run", "hello", "--raw", "-n", "3", "--json"],
        &m,
    ));
    let from_arg = run_json(&ok(&o, "arg"), 3);
    assert_eq!(from_stdin["prompt_tokens"], from_arg["prompt_tokens"]);
    assert_eq!(from_stdin["output_tokens"], from_arg["output_tokens"]);
}

#[test]
fn model_store_list_and_id_prefixes() {
    let env = Env::new();
    let o = env.run(&["model", "list", "--json"]);
    assert_eq!(
        json(&ok(&o, "list on an empty home")),
        serde_json::json!([])
    );
    let o = env.run(&["model", "list"]);
    assert!(ok(&o, "plain list").contains("no models"));

    // Install a tiny model by hand; it is listed by its SHA-256 and resolvable by a prefix.
    let bytes = tiny_model_gguf(&TinySpec::default());
    let models = env.path("models");
    std::fs::write(models.join("tiny.gguf"), &bytes).unwrap();
    let list = json(&ok(&env.run(&["model", "list", "--json"]), "list"));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        id,
        deai_models::sha256_file(&models.join("tiny.gguf"))
            .unwrap()
            .to_hex()
    );
    assert_eq!(list[0]["size"], bytes.len() as u64);
    let prefix = &id[..10];
    let by_id = ok(
        &env.run(&["tokenize", "hello", "--json", "-m", prefix]),
        "id prefix",
    );
    let by_path = ok(
        &env.run(&with_model(
            &["tokenize", "hello", "--json"],
            &models.join("tiny.gguf"),
        )),
        "path",
    );
    assert_eq!(by_id, by_path);
    let info = json(&ok(&env.run(&["model", "info", "--model", prefix]), "info"));
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["config"]["n_layer"], 2);
    assert_eq!(info["weights"], "Q4_1");
    // A prefix that matches nothing, and one too short to be an id.
    let other = if id.starts_with('0') { "1" } else { "0" };
    let o = env.run(&["run", "hi", "-m", &format!("{other}{}", &id[1..12])]);
    fails(&o, 1, "no installed model", "unknown prefix");
}

#[test]
fn tiny_model_generation_through_the_binary() {
    let env = Env::new();
    let m = env.tiny(512);
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "hello there", "--raw", "-n", "6"];
        args.extend(extra);
        env.run(&with_model(&args, &m))
    };
    let a = run_json(&ok(&run(&["--json"]), "greedy"), 6);
    let b = run_json(&ok(&run(&["--json", "-t", "1"]), "greedy, 1 thread"), 6);
    assert_eq!(a["output_tokens"], b["output_tokens"]);
    // Raw prompts are not templated: the ids are the tokenizer's.
    let ids = json(&ok(
        &env.run(&with_model(&["tokenize", "hello there", "--json"], &m)),
        "tokenize",
    ));
    assert_eq!(a["prompt_tokens"], ids["ids"]);
    // Streaming prints the same text.
    let o = run(&[]);
    assert_eq!(
        ok(&o, "streamed"),
        format!("{}\n", a["text"].as_str().unwrap())
    );
    // Seeded sampling repeats; another seed gives other tokens.
    let s = |seed: &str| {
        let o = run(&["--json", "--temperature", "1.5", "--seed", seed]);
        run_json(&ok(&o, "sampled"), 6)["output_tokens"].clone()
    };
    assert_eq!(s("1"), s("1"));
    assert_ne!(s("1"), s("2"));
}

#[test]
fn closed_stdout_is_not_an_error() {
    let env = Env::new();
    let m = env.tiny(512);
    // ~20k tokens, one line each: far more than a pipe buffer, so the writer must notice
    // that the reader is gone, whenever that happens.
    let text = "xy ".repeat(7000);
    for json in [false, true] {
        let mut args = with_model(&["tokenize", &text], &m);
        if json {
            args.push("--json".into());
        }
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        no_panic(&o, "closed stdout");
        assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
    }
}

#[test]
fn chat_reuses_earlier_turns() {
    let env = Env::new();
    let m = env.tiny(512);
    let o = env.run_stdin(&with_model(&["chat", "-n", "3"], &m), b"hello\nagain\n\n");
    ok(&o, "chat");
    let err = stderr(&o);
    let cached: Vec<(usize, usize)> = err
        .lines()
        .filter_map(|l| {
            // The prompt "> " has no newline before the status line.
            let rest = &l[l.find('[')? + 1..];
            let (k, rest) = rest.split_once(" of ")?;
            let n = rest.split_whitespace().next()?;
            Some((k.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    assert_eq!(cached.len(), 2, "{err}");
    assert_eq!(cached[0].0, 0);
    assert!(
        cached[1].0 >= cached[0].1,
        "the first turn is reused: {cached:?}"
    );
    assert!(cached[1].0 < cached[1].1);
}

#[test]
fn calibrate_argument_and_missing_python_errors() {
    let env = Env::new();
    let tiny = env.tiny(64);
    let m = tiny.to_str().unwrap();
    let o = env.run(&["calibrate", "-m", m, "--prompts", "0"]);
    fails(
        &o,
        1,
        "--prompts must be between 1 and",
        "calibrate --prompts 0",
    );
    let o = env.run(&["calibrate", "-m", m, "--prompts", "1000"]);
    fails(
        &o,
        1,
        "--prompts must be between 1 and",
        "calibrate --prompts 1000",
    );
    let o = env.run(&["calibrate", "-m", m, "--tokens", "1"]);
    fails(&o, 1, "--tokens must be at least 2", "calibrate --tokens 1");
    let o = env.run(&["calibrate", "-m", m, "--threads", "0"]);
    fails(
        &o,
        1,
        "--threads must be at least 1",
        "calibrate --threads 0",
    );
    let o = env.run(&["calibrate", "-m", m, "--prompts", "many"]);
    fails(&o, 2, "invalid value", "calibrate --prompts many");
    // No usable Python: a clear error naming the fix, before any model work.
    let missing = env.path("no-such-python");
    for py in [missing.to_str().unwrap(), "/bin/false"] {
        let o = env.run(&["calibrate", "-m", m, "--baseline-python", py]);
        fails(&o, 1, "llama-cpp-python is not importable", py);
        let err = stderr(&o);
        assert!(err.contains("scripts/bench-engine.sh"), "{err}");
        assert!(err.contains("--baseline-python"), "{err}");
    }
}

/// `deai bench attacks`: one JSON row per class, the honest baseline, a summary with no
/// failing class; `--attempts 0` is a clear error.
#[test]
fn bench_attacks_prints_every_class_and_no_attack_pays() {
    let env = Env::new();
    let out = ok(
        &env.run(&["bench", "attacks", "--attempts", "3", "--json"]),
        "bench attacks",
    );
    let rows: Vec<Value> = out.lines().map(json).collect();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["attack"].as_str()).collect();
    for class in [
        "fake_receipt_after_unstaking",
        "fake_receipt",
        "inflated_tokens",
        "lazy_receipt",
        "fee_free_spam",
        "governance_freeze",
        "flash_stake_vote",
        "stake_and_leave_validator",
        "honest_jobs",
    ] {
        assert!(names.contains(&class), "{class} missing: {out}");
    }
    for r in rows.iter().filter(|r| r["attack"].is_string()) {
        if r["attack"] != "honest_jobs" {
            assert!(r["attacker_profit"].as_i64().unwrap() <= 0, "{r}");
        }
        assert_eq!(r["false_slashes"], 0, "{r}");
    }
    let summary = rows.last().unwrap();
    assert_eq!(summary["summary"], true, "{summary}");
    assert_eq!(summary["failing"], serde_json::json!([]), "{summary}");
    fails(
        &env.run(&["bench", "attacks", "--attempts", "0"]),
        1,
        "--attempts",
        "zero attempts",
    );
}

/// `deai bench verify-load` on the real model, a few jobs, every receipt sampled: the JSON's
/// last line carries the fields; every cheat is caught, the lazy validator sits on
/// committees and is slashed, never paid, and no honest party is slashed; bad options are
/// clear errors before a devnet starts. (The default 10 % sampling is measured by the bench
/// itself over 200 jobs: BENCHMARKS.md.)
#[test]
fn bench_verify_load_reports_what_verification_costs_and_catches() {
    let env = Env::new();
    fails(
        &env.run(&["bench", "verify-load", "--validators", "3"]),
        1,
        "validators must be 4..=99",
        "three validators",
    );
    fails(
        &env.run(&["bench", "verify-load", "--sample-rate-bps", "10001"]),
        1,
        "--sample-rate-bps",
        "a sample rate over 100 %",
    );
    let Some(model) = real_model("bench verify-load") else {
        return;
    };
    let args = with_model(
        &[
            "bench",
            "verify-load",
            "--jobs",
            "8",
            "--max-tokens",
            "8",
            "--reps",
            "1",
            "--sample-rate-bps",
            "10000",
            "--json",
        ],
        &model,
    );
    let out = ok(&env.run(&args), "bench verify-load");
    let r = json(out.lines().last().expect("a JSON line"));
    for key in [
        "validators",
        "verify_overhead",
        "e2e_tps",
        "bare_tps",
        "jobs",
        "cheats_sampled",
        "cheats_caught",
        "lazy_validator_earned",
        "lazy_validator_slashed",
        "false_slashes",
    ] {
        assert!(!r[key].is_null(), "{key} missing: {r}");
    }
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k}: {r}"));
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    assert_eq!(n("validators"), 7, "{r}");
    assert_eq!((n("requests"), n("lost"), n("jobs")), (8, 0, 8), "{r}");
    // A caught cheater's job may stay open until it times out (the chain refuses receipts
    // from an inactive worker): only honest workers' jobs must all settle.
    assert_eq!(n("honest_unsettled"), 0, "{r}");
    assert_eq!(n("sampled"), 8, "every receipt is sampled: {r}");
    // Every cheat sampled and caught; the cheaters lost money. (At 100 % sampling a cheater
    // may already be caught on a job before the load, a second capability challenge, and
    // then serves no cheat here: `cheats` 0.)
    assert_eq!(n("cheats_sampled"), n("cheats"), "{r}");
    assert_eq!(n("cheats_caught"), n("cheats"), "{r}");
    assert_eq!(n("cheats_paid"), 0, "{r}");
    if n("cheats") > 0 {
        assert!(r["cheaters_net"].as_i64().unwrap() < 0, "{r}");
    }
    // The lazy validator (3 of 7 drawn per job) sat on committees and was slashed for each,
    // and never paid: not as a committee member, and not as a judge of an escalated job
    // either, where it must reveal a proof of verification too (the copied committee tag it
    // tries is tagged again by the chain and matches nobody's).
    assert!(n("lazy_validator_assigned") > 0, "{r}");
    assert!(n("lazy_validator_slashed") > 0, "{r}");
    assert_eq!(n("lazy_validator_earned"), 0, "{r}");
    assert_eq!(n("false_slashes"), 0, "{r}");
    assert!(f("bare_tps") > 0.0 && f("e2e_tps") > 0.0, "{r}");
    assert!(f("generate_cpu_s") > 0.0 && f("verify_cpu_s") > 0.0, "{r}");
}
