//! One attachment (container id + interface name) on the host: its short
//! names, its socket, the files the pod sees, and the state DEL and GC need.
//!
//! Layout, for attachment key `K` (12 hex digits of SHA-256 over
//! `containerId NUL ifName`, the same in every plugin version):
//!
//! ```text
//! <socketDir>/K/                   the attachment's directory, or a symlink to the
//!                                  pod's sharedDir (which may be longer than 108 bytes)
//! <socketDir>/K/<ifname>.sock      the vhost-user socket (always a short path)
//! <socketDir>/K/configData-<cid12>-<ifname>.json
//!                                  userspace-CNI configuration data for the pod
//! <stateDir>/K.json                what ADD did (for DEL, CHECK and GC)
//! ```
//!
//! A socket is bound and connected through the symlink: the kernel resolves
//! directories in a `sun_path` and only the path string counts against the
//! 108-byte limit, so the socket file lives in the pod's directory however
//! long its host path is.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{NetConf, VhostMode};
use crate::spec::{code, CniError, CniResult};

/// petreld port names of CNI attachments start with this.
pub const PORT_PREFIX: &str = "cni-";

/// The 12-hex-digit key of an attachment.
pub fn key(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A locally administered unicast MAC derived from the key (stable across
/// ADD retries, so the LSP's addresses and port security stay right).
pub fn generated_mac(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"petrel-mac\0");
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    let d = h.finalize();
    // 0x0a: locally administered, unicast (as ovn-northd's dynamic MACs).
    format!("0a:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2], d[3], d[4])
}

/// Parses `aa:bb:cc:dd:ee:ff`; normalises to lower case.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2 || u8::from_str_radix(p, 16).is_err()) {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// Whether `ifname` is a valid interface name (as Linux and the spec's
/// conventions allow: 1..=15 bytes, no `/`, whitespace, `:` or dots only).
pub fn valid_ifname(ifname: &str) -> bool {
    (1..=15).contains(&ifname.len())
        && ifname != "."
        && ifname != ".."
        && !ifname.chars().any(|c| c == '/' || c == ':' || c == ',' || c == '=' || c.is_whitespace())
}

/// What ADD did, kept in `<stateDir>/<key>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Network name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    #[serde(default)]
    pub netns: Option<String>,
    /// petreld port name.
    pub port: String,
    /// petreld's control socket.
    pub control_socket: PathBuf,
    /// The logical switch port (`iface-id`).
    pub logical_port: String,
    /// Whether ADD created the LSP (then DEL removes it).
    #[serde(default)]
    pub created_lsp: bool,
    /// `ovn-nbctl --db=` used.
    #[serde(default)]
    pub nb_db: Option<String>,
    /// `<socketDir>/<key>`.
    pub entry: PathBuf,
    /// The pod's shared directory the entry points to, if any.
    #[serde(default)]
    pub shared_dir: Option<PathBuf>,
    /// The socket (through `entry`).
    pub socket: PathBuf,
    /// petreld's vhost-user role.
    pub mode: String,
    /// The configuration data file (through `entry`).
    pub config_data: PathBuf,
    /// The result ADD returned (once complete).
    #[serde(default)]
    pub result: Option<CniResult>,
}

/// Paths of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Attachment key.
    pub key: String,
    /// `<socketDir>/<key>`.
    pub entry: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// Socket file name.
    pub socket_name: String,
    /// `configData-<cid12>-<ifname>.json` under `entry`.
    pub config_data: PathBuf,
    /// `<stateDir>/<key>.json`.
    pub state: PathBuf,
}

