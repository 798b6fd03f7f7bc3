//! `deai chain ...`, `deai tx ...` and `deai bench chain`: thin wrappers around `deai-chain`
//! (validators, HTTP API) and `deai-ledger` (transactions).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use deai_chain::local::{self, InitOptions, RunOptions};
use deai_client::blocking::ChainClient;
use deai_ledger::tx::{Beneficiary, DataShard, Shard};
use deai_ledger::{Param, ParamChange, TxKind};
use deai_types::Hash256;
use std::path::PathBuf;
use std::time::Duration;

fn default_dir() -> PathBuf {
    deai_models::default_home().join("chain")
}

#[derive(Subcommand)]
pub enum ChainCmd {
    /// Create a chain directory: genesis, validator keys, a funded faucet key, addresses.
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Blocks per consensus epoch (at least 2). The validator set follows stake, and
        /// changes only between epochs.
        #[arg(long, default_value_t = deai_ledger::state::DEFAULT_EPOCH_LENGTH)]
        epoch_length: u64,
        /// Blocks per beacon round: receipts posted in a round are sampled, and their
        /// committees drawn, by the threshold signature of the validators over it (0: no
        /// beacon; every validator may then judge every receipt and a quorum decides).
        #[arg(long, default_value_t = deai_ledger::state::DEFAULT_BEACON_PERIOD)]
        beacon_period: u64,
        /// First p2p port (validator i listens on PORT+i on 127.0.0.1).
        #[arg(long, default_value_t = 27_000)]
        p2p_port: u16,
        /// First HTTP API port.
        #[arg(long, default_value_t = 27_100)]
        http_port: u16,
        /// A model jobs may use (its id, an installed model's id prefix, a GGUF path, or
        /// "default"); repeatable. Without any, governance must allow models later.
        #[arg(long)]
        allow_model: Vec<String>,
        /// Share of receipts validators re-check, in basis points (10000 = all).
        #[arg(long)]
        sample_rate_bps: Option<u64>,
        /// Blocks after a receipt during which it may be challenged (loopback blocks take
        /// milliseconds: the ledger default of 20 suits only tests of the ledger itself).
        #[arg(long)]
        challenge_window: Option<u64>,
        /// Blocks validators have to reach a verdict on a challenged job.
        #[arg(long)]
        verdict_window: Option<u64>,
        /// Blocks a job may wait for its receipt before the client is refunded.
        #[arg(long)]
        job_timeout: Option<u64>,
    },
    /// Run validators of the chain in DIR in this process until Ctrl-C.
    Run {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Which validators, e.g. "0,1" (default: all, in one process).
        #[arg(long)]
        only: Option<String>,
        /// Exit after this many more finalized blocks (for scripts).
        #[arg(long)]
        blocks: Option<u64>,
    },
    /// Run a node whose key is not in the genesis. Peers admit it from the first epoch after
    /// it stakes and registers with this key (`deai tx stake`, then `deai tx
    /// register-validator --p2p ADDR` or `deai tx register-worker`): it follows the chain,
    /// and a validator with enough stake also votes. Peers are found from network.json's
    /// validators and discovery gossip; an unstaked key is refused.
    Join {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Its key file (hex ed25519 seed, as `deai keys new` writes).
        #[arg(long)]
        key: PathBuf,
        /// Storage index, past the genesis validators' (names its data partitions).
        #[arg(long)]
        index: usize,
        /// Its consensus p2p listener (the address it announces to peers).
        #[arg(long)]
        p2p: std::net::SocketAddr,
        /// Its HTTP API.
        #[arg(long)]
        http: std::net::SocketAddr,
        /// Exit after this many more finalized blocks (for scripts).
        #[arg(long)]
        blocks: Option<u64>,
    },
    /// Print a node's status (height, state root, validators, supply).
    Status {
        #[arg(long, default_value = "http://127.0.0.1:27100")]
        url: String,
    },
}

