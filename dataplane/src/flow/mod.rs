//! Flow keys and their one-pass extraction from packet bytes.
//!
//! [`extract()`] turns a frame into a [`FlowKey`] plus a [`Layout`] (where
//! each layer starts); the key is what every cache and classifier looks up,
//! the layout is what actions use to find headers without re-parsing.
//!
//! Invariants: nothing here allocates, locks or panics on any input; a key
//! has no uninitialised or padding bytes, so it can be hashed and compared
//! as words.

pub mod dpcls;
pub mod emc;
pub mod extract;
pub mod key;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testpkt;

pub use self::extract::{extract, Layout, MAX_IPV6_EXT_HEADERS};
pub use self::key::{FlowKey, FLOW_NW_FRAG_ANY, FLOW_NW_FRAG_LATER, VLAN_CFI};
