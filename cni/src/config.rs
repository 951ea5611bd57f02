//! The network configuration (`"type": "petrel"`) the runtime passes on
//! stdin, parsed and checked before anything is touched.
//!
//! ```json
//! {
//!   "cniVersion": "1.1.0", "name": "dpdk-net", "type": "petrel",
//!   "logicalSwitch": "sw0",            // OVN switch (for createPort)
//!   "provider": "dpdk-net.default.ovn", // Kube-OVN provider: LSP <pod>.<ns>.<provider>
//!   "vhostMode": "server",             // petreld is the vhost-user server (pod: client)
//!   "queues": 1, "mtu": 1500,
//!   "socketDir": "/run/petrel/vhost",  // short paths petreld uses
//!   "sharedDir": "/var/lib/kubelet/pods/{K8S_POD_UID}/volumes/kubernetes.io~empty-dir/petrel",
//!   "socketOwner": "1000:1000", "socketMode": "0660",
//!   "controlSocket": "/run/petrel/petreld.sock",
//!   "createPort": true, "nbDb": "unix:/run/ovn/ovnnb_db.sock", "portSecurity": true,
//!   "bindTimeout": 10,
//!   "ipam": { "type": "host-local", "subnet": "10.0.0.0/24" }
//! }
//! ```
//!
//! Unknown keys are ignored, as the spec allows (runtimes add their own).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::spec::{code, is_supported, CniError, SUPPORTED_VERSIONS};

/// Which side of vhost-user petreld takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VhostMode {
    /// petreld creates the socket; the pod connects (`net_virtio_user0,path=SOCK`).
    Server,
    /// The pod creates the socket (`...,server=1`); petreld connects and retries.
    Client,
}

impl VhostMode {
    /// petreld's `mode=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            VhostMode::Server => "server",
            VhostMode::Client => "client",
        }
    }

    /// The pod's side.
    pub fn peer(self) -> VhostMode {
        match self {
            VhostMode::Server => VhostMode::Client,
            VhostMode::Client => VhostMode::Server,
        }
    }
}

/// `runtimeConfig` (capabilities the runtime fills in).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// `mac` capability: the pod's MAC.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The `"type": "petrel"` network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (`petrel`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The OVN logical switch the port is on (needed to create the LSP).
    #[serde(default)]
    pub logical_switch: Option<String>,
    /// Kube-OVN provider: the LSP is `<pod>.<namespace>.<provider>`
    /// (`<pod>.<namespace>` for none or `ovn`).
    #[serde(default)]
    pub provider: Option<String>,
    /// petreld's vhost-user role.
    #[serde(default = "default_mode")]
    pub vhost_mode: VhostMode,
    /// Queue pairs.
    #[serde(default = "default_queues")]
    pub queues: u16,
    /// MTU the pod should use (result and configuration data).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Where petreld's (short) socket paths live.
    #[serde(default = "default_socket_dir")]
    pub socket_dir: PathBuf,
    /// The host directory shared with the pod, with `{K8S_POD_UID}`-style
    /// placeholders (any `CNI_ARGS` key, `{containerId}`, `{ifName}`).
    #[serde(default)]
    pub shared_dir: Option<String>,
    /// `uid:gid` (numeric) that gets the socket and its directory.
    #[serde(default)]
    pub socket_owner: Option<String>,
    /// Octal mode of the socket (`"0660"`).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// petreld's control socket.
    #[serde(default = "default_control")]
    pub control_socket: PathBuf,
    /// Create (and on DEL remove) the logical switch port in the NB.
    #[serde(default)]
    pub create_port: bool,
    /// The OVN Northbound (`ovn-nbctl --db=`), to create the LSP or read its addresses.
    #[serde(default)]
    pub nb_db: Option<String>,
    /// The `ovn-nbctl` program.
    #[serde(default = "default_nbctl")]
    pub nbctl: String,
    /// Set port security to the port's addresses when creating the LSP.
    #[serde(default = "default_true")]
    pub port_security: bool,
    /// Seconds ADD waits for petrel-ovn to bind the port (0: do not wait).
    #[serde(default)]
    pub bind_timeout: f64,
    /// Where attachment state is kept (for DEL and GC).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Delegated IPAM (`{"type": "host-local", ...}`).
    #[serde(default)]
    pub ipam: Option<Value>,
    /// Runtime capabilities.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The previous result (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: attachments to keep.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

fn default_mode() -> VhostMode {
    VhostMode::Server
}
fn default_queues() -> u16 {
    1
}
fn default_mtu() -> u32 {
    1500
}
fn default_socket_dir() -> PathBuf {
    PathBuf::from("/run/petrel/vhost")
}
fn default_socket_mode() -> String {
    "0660".to_owned()
}
fn default_control() -> PathBuf {
    PathBuf::from("/run/petrel/petreld.sock")
}
fn default_nbctl() -> String {
    "ovn-nbctl".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cni/petrel")
}

