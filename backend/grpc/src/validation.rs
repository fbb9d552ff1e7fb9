//! buf.validate rules (via prost-protovalidate, docs/adr/0004-validation.md) plus the
//! contract's own rules, reported together as one INVALID_ARGUMENT.

use prost_protovalidate::{Error, Validator};
use prost_reflect::{DynamicMessage, ReflectMessage};

use crate::error::{ApiError, FieldViolation};

/// Checks `message` and fails with every violation found, the contract's `extra` ones first.
pub(crate) fn check(
    validator: &Validator,
    message: &DynamicMessage,
    mut violations: Vec<FieldViolation>,
) -> Result<(), ApiError> {
    match validator.validate(message) {
        Ok(()) => {}
        Err(Error::Validation(err)) => {
            violations.extend(err.violations().iter().map(|v| {
                let description = if v.message().is_empty() {
                    format!("breaks rule {}", v.rule_id())
                } else {
                    v.message().to_string()
                };
                FieldViolation::new(v.field_path(), description)
            }));
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
