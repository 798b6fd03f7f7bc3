//! # deai-train
//!
//! Decentralized training: DiLoCo rounds across untrusted workers whose contributions are
//! verified by exact re-execution before they are merged and paid.
//!
//! - [`config`]: model shapes (llama, byte vocabulary) and inner-optimizer settings.
//! - [`data`]: content-addressed token shards, deterministic batches, the Shakespeare fetch.
//! - [`model`]: host weights (the master copy) and the candle autograd graph.
//! - [`optim`]: AdamW, clipping, Nesterov, and the train state each step commits to.
//! - [`checkpoint`]: safetensors checkpoints named by content hash, export to GGUF.
//! - [`diloco`]: jobs, rounds, int8 pseudo-gradients, signed contributions, workers, and
//!   the [`Tamper`] seam a cheating worker lies through.
//! - `faults` (cargo feature `faults`, off by default): the cheater classes, for tests,
//!   benchmarks and demos.
//! - [`verify`]: free checks, step re-execution with bisection, the round coordinator.
//! - [`evidence`]: a closed round's evidence and its encoding.
//! - [`audit`]: re-checking a closed round from its evidence.
//! - [`run`]: whole runs (single-worker baseline and DiLoCo) for the CLI and benchmarks.
//!
//! Bit-reproducibility: the same checkpoint, shard, seed and step count give the same train
//! state bit for bit at any thread count, on one kernel profile. Candle's CPU matmul splits
//! work across threads by output tiles only (the reduction order over `k` is fixed), and
//! every optimizer update here is sequential host arithmetic. Tests check it by training in
//! thread pools of 1 and 2 threads and comparing state hashes.
//!
//! Owns: everything above. Depends on `deai-types` (hashes, codec), `deai-engine` (GGUF
//! writing and the byte vocabulary, so exported checkpoints run on the inference path) and
//! `deai-models` (its `pip_download`, the project's one way of running pip).
//! Must never depend on the ledger, chain or node crates: they call into us.

pub mod audit;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod diloco;
pub mod evidence;
#[cfg(feature = "faults")]
pub mod faults;
pub mod model;
pub mod optim;
pub mod run;
pub mod verify;

pub use config::{ModelConfig, TrainConfig, BYTE_VOCAB};
pub use diloco::{Contribution, JobSpec, RoundSpec, Tamper, WorkerRun};
pub use model::{Net, Weights};
pub use verify::{Coordinator, Reason, Rejection, RoundReport};

use deai_types::Hash256;
use std::path::Path;

pub type Result<T> = std::result::Result<T, TrainError>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("non-finite value: {0}")]
    NonFinite(String),
    #[error("malformed input: {0}")]
    Decode(String),
    #[error("{what} hash mismatch: expected {want}, got {got}")]
    HashMismatch {
        what: &'static str,
        want: Hash256,
        got: Hash256,
    },
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("engine: {0}")]
    Engine(#[from] deai_engine::EngineError),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