/// The longest socket directory: `<socketDir>/<12 hex>/<15-char ifname>.sock`
/// must fit in `sun_path` (108 bytes with its NUL).
pub const MAX_SOCKET_DIR: usize = 107 - (1 + 12 + 1 + 15 + 5);

/// The `cniVersion` of a raw configuration, or `None` if it has none (the
/// error is then reported in the newest version).
pub fn raw_version(raw: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_owned)
}

impl NetConf {
    /// Parses and checks a configuration.
    ///
    /// # Errors
    /// [`code::DECODE`] for bad JSON, [`code::INCOMPATIBLE_VERSION`],
    /// [`code::INVALID_CONFIG`] with the field and the fix.
    pub fn parse(raw: &[u8]) -> Result<Self, CniError> {
        let c: NetConf = serde_json::from_slice(raw).map_err(|e| {
            let what = if e.is_data() { code::INVALID_CONFIG } else { code::DECODE };
            CniError::new(what, format!("the network configuration on stdin does not parse: {e}"))
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), CniError> {
        let bad = |m: String| Err(CniError::new(code::INVALID_CONFIG, m));
        if !is_supported(&self.cni_version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported; petrel-cni speaks {}",
                    self.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if self.plugin_type != "petrel" {
            return bad(format!(
                "\"type\" is {:?}; this is the petrel plugin (\"type\": \"petrel\")",
                self.plugin_type
            ));
        }
        if self.name.is_empty() {
            return bad("\"name\" is empty; give the network a name".to_owned());
        }
        if !(1..=64).contains(&self.queues) {
            return bad(format!("\"queues\": {} is out of range 1..=64", self.queues));
        }
        if !(68..=65535).contains(&self.mtu) {
            return bad(format!("\"mtu\": {} is out of range 68..=65535", self.mtu));
        }
        let sd = self.socket_dir.to_string_lossy();
        if !self.socket_dir.is_absolute() {
            return bad(format!("\"socketDir\": {sd:?} must be an absolute path"));
        }
        if sd.len() > MAX_SOCKET_DIR {
            return bad(format!(
                "\"socketDir\": {sd:?} is {} bytes; sockets go to <socketDir>/<12 hex>/<ifname>.sock, which must fit \
                 in the 107 bytes of a Unix socket address, so socketDir may have at most {MAX_SOCKET_DIR} bytes: \
                 choose a shorter one (the pod's directory can be long: set sharedDir)",
                sd.len()
            ));
        }
        for (field, v) in [("socketDir", sd.as_ref()), ("controlSocket", &self.control_socket.to_string_lossy())] {
            if v.contains([',', '=', ';']) {
                return bad(format!("\"{field}\": {v:?} may not contain ',', '=' or ';' (petreld's port syntax)"));
            }
        }
        if let Some(s) = &self.shared_dir {
            if !s.starts_with('/') {
                return bad(format!("\"sharedDir\": {s:?} must be an absolute path"));
            }
        }
        self.owner()?;
        self.mode()?;
        if self.create_port {
            if self.nb_db.is_none() {
                return bad(
                    "\"createPort\": true needs \"nbDb\" (the OVN Northbound, as ovn-nbctl --db= takes it)".to_owned()
                );
            }
            if self.logical_switch.is_none() {
                return bad(
                    "\"createPort\": true needs \"logicalSwitch\" (the OVN switch to add the port to)".to_owned()
                );
            }
        }
        if !(0.0..=600.0).contains(&self.bind_timeout) {
            return bad(format!("\"bindTimeout\": {} must be between 0 and 600 seconds", self.bind_timeout));
        }
        if let Some(ipam) = &self.ipam {
            match ipam.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() && !t.contains('/') => {}
                _ => {
                    return bad("\"ipam\" needs a \"type\": the IPAM plugin's name in CNI_PATH (e.g. host-local)".into())
                }
            }
        }
        if let Some(mac) = &self.runtime_config.mac {
            if crate::attach::parse_mac(mac).is_none() {
                return bad(format!("runtimeConfig \"mac\": {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
        }
        Ok(())
    }

    /// `socketOwner` as `(uid, gid)`.
    ///
    /// # Errors
    /// [`code::INVALID_CONFIG`] if it is not `uid:gid` in numbers.
    pub fn owner(&self) -> Result<Option<(u32, u32)>, CniError> {
        let Some(o) = &self.socket_owner else { return Ok(None) };
        let parsed = o.split_once(':').and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        parsed.map(Some).ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("\"socketOwner\": {o:?} is not uid:gid in numbers (e.g. \"1000:1000\", the pod's runAsUser:fsGroup)"),
            )
        })
    }

    /// `socketMode` as bits.
    ///
    /// # Errors
    /// [`code::INVALID_CONFIG`] if it is not octal up to 0777.
    pub fn mode(&self) -> Result<u32, CniError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8).ok().filter(|m| *m <= 0o777).ok_or_else(
            || {
                CniError::new(
                    code::INVALID_CONFIG,
                    format!("\"socketMode\": {:?} is not an octal mode such as \"0660\"", self.socket_mode),
                )
            },
        )
    }

