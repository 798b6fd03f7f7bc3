//! The randomness beacon and the verification committees it draws.
//!
//! **Why.** Which receipts are re-executed, and by whom, must be decided by nobody: not by a
//! block's proposer (who could hold its receipts until it leads, or reorder until none is
//! sampled), not by the worker, not by any validator. The beacon is a threshold BLS12-381
//! signature, by the validators' shared key, over `(chain id, round)`. Such a signature is
//! *unique*: whichever quorum of partial signatures recovers it, it is the same value, so a
//! proposer can delay it (by leaving shares out) but never choose it; and no coalition below
//! the quorum can compute it early.
//!
//! **Rounds.** Heights are grouped in beacon rounds of [`BeaconConfig::period`] blocks. A
//! receipt posted at height `h` is judged by the value of round `h / period`. Honest
//! validators sign a round only once its last block is final, so the value cannot be known
//! before every receipt it judges is fixed. Only rounds that hold receipts are signed.
//!
//! **Transactions.** Each validator of the key posts its partial signature
//! ([`TxKind::BeaconShare`](crate::TxKind::BeaconShare)); the ledger checks it against the
//! public polynomial and, once `quorum` are in, recovers the signature, checks it against the
//! group key and records `value = H(signature)`. Then, per receipt of the round: sampled at
//! `sample_rate_bps` ([`sampled`]), and if so a committee of `committee_size` validators drawn
//! by stake ([`committee`]), who alone may judge it first.
//!
//! **Where the key comes from.** The genesis names it (`Genesis::beacon`), dealt by
//! `deai chain init` ([`deal`]), which already creates every validator's key on a devnet, so
//! it learns nothing it did not know. A distributed key generation run on chain, and
//! resharing when the set changes at epoch ends, are the next step (issue 24); the output
//! type is feldman-desmedt's so that a reshare can start from it. Until then the genesis
//! players keep the beacon alive as long as a quorum of them signs.

use super::{err, JobStatus, Key, Res, State, BPS, DL_JOB};
use crate::tx::Address;
use commonware_codec::{Encode, Read, ReadExt};
use commonware_cryptography::bls12381::dkg::feldman_desmedt;
use commonware_cryptography::bls12381::primitives::group::Share;
use commonware_cryptography::bls12381::primitives::ops::{self, threshold};
use commonware_cryptography::bls12381::primitives::sharing::{Mode, ModeVersion};
use commonware_cryptography::bls12381::primitives::variant::{MinPk, PartialSignature, Variant};
use commonware_cryptography::ed25519::PublicKey;
use commonware_utils::{N3f1, Participant};
use deai_types::Hash256;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// The dealt key's public output: the public polynomial and the players, in the form a
/// feldman-desmedt reshare starts from.
pub type BeaconOutput = feldman_desmedt::Output<MinPk, PublicKey>;

/// Signing namespace of beacon partials.
pub const BEACON_NAMESPACE: &[u8] = b"deai-beacon-v1";
/// Most players a beacon key may have.
pub const MAX_BEACON_PLAYERS: u32 = 256;
/// Bytes of a BLS12-381 signature in G2 (a beacon partial or value).
pub const SIGNATURE_BYTES: usize = crate::tx::BEACON_SIGNATURE_BYTES;
/// Blocks per beacon round unless the genesis says otherwise.
pub const DEFAULT_BEACON_PERIOD: u64 = 4;

/// The beacon's key as the chain knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconConfig {
    /// The encoded [`BeaconOutput`].
    #[serde(with = "crate::tx::hex_vec")]
    pub output: Vec<u8>,
    /// The group public key (G1, 48 bytes), what every value is checked against.
    #[serde(with = "crate::tx::hex_vec")]
    pub group_key: Vec<u8>,
    /// Player `i` holds share index `i` (sorted addresses, as the output orders its keys).
    #[serde(with = "crate::tx::hex_addrs")]
    pub players: Vec<Address>,
    /// Partials needed to recover a value.
    pub quorum: u32,
    /// Blocks per round.
    pub period: u64,
}

/// The beacon key a genesis names: `output` dealt by [`deal`] for the genesis validators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisBeacon {
    #[serde(with = "crate::tx::hex_vec")]
    pub output: Vec<u8>,
    #[serde(default = "default_period")]
    pub period: u64,
}

fn default_period() -> u64 {
    DEFAULT_BEACON_PERIOD
}

