//! # deai-ledger
//!
//! The replicated state machine every validator runs: accounts and balances, signed
//! transactions with nonces and fees, stake and unbonding, worker and validator registries,
//! jobs with escrowed payment, receipts, challenges, validator verdicts, settlement and
//! slashing, everyone else a job's fee reaches (model royalties, datasets, apps, gateways,
//! delegators, treasury grants), and stake-weighted governance of the protocol parameters.
//!
//! Owns: [`tx`] (transactions and their canonical encoding), [`state`] (the pure transition
//! function [`State::apply_block`]) and [`smt`] (the sparse Merkle tree behind the state root
//! and its proofs).
//!
//! Must never depend on: consensus, networking, the engine, a clock, randomness, floats or
//! any I/O. Two honest nodes that apply the same blocks get the same bytes and the same root.

pub mod smt;
pub mod state;
pub mod tx;

pub use state::{
    collateral, job_cost, Account, BlockError, BlockResult, Genesis, GenesisAccount, GenesisBeacon,
    GenesisValidator, Job, JobStatus, Key, Params, Proposal, ProposalStatus, State, TrainingJob,
    TrainingStatus, TxOutcome, Worker,
};
pub use tx::{Address, Param, ParamChange, SignedTx, Tx, TxKind};
