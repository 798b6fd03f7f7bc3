//! # deai — the command-line front door
//!
//! Owns: argument parsing, user-facing output and exit codes. Everything it does is a call
//! into a library crate (`deai-engine`, `deai-models`); it must hold no logic those crates
//! would need, and nothing depends on it.
//!
//! Exit codes: 0 success, 1 runtime error (bad model file, context overflow...), 2 usage error
//! (clap's convention: unknown flag, invalid value, non-UTF-8 argument).

mod bench;
mod bench_explorer;
mod bench_network;
mod bench_proof;
mod bench_sampler;
mod calibrate_cmd;
mod chain_cmd;
mod devnet_cmd;
mod node_cmd;
mod output;
mod proof_cmd;
mod status_cmd;
mod train_cmd;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, EngineConfig, GenParams, SamplingParams};
use deai_models::ModelStore;
use std::io::{BufRead, Read, Write};

#[derive(Parser)]
#[command(
    name = "deai",
    version,
    about = "Verifiable decentralized AI: run, prove and check models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a reply to one prompt with the bundled model (fetched on first use).
    Run(RunArgs),
    /// Interactive multi-turn chat (earlier turns are reused from the prefix cache).
    Chat(ChatArgs),
    /// Print the token ids of TEXT (special tokens such as <|im_start|> are parsed).
    Tokenize(TokenizeArgs),
    /// Fetch or list models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Benchmarks that print ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Worker signing keys for receipts.
    #[command(subcommand)]
    Keys(proof_cmd::KeysCmd),
    /// Verify a receipt offline with the local model (exit 0 accept, 1 reject, 2 error).
    Verify(proof_cmd::VerifyArgs),
    /// Pretty-print a receipt.
    Inspect(proof_cmd::InspectArgs),
    /// Measure honest cross-profile activation gaps (vs llama.cpp) and derive thresholds.
    Calibrate(calibrate_cmd::CalibrateArgs),
    /// The replicated ledger: create a chain, run validators, show status.
    #[command(subcommand)]
    Chain(chain_cmd::ChainCmd),
    /// Sign and submit a ledger transaction to a node, and wait for finality.
    Tx(chain_cmd::TxArgs),
    /// The whole network in one process on loopback: 4 validators, workers with the real
    /// model, an OpenAI-compatible gateway (`--demo` sends one request and follows it).
    Devnet(devnet_cmd::DevnetArgs),
    /// Run network roles (worker, validator, gateway; any combination) against a chain.
    Node(node_cmd::NodeArgs),
    /// The network's economics: validators, workers (earnings, slashes, revenue per
    /// compute-hour), jobs by status, supply, treasury and burns.
    Status(status_cmd::StatusArgs),
    /// Train a model: DiLoCo rounds across workers whose contributions are verified by
    /// re-execution before they are merged (`--local`: the single-worker baseline).
    Train(train_cmd::TrainArgs),
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) and verify its SHA-256.
    Fetch,
    /// Show installed models with their ids (SHA-256 of the weights file).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a model's configuration, id and this machine's kernel profile.
    Info {
        #[arg(long)]
        model: Option<String>,
    },
    /// Write a trained checkpoint as a GGUF model that `deai run` serves and `deai verify`
    /// verifies.
    Export(train_cmd::ExportArgs),
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model: "default", a path to a GGUF file, or an installed model's id (prefix).
    #[arg(long, short)]
    model: Option<String>,
    /// Kernel threads (default: the cores available; more would oversubscribe).
    #[arg(long, short = 't')]
    threads: Option<usize>,
}

#[derive(Args, Clone)]
struct SampleArgs {
    /// Maximum tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Sampler seed (the sampler is specified, so anyone can replay it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Subtracted once from the logit of every token already in the output (-2..=2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Subtracted from a token's logit per occurrence in the output (-2..=2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// TOKEN=BIAS: add BIAS (-100..=100) to that token id's logit (repeatable).
    #[arg(long, value_name = "TOKEN=BIAS", value_parser = parse_bias, allow_negative_numbers = true)]
    logit_bias: Vec<(u32, f32)>,
    /// Constrain the output to one JSON object (the sampler masks every other token).
    #[arg(long)]
    json_object: bool,
    /// Constrain the output to one value of the JSON Schema in FILE (top level an object; the
    /// supported subset is in `deai_engine::json_schema`), written in a fixed compact layout.
    #[arg(long, value_name = "FILE", conflicts_with = "json_object")]
    json_schema: Option<std::path::PathBuf>,
    /// System message (default: the model's own).
    #[arg(long)]
    system: Option<String>,
}

/// `TOKEN=BIAS` for `--logit-bias`.
fn parse_bias(s: &str) -> std::result::Result<(u32, f32), String> {
    let (t, b) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TOKEN=BIAS, got {s:?}"))?;
    let t = t
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{t:?} is not a token id"))?;
    let b = b
        .trim()
        .parse::<f32>()
        .map_err(|_| format!("{b:?} is not a number"))?;
    Ok((t, b))
}