#[derive(Args)]
pub struct TxArgs {
    /// A node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:27100", global = true)]
    url: String,
    /// Signing key file (hex seed); default: the chain directory's faucet key.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Fee to pay.
    #[arg(long, default_value_t = 1, global = true)]
    fee: u64,
    /// Return once submitted instead of waiting for finality.
    #[arg(long, global = true)]
    no_wait: bool,
    #[command(subcommand)]
    kind: TxCmd,
}

#[derive(Subcommand)]
pub enum TxCmd {
    Transfer {
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
    },
    Stake {
        #[arg(long)]
        amount: u64,
    },
    Unstake {
        #[arg(long)]
        amount: u64,
    },
    RegisterWorker {
        /// Model ids (SHA-256 of the weights), comma separated.
        #[arg(long)]
        models: String,
        #[arg(long, default_value = "deai-cpu-bi-v1")]
        profile: String,
        #[arg(long, default_value = "cpu")]
        hardware: String,
        #[arg(long)]
        price_per_1k: u64,
        #[arg(long, default_value = "")]
        endpoint: String,
    },
    RegisterValidator {
        #[arg(long, default_value = "")]
        endpoint: String,
        /// `host:port` of this validator's consensus p2p listener, published on the ledger
        /// for operators and explorers (peers learn addresses from signed discovery gossip).
        #[arg(long, default_value = "")]
        p2p: String,
    },
    OpenJob {
        #[arg(long)]
        job: String,
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 256)]
        max_tokens: u32,
        #[arg(long)]
        escrow: u64,
        #[arg(long)]
        worker: Option<String>,
        /// The app that brought the request (its id, `deai tx register-app` prints
        /// it); its owner earns the app's fee on top of the cost.
        #[arg(long)]
        app: Option<String>,
        /// Open it as a gateway for this client, within the allowance it gave the sender.
        #[arg(long)]
        client: Option<String>,
    },
    PostReceipt {
        #[arg(long)]
        job: String,
        /// SHA-256 of the receipt's canonical bytes.
        #[arg(long)]
        receipt: String,
        #[arg(long)]
        tokens: u32,
        #[arg(long, default_value = "")]
        pointer: String,
    },
    Challenge {
        #[arg(long)]
        job: String,
    },
    Verdict {
        #[arg(long)]
        job: String,
        /// accept or reject
        #[arg(long)]
        verdict: String,
    },
    /// Seal a committee member's verdict on a sampled job (the commitment to the verdict
    /// and the proof of verification is computed here, bound to the key and blinded by a
    /// salt derived from it).
    VerdictCommit {
        #[arg(long)]
        job: String,
        /// accept or reject
        #[arg(long)]
        verdict: String,
        /// The proof of verification (64 hex: `deai_proof::pov_digest` keyed by the job's
        /// beacon value).
        #[arg(long)]
        pov: String,
    },
    /// Open it, once every member has committed.
    VerdictReveal {
        #[arg(long)]
        job: String,
        /// accept or reject
        #[arg(long)]
        verdict: String,
        #[arg(long)]
        pov: String,
    },
    /// Sign a closed beacon round with a validator's share of the beacon key
    /// (`keys/validator-N.share`).
    BeaconShare {
        #[arg(long)]
        round: u64,
        #[arg(long)]
        share: PathBuf,
    },
    Propose {
        /// A parameter name (e.g. slash_bps) with --value, allow_model / disallow_model
        /// with --model, allow_profile / disallow_profile with --profile, set_royalty with
        /// --model and --beneficiary (none ends the royalty), allow_trained_model with
        /// --model and --training, or grant with --to and --value.
        #[arg(long)]
        param: String,
        #[arg(long)]
        value: Option<u64>,
        #[arg(long)]
        model: Option<String>,
        /// A kernel profile id (e.g. deai-cpu-bi-v1).
        #[arg(long)]
        profile: Option<String>,
        /// A royalty beneficiary, `ADDRESS:WEIGHT` (repeatable).
        #[arg(long = "beneficiary")]
        beneficiaries: Vec<String>,
        /// The finished training job that produced --model.
        #[arg(long)]
        training: Option<String>,
        /// A grant's recipient.
        #[arg(long)]
        to: Option<String>,
    },
    /// Register a dataset (its id is printed): shards as `HASH:TOKENS`.
    RegisterDataset {
        #[arg(long)]
        license: String,
        #[arg(long = "shard", required = true)]
        shards: Vec<String>,
    },
    /// Register (or re-price) an app; its id is printed.
    RegisterApp {
        #[arg(long)]
        name: String,
        #[arg(long)]
        fee_bps: u64,
    },
    /// Delegate balance to a validator's pool (it shares the validator's rewards, less the
    /// commission, and its slashes).
    Delegate {
        #[arg(long)]
        validator: String,
        #[arg(long)]
        amount: u64,
    },
    /// Take a delegation out (--amount 0: all of it): into unbonding, or with --to into
    /// another validator's pool.
    Undelegate {
        #[arg(long)]
        validator: String,
        #[arg(long, default_value_t = 0)]
        amount: u64,
        #[arg(long)]
        to: Option<String>,
    },
    /// Let a gateway open jobs for this key, escrowing at most --limit until height
    /// --expires (--limit 0 revokes).
    Authorize {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        limit: u64,
        #[arg(long)]
        expires: u64,
    },
    Vote {
        #[arg(long)]
        proposal: u64,
        /// yes or no
        #[arg(long)]
        vote: String,
    },
    /// Report a validator's conflicting votes (an entry of `GET /v1/evidence`); nodes check
    /// the evidence and the ledger slashes the offender once per view.
    ReportEquivocation {
        /// The validator's address (`offender`).
        #[arg(long)]
        offender: String,
        #[arg(long)]
        view: u64,
        /// The encoded simplex activity, hex (`encoded`).
        #[arg(long)]
        evidence: String,
    },
    /// Open a DiLoCo training job, escrowing rounds x reward (`deai train --onchain` does
    /// this itself).
    OpenTraining {
        /// The training spec's id (`JobSpec` hash).
        #[arg(long)]
        job: String,
        /// The initial checkpoint's hash.
        #[arg(long)]
        checkpoint: String,
        /// The coordinator's commitment to its first round's challenge secret (its
        /// `/train/v1/round` shows it before the round opens).
        #[arg(long)]
        commitment: String,
        #[arg(long)]
        rounds: u32,
        #[arg(long)]
        workers: u32,
        #[arg(long)]
        reward_per_round: u64,
        /// The validator that verifies contributions and posts rounds.
        #[arg(long)]
        coordinator: String,
        /// A registered dataset shard it trains on, `DATASET:SHARD` (repeatable): the
        /// owners share the royalty of the model it produces.
        #[arg(long = "data")]
        data: Vec<String>,
    },
    /// Propose a training round's result (the job's coordinator only); it settles once
    /// validators holding more than two thirds of the stake accept it.
    TrainRound {
        #[arg(long)]
        job: String,
        #[arg(long)]
        round: u32,
        /// The merged checkpoint's hash.
        #[arg(long)]
        checkpoint: String,
        /// SHA-256 of the round report.
        #[arg(long)]
        report: String,
        /// Contributors paid, comma-separated addresses.
        #[arg(long, default_value = "")]
        accepted: String,
        /// Contributors slashed, comma-separated addresses.
        #[arg(long, default_value = "")]
        rejected: String,
        /// Where the coordinator serves the round's report and evidence.
        #[arg(long)]
        coordinator_url: String,
    },
    /// A validator's verdict on a proposed training round (after `deai train audit`).
    TrainVerdict {
        #[arg(long)]
        job: String,
        #[arg(long)]
        round: u32,
        /// SHA-256 of the proposed round's report.
        #[arg(long)]
        report: String,
        /// accept or reject
        #[arg(long)]
        verdict: String,
    },
}

