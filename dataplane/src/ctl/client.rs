//! A blocking client of the control socket, for `petrelctl`, `petrel-ovn`
//! (from a blocking thread) and tests.
//!
//! [`Client::connect`] says hello and keeps the server's [`HelloReply`]:
//! a client that must keep petreld's tables in step (petrel-ovn) compares
//! its `instance` with the previous connection's, and on a new instance
//! (petreld restarted) or `generation == 0` publishes a full snapshot.
//! A broken connection is reported as [`ClientError::Disconnected`]; the
//! client does not retry by itself, because it cannot know whether the
//! server applied the request it was sending.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{
    read_frame, write_msg, Change, DropsReply, ErrorReply, FrameError, Hello, HelloReply, PmdStatsReply, PortInfo,
    RefusalsReply, Reply, Request, Response, ShowReply, SnapshotMsg, StatsReply, TablesReply, TraceReply, MAX_FRAME,
};

/// Why a request did not get a successful reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to.
    #[error("cannot connect to {}: {source}: {hint}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What `connect` said.
        source: io::Error,
        /// What it means (is petreld running?).
        hint: &'static str,
    },
    /// The server closed the connection or stopped answering.
    #[error("connection to {} lost: {detail} (did petreld exit?)", path.display())]
    Disconnected {
        /// The socket path.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// The server answered with an error.
    #[error("petreld refused the request: {0}")]
    Remote(#[from] ErrorReply),
    /// The server answered something this client does not understand.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the server could not be reached at all (petrelctl exits 2).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Disconnected { .. })
    }
}

fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => {
            "no socket there: petreld is not running (or was started with another --control-socket)"
        }
        io::ErrorKind::ConnectionRefused => {
            "the socket exists but nobody listens: petreld is not running (stale socket)"
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied: petreld is probably running; use root or a member of the socket's group"
        }
        _ => "is petreld running?",
    }
}

/// A connection to petreld's control socket.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    hello: HelloReply,
}

impl Client {
    /// Connects and says hello as `name` (`petrelctl 0.1.0`), with a
    /// 30-second reply timeout.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if nobody answers; [`ClientError::Remote`]
    /// if the server refuses our version.
    pub fn connect(path: &Path, name: &str) -> Result<Self, ClientError> {
        Self::connect_timeout(path, name, Duration::from_secs(30))
    }

