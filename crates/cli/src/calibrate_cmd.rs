//! `deai calibrate`: measure the honest cross-profile gap of the activation check (this
//! engine's committed top-k vs llama.cpp's recomputed hidden states, via llama-cpp-python)
//! next to same-profile controls and dishonest pairs, and derive the cross-profile
//! [`Thresholds`].
//!
//! Rule (also in BENCHMARKS.md): for each statistic, `h` = the worst honest cross-profile
//! chunk; for each dishonest class, `d_c` = its least suspicious run (the minimum over runs
//! of the run's worst chunk: one failing chunk rejects a run). With `d` = the smallest
//! `d_c` above `h`, the threshold is halfway, `h + (d - h) / 2` (equal margin against false
//! rejections and against cheaters); where no class lies above `h` the statistic does not
//! separate and the threshold is `1.5 h` (a margin against false rejections only).
//!
//! It also compares the two profiles' logits at the same positions and derives the sampling
//! replay's cross-profile tolerance ([`deai_proof::verify::LOGIT_TOL`]): 1.5 x the worst
//! change of a logit difference among the candidates within 1 of the max (or of the
//! verifier's gap to the other profile's greedy pick), and reports what that tolerance lets
//! a cheater choose (`cheat_freedom_*`).

use crate::{resolve_model, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use deai_engine::gguf::{requantize, WType};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{Engine, EngineConfig, GenParams, SamplingParams};
use deai_proof::activation::{self, ChunkStats, Thresholds};
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Control,
    Honest,
    Dishonest,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Control => "same-profile control",
            Kind::Honest => "honest cross-profile",
            Kind::Dishonest => "dishonest",
        }
    }
}

struct Class {
    name: &'static str,
    kind: Kind,
    /// Per run: the chunk statistics.
    runs: Vec<Vec<ChunkStats>>,
    /// Runs whose recomputed rows were bit-identical to the committed ones.
    bit_identical: usize,
}

