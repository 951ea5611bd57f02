//! Typed model of the OVN Southbound database (ovn-sb(5), OVN 23.03,
//! schema 20.27).
//!
//! Each typed table is a plain struct with one field per column, the field
//! named like the column (`type` is `r#type`). [`check_schema`] verifies at
//! connect time that the server's schema has every column with a type the
//! field can hold, so decoding a row of a checked schema cannot fail; a
//! mismatch names the table and column. [`decode_change`] turns the
//! replica's row changes into typed [`SbEvent`]s for incremental consumers.
//!
//! [`monitor`] says which rows a chassis monitors (conditional
//! monitoring, ovn-controller's `ovn-monitor-all=false`).
//!
//! Column types map to fields as: scalar → `String`/`i64`/`bool`/`Uuid`/
//! `f64`; optional (min 0, max 1) → `Option<_>`; set → `Vec<_>` (sorted);
//! string map → `BTreeMap<String, String>`.

use std::collections::BTreeMap;

use uuid::Uuid;

pub mod monitor;

use crate::ovsdb::{Atom, AtomicType, ColumnType, DatabaseSchema, Datum, Error, Replica, Row, RowChange};

/// The Southbound database name.
pub const DATABASE: &str = "OVN_Southbound";

/// A Rust type that can hold an OVSDB column.
pub trait Column: Sized {
    /// Decodes a datum of a column that [`Column::fits`].
    fn decode(d: &Datum) -> Option<Self>;
    /// Whether a column of this type can be decoded.
    fn fits(ty: &ColumnType) -> bool;
    /// The expected column type, for error messages.
    fn expected() -> String;
}

/// A Rust type that holds one atom.
pub trait AtomValue: Sized {
    /// Its atomic type.
    const TYPE: AtomicType;
    /// Decodes an atom.
    fn from_atom(a: &Atom) -> Option<Self>;
}

macro_rules! atom_value {
    ($t:ty, $at:ident, $m:ident, $conv:expr) => {
        impl AtomValue for $t {
            const TYPE: AtomicType = AtomicType::$at;
            fn from_atom(a: &Atom) -> Option<Self> {
                a.$m().map($conv)
            }
        }
        impl Column for $t {
            fn decode(d: &Datum) -> Option<Self> {
                d.as_scalar().and_then(<$t as AtomValue>::from_atom)
            }
            fn fits(ty: &ColumnType) -> bool {
                ty.is_scalar() && ty.key.atomic == AtomicType::$at
            }
            fn expected() -> String {
                AtomicType::$at.to_string()
            }
        }
    };
}

atom_value!(String, String, as_str, str::to_owned);
atom_value!(i64, Integer, as_integer, |i| i);
atom_value!(bool, Boolean, as_boolean, |b| b);
atom_value!(Uuid, Uuid, as_uuid, |u| u);
atom_value!(f64, Real, as_real, |r| r);

impl<T: AtomValue> Column for Option<T> {
    fn decode(d: &Datum) -> Option<Self> {
        match d.atoms() {
            [] => Some(None),
            [a] => T::from_atom(a).map(Some),
            _ => None,
        }
    }
    fn fits(ty: &ColumnType) -> bool {
        ty.value.is_none() && ty.max == Some(1) && ty.key.atomic == T::TYPE
    }
    fn expected() -> String {
        format!("optional {}", T::TYPE)
    }
}

impl<T: AtomValue> Column for Vec<T> {
    fn decode(d: &Datum) -> Option<Self> {
        if let Datum::Map(_) = d {
            return None;
        }
        d.atoms().iter().map(T::from_atom).collect()
    }
    fn fits(ty: &ColumnType) -> bool {
        ty.value.is_none() && ty.key.atomic == T::TYPE
    }
    fn expected() -> String {
        format!("set of {}", T::TYPE)
    }
}

impl Column for BTreeMap<String, String> {
    fn decode(d: &Datum) -> Option<Self> {
        if let Datum::Set(_) = d {
            return None;
        }
        d.pairs().iter().map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned()))).collect()
    }
    fn fits(ty: &ColumnType) -> bool {
        ty.key.atomic == AtomicType::String && ty.value.as_ref().is_some_and(|v| v.atomic == AtomicType::String)
    }
    fn expected() -> String {
        "map string→string".to_owned()
    }
}

/// One column a typed table needs.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    /// Column name.
    pub name: &'static str,
    /// Whether the server's type fits the field.
    pub fits: fn(&ColumnType) -> bool,
    /// The expected type, for error messages.
    pub expected: fn() -> String,
}

