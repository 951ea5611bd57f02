//! One JSON-RPC 1.0 connection to an OVSDB server (RFC 7047 §4).
//!
//! A [`Connection`] is a cheap, cloneable handle; one task per connection
//! owns the stream, matches replies to requests by id, answers the server's
//! `echo` requests and forwards notifications (`update2`, `update3`, ...).
//! Many requests may be outstanding at once.
//!
//! Inactivity probe (the OVS `reconnect` rule): when nothing has been
//! received for `probe_interval`, an `echo` is sent; if nothing at all
//! arrives during a second `probe_interval`, the connection is declared dead.
//! ovn-controller's default for the Southbound (`ovn-remote-probe-interval`)
//! is 5 s, and so is ours ([`DEFAULT_PROBE_INTERVAL`]).
//!
//! Invariant: once the task ends, every pending request has been answered
//! with an error and every later request fails at once with the same error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::framing::Framer;
use super::remote::BoxStream;
use super::schema::DatabaseSchema;
use super::transact::Operation;
use super::Error;

/// Default inactivity probe interval (ovn-controller's default is 5 s).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Largest accepted message. A Southbound initial dump with ~100k logical
/// flows is tens of MiB; this leaves a wide margin but bounds memory.
pub const MAX_MESSAGE: usize = 1 << 30;

/// The all-zero transaction id that means "no history" in
/// `monitor_cond_since`.
pub const ZERO_TXN_ID: &str = "00000000-0000-0000-0000-000000000000";

/// A message from the server that is not a reply.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A notification (`update2`, `update3`, `locked`, ...).
    Notify {
        /// JSON-RPC method.
        method: String,
        /// Its params, as unparsed JSON text (an update can be tens of MiB).
        params: Box<RawValue>,
    },
    /// The connection ended; no more messages follow.
    Closed(Error),
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Inactivity probe interval; `None` disables probing.
    pub probe_interval: Option<Duration>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions { probe_interval: Some(DEFAULT_PROBE_INTERVAL) }
    }
}

type Waiter = oneshot::Sender<Result<Box<RawValue>, Value>>;

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    waiters: HashMap<u64, Waiter>,
    closed: Option<Error>,
}

#[derive(Debug)]
struct Inner {
    remote: String,
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<Pending>,
    shutdown: Notify,
}

/// Handle to one JSON-RPC connection. The connection closes when the last
/// handle is dropped (or on [`Connection::close`]).
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
    _guard: Arc<CloseOnDrop>,
}

/// Held by handles only (not by the task): its drop closes the connection.
#[derive(Debug)]
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.shutdown.notify_one();
    }
}

/// The reply to `monitor_cond_since`.
#[derive(Debug, Clone)]
pub struct SinceReply {
    /// The server still had our last transaction id: `updates` is a diff,
    /// not a full dump.
    pub found: bool,
    /// The id of the server's latest transaction.
    pub last_txn_id: String,
    /// `<table-updates2>`, unparsed (see [`crate::ovsdb::Replica::apply_update2_raw`]).
    pub updates: Box<RawValue>,
}