    /// The logical port name for a pod, in Kube-OVN's convention.
    pub fn logical_port(&self, pod: &str, namespace: &str) -> String {
        match self.provider.as_deref() {
            None | Some("") | Some("ovn") => format!("{pod}.{namespace}"),
            Some(p) => format!("{pod}.{namespace}.{p}"),
        }
    }

    /// The IPAM plugin's name, if IPAM is delegated.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref().and_then(|i| i.get("type")).and_then(Value::as_str)
    }
}

/// Expands `{KEY}` placeholders of `sharedDir`.
///
/// # Errors
/// [`code::INVALID_ENV`] if a placeholder has no value (`CNI_ARGS` lacks it).
pub fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, CniError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            CniError::new(code::INVALID_CONFIG, format!("\"sharedDir\": {template:?} has an unclosed '{{'"))
        })?;
        let key = &after[..close];
        let v = lookup(key).filter(|v| !v.is_empty()).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("\"sharedDir\" uses {{{key}}} but the runtime gave no {key} (in CNI_ARGS); set it or change sharedDir"),
            )
        })?;
        if v.contains('/') || v == ".." || v == "." {
            return Err(CniError::new(code::INVALID_ENV, format!("{key}={v:?} may not be used in a path")));
        }
        out.push_str(&v);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(extra: &str) -> Result<NetConf, CniError> {
        let s = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"petrel"{extra}}}"#);
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.vhost_mode, VhostMode::Server);
        assert_eq!(c.queues, 1);
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.socket_dir, PathBuf::from("/run/petrel/vhost"));
        assert_eq!(c.mode().unwrap(), 0o660);
        assert_eq!(c.owner().unwrap(), None);
        assert!(!c.create_port && c.port_security);
        assert_eq!(c.logical_port("pod1", "default"), "pod1.default");
    }

    #[test]
    fn provider_naming() {
        let c = parse(r#","provider":"dpdk.default.ovn""#).unwrap();
        assert_eq!(c.logical_port("p", "ns"), "p.ns.dpdk.default.ovn");
        let c = parse(r#","provider":"ovn""#).unwrap();
        assert_eq!(c.logical_port("p", "ns"), "p.ns");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases: &[(&str, u32, &str)] = &[
            (r#","queues":0"#, code::INVALID_CONFIG, "queues"),
            (r#","mtu":20"#, code::INVALID_CONFIG, "mtu"),
            (r#","vhostMode":"both""#, code::INVALID_CONFIG, "both"),
            (r#","socketDir":"relative""#, code::INVALID_CONFIG, "absolute"),
            (r#","socketOwner":"root""#, code::INVALID_CONFIG, "socketOwner"),
            (r#","socketMode":"rw""#, code::INVALID_CONFIG, "socketMode"),
            (r#","createPort":true"#, code::INVALID_CONFIG, "nbDb"),
            (r#","createPort":true,"nbDb":"unix:/x""#, code::INVALID_CONFIG, "logicalSwitch"),
            (r#","ipam":{}"#, code::INVALID_CONFIG, "type"),
            (r#","runtimeConfig":{"mac":"zz"}"#, code::INVALID_CONFIG, "mac"),
            (r#","socketDir":"/a,b""#, code::INVALID_CONFIG, "','"),
        ];
        for (extra, want, word) in cases {
            let e = parse(extra).unwrap_err();
            assert_eq!(e.code, *want, "{extra}: {e}");
            assert!(e.msg.contains(word), "{extra}: {e}");
        }
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"petrel"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("1.1.0"), "{e}");
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = NetConf::parse(br#"{"name":"n","type":"petrel"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
    }

    #[test]
    fn socket_dir_too_long_says_how_long_it_may_be() {
        let long = format!("/{}", "d".repeat(MAX_SOCKET_DIR));
        let e = parse(&format!(r#","socketDir":"{long}""#)).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains(&MAX_SOCKET_DIR.to_string()), "{e}");
        let ok = format!("/{}", "d".repeat(MAX_SOCKET_DIR - 1));
        parse(&format!(r#","socketDir":"{ok}""#)).unwrap();
    }

    #[test]
    fn expand_placeholders() {
        let look = |k: &str| match k {
            "K8S_POD_UID" => Some("1234-abcd".to_owned()),
            "EVIL" => Some("../x".to_owned()),
            _ => None,
        };
        assert_eq!(expand("/var/lib/kubelet/pods/{K8S_POD_UID}/v", look).unwrap(), "/var/lib/kubelet/pods/1234-abcd/v");
        assert_eq!(expand("/plain", look).unwrap(), "/plain");
        assert_eq!(expand("/x/{MISSING}", look).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(expand("/x/{EVIL}", look).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(expand("/x/{open", look).unwrap_err().code, code::INVALID_CONFIG);
    }
}
