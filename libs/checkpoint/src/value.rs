//! The Python objects a checkpoint holds, as plain Rust values.

use crate::Tensor;
use std::sync::Arc;

/// A Python object from (or for) a checkpoint's pickle. numpy scalars read as the `Int`/`Float` they
/// hold; tensors as their data, views resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A `dict`, keys in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A `collections.OrderedDict` (a state_dict).
    OrderedDict(Vec<(Value, Value)>),
    /// A tensor; tensors that share one `Arc` share one storage when written.
    Tensor(Arc<Tensor>),
    /// A `torch.device`, as its string (`cpu`, `cuda:0`).
    Device(String),
}

impl Value {
    /// The entries of a `Dict` or `OrderedDict`.
    pub fn entries(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(entries) | Value::OrderedDict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under string key `key` of a `Dict` or `OrderedDict`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A `Float`, or an `Int` as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The items of a `List` or `Tuple`.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// A value born as JSON (plans, dataset.json in `init_args`) back as JSON; None for values JSON
    /// cannot hold (tensors, devices, bytes, non-string keys, non-finite floats).
    pub fn to_json(&self) -> Option<serde_json::Value> {
        Some(match self {
            Value::None => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)?.into(),
            Value::Str(s) => s.clone().into(),
            Value::List(items) | Value::Tuple(items) => items.iter().map(Value::to_json).collect::<Option<_>>()?,
            Value::Dict(entries) | Value::OrderedDict(entries) => serde_json::Value::Object(
                entries.iter().map(|(k, v)| Some((k.as_str()?.to_owned(), v.to_json()?))).collect::<Option<_>>()?,
            ),
            Value::Bytes(_) | Value::Tensor(_) | Value::Device(_) => return None,
        })
    }

    /// A JSON value as Python holds it after `json.load` (objects as dicts, arrays as lists), as
    /// nnU-Net keeps plans and dataset.json in `init_args`.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                n.as_i64().map_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Int)
            }
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => {
                Value::Dict(map.iter().map(|(k, v)| (Value::Str(k.clone()), Value::from_json(v))).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_becomes_what_json_load_gives() {
        let json = serde_json::json!({"b": [1, 2.5, null, true], "a": "x"});
        let value = Value::from_json(&json);
        let list = Value::List(vec![Value::Int(1), Value::Float(2.5), Value::None, Value::Bool(true)]);
        assert_eq!(value.get("b"), Some(&list), "keys keep their order and arrays become lists");
        assert_eq!(value.get("a").and_then(Value::as_str), Some("x"));
        assert_eq!(value.entries().map(|e| e[0].0.clone()), Some(Value::Str("b".into())));
        assert_eq!(value.to_json(), Some(json), "and back");
        assert_eq!(Value::Device("cpu".into()).to_json(), None);
    }
}
