//! The beacon and its committees, as an attacker would try them: partials that are not the
//! sender's, rounds signed before they close, a proposer that reorders or pads the block of
//! the receipts, committee members that disagree or stay silent, validators that vote on
//! jobs they were not drawn for.

use deai_ledger::state::{BeaconRound, JobStatus, BPS};
use deai_ledger::*;
use deai_types::Hash256;
use ed25519_dalek::SigningKey;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}
fn addr(i: u8) -> Address {
    key(i).verifying_key().to_bytes()
}

const MODEL: Hash256 = Hash256([7; 32]);
const VALS: [u8; 4] = [1, 2, 3, 4];
const CLIENT: u8 = 10;
const WORKER: u8 = 11;
const PERIOD: u64 = 4;
const PRICE: u64 = 1_000;
/// The proof of verification every honest member computes for a job (its value does not
/// matter to the ledger, only that honest members agree on it).
const POV: Hash256 = Hash256([0xAA; 32]);
/// The proof of verification every honest validator computes for a job that is judged
/// beyond its committee: committee members commit to its tag ([`tag`]), the others to the
/// proof itself, which the chain tags.
const RAW: Hash256 = Hash256([0xAB; 32]);
fn tag() -> Hash256 {
    deai_ledger::state::pov_tag(&RAW)
}
/// A reveal under the test salt.
fn reveal_tx(job: Hash256, accept: bool, pov: Hash256) -> TxKind {
    TxKind::VerdictReveal {
        job,
        accept,
        pov,
        salt: SALT,
    }
}

/// The salt every test member blinds its commitments with (`state::verdict_salt` derives a
/// secret one per member and job; the ledger only checks that the opening matches).
const SALT: Hash256 = Hash256([0x5A; 32]);

struct Net {
    s: State,
    /// Each validator's encoded beacon share.
    shares: Vec<(u8, Vec<u8>)>,
}

fn genesis(params: Params, beacon: Option<GenesisBeacon>) -> Genesis {
    let mut accounts: Vec<GenesisAccount> = VALS
        .iter()
        .map(|v| GenesisAccount {
            address: addr(*v),
            balance: 1_000_000,
            stake: 50_000,
        })
        .collect();
    for i in [CLIENT, WORKER] {
        accounts.push(GenesisAccount {
            address: addr(i),
            balance: 10_000_000,
            stake: 0,
        });
    }
    Genesis {
        chain_name: "beacon-test".into(),
        accounts,
        validators: VALS
            .iter()
            .map(|v| GenesisValidator {
                address: addr(*v),
                endpoint: format!("v{v}"),
                p2p: String::new(),
            })
            .collect(),
        params: Params {
            allowed_models: vec![MODEL],
            ..params
        },
        epoch_length: deai_ledger::state::DEFAULT_EPOCH_LENGTH,
        beacon,
        royalties: Vec::new(),
    }
}

impl Net {
    fn new(params: Params) -> Net {
        let players: Vec<Address> = VALS.iter().map(|v| addr(*v)).collect();
        let (output, shares) = deai_ledger::state::deal_beacon(&players, [42; 32]).unwrap();
        let shares = shares
            .into_iter()
            .map(|(a, s)| (*VALS.iter().find(|v| addr(**v) == a).unwrap(), s))
            .collect();
        let g = genesis(
            params,
            Some(GenesisBeacon {
                output,
                period: PERIOD,
            }),
        );
        let mut n = Net {
            s: State::from_genesis(&g).unwrap(),
            shares,
        };
        n.ok(WORKER, TxKind::Stake { amount: 5_000_000 });
        n.ok(
            WORKER,
            TxKind::RegisterWorker {
                models: vec![MODEL],
                profile: deai_ledger::state::DEFAULT_PROFILE.into(),
                hardware: "h".into(),
                price_per_1k: PRICE,
                endpoint: "e".into(),
            },
        );
        n
    }
    fn share(&self, v: u8) -> &[u8] {
        &self.shares.iter().find(|(w, _)| *w == v).unwrap().1
    }
    fn block(&mut self, txs: Vec<(u8, TxKind)>) -> BlockResult {
        let mut counts = std::collections::HashMap::new();
        let signed: Vec<SignedTx> = txs
            .into_iter()
            .map(|(w, k)| {
                let c = counts.entry(w).or_insert(0u64);
                let t = Tx {
                    chain: self.s.chain_id(),
                    from: [0; 32],
                    nonce: self.s.account(&addr(w)).nonce + *c,
                    fee: 1,
                    kind: k,
                }
                .sign(&key(w));
                *c += 1;
                t
            })
            .collect();
        let h = self.s.height() + 1;
        let r = self.s.apply_block(h, &signed).unwrap();
        self.s.audit().unwrap();
        r
    }
    fn ok(&mut self, who: u8, kind: TxKind) {
        let r = self.block(vec![(who, kind)]);
        assert_eq!(r.outcomes[0].error, None, "tx failed");
    }
    fn fails(&mut self, who: u8, kind: TxKind) -> String {
        let r = self.block(vec![(who, kind)]);
        r.outcomes[0].error.clone().expect("tx should fail")
    }
    fn empty(&mut self, n: u64) {
        for _ in 0..n {
            self.block(vec![]);
        }
    }
    /// Opens `job` and posts its receipt (in two blocks).
    fn job(&mut self, job: Hash256) {
        self.job_for(job, WORKER);
    }
    /// [`Net::job`] served by `worker`.
    fn job_for(&mut self, job: Hash256, worker: u8) {
        self.ok(
            CLIENT,
            TxKind::OpenJob {
                job,
                model: MODEL,
                max_tokens: 1_000,
                escrow: 10_000,
                worker: Some(addr(worker)),
                app: None,
                client: None,
            },
        );
        self.ok(
            worker,
            TxKind::PostReceipt {
                job,
                receipt: Hash256([1; 32]),
                tokens: 1_000,
                pointer: "p".into(),
            },
        );
    }
    fn share_tx(&self, v: u8, round: u64) -> TxKind {
        TxKind::BeaconShare {
            round,
            signature: deai_ledger::state::sign_beacon(self.share(v), &self.s.chain_id(), round)
                .unwrap(),
        }
    }
    /// Runs to the end of `round` and has validators `who` sign it, one block each.
    fn sign(&mut self, round: u64, who: &[u8]) {
        while self.s.height() < (round + 1) * PERIOD {
            self.empty(1);
        }
        for v in who {
            let tx = self.share_tx(*v, round);
            self.ok(*v, tx);
        }
    }
    fn round_of(&self, job: &Hash256) -> u64 {
        self.s
            .job(job)
            .unwrap()
            .receipt
            .as_ref()
            .unwrap()
            .beacon_round
            .unwrap()
    }
    fn round(&self, r: u64) -> BeaconRound {
        self.s.beacon_round(r).unwrap().clone()
    }
    fn commit(&mut self, m: u8, job: Hash256, accept: bool, pov: Hash256) {
        let commitment =
            deai_ledger::state::verdict_commitment(&addr(m), &job, accept, &pov, &SALT);
        self.ok(m, TxKind::VerdictCommit { job, commitment });
    }
    fn reveal(&mut self, m: u8, job: Hash256, accept: bool, pov: Hash256) {
        self.ok(m, reveal_tx(job, accept, pov));
    }
    /// Every listed member commits, then every one reveals.
    fn judge(&mut self, job: Hash256, votes: &[(u8, bool, Hash256)]) {
        for (m, a, p) in votes {
            self.commit(*m, job, *a, *p);
        }
        for (m, a, p) in votes {
            self.reveal(*m, job, *a, *p);
        }
    }
    fn val(&self, v: u8) -> deai_ledger::state::Validator {
        self.s.validator(&addr(v)).unwrap().clone()
    }
}

