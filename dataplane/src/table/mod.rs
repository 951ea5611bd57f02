//! The tables contract: what `petrel-ovn` compiles OVN's logical flows into
//! and what `petreld` runs. This module is the only place it is defined.
//!
//! A [`Snapshot`] is immutable. It holds logical [`Datapath`]s (one per
//! `Datapath_Binding`), each with an ingress and an egress [`Pipeline`] of
//! [`Stage`]s; a stage is a priority classifier of [`Rule`]s over a [`Key`]
//! (packet fields + OVN logical metadata) whose actions ([`Action`]) rewrite
//! the key, continue at a later stage, output, clone, meter, mirror, drop
//! with a reason or punt to the slow path. The physical side is explicit
//! too: which local port is which logical port ([`LocalPort`]), where each
//! logical port lives ([`Binding`]: a local port, a remote chassis reached
//! by Geneve, or a localnet VLAN on an uplink) and multicast groups.
//!
//! Semantics follow ovn-controller's OpenFlow translation
//! (`controller/physical.c`, ovn-architecture(7) "Architectural Physical
//! Life Cycle of a Packet"); [`exec`] runs them and documents each step.
//!
//! Conntrack (`ct_next`, `ct_commit`, `ct_lb`, …) has no action here yet: the
//! compiler refuses flows that use it, turning them into
//! `Drop { reason: Unsupported }` with a report, so nothing is approximated.
//! The place for it is a `Ct` action that recirculates into a given stage.

pub mod cache;
pub mod commit;
pub mod exec;
pub mod key;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::drop::DropReason;
use crate::flow::dpcls::{self, Classifier};
pub use key::{Field, Key, Meta, MLF_ALLOW_LOOPBACK, REG_FLAGS, REG_INPORT, REG_OUTPORT};

/// Multicast group keys start here (OVN: egress keys ≥ 32768 are groups).
pub const MC_GROUP_MIN: u32 = 32768;

/// Why a packet goes to the slow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlowPathReason {
    /// An ARP reply to generate (`arp { … }`).
    Arp,
    /// A neighbour advertisement to generate (`nd_na { … }`).
    NdNa,
    /// An ICMP error to generate (`icmp4 { … }`, `icmp6 { … }`).
    Icmp,
    /// A TCP reset to generate (`tcp_reset { … }`).
    TcpReset,
    /// `put_dhcp_opts` / `put_dhcpv6_opts`.
    Dhcp,
    /// MAC learning (`put_fdb`, `put_arp`, `put_nd`).
    Learn,
}

/// One action of a rule. Rules' action lists are shared (`Arc`), so a
/// snapshot rebuild that keeps a rule keeps its actions without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Continue at this stage of the current pipeline (OVN `next;` is the
    /// following stage). Must be later than the current stage.
    Next(u16),
    /// `field = value` under `mask` (OVN `eth.dst = …;`, `reg0[0..7] = 5;`).
    Set {
        /// Destination.
        field: Field,
        /// Value, aligned like the field (see [`Field::get`]).
        value: u128,
        /// Which bits to write.
        mask: u128,
    },
    /// `dst = src` (whole fields of equal width).
    Move {
        /// Source field.
        src: Field,
        /// Destination field.
        dst: Field,
    },
    /// `a <-> b` (whole fields of equal width).
    Exchange(Field, Field),
    /// `dst[dst_ofs..] = src[src_ofs..]` over `n_bits` bits (OVN moves of
    /// sub-fields, `reg0[15] = flags[12]`), bits numbered as [`Field::get`]
    /// numbers them (bit 0 is the least significant).
    MoveBits {
        /// Source field.
        src: Field,
        /// First source bit.
        src_ofs: u8,
        /// Destination field.
        dst: Field,
        /// First destination bit.
        dst_ofs: u8,
        /// Number of bits (1..=128).
        n_bits: u8,
    },
    /// Push an 802.1Q tag with this TCI.
    PushVlan(u16),
    /// Pop the outer VLAN tag.
    PopVlan,
    /// `output;`: in the ingress pipeline, hand the packet to `outport`
    /// (egress pipeline, tunnel or group); in the egress pipeline, deliver it.
    Output,
    /// Run these actions on a copy of the packet, then continue here.
    Clone(Arc<[Action]>),
    /// Police with meter `id` ([`Snapshot::meters`]): the packet goes on
    /// if the meter's bucket (this PMD's) holds its cost, else every copy
    /// the rest of the walk makes in this scope is dropped (`meter_drop`),
    /// as an OpenFlow `meter` action drops what follows it. A scope is
    /// the whole walk, a `clone`, a generated packet's actions, or one
    /// multicast member's egress pipeline. See [`exec`] for how the
    /// verdict is kept per packet while walks are cached.
    Meter(u32),
    /// Mirror with this session.
    Mirror(u32),
    /// Drop, counted under this reason. Refused constructs drop with
    /// [`DropReason::Unsupported`].
    Drop(DropReason),
    /// Punt to the slow path, which builds a reply or learns.
    SlowPath(SlowPathReason),
    /// Generate a new packet from this one, as ovn-controller's pinctrl
    /// does for OVN's `nd_na { … }`, `reject { … }`, `icmp4 { … }`, … : the
    /// generated packet's key is made from the current key (see
    /// [`exec`]), `actions` run on it as on a clone, and its copies are
    /// built into fresh packets by `action::generate`. The walk then
    /// continues here with the original key, unchanged.
    Generate {
        /// Which packet to make.
        kind: GenKind,
        /// What to do with it (OVN's nested actions).
        actions: Arc<[Action]>,
    },
    /// Continue at stage `stage` of the ingress (`egress == false`) or
    /// egress pipeline, with no loopback check and no register clearing
    /// (OVN `next(pipeline=…, table=…)`, which only generated packets use:
    /// ovn-controller resubmits straight into that table). May go in any
    /// direction; the walk's depth and step bounds end it.
    Jump {
        /// Into the egress pipeline?
        egress: bool,
        /// Stage index in that pipeline.
        stage: u16,
    },
}

