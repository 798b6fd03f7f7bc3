//! Everyone a job's fee reaches besides the worker and the validators: model royalties
//! (named, or derived from the training job that produced the model), dataset owners, apps,
//! gateways that hold a client's allowance rather than its key, and treasury grants. Each
//! test also runs the attacker's side: overspending an allowance, self-dealing an app or
//! gateway fee, taking over a dataset, granting more than the treasury holds.

mod common;
use common::*;
use deai_ledger::state::{app_id, billable, dataset_id, escrow_for, RoyaltyRole, Settlement, BPS};
use deai_ledger::tx::{Beneficiary, DataShard, Shard};
use deai_ledger::*;
use deai_types::Hash256;

const GATEWAY: u8 = CHALLENGER;
const APP_OWNER: u8 = 13;

fn open(job: Hash256, escrow: u64, app: Option<Hash256>, client: Option<u8>) -> TxKind {
    TxKind::OpenJob {
        job,
        model: MODEL,
        max_tokens: 100,
        escrow,
        worker: Some(addr(WORKER)),
        app,
        client: client.map(addr),
    }
}

fn receipt(job: Hash256, tokens: u32) -> TxKind {
    TxKind::PostReceipt {
        job,
        receipt: Hash256([9; 32]),
        tokens,
        pointer: "http://w/receipts/1".into(),
    }
}

/// Runs a receipted job past its challenge window and returns its settlement.
fn settle(c: &mut Chain, job: Hash256) -> Settlement {
    c.empty_blocks(c.s.params().challenge_window);
    let j = c.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Accepted);
    j.settlement.clone().unwrap()
}

fn register_app(c: &mut Chain, fee_bps: u64) -> Hash256 {
    c.ok(
        APP_OWNER,
        TxKind::RegisterApp {
            name: "chat".into(),
            fee_bps,
        },
    );
    app_id(&addr(APP_OWNER), "chat")
}

fn authorize(c: &mut Chain, limit: u64, expires: u64) {
    c.ok(
        CLIENT,
        TxKind::Authorize {
            gateway: addr(GATEWAY),
            limit,
            expires,
        },
    );
}

