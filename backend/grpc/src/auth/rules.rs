//! Each RPC's authorization rule, read once from its method options: upstream's
//! `rpcauthorization.config` (50056), `is_public` (50057) and `is_skip_authorization` (50058).
//! No kind has code of its own here: a new RPC is authorized by what its proto says, and a
//! served RPC whose proto says nothing stops the server from starting with `--auth apikey`.

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, ReflectMessage, Value};

const CONFIG: &str = "ai.stigmer.iam.iampolicy.v1.rpcauthorization.config";
const IS_PUBLIC: &str = "ai.stigmer.iam.iampolicy.v1.rpcauthorization.is_public";
const IS_SKIP: &str = "ai.stigmer.iam.iampolicy.v1.rpcauthorization.is_skip_authorization";
const KIND_META: &str = "ai.stigmer.commons.apiresource.apiresourcekind.kind_meta";
/// The `ApiResourceKind` value whose resources are organizations, named by their slug.
const ORGANIZATION: &str = "organization";

/// What a caller needs to make a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Any authenticated caller with a role in the org it works in (`is_public`,
    /// `is_skip_authorization`): the handler serves only that org's resources.
    Open,
    Check(Check),
    /// `apply` (upstream leaves it to the handler, which picks create or update): both the
    /// create rule and the update rule of the same service, on the caller's org.
    Apply {
        create: Check,
        update: Check,
    },
}

/// A permission on one target, and upstream's message when it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// An `ApiResourceIamPermission` value name ("can_edit").
    pub permission: String,
    pub target: Target,
    pub error_msg: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The org at `field` (dot path in the request), or the caller's when the path or the
    /// field is empty.
    Organization { field: String },
    /// The resource whose id is at `field`, of a fixed kind or of the kind named at a path.
    Resource { kind: KindOf, field: String },
    /// A platform-wide resource (`resource_id`): no organization role reaches it.
    Platform,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindOf {
    /// A kind name as in `kind_meta.name` ("Agent").
    Fixed(String),
    /// The request field holding the kind's name (`resource_kind_path`).
    Field(String),
}

/// Why a served RPC has no rule: a defect in the protos, caught at start-up and by tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("descriptor pool lacks {0}")]
    Missing(&'static str),
    #[error(
        "{0} has no authorization rule (rpcauthorization config, is_public or is_skip_authorization)"
    )]
    NoRule(String),
    #[error("{method}: {why}")]
    Invalid { method: String, why: String },
}

/// Every served RPC's rule, by path ("/pkg.Service/method").
#[derive(Debug, Default)]
pub struct Rules {
    by_path: HashMap<String, Arc<Rule>>,
}

impl Rules {
    /// Reads the rules of every method of `services`. An RPC without a rule is allowed only
    /// where upstream leaves the check to its handler: `apply` (then see [`Rule::Apply`]), a
    /// `create` (then `create` on the org at `metadata.org`, which is what those handlers
    /// check first) and a read (`get…`, `list…`: then [`Rule::Open`]).
    pub fn read(pool: &DescriptorPool, services: &[String]) -> Result<Self, RuleError> {
        let options = Options::of(pool)?;
        let mut by_path = HashMap::new();
        for service in services {
            let service = pool
                .get_service_by_name(service)
                .ok_or(RuleError::Missing("a served service"))?;
            for method in service.methods() {
                by_path.insert(path(&method), Arc::new(resolve(&options, &method)?));
            }
        }
        Ok(Self { by_path })
    }

    pub fn get(&self, path: &str) -> Option<&Arc<Rule>> {
        self.by_path.get(path)
    }
}

fn path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// The method's own rule, or the one upstream leaves to its handler.
fn resolve(options: &Options, method: &MethodDescriptor) -> Result<Rule, RuleError> {
    match options.rule(method)? {
        Some(rule) => Ok(rule),
        None => fallback(options, method),
    }
}

