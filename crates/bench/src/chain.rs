//! `deai bench chain`: validators on loopback (tokio, authenticated p2p), an open-loop load
//! of signed transactions, and finality latency measured per transaction; plus the cost of
//! the state root as the account count grows.

use crate::stats::percentile;
use commonware_runtime::{Clock, Runner};
use deai_chain::local::{self, InitOptions, RunOptions};
use deai_ledger::{GenesisAccount, Params, SignedTx, Tx, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Options {
    pub validators: usize,
    /// Offered load, transactions per second.
    pub rate: u64,
    /// Seconds of load per phase.
    pub seconds: u64,
    /// Distinct sending accounts.
    pub senders: usize,
    pub base_port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            validators: 4,
            rate: 3_000,
            seconds: 10,
            senders: 512,
            base_port: 28_000,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub validators: usize,
    pub offered_tx_per_s: u64,
    pub tx_per_s: f64,
    pub receipts_per_s: f64,
    pub finality_p50_ms: f64,
    pub finality_p99_ms: f64,
    pub receipt_finality_p50_ms: f64,
    pub blocks_per_s: f64,
    /// Microseconds to update 3000 state leaves (a 1000-transfer block touches ~2 accounts
    /// per transfer plus metadata) and recompute the root, with 10k and 1M leaves.
    pub root_us_10k_accounts: f64,
    pub root_us_1m_accounts: f64,
    /// `root_us_1m_accounts / root_us_10k_accounts`: ~log(100) growth, not 100x.
    pub root_cost_ratio: f64,
}

fn seed(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0xbe;
    s
}

/// Microseconds to update `changes` leaves of a state tree holding `leaves` leaves and
/// recompute its root (best of 3): what one block costs the state commitment.
pub fn root_cost(leaves: usize, changes: usize) -> f64 {
    use deai_ledger::smt::Tree;
    let key = |i: u64| Hash256::digest(&i.to_le_bytes()).0;
    let mut t = Tree::new();
    for i in 0..leaves as u64 {
        t.insert(key(i), [1; 32]);
    }
    t.root();
    let mut best = f64::INFINITY;
    for round in 0..3u64 {
        let start = Instant::now();
        for c in 0..changes as u64 {
            t.insert(
                key((c * 7919 + round) % leaves.max(1) as u64),
                [round as u8 + 2; 32],
            );
        }
        t.root();
        best = best.min(start.elapsed().as_secs_f64() * 1e6);
    }
    best
}

/// Runs the chain benchmark on validators in this process. Blocks until done.
pub fn run(o: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let keys: Vec<SigningKey> = (0..o.senders)
        .map(|i| SigningKey::from_bytes(&seed(i)))
        .collect();
    let worker = SigningKey::from_bytes(&[0x77; 32]);
    let model = Hash256::digest(b"bench-model");
    let mut opts = InitOptions {
        validators: o.validators,
        base_p2p_port: o.base_port,
        base_http_port: o.base_port + 100,
        params: Params {
            allowed_models: vec![model],
            job_timeout: 100_000,
            challenge_window: 100_000,
            ..Params::default()
        }
        .fit_periods(deai_ledger::state::DEFAULT_EPOCH_LENGTH),
        ..Default::default()
    };
    opts.chain_name = "bench".into();
    let extra: Vec<GenesisAccount> = keys
        .iter()
        .map(|k| GenesisAccount {
            address: k.verifying_key().to_bytes(),
            balance: 1_000_000_000,
            stake: 0,
        })
        .chain(std::iter::once(GenesisAccount {
            address: worker.verifying_key().to_bytes(),
            balance: 1_000_000_000,
            stake: 0,
        }))
        .collect();
    local::init_with(dir.path(), &opts, extra)?;
    let path = dir.path().to_path_buf();
    let o = o.clone();
    let report = local::runner(dir.path()).start(|ctx| async move {
        let run_opts = RunOptions {
            serve_http: false,
            ..Default::default()
        };
        let which: Vec<usize> = (0..o.validators).collect();
        let nodes = local::start_validators(&ctx, &path, &which, &run_opts).await?;
        let chain = nodes[0].app.finalized_state().chain_id();
        let mut nonces = vec![0u64; keys.len()];
        let tx = |k: &SigningKey, nonce: u64, kind: TxKind| {
            Tx {
                chain,
                from: [0; 32],
                nonce,
                fee: 1,
                kind,
            }
            .sign(k)
        };
        // Wait for the network to produce blocks.
        let t0 = Instant::now();
        while nodes[0].app.finalized_height() < 2 {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "no blocks after 60 s"
            );
            ctx.sleep(Duration::from_millis(20)).await;
        }
        // Each sender always goes to the same validator (mempools are per node).
        let submit = |sender: usize, t: SignedTx| nodes[sender % nodes.len()].app.submit(t);

        // Phase 1: transfers.
        let (tx_per_s, lat, blocks_per_s) = {
            let total = o.rate * o.seconds;
            let mut sent: HashMap<Hash256, Instant> = HashMap::new();
            let mut lat = Vec::new();
            let h0 = nodes[0].app.finalized_height();
            let start = Instant::now();
            let mut k = 0u64;
            let mut seen_h = h0;
            let mut done = 0u64;
            let mut last_final = start;
            while done < total && start.elapsed() < Duration::from_secs(o.seconds * 3 + 30) {
                let due = ((start.elapsed().as_secs_f64() * o.rate as f64) as u64).min(total);
                while k < due {
                    let s = (k as usize) % keys.len();
                    let t = tx(
                        &keys[s],
                        nonces[s],
                        TxKind::Transfer {
                            to: [1; 32],
                            amount: 1,
                        },
                    );
                    let id = t.id();
                    if submit(s, t).is_ok() {
                        nonces[s] += 1;
                        sent.insert(id, Instant::now());
                    }
                    k += 1;
                }
                let h = nodes[0].app.finalized_height();
                if h > seen_h {
                    let now = Instant::now();
                    for b in nodes[0].app.blocks(seen_h + 1, h + 1) {
                        for t in &b.txs {
                            if let Some(at) = sent.remove(&t.id()) {
                                lat.push(now.duration_since(at).as_secs_f64() * 1e3);
                                done += 1;
                                last_final = now;
                            }
                        }
                    }
                    seen_h = h;
                }
                ctx.sleep(Duration::from_millis(2)).await;
            }
            let secs = last_final.duration_since(start).as_secs_f64().max(1e-9);
            let blocks = (seen_h - h0) as f64 / secs;
            (done as f64 / secs, lat, blocks)
        };

        // Phase 2: receipts. Register a worker, open one job per receipt, then post them.
        let wn = |n: &mut u64| {
            let v = *n;
            *n += 1;
            v
        };
        let mut worker_nonce = 0u64;
        let w_stake = tx(
            &worker,
            wn(&mut worker_nonce),
            TxKind::Stake { amount: 1_000_000 },
        );
        nodes[0].app.submit(w_stake)?;
        let reg = tx(
            &worker,
            wn(&mut worker_nonce),
            TxKind::RegisterWorker {
                models: vec![model],
                profile: "deai-cpu-bi-v1".into(),
                hardware: "bench".into(),
                price_per_1k: 1,
                endpoint: "127.0.0.1:1".into(),
            },
        );
        nodes[0].app.submit(reg)?;
        let waddr = worker.verifying_key().to_bytes();
        let t1 = Instant::now();
        while nodes[0].app.finalized_state().worker(&waddr).is_none() {
            anyhow::ensure!(
                t1.elapsed() < Duration::from_secs(60),
                "worker not registered"
            );
            ctx.sleep(Duration::from_millis(20)).await;
        }
        let receipts = (o.rate / 2).max(1) * o.seconds.div_ceil(2);
        let mut jobs = Vec::new();
        for j in 0..receipts as usize {
            let s = j % keys.len();
            let job = Hash256::digest(&(j as u64).to_le_bytes());
            let t = tx(
                &keys[s],
                nonces[s],
                TxKind::OpenJob {
                    job,
                    model,
                    max_tokens: 64,
                    escrow: 1_000,
                    worker: Some(worker.verifying_key().to_bytes()),
                    app: None,
                    client: None,
                },
            );
            if submit(s, t).is_ok() {
                nonces[s] += 1;
                jobs.push(job);
            }
        }
        let t1 = Instant::now();
        while jobs
            .iter()
            .any(|j| nodes[0].app.finalized_state().job(j).is_none())
        {
            anyhow::ensure!(t1.elapsed() < Duration::from_secs(120), "jobs not opened");
            ctx.sleep(Duration::from_millis(50)).await;
        }
        let mut sent: HashMap<Hash256, Instant> = HashMap::new();
        let mut rlat = Vec::new();
        let start = Instant::now();
        let mut seen_h = nodes[0].app.finalized_height();
        let mut next = 0usize;
        let mut last_final = start;
        let rate = (o.rate / 2).max(1);
        while rlat.len() < jobs.len() && start.elapsed() < Duration::from_secs(o.seconds * 3 + 30) {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(jobs.len());
            while next < due {
                let t = tx(
                    &worker,
                    worker_nonce,
                    TxKind::PostReceipt {
                        job: jobs[next],
                        receipt: Hash256::digest(&jobs[next].0),
                        tokens: 200,
                        pointer: "http://127.0.0.1:1/v1/receipts/x".into(),
                    },
                );
                let id = t.id();
                if nodes[0].app.submit(t).is_ok() {
                    worker_nonce += 1;
                    sent.insert(id, Instant::now());
                }
                next += 1;
            }
            let h = nodes[0].app.finalized_height();
            if h > seen_h {
                let now = Instant::now();
                for b in nodes[0].app.blocks(seen_h + 1, h + 1) {
                    for t in &b.txs {
                        if let Some(at) = sent.remove(&t.id()) {
                            rlat.push(now.duration_since(at).as_secs_f64() * 1e3);
                            last_final = now;
                        }
                    }
                }
                seen_h = h;
            }
            ctx.sleep(Duration::from_millis(2)).await;
        }
        let receipts_per_s =
            rlat.len() as f64 / last_final.duration_since(start).as_secs_f64().max(1e-9);
        let root_10k = root_cost(10_000, 3_000);
        let root_1m = root_cost(1_000_000, 3_000);
        Ok::<_, anyhow::Error>(Report {
            validators: o.validators,
            offered_tx_per_s: o.rate,
            tx_per_s,
            receipts_per_s,
            finality_p50_ms: percentile(&lat, 50.0),
            finality_p99_ms: percentile(&lat, 99.0),
            receipt_finality_p50_ms: percentile(&rlat, 50.0),
            blocks_per_s,
            root_us_10k_accounts: root_10k,
            root_us_1m_accounts: root_1m,
            root_cost_ratio: root_1m / root_10k,
        })
    })?;
    Ok(report)
}
