//! Small helpers over resources in proto3 JSON.

use serde_json::Value;

use crate::kind_case::KindCase;

pub fn id_of(resource: &Value) -> String {
    resource["metadata"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.id in {resource}"))
        .to_string()
}

pub fn slug_of(resource: &Value) -> String {
    resource["metadata"]["slug"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.slug in {resource}"))
        .to_string()
}

/// `status.defaultInstanceId` of an Agent or a Workflow.
pub fn default_instance_of(resource: &Value) -> String {
    resource["status"]["defaultInstanceId"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no status.defaultInstanceId in {resource}"))
        .to_string()
}

/// A string field of the spec ("" when unset).
pub fn spec_str(resource: &Value, key: &str) -> String {
    resource["spec"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn label_of(resource: &Value, key: &str) -> Value {
    resource["metadata"]["labels"][key].clone()
}

/// `spec` with the derived fields of `from` (a stored resource) added where `spec` lacks them,
/// as a client sends back what it read.
pub fn with_derived(case: &KindCase, spec: &Value, from: &Value) -> Value {
    let mut spec = spec.clone();
    for key in case.derived {
        if spec.get(*key).is_none() {
            spec[*key] = from["spec"][*key].clone();
        }
    }
    spec
}

/// `metadata.revision`, an int64 and so a JSON string.
pub fn revision_of(resource: &Value) -> i64 {
    let revision = &resource["metadata"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("metadata.revision {revision} is not an int64 string"))
}

pub fn items_of(case: &KindCase, page: &Value) -> Vec<Value> {
    match &page[case.list_field] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        other => panic!("{}: list field {} is {other}", case.name, case.list_field),
    }
}

/// Deep merge; a `null` in `patch` removes the key.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

pub fn patched(base: &Value, patch: &Value) -> Value {
    let mut value = base.clone();
    merge(&mut value, patch);
    value
}

/// An RFC 3339 UTC timestamp as a string that sorts in time order (fraction padded to 9).
pub fn instant(value: &Value, what: &str) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a timestamp string: {value}"));
    let body = text
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("{what} {text:?} is not UTC RFC 3339"));
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    let shape_ok = seconds.len() == 19
        && seconds.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        })
        && fraction.len() <= 9
        && fraction.chars().all(|c| c.is_ascii_digit());
    assert!(shape_ok, "{what} {text:?} is not RFC 3339");
    format!("{seconds}.{fraction:0<9}")
}
