//! `deai bench explorer`: how the explorer's queries scale. Two chains are built in this
//! process by executing real signed transactions (a small one and a large one, 100k blocks
//! and 10k jobs by default), each served by the real node API on loopback; every query the
//! explorer's pages make is timed over HTTP on both, and the ratio large/small is reported.
//! Optionally, each page is also loaded in headless Chromium against both chains (Debian's
//! chromium + chromedriver and Python's selenium, through `scripts/explorer_paint.py`): first
//! contentful paint and time until the first data is on screen.

mod populate;

pub use populate::{populate, Populated};

use crate::scripts::script_path;
use anyhow::{Context, Result};
use deai_chain::api::{self, Api};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Blocks and jobs (each with its escrow) in the large chain.
    pub blocks: u64,
    pub jobs: u64,
    /// Blocks and jobs in the small chain (the baseline).
    pub small_blocks: u64,
    pub small_jobs: u64,
    /// Timed requests per query (the median is reported).
    pub reps: usize,
    /// Also time page loads in headless Chromium.
    pub browser: bool,
}

/// The size of one of the two chains.
#[derive(Clone, Debug, Serialize)]
pub struct ChainSize {
    pub blocks: u64,
    pub jobs: u64,
}

/// One query of the explorer's pages on both chains.
#[derive(Clone, Debug, Serialize)]
pub struct QueryRow {
    pub query: &'static str,
    /// Median milliseconds over HTTP on loopback.
    pub small_ms: f64,
    pub large_ms: f64,
    pub ratio: f64,
    /// Response size on the large chain.
    pub large_bytes: usize,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub small: ChainSize,
    pub large: ChainSize,
    pub queries: Vec<QueryRow>,
    /// `{"small": .., "large": ..}` as `scripts/explorer_paint.py` printed them for each
    /// chain (`fcp_ms`, and `pages`: milliseconds until each page shows its data), when the
    /// browser was asked for.
    pub browser: Option<Value>,
}

struct Served {
    url: String,
    jobs: u64,
    p: Populated,
    _rt: tokio::runtime::Runtime,
}

fn serve(p: Populated, jobs: u64) -> Result<Served> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let router = api::router(Api {
        app: p.app.clone(),
        marshal: None,
        me: [0; 32],
        evidence: None,
    });
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    rt.spawn(async move { axum::serve(listener, router).await });
    Ok(Served {
        url,
        jobs,
        p,
        _rt: rt,
    })
}

/// The queries the explorer's pages make, by name.
fn queries(s: &Served) -> Vec<(&'static str, String)> {
    let tip = s.p.app.finalized_height();
    let client = hex::encode(s.p.client);
    vec![
        ("status (overview)", "/v1/status".into()),
        (
            "blocks, newest page",
            format!("/v1/blocks?before={}&limit=20", tip + 1),
        ),
        (
            "blocks, oldest page",
            "/v1/blocks?before=21&limit=20".into(),
        ),
        ("block detail", format!("/v1/block/{}", tip / 2)),
        ("jobs, newest page", "/v1/jobs?limit=20".into()),
        (
            "jobs, middle page",
            format!("/v1/jobs?limit=20&offset={}", s.jobs / 2),
        ),
        (
            "jobs of one status",
            "/v1/jobs?status=receipted&limit=20".into(),
        ),
        ("job detail + trail", format!("/v1/job/{}", s.p.some_job)),
        ("transaction", format!("/v1/tx/{}", s.p.some_tx)),
        (
            "account transactions",
            format!("/v1/account/{client}/txs?limit=20"),
        ),
        ("search by id", format!("/v1/search?q={}", s.p.some_tx)),
        ("search by height", format!("/v1/search?q={}", tip / 3)),
    ]
}

fn median_ms(c: &reqwest::blocking::Client, url: &str, reps: usize) -> Result<(f64, usize)> {
    let mut bytes = 0;
    for _ in 0..3 {
        let r = c.get(url).send()?;
        anyhow::ensure!(r.status().is_success(), "{url}: HTTP {}", r.status());
        bytes = r.bytes()?.len();
    }
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        let r = c.get(url).send()?;
        let _ = r.bytes()?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], bytes))
}

fn browser_times(s: &Served, jobs: u64, reps: usize) -> Result<Value> {
    let script = script_path("explorer_paint.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([&s.url, &s.p.some_job.to_string(), &hex::encode(s.p.client)])
        .arg((jobs / 2).to_string())
        .arg(reps.to_string())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Builds and serves both chains, then times every query on each.
pub fn run(o: &Options) -> Result<Report> {
    let build = |blocks: u64, jobs: u64| -> Result<Served> {
        let t0 = Instant::now();
        let per_block = jobs.div_ceil((blocks / 2).max(1)).max(1);
        let p = populate(blocks, jobs, per_block)?;
        eprintln!(
            "built {blocks} blocks with {jobs} jobs in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        serve(p, jobs)
    };
    let small = build(o.small_blocks, o.small_jobs)?;
    let large = build(o.blocks, o.jobs)?;
    let c = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rows = Vec::new();
    for ((name, qs), (_, ql)) in queries(&small).into_iter().zip(queries(&large)) {
        let (ms_small, _) = median_ms(&c, &format!("{}{qs}", small.url), o.reps)?;
        let (ms_large, bytes) = median_ms(&c, &format!("{}{ql}", large.url), o.reps)?;
        rows.push(QueryRow {
            query: name,
            small_ms: ms_small,
            large_ms: ms_large,
            ratio: ms_large / ms_small,
            large_bytes: bytes,
        });
    }
    let browser = if o.browser {
        let reps = o.reps.min(10);
        Some(json!({
            "small": browser_times(&small, o.small_jobs, reps)?,
            "large": browser_times(&large, o.jobs, reps)?,
        }))
    } else {
        None
    };
    Ok(Report {
        small: ChainSize {
            blocks: o.small_blocks,
            jobs: o.small_jobs,
        },
        large: ChainSize {
            blocks: o.blocks,
            jobs: o.jobs,
        },
        queries: rows,
        browser,
    })
}