#[derive(Args)]
pub struct BenchChainArgs {
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Offered transfers per second.
    #[arg(long, default_value_t = 3_000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 28_000)]
    port: u16,
    #[arg(long)]
    json: bool,
}

fn parse_addr(s: &str) -> Result<[u8; 32]> {
    let mut a = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut a)
        .with_context(|| format!("{s:?} is not an address (64 hex characters)"))?;
    Ok(a)
}

/// `--verdict accept|reject`.
fn parse_verdict(v: &str) -> Result<bool> {
    match v {
        "accept" => Ok(true),
        "reject" => Ok(false),
        v => bail!("--verdict must be accept or reject, not {v:?}"),
    }
}

fn parse_hash(s: &str) -> Result<Hash256> {
    s.parse().map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
}

pub fn chain(c: ChainCmd) -> Result<()> {
    match c {
        ChainCmd::Init {
            dir,
            validators,
            epoch_length,
            beacon_period,
            p2p_port,
            http_port,
            allow_model,
            sample_rate_bps,
            challenge_window,
            verdict_window,
            job_timeout,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let mut params = deai_ledger::state::Params::default();
            for m in &allow_model {
                let id = match m.parse::<Hash256>() {
                    Ok(id) => id,
                    Err(_) => deai_models::sha256_file(&crate::resolve_model(Some(m))?)?,
                };
                params.allowed_models.push(id);
            }
            params.allowed_models.sort();
            params.allowed_models.dedup();
            if let Some(r) = sample_rate_bps {
                deai_ledger::state::Params::check(deai_ledger::Param::SampleRateBps, r)
                    .map_err(|e| anyhow::anyhow!("--sample-rate-bps: {e}"))?;
                params.sample_rate_bps = r;
            }
            use deai_ledger::Param;
            for (param, flag, v, slot) in [
                (
                    Param::ChallengeWindow,
                    "--challenge-window",
                    challenge_window,
                    &mut params.challenge_window,
                ),
                (
                    Param::VerdictWindow,
                    "--verdict-window",
                    verdict_window,
                    &mut params.verdict_window,
                ),
                (
                    Param::JobTimeout,
                    "--job-timeout",
                    job_timeout,
                    &mut params.job_timeout,
                ),
            ] {
                if let Some(v) = v {
                    deai_ledger::state::Params::check(param, v)
                        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
                    *slot = v;
                }
            }
            // Unbonding and voting must outlast an epoch plus the windows chosen above.
            let params = params.fit_periods(epoch_length);
            let g = local::init(
                &dir,
                &InitOptions {
                    validators,
                    base_p2p_port: p2p_port,
                    base_http_port: http_port,
                    params,
                    epoch_length,
                    beacon_period: (beacon_period > 0).then_some(beacon_period),
                    ..Default::default()
                },
            )?;
            println!("chain {} in {}", g.chain_id(), dir.display());
            println!(
                "{validators} validators; faucet key {}",
                dir.join("keys/faucet.key").display()
            );
            println!("run it with: deai chain run --dir {}", dir.display());
            Ok(())
        }
        ChainCmd::Run { dir, only, blocks } => {
            let dir = dir.unwrap_or_else(default_dir);
            let (_, net) = local::load(&dir)?;
            let which: Vec<usize> = match only {
                None => (0..net.validators.len()).collect(),
                Some(s) => s
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .parse()
                            .with_context(|| format!("--only: {x:?} is not an index"))
                    })
                    .collect::<Result<_>>()?,
            };
            local::run_blocking(
                &dir,
                &which,
                &RunOptions::default(),
                Duration::from_secs(5),
                blocks,
            )
        }
        ChainCmd::Join {
            dir,
            key,
            index,
            p2p,
            http,
            blocks,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let seed = local::read_key(&key)?;
            local::run_joiner_blocking(
                &dir,
                index,
                seed,
                p2p,
                http,
                &RunOptions::default(),
                Duration::from_secs(5),
                blocks,
            )
        }
        ChainCmd::Status { url } => {
            let v = ChainClient::new(&url)?.status()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}

