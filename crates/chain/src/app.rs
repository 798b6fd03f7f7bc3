//! The consensus application: builds and verifies blocks by executing them on the ledger,
//! and applies finalized blocks, in order, to the finalized state.
//!
//! Simplex proposes on top of blocks that are notarized but not yet final, so the app keeps
//! one ledger [`State`] per known block (cloning a state is O(1)). Verification re-executes
//! the block on its parent's state and compares the state root, so every honest node gives
//! the same answer. A block is final only when marshal delivers it; then its state becomes
//! the finalized state that queries and proofs are served from.

use crate::block::{from_digest, to_digest, Block, Digest, Header};
use crate::mempool::{Mempool, Rejected};
use commonware_actor::Feedback;
use commonware_consensus::marshal::{ancestry::Ancestry, Update};
use commonware_consensus::simplex::types::Context;
use commonware_consensus::Reporter;
use commonware_cryptography::{ed25519::PublicKey, Digested, Digestible};
use commonware_utils::Acknowledgement;
use deai_ledger::{Address, BlockError, SignedTx, State, TxKind, TxOutcome};
use deai_types::Hash256;
use futures::channel::mpsc;
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::scheme::Scheme;
pub type Ctx = Context<Digest, PublicKey>;

/// A finalized block as the node remembers it (for the API and tests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FinalizedBlock {
    pub digest: Hash256,
    pub header: Header,
    pub txs: Vec<SignedTx>,
    pub outcomes: Vec<TxOutcome>,
    pub events: Vec<String>,
}

/// A finalized transaction where it landed.
#[derive(Clone, Debug)]
pub struct TxAt {
    pub height: u64,
    pub index: u32,
    pub tx: SignedTx,
    pub outcome: TxOutcome,
}

struct Entry {
    height: u64,
    state: State,
    outcomes: Vec<TxOutcome>,
    events: Vec<String>,
}

struct Inner {
    /// Post-state of every known unfinalized block, plus the finalized tip.
    states: HashMap<Digest, Entry>,
    finalized: State,
    fin_digest: Digest,
    /// Finalized blocks, index = height (0 = genesis).
    log: Vec<FinalizedBlock>,
    /// Transaction id -> (height, index) of finalized transactions.
    tx_index: HashMap<Hash256, (u64, u32)>,
    /// Explorer indexes over finalized blocks (see [`Indexes`]).
    idx: Indexes,
    mempool: Mempool,
}

/// Secondary indexes over the finalized log, for the explorer's queries: each maps a key to
/// the positions `(height, index)` of the finalized transactions that touch it, in order.
/// They are rebuilt as blocks are applied (after a restart, while marshal replays).
#[derive(Default)]
struct Indexes {
    /// Sender, and recipient of a transfer.
    account_txs: HashMap<Address, Vec<(u64, u32)>>,
    /// Open, receipt, challenge and verdict transactions of a job.
    job_txs: HashMap<Hash256, Vec<(u64, u32)>>,
    /// Block digest -> height.
    digests: HashMap<Hash256, u64>,
    /// Jobs in the order they were opened (by height, then position in the block).
    jobs_opened: Vec<Hash256>,
    /// This node's wall clock (unix ms) when it applied each finalized block, by height
    /// (`None` for genesis). Local observation only, never part of consensus: it feeds the
    /// explorer's finality-time and throughput figures.
    observed_ms: Vec<Option<u64>>,
    txs_total: u64,
}

