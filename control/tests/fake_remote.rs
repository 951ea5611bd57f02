//! Misbehaving servers (a tokio listener in the test): garbage, a close in
//! the middle of a message, silence. Each gives a clear error and a
//! reconnect, never a panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{poll_async, TempDir, WAIT};
use petrel_control::ovsdb::{
    Connection, ConnectionOptions, Error, FrameError, Remote, Session, SessionConfig, SessionEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Serves connection number `n` (from 0) with `script(n)`.
fn fake_server(path: &std::path::Path, accepted: Arc<AtomicUsize>) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let n = accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // wait for the client's first request (get_schema "_Server")
                let _ = s.read(&mut buf).await;
                let reply: &[u8] = match n % 2 {
                    0 => b"HTTP/1.1 400 Bad Request\r\n\r\n",
                    _ => br#"{"id":0,"result":{"name":"_Server","tables":{"Data"#,
                };
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_messages_reconnect() {
    let dir = TempDir::new("fake");
    let path = dir.path().join("fake.sock");
    let accepted = Arc::new(AtomicUsize::new(0));
    fake_server(&path, accepted.clone());
    let mut cfg = SessionConfig::new(vec![Remote::Unix(path.clone())], "OVN_Southbound");
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(50);
    let mut s = Session::start(cfg);
    let mut errors = Vec::new();
    while errors.len() < 4 {
        match tokio::time::timeout(WAIT, s.next_event()).await.unwrap().unwrap() {
            SessionEvent::Disconnected { error, .. } => errors.push(error),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(accepted.load(Ordering::SeqCst) >= 4, "reconnected each time");
    assert_eq!(errors[0], Error::Frame(FrameError::Garbage(b'H')));
    assert_eq!(errors[0].to_string(), "protocol error: unexpected byte 0x48 between JSON-RPC messages (expected `{`)");
    assert_eq!(errors[1], Error::ClosedMidMessage);
    assert_eq!(errors[2], errors[0]);
    assert_eq!(s.stats().n_connects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_an_error() {
    let dir = TempDir::new("fake");
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = s.write_all(br#"{"id": 0, "result": [1, 2,]}"#).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let stream = Remote::Unix(path).connect(Duration::from_secs(2)).await.unwrap();
    let (c, _rx) = Connection::open(stream, "fake".into(), ConnectionOptions::default());
    let e = c.list_dbs().await.unwrap_err();
    assert!(matches!(e, Error::BadJson(_)), "{e}");
    assert!(c.is_closed());
    // later calls fail at once with the same error
    assert_eq!(c.list_dbs().await.unwrap_err(), e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_probe_detects_silent_server() {
    let dir = TempDir::new("fake");
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let got = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let got2 = got.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got2.lock().await.extend_from_slice(&buf[..n]),
            }
        }
    });
    let stream = Remote::Unix(path).connect(Duration::from_secs(2)).await.unwrap();
    let probe = Duration::from_millis(200);
    let (c, _rx) = Connection::open(stream, "fake".into(), ConnectionOptions { probe_interval: Some(probe) });
    let t0 = std::time::Instant::now();
    let e = c.list_dbs().await.unwrap_err();
    assert_eq!(e, Error::InactivityTimeout(probe * 2));
    assert!(t0.elapsed() < Duration::from_secs(2));
    let sent =
        poll_async(WAIT, "client's bytes", || got.try_lock().ok().map(|g| String::from_utf8(g.clone()).unwrap())).await;
    assert!(sent.contains(r#""method":"echo""#), "the probe was sent: {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_echo_request_is_answered() {
    let dir = TempDir::new("fake");
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(br#"{"method":"echo","params":["ping", {"a":"}"}],"id":"e1"}"#).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&buf[..n]).unwrap()
    });
    let stream = Remote::Unix(path).connect(Duration::from_secs(2)).await.unwrap();
    let (_c, _rx) = Connection::open(stream, "fake".into(), ConnectionOptions::default());
    let reply = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(reply, serde_json::json!({"id": "e1", "result": ["ping", {"a": "}"}], "error": null}));
}
