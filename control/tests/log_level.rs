//! `petrelctl log-level` against the real control-socket server in front of
//! a test node whose log filter is a real `petrel_obs::logging::LogControl`.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use petrel_dataplane::ctl::proto::{
    Change, DropsReply, ErrorReply, LogLevelReply, PmdStatsReply, ShowReply, SnapshotMsg, StatsReply, TablesReply,
    TraceReply,
};
use petrel_dataplane::ctl::{serve, Node, SocketOpts};
use petrel_obs::logging::LogControl;

struct LogNode(LogControl);

fn none() -> ErrorReply {
    ErrorReply::rejected("log-only test node")
}

impl Node for LogNode {
    fn generation(&self) -> u64 {
        0
    }
    fn show(&self) -> ShowReply {
        ShowReply {
            server: "test".into(),
            uptime_secs: 0.0,
            generation: 0,
            n_datapaths: 0,
            n_rules: 0,
            n_pmds: 0,
            ports: vec![],
            uplinks: vec![],
            tunnels: vec![],
        }
    }
    fn pmd_stats(&self) -> PmdStatsReply {
        PmdStatsReply { tsc_hz: 0, pmds: vec![] }
    }
    fn dump_tables(&self, _: Option<&str>) -> Result<TablesReply, ErrorReply> {
        Err(none())
    }
    fn drops(&self) -> DropsReply {
        DropsReply::from_counts(&[])
    }
    fn trace(&self, _: &str, _: &str) -> Result<TraceReply, ErrorReply> {
        Err(none())
    }
    fn publish(&self, _: SnapshotMsg) -> Result<u64, ErrorReply> {
        Err(none())
    }
    fn apply(&self, _: Vec<Change>) -> Result<u64, ErrorReply> {
        Err(none())
    }
    fn stats(&self) -> StatsReply {
        StatsReply { generation: 0, ports: vec![], pmds: self.pmd_stats(), drops: self.drops() }
    }
    fn log_level(&self, filter: Option<&str>) -> Result<LogLevelReply, ErrorReply> {
        let previous = filter.map(|f| self.0.set(f)).transpose().map_err(|e| ErrorReply::rejected(e.to_string()))?;
        Ok(LogLevelReply { filter: self.0.filter(), previous })
    }
}

fn petrelctl(sock: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_petrelctl")).arg("--socket").arg(sock).args(args).output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn log_level_prints_sets_and_rejects() {
    let dir = tempfile_dir();
    let sock = dir.join("ctl.sock");
    // The subscriber stays alive (unused) so its filter can be replaced.
    let (_subscriber, ctl) = petrel_obs::logging::subscriber("info", std::io::sink, false).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(&sock, SocketOpts::default(), Arc::new(LogNode(ctl.clone())), stop.clone()).unwrap();

    assert_eq!(petrelctl(&sock, &["log-level"]), (0, "info\n".into(), String::new()));
    let (code, out, _) = petrelctl(&sock, &["log-level", "petrel_vhost_user=debug,info"]);
    assert_eq!((code, out.as_str()), (0, "log filter: petrel_vhost_user=debug,info (was info)\n"));
    assert_eq!(ctl.filter(), "petrel_vhost_user=debug,info", "the node's filter changed");
    let (code, out, _) = petrelctl(&sock, &["--json", "log-level"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"filter": "petrel_vhost_user=debug,info"}));
    // A bad filter: exit 1 (petreld answered with an error), nothing changed.
    let (code, _, err) = petrelctl(&sock, &["log-level", "petrel=loud"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("petrel=loud") && err.contains("rejected"), "{err}");
    assert_eq!(ctl.filter(), "petrel_vhost_user=debug,info");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    let (code, _, err) = petrelctl(&sock, &["log-level"]);
    assert_eq!(code, 2, "unreachable: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("petrel-log-level-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
