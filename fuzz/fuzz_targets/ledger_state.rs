//! The ledger's state transition driven by a program of signed transactions.
//!
//! A fixed genesis (actors 0-3: validators with 50 000 stake; 4: client; 5 and 7: would-be
//! workers; 6: challenger; 8: an unfunded key; one allowed model, short windows so jobs,
//! unbonding and governance finish within a few blocks). The input is read as:
//!
//! ```text
//! input  = snap_pos:u16le block*          (at most MAX_BLOCKS blocks)
//! block  = ctl:u8 tx*                     (ctl & 0x0f) % 9 transactions
//! tx     = who:u8 kind:u8 a:u8 b:u8 c:u8  (missing bytes read as 0)
//! ```
//! `who & 0x0f` % 9 is the signer and `who >> 4` the fee (15: u64::MAX, 14: min_fee + 5,
//! else min_fee); `kind % 19` picks the transaction and a, b, c its fields (see [`build`]).
//! Every transaction is signed by its sender, for this chain, with the sender's next nonce, so
//! every block must apply. `(ctl >> 4) & 7` first tries a corrupted copy of the block
//! (1: flipped signature bit, 2: nonce + 1, 3: other chain id, 4: wrong height, 5: fee below
//! the minimum, 6: `from` swapped, 7: a replayed transaction of the previous block), which
//! must be refused with the state left exactly as it was.
//!
//! Checked after every block: `audit()` (supply and stake conservation), a twin state built
//! by `State::from_genesis` and fed the same blocks returns the same result and root, the
//! block result names the state root, and each sender's nonce counts its transactions. At the
//! end: state proofs of every record verify against the root, the snapshot reloads to the
//! same state and bytes, both run on through 6 more empty blocks in step (the deadline index
//! is rebuilt on load), and a snapshot with one flipped byte (at `snap_pos`) either fails to
//! load or loads the same state.
//!
//! `DEAI_FUZZ_TRACE=1` prints each block's outcomes and events (to check what seeds reach).

#![no_main]

use deai_ledger::smt;
use deai_ledger::state::{app_id, dataset_id, value_hash, Key};
use deai_ledger::tx::{Beneficiary, DataShard, Shard};
use deai_ledger::{
    Address, Genesis, GenesisAccount, GenesisValidator, Param, ParamChange, Params, SignedTx,
    State, Tx, TxKind,
};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const ACTORS: usize = 9;
const VALIDATORS: usize = 4;
const MODEL_A: Hash256 = Hash256([0xA1; 32]);
const MODEL_B: Hash256 = Hash256([0xB2; 32]);
/// A recipient that is no key anyone holds.
const OUTSIDER: Address = [0xEE; 32];
const MAX_BLOCKS: usize = 10;
const MAX_TXS_PER_BLOCK: usize = 8;
const TAIL_BLOCKS: u64 = 6;
const JOBS: u8 = 8;
const PROPOSALS: u64 = 4;

/// Amounts: a table of interesting values, nudged by the high nibble.
const AMT: [u64; 16] = [
    0,
    1,
    2,
    10,
    99,
    100,
    1_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    1_000_000,
    u64::MAX / 2,
    u64::MAX,
    123,
];
/// Governance values: around every limit `Params::check` and `validate` know.
const VAL: [u64; 16] = [
    0,
    1,
    2,
    3,
    5,
    10,
    100,
    1_000,
    5_000,
    5_001,
    9_000,
    10_000,
    10_001,
    1_000_000,
    1_000_001,
    u64::MAX,
];
const MAX_TOKENS: [u32; 8] = [0, 1, 16, 100, 1_000, 4_096, 65_536, u32::MAX];
const TOKENS: [u32; 8] = [0, 1, 10, 100, 1_000, 2_000, 100_000, u32::MAX];

