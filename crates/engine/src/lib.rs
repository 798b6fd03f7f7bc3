//! # deai-engine
//!
//! The inference engine every other part of deai stands on: it loads a llama-family GGUF
//! model, tokenizes exactly like llama.cpp, and runs the model on CPU with *batch-invariant*
//! kernels, so that token-by-token decode, one full prefill and a prefill that reuses a cached
//! prefix give bit-identical hidden states and logits at any thread count. That guarantee is
//! named by a [`KernelProfile`] which receipts carry.
//!
//! Owns: GGUF reading and writing, tensor formats ([`tensor`]) and kernels (with CPU feature
//! detection in [`simd`]), the llama model file, tokenizer, sampler (with its JSON-object
//! grammar), KV and prefix caches, the generation loop.
//! Must never depend on: networking, the ledger, receipts/proofs (those depend on us), or
//! any clock inside the arithmetic (timings are measured around it, never inside it).

pub mod error;
pub mod generate;
pub mod gguf;
pub mod json_prefix;
pub mod json_schema;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod profile;
pub mod quant;
pub mod sampler;
pub mod sched;
pub mod simd;
pub mod tensor;
pub mod testing;
pub mod tokenizer;

pub use error::{EngineError, Result};
pub use generate::{
    Engine, EngineConfig, GenParams, Generation, OutputText, StopReason, TextStream, TokenEvent,
};
pub use model::{LlamaConfig, Model};
pub use profile::KernelProfile;
pub use sampler::SamplingParams;
