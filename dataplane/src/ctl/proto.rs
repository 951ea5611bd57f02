//! The control socket's messages and framing.
//!
//! # Frame
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  magic "PTRL" (0x5054524c)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     protocol major version    |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+    body length (bytes)        +
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  body: one JSON value (UTF-8) ...
//! ```
//!
//! All header integers are big-endian; the header is [`HEADER_LEN`] bytes.
//! A body is at most [`MAX_FRAME`] bytes unless both ends agree on less.
//!
//! # Why JSON
//!
//! The body is JSON (serde_json): it can be read and written by hand with
//! `socat` and `jq` while debugging a node, it needs no schema compiler and
//! no shared generated code between `petrel-ovn`, `petrelctl` and other
//! tools, and unknown fields are ignored, so minor versions can add fields.
//! The largest message is a full snapshot: at the scale DESIGN.md targets
//! (30k rules) about 10 MB, which serde_json encodes and decodes in well
//! under a second (test `a_30k_rule_snapshot_is_a_few_megabytes_of_json`,
//! debug build), on the management thread and never on the fast path;
//! incremental [`Change`]s keep the common case small. Should snapshots
//! outgrow that, a binary body can come as a new major version. 128-bit values are hex strings (`"0x0a000001"`), since
//! JSON numbers beyond 2^53 and serde's buffered enums do not carry them.
//!
//! # Exchange
//!
//! The client sends [`Request`]s; every request gets exactly one
//! [`Response`], in order. The first request of a connection should be
//! [`Request::Hello`]; a client whose major version differs from
//! [`PROTOCOL_MAJOR`] (in the frame header or in `Hello`) gets
//! [`ErrorCode::IncompatibleVersion`] and the connection is closed. A
//! malformed frame, an oversized length, bad JSON or an unknown request
//! get an error reply too, and then that connection (only) is closed,
//! since the stream can no longer be trusted to be in step.
//!
//! Snapshots travel as [`SnapshotMsg`], an explicit wire form converted
//! to and from [`table::Snapshot`](crate::table::Snapshot), so the table
//! contract does not depend on serde and the wire form can stay stable
//! while the in-memory form changes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::drop::DropReason;
use crate::table::{self, Action, Binding, Field, Key, Rule, SlowPathReason, Snapshot, Stage};

/// `"PTRL"`.
pub const MAGIC: [u8; 4] = *b"PTRL";
/// Major version: a client with another major version is refused.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Minor version: additions that older peers can ignore.
pub const PROTOCOL_MINOR: u16 = 3;
/// Header size: magic, major version, body length.
pub const HEADER_LEN: usize = 10;
/// Largest body accepted (64 MiB): far above a real snapshot, small enough
/// that a bogus length cannot make the server allocate without bound.
pub const MAX_FRAME: u32 = 64 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum FrameError {
    /// the peer closed the connection
    Closed,
    /// the peer closed the connection in the middle of a frame
    Truncated,
    /// bad magic {0:02x?} (not a petrel control socket peer?)
    BadMagic([u8; 4]),
    /// frame body of {0} bytes exceeds the limit of {1} bytes
    TooLarge(u32, u32),
    /// timed out waiting for the rest of a frame
    Timeout,
    /// i/o error: {0}
    Io(#[from] io::Error),
}

/// A frame as read: the header's version and the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Major version from the header.
    pub version: u16,
    /// The body (JSON text).
    pub body: Vec<u8>,
}

/// Writes one frame whose body is `msg` as JSON, with [`PROTOCOL_MAJOR`].
///
/// # Errors
/// Serialisation (never for this module's types) or write errors, and
/// bodies larger than `u32::MAX`.
pub fn write_msg<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_frame(w, PROTOCOL_MAJOR, &body)
}

/// Writes one frame with an explicit version and raw body (tests use it
/// to send what a broken or foreign client would).
///
/// # Errors
/// Write errors, and bodies larger than `u32::MAX`.
pub fn write_frame<W: Write>(w: &mut W, version: u16, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame body larger than 4 GiB"))?;
    let mut hdr = [0u8; HEADER_LEN];
    hdr[..4].copy_from_slice(&MAGIC);
    hdr[4..6].copy_from_slice(&version.to_be_bytes());
    hdr[6..].copy_from_slice(&len.to_be_bytes());
    // One buffer, one write: a reader never sees a header without its body
    // because of our own buffering.
    let mut buf = Vec::with_capacity(HEADER_LEN + body.len());
    buf.extend_from_slice(&hdr);
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame, refusing bodies above `max_len`.
///
/// The header is validated before the body is allocated, so a bogus
/// length costs nothing. Timeouts come from the reader (the server wraps
/// its stream in a deadline).
///
/// # Errors
/// [`FrameError::Closed`] on a clean end of stream before a header,
/// the other variants as named.
pub fn read_frame<R: Read>(r: &mut R, max_len: u32) -> Result<Frame, FrameError> {
    let mut hdr = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut hdr[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
        // Check the magic as soon as it is in: a client speaking another
        // protocol gets told so without waiting for ten bytes.
        if got >= 4 && hdr[..4] != MAGIC {
            let mut m = [0u8; 4];
            m.copy_from_slice(&hdr[..4]);
            return Err(FrameError::BadMagic(m));
        }
    }
    let version = u16::from_be_bytes([hdr[4], hdr[5]]);
    let len = u32::from_be_bytes([hdr[6], hdr[7], hdr[8], hdr[9]]);
    if len > max_len {
        return Err(FrameError::TooLarge(len, max_len));
    }
    let mut body = vec![0u8; usize::try_from(len).expect("u32 fits usize on supported targets")];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => io_err(e),
    })?;
    Ok(Frame { version, body })
}

fn io_err(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::Timeout,
        _ => FrameError::Io(e),
    }
}

// ---------------------------------------------------------------- requests

