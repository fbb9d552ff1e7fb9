//! ResourceService/find through a real gRPC client: what it matches (name, slug, label,
//! text), the org boundary, paging, secrets, and the refusals of bad requests.

mod common;

use std::collections::HashSet;

use common::{TestServer, expect_code, to_json, violated_fields};
use serde_json::Value;
use tonic::Code;

const FIND: &str = "/ai.stigmer.backend.v1.ResourceService/find";
const AGENT: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController/create";
const ENVIRONMENT: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController/create";
const SECRET: &str = "s3cr3t-search-VALUE-51e0";

async fn find_as(server: &TestServer, org: &str, request: Value) -> Result<Value, tonic::Status> {
    server
        .call_json_as(org, FIND, &request.to_string())
        .await
        .map(|response| to_json(&response))
}

async fn find(server: &TestServer, request: Value) -> Value {
    find_as(server, "local", request.clone())
        .await
        .unwrap_or_else(|status| panic!("find {request}: {status:?}"))
}

fn items(response: &Value) -> Vec<Value> {
    response["items"].as_array().cloned().unwrap_or_default()
}

/// `(kind, name, matched)` of every item.
fn found(response: &Value) -> Vec<(String, String, String)> {
    items(response)
        .iter()
        .map(|item| {
            let text = |field: &str| item[field].as_str().unwrap_or_default().to_string();
            (text("kind"), text("name"), text("matched"))
        })
        .collect()
}

