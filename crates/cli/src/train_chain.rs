//! `deai train --onchain`: the training job on a real chain. Starts a 4-validator chain in
//! the output directory (commonware simplex on loopback, on-disk storage, like `deai
//! devnet`), funds the job owner and the training workers at genesis, has every worker
//! stake the ledger's worker minimum, and opens the job on chain (`open_training`, escrowing
//! rounds x reward) with validator 0 as its coordinator. The coordinator then proposes each
//! round (`train_round`): the merged checkpoint's hash, the report digest, who is paid and
//! who is slashed; validators 1-3 replay it from the coordinator's evidence
//! (`deai_node::training::TrainAuditor`) and their verdicts settle it.

use anyhow::{Context, Result};
use commonware_runtime::tokio as cw_tokio;
use deai_chain::local::{self, InitOptions};
use deai_ledger::state::GenesisAccount;
use deai_ledger::{Address, TxKind};
use deai_node::ledger_client::{LedgerClient, Signer};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the chain side of a training run needs.
pub struct TrainChain {
    pub urls: Vec<String>,
    /// Validator 0: it opens every round on chain. Shared with whatever else signs for
    /// that validator in this process (one nonce sequence per key).
    pub coordinator: Arc<Signer>,
    /// Validators that judge the rounds and that this command must run itself (the
    /// training-only chain's validators 1-3); empty on a devnet, whose validators judge.
    pub auditors: Vec<Signer>,
    /// The validators expected to judge (for the summary's verdict counts).
    pub judges: Vec<Address>,
    pub ledger: LedgerClient,
}

/// Where the job runs.
pub enum ChainAt<'a> {
    /// A training-only chain in this directory, started here (`deai train --onchain`).
    Own(&'a cw_tokio::Context, &'a Path),
    /// The inference devnet running in this process (`deai train --devnet`).
    Devnet(&'a deai_node::devnet::Devnet),
}

/// Starts or attaches to the chain, stakes `workers` and opens `job` on it.
pub async fn connect(
    at: ChainAt<'_>,
    workers: &[SigningKey],
    job: JobOnChain,
) -> Result<TrainChain> {
    match at {
        ChainAt::Own(ctx, dir) => start(ctx, dir, workers, job).await,
        ChainAt::Devnet(net) => attach(net, workers, job).await,
    }
}

/// What the job puts on chain when it opens: its id, the first checkpoint and challenge
/// commitment, rounds, workers and reward per round.
pub type JobOnChain = (Hash256, (Hash256, Hash256), u32, u32, u64);

const OWNER_BALANCE: u64 = 1_000_000_000_000;
const WORKER_BALANCE: u64 = 1_000_000;

fn signer(key: SigningKey, chain: Hash256, fee: u64, url: &str) -> Signer {
    Signer::new(key, chain, fee, LedgerClient::new(url))
}

/// Creates (if new) and starts a training-only chain in `dir`, stakes `workers`, and opens
/// `job` on it.
async fn start(
    ctx: &cw_tokio::Context,
    dir: &Path,
    workers: &[SigningKey],
    job: JobOnChain,
) -> Result<TrainChain> {
    let owner_path = dir.join("keys").join("owner.key");
    if !dir.join("genesis.json").exists() {
        std::fs::create_dir_all(dir.join("keys"))?;
        let owner_seed = deai_proof::random_nonce();
        local::write_key(&owner_path, &owner_seed)?;
        let mut extra = vec![GenesisAccount {
            address: local::address_of(&owner_seed),
            balance: OWNER_BALANCE,
            stake: 0,
        }];
        extra.extend(workers.iter().map(|k| GenesisAccount {
            address: k.verifying_key().to_bytes(),
            balance: WORKER_BALANCE,
            stake: 0,
        }));
        let base = crate::bench_network::free_base(0)?;
        local::init_with(
            dir,
            &InitOptions {
                base_p2p_port: base,
                base_http_port: base + 100,
                params: deai_node::devnet::devnet_params(),
                chain_name: "deai-train".into(),
                ..InitOptions::default()
            },
            extra,
        )?;
    }
    let (urls, ledger) = deai_node::devnet::start_chain(ctx, dir).await?;
    let chain_id = ledger.chain_id().await?;
    let fee = ledger.params().await?.min_fee;
    let key = |name: &str| -> Result<SigningKey> {
        Ok(SigningKey::from_bytes(&local::read_key(
            &dir.join("keys").join(name),
        )?))
    };
    let owner = signer(key("owner.key")?, chain_id, fee, &urls[0]);
    let coordinator = Arc::new(signer(key("validator-0.key")?, chain_id, fee, &urls[0]));
    let mut auditors = vec![];
    for (i, url) in urls.iter().enumerate().skip(1) {
        auditors.push(signer(
            key(&format!("validator-{i}.key"))?,
            chain_id,
            fee,
            url,
        ));
    }
    let chain = TrainChain {
        urls,
        coordinator,
        judges: auditors.iter().map(|s| s.address()).collect(),
        auditors,
        ledger,
    };
    open(&chain, &owner, workers, job, &dir.display().to_string()).await?;
    Ok(chain)
}

