//! Checks a manifest against its kind's message before anything is sent, and finds every
//! mistake at once, each at its path in the names the user wrote (`spec.skillRefs[0].kind`):
//! an unknown field lists the fields there are, a wrong enum value the values there are, a
//! number where text is expected says to quote it. The protobuf JSON parser stops at the first
//! mistake and names no path, so it only has the last word, once this walk finds nothing.

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

use crate::lines::map_key;

/// One mistake: where (a path as users write it, empty for the whole document) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Self::new("", message)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The text of an unquoted scalar as the user wrote it (`1.0`, which JSON would print as 1),
/// by path; `None` when unknown.
pub type SourceText<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Every mistake in `value` as a `descriptor` message, in document order.
pub fn check(descriptor: &MessageDescriptor, value: &Value, source: &SourceText) -> Vec<Problem> {
    let mut walk = Walk {
        source,
        problems: Vec::new(),
    };
    walk.message(descriptor, value, "");
    walk.problems
}

struct Walk<'a> {
    source: &'a SourceText<'a>,
    problems: Vec<Problem>,
}

impl Walk<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn message(&mut self, descriptor: &MessageDescriptor, value: &Value, path: &str) {
        // Well-known types (Struct, Timestamp, Duration, wrappers…) have JSON forms of their
        // own, which the protobuf parser checks.
        if descriptor.package_name() == "google.protobuf" || value.is_null() {
            return;
        }
        let Value::Object(object) = value else {
            self.problem(path, format!("must be a mapping, not {}", type_name(value)));
            return;
        };
        let mut oneofs_set: Vec<(String, String)> = Vec::new();
        for (key, value) in object {
            let at = join(path, key);
            let Some(field) = field_named(descriptor, key) else {
                let known = field_names(descriptor);
                let message = format!("unknown field; {} has: {known}", descriptor.name());
                self.problem(&at, message);
                continue;
            };
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic())
                && !value.is_null()
            {
                self.one_of(&oneof, &mut oneofs_set, key, path, &at);
            }
            self.field(&field, value, &at);
        }
    }

    /// A second member of a oneof: only one may be set. Keys come sorted, not as written, so
    /// the message reads the same whichever of the two is named.
    fn one_of(
        &mut self,
        oneof: &prost_reflect::OneofDescriptor,
        set: &mut Vec<(String, String)>,
        key: &str,
        path: &str,
        at: &str,
    ) {
        match set.iter().find(|(name, _)| name == oneof.name()) {
            Some((_, first)) => {
                let members: Vec<String> =
                    oneof.fields().map(|f| join(path, f.json_name())).collect();
                let message = format!(
                    "{} is set too; set only one of {}",
                    join(path, first),
                    members.join(", ")
                );
                self.problem(at, message);
            }
            None => set.push((oneof.name().to_string(), key.to_string())),
        }
    }

    fn field(&mut self, field: &FieldDescriptor, value: &Value, path: &str) {
        if value.is_null() {
            return;
        }
        if field.is_map() {
            let Value::Object(entries) = value else {
                let message = format!(
                    "must be a mapping of names to values, not {}",
                    type_name(value)
                );
                self.problem(path, message);
                return;
            };
            let Kind::Message(entry) = field.kind() else {
                return;
            };
            let value_field = entry.map_entry_value_field();
            for (key, item) in entries {
                self.single(&value_field, item, &format!("{path}{}", map_key(key)));
            }
        } else if field.is_list() {
            let Value::Array(items) = value else {
                self.problem(path, format!("must be a list, not {}", type_name(value)));
                return;
            };
            for (index, item) in items.iter().enumerate() {
                self.single(field, item, &format!("{path}[{index}]"));
            }
        } else {
            self.single(field, value, path);
        }
    }

    /// One value of `field`'s type (an item, for lists and maps).
    fn single(&mut self, field: &FieldDescriptor, value: &Value, path: &str) {
        match field.kind() {
            Kind::Message(message) => self.message(&message, value, path),
            Kind::Enum(values) => self.enumeration(&values, value, path),
            Kind::String => self.text(value, path),
            Kind::Bool if !value.is_boolean() => {
                self.problem(path, format!("must be true or false, not {}", shown(value)));
            }
            Kind::Bytes if !value.is_string() => {
                let message = format!("must be base64 text, not {}", type_name(value));
                self.problem(path, message);
            }
            Kind::Double | Kind::Float => self.float(value, path),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                self.integer(value, path, i32::MIN.into(), i32::MAX.into());
            }
            Kind::Uint32 | Kind::Fixed32 => self.integer(value, path, 0, u32::MAX.into()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                self.integer(value, path, i64::MIN.into(), i64::MAX.into());
            }
            Kind::Uint64 | Kind::Fixed64 => self.integer(value, path, 0, u64::MAX.into()),
            _ => {}
        }
    }

    /// Text: a number or a boolean is what YAML makes of `1.0` or `yes` unquoted.
    fn text(&mut self, value: &Value, path: &str) {
        match value {
            Value::String(_) => {}
            Value::Number(_) | Value::Bool(_) => {
                let written = (self.source)(path).unwrap_or_else(|| value.to_string());
                let message = format!(
                    "{written} is {}, but text is expected here: quote it, as \"{written}\"",
                    type_name(value)
                );
                self.problem(path, message);
            }
            _ => self.problem(path, format!("must be text, not {}", type_name(value))),
        }
    }

    fn enumeration(&mut self, values: &EnumDescriptor, value: &Value, path: &str) {
        let known = match value {
            Value::String(name) => values.get_value_by_name(name).is_some(),
            Value::Number(number) => number
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .is_some_and(|n| values.get_value(n).is_some()),
            _ => false,
        };
        if !known {
            let message = format!(
                "{} is not allowed; use one of: {}",
                shown(value),
                enum_names(values)
            );
            self.problem(path, message);
        }
    }

    /// A whole number within `min..=max`; proto3 JSON also takes one written as text.
    fn integer(&mut self, value: &Value, path: &str, min: i128, max: i128) {
        let number = match value {
            Value::Number(n) => n.to_string().parse::<i128>().ok(),
            Value::String(text) => text.trim().parse::<i128>().ok(),
            _ => None,
        };
        match number {
            None => {
                let message = format!("must be a whole number, not {}", shown(value));
                self.problem(path, message);
            }
            Some(n) if n < min || n > max => {
                self.problem(path, format!("{n} is out of range: {min} to {max}"));
            }
            Some(_) => {}
        }
    }

    fn float(&mut self, value: &Value, path: &str) {
        let ok = match value {
            Value::Number(_) => true,
            Value::String(text) => {
                matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity")
                    || text.trim().parse::<f64>().is_ok()
            }
            _ => false,
        };
        if !ok {
            self.problem(path, format!("must be a number, not {}", shown(value)));
        }
    }
}

