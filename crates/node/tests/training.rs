//! DiLoCo over HTTP on loopback: a coordinator and training workers in one process, with a
//! cheater, a worker that leaves, and bad input sent to the coordinator's API.

use deai_node::training::{serve_worker, RoundInfo, TrainCoordinator, TrainWorker};
use deai_train::data::{encode_bytes, synthetic_text, Dataset};
use deai_train::diloco::JobSpec;
use deai_train::faults::Behavior;
use deai_train::{checkpoint, Coordinator, ModelConfig, TrainConfig, Weights};
use ed25519_dalek::SigningKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn setup(workers: u32, rounds: u32) -> (JobSpec, Dataset, Weights) {
    let model = ModelConfig::preset("tiny").unwrap();
    let tokens = encode_bytes(&synthetic_text(40_000, 3));
    let d = Dataset::split(&tokens, 4, 0.05, model.seq_len).unwrap();
    let job = JobSpec {
        model: model.clone(),
        train: TrainConfig {
            batch: 4,
            lr: 3e-3,
            warmup_steps: 2,
            total_steps: 4 * rounds as u64,
            ..TrainConfig::default()
        },
        inner_steps: 4,
        rounds,
        workers,
        outer_lr: 0.7,
        outer_momentum: 0.9,
        shards: d.train.iter().map(|s| s.id()).collect(),
        val_shard: d.val.id(),
        verify_steps: 1,
        reward_per_round: 900,
    };
    let init = Weights::init(&model, 1).unwrap();
    (job, d, init)
}

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn short(k: &SigningKey) -> String {
    hex::encode(&k.verifying_key().to_bytes()[..6])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_over_http_merge_honest_work_and_drop_cheaters_and_leavers() {
    // The job expects 4 contributions a round: 2 honest workers stay, 1 honest worker leaves
    // after round 1, and a wrong-shard cheater stays. From round 2 on only 3 arrive, so the
    // deadline closes the round: a missing worker does not stall it.
    let (job, d, init) = setup(4, 3);
    let mut co =
        Coordinator::new(job.clone(), init.clone(), d.train.clone(), d.val.clone()).unwrap();
    co.eval_windows = 4;
    let coord = TrainCoordinator::new(co, Duration::from_secs(8)).unwrap();
    // Published before any contribution: the first round's challenge commitment.
    let committed0 = coord.info().challenge_commitment;
    let addr = deai_node::serve("127.0.0.1:0".parse().unwrap(), coord.router())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let runner = tokio::spawn({
        let c = coord.clone();
        async move { c.run().await }
    });
    let steps = Arc::new(AtomicU64::new(0));
    let mut handles = vec![];
    let specs = [
        (key(1), Behavior::Honest, None),
        (key(2), Behavior::Honest, None),
        (key(3), Behavior::Honest, Some(1)),
        (key(4), Behavior::WrongShard, None),
    ];
    for (k, b, max) in specs.iter().cloned() {
        let mut w = TrainWorker::new(k, &url, b.tamper(), "");
        w.max_rounds = max;
        let w = serve_worker(w, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let steps = steps.clone();
        handles.push(tokio::spawn(async move {
            w.run(Arc::new(move |_, _, _| {
                steps.fetch_add(1, Ordering::Relaxed);
            }))
            .await
        }));
    }
    let done = tokio::time::timeout(Duration::from_secs(240), runner).await;
    assert!(done.is_ok(), "the job did not finish: {:?}", coord.info());
    done.unwrap().unwrap().unwrap();
    for h in handles {
        let n = h.await.unwrap().unwrap();
        assert!(n >= 1);
    }
    let reports = coord.reports();
    assert_eq!(reports.len(), 3);
    let honest: Vec<String> = [key(1), key(2)].iter().map(short).collect();
    for r in &reports {
        for h in &honest {
            assert!(
                r.accepted.contains(h),
                "round {}: {:?} / {:?}",
                r.round,
                r.accepted,
                r.rejected
            );
        }
        let cheater = short(&key(4));
        assert!(
            r.rejected
                .iter()
                .any(|(w, e)| *w == cheater && e.reason == deai_train::Reason::StepMismatch),
            "round {}: {:?}",
            r.round,
            r.rejected
        );
        assert!(!r.accepted.contains(&cheater));
    }
    assert!(reports[0].accepted.contains(&short(&key(3))));
    assert!(
        !reports[1].accepted.contains(&short(&key(3))),
        "the leaver is gone"
    );
    assert_eq!(
        reports[1].reward_each, 450,
        "the reward is split among accepted work only"
    );
    assert!(steps.load(Ordering::Relaxed) >= 4 * 4 * 2);

    // The final checkpoint is served by hash and checks out; another hash is a 404.
    let info: RoundInfo = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{url}/train/v1/round"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info.done);
    assert_eq!(info.spec.checkpoint, coord.weights().hash());
    assert_eq!(info.spec.checkpoint, reports[2].next_checkpoint);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let b = client
        .get(format!(
            "{url}/train/v1/checkpoints/{}",
            info.spec.checkpoint
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        checkpoint::from_safetensors(&b, Some(info.spec.checkpoint)).unwrap(),
        coord.weights()
    );
    let missing = client
        .get(format!("{url}/train/v1/checkpoints/{}", init.hash()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Anyone can re-check the last two rounds from what the coordinator serves, against the
    // commitments published before each round; older evidence is gone.
    assert_eq!(reports[0].challenge_commitment, committed0);
    for r in [1, 2] {
        let mine = deai_node::training::audit_remote(&url, r, None)
            .await
            .unwrap_or_else(|e| panic!("round {r}: {e:#}"));
        let theirs = &reports[r as usize];
        assert_eq!(mine.paid_keys, theirs.paid_keys);
        assert_eq!(mine.slashed_keys, theirs.slashed_keys);
        assert_eq!(mine.next_checkpoint, theirs.next_checkpoint);
        assert_eq!(
            theirs.challenge_commitment,
            reports[r as usize - 1].next_challenge_commitment
        );
    }
    let gone = client
        .get(format!("{url}/train/v1/evidence/0"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let kept = client
        .get(format!("{url}/train/v1/evidence/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    let e = deai_node::training::audit_remote(&url, 0, None)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("must be given"), "{e:#}");

    // A validator's judgment of a proposed round, anchored to the ledger's record of the
    // job: the truthful proposal of round 2 is accepted, lies are rejected with a reason,
    // and an unreachable coordinator gets no verdict yet.
    use deai_ledger::state::PendingRound;
    use deai_ledger::{TrainingJob, TrainingStatus};
    use deai_node::training::{judge_round, RoundVerdict};
    let digest = TrainCoordinator::report_digest;
    let r2 = &reports[2];
    let keys = |v: &[String]| -> Vec<[u8; 32]> {
        v.iter()
            .map(|h| {
                let mut k = [0u8; 32];
                hex::decode_to_slice(h, &mut k).unwrap();
                k
            })
            .collect()
    };
    let record = TrainingJob {
        owner: [0; 32],
        coordinator: [1; 32],
        rounds: 3,
        workers: 4,
        reward_per_round: 900,
        checkpoint: r2.checkpoint,
        first_commitment: committed0,
        last_report: Some(digest(&reports[1])),
        pending: None,
        rounds_done: 2,
        opened_at: 0,
        deadline: 100,
        status: TrainingStatus::Running,
        escrow: 900,
        paid: 1800,
        fees: 0,
        refunded: 0,
        accepted: 0,
        rejected: 0,
        slashed: 0,
        data: Vec::new(),
        credits: Vec::new(),
    };
    let honest = PendingRound {
        round: 2,
        checkpoint: r2.next_checkpoint,
        report: digest(r2),
        accepted: keys(&r2.paid_keys),
        rejected: keys(&r2.slashed_keys),
        url: url.clone(),
        proposed_at: 0,
        votes: vec![],
    };
    assert!(
        !honest.rejected.is_empty(),
        "the cheater is slashed: {r2:?}"
    );
    let id = job.id();
    let verdict = |t: TrainingJob, p: PendingRound| async move { judge_round(id, &t, &p).await };
    assert_eq!(
        verdict(record.clone(), honest.clone()).await.unwrap(),
        RoundVerdict::Accept
    );
    let rejects = |v: Result<RoundVerdict, anyhow::Error>, why: &str| match v.unwrap() {
        RoundVerdict::Reject(m) => assert!(m.contains(why), "{why:?}: {m}"),
        RoundVerdict::Accept => panic!("accepted a lie ({why})"),
    };
    let mut p = honest.clone();
    p.rejected.push(key(1).verifying_key().to_bytes());
    rejects(verdict(record.clone(), p).await, "slashed keys");
    let mut p = honest.clone();
    p.rejected.clear();
    rejects(verdict(record.clone(), p).await, "slashed keys");
    let mut p = honest.clone();
    p.accepted.push(key(4).verifying_key().to_bytes());
    rejects(verdict(record.clone(), p).await, "paid keys");
    let mut p = honest.clone();
    p.accepted.pop();
    rejects(verdict(record.clone(), p).await, "paid keys");
    let mut p = honest.clone();
    p.report = deai_types::Hash256([7; 32]);
    rejects(verdict(record.clone(), p).await, "not the one proposed");
    let mut p = honest.clone();
    p.checkpoint = deai_types::Hash256([7; 32]);
    rejects(verdict(record.clone(), p).await, "proposed checkpoint");
    let mut t = record.clone();
    t.checkpoint = deai_types::Hash256([7; 32]);
    rejects(verdict(t, honest.clone()).await, "ledger's checkpoint");
    let mut t = record.clone();
    t.last_report = Some(digest(&reports[0]));
    rejects(verdict(t, honest.clone()).await, "settled");
    rejects(
        judge_round(deai_types::Hash256([9; 32]), &record, &honest).await,
        "serves job",
    );
    let mut p = honest.clone();
    p.url = "http://127.0.0.1:9".into();
    let e = verdict(record.clone(), p.clone()).await.unwrap_err();
    // ... until it has failed to serve the round through half the judging window (blocks
    // 0..100 here) on three attempts: then the round is rejected, slashing the coordinator.
    use deai_node::training::unavailable_verdict;
    assert_eq!(unavailable_verdict(&record, &p, 49, 9, &e), None);
    assert_eq!(unavailable_verdict(&record, &p, 99, 2, &e), None);
    match unavailable_verdict(&record, &p, 50, 3, &e) {
        Some(RoundVerdict::Reject(m)) => {
            assert!(m.contains("did not serve round 2"), "{m}");
            assert!(m.contains("127.0.0.1:9"), "the cause is kept: {m}");
        }
        other => panic!("{other:?}"),
    }
    // The validator's own limits or slowness never count against the coordinator.
    let own = anyhow::anyhow!("the job names 2000 shards; an audit fetches at most 1024");
    assert_eq!(unavailable_verdict(&record, &p, 99, 9, &own), None);
    let mut late = p.clone();
    late.proposed_at = 60;
    assert_eq!(unavailable_verdict(&record, &late, 79, 3, &e), None);
    assert!(unavailable_verdict(&record, &late, 80, 3, &e).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_bad_input_with_reasons() {
    let (job, d, init) = setup(2, 1);
    let co = Coordinator::new(job, init, d.train.clone(), d.val.clone()).unwrap();
    let coord = TrainCoordinator::new(co, Duration::from_secs(600)).unwrap();
    let addr = deai_node::serve("127.0.0.1:0".parse().unwrap(), coord.router())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |body: Vec<u8>, worker_url: &str| {
        c.post(format!("{url}/train/v1/contributions"))
            .header("x-deai-worker-url", worker_url)
            .body(body)
            .send()
    };
    let r = post(b"garbage".to_vec(), "http://127.0.0.1:9")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"]["reason"], "malformed", "{j}");
    let r = post(vec![], "not a url").await.unwrap();
    assert_eq!(r.status(), 400);
    // The coordinator fetches openings only from where the contribution came from.
    for bad in [
        "http://10.9.8.7:9",
        "http://example.com:9",
        "file:///etc/passwd",
    ] {
        let r = post(b"garbage".to_vec(), bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let j: serde_json::Value = r.json().await.unwrap();
        assert!(
            j["error"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("opening URL")),
            "{bad}: {j}"
        );
    }
    let r = post(vec![0; (64 << 20) + 1], "http://127.0.0.1:9")
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close");
    let r = c
        .get(format!("{url}/train/v1/shards/xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(format!("{url}/train/v1/shards/{}", d.val.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the validation shard is not handed to workers"
    );
    let r = c
        .get(format!("{url}/train/v1/shards/{}", d.train[1].id()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), d.train[1].to_bytes());
    assert_eq!(coord.info().pending, 0, "nothing was admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_while_the_aggregator_is_held() {
    // A round's closing holds the aggregator while it re-executes challenged steps, merges
    // and evaluates (seconds to minutes on a real model). Workers poll the round and fetch
    // checkpoints and shards meanwhile: none of that may wait for it.
    let (job, d, init) = setup(2, 1);
    let co = Coordinator::new(job.clone(), init.clone(), d.train.clone(), d.val.clone()).unwrap();
    let coord = TrainCoordinator::new(co, Duration::from_secs(600)).unwrap();
    let addr = deai_node::serve("127.0.0.1:0".parse().unwrap(), coord.router())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let coord = coord.clone();
        move || {
            let _aggregator = coord.coordinator();
            held_tx.send(()).unwrap();
            release_rx.recv().ok();
        }
    });
    held_rx.recv().unwrap();
    // The timeout only turns a deadlock into a failure; it measures nothing.
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let get = |path: String| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let r = c.get(format!("{url}{path}")).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.bytes().await.unwrap()
        }
    };
    let j: JobSpec = serde_json::from_slice(&get("/train/v1/job".into()).await).unwrap();
    assert_eq!(j.id(), job.id());
    let info: RoundInfo = serde_json::from_slice(&get("/train/v1/round".into()).await).unwrap();
    assert_eq!(info.spec.checkpoint, init.hash());
    assert_eq!((info.spec.round, info.pending, info.closing), (0, 0, false));
    let reports = get("/train/v1/reports".into()).await;
    assert_eq!(&reports[..], b"[]");
    let ckpt = get(format!("/train/v1/checkpoints/{}", init.hash())).await;
    assert_eq!(
        checkpoint::from_safetensors(&ckpt, Some(init.hash()))
            .unwrap()
            .hash(),
        init.hash()
    );
    let shard = get(format!("/train/v1/shards/{}", d.train[0].id())).await;
    assert_eq!(&shard[..], &d.train[0].to_bytes()[..]);
    assert_eq!(coord.info().spec.round, 0);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
}
