//! [`Guarded`]: state shared between one polling thread (the PMD that owns
//! a vring) and the management thread, without a lock on the poll side.
//!
//! The poller *tries* to enter ([`Guarded::enter`]): one compare-and-swap on
//! `busy`, then a check of `live`. It never waits: when the cell is not live
//! or another poller is inside, it gets `None` and moves on. The management
//! thread *quiesces* ([`Guarded::quiesce`]): it clears `live`, then waits
//! until no poller is inside. Both sides use sequentially consistent
//! operations, so (Dekker) either the poller sees `live == false` or the
//! manager sees `busy == true` and waits: they are never inside together.
//! While quiesced the manager has the state to itself ([`Quiesced`]), and
//! [`Quiesced::resume`] publishes its writes with `live` (release).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cell owned alternately by a poller and the management thread.
#[derive(Debug)]
pub struct Guarded<T> {
    busy: AtomicBool,
    live: AtomicBool,
    cell: UnsafeCell<T>,
}

// SAFETY: access to `cell` is exclusive by the protocol above (one side at a
// time, handed over with SeqCst/Release/Acquire atomics); T moves between
// threads, hence T: Send.
unsafe impl<T: Send> Sync for Guarded<T> {}

/// The poller's exclusive access; leaving drops it.
#[derive(Debug)]
pub struct Entered<'a, T> {
    g: &'a Guarded<T>,
}

/// The manager's exclusive access to a quiesced cell.
#[derive(Debug)]
pub struct Quiesced<'a, T> {
    g: &'a Guarded<T>,
}

impl<T> Guarded<T> {
    /// A new, not live cell.
    pub fn new(v: T) -> Self {
        Guarded { busy: AtomicBool::new(false), live: AtomicBool::new(false), cell: UnsafeCell::new(v) }
    }

    /// Whether pollers may enter.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Poller side: exclusive access if the cell is live and nobody else is inside.
    #[inline]
    pub fn enter(&self) -> Option<Entered<'_, T>> {
        if !self.live.load(Ordering::Relaxed) {
            return None; // cheap early out for idle ports
        }
        if self.busy.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return None;
        }
        if !self.live.load(Ordering::SeqCst) {
            self.busy.store(false, Ordering::Release);
            return None;
        }
        Some(Entered { g: self })
    }

    /// Manager side: stops pollers and waits (spinning, then yielding) until
    /// the one inside, if any, has left. Call only from the management thread.
    pub fn quiesce(&self) -> Quiesced<'_, T> {
        self.live.store(false, Ordering::SeqCst);
        let mut spins = 0u32;
        // Take `busy` ourselves so no poller can enter between our check and our use.
        while self.busy.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Quiesced { g: self }
    }
}

impl<T> std::ops::Deref for Entered<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: we hold `busy` with `live` seen true: exclusive access (module doc).
        unsafe { &*self.g.cell.get() }
    }
}

impl<T> std::ops::DerefMut for Entered<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self makes this the only reference.
        unsafe { &mut *self.g.cell.get() }
    }
}

impl<T> Drop for Entered<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.g.busy.store(false, Ordering::Release);
    }
}

impl<T> std::ops::Deref for Quiesced<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the manager holds `busy` with `live` false: no poller is inside or can enter.
        unsafe { &*self.g.cell.get() }
    }
}

impl<T> std::ops::DerefMut for Quiesced<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self makes this the only reference.
        unsafe { &mut *self.g.cell.get() }
    }
}

impl<T> Quiesced<'_, T> {
    /// Lets pollers in again, publishing every write made while quiesced.
    pub fn resume(self) {
        self.g.live.store(true, Ordering::SeqCst);
        // Drop releases `busy`.
    }
}

impl<T> Drop for Quiesced<'_, T> {
    fn drop(&mut self) {
        self.g.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn test_exclusive() {
        let g = Arc::new(Guarded::new(0u64));
        assert!(g.enter().is_none(), "not live yet");
        g.quiesce().resume();
        let stop = Arc::new(AtomicBool::new(false));
        let (g2, stop2) = (Arc::clone(&g), Arc::clone(&stop));
        let poller = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                if let Some(mut e) = g2.enter() {
                    // A torn update would be seen by the manager below.
                    *e += 1;
                    *e += 1;
                    n += 2;
                }
            }
            n
        });
        for _ in 0..2000 {
            let q = g.quiesce();
            assert_eq!(*q % 2, 0);
            q.resume();
        }
        stop.store(true, Ordering::Relaxed);
        let n = poller.join().expect("poller");
        assert_eq!(*g.quiesce(), n);
    }
}
