//! Two classes of work share one engine: **interactive** generation (a client is waiting on
//! every token) and **background** re-execution (a validator's prefill, whose deadline is
//! measured in blocks). When a node runs both roles on one machine, background work yields:
//! it runs in chunks, one chunk at a time across all background callers, and before each
//! chunk waits until no interactive work has run for [`IDLE_GRACE`] (a client sending its
//! next request right after an answer finds the cores free), up to a total patience, after
//! which it runs regardless so verification never starves.
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

/// How long the engine must have been free of interactive work before a background chunk
/// starts: longer than the gap between one answer's last token and the next request's
/// generation on loopback (a few ms of HTTP, escrow signing and chain reads).
pub const IDLE_GRACE: Duration = Duration::from_millis(50);

/// `now + patience`, saturating (a patience too large for the clock waits ~34 years).
pub fn deadline_after(patience: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(patience)
        .or_else(|| now.checked_add(Duration::from_secs(1 << 30)))
        .unwrap_or(now)
}

/// The CPU time the calling thread has used, from Linux's `/proc/thread-self/schedstat`
/// (nanoseconds on CPU) or, without scheduler statistics, `/proc/thread-self/stat` (user and
/// system time in the fixed 1/100 s ticks of that interface); `None` elsewhere.
pub fn thread_cpu_time() -> Option<Duration> {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = s.split_whitespace().next().and_then(|f| f.parse().ok()) {
            if ns > 0 {
                return Some(Duration::from_nanos(ns));
            }
        }
    }
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesized command name (which may hold spaces): utime and stime
    // are the 14th and 15th fields of the line, the 12th and 13th after it.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Counts running interactive work and wakes background work when it drops to zero.
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    idle: Condvar,
    /// Held by the background chunk that runs.
    background: Mutex<()>,
    /// Total time background work spent waiting, in microseconds.
    waited_us: AtomicU64,
    /// Background chunks that ran because their patience ran out, not because the engine
    /// was idle.
    forced: AtomicU64,
}

#[derive(Default)]
struct State {
    active: usize,
    /// When interactive work last ended.
    last_end: Option<Instant>,
}

/// Held while interactive work runs; dropping it lets background work go on.
pub struct Interactive<'a> {
    gate: &'a Gate,
}

impl Drop for Interactive<'_> {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        st.active = st.active.saturating_sub(1);
        if st.active == 0 {
            st.last_end = Some(Instant::now());
            self.gate.idle.notify_all();
        }
    }
}

/// A background turn: no other background work runs while it is held.
pub struct Turn<'a> {
    _one: std::sync::MutexGuard<'a, ()>,
    /// Whether the engine was idle when the turn began (false: out of patience, or none).
    pub idle: bool,
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
        self.state.lock().unwrap_or_else(|e| e.into_inner()).active += 1;
        Interactive { gate: self }
    }

    /// Interactive work running now.
    pub fn active(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).active
    }

    /// Runs `chunk` as background work: alone among background chunks, and once the engine
    /// is idle (see [`Gate::wait_idle`]) or `deadline` has passed. Returns whether it waited
    /// for idleness (false: out of patience) with the chunk's result.
    pub fn background<T>(&self, deadline: Option<Instant>, chunk: impl FnOnce() -> T) -> (bool, T) {
        let turn = self.turn(deadline);
        (turn.idle, chunk())
    }

    /// Waits for a background turn (see [`Gate::background`]) and holds it until the guard
    /// drops: for background CPU work outside the engine's kernels, such as the checks that
    /// follow a validator's prefill.
    pub fn turn(&self, deadline: Option<Instant>) -> Turn<'_> {
        let one = self.background.lock().unwrap_or_else(|e| e.into_inner());
        let idle = deadline.is_some_and(|d| self.wait_idle(d));
        Turn { _one: one, idle }
    }

    /// Blocks until no interactive work has run for [`IDLE_GRACE`] or `deadline` passes;
    /// returns whether the engine was idle (false: the patience ran out).
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let t0 = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let idle = loop {
            let now = Instant::now();
            // How long until the engine counts as idle (None: interactive work runs).
            let until_idle = match (st.active, st.last_end) {
                (0, None) => Duration::ZERO,
                (0, Some(end)) => IDLE_GRACE.saturating_sub(now.saturating_duration_since(end)),
                _ => Duration::MAX,
            };
            if until_idle.is_zero() {
                break true;
            }
            if now >= deadline {
                break false;
            }
            let wait = until_idle.min(deadline - now);
            st = match self.idle.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        };
        drop(st);
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
        let released = Instant::now();
        drop(guard);
        assert!(waiter.join().unwrap(), "released gate must report idle");
        assert!(
            released.elapsed() >= IDLE_GRACE,
            "started before the idle grace"
        );
        assert_eq!(g.active(), 0);
        assert!(g.stats().waited >= Duration::from_millis(50));
    }

    #[test]
    fn a_huge_patience_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert!(deadline_after(Duration::MAX) > now + Duration::from_secs(1 << 29));
        assert!(deadline_after(Duration::ZERO) >= now);
        // And a background turn with it returns at once on an idle engine.
        let g = Gate::default();
        assert!(g.turn(Some(deadline_after(Duration::MAX))).idle);
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
        // Just ended: not idle before the grace, idle after it.
        assert!(!g.wait_idle(Instant::now()));
        assert!(g.wait_idle(Instant::now() + IDLE_GRACE * 20));
    }

    #[test]
    fn background_chunks_run_one_at_a_time() {
        use std::sync::atomic::AtomicUsize;
        let g = Arc::new(Gate::default());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (g, running, most) = (g.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let (idle, ()) = g.background(Some(Instant::now()), || {
                            let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            running.fetch_sub(1, Ordering::SeqCst);
                        });
                        assert!(idle, "no interactive work ever ran");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
