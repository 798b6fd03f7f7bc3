//! The chain side of a training network: a job escrowed, its rounds proposed and judged, and
//! its workers paid or slashed on a ledger. Either a training-only 4-validator chain that
//! this process starts in a directory (commonware simplex on loopback, on-disk storage, like
//! the devnet's), which funds the job owner and the training workers at genesis, or the
//! inference devnet already running in this process, whose client account funds them. Every
//! worker stakes the ledger's worker minimum and the job opens on chain (`open_training`,
//! escrowing rounds x reward) with validator 0 as its coordinator. The coordinator then
//! proposes each round (`train_round`): the merged checkpoint's hash, the report digest, who
//! is paid and who is slashed; the other validators replay it from the coordinator's
//! evidence ([`crate::training::TrainAuditor`]) and their verdicts settle it.

use crate::devnet::{self, Devnet};
use anyhow::{Context, Result};
use commonware_runtime::tokio as cw_tokio;
use deai_chain::local::{self, InitOptions};
use deai_client::{ChainClient, Signer};
use deai_ledger::state::GenesisAccount;
use deai_ledger::{Address, TrainingJob, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the chain side of a training run needs.
pub struct TrainChain {
    /// The chain nodes' API URLs.
    pub urls: Vec<String>,
    /// Validator 0: it opens every round on chain. Shared with whatever else signs for
    /// that validator in this process (one nonce sequence per key).
    pub coordinator: Arc<Signer>,
    /// Validators that judge the rounds and that this process must run itself (the
    /// training-only chain's validators 1-3); empty on a devnet, whose validators judge.
    pub auditors: Vec<Signer>,
    /// The validators expected to judge (for the summary's verdict counts).
    pub judges: Vec<Address>,
    pub ledger: ChainClient,
}

/// Where the job runs.
pub enum ChainAt<'a> {
    /// A training-only chain in this directory, started here (`deai train --onchain`).
    Own(&'a cw_tokio::Context, &'a Path),
    /// The inference devnet running in this process (`deai train --devnet`).
    Devnet(&'a Devnet),
}

/// What a job puts on chain when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnchainJob {
    /// The job spec's id.
    pub job_id: Hash256,
    /// The initial checkpoint's hash.
    pub checkpoint: Hash256,
    /// The coordinator's commitment to round 0's challenge secret.
    pub first_commitment: Hash256,
    pub rounds: u32,
    /// Most contributors one round may accept.
    pub workers: u32,
    /// Escrowed per round, paid to contributors and judges.
    pub reward_per_round: u64,
}

/// Starts or attaches to the chain, stakes `workers` and opens `job` on it.
pub async fn connect(
    at: ChainAt<'_>,
    workers: &[SigningKey],
    job: OnchainJob,
) -> Result<TrainChain> {
    match at {
        ChainAt::Own(ctx, dir) => start(ctx, dir, workers, job).await,
        ChainAt::Devnet(net) => attach(net, workers, job).await,
    }
}

/// A free block of loopback ports for a 4-validator chain (p2p on `+0..4`, HTTP on
/// `+100..104`) and a devnet's gateway (`+200`) with `inference_workers` workers (`+201..`).
pub fn free_port_base(inference_workers: usize) -> Result<u16> {
    let offsets: Vec<u16> = (0..4)
        .chain(100..104)
        .chain(200..=200 + inference_workers as u16)
        .collect();
    Ok(deai_chain::ports::free_port_base(&offsets)?)
}

const OWNER_BALANCE: u64 = 1_000_000_000_000;
const WORKER_BALANCE: u64 = 1_000_000;

fn signer(key: SigningKey, chain: Hash256, fee: u64, url: &str) -> Signer {
    Signer::new(key, chain, fee, ChainClient::new(url))
}

/// Creates (if new) and starts a training-only chain in `dir`, stakes `workers`, and opens
/// `job` on it.
async fn start(
    ctx: &cw_tokio::Context,
    dir: &Path,
    workers: &[SigningKey],
    job: OnchainJob,
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
        let base = free_port_base(0)?;
        local::init_with(
            dir,
            &InitOptions {
                base_p2p_port: base,
                base_http_port: base + 100,
                params: devnet::devnet_params(),
                chain_name: "deai-train".into(),
                ..InitOptions::default()
            },
            extra,
        )?;
    }
    let (urls, ledger) = devnet::start_chain(ctx, dir).await?;
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

