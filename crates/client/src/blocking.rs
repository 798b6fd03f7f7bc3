//! [`ChainClient`]: the async [`crate::ChainClient`] for programs without a tokio runtime of
//! their own (the command line). Each call runs the async one to completion on a private
//! single-threaded runtime, so the two can never disagree on a URL or a decoding.
//!
//! Do not call it from inside a tokio runtime: blocking a runtime thread on another
//! runtime panics. Async code uses [`crate::ChainClient`] directly.

use crate::{Finalized, Signer, WorkerEntry};
use anyhow::{Context, Result};
use deai_ledger::state::{Job, Params};
use deai_ledger::{Address, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

/// The chain API at one URL, called synchronously.
pub struct ChainClient {
    inner: crate::ChainClient,
    rt: tokio::runtime::Runtime,
}

impl ChainClient {
    pub fn new(url: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the chain client's runtime")?;
        Ok(ChainClient {
            inner: crate::ChainClient::new(url),
            rt,
        })
    }

    /// The async client this wraps (to hand to a [`Signer`]).
    pub fn inner(&self) -> &crate::ChainClient {
        &self.inner
    }

    pub fn url(&self) -> &str {
        self.inner.url()
    }

    /// Runs any future (say, a [`Signer`] call) on this client's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn status(&self) -> Result<Value> {
        self.block_on(self.inner.status())
    }

    pub fn chain_id(&self) -> Result<Hash256> {
        self.block_on(self.inner.chain_id())
    }

    pub fn height(&self) -> Result<u64> {
        self.block_on(self.inner.height())
    }

    /// (balance, stake, nonce) of `a` in finalized state.
    pub fn account(&self, a: &Address) -> Result<(u64, u64, u64)> {
        self.block_on(self.inner.account(a))
    }

    pub fn account_json(&self, a: &Address) -> Result<Value> {
        self.block_on(self.inner.account_json(a))
    }

    pub fn params(&self) -> Result<Params> {
        self.block_on(self.inner.params())
    }

    pub fn job(&self, id: &Hash256) -> Result<Option<Job>> {
        self.block_on(self.inner.job(id))
    }

    pub fn jobs(&self, status: &str, limit: usize) -> Result<Vec<(Hash256, Job)>> {
        self.block_on(self.inner.jobs(status, limit))
    }

    pub fn jobs_total(&self, status: &str) -> Result<u64> {
        self.block_on(self.inner.jobs_total(status))
    }

    pub fn workers(&self) -> Result<Vec<WorkerEntry>> {
        self.block_on(self.inner.workers())
    }

    pub fn workers_json(&self) -> Result<Value> {
        self.block_on(self.inner.workers_json())
    }

    pub fn validators_json(&self) -> Result<Value> {
        self.block_on(self.inner.validators_json())
    }

    pub fn contributors_json(&self) -> Result<Value> {
        self.block_on(self.inner.contributors_json())
    }

    pub fn state_proof(&self, kind: &str, id: &str) -> Result<Value> {
        self.block_on(self.inner.state_proof(kind, id))
    }

    pub fn tx_status(&self, id: &Hash256) -> Result<Option<Finalized>> {
        self.block_on(self.inner.tx_status(id))
    }

    pub fn wait(&self, id: &Hash256, timeout: Duration) -> Result<Finalized> {
        self.block_on(self.inner.wait(id, timeout))
    }

    /// A [`Signer`] for `key` on this chain (its id read from the node), paying `fee`.
    pub fn signer(&self, key: SigningKey, fee: u64) -> Result<Signer> {
        Ok(Signer::new(key, self.chain_id()?, fee, self.inner.clone()))
    }

    /// Submits `kind` from `signer` without waiting; returns the transaction id.
    pub fn submit(&self, signer: &Signer, kind: TxKind) -> Result<Hash256> {
        self.block_on(signer.submit(kind))
    }

    /// [`Signer::wait_effective`], synchronously.
    pub fn wait_effective(
        &self,
        signer: &Signer,
        name: &str,
        id: &Hash256,
        timeout: Duration,
    ) -> Result<Finalized> {
        self.block_on(signer.wait_effective(name, id, timeout))
    }

    /// [`Signer::submit_and_wait`], synchronously.
    pub fn submit_and_wait(
        &self,
        signer: &Signer,
        kind: TxKind,
        timeout: Duration,
    ) -> Result<Finalized> {
        self.block_on(signer.submit_and_wait(kind, timeout))
    }
}
