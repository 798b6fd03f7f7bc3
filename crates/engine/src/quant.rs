//! Quantized weight matrices and activation quantization.
//!
//! Weights stay in their GGUF block layout (`Q4_0`, `Q4_1`, `Q8_0`, `F16`, `F32`). Activations
//! feeding a quantized matrix are quantized per 32-element block to 8 bits (`QActs`), exactly
//! as llama.cpp does, by a scalar routine whose result depends only on the row itself.

use crate::error::{EngineError, Result};
use crate::tensor::{RawTensor, WType};

pub const QK: usize = 32;

/// A weight matrix `[rows, cols]` in GGUF block layout: row `r` occupies
/// `data[r * row_bytes .. (r + 1) * row_bytes]`.
#[derive(Clone, Debug)]
pub struct QMatrix {
    pub wtype: WType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
}

impl QMatrix {
    pub fn new(wtype: WType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        let row_bytes = wtype.bytes_for(cols).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "{} rows of {cols} elements are not whole blocks",
                wtype.name()
            ))
        })?;
        if rows.checked_mul(row_bytes) != Some(data.len()) {
            return Err(EngineError::Gguf(format!(
                "{} matrix {rows}x{cols} needs {} bytes, got {}",
                wtype.name(),
                rows.saturating_mul(row_bytes),
                data.len()
            )));
        }
        Ok(Self {
            wtype,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// From a GGUF tensor of dims `[rows, cols]`.
    pub fn from_raw(name: &str, t: RawTensor) -> Result<Self> {
        if t.dims.len() != 2 {
            return Err(EngineError::Gguf(format!(
                "{name}: expected a 2-D tensor, got dims {:?}",
                t.dims
            )));
        }
        Self::new(t.wtype, t.dims[0], t.dims[1], t.data)
            .map_err(|e| EngineError::Gguf(format!("{name}: {e}")))
    }

    /// Stack matrices with the same type and width into one (rows concatenated).
    pub fn vstack(parts: &[&QMatrix]) -> Option<QMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.wtype != first.wtype || p.cols != first.cols)
        {
            return None;
        }
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            data.extend_from_slice(&p.data);
        }
        Some(QMatrix {
            wtype: first.wtype,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            row_bytes: first.row_bytes,
            data,
        })
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize one row into `out` (`cols` values). Exact: each value is one f32 product.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.wtype, self.row(r), out)
    }

    /// The form the kernels consume: F16 rows are widened to F32 once at load time (exact).
    pub fn into_kernel_form(self) -> Self {
        if self.wtype != WType::F16 {
            return self;
        }
        let mut data = Vec::with_capacity(self.data.len() * 2);
        for c in self.data.chunks_exact(2) {
            data.extend_from_slice(&f16_at(c, 0).to_le_bytes());
        }
        QMatrix {
            wtype: WType::F32,
            rows: self.rows,
            cols: self.cols,
            row_bytes: self.cols * 4,
            data,
        }
    }

    /// Quantize an f32 matrix into `wtype` (used to build test models and re-quantize).
    pub fn quantize(wtype: WType, rows: usize, cols: usize, x: &[f32]) -> Result<Self> {
        assert_eq!(x.len(), rows * cols, "quantize: shape mismatch");
        let mut data = Vec::new();
        for r in 0..rows {
            quantize_row_into(wtype, &x[r * cols..(r + 1) * cols], &mut data);
        }
        Self::new(wtype, rows, cols, data)
    }
}

#[inline]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

pub fn dequantize_row(wtype: WType, row: &[u8], out: &mut [f32]) {
    match wtype {
        WType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WType::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(row, 2 * i);
            }
        }
        WType::Q4_0 => {
            for (blk, o) in row.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    o[j] = d * ((blk[2 + j] & 15) as i32 - 8) as f32;
                    o[j + 16] = d * ((blk[2 + j] >> 4) as i32 - 8) as f32;
                }
            }
        }
        WType::Q4_1 => {
            for (blk, o) in row.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
                let d = f16_at(blk, 0);
                let m = f16_at(blk, 2);
                for j in 0..16 {
                    o[j] = d.mul_add((blk[4 + j] & 15) as f32, m);
                    o[j + 16] = d.mul_add((blk[4 + j] >> 4) as f32, m);
                }
            }
        }
        WType::Q8_0 => {
            for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
                let d = f16_at(blk, 0);
                for j in 0..QK {
                    o[j] = d * (blk[2 + j] as i8) as f32;
                }
            }
        }
    }
}

