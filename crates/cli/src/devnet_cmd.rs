//! `deai devnet`: the whole network in one process (see `deai_node::devnet`), and `--demo`,
//! which sends one chat request through the gateway as an ordinary HTTP client and follows
//! its receipt to the validators' verdict and the settlement on chain.

use crate::{resolve_model, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use deai_client::blocking::ChainClient;
use deai_ledger::Address;
use deai_node::devnet::{self, DevnetOptions, Runner as _};
use deai_node::faults::Behavior;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DevnetArgs {
    /// Directory for the devnet's chain, keys and receipts; reusing one resumes that devnet
    /// (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// First of the loopback ports: chain p2p on BASE.., chain HTTP on BASE+100..,
    /// the gateway on BASE+200, workers on BASE+201...
    #[arg(long, default_value_t = 27_000)]
    port_base: u16,
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Blocks a job may wait for its receipt before its escrow is refunded (a new devnet
    /// only; default 12000, about 5-20 minutes at devnet block rates).
    #[arg(long)]
    job_timeout: Option<u64>,
    /// Make the last worker cheat: alter-output, fake-proof or other-weights.
    #[arg(long)]
    cheater: Option<String>,
    /// Send one chat request, print the answer, its receipt, the validators' verdict, the
    /// finality height and the balances that moved, then exit.
    #[arg(long)]
    demo: bool,
    /// The demo's question.
    #[arg(
        long,
        default_value = "What is the capital of France? Answer in one sentence."
    )]
    prompt: String,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn devnet(a: DevnetArgs) -> Result<()> {
    if a.workers == 0 || a.workers > 16 {
        bail!("--workers must be 1..=16, got {}", a.workers);
    }
    if a.port_base == 0 || a.port_base > 65_000 {
        bail!("--port-base must be in 1..=65000 (the devnet uses ports up to BASE+216)");
    }
    if let Some(t) = a.job_timeout {
        deai_ledger::state::Params::check(deai_ledger::Param::JobTimeout, t)
            .map_err(|e| anyhow::anyhow!("--job-timeout: {e}"))?;
    }
    let (dir, _tmp) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("deai-devnet-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut opts = options(&dir, &a.model, a.workers, a.port_base)?;
    let (model_path, engine) = (opts.model_path.clone(), opts.engine.clone());
    let behaviors = &mut opts.workers;
    if let Some(c) = &a.cheater {
        let b = match c.as_str() {
            "alter-output" => Behavior::AlterOutput,
            "fake-proof" => Behavior::FakeProof,
            "other-weights" => {
                let dir = tempfile::tempdir()?;
                let noisy = dir.path().join("noisy.gguf");
                deai_engine::gguf::perturb_tensor(
                    &model_path,
                    &noisy,
                    "blk.0.ffn_down.weight",
                    0.02,
                    7,
                )?;
                let e = crate::engine_at(&noisy, engine.threads(), 0)?;
                Behavior::OtherWeights(Arc::new(e))
            }
            other => {
                bail!("unknown --cheater {other:?}: alter-output, fake-proof or other-weights")
            }
        };
        *behaviors.last_mut().expect("at least one worker") = b.tamper();
    }
    opts.params.job_timeout = a.job_timeout.unwrap_or(opts.params.job_timeout);
    let demo = a.demo;
    let prompt = a.prompt.clone();
    devnet::runner(&dir).start(|ctx| async move {
        eprintln!("starting the devnet in {} ...", dir.display());
        let net = devnet::start(&ctx, opts).await?;
        let i = &net.info;
        eprintln!("chain validators (HTTP): {}", i.chain.join(" "));
        eprintln!("workers: {}", i.workers.join(" "));
        println!("gateway: {}/v1  (OpenAI-compatible; model {:?})", i.gateway, i.model);
        println!("explorer: {}/  (blocks, jobs, receipts, workers, governance, playground)", i.gateway);
        println!("api key: {}", i.api_key);
        println!("devnet info: {}", dir.join("devnet.json").display());
        if demo {
            let info = i.clone();
            return tokio::task::spawn_blocking(move || run_demo(&info, &prompt)).await?;
        }
        eprintln!("running; Ctrl-C stops (state is on disk: `--dir` resumes it)");
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tick.tick() => {
                    if let Ok(s) = net.ledger.status().await {
                        eprintln!("height {} supply {} treasury {}", s["height"], s["supply"], s["treasury"]);
                    }
                }
            }
        }
    })
}

/// A devnet in `dir` serving the model `model` names with `workers` honest workers on ports
/// from `port_base` (see [`DevnetArgs::port_base`]), with the devnet's chain parameters.
pub fn options(
    dir: &std::path::Path,
    model: &ModelArgs,
    workers: usize,
    port_base: u16,
) -> Result<DevnetOptions> {
    let model_path = resolve_model(model.model.as_deref())?;
    let engine = Arc::new(crate::load_engine(model)?);
    let model_id = deai_models::sha256_file(&model_path)?;
    Ok(DevnetOptions {
        dir: dir.to_path_buf(),
        model_name: model_name(&model_path),
        model_path,
        base_port: port_base,
        validators: 4,
        workers: vec![None; workers],
        cheaters_pass_challenge: true,
        price_per_1k: 1_000,
        engine,
        verify_engine: None,
        model_id,
        params: devnet::devnet_params(),
        no_verifier: Vec::new(),
    })
}

/// A model's public name: the GGUF file name up to its first dot
/// (`SmolLM2-135M-Instruct.Q4_1.gguf` -> `SmolLM2-135M-Instruct`).
pub fn model_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|s| {
            s.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("model")
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "model".into())
}