fn all_sampled() -> Params {
    Params {
        sample_rate_bps: BPS,
        ..Params::default()
    }
}

#[test]
fn a_quorum_of_partials_recovers_one_value_whichever_quorum_it_is() {
    let mut a = Net::new(all_sampled());
    let job = Hash256([5; 32]);
    a.job(job);
    let r = a.round_of(&job);
    let mut b = Net {
        s: a.s.clone(),
        shares: a.shares.clone(),
    };
    // Below the quorum (3 of 4) nothing is known.
    a.sign(r, &[1, 2]);
    assert_eq!(a.round(r).value, None);
    assert_eq!(a.s.job(&job).unwrap().status, JobStatus::Receipted);
    a.sign(r, &[3]);
    b.sign(r, &[4, 2, 1]);
    let (va, vb) = (a.round(r).value.unwrap(), b.round(r).value.unwrap());
    assert_eq!(va, vb, "two quorums recover the same value");
    assert_eq!(a.round(r).signature, b.round(r).signature);
    // Every receipt is sampled at 100 %, with the same committee on both chains.
    let (ja, jb) = (a.s.job(&job).unwrap(), b.s.job(&job).unwrap());
    assert_eq!(ja.status, JobStatus::Sampled);
    assert_eq!(ja.committee, jb.committee);
    assert_eq!(ja.committee.len(), 3);
    assert_eq!(
        ja.committee,
        deai_ledger::state::committee(
            &va,
            &job,
            &VALS.iter().map(|v| (addr(*v), 50_000)).collect::<Vec<_>>(),
            3
        )
    );
    // A late partial changes nothing.
    let tx = b.share_tx(3, r);
    let e = b.fails(3, tx);
    assert!(e.contains("already recovered"), "{e}");
}

#[test]
fn forged_early_and_foreign_partials_are_refused() {
    let mut n = Net::new(all_sampled());
    let job = Hash256([6; 32]);
    n.job(job);
    let r = n.round_of(&job);
    // Before the round's last block is final, nobody may sign it: its receipts could still
    // change.
    if n.s.height() < (r + 1) * PERIOD {
        let tx = n.share_tx(1, r);
        let e = n.fails(1, tx);
        assert!(e.contains("only after"), "{e}");
    }
    n.empty((r + 1) * PERIOD - n.s.height().min((r + 1) * PERIOD));
    // Validator 2 submitting validator 1's partial: it does not verify for its own index.
    let stolen = n.share_tx(1, r);
    let e = n.fails(2, stolen);
    assert!(e.contains("does not verify"), "{e}");
    // Random bytes of the right length.
    let e = n.fails(
        2,
        TxKind::BeaconShare {
            round: r,
            signature: vec![0xAB; 96],
        },
    );
    assert!(e.contains("decode") || e.contains("verify"), "{e}");
    // A partial of another round.
    let other = n.share_tx(2, r + 100);
    let TxKind::BeaconShare { signature, .. } = other else {
        unreachable!()
    };
    let e = n.fails(
        2,
        TxKind::BeaconShare {
            round: r,
            signature,
        },
    );
    assert!(e.contains("does not verify"), "{e}");
    // Not a player.
    let e = n.fails(
        CLIENT,
        TxKind::BeaconShare {
            round: r,
            signature: vec![0; 96],
        },
    );
    assert!(e.contains("not a beacon player"), "{e}");
    // A round that judges nothing.
    let tx = n.share_tx(2, r + 1);
    let e = n.fails(2, tx);
    assert!(e.contains("no receipt awaits"), "{e}");
    // The real one, then the same player again.
    let tx = n.share_tx(2, r);
    n.ok(2, tx);
    let tx = n.share_tx(2, r);
    let e = n.fails(2, tx);
    assert!(e.contains("already signed"), "{e}");
    assert_eq!(n.round(r).partials.len(), 1);
}