impl Paths {
    /// The paths of `container_id`/`ifname` under `conf`.
    ///
    /// # Errors
    /// [`code::INVALID_CONFIG`] if the socket path does not fit in a Unix
    /// socket address (cannot happen once the configuration validated,
    /// checked again because everything depends on it).
    pub fn new(conf: &NetConf, container_id: &str, ifname: &str) -> Result<Self, CniError> {
        let key = key(container_id, ifname);
        let entry = conf.socket_dir.join(&key);
        let socket_name = format!("{ifname}.sock");
        let socket = entry.join(&socket_name);
        let n = socket.as_os_str().len();
        if n > 107 {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "socket path {} is {n} bytes, over the 107 a Unix socket address holds: shorten socketDir",
                    socket.display()
                ),
            ));
        }
        let cid12: String = container_id.chars().take(12).collect();
        Ok(Paths {
            config_data: entry.join(format!("configData-{cid12}-{ifname}.json")),
            state: conf.state_dir.join(format!("{key}.json")),
            key,
            entry,
            socket,
            socket_name,
        })
    }

    /// petreld's port name.
    pub fn port(&self) -> String {
        format!("{PORT_PREFIX}{}", self.key)
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> CniError {
    move |e| CniError::new(code::IO_FAILURE, what).details(e)
}

/// Creates `<socketDir>/<key>`: a directory, or a symlink to `shared`
/// (created if missing). Replaces a stale entry of a previous ADD.
///
/// # Errors
/// [`code::IO_FAILURE`] naming the path.
pub fn make_entry(
    socket_dir: &Path,
    entry: &Path,
    shared: Option<&Path>,
    owner: Option<(u32, u32)>,
) -> Result<(), CniError> {
    fs::create_dir_all(socket_dir)
        .map_err(io_err(format!("cannot create socketDir {}: is the path writable by root?", socket_dir.display())))?;
    remove_entry(entry)?;
    let dir = match shared {
        Some(s) => {
            fs::create_dir_all(s).map_err(io_err(format!("cannot create sharedDir {}", s.display())))?;
            symlink(s, entry).map_err(io_err(format!("cannot link {} to {}", entry.display(), s.display())))?;
            s.to_owned()
        }
        None => {
            fs::create_dir(entry).map_err(io_err(format!("cannot create {}", entry.display())))?;
            entry.to_owned()
        }
    };
    // The pod must be able to reach (and in client mode create) its socket.
    let mode = if owner.is_some() { 0o770 } else { 0o755 };
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("cannot chmod {}", dir.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(io_err(format!("cannot chown {} to {uid}:{gid}", dir.display())))?;
    }
    Ok(())
}

/// Removes `<socketDir>/<key>`: the symlink, or the directory and what is in it.
///
/// # Errors
/// [`code::IO_FAILURE`] if it exists and cannot be removed.
pub fn remove_entry(entry: &Path) -> Result<(), CniError> {
    match fs::symlink_metadata(entry) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::new(code::IO_FAILURE, format!("cannot inspect {}", entry.display())).details(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(entry).map_err(io_err(format!("cannot remove {}", entry.display()))),
        Ok(_) => fs::remove_file(entry).map_err(io_err(format!("cannot remove {}", entry.display()))),
    }
}

/// Removes a file, ignoring its absence.
///
/// # Errors
/// [`code::IO_FAILURE`] for anything else.
pub fn remove_file(p: &Path) -> Result<(), CniError> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(CniError::new(code::IO_FAILURE, format!("cannot remove {}", p.display())).details(e))
        }
        _ => Ok(()),
    }
}

/// Writes `data` to `path` atomically (temporary file + rename), mode `mode`.
///
/// # Errors
/// [`code::IO_FAILURE`] naming the path.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CniError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io_err(format!("cannot write {}", tmp.display())))?;
    f.write_all(data).map_err(io_err(format!("cannot write {}", tmp.display())))?;
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err(format!("cannot chmod {}", tmp.display())))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(format!("cannot rename {} to {}", tmp.display(), path.display())))
}

/// Saves the state.
///
/// # Errors
/// [`code::IO_FAILURE`].
pub fn save_state(path: &Path, s: &State) -> Result<(), CniError> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(io_err(format!("cannot create stateDir {}", d.display())))?;
    }
    let data =
        serde_json::to_vec_pretty(s).map_err(|e| CniError::new(code::IO_FAILURE, "cannot encode state").details(e))?;
    write_atomic(path, &data, 0o600)
}