fn balances(chain: &ChainClient, who: &[(&str, Address)]) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for (name, addr) in who {
        let (balance, stake, _) = chain.account(addr)?;
        out.push((name.to_string(), balance, stake));
    }
    let s = chain.status()?;
    out.push(("treasury".into(), s["treasury"].as_u64().unwrap_or(0), 0));
    out.push(("burned".into(), s["burned"].as_u64().unwrap_or(0), 0));
    Ok(out)
}

/// The demo, as any OpenAI client would do it, then following the receipt on chain.
fn run_demo(i: &devnet::DevnetInfo, prompt: &str) -> Result<()> {
    let chain = ChainClient::new(&i.chain[0])?;
    let mut who: Vec<(&str, Address)> = vec![
        ("client", i.client),
        ("gateway", i.gateway_account),
        ("app owner", i.app_owner),
        ("model author", i.model_author),
    ];
    let names = ["worker-0", "worker-1", "worker-2", "worker-3"];
    for (k, w) in chain.workers()?.into_iter().enumerate() {
        who.push((names.get(k).copied().unwrap_or("worker"), w.address));
    }
    let vals = chain.validators_json()?;
    let vnames = ["validator-0", "validator-1", "validator-2", "validator-3"];
    for (k, v) in vals["validators"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut a = [0u8; 32];
        hex::decode_to_slice(v["address"].as_str().unwrap_or_default(), &mut a)
            .context("bad validator address from the node")?;
        who.push((vnames.get(k).copied().unwrap_or("validator"), a));
    }
    let before = balances(&chain, &who)?;
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()?;
    println!("\n> {prompt}");
    let t0 = Instant::now();
    // The client keeps its own key: it authorized the gateway's account on chain, and this
    // API key spends that allowance. The request names the app that brought it.
    let own_key = !i.own_key_api_key.is_empty();
    let key = if own_key {
        &i.own_key_api_key
    } else {
        &i.api_key
    };
    let r = http
        .post(format!("{}/v1/chat/completions", i.gateway))
        .bearer_auth(key)
        .header("x-deai-app", i.app.to_string())
        .json(&json!({
            "model": i.model,
            "messages": [{ "role": "user", "content": prompt }],
            "max_tokens": 64,
            "seed": 42,
        }))
        .send()
        .context("sending the chat request to the gateway")?;
    let status = r.status();
    let header = r
        .headers()
        .get("x-deai-receipt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = r.json()?;
    if !status.is_success() {
        bail!("gateway answered {status}: {body}");
    }
    println!(
        "{}",
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .trim()
    );
    println!(
        "[{} prompt + {} completion tokens in {:.2} s; worker {}; receipt {}]",
        body["usage"]["prompt_tokens"],
        body["usage"]["completion_tokens"],
        t0.elapsed().as_secs_f64(),
        &body["deai"]["worker"].as_str().unwrap_or_default()
            [..12.min(body["deai"]["worker"].as_str().unwrap_or_default().len())],
        header
    );
    // Follow the receipt until the validators' verdict is final on chain.
    let t1 = Instant::now();
    let view = loop {
        let v: Value = http
            .get(format!("{}/v1/receipts/{header}", i.gateway))
            .send()?
            .json()?;
        if v["verification"] != "pending" {
            break v;
        }
        if t1.elapsed() > Duration::from_secs(300) {
            bail!("no verdict after 300 s: {v}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let rc = &view["receipt"];
    println!(
        "\nreceipt (job {}):",
        view["job"].as_str().unwrap_or_default()
    );
    println!(
        "  model id      {}",
        rc["model_id"].as_str().unwrap_or_default()
    );
    println!(
        "  kernel profile {}",
        rc["profile_id"].as_str().unwrap_or_default()
    );
    println!(
        "  prompt/output {} / {} tokens; stop {}",
        rc["prompt_tokens"].as_array().map_or(0, |a| a.len()),
        rc["output_tokens"].as_array().map_or(0, |a| a.len()),
        rc["stop_reason"]
    );
    println!(
        "  activation proof {} chunks; worker key {}",
        rc["proof"]["chunks"].as_array().map_or(0, |a| a.len()),
        rc["worker_key"].as_str().unwrap_or_default()
    );
    let l = &view["ledger"];
    println!(
        "\nvalidators' verdict: {} ({:.1} s after the answer)",
        view["verification"],
        t1.elapsed().as_secs_f64()
    );
    for v in l["verdicts"].as_array().into_iter().flatten() {
        println!(
            "  validator {}…  {}",
            &v["voter"].as_str().unwrap_or_default()[..12],
            if v["yes"] == true { "accept" } else { "reject" }
        );
    }
    println!(
        "  receipt digest on chain matches: {}",
        l["receipt_digest_matches"]
    );
    println!("  finalized at height {}", l["settlement"]["height"]);
    println!("  settlement {}", l["settlement"]);
    let s = &l["settlement"];
    println!(
        "  shares: worker {}, validators {}, treasury {}, model royalty {}, app {}, gateway {}",
        s["worker_paid"],
        s["validator_fee"],
        s["treasury_cut"],
        s["royalty"],
        s["app_paid"],
        s["gateway_paid"]
    );
    let after = balances(&chain, &who)?;
    println!("\nbalances that moved:");
    for ((name, b0, s0), (_, b1, s1)) in before.iter().zip(&after) {
        if b0 != b1 {
            let d = *b1 as i128 - *b0 as i128;
            println!("  {name:<12} balance {b0:>12} -> {b1:>12}  ({d:+})");
        }
        if s0 != s1 {
            let d = *s1 as i128 - *s0 as i128;
            println!("  {name:<12} stake   {s0:>12} -> {s1:>12}  ({d:+})");
        }
    }
    if view["verification"] != "accepted" {
        bail!("the receipt was {}", view["verification"]);
    }
    Ok(())
}
