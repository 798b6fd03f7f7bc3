//! Validator sets by epoch.
//!
//! The ledger fixes an epoch length at genesis and, at the end of each epoch's last block,
//! names the next epoch's consensus set from stake ([`deai_ledger::state::Meta::validator_set`]).
//! [`Epochs`] records those sets as finalized blocks are applied: epoch 0's from genesis,
//! epoch `e + 1`'s from the post-state of the last block of epoch `e` (the *boundary*
//! block). Everything that checks a consensus signature looks the signer up here by the
//! signature's own epoch: marshal (through [`EpochProvider`]), equivocation evidence, and the
//! light client (which follows the same hand-offs through state proofs).
//!
//! A set is only ever added after its boundary block is final, and never changes or goes
//! away, so every honest node that has applied the same finalized prefix answers the same.

use crate::block::Digest;
use crate::scheme::{public_key, Scheme, NAMESPACE};
use commonware_consensus::types::Epoch;
use commonware_cryptography::certificate::{self, Scoped};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_utils::ordered::Set;
use deai_ledger::{Address, State};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One epoch's consensus set and where it came from.
#[derive(Clone)]
pub struct EpochSet {
    pub epoch: u64,
    pub participants: Set<PublicKey>,
    /// Keys admitted to the p2p network as followers (secondary peers) this epoch; see
    /// [`followers`].
    pub followers: Set<PublicKey>,
    /// Verifies certificates and votes of this epoch.
    pub verifier: Arc<Scheme>,
    /// The block after which this epoch starts: genesis for epoch 0, else the last block of
    /// the epoch before (height, digest).
    pub floor_height: u64,
    pub floor: Digest,
    /// The meta record of that block's post-state (which names this set) and its proof under
    /// the block's state root: the hand-off a light client follows into this epoch. Only
    /// the proof is kept, not the state, so a long-running node's memory does not grow with
    /// every epoch's state.
    pub floor_meta: Option<Vec<u8>>,
    pub floor_meta_proof: deai_ledger::smt::Proof,
}

/// The validator sets of every epoch this node has reached. Clones share one registry.
#[derive(Clone)]
pub struct Epochs {
    length: u64,
    sets: Arc<Mutex<BTreeMap<u64, EpochSet>>>,
}

/// The consensus keys of a set of ledger addresses (the ledger only admits validators whose
/// address is an ed25519 key, since they signed their registration).
pub fn keys(addrs: &[Address]) -> Set<PublicKey> {
    Set::from_iter_dedup(addrs.iter().filter_map(public_key))
}

/// Most followers admitted per epoch (bounds every node's peer table and connections).
pub const MAX_FOLLOWERS: usize = 256;

/// The keys that may connect to the p2p network in an epoch without voting in it (secondary
/// peers: they receive blocks and certificates and may serve backfill, but are not dialed by
/// validators and take no part in discovery's bit vectors). They are read from `state`, the
/// finalized post-state that names the epoch's set, so every node admits the same keys:
///
/// - registered validators outside the set that hold at least the minimum validator stake
///   (a candidate that has registered syncs before its first epoch in the set);
/// - active workers holding at least the minimum worker stake (so that a staked worker can
///   follow finality itself instead of trusting one validator's HTTP API).
///
/// Highest stake first (ties to the lower address), at most [`MAX_FOLLOWERS`]. Keys that are
/// neither are refused at the handshake.
pub fn followers(state: &State, primary: &Set<PublicKey>) -> Set<PublicKey> {
    let p = state.params();
    let mut staked: Vec<(u64, Address)> = state
        .validators()
        .filter(|(a, _)| state.account(a).stake >= p.min_validator_stake)
        .map(|(a, _)| *a)
        .chain(
            state
                .workers()
                .filter(|(a, w)| w.active && state.account(a).stake >= p.min_worker_stake)
                .map(|(a, _)| *a),
        )
        .map(|a| (state.account(&a).stake, a))
        .collect();
    staked.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    staked.dedup_by(|x, y| x.1 == y.1);
    Set::from_iter_dedup(
        staked
            .into_iter()
            .filter_map(|(_, a)| public_key(&a))
            .filter(|pk| primary.position(pk).is_none())
            .take(MAX_FOLLOWERS),
    )
}