/// A request. JSON: `{"type": "show"}`, `{"type": "trace", "body": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; the reply says the server's version and state.
    Hello(Hello),
    /// Ports, their state and counters.
    Show,
    /// Per-PMD cycles, bursts and cache hit rates.
    PmdStats,
    /// The tables, readable, for all datapaths or one (name or key).
    DumpTables {
        /// Datapath name or tunnel key; all when absent.
        datapath: Option<String>,
    },
    /// Drop counters by reason.
    Drops,
    /// Runs a described packet through the current tables without sending it.
    Trace {
        /// petreld port name (or index) the packet arrives on.
        port: String,
        /// The packet, in ovn-trace microflow syntax (see [`super::microflow`]).
        packet: String,
    },
    /// Replaces the whole table set.
    PublishSnapshot(SnapshotMsg),
    /// Changes the current table set incrementally.
    ApplyChanges(Vec<Change>),
    /// All raw counters, for tools and exporters.
    Stats,
    /// What the compiler refused in the tables now running.
    Refusals,
    /// MAC addresses learnt by `put_fdb` since the last such request
    /// (each is handed out once: petrel-ovn is the reader).
    Learned,
    /// Adds a port at runtime; the reply is the new port.
    AddPort {
        /// The port, exactly as petreld's `--port` flag takes it:
        /// `NAME=vhost-user,path=SOCK,mode=server|client[,queues=N][,vlan=TAG][,iface-id=LPORT]`
        /// or `NAME=dpdk[,vlan=TAG][,iface-id=LPORT],devargs=...`.
        spec: String,
    },
    /// Removes a port at runtime (by name); the reply is the removed port
    /// with its final counters.
    DelPort {
        /// Port name.
        name: String,
    },
    /// Port policers: set, clear, show, or petrel-ovn's sync.
    Qos(super::features::QosRequest),
    /// Local port mirrors: add, del, list.
    Mirror(super::features::MirrorRequest),
    /// The meters of the running tables and their counters.
    Meters,
    /// Packet capture sessions: start, read, stop.
    Capture(super::features::CaptureRequest),
    /// Reads or replaces the log filter; the reply is the filter in force.
    LogLevel {
        /// The new filter (`debug`, `petrel_vhost_user=debug,info`: see
        /// `petrel_obs::logging`); absent: only read it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
    },
}

/// Every request type name, for telling an unknown request from a bad one.
pub const REQUEST_TYPES: &[&str] = &[
    "hello",
    "show",
    "pmd_stats",
    "dump_tables",
    "drops",
    "trace",
    "publish_snapshot",
    "apply_changes",
    "stats",
    "refusals",
    "learned",
    "add_port",
    "del_port",
    "qos",
    "mirror",
    "capture",
    "log_level",
];

/// The client's side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Client's major version.
    pub major: u16,
    /// Client's minor version.
    pub minor: u16,
    /// Who is asking (`petrelctl 0.1.0`, `petrel-ovn 0.1.0`), for logs.
    #[serde(default)]
    pub client: String,
}

impl Hello {
    /// This build's handshake.
    pub fn new(client: impl Into<String>) -> Self {
        Hello { major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR, client: client.into() }
    }
}

// ---------------------------------------------------------------- responses

/// The one response to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// The request succeeded.
    Ok(Reply),
    /// It did not.
    Error(ErrorReply),
}

/// What a successful request returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Hello`].
    Hello(HelloReply),
    /// To [`Request::Show`].
    Show(ShowReply),
    /// To [`Request::PmdStats`].
    PmdStats(PmdStatsReply),
    /// To [`Request::DumpTables`].
    Tables(TablesReply),
    /// To [`Request::Drops`].
    Drops(DropsReply),
    /// To [`Request::Trace`].
    Trace(TraceReply),
    /// To [`Request::PublishSnapshot`] and [`Request::ApplyChanges`]: the
    /// generation now running.
    Generation(u64),
    /// To [`Request::Stats`].
    Stats(StatsReply),
    /// To [`Request::Refusals`].
    Refusals(RefusalsReply),
    /// To [`Request::Learned`].
    Learned(Vec<LearnedMsg>),
    /// To [`Request::AddPort`] and [`Request::DelPort`].
    Port(PortInfo),
    /// To [`Request::Qos`].
    Qos(super::features::QosReply),
    /// To [`Request::Mirror`].
    Mirrors(super::features::MirrorReply),
    /// To [`Request::Meters`].
    Meters(super::features::MetersReply),
    /// To [`Request::Capture`].
    Capture(super::features::CaptureReply),
    /// To [`Request::LogLevel`].
    LogLevel(LogLevelReply),
}

/// Reply to [`Request::LogLevel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelReply {
    /// The filter in force now.
    pub filter: String,
    /// The filter it replaced, when the request set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// A MAC learnt on a logical port (`put_fdb(inport, eth.src)`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LearnedMsg {
    /// Datapath key.
    pub datapath: u32,
    /// Logical port key.
    pub port: u32,
    /// `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
}

/// One logical flow (or port) the compiler could not turn into tables: its
/// packets are dropped as `unsupported`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalMsg {
    /// Datapath name.
    pub datapath: String,
    /// Datapath tunnel key.
    pub datapath_key: u32,
    /// Logical flow (or port binding, datapath) UUID.
    pub uuid: String,
    /// `ingress`, `egress`, `port` or `datapath`.
    pub pipeline: String,
    /// OVN table.
    pub table: u32,
    /// Stage name (or port name).
    pub stage: String,
    /// What is missing.
    pub what: String,
}

/// Reply to [`Request::Refusals`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalsReply {
    /// Generation of the tables these belong to.
    pub generation: u64,
    /// Refused flows and ports.
    pub refusals: Vec<RefusalMsg>,
    /// Constructs accepted with a caveat.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Why a request failed. Codes are stable; messages are for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was malformed (bad magic, truncated). Connection closed.
    BadFrame,
    /// The frame's length exceeded the limit. Connection closed.
    TooLarge,
    /// The body was not valid JSON or not a valid request. Connection closed.
    BadRequest,
    /// The request type is not known to this server. Connection closed.
    UnknownRequest,
    /// Major versions differ. Connection closed.
    IncompatibleVersion,
    /// The request was understood but refused (invalid snapshot or change,
    /// bad microflow).
    Rejected,
    /// Something named in the request does not exist (port, datapath).
    NotFound,
    /// The server is at its connection limit. Connection closed.
    Busy,
    /// The server failed.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire (`bad_frame`, `not_found`, …).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::IncompatibleVersion => "incompatible_version",
            ErrorCode::Rejected => "rejected",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} [{}]", code.name())]
pub struct ErrorReply {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl ErrorReply {
    /// An error with this code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply { code, message: message.into() }
    }
    /// [`ErrorCode::Rejected`].
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Rejected, message)
    }
    /// [`ErrorCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
}

