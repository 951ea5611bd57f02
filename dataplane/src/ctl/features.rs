//! Control-protocol messages of the per-port features: QoS policers
//! (`qos`), local mirrors (`mirror`) and capture (`capture`), and their
//! `petrelctl` text.
//!
//! Each is one request type with a sub-command, so the protocol grows by
//! three request names only. QoS has two sources, merged per direction:
//! what an operator set (`petrelctl qos set`, source `ctl`) wins over what
//! petrel-ovn derived from the Southbound (`Port_Binding.options:
//! qos_max_rate`/`qos_burst`, source `ovn`, replaced as a whole by
//! [`QosRequest::Sync`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::action::gre::MirrorKind;
use crate::capture::Dir;
use crate::qos::{PortQos, RateSpec, Unit};

/// Who configured a policer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QosSource {
    /// An operator, through `petrelctl`.
    #[default]
    Ctl,
    /// petrel-ovn, from the Southbound.
    Ovn,
}

/// Which side of a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What the port sends petreld (a pod's transmit).
    Ingress,
    /// What petreld sends the port (a pod's receive).
    Egress,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    /// (ingress, egress).
    pub fn sides(self) -> (bool, bool) {
        match self {
            Direction::Ingress => (true, false),
            Direction::Egress => (false, true),
            Direction::Both => (true, true),
        }
    }

    /// `ingress`, `egress`, `both`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Both => "both",
        }
    }
}

/// A `qos` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum QosRequest {
    /// Sets the given directions of a port's policers (others unchanged).
    Set {
        /// Port name.
        port: String,
        /// Directions to set (absent ones are left as they are).
        qos: PortQos,
    },
    /// Clears a port's operator-set policers (the OVN ones then apply).
    Clear {
        /// Port name.
        port: String,
        /// Which side(s).
        #[serde(default)]
        direction: Direction,
    },
    /// The policers of every port.
    Show,
    /// Replaces every OVN-derived policer (petrel-ovn), by port name.
    Sync {
        /// Port name → its policers.
        ports: BTreeMap<String, PortQos>,
    },
}

/// One port's policers and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosPortInfo {
    /// Port name.
    pub port: String,
    /// Port slot.
    pub index: u16,
    /// Set by an operator.
    pub ctl: PortQos,
    /// Derived from OVN.
    pub ovn: PortQos,
    /// In force (operator's per direction, else OVN's).
    pub effective: PortQos,
    /// PMDs sharing the ingress policer (each with its share of the rate).
    pub ingress_pmds: usize,
    /// PMDs sharing the egress policer.
    pub egress_pmds: usize,
    /// Packets dropped by the ingress policer.
    pub ingress_policed: u64,
    /// Their bytes.
    pub ingress_policed_bytes: u64,
    /// Packets dropped by the egress policer.
    pub egress_policed: u64,
    /// Their bytes.
    pub egress_policed_bytes: u64,
}

/// Reply to a `qos` request: the ports with a policer (all ports' for
/// `show`; the port's own for `set`/`clear`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosReply {
    /// Ports with any policer.
    pub ports: Vec<QosPortInfo>,
}

/// One meter of the running tables ([`crate::table::Meter`]) and what the
/// PMDs counted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterInfo {
    /// Meter id in the tables.
    pub id: u32,
    /// `set_meter <logical flow>` or the Southbound `Meter.name`.
    pub name: String,
    /// Units per second.
    pub rate: u64,
    /// Bucket size in units.
    pub burst: u64,
    /// `bits` or `packets`.
    pub unit: Unit,
    /// PMDs sharing it (each with its share of rate and burst).
    pub pmds: usize,
    /// Packets it passed (all PMDs).
    pub passed: u64,
    /// Packets it refused (counted as `meter_drop`).
    pub dropped: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

/// Reply to `meters`: every meter of the running tables, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetersReply {
    /// Meters (a meter Petrel cannot apply has none: the packets reaching
    /// it drop as `unsupported` and `petrelctl refusals` says why).
    pub meters: Vec<MeterInfo>,
}

