//! The conformance suite: one set of behaviours, written once, run against every transport —
//! the server inside this process and a real server over TCP, on SQLite and on PostgreSQL. A
//! new transport or backend adds one constructor below and must pass everything unchanged.

use std::path::PathBuf;

use serde_json::{Value, json};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_client::{
    BackendConfig, BackendType, Client, ClientConfig, ClientError, LocalConfig, LocalTransport,
    Outcome,
};
use tokio_stream::StreamExt;

/// What keeps a backend alive for one test, and how to stop it.
struct Backend {
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), stigmer_grpc::ServerError>>>,
}

impl Backend {
    async fn finish(mut self, client: Client) {
        client.close().await.expect("client closes");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

fn local(endpoint: String, transport: LocalTransport, database: Option<PathBuf>) -> ClientConfig {
    ClientConfig {
        backend: BackendConfig {
            kind: BackendType::Local,
            local: LocalConfig {
                endpoint,
                transport,
                database,
            },
            cloud: None,
        },
        ..ClientConfig::default()
    }
}

async fn in_process() -> (Client, Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let config = local(
        String::new(),
        LocalTransport::InProcess,
        Some(dir.path().join("s.db")),
    );
    let client = stigmer_client::connect(&config)
        .await
        .expect("in-process client");
    assert!(client.transport().is_in_process());
    (
        client,
        Backend {
            _dir: dir,
            stop: None,
            server: None,
        },
    )
}

async fn over_tcp() -> (Client, Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let options = stigmer_database::DatabaseOptions::sqlite(dir.path().join("s.db"));
    serve_over_tcp(dir, options, None).await
}

/// A real server over TCP on a PostgreSQL database of its own (on the cluster
/// `scripts/with-postgres.sh` started; without one the test fails).
async fn over_tcp_on_postgres() -> (Client, Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let (_, url) = stigmer_postgres::test_support::fresh_database().await;
    let options = stigmer_database::DatabaseOptions::new(url);
    serve_over_tcp(
        dir,
        options,
        Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    )
    .await
}

async fn serve_over_tcp(
    dir: tempfile::TempDir,
    options: stigmer_database::DatabaseOptions,
    master_key: Option<&str>,
) -> (Client, Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let mut server_config = stigmer_grpc::ServerConfig::new(address);
    let database = stigmer_database::open(&options).await.expect("open");
    server_config.master_key_file = database.default_key_file();
    server_config.master_key = master_key.map(str::to_string);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        stigmer_grpc::run(&server_config, database.store, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let client = stigmer_client::connect(&local(address.to_string(), LocalTransport::Daemon, None))
        .await
        .expect("remote client");
    assert!(!client.transport().is_in_process());
    (
        client,
        Backend {
            _dir: dir,
            stop: Some(stop),
            server: Some(server),
        },
    )
}

fn agent(name: &str, instructions: &str) -> Value {
    json!({
        "apiVersion": "agentic.stigmer.ai/v1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"team": "ops"}},
        "spec": {"instructions": instructions}
    })
}

fn code(err: ClientError) -> tonic::Code {
    match err {
        ClientError::Status(status) => status.code(),
        other => panic!("expected a server status, got {other}"),
    }
}

async fn serving_and_info(client: &Client) {
    assert!(client.is_serving().await);
    let info = client.info().await.expect("info");
    let backend = info["backend"].as_str().unwrap_or_default();
    assert!(["sqlite", "postgres"].contains(&backend), "{info}");
    assert!(
        !info["location"].as_str().unwrap_or_default().is_empty(),
        "{info}"
    );
}

async fn apply_get_list_delete(client: &Client) {
    let first = client
        .apply(&agent("Reviewer", "Review every change twice."))
        .await
        .expect("apply");
    assert_eq!(first.outcome, Outcome::Created);
    let again = client
        .apply(&agent("Reviewer", "Review every change twice."))
        .await
        .expect("again");
    assert_eq!(again.outcome, Outcome::Unchanged);
    let changed = client
        .apply(&agent("Reviewer", "Review every change three times."))
        .await
        .expect("change");
    assert_eq!(changed.outcome, Outcome::Updated);
    let id = changed.resource["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let by_name = client.get("agents", "Reviewer").await.expect("by name");
    let by_id = client.get("agt", &id).await.expect("by id");
    assert_eq!(by_name, by_id);
    assert_eq!(
        by_id["spec"]["instructions"],
        "Review every change three times."
    );

    let listed = client.list("Agent", "team=ops").await.expect("list");
    assert_eq!(listed, vec![by_id.clone()]);
    assert!(
        client
            .list("agent", "team=dev")
            .await
            .expect("none")
            .is_empty()
    );

    let deleted = client.delete("agent", &id).await.expect("delete");
    assert_eq!(deleted["metadata"]["id"], id);
    assert_eq!(
        code(client.get("agent", &id).await.expect_err("gone")),
        tonic::Code::NotFound
    );
}

async fn errors_keep_their_codes(client: &Client) {
    let invalid = client
        .apply(&agent("Short", "short"))
        .await
        .expect_err("invalid");
    let message = invalid.to_string();
    assert!(message.contains("spec.instructions"), "{message}");
    assert_eq!(code(invalid), tonic::Code::InvalidArgument);
    assert_eq!(
        code(client.get("agent", "nobody").await.expect_err("missing")),
        tonic::Code::NotFound
    );
    assert!(matches!(client.kind("gadgets"), Err(ClientError::Usage(_))));
    let not_a_manifest = client
        .apply(&json!({"metadata": {}}))
        .await
        .expect_err("no kind");
    assert!(
        not_a_manifest.to_string().contains("kind"),
        "{not_a_manifest}"
    );
}

async fn generated_clients_share_the_transport(client: &Client) {
    let created = client
        .apply(&agent("Typed", "Talk through generated code."))
        .await
        .expect("apply");
    let id = created.resource["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut typed = AgentQueryControllerClient::new(client.transport());
    let agent = typed
        .get(AgentId {
            value: id.clone(),
            ..Default::default()
        })
        .await
        .expect("typed get")
        .into_inner();
    assert_eq!(agent.metadata.expect("metadata").id, id);
}

async fn watch_follows_changes(client: &Client) {
    let first = client
        .apply(&agent("Watched", "Be watched closely."))
        .await
        .expect("apply");
    let since = first.resource["metadata"]["revision"]
        .as_str()
        .expect("revision")
        .parse::<i64>()
        .expect("number");
    let mut events = client.watch(Some("agents"), since).await.expect("watch");
    client
        .apply(&agent("Watched", "Be watched even more closely."))
        .await
        .expect("update");
    let event = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
        .await
        .expect("in time")
        .expect("an event")
        .expect("ok");
    assert_eq!(event["type"], "EVENT_TYPE_UPDATED");
    assert_eq!(
        event["resource"]["spec"]["instructions"],
        "Be watched even more closely."
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_process_transport {
            #[tokio::test]
            async fn runs_on_sqlite() {
                super::backend_is("sqlite", super::in_process().await).await;
            }
            $(
                #[tokio::test]
                async fn $case() {
                    let (client, backend) = super::in_process().await;
                    super::$case(&client).await;
                    backend.finish(client).await;
                }
            )*
        }
        mod tcp_transport {
            #[tokio::test]
            async fn runs_on_sqlite() {
                super::backend_is("sqlite", super::over_tcp().await).await;
            }
            $(
                #[tokio::test]
                async fn $case() {
                    let (client, backend) = super::over_tcp().await;
                    super::$case(&client).await;
                    backend.finish(client).await;
                }
            )*
        }
        mod tcp_transport_on_postgres {
            #[tokio::test]
            async fn runs_on_postgres() {
                super::backend_is("postgres", super::over_tcp_on_postgres().await).await;
            }
            $(
                #[tokio::test]
                async fn $case() {
                    let (client, backend) = super::over_tcp_on_postgres().await;
                    super::$case(&client).await;
                    backend.finish(client).await;
                }
            )*
        }
    };
}

/// The suite runs on the backend it claims to.
async fn backend_is(expected: &str, (client, backend): (Client, Backend)) {
    let info = client.info().await.expect("info");
    assert_eq!(info["backend"], expected, "{info}");
    backend.finish(client).await;
}

conformance!(
    serving_and_info,
    apply_get_list_delete,
    errors_keep_their_codes,
    generated_clients_share_the_transport,
    watch_follows_changes,
    export_import_round_trips,
);

async fn export_import_round_trips(client: &Client) {
    client
        .apply(&agent("Exported", "Survive a round trip intact."))
        .await
        .expect("agent");
    client
        .apply(&json!({
            "kind": "Environment",
            "metadata": {"name": "prod"},
            "spec": {"data": {"TOKEN": {"value": "t0ps3cret", "isSecret": true}}}
        }))
        .await
        .expect("environment");
    let first = client.export(&[]).await.expect("export").resources;
    assert_eq!(
        first.len(),
        3,
        "agent, its default instance, environment: {first:#?}"
    );
    assert!(
        first
            .iter()
            .all(|r| r["metadata"].get("revision").is_none())
    );
    let sealed = first
        .iter()
        .find(|r| r["kind"] == "Environment")
        .and_then(|r| r["spec"]["data"]["TOKEN"]["value"].as_str())
        .expect("token");
    assert!(
        sealed.starts_with("stigmer-sealed:v1:"),
        "secrets stay sealed: {sealed}"
    );

    let again = client.import(&first).await.expect("import onto itself");
    assert_eq!(again.unchanged, 3, "{again:?}");
    assert_eq!((again.created, again.updated), (0, 0));
    let agents = client
        .export(&["agents".to_string()])
        .await
        .expect("agents only")
        .resources;
    assert_eq!(agents.len(), 1);
}
