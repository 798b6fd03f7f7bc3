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
//! [`Report::failure`] says when a request was lost or duplicated, or a job ended final but
//! not accepted (rejected, expired, unresolved); jobs still pending after the settle time are
//! reported only.

use crate::stats::{median, percentile};
use crate::sys::{cpu_model, loadavg};
use anyhow::{bail, Context, Result};
use deai_client::ChainClient;
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, GenParams, SamplingParams};
use deai_ledger::state::JobStatus;
use deai_ledger::Address;
use deai_node::devnet::{self, DevnetInfo, DevnetOptions, Runner as _};
use deai_types::Hash256;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run and measure.
#[derive(Clone)]
pub struct Options {
    /// The model's GGUF, and the engine loaded from it that the bare runs and the devnet's
    /// roles share.
    pub model: PathBuf,
    pub engine: Arc<Engine>,
    /// The model's name in the gateway's OpenAI API.
    pub model_name: String,
    /// Honest workers in the devnet (1..=16).
    pub workers: usize,
    /// First loopback port of the devnet; `None`: a free range.
    pub port_base: Option<u16>,
    /// Repetitions of the bare and the one-client measurements (medians are reported).
    pub reps: usize,
    /// max_tokens of the bare and one-client requests.
    pub max_tokens: usize,
    /// Concurrent streaming clients, and the seconds they keep sending requests.
    pub clients: usize,
    pub secs: u64,
    /// max_tokens of the concurrent requests.
    pub concurrent_max_tokens: usize,
    /// Sampler seed of every request (greedy: temperature 0).
    pub seed: u64,
    /// The user message.
    pub prompt: String,
    /// Longest wait for every job of the run to be final on chain.
    pub settle_secs: u64,
    /// The devnet's job timeout in blocks; `None`: the devnet's own.
    pub job_timeout: Option<u64>,
}

/// Everything the run measured (milliseconds and rates rounded to 3 decimals).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub loadavg_at_start: String,
    pub threads: usize,
    pub workers: usize,
    pub reps: usize,
    pub prompt: String,
    pub seed: u64,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    /// One client: completion tokens of the back-to-back answers.
    pub output_tokens: u64,
    pub bare_output_tokens: usize,
    pub bare_cached_tokens: usize,
    pub bare_tps: f64,
    pub bare_ttft_ms: f64,
    /// One client, back to back (the validators verify meanwhile): the headline.
    pub e2e_tps: f64,
    pub e2e_ttft_ms: f64,
    /// `e2e_tps / bare_tps`.
    pub ratio: f64,
    pub ttft_added_ms: f64,
    pub e2e_headers_ms: f64,
    pub e2e_tail_ms: f64,
    pub verify_patience_ms: u64,
    pub verify_yield_s: f64,
    pub verify_forced_chunks: u64,
    /// Back to back with re-execution not yielding to generation.
    pub competing_e2e_tps: f64,
    pub competing_ratio: f64,
    pub competing_ttft_added_ms: f64,
    /// One client, each request after the previous job is final (validators idle).
    pub quiet_e2e_tps: f64,
    pub quiet_e2e_ttft_ms: f64,
    pub quiet_ratio: f64,
    pub quiet_ttft_added_ms: f64,
    pub quiet_headers_ms: f64,
    pub quiet_tail_ms: f64,
    /// One finalized-state read from the chain.
    pub chain_get_ms: f64,
    /// The concurrent phase.
    pub clients: usize,
    pub secs: u64,
    pub concurrent_max_tokens: usize,
    pub requests: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub concurrent_wall_s: f64,
    pub concurrent_tps: f64,
    pub bare_short_tps: f64,
    pub concurrent_ratio: f64,
    pub concurrent_latency_p50_ms: f64,
    pub concurrent_latency_p99_ms: f64,
    pub concurrent_ttft_p50_ms: f64,
    pub concurrent_ttft_p99_ms: f64,
    /// Every phase.
    pub total_requests: u64,
    pub total_lost: u64,
    pub total_duplicated: u64,
    /// Settlement of the run's jobs.
    pub jobs: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub expired: usize,
    pub unresolved: usize,
    pub job_timeout_blocks: u64,
    pub concurrent_blocks_per_s: f64,
    pub accepted_max_latency_ms: f64,
    pub not_accepted_min_latency_ms: f64,
    /// Jobs still not final after the settle time.
    pub pending: usize,
    pub settle_s: f64,
    /// The first few lost or duplicated requests.
    pub problems: Vec<String>,
}

impl Report {
    /// Why the run failed: a request lost or duplicated, or a job final but not accepted
    /// (rejected, expired or unresolved). Pending jobs are not a failure.
    pub fn failure(&self) -> Option<String> {
        let not_accepted = self
            .jobs
            .saturating_sub(self.accepted)
            .saturating_sub(self.pending);
        if self.total_lost == 0 && self.total_duplicated == 0 && not_accepted == 0 {
            return None;
        }
        Some(format!(
            "{} lost, {} duplicated, {not_accepted} of {} jobs final but not accepted \
             (rejected, expired or unresolved) {}",
            self.total_lost,
            self.total_duplicated,
            self.jobs,
            self.problems.join("; ")
        ))
    }
}

