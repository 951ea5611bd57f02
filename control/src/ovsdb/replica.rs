//! An in-memory replica of monitored tables, kept by applying
//! `<table-updates2>` (the body of `update2`, `update3` and the replies of
//! `monitor_cond` / `monitor_cond_since`).
//!
//! Invariants:
//! - every row holds one [`Datum`] per column of its table schema, in the
//!   schema's (sorted) column order; columns the server omitted hold the
//!   type's default, which is what update2 omits (ovsdb-server(7));
//! - rows are shared (`Arc`) and never mutated in place once published in a
//!   [`RowChange`]: a "modify" builds a new row, so an event keeps the exact
//!   old and new contents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::de::DeserializeSeed;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::datum::Datum;
use super::schema::{DatabaseSchema, TableSchema};
use super::update::{parse_updates, RowUpdate, TableUpdate, TableUpdates, UpdatesSeed};
use super::Error;

/// One row: its table's schema and one value per column.
#[derive(Debug, Clone)]
pub struct Row {
    table: Arc<TableSchema>,
    values: Box<[Datum]>,
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.table.name == other.table.name && self.values == other.values
    }
}

impl Row {
    /// A row of `table` with every column at its default.
    pub fn with_defaults(table: Arc<TableSchema>) -> Self {
        let values = table.columns.iter().map(|c| c.ty.default_datum()).collect();
        Row { table, values }
    }

    /// Builds a row from a `<row>` object (missing columns get defaults;
    /// `_uuid`, `_version` and columns the schema does not know are skipped).
    ///
    /// # Errors
    ///
    /// [`Error::BadRow`] naming the table and column of a bad value.
    pub fn from_json(table: Arc<TableSchema>, row: &Map<String, Value>) -> Result<Self, Error> {
        let mut r = Row::with_defaults(table);
        r.set_from_json(row)?;
        Ok(r)
    }

    /// Sets column `i` (in schema order).
    pub(crate) fn set_value(&mut self, i: usize, v: Datum) {
        self.values[i] = v;
    }

    fn set_from_json(&mut self, row: &Map<String, Value>) -> Result<(), Error> {
        for (name, v) in row {
            let Some(i) = self.table.column_index(name) else {
                continue;
            };
            let ty = &self.table.columns[i].ty;
            let d = Datum::from_json(v, ty).map_err(|e| Error::BadRow {
                table: self.table.name.clone(),
                column: name.clone(),
                reason: e.to_string(),
            })?;
            self.values[i] = d;
        }
        Ok(())
    }

    /// The table schema.
    pub fn table(&self) -> &Arc<TableSchema> {
        &self.table
    }

    /// A column's value.
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.table.column_index(column).map(|i| &self.values[i])
    }

    /// Values in schema column order.
    pub fn values(&self) -> &[Datum] {
        &self.values
    }

    /// The row as a `<row>` object with every column.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (c, v) in self.table.columns.iter().zip(self.values.iter()) {
            m.insert(c.name.clone(), v.to_json());
        }
        Value::Object(m)
    }
}

/// A row change, as delivered to consumers.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// Table name.
    pub table: Arc<TableSchema>,
    /// Row UUID.
    pub uuid: Uuid,
    /// Contents before (`None`: inserted).
    pub old: Option<Arc<Row>>,
    /// Contents after (`None`: deleted).
    pub new: Option<Arc<Row>>,
}

/// Rows of one table.
pub type TableRows = HashMap<Uuid, Arc<Row>>;

/// A replica of a database (the monitored part of it).
#[derive(Debug, Clone)]
pub struct Replica {
    schema: Arc<DatabaseSchema>,
    tables: BTreeMap<String, TableRows>,
}

impl Default for Replica {
    fn default() -> Self {
        Replica::new(Arc::new(DatabaseSchema { name: String::new(), version: String::new(), tables: BTreeMap::new() }))
    }
}

impl PartialEq for Replica {
    fn eq(&self, other: &Self) -> bool {
        self.tables == other.tables
    }
}

impl Replica {
    /// An empty replica of `schema`.
    pub fn new(schema: Arc<DatabaseSchema>) -> Self {
        let tables = schema.tables.keys().map(|t| (t.clone(), TableRows::new())).collect();
        Replica { schema, tables }
    }

