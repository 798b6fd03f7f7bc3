//! The specified, seeded sampler (`deai-sampler-v1`).
//!
//! Anyone holding the logits of a position can reproduce the token picked there:
//!
//! 0. Logit adjustments (OpenAI's `logit_bias`, `presence_penalty`, `frequency_penalty`): the
//!    logit `l` of a token `t` listed in `logit_bias` becomes `l + bias`; then, if `t` occurs `c > 0` times among the
//!    output tokens before this position, `- presence - frequency * c` (left to right, each
//!    step an f32 operation, `c` converted to f32). With `json_object`, every token is then
//!    set to minus infinity unless it keeps the output one JSON object
//!    ([`crate::json_prefix`]): before the object is complete, a token that is neither a
//!    control nor a stop token and whose bytes extend the output's bytes to a prefix of one;
//!    once it is complete, only the stop tokens. With no bias, zero penalties and no `json_object` the logits are used as they
//!    are. Steps 1-3 see the adjusted logits.
//! 1. `temperature == 0`: greedy, the lowest index among the maximal logits.
//! 2. Otherwise candidates are ordered by logit descending, ties by index ascending; the first
//!    `top_k` are kept (`0` keeps all). Weights are `exp((l - l_max) / temperature)` in f64
//!    with the pure-Rust `libm::exp` (same bits on every platform); the smallest prefix whose
//!    cumulative weight reaches `top_p` of the total is kept (at least one candidate).
//! 3. A uniform `u` in `[0, 1)` is the top 53 bits of the first `u64` of ChaCha20 keyed by
//!    `SHA-256("deai-sampler-v1" | seed | position)` (both little-endian u64); the token is the
//!    first candidate whose cumulative weight exceeds `u * kept_total`.
//!
//! `position` is the absolute position in the sequence of the token being sampled.

use crate::error::{EngineError, Result};
use crate::json_prefix::JsonPrefix;
use crate::json_schema::{JsonSchema, SchemaState};
use crate::tokenizer::Tokenizer;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

pub const SAMPLER_ID: &str = "deai-sampler-v1";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = no top-k cut.
    pub top_k: usize,
    /// In (0, 1]; 1 = no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
    /// In `[-2, 2]`: subtracted once from the logit of every token already in the output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub presence_penalty: f32,
    /// In `[-2, 2]`: subtracted from a token's logit once per time it is in the output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frequency_penalty: f32,
    /// `(token, bias)` added to those tokens' logits: ids strictly ascending, at most
    /// [`MAX_LOGIT_BIAS`] entries, each bias in `[-100, 100]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<(u32, f32)>,
    /// Constrain the output to one JSON object (OpenAI's `response_format: json_object`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub json_object: bool,
    /// Constrain the output to one value of this schema (`response_format: json_schema`,
    /// forced tool calls; [`crate::json_schema`]). Not together with `json_object`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchema>,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

fn is_false(x: &bool) -> bool {
    !*x
}

