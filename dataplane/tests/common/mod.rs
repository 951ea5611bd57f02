//! Shared helpers of the pcap-fixture tests: read and write pcap files, load
//! `pcap-fixtures/manifest.json`, run tshark and collect its fields.
//!
//! tshark is the independent oracle of these tests. A test that needs it and
//! cannot find it fails, telling the reader to run `scripts/bootstrap.sh`;
//! it never skips silently.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use serde_json::Value;

#[cfg(feature = "dpdk")]
pub mod pods;

/// `pcap-fixtures/` at the workspace root.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures")
}

/// Every frame of a pcap file, in order.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = PcapReader::new(file).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert_eq!(pkt.orig_len as usize, pkt.data.len(), "{}: a fixture frame was captured truncated", path.display());
        out.push(pkt.data.into_owned());
    }
    out
}

/// Every frame of a fixture file, by name (`"geneve_ovn.pcap"`).
pub fn fixture(name: &str) -> Vec<Vec<u8>> {
    read_pcap(&fixtures_dir().join(name))
}

/// Writes `frames` to a classic Ethernet pcap at `path`, 1 ms apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut writer = PcapWriter::new(file).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64);
        writer.write_packet(&PcapPacket::new(ts, f.len() as u32, f)).unwrap();
    }
}

/// Writes a pcap with no frames (for ports that only transmit).
pub fn empty_pcap(path: &Path) {
    write_pcap(path, &[]);
}

/// `frame` with an 802.1Q tag (TCI = `vid`) inserted after the MAC addresses.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

/// `pcap-fixtures/manifest.json`.
pub fn manifest() -> Value {
    let path = fixtures_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `(file name, manifest entries)` of every fixture, in manifest order.
pub fn manifest_files(m: &Value) -> Vec<(String, Vec<Value>)> {
    m["files"]
        .as_object()
        .expect("manifest: files is an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().expect("manifest: a file is a list").clone()))
        .collect()
}

/// Fails the test unless tshark is installed.
pub fn require_tshark() {
    let ok = Command::new("tshark").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "tshark is not installed: it is the oracle of these tests. Run scripts/bootstrap.sh \
         (it installs Debian's tshark), then re-run the tests."
    );
}

/// tshark's fields for each packet of `pcap`: field name -> every occurrence,
/// outer first (`-T json -e ...`). Reassembly is off so each frame dissects
/// alone; IPv4 header checksums are verified; `extra` adds `-o`/`-d` options.
pub fn tshark_fields(pcap: &Path, fields: &[&str], extra: &[&str]) -> Vec<BTreeMap<String, Vec<String>>> {
    require_tshark();
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap).args([
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "json",
    ]);
    cmd.args(extra);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "tshark -r {} failed: {}", pcap.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .expect("tshark -T json gives a list")
        .iter()
        .map(|p| {
            p["_source"]["layers"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let vals = v
                                .as_array()
                                .map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect())
                                .unwrap_or_default();
                            (k.clone(), vals)
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Parses a tshark number (`"6081"`, `"0x0102"`).
pub fn tshark_num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("tshark number {s:?}: {e}")),
        None => s.parse().unwrap_or_else(|e| panic!("tshark number {s:?}: {e}")),
    }
}

/// `"02:00:00:00:00:0a"` -> bytes.
pub fn mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    assert_eq!(parts.len(), 6, "MAC {s:?}");
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).unwrap();
    }
    out
}

/// An IPv4 or IPv6 address as the flow key stores it: 16 bytes, IPv4 mapped
/// as `::ffff:a.b.c.d`.
pub fn ip16(s: &str) -> [u8; 16] {
    match s.parse::<std::net::IpAddr>().unwrap_or_else(|e| panic!("IP {s:?}: {e}")) {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// A manifest integer.
pub fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("manifest: {v} is not an unsigned integer"))
}

/// A manifest string.
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("manifest: {v} is not a string"))
}

/// Decodes a hex string (`"00030005"`).
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Collects mismatches so a test reports all of them at once, not the first.
#[derive(Debug, Default)]
pub struct Mismatches(pub Vec<String>);

impl Mismatches {
    /// Records `what` unless `ours == want`.
    pub fn check<T: PartialEq + std::fmt::Debug>(&mut self, what: impl std::fmt::Display, ours: T, want: T) {
        if ours != want {
            self.0.push(format!("{what}: ours {ours:?}, expected {want:?}"));
        }
    }

    /// Records a free-form failure.
    pub fn fail(&mut self, what: impl std::fmt::Display) {
        self.0.push(what.to_string());
    }

    /// Panics with every recorded mismatch, if any.
    pub fn assert_none(self, test: &str) {
        assert!(self.0.is_empty(), "{test}: {} mismatches:\n  {}", self.0.len(), self.0.join("\n  "));
    }
}

/// A running petreld, killed (and reaped) when dropped.
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control-socket client of the petreld at `socket`, retrying for 30 s
/// while it starts.
pub fn connect(socket: &Path, who: &str) -> petrel_dataplane::ctl::client::Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match petrel_dataplane::ctl::client::Client::connect(socket, who) {
            Ok(c) => return c,
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect to petreld at {}: {e}", socket.display()),
        }
    }
}
