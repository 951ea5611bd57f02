//! The CNI protocol as a runtime speaks it (CNI spec 1.1, "Execution
//! Protocol" and "Result Types"): the `CNI_*` environment, error codes and
//! the JSON results and errors a plugin prints on stdout.
//!
//! Invariant: whatever the plugin prints on stdout is one JSON document that
//! the runtime can parse with the `cniVersion` it asked for; everything for
//! people goes to stderr or into an error's `msg`/`details`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The versions this plugin speaks, oldest first. Results for versions
/// before 1.0.0 carry an IP `version` field; `CHECK` exists from 0.4.0,
/// `STATUS` and `GC` from 1.1.0.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version this plugin speaks.
pub const LATEST: &str = "1.1.0";

/// Error codes of the spec ("Error" section); 100 and up are this plugin's.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (a transient condition: petreld not up yet).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available (cannot serve ADD).
    pub const NOT_AVAILABLE: u32 = 50;
    /// petreld refused or failed a request it understood.
    pub const DATAPLANE_REFUSED: u32 = 100;
    /// The OVN Northbound (ovn-nbctl) failed or answered something unusable.
    pub const OVN_NB: u32 = 101;
    /// The delegated IPAM plugin failed.
    pub const IPAM: u32 = 102;
    /// CHECK: the port exists but is not (yet) bound to its logical port.
    pub const NOT_BOUND: u32 = 103;
}

/// A CNI error: printed as the spec's error JSON, with a non-zero exit.
/// `msg` says what is wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// Spec code (or ≥ 100, this plugin's).
    pub code: u32,
    /// Short message: what failed, and how to fix it.
    pub msg: String,
    /// Longer detail (the underlying error), may be empty.
    pub details: String,
}

impl CniError {
    /// An error with this code and message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// Adds the underlying error as `details`.
    #[must_use]
    pub fn details(mut self, d: impl fmt::Display) -> Self {
        self.details = d.to_string();
        self
    }

    /// The error JSON of the spec, in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach (idempotent).
    Del,
    /// Verify an attachment.
    Check,
    /// Whether the plugin can serve ADD now (1.1).
    Status,
    /// Remove what does not belong to a valid attachment (1.1).
    Gc,
    /// Versions spoken.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    ///
    /// # Errors
    /// [`code::INVALID_ENV`] for anything else.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_COMMAND={s:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
                ))
            }
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS` (a path).
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, `K=V;K=V`, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, where delegated plugins (IPAM) are looked up.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the environment through `get` (`std::env::var` in the binary,
    /// a map in tests).
    ///
    /// # Errors
    /// [`code::INVALID_ENV`] if `CNI_COMMAND` is missing or unknown, or
    /// `CNI_ARGS` is not `K=V;...`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = get("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_COMMAND is not set: petrel-cni is a CNI plugin, run by a container runtime \
                 (CNI_COMMAND=VERSION petrel-cni shows the versions it speaks)",
            )
        })?;
        let command = Command::parse(&command)?;
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut args = Vec::new();
        if let Some(a) = nonempty("CNI_ARGS") {
            for kv in a.split(';').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    CniError::new(code::INVALID_ENV, format!("CNI_ARGS: {kv:?} is not KEY=VALUE (CNI_ARGS is K=V;K=V)"))
                })?;
                args.push((k.to_owned(), v.to_owned()));
            }
        }
        let path = nonempty("CNI_PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        Ok(Env {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS"),
            ifname: nonempty("CNI_IFNAME"),
            args,
            path,
        })
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// A variable the command needs.
    ///
    /// # Errors
    /// [`code::INVALID_ENV`] naming it.
    pub fn require<'a>(&self, v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("{name} is not set; the runtime must set it for CNI_COMMAND=ADD/DEL/CHECK"),
            )
        })
    }
}

/// Whether `v` is one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// `(major, minor, patch)` of a version string; unparsable parts are 0.
pub fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The VERSION reply.
pub fn version_json() -> Value {
    json!({ "cniVersion": LATEST, "supportedVersions": SUPPORTED_VERSIONS })
}

/// One interface of a result. For a vhost-user port this is the pod's
/// virtio-net device: no kernel interface exists, but `sandbox` ties it to
/// the pod (Multus reports its IPs in `network-status`), and 1.1's
/// `socketPath` and `mtu` say where and how big.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// `CNI_IFNAME`.
    pub name: String,
    /// The pod's MAC.
    pub mac: String,
    /// MTU (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `CNI_NETNS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The vhost-user socket (1.1), as the host sees it.
    #[serde(rename = "socketPath", default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR (`10.0.0.5/24`).
    pub address: String,
    /// Default gateway on that subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// Whether the address is IPv6.
    pub fn is_v6(&self) -> bool {
        self.address.contains(':')
    }
}