#[test]
fn a_settled_job_pays_royalty_app_and_gateway_and_every_split_sums_to_the_escrow() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    c.pass(ParamChange::SetRoyalty {
        model: MODEL,
        beneficiaries: vec![
            Beneficiary {
                to: addr(20),
                weight: 3,
            },
            Beneficiary {
                to: addr(21),
                weight: 1,
            },
        ],
    });
    let app = register_app(&mut c, 500);
    authorize(&mut c, 10_000, 1_000_000);
    let job = Hash256([1; 32]);
    let (client0, gw0, owner0, worker0) = (
        c.bal(CLIENT),
        c.bal(GATEWAY),
        c.bal(APP_OWNER),
        c.bal(WORKER),
    );
    let treasury0 = c.s.meta().treasury;
    // The gateway signs the job for the client: the escrow is the client's.
    c.ok(GATEWAY, open(job, 5_000, Some(app), Some(CLIENT)));
    assert_eq!(c.bal(CLIENT), client0 - 5_000);
    let j = c.s.job(&job).unwrap();
    assert_eq!(
        (j.client, j.gateway, j.app_bps, j.gateway_bps),
        (addr(CLIENT), Some(addr(GATEWAY)), 500, 200)
    );
    assert_eq!(
        c.s.allowance(&addr(CLIENT), &addr(GATEWAY))
            .unwrap()
            .remaining,
        5_000
    );
    c.ok(WORKER, receipt(job, 2_000)); // cost 2000 x 100 / 1000 = 200
    let s = settle(&mut c, job);
    // Out of the cost: 5 % treasury (10), 10 % validators (20, none voted: treasury),
    // 5 % royalty (10: 7 and 2 by weight 3:1, the odd unit to the treasury), the worker 160.
    // On top of it: the app 5 % (10), the gateway 2 % (4). The client gets the rest back.
    assert_eq!(s.worker_paid, 160);
    assert_eq!(s.royalty, 9);
    assert_eq!((s.app_paid, s.gateway_paid), (10, 4));
    assert_eq!(s.client_refund, 5_000 - 200 - 14);
    assert_eq!(s.treasury_cut, 10 + 20 + 1);
    assert_eq!(
        s.worker_paid
            + s.validator_fee
            + s.treasury_cut
            + s.royalty
            + s.app_paid
            + s.gateway_paid
            + s.client_refund,
        5_000,
        "every unit of the escrow is accounted for"
    );
    assert_eq!((c.bal(20), c.bal(21)), (7, 2));
    assert_eq!(c.bal(CLIENT), client0 - 214);
    assert_eq!(c.bal(GATEWAY), gw0 - 1 /* its open fee */ + 4);
    assert_eq!(c.bal(APP_OWNER), owner0 + 10);
    assert_eq!(c.bal(WORKER), worker0 - 1 /* receipt fee */ + 160);
    // Fees of the open and the receipt, plus the cut and the unclaimed validator fee.
    assert_eq!(c.s.meta().treasury, treasury0 + 2 + 31);
    let r = c.s.royalty(&MODEL).unwrap();
    assert_eq!((r.jobs, r.paid), (1, 9));
    assert_eq!(
        r.shares.iter().map(|s| s.paid).collect::<Vec<_>>(),
        vec![7, 2]
    );
    let a = c.s.app(&app).unwrap();
    assert_eq!((a.jobs, a.earned), (1, 10));
    assert_eq!(
        c.s.allowance(&addr(CLIENT), &addr(GATEWAY)).unwrap().earned,
        4
    );

    // An empty list ends the royalty: the next job pays none and the worker keeps it.
    c.pass(ParamChange::SetRoyalty {
        model: MODEL,
        beneficiaries: vec![],
    });
    assert!(c.s.royalty(&MODEL).is_none());
    let job = Hash256([2; 32]);
    c.open_and_receipt(job, 5_000, 2_000);
    let s = settle(&mut c, job);
    assert_eq!((s.worker_paid, s.royalty), (170, 0));
}

#[test]
fn a_gateway_cannot_spend_beyond_its_allowance_after_expiry_or_without_one() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let client0 = c.bal(CLIENT);
    let e = c.fails(GATEWAY, open(Hash256([1; 32]), 100, None, Some(CLIENT)));
    assert!(e.contains("has not authorized"), "{e}");
    let e = c.fails(
        CLIENT,
        TxKind::Authorize {
            gateway: addr(CLIENT),
            limit: 1,
            expires: 10_000,
        },
    );
    assert!(e.contains("itself"), "{e}");
    let h = c.s.height();
    authorize(&mut c, 6_000, h + 6);
    c.ok(GATEWAY, open(Hash256([1; 32]), 5_000, None, Some(CLIENT)));
    let e = c.fails(GATEWAY, open(Hash256([2; 32]), 2_000, None, Some(CLIENT)));
    assert!(e.contains("exceeds what the client still allows"), "{e}");
    // More than the client holds is refused whatever the allowance says.
    authorize(&mut c, u64::MAX, h + 6);
    let e = c.fails(
        GATEWAY,
        open(Hash256([2; 32]), u64::MAX, None, Some(CLIENT)),
    );
    assert!(e.contains("balance"), "{e}");
    c.empty_blocks(4);
    let e = c.fails(GATEWAY, open(Hash256([3; 32]), 10, None, Some(CLIENT)));
    assert!(e.contains("expired"), "{e}");
    // Revoked: gone from the state.
    c.ok(
        CLIENT,
        TxKind::Authorize {
            gateway: addr(GATEWAY),
            limit: 0,
            expires: 0,
        },
    );
    assert!(c.s.allowance(&addr(CLIENT), &addr(GATEWAY)).is_none());
    let e = c.fails(GATEWAY, open(Hash256([4; 32]), 10, None, Some(CLIENT)));
    assert!(e.contains("has not authorized"), "{e}");
    // The client lost the one escrow it allowed (still held for the job) and the fees of
    // its four transactions (a refused one pays too).
    assert_eq!(c.bal(CLIENT), client0 - 5_000 - 4);
    // Naming the sender as the client is a plain job: no gateway fee.
    c.ok(CLIENT, open(Hash256([5; 32]), 10, None, Some(CLIENT)));
    assert_eq!(c.s.job(&Hash256([5; 32])).unwrap().gateway, None);
}

