//! One validator, assembled from commonware components: storage archives, marshal
//! (ordered finalized blocks and backfill), buffered broadcast of full blocks, a p2p
//! resolver, the simplex engine, and the deai [`App`]. Generic over the runtime
//! (deterministic in tests, tokio in production) and the p2p network (simulated or
//! authenticated).

use crate::app::{run_finalizer, App, Finalizer};
use crate::block::{Block, Digest};
use crate::epoch::{EpochProvider, Epochs};
use crate::mempool::Mempool;
use crate::scheme::Scheme;
use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{
        self, core::Actor as MarshalActor, resolver::p2p as marshal_resolver, standard::Inline,
    },
    simplex::{
        self,
        config::{ForwardPolicy, SkipBudget, SkipPolicy},
        elector::RoundRobin,
    },
    types::{Epoch, FixedEpocher, Height, ViewDelta},
};
use commonware_cryptography::{
    ed25519::{PrivateKey, PublicKey},
    Sha256, Signer,
};
use commonware_p2p::utils::mux::{Builder as _, MuxHandle, Muxer};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{buffer::paged::CacheRef, Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::{ordered::Set, NZDuration, NZUsize, NZU16, NZU64};
use deai_ledger::State;
use futures::StreamExt;
use rand_core_cw::CryptoRng;
use std::sync::Arc;
use std::time::Duration;

pub use crate::scheme::{address, private_key, public_key, NAMESPACE};

/// p2p channel ids.
pub const CH_VOTES: u64 = 0;
pub const CH_CERTS: u64 = 1;
pub const CH_RESOLVER: u64 = 2;
pub const CH_BACKFILL: u64 = 3;
pub const CH_BROADCAST: u64 = 4;
pub const CHANNELS: [u64; 5] = [CH_VOTES, CH_CERTS, CH_RESOLVER, CH_BACKFILL, CH_BROADCAST];

/// The consensus set that finalizes the block after `state` (the genesis set, for a genesis
/// state), sorted.
pub fn participants(state: &State) -> Set<PublicKey> {
    crate::epoch::keys(state.validator_set())
}

/// Called with each epoch's set as this node enters it (to track p2p peers).
pub type OnEpoch = Arc<dyn Fn(&crate::epoch::EpochSet) + Send + Sync>;

pub struct Channels<S, R> {
    pub votes: (S, R),
    pub certs: (S, R),
    pub resolver: (S, R),
    pub backfill: (S, R),
    pub broadcast: (S, R),
}

pub struct NodeConfig {
    pub signer: PrivateKey,
    /// Prefix of this node's storage partitions.
    pub partition: String,
    pub genesis_state: State,
    pub mempool: Mempool,
    pub max_block_txs: usize,
    pub leader_timeout: Duration,
    /// Told of every epoch this node enters, the current one first (after a restart too).
    pub on_epoch: Option<OnEpoch>,
}

/// Proof that a validator signed two conflicting messages in one view, as simplex reported
/// it (the commonware encoding of the activity, which anyone can re-verify).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evidence {
    #[serde(with = "hex_bytes32")]
    pub offender: [u8; 32],
    pub kind: &'static str,
    pub epoch: u64,
    pub view: u64,
    /// The ledger's round id ([`crate::evidence::round_id`]) the report names.
    pub round: u64,
    pub encoded: String,
}

