//! The ledger's state transition, end to end: jobs, verdicts, slashing, governance,
//! unbonding, block validity and the supply invariant.

use deai_ledger::smt;
use deai_ledger::state::{Key, BPS};
use deai_ledger::*;
use deai_types::Hash256;
use proptest::prelude::*;

mod common;
use common::*;

#[test]
fn unchallenged_job_settles_after_the_window() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([1; 32]);
    let client0 = c.bal(CLIENT);
    let worker0 = c.bal(WORKER);
    let treasury0 = c.s.meta().treasury;
    c.open_and_receipt(job, 5_000, 2_000); // cost = 2000 tokens * 100 / 1000 = 200
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Receipted);
    c.empty_blocks(c.s.params().challenge_window);
    let j = c.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Accepted);
    let st = j.settlement.clone().unwrap();
    // 5 % treasury, 10 % validator fee (no voters: to treasury), rest to the worker.
    assert_eq!(st.worker_paid, 200 - 10 - 20);
    assert_eq!(st.client_refund, 4_800);
    assert_eq!(c.bal(CLIENT), client0 - 1 /*fee*/ - 200);
    assert_eq!(c.bal(WORKER), worker0 - 1 /*fee*/ + 170);
    // Fees: stake, register, open, receipt = 4; cut 10 + unclaimed validator fee 20.
    assert_eq!(c.s.meta().treasury, treasury0 + 2 + 30);
    let w = c.s.worker(&addr(WORKER)).unwrap();
    assert_eq!((w.jobs_done, w.tokens_served, w.earned), (1, 2_000, 170));
}

#[test]
fn rejected_job_refunds_client_and_slashes_worker_to_the_challenger() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([2; 32]);
    let client0 = c.bal(CLIENT);
    c.open_and_receipt(job, 5_000, 2_000);
    let ch0 = c.bal(CHALLENGER);
    c.ok(CHALLENGER, TxKind::Challenge { job });
    assert_eq!(c.bal(CHALLENGER), ch0 - 1 - c.s.params().challenge_bond);
    // Two of four equal validators are not a quorum (needs > 2/3).
    c.ok(1, TxKind::Verdict { job, accept: false });
    c.ok(2, TxKind::Verdict { job, accept: false });
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Challenged);
    // A validator cannot vote twice.
    assert!(c
        .fails(2, TxKind::Verdict { job, accept: false })
        .contains("already"));
    let burned0 = c.s.meta().burned;
    c.ok(3, TxKind::Verdict { job, accept: false });
    let j = c.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Rejected);
    let st = j.settlement.clone().unwrap();
    assert_eq!(st.slashed, 10_000 * 5_000 / BPS);
    // The challenger gets its bond back and reporter_bps (10%) of the 5,000 slash; the
    // three rejecting validators what accepting would have paid them (the 10% validator fee
    // of the 200 billed, 6 each); the rest is burned.
    assert_eq!(st.challenger_paid, 100 + 500);
    assert_eq!(st.validator_fee, 18);
    assert_eq!(c.s.meta().burned - burned0, 4_500 - 18);
    assert_eq!(c.bal(CLIENT), client0 - 1);
    assert_eq!(c.bal(CHALLENGER), ch0 - 1 + 500);
    assert_eq!(c.s.account(&addr(WORKER)).stake, 5_000);
    // The slashed worker is inactive: it gets no new jobs and cannot post receipts.
    let w = c.s.worker(&addr(WORKER)).unwrap();
    assert!(!w.active);
    assert_eq!(w.jobs_rejected, 1);
    let err = c.fails(
        CLIENT,
        TxKind::OpenJob {
            job: Hash256([3; 32]),
            model: MODEL,
            max_tokens: 10,
            escrow: 10,
            worker: Some(addr(WORKER)),
            app: None,
            client: None,
        },
    );
    assert!(err.contains("not an active worker"), "{err}");
    // Verdicts on a finished job are refused.
    assert!(c
        .fails(4, TxKind::Verdict { job, accept: true })
        .contains("no verdict"));
}

#[test]
fn an_equivocating_validator_is_slashed_once_per_view_and_the_reporter_paid() {
    let mut c = Chain::new();
    let (reporter0, burned0, supply0) = (c.bal(13), c.s.meta().burned, c.s.meta().supply);
    let stake0 = c.s.account(&addr(3)).stake;
    let report = |view| TxKind::ReportEquivocation {
        offender: addr(3),
        view,
        evidence: vec![1, 2, 3],
    };
    c.ok(13, report(7));
    let slash = stake0 * c.s.params().slash_bps / BPS;
    assert_eq!(c.s.account(&addr(3)).stake, stake0 - slash);
    let reward = slash * c.s.params().reporter_bps / BPS;
    assert_eq!(c.bal(13), reporter0 - 1 + reward);
    assert_eq!(c.s.meta().burned - burned0, slash - reward);
    let v = c.s.validator(&addr(3)).unwrap();
    assert_eq!((v.slashed, v.slashed_views.clone()), (slash, vec![7]));
    // The same view again (say, its conflicting finalize) is refused; another view is not.
    assert!(c.fails(12, report(7)).contains("already slashed"));
    c.ok(12, report(9));
    assert_eq!(c.s.validator(&addr(3)).unwrap().slashed_views, vec![7, 9]);
    // Only registered validators can be reported.
    let err = c.fails(
        12,
        TxKind::ReportEquivocation {
            offender: addr(WORKER),
            view: 1,
            evidence: vec![],
        },
    );
    assert!(err.contains("not a registered validator"), "{err}");
    // Nor can it report itself to earn half its own slash back.
    assert!(c.fails(3, report(11)).contains("cannot report itself"));
    // Money is conserved: slashes go to reporters and the burn.
    assert_eq!(c.s.meta().supply, supply0);
    c.s.audit().unwrap();
}

#[test]
fn accepted_challenge_pays_the_bond_to_the_worker_and_the_fee_to_validators() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([4; 32]);
    c.open_and_receipt(job, 5_000, 2_000);
    c.ok(CHALLENGER, TxKind::Challenge { job });
    let w0 = c.bal(WORKER);
    let v0 = c.bal(1);
    c.block(vec![
        (1, TxKind::Verdict { job, accept: true }),
        (2, TxKind::Verdict { job, accept: true }),
        (3, TxKind::Verdict { job, accept: true }),
    ]);
    let j = c.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Accepted);
    assert_eq!(c.bal(WORKER), w0 + 170 + 100);
    // 20 validator fee over 3 accepting validators: 6 each, remainder 2 to the treasury.
    assert_eq!(c.bal(1), v0 - 1 + 6);
    assert_eq!(c.s.validator(&addr(1)).unwrap().earned, 6);
}

#[test]
fn timeouts_refund_escrow_and_bonds() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let client0 = c.bal(CLIENT);
    let job = Hash256([5; 32]);
    c.ok(
        CLIENT,
        TxKind::OpenJob {
            job,
            model: MODEL,
            max_tokens: 10,
            escrow: 777,
            worker: None,
            app: None,
            client: None,
        },
    );
    assert_eq!(c.bal(CLIENT), client0 - 1 - 777);
    c.empty_blocks(c.s.params().job_timeout);
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Expired);
    assert_eq!(c.bal(CLIENT), client0 - 1);
    // A late receipt is refused.
    let err = c.fails(
        WORKER,
        TxKind::PostReceipt {
            job,
            receipt: Hash256([1; 32]),
            tokens: 5,
            pointer: String::new(),
        },
    );
    assert!(err.contains("not open"), "{err}");

    // Challenged but no quorum by the verdict deadline: everyone is refunded.
    let job = Hash256([6; 32]);
    let client1 = c.bal(CLIENT);
    c.open_and_receipt(job, 1_000, 1_000);
    let ch0 = c.bal(CHALLENGER);
    c.ok(CHALLENGER, TxKind::Challenge { job });
    c.ok(1, TxKind::Verdict { job, accept: false });
    c.empty_blocks(c.s.params().verdict_window);
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Unresolved);
    assert_eq!(c.bal(CLIENT), client1 - 1);
    assert_eq!(c.bal(CHALLENGER), ch0 - 1);
}