#[test]
fn naming_your_own_app_takes_nothing_from_the_worker_and_fees_are_fixed_at_open() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let cap = c.s.params().app_fee_cap_bps;
    let e = c.fails(
        APP_OWNER,
        TxKind::RegisterApp {
            name: "greedy".into(),
            fee_bps: cap + 1,
        },
    );
    assert!(e.contains("above the cap"), "{e}");
    let e = c.fails(
        CLIENT,
        open(Hash256([9; 32]), 100, Some(Hash256([1; 32])), None),
    );
    assert!(e.contains("unknown app"), "{e}");
    // The client runs its own app at the cap: it pays the fee to itself, and the worker
    // is paid exactly what a job without an app pays.
    c.ok(
        CLIENT,
        TxKind::RegisterApp {
            name: "mine".into(),
            fee_bps: cap,
        },
    );
    let mine = app_id(&addr(CLIENT), "mine");
    let plain = Hash256([1; 32]);
    c.open_and_receipt(plain, 5_000, 2_000);
    let plain = settle(&mut c, plain);
    let before = c.bal(CLIENT);
    let job = Hash256([2; 32]);
    c.ok(CLIENT, open(job, 5_000, Some(mine), None));
    c.ok(WORKER, receipt(job, 2_000));
    let s = settle(&mut c, job);
    assert_eq!(s.worker_paid, plain.worker_paid);
    assert_eq!(s.app_paid, 200 * cap / BPS);
    assert_eq!(
        c.bal(CLIENT),
        before - 1 - 200,
        "its own app fee came back to it"
    );

    // An app raising its fee after a job opened does not reach that job's escrow.
    let app = register_app(&mut c, 100);
    let job = Hash256([3; 32]);
    c.ok(CLIENT, open(job, 5_000, Some(app), None));
    register_app(&mut c, cap);
    assert_eq!(c.s.app(&app).unwrap().fee_bps, cap);
    c.ok(WORKER, receipt(job, 2_000));
    assert_eq!(
        settle(&mut c, job).app_paid,
        2,
        "1 % of 200, as when it opened"
    );
    // A cap lowered by governance bounds the fee of apps registered above it.
    c.pass(ParamChange::Set {
        param: Param::AppFeeCapBps,
        value: 50,
    });
    let job = Hash256([4; 32]);
    c.ok(CLIENT, open(job, 5_000, Some(app), None));
    assert_eq!(c.s.job(&job).unwrap().app_bps, 50);
}