/// The proposer of the receipts' block chooses their order and what else the block holds;
/// none of it moves the sample, which depends on the round's value alone.
#[test]
fn no_proposer_can_change_which_jobs_are_sampled() {
    let params = Params {
        sample_rate_bps: 5_000,
        ..Params::default()
    };
    let jobs: Vec<Hash256> = (0..12u8).map(|i| Hash256([100 + i; 32])).collect();
    let run = |reverse: bool, pad: bool| {
        let mut n = Net::new(params.clone());
        // Align so all receipts land in one round.
        while !n.s.height().is_multiple_of(PERIOD) {
            n.empty(1);
        }
        let mut open: Vec<(u8, TxKind)> = jobs
            .iter()
            .map(|j| {
                (
                    CLIENT,
                    TxKind::OpenJob {
                        job: *j,
                        model: MODEL,
                        max_tokens: 1_000,
                        escrow: 10_000,
                        worker: Some(addr(WORKER)),
                        app: None,
                        client: None,
                    },
                )
            })
            .collect();
        if pad {
            open.push((
                1,
                TxKind::Transfer {
                    to: addr(2),
                    amount: 7,
                },
            ));
        }
        n.block(open);
        let mut posts: Vec<(u8, TxKind)> = jobs
            .iter()
            .map(|j| {
                (
                    WORKER,
                    TxKind::PostReceipt {
                        job: *j,
                        receipt: Hash256([1; 32]),
                        tokens: 1_000,
                        pointer: "p".into(),
                    },
                )
            })
            .collect();
        if reverse {
            posts.reverse();
        }
        n.block(posts);
        let r = n.round_of(&jobs[0]);
        assert!(jobs.iter().all(|j| n.round_of(j) == r));
        n.sign(r, &[1, 2, 3]);
        let value = n.round(r).value.unwrap();
        let sampled: Vec<bool> = jobs
            .iter()
            .map(|j| n.s.job(j).unwrap().status == JobStatus::Sampled)
            .collect();
        (value, sampled)
    };
    let (v0, s0) = run(false, false);
    let (v1, s1) = run(true, true);
    assert_eq!(v0, v1, "the value depends on the chain and round only");
    assert_eq!(s0, s1);
    // The ledger samples exactly what the published rule says, and at 50 % some of each.
    let expect: Vec<bool> = jobs
        .iter()
        .map(|j| deai_ledger::state::sampled(&v0, j, 5_000))
        .collect();
    assert_eq!(s0, expect);
    assert!(s0.contains(&true) && s0.contains(&false), "{s0:?}");
}

#[test]
fn a_receipt_waits_for_its_value_and_unsampled_ones_pay_no_validator() {
    let params = Params {
        challenge_window: 10,
        ..Params::default()
    };
    let mut n = Net::new(params);
    let jobs: Vec<Hash256> = (0..3u8).map(|i| Hash256([200 + i; 32])).collect();
    for j in &jobs {
        n.job(*j);
    }
    // Far past the challenge window without a value: nothing settles.
    n.empty(30);
    for j in &jobs {
        assert_eq!(n.s.job(j).unwrap().status, JobStatus::Receipted);
        // Nobody may judge a job the beacon has not sampled.
        let e = n.fails(
            1,
            TxKind::Verdict {
                job: *j,
                accept: true,
            },
        );
        assert!(e.contains("has not sampled"), "{e}");
    }
    let rounds: std::collections::BTreeSet<u64> = jobs.iter().map(|j| n.round_of(j)).collect();
    // Each round's value, read when it is recovered (a round whose jobs all settled is
    // pruned at its period's end).
    let mut values = std::collections::BTreeMap::new();
    for r in rounds {
        n.sign(r, &[2, 3, 4]);
        values.insert(r, n.round(r).value.unwrap());
    }
    n.empty(2);
    for j in &jobs {
        let job = n.s.job(j).unwrap();
        let value = values[&n.round_of(j)];
        if deai_ledger::state::sampled(&value, j, n.s.params().sample_rate_bps) {
            assert_eq!(job.status, JobStatus::Sampled);
        } else {
            assert_eq!(job.status, JobStatus::Accepted, "{j:?}");
            assert_eq!(job.settlement.as_ref().unwrap().validator_fee, 0);
        }
    }
}

/// Runs one job to its committee and returns (net, job, committee, the validator left out).
fn sampled_job(tag: u8) -> (Net, Hash256, Vec<u8>, u8) {
    let mut n = Net::new(all_sampled());
    let job = Hash256([tag; 32]);
    n.job(job);
    let r = n.round_of(&job);
    n.sign(r, &[1, 2, 3]);
    let j = n.s.job(&job).unwrap().clone();
    assert_eq!(j.status, JobStatus::Sampled);
    let members: Vec<u8> = VALS
        .iter()
        .copied()
        .filter(|v| j.committee.contains(&addr(*v)))
        .collect();
    let outsider = *VALS.iter().find(|v| !members.contains(v)).unwrap();
    (n, job, members, outsider)
}

