//! `stigmer-server apikey create|list|revoke`: API keys made, listed and revoked straight in
//! the database, without a server, so that an org's first owner can exist before anyone can
//! call. The records are the ones the API makes (`iam.rs`).

use std::sync::Arc;
use std::time::SystemTime;

use prost_reflect::DynamicMessage;
use stigmer_store::{Mutation, Scope, Store};

use crate::auth::grants::{IDENTITY_ACCOUNT, ORGANIZATION};
use crate::auth::keys::{self, NewKey};
use crate::auth::roles::Role;
use crate::auth::rules::str_at;
use crate::auth::{API_KEY, IAM_ORG, IAM_POLICY, IDENTITY_ACCOUNT_KIND, ORG_LABEL};
use crate::catalog::KindInfo;
use crate::config::{AuthMode, ServerConfig};
use crate::controller::{Controller, new_row};
use crate::error::ApiError;
use crate::iam::SpecGrant;
use crate::json::from_json;
use crate::master_key::load_keyring;
use crate::naming::is_valid_slug;
use crate::server::{ServerError, new_app};

/// What `apikey create` asks for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub org: String,
    /// owner, admin, member or viewer.
    pub role: String,
    /// Names the key and its new identity account.
    pub name: Option<String>,
    /// `None`: never expires.
    pub expires_at: Option<SystemTime>,
}

/// A key just made: the raw key (shown once) and what it belongs to.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: String,
    pub key_id: String,
    pub identity_account_id: String,
}

/// One stored key, as `apikey list` shows it.
#[derive(Debug, Clone)]
pub struct KeySummary {
    pub id: String,
    pub name: String,
    pub fingerprint: String,
    pub identity_account_id: String,
    /// RFC 3339, or "never".
    pub expires: String,
    /// RFC 3339, or "" when never used.
    pub last_used: String,
}

/// Why an offline key command failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("--org {0:?} is not an org slug: 1-63 lowercase letters, digits or '-'")]
    Org(String),
    #[error("--role {0:?} is not a role: use owner, admin, member or viewer")]
    Role(String),
    #[error("--expires lies in the past")]
    Expired,
    #[error("no API key {0:?}")]
    NoKey(String),
}

/// `spec.idp_id` of accounts made here: no identity provider vouches for them.
const IDP_ID_PREFIX: &str = "stigmer-server:";

async fn offline_app(
    config: &ServerConfig,
    store: Arc<dyn Store>,
) -> Result<Controller, BootstrapError> {
    let keyring = load_keyring(config, store.as_ref()).await?;
    let mut config = config.clone();
    config.auth = AuthMode::ApiKey;
    Ok(new_app(&config, store, keyring)?)
}

fn kind<'a>(app: &'a Controller, name: &str) -> Result<&'a Arc<KindInfo>, ApiError> {
    app.catalog
        .kind_by_name(name)
        .ok_or_else(|| ApiError::internal(format!("the {name} kind is not served")))
}

fn message(kind: &KindInfo, json: serde_json::Value) -> Result<DynamicMessage, ApiError> {
    from_json(&kind.message, &json.to_string())
}

