//! The data of `deai bench explorer`: a finalized chain of any length, built without consensus
//! by executing real signed transactions block by block through [`App::apply_finalized`]
//! (the path finalized blocks take on a node), so the explorer's queries can be timed
//! against 100k blocks and 10k jobs with their receipts.

use deai_chain::{App, Block, Mempool};
use deai_ledger::{Genesis, GenesisAccount, Params, State, Tx, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;

/// A chain built by [`populate`].
pub struct Populated {
    pub app: App,
    /// The account that opened every job (and sent every transaction).
    pub client: [u8; 32],
    /// A transaction and a job to look up.
    pub some_tx: Hash256,
    pub some_job: Hash256,
}

/// `blocks` finalized blocks on top of genesis: a worker registers in block 1, then `jobs`
/// escrowed jobs are opened for it, `per_block` to a block, and it posts each one's receipt
/// in the next block.
pub fn populate(blocks: u64, jobs: u64, per_block: u64) -> anyhow::Result<Populated> {
    anyhow::ensure!(per_block > 0, "per_block must be positive");
    anyhow::ensure!(
        jobs.div_ceil(per_block) < blocks,
        "{jobs} jobs at {per_block} a block need more than {blocks} blocks"
    );
    let key = SigningKey::from_bytes(&[0x5e; 32]);
    let client = key.verifying_key().to_bytes();
    let worker_key = SigningKey::from_bytes(&[0x6e; 32]);
    let worker = worker_key.verifying_key().to_bytes();
    let model = Hash256::digest_parts("deai-bench-explorer-model", &[]);
    let genesis = Genesis {
        chain_name: "bench-explorer".into(),
        accounts: vec![
            GenesisAccount {
                address: client,
                balance: 1 << 50,
                stake: 0,
            },
            GenesisAccount {
                address: worker,
                balance: 1 << 40,
                stake: 1 << 30,
            },
        ],
        validators: vec![],
        params: Params {
            allowed_models: vec![model],
            // Jobs stay receipted for the whole chain: no expiry or settlement sweeps.
            job_timeout: blocks + 10,
            challenge_window: blocks + 10,
            verdict_window: blocks + 10,
            ..Params::default()
        }
        .fit_periods(deai_ledger::state::DEFAULT_EPOCH_LENGTH),
        epoch_length: deai_ledger::state::DEFAULT_EPOCH_LENGTH,
        beacon: None,
        royalties: Vec::new(),
    };
    let mut state = State::from_genesis(&genesis).map_err(anyhow::Error::msg)?;
    let chain = state.chain_id();
    let app = App::new(
        state.clone(),
        deai_ledger::state::MAX_BLOCK_TXS,
        Mempool::new(16, 16),
    );
    let mut parent = app.genesis_block().digest();
    let (mut nonce, mut opened, mut worker_nonce) = (0u64, 0u64, 0u64);
    let mut to_receipt: Vec<Hash256> = Vec::new();
    let sign_worker = |nonce: u64, kind: TxKind| {
        Tx {
            chain,
            from: worker,
            nonce,
            fee: 1,
            kind,
        }
        .sign(&worker_key)
    };
    let (mut some_tx, mut some_job) = (Hash256::default(), Hash256::default());
    for height in 1..=blocks {
        let mut txs = Vec::new();
        if height == 1 {
            txs.push(sign_worker(
                0,
                TxKind::RegisterWorker {
                    models: vec![model],
                    profile: deai_ledger::state::DEFAULT_PROFILE.into(),
                    hardware: "none".into(),
                    price_per_1k: 1,
                    endpoint: "http://127.0.0.1:9/".into(),
                },
            ));
            worker_nonce = 1;
        }
        for job in std::mem::take(&mut to_receipt) {
            let receipt = Hash256::digest_parts("deai-bench-explorer-receipt", &[job.as_bytes()]);
            txs.push(sign_worker(
                worker_nonce,
                TxKind::PostReceipt {
                    job,
                    receipt,
                    tokens: 48,
                    pointer: format!("http://127.0.0.1:9/worker/v1/receipts/{job}"),
                },
            ));
            worker_nonce += 1;
        }
        let mut opening = 0;
        while opened < jobs && opening < per_block && height > 1 {
            let job = Hash256::digest_parts("deai-bench-explorer-job", &[&opened.to_le_bytes()]);
            let tx = Tx {
                chain,
                from: client,
                nonce,
                fee: 1,
                kind: TxKind::OpenJob {
                    job,
                    model,
                    max_tokens: 64,
                    escrow: 100,
                    worker: Some(worker),
                    app: None,
                    client: None,
                },
            }
            .sign(&key);
            if opened == jobs / 2 {
                (some_tx, some_job) = (tx.id(), job);
            }
            txs.push(tx);
            to_receipt.push(job);
            nonce += 1;
            opened += 1;
            opening += 1;
        }
        let r = state
            .apply_block(height, &txs)
            .map_err(|e| anyhow::anyhow!("block {height}: {e}"))?;
        if let Some(bad) = r.outcomes.iter().find_map(|o| o.error.clone()) {
            anyhow::bail!("block {height}: a transaction failed: {bad}");
        }
        let block = Block::new(parent, height, height, txs, r.state_root);
        parent = block.digest();
        app.apply_finalized(&block).map_err(anyhow::Error::msg)?;
    }
    Ok(Populated {
        app,
        client,
        some_tx,
        some_job,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populates_blocks_jobs_and_indexes() {
        let p = populate(50, 30, 4).unwrap();
        assert_eq!(p.app.finalized_height(), 50);
        let s = p.app.finalized_state();
        assert_eq!(s.jobs().count(), 30);
        assert!(s
            .jobs()
            .all(|(_, j)| j.status == deai_ledger::state::JobStatus::Receipted));
        // A registration, 30 opens and 30 receipts.
        assert_eq!(p.app.txs_total(), 61);
        let (total, page) = p.app.account_txs(&p.client, 0, 5);
        assert_eq!(total, 30);
        // Newest first: the last job opened is in block 9 (30 jobs at 4 a block from 2).
        assert_eq!(page[0].height, 9);
        assert!(p.app.tx(&p.some_tx).is_some());
        let trail = p.app.job_trail(&p.some_job);
        assert_eq!(trail.len(), 2, "opened, then receipted");
        assert_eq!(trail[1].height, trail[0].height + 1);
        // The open-order index: newest first, the same order as sorting by open height.
        let (total, newest) = p.app.jobs_newest(0, 5);
        assert_eq!(total, 30);
        let latest = s.jobs().map(|(_, j)| j.opened_at).max().unwrap();
        assert_eq!(s.job(&newest[0]).unwrap().opened_at, latest);
        let heights: Vec<u64> = newest
            .iter()
            .map(|id| s.job(id).unwrap().opened_at)
            .collect();
        assert!(heights.windows(2).all(|w| w[0] >= w[1]), "{heights:?}");
        let (_, rest) = p.app.jobs_newest(28, 5);
        assert_eq!(rest.len(), 2, "the last page holds what is left");
        assert!(p.app.jobs_newest(30, 5).1.is_empty());
        assert!(
            populate(8, 30, 4).is_err(),
            "not enough blocks for the jobs"
        );
    }
}
