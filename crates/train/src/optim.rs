//! Optimizers on host vectors, written out so that every update is plain sequential f32
//! arithmetic (bit-reproducible at any thread count): AdamW with global-norm clipping for the
//! inner loop, Nesterov momentum for DiLoCo's outer step, and the inner-loop state that
//! contributions commit to step by step.

use crate::config::TrainConfig;
use crate::data::Shard;
use crate::model::{hash_f32s, Net, Weights};
use crate::{Result, TrainError};
use deai_types::codec::{Reader, Writer};
use deai_types::Hash256;
use sha2::{Digest, Sha256};

/// Everything one inner step reads and writes: weights, AdamW moments and the step count.
/// Its hash after every step is a leaf of a contribution's commitment.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub weights: Weights,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// Inner steps taken from the round's checkpoint.
    pub step: u64,
}

impl TrainState {
    /// The state a round starts from: the checkpoint and zero moments (inner optimizer state
    /// is reset every round, so a contribution depends only on public inputs).
    pub fn fresh(weights: Weights) -> Self {
        let zeros: Vec<Vec<f32>> = weights.tensors.iter().map(|t| vec![0.0; t.len()]).collect();
        TrainState {
            weights,
            m: zeros.clone(),
            v: zeros,
            step: 0,
        }
    }

    pub fn hash(&self) -> Hash256 {
        let mut h = Sha256::new();
        h.update(b"deai-train-state-v1\0");
        h.update(self.step.to_le_bytes());
        h.update(self.weights.hash().0);
        for t in self.m.iter().chain(&self.v) {
            hash_f32s(&mut h, t);
        }
        Hash256(h.finalize().into())
    }

    /// Canonical bytes (an opening sent to a validator): config JSON, step, then weights,
    /// first and second moments, each tensor as little-endian f32.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(b"DTS1");
        w.bytes(&serde_json::to_vec(&self.weights.cfg).expect("config serializes"));
        w.u64(self.step);
        for t in self.weights.tensors.iter().chain(&self.m).chain(&self.v) {
            for x in t {
                w.raw(&x.to_le_bytes());
            }
        }
        w.into_bytes()
    }

    /// Decodes [`TrainState::to_bytes`], refusing any other config, trailing bytes or
    /// non-finite values.
    pub fn from_bytes(b: &[u8], cfg: &crate::ModelConfig) -> Result<Self> {
        let bad =
            |e: deai_types::codec::DecodeError| TrainError::Decode(format!("train state: {e}"));
        let mut r = Reader::new(b);
        if r.raw(4, "magic").map_err(bad)? != b"DTS1" {
            return Err(TrainError::Decode("train state: bad magic".into()));
        }
        let cfg_json = r.bytes("config", 4096).map_err(bad)?;
        let got: crate::ModelConfig = serde_json::from_slice(cfg_json)
            .map_err(|e| TrainError::Decode(format!("train state config: {e}")))?;
        if serde_json::to_vec(&got).ok().as_deref() != Some(cfg_json) {
            return Err(TrainError::Decode(
                "train state: non-canonical config JSON".into(),
            ));
        }
        if &got != cfg {
            return Err(TrainError::Shape(format!(
                "train state is for {got:?}, the job trains {cfg:?}"
            )));
        }
        let step = r.u64("step").map_err(bad)?;
        let layout = cfg.tensors();
        let need = 3 * cfg.n_params() * 4;
        if r.remaining() != need {
            return Err(TrainError::Decode(format!(
                "train state has {} value bytes, the config needs {need}",
                r.remaining()
            )));
        }
        let mut read = || -> Result<Vec<Vec<f32>>> {
            layout
                .iter()
                .map(|(_, s)| {
                    let n: usize = s.iter().product();
                    let raw = r.raw(n * 4, "values").map_err(bad)?;
                    Ok(raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect())
                })
                .collect()
        };
        let tensors = read()?;
        let m = read()?;
        let v = read()?;
        r.finish().map_err(bad)?;
        let weights = Weights {
            cfg: cfg.clone(),
            tensors,
        };
        weights.check()?;
        if m.iter().chain(&v).flatten().any(|x| !x.is_finite()) {
            return Err(TrainError::NonFinite("optimizer moments".into()));
        }
        Ok(TrainState {
            weights,
            m,
            v,
            step,
        })
    }
}

/// Scales `grads` so that their global L2 norm is at most `max` (0 disables); returns the
/// norm before clipping. The norm is summed sequentially in f64.
pub fn clip_grads(grads: &mut [Vec<f32>], max: f32) -> f32 {
    let norm = grads
        .iter()
        .flatten()
        .map(|g| (*g as f64) * (*g as f64))
        .sum::<f64>()
        .sqrt() as f32;
    if max > 0.0 && norm > max {
        let s = max / (norm + 1e-6);
        grads.iter_mut().flatten().for_each(|g| *g *= s);
    }
    norm
}

/// One AdamW update of `state` with `grads` at learning rate `lr`. Weight decay applies to
/// matrices only (not to norm gains), decoupled as in AdamW.
pub fn adamw_step(state: &mut TrainState, grads: &[Vec<f32>], lr: f32, cfg: &TrainConfig) {
    let t = (state.step + 1) as i32;
    let bc1 = 1.0 - cfg.beta1.powi(t);
    let bc2 = 1.0 - cfg.beta2.powi(t);
    let layout = state.weights.cfg.tensors();
    for (i, g) in grads.iter().enumerate() {
        let decay = if layout[i].1.len() == 2 {
            cfg.weight_decay
        } else {
            0.0
        };
        let (w, m, v) = (
            &mut state.weights.tensors[i],
            &mut state.m[i],
            &mut state.v[i],
        );
        for j in 0..g.len() {
            m[j] = cfg.beta1 * m[j] + (1.0 - cfg.beta1) * g[j];
            v[j] = cfg.beta2 * v[j] + (1.0 - cfg.beta2) * g[j] * g[j];
            let upd = (m[j] / bc1) / ((v[j] / bc2).sqrt() + cfg.eps);
            w[j] -= lr * (upd + decay * w[j]);
        }
    }
    state.step += 1;
}

