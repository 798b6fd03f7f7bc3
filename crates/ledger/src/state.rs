//! The ledger state and its transition function.
//!
//! [`State::apply_block`] is the whole state transition: pure, deterministic, integer-only.
//! A block is valid when every transaction is well formed, signed by its sender, for this
//! chain, with the sender's next nonce and at least the minimum fee ([`State::validate_block`]).
//! A valid block always applies: a transaction whose action fails (overdraft, unknown job,
//! wrong sender...) still bumps the nonce and pays its fee, and its outcome records why.
//!
//! Money only moves between accounts, stake, unbonding entries, job escrow, challenge bonds
//! and the treasury, or is burned: `sum of all of them + burned == supply` after every block
//! ([`State::audit`]).

use crate::smt::{self, Tree};
use crate::tx::{Address, Param, ParamChange, SignedTx, TxKind, MAX_TX_BYTES};
use deai_types::Hash256;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Basis points in one whole.
pub const BPS: u64 = 10_000;

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 10_000;

/// Governance parameters in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub price_floor: u64,
    pub sample_rate_bps: u64,
    pub slash_bps: u64,
    pub challenge_window: u64,
    pub verdict_window: u64,
    pub job_timeout: u64,
    pub unbonding_period: u64,
    pub treasury_bps: u64,
    pub validator_fee_bps: u64,
    pub min_worker_stake: u64,
    pub min_validator_stake: u64,
    pub challenge_bond: u64,
    pub min_fee: u64,
    pub quorum_bps: u64,
    pub threshold_bps: u64,
    pub voting_period: u64,
    pub execution_delay: u64,
    /// Models jobs may name, sorted.
    pub allowed_models: Vec<Hash256>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            price_floor: 1,
            sample_rate_bps: 1_000,
            slash_bps: 5_000,
            challenge_window: 20,
            verdict_window: 40,
            job_timeout: 60,
            unbonding_period: 100,
            treasury_bps: 500,
            validator_fee_bps: 1_000,
            min_worker_stake: 1_000,
            min_validator_stake: 10_000,
            challenge_bond: 100,
            min_fee: 1,
            quorum_bps: 3_334,
            threshold_bps: 5_001,
            voting_period: 20,
            execution_delay: 5,
            allowed_models: Vec::new(),
        }
    }
}

impl Params {
    pub fn get(&self, p: Param) -> u64 {
        match p {
            Param::PriceFloor => self.price_floor,
            Param::SampleRateBps => self.sample_rate_bps,
            Param::SlashBps => self.slash_bps,
            Param::ChallengeWindow => self.challenge_window,
            Param::VerdictWindow => self.verdict_window,
            Param::JobTimeout => self.job_timeout,
            Param::UnbondingPeriod => self.unbonding_period,
            Param::TreasuryBps => self.treasury_bps,
            Param::ValidatorFeeBps => self.validator_fee_bps,
            Param::MinWorkerStake => self.min_worker_stake,
            Param::MinValidatorStake => self.min_validator_stake,
            Param::ChallengeBond => self.challenge_bond,
            Param::MinFee => self.min_fee,
            Param::QuorumBps => self.quorum_bps,
            Param::ThresholdBps => self.threshold_bps,
            Param::VotingPeriod => self.voting_period,
            Param::ExecutionDelay => self.execution_delay,
        }
    }

    fn slot(&mut self, p: Param) -> &mut u64 {
        match p {
            Param::PriceFloor => &mut self.price_floor,
            Param::SampleRateBps => &mut self.sample_rate_bps,
            Param::SlashBps => &mut self.slash_bps,
            Param::ChallengeWindow => &mut self.challenge_window,
            Param::VerdictWindow => &mut self.verdict_window,
            Param::JobTimeout => &mut self.job_timeout,
            Param::UnbondingPeriod => &mut self.unbonding_period,
            Param::TreasuryBps => &mut self.treasury_bps,
            Param::ValidatorFeeBps => &mut self.validator_fee_bps,
            Param::MinWorkerStake => &mut self.min_worker_stake,
            Param::MinValidatorStake => &mut self.min_validator_stake,
            Param::ChallengeBond => &mut self.challenge_bond,
            Param::MinFee => &mut self.min_fee,
            Param::QuorumBps => &mut self.quorum_bps,
            Param::ThresholdBps => &mut self.threshold_bps,
            Param::VotingPeriod => &mut self.voting_period,
            Param::ExecutionDelay => &mut self.execution_delay,
        }
    }

    /// Whether `p = v` is a sane setting; governance refuses proposals that are not.
    pub fn check(p: Param, v: u64) -> Result<(), String> {
        let bps = matches!(
            p,
            Param::SampleRateBps
                | Param::SlashBps
                | Param::TreasuryBps
                | Param::ValidatorFeeBps
                | Param::QuorumBps
                | Param::ThresholdBps
        );
        let blocks = matches!(
            p,
            Param::ChallengeWindow
                | Param::VerdictWindow
                | Param::JobTimeout
                | Param::UnbondingPeriod
                | Param::VotingPeriod
                | Param::ExecutionDelay
        );
        if bps && v > BPS {
            return Err(format!("{} must be at most {BPS} basis points", p.name()));
        }
        if blocks && !(1..=1_000_000).contains(&v) {
            return Err(format!("{} must be 1..=1000000 blocks", p.name()));
        }
        if matches!(p, Param::ThresholdBps | Param::QuorumBps) && v == 0 {
            return Err(format!("{} must be positive", p.name()));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        for p in Param::ALL {
            Self::check(p, self.get(p))?;
        }
        if self.treasury_bps + self.validator_fee_bps > BPS {
            return Err("treasury_bps + validator_fee_bps exceed 10000".into());
        }
        Ok(())
    }

    pub fn model_allowed(&self, m: &Hash256) -> bool {
        self.allowed_models.binary_search(m).is_ok()
    }
}

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
}

impl Account {
    /// In u128: a snapshot from elsewhere could hold entries whose sum overflows u64.
    fn unbonding_total(&self) -> u128 {
        self.unbonding.iter().map(|u| u.amount as u128).sum()
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// How many slashed views a validator record keeps (older views can no longer be reported).
pub const MAX_SLASHED_VIEWS: usize = 64;

/// The most validators in one epoch's consensus set (the highest stakes win; ties go to the
/// lower address).
pub const MAX_CONSENSUS_VALIDATORS: usize = 100;

/// Blocks per epoch when a genesis names none.
pub const DEFAULT_EPOCH_LENGTH: u64 = 1_000;

fn default_epoch_length() -> u64 {
    DEFAULT_EPOCH_LENGTH
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Escrowed, waiting for a receipt.
    Open,
    /// Receipt posted; inside the challenge window.
    Receipted,
    /// Challenged; waiting for a validator quorum.
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
    /// What the job costs at the worker's price, capped by the escrow.
    pub cost: u64,
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
    pub votes: Vec<Vote>,
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
    pub params: Params,
    /// Blocks per consensus epoch, fixed at genesis: epoch `e` is heights
    /// `e * epoch_length ..= e * epoch_length + epoch_length - 1`.
    pub epoch_length: u64,
    /// The consensus validator set that finalizes the next block (sorted addresses). It is
    /// recomputed from stake only at the end of an epoch's last block, so every block of an
    /// epoch is finalized by one set, and the last block of epoch `e` names the set of `e+1`.
    pub validator_set: Vec<Address>,
}

mod training;
pub use training::{PendingRound, TrainingJob, TrainingStatus, MAX_TRAIN_ROUNDS};

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
        };
        Hash256::digest_parts("deai-state-key", &[ns.as_bytes(), &id]).0
    }
}

