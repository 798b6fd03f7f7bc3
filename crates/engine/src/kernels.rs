//! Batch-invariant CPU kernels.
//!
//! The numeric contract (kernel profile `deai-bi-v1`): every output element is produced by one
//! fixed sequence of IEEE-754 operations that depends only on its own inputs, never on how
//! many rows are processed together, on the thread count, or on whether the AVX2 or the
//! portable path runs. Concretely:
//!
//! * quantized dot products compute each 32-element block's integer sum exactly, split into
//!   8 lanes of 4 consecutive elements (the lane layout of `maddubs` + `madd`), accumulate
//!   each lane with a fused multiply-add `acc[l] = fma(dw*dx, isum[l], acc[l])`, then reduce
//!   the 8 lanes with the fixed tree of [`hsum8`];
//! * float dot products use the same 8-lane FMA accumulation over consecutive elements;
//! * transcendental functions come from the pure-Rust `libm` crate, so they give the same bits
//!   on every platform.
//!
//! The AVX2 path is therefore an *implementation* of the portable path, not an approximation
//! of it; `tests::simd_matches_portable` checks this.

use crate::quant::{f16_at, QActs, QK};
use crate::tensor::WType;

pub use crate::simd::{simd_available, simd_name, vnni_available};

/// Reduce 8 lanes in the fixed order `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, which is what
/// the AVX2 sequence (128-bit halves, then `movehl`, then a shuffle) computes.
#[inline(always)]
pub fn hsum8(l: [f32; 8]) -> f32 {
    let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let b = [a[0] + a[2], a[1] + a[3]];
    b[0] + b[1]
}

/// Run `$fast` (a kernel of the `avx2` module) when `$simd`, else `$portable`.
macro_rules! dispatch {
    ($simd:expr, $fast:expr, $portable:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if $simd {
            // SAFETY: callers pass `simd = true` only after `simd_available()` confirmed
            // AVX2, FMA and F16C at run time. The avx2 kernels either run the portable bodies
            // compiled with those features, or use intrinsics that read only within the
            // slices they are given (lengths are checked by their callers and debug asserts).
            return unsafe { $fast };
        }
        let _ = $simd;
        $portable
    }};
}

/// Activations for a matmul: quantized for quantized weights, plain f32 (`rows x cols`) for
/// float weights.
#[derive(Clone, Copy)]
pub enum Acts<'a> {
    Q(&'a QActs),
    F(&'a [f32], usize),
}

/// Dot products of one weight row with `N` consecutive activation rows `t0..t0+N`.
/// `out[i]` receives the dot with activation row `t0 + i`; each result is bit-identical to the
/// `N = 1` call for that row, on either code path.
#[inline]
pub fn dot_rows<const N: usize>(
    wtype: WType,
    wrow: &[u8],
    acts: Acts,
    t0: usize,
    simd: bool,
) -> [f32; N] {
    dispatch!(
        simd,
        match acts {
            Acts::Q(q) => avx2::dot_q(wtype, wrow, q, t0),
            Acts::F(x, cols) => avx2::dot_f32(wrow, x, cols, t0),
        },
        match acts {
            Acts::Q(q) => portable::dot_q(wtype, wrow, q, t0),
            Acts::F(x, cols) => portable::dot_f32(wrow, x, cols, t0),
        }
    )
}

/// Quantized-block integer dot for one 32-element block, as 8 lane sums of 4 elements.
#[inline(always)]
fn lanes_q(wtype: WType, wb: &[u8], xq: &[i8]) -> [i32; 8] {
    let mut w = [0i32; 32];
    match wtype {
        WType::Q4_0 => {
            for j in 0..16 {
                w[j] = (wb[2 + j] & 15) as i32 - 8;
                w[j + 16] = (wb[2 + j] >> 4) as i32 - 8;
            }
        }
        WType::Q4_1 => {
            for j in 0..16 {
                w[j] = (wb[4 + j] & 15) as i32;
                w[j + 16] = (wb[4 + j] >> 4) as i32;
            }
        }
        WType::Q8_0 => {
            for j in 0..32 {
                w[j] = wb[2 + j] as i8 as i32;
            }
        }
        _ => unreachable!("lanes_q on a float type"),
    }
    let mut l = [0i32; 8];
    for (k, lk) in l.iter_mut().enumerate() {
        for e in 4 * k..4 * k + 4 {
            *lk += w[e] * xq[e] as i32;
        }
    }
    l
}

mod portable {
    use super::*;

    pub fn dot_q<const N: usize>(wtype: WType, wrow: &[u8], acts: &QActs, t0: usize) -> [f32; N] {
        let bb = wtype.block_bytes();
        let nb = acts.blocks_per_row;
        let mut out = [0f32; N];
        for (i, o) in out.iter_mut().enumerate() {
            let t = t0 + i;
            let mut acc = [0f32; 8];
            let mut summs = 0f32;
            for b in 0..nb {
                let wb = &wrow[b * bb..(b + 1) * bb];
                let ab = t * nb + b;
                let xq = &acts.qs[ab * QK..(ab + 1) * QK];
                let lanes = lanes_q(wtype, wb, xq);
                let dd = f16_at(wb, 0) * acts.d[ab];
                for l in 0..8 {
                    acc[l] = dd.mul_add(lanes[l] as f32, acc[l]);
                }
                if wtype == WType::Q4_1 {
                    summs += f16_at(wb, 2) * acts.s[ab];
                }
            }
            *o = hsum8(acc) + summs;
        }
        out
    }

    pub fn dot_f32<const N: usize>(wrow: &[u8], fa: &[f32], cols: usize, t0: usize) -> [f32; N] {
        let mut out = [0f32; N];
        for (i, o) in out.iter_mut().enumerate() {
            let x = &fa[(t0 + i) * cols..(t0 + i + 1) * cols];
            let mut acc = [0f32; 8];
            for (wc, xc) in wrow.chunks_exact(32).zip(x.chunks_exact(8)) {
                for l in 0..8 {
                    let w = f32::from_le_bytes([
                        wc[4 * l],
                        wc[4 * l + 1],
                        wc[4 * l + 2],
                        wc[4 * l + 3],
                    ]);
                    acc[l] = w.mul_add(xc[l], acc[l]);
                }
            }
            *o = hsum8(acc);
        }
        out
    }
}

#[inline(always)]
fn dot8_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    hsum8(acc)
}

