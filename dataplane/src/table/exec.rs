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
//! Every walk ends: `next` only goes forward (checked by
//! [`Snapshot::validate`]), nesting is bounded by [`MAX_DEPTH`] and total
//! work by [`MAX_STEPS`]. Nothing here allocates; tracing compiles away
//! with [`NoTrace`].

use super::{Action, Binding, Datapath, Key, Rule, SlowPathReason, Snapshot, MC_GROUP_MIN, MLF_ALLOW_LOOPBACK};
use super::{REG_FLAGS, REG_INPORT, REG_OUTPORT};
use crate::drop::DropReason;
use crate::flow::FlowKey;

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
}

/// One copy: its final key (packet fields to commit) and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emit {
    /// The key as the pipeline left it.
    pub key: Key,
    /// Destination.
    pub target: Target,
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
}

impl Default for Outcome {
    fn default() -> Self {
        let e = Emit { key: Key::default(), target: Target::Local { port: 0, vlan: None } };
        Outcome { emits: [e; MAX_EMITS], n: 0, drop: None, steps: 0 }
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

    fn reset(&mut self) {
        self.n = 0;
        self.drop = None;
        self.steps = 0;
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
}

/// Runs a packet received on local port `port` (its extracted `flow`).
pub fn run_from_port<T: Tracer>(snap: &Snapshot, port: u16, flow: &FlowKey, out: &mut Outcome, tr: &mut T) {
    out.reset();
    let mut w = Walk { out, tr };
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
    let mut w = Walk { out, tr };
    let Some(dp) = snap.datapaths.get(&vni) else {
        return w.drop(DropReason::UnknownDatapath, 0);
    };
    let mut key = Key { flow: *flow, ..Key::default() };
    key.meta.metadata = u64::from(dp.key);
    key.meta.regs[REG_INPORT] = u32::from(ingress);
    key.meta.regs[REG_OUTPORT] = u32::from(egress);
    key.meta.regs[REG_FLAGS] |= MLF_RX_FROM_TUNNEL;
    w.deliver(dp, &mut key, 0);
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
        let e = Emit { key: *key, target };
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
                    self.actions(dp, egress, inner, &mut copy, depth + 1);
                }
                // Policing and mirroring are not in the fast path yet (the
                // QoS/mirroring work adds them): running a rule that asks for
                // them without doing it would forward differently, so the
                // packet is refused instead.
                Action::Meter(_) | Action::Mirror(_) => return self.drop(DropReason::Unsupported, depth),
                Action::Drop(why) => return self.drop(*why, depth),
                Action::SlowPath(why) => self.emit(key, Target::SlowPath(*why), depth),
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
                    Some(_) => {
                        let mut copy = *key;
                        copy.meta.regs[REG_OUTPORT] = m;
                        self.egress(dp, &mut copy, depth + 1);
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
            Some(Binding::Remote { .. }) | None => self.drop(DropReason::NoBinding, depth),
        }
    }
}
