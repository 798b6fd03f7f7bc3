//! The engine's error type: every failure a caller can cause is one of these, never a panic.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid GGUF file: {0}")]
    Gguf(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("context overflow: {needed} tokens needed but the context holds {n_ctx}")]
    ContextOverflow { needed: usize, n_ctx: usize },
    #[error("empty prompt: at least one token is needed")]
    EmptyPrompt,
    /// The caller stopped the run ([`crate::Engine::generate_cancellable`]).
    #[error("generation cancelled by the caller")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, EngineError>;
