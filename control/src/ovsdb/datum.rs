//! OVSDB values (RFC 7047 §5.1): atoms and data.
//!
//! A [`Datum`] is always a set or a map, also for scalar columns (a set of
//! one). Invariant: the atoms of a set, and the keys of a map, are sorted by
//! [`Atom`]'s total order and unique, so two data compare equal exactly when
//! the database would call them equal.

use std::cmp::Ordering;

use serde_json::{json, Value};
use uuid::Uuid;

use super::schema::{AtomicType, BaseType, ColumnType};

/// Errors converting JSON to OVSDB values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum DatumError {
    /// expected a {expected} atom, got `{got}`
    BadAtom {
        /// The atomic type the column wants.
        expected: AtomicType,
        /// The JSON received.
        got: String,
    },
    /// expected a map `["map", [[k, v], ...]]`, got `{0}`
    BadMap(String),
    /// bad set `{0}`
    BadSet(String),
}

/// One atomic value.
#[derive(Debug, Clone)]
pub enum Atom {
    /// `integer`.
    Integer(i64),
    /// `real`.
    Real(f64),
    /// `boolean`.
    Boolean(bool),
    /// `string`.
    String(String),
    /// `uuid`.
    Uuid(Uuid),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
        }
    }

    /// Reads an atom of the given type from its JSON notation.
    ///
    /// # Errors
    ///
    /// [`DatumError::BadAtom`] if the JSON is not an atom of that type.
    pub fn from_json(v: &Value, ty: AtomicType) -> Result<Atom, DatumError> {
        let atom = match ty {
            AtomicType::Integer => v.as_i64().map(Atom::Integer),
            AtomicType::Real => v.as_f64().map(Atom::Real),
            AtomicType::Boolean => v.as_bool().map(Atom::Boolean),
            AtomicType::String => v.as_str().map(|s| Atom::String(s.to_owned())),
            AtomicType::Uuid => match v.as_array().map(Vec::as_slice) {
                Some([Value::String(tag), Value::String(u)]) if tag == "uuid" => {
                    Uuid::parse_str(u).ok().map(Atom::Uuid)
                }
                _ => None,
            },
        };
        atom.ok_or_else(|| DatumError::BadAtom { expected: ty, got: v.to_string() })
    }

    /// The JSON notation of this atom.
    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The UUID, if this is a UUID atom.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean atom.
    pub fn as_boolean(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The real, if this is a real atom.
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            _ => None,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_owned())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}

/// A column value: a set of atoms or a map between atoms, sorted and unique
/// by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// A set (a scalar is a set of one).
    Set(Vec<Atom>),
    /// A map, sorted by key.
    Map(Vec<(Atom, Atom)>),
}

fn parse_base(v: &Value, ty: &BaseType) -> Result<Atom, DatumError> {
    Atom::from_json(v, ty.atomic)
}

impl Datum {
    /// A set of atoms, sorted and deduplicated.
    pub fn set(mut atoms: Vec<Atom>) -> Datum {
        atoms.sort();
        atoms.dedup();
        Datum::Set(atoms)
    }

    /// A map, sorted by key; on duplicate keys the last one wins.
    pub fn map(mut pairs: Vec<(Atom, Atom)>) -> Datum {
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Datum::Map(pairs)
    }

    /// A set of one atom.
    pub fn scalar(atom: impl Into<Atom>) -> Datum {
        Datum::Set(vec![atom.into()])
    }

    /// Reads a `<value>` of the given column type.
    ///
    /// # Errors
    ///
    /// [`DatumError`] if the JSON does not fit the type.
    pub fn from_json(v: &Value, ty: &ColumnType) -> Result<Datum, DatumError> {
        if let Some(vty) = &ty.value {
            let pairs = match v.as_array().map(Vec::as_slice) {
                Some([Value::String(tag), Value::Array(pairs)]) if tag == "map" => pairs,
                _ => return Err(DatumError::BadMap(v.to_string())),
            };
            let mut out = Vec::with_capacity(pairs.len());
            for p in pairs {
                match p.as_array().map(Vec::as_slice) {
                    Some([k, val]) => out.push((parse_base(k, &ty.key)?, parse_base(val, vty)?)),
                    _ => return Err(DatumError::BadMap(v.to_string())),
                }
            }
            return Ok(Datum::map(out));
        }
        match v.as_array().map(Vec::as_slice) {
            Some([Value::String(tag), rest]) if tag == "set" => {
                let elems = rest.as_array().ok_or_else(|| DatumError::BadSet(v.to_string()))?;
                let atoms = elems.iter().map(|e| parse_base(e, &ty.key)).collect::<Result<Vec<_>, _>>()?;
                Ok(Datum::set(atoms))
            }
            _ => Ok(Datum::Set(vec![parse_base(v, &ty.key)?])),
        }
    }

    /// The JSON notation (a lone atom for sets of one, like ovsdb-server).
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(atoms) if atoms.len() == 1 => atoms[0].to_json(),
            Datum::Set(atoms) => json!(["set", atoms.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Datum::Map(pairs) => {
                json!(["map", pairs.iter().map(|(k, v)| json!([k.to_json(), v.to_json()])).collect::<Vec<_>>()])
            }
        }
    }

