//! State proofs a client can check with no trust in the node that served them: a finality
//! certificate signed by a quorum of the validators of the block's epoch, over a block
//! digest, which is the hash of a header, which commits to a state root, under which a
//! sparse-Merkle proof shows the record (or its absence).
//!
//! The client starts from the genesis validator set. For a block of epoch `e > 0` the proof
//! also carries `e` hand-offs: for each epoch `i < e`, a proof of the chain's meta record at
//! the last block of epoch `i`, certified by epoch `i`'s set, whose `validator_set` is the
//! set of epoch `i + 1`. The client walks them in order, so each set is vouched for by the
//! one before it.

use crate::block::{Digest, Header};
use crate::scheme::{public_key, Scheme, NAMESPACE};
use commonware_codec::{Encode, Read};
use commonware_consensus::simplex::types::Finalization;
use commonware_consensus::Epochable;
use commonware_utils::ordered::Set;
use deai_ledger::smt;
use deai_ledger::state::{value_hash, Key};
use deai_ledger::Address;
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// What `GET /v1/proof/...` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateProof {
    /// Finalized height the proof is against.
    pub height: u64,
    /// The block header at that height, canonically encoded (hex).
    pub header: String,
    /// The finality certificate for the header's digest (commonware codec, hex).
    pub certificate: String,
    /// The record's canonical bytes (hex), or null when the proof shows absence.
    pub value: Option<String>,
    pub proof: smt::Proof,
    /// Proofs of the meta record at the last block of each epoch before this one, oldest
    /// first (empty in epoch 0): how the client learns each later validator set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handoffs: Vec<StateProof>,
}

/// What a checked proof establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    pub height: u64,
    pub state_root: Hash256,
    /// The record's canonical bytes, or `None` if it provably does not exist.
    pub value: Option<Vec<u8>>,
}

pub type Certificate = Finalization<Scheme, Digest>;

pub fn encode_certificate(f: &Certificate) -> String {
    hex::encode(f.encode())
}

/// The most epochs a proof may walk through (bounds the work a served proof can cause).
pub const MAX_HANDOFFS: usize = 100_000;

/// Checks `p` for `key` starting from the validator set `validators` (the genesis
/// validators' addresses), following `p`'s hand-offs to the set of the proof's epoch. Fails
/// on any inconsistency; never trusts the serving node.
pub fn verify_state_proof(
    validators: &[Address],
    key: &Key,
    p: &StateProof,
) -> Result<Proven, String> {
    if p.handoffs.len() > MAX_HANDOFFS {
        return Err(format!(
            "{} hand-offs exceed {MAX_HANDOFFS}",
            p.handoffs.len()
        ));
    }
    let mut set = validators.to_vec();
    for (i, h) in p.handoffs.iter().enumerate() {
        if !h.handoffs.is_empty() {
            return Err(format!("hand-off {i} nests hand-offs"));
        }
        let proven = verify_in_epoch(&set, &Key::Meta, h, i as u64)
            .map_err(|e| format!("hand-off to epoch {}: {e}", i + 1))?;
        let bytes = proven
            .value
            .ok_or_else(|| format!("hand-off to epoch {}: the meta record is absent", i + 1))?;
        let meta = deai_ledger::state::decode_record::<deai_ledger::state::Meta>(&bytes)
            .map_err(|e| format!("hand-off to epoch {}: {e}", i + 1))?;
        let l = meta.epoch_length.max(1);
        if meta.height / l != i as u64 || meta.height % l != l - 1 {
            return Err(format!(
                "hand-off to epoch {}: height {} is not the last block of epoch {i}",
                i + 1,
                meta.height
            ));
        }
        set = meta.validator_set;
    }
    verify_in_epoch(&set, key, p, p.handoffs.len() as u64)
}

/// Checks `p` for `key` against the set `validators`, whose epoch is `epoch`.
fn verify_in_epoch(
    validators: &[Address],
    key: &Key,
    p: &StateProof,
    epoch: u64,
) -> Result<Proven, String> {
    let keys = validators
        .iter()
        .map(|a| public_key(a).ok_or("validator address is not an ed25519 key"))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("empty validator set".into());
    }
    let verifier = Scheme::verifier(NAMESPACE, Set::from_iter_dedup(keys));
    let header_bytes = hex::decode(&p.header).map_err(|e| format!("header: {e}"))?;
    let header = Header::from_bytes(&header_bytes).map_err(|e| format!("header: {e}"))?;
    if header.height != p.height {
        return Err(format!(
            "header height {} != claimed {}",
            header.height, p.height
        ));
    }
    let cert_bytes = hex::decode(&p.certificate).map_err(|e| format!("certificate: {e}"))?;
    let cfg = <Scheme as commonware_cryptography::certificate::Verifier>::certificate_codec_config_unbounded();
    let cert = Certificate::read_cfg(&mut bytes::Bytes::from(cert_bytes), &cfg)
        .map_err(|e| format!("certificate: {e}"))?;
    if cert.proposal.payload.0 != header.digest().0 {
        return Err("certificate is for another block".into());
    }
    if cert.epoch().get() != epoch {
        return Err(format!(
            "certificate is from epoch {}, but the hand-offs lead to epoch {epoch}",
            cert.epoch().get()
        ));
    }
    let mut rng = commonware_utils::rng::sys_rng();
    if !cert.verify(&mut rng, &verifier, &commonware_parallel::Sequential) {
        return Err("finality certificate does not verify against the validator set".into());
    }
    let value = p
        .value
        .as_deref()
        .map(hex::decode)
        .transpose()
        .map_err(|e| format!("value: {e}"))?;
    let found = smt::verify(&header.state_root.0, &key.hash(), &p.proof)
        .map_err(|e| format!("state proof: {e}"))?;
    match (&value, found) {
        (Some(v), Some(h)) if value_hash(v) == h => {}
        (None, None) => {}
        (Some(_), Some(_)) => return Err("value does not match the proven leaf".into()),
        (Some(_), None) => return Err("proof shows the key absent but a value was given".into()),
        (None, Some(_)) => return Err("proof shows the key present but no value was given".into()),
    }
    Ok(Proven {
        height: header.height,
        state_root: header.state_root,
        value,
    })
}
