//! The typed client of a chain node's HTTP API (`deai-chain`'s `/v1/...` routes), and a
//! transaction [`Signer`] that keeps its own nonce so that one account can have many
//! transactions in flight.
//!
//! This crate owns every request a program makes to the chain API: no other crate builds a
//! `/v1/` URL of the chain by hand. [`ChainClient`] is async (the node roles run on tokio);
//! [`blocking::ChainClient`] wraps it for the command line. [`Signer::submit_and_wait`] is
//! the one path that numbers, signs, submits and waits for finality.
//!
//! It depends on `deai-types` and `deai-ledger` (for the record and transaction types) and
//! must never depend on the chain's consensus code (`deai-chain`) or on the node roles:
//! a worker or gateway on another host talks to any validator through it, over HTTP.

pub mod blocking;
mod http;

pub use http::{http_client, is_loopback_url};

use anyhow::{bail, Context, Result};
use deai_ledger::state::{Job, Params, Worker};
use deai_ledger::{Address, SignedTx, Tx, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::time::Duration;

/// The chain API at `url` (for example `http://127.0.0.1:27100`).
#[derive(Clone)]
pub struct ChainClient {
    url: String,
    http: reqwest::Client,
}

/// How a submitted transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalized {
    /// The transaction's id.
    pub id: Hash256,
    pub height: u64,
    /// `None` when the action took effect; else why not (the fee was still paid).
    pub error: Option<String>,
}

/// A registered worker as the ledger sees it.
#[derive(Clone, Debug)]
pub struct WorkerEntry {
    pub address: Address,
    pub worker: Worker,
    pub stake: u64,
}

