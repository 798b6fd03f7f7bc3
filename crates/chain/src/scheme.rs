//! The consensus signature scheme and its keys: the one place every module that signs or
//! checks a consensus message takes them from.
//!
//! Owns [`Scheme`] (simplex over ed25519), the signing [`NAMESPACE`], and the mapping
//! between 32-byte ledger addresses and consensus keys ([`private_key`], [`public_key`],
//! [`address`]). It depends on nothing else in this crate, so the application, the epoch
//! registry, evidence checks, the light client and validator wiring all stand on it.
//! [`crate::app`] and [`crate::node`] re-export these items under their old paths.

use commonware_consensus::simplex::scheme::ed25519;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};

/// The consensus signing scheme: simplex certificates of ed25519 signatures.
pub type Scheme = ed25519::Scheme;

/// Consensus signing namespace.
pub const NAMESPACE: &[u8] = b"deai-chain-v1";

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
