//! Small accessors over `DynamicMessage`, by field name. A missing field reads as its default,
//! and writing to a field the message does not have is a no-op, so the generic controller
//! works on any envelope without per-kind code.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

pub(crate) fn get_str(message: &DynamicMessage, field: &str) -> String {
    message
        .get_field_by_name(field)
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(crate) fn get_i64(message: &DynamicMessage, field: &str) -> i64 {
    message
        .get_field_by_name(field)
        .and_then(|value| value.as_i64())
        .unwrap_or_default()
}

pub(crate) fn get_i32(message: &DynamicMessage, field: &str) -> i32 {
    match message.get_field_by_name(field).as_deref() {
        Some(Value::I32(number) | Value::EnumNumber(number)) => *number,
        _ => 0,
    }
}

pub(crate) fn has(message: &DynamicMessage, field: &str) -> bool {
    message.has_field_by_name(field)
}

pub(crate) fn set(message: &mut DynamicMessage, field: &str, value: Value) {
    if message.descriptor().get_field_by_name(field).is_some() {
        message.set_field_by_name(field, value);
    }
}

pub(crate) fn set_str(message: &mut DynamicMessage, field: &str, value: impl Into<String>) {
    set(message, field, Value::String(value.into()));
}

pub(crate) fn clear(message: &mut DynamicMessage, field: &str) {
    if message.descriptor().get_field_by_name(field).is_some() {
        message.clear_field_by_name(field);
    }
}

/// The sub-message in `field`, created empty if unset. `None` if there is no such message field.
pub(crate) fn child_mut<'a>(
    message: &'a mut DynamicMessage,
    field: &str,
) -> Option<&'a mut DynamicMessage> {
    message.get_field_by_name_mut(field)?.as_message_mut()
}

/// Copies of the messages in the repeated field `field` (none when it is absent).
pub(crate) fn repeated(message: &DynamicMessage, field: &str) -> Vec<DynamicMessage> {
    match message.get_field_by_name(field).as_deref() {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|item| item.as_message().cloned())
            .collect(),
        _ => Vec::new(),
    }
}

/// A copy of the sub-message in `field` (its default when unset).
pub(crate) fn child(message: &DynamicMessage, field: &str) -> Option<DynamicMessage> {
    message
        .get_field_by_name(field)
        .and_then(|value| value.as_message().cloned())
}
