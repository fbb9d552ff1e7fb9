//! The identity services, upstream's packages and RPC names: ApiKey, IdentityAccount and
//! IamPolicy. Their resources are kept outside every org (`auth::IAM_ORG`); each handler
//! scopes what it reaches to the caller (its own keys and account) or to the org the caller
//! works in (the policies granting on it), as the generic controller scopes to the org.

use std::time::SystemTime;

use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use stigmer_store::{Mutation, Scope, StoredResource};

use crate::auth::grants::{Grants, IDENTITY_ACCOUNT, ORGANIZATION};
use crate::auth::keys::{self, NewKey};
use crate::auth::roles::Role;
use crate::auth::rules::str_at;
use crate::auth::{API_KEY, IAM_ORG, IAM_POLICY, IDENTITY_ACCOUNT_KIND, ORG_LABEL, equals};
use crate::catalog::{KindInfo, Method};
use crate::controller::{Controller, decode_row, id_of, new_row, not_found};
use crate::error::{ApiError, FieldViolation};
use crate::fields::{child_mut, get_str, set, set_str};
use crate::resource::{Caller, fill_type_fields, meta, prepare_create, set_revision};
use crate::validation::check;

impl Controller {
    /// Serves an RPC of an identity kind.
    pub(crate) async fn serve_iam(
        &self,
        method: &Method,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let kind = &method.kind;
        let Some(grants) = caller.grants.as_deref() else {
            return Err(ApiError::FailedPrecondition(format!(
                "{} needs a server started with --auth apikey; this one runs with --auth none, where every caller is the local user",
                method.path
            )));
        };
        let mut request = request;
        // A resource is checked once its server-owned fields are set; other inputs now.
        if request.descriptor() == kind.message {
            fill_type_fields(kind, &mut request);
        } else {
            check(&self.validator, &request, Vec::new())?;
        }
        match (kind.name.as_str(), method.name.as_str()) {
            (API_KEY, "create") => self.create_api_key(kind, caller, request).await,
            (API_KEY, "update") => self.update_api_key(kind, caller, request).await,
            (API_KEY, "delete") => self.delete_own(kind, caller, &id_of(&request)).await,
            (API_KEY, "get") => self
                .own(kind, caller, &id_of(&request))
                .await
                .map(|(m, _)| m),
            (API_KEY, "findAll") => self.find_own_keys(kind, caller, &method.output).await,
            (IDENTITY_ACCOUNT_KIND, "whoAmI") => self
                .own(kind, caller, &caller.identity)
                .await
                .map(|(m, _)| m),
            (IDENTITY_ACCOUNT_KIND, "get") => {
                self.get_account(kind, caller, &id_of(&request)).await
            }
            (IAM_POLICY, "create") => self.create_policy(kind, caller, grants, request).await,
            (IAM_POLICY, "delete") => self.delete_policy(kind, caller, grants, request).await,
            (IAM_POLICY, "get") => self.policy_in_org(kind, caller, &id_of(&request)).await,
            (IAM_POLICY, "checkAuthorization") => {
                self.check_authorization(caller, request, &method.output)
                    .await
            }
            (IAM_POLICY, "listAuthorizedResourceIds") => {
                self.authorized_resource_ids(caller, request, &method.output)
                    .await
            }
            (IAM_POLICY, "listAuthorizedPrincipalIds") => {
                self.authorized_principal_ids(caller, request, &method.output)
                    .await
            }
            _ => Err(ApiError::Unimplemented(format!(
                "{} is not offered by this server",
                method.path
            ))),
        }
    }

