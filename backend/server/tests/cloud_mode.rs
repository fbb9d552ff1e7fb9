//! Cloud mode beyond the matrix: keys made and revoked through the API, grants on one
//! resource, who may grant what, organizations chosen by header, reflection behind the key.

mod common;

use std::sync::Arc;

use common::{TestServer, method_types, to_json};
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};
use stigmer_grpc::AuthMode;
use stigmer_grpc::bootstrap::{self, CreatedKey, KeyRequest};
use tonic::{Code, Status};

const KEYS: &str = "/ai.stigmer.iam.apikey.v1.ApiKeyCommandController";
const KEY_QUERIES: &str = "/ai.stigmer.iam.apikey.v1.ApiKeyQueryController";
const WHO: &str = "/ai.stigmer.iam.identityaccount.v1.IdentityAccountQueryController/whoAmI";
const GRANTS: &str = "/ai.stigmer.iam.iampolicy.v1.IamPolicyCommandController";
const POLICY_QUERIES: &str = "/ai.stigmer.iam.iampolicy.v1.IamPolicyQueryController";
const AGENTS: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController";
const AGENT_QUERIES: &str = "/ai.stigmer.agentic.agent.v1.AgentQueryController";

/// A cloud-mode server whose database holds one key per (org, role) asked for.
async fn server_with(keys: &[(&str, &str)]) -> (TestServer, Vec<CreatedKey>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("cloud.db");
    let (config, store) = common::open_database(&db, "127.0.0.1:1".parse().expect("addr")).await;
    let mut created = Vec::new();
    for (org, role) in keys {
        let request = KeyRequest {
            org: org.to_string(),
            role: role.to_string(),
            name: Some(format!("{role} of {org}")),
            expires_at: None,
        };
        created.push(
            bootstrap::create_key(&config, Arc::clone(&store), request)
                .await
                .expect("create a key"),
        );
    }
    store.close().await.expect("close");
    let server =
        TestServer::start_at_with(&db, |settings| settings.server.auth = AuthMode::ApiKey).await;
    (server, created, dir)
}

/// Any unary RPC with a JSON body, as `key` in `org` (header left out when `None`).
async fn rpc(
    server: &TestServer,
    path: &str,
    body: Value,
    key: &str,
    org: Option<&str>,
) -> Result<Value, Status> {
    let (input, output) = method_types(path);
    let message = DynamicMessage::deserialize(input, body).expect("request JSON");
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    if let Some(org) = org {
        request
            .metadata_mut()
            .insert("x-stigmer-org", org.parse().expect("ascii"));
    }
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.expect("ready");
    grpc.unary(
        request,
        http::uri::PathAndQuery::try_from(path).expect("path"),
        stigmer_grpc::codec::DynamicCodec::new(output),
    )
    .await
    .map(|response| to_json(&response.into_inner()))
}

fn agent(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"instructions": "Answer every question politely."}})
}

fn grant(account: &str, kind: &str, id: &str, relation: &str) -> Value {
    json!({
        "principal": {"kind": "identity_account", "id": account},
        "resource": {"kind": kind, "id": id},
        "relation": relation,
    })
}