/// Creates an identity account holding `role` on `org`, and an API key of that account, in
/// one transaction.
pub async fn create_key(
    config: &ServerConfig,
    store: Arc<dyn Store>,
    request: KeyRequest,
) -> Result<CreatedKey, BootstrapError> {
    if !is_valid_slug(&request.org) {
        return Err(BootstrapError::Org(request.org));
    }
    let role = Role::from_relation(&request.role).ok_or(BootstrapError::Role(request.role))?;
    if request.expires_at.is_some_and(|at| at <= SystemTime::now()) {
        return Err(BootstrapError::Expired);
    }
    let app = offline_app(config, Arc::clone(&store)).await?;
    let name = request
        .name
        .clone()
        .unwrap_or_else(|| format!("{role} of {}", request.org));

    let accounts = kind(&app, IDENTITY_ACCOUNT_KIND)?;
    // The account is its own creator: nobody else exists yet.
    let account_id = crate::naming::new_id(&accounts.id_prefix);
    let mut account = message(
        accounts,
        serde_json::json!({
            "metadata": {"name": name},
            "spec": {"idpId": format!("{IDP_ID_PREFIX}{account_id}"), "isMachineAccount": true},
        }),
    )?;
    app.prepare_identity_resource(accounts, &mut account, &account_id, None, Vec::new())?;
    set_id(&mut account, &account_id);

    let policies = kind(&app, IAM_POLICY)?;
    let grant = SpecGrant {
        principal: account_id.clone(),
        resource_kind: ORGANIZATION.into(),
        resource_id: request.org.clone(),
        role,
    };
    let mut labels = serde_json::Map::new();
    labels.insert(ORG_LABEL.into(), request.org.clone().into());
    let mut policy = message(
        policies,
        serde_json::json!({
            "metadata": {"name": format!("{account_id} {role} on organization {}", request.org), "labels": labels},
            "spec": {
                "principal": {"kind": IDENTITY_ACCOUNT, "id": account_id},
                "resource": {"kind": ORGANIZATION, "id": request.org},
                "relation": role.name(),
            }
        }),
    )?;
    app.prepare_identity_resource(
        policies,
        &mut policy,
        &account_id,
        Some(grant.slug()),
        Vec::new(),
    )?;

    let api_keys = kind(&app, API_KEY)?;
    let new = NewKey::generate().map_err(ApiError::internal)?;
    let expiry = match request.expires_at {
        None => serde_json::json!({"neverExpires": true}),
        Some(at) => serde_json::json!({"expiresAt": rfc3339(at)}),
    };
    let mut spec = serde_json::json!({"keyHash": new.hash, "fingerprint": new.fingerprint});
    if let (Some(spec), Some(expiry)) = (spec.as_object_mut(), expiry.as_object()) {
        spec.extend(expiry.clone());
    }
    let mut key = message(
        api_keys,
        serde_json::json!({"metadata": {"name": name}, "spec": spec}),
    )?;
    let slug = keys::lookup_slug(&new.hash);
    app.prepare_identity_resource(api_keys, &mut key, &account_id, slug, Vec::new())?;

    let key_id = crate::resource::meta(&key).id;
    store
        .transact(vec![
            Mutation::Create(new_row(accounts, &account)?),
            Mutation::Create(new_row(policies, &policy)?),
            Mutation::Create(new_row(api_keys, &key)?),
        ])
        .await
        .map_err(ApiError::from)?;
    Ok(CreatedKey {
        key: new.raw,
        key_id,
        identity_account_id: account_id,
    })
}

/// The account's id is the one its own audit names as creator.
fn set_id(account: &mut DynamicMessage, id: &str) {
    if let Some(metadata) = crate::fields::child_mut(account, "metadata") {
        crate::fields::set_str(metadata, "id", id.to_string());
        crate::fields::set_str(metadata, "slug", id.to_string());
    }
}

fn rfc3339(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    time::OffsetDateTime::from_unix_timestamp(since)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Every stored API key.
pub async fn list_keys(
    config: &ServerConfig,
    store: Arc<dyn Store>,
) -> Result<Vec<KeySummary>, BootstrapError> {
    let app = offline_app(config, Arc::clone(&store)).await?;
    let api_keys = kind(&app, API_KEY)?;
    let rows = app.auth.all_rows(API_KEY, Vec::new()).await?;
    rows.iter()
        .map(|row| {
            let key = from_json(&api_keys.message, &row.data)?;
            Ok(KeySummary {
                id: row.id.clone(),
                name: crate::resource::meta(&key).name,
                fingerprint: str_at(&key, "spec.fingerprint"),
                identity_account_id: str_at(&key, "status.audit.spec_audit.created_by.id"),
                expires: json_field(&row.data, &["spec", "expiresAt"])
                    .unwrap_or_else(|| "never".into()),
                last_used: json_field(&row.data, &["status", "lastUsedAt"]).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()
        .map_err(BootstrapError::from)
}

fn json_field(data: &str, path: &[&str]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let mut at = &value;
    for key in path {
        at = at.get(key)?;
    }
    at.as_str().map(str::to_string)
}

/// Deletes (revokes) the API key `id`.
pub async fn revoke_key(
    config: &ServerConfig,
    store: Arc<dyn Store>,
    id: &str,
) -> Result<(), BootstrapError> {
    let _ = offline_app(config, Arc::clone(&store)).await?;
    let scope = Scope::new(API_KEY, IAM_ORG);
    match store.delete(scope, id.to_string(), None).await {
        Ok(_) => Ok(()),
        Err(stigmer_store::StoreError::NotFound { .. }) => Err(BootstrapError::NoKey(id.into())),
        Err(err) => Err(ApiError::from(err).into()),
    }
}
