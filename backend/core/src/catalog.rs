//! What the server serves, read once at start-up from the descriptor pool: each kind's message,
//! id prefix and services (every controller names its kind in the `api_resource_kind` option).

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::cached_encoding::EncodingPatcher;
use crate::kinds::{KindRegistration, OwnerScopeDefault};
use crate::relations::{DEFAULT_INSTANCE_FIELD, RELATIONS, Relations};

const KIND_ENUM: &str = "ai.stigmer.commons.apiresource.apiresourcekind.ApiResourceKind";
const KIND_META: &str = "ai.stigmer.commons.apiresource.apiresourcekind.kind_meta";
const SERVICE_KIND: &str = "ai.stigmer.commons.apiresource.api_resource_kind";
const IAM_GROUP: &str = "iam";
/// `ApiResourceOwnerScope.organization`.
const OWNER_SCOPE_ORGANIZATION: i32 = 2;

/// A served kind.
#[derive(Debug)]
pub struct KindInfo {
    /// "Agent".
    pub name: String,
    /// Its `ApiResourceKind` number (40).
    pub number: i32,
    /// Its `ApiResourceKind` value name ("agent").
    pub enum_name: String,
    pub id_prefix: String,
    pub versioned: bool,
    /// The envelope message (`ai.stigmer.agentic.agent.v1.Agent`).
    pub message: MessageDescriptor,
    /// Kinds reachable by reference (they have getByReference) must have a name or slug.
    pub named: bool,
    /// `metadata.owner_scope` to fill in when unspecified.
    pub default_owner_scope: Option<i32>,
    /// Where reads served from the `proto` cache put the row's id and revision.
    pub patcher: Option<EncodingPatcher>,
    /// Its `ApiResourceGroup` value name: "agentic", or "iam" for the identity kinds (ApiKey,
    /// IdentityAccount, IamPolicy), which their own handlers serve and no org holds.
    pub group: String,
    /// What it belongs to, what is made with it and what its delete takes along
    /// (`relations.rs`).
    pub relations: &'static Relations,
}

impl KindInfo {
    /// Whether this is an identity kind (group `iam`): served by its own handlers, kept out
    /// of every org, never exported, imported or watched as an org's resource.
    pub fn is_iam(&self) -> bool {
        self.group == IAM_GROUP
    }

    /// The `api_version` its resources carry: "agentic.stigmer.ai/v1", "iam.stigmer.ai/v1".
    pub fn api_version(&self) -> String {
        format!("{}.stigmer.ai/v1", self.group)
    }
}

/// What a method does, from its name. Names are the contract's lowerCamel RPC names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Update,
    Apply,
    Delete,
    Get,
    GetByReference,
    List,
    /// A list of the resources of one parent (listBySession, getByAgent, ...).
    ListBy,
    /// An execution's status change along its lifecycle.
    UpdateStatus,
    /// An execution's current state, then every change until it ends.
    Subscribe,
    /// A new version of a Skill from its zip artifact.
    Push,
    /// An artifact's bytes.
    GetArtifact,
    /// An RPC of the protos that this server does not serve (answered UNIMPLEMENTED).
    Unserved,
}

impl Verb {
    fn from_method_name(name: &str) -> Self {
        match name {
            "create" => Self::Create,
            "update" => Self::Update,
            "apply" => Self::Apply,
            "delete" => Self::Delete,
            "get" => Self::Get,
            "getByReference" => Self::GetByReference,
            "list" => Self::List,
            "updateStatus" => Self::UpdateStatus,
            "subscribe" => Self::Subscribe,
            "push" => Self::Push,
            "getArtifact" => Self::GetArtifact,
            name if name.starts_with("listBy") || name.starts_with("getBy") => Self::ListBy,
            _ => Self::Unserved,
        }
    }

    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Apply | Self::Delete
        )
    }
}

