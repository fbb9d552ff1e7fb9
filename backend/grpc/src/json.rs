//! proto3 canonical JSON, the encoding of the `data` column (docs/adr/0002-json-encoding.md).

use prost_reflect::{
    DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};

use crate::error::ApiError;

/// lowerCamel names, enum value names, RFC 3339 timestamps, 64-bit integers as strings,
/// default values omitted.
pub(crate) fn to_json(message: &DynamicMessage) -> Result<String, ApiError> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|err| {
            ApiError::internal(format!(
                "encoding {} as JSON: {err}",
                message.descriptor().full_name()
            ))
        })?;
    String::from_utf8(out).map_err(ApiError::internal)
}

/// Reads a stored resource. Unknown fields are tolerated so that a row edited by hand, or
/// written by a newer server, still loads.
pub(crate) fn from_json(
    descriptor: &MessageDescriptor,
    json: &str,
) -> Result<DynamicMessage, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut deserializer,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .and_then(|message| deserializer.end().map(|()| message))
    .map_err(|err| {
        ApiError::internal(format!(
            "stored {} is not valid: {err}",
            descriptor.full_name()
        ))
    })?;
    Ok(message)
}
