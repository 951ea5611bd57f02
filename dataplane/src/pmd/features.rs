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
//! Remote mirrors (OVN's Southbound `Mirror`: GRE / ERSPAN to a sink
//! address) share the mirror flags with local ones: a port's
//! [`PortFeatures::remote_rx`]/[`PortFeatures::remote_tx`] name sessions
//! of [`Features::remote`] by slot. The ERSPAN sequence number is one
//! atomic counter shared by every PMD and every ERSPAN session, exactly as
//! in OVS's userspace datapath, where all `erspan` interfaces are one
//! datapath port (`erspan_sys`) whose netdev holds the one `gre_seqno`
//! (so a session's numbers have gaps when several run); it is touched only
//! when an ERSPAN copy is sent.
//!
//! Cost when a port has no feature: one byte of [`Features::flags`] read
//! per received burst and per packet sent (the wire cross-connect checks
//! it once per burst and stays a wire). The PMD's counters of these
//! features are published to [`FeaturesShared`] like its other counters.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::action::gre::MirrorKind;
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
/// Most remote mirror sessions (and per port and direction).
pub const MAX_REMOTE: usize = 32;

/// A remote mirror session, as every PMD sees it.
#[derive(Debug, Clone)]
pub struct RemoteSink {
    /// GRE or ERSPAN.
    pub kind: MirrorKind,
    /// The sink (IPv4-mapped or IPv6).
    pub ip: [u8; 16],
    /// GRE key / ERSPAN session id and index.
    pub index: u32,
    /// The next ERSPAN sequence number (shared by the PMDs and sessions).
    pub seq: Arc<AtomicU32>,
    /// Which session this is (a slot given to another session gets a new
    /// number, and its counters start from zero).
    pub instance: u64,
}

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
    /// Remote sessions (indexes into [`Features::remote`]) copying what the
    /// port receives (OVN `from-lport`).
    pub remote_rx: Vec<u8>,
    /// Remote sessions copying what is sent to the port (`to-lport`).
    pub remote_tx: Vec<u8>,
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
    /// Remote mirror sessions by session slot (at most [`MAX_REMOTE`];
    /// `None`: a free slot).
    pub remote: Vec<Option<RemoteSink>>,
}

impl Default for Features {
    fn default() -> Self {
        Features { ports: vec![PortFeatures::default(); MAX_PORTS], flags: vec![0; MAX_PORTS], remote: Vec::new() }
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
            if !p.mirror_rx.is_empty() || !p.remote_rx.is_empty() {
                f |= F_MIRROR_RX;
            }
            if !p.mirror_tx.is_empty() || !p.remote_tx.is_empty() {
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

/// Counters the PMD keeps per remote mirror session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteCounters {
    /// Copies sent.
    pub copies: u64,
    /// Copies not made: no mbuf.
    pub no_mbuf: u64,
    /// Copies dropped: next hop unresolved.
    pub unresolved: u64,
    /// Copies dropped: no uplink reaches the sink.
    pub no_route: u64,
    /// Copies dropped: too big for the uplink's MTU.
    pub too_big: u64,
}

const N_REMOTE_COUNTERS: usize = 5;

impl RemoteCounters {
    fn to_array(self) -> [u64; N_REMOTE_COUNTERS] {
        [self.copies, self.no_mbuf, self.unresolved, self.no_route, self.too_big]
    }

    fn from_array(a: [u64; N_REMOTE_COUNTERS]) -> Self {
        RemoteCounters { copies: a[0], no_mbuf: a[1], unresolved: a[2], no_route: a[3], too_big: a[4] }
    }

    /// Adds `o`.
    pub fn add(&mut self, o: &RemoteCounters) {
        self.copies += o.copies;
        self.no_mbuf += o.no_mbuf;
        self.unresolved += o.unresolved;
        self.no_route += o.no_route;
        self.too_big += o.too_big;
    }
}

/// The published copy of one PMD's [`FeatureCounters`] (one writer).
#[derive(Debug)]
pub struct FeaturesShared {
    ports: Box<[[AtomicU64; N_COUNTERS]]>,
    remote: Box<[[AtomicU64; N_REMOTE_COUNTERS]]>,
}

impl Default for FeaturesShared {
    fn default() -> Self {
        FeaturesShared {
            ports: (0..MAX_PORTS).map(|_| Default::default()).collect(),
            remote: (0..MAX_REMOTE).map(|_| Default::default()).collect(),
        }
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

    /// Publishes the remote sessions' counters (the owning PMD only).
    pub fn publish_remote(&self, c: &[RemoteCounters]) {
        for (s, p) in self.remote.iter().zip(c) {
            for (a, v) in s.iter().zip(p.to_array()) {
                a.store(v, Relaxed);
            }
        }
    }

    /// Remote session slot `i`'s counters.
    pub fn remote(&self, i: usize) -> RemoteCounters {
        let mut a = [0; N_REMOTE_COUNTERS];
        if let Some(s) = self.remote.get(i) {
            for (x, v) in a.iter_mut().zip(s) {
                *x = v.load(Relaxed);
            }
        }
        RemoteCounters::from_array(a)
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