#[test]
fn only_the_committee_judges_and_only_it_is_paid() {
    let (mut n, job, members, outsider) = sampled_job(31);
    let e = n.fails(outsider, TxKind::Verdict { job, accept: true });
    assert!(e.contains("not on this job's committee"), "{e}");
    let before: Vec<u64> = VALS
        .iter()
        .map(|v| n.s.account(&addr(*v)).balance)
        .collect();
    let sampled_at = n.s.job(&job).unwrap().sampled_at.unwrap();
    n.empty(2);
    for m in &members {
        n.commit(*m, job, true, POV);
    }
    let mut expect = Vec::new();
    for m in &members {
        n.reveal(*m, job, true, POV);
        expect.push((1, n.s.height() - sampled_at));
    }
    // Each member's latency: blocks from the sampling to its verdict.
    let lat: Vec<(u64, u64)> = members
        .iter()
        .map(|m| (n.val(*m).committee_votes, n.val(*m).latency_blocks))
        .collect();
    assert_eq!(lat, expect);
    assert!(expect[0].1 >= 3);
    assert_eq!(n.val(outsider).committee_votes, 0);
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Accepted);
    let fee = j.settlement.as_ref().unwrap().validator_fee;
    assert!(fee > 0);
    for (i, v) in VALS.iter().enumerate() {
        let gained = n.s.account(&addr(*v)).balance as i128 - before[i] as i128;
        if members.contains(v) {
            // Its share of the fee, less the commit's and the reveal's transaction fees.
            assert_eq!(gained, (fee / 3) as i128 - 2, "member {v}");
            assert_eq!(n.val(*v).assigned, 1);
        } else {
            assert_eq!(gained, 0, "outsider {v}");
            assert_eq!(n.val(*v).assigned, 0);
        }
    }
}

#[test]
fn rejecting_pays_the_committee_no_more_than_accepting() {
    let (mut acc, job, members, _) = sampled_job(41);
    let mut rej = Net {
        s: acc.s.clone(),
        shares: acc.shares.clone(),
    };
    let yes: Vec<_> = members.iter().map(|m| (*m, true, POV)).collect();
    let no: Vec<_> = members.iter().map(|m| (*m, false, POV)).collect();
    acc.judge(job, &yes);
    rej.judge(job, &no);
    let (a, r) = (acc.s.job(&job).unwrap(), rej.s.job(&job).unwrap());
    assert_eq!(a.status, JobStatus::Accepted);
    assert_eq!(r.status, JobStatus::Rejected);
    let (fa, fr) = (
        a.settlement.as_ref().unwrap().validator_fee,
        r.settlement.as_ref().unwrap().validator_fee,
    );
    assert!(fr <= fa, "rejecting paid {fr}, accepting {fa}");
    let sr = r.settlement.as_ref().unwrap();
    assert!(sr.slashed > 0 && sr.burned > 0);
    for m in &members {
        assert_eq!(
            acc.s.account(&addr(*m)).balance,
            rej.s.account(&addr(*m)).balance + (fa - fr) / 3
        );
    }
}

#[test]
fn a_split_committee_escalates_and_the_losing_side_is_slashed() {
    let (mut n, job, members, outsider) = sampled_job(51);
    let liar = members[0];
    n.judge(
        job,
        &[
            (liar, true, POV),
            (members[1], false, POV),
            (members[2], false, POV),
        ],
    );
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Challenged);
    assert!(j.escalated);
    // Now every validator judges, by commit and reveal (a plain vote proves nothing): the
    // outsider's commitment is the last one missing, so it opens the reveals, and its
    // reject makes three of four.
    let e = n.fails(outsider, TxKind::Verdict { job, accept: false });
    assert!(e.contains("commit and reveal"), "{e}");
    let stake_before = n.s.account(&addr(liar)).stake;
    n.commit(outsider, job, false, RAW);
    assert!(n.s.job(&job).unwrap().reveals_open);
    n.reveal(outsider, job, false, RAW);
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Rejected);
    let slash = n.s.params().verdict_slash;
    assert_eq!(n.s.account(&addr(liar)).stake, stake_before - slash);
    assert_eq!(n.val(liar).wrong, 1);
    for v in [members[1], members[2], outsider] {
        assert_eq!(n.val(v).wrong, 0);
        assert_eq!(n.val(v).slashed, 0);
    }
}

#[test]
fn a_silent_member_is_slashed_and_the_job_escalates() {
    let (mut n, job, members, outsider) = sampled_job(61);
    n.commit(members[0], job, true, tag());
    n.commit(members[1], job, true, tag());
    // Nobody may reveal before every member has committed.
    let e = n.fails(members[0], reveal_tx(job, true, tag()));
    assert!(
        e.contains("once every committee member has committed"),
        "{e}"
    );
    let silent = members[2];
    let stake = n.s.account(&addr(silent)).stake;
    let window = n.s.params().verdict_window;
    n.empty(window + 1);
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Challenged);
    assert!(j.escalated);
    assert_eq!(n.val(silent).missed, 1);
    assert_eq!(
        n.s.account(&addr(silent)).stake,
        stake - n.s.params().verdict_slash
    );
    // Those that committed in time lose nothing.
    for m in [members[0], members[1]] {
        assert_eq!((n.val(m).missed, n.val(m).slashed), (0, 0));
    }
    // Escalated: a member that committed must open its commitment (a plain vote would let
    // a made-up proof go unopened and paid); the silent member had its turn; the outsider
    // seals its verdict with the proof itself, which opens the reveals; once every seal is
    // open a quorum of the stake settles it, and the judges whose proofs agree are paid.
    let e = n.fails(members[0], TxKind::Verdict { job, accept: true });
    assert!(e.contains("open it with verdict_reveal"), "{e}");
    n.reveal(members[0], job, true, tag());
    n.reveal(members[1], job, true, tag());
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Challenged);
    let e = n.fails(
        silent,
        TxKind::VerdictCommit {
            job,
            commitment: Hash256([3; 32]),
        },
    );
    assert!(e.contains("committee commitment only"), "{e}");
    assert!(!n.s.job(&job).unwrap().reveals_open);
    n.commit(outsider, job, true, RAW);
    assert!(n.s.job(&job).unwrap().reveals_open);
    n.reveal(outsider, job, true, RAW);
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Accepted);
    for m in [members[0], members[1], outsider] {
        assert!(n.val(m).earned > 0, "{m}");
    }
    assert_eq!(n.val(silent).earned, 0);
}