#[inline(always)]
fn axpy_body(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o = w.mul_add(*x, *o);
    }
}

/// Dot product of two f32 slices (length a multiple of 8) with the 8-lane FMA contract.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32], simd: bool) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    debug_assert_eq!(a.len() % 8, 0);
    dispatch!(simd, avx2::dot_ff(a, b), dot8_body(a, b))
}

/// `out[d] = fma(w, v[d], out[d])` for every d. Element-wise, so every path gives the same bits.
#[inline]
pub fn axpy(out: &mut [f32], w: f32, v: &[f32], simd: bool) {
    debug_assert_eq!(out.len(), v.len());
    dispatch!(simd, avx2::axpy(out, w, v), axpy_body(out, w, v))
}

#[inline(always)]
fn swiglu_body(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_f32(-*g)) * *u;
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, the llama feed-forward activation.
pub fn swiglu(gate: &mut [f32], up: &[f32], simd: bool) {
    dispatch!(simd, avx2::swiglu(gate, up), swiglu_body(gate, up))
}

/// Geometry of one attention row: which slice of the key/value rows belongs to this head.
#[derive(Clone, Copy)]
pub struct AttnRow {
    /// Keys 0..n_keys are attended (causal: the query's own position + 1).
    pub n_keys: usize,
    /// Stride between consecutive positions in `keys`/`values`.
    pub stride: usize,
    /// Offset of this head's slice within a position's row.
    pub offset: usize,
    pub scale: f32,
}

/// `exp(x)` for f32 from exactly rounded operations only (Cody-Waite reduction, degree-6
/// polynomial with FMA, exponent by bit construction), so it is identical on every path and
/// vectorizes. Max relative error ~2 ulp; `0` below -87.3, `inf` above 88.7.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer, ties to even
    if x.is_nan() {
        return x;
    }
    if x > 88.7 {
        return f32::INFINITY;
    }
    if x < -87.3 {
        return 0.0;
    }
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p: f32 = 1.0 / 720.0;
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn softmax_in_place(scores: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = exp_f32(*s - max);
        sum += *s;
    }
    sum
}

