//! Signed transactions and their canonical encoding.
//!
//! Wire form: `Tx` fields in order, then the 64-byte ed25519 signature. The signature covers
//! `"deai-tx-v1" || encode(Tx)`, and `Tx` carries the chain id, so a transaction is valid
//! on exactly one chain; the per-account nonce makes it valid exactly once.

use deai_types::codec::{DecodeError, Reader, Writer};
use deai_types::Hash256;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// An account: the raw ed25519 public key of its owner.
pub type Address = [u8; 32];

/// Largest encoded transaction accepted anywhere (mempool, block, decoder).
pub const MAX_TX_BYTES: usize = 4096;
/// Largest string field (profile, hardware, endpoint, pointer).
pub const MAX_STR: usize = 256;
/// Most models one worker may register.
pub const MAX_MODELS: usize = 16;
/// Largest equivocation evidence (two simplex votes take about 300 bytes).
pub const MAX_EVIDENCE: usize = 2048;
/// Bytes of a beacon partial signature (a BLS12-381 signature in G2).
pub const BEACON_SIGNATURE_BYTES: usize = 96;
/// Most contributors one training round can list (accepted plus rejected).
pub const MAX_TRAIN_WORKERS: usize = 64;
/// Most shards one dataset registration lists.
pub const MAX_SHARDS: usize = 64;
/// Most dataset shards one training job names.
pub const MAX_TRAIN_SHARDS: usize = 32;
/// Most beneficiaries of one model's royalty named by governance.
pub const MAX_BENEFICIARIES: usize = 16;

const SIGN_DOMAIN: &[u8] = b"deai-tx-v1";

/// A governance-controlled parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// Lowest price a worker may ask, per 1000 tokens.
    PriceFloor,
    /// Share of receipts validators sample, in basis points.
    SampleRateBps,
    /// Share of a cheating worker's stake that is slashed, in basis points.
    SlashBps,
    /// Blocks after a receipt during which it may be challenged.
    ChallengeWindow,
    /// Blocks after a challenge within which validators must reach a verdict.
    VerdictWindow,
    /// Blocks a job may wait for a receipt before the client is refunded.
    JobTimeout,
    /// Blocks between unstake and release of the funds.
    UnbondingPeriod,
    /// Treasury cut of each settled job, in basis points.
    TreasuryBps,
    /// Validators' fee on each settled job, in basis points.
    ValidatorFeeBps,
    MinWorkerStake,
    MinValidatorStake,
    /// Bond a challenger escrows.
    ChallengeBond,
    /// Lowest fee a transaction may pay.
    MinFee,
    /// Share of all stake that must vote for a proposal to count, in basis points.
    QuorumBps,
    /// Share of the votes cast that must be yes, in basis points.
    ThresholdBps,
    /// Blocks a proposal is open for votes.
    VotingPeriod,
    /// Blocks between the end of a passed vote and its execution.
    ExecutionDelay,
    /// Stake a worker locks for each receipt until it settles, as a share of the billed
    /// cost in basis points (10000 = 1x); a rejected receipt loses at least this much.
    CollateralBps,
    /// Share of a slash paid to whoever brought the evidence (the challenger, the rejecting
    /// validators, the coordinator that rejected a contribution, an equivocation's
    /// reporter), in basis points; the rest is burned, so nobody profits from another
    /// party's rejection beyond it.
    ReporterBps,
    /// Validators drawn by the beacon to re-execute each sampled receipt.
    CommitteeSize,
    /// Stake a validator loses per verdict against the settled outcome, or per committee
    /// deadline it misses.
    VerdictSlash,
    /// Share of each settled job's cost paid to its model's royalty beneficiaries (when the
    /// model has any), in basis points.
    RoyaltyBps,
    /// Of a trained model's royalty, the share its data providers get (the trainers get the
    /// rest), in basis points; fixed per model when governance allows it.
    DataRoyaltyBps,
    /// Highest fee an app may ask on the jobs it brings, in basis points of their cost.
    AppFeeCapBps,
    /// Fee a gateway earns on the jobs it opens for a client that authorized it, in basis
    /// points of their cost.
    GatewayFeeBps,
    /// A validator's commission on the rewards its delegators' stake earns, in basis points.
    CommissionBps,
}

