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
    match validator.validate_dynamic(message) {
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

#[cfg(test)]
mod tests {
    use prost_protovalidate::{Validator, ValidatorOption};
    use prost_reflect::ReflectMessage;
    use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentSpec};
    use stigmer_api::ai::stigmer::commons::apiresource::{
        ApiResourceMetadata, ApiResourceReference,
    };

    use super::*;

    fn validator() -> Validator {
        Validator::with_options(&[ValidatorOption::AdditionalDescriptorSetBytes(
            stigmer_api::FILE_DESCRIPTOR_SET.to_vec(),
        )])
    }

    fn agent(owner_scope: i32, skill_kind: i32) -> DynamicMessage {
        Agent {
            api_version: "agentic.stigmer.ai/v1".into(),
            kind: "Agent".into(),
            metadata: Some(ApiResourceMetadata {
                name: "reviewer".into(),
                owner_scope,
                labels: [("team".to_string(), "qa".to_string())].into(),
                tags: vec!["a".into(), "b".into()],
                ..Default::default()
            }),
            spec: Some(AgentSpec {
                instructions: "Review every change.".into(),
                skill_refs: vec![ApiResourceReference {
                    slug: "lint".into(),
                    kind: skill_kind,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .transcode_to_dynamic()
    }

    fn fields(result: Result<(), ApiError>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(ApiError::InvalidArgument { violations, .. }) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            Err(other) => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    /// CEL rules bind only the fields of `this` they read (vendor/prost-protovalidate,
    /// PATCHES.md); they must still see those fields, on a message field and on list items.
    #[test]
    fn cel_rules_see_the_fields_they_read() {
        let validator = validator();
        assert_eq!(
            fields(check(&validator, &agent(1, 43), Vec::new())),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(check(&validator, &agent(3, 43), Vec::new())),
            ["metadata"],
            "ownerScope 3 breaks `this.owner_scope == 1 || this.owner_scope == 2`"
        );
        assert_eq!(
            fields(check(&validator, &agent(1, 40), Vec::new())),
            ["spec.skillRefs[0]"],
            "kind 40 breaks `this.kind == 43`"
        );
    }
}
