//! The engine a node runs: a model, its own thread pool, a prefix cache, and the generation
//! loop (prefill, then decode with the seeded sampler, streaming, stop tokens/strings).

use crate::error::{EngineError, Result};
use crate::kv::{KvCache, PrefixCache, PrefixHit};
use crate::model::{ForwardOut, Model};
use crate::profile::KernelProfile;
use crate::sampler::{self, SamplingParams};
use crate::sched::{Gate, Interactive, Turn, YieldStats, BACKGROUND_CHUNK};
use crate::tokenizer::Tokenizer;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound on kernel threads (far above any core count this engine targets).
pub const MAX_THREADS: usize = 256;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Worker threads for the kernels. Default: the cores available to this process; more
    /// than that would oversubscribe.
    pub threads: usize,
    /// Byte budget of the prefix cache (0 disables it).
    pub prefix_cache_bytes: usize,
    /// Use the portable kernels even where AVX2 is available (same bits, slower).
    pub force_portable: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefix_cache_bytes: 64 << 20,
            force_portable: false,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token (EOS, `<|im_end|>`...) was sampled; it is the last output token.
    Eos,
    /// The decoded text reached one of the stop strings.
    StopString,
    /// `max_tokens` tokens were produced.
    MaxTokens,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GenParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    #[serde(default)]
    pub stop: Vec<String>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: vec![],
        }
    }
}

/// The result of one generation.
#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    /// Sampled tokens, including a final stop token if one ended the run.
    pub output_tokens: Vec<u32>,
    /// Text of the output, without the stop token and cut before any stop string.
    pub text: String,
    pub stop_reason: StopReason,
    /// Post-final-norm hidden states of every position fed to the model (prompt, then every
    /// output token except the last), `rows x d_model`. Row `i` produced the logits that chose
    /// token `i + 1` of prompt+output.
    pub hidden: Vec<f32>,
    /// Positions served from the prefix cache.
    pub cached_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// A piece of streamed output.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    pub token: u32,
    /// Text that became final with this token (may be empty while a UTF-8 sequence or a
    /// possible stop string is incomplete). The pieces of one run concatenate to its `text`.
    pub text: &'a str,
    /// This token's log-probabilities, when the caller asked for them
    /// ([`Engine::generate_with_logprobs`]); never for a stop token, which is not text.
    pub logprobs: Option<sampler::TokenLogprobs>,
}

pub struct Engine {
    pub model: Model,
    pool: rayon::ThreadPool,
    prefix: Mutex<PrefixCache>,
    threads: usize,
    simd: bool,
    /// Shared with the engines made by [`Engine::sharing_gate`]: background work on any of
    /// them yields to generation on all of them.
    gate: Arc<Gate>,
}

impl Engine {
    pub fn load(path: &Path, cfg: EngineConfig) -> Result<Self> {
        Self::new(Model::load(path)?, cfg)
    }

