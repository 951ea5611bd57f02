//! Petrel's fast path.
//!
//! Layers, and the rule that dependencies point down only (STYLE.md):
//!
//! - [`wire`]: views over packet bytes (Ethernet … Geneve), never imports anything above it;
//! - [`flow`]: one-pass flow-key extraction over `wire`;
//! - [`action`]: header rewrites (VLAN push/pop, Geneve encap/decap) over any [`buf::PacketBuf`];
//! - [`table`]: the tables contract with `control/` (datapaths, pipelines, stages, rules,
//!   actions, bindings) and the pipeline executor;
//! - DPDK-backed parts, behind the `dpdk` feature: `mbuf` (owned packet
//!   buffers and pools), `port` (EAL, ethdev ports, lcores), `pmd` (the
//!   poll-mode threads and static forwarding), `config` and the `petreld` binary.
//!
//! `unsafe` is allowed only in `mbuf` and `port` (STYLE.md), each block with a
//! `// SAFETY:` comment.
//!
//! Without the `dpdk` feature the crate builds with no C dependency at all, so
//! `control/` and the benches can use it.
#![deny(unsafe_code)]

pub mod action;
pub mod buf;
pub mod capture;
pub mod ctl;
pub mod drop;
pub mod flow;
pub mod metrics;
pub mod qos;
pub mod table;
pub mod wire;

#[cfg(feature = "dpdk")]
pub mod config;
#[cfg(feature = "dpdk")]
pub mod featurectl;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod mbuf;
#[cfg(feature = "dpdk")]
pub mod node;
#[cfg(feature = "dpdk")]
pub mod pmd;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod port;
#[cfg(feature = "dpdk")]
pub mod portset;
#[cfg(feature = "dpdk")]
pub mod underlay;
