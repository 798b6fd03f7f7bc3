//! `deai bench proof`: flags, and the table or JSON lines of `deai_bench::proof`'s report.

use crate::output::json_line;
use crate::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use deai_bench::proof::{self, Report};
use deai_engine::EngineConfig;

#[derive(Args)]
pub struct ProofBench {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cases per tamper class (the target is 50 on the real model).
    #[arg(long, default_value_t = 10)]
    pub cases: usize,
    /// Tokens to generate per run.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// One JSON object per tamper class, then one summary object.
    #[arg(long)]
    pub json: bool,
}

pub fn bench(b: ProofBench) -> Result<()> {
    if b.cases == 0 || b.tokens == 0 {
        bail!("--cases and --tokens must be at least 1");
    }
    let report = proof::run(&proof::Options {
        model: crate::resolve_model(b.model.model.as_deref())?,
        threads: b
            .model
            .threads
            .unwrap_or_else(|| EngineConfig::default().threads),
        cases: b.cases,
        tokens: b.tokens,
    })?;
    if b.json {
        for row in &report.classes {
            println!("{}", json_line(row));
        }
        println!("{}", json_line(&report.summary));
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "{:<30} {:>6} {:>9} {:>8}",
        "tamper class", "cases", "detected", "redrawn"
    );
    for c in &r.classes {
        println!(
            "{:<30} {:>6} {:>9} {:>8}",
            c.class, c.cases, c.detected, c.redrawn
        );
    }
    let s = &r.summary;
    println!("(redrawn: tampers whose claims all turned out true, replaced by another try)");
    println!(
        "honest runs {}, false rejects {}",
        s.honest_runs, s.false_rejects
    );
    println!(
        "proof {:.2} bytes/token, generation overhead {:.3} %",
        s.proof_bytes_per_token, s.proof_overhead_pct
    );
    println!(
        "verify {:.1} ms vs generate {:.1} ms per run: {:.3}x",
        s.verify_ms, s.generate_ms, s.verify_over_generate
    );
}
