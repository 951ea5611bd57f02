//! Learning the local ports from petreld: the watcher behind
//! `petrel-ovn --dataplane PATH`.
//!
//! A petreld port declares the OVN logical port it carries with
//! `iface-id=<name>` in its `--port` spec (ovn-controller reads the same
//! thing from `Interface.external_ids:iface-id`). The watcher is a
//! dedicated thread (the control-socket [`Client`] is blocking) that
//! connects to petreld's control socket, asks `show` every
//! [`WatchConfig::poll_interval`] ([`POLL_INTERVAL`] by default), and keeps
//! the agent's local iface-ids ([`IfaceIds`]) equal to the union of the
//! static ones (`--iface-id` / config `iface-ids`) and the `iface_id`s
//! petreld reports. The agent then claims a port when it appears and
//! releases it when it disappears, like ovn-controller when an OVS
//! interface is added or deleted.
//!
//! petreld unreachable (not started yet, socket missing, stale socket,
//! connection lost, no reply in time):
//! - the watcher retries with a bounded backoff ([`BACKOFF_MIN`] doubling to
//!   [`BACKOFF_MAX`]), and logs once per state change, not per retry;
//! - the last set petreld reported is **kept for a grace period**
//!   ([`WatchConfig::grace`], [`GRACE`] by default) after the loss, then
//!   released (the static iface-ids stay). Why: ovn-controller releases a
//!   port whose interface disappears, and a port of a petreld that is down
//!   forwards nothing, so claiming it forever would attract traffic to a
//!   black hole; but a petreld restart (upgrade, crash and respawn) must
//!   not flap every claim of the node, which would make ovn-northd and the
//!   other chassis churn. A petreld that comes back within the grace period
//!   simply reports its ports again: ports still there stay claimed without
//!   any Southbound write, ports gone are released then.
//! - before petreld has ever answered, the dataplane contributes nothing
//!   (only the static iface-ids are local).
//!
//! A new petreld `instance` after a reconnect (petreld restarted) is
//! logged; that is where the full table snapshot will be pushed once the
//! logical-flow compiler exists (see [`Watcher::on_connected`]).
//!
//! The watcher owns the agent's iface-id set: it replaces the whole set on
//! every change, so nothing else should drive the same [`IfaceIds`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use petrel_dataplane::ctl::proto::ShowReply;
use petrel_dataplane::ctl::{Client, ClientError};

use tokio::sync::watch;

use crate::chassis::IfaceIds;
use crate::install::DpView;

/// Default interval between two `show` requests.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Default time the last known ports stay claimed after petreld is lost.
pub const GRACE: Duration = Duration::from_secs(10);
/// First reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Bound of the reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a connect or a request may take before petreld counts as lost.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Name given to petreld in `hello`.
const CLIENT_NAME: &str = concat!("petrel-ovn ", env!("CARGO_PKG_VERSION"));

/// Watcher settings.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// petreld's control socket.
    pub socket: PathBuf,
    /// Interval between two `show` requests.
    pub poll_interval: Duration,
    /// How long the last known ports stay local after petreld is lost.
    pub grace: Duration,
    /// Reconnection backoff: first delay.
    pub backoff_min: Duration,
    /// Reconnection backoff: bound.
    pub backoff_max: Duration,
    /// Connect and reply timeout.
    pub reply_timeout: Duration,
    /// iface-ids that are local whatever petreld says (`--iface-id`).
    pub static_ids: BTreeSet<String>,
}

impl WatchConfig {
    /// Defaults for `socket`, with the given static iface-ids.
    pub fn new(socket: impl Into<PathBuf>, static_ids: BTreeSet<String>) -> Self {
        WatchConfig {
            socket: socket.into(),
            poll_interval: POLL_INTERVAL,
            grace: GRACE,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            reply_timeout: REPLY_TIMEOUT,
            static_ids,
        }
    }
}