/// A typed Southbound table.
pub trait SbTable: Sized {
    /// Table name.
    const TABLE: &'static str;
    /// The columns the struct holds.
    const COLUMNS: &'static [ColumnSpec];
    /// Decodes a row.
    ///
    /// # Errors
    ///
    /// [`Error::BadRow`] if a column is missing or does not fit (never for a
    /// schema that passed [`check_schema`]).
    fn from_row(uuid: Uuid, row: &Row) -> Result<Self, Error>;

    /// Every row of the table in `replica`, decoded; rows that do not
    /// decode are skipped (see [`SbTable::from_row`]).
    fn all(replica: &Replica) -> Vec<Self> {
        replica.rows(Self::TABLE).filter_map(|(u, r)| Self::from_row(*u, r).ok()).collect()
    }

    /// One row by UUID.
    fn get(replica: &Replica, uuid: &Uuid) -> Option<Self> {
        replica.get(Self::TABLE, uuid).and_then(|r| Self::from_row(*uuid, r).ok())
    }
}

fn decode<T: Column>(row: &Row, column: &str) -> Result<T, Error> {
    let bad = |reason: String| Error::BadRow { table: row.table().name.clone(), column: column.to_owned(), reason };
    let d = row.get(column).ok_or_else(|| bad("no such column".to_owned()))?;
    T::decode(d).ok_or_else(|| bad(format!("expected {}, got {}", T::expected(), d.to_json())))
}

/// A typed change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    /// A new row.
    Insert(T),
    /// A changed row.
    Update {
        /// Before.
        old: T,
        /// After.
        new: T,
    },
    /// A deleted row (its last contents).
    Delete(T),
}

fn change<T: SbTable>(ch: &RowChange) -> Result<Change<T>, Error> {
    let dec = |r: &Row| T::from_row(ch.uuid, r);
    Ok(match (&ch.old, &ch.new) {
        (None, Some(n)) => Change::Insert(dec(n)?),
        (Some(o), Some(n)) => Change::Update { old: dec(o)?, new: dec(n)? },
        (Some(o), None) => Change::Delete(dec(o)?),
        (None, None) => return Err(Error::BadUpdate(format!("{} {}: empty change", T::TABLE, ch.uuid))),
    })
}

/// Column name of a field: the field's name unless given.
macro_rules! colname {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident $c:literal) => {
        $c
    };
}

