//! What one identity may do: its role on each organization and on single resources, read from
//! the IamPolicy resources that name it as principal.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::roles::Role;
use crate::error::ApiError;

/// The principal kind of an identity account in an IamPolicy (`spec.principal.kind`).
pub const IDENTITY_ACCOUNT: &str = "identity_account";
/// The resource kind of an organization in an IamPolicy (`spec.resource.kind`); its id is the
/// org's slug.
pub const ORGANIZATION: &str = "organization";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grants {
    /// The strongest role held on each org.
    orgs: BTreeMap<String, Role>,
    /// The strongest role held on single resources, by id, with the resource's org.
    resources: HashMap<String, (String, Role)>,
    /// Identity resources the identity owns wherever it works: its own account and keys.
    owned: HashSet<String>,
}

/// One IamPolicy as it bears on its principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// "organization", or the resource's kind as in the policy.
    pub resource_kind: String,
    pub resource_id: String,
    /// The org the resource is in (for an organization, its own slug).
    pub org: String,
    pub role: Role,
}

impl Grants {
    pub fn from_grants(grants: impl IntoIterator<Item = Grant>) -> Self {
        let mut out = Self::default();
        for grant in grants {
            if grant.resource_kind == ORGANIZATION {
                let role = out.orgs.entry(grant.resource_id).or_insert(grant.role);
                *role = (*role).max(grant.role);
            } else {
                let entry = out
                    .resources
                    .entry(grant.resource_id)
                    .or_insert((grant.org, grant.role));
                entry.1 = entry.1.max(grant.role);
            }
        }
        out
    }

    /// Adds identity resources the identity owns (its account, its keys).
    pub fn with_owned(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.owned.extend(ids);
        self
    }

    /// Orgs the identity reaches at all: by a role on the org or on one of its resources.
    pub fn orgs(&self) -> Vec<&str> {
        let mut orgs: Vec<&str> = self.orgs.keys().map(String::as_str).collect();
        orgs.extend(self.resources.values().map(|(org, _)| org.as_str()));
        orgs.sort_unstable();
        orgs.dedup();
        orgs
    }

    pub fn org_role(&self, org: &str) -> Option<Role> {
        self.orgs.get(org).copied()
    }

    /// The role on one resource of `org`: its own grant or the org's role, whichever is
    /// stronger.
    pub fn resource_role(&self, org: &str, id: &str) -> Option<Role> {
        if self.owned.contains(id) {
            return Some(Role::Owner);
        }
        let own = self
            .resources
            .get(id)
            .filter(|(resource_org, _)| resource_org == org)
            .map(|(_, role)| *role);
        own.max(self.org_role(org))
    }

    /// Ids of the single resources granted in `org`.
    pub fn resource_ids<'a>(&'a self, org: &'a str) -> impl Iterator<Item = String> + 'a {
        self.resources
            .iter()
            .filter(move |(_, (resource_org, _))| resource_org == org)
            .map(|(id, _)| id.clone())
    }

    /// The org a call works in: the one the `x-stigmer-org` header names if the identity
    /// reaches it, else its only org. An org it does not reach is answered as if it did not
    /// exist.
    pub fn select_org(&self, header: Option<&str>) -> Result<String, ApiError> {
        let orgs = self.orgs();
        match header {
            Some(org) if orgs.contains(&org) => Ok(org.to_string()),
            Some(org) => Err(ApiError::NotFound {
                kind: "organization".into(),
                id: org.to_string(),
            }),
            None => match orgs.as_slice() {
                [only] => Ok((*only).to_string()),
                [] => Err(ApiError::PermissionDenied(
                    "this API key's identity holds no role in any organization; ask an admin of one to grant you a role".into(),
                )),
                several => Err(ApiError::FailedPrecondition(format!(
                    "this identity works in {} organizations ({}); say which with the header x-stigmer-org (stigmer context set --org ORG)",
                    several.len(),
                    several.join(", ")
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(kind: &str, id: &str, org: &str, role: Role) -> Grant {
        Grant {
            resource_kind: kind.into(),
            resource_id: id.into(),
            org: org.into(),
            role,
        }
    }

    #[test]
    fn the_strongest_role_wins_and_resource_grants_stay_in_their_org() {
        let grants = Grants::from_grants([
            grant(ORGANIZATION, "a", "a", Role::Viewer),
            grant(ORGANIZATION, "a", "a", Role::Admin),
            grant("Agent", "agt-1", "b", Role::Member),
        ]);
        assert_eq!(grants.org_role("a"), Some(Role::Admin));
        assert_eq!(grants.org_role("b"), None);
        assert_eq!(grants.resource_role("b", "agt-1"), Some(Role::Member));
        assert_eq!(grants.resource_role("a", "agt-1"), Some(Role::Admin));
        assert_eq!(grants.resource_role("c", "agt-1"), None);
        assert_eq!(grants.orgs(), vec!["a", "b"]);
        let grants = grants.with_owned(["key-1".to_string()]);
        assert_eq!(grants.resource_role("a", "key-1"), Some(Role::Owner));
        assert_eq!(grants.resource_role("zzz", "key-1"), Some(Role::Owner));
    }

    #[test]
    fn the_org_of_a_call_is_the_header_s_if_reached_else_the_only_one() {
        let one = Grants::from_grants([grant(ORGANIZATION, "a", "a", Role::Viewer)]);
        assert_eq!(one.select_org(None).expect("only org"), "a");
        assert_eq!(one.select_org(Some("a")).expect("named"), "a");
        assert!(matches!(
            one.select_org(Some("b")),
            Err(ApiError::NotFound { .. })
        ));
        let two = Grants::from_grants([
            grant(ORGANIZATION, "a", "a", Role::Viewer),
            grant("Agent", "agt-1", "b", Role::Viewer),
        ]);
        let err = two.select_org(None).expect_err("two orgs");
        assert!(matches!(err, ApiError::FailedPrecondition(_)), "{err}");
        assert!(err.to_string().contains("a, b"), "{err}");
        assert_eq!(two.select_org(Some("b")).expect("named"), "b");
        assert!(matches!(
            Grants::default().select_org(None),
            Err(ApiError::PermissionDenied(_))
        ));
    }
}
