//! State proofs a client can check with no trust in the node that served them: a finality
//! certificate signed by a quorum of the genesis validators, over a block digest, which is
//! the hash of a header, which commits to a state root, under which a sparse-Merkle proof
//! shows the record (or its absence).

use crate::app::Scheme;
use crate::block::{Digest, Header};
use crate::node::{public_key, NAMESPACE};
use commonware_codec::{Encode, Read};
use commonware_consensus::simplex::types::Finalization;
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

/// Checks `p` for `key` against the validator set `validators` (the genesis validators'
/// addresses). Fails on any inconsistency; never trusts the serving node.
pub fn verify_state_proof(
    validators: &[Address],
    key: &Key,
    p: &StateProof,
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
