//! The OVN Northbound, through `ovn-nbctl --db=...`: read a logical switch
//! port's addresses, create the port for a pod, remove it again.
//!
//! A port the plugin creates carries `external_ids:petrel-cni=<key>` (the
//! attachment key); DEL and GC remove only ports that carry their own key,
//! so a pod recreated under the same name (a StatefulSet) keeps its new port
//! when the old pod's DEL comes late.

use std::net::IpAddr;
use std::process::Command;

use serde_json::Value;

use crate::attach::parse_mac;
use crate::spec::{code, CniError, IpConfig};

/// The `external_ids` key of ports created by the plugin.
pub const OWNER_KEY: &str = "petrel-cni";

/// A Northbound reached with `ovn-nbctl`.
#[derive(Debug, Clone)]
pub struct Nb {
    /// The program.
    pub nbctl: String,
    /// `--db=`.
    pub db: String,
}

/// The columns of a logical switch port the plugin reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lsp {
    /// `addresses`.
    pub addresses: Vec<String>,
    /// `dynamic_addresses`.
    pub dynamic_addresses: Option<String>,
    /// `external_ids:petrel-cni`.
    pub owner: Option<String>,
}

impl Nb {
    /// Runs `ovn-nbctl --db=DB --timeout=10 ARGS`; its stdout.
    ///
    /// # Errors
    /// [`code::OVN_NB`] with ovn-nbctl's message.
    pub fn run(&self, args: &[&str]) -> Result<String, CniError> {
        let out = Command::new(&self.nbctl)
            .arg(format!("--db={}", self.db))
            .arg("--timeout=10")
            .args(args)
            .output()
            .map_err(|e| {
                CniError::new(
                    code::OVN_NB,
                    format!("cannot run {} (install ovn-central, or set \"nbctl\")", self.nbctl),
                )
                .details(e)
            })?;
        if !out.status.success() {
            return Err(CniError::new(
                code::OVN_NB,
                format!(
                    "ovn-nbctl --db={} {} failed: {}",
                    self.db,
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The port `name`, or `None`.
    ///
    /// # Errors
    /// [`code::OVN_NB`].
    pub fn port(&self, name: &str) -> Result<Option<Lsp>, CniError> {
        let out = self.run(&[
            "--format=json",
            "--columns=addresses,dynamic_addresses,external_ids",
            "find",
            "Logical_Switch_Port",
            &format!("name={}", quote(name)),
        ])?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| CniError::new(code::OVN_NB, "ovn-nbctl --format=json printed something else").details(e))?;
        let Some(row) = v.get("data").and_then(Value::as_array).and_then(|d| d.first()) else { return Ok(None) };
        let cols = row.as_array().map_or(&[][..], Vec::as_slice);
        let addresses = cols.first().map(strings).unwrap_or_default();
        let dynamic_addresses = cols.get(1).map(strings).and_then(|v| v.into_iter().next());
        let owner = cols.get(2).and_then(|m| map_get(m, OWNER_KEY));
        Ok(Some(Lsp { addresses, dynamic_addresses, owner }))
    }

    /// The prefix lengths of the switch that holds `port`: IPv4 from
    /// `other_config:subnet`, IPv6 64 if `other_config:ipv6_prefix` is
    /// set; host prefixes (32, 128) otherwise.
    ///
    /// # Errors
    /// [`code::OVN_NB`].
    pub fn prefixes(&self, port: &str) -> Result<(u8, u8), CniError> {
        let ls = self.run(&["lsp-get-ls", port])?;
        // "<uuid> (name)"
        let Some(uuid) = ls.split_whitespace().next() else { return Ok((32, 128)) };
        let get = |key: &str| -> Result<Option<String>, CniError> {
            let v = self.run(&["--if-exists", "get", "Logical_Switch", uuid, &format!("other_config:{key}")])?;
            let v = v.trim().trim_matches('"');
            Ok((!v.is_empty()).then(|| v.to_owned()))
        };
        let v4 = get("subnet")?.and_then(|s| s.split_once('/').and_then(|(_, p)| p.parse().ok())).unwrap_or(32);
        let v6 = if get("ipv6_prefix")?.is_some() { 64 } else { 128 };
        Ok((v4, v6))
    }

    /// Creates the port `name` on `switch` (or takes it over if it exists)
    /// with `addresses` (`"MAC IP..."` or `"dynamic"`), marks it as the
    /// attachment's, and waits until ovn-northd has seen it (so
    /// `dynamic_addresses` is filled in).
    ///
    /// # Errors
    /// [`code::OVN_NB`].
    pub fn create(&self, switch: &str, name: &str, addresses: &str, owner: &str) -> Result<(), CniError> {
        self.run(&[
            "--wait=sb",
            "--may-exist",
            "lsp-add",
            switch,
            name,
            "--",
            "lsp-set-addresses",
            name,
            addresses,
            "--",
            "set",
            "Logical_Switch_Port",
            name,
            &format!("external_ids:{OWNER_KEY}={}", quote(owner)),
        ])
        .map(drop)
    }

    /// Sets port security to `addresses`.
    ///
    /// # Errors
    /// [`code::OVN_NB`].
    pub fn set_port_security(&self, name: &str, addresses: &str) -> Result<(), CniError> {
        self.run(&["lsp-set-port-security", name, addresses]).map(drop)
    }

    /// Removes the port if it is the attachment's (`owner`); true if it did.
    ///
    /// # Errors
    /// [`code::OVN_NB`].
    pub fn delete_if_owned(&self, name: &str, owner: &str) -> Result<bool, CniError> {
        match self.port(name)? {
            Some(p) if p.owner.as_deref() == Some(owner) => {
                self.run(&["--if-exists", "lsp-del", name])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// An OVSDB string in ovn-nbctl's syntax.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Strings of an OVSDB JSON value: an atom, `["set", [...]]`.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.first().and_then(Value::as_str) == Some("set") => a
            .get(1)
            .and_then(Value::as_array)
            .map(|x| x.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `key` of an OVSDB JSON map `["map", [[k, v], ...]]`.
fn map_get(v: &Value, key: &str) -> Option<String> {
    let pairs = v.as_array().filter(|a| a.first().and_then(Value::as_str) == Some("map"))?.get(1)?.as_array()?;
    pairs.iter().find_map(|p| {
        let p = p.as_array()?;
        (p.first()?.as_str()? == key).then(|| p.get(1)?.as_str().map(str::to_owned))?
    })
}

/// The MAC and IPs of a port, from `addresses` (first entry with a MAC;
/// `"dynamic"` or `"MAC dynamic"` take `dynamic_addresses`).
pub fn port_addresses(lsp: &Lsp) -> Option<(String, Vec<IpAddr>)> {
    for a in &lsp.addresses {
        let words: Vec<&str> = a.split_whitespace().collect();
        let dynamic = words.contains(&"dynamic");
        if dynamic {
            if let Some(d) = lsp.dynamic_addresses.as_deref().and_then(parse_entry) {
                return Some(d);
            }
            continue;
        }
        if let Some(e) = parse_entry(a) {
            return Some(e);
        }
    }
    None
}

/// `"MAC [IP...]"`.
fn parse_entry(e: &str) -> Option<(String, Vec<IpAddr>)> {
    let mut w = e.split_whitespace();
    let mac = parse_mac(w.next()?)?;
    let ips = w.filter_map(|x| x.split('/').next()?.parse().ok()).collect();
    Some((mac, ips))
}

/// Addresses as result entries, with the switch's prefix lengths.
pub fn as_ip_configs(ips: &[IpAddr], (v4, v6): (u8, u8)) -> Vec<IpConfig> {
    ips.iter()
        .map(|ip| IpConfig {
            address: format!("{ip}/{}", if ip.is_ipv4() { v4 } else { v6 }),
            gateway: None,
            interface: Some(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn ovsdb_json_values() {
        assert_eq!(strings(&json!("a b")), vec!["a b"]);
        assert_eq!(strings(&json!(["set", ["x", "y"]])), vec!["x", "y"]);
        assert!(strings(&json!(["set", []])).is_empty());
        let m = json!(["map", [["petrel-cni", "abc"], ["other", "x"]]]);
        assert_eq!(map_get(&m, "petrel-cni").as_deref(), Some("abc"));
        assert_eq!(map_get(&m, "nope"), None);
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
    }

    #[test]
    fn addresses_static_dynamic_and_none() {
        let st = Lsp { addresses: vec!["00:00:00:00:00:01 10.0.0.1 fd00::1".into()], ..Default::default() };
        let (mac, ips) = port_addresses(&st).unwrap();
        assert_eq!(mac, "00:00:00:00:00:01");
        assert_eq!(ips.len(), 2);
        let cfg = as_ip_configs(&ips, (24, 64));
        assert_eq!(cfg[0].address, "10.0.0.1/24");
        assert_eq!(cfg[1].address, "fd00::1/64");
        let dy = Lsp {
            addresses: vec!["dynamic".into()],
            dynamic_addresses: Some("0a:00:00:00:00:05 10.0.0.5".into()),
            owner: None,
        };
        assert_eq!(port_addresses(&dy).unwrap().0, "0a:00:00:00:00:05");
        let pending = Lsp { addresses: vec!["dynamic".into()], ..Default::default() };
        assert_eq!(port_addresses(&pending), None);
        let unknown = Lsp { addresses: vec!["unknown".into(), "router".into()], ..Default::default() };
        assert_eq!(port_addresses(&unknown), None);
    }
}
