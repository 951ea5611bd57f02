//! `petrel-cni`: the CNI plugin (spec 1.0 and 1.1) that attaches a pod to
//! Petrel, typically as a Multus secondary network.
//!
//! ADD asks the local `petreld`, over its control socket, for a vhost-user
//! port whose `iface-id` is the pod's OVN logical switch port (Kube-OVN's
//! name, `<pod>.<namespace>[.<provider>]`), which `petrel-ovn` then claims
//! and compiles tables for. The pod gets the socket under a short path, and
//! the userspace CNI's configuration data (socket, MAC, IPs, gateway, MTU)
//! beside it. Addresses come from the logical switch port or from a
//! delegated IPAM plugin (`host-local`).
//!
//! Modules: [`spec`] the CNI protocol, [`config`] the network
//! configuration, [`attach`] names, paths and state on the host, [`ipam`]
//! delegation, [`ovn`] the Northbound through `ovn-nbctl`, [`plugin`] the
//! commands.
#![deny(unsafe_code)]

pub mod attach;
pub mod config;
pub mod ipam;
pub mod ovn;
pub mod plugin;
pub mod spec;
