//! Training, DiLoCo rounds and verification on tiny models and synthetic data (no network).

use deai_train::checkpoint;
use deai_train::data::{encode_bytes, synthetic_text, Dataset, Shard};
use deai_train::diloco::{Contribution, Int8Delta, JobSpec, Opener, WorkerRun};
use deai_train::faults::Behavior;
use deai_train::optim::{train_step, TrainState};
use deai_train::run::{run_round, train_baseline, LocalWorker};
use deai_train::verify::{
    challenge_commitment, challenge_randomness, Coordinator, Reason, RoundCheck,
};
use deai_train::{ModelConfig, Net, TrainConfig, TrainError, Weights};
use ed25519_dalek::SigningKey;

fn tiny() -> ModelConfig {
    ModelConfig::preset("tiny").unwrap()
}

fn dataset(n_shards: usize) -> Dataset {
    let tokens = encode_bytes(&synthetic_text(40_000, 7));
    Dataset::split(&tokens, n_shards, 0.05, tiny().seq_len).unwrap()
}

fn job(d: &Dataset, workers: u32, h: u32, rounds: u32) -> JobSpec {
    JobSpec {
        model: tiny(),
        train: TrainConfig {
            batch: 4,
            lr: 3e-3,
            warmup_steps: 2,
            total_steps: (h * rounds) as u64,
            ..TrainConfig::default()
        },
        inner_steps: h,
        rounds,
        workers,
        outer_lr: 0.7,
        outer_momentum: 0.9,
        shards: d.train.iter().map(|s| s.id()).collect(),
        val_shard: d.val.id(),
        verify_steps: 1,
        reward_per_round: 1000,
    }
}

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn coordinator(j: &JobSpec, d: &Dataset) -> Coordinator {
    let init = Weights::init(&j.model, 11).unwrap();
    let mut co = Coordinator::new(j.clone(), init, d.train.clone(), d.val.clone()).unwrap();
    co.eval_windows = 8;
    co
}

#[test]
fn training_lowers_the_validation_loss() {
    let d = dataset(1);
    let j = job(&d, 1, 60, 1);
    let init = Weights::init(&j.model, 1).unwrap();
    let run = train_baseline(&j, &init, &d.train[0], &d.val, 60, 1, 30, 8, |_| {}).unwrap();
    let (first, last) = (run.evals[0].1, run.evals.last().unwrap().1);
    assert!(
        first > 5.0,
        "an untrained byte model starts near ln(259) = 5.56: {first}"
    );
    assert!(
        last < first - 2.0,
        "60 steps must learn the synthetic grammar: {first} -> {last}"
    );
}