impl Epochs {
    /// Starts with epoch 0: the genesis state's set, after the genesis block `genesis`.
    pub fn new(genesis: &State, genesis_digest: Digest) -> Self {
        let e = Epochs {
            length: genesis.meta().epoch_length,
            sets: Default::default(),
        };
        e.insert(0, genesis, genesis_digest);
        e
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, EpochSet>> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks per epoch.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The epoch containing `height`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.length
    }

    /// The last height of epoch `e` (saturating).
    pub fn last(&self, e: u64) -> u64 {
        e.saturating_mul(self.length)
            .saturating_add(self.length - 1)
    }

    /// Records epoch `e`'s set from `floor_state`, the post-state of the block `floor` after
    /// which it starts. A second call for the same epoch is ignored (marshal may redeliver).
    pub fn insert(&self, e: u64, floor_state: &State, floor: Digest) {
        let mut sets = self.lock();
        if sets.contains_key(&e) {
            return;
        }
        let participants = keys(floor_state.validator_set());
        let (floor_meta, floor_meta_proof) = floor_state.prove(&deai_ledger::state::Key::Meta);
        let set = EpochSet {
            epoch: e,
            followers: followers(floor_state, &participants),
            verifier: Arc::new(Scheme::verifier(NAMESPACE, participants.clone())),
            participants,
            floor_height: floor_state.height(),
            floor,
            floor_meta,
            floor_meta_proof,
        };
        sets.insert(e, set);
    }

    pub fn get(&self, e: u64) -> Option<EpochSet> {
        self.lock().get(&e).cloned()
    }

    /// The newest epoch whose set is known (the one this node's consensus runs in).
    pub fn current(&self) -> EpochSet {
        self.lock()
            .last_key_value()
            .map(|(_, s)| s.clone())
            .expect("epoch 0 is inserted at construction")
    }

    /// The sets of epochs `1..=e` (with the hand-offs a light client follows from genesis
    /// to epoch `e`), oldest first.
    pub fn handoffs(&self, e: u64) -> Vec<EpochSet> {
        if e == 0 {
            // (`range(1..=0)` would panic.)
            return Vec::new();
        }
        self.lock().range(1..=e).map(|(_, s)| s.clone()).collect()
    }
}

/// Marshal's certificate provider: the scheme of a certificate's own epoch, able to sign
/// where this node is in that epoch's set.
#[derive(Clone)]
pub struct EpochProvider {
    epochs: Epochs,
    signer: PrivateKey,
    signing: Arc<Mutex<BTreeMap<u64, Arc<Scheme>>>>,
}

impl EpochProvider {
    pub fn new(epochs: Epochs, signer: PrivateKey) -> Self {
        EpochProvider {
            epochs,
            signer,
            signing: Default::default(),
        }
    }

    /// This node's scheme for epoch `e`: a signer if it is in the set, else a verifier.
    pub fn scheme_for(&self, e: u64) -> Option<Arc<Scheme>> {
        let mut cache = self.signing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(&e) {
            return Some(s.clone());
        }
        let set = self.epochs.get(e)?;
        let s = match Scheme::signer(NAMESPACE, set.participants.clone(), self.signer.clone()) {
            Some(s) => Arc::new(s),
            None => set.verifier,
        };
        cache.insert(e, s.clone());
        Some(s)
    }
}