#[test]
fn only_the_assigned_registered_worker_may_post_and_jobs_cannot_be_replayed() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([8; 32]);
    let open = TxKind::OpenJob {
        job,
        model: MODEL,
        max_tokens: 10,
        escrow: 100,
        worker: Some(addr(WORKER)),
        app: None,
        client: None,
    };
    c.ok(CLIENT, open.clone());
    assert!(c.fails(CLIENT, open).contains("already exists"));
    let post = TxKind::PostReceipt {
        job,
        receipt: Hash256([1; 32]),
        tokens: 5,
        pointer: String::new(),
    };
    assert!(c
        .fails(13, post.clone())
        .contains("not a registered worker"));
    c.setup_worker(13, 100);
    assert!(c.fails(13, post).contains("another worker"));
    // Unknown models and prices under the floor are refused.
    let bad = TxKind::OpenJob {
        job: Hash256([9; 32]),
        model: Hash256([1; 32]),
        max_tokens: 10,
        escrow: 100,
        worker: None,
        app: None,
        client: None,
    };
    assert!(c.fails(CLIENT, bad).contains("not allowed"));
}

#[test]
fn failed_actions_pay_the_fee_and_bump_the_nonce() {
    let mut c = Chain::new();
    let b0 = c.bal(CHALLENGER);
    let n0 = c.s.account(&addr(CHALLENGER)).nonce;
    let e = c.fails(
        CHALLENGER,
        TxKind::Transfer {
            to: addr(1),
            amount: 10_000_000,
        },
    );
    assert!(e.contains("balance"), "{e}");
    assert_eq!(c.bal(CHALLENGER), b0 - 1);
    assert_eq!(c.s.account(&addr(CHALLENGER)).nonce, n0 + 1);
    // An account with nothing cannot pay the fee: a block carrying its transaction is
    // invalid (fees are checked per sender before a block applies, see
    // `a_block_whose_sender_cannot_pay_all_its_fees_is_invalid`).
    let poor = 99u8;
    let t = c.tx(poor, 0, TxKind::Stake { amount: 1 });
    let h = c.s.height() + 1;
    let e = c.s.apply_block(h, &[t]).unwrap_err();
    assert!(e.to_string().contains("fees"), "{e}");
}

#[test]
fn invalid_blocks_are_refused_whole_and_change_nothing() {
    let mut c = Chain::new();
    let root = c.s.root();
    let h = c.s.height();
    let good = c.tx(
        CLIENT,
        0,
        TxKind::Transfer {
            to: addr(1),
            amount: 5,
        },
    );
    // Bad signature.
    let mut forged = good.clone();
    forged.sig[0] ^= 1;
    // Wrong nonce (a replay of an already-used nonce looks the same).
    let stale = c.tx(
        CLIENT,
        5,
        TxKind::Transfer {
            to: addr(1),
            amount: 5,
        },
    );
    // Another chain's transaction.
    let mut g2 = genesis();
    g2.chain_name = "other".into();
    let other = State::from_genesis(&g2).unwrap();
    let foreign = Tx {
        chain: other.chain_id(),
        from: [0; 32],
        nonce: 0,
        fee: 1,
        kind: TxKind::Stake { amount: 1 },
    }
    .sign(&key(CLIENT));
    // Fee below the minimum.
    let cheap = Tx {
        chain: c.s.chain_id(),
        from: [0; 32],
        nonce: 0,
        fee: 0,
        kind: TxKind::Stake { amount: 1 },
    }
    .sign(&key(CLIENT));
    for (bad, why) in [
        (vec![forged], "signature"),
        (vec![stale], "nonce"),
        (vec![foreign], "chain"),
        (vec![cheap], "fee"),
        (vec![good.clone(), good.clone()], "nonce"),
    ] {
        let e = c.s.apply_block(h + 1, &bad).unwrap_err();
        assert!(e.to_string().contains(why), "{e} should mention {why}");
        assert_eq!(c.s.root(), root);
        assert_eq!(c.s.height(), h);
    }
    assert!(matches!(
        c.s.apply_block(h + 2, &[]),
        Err(BlockError::Height { .. })
    ));
    // The good transaction applies once; replaying it is refused.
    c.s.apply_block(h + 1, std::slice::from_ref(&good)).unwrap();
    assert!(c
        .s
        .apply_block(h + 2, &[good])
        .unwrap_err()
        .to_string()
        .contains("nonce"));
}

#[test]
fn unbonding_releases_later_and_slashing_reaches_it() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([10; 32]);
    c.open_and_receipt(job, 1_000, 1_000);
    // The worker tries to run with its stake before the verdict: the receipt's collateral
    // (10x its cost of 100) stays bonded; the rest goes into unbonding.
    let e = c.fails(WORKER, TxKind::Unstake { amount: 10_000 });
    assert!(e.contains("locked as collateral"), "{e}");
    c.ok(WORKER, TxKind::Unstake { amount: 9_000 });
    assert_eq!(c.s.account(&addr(WORKER)).stake, 1_000);
    c.block(vec![
        (1, TxKind::Verdict { job, accept: false }),
        (2, TxKind::Verdict { job, accept: false }),
        (3, TxKind::Verdict { job, accept: false }),
    ]);
    let a = c.s.account(&addr(WORKER));
    assert_eq!(a.unbonding.iter().map(|u| u.amount).sum::<u64>(), 5_000);
    let b0 = c.bal(WORKER);
    c.empty_blocks(c.s.params().unbonding_period);
    assert_eq!(c.bal(WORKER), b0 + 5_000);
    assert!(c.s.account(&addr(WORKER)).unbonding.is_empty());
}

#[test]
fn governance_passes_executes_later_and_respects_quorum() {
    let mut c = Chain::new();
    let change = ParamChange::Set {
        param: Param::SlashBps,
        value: 9_000,
    };
    c.ok(
        1,
        TxKind::Propose {
            change: change.clone(),
        },
    );
    c.block(vec![
        (
            1,
            TxKind::Vote {
                proposal: 1,
                yes: true,
            },
        ),
        (
            2,
            TxKind::Vote {
                proposal: 1,
                yes: true,
            },
        ),
        (
            3,
            TxKind::Vote {
                proposal: 1,
                yes: false,
            },
        ),
    ]);
    // A non-staker cannot vote; a bad value cannot be proposed.
    assert!(c
        .fails(
            CLIENT,
            TxKind::Vote {
                proposal: 1,
                yes: true
            }
        )
        .contains("stakers"));
    let bad = ParamChange::Set {
        param: Param::SlashBps,
        value: 20_000,
    };
    assert!(c
        .fails(1, TxKind::Propose { change: bad })
        .contains("slash_bps must be within"));
    let p = c.s.proposal(1).unwrap();
    let end = p.voting_end;
    while c.s.height() < end {
        c.block(vec![]);
    }
    let p = c.s.proposal(1).unwrap();
    assert_eq!(p.status, ProposalStatus::Passed);
    assert_eq!((p.yes_stake, p.no_stake), (100_000, 50_000));
    assert_eq!(
        c.s.params().slash_bps,
        5_000,
        "not before the execution height"
    );
    c.empty_blocks(c.s.params().execution_delay);
    assert_eq!(c.s.proposal(1).unwrap().status, ProposalStatus::Executed);
    assert_eq!(c.s.params().slash_bps, 9_000);

    // One voter of four is below the 33.34 % quorum.
    let model = Hash256([42; 32]);
    c.ok(
        2,
        TxKind::Propose {
            change: ParamChange::AllowModel { model },
        },
    );
    c.ok(
        2,
        TxKind::Vote {
            proposal: 2,
            yes: true,
        },
    );
    c.empty_blocks(c.s.params().voting_period + c.s.params().execution_delay);
    assert_eq!(c.s.proposal(2).unwrap().status, ProposalStatus::Rejected);
    assert!(!c.s.params().model_allowed(&model));
}

#[test]
fn state_proofs_check_against_the_root() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([11; 32]);
    c.open_and_receipt(job, 1_000, 1_000);
    let root = c.s.root();
    let (value, proof) = c.s.prove(&Key::Job(job));
    let value = value.unwrap();
    let got = smt::verify(&root.0, &Key::Job(job).hash(), &proof).unwrap();
    assert_eq!(got, Some(deai_ledger::state::value_hash(&value)));
    let decoded: Job = postcard::from_bytes(&value).unwrap();
    assert_eq!(decoded.status, JobStatus::Receipted);
    // Absent keys prove absent; a proof does not carry over to another root.
    let missing = Key::Job(Hash256([0xee; 32]));
    let (none, p) = c.s.prove(&missing);
    assert!(none.is_none());
    assert_eq!(smt::verify(&root.0, &missing.hash(), &p), Ok(None));
    c.block(vec![]);
    assert!(smt::verify(&c.s.root().0, &Key::Job(job).hash(), &proof).is_err());
}

