//! One validator, assembled from commonware components: storage archives, marshal
//! (ordered finalized blocks and backfill), buffered broadcast of full blocks, a p2p
//! resolver, the simplex engine, and the deai [`App`]. Generic over the runtime
//! (deterministic in tests, tokio in production) and the p2p network (simulated or
//! authenticated).

use crate::app::{run_finalizer, App, Finalizer, Scheme};
use crate::block::{Block, Digest};
use crate::mempool::Mempool;
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
    certificate::ConstantProvider,
    ed25519::{PrivateKey, PublicKey},
    Sha256, Signer,
};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{buffer::paged::CacheRef, Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::{ordered::Set, NZDuration, NZUsize, NZU16, NZU64};
use deai_ledger::State;
use rand_core_cw::CryptoRng;
use std::time::Duration;

/// Consensus signing namespace.
pub const NAMESPACE: &[u8] = b"deai-chain-v1";
/// One epoch for the whole chain: the validator set is fixed at genesis (see ARCHITECTURE.md).
pub const EPOCH_LENGTH: u64 = 1 << 40;

/// p2p channel ids.
pub const CH_VOTES: u64 = 0;
pub const CH_CERTS: u64 = 1;
pub const CH_RESOLVER: u64 = 2;
pub const CH_BACKFILL: u64 = 3;
pub const CH_BROADCAST: u64 = 4;
pub const CHANNELS: [u64; 5] = [CH_VOTES, CH_CERTS, CH_RESOLVER, CH_BACKFILL, CH_BROADCAST];

/// The consensus key for a 32-byte ed25519 seed (the same key signs ledger transactions).
pub fn private_key(seed: &[u8; 32]) -> PrivateKey {
    use commonware_codec::Read;
    PrivateKey::read_cfg(&mut bytes::Bytes::copy_from_slice(seed), &())
        .expect("any 32 bytes are an ed25519 seed")
}

/// The consensus public key for a ledger address.
pub fn public_key(addr: &[u8; 32]) -> Option<PublicKey> {
    use commonware_codec::Read;
    PublicKey::read_cfg(&mut bytes::Bytes::copy_from_slice(addr), &()).ok()
}

/// The ledger address of a consensus public key.
pub fn address(pk: &PublicKey) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(pk.as_ref());
    a
}

/// The validator set of a genesis state, sorted.
pub fn participants(state: &State) -> Set<PublicKey> {
    Set::from_iter_dedup(state.validators().filter_map(|(a, _)| public_key(a)))
}

pub struct Channels<S, R> {
    pub votes: (S, R),
    pub certs: (S, R),
    pub resolver: (S, R),
    pub backfill: (S, R),
    pub broadcast: (S, R),
}

pub struct NodeConfig {
    pub signer: PrivateKey,
    pub participants: Set<PublicKey>,
    /// Prefix of this node's storage partitions.
    pub partition: String,
    pub genesis_state: State,
    pub mempool: Mempool,
    pub max_block_txs: usize,
    pub leader_timeout: Duration,
}

/// Proof that a validator signed two conflicting messages in one view, as simplex reported
/// it (the commonware encoding of the activity, which anyone can re-verify).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evidence {
    #[serde(with = "hex_bytes32")]
    pub offender: [u8; 32],
    pub kind: &'static str,
    pub view: u64,
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
    participants: Set<PublicKey>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Evidence>>>,
    app: App,
    reporter: std::sync::Arc<ed25519_dalek::SigningKey>,
    /// (offender, view) pairs already reported by this node.
    reported: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Reported>>>,
}

/// An (offender, view) pair.
type Reported = ([u8; 32], u64);

