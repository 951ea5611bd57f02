//! Conditional monitoring of the Southbound: which rows a chassis needs,
//! like ovn-controller's `update_sb_monitors` with `ovn-monitor-all=false`.
//!
//! A chassis needs the logical flows, port bindings, multicast groups,
//! MAC bindings, FDB entries and datapath bindings of its *local
//! datapaths* only: the datapath of every local or claimed port, plus every
//! datapath connected to one of those through patch ports (a logical
//! router and the switches behind it), transitively. [`Scope::compute`]
//! derives that set from the replica and [`Scope::conditions`] turns it
//! into `monitor_cond` `where` clauses, one per conditional table; the
//! other tables (`Chassis`, `Encap`, `SB_Global`, `Port_Group`, ...) are
//! monitored whole.
//!
//! Invariants the clauses keep, so the scope can always be recomputed from
//! what the replica holds:
//! - every `Port_Binding` of type `patch` is monitored, so the links
//!   between datapaths are known before their datapaths are local (a VIF
//!   on a switch makes the router behind it local at once);
//! - the `Port_Binding` of every local iface-id is monitored by name, and
//!   every one bound to or requested for this chassis by its UUID, so
//!   claims and releases never wait for the datapath to be local;
//! - `Logical_Flow` rows that use a datapath group are all monitored (as
//!   ovn-controller does): northd replaces a group by a new row when its
//!   datapaths change and re-points the flows in the same transaction, and
//!   a condition on group UUIDs would drop those flows and bring them back
//!   one round trip later. `Logical_DP_Group` rows are monitored when they
//!   include a local datapath, so a flow whose group is absent from the
//!   replica is not for this chassis;
//! - `FDB` is keyed by datapath tunnel key, which needs the local
//!   `Datapath_Binding` rows first: the scope converges in two steps.
//!
//! An empty clause list is `[false]` (no row), never `[]`, which would
//! mean every row to some servers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::ovsdb::{Atom, Replica, Row};

/// Tables whose monitor [`Scope::conditions`] restricts.
pub const CONDITIONAL_TABLES: &[&str] = &[
    "Port_Binding",
    "Logical_Flow",
    "Logical_DP_Group",
    "Multicast_Group",
    "MAC_Binding",
    "FDB",
    "Datapath_Binding",
    "IP_Multicast",
    "DNS",
    "Controller_Event",
    "IGMP_Group",
    "Chassis_Template_Var",
];

/// Port types always monitored: `patch` links datapaths; `chassisredirect`
/// and `external` ports may be scheduled on this chassis through gateway
/// or HA chassis groups that a condition cannot follow (ovn-controller
/// monitors them the same way).
const ALWAYS_PORT_TYPES: &[&str] = &["patch", "chassisredirect", "external"];

/// What this chassis monitors: the inputs of the conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// System id (`Chassis.name`).
    pub system_id: String,
    /// This chassis' `Chassis` row, once it exists.
    pub chassis: Option<Uuid>,
    /// Local iface-ids.
    pub iface_ids: BTreeSet<String>,
    /// Local datapaths (`Datapath_Binding` UUIDs).
    pub datapaths: BTreeSet<Uuid>,
    /// Tunnel keys of the local datapaths whose `Datapath_Binding` is in
    /// the replica.
    pub dp_keys: BTreeSet<i64>,
}

fn scalar_str<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
    row.get(column).and_then(|d| d.as_scalar()).and_then(|a| a.as_str())
}

impl Scope {
    /// The scope before anything is known: the local ports by name only.
    pub fn initial(system_id: &str, iface_ids: &BTreeSet<String>) -> Scope {
        Scope { system_id: system_id.to_owned(), iface_ids: iface_ids.clone(), ..Scope::default() }
    }