/// A result (ADD's output; CHECK and DEL get it as `prevResult`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes, as the IPAM plugin gave them.
    #[serde(default)]
    pub routes: Vec<Value>,
    /// DNS, as the IPAM plugin gave it.
    #[serde(default)]
    pub dns: Value,
}

impl CniResult {
    /// The result as JSON in `version`: before 1.0.0 every IP carries
    /// `version` ("4"/"6"); before 1.1.0 interfaces have no `mtu` or
    /// `socketPath`.
    pub fn to_json(&self, version: &str) -> Value {
        let v = version_tuple(version);
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if v < (1, 1, 0) {
                    i.mtu = None;
                    i.socket_path = None;
                }
                serde_json::to_value(i).unwrap_or(Value::Null)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut j = serde_json::to_value(ip).unwrap_or(Value::Null);
                if v < (1, 0, 0) {
                    j["version"] = Value::String(if ip.is_v6() { "6" } else { "4" }.to_owned());
                }
                j
            })
            .collect();
        let mut out = json!({ "cniVersion": version, "interfaces": interfaces, "ips": ips });
        if !self.routes.is_empty() {
            out["routes"] = Value::Array(self.routes.clone());
        }
        if self.dns.as_object().is_some_and(|o| !o.is_empty()) {
            out["dns"] = self.dns.clone();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn env_parses_args_and_path() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod1"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.arg("K8S_POD_NAME"), Some("pod1"));
        assert_eq!(e.arg("K8S_POD_NAMESPACE"), Some("default"));
        assert_eq!(e.arg("MISSING"), None);
        assert_eq!(e.path, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
    }

    #[test]
    fn env_errors_name_the_variable() {
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(e.msg.contains("FROB"), "{e}");
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_ARGS", "novalue")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("novalue"), "{e}");
    }

    #[test]
    fn result_json_follows_the_version() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "net1".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1500),
                sandbox: Some("/run/netns/a".into()),
                socket_path: Some("/run/petrel/vhost/x/net1.sock".into()),
            }],
            ips: vec![
                IpConfig { address: "10.0.0.2/24".into(), gateway: Some("10.0.0.1".into()), interface: Some(0) },
                IpConfig { address: "fd00::2/64".into(), gateway: None, interface: Some(0) },
            ],
            routes: vec![],
            dns: Value::Null,
        };
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["interfaces"][0]["mtu"], 1500);
        assert_eq!(v11["interfaces"][0]["socketPath"], "/run/petrel/vhost/x/net1.sock");
        assert!(v11["ips"][0].get("version").is_none());
        assert!(v11.get("dns").is_none() && v11.get("routes").is_none());
        let v10 = r.to_json("1.0.0");
        assert!(v10["interfaces"][0].get("mtu").is_none());
        assert!(v10["interfaces"][0].get("socketPath").is_none());
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert_eq!(v04["cniVersion"], "0.4.0");
    }

    #[test]
    fn error_json() {
        let e = CniError::new(code::TRY_AGAIN, "petreld is not running").details("connect: ENOENT");
        let j = e.to_json("1.0.0");
        assert_eq!(
            j,
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "petreld is not running", "details": "connect: ENOENT"})
        );
    }

    #[test]
    fn versions() {
        assert!(version_tuple("0.4.0") < version_tuple("1.0.0"));
        assert!(is_supported("1.1.0") && !is_supported("0.2.0"));
        assert_eq!(version_json()["supportedVersions"].as_array().unwrap().len(), SUPPORTED_VERSIONS.len());
    }
}
