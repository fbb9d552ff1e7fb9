//! Slugs derived from names in any script (ADR 0009): letters are transliterated, and
//! resources named before that rule are still found by apply instead of duplicated.

mod common;

use common::{TestServer, agent};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;

#[tokio::test]
async fn a_name_in_any_script_keeps_its_letters_in_the_slug() {
    let server = TestServer::start().await;
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let created = command
        .create(agent("Überprüfer 🚀"))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.metadata.expect("metadata").slug, "uberprufer");
}

#[tokio::test]
async fn apply_finds_a_resource_slugged_by_the_old_rule() {
    let server = TestServer::start().await;
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    // What the old rule made of this name (non-ASCII letters dropped).
    let mut old = agent("Überprüfer 🚀");
    old.metadata.as_mut().expect("metadata").slug = "berprfer".into();
    let old = command.create(old).await.expect("create").into_inner();

    let mut changed = agent("Überprüfer 🚀");
    changed.spec.as_mut().expect("spec").description = "now with a description".into();
    let applied = command.apply(changed).await.expect("apply").into_inner();
    let meta = applied.metadata.expect("metadata");
    assert_eq!(
        meta.id,
        old.metadata.expect("metadata").id,
        "updated, not duplicated"
    );
    assert_eq!(meta.slug, "berprfer", "the stored slug stays");
    assert_eq!(
        applied.spec.expect("spec").description,
        "now with a description"
    );
    assert_eq!(server.rows_of_kind("Agent"), 1);
}