    /// The scope the replica calls for: local datapaths are those of the
    /// ports named by `iface_ids` or bound to this chassis, closed over
    /// patch ports (`Port_Binding.type = patch`, `options:peer`).
    pub fn compute(replica: &Replica, system_id: &str, iface_ids: &BTreeSet<String>) -> Scope {
        let chassis = replica.rows("Chassis").find(|(_, r)| scalar_str(r, "name") == Some(system_id)).map(|(u, _)| *u);

        let mut seeds = Vec::new();
        // datapath → peers' port names; patch port name → its datapath.
        let mut peers: HashMap<Uuid, Vec<&str>> = HashMap::new();
        let mut patch_dp: HashMap<&str, Uuid> = HashMap::new();
        let peer_key = Atom::from("peer");
        // Column positions once, not a name lookup per row and column: this
        // runs after every Port_Binding change, over thousands of rows.
        let pb_columns = replica.schema().table("Port_Binding").and_then(|t| {
            let i = |c: &str| t.column_index(c);
            Some((i("datapath")?, i("logical_port")?, i("type")?, i("chassis")?, i("options")?))
        });
        if let Some((i_dp, i_lp, i_type, i_chassis, i_options)) = pb_columns {
            for (_, row) in replica.rows("Port_Binding") {
                let v = row.values();
                let Some(dp) = v[i_dp].as_scalar().and_then(|a| a.as_uuid()) else { continue };
                let name = v[i_lp].as_scalar().and_then(|a| a.as_str()).unwrap_or_default();
                if v[i_type].as_scalar().and_then(|a| a.as_str()) == Some("patch") {
                    patch_dp.insert(name, dp);
                    if let Some(peer) = v[i_options].get(&peer_key).and_then(|a| a.as_str()) {
                        peers.entry(dp).or_default().push(peer);
                    }
                }
                let bound_here = chassis.is_some() && v[i_chassis].as_scalar().and_then(|a| a.as_uuid()) == chassis;
                if bound_here || iface_ids.contains(name) {
                    seeds.push(dp);
                }
            }
        }

        let mut datapaths = BTreeSet::new();
        while let Some(dp) = seeds.pop() {
            if !datapaths.insert(dp) {
                continue;
            }
            for peer in peers.get(&dp).into_iter().flatten() {
                if let Some(&next) = patch_dp.get(peer) {
                    seeds.push(next);
                }
            }
        }
        let dp_keys = datapaths
            .iter()
            .filter_map(|dp| replica.get("Datapath_Binding", dp))
            .filter_map(|r| r.get("tunnel_key").and_then(|d| d.as_scalar()).and_then(|a| a.as_integer()))
            .collect();
        Scope { system_id: system_id.to_owned(), chassis, iface_ids: iface_ids.clone(), datapaths, dp_keys }
    }