impl Indexes {
    fn add_block(
        &mut self,
        height: u64,
        digest: Hash256,
        txs: &[SignedTx],
        outcomes: &[TxOutcome],
        now_ms: Option<u64>,
    ) {
        self.digests.insert(digest, height);
        self.observed_ms.push(now_ms);
        for (i, t) in txs.iter().enumerate() {
            if let (TxKind::OpenJob { job, .. }, Some(None)) =
                (&t.tx.kind, outcomes.get(i).map(|o| &o.error))
            {
                self.jobs_opened.push(*job);
            }
            let pos = (height, i as u32);
            self.txs_total += 1;
            self.account_txs.entry(t.tx.from).or_default().push(pos);
            match &t.tx.kind {
                TxKind::Transfer { to, .. } if *to != t.tx.from => {
                    self.account_txs.entry(*to).or_default().push(pos)
                }
                TxKind::OpenJob { job, .. }
                | TxKind::PostReceipt { job, .. }
                | TxKind::Challenge { job, .. }
                | TxKind::Verdict { job, .. }
                | TxKind::VerdictCommit { job, .. }
                | TxKind::VerdictReveal { job, .. } => {
                    self.job_txs.entry(*job).or_default().push(pos)
                }
                _ => {}
            }
        }
    }
}

/// Recent finalization rates as this node observed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Observed {
    /// Median wall time between consecutive finalized blocks, over the last 100.
    pub finality_ms: Option<f64>,
    /// Blocks and transactions finalized per second over the last 60 s of observed blocks
    /// (at most the last 10,000 blocks).
    pub blocks_per_s: Option<f64>,
    pub txs_per_s: Option<f64>,
}

fn now_ms() -> Option<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// The application. Clones share one state.
#[derive(Clone)]
pub struct App {
    inner: Arc<Mutex<Inner>>,
    genesis: Arc<Block>,
    max_block_txs: usize,
    /// Fault injection for tests: propose blocks whose state root is wrong.
    bad_proposer: Arc<std::sync::atomic::AtomicBool>,
    /// Checks equivocation evidence in transactions (the ledger cannot).
    evidence: Arc<crate::evidence::EvidenceCheck>,
    /// Validator sets by epoch, registered as boundary blocks are finalized.
    epochs: crate::epoch::Epochs,
}

impl App {
    pub fn new(genesis_state: State, max_block_txs: usize, mempool: Mempool) -> Self {
        let genesis = Block::genesis(genesis_state.chain_id(), genesis_state.root());
        let gd = to_digest(genesis.digest());
        let epochs = crate::epoch::Epochs::new(&genesis_state, gd);
        let evidence = Arc::new(crate::evidence::EvidenceCheck::new(epochs.clone()));
        let mut states = HashMap::new();
        states.insert(
            gd,
            Entry {
                height: 0,
                state: genesis_state.clone(),
                outcomes: vec![],
                events: vec![],
            },
        );
        let log = vec![FinalizedBlock {
            digest: genesis.digest(),
            header: genesis.header,
            txs: vec![],
            outcomes: vec![],
            events: vec!["genesis".into()],
        }];
        let mut idx = Indexes::default();
        idx.add_block(0, genesis.digest(), &[], &[], None);
        App {
            inner: Arc::new(Mutex::new(Inner {
                states,
                finalized: genesis_state,
                fin_digest: gd,
                log,
                tx_index: HashMap::new(),
                idx,
                mempool,
            })),
            genesis: Arc::new(genesis),
            max_block_txs: max_block_txs.min(deai_ledger::state::MAX_BLOCK_TXS),
            bad_proposer: Default::default(),
            evidence,
            epochs,
        }
    }