#[test]
fn the_beacon_survives_a_snapshot_and_a_bad_genesis_key_is_refused() {
    let mut n = Net::new(all_sampled());
    let job = Hash256([71; 32]);
    n.job(job);
    let r = n.round_of(&job);
    n.sign(r, &[1, 4]);
    let back = State::from_snapshot(&n.s.to_snapshot()).unwrap();
    assert_eq!(back.root(), n.s.root());
    assert_eq!(back.beacon_round(r), n.s.beacon_round(r));
    // A key dealt to someone who is not a genesis validator.
    let players = vec![addr(1), addr(2), addr(CLIENT)];
    let (output, _) = deai_ledger::state::deal_beacon(&players, [1; 32]).unwrap();
    let e = State::from_genesis(&genesis(
        all_sampled(),
        Some(GenesisBeacon { output, period: 4 }),
    ))
    .unwrap_err();
    assert!(e.contains("not a genesis validator"), "{e}");
    // Garbage for a key.
    let e = State::from_genesis(&genesis(
        all_sampled(),
        Some(GenesisBeacon {
            output: vec![1, 2, 3],
            period: 4,
        }),
    ))
    .unwrap_err();
    assert!(e.contains("does not decode"), "{e}");
}

/// Whoever learns the value first (the last signer, or a proposer holding the last partial)
/// may move stake before it is recorded; committees come from the stake at the round's end.
#[test]
fn stake_moved_after_the_round_does_not_steer_its_committees() {
    let mut a = Net::new(all_sampled());
    let job = Hash256([81; 32]);
    a.job(job);
    let r = a.round_of(&job);
    a.empty((r + 1) * PERIOD - a.s.height());
    let mut b = Net {
        s: a.s.clone(),
        shares: a.shares.clone(),
    };
    // On b, validator 4 piles on stake and validator 1 leaves, before the value is known.
    b.ok(4, TxKind::Stake { amount: 900_000 });
    b.ok(1, TxKind::Unstake { amount: 50_000 });
    a.empty(2);
    a.sign(r, &[1, 2, 3]);
    b.sign(r, &[1, 2, 3]);
    assert_eq!(a.round(r).value, b.round(r).value);
    assert_eq!(
        a.s.job(&job).unwrap().committee,
        b.s.job(&job).unwrap().committee
    );
    let c = &b.round(r).candidates;
    assert!(c.iter().all(|c| c.stake == 50_000), "{c:?}");
}

#[test]
fn a_sampled_job_cannot_be_challenged() {
    // A worker that knows its receipt will be checked must not challenge it through a
    // second account to earn the reporter's share of its own slash.
    let (mut n, job, _, _) = sampled_job(91);
    let e = n.fails(CLIENT, TxKind::Challenge { job });
    assert!(e.contains("only a receipted job"), "{e}");
}

#[test]
fn unstaking_does_not_dodge_a_verdict_slash_and_a_drawn_member_still_votes() {
    let (mut n, job, members, outsider) = sampled_job(95);
    let liar = members[0];
    n.commit(liar, job, true, POV);
    // The liar unstakes everything before the outcome: below the validator minimum, yet
    // the escalated job's settlement still takes its slash, from the unbonding funds.
    n.ok(liar, TxKind::Unstake { amount: 50_000 });
    n.commit(members[1], job, false, POV);
    // members[2] has dropped below the minimum too, but it was drawn: it may still judge.
    n.ok(members[2], TxKind::Unstake { amount: 45_000 });
    n.commit(members[2], job, false, POV);
    n.reveal(liar, job, true, POV);
    n.reveal(members[1], job, false, POV);
    n.reveal(members[2], job, false, POV);
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Challenged);
    let unbonding = |n: &Net, v: u8| -> u64 {
        n.s.account(&addr(v))
            .unbonding
            .iter()
            .map(|u| u.amount)
            .sum()
    };
    let before = unbonding(&n, liar);
    // Escalated: every active validator judges; the outsider, the last active one to
    // commit, opens the reveals and makes the quorum.
    n.commit(outsider, job, false, RAW);
    n.reveal(outsider, job, false, RAW);
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Rejected);
    let slash = n.s.params().verdict_slash;
    assert_eq!(unbonding(&n, liar), before - slash);
    assert_eq!(n.val(liar).slashed, slash);
}

