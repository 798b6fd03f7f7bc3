//! # deai-chain
//!
//! The replicated ledger: [`deai_ledger`]'s state machine driven by commonware's simplex BFT
//! consensus (ed25519 validators), with marshal for ordered delivery and backfill of
//! finalized blocks, commonware storage archives for blocks and finality certificates, and a
//! mempool. [`node`] assembles one validator from these components over any commonware
//! runtime and p2p network.
//!
//! Owns: the consensus scheme and keys ([`scheme`]), blocks ([`block`]), the consensus
//! application ([`app`]), the mempool ([`mempool`]) and validator wiring ([`node`]).
//! Must never depend on: the inference engine, proofs of inference, or the CLI. The ledger
//! below it never sees consensus types.

pub mod api;
pub mod app;
pub mod block;
pub mod epoch;
pub mod evidence;
pub mod lightclient;
pub mod local;
pub mod mempool;
pub mod node;
pub mod ports;
pub mod scheme;

pub use app::{App, FinalizedBlock};
pub use block::{Block, Header};
pub use mempool::{Mempool, Rejected};