    /// Fault injection (tests and fault drills): from now on this node proposes blocks with a
    /// corrupted state root, which honest validators must refuse to vote for.
    pub fn inject_bad_proposals(&self, on: bool) {
        self.bad_proposer
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the state it guards is still consistent
        // (every mutation below is completed before the guard drops), so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The validator sets of the epochs this node has reached.
    pub fn epochs(&self) -> crate::epoch::Epochs {
        self.epochs.clone()
    }

    pub fn genesis_block(&self) -> Block {
        (*self.genesis).clone()
    }

    /// The finalized state (an O(1) clone).
    pub fn finalized_state(&self) -> State {
        self.lock().finalized.clone()
    }

    pub fn finalized_height(&self) -> u64 {
        self.lock().finalized.height()
    }

    /// Finalized block at `height` (0 = genesis).
    pub fn block(&self, height: u64) -> Option<FinalizedBlock> {
        self.lock().log.get(height as usize).cloned()
    }

    /// Finalized blocks `from..to` (clamped).
    pub fn blocks(&self, from: u64, to: u64) -> Vec<FinalizedBlock> {
        let inner = self.lock();
        let to = (to as usize).min(inner.log.len());
        let from = (from as usize).min(to);
        inner.log[from..to].to_vec()
    }

    /// Where a finalized transaction landed, and what it did.
    pub fn tx_status(&self, id: &Hash256) -> Option<(u64, TxOutcome)> {
        let inner = self.lock();
        let (h, i) = *inner.tx_index.get(id)?;
        let out = inner.log.get(h as usize)?.outcomes.get(i as usize)?.clone();
        Some((h, out))
    }

    /// A finalized transaction with its position and outcome.
    pub fn tx(&self, id: &Hash256) -> Option<(u64, u32, SignedTx, TxOutcome)> {
        let inner = self.lock();
        let (h, i) = *inner.tx_index.get(id)?;
        let b = inner.log.get(h as usize)?;
        Some((
            h,
            i,
            b.txs.get(i as usize)?.clone(),
            b.outcomes.get(i as usize)?.clone(),
        ))
    }

    fn txs_at(inner: &Inner, positions: &[(u64, u32)]) -> Vec<TxAt> {
        positions
            .iter()
            .filter_map(|&(h, i)| {
                let b = inner.log.get(h as usize)?;
                Some(TxAt {
                    height: h,
                    index: i,
                    tx: b.txs.get(i as usize)?.clone(),
                    outcome: b.outcomes.get(i as usize)?.clone(),
                })
            })
            .collect()
    }

    /// Finalized transactions sent by `a` or transferring to it, newest first: `offset`
    /// skipped, at most `limit`; and how many there are in all.
    pub fn account_txs(&self, a: &Address, offset: usize, limit: usize) -> (usize, Vec<TxAt>) {
        let inner = self.lock();
        let Some(all) = inner.idx.account_txs.get(a) else {
            return (0, vec![]);
        };
        let page: Vec<(u64, u32)> = all.iter().rev().skip(offset).take(limit).copied().collect();
        (all.len(), Self::txs_at(&inner, &page))
    }

    /// Whether any finalized transaction was sent by or to `a`.
    pub fn account_seen(&self, a: &Address) -> bool {
        self.lock().idx.account_txs.contains_key(a)
    }

    /// The finalized transactions that touched job `job`, oldest first.
    pub fn job_trail(&self, job: &Hash256) -> Vec<TxAt> {
        let inner = self.lock();
        match inner.idx.job_txs.get(job) {
            Some(all) => Self::txs_at(&inner, all),
            None => vec![],
        }
    }

    /// Height of the finalized block with this digest.
    pub fn height_of(&self, digest: &Hash256) -> Option<u64> {
        self.lock().idx.digests.get(digest).copied()
    }

    /// When this node applied the finalized block at `height` (unix ms; local observation).
    pub fn observed_ms(&self, height: u64) -> Option<u64> {
        self.lock()
            .idx
            .observed_ms
            .get(height as usize)
            .copied()
            .flatten()
    }

    /// Job ids newest first (by the block that opened them, then position in it): `offset`
    /// skipped, at most `limit`; and how many jobs there are in all.
    pub fn jobs_newest(&self, offset: usize, limit: usize) -> (usize, Vec<Hash256>) {
        let inner = self.lock();
        let all = &inner.idx.jobs_opened;
        let page = all.iter().rev().skip(offset).take(limit).copied().collect();
        (all.len(), page)
    }

    /// Finalized transactions in all.
    pub fn txs_total(&self) -> u64 {
        self.lock().idx.txs_total
    }

    /// Finality time and throughput over recent blocks, from this node's observations.
    pub fn observed(&self) -> Observed {
        let inner = self.lock();
        let obs = &inner.idx.observed_ms;
        let tip = obs.len();
        let recent: Vec<(usize, u64)> = (tip.saturating_sub(101)..tip)
            .filter_map(|h| obs[h].map(|t| (h, t)))
            .collect();
        let mut gaps: Vec<u64> = recent
            .windows(2)
            .filter(|w| w[1].0 == w[0].0 + 1)
            .map(|w| w[1].1.saturating_sub(w[0].1))
            .collect();
        gaps.sort_unstable();
        let finality_ms = (!gaps.is_empty()).then(|| gaps[gaps.len() / 2] as f64);
        let (mut blocks_per_s, mut txs_per_s) = (None, None);
        if let Some(&(_, last)) = recent.last() {
            let mut first = last;
            let (mut blocks, mut txs) = (0u64, 0u64);
            let mut h = tip;
            // At most the last 10k blocks: after a fast replay every block looks recent.
            while h > 1 && tip - h < 10_000 {
                h -= 1;
                match obs[h] {
                    Some(t) if last.saturating_sub(t) <= 60_000 => {
                        first = t;
                        blocks += 1;
                        txs += inner.log.get(h).map_or(0, |b| b.txs.len() as u64);
                    }
                    _ => break,
                }
            }
            let span = last.saturating_sub(first);
            if blocks > 1 && span > 0 {
                let secs = span as f64 / 1000.0;
                blocks_per_s = Some((blocks - 1) as f64 / secs);
                txs_per_s = Some(txs as f64 / secs);
            }
        }
        Observed {
            finality_ms,
            blocks_per_s,
            txs_per_s,
        }
    }

    /// The next nonce `who` should use: past its finalized nonce and its pending ones here.
    pub fn next_nonce(&self, who: &Address) -> u64 {
        let inner = self.lock();
        let fin = inner.finalized.account(who).nonce;
        inner
            .mempool
            .last_nonce(who)
            .map_or(fin, |n| fin.max(n + 1))
    }

    pub fn is_pending(&self, id: &Hash256) -> bool {
        self.lock().mempool.contains(id)
    }

    pub fn mempool_len(&self) -> usize {
        self.lock().mempool.len()
    }

    /// Admits a transaction to this node's mempool (checked against the finalized state).
    pub fn submit(&self, tx: SignedTx) -> Result<Hash256, Rejected> {
        // A transaction given as JSON must still fit the canonical decoder's limits, or the
        // blocks carrying it would not decode on other nodes.
        SignedTx::decode(&tx.to_bytes())
            .map_err(|e| Rejected::Invalid(format!("exceeds the encoding limits: {e}")))?;
        let next_epoch = self.epochs.epoch_of(self.finalized_height() + 1);
        self.evidence
            .check_tx(&tx, next_epoch)
            .map_err(Rejected::Invalid)?;
        let mut inner = self.lock();
        if let TxKind::ReportEquivocation { offender, view, .. } = &tx.tx.kind {
            // Every honest validator reports the same evidence: refuse the late ones here
            // rather than let them fail on chain and pay a fee.
            let done = inner
                .finalized
                .validator(offender)
                .is_some_and(|v| v.slashed_views.binary_search(view).is_ok());
            if done {
                return Err(Rejected::Invalid(format!(
                    "the validator was already slashed for view {view}"
                )));
            }
        }
        let id = tx.id();
        if inner.tx_index.contains_key(&id) {
            return Err(Rejected::Stale {
                got: tx.tx.nonce,
                next: inner.finalized.account(&tx.tx.from).nonce,
            });
        }
        let state = inner.finalized.clone();
        inner.mempool.insert(tx, &state)
    }

    /// The state after `ancestry`'s first block, executing any blocks we have not seen
    /// (e.g. after a restart or a partition) from the nearest known ancestor.
    async fn state_of(&self, mut ancestry: impl Ancestry<Block>) -> Option<State> {
        let mut chain: Vec<Digested<Block>> = Vec::new();
        let base = loop {
            let b = ancestry.next().await?;
            {
                let inner = self.lock();
                if let Some(e) = inner.states.get(&b.digest()) {
                    break e.state.clone();
                }
                if b.inner().height() <= inner.finalized.height() {
                    // Conflicts with (or predates) the finalized chain.
                    return None;
                }
            }
            chain.push(b);
        };
        let mut state = base;
        for b in chain.into_iter().rev() {
            let (outcomes, events) = execute(&self.evidence, &mut state, b.inner()).ok()?;
            self.remember(b.digest(), &state, outcomes, events);
        }
        Some(state)
    }

    fn remember(
        &self,
        digest: Digest,
        state: &State,
        outcomes: Vec<TxOutcome>,
        events: Vec<String>,
    ) {
        self.lock().states.insert(
            digest,
            Entry {
                height: state.height(),
                state: state.clone(),
                outcomes,
                events,
            },
        );
    }

    /// Builds a block on the first block of `ancestry` from this node's mempool.
    async fn build(&self, view: u64, ancestry: impl Ancestry<Block>) -> Option<Digested<Block>> {
        let parent = ancestry.peek()?.clone();
        let parent_state = self.state_of(ancestry).await?;
        let height = parent.inner().height() + 1;
        let mut txs = self
            .lock()
            .mempool
            .select(&parent_state, self.max_block_txs);
        // The mempool admitted these against an older state; drop any that no longer fit
        // (e.g. governance raised the minimum fee) rather than propose an invalid block.
        let (state, result) = loop {
            let mut s = parent_state.clone();
            match s.apply_block(height, &txs) {
                Ok(r) => break (s, r),
                Err(BlockError::Tx { index, reason }) => {
                    tracing::debug!(index, reason, "dropping transaction from proposal");
                    let bad = txs[index].tx.clone();
                    self.lock().mempool.evict_from(&bad.from, bad.nonce);
                    txs.retain(|t| !(t.tx.from == bad.from && t.tx.nonce >= bad.nonce));
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot build on parent");
                    return None;
                }
            }
        };
        let block = Block::new(
            from_digest(&parent.digest()),
            height,
            view,
            txs,
            result.state_root,
        );
        let digest = to_digest(block.digest());
        self.remember(digest, &state, result.outcomes, result.events);
        Some(Digested::precomputed(block, digest))
    }

    /// Verifies the first block of `ancestry` against its parent's state.
    async fn check(&self, mut ancestry: impl Ancestry<Block>) -> bool {
        let Some(block) = ancestry.next().await else {
            return false;
        };
        if self.lock().states.contains_key(&block.digest()) {
            return true;
        }
        let Some(parent) = ancestry.peek().cloned() else {
            return false;
        };
        if block.inner().height() != parent.inner().height() + 1
            || block.inner().parent() != from_digest(&parent.digest())
        {
            return false;
        }
        let Some(mut state) = self.state_of(ancestry).await else {
            return false;
        };
        match execute(&self.evidence, &mut state, block.inner()) {
            Ok((outcomes, events)) => {
                self.remember(block.digest(), &state, outcomes, events);
                true
            }
            Err(e) => {
                tracing::warn!(height = block.inner().height(), e, "rejecting block");
                false
            }
        }
    }

    /// Applies the next finalized block. Blocks at or below the finalized height are ignored
    /// (marshal may redeliver after a restart).
    pub fn apply_finalized(&self, b: &Block) -> Result<(), String> {
        let digest = to_digest(b.digest());
        let mut inner = self.lock();
        let fh = inner.finalized.height();
        if b.height() <= fh {
            return Ok(());
        }
        if b.height() != fh + 1 || to_digest(b.parent()) != inner.fin_digest {
            return Err(format!(
                "finalized block {} does not extend the finalized tip {fh}",
                b.height()
            ));
        }
        let (state, outcomes, events) = match inner.states.get(&digest) {
            Some(e) => (e.state.clone(), e.outcomes.clone(), e.events.clone()),
            None => {
                let mut s = inner.finalized.clone();
                let (o, ev) = execute(&self.evidence, &mut s, b)?;
                (s, o, ev)
            }
        };
        for (i, t) in b.txs.iter().enumerate() {
            inner.tx_index.insert(t.id(), (b.height(), i as u32));
        }
        inner
            .idx
            .add_block(b.height(), b.digest(), &b.txs, &outcomes, now_ms());
        inner.mempool.prune(&state);
        inner.finalized = state.clone();
        inner.fin_digest = digest;
        inner.log.push(FinalizedBlock {
            digest: b.digest(),
            header: b.header,
            txs: b.txs.clone(),
            outcomes,
            events,
        });
        let h = b.height();
        if state.is_epoch_end(h) {
            // Before marshal hears the acknowledgement: the next epoch's certificates must
            // verify from the moment it starts.
            self.epochs
                .insert(self.epochs.epoch_of(h) + 1, &state, digest);
        }
        inner.states.retain(|_, e| e.height > h);
        inner.states.insert(
            digest,
            Entry {
                height: h,
                state,
                outcomes: vec![],
                events: vec![],
            },
        );
        Ok(())
    }
}

/// Executes `b` on `state` (which must be its parent's post-state) and checks the root.
fn execute(
    evidence: &crate::evidence::EvidenceCheck,
    state: &mut State,
    b: &Block,
) -> Result<(Vec<TxOutcome>, Vec<String>), String> {
    evidence.check_txs(&b.txs, b.height())?;
    let r = state
        .apply_block(b.height(), &b.txs)
        .map_err(|e| e.to_string())?;
    if r.state_root != b.header.state_root {
        return Err(format!(
            "state root {} but the block claims {}",
            r.state_root.short(),
            b.header.state_root.short()
        ));
    }
    Ok((r.outcomes, r.events))
}

impl<E: Send + 'static> commonware_consensus::Application<E> for App {
    type SigningScheme = Scheme;
    type Context = Ctx;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        context: (E, Ctx),
        ancestry: impl Ancestry<Block>,
        _input: (),
    ) -> Option<Digested<Block>> {
        self.build(context.1.round.view().get(), ancestry).await
    }

    async fn verify(&mut self, _context: (E, Ctx), ancestry: impl Ancestry<Block>) -> bool {
        self.check(ancestry).await
    }
}