    pub fn new(model: Model, cfg: EngineConfig) -> Result<Self> {
        let threads = cfg.threads.max(1);
        if threads > MAX_THREADS {
            return Err(EngineError::InvalidParam(format!(
                "{threads} threads requested; at most {MAX_THREADS} (more than the cores \
                 available only oversubscribes them)"
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("deai-kernel-{i}"))
            .build()
            .map_err(|e| EngineError::InvalidParam(format!("thread pool: {e}")))?;
        Ok(Engine {
            model,
            pool,
            prefix: Mutex::new(PrefixCache::new(cfg.prefix_cache_bytes)),
            threads,
            simd: !cfg.force_portable && crate::kernels::simd_available(),
            gate: Arc::default(),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// This engine, with its own kernel threads, but scheduling its background work
    /// ([`Engine::prefill_all_background`]) on `other`'s gate: a validator's engine that
    /// yields to the generation of a worker's engine on the same machine. Two pools let
    /// [`Engine::kernel_cpu_time`] tell the two roles' compute apart.
    pub fn sharing_gate(mut self, other: &Engine) -> Self {
        self.gate = other.gate.clone();
        self
    }

    /// The CPU time this engine's kernel threads have used since they started (their
    /// scheduler-accounted run time, read from Linux's `/proc/thread-self`), or `None` where
    /// that is not available. Work outside the kernels (sampling, proofs, I/O) is not in it.
    pub fn kernel_cpu_time(&self) -> Option<Duration> {
        self.pool
            .broadcast(|_| crate::sched::thread_cpu_time())
            .into_iter()
            .sum()
    }

    pub fn profile(&self) -> KernelProfile {
        let mut p = KernelProfile::current();
        if !self.simd {
            p.cpu_features = "portable".into();
        }
        p
    }

    /// A fresh cache able to hold `tokens` positions (bounded by the model's context).
    pub fn new_cache(&self, tokens: usize) -> Result<KvCache> {
        let c = &self.model.cfg;
        if tokens > c.n_ctx {
            return Err(EngineError::ContextOverflow {
                needed: tokens,
                n_ctx: c.n_ctx,
            });
        }
        Ok(KvCache::new(c.n_layer, c.kv_dim(), tokens))
    }

    /// One forward pass on this engine's pool.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<ForwardOut> {
        self.pool
            .install(|| self.model.forward_on(tokens, cache, logits_from, self.simd))
    }

    /// Validator path: one prefill over `tokens` (no prefix cache), hidden states for every
    /// position and logits for positions `logits_from..`.
    pub fn prefill_all(&self, tokens: &[u32], logits_from: usize) -> Result<ForwardOut> {
        let mut cache = self.new_cache(tokens.len())?;
        self.forward(tokens, &mut cache, logits_from)
    }

    /// [`Engine::prefill_all`] as background work: the same positions, computed in chunks of
    /// [`BACKGROUND_CHUNK`] tokens, each started only once no interactive work (generation)
    /// runs on this engine, or once `patience` has passed since the call (then it no longer
    /// waits). The result is bit-identical to `prefill_all`.
    pub fn prefill_all_background(
        &self,
        tokens: &[u32],
        logits_from: usize,
        patience: Duration,
    ) -> Result<ForwardOut> {
        Ok(self
            .background_prefill(tokens, logits_from, patience, false)?
            .0)
    }

    /// [`Engine::prefill_all_background`] that takes positions before `logits_from` from the
    /// prefix cache where it holds them (their KV and hidden states, bit-identical to
    /// computing them: the kernel profile's guarantee), and remembers the whole sequence for
    /// the next prefill or generation that shares its prefix. A validator re-running many
    /// answers to one system prompt, or the turns of one conversation, computes each prefix
    /// once. Positions from `logits_from` on (whose hidden states a proof of verification
    /// digests) are always computed by this call. Returns the result and how many positions
    /// came from the cache.
    pub fn prefill_all_background_cached(
        &self,
        tokens: &[u32],
        logits_from: usize,
        patience: Duration,
    ) -> Result<(ForwardOut, usize)> {
        self.background_prefill(tokens, logits_from, patience, true)
    }

    fn background_prefill(
        &self,
        tokens: &[u32],
        logits_from: usize,
        patience: Duration,
        reuse: bool,
    ) -> Result<(ForwardOut, usize)> {
        let mut cache = self.new_cache(tokens.len())?;
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let deadline = crate::sched::deadline_after(patience);
        let mut patient = true;
        let d = self.model.cfg.d_model;
        let logits_from = logits_from.min(tokens.len());
        let hit = if reuse {
            let mut pc = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
            pc.lookup(tokens, logits_from, d, &mut cache)
        } else {
            PrefixHit::default()
        };
        let mut hidden = Vec::with_capacity(tokens.len() * d);
        hidden.extend_from_slice(&hit.hidden);
        let mut logits = Vec::new();
        for (i, chunk) in tokens[hit.len..].chunks(BACKGROUND_CHUNK).enumerate() {
            let start = hit.len + i * BACKGROUND_CHUNK;
            let from = logits_from.saturating_sub(start).min(chunk.len());
            let (idle, out) = self.gate.background(patient.then_some(deadline), || {
                self.forward(chunk, &mut cache, from)
            });
            patient &= idle;
            let out = out?;
            hidden.extend_from_slice(&out.hidden);
            logits.extend_from_slice(&out.logits);
        }
        if reuse {
            self.prefix
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tokens, &cache, &hidden);
        }
        Ok((
            ForwardOut {
                hidden,
                logits,
                logits_from,
            },
            hit.len,
        ))
    }

    /// A background turn on this engine that waits for idleness until `deadline` (None: at
    /// once) and holds off other background work until it drops ([`crate::sched::Gate::turn`]).
    pub fn background_turn(&self, deadline: Option<Instant>) -> Turn<'_> {
        self.gate.turn(deadline)
    }

    /// Marks interactive work (generation does this itself) until the guard drops: background
    /// prefills wait for it.
    pub fn interactive(&self) -> Interactive<'_> {
        self.gate.interactive()
    }

    /// How long background prefills have waited for interactive work on this engine's gate
    /// (shared by every engine made with [`Engine::sharing_gate`]: the counts are theirs too).
    pub fn yield_stats(&self) -> YieldStats {
        self.gate.stats()
    }

    pub fn prefix_cache_stats(&self) -> (u64, u64, usize) {
        let p = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
        let (h, t) = p.stats();
        (h, t, p.used_bytes())
    }

    /// Generate from `prompt` (token ids), calling `on_token` for each sampled token.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenParams,
        on_token: impl FnMut(&TokenEvent),
    ) -> Result<Generation> {
        self.generate_with_logprobs(prompt, params, None, on_token)
    }

    /// [`Engine::generate`] that also reports each output token's log-probability and, with
    /// `Some(k)`, the `k` most likely tokens at its position (`k <= 20`;
    /// [`sampler::logprobs`]). `None` skips the work. The tokens are the same either way.
    pub fn generate_with_logprobs(
        &self,
        prompt: &[u32],
        params: &GenParams,
        top_logprobs: Option<usize>,
        mut on_token: impl FnMut(&TokenEvent),
    ) -> Result<Generation> {
        self.generate_cancellable(prompt, params, top_logprobs, |ev| {
            on_token(ev);
            ControlFlow::Continue(())
        })
    }

    /// [`Engine::generate_with_logprobs`] whose caller may stop the run: when `on_token`
    /// returns `ControlFlow::Break(())`, no further token is computed and the run fails with
    /// [`EngineError::Cancelled`] (a cancelled run has no [`Generation`], so nothing can sign
    /// it). A run that is never cancelled produces exactly the tokens of the others.
    pub fn generate_cancellable(
        &self,
        prompt: &[u32],
        params: &GenParams,
        top_logprobs: Option<usize>,
        mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<Generation> {
        params.sampling.validate_for_vocab(self.model.cfg.vocab)?;
        if let Some(k) = top_logprobs.filter(|&k| k > sampler::MAX_TOP_LOGPROBS) {
            return Err(EngineError::InvalidParam(format!(
                "top_logprobs must be at most {}, got {k}",
                sampler::MAX_TOP_LOGPROBS
            )));
        }
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let _interactive = self.gate.interactive();
        if params.max_tokens == 0 {
            return Err(EngineError::InvalidParam(
                "max_tokens must be at least 1".into(),
            ));
        }
        let c = &self.model.cfg;
        let d = c.d_model;
        // The last sampled token is never fed, so prompt + max_tokens - 1 positions suffice.
        let needed = prompt.len().saturating_add(params.max_tokens - 1);
        if prompt.len() > c.n_ctx || needed > c.n_ctx {
            return Err(EngineError::ContextOverflow {
                needed: prompt.len().saturating_add(params.max_tokens),
                n_ctx: c.n_ctx,
            });
        }
        let mut cache = self.new_cache(needed)?;
        let t0 = Instant::now();
        // Reuse a cached prefix, keeping at least the last prompt token to recompute (its
        // logits pick the first output token).
        let hit = {
            let mut pc = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
            pc.lookup(prompt, prompt.len() - 1, d, &mut cache)
        };
        let mut hidden = hit.hidden;
        let rest = &prompt[hit.len..];
        let out = self.forward(rest, &mut cache, rest.len() - 1)?;
        hidden.extend_from_slice(&out.hidden);
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        let mut text = OutputText::new(&params.stop, params.max_tokens);
        let mut output = Vec::new();
        let mut logits = out.logits;
        let mut counts = sampler::Adjuster::new(&params.sampling, &self.model.tokenizer);
        let stop_reason = loop {
            let pos = (prompt.len() + output.len()) as u64;
            let tok = sampler::sample(&counts.adjust(&logits), &params.sampling, pos);
            counts.push(tok);
            output.push(tok);
            let (piece, end) = text.push(&self.model.tokenizer, tok);
            // A stop token is not text: it has no log-probabilities to report.
            let logprobs = match end {
                Some(StopReason::Eos) => None,
                _ => top_logprobs.map(|k| sampler::logprobs(&logits, tok, k)),
            };
            let flow = on_token(&TokenEvent {
                token: tok,
                text: &piece,
                logprobs,
            });
            if flow.is_break() {
                return Err(EngineError::Cancelled);
            }
            if let Some(reason) = end {
                break reason;
            }
            let out = self.forward(&[tok], &mut cache, 0)?;
            hidden.extend_from_slice(&out.hidden);
            logits = out.logits;
        };
        let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        // Remember this sequence for later requests that share its prefix.
        let fed: Vec<u32> = prompt
            .iter()
            .chain(&output)
            .copied()
            .take(cache.len())
            .collect();
        self.prefix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(&fed, &cache, &hidden);
        Ok(Generation {
            prompt_tokens: prompt.to_vec(),
            output_tokens: output,
            text: text.text(),
            stop_reason,
            hidden,
            cached_tokens: hit.len,
            prefill_ms,
            decode_ms,
        })
    }
}

/// The text of a run's output tokens, exactly as the engine streams it: each token's bytes
/// through a [`TextStream`], a stop token (EOS, `<|im_end|>`...) ends the text and flushes
/// what was held back, a stop string cuts it, and the `max_tokens`th token flushes it. The
/// generation loop uses it, and so does anyone who must derive a run's text from its token
/// ids alone (the gateway, which never trusts a worker's text).
#[derive(Clone, Debug)]
pub struct OutputText {
    text: TextStream,
    max_tokens: usize,
    tokens: usize,
    end: Option<StopReason>,
    /// The tokenizer's stop tokens, read at the first push.
    stop_ids: Option<Vec<u32>>,
}

impl OutputText {
    /// The text of a run with stop strings `stops` and at most `max_tokens` output tokens.
    pub fn new(stops: &[String], max_tokens: usize) -> Self {
        OutputText {
            text: TextStream::new(stops),
            max_tokens,
            tokens: 0,
            end: None,
            stop_ids: None,
        }
    }

    /// Takes the next output token: the text that became final with it (the pieces of a run
    /// concatenate to [`OutputText::text`]) and, when it ended the run, why. Tokens after the
    /// end add nothing.
    pub fn push(&mut self, tokenizer: &Tokenizer, tok: u32) -> (String, Option<StopReason>) {
        if self.end.is_some() {
            return (String::new(), self.end);
        }
        self.tokens += 1;
        let stops = self.stop_ids.get_or_insert_with(|| tokenizer.stop_ids());
        if stops.contains(&tok) {
            self.end = Some(StopReason::Eos);
            return (self.text.flush(), self.end);
        }
        let bytes = tokenizer.token_bytes(tok).unwrap_or_default();
        let (mut piece, hit_stop) = self.text.push(&bytes);
        if hit_stop {
            self.end = Some(StopReason::StopString);
        } else if self.tokens >= self.max_tokens {
            piece.push_str(&self.text.flush());
            self.end = Some(StopReason::MaxTokens);
        }
        (piece, self.end)
    }

    /// Why the run ended, once a pushed token ended it.
    pub fn end(&self) -> Option<StopReason> {
        self.end
    }

    /// Output tokens pushed so far (those after the end included).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The whole text so far: without a stop token, cut before a stop string.
    pub fn text(&self) -> String {
        self.text.finish()
    }
}

/// Turns token bytes into final text: holds back incomplete UTF-8 and any tail that could
/// still become a stop string, and cuts the text at the first stop string.
#[derive(Clone, Debug)]
pub struct TextStream {
    stops: Vec<String>,
    bytes: Vec<u8>,
    /// Length of `text()` already emitted.
    emitted: usize,
    stopped_at: Option<usize>,
}

impl TextStream {
    /// A stream cut at the first of `stops` (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        TextStream {
            stops: stops.to_vec(),
            bytes: vec![],
            emitted: 0,
            stopped_at: None,
        }
    }

