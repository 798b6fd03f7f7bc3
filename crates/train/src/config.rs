//! Model and optimizer configuration, with named presets and a canonical identity.

use crate::{Result, TrainError};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// Number of special tokens before the 256 byte tokens (`<|endoftext|>`, `<|im_start|>`,
/// `<|im_end|>`, as in SmolLM2 and the engine's tiny vocabulary).
pub const BYTE_OFFSET: u32 = 3;
/// Vocabulary of every trained model: 3 specials and one token per byte.
pub const BYTE_VOCAB: usize = 256 + BYTE_OFFSET as usize;

/// Shape of a llama-architecture model as the engine runs it (tied embeddings, RMSNorm,
/// adjacent-pair RoPE, SwiGLU MLP). Training uses `n_kv_head == n_head`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub d_ff: usize,
    pub vocab: usize,
    /// Training context; also the exported model's context length.
    pub seq_len: usize,
}

impl ModelConfig {
    /// Named sizes: `tiny` (tests, ~40k parameters), `small` (4 layers, width 128, ~0.9M;
    /// the benchmarks), `demo` (6 layers, width 256, ~5M).
    pub fn preset(name: &str) -> Option<Self> {
        let (n_layer, d_model, n_head, d_ff, seq_len) = match name {
            "tiny" => (2, 32, 4, 64, 32),
            "small" => (4, 128, 4, 384, 128),
            "demo" => (6, 256, 8, 768, 256),
            _ => return None,
        };
        Some(ModelConfig {
            n_layer,
            d_model,
            n_head,
            d_ff,
            vocab: BYTE_VOCAB,
            seq_len,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    /// Refuses shapes the engine cannot run or that would not fit in memory.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(TrainError::Config(why));
        if self.n_layer == 0 || self.n_layer > 64 {
            return bad(format!("n_layer {} must be in 1..=64", self.n_layer));
        }
        if self.d_model == 0 || self.d_model > 4096 || self.n_head == 0 {
            return bad(format!("d_model {} / n_head {}", self.d_model, self.n_head));
        }
        if !self.d_model.is_multiple_of(self.n_head) || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "d_model {} must split into {} heads of even size",
                self.d_model, self.n_head
            ));
        }
        if self.d_ff == 0 || self.d_ff > 16384 {
            return bad(format!("d_ff {} must be in 1..=16384", self.d_ff));
        }
        if self.vocab != BYTE_VOCAB {
            return bad(format!(
                "vocab {} must be {BYTE_VOCAB} (byte-level models only)",
                self.vocab
            ));
        }
        if self.seq_len < 2 || self.seq_len > 4096 {
            return bad(format!("seq_len {} must be in 2..=4096", self.seq_len));
        }
        Ok(())
    }

    /// Every parameter tensor in canonical order, with its GGUF name and shape
    /// (`[rows, cols]` for matrices, as the engine's `[out, in]`).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f) = (self.d_model, self.d_ff);
        let mut t = vec![("token_embd.weight".to_string(), vec![self.vocab, d])];
        for i in 0..self.n_layer {
            t.push((format!("blk.{i}.attn_norm.weight"), vec![d]));
            t.push((format!("blk.{i}.attn_q.weight"), vec![d, d]));
            t.push((format!("blk.{i}.attn_k.weight"), vec![d, d]));
            t.push((format!("blk.{i}.attn_v.weight"), vec![d, d]));
            t.push((format!("blk.{i}.attn_output.weight"), vec![d, d]));
            t.push((format!("blk.{i}.ffn_norm.weight"), vec![d]));
            t.push((format!("blk.{i}.ffn_gate.weight"), vec![f, d]));
            t.push((format!("blk.{i}.ffn_up.weight"), vec![f, d]));
            t.push((format!("blk.{i}.ffn_down.weight"), vec![d, f]));
        }
        t.push(("output_norm.weight".to_string(), vec![d]));
        t
    }

    pub fn n_params(&self) -> usize {
        self.tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// Inner-loop hyper-parameters (AdamW with warmup and cosine decay, global-norm clipping).
/// Defaults follow OpenDiLoCo (betas 0.9/0.95, weight decay 0.1) with a learning rate sized
/// for small byte-level models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per step.
    pub batch: usize,
    pub lr: f32,
    /// The schedule ends at `min_lr_ratio * lr`.
    pub min_lr_ratio: f32,
    pub warmup_steps: u64,
    /// Steps over which the learning rate ramps up again at the start of every DiLoCo round
    /// but the first. A round's AdamW starts from zero moments (so that its start state is
    /// the public checkpoint alone), and its first bias-corrected steps are sign steps of
    /// the full learning rate on every weight; the ramp keeps those from undoing part of the
    /// averaged progress. 0 disables it. A config written before this field existed reads
    /// as 0 and 0 is not written, so such a job keeps its meaning and its id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round_warmup_steps: u64,
    /// Length of the cosine schedule (the whole run, in inner steps).
    pub total_steps: u64,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f32,
    /// Seeds initialization and batch sampling.
    pub seed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch: 16,
            lr: 2e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            round_warmup_steps: 6,
            total_steps: 1000,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 1,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let finite = [
            self.lr,
            self.min_lr_ratio,
            self.weight_decay,
            self.beta1,
            self.beta2,
            self.eps,
            self.grad_clip,
        ]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0);
        if !finite || self.lr == 0.0 || self.beta1 >= 1.0 || self.beta2 >= 1.0 {
            return Err(TrainError::Config(format!(
                "optimizer settings out of range: {self:?}"
            )));
        }
        if self.batch == 0 || self.batch > 4096 {
            return Err(TrainError::Config(format!(
                "batch {} must be in 1..=4096",
                self.batch
            )));
        }
        if self.total_steps == 0 {
            return Err(TrainError::Config("total_steps must be > 0".into()));
        }
        Ok(())
    }

    /// Learning rate at global inner step `step` (0-based): linear warmup, then cosine decay
    /// from `lr` to `min_lr_ratio * lr` at `total_steps`, flat after.
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let p = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let min = self.lr as f64 * self.min_lr_ratio as f64;
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        (min + (self.lr as f64 - min) * cos) as f32
    }

    /// Learning rate of the inner step `inner_step` (0-based, counted from the round's
    /// checkpoint) at global step `global_step`: [`TrainConfig::lr_at`], ramped linearly over
    /// the first `round_warmup_steps` steps of a round that does not start the run (where
    /// `inner_step == global_step`, the global warmup applies instead).
    pub fn lr_in_round(&self, global_step: u64, inner_step: u64) -> f32 {
        let lr = self.lr_at(global_step);
        if inner_step == global_step || inner_step >= self.round_warmup_steps {
            return lr;
        }
        lr * (inner_step + 1) as f32 / self.round_warmup_steps as f32
    }
}

