//! `deai chain` and `deai tx` as separate processes: a 4-validator chain in a child process,
//! transactions through the CLI, a kill and restart that keeps finalized state, and clear
//! errors for bad input.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

mod common;

/// Every child runs with a dead HTTP proxy in its environment (as on hosts that reach the
/// internet through a proxy): the CLI must still reach a node on loopback.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

fn deai(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(args)
        .env("DEAI_HOME", home)
        .env("HTTP_PROXY", DEAD_PROXY)
        .env("http_proxy", DEAD_PROXY)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `deai chain run`; its output goes to `node.log` in `home`, shown when a wait fails.
fn start(home: &std::path::Path, dir: &str) -> Node {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("node.log"))
        .unwrap();
    Node(
        Command::new(env!("CARGO_BIN_EXE_deai"))
            .args(["chain", "run", "--dir", dir])
            .env("DEAI_HOME", home)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn status(home: &std::path::Path, url: &str) -> Option<serde_json::Value> {
    let o = deai(home, &["chain", "status", "--url", url]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

fn wait_height(home: &std::path::Path, url: &str, h: u64) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        if let Some(s) = status(home, url) {
            if s["height"].as_u64().unwrap_or(0) >= h {
                return s;
            }
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let last = deai(home, &["chain", "status", "--url", url]);
            let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!(
                "chain not at height {h} after 90 s\nlast `deai chain status`: {}\nnode log (last lines, newest first):\n{tail}",
                text(&last)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn chain_runs_takes_transactions_and_survives_a_kill() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("chain");
    let dir_s = dir.to_str().unwrap();
    let base = common::free_ports(8);
    let (p2p, http) = (base.to_string(), (base + 4).to_string());
    let o = deai(
        home.path(),
        &[
            "chain",
            "init",
            "--dir",
            dir_s,
            "--p2p-port",
            &p2p,
            "--http-port",
            &http,
            // The training escrow below must outlive the whole test (kill and restart
            // included) on a slow machine: 60 blocks (the default) are a few seconds.
            "--job-timeout",
            "1000000",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // A second init is refused, with a reason.
    let o = deai(home.path(), &["chain", "init", "--dir", dir_s]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already holds a chain"), "{}", text(&o));

    let url = format!("http://127.0.0.1:{http}");
    let key = dir.join("keys/faucet.key");
    let key_s = key.to_str().unwrap();
    let to = "11".repeat(32);
    let node = start(home.path(), dir_s);
    wait_height(home.path(), &url, 1);
    let o = deai(
        home.path(),
        &[
            "tx", "--url", &url, "--key", key_s, "transfer", "--to", &to, "--amount", "777",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("finalized at height"), "{}", text(&o));
    // An action that fails on chain is reported as such (stake more than the balance).
    let o = deai(
        home.path(),
        &[
            "tx",
            "--url",
            &url,
            "--key",
            key_s,
            "stake",
            "--amount",
            "18446744073709551615",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("failed"), "{}", text(&o));
    // A training job opened from the CLI escrows its rewards under a validator coordinator.
    let vals: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/validators"))
        .unwrap()
        .json()
        .unwrap();
    let coordinator = vals["validators"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let train_job = "7a".repeat(32);
    let o = deai(
        home.path(),
        &[
            "tx",
            "--url",
            &url,
            "--key",
            key_s,
            "open-training",
            "--job",
            &train_job,
            "--checkpoint",
            &"00".repeat(32),
            "--commitment",
            &"03".repeat(32),
            "--rounds",
            "4",
            "--workers",
            "2",
            "--reward-per-round",
            "250",
            "--coordinator",
            &coordinator,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let training = || -> serde_json::Value {
        reqwest::blocking::get(format!("{url}/v1/training/{train_job}"))
            .unwrap()
            .json()
            .unwrap()
    };
    let t = training();
    assert_eq!(t["training"]["escrow"], 1000, "{t}");
    assert_eq!(t["training"]["status"], "running", "{t}");
    // The contributors' transactions from the CLI: an app (its id printed), a dataset, an
    // allowance for a gateway, a delegation; all listed by `/v1/contributors`.
    let tx = |args: &[&str]| {
        let mut all = vec!["tx", "--url", &url, "--key", key_s];
        all.extend_from_slice(args);
        let o = deai(home.path(), &all);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        text(&o)
    };
    let out = tx(&["register-app", "--name", "chat", "--fee-bps", "300"]);
    let app = out
        .lines()
        .find_map(|l| l.strip_prefix("app "))
        .unwrap()
        .trim()
        .to_string();
    tx(&[
        "register-dataset",
        "--license",
        "CC0",
        "--shard",
        &format!("{}:4096", "5a".repeat(32)),
    ]);
    tx(&[
        "authorize",
        "--gateway",
        &to,
        "--limit",
        "5000",
        "--expires",
        "100000000",
    ]);
    tx(&["delegate", "--validator", &coordinator, "--amount", "4000"]);
    let c: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/contributors"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(c["apps"][0]["id"], app.as_str(), "{c}");
    assert_eq!(c["apps"][0]["app"]["fee_bps"], 300, "{c}");
    assert_eq!(
        c["datasets"][0]["dataset"]["shards"][0]["tokens"], 4096,
        "{c}"
    );
    assert_eq!(c["gateways"][0]["allowance"]["remaining"], 5000, "{c}");
    assert_eq!(c["delegations"][0]["value"], 4000, "{c}");
    assert_eq!(c["delegated"], 4000, "{c}");
    // An app fee above the cap is refused on chain, with the reason.
    let o = deai(
        home.path(),
        &[
            "tx",
            "--url",
            &url,
            "--key",
            key_s,
            "register-app",
            "--name",
            "greedy",
            "--fee-bps",
            "9999",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("above the cap"), "{}", text(&o));
    // Only the coordinator may close a round: the faucet's attempt fails on chain.
    let o = deai(
        home.path(),
        &[
            "tx",
            "--url",
            &url,
            "--key",
            key_s,
            "train-round",
            "--job",
            &train_job,
            "--round",
            "0",
            "--checkpoint",
            &"01".repeat(32),
            "--report",
            &"02".repeat(32),
            "--coordinator-url",
            "http://127.0.0.1:9",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("coordinator"), "{}", text(&o));
    // A verdict on a round nobody proposed fails on chain with the reason.
    let o = deai(
        home.path(),
        &[
            "tx",
            "--url",
            &url,
            "--key",
            key_s,
            "train-verdict",
            "--job",
            &train_job,
            "--round",
            "0",
            "--report",
            &"02".repeat(32),
            "--verdict",
            "accept",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("active validator"), "{}", text(&o));
    // Bad input: a clear message and a failing exit code, no panic.
    for (args, want) in [
        (
            vec![
                "tx", "--url", &url, "--key", key_s, "transfer", "--to", "zz", "--amount", "1",
            ],
            "not an address",
        ),
        (
            vec![
                "tx",
                "--url",
                &url,
                "--key",
                key_s,
                "verdict",
                "--job",
                &to,
                "--verdict",
                "maybe",
            ],
            "accept or reject",
        ),
        (
            vec![
                "tx", "--url", &url, "--key", key_s, "propose", "--param", "nope", "--value", "1",
            ],
            "unknown parameter",
        ),
        (
            vec![
                "tx",
                "--url",
                "http://127.0.0.1:1",
                "--key",
                key_s,
                "stake",
                "--amount",
                "1",
            ],
            "cannot reach",
        ),
        (
            vec![
                "tx",
                "--url",
                &url,
                "--key",
                "/nonexistent/key",
                "stake",
                "--amount",
                "1",
            ],
            "reading",
        ),
        (
            vec!["chain", "run", "--dir", "/nonexistent/chain"],
            "no chain",
        ),
        (
            vec![
                "tx",
                "--url",
                &url,
                "--key",
                key_s,
                "train-round",
                "--job",
                &to,
                "--round",
                "0",
                "--checkpoint",
                &to,
                "--report",
                &to,
                "--accepted",
                "zz",
                "--coordinator-url",
                "http://127.0.0.1:9",
            ],
            "--accepted",
        ),
        // Forged equivocation evidence: the node refuses it before it reaches a block.
        (
            vec![
                "tx",
                "--url",
                &url,
                "--key",
                key_s,
                "report-equivocation",
                "--offender",
                &to,
                "--view",
                "3",
                "--evidence",
                "0a0b0c",
            ],
            "evidence does not decode",
        ),
        (
            vec![
                "tx",
                "--url",
                &url,
                "--key",
                key_s,
                "report-equivocation",
                "--offender",
                &to,
                "--view",
                "3",
                "--evidence",
                "xyz",
            ],
            "not hex",
        ),
    ] {
        let o = deai(home.path(), &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
    let before = status(home.path(), &url).unwrap();
    let h_before = before["height"].as_u64().unwrap();
    // Kill the whole process (all four validators) and restart it on the same directory.
    drop(node);
    let _node = start(home.path(), dir_s);
    let after = wait_height(home.path(), &url, h_before + 1);
    let acct = deai(home.path(), &["chain", "status", "--url", &url]);
    assert!(acct.status.success());
    // The transfer is still there, and the chain moved on from where it was.
    let c = reqwest::blocking::get(format!("{url}/v1/account/{to}")).unwrap();
    let v: serde_json::Value = c.json().unwrap();
    assert_eq!(v["account"]["balance"], 777, "{v}");
    assert_eq!(after["chain_id"], before["chain_id"]);
    assert_eq!(after["supply"], before["supply"]);
    // The training escrow survived the kill.
    assert_eq!(training()["training"]["escrow"], 1000);
}

/// A validator outside the genesis, as its own process: `deai tx` funds, stakes and
/// registers it with its p2p address, and `deai chain join` runs it; it syncs and enters an
/// epoch's set (which every node's status then shows).
#[test]
fn a_validator_joins_a_running_chain_with_chain_join() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("chain");
    let dir_s = dir.to_str().unwrap();
    let base = common::free_ports(10);
    let (p2p, http) = (base.to_string(), (base + 4).to_string());
    let o = deai(
        home.path(),
        &[
            "chain",
            "init",
            "--dir",
            dir_s,
            "--p2p-port",
            &p2p,
            "--http-port",
            &http,
            "--epoch-length",
            "4",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = deai(
        home.path(),
        &[
            "chain",
            "init",
            "--dir",
            home.path().join("bad").to_str().unwrap(),
            "--epoch-length",
            "1",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("epoch length"), "{}", text(&o));
    let url = format!("http://127.0.0.1:{http}");
    let faucet = dir.join("keys/faucet.key");
    let _node = start(home.path(), dir_s);
    wait_height(home.path(), &url, 1);
    // The joiner's key.
    let seed = [42u8; 32];
    let key = home.path().join("joiner.key");
    std::fs::write(&key, hex::encode(seed)).unwrap();
    let j = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let (jp2p, jhttp) = (
        format!("127.0.0.1:{}", base + 8),
        format!("127.0.0.1:{}", base + 9),
    );
    let tx = |key: &std::path::Path, args: &[&str]| {
        let mut all = vec!["tx", "--url", &url, "--key", key.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = deai(home.path(), &all);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    tx(&faucet, &["transfer", "--to", &j, "--amount", "1000000"]);
    tx(&key, &["stake", "--amount", "10000"]);
    // A p2p address that is not host:port fails on chain, with the reason.
    let o = deai(
        home.path(),
        &[
            "tx",
            "--url",
            &url,
            "--key",
            key.to_str().unwrap(),
            "register-validator",
            "--endpoint",
            &jhttp,
            "--p2p",
            "nowhere",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("not host:port"), "{}", text(&o));
    tx(
        &key,
        &["register-validator", "--endpoint", &jhttp, "--p2p", &jp2p],
    );
    let log = std::fs::File::create(home.path().join("joiner.log")).unwrap();
    let _joiner = Node(
        Command::new(env!("CARGO_BIN_EXE_deai"))
            .args([
                "chain",
                "join",
                "--dir",
                dir_s,
                "--key",
                key.to_str().unwrap(),
                "--index",
                "4",
                "--p2p",
                &jp2p,
                "--http",
                &jhttp,
            ])
            .env("DEAI_HOME", home.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The set grows to five at the next epoch end, as every node (the joiner too) shows.
    let jurl = format!("http://{jhttp}");
    let t0 = Instant::now();
    loop {
        let a = status(home.path(), &url);
        let b = status(home.path(), &jurl);
        if let (Some(a), Some(b)) = (a, b) {
            let has = |s: &serde_json::Value| {
                s["validator_set"]
                    .as_array()
                    .is_some_and(|v| v.len() == 5 && v.iter().any(|x| x == &j))
            };
            let (ha, hb) = (a["height"].as_u64().unwrap(), b["height"].as_u64().unwrap());
            if has(&a) && has(&b) && hb + 4 >= ha {
                assert_eq!(b["genesis_validator_set"].as_array().unwrap().len(), 4);
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let log = std::fs::read_to_string(home.path().join("joiner.log")).unwrap_or_default();
            panic!("the joiner never entered the set and caught up\njoiner log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_refused_chain_init_leaves_no_keys_behind() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("chain");
    let d = dir.to_str().unwrap();
    let o = deai(
        home.path(),
        &["chain", "init", "--dir", d, "--beacon-period", "5000"],
    );
    assert!(!o.status.success(), "accepted a 5000-block beacon period");
    assert!(text(&o).contains("beacon period 5000"), "{}", text(&o));
    assert!(
        !dir.join("keys").exists() && !dir.join("genesis.json").exists(),
        "a refused init wrote files"
    );
    // The same directory then takes a valid chain.
    let o = deai(
        home.path(),
        &["chain", "init", "--dir", d, "--beacon-period", "4"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.join("keys/validator-0.key").exists() && dir.join("genesis.json").exists());
}
