//! Runs a packet's key through a [`Snapshot`]'s pipelines and collects
//! where copies go, with what final key.
//!
//! Semantics (ovn-controller's `physical.c` translation; ovn-architecture(7)):
//!
//! - From a local port bound to logical port P of datapath D: `metadata = D`,
//!   `inport = P`, ingress stage 0.
//! - A stage runs the actions of its highest-priority matching rule; no
//!   match drops (`stage_miss`), as an OpenFlow table miss does.
//! - `next` and `output` behave like OpenFlow `resubmit`: the walk continues
//!   there and then comes back to run the rule's remaining actions; changes
//!   made meanwhile persist. `clone` runs on a copy and changes nothing.
//! - Ingress `output` hands the packet to `outport`: a multicast group is
//!   expanded (each local member once through the egress pipeline, each
//!   remote chassis once through a tunnel carrying the group key); a remote
//!   port goes through a tunnel carrying its key (its egress pipeline runs
//!   there); a local or localnet port runs the egress pipeline here.
//! - Egress `output` delivers to the outport's binding, except back to the
//!   inport without `flags.loopback` (`loopback` drop).
//! - From a tunnel: `metadata = VNI`, `inport`/`outport` from the OVN
//!   option, `flags.rx_from_tunnel`; the ingress pipeline already ran on the
//!   sender, so it goes straight to `outport` and only to local ports.
//!
//! - A packet-generating action ([`Action::Generate`]) makes the key of the
//!   generated packet from the current one ([`generated_key`]: the fields
//!   pinctrl copies or swaps), runs its nested actions on it as on a clone,
//!   and every copy it emits carries the [`GenPacket`] to build. A `reject`
//!   of a TCP RST or an ICMP(v6) destination-unreachable is dropped
//!   (`reject_ignored`), as pinctrl ignores it. [`Action::Jump`] (only
//!   there) resubmits into a stage of either pipeline.
//!
//! - Meters ([`Action::Meter`]): the walk does not decide; a meter's
//!   verdict depends on its bucket at the packet's time, not on the key,
//!   while a walk's result is cached per flow. So the walk records each
//!   meter it passes ([`MeterHit`]: which copies follow it in its scope)
//!   and goes on as if the meter passed; whoever applies the outcome (or a
//!   cached verdict of it) runs the meters in order for every packet
//!   (`qos::meter::Meters::run`) and drops the copies of the meters that
//!   refuse it. A scope is the whole walk, a `clone`, a generated packet's
//!   actions, or one multicast member's egress pipeline: a meter that
//!   refuses drops what follows it in its scope, and the meters in that
//!   range are not run (their tokens are not taken), as an OpenFlow meter
//!   ends the actions after it. A meter id with no meter in the snapshot
//!   drops as `unsupported`.
//!
//! Every walk ends: `next` only goes forward (checked by
//! [`Snapshot::validate`]), nesting is bounded by [`MAX_DEPTH`] and total
//! work by [`MAX_STEPS`]. Nothing here allocates; tracing compiles away
//! with [`NoTrace`].

use super::{
    Action, Binding, Datapath, GenKind, Key, Meter, Rule, SlowPathReason, Snapshot, MC_GROUP_MIN, MLF_ALLOW_LOOPBACK,
};
use super::{REG_FLAGS, REG_INPORT, REG_OUTPORT};
pub use crate::action::generate::GenPacket;
use crate::drop::DropReason;
use crate::flow::{FlowKey, FLOW_NW_FRAG_LATER};

/// Most copies one packet may produce.
pub const MAX_EMITS: usize = 16;
/// Deepest nesting of resubmits and clones.
pub const MAX_DEPTH: usize = 64;
/// Most rules one packet may run.
pub const MAX_STEPS: u32 = 1024;
/// Logical registers reg0..reg9, cleared between the pipelines.
const N_LOG_REGS: usize = 10;
/// OVN `MLF_RX_FROM_TUNNEL`.
pub const MLF_RX_FROM_TUNNEL: u32 = 1 << 16;
/// Most remote chassis one flood reaches (dedup set size).
const MAX_CHASSIS_PER_FLOOD: usize = 64;

/// Most meters one walk may pass (more drop the branch as `unsupported`).
pub const MAX_WALK_METERS: usize = 8;