/// `petrelctl meters`.
pub fn render_meters(r: &MetersReply) -> String {
    let mut s = String::new();
    if r.meters.is_empty() {
        return "no meters\n".into();
    }
    for m in &r.meters {
        let (u, b) = match m.unit {
            Unit::Bits => ("bit/s", "bit"),
            Unit::Packets => ("pkt/s", "pkt"),
        };
        let _ = writeln!(
            s,
            "meter {} {}: {} {u} burst {} {b} [{} PMD(s)]  passed {} dropped {} packets {} bytes",
            m.id, m.name, m.rate, m.burst, m.pmds, m.passed, m.dropped, m.dropped_bytes
        );
    }
    s
}

/// A `mirror` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MirrorRequest {
    /// Copies `src`'s traffic to `dst`.
    Add {
        /// Mirrored port.
        src: String,
        /// Port the copies are sent to.
        dst: String,
        /// Which of `src`'s traffic.
        #[serde(default)]
        direction: Direction,
    },
    /// Removes the mirrors of `src` (to `dst` only, if given).
    Del {
        /// Mirrored port.
        src: String,
        /// Only the mirror to this port.
        #[serde(default)]
        dst: Option<String>,
    },
    /// Lists the mirrors.
    List,
    /// Replaces every remote mirror session derived from OVN's Southbound
    /// `Mirror` table (petrel-ovn).
    Sync {
        /// The sessions, by mirror name.
        remote: Vec<RemoteMirror>,
    },
}

/// A remote mirror session: a Southbound `Mirror` and the petreld ports
/// it is attached to. Copies go to `sink` encapsulated in GRE or ERSPAN
/// type II ([`crate::action::gre`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMirror {
    /// `Mirror.name`.
    pub name: String,
    /// `Mirror.type`.
    pub kind: MirrorKind,
    /// `Mirror.sink`: an IPv4 or IPv6 address.
    pub sink: String,
    /// `Mirror.index`: GRE key, ERSPAN session id.
    pub index: i64,
    /// `from-lport` = [`Direction::Ingress`] (what the pod sends),
    /// `to-lport` = [`Direction::Egress`] (what it is given).
    pub direction: Direction,
    /// petreld ports whose traffic is copied.
    pub ports: Vec<String>,
}

/// A remote mirror session as petreld runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMirrorInfo {
    /// The session.
    pub mirror: Option<RemoteMirror>,
    /// Why petreld does not run it (then nothing is copied).
    #[serde(default)]
    pub refused: Option<String>,
    /// Copies sent.
    pub copies: u64,
    /// Copies not made: no mbuf.
    pub no_mbuf: u64,
    /// Copies dropped: the sink's next hop has no MAC yet (ARP sent).
    pub unresolved: u64,
    /// Copies dropped: no uplink reaches the sink.
    pub no_route: u64,
    /// Copies dropped: longer than the uplink's MTU once encapsulated.
    pub too_big: u64,
}

/// A local mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    /// Mirrored port.
    pub src: String,
    /// Destination port.
    pub dst: String,
    /// Which of `src`'s traffic.
    pub direction: Direction,
}

/// Reply to a `mirror` request: the mirrors now in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorReply {
    /// Mirrors.
    pub mirrors: Vec<MirrorInfo>,
    /// Per mirrored port: copies made, copies that found no mbuf.
    pub copies: BTreeMap<String, (u64, u64)>,
    /// Remote sessions from OVN (GRE/ERSPAN).
    #[serde(default)]
    pub remote: Vec<RemoteMirrorInfo>,
}

/// A `capture` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CaptureRequest {
    /// Starts capturing a port; the reply carries the session id.
    Start {
        /// Port name.
        port: String,
        /// Which side(s).
        #[serde(default)]
        direction: Direction,
        /// Bytes kept of each frame (default and bound in [`crate::capture`]).
        #[serde(default)]
        snaplen: Option<usize>,
    },
    /// Takes up to `max` captured frames, waiting up to `wait_ms` for one.
    Read {
        /// Session.
        id: u64,
        /// Most frames in the reply.
        max: usize,
        /// Longest wait for the first frame, in ms (bounded by the server).
        #[serde(default)]
        wait_ms: u64,
    },
    /// Ends a session (also ended when not read for a while).
    Stop {
        /// Session.
        id: u64,
    },
}

