//! The control socket server: accepts connections on a Unix stream socket
//! and answers [`Request`]s from a [`Node`].
//!
//! This is the management side, not the fast path: one thread accepts,
//! one thread serves each connection, and they allocate freely. What must
//! stay true:
//!
//! - One bad client never affects another: a malformed frame, an oversize
//!   length, bad JSON, an unknown request or an incompatible version gets
//!   an error reply and closes that connection only.
//! - No client pins a thread forever: a frame must arrive in full within
//!   [`SocketOpts::frame_timeout`] of its first byte, an idle connection
//!   is closed after [`SocketOpts::idle_timeout`], replies must be taken
//!   within the frame timeout, and at most [`SocketOpts::max_clients`]
//!   connections are served at once.
//! - The socket is never reachable with the wrong permissions: it is bound
//!   under a temporary name, given its mode and group, then renamed into
//!   place. A live server's socket is never removed (a second petreld on
//!   the same path refuses to start); a stale one is.
//! - On stop, the socket file is removed if it is still ours.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::proto::{
    read_frame, write_msg, Change, DropsReply, ErrorCode, ErrorReply, FrameError, HelloReply, LogLevelReply,
    PmdStatsReply, PortInfo, RefusalsReply, Reply, Request, Response, ShowReply, SnapshotMsg, StatsReply, TablesReply,
    TraceReply, MAX_FRAME, PROTOCOL_MAJOR, PROTOCOL_MINOR, REQUEST_TYPES,
};

/// What the server asks of the running node (petreld, or a test's fake).
///
/// Methods are called from connection threads, possibly concurrently.
pub trait Node: Send + Sync + 'static {
    /// `petreld 0.1.0`: the server name in `hello` and `show`.
    fn server_name(&self) -> String {
        format!("petreld {}", env!("CARGO_PKG_VERSION"))
    }
    /// Generation of the tables running now (0: none yet).
    fn generation(&self) -> u64;
    /// Ports, state and counters.
    fn show(&self) -> ShowReply;
    /// Per-PMD counters.
    fn pmd_stats(&self) -> PmdStatsReply;
    /// The tables, readable; all datapaths or one by name or key.
    ///
    /// # Errors
    /// [`ErrorCode::NotFound`] if `datapath` names none.
    fn dump_tables(&self, datapath: Option<&str>) -> Result<TablesReply, ErrorReply>;
    /// Drop counters.
    fn drops(&self) -> DropsReply;
    /// Runs `packet` (microflow syntax) from port `port` (name or index)
    /// through the current tables, without sending it.
    ///
    /// # Errors
    /// Unknown port, bad microflow.
    fn trace(&self, port: &str, packet: &str) -> Result<TraceReply, ErrorReply>;
    /// Replaces the tables; returns the generation now running.
    ///
    /// # Errors
    /// The snapshot does not convert or validate.
    fn publish(&self, snap: SnapshotMsg) -> Result<u64, ErrorReply>;
    /// Applies incremental changes (all or nothing); returns the
    /// generation now running.
    ///
    /// # Errors
    /// A change names something missing, or the result does not validate.
    fn apply(&self, changes: Vec<Change>) -> Result<u64, ErrorReply>;
    /// All raw counters.
    fn stats(&self) -> StatsReply;
    /// What the compiler refused in the running tables.
    fn refusals(&self) -> RefusalsReply {
        RefusalsReply::default()
    }
    /// MACs learnt since the last call.
    fn learned(&self) -> Vec<super::proto::LearnedMsg> {
        Vec::new()
    }
    /// Adds a port given as a `--port` spec.
    ///
    /// # Errors
    /// A bad spec, a name in use, a device that does not open.
    fn add_port(&self, spec: &str) -> Result<PortInfo, ErrorReply> {
        let _ = spec;
        Err(ErrorReply::rejected("this server cannot add ports"))
    }
    /// Removes a port by name.
    ///
    /// # Errors
    /// [`ErrorCode::NotFound`] if there is no such port.
    fn del_port(&self, name: &str) -> Result<PortInfo, ErrorReply> {
        Err(ErrorReply::not_found(format!("no port {name:?}")))
    }
    /// Port policers.
    ///
    /// # Errors
    /// Unknown port, invalid rate.
    fn qos(&self, req: super::features::QosRequest) -> Result<super::features::QosReply, ErrorReply> {
        let _ = req;
        Err(ErrorReply::rejected("this server has no QoS"))
    }
    /// The tables' meters and their counters.
    fn meters(&self) -> super::features::MetersReply {
        super::features::MetersReply::default()
    }
    /// Local port mirrors.
    ///
    /// # Errors
    /// Unknown port, a mirror onto itself.
    fn mirror(&self, req: super::features::MirrorRequest) -> Result<super::features::MirrorReply, ErrorReply> {
        let _ = req;
        Err(ErrorReply::rejected("this server has no mirrors"))
    }
    /// Packet capture.
    ///
    /// # Errors
    /// Unknown port or session.
    fn capture(&self, req: super::features::CaptureRequest) -> Result<super::features::CaptureReply, ErrorReply> {
        let _ = req;
        Err(ErrorReply::rejected("this server cannot capture"))
    }
    /// The log filter in force, after replacing it with `filter` if given.
    ///
    /// # Errors
    /// [`ErrorCode::Rejected`]: the filter does not parse (nothing
    /// changed), or this server cannot change its logging.
    fn log_level(&self, filter: Option<&str>) -> Result<LogLevelReply, ErrorReply> {
        let _ = filter;
        Err(ErrorReply::rejected("this server has no runtime log control"))
    }
}

