//! `deai bench sampler`: flags, and the table or JSON of `deai_bench::sampler`'s report.

use crate::output::json_line;
use crate::{load_engine, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use deai_bench::sampler::{self, Report};

#[derive(Args)]
pub struct SamplerBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens to decode per case (a JSON answer may stop earlier, when its object closes).
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Timed repetitions per case, alternating the cases (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn bench(b: SamplerBench) -> Result<()> {
    if b.gen_tokens == 0 || b.reps == 0 {
        bail!("--gen-tokens and --reps must be at least 1");
    }
    let engine = load_engine(&b.model)?;
    let path = crate::resolve_model(b.model.model.as_deref())?;
    let model_id = deai_models::sha256_file(&path)?;
    let report = sampler::run(
        &engine,
        model_id,
        &sampler::Options {
            gen_tokens: b.gen_tokens,
            reps: b.reps,
        },
    )?;
    if b.json {
        println!("{}", json_line(&report));
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "vocab {}, {}; best of the repetitions, cases alternated",
        r.vocab, r.kernel_profile
    );
    println!(
        "{:<24} {:>6} {:>10} {:>7} {:>10} {:>10} {:>7}",
        "case", "tokens", "decode/s", "ratio", "verify ms", "ms/token", "ratio"
    );
    for c in &r.cases {
        println!(
            "{:<24} {:>6} {:>10.1} {:>6.3}x {:>10.1} {:>10.2} {:>6.3}x",
            c.case,
            c.tokens,
            c.decode_tps,
            c.decode_ratio,
            c.verify_ms,
            c.verify_ms_per_token,
            c.verify_per_token_ratio
        );
    }
}