/// Decodes a record's canonical bytes (as [`State::encode_record`] writes them and state
/// proofs carry them), e.g. a [`Job`] proven by a light client.
pub fn decode_record<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("record does not decode: {e}"))
}

/// The leaf value committed for an encoded record.
pub fn value_hash(encoded: &[u8]) -> [u8; 32] {
    Hash256::digest_parts("deai-state-value", &[encoded]).0
}

/// A genesis account or validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    #[serde(with = "crate::tx::hex_addr")]
    pub address: Address,
    pub balance: u64,
    #[serde(default)]
    pub stake: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisValidator {
    #[serde(with = "crate::tx::hex_addr")]
    pub address: Address,
    pub endpoint: String,
    /// Its consensus p2p address (`host:port`), or empty.
    #[serde(default)]
    pub p2p: String,
}

/// Everything the first state is made of. Its canonical hash is the chain id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_name: String,
    pub accounts: Vec<GenesisAccount>,
    pub validators: Vec<GenesisValidator>,
    pub params: Params,
    /// Blocks per consensus epoch (at least 2); the validator set can change only between
    /// epochs.
    #[serde(default = "default_epoch_length")]
    pub epoch_length: u64,
}

impl Genesis {
    pub fn chain_id(&self) -> Hash256 {
        let bytes = postcard::to_allocvec(self).expect("genesis encodes");
        Hash256::digest_parts("deai-genesis", &[&bytes])
    }
}

/// Why a block cannot be applied. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block height {got} does not follow {have}")]
    Height { have: u64, got: u64 },
    #[error("{0} transactions exceed the block limit {MAX_BLOCK_TXS}")]
    TooManyTxs(usize),
    #[error("transaction {index}: {reason}")]
    Tx { index: usize, reason: String },
}

/// What one transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxOutcome {
    pub id: Hash256,
    /// `None` when the action took effect, else why it did not (fee and nonce still count).
    pub error: Option<String>,
}

/// What a block did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResult {
    pub height: u64,
    pub state_root: Hash256,
    pub outcomes: Vec<TxOutcome>,
    /// Jobs and proposals that reached an outcome at the end of this block.
    pub events: Vec<String>,
}

/// The deadline index: derived from the records, rebuilt on load.
type Deadline = (u64, u8, [u8; 32]);
const DL_UNBOND: u8 = 0;
const DL_JOB: u8 = 1;
const DL_VOTE_END: u8 = 2;
const DL_EXECUTE: u8 = 3;
const DL_TRAIN: u8 = 4;

/// The ledger state. Cloning is O(1) (persistent maps and a copy-on-write tree), so the
/// chain can keep a state per unfinalized block.
#[derive(Clone, Debug)]
pub struct State {
    meta: Meta,
    accounts: OrdMap<Address, Account>,
    workers: OrdMap<Address, Worker>,
    validators: OrdMap<Address, Validator>,
    jobs: OrdMap<Hash256, Job>,
    proposals: OrdMap<u64, Proposal>,
    trainings: OrdMap<Hash256, TrainingJob>,
    deadlines: OrdSet<Deadline>,
    tree: Tree,
    root: Hash256,
    dirty: BTreeSet<Key>,
    events: Vec<String>,
}

type Res = Result<(), String>;

fn bps_of(amount: u64, bps: u64) -> u64 {
    ((amount as u128 * bps as u128) / BPS as u128) as u64
}

fn err<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

impl State {
    /// The state at height 0.
    pub fn from_genesis(g: &Genesis) -> Result<State, String> {
        g.params.validate()?;
        if g.chain_name.is_empty() || g.chain_name.len() > 64 {
            return err("chain name must be 1..=64 bytes");
        }
        let mut params = g.params.clone();
        params.allowed_models.sort();
        params.allowed_models.dedup();
        let mut s = State {
            meta: Meta {
                chain_id: g.chain_id(),
                height: 0,
                supply: 0,
                burned: 0,
                treasury: 0,
                total_stake: 0,
                next_proposal: 1,
                params,
                epoch_length: g.epoch_length,
                validator_set: Vec::new(),
            },
            accounts: OrdMap::new(),
            workers: OrdMap::new(),
            validators: OrdMap::new(),
            jobs: OrdMap::new(),
            proposals: OrdMap::new(),
            trainings: OrdMap::new(),
            deadlines: OrdSet::new(),
            tree: Tree::new(),
            root: Hash256::default(),
            dirty: BTreeSet::new(),
            events: Vec::new(),
        };
        for a in &g.accounts {
            if s.accounts.contains_key(&a.address) {
                return err(format!(
                    "duplicate genesis account {}",
                    hex::encode(a.address)
                ));
            }
            let total = a
                .balance
                .checked_add(a.stake)
                .ok_or("genesis amounts overflow")?;
            s.meta.supply = s
                .meta
                .supply
                .checked_add(total)
                .ok_or("genesis supply overflows u64")?;
            s.meta.total_stake += a.stake;
            s.accounts.insert(
                a.address,
                Account {
                    balance: a.balance,
                    stake: a.stake,
                    ..Default::default()
                },
            );
            s.dirty.insert(Key::Account(a.address));
        }
        for v in &g.validators {
            let stake = s.accounts.get(&v.address).map_or(0, |a| a.stake);
            if stake < s.meta.params.min_validator_stake {
                return err(format!(
                    "genesis validator {} has stake {stake} below the minimum {}",
                    hex::encode(v.address),
                    s.meta.params.min_validator_stake
                ));
            }
            s.validators.insert(
                v.address,
                Validator {
                    endpoint: v.endpoint.clone(),
                    p2p: v.p2p.clone(),
                    registered_at: 0,
                    verdicts: 0,
                    earned: 0,
                    slashed: 0,
                    slashed_views: vec![],
                },
            );
            s.dirty.insert(Key::Validator(v.address));
        }
        if g.epoch_length < 2 {
            return err(format!(
                "epoch length {} must be at least 2 blocks",
                g.epoch_length
            ));
        }
        // Empty only for a ledger run without consensus (benchmarks, tools).
        s.meta.validator_set = s.next_validator_set();
        s.flush();
        Ok(s)
    }