/// The server's side of the handshake. `instance` and `generation` let a
/// client such as `petrel-ovn` notice that petreld restarted (new
/// instance) or lost its tables (generation 0) and push a full snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// Server's major version.
    pub major: u16,
    /// Server's minor version.
    pub minor: u16,
    /// `petreld 0.1.0`.
    pub server: String,
    /// Differs between two runs of the server.
    pub instance: String,
    /// Generation of the tables running now (0: none published yet).
    pub generation: u64,
}

/// Counters of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received packets dropped.
    pub drops: u64,
    /// Packets the device would not take.
    pub tx_drops: u64,
}

#[cfg(feature = "dpdk")]
impl From<&crate::pmd::stats::PortCounters> for PortStats {
    fn from(c: &crate::pmd::stats::PortCounters) -> Self {
        PortStats {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            drops: c.drops,
            tx_drops: c.tx_drops,
        }
    }
}

/// The logical port a local port is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalPortInfo {
    /// Datapath tunnel key.
    pub datapath: u32,
    /// Datapath name.
    pub datapath_name: String,
    /// Logical port tunnel key.
    pub port: u32,
    /// Logical port name, if the snapshot names it.
    pub port_name: Option<String>,
}

/// One petreld port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// petreld port index.
    pub index: u16,
    /// Name.
    pub name: String,
    /// Kind and device (`dpdk net_vhost0,...`, `geneve 192.0.2.1`).
    pub kind: String,
    /// Link or connection state (`up`, `down`, `connecting`).
    pub state: String,
    /// The OVN logical port name this port declares (`iface-id`), which
    /// petrel-ovn claims; `None` for ports that are not OVN ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface_id: Option<String>,
    /// Bound logical port, if any.
    pub logical: Option<LogicalPortInfo>,
    /// Counters summed over PMDs.
    pub stats: PortStats,
}

/// Reply to `show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowReply {
    /// `petreld 0.1.0`.
    pub server: String,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Table generation running.
    pub generation: u64,
    /// Datapaths in the tables.
    pub n_datapaths: usize,
    /// Rules in the tables.
    pub n_rules: usize,
    /// PMD threads.
    pub n_pmds: usize,
    /// Ports, by index.
    pub ports: Vec<PortInfo>,
    /// The node's tunnel endpoints (`--uplink`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uplinks: Vec<UplinkInfo>,
    /// Remote chassis of the tables and how they are reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<TunnelInfo>,
}

/// A tunnel endpoint of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkInfo {
    /// The DPDK port.
    pub port: String,
    /// `IP/PREFIX`.
    pub ip: String,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// MTU.
    pub mtu: u16,
}

/// How a remote chassis is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    /// Chassis name.
    pub chassis: String,
    /// Its tunnel IP.
    pub ip: String,
    /// Uplink port it leaves on (`None`: no route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<String>,
    /// The next hop's MAC (`None`: not resolved yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Hits of one lookup layer (exact-match cache, classifier, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerHits {
    /// Layer name (`emc`, `dpcls`, `upcall`).
    pub name: String,
    /// Lookups it answered.
    pub hits: u64,
}

/// One PMD's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmdInfo {
    /// PMD index.
    pub index: usize,
    /// CPU it is pinned to.
    pub cpu: usize,
    /// TSC ticks in polls that received packets.
    pub busy_cycles: u64,
    /// TSC ticks in polls that received nothing.
    pub idle_cycles: u64,
    /// TSC ticks asleep (`petreld --pmd-sleep-max`).
    #[serde(default)]
    pub sleep_cycles: u64,
    /// Receive calls that returned packets.
    pub rx_bursts: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Hits per lookup layer, in lookup order; the packets no layer
    /// answered (dropped before lookup, or not table-driven) are
    /// `rx_packets` minus their sum.
    #[serde(default)]
    pub layers: Vec<LayerHits>,
}

#[cfg(feature = "dpdk")]
impl PmdInfo {
    /// From a PMD's counters: layers `flow_cache` (exact-match hits) and
    /// `pipeline` (cache misses that walked the tables).
    pub fn from_counters(index: usize, cpu: usize, c: &crate::pmd::stats::Counters) -> Self {
        PmdInfo {
            index,
            cpu,
            busy_cycles: c.busy_cycles,
            idle_cycles: c.idle_cycles,
            sleep_cycles: c.sleep_cycles,
            rx_bursts: c.rx_bursts,
            rx_packets: c.rx_packets,
            layers: vec![
                LayerHits { name: "flow_cache".to_owned(), hits: c.cache_hits },
                LayerHits { name: "pipeline".to_owned(), hits: c.cache_misses },
            ],
        }
    }
}

/// Reply to `pmd-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmdStatsReply {
    /// TSC frequency, to turn cycles into time (0 if unknown).
    pub tsc_hz: u64,
    /// One entry per PMD.
    pub pmds: Vec<PmdInfo>,
}

/// One drop reason's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// [`DropReason::name`].
    pub reason: String,
    /// Packets.
    pub count: u64,
}

/// Reply to `drops`: every reason, in counter order, zeros included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropsReply {
    /// Counts by reason.
    pub reasons: Vec<DropCount>,
}

impl DropsReply {
    /// From a `[u64; DropReason::COUNT]`-style array (missing entries count 0).
    pub fn from_counts(counts: &[u64]) -> Self {
        let reasons = DropReason::ALL
            .iter()
            .map(|r| DropCount { reason: r.name().to_owned(), count: counts.get(r.index()).copied().unwrap_or(0) })
            .collect();
        DropsReply { reasons }
    }
}

/// Reply to `stats`: everything countable, raw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Table generation running.
    pub generation: u64,
    /// Ports with counters.
    pub ports: Vec<PortInfo>,
    /// PMDs.
    pub pmds: PmdStatsReply,
    /// Drops by reason.
    pub drops: DropsReply,
}

/// One rule, readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDump {
    /// Priority.
    pub priority: u32,
    /// Cookie (logical flow UUID prefix).
    pub cookie: u64,
    /// The match, OVN-like (`reg14 == 1 && eth.src == 02:00:00:00:00:01`).
    #[serde(rename = "match")]
    pub matches: String,
    /// The actions, OVN-like (`reg15 = 2; output;`).
    pub actions: String,
}

/// One stage, readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDump {
    /// Table number within the pipeline.
    pub table: usize,
    /// Name.
    pub name: String,
    /// Rules, highest priority first.
    pub rules: Vec<RuleDump>,
}

