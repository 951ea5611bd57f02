//! OVN's port QoS for petreld's policers.
//!
//! ovn-controller reads `Port_Binding.options:qos_max_rate` (bit/s) and
//! `qos_burst` (bits) of its local VIFs and shapes the traffic *from* the
//! logical port (`controller/binding.c`, `setup_qos`); Kube-OVN's pod rate
//! annotations end up there. petrel-ovn turns them into the ingress
//! policer (what the pod sends) of the petreld port carrying that logical
//! port, and hands petreld the whole set with a `qos sync` request whenever
//! it changes, or when petreld restarted. An operator's `petrelctl qos set`
//! takes precedence in petreld, per direction.
//!
//! Only ports bound directly to a petreld port (its `iface-id=`) are
//! policed; container (child) ports share their parent's petreld port and
//! are not.

use std::collections::BTreeMap;

use petrel_dataplane::ctl::features::QosRequest;
use petrel_dataplane::ctl::{Client, ClientError};
use petrel_dataplane::qos::{PortQos, RateSpec, Unit};

use crate::ovsdb::Replica;
use crate::sb::{PortBinding, SbTable};

/// The policers OVN asks for, by petreld port name, for petreld's ports
/// `(index, name, iface-id)`.
pub fn ovn_port_qos(replica: &Replica, ports: &[(u16, String, Option<String>)]) -> BTreeMap<String, PortQos> {
    let by_iface: BTreeMap<&str, &str> = ports
        .iter()
        .filter_map(|(_, name, iface)| iface.as_deref().filter(|s| !s.is_empty()).map(|i| (i, name.as_str())))
        .collect();
    let mut out = BTreeMap::new();
    if by_iface.is_empty() {
        return out;
    }
    for pb in PortBinding::all(replica) {
        let Some(port) = by_iface.get(pb.logical_port.as_str()) else { continue };
        if pb.parent_port.as_deref().is_some_and(|p| !p.is_empty()) {
            continue;
        }
        if let Some(q) = port_qos(&pb.options) {
            out.insert((*port).to_owned(), q);
        }
    }
    out
}

/// The policer of one `Port_Binding`'s options, if it has a rate.
pub fn port_qos(options: &BTreeMap<String, String>) -> Option<PortQos> {
    let num = |k: &str| options.get(k).and_then(|v| v.trim().parse::<u64>().ok()).filter(|v| *v > 0);
    let rate = num("qos_max_rate")?;
    Some(PortQos { ingress: Some(RateSpec { rate, burst: num("qos_burst"), unit: Unit::Bits }), egress: None })
}

/// What was last handed to which petreld instance.
#[derive(Debug, Default)]
pub struct QosSync {
    last: Option<(String, BTreeMap<String, PortQos>)>,
}

impl QosSync {
    /// Sends `want` to petreld (instance `instance`) unless it already has
    /// it. Returns whether petreld has it now.
    ///
    /// # Errors
    /// The connection failed (the caller reconnects).
    pub fn sync(
        &mut self,
        client: &mut Client,
        instance: &str,
        want: BTreeMap<String, PortQos>,
    ) -> Result<bool, ClientError> {
        if self.last.as_ref().is_some_and(|(i, l)| i == instance && *l == want) {
            return Ok(true);
        }
        match client.qos(QosRequest::Sync { ports: want.clone() }) {
            Ok(_) => {
                tracing::info!(n_ports = want.len(), "QoS from OVN handed to petreld");
                self.last = Some((instance.to_owned(), want));
                Ok(true)
            }
            Err(ClientError::Remote(e)) => {
                // An older petreld without policers: say so once per instance.
                if self.last.as_ref().is_none_or(|(i, _)| i != instance) {
                    tracing::warn!("petreld refused OVN's QoS: {}", e.message);
                }
                self.last = Some((instance.to_owned(), want));
                Ok(false)
            }
            Err(e) => {
                tracing::warn!("handing QoS to petreld failed: {e}");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_port_qos_from_options() {
        let o = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(port_qos(&o(&[])), None);
        assert_eq!(port_qos(&o(&[("qos_burst", "1000")])), None, "a burst alone is no policer");
        assert_eq!(port_qos(&o(&[("qos_max_rate", "0")])), None, "0 means no limit");
        let q = port_qos(&o(&[("qos_max_rate", "10000000"), ("qos_burst", "200000")])).unwrap();
        assert_eq!(q.ingress, Some(RateSpec { rate: 10_000_000, burst: Some(200_000), unit: Unit::Bits }));
        assert_eq!(q.egress, None);
        let q = port_qos(&o(&[("qos_max_rate", "5000")])).unwrap();
        assert_eq!(q.ingress.unwrap().burst, None);
    }
}
