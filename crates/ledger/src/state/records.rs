//! The records the state tree commits to (accounts, workers, validators, jobs, proposals,
//! the chain-wide [`Meta`]), the tree [`Key`] each lives under, and their canonical
//! encoding.

use super::Params;
use crate::tx::{Address, ParamChange, Shard};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// Funds released at a later height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbond {
    pub amount: u64,
    pub release: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
    pub stake: u64,
    pub unbonding: Vec<Unbond>,
    /// The height of the last stake increase: stake added after a proposal opened does not
    /// vote on it.
    pub bonded_at: u64,
}

impl Account {
    /// In u128: a snapshot from elsewhere could hold entries whose sum overflows u64.
    pub(super) fn unbonding_total(&self) -> u128 {
        self.unbonding.iter().map(|u| u.amount as u128).sum()
    }

    /// What a slash can reach: stake plus unbonding entries (capped at u64).
    pub(super) fn holdings(&self) -> u64 {
        (self.stake as u128 + self.unbonding_total()).min(u64::MAX as u128) as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub models: Vec<Hash256>,
    pub profile: String,
    pub hardware: String,
    pub price_per_1k: u64,
    pub endpoint: String,
    /// False after a slash until the worker registers again with enough stake.
    pub active: bool,
    pub registered_at: u64,
    pub jobs_done: u64,
    pub jobs_rejected: u64,
    pub tokens_served: u64,
    pub earned: u64,
    pub slashed: u64,
    /// Stake locked as collateral for its receipts that have not settled yet; it cannot be
    /// unstaked, and a rejected receipt loses at least its own share of it.
    pub locked: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    pub endpoint: String,
    /// Its consensus p2p address (`host:port`), or empty.
    pub p2p: String,
    pub registered_at: u64,
    pub verdicts: u64,
    pub earned: u64,
    /// Total taken from its stake for equivocation.
    pub slashed: u64,
    /// Views it was slashed for (sorted; at most [`MAX_SLASHED_VIEWS`], the newest kept).
    pub slashed_views: Vec<u64>,
    /// Sampled jobs whose committee it was drawn for.
    #[serde(default)]
    pub assigned: u64,
    /// Of those, the ones whose deadline passed without its verdict.
    #[serde(default)]
    pub missed: u64,
    /// Verdicts against the outcome the job settled with (each slashed).
    #[serde(default)]
    pub wrong: u64,
    /// Verdicts it gave as a committee member, and the blocks they took in all (from the
    /// job's sampling to the verdict): its mean verification latency is their ratio.
    #[serde(default)]
    pub committee_votes: u64,
    #[serde(default)]
    pub latency_blocks: u64,
    /// Its delegators' pool: what their stake is worth now (delegated, plus rewards, less
    /// slashes), and the shares they hold of it.
    #[serde(default)]
    pub pool: u64,
    #[serde(default)]
    pub shares: u64,
    /// The part of the pool that weighs in verdicts, committees and the consensus set: the
    /// pool as of the last epoch's end (less anything that left since), so that stake
    /// delegated now weighs only from the next epoch.
    #[serde(default)]
    pub pool_weight: u64,
    /// Undelegated stake on its way out (still slashed with the validator until released;
    /// at most [`MAX_LEAVING`] entries).
    #[serde(default)]
    pub leaving: Vec<Leaving>,
}

/// Most undelegations one validator holds on their way out.
pub const MAX_LEAVING: usize = 256;

/// Undelegated stake released to its delegator (or into `to`'s pool) at `release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaving {
    #[serde(with = "crate::tx::hex_addr")]
    pub delegator: Address,
    pub amount: u64,
    pub release: u64,
    #[serde(default, with = "crate::tx::hex_addr_opt")]
    pub to: Option<Address>,
}

/// A delegator's shares of one validator's pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    pub shares: u64,
    /// The height it last grew: it weighs only on proposals opened after.
    pub since: u64,
}

/// How many slashed views a validator record keeps (older views can no longer be reported).
pub const MAX_SLASHED_VIEWS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Escrowed, waiting for a receipt.
    Open,
    /// Receipt posted; inside the challenge window (and, on a chain with a beacon, waiting
    /// for its round's value to say whether it is re-executed).
    Receipted,
    /// The beacon sampled it: its committee re-executes it; disagreement or a missed
    /// deadline escalates it to every validator (`Challenged`).
    Sampled,
    /// Challenged, or escalated from its committee; waiting for a quorum of all validators.
    Challenged,
    /// Settled: worker paid.
    Accepted,
    /// Validators rejected the receipt: client refunded, worker slashed.
    Rejected,
    /// No receipt before the timeout: client refunded.
    Expired,
    /// Challenged but no quorum before the verdict deadline: client and challenger refunded.
    Unresolved,
}

