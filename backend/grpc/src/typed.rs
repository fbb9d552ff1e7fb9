//! Kind-specific code works on the generated prost structs (`stigmer_api`), so that a misspelt
//! field fails to compile instead of reading as "". The generic path (every kind through one
//! controller) stays on `DynamicMessage`; these convert at the edge, off the hot path.

use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::error::ApiError;
use crate::fields::set;

/// The message in `field` of `resource` as `T`; `T::default()` when unset.
fn part<T: Message + Default>(resource: &DynamicMessage, field: &str) -> Result<T, ApiError> {
    match resource.get_field_by_name(field).as_deref() {
        Some(Value::Message(part)) => part.transcode_to::<T>().map_err(|err| {
            ApiError::internal(format!(
                "{} does not decode as {}: {err}",
                part.descriptor().full_name(),
                std::any::type_name::<T>()
            ))
        }),
        _ => Ok(T::default()),
    }
}

/// The spec of `resource` as its generated struct.
pub(crate) fn spec<T: Message + Default>(resource: &DynamicMessage) -> Result<T, ApiError> {
    part(resource, "spec")
}

/// The status of `resource` as its generated struct.
pub(crate) fn status<T: Message + Default>(resource: &DynamicMessage) -> Result<T, ApiError> {
    part(resource, "status")
}

/// Replaces the spec of `resource`.
pub(crate) fn set_spec<T: ReflectMessage>(resource: &mut DynamicMessage, spec: &T) {
    set(
        resource,
        "spec",
        Value::Message(spec.transcode_to_dynamic()),
    );
}

/// Replaces the status of `resource`.
pub(crate) fn set_status<T: ReflectMessage>(resource: &mut DynamicMessage, status: &T) {
    set(
        resource,
        "status",
        Value::Message(status.transcode_to_dynamic()),
    );
}

/// A whole resource as its generated struct.
pub(crate) fn resource<T: Message + Default>(message: &DynamicMessage) -> Result<T, ApiError> {
    message.transcode_to::<T>().map_err(|err| {
        ApiError::internal(format!(
            "{} does not decode as {}: {err}",
            message.descriptor().full_name(),
            std::any::type_name::<T>()
        ))
    })
}
