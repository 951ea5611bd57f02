//! Rate-limited logging: at most N events per second from one call site.
//!
//! What a pod or a control client does can make a log line repeat without
//! bound (a frontend that reconnects in a loop, a client sending garbage).
//! Such call sites log through [`log_limited!`] (or [`warn_limited!`] and
//! friends): each keeps a budget of N events per one-second window; events
//! over budget are counted, not written, and the next event let through
//! carries the count as its `suppressed` field, so the log says how much
//! was left out (as OVS's `VLOG_RATE_LIMIT` and the kernel's
//! `printk_ratelimit` do). A burst that is never followed by another event
//! is not summarised: the counters that accompany such logs
//! (`violations`, `disconnects`, …) hold the full count.
//!
//! Invariants: [`RateLimit::admit_at`] lets through at most `per_sec`
//! events per window, whatever the threads, takes no lock and never
//! allocates; an event whose
//! level is disabled consumes no budget. It still reads the clock, so it
//! is not for PMD poll loops, which never log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The budget of one call site. Usually a `static` made by [`log_limited!`].
#[derive(Debug)]
pub struct RateLimit {
    per_sec: u32,
    /// The current window (seconds since the clock's origin plus one,
    /// modulo 2^32; 0: none yet) in the high 32 bits, the events admitted
    /// in it in the low 32 bits: one word, so moving to a new window and
    /// resetting the count are one compare-and-swap.
    state: AtomicU64,
    /// Events refused since the last one admitted.
    suppressed: AtomicU64,
}

/// The process-wide origin of [`RateLimit::admit`]'s clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RateLimit {
    /// A budget of `per_sec` events per second (0 refuses everything).
    pub const fn new(per_sec: u32) -> Self {
        RateLimit { per_sec, state: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Whether an event may be written now: `Some(k)` if so, `k` being the
    /// number of events refused since the last one admitted; `None` if it
    /// is over budget (and then counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(epoch().elapsed())
    }

    /// [`RateLimit::admit`] at time `now` (since any fixed origin, not
    /// going backwards).
    pub fn admit_at(&self, now: Duration) -> Option<u64> {
        let w = now.as_secs().wrapping_add(1) & 0xffff_ffff;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let n = if cur >> 32 == w { cur & 0xffff_ffff } else { 0 };
            if n >= u64::from(self.per_sec) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.state.compare_exchange_weak(cur, w << 32 | (n + 1), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(now_cur) => cur = now_cur,
            }
        }
    }
}

/// A `tracing` event at `$level`, written at most `$per_sec` times per
/// second from this call site; the first one written after some were
/// refused has a `suppressed = K` field.
///
/// ```
/// use petrel_obs::log_limited;
/// use tracing::Level;
/// let port = "pod1";
/// log_limited!(Level::WARN, 5, port, "vhost-user frontend disconnected");
/// ```
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $per_sec:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new($per_sec);
        if $crate::__tracing::enabled!($level) {
            match LIMIT.admit() {
                Some(0) => $crate::__tracing::event!($level, $($arg)+),
                Some(suppressed) => $crate::__tracing::event!($level, suppressed, $($arg)+),
                None => {}
            }
        }
    }};
}

/// [`log_limited!`] at `ERROR`.
#[macro_export]
macro_rules! error_limited {
    ($per_sec:expr, $($arg:tt)+) => { $crate::log_limited!($crate::__tracing::Level::ERROR, $per_sec, $($arg)+) };
}

/// [`log_limited!`] at `WARN`.
#[macro_export]
macro_rules! warn_limited {
    ($per_sec:expr, $($arg:tt)+) => { $crate::log_limited!($crate::__tracing::Level::WARN, $per_sec, $($arg)+) };
}

/// [`log_limited!`] at `INFO`.
#[macro_export]
macro_rules! info_limited {
    ($per_sec:expr, $($arg:tt)+) => { $crate::log_limited!($crate::__tracing::Level::INFO, $per_sec, $($arg)+) };
}

/// [`log_limited!`] at `DEBUG`.
#[macro_export]
macro_rules! debug_limited {
    ($per_sec:expr, $($arg:tt)+) => { $crate::log_limited!($crate::__tracing::Level::DEBUG, $per_sec, $($arg)+) };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::logging::test_writer;

    #[test]
    fn test_budget_per_window_and_suppressed_count() {
        let rl = RateLimit::new(3);
        let t = |ms| Duration::from_millis(ms);
        let got: Vec<_> = (0..5).map(|i| rl.admit_at(t(100 + i))).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None]);
        // Next window: the first admitted event reports the two refused.
        assert_eq!(rl.admit_at(t(1_000)), Some(2));
        assert_eq!(rl.admit_at(t(1_001)), Some(0));
        assert_eq!(rl.admit_at(t(1_002)), Some(0));
        assert_eq!(rl.admit_at(t(1_003)), None);
        // A gap of several windows: a fresh budget, the refusal reported.
        assert_eq!(rl.admit_at(t(5_500)), Some(1));
    }

    #[test]
    fn test_zero_budget_refuses_everything() {
        let rl = RateLimit::new(0);
        assert_eq!(rl.admit_at(Duration::ZERO), None);
        assert_eq!(rl.admit_at(Duration::from_secs(9)), None);
    }

    #[test]
    fn test_threads_never_exceed_the_budget() {
        let rl = std::sync::Arc::new(RateLimit::new(10));
        let admitted: u64 = (0..4)
            .map(|_| {
                let rl = rl.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| rl.admit_at(Duration::from_millis(10)).is_some()).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap() as u64)
            .sum();
        assert_eq!(admitted, 10);
        assert_eq!(rl.admit_at(Duration::from_secs(1)), Some(3990));
    }

    #[test]
    fn test_macro_writes_the_budget_then_a_summary() {
        let (sub, _ctl, out) = test_writer("debug");
        tracing::subscriber::with_default(sub, || {
            let emit = |i: u32| warn_limited!(4, i, "pod misbehaved");
            for i in 0..50 {
                emit(i);
            }
            // Disabled levels consume no budget and are not counted.
            for _ in 0..50 {
                log_limited!(tracing::Level::TRACE, 1, "never written");
            }
            std::thread::sleep(Duration::from_millis(1_100));
            emit(99);
        });
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        for (i, l) in lines[..4].iter().enumerate() {
            assert!(l.contains("pod misbehaved") && l.contains(&format!("i={i}")), "{l}");
            assert!(!l.contains("suppressed"), "{l}");
        }
        assert!(lines[4].contains("suppressed=46") && lines[4].contains("i=99"), "{}", lines[4]);
        assert!(!text.contains("never written"));
    }
}
