//! Cloud mode (`--auth apikey`): who a call comes from (an API key's identity account), which
//! org it works in, and whether that identity's role allows the RPC, by the rule its proto
//! declares (`rules.rs`). Local mode (`--auth none`) has one implicit caller and checks
//! nothing. docs/security.md describes the model; ADR 0025 the choices.

mod cache;
mod gate;
pub(crate) mod grants;
pub(crate) mod keys;
pub(crate) mod roles;
pub(crate) mod rules;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use stigmer_store::{JsonFilter, JsonPath, ListQuery, Scope, Store, StoredResource};
use tonic::metadata::MetadataMap;

use crate::config::AuthMode;
use crate::error::ApiError;
use crate::fields::{child, get_i64, get_str};
use crate::json::from_json;
use crate::naming::is_valid_slug;
use crate::resource::Caller;
use cache::Expiring;
pub(crate) use gate::KeyRequired;
use grants::{Grant, Grants, IDENTITY_ACCOUNT};
use roles::Role;
use rules::{Check, KindOf, Rule, RuleError, Rules, Target, str_at};

use stigmer_core::{LOCAL, ORG_HEADER};

pub(crate) const API_KEY: &str = "ApiKey";
pub(crate) const IAM_POLICY: &str = "IamPolicy";
pub(crate) const IDENTITY_ACCOUNT_KIND: &str = "IdentityAccount";
const API_KEY_MESSAGE: &str = "ai.stigmer.iam.apikey.v1.ApiKey";
const IAM_POLICY_MESSAGE: &str = "ai.stigmer.iam.iampolicy.v1.IamPolicy";
/// Identity accounts, their keys and every IamPolicy are kept outside any org: they are the
/// platform's, and an org's callers never list or watch them as resources.
pub(crate) const IAM_ORG: &str = "";
/// The label on an IamPolicy holding the org of the resource it grants on, so that a caller's
/// orgs are known from its policies alone.
pub(crate) const ORG_LABEL: &str = "iam.stigmer.ai/org";
/// `status.last_used_at` is written at most this often per key.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Identity resources read per page.
const POLICY_PAGE: usize = 500;

/// A stored key as authentication needs it.
#[derive(Debug, Clone)]
struct KeyRecord {
    id: String,
    hash: String,
    identity: String,
    /// `None`: never expires.
    expires_at: Option<SystemTime>,
}

/// Whether a call must work in an org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrgNeed {
    Required,
    /// Calls about the caller's own identity: whoAmI, its own API keys.
    Optional,
}

pub(crate) struct Auth {
    mode: AuthMode,
    store: Arc<dyn Store>,
    rules: Rules,
    api_key: MessageDescriptor,
    iam_policy: MessageDescriptor,
    keys: Expiring<String, KeyRecord>,
    grants: Expiring<String, Arc<Grants>>,
    last_used: Mutex<HashMap<String, Instant>>,
}

