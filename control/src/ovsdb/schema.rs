//! OVSDB schemas (RFC 7047 §3.2), parsed from `get_schema` replies or
//! `.ovsschema` files.
//!
//! Only what a client needs is kept: column types (atomic key and value
//! types, min/max, reference targets), mutability and the table flags.
//! Columns are kept sorted by name, and a row of a table stores its values in
//! that order (see [`crate::ovsdb::Row`]); `_uuid` and `_version` are not
//! columns here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::datum::{Atom, Datum};

/// Errors while reading a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum SchemaError {
    /// schema is not a JSON object with `name` and `tables`
    NotASchema,
    /// table {table}, column {column}: bad type `{ty}`
    BadColumnType {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// The JSON text of the type.
        ty: String,
    },
    /// table {0}: no `columns` object
    BadTable(String),
}

/// The atomic types of RFC 7047 §3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomicType {
    /// 64-bit signed integer.
    Integer,
    /// IEEE double.
    Real,
    /// true/false.
    Boolean,
    /// UTF-8 string.
    String,
    /// A UUID (a reference when `refTable` is set).
    Uuid,
}

impl AtomicType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }

    /// The default atom of this type (RFC 7047 §5.1 defaults: 0, 0.0,
    /// false, "", all-zero UUID).
    pub fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(uuid::Uuid::nil()),
        }
    }
}

impl fmt::Display for AtomicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        })
    }
}

/// A `<base-type>`: an atomic type plus, for UUIDs, its reference target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseType {
    /// The atomic type.
    pub atomic: AtomicType,
    /// `refTable`, for references.
    pub ref_table: Option<String>,
    /// `refType` is "weak" (default "strong").
    pub weak: bool,
}

impl BaseType {
    fn parse(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(BaseType { atomic: AtomicType::parse(s)?, ref_table: None, weak: false }),
            Value::Object(o) => Some(BaseType {
                atomic: AtomicType::parse(o.get("type")?.as_str()?)?,
                ref_table: o.get("refTable").and_then(Value::as_str).map(str::to_owned),
                weak: o.get("refType").and_then(Value::as_str) == Some("weak"),
            }),
            _ => None,
        }
    }
}

/// A column `<type>`: key, optional value (then it is a map), min and max
/// (`max == None` is "unlimited").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// Key (or element) type.
    pub key: BaseType,
    /// Value type, for maps.
    pub value: Option<BaseType>,
    /// Minimum number of elements (0 or 1).
    pub min: u64,
    /// Maximum number of elements; `None` is unlimited.
    pub max: Option<u64>,
}

impl ColumnType {
    fn parse(v: &Value) -> Option<Self> {
        if let Value::String(_) = v {
            return Some(ColumnType { key: BaseType::parse(v)?, value: None, min: 1, max: Some(1) });
        }
        let o = v.as_object()?;
        let key = BaseType::parse(o.get("key")?)?;
        let value = match o.get("value") {
            Some(v) => Some(BaseType::parse(v)?),
            None => None,
        };
        let min = match o.get("min") {
            Some(m) => m.as_u64()?,
            None => 1,
        };
        let max = match o.get("max") {
            None => Some(1),
            Some(Value::String(s)) if s == "unlimited" => None,
            Some(m) => Some(m.as_u64()?),
        };
        Some(ColumnType { key, value, min, max })
    }

    /// Whether an update2 "modify" carries this column's new value rather
    /// than a diff: scalars and optional scalars (at most one atom, no
    /// value). ovsdb-server sends e.g. `["set", []]` when an optional
    /// reference is cleared, which as a diff would change nothing.
    pub fn modify_replaces(&self) -> bool {
        self.value.is_none() && self.max == Some(1)
    }