impl Connection {
    /// Starts the connection task on `stream`; notifications arrive on the
    /// returned receiver, ending with [`Incoming::Closed`].
    pub fn open(
        stream: BoxStream,
        remote: String,
        opts: ConnectionOptions,
    ) -> (Connection, mpsc::UnboundedReceiver<Incoming>) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let inner =
            Arc::new(Inner { remote, out: out_tx, pending: Mutex::new(Pending::default()), shutdown: Notify::new() });
        tokio::spawn(run(inner.clone(), stream, out_rx, in_tx, opts));
        let guard = Arc::new(CloseOnDrop(inner.clone()));
        (Connection { inner, _guard: guard }, in_rx)
    }

    /// The remote this connection goes to.
    pub fn remote(&self) -> &str {
        &self.inner.remote
    }

    /// Closes the connection; pending requests fail.
    pub fn close(&self) {
        self.inner.shutdown.notify_one();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.pending.lock().expect("pending lock is never poisoned")
    }

    /// Sends a request and waits for its reply.
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] when the server answers with an error, or the
    /// connection's error if it ends first.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        let raw = self.call_raw(method, params).await?;
        serde_json::from_str(raw.get()).map_err(|e| Error::BadJson(e.to_string()))
    }

    /// [`Connection::call`], returning the result as unparsed JSON text.
    ///
    /// # Errors
    ///
    /// As [`Connection::call`].
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Box<RawValue>, Error> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = self.lock();
            if let Some(e) = &p.closed {
                return Err(e.clone());
            }
            let id = p.next_id;
            p.next_id += 1;
            p.waiters.insert(id, tx);
            id
        };
        let msg = json!({"method": method, "params": params, "id": id});
        let bytes = serde_json::to_vec(&msg).expect("a Value always serialises");
        if self.inner.out.send(bytes).is_err() {
            return Err(self.closed_error());
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => Err(Error::Rpc { method: method.to_owned(), error: error.to_string() }),
            Err(_) => Err(self.closed_error()),
        }
    }

    fn closed_error(&self) -> Error {
        self.lock().closed.clone().unwrap_or_else(|| Error::Disconnected("connection task ended".to_owned()))
    }

    /// `list_dbs` (RFC 7047 §4.1.1).
    ///
    /// # Errors
    ///
    /// As [`Connection::call`], or [`Error::BadReply`].
    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let v = self.call("list_dbs", json!([])).await?;
        v.as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| bad_reply("list_dbs", &v))
    }

    /// `get_schema` (RFC 7047 §4.1.2), parsed.
    ///
    /// # Errors
    ///
    /// As [`Connection::call`], or [`Error::Schema`].
    pub async fn get_schema(&self, db: &str) -> Result<DatabaseSchema, Error> {
        let v = self.call("get_schema", json!([db])).await?;
        Ok(DatabaseSchema::from_json(&v)?)
    }

    /// `transact` (RFC 7047 §4.1.3). Returns one result per operation.
    ///
    /// # Errors
    ///
    /// [`Error::Transaction`] naming the first failed operation (or the
    /// commit, for an error past the last operation).
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<Value>, Error> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(json!(db));
        params.extend(ops.iter().map(|o| o.json().clone()));
        let v = self.call("transact", Value::Array(params)).await?;
        let results = v.as_array().ok_or_else(|| bad_reply("transact", &v))?;
        for (index, r) in results.iter().enumerate() {
            if let Some(error) = r.get("error").and_then(Value::as_str) {
                return Err(Error::Transaction {
                    index,
                    n_ops: ops.len(),
                    error: error.to_owned(),
                    details: r.get("details").and_then(Value::as_str).unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(results.clone())
    }

    /// `monitor_cond` (ovsdb-server(7)); returns the initial
    /// `<table-updates2>`. Later changes arrive as `update2` notifications.
    ///
    /// # Errors
    ///
    /// As [`Connection::call`].
    pub async fn monitor_cond(&self, db: &str, id: &Value, requests: &Value) -> Result<Box<RawValue>, Error> {
        self.call_raw("monitor_cond", json!([db, id, requests])).await
    }

    /// `monitor_cond_since` (ovsdb-server(7)). `last_txn_id` is the last
    /// transaction this client saw (`None`: none, a full dump is wanted).
    /// Later changes arrive as `update3` notifications.
    ///
    /// # Errors
    ///
    /// As [`Connection::call`], or [`Error::BadReply`].
    pub async fn monitor_cond_since(
        &self,
        db: &str,
        id: &Value,
        requests: &Value,
        last_txn_id: Option<&str>,
    ) -> Result<SinceReply, Error> {
        let last = last_txn_id.unwrap_or(ZERO_TXN_ID);
        let raw = self.call_raw("monitor_cond_since", json!([db, id, requests, last])).await?;
        match serde_json::from_str::<(bool, String, Box<RawValue>)>(raw.get()) {
            Ok((found, last_txn_id, updates)) => Ok(SinceReply { found, last_txn_id, updates }),
            Err(_) => {
                let mut text = raw.get().to_owned();
                text.truncate(200);
                Err(Error::BadReply { method: "monitor_cond_since".to_owned(), reply: text })
            }
        }
    }

    /// `monitor_cond_change`: replaces the conditions of monitor `id`, which
    /// is known as `new_id` from then on.
    ///
    /// # Errors
    ///
    /// As [`Connection::call`].
    pub async fn monitor_cond_change(&self, id: &Value, new_id: &Value, requests: &Value) -> Result<(), Error> {
        self.call("monitor_cond_change", json!([id, new_id, requests])).await.map(drop)
    }

    /// `monitor_cancel` (RFC 7047 §4.1.7).
    ///
    /// # Errors
    ///
    /// As [`Connection::call`].
    pub async fn monitor_cancel(&self, id: &Value) -> Result<(), Error> {
        self.call("monitor_cancel", json!([id])).await.map(drop)
    }

    /// `echo` (RFC 7047 §4.1.11): the server returns `params`.
    ///
    /// # Errors
    ///
    /// As [`Connection::call`].
    pub async fn echo(&self, params: Value) -> Result<Value, Error> {
        self.call("echo", params).await
    }
}

fn bad_reply(method: &str, v: &Value) -> Error {
    let mut text = v.to_string();
    text.truncate(200);
    Error::BadReply { method: method.to_owned(), reply: text }
}

/// The connection task: reads, writes, probes, and on exit fails every
/// pending request.
async fn run(
    inner: Arc<Inner>,
    stream: BoxStream,
    mut out_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    in_tx: mpsc::UnboundedSender<Incoming>,
    opts: ConnectionOptions,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = Framer::new(MAX_MESSAGE);
    let mut buf = vec![0u8; 256 * 1024];
    let probe = opts.probe_interval;
    let far = Duration::from_secs(86_400 * 365);
    let mut deadline = Instant::now() + probe.unwrap_or(far);
    let mut probe_sent = false;

    let error: Error = 'conn: loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) if framer.in_message() => break Error::ClosedMidMessage,
                    Ok(0) => break Error::Disconnected("closed by peer".to_owned()),
                    Ok(n) => n,
                    Err(e) => break Error::Io(e.to_string()),
                };
                framer.push(&buf[..n]);
                probe_sent = false;
                deadline = Instant::now() + probe.unwrap_or(far);
                loop {
                    let frame = match framer.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => break 'conn Error::Frame(e),
                    };
                    let msg: Envelope = match serde_json::from_slice(&frame) {
                        Ok(v) => v,
                        Err(e) if e.is_data() => break 'conn Error::BadMessage(e.to_string()),
                        Err(e) => break 'conn Error::BadJson(e.to_string()),
                    };
                    drop(frame);
                    match handle(&inner, &in_tx, msg) {
                        Ok(Some(reply)) => {
                            let bytes = serde_json::to_vec(&reply).expect("a Value always serialises");
                            if let Err(e) = wr.write_all(&bytes).await {
                                break 'conn Error::Io(e.to_string());
                            }
                        }
                        Ok(None) => {}
                        Err(e) => break 'conn e,
                    }
                }
            }
            msg = out_rx.recv() => {
                let Some(bytes) = msg else {
                    break Error::Disconnected("closed locally".to_owned());
                };
                if let Err(e) = wr.write_all(&bytes).await {
                    break Error::Io(e.to_string());
                }
            }
            () = tokio::time::sleep_until(deadline), if probe.is_some() => {
                let interval = probe.unwrap_or(far);
                if probe_sent {
                    break Error::InactivityTimeout(interval * 2);
                }
                tracing::debug!(remote = %inner.remote, "idle for {interval:?}, sending inactivity probe");
                let bytes = serde_json::to_vec(&json!({"method": "echo", "params": [], "id": "echo"}))
                    .expect("a Value always serialises");
                if let Err(e) = wr.write_all(&bytes).await {
                    break Error::Io(e.to_string());
                }
                probe_sent = true;
                deadline = Instant::now() + interval;
            }
            () = inner.shutdown.notified() => break Error::Disconnected("closed locally".to_owned()),
        }
    };
    let _ = wr.shutdown().await;
    let waiters = {
        let mut p = inner.pending.lock().expect("pending lock is never poisoned");
        p.closed = Some(error.clone());
        std::mem::take(&mut p.waiters)
    };
    // Dropping the senders wakes every caller, which then reads `closed`.
    drop(waiters);
    out_rx.close();
    let _ = in_tx.send(Incoming::Closed(error));
}