/// Default path of petreld's control socket.
pub const DEFAULT_SOCKET: &str = "/run/petrel/petreld.sock";

/// How the socket is created and how clients are bounded.
#[derive(Debug, Clone)]
pub struct SocketOpts {
    /// Group owning the socket (name or numeric gid); the owner stays the
    /// user petreld runs as (root).
    pub group: Option<String>,
    /// Socket file mode.
    pub mode: u32,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// A frame must arrive in full, and a reply be taken, within this long.
    pub frame_timeout: Duration,
    /// Largest request body.
    pub max_frame: u32,
    /// Most connections served at once; more get [`ErrorCode::Busy`].
    pub max_clients: usize,
}

impl Default for SocketOpts {
    fn default() -> Self {
        SocketOpts {
            group: None,
            mode: 0o660,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(10),
            max_frame: MAX_FRAME,
            max_clients: 64,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ServeError {
    /// creating the socket directory {0}: {1}
    CreateDir(PathBuf, io::Error),
    /// {0} exists and is not a socket; refusing to replace it
    NotASocket(PathBuf),
    /// another server (petreld?) is live on {0}; refusing to take its socket
    InUse(PathBuf),
    /// checking the existing socket {0}: {1}
    Probe(PathBuf, io::Error),
    /// removing the stale socket {0}: {1}
    RemoveStale(PathBuf, io::Error),
    /// binding {0}: {1}
    Bind(PathBuf, io::Error),
    /// setting mode {1:o} on {0}: {2}
    Chmod(PathBuf, u32, io::Error),
    /// group {0:?} does not exist (not a gid, not in /etc/group)
    UnknownGroup(String),
    /// reading /etc/group: {0}
    ReadGroups(io::Error),
    /// giving {0} to group {1}: {2}
    Chown(PathBuf, u32, io::Error),
    /// spawning the accept thread: {0}
    Spawn(io::Error),
}

/// Resolves a group name or numeric gid (from `/etc/group`, no NSS).
///
/// # Errors
/// The group is not a number and not in `/etc/group`.
pub fn resolve_group(group: &str) -> Result<u32, ServeError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").map_err(ServeError::ReadGroups)?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| ServeError::UnknownGroup(group.to_owned()))
}

/// Makes way for a new socket at `path`: nothing there, or a stale socket
/// nobody answers on (removed). A live socket or another kind of file is
/// refused.
fn clear_stale(path: &Path) -> Result<(), ServeError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServeError::Probe(path.to_owned(), e)),
    };
    if !md.file_type().is_socket() {
        return Err(ServeError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServeError::InUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| ServeError::RemoveStale(path.to_owned(), e))
        }
        Err(e) => Err(ServeError::Probe(path.to_owned(), e)),
    }
}

