//! Typed builders for `transact` operations (RFC 7047 §5.2).
//!
//! Values are JSON in OVSDB notation; [`Datum::to_json`], [`uuid_ref`],
//! [`named_uuid`], [`set`] and [`map`] build them. An `insert` may carry a
//! `uuid-name`, which later operations of the same transaction reference
//! with [`named_uuid`].

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::datum::Datum;

/// A reference to an existing row: `["uuid", "..."]`.
pub fn uuid_ref(u: Uuid) -> Value {
    json!(["uuid", u.to_string()])
}

/// A reference to a row inserted earlier in the same transaction.
pub fn named_uuid(name: &str) -> Value {
    json!(["named-uuid", name])
}

/// A set of values (`["set", [...]]`).
pub fn set(values: impl IntoIterator<Item = Value>) -> Value {
    json!(["set", values.into_iter().collect::<Vec<_>>()])
}

/// The empty set, which clears an optional column.
pub fn empty_set() -> Value {
    json!(["set", []])
}

/// A map of string to string (`["map", [[k, v], ...]]`).
pub fn map<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
    json!(["map", pairs.into_iter().map(|(k, v)| json!([k.as_ref(), v.as_ref()])).collect::<Vec<_>>()])
}

impl From<&Datum> for Value {
    fn from(d: &Datum) -> Value {
        d.to_json()
    }
}

/// Comparison functions of a `<condition>` (RFC 7047 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `includes`
    Includes,
    /// `excludes`
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Gt => ">",
            Function::Ge => ">=",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// A `<condition>`: `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition(Value);

impl Condition {
    /// `[column, function, value]`.
    pub fn new(column: &str, function: Function, value: Value) -> Self {
        Condition(json!([column, function.as_str(), value]))
    }

    /// The row whose `_uuid` is `u`.
    pub fn uuid(u: Uuid) -> Self {
        Condition::new("_uuid", Function::Eq, uuid_ref(u))
    }

    /// `column == value`.
    pub fn eq(column: &str, value: impl Into<Value>) -> Self {
        Condition::new(column, Function::Eq, value.into())
    }

    /// The JSON.
    pub fn json(&self) -> &Value {
        &self.0
    }
}

/// Mutators of a `<mutation>` (RFC 7047 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=`
    Mod,
    /// `insert` (sets and maps)
    Insert,
    /// `delete` (sets and maps)
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// A `<mutation>`: `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation(Value);

impl Mutation {
    /// `[column, mutator, value]`.
    pub fn new(column: &str, mutator: Mutator, value: Value) -> Self {
        Mutation(json!([column, mutator.as_str(), value]))
    }
}

/// A `<row>`: column name → value, built with [`RowValues::set`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowValues(Map<String, Value>);

impl RowValues {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `column` to `value`.
    #[must_use]
    pub fn set(mut self, column: &str, value: impl Into<Value>) -> Self {
        self.0.insert(column.to_owned(), value.into());
        self
    }

    /// Whether no column is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON object.
    pub fn into_json(self) -> Value {
        Value::Object(self.0)
    }
}

/// `until` of a `wait` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Wait until the selected rows equal `rows`.
    Eq,
    /// Wait until they differ.
    Ne,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation(Value);

fn conditions(w: &[Condition]) -> Value {
    Value::Array(w.iter().map(|c| c.0.clone()).collect())
}

impl Operation {
    /// `insert`; `uuid_name` lets later operations reference the new row.
    pub fn insert(table: &str, row: RowValues, uuid_name: Option<&str>) -> Self {
        let mut op = json!({"op": "insert", "table": table, "row": row.into_json()});
        if let Some(n) = uuid_name {
            op["uuid-name"] = json!(n);
        }
        Operation(op)
    }

    /// `update` the rows matching `where_`.
    pub fn update(table: &str, where_: &[Condition], row: RowValues) -> Self {
        Operation(json!({"op": "update", "table": table, "where": conditions(where_), "row": row.into_json()}))
    }

    /// `mutate` the rows matching `where_`.
    pub fn mutate(table: &str, where_: &[Condition], mutations: &[Mutation]) -> Self {
        let m: Vec<Value> = mutations.iter().map(|m| m.0.clone()).collect();
        Operation(json!({"op": "mutate", "table": table, "where": conditions(where_), "mutations": m}))
    }

    /// `delete` the rows matching `where_`.
    pub fn delete(table: &str, where_: &[Condition]) -> Self {
        Operation(json!({"op": "delete", "table": table, "where": conditions(where_)}))
    }

    /// `select` rows (all columns when `columns` is `None`).
    pub fn select(table: &str, where_: &[Condition], columns: Option<&[&str]>) -> Self {
        let mut op = json!({"op": "select", "table": table, "where": conditions(where_)});
        if let Some(c) = columns {
            op["columns"] = json!(c);
        }
        Operation(op)
    }

    /// `wait` until the `columns` of the rows matching `where_` are (or are
    /// not) exactly `rows`. `timeout_ms` 0 makes it a check: the transaction
    /// aborts at once if the condition does not hold, which is how a client
    /// guards against racing writers.
    pub fn wait(
        table: &str,
        where_: &[Condition],
        columns: &[&str],
        until: Until,
        rows: Vec<RowValues>,
        timeout_ms: u64,
    ) -> Self {
        let rows: Vec<Value> = rows.into_iter().map(RowValues::into_json).collect();
        Operation(json!({
            "op": "wait", "table": table, "where": conditions(where_),
            "columns": columns, "until": if until == Until::Eq { "==" } else { "!=" },
            "rows": rows, "timeout": timeout_ms,
        }))
    }

    /// `comment`, logged by the server.
    pub fn comment(text: &str) -> Self {
        Operation(json!({"op": "comment", "comment": text}))
    }

    /// The JSON of this operation.
    pub fn json(&self) -> &Value {
        &self.0
    }
}
