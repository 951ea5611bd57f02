//! A fixed-size learning MAC table, one per bridge per PMD.
//!
//! Open addressing with a short linear probe; allocated once at setup, never
//! on the hot path. A full probe window evicts its oldest entry, so the table
//! degrades to flooding, never to an error. Entries age out after
//! [`MacTable::max_age`] TSC ticks unless static. Per-PMD tables mean a MAC
//! learned on one PMD is unknown (flooded) on another until it is seen there
//! too: harmless for a static bridge, and the OVN pipeline replaces it.

const PROBE: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    mac: [u8; 6],
    used: bool,
    is_static: bool,
    port: u16,
    seen: u64,
}

/// A learning MAC → port table.
#[derive(Debug)]
pub struct MacTable {
    slots: Box<[Entry]>,
    mask: usize,
    max_age: u64,
}

impl MacTable {
    /// A table of `capacity` (rounded up to a power of two) entries whose
    /// learned entries expire after `max_age` ticks.
    pub fn new(capacity: usize, max_age: u64) -> Self {
        let cap = capacity.next_power_of_two().max(PROBE);
        MacTable { slots: vec![Entry::default(); cap].into_boxed_slice(), mask: cap - 1, max_age }
    }

    /// Entry lifetime in ticks.
    pub fn max_age(&self) -> u64 {
        self.max_age
    }

    #[inline]
    fn home(&self, mac: &[u8; 6]) -> usize {
        // FNV-1a over six bytes: cheap and good enough for MACs.
        let mut h: u32 = 0x811c_9dc5;
        for b in mac {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        (h as usize) & self.mask
    }

    /// Adds a static entry (never ages, never overwritten by learning).
    pub fn insert_static(&mut self, mac: [u8; 6], port: u16) {
        self.put(mac, port, 0, true);
    }

    /// Learns that `mac` is behind `port` at time `now`.
    #[inline]
    pub fn learn(&mut self, mac: [u8; 6], port: u16, now: u64) {
        // Multicast/broadcast source addresses are invalid; never learn them.
        if mac[0] & 1 != 0 {
            return;
        }
        self.put(mac, port, now, false);
    }

    #[inline]
    fn put(&mut self, mac: [u8; 6], port: u16, now: u64, is_static: bool) {
        let home = self.home(&mac);
        let mut victim = home;
        let mut oldest = u64::MAX;
        for i in 0..PROBE {
            let idx = (home + i) & self.mask;
            let e = &mut self.slots[idx];
            if e.used && e.mac == mac {
                if !e.is_static || is_static {
                    e.port = port;
                    e.seen = now;
                    e.is_static = is_static;
                }
                return;
            }
            if !e.used {
                victim = idx;
                oldest = 0;
                break;
            }
            if !e.is_static && e.seen < oldest {
                oldest = e.seen;
                victim = idx;
            }
        }
        if oldest == u64::MAX && !is_static {
            // Window full of static entries: do not learn.
            return;
        }
        self.slots[victim] = Entry { mac, used: true, is_static, port, seen: now };
    }

    /// The port behind `mac`, if known and not expired at `now`.
    #[inline]
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<u16> {
        let home = self.home(mac);
        for i in 0..PROBE {
            let e = &self.slots[(home + i) & self.mask];
            if !e.used {
                return None;
            }
            if e.mac == *mac {
                if e.is_static || now.saturating_sub(e.seen) <= self.max_age {
                    return Some(e.port);
                }
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn learn_lookup_age_and_static() {
        let mut t = MacTable::new(16, 100);
        let a = [2, 0, 0, 0, 0, 1];
        assert_eq!(t.lookup(&a, 0), None);
        t.learn(a, 3, 10);
        assert_eq!(t.lookup(&a, 50), Some(3));
        assert_eq!(t.lookup(&a, 111), None, "aged out");
        t.learn(a, 4, 200);
        assert_eq!(t.lookup(&a, 250), Some(4), "moved port");
        t.learn([1, 0, 0, 0, 0, 1], 5, 0);
        assert_eq!(t.lookup(&[1, 0, 0, 0, 0, 1], 0), None, "multicast never learned");
        let s = [2, 0, 0, 0, 0, 9];
        t.insert_static(s, 7);
        t.learn(s, 1, 5);
        assert_eq!(t.lookup(&s, u64::MAX), Some(7), "static wins and never ages");
    }

    #[test]
    fn full_table_evicts_oldest_not_static() {
        let mut t = MacTable::new(8, u64::MAX);
        for i in 0..64u8 {
            t.learn([2, 0, 0, 0, 0, i], u16::from(i), u64::from(i));
        }
        // The newest entries survive; nothing panics; lookups stay bounded.
        assert_eq!(t.lookup(&[2, 0, 0, 0, 0, 63], 64), Some(63));
        let hits = (0..64u8).filter(|i| t.lookup(&[2, 0, 0, 0, 0, *i], 64).is_some()).count();
        assert!(hits <= 8);
    }
}
