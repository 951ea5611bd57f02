//! IPAM delegation (CNI spec "Delegated Plugins"): the IPAM plugin named by
//! `ipam.type` is found in `CNI_PATH` and run with the same environment and
//! the network configuration on stdin.
//!
//! Versions are negotiated: Debian 12's `host-local` (containernetworking-
//! plugins 1.1.1) speaks up to 1.0.0, so for a 1.1.0 network the delegate
//! gets the newest version both speak; IPAM results are the same from 0.3.0
//! on apart from the IP `version` field, which is ignored. Commands the
//! delegate does not know (`GC`, `STATUS` before 1.1.0) are not sent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::spec::{self, code, CniError, IpConfig};

/// What an IPAM plugin allocated.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpamResult {
    /// Addresses (with gateways).
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Value>,
    /// DNS.
    #[serde(default)]
    pub dns: Value,
}

/// A delegated IPAM plugin.
#[derive(Debug, Clone)]
pub struct Delegate {
    /// Its executable.
    pub exe: PathBuf,
    /// Versions it speaks.
    pub supported: Vec<String>,
}

impl Delegate {
    /// Finds `plugin` in `cni_path` and asks it for its versions.
    ///
    /// # Errors
    /// [`code::INVALID_ENV`] if `CNI_PATH` is empty, [`code::INVALID_CONFIG`]
    /// if the plugin is not there, [`code::IPAM`] if VERSION fails.
    pub fn find(plugin: &str, cni_path: &[PathBuf]) -> Result<Self, CniError> {
        if cni_path.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_PATH is empty, so the IPAM plugin {plugin:?} cannot be found; the runtime must set CNI_PATH"
                ),
            ));
        }
        let exe = cni_path.iter().map(|d| d.join(plugin)).find(|p| p.is_file()).ok_or_else(|| {
            let dirs: Vec<String> = cni_path.iter().map(|d| d.display().to_string()).collect();
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "IPAM plugin {plugin:?} is not in CNI_PATH ({}); install it (Debian: containernetworking-plugins) \
                     or fix \"ipam\".\"type\"",
                    dirs.join(":")
                ),
            )
        })?;
        let out = run(&exe, "VERSION", br#"{"cniVersion":"0.3.0"}"#, &[])?;
        let supported = out
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Delegate { exe, supported })
    }

    /// The version to talk to the delegate in for a network of `ours`:
    /// ours if it speaks it, else the newest older one we both speak.
    ///
    /// # Errors
    /// [`code::INCOMPATIBLE_VERSION`] if there is none.
    pub fn version_for(&self, ours: &str) -> Result<String, CniError> {
        if self.supported.iter().any(|v| v == ours) {
            return Ok(ours.to_owned());
        }
        spec::SUPPORTED_VERSIONS
            .iter()
            .rev()
            .filter(|v| spec::version_tuple(v) <= spec::version_tuple(ours))
            .find(|v| self.supported.iter().any(|s| s == *v))
            .map(|v| (*v).to_owned())
            .ok_or_else(|| {
                CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!(
                        "IPAM plugin {} speaks {:?}, none of which petrel-cni can use for cniVersion {ours}",
                        self.exe.display(),
                        self.supported
                    ),
                )
            })
    }

    /// Whether the delegate knows `command` (GC and STATUS need 1.1.0).
    pub fn knows(&self, command: &str) -> bool {
        match command {
            "GC" | "STATUS" => self.supported.iter().any(|v| spec::version_tuple(v) >= (1, 1, 0)),
            "CHECK" => self.supported.iter().any(|v| spec::version_tuple(v) >= (0, 4, 0)),
            _ => true,
        }
    }

    /// Runs `command` with `conf` (the whole network configuration) in the
    /// negotiated version; `prev` becomes `prevResult` (CHECK).
    ///
    /// # Errors
    /// [`code::IPAM`] with the delegate's own message.
    pub fn exec(
        &self,
        command: &str,
        conf: &Value,
        prev: Option<Value>,
        env: &[(&str, String)],
    ) -> Result<Value, CniError> {
        let ours = conf.get("cniVersion").and_then(Value::as_str).unwrap_or(spec::LATEST);
        let version = self.version_for(ours)?;
        let mut c = conf.clone();
        c["cniVersion"] = Value::String(version);
        if let Some(o) = c.as_object_mut() {
            o.remove("prevResult");
        }
        if let Some(p) = prev {
            c["prevResult"] = p;
        }
        let stdin =
            serde_json::to_vec(&c).map_err(|e| CniError::new(code::IPAM, "cannot encode IPAM config").details(e))?;
        run(&self.exe, command, &stdin, env)
    }

    /// ADD: the addresses.
    ///
    /// # Errors
    /// As [`Delegate::exec`]; [`code::IPAM`] if the result has no address.
    pub fn add(&self, conf: &Value, env: &[(&str, String)]) -> Result<IpamResult, CniError> {
        let out = self.exec("ADD", conf, None, env)?;
        let r: IpamResult = serde_json::from_value(out).map_err(|e| {
            CniError::new(
                code::IPAM,
                format!("IPAM plugin {} returned a result petrel-cni cannot read", self.exe.display()),
            )
            .details(e)
        })?;
        if r.ips.is_empty() {
            return Err(CniError::new(code::IPAM, format!("IPAM plugin {} allocated no address", self.exe.display())));
        }
        Ok(r)
    }
}