/// A meter the walk passed: run it per packet; if it refuses, copies
/// `from..to` are dropped and the meters after it up to `skip` are not run
/// (they are inside its scope, after it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MeterHit {
    /// Meter id.
    pub id: u32,
    /// Index of the first copy made after the meter.
    pub from: u8,
    /// End (exclusive) of the copies of its scope.
    pub to: u8,
    /// Index of the first meter after its scope.
    pub skip: u8,
}

/// `to` of a meter whose scope is still open.
const OPEN: u8 = u8::MAX;

/// Where one copy of the packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A local `petreld` port, with a tag to push for child ports.
    Local {
        /// Port index.
        port: u16,
        /// VLAN tag.
        vlan: Option<u16>,
    },
    /// A Geneve tunnel to a remote chassis.
    Tunnel {
        /// Index into [`Snapshot::chassis`].
        chassis: u16,
        /// VNI (datapath key).
        vni: u32,
        /// OVN option ingress key.
        ingress: u16,
        /// OVN option egress key.
        egress: u16,
    },
    /// A physical network on an uplink.
    Localnet {
        /// Uplink port index.
        uplink: u16,
        /// VLAN tag.
        vlan: Option<u16>,
    },
    /// The slow path.
    SlowPath(SlowPathReason),
    /// MAC learning (`put_fdb(inport, eth.src)`): the packet's `eth.src`
    /// was seen on this logical port; petreld records it for petrel-ovn,
    /// which writes the Southbound `FDB` row (ovn-controller's pinctrl).
    Learn {
        /// Datapath key.
        datapath: u32,
        /// Logical port key.
        port: u32,
    },
}

/// One copy: its final key (packet fields to commit) and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emit {
    /// The key as the pipeline left it.
    pub key: Key,
    /// Destination.
    pub target: Target,
    /// A generated packet to build from `key` (and the original packet),
    /// instead of a copy of the original.
    pub gen: Option<GenPacket>,
}

/// What a walk produced. Reused across packets (no allocation).
#[derive(Debug, Clone)]
pub struct Outcome {
    emits: [Emit; MAX_EMITS],
    n: usize,
    /// The first reason a branch was dropped for, if any.
    pub drop: Option<DropReason>,
    /// Rules run.
    pub steps: u32,
    meters: [MeterHit; MAX_WALK_METERS],
    n_meters: usize,
}

impl Default for Outcome {
    fn default() -> Self {
        let e = Emit { key: Key::default(), target: Target::Local { port: 0, vlan: None }, gen: None };
        Outcome {
            emits: [e; MAX_EMITS],
            n: 0,
            drop: None,
            steps: 0,
            meters: [MeterHit::default(); MAX_WALK_METERS],
            n_meters: 0,
        }
    }
}

impl Outcome {
    /// The copies to send.
    pub fn emits(&self) -> &[Emit] {
        &self.emits[..self.n]
    }

    /// Whether nothing is sent; then [`Outcome::drop`] says why.
    pub fn is_drop(&self) -> bool {
        self.n == 0
    }

    /// The meters to run for each packet, in walk order.
    pub fn meters(&self) -> &[MeterHit] {
        &self.meters[..self.n_meters]
    }

    fn reset(&mut self) {
        self.n = 0;
        self.drop = None;
        self.steps = 0;
        self.n_meters = 0;
    }

    /// Closes the scopes of the meters from `m0` on that are still open:
    /// their scope ends at the copies made so far.
    fn close_meters(&mut self, m0: usize) {
        let (to, skip) = (u8::try_from(self.n).unwrap_or(OPEN - 1), u8::try_from(self.n_meters).unwrap_or(OPEN));
        for h in &mut self.meters[m0..self.n_meters] {
            if h.to == OPEN {
                h.to = to;
                h.skip = skip;
            }
        }
    }
}

