//! `deai calibrate`: measure the honest cross-profile gap of the activation check (this
//! engine's committed top-k vs llama.cpp's recomputed hidden states, via llama-cpp-python)
//! next to same-profile controls and dishonest pairs, and derive the cross-profile
//! [`Thresholds`].
//!
//! The rules that turn these measurements into thresholds and tolerances live in
//! [`deai_proof::calibrate`], beside the [`Thresholds`] they derive; this command runs the
//! engines and llama.cpp, feeds the rules, and prints.

use crate::{resolve_model, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use deai_engine::gguf::{requantize, WType};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, EngineConfig, GenParams, SamplingParams};
use deai_proof::activation::{self, Thresholds};
use deai_proof::calibrate::{
    chunk_stats_against, derive, exp_frac, logit_stats, mean, median, Class, Derived, Kind,
    TopLogits,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Python with llama-cpp-python and numpy installed (scripts/bench-engine.sh makes
    /// .venv/bin/python).
    #[arg(long, default_value = "python3")]
    pub baseline_python: PathBuf,
    /// Number of prompts (from a fixed list of varied chat prompts).
    #[arg(long, default_value_t = 20)]
    pub prompts: usize,
    /// Tokens to generate per prompt (greedy).
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// One JSON object per pair class, then one with the derived thresholds.
    #[arg(long)]
    pub json: bool,
}

const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face.";

const PROMPTS: [&str; 32] = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea.",
    "Explain photosynthesis to a ten-year-old.",
    "List three tips for learning a new language.",
    "What is 17 times 23? Show your work.",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "Give me a recipe for pancakes.",
    "Summarize the plot of Romeo and Juliet.",
    "What are the main causes of climate change?",
    "Translate 'good morning, how are you?' into Spanish.",
    "Describe a cat to someone who has never seen one.",
    "How do vaccines work?",
    "Write a haiku about autumn leaves.",
    "What is the difference between a virus and a bacterium?",
    "Suggest a name for a coffee shop and explain why.",
    "How does a bicycle stay upright?",
    "Write a polite email declining a meeting invitation.",
    "What is machine learning?",
    "Tell me a fun fact about octopuses.",
    "How do I boil an egg?",
    "What happened during the French Revolution?",
    "Explain what a prime number is, with examples.",
    "Write a story opening about a lost robot.",
    "What are the planets of the solar system?",
    "Give three arguments for reading books.",
    "How does the internet work, briefly?",
    "What should I pack for a weekend hiking trip?",
    "Explain gravity in two sentences.",
    "Write a limerick about a programmer.",
    "What is the tallest mountain on Earth?",
    "Why do we dream?",
];

fn check_python(py: &Path) -> Result<()> {
    let hint = "install it with `bash scripts/bench-engine.sh` (creates .venv with \
                llama-cpp-python==0.3.36 and numpy) or `python3 -m venv .venv && \
                .venv/bin/pip install llama-cpp-python==0.3.36 numpy`, then pass \
                --baseline-python .venv/bin/python";
    let out = Command::new(py)
        .args(["-c", "import llama_cpp, numpy"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "llama-cpp-python is not importable by {} ({}); {hint}",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no error message")
                .trim()
        ),
        Err(e) => bail!(
            "llama-cpp-python is not importable: cannot run {} ({e}); {hint}",
            py.display()
        ),
    }
}

/// One sequence for llama.cpp: its rows `from .. from + n`.
struct Seq {
    tokens: Vec<u32>,
    from: usize,
    n: usize,
}

#[derive(serde::Deserialize)]
struct HiddenOut {
    version: String,
    n_embd: usize,
    rows: Vec<String>,
}

const HIDDEN_SCRIPT: &str = "llamacpp_hidden.py";
const LOGITS_SCRIPT: &str = "llamacpp_logits.py";
/// llama.cpp logits compared per position: its `LOGITS_TOP` largest.
const LOGITS_TOP: usize = 64;