impl Auth {
    /// In `apikey` mode, reads every served RPC's rule and fails on one without.
    pub fn new(
        mode: AuthMode,
        store: Arc<dyn Store>,
        pool: &DescriptorPool,
        services: &[String],
    ) -> Result<Self, RuleError> {
        let rules = match mode {
            AuthMode::None => Rules::default(),
            AuthMode::ApiKey => Rules::read(pool, services)?,
        };
        let message = |name: &'static str| {
            pool.get_message_by_name(name)
                .ok_or(RuleError::Missing(name))
        };
        Ok(Self {
            mode,
            store,
            rules,
            api_key: message(API_KEY_MESSAGE)?,
            iam_policy: message(IAM_POLICY_MESSAGE)?,
            keys: Expiring::new(),
            grants: Expiring::new(),
            last_used: Mutex::new(HashMap::new()),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Who makes a call with these request headers, and in which org. A call about the
    /// caller's own identity (`OrgNeed::Optional`: whoAmI, its own keys) works without one.
    pub async fn caller(&self, metadata: &MetadataMap, need: OrgNeed) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Caller {
                org: org_header(metadata)?.unwrap_or(LOCAL).to_string(),
                identity: LOCAL.to_string(),
                grants: None,
            });
        }
        // Who first: a caller without a key learns nothing, not even that a header is wrong.
        let header = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let identity = self.identity(header).await?;
        let grants = self.grants_of(&identity).await?;
        let org = match (grants.select_org(org_header(metadata)?), need) {
            (Ok(org), _) => org,
            (
                Err(ApiError::FailedPrecondition(_) | ApiError::PermissionDenied(_)),
                OrgNeed::Optional,
            ) if org_header(metadata)?.is_none() => IAM_ORG.to_string(),
            (Err(err), _) => return Err(err),
        };
        Ok(Caller {
            org,
            identity,
            grants: Some(grants),
        })
    }

    /// The identity account behind the API key in an `authorization` header. Every failure
    /// is the same [`ApiError::Unauthenticated`].
    pub async fn identity(&self, authorization: Option<&str>) -> Result<String, ApiError> {
        let key = authorization
            .and_then(keys::bearer_key)
            .ok_or(ApiError::Unauthenticated)?;
        let hash = keys::hash(key);
        let record = match self.keys.get(&hash) {
            Some(record) => record,
            None => {
                let record = self
                    .load_key(&hash)
                    .await?
                    .ok_or(ApiError::Unauthenticated)?;
                self.keys.insert(hash.clone(), record.clone());
                record
            }
        };
        let expired = record.expires_at.is_some_and(|at| at <= SystemTime::now());
        if !keys::hashes_match(&record.hash, &hash) || expired {
            return Err(ApiError::Unauthenticated);
        }
        self.note_use(&record);
        Ok(record.identity)
    }

    /// Whether `caller` may make the call at `path` with `request`.
    pub fn authorize(
        &self,
        path: &str,
        caller: &Caller,
        request: &DynamicMessage,
    ) -> Result<(), ApiError> {
        let Some(grants) = &caller.grants else {
            return Ok(());
        };
        let rule = self.rules.get(path).ok_or_else(|| {
            ApiError::internal(format!("{path} is served but has no authorization rule"))
        })?;
        let org_role = grants.org_role(&caller.org);
        match rule.as_ref() {
            // Only identity calls run outside any org (see `caller`); they serve the caller's own.
            Rule::Open if org_role.is_some() || caller.org == IAM_ORG => Ok(()),
            Rule::Open => Err(ApiError::PermissionDenied(format!(
                "this call needs a role on organization {:?}; you hold access to single resources there only",
                caller.org
            ))),
            Rule::Check(check) => allowed(check, grants, caller, request),
            Rule::Apply { create, update } => {
                let allows =
                    |check: &Check| org_role.is_some_and(|role| role.allows(&check.permission));
                match (allows(create), allows(update)) {
                    (true, true) => Ok(()),
                    (false, _) => Err(ApiError::PermissionDenied(create.error_msg.clone())),
                    (true, false) => Err(ApiError::PermissionDenied(update.error_msg.clone())),
                }
            }
        }
    }

    /// Forgets cached keys and roles, after this process changed either.
    pub fn forget(&self) {
        self.keys.clear();
        self.grants.clear();
    }

    async fn load_key(&self, hash: &str) -> Result<Option<KeyRecord>, ApiError> {
        let Some(slug) = keys::lookup_slug(hash) else {
            return Ok(None);
        };
        let scope = Scope::new(API_KEY, IAM_ORG);
        let Some(row) = self.store.get_by_slug(scope, slug).await? else {
            return Ok(None);
        };
        let key = from_json(&self.api_key, &row.data)?;
        let spec = child(&key, "spec").unwrap_or_else(|| DynamicMessage::new(self.api_key.clone()));
        let never = crate::fields::has(&spec, "never_expires")
            && spec
                .get_field_by_name("never_expires")
                .and_then(|v| v.as_bool())
                == Some(true);
        let expires_at = child(&spec, "expires_at")
            .filter(|_| !never && crate::fields::has(&spec, "expires_at"))
            .map(|at| {
                SystemTime::UNIX_EPOCH + Duration::from_secs(get_i64(&at, "seconds").max(0) as u64)
            });
        Ok(Some(KeyRecord {
            id: row.id,
            hash: get_str(&spec, "key_hash"),
            identity: str_at(&key, "status.audit.spec_audit.created_by.id"),
            expires_at,
        }))
    }

    async fn grants_of(&self, identity: &str) -> Result<Arc<Grants>, ApiError> {
        if let Some(grants) = self.grants.get(&identity.to_string()) {
            return Ok(grants);
        }
        let owned = self.keys_of(identity).await?.into_iter().map(|row| row.id);
        let grants = Grants::from_grants(self.policies_of(identity).await?)
            .with_owned(owned)
            .with_owned([identity.to_string()]);
        let grants = Arc::new(grants);
        self.grants
            .insert(identity.to_string(), Arc::clone(&grants));
        Ok(grants)
    }

    /// Every role granted to `identity`, from the IamPolicies naming it as principal.
    pub async fn policies_of(&self, identity: &str) -> Result<Vec<Grant>, ApiError> {
        let rows = self
            .all_rows(
                IAM_POLICY,
                vec![
                    equals(&["spec", "principal", "id"], identity),
                    equals(&["spec", "principal", "kind"], IDENTITY_ACCOUNT),
                ],
            )
            .await?;
        let mut grants = Vec::new();
        for row in &rows {
            grants.extend(grant_of(&from_json(&self.iam_policy, &row.data)?));
        }
        Ok(grants)
    }

    /// The stored ApiKeys `identity` created.
    pub async fn keys_of(&self, identity: &str) -> Result<Vec<StoredResource>, ApiError> {
        let created_by = ["status", "audit", "specAudit", "createdBy", "id"];
        self.all_rows(API_KEY, vec![equals(&created_by, identity)])
            .await
    }

    /// Every identity resource of `kind` matching `filters`, all pages.
    pub async fn all_rows(
        &self,
        kind: &str,
        filters: Vec<JsonFilter>,
    ) -> Result<Vec<StoredResource>, ApiError> {
        let mut rows = Vec::new();
        loop {
            let page = self
                .store
                .list(ListQuery {
                    scope: Scope::new(kind, IAM_ORG),
                    after_id: rows.last().map(|row: &StoredResource| row.id.clone()),
                    limit: POLICY_PAGE,
                    filters: filters.clone(),
                    proto_only: false,
                })
                .await?;
            let full = page.items.len() == POLICY_PAGE;
            rows.extend(page.items);
            if !full {
                return Ok(rows);
            }
        }
    }

    /// Writes `status.last_used_at` of a key in the background, at most once a minute per key
    /// and never on the call's own path.
    fn note_use(&self, record: &KeyRecord) {
        {
            let mut last = self.last_used.lock().unwrap_or_else(|e| e.into_inner());
            if last
                .get(&record.id)
                .is_some_and(|at| at.elapsed() < LAST_USED_EVERY)
            {
                return;
            }
            if last.len() > 100_000 {
                last.clear();
            }
            last.insert(record.id.clone(), Instant::now());
        }
        let store = Arc::clone(&self.store);
        let descriptor = self.api_key.clone();
        let id = record.id.clone();
        tokio::spawn(async move {
            if let Err(err) = stamp_last_used(store, descriptor, id).await {
                tracing::debug!(error = %err, "recording an API key's last use");
            }
        });
    }
}