/// A captured frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedMsg {
    /// Nanoseconds since the Unix epoch.
    pub ns: u64,
    /// Direction as the port sees it.
    pub dir: Dir,
    /// Length on the wire.
    pub orig_len: u32,
    /// Captured bytes, hex.
    pub data: String,
}

/// Reply to a `capture` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureReply {
    /// Session.
    pub id: u64,
    /// Snap length.
    pub snaplen: usize,
    /// Frames, oldest first.
    pub packets: Vec<CapturedMsg>,
    /// Frames not captured so far because the rings were full.
    pub dropped: u64,
    /// The session is running.
    pub active: bool,
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Bytes of a hex string.
///
/// # Errors
/// An odd length or a non-hex digit.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16).map_err(|e| format!("hex: {e}")))
        .collect()
}

fn rate_text(r: &Option<RateSpec>) -> String {
    match r {
        None => "-".into(),
        Some(r) => {
            let (u, b) = match r.unit {
                Unit::Bits => ("bit/s", "bit"),
                Unit::Packets => ("pkt/s", "pkt"),
            };
            format!("{} {u} burst {} {b}", r.rate, r.burst())
        }
    }
}

/// `petrelctl qos show`.
pub fn render_qos(r: &QosReply) -> String {
    let mut s = String::new();
    if r.ports.is_empty() {
        return "no policers\n".into();
    }
    for p in &r.ports {
        let src = |e: &Option<RateSpec>, c: &Option<RateSpec>| if e.is_some() && e == c { "ctl" } else { "ovn" };
        let _ = writeln!(s, "port {} (index {}):", p.port, p.index);
        if p.effective.ingress.is_some() {
            let _ = writeln!(
                s,
                "  ingress {} [{}, {} PMD(s)]  policed {} packets {} bytes",
                rate_text(&p.effective.ingress),
                src(&p.effective.ingress, &p.ctl.ingress),
                p.ingress_pmds,
                p.ingress_policed,
                p.ingress_policed_bytes
            );
        }
        if p.effective.egress.is_some() {
            let _ = writeln!(
                s,
                "  egress  {} [{}, {} PMD(s)]  policed {} packets {} bytes",
                rate_text(&p.effective.egress),
                src(&p.effective.egress, &p.ctl.egress),
                p.egress_pmds,
                p.egress_policed,
                p.egress_policed_bytes
            );
        }
    }
    s
}

/// `petrelctl mirror list`.
pub fn render_mirrors(r: &MirrorReply) -> String {
    if r.mirrors.is_empty() && r.remote.is_empty() {
        return "no mirrors\n".into();
    }
    let mut s = String::new();
    for m in &r.mirrors {
        let (n, f) = r.copies.get(&m.src).copied().unwrap_or_default();
        let _ = writeln!(s, "{} -> {} ({})  copies {n} failed {f}", m.src, m.dst, m.direction.name());
    }
    for i in &r.remote {
        let Some(m) = &i.mirror else { continue };
        let filter = if m.direction == Direction::Egress { "to-lport" } else { "from-lport" };
        let id = if m.kind == MirrorKind::Gre { "key" } else { "session" };
        let _ = write!(
            s,
            "ovn {}: {} ({filter}) -> {} {} {id} {}",
            m.name,
            m.ports.join(","),
            m.kind.name(),
            m.sink,
            m.index
        );
        match &i.refused {
            Some(why) => {
                let _ = writeln!(s, "  REFUSED: {why}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "  copies {} no_mbuf {} unresolved {} no_route {} too_big {}",
                    i.copies, i.no_mbuf, i.unresolved, i.no_route, i.too_big
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_json_forms() {
        let r = QosRequest::Set {
            port: "p".into(),
            qos: PortQos { ingress: Some(RateSpec { rate: 10, burst: None, unit: Unit::Bits }), egress: None },
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"op":"set","port":"p","qos":{"ingress":{"rate":10,"unit":"bits"}}}"#);
        assert_eq!(serde_json::from_str::<QosRequest>(&j).unwrap(), r);
        let m: MirrorRequest = serde_json::from_str(r#"{"op":"add","src":"a","dst":"b"}"#).unwrap();
        assert_eq!(m, MirrorRequest::Add { src: "a".into(), dst: "b".into(), direction: Direction::Both });
    }

    #[test]
    fn test_hex_round_trip() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