#[inline(always)]
fn attend_body(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    g: AttnRow,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    match q.len() {
        64 => attend_fixed::<64>(q, keys, values, g, scores, out),
        128 => attend_fixed::<128>(q, keys, values, g, scores, out),
        _ => attend_any(q, keys, values, g, scores, out),
    }
}

/// Head size known at compile time: the value accumulator lives in registers.
#[inline(always)]
fn attend_fixed<const HD: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    g: AttnRow,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let q: &[f32; HD] = q.try_into().expect("head size");
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in 0..g.n_keys {
        let k: &[f32; HD] = keys[j * g.stride + g.offset..][..HD]
            .try_into()
            .expect("key row");
        let s = dot8_body(q, k) * g.scale;
        max = max.max(s);
        scores.push(s);
    }
    let sum = softmax_in_place(scores, max);
    let mut acc = [0f32; HD];
    for (j, &w) in scores.iter().enumerate() {
        let v: &[f32; HD] = values[j * g.stride + g.offset..][..HD]
            .try_into()
            .expect("value row");
        for d in 0..HD {
            acc[d] = w.mul_add(v[d], acc[d]);
        }
    }
    let inv = 1.0 / sum;
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a * inv;
    }
}

#[inline(always)]
fn attend_any(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    g: AttnRow,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in 0..g.n_keys {
        let k = &keys[j * g.stride + g.offset..][..hd];
        let s = dot8_body(q, k) * g.scale;
        max = max.max(s);
        scores.push(s);
    }
    let sum = softmax_in_place(scores, max);
    out.fill(0.0);
    for (j, &w) in scores.iter().enumerate() {
        axpy_body(out, w, &values[j * g.stride + g.offset..][..hd]);
    }
    let inv = 1.0 / sum;
    for v in out.iter_mut() {
        *v *= inv;
    }
}

/// One query row of causal attention: scores against keys `0..n_keys` in position order,
/// softmax ([`exp_f32`], sequential sum), then the weighted sum of values in position order.
/// The result depends only on this row's inputs: the batch-invariance of attention.
pub fn attend_row(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    g: AttnRow,
    scores: &mut Vec<f32>,
    out: &mut [f32],
    simd: bool,
) {
    dispatch!(
        simd,
        avx2::attend_row(q, keys, values, g, scores, out),
        attend_body(q, keys, values, g, scores, out)
    )
}

/// `out[r][t] = dot(W[r], x[t])` for the `out.len() / t` consecutive weight rows in `w`
/// (`row_bytes` each) and activation rows `0..t`. Tiles of 4 activation rows share each
/// weight block's unpacking; the tile walks all activations while the rows stay in L1.
pub fn matmul_rows(
    wtype: WType,
    w: &[u8],
    row_bytes: usize,
    acts: Acts,
    t: usize,
    out: &mut [f32],
    simd: bool,
) {
    // `w` holds `out.len() / t` rows of `row_bytes` and `acts` holds `t` rows (`matmul`
    // guarantees both).
    dispatch!(
        simd,
        if vnni_available() {
            avx2::matmul_rows_vnni(wtype, w, row_bytes, acts, t, out)
        } else {
            avx2::matmul_rows(wtype, w, row_bytes, acts, t, out)
        },
        matmul_body(
            w,
            row_bytes,
            t,
            out,
            |r, t0| dot_rows::<1>(wtype, r, acts, t0, false)[0],
            |r, t0| dot_rows::<4>(wtype, r, acts, t0, false),
        )
    )
}

