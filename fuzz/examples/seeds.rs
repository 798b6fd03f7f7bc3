//! Writes the seed corpora: `cargo run --example seeds` (from `fuzz/`) fills
//! `corpus/gguf/` with small generated models in every weight format,
//! `corpus/tokenizer_encode/` with a few strings, `corpus/ledger_tx/` and
//! `corpus/ledger_block/` with signed transactions of every kind and blocks of them,
//! `corpus/ledger_state/` with programs that run jobs, challenges, verdicts, governance,
//! unbonding and refused blocks, and `corpus/smt_proof/` with trees and proof edits.
//! All of `corpus/` is git-ignored.

use deai_chain::Block;
use deai_engine::gguf::WType;
use deai_engine::testing::{tiny_model_gguf, TinySpec};
use deai_ledger::{Param, ParamChange, SignedTx, Tx, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let gguf = root.join("gguf");
    std::fs::create_dir_all(&gguf).unwrap();
    let small = TinySpec {
        n_layer: 1,
        d_model: 32,
        n_head: 2,
        n_kv_head: 1,
        d_ff: 32,
        n_ctx: 16,
        ..TinySpec::default()
    };
    for wtype in [
        WType::Q4_0,
        WType::Q4_1,
        WType::Q8_0,
        WType::F16,
        WType::F32,
    ] {
        let spec = TinySpec {
            wtype,
            ..small.clone()
        };
        let name = format!("tiny-{}.gguf", wtype.name());
        std::fs::write(gguf.join(name), tiny_model_gguf(&spec)).unwrap();
    }
    let two_layers = TinySpec {
        n_layer: 2,
        ..small
    };
    std::fs::write(
        gguf.join("tiny-2-layers.gguf"),
        tiny_model_gguf(&two_layers),
    )
    .unwrap();

    let tok = root.join("tokenizer_encode");
    std::fs::create_dir_all(&tok).unwrap();
    let texts = [
        "\u{0}hello world",
        "\u{1}<|im_start|>user\nhi<|im_end|>\n",
        "\u{0}  two  spaces\tand\ttabs\n\n",
        "\u{1}caf\u{e9} 12345 \u{1F600} <|endoftext|>",
        "\u{0}hell hello he ll tt \u{4e2d}\u{6587}",
    ];
    for (i, t) in texts.iter().enumerate() {
        std::fs::write(tok.join(format!("seed-{i}")), t).unwrap();
    }
    ledger_seeds(&root);
    println!("seeds written under {}", root.display());
}

fn write_all(dir: &Path, items: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, b) in items.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), b).unwrap();
    }
}

/// One transaction of every kind, signed (the fuzz targets do not check signatures on
/// decode, but valid ones keep the seeds realistic).
fn sample_txs() -> Vec<SignedTx> {
    let key = SigningKey::from_bytes(&[3; 32]);
    let h = |b: u8| Hash256([b; 32]);
    let kinds = vec![
        TxKind::Transfer {
            to: [9; 32],
            amount: 1_000,
        },
        TxKind::Stake { amount: 10_000 },
        TxKind::Unstake { amount: u64::MAX },
        TxKind::RegisterWorker {
            models: vec![h(7), h(8)],
            profile: "deai-cpu-bi-v1".into(),
            hardware: "2 vCPU".into(),
            price_per_1k: 100,
            endpoint: "127.0.0.1:1".into(),
        },
        TxKind::RegisterValidator {
            endpoint: "v\u{e9}".into(),
            p2p: "127.0.0.1:27000".into(),
        },
        TxKind::OpenJob {
            job: h(1),
            model: h(7),
            max_tokens: 100,
            escrow: 5_000,
            worker: Some([4; 32]),
            app: Some(h(3)),
            client: Some([6; 32]),
        },
        TxKind::OpenJob {
            job: h(2),
            model: h(7),
            max_tokens: 1,
            escrow: 1,
            worker: None,
            app: None,
            client: None,
        },
        TxKind::PostReceipt {
            job: h(1),
            receipt: h(9),
            tokens: 2_000,
            pointer: "http://w/receipts/1".into(),
        },
        TxKind::Challenge { job: h(1) },
        TxKind::Verdict {
            job: h(1),
            accept: true,
        },
        TxKind::Propose {
            change: ParamChange::Set {
                param: Param::SlashBps,
                value: 9_000,
            },
        },
        TxKind::Propose {
            change: ParamChange::AllowModel { model: h(8) },
        },
        TxKind::Propose {
            change: ParamChange::DisallowModel { model: h(7) },
        },
        TxKind::Vote {
            proposal: 1,
            yes: false,
        },
        TxKind::RegisterDataset {
            license: "CC-BY-4.0".into(),
            shards: vec![deai_ledger::tx::Shard {
                hash: h(5),
                tokens: 4_096,
            }],
        },
        TxKind::RegisterApp {
            name: "chat".into(),
            fee_bps: 500,
        },
        TxKind::Authorize {
            gateway: [6; 32],
            limit: 10_000,
            expires: 1_000,
        },
        TxKind::Propose {
            change: ParamChange::Grant {
                to: [4; 32],
                amount: 100,
            },
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            Tx {
                chain: h(0x11),
                from: [0; 32],
                nonce: i as u64,
                fee: 1,
                kind,
            }
            .sign(&key)
        })
        .collect()
}

