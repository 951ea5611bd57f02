//! petreld's control socket: the protocol, the server, a client, and the
//! text `petrelctl` prints. DPDK-free, so `control/` links it.
//!
//! - [`proto`]: framing (magic, major version, length) and the JSON
//!   messages: requests, replies, error codes, the snapshot wire form
//!   [`proto::SnapshotMsg`] and incremental [`proto::Change`]s;
//! - [`server`]: [`server::serve`] answers requests from a
//!   [`server::Node`] (petreld implements it; tests use a fake);
//! - [`client`]: a blocking [`client::Client`];
//! - [`microflow`]: ovn-trace's packet syntax → [`crate::flow::FlowKey`];
//! - [`render`]: dumps and traces from a [`crate::table::Snapshot`], and
//!   the text of each `petrelctl` command.
//!
//! Invariants: every request gets exactly one response; a broken or
//! incompatible client loses its own connection and nothing else; nothing
//! here runs on a PMD thread.

pub mod client;
pub mod features;
pub mod microflow;
pub mod proto;
pub mod render;
pub mod server;

#[cfg(test)]
mod tests;

pub use self::client::{Client, ClientError};
pub use self::server::{serve, Node, SocketOpts, DEFAULT_SOCKET};

/// The socket path to use: `$PETREL_SOCKET` if set and non-empty, else
/// [`DEFAULT_SOCKET`].
pub fn default_socket_path() -> std::path::PathBuf {
    match std::env::var_os("PETREL_SOCKET") {
        Some(p) if !p.is_empty() => p.into(),
        _ => DEFAULT_SOCKET.into(),
    }
}
