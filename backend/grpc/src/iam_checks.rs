//! IamPolicyQueryController's questions (checkAuthorization, listAuthorizedResourceIds,
//! listAuthorizedPrincipalIds), answered from the same grants that authorize calls, and only
//! about the org the caller works in.

use std::collections::BTreeMap;

use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use stigmer_store::{ListQuery, Scope};

use crate::auth::grants::{Grant, Grants, IDENTITY_ACCOUNT, ORGANIZATION};
use crate::auth::roles::Role;
use crate::auth::rules::str_at;
use crate::auth::{IAM_POLICY, ORG_LABEL, equals, grant_of};
use crate::controller::Controller;
use crate::error::ApiError;
use crate::fields::set;
use crate::json::from_json;
use crate::resource::Caller;

/// Ids listed per page when every resource of a kind is authorized.
const ID_PAGE: usize = 1000;

impl Controller {
    pub(crate) async fn check_authorization(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let principal = str_at(&request, "policy.principal.id");
        let kind = str_at(&request, "policy.resource.kind");
        let id = str_at(&request, "policy.resource.id");
        let relation = str_at(&request, "policy.relation");
        let authorized = str_at(&request, "policy.principal.kind") == IDENTITY_ACCOUNT && {
            let grants = self
                .grants_with_context(caller, &principal, &request)
                .await?;
            satisfies(role_on(&grants, caller, &kind, &id), &relation)
        };
        let mut response = DynamicMessage::new(output.clone());
        set(&mut response, "is_authorized", Value::Bool(authorized));
        Ok(response)
    }

    pub(crate) async fn authorized_resource_ids(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let principal = str_at(&request, "principal.id");
        let kind_name = str_at(&request, "resource_kind");
        let relation = str_at(&request, "relation");
        let grants = self
            .grants_with_context(caller, &principal, &request)
            .await?;
        let ids = if str_at(&request, "principal.kind") != IDENTITY_ACCOUNT {
            Vec::new()
        } else if kind_name == ORGANIZATION {
            if satisfies(grants.org_role(&caller.org), &relation) {
                vec![caller.org.clone()]
            } else {
                Vec::new()
            }
        } else if let Some(kind) = self
            .catalog
            .kind_by_enum_name(&kind_name)
            .filter(|k| !k.is_iam())
        {
            if satisfies(grants.org_role(&caller.org), &relation) {
                self.every_id(&kind.name, &caller.org).await?
            } else {
                let prefix = format!("{}-", kind.id_prefix);
                grants
                    .resource_ids(&caller.org)
                    .filter(|id| id.starts_with(&prefix))
                    .filter(|id| satisfies(grants.resource_role(&caller.org, id), &relation))
                    .collect()
            }
        } else {
            Vec::new()
        };
        ids_response(output, "resource_ids", ids)
    }

    pub(crate) async fn authorized_principal_ids(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let kind = str_at(&request, "resource.kind");
        let id = str_at(&request, "resource.id");
        let relation = str_at(&request, "relation");
        let mut by_principal: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        if str_at(&request, "principal_kind") == IDENTITY_ACCOUNT {
            for policy in self.policies_in_org(&caller.org).await? {
                let principal = str_at(&policy, "spec.principal.id");
                if str_at(&policy, "spec.principal.kind") == IDENTITY_ACCOUNT
                    && let Some(grant) = grant_of(&policy)
                {
                    by_principal.entry(principal).or_default().push(grant);
                }
            }
        }
        let ids = by_principal
            .into_iter()
            .filter(|(_, grants)| {
                let grants = Grants::from_grants(grants.iter().cloned());
                satisfies(role_on(&grants, caller, &kind, &id), &relation)
            })
            .map(|(principal, _)| principal)
            .collect();
        ids_response(output, "principal_ids", ids)
    }

    /// A principal's grants plus the request's `contextual_policies` naming it, as if stored
    /// in the caller's org.
    async fn grants_with_context(
        &self,
        caller: &Caller,
        principal: &str,
        request: &DynamicMessage,
    ) -> Result<Grants, ApiError> {
        let mut grants = self.auth.policies_of(principal).await?;
        if let Some(Value::List(extra)) =
            request.get_field_by_name("contextual_policies").as_deref()
        {
            for spec in extra.iter().filter_map(Value::as_message) {
                let role = Role::from_relation(&str_at(spec, "relation"));
                if str_at(spec, "principal.id") == principal
                    && let Some(role) = role
                {
                    grants.push(Grant {
                        resource_kind: str_at(spec, "resource.kind"),
                        resource_id: str_at(spec, "resource.id"),
                        org: caller.org.clone(),
                        role,
                    });
                }
            }
        }
        Ok(Grants::from_grants(grants))
    }

    /// Every IamPolicy granting in `org`.
    async fn policies_in_org(&self, org: &str) -> Result<Vec<DynamicMessage>, ApiError> {
        let kind = self
            .catalog
            .kind_by_name(IAM_POLICY)
            .ok_or_else(|| ApiError::internal("the IamPolicy kind is not served"))?;
        let label = ["metadata", "labels", ORG_LABEL];
        self.auth
            .all_rows(IAM_POLICY, vec![equals(&label, org)])
            .await?
            .iter()
            .map(|row| from_json(&kind.message, &row.data))
            .collect()
    }

    async fn every_id(&self, kind: &str, org: &str) -> Result<Vec<String>, ApiError> {
        let mut ids: Vec<String> = Vec::new();
        loop {
            let page = self
                .store
                .list(ListQuery {
                    scope: Scope::new(kind, org),
                    after_id: ids.last().cloned(),
                    limit: ID_PAGE,
                    filters: Vec::new(),
                    proto_only: true,
                })
                .await?;
            let full = page.items.len() == ID_PAGE;
            ids.extend(page.items.into_iter().map(|row| row.id));
            if !full {
                return Ok(ids);
            }
        }
    }
}

/// The role `grants` hold on the caller's org (`kind` organization) or on one resource in it.
fn role_on(grants: &Grants, caller: &Caller, kind: &str, id: &str) -> Option<Role> {
    if kind == ORGANIZATION {
        (id == caller.org)
            .then(|| grants.org_role(&caller.org))
            .flatten()
    } else {
        grants.resource_role(&caller.org, id)
    }
}

/// Whether a held role meets a relation: a role name (held at least that role) or a
/// permission name (the role allows it).
fn satisfies(role: Option<Role>, relation: &str) -> bool {
    let Some(role) = role else {
        return false;
    };
    match Role::from_relation(relation) {
        Some(needed) => role >= needed,
        None => role.allows(relation),
    }
}

fn ids_response(
    output: &MessageDescriptor,
    field: &str,
    ids: Vec<String>,
) -> Result<DynamicMessage, ApiError> {
    let mut response = DynamicMessage::new(output.clone());
    set(
        &mut response,
        field,
        Value::List(ids.into_iter().map(Value::String).collect()),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relation_is_met_by_a_stronger_role_or_an_allowed_permission() {
        assert!(satisfies(Some(Role::Admin), "viewer"));
        assert!(satisfies(Some(Role::Viewer), "viewer"));
        assert!(!satisfies(Some(Role::Viewer), "member"));
        assert!(satisfies(Some(Role::Member), "can_edit"));
        assert!(!satisfies(Some(Role::Member), "can_delete"));
        assert!(!satisfies(None, "viewer"));
        assert!(!satisfies(Some(Role::Owner), "platform"));
    }
}
