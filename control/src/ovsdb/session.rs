//! A long-lived OVSDB session: a remote list, reconnect with backoff,
//! `_Server` cluster checks, and a [`Replica`] kept by one monitor that is
//! resumed with `monitor_cond_since` after every reconnect.
//!
//! Behaviour, following ovsdb-cs (the client core of ovn-controller):
//! - remotes are tried in order, round robin; a failed connect moves on to
//!   the next remote at once, and only after every remote of the list failed
//!   in a row does the session sleep, with a bounded exponential backoff
//!   (`backoff_min`, doubling, up to `backoff_max`; reset by a connection that
//!   stayed up for at least `backoff_max`, while one that drops sooner counts
//!   as a failure);
//! - on connect it monitors `_Server.Database` for its database: a member of
//!   a cluster that is not connected to the cluster is left (it would serve
//!   stale data), and with `leader_only` so is a follower. Writes on a
//!   follower are forwarded to the leader by the server itself, which is why
//!   ovn-controller (and our default) does not require the leader;
//! - the database monitor is `monitor_cond_since` with the id of the last
//!   transaction seen. When the server answers `found = true` the reply is a
//!   diff against our replica; otherwise it is a full dump, which replaces
//!   the replica and is turned into the equivalent row changes, so consumers
//!   see one consistent stream of changes either way;
//! - a server without `monitor_cond_since` gets `monitor_cond` (always a
//!   full dump).
//!
//! Invariant: the replica is only changed by the session task, and every
//! change is followed by a [`SessionEvent::Changes`] carrying it (events are
//! unbounded: a consumer must drain them).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::connection::{Connection, ConnectionOptions, Incoming, DEFAULT_PROBE_INTERVAL, ZERO_TXN_ID};
use super::remote::Remote;
use super::replica::{Replica, RowChange};
use super::schema::DatabaseSchema;
use super::transact::Operation;
use super::update::parse_updates;
use super::Error;

/// A check run on the server's schema before monitoring (see
/// [`crate::sb::check_schema`]).
pub type SchemaCheck = fn(&DatabaseSchema) -> Result<(), Error>;

/// Session configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Remotes, tried in order.
    pub remotes: Vec<Remote>,
    /// Database name (`OVN_Southbound`).
    pub database: String,
    /// Inactivity probe; `None` disables it.
    pub probe_interval: Option<Duration>,
    /// First backoff after a full round of failed remotes.
    pub backoff_min: Duration,
    /// Backoff bound.
    pub backoff_max: Duration,
    /// Connect timeout per remote.
    pub connect_timeout: Duration,
    /// Leave a cluster member that is not the leader.
    pub leader_only: bool,
    /// Tables to monitor (`None`: every table of the schema).
    pub tables: Option<Vec<String>>,
    /// Per-table `where` clauses (a JSON array of conditions).
    pub conditions: BTreeMap<String, Value>,
    /// Schema check run at every connect.
    pub schema_check: Option<SchemaCheck>,
}

impl SessionConfig {
    /// Defaults like ovn-controller's: 5 s probe, backoff 1 s to 8 s.
    pub fn new(remotes: Vec<Remote>, database: &str) -> Self {
        SessionConfig {
            remotes,
            database: database.to_owned(),
            probe_interval: Some(DEFAULT_PROBE_INTERVAL),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(5),
            leader_only: false,
            tables: None,
            conditions: BTreeMap::new(),
            schema_check: None,
        }
    }
}

/// What happened to a session.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// Monitoring started on `remote`. `resumed`: the server still had our
    /// last transaction and sent only what changed since (no full dump).
    Connected {
        /// The remote.
        remote: String,
        /// `monitor_cond_since` answered `found = true`.
        resumed: bool,
    },
    /// Rows changed (already applied to the replica).
    Changes(Vec<RowChange>),
    /// Every condition change requested so far has been applied by the
    /// server, and the rows it brought in or took out are in the replica
    /// (sent after the [`SessionEvent::Changes`] of those rows).
    ConditionsSettled,
    /// A connection ended or a connect failed; the session retries.
    Disconnected {
        /// The remote.
        remote: String,
        /// Why.
        error: Error,
    },
}

