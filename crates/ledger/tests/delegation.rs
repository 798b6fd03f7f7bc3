//! Stake delegation: a delegator's stake weighs in its validator's verdicts and votes,
//! earns its share of the validator's rewards less the commission, is slashed with it, and
//! can vote itself against its validator. The attacks: flash-delegating for one vote,
//! taking out more than one's shares are worth, dodging a slash, delegating to a key that
//! validates nothing.

mod common;
use common::*;
use deai_ledger::*;
use deai_types::Hash256;

const DELEGATOR: u8 = CLIENT;
const V: u8 = VALS[0];

fn delegate(c: &mut Chain, who: u8, to: u8, amount: u64) {
    c.ok(
        who,
        TxKind::Delegate {
            validator: addr(to),
            amount,
        },
    );
}

fn to_next_epoch(c: &mut Chain) {
    let e = c.s.meta().epoch_length;
    while !c.s.is_epoch_end(c.s.height()) {
        c.empty_blocks(1);
    }
    assert_eq!(c.s.height() % e, e - 1);
}

fn value(c: &Chain, who: u8, of: u8) -> u64 {
    c.s.delegations_of(&addr(who))
        .into_iter()
        .find(|(v, _, _)| *v == addr(of))
        .map_or(0, |d| d.2)
}

/// Runs one training round (reward 10,000) with coordinator `V` and two more validators
/// accepting it: each of the three judges is paid 333.
fn judged_round(c: &mut Chain) {
    c.setup_worker(WORKER, 100);
    let job = Hash256([0x71; 32]);
    c.ok(
        CHALLENGER,
        TxKind::OpenTraining {
            job,
            checkpoint: Hash256([0; 32]),
            commitment: Hash256([0x0c; 32]),
            rounds: 1,
            workers: 1,
            reward_per_round: 10_000,
            coordinator: addr(V),
            data: vec![],
        },
    );
    c.ok(
        V,
        TxKind::TrainRound {
            job,
            round: 0,
            checkpoint: Hash256([1; 32]),
            report: Hash256([0xee; 32]),
            accepted: vec![addr(WORKER)],
            rejected: vec![],
            url: "http://10.0.0.1:8000".into(),
        },
    );
    for v in [VALS[2], VALS[3]] {
        c.ok(
            v,
            TxKind::TrainVerdict {
                job,
                round: 0,
                report: Hash256([0xee; 32]),
                accept: true,
            },
        );
    }
    assert_eq!(c.s.training(&job).unwrap().status, TrainingStatus::Finished);
}

#[test]
fn delegators_weigh_in_and_share_rewards_less_the_commission() {
    let mut c = Chain::new();
    let before = c.bal(DELEGATOR);
    delegate(&mut c, DELEGATOR, V, 50_000);
    assert_eq!(c.bal(DELEGATOR), before - 1 - 50_000);
    // Delegated stake weighs from the next epoch on: nobody borrows weight for one verdict.
    assert_eq!(c.s.weight(&addr(V)), 50_000);
    to_next_epoch(&mut c);
    assert_eq!(c.s.weight(&addr(V)), 100_000, "own 50,000 plus the pool");
    let active: std::collections::BTreeMap<Address, u64> =
        c.s.active_validators().into_iter().collect();
    assert_eq!(active[&addr(V)], 100_000);
    assert_eq!(active[&addr(VALS[1])], 50_000);
    assert_eq!(value(&c, DELEGATOR, V), 50_000);

    let v0 = c.bal(V);
    judged_round(&mut c);
    // V's 333: half by weight is the pool's (166), less the 10 % commission (16): 150 into
    // the pool, 183 to V (its TrainRound fee aside).
    assert_eq!(c.bal(V), v0 - 1 + 183);
    assert_eq!(c.s.validator(&addr(V)).unwrap().pool, 50_150);
    assert_eq!(value(&c, DELEGATOR, V), 50_150);
    // A validator without delegators keeps all of it.
    assert_eq!(c.s.validator(&addr(VALS[2])).unwrap().earned, 333);

    // Taking out more than the shares are worth is refused; taking all moves it out of the
    // pool (and out of V's weight at once) into V's leaving list, released to the delegator
    // after the unbonding period.
    let e = c.fails(
        DELEGATOR,
        TxKind::Undelegate {
            validator: addr(V),
            amount: 50_151,
            to: None,
        },
    );
    assert!(e.contains("worth 50150"), "{e}");
    c.ok(
        DELEGATOR,
        TxKind::Undelegate {
            validator: addr(V),
            amount: 0,
            to: None,
        },
    );
    assert!(c.s.delegation(&addr(DELEGATOR), &addr(V)).is_none());
    let v = c.s.validator(&addr(V)).unwrap();
    assert_eq!((v.pool, v.leaving.len()), (0, 1));
    assert_eq!(v.leaving[0].amount, 50_150);
    assert_eq!(c.s.weight(&addr(V)), c.s.account(&addr(V)).stake);
    let bal = c.bal(DELEGATOR);
    c.empty_blocks(c.s.params().unbonding_period + 1);
    assert_eq!(c.bal(DELEGATOR), bal + 50_150);
    assert!(c.s.validator(&addr(V)).unwrap().leaving.is_empty());
    assert_eq!(c.s.meta().delegated, 0);
    let restored = State::from_snapshot(&c.s.to_snapshot()).unwrap();
    assert_eq!(restored.root(), c.s.root());
}

