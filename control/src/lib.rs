//! Petrel's control plane: the OVSDB client, the OVN Southbound model, the
//! chassis agent and (later) the logical-flow compiler.
//!
//! - [`ovsdb`]: an RFC 7047 client with the Open vSwitch extensions
//!   (`monitor_cond`, `monitor_cond_since`, `monitor_cond_change`,
//!   `update2`/`update3`), a replica kept from monitor updates, and a
//!   reconnecting [`ovsdb::Session`] over a remote list that follows raft
//!   cluster status through `_Server` and resumes without a full dump.
//! - [`sb`]: typed Southbound tables, checked against the server's schema
//!   at connect time, and typed change events; [`sb::monitor`] restricts
//!   the monitor to the datapaths reachable from local ports.
//! - [`chassis`]: registers the chassis (`Chassis`, `Encap`,
//!   `Chassis_Private`), claims and releases `Port_Binding`s and
//!   acknowledges `nb_cfg`, like ovn-controller's `chassis.c`/`binding.c`.
//! - [`dataplane`]: learns the local iface-ids from petreld's control
//!   socket (`petrel-ovn --dataplane`), with a grace period across petreld
//!   restarts.
//!
//! This crate does not link DPDK: what it will hand to the dataplane is the
//! table contract of `petrel-dataplane`, through petreld's control socket.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod chassis;
pub mod dataplane;
pub mod features_cli;
pub mod install;
pub mod lflow;
pub mod metrics;
pub mod mirror;
pub mod ovsdb;
pub mod qos;
pub mod sb;
