//! Free loopback ports for local networks (`deai devnet`, benches, tests).
//!
//! A port that was free when chosen can be taken before its listener binds it. The usual
//! trick, binding port 0 and reusing the number, picks from the kernel's *ephemeral* range,
//! the same range every outgoing connection's local port comes from; a busy test machine
//! hands such a port to some client between the check and the bind ("Address already in
//! use"). So bases are chosen below the ephemeral range (read from
//! `/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 if unreadable), where only explicit
//! binds land, and a process never hands out overlapping blocks twice.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The lowest port handed out: clear of the well-known and most registered service ports.
const LOWEST: u16 = 10_000;

/// Blocks already handed out by this process, as `(first, last)` port pairs.
static TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
/// Steps through candidates, so concurrent callers start from different bases.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// The kernel's ephemeral port range, inclusive.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// The window bases are drawn from: below the ephemeral range if it leaves room, else above.
fn window(span: u16) -> Option<(u16, u16)> {
    let (lo, hi) = ephemeral_range();
    if lo > LOWEST && lo - LOWEST > span.saturating_add(100) {
        Some((LOWEST, lo - span - 1))
    } else if hi.saturating_add(span).saturating_add(100) < u16::MAX {
        Some((hi + 1, u16::MAX - span))
    } else {
        None
    }
}

/// A base port such that `base + o` is free on 127.0.0.1 for every offset `o`, outside the
/// kernel's ephemeral range and not overlapping any block this process handed out before.
/// Where the ephemeral range leaves no room (or no such block is free), falls back to blocks
/// at the kernel's own pick; errors only if that fails too.
pub fn free_port_base(offsets: &[u16]) -> std::io::Result<u16> {
    let span = offsets.iter().copied().max().unwrap_or(0);
    let Some((first, last)) = window(span) else {
        // The ephemeral range covers nearly every port: draw inside it, as before.
        return ephemeral_base(offsets);
    };
    let width = u32::from(last - first) + 1;
    // Different processes start at different places (pid, clock); calls in one process step
    // through the window by a prime stride.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    let candidates = (0..4096).map(|_| {
        let k = CALLS.fetch_add(1, Ordering::Relaxed);
        first + (seed.wrapping_add(k.wrapping_mul(7_919)) % width) as u16
    });
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(base) = first_free(offsets, candidates, &mut taken) {
        return Ok(base);
    }
    drop(taken);
    ephemeral_base(offsets)
}

/// A base from the kernel's own pick (bind port 0), when no block outside the ephemeral range
/// is free: racier (an outgoing connection may take a port before it is bound), but working.
fn ephemeral_base(offsets: &[u16]) -> std::io::Result<u16> {
    let span = offsets.iter().copied().max().unwrap_or(0);
    for _ in 0..1000 {
        let base = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = first_free(offsets, std::iter::once(base), &mut taken) {
            return Ok(b);
        }
    }
    Err(std::io::Error::other(format!(
        "found no free block of {} loopback ports",
        u32::from(span) + 1
    )))
}

/// The first candidate base whose ports are all bindable and whose block overlaps none in
/// `taken`; its block is added to `taken`.
fn first_free(
    offsets: &[u16],
    candidates: impl Iterator<Item = u16>,
    taken: &mut Vec<(u16, u16)>,
) -> Option<u16> {
    let span = offsets.iter().copied().max().unwrap_or(0);
    for base in candidates {
        let end = base.checked_add(span)?;
        if taken.iter().any(|&(a, b)| base <= b && a <= end) {
            continue;
        }
        if offsets
            .iter()
            .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        {
            taken.push((base, end));
            return Some(base);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_free_outside_the_ephemeral_range_and_never_overlap() {
        let (lo, hi) = ephemeral_range();
        let offsets: Vec<u16> = (0..5).chain(100..105).collect();
        let mut got: Vec<u16> = Vec::new();
        for _ in 0..50 {
            let b = free_port_base(&offsets).unwrap();
            assert!(
                b + 104 < lo || b > hi,
                "{b} in the ephemeral range {lo}-{hi}"
            );
            for o in &offsets {
                TcpListener::bind(("127.0.0.1", b + o)).unwrap();
            }
            assert!(
                got.iter().all(|&g| b + 104 < g || g + 104 < b),
                "{b} overlaps one of {got:?}"
            );
            got.push(b);
        }
    }

    #[test]
    fn a_bound_or_handed_out_port_is_skipped() {
        // A block of 100 free ports this test owns (no other caller gets any of them).
        let p = free_port_base(&[0, 99]).unwrap();
        let mut taken = vec![(p, p + 9)];
        // A block overlapping one handed out is skipped...
        assert_eq!(
            first_free(&[0], [p + 9, p + 20].into_iter(), &mut taken),
            Some(p + 20)
        );
        assert_eq!(taken.last(), Some(&(p + 20, p + 20)));
        // ...and so is one covering a port some listener holds.
        let _held = TcpListener::bind(("127.0.0.1", p + 40)).unwrap();
        assert_eq!(
            first_free(&[0, 1], [p + 39, p + 40, p + 41].into_iter(), &mut taken),
            Some(p + 41)
        );
        // A block that would run past port 65535 ends the search.
        assert_eq!(
            first_free(&[0, 10], [u16::MAX - 5].into_iter(), &mut taken),
            None
        );
    }
}