impl JobStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Accepted | JobStatus::Rejected | JobStatus::Expired | JobStatus::Unresolved
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    #[serde(with = "crate::tx::hex_addr")]
    pub worker: Address,
    pub digest: Hash256,
    pub tokens: u32,
    pub pointer: String,
    pub posted_at: u64,
    /// What the job costs at the worker's price ([`job_cost`](super::job_cost)), capped by
    /// the escrow.
    pub cost: u64,
    /// The worker's stake locked for this receipt until it settles
    /// ([`Params::collateral_bps`](super::Params::collateral_bps) of `cost`).
    pub collateral: u64,
    /// The beacon round whose value samples it (`None` on a chain without a beacon).
    #[serde(default)]
    pub beacon_round: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    #[serde(with = "crate::tx::hex_addr")]
    pub challenger: Address,
    pub bond: u64,
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    #[serde(with = "crate::tx::hex_addr")]
    pub voter: Address,
    pub yes: bool,
}

/// A governance vote and the stake it weighs, fixed when it is cast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeVote {
    #[serde(with = "crate::tx::hex_addr")]
    pub voter: Address,
    pub yes: bool,
    /// Its own stake (bonded before the proposal opened); its delegations' weight, and its
    /// validators' pools, are counted when the vote ends (`governance::tally`).
    pub stake: u64,
}

/// Where a finished job's money went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub height: u64,
    pub worker_paid: u64,
    pub validator_fee: u64,
    pub treasury_cut: u64,
    pub client_refund: u64,
    pub slashed: u64,
    pub burned: u64,
    pub challenger_paid: u64,
    /// Paid to the model's royalty beneficiaries (out of the cost).
    #[serde(default)]
    pub royalty: u64,
    /// Paid to the app's owner and to the gateway, on top of the cost.
    #[serde(default)]
    pub app_paid: u64,
    #[serde(default)]
    pub gateway_paid: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    #[serde(with = "crate::tx::hex_addr")]
    pub client: Address,
    pub model: Hash256,
    pub max_tokens: u32,
    pub escrow: u64,
    #[serde(with = "crate::tx::hex_addr_opt")]
    pub worker: Option<Address>,
    pub opened_at: u64,
    /// The height at whose end the current phase times out.
    pub deadline: u64,
    pub status: JobStatus,
    pub receipt: Option<ReceiptRecord>,
    pub challenge: Option<ChallengeRecord>,
    /// Validator verdicts, `yes` = accept; sorted by voter.
    pub verdicts: Vec<Vote>,
    pub settlement: Option<Settlement>,
    /// The validators the beacon drew to re-execute it (sorted), if it was sampled.
    #[serde(default, with = "crate::tx::hex_addrs")]
    pub committee: Vec<Address>,
    /// Its committee disagreed or missed the deadline: every validator judges it now.
    #[serde(default)]
    pub escalated: bool,
    /// The height whose block sampled it.
    #[serde(default)]
    pub sampled_at: Option<u64>,
    /// Its committee members' sealed verdicts (sorted by member).
    #[serde(default)]
    pub commits: Vec<Commit>,
    /// The proofs of verification revealed with the verdicts, as tags (`state::pov_tag`):
    /// committee members commit to and reveal the tag; a validator judging the job once
    /// it is challenged or escalated reveals the proof itself, and the chain tags it.
    #[serde(default)]
    pub povs: Vec<Pov>,
    /// Once it is challenged or escalated on a chain with a beacon: the sealed verdicts of
    /// the validators judging it outside its committee (sorted by voter).
    #[serde(default)]
    pub quorum_commits: Vec<Commit>,
    /// Whether those may be opened: every active validator has committed (or voted as a
    /// committee member), or the commit phase ran out. No commitment is taken after.
    #[serde(default)]
    pub reveals_open: bool,
    /// The app that brought it and the fee it asked when the job opened.
    #[serde(default)]
    pub app: Option<Hash256>,
    #[serde(default)]
    pub app_bps: u64,
    /// The gateway that opened it for the client, and its fee when the job opened.
    #[serde(default, with = "crate::tx::hex_addr_opt")]
    pub gateway: Option<Address>,
    #[serde(default)]
    pub gateway_bps: u64,
    /// The model's royalty share of the cost when the job opened (0 if it had none).
    #[serde(default)]
    pub royalty_bps: u64,
}

/// A registered dataset (`state::dataset_id` of its owner and shards).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    #[serde(with = "crate::tx::hex_addr")]
    pub owner: Address,
    pub license: String,
    pub shards: Vec<Shard>,
    pub registered_at: u64,
    /// Royalties paid to its owner for models trained on it.
    pub earned: u64,
}

/// A registered app (`state::app_id` of its owner and name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    #[serde(with = "crate::tx::hex_addr")]
    pub owner: Address,
    pub name: String,
    /// Its fee on jobs opened from now on, in basis points of their cost.
    pub fee_bps: u64,
    pub registered_at: u64,
    /// Settled jobs it brought, and what its owner earned from them.
    pub jobs: u64,
    pub earned: u64,
}

/// What a client let a gateway escrow for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// Left to escrow.
    pub remaining: u64,
    /// The last height at which it may be used.
    pub expires: u64,
    /// Escrowed so far, and the gateway fees it earned on the client's settled jobs.
    pub spent: u64,
    pub earned: u64,
}