/// Quantize one row the way ggml's reference quantizers do (round to nearest).
pub fn quantize_row_into(wtype: WType, x: &[f32], out: &mut Vec<u8>) {
    let h = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    match wtype {
        WType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        WType::F16 => x.iter().for_each(|v| out.extend_from_slice(&h(*v))),
        WType::Q8_0 => {
            for b in x.chunks(QK) {
                let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&h(d));
                out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
        WType::Q4_0 => {
            for b in x.chunks(QK) {
                // ggml: the value of largest magnitude maps to -8.
                let mut max = 0f32;
                let mut amax = 0f32;
                for v in b {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = *v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&h(d));
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                for j in 0..16 {
                    out.push(q(b[j]) | (q(b[j + 16]) << 4));
                }
            }
        }
        WType::Q4_1 => {
            for b in x.chunks(QK) {
                let min = b.iter().fold(f32::INFINITY, |a, v| a.min(*v));
                let max = b.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&h(d));
                out.extend_from_slice(&h(min));
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                for j in 0..16 {
                    out.push(q(b[j]) | (q(b[j + 16]) << 4));
                }
            }
        }
    }
}

/// Activations quantized to 8 bits per 32-element block: `t` rows of `cols` values.
/// `d[b]` is the block scale, `s[b] = d[b] * sum(qs in block)` (needed by `Q4_1`).
#[derive(Clone, Debug, Default)]
pub struct QActs {
    pub rows: usize,
    pub blocks_per_row: usize,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub qs: Vec<i8>,
}

impl QActs {
    /// Quantize `rows` rows of `cols` values (`cols` a multiple of 32). Each row's result
    /// depends only on that row: this is what keeps matmuls batch-invariant.
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Self {
        let mut q = QActs::default();
        q.quantize_into(x, rows, cols, crate::simd::simd_available());
        q
    }

    /// `simd`: use the AVX2 code path (only when `simd::simd_available()`); both paths
    /// give identical bits.
    pub fn quantize_into(&mut self, x: &[f32], rows: usize, cols: usize, simd: bool) {
        debug_assert_eq!(cols % QK, 0);
        debug_assert_eq!(x.len(), rows * cols);
        let nb = rows * cols / QK;
        self.rows = rows;
        self.blocks_per_row = cols / QK;
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.qs.resize(nb * QK, 0);
        let (d, s, qs) = (
            &mut self.d[..nb],
            &mut self.s[..nb],
            &mut self.qs[..nb * QK],
        );
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX2 (which implies SSE4.1) confirmed at run time; the body is safe code.
            unsafe { quantize_blocks_avx2(&x[..nb * QK], d, s, qs) };
            return;
        }
        quantize_blocks(&x[..nb * QK], d, s, qs);
    }
}

/// Per 32-element block: scale 127/amax, round half to even, clamp to ±127 (as llama.cpp's
/// SIMD quantizer). Every operation is exactly rounded, so all code paths give the same bits.
#[inline(always)]
fn quantize_blocks(x: &[f32], ds: &mut [f32], ss: &mut [f32], qs: &mut [i8]) {
    for (((xb, qb), d), s) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(ds.iter_mut())
        .zip(ss.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in qb.iter_mut().zip(xb) {
            let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
            *q = r;
            sum += r as i32;
        }
        *d = amax / 127.0;
        *s = *d * sum as f32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,sse4.1")]
unsafe fn quantize_blocks_avx2(x: &[f32], ds: &mut [f32], ss: &mut [f32], qs: &mut [i8]) {
    quantize_blocks(x, ds, ss, qs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn quantize_dequantize_error_is_bounded() {
        let mut s = 7;
        let x: Vec<f32> = (0..4 * 64).map(|_| lcg(&mut s)).collect();
        for (wt, tol) in [
            (WType::F32, 0.0),
            (WType::F16, 1e-3),
            (WType::Q8_0, 0.01),
            (WType::Q4_1, 0.08),
            (WType::Q4_0, 0.15),
        ] {
            let m = QMatrix::quantize(wt, 4, 64, &x).unwrap();
            let mut out = vec![0f32; 64];
            for r in 0..4 {
                m.dequantize_row(r, &mut out);
                for (a, b) in out.iter().zip(&x[r * 64..]) {
                    assert!((a - b).abs() <= tol, "{wt:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(QMatrix::new(WType::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QMatrix::new(WType::Q4_1, 2, 33, vec![0; 40]).is_err());
        assert!(QMatrix::new(WType::Q4_1, 2, 32, vec![0; 40]).is_ok());
    }

    #[test]
    fn act_quant_rows_are_independent() {
        let mut s = 3;
        let x: Vec<f32> = (0..3 * 64).map(|_| lcg(&mut s) * 5.0).collect();
        let all = QActs::quantize(&x, 3, 64);
        let one = QActs::quantize(&x[64..128], 1, 64);
        assert_eq!(&all.qs[64..128], &one.qs[..]);
        assert_eq!(&all.d[2..4], &one.d[..]);
        assert!(all.qs.iter().all(|&q| q >= -127));
    }
}
