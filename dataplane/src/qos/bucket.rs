//! A token bucket in exact integer arithmetic, driven by the TSC.
//!
//! A [`Profile`] is immutable (published to the PMDs, like a table
//! snapshot); a [`Bucket`] is one PMD's state for one profile. Time is
//! passed in (`now`, TSC ticks), as DPDK's `rte_meter_*_check(m, p, time,
//! pkt_len)` takes it; nothing here reads a clock.
//!
//! Exactness: tokens are kept in *scaled* units, `unit × tsc_hz`, so one
//! TSC tick at `rate` units/s adds exactly `rate` scaled tokens and a packet
//! costs exactly `len × 8 × tsc_hz` (bits) or `tsc_hz` (packets). No
//! division happens on the packet path and no fraction of a token is ever
//! lost, however small the rate or however often the bucket is refilled.
//! The scaled quantities are `u128`: `ticks × rate` (both below 2^64)
//! cannot overflow, a bucket depth of `burst × tsc_hz` neither, and the one
//! addition that could (tokens plus a credit after an absurdly long idle
//! period) saturates before it is capped at the depth.
//!
//! Invariants (`debug_assert!`ed): `tokens <= depth`; `last` never moves
//! backwards (a `now` older than `last`, e.g. from a burst stamped before
//! the previous one was processed, credits nothing).

/// What a rate and a burst count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Bits of the Ethernet frame as the port sees it (no preamble,
    /// inter-frame gap or FCS): `rate` in bit/s, `burst` in bits.
    Bits,
    /// Packets: `rate` in packet/s, `burst` in packets.
    Packets,
}

/// Why a profile cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum ProfileError {
    /// the rate must be at least 1 (no rate means no policer)
    ZeroRate,
    /// the burst must be at least 1
    ZeroBurst,
    /// the TSC frequency must be known (non-zero)
    ZeroHz,
}

/// An immutable policer profile: rate, bucket depth, unit, TSC frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Units per second, which is also scaled tokens per TSC tick.
    rate: u64,
    /// Configured burst, in units.
    burst: u64,
    /// Bucket depth in scaled tokens: `burst × hz`.
    depth: u128,
    /// TSC ticks per second: the scaled cost of one unit.
    hz: u64,
    unit: Unit,
}

impl Profile {
    /// A profile of `rate` units/s with a bucket of `burst` units, on a TSC
    /// of `hz` ticks per second.
    ///
    /// # Errors
    /// A zero rate, burst or frequency.
    pub fn new(rate: u64, burst: u64, unit: Unit, hz: u64) -> Result<Self, ProfileError> {
        if rate == 0 {
            return Err(ProfileError::ZeroRate);
        }
        if burst == 0 {
            return Err(ProfileError::ZeroBurst);
        }
        if hz == 0 {
            return Err(ProfileError::ZeroHz);
        }
        Ok(Profile { rate, burst, depth: u128::from(burst) * u128::from(hz), hz, unit })
    }

    /// Units per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Bucket size in units.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// What the rate counts.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Scaled tokens a frame of `len` bytes costs.
    #[inline]
    pub fn cost(&self, len: u32) -> u128 {
        match self.unit {
            Unit::Bits => u128::from(len) * 8 * u128::from(self.hz),
            Unit::Packets => u128::from(self.hz),
        }
    }
}

/// One PMD's bucket state for a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Scaled tokens available (`<= depth` of the profile).
    tokens: u128,
    /// TSC of the last refill.
    last: u64,
}

impl Bucket {
    /// A full bucket at `now`: a policer that starts (or is enabled on a
    /// port under load) passes a burst first, so it never drops traffic that
    /// is within its profile.
    pub fn full(p: &Profile, now: u64) -> Self {
        Bucket { tokens: p.depth, last: now }
    }

    /// Credits the tokens of the ticks since the last refill, up to the
    /// bucket's depth.
    #[inline]
    pub fn refill(&mut self, p: &Profile, now: u64) {
        if now > self.last {
            let credit = u128::from(now - self.last) * u128::from(p.rate);
            self.tokens = self.tokens.saturating_add(credit).min(p.depth);
            self.last = now;
        }
        debug_assert!(self.tokens <= p.depth, "bucket over its depth");
    }

    /// Whether a frame of `len` bytes conforms at `now`; if it does its
    /// tokens are taken.
    #[inline]
    pub fn admit(&mut self, p: &Profile, now: u64, len: u32) -> bool {
        self.refill(p, now);
        let c = p.cost(len);
        if self.tokens >= c {
            self.tokens -= c;
            true
        } else {
            false
        }
    }