/// One datapath, readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathDump {
    /// Tunnel key.
    pub key: u32,
    /// Name.
    pub name: String,
    /// Logical ports: `key name -> binding`.
    pub ports: Vec<String>,
    /// Multicast groups: `key -> members`.
    pub groups: Vec<String>,
    /// Ingress stages.
    pub ingress: Vec<StageDump>,
    /// Egress stages.
    pub egress: Vec<StageDump>,
}

/// Reply to `dump-tables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablesReply {
    /// Generation dumped.
    pub generation: u64,
    /// Local port bindings: `index -> datapath/port`.
    pub local_ports: Vec<String>,
    /// Remote chassis: `index name ip`.
    pub chassis: Vec<String>,
    /// Datapaths selected.
    pub datapaths: Vec<DatapathDump>,
}

/// Reply to `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReply {
    /// Generation traced against.
    pub generation: u64,
    /// The port the packet arrived on.
    pub port: String,
    /// The flow as parsed (every non-zero field).
    pub flow: String,
    /// The walk: stages, rules, actions, outputs and drops, indented by depth.
    pub lines: Vec<String>,
    /// Where copies went.
    pub outputs: Vec<String>,
    /// First drop reason of a branch, if any.
    pub drop: Option<String>,
}

// ---------------------------------------------------------------- snapshot wire form

/// `u128` as a `"0x…"` string.
mod hex128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(&s);
        u128::from_str_radix(t, 16).map_err(|e| serde::de::Error::custom(format!("bad hex value {s:?}: {e}")))
    }
}

/// A full table set on the wire ([`Snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMsg {
    /// Generation the sender assigns (the server may renumber; it replies
    /// with the generation it runs).
    pub generation: u64,
    /// Datapaths.
    pub datapaths: Vec<DatapathMsg>,
    /// By petreld port index: the logical port it is, if bound.
    pub local_ports: Vec<Option<LocalPortMsg>>,
    /// Remote chassis, indexed by [`BindingMsg::Remote`].
    pub chassis: Vec<ChassisMsg>,
    /// VLAN-tagged logical ports behind a petreld port (child ports, tagged
    /// localnet networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlan_ports: Vec<VlanPortMsg>,
    /// What the compiler refused (kept by petreld for `petrelctl refusals`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<RefusalMsg>,
    /// Constructs accepted with a caveat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Meters by id ([`Snapshot::meters`](table::Snapshot::meters)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<Option<MeterMsg>>,
}

/// One meter on the wire ([`table::Meter`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterMsg {
    /// Identity across snapshots.
    pub name: String,
    /// Units per second.
    pub rate: u64,
    /// Bucket size in units.
    pub burst: u64,
    /// `bits` or `packets`.
    pub unit: crate::qos::Unit,
}

/// One entry of [`Snapshot::vlan_ports`](table::Snapshot::vlan_ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanPortMsg {
    /// petreld port index.
    pub index: u16,
    /// VLAN id.
    pub vlan: u16,
    /// The logical port.
    pub port: LocalPortMsg,
}

/// A datapath on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathMsg {
    /// Tunnel key.
    pub key: u32,
    /// Name.
    pub name: String,
    /// Ingress stages.
    pub ingress: Vec<StageMsg>,
    /// Egress stages.
    pub egress: Vec<StageMsg>,
    /// Logical ports: key, optional name, optional binding.
    pub ports: Vec<PortMsg>,
    /// Multicast groups.
    pub groups: Vec<GroupMsg>,
}

/// A logical port on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMsg {
    /// Tunnel key.
    pub key: u32,
    /// Name (`Port_Binding.logical_port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it lives, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingMsg>,
}

/// A multicast group on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMsg {
    /// Group key (≥ 32768).
    pub key: u32,
    /// Member logical port keys.
    pub members: Vec<u32>,
}

/// [`Binding`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BindingMsg {
    /// [`Binding::Local`].
    Local {
        /// petreld port index.
        port: u16,
        /// Tag for child ports.
        #[serde(default)]
        vlan: Option<u16>,
    },
    /// [`Binding::Remote`].
    Remote {
        /// Chassis index.
        chassis: u16,
    },
    /// [`Binding::Localnet`].
    Localnet {
        /// Uplink port index.
        uplink: u16,
        /// Physical network tag.
        #[serde(default)]
        vlan: Option<u16>,
    },
    /// [`Binding::ViaLocalnet`].
    ViaLocalnet {
        /// Logical port key of the localnet port.
        localnet: u32,
    },
    /// [`Binding::Refused`].
    Refused,
}

/// [`table::LocalPort`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPortMsg {
    /// Datapath key.
    pub datapath: u32,
    /// Logical port key.
    pub port: u32,
}

/// [`table::RemoteChassis`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChassisMsg {
    /// Name.
    pub name: String,
    /// Tunnel endpoint.
    pub ip: IpAddr,
}

/// A stage on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageMsg {
    /// Name.
    pub name: String,
    /// Rules (any order; equal priorities keep this order).
    pub rules: Vec<RuleMsg>,
    /// Conjunctive rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conj: Vec<ConjRuleMsg>,
}

/// A [`table::ConjRule`] on the wire: the base rule and, per dimension, its
/// alternatives as masked words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConjRuleMsg {
    /// Priority, common match, actions, cookie.
    pub rule: RuleMsg,
    /// Dimensions: alternatives, each a masked-word match.
    pub dims: Vec<Vec<Vec<MatchWord>>>,
}

fn words_of(v: &[u64; Key::WORDS], m: &[u64; Key::WORDS]) -> Vec<MatchWord> {
    m.iter()
        .zip(v)
        .enumerate()
        .filter(|(_, (m, _))| **m != 0)
        .map(|(word, (m, v))| MatchWord { word, value: *v, mask: *m })
        .collect()
}

fn words_from(ws: &[MatchWord]) -> Result<([u64; Key::WORDS], [u64; Key::WORDS]), ConvertError> {
    let mut value = [0u64; Key::WORDS];
    let mut mask = [0u64; Key::WORDS];
    for w in ws {
        if w.word >= Key::WORDS {
            return Err(ConvertError::BadWord(w.word, Key::WORDS));
        }
        mask[w.word] |= w.mask;
        value[w.word] = (value[w.word] & !w.mask) | (w.value & w.mask);
    }
    Ok((value, mask))
}