#[test]
fn the_engine_serves_the_trained_checkpoint_with_the_same_logits() {
    let d = dataset(1);
    let j = job(&d, 1, 10, 1);
    let init = Weights::init(&j.model, 5).unwrap();
    let run = train_baseline(&j, &init, &d.train[0], &d.val, 10, 1, 10, 4, |_| {}).unwrap();
    let net = Net::new(&run.weights).unwrap();
    let tokens: Vec<u32> = encode_bytes(b"the king speaks to a fool.")
        .into_iter()
        .map(u32::from)
        .collect();
    let ours = net.logits(&tokens).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(
        &path,
        checkpoint::to_gguf(&run.weights, "deai-test").unwrap(),
    )
    .unwrap();
    let engine = deai_engine::Engine::load(
        &path,
        deai_engine::EngineConfig {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    // The engine's tokenizer maps text to the same byte tokens.
    let enc = engine
        .model
        .tokenizer
        .encode("the king speaks to a fool.", false)
        .unwrap();
    assert_eq!(enc, tokens);
    let out = engine.prefill_all(&tokens, 0).unwrap();
    assert_eq!(out.logits.len(), ours.len());
    let max_diff = ours
        .iter()
        .zip(&out.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-3,
        "candle and engine logits differ by {max_diff}"
    );
}

#[test]
fn checkpoints_round_trip_and_refuse_corruption() {
    let w = Weights::init(&tiny(), 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    let h = checkpoint::save(&w, &p).unwrap();
    assert_eq!(h, w.hash());
    assert_eq!(checkpoint::load(&p, Some(h)).unwrap(), w);
    let other = Weights::init(&tiny(), 3).unwrap().hash();
    assert!(matches!(
        checkpoint::load(&p, Some(other)),
        Err(TrainError::HashMismatch { .. })
    ));
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 2] ^= 0x40;
    assert!(matches!(
        checkpoint::from_safetensors(&b, Some(h)),
        Err(TrainError::HashMismatch { .. }) | Err(TrainError::NonFinite(_))
    ));
    assert!(checkpoint::from_safetensors(&b[..100], None).is_err());
    assert!(checkpoint::from_safetensors(b"not a checkpoint", None).is_err());
}

#[test]
fn honest_rounds_are_accepted_and_improve_the_model() {
    let d = dataset(4);
    let j = job(&d, 2, 6, 3);
    let mut co = coordinator(&j, &d);
    let start = co.eval().unwrap();
    let mut workers = vec![
        LocalWorker::new(key(1), None),
        LocalWorker::new(key(2), None),
    ];
    let mut checkpoints = vec![co.weights.hash()];
    for _ in 0..3 {
        let (r, _) = run_round(&mut co, &mut workers, &mut |_| {}).unwrap();
        assert_eq!(r.accepted.len(), 2, "{:?}", r.rejected);
        assert!(r.rejected.is_empty());
        assert_eq!(r.reward_each, 500);
        assert_eq!(r.verify.steps, 2, "one re-executed step per contribution");
        checkpoints.push(r.next_checkpoint);
    }
    checkpoints.dedup();
    assert_eq!(checkpoints.len(), 4, "every round moves the weights");
    let end = co.eval().unwrap();
    assert!(
        end < start - 0.5,
        "3 DiLoCo rounds must learn: {start} -> {end}"
    );
}

/// One round with an honest worker and a cheater; returns the cheater's rejection reason.
fn catch(behavior: Behavior) -> Reason {
    let d = dataset(4);
    let j = job(&d, 2, 4, 2);
    let mut co = coordinator(&j, &d);
    let mut workers = vec![
        LocalWorker::new(key(1), None),
        LocalWorker::new(key(9), behavior.tamper()),
    ];
    if matches!(behavior, Behavior::StaleCheckpoint | Behavior::Replay) {
        // These need a previous round: the first one is honest for the replayer, and the
        // stale cheater has no older checkpoint yet.
        run_round(&mut co, &mut workers, &mut |_| {}).unwrap();
    }
    let (r, _) = run_round(&mut co, &mut workers, &mut |_| {}).unwrap();
    assert_eq!(
        r.accepted,
        vec![hex::encode(&key(1).verifying_key().to_bytes()[..6])]
    );
    assert_eq!(r.rejected.len(), 1, "{behavior:?}: {:?}", r.rejected);
    // The ledger pays the honest key in full and slashes the cheater's only when its own
    // signed contribution proves the cheat (a replay could carry anyone's signature).
    assert_eq!(
        r.paid_keys,
        vec![hex::encode(key(1).verifying_key().to_bytes())]
    );
    let reason = r.rejected[0].1.reason.clone();
    let want: Vec<String> = if reason.slashable() {
        vec![hex::encode(key(9).verifying_key().to_bytes())]
    } else {
        vec![]
    };
    assert_eq!(r.slashed_keys, want, "{behavior:?}");
    reason
}

#[test]
fn every_cheater_class_is_caught_while_the_honest_worker_is_paid() {
    let expect = [
        (Behavior::RandomDelta, Reason::DeltaMismatch),
        (Behavior::ScaledDelta, Reason::DeltaMismatch),
        (Behavior::SkipSteps, Reason::StepMismatch),
        (Behavior::WrongShard, Reason::StepMismatch),
        (Behavior::PoisonedShard, Reason::StepMismatch),
        (Behavior::StaleCheckpoint, Reason::StaleCheckpoint),
        (Behavior::Replay, Reason::Duplicate),
    ];
    for (b, reason) in expect {
        assert_eq!(catch(b), reason, "{b:?}");
    }
    assert!(!Reason::Duplicate.slashable() && !Reason::BadSignature.slashable());
    assert!(!Reason::WrongRound.slashable() && !Reason::BadOpening.slashable());
}

#[test]
fn a_worker_skipping_one_step_is_caught_exactly_when_the_challenge_covers_it() {
    let d = dataset(2);
    let j = job(&d, 1, 4, 1); // H = 4
    assert_eq!(j.verify_steps, 1, "one re-executed step per challenge");
    let co = coordinator(&j, &d);
    let spec = co.round_spec();
    let me = key(5).verifying_key().to_bytes();
    let run = WorkerRun::run(
        &key(5),
        &j,
        &spec,
        &co.weights,
        None,
        &d.train,
        Some(&Behavior::SkipOneStep),
        |_, _| {},
    )
    .unwrap();
    let skipped = Behavior::skipped_step(spec.seed(&me), j.inner_steps);
    assert!((1..=j.inner_steps).contains(&skipped));
    let check = RoundCheck::new(&j, &spec, &co.weights, &d.train);
    // Its commitments are consistent: only re-executing the skipped step shows the lie.
    check.precheck(&run.contribution).unwrap();
    let (mut caught, mut missed) = (0, 0);
    for r in 0..32u8 {
        let randomness = deai_types::Hash256([r; 32]);
        let start = check.challenged_start(&run.contribution, randomness);
        match check.challenge(&run.contribution, &run, randomness) {
            Err(e) => {
                assert_eq!(start, skipped, "caught at another step: {e:?}");
                assert_eq!(e.reason, Reason::StepMismatch);
                assert_eq!(e.first_bad_step, Some(skipped));
                caught += 1;
            }
            Ok(cost) => {
                assert_ne!(
                    start, skipped,
                    "the skipped step was re-executed and passed"
                );
                assert_eq!(cost.steps, 1);
                missed += 1;
            }
        }
    }
    assert!(caught > 0 && missed > 0, "{caught} caught, {missed} missed");
}

/// A worker that computes only the window it expects to be challenged (step `s` from a
/// made-up state) and commits anything else: here an end state of halved weights, which a
/// poisoning worker might want merged.
struct WindowForger(std::collections::BTreeMap<u32, TrainState>);

impl Opener for WindowForger {
    fn open(&self, step: u32) -> deai_train::Result<Vec<u8>> {
        self.0
            .get(&step)
            .map(|s| s.to_bytes())
            .ok_or_else(|| TrainError::Rejected(format!("step {step} was never computed")))
    }
}

fn forge_window(
    j: &JobSpec,
    co: &Coordinator,
    k: &SigningKey,
    s: u32,
) -> (Contribution, WindowForger) {
    let spec = co.round_spec();
    let me = k.verifying_key().to_bytes();
    let shard = &co.shards()[spec.shard_index(&me, co.shards().len())];
    let start = TrainState::fresh(co.weights.clone());
    let mut fake = start.clone();
    fake.step = s as u64 - 1;
    let mut after = fake.clone();
    let net = Net::new(&fake.weights).unwrap();
    let g = spec.global_step(j, s - 1);
    train_step(&net, &mut after, shard, &j.train, spec.seed(&me), g).unwrap();
    let mut end = TrainState::fresh(co.weights.clone());
    end.step = j.inner_steps as u64;
    for t in &mut end.weights.tensors {
        t.iter_mut().for_each(|x| *x *= 0.5);
    }
    let mut leaves: Vec<deai_types::Hash256> = (0..=j.inner_steps)
        .map(|i| deai_types::Hash256([i as u8 + 1; 32]))
        .collect();
    leaves[0] = start.hash();
    leaves[s as usize - 1] = fake.hash();
    leaves[s as usize] = after.hash();
    leaves[j.inner_steps as usize] = end.hash();
    let c = Contribution {
        job: spec.job,
        round: spec.round,
        worker: me,
        checkpoint: spec.checkpoint,
        shard: shard.id(),
        leaves,
        mean_loss: 1.0,
        delta: Int8Delta::between(&co.weights, &end.weights),
        signature: [0; 64],
    }
    .sign(k);
    let states = [(s - 1, fake), (s, after), (j.inner_steps, end)];
    (c, WindowForger(states.into_iter().collect()))
}

#[test]
fn a_worker_that_knew_its_challenge_could_forge_anything_so_it_cannot_know_it() {
    let d = dataset(2);
    let j = job(&d, 1, 6, 1);
    let (k, s) = (key(9), 3);
    // With the challenge known, computing one step passes off any pseudo-gradient.
    let co = coordinator(&j, &d);
    let spec = co.round_spec();
    let (forged, forger) = forge_window(&j, &co, &k, s);
    let check = RoundCheck::new(&j, &spec, &co.weights, &d.train);
    check.precheck(&forged).unwrap();
    let known = (0..=255u8)
        .map(|i| deai_types::Hash256([i; 32]))
        .find(|r| check.challenged_start(&forged, *r) == s)
        .expect("some randomness picks the forged window");
    assert_eq!(check.challenge(&forged, &forger, known).unwrap().steps, 1);
    // So the coordinator draws it from a secret committed before the round's contributions
    // and revealed after: the forgery passes only when the draw happens to hit its window.
    let (mut caught, mut windows) = (0, std::collections::BTreeSet::new());
    for seed in 0..12u64 {
        let mut co = coordinator(&j, &d);
        co.seed_challenges(seed);
        let committed = co.challenge_commitment();
        co.submit(&forged.to_bytes()).unwrap();
        let r = co.close_round(&[(forged.worker, &forger)]).unwrap();
        assert_eq!(r.challenge_commitment, committed);
        assert_eq!(challenge_commitment(&r.challenge_secret), committed);
        assert_eq!(
            r.challenge,
            challenge_randomness(&r.challenge_secret, &spec, &[forged.id()]),
            "anyone recomputes the draw from the revealed secret"
        );
        assert_eq!(r.next_challenge_commitment, co.challenge_commitment());
        assert_ne!(
            r.next_challenge_commitment, committed,
            "a fresh secret per round"
        );
        let start = check.challenged_start(&forged, r.challenge);
        windows.insert(start);
        if start == s {
            assert_eq!(r.accepted.len(), 1, "{:?}", r.rejected);
        } else {
            assert!(r.accepted.is_empty());
            let reason = &r.rejected[0].1.reason;
            assert!(
                matches!(reason, Reason::StepMismatch | Reason::BadOpening),
                "{reason:?}"
            );
            assert_eq!(
                r.slashed_keys.len(),
                usize::from(*reason == Reason::StepMismatch)
            );
            caught += 1;
        }
    }
    assert!(
        windows.len() >= 3,
        "the draw is not fixed by public inputs: {windows:?}"
    );
    assert!(caught >= 6, "caught {caught} of 12 (expected 5/6 of them)");
}

#[test]
fn bisection_names_the_first_bad_step() {
    let d = dataset(2);
    let mut j = job(&d, 1, 6, 1);
    j.verify_steps = 6; // re-execute the whole round so the start is step 1
    let co = coordinator(&j, &d);
    let spec = co.round_spec();
    let run = WorkerRun::run(
        &key(3),
        &j,
        &spec,
        &co.weights,
        None,
        &d.train,
        None,
        |_, _| {},
    )
    .unwrap();
    // Forge the commitments from step 4 on (as a worker that stopped computing there).
    let mut forged = run.contribution.clone();
    for (i, l) in forged.leaves.iter_mut().enumerate().skip(4) {
        *l = deai_types::Hash256([i as u8; 32]);
    }
    let forged = forged.sign(&key(3));
    let check = RoundCheck::new(&j, &spec, &co.weights, &d.train);
    check.precheck(&forged).unwrap();
    let e = check
        .challenge(&forged, &run, deai_types::Hash256([0; 32]))
        .unwrap_err();
    assert_eq!(e.reason, Reason::StepMismatch);
    assert_eq!(e.first_bad_step, Some(4));
    // The honest contribution passes the same challenge, re-executing all 6 steps.
    let cost = check
        .challenge(&run.contribution, &run, deai_types::Hash256([0; 32]))
        .unwrap();
    assert_eq!(cost.steps, 6);
}

#[test]
fn bad_and_late_submissions_are_refused_and_lose_nothing() {
    let d = dataset(4);
    let j = job(&d, 2, 3, 2);
    let mut co = coordinator(&j, &d);
    let spec = co.round_spec();
    let run = WorkerRun::run(
        &key(1),
        &j,
        &spec,
        &co.weights,
        None,
        &d.train,
        None,
        |_, _| {},
    )
    .unwrap();
    let good = run.contribution.to_bytes();
    co.submit(&good).unwrap();
    // Duplicates, truncation, a flipped bit, garbage, wrong shapes, NaN scales.
    assert_eq!(co.submit(&good).unwrap_err().reason, Reason::Duplicate);
    assert_eq!(
        co.submit(&good[..good.len() - 1]).unwrap_err().reason,
        Reason::Malformed
    );
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    assert_eq!(
        co.submit(&flipped).unwrap_err().reason,
        Reason::BadSignature
    );
    assert_eq!(co.submit(b"").unwrap_err().reason, Reason::Malformed);
    let mut wrong_shape = run.contribution.clone();
    wrong_shape.delta.values[0].pop();
    let b = wrong_shape.sign(&key(2)).to_bytes();
    let e = co.submit(&b).unwrap_err();
    assert_eq!(e.reason, Reason::Malformed);
    assert!(e.detail.contains("values"), "{}", e.detail);
    let mut nan = run.contribution.clone();
    nan.delta.scales[1][0] = f32::NAN;
    let e = co.submit(&nan.sign(&key(2)).to_bytes()).unwrap_err();
    assert!(e.detail.contains("scale"), "{}", e.detail);
    assert_eq!(co.pending(), 1, "the accepted contribution is still there");
    // The early-closing attack: junk naming other workers' keys (a flipped bit, wrong
    // shapes, keys of throwaway signers) counts for nothing towards closing the round; only
    // the admitted contribution does.
    for k in 3..40u8 {
        let mut junk = good.clone();
        junk[40..72].copy_from_slice(&key(k).verifying_key().to_bytes());
        assert!(co.submit(&junk).is_err());
    }
    assert_eq!(co.attempted(), 1, "only the admitted worker counts");
    let r = co
        .close_round(&[(key(1).verifying_key().to_bytes(), &run)])
        .unwrap();
    assert_eq!(r.accepted.len(), 1);
    assert_eq!(r.rejected.len(), 6 + 37, "{:?}", r.rejected);
    // Late: round 0's contribution after the round closed.
    assert_eq!(co.submit(&good).unwrap_err().reason, Reason::Duplicate);
    let late = Contribution::from_bytes(&good, &j.model).unwrap();
    let mut late2 = late.clone();
    late2.mean_loss += 1.0; // new bytes, same round 0
    assert_eq!(
        co.submit(&late2.sign(&key(1)).to_bytes())
            .unwrap_err()
            .reason,
        Reason::WrongRound
    );
    // A reported loss must be finite and bounded: it is averaged into the report.
    for bad in [f32::INFINITY, f32::NAN, 2e6] {
        let mut c = late.clone();
        c.mean_loss = bad;
        let e = co.submit(&c.sign(&key(1)).to_bytes()).unwrap_err();
        assert_eq!(e.reason, Reason::Malformed, "{bad}");
        assert!(e.detail.contains("mean loss"), "{}", e.detail);
    }
    // A flood of junk in one round is refused one by one, but the report keeps a bounded
    // number of refusals (and still the closing works).
    for i in 0..(deai_train::verify::MAX_EARLY_REJECTS + 50) {
        let junk = vec![i as u8; 80];
        assert!(co.submit(&junk).is_err());
    }
    // Round 0's admitted bytes and old signed contributions, replayed in round 1 by anyone,
    // prove nobody tried this round: they must not close it early.
    assert_eq!(co.attempted(), 0, "replays and junk count for nothing");
    let r = co.close_round(&[]).unwrap();
    assert_eq!(r.rejected.len(), deai_train::verify::MAX_EARLY_REJECTS);
    assert!(r.slashed_keys.is_empty());
    // Refused by the node's policy (not staked): a participant of an earlier round, signed by
    // its own key, for this round, counts as having tried; a stranger does not, nor an old
    // round's contribution.
    assert_eq!(co.attempted(), 0);
    let mut now = late.clone();
    now.round = co.round;
    co.refuse(&late.clone().sign(&key(1)).to_bytes(), "not staked");
    assert_eq!(co.attempted(), 0, "an old round's contribution");
    co.refuse(&now.clone().sign(&key(7)).to_bytes(), "not staked");
    assert_eq!(co.attempted(), 0, "a stranger's key");
    co.refuse(&now.clone().sign(&key(1)).to_bytes(), "not staked");
    assert_eq!(co.attempted(), 1, "a participant of round 0");
}

#[test]
fn a_worker_that_cannot_open_its_states_is_rejected() {
    let d = dataset(2);
    let j = job(&d, 1, 3, 1);
    let mut co = coordinator(&j, &d);
    let spec = co.round_spec();
    let run = WorkerRun::run(
        &key(1),
        &j,
        &spec,
        &co.weights,
        None,
        &d.train,
        None,
        |_, _| {},
    )
    .unwrap();
    co.submit(&run.contribution.to_bytes()).unwrap();
    let before = co.weights.hash();
    let r = co.close_round(&[]).unwrap();
    assert_eq!(r.rejected[0].1.reason, Reason::BadOpening);
    assert_eq!(
        r.next_checkpoint, before,
        "nothing merged, weights unchanged"
    );
}

#[test]
fn one_step_is_a_pure_function_of_its_inputs() {
    let d = dataset(1);
    let j = job(&d, 1, 2, 1);
    let w = Weights::init(&j.model, 4).unwrap();
    let net = Net::new(&w).unwrap();
    let step = |shard: &Shard, seed: u64| {
        let mut s = TrainState::fresh(w.clone());
        train_step(&net, &mut s, shard, &j.train, seed, 0).unwrap();
        s.hash()
    };
    let a = step(&d.train[0], 1);
    assert_eq!(a, step(&d.train[0], 1));
    assert_ne!(a, step(&d.train[0], 2));
    assert_ne!(a, step(&d.val, 1));
}

/// Prints the hash of the train state after 3 steps; run by
/// `same_state_at_one_and_two_threads` in child processes with RAYON_NUM_THREADS set.
#[test]
#[ignore = "helper run in a child process"]
fn child_prints_state_hash() {
    let d = dataset(1);
    let mut j = job(&d, 1, 3, 1);
    j.model = ModelConfig::preset("small").unwrap();
    j.model.seq_len = 64;
    let tokens = encode_bytes(&synthetic_text(40_000, 7));
    let d = Dataset::split(&tokens, 1, 0.05, 64).unwrap();
    let w = Weights::init(&j.model, 4).unwrap();
    let net = Net::new(&w).unwrap();
    let mut s = TrainState::fresh(w);
    for g in 0..3 {
        train_step(&net, &mut s, &d.train[0], &j.train, 9, g).unwrap();
    }
    println!("STATE {}", s.hash());
}

#[test]
fn same_state_at_one_and_two_threads() {
    let exe = std::env::current_exe().unwrap();
    let hash = |threads: &str| {
        let out = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_prints_state_hash",
                "--nocapture",
            ])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .find_map(|l| l.strip_prefix("STATE ").map(str::to_string))
            .unwrap_or_else(|| panic!("no STATE line in {text}"))
    };
    let one = hash("1");
    assert_eq!(one.len(), 64);
    assert_eq!(
        one,
        hash("2"),
        "the train state must not depend on the thread count"
    );
}