/// Most `logit_bias` entries per request (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;
/// Largest `|presence_penalty|` and `|frequency_penalty|`.
pub const MAX_PENALTY: f32 = 2.0;
/// Largest `|bias|` in `logit_bias`.
pub const MAX_BIAS: f32 = 100.0;

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            json_object: false,
            json_schema: None,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(EngineError::InvalidParam(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::InvalidParam(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-MAX_PENALTY..=MAX_PENALTY).contains(&v) {
                return Err(EngineError::InvalidParam(format!(
                    "{name} must be between -{MAX_PENALTY} and {MAX_PENALTY}, got {v}"
                )));
            }
            // Receipts write each value one way: zero is +0.
            if v.to_bits() == 1 << 31 {
                return Err(EngineError::InvalidParam(format!(
                    "{name} must not be -0 (write 0)"
                )));
            }
        }
        if self.json_object && self.json_schema.is_some() {
            return Err(EngineError::InvalidParam(
                "json_object and json_schema are exclusive (a schema already asks for JSON)".into(),
            ));
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return Err(EngineError::InvalidParam(format!(
                "logit_bias has {} entries, at most {MAX_LOGIT_BIAS} are allowed",
                self.logit_bias.len()
            )));
        }
        for (i, &(t, b)) in self.logit_bias.iter().enumerate() {
            if !(-MAX_BIAS..=MAX_BIAS).contains(&b) || b.to_bits() == 1 << 31 {
                return Err(EngineError::InvalidParam(format!(
                    "logit_bias for token {t} must be between -{MAX_BIAS} and {MAX_BIAS} (and \
                     not -0), got {b}"
                )));
            }
            if i > 0 && self.logit_bias[i - 1].0 >= t {
                return Err(EngineError::InvalidParam(
                    "logit_bias token ids must be strictly ascending".into(),
                ));
            }
        }
        Ok(())
    }

    /// [`Self::validate`], and every `logit_bias` token is below `vocab`.
    pub fn validate_for_vocab(&self, vocab: usize) -> Result<()> {
        self.validate()?;
        match self.logit_bias.iter().find(|(t, _)| *t as usize >= vocab) {
            Some((t, _)) => Err(EngineError::InvalidParam(format!(
                "logit_bias names token {t}, the vocabulary has {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Whether step 0 may change a logit (a bias, a nonzero penalty or the JSON grammar).
    pub fn adjusts_logits(&self) -> bool {
        self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
            || !self.logit_bias.is_empty()
            || self.json_object
            || self.json_schema.is_some()
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Step 0 of the sampler for one run: what it needs from the output so far (token counts
/// for the penalties, the JSON grammar's state) and from the vocabulary (token bytes, which
/// tokens are control or stop tokens).
pub struct Adjuster<'t> {
    /// The run's sampling settings (step 0 reads the bias and penalties).
    params: SamplingParams,
    tokenizer: &'t Tokenizer,
    stops: Vec<u32>,
    /// Output token counts, kept only when a penalty needs them.
    counts: HashMap<u32, u32>,
    /// `Some` with `json_object`: the output's bytes so far, as a JSON prefix. `None` inside
    /// means the output has already left the grammar (only a dishonest run gets there).
    json: Option<Option<JsonPrefix>>,
    /// `Some` with `json_schema`: the output against the schema (`None` inside: left it).
    schema: Option<(JsonSchema, Option<SchemaState>)>,
    /// Grammar masks already computed, by state: the mask is a function of the state alone,
    /// and most positions repeat one (inside a string, say), so the walk over the vocabulary
    /// runs once per distinct state.
    masks: RefCell<HashMap<GrammarState, Arc<Mask>>>,
}

/// Which tokens a grammar allows: one bit per vocabulary entry.
struct Mask {
    bits: Vec<u64>,
    len: usize,
}

impl Mask {
    fn new(len: usize, allows: impl Fn(u32) -> bool) -> Self {
        let mut bits = vec![0u64; len.div_ceil(64)];
        for t in 0..len {
            if allows(t as u32) {
                bits[t / 64] |= 1 << (t % 64);
            }
        }
        Mask { bits, len }
    }

    fn allows(&self, t: usize) -> bool {
        self.bits[t / 64] >> (t % 64) & 1 == 1
    }
}

/// A grammar's state, as the key of the mask cache.
#[derive(Clone, PartialEq, Eq, Hash)]
enum GrammarState {
    Json(Option<JsonPrefix>),
    Schema(Option<SchemaState>),
}

/// Most masks kept per run (each is one bit per vocabulary entry: 6 KiB at 49,152 tokens).
const MASK_CACHE: usize = 128;

impl<'t> Adjuster<'t> {
    pub fn new(p: &SamplingParams, tokenizer: &'t Tokenizer) -> Self {
        Adjuster {
            params: p.clone(),
            tokenizer,
            stops: tokenizer.stop_ids(),
            counts: HashMap::new(),
            json: p.json_object.then_some(Some(JsonPrefix::new())),
            schema: p.json_schema.as_ref().map(|s| (s.clone(), Some(s.start()))),
            masks: RefCell::new(HashMap::new()),
        }
    }

    /// Record a sampled token.
    pub fn push(&mut self, token: u32) {
        if self.penalizes() {
            *self.counts.entry(token).or_default() += 1;
        }
        if let Some(state) = &mut self.json {
            *state = state.and_then(|s| s.after(self.tokenizer.text_piece(token)?));
        }
        if let Some((schema, state)) = &mut self.schema {
            *state = match (state.take(), self.tokenizer.text_piece(token)) {
                (Some(s), Some(bytes)) => schema.after(&s, bytes),
                _ => None,
            };
        }
    }

    fn penalizes(&self) -> bool {
        self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0
    }

    /// `logits` after step 0 for the next position: borrowed as they are when the run's
    /// settings adjust nothing. Ids outside `logits` are ignored (validation refuses them
    /// earlier).
    pub fn adjust<'a>(&self, logits: &'a [f32]) -> Cow<'a, [f32]> {
        let p = &self.params;
        if !p.adjusts_logits() {
            return Cow::Borrowed(logits);
        }
        let mut out = logits.to_vec();
        for &(t, b) in &p.logit_bias {
            if let Some(l) = out.get_mut(t as usize) {
                *l += b;
            }
        }
        if self.penalizes() {
            for (&t, &c) in &self.counts {
                if let Some(l) = out.get_mut(t as usize) {
                    *l = *l - p.presence_penalty - p.frequency_penalty * c as f32;
                }
            }
        }
        if let Some(mask) = self.grammar_mask(out.len()) {
            for (t, l) in out.iter_mut().enumerate() {
                if !mask.allows(t) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        Cow::Owned(out)
    }

    /// The output grammar's mask over `vocab` tokens for the current state (`None` without a
    /// grammar), from the cache when this state was seen before.
    fn grammar_mask(&self, vocab: usize) -> Option<Arc<Mask>> {
        let key = match (&self.json, &self.schema) {
            (Some(state), _) => GrammarState::Json(*state),
            (None, Some((_, state))) => GrammarState::Schema(state.clone()),
            (None, None) => return None,
        };
        if let Some(m) = self.masks.borrow().get(&key).filter(|m| m.len == vocab) {
            return Some(m.clone());
        }
        let mask = match (&self.json, &self.schema) {
            (Some(state), _) => Mask::new(vocab, self.json_mask(*state)),
            (None, Some((schema, state))) => {
                Mask::new(vocab, self.schema_mask(schema, state.as_ref()))
            }
            (None, None) => return None,
        };
        let mask = Arc::new(mask);
        let mut cache = self.masks.borrow_mut();
        if cache.len() >= MASK_CACHE {
            cache.clear();
        }
        cache.insert(key, mask.clone());
        Some(mask)
    }

    /// Which tokens `schema` lets follow an output in `state` (`None`: it already left the
    /// grammar, so none): a stop token once the output is a whole value, otherwise a token
    /// that is neither a control nor a stop token and whose bytes keep it a prefix of one.
    fn schema_mask<'s>(
        &'s self,
        schema: &'s JsonSchema,
        state: Option<&'s SchemaState>,
    ) -> impl Fn(u32) -> bool + 's {
        let first: [bool; 256] =
            std::array::from_fn(|b| state.is_some_and(|s| schema.accepts(s, &[b as u8])));
        let complete = state.is_some_and(|s| schema.is_complete(s));
        move |token| match state {
            None => false,
            Some(_) if self.stops.contains(&token) => complete,
            Some(s) => self
                .tokenizer
                .text_piece(token)
                .is_some_and(|b| !b.is_empty() && first[b[0] as usize] && schema.accepts(s, b)),
        }
    }

    /// Which tokens the JSON grammar lets follow an output in `state` (`None`: the output
    /// already left it, so none).
    fn json_mask(&self, state: Option<JsonPrefix>) -> impl Fn(u32) -> bool + '_ {
        // Most tokens fail on their first byte: test the 256 bytes once.
        let first: [bool; 256] =
            std::array::from_fn(|b| state.is_some_and(|s| s.after(&[b as u8]).is_some()));
        move |token| match state {
            None => false,
            Some(s) if s.is_complete() => self.stops.contains(&token),
            // A stop token may not end an unfinished object, even one typed as text.
            Some(_) if self.stops.contains(&token) => false,
            Some(s) => self
                .tokenizer
                .text_piece(token)
                .is_some_and(|b| !b.is_empty() && first[b[0] as usize] && s.after(b).is_some()),
        }
    }
}

/// The uniform draw for `position` under `seed`.
pub fn uniform(seed: u64, position: u64) -> f64 {
    let mut h = Sha256::new();
    h.update(SAMPLER_ID.as_bytes());
    h.update(seed.to_le_bytes());
    h.update(position.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(h.finalize().into());
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Greedy choice: lowest index among the maximal logits. NaN logits are never chosen.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

/// Pick the token at `position` from `logits` (validated params assumed).
pub fn sample(logits: &[f32], p: &SamplingParams, position: u64) -> u32 {
    if p.is_greedy() || logits.is_empty() {
        return argmax(logits);
    }
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, v)| (i as u32, *v))
        .collect();
    if cand.is_empty() {
        return 0;
    }
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, order);
        cand.truncate(p.top_k);
    }
    cand.sort_unstable_by(order);
    let max = cand[0].1 as f64;
    let t = p.temperature as f64;
    let w: Vec<f64> = cand
        .iter()
        .map(|(_, l)| libm::exp((*l as f64 - max) / t))
        .collect();
    let total: f64 = w.iter().sum();
    let mut kept = w.len();
    if p.top_p < 1.0 {
        let target = p.top_p as f64 * total;
        let mut acc = 0.0;
        for (i, x) in w.iter().enumerate() {
            acc += x;
            if acc >= target {
                kept = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = w[..kept].iter().sum();
    let u = uniform(p.seed, position) * kept_total;
    let mut acc = 0.0;
    for (i, x) in w[..kept].iter().enumerate() {
        acc += x;
        if u < acc {
            return cand[i].0;
        }
    }
    cand[kept - 1].0
}

/// Most alternatives [`logprobs`] reports per position (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The lowest log-probability reported: an impossible token (or one less likely than
/// `e^-9999`) is reported as this, as OpenAI does, since JSON has no infinity.
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// Log-probabilities at one position, as OpenAI's `logprobs` reports them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogprobs {
    /// `ln p(token)` under the model's own distribution: a softmax of the raw logits, before
    /// temperature, top-k or top-p shape the draw (so the figures do not depend on how the
    /// token was picked).
    pub logprob: f32,
    /// The most likely tokens at this position with their log-probabilities, most likely
    /// first, ties by lower token id.
    pub top: Vec<(u32, f32)>,
}

/// [`TokenLogprobs`] of `token` under `logits`, with the `top` most likely alternatives
/// (at most [`MAX_TOP_LOGPROBS`]). The normalizer is summed in f64; NaN logits count as
/// impossible tokens. Every figure is finite, in `[LOGPROB_FLOOR, 0]`.
pub fn logprobs(logits: &[f32], token: u32, top: usize) -> TokenLogprobs {
    let max = logits
        .iter()
        .filter(|v| !v.is_nan())
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = logits
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| libm::exp(v as f64 - max))
        .sum();
    let lse = max + libm::log(sum);
    let lp = |l: f32| -> f32 {
        let x = (l as f64 - lse) as f32;
        // NaN (a NaN or +inf logit) and -inf become the floor; rounding never passes 0.
        if x.is_nan() {
            LOGPROB_FLOOR
        } else {
            x.clamp(LOGPROB_FLOOR, 0.0)
        }
    };
    let logprob = logits.get(token as usize).map_or(LOGPROB_FLOOR, |&l| lp(l));
    if top == 0 {
        return TokenLogprobs {
            logprob,
            top: Vec::new(),
        };
    }
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let top = top.min(MAX_TOP_LOGPROBS).min(logits.len());
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, if v.is_nan() { f32::NEG_INFINITY } else { v }))
        .collect();
    if top > 0 && top < cand.len() {
        cand.select_nth_unstable_by(top - 1, order);
    }
    cand.truncate(top);
    cand.sort_unstable_by(order);
    TokenLogprobs {
        logprob,
        top: cand.into_iter().map(|(i, l)| (i, lp(l))).collect(),
    }
}