    /// Exactly one atom, no value: `ovsdb_type_is_scalar()`.
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == Some(1)
    }

    /// A key→value map.
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// Zero or one atom.
    pub fn is_optional(&self) -> bool {
        self.value.is_none() && self.min == 0 && self.max == Some(1)
    }

    /// The value a column has when nothing was written to it.
    pub fn default_datum(&self) -> Datum {
        if self.min == 0 {
            if self.is_map() {
                Datum::Map(Vec::new())
            } else {
                Datum::Set(Vec::new())
            }
        } else if let Some(v) = &self.value {
            Datum::Map(vec![(self.key.atomic.default_atom(), v.atomic.default_atom())])
        } else {
            Datum::Set(vec![self.key.atomic.default_atom()])
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.max.map_or("unlimited".to_owned(), |m| m.to_string());
        match &self.value {
            Some(v) => write!(f, "map {}→{} [{}..{}]", self.key.atomic, v.atomic, self.min, max),
            None if self.is_scalar() => write!(f, "{}", self.key.atomic),
            None => write!(f, "set of {} [{}..{}]", self.key.atomic, self.min, max),
        }
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// `mutable` (default true).
    pub mutable: bool,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns sorted by name; a row's values follow this order.
    pub columns: Vec<ColumnSchema>,
    index: BTreeMap<String, usize>,
    /// `isRoot`.
    pub is_root: bool,
    /// `indexes`: sets of column names that are unique.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// Position of a column in a row, if the table has it.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.column_index(name).map(|i| &self.columns[i])
    }
}

/// A database schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSchema {
    /// Database name (`OVN_Southbound`).
    pub name: String,
    /// Schema version.
    pub version: String,
    /// Tables by name.
    pub tables: BTreeMap<String, Arc<TableSchema>>,
}

impl DatabaseSchema {
    /// Parses a `<database-schema>` JSON object.
    ///
    /// # Errors
    ///
    /// [`SchemaError`] naming the table and column that could not be read.
    pub fn from_json(v: &Value) -> Result<Self, SchemaError> {
        let o = v.as_object().ok_or(SchemaError::NotASchema)?;
        let name = o.get("name").and_then(Value::as_str).ok_or(SchemaError::NotASchema)?.to_owned();
        let version = o.get("version").and_then(Value::as_str).unwrap_or_default().to_owned();
        let tables_json = o.get("tables").and_then(Value::as_object).ok_or(SchemaError::NotASchema)?;
        let mut tables = BTreeMap::new();
        for (tname, t) in tables_json {
            let cols =
                t.get("columns").and_then(Value::as_object).ok_or_else(|| SchemaError::BadTable(tname.clone()))?;
            let mut columns = Vec::with_capacity(cols.len());
            for (cname, c) in cols {
                let ty = c.get("type").and_then(ColumnType::parse).ok_or_else(|| SchemaError::BadColumnType {
                    table: tname.clone(),
                    column: cname.clone(),
                    ty: c.get("type").map(Value::to_string).unwrap_or_default(),
                })?;
                let mutable = c.get("mutable").and_then(Value::as_bool).unwrap_or(true);
                columns.push(ColumnSchema { name: cname.clone(), ty, mutable });
            }
            columns.sort_by(|a, b| a.name.cmp(&b.name));
            let index = columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
            let indexes = t
                .get("indexes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_array)
                        .map(|cols| cols.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .collect()
                })
                .unwrap_or_default();
            tables.insert(
                tname.clone(),
                Arc::new(TableSchema {
                    name: tname.clone(),
                    columns,
                    index,
                    is_root: t.get("isRoot").and_then(Value::as_bool).unwrap_or(false),
                    indexes,
                }),
            );
        }
        Ok(DatabaseSchema { name, version, tables })
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&Arc<TableSchema>> {
        self.tables.get(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_parse_sb_schema() {
        let Ok(text) = std::fs::read_to_string("/usr/share/ovn/ovn-sb.ovsschema") else {
            return; // ovn-common not installed: the integration tests say so loudly.
        };
        let s = DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(s.name, "OVN_Southbound");
        let pb = s.table("Port_Binding").unwrap();
        let chassis = pb.column("chassis").unwrap();
        assert!(chassis.ty.is_optional());
        assert_eq!(chassis.ty.key.ref_table.as_deref(), Some("Chassis"));
        assert!(chassis.ty.key.weak);
        assert!(pb.column("options").unwrap().ty.is_map());
        assert!(pb.column("logical_port").unwrap().ty.is_scalar());
        assert_eq!(s.table("Chassis").unwrap().indexes, vec![vec!["name".to_owned()]]);
    }
}
