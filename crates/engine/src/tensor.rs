//! Tensor storage formats: the one definition every layer shares.
//!
//! Owns [`WType`] (the block layouts the kernels implement, with their sizes) and
//! [`RawTensor`] (a tensor's dims and bytes in that layout). It depends on nothing else in
//! this crate: the GGUF reader and writer ([`crate::gguf`], which re-exports both under their
//! old paths), the quantized matrices ([`crate::quant`]) and the kernels
//! ([`crate::kernels`]) all stand on it.

use candle_core::quantized::GgmlDType;

/// Storage formats the engine's kernels implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl WType {
    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            WType::F32 | WType::F16 => 1,
            _ => 32,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            WType::F32 => 4,
            WType::F16 => 2,
            WType::Q4_0 => 18,
            WType::Q4_1 => 20,
            WType::Q8_0 => 34,
        }
    }
    pub fn is_quantized(self) -> bool {
        !matches!(self, WType::F32 | WType::F16)
    }
    pub fn name(self) -> &'static str {
        match self {
            WType::F32 => "F32",
            WType::F16 => "F16",
            WType::Q4_0 => "Q4_0",
            WType::Q4_1 => "Q4_1",
            WType::Q8_0 => "Q8_0",
        }
    }
    /// The format of a ggml tensor type, if the kernels implement it.
    pub(crate) fn from_ggml(t: GgmlDType) -> Option<Self> {
        Some(match t {
            GgmlDType::F32 => WType::F32,
            GgmlDType::F16 => WType::F16,
            GgmlDType::Q4_0 => WType::Q4_0,
            GgmlDType::Q4_1 => WType::Q4_1,
            GgmlDType::Q8_0 => WType::Q8_0,
            _ => return None,
        })
    }
    /// Bytes needed for `n` elements, or None if `n` is not a whole number of blocks or overflows.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }
}

/// A tensor as stored in the file: dims in row-major order (outermost first), raw bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub wtype: WType,
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}