impl Param {
    pub const ALL: [Param; 26] = [
        Param::PriceFloor,
        Param::SampleRateBps,
        Param::SlashBps,
        Param::ChallengeWindow,
        Param::VerdictWindow,
        Param::JobTimeout,
        Param::UnbondingPeriod,
        Param::TreasuryBps,
        Param::ValidatorFeeBps,
        Param::MinWorkerStake,
        Param::MinValidatorStake,
        Param::ChallengeBond,
        Param::MinFee,
        Param::QuorumBps,
        Param::ThresholdBps,
        Param::VotingPeriod,
        Param::ExecutionDelay,
        Param::CollateralBps,
        Param::ReporterBps,
        Param::CommitteeSize,
        Param::VerdictSlash,
        Param::RoyaltyBps,
        Param::DataRoyaltyBps,
        Param::AppFeeCapBps,
        Param::GatewayFeeBps,
        Param::CommissionBps,
    ];

    fn code(self) -> u8 {
        Param::ALL.iter().position(|p| *p == self).unwrap() as u8
    }

    fn from_code(c: u8) -> Option<Param> {
        Param::ALL.get(c as usize).copied()
    }

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Param> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// What a governance proposal changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamChange {
    Set {
        param: Param,
        value: u64,
    },
    AllowModel {
        model: Hash256,
    },
    DisallowModel {
        model: Hash256,
    },
    /// Accept workers (and receipts) of this kernel profile.
    AllowProfile {
        profile: String,
    },
    DisallowProfile {
        profile: String,
    },
    /// Names the beneficiaries of `model`'s royalty (`royalty_bps` of each settled job's
    /// cost), paid in proportion to their weights; an empty list ends its royalty.
    SetRoyalty {
        model: Hash256,
        beneficiaries: Vec<Beneficiary>,
    },
    /// Allows `model`, the published export of finished training job `training`, and
    /// derives its royalty from the job: its trainers by accepted contributions and the
    /// owners of the dataset shards it trained on by their tokens.
    AllowTrainedModel {
        model: Hash256,
        training: Hash256,
    },
    /// Pays `amount` from the treasury to `to` (a grant).
    Grant {
        #[serde(with = "hex_addr")]
        to: Address,
        amount: u64,
    },
}

/// A named royalty beneficiary and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beneficiary {
    #[serde(with = "hex_addr")]
    pub to: Address,
    pub weight: u64,
}

/// One shard of a registered dataset: its content hash and how many tokens it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub hash: Hash256,
    pub tokens: u64,
}

