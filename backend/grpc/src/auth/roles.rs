//! The roles a principal holds on an organization or on one resource, and the upstream
//! permissions (`ApiResourceIamPermission`) each allows. docs/security.md shows this table;
//! change both together.

use std::fmt;

/// Ordered: each role allows everything the ones before it allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

/// Each permission a role can hold, and the least role that holds it. A permission not listed
/// (platform, operator, the structural relations) is held by no role.
const LEAST_ROLE: &[(&str, Role)] = &[
    ("can_view", Role::Viewer),
    ("create", Role::Member),
    ("can_edit", Role::Member),
    ("can_execute", Role::Member),
    ("can_create_agent", Role::Member),
    ("can_create_workflow", Role::Member),
    ("can_create_session", Role::Member),
    ("can_create_execution_in", Role::Member),
    ("can_create_instance", Role::Member),
    ("can_create_skill", Role::Member),
    ("can_create_project", Role::Member),
    ("can_create_environment", Role::Member),
    ("can_delete", Role::Admin),
    ("can_grant_access", Role::Admin),
    ("can_view_access", Role::Admin),
    ("can_read_secrets", Role::Admin),
    ("owner", Role::Owner),
];

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    /// The role an IamPolicy's `relation` names.
    pub fn from_relation(relation: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == relation)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Whether this role holds `permission` (an `ApiResourceIamPermission` value name).
    pub fn allows(self, permission: &str) -> bool {
        least_role(permission).is_some_and(|least| self >= least)
    }

    /// Granting or revoking this role needs the granter to hold `owner` when it is admin or
    /// owner, and `can_grant_access` otherwise.
    pub fn permission_to_grant(self) -> &'static str {
        if self >= Self::Admin {
            "owner"
        } else {
            "can_grant_access"
        }
    }
}

pub fn least_role(permission: &str) -> Option<Role> {
    LEAST_ROLE
        .iter()
        .find(|(name, _)| *name == permission)
        .map(|(_, role)| *role)
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_issue_says() {
        assert!(Role::Viewer.allows("can_view"));
        assert!(!Role::Viewer.allows("can_edit"));
        assert!(!Role::Viewer.allows("can_create_agent"));
        assert!(Role::Member.allows("can_create_agent") && Role::Member.allows("can_execute"));
        assert!(!Role::Member.allows("can_delete"));
        assert!(Role::Admin.allows("can_delete") && Role::Admin.allows("can_grant_access"));
        assert!(!Role::Admin.allows("owner"));
        assert!(Role::Owner.allows("owner"));
        for role in Role::ALL {
            assert!(
                !role.allows("operator") && !role.allows("platform"),
                "{role}"
            );
            assert!(!role.allows("unspecified"), "{role}");
            assert_eq!(Role::from_relation(role.name()), Some(role));
        }
        assert_eq!(Role::from_relation("editor"), None);
        assert_eq!(Role::Member.permission_to_grant(), "can_grant_access");
        assert_eq!(Role::Admin.permission_to_grant(), "owner");
    }

    /// docs/security.md shows this table; they must say the same.
    #[test]
    fn the_documented_table_is_this_table() {
        let doc = include_str!("../../../../docs/security.md");
        let mut documented = Vec::new();
        for line in doc.lines().filter(|line| line.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (permissions, role) = (cells[1], cells[2]);
            let Some(role) = Role::from_relation(role) else {
                continue;
            };
            for permission in permissions.split(", ") {
                documented.push((permission.trim_matches('`').to_string(), role));
            }
        }
        let mut table: Vec<(String, Role)> = LEAST_ROLE
            .iter()
            .map(|(permission, role)| (permission.to_string(), *role))
            .collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);
    }
}