/// Marshal's reporter: forwards finalized blocks to [`run_finalizer`].
#[derive(Clone)]
pub struct Finalizer {
    tx: mpsc::UnboundedSender<Update<Block>>,
}

impl Finalizer {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Update<Block>>) {
        let (tx, rx) = mpsc::unbounded();
        (Finalizer { tx }, rx)
    }
}

impl Reporter for Finalizer {
    type Activity = Update<Block>;
    fn report(&mut self, activity: Update<Block>) -> Feedback {
        // A closed receiver means the node is shutting down; the block stays unacknowledged
        // and marshal redelivers it after a restart.
        let _ = self.tx.unbounded_send(activity);
        Feedback::Ok
    }
}

/// Applies marshal's finalized blocks in order, acknowledging each after it is applied (so a
/// crash before the acknowledgement replays it). After an epoch's last block (whose
/// application registers the next epoch's set) it calls `on_epoch` with the next epoch.
pub async fn run_finalizer(
    app: App,
    mut rx: mpsc::UnboundedReceiver<Update<Block>>,
    on_epoch: impl Fn(u64),
) {
    let epochs = app.epochs();
    while let Some(update) = rx.next().await {
        if let Update::Block(b, ack) = update {
            match app.apply_finalized(b.inner()) {
                Ok(()) => {
                    ack.acknowledge();
                    let h = b.inner().height();
                    if h == epochs.last(epochs.epoch_of(h)) {
                        on_epoch(epochs.epoch_of(h) + 1);
                    }
                }
                // Cannot happen with honest 2f+1: consensus finalized a block whose
                // execution fails here. Stop applying rather than diverge; the node keeps
                // serving the last good state.
                Err(e) => {
                    tracing::error!(e, "finalized block failed to apply; halting execution");
                    return;
                }
            }
        }
    }
}
