//! The one path every new resource takes, whether a client sent it or the server makes it on
//! a client's behalf (a default instance, a session, an execution's context, a pushed skill's
//! first version): preparation of the server-owned fields, the relations' checks, sealing of
//! secrets and the field rules, in that order. Nothing the server writes could not have been
//! written by a client.

use std::time::SystemTime;

use prost_reflect::DynamicMessage;
use stigmer_store::Mutation;

use crate::catalog::KindInfo;
use crate::controller::{Controller, new_row};
use crate::error::ApiError;
use crate::execution_start::Start;
use crate::resource::{Caller, prepare_create};
use crate::validation::check;

impl Controller {
    /// `resource` prepared, checked and sealed as a create of `kind`; with what starting it
    /// needs (an execution's session and context), made once it is known to be valid.
    /// `alongside` are resources created in the same transaction, which count as existing
    /// parents. `server_owned` fills fields only the server sets (a pushed skill's status),
    /// after preparation has cleared them and before the checks.
    pub(crate) async fn checked_new(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        mut resource: DynamicMessage,
        alongside: &[&DynamicMessage],
        server_owned: impl FnOnce(&mut DynamicMessage) -> Result<(), ApiError> + Send,
    ) -> Result<(DynamicMessage, Start), ApiError> {
        let mut violations = prepare_create(kind, &mut resource, caller, SystemTime::now());
        server_owned(&mut resource)?;
        let (more, start) = self.create_checks(kind, &mut resource, alongside).await?;
        violations.extend(more);
        violations.extend(self.secrets.seal(&self.keyring, &mut resource, None)?);
        check(&self.validator, &resource, violations)?;
        Ok((resource, start))
    }