#[test]
fn a_slash_takes_the_same_share_of_the_pool_and_of_what_is_leaving_it() {
    let mut c = Chain::new();
    delegate(&mut c, DELEGATOR, V, 20_000);
    // A second delegator saw it coming and undelegated: its stake is still leaving V.
    delegate(&mut c, CHALLENGER, V, 8_000);
    c.ok(
        CHALLENGER,
        TxKind::Undelegate {
            validator: addr(V),
            amount: 0,
            to: Some(addr(VALS[1])),
        },
    );
    let burned = c.s.meta().burned;
    c.ok(
        VALS[1],
        TxKind::ReportEquivocation {
            offender: addr(V),
            view: 7,
            evidence: vec![1; 8],
        },
    );
    // slash_bps (50 %) of V's 50,000, and 50 % of its pool: the delegator loses half too.
    assert_eq!(c.s.account(&addr(V)).stake, 25_000);
    assert_eq!(c.s.validator(&addr(V)).unwrap().pool, 10_000);
    assert_eq!(value(&c, DELEGATOR, V), 10_000);
    let v = c.s.validator(&addr(V)).unwrap();
    assert_eq!(v.slashed, 39_000);
    // The undelegation on its way out lost half too, and is redelegated at release.
    assert_eq!(c.s.validator(&addr(V)).unwrap().leaving[0].amount, 4_000);
    // The reporter's 10 % is of V's own slash; the rest and the pools' loss are burned.
    assert_eq!(c.s.meta().burned, burned + 25_000 - 2_500 + 10_000 + 4_000);
    // Shares bought after the slash are priced at the new value: no one gains from it.
    delegate(&mut c, 13, V, 10_000);
    assert_eq!(value(&c, 13, V), 10_000);
    assert_eq!(value(&c, DELEGATOR, V), 10_000);
    c.empty_blocks(c.s.params().unbonding_period + 1);
    assert_eq!(
        value(&c, CHALLENGER, VALS[1]),
        4_000,
        "redelegated after unbonding"
    );
}

