//! Quality of service: token-bucket policers on the ports of petreld, and
//! the per-PMD state of the tables' meters ([`meter`]: OVN `set_meter`,
//! Southbound `Meter` rows), built on the same [`bucket`].
//!
//! A port may have a policer in each direction:
//!
//! - **ingress**: what petreld receives from the port (a pod's transmit,
//!   OVN's `Port_Binding.options:qos_max_rate`/`qos_burst`, which is what
//!   Kube-OVN's rate annotations become: OVN limits traffic *from* the
//!   logical port);
//! - **egress**: what petreld sends to the port (a pod's receive).
//!
//! A frame over the profile is dropped and counted as `qos_policed`; a
//! conforming frame goes on untouched. Rates are in bit/s of the Ethernet
//! frame as the port carries it (no preamble, gap or FCS) or in packet/s.
//!
//! State: a [`bucket::Profile`] is immutable and published to the PMDs
//! (RCU, like the tables); each PMD keeps its own [`bucket::Bucket`] per
//! port and direction and updates it with plain integer arithmetic: no
//! atomics, locks or allocation on the packet path.
//!
//! **A port served by several PMDs.** Every PMD has its own tx queue on
//! every port and polls some of its rx queues (see `portset`), so a port's
//! traffic in one direction may pass through several PMDs. Each such PMD
//! polices with its own bucket holding an exact share of the rate and of
//! the burst ([`bucket::share`]): ingress is split between the PMDs that
//! poll one of the port's rx queues, egress between all PMDs (any of them
//! may send to the port). The sum of the shares is the configured rate, so
//! the port never exceeds it; when the traffic is unevenly spread over the
//! PMDs the port may get less than its rate (each share is a hard limit).
//! With one PMD (or a single-queue port's ingress) the bucket is exact.
//! Sharing one bucket between PMDs would need an atomic read-modify-write
//! per packet on a shared cache line, which the fast path never does.

pub mod bucket;
pub mod meter;

pub use self::bucket::{default_burst, share, Bucket, Profile, ProfileError, Unit};

/// A policer as configured: a rate and an optional burst (else
/// [`default_burst`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RateSpec {
    /// Units per second (bit/s or packet/s); at least 1.
    pub rate: u64,
    /// Bucket size in units; `None`: [`default_burst`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// What `rate` and `burst` count.
    pub unit: Unit,
}

impl RateSpec {
    /// The burst in force: the configured one or the default.
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or_else(|| default_burst(self.rate, self.unit))
    }

    /// PMD `i`'s profile when `n` PMDs share this policer (see the module
    /// docs), on a TSC of `hz`.
    ///
    /// # Errors
    /// A zero rate or burst share (a rate below the number of PMDs).
    pub fn profile(&self, i: usize, n: usize, hz: u64) -> Result<Profile, ProfileError> {
        Profile::new(share(self.rate, i, n), share(self.burst(), i, n), self.unit, hz)
    }
}

/// The policers of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortQos {
    /// Policer of what the port sends petreld (the pod's transmit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<RateSpec>,
    /// Policer of what petreld sends the port (the pod's receive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<RateSpec>,
}

impl PortQos {
    /// No policer at all.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// Checks that each policer can be split between `n` PMDs.
    ///
    /// # Errors
    /// What is wrong, for the operator.
    pub fn validate(&self, n_pmd: usize) -> Result<(), String> {
        for (dir, r) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            if let Some(r) = r {
                let n = u64::try_from(n_pmd.max(1)).unwrap_or(u64::MAX);
                if r.rate < n {
                    return Err(format!("{dir} rate {} is below 1 per PMD ({n} PMDs)", r.rate));
                }
                if r.burst() < n {
                    return Err(format!("{dir} burst {} is below 1 per PMD ({n} PMDs)", r.burst()));
                }
            }
        }
        Ok(())
    }
}

/// Parses a rate or size with an optional SI suffix: `1500`, `10k`, `2.5M`,
/// `1G` (powers of 1000, as `tc` and OVN count bit rates).
///
/// # Errors
/// Not a number, or out of range.
pub fn parse_si(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000u64),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000),
        Some((i, 't' | 'T')) => (&t[..i], 1_000_000_000_000),
        _ => (t, 1),
    };
    let bad = || format!("{s:?} is not a number (e.g. 1500, 10k, 2.5M, 1G)");
    match num.split_once('.') {
        None => num.parse::<u64>().map_err(|_| bad())?.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large")),
        Some((whole, frac)) => {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let w: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
            let f: u64 = frac.parse().map_err(|_| bad())?;
            let scale = 10u64.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
            // Exact when the fraction is a whole number of units.
            let fu = u128::from(f) * u128::from(mult);
            if fu % u128::from(scale) != 0 {
                return Err(format!("{s:?} is not a whole number of units"));
            }
            let fu = u64::try_from(fu / u128::from(scale)).map_err(|_| bad())?;
            w.checked_mul(mult).and_then(|x| x.checked_add(fu)).ok_or_else(|| format!("{s:?} is too large"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_parse_si() {
        assert_eq!(parse_si("1500"), Ok(1500));
        assert_eq!(parse_si("10k"), Ok(10_000));
        assert_eq!(parse_si("2.5M"), Ok(2_500_000));
        assert_eq!(parse_si("1G"), Ok(1_000_000_000));
        assert_eq!(parse_si(".5k"), Ok(500));
        assert!(parse_si("1.0005k").is_err(), "half a bit");
        assert!(parse_si("M").is_err());
        assert!(parse_si("-1").is_err());
        assert!(parse_si("20000000000T").is_err());
    }

    #[test]
    fn test_profile_shares_add_up_to_the_rate() {
        let r = RateSpec { rate: 1_000_001, burst: Some(10_001), unit: Unit::Bits };
        let ps: Vec<Profile> = (0..3).map(|i| r.profile(i, 3, 1_000).unwrap()).collect();
        assert_eq!(ps.iter().map(Profile::rate).sum::<u64>(), 1_000_001);
        assert_eq!(ps.iter().map(Profile::burst).sum::<u64>(), 10_001);
        let q = PortQos { ingress: Some(RateSpec { rate: 2, burst: Some(8), unit: Unit::Packets }), egress: None };
        assert!(q.validate(2).is_ok());
        assert!(q.validate(3).unwrap_err().contains("below 1 per PMD"));
    }
}
