//! `deai node`: run the worker, validator and gateway roles (any combination) against an
//! existing chain, from a TOML config and/or flags (flags win).

use crate::{resolve_model, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use deai_node::node::{self, NodeConfig, Role};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct NodeArgs {
    /// TOML configuration (see docs/node.md); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Roles, comma-separated: worker, validator, gateway.
    #[arg(long, value_delimiter = ',')]
    role: Vec<Role>,
    /// A chain node's HTTP API.
    #[arg(long)]
    chain: Option<String>,
    /// This node's signing key (`deai keys new --out FILE`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Where receipts and gateway records are kept.
    #[arg(long)]
    data: Option<PathBuf>,
    /// With the validator role: serve the explorer here (host:port).
    #[arg(long)]
    validator_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn node(a: NodeArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => NodeConfig::load(p)?,
        None => NodeConfig::from_toml("")?,
    };
    if !a.role.is_empty() {
        cfg.roles = a.role.clone();
    }
    if let Some(c) = &a.chain {
        cfg.chain = c.clone();
    }
    if let Some(k) = &a.key {
        cfg.key = Some(k.clone());
    }
    if let Some(d) = &a.data {
        cfg.data = Some(d.clone());
    }
    if let Some(l) = a.validator_listen {
        cfg.validator.listen = Some(l);
    }
    let model = ModelArgs {
        model: a.model.model.clone().or(cfg.model.clone()),
        threads: a.model.threads,
    };
    let path = resolve_model(model.model.as_deref())?;
    let model_id = deai_models::sha256_file(&path)?;
    let name = crate::devnet_cmd::model_name(&path);
    let engine = Arc::new(crate::load_engine(&model)?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let n = node::start(&cfg, engine, model_id, &name).await?;
        println!("node {} on chain {}", hex::encode(n.address), cfg.chain);
        if let Some(w) = &n.worker {
            println!("worker: {} (registered, serving {name})", w.url());
        }
        if n.verifier.is_some() {
            println!("validator: verifying receipts of {name}");
        }
        if let Some(g) = n.gateway {
            println!("gateway: http://{g}/v1");
        }
        if let Some(e) = n.explorer {
            println!("explorer: http://{e}/");
        }
        tokio::signal::ctrl_c().await?;
        eprintln!("stopping");
        Ok(())
    })
}