struct Fixture {
    keys: Vec<SigningKey>,
    addrs: Vec<Address>,
    genesis: Genesis,
    state: State,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys: Vec<SigningKey> = (0..ACTORS)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let addrs: Vec<Address> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let mut accounts = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let (balance, stake) = match i {
                0..=3 => (1_000_000, 50_000),
                4 => (1_000_000, 0),
                5..=7 => (100_000, 0),
                _ => continue, // actor 8 starts with nothing
            };
            accounts.push(GenesisAccount {
                address: *a,
                balance,
                stake,
            });
        }
        let genesis = Genesis {
            chain_name: "fuzz".into(),
            accounts,
            validators: addrs[..VALIDATORS]
                .iter()
                .enumerate()
                .map(|(i, a)| GenesisValidator {
                    address: *a,
                    endpoint: format!("v{i}"),
                    p2p: String::new(),
                })
                .collect(),
            params: Params {
                challenge_window: 2,
                verdict_window: 3,
                job_timeout: 4,
                unbonding_period: 3,
                voting_period: 3,
                execution_delay: 1,
                allowed_models: vec![MODEL_A],
                ..Params::default()
            },
            // Short epochs: the set changes as the fuzzer stakes and unstakes.
            epoch_length: 3,
            beacon: None,
            royalties: Vec::new(),
        };
        let state = State::from_genesis(&genesis).expect("the fuzz genesis is valid");
        state.audit().expect("genesis audits");
        Fixture {
            keys,
            addrs,
            genesis,
            state,
        }
    })
}

fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("DEAI_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn rec(&mut self) -> [u8; 5] {
        std::array::from_fn(|_| self.next().unwrap_or(0))
    }
}

fn amt(b: u8) -> u64 {
    AMT[(b & 15) as usize].saturating_add((b >> 4) as u64)
}

fn job_id(i: u8) -> Hash256 {
    Hash256([0x40 + i % JOBS; 32])
}

fn model(bit: u8) -> Hash256 {
    if bit & 1 == 0 {
        MODEL_A
    } else {
        MODEL_B
    }
}