/// Where the watcher stands with petreld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// petreld has not answered since the watcher started.
    NeverSeen,
    /// Connected to this petreld instance.
    Up {
        /// `HelloReply::instance`.
        instance: String,
    },
    /// Lost (the last ports are kept until [`Watcher::deadline`]).
    Lost,
}

/// The iface-ids a `show` reply declares (empty names ignored).
pub fn iface_ids_of(show: &ShowReply) -> BTreeSet<String> {
    show.ports.iter().filter_map(|p| p.iface_id.as_deref()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The watcher's state machine, without I/O (the thread drives it; tests
/// call it directly).
#[derive(Debug)]
pub struct Watcher {
    cfg: WatchConfig,
    link: Link,
    /// The ports petreld declared last (kept through the grace period).
    dataplane_ids: BTreeSet<String>,
    /// The instance of the last petreld seen, to notice restarts.
    last_instance: Option<String>,
    /// The last connection error logged (so retries do not repeat it).
    last_error: Option<String>,
    /// End of the grace period: set when petreld is lost, cleared by the
    /// next successful `show` (not by a mere connect, so a petreld that
    /// accepts but never answers does not extend it).
    release_at: Option<Instant>,
    /// Where petreld's ports and table generation go (the installer).
    view_tx: Option<watch::Sender<Option<DpView>>>,
}

impl Watcher {
    /// Also publishes petreld's ports and generation to `tx` after every
    /// `show` (for [`crate::install::Installer`]).
    pub fn with_view(mut self, tx: watch::Sender<Option<DpView>>) -> Self {
        self.view_tx = Some(tx);
        self
    }

    fn send_view(&self, s: &ShowReply) {
        let (Some(tx), Link::Up { instance }) = (&self.view_tx, &self.link) else { return };
        let v = DpView {
            instance: instance.clone(),
            generation: s.generation,
            ports: s.ports.iter().map(|p| (p.index, p.name.clone(), p.iface_id.clone())).collect(),
        };
        tx.send_if_modified(|cur| {
            if cur.as_ref() == Some(&v) {
                false
            } else {
                *cur = Some(v);
                true
            }
        });
    }

    /// A watcher that has not talked to petreld yet.
    pub fn new(cfg: WatchConfig) -> Self {
        Watcher {
            cfg,
            link: Link::NeverSeen,
            dataplane_ids: BTreeSet::new(),
            last_instance: None,
            last_error: None,
            release_at: None,
            view_tx: None,
        }
    }

    /// The link state.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The local iface-ids now: static ∪ what petreld declares (or
    /// declared last, within the grace period).
    pub fn wanted(&self) -> BTreeSet<String> {
        self.cfg.static_ids.union(&self.dataplane_ids).cloned().collect()
    }

    /// A (new) connection said hello.
    pub fn on_connected(&mut self, instance: &str, generation: u64) {
        match self.last_instance.as_deref() {
            None => {
                tracing::info!(socket = %self.cfg.socket.display(), instance, generation, "connected to petreld");
            }
            Some(prev) if prev == instance => {
                tracing::info!(socket = %self.cfg.socket.display(), instance, "reconnected to petreld (same instance)");
            }
            Some(prev) => {
                tracing::warn!(
                    socket = %self.cfg.socket.display(), previous = prev, instance, generation,
                    "petreld restarted (new instance)"
                );
            }
        }
        // A new instance (or generation 0) reaches the installer through
        // the view: its generation differs from the installer's last
        // publish, so a full snapshot is pushed (DESIGN.md "If petreld
        // restarts, petrel-ovn pushes a full snapshot").
        self.last_instance = Some(instance.to_owned());
        self.link = Link::Up { instance: instance.to_owned() };
        self.last_error = None;
    }

    /// A `show` answered; returns whether [`Watcher::wanted`] changed.
    pub fn on_ports(&mut self, ids: BTreeSet<String>) -> bool {
        self.release_at = None;
        if ids == self.dataplane_ids {
            return false;
        }
        let added: Vec<&String> = ids.difference(&self.dataplane_ids).collect();
        let removed: Vec<&String> = self.dataplane_ids.difference(&ids).collect();
        tracing::info!(?added, ?removed, "petreld ports changed");
        let before = self.wanted();
        self.dataplane_ids = ids;
        self.wanted() != before
    }

    /// Connecting or a request failed at `now`.
    pub fn on_error(&mut self, err: &ClientError, now: Instant) {
        let msg = err.to_string();
        match &self.link {
            Link::Up { .. } => {
                if self.release_at.is_none() && !self.dataplane_ids.is_empty() {
                    self.release_at = Some(now + self.cfg.grace);
                }
                tracing::warn!(
                    n_ports = self.dataplane_ids.len(), grace = ?self.cfg.grace,
                    "lost petreld: {msg}; keeping its ports claimed for the grace period, retrying"
                );
                self.link = Link::Lost;
            }
            Link::NeverSeen if self.last_error.is_none() => {
                tracing::warn!("petreld not reachable: {msg}; retrying (only --iface-id ports are local until then)");
            }
            _ if self.last_error.as_deref() != Some(msg.as_str()) => {
                tracing::debug!("petreld still not reachable: {msg}");
            }
            _ => {}
        }
        self.last_error = Some(msg);
    }

    /// When [`Watcher::tick`] has something to do (grace expiry).
    pub fn deadline(&self) -> Option<Instant> {
        self.release_at
    }

    /// Expires the grace period; returns whether [`Watcher::wanted`] changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.release_at {
            Some(t) if now >= t => {
                tracing::warn!(
                    ports = ?self.dataplane_ids, grace = ?self.cfg.grace,
                    "petreld still unreachable after the grace period: releasing its ports"
                );
                self.release_at = None;
                let before = self.wanted();
                self.dataplane_ids.clear();
                self.wanted() != before
            }
            _ => false,
        }
    }

    /// One connection attempt and one `show`, for the initial set before
    /// the agent starts (so it does not release ports it already holds,
    /// e.g. after `--keep-chassis-on-exit`, while the thread is starting).
    pub fn probe(&mut self) -> Option<Client> {
        let mut c = match Client::connect_timeout(&self.cfg.socket, CLIENT_NAME, self.cfg.reply_timeout) {
            Ok(c) => c,
            Err(e) => {
                self.on_error(&e, Instant::now());
                return None;
            }
        };
        let (instance, generation) = (c.hello().instance.clone(), c.hello().generation);
        self.on_connected(&instance, generation);
        match c.show() {
            Ok(s) => {
                self.on_ports(iface_ids_of(&s));
                self.send_view(&s);
                Some(c)
            }
            Err(e) => {
                self.on_error(&e, Instant::now());
                None
            }
        }
    }

    /// Starts the thread: it keeps `ids` equal to [`Watcher::wanted`]
    /// until the returned handle is stopped or dropped. `client` is a
    /// connection [`Watcher::probe`] opened, if any.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(mut self, ids: IfaceIds, client: Option<Client>) -> std::io::Result<WatchHandle> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        ids.set(self.wanted());
        let thread = std::thread::Builder::new()
            .name("dataplane-watch".into())
            .spawn(move || self.run(&ids, client, &stop_rx))?;
        Ok(WatchHandle { stop: Some(stop_tx), thread: Some(thread) })
    }

    fn run(&mut self, ids: &IfaceIds, mut client: Option<Client>, stop: &mpsc::Receiver<()>) {
        let mut backoff = self.cfg.backoff_min;
        // Sleeps until `until` or an earlier grace expiry; false: stop.
        let wait = |w: &mut Watcher, until: Instant| -> bool {
            loop {
                let now = Instant::now();
                let next = w.deadline().map_or(until, |d| d.min(until));
                match stop.recv_timeout(next.saturating_duration_since(now)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return false,
                }
                if w.tick(Instant::now()) {
                    ids.set(w.wanted());
                }
                if Instant::now() >= until {
                    return true;
                }
            }
        };
        loop {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match Client::connect_timeout(&self.cfg.socket, CLIENT_NAME, self.cfg.reply_timeout) {
                    Ok(c) => {
                        let (instance, generation) = (c.hello().instance.clone(), c.hello().generation);
                        self.on_connected(&instance, generation);
                        client.insert(c)
                    }
                    Err(e) => {
                        self.on_error(&e, Instant::now());
                        if !wait(self, Instant::now() + backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(self.cfg.backoff_max);
                        continue;
                    }
                },
            };
            match c.show() {
                Ok(s) => {
                    // Reset only here: a petreld that accepts but does not
                    // answer must not be reconnected to in a tight loop.
                    backoff = self.cfg.backoff_min;
                    if self.on_ports(iface_ids_of(&s)) {
                        ids.set(self.wanted());
                    }
                    self.send_view(&s);
                    if !wait(self, Instant::now() + self.cfg.poll_interval) {
                        return;
                    }
                }
                Err(e) => {
                    client = None;
                    self.on_error(&e, Instant::now());
                    if !wait(self, Instant::now() + backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(self.cfg.backoff_max);
                }
            }
        }
    }
}