impl Class {
    fn new(name: &'static str, kind: Kind) -> Self {
        Class {
            name,
            kind,
            runs: vec![],
            bit_identical: 0,
        }
    }
    fn chunks(&self) -> impl Iterator<Item = &ChunkStats> {
        self.runs.iter().flatten()
    }
    fn range(&self, f: impl Fn(&ChunkStats) -> f64) -> (f64, f64) {
        self.chunks()
            .map(f)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
    /// (rejected chunks, rejected runs) under `th`.
    fn rejected(&self, th: &Thresholds) -> (usize, usize) {
        let chunks = self.chunks().filter(|s| !s.within(th)).count();
        let runs = self
            .runs
            .iter()
            .filter(|r| r.iter().any(|s| !s.within(th)))
            .count();
        (chunks, runs)
    }
}

fn exp_frac(s: &ChunkStats) -> f64 {
    s.exp_mismatch_frac()
}
fn mean(s: &ChunkStats) -> f64 {
    s.mean_mantissa_diff
}
fn median(s: &ChunkStats) -> f64 {
    s.median_mantissa_diff
}

/// One statistic's derivation: the honest worst chunk, each dishonest class's least
/// suspicious run (the run's worst chunk, since one failing chunk rejects a run), the
/// threshold and whether any class separates.
struct Derived {
    honest_worst: f64,
    dishonest_best: Vec<(&'static str, f64)>,
    threshold: f64,
    separable: bool,
}

fn derive(classes: &[Class], f: fn(&ChunkStats) -> f64) -> Derived {
    let run_max = |r: &Vec<ChunkStats>| r.iter().map(f).fold(0.0f64, f64::max);
    let h = classes
        .iter()
        .filter(|c| c.kind == Kind::Honest)
        .flat_map(|c| c.runs.iter().map(run_max))
        .fold(0.0f64, f64::max);
    let dishonest_best: Vec<(&'static str, f64)> = classes
        .iter()
        .filter(|c| c.kind == Kind::Dishonest)
        .map(|c| {
            (
                c.name,
                c.runs.iter().map(run_max).fold(f64::INFINITY, f64::min),
            )
        })
        .collect();
    let d = dishonest_best
        .iter()
        .map(|x| x.1)
        .filter(|&d| d > h)
        .fold(f64::INFINITY, f64::min);
    let separable = d.is_finite();
    Derived {
        honest_worst: h,
        dishonest_best,
        threshold: if separable {
            h + (d - h) / 2.0
        } else {
            1.5 * h
        },
        separable,
    }
}

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
    let last = crate::run_python_helper(py, HIDDEN_SCRIPT, &input, "llama.cpp hidden states")?;
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
type TopLogits = Vec<(u32, f32)>;

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
    let last = crate::run_python_helper(py, LOGITS_SCRIPT, &input, "llama.cpp logits")?;
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

/// The cross-profile logit comparison behind [`deai_proof::verify::GREEDY_TOL`] and
/// [`deai_proof::verify::LOGIT_TOL`].
#[derive(Default, serde::Serialize)]
struct LogitStats {
    rows: usize,
    /// Rows where llama.cpp's argmax differs from deai's.
    argmax_flips: usize,
    /// Worst gap, in deai's logits, between deai's max and llama.cpp's greedy pick.
    honest_worst_greedy_gap: f64,
    /// Worst width, over rows, of the window holding the shifts `deai_j - llama_j` of the
    /// candidates within 1, 2, 4 and 8 logits of llama.cpp's max, and of all its top 64 (the
    /// premise of `accepts_within`: every pairwise logit difference moves by at most this).
    worst_window_within: [f64; 5],
    /// 1.5 x the worst greedy gap, rounded up to 2 significant digits.
    derived_greedy_tol: f64,
    /// 1.5 x the worst window within 4 logits of the max (candidates carrying all but a
    /// sliver of the mass at T 0.8), rounded up.
    derived_logit_tol: f64,
    /// Honest cross-profile picks checked with the derived tolerances: llama.cpp's greedy
    /// pick, and its seeded pick (T 0.8, top-k 40, top-p 0.95, 4 seeds, from its top 64
    /// logits) verified against deai's logits. Picks that differ from deai's exact pick, and
    /// how many of those the rule would reject (false rejections).
    greedy_picks: usize,
    greedy_flips: usize,
    greedy_false_rejects: usize,
    sampled_picks: usize,
    sampled_flips: usize,
    sampled_false_rejects: usize,
    /// Share of rows where the tolerance lets a cheater pick another token than the exact
    /// pick (greedy with the greedy tolerance; sampled with the sampling one, seed 1).
    cheat_freedom_greedy: f64,
    cheat_freedom_sampled: f64,
}

/// 1.5 x `h`, rounded up to two significant digits.
fn margin_tol(h: f64) -> f64 {
    let x = 1.5 * h;
    if x <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 1);
    (x / scale).ceil() * scale
}

fn logit_stats(deai: &[Vec<f32>], llama: &[TopLogits], vocab: usize) -> Result<LogitStats> {
    use deai_engine::sampler::{accepts_within, argmax, sample};
    let mut st = LogitStats::default();
    for (row, top) in deai.iter().zip(llama) {
        if row.len() != vocab {
            bail!("deai logits row of {} values, expected {vocab}", row.len());
        }
        if top.iter().any(|&(j, _)| j as usize >= vocab) {
            bail!("llama.cpp named a token outside the vocabulary");
        }
        let (a, la) = top[0];
        let d = argmax(row);
        st.rows += 1;
        st.argmax_flips += usize::from(a != d);
        st.honest_worst_greedy_gap = st
            .honest_worst_greedy_gap
            .max((row[d as usize] - row[a as usize]) as f64);
        for (w, worst) in [1.0, 2.0, 4.0, 8.0, f64::INFINITY]
            .iter()
            .zip(&mut st.worst_window_within)
        {
            let shifts = top
                .iter()
                .filter(|&&(_, lj)| (la - lj) as f64 <= *w)
                .map(|&(j, lj)| row[j as usize] as f64 - lj as f64);
            let (lo, hi) = shifts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
            *worst = worst.max(hi - lo);
        }
    }
    st.derived_greedy_tol = margin_tol(st.honest_worst_greedy_gap);
    st.derived_logit_tol = margin_tol(st.worst_window_within[2]);
    let (gtol, stol) = (st.derived_greedy_tol as f32, st.derived_logit_tol as f32);
    let greedy = SamplingParams::default();
    let sampled = |seed| SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed,
        ..Default::default()
    };
    let (mut free_g, mut free_s) = (0usize, 0usize);
    let mut other = vec![f32::NEG_INFINITY; vocab];
    for (pos, (row, top)) in deai.iter().zip(llama).enumerate() {
        let pos = pos as u64;
        // Honest picks of the other profile, checked against deai's logits.
        other.fill(f32::NEG_INFINITY);
        for &(j, lj) in top {
            other[j as usize] = lj;
        }
        let pick = sample(&other, &greedy, pos);
        st.greedy_picks += 1;
        if pick != sample(row, &greedy, pos) {
            st.greedy_flips += 1;
            st.greedy_false_rejects += usize::from(!accepts_within(row, &greedy, pos, pick, gtol));
        }
        for seed in 1..=4 {
            let p = sampled(seed);
            let pick = sample(&other, &p, pos);
            st.sampled_picks += 1;
            if pick != sample(row, &p, pos) {
                st.sampled_flips += 1;
                st.sampled_false_rejects += usize::from(!accepts_within(row, &p, pos, pick, stol));
            }
        }
        // What the tolerances let a cheater choose among deai's 64 best candidates.
        let mut ids: Vec<u32> = (0..row.len() as u32).collect();
        ids.select_nth_unstable_by(63, |x, y| row[*y as usize].total_cmp(&row[*x as usize]));
        ids.truncate(64);
        let free = |p: &SamplingParams, tol: f32| {
            let exact = sample(row, p, pos);
            ids.iter()
                .any(|&t| t != exact && accepts_within(row, p, pos, t, tol))
        };
        free_g += usize::from(free(&greedy, gtol));
        free_s += usize::from(free(&sampled(1), stol));
    }
    st.cheat_freedom_greedy = free_g as f64 / st.rows.max(1) as f64;
    st.cheat_freedom_sampled = free_s as f64 / st.rows.max(1) as f64;
    Ok(st)
}

/// Chunk statistics of the commitment to `committed` rows against `other` rows.
fn stats(committed: &[f32], other: &[f32], d: usize) -> Result<Vec<ChunkStats>> {
    let cfg = deai_proof::ProofConfig::default();
    let proof = activation::build(&[0u8; 32], committed, d, cfg.chunk_size, cfg.top_k)
        .context("building the activation proof")?;
    let per = cfg.chunk_size as usize * d;
    Ok(proof
        .chunks
        .iter()
        .zip(other.chunks(per))
        .map(|(c, rows)| {
            let k = activation::k_for(rows.len() / d, cfg.chunk_size, cfg.top_k);
            activation::chunk_stats(c, rows, k)
        })
        .collect())
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
    crate::helper_script(HIDDEN_SCRIPT)?;
    crate::helper_script(LOGITS_SCRIPT)?;
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
        prefix_cls.runs.push(stats(&honest.rows, &again.rows, d)?);
        // Control: a validator prefill with another thread count.
        let s = seq_of(&honest);
        let pre = threaded.prefill_all(&s.tokens, s.tokens.len() - 1)?;
        let rows = activation::output_rows(&pre.hidden, d, ids.len(), honest.output.len())
            .context("prefill rows")?;
        threads_cls.bit_identical += usize::from(rows == honest.rows.as_slice());
        threads_cls.runs.push(stats(&honest.rows, rows, d)?);

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
        honest_cls.runs.push(stats(&r.rows, o, d)?);
    }
    let mut classes = vec![prefix_cls, threads_cls, honest_cls];
    for name in dishonest_names {
        classes.push(Class::new(name, Kind::Dishonest));
    }
    for ((ci, r), o) in cheats.iter().zip(&other[honest_runs.len()..]) {
        classes[3 + ci].runs.push(stats(&r.rows, o, d)?);
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
    let lstats = logit_stats(&deai_rows, &llama_rows, vocab)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_rounds_up_to_two_digits() {
        assert_eq!(margin_tol(0.0), 0.0);
        assert!((margin_tol(0.6406) - 0.97).abs() < 1e-9);
        assert!((margin_tol(0.02) - 0.03).abs() < 1e-9);
        assert!(margin_tol(0.2865) >= 1.5 * 0.2865);
    }

    #[test]
    fn logit_stats_measure_shift_windows_and_check_honest_picks() {
        let vocab = 70;
        // Row 0: deai prefers token 1 by 0.2, llama.cpp token 2 by 0.1 (a flip; shifts 3-7.0
        // = -4.0 and 2.8-7.1 = -4.3: a window of 0.3). Row 1: llama.cpp's logits are deai's
        // plus 5 (no window at all).
        let mut r0 = vec![-10.0f32; vocab];
        r0[1] = 3.0;
        r0[2] = 2.8;
        let mut r1 = vec![-10.0f32; vocab];
        r1[4] = 1.0;
        r1[5] = 0.5;
        let l0 = vec![(2, 7.1), (1, 7.0)];
        let l1 = vec![(4, 6.0), (5, 5.5)];
        let st = logit_stats(&[r0, r1], &[l0, l1], vocab).unwrap();
        assert_eq!(st.rows, 2);
        assert_eq!(st.argmax_flips, 1);
        assert!((st.honest_worst_greedy_gap - 0.2).abs() < 1e-5);
        assert!(
            (st.worst_window_within[0] - 0.3).abs() < 1e-5,
            "{:?}",
            st.worst_window_within
        );
        assert!(
            (st.derived_greedy_tol - 0.3).abs() < 0.011,
            "{}",
            st.derived_greedy_tol
        );
        assert!(
            (st.derived_logit_tol - 0.45).abs() < 0.011,
            "{}",
            st.derived_logit_tol
        );
        // llama.cpp's greedy pick in row 0 differs from deai's and is within the tolerance.
        assert_eq!(
            (st.greedy_picks, st.greedy_flips, st.greedy_false_rejects),
            (2, 1, 0)
        );
        assert_eq!(st.sampled_picks, 8);
        // Row 0's runner-up (0.2 below) is a free choice for a greedy cheater; row 1's (0.5
        // below) is not.
        assert!((st.cheat_freedom_greedy - 0.5).abs() < 1e-9);
        // Bad shapes are errors.
        assert!(logit_stats(&[vec![0.0; 3]], &[vec![(0, 0.0)]], vocab).is_err());
        assert!(logit_stats(&[vec![0.0; vocab]], &[vec![(999, 0.0)]], vocab).is_err());
    }
}
