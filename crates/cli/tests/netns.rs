//! Multi-host: four validators, each a `deai chain run --only i` process in its own network
//! namespace (`ip netns`), joined by veth pairs on a bridge, talking over 10.x addresses as
//! separate hosts would. Cutting one validator's link keeps the chain finalizing (3 of 4),
//! a transaction submitted meanwhile is final, and when the link comes back the cut
//! validator catches up (marshal backfill) and serves that transaction too.
//!
//! Needs root (CAP_NET_ADMIN) and the `ip` tool; skipped with a message otherwise.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const DEAD_PROXY: &str = "http://127.0.0.1:9";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespaces, veth pairs and bridge; removed on drop, processes first.
struct Hosts {
    tag: String,
    subnet: String,
    procs: Vec<(Child, std::path::PathBuf)>,
}

impl Hosts {
    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }
    fn host_link(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Creates `n` namespaces on one bridge, or `None` where this machine cannot.
    fn new(n: usize) -> Option<Hosts> {
        let pid = std::process::id();
        let h = Hosts {
            tag: format!("d{}", pid % 100_000),
            subnet: format!("10.79.{}", 20 + pid % 200),
            procs: vec![],
        };
        let br = format!("{}br", h.tag);
        let cidr = format!("{}.254/24", h.subnet);
        if !(ip(&["link", "add", &br, "type", "bridge"])
            && ip(&["addr", "add", &cidr, "dev", &br])
            && ip(&["link", "set", &br, "up"]))
        {
            drop(h);
            return None;
        }
        for i in 0..n {
            let (ns, hl, cl) = (h.ns(i), h.host_link(i), format!("{}c{i}", h.tag));
            let a = format!("{}/24", h.addr(i));
            let ok = ip(&["netns", "add", &ns])
                && ip(&["link", "add", &hl, "type", "veth", "peer", "name", &cl])
                && ip(&["link", "set", &cl, "netns", &ns])
                && ip(&["link", "set", &hl, "master", &br, "up"])
                && ip(&["netns", "exec", &ns, "ip", "addr", "add", &a, "dev", &cl])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", &cl, "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if !ok {
                drop(h);
                return None;
            }
        }
        Some(h)
    }

    fn spawn(&mut self, i: usize, log: &Path, args: &[&str]) {
        let f = std::fs::File::create(log).unwrap();
        let ns = self.ns(i);
        let mut full = vec!["netns", "exec", &ns, env!("CARGO_BIN_EXE_deai")];
        full.extend(args);
        let child = Command::new("ip")
            .args(&full)
            .env("HTTP_PROXY", DEAD_PROXY)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        self.procs.push((child, log.to_path_buf()));
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(_, p)| format!("--- {}\n{}", p.display(), common::log_tail(p, 30)))
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (c, _) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..8 {
            ip(&["netns", "del", &self.ns(i)]);
            ip(&["link", "del", &self.host_link(i)]);
        }
        ip(&["link", "del", &format!("{}br", self.tag)]);
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

fn get(url: &str) -> Option<Value> {
    http().get(url).send().ok()?.json().ok()
}

fn height(url: &str) -> u64 {
    get(&format!("{url}/v1/status"))
        .and_then(|v| v["height"].as_u64())
        .unwrap_or(0)
}

fn wait(what: &str, secs: u64, hosts: &Hosts, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s\n{}",
            hosts.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The CLI, talking to the hosts' 10.x addresses directly (no proxy would reach them).
fn deai(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deai"))
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .unwrap()
}

#[test]
fn validators_in_separate_namespaces_survive_a_cut_link_and_heal() {
    let Some(mut hosts) = Hosts::new(4) else {
        eprintln!("SKIPPED: creating network namespaces needs root and the ip tool");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chain");
    let d = dir.to_str().unwrap();
    let o = deai(&[
        "chain",
        "init",
        "--dir",
        d,
        "--p2p-port",
        "29000",
        "--http-port",
        "29100",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Each validator listens on its own host's address.
    let net_path = dir.join("network.json");
    let mut net: Value =
        serde_json::from_str(&std::fs::read_to_string(&net_path).unwrap()).unwrap();
    for (i, v) in net["validators"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        v["p2p"] = format!("{}:29000", hosts.addr(i)).into();
        v["http"] = format!("{}:29100", hosts.addr(i)).into();
    }
    std::fs::write(&net_path, serde_json::to_string_pretty(&net).unwrap()).unwrap();
    // Every host has its own copy of the chain directory (genesis, network, its key) and
    // its own storage.
    for i in 0..4 {
        let host_dir = tmp.path().join(format!("host-{i}"));
        std::fs::create_dir_all(host_dir.join("keys")).unwrap();
        for f in ["genesis.json", "network.json"] {
            std::fs::copy(dir.join(f), host_dir.join(f)).unwrap();
        }
        let k = format!("keys/validator-{i}.key");
        std::fs::copy(dir.join(&k), host_dir.join(&k)).unwrap();
        let log = tmp.path().join(format!("validator-{i}.log"));
        let hd = host_dir.to_str().unwrap().to_string();
        hosts.spawn(
            i,
            &log,
            &["chain", "run", "--dir", &hd, "--only", &i.to_string()],
        );
    }
    let url = |i: usize| format!("http://{}:29100", hosts.addr(i));
    let urls: Vec<String> = (0..4).map(url).collect();
    wait("all four validators finalize", 90, &hosts, || {
        urls.iter().all(|u| height(u) >= 3)
    });

    // Cut validator 3's link: the other three keep finalizing.
    assert!(ip(&["link", "set", &hosts.host_link(3), "down"]));
    let cut_at = height(&urls[0]);
    let to = "5a".repeat(32);
    let faucet = dir.join("keys/faucet.key");
    let o = deai(&[
        "tx",
        "--url",
        &urls[0],
        "--key",
        faucet.to_str().unwrap(),
        "transfer",
        "--to",
        &to,
        "--amount",
        "4242",
    ]);
    assert!(
        o.status.success(),
        "a transfer finalizes with one validator cut off: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    wait("three validators go on finalizing", 60, &hosts, || {
        height(&urls[0]) >= cut_at + 20
    });
    let during = height(&urls[0]);
    let cut_height = get(&format!("{}/v1/status", urls[3]));
    // The cut validator is unreachable from here too (its only link is down).
    assert!(
        cut_height.is_none(),
        "validator 3 answered through a cut link"
    );

    // Heal: it catches up and has the transfer made while it was away.
    assert!(ip(&["link", "set", &hosts.host_link(3), "up"]));
    wait("the cut validator catches up", 120, &hosts, || {
        height(&urls[3]) >= during
    });
    let acct = get(&format!("{}/v1/account/{to}", urls[3])).unwrap();
    assert_eq!(acct["account"]["balance"], 4242, "{acct}");
    let (a, b) = (
        get(&format!("{}/v1/block/{during}", urls[0])).unwrap(),
        get(&format!("{}/v1/block/{during}", urls[3])).unwrap(),
    );
    assert_eq!(a["digest"], b["digest"], "one history on both sides");
}
