//! Training, DiLoCo rounds and verification on tiny models and synthetic data (no network).

use deai_train::checkpoint;
use deai_train::data::{encode_bytes, synthetic_text, Dataset, Shard};
use deai_train::diloco::{Behavior, Contribution, JobSpec, WorkerRun};
use deai_train::optim::{train_step, TrainState};
use deai_train::run::{run_round, train_baseline, LocalWorker};
use deai_train::verify::{Coordinator, Reason, RoundCheck};
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
        LocalWorker::new(key(1), Behavior::Honest),
        LocalWorker::new(key(2), Behavior::Honest),
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
        LocalWorker::new(key(1), Behavior::Honest),
        LocalWorker::new(key(9), behavior),
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
        Behavior::SkipOneStep,
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
        Behavior::Honest,
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
        Behavior::Honest,
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
    let (r, _) = (
        co.close_round(
            &[(key(1).verifying_key().to_bytes(), &run)],
            deai_types::Hash256([5; 32]),
        )
        .unwrap(),
        (),
    );
    assert_eq!(r.accepted.len(), 1);
    assert_eq!(r.rejected.len(), 6, "{:?}", r.rejected);
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
    // A flood of junk in one round is refused one by one, but the report keeps a bounded
    // number of refusals (and still the closing works).
    for i in 0..(deai_train::verify::MAX_EARLY_REJECTS + 50) {
        let junk = vec![i as u8; 80];
        assert!(co.submit(&junk).is_err());
    }
    let r = co.close_round(&[], deai_types::Hash256([6; 32])).unwrap();
    assert_eq!(r.rejected.len(), deai_train::verify::MAX_EARLY_REJECTS);
    assert!(r.slashed_keys.is_empty());
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
        Behavior::Honest,
        |_, _| {},
    )
    .unwrap();
    co.submit(&run.contribution.to_bytes()).unwrap();
    let before = co.weights.hash();
    let r = co.close_round(&[], deai_types::Hash256([1; 32])).unwrap();
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