/// A filter on the JSON at `path` (camelCase object keys).
pub(crate) fn equals(path: &[&str], value: &str) -> JsonFilter {
    JsonFilter::Equals {
        path: JsonPath::new(path.iter().copied()),
        value: value.to_string(),
    }
}

/// The grant an IamPolicy makes, if its relation is a role this server knows.
pub(crate) fn grant_of(policy: &DynamicMessage) -> Option<Grant> {
    let role = Role::from_relation(&str_at(policy, "spec.relation"))?;
    let resource_kind = str_at(policy, "spec.resource.kind");
    let resource_id = str_at(policy, "spec.resource.id");
    let org = grant_org(policy);
    Some(Grant {
        resource_kind,
        resource_id,
        org,
        role,
    })
}

/// The org an IamPolicy grants in: the organization itself, or the org of the resource.
pub(crate) fn grant_org(policy: &DynamicMessage) -> String {
    if str_at(policy, "spec.resource.kind") == grants::ORGANIZATION {
        str_at(policy, "spec.resource.id")
    } else {
        crate::fields::child(policy, "metadata")
            .and_then(|metadata| label(&metadata, ORG_LABEL))
            .unwrap_or_default()
    }
}

fn label(metadata: &DynamicMessage, key: &str) -> Option<String> {
    let labels = metadata.get_field_by_name("labels")?;
    let value = labels
        .as_map()?
        .get(&prost_reflect::MapKey::String(key.to_string()))?;
    value.as_str().map(str::to_string)
}