    /// Moves this bucket from profile `old` to `new` at `now` (a live rate
    /// change): what accrued up to `now` is credited at the old rate, then
    /// the tokens are kept, capped at the new depth, so traffic that was in
    /// profile stays so. Across a change of unit (or of TSC frequency) the
    /// old tokens mean nothing and the bucket starts full.
    pub fn rebase(&mut self, old: &Profile, new: &Profile, now: u64) {
        if old.unit != new.unit || old.hz != new.hz {
            *self = Bucket::full(new, now.max(self.last));
            return;
        }
        self.refill(old, now);
        self.tokens = self.tokens.min(new.depth);
    }

    /// Whole units available now (after the last refill), rounded down.
    pub fn tokens(&self, p: &Profile) -> u64 {
        u64::try_from(self.tokens / u128::from(p.hz)).unwrap_or(u64::MAX)
    }

    /// Scaled tokens (units × hz), for exact checks.
    pub fn scaled_tokens(&self) -> u128 {
        self.tokens
    }
}

/// The burst used when none is configured: 100 ms at the rate, and never
/// less than two 1518-byte frames (or 32 packets, one receive burst), so a
/// policer without an explicit burst passes full-size frames and bursts of
/// a poll-mode sender.
pub fn default_burst(rate: u64, unit: Unit) -> u64 {
    match unit {
        Unit::Bits => (rate / 10).max(2 * 1518 * 8),
        Unit::Packets => (rate / 10).max(32),
    }
}

