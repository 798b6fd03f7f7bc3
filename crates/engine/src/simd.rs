//! Which instruction set the kernels may use on this CPU, detected once per process.
//!
//! Owns [`simd_available`] (AVX2+FMA+F16C, unless `DEAI_FORCE_PORTABLE=1`),
//! [`vnni_available`] (AVX512-VNNI on top, unless `DEAI_NO_VNNI=1`) and [`simd_name`].
//! Every code path gives identical bits, so this only chooses speed. It depends on nothing
//! else in this crate; [`crate::kernels`] re-exports it under its old paths, and activation
//! quantization ([`crate::quant`]) reads it without going through the kernels.

/// Whether the AVX2+FMA+F16C kernels are usable on this CPU (and not disabled by
/// `DEAI_FORCE_PORTABLE=1`, which tests and debugging use).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAIL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAIL.get_or_init(|| {
            std::env::var("DEAI_FORCE_PORTABLE").map_or(true, |v| v != "1")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX512-VNNI variant of the matmul kernel is usable (on top of
/// [`simd_available`]; `DEAI_NO_VNNI=1` disables it). Its results are bit-identical.
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAIL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAIL.get_or_init(|| {
            std::env::var("DEAI_NO_VNNI").map_or(true, |v| v != "1")
                && simd_available()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Name of the instruction set the kernels run on here (informational: results are equal).
pub fn simd_name() -> &'static str {
    if vnni_available() {
        "avx2+fma+f16c+avx512vnni"
    } else if simd_available() {
        "avx2+fma+f16c"
    } else {
        "portable"
    }
}
