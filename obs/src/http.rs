//! The `/metrics` endpoint: `GET /metrics` over HTTP/1.x answers 200 with
//! what the caller's render function returns; any other request gets 404
//! (a request that is not HTTP gets 400).
//!
//! Why not an HTTP crate: this serves one path to a scraper every few
//! seconds, with `Connection: close`, so a request is read once (head only,
//! bounded), answered and the connection closed. Written over std it is a
//! hundred lines with every bound visible, no async runtime, no thread pool
//! and nothing to keep up with; `tiny_http` or `hyper` would bring
//! keep-alive, chunking and pooling this does not need.
//!
//! Bounds (so a stuck or hostile client cannot pin the daemon): the
//! request head is at most [`MAX_HEAD`] bytes and must arrive within
//! [`TIMEOUT`], the response must be taken within it too, and at most
//! [`MAX_CLIENTS`] connections are served at once (more are closed
//! unanswered). The render function runs on the connection's thread,
//! never on a PMD.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request head read.
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its request and to take the reply.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CLIENTS: usize = 8;

/// Produces the body of `/metrics` and its `Content-Type`.
pub type Render = Arc<dyn Fn() -> (String, &'static str) + Send + Sync>;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum HttpError {
    /// metrics address {0:?}: {1}
    Resolve(String, io::Error),
    /// metrics address {0:?} resolves to nothing
    NoAddress(String),
    /// listening on {0}: {1}
    Bind(SocketAddr, io::Error),
    /// spawning the metrics thread: {0}
    Spawn(io::Error),
}

/// A running `/metrics` endpoint; stopped when dropped (which waits for
/// the requests in flight, up to twice [`TIMEOUT`]).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A bound, not yet serving, `/metrics` address: lets a daemon claim its
/// address (and fail) before it starts anything that is hard to unwind.
#[derive(Debug)]
pub struct BoundListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl BoundListener {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one).
    ///
    /// # Errors
    /// The address does not resolve or cannot be bound.
    pub fn bind(addr: &str) -> Result<Self, HttpError> {
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| HttpError::Resolve(addr.to_owned(), e))?
            .next()
            .ok_or_else(|| HttpError::NoAddress(addr.to_owned()))?;
        let listener = TcpListener::bind(sa).map_err(|e| HttpError::Bind(sa, e))?;
        let addr = listener.local_addr().map_err(|e| HttpError::Bind(sa, e))?;
        Ok(BoundListener { listener, addr })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving `render` at `/metrics`.
    ///
    /// # Errors
    /// The serving thread cannot be spawned.
    pub fn serve(self, render: Render) -> Result<MetricsServer, HttpError> {
        let BoundListener { listener, addr } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &render, &s))
            .map_err(HttpError::Spawn)?;
        Ok(MetricsServer { addr, stop, thread: Some(thread) })
    }
}

impl MetricsServer {
    /// Listens on `addr` (`HOST:PORT`; port 0 picks a free one, see
    /// [`MetricsServer::local_addr`]) and serves `render` at `/metrics`.
    ///
    /// # Errors
    /// The address does not resolve or cannot be bound.
    pub fn start(addr: &str, render: Render) -> Result<Self, HttpError> {
        BoundListener::bind(addr)?.serve(render)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        // If we could not connect, the thread is left to end with the process.
    }
}

fn accept_loop(listener: &TcpListener, render: &Render, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            // Let scrapes in flight finish (each is bounded by TIMEOUT), so
            // that once the server is dropped nothing runs `render` and the
            // caller's state (petreld's ports) may be torn down.
            let until = Instant::now() + 2 * TIMEOUT;
            while active.load(Ordering::Relaxed) > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            return;
        }
        let s = match conn {
            Ok(s) => s,
            Err(e) => {
                crate::warn_limited!(1, "metrics endpoint: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
            crate::warn_limited!(1, limit = MAX_CLIENTS, "metrics endpoint: too many connections, closing one");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (a, r) = (Arc::clone(&active), Arc::clone(render));
        let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
            serve(s, &r);
            // Release `render` before saying this connection is done.
            drop(r);
            a.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            crate::warn_limited!(1, "metrics endpoint: cannot spawn a connection thread: {e}");
        }
    }
}

