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
        state.check_tx(&tx, got).map_err(Rejected::Invalid)?;
        let id = tx.id();
        self.ids.insert(id);
        self.by_sender.entry(from).or_default().insert(got, tx);
        Ok(id)
    }

    /// Up to `max` transactions that extend `state`: for each sender, its pending nonces
    /// from the account's next one without gaps, taken round-robin across senders.
    pub fn select(&self, state: &State, max: usize) -> Vec<SignedTx> {
        let mut queues: Vec<Vec<&SignedTx>> = Vec::new();
        for (from, txs) in &self.by_sender {
            let mut next = state.account(from).nonce;
            let run: Vec<&SignedTx> = txs
                .range(next..)
                .take_while(|(n, _)| {
                    let ok = **n == next;
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
