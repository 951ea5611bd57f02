//! Schema-driven parsing of `<table-updates2>` (ovsdb-server(7)) straight
//! into rows, without building a `serde_json::Value` tree first.
//!
//! A Southbound initial dump is tens of MiB of JSON; as a `Value` tree it
//! costs several times that in memory before a single row exists. Parsing
//! with the column types at hand ([`serde::de::DeserializeSeed`]) produces
//! [`Datum`]s directly, and rejects a value that does not fit its column
//! with an error naming the table and column.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use uuid::Uuid;

use super::datum::{Atom, Datum};
use super::replica::Row;
use super::schema::{AtomicType, ColumnType, DatabaseSchema, TableSchema};
use super::Error;

/// One `<row-update2>`.
#[derive(Debug, Clone)]
pub enum RowUpdate {
    /// `initial`: a row of the initial contents.
    Initial(Row),
    /// `insert`: a new row.
    Insert(Row),
    /// `modify`: changed columns (index into the table's columns, value or
    /// diff per [`ColumnType::modify_replaces`]).
    Modify(Vec<(usize, Datum)>),
    /// `delete`.
    Delete,
}

/// The updates of one table.
#[derive(Debug, Clone)]
pub struct TableUpdate {
    /// The table.
    pub table: Arc<TableSchema>,
    /// Row updates by UUID.
    pub rows: Vec<(Uuid, RowUpdate)>,
}

/// A parsed `<table-updates2>`.
pub type TableUpdates = Vec<TableUpdate>;

/// Parses a `<table-updates2>` of `schema` from JSON text.
///
/// # Errors
///
/// [`Error::BadUpdate`] naming the table (and column) that does not fit.
pub fn parse_updates(schema: &DatabaseSchema, json: &str) -> Result<TableUpdates, Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed = UpdatesSeed(schema).deserialize(&mut de).map_err(|e| Error::BadUpdate(e.to_string()))?;
    de.end().map_err(|e| Error::BadUpdate(e.to_string()))?;
    Ok(parsed)
}

/// Seed that parses a `<table-updates2>` of `schema`.
#[derive(Debug, Clone, Copy)]
pub struct UpdatesSeed<'a>(pub &'a DatabaseSchema);

impl<'de> DeserializeSeed<'de> for UpdatesSeed<'_> {
    type Value = TableUpdates;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TableUpdates, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for UpdatesSeed<'_> {
    type Value = TableUpdates;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a <table-updates2> object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TableUpdates, A::Error> {
        let mut out = Vec::new();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let table = self.0.table(&name).ok_or_else(|| de::Error::custom(format!("unknown table {name}")))?.clone();
            let rows = map.next_value_seed(RowsSeed(&table))?;
            out.push(TableUpdate { table, rows });
        }
        Ok(out)
    }
}

struct RowsSeed<'a>(&'a Arc<TableSchema>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Vec<(Uuid, RowUpdate)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = Vec<(Uuid, RowUpdate)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row updates of table {}", self.0.name)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(u) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let uuid = Uuid::parse_str(&u)
                .map_err(|_| de::Error::custom(format!("table {}: bad row uuid {u}", self.0.name)))?;
            let update = map.next_value_seed(RowUpdateSeed(self.0))?;
            out.push((uuid, update));
        }
        Ok(out)
    }
}

struct RowUpdateSeed<'a>(&'a Arc<TableSchema>);

impl<'de> DeserializeSeed<'de> for RowUpdateSeed<'_> {
    type Value = RowUpdate;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RowUpdate, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowUpdateSeed<'_> {
    type Value = RowUpdate;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a <row-update2> object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowUpdate, A::Error> {
        let kind = map
            .next_key::<std::borrow::Cow<'de, str>>()?
            .ok_or_else(|| de::Error::custom(format!("table {}: empty <row-update2>", self.0.name)))?;
        let update = match &*kind {
            "initial" => RowUpdate::Initial(map.next_value_seed(FullRowSeed(self.0))?),
            "insert" => RowUpdate::Insert(map.next_value_seed(FullRowSeed(self.0))?),
            "modify" => RowUpdate::Modify(map.next_value_seed(PartialRowSeed(self.0))?),
            "delete" => {
                map.next_value::<IgnoredAny>()?;
                RowUpdate::Delete
            }
            other => return Err(de::Error::custom(format!("table {}: unknown update {other}", self.0.name))),
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!("table {}: <row-update2> with two members", self.0.name)));
        }
        Ok(update)
    }
}

/// A `<row>` as (column index, value) pairs; unknown columns and
/// `_version`/`_uuid` are skipped.
struct PartialRowSeed<'a>(&'a Arc<TableSchema>);