/// Loads a state file; `None` if it does not exist.
///
/// # Errors
/// [`code::IO_FAILURE`] / [`code::DECODE`] if it exists but cannot be read.
pub fn load_state(path: &Path) -> Result<Option<State>, CniError> {
    match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::new(code::IO_FAILURE, format!("cannot read {}", path.display())).details(e)),
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            CniError::new(code::DECODE, format!("state file {} is corrupt: remove it", path.display())).details(e)
        }),
    }
}

/// Every state file in `dir` (unreadable ones are skipped with a note on stderr).
pub fn all_states(dir: &Path) -> Vec<(PathBuf, State)> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            match load_state(&p) {
                Ok(Some(s)) => out.push((p, s)),
                Ok(None) => {}
                Err(e) => eprintln!("petrel-cni: skipping {}: {e}", p.display()),
            }
        }
    }
    out
}

/// The userspace CNI's `ConfigurationData` (the JSON that Intel's
/// userspace-cni-network-plugin writes to `configData-<cid12>-<ifname>.json`
/// in the shared directory, or to the `userspace/configuration-data`
/// annotation), so the DPDK pod helpers written for it work: the pod's
/// side of vhost-user (`config.vhost.mode`) and the socket's file name
/// (`config.vhost.socketfile`), and the CNI result (`ipResult`) with MAC,
/// IPs and gateway. Petrel adds `config.mtu` and `config.vhost.queues`.
pub fn configuration_data(
    conf: &NetConf,
    container_id: &str,
    ifname: &str,
    socket_name: &str,
    result: &CniResult,
) -> Value {
    let pod_mode = conf.vhost_mode.peer();
    json!({
        "containerId": container_id,
        "ifName": ifname,
        "name": conf.name,
        "config": {
            "engine": "petrel",
            "iftype": "vhostuser",
            "netType": "interface",
            "mtu": conf.mtu,
            "vhost": {
                "mode": pod_mode.as_str(),
                "socketfile": socket_name,
                "queues": conf.queues,
            },
        },
        "ipResult": result.to_json(&conf.cni_version),
    })
}

/// Sets mode and owner of the socket petreld made (server mode).
///
/// # Errors
/// [`code::IO_FAILURE`] naming the socket.
pub fn secure_socket(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), CniError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(format!(
        "cannot chmod {:o} {}",
        mode,
        path.display()
    )))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io_err(format!("cannot chown {} to {uid}:{gid}", path.display())))?;
    }
    Ok(())
}