    async fn create_api_key(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        mut key: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let new = NewKey::generate().map_err(ApiError::internal)?;
        let violations = expiry_violations(&key);
        let key_slug = keys::lookup_slug(&new.hash)
            .ok_or_else(|| ApiError::internal("a new key's hash has no lookup slug"))?;
        if let Some(spec) = child_mut(&mut key, "spec") {
            set_str(spec, "key_hash", new.hash.clone());
            set_str(spec, "fingerprint", new.fingerprint.clone());
        }
        self.prepare_identity_resource(
            kind,
            &mut key,
            &caller.identity,
            Some(key_slug),
            violations,
        )?;
        let stored = self
            .write_identity(vec![Mutation::Create(new_row(kind, &key)?)])
            .await?;
        let mut key = answered(key, &stored);
        // The one time the raw key leaves the server, where upstream puts it.
        if let Some(spec) = child_mut(&mut key, "spec") {
            set_str(spec, "key_hash", new.raw);
        }
        Ok(key)
    }

    async fn update_api_key(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        check(&self.validator, &request, expiry_violations(&request))?;
        let asked = meta(&request).revision;
        // Using a key stamps its lastUsedAt, which is a change too: without an expected
        // revision, an update re-reads the key and retries rather than fail on that stamp.
        let mut attempts = 0;
        loop {
            let (key, row) = self.own(kind, caller, &meta(&request).id).await?;
            let key = updated_key(key, &request, caller);
            let expected = if asked == 0 { row.revision } else { asked };
            let written = self
                .write_identity(vec![Mutation::Replace {
                    resource: new_row(kind, &key)?,
                    expected_revision: expected,
                }])
                .await;
            match written {
                Ok(stored) => return Ok(answered(key, &stored)),
                Err(ApiError::Aborted { .. }) if asked == 0 && attempts < 3 => attempts += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// Deletes one of the caller's own identity resources (an API key: its revocation).
    async fn delete_own(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        id: &str,
    ) -> Result<DynamicMessage, ApiError> {
        let (resource, row) = self.own(kind, caller, id).await?;
        self.delete_identity(row).await?;
        Ok(resource)
    }

    /// One of the caller's own identity resources (its account, one of its keys); anyone
    /// else's is not found.
    async fn own(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        id: &str,
    ) -> Result<(DynamicMessage, StoredResource), ApiError> {
        let row = self.identity_row(kind, id).await?;
        let resource = decode_row(kind, &row)?;
        let owner = str_at(&resource, "status.audit.spec_audit.created_by.id");
        if row.id != caller.identity && owner != caller.identity {
            return Err(not_found(kind, id));
        }
        Ok((resource, row))
    }

    async fn identity_row(&self, kind: &KindInfo, id: &str) -> Result<StoredResource, ApiError> {
        self.store
            .get(Scope::new(kind.name.clone(), IAM_ORG), id.to_string())
            .await?
            .ok_or_else(|| not_found(kind, id))
    }

    async fn find_own_keys(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let rows = self.auth.keys_of(&caller.identity).await?;
        let keys = rows
            .iter()
            .map(|row| decode_row(kind, row).map(Value::Message))
            .collect::<Result<Vec<_>, _>>()?;
        list_response(output, keys)
    }

    /// The caller's own account, or one holding a role in the org the caller works in.
    async fn get_account(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        id: &str,
    ) -> Result<DynamicMessage, ApiError> {
        if id != caller.identity {
            let policies = self.auth.policies_of(id).await?;
            if !policies.iter().any(|grant| grant.org == caller.org) {
                return Err(not_found(kind, id));
            }
        }
        let row = self.identity_row(kind, id).await?;
        decode_row(kind, &row)
    }

    /// Grants the role an IamPolicySpec names: upstream's create takes the spec alone.
    async fn create_policy(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        grants: &Grants,
        spec: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let grant = self.grant_in(caller, &spec).await?;
        may_grant(grants, caller, &grant.resource_id, grant.role)?;
        let accounts = self
            .catalog
            .kind_by_name(IDENTITY_ACCOUNT_KIND)
            .ok_or_else(|| ApiError::internal("the IdentityAccount kind is not served"))?;
        if self.identity_row(accounts, &grant.principal).await.is_err() {
            return Err(ApiError::invalid(
                "IamPolicySpec",
                vec![FieldViolation::new(
                    "principal.id",
                    format!("{:?} is no identity account", grant.principal),
                )],
            ));
        }
        let mut policy = DynamicMessage::new(kind.message.clone());
        set(&mut policy, "spec", Value::Message(spec));
        if let Some(metadata) = child_mut(&mut policy, "metadata") {
            set_str(
                metadata,
                "name",
                format!(
                    "{} {} on {} {}",
                    grant.principal, grant.role, grant.resource_kind, grant.resource_id
                ),
            );
            let mut labels = std::collections::HashMap::new();
            labels.insert(
                prost_reflect::MapKey::String(ORG_LABEL.into()),
                Value::String(caller.org.clone()),
            );
            set(metadata, "labels", Value::Map(labels));
        }
        // One policy per principal, resource and role: granting it again is ALREADY_EXISTS.
        let slug = grant.slug();
        self.prepare_identity_resource(
            kind,
            &mut policy,
            &caller.identity,
            Some(slug),
            Vec::new(),
        )?;
        let stored = self
            .write_identity(vec![Mutation::Create(new_row(kind, &policy)?)])
            .await?;
        Ok(answered(policy, &stored))
    }

    /// What an IamPolicySpec grants, checked: a known role, to an identity account, on the
    /// caller's org or a resource in it.
    async fn grant_in(
        &self,
        caller: &Caller,
        spec: &DynamicMessage,
    ) -> Result<SpecGrant, ApiError> {
        let relation = str_at(spec, "relation");
        let mut violations = Vec::new();
        let role = Role::from_relation(&relation);
        if role.is_none() {
            violations.push(FieldViolation::new(
                "relation",
                format!("{relation:?} is not a role; use owner, admin, member or viewer"),
            ));
        }
        if str_at(spec, "principal.kind") != IDENTITY_ACCOUNT {
            violations.push(FieldViolation::new(
                "principal.kind",
                format!("must be {IDENTITY_ACCOUNT:?}: only identity accounts hold roles here"),
            ));
        }
        check(&self.validator, spec, violations)?;
        let grant = SpecGrant {
            principal: str_at(spec, "principal.id"),
            resource_kind: str_at(spec, "resource.kind"),
            resource_id: str_at(spec, "resource.id"),
            role: role.ok_or_else(|| ApiError::internal("a checked policy has no role"))?,
        };
        self.grantable(caller, &grant.resource_kind, &grant.resource_id)
            .await?;
        Ok(grant)
    }

    /// A resource a policy may grant on: the caller's org, or a resource in it.
    async fn grantable(&self, caller: &Caller, kind: &str, id: &str) -> Result<(), ApiError> {
        if kind == ORGANIZATION {
            return if id == caller.org {
                Ok(())
            } else {
                Err(ApiError::NotFound {
                    kind: ORGANIZATION.into(),
                    id: id.into(),
                })
            };
        }
        let Some(target) = self.catalog.kind_by_enum_name(kind).filter(|k| !k.is_iam()) else {
            return Err(ApiError::invalid(
                "IamPolicy",
                vec![FieldViolation::new(
                    "spec.resource.kind",
                    format!(
                        "{kind:?} is not a kind of resource an org holds (organization, agent, skill, …)"
                    ),
                )],
            ));
        };
        let scope = Scope::new(target.name.clone(), caller.org.clone());
        match self.store.get(scope, id.to_string()).await? {
            Some(_) => Ok(()),
            None => Err(not_found(target, id)),
        }
    }

    /// Revokes the role an IamPolicySpec names: upstream's delete takes the spec alone.
    async fn delete_policy(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        grants: &Grants,
        spec: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let grant = self.grant_in(caller, &spec).await?;
        let scope = Scope::new(kind.name.clone(), IAM_ORG);
        let Some(row) = self.store.get_by_slug(scope, grant.slug()).await? else {
            return Err(ApiError::NotFound {
                kind: kind.name.clone(),
                id: format!(
                    "{} {} on {} {}",
                    grant.principal, grant.role, grant.resource_kind, grant.resource_id
                ),
            });
        };
        let policy = decode_row(kind, &row)?;
        may_grant(grants, caller, &grant.resource_id, grant.role)?;
        if grant.role == Role::Owner && grant.resource_kind == ORGANIZATION {
            self.keep_an_owner(caller).await?;
        }
        self.delete_identity(row).await?;
        Ok(policy)
    }

    /// An org never loses its last owner: nobody could grant admin or owner again.
    async fn keep_an_owner(&self, caller: &Caller) -> Result<(), ApiError> {
        let owners = self
            .auth
            .all_rows(
                IAM_POLICY,
                vec![
                    equals(&["spec", "resource", "kind"], ORGANIZATION),
                    equals(&["spec", "resource", "id"], &caller.org),
                    equals(&["spec", "relation"], Role::Owner.name()),
                ],
            )
            .await?;
        if owners.len() <= 1 {
            return Err(ApiError::FailedPrecondition(format!(
                "this is the last owner of organization {:?}; grant owner to someone else first",
                caller.org
            )));
        }
        Ok(())
    }

    async fn policy_in_org(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        id: &str,
    ) -> Result<DynamicMessage, ApiError> {
        self.policy_row_in_org(kind, caller, id)
            .await
            .map(|(p, _)| p)
    }

    /// A policy granting on the caller's org or on a resource in it; any other is not found.
    async fn policy_row_in_org(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        id: &str,
    ) -> Result<(DynamicMessage, StoredResource), ApiError> {
        let row = self.identity_row(kind, id).await?;
        let policy = decode_row(kind, &row)?;
        let org = crate::auth::grant_org(&policy);
        if org != caller.org {
            return Err(not_found(kind, id));
        }
        Ok((policy, row))
    }

    /// Commits identity mutations and drops the caches of keys and grants, so that this
    /// server's next call sees them.
    async fn write_identity(
        &self,
        mutations: Vec<Mutation>,
    ) -> Result<Vec<StoredResource>, ApiError> {
        let stored = self.store.transact(mutations).await?;
        self.auth.forget();
        Ok(stored)
    }

    /// Deletes a stored identity resource whatever its revision: a revocation must not lose
    /// to the key's own lastUsedAt stamp.
    async fn delete_identity(&self, row: StoredResource) -> Result<(), ApiError> {
        self.write_identity(vec![Mutation::Delete {
            scope: row.scope,
            id: row.id,
            expected_revision: None,
        }])
        .await
        .map(drop)
    }

    /// Sets what the server owns on an identity resource: kept out of every org, created by
    /// `identity`, validated like any resource.
    pub(crate) fn prepare_identity_resource(
        &self,
        kind: &KindInfo,
        resource: &mut DynamicMessage,
        identity: &str,
        slug: Option<String>,
        mut violations: Vec<FieldViolation>,
    ) -> Result<(), ApiError> {
        fill_type_fields(kind, resource);
        if let Some(metadata) = child_mut(resource, "metadata") {
            set_str(metadata, "org", IAM_ORG);
            if let Some(slug) = &slug {
                set_str(metadata, "slug", slug.clone());
            }
        }
        let creator = Caller {
            org: IAM_ORG.to_string(),
            identity: identity.to_string(),
            grants: None,
        };
        violations.extend(prepare_create(kind, resource, &creator, SystemTime::now()));
        if slug.is_none()
            && let Some(metadata) = child_mut(resource, "metadata")
        {
            // Accounts share names; the id keeps their slugs apart.
            let id = get_str(metadata, "id");
            set_str(metadata, "slug", id);
        }
        check(&self.validator, resource, violations)
    }
}

/// Who may grant or revoke `role` on `resource_id` (the org, or a resource in it): admin and
/// owner roles need owner, others need can_grant_access.
fn may_grant(
    grants: &Grants,
    caller: &Caller,
    resource_id: &str,
    role: Role,
) -> Result<(), ApiError> {
    let held = if resource_id == caller.org {
        grants.org_role(&caller.org)
    } else {
        grants.resource_role(&caller.org, resource_id)
    };
    let needed = role.permission_to_grant();
    if held.is_some_and(|held| held.allows(needed)) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "unauthorized to grant or revoke {role}: it needs {}",
            if needed == "owner" {
                "the owner role"
            } else {
                "the admin or owner role"
            }
        )))
    }
}