/// Starts serving `node` on `path` until `stop` is set; the returned
/// thread ends once the socket is removed and every connection is done:
/// about 0.1 s after `stop`, or up to [`SocketOpts::frame_timeout`] if a
/// connection is in the middle of receiving a request.
///
/// Creates the parent directory if missing (mode 0750, given to the group
/// too; an existing directory is left as it is), removes a stale socket,
/// refuses a live one.
///
/// # Errors
/// See [`ServeError`]; no socket file is left behind on error.
pub fn serve(
    path: &Path,
    opts: SocketOpts,
    node: Arc<dyn Node>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ServeError> {
    let gid = opts.group.as_deref().map(resolve_group).transpose()?;
    let path = path.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| ServeError::CreateDir(dir.clone(), e))?;
        // Clients need search permission on the directory; others none.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| ServeError::CreateDir(dir.clone(), e))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&dir, None, Some(g)).map_err(|e| ServeError::Chown(dir.clone(), g, e))?;
        }
    }
    clear_stale(&path)?;
    let file = path.file_name().map_or_else(|| "petreld.sock".into(), |f| f.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| ServeError::Bind(tmp.clone(), e))?;
    let setup = || -> Result<(), ServeError> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode))
            .map_err(|e| ServeError::Chmod(tmp.clone(), opts.mode, e))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(g)).map_err(|e| ServeError::Chown(tmp.clone(), g, e))?;
        }
        listener.set_nonblocking(true).map_err(|e| ServeError::Bind(tmp.clone(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ServeError::Bind(path.clone(), e))
    };
    if let Err(e) = setup() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let ino = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino())).ok();
    let instance =
        format!("{}-{}", std::process::id(), SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let ctx = Arc::new(Ctx { node, stop, opts, instance, active: AtomicUsize::new(0) });
    let p = path.clone();
    std::thread::Builder::new()
        .name("ctl-accept".into())
        .spawn(move || {
            accept_loop(&listener, &ctx);
            // Remove the socket only if it is still the one we bound.
            let still_ours = std::fs::symlink_metadata(&p).map(|m| (m.dev(), m.ino())).ok() == ino;
            if still_ours {
                let _ = std::fs::remove_file(&p);
            }
        })
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            ServeError::Spawn(e)
        })
}

struct Ctx {
    node: Arc<dyn Node>,
    stop: Arc<AtomicBool>,
    opts: SocketOpts,
    instance: String,
    active: AtomicUsize,
}

/// How often blocked waits look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