#[test]
fn genesis_errors_are_clear() {
    let mut g = genesis();
    g.accounts[0].stake = 1;
    assert!(State::from_genesis(&g)
        .unwrap_err()
        .contains("below the minimum"));
    let mut g = genesis();
    g.accounts.push(g.accounts[0].clone());
    assert!(State::from_genesis(&g).unwrap_err().contains("duplicate"));
    let mut g = genesis();
    g.accounts[0].balance = u64::MAX;
    assert!(State::from_genesis(&g).unwrap_err().contains("overflow"));
    let mut g = genesis();
    g.params.treasury_bps = 20_000;
    assert!(State::from_genesis(&g).is_err());
    let mut g = genesis();
    g.epoch_length = 1;
    assert!(State::from_genesis(&g)
        .unwrap_err()
        .contains("epoch length"));
}

#[test]
fn the_consensus_set_follows_stake_but_changes_only_after_an_epochs_last_block() {
    let mut g = genesis();
    g.epoch_length = 4; // epoch e is heights 4e..=4e+3
    let mut c = Chain {
        s: State::from_genesis(&g).unwrap(),
    };
    let genesis_set: Vec<Address> = {
        let mut v: Vec<Address> = VALS.iter().map(|v| addr(*v)).collect();
        v.sort();
        v
    };
    assert_eq!(c.s.validator_set(), &genesis_set[..]);
    // Height 1: account 13 stakes and registers as a validator; 1 unstakes everything.
    c.block(vec![
        (13, TxKind::Stake { amount: 10_000 }),
        (
            13,
            TxKind::RegisterValidator {
                endpoint: "v13".into(),
                p2p: "127.0.0.1:13".into(),
            },
        ),
        (1, TxKind::Unstake { amount: 50_000 }),
    ]);
    assert_eq!(c.s.active_validators().len(), 4);
    // Height 2 still belongs to epoch 0: the set is the genesis set.
    c.block(vec![]);
    assert_eq!(c.s.validator_set(), &genesis_set[..]);
    assert!(c.s.is_epoch_end(3) && !c.s.is_epoch_end(4));
    // Block 3 is epoch 0's last: its post-state names epoch 1's set.
    let r = c.block(vec![]);
    assert!(
        r.events
            .iter()
            .any(|e| e.contains("epoch 1: validator set of 4")),
        "{:?}",
        r.events
    );
    let mut want: Vec<Address> = [2, 3, 4, 13].iter().map(|v| addr(*v)).collect();
    want.sort();
    assert_eq!(c.s.validator_set(), &want[..]);
    // Within epoch 1 it does not move.
    let r = c.block(vec![]);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(c.s.validator_set(), &want[..]);
    assert_eq!(c.s.epoch_of(4), 1);
    // Proofs cover it: the set is part of the committed meta record.
    let (value, proof) = c.s.prove(&Key::Meta);
    let value = value.unwrap();
    assert_eq!(
        smt::verify(&c.s.root().0, &Key::Meta.hash(), &proof).unwrap(),
        Some(deai_ledger::state::value_hash(&value))
    );
    // Everyone unstakes: the chain keeps its last set rather than halt with none.
    c.block(vec![
        (2, TxKind::Unstake { amount: 50_000 }),
        (3, TxKind::Unstake { amount: 50_000 }),
        (4, TxKind::Unstake { amount: 50_000 }),
        (13, TxKind::Unstake { amount: 10_000 }),
    ]);
    c.empty_blocks(1);
    let r = c.block(vec![]); // height 7: epoch 1's last
    assert!(
        r.events.iter().any(|e| e.contains("set is unchanged")),
        "{:?}",
        r.events
    );
    assert_eq!(c.s.validator_set(), &want[..]);
    // Short epochs: a validator that registers after an epoch end waits for the next one.
    let mut g = genesis();
    g.epoch_length = 2;
    let mut c = Chain {
        s: State::from_genesis(&g).unwrap(),
    };
    c.ok(13, TxKind::Stake { amount: 60_000 }); // height 1, an epoch end
    c.ok(
        13,
        TxKind::RegisterValidator {
            endpoint: "v13".into(),
            p2p: String::new(),
        },
    ); // height 2
    assert!(!c.s.validator_set().contains(&addr(13)));
    let r = c.block(vec![]); // height 3, an epoch end
    assert!(
        r.events.iter().any(|e| e.contains("validator set of 5")),
        "{:?}",
        r.events
    );
    assert!(c.s.validator_set().contains(&addr(13)));
    assert_eq!(c.s.next_validator_set().len(), 5);
    // The p2p address others dial must parse; a refused update keeps the old record.
    let err = c.fails(
        13,
        TxKind::RegisterValidator {
            endpoint: "v13".into(),
            p2p: "nowhere".into(),
        },
    );
    assert!(err.contains("not host:port"), "{err}");
    assert_eq!(c.s.validator(&addr(13)).unwrap().p2p, "");
}

const SHARD: Hash256 = Hash256([0x5a; 32]);

/// A genesis whose votes and receipts settle within a random run: 20-block epochs and
/// voting periods, 10-block challenge windows.
fn fast_genesis() -> Genesis {
    let mut g = genesis();
    g.epoch_length = 20;
    g.params.voting_period = 20;
    g.params.execution_delay = 1;
    g.params.challenge_window = 10;
    g.params = g.params.fit_periods(20);
    g
}