/// What a traced walk reports, step by step.
#[derive(Debug)]
pub enum TraceEvent<'a> {
    /// A stage was looked up.
    Stage {
        /// Datapath.
        dp: &'a Datapath,
        /// Egress pipeline?
        egress: bool,
        /// Stage index.
        stage: usize,
        /// The matching rule, or `None` on a miss.
        rule: Option<&'a Rule>,
        /// Nesting depth (for indentation).
        depth: usize,
    },
    /// An action is about to run.
    Action(&'a Action, usize),
    /// A copy is emitted.
    Emit(&'a Emit, usize),
    /// A branch was dropped.
    Drop(DropReason, usize),
}

/// Receives trace events.
pub trait Tracer {
    /// Whether events are wanted (lets the compiler remove the calls).
    const ON: bool;
    /// One event.
    fn event(&mut self, e: TraceEvent<'_>);
}

/// The fast path's tracer: does nothing, costs nothing.
#[derive(Debug, Default)]
pub struct NoTrace;

impl Tracer for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn event(&mut self, _: TraceEvent<'_>) {}
}

struct Walk<'o, T: Tracer> {
    out: &'o mut Outcome,
    tr: &'o mut T,
    /// The snapshot's meters.
    meters: &'o [Option<Meter>],
    /// Inside a generated packet's actions: what its copies are.
    gen: Option<GenPacket>,
}

/// Runs a packet received on local port `port` (its extracted `flow`).
pub fn run_from_port<T: Tracer>(snap: &Snapshot, port: u16, flow: &FlowKey, out: &mut Outcome, tr: &mut T) {
    out.reset();
    let mut w = Walk { out, tr, meters: &snap.meters, gen: None };
    let mut key = Key { flow: *flow, ..Key::default() };
    // A tagged packet of a child port or a tagged localnet network: the
    // tag says which logical port it is, and is removed (physical.c).
    let tagged = (flow.vlan_tci[0] != 0).then(|| snap.vlan_ports.get(&(port, flow.vlan_tci[0] & 0x0fff))).flatten();
    let lp = match tagged {
        Some(lp) => {
            key.flow.vlan_tci[0] = key.flow.vlan_tci[1];
            key.flow.vlan_tci[1] = 0;
            if key.flow.vlan_tci[0] == 0 {
                key.flow.vlan_tpid = 0;
            }
            lp
        }
        None => match snap.local_ports.get(usize::from(port)) {
            Some(Some(lp)) => lp,
            _ => return w.drop(DropReason::NotBound, 0),
        },
    };
    let Some(dp) = snap.datapaths.get(&lp.datapath) else {
        return w.drop(DropReason::NotBound, 0);
    };
    key.meta.metadata = u64::from(dp.key);
    key.meta.regs[REG_INPORT] = lp.port;
    w.stage(dp, false, 0, &mut key, 0);
    w.out.close_meters(0);
}

/// Runs a packet decapsulated from Geneve with this VNI and OVN option keys.
pub fn run_from_tunnel<T: Tracer>(
    snap: &Snapshot,
    vni: u32,
    ingress: u16,
    egress: u16,
    flow: &FlowKey,
    out: &mut Outcome,
    tr: &mut T,
) {
    out.reset();
    let mut w = Walk { out, tr, meters: &snap.meters, gen: None };
    let Some(dp) = snap.datapaths.get(&vni) else {
        return w.drop(DropReason::UnknownDatapath, 0);
    };
    let mut key = Key { flow: *flow, ..Key::default() };
    key.meta.metadata = u64::from(dp.key);
    key.meta.regs[REG_INPORT] = u32::from(ingress);
    key.meta.regs[REG_OUTPORT] = u32::from(egress);
    key.meta.regs[REG_FLAGS] |= MLF_RX_FROM_TUNNEL;
    w.deliver(dp, &mut key, 0);
    w.out.close_meters(0);
}

impl<T: Tracer> Walk<'_, T> {
    fn drop(&mut self, why: DropReason, depth: usize) {
        if T::ON {
            self.tr.event(TraceEvent::Drop(why, depth));
        }
        if self.out.drop.is_none() {
            self.out.drop = Some(why);
        }
    }

    fn emit(&mut self, key: &Key, target: Target, depth: usize) {
        if self.out.n == MAX_EMITS {
            return self.drop(DropReason::TooManyOutputs, depth);
        }
        let e = Emit { key: *key, target, gen: self.gen };
        self.out.emits[self.out.n] = e;
        self.out.n += 1;
        if T::ON {
            self.tr.event(TraceEvent::Emit(&e, depth));
        }
    }

    /// Looks up stage `si` and runs its rule.
    fn stage(&mut self, dp: &Datapath, egress: bool, si: usize, key: &mut Key, depth: usize) {
        let pipeline = if egress { &dp.egress } else { &dp.ingress };
        let Some(stage) = pipeline.stages.get(si) else {
            // Running off the end of a pipeline is a miss too.
            return self.drop(DropReason::StageMiss, depth);
        };
        if depth >= MAX_DEPTH || self.out.steps >= MAX_STEPS {
            return self.drop(DropReason::PipelineTooDeep, depth);
        }
        self.out.steps += 1;
        let words = key.words();
        let rule = stage.lookup(&words);
        if T::ON {
            self.tr.event(TraceEvent::Stage { dp, egress, stage: si, rule, depth });
        }
        match rule {
            None => self.drop(DropReason::StageMiss, depth),
            Some(r) => self.actions(dp, egress, &r.actions, key, depth),
        }
    }

    fn actions(&mut self, dp: &Datapath, egress: bool, acts: &[Action], key: &mut Key, depth: usize) {
        for a in acts {
            if T::ON {
                self.tr.event(TraceEvent::Action(a, depth));
            }
            match a {
                Action::Next(t) => self.stage(dp, egress, usize::from(*t), key, depth + 1),
                Action::Set { field, value, mask } => field.set(key, *value, *mask),
                Action::Move { src, dst } => {
                    let v = src.get(key);
                    dst.set(key, v, u128::MAX);
                }
                Action::Exchange(a, b) => {
                    let (va, vb) = (a.get(key), b.get(key));
                    a.set(key, vb, u128::MAX);
                    b.set(key, va, u128::MAX);
                }
                Action::MoveBits { src, src_ofs, dst, dst_ofs, n_bits } => {
                    let ones = if *n_bits >= 128 { u128::MAX } else { (1u128 << n_bits) - 1 };
                    let v = (src.get(key) >> src_ofs) & ones;
                    dst.set(key, v << dst_ofs, ones << dst_ofs);
                }
                Action::PushVlan(tci) => {
                    key.flow.vlan_tci[1] = key.flow.vlan_tci[0];
                    key.flow.vlan_tci[0] = tci | crate::flow::VLAN_CFI;
                    key.flow.vlan_tpid = 0x8100;
                }
                Action::PopVlan => {
                    key.flow.vlan_tci[0] = key.flow.vlan_tci[1];
                    key.flow.vlan_tci[1] = 0;
                    if key.flow.vlan_tci[0] == 0 {
                        key.flow.vlan_tpid = 0;
                    }
                }
                Action::Output => {
                    if egress {
                        self.deliver_egress(dp, key, depth + 1);
                    } else {
                        self.deliver(dp, key, depth + 1);
                    }
                }
                Action::Clone(inner) => {
                    if depth + 1 >= MAX_DEPTH {
                        return self.drop(DropReason::PipelineTooDeep, depth);
                    }
                    let mut copy = *key;
                    let m0 = self.out.n_meters;
                    self.actions(dp, egress, inner, &mut copy, depth + 1);
                    self.out.close_meters(m0);
                }
                Action::Meter(id) => {
                    let known = usize::try_from(*id).ok().and_then(|i| self.meters.get(i)).is_some_and(Option::is_some);
                    if !known || self.out.n_meters == MAX_WALK_METERS {
                        return self.drop(DropReason::Unsupported, depth);
                    }
                    let from = u8::try_from(self.out.n).unwrap_or(OPEN - 1);
                    self.out.meters[self.out.n_meters] = MeterHit { id: *id, from, to: OPEN, skip: OPEN };
                    self.out.n_meters += 1;
                }
                // Mirroring is not in the fast path yet: running a rule that
                // asks for it without doing it would forward differently, so
                // the packet is refused instead.
                Action::Mirror(_) => return self.drop(DropReason::Unsupported, depth),
                Action::Drop(why) => return self.drop(*why, depth),
                Action::SlowPath(SlowPathReason::Learn) => {
                    let t = Target::Learn { datapath: key.datapath(), port: key.inport() };
                    self.emit(key, t, depth);
                }
                Action::SlowPath(why) => self.emit(key, Target::SlowPath(*why), depth),
                Action::Generate { kind, actions } => {
                    if depth + 1 >= MAX_DEPTH {
                        return self.drop(DropReason::PipelineTooDeep, depth);
                    }
                    match generated_key(*kind, &key.flow) {
                        Ok((what, flow)) => {
                            let mut g = Key { flow, meta: key.meta };
                            let outer = self.gen.replace(what);
                            let m0 = self.out.n_meters;
                            self.actions(dp, egress, actions, &mut g, depth + 1);
                            self.out.close_meters(m0);
                            self.gen = outer;
                        }
                        // Not an error of this branch: the original goes on.
                        Err(why) => self.drop(why, depth),
                    }
                }
                Action::Jump { egress: e, stage } => self.stage(dp, *e, usize::from(*stage), key, depth + 1),
            }
        }
    }

    /// Ingress `output`: to the outport's egress pipeline, tunnel or group.
    fn deliver(&mut self, dp: &Datapath, key: &mut Key, depth: usize) {
        let outport = key.outport();
        let from_tunnel = key.meta.regs[REG_FLAGS] & MLF_RX_FROM_TUNNEL != 0;
        if outport >= MC_GROUP_MIN {
            let Some(members) = dp.groups.get(&outport) else {
                return self.drop(DropReason::NoBinding, depth);
            };
            let mut sent = [u16::MAX; MAX_CHASSIS_PER_FLOOD];
            let mut n_sent = 0;
            for &m in members.iter() {
                match dp.ports.get(&m) {
                    Some(Binding::Remote { chassis }) => {
                        if from_tunnel || sent[..n_sent].contains(chassis) {
                            continue;
                        }
                        if n_sent == MAX_CHASSIS_PER_FLOOD {
                            self.drop(DropReason::TooManyOutputs, depth);
                            continue;
                        }
                        sent[n_sent] = *chassis;
                        n_sent += 1;
                        let t = self.tunnel(dp, key, *chassis, outport);
                        self.emit(key, t, depth);
                    }
                    Some(Binding::Refused) => self.drop(DropReason::Unsupported, depth),
                    // The localnet port's own membership carries it.
                    Some(Binding::ViaLocalnet { .. }) => {}
                    Some(_) => {
                        let mut copy = *key;
                        copy.meta.regs[REG_OUTPORT] = m;
                        // Each member's egress is a scope of its own: a
                        // to-lport meter of one member drops that copy only.
                        let m0 = self.out.n_meters;
                        self.egress(dp, &mut copy, depth + 1);
                        self.out.close_meters(m0);
                    }
                    None => self.drop(DropReason::NoBinding, depth),
                }
            }
            return;
        }
        match dp.ports.get(&outport) {
            Some(Binding::Remote { chassis }) => {
                if from_tunnel {
                    // A chassis never forwards tunnel traffic to another one.
                    return self.drop(DropReason::NoBinding, depth);
                }
                let t = self.tunnel(dp, key, *chassis, outport);
                self.emit(key, t, depth);
            }
            Some(Binding::Refused) => self.drop(DropReason::Unsupported, depth),
            Some(Binding::ViaLocalnet { localnet }) => {
                // physical.c table 40 (where tunnel traffic enters too): the
                // outport becomes the localnet port.
                key.meta.regs[REG_OUTPORT] = *localnet;
                match dp.ports.get(localnet) {
                    Some(Binding::Localnet { .. }) => self.egress(dp, key, depth + 1),
                    _ => self.drop(DropReason::NoBinding, depth),
                }
            }
            Some(_) => self.egress(dp, key, depth + 1),
            None => self.drop(DropReason::NoBinding, depth),
        }
    }

    /// Into the egress pipeline, as ovn-controller's tables 40 and 41 do:
    /// back to the inport only with `flags.loopback`, and with the logical
    /// registers cleared (so local and tunnelled copies see the same).
    fn egress(&mut self, dp: &Datapath, key: &mut Key, depth: usize) {
        if key.outport() == key.inport() && key.meta.regs[REG_FLAGS] & MLF_ALLOW_LOOPBACK == 0 {
            return self.drop(DropReason::Loopback, depth);
        }
        key.meta.regs[..N_LOG_REGS].fill(0);
        self.stage(dp, true, 0, key, depth);
    }

    fn tunnel(&self, dp: &Datapath, key: &Key, chassis: u16, egress: u32) -> Target {
        // Keys are 15/16 bits by OVN's construction; larger ones cannot be
        // encoded and would be refused by encap (`geneve_bad_port_key`).
        Target::Tunnel {
            chassis,
            vni: dp.key,
            ingress: u16::try_from(key.inport()).unwrap_or(u16::MAX),
            egress: u16::try_from(egress).unwrap_or(u16::MAX),
        }
    }

    /// Egress `output`: to the outport's binding.
    fn deliver_egress(&mut self, dp: &Datapath, key: &mut Key, depth: usize) {
        let outport = key.outport();
        if outport == key.inport() && key.meta.regs[REG_FLAGS] & MLF_ALLOW_LOOPBACK == 0 {
            return self.drop(DropReason::Loopback, depth);
        }
        match dp.ports.get(&outport) {
            Some(Binding::Local { port, vlan }) => self.emit(key, Target::Local { port: *port, vlan: *vlan }, depth),
            Some(Binding::Localnet { uplink, vlan }) => {
                self.emit(key, Target::Localnet { uplink: *uplink, vlan: *vlan }, depth);
            }
            Some(Binding::Refused) => self.drop(DropReason::Unsupported, depth),
            Some(Binding::Remote { .. } | Binding::ViaLocalnet { .. }) | None => {
                self.drop(DropReason::NoBinding, depth);
            }
        }
    }
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// `TCP_RST`, `TCP_ACK`.
const TCP_RST: u16 = 0x004;
const TCP_ACK: u16 = 0x010;

/// The flow key of the packet that `kind` generates from a packet whose key
/// is `o` (before its nested actions run), and what to build; or why
/// pinctrl would not generate one.
///
/// Fields are those pinctrl writes: `pinctrl_handle_nd_na` →
/// `compose_nd_na(eth.src = o.eth.dst, eth.dst = o.eth.src, ip6.src =
/// o.nd.target, ip6.dst = o.ip6.src, hop limit 255, nd.tll = o.eth.dst)`;
/// `pinctrl_handle_icmp` → addresses kept (swapped for `reject`), TTL 255,
/// type 3 / 1 (unreachable), code 1, or 3 (ICMPv4) / 4 (ICMPv6) for UDP when
/// the code is set (`icmp4`, `icmp6`, `reject`); `pinctrl_handle_tcp_reset`
/// → addresses kept (swapped for `reject`), ports always swapped, TTL 63,
/// RST+ACK; `pinctrl_handle_arp` → request from `eth.src`/`ip4.src` for
/// `ip4.dst`, Ethernet addresses kept. TOS / traffic class and flow label
/// are 0; the VLAN tag stays only where pinctrl pushes it (ARP, ICMP).
///
/// # Errors
/// `reject_ignored` for a `reject` of a TCP RST, of an ICMPv4 type 3 or
/// ICMPv6 type 1, or of a later fragment of either (pinctrl finds no L4
/// header); `generate_not_applicable` where pinctrl ignores the action
/// (wrong protocol); `unsupported` for `reject` of SCTP (`sctp_abort`).
pub fn generated_key(kind: GenKind, o: &FlowKey) -> Result<(GenPacket, FlowKey), DropReason> {
    let v4 = o.dl_type == ETH_P_IPV4;
    let v6 = o.dl_type == ETH_P_IPV6;
    let later = o.nw_frag & FLOW_NW_FRAG_LATER != 0;
    let mut g = FlowKey {
        tun_src: o.tun_src,
        tun_dst: o.tun_dst,
        tun_vni: o.tun_vni,
        tun_ingress_key: o.tun_ingress_key,
        tun_egress_key: o.tun_egress_key,
        in_port: o.in_port,
        dl_src: o.dl_src,
        dl_dst: o.dl_dst,
        dl_type: o.dl_type,
        nw_src: o.nw_src,
        nw_dst: o.nw_dst,
        ..FlowKey::default()
    };
    let keep_vlan = |g: &mut FlowKey| {
        g.vlan_tpid = o.vlan_tpid;
        g.vlan_tci = [o.vlan_tci[0], 0];
    };
    let is_nd = v6 && o.nw_proto == IPPROTO_ICMPV6 && matches!(o.tp_src, 135 | 136) && o.tp_dst == 0 && !later;
    match kind {
        GenKind::NdNa | GenKind::NdNaRouter => {
            if !is_nd {
                return Err(DropReason::GenerateNotApplicable);
            }
            g.dl_src = o.dl_dst;
            g.dl_dst = o.dl_src;
            g.nw_src = o.nd_target;
            g.nw_dst = o.nw_src;
            g.nw_proto = IPPROTO_ICMPV6;
            g.nw_ttl = 255;
            g.tp_src = 136;
            g.nd_target = o.nd_target;
            g.arp_tha = o.dl_dst;
            let what = if kind == GenKind::NdNa { GenPacket::NdNa } else { GenPacket::NdNaRouter };
            Ok((what, g))
        }
        GenKind::Arp => {
            if !v4 {
                return Err(DropReason::GenerateNotApplicable);
            }
            keep_vlan(&mut g);
            g.dl_type = 0x0806;
            g.arp_op = 1;
            g.arp_sha = o.dl_src;
            Ok((GenPacket::Arp, g))
        }
        GenKind::Reject => {
            let ignore = match o.nw_proto {
                IPPROTO_TCP => later || o.tcp_flags & TCP_RST != 0,
                IPPROTO_ICMP if v4 => later || o.tp_src == 3,
                IPPROTO_ICMPV6 if v6 => later || o.tp_src == 1,
                _ => false,
            };
            if ignore {
                return Err(DropReason::RejectIgnored);
            }
            match o.nw_proto {
                IPPROTO_TCP => tcp_reset(o, g, true),
                // sctp_abort is not built yet: refused, never approximated.
                IPPROTO_SCTP => Err(DropReason::Unsupported),
                _ => icmp(o, g, true, true, keep_vlan),
            }
        }
        GenKind::TcpReset => tcp_reset(o, g, false),
        GenKind::Icmp => icmp(o, g, true, false, keep_vlan),
        GenKind::IcmpError => icmp(o, g, false, false, keep_vlan),
    }
}

fn tcp_reset(o: &FlowKey, mut g: FlowKey, loopback: bool) -> Result<(GenPacket, FlowKey), DropReason> {
    // pinctrl checks only the protocol; a later fragment has no header to answer.
    if o.nw_proto != IPPROTO_TCP || o.nw_frag & FLOW_NW_FRAG_LATER != 0 {
        return Err(DropReason::GenerateNotApplicable);
    }
    if loopback {
        core::mem::swap(&mut g.dl_src, &mut g.dl_dst);
        core::mem::swap(&mut g.nw_src, &mut g.nw_dst);
    }
    g.nw_proto = IPPROTO_TCP;
    g.nw_ttl = 63;
    g.tp_src = o.tp_dst;
    g.tp_dst = o.tp_src;
    g.tcp_flags = TCP_RST | TCP_ACK;
    Ok((GenPacket::TcpRst, g))
}

fn icmp(
    o: &FlowKey,
    mut g: FlowKey,
    set_code: bool,
    loopback: bool,
    keep_vlan: impl Fn(&mut FlowKey),
) -> Result<(GenPacket, FlowKey), DropReason> {
    let v6 = match o.dl_type {
        ETH_P_IPV4 => false,
        ETH_P_IPV6 => true,
        _ => return Err(DropReason::GenerateNotApplicable),
    };
    if loopback {
        core::mem::swap(&mut g.dl_src, &mut g.dl_dst);
        core::mem::swap(&mut g.nw_src, &mut g.nw_dst);
    }
    keep_vlan(&mut g);
    let udp = set_code && o.nw_proto == IPPROTO_UDP;
    g.nw_ttl = 255;
    if v6 {
        g.nw_proto = IPPROTO_ICMPV6;
        g.tp_src = 1;
        g.tp_dst = if udp { 4 } else { 1 };
        Ok((GenPacket::Icmp6, g))
    } else {
        g.nw_proto = IPPROTO_ICMP;
        g.tp_src = 3;
        g.tp_dst = if udp { 3 } else { 1 };
        Ok((GenPacket::Icmp4, g))
    }
}