/// Counters of a session.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Connections that reached the monitoring state.
    pub n_connects: u64,
    /// Monitors that started with a full dump.
    pub n_full_dumps: u64,
    /// Monitors resumed with `found = true`.
    pub n_resumes: u64,
    /// Update notifications applied.
    pub n_updates: u64,
    /// Failed connects and lost connections.
    pub n_disconnects: u64,
    /// Last transaction id seen (`None`: the server keeps no history).
    pub last_txn_id: Option<String>,
    /// Remote of the current connection.
    pub remote: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Time from TCP/Unix connect to the monitor reply applied, last connect.
    pub last_sync: Option<Duration>,
    /// When the replica last took in the server's state: a monitor reply
    /// (connect) or an update notification.
    pub last_update_at: Option<std::time::SystemTime>,
    /// Of which: waiting for and parsing the monitor reply.
    pub last_monitor_reply: Option<Duration>,
    /// Of which: applying it to the replica.
    pub last_apply: Option<Duration>,
    /// `monitor_cond_change` requests acknowledged by a server.
    pub n_cond_changes: u64,
    /// Condition changes were requested that the replica does not reflect
    /// yet (see [`Session::conditions_settled`]).
    pub conditions_pending: bool,
}

#[derive(Debug)]
struct Shared {
    replica: RwLock<Replica>,
    stats: Mutex<SessionStats>,
    conn: Mutex<Option<Connection>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, SessionStats> {
        self.stats.lock().expect("stats lock is never poisoned")
    }
    fn conn(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.conn.lock().expect("conn lock is never poisoned")
    }
}

#[derive(Debug)]
enum Cmd {
    /// New `where` clauses per table.
    SetConditions(BTreeMap<String, Value>),
    /// The server acknowledged the `monitor_cond_change` that renamed the
    /// monitor to this id and carried condition changes up to this number.
    CondAcked(Value, u64),
}

/// A running session (its task stops when this is dropped).
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
    database: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(c) = self.shared.conn().take() {
            c.close();
        }
    }
}

impl Session {
    /// Starts the session task. Must be called inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If `config.remotes` is empty.
    pub fn start(config: SessionConfig) -> Session {
        assert!(!config.remotes.is_empty(), "a session needs at least one remote");
        let shared = Arc::new(Shared {
            replica: RwLock::new(Replica::default()),
            stats: Mutex::new(SessionStats::default()),
            conn: Mutex::new(None),
        });
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let database = config.database.clone();
        let runner = Runner {
            cfg: config,
            shared: shared.clone(),
            events: ev_tx,
            cmd: cmd_rx,
            cmd_tx: cmd_tx.clone(),
            cond_seq: 0,
            cond_acked: 0,
            cond_pending: BTreeMap::new(),
            cond_in_flight: None,
            last_txn_id: None,
            monitor_seq: 0,
            max_index: None,
        };
        let task = tokio::spawn(runner.run());
        Session { shared, events: ev_rx, cmd: cmd_tx, task, database }
    }

    /// A read-only view of the replica and counters that can be kept and
    /// used elsewhere while the session's owner drives it.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle { shared: self.shared.clone() }
    }

    /// The next event. Cancel safe.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Read access to the replica. Do not hold it across an `.await`.
    pub fn replica(&self) -> RwLockReadGuard<'_, Replica> {
        self.shared.replica.read().expect("replica lock is never poisoned")
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SessionStats {
        self.shared.stats().clone()
    }

    /// The current connection, if monitoring.
    pub fn connection(&self) -> Option<Connection> {
        self.shared.conn().clone()
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// `transact` on the current connection.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`], or as [`Connection::transact`].
    pub async fn transact(&self, ops: &[Operation]) -> Result<Vec<Value>, Error> {
        let conn = self.connection().ok_or(Error::NotConnected)?;
        conn.transact(&self.database, ops).await
    }

    /// Replaces the `where` clause of `table`'s monitor (a JSON array of
    /// conditions, `[true]` for every row), now and after reconnects.
    pub fn set_conditions(&self, table: &str, where_: Value) {
        self.set_conditions_many(BTreeMap::from([(table.to_owned(), where_)]));
    }

    /// Replaces the `where` clauses of several tables in one
    /// `monitor_cond_change`. Tables the server's schema lacks are skipped.
    ///
    /// Changes are sent one at a time, in order: a change requested while
    /// another is in flight is merged with any others and sent once the
    /// server has answered (the monitor id changes with each request, so
    /// two in flight could reach the server out of order).
    pub fn set_conditions_many(&self, conditions: BTreeMap<String, Value>) {
        if conditions.is_empty() {
            return;
        }
        // Flag and command under one lock, so the session task cannot clear
        // the flag between them (it checks its queue under this lock).
        let mut s = self.shared.stats();
        s.conditions_pending = true;
        let _ = self.cmd.send(Cmd::SetConditions(conditions));
    }

    /// Whether every condition change requested so far is reflected in the
    /// replica (then [`SessionEvent::ConditionsSettled`] has been sent).
    pub fn conditions_settled(&self) -> bool {
        !self.shared.stats().conditions_pending
    }
}