/// A random action from a small cast, so that collisions (same job, same voter) happen.
fn arb_action() -> impl Strategy<Value = (u8, TxKind)> {
    // 99 holds nothing: a block with its transaction is invalid (rarely, so that most
    // blocks apply).
    let who = prop_oneof![
        4 => Just(1u8),
        4 => Just(2),
        4 => Just(10),
        4 => Just(11),
        4 => Just(12),
        4 => Just(13),
        1 => Just(99)
    ];
    let amount = prop_oneof![Just(0u64), 1u64..2_000, Just(u64::MAX)];
    let job = (0u8..4).prop_map(|j| Hash256([j; 32]));
    let kind = prop_oneof![
        (0u8..14, amount.clone()).prop_map(|(t, amount)| TxKind::Transfer {
            to: addr(t),
            amount
        }),
        amount.clone().prop_map(|amount| TxKind::Stake { amount }),
        amount.clone().prop_map(|amount| TxKind::Unstake { amount }),
        (1u64..300).prop_map(|p| TxKind::RegisterWorker {
            models: vec![MODEL],
            profile: "p".into(),
            hardware: "h".into(),
            price_per_1k: p,
            endpoint: "e".into(),
        }),
        (
            job.clone(),
            amount.clone(),
            any::<bool>(),
            prop_oneof![
                Just(None),
                Just(Some(state::app_id(&addr(10), "a"))),
                Just(Some(state::app_id(&addr(13), "b")))
            ],
            prop_oneof![Just(None), Just(Some(addr(10))), Just(Some(addr(12)))]
        )
            .prop_map(|(job, escrow, assign, app, client)| TxKind::OpenJob {
                job,
                model: MODEL,
                max_tokens: 64,
                escrow,
                worker: assign.then(|| addr(11)),
                app,
                client,
            }),
        (
            prop_oneof![Just("a"), Just("b")],
            prop_oneof![Just(0u64), Just(500), Just(5_000)]
        )
            .prop_map(|(name, fee_bps)| TxKind::RegisterApp {
                name: name.into(),
                fee_bps
            }),
        (
            prop_oneof![Just(10u8), Just(12), Just(2)],
            amount.clone(),
            0u64..200
        )
            .prop_map(|(g, limit, expires)| TxKind::Authorize {
                gateway: addr(g),
                limit,
                expires
            }),
        (1u64..3_000).prop_map(|tokens| TxKind::RegisterDataset {
            license: "CC0".into(),
            shards: vec![tx::Shard {
                hash: SHARD,
                tokens
            }],
        }),
        (0u8..3, amount.clone()).prop_map(|(to, amount)| TxKind::Propose {
            change: ParamChange::Grant {
                to: addr(10 + to),
                amount: amount.min(50),
            }
        }),
        proptest::collection::vec((10u8..14, 0u64..4), 0..3).prop_map(|b| TxKind::Propose {
            change: ParamChange::SetRoyalty {
                model: MODEL,
                beneficiaries: b
                    .into_iter()
                    .map(|(to, weight)| tx::Beneficiary {
                        to: addr(to),
                        weight
                    })
                    .collect(),
            }
        }),
        (prop_oneof![Just(1u8), Just(2), Just(11)], amount.clone()).prop_map(|(v, amount)| {
            TxKind::Delegate {
                validator: addr(v),
                amount: amount.min(60_000),
            }
        }),
        (
            prop_oneof![Just(1u8), Just(2)],
            prop_oneof![Just(0u64), 1u64..30_000],
            prop_oneof![Just(None), Just(Some(addr(1))), Just(Some(addr(2)))]
        )
            .prop_map(|(v, amount, to)| TxKind::Undelegate {
                validator: addr(v),
                amount,
                to
            }),
        job.clone().prop_map(|training| TxKind::Propose {
            change: ParamChange::AllowTrainedModel {
                model: Hash256([8; 32]),
                training
            }
        }),
        (job.clone(), 0u32..5_000).prop_map(|(job, tokens)| TxKind::PostReceipt {
            job,
            receipt: Hash256([1; 32]),
            tokens,
            pointer: "p".into(),
        }),
        job.clone().prop_map(|job| TxKind::Challenge { job }),
        (job.clone(), any::<bool>()).prop_map(|(job, accept)| TxKind::Verdict { job, accept }),
        (0u64..8, any::<bool>()).prop_map(|(proposal, yes)| TxKind::Vote { proposal, yes }),
        (0u64..3, proptest::collection::vec(any::<u8>(), 96..=96))
            .prop_map(|(round, signature)| TxKind::BeaconShare { round, signature }),
        (job.clone(), any::<[u8; 32]>()).prop_map(|(job, c)| TxKind::VerdictCommit {
            job,
            commitment: Hash256(c)
        }),
        (
            job.clone(),
            any::<bool>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(job, accept, p, salt)| TxKind::VerdictReveal {
                job,
                accept,
                pov: Hash256(p),
                salt: Hash256(salt),
            }),
        (1u8..6, 0u64..4).prop_map(|(v, view)| TxKind::ReportEquivocation {
            offender: addr(v),
            view,
            evidence: vec![v; 8],
        }),
        Just(TxKind::Propose {
            change: ParamChange::Set {
                param: Param::ChallengeWindow,
                value: 3
            }
        }),
        (
            job.clone(),
            1u32..4,
            1u32..3,
            amount.clone(),
            1u8..3,
            proptest::collection::vec(prop_oneof![Just(10u8), Just(12), Just(13)], 0..3)
        )
            .prop_map(|(job, rounds, workers, reward_per_round, c, owners)| {
                TxKind::OpenTraining {
                    job,
                    checkpoint: Hash256([0; 32]),
                    commitment: Hash256([0x0c; 32]),
                    rounds,
                    workers,
                    reward_per_round,
                    coordinator: addr(c),
                    // Datasets the owners may or may not have registered (with 100 tokens).
                    data: owners
                        .into_iter()
                        .map(|o| tx::DataShard {
                            dataset: state::dataset_id(
                                &addr(o),
                                &[tx::Shard {
                                    hash: SHARD,
                                    tokens: 100,
                                }],
                            ),
                            shard: SHARD,
                        })
                        .collect(),
                }
            }),
        (
            job.clone(),
            0u32..3,
            proptest::collection::vec(prop_oneof![Just(11u8), Just(13), Just(12)], 0..3),
            proptest::collection::vec(prop_oneof![Just(11u8), Just(13), Just(10)], 0..2)
        )
            .prop_map(|(job, round, acc, rej)| TxKind::TrainRound {
                job,
                round,
                checkpoint: Hash256([round as u8; 32]),
                report: Hash256([5; 32]),
                accepted: acc.into_iter().map(addr).collect(),
                rejected: rej.into_iter().map(addr).collect(),
                url: "http://127.0.0.1:1".into(),
            }),
        (job.clone(), 0u32..3, any::<bool>()).prop_map(|(job, round, accept)| {
            TxKind::TrainVerdict {
                job,
                round,
                report: Hash256([5; 32]),
                accept,
            }
        }),
    ];
    // Validators vote often (mostly yes), so that random proposals pass and execute.
    let vote = (
        1u8..=4,
        1u64..5,
        prop_oneof![3 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(v, proposal, yes)| (v, TxKind::Vote { proposal, yes }));
    // And clients open jobs their workers answer often, so that settlements happen.
    let market = (
        0u8..4,
        100u64..2_000,
        1u32..5_000,
        prop_oneof![
            Just(None),
            Just(Some(state::app_id(&addr(10), "a"))),
            Just(Some(state::app_id(&addr(13), "b")))
        ],
        prop_oneof![Just(None), Just(Some(12u8))],
        any::<bool>(),
    )
        .prop_map(|(j, escrow, tokens, app, gateway, open)| {
            let job = Hash256([j; 32]);
            match (open, gateway) {
                (true, Some(g)) => (
                    g,
                    TxKind::OpenJob {
                        job,
                        model: MODEL,
                        max_tokens: 64,
                        escrow,
                        worker: Some(addr(11)),
                        app,
                        client: Some(addr(10)),
                    },
                ),
                (true, None) => (
                    10,
                    TxKind::OpenJob {
                        job,
                        model: MODEL,
                        max_tokens: 64,
                        escrow,
                        worker: Some(addr(11)),
                        app,
                        client: None,
                    },
                ),
                (false, _) => (
                    11,
                    TxKind::PostReceipt {
                        job,
                        receipt: Hash256([1; 32]),
                        tokens,
                        pointer: "p".into(),
                    },
                ),
            }
        });
    prop_oneof![8 => (who, kind), 2 => vote, 2 => market]
}

/// What the random-block runs covered, summed over every case.
#[derive(Default)]
struct Coverage {
    blocks: u64,
    executed: u64,
    royalties: u64,
    surcharges: u64,
}

/// One random run: applies `blocks` to a fresh chain, checking the supply invariant after
/// each, then replays the valid ones on a second chain and through a snapshot.
fn random_run(blocks: Vec<Vec<(u8, TxKind)>>, cov: &mut Coverage) -> Result<(), TestCaseError> {
    let mut a = Chain::with(fast_genesis());
    let mut b = Chain::with(fast_genesis());
    // The same prelude on both chains (ed25519 signatures are deterministic): two staked
    // workers, so that receipts happen; the apps, datasets and allowances the random
    // transactions name; and a royalty on the model, so that settlements split five ways.
    for c in [&mut a, &mut b] {
        c.setup_worker(11, 50);
        c.setup_worker(13, 50);
        for (who, name) in [(10u8, "a"), (13, "b")] {
            c.ok(
                who,
                TxKind::RegisterApp {
                    name: name.into(),
                    fee_bps: 300,
                },
            );
        }
        for who in [10u8, 12, 13] {
            let shards = vec![tx::Shard {
                hash: SHARD,
                tokens: 100,
            }];
            c.ok(
                who,
                TxKind::RegisterDataset {
                    license: "CC0".into(),
                    shards,
                },
            );
        }
        for (client, gateway) in [(10u8, 12u8), (12, 10)] {
            c.ok(
                client,
                TxKind::Authorize {
                    gateway: addr(gateway),
                    limit: 20_000,
                    expires: 1_000,
                },
            );
        }
        let beneficiaries = vec![tx::Beneficiary {
            to: addr(2),
            weight: 1,
        }];
        c.pass(ParamChange::SetRoyalty {
            model: MODEL,
            beneficiaries,
        });
    }
    let mut replay: Vec<Vec<SignedTx>> = Vec::new();
    for txs in blocks {
        let signed = a.sign_block(txs);
        let h = a.s.height() + 1;
        let root = a.s.root();
        match a.s.apply_block(h, &signed) {
            Ok(r) => {
                cov.executed += r.events.iter().filter(|e| e.ends_with(" executed")).count() as u64;
                replay.push(signed);
            }
            // A sender without the fees for all its transactions makes the block
            // invalid (generated actors may hold nothing); it changes nothing.
            Err(e) => {
                prop_assert!(e.to_string().contains("fees"), "{e}");
                prop_assert_eq!(a.s.root(), root);
                prop_assert_eq!(a.s.height(), h - 1);
            }
        }
        prop_assert!(a.s.audit().is_ok(), "{:?}", a.s.audit());
    }
    cov.blocks += replay.len() as u64;
    for (_, j) in a.s.jobs() {
        if let Some(s) = &j.settlement {
            cov.royalties += (s.royalty > 0) as u64;
            cov.surcharges += (s.app_paid + s.gateway_paid > 0) as u64;
        }
    }
    let mut b = b.s;
    for txs in &replay {
        let h = b.height() + 1;
        b.apply_block(h, txs).unwrap();
    }
    prop_assert_eq!(a.s.root(), b.root());
    let restored = State::from_snapshot(&a.s.to_snapshot()).unwrap();
    prop_assert_eq!(restored.root(), a.s.root());
    Ok(())
}

/// Any sequence of blocks keeps the money invariant (every settlement's parts sum to its
/// escrow), is deterministic, and survives a snapshot round trip with the same root: over
/// at least 10,000 applied random blocks with every transaction kind. Votes end within a
/// run, so grants, royalties and parameter changes execute, and settled jobs pay
/// royalties and app and gateway fees.
#[test]
fn random_blocks_conserve_supply_and_replay_identically() {
    let strategy =
        proptest::collection::vec(proptest::collection::vec(arb_action(), 0..6), 40..=48);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let cov = std::cell::RefCell::new(Coverage::default());
    runner
        .run(&strategy, |blocks| {
            random_run(blocks, &mut cov.borrow_mut())
        })
        .unwrap();
    let cov = cov.into_inner();
    eprintln!(
        "{} blocks applied, {} proposals executed, {} jobs paid royalties, {} app or gateway fees",
        cov.blocks, cov.executed, cov.royalties, cov.surcharges
    );
    assert!(
        cov.blocks >= 10_000,
        "only {} random blocks applied",
        cov.blocks
    );
    assert!(
        cov.executed > 0 && cov.royalties > 0 && cov.surcharges > 0,
        "executed proposals {}, jobs paying royalties {}, paying app or gateway fees {}",
        cov.executed,
        cov.royalties,
        cov.surcharges
    );
}

proptest! {
    #[test]
    fn tx_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignedTx::decode(&bytes);
    }

    #[test]
    fn tx_encoding_roundtrips((who, kind) in arb_action(), nonce in any::<u64>(), fee in any::<u64>()) {
        let t = Tx { chain: Hash256([3; 32]), from: [0; 32], nonce, fee, kind }.sign(&key(who));
        let bytes = t.to_bytes();
        let back = SignedTx::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert!(back.verify_signature().is_ok());
        // Every strict prefix is refused, and so is a trailing byte.
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(SignedTx::decode(&bytes[..cut]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        prop_assert!(SignedTx::decode(&long).is_err());
        // JSON round trip too (the HTTP API's form).
        let json = serde_json::to_string(&t).unwrap();
        prop_assert_eq!(serde_json::from_str::<SignedTx>(&json).unwrap(), t);
    }
}

#[test]
fn training_rounds_pay_accepted_slash_rejected_and_expire_with_a_refund() {
    let mut c = Chain::new();
    // Two staked contributors (11, 13) and one that never staked (12).
    c.ok(WORKER, TxKind::Stake { amount: 10_000 });
    c.ok(13, TxKind::Stake { amount: 10_000 });
    let job = Hash256([0x71; 32]);
    let coordinator = VALS[0];
    let open = |rounds, workers, reward, coord| TxKind::OpenTraining {
        job,
        checkpoint: Hash256([0; 32]),
        commitment: Hash256([0x0c; 32]),
        rounds,
        workers,
        reward_per_round: reward,
        coordinator: addr(coord),
        data: Vec::new(),
    };
    assert!(c
        .fails(CLIENT, open(3, 2, 1_000, CHALLENGER))
        .contains("not an active validator"));
    assert!(c
        .fails(CLIENT, open(0, 2, 1_000, coordinator))
        .contains("rounds must be"));
    assert!(c
        .fails(CLIENT, open(3, 65, 1_000, coordinator))
        .contains("workers must be"));
    assert!(c
        .fails(CLIENT, open(3, 2, u64::MAX, coordinator))
        .contains("overflows"));
    assert!(c
        .fails(CLIENT, open(3, 2, 1_000_000, coordinator))
        .contains("balance"));
    let client0 = c.bal(CLIENT);
    c.ok(CLIENT, open(3, 2, 1_001, coordinator));
    assert_eq!(c.bal(CLIENT), client0 - 1 - 3_003, "fee and escrow taken");
    assert!(c
        .fails(CLIENT, open(3, 2, 1, coordinator))
        .contains("already exists"));
    let round = |round, acc: &[u8], rej: &[u8]| TxKind::TrainRound {
        job,
        round,
        checkpoint: Hash256([round as u8 + 1; 32]),
        report: Hash256([0xee; 32]),
        accepted: acc.iter().map(|a| addr(*a)).collect(),
        rejected: rej.iter().map(|a| addr(*a)).collect(),
        url: "http://127.0.0.1:9/".into(),
    };
    let verdict = |round, accept| TxKind::TrainVerdict {
        job,
        round,
        report: Hash256([0xee; 32]),
        accept,
    };
    // Only the coordinator, only the next round, no duplicates, only staked contributors,
    // at most `workers` accepted.
    assert!(c
        .fails(VALS[1], round(0, &[WORKER], &[]))
        .contains("coordinator"));
    assert!(c
        .fails(coordinator, round(1, &[WORKER], &[]))
        .contains("expects 0"));
    assert!(c
        .fails(coordinator, round(0, &[WORKER], &[WORKER]))
        .contains("twice"));
    assert!(c
        .fails(coordinator, round(0, &[WORKER, 13, 1], &[]))
        .contains("takes 2"));
    assert!(c
        .fails(coordinator, round(0, &[], &[CLIENT]))
        .contains("owner"));
    let mut bad_url = round(0, &[WORKER], &[]);
    if let TxKind::TrainRound { url, .. } = &mut bad_url {
        *url = "file:///etc/passwd".into();
    }
    assert!(c.fails(coordinator, bad_url).contains("http(s) URL"));
    assert!(c
        .fails(VALS[1], verdict(0, true))
        .contains("no round of this job waits"));

    // Round 0: both pass, once a quorum (the coordinator and two more of the four equal
    // validators) accepts it. Of the 1,001: treasury_bps (5 %) 50 to the treasury,
    // validator_fee_bps (10 %) 100 to the three accepting validators (33 each, the odd
    // unit to the treasury), and the 851 left split 425/425, the odd unit back to the owner.
    let (w0, w13, client1) = (c.bal(WORKER), c.bal(13), c.bal(CLIENT));
    let v2_0 = c.bal(VALS[2]);
    c.ok(coordinator, round(0, &[WORKER, 13], &[]));
    assert_eq!(c.bal(WORKER), w0, "not paid before the quorum");
    let t = c.s.training(&job).unwrap().clone();
    assert_eq!((t.rounds_done, t.pending.as_ref().unwrap().round), (0, 0));
    assert!(c
        .fails(coordinator, round(0, &[WORKER, 13], &[]))
        .contains("already proposed"));
    assert!(c
        .fails(coordinator, verdict(0, true))
        .contains("already gave"));
    assert!(c
        .fails(CHALLENGER, verdict(0, true))
        .contains("not an active validator"));
    let mut other = verdict(0, true);
    if let TxKind::TrainVerdict { report, .. } = &mut other {
        *report = Hash256([1; 32]);
    }
    assert!(c.fails(VALS[1], other).contains("proposed round is 0"));
    c.ok(VALS[1], verdict(0, true));
    assert_eq!(c.bal(WORKER), w0, "two of four is not a quorum");
    assert!(c.fails(VALS[1], verdict(0, false)).contains("already gave"));
    let treasury0 = c.s.meta().treasury;
    c.ok(VALS[2], verdict(0, true));
    assert_eq!(c.bal(WORKER), w0 + 425);
    assert_eq!(c.bal(13), w13 + 425);
    assert_eq!(c.bal(CLIENT), client1 + 1);
    assert_eq!(
        c.bal(VALS[2]),
        v2_0 - 1 + 33,
        "its verdict's fee, and its judging share"
    );
    let earned = |c: &Chain, v: u8| c.s.validators().find(|x| *x.0 == addr(v)).unwrap().1.earned;
    assert_eq!(earned(&c, VALS[2]), 33);
    assert_eq!(earned(&c, VALS[3]), 0, "it gave no verdict");
    // The settling verdict's fee, the 5 % and the judging remainder.
    assert_eq!(c.s.meta().treasury, treasury0 + 1 + 50 + 1);
    let t = c.s.training(&job).unwrap().clone();
    assert_eq!((t.rounds_done, t.checkpoint), (1, Hash256([1; 32])));
    assert_eq!((t.paid, t.fees, t.refunded, t.escrow), (850, 150, 1, 2_002));
    assert_eq!(t.last_report, Some(Hash256([0xee; 32])));
    assert_eq!(
        t.first_commitment,
        Hash256([0x0c; 32]),
        "kept from the opening"
    );

    // Round 1: 13 cheated: slashed slash_bps of its stake, half to the coordinator. An
    // accepted contributor without the worker stake is listed (the report's lists are
    // proposed as they are) but not paid: WORKER gets the whole reward.
    let stake13 = c.s.account(&addr(13)).stake;
    let coord0 = c.bal(coordinator);
    let burned0 = c.s.meta().burned;
    let unstaked = c.bal(CHALLENGER);
    c.ok(coordinator, round(1, &[WORKER, CHALLENGER], &[13]));
    c.ok(VALS[1], verdict(1, true));
    c.ok(VALS[3], verdict(1, true));
    let slash = stake13 * c.s.params().slash_bps / BPS;
    assert!(slash > 0);
    assert_eq!(c.s.account(&addr(13)).stake, stake13 - slash);
    let reward = slash * c.s.params().reporter_bps / BPS;
    assert_eq!(c.bal(coordinator), coord0 - 1 + reward + 33);
    assert_eq!(c.s.meta().burned, burned0 + slash - reward);
    assert_eq!(c.bal(WORKER), w0 + 425 + 851);
    assert_eq!(c.bal(CHALLENGER), unstaked);
    let t = c.s.training(&job).unwrap().clone();
    assert_eq!((t.accepted, t.rejected, t.slashed), (3, 1, slash));

    // The coordinator goes silent: after job_timeout blocks the rest is refunded.
    let client2 = c.bal(CLIENT);
    let timeout = c.s.params().job_timeout;
    c.empty_blocks(timeout + 1);
    let t = c.s.training(&job).unwrap().clone();
    assert_eq!(t.status, TrainingStatus::Expired);
    assert_eq!((t.escrow, t.refunded), (0, 1 + 1_001));
    assert_eq!(c.bal(CLIENT), client2 + 1_001);
    assert!(c
        .fails(coordinator, round(2, &[WORKER], &[]))
        .contains("Expired"));

    // A round the validators reject: the coordinator is slashed (to the rejecters), nobody
    // is paid for it, and the job ends with the owner refunded.
    let job3 = Hash256([0x73; 32]);
    c.ok(
        CLIENT,
        TxKind::OpenTraining {
            job: job3,
            checkpoint: Hash256([0; 32]),
            commitment: Hash256([0x0c; 32]),
            rounds: 2,
            workers: 1,
            reward_per_round: 600,
            coordinator: addr(coordinator),
            data: Vec::new(),
        },
    );
    let lie = TxKind::TrainRound {
        job: job3,
        round: 0,
        checkpoint: Hash256([3; 32]),
        report: Hash256([3; 32]),
        accepted: vec![addr(WORKER)],
        rejected: vec![],
        url: "https://coordinator.example/".into(),
    };
    c.ok(coordinator, lie);
    let (w1, client4, coord_stake) = (
        c.bal(WORKER),
        c.bal(CLIENT),
        c.s.account(&addr(coordinator)).stake,
    );
    let (v2, burned1) = (c.bal(VALS[2]), c.s.meta().burned);
    let no = |v: u8, c: &mut Chain| {
        c.ok(
            v,
            TxKind::TrainVerdict {
                job: job3,
                round: 0,
                report: Hash256([3; 32]),
                accept: false,
            },
        )
    };
    no(VALS[1], &mut c);
    no(VALS[2], &mut c);
    assert_eq!(
        c.s.training(&job3).unwrap().status,
        TrainingStatus::Running,
        "2 of 4 is not a quorum"
    );
    no(VALS[3], &mut c);
    let t = c.s.training(&job3).unwrap().clone();
    assert_eq!(t.status, TrainingStatus::Rejected);
    assert_eq!(
        (t.paid, t.refunded, t.escrow, t.rounds_done),
        (0, 1_200, 0, 0)
    );
    assert!(t.pending.is_none());
    assert_eq!(c.bal(WORKER), w1, "nobody is paid for a rejected round");
    assert_eq!(c.bal(CLIENT), client4 + 1_200);
    let slash = coord_stake * c.s.params().slash_bps / BPS;
    assert!(slash > 0);
    assert_eq!(c.s.account(&addr(coordinator)).stake, coord_stake - slash);
    // The rejecters share reporter_bps of the slash (a third each); the rest is burned, so
    // a cartel gains little from a false rejection.
    let reward = slash * c.s.params().reporter_bps / BPS;
    assert_eq!(
        c.bal(VALS[2]),
        v2 - 1 + reward / 3,
        "a third of the reporter share each, less its fee"
    );
    assert_eq!(c.s.meta().burned, burned1 + slash - 3 * (reward / 3));
    assert!(c
        .fails(
            VALS[1],
            TxKind::TrainVerdict {
                job: job3,
                round: 0,
                report: Hash256([3; 32]),
                accept: true
            }
        )
        .contains("Rejected"));

    // A job run to the end finishes with nothing held; nobody passing refunds the round.
    let job2 = Hash256([0x72; 32]);
    c.ok(
        CLIENT,
        TxKind::OpenTraining {
            job: job2,
            checkpoint: Hash256([0; 32]),
            commitment: Hash256([0x0c; 32]),
            rounds: 2,
            workers: 1,
            reward_per_round: 700,
            coordinator: addr(coordinator),
            data: Vec::new(),
        },
    );
    let client3 = c.bal(CLIENT);
    for (r, acc) in [(0u32, vec![]), (1, vec![addr(WORKER)])] {
        c.ok(
            coordinator,
            TxKind::TrainRound {
                job: job2,
                round: r,
                checkpoint: Hash256([9; 32]),
                report: Hash256([9; 32]),
                accepted: acc,
                rejected: vec![],
                url: "http://10.0.0.1:8000".into(),
            },
        );
        for v in [VALS[2], VALS[3]] {
            c.ok(
                v,
                TxKind::TrainVerdict {
                    job: job2,
                    round: r,
                    report: Hash256([9; 32]),
                    accept: true,
                },
            );
        }
    }
    let t = c.s.training(&job2).unwrap().clone();
    assert_eq!(t.status, TrainingStatus::Finished);
    // Each round: 35 treasury, 70 judging, 595 for contributors (refunded when none).
    assert_eq!((t.paid, t.fees, t.refunded, t.escrow), (595, 210, 595, 0));
    assert_eq!(c.bal(CLIENT), client3 + 595);
    // The record is in the state tree and survives a snapshot.
    let (rec, proof) = c.s.prove(&Key::Training(job2));
    let rec = rec.unwrap();
    let got = smt::verify(&c.s.root().0, &Key::Training(job2).hash(), &proof).unwrap();
    assert_eq!(got, Some(state::value_hash(&rec)));
    let back: TrainingJob = state::decode_record(&rec).unwrap();
    assert_eq!(back, t);
    let restored = State::from_snapshot(&c.s.to_snapshot()).unwrap();
    assert_eq!(restored.root(), c.s.root());
    assert_eq!(restored.training(&job2), Some(&t));
}

#[test]
fn decoder_refuses_unknown_variants_and_oversize() {
    let t = Tx {
        chain: Hash256([3; 32]),
        from: [0; 32],
        nonce: 0,
        fee: 1,
        kind: TxKind::Stake { amount: 5 },
    }
    .sign(&key(1));
    let mut b = t.to_bytes();
    b[32 + 32 + 16] = 200; // the kind tag
    assert!(SignedTx::decode(&b)
        .unwrap_err()
        .to_string()
        .contains("unknown tag"));
    let huge = vec![0u8; deai_ledger::tx::MAX_TX_BYTES + 1];
    assert!(SignedTx::decode(&huge)
        .unwrap_err()
        .to_string()
        .contains("length"));
}

/// Regression (found while writing the `ledger_state` fuzz target): a change that passes the
/// per-parameter check but breaks a cross-parameter rule used to stay in force, be retried
/// after a snapshot reload, and underflow the settlement of the next accepted job.
#[test]
fn a_passed_change_that_breaks_the_parameter_set_fails_and_changes_nothing() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let change = ParamChange::Set {
        param: Param::ValidatorFeeBps,
        value: 10_000, // with treasury_bps 500, the shares would exceed the cost
    };
    c.ok(1, TxKind::Propose { change });
    c.block(vec![
        (
            1,
            TxKind::Vote {
                proposal: 1,
                yes: true,
            },
        ),
        (
            2,
            TxKind::Vote {
                proposal: 1,
                yes: true,
            },
        ),
        (
            3,
            TxKind::Vote {
                proposal: 1,
                yes: true,
            },
        ),
    ]);
    let params_before = c.s.params().clone();
    let p = c.s.proposal(1).unwrap().clone();
    while c.s.height() < p.voting_end + c.s.params().execution_delay {
        c.block(vec![]);
    }
    assert_eq!(c.s.proposal(1).unwrap().status, ProposalStatus::Failed);
    assert_eq!(
        c.s.params(),
        &params_before,
        "the invalid change was rolled back"
    );
    // A reloaded node does not retry it and stays in step.
    let mut reloaded = State::from_snapshot(&c.s.to_snapshot()).unwrap();
    for _ in 0..3 {
        let h = c.s.height() + 1;
        c.s.apply_block(h, &[]).unwrap();
        reloaded.apply_block(h, &[]).unwrap();
        assert_eq!(reloaded.root(), c.s.root());
    }
    // Jobs still settle with supply conserved.
    let job = Hash256([12; 32]);
    c.open_and_receipt(job, 5_000, 2_000);
    c.empty_blocks(c.s.params().challenge_window);
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Accepted);
    c.s.audit().unwrap();
}