/// The packet-generating OVN actions (pinctrl's opcodes). What each makes:
///
/// | kind | pinctrl | generated packet |
/// | --- | --- | --- |
/// | `Arp` | `pinctrl_handle_arp` | ARP request for `ip4.dst` from `eth.src`/`ip4.src` |
/// | `NdNa`, `NdNaRouter` | `pinctrl_handle_nd_na` | NA for `nd.target` to `ip6.src`, flags S+O (+R) |
/// | `Icmp` | `pinctrl_handle_icmp(set_icmp_code)` | ICMP(v6) destination unreachable, code 1 (3/4 for UDP) |
/// | `IcmpError` | `pinctrl_handle_icmp` | the same, always code 1 |
/// | `TcpReset` | `pinctrl_handle_tcp_reset` | TCP RST+ACK, ports swapped |
/// | `Reject` | `pinctrl_handle_reject` | RST for TCP, else ICMP with code; eth and IP addresses swapped; TCP RST and ICMP errors are not answered |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenKind {
    /// `arp { … }`.
    Arp,
    /// `nd_na { … }`.
    NdNa,
    /// `nd_na_router { … }`.
    NdNaRouter,
    /// `icmp4 { … }` / `icmp6 { … }`.
    Icmp,
    /// `icmp4_error { … }` / `icmp6_error { … }`.
    IcmpError,
    /// `tcp_reset { … }`.
    TcpReset,
    /// `reject { … }`.
    Reject,
}

impl GenKind {
    /// The OVN action name.
    pub fn name(self) -> &'static str {
        match self {
            GenKind::Arp => "arp",
            GenKind::NdNa => "nd_na",
            GenKind::NdNaRouter => "nd_na_router",
            GenKind::Icmp => "icmp",
            GenKind::IcmpError => "icmp_error",
            GenKind::TcpReset => "tcp_reset",
            GenKind::Reject => "reject",
        }
    }

    /// Parses [`GenKind::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        [
            GenKind::Arp,
            GenKind::NdNa,
            GenKind::NdNaRouter,
            GenKind::Icmp,
            GenKind::IcmpError,
            GenKind::TcpReset,
            GenKind::Reject,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// A rule of a stage: `key & mask == value` at `priority` runs `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Higher wins.
    pub priority: u32,
    /// Masked value to match (`value & !mask == 0`).
    pub value: [u64; Key::WORDS],
    /// Which key bits matter.
    pub mask: [u64; Key::WORDS],
    /// What to do.
    pub actions: Arc<[Action]>,
    /// Where it came from (first 64 bits of the logical flow UUID), for
    /// trace, dumps and reports.
    pub cookie: u64,
}

