//! Two classes of work share one engine: **interactive** generation (a client is waiting on
//! every token) and **background** re-execution (a validator's prefill, whose deadline is
//! measured in blocks). When a node runs both roles on one machine, background work yields:
//! it runs in chunks, and before each chunk waits while any interactive work is running,
//! up to a total patience, after which it runs regardless so verification never starves.
//!
//! Yielding changes only *when* a chunk runs, never what it computes: a chunked prefill
//! gives the same bits as a one-shot prefill (tested in `tests/invariance.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Tokens per background chunk: small enough that an interactive request arriving while a
/// chunk runs waits for at most one chunk (~16 prefill positions), large enough to keep the
/// prefill kernels' 4-row tiles full.
pub const BACKGROUND_CHUNK: usize = 16;

/// Counts running interactive work and wakes background work when it drops to zero.
#[derive(Default)]
pub struct Gate {
    active: Mutex<usize>,
    idle: Condvar,
    /// Total time background work spent waiting, in microseconds.
    waited_us: AtomicU64,
    /// Background chunks that ran because their patience ran out, not because the engine
    /// was idle.
    forced: AtomicU64,
}

/// Held while interactive work runs; dropping it lets background work go on.
pub struct Interactive<'a> {
    gate: &'a Gate,
}

impl Drop for Interactive<'_> {
    fn drop(&mut self) {
        let mut n = self.gate.active.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.gate.idle.notify_all();
        }
    }
}

/// What background work waited for so far on one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct YieldStats {
    pub waited: Duration,
    pub forced_chunks: u64,
}

impl Gate {
    /// Marks interactive work as running until the guard drops.
    pub fn interactive(&self) -> Interactive<'_> {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Interactive { gate: self }
    }

    /// Interactive work running now.
    pub fn active(&self) -> usize {
        *self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until no interactive work runs or `deadline` passes; returns whether the
    /// engine was idle (false: the patience ran out).
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let t0 = Instant::now();
        let mut n = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let idle = loop {
            if *n == 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            n = match self.idle.wait_timeout(n, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        };
        drop(n);
        let us = t0.elapsed().as_micros().min(u64::MAX as u128) as u64;
        self.waited_us.fetch_add(us, Ordering::Relaxed);
        if !idle {
            self.forced.fetch_add(1, Ordering::Relaxed);
        }
        idle
    }

    pub fn stats(&self) -> YieldStats {
        YieldStats {
            waited: Duration::from_micros(self.waited_us.load(Ordering::Relaxed)),
            forced_chunks: self.forced.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wait_idle_returns_at_once_when_idle_and_on_release() {
        let g = Arc::new(Gate::default());
        assert!(g.wait_idle(Instant::now()));
        let guard = g.interactive();
        assert_eq!(g.active(), 1);
        // Patience already spent: does not block, reports not idle.
        assert!(!g.wait_idle(Instant::now()));
        assert_eq!(g.stats().forced_chunks, 1);
        let g2 = g.clone();
        let waiter =
            std::thread::spawn(move || g2.wait_idle(Instant::now() + Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "background work ran while interactive work was active"
        );
        drop(guard);
        assert!(waiter.join().unwrap(), "released gate must report idle");
        assert_eq!(g.active(), 0);
        assert!(g.stats().waited >= Duration::from_millis(50));
    }

    #[test]
    fn nested_interactive_work_counts() {
        let g = Gate::default();
        let a = g.interactive();
        let b = g.interactive();
        drop(a);
        assert_eq!(g.active(), 1);
        assert!(!g.wait_idle(Instant::now() + Duration::from_millis(20)));
        drop(b);
        assert!(g.wait_idle(Instant::now()));
    }
}
