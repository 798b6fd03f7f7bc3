//! The llama-family model file: configuration from GGUF metadata, weights, and one forward
//! pass that serves decode (one token), prefill (many) and prefix-reusing prefill alike.
//!
//! Every position is computed by the same per-row functions whatever the batch: matmuls go
//! through [`crate::kernels::dot_rows`], attention reduces each query row over its keys in
//! position order, norms and activations are row-local. That is what makes decode, prefill
//! and cached-prefix prefill bit-identical (see `tests/invariance.rs`).

use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, WType};
use crate::kernels::{self, Acts};
use crate::kv::KvCache;
use crate::quant::{QActs, QMatrix};
use crate::tokenizer::Tokenizer;
use rayon::prelude::*;
use std::path::Path;

/// Hyper-parameters of a llama-family model, read from `llama.*` GGUF keys.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub n_ctx: usize,
}

impl LlamaConfig {
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(EngineError::Unsupported(format!(
                "architecture {arch:?}: this engine runs llama-family models only"
            )));
        }
        let u = |k: &str| -> Result<usize> {
            let v = g.get_uint(&format!("llama.{k}"))?;
            usize::try_from(v)
                .ok()
                .filter(|v| *v > 0 && *v <= 1 << 20)
                .ok_or_else(|| EngineError::Gguf(format!("llama.{k} = {v} is out of range")))
        };
        let n_head = u("attention.head_count")?;
        let d_model = u("embedding_length")?;
        let n_kv_head = match g.get("llama.attention.head_count_kv") {
            Some(_) => u("attention.head_count_kv")?,
            None => n_head,
        };
        let head_dim = d_model / n_head;
        let vocab = g.tensor_info("token_embd.weight")?.1[0];
        let cfg = LlamaConfig {
            n_layer: u("block_count")?,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            d_ff: u("feed_forward_length")?,
            vocab,
            rope_base: match g.get("llama.rope.freq_base") {
                Some(_) => g.get_f32("llama.rope.freq_base")?,
                None => 10000.0,
            },
            rms_eps: g.get_f32("llama.attention.layer_norm_rms_epsilon")?,
            n_ctx: u("context_length")?,
        };
        cfg.validate()?;
        if let Some(v) = g.get("llama.rope.dimension_count") {
            let rd = crate::gguf::value_as_u64(v).unwrap_or(0);
            if rd as usize != head_dim {
                return Err(EngineError::Unsupported(format!(
                    "partial rotary embeddings (rope dim {rd} != head dim {head_dim})"
                )));
            }
        }
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Unsupported(m));
        if !self.d_model.is_multiple_of(self.n_head) || !self.head_dim.is_multiple_of(8) {
            return bad(format!(
                "embedding {} / heads {} must give a head size that is a multiple of 8",
                self.d_model, self.n_head
            ));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad(format!(
                "{} heads are not a multiple of {} kv heads",
                self.n_head, self.n_kv_head
            ));
        }
        if !self.d_model.is_multiple_of(32) || !self.d_ff.is_multiple_of(32) {
            return bad("embedding and feed-forward sizes must be multiples of 32".into());
        }
        let eps_ok = self.rms_eps.is_finite() && self.rms_eps > 0.0;
        let base_ok = self.rope_base.is_finite() && self.rope_base > 1.0;
        if !eps_ok || !base_ok {
            return bad(format!(
                "rms eps {} / rope base {} out of range",
                self.rms_eps, self.rope_base
            ));
        }
        Ok(())
    }
}

/// Projections that read the same input (q/k/v; gate/up). When their formats match they are
/// stacked into one matrix, so one parallel pass (and one activation quantization) serves all.
struct Proj {
    mats: Vec<QMatrix>,
    widths: Vec<usize>,
}

impl Proj {
    fn new(parts: Vec<QMatrix>) -> Self {
        let widths = parts.iter().map(|m| m.rows).collect();
        let refs: Vec<&QMatrix> = parts.iter().collect();
        match QMatrix::vstack(&refs) {
            Some(m) => Proj {
                mats: vec![m],
                widths,
            },
            None => Proj {
                mats: parts,
                widths,
            },
        }
    }