// ----- issue 23: stake behind every receipt, paid fees, governance that cannot brick -----

fn worker_rec(c: &Chain, who: u8) -> Worker {
    c.s.worker(&addr(who)).cloned().unwrap()
}

/// The attack as found: stake the minimum, register, unstake all but one unit, then post a
/// receipt (a random digest, a huge token count) for a job never run.
#[test]
fn a_fake_receipt_after_unstaking_is_refused() {
    let mut c = Chain::new();
    let min = c.s.params().min_worker_stake;
    c.ok(WORKER, TxKind::Stake { amount: min });
    c.ok(
        WORKER,
        TxKind::RegisterWorker {
            models: vec![MODEL],
            profile: "deai-cpu-bi-v1".into(),
            hardware: "h".into(),
            price_per_1k: 100,
            endpoint: "e".into(),
        },
    );
    c.ok(WORKER, TxKind::Unstake { amount: min - 1 });
    let job = Hash256([77; 32]);
    c.ok(
        CLIENT,
        TxKind::OpenJob {
            job,
            model: MODEL,
            max_tokens: 100,
            escrow: 500,
            worker: Some(addr(WORKER)),
            app: None,
            client: None,
        },
    );
    let e = c.fails(
        WORKER,
        TxKind::PostReceipt {
            job,
            receipt: Hash256([0xab; 32]),
            tokens: u32::MAX,
            pointer: "p".into(),
        },
    );
    assert!(e.contains("below the worker minimum"), "{e}");
    // Even with the minimum restaked, the receipt's collateral (10x the 500 it would bill)
    // is not covered.
    c.ok(WORKER, TxKind::Stake { amount: min - 1 });
    let e = c.fails(
        WORKER,
        TxKind::PostReceipt {
            job,
            receipt: Hash256([0xab; 32]),
            tokens: u32::MAX,
            pointer: "p".into(),
        },
    );
    assert!(e.contains("collateral"), "{e}");
    c.empty_blocks(c.s.params().job_timeout + 1);
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Expired);
    assert_eq!(worker_rec(&c, WORKER).earned, 0);
}