/// Who shares a model's royalty, and what each was paid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Royalty {
    /// The training job that produced the model, if it was allowed as its export.
    pub training: Option<Hash256>,
    /// Of each royalty, the data providers' share (basis points; the rest to `shares`
    /// of kind trainer or named).
    pub data_bps: u64,
    pub shares: Vec<RoyaltyShare>,
    /// Settled jobs that paid it, and the royalty paid in all.
    pub jobs: u64,
    pub paid: u64,
}

/// What a beneficiary is paid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoyaltyRole {
    /// Named by governance.
    Named,
    /// Accepted contributions to the training job.
    Trainer,
    /// The owner of a dataset the job trained on.
    Data(Hash256),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyShare {
    #[serde(with = "crate::tx::hex_addr")]
    pub to: Address,
    pub role: RoyaltyRole,
    pub weight: u64,
    pub paid: u64,
}

/// A committee member's sealed verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    #[serde(with = "crate::tx::hex_addr")]
    pub voter: Address,
    pub commitment: Hash256,
}

/// A committee member's revealed proof of verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pov {
    #[serde(with = "crate::tx::hex_addr")]
    pub voter: Address,
    pub pov: Hash256,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Voting,
    Passed,
    Rejected,
    Executed,
    /// Passed, but the change would have made the parameter set invalid in combination
    /// with parameters in force at execution time; nothing changed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    #[serde(with = "crate::tx::hex_addr")]
    pub proposer: Address,
    pub change: ParamChange,
    pub created: u64,
    /// Last height at which votes count.
    pub voting_end: u64,
    pub execute_at: Option<u64>,
    /// Sorted by voter.
    pub votes: Vec<StakeVote>,
    /// All stake when the proposal opened: the quorum's base.
    pub total_stake: u64,
    pub status: ProposalStatus,
    pub yes_stake: u64,
    pub no_stake: u64,
}

/// Chain-wide totals and parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub chain_id: Hash256,
    pub height: u64,
    pub supply: u64,
    pub burned: u64,
    pub treasury: u64,
    pub total_stake: u64,
    pub next_proposal: u64,
    /// All validators' pools (see [`Validator::pool`]).
    #[serde(default)]
    pub delegated: u64,
    pub params: Params,
    /// Blocks per consensus epoch, fixed at genesis: epoch `e` is heights
    /// `e * epoch_length ..= e * epoch_length + epoch_length - 1`.
    pub epoch_length: u64,
    /// The consensus validator set that finalizes the next block (sorted addresses). It is
    /// recomputed from stake only at the end of an epoch's last block, so every block of an
    /// epoch is finalized by one set, and the last block of epoch `e` names the set of `e+1`.
    pub validator_set: Vec<Address>,
    /// The randomness beacon's key, if the genesis named one (see `state::beacon`); without
    /// one every receipt is open to every validator's verdict and a quorum decides.
    #[serde(default)]
    pub beacon: Option<super::BeaconConfig>,
}

/// A key in the state tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Meta,
    Account(Address),
    Worker(Address),
    Validator(Address),
    Job(Hash256),
    Proposal(u64),
    Training(Hash256),
    Beacon(u64),
    Dataset(Hash256),
    App(Hash256),
    /// A client's allowance to a gateway: (client, gateway).
    Allowance(Address, Address),
    Royalty(Hash256),
    /// A delegator's delegation to a validator: (delegator, validator).
    Delegation(Address, Address),
}

impl Key {
    /// The 256-bit tree key: SHA-256 over a namespace and the id.
    pub fn hash(&self) -> [u8; 32] {
        let (ns, id): (&str, Vec<u8>) = match self {
            Key::Meta => ("meta", vec![]),
            Key::Account(a) => ("account", a.to_vec()),
            Key::Worker(a) => ("worker", a.to_vec()),
            Key::Validator(a) => ("validator", a.to_vec()),
            Key::Job(j) => ("job", j.0.to_vec()),
            Key::Proposal(p) => ("proposal", p.to_le_bytes().to_vec()),
            Key::Training(t) => ("training", t.0.to_vec()),
            Key::Beacon(r) => ("beacon", r.to_le_bytes().to_vec()),
            Key::Dataset(d) => ("dataset", d.0.to_vec()),
            Key::App(a) => ("app", a.0.to_vec()),
            Key::Allowance(c, g) => ("allowance", [&c[..], &g[..]].concat()),
            Key::Royalty(m) => ("royalty", m.0.to_vec()),
            Key::Delegation(d, v) => ("delegation", [&d[..], &v[..]].concat()),
        };
        Hash256::digest_parts("deai-state-key", &[ns.as_bytes(), &id]).0
    }
}

/// Decodes a record's canonical bytes (as
/// [`State::encode_record`](super::State::encode_record) writes them and state proofs carry
/// them), e.g. a [`Job`] proven by a light client.
pub fn decode_record<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("record does not decode: {e}"))
}

/// The leaf value committed for an encoded record.
pub fn value_hash(encoded: &[u8]) -> [u8; 32] {
    Hash256::digest_parts("deai-state-value", &[encoded]).0
}
