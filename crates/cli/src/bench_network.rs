//! `deai bench network`: the whole network (a devnet in this process: 4 validators, workers,
//! the gateway) against the bare engine, measured in the same run on the same `Engine`.
//!
//! - bare: `Engine::generate` on the chat prompt the gateway would build (same token ids, same
//!   greedy seeded parameters): output tokens / wall time including prefill, and the time to
//!   the first token callback. The engine's prefix cache serves the prompt to the bare runs
//!   and to the workers alike (one warm-up run of each first);
//! - end to end: one streaming chat client at a time through the gateway, the same request:
//!   completion tokens / time from sending to the final chunk, and the time to the first
//!   non-empty content delta. Twice: "quiet" (each request waits until the previous job is
//!   final on chain, so only the request path is measured; alternated with the bare runs so
//!   both see the same background load) and back to back (the validators verify the previous
//!   answer on the same cores while the next one runs, as they do in service: the headline);
//! - concurrency: C streaming clients looping the same seeded request for S seconds: lost
//!   requests (HTTP error, error event, stream without final chunk or `[DONE]`), duplicated
//!   ones (a receipt id seen twice, or text that differs from the reference answer, such as a
//!   failover repeating a piece), throughput;
//! - settlement: every job of the run should end accepted by the validators.
//!
//! Exits nonzero when a request was lost or duplicated, or a job ended final but not
//! accepted (rejected, expired, unresolved); jobs still pending after `--settle-secs` are
//! reported only.

use crate::{load_engine, resolve_model, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, GenParams, SamplingParams};
use deai_ledger::state::JobStatus;
use deai_node::devnet::{self, DevnetInfo, DevnetOptions, Runner as _};
use deai_node::ledger_client::LedgerClient;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct NetworkBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Honest workers in the devnet.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// First loopback port of the devnet (chain p2p BASE.., chain HTTP BASE+100..,
    /// gateway BASE+200, workers BASE+201..); default: a free range.
    #[arg(long)]
    port_base: Option<u16>,
    /// Repetitions of the bare and the one-client measurements (medians are reported).
    #[arg(long = "reps", short = 'R', default_value_t = 5)]
    reps: usize,
    /// max_tokens of the bare and one-client requests.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Concurrent streaming clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds the concurrent clients keep sending requests.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// max_tokens of the concurrent requests (the workers run one job at a time, so requests
    /// queue: keep each short enough that the gateway's 120 s worker timeout is not reached).
    #[arg(long, default_value_t = 32)]
    concurrent_max_tokens: usize,
    /// Sampler seed of every request (greedy: temperature 0).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The user message (the default answer runs to max_tokens).
    #[arg(
        long,
        default_value = "Explain in a few sentences how a lighthouse works."
    )]
    prompt: String,
    /// Longest wait at the end for every job of the run to be final on chain.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// Override the devnet's job timeout (blocks from escrow to receipt before a job expires
    /// and the client is refunded); default: the devnet's own (`devnet_params`).
    #[arg(long)]
    job_timeout: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// A port base with every port the devnet uses free.
pub(crate) fn free_base(workers: usize) -> Result<u16> {
    let offsets: Vec<u16> = (0..4)
        .chain(100..104)
        .chain(200..=200 + workers as u16)
        .collect();
    Ok(deai_chain::ports::free_port_base(&offsets)?)
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn params(max_tokens: usize, seed: u64) -> GenParams {
    GenParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed,
            ..Default::default()
        },
        stop: vec![],
    }
}

/// One bare run: (tokens/s, TTFT ms, text, output tokens, cached prompt tokens).
struct BareRun {
    tps: f64,
    ttft_ms: f64,
    text: String,
    tokens: usize,
    cached: usize,
}

fn bare_once(e: &Engine, ids: &[u32], p: &GenParams) -> Result<BareRun> {
    let t0 = Instant::now();
    let mut first: Option<Duration> = None;
    let g = e.generate(ids, p, |_| {
        if first.is_none() {
            first = Some(t0.elapsed());
        }
    })?;
    let wall = t0.elapsed().as_secs_f64();
    Ok(BareRun {
        tps: g.output_tokens.len() as f64 / wall,
        ttft_ms: first.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        text: g.text,
        tokens: g.output_tokens.len(),
        cached: g.cached_tokens,
    })
}