#[test]
fn a_stalled_beacon_hands_the_receipt_to_every_validator() {
    let params = Params {
        challenge_window: 10,
        verdict_window: 10,
        ..all_sampled()
    };
    let mut n = Net::new(params);
    let job = Hash256([99; 32]);
    n.job(job);
    let posted = n.s.job(&job).unwrap().receipt.as_ref().unwrap().posted_at;
    // Only one partial ever comes (a quorum of players is gone or refuses).
    let r = n.round_of(&job);
    n.sign(r, &[1]);
    let patience = posted + 10 + PERIOD + 10;
    while n.s.height() < patience - 1 {
        n.empty(1);
        assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Receipted);
    }
    n.empty(1);
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Challenged);
    assert!(j.escalated);
    // Every validator may judge it now, sealed: with validator 4 silent the reveals open
    // when the commit phase runs out, and a quorum settles it.
    for v in [1, 2, 3] {
        n.commit(v, job, true, RAW);
    }
    let e = n.fails(1, reveal_tx(job, true, RAW));
    assert!(e.contains("reveals open once"), "{e}");
    let commit_phase_end = n.s.job(&job).unwrap().deadline;
    while n.s.height() < commit_phase_end {
        n.empty(1);
    }
    let j = n.s.job(&job).unwrap();
    assert!(j.reveals_open);
    assert_eq!(j.status, JobStatus::Challenged);
    let e = n.fails(
        4,
        TxKind::VerdictCommit {
            job,
            commitment: Hash256([1; 32]),
        },
    );
    assert!(e.contains("closed"), "{e}");
    for v in [1, 2, 3] {
        n.reveal(v, job, true, RAW);
    }
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Accepted);
    for v in [1, 2, 3] {
        assert!(n.val(v).earned > 0, "{v}");
    }
    assert_eq!(n.val(4).earned, 0);
    // Its only receipt settled: at the next round's end the round is forgotten (the state
    // keeps no record per round forever), and a late partial changes nothing.
    assert!(n.s.beacon_round(r).is_some());
    n.empty(PERIOD);
    assert!(n.s.beacon_round(r).is_none(), "a settled round is pruned");
    let tx = n.share_tx(2, r);
    let e = n.fails(2, tx);
    assert!(e.contains("no receipt awaits"), "{e}");
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Accepted);
}

/// A member that accepts without re-running cannot know the proof of verification (it is
/// keyed by the beacon value and needs the recomputed rows); it cannot copy another's either,
/// since commitments are sealed until all are in and bound to their member.
#[test]
fn a_lazy_member_earns_nothing_and_is_slashed() {
    let (mut n, job, members, outsider) = sampled_job(111);
    let lazy = members[2];
    // Copying an honest member's commitment is useless: it opens only for that member.
    let honest_commitment =
        deai_ledger::state::verdict_commitment(&addr(members[0]), &job, true, &POV, &SALT);
    n.commit(members[0], job, true, POV);
    n.commit(members[1], job, true, POV);
    n.ok(
        lazy,
        TxKind::VerdictCommit {
            job,
            commitment: honest_commitment,
        },
    );
    n.reveal(members[0], job, true, POV);
    let e = n.fails(lazy, reveal_tx(job, true, POV));
    assert!(e.contains("does not open"), "{e}");
    n.reveal(members[1], job, true, POV);
    let stake = n.s.account(&addr(lazy)).stake;
    let before: Vec<u64> = VALS
        .iter()
        .map(|v| n.s.account(&addr(*v)).balance)
        .collect();
    // Its deadline passes without a reveal it can make: missed, slashed, escalated.
    let window = n.s.params().verdict_window;
    n.empty(window + 1);
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Challenged);
    assert_eq!(n.val(lazy).missed, 1);
    // A lazy member that guesses a proof instead: the committee's proofs differ, the job
    // escalates, and at settlement the guess is outvoted by the honest members' proof.
    let (mut m, job2, members2, outsider2) = sampled_job(112);
    let lazy2 = members2[0];
    let lazy_stake = m.s.account(&addr(lazy2)).stake;
    m.judge(
        job2,
        &[
            (lazy2, true, Hash256([0x55; 32])),
            (members2[1], true, POV),
            (members2[2], true, POV),
        ],
    );
    // The three acceptances already hold more than two thirds of the stake: the job
    // settles as it escalates (nobody else may be left to vote).
    let j2 = m.s.job(&job2).unwrap();
    assert!(j2.escalated);
    assert_eq!(j2.status, JobStatus::Accepted);
    let lazy_before = m.val(lazy2).earned;
    assert_eq!(lazy_before, 0, "the lazy member earned");
    assert_eq!(
        m.s.account(&addr(lazy2)).stake,
        lazy_stake - m.s.params().verdict_slash
    );
    assert_eq!(m.val(lazy2).wrong, 1);
    // The honest members are paid, and nobody else is slashed.
    for v in [members2[1], members2[2]] {
        assert!(m.val(v).earned > 0, "{v}");
    }
    for v in [members2[1], members2[2], outsider2] {
        assert_eq!(m.val(v).slashed, 0);
    }
    // (First scenario: the honest pair loses nothing while the lazy one is slashed.)
    assert_eq!(
        n.s.account(&addr(lazy)).stake,
        stake - n.s.params().verdict_slash
    );
    for v in [members[0], members[1], outsider] {
        assert!(
            n.s.account(&addr(v)).balance >= before[VALS.iter().position(|x| *x == v).unwrap()]
        );
        assert_eq!(n.val(v).slashed, 0);
    }
}

