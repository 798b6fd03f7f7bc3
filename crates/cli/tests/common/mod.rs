//! Helpers shared by the process-level tests: free loopback ports and log tails.
// Each test binary uses only some of these.
#![allow(dead_code)]

use std::path::Path;

/// A port base with `base..base+n` free on 127.0.0.1.
pub fn free_ports(n: u16) -> u16 {
    free_base_with((0..n).collect())
}

/// A port base with a devnet's ports free: chain p2p on `base..base+4`, chain HTTP on
/// `base+100..+104`, gateway and workers on `base+200..+203`.
pub fn free_devnet_base() -> u16 {
    free_base_with((0..5).chain(100..105).chain(200..204).collect())
}

fn free_base_with(offsets: Vec<u16>) -> u16 {
    deai_chain::ports::free_port_base(&offsets).unwrap()
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A child process killed (and reaped) when dropped, passing test or not.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `deai devnet --dir DIR` on free ports, its output in `log`; returns once `devnet.json`
/// exists and `ready(http, info)` holds (panicking with the log's tail if the devnet exits
/// or `timeout` passes first). Returns the process and `devnet.json`.
pub fn start_devnet(
    exe: &str,
    dir: &Path,
    log: &Path,
    timeout: std::time::Duration,
    ready: impl Fn(&reqwest::blocking::Client, &serde_json::Value) -> bool,
) -> (Killed, serde_json::Value) {
    let out = std::fs::File::create(log).unwrap();
    let t0 = std::time::Instant::now();
    let mut devnet = Killed(
        std::process::Command::new(exe)
            .args(["devnet", "--dir", dir.to_str().unwrap()])
            .args(["--port-base", &free_devnet_base().to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    loop {
        if let Some(status) = devnet.0.try_wait().unwrap() {
            panic!(
                "`deai devnet` exited early ({status})\ndevnet log (last lines):\n{}",
                log_tail(log, 60)
            );
        }
        let info = std::fs::read(dir.join("devnet.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(info) = info {
            if ready(&http, &info) {
                eprintln!("devnet up in {:.1?}", t0.elapsed());
                return (devnet, info);
            }
        }
        if t0.elapsed() > timeout {
            panic!(
                "the devnet was not ready within {timeout:?}\ndevnet log (last lines):\n{}",
                log_tail(log, 60)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Runs `python3 SCRIPT ARGS` with loopback exempt from proxies, its output in a file (read
/// after it ends, so a full pipe cannot stall it), within `timeout`. Returns its success
/// (`None` when it was killed at the timeout) and its output.
pub fn run_python(
    script: &Path,
    args: &[&str],
    out_path: &Path,
    timeout: std::time::Duration,
) -> (Option<bool>, String) {
    let out = std::fs::File::create(out_path).unwrap();
    let t0 = std::time::Instant::now();
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s.success());
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    (
        status,
        std::fs::read_to_string(out_path).unwrap_or_default(),
    )
}