macro_rules! sb_tables {
    ($(
        $(#[$doc:meta])*
        $ty:ident = $table:literal {
            $( $(#[$fdoc:meta])* $field:ident $([$col:literal])? : $fty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $ty {
                /// Row UUID.
                pub uuid: Uuid,
                $( $(#[$fdoc])* pub $field: $fty, )*
            }

            impl SbTable for $ty {
                const TABLE: &'static str = $table;
                const COLUMNS: &'static [ColumnSpec] = &[$(
                    ColumnSpec {
                        name: colname!($field $($col)?),
                        fits: <$fty as Column>::fits,
                        expected: <$fty as Column>::expected,
                    }
                ),*];
                fn from_row(uuid: Uuid, row: &Row) -> Result<Self, Error> {
                    Ok($ty { uuid, $( $field: decode(row, colname!($field $($col)?))?, )* })
                }
            }
        )*

        /// Every typed table with its columns.
        pub const TABLES: &[(&str, &[ColumnSpec])] = &[$( ($table, <$ty as SbTable>::COLUMNS) ),*];

        /// A typed change of a Southbound row.
        // Events are decoded and consumed one at a time; boxing the large
        // Port_Binding variant would cost an allocation per event instead.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum SbEvent {
            $( $(#[$doc])* $ty(Change<$ty>), )*
            /// A row of a table without a typed model.
            Other(String, Uuid),
        }

        /// Decodes a replica row change.
        ///
        /// # Errors
        ///
        /// [`Error::BadRow`] if a row does not decode (never for a schema
        /// that passed [`check_schema`]).
        pub fn decode_change(ch: &RowChange) -> Result<SbEvent, Error> {
            Ok(match ch.table.name.as_str() {
                $( $table => SbEvent::$ty(change::<$ty>(ch)?), )*
                other => SbEvent::Other(other.to_owned(), ch.uuid),
            })
        }
    };
}

type Map = BTreeMap<String, String>;

sb_tables! {
    /// `SB_Global`: one row; `nb_cfg` drives `ovn-nbctl --wait`.
    SbGlobal = "SB_Global" {
        /// Sequence number copied from NB by ovn-northd.
        nb_cfg: i64,
        /// External ids.
        external_ids: Map,
        /// Global options.
        options: Map,
        /// IPsec enabled.
        ipsec: bool,
    }
    /// `Chassis`: one per hypervisor.
    Chassis = "Chassis" {
        /// System id.
        name: String,
        /// Hostname.
        hostname: String,
        /// `Encap` rows.
        encaps: Vec<Uuid>,
        /// Deprecated nb_cfg (now in `Chassis_Private`).
        nb_cfg: i64,
        /// External ids.
        external_ids: Map,
        /// Capabilities and configuration (`datapath-type`, `iface-types`, ...).
        other_config: Map,
        /// Transport zones.
        transport_zones: Vec<String>,
        /// VTEP logical switches.
        vtep_logical_switches: Vec<String>,
    }
    /// `Chassis_Private`: columns only the chassis itself writes.
    ChassisPrivate = "Chassis_Private" {
        /// System id.
        name: String,
        /// The `Chassis` row.
        chassis: Option<Uuid>,
        /// Last `SB_Global.nb_cfg` this chassis has processed.
        nb_cfg: i64,
        /// When it processed it (ms since the epoch).
        nb_cfg_timestamp: i64,
        /// External ids.
        external_ids: Map,
    }
    /// `Encap`: a tunnel endpoint of a chassis.
    Encap = "Encap" {
        /// `geneve`, `stt` or `vxlan`.
        r#type ["type"]: String,
        /// Options (`csum`, `dst_port`).
        options: Map,
        /// Tunnel IP.
        ip: String,
        /// Owning chassis name.
        chassis_name: String,
    }
    /// `Datapath_Binding`: a logical switch or router.
    DatapathBinding = "Datapath_Binding" {
        /// The 24-bit Geneve VNI.
        tunnel_key: i64,
        /// Load balancers (deprecated).
        load_balancers: Vec<Uuid>,
        /// External ids (`logical-switch`, `name`, ...).
        external_ids: Map,
    }
    /// `Port_Binding`: a logical port and where it is bound.
    PortBinding = "Port_Binding" {
        /// Logical port name (matches `iface-id`).
        logical_port: String,
        /// Port type (`""` for a VIF, `patch`, `localnet`, ...).
        r#type ["type"]: String,
        /// Gateway chassis.
        gateway_chassis: Vec<Uuid>,
        /// HA chassis group.
        ha_chassis_group: Option<Uuid>,
        /// Options (`requested-chassis`, `peer`, ...).
        options: Map,
        /// Datapath.
        datapath: Uuid,
        /// Port key within the datapath.
        tunnel_key: i64,
        /// Parent port (container ports).
        parent_port: Option<String>,
        /// VLAN tag.
        tag: Option<i64>,
        /// Virtual parent.
        virtual_parent: Option<String>,
        /// The chassis that claimed the port.
        chassis: Option<Uuid>,
        /// Additional chassis (multi-chassis ports).
        additional_chassis: Vec<Uuid>,
        /// Encap used to reach the port.
        encap: Option<Uuid>,
        /// Encaps of the additional chassis.
        additional_encap: Vec<Uuid>,
        /// Mirror rules.
        mirror_rules: Vec<Uuid>,
        /// MAC (and IP) addresses.
        mac: Vec<String>,
        /// Port security addresses.
        port_security: Vec<String>,
        /// NAT addresses.
        nat_addresses: Vec<String>,
        /// Set by the chassis once the port is ready.
        up: Option<bool>,
        /// External ids.
        external_ids: Map,
        /// Chassis named by `options:requested-chassis`, resolved by northd.
        requested_chassis: Option<Uuid>,
        /// Additional requested chassis.
        requested_additional_chassis: Vec<Uuid>,
    }
    /// `Logical_Flow`.
    LogicalFlow = "Logical_Flow" {
        /// Datapath (or `logical_dp_group`).
        logical_datapath: Option<Uuid>,
        /// Datapath group.
        logical_dp_group: Option<Uuid>,
        /// `ingress` or `egress`.
        pipeline: String,
        /// Table.
        table_id: i64,
        /// Priority.
        priority: i64,
        /// Match expression.
        r#match ["match"]: String,
        /// Actions.
        actions: String,
        /// Tags.
        tags: Map,
        /// Controller meter.
        controller_meter: Option<String>,
        /// External ids (`stage-name`, `source`, ...).
        external_ids: Map,
    }
    /// `Logical_DP_Group`.
    LogicalDpGroup = "Logical_DP_Group" {
        /// Datapaths.
        datapaths: Vec<Uuid>,
    }
    /// `Multicast_Group`.
    MulticastGroup = "Multicast_Group" {
        /// Datapath.
        datapath: Uuid,
        /// Name.
        name: String,
        /// Key ≥ 32768.
        tunnel_key: i64,
        /// Member ports.
        ports: Vec<Uuid>,
    }
    /// `MAC_Binding`.
    MacBinding = "MAC_Binding" {
        /// Logical port.
        logical_port: String,
        /// IP.
        ip: String,
        /// MAC.
        mac: String,
        /// Last refresh (ms).
        timestamp: i64,
        /// Datapath.
        datapath: Uuid,
    }
    /// `FDB`.
    Fdb = "FDB" {
        /// MAC.
        mac: String,
        /// Datapath key.
        dp_key: i64,
        /// Port key.
        port_key: i64,
    }
    /// `Port_Group`.
    PortGroup = "Port_Group" {
        /// Name.
        name: String,
        /// Port names.
        ports: Vec<String>,
    }
    /// `Address_Set`.
    AddressSet = "Address_Set" {
        /// Name.
        name: String,
        /// Addresses.
        addresses: Vec<String>,
    }
    /// `Meter`.
    Meter = "Meter" {
        /// Name.
        name: String,
        /// `kbps` or `pktps`.
        unit: String,
        /// Bands.
        bands: Vec<Uuid>,
    }
    /// `Meter_Band`.
    MeterBand = "Meter_Band" {
        /// `drop`.
        action: String,
        /// Rate.
        rate: i64,
        /// Burst size.
        burst_size: i64,
    }
    /// `Mirror`.
    Mirror = "Mirror" {
        /// Name.
        name: String,
        /// `from-lport` or `to-lport`.
        filter: String,
        /// Sink (IP or port).
        sink: String,
        /// `gre` or `erspan`.
        r#type ["type"]: String,
        /// Tunnel index.
        index: i64,
        /// External ids.
        external_ids: Map,
    }
    /// `Load_Balancer`.
    LoadBalancer = "Load_Balancer" {
        /// Name.
        name: String,
        /// VIP → backends.
        vips: Map,
        /// Protocol.
        protocol: Option<String>,
        /// Datapaths.
        datapaths: Vec<Uuid>,
        /// Datapath group.
        datapath_group: Option<Uuid>,
        /// Options.
        options: Map,
        /// External ids.
        external_ids: Map,
    }
    /// `DHCP_Options`: the DHCP options ovn-controller knows.
    DhcpOptions = "DHCP_Options" {
        /// Option name.
        name: String,
        /// Option code.
        code: i64,
        /// Value type.
        r#type ["type"]: String,
    }
    /// `Chassis_Template_Var`.
    ChassisTemplateVar = "Chassis_Template_Var" {
        /// Chassis name.
        chassis: String,
        /// Variables.
        variables: Map,
    }
}

/// The tables every Petrel build relies on; the others are checked only if
/// the server has them.
pub const REQUIRED_TABLES: &[&str] =
    &["SB_Global", "Chassis", "Chassis_Private", "Encap", "Datapath_Binding", "Port_Binding"];

/// Checks that the server's schema has every typed column with a fitting
/// type. Use as [`crate::ovsdb::SessionConfig::schema_check`].
///
/// # Errors
///
/// [`Error::SchemaMismatch`] naming the first table and column that does
/// not fit.
pub fn check_schema(schema: &DatabaseSchema) -> Result<(), Error> {
    if schema.name != DATABASE {
        return Err(Error::SchemaMismatch {
            table: String::new(),
            column: String::new(),
            reason: format!("database is {}, not {DATABASE}", schema.name),
        });
    }
    for (table, columns) in TABLES {
        let Some(t) = schema.table(table) else {
            if REQUIRED_TABLES.contains(table) {
                return Err(Error::SchemaMismatch {
                    table: (*table).to_owned(),
                    column: String::new(),
                    reason: "table missing".to_owned(),
                });
            }
            continue;
        };
        for c in *columns {
            let mismatch = |reason: String| Error::SchemaMismatch {
                table: (*table).to_owned(),
                column: c.name.to_owned(),
                reason,
            };
            let col = t.column(c.name).ok_or_else(|| mismatch("column missing".to_owned()))?;
            if !(c.fits)(&col.ty) {
                return Err(mismatch(format!("expected {}, server has {}", (c.expected)(), col.ty)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    fn sb_schema_json() -> Option<Value> {
        let text = std::fs::read_to_string("/usr/share/ovn/ovn-sb.ovsschema").ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn test_check_schema_accepts_ovn_23_03() {
        let Some(j) = sb_schema_json() else { return };
        check_schema(&DatabaseSchema::from_json(&j).unwrap()).unwrap();
    }

    #[test]
    fn test_check_schema_names_table_and_column() {
        let Some(mut j) = sb_schema_json() else { return };
        j["tables"]["Port_Binding"]["columns"]["up"]["type"] = serde_json::json!("string");
        let e = check_schema(&DatabaseSchema::from_json(&j).unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "schema mismatch: table Port_Binding, column up: expected optional boolean, server has string"
        );
        let mut j = sb_schema_json().unwrap();
        j["tables"]["Chassis"]["columns"].as_object_mut().unwrap().remove("hostname");
        let e = check_schema(&DatabaseSchema::from_json(&j).unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "schema mismatch: table Chassis, column hostname: column missing");
    }
}
