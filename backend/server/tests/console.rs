//! The web console at /console: what the server sends (pages, assets, headers, the flag that
//! turns it off), then the console itself in a real headless chromium, following the API live.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::TestServer;
use common::browser::{self, Browser};
use fantoccini::Locator;
use serde_json::{Value, json};
use stigmer_grpc::AuthMode;
use stigmer_grpc::bootstrap::{self, KeyRequest};

const AGENTS: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController";
const EXECUTIONS: &str = "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController";

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    common::http1(addr, &request).await
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_content_security_policy() {
    let server = TestServer::start().await;
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
        ("/console/kinds.json", "application/json"),
    ] {
        let (status, head, body) = get(server.addr, path).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.contains(&format!("content-type: {content_type}")),
            "{path}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{path}: {head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(!body.is_empty(), "{path}");
    }
    let (_, _, page) = get(server.addr, "/console").await;
    assert!(page.contains(r#"<script src="/console/app.js""#), "{page}");
    assert!(
        !page.contains("<script>") && !page.contains("http"),
        "no inline script, nothing from elsewhere: {page}"
    );
    let (_, _, kinds) = get(server.addr, "/console/kinds.json").await;
    let kinds: Value = serde_json::from_str(&kinds).expect("JSON");
    let agent = &kinds["kinds"][0];
    assert_eq!(agent["name"], "Agent");
    assert_eq!(
        agent["list"],
        "/ai.stigmer.agentic.agent.v1.AgentQueryController/list"
    );
    let (status, _, _) = get(server.addr, "/console/nothing-here").await;
    assert_eq!(status, 404);
    let (status, head, _) = get(server.addr, "/").await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /console"), "{head}");
}

#[tokio::test]
async fn console_false_serves_no_console() {
    let server = TestServer::start_with(|settings| settings.server.console = false).await;
    for path in ["/console", "/console/app.js", "/console/kinds.json"] {
        let (status, head, _) = get(server.addr, path).await;
        assert_eq!(status, 404, "{path}: {head}");
    }
}

/// An Agent created through the API appears on the Agents page without a reload; its page
/// shows its YAML; an update appears in its history with a diff; an execution's page follows
/// it until it ends. Each page is saved as a screenshot for people to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_the_api_live_in_a_real_browser() {
    let server = TestServer::start().await;
    let shots = browser::screenshot_dir();
    let browser = Browser::start(1280, 900).await;
    let console = format!("http://{}/console", server.addr);

    browser
        .client
        .goto(&format!("{console}#/"))
        .await
        .expect("open the console");
    browser
        .wait_text("main dl.facts", |t| t.contains("sqlite"))
        .await;
    browser.screenshot(&shots, "overview").await;

    browser
        .client
        .goto(&format!("{console}#/kind/Agent"))
        .await
        .expect("the Agents page");
    browser.wait_text("#live", |t| t.starts_with("Live")).await;
    // A mark that a reload would wipe out.
    browser
        .client
        .execute("window.stillTheSamePage = true; return null;", vec![])
        .await
        .expect("mark the page");
    let created = create_agent(&server).await;
    let id = created["metadata"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let row = format!("tr[data-id='{id}']");
    browser.wait_text(&row, |t| t.contains("PR reviewer")).await;
    assert_eq!(
        browser
            .client
            .execute("return window.stillTheSamePage === true;", vec![])
            .await
            .expect("read the mark"),
        json!(true),
        "the Agent appeared without a reload"
    );
    // "Live." and not "Live (polling…)": the page follows the watch's server-sent events.
    browser.wait_text("#live", |t| t == "Live.").await;
    browser.screenshot(&shots, "kind").await;

    // A resource of another kind that only mentions the Agent's id, found through find.
    call(
        &server,
        "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController/create",
        json!({
            "metadata": { "name": "Review sandbox" },
            "spec": { "description": format!("Where {id} runs its checks.") }
        }),
    )
    .await;
    browser
        .client
        .find(Locator::Css(&format!("{row} a")))
        .await
        .expect("the row's link")
        .click()
        .await
        .expect("open the Agent");
    browser
        .wait_text("pre.yaml", |t| {
            t.contains("name: PR reviewer") && t.contains("kind: Agent")
        })
        .await;
    // Its default instance: named in its status, and found by getByAgent.
    browser
        .wait_text("section[aria-labelledby='references']", |t| {
            t.contains("It references\nAgentInstance ain-")
                && t.contains("Referenced by\nAgentInstance")
                && t.contains("Environment Review sandbox (mentions its id)")
        })
        .await;
    browser.screenshot(&shots, "resource").await;

    let updated = update_agent(&server, created).await;
    let revision = updated["metadata"]["revision"]
        .as_str()
        .expect("a revision");
    browser
        .wait_text(&format!("li[data-revision='{revision}']"), |_| true)
        .await;
    let diff = browser
        .wait_text("pre.diff", |t| {
            t.contains("+   instructions: Review every change twice.")
        })
        .await;
    assert!(
        diff.text()
            .await
            .expect("the diff")
            .contains("-   instructions:"),
        "the old line is shown removed"
    );
    browser
        .client
        .execute(
            "document.querySelector('#history').scrollIntoView(); return null;",
            vec![],
        )
        .await
        .expect("scroll to the history");
    browser.screenshot(&shots, "history-diff").await;

    let execution = start_execution(&server, &id).await;
    browser
        .client
        .goto(&format!("{console}#/executions"))
        .await
        .expect("executions");
    browser
        .wait_text("main", |t| t.contains("pending (1)"))
        .await;
    browser.screenshot(&shots, "executions").await;

    browser
        .client
        .goto(&format!("{console}#/execution/AgentExecution/{execution}"))
        .await
        .expect("the execution's page");
    browser.wait_text("#live", |t| t == "Live.").await;
    for phase in ["EXECUTION_IN_PROGRESS", "EXECUTION_COMPLETED"] {
        set_phase(&server, &execution, phase).await;
    }
    browser
        .wait_text(".phase", |t| t.contains("completed"))
        .await;
    browser.wait_text("#live", |t| t == "Ended.").await;
    browser.screenshot(&shots, "execution").await;
    browser.close().await;

    phone_width(&console, &shots).await;
    println!("screenshots of the console: {}", shots.display());
}

/// In cloud mode the console asks for an API key, sends it on every call and keeps it in
/// the tab's sessionStorage only: never in localStorage, never in a cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cloud_mode_the_console_asks_for_a_key_kept_in_the_session() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("cloud.db");
    let (config, store) = common::open_database(&db, "127.0.0.1:1".parse().expect("addr")).await;
    let request = KeyRequest {
        org: "acme".into(),
        role: "viewer".into(),
        name: Some("console".into()),
        expires_at: None,
    };
    let key = bootstrap::create_key(&config, Arc::clone(&store), request)
        .await
        .expect("create a key")
        .key;
    store.close().await.expect("close");
    let server =
        TestServer::start_at_with(&db, |settings| settings.server.auth = AuthMode::ApiKey).await;
    let browser = Browser::start(1280, 900).await;
    let console = format!("http://{}/console", server.addr);
    browser
        .client
        .goto(&format!("{console}#/kind/Agent"))
        .await
        .expect("open");
    browser
        .wait_text("label[for='api-key']", |t| t == "API key")
        .await;
    browser
        .screenshot(&browser::screenshot_dir(), "api-key")
        .await;
    let input = browser
        .client
        .find(Locator::Css("#api-key"))
        .await
        .expect("the key input");
    input.send_keys(&key).await.expect("type the key");
    input.send_keys("\u{E007}").await.expect("press Enter");
    browser
        .wait_text("main", |t| t.contains("No Agent matches."))
        .await;
    let stored = browser
        .client
        .execute(
            "return [sessionStorage.getItem('stigmer.apiKey'), localStorage.length, document.cookie];",
            vec![],
        )
        .await
        .expect("read the storage");
    assert_eq!(stored, json!([key, 0, ""]));
    browser.close().await;
}