impl EvidenceRecorder {
    pub fn evidence(&self) -> Vec<Evidence> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Submits a `ReportEquivocation` for `e` unless this node already did, or the offender
    /// was already slashed for that view.
    fn report_on_chain(&self, e: &Evidence, encoded: Vec<u8>) {
        let key = (e.offender, e.view);
        if self.reported.lock().map_or(true, |r| r.contains(&key)) {
            return;
        }
        // O(1): the state is a set of persistent maps.
        let state = self.app.finalized_state();
        let from = self.reporter.verifying_key().to_bytes();
        let tx = deai_ledger::Tx {
            chain: state.chain_id(),
            from,
            nonce: self.app.next_nonce(&from),
            fee: state.params().min_fee,
            kind: deai_ledger::TxKind::ReportEquivocation {
                offender: e.offender,
                view: e.view,
                evidence: encoded,
            },
        }
        .sign(&self.reporter);
        match self.app.submit(tx) {
            Ok(id) => {
                if let Ok(mut r) = self.reported.lock() {
                    r.insert(key);
                }
                tracing::info!(%id, view = e.view, "reported equivocation")
            }
            // Already slashed, or a nonce taken meanwhile: the next report of this evidence
            // (simplex reports each conflicting vote) tries again.
            Err(err) => tracing::warn!(%err, view = e.view, "equivocation report refused"),
        }
    }
}

impl commonware_consensus::Reporter for EvidenceRecorder {
    type Activity = simplex::types::Activity<Scheme, Digest>;
    fn report(&mut self, a: Self::Activity) -> commonware_actor::Feedback {
        use commonware_consensus::simplex::types::Attributable;
        use commonware_consensus::Viewable;
        use simplex::types::Activity;
        let (kind, signer, view) = match &a {
            Activity::ConflictingNotarize(c) => ("conflicting_notarize", c.signer(), c.view()),
            Activity::ConflictingFinalize(c) => ("conflicting_finalize", c.signer(), c.view()),
            Activity::NullifyFinalize(c) => ("nullify_finalize", c.signer(), c.view()),
            _ => return commonware_actor::Feedback::Ok,
        };
        let Some(pk) = self.participants.get(signer.get() as usize) else {
            return commonware_actor::Feedback::Ok;
        };
        let bytes = commonware_codec::Encode::encode(&a).to_vec();
        let e = Evidence {
            offender: address(pk),
            kind,
            view: view.get(),
            encoded: hex::encode(&bytes),
        };
        self.report_on_chain(&e, bytes);
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

/// Start a validator. Spawns all actors as children of `context`; abort the task owning
/// `context` (or the returned handles) to crash it.
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
    let participants = cfg.participants.clone();
    let scheme = Scheme::signer(NAMESPACE, participants, cfg.signer.clone())
        .expect("signer must be a participant");
    let provider = ConstantProvider::new(scheme.clone());
    let epocher = FixedEpocher::new(NZU64!(EPOCH_LENGTH));
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
    let genesis = app.genesis_block();
    let genesis_digest = commonware_cryptography::Digestible::digest(&genesis);
    let (marshal_actor, marshal_mailbox, floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations_by_height,
        finalized_blocks,
        marshal::Config {
            provider,
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

    // Replay already processed finalized blocks (restart) from marshal's archive.
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
    let finalizer_handle = context.child("finalizer").spawn({
        let app = app.clone();
        move |_| run_finalizer(app, updates)
    });

    // --- simplex ---
    let seed: [u8; 32] = commonware_codec::Encode::encode(&cfg.signer)
        .as_ref()
        .try_into()
        .expect("an ed25519 private key encodes as its 32-byte seed");
    let evidence = EvidenceRecorder {
        participants: cfg.participants.clone(),
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
    let lt = cfg.leader_timeout;
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::config::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: wrapper.clone(),
            relay: wrapper.clone(),
            reporter: commonware_consensus::Reporters::from((wrapper, evidence.clone())),
            track_historical_votes: false,
            strategy: Sequential,
            partition: format!("{prefix}-simplex"),
            mailbox_size,
            epoch: Epoch::zero(),
            floor: simplex::config::Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(1 << 16),
            write_buffer: NZUsize!(1 << 16),
            page_cache,
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
    let engine_handle = engine.start(channels.votes, channels.certs, channels.resolver);

    Node {
        app,
        evidence,
        marshal: marshal_mailbox,
        handles: vec![
            broadcast_handle,
            marshal_handle,
            finalizer_handle,
            engine_handle,
        ],
    }
}
