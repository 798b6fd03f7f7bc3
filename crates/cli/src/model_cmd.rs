//! `deai model fetch/list/info`, and the model flags and loading every command shares.

use anyhow::{bail, Context, Result};
use clap::Args;
use deai_engine::{Engine, EngineConfig};
use deai_models::ModelStore;
use std::io::Write;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model: "default", a path to a GGUF file, or an installed model's id (prefix).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Kernel threads (default: the cores available; more would oversubscribe).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// `deai model fetch`: the default model, downloaded and SHA-256-checked.
pub fn fetch() -> Result<()> {
    let m = ModelStore::open_default()?.fetch_default(true)?;
    outln!("{}  {}  {}", m.id, m.name, m.path.display())?;
    Ok(())
}

/// `deai model list`.
pub fn list(json: bool) -> Result<()> {
    let store = ModelStore::open_default()?;
    let list = store.list()?;
    if json {
        outln!("{}", serde_json::to_string(&list)?)?;
    } else if list.is_empty() {
        outln!(
            "no models in {} (run `deai model fetch`)",
            store.models_dir().display()
        )?;
    } else {
        for m in list {
            outln!(
                "{}  {:>6.1} MB  {}  {}",
                m.id,
                m.size as f64 / 1e6,
                m.name,
                m.path.display()
            )?;
        }
    }
    Ok(())
}

/// `deai model info`: a model's configuration, id and this machine's kernel profile.
pub fn info(model: Option<&str>) -> Result<()> {
    let path = resolve_model(model)?;
    let id = deai_models::sha256_file(&path)?;
    let m = deai_engine::Model::load(&path)?;
    let info = serde_json::json!({
        "id": id.to_hex(),
        "path": path.display().to_string(),
        "weights": m.weights_type.name(),
        "config": m.cfg,
        "kernel_profile": deai_engine::KernelProfile::current(),
    });
    outln!("{}", serde_json::to_string_pretty(&info)?)?;
    Ok(())
}

pub fn resolve_model(spec: Option<&str>) -> Result<std::path::PathBuf> {
    let store = ModelStore::open_default()?;
    Ok(store.resolve(spec, true, true)?.path)
}

/// An engine on the GGUF at `path` with `threads` kernel threads and a prefix cache of
/// `prefix_bytes` (0: none).
pub fn engine_at(path: &std::path::Path, threads: usize, prefix_bytes: usize) -> Result<Engine> {
    let cfg = EngineConfig {
        threads,
        prefix_cache_bytes: prefix_bytes,
        ..EngineConfig::default()
    };
    Engine::load(path, cfg).with_context(|| format!("loading {}", path.display()))
}

pub fn load_engine(m: &ModelArgs) -> Result<Engine> {
    let mut cfg = EngineConfig::default();
    if let Some(t) = m.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        cfg.threads = t;
    }
    let path = resolve_model(m.model.as_deref())?;
    Engine::load(&path, cfg).with_context(|| format!("loading {}", path.display()))
}