    pub fn chain_id(&self) -> Hash256 {
        self.meta.chain_id
    }
    pub fn height(&self) -> u64 {
        self.meta.height
    }
    /// The state root after the last applied block.
    pub fn root(&self) -> Hash256 {
        self.root
    }
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
    pub fn params(&self) -> &Params {
        &self.meta.params
    }
    pub fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).cloned().unwrap_or_default()
    }
    pub fn worker(&self, a: &Address) -> Option<&Worker> {
        self.workers.get(a)
    }
    pub fn validator(&self, a: &Address) -> Option<&Validator> {
        self.validators.get(a)
    }
    pub fn job(&self, j: &Hash256) -> Option<&Job> {
        self.jobs.get(j)
    }
    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.proposals.get(&id)
    }
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &Account)> {
        self.accounts.iter()
    }
    pub fn workers(&self) -> impl Iterator<Item = (&Address, &Worker)> {
        self.workers.iter()
    }
    pub fn validators(&self) -> impl Iterator<Item = (&Address, &Validator)> {
        self.validators.iter()
    }
    pub fn jobs(&self) -> impl Iterator<Item = (&Hash256, &Job)> {
        self.jobs.iter()
    }
    pub fn proposals(&self) -> impl Iterator<Item = (&u64, &Proposal)> {
        self.proposals.iter()
    }

    /// The consensus validator set for the next block (see [`Meta::validator_set`]).
    pub fn validator_set(&self) -> &[Address] {
        &self.meta.validator_set
    }

    /// The epoch containing `height`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.meta.epoch_length
    }

    /// Whether `height` is the last block of its epoch (after which the set may change).
    pub fn is_epoch_end(&self, height: u64) -> bool {
        height % self.meta.epoch_length == self.meta.epoch_length - 1
    }

    /// The set the active validators would form now: the [`MAX_CONSENSUS_VALIDATORS`]
    /// highest stakes (ties to the lower address), sorted by address.
    pub fn next_validator_set(&self) -> Vec<Address> {
        let mut v = self.active_validators();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(MAX_CONSENSUS_VALIDATORS);
        let mut set: Vec<Address> = v.into_iter().map(|(a, _)| a).collect();
        set.sort_unstable();
        set
    }

    /// Validators whose stake meets the minimum, with their stake.
    pub fn active_validators(&self) -> Vec<(Address, u64)> {
        let min = self.meta.params.min_validator_stake;
        self.validators
            .keys()
            .map(|a| (*a, self.account(a).stake))
            .filter(|(_, s)| *s >= min)
            .collect()
    }

    /// The canonical bytes of the record under `key` (what the tree commits to), if any.
    pub fn encode_record(&self, key: &Key) -> Option<Vec<u8>> {
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            postcard::to_allocvec(v).expect("records encode")
        }
        match key {
            Key::Meta => Some(enc(&self.meta)),
            Key::Account(a) => self.accounts.get(a).map(enc),
            Key::Worker(a) => self.workers.get(a).map(enc),
            Key::Validator(a) => self.validators.get(a).map(enc),
            Key::Job(j) => self.jobs.get(j).map(enc),
            Key::Proposal(p) => self.proposals.get(p).map(enc),
            Key::Training(t) => self.trainings.get(t).map(enc),
        }
    }

    /// A proof of the record under `key` (or of its absence) against [`State::root`].
    pub fn prove(&self, key: &Key) -> (Option<Vec<u8>>, smt::Proof) {
        (self.encode_record(key), self.tree.prove(&key.hash()))
    }

    /// Checks everything about `tx` that makes a block containing it invalid, given the
    /// sender's expected nonce. Signatures are checked separately (in a batch).
    fn check_static(&self, tx: &SignedTx, expected_nonce: u64) -> Res {
        let t = &tx.tx;
        if t.chain != self.meta.chain_id {
            return err("wrong chain id");
        }
        if t.nonce != expected_nonce {
            return err(format!(
                "nonce {} but the account expects {expected_nonce}",
                t.nonce
            ));
        }
        if t.fee < self.meta.params.min_fee {
            return err(format!(
                "fee {} below the minimum {}",
                t.fee, self.meta.params.min_fee
            ));
        }
        if tx.to_bytes().len() > MAX_TX_BYTES {
            return err("transaction too large");
        }
        Ok(())
    }

    /// Mempool admission: the checks that make a block invalid, plus the fee being payable.
    pub fn check_tx(&self, tx: &SignedTx, expected_nonce: u64) -> Res {
        self.check_static(tx, expected_nonce)?;
        tx.verify_signature()?;
        if self.account(&tx.tx.from).balance < tx.tx.fee {
            return err("balance does not cover the fee");
        }
        Ok(())
    }

    /// Whether `txs` form a valid block on top of this state (signatures included).
    pub fn validate_block(&self, txs: &[SignedTx]) -> Result<(), BlockError> {
        if txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTxs(txs.len()));
        }
        let mut nonces: BTreeMap<Address, u64> = BTreeMap::new();
        for (i, tx) in txs.iter().enumerate() {
            let n = nonces
                .entry(tx.tx.from)
                .or_insert_with(|| self.account(&tx.tx.from).nonce);
            self.check_static(tx, *n)
                .map_err(|reason| BlockError::Tx { index: i, reason })?;
            *n += 1;
        }
        verify_signatures(txs)
    }

    /// Applies block `height` with `txs`. On error nothing changed.
    pub fn apply_block(
        &mut self,
        height: u64,
        txs: &[SignedTx],
    ) -> Result<BlockResult, BlockError> {
        if height != self.meta.height + 1 {
            return Err(BlockError::Height {
                have: self.meta.height,
                got: height,
            });
        }
        self.validate_block(txs)?;
        self.meta.height = height;
        self.dirty.insert(Key::Meta);
        let mut outcomes = Vec::with_capacity(txs.len());
        for tx in txs {
            let error = self.execute(tx).err();
            outcomes.push(TxOutcome { id: tx.id(), error });
        }
        self.end_block(height);
        self.flush();
        Ok(BlockResult {
            height,
            state_root: self.root,
            outcomes,
            events: std::mem::take(&mut self.events),
        })
    }

    /// Sums every place money can be and checks it against supply minus burns.
    pub fn audit(&self) -> Res {
        let set = &self.meta.validator_set;
        if set.len() > MAX_CONSENSUS_VALIDATORS || set.windows(2).any(|w| w[0] >= w[1]) {
            return err("the consensus set is not sorted, unique and within the cap");
        }
        if let Some(a) = set.iter().find(|a| !self.validators.contains_key(*a)) {
            return err(format!(
                "consensus set member {} is not a registered validator",
                hex::encode(a)
            ));
        }
        let mut total: u128 = self.meta.treasury as u128;
        let mut stake: u128 = 0;
        for a in self.accounts.values() {
            total += a.balance as u128 + a.stake as u128 + a.unbonding_total();
            stake += a.stake as u128;
        }
        for j in self.jobs.values() {
            if !j.status.is_final() {
                total += j.escrow as u128;
                if let Some(c) = &j.challenge {
                    total += c.bond as u128;
                }
            }
            // An accepted job's settlement record accounts for its escrow exactly.
            if let (JobStatus::Accepted, Some(s)) = (j.status, &j.settlement) {
                let bond = j.challenge.as_ref().map_or(0, |c| c.bond as u128);
                let parts = s.worker_paid as u128
                    + s.validator_fee as u128
                    + s.treasury_cut as u128
                    + s.client_refund as u128;
                if parts != j.escrow as u128 + bond {
                    return err(format!(
                        "job settlement parts {parts} != escrow {} + bond {bond}",
                        j.escrow
                    ));
                }
            }
        }
        for (id, t) in self.trainings.iter() {
            total += t.escrow as u128;
            if !t.escrow_balanced() {
                return err(format!(
                    "training {}: paid {} + fees {} + refunded {} + held {} != escrowed {} x {}",
                    id.short(),
                    t.paid,
                    t.fees,
                    t.refunded,
                    t.escrow,
                    t.rounds,
                    t.reward_per_round
                ));
            }
            if t.status != TrainingStatus::Running && t.escrow != 0 {
                return err(format!("training {} ended holding escrow", id.short()));
            }
        }
        if total + self.meta.burned as u128 != self.meta.supply as u128 {
            return err(format!(
                "accounted {total} + burned {} != supply {}",
                self.meta.burned, self.meta.supply
            ));
        }
        if stake != self.meta.total_stake as u128 {
            return err(format!(
                "stake sum {stake} != total_stake {}",
                self.meta.total_stake
            ));
        }
        Ok(())
    }

    // ----- mutation helpers -------------------------------------------------------------

    fn acct_mut(&mut self, a: &Address) -> &mut Account {
        self.dirty.insert(Key::Account(*a));
        self.accounts.entry(*a).or_default()
    }

    fn credit(&mut self, a: &Address, amount: u64) {
        if amount > 0 {
            let acct = self.acct_mut(a);
            // Cannot overflow: every balance is bounded by the supply, a u64.
            acct.balance = acct.balance.saturating_add(amount);
        }
    }

    fn debit(&mut self, a: &Address, amount: u64, what: &str) -> Res {
        let have = self.account(a).balance;
        if have < amount {
            return err(format!("{what}: balance {have} < {amount}"));
        }
        self.acct_mut(a).balance -= amount;
        Ok(())
    }

    fn pay_treasury(&mut self, amount: u64) {
        self.meta.treasury = self.meta.treasury.saturating_add(amount);
    }

    fn job_mut(&mut self, j: &Hash256) -> Option<&mut Job> {
        self.dirty.insert(Key::Job(*j));
        self.jobs.get_mut(j)
    }

    fn set_job_deadline(&mut self, id: Hash256, old: u64, new: u64) {
        self.deadlines.remove(&(old, DL_JOB, id.0));
        self.deadlines.insert((new, DL_JOB, id.0));
    }

    /// Recomputes the tree leaves of everything touched and the root.
    fn flush(&mut self) {
        self.dirty.insert(Key::Meta);
        for key in std::mem::take(&mut self.dirty) {
            match self.encode_record(&key) {
                Some(bytes) => self.tree.insert(key.hash(), value_hash(&bytes)),
                None => {
                    self.tree.remove(&key.hash());
                }
            }
        }
        self.root = Hash256(self.tree.root());
    }

    // ----- transactions -----------------------------------------------------------------

    fn execute(&mut self, tx: &SignedTx) -> Res {
        let t = &tx.tx;
        let from = t.from;
        self.acct_mut(&from).nonce += 1;
        if self.account(&from).balance < t.fee {
            return err("balance does not cover the fee");
        }
        self.acct_mut(&from).balance -= t.fee;
        self.pay_treasury(t.fee);
        let h = self.meta.height;
        match &t.kind {
            TxKind::Transfer { to, amount } => {
                if *amount == 0 {
                    return err("transfer of 0");
                }
                self.debit(&from, *amount, "transfer")?;
                self.credit(to, *amount);
                Ok(())
            }
            TxKind::Stake { amount } => {
                if *amount == 0 {
                    return err("stake of 0");
                }
                self.debit(&from, *amount, "stake")?;
                self.acct_mut(&from).stake += amount;
                self.meta.total_stake += amount;
                Ok(())
            }
            TxKind::Unstake { amount } => {
                let have = self.account(&from).stake;
                if *amount == 0 || *amount > have {
                    return err(format!("unstake {amount} of stake {have}"));
                }
                let release = h.saturating_add(self.meta.params.unbonding_period);
                let acct = self.acct_mut(&from);
                acct.stake -= amount;
                acct.unbonding.push(Unbond {
                    amount: *amount,
                    release,
                });
                self.meta.total_stake -= amount;
                self.deadlines.insert((release, DL_UNBOND, from));
                Ok(())
            }
            TxKind::RegisterWorker {
                models,
                profile,
                hardware,
                price_per_1k,
                endpoint,
            } => {
                let p = &self.meta.params;
                if models.is_empty() {
                    return err("a worker must serve at least one model");
                }
                if let Some(m) = models.iter().find(|m| !p.model_allowed(m)) {
                    return err(format!("model {} is not allowed by governance", m.short()));
                }
                if *price_per_1k < p.price_floor {
                    return err(format!(
                        "price {price_per_1k} below the floor {}",
                        p.price_floor
                    ));
                }
                let stake = self.account(&from).stake;
                if stake < p.min_worker_stake {
                    return err(format!(
                        "stake {stake} below the worker minimum {}",
                        p.min_worker_stake
                    ));
                }
                let mut models = models.clone();
                models.sort();
                models.dedup();
                let prev = self.workers.get(&from).cloned();
                let w = Worker {
                    models,
                    profile: profile.clone(),
                    hardware: hardware.clone(),
                    price_per_1k: *price_per_1k,
                    endpoint: endpoint.clone(),
                    active: true,
                    registered_at: prev.as_ref().map_or(h, |w| w.registered_at),
                    jobs_done: prev.as_ref().map_or(0, |w| w.jobs_done),
                    jobs_rejected: prev.as_ref().map_or(0, |w| w.jobs_rejected),
                    tokens_served: prev.as_ref().map_or(0, |w| w.tokens_served),
                    earned: prev.as_ref().map_or(0, |w| w.earned),
                    slashed: prev.as_ref().map_or(0, |w| w.slashed),
                };
                self.workers.insert(from, w);
                self.dirty.insert(Key::Worker(from));
                Ok(())
            }
            TxKind::RegisterValidator { endpoint, p2p } => {
                let stake = self.account(&from).stake;
                let min = self.meta.params.min_validator_stake;
                if stake < min {
                    return err(format!("stake {stake} below the validator minimum {min}"));
                }
                if !p2p.is_empty() && p2p.parse::<std::net::SocketAddr>().is_err() {
                    return err(format!("p2p address {p2p:?} is not host:port"));
                }
                let prev = self.validators.get(&from).cloned();
                self.validators.insert(
                    from,
                    Validator {
                        endpoint: endpoint.clone(),
                        p2p: p2p.clone(),
                        registered_at: prev.as_ref().map_or(h, |v| v.registered_at),
                        verdicts: prev.as_ref().map_or(0, |v| v.verdicts),
                        earned: prev.as_ref().map_or(0, |v| v.earned),
                        slashed: prev.as_ref().map_or(0, |v| v.slashed),
                        slashed_views: prev.map(|v| v.slashed_views).unwrap_or_default(),
                    },
                );
                self.dirty.insert(Key::Validator(from));
                Ok(())
            }
            TxKind::OpenJob {
                job,
                model,
                max_tokens,
                escrow,
                worker,
            } => {
                if self.jobs.contains_key(job) {
                    return err(format!("job {} already exists", job.short()));
                }
                if !self.meta.params.model_allowed(model) {
                    return err(format!(
                        "model {} is not allowed by governance",
                        model.short()
                    ));
                }
                if *escrow == 0 || *max_tokens == 0 {
                    return err("escrow and max_tokens must be positive");
                }
                if let Some(w) = worker {
                    match self.workers.get(w) {
                        Some(wk) if wk.active && wk.models.contains(model) => {}
                        _ => return err("the named worker is not an active worker for this model"),
                    }
                }
                self.debit(&from, *escrow, "escrow")?;
                let deadline = h.saturating_add(self.meta.params.job_timeout);
                self.jobs.insert(
                    *job,
                    Job {
                        client: from,
                        model: *model,
                        max_tokens: *max_tokens,
                        escrow: *escrow,
                        worker: *worker,
                        opened_at: h,
                        deadline,
                        status: JobStatus::Open,
                        receipt: None,
                        challenge: None,
                        verdicts: Vec::new(),
                        settlement: None,
                    },
                );
                self.dirty.insert(Key::Job(*job));
                self.deadlines.insert((deadline, DL_JOB, job.0));
                Ok(())
            }
            TxKind::PostReceipt {
                job,
                receipt,
                tokens,
                pointer,
            } => {
                let j = self.jobs.get(job).ok_or("unknown job")?;
                if j.status != JobStatus::Open {
                    return err(format!("job is {:?}, not open", j.status));
                }
                let w = self
                    .workers
                    .get(&from)
                    .ok_or("sender is not a registered worker")?;
                if !w.active {
                    return err("worker is inactive (slashed)");
                }
                match j.worker {
                    Some(assigned) if assigned != from => {
                        return err("job is assigned to another worker")
                    }
                    None if !w.models.contains(&j.model) => {
                        return err("worker does not serve the job's model")
                    }
                    _ => {}
                }
                if *tokens == 0 {
                    return err("tokens must be positive");
                }
                let cost = ((*tokens as u128 * w.price_per_1k as u128).div_ceil(1000))
                    .min(j.escrow as u128) as u64;
                let (old, new) = (
                    j.deadline,
                    h.saturating_add(self.meta.params.challenge_window),
                );
                let jm = self.job_mut(job).expect("checked above");
                jm.status = JobStatus::Receipted;
                jm.worker = Some(from);
                jm.deadline = new;
                jm.receipt = Some(ReceiptRecord {
                    worker: from,
                    digest: *receipt,
                    tokens: *tokens,
                    pointer: pointer.clone(),
                    posted_at: h,
                    cost,
                });
                self.set_job_deadline(*job, old, new);
                Ok(())
            }
            TxKind::Challenge { job } => {
                let j = self.jobs.get(job).ok_or("unknown job")?;
                if j.status != JobStatus::Receipted {
                    return err(format!(
                        "job is {:?}; only a receipted job can be challenged",
                        j.status
                    ));
                }
                if j.worker == Some(from) {
                    return err("a worker cannot challenge its own receipt");
                }
                let old = j.deadline;
                let bond = self.meta.params.challenge_bond;
                self.debit(&from, bond, "challenge bond")?;
                let new = h.saturating_add(self.meta.params.verdict_window);
                let jm = self.job_mut(job).expect("checked above");
                jm.status = JobStatus::Challenged;
                jm.deadline = new;
                jm.challenge = Some(ChallengeRecord {
                    challenger: from,
                    bond,
                    at: h,
                });
                self.set_job_deadline(*job, old, new);
                Ok(())
            }
            TxKind::Verdict { job, accept } => self.verdict(from, *job, *accept),
            TxKind::ReportEquivocation { offender, view, .. } => {
                self.report_equivocation(from, *offender, *view)
            }
            TxKind::OpenTraining {
                job,
                checkpoint,
                commitment,
                rounds,
                workers,
                reward_per_round,
                coordinator,
            } => self.open_training(
                from,
                *job,
                (*checkpoint, *commitment),
                (*rounds, *workers, *reward_per_round),
                *coordinator,
            ),
            TxKind::TrainVerdict {
                job,
                round,
                report,
                accept,
            } => self.train_verdict(from, *job, *round, *report, *accept),
            TxKind::TrainRound {
                job,
                round,
                checkpoint,
                report,
                accepted,
                rejected,
                url,
            } => self.train_round(
                from,
                *job,
                *round,
                *checkpoint,
                *report,
                (accepted, rejected),
                url,
            ),
            TxKind::Propose { change } => {
                if self.account(&from).stake == 0 {
                    return err("only stakers may propose");
                }
                match change {
                    ParamChange::Set { param, value } => Params::check(*param, *value)?,
                    ParamChange::AllowModel { .. } | ParamChange::DisallowModel { .. } => {}
                }
                let id = self.meta.next_proposal;
                self.meta.next_proposal += 1;
                let end = h.saturating_add(self.meta.params.voting_period);
                self.proposals.insert(
                    id,
                    Proposal {
                        id,
                        proposer: from,
                        change: change.clone(),
                        created: h,
                        voting_end: end,
                        execute_at: None,
                        votes: Vec::new(),
                        status: ProposalStatus::Voting,
                        yes_stake: 0,
                        no_stake: 0,
                    },
                );
                self.dirty.insert(Key::Proposal(id));
                self.deadlines.insert((end, DL_VOTE_END, id_bytes(id)));
                Ok(())
            }
            TxKind::Vote { proposal, yes } => {
                let p = self.proposals.get(proposal).ok_or("unknown proposal")?;
                if p.status != ProposalStatus::Voting {
                    return err("voting on this proposal has ended");
                }
                if self.account(&from).stake == 0 {
                    return err("only stakers may vote");
                }
                self.dirty.insert(Key::Proposal(*proposal));
                let p = self.proposals.get_mut(proposal).expect("checked above");
                upsert_vote(&mut p.votes, from, *yes);
                Ok(())
            }
        }
    }

    fn verdict(&mut self, from: Address, job: Hash256, accept: bool) -> Res {
        let min = self.meta.params.min_validator_stake;
        if !self.validators.contains_key(&from) || self.account(&from).stake < min {
            return err("sender is not an active validator");
        }
        let j = self.jobs.get(&job).ok_or("unknown job")?;
        if !matches!(j.status, JobStatus::Receipted | JobStatus::Challenged) {
            return err(format!("job is {:?}; no verdict possible", j.status));
        }
        if j.verdicts.iter().any(|v| v.voter == from) {
            return err("validator already gave a verdict on this job");
        }
        let jm = self.job_mut(&job).expect("checked above");
        upsert_vote(&mut jm.verdicts, from, accept);
        if let Some(v) = self.validators.get_mut(&from) {
            v.verdicts += 1;
        }
        self.dirty.insert(Key::Validator(from));
        match self.quorum(&self.jobs[&job].verdicts) {
            Some(false) => self.reject_job(job),
            Some(true) => self.accept_job(job),
            None => {}
        }
        Ok(())
    }

    /// The side of `votes` holding more than two thirds of the active validator stake, if
    /// either does (votes of keys that are no longer active validators weigh nothing).
    pub(crate) fn quorum(&self, votes: &[Vote]) -> Option<bool> {
        let active: BTreeMap<Address, u64> = self.active_validators().into_iter().collect();
        let total: u128 = active.values().map(|s| *s as u128).sum();
        let (mut yes, mut no) = (0u128, 0u128);
        for v in votes {
            let s = *active.get(&v.voter).unwrap_or(&0) as u128;
            if v.yes {
                yes += s
            } else {
                no += s
            }
        }
        if no * 3 > total * 2 {
            Some(false)
        } else if yes * 3 > total * 2 {
            Some(true)
        } else {
            None
        }
    }

    /// Pays the worker, the validators who accepted it and the treasury; refunds the rest
    /// of the escrow; a failed challenger's bond goes to the worker.
    fn accept_job(&mut self, id: Hash256) {
        let h = self.meta.height;
        let j = self.jobs[&id].clone();
        let r = j.receipt.clone().expect("accepted jobs have receipts");
        let p = &self.meta.params;
        let cost = r.cost.min(j.escrow);
        // Params::validate keeps the two shares within the cost; the clamps make that
        // impossible to break even if a bad parameter set slipped through.
        let treasury_cut = bps_of(cost, p.treasury_bps).min(cost);
        let mut validator_fee = bps_of(cost, p.validator_fee_bps).min(cost - treasury_cut);
        let worker_paid = cost - treasury_cut - validator_fee;
        let refund = j.escrow - cost;
        let voters: Vec<Address> = j
            .verdicts
            .iter()
            .filter(|v| v.yes)
            .map(|v| v.voter)
            .collect();
        let mut treasury = treasury_cut;
        if voters.is_empty() {
            treasury += validator_fee;
            validator_fee = 0;
        } else {
            let each = validator_fee / voters.len() as u64;
            treasury += validator_fee - each * voters.len() as u64;
            // What the validators actually got; the remainder went to the treasury.
            validator_fee = each * voters.len() as u64;
            for v in &voters {
                self.credit(v, each);
                if let Some(val) = self.validators.get_mut(v) {
                    val.earned += each;
                }
                self.dirty.insert(Key::Validator(*v));
            }
        }
        self.credit(&r.worker, worker_paid);
        self.credit(&j.client, refund);
        self.pay_treasury(treasury);
        let mut bond_to_worker = 0;
        if let Some(c) = &j.challenge {
            bond_to_worker = c.bond;
            self.credit(&r.worker, c.bond);
        }
        if let Some(w) = self.workers.get_mut(&r.worker) {
            w.jobs_done += 1;
            w.tokens_served += r.tokens as u64;
            w.earned += worker_paid + bond_to_worker;
        }
        self.dirty.insert(Key::Worker(r.worker));
        let jm = self.job_mut(&id).expect("exists");
        jm.status = JobStatus::Accepted;
        jm.settlement = Some(Settlement {
            height: h,
            worker_paid: worker_paid + bond_to_worker,
            validator_fee,
            treasury_cut: treasury,
            client_refund: refund,
            ..Default::default()
        });
        self.deadlines.remove(&(j.deadline, DL_JOB, id.0));
        self.events.push(format!("job {} accepted", id.short()));
    }

    /// Takes `slash_bps` of what `who` holds (stake first, then the newest unbonding
    /// entries) and returns the amount taken; the caller decides where it goes.
    fn slash_holdings(&mut self, who: &Address) -> u64 {
        let acct = self.account(who);
        let held = (acct.stake as u128 + acct.unbonding_total()).min(u64::MAX as u128) as u64;
        let slash = bps_of(held, self.meta.params.slash_bps);
        let mut left = slash;
        let a = self.acct_mut(who);
        let from_stake = left.min(a.stake);
        a.stake -= from_stake;
        left -= from_stake;
        while left > 0 {
            let Some(u) = a.unbonding.last_mut() else {
                break;
            };
            let take = left.min(u.amount);
            u.amount -= take;
            left -= take;
            if u.amount == 0 {
                a.unbonding.pop();
            }
        }
        self.meta.total_stake -= from_stake;
        slash
    }

    /// Slashes a validator for equivocating in `view` (the chain has checked the evidence):
    /// once per view, half to the reporter, the rest burned.
    fn report_equivocation(&mut self, reporter: Address, offender: Address, view: u64) -> Res {
        if reporter == offender {
            return err("a validator cannot report itself (it would earn half its own slash)");
        }
        let Some(v) = self.validators.get(&offender) else {
            return err("the reported key is not a registered validator");
        };
        if v.slashed_views.binary_search(&view).is_ok() {
            return err(format!("already slashed for view {view}"));
        }
        if v.slashed_views.len() >= MAX_SLASHED_VIEWS && v.slashed_views[0] > view {
            return err(format!(
                "view {view} is older than the {MAX_SLASHED_VIEWS} views this validator was slashed for"
            ));
        }
        let slash = self.slash_holdings(&offender);
        if slash == 0 {
            return err("the validator holds nothing to slash");
        }
        let reward = slash / 2;
        self.credit(&reporter, reward);
        self.meta.burned += slash - reward;
        let v = self.validators.get_mut(&offender).expect("checked above");
        v.slashed += slash;
        let at = v.slashed_views.partition_point(|x| *x < view);
        v.slashed_views.insert(at, view);
        if v.slashed_views.len() > MAX_SLASHED_VIEWS {
            v.slashed_views.remove(0);
        }
        self.dirty.insert(Key::Validator(offender));
        self.events.push(format!(
            "validator {} slashed {slash} for equivocation in view {view}",
            hex::encode(&offender[..4])
        ));
        Ok(())
    }

    /// Refunds the client, slashes the worker (stake first, then unbonding funds), pays the
    /// challenger half of the slash plus its bond back (or the rejecting validators, if
    /// there was no challenger) and burns the rest.
    fn reject_job(&mut self, id: Hash256) {
        let h = self.meta.height;
        let j = self.jobs[&id].clone();
        let worker = j.worker.expect("rejected jobs have a worker");
        let slash = self.slash_holdings(&worker);
        let reward = slash / 2;
        let mut challenger_paid = 0;
        let mut burned = slash - reward;
        match &j.challenge {
            Some(c) => {
                self.credit(&c.challenger, c.bond + reward);
                challenger_paid = c.bond + reward;
            }
            None => {
                let voters: Vec<Address> = j
                    .verdicts
                    .iter()
                    .filter(|v| !v.yes)
                    .map(|v| v.voter)
                    .collect();
                let each = reward / voters.len().max(1) as u64;
                for v in &voters {
                    self.credit(v, each);
                    if let Some(val) = self.validators.get_mut(v) {
                        val.earned += each;
                    }
                    self.dirty.insert(Key::Validator(*v));
                }
                burned += reward - each * voters.len() as u64;
            }
        }
        self.meta.burned += burned;
        self.credit(&j.client, j.escrow);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.jobs_rejected += 1;
            w.slashed += slash;
            w.active = false;
        }
        self.dirty.insert(Key::Worker(worker));
        let jm = self.job_mut(&id).expect("exists");
        jm.status = JobStatus::Rejected;
        jm.settlement = Some(Settlement {
            height: h,
            client_refund: j.escrow,
            slashed: slash,
            burned,
            challenger_paid,
            ..Default::default()
        });
        self.deadlines.remove(&(j.deadline, DL_JOB, id.0));
        self.events.push(format!(
            "job {} rejected; worker slashed {slash}",
            id.short()
        ));
    }

    // ----- end of block -----------------------------------------------------------------

    fn end_block(&mut self, h: u64) {
        while let Some(first) = self.deadlines.get_min().copied().filter(|d| d.0 <= h) {
            self.deadlines.remove(&first);
            let (_, kind, id) = first;
            match kind {
                DL_UNBOND => self.release_unbonding(id, h),
                DL_JOB => self.job_timeout(Hash256(id), h),
                DL_VOTE_END => self.tally(u64_of(&id), h),
                DL_EXECUTE => self.execute_proposal(u64_of(&id)),
                DL_TRAIN => self.training_timeout(Hash256(id), h),
                _ => unreachable!("only the five kinds are inserted"),
            }
        }
        if self.is_epoch_end(h) {
            let next = self.next_validator_set();
            // With no staked validator left the chain could never finalize again: keep the
            // old set, which can still finalize the unstake being undone.
            if next.is_empty() {
                self.events.push(format!(
                    "epoch {}: no validator meets the minimum stake, the set is unchanged",
                    self.epoch_of(h) + 1
                ));
            } else if next != self.meta.validator_set {
                self.events.push(format!(
                    "epoch {}: validator set of {} (was {})",
                    self.epoch_of(h) + 1,
                    next.len(),
                    self.meta.validator_set.len()
                ));
                self.meta.validator_set = next;
            }
        }
    }

    fn release_unbonding(&mut self, who: Address, h: u64) {
        let a = self.acct_mut(&who);
        let mut released = 0u64;
        a.unbonding.retain(|u| {
            if u.release <= h {
                released += u.amount;
                false
            } else {
                true
            }
        });
        a.balance = a.balance.saturating_add(released);
    }

    fn job_timeout(&mut self, id: Hash256, h: u64) {
        let Some(j) = self.jobs.get(&id).cloned() else {
            return;
        };
        if j.deadline != h && j.deadline > h {
            return;
        }
        match j.status {
            JobStatus::Open => {
                self.credit(&j.client, j.escrow);
                let jm = self.job_mut(&id).expect("exists");
                jm.status = JobStatus::Expired;
                jm.settlement = Some(Settlement {
                    height: h,
                    client_refund: j.escrow,
                    ..Default::default()
                });
                self.events
                    .push(format!("job {} expired; client refunded", id.short()));
            }
            JobStatus::Receipted => self.accept_job(id),
            JobStatus::Challenged => {
                self.credit(&j.client, j.escrow);
                let c = j
                    .challenge
                    .clone()
                    .expect("challenged jobs have a challenge");
                self.credit(&c.challenger, c.bond);
                let jm = self.job_mut(&id).expect("exists");
                jm.status = JobStatus::Unresolved;
                jm.settlement = Some(Settlement {
                    height: h,
                    client_refund: j.escrow,
                    challenger_paid: c.bond,
                    ..Default::default()
                });
                self.events.push(format!(
                    "job {} unresolved; escrow and bond refunded",
                    id.short()
                ));
            }
            _ => {}
        }
    }

    fn tally(&mut self, id: u64, h: u64) {
        let Some(p) = self.proposals.get(&id).cloned() else {
            return;
        };
        if p.status != ProposalStatus::Voting {
            return;
        }
        let (mut yes, mut no) = (0u128, 0u128);
        for v in &p.votes {
            let s = self.account(&v.voter).stake as u128;
            if v.yes {
                yes += s
            } else {
                no += s
            }
        }
        let params = &self.meta.params;
        let total = self.meta.total_stake as u128;
        let quorum = (yes + no) * BPS as u128 >= total * params.quorum_bps as u128;
        let passed = quorum && yes * BPS as u128 > (yes + no) * params.threshold_bps as u128;
        let exec = h.saturating_add(params.execution_delay);
        self.dirty.insert(Key::Proposal(id));
        let pm = self.proposals.get_mut(&id).expect("exists");
        pm.yes_stake = yes as u64;
        pm.no_stake = no as u64;
        if passed {
            pm.status = ProposalStatus::Passed;
            pm.execute_at = Some(exec);
            self.deadlines.insert((exec, DL_EXECUTE, id_bytes(id)));
            self.events
                .push(format!("proposal {id} passed; executes at {exec}"));
        } else {
            pm.status = ProposalStatus::Rejected;
            self.events.push(format!("proposal {id} rejected"));
        }
    }

    fn execute_proposal(&mut self, id: u64) {
        let Some(p) = self.proposals.get(&id).cloned() else {
            return;
        };
        if p.status != ProposalStatus::Passed {
            return;
        }
        let before = self.meta.params.clone();
        let params = &mut self.meta.params;
        match p.change {
            ParamChange::Set { param, value } => *params.slot(param) = value,
            ParamChange::AllowModel { model } => {
                if let Err(i) = params.allowed_models.binary_search(&model) {
                    params.allowed_models.insert(i, model);
                }
            }
            ParamChange::DisallowModel { model } => {
                params.allowed_models.retain(|m| *m != model);
            }
        }
        self.dirty.insert(Key::Proposal(id));
        // A combination the single-parameter check could not see: undo it, and close the
        // proposal so that nothing (a restart included) retries it.
        if let Err(e) = self.meta.params.validate() {
            self.meta.params = before;
            self.proposals.get_mut(&id).expect("exists").status = ProposalStatus::Failed;
            self.events.push(format!("proposal {id} failed: {e}"));
            return;
        }
        self.proposals.get_mut(&id).expect("exists").status = ProposalStatus::Executed;
        self.events.push(format!("proposal {id} executed"));
    }

    // ----- snapshots --------------------------------------------------------------------

    /// The whole state, canonically encoded (for restarts and state sync).
    pub fn to_snapshot(&self) -> Vec<u8> {
        let snap = Snapshot {
            meta: self.meta.clone(),
            accounts: self.accounts.iter().map(|(k, v)| (*k, v.clone())).collect(),
            workers: self.workers.iter().map(|(k, v)| (*k, v.clone())).collect(),
            validators: self
                .validators
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            jobs: self.jobs.iter().map(|(k, v)| (*k, v.clone())).collect(),
            proposals: self.proposals.iter().map(|(_, v)| v.clone()).collect(),
            trainings: self
                .trainings
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            root: self.root,
        };
        postcard::to_allocvec(&snap).expect("state encodes")
    }

    /// Rebuilds a state from [`State::to_snapshot`] bytes and checks the root it names.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, String> {
        let snap: Snapshot = postcard::from_bytes(bytes).map_err(|e| format!("snapshot: {e}"))?;
        let mut s = State {
            meta: snap.meta,
            accounts: snap.accounts.into_iter().collect(),
            workers: snap.workers.into_iter().collect(),
            validators: snap.validators.into_iter().collect(),
            jobs: snap.jobs.into_iter().collect(),
            proposals: snap.proposals.into_iter().map(|p| (p.id, p)).collect(),
            trainings: snap.trainings.into_iter().collect(),
            deadlines: OrdSet::new(),
            tree: Tree::new(),
            root: Hash256::default(),
            dirty: BTreeSet::new(),
            events: Vec::new(),
        };
        let keys: Vec<Key> = std::iter::once(Key::Meta)
            .chain(s.accounts.keys().map(|a| Key::Account(*a)))
            .chain(s.workers.keys().map(|a| Key::Worker(*a)))
            .chain(s.validators.keys().map(|a| Key::Validator(*a)))
            .chain(s.jobs.keys().map(|j| Key::Job(*j)))
            .chain(s.proposals.keys().map(|p| Key::Proposal(*p)))
            .chain(s.trainings.keys().map(|t| Key::Training(*t)))
            .collect();
        s.dirty.extend(keys);
        // Rebuild the deadline index from the records.
        for (a, acct) in s.accounts.iter() {
            for u in &acct.unbonding {
                s.deadlines.insert((u.release, DL_UNBOND, *a));
            }
        }
        for (id, j) in s.jobs.iter() {
            if !j.status.is_final() {
                s.deadlines.insert((j.deadline, DL_JOB, id.0));
            }
        }
        for (id, t) in s.trainings.iter() {
            if t.status == TrainingStatus::Running {
                s.deadlines.insert((t.deadline, DL_TRAIN, id.0));
            }
        }
        for (id, p) in s.proposals.iter() {
            match p.status {
                ProposalStatus::Voting => {
                    s.deadlines
                        .insert((p.voting_end, DL_VOTE_END, id_bytes(*id)))
                }
                ProposalStatus::Passed => s.deadlines.insert((
                    p.execute_at.unwrap_or(p.voting_end),
                    DL_EXECUTE,
                    id_bytes(*id),
                )),
                _ => None,
            };
        }
        s.flush();
        if s.root != snap.root {
            return err(format!(
                "snapshot root {} does not match its contents ({})",
                snap.root.short(),
                s.root.short()
            ));
        }
        s.audit()?;
        Ok(s)
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    meta: Meta,
    accounts: Vec<(Address, Account)>,
    workers: Vec<(Address, Worker)>,
    validators: Vec<(Address, Validator)>,
    jobs: Vec<(Hash256, Job)>,
    proposals: Vec<Proposal>,
    trainings: Vec<(Hash256, TrainingJob)>,
    root: Hash256,
}

