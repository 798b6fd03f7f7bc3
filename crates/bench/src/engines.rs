//! Loading the engines a harness measures, with an explicit thread count and prefix cache.

use anyhow::{Context, Result};
use deai_engine::{Engine, EngineConfig};
use std::path::Path;

/// An engine on the GGUF at `path` with `threads` kernel threads and a prefix cache of
/// `prefix_bytes` (0: none).
pub(crate) fn engine_at(path: &Path, threads: usize, prefix_bytes: usize) -> Result<Engine> {
    let cfg = EngineConfig {
        threads,
        prefix_cache_bytes: prefix_bytes,
        ..EngineConfig::default()
    };
    Engine::load(path, cfg).with_context(|| format!("loading {}", path.display()))
}

/// An engine on the GGUF at `path` with `threads` kernel threads and the default engine
/// configuration otherwise (what `deai run --threads` loads).
pub(crate) fn engine_with_threads(path: &Path, threads: usize) -> Result<Engine> {
    let cfg = EngineConfig {
        threads,
        ..EngineConfig::default()
    };
    Engine::load(path, cfg).with_context(|| format!("loading {}", path.display()))
}