/// Share `i` of `n` of an amount split exactly: `amount / n`, plus one for
/// the first `amount % n` shares, so the shares add up to `amount`. Used to
/// split a port's rate and burst between the PMDs that police it.
pub fn share(amount: u64, i: usize, n: usize) -> u64 {
    let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
    let i = u64::try_from(i).unwrap_or(u64::MAX);
    amount / n + u64::from(i < amount % n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A 1 GHz TSC: one tick is one nanosecond.
    const HZ: u64 = 1_000_000_000;

    fn p(rate: u64, burst: u64, unit: Unit) -> Profile {
        Profile::new(rate, burst, unit, HZ).unwrap()
    }

    #[test]
    fn test_full_bucket_passes_exactly_its_burst() {
        // 10 frames of 100 bytes fit in 8000 bits; the 11th does not.
        let pr = p(1_000, 8_000, Unit::Bits);
        let mut b = Bucket::full(&pr, 0);
        for i in 0..10 {
            assert!(b.admit(&pr, 0, 100), "frame {i}");
        }
        assert!(!b.admit(&pr, 0, 100));
        assert_eq!(b.scaled_tokens(), 0);
        // A refused frame takes nothing.
        assert!(!b.admit(&pr, 0, 1));
        assert_eq!(b.scaled_tokens(), 0);
    }

    #[test]
    fn test_exact_token_arithmetic_no_fraction_lost() {
        // 3 bit/s: one bit every 333.33 ms. Refilling every nanosecond for
        // a second (or any other way) must give exactly 3 bits.
        let pr = p(3, 1_000, Unit::Bits);
        let mut b = Bucket { tokens: 0, last: 0 };
        for t in (0..=HZ).step_by(7919) {
            b.refill(&pr, t);
        }
        b.refill(&pr, HZ);
        assert_eq!(b.scaled_tokens(), 3 * u128::from(HZ));
        assert_eq!(b.tokens(&pr), 3);
        // 1 byte costs 8 bits: not yet, then exactly at 8/3 s.
        assert!(!b.admit(&pr, HZ, 1));
        let t8 = HZ * 8 / 3; // 2_666_666_666 ns: 7.999999998 bits
        assert!(!b.admit(&pr, t8, 1));
        assert!(b.admit(&pr, t8 + 1, 1), "8 bits are there at 8/3 s, rounded up to the next tick");
        assert_eq!(b.scaled_tokens(), u128::from(t8 + 1) * 3 - 8 * u128::from(HZ));
    }

    #[test]
    fn test_rate_over_a_long_run_is_exact() {
        // 1 Mbit/s, 1000-byte frames offered far above the rate for 10 s:
        // exactly burst + 10 s × rate worth of frames pass.
        let pr = p(1_000_000, 80_000, Unit::Bits);
        let mut b = Bucket::full(&pr, 0);
        let mut passed = 0u64;
        // A frame every 100 µs = 80 Mbit/s offered.
        for k in 0..=100_000u64 {
            if b.admit(&pr, k * 100_000, 1000) {
                passed += 1;
            }
        }
        // 80_000 bits of burst + 10_000_000 bits of rate, 8000 bits a frame.
        assert_eq!(passed, (80_000 + 10_000_000) / 8000);
    }

    #[test]
    fn test_packets_per_second() {
        let pr = p(1000, 5, Unit::Packets);
        let mut b = Bucket::full(&pr, 0);
        let passed = (0..100).filter(|_| b.admit(&pr, 0, 1500)).count();
        assert_eq!(passed, 5, "the burst, whatever the frame size");
        // 1000 pps: one packet per millisecond.
        assert!(!b.admit(&pr, 999_999, 64));
        assert!(b.admit(&pr, 1_000_000, 9000));
    }

    #[test]
    fn test_burst_caps_idle_credit() {
        let pr = p(1_000_000, 12_000, Unit::Bits);
        let mut b = Bucket { tokens: 0, last: 0 };
        b.refill(&pr, 60 * HZ);
        assert_eq!(b.tokens(&pr), 12_000, "a minute idle credits one burst, not a minute");
    }

    #[test]
    fn test_overflow_extremes() {
        // The largest rate over the longest gap: the credit is computed in
        // u128 and the sum saturates before the cap.
        let pr = Profile::new(u64::MAX, u64::MAX, Unit::Bits, u64::MAX).unwrap();
        let mut b = Bucket::full(&pr, 0);
        b.refill(&pr, u64::MAX);
        assert_eq!(b.scaled_tokens(), u128::from(u64::MAX) * u128::from(u64::MAX));
        assert!(b.admit(&pr, u64::MAX, u32::MAX));
        // A cost larger than any depth of a small profile is refused, not wrapped.
        let small = p(1, 1, Unit::Bits);
        let mut b = Bucket::full(&small, 0);
        assert!(!b.admit(&small, u64::MAX, u32::MAX));
        assert_eq!(b.tokens(&small), 1);
    }

    #[test]
    fn test_time_going_backwards_credits_nothing() {
        let pr = p(1_000, 8_000, Unit::Bits);
        let mut b = Bucket { tokens: 0, last: 5 * HZ };
        b.refill(&pr, HZ);
        assert_eq!(b.scaled_tokens(), 0);
        b.refill(&pr, 5 * HZ + 1);
        assert_eq!(b.scaled_tokens(), 1_000, "only the tick after the last refill");
    }

    #[test]
    fn test_rate_change_keeps_tokens_and_credits_old_rate_first() {
        let old = p(1_000, 10_000, Unit::Bits);
        let mut b = Bucket { tokens: 0, last: 0 };
        // Half a second at the old rate: 500 bits, then the change.
        let new = p(1_000_000, 100_000, Unit::Bits);
        b.rebase(&old, &new, HZ / 2);
        assert_eq!(b.tokens(&new), 500);
        // From now on at the new rate: 1 ms more = 1000 bits.
        b.refill(&new, HZ / 2 + 1_000_000);
        assert_eq!(b.tokens(&new), 1_500);
        // A smaller burst caps what is there.
        let tiny = p(1_000_000, 100, Unit::Bits);
        b.rebase(&new, &tiny, HZ / 2 + 1_000_000);
        assert_eq!(b.tokens(&tiny), 100);
        // A change of unit starts full.
        let pps = p(10, 3, Unit::Packets);
        b.rebase(&tiny, &pps, HZ);
        assert_eq!(b.tokens(&pps), 3);
    }

    #[test]
    fn test_profile_rejects_zero() {
        assert_eq!(Profile::new(0, 1, Unit::Bits, HZ), Err(ProfileError::ZeroRate));
        assert_eq!(Profile::new(1, 0, Unit::Bits, HZ), Err(ProfileError::ZeroBurst));
        assert_eq!(Profile::new(1, 1, Unit::Bits, 0), Err(ProfileError::ZeroHz));
    }

    #[test]
    fn test_share_adds_up() {
        for (amount, n) in [(10u64, 3usize), (1, 4), (1_000_000_007, 7), (5, 1)] {
            let total: u64 = (0..n).map(|i| share(amount, i, n)).sum();
            assert_eq!(total, amount, "{amount} over {n}");
            let (lo, hi) = (share(amount, n - 1, n), share(amount, 0, n));
            assert!(hi - lo <= 1);
        }
    }

    #[test]
    fn test_default_burst() {
        assert_eq!(default_burst(1_000_000, Unit::Bits), 100_000);
        assert_eq!(default_burst(1_000, Unit::Bits), 24_288);
        assert_eq!(default_burst(100, Unit::Packets), 32);
    }
}