async fn create_agent(
    server: &TestServer,
    org: &str,
    metadata: Value,
    instructions: &str,
) -> String {
    let body = serde_json::json!({"metadata": metadata, "spec": {"instructions": instructions}});
    let created = server
        .call_json_as(org, AGENT, &body.to_string())
        .await
        .expect("create agent");
    to_json(&created)["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_by_name_slug_label_and_text_within_the_callers_org() {
    let server = TestServer::start().await;
    let reviewer = create_agent(
        &server,
        "local",
        serde_json::json!({"name": "Code Reviewer"}),
        "Review pull requests for bugs.",
    )
    .await;
    create_agent(
        &server,
        "local",
        serde_json::json!({"name": "Something", "slug": "zeta-sluggy"}),
        "Answer questions about the weather.",
    )
    .await;
    create_agent(
        &server,
        "local",
        serde_json::json!({"name": "Deployer", "labels": {"team": "Payments"}}),
        "Deploy services when asked to.",
    )
    .await;
    create_agent(
        &server,
        "local",
        serde_json::json!({"name": "Plain helper"}),
        "Operate the Kubernetes clusters kindly.",
    )
    .await;
    create_agent(
        &server,
        "team-x",
        serde_json::json!({"name": "Reviewer elsewhere", "labels": {"team": "payments"}}),
        "Review pull requests in another org.",
    )
    .await;
    let agents = |query: &str, text: bool| serde_json::json!({"query": query, "kinds": ["Agent"], "matchText": text});
    let named = |kind: &str, name: &str, matched: &str| {
        (kind.to_string(), name.to_string(), matched.to_string())
    };

    let by_name = find(&server, agents("REVIEW", false)).await;
    assert_eq!(
        found(&by_name),
        [named("Agent", "Code Reviewer", "MATCHED_FIELD_NAME")]
    );
    let item = &items(&by_name)[0];
    assert_eq!(item["id"], reviewer.as_str());
    assert_eq!(item["org"], "local");
    assert_eq!(
        item["resource"]["metadata"]["id"],
        reviewer.as_str(),
        "the resource, as get returns it"
    );
    assert!(by_name["revision"].as_str().is_some_and(|r| r != "0"));
    assert_eq!(
        found(&find(&server, agents("sluggy", false)).await),
        [named("Agent", "Something", "MATCHED_FIELD_SLUG")]
    );
    assert_eq!(
        found(&find(&server, agents("payments", false)).await),
        [named("Agent", "Deployer", "MATCHED_FIELD_LABEL")]
    );
    assert!(
        items(&find(&server, agents("kubernetes", false)).await).is_empty(),
        "text only when asked"
    );
    assert_eq!(
        found(&find(&server, agents("kubernetes", true)).await),
        [named("Agent", "Plain helper", "MATCHED_FIELD_TEXT")]
    );

    // Every kind: the agent's default instance too, and still nothing of team-x.
    let everywhere = find(&server, serde_json::json!({"query": "review"})).await;
    assert!(found(&everywhere).contains(&named("Agent", "Code Reviewer", "MATCHED_FIELD_NAME")));
    assert!(items(&everywhere).iter().all(|item| item["org"] == "local"));
    assert!(
        found(&everywhere)
            .iter()
            .all(|(_, name, _)| !name.contains("elsewhere"))
    );

    // team-x sees its own only, and local's body may not name team-x.
    let theirs = find_as(&server, "team-x", agents("review", false))
        .await
        .expect("find in team-x");
    assert_eq!(
        found(&theirs),
        [named("Agent", "Reviewer elsewhere", "MATCHED_FIELD_NAME")]
    );
    let mut other_org = agents("review", false);
    other_org["org"] = "team-x".into();
    assert!(
        find_as(&server, "local", other_org).await.is_err(),
        "another org's name in the body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_match_once() {
    let server = TestServer::start().await;
    let mut expected = HashSet::new();
    for n in 0..11 {
        let name = format!("pageable agent {n}");
        expected.insert(
            create_agent(
                &server,
                "local",
                serde_json::json!({"name": name}),
                "Do page things well.",
            )
            .await,
        );
    }
    create_agent(
        &server,
        "local",
        serde_json::json!({"name": "unrelated"}),
        "Do other things well.",
    )
    .await;
    let env = server
        .call_json(ENVIRONMENT, r#"{"metadata":{"name":"pageable env"}}"#)
        .await
        .expect("create environment");
    expected.insert(
        to_json(&env)["metadata"]["id"]
            .as_str()
            .expect("id")
            .to_string(),
    );

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = find(
            &server,
            serde_json::json!({"query": "PAGEABLE", "kinds": ["Environment", "Agent"],
                               "page": {"size": 4}, "pageToken": token}),
        )
        .await;
        pages += 1;
        assert!(items(&page).len() <= 4, "a page holds at most its size");
        seen.extend(
            items(&page)
                .iter()
                .map(|item| item["id"].as_str().expect("id").to_string()),
        );
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "each match once: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);
    assert!(
        seen[..11].iter().all(|id| id.starts_with("agt-")),
        "kind order: Agent before Environment"
    );
    assert_eq!(pages, 3);

    // A token pages only the search it came from.
    let first = find(
        &server,
        serde_json::json!({"query": "pageable", "page": {"size": 1}}),
    )
    .await;
    let token = first["nextPageToken"].as_str().expect("token").to_string();
    let status = expect_code(
        find_as(
            &server,
            "local",
            serde_json::json!({"query": "unrelated", "pageToken": token}),
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["pageToken"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_neither_searched_nor_returned() {
    let server = TestServer::start().await;
    let body = format!(
        r#"{{"metadata":{{"name":"vault env"}},"spec":{{"data":{{"TOKEN":{{"value":"{SECRET}","isSecret":true}}}}}}}}"#
    );
    server
        .call_json(ENVIRONMENT, &body)
        .await
        .expect("create environment");
    let by_secret = find(
        &server,
        serde_json::json!({"query": SECRET, "matchText": true}),
    )
    .await;
    assert!(
        items(&by_secret).is_empty(),
        "a sealed value is not searched: {by_secret}"
    );
    let sealed = find(
        &server,
        serde_json::json!({"query": "stigmer-sealed", "matchText": true}),
    )
    .await;
    assert!(items(&sealed).is_empty(), "nor is its ciphertext: {sealed}");
    let by_name = find(
        &server,
        serde_json::json!({"query": "vault", "matchText": true}),
    )
    .await;
    let text = by_name.to_string();
    assert_eq!(items(&by_name).len(), 1, "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains("stigmer-sealed"),
        "{text}"
    );
    assert!(
        text.contains("[redacted: secret]"),
        "redacted as get redacts: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let server = TestServer::start().await;
    let refused = |request: Value| {
        let server = &server;
        async move {
            expect_code(
                find_as(server, "local", request).await,
                Code::InvalidArgument,
            )
        }
    };
    let status = refused(serde_json::json!({"query": "a"})).await;
    assert_eq!(violated_fields(&status), ["query"]);
    let status = refused(serde_json::json!({"query": "x".repeat(257)})).await;
    assert_eq!(violated_fields(&status), ["query"]);
    let status = refused(serde_json::json!({"query": "ok", "kinds": ["Agent", "Nope"]})).await;
    assert_eq!(violated_fields(&status), ["kinds"]);
    let status = refused(serde_json::json!({"query": "ok", "kinds": ["ApiKey"]})).await;
    assert_eq!(
        violated_fields(&status),
        ["kinds"],
        "identity kinds are in no org"
    );
    let status = refused(serde_json::json!({"query": "ok", "page": {"num": 2}})).await;
    assert_eq!(violated_fields(&status), ["page.num"]);
    let status = refused(serde_json::json!({"query": "ok", "pageToken": "garbage"})).await;
    assert_eq!(violated_fields(&status), ["pageToken"]);
    // The first page by number is the first page.
    find(
        &server,
        serde_json::json!({"query": "ok", "page": {"num": 1}}),
    )
    .await;
}
