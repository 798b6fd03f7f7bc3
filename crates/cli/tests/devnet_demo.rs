//! The README's first command, `deai devnet --demo`, as a process: the whole network comes
//! up, answers one chat request, and the validators accept the receipt and settle the job.
//! With `--cheater fake-proof` and one worker, the same demo ends with a rejected receipt
//! and a failing exit code.
//!
//! Needs the real model (`DEAI_MODEL_PATH`, set by `scripts/test.sh`; `DEAI_HOME` holds it).

use std::process::{Command, Output};

mod common;

fn model_available() -> bool {
    match std::env::var_os("DEAI_MODEL_PATH") {
        Some(p) if !p.is_empty() => true,
        _ => {
            eprintln!("SKIPPED: set DEAI_MODEL_PATH (and DEAI_HOME) to run the devnet demo");
            false
        }
    }
}

fn demo(extra: &[&str]) -> (Output, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_deai"))
        .args([
            "devnet",
            "--demo",
            "--port-base",
            &common::free_devnet_base().to_string(),
        ])
        .args(extra)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o, text)
}

#[test]
fn devnet_demo_answers_and_settles() {
    if !model_available() {
        return;
    }
    let (o, text) = demo(&[]);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("Paris"), "{text}");
    for want in [
        "validators' verdict: \"accepted\"",
        "receipt digest on chain matches: true",
        "finalized at height",
        "balances that moved",
        "worker-",
        // The client kept its key (the gateway spent its allowance) and the request named
        // the demo app: the model's author and the app's owner were paid (the gateway's fee
        // about pays its transaction fee at this price: see the shares line).
        "model author",
        "app owner",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let shares = text
        .lines()
        .find(|l| l.contains("shares: worker"))
        .unwrap_or_else(|| panic!("no shares line in:\n{text}"));
    for part in ["model royalty", "app", "gateway"] {
        let n: u64 = shares
            .split(&format!("{part} "))
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "{part} was paid nothing: {shares}");
    }
    // At least three of the four validators accepted (quorum is > 2/3 of stake).
    assert!(text.matches("  accept").count() >= 3, "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn devnet_demo_with_a_cheating_worker_shows_the_rejection() {
    if !model_available() {
        return;
    }
    let (o, text) = demo(&["--workers", "1", "--cheater", "fake-proof"]);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("validators' verdict: \"rejected\""), "{text}");
    assert!(text.contains("the receipt was \"rejected\""), "{text}");
    // The client got its escrow back except the fee; the worker lost stake.
    assert!(text.contains("balances that moved"), "{text}");
    // Bad flags are refused before anything starts.
    let (o, text) = demo(&["--cheater", "nope"]);
    assert!(!o.status.success());
    assert!(text.contains("unknown --cheater"), "{text}");
    let (o, text) = demo(&["--workers", "0"]);
    assert!(!o.status.success());
    assert!(text.contains("--workers must be"), "{text}");
}