/// One masked word of a rule's match: `key.words()[word] & mask == value`.
///
/// Words are the [`Key`]'s bytes as host-order `u64`s; both ends of a Unix
/// socket share the host, and words with a zero mask are left out. On the
/// wire a word is the array `[word, value, mask]`: rules are the bulk of a
/// snapshot, and field names would add a third to its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(usize, u64, u64)", into = "(usize, u64, u64)")]
pub struct MatchWord {
    /// Index into the key's words (< `Key::WORDS`).
    pub word: usize,
    /// Value (bits outside the mask are ignored).
    pub value: u64,
    /// Mask.
    pub mask: u64,
}

impl From<(usize, u64, u64)> for MatchWord {
    fn from((word, value, mask): (usize, u64, u64)) -> Self {
        MatchWord { word, value, mask }
    }
}

impl From<MatchWord> for (usize, u64, u64) {
    fn from(w: MatchWord) -> Self {
        (w.word, w.value, w.mask)
    }
}

/// A rule on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMsg {
    /// Priority.
    pub priority: u32,
    /// Cookie.
    pub cookie: u64,
    /// The match, as masked key words.
    #[serde(rename = "match")]
    pub matches: Vec<MatchWord>,
    /// Actions.
    pub actions: Vec<ActionMsg>,
}

/// [`Field`] on the wire: `eth_src`, …, `{"reg": 14}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // one-to-one with `Field`
pub enum FieldMsg {
    EthSrc,
    EthDst,
    IpSrc,
    IpDst,
    IpTtl,
    IpTos,
    TpSrc,
    TpDst,
    ArpOp,
    ArpSha,
    ArpTha,
    Metadata,
    Reg(u8),
    EthType,
    VlanTci,
    IpProto,
    IpFrag,
    TcpFlags,
    NdTarget,
    Ipv6Label,
}

/// [`SlowPathReason`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // one-to-one with `SlowPathReason`
pub enum SlowPathMsg {
    Arp,
    NdNa,
    Icmp,
    TcpReset,
    Dhcp,
    Learn,
}

/// [`Action`] on the wire. Drop reasons travel by [`DropReason::name`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionMsg {
    /// [`Action::Next`].
    Next {
        /// Stage.
        stage: u16,
    },
    /// [`Action::Set`].
    Set {
        /// Field.
        field: FieldMsg,
        /// Value.
        #[serde(with = "hex128")]
        value: u128,
        /// Mask.
        #[serde(with = "hex128")]
        mask: u128,
    },
    /// [`Action::Move`].
    Move {
        /// Source.
        src: FieldMsg,
        /// Destination.
        dst: FieldMsg,
    },
    /// [`Action::Exchange`].
    Exchange {
        /// One field.
        a: FieldMsg,
        /// The other.
        b: FieldMsg,
    },
    /// [`Action::MoveBits`].
    MoveBits {
        /// Source.
        src: FieldMsg,
        /// First source bit.
        src_ofs: u8,
        /// Destination.
        dst: FieldMsg,
        /// First destination bit.
        dst_ofs: u8,
        /// Bits.
        n_bits: u8,
    },
    /// [`Action::PushVlan`].
    PushVlan {
        /// TCI.
        tci: u16,
    },
    /// [`Action::PopVlan`].
    PopVlan,
    /// [`Action::Output`].
    Output,
    /// [`Action::Clone`].
    Clone {
        /// Actions run on the copy.
        actions: Vec<ActionMsg>,
    },
    /// [`Action::Meter`].
    Meter {
        /// Meter id.
        id: u32,
    },
    /// [`Action::Mirror`].
    Mirror {
        /// Session id.
        id: u32,
    },
    /// [`Action::Drop`].
    Drop {
        /// [`DropReason::name`].
        reason: String,
    },
    /// [`Action::SlowPath`].
    SlowPath {
        /// Why.
        reason: SlowPathMsg,
    },
    /// [`Action::Generate`].
    Generate {
        /// [`table::GenKind::name`].
        kind: String,
        /// Actions run on the generated packet.
        actions: Vec<ActionMsg>,
    },
    /// [`Action::Jump`].
    Jump {
        /// Into the egress pipeline?
        egress: bool,
        /// Stage.
        stage: u16,
    },
}