/// One RPC of one controller.
#[derive(Debug)]
pub struct Method {
    /// "/ai.stigmer.agentic.agent.v1.AgentCommandController/create".
    pub path: String,
    pub name: String,
    pub verb: Verb,
    pub kind: Arc<KindInfo>,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub server_streaming: bool,
    /// For [`Verb::ListBy`]: the request field naming the parent and its JSON path.
    pub list_by: Option<crate::kinds::ListBy>,
}

/// The backend-wide service (ours): the change feed and facts about the server.
pub const BACKEND_SERVICE: &str = "ai.stigmer.backend.v1.ResourceService";

/// What a backend-wide method does, and so how it answers: a stream of messages or one. The
/// server picks the call's transport and its handler from this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendVerb {
    Stream(BackendStream),
    Unary(BackendUnary),
}

/// A backend-wide method that answers with a server stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendStream {
    Watch,
    Export,
    Backup,
}

/// A backend-wide method that answers with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendUnary {
    GetAtRevision,
    Info,
    Import,
    ApplyBatch,
    Find,
    Txn,
}

/// One RPC of the backend-wide service.
#[derive(Debug)]
pub struct BackendMethod {
    /// "/ai.stigmer.backend.v1.ResourceService/watch".
    pub path: String,
    pub verb: BackendVerb,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
}

/// Why the catalog could not be built: a defect in the protos or in the kind registry.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("descriptor pool lacks {0}")]
    Missing(String),
    #[error("no ApiResourceKind value has kind_meta.name {0:?}")]
    UnknownKind(String),
    #[error("relations of {kind}: {problem}")]
    Relations { kind: String, problem: String },
}

/// Every served kind and method.
#[derive(Debug)]
pub struct Catalog {
    kinds: Vec<Arc<KindInfo>>,
    methods: HashMap<String, Arc<Method>>,
    backend: HashMap<String, Arc<BackendMethod>>,
    services: Vec<String>,
}

impl Catalog {
    pub fn build(
        pool: &DescriptorPool,
        registrations: &[KindRegistration],
    ) -> Result<Self, CatalogError> {
        let services_by_kind = services_by_kind(pool)?;
        let mut kinds = Vec::new();
        for registration in registrations {
            let kind = kind_info(pool, registration, &services_by_kind)?;
            kinds.push(Arc::new(kind));
        }
        let mut methods = HashMap::new();
        let mut services = Vec::new();
        for kind in &kinds {
            for service in services_by_kind.get(&kind.number).into_iter().flatten() {
                services.push(service.full_name().to_string());
                for method in service.methods() {
                    let path = format!("/{}/{}", service.full_name(), method.name());
                    let list_by = crate::kinds::LIST_BY
                        .iter()
                        .find(|l| l.kind == kind.name && l.method == method.name())
                        .copied();
                    let verb = match Verb::from_method_name(method.name()) {
                        Verb::ListBy if list_by.is_none() => Verb::Unserved,
                        verb => verb,
                    };
                    let entry = Method {
                        path: path.clone(),
                        name: method.name().to_string(),
                        verb,
                        list_by,
                        kind: Arc::clone(kind),
                        input: method.input(),
                        output: method.output(),
                        server_streaming: method.is_server_streaming(),
                    };
                    methods.insert(path, Arc::new(entry));
                }
            }
        }
        check_relations(&kinds, RELATIONS)?;
        let backend = backend_methods(pool)?;
        services.push(BACKEND_SERVICE.to_string());
        services.sort();
        Ok(Self {
            kinds,
            methods,
            backend,
            services,
        })
    }

    pub fn backend_method(&self, path: &str) -> Option<&Arc<BackendMethod>> {
        self.backend.get(path)
    }

    pub fn kind_by_name(&self, name: &str) -> Option<&Arc<KindInfo>> {
        self.kinds.iter().find(|kind| kind.name == name)
    }

