//! A chain directory (genesis, keys, addresses) and running its validators on the tokio
//! runtime with authenticated p2p on loopback (or any address) and the HTTP API.
//!
//! ```text
//! DIR/genesis.json          the genesis (its hash is the chain id)
//! DIR/network.json          every validator's address, p2p and HTTP endpoints
//! DIR/keys/validator-N.key  hex ed25519 seeds (mode 0600)
//! DIR/keys/faucet.key       a funded account for devnets
//! DIR/data/                 the validators' storage (blocks, certificates, consensus journal)
//! ```

use crate::api::{self, Api};
use crate::app::App;
use crate::mempool::Mempool;
use crate::node::{self, Channels, NodeConfig};
use anyhow::{bail, Context, Result};
use commonware_cryptography::ChaCha20Poly1305;
use commonware_p2p::authenticated::discovery;
use commonware_p2p::{Manager, TrackedPeers};
use commonware_runtime::{tokio as cw_tokio, Quota, Runner, Spawner, Supervisor};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::{NZUsize, NZU32};
use deai_ledger::{Address, Genesis, GenesisAccount, GenesisValidator, Params, State};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorInfo {
    pub index: usize,
    #[serde(with = "deai_ledger::tx::hex_addr")]
    pub address: Address,
    pub p2p: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub validators: Vec<ValidatorInfo>,
}

/// What `deai chain init` writes.
pub struct InitOptions {
    pub validators: usize,
    pub base_p2p_port: u16,
    pub base_http_port: u16,
    pub faucet_balance: u64,
    pub validator_stake: u64,
    pub params: Params,
    pub chain_name: String,
    /// Blocks per consensus epoch (the validator set follows stake between epochs).
    pub epoch_length: u64,
    /// Blocks per beacon round, or `None` for a chain without a beacon (every validator
    /// may judge every receipt; a quorum decides).
    pub beacon_period: Option<u64>,
    /// Royalty splits of models the genesis allows.
    pub royalties: Vec<deai_ledger::state::GenesisRoyalty>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            validators: 4,
            base_p2p_port: 27_000,
            base_http_port: 27_100,
            faucet_balance: 1_000_000_000_000,
            validator_stake: 1_000_000,
            params: Params::default(),
            chain_name: "deai-devnet".into(),
            epoch_length: deai_ledger::state::DEFAULT_EPOCH_LENGTH,
            beacon_period: Some(deai_ledger::state::DEFAULT_BEACON_PERIOD),
            royalties: Vec::new(),
        }
    }
}

pub fn write_key(path: &Path, seed: &[u8; 32]) -> Result<()> {
    write_secret(path, seed)
}

/// Writes `bytes` as one line of hex, readable by its owner only (a key or a beacon share).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("key path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, format!("{}\n", hex::encode(bytes)).as_bytes())?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The beacon share file beside a validator key file (`validator-N.key` ->
/// `validator-N.share`), as `deai chain init` writes it.
pub fn share_path(key: &Path) -> std::path::PathBuf {
    key.with_extension("share")
}

/// Reads a beacon share written by `deai chain init`.
pub fn read_share(path: &Path) -> Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    hex::decode(text.trim()).with_context(|| format!("{}: expected hex", path.display()))
}

pub fn read_key(path: &Path) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .with_context(|| format!("{}: expected 64 hex characters", path.display()))?;
    Ok(seed)
}