mod hex_bytes32 {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

/// A simplex reporter that keeps equivocation evidence and reports it on chain
/// (`ReportEquivocation`, signed with this validator's key) so the offender is slashed.
#[derive(Clone)]
pub struct EvidenceRecorder {
    epochs: Epochs,
    log: std::sync::Arc<std::sync::Mutex<Vec<Evidence>>>,
    app: App,
    reporter: std::sync::Arc<ed25519_dalek::SigningKey>,
    /// Reports this node submitted that are not yet on chain, by (offender, round id).
    reported: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Reported, Pending>>>,
}

/// An (offender, round id) pair.
type Reported = ([u8; 32], u64);

/// A submitted report: when, how often, and the evidence to submit again.
struct Pending {
    /// Finalized height when last submitted (or refused).
    at: u64,
    tries: u32,
    evidence: Vec<u8>,
    /// The transaction last submitted, if the mempool took it.
    tx: Option<deai_types::Hash256>,
}

/// Blocks after which a report that is still not on chain is submitted again (it was dropped
/// from a mempool, or another transaction signed with this key took its nonce).
pub const REPORT_RETRY_BLOCKS: u64 = 16;
/// Submissions of one report before this node gives up on it.
pub const REPORT_MAX_TRIES: u32 = 5;

/// What to do with a report of (`offender`, `round`) given the finalized `state` and whether
/// the last submission is still in this node's mempool.
#[derive(Debug, PartialEq, Eq)]
enum ReportStep {
    /// On chain already, or no longer slashable: forget it.
    Done,
    /// Submitted recently: wait.
    Wait,
    Submit,
}

fn report_step(
    state: &deai_ledger::State,
    key: &Reported,
    pending: Option<&Pending>,
    in_mempool: bool,
) -> ReportStep {
    let Some(v) = state.validator(&key.0) else {
        return ReportStep::Done;
    };
    if v.slashed_views.binary_search(&key.1).is_ok() {
        return ReportStep::Done;
    }
    match pending {
        None => ReportStep::Submit,
        // Still queued here: resending would only make a second report that fails on chain
        // and pays its fee.
        Some(_) if in_mempool => ReportStep::Wait,
        Some(p) if p.tries >= REPORT_MAX_TRIES => ReportStep::Done,
        Some(p) if state.height() < p.at.saturating_add(REPORT_RETRY_BLOCKS) => ReportStep::Wait,
        Some(_) => ReportStep::Submit,
    }
}

impl EvidenceRecorder {
    pub fn evidence(&self) -> Vec<Evidence> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Submits a `ReportEquivocation` for (`offender`, `round`) unless it is on chain already
    /// or this node submitted it less than [`REPORT_RETRY_BLOCKS`] blocks ago.
    fn report_on_chain(&self, key: Reported, encoded: Vec<u8>) {
        // O(1): the state is a set of persistent maps.
        let state = self.app.finalized_state();
        let Ok(mut reported) = self.reported.lock() else {
            return;
        };
        let queued = reported
            .get(&key)
            .and_then(|p| p.tx)
            .is_some_and(|id| self.app.is_pending(&id));
        let tries = match report_step(&state, &key, reported.get(&key), queued) {
            ReportStep::Done => {
                reported.remove(&key);
                return;
            }
            ReportStep::Wait => return,
            ReportStep::Submit => reported.get(&key).map_or(0, |p| p.tries),
        };
        let from = self.reporter.verifying_key().to_bytes();
        let tx = deai_ledger::Tx {
            chain: state.chain_id(),
            from,
            nonce: self.app.next_nonce(&from),
            fee: state.params().min_fee,
            kind: deai_ledger::TxKind::ReportEquivocation {
                offender: key.0,
                view: key.1,
                evidence: encoded.clone(),
            },
        }
        .sign(&self.reporter);
        let tx = match self.app.submit(tx) {
            Ok(id) => {
                tracing::info!(%id, round = key.1, tries, "reported equivocation");
                Some(id)
            }
            // A nonce taken meanwhile, a full mempool: retried after REPORT_RETRY_BLOCKS.
            Err(err) => {
                tracing::warn!(%err, round = key.1, "equivocation report refused");
                None
            }
        };
        reported.insert(
            key,
            Pending {
                at: state.height(),
                tries: tries + 1,
                evidence: encoded,
                tx,
            },
        );
    }