impl certificate::Provider for EpochProvider {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, scope: Epoch) -> Option<Scoped<Scheme>> {
        self.scheme_for(scope.get()).map(Scoped::scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deai_ledger::{Genesis, GenesisAccount, GenesisValidator, Params};

    #[test]
    fn followers_are_staked_validators_outside_the_set() {
        let min = Params::default().min_validator_stake;
        let key = |i: u8| {
            ed25519_dalek::SigningKey::from_bytes(&[i; 32])
                .verifying_key()
                .to_bytes()
        };
        // 102 validators with growing stake, and one at the minimum that will unstake.
        let stakes: Vec<(u8, u64)> = (1..=102u8)
            .map(|i| (i, min * i as u64))
            .chain([(103, min)])
            .collect();
        let g = Genesis {
            chain_name: "t".into(),
            accounts: stakes
                .iter()
                .map(|&(i, stake)| GenesisAccount {
                    address: key(i),
                    balance: 100,
                    stake,
                })
                .collect(),
            validators: stakes
                .iter()
                .map(|&(i, _)| GenesisValidator {
                    address: key(i),
                    endpoint: String::new(),
                    p2p: String::new(),
                })
                .collect(),
            params: Params::default(),
            epoch_length: 5,
            beacon: None,
            royalties: Vec::new(),
        };
        let mut s = State::from_genesis(&g).unwrap();
        let set = keys(s.validator_set());
        assert_eq!(set.len(), 100);
        let low = public_key(&key(103)).unwrap();
        assert!(followers(&s, &set).position(&low).is_some());
        // 103 drops below the minimum.
        let unstake = deai_ledger::Tx {
            chain: s.chain_id(),
            from: [0; 32],
            nonce: 0,
            fee: s.params().min_fee,
            kind: deai_ledger::TxKind::Unstake { amount: 1 },
        }
        .sign(&ed25519_dalek::SigningKey::from_bytes(&[103; 32]));
        let r = s.apply_block(1, &[unstake]).unwrap();
        assert!(r.outcomes[0].error.is_none(), "{:?}", r.outcomes[0].error);
        let f = followers(&s, &set);
        // The two smallest qualifying stakes are left out of the set and follow; the key
        // below the minimum does neither.
        let expect: Vec<PublicKey> = [1u8, 2]
            .iter()
            .filter_map(|i| public_key(&key(*i)))
            .collect();
        assert_eq!(f.iter().cloned().collect::<Vec<_>>(), {
            let mut e = expect;
            e.sort();
            e
        });
        assert!(f.position(&low).is_none() && set.position(&low).is_none());
        // A key in the set is never also a follower.
        assert!(set.iter().all(|k| f.position(k).is_none()));
    }

    #[test]
    fn epochs_record_sets_once_and_list_handoffs() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let a = key.verifying_key().to_bytes();
        let g = Genesis {
            chain_name: "t".into(),
            accounts: vec![GenesisAccount {
                address: a,
                balance: 0,
                stake: 1_000_000,
            }],
            validators: vec![GenesisValidator {
                address: a,
                endpoint: String::new(),
                p2p: String::new(),
            }],
            params: Params::default(),
            epoch_length: 5,
            beacon: None,
            royalties: Vec::new(),
        };
        let s = State::from_genesis(&g).unwrap();
        let d = crate::block::to_digest(deai_types::Hash256([1; 32]));
        let e = Epochs::new(&s, d);
        assert_eq!(
            (e.epoch_of(4), e.epoch_of(5), e.last(0), e.last(2)),
            (0, 1, 4, 14)
        );
        // Epoch 0 has no hand-off (and asking does not panic).
        assert!(e.handoffs(0).is_empty());
        assert_eq!(e.current().epoch, 0);
        assert_eq!(e.current().participants.len(), 1);
        let d2 = crate::block::to_digest(deai_types::Hash256([2; 32]));
        e.insert(1, &s, d2);
        // A second insert of an epoch keeps the first.
        e.insert(1, &s, d);
        assert_eq!(e.get(1).unwrap().floor, d2);
        // The hand-off keeps the meta record and its proof, not the state.
        let (meta, proof) = s.prove(&deai_ledger::state::Key::Meta);
        assert_eq!(e.get(1).unwrap().floor_meta, meta);
        assert_eq!(e.get(1).unwrap().floor_meta_proof, proof);
        assert!(meta.is_some());
        assert_eq!(e.handoffs(1).len(), 1);
        assert_eq!(e.handoffs(7).len(), 1);
        assert_eq!(e.current().epoch, 1);
        assert!(e.get(2).is_none());
    }
}