/// The training job on the running inference devnet `net`: its client account funds the
/// training workers and pays the job's escrow, its validator 0 coordinates, and its
/// validators' auditors judge the rounds.
async fn attach(net: &Devnet, workers: &[SigningKey], job: OnchainJob) -> Result<TrainChain> {
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
    job: OnchainJob,
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
    if let Some(t) = ledger.training(&job.job_id).await? {
        // Resuming a job half-way is not built: the coordinator keeps its weights in memory.
        anyhow::ensure!(
            t.status == deai_ledger::TrainingStatus::Running && t.rounds_done == 0,
            "training job {} is already {:?} after {} rounds on the chain in {place}; a job \
             cannot be resumed: use another --out (or --seed for another job)",
            job.job_id.short(),
            t.status,
            t.rounds_done,
        );
        return Ok(());
    }
    owner
        .submit_and_wait(
            TxKind::OpenTraining {
                job: job.job_id,
                checkpoint: job.checkpoint,
                commitment: job.first_commitment,
                rounds: job.rounds,
                workers: job.workers,
                reward_per_round: job.reward_per_round,
                coordinator: chain.coordinator.address(),
                data: Vec::new(),
            },
            wait,
        )
        .await
        .context("opening the training job on chain")?;
    Ok(())
}

/// The job on chain after its run, as finalized.
#[derive(Clone, Debug, Serialize)]
pub struct OnchainSummary {
    /// The finalized height it was read at.
    pub height: u64,
    /// The job's record.
    pub training: TrainingJob,
    pub workers: Vec<WorkerAccount>,
    pub validators: Vec<JudgeRecord>,
}

/// A training worker's account after the run.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerAccount {
    #[serde(with = "deai_ledger::tx::hex_addr")]
    pub address: Address,
    /// Its behavior's name (`honest` or the cheat it plays).
    pub role: String,
    pub balance: u64,
    pub stake: u64,
}

/// A judging validator's verdicts on the job and its earnings.
#[derive(Clone, Debug, Serialize)]
pub struct JudgeRecord {
    #[serde(with = "deai_ledger::tx::hex_addr")]
    pub address: Address,
    /// Its accepting `train_verdict`s on this job.
    pub accepted_rounds: usize,
    /// Its rejecting ones.
    pub rejected_rounds: usize,
    /// All it earned as a validator (judging shares and, on a devnet, inference verdict
    /// fees).
    pub earned: u64,
}

/// The job's record, each worker's balance and stake, and each judging validator's
/// verdicts and earnings, as finalized, for the summary.
pub async fn summary(
    ledger: &ChainClient,
    job: &Hash256,
    workers: &[(Address, String)],
    validators: &[Address],
) -> Result<OnchainSummary> {
    let training = ledger
        .training(job)
        .await?
        .context("the training job is not on the ledger")?;
    let mut ws = vec![];
    for (a, role) in workers {
        let (balance, stake, _) = ledger.account(a).await?;
        ws.push(WorkerAccount {
            address: *a,
            role: role.clone(),
            balance,
            stake,
        });
    }
    let all = ledger.validators_json().await?;
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
            let txs = ledger.account_txs(a, 100, page * 100).await?;
            let last = txs.len() < 100;
            verdicts.extend(txs.into_iter().filter(|r| {
                r["type"] == "train_verdict" && r["job"] == job.to_hex() && r["error"].is_null()
            }));
            if last {
                break;
            }
        }
        let yes = verdicts.iter().filter(|r| r["yes"] == true).count();
        vs.push(JudgeRecord {
            address: *a,
            accepted_rounds: yes,
            rejected_rounds: verdicts.len() - yes,
            earned,
        });
    }
    Ok(OnchainSummary {
        height: ledger.height().await?,
        training,
        workers: ws,
        validators: vs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_rows_name_accounts_in_hex() {
        let w = serde_json::to_value(WorkerAccount {
            address: [0xab; 32],
            role: "honest".into(),
            balance: 5,
            stake: 7,
        })
        .unwrap();
        assert_eq!(w["address"], "ab".repeat(32));
        assert_eq!(
            (w["role"].as_str(), w["stake"].as_u64()),
            (Some("honest"), Some(7))
        );
        let j = serde_json::to_value(JudgeRecord {
            address: [1; 32],
            accepted_rounds: 3,
            rejected_rounds: 0,
            earned: 9,
        })
        .unwrap();
        assert_eq!(j["address"], "01".repeat(32));
        assert_eq!(j["accepted_rounds"], 3);
    }

    #[test]
    fn a_port_block_leaves_room_for_the_chain_the_gateway_and_the_workers() {
        let base = free_port_base(2).unwrap();
        for o in (0..4).chain(100..104).chain(200..=202) {
            std::net::TcpListener::bind(("127.0.0.1", base + o)).unwrap();
        }
    }
}