/// Could `tok` be the pick at `position` on another kernel profile, whose logit differences
/// `l_j - l_i` (the only thing argmax and softmax see) are each within `tol` of these? This
/// is the cross-profile acceptance rule of `deai-sampler-v1`; on one profile logits are
/// bit-identical and a verifier compares [`sample`] exactly.
///
/// - Greedy: `tok` is accepted iff `max - l_tok <= tol` (a near-tie).
/// - Sampled: a candidate `j` surely ranks before `tok` iff `l_j > l_tok + tol`, may rank
///   before it iff `l_j >= l_tok - tol`, and surely after it otherwise. All logits move by
///   shifts inside one window of width `tol`, so each weight `exp((l_j - l_max) / T)` lies
///   between itself and itself times `exp(tol/T)` (up to a common factor). The other
///   profile picks `tok` iff its draw `u` satisfies `B / K <= u < (B + w_tok) / K`, with `B`
///   the kept mass before `tok` and `K` the kept total. With `B_min` (surely-before, shrunk),
///   `A_max` (everything that may be kept from `tok` on, grown), `X_max` (`B` + `w_tok`,
///   grown) and `Y_min` (surely-after candidates surely in the top-k, shrunk):
///   `B / K >= B_min / (B_min + A_max)` and, since the nucleus keeps at least `top_p` of the
///   total, `(B + w_tok) / K <= X_max / max(X_max, top_p (X_max + Y_min))`. `tok` is accepted
///   iff fewer than `top_k` candidates surely rank before it, it may be in the top-k, the
///   lower bound is below `top_p` (it may be in the nucleus), and `u` lies between the two
///   bounds. Sums are taken in the log domain, so a low temperature tightens the rule
///   towards the greedy one instead of overflowing.
///
/// The bounds are sound: every pick of a sampler whose logit differences are within `tol` of
/// these passes. What a cheater gains from them is measured by `deai calibrate`. `tol <= 0`
/// (or NaN) is the exact rule.
pub fn accepts_within(
    logits: &[f32],
    p: &SamplingParams,
    position: u64,
    tok: u32,
    tol: f32,
) -> bool {
    let t = tok as usize;
    if t >= logits.len() || logits[t].is_nan() {
        return false;
    }
    if sample(logits, p, position) == tok {
        return true;
    }
    // A token step 0 ruled out (minus infinity) is no near-tie on any profile.
    if tol.is_nan() || tol <= 0.0 || logits[t] == f32::NEG_INFINITY {
        return false;
    }
    let tol = tol as f64;
    let lt = logits[t] as f64;
    let lmax = logits
        .iter()
        .filter(|v| !v.is_nan())
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    if p.is_greedy() {
        return lmax - lt <= tol;
    }
    let mut finite: Vec<f64> = logits
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| v as f64)
        .collect();
    // Top-k: candidates at or above `possible` may be in it, those above `sure` surely are.
    // A linear-time selection finds the k-th and (k+1)-th largest logits.
    let (possible, sure) = if p.top_k > 0 && p.top_k < finite.len() {
        let (above, kth1, _) = finite.select_nth_unstable_by(p.top_k, |a, b| b.total_cmp(a));
        let kth = above.iter().copied().fold(f64::INFINITY, f64::min);
        (kth - tol, *kth1 + tol)
    } else {
        (f64::NEG_INFINITY, f64::NEG_INFINITY)
    };
    if lt < possible {
        return false;
    }
    let temp = p.temperature as f64;
    // Log-weights. Differences move by at most `tol`, so the other profile's logits are
    // these plus shifts that all lie in one window `[m, m + tol]`; softmax ignores `m`, so
    // each weight lies between its `lo` (shift 0) and `hi` (shift `tol`) value.
    let lo_w = |l: f64| (l - lmax) / temp;
    let hi_w = |l: f64| (l - lmax + tol) / temp;
    let (mut b_min, mut a_max, mut x_max, mut y_min) =
        (Lse::new(), Lse::new(), Lse::new(), Lse::new());
    let mut surely_before = 0usize;
    a_max.add(hi_w(lt));
    x_max.add(hi_w(lt));
    for (j, &l) in logits.iter().enumerate() {
        if j == t || l.is_nan() {
            continue;
        }
        let l = l as f64;
        if l > lt + tol {
            surely_before += 1;
            b_min.add(lo_w(l));
            x_max.add(hi_w(l));
        } else if l >= lt - tol {
            if l >= possible {
                a_max.add(hi_w(l));
            }
            x_max.add(hi_w(l));
        } else {
            if l >= possible {
                a_max.add(hi_w(l));
            }
            if l > sure {
                y_min.add(lo_w(l));
            }
        }
    }
    if p.top_k > 0 && surely_before >= p.top_k {
        return false;
    }
    let top_p = p.top_p as f64;
    // B / K >= B_min / (B_min + A_max) = 1 / (1 + A_max / B_min).
    let lo = 1.0 / (1.0 + (a_max.get() - b_min.get()).exp());
    if lo >= top_p {
        return false;
    }
    // (B + w) / K <= 1 / (top_p (1 + Y_min / X_max)), capped at 1.
    let hi = (1.0 / (top_p * (1.0 + (y_min.get() - x_max.get()).exp()))).min(1.0);
    let u = uniform(p.seed, position);
    u >= lo && (hi >= 1.0 || u < hi)
}

