//! The binary as a runtime sees it when things are wrong: every failure is
//! the spec's error JSON on stdout (in the version asked for), a non-zero
//! exit, and a message that says what to fix. No petreld is running here.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const CNI: &str = env!("CARGO_BIN_EXE_petrel-cni");

fn cni(command: &str, stdin: &str) -> (bool, Value) {
    let mut child = Command::new(CNI)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "0123456789abcdef")
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_IFNAME", "net1")
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The plugin may answer (e.g. an unknown command) without reading its
    // input: a broken pipe here is not the test's business.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let o = child.wait_with_output().unwrap();
    let v = if o.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&o.stdout).unwrap() };
    (o.status.success(), v)
}

fn conf(dir: &std::path::Path, extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"{{"cniVersion":"1.0.0","name":"n","type":"petrel","socketDir":"{d}/s","stateDir":"{d}/st","controlSocket":"{d}/no-petreld.sock"{extra}}}"#
    )
}

#[test]
fn version() {
    let (good, v) = cni("VERSION", "");
    assert!(good);
    assert_eq!(v["cniVersion"], "1.1.0");
    let vs: Vec<&str> = v["supportedVersions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert!(vs.contains(&"1.0.0") && vs.contains(&"1.1.0"), "{vs:?}");
}

#[test]
fn missing_petreld_add_is_try_again_del_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let c = conf(d.path(), "");
    let (good, v) = cni("ADD", &c);
    assert!(!good);
    assert_eq!(v["code"], 11, "{v}");
    assert_eq!(v["cniVersion"], "1.0.0", "errors come in the version asked for");
    assert!(v["msg"].as_str().unwrap().contains("petreld is not reachable"), "{v}");
    let (good, v) = cni("DEL", &c);
    assert!(good, "DEL without petreld succeeds: {v}");
    assert_eq!(v, Value::Null, "DEL prints nothing");
    let (good, v) = cni("STATUS", &c.replace("1.0.0", "1.1.0"));
    assert!(!good);
    assert_eq!(v["code"], 50, "{v}");
}

#[test]
fn bad_configs() {
    let d = tempfile::tempdir().unwrap();
    let long = format!("/{}", "x".repeat(120));
    let cases = [
        ("{", 6, "does not parse"),
        (r#"{"cniVersion":"0.1.0","name":"n","type":"petrel"}"#, 1, "speaks"),
        (&conf(d.path(), r#","vhostMode":"sideways""#), 7, "sideways"),
        (&conf(d.path(), r#","createPort":true"#), 7, "nbDb"),
        (&conf(d.path(), r#","queues":1000"#), 7, "queues"),
        (&conf(d.path(), r#","ipam":{"type":"no-such-ipam"}"#), 7, "no-such-ipam"),
        (&conf(d.path(), "").replace(&format!("{}/s", d.path().display()), &long), 7, "socketDir"),
    ];
    for (stdin, code, word) in cases {
        let (good, v) = cni("ADD", stdin);
        assert!(!good, "{stdin}");
        assert_eq!(v["code"], code, "{stdin}: {v}");
        assert!(v["msg"].as_str().unwrap().contains(word), "{stdin}: {v}");
    }
    let (good, v) = cni("FROB", &conf(d.path(), ""));
    assert!(!good);
    assert_eq!(v["code"], 4, "{v}");
}