/// The transaction kind record `[_, kind, a, b, c]` names.
fn kind(f: &Fixture, [_, k, a, b, c]: [u8; 5]) -> TxKind {
    let actor = |x: u8| match x % (ACTORS as u8 + 1) {
        i if (i as usize) < ACTORS => f.addrs[i as usize],
        _ => OUTSIDER,
    };
    // Contributors picked by the bits of `x` (so lists repeat keys, name outsiders, or run
    // past a job's worker count).
    let picks = |x: u8| -> Vec<Address> { (0..8).filter(|i| x >> i & 1 == 1).map(actor).collect() };
    match k % 19 {
        0 => TxKind::Transfer {
            to: actor(a),
            amount: amt(b),
        },
        1 => TxKind::Stake { amount: amt(a) },
        2 => TxKind::Unstake { amount: amt(a) },
        3 => TxKind::RegisterWorker {
            models: match a & 3 {
                0 => vec![],
                1 => vec![MODEL_A],
                2 => vec![MODEL_B],
                _ => vec![MODEL_B, MODEL_A, MODEL_B],
            },
            profile: "deai-cpu-bi-v1".into(),
            hardware: "2 vCPU".into(),
            price_per_1k: b as u64 * (1 + (c as u64 >> 4) * 100),
            endpoint: "w".into(),
        },
        4 => TxKind::RegisterValidator {
            endpoint: "v".into(),
            p2p: if c & 1 == 0 {
                "127.0.0.1:9".into()
            } else {
                "not an address".into()
            },
        },
        5 => TxKind::OpenJob {
            job: job_id(a),
            model: model(c),
            max_tokens: MAX_TOKENS[(c >> 5) as usize],
            escrow: amt(b),
            worker: match (c >> 1) & 0x0f {
                i if i as usize <= ACTORS => Some(actor(i)),
                _ => None,
            },
            // An app its owner may have registered (record 14), and a client that may have
            // authorized the sender (record 15).
            app: (a & 0x80 != 0).then(|| app_id(&actor(b >> 4), APP_NAMES[(a >> 6) as usize & 1])),
            client: (a & 0x20 != 0).then(|| actor(b & 0x0f)),
        },
        6 => TxKind::PostReceipt {
            job: job_id(a),
            receipt: Hash256([b; 32]),
            tokens: TOKENS[(c & 7) as usize],
            pointer: "p".into(),
        },
        7 => TxKind::Challenge { job: job_id(a) },
        8 => TxKind::Verdict {
            job: job_id(a),
            accept: b & 1 == 1,
        },
        9 => TxKind::Propose {
            change: match a & 3 {
                0 | 1 => ParamChange::Set {
                    param: Param::ALL[b as usize % Param::ALL.len()],
                    value: VAL[(c & 15) as usize],
                },
                2 => match b & 3 {
                    0 => ParamChange::AllowModel { model: model(c) },
                    1 => ParamChange::Grant {
                        to: actor(c),
                        amount: amt(c),
                    },
                    2 => ParamChange::SetRoyalty {
                        model: model(c),
                        beneficiaries: picks(c)
                            .into_iter()
                            .map(|to| Beneficiary {
                                to,
                                weight: (b >> 2) as u64,
                            })
                            .collect(),
                    },
                    _ => ParamChange::AllowTrainedModel {
                        model: model(c),
                        training: job_id(b >> 2),
                    },
                },
                _ => ParamChange::DisallowModel { model: model(c) },
            },
        },
        10 => TxKind::Vote {
            proposal: a as u64 % PROPOSALS,
            yes: b & 1 == 1,
        },
        11 => TxKind::OpenTraining {
            job: job_id(a),
            checkpoint: Hash256([b; 32]),
            commitment: Hash256([c; 32]),
            rounds: (b % 5) as u32,
            workers: (c % 5) as u32,
            reward_per_round: amt(c),
            coordinator: actor(b >> 4),
            // Shards of datasets its actors may have registered (record 16).
            data: picks(a & c)
                .iter()
                .map(|owner| DataShard {
                    dataset: dataset_id(owner, &shards(c)),
                    shard: SHARD,
                })
                .collect(),
        },
        12 => TxKind::TrainRound {
            job: job_id(a),
            round: (b % 4) as u32,
            checkpoint: Hash256([c; 32]),
            report: Hash256([b; 32]),
            accepted: picks(c),
            rejected: picks(c.rotate_left(3) & b),
            url: "http://127.0.0.1:1".into(),
        },
        13 => TxKind::TrainVerdict {
            job: job_id(a),
            round: (b % 4) as u32,
            report: Hash256([b; 32]),
            accept: c & 1 == 1,
        },
        14 => TxKind::RegisterApp {
            name: APP_NAMES[a as usize & 1].into(),
            fee_bps: VAL[(c & 15) as usize],
        },
        15 => TxKind::Authorize {
            gateway: actor(a),
            limit: amt(b),
            expires: c as u64,
        },
        16 => TxKind::RegisterDataset {
            license: "CC0".into(),
            shards: shards(c),
        },
        17 => TxKind::Delegate {
            validator: actor(a),
            amount: amt(b),
        },
        _ => TxKind::Undelegate {
            validator: actor(a),
            amount: amt(b),
            to: (c & 0x80 != 0).then(|| actor(c)),
        },
    }
}

const APP_NAMES: [&str; 2] = ["a", "b"];
const SHARD: Hash256 = Hash256([0x5a; 32]);

/// A dataset's shards: none (refused), or one shard of a few token counts.
fn shards(c: u8) -> Vec<Shard> {
    match c & 3 {
        0 => vec![],
        n => vec![Shard {
            hash: SHARD,
            tokens: n as u64 * 50 - 50,
        }],
    }
}

