//! `deai node`: any combination of the worker, validator (verification) and gateway roles in
//! one process, joined to an existing chain through one of its nodes' HTTP API, configured
//! by a TOML file (flags override it). Consensus itself runs in `deai chain run`.

use crate::gateway::{CatalogEntry, Gateway, GatewayConfig};
use crate::verifier::Verifier;
use crate::worker::{Worker, WorkerConfig};
use anyhow::{bail, Context, Result};
use deai_client::{ChainClient, Signer};
use deai_engine::Engine;
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Validator,
    Gateway,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "worker" => Ok(Role::Worker),
            "validator" => Ok(Role::Validator),
            "gateway" => Ok(Role::Gateway),
            other => Err(format!(
                "unknown role {other:?}: worker, validator or gateway"
            )),
        }
    }
}

/// The node's configuration file (`deai node --config node.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A chain node's HTTP API.
    #[serde(default = "default_chain")]
    pub chain: String,
    /// This node's signing key (hex seed, `deai keys new --out FILE`): its ledger account.
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Model: "default", a GGUF path or an installed model's id prefix.
    pub model: Option<String>,
    /// Where receipts and gateway records are kept.
    pub data: Option<PathBuf>,
    #[serde(default)]
    pub worker: WorkerSection,
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub validator: ValidatorSection,
}

fn default_chain() -> String {
    "http://127.0.0.1:27100".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    pub listen: SocketAddr,
    /// The URL clients and validators reach this worker at (default: from `listen`).
    pub public_url: Option<String>,
    pub price_per_1k: u64,
    pub hardware: Option<String>,
    /// Stake to bond (raised to the chain's worker minimum if lower). Each receipt locks
    /// `collateral_bps` of what it bills until it settles (10x by default), so this bounds
    /// the receipts the worker can have in flight.
    pub stake: u64,
}

/// A worker's default bond: at 10x collateral, receipts billing 5,000 in flight.
pub const DEFAULT_WORKER_STAKE: u64 = 50_000;

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 27_301)),
            public_url: None,
            price_per_1k: 1_000,
            hardware: None,
            stake: DEFAULT_WORKER_STAKE,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    pub listen: SocketAddr,
    pub api_keys: Vec<ApiKey>,
    /// The public name of the served model (default: the GGUF file's stem).
    pub model_name: Option<String>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 27_300)),
            api_keys: Vec::new(),
            model_name: None,
        }
    }
}

/// An API key and who pays for its requests: the key file of a ledger account the gateway
/// signs for (custodial), or the address of a client that keeps its key and authorized this
/// node's account on chain (`deai tx authorize --gateway <node address>`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key: String,
    #[serde(default)]
    pub account_key: Option<PathBuf>,
    #[serde(default)]
    pub client: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidatorSection {
    /// How often to look for receipts to check.
    pub every_ms: u64,
    /// Longest one re-execution yields to a worker's generation when both roles share this
    /// process's engine (0: never yields). See `Verifier::with_patience`.
    pub patience_ms: u64,
    /// Serve the explorer (and the chain's query routes, forwarded) here; the validator
    /// role has no HTTP API of its own otherwise.
    pub listen: Option<SocketAddr>,
}

impl Default for ValidatorSection {
    fn default() -> Self {
        ValidatorSection {
            every_ms: 200,
            patience_ms: crate::verifier::DEFAULT_PATIENCE.as_millis() as u64,
            listen: None,
        }
    }
}

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("{}", path.display()))
    }
}

fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&deai_chain::local::read_key(path)?))
}

/// What a started node runs.
pub struct RunningNode {
    pub address: [u8; 32],
    pub worker: Option<Worker>,
    pub verifier: Option<Arc<Verifier>>,
    /// The validator's beacon duty, when the chain has a beacon and this key a share of it.
    pub beacon: Option<Arc<crate::beacon::BeaconSigner>>,
    pub gateway: Option<SocketAddr>,
    /// Where the validator role serves the explorer, if asked to.
    pub explorer: Option<SocketAddr>,
}