impl SampleArgs {
    /// The generation parameters, checked before any model is loaded.
    fn checked_params(&self) -> Result<GenParams> {
        if self.max_tokens == 0 {
            bail!("-n/--max-tokens must be at least 1");
        }
        let mut p = self.params();
        if let Some(path) = &self.json_schema {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the JSON Schema {}", path.display()))?;
            let schema: deai_engine::json_schema::Json = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            p.sampling.json_schema = Some(
                deai_engine::json_schema::JsonSchema::compile_object(&schema)
                    .map_err(|e| anyhow::anyhow!("--json-schema {}: {e}", path.display()))?,
            );
        }
        if p.sampling.logit_bias.windows(2).any(|w| w[0].0 == w[1].0) {
            bail!("--logit-bias names a token id twice");
        }
        p.sampling.validate()?;
        Ok(p)
    }

    fn params(&self) -> GenParams {
        GenParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
                // `+ 0.0`: -0 is written as 0 (a receipt has one encoding per value).
                presence_penalty: self.presence_penalty + 0.0,
                frequency_penalty: self.frequency_penalty + 0.0,
                logit_bias: {
                    let mut b: Vec<(u32, f32)> =
                        self.logit_bias.iter().map(|&(t, x)| (t, x + 0.0)).collect();
                    b.sort_by_key(|(t, _)| *t);
                    b
                },
                json_object: self.json_object,
                json_schema: None,
            },
            stop: self.stop.clone(),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// The prompt ("-" reads stdin).
    prompt: String,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object with tokens, text, stop reason and timings instead of streaming.
    #[arg(long)]
    json: bool,
    /// Write a signed receipt (JSON) with an activation proof to this file.
    #[arg(long)]
    receipt: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Args)]
struct TokenizeArgs {
    text: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Print {"ids": [...]}.
    #[arg(long)]
    json: bool,
    /// Treat special-token text as plain text.
    #[arg(long)]
    no_special: bool,
}

/// `println!` that returns write errors (such as a closed pipe) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
    };
}

fn main() {
    // Warnings of the network roles and the chain go to stderr; RUST_LOG overrides
    // (e.g. RUST_LOG=deai_node=info shows every verdict and capability challenge).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("error,deai_node=warn,deai_chain=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        // Whoever read our output stopped (`deai tokenize ... | head`): nothing went wrong.
        let closed_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Tokenize(a) => tokenize(a),
        Cmd::Model(ModelCmd::Fetch) => {
            let m = ModelStore::open_default()?.fetch_default(true)?;
            outln!("{}  {}  {}", m.id, m.name, m.path.display())?;
            Ok(())
        }
        Cmd::Model(ModelCmd::List { json }) => {
            let store = ModelStore::open_default()?;
            let list = store.list()?;
            if json {
                outln!("{}", serde_json::to_string(&list)?)?;
            } else if list.is_empty() {
                outln!(
                    "no models in {} (run `deai model fetch`)",
                    store.models_dir().display()
                )?;
            } else {
                for m in list {
                    outln!(
                        "{}  {:>6.1} MB  {}  {}",
                        m.id,
                        m.size as f64 / 1e6,
                        m.name,
                        m.path.display()
                    )?;
                }
            }
            Ok(())
        }
        Cmd::Model(ModelCmd::Info { model }) => {
            let path = resolve_model(model.as_deref())?;
            let id = deai_models::sha256_file(&path)?;
            let m = deai_engine::Model::load(&path)?;
            let info = serde_json::json!({
                "id": id.to_hex(),
                "path": path.display().to_string(),
                "weights": m.weights_type.name(),
                "config": m.cfg,
                "kernel_profile": deai_engine::KernelProfile::current(),
            });
            outln!("{}", serde_json::to_string_pretty(&info)?)?;
            Ok(())
        }
        Cmd::Bench(b) => bench::run(b),
        Cmd::Keys(k) => proof_cmd::keys(k),
        Cmd::Verify(a) => proof_cmd::verify(a),
        Cmd::Inspect(a) => proof_cmd::inspect(a),
        Cmd::Calibrate(a) => calibrate_cmd::calibrate(a),
        Cmd::Chain(c) => chain_cmd::chain(c),
        Cmd::Tx(a) => chain_cmd::tx(a),
        Cmd::Devnet(a) => devnet_cmd::devnet(a),
        Cmd::Node(a) => node_cmd::node(a),
        Cmd::Status(a) => status_cmd::status(a),
        Cmd::Train(a) => match a.cmd.clone() {
            Some(train_cmd::TrainSub::Audit(x)) => train_cmd::audit(x),
            None => train_cmd::train(a),
        },
        Cmd::Model(ModelCmd::Export(a)) => train_cmd::export(a),
    }
}

pub fn resolve_model(spec: Option<&str>) -> Result<std::path::PathBuf> {
    let store = ModelStore::open_default()?;
    Ok(store.resolve(spec, true, true)?.path)
}