/// A member that commits in the last block, and reveals in the same block, must not make
/// the honest members miss their reveals: the last commitment opens a whole verdict window.
#[test]
fn a_last_minute_commitment_gives_the_others_time_to_reveal() {
    let (mut n, job, members, _) = sampled_job(121);
    n.commit(members[0], job, true, POV);
    n.commit(members[1], job, true, POV);
    let deadline = n.s.job(&job).unwrap().deadline;
    while n.s.height() < deadline - 1 {
        n.empty(1);
    }
    // The deadline block: the late member commits and reveals at once.
    let late = members[2];
    let commitment = deai_ledger::state::verdict_commitment(&addr(late), &job, true, &POV, &SALT);
    let r = n.block(vec![
        (late, TxKind::VerdictCommit { job, commitment }),
        (late, reveal_tx(job, true, POV)),
    ]);
    assert!(r.outcomes.iter().all(|o| o.error.is_none()), "{r:?}");
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Sampled, "the others still have time");
    assert!(j.deadline >= deadline + n.s.params().verdict_window - 1);
    n.empty(5);
    n.reveal(members[0], job, true, POV);
    n.reveal(members[1], job, true, POV);
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Accepted);
    for m in &members {
        assert_eq!((n.val(*m).missed, n.val(*m).slashed), (0, 0));
    }
}

/// A lazy member commits to a made-up proof, and another member stays silent: the job
/// escalates with no proof opened. The lazy member cannot vote plainly (and be paid
/// without ever opening its proof): it must reveal, and its proof, matched against the
/// honest member's with no majority for either, earns it nothing.
#[test]
fn a_lazy_member_is_not_paid_through_an_escalation() {
    let (mut n, job, members, outsider) = sampled_job(131);
    let (honest, silent, lazy) = (members[0], members[1], members[2]);
    const MADE_UP: Hash256 = Hash256([0x77; 32]);
    n.commit(honest, job, true, tag());
    n.commit(lazy, job, true, MADE_UP);
    n.empty(n.s.params().verdict_window + 1);
    assert!(n.s.job(&job).unwrap().escalated);
    let e = n.fails(lazy, TxKind::Verdict { job, accept: true });
    assert!(e.contains("open it with verdict_reveal"), "{e}");
    // Opening another proof than the one committed to fails too.
    let e = n.fails(lazy, reveal_tx(job, true, tag()));
    assert!(e.contains("does not open"), "{e}");
    // So does its own proof under another salt.
    let e = n.fails(
        lazy,
        TxKind::VerdictReveal {
            job,
            accept: true,
            pov: MADE_UP,
            salt: Hash256::default(),
        },
    );
    assert!(e.contains("does not open"), "{e}");
    n.reveal(lazy, job, true, MADE_UP);
    n.reveal(honest, job, true, tag());
    // The outsider re-executes and seals its proof, which opens the reveals, and its
    // acceptance makes the quorum. Its proof, tagged, matches the honest member's: together
    // they outweigh the lazy one.
    n.commit(outsider, job, true, RAW);
    n.reveal(outsider, job, true, RAW);
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Accepted);
    assert_eq!(n.val(lazy).earned, 0, "the lazy member was paid");
    assert_eq!(n.val(lazy).wrong, 1, "its proof was outvoted");
    assert_eq!(n.val(silent).missed, 1);
    assert!(n.val(outsider).earned > 0);
    assert!(n.val(honest).earned > 0);
}

/// After a split committee escalates its job, every validator judges it. One that did not
/// re-execute has only what is public: the committee's revealed tags. It cannot vote plainly,
/// and committing to a revealed tag as its proof gets it slashed, not paid: the chain tags
/// what it reveals, and the tag of a tag matches nobody's.
#[test]
fn an_outsider_cannot_copy_the_committees_proof_after_an_escalation() {
    let (mut n, job, members, copier) = sampled_job(141);
    let liar = members[0];
    n.judge(
        job,
        &[
            (liar, false, tag()),
            (members[1], true, tag()),
            (members[2], true, tag()),
        ],
    );
    let j = n.s.job(&job).unwrap().clone();
    assert!(j.escalated && j.status == JobStatus::Challenged);
    let public = j.povs[0].pov;
    assert_eq!(public, tag());
    let e = n.fails(copier, TxKind::Verdict { job, accept: true });
    assert!(e.contains("commit and reveal"), "{e}");
    let stake = n.s.account(&addr(copier)).stake;
    n.commit(copier, job, true, public);
    n.reveal(copier, job, true, public);
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Accepted);
    let slash = n.s.params().verdict_slash;
    assert_eq!(n.val(copier).earned, 0, "the copier was paid");
    assert_eq!(n.val(copier).wrong, 1);
    assert_eq!(n.s.account(&addr(copier)).stake, stake - slash);
    // The honest members are paid; the liar is slashed for its wrong verdict.
    for m in [members[1], members[2]] {
        assert!(n.val(m).earned > 0, "{m}");
        assert_eq!(n.val(m).slashed, 0);
    }
    assert_eq!(n.val(liar).wrong, 1);
}