/// Runs a plugin: `CNI_COMMAND=command`, `extra` env on top of ours, `stdin`;
/// parses its stdout (empty is `null`, as DEL prints nothing).
fn run(exe: &Path, command: &str, stdin: &[u8], extra: &[(&str, String)]) -> Result<Value, CniError> {
    let mut cmd = Command::new(exe);
    cmd.env("CNI_COMMAND", command).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CniError::new(code::IPAM, format!("cannot run IPAM plugin {}", exe.display())).details(e))?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin that exits without reading its stdin is answered below.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IPAM, format!("IPAM plugin {} failed", exe.display())).details(e))?;
    let v: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(code::IPAM, format!("IPAM plugin {} printed something that is not JSON", exe.display()))
                .details(format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
        })?
    };
    if !out.status.success() {
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .map_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned(), str::to_owned);
        let name = exe.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        return Err(CniError::new(code::IPAM, format!("IPAM plugin {name} failed {command}: {msg}"))
            .details(v.get("details").and_then(Value::as_str).unwrap_or_default()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn negotiates_down_to_what_the_delegate_speaks() {
        let d = Delegate {
            exe: PathBuf::from("/x/host-local"),
            supported: vec!["0.3.1".into(), "0.4.0".into(), "1.0.0".into()],
        };
        assert_eq!(d.version_for("1.1.0").unwrap(), "1.0.0");
        assert_eq!(d.version_for("0.4.0").unwrap(), "0.4.0");
        assert!(!d.knows("GC") && d.knows("CHECK") && d.knows("ADD"));
        let old = Delegate { exe: PathBuf::from("/x/old"), supported: vec!["0.1.0".into()] };
        assert_eq!(old.version_for("1.0.0").unwrap_err().code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn missing_plugin_or_path() {
        assert_eq!(Delegate::find("host-local", &[]).unwrap_err().code, code::INVALID_ENV);
        let d = tempfile::tempdir().unwrap();
        let e = Delegate::find("no-such-ipam", &[d.path().to_owned()]).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("no-such-ipam"), "{e}");
    }

    #[test]
    fn reads_results_of_old_and_new_versions() {
        let r: IpamResult = serde_json::from_str(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/24","gateway":"10.1.0.1"}],"dns":{}}"#,
        )
        .unwrap();
        assert_eq!(r.ips[0].address, "10.1.0.2/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.1.0.1"));
    }
}