/// Identity of a (model, optimizer) configuration: SHA-256 of its canonical JSON, so that a
/// contribution trained under other settings cannot pass as this job's.
pub fn config_id(model: &ModelConfig, train: &TrainConfig) -> Hash256 {
    let json = serde_json::to_vec(&(model, train)).expect("configs serialize");
    Hash256::digest_parts("deai-train-config-v1", &[&json])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_count_parameters() {
        for name in ["tiny", "small", "demo"] {
            let c = ModelConfig::preset(name).unwrap();
            c.validate().unwrap();
            let embd = c.vocab * c.d_model;
            let layer = 4 * c.d_model * c.d_model + 3 * c.d_model * c.d_ff + 2 * c.d_model;
            assert_eq!(c.n_params(), embd + c.n_layer * layer + c.d_model);
        }
        let demo = ModelConfig::preset("demo").unwrap().n_params();
        assert!((5_000_000..20_000_000).contains(&demo), "{demo}");
        assert!(ModelConfig::preset("huge").is_none());
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut c = ModelConfig::preset("tiny").unwrap();
        c.n_head = 3;
        assert!(c.validate().is_err());
        let mut c = ModelConfig::preset("tiny").unwrap();
        c.vocab = 1000;
        assert!(c.validate().is_err());
        let t = TrainConfig {
            lr: f32::NAN,
            ..TrainConfig::default()
        };
        assert!(t.validate().is_err());
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let t = TrainConfig {
            lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            ..TrainConfig::default()
        };
        assert!((t.lr_at(0) - 0.1).abs() < 1e-6);
        assert!((t.lr_at(9) - 1.0).abs() < 1e-6);
        assert!((t.lr_at(10) - 1.0).abs() < 1e-6);
        assert!((t.lr_at(60) - 0.55).abs() < 1e-5);
        assert!((t.lr_at(110) - 0.1).abs() < 1e-6);
        assert!((t.lr_at(10_000) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn later_rounds_ramp_up_again_but_the_first_and_a_single_run_do_not() {
        let t = TrainConfig {
            lr: 1.0,
            warmup_steps: 10,
            round_warmup_steps: 4,
            total_steps: 110,
            ..TrainConfig::default()
        };
        // A single run (or round 0): inner step == global step, the schedule alone.
        for g in 0..30 {
            assert_eq!(t.lr_in_round(g, g), t.lr_at(g));
        }
        // A later round: a ramp of 4 steps on top of the schedule, then the schedule.
        let g0 = 50;
        for k in 0..4u64 {
            let want = t.lr_at(g0 + k) * (k + 1) as f32 / 4.0;
            assert_eq!(t.lr_in_round(g0 + k, k), want);
            assert!(t.lr_in_round(g0 + k, k) < t.lr_at(g0 + k) || k == 3);
        }
        assert_eq!(t.lr_in_round(g0 + 4, 4), t.lr_at(g0 + 4));
        let off = TrainConfig {
            round_warmup_steps: 0,
            ..t
        };
        assert_eq!(off.lr_in_round(g0, 0), off.lr_at(g0));
    }

    #[test]
    fn a_config_without_the_round_warmup_keeps_its_meaning_and_its_json() {
        let old = TrainConfig {
            round_warmup_steps: 0,
            ..TrainConfig::default()
        };
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("round_warmup"), "{json}");
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, old);
        assert_eq!(TrainConfig::default().round_warmup_steps, 6);
        let new = serde_json::to_string(&TrainConfig::default()).unwrap();
        assert!(new.contains("\"round_warmup_steps\":6"), "{new}");
    }

    #[test]
    fn config_id_changes_with_any_setting() {
        let m = ModelConfig::preset("tiny").unwrap();
        let t = TrainConfig::default();
        let a = config_id(&m, &t);
        assert_eq!(a, config_id(&m, &t));
        let t2 = TrainConfig { seed: 2, ..t };
        assert_ne!(a, config_id(&m, &t2));
    }
}