/// A JSON-RPC message; payloads stay unparsed JSON text until their
/// consumer parses them with the right types.
#[derive(Debug, Default)]
struct Envelope {
    id: Value,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Value,
    is_reply: bool,
}

impl<'de> serde::Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut m = Envelope::default();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*k {
                        "id" => m.id = map.next_value()?,
                        "method" => m.method = Some(map.next_value()?),
                        "params" => m.params = Some(map.next_value()?),
                        "result" => {
                            m.result = map.next_value()?;
                            m.is_reply = true;
                        }
                        "error" => {
                            m.error = map.next_value()?;
                            m.is_reply = true;
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

fn raw_null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// Handles one message; returns a reply to send, if any.
fn handle(inner: &Inner, in_tx: &mpsc::UnboundedSender<Incoming>, msg: Envelope) -> Result<Option<Value>, Error> {
    let id = msg.id;
    if let Some(method) = msg.method {
        let params = msg.params.unwrap_or_else(raw_null);
        if id.is_null() {
            let _ = in_tx.send(Incoming::Notify { method, params });
            return Ok(None);
        }
        // Requests from the server: only `echo` is defined for clients.
        return Ok(Some(if method == "echo" {
            let params: Value = serde_json::from_str(params.get()).map_err(|e| Error::BadJson(e.to_string()))?;
            json!({"id": id, "result": params, "error": null})
        } else {
            json!({"id": id, "result": null, "error": format!("unknown method {method}")})
        }));
    }
    if !msg.is_reply {
        return Err(Error::BadMessage("neither a request, a notification nor a reply".to_owned()));
    }
    if id == json!("echo") {
        return Ok(None); // reply to our inactivity probe
    }
    let Some(n) = id.as_u64() else {
        return Err(Error::BadMessage(format!("reply with unknown id {id}")));
    };
    let waiter = inner.pending.lock().expect("pending lock is never poisoned").waiters.remove(&n);
    let Some(waiter) = waiter else {
        return Err(Error::BadMessage(format!("reply with unknown id {n}")));
    };
    let result = if msg.error.is_null() { Ok(msg.result.unwrap_or_else(raw_null)) } else { Err(msg.error) };
    let _ = waiter.send(result);
    Ok(None)
}