/// Reads a request head: up to the blank line, [`MAX_HEAD`] bytes, [`TIMEOUT`].
fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let until = Instant::now() + TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() >= MAX_HEAD || s.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n.min(MAX_HEAD - head.len())]),
        }
    }
    Some(head)
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadRequest,
}

fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|b| *b == b'\n').next() else { return Route::BadRequest };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

fn serve(mut s: TcpStream, render: &Render) {
    let _ = s.set_write_timeout(Some(TIMEOUT));
    let (status, ctype, body) = match read_head(&mut s).as_deref().map(route) {
        None => return,
        Some(Route::Metrics) => match catch_unwind(AssertUnwindSafe(|| render())) {
            Ok((body, ctype)) => ("200 OK", ctype, body),
            Err(_) => ("500 Internal Server Error", "text/plain; charset=utf-8", "metrics failed\n".to_owned()),
        },
        Some(Route::NotFound) => {
            ("404 Not Found", "text/plain; charset=utf-8", "not found: try GET /metrics\n".to_owned())
        }
        Some(Route::BadRequest) => ("400 Bad Request", "text/plain; charset=utf-8", "bad request\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes())).is_ok() {
        let _ = s.flush();
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn server() -> MetricsServer {
        let n = Arc::new(AtomicUsize::new(0));
        let render: Render = Arc::new(move || {
            let k = n.fetch_add(1, Ordering::Relaxed) + 1;
            (format!("scrapes_total {k}\n"), "text/plain; version=0.0.4; charset=utf-8")
        });
        MetricsServer::start("127.0.0.1:0", render).unwrap()
    }

    #[test]
    fn test_get_metrics_renders_each_time() {
        let srv = server();
        assert_ne!(srv.local_addr().port(), 0);
        let r1 = request(srv.local_addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
        assert!(r1.starts_with("HTTP/1.1 200 OK\r\n"), "{r1}");
        assert!(r1.contains("Content-Type: text/plain; version=0.0.4"), "{r1}");
        assert!(r1.contains("Content-Length: 16\r\n") && r1.ends_with("\r\n\r\nscrapes_total 1\n"), "{r1}");
        let r2 = request(srv.local_addr(), b"GET /metrics?x=1 HTTP/1.0\n\n");
        assert!(r2.ends_with("scrapes_total 2\n"), "{r2}");
    }

    #[test]
    fn test_anything_else_is_404_or_400() {
        let srv = server();
        for req in
            [&b"GET / HTTP/1.1\r\n\r\n"[..], b"POST /metrics HTTP/1.1\r\n\r\n", b"GET /metricsx HTTP/1.1\r\n\r\n"]
        {
            let r = request(srv.local_addr(), req);
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        }
        let r = request(srv.local_addr(), b"hello there\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        // None of those rendered: the next scrape is the first.
        let r = request(srv.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("scrapes_total 1\n"), "{r}");
    }

    #[test]
    fn test_oversize_or_stalled_requests_are_cut_off() {
        let srv = server();
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
        let mut s = TcpStream::connect(srv.local_addr()).unwrap();
        let _ = s.write_all(&big);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.is_empty(), "an oversize head gets no answer");
        // A client that never finishes its head does not block the next one.
        let _stalled = TcpStream::connect(srv.local_addr()).unwrap();
        let r = request(srv.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    }

    #[test]
    fn test_drop_stops_and_frees_the_port() {
        let srv = server();
        let addr = srv.local_addr();
        drop(srv);
        assert!(TcpListener::bind(addr).is_ok(), "the port is free again");
        assert!(MetricsServer::start("no-such-host.invalid:80", Arc::new(|| (String::new(), ""))).is_err());
    }
}