/// A read-only view of a [`Session`] (see [`Session::handle`]); it stays
/// valid, frozen, after the session is dropped.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Read access to the replica. Do not hold it across an `.await`.
    pub fn replica(&self) -> RwLockReadGuard<'_, Replica> {
        self.shared.replica.read().expect("replica lock is never poisoned")
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SessionStats {
        self.shared.stats().clone()
    }
}

struct Runner {
    cfg: SessionConfig,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<SessionEvent>,
    cmd: mpsc::UnboundedReceiver<Cmd>,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    /// Condition changes requested, and the last one the server applied.
    /// While they differ, the replica may not match the conditions in
    /// `cfg`, so a reconnect must not resume from `last_txn_id`: rows that
    /// match only the new conditions but did not change since would be
    /// missed.
    cond_seq: u64,
    cond_acked: u64,
    /// Changes requested but not sent yet (one change is in flight at most).
    cond_pending: BTreeMap<String, Value>,
    /// The monitor id the change in flight renames the monitor to.
    cond_in_flight: Option<Value>,
    last_txn_id: Option<String>,
    monitor_seq: u64,
    /// Highest raft index seen in `_Server`: a member behind it is stale.
    max_index: Option<i64>,
}

/// A connection that reached the monitoring state.
struct Live {
    conn: Connection,
    rx: mpsc::UnboundedReceiver<Incoming>,
    monitor_id: Value,
    server: Option<Replica>,
}

impl Runner {
    async fn run(mut self) {
        let n = self.cfg.remotes.len();
        let mut idx = 0;
        let mut backoff = self.cfg.backoff_min;
        let mut failures = 0;
        loop {
            let remote = self.cfg.remotes[idx].clone();
            let error = match self.connect(&remote).await {
                Ok(live) => {
                    let since = Instant::now();
                    let e = self.serve(live).await;
                    // A connection that drops right after monitoring started
                    // counts as a failure, so a server that accepts and then
                    // dies cannot make the session spin without backoff.
                    if since.elapsed() >= self.cfg.backoff_max {
                        backoff = self.cfg.backoff_min;
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    e
                }
                Err(e) => {
                    failures += 1;
                    e
                }
            };
            *self.shared.conn() = None;
            {
                let mut s = self.shared.stats();
                s.n_disconnects += 1;
                s.remote = None;
                s.last_error = Some(error.to_string());
            }
            tracing::warn!(remote = %remote, db = %self.cfg.database, "{error}");
            let event = SessionEvent::Disconnected { remote: remote.to_string(), error };
            if self.events.send(event).is_err() {
                return;
            }
            idx = (idx + 1) % n;
            if failures >= n {
                failures = 0;
                tracing::info!(db = %self.cfg.database, "all remotes failed, retrying in {backoff:?}");
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        cmd = self.cmd.recv() => match cmd {
                            Some(c) => self.store_cmd(c),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(self.cfg.backoff_max);
            }
        }
    }

    /// Handles a command while not connected: conditions are only stored
    /// (the next monitor carries them all).
    fn store_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::SetConditions(c) => {
                self.cfg.conditions.extend(c);
                self.cond_seq += 1;
            }
            // An answer on a connection that is gone.
            Cmd::CondAcked(..) => {}
        }
    }