/// A `ledger_state` program (format in `fuzz_targets/ledger_state.rs`): a u16 snapshot
/// position, then blocks of `ctl` (low nibble: count; bits 4-6: corruption to try first)
/// and 5-byte records `[who | fee << 4, kind, a, b, c]`.
struct Prog(Vec<u8>);

impl Prog {
    fn new(snap_pos: u16) -> Self {
        Prog(snap_pos.to_le_bytes().to_vec())
    }
    fn block(mut self, corrupt: u8, txs: &[[u8; 5]]) -> Self {
        self.0.push((corrupt << 4) | txs.len() as u8);
        for t in txs {
            self.0.extend_from_slice(t);
        }
        self
    }
    fn empty(mut self, n: usize) -> Self {
        for _ in 0..n {
            self.0.push(0);
        }
        self
    }
}

// `ledger_state` kinds and actors.
const TRANSFER: u8 = 0;
const STAKE: u8 = 1;
const UNSTAKE: u8 = 2;
const REG_WORKER: u8 = 3;
const REG_VALIDATOR: u8 = 4;
const OPEN_JOB: u8 = 5;
const RECEIPT: u8 = 6;
const CHALLENGE: u8 = 7;
const VERDICT: u8 = 8;
const PROPOSE: u8 = 9;
const VOTE: u8 = 10;
const CLIENT: u8 = 4;
const WORKER: u8 = 5;
const CHALLENGER: u8 = 6;
const WORKER2: u8 = 7;
const NOBODY: u8 = 8;