pub fn address_of(seed: &[u8; 32]) -> Address {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

fn random_seed() -> [u8; 32] {
    use rand_core_cw::Rng;
    let mut rng = commonware_utils::rng::sys_rng();
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// Creates a chain directory with fresh keys. Refuses to overwrite an existing genesis.
pub fn init(dir: &Path, o: &InitOptions) -> Result<Genesis> {
    init_with(dir, o, Vec::new())
}

/// [`init`] with extra funded genesis accounts.
pub fn init_with(dir: &Path, o: &InitOptions, extra: Vec<GenesisAccount>) -> Result<Genesis> {
    if o.validators == 0 || o.validators > 64 {
        bail!("--validators must be 1..=64, got {}", o.validators);
    }
    if dir.join("genesis.json").exists() {
        bail!(
            "{} already holds a chain (genesis.json exists)",
            dir.display()
        );
    }
    // Everything is made and the genesis checked before the first file is written, so a
    // refused option (a beacon period out of range, say) leaves no keys behind.
    let mut accounts = Vec::new();
    let mut validators = Vec::new();
    let mut infos = Vec::new();
    let mut seeds = Vec::new();
    for i in 0..o.validators {
        let seed = random_seed();
        seeds.push(seed);
        let address = address_of(&seed);
        accounts.push(GenesisAccount {
            address,
            balance: 1_000_000,
            stake: o.validator_stake.max(o.params.min_validator_stake),
        });
        validators.push(GenesisValidator {
            address,
            endpoint: format!("127.0.0.1:{}", o.base_http_port as usize + i),
            p2p: format!("127.0.0.1:{}", o.base_p2p_port as usize + i),
        });
        infos.push(ValidatorInfo {
            index: i,
            address,
            p2p: SocketAddr::from(([127, 0, 0, 1], o.base_p2p_port + i as u16)),
            http: SocketAddr::from(([127, 0, 0, 1], o.base_http_port + i as u16)),
        });
    }
    let faucet = random_seed();
    accounts.push(GenesisAccount {
        address: address_of(&faucet),
        balance: o.faucet_balance,
        stake: 0,
    });
    accounts.extend(extra);
    // The beacon key, dealt here as every validator key is made here (`state::beacon`).
    let mut beacon_shares = Vec::new();
    let beacon = match o.beacon_period {
        Some(period) => {
            let players: Vec<Address> = validators.iter().map(|v| v.address).collect();
            let (output, shares) = deai_ledger::state::deal_beacon(&players, random_seed())
                .map_err(|e| anyhow::anyhow!("beacon key: {e}"))?;
            for v in &validators {
                let share = shares
                    .iter()
                    .find(|(a, _)| *a == v.address)
                    .map(|(_, s)| s.clone())
                    .context("every validator is dealt a share")?;
                beacon_shares.push(share);
            }
            Some(deai_ledger::state::GenesisBeacon { output, period })
        }
        None => None,
    };
    let genesis = Genesis {
        chain_name: o.chain_name.clone(),
        accounts,
        validators,
        params: o.params.clone(),
        epoch_length: o.epoch_length,
        beacon,
        royalties: o.royalties.clone(),
    };
    State::from_genesis(&genesis).map_err(|e| anyhow::anyhow!("genesis: {e}"))?;
    for (i, seed) in seeds.iter().enumerate() {
        let key = dir.join("keys").join(format!("validator-{i}.key"));
        write_key(&key, seed)?;
        if let Some(share) = beacon_shares.get(i) {
            write_secret(&share_path(&key), share)?;
        }
    }
    write_key(&dir.join("keys").join("faucet.key"), &faucet)?;
    std::fs::write(
        dir.join("genesis.json"),
        serde_json::to_string_pretty(&genesis)?,
    )?;
    std::fs::write(
        dir.join("network.json"),
        serde_json::to_string_pretty(&Network { validators: infos })?,
    )?;
    Ok(genesis)
}

pub fn load(dir: &Path) -> Result<(Genesis, Network)> {
    let g: Genesis = serde_json::from_str(
        &std::fs::read_to_string(dir.join("genesis.json"))
            .with_context(|| format!("no chain in {} (run `deai chain init`)", dir.display()))?,
    )
    .context("genesis.json")?;
    let n: Network = serde_json::from_str(&std::fs::read_to_string(dir.join("network.json"))?)
        .context("network.json")?;
    Ok((g, n))
}

/// The chain directory's network.json and genesis state.
fn load_state(dir: &Path) -> Result<(Network, State)> {
    let (genesis, net) = load(dir)?;
    let state = State::from_genesis(&genesis).map_err(|e| anyhow::anyhow!("genesis: {e}"))?;
    Ok((net, state))
}

/// A validator started by [`start_validators`].
pub struct Running {
    pub index: usize,
    pub app: App,
    pub marshal: api::Marshal,
    pub http: SocketAddr,
}

/// Tuning for [`start_validators`].
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub max_block_txs: usize,
    pub leader_timeout: Duration,
    pub serve_http: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_block_txs: 5_000,
            leader_timeout: Duration::from_secs(1),
            serve_http: true,
        }
    }
}