#[test]
fn a_delegator_can_vote_against_its_validator_but_not_flash_delegate() {
    let mut c = Chain::new();
    delegate(&mut c, DELEGATOR, V, 50_000);
    c.ok(
        VALS[1],
        TxKind::Propose {
            change: ParamChange::Set {
                param: Param::ChallengeWindow,
                value: 30,
            },
        },
    );
    let id = c.s.meta().next_proposal - 1;
    let vote = |yes| TxKind::Vote { proposal: id, yes };
    // Delegating (or adding to a pool) after the proposal opened weighs nothing on it.
    delegate(&mut c, 13, VALS[2], 40_000);
    let e = c.fails(13, vote(true));
    assert!(e.contains("before a proposal"), "{e}");
    c.ok(V, vote(true));
    c.ok(VALS[2], vote(true));
    c.ok(DELEGATOR, vote(false));
    let p = c.s.proposal(id).unwrap();
    let stake = |who: u8| p.votes.iter().find(|v| v.voter == addr(who)).unwrap().stake;
    // Votes record own stake; delegations are weighed when the vote ends.
    assert_eq!(
        (stake(V), stake(VALS[2]), stake(DELEGATOR)),
        (50_000, 50_000, 0)
    );
    let end = p.voting_end;
    while c.s.height() <= end {
        c.empty_blocks(1);
    }
    let p = c.s.proposal(id).unwrap();
    // The delegator's 50,000 went with its own no, not V's yes; 13's delegation, made after
    // the proposal opened, weighs nothing: 50,000 + 50,000 yes, 50,000 no.
    assert_eq!((p.yes_stake, p.no_stake), (100_000, 50_000));
    // The quorum base counts delegated stake.
    assert_eq!(p.total_stake, 4 * 50_000 + 50_000);

    // A delegator that votes and then undelegates does not count twice (once with its own
    // vote, once inside its validator's): stake on its way out votes with nobody.
    c.ok(
        VALS[1],
        TxKind::Propose {
            change: ParamChange::Set {
                param: Param::ChallengeWindow,
                value: 40,
            },
        },
    );
    let id = c.s.meta().next_proposal - 1;
    let vote = |yes| TxKind::Vote { proposal: id, yes };
    c.ok(DELEGATOR, vote(false));
    c.ok(
        DELEGATOR,
        TxKind::Undelegate {
            validator: addr(V),
            amount: 0,
            to: None,
        },
    );
    c.ok(V, vote(true));
    let end = c.s.proposal(id).unwrap().voting_end;
    while c.s.height() <= end {
        c.empty_blocks(1);
    }
    let p = c.s.proposal(id).unwrap();
    assert_eq!((p.yes_stake, p.no_stake), (50_000, 0));
}

#[test]
fn redelegation_moves_the_value_and_bad_targets_are_refused() {
    let mut c = Chain::new();
    delegate(&mut c, DELEGATOR, V, 30_000);
    for (who, to, why) in [
        (DELEGATOR, WORKER, "not a registered validator"),
        (V, V, "does not delegate to itself"),
    ] {
        let e = c.fails(
            who,
            TxKind::Delegate {
                validator: addr(to),
                amount: 10,
            },
        );
        assert!(e.contains(why), "{e}");
    }
    let e = c.fails(
        DELEGATOR,
        TxKind::Delegate {
            validator: addr(V),
            amount: u64::MAX,
        },
    );
    assert!(e.contains("balance"), "{e}");
    let undelegate = |amount, to: Option<u8>| TxKind::Undelegate {
        validator: addr(V),
        amount,
        to: to.map(addr),
    };
    let e = c.fails(DELEGATOR, undelegate(10, Some(WORKER)));
    assert!(e.contains("not a registered validator"), "{e}");
    let e = c.fails(13, undelegate(10, None));
    assert!(e.contains("no delegation"), "{e}");
    to_next_epoch(&mut c);
    assert_eq!(c.s.weight(&addr(V)), 80_000);
    c.ok(DELEGATOR, undelegate(10_000, Some(VALS[1])));
    // Out of V's pool and weight at once; into VALS[1]'s only after the unbonding period
    // (a slash of V still reaches it meanwhile).
    assert_eq!(value(&c, DELEGATOR, V), 20_000);
    assert_eq!(c.s.weight(&addr(V)), 70_000);
    assert_eq!(value(&c, DELEGATOR, VALS[1]), 0);
    assert_eq!(
        c.s.meta().delegated,
        30_000,
        "nothing left the chain's delegated stake"
    );
    c.empty_blocks(c.s.params().unbonding_period + 1);
    assert_eq!(value(&c, DELEGATOR, VALS[1]), 10_000);
    to_next_epoch(&mut c);
    assert_eq!(c.s.weight(&addr(VALS[1])), 60_000);
}