/// One beacon round: the receipts it judges, the partials so far and, once recovered, its
/// value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconRound {
    pub round: u64,
    /// Jobs whose receipts were posted in this round, in posting order.
    pub jobs: Vec<Hash256>,
    /// `(player index, partial signature)`, sorted by index.
    pub partials: Vec<(u32, Vec<u8>)>,
    /// The recovered threshold signature.
    #[serde(with = "crate::tx::hex_vec")]
    pub signature: Vec<u8>,
    /// `H(signature)`, once recovered.
    pub value: Option<Hash256>,
    /// The height whose block recovered it.
    pub at: Option<u64>,
    /// The active validators and their stake when the round's last block ended: committees
    /// are drawn from this list, so that no stake moved after the round (say, by whoever
    /// learns the value first) steers them.
    pub candidates: Vec<Candidate>,
}

/// A validator a committee may be drawn from, with its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    #[serde(with = "crate::tx::hex_addr")]
    pub address: Address,
    pub stake: u64,
}

fn buf(b: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(b)
}

/// Decodes a beacon output, refusing anything malformed or too large.
pub fn decode_output(bytes: &[u8]) -> Result<BeaconOutput, String> {
    let cfg = (
        NonZeroU32::new(MAX_BEACON_PLAYERS).expect("non-zero"),
        ModeVersion::v0(),
    );
    let mut buf = buf(bytes);
    let out = BeaconOutput::read_cfg(&mut buf, &cfg)
        .map_err(|e| format!("the beacon output does not decode: {e}"))?;
    if !buf.is_empty() {
        return err("the beacon output has trailing bytes");
    }
    Ok(out)
}

/// The message round `round` of chain `chain` signs.
pub fn message(chain: &Hash256, round: u64) -> Vec<u8> {
    let mut m = chain.0.to_vec();
    m.extend_from_slice(&round.to_be_bytes());
    m
}

/// A dealt beacon key: the encoded [`BeaconOutput`] and each player's encoded share.
pub type DealtKey = (Vec<u8>, Vec<(Address, Vec<u8>)>);

/// A trusted dealer's key for `players` (ledger addresses, i.e. ed25519 public keys), from a
/// 32-byte secret seed: the encoded [`BeaconOutput`] for the genesis and each player's
/// encoded share. What `deai chain init` and tests use.
pub fn deal(players: &[Address], seed: [u8; 32]) -> Result<DealtKey, String> {
    use commonware_utils::TryCollect;
    use rand_core_cw::SeedableRng;
    let keys: Vec<PublicKey> = players
        .iter()
        .map(|a| {
            PublicKey::read(&mut buf(a)).map_err(|e| format!("{}: not a key: {e}", hex::encode(a)))
        })
        .collect::<Result<_, _>>()?;
    let set: commonware_utils::ordered::Set<PublicKey> = keys
        .into_iter()
        .try_collect()
        .map_err(|_| "beacon players must be distinct".to_string())?;
    if set.is_empty() || set.len() > MAX_BEACON_PLAYERS as usize {
        return err(format!(
            "1..={MAX_BEACON_PLAYERS} beacon players, got {}",
            set.len()
        ));
    }
    let rng = rand_chacha_cw::ChaCha20Rng::from_seed(seed);
    let (output, shares) =
        feldman_desmedt::deal::<MinPk, PublicKey, N3f1>(rng, Mode::NonZeroCounter, set)
            .map_err(|e| format!("dealing the beacon key: {e:?}"))?;
    let shares = shares
        .iter_pairs()
        .map(|(pk, share)| {
            let mut a = [0u8; 32];
            a.copy_from_slice(pk.as_ref());
            (a, share.encode().to_vec())
        })
        .collect();
    Ok((output.encode().to_vec(), shares))
}

/// A player's partial signature (the 96 signature bytes) of `round`, from its encoded share.
pub fn sign(share: &[u8], chain: &Hash256, round: u64) -> Result<Vec<u8>, String> {
    let share = Share::read(&mut buf(share)).map_err(|e| format!("beacon share: {e}"))?;
    let p = threshold::sign_message::<MinPk>(&share, BEACON_NAMESPACE, &message(chain, round));
    Ok(p.value.encode().to_vec())
}

/// The player index an encoded share signs as.
pub fn share_index(share: &[u8]) -> Result<u32, String> {
    let share = Share::read(&mut buf(share)).map_err(|e| format!("beacon share: {e}"))?;
    Ok(share.index.get())
}

/// Whether the receipt of `job`, judged by beacon `value`, is re-executed at `rate_bps`.
pub fn sampled(value: &Hash256, job: &Hash256, rate_bps: u64) -> bool {
    let h = Hash256::digest_parts("deai-sample-v2", &[value.as_bytes(), job.as_bytes()]);
    u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes")) % BPS < rate_bps
}