    /// [`Client::connect`] with another reply timeout.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_timeout(path: &Path, name: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            hint: hint(&source),
            source,
        })?;
        let lost = |e: io::Error| ClientError::Disconnected { path: path.to_owned(), detail: e.to_string() };
        stream.set_read_timeout(Some(timeout)).map_err(lost)?;
        stream.set_write_timeout(Some(timeout)).map_err(lost)?;
        let placeholder =
            HelloReply { major: 0, minor: 0, server: String::new(), instance: String::new(), generation: 0 };
        let mut c = Client { stream, path: path.to_owned(), hello: placeholder };
        match c.call(Request::Hello(Hello::new(name)))? {
            Reply::Hello(h) => c.hello = h,
            other => return Err(unexpected(&other)),
        }
        Ok(c)
    }

    /// The server's hello: version, instance, generation at connect time.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// Sends one request and waits for its response.
    ///
    /// # Errors
    /// [`ClientError::Remote`] for an error reply, [`ClientError::Disconnected`]
    /// if the connection broke or timed out, [`ClientError::Protocol`] for
    /// a reply that does not parse.
    pub fn call(&mut self, req: Request) -> Result<Reply, ClientError> {
        write_msg(&mut &self.stream, &req).map_err(|e| self.lost(e.to_string()))?;
        let f = read_frame(&mut &self.stream, MAX_FRAME).map_err(|e| match e {
            FrameError::Closed => self.lost("closed by the server".to_owned()),
            FrameError::Timeout => self.lost("no reply in time".to_owned()),
            FrameError::Io(e) => self.lost(e.to_string()),
            e => ClientError::Protocol(e.to_string()),
        })?;
        let resp: Response = serde_json::from_slice(&f.body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match resp {
            Response::Ok(r) => Ok(r),
            Response::Error(e) => Err(ClientError::Remote(e)),
        }
    }

    fn lost(&self, detail: String) -> ClientError {
        ClientError::Disconnected { path: self.path.clone(), detail }
    }

    /// `show`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn show(&mut self) -> Result<ShowReply, ClientError> {
        match self.call(Request::Show)? {
            Reply::Show(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// `pmd-stats`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn pmd_stats(&mut self) -> Result<PmdStatsReply, ClientError> {
        match self.call(Request::PmdStats)? {
            Reply::PmdStats(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// `dump-tables [DATAPATH]`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn dump_tables(&mut self, datapath: Option<&str>) -> Result<TablesReply, ClientError> {
        match self.call(Request::DumpTables { datapath: datapath.map(str::to_owned) })? {
            Reply::Tables(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// `drops`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn drops(&mut self) -> Result<DropsReply, ClientError> {
        match self.call(Request::Drops)? {
            Reply::Drops(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// `trace PORT MICROFLOW`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn trace(&mut self, port: &str, packet: &str) -> Result<TraceReply, ClientError> {
        match self.call(Request::Trace { port: port.to_owned(), packet: packet.to_owned() })? {
            Reply::Trace(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Publishes a full snapshot; returns the generation now running.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn publish(&mut self, snap: SnapshotMsg) -> Result<u64, ClientError> {
        match self.call(Request::PublishSnapshot(snap))? {
            Reply::Generation(g) => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    /// What the compiler refused in the running tables.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn refusals(&mut self) -> Result<RefusalsReply, ClientError> {
        match self.call(Request::Refusals)? {
            Reply::Refusals(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// MACs learnt by the fast path since the last call (consumed).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn learned(&mut self) -> Result<Vec<super::proto::LearnedMsg>, ClientError> {
        match self.call(Request::Learned)? {
            Reply::Learned(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Applies incremental changes; returns the generation now running.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<u64, ClientError> {
        match self.call(Request::ApplyChanges(changes))? {
            Reply::Generation(g) => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    /// Adds a port (a `--port` spec); returns it.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn add_port(&mut self, spec: &str) -> Result<PortInfo, ClientError> {
        match self.call(Request::AddPort { spec: spec.to_owned() })? {
            Reply::Port(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes a port by name; returns it with its final counters.
    ///
    /// # Errors
    /// As [`Client::call`]; [`ClientError::Remote`] with
    /// [`super::proto::ErrorCode::NotFound`] if there is no such port.
    pub fn del_port(&mut self, name: &str) -> Result<PortInfo, ClientError> {
        match self.call(Request::DelPort { name: name.to_owned() })? {
            Reply::Port(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// A `qos` request (policers).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn qos(&mut self, r: super::features::QosRequest) -> Result<super::features::QosReply, ClientError> {
        match self.call(Request::Qos(r))? {
            Reply::Qos(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// The tables' meters and their counters.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn meters(&mut self) -> Result<super::features::MetersReply, ClientError> {
        match self.call(Request::Meters)? {
            Reply::Meters(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// A `mirror` request.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn mirror(&mut self, r: super::features::MirrorRequest) -> Result<super::features::MirrorReply, ClientError> {
        match self.call(Request::Mirror(r))? {
            Reply::Mirrors(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// A `capture` request.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn capture(
        &mut self,
        r: super::features::CaptureRequest,
    ) -> Result<super::features::CaptureReply, ClientError> {
        match self.call(Request::Capture(r))? {
            Reply::Capture(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// The server's log filter, after replacing it with `filter` if given.
    ///
    /// # Errors
    /// As [`Client::call`]; [`ClientError::Remote`] with
    /// [`super::proto::ErrorCode::Rejected`] if the filter does not parse.
    pub fn log_level(&mut self, filter: Option<&str>) -> Result<super::proto::LogLevelReply, ClientError> {
        match self.call(Request::LogLevel { filter: filter.map(str::to_owned) })? {
            Reply::LogLevel(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// All raw counters.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn stats(&mut self) -> Result<StatsReply, ClientError> {
        match self.call(Request::Stats)? {
            Reply::Stats(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &Reply) -> ClientError {
    let s = format!("{r:?}");
    ClientError::Protocol(format!("reply of the wrong type: {}", s.chars().take(80).collect::<String>()))
}
