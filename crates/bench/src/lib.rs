//! # deai-bench
//!
//! Owns: every benchmark harness of `deai bench` — the money attack matrix ([`attacks`]), the
//! engine against llama.cpp ([`engine`]), receipts and their tamper matrix ([`proof`]), the
//! sampler's step 0 ([`sampler`]), the ledger on consensus ([`chain`]), the whole network
//! through the gateway ([`network`]), what verification costs and catches on a devnet with
//! committees ([`verify_load`]), training, and the explorer's queries ([`explorer`]). Each
//! harness takes a plain options struct and returns a typed report (a `serde::Serialize` struct); printing it
//! as a table or as JSON is the CLI's job.
//!
//! Must never be depended on by anything but the CLI: the harnesses drive the library crates
//! from outside, as a user would, and no library may rely on them.

pub mod attacks;
pub mod chain;
pub mod engine;
mod engines;
pub mod explorer;
pub mod network;
pub mod proof;
pub mod sampler;
pub mod scripts;
mod stats;
mod sys;
pub mod train;
pub mod verify_load;