    async fn connect(&mut self, remote: &Remote) -> Result<Live, Error> {
        let t0 = Instant::now();
        let stream = remote.connect(self.cfg.connect_timeout).await?;
        let opts = ConnectionOptions { probe_interval: self.cfg.probe_interval };
        let (conn, rx) = Connection::open(stream, remote.to_string(), opts);
        match self.start_monitors(&conn, remote, t0).await {
            Ok((monitor_id, server)) => Ok(Live { conn, rx, monitor_id, server }),
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// Checks `_Server` and starts the database monitor.
    async fn start_monitors(
        &mut self,
        conn: &Connection,
        remote: &Remote,
        t0: Instant,
    ) -> Result<(Value, Option<Replica>), Error> {
        let db = self.cfg.database.clone();
        let server = match conn.get_schema("_Server").await {
            Ok(s) => {
                let mut r = Replica::new(Arc::new(s));
                let req = json!({"Database": [{
                    "columns": ["name", "model", "connected", "leader", "index"],
                    "where": [["name", "==", db]],
                }]});
                let updates = conn.monitor_cond("_Server", &json!("_Server"), &req).await?;
                r.apply_update2_raw(&updates, &mut Vec::new())?;
                check_server(&r, &db, &remote.to_string(), self.cfg.leader_only, &mut self.max_index)?;
                Some(r)
            }
            // A server without `_Server` (before OVS 2.9) is a standalone one.
            Err(Error::Rpc { .. }) => None,
            Err(e) => return Err(e),
        };

        let schema = conn.get_schema(&db).await?;
        if let Some(check) = self.cfg.schema_check {
            check(&schema)?;
        }
        let schema = Arc::new(schema);
        let same_schema = **self.shared.replica.read().expect("replica lock is never poisoned").schema() == *schema;
        if !same_schema || self.cond_seq != self.cond_acked {
            self.last_txn_id = None;
        }
        // The new monitor carries every condition requested so far.
        self.cond_acked = self.cond_seq;
        self.cond_pending.clear();
        self.cond_in_flight = None;
        let requests = self.monitor_requests(&schema);
        self.monitor_seq += 1;
        let monitor_id = json!(format!("{db}#{}", self.monitor_seq));

        let t_monitor = Instant::now();
        let (found, updates, txn) =
            match conn.monitor_cond_since(&db, &monitor_id, &requests, self.last_txn_id.as_deref()).await {
                Ok(r) => (r.found && same_schema, r.updates, Some(r.last_txn_id)),
                Err(Error::Rpc { error, .. }) if error.contains("unknown method") => {
                    let updates = conn.monitor_cond(&db, &monitor_id, &requests).await?;
                    (false, updates, None)
                }
                Err(e) => return Err(e),
            };
        self.last_txn_id = txn.filter(|t| t != ZERO_TXN_ID);
        let monitor_time = t_monitor.elapsed();
        let t_apply = Instant::now();

        // Parse (the expensive part) before taking the replica's lock.
        let parsed = parse_updates(&schema, updates.get())?;
        drop(updates);
        let changes = if found {
            let mut changes = Vec::new();
            self.shared.replica.write().expect("replica lock is never poisoned").apply(parsed, &mut changes)?;
            changes
        } else {
            let mut fresh = Replica::new(schema);
            fresh.apply(parsed, &mut Vec::new())?;
            self.shared.replica.write().expect("replica lock is never poisoned").replace_with(fresh)
        };
        {
            let mut s = self.shared.stats();
            s.n_connects += 1;
            if found {
                s.n_resumes += 1;
            } else {
                s.n_full_dumps += 1;
            }
            s.last_txn_id.clone_from(&self.last_txn_id);
            s.remote = Some(remote.to_string());
            s.last_sync = Some(t0.elapsed());
            s.last_update_at = Some(std::time::SystemTime::now());
            s.last_monitor_reply = Some(monitor_time);
            s.last_apply = Some(t_apply.elapsed());
            // A change requested meanwhile is still queued (see `settle_conditions`).
            if self.cmd.is_empty() {
                s.conditions_pending = false;
            }
        }
        *self.shared.conn() = Some(conn.clone());
        tracing::info!(
            remote = %remote, db = %db, resumed = found, n_changes = changes.len(),
            "monitoring in {:?} (monitor reply {monitor_time:?}, applying it {:?})",
            t0.elapsed(), t_apply.elapsed()
        );
        let _ = self.events.send(SessionEvent::Connected { remote: remote.to_string(), resumed: found });
        if !changes.is_empty() {
            let _ = self.events.send(SessionEvent::Changes(changes));
        }
        if !self.shared.stats().conditions_pending {
            let _ = self.events.send(SessionEvent::ConditionsSettled);
        }
        Ok((monitor_id, server))
    }

    fn monitor_requests(&self, schema: &DatabaseSchema) -> Value {
        let mut req = serde_json::Map::new();
        for (name, t) in &schema.tables {
            if let Some(tables) = &self.cfg.tables {
                if !tables.contains(name) {
                    continue;
                }
            }
            let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
            let mut r = json!({"columns": columns});
            if let Some(w) = self.cfg.conditions.get(name) {
                r["where"] = w.clone();
            }
            req.insert(name.clone(), json!([r]));
        }
        Value::Object(req)
    }

    /// Applies notifications until the connection ends; returns why.
    async fn serve(&mut self, mut live: Live) -> Error {
        let error = loop {
            tokio::select! {
                inc = live.rx.recv() => match inc {
                    None => break Error::Disconnected("connection task ended".to_owned()),
                    Some(Incoming::Closed(e)) => break e,
                    Some(Incoming::Notify { method, params }) => {
                        if let Err(e) = self.notify(&mut live, &method, params) {
                            break e;
                        }
                    }
                },
                cmd = self.cmd.recv() => match cmd {
                    None => break Error::Disconnected("session dropped".to_owned()),
                    Some(Cmd::SetConditions(c)) => {
                        self.cond_seq += 1;
                        self.cfg.conditions.extend(c.clone());
                        self.cond_pending.extend(c);
                        if self.cond_in_flight.is_none() {
                            self.send_cond_change(&mut live);
                        }
                    }
                    Some(Cmd::CondAcked(id, seq)) => {
                        if self.cond_in_flight.as_ref() != Some(&id) {
                            // An answer meant for an earlier connection; it
                            // may have kept the flag set (see `settle_conditions`).
                            if self.cond_in_flight.is_none() && self.cond_pending.is_empty() {
                                self.settle_conditions();
                            }
                            continue;
                        }
                        // The server sends the update a condition change
                        // causes before its reply, and the connection queues
                        // messages in order: apply what is queued, so the
                        // replica reflects the change before it counts as
                        // settled.
                        let mut queued = Ok(());
                        while let Ok(inc) = live.rx.try_recv() {
                            queued = match inc {
                                Incoming::Closed(e) => Err(e),
                                Incoming::Notify { method, params } => self.notify(&mut live, &method, params),
                            };
                            if queued.is_err() {
                                break;
                            }
                        }
                        if let Err(e) = queued {
                            break e;
                        }
                        self.cond_in_flight = None;
                        self.cond_acked = self.cond_acked.max(seq);
                        self.shared.stats().n_cond_changes += 1;
                        if self.cond_pending.is_empty() {
                            self.settle_conditions();
                        } else {
                            self.send_cond_change(&mut live);
                        }
                    }
                },
            }
        };
        live.conn.close();
        error
    }

    /// Sends the pending condition changes as one `monitor_cond_change`,
    /// whose answer comes back as [`Cmd::CondAcked`] (it is awaited in a
    /// task so updates keep flowing meanwhile).
    fn send_cond_change(&mut self, live: &mut Live) {
        let schema = self.shared.replica.read().expect("replica lock is never poisoned").schema().clone();
        let mut req = serde_json::Map::new();
        for (table, where_) in std::mem::take(&mut self.cond_pending) {
            let monitored = self.cfg.tables.as_ref().is_none_or(|t| t.contains(&table));
            if monitored && schema.table(&table).is_some() {
                req.insert(table, json!([{"where": where_}]));
            }
        }
        let seq = self.cond_seq;
        if req.is_empty() {
            self.cond_acked = self.cond_acked.max(seq);
            self.settle_conditions();
            return;
        }
        self.monitor_seq += 1;
        let new_id = json!(format!("{}#{}", self.cfg.database, self.monitor_seq));
        let old_id = std::mem::replace(&mut live.monitor_id, new_id.clone());
        self.cond_in_flight = Some(new_id.clone());
        let conn = live.conn.clone();
        let acks = self.cmd_tx.clone();
        tokio::spawn(async move {
            match conn.monitor_cond_change(&old_id, &new_id, &Value::Object(req)).await {
                Ok(()) => {
                    let _ = acks.send(Cmd::CondAcked(new_id, seq));
                }
                Err(e) => {
                    // The reconnect monitors with every condition.
                    tracing::warn!("monitor_cond_change failed: {e}");
                    conn.close();
                }
            }
        });
    }

    /// Marks the replica as reflecting every requested condition, unless
    /// more were requested meanwhile.
    fn settle_conditions(&mut self) {
        if self.cond_acked != self.cond_seq {
            return;
        }
        let mut s = self.shared.stats();
        // A request made after the last `SetConditions` was received is
        // still queued; the flag stays set until that one is applied.
        if !self.cmd.is_empty() {
            return;
        }
        s.conditions_pending = false;
        drop(s);
        let _ = self.events.send(SessionEvent::ConditionsSettled);
    }

    fn notify(&mut self, live: &mut Live, method: &str, params: Box<RawValue>) -> Result<(), Error> {
        let bad = |e: serde_json::Error| Error::BadMessage(format!("bad {method} notification: {e}"));
        let (updates, txn) = match method {
            "update3" => {
                let (_id, txn, updates): (IgnoredAny, String, Box<RawValue>) =
                    serde_json::from_str(params.get()).map_err(bad)?;
                (updates, Some(txn))
            }
            "update2" => {
                let (id, updates): (Value, Box<RawValue>) = serde_json::from_str(params.get()).map_err(bad)?;
                if id == "_Server" {
                    let server = live
                        .server
                        .as_mut()
                        .ok_or_else(|| Error::BadMessage("_Server update without a _Server monitor".to_owned()))?;
                    server.apply_update2_raw(&updates, &mut Vec::new())?;
                    return check_server(
                        server,
                        &self.cfg.database,
                        live.conn.remote(),
                        self.cfg.leader_only,
                        &mut self.max_index,
                    );
                }
                (updates, None)
            }
            other => {
                tracing::debug!("ignoring notification {other}");
                return Ok(());
            }
        };
        drop(params);
        let t0 = Instant::now();
        let n_bytes = updates.get().len();
        let schema = self.shared.replica.read().expect("replica lock is never poisoned").schema().clone();
        let mut changes = Vec::new();
        let applied = parse_updates(&schema, updates.get()).and_then(|parsed| {
            self.shared.replica.write().expect("replica lock is never poisoned").apply(parsed, &mut changes)
        });
        if let Err(e) = applied {
            // The replica no longer matches the server: resync from scratch.
            self.last_txn_id = None;
            return Err(e);
        }
        if let Some(t) = txn {
            self.last_txn_id = Some(t).filter(|t| t != ZERO_TXN_ID);
        }
        {
            let mut s = self.shared.stats();
            s.n_updates += 1;
            s.last_update_at = Some(std::time::SystemTime::now());
            s.last_txn_id.clone_from(&self.last_txn_id);
        }
        tracing::debug!(method, n_bytes, n_changes = changes.len(), "update applied in {:?}", t0.elapsed());
        if !changes.is_empty() {
            let _ = self.events.send(SessionEvent::Changes(changes));
        }
        Ok(())
    }
}

/// Whether the `_Server` row of `db` allows using this server: a cluster
/// member must be connected to its cluster, must not be behind the highest
/// raft index this session has seen (ovsdb-cs's stale-member rule), and
/// with `leader_only` must be the leader.
fn check_server(
    server: &Replica,
    db: &str,
    remote: &str,
    leader_only: bool,
    max_index: &mut Option<i64>,
) -> Result<(), Error> {
    let fail =
        |reason: &str| Error::ServerStatus { db: db.to_owned(), remote: remote.to_owned(), reason: reason.to_owned() };
    let row = server
        .rows("Database")
        .map(|(_, r)| r)
        .find(|r| r.get("name").and_then(|d| d.as_scalar()).and_then(|a| a.as_str()) == Some(db))
        .ok_or_else(|| fail("database not served"))?;
    let flag = |c: &str| row.get(c).and_then(|d| d.as_scalar()).and_then(|a| a.as_boolean());
    let model = row.get("model").and_then(|d| d.as_scalar()).and_then(|a| a.as_str());
    if model == Some("clustered") {
        if flag("connected") != Some(true) {
            return Err(fail("not connected to its cluster"));
        }
        if leader_only && flag("leader") != Some(true) {
            return Err(fail("not the cluster leader"));
        }
        let index = row.get("index").and_then(|d| d.as_scalar()).and_then(|a| a.as_integer());
        if let (Some(i), Some(max)) = (index, *max_index) {
            if i < max {
                return Err(fail(&format!("stale: raft index {i} is behind {max} seen before")));
            }
        }
        if index > *max_index {
            *max_index = index;
        }
    }
    Ok(())
}