#[test]
fn anyone_can_audit_a_closed_round_and_a_lying_coordinator_fails() {
    use deai_train::audit::{audit_round, AuditInputs, RoundEvidence};
    let d = dataset(4);
    let j = job(&d, 3, 3, 2);
    let mut co = coordinator(&j, &d);
    let round = |co: &mut Coordinator, workers: &[(u8, Behavior)]| {
        let spec = co.round_spec();
        let runs: Vec<WorkerRun> = workers
            .iter()
            .map(|(k, b)| {
                let r = WorkerRun::run(
                    &key(*k),
                    &j,
                    &spec,
                    &co.weights,
                    co.previous.as_ref(),
                    co.shards(),
                    b.tamper().as_deref(),
                    |_, _| {},
                )
                .unwrap();
                let _ = co.submit(&r.contribution.to_bytes());
                r
            })
            .collect();
        let openers: Vec<([u8; 32], &dyn Opener)> = runs
            .iter()
            .map(|r| (r.contribution.worker, r as &dyn Opener))
            .collect();
        co.close_round(&openers).unwrap()
    };
    // Round 0: an honest worker and two caught by their challenges.
    let (committed, start, outer) = (
        co.challenge_commitment(),
        co.weights.clone(),
        co.outer_state(),
    );
    let r0 = round(
        &mut co,
        &[
            (1, Behavior::Honest),
            (2, Behavior::WrongShard),
            (3, Behavior::ScaledDelta),
        ],
    );
    assert_eq!(
        (r0.paid_keys.len(), r0.slashed_keys.len()),
        (1, 2),
        "{r0:?}"
    );
    let ev0 = RoundEvidence::from_bytes(&co.take_evidence().unwrap().to_bytes()).unwrap();
    assert_eq!((ev0.contributions.len(), ev0.slash_proofs.len()), (3, 0));
    let inputs = AuditInputs {
        job: &j,
        checkpoint: &start,
        outer_state: &outer,
        shards: &d.train,
        val: Some(&d.val),
        committed,
    };
    let mine = audit_round(&inputs, &r0, &ev0).unwrap();
    assert_eq!(mine.next_checkpoint, r0.next_checkpoint);
    assert_eq!(mine.eval_loss.to_bits(), r0.eval_loss.to_bits());
    // Without the held-out shard the loss goes unchecked, the rest still is.
    let no_val = AuditInputs {
        val: None,
        ..inputs
    };
    assert!(audit_round(&no_val, &r0, &ev0).unwrap().eval_loss.is_nan());

    // Lies about money, the model, the challenge or the evidence all fail.
    let fails = |r: &deai_train::RoundReport, ev: &RoundEvidence, what: &str| {
        let e = audit_round(&inputs, r, ev).unwrap_err().to_string();
        assert!(e.contains(what), "expected {what:?}: {e}");
    };
    let cheater = hex::encode(key(3).verifying_key().to_bytes());
    let honest = hex::encode(key(1).verifying_key().to_bytes());
    let mut lie = r0.clone();
    lie.paid_keys.push(cheater.clone());
    fails(&lie, &ev0, "paid keys");
    let mut lie = r0.clone();
    lie.slashed_keys.push(honest);
    lie.slashed_keys.sort();
    fails(&lie, &ev0, "slashed keys");
    let mut lie = r0.clone();
    lie.next_checkpoint = deai_types::Hash256([1; 32]);
    fails(&lie, &ev0, "merged checkpoint");
    let mut lie = r0.clone();
    lie.challenge_secret = deai_types::Hash256([2; 32]);
    fails(&lie, &ev0, "commitment");
    let mut forged = ev0.clone();
    for (_, opened) in &mut forged.openings {
        for (_, o) in opened.iter_mut() {
            *o = Err("timed out".into());
        }
    }
    fails(&r0, &forged, "accepted list");
    let mut wrong = inputs.checkpoint.clone();
    wrong.tensors[0][0] += 1.0;
    let e = audit_round(
        &AuditInputs {
            checkpoint: &wrong,
            ..inputs
        },
        &r0,
        &ev0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("checkpoint given"), "{e}");

    // Round 1 starts from round 0's outputs, momentum included, and audits the same way
    // against the commitment round 0's report published. A stale worker is refused at the
    // door for a slashable reason: its signed bytes are the proof.
    let (start, outer) = (co.weights.clone(), co.outer_state());
    assert!(outer.tensors.iter().flatten().any(|x| *x != 0.0));
    let r1 = round(
        &mut co,
        &[(1, Behavior::Honest), (4, Behavior::StaleCheckpoint)],
    );
    assert_eq!(
        (r1.paid_keys.len(), r1.slashed_keys.len()),
        (1, 1),
        "{r1:?}"
    );
    let ev1 = co.take_evidence().unwrap();
    assert_eq!((ev1.contributions.len(), ev1.slash_proofs.len()), (1, 1));
    let inputs1 = AuditInputs {
        checkpoint: &start,
        outer_state: &outer,
        committed: r0.next_challenge_commitment,
        ..inputs
    };
    audit_round(&inputs1, &r1, &ev1).unwrap();
    let mut dropped = ev1.clone();
    dropped.slash_proofs.clear();
    let e = audit_round(&inputs1, &r1, &dropped).unwrap_err();
    assert!(e.to_string().contains("slashed keys"), "{e}");
    let e = audit_round(
        &AuditInputs {
            committed,
            ..inputs1
        },
        &r1,
        &ev1,
    )
    .unwrap_err();
    assert!(e.to_string().contains("commitment"), "{e}");
    let stale = AuditInputs {
        outer_state: &no_val.outer_state.clone(),
        ..inputs1
    };
    let e = audit_round(&stale, &r1, &ev1).unwrap_err();
    assert!(e.to_string().contains("outer state"), "{e}");
}