/// The training job on the running inference devnet `net` (the network `deai devnet`
/// runs): its client account funds the training workers and pays the job's escrow, its
/// validator 0 coordinates, and its validators' auditors judge the rounds.
async fn attach(
    net: &deai_node::devnet::Devnet,
    workers: &[SigningKey],
    job: JobOnChain,
) -> Result<TrainChain> {
    let coordinator = net
        .validators
        .first()
        .context("the devnet has no validator")?
        .clone();
    let chain = TrainChain {
        urls: net.info.chain.clone(),
        judges: net.validators[1..].iter().map(|s| s.address()).collect(),
        coordinator,
        auditors: vec![],
        ledger: net.ledger.clone(),
    };
    // The workers are new accounts here: the client pays for their stake and fees.
    let params = chain.ledger.params().await?;
    let need = params.min_worker_stake + 16 * params.min_fee;
    let mut funding = vec![];
    for k in workers {
        let to = k.verifying_key().to_bytes();
        let have = chain.ledger.account(&to).await?;
        if have.0 + have.1 < need {
            let amount = need - have.0 - have.1;
            funding.push(net.client.submit(TxKind::Transfer { to, amount }).await?);
        }
    }
    for id in funding {
        let f = chain.ledger.wait(&id, Duration::from_secs(60)).await?;
        anyhow::ensure!(
            f.error.is_none(),
            "funding a training worker failed: {:?}",
            f.error
        );
    }
    open(&chain, &net.client, workers, job, "the devnet").await?;
    Ok(chain)
}

/// Has every worker stake the ledger's worker minimum (each through its own chain node, as
/// separate hosts would), then opens `job` from `owner` unless it is already open.
async fn open(
    chain: &TrainChain,
    owner: &Signer,
    workers: &[SigningKey],
    (job, (checkpoint, commitment), rounds, n_workers, reward): JobOnChain,
    place: &str,
) -> Result<()> {
    let ledger = &chain.ledger;
    let chain_id = ledger.chain_id().await?;
    let params = ledger.params().await?;
    let fee = params.min_fee;
    let wait = Duration::from_secs(60);
    let mut staking = vec![];
    for (i, k) in workers.iter().enumerate() {
        let s = signer(
            k.clone(),
            chain_id,
            fee,
            &chain.urls[(i + 1) % chain.urls.len()],
        );
        let have = s.ledger().account(&s.address()).await?.1;
        if have < params.min_worker_stake {
            let amount = params.min_worker_stake - have;
            staking.push((s.submit(TxKind::Stake { amount }).await?, s));
        }
    }
    for (id, s) in staking {
        let f = s.ledger().wait(&id, wait).await?;
        anyhow::ensure!(
            f.error.is_none(),
            "a training worker's stake failed: {:?}",
            f.error
        );
    }
    if let Some(t) = ledger.training(&job).await? {
        // Resuming a job half-way is not built: the coordinator keeps its weights in memory.
        anyhow::ensure!(
            t.status == deai_ledger::TrainingStatus::Running && t.rounds_done == 0,
            "training job {} is already {:?} after {} rounds on the chain in {place}; a job \
             cannot be resumed: use another --out (or --seed for another job)",
            job.short(),
            t.status,
            t.rounds_done,
        );
        return Ok(());
    }
    owner
        .submit_wait(
            TxKind::OpenTraining {
                job,
                checkpoint,
                commitment,
                rounds,
                workers: n_workers,
                reward_per_round: reward,
                coordinator: chain.coordinator.address(),
            },
            wait,
        )
        .await
        .context("opening the training job on chain")?;
    Ok(())
}

/// The job's record, each worker's (balance, stake) and each judging validator's accepting
/// and rejecting `train_verdict`s and its earnings (judging shares and, on a devnet,
/// inference verdict fees), as finalized, for the summary.
pub async fn summary(
    ledger: &LedgerClient,
    job: &Hash256,
    workers: &[(Address, String)],
    validators: &[Address],
) -> Result<serde_json::Value> {
    let t = ledger
        .training(job)
        .await?
        .context("the training job is not on the ledger")?;
    let mut ws = vec![];
    for (a, role) in workers {
        let (balance, stake, _) = ledger.account(a).await?;
        ws.push(serde_json::json!({
            "address": hex::encode(a),
            "role": role,
            "balance": balance,
            "stake": stake,
        }));
    }
    let all: serde_json::Value = ledger
        .http()
        .get(format!("{}/v1/validators", ledger.url()))
        .send()
        .await?
        .json()
        .await?;
    let mut vs = vec![];
    for a in validators {
        let earned = all["validators"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["address"] == hex::encode(a))
            .and_then(|v| v["validator"]["earned"].as_u64())
            .unwrap_or(0);
        // This job's verdicts among all the validator's transactions (on a devnet, most are
        // inference verdicts), a page of 100 at a time, up to 100 pages.
        let mut verdicts = vec![];
        for page in 0..100 {
            let url = format!(
                "{}/v1/account/{}/txs?limit=100&offset={}",
                ledger.url(),
                hex::encode(a),
                page * 100
            );
            let v: serde_json::Value = ledger.http().get(&url).send().await?.json().await?;
            let txs = v["txs"].as_array().cloned().unwrap_or_default();
            let last = txs.len() < 100;
            verdicts.extend(txs.into_iter().filter(|r| {
                r["type"] == "train_verdict" && r["job"] == job.to_hex() && r["error"].is_null()
            }));
            if last {
                break;
            }
        }
        let yes = verdicts.iter().filter(|r| r["yes"] == true).count();
        vs.push(serde_json::json!({
            "address": hex::encode(a),
            "accepted_rounds": yes,
            "rejected_rounds": verdicts.len() - yes,
            "earned": earned,
        }));
    }
    Ok(serde_json::json!({
        "height": ledger.height().await?,
        "training": t,
        "workers": ws,
        "validators": vs,
    }))
}
