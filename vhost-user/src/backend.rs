//! The management thread: one event loop (`poll(2)`) for every vhost-user
//! port's socket.
//!
//! - Server mode: we create the socket (replacing a stale file) and accept
//!   one frontend at a time; when it goes, we accept the next.
//! - Client mode: the frontend created the socket (`server=1`); we connect,
//!   and retry every [`RECONNECT_INTERVAL`] while it is absent or after it
//!   went, so pods and `petreld` can restart in any order.
//!
//! A connection is closed, its rings stopped and its memory unmapped when
//! the peer hangs up, when a message is invalid (the `vhost` crate's checks
//! or ours in [`crate::device`]), when a message does not arrive whole
//! within [`MSG_TIMEOUT`] (a stalled peer cannot block the other ports), and
//! when a PMD reports a virtqueue violation. Violations are counted per port
//! and logged once per disconnect.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::RecvFlags;
use vhost::vhost_user::{BackendReqHandler, VhostUserBackendReqHandlerMut};

use crate::device::Device;
use crate::virtq::VIOLATION_NAMES;
use crate::{Port, PortState};

/// How often a client-mode port tries to (re)connect.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a message may take to arrive whole once it has started.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait of the event loop (commands and violations are noticed within it).
const POLL_MS: i64 = 20;

/// Who creates the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We listen; the pod connects.
    Server,
    /// The pod listens (`server=1`); we connect and reconnect.
    Client,
}

/// A port to serve.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Name (unique).
    pub name: String,
    /// Socket path.
    pub path: PathBuf,
    /// Socket mode.
    pub mode: Mode,
    /// Queue pairs.
    pub queues: u16,
}

/// Errors of port management.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum BackendError {
    /// port {0}: cannot listen on {1}: {2}
    Listen(String, PathBuf, std::io::Error),
    /// port {0}: queues must be 1..=128, not {1}
    Queues(String, u16),
    /// port {0} already exists
    Exists(String),
    /// no port {0}
    NoPort(String),
    /// the vhost-user management thread has stopped
    Stopped,
}

enum Compat {
    /// The message was handled here, with this result.
    Handled(vhost::vhost_user::Result<()>),
    /// Let the handler take it; then ack this request code if given.
    Ack(Option<u32>),
}

enum Cmd {
    Add(Box<MgmtPort>),
    Del(String, Sender<bool>),
}

type Handler = BackendReqHandler<Mutex<Device>>;

struct MgmtPort {
    cfg: PortConfig,
    port: Arc<Port>,
    dev: Arc<Mutex<Device>>,
    listener: Option<UnixListener>,
    conn: Option<Handler>,
    /// A duplicate of the connection's socket, for poll (the handler exposes only a raw fd).
    conn_sock: Option<UnixStream>,
    next_try: Instant,
}

impl std::fmt::Debug for MgmtPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MgmtPort").field("cfg", &self.cfg).field("connected", &self.conn.is_some()).finish()
    }
}

/// The management thread and the handle to add and remove ports.
#[derive(Debug)]
pub struct Backend {
    tx: Mutex<Sender<Cmd>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    call_interval: u64,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Add(p) => write!(f, "Add({})", p.cfg.name),
            Cmd::Del(n, _) => write!(f, "Del({n})"),
        }
    }
}

impl Backend {
    /// Starts the management thread. `call_interval` is the minimum number
    /// of TSC ticks between two interrupts of one ring.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    pub fn start(call_interval: u64) -> Self {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vhost-mgmt".to_owned())
            .spawn(move || event_loop(&rx, &stop2))
            .expect("spawning the vhost-user management thread");
        Backend { tx: Mutex::new(tx), stop, thread: Some(thread), call_interval }
    }

    /// Adds a port: binds its socket now (server mode, so errors are
    /// reported here) and hands it to the management thread.
    ///
    /// # Errors
    /// [`BackendError`].
    pub fn add_port(&self, cfg: PortConfig) -> Result<Arc<Port>, BackendError> {
        if !(1..=128).contains(&cfg.queues) {
            return Err(BackendError::Queues(cfg.name, cfg.queues));
        }
        let listener = match cfg.mode {
            Mode::Server => {
                Some(listen(&cfg.path).map_err(|e| BackendError::Listen(cfg.name.clone(), cfg.path.clone(), e))?)
            }
            Mode::Client => None,
        };
        let port = Arc::new(Port::new(&cfg.name, cfg.queues));
        let dev = Arc::new(Mutex::new(Device::new(Arc::clone(&port), self.call_interval)));
        let m = MgmtPort {
            cfg,
            port: Arc::clone(&port),
            dev,
            listener,
            conn: None,
            conn_sock: None,
            next_try: Instant::now(),
        };
        let tx = self.tx.lock().map_err(|_| BackendError::Stopped)?;
        tx.send(Cmd::Add(Box::new(m))).map_err(|_| BackendError::Stopped)?;
        Ok(port)
    }

    /// Removes a port: closes its connection and socket (removing the socket
    /// file in server mode). The caller must have stopped polling it.
    ///
    /// # Errors
    /// [`BackendError::NoPort`] or [`BackendError::Stopped`].
    pub fn del_port(&self, name: &str) -> Result<(), BackendError> {
        let (tx, rx) = channel();
        self.tx
            .lock()
            .map_err(|_| BackendError::Stopped)?
            .send(Cmd::Del(name.to_owned(), tx))
            .map_err(|_| BackendError::Stopped)?;
        match rx.recv() {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackendError::NoPort(name.to_owned())),
            Err(_) => Err(BackendError::Stopped),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(path: &Path) -> std::io::Result<UnixListener> {
    // A socket file left by a previous run is replaced; anything else is not.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            std::fs::remove_file(path)?;
        }
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn prepare(stream: &UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(MSG_TIMEOUT))?;
    stream.set_write_timeout(Some(MSG_TIMEOUT))
}