    /// A kind an org holds, by name: every kind but the identity kinds, which the backend-wide
    /// service (watch, getAtRevision, export, import) never reaches.
    pub fn org_kind_by_name(&self, name: &str) -> Option<&Arc<KindInfo>> {
        self.kind_by_name(name).filter(|kind| !kind.is_iam())
    }

    /// What a request naming `name`, which [`Self::org_kind_by_name`] does not know, is told.
    pub fn not_an_org_kind(&self, name: &str) -> String {
        let known: Vec<&str> = self
            .kinds
            .iter()
            .filter(|kind| !kind.is_iam())
            .map(|kind| kind.name.as_str())
            .collect();
        format!("{name:?} is not a kind; use one of {}", known.join(", "))
    }

    /// The kind an `ApiResourceKind` value name stands for ("agent" for Agent), as IamPolicy
    /// references name kinds.
    pub fn kind_by_enum_name(&self, name: &str) -> Option<&Arc<KindInfo>> {
        self.kinds.iter().find(|kind| kind.enum_name == name)
    }

    pub fn method(&self, path: &str) -> Option<&Arc<Method>> {
        self.methods.get(path)
    }

    /// The method of `kind` that does `verb`, if its services have one.
    pub fn method_of(&self, kind: &str, verb: Verb) -> Option<&Arc<Method>> {
        self.methods
            .values()
            .find(|method| method.kind.name == kind && method.verb == verb)
    }

    /// Full names of every controller service served.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    pub fn kinds(&self) -> &[Arc<KindInfo>] {
        &self.kinds
    }
}

fn backend_methods(
    pool: &DescriptorPool,
) -> Result<HashMap<String, Arc<BackendMethod>>, CatalogError> {
    let service = pool
        .get_service_by_name(BACKEND_SERVICE)
        .ok_or_else(|| CatalogError::Missing(BACKEND_SERVICE.into()))?;
    let mut methods = HashMap::new();
    for method in service.methods() {
        let verb = match method.name() {
            "watch" => BackendVerb::Stream(BackendStream::Watch),
            "getAtRevision" => BackendVerb::Unary(BackendUnary::GetAtRevision),
            "info" => BackendVerb::Unary(BackendUnary::Info),
            "export" => BackendVerb::Stream(BackendStream::Export),
            "import" => BackendVerb::Unary(BackendUnary::Import),
            "applyBatch" => BackendVerb::Unary(BackendUnary::ApplyBatch),
            "find" => BackendVerb::Unary(BackendUnary::Find),
            "txn" => BackendVerb::Unary(BackendUnary::Txn),
            "backup" => BackendVerb::Stream(BackendStream::Backup),
            other => {
                return Err(CatalogError::Missing(format!(
                    "a handler for {BACKEND_SERVICE}/{other}"
                )));
            }
        };
        let path = format!("/{BACKEND_SERVICE}/{}", method.name());
        let entry = BackendMethod {
            path: path.clone(),
            verb,
            input: method.input(),
            output: method.output(),
        };
        methods.insert(path, Arc::new(entry));
    }
    Ok(methods)
}

fn services_by_kind(
    pool: &DescriptorPool,
) -> Result<HashMap<i32, Vec<prost_reflect::ServiceDescriptor>>, CatalogError> {
    let extension = pool
        .get_extension_by_name(SERVICE_KIND)
        .ok_or_else(|| CatalogError::Missing(SERVICE_KIND.into()))?;
    let mut map: HashMap<i32, Vec<_>> = HashMap::new();
    for service in pool.services() {
        let options = service.options();
        if !options.has_extension(&extension) {
            continue;
        }
        if let Value::EnumNumber(number) = options.get_extension(&extension).as_ref() {
            map.entry(*number).or_default().push(service);
        }
    }
    Ok(map)
}