    /// A resource the server makes for `caller`, through [`Controller::checked_new`], and the write
    /// that stores it. Such resources start nothing themselves.
    pub(crate) async fn derived_create(
        &self,
        kind_name: &str,
        caller: &Caller,
        resource: DynamicMessage,
        alongside: &[&DynamicMessage],
        server_owned: impl FnOnce(&mut DynamicMessage) -> Result<(), ApiError> + Send,
    ) -> Result<(DynamicMessage, Mutation), ApiError> {
        let kind = self.kind_named(kind_name)?;
        let (resource, start) = self
            .checked_new(kind, caller, resource, alongside, server_owned)
            .await?;
        if !start.is_empty() {
            return Err(ApiError::internal(format!(
                "a {kind_name} made by the server would start further resources"
            )));
        }
        let write = Mutation::Create(new_row(kind, &resource)?);
        Ok((resource, write))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost_reflect::ReflectMessage;
    use stigmer_api::ai::stigmer::agentic::executioncontext::v1::{
        ExecutionContext, ExecutionContextSpec, ExecutionValue,
    };
    use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;
    use stigmer_core::catalog::Catalog;
    use stigmer_core::kinds::KINDS;
    use stigmer_secrets::{Keyring, MasterKey, is_sealed};
    use stigmer_store::Mutation;

    use super::*;
    use crate::auth::Auth;
    use crate::config::AuthMode;
    use crate::error::FieldViolation;
    use crate::json::from_json;

    fn app(dir: &tempfile::TempDir) -> Controller {
        let config = stigmer_sqlite::SqliteConfig::new(dir.path().join("derived.db"));
        let store: Arc<dyn stigmer_store::Store> =
            Arc::new(stigmer_sqlite::SqliteStore::open(&config).expect("store"));
        let catalog = Catalog::build(&stigmer_api::DESCRIPTOR_POOL, KINDS).expect("catalog");
        let auth = Auth::new(
            AuthMode::None,
            Arc::clone(&store),
            &stigmer_api::DESCRIPTOR_POOL,
            catalog.services(),
        )
        .expect("auth");
        let keyring = Keyring::new(MasterKey::generate().expect("key"));
        Controller::new(store, catalog, keyring, auth)
    }

    fn caller() -> Caller {
        Caller {
            org: "local".into(),
            identity: "tester".into(),
            grants: None,
        }
    }

    /// An ExecutionContext as the server makes one for an execution, with one secret;
    /// `owner_scope` 1 (organization) breaks the kind's rule that it stays unspecified.
    fn context(owner_scope: i32) -> DynamicMessage {
        ExecutionContext {
            metadata: Some(ApiResourceMetadata {
                name: "aex-0".into(),
                owner_scope,
                ..Default::default()
            }),
            spec: Some(ExecutionContextSpec {
                execution_id: "aex-0".into(),
                data: [(
                    "TOKEN".to_string(),
                    ExecutionValue {
                        value: "s3cret".into(),
                        is_secret: true,
                    },
                )]
                .into(),
            }),
            ..Default::default()
        }
        .transcode_to_dynamic()
    }

    fn violations(err: ApiError) -> Vec<FieldViolation> {
        match err {
            ApiError::InvalidArgument { violations, .. } => violations,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_derived_resource_is_refused_for_what_a_client_create_is_refused_for() {
        let dir = tempfile::tempdir().expect("dir");
        let app = app(&dir);
        let kind = Arc::clone(app.kind_named("ExecutionContext").expect("kind"));
        let derived = app
            .derived_create("ExecutionContext", &caller(), context(1), &[], |_| Ok(()))
            .await
            .expect_err("a broken derived resource must be refused");
        let client = app
            .checked_new(&kind, &caller(), context(1), &[], |_| Ok(()))
            .await
            .err()
            .expect("a client create of the same resource is refused");
        let (derived, client) = (violations(derived), violations(client));
        assert!(
            derived.iter().any(|v| v.field == "metadata"),
            "the owner-scope rule and the missing parent: {derived:?}"
        );
        assert!(
            derived.iter().any(|v| v.field == "spec.execution_id"),
            "the parent aex-0 does not exist: {derived:?}"
        );
        assert_eq!(derived, client);
    }

    #[tokio::test]
    async fn a_derived_resource_is_stored_sealed_and_prepared_like_a_client_create() {
        let dir = tempfile::tempdir().expect("dir");
        let app = app(&dir);
        let execution = DynamicMessage::new(
            app.kind_named("AgentExecution")
                .expect("kind")
                .message
                .clone(),
        );
        let mut execution = execution;
        if let Some(metadata) = crate::fields::child_mut(&mut execution, "metadata") {
            crate::fields::set_str(metadata, "id", "aex-0");
        }
        let (made, write) = app
            .derived_create(
                "ExecutionContext",
                &caller(),
                context(0),
                &[&execution],
                |_| Ok(()),
            )
            .await
            .expect("made");
        let Mutation::Create(row) = write else {
            panic!("a derived create writes a create");
        };
        let kind = app.kind_named("ExecutionContext").expect("kind");
        let stored = from_json(&kind.message, &row.data).expect("stored JSON");
        let stored: ExecutionContext = crate::typed::resource(&stored).expect("typed");
        let secret = &stored.spec.as_ref().expect("spec").data["TOKEN"];
        assert!(
            is_sealed(&secret.value),
            "stored in the clear: {}",
            secret.value
        );
        assert_eq!(app.keyring.open(&secret.value).expect("opens"), "s3cret");
        let metadata = stored.metadata.expect("metadata");
        assert!(
            metadata.id.starts_with(&format!("{}-", kind.id_prefix)),
            "{}",
            metadata.id
        );
        assert_eq!(metadata.id, crate::resource::meta(&made).id);
        assert_eq!(metadata.org, "local", "the caller's org");
        let audit = stored
            .status
            .and_then(|status| status.audit)
            .and_then(|audit| audit.spec_audit)
            .expect("a create is audited");
        assert_eq!(audit.created_by.expect("creator").id, "tester");
        assert_eq!(audit.event, "created");
        assert_eq!(stored.api_version, "agentic.stigmer.ai/v1");
        assert_eq!(stored.kind, "ExecutionContext");
    }
}