impl Rule {
    /// A rule matching `fields` (field, value, mask) exactly as given.
    pub fn new(priority: u32, matches: &[(Field, u128, u128)], actions: Vec<Action>, cookie: u64) -> Self {
        let mut v = Key::default();
        let mut m = Key::default();
        for &(f, value, mask) in matches {
            f.set(&mut v, value, mask);
            f.set(&mut m, mask, u128::MAX);
        }
        let (value, mask) = (v.words(), m.words());
        let mut value2 = [0u64; Key::WORDS];
        for i in 0..Key::WORDS {
            value2[i] = value[i] & mask[i];
        }
        Rule { priority, value: value2, mask, actions: actions.into(), cookie }
    }

    /// Whether `words` (a key's words) matches.
    #[inline]
    pub fn matches(&self, words: &[u64; Key::WORDS]) -> bool {
        words.iter().zip(&self.mask).zip(&self.value).all(|((k, m), v)| k & m == *v)
    }
}

/// One dimension of a [`ConjRule`]: the key must match at least one of
/// these (value, mask) alternatives. Alternatives are grouped by mask, so a
/// check is one masked hash lookup per distinct mask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dim {
    /// (mask, masked values).
    groups: Vec<([u64; Key::WORDS], std::collections::HashSet<[u64; Key::WORDS]>)>,
}

impl Dim {
    /// A dimension from (value, mask) alternatives.
    pub fn new(alts: impl IntoIterator<Item = ([u64; Key::WORDS], [u64; Key::WORDS])>) -> Self {
        let mut d = Dim::default();
        for (v, m) in alts {
            let mut mv = [0u64; Key::WORDS];
            for i in 0..Key::WORDS {
                mv[i] = v[i] & m[i];
            }
            match d.groups.iter_mut().find(|g| g.0 == m) {
                Some(g) => {
                    g.1.insert(mv);
                }
                None => d.groups.push((m, [mv].into_iter().collect())),
            }
        }
        d
    }

    /// The alternatives, as (value, mask).
    pub fn alternatives(&self) -> impl Iterator<Item = ([u64; Key::WORDS], [u64; Key::WORDS])> + '_ {
        self.groups.iter().flat_map(|(m, vs)| vs.iter().map(move |v| (*v, *m)))
    }

    /// Number of alternatives.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.1.len()).sum()
    }

    /// Whether there are none (then nothing matches).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn matches(&self, words: &[u64; Key::WORDS]) -> bool {
        self.groups.iter().any(|(m, vs)| {
            let mut k = [0u64; Key::WORDS];
            for i in 0..Key::WORDS {
                k[i] = words[i] & m[i];
            }
            vs.contains(&k)
        })
    }
}

/// A conjunctive rule (OVS `conjunction`, as ovn-controller uses it for
/// `a == {set} && b == {set}`): it matches when its base rule's match does
/// and every dimension has a matching alternative, without expanding the
/// cross product into `|a| x |b|` rules. Looked up only after the stage's
/// classifier, and only above the priority of what that found (ties go to
/// the plain rule), so stages without them cost nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConjRule {
    /// Priority, the common part of the match, actions and cookie.
    pub rule: Rule,
    /// Dimensions (at least two).
    pub dims: Vec<Dim>,
}

impl ConjRule {
    /// Whether `words` matches.
    #[inline]
    pub fn matches(&self, words: &[u64; Key::WORDS]) -> bool {
        self.rule.matches(words) && self.dims.iter().all(|d| d.matches(words))
    }
}

/// One stage (logical table) of a pipeline: its rules, and a tuple-space
/// classifier over them (`flow::dpcls`) that finds the highest-priority
/// match, equal priorities going to the rule listed first.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Human name (`ls_in_port_sec_l2`), for dumps and trace.
    pub name: String,
    rules: Vec<Rule>,
    /// Index into `rules` of each classifier entry.
    cls: Classifier<{ Key::WORDS }, u32>,
    /// Conjunctive rules, highest priority first.
    conj: Vec<ConjRule>,
}