impl<'de> DeserializeSeed<'de> for PartialRowSeed<'_> {
    type Value = Vec<(usize, Datum)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PartialRowSeed<'_> {
    type Value = Vec<(usize, Datum)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a <row> of table {}", self.0.name)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let t = self.0;
        let mut out = Vec::new();
        while let Some(c) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match t.column_index(&c) {
                Some(i) => {
                    let d = map
                        .next_value_seed(DatumSeed(&t.columns[i].ty))
                        .map_err(|e| de::Error::custom(format!("table {}, column {c}: {e}", t.name)))?;
                    out.push((i, d));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A whole row: the given columns, defaults for the others.
struct FullRowSeed<'a>(&'a Arc<TableSchema>);

impl<'de> DeserializeSeed<'de> for FullRowSeed<'_> {
    type Value = Row;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        let values = PartialRowSeed(self.0).deserialize(d)?;
        let mut row = Row::with_defaults(self.0.clone());
        for (i, v) in values {
            row.set_value(i, v);
        }
        Ok(row)
    }
}

/// A `<value>` of a column type.
#[derive(Debug, Clone, Copy)]
pub struct DatumSeed<'a>(pub &'a ColumnType);

impl<'de> DeserializeSeed<'de> for DatumSeed<'_> {
    type Value = Datum;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DatumSeed<'_> {
    type Value = Datum;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of type {}", self.0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        self.scalar(AtomSeed(self.0.key.atomic).visit_i64(v)?)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        self.scalar(AtomSeed(self.0.key.atomic).visit_u64(v)?)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        self.scalar(AtomSeed(self.0.key.atomic).visit_f64(v)?)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        self.scalar(AtomSeed(self.0.key.atomic).visit_bool(v)?)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
        self.scalar(AtomSeed(self.0.key.atomic).visit_str(v)?)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let tag = seq.next_element::<std::borrow::Cow<'de, str>>()?.ok_or_else(|| de::Error::custom("empty array"))?;
        let d = match (&*tag, &self.0.value) {
            ("uuid", None) => {
                let s =
                    seq.next_element::<std::borrow::Cow<'de, str>>()?.ok_or_else(|| de::Error::custom("bad uuid"))?;
                let atom = uuid_atom(self.0.key.atomic, &s)?;
                Datum::Set(vec![atom])
            }
            ("set", None) => {
                let atoms =
                    seq.next_element_seed(AtomsSeed(self.0.key.atomic))?.ok_or_else(|| de::Error::custom("bad set"))?;
                Datum::set(atoms)
            }
            ("map", Some(v)) => {
                let pairs = seq
                    .next_element_seed(PairsSeed(self.0.key.atomic, v.atomic))?
                    .ok_or_else(|| de::Error::custom("bad map"))?;
                Datum::map(pairs)
            }
            (other, _) => return Err(de::Error::custom(format!("unexpected [\"{other}\", ...] for type {}", self.0))),
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("trailing elements"));
        }
        Ok(d)
    }
}

impl DatumSeed<'_> {
    fn scalar<E: de::Error>(self, atom: Atom) -> Result<Datum, E> {
        if self.0.value.is_some() {
            return Err(E::custom(format!("expected a map for type {}", self.0)));
        }
        Ok(Datum::Set(vec![atom]))
    }
}

fn uuid_atom<E: de::Error>(ty: AtomicType, s: &str) -> Result<Atom, E> {
    if ty != AtomicType::Uuid {
        return Err(E::custom(format!("expected {ty}, got a uuid")));
    }
    Uuid::parse_str(s).map(Atom::Uuid).map_err(|_| E::custom(format!("bad uuid {s}")))
}

/// One atom of a type.
#[derive(Debug, Clone, Copy)]
struct AtomSeed(AtomicType);