/// A field by the name the user wrote: its JSON name or its proto name, as proto3 JSON allows.
fn field_named(descriptor: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    descriptor
        .get_field_by_json_name(key)
        .or_else(|| descriptor.get_field_by_name(key))
}

/// The values an enum field takes, less the zero that means "not set" (`…_UNSPECIFIED`).
fn enum_names(values: &EnumDescriptor) -> String {
    let names: Vec<String> = values
        .values()
        .filter(|v| v.number() != 0)
        .map(|v| v.name().to_string())
        .collect();
    names.join(", ")
}

fn field_names(descriptor: &MessageDescriptor) -> String {
    let names: Vec<String> = descriptor
        .fields()
        .map(|f| f.json_name().to_string())
        .collect();
    names.join(", ")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value as a message shows it: text quoted, anything else by its type.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => type_name(other).to_string(),
    }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(kind: &str, value: Value) -> Vec<String> {
        let name = format!("ai.stigmer.agentic.{}.v1.{kind}", kind.to_lowercase());
        let descriptor = stigmer_api::DESCRIPTOR_POOL
            .get_message_by_name(&name)
            .unwrap_or_else(|| panic!("{name}"));
        check(&descriptor, &value, &|_| None)
            .iter()
            .map(Problem::to_string)
            .collect()
    }

    #[test]
    fn a_valid_manifest_in_either_spelling_has_no_problem() {
        let agent = json!({
            "apiVersion": "agentic.stigmer.ai/v1", "kind": "Agent",
            "metadata": {"name": "a", "labels": {"team": "ops"}, "owner_scope": "organization"},
            "spec": {"instructions": "long enough", "skill_refs": [{"kind": "skill", "slug": "s"}],
                     "mcpServers": [{"name": "m", "stdio": {"command": "npx"}, "http": null}],
                     "description": null},
            "status": {"audit": {"specAudit": {"createdAt": "2024-01-01T00:00:00Z"}}}
        });
        assert_eq!(problems("Agent", agent), Vec::<String>::new());
    }

    #[test]
    fn numbers_booleans_and_lists_must_fit_their_fields() {
        let found = problems(
            "McpServer",
            json!({"spec": {
                "tags": "one",
                "http": {"url": 7, "timeoutSeconds": 1.5, "headers": {"a": true}},
                "stdio": {"command": "x", "args": [1, "b"]},
            }}),
        );
        assert_eq!(
            found,
            [
                "spec.http.headers[\"a\"]: true is a boolean, but text is expected here: quote \
                 it, as \"true\"",
                "spec.http.timeoutSeconds: must be a whole number, not 1.5",
                "spec.http.url: 7 is a number, but text is expected here: quote it, as \"7\"",
                "spec.stdio: spec.http is set too; set only one of spec.stdio, spec.http, \
                 spec.docker",
                "spec.stdio.args[0]: 1 is a number, but text is expected here: quote it, as \"1\"",
                "spec.tags: must be a list, not a string",
            ]
        );
    }

    #[test]
    fn integers_are_checked_for_range_and_may_be_written_as_text() {
        let spec =
            |timeout: Value| json!({"spec": {"http": {"url": "u", "timeoutSeconds": timeout}}});
        assert_eq!(
            problems("McpServer", spec(json!("30"))),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("McpServer", spec(json!(3_000_000_000_u64))),
            ["spec.http.timeoutSeconds: 3000000000 is out of range: -2147483648 to 2147483647"]
        );
        assert_eq!(
            problems("McpServer", spec(json!("soon"))),
            ["spec.http.timeoutSeconds: must be a whole number, not \"soon\""]
        );
    }

    #[test]
    fn a_mapping_is_needed_where_a_message_goes() {
        assert_eq!(
            problems("Agent", json!({"spec": "instructions"})),
            ["spec: must be a mapping, not a string"]
        );
    }
}