fn fallback(options: &Options, method: &MethodDescriptor) -> Result<Rule, RuleError> {
    let sibling = |name: &str| {
        method
            .parent_service()
            .methods()
            .find(|m| m.name() == name)
            .filter(|_| name != method.name())
            .map(|m| resolve(options, &m))
            .transpose()
    };
    match method.name() {
        // A kind without update (ExecutionContext) applies under its create rule alone.
        "apply" => match (sibling("create")?, sibling("update")?) {
            (Some(Rule::Check(create)), Some(Rule::Check(update))) => {
                Ok(Rule::Apply { create, update })
            }
            (Some(Rule::Check(create)), None) => Ok(Rule::Apply {
                update: create.clone(),
                create,
            }),
            _ => Err(RuleError::NoRule(path(method))),
        },
        "create" => Ok(Rule::Check(Check {
            permission: "create".into(),
            target: Target::Organization {
                field: "metadata.org".into(),
            },
            error_msg: format!(
                "unauthorized to create {} in this organization",
                method.input().name()
            ),
        })),
        // Reads upstream leaves to the handler (getByReference, list, listBy…): the handler
        // serves only the caller's org.
        name if name.starts_with("get") || name.starts_with("list") => Ok(Rule::Open),
        _ => Err(RuleError::NoRule(path(method))),
    }
}

/// The extensions rules are read from.
struct Options {
    config: prost_reflect::ExtensionDescriptor,
    is_public: prost_reflect::ExtensionDescriptor,
    is_skip: prost_reflect::ExtensionDescriptor,
    kind_meta: prost_reflect::ExtensionDescriptor,
}

impl Options {
    fn of(pool: &DescriptorPool) -> Result<Self, RuleError> {
        let extension = |name: &'static str| {
            pool.get_extension_by_name(name)
                .ok_or(RuleError::Missing(name))
        };
        Ok(Self {
            config: extension(CONFIG)?,
            is_public: extension(IS_PUBLIC)?,
            is_skip: extension(IS_SKIP)?,
            kind_meta: extension(KIND_META)?,
        })
    }

    fn rule(&self, method: &MethodDescriptor) -> Result<Option<Rule>, RuleError> {
        let options = method.options();
        let flag = |extension| {
            options.has_extension(extension)
                && matches!(options.get_extension(extension).as_ref(), Value::Bool(true))
        };
        if flag(&self.is_public) || flag(&self.is_skip) {
            return Ok(Some(Rule::Open));
        }
        if !options.has_extension(&self.config) {
            return Ok(None);
        }
        let config = options.get_extension(&self.config);
        let config = config.as_message().ok_or_else(|| RuleError::Invalid {
            method: path(method),
            why: "config is not a message".into(),
        })?;
        self.check(method, config)
            .map(|check| Some(Rule::Check(check)))
    }

    fn check(
        &self,
        method: &MethodDescriptor,
        config: &DynamicMessage,
    ) -> Result<Check, RuleError> {
        let invalid = |why: String| RuleError::Invalid {
            method: path(method),
            why,
        };
        let text = |field: &str| crate::fields::get_str(config, field);
        let permission = enum_name(config, "permission")
            .filter(|name| name != "unspecified")
            .ok_or_else(|| invalid("config names no permission".into()))?;
        let field = text("field_path");
        let target = if !text("resource_id").is_empty() {
            Target::Platform
        } else if !text("resource_kind_path").is_empty() {
            Target::Resource {
                kind: KindOf::Field(text("resource_kind_path")),
                field,
            }
        } else {
            match enum_name(config, "resource_kind").as_deref() {
                // A permission with no resource (IamPolicy get): on the caller's org.
                Some(ORGANIZATION) | None => Target::Organization { field },
                Some(_) => Target::Resource {
                    kind: KindOf::Fixed(self.kind_name(config)?),
                    field,
                },
            }
        };
        match &target {
            Target::Resource { field, .. } => {
                check_path(&method.input(), field).map_err(invalid)?
            }
            Target::Organization { field } if !field.is_empty() => {
                check_path(&method.input(), field).map_err(invalid)?
            }
            _ => {}
        }
        Ok(Check {
            permission,
            target,
            error_msg: text("error_msg"),
        })
    }

    /// `kind_meta.name` of the config's `resource_kind` ("Agent" for `agent`).
    fn kind_name(&self, config: &DynamicMessage) -> Result<String, RuleError> {
        let number = crate::fields::get_i32(config, "resource_kind");
        let kinds = config
            .descriptor()
            .get_field_by_name("resource_kind")
            .and_then(|field| field.kind().as_enum().cloned())
            .ok_or(RuleError::Missing("RpcAuthorizationConfig.resource_kind"))?;
        let value = kinds
            .get_value(number)
            .ok_or(RuleError::Missing("an ApiResourceKind value"))?;
        let options = value.options();
        let meta = options.get_extension(&self.kind_meta);
        meta.as_message()
            .map(|meta| crate::fields::get_str(meta, "name"))
            .filter(|name| !name.is_empty())
            .ok_or(RuleError::Missing(
                "kind_meta.name on an ApiResourceKind value",
            ))
    }
}