/// A dataset shard a training job trains on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DataShard {
    pub dataset: Hash256,
    pub shard: Hash256,
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum TxKind {
    Transfer {
        #[serde(with = "hex_addr")]
        to: Address,
        amount: u64,
    },
    Stake {
        amount: u64,
    },
    Unstake {
        amount: u64,
    },
    RegisterWorker {
        models: Vec<Hash256>,
        profile: String,
        hardware: String,
        /// Price per 1000 tokens (prompt + output).
        price_per_1k: u64,
        endpoint: String,
    },
    RegisterValidator {
        endpoint: String,
        /// `host:port` of its consensus p2p listener, published for operators and explorers
        /// (or empty). Nodes learn each other's addresses from signed discovery gossip.
        #[serde(default)]
        p2p: String,
    },
    /// Escrows `escrow` for job `job` (the receipt's job id).
    OpenJob {
        job: Hash256,
        model: Hash256,
        max_tokens: u32,
        escrow: u64,
        #[serde(with = "hex_addr_opt")]
        worker: Option<Address>,
        /// The app that brought the request (`state::app_id`): its owner earns the app's
        /// fee on top of the job's cost.
        #[serde(default)]
        app: Option<Hash256>,
        /// Sent by a gateway for this client, within the allowance the client gave it
        /// (`Authorize`): the escrow comes from the client's balance, the refund goes back
        /// to it, and the gateway earns `gateway_fee_bps` on top of the job's cost.
        #[serde(default, with = "hex_addr_opt")]
        client: Option<Address>,
    },
    /// The assigned worker posts the digest of its receipt and where to fetch it.
    PostReceipt {
        job: Hash256,
        receipt: Hash256,
        /// Prompt plus output tokens billed.
        tokens: u32,
        pointer: String,
    },
    /// Disputes a receipt within the challenge window, escrowing the challenge bond.
    Challenge {
        job: Hash256,
    },
    /// A validator's verdict on a receipt after re-executing it.
    Verdict {
        job: Hash256,
        accept: bool,
    },
    /// Reports a consensus validator that signed two conflicting votes in one view.
    /// `evidence` is the simplex activity as commonware encodes it. The chain checks it
    /// (both signatures, the signer is `offender`, the view is `view`) before a block that
    /// carries it is proposed or voted for; the ledger applies the record rules: the
    /// offender's stake is slashed once per view, half to the reporter, the rest burned.
    ReportEquivocation {
        #[serde(with = "hex_addr")]
        offender: Address,
        view: u64,
        #[serde(with = "hex_vec")]
        evidence: Vec<u8>,
    },
    /// Opens a DiLoCo training job: escrows `rounds x reward_per_round`. `job` is the
    /// training spec's content hash (model config, data shards, H, optimizers, seed),
    /// `checkpoint` the initial weights' hash, `coordinator` the registered validator that
    /// verifies contributions and posts each round, `commitment` the coordinator's
    /// commitment to its first round's challenge secret (later rounds' are in the settled
    /// reports), so that validators check round 0's challenge against a value fixed before
    /// any contribution.
    OpenTraining {
        job: Hash256,
        checkpoint: Hash256,
        commitment: Hash256,
        rounds: u32,
        workers: u32,
        reward_per_round: u64,
        #[serde(with = "hex_addr")]
        coordinator: Address,
        /// The registered dataset shards it trains on (their owners share the royalty of
        /// the model it produces).
        #[serde(default)]
        data: Vec<DataShard>,
    },
    /// The job's coordinator proposes the result of round `round`: the merged checkpoint,
    /// the digest of its round report, the contributors whose work passed re-execution (to
    /// share the round's reward) and those caught cheating (to be slashed), and the URL where
    /// it serves the round's report and evidence. It settles once validators holding more
    /// than two thirds of the active stake accept it (`TrainVerdict`; the coordinator's own
    /// stake counts as accepting).
    TrainRound {
        job: Hash256,
        round: u32,
        checkpoint: Hash256,
        report: Hash256,
        #[serde(with = "hex_addrs")]
        accepted: Vec<Address>,
        #[serde(with = "hex_addrs")]
        rejected: Vec<Address>,
        url: String,
    },
    /// A validator's verdict on a proposed training round, after replaying it from the
    /// coordinator's evidence (`deai train audit`). More than two thirds of the active
    /// stake rejecting it slashes the coordinator and ends the job.
    TrainVerdict {
        job: Hash256,
        round: u32,
        report: Hash256,
        accept: bool,
    },
    Propose {
        change: ParamChange,
    },
    /// A sealed verdict: `state::verdict_commitment(validator, job, accept, pov, salt)`.
    /// On a sampled job, from a committee member, `pov` is the tag (`state::pov_tag`) of its
    /// proof of verification (`deai_proof::pov_digest` under `state::pov_key`); on a
    /// challenged or escalated job (a chain with a beacon), from any active validator, it is
    /// the proof itself.
    VerdictCommit {
        job: Hash256,
        commitment: Hash256,
    },
    /// Its opening: on a sampled job once every member of the committee has committed, on a
    /// challenged one once the reveals are open (`Job::reveals_open`).
    VerdictReveal {
        job: Hash256,
        accept: bool,
        pov: Hash256,
        /// The member's salt (`state::verdict_salt`).
        salt: Hash256,
    },
    /// A beacon player's partial BLS signature of a closed beacon round (`state::beacon`).
    BeaconShare {
        round: u64,
        #[serde(with = "hex_vec")]
        signature: Vec<u8>,
    },
    Vote {
        proposal: u64,
        yes: bool,
    },
    /// Registers a dataset under `state::dataset_id(sender, shards)`.
    RegisterDataset {
        license: String,
        shards: Vec<Shard>,
    },
    /// Registers (or re-prices) the sender's app `name` (`state::app_id(sender, name)`),
    /// asking `fee_bps` of each job it brings (at most `app_fee_cap_bps`). A new fee applies
    /// to jobs opened after it.
    RegisterApp {
        name: String,
        fee_bps: u64,
    },
    /// Lets `gateway` open jobs for the sender, escrowing at most `limit` in all until
    /// height `expires`; a limit of 0 revokes it.
    Authorize {
        #[serde(with = "hex_addr")]
        gateway: Address,
        limit: u64,
        expires: u64,
    },
    /// Delegates `amount` of the sender's balance to `validator`'s pool: it weighs in the
    /// validator's verdicts and votes, earns its share of the validator's rewards (less the
    /// commission) and is slashed with it (`state::delegation`).
    Delegate {
        #[serde(with = "hex_addr")]
        validator: Address,
        amount: u64,
    },
    /// Takes `amount` (0: all) of the sender's delegation to `validator` out of its pool:
    /// into unbonding, or straight into `to`'s pool (a redelegation).
    Undelegate {
        #[serde(with = "hex_addr")]
        validator: Address,
        amount: u64,
        #[serde(default, with = "hex_addr_opt")]
        to: Option<Address>,
    },
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    pub chain: Hash256,
    #[serde(with = "hex_addr")]
    pub from: Address,
    pub nonce: u64,
    pub fee: u64,
    pub kind: TxKind,
}