fn code(result: Result<Value, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn reflection_needs_a_key_and_health_does_not() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let (server, keys, _dir) = server_with(&[("a", "viewer")]).await;
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let refused = reflection
        .server_reflection_info(tokio_stream::iter([list()]))
        .await
        .expect_err("reflection without a key");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut request = tonic::Request::new(tokio_stream::iter([list()]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", keys[0].key).parse().expect("ascii"),
    );
    let mut answers = reflection
        .server_reflection_info(request)
        .await
        .expect("reflection with a key")
        .into_inner();
    let answer = tokio_stream::StreamExt::next(&mut answers)
        .await
        .expect("an answer")
        .expect("services");
    assert!(format!("{answer:?}").contains("ApiKeyCommandController"));

    let health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health without a key")
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}

#[tokio::test]
async fn a_key_made_through_the_api_is_shown_once_used_and_revoked_at_once() {
    let (server, keys, _dir) = server_with(&[("a", "viewer"), ("a", "owner")]).await;
    let viewer = &keys[0].key;
    let made = rpc(
        &server,
        &format!("{KEYS}/create"),
        json!({"metadata": {"name": "ci"}, "spec": {"neverExpires": true}}),
        viewer,
        None,
    )
    .await
    .expect("any caller may make itself a key");
    let raw = made["spec"]["keyHash"].as_str().expect("the raw key, once");
    assert!(raw.starts_with("stk_") && raw.len() == 47, "{raw}");
    let id = made["metadata"]["id"].as_str().expect("id").to_string();
    assert_eq!(made["spec"]["fingerprint"], raw[41..]);

    let me = rpc(&server, WHO, json!({}), raw, None)
        .await
        .expect("whoAmI");
    assert_eq!(me["metadata"]["id"], keys[0].identity_account_id);

    let stored = rpc(
        &server,
        &format!("{KEY_QUERIES}/get"),
        json!({"value": id}),
        viewer,
        None,
    )
    .await
    .expect("its own key");
    let hash = stored["spec"]["keyHash"].as_str().expect("hash");
    assert_ne!(hash, raw, "the raw key is never shown again");
    let all = rpc(
        &server,
        &format!("{KEY_QUERIES}/findAll"),
        json!({}),
        viewer,
        None,
    )
    .await
    .expect("findAll");
    assert!(all.to_string().contains(&id) && !all.to_string().contains(raw));
    // Another account's key is not found, even by an owner.
    let owner = &keys[1].key;
    let other = rpc(
        &server,
        &format!("{KEY_QUERIES}/get"),
        json!({"value": id}),
        owner,
        None,
    )
    .await;
    assert_eq!(code(other), Code::NotFound);

    // Using it stamps status.lastUsedAt, in the background.
    let mut last_used = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while last_used.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lastUsedAt never written"
        );
        let key = rpc(
            &server,
            &format!("{KEY_QUERIES}/get"),
            json!({"value": id}),
            raw,
            None,
        )
        .await
        .expect("get");
        last_used = key["status"]["lastUsedAt"].as_str().map(str::to_string);
    }

    // An update renames and re-dates the key; its hash and owner never change. (Stamping
    // lastUsedAt is a change too: read the key again first.)
    let mut renamed = rpc(
        &server,
        &format!("{KEY_QUERIES}/get"),
        json!({"value": id}),
        viewer,
        None,
    )
    .await
    .expect("get");
    renamed["metadata"]["name"] = json!("ci-renamed");
    renamed["spec"] =
        json!({"expiresAt": "2099-01-01T00:00:00Z", "keyHash": "forged", "fingerprint": "forged"});
    let updated = rpc(
        &server,
        &format!("{KEYS}/update"),
        renamed.clone(),
        viewer,
        None,
    )
    .await
    .expect("update its own key");
    assert_eq!(updated["metadata"]["name"], "ci-renamed");
    assert_eq!(updated["spec"]["expiresAt"], "2099-01-01T00:00:00Z");
    assert_eq!(updated["spec"]["keyHash"], stored["spec"]["keyHash"]);
    assert!(
        rpc(&server, WHO, json!({}), raw, None).await.is_ok(),
        "still works"
    );
    renamed["metadata"]["revision"] = json!("0");
    renamed["spec"] = json!({"expiresAt": "2001-01-01T00:00:00Z"});
    let past = rpc(&server, &format!("{KEYS}/update"), renamed, viewer, None)
        .await
        .expect_err("an expiry in the past");
    assert_eq!(past.code(), Code::InvalidArgument);
    assert_eq!(common::violated_fields(&past), ["spec.expiresAt"]);

    rpc(
        &server,
        &format!("{KEYS}/delete"),
        json!({"value": id}),
        raw,
        None,
    )
    .await
    .expect("revoke its own key");
    let after = rpc(&server, WHO, json!({}), raw, None)
        .await
        .expect_err("revoked");
    assert_eq!(after.code(), Code::Unauthenticated);
    assert!(
        rpc(&server, WHO, json!({}), viewer, None).await.is_ok(),
        "the other key still works"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_grant_on_one_agent_reaches_that_agent_only_and_only_owners_grant_admin() {
    let (server, keys, _dir) = server_with(&[("a", "owner"), ("a", "admin"), ("b", "owner")]).await;
    let (owner, admin, outsider) = (&keys[0].key, &keys[1].key, &keys[2].key);
    let outsider_account = keys[2].identity_account_id.clone();
    let shared = rpc(
        &server,
        &format!("{AGENTS}/create"),
        agent("shared"),
        owner,
        None,
    )
    .await
    .expect("create");
    let private = rpc(
        &server,
        &format!("{AGENTS}/create"),
        agent("private"),
        owner,
        None,
    )
    .await
    .expect("create");
    let shared_id = shared["metadata"]["id"].as_str().expect("id").to_string();
    let private_id = private["metadata"]["id"].as_str().expect("id").to_string();

    // Before any grant, org a does not exist for the outsider.
    let get = |id: &str| json!({"value": id});
    let before = rpc(
        &server,
        &format!("{AGENT_QUERIES}/get"),
        get(&shared_id),
        outsider,
        Some("a"),
    )
    .await;
    assert_eq!(code(before), Code::NotFound);

    // Admins grant member and viewer, not admin or owner.
    let as_admin = rpc(
        &server,
        &format!("{GRANTS}/create"),
        grant(&outsider_account, "organization", "a", "admin"),
        admin,
        None,
    )
    .await;
    let refused = as_admin.expect_err("admin granting admin");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("owner"), "{}", refused.message());
    rpc(
        &server,
        &format!("{GRANTS}/create"),
        grant(&outsider_account, "agent", &shared_id, "viewer"),
        admin,
        None,
    )
    .await
    .expect("admin grants viewer on one agent");
    let again = rpc(
        &server,
        &format!("{GRANTS}/create"),
        grant(&outsider_account, "agent", &shared_id, "viewer"),
        owner,
        None,
    )
    .await;
    assert_eq!(code(again), Code::AlreadyExists);

    // The outsider now reaches two orgs: it must say which.
    let unsaid = rpc(
        &server,
        &format!("{AGENT_QUERIES}/get"),
        get(&shared_id),
        outsider,
        None,
    )
    .await
    .expect_err("two orgs, no header");
    assert_eq!(unsaid.code(), Code::FailedPrecondition);
    let me = rpc(&server, WHO, json!({}), outsider, None)
        .await
        .expect("whoAmI needs no org");
    assert_eq!(me["metadata"]["id"], outsider_account);
    assert!(
        unsaid.message().contains("x-stigmer-org"),
        "{}",
        unsaid.message()
    );
    let seen = rpc(
        &server,
        &format!("{AGENT_QUERIES}/get"),
        get(&shared_id),
        outsider,
        Some("a"),
    )
    .await
    .expect("the granted agent");
    assert_eq!(seen["metadata"]["name"], "shared");
    let denied = rpc(
        &server,
        &format!("{AGENT_QUERIES}/get"),
        get(&private_id),
        outsider,
        Some("a"),
    )
    .await
    .expect_err("another agent");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut changed = seen.clone();
    changed["spec"]["instructions"] = json!("Answer nothing at all, ever.");
    let update = rpc(
        &server,
        &format!("{AGENTS}/update"),
        changed,
        outsider,
        Some("a"),
    )
    .await;
    let update = update.expect_err("a viewer updating");
    assert_eq!(update.message(), "unauthorized to update agent");
    let list = rpc(
        &server,
        &format!("{AGENT_QUERIES}/list"),
        json!({}),
        outsider,
        Some("a"),
    )
    .await;
    assert_eq!(
        code(list),
        Code::PermissionDenied,
        "listing needs a role on the org"
    );

    // The queries agree with what was enforced.
    let check = rpc(
        &server,
        &format!("{POLICY_QUERIES}/checkAuthorization"),
        json!({"policy": grant(&outsider_account, "agent", &shared_id, "viewer")}),
        owner,
        None,
    )
    .await
    .expect("check");
    assert_eq!(check["isAuthorized"], true);
    let check = rpc(
        &server,
        &format!("{POLICY_QUERIES}/checkAuthorization"),
        json!({"policy": grant(&outsider_account, "agent", &private_id, "viewer")}),
        owner,
        None,
    )
    .await
    .expect("check");
    assert_ne!(check["isAuthorized"], true);
    let who = rpc(
        &server,
        &format!("{POLICY_QUERIES}/listAuthorizedPrincipalIds"),
        json!({"resource": {"kind": "agent", "id": shared_id}, "principalKind": "identity_account", "relation": "viewer"}),
        owner,
        None,
    )
    .await
    .expect("principals");
    let ids = who["principalIds"].to_string();
    assert!(
        ids.contains(&outsider_account) && ids.contains(&keys[0].identity_account_id),
        "{ids}"
    );
    let what = rpc(
        &server,
        &format!("{POLICY_QUERIES}/listAuthorizedResourceIds"),
        json!({"principal": {"kind": "identity_account", "id": outsider_account}, "resourceKind": "agent", "relation": "viewer"}),
        owner,
        None,
    )
    .await
    .expect("resources");
    assert_eq!(what["resourceIds"], json!([shared_id]));

    // Revoked, the agent is out of reach again at once.
    rpc(
        &server,
        &format!("{GRANTS}/delete"),
        grant(&outsider_account, "agent", &shared_id, "viewer"),
        owner,
        None,
    )
    .await
    .expect("revoke");
    let gone = rpc(
        &server,
        &format!("{AGENT_QUERIES}/get"),
        get(&shared_id),
        outsider,
        Some("a"),
    )
    .await;
    assert_eq!(code(gone), Code::NotFound);

    // An org keeps its last owner.
    let last = rpc(
        &server,
        &format!("{GRANTS}/delete"),
        grant(&keys[0].identity_account_id, "organization", "a", "owner"),
        owner,
        None,
    )
    .await
    .expect_err("the last owner");
    assert_eq!(last.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn without_auth_the_identity_services_say_how_to_turn_it_on() {
    let server = TestServer::start().await;
    let (input, output) = method_types(WHO);
    let status = common::call(&server.channel, WHO, DynamicMessage::new(input), output)
        .await
        .expect_err("whoAmI in local mode");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("--auth apikey"),
        "{}",
        status.message()
    );
    server.stop().await;
}

/// Any base64 32-byte key: replicas on PostgreSQL share the master key they are given.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn replica(url: &str) -> TestServer {
    let url = url.to_string();
    TestServer::start_with(move |settings| {
        settings.database = stigmer_database::DatabaseOptions::new(url);
        settings.server.master_key = Some(MASTER_KEY.into());
        settings.server.auth = AuthMode::ApiKey;
    })
    .await
}