/// Starts validators `which` of the chain in `dir` inside a running tokio commonware runtime.
pub async fn start_validators(
    ctx: &cw_tokio::Context,
    dir: &Path,
    which: &[usize],
    opts: &RunOptions,
) -> Result<Vec<Running>> {
    let (net, state) = load_state(dir)?;
    let participants = node::participants(&state);
    if participants.len() != net.validators.len() {
        bail!("network.json and genesis.json disagree on the validator set");
    }
    let mut out = Vec::new();
    for &i in which {
        let info = net
            .validators
            .get(i)
            .with_context(|| format!("no validator {i} in network.json"))?;
        let seed = read_key(&dir.join("keys").join(format!("validator-{i}.key")))?;
        if address_of(&seed) != info.address {
            bail!("keys/validator-{i}.key does not match network.json");
        }
        out.push(start_one(ctx, &state, &net, i, &seed, info.p2p, info.http, opts).await?);
    }
    Ok(out)
}

/// Starts a node of the chain in `dir` with a key that is not a genesis validator's: it
/// follows the chain as an observer, and votes from the first epoch whose set includes it
/// (after it stakes and registers with its `p2p` address). Its storage partitions are named
/// by `index`, which must differ from the genesis validators'.
pub async fn start_joiner(
    ctx: &cw_tokio::Context,
    dir: &Path,
    index: usize,
    seed: &[u8; 32],
    p2p: SocketAddr,
    http: SocketAddr,
    opts: &RunOptions,
) -> Result<Running> {
    let (net, state) = load_state(dir)?;
    if index < net.validators.len() {
        bail!("index {index} is a genesis validator's");
    }
    start_one(ctx, &state, &net, index, seed, p2p, http, opts).await
}

/// Where a node starts looking for peers: every validator in network.json other than itself.
/// Everything else (validators that joined later, new addresses) is learned from signed
/// discovery gossip once connected.
fn bootstrappers(
    net: &Network,
    me: &commonware_cryptography::ed25519::PublicKey,
) -> Vec<discovery::Bootstrapper<commonware_cryptography::ed25519::PublicKey>> {
    net.validators
        .iter()
        .filter_map(|v| Some((node::public_key(&v.address)?, v.p2p.into())))
        .filter(|(pk, _)| pk != me)
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn start_one(
    ctx: &cw_tokio::Context,
    state: &State,
    net: &Network,
    i: usize,
    seed: &[u8; 32],
    p2p: SocketAddr,
    http: SocketAddr,
    opts: &RunOptions,
) -> Result<Running> {
    let signer = node::private_key(seed);
    let vctx = ctx.child("validator").with_attribute("index", i);
    let me = commonware_cryptography::Signer::public_key(&signer);
    let mut p2p_cfg = discovery::Config::local(
        Cups::<_, ChaCha20Poly1305>::new(
            Sake {
                signer: signer.clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        ),
        node::NAMESPACE,
        p2p,
        p2p,
        bootstrappers(net, &me),
        NZUsize!(
            deai_ledger::state::MAX_CONSENSUS_VALIDATORS
                + crate::epoch::MAX_FOLLOWERS
                + net.validators.len()
        ),
        8 * 1024 * 1024,
        NZUsize!(10_000),
    );
    // This epoch's and the one before (for peers still finishing it).
    p2p_cfg.tracked_peer_sets = NZUsize!(2);
    let (mut network, oracle) = discovery::Network::new(vctx.child("network"), p2p_cfg);
    // Inbound mailboxes are preallocated at (peers retained) x (burst) slots per channel, and
    // the peer table holds up to 2 x (100 validators + 256 followers): a burst of 128
    // messages per peer keeps that near 20 MB per channel, while the steady rate (2,000 per
    // second per peer) is far above what consensus and backfill send.
    let quota = Quota::per_second(NZU32!(2_000)).allow_burst(NZU32!(128));
    let channels = Channels {
        votes: network.register(node::CH_VOTES, quota),
        certs: network.register(node::CH_CERTS, quota),
        resolver: network.register(node::CH_RESOLVER, quota),
        backfill: network.register(node::CH_BACKFILL, quota),
        broadcast: network.register(node::CH_BROADCAST, quota),
    };
    network.start();
    let on_epoch: node::OnEpoch = {
        let oracle = std::sync::Mutex::new(oracle.clone());
        std::sync::Arc::new(move |set: &crate::epoch::EpochSet| {
            // Validators of the epoch are primary peers (dialed, in discovery's bit vectors);
            // staked followers are secondary (admitted, not dialed). Anyone else is refused.
            let peers = TrackedPeers::new(set.participants.clone(), set.followers.clone());
            if let Ok(mut o) = oracle.lock() {
                let _ = o.track(set.epoch, peers);
            }
        })
    };
    let n = node::start_node(
        vctx.child("node"),
        NodeConfig {
            signer,
            partition: format!("validator-{i}"),
            genesis_state: state.clone(),
            mempool: Mempool::new(100_000, 10_000),
            max_block_txs: opts.max_block_txs,
            leader_timeout: opts.leader_timeout,
            on_epoch: Some(on_epoch),
        },
        channels,
        oracle.clone(),
        oracle,
    )
    .await;
    if opts.serve_http {
        let router = api::router(Api {
            app: n.app.clone(),
            marshal: Some(n.marshal.clone()),
            me: address_of(seed),
            evidence: Some(n.evidence.clone()),
        });
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("binding the HTTP API on {http}"))?;
        vctx.child("http").spawn(move |_| async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%e, "HTTP API stopped");
            }
        });
    }
    Ok(Running {
        index: i,
        app: n.app,
        marshal: n.marshal,
        http,
    })
}