/// A transaction with its signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub tx: Tx,
    #[serde(with = "hex_sig")]
    pub sig: [u8; 64],
}

fn put_hash(w: &mut Writer, h: &Hash256) {
    w.raw(&h.0);
}

fn get_hash(r: &mut Reader, what: &'static str) -> Result<Hash256, DecodeError> {
    Ok(Hash256(r.arr(what)?))
}

/// An optional 32-byte value: a flag byte (0 or 1), then the value if present.
fn put_opt(w: &mut Writer, v: Option<&[u8; 32]>) {
    match v {
        None => w.u8(0),
        Some(a) => w.u8(1).raw(a),
    };
}

fn get_opt(r: &mut Reader, what: &'static str) -> Result<Option<[u8; 32]>, DecodeError> {
    match r.u8(what)? {
        0 => Ok(None),
        1 => Ok(Some(r.arr(what)?)),
        t => Err(DecodeError::UnknownTag { what, tag: t }),
    }
}

impl ParamChange {
    fn encode(&self, w: &mut Writer) {
        match self {
            ParamChange::Set { param, value } => {
                w.u8(0).u8(param.code()).u64(*value);
            }
            ParamChange::AllowModel { model } => {
                w.u8(1);
                put_hash(w, model);
            }
            ParamChange::DisallowModel { model } => {
                w.u8(2);
                put_hash(w, model);
            }
            ParamChange::AllowProfile { profile } => {
                w.u8(3).str(profile);
            }
            ParamChange::DisallowProfile { profile } => {
                w.u8(4).str(profile);
            }
            ParamChange::SetRoyalty {
                model,
                beneficiaries,
            } => {
                w.u8(5);
                put_hash(w, model);
                w.u32(beneficiaries.len() as u32);
                for b in beneficiaries {
                    w.raw(&b.to).u64(b.weight);
                }
            }
            ParamChange::AllowTrainedModel { model, training } => {
                w.u8(6);
                put_hash(w, model);
                put_hash(w, training);
            }
            ParamChange::Grant { to, amount } => {
                w.u8(7).raw(to).u64(*amount);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8("param change")? {
            0 => {
                let c = r.u8("param")?;
                let param = Param::from_code(c).ok_or(DecodeError::UnknownTag {
                    what: "param",
                    tag: c,
                })?;
                ParamChange::Set {
                    param,
                    value: r.u64("param value")?,
                }
            }
            1 => ParamChange::AllowModel {
                model: get_hash(r, "model")?,
            },
            2 => ParamChange::DisallowModel {
                model: get_hash(r, "model")?,
            },
            3 => ParamChange::AllowProfile {
                profile: r.str("profile", MAX_STR)?,
            },
            4 => ParamChange::DisallowProfile {
                profile: r.str("profile", MAX_STR)?,
            },
            5 => {
                let model = get_hash(r, "model")?;
                let n = r.count("beneficiaries", MAX_BENEFICIARIES)?;
                let beneficiaries = (0..n)
                    .map(|_| {
                        Ok(Beneficiary {
                            to: r.arr("beneficiary")?,
                            weight: r.u64("weight")?,
                        })
                    })
                    .collect::<Result<Vec<_>, DecodeError>>()?;
                ParamChange::SetRoyalty {
                    model,
                    beneficiaries,
                }
            }
            6 => ParamChange::AllowTrainedModel {
                model: get_hash(r, "model")?,
                training: get_hash(r, "training")?,
            },
            7 => ParamChange::Grant {
                to: r.arr("grantee")?,
                amount: r.u64("amount")?,
            },
            t => {
                return Err(DecodeError::UnknownTag {
                    what: "param change",
                    tag: t,
                })
            }
        })
    }
}

impl TxKind {
    fn encode(&self, w: &mut Writer) {
        match self {
            TxKind::Transfer { to, amount } => {
                w.u8(0).raw(to).u64(*amount);
            }
            TxKind::Stake { amount } => {
                w.u8(1).u64(*amount);
            }
            TxKind::Unstake { amount } => {
                w.u8(2).u64(*amount);
            }
            TxKind::RegisterWorker {
                models,
                profile,
                hardware,
                price_per_1k,
                endpoint,
            } => {
                w.u8(3).u32(models.len() as u32);
                for m in models {
                    put_hash(w, m);
                }
                w.str(profile)
                    .str(hardware)
                    .u64(*price_per_1k)
                    .str(endpoint);
            }
            TxKind::RegisterValidator { endpoint, p2p } => {
                w.u8(4).str(endpoint).str(p2p);
            }
            TxKind::OpenJob {
                job,
                model,
                max_tokens,
                escrow,
                worker,
                app,
                client,
            } => {
                w.u8(5);
                put_hash(w, job);
                put_hash(w, model);
                w.u32(*max_tokens).u64(*escrow);
                put_opt(w, worker.as_ref());
                put_opt(w, app.as_ref().map(|a| &a.0));
                put_opt(w, client.as_ref());
            }
            TxKind::PostReceipt {
                job,
                receipt,
                tokens,
                pointer,
            } => {
                w.u8(6);
                put_hash(w, job);
                put_hash(w, receipt);
                w.u32(*tokens).str(pointer);
            }
            TxKind::BeaconShare { round, signature } => {
                w.u8(15).u64(*round).bytes(signature);
            }
            TxKind::VerdictCommit { job, commitment } => {
                w.u8(16);
                put_hash(w, job);
                put_hash(w, commitment);
            }
            TxKind::VerdictReveal {
                job,
                accept,
                pov,
                salt,
            } => {
                w.u8(17);
                put_hash(w, job);
                w.bool(*accept);
                put_hash(w, pov);
                put_hash(w, salt);
            }
            TxKind::Challenge { job } => {
                w.u8(7);
                put_hash(w, job);
            }
            TxKind::Verdict { job, accept } => {
                w.u8(8);
                put_hash(w, job);
                w.bool(*accept);
            }
            TxKind::Propose { change } => {
                w.u8(9);
                change.encode(w);
            }
            TxKind::Vote { proposal, yes } => {
                w.u8(10).u64(*proposal).bool(*yes);
            }
            TxKind::RegisterDataset { license, shards } => {
                w.u8(18).str(license).u32(shards.len() as u32);
                for sh in shards {
                    put_hash(w, &sh.hash);
                    w.u64(sh.tokens);
                }
            }
            TxKind::RegisterApp { name, fee_bps } => {
                w.u8(19).str(name).u64(*fee_bps);
            }
            TxKind::Authorize {
                gateway,
                limit,
                expires,
            } => {
                w.u8(20).raw(gateway).u64(*limit).u64(*expires);
            }
            TxKind::Delegate { validator, amount } => {
                w.u8(21).raw(validator).u64(*amount);
            }
            TxKind::Undelegate {
                validator,
                amount,
                to,
            } => {
                w.u8(22).raw(validator).u64(*amount);
                put_opt(w, to.as_ref());
            }
            TxKind::ReportEquivocation {
                offender,
                view,
                evidence,
            } => {
                w.u8(11).raw(offender).u64(*view).bytes(evidence);
            }
            TxKind::OpenTraining {
                job,
                checkpoint,
                commitment,
                rounds,
                workers,
                reward_per_round,
                coordinator,
                data,
            } => {
                w.u8(12);
                put_hash(w, job);
                put_hash(w, checkpoint);
                put_hash(w, commitment);
                w.u32(*rounds)
                    .u32(*workers)
                    .u64(*reward_per_round)
                    .raw(coordinator);
                w.u32(data.len() as u32);
                for d in data {
                    put_hash(w, &d.dataset);
                    put_hash(w, &d.shard);
                }
            }
            TxKind::TrainRound {
                job,
                round,
                checkpoint,
                report,
                accepted,
                rejected,
                url,
            } => {
                w.u8(13);
                put_hash(w, job);
                w.u32(*round);
                put_hash(w, checkpoint);
                put_hash(w, report);
                for list in [accepted, rejected] {
                    w.u32(list.len() as u32);
                    for a in list {
                        w.raw(a);
                    }
                }
                w.str(url);
            }
            TxKind::TrainVerdict {
                job,
                round,
                report,
                accept,
            } => {
                w.u8(14);
                put_hash(w, job);
                w.u32(*round);
                put_hash(w, report);
                w.bool(*accept);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8("tx kind")? {
            0 => TxKind::Transfer {
                to: r.arr("to")?,
                amount: r.u64("amount")?,
            },
            1 => TxKind::Stake {
                amount: r.u64("amount")?,
            },
            2 => TxKind::Unstake {
                amount: r.u64("amount")?,
            },
            3 => {
                let n = r.count("models", MAX_MODELS)?;
                let models = (0..n)
                    .map(|_| get_hash(r, "model"))
                    .collect::<Result<Vec<_>, _>>()?;
                TxKind::RegisterWorker {
                    models,
                    profile: r.str("profile", MAX_STR)?,
                    hardware: r.str("hardware", MAX_STR)?,
                    price_per_1k: r.u64("price")?,
                    endpoint: r.str("endpoint", MAX_STR)?,
                }
            }
            4 => TxKind::RegisterValidator {
                endpoint: r.str("endpoint", MAX_STR)?,
                p2p: r.str("p2p address", MAX_STR)?,
            },
            5 => TxKind::OpenJob {
                job: get_hash(r, "job")?,
                model: get_hash(r, "model")?,
                max_tokens: r.u32("max tokens")?,
                escrow: r.u64("escrow")?,
                worker: get_opt(r, "worker")?,
                app: get_opt(r, "app")?.map(Hash256),
                client: get_opt(r, "client")?,
            },
            6 => TxKind::PostReceipt {
                job: get_hash(r, "job")?,
                receipt: get_hash(r, "receipt")?,
                tokens: r.u32("tokens")?,
                pointer: r.str("pointer", MAX_STR)?,
            },
            7 => TxKind::Challenge {
                job: get_hash(r, "job")?,
            },
            8 => TxKind::Verdict {
                job: get_hash(r, "job")?,
                accept: r.bool("accept")?,
            },
            9 => TxKind::Propose {
                change: ParamChange::decode(r)?,
            },
            10 => TxKind::Vote {
                proposal: r.u64("proposal")?,
                yes: r.bool("yes")?,
            },
            11 => TxKind::ReportEquivocation {
                offender: r.arr("offender")?,
                view: r.u64("view")?,
                evidence: r.bytes("evidence", MAX_EVIDENCE)?.to_vec(),
            },
            12 => TxKind::OpenTraining {
                job: get_hash(r, "job")?,
                checkpoint: get_hash(r, "checkpoint")?,
                commitment: get_hash(r, "commitment")?,
                rounds: r.u32("rounds")?,
                workers: r.u32("workers")?,
                reward_per_round: r.u64("reward per round")?,
                coordinator: r.arr("coordinator")?,
                data: {
                    let n = r.count("training shards", MAX_TRAIN_SHARDS)?;
                    (0..n)
                        .map(|_| {
                            Ok(DataShard {
                                dataset: get_hash(r, "dataset")?,
                                shard: get_hash(r, "shard")?,
                            })
                        })
                        .collect::<Result<Vec<_>, DecodeError>>()?
                },
            },
            13 => {
                let job = get_hash(r, "job")?;
                let round = r.u32("round")?;
                let checkpoint = get_hash(r, "checkpoint")?;
                let report = get_hash(r, "report")?;
                let mut lists = [Vec::new(), Vec::new()];
                for (list, what) in lists.iter_mut().zip(["accepted", "rejected"]) {
                    let n = r.count(what, MAX_TRAIN_WORKERS)?;
                    for _ in 0..n {
                        list.push(r.arr(what)?);
                    }
                }
                let [accepted, rejected] = lists;
                TxKind::TrainRound {
                    job,
                    round,
                    checkpoint,
                    report,
                    accepted,
                    rejected,
                    url: r.str("url", MAX_STR)?,
                }
            }
            14 => TxKind::TrainVerdict {
                job: get_hash(r, "job")?,
                round: r.u32("round")?,
                report: get_hash(r, "report")?,
                accept: r.bool("accept")?,
            },
            16 => TxKind::VerdictCommit {
                job: get_hash(r, "job")?,
                commitment: get_hash(r, "commitment")?,
            },
            17 => TxKind::VerdictReveal {
                job: get_hash(r, "job")?,
                accept: r.bool("accept")?,
                pov: get_hash(r, "pov")?,
                salt: get_hash(r, "salt")?,
            },
            15 => TxKind::BeaconShare {
                round: r.u64("round")?,
                signature: r.bytes("signature", BEACON_SIGNATURE_BYTES)?.to_vec(),
            },
            18 => {
                let license = r.str("license", MAX_STR)?;
                let n = r.count("shards", MAX_SHARDS)?;
                let shards = (0..n)
                    .map(|_| {
                        Ok(Shard {
                            hash: get_hash(r, "shard")?,
                            tokens: r.u64("shard tokens")?,
                        })
                    })
                    .collect::<Result<Vec<_>, DecodeError>>()?;
                TxKind::RegisterDataset { license, shards }
            }
            19 => TxKind::RegisterApp {
                name: r.str("app name", MAX_STR)?,
                fee_bps: r.u64("app fee")?,
            },
            20 => TxKind::Authorize {
                gateway: r.arr("gateway")?,
                limit: r.u64("limit")?,
                expires: r.u64("expires")?,
            },
            21 => TxKind::Delegate {
                validator: r.arr("validator")?,
                amount: r.u64("amount")?,
            },
            22 => TxKind::Undelegate {
                validator: r.arr("validator")?,
                amount: r.u64("amount")?,
                to: get_opt(r, "redelegate to")?,
            },
            t => {
                return Err(DecodeError::UnknownTag {
                    what: "tx kind",
                    tag: t,
                })
            }
        })
    }

    /// A short name for logs and tables.
    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Transfer { .. } => "transfer",
            TxKind::Stake { .. } => "stake",
            TxKind::Unstake { .. } => "unstake",
            TxKind::RegisterWorker { .. } => "register_worker",
            TxKind::RegisterValidator { .. } => "register_validator",
            TxKind::OpenJob { .. } => "open_job",
            TxKind::PostReceipt { .. } => "post_receipt",
            TxKind::Challenge { .. } => "challenge",
            TxKind::Verdict { .. } => "verdict",
            TxKind::Propose { .. } => "propose",
            TxKind::Vote { .. } => "vote",
            TxKind::ReportEquivocation { .. } => "report_equivocation",
            TxKind::OpenTraining { .. } => "open_training",
            TxKind::TrainRound { .. } => "train_round",
            TxKind::TrainVerdict { .. } => "train_verdict",
            TxKind::BeaconShare { .. } => "beacon_share",
            TxKind::VerdictCommit { .. } => "verdict_commit",
            TxKind::VerdictReveal { .. } => "verdict_reveal",
            TxKind::RegisterDataset { .. } => "register_dataset",
            TxKind::RegisterApp { .. } => "register_app",
            TxKind::Authorize { .. } => "authorize",
            TxKind::Delegate { .. } => "delegate",
            TxKind::Undelegate { .. } => "undelegate",
        }
    }
}

