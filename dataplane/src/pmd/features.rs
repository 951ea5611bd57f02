//! Per-port features a PMD applies on top of forwarding: policers
//! ([`crate::qos`]), local mirrors and packet capture
//! ([`crate::capture`]).
//!
//! The control thread builds one immutable [`Features`] per PMD (each PMD
//! gets its own share of a policer's rate, and its own capture rings) and
//! publishes it RCU-style through that PMD's [`FeaturesHandle`]; the PMD
//! picks it up between bursts, like the tables, and keeps its bucket state
//! across publications (a rate change is live: no port flap, and the tokens
//! a bucket holds are kept).
//!
//! Cost when a port has no feature: one byte of [`Features::flags`] read
//! per received burst and per packet sent (the wire cross-connect checks
//! it once per burst and stays a wire). The PMD's counters of these
//! features are published to [`FeaturesShared`] like its other counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::capture::CaptureRing;
use crate::qos::Profile;

use super::MAX_PORTS;

/// Police what the port receives.
pub const F_POLICE_RX: u8 = 1;
/// Police what is sent to the port.
pub const F_POLICE_TX: u8 = 2;
/// Mirror what the port receives.
pub const F_MIRROR_RX: u8 = 4;
/// Mirror what is sent to the port.
pub const F_MIRROR_TX: u8 = 8;
/// Capture what the port receives.
pub const F_CAPTURE_RX: u8 = 16;
/// Capture what is sent to the port.
pub const F_CAPTURE_TX: u8 = 32;
/// Every receive-side flag.
pub const F_RX: u8 = F_POLICE_RX | F_MIRROR_RX | F_CAPTURE_RX;
/// Every send-side flag.
pub const F_TX: u8 = F_POLICE_TX | F_MIRROR_TX | F_CAPTURE_TX;

/// Most local mirror destinations per port and direction.
pub const MAX_MIRRORS: usize = 4;

/// One port's features, as one PMD applies them.
#[derive(Debug, Clone, Default)]
pub struct PortFeatures {
    /// This PMD's share of the ingress policer.
    pub police_rx: Option<Profile>,
    /// This PMD's share of the egress policer.
    pub police_tx: Option<Profile>,
    /// Slots receiving a copy of what the port receives.
    pub mirror_rx: Vec<u16>,
    /// Slots receiving a copy of what is sent to the port.
    pub mirror_tx: Vec<u16>,
    /// This PMD's ring of the capture session on the port, if any.
    pub capture: Option<Arc<CaptureRing>>,
}

/// Everything one PMD applies, by port slot.
#[derive(Debug, Clone)]
pub struct Features {
    /// Per slot ([`MAX_PORTS`] of them).
    pub ports: Vec<PortFeatures>,
    /// Per slot, which `F_*` apply: the one byte the fast path reads.
    pub flags: Vec<u8>,
}

impl Default for Features {
    fn default() -> Self {
        Features { ports: vec![PortFeatures::default(); MAX_PORTS], flags: vec![0; MAX_PORTS] }
    }
}

impl Features {
    /// Recomputes [`Features::flags`] from the ports (capture directions
    /// are given by the caller: `capture_dirs[slot] = (rx, tx)`).
    pub fn seal(&mut self, capture_dirs: &[(bool, bool)]) {
        for (i, p) in self.ports.iter().enumerate() {
            let (crx, ctx) = capture_dirs.get(i).copied().unwrap_or((false, false));
            let mut f = 0;
            if p.police_rx.is_some() {
                f |= F_POLICE_RX;
            }
            if p.police_tx.is_some() {
                f |= F_POLICE_TX;
            }
            if !p.mirror_rx.is_empty() {
                f |= F_MIRROR_RX;
            }
            if !p.mirror_tx.is_empty() {
                f |= F_MIRROR_TX;
            }
            if p.capture.is_some() && crx {
                f |= F_CAPTURE_RX;
            }
            if p.capture.is_some() && ctx {
                f |= F_CAPTURE_TX;
            }
            if let Some(x) = self.flags.get_mut(i) {
                *x = f;
            }
        }
    }
}

/// Where the control thread publishes a PMD's [`Features`].
pub type FeaturesHandle = Arc<arc_swap::ArcSwap<Features>>;

/// Counters the PMD keeps per port for these features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureCounters {
    /// Received packets dropped by the ingress policer.
    pub policed_rx: u64,
    /// Their bytes.
    pub policed_rx_bytes: u64,
    /// Packets to send dropped by the egress policer.
    pub policed_tx: u64,
    /// Their bytes.
    pub policed_tx_bytes: u64,
    /// Mirror copies made of this port's traffic.
    pub mirrored: u64,
    /// Mirror copies that could not be made (no mbuf).
    pub mirror_failed: u64,
}

const N_COUNTERS: usize = 6;

impl FeatureCounters {
    fn to_array(self) -> [u64; N_COUNTERS] {
        [
            self.policed_rx,
            self.policed_rx_bytes,
            self.policed_tx,
            self.policed_tx_bytes,
            self.mirrored,
            self.mirror_failed,
        ]
    }

    fn from_array(a: [u64; N_COUNTERS]) -> Self {
        FeatureCounters {
            policed_rx: a[0],
            policed_rx_bytes: a[1],
            policed_tx: a[2],
            policed_tx_bytes: a[3],
            mirrored: a[4],
            mirror_failed: a[5],
        }
    }
}

/// The published copy of one PMD's [`FeatureCounters`] (one writer).
#[derive(Debug)]
pub struct FeaturesShared {
    ports: Box<[[AtomicU64; N_COUNTERS]]>,
}

impl Default for FeaturesShared {
    fn default() -> Self {
        FeaturesShared { ports: (0..MAX_PORTS).map(|_| Default::default()).collect() }
    }
}

impl FeaturesShared {
    /// Publishes (the owning PMD only).
    pub fn publish(&self, c: &[FeatureCounters]) {
        for (s, p) in self.ports.iter().zip(c) {
            for (a, v) in s.iter().zip(p.to_array()) {
                a.store(v, Relaxed);
            }
        }
    }

    /// Slot `i`'s counters.
    pub fn port(&self, i: usize) -> FeatureCounters {
        let mut a = [0; N_COUNTERS];
        if let Some(s) = self.ports.get(i) {
            for (x, v) in a.iter_mut().zip(s) {
                *x = v.load(Relaxed);
            }
        }
        FeatureCounters::from_array(a)
    }
}