fn state_programs() -> Vec<Vec<u8>> {
    // Worker stakes 10 000 (AMT[8]) and serves model A at price 100; the client opens job 0
    // with escrow 5 000 (AMT[7]), assigned to the worker (c: worker 5 << 1, max_tokens
    // MAX_TOKENS[3] << 5); the worker posts a receipt for 2 000 tokens (TOKENS[5]).
    let setup = |p: Prog| {
        p.block(
            0,
            &[[WORKER, STAKE, 8, 0, 0], [WORKER, REG_WORKER, 1, 100, 0]],
        )
        .block(0, &[[CLIENT, OPEN_JOB, 0, 7, (WORKER << 1) | (3 << 5)]])
        .block(0, &[[WORKER, RECEIPT, 0, 9, 5]])
    };
    vec![
        // Unchallenged: settles when the challenge window ends.
        setup(Prog::new(0)).empty(3).0,
        // Challenged, then rejected by three of four validators: slash.
        setup(Prog::new(100))
            .block(
                0,
                &[
                    [CHALLENGER, CHALLENGE, 0, 0, 0],
                    [0, VERDICT, 0, 0, 0],
                    [1, VERDICT, 0, 0, 0],
                    [2, VERDICT, 0, 0, 0],
                ],
            )
            .empty(2)
            .0,
        // Accepted by a validator quorum before the window ends.
        setup(Prog::new(7))
            .block(
                0,
                &[
                    [0, VERDICT, 0, 1, 0],
                    [1, VERDICT, 0, 1, 0],
                    [2, VERDICT, 0, 1, 0],
                ],
            )
            .0,
        // Challenged, no quorum: unresolved refund after the verdict window.
        setup(Prog::new(3))
            .block(
                0,
                &[[CHALLENGER, CHALLENGE, 0, 0, 0], [3, VERDICT, 0, 1, 0]],
            )
            .empty(4)
            .0,
        // An open job that nobody serves expires; a second job named for no worker.
        Prog::new(50)
            .block(
                0,
                &[
                    [CLIENT, OPEN_JOB, 1, 7, 0xfe],
                    [CLIENT, OPEN_JOB, 2, 6, (3 << 5) | (15 << 1)],
                ],
            )
            .empty(5)
            .0,
        // Governance: a parameter change (slash_bps = 9 000) and allowing model B pass,
        // execute, and a second worker registers for model B.
        Prog::new(9)
            .block(0, &[[0, PROPOSE, 0, 2, 10], [1, PROPOSE, 2, 0, 1]])
            .block(
                0,
                &[
                    [0, VOTE, 1, 1, 0],
                    [1, VOTE, 1, 1, 0],
                    [2, VOTE, 1, 1, 0],
                    [0, VOTE, 2, 1, 0],
                    [1, VOTE, 2, 1, 0],
                    [3, VOTE, 2, 0, 0],
                ],
            )
            .empty(4)
            .block(
                0,
                &[[WORKER2, STAKE, 8, 0, 0], [WORKER2, REG_WORKER, 2, 50, 0]],
            )
            .0,
        // Unbonding, transfers to new and outside accounts, fee extremes, the unfunded key,
        // and each kind of refused block in front of a valid one.
        Prog::new(1234)
            .block(
                1,
                &[
                    [3, UNSTAKE, 7, 0, 0],
                    [CLIENT, TRANSFER, NOBODY, 6, 0],
                    [0xf0 | CLIENT, TRANSFER, 9, 5, 0],
                ],
            )
            .block(
                2,
                &[[NOBODY, TRANSFER, CLIENT, 3, 0], [NOBODY, STAKE, 5, 0, 0]],
            )
            .block(3, &[[0xe0 | CLIENT, TRANSFER, 9, 5, 0]])
            .block(4, &[])
            .block(5, &[[CHALLENGER, REG_VALIDATOR, 0, 0, 0]])
            .block(6, &[[0, UNSTAKE, 10, 0, 0]])
            .block(7, &[[1, TRANSFER, 2, 5, 0]])
            .empty(3)
            .0,
    ]
}

/// `smt_proof` inputs: ops, then query and flip, then proof edits.
fn smt_programs() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Random keys, one removed; query a present key and forge.
    let mut a = vec![12u8];
    for i in 0..10u8 {
        a.extend([0, i, i + 1]);
    }
    a.extend([
        2, 3, 0, 1, 0, 1, 1, 2, 3, 0, 2, 9, 5, 0, 6, 4, 0x15, 1, 0, 3,
    ]);
    out.push(a);
    // Deep paths: keys one bit apart and sparse keys; query an absent neighbour.
    let mut b = vec![16u8];
    for i in 0..8u8 {
        b.extend([3, i, 1 << i, 1, i, 200 + i]);
    }
    b.extend([5, 0x41, 4, 2, 7, 3, 0x17, 0, 8, 5, 11, 2, 0x1b, 1]);
    out.push(b);
    // Empty tree, single leaf.
    out.push(vec![0, 0, 0, 4, 0, 5, 1]);
    out.push(vec![1, 0, 42, 42, 1, 0, 5, 0, 7, 9]);
    out
}

fn ledger_seeds(root: &Path) {
    let txs = sample_txs();
    write_all(
        &root.join("ledger_tx"),
        &txs.iter().map(|t| t.to_bytes()).collect::<Vec<_>>(),
    );

    let blocks = [
        Block::new(Hash256([2; 32]), 1, 0, vec![], Hash256([3; 32])),
        Block::new(Hash256([2; 32]), 7, 9, txs[..1].to_vec(), Hash256([3; 32])),
        Block::new(Hash256([5; 32]), 8, 1, txs[2..6].to_vec(), Hash256([6; 32])),
        Block::new(Hash256([5; 32]), 9, 2, txs.clone(), Hash256([6; 32])),
    ];
    let mut items: Vec<Vec<u8>> = blocks.iter().map(|b| b.to_bytes()).collect();
    items.push(blocks[1].header.to_bytes());
    // The commonware codec form: u32 big-endian length, then the block.
    let b = blocks[2].to_bytes();
    let mut framed = (b.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&b);
    items.push(framed);
    write_all(&root.join("ledger_block"), &items);

    write_all(&root.join("ledger_state"), &state_programs());
    write_all(&root.join("smt_proof"), &smt_programs());
}
