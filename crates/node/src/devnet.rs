//! `deai devnet`: the whole network in one process on loopback — a 4-validator chain (or
//! as many as [`DevnetOptions::validators`] asks)
//! (commonware simplex, real p2p on loopback ports, on-disk storage), workers serving the
//! real model, every chain validator also verifying receipts, and an OpenAI-compatible
//! gateway. Its directory holds everything; starting again on the same directory resumes it
//! (same keys, same API key, finalized state replayed from disk).

use crate::gateway::{CatalogEntry, Gateway, GatewayConfig};
use crate::verifier::Verifier;
use crate::worker::{Tamper, Worker, WorkerConfig};
use anyhow::{Context, Result};
use commonware_runtime::tokio as cw_tokio;
use deai_chain::local::{self, InitOptions, RunOptions};
use deai_client::{ChainClient, Signer};
use deai_engine::Engine;
use deai_ledger::state::{GenesisAccount, GenesisRoyalty, Params};
use deai_ledger::tx::Beneficiary;
use deai_ledger::Address;
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

/// What `devnet.json` records: where everything listens and the client's API key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetInfo {
    pub gateway: String,
    pub chain: Vec<String>,
    pub api_key: String,
    pub model: String,
    pub model_id: Hash256,
    pub workers: Vec<String>,
    #[serde(with = "deai_ledger::tx::hex_addr")]
    pub client: Address,
    /// An API key for the same client paying through the allowance it gave the gateway's
    /// own account (non-custodial: the gateway signs, the client pays, the gateway earns its
    /// fee).
    #[serde(default)]
    pub own_key_api_key: String,
    /// The gateway's own account, the demo app's id and owner, and the served model's
    /// royalty beneficiary (its author, named at genesis).
    #[serde(default, with = "deai_ledger::tx::hex_addr")]
    pub gateway_account: Address,
    #[serde(default)]
    pub app: Hash256,
    #[serde(default, with = "deai_ledger::tx::hex_addr")]
    pub app_owner: Address,
    #[serde(default, with = "deai_ledger::tx::hex_addr")]
    pub model_author: Address,
}

/// The demo app's name (`state::app_id` of its owner, `keys/app.key`, and this).
pub const DEMO_APP: &str = "deai-demo-chat";

pub struct DevnetOptions {
    pub dir: PathBuf,
    pub model_path: PathBuf,
    pub model_name: String,
    /// Chain p2p on `base_port..+validators`, chain HTTP on `+100..`, gateway on `+200`,
    /// workers on `+201..`.
    pub base_port: u16,
    /// Validators of a new devnet's chain (4 to 99; ignored when resuming: the chain keeps
    /// its own).
    pub validators: usize,
    /// One entry per worker: how it lies (`None`: honest).
    pub workers: Vec<Option<Arc<dyn Tamper>>>,
    /// Cheating workers answer their capability challenge honestly and cheat afterwards
    /// (true), or cheat from their first job (false).
    pub cheaters_pass_challenge: bool,
    /// Price per 1000 tokens of each worker (the same for all).
    pub price_per_1k: u64,
    pub engine: Arc<Engine>,
    /// The engine the validators re-execute on, when not `engine` (`deai bench verify-load`
    /// gives them their own kernel threads, sharing `engine`'s gate, to count their CPU
    /// time apart from the workers').
    pub verify_engine: Option<Arc<Engine>>,
    pub model_id: Hash256,
    /// Chain parameters for a new devnet (ignored when resuming).
    pub params: Params,
    /// Validators (by index) whose verifier this devnet does not run: the caller plays
    /// their verification role with their signer (`Devnet::validators`), as the lazy
    /// validator of the tests does. They still sign the beacon.
    pub no_verifier: Vec<usize>,
}

/// How long [`start`] waits for every worker's capability challenge to settle.
const CHALLENGES_WITHIN: Duration = Duration::from_secs(300);

/// Chain parameters for a devnet: every receipt is verified (a small network can afford it)
/// and windows are long enough for CPU verification at devnet block rates (10-60 blocks/s):
/// a job may wait in a busy worker's queue for the gateway's whole worker timeout, and
/// `deai bench network` saw answered jobs expire with a 600-block timeout. A committee has
/// the verdict window to commit (its slowest member behind every re-execution queued on
/// the shared cores, while each yields to generation): 3000 blocks, under a minute at 55
/// blocks/s, escalated a third of the jobs of the `openai` client test on 2 cores.
pub fn devnet_params() -> Params {
    Params {
        sample_rate_bps: 10_000,
        challenge_window: 3_000,
        verdict_window: 6_000,
        job_timeout: 12_000,
        ..Params::default()
    }
    .fit_periods(deai_ledger::state::DEFAULT_EPOCH_LENGTH)
}

