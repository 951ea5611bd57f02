//! Test harness: real `ovsdb-server`s (NB and SB, created with
//! `ovsdb-tool`) and `ovn-northd` on Unix sockets in a temporary directory.
//!
//! Every child is started through `setpriv --pdeathsig KILL`, so it dies
//! with the test process even when nextest kills it; `Drop` kills and reaps
//! them on normal exit and on panic, then removes the directory.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petrel_control::ovsdb::{DatabaseSchema, Replica, Row};
use serde_json::Value;
use uuid::Uuid;

pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

/// Bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async version of [`poll`].
pub async fn poll_async<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "petrel-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Spawns `prog args` so that it dies with this process; output to `log`.
pub fn spawn(prog: &str, args: &[&str], log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    Command::new("setpriv")
        .arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {prog}: {e}"))
}

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

fn check(prog: &str, args: &[&str]) -> String {
    let o = run(prog, args);
    assert!(o.status.success(), "{prog} {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Options of [`Ovn::start`].
#[derive(Debug, Clone, Copy)]
pub struct OvnOptions {
    /// SB as a one-member raft cluster (so it keeps transaction ids, which
    /// `monitor_cond_since` needs to resume).
    pub clustered_sb: bool,
    /// Start NB and ovn-northd as well.
    pub northd: bool,
}

/// A running OVN central: SB (and NB + northd).
#[derive(Debug)]
pub struct Ovn {
    pub dir: TempDir,
    pub opts: OvnOptions,
    sb: Option<Child>,
    nb: Option<Child>,
    northd: Option<Child>,
    n_sb_starts: u32,
}

impl Ovn {
    pub fn start(opts: OvnOptions) -> Ovn {
        let dir = TempDir::new("ovn");
        let d = dir.path();
        let sb_db = d.join("sb.db");
        if opts.clustered_sb {
            let local = format!("tcp:127.0.0.1:{}", free_tcp_port());
            check("ovsdb-tool", &["create-cluster", sb_db.to_str().unwrap(), SB_SCHEMA, &local]);
        } else {
            check("ovsdb-tool", &["create", sb_db.to_str().unwrap(), SB_SCHEMA]);
        }
        let mut ovn = Ovn { dir, opts, sb: None, nb: None, northd: None, n_sb_starts: 0 };
        ovn.start_sb();
        if opts.northd {
            let d = ovn.dir.path().to_owned();
            let nb_db = d.join("nb.db");
            check("ovsdb-tool", &["create", nb_db.to_str().unwrap(), NB_SCHEMA]);
            ovn.nb = Some(spawn(
                "ovsdb-server",
                &[
                    &format!("--remote=punix:{}", d.join("nb.sock").display()),
                    &format!("--unixctl={}", d.join("nb.ctl").display()),
                    nb_db.to_str().unwrap(),
                ],
                &d.join("nb.log"),
            ));
            poll(WAIT, "NB socket", || d.join("nb.sock").exists().then_some(()));
            ovn.nbctl(&["init"]);
            ovn.northd = Some(spawn(
                "ovn-northd",
                &[
                    &format!("--ovnnb-db={}", ovn.nb_remote()),
                    &format!("--ovnsb-db={}", ovn.sb_remote()),
                    &format!("--unixctl={}", d.join("northd.ctl").display()),
                ],
                &d.join("northd.log"),
            ));
            // northd creates SB_Global once it runs.
            poll(WAIT, "SB_Global from northd", || {
                (!ovn.sbctl(&["--bare", "--columns=_uuid", "list", "SB_Global"]).trim().is_empty()).then_some(())
            });
        } else {
            ovn.sbctl(&["init"]);
        }
        ovn
    }

    /// (Re)starts the SB server on the same database file.
    pub fn start_sb(&mut self) {
        assert!(self.sb.is_none());
        let d = self.dir.path().to_owned();
        let _ = std::fs::remove_file(d.join("sb.sock"));
        self.n_sb_starts += 1;
        self.sb = Some(spawn(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{}", d.join("sb.sock").display()),
                &format!("--unixctl={}", d.join("sb.ctl").display()),
                d.join("sb.db").to_str().unwrap(),
            ],
            &d.join(format!("sb-{}.log", self.n_sb_starts)),
        ));
        poll(WAIT, "SB socket", || d.join("sb.sock").exists().then_some(()));
        // A clustered member serves only once it has elected itself.
        poll(WAIT, "SB ready", || {
            run(
                "ovn-sbctl",
                &[&format!("--db={}", self.sb_remote()), "--timeout=2", "--no-leader-only", "list", "Connection"],
            )
            .status
            .success()
            .then_some(())
        });
    }

    /// Kills the SB server (SIGKILL) and reaps it.
    pub fn kill_sb(&mut self) {
        if let Some(mut c) = self.sb.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sb_remote(&self) -> String {
        format!("unix:{}", self.dir.path().join("sb.sock").display())
    }

    pub fn nb_remote(&self) -> String {
        format!("unix:{}", self.dir.path().join("nb.sock").display())
    }

    pub fn sbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.sb_remote());
        let mut a = vec![db.as_str(), "--timeout=10"];
        a.extend_from_slice(args);
        check("ovn-sbctl", &a)
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.nb_remote());
        let mut a = vec![db.as_str(), "--timeout=10"];
        a.extend_from_slice(args);
        check("ovn-nbctl", &a)
    }

    /// Runs ovn-nbctl and returns its whole output (for commands that may fail).
    pub fn nbctl_output(&self, args: &[&str]) -> Output {
        let db = format!("--db={}", self.nb_remote());
        let mut a = vec![db.as_str()];
        a.extend_from_slice(args);
        run("ovn-nbctl", &a)
    }

    /// `ovn-sbctl --format=json list TABLE`, as rows of `schema`.
    pub fn sb_table(&self, schema: &Arc<DatabaseSchema>, table: &str) -> HashMap<Uuid, Row> {
        parse_list(&self.sbctl(&["--format=json", "list", table]), schema, table)
    }

    /// Tables where `replica` differs from `ovn-sbctl list` (empty: equal).
    pub fn replica_diff(&self, replica: &Replica) -> Vec<String> {
        diff_tables(replica, |schema, t| self.sb_table(schema, t))
    }
}