/// What one streamed chat request gave.
#[derive(Debug)]
struct Streamed {
    text: String,
    completion_tokens: u64,
    receipt_id: String,
    job: String,
    /// Sending the request -> response headers / first non-empty content / final chunk.
    headers_ms: f64,
    ttft_ms: f64,
    /// The last content delta -> the final chunk (the worker signs and stores the receipt).
    tail_ms: f64,
    total_ms: f64,
}

/// Sends one streaming chat request and reads it to the end. `Err` is a lost request: an HTTP
/// error, an error event, a transport error, or a stream without its final chunk and `[DONE]`.
async fn stream_chat(
    http: &reqwest::Client,
    info: &DevnetInfo,
    prompt: &str,
    seed: u64,
    max_tokens: usize,
) -> Result<Streamed, String> {
    let t0 = Instant::now();
    let mut resp = http
        .post(format!("{}/v1/chat/completions", info.gateway))
        .bearer_auth(&info.api_key)
        .json(&json!({
            "model": info.model,
            "messages": [{ "role": "user", "content": prompt }],
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": seed,
            "stream": true,
        }))
        .send()
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let headers_ms = t0.elapsed().as_secs_f64() * 1e3;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {body}"));
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut text = String::new();
    let mut ttft_ms = f64::NAN;
    let mut last_ms = f64::NAN;
    let mut fin: Option<(Value, f64)> = None;
    let mut done = false;
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| format!("stream broke: {e}"))?;
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let ev: Vec<u8> = buf.drain(..end + 2).collect();
            let ev = String::from_utf8_lossy(&ev);
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            let data = data.join("\n");
            if data == "[DONE]" {
                done = true;
                continue;
            }
            if done {
                return Err("data after [DONE]".into());
            }
            let v: Value =
                serde_json::from_str(&data).map_err(|e| format!("bad event {data:?}: {e}"))?;
            if !v["error"].is_null() {
                return Err(format!("error event: {}", v["error"]));
            }
            if fin.is_some() {
                return Err("an event after the final chunk".into());
            }
            let choice = &v["choices"][0];
            if let Some(c) = choice["delta"]["content"].as_str() {
                if !c.is_empty() {
                    if text.is_empty() {
                        ttft_ms = t0.elapsed().as_secs_f64() * 1e3;
                    }
                    text.push_str(c);
                    last_ms = t0.elapsed().as_secs_f64() * 1e3;
                }
            }
            if !choice["finish_reason"].is_null() {
                fin = Some((v.clone(), t0.elapsed().as_secs_f64() * 1e3));
            }
        }
    }
    let Some((last, total_ms)) = fin else {
        return Err("stream ended without the final chunk".into());
    };
    if !done {
        return Err("stream ended without [DONE]".into());
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(Streamed {
        text,
        completion_tokens: last["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        receipt_id: s(&last["deai"]["receipt_id"]),
        job: s(&last["deai"]["job"]),
        headers_ms,
        ttft_ms,
        tail_ms: total_ms - last_ms,
        total_ms,
    })
}

/// Final statuses of `jobs` on chain (jobs not final yet are absent).
async fn final_statuses(
    http: &reqwest::Client,
    chain: &str,
    client: &str,
    jobs: &HashSet<String>,
) -> Result<HashMap<String, JobStatus>> {
    let mut out = HashMap::new();
    let v: Value = http
        .get(format!("{chain}/v1/jobs?account={client}&limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    for j in v["jobs"].as_array().into_iter().flatten() {
        let id = j["id"].as_str().unwrap_or_default().to_string();
        if jobs.contains(&id) {
            let st: JobStatus = serde_json::from_value(j["job"]["status"].clone())?;
            if st.is_final() {
                out.insert(id, st);
            }
        }
    }
    // More jobs than one page holds: ask for the rest one by one.
    if v["total"].as_u64().unwrap_or(0) > 1000 {
        let missing: Vec<&String> = jobs.iter().filter(|j| !out.contains_key(*j)).collect();
        for id in missing {
            let r = http.get(format!("{chain}/v1/job/{id}")).send().await?;
            if r.status().is_success() {
                let v: Value = r.json().await?;
                let st: JobStatus = serde_json::from_value(v["job"]["status"].clone())?;
                if st.is_final() {
                    out.insert(id.clone(), st);
                }
            }
        }
    }
    Ok(out)
}

/// Waits up to `timeout` for every job in `jobs` to be final; returns the statuses seen.
async fn wait_final(
    http: &reqwest::Client,
    info: &DevnetInfo,
    jobs: &HashSet<String>,
    timeout: Duration,
) -> Result<HashMap<String, JobStatus>> {
    let client = hex::encode(info.client);
    let t0 = Instant::now();
    loop {
        let st = final_statuses(http, &info.chain[0], &client, jobs).await?;
        if st.len() == jobs.len() || t0.elapsed() >= timeout {
            return Ok(st);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything the run measured.
#[derive(Default)]
struct Tally {
    requests: u64,
    lost: u64,
    duplicated: u64,
    errors: Vec<String>,
    receipts: HashSet<String>,
    jobs: HashSet<String>,
}

impl Tally {
    /// Counts one request against its reference text.
    fn count(&mut self, r: &Result<Streamed, String>, reference: &str) {
        match r {
            Ok(s) => {
                self.requests += 1;
                let repeated = !self.receipts.insert(s.receipt_id.clone());
                if repeated || s.text != reference {
                    self.duplicated += 1;
                    if self.errors.len() < 5 {
                        self.errors.push(format!(
                            "duplicated: receipt {} seen before: {repeated}; text {:?}",
                            s.receipt_id, s.text
                        ));
                    }
                }
                if !s.job.is_empty() {
                    self.jobs.insert(s.job.clone());
                }
            }
            Err(e) => {
                self.lost += 1;
                if self.errors.len() < 5 {
                    self.errors.push(format!("lost: {e}"));
                }
            }
        }
    }
}

struct Opts {
    reps: usize,
    max_tokens: usize,
    clients: usize,
    secs: u64,
    cmax: usize,
    seed: u64,
    prompt: String,
    settle: u64,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}

/// The measurements, inside the running devnet.
/// `o.reps` streaming requests from one client, each sent as soon as the previous ends.
async fn back_to_back(
    http: &reqwest::Client,
    info: &DevnetInfo,
    o: &Opts,
    reference: &str,
    tally: &mut Tally,
    label: &str,
) -> Vec<Streamed> {
    eprintln!("one client, back to back ({label}), {} reps ...", o.reps);
    let mut v = Vec::new();
    for _ in 0..o.reps {
        let r = stream_chat(http, info, &o.prompt, o.seed, o.max_tokens).await;
        tally.count(&r, reference);
        if let Ok(s) = r {
            v.push(s);
        }
    }
    v
}

async fn measure(
    info: DevnetInfo,
    engine: Arc<Engine>,
    ids: Vec<u32>,
    o: Opts,
    verifiers: Vec<Arc<deai_node::verifier::Verifier>>,
) -> Result<(Value, Tally)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut tally = Tally::default();
    let p_long = params(o.max_tokens, o.seed);
    let p_short = params(o.cmax, o.seed);
    let bare = |p: GenParams, n: usize| {
        let e = engine.clone();
        let ids = ids.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<BareRun>> {
            (0..n).map(|_| bare_once(&e, &ids, &p)).collect()
        })
    };

    // Warm-up (not measured): the prefix cache holds the prompt for bare and workers alike,
    // connections are open, the gateway knows the workers.
    eprintln!("warm-up ...");
    let warm = bare(p_long.clone(), 1).await??;
    let reference = warm[0].text.clone();
    let reference_short = bare(p_short.clone(), 1).await??[0].text.clone();
    let r = stream_chat(&http, &info, &o.prompt, o.seed, o.max_tokens).await;
    tally.count(&r, &reference);
    wait_final(&http, &info, &tally.jobs, Duration::from_secs(o.settle)).await?;

    // Chain round trip as the roles see it (one finalized-state read).
    let ledger = LedgerClient::new(&info.chain[0]);
    let mut rtt = Vec::new();
    for _ in 0..o.reps.max(5) {
        let t = Instant::now();
        ledger.account(&info.client).await?;
        rtt.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Bare engine and one client through the gateway, alternated so that both see the same
    // background load (this machine is shared); each request waits until the previous job is
    // final on chain, so the validators are idle while it runs.
    eprintln!(
        "bare engine and one client (validators idle), {} reps ...",
        o.reps
    );
    let (mut b, mut bs, mut quiet) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.reps {
        b.extend(bare(p_long.clone(), 1).await??);
        bs.extend(bare(p_short.clone(), 1).await??);
        let r = stream_chat(&http, &info, &o.prompt, o.seed, o.max_tokens).await;
        tally.count(&r, &reference);
        if let Ok(s) = r {
            let one: HashSet<String> = [s.job.clone()].into();
            wait_final(&http, &info, &one, Duration::from_secs(o.settle)).await?;
            quiet.push(s);
        }
    }
    if b.iter().any(|r| r.text != reference) || bs.iter().any(|r| r.text != reference_short) {
        bail!("the bare engine gave different texts for the same request");
    }
    let bare_tps = median(&b.iter().map(|r| r.tps).collect::<Vec<_>>());
    let bare_ttft = median(&b.iter().map(|r| r.ttft_ms).collect::<Vec<_>>());
    let bare_short_tps = median(&bs.iter().map(|r| r.tps).collect::<Vec<_>>());
    // One client, back to back: the validators verify the previous answers meanwhile, on
    // the same engine. First as the devnet runs (re-execution yields to generation), then
    // with yielding off (verification competes with generation for the cores).
    let yield0 = engine.yield_stats();
    let b2b = back_to_back(
        &http,
        &info,
        &o,
        &reference,
        &mut tally,
        "verification yields",
    )
    .await;
    // A re-execution adds its wait to the stats when it ends: read them once all are done.
    wait_final(&http, &info, &tally.jobs, Duration::from_secs(o.settle)).await?;
    let yielded = engine.yield_stats();
    let patience = verifiers.first().map(|v| v.patience());
    for v in &verifiers {
        v.set_patience(Duration::ZERO);
    }
    let competing = back_to_back(
        &http,
        &info,
        &o,
        &reference,
        &mut tally,
        "verification competes",
    )
    .await;
    for v in &verifiers {
        v.set_patience(patience.unwrap_or_default());
    }

    let tps = |v: &[Streamed]| {
        median(
            &v.iter()
                .map(|s| s.completion_tokens as f64 / (s.total_ms / 1e3))
                .collect::<Vec<_>>(),
        )
    };
    let ttft = |v: &[Streamed]| median(&v.iter().map(|s| s.ttft_ms).collect::<Vec<_>>());
    let headers = |v: &[Streamed]| median(&v.iter().map(|s| s.headers_ms).collect::<Vec<_>>());
    let tail = |v: &[Streamed]| median(&v.iter().map(|s| s.tail_ms).collect::<Vec<_>>());
    let e2e_tps = tps(&b2b);
    let e2e_ttft = ttft(&b2b);
    let competing_tps = tps(&competing);
    let competing_ttft = ttft(&competing);
    let quiet_tps = tps(&quiet);
    let quiet_ttft = ttft(&quiet);
    let e2e_tokens = b2b.first().map_or(0, |s| s.completion_tokens);
    // Let the validators catch up before the load starts.
    wait_final(&http, &info, &tally.jobs, Duration::from_secs(o.settle)).await?;

    eprintln!(
        "{} concurrent clients for {} s (max_tokens {}) ...",
        o.clients, o.secs, o.cmax
    );
    let job_timeout = ledger.params().await?.job_timeout;
    let h0 = ledger.height().await?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(o.secs);
    let info = Arc::new(info);
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (http, info, prompt) = (http.clone(), info.clone(), o.prompt.clone());
        let (seed, cmax) = (o.seed, o.cmax);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let r = stream_chat(&http, &info, &prompt, seed, cmax).await;
                out.push((r, t0.elapsed()));
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.context("a client task panicked")?);
    }
    let wall = results
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let before = (tally.requests, tally.lost, tally.duplicated);
    let mut c_tokens = 0u64;
    let mut c_latency = Vec::new();
    let mut c_ttft = Vec::new();
    for (r, _) in &results {
        tally.count(r, &reference_short);
        if let Ok(s) = r {
            c_tokens += s.completion_tokens;
            c_latency.push(s.total_ms);
            c_ttft.push(s.ttft_ms);
        }
    }
    let c_requests = tally.requests - before.0;
    let c_lost = tally.lost - before.1;
    let c_dup = tally.duplicated - before.2;
    let concurrent_tps = c_tokens as f64 / wall.max(1e-9);
    let blocks_per_s =
        ledger.height().await?.saturating_sub(h0) as f64 / t0.elapsed().as_secs_f64();

    eprintln!(
        "waiting up to {} s for the run's {} jobs to be final on chain ...",
        o.settle,
        tally.jobs.len()
    );
    let ts = Instant::now();
    let st = wait_final(&http, &info, &tally.jobs, Duration::from_secs(o.settle)).await?;
    let settle_s = ts.elapsed().as_secs_f64();
    let n = |s: JobStatus| st.values().filter(|x| **x == s).count();
    let (accepted, rejected) = (n(JobStatus::Accepted), n(JobStatus::Rejected));
    let (expired, unresolved) = (n(JobStatus::Expired), n(JobStatus::Unresolved));
    let pending = tally.jobs.len() - st.len();
    // Which concurrent requests ended accepted, by how long they took.
    let (mut accepted_max, mut other_min) = (f64::NAN, f64::NAN);
    for s in results.iter().filter_map(|r| r.0.as_ref().ok()) {
        match st.get(&s.job) {
            Some(JobStatus::Accepted) => accepted_max = accepted_max.max(s.total_ms),
            Some(_) => other_min = other_min.min(s.total_ms),
            None => {}
        }
    }
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    let mut report = json!({
        "machine": format!("{} ({} cores)", cpu_model(),
            std::thread::available_parallelism().map_or(1, |n| n.get())),
        "loadavg_at_start": loadavg(),
        "threads": engine.threads(),
        "workers": info.workers.len(),
        "reps": o.reps,
        "prompt": o.prompt,
        "seed": o.seed,
        "prompt_tokens": ids.len(),
        "max_tokens": o.max_tokens,
        "output_tokens": e2e_tokens,
        "bare_output_tokens": b.first().map_or(0, |r| r.tokens),
        "bare_cached_tokens": b.first().map_or(0, |r| r.cached),
        "bare_tps": r(bare_tps),
        "bare_ttft_ms": r(bare_ttft),
        "e2e_tps": r(e2e_tps),
        "e2e_ttft_ms": r(e2e_ttft),
        "ratio": r(e2e_tps / bare_tps),
        "ttft_added_ms": r(e2e_ttft - bare_ttft),
        "e2e_headers_ms": r(headers(&b2b)),
        "e2e_tail_ms": r(tail(&b2b)),
        "verify_patience_ms": patience.map_or(0, |p| p.as_millis() as u64),
        "verify_yield_s": r(yielded.waited.saturating_sub(yield0.waited).as_secs_f64()),
        "verify_forced_chunks": yielded.forced_chunks - yield0.forced_chunks,
        "competing_e2e_tps": r(competing_tps),
        "competing_ratio": r(competing_tps / bare_tps),
        "competing_ttft_added_ms": r(competing_ttft - bare_ttft),
        "quiet_e2e_tps": r(quiet_tps),
        "quiet_e2e_ttft_ms": r(quiet_ttft),
        "quiet_ratio": r(quiet_tps / bare_tps),
        "quiet_ttft_added_ms": r(quiet_ttft - bare_ttft),
        "quiet_headers_ms": r(headers(&quiet)),
        "quiet_tail_ms": r(tail(&quiet)),
        "chain_get_ms": r(median(&rtt)),
    });
    let more = json!({
        "clients": o.clients,
        "secs": o.secs,
        "concurrent_max_tokens": o.cmax,
        "requests": c_requests,
        "lost": c_lost,
        "duplicated": c_dup,
        "concurrent_wall_s": r(wall),
        "concurrent_tps": r(concurrent_tps),
        "bare_short_tps": r(bare_short_tps),
        "concurrent_ratio": r(concurrent_tps / bare_short_tps),
        "concurrent_latency_p50_ms": r(percentile(&c_latency, 50.0)),
        "concurrent_latency_p99_ms": r(percentile(&c_latency, 99.0)),
        "concurrent_ttft_p50_ms": r(percentile(&c_ttft, 50.0)),
        "concurrent_ttft_p99_ms": r(percentile(&c_ttft, 99.0)),
        "total_requests": tally.requests,
        "total_lost": tally.lost,
        "total_duplicated": tally.duplicated,
        "jobs": tally.jobs.len(),
        "accepted": accepted,
        "rejected": rejected,
        "expired": expired,
        "unresolved": unresolved,
        "job_timeout_blocks": job_timeout,
        "concurrent_blocks_per_s": r(blocks_per_s),
        "accepted_max_latency_ms": r(accepted_max),
        "not_accepted_min_latency_ms": r(other_min),
        "pending": pending,
        "settle_s": r(settle_s),
        "problems": tally.errors.clone(),
    });
    if let (Some(r), Value::Object(m)) = (report.as_object_mut(), more) {
        r.extend(m);
    }
    Ok((report, tally))
}

pub fn bench(a: NetworkBench) -> Result<()> {
    if a.workers == 0 || a.workers > 16 {
        bail!("--workers must be 1..=16, got {}", a.workers);
    }
    if a.reps == 0 || a.max_tokens == 0 || a.concurrent_max_tokens == 0 || a.clients == 0 {
        bail!("--reps, --max-tokens, --concurrent-max-tokens and --clients must be at least 1");
    }
    if a.port_base.is_some_and(|p| p == 0 || p > 65_000) {
        bail!("--port-base must be in 1..=65000 (the devnet uses ports up to BASE+216)");
    }
    let model_path = resolve_model(a.model.model.as_deref())?;
    let engine = Arc::new(load_engine(&a.model)?);
    let model_id = deai_models::sha256_file(&model_path)?;
    let text = chat_prompt(
        &[ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        }],
        true,
    );
    let ids = engine.model.tokenizer.encode(&text, true)?;
    let base = match a.port_base {
        Some(p) => p,
        None => free_base(a.workers)?,
    };
    let tmp = tempfile::Builder::new()
        .prefix("deai-bench-network-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let name = crate::devnet_cmd::model_name(&model_path);
    let opts = DevnetOptions {
        dir: dir.clone(),
        model_path,
        model_name: name,
        base_port: base,
        workers: vec![None; a.workers],
        cheaters_pass_challenge: true,
        price_per_1k: 1_000,
        engine: engine.clone(),
        model_id,
        params: deai_ledger::state::Params {
            job_timeout: a.job_timeout.unwrap_or(devnet::devnet_params().job_timeout),
            ..devnet::devnet_params()
        },
    };
    let o = Opts {
        reps: a.reps,
        max_tokens: a.max_tokens,
        clients: a.clients,
        secs: a.secs,
        cmax: a.concurrent_max_tokens,
        seed: a.seed,
        prompt: a.prompt.clone(),
        settle: a.settle_secs,
    };
    let load0 = loadavg();
    let nworkers = a.workers;
    let (mut report, tally) = devnet::runner(&dir).start(|ctx| async move {
        eprintln!(
            "starting a devnet ({} workers) in {} on ports {base}.. ...",
            nworkers,
            dir.display()
        );
        let net = devnet::start(&ctx, opts).await?;
        measure(net.info.clone(), engine, ids, o, net.verifiers.clone()).await
    })?;
    report["loadavg_at_start"] = json!(load0);
    if a.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    let jobs = report["jobs"].as_u64().unwrap_or(0);
    let not_accepted =
        jobs - report["accepted"].as_u64().unwrap_or(0) - report["pending"].as_u64().unwrap_or(0);
    if tally.lost > 0 || tally.duplicated > 0 || not_accepted > 0 {
        bail!(
            "{} lost, {} duplicated, {not_accepted} of {jobs} jobs final but not accepted \
             (rejected, expired or unresolved) {}",
            tally.lost,
            tally.duplicated,
            tally.errors.join("; ")
        );
    }
    Ok(())
}

fn print_table(j: &Value) {
    let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
    let u = |k: &str| j[k].as_u64().unwrap_or(0);
    println!(
        "machine: {}; load average at start {}; engine threads {}; {} workers",
        j["machine"].as_str().unwrap_or_default(),
        j["loadavg_at_start"].as_str().unwrap_or_default(),
        u("threads"),
        u("workers")
    );
    println!(
        "one client: prompt {} tokens, max_tokens {} ({} generated), medians of {}",
        u("prompt_tokens"),
        u("max_tokens"),
        u("output_tokens"),
        u("reps")
    );
    println!(
        "{:<32} {:>10} {:>8} {:>10} {:>12}",
        "", "tokens/s", "ratio", "TTFT ms", "added ms"
    );
    println!(
        "{:<32} {:>10.1} {:>8} {:>10.1} {:>12}",
        "bare engine",
        f("bare_tps"),
        "1.00x",
        f("bare_ttft_ms"),
        "-"
    );
    println!(
        "{:<32} {:>10.1} {:>7.2}x {:>10.1} {:>12.1}",
        "gateway+worker, back to back",
        f("e2e_tps"),
        f("ratio"),
        f("e2e_ttft_ms"),
        f("ttft_added_ms")
    );
    println!(
        "{:<32} {:>10.1} {:>7.2}x {:>10} {:>12.1}",
        "  same, verification competes",
        f("competing_e2e_tps"),
        f("competing_ratio"),
        "",
        f("competing_ttft_added_ms")
    );
    println!(
        "{:<32} {:>10.1} {:>7.2}x {:>10.1} {:>12.1}",
        "gateway+worker, validators idle",
        f("quiet_e2e_tps"),
        f("quiet_ratio"),
        f("quiet_e2e_ttft_ms"),
        f("quiet_ttft_added_ms")
    );
    println!(
        "back to back, re-execution yielded {:.1} s in all (cap {} ms per receipt), {} chunks \
         ran out of patience",
        f("verify_yield_s"),
        u("verify_patience_ms"),
        u("verify_forced_chunks")
    );
    println!(
        "response headers after {:.1} ms (idle {:.1}); last token -> final chunk {:.1} ms \
         (idle {:.1}); one chain read {:.2} ms",
        f("e2e_headers_ms"),
        f("quiet_headers_ms"),
        f("e2e_tail_ms"),
        f("quiet_tail_ms"),
        f("chain_get_ms")
    );
    println!(
        "{} concurrent clients for {} s (max_tokens {}): {} requests, {} lost, {} duplicated",
        u("clients"),
        u("secs"),
        u("concurrent_max_tokens"),
        u("requests"),
        u("lost"),
        u("duplicated")
    );
    println!(
        "  {:.1} completion tokens/s over {:.1} s = {:.2}x one bare engine at max_tokens {} ({:.1} tokens/s)",
        f("concurrent_tps"),
        f("concurrent_wall_s"),
        f("concurrent_ratio"),
        u("concurrent_max_tokens"),
        f("bare_short_tps")
    );
    println!(
        "  latency p50 {:.0} ms p99 {:.0} ms; TTFT p50 {:.0} ms p99 {:.0} ms",
        f("concurrent_latency_p50_ms"),
        f("concurrent_latency_p99_ms"),
        f("concurrent_ttft_p50_ms"),
        f("concurrent_ttft_p99_ms")
    );
    println!(
        "settlement: {} jobs, {} accepted, {} rejected, {} expired/unresolved, {} pending after {:.1} s",
        u("jobs"),
        u("accepted"),
        u("rejected"),
        u("expired") + u("unresolved"),
        u("pending"),
        f("settle_s")
    );
    if u("expired") + u("unresolved") > 0 {
        println!(
            "  {} expired, {} unresolved: job_timeout is {} blocks = {:.0} s at the {:.1} blocks/s \
             seen under load; slowest accepted request {:.0} ms, fastest not accepted {:.0} ms",
            u("expired"),
            u("unresolved"),
            u("job_timeout_blocks"),
            f("job_timeout_blocks") / f("concurrent_blocks_per_s"),
            f("concurrent_blocks_per_s"),
            f("accepted_max_latency_ms"),
            f("not_accepted_min_latency_ms")
        );
    }
    if u("total_lost") != u("lost") || u("total_duplicated") != u("duplicated") {
        println!(
            "all phases: {} requests, {} lost, {} duplicated",
            u("total_requests"),
            u("total_lost"),
            u("total_duplicated")
        );
    }
    for p in j["problems"].as_array().into_iter().flatten() {
        println!("  {}", p.as_str().unwrap_or_default());
    }
}