impl MgmtPort {
    fn connected(&mut self, stream: UnixStream) {
        if let Err(e) = prepare(&stream) {
            petrel_obs::warn_limited!(5, port = %self.cfg.name, "vhost-user: socket setup failed: {e}");
            return;
        }
        let dup = match stream.try_clone() {
            Ok(d) => d,
            Err(e) => {
                petrel_obs::warn_limited!(5, port = %self.cfg.name, "vhost-user: socket setup failed: {e}");
                return;
            }
        };
        self.conn = Some(BackendReqHandler::from_stream(stream, Arc::clone(&self.dev)));
        self.conn_sock = Some(dup);
        self.port.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.port.set_state(PortState::Connected);
        if !self.cfg.path.as_os_str().is_empty() {
            // A pod can connect and disconnect in a loop: rate-limited (the
            // port's `connects` counter has the full count).
            petrel_obs::info_limited!(5, port = %self.cfg.name, path = %self.cfg.path.display(), "vhost-user: frontend connected");
        }
    }

    fn disconnect(&mut self, why: &str) {
        self.conn_sock = None;
        if self.conn.take().is_none() {
            return;
        }
        if let Ok(mut d) = self.dev.lock() {
            d.reset();
        }
        self.port.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        self.port.set_state(PortState::Waiting);
        self.next_try = Instant::now() + RECONNECT_INTERVAL;
        if !self.cfg.path.as_os_str().is_empty() {
            // Violations land here too (`violations` counts them all); each
            // names what the pod did wrong, so the budget is larger than
            // for connects.
            petrel_obs::warn_limited!(10, port = %self.cfg.name, "vhost-user: disconnected: {why}");
        }
    }

    fn try_connect(&mut self, now: Instant) {
        if self.conn.is_some() || self.cfg.mode != Mode::Client || now < self.next_try {
            return;
        }
        self.next_try = now + RECONNECT_INTERVAL;
        if let Ok(s) = UnixStream::connect(&self.cfg.path) {
            self.connected(s);
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.conn_sock, &self.listener) {
            (Some(c), _) => Some(c.as_fd()),
            (None, Some(l)) => Some(l.as_fd()),
            (None, None) => None,
        }
    }

    fn ready(&mut self, revents: PollFlags) {
        if self.conn.is_none() {
            if let Some(l) = &self.listener {
                if let Ok((s, _)) = l.accept() {
                    self.connected(s);
                }
            }
            return;
        }
        if !revents.contains(PollFlags::IN) && revents.intersects(PollFlags::HUP | PollFlags::ERR) {
            return self.disconnect("peer hung up");
        }
        let res = match self.dpdk_compat() {
            Compat::Handled(r) => r,
            Compat::Ack(need) => {
                let r = match self.conn.as_mut() {
                    Some(c) => c.handle_request(),
                    None => return,
                };
                match (r, need) {
                    (Ok(()), Some(code)) => self.send_ack(code),
                    (r, _) => r,
                }
            }
        };
        if let Err(e) = res {
            let why = match e {
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage => {
                    "peer hung up".to_owned()
                }
                e => {
                    self.port.counters.violations.fetch_add(1, Ordering::Relaxed);
                    format!("invalid message: {e}")
                }
            };
            self.disconnect(&why);
        }
    }