impl Stage {
    /// A stage with these rules (built once, off the fast path).
    pub fn new(name: impl Into<String>, rules: Vec<Rule>) -> Self {
        let mut rules = rules;
        // Highest priority first; equal priorities keep their order, which is
        // also the classifier's insertion order, so ties resolve the same way
        // in dumps, in trace and in lookups.
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let mut cls = Classifier::new();
        for (i, r) in rules.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 rules per stage");
            cls.insert(dpcls::Rule::new(r.value, r.mask, r.priority), i);
        }
        Stage { name: name.into(), rules, cls, conj: Vec::new() }
    }

    /// A stage with rules and conjunctive rules.
    pub fn with_conj(name: impl Into<String>, rules: Vec<Rule>, conj: Vec<ConjRule>) -> Self {
        let mut st = Stage::new(name, rules);
        let mut conj = conj;
        conj.sort_by_key(|c| std::cmp::Reverse(c.rule.priority));
        st.conj = conj;
        st
    }

    /// The conjunctive rules, highest priority first.
    pub fn conj_rules(&self) -> &[ConjRule] {
        &self.conj
    }

    /// The rules, highest priority first.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Distinct masks (classifier subtables), for stats and dumps.
    pub fn n_masks(&self) -> usize {
        self.cls.n_subtables()
    }

    /// The highest-priority rule matching `words`.
    #[inline]
    pub fn lookup(&self, words: &[u64; Key::WORDS]) -> Option<&Rule> {
        let r = self.cls.lookup(words).and_then(|(_, i)| self.rules.get(*i as usize));
        if self.conj.is_empty() {
            return r;
        }
        let floor = r.map(|r| r.priority);
        for c in &self.conj {
            if floor.is_some_and(|p| c.rule.priority <= p) {
                break;
            }
            if c.matches(words) {
                return Some(&c.rule);
            }
        }
        r
    }
}

/// An ordered list of stages.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Stage `i` is OVN table `i` of this pipeline.
    pub stages: Vec<Arc<Stage>>,
}

/// Where a logical port lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// On this node: `petreld` port index, with a VLAN tag for child ports.
    Local {
        /// `petreld` port index.
        port: u16,
        /// Tag to push (child port of a parent VIF).
        vlan: Option<u16>,
    },
    /// On another chassis, reached through a Geneve tunnel.
    Remote {
        /// Index into [`Snapshot::chassis`].
        chassis: u16,
    },
    /// A localnet port: a physical network on an uplink.
    Localnet {
        /// `petreld` port index of the uplink.
        uplink: u16,
        /// VLAN tag of the physical network, if any.
        vlan: Option<u16>,
    },
    /// Not here, on a switch with a localnet port bridged here: reached
    /// through the localnet port, as ovn-controller's physical.c does (the
    /// outport becomes the localnet port, whose egress pipeline and
    /// loopback check then apply; floods skip it, the localnet port's own
    /// membership carries them).
    ViaLocalnet {
        /// Logical port key of the switch's localnet port.
        localnet: u32,
    },
    /// A port Petrel cannot deliver to (a patch port to a logical router,
    /// a chassisredirect or vtep port): packets sent to it are dropped as
    /// `unsupported`, and the compiler reports it.
    Refused,
}

/// A logical datapath (logical switch or router).
#[derive(Debug, Clone, Default)]
pub struct Datapath {
    /// `Datapath_Binding.tunnel_key` (the Geneve VNI).
    pub key: u32,
    /// Name, for dumps.
    pub name: String,
    /// The ingress pipeline.
    pub ingress: Pipeline,
    /// The egress pipeline.
    pub egress: Pipeline,
    /// Logical port key → where it lives.
    pub ports: BTreeMap<u32, Binding>,
    /// Multicast group key → member logical port keys.
    pub groups: BTreeMap<u32, Arc<[u32]>>,
    /// Logical port key → name, for dumps and trace.
    pub port_names: BTreeMap<u32, String>,
}

/// What a local `petreld` port is in OVN terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalPort {
    /// Datapath key.
    pub datapath: u32,
    /// Logical port key.
    pub port: u32,
}

/// A remote chassis reachable by Geneve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChassis {
    /// Chassis name.
    pub name: String,
    /// Its tunnel endpoint.
    pub ip: IpAddr,
}

/// Most meters a snapshot may hold: meter ids are below this (each PMD
/// keeps a bucket per id, sized once).
pub const MAX_METERS: usize = 4096;

