//! The per-kind views sqlite3 users read (migration V8): one for every kind, named by its
//! plural snake_case, showing what the API stored.

mod common;

use common::{TestServer, agent};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;

/// "AgentInstance" → "agent_instances", "IamPolicy" → "iam_policies".
fn view_name(kind: &str) -> String {
    let mut snake = String::new();
    for (i, c) in kind.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    match snake.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ => format!("{snake}s"),
    }
}

#[tokio::test]
async fn every_kind_has_a_view_with_the_shared_columns_and_its_own() {
    let server = TestServer::start().await;
    let created = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("Code Reviewer"))
        .await
        .expect("create")
        .into_inner();
    let metadata = created.metadata.expect("metadata");
    let sql = server.sqlite();
    for kind in stigmer_core::kinds::KINDS {
        let view = view_name(kind.name);
        let columns: Vec<String> = sql
            .prepare(&format!("SELECT name FROM pragma_table_info('{view}')"))
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("columns");
        for shared in [
            "id",
            "org_id",
            "name",
            "slug",
            "labels",
            "revision",
            "created_at",
            "updated_at",
        ] {
            assert!(
                columns.iter().any(|c| c == shared),
                "view {view} (kind {}) lacks {shared}: {columns:?}",
                kind.name
            );
        }
    }
    let (name, slug, org, revision, created_at, instance): (String, String, String, i64, String, String) = sql
        .query_row(
            "SELECT name, slug, org_id, revision, created_at, default_instance_id FROM agents WHERE id = ?1",
            [&metadata.id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)),
        )
        .expect("the agent in its view");
    assert_eq!(
        (name.as_str(), slug.as_str(), org.as_str()),
        ("Code Reviewer", "code-reviewer", "local")
    );
    assert_eq!(revision, metadata.revision);
    assert!(created_at.starts_with("20"), "{created_at}");
    let agent_id: String = sql
        .query_row(
            "SELECT agent_id FROM agent_instances WHERE id = ?1",
            [&instance],
            |row| row.get(0),
        )
        .expect("its default instance in agent_instances");
    assert_eq!(agent_id, metadata.id);
    server.stop().await;
}

#[test]
fn view_names_are_plural_snake_case() {
    assert_eq!(view_name("AgentInstance"), "agent_instances");
    assert_eq!(view_name("IamPolicy"), "iam_policies");
    assert_eq!(view_name("McpServer"), "mcp_servers");
    assert_eq!(view_name("ApiKey"), "api_keys");
}