#[test]
fn collateral_is_locked_until_settlement_and_a_rejection_takes_at_least_it() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 1_000);
    // Cost 900 at 1000 per 1k tokens: collateral 9,000 of the 10,000 staked.
    let (a, b) = (Hash256([1; 32]), Hash256([2; 32]));
    c.open_and_receipt(a, 1_000, 900);
    let w = worker_rec(&c, WORKER);
    assert_eq!(w.locked, 9_000);
    assert_eq!(
        c.s.job(&a).unwrap().receipt.as_ref().unwrap().collateral,
        9_000
    );
    // A second receipt would need another 9,000 of free stake.
    c.ok(
        CLIENT,
        TxKind::OpenJob {
            job: b,
            model: MODEL,
            max_tokens: 100,
            escrow: 1_000,
            worker: Some(addr(WORKER)),
            app: None,
            client: None,
        },
    );
    let e = c.fails(
        WORKER,
        TxKind::PostReceipt {
            job: b,
            receipt: Hash256([9; 32]),
            tokens: 900,
            pointer: "p".into(),
        },
    );
    assert!(e.contains("free stake 1000"), "{e}");
    let e = c.fails(WORKER, TxKind::Unstake { amount: 1_001 });
    assert!(e.contains("locked as collateral"), "{e}");
    // Rejected: the slash is the collateral (9,000), more than slash_bps of the holdings
    // (5,000).
    c.block(vec![
        (
            1,
            TxKind::Verdict {
                job: a,
                accept: false,
            },
        ),
        (
            2,
            TxKind::Verdict {
                job: a,
                accept: false,
            },
        ),
        (
            3,
            TxKind::Verdict {
                job: a,
                accept: false,
            },
        ),
    ]);
    let j = c.s.job(&a).unwrap();
    assert_eq!(j.status, JobStatus::Rejected);
    assert_eq!(j.settlement.as_ref().unwrap().slashed, 9_000);
    let w = worker_rec(&c, WORKER);
    assert_eq!((w.locked, w.slashed), (0, 9_000));
    assert_eq!(c.s.account(&addr(WORKER)).stake, 1_000);
}

