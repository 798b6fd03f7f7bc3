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
use std::time::Duration;

/// What the chain side of a training run needs.
pub struct TrainChain {
    pub urls: Vec<String>,
    pub coordinator: Signer,
    /// The other validators, each through its own node: they judge the rounds.
    pub auditors: Vec<Signer>,
    pub ledger: LedgerClient,
}

const OWNER_BALANCE: u64 = 1_000_000_000_000;
const WORKER_BALANCE: u64 = 1_000_000;

fn signer(key: SigningKey, chain: Hash256, fee: u64, url: &str) -> Signer {
    Signer::new(key, chain, fee, LedgerClient::new(url))
}

/// Creates (if new) and starts the chain in `dir`, stakes `workers`, and opens `job` on it.
pub async fn start(
    ctx: &cw_tokio::Context,
    dir: &Path,
    workers: &[SigningKey],
    (job, (checkpoint, commitment), rounds, n_workers, reward): (
        Hash256,
        (Hash256, Hash256),
        u32,
        u32,
        u64,
    ),
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
    let params = ledger.params().await?;
    let fee = params.min_fee;
    let wait = Duration::from_secs(60);
    // Every worker stakes the minimum (each through its own chain node, as separate hosts).
    let mut staking = vec![];
    for (i, k) in workers.iter().enumerate() {
        let s = signer(k.clone(), chain_id, fee, &urls[(i + 1) % urls.len()]);
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
    let coordinator = signer(
        SigningKey::from_bytes(&local::read_key(&dir.join("keys/validator-0.key"))?),
        chain_id,
        fee,
        &urls[0],
    );
    if let Some(t) = ledger.training(&job).await? {
        // Resuming a job half-way is not built: the coordinator keeps its weights in memory.
        anyhow::ensure!(
            t.status == deai_ledger::TrainingStatus::Running && t.rounds_done == 0,
            "training job {} is already {:?} after {} rounds on the chain in {}; a job cannot \
             be resumed: use another --out (or --seed for another job)",
            job.short(),
            t.status,
            t.rounds_done,
            dir.display()
        );
    } else {
        let owner = signer(
            SigningKey::from_bytes(&local::read_key(&owner_path)?),
            chain_id,
            fee,
            &urls[0],
        );
        owner
            .submit_wait(
                TxKind::OpenTraining {
                    job,
                    checkpoint,
                    commitment,
                    rounds,
                    workers: n_workers,
                    reward_per_round: reward,
                    coordinator: coordinator.address(),
                },
                wait,
            )
            .await
            .context("opening the training job on chain")?;
    }
    let mut auditors = vec![];
    for (i, url) in urls.iter().enumerate().skip(1) {
        let key = dir.join(format!("keys/validator-{i}.key"));
        auditors.push(signer(
            SigningKey::from_bytes(&local::read_key(&key)?),
            chain_id,
            fee,
            url,
        ));
    }
    Ok(TrainChain {
        urls,
        coordinator,
        auditors,
        ledger,
    })
}

/// The job's record, each worker's (balance, stake) and each judging validator's accepting
/// and rejecting `train_verdict`s, as finalized, for the summary.
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
    let mut vs = vec![];
    for a in validators {
        let url = format!(
            "{}/v1/account/{}/txs?limit=100",
            ledger.url(),
            hex::encode(a)
        );
        let v: serde_json::Value = ledger.http().get(&url).send().await?.json().await?;
        let verdicts: Vec<&serde_json::Value> = v["txs"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter(|r| r["type"] == "train_verdict" && r["error"].is_null())
                    .collect()
            })
            .unwrap_or_default();
        let yes = verdicts.iter().filter(|r| r["yes"] == true).count();
        vs.push(serde_json::json!({
            "address": hex::encode(a),
            "accepted_rounds": yes,
            "rejected_rounds": verdicts.len() - yes,
        }));
    }
    Ok(serde_json::json!({
        "height": ledger.height().await?,
        "training": t,
        "workers": ws,
        "validators": vs,
    }))
}