fn allowed(
    check: &Check,
    grants: &Grants,
    caller: &Caller,
    request: &DynamicMessage,
) -> Result<(), ApiError> {
    let role = match &check.target {
        Target::Organization { field } => {
            let named = if field.is_empty() {
                String::new()
            } else {
                str_at(request, field)
            };
            if named.is_empty() || named == caller.org {
                grants.org_role(&caller.org)
            } else {
                grants.org_role(&named)
            }
        }
        Target::Resource { kind, field } => {
            let id = str_at(request, field);
            let kind_named = match kind {
                KindOf::Fixed(_) => true,
                KindOf::Field(path) => !str_at(request, path).is_empty(),
            };
            if id.is_empty() || !kind_named {
                // No id to look a grant up by: only the org's role can allow it.
                grants.org_role(&caller.org)
            } else {
                grants.resource_role(&caller.org, &id)
            }
        }
        Target::Platform => None,
    };
    if role.is_some_and(|role| role.allows(&check.permission)) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(check.error_msg.clone()))
    }
}

/// The org header, if sent: it must be a slug.
fn org_header(metadata: &MetadataMap) -> Result<Option<&str>, ApiError> {
    match metadata.get(ORG_HEADER) {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(org) if is_valid_slug(org) => Ok(Some(org)),
            _ => Err(ApiError::invalid_field(
                "request metadata",
                ORG_HEADER,
                "must be an org slug: 1-63 lowercase letters, digits or '-'",
            )),
        },
    }
}

async fn stamp_last_used(
    store: Arc<dyn Store>,
    descriptor: MessageDescriptor,
    id: String,
) -> Result<(), ApiError> {
    let scope = Scope::new(API_KEY, IAM_ORG);
    let Some(row) = store.get(scope.clone(), id).await? else {
        return Ok(());
    };
    let mut key = from_json(&descriptor, &row.data)?;
    if let Some(at) = crate::fields::child_mut(&mut key, "status")
        .and_then(|status| crate::fields::child_mut(status, "last_used_at"))
    {
        crate::resource::set_time(at, SystemTime::now());
    }
    let data = crate::json::to_json(&key)?;
    let resource = stigmer_store::NewResource {
        scope,
        id: row.id,
        slug: row.slug,
        data,
        proto: None,
    };
    // A concurrent change (an update, a revocation) wins: the stamp is only a hint.
    match store.replace(resource, row.revision).await {
        Ok(_) | Err(stigmer_store::StoreError::Conflict { .. }) => Ok(()),
        Err(stigmer_store::StoreError::NotFound { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
