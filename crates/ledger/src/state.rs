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
//!
//! Split by concern, every public item re-exported here: `records` (the record types and
//! the tree [`Key`]), `params` (the governance parameters), `genesis` (the first state),
//! `block` (block validity, [`State::apply_block`], the dispatcher that hands each
//! transaction kind to one handler, and the deadlines that fall due at the end of a block),
//! `staking` (transfers, stake, unbonding, slashing), `registry` (workers, validators, the
//! consensus set), `jobs` (inference jobs from escrow to settlement, and [`job_cost`]),
//! `training` (training jobs), `contributors` (royalties, datasets, apps, gateway
//! allowances, grants), `delegation` (validators' delegator pools), `governance` (proposals and votes), `audit` (the supply
//! invariant) and `snapshot` (restarts and state sync). This module holds the [`State`]
//! itself, its queries, the primitives every handler moves money with, and the tree
//! commitment.

mod audit;
mod beacon;
mod block;
mod contributors;
mod delegation;
mod genesis;
mod governance;
mod jobs;
mod params;
mod records;
mod registry;
mod snapshot;
mod staking;
mod training;

pub use beacon::{
    committee, deal as deal_beacon, decode_output as decode_beacon_output,
    message as beacon_message, sampled, share_index as beacon_share_index, sign as sign_beacon,
    BeaconConfig, BeaconOutput, BeaconRound, GenesisBeacon, BEACON_NAMESPACE,
    DEFAULT_BEACON_PERIOD, MAX_BEACON_PLAYERS, SIGNATURE_BYTES,
};
pub use block::{BlockError, BlockResult, TxOutcome, MAX_BLOCK_TXS};
pub use contributors::{app_id, billable, dataset_id, escrow_for, max_surcharge_bps, MAX_APP_NAME};
pub use genesis::{
    Genesis, GenesisAccount, GenesisRoyalty, GenesisValidator, DEFAULT_EPOCH_LENGTH,
};
pub use jobs::{collateral, job_cost, pov_key, pov_tag, verdict_commitment, verdict_salt};
pub use params::{Params, DEFAULT_PROFILE};
pub use records::{
    decode_record, value_hash, Account, Allowance, App, ChallengeRecord, Commit, Dataset,
    Delegation, Job, JobStatus, Key, Leaving, Meta, Pov, Proposal, ProposalStatus, ReceiptRecord,
    Royalty, RoyaltyRole, RoyaltyShare, Settlement, StakeVote, Unbond, Validator, Vote, Worker,
    MAX_LEAVING, MAX_SLASHED_VIEWS,
};
pub use registry::MAX_CONSENSUS_VALIDATORS;
pub use training::{
    Credit, PendingRound, TrainingJob, TrainingStatus, MAX_CREDITED, MAX_TRAIN_ROUNDS,
};

use crate::smt::{self, Tree};
use crate::tx::Address;
use deai_types::Hash256;
use imbl::{OrdMap, OrdSet};
use serde::Serialize;
use std::collections::BTreeSet;

/// Basis points in one whole.
pub const BPS: u64 = 10_000;

/// The deadline index: derived from the records, rebuilt on load.
type Deadline = (u64, u8, [u8; 32]);
const DL_UNBOND: u8 = 0;
const DL_JOB: u8 = 1;
const DL_VOTE_END: u8 = 2;
const DL_EXECUTE: u8 = 3;
const DL_TRAIN: u8 = 4;
const DL_UNDELEGATE: u8 = 5;

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
    beacons: OrdMap<u64, BeaconRound>,
    datasets: OrdMap<Hash256, Dataset>,
    apps: OrdMap<Hash256, App>,
    allowances: OrdMap<(Address, Address), Allowance>,
    royalties: OrdMap<Hash256, Royalty>,
    delegations: OrdMap<(Address, Address), Delegation>,
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
            Key::Beacon(r) => self.beacons.get(r).map(enc),
            Key::Dataset(d) => self.datasets.get(d).map(enc),
            Key::App(a) => self.apps.get(a).map(enc),
            Key::Allowance(c, g) => self.allowances.get(&(*c, *g)).map(enc),
            Key::Royalty(m) => self.royalties.get(m).map(enc),
            Key::Delegation(d, v) => self.delegations.get(&(*d, *v)).map(enc),
        }
    }

    /// A proof of the record under `key` (or of its absence) against [`State::root`].
    pub fn prove(&self, key: &Key) -> (Option<Vec<u8>>, smt::Proof) {
        (self.encode_record(key), self.tree.prove(&key.hash()))
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