impl ChainClient {
    pub fn new(url: &str) -> Self {
        ChainClient {
            url: url.trim_end_matches('/').to_string(),
            http: http_client(url, Duration::from_secs(10)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client for this ledger node (pooled connections, 10 s timeout, no redirects).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn get(&self, path: &str) -> Result<Option<Value>> {
        let url = format!("{}{path}", self.url);
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the chain at {}", self.url))?;
        let status = r.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let v: Value = r.json().await.with_context(|| format!("{url}: not JSON"))?;
        if !status.is_success() {
            bail!("{url}: {}", v["error"].as_str().unwrap_or("error"));
        }
        Ok(Some(v))
    }

    async fn get_some(&self, path: &str) -> Result<Value> {
        self.get(path)
            .await?
            .with_context(|| format!("{}{path}: not found", self.url))
    }

    pub async fn status(&self) -> Result<Value> {
        self.get_some("/v1/status").await
    }

    pub async fn chain_id(&self) -> Result<Hash256> {
        let s = self.status().await?;
        serde_json::from_value(s["chain_id"].clone()).context("status has no chain_id")
    }

    pub async fn height(&self) -> Result<u64> {
        Ok(self.status().await?["height"].as_u64().unwrap_or(0))
    }

    /// (balance, stake, nonce) of `a` in finalized state.
    pub async fn account(&self, a: &Address) -> Result<(u64, u64, u64)> {
        let v = self.account_json(a).await?;
        let acc = &v["account"];
        Ok((
            acc["balance"].as_u64().unwrap_or(0),
            acc["stake"].as_u64().unwrap_or(0),
            acc["nonce"].as_u64().unwrap_or(0),
        ))
    }

    /// The nonce `a`'s next transaction should carry: past its finalized nonce and the
    /// node's pending transactions from it (the finalized nonce where a node does not say).
    pub async fn next_nonce(&self, a: &Address) -> Result<u64> {
        let v = self.account_json(a).await?;
        Ok(v["next_nonce"]
            .as_u64()
            .or_else(|| v["account"]["nonce"].as_u64())
            .unwrap_or(0))
    }

    pub async fn params(&self) -> Result<Params> {
        let v = self.get_some("/v1/params").await?;
        serde_json::from_value(v["params"].clone()).context("bad params JSON")
    }

    /// The beacon as finalized: `None` on a chain without a beacon key.
    pub async fn beacon(&self) -> Result<Option<BeaconStatus>> {
        let v = self.get_some("/v1/beacon").await?;
        if v["beacon"].is_null() {
            return Ok(None);
        }
        let b = &v["beacon"];
        let players = b["players"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut a = [0u8; 32];
                hex::decode_to_slice(p.as_str().unwrap_or_default(), &mut a)
                    .context("bad beacon player")?;
                Ok(a)
            })
            .collect::<Result<Vec<Address>>>()?;
        let pending = v["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| PendingBeacon {
                round: r["round"].as_u64().unwrap_or_default(),
                signed: r["signed"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.as_u64().map(|i| i as u32))
                    .collect(),
            })
            .collect();
        Ok(Some(BeaconStatus {
            height: v["height"].as_u64().unwrap_or_default(),
            players,
            quorum: b["quorum"].as_u64().unwrap_or_default() as u32,
            period: b["period"].as_u64().unwrap_or_default(),
            pending,
        }))
    }

    /// The value of beacon round `round`, once recovered.
    pub async fn beacon_value(&self, round: u64) -> Result<Option<Hash256>> {
        match self.get(&format!("/v1/beacon/{round}")).await? {
            None => Ok(None),
            Some(v) => Ok(serde_json::from_value(v["round"]["value"].clone())
                .context("bad beacon round JSON")?),
        }
    }

    pub async fn job(&self, id: &Hash256) -> Result<Option<Job>> {
        match self.get(&format!("/v1/job/{id}")).await? {
            None => Ok(None),
            Some(v) => Ok(Some(
                serde_json::from_value(v["job"].clone()).context("bad job JSON")?,
            )),
        }
    }

    /// A registered app, if there is one under `id`.
    pub async fn app(&self, id: &Hash256) -> Result<Option<deai_ledger::state::App>> {
        match self.get(&format!("/v1/app/{id}")).await? {
            None => Ok(None),
            Some(v) => Ok(Some(
                serde_json::from_value(v["app"].clone()).context("bad app JSON")?,
            )),
        }
    }

    /// What `client` still lets `gateway` escrow for it, if it authorized it.
    pub async fn allowance(
        &self,
        client: &Address,
        gateway: &Address,
    ) -> Result<Option<deai_ledger::state::Allowance>> {
        let path = format!(
            "/v1/allowance/{}/{}",
            hex::encode(client),
            hex::encode(gateway)
        );
        match self.get(&path).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v["allowance"].clone()).context("bad allowance JSON"),
        }
    }

    pub async fn training(&self, id: &Hash256) -> Result<Option<deai_ledger::TrainingJob>> {
        match self.get(&format!("/v1/training/{id}")).await? {
            None => Ok(None),
            Some(v) => Ok(Some(
                serde_json::from_value(v["training"].clone()).context("bad training JSON")?,
            )),
        }
    }

    /// Finalized training jobs whose proposed round waits for verdicts (newest first, at
    /// most 1000).
    pub async fn pending_trainings(&self) -> Result<Vec<(Hash256, deai_ledger::TrainingJob)>> {
        let v = self
            .get("/v1/trainings?pending=true")
            .await?
            .unwrap_or_default();
        let list = v["trainings"].as_array().cloned().unwrap_or_default();
        list.into_iter()
            .map(|e| {
                let id: Hash256 =
                    serde_json::from_value(e["id"].clone()).context("bad training id")?;
                let t =
                    serde_json::from_value(e["training"].clone()).context("bad training JSON")?;
                Ok((id, t))
            })
            .collect()
    }

    /// Finalized jobs in `status` (`receipted`, `challenged`, ...; every status when empty),
    /// newest first, at most `limit`.
    pub async fn jobs(&self, status: &str, limit: usize) -> Result<Vec<(Hash256, Job)>> {
        self.jobs_ordered(status, limit, "newest").await
    }

    /// The `limit` jobs in `status` whose deadlines come soonest, soonest first.
    pub async fn jobs_due(&self, status: &str, limit: usize) -> Result<Vec<(Hash256, Job)>> {
        self.jobs_ordered(status, limit, "deadline").await
    }

    /// Sampled jobs whose committee names `member`, soonest deadline first (at most
    /// `limit`): what that validator must judge.
    pub async fn jobs_drawn(&self, member: &Address, limit: usize) -> Result<Vec<(Hash256, Job)>> {
        let status = format!("sampled&member={}", hex::encode(member));
        self.jobs_ordered(&status, limit, "deadline").await
    }

    async fn jobs_ordered(
        &self,
        status: &str,
        limit: usize,
        order: &str,
    ) -> Result<Vec<(Hash256, Job)>> {
        let filter = if status.is_empty() {
            String::new()
        } else {
            format!("status={status}&")
        };
        let v = self
            .get_some(&format!("/v1/jobs?{filter}limit={limit}&order={order}"))
            .await?;
        let mut out = Vec::new();
        for j in v["jobs"].as_array().into_iter().flatten() {
            out.push((
                serde_json::from_value(j["id"].clone()).context("bad job id")?,
                serde_json::from_value(j["job"].clone()).context("bad job JSON")?,
            ));
        }
        Ok(out)
    }

    /// Jobs assigned to or opened by `a`, newest first, at most `limit`; and how many there
    /// are in all.
    pub async fn account_jobs(
        &self,
        a: &Address,
        limit: usize,
    ) -> Result<(Vec<(Hash256, Job)>, u64)> {
        let v = self
            .get_some(&format!(
                "/v1/jobs?account={}&limit={limit}",
                hex::encode(a)
            ))
            .await?;
        let mut out = Vec::new();
        for j in v["jobs"].as_array().into_iter().flatten() {
            out.push((
                serde_json::from_value(j["id"].clone()).context("bad job id")?,
                serde_json::from_value(j["job"].clone()).context("bad job JSON")?,
            ));
        }
        Ok((out, v["total"].as_u64().unwrap_or(0)))
    }

    /// A page of `a`'s finalized transactions as the explorer index lists them (newest
    /// first): `limit` rows from `offset`.
    pub async fn account_txs(
        &self,
        a: &Address,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Value>> {
        let v = self
            .get_some(&format!(
                "/v1/account/{}/txs?limit={limit}&offset={offset}",
                hex::encode(a)
            ))
            .await?;
        Ok(v["txs"].as_array().cloned().unwrap_or_default())
    }

    /// Whether any job assigned to (or opened by) `a` is open, receipted or challenged.
    pub async fn has_jobs_in_flight(&self, a: &Address) -> Result<bool> {
        for st in ["open", "receipted", "challenged"] {
            let v = self
                .get_some(&format!(
                    "/v1/jobs?status={st}&account={}&limit=1",
                    hex::encode(a)
                ))
                .await?;
            if v["total"].as_u64().unwrap_or(0) > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The digest of the finalized block at `height`.
    pub async fn block_digest(&self, height: u64) -> Result<Option<Hash256>> {
        match self.get(&format!("/v1/block/{height}")).await? {
            None => Ok(None),
            Some(v) => Ok(Some(
                serde_json::from_value(v["digest"].clone()).context("block has no digest")?,
            )),
        }
    }

    pub async fn workers(&self) -> Result<Vec<WorkerEntry>> {
        let v = self.workers_json().await?;
        let mut out = Vec::new();
        for w in v["workers"].as_array().into_iter().flatten() {
            let mut address = [0u8; 32];
            hex::decode_to_slice(w["address"].as_str().unwrap_or_default(), &mut address)
                .context("bad worker address")?;
            out.push(WorkerEntry {
                address,
                worker: serde_json::from_value(w["worker"].clone()).context("bad worker")?,
                stake: w["stake"].as_u64().unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// One registered worker with its stake (None if `a` is not registered).
    pub async fn worker(&self, a: &Address) -> Result<Option<WorkerEntry>> {
        match self.get(&format!("/v1/worker/{}", hex::encode(a))).await? {
            None => Ok(None),
            Some(w) => Ok(Some(WorkerEntry {
                address: *a,
                worker: serde_json::from_value(w["worker"].clone()).context("bad worker")?,
                stake: w["stake"].as_u64().unwrap_or(0),
            })),
        }
    }

    /// The validators as the node lists them (`{"validators": [{address, stake, validator}]}`).
    pub async fn validators_json(&self) -> Result<Value> {
        self.get_some("/v1/validators").await
    }

    /// Royalties, datasets, apps, gateways' allowances, delegations and the treasury
    /// (`/v1/contributors`).
    pub async fn contributors_json(&self) -> Result<Value> {
        self.get_some("/v1/contributors").await
    }

    /// The workers as the node lists them (`{"workers": [{address, stake, worker}]}`).
    pub async fn workers_json(&self) -> Result<Value> {
        self.get_some("/v1/workers").await
    }

    /// The account record of `a` as the node serves it (`{"account": ..., "next_nonce": ...}`).
    pub async fn account_json(&self, a: &Address) -> Result<Value> {
        self.get_some(&format!("/v1/account/{}", hex::encode(a)))
            .await
    }

    /// How many finalized jobs are in `status`.
    pub async fn jobs_total(&self, status: &str) -> Result<u64> {
        let v = self
            .get_some(&format!("/v1/jobs?status={status}&limit=1"))
            .await?;
        Ok(v["total"].as_u64().unwrap_or(0))
    }

    /// The node's proof of record `id` of `kind` (`job`, `account`, ...) against its latest
    /// finality certificate, as JSON (`deai_chain::lightclient::StateProof` decodes it).
    pub async fn state_proof(&self, kind: &str, id: &str) -> Result<Value> {
        self.get_some(&format!("/v1/proof/{kind}/{id}")).await
    }

    /// Submits a signed transaction to the node's mempool; returns its id.
    pub async fn submit(&self, tx: &SignedTx) -> Result<Hash256> {
        let url = format!("{}/v1/tx", self.url);
        let r = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "tx": tx }))
            .send()
            .await
            .with_context(|| format!("cannot reach the chain at {}", self.url))?;
        let ok = r.status().is_success();
        let v: Value = r.json().await.context("submit: not JSON")?;
        if !ok {
            bail!(
                "transaction refused: {}",
                v["error"].as_str().unwrap_or("error")
            );
        }
        serde_json::from_value(v["id"].clone()).context("submit: no id")
    }

    /// `Some` once transaction `id` is finalized.
    pub async fn tx_status(&self, id: &Hash256) -> Result<Option<Finalized>> {
        let Some(v) = self.get(&format!("/v1/tx/{id}")).await? else {
            return Ok(None);
        };
        if v["status"] != "finalized" {
            return Ok(None);
        }
        Ok(Some(Finalized {
            id: *id,
            height: v["height"].as_u64().unwrap_or(0),
            error: v["error"].as_str().map(str::to_string),
        }))
    }

    /// Waits up to `timeout` for transaction `id` to be finalized.
    pub async fn wait(&self, id: &Hash256, timeout: Duration) -> Result<Finalized> {
        let t0 = tokio::time::Instant::now();
        loop {
            if let Some(f) = self.tx_status(id).await? {
                return Ok(f);
            }
            if t0.elapsed() > timeout {
                bail!("transaction {id} not finalized after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The beacon key's players and the rounds waiting for their partial signatures
/// ([`ChainClient::beacon`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeaconStatus {
    pub height: u64,
    /// Player `i` signs with share index `i`.
    pub players: Vec<Address>,
    pub quorum: u32,
    pub period: u64,
    pub pending: Vec<PendingBeacon>,
}

/// A closed beacon round without a value yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBeacon {
    pub round: u64,
    /// Player indexes whose partials are in.
    pub signed: Vec<u32>,
}

/// Signs and submits transactions for one account, numbering them itself so that many can
/// be pending at once. After a refusal it re-reads the account nonce.
pub struct Signer {
    key: SigningKey,
    chain: Hash256,
    fee: u64,
    ledger: ChainClient,
    next: tokio::sync::Mutex<Option<u64>>,
}

impl Signer {
    pub fn new(key: SigningKey, chain: Hash256, fee: u64, ledger: ChainClient) -> Self {
        Signer {
            key,
            chain,
            fee,
            ledger,
            next: tokio::sync::Mutex::new(None),
        }
    }

    pub fn address(&self) -> Address {
        self.key.verifying_key().to_bytes()
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The fee this signer pays per transaction.
    pub fn fee(&self) -> u64 {
        self.fee
    }

    pub fn ledger(&self) -> &ChainClient {
        &self.ledger
    }

    /// Signs `kind` with the next nonce without submitting it (the caller hands it on).
    /// The nonce is consumed: submit the transaction or the account stalls. The first one
    /// counts the node's pending transactions, as [`Signer::submit_signed`] does (the
    /// finalized nonce alone would repeat one still pending).
    pub async fn sign(&self, kind: TxKind) -> Result<SignedTx> {
        let mut next = self.next.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self.ledger.next_nonce(&self.address()).await?,
        };
        *next = Some(nonce + 1);
        Ok(self.tx(nonce, kind))
    }

    fn tx(&self, nonce: u64, kind: TxKind) -> SignedTx {
        Tx {
            chain: self.chain,
            from: self.address(),
            nonce,
            fee: self.fee,
            kind,
        }
        .sign(&self.key)
    }

    /// Signs and submits `kind`; returns the transaction id.
    pub async fn submit(&self, kind: TxKind) -> Result<Hash256> {
        Ok(self.submit_signed(kind).await?.0)
    }

    /// [`Signer::submit`], also returning the transaction as submitted (to hand on, as the
    /// gateway hands a job's escrow to its worker). A refused nonce (the account was used
    /// elsewhere) is re-read from the chain and the transaction signed again, once.
    pub async fn submit_signed(&self, kind: TxKind) -> Result<(Hash256, SignedTx)> {
        let mut next = self.next.lock().await;
        for attempt in 0..2 {
            let nonce = match *next {
                Some(n) => n,
                None => self.ledger.next_nonce(&self.address()).await?,
            };
            let tx = self.tx(nonce, kind.clone());
            match self.ledger.submit(&tx).await {
                Ok(id) => {
                    *next = Some(nonce + 1);
                    return Ok((id, tx));
                }
                Err(e) if attempt == 0 && e.to_string().contains("nonce") => {
                    // Our count drifted (a restart, a transaction lost, or another
                    // signer with this key, such as the chain node's evidence reporter):
                    // re-read it, counting the node's pending transactions.
                    *next = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// The one path from an action to its finality: numbers, signs and submits `kind`, then
    /// waits up to `timeout` for it to be finalized; an action that failed on chain is an
    /// error (its fee was still paid).
    pub async fn submit_and_wait(&self, kind: TxKind, timeout: Duration) -> Result<Finalized> {
        let name = kind.name();
        let id = self.submit(kind).await?;
        self.wait_effective(name, &id, timeout).await
    }

    /// The second half of [`Signer::submit_and_wait`], for a caller that reports the id in
    /// between: waits for transaction `id` (a `name`) to be finalized, and makes an action
    /// that failed on chain an error.
    pub async fn wait_effective(
        &self,
        name: &str,
        id: &Hash256,
        timeout: Duration,
    ) -> Result<Finalized> {
        let f = self.ledger.wait(id, timeout).await?;
        if let Some(e) = &f.error {
            bail!("{name} {id} failed on chain at height {}: {e}", f.height);
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests;
