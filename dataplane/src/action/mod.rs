//! Header rewrites over any [`crate::buf::PacketBuf`]: VLAN push/pop/VID,
//! Geneve encap/decap.
//!
//! Invariants: no allocation; headers are added in the headroom and removed
//! with `adj`/`trim`, never by copying the payload; on error the packet is
//! unchanged and the error is the [`crate::drop::DropReason`] to count.

pub mod geneve;
pub mod vlan;

pub use self::geneve::{
    geneve_decap, geneve_encap, verify_outer_checksums, GeneveConfigError, GeneveMeta, GeneveTunnel, GeneveTunnelConfig,
};
pub use self::vlan::{vlan_pop, vlan_push, vlan_set_vid};