/// A port base with every port a devnet with `workers` workers uses free.
fn free_base(workers: usize) -> Result<u16> {
    let offsets: Vec<u16> = (0..4)
        .chain(100..104)
        .chain(200..=200 + workers as u16)
        .collect();
    Ok(deai_chain::ports::free_port_base(&offsets)?)
}

pub(crate) fn params(max_tokens: usize, seed: u64) -> GenParams {
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
pub(crate) struct BareRun {
    pub tps: f64,
    pub ttft_ms: f64,
    pub text: String,
    pub tokens: usize,
    pub cached: usize,
}

pub(crate) fn bare_once(e: &Engine, ids: &[u32], p: &GenParams) -> Result<BareRun> {
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
pub(crate) struct Streamed {
    pub text: String,
    pub completion_tokens: u64,
    pub receipt_id: String,
    pub job: String,
    /// Sending the request -> response headers / first non-empty content / final chunk.
    headers_ms: f64,
    ttft_ms: f64,
    /// The last content delta -> the final chunk (the worker signs and stores the receipt).
    tail_ms: f64,
    pub total_ms: f64,
}

/// Sends one streaming chat request and reads it to the end. `Err` is a lost request: an HTTP
/// error, an error event, a transport error, or a stream without its final chunk and `[DONE]`.
pub(crate) async fn stream_chat(
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
    chain: &ChainClient,
    client: &Address,
    jobs: &HashSet<String>,
) -> Result<HashMap<String, JobStatus>> {
    let mut out = HashMap::new();
    let (page, total) = chain.account_jobs(client, 1000).await?;
    for (id, job) in page {
        let id = id.to_string();
        if jobs.contains(&id) && job.status.is_final() {
            out.insert(id, job.status);
        }
    }
    // More jobs than one page holds: ask for the rest one by one.
    if total > 1000 {
        let missing: Vec<&String> = jobs.iter().filter(|j| !out.contains_key(*j)).collect();
        for id in missing {
            let Ok(h) = id.parse::<Hash256>() else {
                continue;
            };
            if let Some(job) = chain.job(&h).await? {
                if job.status.is_final() {
                    out.insert(id.clone(), job.status);
                }
            }
        }
    }
    Ok(out)
}

/// Waits up to `timeout` for every job in `jobs` to be final; returns the statuses seen.
async fn wait_final(
    info: &DevnetInfo,
    jobs: &HashSet<String>,
    timeout: Duration,
) -> Result<HashMap<String, JobStatus>> {
    let chain = ChainClient::new(&info.chain[0]);
    let t0 = Instant::now();
    loop {
        let st = final_statuses(&chain, &info.client, jobs).await?;
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

/// `o.reps` streaming requests from one client, each sent as soon as the previous ends.
async fn back_to_back(
    http: &reqwest::Client,
    info: &DevnetInfo,
    o: &Options,
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

/// The measurements, inside the running devnet.
async fn measure(
    info: DevnetInfo,
    engine: Arc<Engine>,
    ids: Vec<u32>,
    o: Options,
    verifiers: Vec<Arc<deai_node::verifier::Verifier>>,
    loadavg_at_start: String,
) -> Result<Report> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut tally = Tally::default();
    let p_long = params(o.max_tokens, o.seed);
    let p_short = params(o.concurrent_max_tokens, o.seed);
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
    wait_final(&info, &tally.jobs, Duration::from_secs(o.settle_secs)).await?;

    // Chain round trip as the roles see it (one finalized-state read).
    let ledger = ChainClient::new(&info.chain[0]);
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
            wait_final(&info, &one, Duration::from_secs(o.settle_secs)).await?;
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
    wait_final(&info, &tally.jobs, Duration::from_secs(o.settle_secs)).await?;
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
    wait_final(&info, &tally.jobs, Duration::from_secs(o.settle_secs)).await?;

    eprintln!(
        "{} concurrent clients for {} s (max_tokens {}) ...",
        o.clients, o.secs, o.concurrent_max_tokens
    );
    let job_timeout = ledger.params().await?.job_timeout;
    let h0 = ledger.height().await?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(o.secs);
    let info = Arc::new(info);
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (http, info, prompt) = (http.clone(), info.clone(), o.prompt.clone());
        let (seed, cmax) = (o.seed, o.concurrent_max_tokens);
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
        o.settle_secs,
        tally.jobs.len()
    );
    let ts = Instant::now();
    let st = wait_final(&info, &tally.jobs, Duration::from_secs(o.settle_secs)).await?;
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
    let r = crate::stats::round3;
    Ok(Report {
        machine: format!(
            "{} ({} cores)",
            cpu_model(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        loadavg_at_start,
        threads: engine.threads(),
        workers: info.workers.len(),
        reps: o.reps,
        prompt: o.prompt.clone(),
        seed: o.seed,
        prompt_tokens: ids.len(),
        max_tokens: o.max_tokens,
        output_tokens: e2e_tokens,
        bare_output_tokens: b.first().map_or(0, |r| r.tokens),
        bare_cached_tokens: b.first().map_or(0, |r| r.cached),
        bare_tps: r(bare_tps),
        bare_ttft_ms: r(bare_ttft),
        e2e_tps: r(e2e_tps),
        e2e_ttft_ms: r(e2e_ttft),
        ratio: r(e2e_tps / bare_tps),
        ttft_added_ms: r(e2e_ttft - bare_ttft),
        e2e_headers_ms: r(headers(&b2b)),
        e2e_tail_ms: r(tail(&b2b)),
        verify_patience_ms: patience.map_or(0, |p| p.as_millis() as u64),
        verify_yield_s: r(yielded.waited.saturating_sub(yield0.waited).as_secs_f64()),
        verify_forced_chunks: yielded.forced_chunks - yield0.forced_chunks,
        competing_e2e_tps: r(competing_tps),
        competing_ratio: r(competing_tps / bare_tps),
        competing_ttft_added_ms: r(competing_ttft - bare_ttft),
        quiet_e2e_tps: r(quiet_tps),
        quiet_e2e_ttft_ms: r(quiet_ttft),
        quiet_ratio: r(quiet_tps / bare_tps),
        quiet_ttft_added_ms: r(quiet_ttft - bare_ttft),
        quiet_headers_ms: r(headers(&quiet)),
        quiet_tail_ms: r(tail(&quiet)),
        chain_get_ms: r(median(&rtt)),
        clients: o.clients,
        secs: o.secs,
        concurrent_max_tokens: o.concurrent_max_tokens,
        requests: c_requests,
        lost: c_lost,
        duplicated: c_dup,
        concurrent_wall_s: r(wall),
        concurrent_tps: r(concurrent_tps),
        bare_short_tps: r(bare_short_tps),
        concurrent_ratio: r(concurrent_tps / bare_short_tps),
        concurrent_latency_p50_ms: r(percentile(&c_latency, 50.0)),
        concurrent_latency_p99_ms: r(percentile(&c_latency, 99.0)),
        concurrent_ttft_p50_ms: r(percentile(&c_ttft, 50.0)),
        concurrent_ttft_p99_ms: r(percentile(&c_ttft, 99.0)),
        total_requests: tally.requests,
        total_lost: tally.lost,
        total_duplicated: tally.duplicated,
        jobs: tally.jobs.len(),
        accepted,
        rejected,
        expired,
        unresolved,
        job_timeout_blocks: job_timeout,
        concurrent_blocks_per_s: r(blocks_per_s),
        accepted_max_latency_ms: r(accepted_max),
        not_accepted_min_latency_ms: r(other_min),
        pending,
        settle_s: r(settle_s),
        problems: tally.errors,
    })
}

/// Starts a devnet in this process and measures it against the bare engine.
pub fn run(o: &Options) -> Result<Report> {
    let model_id = deai_models::sha256_file(&o.model)?;
    let engine = o.engine.clone();
    let text = chat_prompt(
        &[ChatMessage {
            role: "user".into(),
            content: o.prompt.clone(),
        }],
        true,
    );
    let ids = engine.model.tokenizer.encode(&text, true)?;
    let base = match o.port_base {
        Some(p) => p,
        None => free_base(o.workers)?,
    };
    let tmp = tempfile::Builder::new()
        .prefix("deai-bench-network-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let opts = DevnetOptions {
        dir: dir.clone(),
        model_path: o.model.clone(),
        model_name: o.model_name.clone(),
        base_port: base,
        validators: 4,
        workers: vec![None; o.workers],
        cheaters_pass_challenge: true,
        price_per_1k: 1_000,
        engine: engine.clone(),
        verify_engine: None,
        model_id,
        params: deai_ledger::state::Params {
            job_timeout: o.job_timeout.unwrap_or(devnet::devnet_params().job_timeout),
            ..devnet::devnet_params()
        },
        no_verifier: Vec::new(),
    };
    let load0 = loadavg();
    let nworkers = o.workers;
    let o = o.clone();
    devnet::runner(&dir).start(|ctx| async move {
        eprintln!(
            "starting a devnet ({} workers) in {} on ports {base}.. ...",
            nworkers,
            dir.display()
        );
        let net = devnet::start(&ctx, opts).await?;
        measure(
            net.info.clone(),
            engine,
            ids,
            o,
            net.verifiers.clone(),
            load0,
        )
        .await
    })
}
