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
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base < 60_000
            && offsets
                .iter()
                .all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