/// The vhost-user mode of a state's string.
pub fn mode_of(s: &str) -> VhostMode {
    if s == "client" {
        VhostMode::Client
    } else {
        VhostMode::Server
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn conf(dir: &Path) -> NetConf {
        let s = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"petrel","socketDir":"{}/s","stateDir":"{}/st"}}"#,
            dir.display(),
            dir.display()
        );
        NetConf::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        // Pinned: DEL after an upgrade must find what ADD made.
        assert_eq!(key("abc", "net1"), key("abc", "net1"));
        assert_eq!(key("abc", "net1").len(), 12);
        assert_ne!(key("abc", "net1"), key("abc", "net2"));
        assert_ne!(key("abcn", "et1"), key("abc", "net1"));
        let m = generated_mac("abc", "net1");
        assert!(m.starts_with("0a:") && parse_mac(&m).is_some(), "{m}");
        assert_eq!(m, generated_mac("abc", "net1"));
    }

    #[test]
    fn macs_and_ifnames() {
        assert_eq!(parse_mac("0A:00:00:00:00:01").as_deref(), Some("0a:00:00:00:00:01"));
        assert!(parse_mac("0a:00:00:00:00").is_none() && parse_mac("0a:00:00:00:00:0g").is_none());
        assert!(valid_ifname("net1") && valid_ifname("eth0.100"));
        assert!(!valid_ifname("") && !valid_ifname("a/b") && !valid_ifname("sixteen-chars-xx") && !valid_ifname(".."));
    }

    #[test]
    fn paths_are_short_and_named_like_userspace_cni() {
        let d = tempfile::tempdir().unwrap();
        let c = conf(d.path());
        let p = Paths::new(&c, "0123456789abcdef0123", "net1").unwrap();
        assert_eq!(p.socket, d.path().join("s").join(&p.key).join("net1.sock"));
        assert!(p.config_data.ends_with("configData-0123456789ab-net1.json"));
        assert_eq!(p.port(), format!("cni-{}", p.key));
        assert_eq!(p.state, d.path().join("st").join(format!("{}.json", p.key)));
    }

    #[test]
    fn a_long_shared_dir_is_reached_through_a_short_link() {
        let d = tempfile::tempdir().unwrap();
        let c = conf(d.path());
        let long = d.path().join("k".repeat(100)).join("volumes").join("kubernetes.io~empty-dir").join("petrel");
        assert!(long.as_os_str().len() > 108);
        let p = Paths::new(&c, "cid", "net1").unwrap();
        make_entry(&c.socket_dir, &p.entry, Some(&long), None).unwrap();
        // A socket bound through the link lands in the long directory.
        let l = std::os::unix::net::UnixListener::bind(&p.socket).unwrap();
        assert!(long.join("net1.sock").exists());
        std::os::unix::net::UnixStream::connect(&p.socket).unwrap();
        drop(l);
        // Removing the entry removes the link, not the pod's directory.
        remove_entry(&p.entry).unwrap();
        assert!(!p.entry.exists() && long.exists());
        remove_entry(&p.entry).unwrap();
    }

    #[test]
    fn state_round_trip_and_atomic_write() {
        let d = tempfile::tempdir().unwrap();
        let c = conf(d.path());
        let p = Paths::new(&c, "cid", "net1").unwrap();
        assert!(load_state(&p.state).unwrap().is_none());
        let s = State {
            network: "n".into(),
            container_id: "cid".into(),
            ifname: "net1".into(),
            netns: Some("/run/netns/x".into()),
            port: p.port(),
            control_socket: c.control_socket.clone(),
            logical_port: "pod.ns".into(),
            created_lsp: false,
            nb_db: None,
            entry: p.entry.clone(),
            shared_dir: None,
            socket: p.socket.clone(),
            mode: "server".into(),
            config_data: p.config_data.clone(),
            result: None,
        };
        save_state(&p.state, &s).unwrap();
        assert_eq!(load_state(&p.state).unwrap(), Some(s));
        assert_eq!(all_states(&c.state_dir).len(), 1);
        fs::write(&p.state, b"{").unwrap();
        assert_eq!(load_state(&p.state).unwrap_err().code, code::DECODE);
    }

    #[test]
    fn configuration_data_has_the_userspace_cni_shape() {
        let d = tempfile::tempdir().unwrap();
        let c = conf(d.path());
        let r = CniResult {
            interfaces: vec![crate::spec::Interface {
                name: "net1".into(),
                mac: "0a:00:00:00:00:01".into(),
                mtu: Some(1500),
                sandbox: None,
                socket_path: None,
            }],
            ..Default::default()
        };
        let v = configuration_data(&c, "cid", "net1", "net1.sock", &r);
        assert_eq!(v["config"]["iftype"], "vhostuser");
        assert_eq!(v["config"]["vhost"]["mode"], "client", "petreld serves, the pod connects");
        assert_eq!(v["config"]["vhost"]["socketfile"], "net1.sock");
        assert_eq!(v["ipResult"]["interfaces"][0]["mac"], "0a:00:00:00:00:01");
        assert_eq!(v["containerId"], "cid");
        assert_eq!(v["ifName"], "net1");
    }
}