/// `key` with what an update may change: its name and expiry. The hash, fingerprint and owner
/// never change.
fn updated_key(
    mut key: DynamicMessage,
    request: &DynamicMessage,
    caller: &Caller,
) -> DynamicMessage {
    let name = meta(request).name;
    if !name.is_empty()
        && let Some(metadata) = child_mut(&mut key, "metadata")
    {
        set_str(metadata, "name", name);
    }
    if let (Some(asked), Some(spec)) = (
        crate::fields::child(request, "spec"),
        child_mut(&mut key, "spec"),
    ) {
        for field in ["expires_at", "never_expires"] {
            match asked.get_field_by_name(field) {
                Some(value) if crate::fields::has(&asked, field) => {
                    set(spec, field, value.into_owned())
                }
                _ => crate::fields::clear(spec, field),
            }
        }
    }
    crate::resource::stamp_audit(
        &mut key,
        &["spec_audit"],
        false,
        caller,
        SystemTime::now(),
        "updated",
    );
    key
}

/// One role granted to one identity account on one resource.
pub(crate) struct SpecGrant {
    pub principal: String,
    pub resource_kind: String,
    pub resource_id: String,
    pub role: Role,
}

impl SpecGrant {
    /// The policy's slug, the same for the same grant, so that it is stored once and found
    /// again by its spec.
    pub(crate) fn slug(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = format!(
            "{}\n{}\n{}\n{}",
            self.principal, self.resource_kind, self.resource_id, self.role
        );
        format!("g{}", &hex::encode(Sha256::digest(text.as_bytes()))[..62])
    }
}