#[test]
fn billing_leaves_room_for_the_fees_on_top() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let app = register_app(&mut c, 500);
    authorize(&mut c, 1_000, 1_000_000);
    let job = Hash256([1; 32]);
    c.ok(GATEWAY, open(job, 100, Some(app), Some(CLIENT)));
    // 100_000 tokens would cost 10_000: capped at what leaves the 7 % of fees in 100.
    c.ok(WORKER, receipt(job, 100_000));
    let cost = c.s.job(&job).unwrap().receipt.as_ref().unwrap().cost;
    assert_eq!(cost, billable(100, 700));
    assert_eq!(cost, 93);
    let s = settle(&mut c, job);
    assert_eq!((s.app_paid, s.gateway_paid, s.client_refund), (4, 1, 2));
    for escrow in [1u64, 2, 99, 100, 101, 12_345, u64::MAX / 2, u64::MAX] {
        for bps in [0u64, 1, 199, 700, 4_000] {
            let cost = billable(escrow, bps) as u128;
            assert!(
                cost + cost * bps as u128 / BPS as u128 <= escrow as u128,
                "{escrow} {bps}"
            );
            // And no lower than the exact bound escrow / (1 + bps / 10000), rounded down.
            let next = cost + 1;
            assert!(next * (BPS + bps) as u128 > escrow as u128 * BPS as u128);
            // What a gateway escrows for a cost bills at least that cost, and no less would.
            let c = escrow.min(u64::MAX / 2);
            let e = escrow_for(c, bps);
            assert!(billable(e, bps) >= c, "{c} {bps}");
            assert!(e == 0 || billable(e - 1, bps) < c, "{c} {bps}");
        }
    }
}

#[test]
fn a_dataset_is_its_owners_and_malformed_ones_are_refused() {
    let mut c = Chain::new();
    let shards = vec![
        Shard {
            hash: Hash256([0xa1; 32]),
            tokens: 3_000,
        },
        Shard {
            hash: Hash256([0xa2; 32]),
            tokens: 1_000,
        },
    ];
    let reg = |shards: Vec<Shard>| TxKind::RegisterDataset {
        license: "CC-BY-4.0".into(),
        shards,
    };
    c.ok(CLIENT, reg(shards.clone()));
    let id = dataset_id(&addr(CLIENT), &shards);
    let d = c.s.dataset(&id).unwrap();
    assert_eq!(
        (d.owner, d.license.as_str(), d.shards.len()),
        (addr(CLIENT), "CC-BY-4.0", 2)
    );
    assert!(c
        .fails(CLIENT, reg(shards.clone()))
        .contains("already registered"));
    // Someone copying the shards registers another dataset, not the owner's.
    c.ok(GATEWAY, reg(shards.clone()));
    assert_ne!(dataset_id(&addr(GATEWAY), &shards), id);
    assert_eq!(c.s.dataset(&id).unwrap().owner, addr(CLIENT));
    let mut dup = shards.clone();
    dup[1].hash = dup[0].hash;
    assert!(c.fails(CLIENT, reg(dup)).contains("twice"));
    let mut empty = shards.clone();
    empty[0].tokens = 0;
    assert!(c.fails(CLIENT, reg(empty)).contains("hold tokens"));
    assert!(c.fails(CLIENT, reg(vec![])).contains("1..="));
}

