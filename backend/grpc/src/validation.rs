//! buf.validate rules (via prost-protovalidate, docs/adr/0004-validation.md) plus the
//! contract's own rules, reported together as one INVALID_ARGUMENT.

use prost_protovalidate::{Error, Validator, Violation};
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};

use crate::error::{ApiError, FieldViolation};
use crate::json_names::{json_path, oneof_members};

/// Checks `message` and fails with every violation found, the contract's `extra` ones first.
pub(crate) fn check(
    validator: &Validator,
    message: &DynamicMessage,
    mut violations: Vec<FieldViolation>,
) -> Result<(), ApiError> {
    match validator.validate(message) {
        Ok(()) => {}
        Err(Error::Validation(err)) => {
            let root = message.descriptor();
            violations.extend(err.violations().iter().map(|v| field_violation(&root, v)));
        }
        Err(other) => {
            return Err(ApiError::internal(format!(
                "validation rules of {} could not run: {other}",
                message.descriptor().full_name()
            )));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            message.descriptor().name().to_string(),
            violations,
        ))
    }
}

/// One protovalidate violation of a `root` message, in JSON names. A required oneof left unset
/// names its members, since its own name appears nowhere in what users write.
pub(crate) fn field_violation(root: &MessageDescriptor, violation: &Violation) -> FieldViolation {
    let path = violation.field_path();
    if violation.rule_id() == "required"
        && let Some((parent, members)) = oneof_members(root, &path)
    {
        // A oneof of the root itself has no better place to be named at than its own name.
        let field = if parent.is_empty() { path } else { parent };
        return FieldViolation::new(field, format!("set one of {}", members.join(", ")));
    }
    let description = if violation.message().is_empty() {
        format!("breaks rule {}", violation.rule_id())
    } else {
        violation.message().to_string()
    };
    FieldViolation::new(json_path(root, &path), description)
}