pub fn tx(a: TxArgs) -> Result<()> {
    let url = a.url.trim_end_matches('/').to_string();
    let key_path = a
        .key
        .unwrap_or_else(|| default_dir().join("keys/faucet.key"));
    let seed = local::read_key(&key_path)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let kind = match a.kind {
        TxCmd::Transfer { to, amount } => TxKind::Transfer {
            to: parse_addr(&to)?,
            amount,
        },
        TxCmd::Stake { amount } => TxKind::Stake { amount },
        TxCmd::Unstake { amount } => TxKind::Unstake { amount },
        TxCmd::RegisterWorker {
            models,
            profile,
            hardware,
            price_per_1k,
            endpoint,
        } => TxKind::RegisterWorker {
            models: models.split(',').map(parse_hash).collect::<Result<_>>()?,
            profile,
            hardware,
            price_per_1k,
            endpoint,
        },
        TxCmd::RegisterValidator { endpoint, p2p } => TxKind::RegisterValidator { endpoint, p2p },
        TxCmd::OpenJob {
            job,
            model,
            max_tokens,
            escrow,
            worker,
            app,
            client,
        } => TxKind::OpenJob {
            job: parse_hash(&job)?,
            model: parse_hash(&model)?,
            max_tokens,
            escrow,
            worker: worker.as_deref().map(parse_addr).transpose()?,
            app: app.as_deref().map(parse_hash).transpose()?,
            client: client.as_deref().map(parse_addr).transpose()?,
        },
        TxCmd::PostReceipt {
            job,
            receipt,
            tokens,
            pointer,
        } => TxKind::PostReceipt {
            job: parse_hash(&job)?,
            receipt: parse_hash(&receipt)?,
            tokens,
            pointer,
        },
        TxCmd::Challenge { job } => TxKind::Challenge {
            job: parse_hash(&job)?,
        },
        TxCmd::Verdict { job, verdict } => TxKind::Verdict {
            job: parse_hash(&job)?,
            accept: parse_verdict(&verdict)?,
        },
        TxCmd::VerdictCommit { job, verdict, pov } => {
            let job = parse_hash(&job)?;
            TxKind::VerdictCommit {
                job,
                commitment: deai_ledger::state::verdict_commitment(
                    &key.verifying_key().to_bytes(),
                    &job,
                    parse_verdict(&verdict)?,
                    &parse_hash(&pov)?,
                    &deai_ledger::state::verdict_salt(&key.to_bytes(), &job),
                ),
            }
        }
        TxCmd::VerdictReveal { job, verdict, pov } => {
            let job = parse_hash(&job)?;
            TxKind::VerdictReveal {
                job,
                accept: parse_verdict(&verdict)?,
                pov: parse_hash(&pov)?,
                salt: deai_ledger::state::verdict_salt(&key.to_bytes(), &job),
            }
        }
        TxCmd::BeaconShare { round, share } => {
            let chain = ChainClient::new(&url)?.chain_id()?;
            let share = local::read_share(&share)?;
            TxKind::BeaconShare {
                round,
                signature: deai_ledger::state::sign_beacon(&share, &chain, round)
                    .map_err(anyhow::Error::msg)?,
            }
        }
        TxCmd::Propose {
            param,
            value,
            model,
            profile,
            beneficiaries,
            training,
            to,
        } => {
            let change = match (param.as_str(), value, model, profile) {
                ("set_royalty", None, Some(m), None) => ParamChange::SetRoyalty {
                    model: parse_hash(&m)?,
                    beneficiaries: beneficiaries
                        .iter()
                        .map(|b| {
                            let (a, w) = b.split_once(':').with_context(|| {
                                format!("--beneficiary {b:?} is not ADDRESS:WEIGHT")
                            })?;
                            Ok(Beneficiary {
                                to: parse_addr(a)?,
                                weight: w.parse().with_context(|| format!("weight {w:?}"))?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                },
                ("allow_trained_model", None, Some(m), None) => ParamChange::AllowTrainedModel {
                    model: parse_hash(&m)?,
                    training: parse_hash(training.as_deref().context("give --training JOB")?)?,
                },
                ("grant", Some(amount), None, None) => ParamChange::Grant {
                    to: parse_addr(to.as_deref().context("give --to ADDRESS")?)?,
                    amount,
                },
                ("allow_model", None, Some(m), None) => ParamChange::AllowModel {
                    model: parse_hash(&m)?,
                },
                ("disallow_model", None, Some(m), None) => ParamChange::DisallowModel {
                    model: parse_hash(&m)?,
                },
                ("allow_profile", None, None, Some(profile)) => {
                    ParamChange::AllowProfile { profile }
                }
                ("disallow_profile", None, None, Some(profile)) => {
                    ParamChange::DisallowProfile { profile }
                }
                (p, Some(v), None, None) => ParamChange::Set {
                    param: Param::parse(p).with_context(|| {
                        let names: Vec<String> = Param::ALL.iter().map(|p| p.name()).collect();
                        format!("unknown parameter {p:?}; known: {}", names.join(", "))
                    })?,
                    value: v,
                },
                _ => bail!(
                    "give --param NAME --value V, --param allow_model|disallow_model --model ID, \
                     --param allow_profile|disallow_profile --profile ID, --param set_royalty \
                     --model ID [--beneficiary ADDRESS:WEIGHT]..., --param allow_trained_model \
                     --model ID --training JOB, or --param grant --to ADDRESS --value AMOUNT"
                ),
            };
            TxKind::Propose { change }
        }
        TxCmd::RegisterDataset { license, shards } => {
            let shards = shards
                .iter()
                .map(|s| {
                    let (h, t) = s
                        .split_once(':')
                        .with_context(|| format!("--shard {s:?} is not HASH:TOKENS"))?;
                    Ok(Shard {
                        hash: parse_hash(h)?,
                        tokens: t.parse().with_context(|| format!("tokens {t:?}"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let id = deai_ledger::state::dataset_id(&key.verifying_key().to_bytes(), &shards);
            println!("dataset {id}");
            TxKind::RegisterDataset { license, shards }
        }
        TxCmd::RegisterApp { name, fee_bps } => {
            let id = deai_ledger::state::app_id(&key.verifying_key().to_bytes(), &name);
            println!("app {id}");
            TxKind::RegisterApp { name, fee_bps }
        }
        TxCmd::Authorize {
            gateway,
            limit,
            expires,
        } => TxKind::Authorize {
            gateway: parse_addr(&gateway)?,
            limit,
            expires,
        },
        TxCmd::Delegate { validator, amount } => TxKind::Delegate {
            validator: parse_addr(&validator)?,
            amount,
        },
        TxCmd::Undelegate {
            validator,
            amount,
            to,
        } => TxKind::Undelegate {
            validator: parse_addr(&validator)?,
            amount,
            to: to.as_deref().map(parse_addr).transpose()?,
        },
        TxCmd::Vote { proposal, vote } => TxKind::Vote {
            proposal,
            yes: match vote.as_str() {
                "yes" => true,
                "no" => false,
                v => bail!("--vote must be yes or no, not {v:?}"),
            },
        },
        TxCmd::ReportEquivocation {
            offender,
            view,
            evidence,
        } => {
            let evidence = hex::decode(evidence.trim())
                .map_err(|e| anyhow::anyhow!("--evidence is not hex: {e}"))?;
            if evidence.len() > deai_ledger::tx::MAX_EVIDENCE {
                bail!(
                    "--evidence is {} bytes, the limit is {}",
                    evidence.len(),
                    deai_ledger::tx::MAX_EVIDENCE
                );
            }
            TxKind::ReportEquivocation {
                offender: parse_addr(&offender)?,
                view,
                evidence,
            }
        }
        TxCmd::OpenTraining {
            job,
            checkpoint,
            commitment,
            rounds,
            workers,
            reward_per_round,
            coordinator,
            data,
        } => TxKind::OpenTraining {
            job: parse_hash(&job)?,
            checkpoint: parse_hash(&checkpoint)?,
            commitment: parse_hash(&commitment).context("--commitment")?,
            rounds,
            workers,
            reward_per_round,
            coordinator: parse_addr(&coordinator)?,
            data: data
                .iter()
                .map(|d| {
                    let (ds, sh) = d
                        .split_once(':')
                        .with_context(|| format!("--data {d:?} is not DATASET:SHARD"))?;
                    Ok(DataShard {
                        dataset: parse_hash(ds)?,
                        shard: parse_hash(sh)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        },
        TxCmd::TrainRound {
            job,
            round,
            checkpoint,
            report,
            accepted,
            rejected,
            coordinator_url,
        } => {
            let list = |s: &str, flag: &str| -> Result<Vec<[u8; 32]>> {
                let v: Vec<[u8; 32]> = s
                    .split(',')
                    .filter(|x| !x.trim().is_empty())
                    .map(parse_addr)
                    .collect::<Result<_>>()
                    .with_context(|| format!("--{flag}"))?;
                if v.len() > deai_ledger::tx::MAX_TRAIN_WORKERS {
                    bail!(
                        "--{flag} lists {} addresses, the limit is {}",
                        v.len(),
                        deai_ledger::tx::MAX_TRAIN_WORKERS
                    );
                }
                Ok(v)
            };
            TxKind::TrainRound {
                job: parse_hash(&job)?,
                round,
                checkpoint: parse_hash(&checkpoint)?,
                report: parse_hash(&report)?,
                accepted: list(&accepted, "accepted")?,
                rejected: list(&rejected, "rejected")?,
                url: coordinator_url,
            }
        }
        TxCmd::TrainVerdict {
            job,
            round,
            report,
            verdict,
        } => TxKind::TrainVerdict {
            job: parse_hash(&job)?,
            round,
            report: parse_hash(&report)?,
            accept: parse_verdict(&verdict)?,
        },
    };
    let chain = ChainClient::new(&url)?;
    let signer = chain.signer(key, a.fee)?;
    let name = kind.name();
    let id = chain.submit(&signer, kind)?;
    println!("submitted {name} {id}");
    if a.no_wait {
        return Ok(());
    }
    let f = chain.wait_effective(&signer, name, &id, Duration::from_secs(60))?;
    println!("finalized at height {}", f.height);
    Ok(())
}

pub fn bench_chain(a: BenchChainArgs) -> Result<()> {
    if a.validators == 0 || a.rate == 0 || a.seconds == 0 {
        bail!("--validators, --rate and --seconds must be positive");
    }
    let r = deai_bench::chain::run(&deai_bench::chain::Options {
        validators: a.validators,
        rate: a.rate,
        seconds: a.seconds,
        base_port: a.port,
        ..Default::default()
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("validators            {}", r.validators);
        println!("offered               {} tx/s", r.offered_tx_per_s);
        println!(
            "transfers finalized   {:.0} tx/s (target >= 2000)",
            r.tx_per_s
        );
        println!(
            "receipts finalized    {:.0} /s (target >= 500)",
            r.receipts_per_s
        );
        println!(
            "finality p50 / p99    {:.0} / {:.0} ms (targets 300 / 1000)",
            r.finality_p50_ms, r.finality_p99_ms
        );
        println!("blocks                {:.1} /s", r.blocks_per_s);
        println!(
            "state root, 3000 changed leaves: {:.0} us at 10k leaves, {:.0} us at 1M ({:.2}x)",
            r.root_us_10k_accounts, r.root_us_1m_accounts, r.root_cost_ratio
        );
    }
    Ok(())
}