/// A tokio commonware runner whose storage lives in `dir/data`.
pub fn runner(dir: &Path) -> cw_tokio::Runner {
    let data: PathBuf = dir.join("data");
    cw_tokio::Runner::new(cw_tokio::Config::new().with_storage_directory(data))
}

/// Runs validators `which` of the chain in `dir` until Ctrl-C (or `stop_after` finalized
/// blocks, for scripts), printing one status line per `every`.
pub fn run_blocking(
    dir: &Path,
    which: &[usize],
    opts: &RunOptions,
    every: Duration,
    stop_after: Option<u64>,
) -> Result<()> {
    let path = dir.to_path_buf();
    let which = which.to_vec();
    let opts = opts.clone();
    runner(dir).start(|ctx| async move {
        let nodes = start_validators(&ctx, &path, &which, &opts).await?;
        serve(&ctx, nodes, every, stop_after).await
    })
}

/// Runs a node with the non-genesis key `seed` (see [`start_joiner`]) until Ctrl-C (or
/// `stop_after` finalized blocks).
#[allow(clippy::too_many_arguments)]
pub fn run_joiner_blocking(
    dir: &Path,
    index: usize,
    seed: [u8; 32],
    p2p: SocketAddr,
    http: SocketAddr,
    opts: &RunOptions,
    every: Duration,
    stop_after: Option<u64>,
) -> Result<()> {
    let path = dir.to_path_buf();
    let opts = opts.clone();
    // Its own storage directory: the runtime locks its directory, and the genesis
    // validators' process may hold `dir/data`.
    let data = dir.join(format!("data-{index}"));
    cw_tokio::Runner::new(cw_tokio::Config::new().with_storage_directory(data)).start(
        |ctx| async move {
            let node = start_joiner(&ctx, &path, index, &seed, p2p, http, &opts).await?;
            serve(&ctx, vec![node], every, stop_after).await
        },
    )
}

async fn serve(
    ctx: &cw_tokio::Context,
    nodes: Vec<Running>,
    every: Duration,
    stop_after: Option<u64>,
) -> Result<()> {
    for n in &nodes {
        eprintln!("validator {} up: HTTP API at http://{}", n.index, n.http);
    }
    let start_h = nodes[0].app.finalized_height();
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        let sleep = commonware_runtime::Clock::sleep(ctx, every);
        tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!("stopping (finalized state is on disk; restart resumes it)");
                return Ok(());
            }
            _ = sleep => {}
        }
        let s = nodes[0].app.finalized_state();
        eprintln!(
            "height {} epoch {} ({} validators) root {} mempool {}",
            s.height(),
            s.epoch_of(s.height() + 1),
            s.validator_set().len(),
            s.root().short(),
            nodes.iter().map(|n| n.app.mempool_len()).sum::<usize>()
        );
        if let Some(n) = stop_after {
            if s.height() >= start_h + n {
                return Ok(());
            }
        }
    }
}
