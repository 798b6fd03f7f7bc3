//! `deai bench explorer`: flags, and the table or JSON of `deai_bench::explorer`'s report
//! (the explorer's queries on a small and a large chain over HTTP; with `--browser`, page
//! loads in headless Chromium).

use crate::output::json_line;
use anyhow::Result;
use clap::Args;
use deai_bench::explorer::{self, Report};

#[derive(Args)]
pub struct ExplorerBench {
    /// Blocks in the large chain.
    #[arg(long, default_value_t = 100_000)]
    blocks: u64,
    /// Jobs (each with its escrow) in the large chain.
    #[arg(long, default_value_t = 10_000)]
    jobs: u64,
    /// Blocks and jobs in the small chain (the baseline).
    #[arg(long, default_value_t = 1_000)]
    small_blocks: u64,
    #[arg(long, default_value_t = 100)]
    small_jobs: u64,
    /// Timed requests per query (the median is reported).
    #[arg(long, default_value_t = 30)]
    reps: usize,
    /// Also time page loads in headless Chromium (scripts/explorer_paint.py).
    #[arg(long)]
    browser: bool,
    #[arg(long)]
    json: bool,
}

pub fn bench(b: ExplorerBench) -> Result<()> {
    let report = explorer::run(&explorer::Options {
        blocks: b.blocks,
        jobs: b.jobs,
        small_blocks: b.small_blocks,
        small_jobs: b.small_jobs,
        reps: b.reps,
        browser: b.browser,
    })?;
    if b.json {
        println!("{}", json_line(&report));
    } else {
        print_table(&report, b.reps);
    }
    Ok(())
}

fn print_table(r: &Report, reps: usize) {
    println!(
        "explorer queries over HTTP on loopback, median of {} (small: {} blocks / {} jobs; large: {} blocks / {} jobs)",
        reps, r.small.blocks, r.small.jobs, r.large.blocks, r.large.jobs
    );
    println!(
        "{:<28} {:>10} {:>10} {:>7} {:>9}",
        "query", "small ms", "large ms", "ratio", "bytes"
    );
    for q in &r.queries {
        // The byte count has always been printed unpadded.
        println!(
            "{:<28} {:>10.3} {:>10.3} {:>6.2}x {}",
            q.query, q.small_ms, q.large_ms, q.ratio, q.large_bytes
        );
    }
    if let Some(br) = r.browser.as_ref().and_then(|b| b.as_object()) {
        println!("headless Chromium, full page loads, median ms from navigation start:");
        println!(
            "{:<20} {:>10} {:>10} {:>7}",
            "page", "small", "large", "ratio"
        );
        let fcp = |k: &str| br[k]["fcp_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<20} {:>10.0} {:>10.0} {:>6.2}x",
            "first paint",
            fcp("small"),
            fcp("large"),
            fcp("large") / fcp("small")
        );
        if let Some(pages) = br["large"]["pages"].as_object() {
            for (name, v) in pages {
                let s = br["small"]["pages"][name].as_f64().unwrap_or(f64::NAN);
                let l = v.as_f64().unwrap_or(f64::NAN);
                println!("{:<20} {:>10.0} {:>10.0} {:>6.2}x", name, s, l, l / s);
            }
        }
    }
}