/// Why a wire snapshot or change could not be turned into tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum ConvertError {
    /// match word {0} is beyond the key's {1} words
    BadWord(usize, usize),
    /// unknown drop reason {0:?}
    UnknownDropReason(String),
    /// unknown generated packet kind {0:?}
    UnknownGenKind(String),
    /// register {0} does not exist (0..=15)
    BadRegister(u8),
    /// datapath {0} appears twice
    DuplicateDatapath(u32),
    /// datapath {0} does not exist
    NoDatapath(u32),
    /// datapath {0}: {1} stage {2} does not exist (stages are added by a full snapshot)
    NoStage(u32, &'static str, u16),
    /// datapath {0}: {1} stage {2}: no rule has cookie {3:#x}
    NoRule(u32, &'static str, u16, u64),
    /// the resulting tables are invalid: {0}
    Invalid(#[from] table::SnapshotError),
}

impl From<Field> for FieldMsg {
    fn from(f: Field) -> Self {
        match f {
            Field::EthSrc => FieldMsg::EthSrc,
            Field::EthDst => FieldMsg::EthDst,
            Field::IpSrc => FieldMsg::IpSrc,
            Field::IpDst => FieldMsg::IpDst,
            Field::IpTtl => FieldMsg::IpTtl,
            Field::IpTos => FieldMsg::IpTos,
            Field::TpSrc => FieldMsg::TpSrc,
            Field::TpDst => FieldMsg::TpDst,
            Field::ArpOp => FieldMsg::ArpOp,
            Field::ArpSha => FieldMsg::ArpSha,
            Field::ArpTha => FieldMsg::ArpTha,
            Field::Metadata => FieldMsg::Metadata,
            Field::Reg(r) => FieldMsg::Reg(r),
            Field::EthType => FieldMsg::EthType,
            Field::VlanTci => FieldMsg::VlanTci,
            Field::IpProto => FieldMsg::IpProto,
            Field::IpFrag => FieldMsg::IpFrag,
            Field::TcpFlags => FieldMsg::TcpFlags,
            Field::NdTarget => FieldMsg::NdTarget,
            Field::Ipv6Label => FieldMsg::Ipv6Label,
        }
    }
}

impl TryFrom<FieldMsg> for Field {
    type Error = ConvertError;
    fn try_from(f: FieldMsg) -> Result<Self, ConvertError> {
        Ok(match f {
            FieldMsg::EthSrc => Field::EthSrc,
            FieldMsg::EthDst => Field::EthDst,
            FieldMsg::IpSrc => Field::IpSrc,
            FieldMsg::IpDst => Field::IpDst,
            FieldMsg::IpTtl => Field::IpTtl,
            FieldMsg::IpTos => Field::IpTos,
            FieldMsg::TpSrc => Field::TpSrc,
            FieldMsg::TpDst => Field::TpDst,
            FieldMsg::ArpOp => Field::ArpOp,
            FieldMsg::ArpSha => Field::ArpSha,
            FieldMsg::ArpTha => Field::ArpTha,
            FieldMsg::Metadata => Field::Metadata,
            // Field::span clamps larger registers; refuse them instead.
            FieldMsg::Reg(r) if r <= 15 => Field::Reg(r),
            FieldMsg::Reg(r) => return Err(ConvertError::BadRegister(r)),
            FieldMsg::EthType => Field::EthType,
            FieldMsg::VlanTci => Field::VlanTci,
            FieldMsg::IpProto => Field::IpProto,
            FieldMsg::IpFrag => Field::IpFrag,
            FieldMsg::TcpFlags => Field::TcpFlags,
            FieldMsg::NdTarget => Field::NdTarget,
            FieldMsg::Ipv6Label => Field::Ipv6Label,
        })
    }
}

impl From<SlowPathReason> for SlowPathMsg {
    fn from(r: SlowPathReason) -> Self {
        match r {
            SlowPathReason::Arp => SlowPathMsg::Arp,
            SlowPathReason::NdNa => SlowPathMsg::NdNa,
            SlowPathReason::Icmp => SlowPathMsg::Icmp,
            SlowPathReason::TcpReset => SlowPathMsg::TcpReset,
            SlowPathReason::Dhcp => SlowPathMsg::Dhcp,
            SlowPathReason::Learn => SlowPathMsg::Learn,
        }
    }
}

impl From<SlowPathMsg> for SlowPathReason {
    fn from(r: SlowPathMsg) -> Self {
        match r {
            SlowPathMsg::Arp => SlowPathReason::Arp,
            SlowPathMsg::NdNa => SlowPathReason::NdNa,
            SlowPathMsg::Icmp => SlowPathReason::Icmp,
            SlowPathMsg::TcpReset => SlowPathReason::TcpReset,
            SlowPathMsg::Dhcp => SlowPathReason::Dhcp,
            SlowPathMsg::Learn => SlowPathReason::Learn,
        }
    }
}

/// Finds a drop reason by its stable name.
pub fn drop_reason_by_name(name: &str) -> Option<DropReason> {
    DropReason::ALL.iter().copied().find(|r| r.name() == name)
}

impl From<&Action> for ActionMsg {
    fn from(a: &Action) -> Self {
        match a {
            Action::Next(t) => ActionMsg::Next { stage: *t },
            Action::Set { field, value, mask } => ActionMsg::Set { field: (*field).into(), value: *value, mask: *mask },
            Action::Move { src, dst } => ActionMsg::Move { src: (*src).into(), dst: (*dst).into() },
            Action::Exchange(a, b) => ActionMsg::Exchange { a: (*a).into(), b: (*b).into() },
            Action::MoveBits { src, src_ofs, dst, dst_ofs, n_bits } => ActionMsg::MoveBits {
                src: (*src).into(),
                src_ofs: *src_ofs,
                dst: (*dst).into(),
                dst_ofs: *dst_ofs,
                n_bits: *n_bits,
            },
            Action::PushVlan(tci) => ActionMsg::PushVlan { tci: *tci },
            Action::PopVlan => ActionMsg::PopVlan,
            Action::Output => ActionMsg::Output,
            Action::Clone(inner) => ActionMsg::Clone { actions: inner.iter().map(ActionMsg::from).collect() },
            Action::Meter(id) => ActionMsg::Meter { id: *id },
            Action::Mirror(id) => ActionMsg::Mirror { id: *id },
            Action::Drop(r) => ActionMsg::Drop { reason: r.name().to_owned() },
            Action::SlowPath(r) => ActionMsg::SlowPath { reason: (*r).into() },
            Action::Generate { kind, actions } => ActionMsg::Generate {
                kind: kind.name().to_owned(),
                actions: actions.iter().map(ActionMsg::from).collect(),
            },
            Action::Jump { egress, stage } => ActionMsg::Jump { egress: *egress, stage: *stage },
        }
    }
}

impl TryFrom<&ActionMsg> for Action {
    type Error = ConvertError;
    fn try_from(a: &ActionMsg) -> Result<Self, ConvertError> {
        Ok(match a {
            ActionMsg::Next { stage } => Action::Next(*stage),
            ActionMsg::Set { field, value, mask } => {
                Action::Set { field: (*field).try_into()?, value: *value, mask: *mask }
            }
            ActionMsg::Move { src, dst } => Action::Move { src: (*src).try_into()?, dst: (*dst).try_into()? },
            ActionMsg::Exchange { a, b } => Action::Exchange((*a).try_into()?, (*b).try_into()?),
            ActionMsg::MoveBits { src, src_ofs, dst, dst_ofs, n_bits } => Action::MoveBits {
                src: (*src).try_into()?,
                src_ofs: *src_ofs,
                dst: (*dst).try_into()?,
                dst_ofs: *dst_ofs,
                n_bits: *n_bits,
            },
            ActionMsg::PushVlan { tci } => Action::PushVlan(*tci),
            ActionMsg::PopVlan => Action::PopVlan,
            ActionMsg::Output => Action::Output,
            ActionMsg::Clone { actions } => Action::Clone(actions_from_msg(actions)?.into()),
            ActionMsg::Meter { id } => Action::Meter(*id),
            ActionMsg::Mirror { id } => Action::Mirror(*id),
            ActionMsg::Drop { reason } => Action::Drop(
                drop_reason_by_name(reason).ok_or_else(|| ConvertError::UnknownDropReason(reason.clone()))?,
            ),
            ActionMsg::SlowPath { reason } => Action::SlowPath((*reason).into()),
            ActionMsg::Generate { kind, actions } => Action::Generate {
                kind: table::GenKind::from_name(kind).ok_or_else(|| ConvertError::UnknownGenKind(kind.clone()))?,
                actions: actions_from_msg(actions)?.into(),
            },
            ActionMsg::Jump { egress, stage } => Action::Jump { egress: *egress, stage: *stage },
        })
    }
}

fn actions_from_msg(acts: &[ActionMsg]) -> Result<Vec<Action>, ConvertError> {
    acts.iter().map(Action::try_from).collect()
}

impl From<&Rule> for RuleMsg {
    fn from(r: &Rule) -> Self {
        let matches = r
            .mask
            .iter()
            .zip(&r.value)
            .enumerate()
            .filter(|(_, (m, _))| **m != 0)
            .map(|(word, (m, v))| MatchWord { word, value: *v, mask: *m })
            .collect();
        RuleMsg {
            priority: r.priority,
            cookie: r.cookie,
            matches,
            actions: r.actions.iter().map(ActionMsg::from).collect(),
        }
    }
}

impl TryFrom<&RuleMsg> for Rule {
    type Error = ConvertError;
    fn try_from(r: &RuleMsg) -> Result<Self, ConvertError> {
        let mut value = [0u64; Key::WORDS];
        let mut mask = [0u64; Key::WORDS];
        for w in &r.matches {
            if w.word >= Key::WORDS {
                return Err(ConvertError::BadWord(w.word, Key::WORDS));
            }
            mask[w.word] |= w.mask;
            value[w.word] = (value[w.word] & !w.mask) | (w.value & w.mask);
        }
        Ok(Rule { priority: r.priority, value, mask, actions: actions_from_msg(&r.actions)?.into(), cookie: r.cookie })
    }
}

impl From<&Stage> for StageMsg {
    fn from(s: &Stage) -> Self {
        StageMsg {
            name: s.name.clone(),
            rules: s.rules().iter().map(RuleMsg::from).collect(),
            conj: s
                .conj_rules()
                .iter()
                .map(|c| ConjRuleMsg {
                    rule: RuleMsg::from(&c.rule),
                    dims: c.dims.iter().map(|d| d.alternatives().map(|(v, m)| words_of(&v, &m)).collect()).collect(),
                })
                .collect(),
        }
    }
}

fn stage_from_msg(s: &StageMsg) -> Result<Arc<Stage>, ConvertError> {
    let rules = s.rules.iter().map(Rule::try_from).collect::<Result<Vec<_>, _>>()?;
    if s.conj.is_empty() {
        return Ok(Arc::new(Stage::new(s.name.clone(), rules)));
    }
    let mut conj = Vec::with_capacity(s.conj.len());
    for c in &s.conj {
        let rule = Rule::try_from(&c.rule)?;
        let mut dims = Vec::with_capacity(c.dims.len());
        for d in &c.dims {
            let alts = d.iter().map(|a| words_from(a)).collect::<Result<Vec<_>, _>>()?;
            dims.push(table::Dim::new(alts));
        }
        conj.push(table::ConjRule { rule, dims });
    }
    Ok(Arc::new(Stage::with_conj(s.name.clone(), rules, conj)))
}

impl From<Binding> for BindingMsg {
    fn from(b: Binding) -> Self {
        match b {
            Binding::Local { port, vlan } => BindingMsg::Local { port, vlan },
            Binding::Remote { chassis } => BindingMsg::Remote { chassis },
            Binding::Localnet { uplink, vlan } => BindingMsg::Localnet { uplink, vlan },
            Binding::ViaLocalnet { localnet } => BindingMsg::ViaLocalnet { localnet },
            Binding::Refused => BindingMsg::Refused,
        }
    }
}

impl From<BindingMsg> for Binding {
    fn from(b: BindingMsg) -> Self {
        match b {
            BindingMsg::Local { port, vlan } => Binding::Local { port, vlan },
            BindingMsg::Remote { chassis } => Binding::Remote { chassis },
            BindingMsg::Localnet { uplink, vlan } => Binding::Localnet { uplink, vlan },
            BindingMsg::ViaLocalnet { localnet } => Binding::ViaLocalnet { localnet },
            BindingMsg::Refused => Binding::Refused,
        }
    }
}

impl From<&table::Datapath> for DatapathMsg {
    fn from(dp: &table::Datapath) -> Self {
        let mut keys: Vec<u32> = dp.ports.keys().chain(dp.port_names.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        let ports = keys
            .into_iter()
            .map(|k| PortMsg {
                key: k,
                name: dp.port_names.get(&k).cloned(),
                binding: dp.ports.get(&k).map(|b| (*b).into()),
            })
            .collect();
        DatapathMsg {
            key: dp.key,
            name: dp.name.clone(),
            ingress: dp.ingress.stages.iter().map(|s| StageMsg::from(&**s)).collect(),
            egress: dp.egress.stages.iter().map(|s| StageMsg::from(&**s)).collect(),
            ports,
            groups: dp.groups.iter().map(|(k, m)| GroupMsg { key: *k, members: m.to_vec() }).collect(),
        }
    }
}

fn datapath_from_msg(d: &DatapathMsg) -> Result<table::Datapath, ConvertError> {
    let stages = |v: &[StageMsg]| -> Result<table::Pipeline, ConvertError> {
        Ok(table::Pipeline { stages: v.iter().map(stage_from_msg).collect::<Result<_, _>>()? })
    };
    let mut ports = BTreeMap::new();
    let mut port_names = BTreeMap::new();
    for p in &d.ports {
        if let Some(b) = p.binding {
            ports.insert(p.key, b.into());
        }
        if let Some(n) = &p.name {
            port_names.insert(p.key, n.clone());
        }
    }
    Ok(table::Datapath {
        key: d.key,
        name: d.name.clone(),
        ingress: stages(&d.ingress)?,
        egress: stages(&d.egress)?,
        ports,
        groups: d.groups.iter().map(|g| (g.key, Arc::from(g.members.clone()))).collect(),
        port_names,
    })
}

impl From<&Snapshot> for SnapshotMsg {
    fn from(s: &Snapshot) -> Self {
        SnapshotMsg {
            generation: s.generation,
            datapaths: s.datapaths.values().map(|d| DatapathMsg::from(&**d)).collect(),
            local_ports: s
                .local_ports
                .iter()
                .map(|lp| lp.map(|lp| LocalPortMsg { datapath: lp.datapath, port: lp.port }))
                .collect(),
            chassis: s.chassis.iter().map(|c| ChassisMsg { name: c.name.clone(), ip: c.ip }).collect(),
            vlan_ports: s
                .vlan_ports
                .iter()
                .map(|(&(index, vlan), lp)| VlanPortMsg {
                    index,
                    vlan,
                    port: LocalPortMsg { datapath: lp.datapath, port: lp.port },
                })
                .collect(),
            refusals: Vec::new(),
            notes: Vec::new(),
            meters: s
                .meters
                .iter()
                .map(|m| {
                    m.as_ref().map(|m| MeterMsg { name: m.name.clone(), rate: m.rate, burst: m.burst, unit: m.unit })
                })
                .collect(),
        }
    }
}

impl SnapshotMsg {
    /// The tables this describes, validated ([`Snapshot::validate`]).
    ///
    /// # Errors
    /// A field, register or drop reason that does not exist, a duplicate
    /// datapath, or tables that fail validation.
    pub fn to_snapshot(&self) -> Result<Snapshot, ConvertError> {
        let mut datapaths = BTreeMap::new();
        for d in &self.datapaths {
            if datapaths.insert(d.key, Arc::new(datapath_from_msg(d)?)).is_some() {
                return Err(ConvertError::DuplicateDatapath(d.key));
            }
        }
        let snap = Snapshot {
            generation: self.generation,
            datapaths,
            local_ports: self
                .local_ports
                .iter()
                .map(|lp| lp.map(|lp| table::LocalPort { datapath: lp.datapath, port: lp.port }))
                .collect(),
            chassis: self.chassis.iter().map(|c| table::RemoteChassis { name: c.name.clone(), ip: c.ip }).collect(),
            vlan_ports: self
                .vlan_ports
                .iter()
                .map(|v| ((v.index, v.vlan), table::LocalPort { datapath: v.port.datapath, port: v.port.port }))
                .collect(),
            meters: self
                .meters
                .iter()
                .map(|m| {
                    m.as_ref().map(|m| table::Meter {
                        name: m.name.clone(),
                        rate: m.rate,
                        burst: m.burst,
                        unit: m.unit,
                    })
                })
                .collect(),
        };
        snap.validate()?;
        Ok(snap)
    }
}

// ---------------------------------------------------------------- incremental changes

/// Ingress or egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineSel {
    /// The ingress pipeline.
    Ingress,
    /// The egress pipeline.
    Egress,
}

impl PipelineSel {
    fn name(self) -> &'static str {
        match self {
            PipelineSel::Ingress => "ingress",
            PipelineSel::Egress => "egress",
        }
    }
}

/// One incremental change. Deliberately minimal: rules, logical port
/// bindings and local ports change often (a pod comes or goes, a logical
/// flow is added); datapaths, stages, groups and chassis change with a
/// full [`Request::PublishSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// Adds a rule to an existing stage (after equal-priority rules).
    AddRule {
        /// Datapath key.
        datapath: u32,
        /// Which pipeline.
        pipeline: PipelineSel,
        /// Stage index.
        stage: u16,
        /// The rule.
        rule: RuleMsg,
    },
    /// Removes every rule of a stage with this cookie (at least one must exist).
    RemoveRules {
        /// Datapath key.
        datapath: u32,
        /// Which pipeline.
        pipeline: PipelineSel,
        /// Stage index.
        stage: u16,
        /// Cookie.
        cookie: u64,
    },
    /// Sets (or with `binding: null` removes) where a logical port lives,
    /// and optionally its name.
    SetBinding {
        /// Datapath key.
        datapath: u32,
        /// Logical port key.
        port: u32,
        /// New binding.
        binding: Option<BindingMsg>,
        /// New name, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Sets (or with `port: null` clears) which logical port a petreld
    /// port is.
    SetLocalPort {
        /// petreld port index.
        index: u16,
        /// The logical port.
        port: Option<LocalPortMsg>,
    },
}

/// Applies `changes` to `base`, all or nothing: the result shares every
/// datapath and stage the changes do not touch, has generation
/// `base.generation + 1` and is validated.
///
/// # Errors
/// The first change that names something missing, or a result that fails
/// validation; `base` is unchanged either way.
pub fn apply_changes(base: &Snapshot, changes: &[Change]) -> Result<Snapshot, ConvertError> {
    let mut s = base.clone();
    for c in changes {
        match c {
            Change::AddRule { datapath, pipeline, stage, rule } => {
                let rule = Rule::try_from(rule)?;
                let st = stage_mut(&mut s, *datapath, *pipeline, *stage)?;
                let mut rules = st.rules().to_vec();
                rules.push(rule);
                *st = Arc::new(Stage::with_conj(st.name.clone(), rules, st.conj_rules().to_vec()));
            }
            Change::RemoveRules { datapath, pipeline, stage, cookie } => {
                let st = stage_mut(&mut s, *datapath, *pipeline, *stage)?;
                let rules: Vec<Rule> = st.rules().iter().filter(|r| r.cookie != *cookie).cloned().collect();
                if rules.len() == st.rules().len() {
                    return Err(ConvertError::NoRule(*datapath, pipeline.name(), *stage, *cookie));
                }
                *st = Arc::new(Stage::with_conj(st.name.clone(), rules, st.conj_rules().to_vec()));
            }
            Change::SetBinding { datapath, port, binding, name } => {
                let dp = s.datapaths.get_mut(datapath).ok_or(ConvertError::NoDatapath(*datapath))?;
                let dp = Arc::make_mut(dp);
                match binding {
                    Some(b) => dp.ports.insert(*port, (*b).into()),
                    None => dp.ports.remove(port),
                };
                if let Some(n) = name {
                    dp.port_names.insert(*port, n.clone());
                }
            }
            Change::SetLocalPort { index, port } => {
                let i = usize::from(*index);
                if s.local_ports.len() <= i {
                    s.local_ports.resize(i + 1, None);
                }
                s.local_ports[i] = port.map(|p| table::LocalPort { datapath: p.datapath, port: p.port });
            }
        }
    }
    s.generation = base.generation + 1;
    s.validate()?;
    Ok(s)
}

fn stage_mut(s: &mut Snapshot, dp: u32, p: PipelineSel, stage: u16) -> Result<&mut Arc<Stage>, ConvertError> {
    let d = Arc::make_mut(s.datapaths.get_mut(&dp).ok_or(ConvertError::NoDatapath(dp))?);
    let pipe = match p {
        PipelineSel::Ingress => &mut d.ingress,
        PipelineSel::Egress => &mut d.egress,
    };
    pipe.stages.get_mut(usize::from(stage)).ok_or(ConvertError::NoStage(dp, p.name(), stage))
}
