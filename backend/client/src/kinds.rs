//! Which kinds serve which command: the catalog (built from the same descriptors as the
//! server's) knows every kind's RPCs, so commands offer a kind only for what it serves.

use std::sync::Arc;

use stigmer_core::catalog::{Catalog, KindInfo, Method};

use crate::{Client, ClientError};

/// What a command does with a kind. Kinds are offered only for what the server serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read one by name or id.
    Get,
    /// List them all.
    List,
    /// Create or update from a manifest (push, for Skills).
    Apply,
    Delete,
    /// Follow changes: every kind.
    Watch,
}

/// The names a kind answers to on the command line: `agent`, `agents`, `agt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindNames {
    pub name: String,
    pub plural: String,
    pub id_prefix: String,
}

/// The kinds that serve `operation`, in the order the server registers them.
pub fn kinds_for(operation: Operation) -> Result<Vec<KindNames>, ClientError> {
    let catalog = crate::shared_catalog()?;
    Ok(catalog
        .kinds()
        .iter()
        .filter(|kind| serves(&catalog, kind, operation))
        .map(|kind| names_of(kind))
        .collect())
}

pub(crate) fn names_of(kind: &KindInfo) -> KindNames {
    let name = kind.name.to_lowercase();
    KindNames {
        plural: format!("{name}s"),
        name,
        id_prefix: kind.id_prefix.clone(),
    }
}

pub(crate) fn method_of<'a>(
    catalog: &'a Catalog,
    kind: &KindInfo,
    role: &str,
    name: &str,
) -> Option<&'a Arc<Method>> {
    let path = format!(
        "/ai.stigmer.agentic.{}.v1.{}{role}Controller/{name}",
        kind.name.to_lowercase(),
        kind.name
    );
    catalog.method(&path)
}

fn serves(catalog: &Catalog, kind: &KindInfo, operation: Operation) -> bool {
    let has = |role, name| method_of(catalog, kind, role, name).is_some();
    match operation {
        Operation::Get => has("Query", "get"),
        Operation::List => has("Query", "list"),
        Operation::Apply => {
            has("Command", "apply") || has("Command", "create") || has("Command", "push")
        }
        Operation::Delete => has("Command", "delete"),
        Operation::Watch => true,
    }
}

impl Client {
    /// A kind by name, as [`Client::kind`], that serves `operation`; otherwise the error says
    /// what works instead.
    pub fn kind_for(
        &self,
        name: &str,
        operation: Operation,
    ) -> Result<&Arc<KindInfo>, ClientError> {
        let kind = self.kind(name)?;
        if serves(self.catalog(), kind, operation) {
            return Ok(kind);
        }
        let KindNames { name, plural, .. } = names_of(kind);
        let why = match operation {
            Operation::List => format!(
                "{plural} cannot be listed: the server offers no list of them; get one by name or id: `stigmer get {name} NAME`"
            ),
            Operation::Get => format!("{plural} cannot be read one by one"),
            Operation::Apply => format!("{plural} cannot be created from a manifest"),
            Operation::Delete => format!("{plural} cannot be deleted"),
            Operation::Watch => format!("{plural} cannot be watched"),
        };
        Err(ClientError::Usage(why))
    }
}