#[test]
fn an_accepted_receipt_releases_its_collateral() {
    let mut c = Chain::new();
    c.setup_worker(WORKER, 100);
    let job = Hash256([3; 32]);
    c.open_and_receipt(job, 1_000, 1_000);
    assert_eq!(worker_rec(&c, WORKER).locked, 1_000);
    c.empty_blocks(c.s.params().challenge_window + 1);
    assert_eq!(c.s.job(&job).unwrap().status, JobStatus::Accepted);
    assert_eq!(worker_rec(&c, WORKER).locked, 0);
    c.ok(WORKER, TxKind::Unstake { amount: 10_000 });
}

/// The expected value of faking a receipt, measured on the ledger at the default
/// parameters: pay-off when unsampled (accepted at the window's end) against the loss when
/// sampled and rejected, weighted by the sample rate. Negative for cheap and dear jobs.
#[test]
fn faking_a_receipt_loses_money_in_expectation_at_the_defaults() {
    for (escrow, tokens, price) in [
        (10u64, 5u32, 1_000u64),
        (500, 4_000, 100),
        (5_000, 1_000, 5_000),
    ] {
        let outcome = |accept: bool| -> i128 {
            let mut c = Chain::new();
            c.setup_worker(WORKER, price);
            c.ok(WORKER, TxKind::Stake { amount: 60_000 });
            let before = c.bal(WORKER) as i128 + c.s.account(&addr(WORKER)).stake as i128;
            let job = Hash256([5; 32]);
            c.open_and_receipt(job, escrow, tokens);
            if accept {
                c.empty_blocks(c.s.params().challenge_window + 1);
            } else {
                c.block(vec![
                    (1, TxKind::Verdict { job, accept: false }),
                    (2, TxKind::Verdict { job, accept: false }),
                    (3, TxKind::Verdict { job, accept: false }),
                ]);
            }
            let a = c.s.account(&addr(WORKER));
            let unb: u64 = a.unbonding.iter().map(|u| u.amount).sum();
            a.balance as i128 + a.stake as i128 + unb as i128 - before + 1 // its PostReceipt fee
        };
        let (paid, lost) = (outcome(true), outcome(false));
        assert!(paid > 0 && lost < 0, "{paid} {lost}");
        let s = Params::default().sample_rate_bps as i128;
        let ev = (BPS as i128 - s) * paid + s * lost;
        assert!(
            ev < 0,
            "escrow {escrow}: EV x 10000 = {ev} (paid {paid}, lost {lost})"
        );
    }
}

#[test]
fn governance_cannot_make_faking_pay_or_brick_itself() {
    let d = Params::default();
    d.validate_for(1_000).unwrap();
    // Lowering the sample rate without raising the collateral would make faking pay.
    let cheap = Params {
        sample_rate_bps: 500,
        ..d.clone()
    };
    assert!(cheap
        .validate_for(1_000)
        .unwrap_err()
        .contains("collateral_bps"));
    let ok = Params {
        sample_rate_bps: 500,
        collateral_bps: 190_000,
        ..d.clone()
    };
    ok.validate_for(1_000).unwrap();
    // Unbonding shorter than an epoch plus the evidence window lets a staker leave.
    let leave = Params {
        unbonding_period: 100,
        ..d.clone()
    };
    assert!(leave
        .validate_for(1_000)
        .unwrap_err()
        .contains("unbonding_period"));
    let mut g = genesis();
    g.params.unbonding_period = 100;
    assert!(State::from_genesis(&g).is_err());

    let mut c = Chain::new();
    for (param, value) in [
        (Param::ThresholdBps, 10_000),
        (Param::QuorumBps, 10_000),
        (Param::MinFee, u64::MAX),
        (Param::SampleRateBps, 0),
        (Param::ChallengeWindow, 1),
    ] {
        let e = c.fails(
            1,
            TxKind::Propose {
                change: ParamChange::Set { param, value },
            },
        );
        assert!(e.contains("must be within"), "{param:?}: {e}");
    }
    // A sample-rate cut that passes its vote fails at execution and changes nothing.
    let id = c.pass(ParamChange::Set {
        param: Param::SampleRateBps,
        value: 500,
    });
    assert_eq!(c.s.proposal(id).unwrap().status, ProposalStatus::Failed);
    assert_eq!(c.s.params().sample_rate_bps, 1_000);
    // A validator minimum above every validator's stake would stop verdicts: it fails too.
    let id = c.pass(ParamChange::Set {
        param: Param::MinValidatorStake,
        value: 60_000,
    });
    assert_eq!(c.s.proposal(id).unwrap().status, ProposalStatus::Failed);
    assert_eq!(
        c.s.params().min_validator_stake,
        Params::default().min_validator_stake
    );
}