    /// The valid UTF-8 prefix of the bytes so far.
    fn valid(&self) -> &str {
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Append a token's bytes; returns the newly final text and whether a stop string hit.
    pub fn push(&mut self, b: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(b);
        let s = self.valid();
        if let Some(at) = self
            .stops
            .iter()
            .filter(|st| !st.is_empty())
            .filter_map(|st| s.find(st.as_str()))
            .min()
        {
            let piece = s.get(self.emitted..at).unwrap_or("").to_string();
            self.emitted = self.emitted.max(at);
            self.stopped_at = Some(at);
            return (piece, true);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut safe = s.len();
        for st in &self.stops {
            for (i, _) in st.char_indices().skip(1) {
                if s.ends_with(&st[..i]) {
                    safe = safe.min(s.len() - i);
                }
            }
        }
        let piece = s.get(self.emitted..safe).unwrap_or("").to_string();
        self.emitted = self.emitted.max(safe);
        (piece, false)
    }

    /// Everything not yet emitted (end of generation: held-back text becomes final).
    pub fn flush(&mut self) -> String {
        if self.stopped_at.is_some() {
            return String::new();
        }
        let s = String::from_utf8_lossy(&self.bytes).into_owned();
        let rest = s.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = s.len();
        rest
    }

    /// The whole text so far, cut before a stop string.
    pub fn finish(&self) -> String {
        let s = String::from_utf8_lossy(&self.bytes).into_owned();
        match self.stopped_at {
            Some(at) => s[..at].to_string(),
            None => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stream_holds_partial_utf8_and_stop_prefixes() {
        let stops = vec!["END".to_string()];
        let mut ts = TextStream::new(&stops);
        let e = "é".as_bytes();
        assert_eq!(ts.push(&e[..1]), (String::new(), false));
        assert_eq!(ts.push(&e[1..]), ("é".to_string(), false));
        assert_eq!(ts.push(b" E"), (" ".to_string(), false));
        assert_eq!(ts.push(b"N"), (String::new(), false));
        assert_eq!(ts.push(b"Dxyz"), (String::new(), true));
        assert_eq!(ts.finish(), "é ");
        let none: Vec<String> = vec![];
        let mut ts = TextStream::new(&none);
        assert_eq!(ts.push(b"abc"), ("abc".to_string(), false));
        assert_eq!(ts.finish(), "abc");
        let mut ts = TextStream::new(&stops);
        assert_eq!(ts.push(b"xE"), ("x".to_string(), false));
        assert_eq!(ts.flush(), "E");
    }

    fn tiny_engine() -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        std::fs::write(
            &path,
            crate::testing::tiny_model_gguf(&crate::testing::TinySpec::default()),
        )
        .unwrap();
        Engine::new(Model::load(&path).unwrap(), EngineConfig::default()).unwrap()
    }

    fn long_params() -> GenParams {
        let mut p = GenParams {
            max_tokens: 24,
            ..Default::default()
        };
        p.sampling.seed = 3;
        p
    }

    #[test]
    fn a_cancelled_run_stops_after_k_tokens_and_an_uncancelled_one_is_unchanged() {
        let engine = tiny_engine();
        let prompt = [5u32, 6, 7, 8];
        let params = long_params();
        let mut seen = Vec::new();
        let plain = engine
            .generate(&prompt, &params, |ev| seen.push(ev.token))
            .unwrap();
        assert_eq!(seen, plain.output_tokens);
        let k = 3;
        assert!(plain.output_tokens.len() > k, "{plain:?}");
        // Cancelled after the kth token: no more tokens are computed, and no generation comes
        // back to be signed.
        let mut calls = Vec::new();
        let err = engine
            .generate_cancellable(&prompt, &params, Some(2), |ev| {
                calls.push(ev.token);
                if calls.len() == k {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap_err();
        assert!(matches!(err, EngineError::Cancelled), "{err:?}");
        assert_eq!(calls, plain.output_tokens[..k]);
        // Never cancelled: the same tokens, text and hidden states as the plain run (the
        // prefix cache now holds this prompt, which changes no bit).
        let mut pieces = String::new();
        let again = engine
            .generate_cancellable(&prompt, &params, None, |ev| {
                pieces.push_str(ev.text);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(again.output_tokens, plain.output_tokens);
        assert_eq!(again.text, plain.text);
        assert_eq!(pieces, plain.text);
        assert_eq!(again.stop_reason, plain.stop_reason);
        assert_eq!(again.hidden, plain.hidden);
        // After a cancelled run the engine serves the next one as before.
        let after = engine.generate(&prompt, &params, |_| {}).unwrap();
        assert_eq!(after.output_tokens, plain.output_tokens);
    }

    #[test]
    fn output_text_from_ids_alone_is_the_engines_text() {
        let engine = tiny_engine();
        let tok = &engine.model.tokenizer;
        let prompt = [5u32, 6, 7, 8];
        let stop_ids = tok.stop_ids();
        let mut runs = 0;
        for seed in 0..16u64 {
            let mut params = long_params();
            params.sampling.seed = seed;
            // Mostly ASCII letters, so that there is valid text to cut.
            params.sampling.logit_bias = (0..engine.model.cfg.vocab as u32)
                .filter(|&i| {
                    tok.token_bytes(i)
                        .is_some_and(|b| b.len() == 1 && b[0].is_ascii_lowercase())
                })
                .map(|i| (i, 8.0))
                .collect();
            let first = engine.generate(&prompt, &params, |_| {}).unwrap();
            // A stop string taken from the middle of the text's valid UTF-8 (stop strings
            // are matched there) cuts it there.
            let chars: Vec<char> = first
                .text
                .chars()
                .take_while(|&c| c != '\u{FFFD}')
                .collect();
            if chars.len() >= 4 {
                let at = chars.len() / 2;
                params.stop = vec![chars[at..at + 2].iter().collect()];
            }
            let mut pieces = Vec::new();
            let g = engine
                .generate(&prompt, &params, |ev| pieces.push(ev.text.to_string()))
                .unwrap();
            let mut out = OutputText::new(&params.stop, params.max_tokens);
            for (i, &t) in g.output_tokens.iter().enumerate() {
                let (piece, end) = out.push(tok, t);
                assert_eq!(piece, pieces[i], "seed {seed}, token {i}");
                let last = i + 1 == g.output_tokens.len();
                assert_eq!(end.is_some(), last, "seed {seed}, token {i}");
            }
            assert_eq!(out.end(), Some(g.stop_reason));
            assert_eq!(out.text(), g.text);
            // Tokens after the end add nothing.
            assert_eq!(out.push(tok, 40), (String::new(), Some(g.stop_reason)));
            if !params.stop.is_empty() {
                runs += 1;
                assert_eq!(g.stop_reason, StopReason::StopString, "seed {seed}");
            }
        }
        assert!(runs > 0, "no run had text to cut");
        // A stop token ends the text and flushes what was held back.
        let stops = vec!["xy".to_string()];
        let mut out = OutputText::new(&stops, 10);
        let x = tok.token_id("x").or_else(|| {
            (0..engine.model.cfg.vocab as u32).find(|&i| tok.token_bytes(i) == Some(b"x".to_vec()))
        });
        let x = x.unwrap();
        assert_eq!(out.push(tok, x), (String::new(), None), "x may start `xy`");
        assert_eq!(
            out.push(tok, stop_ids[0]),
            ("x".to_string(), Some(StopReason::Eos))
        );
        assert_eq!(out.text(), "x");
    }
}