#[inline(always)]
fn matmul_body(
    w: &[u8],
    row_bytes: usize,
    t: usize,
    out: &mut [f32],
    dot1: impl Fn(&[u8], usize) -> f32,
    dot4: impl Fn(&[u8], usize) -> [f32; 4],
) {
    let rows = out.len() / t;
    let mut t0 = 0;
    while t0 + 4 <= t {
        for r in 0..rows {
            let v = dot4(&w[r * row_bytes..(r + 1) * row_bytes], t0);
            out[r * t + t0..r * t + t0 + 4].copy_from_slice(&v);
        }
        t0 += 4;
    }
    for tt in t0..t {
        for r in 0..rows {
            out[r * t + tt] = dot1(&w[r * row_bytes..(r + 1) * row_bytes], tt);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // [l0+l4, l1+l5, l2+l6, l3+l7]
        let a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        // [a0+a2, a1+a3, ..]
        let b = _mm_add_ps(a, _mm_movehl_ps(a, a));
        // (a0+a2) + (a1+a3)
        let c = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
        _mm_cvtss_f32(c)
    }

    /// 32 weights of a block as bytes: unsigned nibbles (Q4_*) or signed bytes (Q8_0).
    #[inline(always)]
    unsafe fn load_w(wtype: WType, wb: *const u8) -> __m256i {
        match wtype {
            WType::Q4_0 | WType::Q4_1 => {
                let off = if wtype == WType::Q4_0 { 2 } else { 4 };
                let tmp = _mm_loadu_si128(wb.add(off) as *const __m128i);
                let both = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
                let nib = _mm256_and_si256(both, _mm256_set1_epi8(15));
                if wtype == WType::Q4_0 {
                    _mm256_sub_epi8(nib, _mm256_set1_epi8(8))
                } else {
                    nib
                }
            }
            _ => _mm256_loadu_si256(wb.add(2) as *const __m256i),
        }
    }

    /// 8 lane sums of 4 products each. `signed_w`: weights are i8 (sign trick), else u8.
    /// `VNNI`: one `vpdpbusd` instead of `maddubs` + `madd`; the integer lane sums are the
    /// same (no saturation occurs for |x| <= 127), so the results are bit-identical.
    #[inline(always)]
    unsafe fn lanes<const VNNI: bool>(w: __m256i, x: __m256i, signed_w: bool) -> __m256 {
        let (u, s) = if signed_w {
            (_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
        } else {
            (w, x)
        };
        let i32s = if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        };
        _mm256_cvtepi32_ps(i32s)
    }

    /// Exact f16 -> f32 (the same value `half` computes in software).
    #[inline(always)]
    unsafe fn f16(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([*b.get_unchecked(i), *b.get_unchecked(i + 1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q<const N: usize>(
        wtype: WType,
        wrow: &[u8],
        acts: &QActs,
        t0: usize,
    ) -> [f32; N] {
        dot_q_body::<N, false>(wtype, wrow, acts, t0)
    }

    /// The quantized dot kernel; only ever inlined into functions that enable AVX2, FMA,
    /// F16C (and AVX512-VNNI/VL when `VNNI`).
    #[inline(always)]
    unsafe fn dot_q_body<const N: usize, const VNNI: bool>(
        wtype: WType,
        wrow: &[u8],
        acts: &QActs,
        t0: usize,
    ) -> [f32; N] {
        let bb = wtype.block_bytes();
        let nb = acts.blocks_per_row;
        debug_assert!(wrow.len() >= nb * bb);
        debug_assert!(acts.d.len() >= (t0 + N) * nb);
        let signed_w = wtype != WType::Q4_1;
        let mut acc = [_mm256_setzero_ps(); N];
        let mut summs = [0f32; N];
        let wp = wrow.as_ptr();
        for b in 0..nb {
            let wb = wp.add(b * bb);
            let w = load_w(wtype, wb);
            let dw = f16(wrow, b * bb);
            let mw = if wtype == WType::Q4_1 {
                f16(wrow, b * bb + 2)
            } else {
                0.0
            };
            for i in 0..N {
                let ab = (t0 + i) * nb + b;
                let x = _mm256_loadu_si256(acts.qs.as_ptr().add(ab * QK) as *const __m256i);
                let l = lanes::<VNNI>(w, x, signed_w);
                let dd = dw * *acts.d.get_unchecked(ab);
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dd), l, acc[i]);
                if wtype == WType::Q4_1 {
                    summs[i] += mw * *acts.s.get_unchecked(ab);
                }
            }
        }
        let mut out = [0f32; N];
        for i in 0..N {
            out[i] = hsum(acc[i]) + summs[i];
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32<const N: usize>(
        wrow: &[u8],
        fa: &[f32],
        cols: usize,
        t0: usize,
    ) -> [f32; N] {
        debug_assert!(wrow.len() >= cols * 4);
        debug_assert!(fa.len() >= (t0 + N) * cols);
        let mut acc = [_mm256_setzero_ps(); N];
        let wp = wrow.as_ptr() as *const f32;
        for c in (0..cols).step_by(8) {
            let w = _mm256_loadu_ps(wp.add(c));
            for (i, a) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(fa.as_ptr().add((t0 + i) * cols + c));
                *a = _mm256_fmadd_ps(w, x, *a);
            }
        }
        let mut out = [0f32; N];
        for i in 0..N {
            out[i] = hsum(acc[i]);
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_ff(a: &[f32], b: &[f32]) -> f32 {
        dot8_body(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        swiglu_body(gate, up)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
        axpy_body(out, w, v)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend_row(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        g: AttnRow,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        attend_body(q, keys, values, g, scores, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn matmul_rows(
        wtype: WType,
        w: &[u8],
        row_bytes: usize,
        acts: Acts,
        t: usize,
        out: &mut [f32],
    ) {
        matmul_rows_body::<false>(wtype, w, row_bytes, acts, t, out)
    }

    /// [`matmul_rows`] with `vpdpbusd` (AVX512-VNNI, 256-bit form): same bits, fewer
    /// instructions per block.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl")]
    pub unsafe fn matmul_rows_vnni(
        wtype: WType,
        w: &[u8],
        row_bytes: usize,
        acts: Acts,
        t: usize,
        out: &mut [f32],
    ) {
        matmul_rows_body::<true>(wtype, w, row_bytes, acts, t, out)
    }

    #[inline(always)]
    unsafe fn matmul_rows_body<const VNNI: bool>(
        wtype: WType,
        w: &[u8],
        row_bytes: usize,
        acts: Acts,
        t: usize,
        out: &mut [f32],
    ) {
        match acts {
            Acts::Q(q) => matmul_body(
                w,
                row_bytes,
                t,
                out,
                |r, t0| dot_q_body::<1, VNNI>(wtype, r, q, t0)[0],
                |r, t0| dot_q_body::<4, VNNI>(wtype, r, q, t0),
            ),
            Acts::F(x, cols) => matmul_body(
                w,
                row_bytes,
                t,
                out,
                |r, t0| dot_f32::<1>(r, x, cols, t0)[0],
                |r, t0| dot_f32::<4>(r, x, cols, t0),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QMatrix;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn reference(wt: WType, m: &QMatrix, x: &[f32], cols: usize) -> Vec<f32> {
        // Dequantized weights times dequantized activations in f64: what the kernels approximate.
        let acts = QActs::quantize(x, x.len() / cols, cols);
        let mut out = vec![];
        let mut row = vec![0f32; cols];
        for t in 0..x.len() / cols {
            for r in 0..m.rows {
                m.dequantize_row(r, &mut row);
                let mut s = 0f64;
                for c in 0..cols {
                    let xv = if wt.is_quantized() {
                        acts.d[(t * cols + c) / QK] as f64 * acts.qs[t * cols + c] as f64
                    } else {
                        x[t * cols + c] as f64
                    };
                    s += row[c] as f64 * xv;
                }
                out.push(s as f32);
            }
        }
        out
    }

    #[test]
    fn simd_matches_portable_and_tiles_match_single_rows() {
        let (rows, cols, t) = (5, 96, 7);
        let mut s = 11;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let x: Vec<f32> = (0..t * cols).map(|_| lcg(&mut s) * 3.0).collect();
        for wt in [WType::Q4_0, WType::Q4_1, WType::Q8_0, WType::F32] {
            let m = QMatrix::quantize(wt, rows, cols, &w).unwrap();
            let acts = QActs::quantize(&x, t, cols);
            let a = if wt.is_quantized() {
                Acts::Q(&acts)
            } else {
                Acts::F(&x, cols)
            };
            let want = reference(wt, &m, &x, cols);
            for r in 0..rows {
                for tt in 0..t {
                    let one_p = dot_rows::<1>(wt, m.row(r), a, tt, false)[0];
                    let one_s = dot_rows::<1>(wt, m.row(r), a, tt, simd_available())[0];
                    assert_eq!(one_p.to_bits(), one_s.to_bits(), "{wt:?} simd != portable");
                    let rf = want[tt * rows + r];
                    assert!(
                        (one_p - rf).abs() <= 1e-3 * (1.0 + rf.abs()),
                        "{wt:?}: {one_p} vs {rf}"
                    );
                    if tt + 4 <= t {
                        for simd in [false, simd_available()] {
                            let four = dot_rows::<4>(wt, m.row(r), a, tt, simd);
                            assert_eq!(four[0].to_bits(), one_p.to_bits(), "{wt:?} tile");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_paths_agree_bit_for_bit() {
        let (rows, cols, t) = (6, 128, 11);
        let mut s = 21;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let x: Vec<f32> = (0..t * cols).map(|_| lcg(&mut s) * 4.0).collect();
        for wt in [WType::Q4_0, WType::Q4_1, WType::Q8_0, WType::F32] {
            let m = QMatrix::quantize(wt, rows, cols, &w).unwrap();
            let acts = QActs::quantize(&x, t, cols);
            let a = if wt.is_quantized() {
                Acts::Q(&acts)
            } else {
                Acts::F(&x, cols)
            };
            let mut want = vec![0f32; rows * t];
            matmul_rows(wt, &m.data, m.row_bytes, a, t, &mut want, false);
            #[cfg(target_arch = "x86_64")]
            {
                let mut got = vec![0f32; rows * t];
                if simd_available() {
                    // SAFETY: features checked just above.
                    unsafe { avx2::matmul_rows(wt, &m.data, m.row_bytes, a, t, &mut got) };
                    assert_eq!(got, want, "{wt:?} avx2");
                }
                if vnni_available() {
                    got.fill(0.0);
                    // SAFETY: features checked just above.
                    unsafe { avx2::matmul_rows_vnni(wt, &m.data, m.row_bytes, a, t, &mut got) };
                    assert_eq!(got, want, "{wt:?} vnni");
                } else {
                    eprintln!("no AVX512-VNNI here: VNNI path not exercised");
                }
            }
        }
    }

    #[test]
    fn float_helpers_match_portable() {
        let mut s = 5;
        let a: Vec<f32> = (0..64).map(|_| lcg(&mut s)).collect();
        let b: Vec<f32> = (0..64).map(|_| lcg(&mut s)).collect();
        let d1 = dot_f32(&a, &b, false);
        let d2 = dot_f32(&a, &b, simd_available());
        assert_eq!(d1.to_bits(), d2.to_bits());
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((d1 as f64 - exact).abs() < 1e-4);
        let mut o1 = b.clone();
        let mut o2 = b.clone();
        axpy(&mut o1, 0.3, &a, false);
        axpy(&mut o2, 0.3, &a, simd_available());
        assert_eq!(o1, o2);
        let (mut g1, mut g2) = (a.clone(), a.clone());
        swiglu(&mut g1, &b, false);
        swiglu(&mut g2, &b, simd_available());
        assert_eq!(g1, g2);
        let want = a[3] / (1.0 + (-a[3]).exp()) * b[3];
        assert!((g1[3] - want).abs() < 1e-6);
    }

    #[test]
    fn exp_is_accurate_and_path_independent() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "max rel error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(200.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn attention_row_paths_agree() {
        let mut s = 9;
        for hd in [16usize, 64, 128] {
            let n = 37;
            let stride = hd * 2;
            let q: Vec<f32> = (0..hd).map(|_| lcg(&mut s)).collect();
            let keys: Vec<f32> = (0..n * stride).map(|_| lcg(&mut s)).collect();
            let vals: Vec<f32> = (0..n * stride).map(|_| lcg(&mut s)).collect();
            let g = AttnRow {
                n_keys: n,
                stride,
                offset: hd,
                scale: 0.125,
            };
            let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
            attend_row(&q, &keys, &vals, g, &mut vec![], &mut a, false);
            attend_row(&q, &keys, &vals, g, &mut vec![], &mut b, simd_available());
            assert_eq!(a, b, "hd {hd}");
            // Against a plain f64 softmax-attention.
            let sc: Vec<f64> = (0..n)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[d] as f64 * keys[j * stride + hd + d] as f64)
                        .sum::<f64>()
                        * 0.125
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for d in 0..hd {
                let want: f64 = (0..n)
                    .map(|j| w[j] / z * vals[j * stride + hd + d] as f64)
                    .sum();
                assert!((a[d] as f64 - want).abs() < 1e-5, "hd {hd} d {d}");
            }
        }
    }

    #[test]
    fn hsum8_order_is_fixed() {
        let l = [1e8f32, 1.0, -1e8, 1.0, 1.0, 0.0, 0.0, 0.0];
        // (1e8+1) + (-1e8+0) = 0 in f32 (1e8+1 rounds to 1e8), plus (1+0)+(1+0) = 2.
        assert_eq!(hsum8(l), 2.0);
    }
}