/// A client's challenge on an unsampled receipt: every validator seals its verdict under
/// the fixed key of unsampled jobs. Nobody reveals before every validator has committed,
/// nobody commits after the reveals open, the job does not settle while a seal is unopened,
/// a validator that made its proof up is outweighed by the honest ones' proofs and slashed,
/// and one that keeps its seal closed to the deadline is slashed.
#[test]
fn a_challenged_job_is_judged_sealed_and_a_made_up_proof_loses() {
    let params = Params {
        challenge_window: 10,
        ..Params::default()
    };
    let mut n = Net::new(params);
    let job = Hash256([151; 32]);
    n.job(job);
    // Challenged before its beacon round has a value: it is never sampled.
    n.ok(CLIENT, TxKind::Challenge { job });
    let j = n.s.job(&job).unwrap().clone();
    assert_eq!(j.status, JobStatus::Challenged);
    assert_eq!(
        deai_ledger::state::pov_key(&j, None),
        deai_ledger::state::pov_key(&j, Some(Hash256([9; 32]))),
        "an unsampled job's key needs no beacon value"
    );
    let e = n.fails(1, TxKind::Verdict { job, accept: true });
    assert!(e.contains("commit and reveal"), "{e}");
    const MADE_UP: Hash256 = Hash256([0x66; 32]);
    let lazy = 4;
    n.commit(1, job, true, RAW);
    let e = n.fails(1, reveal_tx(job, true, RAW));
    assert!(e.contains("reveals open once"), "{e}");
    let e = n.fails(
        1,
        TxKind::VerdictCommit {
            job,
            commitment: Hash256([3; 32]),
        },
    );
    assert!(e.contains("already committed"), "{e}");
    n.commit(2, job, true, RAW);
    n.commit(3, job, true, RAW);
    n.commit(lazy, job, true, MADE_UP);
    assert!(n.s.job(&job).unwrap().reveals_open);
    let e = n.fails(
        CLIENT,
        TxKind::VerdictCommit {
            job,
            commitment: Hash256([3; 32]),
        },
    );
    assert!(e.contains("not an active validator"), "{e}");
    // A reveal must open the sender's own commitment.
    let e = n.fails(2, reveal_tx(job, true, MADE_UP));
    assert!(e.contains("does not open"), "{e}");
    let worker_before = n.s.account(&addr(WORKER)).balance;
    n.reveal(lazy, job, true, MADE_UP);
    n.reveal(1, job, true, RAW);
    n.reveal(2, job, true, RAW);
    // Three acceptances hold a quorum, but validator 3 has not opened its seal: nothing
    // settles before every seal is open or the reveal window ends (a proposer must not pick
    // which reveals decide the job, and its majority proof).
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Challenged);
    // Validator 3 keeps its verdict back: at the deadline it is slashed, and the opened
    // votes settle the job.
    let deadline = j.deadline;
    while n.s.height() < deadline {
        n.empty(1);
    }
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Accepted);
    let fee = j.settlement.as_ref().unwrap().validator_fee;
    assert!(fee > 0);
    let slash = n.s.params().verdict_slash;
    // The two proven judges share the fee; the made-up proof earns nothing and is slashed.
    for v in [1, 2] {
        assert_eq!(n.val(v).earned, fee / 2, "{v}");
    }
    assert_eq!(n.val(lazy).earned, 0);
    assert_eq!(n.val(lazy).slashed, slash);
    assert_eq!(
        (n.val(3).earned, n.val(3).slashed, n.val(3).missed),
        (0, slash, 1)
    );
    // The failed challenger's bond went to the worker.
    assert!(n.s.account(&addr(WORKER)).balance > worker_before);
}

/// A validator that is also a job's worker is kept off its judges once the job is challenged
/// (it would accept its own cheat): the reveals open when every other validator has
/// committed. The job's client may judge it, as any validator.
#[test]
fn a_jobs_own_worker_does_not_judge_it() {
    let params = Params {
        challenge_window: 10,
        ..Params::default()
    };
    let mut n = Net::new(params);
    let worker = 1;
    n.ok(
        worker,
        TxKind::RegisterWorker {
            models: vec![MODEL],
            profile: deai_ledger::state::DEFAULT_PROFILE.into(),
            hardware: "h".into(),
            price_per_1k: PRICE,
            endpoint: "e1".into(),
        },
    );
    let job = Hash256([161; 32]);
    n.job_for(job, worker);
    n.ok(CLIENT, TxKind::Challenge { job });
    let e = n.fails(
        worker,
        TxKind::VerdictCommit {
            job,
            commitment: Hash256([3; 32]),
        },
    );
    assert!(e.contains("worker cannot judge"), "{e}");
    for v in [2, 3, 4] {
        n.commit(v, job, false, RAW);
    }
    assert!(n.s.job(&job).unwrap().reveals_open);
    for v in [2, 3, 4] {
        n.reveal(v, job, false, RAW);
    }
    assert_eq!(n.s.job(&job).unwrap().status, JobStatus::Rejected);
}

/// A judge that rejects without re-running (no proof, or a made-up one) earns nothing when
/// the job is rejected: only rejecting judges whose proof is the rejecting majority's share
/// the validator fee. It is not slashed for it (a judge that could not fetch the receipt has
/// no proof either).
#[test]
fn rejecting_without_re_running_is_not_paid() {
    let params = Params {
        challenge_window: 10,
        ..Params::default()
    };
    let mut n = Net::new(params);
    let job = Hash256([171; 32]);
    n.job(job);
    n.ok(CLIENT, TxKind::Challenge { job });
    let lazy = 4;
    for v in [1, 2, 3] {
        n.commit(v, job, false, RAW);
    }
    n.commit(lazy, job, false, Hash256::default());
    for v in [1, 2, 3] {
        n.reveal(v, job, false, RAW);
    }
    n.reveal(lazy, job, false, Hash256::default());
    let j = n.s.job(&job).unwrap();
    assert_eq!(j.status, JobStatus::Rejected);
    let fee = j.settlement.as_ref().unwrap().validator_fee;
    assert!(fee > 0);
    for v in [1, 2, 3] {
        assert_eq!(n.val(v).earned, fee / 3, "{v}");
    }
    assert_eq!((n.val(lazy).earned, n.val(lazy).slashed), (0, 0));
}