/// One inner step: loss and gradients on the batch drawn for `(seed, global_step)` from
/// `shard`, clipping, AdamW at [`TrainConfig::lr_in_round`]. Returns the loss. Refuses
/// non-finite losses or gradients.
pub fn train_step(
    net: &Net,
    state: &mut TrainState,
    shard: &Shard,
    cfg: &TrainConfig,
    seed: u64,
    global_step: u64,
) -> Result<f32> {
    net.load(&state.weights)?;
    let batch = shard.batch(state.weights.cfg.seq_len, cfg.batch, seed, global_step)?;
    let (loss, mut grads) = net.loss_and_grads(&batch)?;
    if !loss.is_finite() {
        return Err(TrainError::NonFinite(format!(
            "loss {loss} at step {global_step}"
        )));
    }
    let norm = clip_grads(&mut grads, cfg.grad_clip);
    if !norm.is_finite() {
        return Err(TrainError::NonFinite(format!(
            "gradient norm {norm} at step {global_step}"
        )));
    }
    let lr = cfg.lr_in_round(global_step, state.step);
    adamw_step(state, &grads, lr, cfg);
    Ok(loss)
}

/// SGD with Nesterov momentum for the outer step: `buf = mu*buf + g`,
/// `w -= lr * (g + mu*buf)`, with `g` the averaged pseudo-gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Nesterov {
    pub lr: f32,
    pub momentum: f32,
    pub buf: Vec<Vec<f32>>,
}

impl Nesterov {
    pub fn new(weights: &Weights, lr: f32, momentum: f32) -> Self {
        Nesterov {
            lr,
            momentum,
            buf: weights.tensors.iter().map(|t| vec![0.0; t.len()]).collect(),
        }
    }

    pub fn step(&mut self, weights: &mut Weights, grad: &[Vec<f32>]) {
        for ((w, b), g) in weights.tensors.iter_mut().zip(&mut self.buf).zip(grad) {
            for j in 0..g.len() {
                b[j] = self.momentum * b[j] + g[j];
                w[j] -= self.lr * (g[j] + self.momentum * b[j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;

    fn tiny() -> Weights {
        Weights::init(&ModelConfig::preset("tiny").unwrap(), 3).unwrap()
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![vec![3.0, 0.0], vec![4.0]];
        assert_eq!(clip_grads(&mut g, 1.0), 5.0);
        let n: f32 = g.iter().flatten().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "{n}");
        let mut g2 = vec![vec![0.3]];
        clip_grads(&mut g2, 1.0);
        assert_eq!(g2, vec![vec![0.3]]);
    }

    #[test]
    fn first_adamw_step_moves_each_weight_by_about_lr() {
        let mut s = TrainState::fresh(tiny());
        let before = s.weights.clone();
        let grads: Vec<Vec<f32>> = s
            .weights
            .tensors
            .iter()
            .map(|t| {
                t.iter()
                    .enumerate()
                    .map(|(i, _)| if i % 2 == 0 { 1.0 } else { -0.5 })
                    .collect()
            })
            .collect();
        let cfg = TrainConfig {
            weight_decay: 0.0,
            ..TrainConfig::default()
        };
        adamw_step(&mut s, &grads, 0.01, &cfg);
        assert_eq!(s.step, 1);
        for (a, b) in s
            .weights
            .tensors
            .iter()
            .flatten()
            .zip(before.tensors.iter().flatten())
        {
            assert!(((b - a).abs() - 0.01).abs() < 1e-4, "{a} {b}");
        }
    }

    #[test]
    fn nesterov_matches_the_closed_form_for_two_steps() {
        let mut w = tiny();
        let w0 = w.tensors[1][0];
        let mut opt = Nesterov::new(&w, 0.7, 0.9);
        let g: Vec<Vec<f32>> = w.tensors.iter().map(|t| vec![0.1; t.len()]).collect();
        opt.step(&mut w, &g);
        opt.step(&mut w, &g);
        // buf1 = 0.1, step1 = 0.1 + 0.09; buf2 = 0.19, step2 = 0.1 + 0.171.
        let want = w0 - 0.7 * (0.19 + 0.271);
        assert!((w.tensors[1][0] - want).abs() < 1e-5);
    }

    #[test]
    fn state_bytes_round_trip_and_refuse_corruption() {
        let mut s = TrainState::fresh(tiny());
        s.step = 5;
        s.m[0][3] = 0.25;
        let b = s.to_bytes();
        let cfg = s.weights.cfg.clone();
        let back = TrainState::from_bytes(&b, &cfg).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.hash(), s.hash());
        assert!(TrainState::from_bytes(&b[..b.len() - 1], &cfg).is_err());
        let mut nan = b.clone();
        let at = b.len() - 4;
        nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(TrainState::from_bytes(&nan, &cfg).is_err());
        let mut other = cfg.clone();
        other.d_ff = 96;
        assert!(TrainState::from_bytes(&b, &other).is_err());
        s.m[0][3] = 0.5;
        assert_ne!(s.hash(), back.hash(), "moments are committed");
    }
}