fn id_bytes(id: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&id.to_be_bytes());
    b
}

fn u64_of(b: &[u8; 32]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

pub(crate) fn upsert_vote(votes: &mut Vec<Vote>, voter: Address, yes: bool) {
    match votes.binary_search_by(|v| v.voter.cmp(&voter)) {
        Ok(i) => votes[i].yes = yes,
        Err(i) => votes.insert(i, Vote { voter, yes }),
    }
}

/// Verifies every signature in a block, in one batch when possible.
fn verify_signatures(txs: &[SignedTx]) -> Result<(), BlockError> {
    use ed25519_dalek::{Signature, VerifyingKey};
    let mut msgs = Vec::with_capacity(txs.len());
    let mut keys = Vec::with_capacity(txs.len());
    let mut sigs = Vec::with_capacity(txs.len());
    for (i, tx) in txs.iter().enumerate() {
        let key = VerifyingKey::from_bytes(&tx.tx.from).map_err(|_| BlockError::Tx {
            index: i,
            reason: "sender is not a valid ed25519 key".into(),
        })?;
        keys.push(key);
        msgs.push(tx.tx.signing_bytes());
        sigs.push(Signature::from_bytes(&tx.sig));
    }
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    if ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok() {
        return Ok(());
    }
    // Find the first bad one for the error message.
    for (i, tx) in txs.iter().enumerate() {
        tx.verify_signature().map_err(|reason| BlockError::Tx {
            index: i,
            reason: reason.into(),
        })?;
    }
    Err(BlockError::Tx {
        index: 0,
        reason: "batch signature check failed".into(),
    })
}
