//! The test harness the ledger's integration tests share: deterministic keys, a genesis
//! with four validators, a client, a worker and a challenger, and a [`Chain`] that signs,
//! applies and audits one block at a time.
#![allow(dead_code)]

use deai_ledger::*;
use deai_types::Hash256;
use ed25519_dalek::SigningKey;

pub fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}
pub fn addr(i: u8) -> Address {
    key(i).verifying_key().to_bytes()
}

pub const MODEL: Hash256 = Hash256([7; 32]);
// Actors: 1..=4 validators, 10 client, 11 worker, 12 challenger, 13 second worker.
pub const VALS: [u8; 4] = [1, 2, 3, 4];
pub const CLIENT: u8 = 10;
pub const WORKER: u8 = 11;
pub const CHALLENGER: u8 = 12;

pub fn genesis() -> Genesis {
    let mut accounts: Vec<GenesisAccount> = VALS
        .iter()
        .map(|v| GenesisAccount {
            address: addr(*v),
            balance: 1_000_000,
            stake: 50_000,
        })
        .collect();
    for (i, bal) in [
        (CLIENT, 1_000_000),
        (WORKER, 100_000),
        (CHALLENGER, 100_000),
        (13, 100_000),
    ] {
        accounts.push(GenesisAccount {
            address: addr(i),
            balance: bal,
            stake: 0,
        });
    }
    Genesis {
        chain_name: "test".into(),
        accounts,
        validators: VALS
            .iter()
            .map(|v| GenesisValidator {
                address: addr(*v),
                endpoint: format!("v{v}"),
                p2p: String::new(),
            })
            .collect(),
        params: Params {
            allowed_models: vec![MODEL],
            ..Params::default()
        },
        epoch_length: deai_ledger::state::DEFAULT_EPOCH_LENGTH,
        beacon: None,
        royalties: Vec::new(),
    }
}

/// A chain under test: the state plus a nonce tracker.
pub struct Chain {
    pub s: State,
}

impl Chain {
    pub fn new() -> Self {
        Self::with(genesis())
    }
    pub fn with(g: Genesis) -> Self {
        Chain {
            s: State::from_genesis(&g).unwrap(),
        }
    }
    pub fn tx(&self, who: u8, nonce_offset: u64, kind: TxKind) -> SignedTx {
        Tx {
            chain: self.s.chain_id(),
            from: [0; 32],
            nonce: self.s.account(&addr(who)).nonce + nonce_offset,
            fee: 1,
            kind,
        }
        .sign(&key(who))
    }
    /// Signs one block's (who, kind) pairs, each sender's nonces counting up from its next.
    pub fn sign_block(&self, txs: Vec<(u8, TxKind)>) -> Vec<SignedTx> {
        let mut counts = std::collections::HashMap::new();
        txs.into_iter()
            .map(|(w, k)| {
                let c = counts.entry(w).or_insert(0u64);
                let t = self.tx(w, *c, k);
                *c += 1;
                t
            })
            .collect()
    }
    /// Applies one block with one transaction from each (who, kind) and returns the outcomes.
    pub fn block(&mut self, txs: Vec<(u8, TxKind)>) -> BlockResult {
        let signed = self.sign_block(txs);
        let h = self.s.height() + 1;
        let r = self.s.apply_block(h, &signed).unwrap();
        self.s.audit().unwrap();
        r
    }
    pub fn ok(&mut self, who: u8, kind: TxKind) {
        let r = self.block(vec![(who, kind)]);
        assert_eq!(r.outcomes[0].error, None, "tx failed");
    }
    pub fn fails(&mut self, who: u8, kind: TxKind) -> String {
        let r = self.block(vec![(who, kind)]);
        r.outcomes[0].error.clone().expect("tx should fail")
    }
    /// Validator 1 proposes `change`, all four validators vote yes, and the chain runs past
    /// the vote and the execution delay; returns the proposal id.
    pub fn pass(&mut self, change: ParamChange) -> u64 {
        self.ok(1, TxKind::Propose { change });
        let id = self.s.meta().next_proposal - 1;
        self.block(
            VALS.iter()
                .map(|v| {
                    (
                        *v,
                        TxKind::Vote {
                            proposal: id,
                            yes: true,
                        },
                    )
                })
                .collect(),
        );
        let p = self.s.params().clone();
        self.empty_blocks(p.voting_period + p.execution_delay + 1);
        id
    }
    pub fn empty_blocks(&mut self, n: u64) {
        for _ in 0..n {
            self.block(vec![]);
        }
    }
    pub fn bal(&self, who: u8) -> u64 {
        self.s.account(&addr(who)).balance
    }
    pub fn setup_worker(&mut self, who: u8, price: u64) {
        self.ok(who, TxKind::Stake { amount: 10_000 });
        self.ok(
            who,
            TxKind::RegisterWorker {
                models: vec![MODEL],
                profile: "deai-cpu-bi-v1".into(),
                hardware: "2 vCPU".into(),
                price_per_1k: price,
                endpoint: "127.0.0.1:1".into(),
            },
        );
    }
    pub fn open_and_receipt(&mut self, job: Hash256, escrow: u64, tokens: u32) {
        self.ok(
            CLIENT,
            TxKind::OpenJob {
                job,
                model: MODEL,
                max_tokens: 100,
                escrow,
                worker: Some(addr(WORKER)),
                app: None,
                client: None,
            },
        );
        self.ok(
            WORKER,
            TxKind::PostReceipt {
                job,
                receipt: Hash256([9; 32]),
                tokens,
                pointer: "http://w/receipts/1".into(),
            },
        );
    }
}
