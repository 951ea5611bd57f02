//! OVSDB client: RFC 7047 plus the Open vSwitch extensions `monitor_cond`,
//! `monitor_cond_since`, `monitor_cond_change`, `update2` and `update3`
//! (ovsdb-server(7)).
//!
//! Layers, each usable alone:
//! - [`framing`]: splits a byte stream into JSON texts;
//! - [`Connection`]: one JSON-RPC connection (ids, concurrent requests,
//!   echo, inactivity probe) with typed methods;
//! - [`Replica`]: tables kept by applying `<table-updates2>`;
//! - [`Session`]: a remote list, reconnect with backoff, `_Server` cluster
//!   checks, and monitors resumed with `monitor_cond_since`.

pub mod connection;
pub mod datum;
pub mod framing;
pub mod remote;
pub mod replica;
pub mod schema;
pub mod session;
pub mod transact;
pub mod update;

pub use self::connection::{Connection, ConnectionOptions, Incoming, SinceReply};
pub use self::datum::{Atom, Datum};
pub use self::framing::FrameError;
pub use self::remote::{parse_remotes, Remote};
pub use self::replica::{Replica, Row, RowChange};
pub use self::schema::{AtomicType, ColumnType, DatabaseSchema, SchemaError, TableSchema};
pub use self::session::{Session, SessionConfig, SessionEvent, SessionHandle, SessionStats};
pub use self::transact::{Condition, Function, Mutation, Mutator, Operation, RowValues, Until};

/// Errors of the OVSDB client.
#[derive(Debug, Clone, PartialEq, thiserror::Error, displaydoc::Display)]
pub enum Error {
    /// bad OVSDB remote `{0}` (expected unix:PATH or tcp:HOST:PORT)
    BadRemote(String),
    /// remote `{0}`: ssl: remotes are not supported yet
    UnsupportedRemote(String),
    /// cannot connect to {remote}: {reason}
    Connect {
        /// The remote.
        remote: String,
        /// Why.
        reason: String,
    },
    /// I/O error: {0}
    Io(String),
    /// protocol error: {0}
    Frame(#[from] FrameError),
    /// invalid JSON from the server: {0}
    BadJson(String),
    /// malformed JSON-RPC message: {0}
    BadMessage(String),
    /// connection closed: {0}
    Disconnected(String),
    /// connection closed in the middle of a message
    ClosedMidMessage,
    /// no message from the server for {0:?} (inactivity probe unanswered)
    InactivityTimeout(std::time::Duration),
    /// not connected to any remote
    NotConnected,
    /// `{method}` failed: {error}
    Rpc {
        /// The JSON-RPC method.
        method: String,
        /// The server's error, as JSON text.
        error: String,
    },
    /// unexpected reply to `{method}`: {reply}
    BadReply {
        /// The JSON-RPC method.
        method: String,
        /// The reply (truncated).
        reply: String,
    },
    /// transaction failed at operation {index} of {n_ops}: {error}: {details}
    Transaction {
        /// Index of the failed operation (== n_ops: the commit failed).
        index: usize,
        /// Operations sent.
        n_ops: usize,
        /// The OVSDB error tag (`constraint violation`, `timed out`, ...).
        error: String,
        /// The server's details.
        details: String,
    },
    /// bad schema: {0}
    Schema(#[from] SchemaError),
    /// schema mismatch: table {table}, column {column}: {reason}
    SchemaMismatch {
        /// Table.
        table: String,
        /// Column (empty when the table itself is missing).
        column: String,
        /// What was expected.
        reason: String,
    },
    /// table {table}, column {column}: {reason}
    BadRow {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Why the value does not fit the column.
        reason: String,
    },
    /// bad update from the server: {0}
    BadUpdate(String),
    /// database {db} on {remote} is unusable: {reason}
    ServerStatus {
        /// Database.
        db: String,
        /// Remote.
        remote: String,
        /// Why (not connected to its cluster, not the leader, ...).
        reason: String,
    },
}
