//! OVN's port mirrors for petreld's remote mirror sessions.
//!
//! ovn-controller (`controller/mirror.c`) makes, for every Southbound
//! `Mirror` linked from the `mirror_rules` of a local port, one OVS mirror
//! whose output is a tunnel interface of type `gre` or `erspan` to
//! `Mirror.sink` (`key` = `Mirror.index`, and for ERSPAN `erspan_ver=1`,
//! `erspan_idx` = index); `from-lport` rules add the port to the mirror's
//! `select_src_port` (what the port sends), `to-lport` to its
//! `select_dst_port` (what it is given). One mirror, one tunnel, however
//! many ports use it.
//!
//! petrel-ovn does the same with petreld: one remote session per `Mirror`
//! row used by a port bound directly to a petreld port (its `iface-id=`),
//! with the petreld ports using it, handed over whole with a `mirror sync`
//! request whenever it changes, or when petreld restarted. petreld checks
//! what it cannot run (a sink that is not an IP address, an index the
//! type cannot carry) and lists it as refused. Container (child) ports share their parent's
//! petreld port and are not mirrored, as for QoS.

use std::collections::BTreeMap;

use petrel_dataplane::action::gre::MirrorKind;
use petrel_dataplane::ctl::features::{Direction, MirrorRequest, RemoteMirror};
use petrel_dataplane::ctl::{Client, ClientError};

use crate::ovsdb::Replica;
use crate::sb::{Mirror, PortBinding, SbTable};

/// The session of one Southbound `Mirror` row (without ports), or why
/// it is not one.
pub fn session_of(m: &Mirror) -> Result<RemoteMirror, String> {
    let kind = match m.r#type.as_str() {
        "gre" => MirrorKind::Gre,
        "erspan" => MirrorKind::Erspan,
        t => return Err(format!("type {t:?}")),
    };
    let direction = match m.filter.as_str() {
        "from-lport" => Direction::Ingress,
        "to-lport" => Direction::Egress,
        f => return Err(format!("filter {f:?}")),
    };
    Ok(RemoteMirror { name: m.name.clone(), kind, sink: m.sink.clone(), index: m.index, direction, ports: Vec::new() })
}

/// The remote mirror sessions OVN asks for, for petreld's ports
/// `(index, name, iface-id)`, sorted by mirror name.
pub fn ovn_mirrors(replica: &Replica, ports: &[(u16, String, Option<String>)]) -> Vec<RemoteMirror> {
    let by_iface: BTreeMap<&str, &str> = ports
        .iter()
        .filter_map(|(_, name, iface)| iface.as_deref().filter(|s| !s.is_empty()).map(|i| (i, name.as_str())))
        .collect();
    let mut out: BTreeMap<String, RemoteMirror> = BTreeMap::new();
    if by_iface.is_empty() {
        return Vec::new();
    }
    for pb in PortBinding::all(replica) {
        if pb.mirror_rules.is_empty() {
            continue;
        }
        let Some(port) = by_iface.get(pb.logical_port.as_str()) else { continue };
        if pb.parent_port.as_deref().is_some_and(|p| !p.is_empty()) {
            continue;
        }
        for u in &pb.mirror_rules {
            let Some(m) = Mirror::get(replica, u) else { continue };
            let s = match session_of(&m) {
                Ok(s) => s,
                Err(why) => {
                    petrel_obs::warn_limited!(1, mirror = %m.name, "Southbound mirror not understood: {why}");
                    continue;
                }
            };
            let e = out.entry(m.name.clone()).or_insert(s);
            e.ports.push((*port).to_owned());
        }
    }
    out.into_values()
        .map(|mut m| {
            m.ports.sort();
            m.ports.dedup();
            m
        })
        .collect()
}

/// What was last handed to which petreld instance.
#[derive(Debug, Default)]
pub struct MirrorSync {
    last: Option<(String, Vec<RemoteMirror>)>,
}

impl MirrorSync {
    /// Sends `want` to petreld (instance `instance`) unless it already has
    /// it. Returns whether petreld has it now.
    ///
    /// # Errors
    /// The connection failed (the caller reconnects).
    pub fn sync(&mut self, client: &mut Client, instance: &str, want: Vec<RemoteMirror>) -> Result<bool, ClientError> {
        if self.last.as_ref().is_some_and(|(i, l)| i == instance && *l == want) {
            return Ok(true);
        }
        match client.mirror(MirrorRequest::Sync { remote: want.clone() }) {
            Ok(r) => {
                let refused: Vec<String> = r
                    .remote
                    .iter()
                    .filter_map(|i| Some(format!("{}: {}", i.mirror.as_ref()?.name, i.refused.as_ref()?)))
                    .collect();
                tracing::info!(n_mirrors = want.len(), "mirrors from OVN handed to petreld");
                if !refused.is_empty() {
                    tracing::warn!("petreld refused OVN mirrors: {}", refused.join("; "));
                }
                self.last = Some((instance.to_owned(), want));
                Ok(true)
            }
            Err(ClientError::Remote(e)) => {
                if self.last.as_ref().is_none_or(|(i, _)| i != instance) {
                    tracing::warn!("petreld refused OVN's mirrors: {}", e.message);
                }
                self.last = Some((instance.to_owned(), want));
                Ok(false)
            }
            Err(e) => {
                tracing::warn!("handing mirrors to petreld failed: {e}");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(kind: &str, filter: &str) -> Mirror {
        Mirror {
            uuid: uuid::Uuid::nil(),
            name: "m1".into(),
            filter: filter.into(),
            sink: "192.0.2.9".into(),
            r#type: kind.into(),
            index: 7,
            external_ids: BTreeMap::new(),
        }
    }

    #[test]
    fn test_session_of_row() {
        let s = session_of(&row("gre", "from-lport")).unwrap();
        assert_eq!(
            (s.kind, s.direction, s.index, s.sink.as_str()),
            (MirrorKind::Gre, Direction::Ingress, 7, "192.0.2.9")
        );
        let s = session_of(&row("erspan", "to-lport")).unwrap();
        assert_eq!((s.kind, s.direction), (MirrorKind::Erspan, Direction::Egress));
        assert!(session_of(&row("local", "to-lport")).is_err());
        assert!(session_of(&row("gre", "both")).is_err());
    }
}