fn kind_info(
    pool: &DescriptorPool,
    registration: &KindRegistration,
    services_by_kind: &HashMap<i32, Vec<prost_reflect::ServiceDescriptor>>,
) -> Result<KindInfo, CatalogError> {
    let kinds = pool
        .get_enum_by_name(KIND_ENUM)
        .ok_or_else(|| CatalogError::Missing(KIND_ENUM.into()))?;
    let meta_extension = pool
        .get_extension_by_name(KIND_META)
        .ok_or_else(|| CatalogError::Missing(KIND_META.into()))?;
    let (number, enum_name, meta) = kinds
        .values()
        .find_map(|value| {
            let options = value.options();
            let meta = options.get_extension(&meta_extension).as_message()?.clone();
            (str_of(&meta, "name") == registration.name)
                .then(|| (value.number(), value.name().to_string(), meta))
        })
        .ok_or_else(|| CatalogError::UnknownKind(registration.name.into()))?;
    let group = enum_value_name(&meta, "group");
    let message_name = format!(
        "ai.stigmer.{group}.{}.v1.{}",
        registration.name.to_lowercase(),
        registration.name
    );
    let message = pool
        .get_message_by_name(&message_name)
        .ok_or(CatalogError::Missing(message_name))?;
    let named = services_by_kind
        .get(&number)
        .into_iter()
        .flatten()
        .any(|service| service.methods().any(|m| m.name() == "getByReference"));
    Ok(KindInfo {
        name: registration.name.to_string(),
        number,
        enum_name,
        id_prefix: str_of(&meta, "id_prefix"),
        versioned: matches!(
            meta.get_field_by_name("is_versioned").as_deref(),
            Some(Value::Bool(true))
        ),
        patcher: EncodingPatcher::of(&message),
        message,
        named,
        group,
        relations: Relations::of_kind(registration.name),
        default_owner_scope: match registration.owner_scope {
            OwnerScopeDefault::Organization => Some(OWNER_SCOPE_ORGANIZATION),
            OwnerScopeDefault::Unspecified => None,
        },
    })
}

/// Every name in the relations table must be a served kind or a field its kind has: a
/// misspelt one would otherwise read as "" and silently switch a rule off.
fn check_relations(kinds: &[Arc<KindInfo>], rows: &[Relations]) -> Result<(), CatalogError> {
    let served = |name: &str| kinds.iter().find(|kind| kind.name == name);
    for row in rows {
        let problem = |problem: String| CatalogError::Relations {
            kind: row.kind.to_string(),
            problem,
        };
        let kind = served(row.kind).ok_or_else(|| problem("is not a served kind".into()))?;
        let spec = sub_message(&kind.message, "spec")
            .ok_or_else(|| problem("has no spec message".into()))?;
        let has_field = |name: &str| spec.get_field_by_name(name).is_some();
        let fields = row
            .fixed_fields()
            .chain(row.reference_kinds.iter().map(|(field, _)| *field));
        for field in fields {
            if !has_field(field) {
                return Err(problem(format!("spec has no field {field}")));
            }
        }
        let mut kinds_named: Vec<&str> = row.reference_kinds.iter().map(|(_, k)| *k).collect();
        if let Some(parent) = row.parent {
            kinds_named.extend(parent.kinds);
            if let Some((_, from)) = parent.label_from_parent {
                for parent_kind in parent.kinds.iter().filter_map(|name| served(name)) {
                    let parent_spec = sub_message(&parent_kind.message, "spec");
                    if parent_spec
                        .and_then(|s| s.get_field_by_name(from))
                        .is_none()
                    {
                        return Err(problem(format!(
                            "its label comes from {}'s spec.{from}, which does not exist",
                            parent_kind.name
                        )));
                    }
                }
            }
        }
        if let Some(instance) = row.default_instance {
            kinds_named.push(instance);
            let status = sub_message(&kind.message, "status");
            if status
                .and_then(|s| s.get_field_by_name(DEFAULT_INSTANCE_FIELD))
                .is_none()
            {
                return Err(problem(format!("status has no {DEFAULT_INSTANCE_FIELD}")));
            }
        }
        if let Some(missing) = kinds_named.iter().find(|name| served(name).is_none()) {
            return Err(problem(format!("names {missing}, which is not served")));
        }
    }
    Ok(())
}

