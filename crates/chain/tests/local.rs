//! Four validators on the real tokio runtime with authenticated p2p on loopback and the
//! HTTP API, driven by a real HTTP client: submit, finalize, query, and check a state proof
//! against the finality certificate with no trust in the serving node.

use commonware_runtime::Runner;
use deai_chain::lightclient::{verify_state_proof, StateProof};
use deai_chain::local::{self, InitOptions, RunOptions};
use deai_ledger::state::Key;
use deai_ledger::{Account, SignedTx, Tx, TxKind};
use std::time::{Duration, Instant};

fn free_port_block(n: u16) -> u16 {
    deai_chain::ports::free_port_base(&(0..n).collect::<Vec<_>>()).unwrap()
}

#[test]
fn devnet_over_http_finalizes_and_proves() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block(8);
    let genesis = local::init(
        dir.path(),
        &InitOptions {
            base_p2p_port: base,
            base_http_port: base + 4,
            // Short epochs: the proof below walks hand-offs from the genesis set.
            epoch_length: 4,
            ..Default::default()
        },
    )
    .unwrap();
    // A second init over the same directory is refused.
    assert!(local::init(dir.path(), &InitOptions::default()).is_err());
    let faucet = local::read_key(&dir.path().join("keys/faucet.key")).unwrap();
    let faucet_key = ed25519_dalek::SigningKey::from_bytes(&faucet);
    let validators: Vec<[u8; 32]> = genesis.validators.iter().map(|v| v.address).collect();
    let path = dir.path().to_path_buf();
    local::runner(dir.path()).start(|ctx| async move {
        let nodes = local::start_validators(&ctx, &path, &[0, 1, 2, 3], &RunOptions::default())
            .await
            .unwrap();
        let url = format!("http://{}", nodes[1].http);
        let chain = nodes[0].app.finalized_state().chain_id();
        let (res_tx, res_rx) = std::sync::mpsc::channel();
        let a_validator = hex::encode(validators[2]);
        // Drive the HTTP client from a plain thread (reqwest blocking).
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .no_proxy()
                .build()
                .unwrap();
            let to = [9u8; 32];
            let tx = Tx {
                chain,
                from: [0; 32],
                nonce: 0,
                fee: 1,
                kind: TxKind::Transfer { to, amount: 1234 },
            }
            .sign(&faucet_key);
            let r: serde_json::Value = c
                .post(format!("{url}/v1/tx"))
                .json(&serde_json::json!({ "tx": tx }))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let id = r["id"].as_str().expect("tx id").to_string();
            // Malformed input gets a 400 with a reason.
            let bad = c
                .post(format!("{url}/v1/tx"))
                .json(&serde_json::json!({ "hex": "00ff" }))
                .send()
                .unwrap();
            assert_eq!(bad.status(), 400);
            assert!(bad.text().unwrap().contains("error"));
            let replay = c
                .post(format!("{url}/v1/tx"))
                .json(&serde_json::json!({ "hex": hex::encode(tx.to_bytes()) }))
                .send()
                .unwrap();
            assert_eq!(replay.status(), 400, "duplicate submission refused");
            assert_eq!(
                c.get(format!("{url}/v1/account/zz"))
                    .send()
                    .unwrap()
                    .status(),
                400
            );
            assert_eq!(
                c.get(format!("{url}/v1/nope")).send().unwrap().status(),
                404
            );
            let t0 = Instant::now();
            let height = loop {
                let s: serde_json::Value = c
                    .get(format!("{url}/v1/tx/{id}"))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                if s["status"] == "finalized" {
                    assert!(s["error"].is_null(), "{s}");
                    break s["height"].as_u64().unwrap();
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "not finalized: {s}");
                std::thread::sleep(Duration::from_millis(100));
            };
            let acct: serde_json::Value = c
                .get(format!("{url}/v1/account/{}", hex::encode(to)))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let account: Account = serde_json::from_value(acct["account"].clone()).unwrap();
            assert_eq!(account.balance, 1234);
            // The sender's next nonce counts its pending transactions too: a second transfer
            // submitted now is either pending (next 2 by the mempool) or final (nonce 2).
            let second = Tx {
                chain,
                from: [0; 32],
                nonce: 1,
                fee: 1,
                kind: TxKind::Transfer {
                    to: [8u8; 32],
                    amount: 1,
                },
            }
            .sign(&faucet_key);
            let sent = c
                .post(format!("{url}/v1/tx"))
                .json(&serde_json::json!({ "tx": second }))
                .send()
                .unwrap();
            assert!(sent.status().is_success());
            let from: serde_json::Value = c
                .get(format!("{url}/v1/account/{}", hex::encode(second.tx.from)))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(from["next_nonce"], 2, "{from}");
            let block: serde_json::Value = c
                .get(format!("{url}/v1/block/{height}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let txs: Vec<SignedTx> = serde_json::from_value(block["txs"].clone()).unwrap();
            assert!(txs.iter().any(|t| t.id().to_hex() == id));
            // The explorer's queries: the transaction with its position, the recipient's
            // history, search by id / height / address / digest, blocks newest first.
            let get = |path: &str| -> (u16, serde_json::Value) {
                let r = c.get(format!("{url}{path}")).send().unwrap();
                let status = r.status().as_u16();
                (status, r.json().unwrap_or(serde_json::Value::Null))
            };
            let (_, t) = get(&format!("/v1/tx/{id}"));
            assert_eq!(t["tx"]["tx"]["kind"]["type"], "transfer", "{t}");
            let index = t["index"].as_u64().unwrap() as usize;
            assert_eq!(txs[index].id().to_hex(), id);
            let (_, hist) = get(&format!("/v1/account/{}/txs", hex::encode(to)));
            assert_eq!(hist["total"], 1, "{hist}");
            assert_eq!(hist["txs"][0]["id"], id.as_str());
            assert_eq!(hist["txs"][0]["type"], "transfer");
            assert_eq!(hist["txs"][0]["height"], height);
            let (_, none) = get(&format!("/v1/account/{}/txs", hex::encode([3u8; 32])));
            assert_eq!(none["total"], 0);
            for (q, kind, want) in [
                (id.clone(), "tx", id.clone()),
                (height.to_string(), "block", height.to_string()),
                (hex::encode(to), "account", hex::encode(to)),
                (
                    block["digest"].as_str().unwrap().to_string(),
                    "block",
                    height.to_string(),
                ),
                (a_validator.clone(), "validator", a_validator.clone()),
            ] {
                let (status, r) = get(&format!("/v1/search?q={q}"));
                assert_eq!(status, 200, "search {q}: {r}");
                assert_eq!(
                    (r["kind"].as_str(), r["id"].as_str()),
                    (Some(kind), Some(&*want))
                );
            }
            for (q, want) in [
                ("ab".repeat(32), 404),
                ("0".repeat(64), 404),
                ("zzz".to_string(), 400),
                (String::new(), 400),
                ("99999999999".to_string(), 404),
                ("p9".to_string(), 404),
                ("x".repeat(200), 400),
            ] {
                let (status, r) = get(&format!("/v1/search?q={q}"));
                assert_eq!(status, want, "search {q:?}: {r}");
                assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
            }
            // Three observed blocks at least (the transfer may have landed at height 1).
            let tip = loop {
                let tip = get("/v1/status").1["height"].as_u64().unwrap();
                if tip >= 3 {
                    break tip;
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "the chain stalled");
                std::thread::sleep(Duration::from_millis(50));
            };
            let (_, page) = get(&format!("/v1/blocks?before={}&limit=3", tip + 1));
            let hs: Vec<u64> = page["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["height"].as_u64().unwrap())
                .collect();
            assert_eq!(hs, [tip, tip - 1, tip - 2]);
            assert!(page["blocks"][0]["observed_ms"].as_u64().is_some());
            let (_, st) = get("/v1/status");
            assert!(st["txs_total"].as_u64().unwrap() >= 1, "{st}");
            assert!(st["observed"]["finality_ms"].as_f64().is_some(), "{st}");
            let (_, props) = get("/v1/proposals");
            assert_eq!(props["proposals"], serde_json::json!([]));
            // Past two epoch ends, so that the proof carries two hand-offs at least.
            while get("/v1/status").1["height"].as_u64().unwrap() < 9 {
                assert!(t0.elapsed() < Duration::from_secs(90), "the chain stalled");
                std::thread::sleep(Duration::from_millis(50));
            }
            let (_, st) = get("/v1/status");
            assert!(st["epoch"].as_u64().unwrap() >= 2, "{st}");
            assert_eq!(st["epoch_length"], 4, "{st}");
            assert_eq!(st["validator_set"], st["genesis_validator_set"], "{st}");
            let page = c.get(format!("{url}/")).send().unwrap();
            assert_eq!(page.status(), 200);
            assert!(page.text().unwrap().contains("/ui/app.js"));
            let proof: StateProof = c
                .get(format!("{url}/v1/proof/account/{}", hex::encode(to)))
                .send()
                .unwrap()
                .json()
                .unwrap();
            res_tx.send(proof).unwrap();
        });
        let proof = loop {
            if let Ok(p) = res_rx.try_recv() {
                break p;
            }
            commonware_runtime::Clock::sleep(&ctx, Duration::from_millis(50)).await;
        };
        let key = Key::Account([9u8; 32]);
        assert!(
            proof.handoffs.len() >= 2,
            "{} hand-offs",
            proof.handoffs.len()
        );
        assert_eq!(proof.handoffs.len() as u64, proof.height / 4);
        let proven = verify_state_proof(&validators, &key, &proof).unwrap();
        // Hand-offs: a missing one, one out of order, or a tampered set are refused.
        let mut p = proof.clone();
        p.handoffs.pop();
        let err = verify_state_proof(&validators, &key, &p).unwrap_err();
        assert!(err.contains("epoch"), "{err}");
        let mut p = proof.clone();
        p.handoffs.swap(0, 1);
        assert!(verify_state_proof(&validators, &key, &p).is_err());
        let mut p = proof.clone();
        let mut v = hex::decode(p.handoffs[0].value.as_ref().unwrap()).unwrap();
        let last = v.len() - 1;
        v[last] ^= 1; // inside the next epoch's validator set
        p.handoffs[0].value = Some(hex::encode(v));
        let err = verify_state_proof(&validators, &key, &p).unwrap_err();
        assert!(err.contains("hand-off to epoch 1"), "{err}");
        let acct: Account = postcard::from_bytes(proven.value.as_ref().unwrap()).unwrap();
        assert_eq!(acct.balance, 1234);
        // Tampering with any layer is caught.
        let mut p = proof.clone();
        let mut v = hex::decode(p.value.as_ref().unwrap()).unwrap();
        v[0] ^= 1;
        p.value = Some(hex::encode(v));
        assert!(verify_state_proof(&validators, &key, &p).is_err());
        let mut p = proof.clone();
        let mut h = hex::decode(&p.header).unwrap();
        h[50] ^= 1;
        p.header = hex::encode(h);
        assert!(verify_state_proof(&validators, &key, &p).is_err());
        let mut other = validators.clone();
        other[0] = [7u8; 32];
        other[0] = local::address_of(&[7u8; 32]);
        assert!(verify_state_proof(&other[..1], &key, &proof).is_err());
        assert!(verify_state_proof(&validators, &Key::Account([8u8; 32]), &proof).is_err());
    });
}