/// At 375 px the Agents page needs no sideways scrolling of the page itself.
async fn phone_width(console: &str, shots: &Path) {
    let phone = Browser::start(375, 812).await;
    phone
        .client
        .goto(&format!("{console}#/kind/Agent"))
        .await
        .expect("Agents page");
    phone
        .wait_text("tbody", |t| t.contains("PR reviewer"))
        .await;
    let overflow = phone
        .client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .expect("measure the page");
    assert_eq!(overflow, json!(0), "the page is wider than a phone");
    phone.screenshot(shots, "kind-phone").await;
    phone.close().await;
}

async fn create_agent(server: &TestServer) -> Value {
    let body = json!({
        "metadata": { "name": "PR reviewer", "labels": { "team": "platform" } },
        "spec": { "instructions": "Review every pull request." }
    });
    call(server, &format!("{AGENTS}/create"), body).await
}

async fn update_agent(server: &TestServer, mut agent: Value) -> Value {
    agent["spec"]["instructions"] = json!("Review every change twice.");
    call(server, &format!("{AGENTS}/update"), agent).await
}

async fn start_execution(server: &TestServer, agent: &str) -> String {
    let body = json!({ "spec": { "agentId": agent, "message": "hello" } });
    let execution = call(server, &format!("{EXECUTIONS}/create"), body).await;
    execution["metadata"]["id"]
        .as_str()
        .expect("an id")
        .to_string()
}

async fn set_phase(server: &TestServer, execution: &str, phase: &str) {
    let body = json!({ "executionId": execution, "status": { "phase": phase } });
    call(server, &format!("{EXECUTIONS}/updateStatus"), body).await;
}

/// A call through the API, as any client makes it.
async fn call(server: &TestServer, path: &str, body: Value) -> Value {
    let answer = server
        .call_json(path, &body.to_string())
        .await
        .unwrap_or_else(|status| panic!("{path}: {status:?}"));
    common::to_json(&answer)
}
