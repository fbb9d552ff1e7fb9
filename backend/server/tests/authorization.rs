//! Cloud mode's authorization, generated from the descriptors: every RPC of every served
//! service × every kind of caller → the code the authorization model says, and no read or
//! write across orgs. The expectations come from this file's own reading of the method options
//! and of the role table, not from the server's code.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{TestServer, to_json};
use prost_reflect::{DynamicMessage, MethodDescriptor, ReflectMessage, Value};
use stigmer_grpc::AuthMode;
use stigmer_grpc::bootstrap::{self, KeyRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

const CONFIG: &str = "ai.stigmer.iam.iampolicy.v1.rpcauthorization.config";
const IS_PUBLIC: &str = "ai.stigmer.iam.iampolicy.v1.rpcauthorization.is_public";
const IS_SKIP: &str = "ai.stigmer.iam.iampolicy.v1.rpcauthorization.is_skip_authorization";
const KIND_META: &str = "ai.stigmer.commons.apiresource.apiresourcekind.kind_meta";
const UNAUTHENTICATED: &str = "missing or invalid API key";

/// The roles: viewer reads; member also creates, updates and runs executions; admin
/// also deletes and grants access; owner also manages admins and owners.
fn role_allows(role: &str, permission: &str) -> bool {
    let least = match permission {
        "can_view" => "viewer",
        "create" | "can_edit" | "can_execute" => "member",
        p if p.starts_with("can_create_") => "member",
        "can_delete" | "can_grant_access" | "can_view_access" | "can_read_secrets" => "admin",
        "owner" => "owner",
        _ => return false,
    };
    let rank = |r: &str| {
        ["viewer", "member", "admin", "owner"]
            .iter()
            .position(|x| *x == r)
    };
    rank(role) >= rank(least)
}

/// What one RPC requires, as its proto says.
#[derive(Debug, Clone)]
enum Need {
    /// is_public / is_skip_authorization, or a read upstream leaves to its handler.
    Open,
    Permission {
        permission: String,
        error_msg: String,
        /// Kind name of the target resource ("Agent"), if it is one.
        kind: Option<String>,
        field: String,
        kind_field: String,
    },
    /// apply: create's and update's permissions.
    Both(Box<Need>, Box<Need>),
}

fn need_of(method: &MethodDescriptor) -> Option<Need> {
    let pool = method.parent_pool();
    let options = method.options();
    for flag in [IS_PUBLIC, IS_SKIP] {
        let extension = pool.get_extension_by_name(flag).expect(flag);
        if options.has_extension(&extension)
            && options.get_extension(&extension).as_bool() == Some(true)
        {
            return Some(Need::Open);
        }
    }
    let extension = pool.get_extension_by_name(CONFIG).expect(CONFIG);
    if !options.has_extension(&extension) {
        return None;
    }
    let config = options
        .get_extension(&extension)
        .as_message()
        .expect("config")
        .clone();
    let text = |field: &str| {
        config
            .get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let enum_value = |field: &str| {
        let number = config
            .get_field_by_name(field)
            .and_then(|v| v.as_enum_number())
            .unwrap_or_default();
        config
            .descriptor()
            .get_field_by_name(field)
            .and_then(|f| f.kind().as_enum()?.get_value(number))
            .filter(|_| number != 0)
    };
    let permission = enum_value("permission")
        .expect("a permission")
        .name()
        .to_string();
    let kind = enum_value("resource_kind").and_then(|value| {
        if value.name() == "organization" {
            return None;
        }
        let meta = pool.get_extension_by_name(KIND_META).expect(KIND_META);
        let options = value.options();
        let meta = options.get_extension(&meta);
        meta.as_message()?
            .get_field_by_name("name")
            .and_then(|v| v.as_str().map(str::to_string))
    });
    Some(Need::Permission {
        permission,
        error_msg: text("error_msg"),
        kind,
        field: text("field_path"),
        kind_field: text("resource_kind_path"),
    })
}

/// The RPCs upstream leaves to its handlers, by name; anything else without a rule is a defect.
fn handler_need(method: &MethodDescriptor) -> Option<Need> {
    let sibling = |name: &str| {
        method
            .parent_service()
            .methods()
            .find(|m| m.name() == name)
            .and_then(|m| need_of(&m).or_else(|| handler_need(&m)))
    };
    match method.name() {
        "apply" => {
            let create = sibling("create")?;
            let update = sibling("update").unwrap_or_else(|| create.clone());
            Some(Need::Both(Box::new(create), Box::new(update)))
        }
        "create" => Some(Need::Permission {
            permission: "create".into(),
            error_msg: String::new(),
            kind: None,
            field: "metadata.org".into(),
            kind_field: String::new(),
        }),
        name if name.starts_with("get") || name.starts_with("list") => Some(Need::Open),
        _ => None,
    }
}

fn allowed(need: &Need, role: &str) -> Result<(), String> {
    match need {
        Need::Open => Ok(()),
        Need::Permission {
            permission,
            error_msg,
            ..
        } => {
            if role_allows(role, permission) {
                Ok(())
            } else {
                Err(error_msg.clone())
            }
        }
        Need::Both(create, update) => allowed(create, role).and_then(|()| allowed(update, role)),
    }
}

/// Every served RPC: each Command/Query controller of a served kind, and ResourceService.
fn served_methods() -> Vec<MethodDescriptor> {
    let catalog = stigmer_core::catalog::Catalog::build(
        &stigmer_api::DESCRIPTOR_POOL,
        stigmer_core::kinds::KINDS,
    )
    .expect("catalog");
    catalog
        .services()
        .iter()
        .flat_map(|name| {
            stigmer_api::DESCRIPTOR_POOL
                .get_service_by_name(name)
                .expect("service")
                .methods()
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_served_rpc_has_an_authorization_rule() {
    let missing: Vec<String> = served_methods()
        .iter()
        .filter(|m| need_of(m).is_none() && handler_need(m).is_none())
        .map(|m| m.full_name().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "RPCs without an authorization rule (add rpcauthorization.config, is_public or is_skip_authorization): {missing:?}"
    );
    assert!(served_methods().len() > 60, "the catalog lost its RPCs");
}

/// Keys of every kind of caller.
struct Keys {
    by_role: BTreeMap<&'static str, String>,
    owner_b: String,
    owner_b_account: String,
    expired: String,
    revoked: String,
}

async fn bootstrap_keys(db: &std::path::Path) -> Keys {
    let (config, store) = common::open_database(db, "127.0.0.1:1".parse().expect("address")).await;
    let create = |org: &str, role: &str| KeyRequest {
        org: org.into(),
        role: role.into(),
        name: Some(format!("{role} of {org}")),
        expires_at: None,
    };
    let mut by_role = BTreeMap::new();
    for role in ["viewer", "member", "admin", "owner"] {
        let created = bootstrap::create_key(&config, Arc::clone(&store), create("a", role))
            .await
            .expect("create a key");
        by_role.insert(role, created.key);
    }
    let b = bootstrap::create_key(&config, Arc::clone(&store), create("b", "owner"))
        .await
        .expect("owner of b");
    let expiring = KeyRequest {
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        ..create("a", "owner")
    };
    let expired = bootstrap::create_key(&config, Arc::clone(&store), expiring)
        .await
        .expect("a key to expire");
    let revoked = bootstrap::create_key(&config, Arc::clone(&store), create("a", "owner"))
        .await
        .expect("a key to revoke");
    bootstrap::revoke_key(&config, Arc::clone(&store), &revoked.key_id)
        .await
        .expect("revoke");
    store.close().await.expect("close");
    // Expired an hour early, as an operator with sqlite3 would; the server reads the row.
    let sql = rusqlite::Connection::open(db).expect("sqlite");
    let changed = sql
        .execute(
            "UPDATE resources SET data = json_set(data, '$.spec.expiresAt', '2001-01-01T00:00:00Z') WHERE id = ?1",
            [&expired.key_id],
        )
        .expect("expire the key");
    assert_eq!(changed, 1);
    Keys {
        by_role,
        owner_b: b.key,
        owner_b_account: b.identity_account_id,
        expired: expired.key,
        revoked: revoked.key,
    }
}

async fn cloud_server(db: &std::path::Path) -> TestServer {
    TestServer::start_at_with(db, |settings| settings.server.auth = AuthMode::ApiKey).await
}

/// One call of any RPC with an optional key and org header; a stream counts as answered once
/// it opens.
async fn call(
    channel: &Channel,
    method: &MethodDescriptor,
    request: DynamicMessage,
    key: Option<&str>,
    org: Option<&str>,
) -> Result<Option<DynamicMessage>, Status> {
    let mut request = tonic::Request::new(request);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", key.parse().expect("ascii"));
    }
    if let Some(org) = org {
        request
            .metadata_mut()
            .insert("x-stigmer-org", org.parse().expect("ascii"));
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = http::uri::PathAndQuery::from_str(&path).expect("path");
    let codec = stigmer_grpc::codec::DynamicCodec::new(method.output());
    if method.is_server_streaming() {
        grpc.server_streaming(request, path, codec)
            .await
            .map(|_| None)
    } else {
        grpc.unary(request, path, codec)
            .await
            .map(|response| Some(response.into_inner()))
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Sets the string at a dot path when the message has one there.
fn set_path(message: &mut DynamicMessage, path: &str, value: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("a path");
    let mut current = message;
    for part in parts {
        let Some(next) = current
            .get_field_by_name_mut(part)
            .and_then(Value::as_message_mut)
        else {
            return;
        };
        current = next;
    }
    let is_string = current
        .descriptor()
        .get_field_by_name(last)
        .is_some_and(|f| f.kind() == prost_reflect::Kind::String && !f.is_list());
    if is_string {
        current.set_field_by_name(last, Value::String(value.into()));
    }
}

/// org A's resources, for the requests to aim at.
struct Fixtures {
    ids: BTreeMap<String, String>,
}

impl Fixtures {
    fn id(&self, kind: &str) -> String {
        self.ids.get(kind).cloned().unwrap_or_else(|| {
            let prefix = stigmer_core::catalog::Catalog::build(
                &stigmer_api::DESCRIPTOR_POOL,
                stigmer_core::kinds::KINDS,
            )
            .expect("catalog")
            .kind_by_name(kind)
            .map(|k| k.id_prefix.clone())
            .unwrap_or_else(|| "x".into());
            format!("{prefix}-01j00000000000000000000000")
        })
    }

    fn all(&self) -> Vec<String> {
        self.ids.values().cloned().collect()
    }
}

async fn make_fixtures(server: &TestServer, owner: &str) -> Fixtures {
    let mut ids = BTreeMap::new();
    let create = |path: &str, json: serde_json::Value| {
        let (input, output) = common::method_types(path);
        let message = DynamicMessage::deserialize(input, json).expect("fixture json");
        let path = path.to_string();
        let channel = server.channel.clone();
        let owner = owner.to_string();
        async move {
            let mut request = tonic::Request::new(message);
            request
                .metadata_mut()
                .insert("authorization", bearer(&owner).parse().expect("ascii"));
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            grpc.unary(
                request,
                http::uri::PathAndQuery::from_str(&path).expect("path"),
                stigmer_grpc::codec::DynamicCodec::new(output),
            )
            .await
            .unwrap_or_else(|status| panic!("fixture {path}: {status:?}"))
            .into_inner()
        }
    };
    let agent = to_json(
        &create(
            "/ai.stigmer.agentic.agent.v1.AgentCommandController/create",
            serde_json::json!({"metadata": {"name": "matrix-agent"}, "spec": {"instructions": "Review every change carefully."}}),
        )
        .await,
    );
    ids.insert(
        "Agent".into(),
        agent["metadata"]["id"].as_str().expect("id").to_string(),
    );
    let instance = agent["status"]["defaultInstanceId"]
        .as_str()
        .expect("instance")
        .to_string();
    ids.insert("AgentInstance".into(), instance.clone());
    let environment = to_json(
        &create(
            "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController/create",
            serde_json::json!({"metadata": {"name": "matrix-env"}, "spec": {"description": "fixture"}}),
        )
        .await,
    );
    ids.insert(
        "Environment".into(),
        environment["metadata"]["id"]
            .as_str()
            .expect("id")
            .to_string(),
    );
    let session = to_json(
        &create(
            "/ai.stigmer.agentic.session.v1.SessionCommandController/create",
            serde_json::json!({"metadata": {"name": "matrix-session"}, "spec": {"agentInstanceId": instance}}),
        )
        .await,
    );
    ids.insert(
        "Session".into(),
        session["metadata"]["id"].as_str().expect("id").to_string(),
    );
    Fixtures { ids }
}

/// The request an RPC gets in the matrix: naming org `a` wherever a body can, and aimed at
/// org A's resource of the rule's kind.
fn request_for(method: &MethodDescriptor, need: &Need, fixtures: &Fixtures) -> DynamicMessage {
    let mut message = DynamicMessage::new(method.input());
    set_path(&mut message, "metadata.org", "a");
    set_path(&mut message, "org", "a");
    let target = match need {
        Need::Both(create, _) => create.as_ref(),
        other => other,
    };
    if let Need::Permission {
        kind,
        field,
        kind_field,
        ..
    } = target
    {
        if !kind_field.is_empty() {
            set_path(&mut message, kind_field, "Agent");
            set_path(&mut message, field, &fixtures.id("Agent"));
        } else if let Some(kind) = kind {
            set_path(&mut message, field, &fixtures.id(kind));
        }
    }
    // Reads upstream leaves open still aim at A's resources where the request has an id.
    for field in ["value", "resource_id", "id", "agent_id", "session_id"] {
        let kind = method
            .parent_service()
            .name()
            .trim_end_matches("QueryController")
            .trim_end_matches("CommandController")
            .to_string();
        if message
            .get_field_by_name(field)
            .is_some_and(|v| v.as_str() == Some(""))
        {
            set_path(&mut message, field, &fixtures.id(&kind));
        }
    }
    message
}

/// Ids and revisions of every row, or of one org's.
fn rows(server: &TestServer, org: Option<&str>) -> Vec<(String, i64)> {
    let sql = server.sqlite();
    let mut statement = sql
        .prepare("SELECT id, revision FROM resources WHERE ?1 IS NULL OR org_id = ?1 ORDER BY id")
        .expect("prepare");
    statement
        .query_map([org], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test]
async fn every_rpc_answers_every_caller_as_the_model_says_and_no_org_reaches_another() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("matrix.db");
    let keys = bootstrap_keys(&db).await;
    let server = cloud_server(&db).await;
    let fixtures = make_fixtures(&server, &keys.by_role["owner"]).await;
    let cases: Vec<(MethodDescriptor, Need)> = served_methods()
        .into_iter()
        .map(|m| {
            let need = need_of(&m).or_else(|| handler_need(&m)).expect("a rule");
            (m, need)
        })
        .collect();
    let mut failures = Vec::new();

    // Nobody without a valid key reaches anything, and all are told the same.
    let before = rows(&server, None);
    let unknown = format!("stk_{}", "Q".repeat(43));
    let strangers: [(&str, Option<String>); 5] = [
        ("no key", None),
        ("malformed key", Some("Bearer not-a-key".into())),
        ("unknown key", Some(bearer(&unknown))),
        ("expired key", Some(bearer(&keys.expired))),
        ("revoked key", Some(bearer(&keys.revoked))),
    ];
    for (who, key) in &strangers {
        for (method, need) in &cases {
            let request = request_for(method, need, &fixtures);
            let got = call(&server.channel, method, request, key.as_deref(), Some("a")).await;
            match got {
                Err(status)
                    if status.code() == Code::Unauthenticated
                        && status.message().starts_with(UNAUTHENTICATED) => {}
                other => failures.push(format!("{who} {}: {:?}", method.full_name(), code(&other))),
            }
        }
    }
    assert_eq!(
        rows(&server, None),
        before,
        "a caller without a valid key changed something"
    );

    // Owner of B: every call aimed at A is answered as if A did not exist.
    let a_before = rows(&server, Some("a"));
    let owner_b = bearer(&keys.owner_b);
    for (method, need) in &cases {
        let request = request_for(method, need, &fixtures);
        let got = call(&server.channel, method, request, Some(&owner_b), Some("a")).await;
        if !matches!(&got, Err(status) if status.code() == Code::NotFound) {
            failures.push(format!(
                "owner of b, header a, {}: {:?}",
                method.full_name(),
                code(&got)
            ));
        }
        let request = request_for(method, need, &fixtures);
        let got = call(&server.channel, method, request, Some(&owner_b), None).await;
        match &got {
            Err(status) if status.code() == Code::NotFound => {}
            // What no role may do (operator-only RPCs) is refused in b as anywhere.
            Err(status)
                if status.code() == Code::PermissionDenied && allowed(need, "owner").is_err() => {}
            Err(status)
                if !matches!(
                    status.code(),
                    Code::PermissionDenied | Code::Unauthenticated
                ) => {}
            Ok(answer) => {
                let text = answer
                    .as_ref()
                    .map(|m| to_json(m).to_string())
                    .unwrap_or_default();
                if let Some(id) = fixtures
                    .all()
                    .into_iter()
                    .find(|id| text.contains(id.as_str()))
                {
                    failures.push(format!(
                        "owner of b read {id} through {}",
                        method.full_name()
                    ));
                }
            }
            other => failures.push(format!(
                "owner of b, own org, {}: {:?}",
                method.full_name(),
                code(other)
            )),
        }
    }
    assert_eq!(
        rows(&server, Some("a")),
        a_before,
        "the owner of b changed org a"
    );

    // Roles in A: allowed calls get past authorization; the others PERMISSION_DENIED with
    // upstream's message for the RPC.
    for role in ["viewer", "member", "admin", "owner"] {
        let key = bearer(&keys.by_role[role]);
        for (method, need) in &cases {
            let request = request_for(method, need, &fixtures);
            let got = call(&server.channel, method, request, Some(&key), Some("a")).await;
            let name = method.full_name();
            match (allowed(need, role), &got) {
                (Ok(()), Err(status))
                    if matches!(
                        status.code(),
                        Code::PermissionDenied | Code::Unauthenticated
                    ) =>
                {
                    failures.push(format!("{role} {name}: refused {status:?}"))
                }
                (Ok(()), _) => {}
                (Err(message), Err(status)) if status.code() == Code::PermissionDenied => {
                    let expected_message = if message.is_empty() {
                        status.message().starts_with("unauthorized to create")
                    } else {
                        status.message() == message
                    };
                    if !expected_message {
                        failures.push(format!(
                            "{role} {name}: message {:?}, not {message:?}",
                            status.message()
                        ));
                    }
                }
                (Err(_), other) => {
                    failures.push(format!("{role} {name}: allowed: {:?}", code(other)))
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = keys.owner_b_account;
    server.stop().await;
}

fn code(result: &Result<Option<DynamicMessage>, Status>) -> String {
    match result {
        Ok(_) => "OK".into(),
        Err(status) => format!("{:?} {}", status.code(), status.message()),
    }
}