fn accept_loop(listener: &UnixListener, ctx: &Arc<Ctx>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                conns.retain(|h| !h.is_finished());
                if ctx.active.load(Ordering::Relaxed) >= ctx.opts.max_clients {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_write_timeout(Some(POLL));
                    let msg = format!("too many control connections (limit {})", ctx.opts.max_clients);
                    let _ = write_msg(&mut &s, &Response::Error(ErrorReply::new(ErrorCode::Busy, msg)));
                    continue;
                }
                ctx.active.fetch_add(1, Ordering::Relaxed);
                let c = Arc::clone(ctx);
                match std::thread::Builder::new().name("ctl-conn".into()).spawn(move || {
                    serve_conn(&s, &c);
                    c.active.fetch_sub(1, Ordering::Relaxed);
                }) {
                    Ok(h) => conns.push(h),
                    Err(e) => {
                        ctx.active.fetch_sub(1, Ordering::Relaxed);
                        petrel_obs::error_limited!(1, "control socket: cannot spawn a connection thread: {e}");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                petrel_obs::error_limited!(1, "control socket: accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

/// A reader that fails with `TimedOut` once `until` has passed.
struct Deadline<'a> {
    s: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.s.set_read_timeout(Some(left))?;
        let mut s = self.s;
        s.read(buf)
    }
}

enum Wait {
    /// The first byte of a request.
    Ready(u8),
    Done,
}

/// Waits for the next request's first byte, the peer closing, the idle
/// timeout or the stop flag.
fn wait_request(s: &UnixStream, ctx: &Ctx) -> Wait {
    let idle_until = Instant::now() + ctx.opts.idle_timeout;
    let mut b = [0u8; 1];
    loop {
        if ctx.stop.load(Ordering::Relaxed) || Instant::now() >= idle_until {
            return Wait::Done;
        }
        if s.set_read_timeout(Some(POLL)).is_err() {
            return Wait::Done;
        }
        // Read one byte rather than peek (unstable on UnixStream); the
        // caller chains it in front of the rest of the frame.
        match (&mut &*s).read(&mut b) {
            Ok(0) => return Wait::Done,
            Ok(_) => return Wait::Ready(b[0]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Wait::Done,
        }
    }
}

fn serve_conn(s: &UnixStream, ctx: &Ctx) {
    if s.set_nonblocking(false).is_err() || s.set_write_timeout(Some(ctx.opts.frame_timeout)).is_err() {
        return;
    }
    loop {
        let Wait::Ready(first) = wait_request(s, ctx) else {
            return;
        };
        let first = [first];
        let mut rd = (&first[..]).chain(Deadline { s, until: Instant::now() + ctx.opts.frame_timeout });
        let (resp, close) = match read_frame(&mut rd, ctx.opts.max_frame) {
            Ok(f) if f.version != PROTOCOL_MAJOR => (incompatible(f.version), true),
            Ok(f) => match decode(&f.body) {
                Ok(req) => dispatch(ctx, req),
                Err(e) => (Response::Error(e), true),
            },
            Err(FrameError::Closed) => return,
            Err(e) => {
                let code = match e {
                    FrameError::TooLarge(..) => ErrorCode::TooLarge,
                    _ => ErrorCode::BadFrame,
                };
                (Response::Error(ErrorReply::new(code, e.to_string())), true)
            }
        };
        if let Response::Error(e) = &resp {
            if close {
                petrel_obs::warn_limited!(5, "control socket: closing a connection: {e}");
            }
        }
        if write_msg(&mut &*s, &resp).is_err() || close {
            // Discard what the client already sent (briefly, boundedly):
            // closing with unread data would make it see a reset instead
            // of our reply followed by a clean end of stream.
            drain(s);
            let _ = s.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn drain(s: &UnixStream) {
    let until = Instant::now() + Duration::from_millis(50);
    let mut buf = [0u8; 4096];
    let mut left: usize = 1 << 20;
    let _ = s.shutdown(std::net::Shutdown::Write);
    while left > 0 {
        let t = until.saturating_duration_since(Instant::now());
        if t.is_zero() || s.set_read_timeout(Some(t)).is_err() {
            return;
        }
        match (&mut &*s).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn incompatible(major: u16) -> Response {
    Response::Error(ErrorReply::new(
        ErrorCode::IncompatibleVersion,
        format!("client speaks protocol {major}.x, this server {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"),
    ))
}

/// Decodes a request body, telling bad JSON from an unknown request type.
pub(super) fn decode(body: &[u8]) -> Result<Request, ErrorReply> {
    // Straight to the typed request (a snapshot can be megabytes); only a
    // failure is parsed again, loosely, to say what was wrong.
    let typed_err = match serde_json::from_slice::<Request>(body) {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("body is not valid JSON: {e}")))?;
    match v.get("type").and_then(serde_json::Value::as_str) {
        Some(t) if !REQUEST_TYPES.contains(&t) => {
            Err(ErrorReply::new(ErrorCode::UnknownRequest, format!("unknown request type {t:?}")))
        }
        Some(_) => Err(ErrorReply::new(ErrorCode::BadRequest, format!("invalid request: {typed_err}"))),
        None => Err(ErrorReply::new(ErrorCode::BadRequest, "request has no \"type\" string")),
    }
}

/// Runs one request; `true` if the connection must close after the reply.
fn dispatch(ctx: &Ctx, req: Request) -> (Response, bool) {
    let node = &*ctx.node;
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<Reply, ErrorReply> {
        Ok(match req {
            Request::Hello(h) => {
                if h.major != PROTOCOL_MAJOR {
                    return Err(match incompatible(h.major) {
                        Response::Error(e) => e,
                        Response::Ok(_) => unreachable!("incompatible() builds an error"),
                    });
                }
                Reply::Hello(HelloReply {
                    major: PROTOCOL_MAJOR,
                    minor: PROTOCOL_MINOR,
                    server: node.server_name(),
                    instance: ctx.instance.clone(),
                    generation: node.generation(),
                })
            }
            Request::Show => Reply::Show(node.show()),
            Request::PmdStats => Reply::PmdStats(node.pmd_stats()),
            Request::DumpTables { datapath } => Reply::Tables(node.dump_tables(datapath.as_deref())?),
            Request::Drops => Reply::Drops(node.drops()),
            Request::Trace { port, packet } => Reply::Trace(node.trace(&port, &packet)?),
            Request::PublishSnapshot(s) => Reply::Generation(node.publish(s)?),
            Request::ApplyChanges(c) => Reply::Generation(node.apply(c)?),
            Request::Stats => Reply::Stats(node.stats()),
            Request::Refusals => Reply::Refusals(node.refusals()),
            Request::Learned => Reply::Learned(node.learned()),
            Request::AddPort { spec } => Reply::Port(node.add_port(&spec)?),
            Request::DelPort { name } => Reply::Port(node.del_port(&name)?),
            Request::Qos(r) => Reply::Qos(node.qos(r)?),
            Request::Mirror(r) => Reply::Mirrors(node.mirror(r)?),
            Request::Meters => Reply::Meters(node.meters()),
            Request::Capture(r) => Reply::Capture(node.capture(r)?),
            Request::LogLevel { filter } => Reply::LogLevel(node.log_level(filter.as_deref())?),
        })
    }));
    match r {
        Ok(Ok(reply)) => (Response::Ok(reply), false),
        Ok(Err(e)) => {
            let close = e.code == ErrorCode::IncompatibleVersion;
            (Response::Error(e), close)
        }
        Err(_) => (Response::Error(ErrorReply::new(ErrorCode::Internal, "the request handler panicked")), false),
    }
}