    /// DPDK's virtio-user in server mode (22.11), when a backend reconnects,
    /// sends SET_VRING_ENABLE before SET_FEATURES and asks for acks
    /// (NEED_REPLY) without renegotiating REPLY_ACK. DPDK's own vhost library
    /// accepts both; rust-vmm's handler refuses the first and never answers
    /// the second, which would hang the pod. So we peek at each header: an
    /// early SET_VRING_ENABLE is handled here, and an ack the handler will
    /// not send is sent after it succeeded.
    fn dpdk_compat(&mut self) -> Compat {
        const SET_VRING_ENABLE: u32 = 18;
        // Messages that carry their own reply.
        const HAS_REPLY: [u32; 6] = [1, 11, 15, 17, 24, 36];
        let Some(sock) = &self.conn_sock else { return Compat::Ack(None) };
        let mut h = [0u8; 12];
        match rustix::net::recv(sock, &mut h, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((12, _)) => {}
            _ => return Compat::Ack(None),
        }
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (code, flags, size) = (word(0), word(4), word(8));
        let need_reply = flags & 0x8 != 0;
        let (features_set, reply_ack) = match self.dev.lock() {
            Ok(d) => (d.features_set(), d.reply_ack()),
            Err(_) => return Compat::Ack(None),
        };
        if code == SET_VRING_ENABLE && !features_set && size == 8 {
            let mut m = [0u8; 20];
            let mut s = sock;
            if let Err(e) = std::io::Read::read_exact(&mut s, &mut m) {
                return Compat::Handled(Err(vhost::vhost_user::Error::SocketBroken(e)));
            }
            let index = u32::from_le_bytes([m[12], m[13], m[14], m[15]]);
            let num = u32::from_le_bytes([m[16], m[17], m[18], m[19]]);
            let r = match (self.dev.lock(), num) {
                (Ok(mut d), 0 | 1) => VhostUserBackendReqHandlerMut::set_vring_enable(&mut *d, index, num == 1),
                _ => Err(vhost::vhost_user::Error::InvalidParam),
            };
            return Compat::Handled(match (r, need_reply) {
                (Ok(()), true) => self.send_ack(code),
                (r, _) => r,
            });
        }
        Compat::Ack((need_reply && !reply_ack && !HAS_REPLY.contains(&code)).then_some(code))
    }

    fn send_ack(&mut self, code: u32) -> vhost::vhost_user::Result<()> {
        let mut m = [0u8; 20];
        m[0..4].copy_from_slice(&code.to_le_bytes());
        m[4..8].copy_from_slice(&(0x1u32 | 0x4).to_le_bytes());
        m[8..12].copy_from_slice(&8u32.to_le_bytes());
        let Some(sock) = &self.conn_sock else { return Ok(()) };
        let mut s = sock;
        std::io::Write::write_all(&mut s, &m).map_err(vhost::vhost_user::Error::SocketBroken)
    }

    fn check_broken(&mut self) {
        if let Some(code) = self.port.take_broken() {
            self.port.counters.violations.fetch_add(1, Ordering::Relaxed);
            let name = VIOLATION_NAMES.get(usize::from(code)).copied().unwrap_or("?");
            self.disconnect(&format!("virtqueue violation: {name}"));
        }
    }

    fn close(&mut self) {
        self.disconnect("port removed");
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(&self.cfg.path);
        }
    }
}

/// Serves one already connected frontend on the calling thread until it
/// disconnects or breaks a rule; returns the port's violation count. For
/// fuzzing the message handler (the same code path as the event loop's).
#[doc(hidden)]
pub fn serve_one(stream: UnixStream, port: Arc<Port>) -> u64 {
    let dev = Arc::new(Mutex::new(Device::new(Arc::clone(&port), 0)));
    let cfg =
        PortConfig { name: port.name().to_owned(), path: PathBuf::new(), mode: Mode::Server, queues: port.n_qp() };
    let mut m = MgmtPort {
        cfg,
        port: Arc::clone(&port),
        dev,
        listener: None,
        conn: None,
        conn_sock: None,
        next_try: Instant::now(),
    };
    m.connected(stream);
    while m.conn.is_some() {
        m.ready(PollFlags::IN);
        m.check_broken();
    }
    port.counters.violations.load(Ordering::Relaxed)
}

fn event_loop(rx: &Receiver<Cmd>, stop: &AtomicBool) {
    let mut ports: HashMap<String, MgmtPort> = HashMap::new();
    let mut ready: Vec<(String, PollFlags)> = Vec::new();
    let timeout = Timespec { tv_sec: 0, tv_nsec: POLL_MS * 1_000_000 };
    while !stop.load(Ordering::Relaxed) {
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Add(p) => {
                    let name = p.cfg.name.clone();
                    if let Some(mut old) = ports.insert(name, *p) {
                        old.close();
                    }
                }
                Cmd::Del(name, reply) => {
                    let found = ports.remove(&name).map(|mut p| p.close()).is_some();
                    let _ = reply.send(found);
                }
            }
        }
        let now = Instant::now();
        for p in ports.values_mut() {
            p.check_broken();
            p.try_connect(now);
        }
        ready.clear();
        {
            let mut names = Vec::with_capacity(ports.len());
            let mut fds = Vec::with_capacity(ports.len());
            for (name, p) in &ports {
                if let Some(fd) = p.fd() {
                    fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                    names.push(name);
                }
            }
            if fds.is_empty() {
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
            if let Ok(n) = poll(&mut fds, Some(&timeout)) {
                if n > 0 {
                    for (f, name) in fds.iter().zip(names) {
                        if !f.revents().is_empty() {
                            ready.push((name.clone(), f.revents()));
                        }
                    }
                }
            }
        }
        for (name, revents) in &ready {
            if let Some(p) = ports.get_mut(name) {
                p.ready(*revents);
            }
        }
    }
    for p in ports.values_mut() {
        p.close();
    }
}