/// A meter: a token bucket with one drop band (OpenFlow meters as OVN
/// installs them: `set_meter`'s and the Southbound `Meter` rows with one
/// `drop` band).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Meter {
    /// Identity across snapshots: `set_meter <logical flow>` (one meter per
    /// logical flow, as ovn-controller's meter table keys them; the flow
    /// named by pipeline, table, priority and match, so a rate change that
    /// makes northd replace the flow keeps the meter) or the Southbound
    /// `Meter.name`. A PMD keeps a meter's bucket across
    /// republishes while its id and name stay; a change of rate or burst
    /// is applied to the bucket in place (tokens kept).
    pub name: String,
    /// Units per second (bit/s or packet/s); at least 1.
    pub rate: u64,
    /// Bucket size in units; at least 1.
    pub burst: u64,
    /// What `rate` and `burst` count (bits of the frame as received, or packets).
    pub unit: crate::qos::Unit,
}

impl Meter {
    /// PMD `i`'s share of this meter when `n` PMDs run it (each its own
    /// bucket: see `qos::meter`), on a TSC of `hz`. A share never falls
    /// below one unit of rate or burst.
    ///
    /// # Errors
    /// A zero TSC frequency.
    pub fn profile(&self, i: usize, n: usize, hz: u64) -> Result<crate::qos::Profile, crate::qos::ProfileError> {
        let (r, b) = (crate::qos::share(self.rate, i, n).max(1), crate::qos::share(self.burst, i, n).max(1));
        crate::qos::Profile::new(r, b, self.unit, hz)
    }
}

/// An immutable, complete table set.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every published change; cached flows of other
    /// generations are invalid.
    pub generation: u64,
    /// Datapaths by key.
    pub datapaths: BTreeMap<u32, Arc<Datapath>>,
    /// By `petreld` port index: the logical port it is, if bound.
    pub local_ports: Vec<Option<LocalPort>>,
    /// Remote chassis, indexed by [`Binding::Remote`].
    pub chassis: Vec<RemoteChassis>,
    /// `(petreld port, VLAN id)` → the logical port a tagged packet on that
    /// port belongs to (OVN child ports behind a parent VIF, tagged
    /// localnet networks on an uplink). The tag is removed before the
    /// ingress pipeline, as ovn-controller's `physical.c` strips it.
    pub vlan_ports: BTreeMap<(u16, u16), LocalPort>,
    /// Meters by id ([`Action::Meter`]); `None`: an id whose meter Petrel
    /// cannot apply (the compiler reports why): packets reaching it are
    /// dropped as `unsupported`.
    pub meters: Vec<Option<Meter>>,
}

/// Where `petreld` publishes snapshots and PMDs read them: RCU-style, a
/// PMD picks up a new snapshot between bursts without a lock
/// (`arc_swap::Cache` per PMD), and the old one is freed when the last
/// reader lets go.
pub type Tables = Arc<arc_swap::ArcSwap<Snapshot>>;

/// A handle with an empty snapshot (generation 0).
pub fn new_tables() -> Tables {
    Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::default()))
}

