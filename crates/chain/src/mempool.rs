//! Pending transactions, admitted after the checks that would make a block invalid.

use deai_ledger::{Address, SignedTx, State};
use deai_types::Hash256;
use std::collections::{BTreeMap, HashSet};

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("invalid transaction: {0}")]
    Invalid(String),
    #[error("nonce {got} already used (account nonce is {next})")]
    Stale { got: u64, next: u64 },
    #[error("nonce {got} too far ahead of the account nonce {next}")]
    Gap { got: u64, next: u64 },
    #[error("a transaction with this sender and nonce is already pending")]
    Duplicate,
    #[error("mempool full ({0} transactions)")]
    Full(usize),
}

#[derive(Debug)]
pub struct Mempool {
    by_sender: BTreeMap<Address, BTreeMap<u64, SignedTx>>,
    ids: HashSet<Hash256>,
    max: usize,
    per_sender: u64,
}

impl Mempool {
    /// The highest pending nonce of `who`.
    pub fn last_nonce(&self, who: &Address) -> Option<u64> {
        self.by_sender.get(who)?.keys().next_back().copied()
    }

    pub fn new(max: usize, per_sender: u64) -> Self {
        Mempool {
            by_sender: BTreeMap::new(),
            ids: HashSet::new(),
            max,
            per_sender,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn contains(&self, id: &Hash256) -> bool {
        self.ids.contains(id)
    }

    /// Admits `tx` if it would be valid on top of `state` once the sender's earlier pending
    /// transactions are in.
    pub fn insert(&mut self, tx: SignedTx, state: &State) -> Result<Hash256, Rejected> {
        let from = tx.tx.from;
        let next = state.account(&from).nonce;
        let got = tx.tx.nonce;
        if got < next {
            return Err(Rejected::Stale { got, next });
        }
        if got >= next.saturating_add(self.per_sender) {
            return Err(Rejected::Gap { got, next });
        }
        if self
            .by_sender
            .get(&from)
            .is_some_and(|m| m.contains_key(&got))
        {
            return Err(Rejected::Duplicate);
        }
        if self.ids.len() >= self.max {
            return Err(Rejected::Full(self.max));
        }
        // The sender's balance must cover the fees of everything it has pending, so an
        // account can never queue (or get finalized) more transactions than it pays for.
        let pending_fees = self.pending_fees(&from, next);
        state
            .check_tx(&tx, got, pending_fees)
            .map_err(Rejected::Invalid)?;
        let id = tx.id();
        self.ids.insert(id);
        self.by_sender.entry(from).or_default().insert(got, tx);
        Ok(id)
    }

    /// The fees of `who`'s pending transactions from nonce `next` on.
    fn pending_fees(&self, who: &Address, next: u64) -> u64 {
        self.by_sender.get(who).map_or(0, |m| {
            m.range(next..)
                .fold(0u64, |a, (_, t)| a.saturating_add(t.tx.fee))
        })
    }

    /// Up to `max` transactions that extend `state`: for each sender, its pending nonces
    /// from the account's next one without gaps and as far as its balance covers their
    /// fees (a block must not hold a fee its sender cannot pay), taken round-robin across
    /// senders.
    pub fn select(&self, state: &State, max: usize) -> Vec<SignedTx> {
        let mut queues: Vec<Vec<&SignedTx>> = Vec::new();
        for (from, txs) in &self.by_sender {
            let acct = state.account(from);
            let mut next = acct.nonce;
            let mut fees = 0u128;
            let run: Vec<&SignedTx> = txs
                .range(next..)
                .take_while(|(n, t)| {
                    fees += t.tx.fee as u128;
                    let ok = **n == next && fees <= acct.balance as u128;
                    next += 1;
                    ok
                })
                .map(|(_, t)| t)
                .collect();
            if !run.is_empty() {
                queues.push(run);
            }
        }
        let mut out = Vec::new();
        let mut round = 0;
        while out.len() < max {
            let mut any = false;
            for q in &queues {
                if let Some(t) = q.get(round) {
                    out.push((*t).clone());
                    any = true;
                    if out.len() == max {
                        break;
                    }
                }
            }
            if !any {
                break;
            }
            round += 1;
        }
        out
    }

    /// Drops what `state` has made stale (nonces below each sender's account nonce).
    pub fn prune(&mut self, state: &State) {
        let ids = &mut self.ids;
        self.by_sender.retain(|from, txs| {
            let next = state.account(from).nonce;
            let keep = txs.split_off(&next);
            for t in txs.values() {
                ids.remove(&t.id());
            }
            *txs = keep;
            !txs.is_empty()
        });
    }

    /// Removes one transaction (a proposer found it invalid) and the sender's later ones.
    pub fn evict_from(&mut self, from: &Address, nonce: u64) {
        if let Some(txs) = self.by_sender.get_mut(from) {
            for (_, t) in txs.split_off(&nonce) {
                self.ids.remove(&t.id());
            }
            if txs.is_empty() {
                self.by_sender.remove(from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deai_ledger::{Genesis, GenesisAccount, GenesisValidator, Params, Tx, TxKind};
    use ed25519_dalek::SigningKey;

    fn state(poor: &SigningKey, balance: u64) -> State {
        let v = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
        State::from_genesis(&Genesis {
            chain_name: "mempool".into(),
            accounts: vec![
                GenesisAccount {
                    address: v,
                    balance: 0,
                    stake: 100_000,
                },
                GenesisAccount {
                    address: poor.verifying_key().to_bytes(),
                    balance,
                    stake: 0,
                },
            ],
            validators: vec![GenesisValidator {
                address: v,
                endpoint: String::new(),
                p2p: String::new(),
            }],
            params: Params::default(),
            epoch_length: 1_000,
            beacon: None,
            royalties: Vec::new(),
        })
        .unwrap()
    }

    fn tx(s: &State, k: &SigningKey, nonce: u64) -> SignedTx {
        Tx {
            chain: s.chain_id(),
            from: [0; 32],
            nonce,
            fee: 1,
            kind: TxKind::Stake { amount: 1 },
        }
        .sign(k)
    }

    /// The fee-free spam attack: an account holding 3 units queues as many transactions as
    /// it likes, one fee each checked against the same balance. Only 3 get in, and a
    /// proposer never selects more than the balance pays for.
    #[test]
    fn an_account_queues_only_the_transactions_its_balance_pays_fees_for() {
        let k = SigningKey::from_bytes(&[9; 32]);
        let s = state(&k, 3);
        let mut m = Mempool::new(1_000, 100);
        for n in 0..3 {
            m.insert(tx(&s, &k, n), &s).unwrap();
        }
        let e = m.insert(tx(&s, &k, 3), &s).unwrap_err();
        assert!(e.to_string().contains("does not cover the fees"), "{e}");
        assert_eq!(m.len(), 3);
        let picked = m.select(&s, 100);
        assert_eq!(picked.len(), 3);
        s.validate_block(&picked).unwrap();
        // Once the first one (fee 1 and a stake of 1) is in, the balance of 1 pays for one
        // more: the proposer selects one, not two.
        let mut s2 = s.clone();
        s2.apply_block(1, &picked[..1]).unwrap();
        m.prune(&s2);
        let next = m.select(&s2, 100);
        assert_eq!(next.len(), 1);
        s2.validate_block(&next).unwrap();
    }
}
