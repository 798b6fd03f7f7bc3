//! `deai run`, `deai chat` and `deai tokenize`: the local model, without a network.

use crate::{load_engine, proof_cmd, resolve_model, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{GenParams, SamplingParams};
use std::io::{BufRead, Read, Write};

#[derive(Args, Clone)]
struct SampleArgs {
    /// Maximum tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Sampler seed (the sampler is specified, so anyone can replay it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Subtracted once from the logit of every token already in the output (-2..=2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Subtracted from a token's logit per occurrence in the output (-2..=2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// TOKEN=BIAS: add BIAS (-100..=100) to that token id's logit (repeatable).
    #[arg(long, value_name = "TOKEN=BIAS", value_parser = parse_bias, allow_negative_numbers = true)]
    logit_bias: Vec<(u32, f32)>,
    /// Constrain the output to one JSON object (the sampler masks every other token).
    #[arg(long)]
    json_object: bool,
    /// Constrain the output to one value of the JSON Schema in FILE (top level an object; the
    /// supported subset is in `deai_engine::json_schema`), written in a fixed compact layout.
    #[arg(long, value_name = "FILE", conflicts_with = "json_object")]
    json_schema: Option<std::path::PathBuf>,
    /// System message (default: the model's own).
    #[arg(long)]
    system: Option<String>,
}

/// `TOKEN=BIAS` for `--logit-bias`.
fn parse_bias(s: &str) -> std::result::Result<(u32, f32), String> {
    let (t, b) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TOKEN=BIAS, got {s:?}"))?;
    let t = t
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{t:?} is not a token id"))?;
    let b = b
        .trim()
        .parse::<f32>()
        .map_err(|_| format!("{b:?} is not a number"))?;
    Ok((t, b))
}

impl SampleArgs {
    /// The generation parameters, checked before any model is loaded.
    fn checked_params(&self) -> Result<GenParams> {
        if self.max_tokens == 0 {
            bail!("-n/--max-tokens must be at least 1");
        }
        let mut p = self.params();
        if let Some(path) = &self.json_schema {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the JSON Schema {}", path.display()))?;
            let schema: deai_engine::json_schema::Json = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            p.sampling.json_schema = Some(
                deai_engine::json_schema::JsonSchema::compile_object(&schema)
                    .map_err(|e| anyhow::anyhow!("--json-schema {}: {e}", path.display()))?,
            );
        }
        if p.sampling.logit_bias.windows(2).any(|w| w[0].0 == w[1].0) {
            bail!("--logit-bias names a token id twice");
        }
        p.sampling.validate()?;
        Ok(p)
    }

    fn params(&self) -> GenParams {
        GenParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
                // `+ 0.0`: -0 is written as 0 (a receipt has one encoding per value).
                presence_penalty: self.presence_penalty + 0.0,
                frequency_penalty: self.frequency_penalty + 0.0,
                logit_bias: {
                    let mut b: Vec<(u32, f32)> =
                        self.logit_bias.iter().map(|&(t, x)| (t, x + 0.0)).collect();
                    b.sort_by_key(|(t, _)| *t);
                    b
                },
                json_object: self.json_object,
                json_schema: None,
            },
            stop: self.stop.clone(),
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The prompt ("-" reads stdin).
    prompt: String,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object with tokens, text, stop reason and timings instead of streaming.
    #[arg(long)]
    json: bool,
    /// Write a signed receipt (JSON) with an activation proof to this file.
    #[arg(long)]
    receipt: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Args)]
pub struct TokenizeArgs {
    text: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Print {"ids": [...]}.
    #[arg(long)]
    json: bool,
    /// Treat special-token text as plain text.
    #[arg(long)]
    no_special: bool,
}

fn read_prompt(p: &str) -> Result<String> {
    let text = if p == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        String::from_utf8(b).context("stdin is not valid UTF-8")?
    } else {
        p.to_string()
    };
    if text.trim().is_empty() {
        bail!("empty prompt: give some text to respond to");
    }
    Ok(text)
}

fn messages(system: &Option<String>, history: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut v = vec![];
    if let Some(s) = system {
        v.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    v.extend_from_slice(history);
    v
}

pub fn run(a: RunArgs) -> Result<()> {
    let text = read_prompt(&a.prompt)?;
    let params = a.sample.checked_params()?;
    let engine = load_engine(&a.model)?;
    let prompt_text = if a.raw {
        text
    } else {
        let user = ChatMessage {
            role: "user".into(),
            content: text,
        };
        chat_prompt(&messages(&a.sample.system, &[user]), true)
    };
    let ids = engine.model.tokenizer.encode(&prompt_text, !a.raw)?;
    let mut out = std::io::stdout().lock();
    let g = engine.generate(&ids, &params, |ev| {
        if !a.json {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        }
    })?;
    if let Some(path) = &a.receipt {
        proof_cmd::write_receipt(&a.model, &engine, &g, &params, path)?;
    }
    if a.json {
        let j = serde_json::json!({
            "prompt_tokens": g.prompt_tokens,
            "output_tokens": g.output_tokens,
            "text": g.text,
            "stop_reason": g.stop_reason,
            "prefill_ms": g.prefill_ms,
            "decode_ms": g.decode_ms,
            "kernel_profile": engine.profile().display_string(),
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(out)?;
        let n = g.output_tokens.len();
        eprintln!(
            "[{} prompt tokens, {} generated, {:?}; prefill {:.0} ms, decode {:.1} tok/s; profile {}]",
            g.prompt_tokens.len(),
            n,
            g.stop_reason,
            g.prefill_ms,
            n as f64 / (g.decode_ms / 1e3).max(1e-9),
            engine.profile().display_string()
        );
    }
    Ok(())
}

pub fn chat(a: ChatArgs) -> Result<()> {
    let params = a.sample.checked_params()?;
    let engine = load_engine(&a.model)?;
    let mut history: Vec<ChatMessage> = vec![];
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    eprintln!("deai chat — empty line or Ctrl-D to quit");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        history.push(ChatMessage {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        let prompt = chat_prompt(&messages(&a.sample.system, &history), true);
        let ids = engine.model.tokenizer.encode(&prompt, true)?;
        let g = engine.generate(&ids, &params, |ev| {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        })?;
        writeln!(out)?;
        eprintln!(
            "[{} of {} prompt tokens from the prefix cache]",
            g.cached_tokens,
            ids.len()
        );
        history.push(ChatMessage {
            role: "assistant".into(),
            content: g.text,
        });
    }
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let path = resolve_model(a.model.model.as_deref())?;
    let g = deai_engine::gguf::GgufFile::open(&path)?;
    let tok = deai_engine::tokenizer::Tokenizer::from_gguf(&g)?;
    let ids = tok.encode(&a.text, !a.no_special)?;
    if a.json {
        outln!("{}", serde_json::json!({ "ids": ids }))?;
    } else {
        for id in ids {
            let piece =
                String::from_utf8_lossy(&tok.token_bytes(id).unwrap_or_default()).into_owned();
            outln!("{id:>6}  {piece:?}")?;
        }
    }
    Ok(())
}