/// Polls `call` until it answers `expected`; returns how long that took. Fails after 10 s.
async fn until_code<F, Fut>(expected: Code, mut call: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, Status>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let got = code(call().await);
        if got == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "still {got:?}, not {expected:?}, after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_postgresql_replicas_share_keys_and_grants_and_a_revocation_reaches_both() {
    let url = common::postgres::fresh_database().await;
    let database = stigmer_database::open(&stigmer_database::DatabaseOptions::new(url.clone()))
        .await
        .expect("open");
    let mut config = stigmer_grpc::ServerConfig::new("127.0.0.1:1".parse().expect("addr"));
    config.master_key = Some(MASTER_KEY.into());
    let mut keys = Vec::new();
    for role in ["owner", "viewer"] {
        let request = KeyRequest {
            org: "acme".into(),
            role: role.into(),
            name: None,
            expires_at: None,
        };
        keys.push(
            bootstrap::create_key(&config, Arc::clone(&database.store), request)
                .await
                .expect("create a key on PostgreSQL"),
        );
    }
    database.store.close().await.expect("close");
    let (one, two) = (replica(&url).await, replica(&url).await);
    let (owner, viewer) = (&keys[0].key, &keys[1].key);
    let create = format!("{AGENTS}/create");

    let refused = rpc(&one, &create, agent("first"), viewer, None).await;
    assert_eq!(code(refused), Code::PermissionDenied);
    rpc(
        &one,
        &format!("{GRANTS}/create"),
        grant(
            &keys[1].identity_account_id,
            "organization",
            "acme",
            "member",
        ),
        owner,
        None,
    )
    .await
    .expect("grant member on one replica");
    let mut n = 0;
    let took = until_code(Code::Ok, || {
        n += 1;
        rpc(&two, &create, agent(&format!("second-{n}")), viewer, None)
    })
    .await;
    println!("a grant made on one replica took {took:?} to reach the other");

    let made = rpc(
        &one,
        &format!("{KEYS}/create"),
        json!({"metadata": {"name": "short-lived"}, "spec": {"neverExpires": true}}),
        owner,
        None,
    )
    .await
    .expect("a key through the API");
    let raw = made["spec"]["keyHash"].as_str().expect("raw").to_string();
    let id = made["metadata"]["id"].as_str().expect("id").to_string();
    rpc(&two, WHO, json!({}), &raw, None)
        .await
        .expect("the other replica knows the key");
    rpc(
        &one,
        &format!("{KEYS}/delete"),
        json!({"value": id}),
        &raw,
        None,
    )
    .await
    .expect("revoke on one replica");
    let after = rpc(&one, WHO, json!({}), &raw, None).await;
    assert_eq!(
        code(after),
        Code::Unauthenticated,
        "at once where it was revoked"
    );
    let took = until_code(Code::Unauthenticated, || {
        rpc(&two, WHO, json!({}), &raw, None)
    })
    .await;
    println!("a revocation made on one replica took {took:?} to reach the other");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    one.stop().await;
    two.stop().await;
}