/// A signed transaction for the record, with the sender's next nonce (`sent` counts what
/// the sender already has in this block).
fn build(f: &Fixture, s: &State, sent: &mut [u64; ACTORS], rec: [u8; 5]) -> (usize, SignedTx) {
    let who = (rec[0] & 0x0f) as usize % ACTORS;
    let min_fee = s.params().min_fee;
    let fee = match rec[0] >> 4 {
        15 => u64::MAX,
        14 => min_fee.saturating_add(5),
        _ => min_fee,
    };
    let nonce = s.account(&f.addrs[who]).nonce + sent[who];
    sent[who] += 1;
    let tx = Tx {
        chain: s.chain_id(),
        from: [0; 32],
        nonce,
        fee,
        kind: kind(f, rec),
    }
    .sign(&f.keys[who]);
    (who, tx)
}

/// A copy of `txs` (signed by `signers`) that no honest node may accept, and the height to
/// offer it at; `None` when the mode does not apply.
fn corrupt(
    f: &Fixture,
    s: &State,
    mode: u8,
    txs: &[SignedTx],
    signers: &[usize],
    prev: &[SignedTx],
) -> Option<(u64, Vec<SignedTx>)> {
    let h = s.height() + 1;
    let mut bad = txs.to_vec();
    let last = bad.len().checked_sub(1);
    let resign = |t: &SignedTx, who: usize, edit: &dyn Fn(&mut Tx)| {
        let mut tx = t.tx.clone();
        edit(&mut tx);
        tx.sign(&f.keys[who])
    };
    match mode {
        1 => {
            let i = last?;
            let bit = bad[i].tx.nonce as usize + i;
            bad[i].sig[(bit / 8) % 64] ^= 1 << (bit % 8);
        }
        2 => {
            let i = last?;
            bad[i] = resign(&bad[i], signers[i], &|t| t.nonce += 1);
        }
        3 => {
            let i = last?;
            bad[i] = resign(&bad[i], signers[i], &|t| t.chain = Hash256([0x5A; 32]));
        }
        4 => return Some((if txs.len() % 2 == 0 { h + 1 } else { h - 1 }, bad)),
        5 => {
            let i = last?;
            let min = s.params().min_fee;
            if min == 0 {
                return None;
            }
            bad[i] = resign(&bad[i], signers[i], &|t| t.fee = min - 1);
        }
        6 => {
            let i = last?;
            bad[i].tx.from = f.addrs[(signers[i] + 1) % ACTORS];
        }
        7 => bad.push(prev.first()?.clone()),
        _ => return None,
    }
    Some((h, bad))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(p0), Some(p1)) = (input.next(), input.next()) else {
        return;
    };
    let snap_pos = u16::from_le_bytes([p0, p1]) as usize;
    let f = fixture();
    // O(1) clone of the cached genesis state; the twin is built from scratch.
    let mut s = f.state.clone();
    let mut twin = State::from_genesis(&f.genesis).expect("genesis");
    assert_eq!(twin.root(), s.root());
    let mut nonces = [0u64; ACTORS];
    let mut prev: Vec<SignedTx> = Vec::new();

    for _ in 0..MAX_BLOCKS {
        let Some(ctl) = input.next() else { break };
        let n = (ctl & 0x0f) as usize % (MAX_TXS_PER_BLOCK + 1);
        let mut sent = [0u64; ACTORS];
        let mut txs = Vec::with_capacity(n);
        let mut signers = Vec::with_capacity(n);
        for _ in 0..n {
            let (who, tx) = build(f, &s, &mut sent, input.rec());
            signers.push(who);
            txs.push(tx);
        }

        if let Some((h, bad)) = corrupt(f, &s, (ctl >> 4) & 7, &txs, &signers, &prev) {
            let (root, height, snap) = (s.root(), s.height(), s.to_snapshot());
            let r = s.apply_block(h, &bad);
            assert!(
                r.is_err(),
                "corrupted block (mode {}) applied",
                (ctl >> 4) & 7
            );
            assert_eq!(s.root(), root, "a refused block changed the root");
            assert_eq!(s.height(), height, "a refused block changed the height");
            assert_eq!(s.to_snapshot(), snap, "a refused block changed the state");
        }

        let h = s.height() + 1;
        let r = s
            .apply_block(h, &txs)
            .expect("a block of signed, right-nonce transactions applies");
        let rt = twin.apply_block(h, &txs).expect("twin applies");
        assert_eq!(r, rt, "same blocks, different results");
        if trace() {
            eprintln!("block {h}: events {:?}", r.events);
            for (t, o) in txs.iter().zip(&r.outcomes) {
                eprintln!("  {} -> {:?}", t.tx.kind.name(), o.error);
            }
        }
        assert_eq!(s.root(), twin.root());
        assert_eq!(r.state_root, s.root());
        assert_eq!(r.outcomes.len(), txs.len());
        if let Err(e) = s.audit() {
            panic!("audit failed after block {h}: {e}");
        }
        for (i, k) in sent.iter().enumerate() {
            nonces[i] += k;
            assert_eq!(
                s.account(&f.addrs[i]).nonce,
                nonces[i],
                "nonce of actor {i}"
            );
        }
        prev = txs;
    }

    check_proofs(f, &s);

    // Snapshot round trip, then both run on in step.
    let snap = s.to_snapshot();
    let mut back = State::from_snapshot(&snap).expect("a state's own snapshot loads");
    assert_eq!(back.root(), s.root());
    assert_eq!(back.height(), s.height());
    assert_eq!(back.to_snapshot(), snap, "snapshot is not canonical");
    for _ in 0..TAIL_BLOCKS {
        let h = s.height() + 1;
        let a = s.apply_block(h, &[]).expect("empty block");
        let b = back.apply_block(h, &[]).expect("empty block (restored)");
        assert_eq!(a, b, "restored state diverged at height {h}");
        s.audit().expect("audit after empty block");
    }

    // One flipped byte: refused, or (no field changed meaning) the same state.
    let snap = s.to_snapshot();
    let mut bent = snap.clone();
    let i = snap_pos % bent.len();
    bent[i] ^= 1 << (p0 % 8);
    if let Ok(x) = State::from_snapshot(&bent) {
        assert_eq!(
            x.root(),
            s.root(),
            "a corrupted snapshot loaded as another state"
        );
    }
});

