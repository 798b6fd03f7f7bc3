//! Kernel profiles: the name of a numeric contract.
//!
//! Two runs with the same profile id produce bit-identical hidden states and logits for the
//! same model and tokens, whatever the batch shape, prefix reuse or thread count. Receipts
//! carry the profile so a validator knows whether to compare exactly (same id) or within
//! calibrated thresholds (different ids, e.g. another engine).

/// The numeric contract implemented by [`crate::kernels`] and [`crate::model`]. Bump it on any
/// change that can alter a single output bit.
pub const PROFILE_ID: &str = "deai-cpu-bi-v1";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelProfile {
    /// The contract id: equal ids promise equal bits.
    pub id: String,
    /// Engine crate version that produced the run.
    pub engine_version: String,
    /// Instruction set used here. Informational: the AVX2 and portable paths implement the
    /// same contract (tested), so it is not part of `id`.
    pub cpu_features: String,
}

impl KernelProfile {
    pub fn current() -> Self {
        KernelProfile {
            id: PROFILE_ID.to_string(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            cpu_features: crate::kernels::simd_name().to_string(),
        }
    }

    /// `id/engine_version/cpu_features`, e.g. `deai-cpu-bi-v1/0.1.0/avx2+fma`.
    pub fn display_string(&self) -> String {
        format!("{}/{}/{}", self.id, self.engine_version, self.cpu_features)
    }
}