    /// The `where` clause of every table of [`CONDITIONAL_TABLES`].
    pub fn conditions(&self) -> BTreeMap<String, Value> {
        let dps: Vec<Value> = self.datapaths.iter().map(|u| json!(["uuid", u.to_string()])).collect();
        let per_dp = |column: &str| -> Vec<Value> { dps.iter().map(|d| json!([column, "==", d])).collect() };
        let per_dp_includes =
            |column: &str| -> Vec<Value> { dps.iter().map(|d| json!([column, "includes", ["set", [d]]])).collect() };
        let ours = self.chassis.map(|c| json!(["uuid", c.to_string()]));
        let by_chassis = |column: &str| -> Vec<Value> { ours.iter().map(|c| json!([column, "==", c])).collect() };

        let mut pb: Vec<Value> = ALWAYS_PORT_TYPES.iter().map(|t| json!(["type", "==", t])).collect();
        for id in &self.iface_ids {
            pb.push(json!(["logical_port", "==", id]));
            pb.push(json!(["parent_port", "==", id]));
        }
        pb.extend(by_chassis("chassis"));
        pb.extend(by_chassis("requested_chassis"));
        for key in ["l2gateway-chassis", "l3gateway-chassis"] {
            pb.push(json!(["options", "includes", ["map", [[key, self.system_id]]]]));
        }
        pb.extend(per_dp("datapath"));

        let mut lf = per_dp("logical_datapath");
        if !lf.is_empty() {
            lf.push(json!(["logical_dp_group", "!=", ["set", []]]));
        }

        let clauses = [
            ("Port_Binding", pb),
            ("Logical_Flow", lf),
            ("Logical_DP_Group", per_dp_includes("datapaths")),
            ("Multicast_Group", per_dp("datapath")),
            ("MAC_Binding", per_dp("datapath")),
            ("FDB", self.dp_keys.iter().map(|k| json!(["dp_key", "==", k])).collect()),
            ("Datapath_Binding", per_dp("_uuid")),
            ("IP_Multicast", per_dp("datapath")),
            ("DNS", per_dp_includes("datapaths")),
            ("Controller_Event", by_chassis("chassis")),
            ("IGMP_Group", by_chassis("chassis")),
            ("Chassis_Template_Var", vec![json!(["chassis", "==", self.system_id])]),
        ];
        clauses
            .into_iter()
            .map(|(t, c)| (t.to_owned(), if c.is_empty() { json!([false]) } else { Value::Array(c) }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ovsdb::DatabaseSchema;
    use std::sync::Arc;

    const HV: &str = "00000000-0000-0000-0000-0000000000c1";
    const LS1: &str = "00000000-0000-0000-0000-0000000000d1";
    const LS2: &str = "00000000-0000-0000-0000-0000000000d2";
    const LR: &str = "00000000-0000-0000-0000-0000000000d3";
    const LS3: &str = "00000000-0000-0000-0000-0000000000d4";

    fn replica(ports: Value) -> Option<Replica> {
        let text = std::fs::read_to_string("/usr/share/ovn/ovn-sb.ovsschema").ok()?;
        let schema = DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        let mut r = Replica::new(Arc::new(schema));
        let updates = json!({
            "Chassis": {HV: {"initial": {"name": "hv1", "hostname": "h"}}},
            "Datapath_Binding": {
                LS1: {"initial": {"tunnel_key": 1}},
                LR: {"initial": {"tunnel_key": 3}},
            },
            "Port_Binding": ports,
        });
        r.apply_update2(&updates, &mut Vec::new()).unwrap();
        Some(r)
    }

    fn pb(n: u8, name: &str, dp: &str, extra: Value) -> (String, Value) {
        let mut row = json!({"logical_port": name, "datapath": ["uuid", dp], "tunnel_key": n});
        for (k, v) in extra.as_object().unwrap() {
            row[k] = v.clone();
        }
        (format!("00000000-0000-0000-0000-0000000001{n:02x}"), json!({"initial": row}))
    }

    fn patch(n: u8, name: &str, dp: &str, peer: &str) -> (String, Value) {
        pb(n, name, dp, json!({"type": "patch", "options": ["map", [["peer", peer]]]}))
    }

    fn ids(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn uuids(names: &[&str]) -> BTreeSet<Uuid> {
        names.iter().map(|s| Uuid::parse_str(s).unwrap()).collect()
    }

    #[test]
    fn test_local_datapaths_follow_patch_ports() {
        let ports = Value::Object(
            [
                pb(1, "vif1", LS1, json!({})),
                pb(2, "vif2", LS2, json!({})),
                pb(3, "bound", LS3, json!({"chassis": ["uuid", HV]})),
                patch(4, "ls1-lr", LS1, "lr-ls1"),
                patch(5, "lr-ls1", LR, "ls1-lr"),
                patch(6, "lr-ls2", LR, "ls2-lr"),
                patch(7, "ls2-lr", LS2, "lr-ls2"),
            ]
            .into_iter()
            .collect(),
        );
        let Some(r) = replica(ports) else { return };
        // vif1 on ls1 reaches the router and, through it, ls2; the port
        // bound here adds ls3.
        let s = Scope::compute(&r, "hv1", &ids(&["vif1"]));
        assert_eq!(s.chassis, Some(Uuid::parse_str(HV).unwrap()));
        assert_eq!(s.datapaths, uuids(&[LS1, LS2, LR, LS3]));
        // Only the Datapath_Binding rows present give tunnel keys.
        assert_eq!(s.dp_keys, [1, 3].into_iter().collect());
        // Another chassis: nothing bound, no iface: nothing local.
        let s = Scope::compute(&r, "hv2", &ids(&[]));
        assert!(s.datapaths.is_empty() && s.chassis.is_none());
        let s = Scope::compute(&r, "hv2", &ids(&["vif2"]));
        assert_eq!(s.datapaths, uuids(&[LS1, LS2, LR]));
    }

    #[test]
    fn test_conditions() {
        let s = Scope::initial("hv1", &ids(&["a"]));
        let c = s.conditions();
        assert_eq!(c.len(), CONDITIONAL_TABLES.len());
        assert!(CONDITIONAL_TABLES.iter().all(|t| c.contains_key(*t)));
        assert_eq!(c["Logical_Flow"], json!([false]));
        assert_eq!(c["FDB"], json!([false]));
        let pb = c["Port_Binding"].as_array().unwrap();
        assert!(pb.contains(&json!(["type", "==", "patch"])));
        assert!(pb.contains(&json!(["logical_port", "==", "a"])));
        assert!(pb.contains(&json!(["options", "includes", ["map", [["l3gateway-chassis", "hv1"]]]])));

        let mut s = s;
        s.chassis = Some(Uuid::parse_str(HV).unwrap());
        s.datapaths = uuids(&[LS1]);
        s.dp_keys = [7].into_iter().collect();
        let c = s.conditions();
        let dp = json!(["uuid", LS1]);
        assert_eq!(c["Logical_Flow"], json!([["logical_datapath", "==", dp], ["logical_dp_group", "!=", ["set", []]]]));
        assert_eq!(c["Datapath_Binding"], json!([["_uuid", "==", dp]]));
        assert_eq!(c["Logical_DP_Group"], json!([["datapaths", "includes", ["set", [dp]]]]));
        assert_eq!(c["FDB"], json!([["dp_key", "==", 7]]));
        assert_eq!(c["IGMP_Group"], json!([["chassis", "==", ["uuid", HV]]]));
        assert!(c["Port_Binding"].as_array().unwrap().contains(&json!(["requested_chassis", "==", ["uuid", HV]])));
    }
}