/// Every record the program can touch has a proof that verifies against the root, and
/// proves exactly the record's value hash (or its absence).
fn check_proofs(f: &Fixture, s: &State) {
    let mut keys = vec![Key::Meta, Key::Account(OUTSIDER)];
    for a in &f.addrs {
        keys.extend([Key::Account(*a), Key::Worker(*a), Key::Validator(*a)]);
    }
    keys.extend((0..JOBS).map(|j| Key::Job(job_id(j))));
    keys.extend((0..=PROPOSALS).map(Key::Proposal));
    keys.extend((0..JOBS).map(|j| Key::Training(job_id(j))));
    keys.extend([Key::Royalty(MODEL_A), Key::Royalty(MODEL_B)]);
    for a in &f.addrs {
        keys.extend(APP_NAMES.map(|n| Key::App(app_id(a, n))));
        keys.extend((1..4).map(|c| Key::Dataset(dataset_id(a, &shards(c)))));
        keys.extend(f.addrs.iter().map(|g| Key::Allowance(*a, *g)));
        keys.extend(f.addrs.iter().map(|v| Key::Delegation(*a, *v)));
    }
    let root = s.root().0;
    for k in keys {
        let (record, proof) = s.prove(&k);
        let want = record.as_deref().map(value_hash);
        assert_eq!(
            smt::verify(&root, &k.hash(), &proof),
            Ok(want),
            "proof of {k:?}"
        );
    }
}