fn enum_name(message: &DynamicMessage, field: &str) -> Option<String> {
    let number = crate::fields::get_i32(message, field);
    let descriptor = message.descriptor().get_field_by_name(field)?;
    let kinds = descriptor.kind();
    let value = kinds.as_enum()?.get_value(number)?;
    (number != 0).then(|| value.name().to_string())
}

/// A rule's path must name a string field of the request, or checks would read "" forever.
fn check_path(input: &prost_reflect::MessageDescriptor, path: &str) -> Result<(), String> {
    let mut message = input.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = message.get_field_by_name(part).ok_or_else(|| {
            format!(
                "field_path {path:?}: {} has no field {part:?}",
                message.full_name()
            )
        })?;
        match (field.kind(), parts.peek()) {
            (prost_reflect::Kind::Message(next), Some(_)) => message = next,
            (prost_reflect::Kind::String, None) if !field.is_list() => return Ok(()),
            _ => {
                return Err(format!(
                    "field_path {path:?} does not end at a string field"
                ));
            }
        }
    }
    Err(format!("field_path {path:?} is empty"))
}

/// The string at a dot path of `message` ("" when any step is unset).
pub fn str_at(message: &DynamicMessage, path: &str) -> String {
    let mut current = std::borrow::Cow::Borrowed(message);
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return crate::fields::get_str(&current, part);
        }
        match crate::fields::child(&current, part) {
            Some(next) => current = std::borrow::Cow::Owned(next),
            None => return String::new(),
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::kinds::KINDS;

    fn rules() -> Rules {
        let catalog = Catalog::build(&stigmer_api::DESCRIPTOR_POOL, KINDS).expect("catalog");
        Rules::read(&stigmer_api::DESCRIPTOR_POOL, catalog.services())
            .expect("every RPC has a rule")
    }

    #[test]
    fn every_served_rpc_has_a_rule_and_upstream_s_are_read_as_written() {
        let rules = rules();
        let rule = |path: &str| {
            rules
                .get(path)
                .unwrap_or_else(|| panic!("{path}"))
                .as_ref()
                .clone()
        };
        assert_eq!(
            rule("/ai.stigmer.agentic.agent.v1.AgentCommandController/create"),
            Rule::Check(Check {
                permission: "can_create_agent".into(),
                target: Target::Organization {
                    field: "metadata.org".into()
                },
                error_msg: "unauthorized to create agent in this organization".into(),
            })
        );
        assert_eq!(
            rule("/ai.stigmer.agentic.agent.v1.AgentCommandController/update"),
            Rule::Check(Check {
                permission: "can_edit".into(),
                target: Target::Resource {
                    kind: KindOf::Fixed("Agent".into()),
                    field: "metadata.id".into()
                },
                error_msg: "unauthorized to update agent".into(),
            })
        );
        assert!(matches!(
            rule("/ai.stigmer.agentic.agent.v1.AgentCommandController/apply"),
            Rule::Apply { .. }
        ));
        assert_eq!(
            rule("/ai.stigmer.iam.identityaccount.v1.IdentityAccountQueryController/whoAmI"),
            Rule::Open
        );
        assert!(matches!(
            rule("/ai.stigmer.backend.v1.ResourceService/getAtRevision"),
            Rule::Check(Check {
                target: Target::Resource {
                    kind: KindOf::Field(_),
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn an_rpc_without_a_rule_that_is_not_left_to_a_handler_is_refused() {
        use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};
        let mut pool = stigmer_api::DESCRIPTOR_POOL.clone();
        let method = |name: &str| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(".ai.stigmer.backend.v1.InfoRequest".into()),
            output_type: Some(".ai.stigmer.backend.v1.InfoRequest".into()),
            ..Default::default()
        };
        pool.add_file_descriptor_proto(FileDescriptorProto {
            name: Some("test/unruled.proto".into()),
            package: Some("test".into()),
            dependency: vec!["ai/stigmer/backend/v1/resource_service.proto".into()],
            service: vec![ServiceDescriptorProto {
                name: Some("Unruled".into()),
                method: vec![method("list"), method("frobnicate")],
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("a test service");
        let err = Rules::read(&pool, &["test.Unruled".into()]).expect_err("frobnicate has no rule");
        assert_eq!(err, RuleError::NoRule("/test.Unruled/frobnicate".into()));
        let err = Rules::read(&pool, &["test.Missing".into()]).expect_err("unknown service");
        assert!(matches!(err, RuleError::Missing(_)));
    }
}