    /// The schema.
    pub fn schema(&self) -> &Arc<DatabaseSchema> {
        &self.schema
    }

    /// Rows of a table (empty for an unknown table).
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Arc<Row>)> {
        self.tables.get(table).into_iter().flat_map(|t| t.iter())
    }

    /// The rows of a table, if the schema has it.
    pub fn table(&self, table: &str) -> Option<&TableRows> {
        self.tables.get(table)
    }

    /// One row.
    pub fn get(&self, table: &str, uuid: &Uuid) -> Option<&Arc<Row>> {
        self.tables.get(table)?.get(uuid)
    }

    /// Number of rows over all tables.
    pub fn n_rows(&self) -> usize {
        self.tables.values().map(HashMap::len).sum()
    }

    /// Applies a `<table-updates2>` object, appending what changed.
    ///
    /// # Errors
    ///
    /// [`Error::BadUpdate`] if the update does not fit the replica (unknown
    /// table or column type, modify of a missing row); nothing is applied
    /// then for a parse error, but a modify of a missing row may leave the
    /// replica partly updated, and it must then be resynchronised.
    pub fn apply_update2(&mut self, updates: &Value, changes: &mut Vec<RowChange>) -> Result<(), Error> {
        let parsed =
            UpdatesSeed(&self.schema.clone()).deserialize(updates).map_err(|e| Error::BadUpdate(e.to_string()))?;
        self.apply(parsed, changes)
    }

    /// [`Replica::apply_update2`] on unparsed JSON text (a notification's
    /// or reply's raw `<table-updates2>`), without an intermediate `Value`.
    ///
    /// # Errors
    ///
    /// As [`Replica::apply_update2`].
    pub fn apply_update2_raw(&mut self, updates: &RawValue, changes: &mut Vec<RowChange>) -> Result<(), Error> {
        let parsed = parse_updates(&self.schema.clone(), updates.get())?;
        self.apply(parsed, changes)
    }

    /// Applies parsed updates, appending what changed.
    ///
    /// # Errors
    ///
    /// [`Error::BadUpdate`] for a modify of a row not in the replica.
    pub fn apply(&mut self, updates: TableUpdates, changes: &mut Vec<RowChange>) -> Result<(), Error> {
        for TableUpdate { table, rows } in updates {
            let trows = self.tables.entry(table.name.clone()).or_default();
            for (uuid, update) in rows {
                let old = trows.get(&uuid).cloned();
                let new = match update {
                    RowUpdate::Initial(r) | RowUpdate::Insert(r) => Some(Arc::new(r)),
                    RowUpdate::Modify(cols) => {
                        let mut r = Row::clone(old.as_ref().ok_or_else(|| {
                            Error::BadUpdate(format!("{} {uuid}: modify of a row not in the replica", table.name))
                        })?);
                        for (i, d) in cols {
                            if table.columns[i].ty.modify_replaces() {
                                r.values[i] = d;
                            } else {
                                r.values[i].apply_diff(&d);
                            }
                        }
                        Some(Arc::new(r))
                    }
                    RowUpdate::Delete => None,
                };
                match &new {
                    Some(r) => trows.insert(uuid, r.clone()),
                    None => trows.remove(&uuid),
                };
                if old.is_some() || new.is_some() {
                    changes.push(RowChange { table: table.clone(), uuid, old, new });
                }
            }
        }
        Ok(())
    }

    /// Replaces the contents with `fresh` (a full dump), returning the
    /// changes that lead from the old contents to the new.
    pub fn replace_with(&mut self, fresh: Replica) -> Vec<RowChange> {
        let mut changes = Vec::new();
        for (tname, new_rows) in &fresh.tables {
            let Some(tschema) = fresh.schema.table(tname) else {
                continue;
            };
            let old_rows = self.tables.get(tname);
            for (uuid, new) in new_rows {
                let old = old_rows.and_then(|t| t.get(uuid));
                if old.is_some_and(|o| **o == **new) {
                    continue;
                }
                changes.push(RowChange {
                    table: tschema.clone(),
                    uuid: *uuid,
                    old: old.cloned(),
                    new: Some(new.clone()),
                });
            }
        }
        for (tname, old_rows) in &self.tables {
            let new_rows = fresh.tables.get(tname);
            for (uuid, old) in old_rows {
                if new_rows.is_some_and(|t| t.contains_key(uuid)) {
                    continue;
                }
                changes.push(RowChange { table: old.table.clone(), uuid: *uuid, old: Some(old.clone()), new: None });
            }
        }
        *self = fresh;
        changes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn schema() -> Arc<DatabaseSchema> {
        Arc::new(
            DatabaseSchema::from_json(&json!({"name": "d", "tables": {"T": {"columns": {
                "name": {"type": "string"},
                "n": {"type": "integer"},
                "opt": {"type": {"key": "string", "min": 0, "max": 1}},
                "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
            }}}}))
            .unwrap(),
        )
    }

    #[test]
    fn test_insert_modify_delete() {
        let mut r = Replica::new(schema());
        let u = "6b2b5ad6-5c1c-4f3b-9d58-4d0dc1f3ee22";
        let mut ch = Vec::new();
        r.apply_update2(&json!({"T": {u: {"insert": {"name": "a", "m": ["map", [["k", "v"]]]}}}}), &mut ch).unwrap();
        let uuid = Uuid::parse_str(u).unwrap();
        let row = r.get("T", &uuid).unwrap().clone();
        assert_eq!(row.get("n").unwrap(), &Datum::scalar(0i64)); // default filled in
        assert_eq!(row.get("opt").unwrap(), &Datum::Set(vec![]));
        r.apply_update2(
            &json!({"T": {u: {"modify": {"name": "b", "opt": "x", "m": ["map", [["k", "v"], ["k2", "w"]]]}}}}),
            &mut ch,
        )
        .unwrap();
        // an optional column is sent with its new value, not as a diff
        r.apply_update2(&json!({"T": {u: {"modify": {"opt": "y"}}}}), &mut ch).unwrap();
        assert_eq!(r.get("T", &uuid).unwrap().get("opt").unwrap().to_json(), json!("y"));
        r.apply_update2(&json!({"T": {u: {"modify": {"opt": ["set", []]}}}}), &mut ch).unwrap();
        assert_eq!(r.get("T", &uuid).unwrap().get("opt").unwrap().to_json(), json!(["set", []]));
        r.apply_update2(&json!({"T": {u: {"modify": {"opt": "x"}}}}), &mut ch).unwrap();
        let row2 = r.get("T", &uuid).unwrap();
        assert_eq!(row2.to_json(), json!({"name": "b", "n": 0, "opt": "x", "m": ["map", [["k2", "w"]]]}));
        r.apply_update2(&json!({"T": {u: {"delete": null}}}), &mut ch).unwrap();
        assert!(r.get("T", &uuid).is_none());
        assert_eq!(ch.len(), 6);
        assert!(ch[0].old.is_none() && ch[5].new.is_none());
        assert_eq!(*ch[1].old.as_ref().unwrap(), row); // old contents kept intact
    }

    #[test]
    fn test_replace_with_diffs() {
        let s = schema();
        let a = "00000000-0000-0000-0000-00000000000a";
        let b = "00000000-0000-0000-0000-00000000000b";
        let mut r = Replica::new(s.clone());
        let mut ch = Vec::new();
        r.apply_update2(&json!({"T": {a: {"initial": {"name": "a"}}, b: {"initial": {"name": "b"}}}}), &mut ch)
            .unwrap();
        let mut fresh = Replica::new(s);
        fresh.apply_update2(&json!({"T": {a: {"initial": {"name": "a2"}}}}), &mut ch).unwrap();
        let changes = r.replace_with(fresh);
        assert_eq!(changes.len(), 2);
        assert_eq!(r.n_rows(), 1);
    }

    #[test]
    fn test_modify_unknown_row_is_error() {
        let mut r = Replica::new(schema());
        let e = r.apply_update2(
            &json!({"T": {"6b2b5ad6-5c1c-4f3b-9d58-4d0dc1f3ee22": {"modify": {"name": "x"}}}}),
            &mut Vec::new(),
        );
        assert!(matches!(e, Err(Error::BadUpdate(_))));
    }
}
