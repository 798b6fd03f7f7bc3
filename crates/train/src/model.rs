//! The trainable llama: weights as plain host vectors (the optimizer's master copy, hashed and
//! quantized exactly), and a candle autograd graph that computes the same forward pass the
//! engine runs at inference (checked against the engine in `tests`).

use crate::config::ModelConfig;
use crate::data::Batch;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor, Var, D};
use deai_types::Hash256;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// RMSNorm epsilon and RoPE base, written into exported GGUF files.
pub const RMS_EPS: f32 = 1e-5;
pub const ROPE_BASE: f32 = 10000.0;

/// Model weights in [`ModelConfig::tensors`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub cfg: ModelConfig,
    pub tensors: Vec<Vec<f32>>,
}

impl Weights {
    /// Seeded initialization: norms 1, matrices normal with std 0.02, residual output
    /// projections scaled by `1/sqrt(2 n_layer)` (GPT-2 style).
    pub fn init(cfg: &ModelConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = move || {
            // Box-Muller on two uniform (0,1] values from 53 random bits each.
            let u = |r: &mut ChaCha8Rng| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let (a, b) = (u(&mut rng), u(&mut rng));
            ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
        };
        let resid = 0.02 / (2.0 * cfg.n_layer as f32).sqrt();
        let tensors = cfg
            .tensors()
            .iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                if shape.len() == 1 {
                    vec![1.0; n]
                } else {
                    let std = if name.ends_with("attn_output.weight")
                        || name.ends_with("ffn_down.weight")
                    {
                        resid
                    } else {
                        0.02
                    };
                    (0..n).map(|_| normal() * std).collect()
                }
            })
            .collect();
        Ok(Weights {
            cfg: cfg.clone(),
            tensors,
        })
    }

    /// Checks names, shapes and finiteness against `cfg`'s layout.
    pub fn check(&self) -> Result<()> {
        self.cfg.validate()?;
        let layout = self.cfg.tensors();
        if layout.len() != self.tensors.len() {
            return Err(TrainError::Shape(format!(
                "{} tensors, the config has {}",
                self.tensors.len(),
                layout.len()
            )));
        }
        for ((name, shape), t) in layout.iter().zip(&self.tensors) {
            if t.len() != shape.iter().product::<usize>() {
                return Err(TrainError::Shape(format!(
                    "{name} has {} values, shape {shape:?} needs {}",
                    t.len(),
                    shape.iter().product::<usize>()
                )));
            }
            if let Some(i) = t.iter().position(|v| !v.is_finite()) {
                return Err(TrainError::NonFinite(format!("{name}[{i}] = {}", t[i])));
            }
        }
        Ok(())
    }

    /// Content hash: SHA-256 over the config and every value's bits, in canonical order.
    pub fn hash(&self) -> Hash256 {
        let mut h = Sha256::new();
        h.update(b"deai-weights-v1\0");
        h.update(serde_json::to_vec(&self.cfg).expect("config serializes"));
        for t in &self.tensors {
            h.update((t.len() as u64).to_le_bytes());
            hash_f32s(&mut h, t);
        }
        Hash256(h.finalize().into())
    }

    pub fn n_params(&self) -> usize {
        self.tensors.iter().map(|t| t.len()).sum()
    }
}