/// The running watcher thread; dropping it stops the thread (without
/// waiting for it).
#[derive(Debug)]
pub struct WatchHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Stops the thread and waits for it (at most one request timeout).
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.take();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn lost() -> ClientError {
        ClientError::Disconnected { path: "/x".into(), detail: "closed by the server".into() }
    }

    #[test]
    fn test_union_grace_and_release() {
        let mut cfg = WatchConfig::new("/x", set(&["static"]));
        cfg.grace = Duration::from_secs(10);
        let mut w = Watcher::new(cfg);
        assert_eq!(w.wanted(), set(&["static"]));
        let t0 = Instant::now();
        w.on_error(&lost(), t0);
        assert_eq!(*w.link(), Link::NeverSeen);
        assert_eq!(w.deadline(), None, "never seen: nothing to keep");
        w.on_connected("i1", 0);
        assert!(w.on_ports(set(&["a", "b"])));
        assert!(!w.on_ports(set(&["a", "b"])), "no change");
        assert_eq!(w.wanted(), set(&["a", "b", "static"]));
        assert!(w.on_ports(set(&["a"])));
        // Lost: kept until the grace period ends, then released.
        w.on_error(&lost(), t0);
        assert_eq!(w.deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(!w.tick(t0 + Duration::from_secs(9)));
        assert_eq!(w.wanted(), set(&["a", "static"]));
        assert!(w.tick(t0 + Duration::from_secs(10)));
        assert_eq!(w.wanted(), set(&["static"]));
        assert_eq!(w.deadline(), None);
        assert!(!w.tick(t0 + Duration::from_secs(20)));
    }

    #[test]
    fn test_back_within_grace_keeps_the_set() {
        let mut w = Watcher::new(WatchConfig::new("/x", BTreeSet::new()));
        let t0 = Instant::now();
        w.on_connected("i1", 3);
        w.on_ports(set(&["a"]));
        w.on_error(&lost(), t0);
        w.on_connected("i2", 0);
        assert_eq!(*w.link(), Link::Up { instance: "i2".into() });
        // Connected but `show` fails: the grace period is not restarted.
        w.on_error(&lost(), t0 + Duration::from_secs(5));
        assert_eq!(w.deadline(), Some(t0 + GRACE));
        w.on_connected("i2", 0);
        assert!(!w.on_ports(set(&["a"])), "same ports: nothing to do");
        assert_eq!(w.deadline(), None, "grace cancelled");
        assert!(!w.tick(t0 + GRACE * 2));
        assert_eq!(w.wanted(), set(&["a"]));
    }

    #[test]
    fn test_static_port_also_in_petreld_is_never_released() {
        let mut w = Watcher::new(WatchConfig::new("/x", set(&["a"])));
        let t0 = Instant::now();
        w.on_connected("i1", 0);
        assert!(!w.on_ports(set(&["a"])), "already local");
        w.on_error(&lost(), t0);
        assert!(!w.tick(t0 + GRACE));
        assert_eq!(w.wanted(), set(&["a"]));
    }
}