/// A running log-sum-exp (empty: minus infinity).
struct Lse {
    max: f64,
    sum: f64,
}

impl Lse {
    fn new() -> Self {
        Lse {
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }

    fn add(&mut self, x: f64) {
        if x.is_nan() || x == f64::NEG_INFINITY {
            return;
        }
        if x > self.max {
            self.sum = self.sum * (self.max - x).exp() + 1.0;
            self.max = x;
        } else {
            self.sum += (x - self.max).exp();
        }
    }

    fn get(&self) -> f64 {
        if self.max == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            self.max + self.sum.ln()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_normalized_softmax_of_the_raw_logits() {
        let logits = [2.0f32, -1.0, 0.5, 2.0, f32::NAN, 7.25, -30.0];
        let all = logprobs(&logits, 5, 100);
        // Capped at the vocabulary; NaN is an impossible token, listed last.
        assert_eq!(all.top.len(), logits.len());
        assert_eq!(all.top[0].0, 5);
        assert_eq!(all.logprob, all.top[0].1);
        assert_eq!(all.top.last().unwrap(), &(4, LOGPROB_FLOOR));
        // Ties keep the lower id first; the list is sorted.
        let pos = |id| all.top.iter().position(|t| t.0 == id).unwrap();
        assert!(pos(0) < pos(3));
        assert!(all.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let mass: f64 = all.top.iter().map(|t| (t.1 as f64).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-6, "{mass}");
        // Differences of logprobs are differences of logits, whatever the temperature.
        let two = logprobs(&logits, 2, 3);
        assert!((two.logprob - (all.logprob - (7.25 - 0.5))).abs() < 1e-5);
        assert_eq!(two.top.len(), 3);
        assert_eq!(&two.top[..], &all.top[..3]);
        // The cap of 20 holds; out-of-range tokens are impossible, not a panic.
        let wide: Vec<f32> = (0..100).map(|i| (i % 7) as f32).collect();
        assert_eq!(logprobs(&wide, 3, 50).top.len(), MAX_TOP_LOGPROBS);
        assert_eq!(logprobs(&wide, 100, 0).logprob, LOGPROB_FLOOR);
        assert!(logprobs(&wide, 6, 0).top.is_empty());
        // Infinite logits give finite figures (JSON carries them), within [floor, 0].
        let odd = [f32::INFINITY, 0.0, f32::NEG_INFINITY, -1e30];
        for t in 0..4 {
            let lp = logprobs(&odd, t, 4);
            for x in std::iter::once(lp.logprob).chain(lp.top.iter().map(|t| t.1)) {
                assert!(x.is_finite() && (LOGPROB_FLOOR..=0.0).contains(&x), "{x}");
            }
        }
        assert_eq!(logprobs(&odd, 2, 0).logprob, LOGPROB_FLOOR);
    }

    fn params(t: f32, k: usize, p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            seed,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_lowest_index_of_max() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(sample(&[0.0, 5.0, 1.0], &SamplingParams::default(), 9), 1);
    }

    #[test]
    fn seeded_and_position_dependent() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = params(1.0, 0, 1.0, 42);
        let a: Vec<u32> = (0..50).map(|pos| sample(&logits, &p, pos)).collect();
        let b: Vec<u32> = (0..50).map(|pos| sample(&logits, &p, pos)).collect();
        assert_eq!(a, b);
        let c: Vec<u32> = (0..50)
            .map(|pos| sample(&logits, &params(1.0, 0, 1.0, 43), pos))
            .collect();
        assert_ne!(a, c);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 5);
    }

    #[test]
    fn top_k_and_top_p_restrict_candidates() {
        let logits = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        for pos in 0..200 {
            let t = sample(&logits, &params(1.0, 2, 1.0, 7), pos);
            assert!(t == 3 || t == 4);
            // top_p tiny keeps only the best.
            assert_eq!(sample(&logits, &params(1.0, 0, 1e-6, 7), pos), 4);
        }
        // With a flat distribution all tokens appear.
        let seen: std::collections::HashSet<u32> = (0..400)
            .map(|pos| sample(&[0.0; 5], &params(1.0, 0, 1.0, 1), pos))
            .collect();
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn frequencies_follow_softmax() {
        let logits = [0.0f32, (3.0f32).ln()];
        let n = 4000;
        let ones = (0..n)
            .filter(|&pos| sample(&logits, &params(1.0, 0, 1.0, 5), pos) == 1)
            .count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.03, "{f}");
    }

    #[test]
    fn invalid_params_are_errors() {
        assert!(params(-0.1, 0, 1.0, 0).validate().is_err());
        assert!(params(f32::NAN, 0, 1.0, 0).validate().is_err());
        assert!(params(1.0, 0, 0.0, 0).validate().is_err());
        assert!(params(1.0, 0, 1.5, 0).validate().is_err());
        assert!(params(0.7, 40, 0.9, 0).validate().is_ok());
    }

    fn adjusted(presence: f32, frequency: f32, bias: Vec<(u32, f32)>) -> SamplingParams {
        SamplingParams {
            presence_penalty: presence,
            frequency_penalty: frequency,
            logit_bias: bias,
            ..params(0.0, 0, 1.0, 0)
        }
    }

    #[test]
    fn invalid_adjustments_are_errors() {
        for bad in [
            adjusted(2.5, 0.0, vec![]),
            adjusted(0.0, f32::NAN, vec![]),
            adjusted(0.0, -2.01, vec![]),
            adjusted(0.0, 0.0, vec![(3, 100.5)]),
            adjusted(0.0, 0.0, vec![(3, f32::INFINITY)]),
            adjusted(0.0, 0.0, vec![(3, 1.0), (3, 2.0)]),
            adjusted(0.0, 0.0, vec![(4, 1.0), (3, 2.0)]),
            adjusted(0.0, 0.0, (0..301).map(|t| (t, 1.0)).collect()),
            adjusted(-0.0, 0.0, vec![]),
            adjusted(0.0, 0.0, vec![(3, -0.0)]),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let ok = adjusted(-2.0, 2.0, vec![(0, -100.0), (9, 100.0)]);
        assert!(ok.validate().is_ok());
        assert!(ok.validate_for_vocab(10).is_ok());
        let e = ok.validate_for_vocab(9).unwrap_err().to_string();
        assert!(e.contains("token 9"), "{e}");
    }

    #[test]
    fn json_object_masks_every_token_that_leaves_the_grammar() {
        let tok = tokenizer();
        let p = SamplingParams {
            json_object: true,
            ..params(0.0, 0, 1.0, 0)
        };
        let byte = |b: u8| 3 + b as u32;
        let allowed = |a: &Adjuster| -> Vec<u32> {
            let logits = vec![0.0f32; tok.vocab_size()];
            let out = a.adjust(&logits);
            (0..out.len() as u32)
                .filter(|&t| out[t as usize].is_finite())
                .collect()
        };
        let mut a = Adjuster::new(&p, &tok);
        // Start: whitespace or `{`; control tokens and stop tokens never.
        let mut want = vec![
            byte(b'\t'),
            byte(b'\n'),
            byte(b'\r'),
            byte(b' '),
            byte(b'{'),
        ];
        want.sort();
        assert_eq!(allowed(&a), want);
        // Greedy picks the best allowed token, however strongly the model prefers another.
        let mut logits = vec![0.0f32; tok.vocab_size()];
        logits[byte(b'x') as usize] = 50.0;
        logits[byte(b'{') as usize] = 1.0;
        assert_eq!(sample(&a.adjust(&logits), &p, 0), byte(b'{'));
        a.push(byte(b'{'));
        let mut want = vec![byte(b'\t'), byte(b'\n'), byte(b'\r'), byte(b' ')];
        want.extend([byte(b'"'), byte(b'}')]);
        want.sort();
        assert_eq!(allowed(&a), want);
        // Inside a key, multi-byte tokens are allowed when every byte fits ("he", "hell").
        a.push(byte(b'"'));
        let inside = allowed(&a);
        assert!(inside.contains(&tok.token_id("hell").unwrap()));
        assert!(
            !inside.contains(&byte(b'\n')),
            "raw control byte inside a string"
        );
        a.push(byte(b'"'));
        a.push(byte(b':'));
        a.push(byte(b'1'));
        a.push(byte(b'}'));
        // Complete: only the stop tokens.
        let mut stops = tok.stop_ids();
        stops.sort();
        assert_eq!(allowed(&a), stops);
        // A masked token is no near-tie under any tolerance, greedy or sampled.
        let zeros = vec![0.0f32; tok.vocab_size()];
        let masked = a.adjust(&zeros);
        let sampled = SamplingParams {
            temperature: 1.0,
            ..p.clone()
        };
        for q in [&p, &sampled] {
            assert!(!accepts_within(&masked, q, 0, byte(b'x'), 1e6));
            assert!(accepts_within(&masked, q, 0, sample(&masked, q, 0), 1e6));
        }
        // An output that left the grammar allows nothing.
        let mut off = Adjuster::new(&p, &tok);
        off.push(byte(b'x'));
        assert!(allowed(&off).is_empty());
    }

    #[test]
    fn json_schema_masks_every_token_that_leaves_the_schema() {
        let tok = tokenizer();
        let schema: crate::json_schema::Json = serde_json::from_str(
            r#"{"type": "object", "properties": {"ok": {"type": "boolean"}}}"#,
        )
        .unwrap();
        let p = SamplingParams {
            json_schema: Some(JsonSchema::compile_object(&schema).unwrap()),
            ..params(0.0, 0, 1.0, 0)
        };
        assert!(p.adjusts_logits());
        let byte = |b: u8| 3 + b as u32;
        let allowed = |a: &Adjuster| -> Vec<u32> {
            let zeros = vec![0.0f32; tok.vocab_size()];
            let out = a.adjust(&zeros);
            (0..out.len() as u32)
                .filter(|&t| out[t as usize].is_finite())
                .collect()
        };
        let mut a = Adjuster::new(&p, &tok);
        // The layout is fixed: only `{` may start (no whitespace, unlike json_object).
        assert_eq!(allowed(&a), vec![byte(b'{')]);
        for b in br#"{"ok": "# {
            a.push(byte(*b));
        }
        let mut want = vec![byte(b't'), byte(b'f')];
        want.sort();
        assert_eq!(allowed(&a), want);
        for b in b"true}" {
            a.push(byte(*b));
        }
        let mut stops = tok.stop_ids();
        stops.sort();
        assert_eq!(allowed(&a), stops);
        // Greedy follows the schema however strongly the model prefers another token.
        let mut b = Adjuster::new(&p, &tok);
        let mut logits = vec![0.0f32; tok.vocab_size()];
        logits[byte(b' ') as usize] = 50.0;
        logits[byte(b'{') as usize] = 1.0;
        assert_eq!(sample(&b.adjust(&logits), &p, 0), byte(b'{'));
        // An output that left the schema allows nothing.
        b.push(byte(b'['));
        assert!(allowed(&b).is_empty());
        // Exclusive with json_object.
        let both = SamplingParams {
            json_object: true,
            ..p.clone()
        };
        assert!(both.validate().is_err());
        assert!(p.validate().is_ok());
    }

    #[test]
    fn cached_grammar_masks_equal_fresh_ones() {
        let tok = tokenizer();
        let byte = |b: u8| 3 + b as u32;
        let schema: crate::json_schema::Json = serde_json::from_str(
            r#"{"type": "object", "properties": {"s": {"type": "string"}, "t": {"type": "array", "items": {"type": "string"}}}}"#,
        )
        .unwrap();
        let object = SamplingParams {
            json_object: true,
            ..params(0.0, 0, 1.0, 0)
        };
        let with_schema = SamplingParams {
            json_schema: Some(JsonSchema::compile_object(&schema).unwrap()),
            ..params(0.0, 0, 1.0, 0)
        };
        let logits: Vec<f32> = (0..tok.vocab_size()).map(|i| (i % 7) as f32).collect();
        for (p, text) in [
            (
                &object,
                &br#"{"s": "aaaa\"bb", "t": ["x", "y", {"z": 1}]}"#[..],
            ),
            (
                &with_schema,
                &br#"{"s": "aaaa\"bb", "t": ["x", "y", "xx"]}"#[..],
            ),
        ] {
            let mut cached = Adjuster::new(p, &tok);
            let mut fresh = Adjuster::new(p, &tok);
            for &b in text {
                fresh.masks.borrow_mut().clear();
                assert_eq!(cached.adjust(&logits), fresh.adjust(&logits));
                cached.push(byte(b));
                fresh.push(byte(b));
            }
            // Repeated states (inside the strings) were served from the cache.
            assert!(
                cached.masks.borrow().len() < text.len(),
                "{}",
                cached.masks.borrow().len()
            );
            fresh.masks.borrow_mut().clear();
            assert_eq!(cached.adjust(&logits), fresh.adjust(&logits));
        }
    }

    fn tokenizer() -> Tokenizer {
        let (tokens, types, merges) = crate::testing::tiny_vocab();
        Tokenizer::from_parts(tokens, types, merges, "smollm", None, None).unwrap()
    }

    #[test]
    fn penalties_count_the_output_and_bias_moves_single_logits() {
        let tok = tokenizer();
        let logits = [1.0f32, 3.0, 2.0, 0.5];
        let mut seen = Adjuster::new(&adjusted(0.5, 0.25, vec![(3, 10.0)]), &tok);
        // Nothing to adjust: the logits are borrowed as they are.
        assert!(matches!(
            Adjuster::new(&params(0.0, 0, 1.0, 0), &tok).adjust(&logits),
            Cow::Borrowed(_)
        ));
        let p = adjusted(0.5, 0.25, vec![(3, 10.0)]);
        assert_eq!(&seen.adjust(&logits)[..], &[1.0, 3.0, 2.0, 10.5]);
        seen.push(1);
        seen.push(1);
        seen.push(2);
        // Token 1 seen twice: 3 - 0.5 - 0.25*2; token 2 once: 2 - 0.5 - 0.25.
        assert_eq!(&seen.adjust(&logits)[..], &[1.0, 2.0, 1.25, 10.5]);
        // Greedy follows the adjusted logits: the bias wins, then without it a penalty
        // hands the pick from token 1 to token 2.
        assert_eq!(sample(&seen.adjust(&logits), &p, 0), 3);
        let p = adjusted(1.5, 0.0, vec![]);
        let mut once = Adjuster::new(&p, &tok);
        once.push(1);
        assert_eq!(sample(&logits, &p, 0), 1);
        assert_eq!(sample(&once.adjust(&logits), &p, 0), 2);
        // Negative penalties encourage repeats; ids outside the logits are ignored.
        let p = adjusted(-2.0, 0.0, vec![(99, 5.0)]);
        let mut zero = Adjuster::new(&p, &tok);
        zero.push(0);
        assert_eq!(&zero.adjust(&logits)[..], &[3.0, 3.0, 2.0, 0.5]);
        assert_eq!(sample(&zero.adjust(&logits), &p, 0), 0);
    }

    /// Logits of another profile: every logit moved by a pseudo-random amount in
    /// `[-tol/2, tol/2]`, so every difference moves by at most `tol`.
    fn jitter(logits: &[f32], tol: f32, salt: u64) -> Vec<f32> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let u = uniform(salt, i as u64) as f32;
                l + (u - 0.5) * tol
            })
            .collect()
    }

    fn peaked_logits(salt: u64) -> Vec<f32> {
        (0..200)
            .map(|i| {
                let u = uniform(salt ^ 0x5eed, i) as f32;
                if i % 17 == 0 {
                    4.0 + u
                } else {
                    u * 3.0
                }
            })
            .collect()
    }

    #[test]
    fn tolerance_accepts_every_pick_of_a_nearby_profile() {
        let tol = 0.05f32;
        let settings = [
            params(0.0, 0, 1.0, 0),
            params(0.02, 0, 1.0, 2),
            params(0.8, 0, 1.0, 3),
            params(0.8, 40, 0.95, 4),
            params(1.3, 5, 0.5, 5),
            params(0.2, 0, 0.9, 6),
        ];
        let (mut flips, mut checked) = (0, 0);
        for salt in 0..40u64 {
            let verifier = peaked_logits(salt);
            let worker = jitter(&verifier, tol, salt + 1000);
            for p in &settings {
                for pos in 0..25 {
                    let tok = sample(&worker, p, pos);
                    checked += 1;
                    if sample(&verifier, p, pos) != tok {
                        flips += 1;
                    }
                    assert!(
                        accepts_within(&verifier, p, pos, tok, tol),
                        "salt {salt} {p:?} pos {pos}: honest pick {tok} refused"
                    );
                }
            }
        }
        // The jitter must actually change some picks, or the test shows nothing.
        assert!(flips > 0, "no pick changed in {checked}");
    }

    #[test]
    fn tolerance_refuses_picks_far_from_the_boundary() {
        // Greedy: the runner-up 1.0 below the max is refused, 0.01 below is a near-tie.
        let l = [0.0f32, 5.0, 4.0, 4.99];
        let g = params(0.0, 0, 1.0, 0);
        assert!(!accepts_within(&l, &g, 0, 2, 0.05));
        assert!(accepts_within(&l, &g, 0, 3, 0.05));
        assert!(!accepts_within(&l, &g, 0, 3, 0.0));
        assert!(!accepts_within(&l, &g, 0, 9, 0.05), "out of range");
        // Sampled: outside top-k, and a token the draw is far from, are refused.
        let s = params(1.0, 2, 1.0, 11);
        let flat = [0.0f32, 3.0, 2.9, -5.0];
        for pos in 0..50 {
            assert!(!accepts_within(&flat, &s, pos, 3, 0.05));
            assert!(!accepts_within(&flat, &s, pos, 0, 0.05));
        }
        // A low temperature is nearly greedy: a token 1.0 below the max is refused at every
        // position, one within the tolerance of the max may be accepted.
        let cold = params(0.01, 0, 1.0, 13);
        let l = [0.0f32, 5.0, 4.0, 4.98];
        for pos in 0..100 {
            assert!(!accepts_within(&l, &cold, pos, 2, 0.05), "pos {pos}");
            assert!(!accepts_within(&l, &cold, pos, 0, 0.05), "pos {pos}");
        }
        assert!((0..100)
            .any(|pos| accepts_within(&l, &cold, pos, 3, 0.05) && sample(&l, &cold, pos) != 3));
        // Between two candidates whose order is certain (their logits differ by more than
        // the tolerance), a small tolerance admits the other one only for draws near the
        // boundary: most positions still refuse it. (Candidates within `tol` of each other
        // may swap order, and then any draw may pick either: that is sound, and it is the
        // freedom `deai calibrate` measures.)
        let two = [1.0f32, 1.5];
        let p = params(1.0, 0, 1.0, 12);
        let refused = (0..400)
            .filter(|&pos| {
                let other = 1 - sample(&two, &p, pos);
                !accepts_within(&two, &p, pos, other, 0.01)
            })
            .count();
        assert!(refused > 350, "{refused}/400 refused");
        assert!(refused < 400, "no boundary draw admitted");
    }
}
