//! The specified, seeded sampler (`deai-sampler-v1`).
//!
//! Anyone holding the logits of a position can reproduce the token picked there:
//!
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
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

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
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
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
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: usize, p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            seed,
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
}