/// An engine on the GGUF at `path` with `threads` kernel threads and a prefix cache of
/// `prefix_bytes` (0: none).
pub fn engine_at(path: &std::path::Path, threads: usize, prefix_bytes: usize) -> Result<Engine> {
    let cfg = EngineConfig {
        threads,
        prefix_cache_bytes: prefix_bytes,
        ..EngineConfig::default()
    };
    Engine::load(path, cfg).with_context(|| format!("loading {}", path.display()))
}

/// The path of a helper script in the repository's `scripts/` folder (the benchmarks and
/// calibration drive llama.cpp through them), or an error if it is missing.
pub fn helper_script(name: &str) -> Result<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    if !path.is_file() {
        bail!(
            "{} not found: run deai from a checkout of its repository",
            path.display()
        );
    }
    Ok(path)
}

/// Run a helper script of `scripts/` (`py script INPUT_JSON`) and return the last line it
/// printed, which is its JSON answer; on failure, the tail of its stderr.
pub fn run_python_helper(
    py: &std::path::Path,
    script: &str,
    input: &serde_json::Value,
    what: &str,
) -> Result<String> {
    let script = helper_script(script)?;
    let out = std::process::Command::new(py)
        .arg(&script)
        .arg(input.to_string())
        .output()
        .with_context(|| format!("running {} {}", py.display(), script.display()))?;
    if !out.status.success() {
        let tail: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .map(str::to_string)
            .collect();
        bail!("{what} failed: {}", tail.join(" | "));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string())
}

pub fn load_engine(m: &ModelArgs) -> Result<Engine> {
    let mut cfg = EngineConfig::default();
    if let Some(t) = m.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        cfg.threads = t;
    }
    let path = resolve_model(m.model.as_deref())?;
    Engine::load(&path, cfg).with_context(|| format!("loading {}", path.display()))
}

fn read_prompt(p: &str) -> Result<String> {
    let text = if p == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        String::from_utf8(b).context("stdin is not valid UTF-8")?
    } else {
        p.to_string()
    };
    if text.trim().is_empty() {
        bail!("empty prompt: give some text to respond to");
    }
    Ok(text)
}

fn messages(system: &Option<String>, history: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut v = vec![];
    if let Some(s) = system {
        v.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    v.extend_from_slice(history);
    v
}

fn run(a: RunArgs) -> Result<()> {
    let text = read_prompt(&a.prompt)?;
    let params = a.sample.checked_params()?;
    let engine = load_engine(&a.model)?;
    let prompt_text = if a.raw {
        text
    } else {
        let user = ChatMessage {
            role: "user".into(),
            content: text,
        };
        chat_prompt(&messages(&a.sample.system, &[user]), true)
    };
    let ids = engine.model.tokenizer.encode(&prompt_text, !a.raw)?;
    let mut out = std::io::stdout().lock();
    let g = engine.generate(&ids, &params, |ev| {
        if !a.json {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        }
    })?;
    if let Some(path) = &a.receipt {
        proof_cmd::write_receipt(&a.model, &engine, &g, &params, path)?;
    }
    if a.json {
        let j = serde_json::json!({
            "prompt_tokens": g.prompt_tokens,
            "output_tokens": g.output_tokens,
            "text": g.text,
            "stop_reason": g.stop_reason,
            "prefill_ms": g.prefill_ms,
            "decode_ms": g.decode_ms,
            "kernel_profile": engine.profile().display_string(),
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(out)?;
        let n = g.output_tokens.len();
        eprintln!(
            "[{} prompt tokens, {} generated, {:?}; prefill {:.0} ms, decode {:.1} tok/s; profile {}]",
            g.prompt_tokens.len(),
            n,
            g.stop_reason,
            g.prefill_ms,
            n as f64 / (g.decode_ms / 1e3).max(1e-9),
            engine.profile().display_string()
        );
    }
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    let params = a.sample.checked_params()?;
    let engine = load_engine(&a.model)?;
    let mut history: Vec<ChatMessage> = vec![];
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    eprintln!("deai chat — empty line or Ctrl-D to quit");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        history.push(ChatMessage {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        let prompt = chat_prompt(&messages(&a.sample.system, &history), true);
        let ids = engine.model.tokenizer.encode(&prompt, true)?;
        let g = engine.generate(&ids, &params, |ev| {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        })?;
        writeln!(out)?;
        eprintln!(
            "[{} of {} prompt tokens from the prefix cache]",
            g.cached_tokens,
            ids.len()
        );
        history.push(ChatMessage {
            role: "assistant".into(),
            content: g.text,
        });
    }
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let path = resolve_model(a.model.model.as_deref())?;
    let g = deai_engine::gguf::GgufFile::open(&path)?;
    let tok = deai_engine::tokenizer::Tokenizer::from_gguf(&g)?;
    let ids = tok.encode(&a.text, !a.no_special)?;
    if a.json {
        outln!("{}", serde_json::json!({ "ids": ids }))?;
    } else {
        for id in ids {
            let piece =
                String::from_utf8_lossy(&tok.token_bytes(id).unwrap_or_default()).into_owned();
            outln!("{id:>6}  {piece:?}")?;
        }
    }
    Ok(())
}
