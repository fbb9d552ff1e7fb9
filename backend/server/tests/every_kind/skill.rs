//! Skill, the one kind without create: its resources come only from push (tests/skills.rs
//! covers that), so only the read paths and a refused push are checked here.

use serde_json::json;
use tonic::Code;

use crate::api::Api;
use crate::checks::assert_not_found;
use crate::common::{TestServer, expect_code, violated_fields};
use crate::fixture::Fixture;
use crate::json::items_of;
use crate::negative::invalid_reads_are_refused;
use crate::table::case;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_skills_are_not_found_and_the_list_is_empty() {
    let case = case("Skill");
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::empty();
    let api = Api::new(&server, &case, &fixture);
    let ghost = format!("{}-00000000000000000000000000", case.prefix);
    assert_not_found(
        &case,
        api.get(&ghost).await,
        &ghost,
        "get of a missing skill",
    );
    let result = api
        .get_by_reference(&json!({ "slug": "no-such-skill" }))
        .await;
    assert_not_found(
        &case,
        result,
        "no-such-skill",
        "getByReference of a missing skill",
    );
    assert_not_found(
        &case,
        api.delete(&ghost, 0).await,
        &ghost,
        "delete of a missing skill",
    );
    let page = api.list(0, "").await.expect("list skills");
    assert!(
        items_of(&case, &page).is_empty(),
        "{k}: no skills yet: {page}"
    );
    assert_eq!(
        page["nextPageToken"].as_str().unwrap_or_default(),
        "",
        "{k}: an empty list has no next page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_read_requests_are_rejected() {
    let case = case("Skill");
    let server = TestServer::start().await;
    let fixture = Fixture::empty();
    let api = Api::new(&server, &case, &fixture);
    invalid_reads_are_refused(&api, "x").await;
}

/// An archive without SKILL.md is refused on its artifact field, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_push_is_refused() {
    let case = case("Skill");
    let server = TestServer::start().await;
    let result = server
        .call_json(
            &case.command("push"),
            r#"{"name":"my-skill","artifact":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}"#,
        )
        .await;
    let status = expect_code(result, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["artifact".to_string()]);
    assert!(
        status.message().contains("SKILL.md"),
        "{}",
        status.message()
    );
    assert_eq!(
        server.rows_of_kind("Skill"),
        0,
        "a refused push stores no skill"
    );
}