impl<'de> DeserializeSeed<'de> for AtomSeed {
    type Value = Atom;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Atom, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AtomSeed {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} atom", self.0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Integer => Ok(Atom::Integer(v)),
            #[allow(clippy::cast_precision_loss)]
            AtomicType::Real => Ok(Atom::Real(v as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Signed(v), &self)),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Atom, E> {
        match (self.0, i64::try_from(v)) {
            (AtomicType::Integer, Ok(i)) => Ok(Atom::Integer(i)),
            #[allow(clippy::cast_precision_loss)]
            (AtomicType::Real, _) => Ok(Atom::Real(v as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Unsigned(v), &self)),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Real => Ok(Atom::Real(v)),
            _ => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Boolean => Ok(Atom::Boolean(v)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Atom, E> {
        match self.0 {
            AtomicType::String => Ok(Atom::String(v.to_owned())),
            _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Atom, E> {
        match self.0 {
            AtomicType::String => Ok(Atom::String(v)),
            _ => Err(E::invalid_type(de::Unexpected::Str(&v), &self)),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        let tag = seq.next_element::<std::borrow::Cow<'de, str>>()?;
        let val = seq.next_element::<std::borrow::Cow<'de, str>>()?;
        match (tag.as_deref(), val) {
            (Some("uuid"), Some(s)) if seq.next_element::<IgnoredAny>()?.is_none() => uuid_atom(self.0, &s),
            _ => Err(de::Error::custom(format!("expected a {} atom", self.0))),
        }
    }
}

struct AtomsSeed(AtomicType);

impl<'de> DeserializeSeed<'de> for AtomsSeed {
    type Value = Vec<Atom>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Atom>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AtomsSeed {
    type Value = Vec<Atom>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} atoms", self.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Atom>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(a) = seq.next_element_seed(AtomSeed(self.0))? {
            out.push(a);
        }
        Ok(out)
    }
}

struct PairsSeed(AtomicType, AtomicType);

impl<'de> DeserializeSeed<'de> for PairsSeed {
    type Value = Vec<(Atom, Atom)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairsSeed {
    type Value = Vec<(Atom, Atom)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of [{}, {}] pairs", self.0, self.1)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(p) = seq.next_element_seed(PairSeed(self.0, self.1))? {
            out.push(p);
        }
        Ok(out)
    }
}

struct PairSeed(AtomicType, AtomicType);

impl<'de> DeserializeSeed<'de> for PairSeed {
    type Value = (Atom, Atom);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed {
    type Value = (Atom, Atom);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a [{}, {}] pair", self.0, self.1)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let k = seq.next_element_seed(AtomSeed(self.0))?.ok_or_else(|| de::Error::custom("pair without key"))?;
        let v = seq.next_element_seed(AtomSeed(self.1))?.ok_or_else(|| de::Error::custom("pair without value"))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("pair with more than two elements"));
        }
        Ok((k, v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({"name": "d", "tables": {"T": {"columns": {
            "s": {"type": "string"},
            "r": {"type": "real"},
            "u": {"type": {"key": {"type": "uuid", "refTable": "T"}, "min": 0, "max": 1}},
            "set": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
            "m": {"type": {"key": "string", "value": "integer", "min": 0, "max": "unlimited"}},
        }}}}))
        .unwrap()
    }

    fn parse(v: serde_json::Value) -> Result<TableUpdates, String> {
        let s = schema();
        UpdatesSeed(&s).deserialize(&v).map_err(|e| e.to_string())
    }

    #[test]
    fn test_parse_matches_from_json() {
        let id = "6b2b5ad6-5c1c-4f3b-9d58-4d0dc1f3ee22";
        let row = json!({"s": "x\"}", "r": 1, "u": ["uuid", id], "set": ["set", [3, 1, 3]],
                         "m": ["map", [["b", 2], ["a", 1]]], "_version": ["uuid", id], "nope": 1});
        let text = json!({"T": {id: {"initial": row.clone()}}}).to_string();
        let s = schema();
        let mut de = serde_json::Deserializer::from_str(&text);
        let ups = UpdatesSeed(&s).deserialize(&mut de).unwrap();
        let RowUpdate::Initial(r) = &ups[0].rows[0].1 else { panic!() };
        let expected = Row::from_json(s.table("T").unwrap().clone(), row.as_object().unwrap()).unwrap();
        assert_eq!(*r, expected);
        assert_eq!(r.get("set").unwrap().to_json(), json!(["set", [1, 3]]));
        assert_eq!(r.get("r").unwrap().to_json(), json!(1.0));
    }

    #[test]
    fn test_errors_name_table_and_column() {
        let id = "6b2b5ad6-5c1c-4f3b-9d58-4d0dc1f3ee22";
        let e = parse(json!({"T": {id: {"modify": {"s": 5}}}})).unwrap_err();
        assert!(e.starts_with("table T, column s: invalid type: integer `5`, expected a string atom"), "{e}");
        let e = parse(json!({"T": {id: {"modify": {"m": ["set", []]}}}})).unwrap_err();
        assert!(e.contains("column m"), "{e}");
        assert!(parse(json!({"X": {}})).unwrap_err().contains("unknown table X"));
        assert!(parse(json!({"T": {id: {"upsert": {}}}})).unwrap_err().contains("unknown update upsert"));
        assert!(parse(json!({"T": {id: {"modify": {"u": ["named-uuid", "x"]}}}})).is_err());
    }
}