/// Draws `k` distinct members from `candidates` (address, stake), each draw weighted by
/// stake, from beacon `value` and `job`: the same committee on every node, unknowable before
/// the value.
pub fn committee(
    value: &Hash256,
    job: &Hash256,
    candidates: &[(Address, u64)],
    k: usize,
) -> Vec<Address> {
    let mut pool: Vec<(Address, u64)> = candidates.iter().filter(|c| c.1 > 0).copied().collect();
    pool.sort();
    let mut out = Vec::new();
    for i in 0..k as u64 {
        let total: u128 = pool.iter().map(|c| c.1 as u128).sum();
        if total == 0 {
            break;
        }
        let h = Hash256::digest_parts(
            "deai-committee-v1",
            &[value.as_bytes(), job.as_bytes(), &i.to_le_bytes()],
        );
        let mut x = u128::from_le_bytes(h.0[..16].try_into().expect("16 bytes")) % total;
        let pick = pool
            .iter()
            .position(|c| {
                if x < c.1 as u128 {
                    true
                } else {
                    x -= c.1 as u128;
                    false
                }
            })
            .expect("x < total");
        out.push(pool.remove(pick).0);
    }
    out.sort();
    out
}

impl State {
    /// The beacon round `round`, if it holds receipts.
    pub fn beacon_round(&self, round: u64) -> Option<&BeaconRound> {
        self.beacons.get(&round)
    }

    /// Rounds that hold receipts, newest last.
    pub fn beacon_rounds(&self) -> impl DoubleEndedIterator<Item = (&u64, &BeaconRound)> {
        self.beacons.iter()
    }

    /// Rounds whose last block is final (at this state's height) and whose value is not
    /// recovered yet: what the players sign now.
    pub fn beacon_pending(&self) -> Vec<u64> {
        let Some(b) = &self.meta.beacon else {
            return Vec::new();
        };
        self.beacons
            .iter()
            .filter(|(r, br)| br.value.is_none() && self.round_closed(b.period, **r))
            .map(|(r, _)| *r)
            .collect()
    }

    fn round_closed(&self, period: u64, round: u64) -> bool {
        self.meta.height >= round.saturating_add(1).saturating_mul(period)
    }

    /// At the end of block `h`: if it is the last block of a round holding receipts, records
    /// the validators its committees will be drawn from.
    pub(super) fn close_beacon_round(&mut self, h: u64) {
        let Some(period) = self.meta.beacon.as_ref().map(|b| b.period) else {
            return;
        };
        if !(h + 1).is_multiple_of(period) {
            return;
        }
        self.prune_beacon_rounds();
        let round = h / period;
        if !self.beacons.contains_key(&round) {
            return;
        }
        let candidates = self
            .active_validators()
            .into_iter()
            .map(|(address, stake)| Candidate { address, stake })
            .collect();
        self.dirty.insert(Key::Beacon(round));
        self.beacons.get_mut(&round).expect("checked").candidates = candidates;
    }

    /// Forgets the oldest rounds whose receipts have all settled (once per round, at its
    /// end): nothing reads a round's value, candidates or signature after that (verifiers
    /// key proofs of verification only for unsettled jobs, and a settled job keeps its
    /// committee and its round's number), and the state would otherwise keep one record
    /// per round forever. A round still waiting for its value goes too once its receipts
    /// settled without it (escalated): a late partial for it is then refused.
    fn prune_beacon_rounds(&mut self) {
        while let Some((&r, br)) = self.beacons.iter().next() {
            let settled = br
                .jobs
                .iter()
                .all(|j| self.jobs.get(j).is_none_or(|j| j.status.is_final()));
            if !settled {
                break;
            }
            self.beacons.remove(&r);
            self.dirty.insert(Key::Beacon(r));
        }
    }

    /// Files the receipt of `job`, posted at the current height, under its beacon round;
    /// returns the round (`None` on a chain without a beacon).
    pub(super) fn enroll_receipt(&mut self, job: Hash256) -> Option<u64> {
        let period = self.meta.beacon.as_ref()?.period;
        let round = self.meta.height / period;
        self.dirty.insert(Key::Beacon(round));
        let r = self.beacons.entry(round).or_default();
        r.round = round;
        r.jobs.push(job);
        Some(round)
    }