impl Tx {
    pub fn encode(&self, w: &mut Writer) {
        put_hash(w, &self.chain);
        w.raw(&self.from).u64(self.nonce).u64(self.fee);
        self.kind.encode(w);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Tx {
            chain: get_hash(r, "chain id")?,
            from: r.arr("from")?,
            nonce: r.u64("nonce")?,
            fee: r.u64("fee")?,
            kind: TxKind::decode(r)?,
        })
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(SIGN_DOMAIN);
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Signs with `key`; `from` is set to the key's public half.
    pub fn sign(mut self, key: &SigningKey) -> SignedTx {
        self.from = key.verifying_key().to_bytes();
        let sig = key.sign(&self.signing_bytes()).to_bytes();
        SignedTx { tx: self, sig }
    }
}

impl SignedTx {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.tx.encode(&mut w);
        w.raw(&self.sig);
        w.into_bytes()
    }

    /// Decodes the canonical form, refusing oversized, truncated, trailing or unknown input.
    /// Does not check the signature (see [`SignedTx::verify_signature`]).
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() > MAX_TX_BYTES {
            return Err(DecodeError::Length {
                what: "transaction",
                len: b.len(),
                min: 0,
                max: MAX_TX_BYTES,
            });
        }
        let mut r = Reader::new(b);
        let tx = Tx::decode(&mut r)?;
        let sig = r.arr("signature")?;
        r.finish()?;
        Ok(SignedTx { tx, sig })
    }

    /// The transaction id: SHA-256 of the canonical bytes.
    pub fn id(&self) -> Hash256 {
        Hash256::digest(&self.to_bytes())
    }

    pub fn verify_signature(&self) -> Result<(), &'static str> {
        let key = VerifyingKey::from_bytes(&self.tx.from)
            .map_err(|_| "sender is not a valid ed25519 key")?;
        key.verify_strict(&self.tx.signing_bytes(), &Signature::from_bytes(&self.sig))
            .map_err(|_| "bad signature")
    }
}

/// Serde for 32-byte addresses as 64 hex characters (shared by ledger records and the
/// chain's files).
pub mod hex_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// [`hex_addr`] for `Option<Address>`.
pub mod hex_addr_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.serialize_some(&hex::encode(a)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(s.trim(), &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        })
        .transpose()
    }
}

/// [`hex_addr`] for a list of addresses.
pub mod hex_addrs {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

pub mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.trim()).map_err(serde::de::Error::custom)
    }
}

mod hex_sig {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(s.trim(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