#[test]
fn a_trained_models_royalty_reaches_its_trainers_and_data_providers() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    c.setup_worker(13, 100);
    // Two data providers, funded for their fees.
    for who in [20u8, 21] {
        c.ok(
            CLIENT,
            TxKind::Transfer {
                to: addr(who),
                amount: 10,
            },
        );
    }
    let a = vec![
        Shard {
            hash: Hash256([0xa1; 32]),
            tokens: 3_000,
        },
        Shard {
            hash: Hash256([0xa2; 32]),
            tokens: 1_000,
        },
    ];
    let b = vec![Shard {
        hash: Hash256([0xb1; 32]),
        tokens: 4_000,
    }];
    for (who, shards) in [(20u8, &a), (21, &b)] {
        c.ok(
            who,
            TxKind::RegisterDataset {
                license: "CC0".into(),
                shards: shards.clone(),
            },
        );
    }
    let (ds_a, ds_b) = (dataset_id(&addr(20), &a), dataset_id(&addr(21), &b));
    let training = Hash256([0x71; 32]);
    let open = |data: Vec<DataShard>| TxKind::OpenTraining {
        job: training,
        checkpoint: Hash256([0; 32]),
        commitment: Hash256([0x0c; 32]),
        rounds: 2,
        workers: 2,
        reward_per_round: 1_000,
        coordinator: addr(VALS[0]),
        data,
    };
    let shard = |dataset, shard| DataShard { dataset, shard };
    // A shard must be in the dataset named with it, a dataset must exist, no shard twice.
    let e = c.fails(CLIENT, open(vec![shard(ds_a, b[0].hash)]));
    assert!(e.contains("not in dataset"), "{e}");
    let e = c.fails(CLIENT, open(vec![shard(Hash256([5; 32]), b[0].hash)]));
    assert!(e.contains("unknown dataset"), "{e}");
    let e = c.fails(
        CLIENT,
        open(vec![shard(ds_a, a[0].hash), shard(ds_a, a[0].hash)]),
    );
    assert!(e.contains("twice"), "{e}");
    // Allowing the export of a job that did not finish (this one expires while the vote
    // runs) fails when the proposal executes, and changes nothing.
    let unfinished = Hash256([0x72; 32]);
    let mut other = open(vec![shard(ds_a, a[0].hash)]);
    if let TxKind::OpenTraining { job, .. } = &mut other {
        *job = unfinished;
    }
    c.ok(CLIENT, other);
    let early = c.pass(ParamChange::AllowTrainedModel {
        model: Hash256([0x3d; 32]),
        training: unfinished,
    });
    assert_eq!(c.s.proposal(early).unwrap().status, ProposalStatus::Failed);
    assert!(c.s.royalty(&Hash256([0x3d; 32])).is_none());
    assert!(!c.s.params().model_allowed(&Hash256([0x3d; 32])));
    // It trains on shard a1 (3,000 tokens) of A and b1 (4,000) of B, not on a2.
    c.ok(
        CLIENT,
        open(vec![shard(ds_a, a[0].hash), shard(ds_b, b[0].hash)]),
    );

    let model = Hash256([0x3d; 32]);
    let allow = ParamChange::AllowTrainedModel { model, training };
    // Round 0 accepts both trainers, round 1 only the worker: credits 2 and 1.
    for (round, accepted) in [(0u32, vec![WORKER, 13]), (1, vec![WORKER])] {
        c.ok(
            VALS[0],
            TxKind::TrainRound {
                job: training,
                round,
                checkpoint: Hash256([round as u8 + 1; 32]),
                report: Hash256([0xee; 32]),
                accepted: accepted.into_iter().map(addr).collect(),
                rejected: vec![],
                url: "http://10.0.0.1:8000".into(),
            },
        );
        for v in [VALS[2], VALS[3]] {
            c.ok(
                v,
                TxKind::TrainVerdict {
                    job: training,
                    round,
                    report: Hash256([0xee; 32]),
                    accept: true,
                },
            );
        }
    }
    let t = c.s.training(&training).unwrap();
    assert_eq!(t.status, TrainingStatus::Finished);
    let credits: Vec<(Address, u64)> = t.credits.iter().map(|c| (c.to, c.accepted)).collect();
    let mut want = vec![(addr(WORKER), 2), (addr(13), 1)];
    want.sort();
    assert_eq!(credits, want);

    let id = c.pass(allow);
    assert_eq!(c.s.proposal(id).unwrap().status, ProposalStatus::Executed);
    assert!(c.s.params().model_allowed(&model));
    let r = c.s.royalty(&model).unwrap().clone();
    assert_eq!(
        (r.training, r.data_bps),
        (Some(training), c.s.params().data_royalty_bps)
    );
    let weight = |role: RoyaltyRole| {
        r.shares
            .iter()
            .find(|s| s.role == role)
            .map(|s| (s.to, s.weight))
    };
    assert_eq!(weight(RoyaltyRole::Data(ds_a)), Some((addr(20), 3_000)));
    assert_eq!(weight(RoyaltyRole::Data(ds_b)), Some((addr(21), 4_000)));

    // The worker serves the new model (with stake for a 2,000 receipt's collateral); a
    // job on it pays the royalty.
    c.ok(WORKER, TxKind::Stake { amount: 20_000 });
    c.ok(
        WORKER,
        TxKind::RegisterWorker {
            models: vec![MODEL, model],
            profile: "deai-cpu-bi-v1".into(),
            hardware: "2 vCPU".into(),
            price_per_1k: 100,
            endpoint: "127.0.0.1:1".into(),
        },
    );
    let (w0, w13, d20, d21) = (c.bal(WORKER), c.bal(13), c.bal(20), c.bal(21));
    let job = Hash256([0x99; 32]);
    c.ok(
        CLIENT,
        TxKind::OpenJob {
            job,
            model,
            max_tokens: 100,
            escrow: 5_000,
            worker: Some(addr(WORKER)),
            app: None,
            client: None,
        },
    );
    c.ok(WORKER, receipt(job, 20_000)); // cost 2,000
    let s = settle(&mut c, job);
    // Royalty 5 % = 100: data 50 (A 3/7 -> 21, B 4/7 -> 28), trainers 50 (2/3 -> 33,
    // 1/3 -> 16); 98 paid, 2 units of rounding to the treasury.
    assert_eq!(s.royalty, 98);
    assert_eq!(s.worker_paid, 2_000 - 100 - 200 - 100);
    assert_eq!(c.bal(20) - d20, 21);
    assert_eq!(c.bal(21) - d21, 28);
    assert_eq!(c.bal(13) - w13, 16);
    assert_eq!(c.bal(WORKER) - w0 + 1 /* receipt fee */, 1_600 + 33);
    assert_eq!(c.s.dataset(&ds_a).unwrap().earned, 21);
    assert_eq!(c.s.dataset(&ds_b).unwrap().earned, 28);
    assert_eq!(c.s.royalty(&model).unwrap().paid, 98);
    // The records survive a snapshot and are committed by the root.
    let restored = State::from_snapshot(&c.s.to_snapshot()).unwrap();
    assert_eq!(restored.root(), c.s.root());
    assert_eq!(restored.royalty(&model), c.s.royalty(&model));
}