fn sub_message(message: &MessageDescriptor, field: &str) -> Option<MessageDescriptor> {
    message
        .get_field_by_name(field)?
        .kind()
        .as_message()
        .cloned()
}

fn enum_value_name(message: &DynamicMessage, field: &str) -> String {
    let number = match message.get_field_by_name(field).as_deref() {
        Some(Value::EnumNumber(number)) => *number,
        _ => 0,
    };
    message
        .descriptor()
        .get_field_by_name(field)
        .and_then(|field| field.kind().as_enum()?.get_value(number))
        .map(|value| value.name().to_string())
        .unwrap_or_default()
}

fn str_of(message: &DynamicMessage, field: &str) -> String {
    message
        .get_field_by_name(field)
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KINDS;

    #[test]
    fn a_misspelt_field_or_kind_in_the_relations_table_stops_the_build() {
        let catalog = Catalog::build(&stigmer_api::DESCRIPTOR_POOL, KINDS).expect("catalog");
        let misspelt = |row: Relations| {
            check_relations(&catalog.kinds, &[row])
                .expect_err("a wrong name must be refused")
                .to_string()
        };
        let agent = *Relations::of_kind("AgentInstance");
        let parent = agent.parent.expect("AgentInstance has a parent");
        let wrong_field = Relations {
            parent: Some(crate::relations::Parent {
                field: "agentid",
                ..parent
            }),
            ..agent
        };
        assert!(misspelt(wrong_field).contains("spec has no field agentid"));
        let wrong_kind = Relations {
            parent: Some(crate::relations::Parent {
                kinds: &["Agnet"],
                ..parent
            }),
            ..agent
        };
        assert!(misspelt(wrong_kind).contains("names Agnet"));
        let wrong_fixed = Relations {
            fixed: &["session"],
            ..*Relations::of_kind("AgentExecution")
        };
        assert!(misspelt(wrong_fixed).contains("spec has no field session"));
        check_relations(&catalog.kinds, RELATIONS).expect("the real table is consistent");
    }

    #[test]
    fn every_registered_kind_resolves_with_its_prefix_and_services() {
        let catalog = Catalog::build(&stigmer_api::DESCRIPTOR_POOL, KINDS).expect("catalog");
        let prefixes: Vec<(&str, &str)> = catalog
            .kinds()
            .iter()
            .map(|k| (k.name.as_str(), k.id_prefix.as_str()))
            .collect();
        assert!(prefixes.contains(&("Agent", "agt")));
        assert!(prefixes.contains(&("ExecutionContext", "exec")));
        assert_eq!(catalog.kinds().len(), KINDS.len());
        assert!(prefixes.contains(&("ApiKey", "key")));
        // Every kind has a Command and a Query controller, but IdentityAccount (queries
        // only); plus the backend-wide service.
        assert_eq!(catalog.services().len(), 2 * KINDS.len() - 1 + 1);
        let iam: Vec<&str> = catalog
            .kinds()
            .iter()
            .filter(|k| k.is_iam())
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(iam, ["IdentityAccount", "ApiKey", "IamPolicy"]);
        assert!(catalog.org_kind_by_name("ApiKey").is_none());
        assert_eq!(
            catalog
                .kind_by_enum_name("agent_instance")
                .map(|k| k.name.as_str()),
            Some("AgentInstance")
        );
        assert!(
            catalog
                .backend_method("/ai.stigmer.backend.v1.ResourceService/watch")
                .is_some()
        );
        let create = catalog
            .method("/ai.stigmer.agentic.agent.v1.AgentCommandController/create")
            .expect("agent create");
        assert_eq!(create.verb, Verb::Create);
        assert!(create.kind.named);
    }
}
