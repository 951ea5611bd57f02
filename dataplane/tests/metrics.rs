//! petreld's observability end to end: `/metrics` scraped over HTTP from a
//! running petreld on `net_null` ports (checked by `promtool check
//! metrics`, Debian's `prometheus`), the log filter read and replaced over
//! the control socket, and a pod's reconnect loop logged at a bounded rate.
//! Needs hugepages, DPDK and promtool (scripts/bootstrap.sh).
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{connect, Daemon};
use petrel_dataplane::ctl::proto::ErrorCode;
use petrel_dataplane::ctl::ClientError;

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const EAL: &str = "--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning";

/// A petreld whose standard error is collected as it comes.
struct Run {
    daemon: Daemon,
    log: Arc<Mutex<String>>,
}

impl Run {
    fn start(dir: &Path, args: &[&str]) -> Run {
        let socket = dir.join("ctl.sock");
        let mut child = Command::new(PETRELD)
            .args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "4095"])
            .arg("--control-socket")
            .arg(&socket)
            .args(args)
            .env_remove("PETREL_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (l, err) = (Arc::clone(&log), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Run { daemon: Daemon { child, socket }, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `pat`; returns it.
    fn wait_line(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(pat)) {
                return l.to_owned();
            }
            if let Some(st) = self.daemon.child.try_wait().unwrap() {
                panic!("petreld exited ({st}) before logging {pat:?}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {pat:?} in 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The metrics address petreld logged (it was given port 0).
    fn metrics_addr(&mut self) -> String {
        let line = self.wait_line("serving metrics at http://");
        let rest = &line[line.find("http://").unwrap() + 7..];
        rest[..rest.find("/metrics").unwrap()].to_owned()
    }

    /// SIGTERM; petreld must exit cleanly (its metrics thread included).
    fn stop(mut self) {
        assert!(Command::new("kill").args(["-TERM", &self.daemon.child.id().to_string()]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.daemon.child.try_wait().unwrap() {
                assert!(st.success(), "petreld exited with {st}:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "petreld did not stop within 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP request; returns (status line, body).
fn http(addr: &str, req: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {resp:?}"));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

fn scrape(addr: &str) -> String {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: petreld\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
}

/// `promtool check metrics` (the Prometheus project's own linter and parser).
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run scripts/bootstrap.sh (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- scrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scrapes until `ok` holds (PMDs publish their counters every ~1k polls).
fn scrape_until(addr: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(addr);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} within 20 s; last scrape:\n{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The metric names the Grafana dashboard (`deploy/grafana/petrel.json`)
/// queries that start with `prefix`, minus those starting with `except`.
fn dashboard_names(prefix: &str, except: &str) -> std::collections::BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/petrel.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    let mut stack = vec![&dash];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(e) = m.get("expr").and_then(serde_json::Value::as_str) {
                    exprs.push(e.to_owned());
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    assert!(exprs.len() > 10, "the dashboard has queries");
    exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|t| t.starts_with(prefix) && !t.starts_with(except))
        .collect()
}

/// The sample names of a scrape (`petrel_port_rx_packets_total`, `..._bucket`).
fn scraped_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).map(str::to_owned).collect()
}

const RX_A: &str = r#"petrel_port_rx_packets_total{port="a"}"#;

#[test]
fn scrapes_count_traffic_and_runtime_ports_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(
        dir.path(),
        &[
            "--port",
            "a=dpdk,devargs=net_null0,size=64",
            "--port",
            "b=dpdk,iface-id=pod-b,devargs=net_null1,size=64",
            "--xconnect",
            "a:b",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let addr = run.metrics_addr();
    let s1 = scrape_until(&addr, "port a received", |s| value(s, RX_A) > 0.0);
    promtool(&s1);
    let s2 = scrape_until(&addr, "port a's counters moved", |s| value(s, RX_A) > value(&s1, RX_A));
    promtool(&s2);
    let tx_b = r#"petrel_port_tx_packets_total{port="b",iface_id="pod-b"}"#;
    assert!(value(&s2, tx_b) > value(&s1, tx_b), "xconnect forwards a to b");
    assert_eq!(value(&s2, r#"petrel_port_rx_bytes_total{port="a"}"#), 64.0 * value(&s2, RX_A), "64 B frames");
    let pmd = r#"{pmd="0",cpu="1"}"#;
    for m in ["petrel_pmd_busy_cycles_total", "petrel_pmd_rx_packets_total", "petrel_pmd_rx_bursts_total"] {
        assert!(value(&s2, &format!("{m}{pmd}")) > value(&s1, &format!("{m}{pmd}")), "{m} moved:\n{s2}");
    }
    let per_burst = value(&s2, &format!("petrel_pmd_rx_packets_total{pmd}"))
        / value(&s2, &format!("petrel_pmd_rx_bursts_total{pmd}"));
    assert!((1.0..=32.0).contains(&per_burst), "packets per burst {per_burst}");
    assert!(value(&s2, "petrel_tsc_hz ") > 1e8);
    assert_eq!(value(&s2, "petrel_tables_generation "), 0.0, "no tables published");
    assert_eq!(value(&s2, r#"petrel_port_up{port="a"}"#), 1.0);

    // A port added at runtime shows at the next scrape; it has no role, so
    // what it receives is dropped, by reason.
    let no_output = r#"petrel_dropped_packets_total{reason="no_output"}"#;
    let before = value(&s2, no_output);
    let mut ctl = connect(&run.daemon.socket, "metrics-test");
    ctl.add_port("c=dpdk,devargs=net_null2,size=64").unwrap();
    let rx_c = r#"petrel_port_rx_packets_total{port="c"}"#;
    let s3 = scrape_until(&addr, "port c and its drops", |s| {
        s.contains(rx_c) && value(s, rx_c) > 0.0 && value(s, no_output) > before
    });
    promtool(&s3);
    assert!(value(&s3, r#"petrel_port_rx_dropped_packets_total{port="c"}"#) > 0.0, "{s3}");
    assert!(s3.contains(r#"petrel_port_info{port="c",type="dpdk",state="up"} 1"#), "{s3}");

    // The dashboard queries only what petreld exports.
    let (wanted, have) = (dashboard_names("petrel_", "petrel_ovn_"), scraped_names(&s3));
    assert!(wanted.len() > 10, "{wanted:?}");
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(missing.is_empty(), "deploy/grafana/petrel.json queries {missing:?}, not in a scrape:\n{s3}");

    // Only GET /metrics is served.
    assert_eq!(http(&addr, "GET / HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(&addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    drop(ctl);
    run.stop();
}

#[test]
fn a_metrics_address_in_use_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(PETRELD)
        .args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "4095", "--control-socket", "none"])
        .args(["--port", "a=dpdk,devargs=net_null0", "--metrics-addr", &addr, "--stats-file"])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("--metrics-addr {addr}")) && err.contains("in use"), "{err}");
    assert!(!err.contains("EAL"), "must fail before DPDK starts: {err}");
}

#[test]
fn log_level_is_read_and_replaced_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(dir.path(), &["--log", "warn", "--port", "a=dpdk,devargs=net_null0,size=64"]);
    let mut ctl = connect(&run.daemon.socket, "metrics-test");
    let r = ctl.log_level(None).unwrap();
    assert_eq!((r.filter.as_str(), r.previous), ("warn", None));

    let r = ctl.log_level(Some("petrel_vhost_user=debug,info")).unwrap();
    assert_eq!(r.filter, "petrel_vhost_user=debug,info");
    assert_eq!(r.previous.as_deref(), Some("warn"));
    // Logged at info, after the change: so it shows.
    let line = run.wait_line("log filter changed");
    assert!(line.contains("INFO") && line.contains("previous=warn"), "{line}");

    match ctl.log_level(Some("petrel=loud")) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::Rejected);
            assert!(e.message.contains("petrel=loud"), "{}", e.message);
        }
        other => panic!("a bad filter must be rejected: {other:?}"),
    }
    assert_eq!(ctl.log_level(None).unwrap().filter, "petrel_vhost_user=debug,info", "unchanged");

    let r = ctl.log_level(Some("warn")).unwrap();
    assert_eq!(r.previous.as_deref(), Some("petrel_vhost_user=debug,info"));
    // This change is logged at info too, under the new filter: not shown.
    std::thread::sleep(Duration::from_millis(300));
    let log = run.log();
    assert_eq!(log.matches("log filter changed").count(), 1, "{log}");
    assert!(!log.contains("forwarding"), "the startup info line is below --log warn:\n{log}");
    drop(ctl);
    run.stop();
}

#[test]
fn a_pod_reconnecting_in_a_loop_is_logged_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pod.sock");
    let spec = format!("p=vhost-user,path={},mode=server", sock.display());
    let mut run = Run::start(dir.path(), &["--port", &spec]);
    run.wait_line("forwarding");
    let n: usize = 40;
    for _ in 0..n {
        // Connect and hang up at once: one connect and one disconnect each.
        drop(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    }
    // Let the burst be handled, then start a new one-second window.
    let deadline = Instant::now() + Duration::from_secs(20);
    while run.log().matches("vhost-user: disconnected").count() == 0 {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2_500));
    drop(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let log = run.log();
        let lines: Vec<String> = log.lines().filter(|l| l.contains("frontend connected")).map(str::to_owned).collect();
        let suppressed: usize = lines
            .iter()
            .filter_map(|l| l.split("suppressed=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
            .sum();
        // Every connect is either written or counted in a later line.
        if lines.len() + suppressed == n + 1 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines + {suppressed} suppressed != {} connects:\n{log}",
            lines.len(),
            n + 1
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The burst spans at most two one-second windows of 5 lines; the last
    // connect, in a later window, carries the count of the rest.
    assert!(lines.len() <= 11, "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(last.contains("suppressed=") && last.contains("port=p"), "{last}");
    run.stop();
}
