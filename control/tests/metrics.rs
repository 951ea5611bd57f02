//! petrel-ovn's `/metrics` against a real ovsdb-server + ovn-northd:
//! scrapes checked by `promtool check metrics` (Debian's `prometheus`),
//! compile counters split full/incremental, `nb_cfg` acknowledged, claims,
//! and the Southbound connection going down and coming back.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{poll, spawn, Ovn, OvnOptions, Reaped, WAIT};

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: petrel-ovn\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{resp}");
    body.to_owned()
}

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

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

/// Scrapes until `f` holds; returns that scrape.
fn scrape_until(addr: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    poll(WAIT, what, || {
        let s = scrape(addr);
        f(&s).then_some(s)
    })
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

#[test]
fn metrics_follow_compiles_claims_nb_cfg_and_the_southbound_connection() {
    let mut ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let log = ovn.dir.path().join("petrel-ovn.log");
    let remote = ovn.sb_remote();
    let _agent = Reaped(Some(spawn(
        env!("CARGO_BIN_EXE_petrel-ovn"),
        &[
            "--remote",
            &remote,
            "--system-id",
            "hv-petrel",
            "--encap-ip",
            "192.0.2.10",
            "--iface-id",
            "lsp1",
            "--compile-only",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &log,
    )));
    let addr = poll(WAIT, "metrics address in the log", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let rest = &text[text.find("serving metrics at http://")? + "serving metrics at http://".len()..];
        Some(rest[..rest.find("/metrics")?].to_owned())
    });
    let connected = |s: &str| value(s, "petrel_ovn_southbound_connected ") == Some(1.0);
    let s1 = scrape_until(&addr, "connected", connected);
    promtool(&s1);
    assert_eq!(value(&s1, "petrel_ovn_southbound_full_dumps_total "), Some(1.0), "{s1}");

    ovn.nbctl(&["ls-add", "sw0"]);
    ovn.nbctl(&["lsp-add", "sw0", "lsp1", "--", "lsp-set-addresses", "lsp1", "02:00:00:00:00:01 10.0.0.1"]);
    let o = ovn.nbctl_output(&["--timeout=10", "--wait=hv", "sync"]);
    assert!(o.status.success(), "--wait=hv: {}", String::from_utf8_lossy(&o.stderr));
    let s2 = scrape_until(&addr, "lsp1 claimed and nb_cfg acknowledged", |s| {
        value(s, "petrel_ovn_claims_total ").is_some_and(|n| n >= 1.0)
            && value(s, "petrel_ovn_nb_cfg ").is_some_and(|n| n >= 1.0)
            && value(s, "petrel_ovn_nb_cfg_acknowledged ") == value(s, "petrel_ovn_nb_cfg ")
    });
    promtool(&s2);
    assert!(value(&s2, "petrel_ovn_logical_flows ").unwrap() > 10.0, "northd's switch flows: {s2}");
    assert!(value(&s2, "petrel_ovn_rules ").unwrap() > 0.0, "{s2}");
    assert!(value(&s2, r#"petrel_ovn_compile_duration_seconds_count{kind="full"}"#).unwrap() >= 1.0, "{s2}");
    assert_eq!(value(&s2, "petrel_ovn_local_datapaths "), Some(1.0), "{s2}");
    assert!(
        value(&s2, "petrel_ovn_southbound_updates_total ").unwrap()
            > value(&s1, "petrel_ovn_southbound_updates_total ").unwrap()
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let last = value(&s2, "petrel_ovn_southbound_last_update_timestamp_seconds ").unwrap();
    assert!(now - last < 30.0 && last <= now + 1.0, "last update {last}, now {now}");

    // A port added to the same switch recompiles a few flows; the rest
    // come from the compiler's cache.
    let incremental = r#"petrel_ovn_compile_duration_seconds_count{kind="incremental"}"#;
    let (flows, n_incr) =
        (value(&s2, "petrel_ovn_flows_compiled_total ").unwrap(), value(&s2, incremental).unwrap_or(0.0));
    let n_lflows = value(&s2, "petrel_ovn_logical_flows ").unwrap();
    ovn.nbctl(&["lsp-add", "sw0", "lsp2", "--", "lsp-set-addresses", "lsp2", "02:00:00:00:00:02 10.0.0.2"]);
    let o = ovn.nbctl_output(&["--timeout=10", "--wait=hv", "sync"]);
    assert!(o.status.success(), "--wait=hv: {}", String::from_utf8_lossy(&o.stderr));
    let s3 = scrape_until(&addr, "an incremental compile with lsp2's flows", |s| {
        value(s, incremental).is_some_and(|n| n > n_incr) && value(s, "petrel_ovn_logical_flows ").unwrap() > n_lflows
    });
    promtool(&s3);
    let more = value(&s3, "petrel_ovn_flows_compiled_total ").unwrap() - flows;
    assert!(more >= 1.0 && more < value(&s3, "petrel_ovn_logical_flows ").unwrap(), "compiled {more} more: {s3}");

    // The dashboard queries only what petrel-ovn exports.
    let (wanted, have) = (dashboard_names("petrel_ovn_", "petrel_ovn_none"), scraped_names(&s3));
    assert!(wanted.len() > 10, "{wanted:?}");
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(missing.is_empty(), "deploy/grafana/petrel.json queries {missing:?}, not in a scrape:\n{s3}");

    // The Southbound goes away, then comes back.
    ovn.kill_sb();
    let s4 = scrape_until(&addr, "disconnected", |s| value(s, "petrel_ovn_southbound_connected ") == Some(0.0));
    promtool(&s4);
    assert!(value(&s4, "petrel_ovn_southbound_disconnects_total ").unwrap() >= 1.0, "{s4}");
    ovn.start_sb();
    let s5 = scrape_until(&addr, "reconnected", connected);
    assert_eq!(value(&s5, "petrel_ovn_southbound_connects_total "), Some(2.0), "{s5}");
    promtool(&s5);
    std::thread::sleep(Duration::from_millis(10));
}