pub struct Devnet {
    pub info: DevnetInfo,
    pub workers: Vec<Worker>,
    /// The verifiers it runs, in validator order but without those in
    /// `DevnetOptions::no_verifier` (so not indexed like `validators` when that is set).
    pub verifiers: Vec<Arc<Verifier>>,
    /// Each validator's signer, shared by its verifier and its training auditor (one nonce
    /// sequence per key): whatever else acts for a validator in this process must use it.
    pub validators: Vec<Arc<Signer>>,
    /// The client account's signer (the gateway pays jobs with it).
    pub client: Arc<Signer>,
    pub gateway: Gateway,
    pub ledger: ChainClient,
}

const CLIENT_BALANCE: u64 = 1_000_000_000;
const WORKER_BALANCE: u64 = 1_000_000;
/// What each devnet worker bonds (see [`crate::node::DEFAULT_WORKER_STAKE`]).
const WORKER_STAKE: u64 = 600_000;

fn key_at(dir: &Path, name: &str) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&local::read_key(
        &dir.join("keys").join(name),
    )?))
}

/// Creates the devnet directory if it is new: chain genesis (validators staked, the client and
/// the workers funded), keys, and the API key.
fn init(opts: &DevnetOptions) -> Result<()> {
    let dir = &opts.dir;
    if dir.join("genesis.json").exists() {
        return Ok(());
    }
    anyhow::ensure!(
        (4..=99).contains(&opts.validators),
        "a devnet has 4 to 99 validators, not {}",
        opts.validators
    );
    std::fs::create_dir_all(dir.join("keys"))?;
    let mut extra = Vec::new();
    let fund = |name: &str, balance: u64, extra: &mut Vec<GenesisAccount>| -> Result<()> {
        let seed = deai_proof::random_nonce();
        local::write_key(&dir.join("keys").join(name), &seed)?;
        extra.push(GenesisAccount {
            address: local::address_of(&seed),
            balance,
            stake: 0,
        });
        Ok(())
    };
    fund("client.key", CLIENT_BALANCE, &mut extra)?;
    // The gateway's own account (fees for the escrows it signs for clients that keep their
    // keys), the demo app's owner (fees), and the served model's author (its royalty).
    fund("gateway.key", 1_000_000, &mut extra)?;
    fund("app.key", 1_000, &mut extra)?;
    local::write_key(
        &dir.join("keys/model-author.key"),
        &deai_proof::random_nonce(),
    )?;
    for i in 0..opts.workers.len() {
        fund(&format!("worker-{i}.key"), WORKER_BALANCE, &mut extra)?;
    }
    let api_key = format!("sk-deai-{}", hex::encode(&deai_proof::random_nonce()[..16]));
    std::fs::write(dir.join("keys/api.key"), &api_key)?;
    let own = format!(
        "sk-deai-own-{}",
        hex::encode(&deai_proof::random_nonce()[..16])
    );
    std::fs::write(dir.join("keys/api-own.key"), &own)?;
    let author = key_at(dir, "model-author.key")?.verifying_key().to_bytes();
    let mut params = opts.params.clone();
    if !params.model_allowed(&opts.model_id) {
        params.allowed_models.push(opts.model_id);
        params.allowed_models.sort();
    }
    local::init_with(
        dir,
        &InitOptions {
            base_p2p_port: opts.base_port,
            base_http_port: opts.base_port + 100,
            validators: opts.validators,
            params,
            royalties: vec![GenesisRoyalty {
                model: opts.model_id,
                beneficiaries: vec![Beneficiary {
                    to: author,
                    weight: 1,
                }],
            }],
            ..InitOptions::default()
        },
        extra,
    )?;
    Ok(())
}