    /// Applies an update2 "modify" diff (ovsdb-server(7), `<row-update2>`):
    /// for a set, the diff is the symmetric difference; for a map, a key
    /// that is absent is added, a key present with the same value is
    /// removed, a key present with another value gets the new value.
    /// Columns with at most one atom are not diffs; the caller replaces them
    /// instead (see [`ColumnType::modify_replaces`]).
    pub fn apply_diff(&mut self, diff: &Datum) {
        match (self, diff) {
            (Datum::Set(cur), Datum::Set(d)) => {
                for a in d {
                    match cur.binary_search(a) {
                        Ok(i) => {
                            cur.remove(i);
                        }
                        Err(i) => cur.insert(i, a.clone()),
                    }
                }
            }
            (Datum::Map(cur), Datum::Map(d)) => {
                for (k, v) in d {
                    match cur.binary_search_by(|(ck, _)| ck.cmp(k)) {
                        Ok(i) if cur[i].1 == *v => {
                            cur.remove(i);
                        }
                        Ok(i) => cur[i].1 = v.clone(),
                        Err(i) => cur.insert(i, (k.clone(), v.clone())),
                    }
                }
            }
            (cur, d) => *cur = d.clone(),
        }
    }

    /// The atoms of a set (empty for a map).
    pub fn atoms(&self) -> &[Atom] {
        match self {
            Datum::Set(a) => a,
            Datum::Map(_) => &[],
        }
    }

    /// The pairs of a map (empty for a set).
    pub fn pairs(&self) -> &[(Atom, Atom)] {
        match self {
            Datum::Map(p) => p,
            Datum::Set(_) => &[],
        }
    }

    /// The single atom of a set of one.
    pub fn as_scalar(&self) -> Option<&Atom> {
        match self.atoms() {
            [a] => Some(a),
            _ => None,
        }
    }

    /// Looks a key up in a map.
    pub fn get(&self, key: &Atom) -> Option<&Atom> {
        let pairs = self.pairs();
        pairs.binary_search_by(|(k, _)| k.cmp(key)).ok().map(|i| &pairs[i].1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ty(v: Value) -> ColumnType {
        let schema = json!({"name": "d", "tables": {"T": {"columns": {"c": {"type": v}}}}});
        let s = crate::ovsdb::DatabaseSchema::from_json(&schema).unwrap();
        s.table("T").unwrap().column("c").unwrap().ty.clone()
    }

    #[test]
    fn test_parse_and_emit() {
        let t = ty(json!({"key": "string", "min": 0, "max": "unlimited"}));
        let d = Datum::from_json(&json!(["set", ["b", "a", "b"]]), &t).unwrap();
        assert_eq!(d, Datum::Set(vec!["a".into(), "b".into()]));
        assert_eq!(d.to_json(), json!(["set", ["a", "b"]]));
        let one = Datum::from_json(&json!("x"), &t).unwrap();
        assert_eq!(one.to_json(), json!("x"));
        let u = ty(json!({"key": {"type": "uuid", "refTable": "T"}, "min": 0, "max": 1}));
        let id = "6b2b5ad6-5c1c-4f3b-9d58-4d0dc1f3ee22";
        let d = Datum::from_json(&json!(["uuid", id]), &u).unwrap();
        assert_eq!(d.as_scalar().unwrap().as_uuid().unwrap().to_string(), id);
        assert!(Datum::from_json(&json!(["named-uuid", "x"]), &u).is_err());
    }

    #[test]
    fn test_map_diff() {
        let t = ty(json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}));
        let mut d = Datum::from_json(&json!(["map", [["a", "1"], ["b", "2"], ["c", "3"]]]), &t).unwrap();
        // a: same value → removed; b: new value → replaced; z: new → added.
        let diff = Datum::from_json(&json!(["map", [["a", "1"], ["b", "9"], ["z", "0"]]]), &t).unwrap();
        d.apply_diff(&diff);
        assert_eq!(d.to_json(), json!(["map", [["b", "9"], ["c", "3"], ["z", "0"]]]));
    }

    #[test]
    fn test_set_diff() {
        let t = ty(json!({"key": "integer", "min": 0, "max": "unlimited"}));
        let mut d = Datum::from_json(&json!(["set", [1, 2, 3]]), &t).unwrap();
        d.apply_diff(&Datum::from_json(&json!(["set", [2, 4]]), &t).unwrap());
        assert_eq!(d.to_json(), json!(["set", [1, 3, 4]]));
        // a set member swapped: the diff holds both
        let mut o = Datum::from_json(&json!(["set", [7]]), &t).unwrap();
        o.apply_diff(&Datum::from_json(&json!(["set", [7, 8]]), &t).unwrap());
        assert_eq!(o.to_json(), json!(8));
    }

    #[test]
    fn test_defaults() {
        assert_eq!(ty(json!("integer")).default_datum(), Datum::scalar(0));
        assert_eq!(
            ty(json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"})).default_datum(),
            Datum::Map(vec![])
        );
    }
}
