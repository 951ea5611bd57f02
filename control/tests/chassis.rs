//! The `petrel-ovn` binary against ovsdb-server + ovn-northd: chassis
//! registration, port claims, requested-chassis, `--wait=hv`, release, and
//! clean removal on SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Instant;

use common::{poll, spawn, Ovn, OvnOptions, Reaped, WAIT};

fn start_agent(ovn: &Ovn, extra: &[&str]) -> Reaped {
    let mut args = vec![
        "--remote".to_owned(),
        ovn.sb_remote(),
        "--system-id".to_owned(),
        "hv-petrel".to_owned(),
        "--encap-ip".to_owned(),
        "192.0.2.10".to_owned(),
        "--hostname".to_owned(),
        "petrel-host".to_owned(),
        "--dataplane".to_owned(),
        "/nonexistent/petreld.sock".to_owned(),
        // No petreld: only the Southbound side is under test here (with
        // tables, nb_cfg is acknowledged only once petreld runs them).
        "--no-tables".to_owned(),
        "--log".to_owned(),
        "debug".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Reaped(Some(spawn(env!("CARGO_BIN_EXE_petrel-ovn"), &a, &ovn.dir.path().join("petrel-ovn.log"))))
}

fn sb_get(ovn: &Ovn, table: &str, record: &str, column: &str) -> String {
    ovn.sbctl(&["get", table, record, column]).trim().trim_matches(|c| c == '"' || c == '[' || c == ']').to_owned()
}

fn pb_field(ovn: &Ovn, port: &str, column: &str) -> Option<String> {
    let out =
        ovn.sbctl(&["--bare", &format!("--columns={column}"), "find", "Port_Binding", &format!("logical_port={port}")]);
    Some(out.trim().to_owned())
}

fn chassis_uuid(ovn: &Ovn) -> Option<String> {
    let out = ovn.sbctl(&["--bare", "--columns=_uuid", "find", "Chassis", "name=hv-petrel"]);
    let s = out.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

#[test]
fn chassis_registers_claims_and_removes_itself() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let t0 = Instant::now();
    let mut agent = start_agent(&ovn, &["--iface-id", "lsp1", "--iface-id", "lsp2", "--iface-id", "lsp3"]);

    // Chassis, Encap and Chassis_Private appear with the right columns.
    let ch = poll(WAIT, "Chassis row", || chassis_uuid(&ovn));
    eprintln!("chassis registered after {:?}", t0.elapsed());
    assert_eq!(sb_get(&ovn, "Chassis", "hv-petrel", "hostname"), "petrel-host");
    assert_eq!(sb_get(&ovn, "Chassis", "hv-petrel", "other_config:datapath-type"), "netdev");
    assert_eq!(sb_get(&ovn, "Chassis", "hv-petrel", "other_config:port-up-notif"), "true");
    assert!(sb_get(&ovn, "Chassis", "hv-petrel", "other_config:iface-types").contains("dpdkvhostuser"));
    let encap = sb_get(&ovn, "Chassis", "hv-petrel", "encaps");
    assert_eq!(sb_get(&ovn, "Encap", &encap, "type"), "geneve");
    assert_eq!(sb_get(&ovn, "Encap", &encap, "ip"), "192.0.2.10");
    assert_eq!(sb_get(&ovn, "Encap", &encap, "options:csum"), "true");
    assert_eq!(sb_get(&ovn, "Encap", &encap, "chassis_name"), "hv-petrel");
    poll(WAIT, "Chassis_Private", || (sb_get(&ovn, "Chassis_Private", "hv-petrel", "chassis") == ch).then_some(()));

    // A port named by --iface-id is claimed; one not local is left alone;
    // one requested for another chassis is not claimed.
    ovn.nbctl(&["ls-add", "sw0"]);
    let t_add = Instant::now();
    ovn.nbctl(&["lsp-add", "sw0", "lsp1"]);
    poll(WAIT, "lsp1 claimed", || {
        (pb_field(&ovn, "lsp1", "chassis")? == ch && pb_field(&ovn, "lsp1", "up")? == "true").then_some(())
    });
    eprintln!("lsp-add → claimed with up=true: {:?}", t_add.elapsed());
    assert_eq!(pb_field(&ovn, "lsp1", "encap").unwrap(), encap);
    ovn.nbctl(&["lsp-add", "sw0", "other"]);
    ovn.nbctl(&["lsp-add", "sw0", "lsp2", "--", "lsp-set-options", "lsp2", "requested-chassis=hv-elsewhere"]);
    ovn.nbctl(&["lsp-add", "sw0", "lsp3", "--", "lsp-set-options", "lsp3", "requested-chassis=petrel-host"]);
    poll(WAIT, "lsp3 claimed (requested by hostname)", || (pb_field(&ovn, "lsp3", "chassis")? == ch).then_some(()));

    // --wait=hv returns: the agent acknowledges nb_cfg through Chassis_Private.
    let t_wait = Instant::now();
    let o = ovn.nbctl_output(&["--timeout=10", "--wait=hv", "sync"]);
    assert!(o.status.success(), "--wait=hv: {}", String::from_utf8_lossy(&o.stderr));
    eprintln!("ovn-nbctl --wait=hv sync: {:?}", t_wait.elapsed());
    assert_eq!(pb_field(&ovn, "other", "chassis").unwrap(), "");
    assert_eq!(pb_field(&ovn, "lsp2", "chassis").unwrap(), "");
    // northd propagates up=true to the NB port
    poll(WAIT, "NB lsp1 up", || {
        (ovn.nbctl(&["get", "Logical_Switch_Port", "lsp1", "up"]).trim() == "true").then_some(())
    });

    // Requested chassis moved elsewhere: the port is released.
    ovn.nbctl(&["lsp-set-options", "lsp3", "requested-chassis=hv-elsewhere"]);
    poll(WAIT, "lsp3 released", || {
        (pb_field(&ovn, "lsp3", "chassis")?.is_empty() && pb_field(&ovn, "lsp3", "up")? == "false").then_some(())
    });

    // Someone deletes our chassis: it comes back.
    ovn.sbctl(&["chassis-del", "hv-petrel"]);
    let ch2 = poll(WAIT, "Chassis re-created", || chassis_uuid(&ovn));
    poll(WAIT, "lsp1 re-claimed", || (pb_field(&ovn, "lsp1", "chassis")? == ch2).then_some(()));

    // SIGTERM: Chassis and Chassis_Private are removed, ports released, exit 0.
    let mut child = agent.0.take().unwrap();
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = poll(WAIT, "petrel-ovn exit", || child.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    assert!(chassis_uuid(&ovn).is_none());
    assert!(ovn.sbctl(&["--bare", "--columns=_uuid", "list", "Chassis_Private"]).trim().is_empty());
    assert_eq!(pb_field(&ovn, "lsp1", "chassis").unwrap(), "");
    assert_eq!(pb_field(&ovn, "lsp1", "up").unwrap(), "false");
}

#[test]
fn keep_chassis_on_exit() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let mut agent = start_agent(&ovn, &["--keep-chassis-on-exit"]);
    poll(WAIT, "Chassis row", || chassis_uuid(&ovn));
    let mut child = agent.0.take().unwrap();
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = poll(WAIT, "petrel-ovn exit", || child.try_wait().unwrap());
    assert!(status.success());
    assert!(chassis_uuid(&ovn).is_some());
}

#[test]
fn bad_arguments_are_clear_errors() {
    let o = Command::new(env!("CARGO_BIN_EXE_petrel-ovn"))
        .args(["--remote", "ssl:192.0.2.1:6642", "--system-id", "x", "--encap-ip", "192.0.2.1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ssl: remotes are not supported yet"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_petrel-ovn"))
        .args(["--remote", "unix:/x", "--system-id", "x", "--encap-ip", "not-an-ip"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--encap-ip"));
}

#[test]
fn config_file_with_flags_overriding() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let conf = ovn.dir.path().join("petrel-ovn.toml");
    std::fs::write(
        &conf,
        format!(
            "# settings for the test\nremote = \"{}\"\nsystem-id = \"from-file\"\nencap-ip = \"192.0.2.10\"\n\
             hostname = \"file-host\"\niface-ids = [\"lsp1\"]\nmonitor-all = true\nlog = \"debug\"\n",
            ovn.sb_remote()
        ),
    )
    .unwrap();
    // The flag overrides the file's system-id; the rest comes from the file.
    let args = ["--config", conf.to_str().unwrap(), "--system-id", "hv-petrel", "--monitor-all=false"];
    let _agent = Reaped(Some(spawn(env!("CARGO_BIN_EXE_petrel-ovn"), &args, &ovn.dir.path().join("petrel-ovn.log"))));
    let ch = poll(WAIT, "Chassis row", || chassis_uuid(&ovn));
    assert_eq!(sb_get(&ovn, "Chassis", "hv-petrel", "hostname"), "file-host");
    ovn.nbctl(&["ls-add", "sw0", "--", "lsp-add", "sw0", "lsp1"]);
    poll(WAIT, "lsp1 claimed", || (pb_field(&ovn, "lsp1", "chassis")? == ch).then_some(()));
    // `log = "debug"` from the file, and `--monitor-all=false` over the
    // file's `true`: the agent restricts its monitor.
    // (The claim and the condition update race: wait for the log line.)
    let log_path = ovn.dir.path().join("petrel-ovn.log");
    poll(WAIT, "monitor conditions updated", || {
        std::fs::read_to_string(&log_path).ok().filter(|l| l.contains("updating monitor conditions")).map(|_| ())
    });
}

fn run_with_config(text: &str, extra: &[&str]) -> (bool, String) {
    let dir = common::TempDir::new("conf");
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, text).unwrap();
    let mut args = vec!["--config", conf.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_petrel-ovn")).args(&args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn config_file_errors_are_clear() {
    let base = "remote = \"unix:/nonexistent\"\nsystem-id = \"x\"\nencap-ip = \"192.0.2.1\"\n";
    // An unknown key names the key, the line and the file.
    let (ok, err) = run_with_config(&format!("{base}remot = \"unix:/x\"\n"), &[]);
    assert!(!ok);
    assert!(err.contains("unknown field `remot`"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    // A value of the wrong type.
    let (ok, err) = run_with_config(&format!("{base}probe-interval-ms = \"fast\"\n"), &[]);
    assert!(!ok);
    assert!(err.contains("probe-interval-ms") || err.contains("invalid type"), "{err}");
    let (ok, err) = run_with_config("system-id = \"x\"\nencap-ip = \"not-an-ip\"\n", &[]);
    assert!(!ok && err.contains("encap-ip"), "{err}");
    // A required setting given nowhere.
    let (ok, err) = run_with_config("system-id = \"x\"\nencap-ip = \"192.0.2.1\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("missing --remote (or `remote` in the config file)"), "{err}");
    // A missing file.
    let o = Command::new(env!("CARGO_BIN_EXE_petrel-ovn")).args(["--config", "/nonexistent/p.toml"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("reading config file /nonexistent/p.toml"));
}

#[test]
fn help_documents_config_and_monitor_all() {
    let o = Command::new(env!("CARGO_BIN_EXE_petrel-ovn")).arg("--help").output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for word in ["--config <FILE>", "--monitor-all", "iface-ids = [", "Unknown keys are errors", "ovn-monitor-all"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}