/// A txn is authorized operation by operation as the kind's own RPC would be: a member, who
/// may create but not delete, has a txn with a delete refused whole; an admin's goes through.
/// Conditions are reads, and never reach another org.
#[tokio::test]
async fn a_txn_is_authorized_as_each_of_its_operations() {
    const TXN: &str = "/ai.stigmer.backend.v1.ResourceService/txn";
    let (server, keys, _dir) =
        server_with(&[("a", "member"), ("a", "admin"), ("b", "owner")]).await;
    let (member, admin, stranger) = (&keys[0].key, &keys[1].key, &keys[2].key);
    let put = |name: &str| {
        let mut any = agent(name);
        any["@type"] = json!("type.googleapis.com/ai.stigmer.agentic.agent.v1.Agent");
        json!({"put": any})
    };
    let created = rpc(
        &server,
        TXN,
        json!({"operations": [put("kept")]}),
        member,
        None,
    )
    .await
    .expect("a member creates through a txn");
    let id = created["results"][0]["resource"]["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let delete = json!({"operations": [put("other"), {"delete": {"kind": "Agent", "id": id}}]});
    let refused = rpc(&server, TXN, delete.clone(), member, None).await;
    assert_eq!(code(refused), Code::PermissionDenied);
    let listed = rpc(
        &server,
        &format!("{AGENT_QUERIES}/list"),
        json!({}),
        admin,
        None,
    )
    .await
    .expect("list");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "nothing of the refused txn was written: {listed}"
    );

    // Org b's owner cannot learn a's revisions through a condition, nor delete there.
    let probe = json!({"conditions": [{"kind": "Agent", "id": id, "revision": "0"}]});
    let answer = rpc(&server, TXN, probe, stranger, None)
        .await
        .expect("an answer about org b");
    assert_eq!(
        answer["succeeded"], true,
        "{id} does not exist in b: {answer}"
    );
    let elsewhere = rpc(&server, TXN, delete.clone(), stranger, None).await;
    assert_eq!(code(elsewhere), Code::NotFound);

    let done = rpc(&server, TXN, delete, admin, None)
        .await
        .expect("an admin's txn");
    assert_eq!(done["results"][1]["outcome"], "deleted", "{done}");
}