    /// A player's partial signature of `round`: checked against the public polynomial; the
    /// one that completes a quorum recovers the value and samples the round's receipts.
    pub(super) fn beacon_share(&mut self, from: Address, round: u64, sig: &[u8]) -> Res {
        let b = self
            .meta
            .beacon
            .clone()
            .ok_or("this chain has no beacon key")?;
        let index = b
            .players
            .binary_search(&from)
            .map_err(|_| "sender is not a beacon player")? as u32;
        let r = self
            .beacons
            .get(&round)
            .ok_or("no receipt awaits this beacon round")?;
        if r.value.is_some() {
            return err("this beacon round is already recovered");
        }
        if !self.round_closed(b.period, round) {
            return err(format!(
                "beacon round {round} ends at height {}; it may be signed only after",
                (round + 1) * b.period - 1
            ));
        }
        if r.partials.iter().any(|(i, _)| *i == index) {
            return err("this player already signed this round");
        }
        if sig.len() != SIGNATURE_BYTES {
            return err(format!("a partial signature is {SIGNATURE_BYTES} bytes"));
        }
        let value = <MinPk as Variant>::Signature::read(&mut buf(sig))
            .map_err(|e| format!("partial signature does not decode: {e}"))?;
        let out = decode_output(&b.output)?;
        let partial = PartialSignature::<MinPk> {
            index: Participant::new(index),
            value,
        };
        let msg = message(&self.meta.chain_id, round);
        threshold::verify_message::<MinPk>(out.public(), BEACON_NAMESPACE, &msg, &partial)
            .map_err(|_| "the partial signature does not verify for this player and round")?;
        let mut stored = r.partials.clone();
        let at = stored.partition_point(|(i, _)| *i < index);
        stored.insert(at, (index, sig.to_vec()));
        // Recover (and check) before touching the state: a transaction that fails changes
        // nothing.
        let recovered = if (stored.len() as u32) < b.quorum {
            None
        } else {
            let partials = stored
                .iter()
                .map(|(i, s)| {
                    Ok(PartialSignature::<MinPk> {
                        index: Participant::new(*i),
                        value: <MinPk as Variant>::Signature::read(&mut buf(s))
                            .map_err(|e| format!("stored partial: {e}"))?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let sig = threshold::recover::<MinPk, _>(
                out.public(),
                &partials,
                &commonware_parallel::Sequential,
            )
            .map_err(|e| format!("recovering the beacon: {e:?}"))?;
            ops::verify_message::<MinPk>(out.public().public(), BEACON_NAMESPACE, &msg, &sig)
                .map_err(|_| "the recovered beacon does not verify")?;
            Some(sig.encode().to_vec())
        };
        self.dirty.insert(Key::Beacon(round));
        let r = self.beacons.get_mut(&round).expect("checked above");
        let Some(bytes) = recovered else {
            r.partials = stored;
            return Ok(());
        };
        let value = Hash256::digest_parts("deai-beacon-value-v1", &[&bytes]);
        let h = self.meta.height;
        // The partials served their purpose: the signature proves the value.
        r.partials = Vec::new();
        r.signature = bytes;
        r.value = Some(value);
        r.at = Some(h);
        let jobs = r.jobs.clone();
        self.events.push(format!("beacon round {round} recovered"));
        for job in jobs {
            self.sample_job(job, round, &value);
        }
        Ok(())
    }

    /// Decides whether the receipt of `job` (round `round`, value `value`) is re-executed, and
    /// by whom.
    fn sample_job(&mut self, id: Hash256, round: u64, value: &Hash256) {
        let Some(j) = self.jobs.get(&id) else { return };
        let Some(rec) = &j.receipt else { return };
        if j.status != JobStatus::Receipted || rec.beacon_round != Some(round) {
            return;
        }
        let p = &self.meta.params;
        let h = self.meta.height;
        if !sampled(value, &id, p.sample_rate_bps) {
            // Not re-executed: it settles at its challenge window's end, or at once if the
            // value came after it.
            let due = rec.posted_at.saturating_add(p.challenge_window).max(h + 1);
            if j.deadline > due {
                let old = j.deadline;
                self.dirty.insert(Key::Job(id));
                self.jobs.get_mut(&id).expect("exists").deadline = due;
                self.deadlines.remove(&(old, DL_JOB, id.0));
                self.deadlines.insert((due, DL_JOB, id.0));
            }
            return;
        }
        // Neither side of the job judges it.
        let (worker, client) = (rec.worker, j.client);
        let candidates: Vec<(Address, u64)> = self
            .beacons
            .get(&round)
            .map(|r| r.candidates.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|c| c.address != worker && c.address != client)
            .map(|c| (c.address, c.stake))
            .collect();
        let members = committee(value, &id, &candidates, p.committee_size as usize);
        let (old, new) = (j.deadline, h.saturating_add(p.verdict_window));
        for m in &members {
            if let Some(v) = self.validators.get_mut(m) {
                v.assigned += 1;
                self.dirty.insert(Key::Validator(*m));
            }
        }
        self.dirty.insert(Key::Job(id));
        let jm = self.jobs.get_mut(&id).expect("exists");
        jm.status = JobStatus::Sampled;
        jm.committee = members;
        jm.sampled_at = Some(h);
        jm.deadline = new;
        self.deadlines.remove(&(old, DL_JOB, id.0));
        self.deadlines.insert((new, DL_JOB, id.0));
        self.events.push(format!("job {} sampled", id.short()));
        if self.jobs[&id].committee.is_empty() {
            // No validator but the job's own parties: everyone judges it.
            self.escalate(id, "no validator could be drawn for its committee");
        }
    }
}