    /// Outputs, one `t x width` matrix per projection.
    fn apply(&self, x: &[f32], t: usize, qa: &mut QActs, simd: bool) -> Vec<Vec<f32>> {
        let cols = self.mats[0].cols;
        if self.mats.len() == 1 {
            let m = &self.mats[0];
            let y = matmul(m, quantize_for(m, x, t, cols, qa, simd), t, simd);
            let total = m.rows;
            let mut outs: Vec<Vec<f32>> = self
                .widths
                .iter()
                .map(|w| Vec::with_capacity(t * w))
                .collect();
            for row in y.chunks_exact(total) {
                let mut off = 0;
                for (o, w) in outs.iter_mut().zip(&self.widths) {
                    o.extend_from_slice(&row[off..off + w]);
                    off += w;
                }
            }
            outs
        } else {
            self.mats
                .iter()
                .map(|m| matmul(m, quantize_for(m, x, t, cols, qa, simd), t, simd))
                .collect()
        }
    }

    fn bytes(&self) -> usize {
        self.mats.iter().map(|m| m.data.len()).sum()
    }

    fn wtype(&self) -> WType {
        self.mats[0].wtype
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    qkv: Proj,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate_up: Proj,
    w_down: QMatrix,
}

/// A loaded model: weights in their GGUF formats plus the tokenizer.
pub struct Model {
    pub cfg: LlamaConfig,
    pub tokenizer: Tokenizer,
    /// The storage type of most matmul weights (e.g. `Q4_1`), for reporting.
    pub weights_type: WType,
    tok_embd: QMatrix,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// `None`: tied embeddings, the LM head is `tok_embd`.
    lm_head: Option<QMatrix>,
}

/// What one forward pass returns.
#[derive(Clone, Debug, Default)]
pub struct ForwardOut {
    /// Post-final-norm hidden states (the LM-head input), `tokens.len() x d_model`.
    pub hidden: Vec<f32>,
    /// Logits for rows `logits_from..tokens.len()` (relative to this call), `n x vocab`.
    pub logits: Vec<f32>,
    /// First row (relative to this call) that has logits.
    pub logits_from: usize,
}

impl Model {
    pub fn load(path: &Path) -> Result<Self> {
        let mut g = GgufFile::open(path)?;
        Self::from_gguf(&mut g)
    }