/// `expires_at` must lie ahead unless the key never expires.
fn expiry_violations(key: &DynamicMessage) -> Vec<FieldViolation> {
    let Some(spec) = crate::fields::child(key, "spec") else {
        return Vec::new();
    };
    let never = matches!(
        spec.get_field_by_name("never_expires").as_deref(),
        Some(Value::Bool(true))
    );
    if never || !crate::fields::has(&spec, "expires_at") {
        return Vec::new();
    }
    let at = crate::fields::child(&spec, "expires_at")
        .map(|at| crate::fields::get_i64(&at, "seconds"))
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if at <= now {
        vec![FieldViolation::new(
            "spec.expires_at",
            "is in the past; give a time ahead, or set never_expires",
        )]
    } else {
        Vec::new()
    }
}

/// The written resource with the revision its transaction gave it.
fn answered(mut resource: DynamicMessage, stored: &[StoredResource]) -> DynamicMessage {
    let id = meta(&resource).id;
    if let Some(row) = stored.iter().find(|row| row.id == id) {
        set_revision(&mut resource, row.revision);
    }
    resource
}

/// A list response: `items` in the output's one repeated message field.
pub(crate) fn list_response(
    output: &MessageDescriptor,
    items: Vec<Value>,
) -> Result<DynamicMessage, ApiError> {
    let mut response = DynamicMessage::new(output.clone());
    let field = output
        .fields()
        .find(|field| field.is_list() && field.kind().as_message().is_some())
        .ok_or_else(|| {
            ApiError::internal(format!(
                "{} has no repeated message field",
                output.full_name()
            ))
        })?;
    response.set_field(&field, Value::List(items));
    Ok(response)
}