/// Validates `snap`, gives it the next generation and publishes it.
///
/// # Errors
/// The snapshot's first invariant violation; nothing is published then.
pub fn publish(tables: &Tables, mut snap: Snapshot) -> Result<u64, SnapshotError> {
    snap.validate()?;
    // Only the control thread publishes, so load-then-store cannot race.
    let generation = tables.load().generation + 1;
    snap.generation = generation;
    tables.store(Arc::new(snap));
    Ok(generation)
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum SnapshotError {
    /// datapath {0}: stage {1} rule {2:#x}: `next` to stage {3}, which is not after it or does not exist
    BadNext(u32, String, u64, u16),
    /// datapath {0}: port {1} is bound to remote chassis {2}, which does not exist
    UnknownChassis(u32, u32, u16),
    /// local port {0} is bound to datapath {1}, which does not exist
    UnknownDatapath(usize, u32),
    /// datapath {0}: rule {1:#x}: {2} and {3} have different widths
    WidthMismatch(u32, u64, String, String),
    /// datapath {0}: rule {1:#x}: bit move out of the range of {2}
    BadBits(u32, u64, String),
    /// datapath {0}: stage {1} rule {2:#x}: jump to {3} stage {4}, which does not exist or is outside a generated packet
    BadJump(u32, String, u64, &'static str, u16),
    /// datapath {0}: rule {1:#x}: meter {2} is out of range (at most MAX_METERS meters)
    BadMeter(u32, u64, u32),
    /// {0} meters: at most MAX_METERS
    TooManyMeters(usize),
    /// meter {0} ({1}): zero rate or burst
    ZeroMeter(usize, String),
}

impl Snapshot {
    /// Whether port `index` has tagged logical ports behind it.
    pub fn is_vlan_bound(&self, index: usize) -> bool {
        let Ok(p) = u16::try_from(index) else { return false };
        self.vlan_ports.range((p, 0)..=(p, u16::MAX)).next().is_some()
    }

    /// Checks the invariants the executor relies on: `next` only moves
    /// forward (so every walk ends), bindings point at things that exist,
    /// moved fields have equal widths.
    ///
    /// # Errors
    /// The first violation found.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        if self.meters.len() > MAX_METERS {
            return Err(SnapshotError::TooManyMeters(self.meters.len()));
        }
        for (i, m) in self.meters.iter().enumerate() {
            if let Some(m) = m.as_ref().filter(|m| m.rate == 0 || m.burst == 0) {
                return Err(SnapshotError::ZeroMeter(i, m.name.clone()));
            }
        }
        for (&(i, _), lp) in &self.vlan_ports {
            if !self.datapaths.contains_key(&lp.datapath) {
                return Err(SnapshotError::UnknownDatapath(usize::from(i), lp.datapath));
            }
        }
        for (i, lp) in self.local_ports.iter().enumerate() {
            if let Some(lp) = lp {
                if !self.datapaths.contains_key(&lp.datapath) {
                    return Err(SnapshotError::UnknownDatapath(i, lp.datapath));
                }
            }
        }
        for dp in self.datapaths.values() {
            for (port, b) in &dp.ports {
                if let Binding::Remote { chassis } = b {
                    if usize::from(*chassis) >= self.chassis.len() {
                        return Err(SnapshotError::UnknownChassis(dp.key, *port, *chassis));
                    }
                }
            }
            for p in [&dp.ingress, &dp.egress] {
                for (si, st) in p.stages.iter().enumerate() {
                    for r in st.rules().iter().chain(st.conj_rules().iter().map(|c| &c.rule)) {
                        let cx = Check { dp, st, si, n: p.stages.len(), r, generated: false };
                        check_actions(&cx, &r.actions)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where the actions being checked are.
struct Check<'a> {
    dp: &'a Datapath,
    st: &'a Stage,
    si: usize,
    n: usize,
    r: &'a Rule,
    /// Inside a [`Action::Generate`].
    generated: bool,
}

fn check_actions(cx: &Check<'_>, acts: &[Action]) -> Result<(), SnapshotError> {
    let (dp, st, si, n, r) = (cx.dp.key, cx.st, cx.si, cx.n, cx.r);
    for a in acts {
        match a {
            Action::Next(t) if usize::from(*t) <= si || usize::from(*t) >= n => {
                return Err(SnapshotError::BadNext(dp, st.name.clone(), r.cookie, *t));
            }
            Action::Jump { egress, stage } => {
                let (p, name) = if *egress { (&cx.dp.egress, "egress") } else { (&cx.dp.ingress, "ingress") };
                if !cx.generated || usize::from(*stage) >= p.stages.len() {
                    return Err(SnapshotError::BadJump(dp, st.name.clone(), r.cookie, name, *stage));
                }
            }
            Action::Generate { actions, .. } => check_actions(&Check { generated: true, ..*cx }, actions)?,
            Action::Move { src, dst } | Action::Exchange(src, dst) if src.bits() != dst.bits() => {
                return Err(SnapshotError::WidthMismatch(dp, r.cookie, format!("{src:?}"), format!("{dst:?}")));
            }
            Action::MoveBits { src, src_ofs, dst, dst_ofs, n_bits } => {
                let n = u32::from(*n_bits);
                for (f, o) in [(src, src_ofs), (dst, dst_ofs)] {
                    if n == 0 || u32::from(*o) + n > f.bits() {
                        return Err(SnapshotError::BadBits(dp, r.cookie, format!("{f:?}")));
                    }
                }
            }
            Action::Clone(inner) => check_actions(cx, inner)?,
            Action::Meter(id) if usize::try_from(*id).map_or(true, |i| i >= MAX_METERS) => {
                return Err(SnapshotError::BadMeter(dp, r.cookie, *id));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