/// A transaction signed by `key` (fee 1).
fn signed(
    chain: deai_types::Hash256,
    key: &ed25519_dalek::SigningKey,
    nonce: u64,
    kind: TxKind,
) -> SignedTx {
    Tx {
        chain,
        from: [0; 32],
        nonce,
        fee: 1,
        kind,
    }
    .sign(key)
}

/// Waits (on the runtime's clock) until `f` holds, failing after `secs`.
async fn until(
    ctx: &commonware_runtime::tokio::Context,
    secs: u64,
    what: &str,
    f: impl Fn() -> bool,
) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        commonware_runtime::Clock::sleep(ctx, Duration::from_millis(50)).await;
    }
}

#[test]
fn a_validator_joins_through_the_registry_and_votes() {
    use commonware_consensus::Epochable;
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block(10);
    local::init(
        dir.path(),
        &InitOptions {
            base_p2p_port: base,
            base_http_port: base + 4,
            epoch_length: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let faucet = local::read_key(&dir.path().join("keys/faucet.key")).unwrap();
    let faucet_key = ed25519_dalek::SigningKey::from_bytes(&faucet);
    let joiner_seed = [42u8; 32];
    let joiner_key = ed25519_dalek::SigningKey::from_bytes(&joiner_seed);
    let j = local::address_of(&joiner_seed);
    let (p2p, http) = (
        std::net::SocketAddr::from(([127, 0, 0, 1], base + 8)),
        std::net::SocketAddr::from(([127, 0, 0, 1], base + 9)),
    );
    let path = dir.path().to_path_buf();
    local::runner(dir.path()).start(|ctx| async move {
        let nodes = local::start_validators(&ctx, &path, &[0, 1, 2, 3], &RunOptions::default())
            .await
            .unwrap();
        let app = nodes[0].app.clone();
        let chain = app.finalized_state().chain_id();
        let min = app.finalized_state().params().min_validator_stake;
        let tx = |key: &ed25519_dalek::SigningKey, nonce, kind| signed(chain, key, nonce, kind);
        let fund = tx(
            &faucet_key,
            0,
            TxKind::Transfer {
                to: j,
                amount: 10 * min,
            },
        );
        app.submit(fund).unwrap();
        until(&ctx, 60, "funding", || {
            app.finalized_state().account(&j).balance > 0
        })
        .await;
        app.submit(tx(&joiner_key, 0, TxKind::Stake { amount: min }))
            .unwrap();
        app.submit(tx(
            &joiner_key,
            1,
            TxKind::RegisterValidator {
                endpoint: http.to_string(),
                p2p: p2p.to_string(),
            },
        ))
        .unwrap();
        // The joiner starts with empty storage and a key no genesis validator knows.
        let joiner = local::start_joiner(
            &ctx,
            &path,
            4,
            &joiner_seed,
            p2p,
            http,
            &RunOptions::default(),
        )
        .await
        .unwrap();
        assert!(local::start_joiner(
            &ctx,
            &path,
            1,
            &joiner_seed,
            p2p,
            http,
            &RunOptions::default()
        )
        .await
        .is_err());
        // It syncs, reaches the epoch whose set includes it, and finalizes a full epoch in it.
        until(&ctx, 120, "the joiner enters the set", || {
            joiner.app.finalized_state().validator_set().contains(&j)
        })
        .await;
        let first = joiner.app.epochs().current();
        assert_eq!(first.participants.len(), 5);
        assert!(joiner.app.finalized_state().validator(&j).unwrap().p2p == p2p.to_string());
        // It caught up by fetching each epoch's last block from peers; from then on it
        // finalizes with them.
        let caught_up = app.finalized_height();
        until(&ctx, 120, "the joiner catches up", || {
            joiner.app.finalized_height() >= caught_up
        })
        .await;
        let start = app.finalized_height();
        let target = start + 3 * 4;
        until(&ctx, 120, "finality with the joiner in the set", || {
            joiner.app.finalized_height() >= target && app.finalized_height() >= target
        })
        .await;
        assert_eq!(joiner.app.blocks(0, target + 1), app.blocks(0, target + 1));
        // Its signature is in the certificates: it votes (a quorum of 5 is 4 signers, so
        // the others do not need it in each one, but over three epochs it shows up).
        assert!(joiner
            .app
            .epochs()
            .get(joiner.app.epochs().epoch_of(start + 1))
            .is_some());
        // A certificate holds the first 4 votes of 5, so on a loaded machine the joiner can
        // be the slowest for a while: scan new certificates until one carries its vote.
        let t0 = Instant::now();
        let mut next = start + 1;
        let mut with_joiner = 0;
        while with_joiner == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "no certificate of heights {}..{next} carries the joiner's signature",
                start + 1
            );
            let last = nodes[1].app.finalized_height();
            for h in next..=last {
                let Some(cert) = nodes[1]
                    .marshal
                    .get_finalization(commonware_consensus::types::Height::new(h))
                    .await
                else {
                    continue;
                };
                let set = nodes[1].app.epochs().get(cert.epoch().get()).unwrap();
                let me = set
                    .participants
                    .iter()
                    .position(|k| deai_chain::node::address(k) == j);
                let me = me.expect("the joiner stays in the set");
                if cert
                    .certificate
                    .signers
                    .iter()
                    .any(|s| s.get() as usize == me)
                {
                    with_joiner += 1;
                }
            }
            next = next.max(last + 1);
            commonware_runtime::Clock::sleep(&ctx, Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn a_staked_worker_follows_over_p2p_and_an_unstaked_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block(12);
    let model = deai_types::Hash256([5; 32]);
    let params = deai_ledger::Params {
        allowed_models: vec![model],
        ..Default::default()
    };
    local::init(
        dir.path(),
        &InitOptions {
            base_p2p_port: base,
            base_http_port: base + 4,
            epoch_length: 4,
            params,
            ..Default::default()
        },
    )
    .unwrap();
    let faucet = ed25519_dalek::SigningKey::from_bytes(
        &local::read_key(&dir.path().join("keys/faucet.key")).unwrap(),
    );
    let (worker_seed, stranger_seed) = ([51u8; 32], [52u8; 32]);
    let worker_key = ed25519_dalek::SigningKey::from_bytes(&worker_seed);
    let (w, s) = (
        local::address_of(&worker_seed),
        local::address_of(&stranger_seed),
    );
    let at = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], base + p));
    let path = dir.path().to_path_buf();
    let opts = RunOptions::default();
    local::runner(dir.path()).start(|ctx| async move {
        let nodes = local::start_validators(&ctx, &path, &[0, 1, 2, 3], &opts)
            .await
            .unwrap();
        let app = nodes[0].app.clone();
        let chain = app.finalized_state().chain_id();
        let p = app.finalized_state().params().clone();
        let tx = |key: &ed25519_dalek::SigningKey, nonce, kind| signed(chain, key, nonce, kind);
        // Both keys get funds; only the worker stakes and registers.
        for (nonce, to) in [w, s].into_iter().enumerate() {
            let amount = 10 * p.min_worker_stake;
            app.submit(tx(&faucet, nonce as u64, TxKind::Transfer { to, amount }))
                .unwrap();
        }
        until(&ctx, 60, "funding", || {
            let st = app.finalized_state();
            st.account(&w).balance > 0 && st.account(&s).balance > 0
        })
        .await;
        // The stranger runs a node from the start: funded, but neither staked nor registered.
        let stranger = local::start_joiner(&ctx, &path, 5, &stranger_seed, at(8), at(9), &opts)
            .await
            .unwrap();
        app.submit(tx(
            &worker_key,
            0,
            TxKind::Stake {
                amount: p.min_worker_stake,
            },
        ))
        .unwrap();
        app.submit(tx(
            &worker_key,
            1,
            TxKind::RegisterWorker {
                models: vec![model],
                profile: deai_ledger::state::DEFAULT_PROFILE.into(),
                hardware: "test".into(),
                price_per_1k: p.price_floor,
                endpoint: "http://127.0.0.1:1".into(),
            },
        ))
        .unwrap();
        until(&ctx, 60, "the worker's registration", || {
            app.finalized_state().worker(&w).is_some()
        })
        .await;
        // From the next epoch on, every validator admits the worker as a follower, and no
        // epoch admits the stranger.
        let worker_pk = deai_chain::node::public_key(&w).unwrap();
        let stranger_pk = deai_chain::node::public_key(&s).unwrap();
        until(&ctx, 60, "an epoch that admits the worker", || {
            nodes.iter().all(|n| {
                let e = n.app.epochs().current();
                e.followers.position(&worker_pk).is_some()
                    && e.participants.position(&worker_pk).is_none()
            })
        })
        .await;
        let follower = local::start_joiner(&ctx, &path, 6, &worker_seed, at(10), at(11), &opts)
            .await
            .unwrap();
        let tip = app.finalized_height();
        until(&ctx, 120, "the worker's node catches up", || {
            follower.app.finalized_height() >= tip + 4
        })
        .await;
        let h = follower.app.finalized_height();
        assert_eq!(follower.app.blocks(0, h + 1), app.blocks(0, h + 1));
        // It follows; it does not vote (it is in no set).
        assert!(!follower.app.finalized_state().validator_set().contains(&w));
        for n in &nodes {
            for e in 0..=n.app.epochs().current().epoch {
                let set = n.app.epochs().get(e).unwrap();
                assert!(set.followers.position(&stranger_pk).is_none());
                assert!(set.participants.position(&stranger_pk).is_none());
            }
        }
        // The stranger, dialing the same bootstrappers for all that time, got nothing.
        assert_eq!(stranger.app.finalized_height(), 0, "an unstaked key synced");
    });
}