    pub fn from_gguf(g: &mut GgufFile) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let tokenizer = Tokenizer::from_gguf(g)?;
        if tokenizer.vocab_size() != cfg.vocab {
            return Err(EngineError::Gguf(format!(
                "tokenizer has {} tokens but token_embd has {} rows",
                tokenizer.vocab_size(),
                cfg.vocab
            )));
        }
        let (d, kv, ff) = (cfg.d_model, cfg.kv_dim(), cfg.d_ff);
        let has_output = g.has_tensor("output.weight");
        let mut mat = |name: &str, rows: usize, cols: usize| -> Result<QMatrix> {
            let m = QMatrix::from_raw(name, g.read_tensor(name)?)?;
            if (m.rows, m.cols) != (rows, cols) {
                return Err(EngineError::Gguf(format!(
                    "{name}: expected {rows}x{cols}, file has {}x{}",
                    m.rows, m.cols
                )));
            }
            Ok(m.into_kernel_form())
        };
        let tok_embd = mat("token_embd.weight", cfg.vocab, d)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let qkv = Proj::new(vec![
                mat(&p("attn_q"), d, d)?,
                mat(&p("attn_k"), kv, d)?,
                mat(&p("attn_v"), kv, d)?,
            ]);
            let wo = mat(&p("attn_output"), d, d)?;
            let gate_up = Proj::new(vec![mat(&p("ffn_gate"), ff, d)?, mat(&p("ffn_up"), ff, d)?]);
            layers.push(Layer {
                attn_norm: vec![],
                qkv,
                wo,
                ffn_norm: vec![],
                gate_up,
                w_down: mat(&p("ffn_down"), d, ff)?,
            });
        }
        let lm_head = if has_output {
            Some(mat("output.weight", cfg.vocab, d)?)
        } else {
            None
        };
        let mut vec_f32 = |name: &str| -> Result<Vec<f32>> {
            let t = g.read_tensor(name)?;
            if t.dims.iter().product::<usize>() != d {
                return Err(EngineError::Gguf(format!(
                    "{name}: expected {d} values, dims {:?}",
                    t.dims
                )));
            }
            let mut out = vec![0f32; d];
            crate::quant::dequantize_row(t.wtype, &t.data, &mut out);
            Ok(out)
        };
        for (i, l) in layers.iter_mut().enumerate() {
            l.attn_norm = vec_f32(&format!("blk.{i}.attn_norm.weight"))?;
            l.ffn_norm = vec_f32(&format!("blk.{i}.ffn_norm.weight"))?;
        }
        let out_norm = vec_f32("output_norm.weight")?;
        let weights_type = layers.first().map_or(tok_embd.wtype, |l| l.gate_up.wtype());
        Ok(Model {
            cfg,
            tokenizer,
            weights_type,
            tok_embd,
            layers,
            out_norm,
            lm_head,
        })
    }

    fn lm_head(&self) -> &QMatrix {
        self.lm_head.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Bytes held by weights (for memory reporting).
    pub fn weight_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.gate_up.bytes() + l.wo.data.len() + l.w_down.data.len())
            .sum();
        l + self.tok_embd.data.len() + self.lm_head.as_ref().map_or(0, |m| m.data.len())
    }

    /// Run `tokens` at positions `cache.len()..`, appending their keys/values to `cache`.
    /// Logits are computed for rows `logits_from..tokens.len()` only (the LM head is the
    /// largest matmul; generation needs the last row, validation the generated rows).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<ForwardOut> {
        self.forward_on(tokens, cache, logits_from, kernels::simd_available())
    }

    /// [`Model::forward`] on a chosen code path: `simd = false` forces the portable kernels
    /// (same bits; used to test that claim), `true` uses AVX2 where available.
    pub fn forward_on(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
        simd: bool,
    ) -> Result<ForwardOut> {
        let simd = simd && kernels::simd_available();
        let c = &self.cfg;
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let needed = cache.len() + tokens.len();
        if needed > cache.capacity() {
            return Err(EngineError::ContextOverflow {
                needed,
                n_ctx: cache.capacity(),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(EngineError::InvalidParam(format!(
                "token id {bad} is outside the vocabulary ({})",
                c.vocab
            )));
        }
        let t = tokens.len();
        let d = c.d_model;
        let pos0 = cache.len();
        let mut x = vec![0f32; t * d];
        for (row, &tok) in x.chunks_exact_mut(d).zip(tokens) {
            self.tok_embd.dequantize_row(tok as usize, row);
        }
        let (cos, sin) = rope_table(c, pos0, t);
        let mut xn = vec![0f32; t * d];
        let mut attn = vec![0f32; t * d];
        let mut qa = QActs::default();
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, c.rms_eps, &mut xn, simd);
            let mut qkv = l.qkv.apply(&xn, t, &mut qa, simd).into_iter();
            let (mut q, mut k, v) = (
                qkv.next().unwrap(),
                qkv.next().unwrap(),
                qkv.next().unwrap(),
            );
            rope(&mut q, c.head_dim, &cos, &sin);
            rope(&mut k, c.head_dim, &cos, &sin);
            cache.write(li, pos0, &k, &v);
            attention(
                c,
                cache.keys(li),
                cache.values(li),
                &q,
                pos0,
                &mut attn,
                simd,
            );
            let acts = quantize_for(&l.wo, &attn, t, d, &mut qa, simd);
            let o = matmul(&l.wo, acts, t, simd);
            add_in_place(&mut x, &o);

            rms_norm(&x, &l.ffn_norm, c.rms_eps, &mut xn, simd);
            let mut gu = l.gate_up.apply(&xn, t, &mut qa, simd).into_iter();
            let (mut gate, up) = (gu.next().unwrap(), gu.next().unwrap());
            kernels::swiglu(&mut gate, &up, simd);
            let acts = quantize_for(&l.w_down, &gate, t, c.d_ff, &mut qa, simd);
            let down = matmul(&l.w_down, acts, t, simd);
            add_in_place(&mut x, &down);
        }
        cache.advance(t);
        let mut hidden = vec![0f32; t * d];
        rms_norm(&x, &self.out_norm, c.rms_eps, &mut hidden, simd);
        let logits_from = logits_from.min(t);
        let n = t - logits_from;
        let logits = if n == 0 {
            vec![]
        } else {
            let h = &hidden[logits_from * d..];
            let acts = quantize_for(self.lm_head(), h, n, d, &mut qa, simd);
            matmul(self.lm_head(), acts, n, simd)
        };
        Ok(ForwardOut {
            hidden,
            logits,
            logits_from,
        })
    }
}