/// Feeds the little-endian bytes of `v` to `h` (in bounded chunks, without a full copy).
pub(crate) fn hash_f32s(h: &mut Sha256, v: &[f32]) {
    let mut buf = [0u8; 4096];
    for chunk in v.chunks(1024) {
        for (o, x) in buf.chunks_exact_mut(4).zip(chunk) {
            o.copy_from_slice(&x.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
}

/// The autograd graph: one candle `Var` per tensor, reloaded from host weights each step.
pub struct Net {
    cfg: ModelConfig,
    vars: Vec<Var>,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl Net {
    pub fn new(w: &Weights) -> Result<Net> {
        w.check()?;
        let dev = Device::Cpu;
        let cfg = w.cfg.clone();
        let vars = cfg
            .tensors()
            .iter()
            .zip(&w.tensors)
            .map(|((_, shape), t)| {
                Var::from_tensor(&Tensor::from_slice(t, shape.as_slice(), &dev)?)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (t, half, hd) = (cfg.seq_len, cfg.head_dim() / 2, cfg.head_dim());
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for i in 0..half {
                // As the engine: f64 with libm, rounded to f32.
                let theta = libm::pow(ROPE_BASE as f64, -2.0 * i as f64 / hd as f64);
                let a = p as f64 * theta;
                cos.push(libm::cos(a) as f32);
                sin.push(libm::sin(a) as f32);
            }
        }
        let mask: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        Ok(Net {
            cos: Tensor::from_vec(cos, (t, half), &dev)?,
            sin: Tensor::from_vec(sin, (t, half), &dev)?,
            mask: Tensor::from_vec(mask, (t, t), &dev)?,
            cfg,
            vars,
        })
    }

    /// Replaces the graph's parameters with `w` (same config).
    pub fn load(&self, w: &Weights) -> Result<()> {
        if w.cfg != self.cfg {
            return Err(TrainError::Shape("weights of another config".into()));
        }
        for ((var, t), (_, shape)) in self.vars.iter().zip(&w.tensors).zip(self.cfg.tensors()) {
            var.set(&Tensor::from_slice(t, shape.as_slice(), &Device::Cpu)?)?;
        }
        Ok(())
    }

    fn rms_norm(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + RMS_EPS as f64)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(w)
    }

    /// Adjacent-pair rotation of `x` (b, h, t, hd), as the engine's `rope`.
    fn rope(&self, x: &Tensor, t: usize) -> candle_core::Result<Tensor> {
        let (b, h, _, hd) = x.dims4()?;
        let x = x.reshape((b, h, t, hd / 2, 2))?;
        let a = x.narrow(4, 0, 1)?.squeeze(4)?;
        let c = x.narrow(4, 1, 1)?.squeeze(4)?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let ra = (a.broadcast_mul(&cos)? - c.broadcast_mul(&sin)?)?;
        let rc = (a.broadcast_mul(&sin)? + c.broadcast_mul(&cos)?)?;
        Tensor::stack(&[ra, rc], 4)?.reshape((b, h, t, hd))
    }

    /// Logits `(b*t, vocab)` for `inputs` (`b` rows of `t` tokens).
    fn forward(&self, inputs: &[u32], b: usize, t: usize) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let (d, nh, hd) = (c.d_model, c.n_head, c.head_dim());
        let ids = Tensor::from_slice(inputs, b * t, &Device::Cpu)?;
        let embd = self.vars[0].as_tensor();
        let mut x = embd.embedding(&ids)?; // (b*t, d)
        let lin = |x: &Tensor, w: &Var| x.matmul(&w.as_tensor().t()?);
        let scale = 1.0 / (hd as f64).sqrt();
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        for l in 0..c.n_layer {
            let v = &self.vars[1 + 9 * l..1 + 9 * (l + 1)];
            let h = Self::rms_norm(&x, v[0].as_tensor())?;
            let heads = |y: Tensor| y.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous();
            let q = self.rope(&heads(lin(&h, &v[1])?)?, t)?;
            let k = self.rope(&heads(lin(&h, &v[2])?)?, t)?;
            let vv = heads(lin(&h, &v[3])?)?;
            let att = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let max = att.max_keepdim(D::Minus1)?.detach();
            let e = att.broadcast_sub(&max)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let y = p
                .matmul(&vv)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, d))?;
            x = (x + lin(&y, &v[4])?)?;
            let h = Self::rms_norm(&x, v[5].as_tensor())?;
            let g = lin(&h, &v[6])?.silu()?;
            let u = lin(&h, &v[7])?;
            x = (x + lin(&(g * u)?, &v[8])?)?;
        }
        let x = Self::rms_norm(&x, self.vars[self.vars.len() - 1].as_tensor())?;
        x.matmul(&embd.t()?)
    }

    fn loss_tensor(&self, batch: &Batch) -> Result<Tensor> {
        let (b, t) = (batch.batch, batch.seq_len);
        if t > self.cfg.seq_len || batch.inputs.len() != b * t || batch.targets.len() != b * t {
            return Err(TrainError::Shape(format!(
                "batch {b}x{t} with {} inputs (context {})",
                batch.inputs.len(),
                self.cfg.seq_len
            )));
        }
        if let Some(bad) = batch
            .inputs
            .iter()
            .chain(&batch.targets)
            .find(|v| **v as usize >= self.cfg.vocab)
        {
            return Err(TrainError::Data(format!(
                "token {bad} outside the vocabulary"
            )));
        }
        let logits = self.forward(&batch.inputs, b, t)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let targets = Tensor::from_slice(&batch.targets, (b * t, 1), &Device::Cpu)?;
        let picked = shifted.gather(&targets, 1)?;
        Ok((lse - picked)?.mean_all()?)
    }

    /// The graph's parameters, in canonical order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Backward pass of `batch`'s loss, as candle's gradient store (for plain candle loops).
    pub fn loss_grad_store(&self, batch: &Batch) -> Result<candle_core::backprop::GradStore> {
        Ok(self.loss_tensor(batch)?.backward()?)
    }

    /// Mean cross-entropy of `batch` and the gradient of every tensor (canonical order).
    pub fn loss_and_grads(&self, batch: &Batch) -> Result<(f32, Vec<Vec<f32>>)> {
        let loss = self.loss_tensor(batch)?;
        let grads = loss.backward()?;
        let g = self
            .vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?),
                None => Ok(vec![0.0; v.elem_count()]),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((loss.to_scalar::<f32>()?, g))
    }

    /// Mean cross-entropy per token over `batches` (no gradients).
    pub fn eval_loss(&self, batches: &[Batch]) -> Result<f32> {
        let (mut sum, mut n) = (0f64, 0usize);
        for b in batches {
            let l = self.loss_tensor(b)?.detach().to_scalar::<f32>()?;
            sum += l as f64 * (b.batch * b.seq_len) as f64;
            n += b.batch * b.seq_len;
        }
        if n == 0 {
            return Err(TrainError::Data("no evaluation windows".into()));
        }
        Ok((sum / n as f64) as f32)
    }

    /// Logits of every position of one sequence, `tokens.len() x vocab` (for tests and
    /// comparison with the engine).
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(self
            .forward(tokens, 1, tokens.len())?
            .detach()
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }
}
