//! `deai bench attacks`: flags, and the table or JSON of `deai_bench::attacks`' report.

use crate::output::json_line;
use anyhow::{bail, Result};
use clap::Args;
use deai_bench::attacks::{self, Report, Row};

#[derive(Args)]
pub struct AttacksBench {
    /// Attempts per attack class.
    #[arg(long, default_value_t = 100)]
    attempts: u32,
    /// Print one JSON object per class, then the honest baseline and a summary.
    #[arg(long)]
    json: bool,
}

pub fn bench(b: AttacksBench) -> Result<()> {
    if b.attempts == 0 {
        bail!("--attempts must be at least 1");
    }
    let r = attacks::run(&attacks::Options {
        attempts: b.attempts,
    })?;
    if b.json {
        for row in r.rows.iter().chain([&r.honest]) {
            println!("{}", json_line(row));
        }
        println!(
            "{}",
            json_line(&serde_json::json!({
                "summary": true,
                "classes": r.rows.len(),
                "failing": r.failing,
                "sample_rate_bps": r.sample_rate_bps,
                "collateral_bps": r.collateral_bps,
                "reporter_bps": r.reporter_bps,
            }))
        );
    } else {
        print_table(&r);
    }
    if !r.failing.is_empty() {
        bail!(
            "attacks that paid or hurt honest parties: {}",
            r.failing.join(", ")
        );
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "defaults: sample_rate_bps {}, collateral_bps {}, reporter_bps {}",
        r.sample_rate_bps, r.collateral_bps, r.reporter_bps
    );
    println!(
        "{:<28} {:>8} {:>9} {:>15} {:>11} {:>13}",
        "attack", "attempts", "succeeded", "attacker_profit", "honest_loss", "false_slashes"
    );
    let line = |row: &Row| {
        println!(
            "{:<28} {:>8} {:>9} {:>15} {:>11} {:>13}",
            row.attack,
            row.attempts,
            row.succeeded,
            format!(
                "{}{}",
                row.attacker_profit,
                if row.expected { " (E)" } else { "" }
            ),
            row.honest_loss,
            row.false_slashes
        )
    };
    r.rows.iter().for_each(line);
    line(&r.honest);
    println!("(E): in expectation at the sample rate, from the measured pay and loss of one job");
    for row in r.rows.iter().chain([&r.honest]) {
        println!("  {}: {}", row.attack, row.why);
    }
}
