//! The client against a fake chain node on loopback that checks what it is sent: a
//! signature, a chain id and a nonce, as the real node's mempool does.

use crate::blocking::ChainClient;
use anyhow::Result;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use deai_ledger::{SignedTx, TxKind};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHAIN: Hash256 = Hash256([7; 32]);

/// What the fake node holds: the finalized nonce it reports, the nonce it expects next,
/// and the transactions it finalized (id -> error).
#[derive(Default)]
struct Fake {
    reported_nonce: u64,
    expected_nonce: u64,
    finalized: HashMap<String, Option<String>>,
    refusals: u32,
    /// Transactions of the account the node holds unfinalized (its `next_nonce` counts them).
    pending: u64,
}

type Shared = Arc<Mutex<Fake>>;

async fn status() -> Json<Value> {
    Json(json!({ "chain_id": CHAIN, "height": 5 }))
}

async fn account(State(f): State<Shared>, Path(_a): Path<String>) -> Json<Value> {
    let f = f.lock().unwrap();
    let n = f.reported_nonce;
    Json(json!({
        "account": { "balance": 10, "stake": 2, "nonce": n },
        "next_nonce": n + f.pending,
    }))
}

async fn submit(
    State(f): State<Shared>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    let tx: SignedTx = serde_json::from_value(body["tx"].clone()).unwrap();
    let mut f = f.lock().unwrap();
    let bad = |e: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": e })),
        )
    };
    if tx.verify_signature().is_err() {
        return bad("bad signature");
    }
    if tx.tx.chain != CHAIN {
        return bad("wrong chain");
    }
    if tx.tx.nonce != f.expected_nonce {
        f.refusals += 1;
        // The node now reports the account's real next nonce, as after a restart.
        f.reported_nonce = f.expected_nonce;
        return bad("bad nonce");
    }
    f.expected_nonce += 1;
    let id = tx.id();
    let error = match tx.tx.kind {
        TxKind::Stake { .. } => Some("insufficient balance".to_string()),
        _ => None,
    };
    f.finalized.insert(id.to_string(), error);
    (axum::http::StatusCode::OK, Json(json!({ "id": id })))
}

async fn tx_status(State(f): State<Shared>, Path(id): Path<String>) -> Json<Value> {
    match f.lock().unwrap().finalized.get(&id) {
        Some(e) => Json(json!({ "status": "finalized", "height": 6, "error": e })),
        None => Json(json!({ "status": "pending" })),
    }
}

/// Serves the fake node on a thread of its own; returns its URL and state.
fn fake_node(fake: Fake) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(fake));
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/account/{a}", get(account))
        .route("/v1/tx", post(submit))
        .route("/v1/tx/{id}", get(tx_status))
        .with_state(shared.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (format!("http://{}", rx.recv().unwrap()), shared)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

#[test]
fn reads_typed_records() -> Result<()> {
    let (url, _) = fake_node(Fake::default());
    let c = ChainClient::new(&url)?;
    assert_eq!(c.chain_id()?, CHAIN);
    assert_eq!(c.height()?, 5);
    assert_eq!(c.account(&[1; 32])?, (10, 2, 0));
    // A route the node does not have is "absent", not an error, for optional records.
    assert_eq!(c.job(&Hash256([1; 32]))?, None);
    Ok(())
}

#[test]
fn submit_and_wait_signs_numbers_and_waits_for_finality() -> Result<()> {
    let (url, fake) = fake_node(Fake::default());
    let c = ChainClient::new(&url)?;
    let signer = c.signer(key(), 1)?;
    for amount in [1, 2, 3] {
        let f = c.submit_and_wait(
            &signer,
            TxKind::Transfer {
                to: [9; 32],
                amount,
            },
            Duration::from_secs(10),
        )?;
        assert_eq!((f.height, f.error), (6, None));
    }
    assert_eq!(fake.lock().unwrap().expected_nonce, 3);
    // An action that fails on chain is an error that names it.
    let e = c
        .submit_and_wait(
            &signer,
            TxKind::Stake { amount: 99 },
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("stake ") && e.contains("failed on chain") && e.contains("insufficient"),
        "{e}"
    );
    Ok(())
}

#[test]
fn a_drifted_nonce_is_reread_and_the_transaction_resigned_once() -> Result<()> {
    // The account already sent 4 transactions elsewhere, and the node reports 0 at first.
    let (url, fake) = fake_node(Fake {
        expected_nonce: 4,
        ..Fake::default()
    });
    let c = ChainClient::new(&url)?;
    let signer = c.signer(key(), 1)?;
    let kind = TxKind::Transfer {
        to: [9; 32],
        amount: 1,
    };
    c.submit_and_wait(&signer, kind.clone(), Duration::from_secs(10))?;
    let f = fake.lock().unwrap();
    assert_eq!((f.refusals, f.expected_nonce), (1, 5));
    Ok(())
}

#[test]
fn a_signed_but_unsubmitted_transaction_skips_the_pending_nonces() -> Result<()> {
    // Finalized nonce 3, and two transactions of the account still pending at the node:
    // a transaction signed now must take nonce 5, not repeat a pending one.
    let (url, _fake) = fake_node(Fake {
        reported_nonce: 3,
        expected_nonce: 5,
        pending: 2,
        ..Fake::default()
    });
    let c = ChainClient::new(&url)?;
    let signer = c.signer(key(), 1)?;
    let kind = TxKind::Transfer {
        to: [9; 32],
        amount: 1,
    };
    let first = c.block_on(signer.sign(kind.clone()))?;
    let second = c.block_on(signer.sign(kind))?;
    assert_eq!((first.tx.nonce, second.tx.nonce), (5, 6));
    Ok(())
}

#[test]
fn an_unreachable_node_is_a_clear_error() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ChainClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = format!("{:#}", c.status().unwrap_err());
    assert!(e.contains("cannot reach the chain"), "{e}");
}