/// Starts the configured roles (inside a tokio runtime); returns once they serve.
pub async fn start(
    cfg: &NodeConfig,
    engine: Arc<Engine>,
    model_id: Hash256,
    model_name: &str,
) -> Result<RunningNode> {
    if cfg.roles.is_empty() {
        bail!(
            "no roles: give --role worker,validator,gateway (any of them) or `roles` in the config"
        );
    }
    let key_path = cfg
        .key
        .as_ref()
        .context("no key: give --key FILE (create one with `deai keys new --out FILE`)")?;
    let key = read_signing_key(key_path)?;
    let ledger = ChainClient::new(&cfg.chain);
    let chain_id = ledger
        .chain_id()
        .await
        .with_context(|| format!("joining the chain at {}", cfg.chain))?;
    let params = ledger.params().await?;
    // One signer (one nonce sequence) for every role this key plays.
    let shared = Arc::new(Signer::new(
        key.clone(),
        chain_id,
        params.min_fee,
        ledger.clone(),
    ));
    let signer = || shared.clone();
    let address = key.verifying_key().to_bytes();
    let data = cfg.data.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("deai-node-{}", hex::encode(&address[..6])))
    });
    let mut out = RunningNode {
        address,
        worker: None,
        verifier: None,
        beacon: None,
        gateway: None,
        explorer: None,
    };
    if cfg.roles.contains(&Role::Validator) {
        let vals = ledger.status().await?;
        let registered = vals["validators"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["address"].as_str() == Some(&hex::encode(address)));
        if !registered {
            bail!(
                "{} is not an active validator of this chain: the validator role needs a \
                 genesis validator's key (keys/validator-N.key of `deai chain init`)",
                hex::encode(address)
            );
        }
        let v = Arc::new(
            Verifier::new(signer(), engine.clone(), model_id)
                .with_patience(Duration::from_millis(cfg.validator.patience_ms)),
        );
        tokio::spawn(
            v.clone()
                .run(Duration::from_millis(cfg.validator.every_ms.max(10))),
        );
        out.verifier = Some(v);
        // The beacon duty: sign closed rounds with this validator's share.
        let share_file = deai_chain::local::share_path(key_path);
        if let Some(b) = ledger.beacon().await? {
            if !b.players.contains(&address) {
                tracing::info!("this validator holds no share of the beacon key");
            } else if !share_file.exists() {
                tracing::warn!(
                    "this validator is a beacon player but {} is missing: it cannot help \
                     sample receipts",
                    share_file.display()
                );
            } else {
                let share = deai_chain::local::read_share(&share_file)?;
                let b = Arc::new(crate::beacon::BeaconSigner::new(signer(), share, chain_id)?);
                tokio::spawn(
                    b.clone()
                        .run(Duration::from_millis(cfg.validator.every_ms.max(10))),
                );
                out.beacon = Some(b);
            }
        }
        // The validator's duty for training jobs: judge every proposed round.
        tokio::spawn(crate::training::TrainAuditor::new(signer()).run());
        if let Some(listen) = cfg.validator.listen {
            let router = crate::chain_proxy::explorer_router(
                ledger.clone(),
                deai_explorer::UiConfig::VALIDATOR,
            );
            out.explorer = Some(crate::serve(listen, router).await?);
        }
    }
    if cfg.roles.contains(&Role::Worker) {
        let w = &cfg.worker;
        let url = w
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", w.listen));
        let (balance, stake, _) = ledger.account(&address).await?;
        let need = params.min_worker_stake.max(w.stake).saturating_sub(stake);
        if balance < need.saturating_add(2 * params.min_fee) {
            bail!(
                "the worker account {} holds {balance}; staking needs {need} more plus fees \
                 (`[worker] stake` is {}): fund it (`deai tx transfer --to {} --amount N`) or \
                 lower the stake",
                hex::encode(address),
                w.stake,
                hex::encode(address)
            );
        }
        if need > 0 {
            signer()
                .submit_and_wait(
                    deai_ledger::TxKind::Stake { amount: need },
                    Duration::from_secs(60),
                )
                .await
                .context("bonding the worker's stake")?;
        }
        let worker = Worker::new(
            WorkerConfig {
                model_id,
                price_per_1k: w.price_per_1k,
                hardware: w
                    .hardware
                    .clone()
                    .unwrap_or_else(|| format!("cpu x{}", engine.threads())),
                dir: data.join("worker"),
                tamper: None,
                post_timeout: Duration::from_secs(120),
                tamper_after: 0,
            },
            engine.clone(),
            signer(),
            url,
        )?;
        crate::serve(w.listen, worker.router()).await?;
        worker.join().await.context("joining as a worker")?;
        out.worker = Some(worker);
    }
    if cfg.roles.contains(&Role::Gateway) {
        let g = &cfg.gateway;
        if g.api_keys.is_empty() {
            bail!(
                "the gateway role needs at least one [[gateway.api_keys]] entry (key, account_key)"
            );
        }
        let mut keys = Vec::new();
        let mut client_keys = Vec::new();
        // One signer per account, the node's own included, however many API keys pay from it.
        let mut signers: std::collections::HashMap<[u8; 32], Arc<Signer>> =
            std::collections::HashMap::new();
        signers.insert(address, shared.clone());
        for k in &g.api_keys {
            if k.key.len() < 8 {
                bail!("API key {:?} is too short (at least 8 characters)", k.key);
            }
            let account = match (&k.account_key, &k.client) {
                (Some(path), None) => read_signing_key(path)?,
                (None, Some(client)) => {
                    let mut a = [0u8; 32];
                    hex::decode_to_slice(client.trim(), &mut a).with_context(|| {
                        format!("gateway API key client {client:?} is not an address")
                    })?;
                    client_keys.push((k.key.clone(), a));
                    continue;
                }
                _ => bail!(
                    "gateway API key {:?}: give either account_key (custodial) or client \
                     (an address that authorized this node)",
                    k.key
                ),
            };
            let s = signers
                .entry(account.verifying_key().to_bytes())
                .or_insert_with(|| {
                    Arc::new(Signer::new(
                        account.clone(),
                        chain_id,
                        params.min_fee,
                        ledger.clone(),
                    ))
                })
                .clone();
            keys.push((k.key.clone(), s));
        }
        let gateway = Gateway::new(
            GatewayConfig {
                models: vec![CatalogEntry {
                    name: g
                        .model_name
                        .clone()
                        .unwrap_or_else(|| model_name.to_string()),
                    id: model_id,
                    tokenizer: Arc::new(engine.model.tokenizer.clone()),
                    n_ctx: engine.model.cfg.n_ctx,
                }],
                api_keys: keys,
                client_keys,
                signer: Some(shared.clone()),
                attempts: 3,
                worker_timeout: Duration::from_secs(120),
                dir: data.join("gateway"),
                require_qualified: true,
            },
            ledger.clone(),
        )?;
        out.gateway = Some(crate::serve(g.listen, gateway.router()).await?);
    }
    Ok(out)
}