#[test]
fn grants_spend_the_treasury_and_never_more_than_it_holds() {
    let mut c = Chain::new();
    let treasury = c.s.meta().treasury;
    let too_much = c.pass(ParamChange::Grant {
        to: addr(20),
        amount: treasury + 1_000_000,
    });
    assert_eq!(
        c.s.proposal(too_much).unwrap().status,
        ProposalStatus::Failed
    );
    assert_eq!(c.bal(20), 0);
    let t = c.s.meta().treasury;
    let id = c.pass(ParamChange::Grant {
        to: addr(20),
        amount: t / 2,
    });
    assert_eq!(c.s.proposal(id).unwrap().status, ProposalStatus::Executed);
    assert_eq!(c.bal(20), t / 2);
    // The grant left the treasury, which gained the fees of the proposal and 4 votes.
    assert_eq!(c.s.meta().treasury, t - t / 2 + 5);
    let e = c.fails(
        1,
        TxKind::Propose {
            change: ParamChange::Grant {
                to: addr(20),
                amount: 0,
            },
        },
    );
    assert!(e.contains("positive"), "{e}");
    // A non-staker cannot even propose one.
    let e = c.fails(
        CLIENT,
        TxKind::Propose {
            change: ParamChange::Grant {
                to: addr(CLIENT),
                amount: 1,
            },
        },
    );
    assert!(e.contains("only stakers"), "{e}");
    // Royalty lists are checked when proposed.
    let bad = |beneficiaries| TxKind::Propose {
        change: ParamChange::SetRoyalty {
            model: MODEL,
            beneficiaries,
        },
    };
    let b = |to: u8, weight| Beneficiary {
        to: addr(to),
        weight,
    };
    assert!(c.fails(1, bad(vec![b(20, 0)])).contains("positive weight"));
    assert!(c.fails(1, bad(vec![b(20, 1), b(20, 2)])).contains("twice"));
}
