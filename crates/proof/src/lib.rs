//! # deai-proof
//!
//! Verifiable inference: the receipt a worker signs for one run, the activation commitments
//! it carries, and verification by one validator prefill.
//!
//! Owns: [`Receipt`] (v1 canonical binary encoding + JSON view, ed25519 signatures), activation
//! proofs ([`activation`]: TOPLOC-style top-k polynomial commitments plus truncated exact
//! digests per chunk of generated tokens), and [`verify()`](verify::verify) (signature, ids,
//! commitments, activations, sampling replay, termination).
//! Must never depend on: networking, the ledger or consensus (they depend on us); verification
//! is a pure function of the receipt, the engine and the model id.
//!
//! The format is specified in `docs/receipt.md`.

pub mod activation;
pub mod calibrate;
pub mod receipt;
#[cfg(feature = "faults")]
pub mod tamper;
pub mod verify;

pub use activation::{ActivationProof, ChunkProof, Thresholds};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use receipt::{receipt_digest, DecodeError, JobSpec, Receipt, Timings};
pub use verify::{pov_digest, verify, verify_with, Check, Report, Verdict, VerifyConfig};

use deai_engine::{Generation, KernelProfile};
use std::time::Instant;

/// Errors building a receipt.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("generation does not match the job: {0}")]
    Mismatch(String),
    #[error("cannot build the activation proof: {0}")]
    Proof(String),
    #[error("receipt encoding: {0}")]
    Encode(#[from] DecodeError),
}

/// Proof parameters chosen by the worker (recorded in the receipt).
#[derive(Clone, Copy, Debug)]
pub struct ProofConfig {
    pub chunk_size: u16,
    pub top_k: u16,
}

impl Default for ProofConfig {
    fn default() -> Self {
        ProofConfig {
            chunk_size: activation::DEFAULT_CHUNK,
            top_k: activation::DEFAULT_TOP_K,
        }
    }
}

/// A new random worker key (OS randomness).
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Build and sign the receipt of `gen`, an answer to `job` computed on a model with hidden
/// size `d_model` under kernel profile `profile`.
pub fn build_receipt(
    job: &JobSpec,
    gen: &Generation,
    d_model: usize,
    profile: &KernelProfile,
    cfg: ProofConfig,
    key: &SigningKey,
) -> Result<Receipt, ProofError> {
    if gen.prompt_tokens != job.prompt_tokens {
        return Err(ProofError::Mismatch("prompt tokens differ".into()));
    }
    let job_id = job.id();
    let t0 = Instant::now();
    let n = gen.output_tokens.len();
    let rows = activation::output_rows(&gen.hidden, d_model, gen.prompt_tokens.len(), n)
        .ok_or_else(|| ProofError::Proof("hidden states do not cover the output".into()))?;
    let proof = activation::build(&job_id, rows, d_model, cfg.chunk_size, cfg.top_k)
        .ok_or_else(|| ProofError::Proof("no valid chunk commitment".into()))?;
    let proof_us = t0.elapsed().as_micros() as u64;
    let p = &job.params;
    let mut r = Receipt {
        version: receipt::version_for(&job.params.sampling),
        job_id,
        job_nonce: job.nonce,
        model_id: job.model_id,
        profile_id: profile.id.clone(),
        profile_detail: profile.display_string(),
        prompt_tokens: gen.prompt_tokens.clone(),
        prompt_commitment: receipt::prompt_commitment(&gen.prompt_tokens),
        output_tokens: gen.output_tokens.clone(),
        output_commitment: receipt::output_commitment(&gen.output_tokens),
        sampling: p.sampling.clone(),
        max_tokens: u32::try_from(p.max_tokens)
            .map_err(|_| ProofError::Mismatch("max_tokens too large".into()))?,
        stop: p.stop.clone(),
        stop_reason: gen.stop_reason,
        proof,
        timings: Timings {
            prefill_us: (gen.prefill_ms * 1e3) as u64,
            decode_us: (gen.decode_ms * 1e3) as u64,
            proof_us,
        },
        worker_key: [0; 32],
        signature: [0; 64],
    };
    r.sign(key)?;
    Ok(r)
}

/// Hex (de)serialization of fixed-size byte arrays for the JSON view.
pub(crate) mod hexser {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<Vec<u8>>>(
        d: D,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s.trim()).map_err(D::Error::custom)?;
        let n = v.len();
        T::try_from(v).map_err(|_| D::Error::custom(format!("wrong length {n} bytes")))
    }
}

/// 32 random bytes from the OS (job nonces).
pub fn random_nonce() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}