    /// Submits again each report not on chain [`REPORT_RETRY_BLOCKS`] after it was sent (at
    /// most [`REPORT_MAX_TRIES`] times), and forgets those that are. The node calls this
    /// about once a second.
    pub fn retry_pending(&self) {
        let due: Vec<(Reported, Vec<u8>)> = match self.reported.lock() {
            Ok(r) => r.iter().map(|(k, p)| (*k, p.evidence.clone())).collect(),
            Err(_) => return,
        };
        for (key, evidence) in due {
            self.report_on_chain(key, evidence);
        }
    }
}

impl commonware_consensus::Reporter for EvidenceRecorder {
    type Activity = simplex::types::Activity<Scheme, Digest>;
    fn report(&mut self, a: Self::Activity) -> commonware_actor::Feedback {
        use commonware_consensus::simplex::types::Attributable;
        use commonware_consensus::{Epochable, Viewable};
        use simplex::types::Activity;
        let (kind, signer, view) = match &a {
            Activity::ConflictingNotarize(c) => ("conflicting_notarize", c.signer(), c.view()),
            Activity::ConflictingFinalize(c) => ("conflicting_finalize", c.signer(), c.view()),
            Activity::NullifyFinalize(c) => ("nullify_finalize", c.signer(), c.view()),
            _ => return commonware_actor::Feedback::Ok,
        };
        let epoch = a.epoch().get();
        let Some(set) = self.epochs.get(epoch) else {
            return commonware_actor::Feedback::Ok;
        };
        let Some(pk) = set.participants.get(signer.get() as usize) else {
            return commonware_actor::Feedback::Ok;
        };
        let Some(round) = crate::evidence::round_id(epoch, view.get()) else {
            return commonware_actor::Feedback::Ok;
        };
        let bytes = commonware_codec::Encode::encode(&a).to_vec();
        let e = Evidence {
            offender: address(pk),
            kind,
            epoch,
            view: view.get(),
            round,
            encoded: hex::encode(&bytes),
        };
        self.report_on_chain((e.offender, e.round), bytes);
        tracing::warn!(
            offender = hex::encode(e.offender),
            kind,
            view = e.view,
            "equivocation evidence"
        );
        if let Ok(mut l) = self.log.lock() {
            l.push(e);
        }
        commonware_actor::Feedback::Ok
    }
}

pub struct Node {
    pub app: App,
    pub epochs: Epochs,
    pub evidence: EvidenceRecorder,
    pub marshal: marshal::core::Mailbox<Scheme, marshal::standard::Standard<Block>>,
    pub handles: Vec<Handle<()>>,
}

fn archive_cfg<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 64,
        freezer_table_resize_frequency: 10,
        freezer_table_resize_chunk_size: 10,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 20,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(1024),
        codec_config,
        replay_buffer: NZUsize!(1 << 16),
        freezer_key_write_buffer: NZUsize!(1 << 16),
        freezer_value_write_buffer: NZUsize!(1 << 16),
        ordinal_write_buffer: NZUsize!(1 << 16),
    }
}

/// Where the orchestrator hears about epochs.
enum EpochMsg {
    /// The last block before `epoch` was applied (its set is recorded): it may start.
    Enter { epoch: u64 },
    /// A peer sent a consensus message of a later epoch than ours.
    Later { epoch: u64, from: PublicKey },
}

/// The per-epoch consensus channels: votes, certificates and the simplex resolver are each
/// multiplexed by epoch (subchannel = epoch number); a message for an epoch this node has
/// not reached goes to the muxer's backup channel.
struct EpochChannels<S: Sender> {
    votes: MuxHandle<S>,
    certs: MuxHandle<S>,
    resolver: MuxHandle<S>,
}