impl Drop for Ovn {
    fn drop(&mut self) {
        for c in [self.northd.take(), self.nb.take(), self.sb.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // Show the daemons' logs before the directory goes away.
            for e in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("==== {} (last lines)", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct Reaped(pub Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A 3-member raft Southbound on Unix sockets `sb1.sock`..`sb3.sock`.
#[derive(Debug)]
pub struct SbCluster {
    pub dir: TempDir,
    members: Vec<Option<Child>>,
}

impl SbCluster {
    pub fn start() -> SbCluster {
        let dir = TempDir::new("raft");
        let d = dir.path().to_owned();
        let addrs: Vec<String> = (0..3).map(|_| format!("tcp:127.0.0.1:{}", free_tcp_port())).collect();
        let db = |i: usize| d.join(format!("sb{}.db", i + 1)).to_str().unwrap().to_owned();
        check("ovsdb-tool", &["create-cluster", &db(0), SB_SCHEMA, &addrs[0]]);
        for i in 1..3 {
            check("ovsdb-tool", &["join-cluster", &db(i), "OVN_Southbound", &addrs[i], &addrs[0]]);
        }
        let mut c = SbCluster { dir, members: vec![None, None, None] };
        for i in 0..3 {
            c.start_member(i);
        }
        for i in 0..3 {
            poll(Duration::from_secs(20), "cluster member joined", || {
                c.status(i).contains("Status: cluster member").then_some(())
            });
        }
        poll(WAIT, "SB init", || {
            run("ovn-sbctl", &[&format!("--db={}", c.remotes()), "--timeout=2", "init"]).status.success().then_some(())
        });
        c
    }

    pub fn sock(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("sb{}.sock", i + 1))
    }

    pub fn remote(&self, i: usize) -> String {
        format!("unix:{}", self.sock(i).display())
    }

    /// All members, comma-separated.
    pub fn remotes(&self) -> String {
        (0..3).map(|i| self.remote(i)).collect::<Vec<_>>().join(",")
    }

    /// Remotes of the running members.
    pub fn live_remotes(&self) -> String {
        (0..3).filter(|i| self.members[*i].is_some()).map(|i| self.remote(i)).collect::<Vec<_>>().join(",")
    }

    pub fn start_member(&mut self, i: usize) {
        let d = self.dir.path().to_owned();
        let _ = std::fs::remove_file(self.sock(i));
        self.members[i] = Some(spawn(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{}", self.sock(i).display()),
                &format!("--unixctl={}", d.join(format!("sb{}.ctl", i + 1)).display()),
                d.join(format!("sb{}.db", i + 1)).to_str().unwrap(),
            ],
            &d.join(format!("sb{}.log", i + 1)),
        ));
        poll(WAIT, "member socket", || self.sock(i).exists().then_some(()));
    }

    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `cluster/status` of member `i` ("" if it does not answer).
    pub fn status(&self, i: usize) -> String {
        let ctl = self.dir.path().join(format!("sb{}.ctl", i + 1));
        let o = run("ovs-appctl", &["-t", ctl.to_str().unwrap(), "--timeout=2", "cluster/status", "OVN_Southbound"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The member that is leader, if one is.
    pub fn leader(&self) -> Option<usize> {
        (0..3).find(|i| self.members[*i].is_some() && self.status(*i).contains("Role: leader"))
    }

    /// ovn-sbctl against the live members (it finds the leader itself).
    pub fn sbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.live_remotes());
        let mut a = vec![db.as_str(), "--timeout=10"];
        a.extend_from_slice(args);
        check("ovn-sbctl", &a)
    }

    /// `ovn-sbctl --format=json list TABLE` as rows of `schema`.
    pub fn sb_table(&self, schema: &Arc<DatabaseSchema>, table: &str) -> HashMap<Uuid, Row> {
        parse_list(&self.sbctl(&["--format=json", "list", table]), schema, table)
    }

    /// Tables where `replica` differs from the cluster's (empty: equal).
    pub fn replica_diff(&self, replica: &Replica) -> Vec<String> {
        diff_tables(replica, |schema, t| self.sb_table(schema, t))
    }
}

impl Drop for SbCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill_member(i);
        }
    }
}

fn parse_list(out: &str, schema: &Arc<DatabaseSchema>, table: &str) -> HashMap<Uuid, Row> {
    let v: Value = serde_json::from_str(out).unwrap();
    let headings: Vec<&str> = v["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    let tschema = schema.table(table).unwrap().clone();
    let mut rows = HashMap::new();
    for r in v["data"].as_array().unwrap() {
        let mut obj = serde_json::Map::new();
        let mut uuid = None;
        for (h, val) in headings.iter().zip(r.as_array().unwrap()) {
            if *h == "_uuid" {
                uuid = Some(Uuid::parse_str(val[1].as_str().unwrap()).unwrap());
            } else {
                obj.insert((*h).to_owned(), val.clone());
            }
        }
        rows.insert(uuid.unwrap(), Row::from_json(tschema.clone(), &obj).unwrap());
    }
    rows
}

fn diff_tables(
    replica: &Replica,
    mut server: impl FnMut(&Arc<DatabaseSchema>, &str) -> HashMap<Uuid, Row>,
) -> Vec<String> {
    let schema = replica.schema().clone();
    let mut diffs = Vec::new();
    for table in schema.tables.keys() {
        let theirs = server(&schema, table);
        let mine: HashMap<Uuid, Row> = replica.rows(table).map(|(u, r)| (*u, Row::clone(r))).collect();
        if theirs != mine {
            diffs.push(format!("{table}: server {} rows, replica {} rows", theirs.len(), mine.len()));
        }
    }
    diffs
}