/// Votes weigh the stake a voter had bonded before the proposal opened, fixed when cast:
/// staking more (or arriving) after it opened adds nothing, and the quorum counts the stake
/// of the time it opened.
#[test]
fn votes_weigh_stake_bonded_before_the_proposal() {
    let mut c = Chain::new();
    c.ok(
        1,
        TxKind::Propose {
            change: ParamChange::Set {
                param: Param::PriceFloor,
                value: 2,
            },
        },
    );
    let id = c.s.meta().next_proposal - 1;
    assert_eq!(c.s.proposal(id).unwrap().total_stake, 200_000);
    // A whale stakes after the proposal opened and tries to vote it down.
    c.ok(CLIENT, TxKind::Stake { amount: 900_000 });
    let e = c.fails(
        CLIENT,
        TxKind::Vote {
            proposal: id,
            yes: false,
        },
    );
    assert!(e.contains("after proposal"), "{e}");
    // Validator 1 votes yes with 50,000, then stakes 900,000 more: still 50,000.
    c.ok(
        1,
        TxKind::Vote {
            proposal: id,
            yes: true,
        },
    );
    c.ok(
        2,
        TxKind::Vote {
            proposal: id,
            yes: true,
        },
    );
    c.ok(1, TxKind::Stake { amount: 900_000 });
    // Validator 3 votes no, then unstakes: its vote keeps its weight (the stake is still
    // slashable while unbonding, which outlasts the vote).
    c.ok(
        3,
        TxKind::Vote {
            proposal: id,
            yes: false,
        },
    );
    c.ok(3, TxKind::Unstake { amount: 40_000 });
    // Propose, stake and vote in one block: the stake bonded in the proposal's own block
    // does not vote on it either.
    let r = c.block(vec![
        (
            2,
            TxKind::Propose {
                change: ParamChange::Set {
                    param: Param::PriceFloor,
                    value: 3,
                },
            },
        ),
        (2, TxKind::Stake { amount: 1 }),
        (
            2,
            TxKind::Vote {
                proposal: id + 1,
                yes: true,
            },
        ),
    ]);
    assert_eq!(r.outcomes[0].error, None);
    assert!(
        r.outcomes[2]
            .error
            .as_deref()
            .unwrap()
            .contains("after proposal"),
        "{r:?}"
    );
    // Re-voting after staking more is refused.
    let e = c.fails(
        1,
        TxKind::Vote {
            proposal: id,
            yes: true,
        },
    );
    assert!(e.contains("after proposal"), "{e}");
    c.empty_blocks(c.s.params().voting_period + 1);
    let p = c.s.proposal(id).unwrap();
    assert_eq!((p.yes_stake, p.no_stake), (100_000, 50_000));
    assert_eq!(p.status, ProposalStatus::Executed);
}

#[test]
fn a_block_whose_sender_cannot_pay_all_its_fees_is_invalid() {
    let mut c = Chain::new();
    let poor = 98u8;
    c.ok(
        CLIENT,
        TxKind::Transfer {
            to: addr(poor),
            amount: 1,
        },
    );
    // One fee-paying transaction: fine (the transfer itself fails, the fee is paid).
    let root = c.s.root();
    let t0 = c.tx(poor, 0, TxKind::Stake { amount: 1 });
    let t1 = c.tx(poor, 1, TxKind::Stake { amount: 1 });
    let h = c.s.height() + 1;
    // Two: the block is invalid and changes nothing (the attack: 94 finalized for 1 fee).
    let e = c.s.apply_block(h, &[t0.clone(), t1]).unwrap_err();
    assert!(e.to_string().contains("does not cover the fees"), "{e}");
    assert_eq!(c.s.root(), root);
    let r = c.s.apply_block(h, &[t0]).unwrap();
    assert!(r.outcomes[0].error.as_deref().unwrap().contains("balance"));
    assert_eq!(c.bal(poor), 0);
    // Fees are charged before any action: a transfer of the whole balance cannot leave the
    // sender's next fee unpaid.
    let rich = 97u8;
    c.ok(
        CLIENT,
        TxKind::Transfer {
            to: addr(rich),
            amount: 10,
        },
    );
    let r = c.block(vec![
        (
            rich,
            TxKind::Transfer {
                to: addr(1),
                amount: 8,
            },
        ),
        (
            rich,
            TxKind::Transfer {
                to: addr(1),
                amount: 1,
            },
        ),
    ]);
    assert_eq!(r.outcomes[0].error, None);
    assert!(r.outcomes[1].error.is_some());
    assert_eq!(c.bal(rich), 0);
}

/// A signature that plain `verify` accepts but `verify_strict` refuses: the identity point
/// as the key (a weak key) with R = identity and S = 0 verifies for any message.
#[test]
fn transactions_from_weak_keys_are_refused() {
    let mut c = Chain::new();
    let mut weak = [0u8; 32];
    weak[0] = 1; // the compressed identity point
    let tx = Tx {
        chain: c.s.chain_id(),
        from: weak,
        nonce: 0,
        fee: 1,
        kind: TxKind::Stake { amount: 1 },
    };
    let mut sig = [0u8; 64];
    sig[0] = 1; // R = identity, S = 0
    let signed = SignedTx { tx, sig };
    let key = ed25519_dalek::VerifyingKey::from_bytes(&weak).unwrap();
    assert!(
        ed25519_dalek::Verifier::verify(
            &key,
            &signed.tx.signing_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig)
        )
        .is_ok(),
        "the forged signature passes the lax check"
    );
    assert!(signed.verify_signature().is_err());
    c.ok(
        CLIENT,
        TxKind::Transfer {
            to: weak,
            amount: 100,
        },
    );
    let h = c.s.height() + 1;
    assert!(c.s.apply_block(h, &[signed]).is_err());
}

/// Kernel profiles are registered, not declared: a worker may only register a profile the
/// chain accepts, and governance adds (or removes) profiles.
#[test]
fn workers_register_only_profiles_governance_accepts() {
    let mut c = Chain::new();
    c.ok(WORKER, TxKind::Stake { amount: 10_000 });
    let reg = |profile: &str| TxKind::RegisterWorker {
        models: vec![MODEL],
        profile: profile.into(),
        hardware: "h".into(),
        price_per_1k: 100,
        endpoint: "e".into(),
    };
    let e = c.fails(WORKER, reg("llama.cpp-cpu-loose"));
    assert!(e.contains("not accepted"), "{e}");
    c.ok(WORKER, reg(deai_ledger::state::DEFAULT_PROFILE));
    // The last profile cannot be removed.
    let e = c.fails(
        1,
        TxKind::Propose {
            change: ParamChange::DisallowProfile {
                profile: deai_ledger::state::DEFAULT_PROFILE.into(),
            },
        },
    );
    assert!(e.contains("last accepted"), "{e}");
    c.ok(
        1,
        TxKind::Propose {
            change: ParamChange::AllowProfile {
                profile: "deai-gpu-v1".into(),
            },
        },
    );
    let id = c.s.meta().next_proposal - 1;
    c.block(
        VALS.iter()
            .map(|v| {
                (
                    *v,
                    TxKind::Vote {
                        proposal: id,
                        yes: true,
                    },
                )
            })
            .collect(),
    );
    c.empty_blocks(c.s.params().voting_period + c.s.params().execution_delay + 1);
    assert!(c.s.params().profile_allowed("deai-gpu-v1"));
    c.ok(13, TxKind::Stake { amount: 10_000 });
    c.ok(13, reg("deai-gpu-v1"));
    // Disallowed again: the worker of that profile can post no new receipt (validators
    // would no longer accept it; one posted before is judged as it was posted).
    c.pass(ParamChange::DisallowProfile {
        profile: "deai-gpu-v1".into(),
    });
    let job = Hash256([0x61; 32]);
    c.ok(
        CLIENT,
        TxKind::OpenJob {
            job,
            model: MODEL,
            max_tokens: 10,
            escrow: 100,
            worker: Some(addr(13)),
            app: None,
            client: None,
        },
    );
    let e = c.fails(
        13,
        TxKind::PostReceipt {
            job,
            receipt: Hash256([1; 32]),
            tokens: 10,
            pointer: "p".into(),
        },
    );
    assert!(e.contains("no longer accepted"), "{e}");
}