fn quantize_for<'a>(
    m: &QMatrix,
    x: &'a [f32],
    rows: usize,
    cols: usize,
    qa: &'a mut QActs,
    simd: bool,
) -> Acts<'a> {
    if m.wtype.is_quantized() {
        qa.quantize_into(x, rows, cols, simd);
        Acts::Q(qa)
    } else {
        Acts::F(x, cols)
    }
}

/// Rows per parallel task. Small enough that 2-16 threads get balanced work on a 576-row
/// matrix, large enough to amortize scheduling.
const ROW_CHUNK: usize = 16;

/// `out[t][r] = dot(W[r], x[t])` for all rows of `m` and `t` activation rows. The work split
/// (threads, tiles) never changes any output's operation sequence.
pub fn matmul(m: &QMatrix, acts: Acts, t: usize, simd: bool) -> Vec<f32> {
    let rows = m.rows;
    let mut out_t = vec![0f32; rows * t]; // [row][t]
    out_t
        .par_chunks_mut(ROW_CHUNK * t)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let r0 = ci * ROW_CHUNK;
            let n = chunk.len() / t;
            let w = &m.data[r0 * m.row_bytes..(r0 + n) * m.row_bytes];
            kernels::matmul_rows(m.wtype, w, m.row_bytes, acts, t, chunk, simd);
        });
    if t == 1 {
        return out_t;
    }
    // Back to [t][row], 16 activation rows per task: reads stay within cache lines.
    let mut out = vec![0f32; rows * t];
    out.par_chunks_mut(16 * rows)
        .enumerate()
        .for_each(|(bi, block)| {
            let t0 = bi * 16;
            let n = block.len() / rows;
            for r in 0..rows {
                let src = &out_t[r * t + t0..r * t + t0 + n];
                for (i, v) in src.iter().enumerate() {
                    block[i * rows + r] = *v;
                }
            }
        });
    out
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], simd: bool) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss = kernels::dot_f32(xr, xr, simd);
        let scale = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = (*xv * scale) * *wv;
        }
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += *b;
    }
}

/// cos/sin for positions `pos0..pos0+t`, `head_dim/2` pairs each, computed in f64 with `libm`
/// (platform-independent bits) and rounded to f32.
fn rope_table(c: &LlamaConfig, pos0: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let half = c.head_dim / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in pos0..pos0 + t {
        for i in 0..half {
            let theta = libm::pow(c.rope_base as f64, -2.0 * i as f64 / c.head_dim as f64);
            let a = p as f64 * theta;
            cos.push(libm::cos(a) as f32);
            sin.push(libm::sin(a) as f32);
        }
    }
    (cos, sin)
}

/// Rotate adjacent pairs (GGUF llama weights are permuted for this "normal" rope layout).
fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    let t = cos.len() / half;
    let width = x.len() / t;
    for (ti, row) in x.chunks_exact_mut(width).enumerate() {
        let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * c[i] - b * s[i];
                head[2 * i + 1] = a * s[i] + b * c[i];
            }
        }
    }
}

/// Causal attention for query rows at positions `pos0..`, each reduced over its keys
/// `0..=pos` in position order: the result for a row is independent of the batch.
fn attention(
    c: &LlamaConfig,
    keys: &[f32],
    values: &[f32],
    q: &[f32],
    pos0: usize,
    out: &mut [f32],
    simd: bool,
) {
    let hd = c.head_dim;
    let kvd = c.kv_dim();
    let group = c.n_head / c.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd)
        .enumerate()
        .for_each_init(Vec::new, |scores, (i, o)| {
            let (t, h) = (i / c.n_head, i % c.n_head);
            let g = kernels::AttnRow {
                n_keys: pos0 + t + 1,
                stride: kvd,
                offset: (h / group) * hd,
                scale,
            };
            let qh = &q[t * c.d_model + h * hd..][..hd];
            kernels::attend_row(qh, keys, values, g, scores, o, simd);
        });
}