/// Start a validator. Spawns all actors as children of `context`; abort the task owning
/// `context` (or the returned handles) to crash it.
///
/// Consensus runs one simplex engine per epoch. The first is the newest epoch whose set this
/// node knows after replaying its finalized blocks; each time the finalizer applies an
/// epoch's last block (which names the next set, see [`crate::epoch`]), the orchestrator
/// starts the next epoch's engine on top of that block and stops the old one. A node that
/// is not in an epoch's set runs the engine as an observer (it verifies and follows
/// certificates but does not vote). A node that hears consensus messages of a later epoch
/// asks marshal for its own epoch's last block from that peer, which is how a node that was
/// offline across an epoch change catches up.
pub async fn start_node<E, S, R, P, B>(
    context: E,
    cfg: NodeConfig,
    channels: Channels<S, R>,
    peer_provider: P,
    blocker: B,
) -> Node
where
    E: Spawner + Clock + Metrics + Storage + CryptoRng,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    P: Provider<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
{
    let me = cfg.signer.public_key();
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(64));
    let prefix = cfg.partition.clone();
    let mailbox_size = NZUsize!(1024);

    // --- marshal backfill resolver (p2p) ---
    let resolver = marshal_resolver::init(
        context.child("marshal_resolver"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: peer_provider.clone(),
            blocker: blocker.clone(),
            mailbox_size,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );

    // --- buffered broadcast of full blocks ---
    let (broadcast_engine, buffer) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size,
            deque_size: 32,
            priority: false,
            codec_config: (),
            peer_provider: peer_provider.clone(),
            strategy: Sequential,
        },
    );
    let broadcast_handle = broadcast_engine.start(channels.broadcast);

    // --- marshal archives ---
    let finalizations_by_height = immutable::Archive::init(
        context.child("finalizations_by_height"),
        archive_cfg(
            &prefix,
            "finalizations-by-height",
            &page_cache,
            <Scheme as commonware_cryptography::certificate::Verifier>::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .expect("finalizations archive");
    let finalized_blocks: immutable::Archive<E, Digest, std::sync::Arc<Block>> =
        immutable::Archive::init(
            context.child("finalized_blocks"),
            archive_cfg(&prefix, "finalized-blocks", &page_cache, ()),
        )
        .await
        .expect("blocks archive");

    let app = App::new(cfg.genesis_state, cfg.max_block_txs, cfg.mempool);
    let epochs = app.epochs();
    let epocher = FixedEpocher::new(NZU64!(epochs.length()));
    let provider = EpochProvider::new(epochs.clone(), cfg.signer.clone());
    let genesis = app.genesis_block();
    let genesis_digest = commonware_cryptography::Digestible::digest(&genesis);
    let (marshal_actor, marshal_mailbox, floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations_by_height,
        finalized_blocks,
        marshal::Config {
            provider: provider.clone(),
            epocher: epocher.clone(),
            start: marshal::Start::Genesis(commonware_cryptography::Digested::precomputed(
                genesis,
                genesis_digest,
            )),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size,
            view_retention: ViewDelta::new(10),
            prunable_items_per_section: NZU64!(16),
            page_cache: page_cache.clone(),
            replay_buffer: NZUsize!(1 << 16),
            key_write_buffer: NZUsize!(1 << 16),
            value_write_buffer: NZUsize!(1 << 16),
            block_codec_config: (),
            max_repair: NZUsize!(16),
            max_pending_acks: NZUsize!(16),
            strategy: Sequential,
        },
    )
    .await;

    // --- finalizer ---
    let (finalizer, updates) = Finalizer::new();
    let marshal_handle = marshal_actor.start(finalizer, buffer, resolver);

    // Replay already processed finalized blocks (restart) from marshal's archive. Applying
    // an epoch's last block registers the next epoch's set.
    let processed = floor.processed().map(|p| p.height().get()).unwrap_or(0);
    for h in 1..=processed {
        let Some(b) = marshal_mailbox.get_block(Height::new(h)).await else {
            tracing::error!(h, "processed block missing from the archive");
            break;
        };
        if let Err(e) = app.apply_finalized(b.inner()) {
            tracing::error!(h, e, "replaying a stored block failed");
            break;
        }
    }
    let (epoch_tx, epoch_rx) = futures::channel::mpsc::unbounded();
    let finalizer_handle = context.child("finalizer").spawn({
        let app = app.clone();
        let epoch_tx = epoch_tx.clone();
        move |_| {
            run_finalizer(app, updates, move |epoch| {
                let _ = epoch_tx.unbounded_send(EpochMsg::Enter { epoch });
            })
        }
    });

    // --- per-epoch consensus channels ---
    let mut muxed = Vec::new();
    for (name, (s, r)) in [
        ("votes_mux", channels.votes),
        ("certs_mux", channels.certs),
        ("resolver_mux", channels.resolver),
    ] {
        let (mux, handle, mut backup) = Muxer::builder(context.child(name), s, r)
            .with_backup()
            .build();
        // Dropping a handle does not stop its task (children stop with `context`).
        drop(mux.start());
        muxed.push(handle);
        // Messages of epochs this node has not registered: note the later ones.
        let tx = epoch_tx.clone();
        let backup_ctx = context.child("mux_backup").with_attribute("channel", name);
        drop(backup_ctx.spawn(move |_| async move {
            while let Some((epoch, (from, _))) = backup.recv().await {
                if tx.unbounded_send(EpochMsg::Later { epoch, from }).is_err() {
                    return;
                }
            }
        }));
    }
    let mut muxed = muxed.into_iter();
    let chans = EpochChannels {
        votes: muxed.next().expect("three muxers"),
        certs: muxed.next().expect("three muxers"),
        resolver: muxed.next().expect("three muxers"),
    };

    // --- simplex, one engine per epoch ---
    let seed: [u8; 32] = commonware_codec::Encode::encode(&cfg.signer)
        .as_ref()
        .try_into()
        .expect("an ed25519 private key encodes as its 32-byte seed");
    let evidence = EvidenceRecorder {
        epochs: epochs.clone(),
        log: Default::default(),
        app: app.clone(),
        reporter: std::sync::Arc::new(ed25519_dalek::SigningKey::from_bytes(&seed)),
        reported: Default::default(),
    };
    let wrapper = Inline::new(
        context.child("inline"),
        app.clone(),
        marshal_mailbox.clone(),
        epocher,
    );
    let on_epoch = cfg.on_epoch;
    let lt = cfg.leader_timeout;
    let orchestrator_epochs = epochs.clone();
    let orchestrator_evidence = evidence.clone();
    let hints = marshal_mailbox.clone();
    let retry_evidence = evidence.clone();
    let retry_handle = context
        .child("evidence_retry")
        .spawn(move |ctx| async move {
            loop {
                ctx.sleep(Duration::from_secs(1)).await;
                retry_evidence.retry_pending();
            }
        });
    let orchestrator_handle = context.child("orchestrator").spawn(move |ctx| async move {
        let (epochs, evidence, mut chans, mut epoch_rx) =
            (orchestrator_epochs, orchestrator_evidence, chans, epoch_rx);
        let mut running: Option<(u64, Handle<()>)> = None;
        let mut last_hint: Option<(u64, std::time::SystemTime)> = None;
        let mut enter = Some(epochs.current().epoch);
        loop {
            if let Some(e) = enter
                .take()
                .filter(|e| running.as_ref().is_none_or(|r| *e > r.0))
            {
                let (Some(set), Some(scheme)) = (epochs.get(e), provider.scheme_for(e)) else {
                    tracing::error!(epoch = e, "entering an epoch whose set is unknown");
                    continue;
                };
                if let Some(f) = &on_epoch {
                    f(&set);
                }
                let (Ok(votes), Ok(certs), Ok(resolver)) = (
                    chans.votes.register(e).await,
                    chans.certs.register(e).await,
                    chans.resolver.register(e).await,
                ) else {
                    tracing::error!(epoch = e, "consensus channels for the epoch are taken");
                    continue;
                };
                let member = commonware_cryptography::certificate::Scheme::me(&*scheme).is_some();
                let engine = simplex::Engine::new(
                    ctx.child("simplex").with_attribute("epoch", e),
                    simplex::config::Config {
                        scheme: (*scheme).clone(),
                        elector: RoundRobin::<Sha256>::default(),
                        blocker: blocker.clone(),
                        automaton: wrapper.clone(),
                        relay: wrapper.clone(),
                        reporter: commonware_consensus::Reporters::from((
                            wrapper.clone(),
                            evidence.clone(),
                        )),
                        track_historical_votes: false,
                        strategy: Sequential,
                        partition: format!("{prefix}-simplex-{e}"),
                        mailbox_size,
                        epoch: Epoch::new(e),
                        floor: simplex::config::Floor::Genesis(set.floor),
                        replay_buffer: NZUsize!(1 << 16),
                        write_buffer: NZUsize!(1 << 16),
                        page_cache: page_cache.clone(),
                        leader_timeout: lt,
                        certification_timeout: lt * 2,
                        timeout_retry: lt * 5 / 2,
                        view_retention: ViewDelta::new(10),
                        skip: SkipPolicy::Enabled {
                            timeout: lt * 3,
                            budget: SkipBudget::Participants,
                        },
                        fetch_timeout: NZDuration!(Duration::from_secs(1)),
                        fetch_retry_delay: Duration::from_millis(100),
                        forward: ForwardPolicy::Disabled,
                    },
                );
                let handle = engine.start(votes, certs, resolver);
                if let Some((old, h)) = running.replace((e, handle)) {
                    h.abort();
                    tracing::info!(from = old, to = e, "consensus moved to a new epoch");
                }
                tracing::info!(
                    epoch = e,
                    validators = set.participants.len(),
                    member,
                    "consensus engine started"
                );
            }
            let Some(msg) = epoch_rx.next().await else {
                return;
            };
            match msg {
                EpochMsg::Enter { epoch } => enter = Some(epoch),
                EpochMsg::Later { epoch, from } => {
                    let Some(cur) = running.as_ref().map(|r| r.0) else {
                        continue;
                    };
                    // Peers are past our epoch, so its last block is final: fetch it from
                    // one of them (marshal then repairs the gap below it). Once as soon as
                    // an epoch is entered, then at most twice a second while still behind.
                    let now = ctx.current();
                    let due = last_hint.is_none_or(|(e, t)| {
                        e != cur
                            || now.duration_since(t).unwrap_or_default()
                                >= Duration::from_millis(500)
                    });
                    if epoch > cur && due {
                        last_hint = Some((cur, now));
                        tracing::debug!(ours = cur, theirs = epoch, "peer is in a later epoch");
                        hints.hint_finalized(
                            Height::new(epochs.last(cur)),
                            commonware_utils::vec::NonEmptyVec::new(from),
                        );
                    }
                }
            }
        }
    });

    Node {
        app,
        epochs,
        evidence,
        marshal: marshal_mailbox,
        handles: vec![
            broadcast_handle,
            marshal_handle,
            finalizer_handle,
            orchestrator_handle,
            retry_handle,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deai_ledger::{Genesis, GenesisAccount, GenesisValidator, Params, State};

    #[test]
    fn an_unconfirmed_report_is_submitted_again_then_given_up_or_forgotten() {
        let v = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_bytes();
        let reporter = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let g = Genesis {
            chain_name: "t".into(),
            accounts: vec![
                GenesisAccount {
                    address: v,
                    balance: 0,
                    stake: 1_000_000,
                },
                GenesisAccount {
                    address: reporter.verifying_key().to_bytes(),
                    balance: 1_000,
                    stake: 0,
                },
            ],
            validators: vec![GenesisValidator {
                address: v,
                endpoint: String::new(),
                p2p: String::new(),
            }],
            params: Params::default(),
            epoch_length: 1000,
            beacon: None,
            royalties: Vec::new(),
        };
        let mut s = State::from_genesis(&g).unwrap();
        let key = (v, 7);
        let sent = |at, tries| Pending {
            at,
            tries,
            evidence: vec![],
            tx: None,
        };
        assert_eq!(report_step(&s, &key, None, false), ReportStep::Submit);
        // Not a validator: nothing to slash, forget it.
        assert_eq!(
            report_step(&s, &([1; 32], 7), None, false),
            ReportStep::Done
        );
        // Sent at height 0: wait REPORT_RETRY_BLOCKS blocks for it to land, then resend.
        for h in 1..REPORT_RETRY_BLOCKS {
            s.apply_block(h, &[]).unwrap();
            assert_eq!(
                report_step(&s, &key, Some(&sent(0, 1)), false),
                ReportStep::Wait
            );
        }
        s.apply_block(REPORT_RETRY_BLOCKS, &[]).unwrap();
        assert_eq!(
            report_step(&s, &key, Some(&sent(0, 1)), false),
            ReportStep::Submit
        );
        // ... unless the last submission still waits in this node's mempool.
        assert_eq!(
            report_step(&s, &key, Some(&sent(0, 1)), true),
            ReportStep::Wait
        );
        assert_eq!(
            report_step(&s, &key, Some(&sent(0, REPORT_MAX_TRIES)), false),
            ReportStep::Done
        );
        // Once the ledger has slashed the offender for that round, the report is done.
        let report = deai_ledger::Tx {
            chain: s.chain_id(),
            from: [0; 32],
            nonce: 0,
            fee: s.params().min_fee,
            kind: deai_ledger::TxKind::ReportEquivocation {
                offender: v,
                view: 7,
                evidence: vec![1],
            },
        }
        .sign(&reporter);
        let r = s.apply_block(REPORT_RETRY_BLOCKS + 1, &[report]).unwrap();
        assert!(r.outcomes[0].error.is_none(), "{:?}", r.outcomes[0].error);
        assert_eq!(
            report_step(&s, &key, Some(&sent(0, 1)), false),
            ReportStep::Done
        );
        assert_eq!(report_step(&s, &(v, 8), None, false), ReportStep::Submit);
    }
}