fn llamacpp_hidden(
    py: &Path,
    model: &Path,
    threads: usize,
    seqs: &[Seq],
) -> Result<(String, Vec<Vec<f32>>)> {
    let input = json!({
        "model": model,
        "threads": threads,
        "seqs": seqs.iter().map(|s| json!({"tokens": s.tokens, "from": s.from, "n": s.n}))
            .collect::<Vec<_>>(),
    });
    let last = deai_bench::scripts::run_python_helper(
        py,
        HIDDEN_SCRIPT,
        &input,
        "llama.cpp hidden states",
    )?;
    let last = last.as_str();
    let h: HiddenOut = serde_json::from_str(last).context("parsing the llama.cpp helper output")?;
    if h.rows.len() != seqs.len() {
        bail!(
            "llama.cpp returned {} sequences, expected {}",
            h.rows.len(),
            seqs.len()
        );
    }
    let mut rows = vec![];
    for (s, hexrows) in seqs.iter().zip(&h.rows) {
        let b = hex::decode(hexrows).context("llama.cpp rows are not hex")?;
        if b.len() != s.n * h.n_embd * 4 {
            bail!(
                "llama.cpp returned {} bytes, expected {}",
                b.len(),
                s.n * h.n_embd * 4
            );
        }
        rows.push(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    Ok((h.version, rows))
}

/// One position's largest logits as (id, logit), descending.

#[derive(serde::Deserialize)]
struct LogitsOut {
    n_vocab: usize,
    /// Per sequence, per row.
    rows: Vec<Vec<TopLogits>>,
}

fn llamacpp_logits(
    py: &Path,
    model: &Path,
    threads: usize,
    seqs: &[Seq],
) -> Result<(usize, Vec<Vec<TopLogits>>)> {
    let input = json!({
        "model": model,
        "threads": threads,
        "top": LOGITS_TOP,
        "seqs": seqs.iter().map(|s| json!({"tokens": s.tokens, "from": s.from, "n": s.n}))
            .collect::<Vec<_>>(),
    });
    let last =
        deai_bench::scripts::run_python_helper(py, LOGITS_SCRIPT, &input, "llama.cpp logits")?;
    let out: LogitsOut =
        serde_json::from_str(&last).context("parsing the llama.cpp logits helper output")?;
    if out.rows.len() != seqs.len() || out.rows.iter().zip(seqs).any(|(r, s)| r.len() != s.n) {
        bail!("llama.cpp returned logits for the wrong number of sequences or rows");
    }
    if out.rows.iter().flatten().any(|row| row.is_empty()) {
        bail!("llama.cpp returned an empty logits row");
    }
    Ok((out.n_vocab, out.rows))
}

fn other_token(t: u32) -> u32 {
    if t > 3 {
        t - 1
    } else {
        t + 1
    }
}

/// A committed run: prompt, output and the output rows it committed to.
struct Run {
    prompt: Vec<u32>,
    output: Vec<u32>,
    rows: Vec<f32>,
}

fn committed(e: &Engine, claimed_prompt: &[u32], run_prompt: &[u32], n: usize) -> Result<Run> {
    let params = GenParams {
        max_tokens: n,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let g = e.generate(run_prompt, &params, |_| {})?;
    let d = e.model.cfg.d_model;
    let rows = activation::output_rows(&g.hidden, d, run_prompt.len(), g.output_tokens.len())
        .context("hidden states do not cover the output")?
        .to_vec();
    Ok(Run {
        prompt: claimed_prompt.to_vec(),
        output: g.output_tokens,
        rows,
    })
}

/// The verifier's sequence: claimed prompt + output (all but the last token).
fn seq_of(r: &Run) -> Seq {
    let mut tokens = r.prompt.clone();
    tokens.extend_from_slice(&r.output[..r.output.len() - 1]);
    Seq {
        tokens,
        from: r.prompt.len() - 1,
        n: r.output.len(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    if a.prompts == 0 || a.prompts > PROMPTS.len() {
        bail!("--prompts must be between 1 and {}", PROMPTS.len());
    }
    if a.tokens < 2 {
        bail!("--tokens must be at least 2");
    }
    if a.model.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    check_python(&a.baseline_python)?;
    deai_bench::scripts::helper_script(HIDDEN_SCRIPT)?;
    deai_bench::scripts::helper_script(LOGITS_SCRIPT)?;
    let path = resolve_model(a.model.model.as_deref())?;
    let threads = a
        .model
        .threads
        .unwrap_or_else(|| EngineConfig::default().threads);
    let engine_with = crate::engine_at;
    let worker = engine_with(&path, threads, 0)?;
    let cached = engine_with(&path, threads, 64 << 20)?;
    let other_threads = if threads == 1 { 2 } else { 1 };
    let threaded = engine_with(&path, other_threads, 0)?;
    let dir = deai_models::default_home()
        .join("tmp")
        .join(format!("calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let q8 = dir.join("requantized-q8_0.gguf");
    // The different-model proxy: the same weights re-quantized to the coarser Q4_0.
    let q4 = dir.join("requantized-q4_0.gguf");
    requantize(&path, &q8, WType::Q8_0)?;
    requantize(&path, &q4, WType::Q4_0)?;
    let q8e = engine_with(&q8, threads, 0)?;
    let q4e = engine_with(&q4, threads, 0)?;
    let _ = std::fs::remove_file(&q8);
    let _ = std::fs::remove_file(&q4);
    let _ = std::fs::remove_dir(&dir);
    let d = worker.model.cfg.d_model;
    let tok = &worker.model.tokenizer;

    let mut prefix_cls = Class::new("prefix_cache_on_off", Kind::Control);
    let mut threads_cls = Class::new("threads_1_vs_2", Kind::Control);
    let mut honest_runs: Vec<Run> = vec![];
    // Dishonest runs: (class index, run).
    let mut cheats: Vec<(usize, Run)> = vec![];
    let dishonest_names = [
        "prompt_system_token_changed",
        "weights_requantized_q8_0",
        "weights_requantized_q4_0",
    ];
    for (i, user) in PROMPTS.iter().take(a.prompts).enumerate() {
        if !a.json {
            eprint!("\rprompt {}/{}", i + 1, a.prompts);
        }
        let msgs = [
            ChatMessage {
                role: "system".into(),
                content: SYSTEM.into(),
            },
            ChatMessage {
                role: "user".into(),
                content: (*user).into(),
            },
        ];
        let ids = tok.encode(&chat_prompt(&msgs, true), true)?;
        // `<|im_start|> system \n You are ...`: change a token inside the system text.
        let mut changed = ids.clone();
        changed[4] = other_token(changed[4]);

        let honest = committed(&worker, &ids, &ids, a.tokens)?;
        // Control: the prefix-cached engine (second run reuses the cached prompt).
        committed(&cached, &ids, &ids, a.tokens)?;
        let again = committed(&cached, &ids, &ids, a.tokens)?;
        prefix_cls.bit_identical += usize::from(again.rows == honest.rows);
        prefix_cls
            .runs
            .push(chunk_stats_against(&honest.rows, &again.rows, d).map_err(anyhow::Error::msg)?);
        // Control: a validator prefill with another thread count.
        let s = seq_of(&honest);
        let pre = threaded.prefill_all(&s.tokens, s.tokens.len() - 1)?;
        let rows = activation::output_rows(&pre.hidden, d, ids.len(), honest.output.len())
            .context("prefill rows")?;
        threads_cls.bit_identical += usize::from(rows == honest.rows.as_slice());
        threads_cls
            .runs
            .push(chunk_stats_against(&honest.rows, rows, d).map_err(anyhow::Error::msg)?);

        cheats.push((0, committed(&worker, &ids, &changed, a.tokens)?));
        cheats.push((1, committed(&q8e, &ids, &ids, a.tokens)?));
        cheats.push((2, committed(&q4e, &ids, &ids, a.tokens)?));
        honest_runs.push(honest);
    }
    if !a.json {
        eprintln!(
            "\rllama.cpp prefill of {} sequences...",
            honest_runs.len() + cheats.len()
        );
    }
    let seqs: Vec<Seq> = honest_runs
        .iter()
        .chain(cheats.iter().map(|(_, r)| r))
        .map(seq_of)
        .collect();
    let (version, other) = llamacpp_hidden(&a.baseline_python, &path, threads, &seqs)?;

    // Sanity: llama.cpp's rows are the same quantity (post-norm LM-head input).
    let (mut min_cos, mut sum_cos, mut nrows) = (f64::INFINITY, 0.0, 0usize);
    let mut honest_cls = Class::new("llamacpp_vs_deai", Kind::Honest);
    for (r, o) in honest_runs.iter().zip(&other) {
        for (x, y) in r.rows.chunks(d).zip(o.chunks(d)) {
            let c = cosine(x, y);
            min_cos = min_cos.min(c);
            sum_cos += c;
            nrows += 1;
        }
        honest_cls.bit_identical += usize::from(&r.rows == o);
        honest_cls
            .runs
            .push(chunk_stats_against(&r.rows, o, d).map_err(anyhow::Error::msg)?);
    }
    let mut classes = vec![prefix_cls, threads_cls, honest_cls];
    for name in dishonest_names {
        classes.push(Class::new(name, Kind::Dishonest));
    }
    for ((ci, r), o) in cheats.iter().zip(&other[honest_runs.len()..]) {
        classes[3 + ci]
            .runs
            .push(chunk_stats_against(&r.rows, o, d).map_err(anyhow::Error::msg)?);
    }
    let mean_cos = sum_cos / nrows.max(1) as f64;

    let de = derive(&classes, exp_frac);
    let dm = derive(&classes, mean);
    let dd = derive(&classes, median);
    let derived = Thresholds {
        max_exp_mismatch_frac: de.threshold,
        max_mean_mantissa_diff: dm.threshold,
        max_median_mantissa_diff: dd.threshold,
    };
    let current = Thresholds::default();
    let topl = Thresholds::toploc();

    // Logits: deai's validator prefill vs llama.cpp's, over the honest runs.
    if !a.json {
        eprintln!("llama.cpp logits of {} sequences...", honest_runs.len());
    }
    let honest_seqs = &seqs[..honest_runs.len()];
    let (llama_vocab, llama_logits) =
        llamacpp_logits(&a.baseline_python, &path, threads, honest_seqs)?;
    let vocab = worker.model.cfg.vocab;
    if llama_vocab != vocab {
        bail!("llama.cpp reads a vocabulary of {llama_vocab} tokens, deai {vocab}");
    }
    let (mut deai_rows, mut llama_rows) = (vec![], vec![]);
    for (s, top) in honest_seqs.iter().zip(&llama_logits) {
        let out = worker.prefill_all(&s.tokens, s.from)?;
        if out.logits.len() != s.n * vocab {
            bail!(
                "deai prefill returned {} logits, expected {}",
                out.logits.len(),
                s.n * vocab
            );
        }
        deai_rows.extend(out.logits.chunks(vocab).map(<[f32]>::to_vec));
        llama_rows.extend(top.iter().cloned());
    }
    let lstats = logit_stats(&deai_rows, &llama_rows, vocab).map_err(anyhow::Error::msg)?;
    let current_tol = deai_proof::verify::LOGIT_TOL;
    // Separable as a whole: every honest run accepted and every dishonest run rejected by
    // the derived thresholds.
    let honest_ok = classes
        .iter()
        .filter(|c| c.kind != Kind::Dishonest)
        .all(|c| c.rejected(&derived).1 == 0);
    let cheats_caught = classes
        .iter()
        .filter(|c| c.kind == Kind::Dishonest)
        .all(|c| c.rejected(&derived).1 == c.runs.len());
    let separable = honest_ok && cheats_caught;

    if a.json {
        for c in &classes {
            let (el, eh) = c.range(exp_frac);
            let (ml, mh) = c.range(mean);
            let (dl, dh) = c.range(median);
            let (tc, tr) = c.rejected(&topl);
            let (cc, cr) = c.rejected(&current);
            let (dc, dr) = c.rejected(&derived);
            println!(
                "{}",
                json!({
                    "class": c.name, "kind": c.kind.name(), "runs": c.runs.len(),
                    "chunks": c.chunks().count(), "bit_identical_runs": c.bit_identical,
                    "exp_mismatch_frac": {"min": el, "max": eh},
                    "mean_mantissa_diff": {"min": ml, "max": mh},
                    "median_mantissa_diff": {"min": dl, "max": dh},
                    "rejected_toploc": {"chunks": tc, "runs": tr},
                    "rejected_current_default": {"chunks": cc, "runs": cr},
                    "rejected_derived": {"chunks": dc, "runs": dr},
                })
            );
        }
        let stat = |x: &Derived| {
            let best: serde_json::Map<String, serde_json::Value> = x
                .dishonest_best
                .iter()
                .map(|(n, v)| (n.to_string(), json!(v)))
                .collect();
            json!({"honest_worst": x.honest_worst, "dishonest_best_run": best,
                   "threshold": x.threshold, "separates_some_class": x.separable})
        };
        println!(
            "{}",
            json!({
                "thresholds": derived,
                "current_default": current,
                "separable": separable,
                "derivation": {
                    "exp_mismatch_frac": stat(&de),
                    "mean_mantissa_diff": stat(&dm),
                    "median_mantissa_diff": stat(&dd),
                },
                "rule": "per statistic: h = worst honest cross-profile chunk, d = smallest least-suspicious-run value of a dishonest class above h; threshold h + (d - h) / 2, or 1.5 h where no class lies above h",
                "prompts": a.prompts, "tokens": a.tokens, "threads": threads,
                "baseline": format!("llama-cpp-python {version}"),
                "llamacpp_cosine": {"min": min_cos, "mean": mean_cos, "rows": nrows},
                "logits": lstats,
                "logit_tol_current_default": current_tol,
                "greedy_tol_current_default": deai_proof::verify::GREEDY_TOL,
                "logit_rule": "greedy_tol = 1.5 x the worst verifier gap to the other profile's greedy pick; logit_tol = 1.5 x the worst window of logit shifts among the candidates within 4 logits of the max; both rounded up to 2 significant digits",
                "kernel_profile": worker.profile().display_string(),
            })
        );
        return Ok(());
    }
    println!(
        "{} prompts x {} greedy tokens, {threads} threads; other profile: llama-cpp-python {version}",
        a.prompts, a.tokens
    );
    println!(
        "llama.cpp vs deai hidden rows (post-norm): cosine min {min_cos:.4}, mean {mean_cos:.4} over {nrows} rows"
    );
    println!(
        "{:<28} {:<21} {:>4} {:>6} {:>5} | {:>13} {:>13} {:>11} | {:>7} {:>7} {:>7}",
        "class",
        "kind",
        "runs",
        "chunks",
        "exact",
        "exp-mism frac",
        "mant mean",
        "mant median",
        "TOPLOC",
        "current",
        "derived"
    );
    for c in &classes {
        let (el, eh) = c.range(exp_frac);
        let (ml, mh) = c.range(mean);
        let (dl, dh) = c.range(median);
        let rej = |th: &Thresholds| {
            let (_, r) = c.rejected(th);
            format!("{r}/{}", c.runs.len())
        };
        println!(
            "{:<28} {:<21} {:>4} {:>6} {:>5} | {:>6.3}-{:<6.3} {:>6.2}-{:<6.2} {:>4}-{:<6} | {:>7} {:>7} {:>7}",
            c.name,
            c.kind.name(),
            c.runs.len(),
            c.chunks().count(),
            c.bit_identical,
            el,
            eh,
            ml,
            mh,
            dl,
            dh,
            rej(&topl),
            rej(&current),
            rej(&derived)
        );
    }
    println!("(exp-mism frac, mant mean/median: min-max over chunks; TOPLOC/current/derived: runs rejected)");
    for (name, x) in [
        ("exp mismatch frac", &de),
        ("mantissa mean", &dm),
        ("mantissa median", &dd),
    ] {
        let best: Vec<String> = x
            .dishonest_best
            .iter()
            .map(|(n, v)| format!("{n} {v:.3}"))
            .collect();
        println!(
            "{name:<18} honest worst {:.3}; least suspicious dishonest run: {} -> threshold {:.3} ({})",
            x.honest_worst,
            best.join(", "),
            x.threshold,
            if x.separable {
                "halfway to the nearest class above the honest worst"
            } else {
                "no class above the honest worst: 1.5 x honest worst"
            }
        );
    }
    println!(
        "logits over {} rows: llama.cpp's argmax differs from deai's in {}; worst verifier gap to llama.cpp's greedy pick {:.4} -> greedy tolerance {} (current {}); worst window of logit shifts within 1/2/4/8 of the max and over the top 64: {:.4?} -> sampling tolerance {} (current {}); honest llama.cpp picks that differ from deai's: greedy {}/{} ({} falsely rejected), sampled {}/{} ({} falsely rejected); a cheater could choose another token at {:.1} % of greedy and {:.1} % of sampled positions",
        lstats.rows,
        lstats.argmax_flips,
        lstats.honest_worst_greedy_gap,
        lstats.derived_greedy_tol,
        deai_proof::verify::GREEDY_TOL,
        lstats.worst_window_within,
        lstats.derived_logit_tol,
        current_tol,
        lstats.greedy_flips,
        lstats.greedy_picks,
        lstats.greedy_false_rejects,
        lstats.sampled_flips,
        lstats.sampled_picks,
        lstats.sampled_false_rejects,
        100.0 * lstats.cheat_freedom_greedy,
        100.0 * lstats.cheat_freedom_sampled
    );
    println!(
        "derived thresholds {} honest from dishonest runs on this data (current default: exp {:.3}, mean {}, median {})",
        if separable { "SEPARATE" } else { "do NOT separate" },
        current.max_exp_mismatch_frac,
        current.max_mean_mantissa_diff,
        current.max_median_mantissa_diff
    );
    Ok(())
}