/// Starts every validator of the chain in `dir` (one process, loopback) and waits until
/// they finalize a first block (peers connected); returns their API URLs and a client of the
/// first.
pub async fn start_chain(
    ctx: &cw_tokio::Context,
    dir: &Path,
) -> Result<(Vec<String>, ChainClient)> {
    let (_, net) = local::load(dir)?;
    let all: Vec<usize> = (0..net.validators.len()).collect();
    let nodes = local::start_validators(ctx, dir, &all, &RunOptions::default()).await?;
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.http)).collect();
    let ledger = ChainClient::new(&urls[0]);
    let t0 = tokio::time::Instant::now();
    while ledger.height().await.unwrap_or(0) < 1 {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "the chain did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((urls, ledger))
}

/// Starts the devnet inside a running commonware tokio runtime.
pub async fn start(ctx: &cw_tokio::Context, opts: DevnetOptions) -> Result<Devnet> {
    init(&opts)?;
    let dir = opts.dir.clone();
    let (chain, ledger) = start_chain(ctx, &dir).await?;
    let chain_id = ledger.chain_id().await?;
    let fee = ledger.params().await?.min_fee;
    // Each role talks to its own chain node, as separate hosts would.
    let signer = |key: SigningKey, i: usize| {
        Signer::new(
            key,
            chain_id,
            fee,
            ChainClient::new(&chain[i % chain.len()]),
        )
    };

    let mut workers = Vec::new();
    for (i, tamper) in opts.workers.iter().enumerate() {
        let addr = SocketAddr::from(([127, 0, 0, 1], opts.base_port + 201 + i as u16));
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding worker {i} on {addr}"))?;
        drop(listener);
        let url = format!("http://{addr}");
        let worker_signer = signer(key_at(&dir, &format!("worker-{i}.key"))?, i + 1);
        // Bond more than the minimum: each receipt locks 10x what it bills until it
        // settles, and a busy devnet worker has many in flight.
        let (_, staked, _) = worker_signer
            .ledger()
            .account(&worker_signer.address())
            .await?;
        if staked < WORKER_STAKE {
            worker_signer
                .submit_and_wait(
                    deai_ledger::TxKind::Stake {
                        amount: WORKER_STAKE - staked,
                    },
                    Duration::from_secs(60),
                )
                .await
                .with_context(|| format!("worker {i} bonding its stake"))?;
        }
        let w = Worker::new(
            WorkerConfig {
                model_id: opts.model_id,
                price_per_1k: opts.price_per_1k,
                hardware: format!("cpu x{}", opts.engine.threads()),
                dir: dir.join(format!("worker-{i}")),
                tamper: tamper.clone(),
                post_timeout: Duration::from_secs(60),
                tamper_after: u64::from(opts.cheaters_pass_challenge),
            },
            opts.engine.clone(),
            worker_signer,
            url,
        )?;
        crate::serve(addr, w.router()).await?;
        w.join()
            .await
            .with_context(|| format!("worker {i} joining"))?;
        workers.push(w);
    }

    // Verifiers start once the workers serve: after a restart they fetch receipts at once.
    // Each validator also judges proposed training rounds, under the same signer.
    let mut verifiers = Vec::new();
    let mut validators = Vec::new();
    for i in 0..chain.len() {
        let s = Arc::new(signer(key_at(&dir, &format!("validator-{i}.key"))?, i));
        // Each validator's lines carry its index (`validator{i=..}`).
        let span = tracing::info_span!("validator", i);
        if !opts.no_verifier.contains(&i) {
            let engine = opts.verify_engine.as_ref().unwrap_or(&opts.engine).clone();
            let v = Arc::new(Verifier::new(s.clone(), engine, opts.model_id));
            tokio::spawn(
                v.clone()
                    .run(Duration::from_millis(200))
                    .instrument(span.clone()),
            );
            verifiers.push(v);
        }
        tokio::spawn(
            crate::training::TrainAuditor::new(s.clone())
                .run()
                .instrument(span.clone()),
        );
        // Its share of the beacon key: it signs the rounds that sample receipts.
        let share = local::share_path(&dir.join("keys").join(format!("validator-{i}.key")));
        if share.exists() {
            let chain_id = ledger.chain_id().await?;
            let b =
                crate::beacon::BeaconSigner::new(s.clone(), local::read_share(&share)?, chain_id)?;
            tokio::spawn(Arc::new(b).run(Duration::from_millis(200)).instrument(span));
        }
        validators.push(s);
    }

    // Wait until every worker has passed (an accepted job) or failed (inactive) its
    // capability challenge, so the gateway has someone to route to. A challenge job whose
    // committee has a member that does not judge yet (a validator run without a verifier,
    // whose duty the caller starts after this returns) waits out a verdict window, then
    // escalates to sealed judging (a commit phase, then reveals): on a loaded 2-core
    // machine that has taken over 180 s.
    let t0 = tokio::time::Instant::now();
    loop {
        let reg = ledger.workers().await?;
        let settled = workers.iter().all(|w| {
            reg.iter()
                .find(|e| e.address == w.address())
                .is_some_and(|e| e.worker.jobs_done > 0 || !e.worker.active)
        });
        if settled {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < CHALLENGES_WITHIN,
            "workers did not finish their capability challenges within {} s",
            CHALLENGES_WITHIN.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api_key = std::fs::read_to_string(dir.join("keys/api.key"))?
        .trim()
        .to_string();
    let client = Arc::new(signer(key_at(&dir, "client.key")?, 0));
    let client_addr = client.address();
    // The gateway's own account; the client authorizes it (a non-custodial API key), and
    // the demo app is registered.
    let gateway_signer = Arc::new(signer(key_at(&dir, "gateway.key")?, 0));
    let own_key_api_key = std::fs::read_to_string(dir.join("keys/api-own.key"))
        .unwrap_or_default()
        .trim()
        .to_string();
    // Once: a restarted devnet finds both on chain (and its accounts' nonces stay put).
    if ledger
        .allowance(&client_addr, &gateway_signer.address())
        .await?
        .is_none()
    {
        client
            .submit_and_wait(
                deai_ledger::TxKind::Authorize {
                    gateway: gateway_signer.address(),
                    limit: CLIENT_BALANCE / 10,
                    expires: u64::MAX,
                },
                Duration::from_secs(60),
            )
            .await
            .context("the client authorizing the gateway")?;
    }
    let app_signer = signer(key_at(&dir, "app.key")?, 1);
    let app = deai_ledger::state::app_id(&app_signer.address(), DEMO_APP);
    let registered = ledger.contributors_json().await?["apps"]
        .as_array()
        .is_some_and(|apps| apps.iter().any(|a| a["id"] == app.to_string()));
    if !registered {
        app_signer
            .submit_and_wait(
                deai_ledger::TxKind::RegisterApp {
                    name: DEMO_APP.into(),
                    fee_bps: 500,
                },
                Duration::from_secs(60),
            )
            .await
            .context("registering the demo app")?;
    }
    let model_author = key_at(&dir, "model-author.key")?.verifying_key().to_bytes();
    let gateway = Gateway::new(
        GatewayConfig {
            models: vec![CatalogEntry {
                name: opts.model_name.clone(),
                id: opts.model_id,
                tokenizer: Arc::new(opts.engine.model.tokenizer.clone()),
                n_ctx: opts.engine.model.cfg.n_ctx,
            }],
            api_keys: vec![(api_key.clone(), client.clone())],
            client_keys: match own_key_api_key.is_empty() {
                true => vec![],
                false => vec![(own_key_api_key.clone(), client_addr)],
            },
            signer: Some(gateway_signer.clone()),
            attempts: 3,
            worker_timeout: Duration::from_secs(120),
            dir: dir.join("gateway"),
            require_qualified: true,
        },
        ChainClient::new(&chain[0]),
    )?;
    let gw = crate::serve(
        SocketAddr::from(([127, 0, 0, 1], opts.base_port + 200)),
        gateway.router(),
    )
    .await?;
    let info = DevnetInfo {
        gateway: format!("http://{gw}"),
        chain,
        api_key,
        model: opts.model_name.clone(),
        model_id: opts.model_id,
        workers: workers.iter().map(|w| w.url().to_string()).collect(),
        client: client_addr,
        own_key_api_key,
        gateway_account: gateway_signer.address(),
        app,
        app_owner: app_signer.address(),
        model_author,
    };
    std::fs::write(
        dir.join("devnet.json"),
        serde_json::to_string_pretty(&info)?,
    )?;
    Ok(Devnet {
        info,
        workers,
        verifiers,
        validators,
        client,
        gateway,
        ledger,
    })
}

pub use commonware_runtime::Runner;

/// A commonware tokio runner whose storage lives under the devnet directory.
pub fn runner(dir: &Path) -> cw_tokio::Runner {
    local::runner(dir)
}
