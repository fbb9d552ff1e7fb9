//! What SIGTERM does to calls: one in flight finishes and is durable, later ones are
//! UNAVAILABLE, and open watches end at once with UNAVAILABLE and the revision to resume from
//! instead of holding the shutdown up for its grace period.

mod common;

use std::time::Duration;

use common::{TestServer, agent, expect_code};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentId};
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{EventType, InfoRequest, WatchEvent, WatchRequest};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const DEADLINE: Duration = Duration::from_secs(60);
/// Far longer than any test waits: a shutdown that ends is one that did not wait for it.
const GRACE_SECS: u64 = 3600;

fn id_of(agent: &Agent) -> String {
    agent.metadata.as_ref().expect("metadata").id.clone()
}

/// Polls `probe` every few milliseconds until it yields a value; fails after [`DEADLINE`].
async fn poll<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server has begun shutting down: health says NOT_SERVING, or it no longer
/// answers at all.
async fn shutting_down(channel: &Channel) {
    poll("the server began shutting down", || {
        let mut health = HealthClient::new(channel.clone());
        async move {
            match health.check(HealthCheckRequest::default()).await {
                Ok(response) => {
                    (response.into_inner().status() == ServingStatus::NotServing).then_some(())
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    Some(())
                }
            }
        }
    })
    .await
}

/// Holds SQLite's write lock from another connection, as a sqlite3 session would, so that the
/// server's write waits inside its busy timeout: in flight, for as long as the test wants.
/// Fails when the server does not wait for calls in flight (no grace period): "unexpected
/// status: Status { code: Cancelled, ... connection closed }"; and when calls arriving during
/// the drain are served instead of refused: "expected Unavailable, got success".
#[tokio::test]
async fn a_call_in_flight_at_sigterm_finishes_and_is_durable_and_later_calls_are_unavailable() {
    let mut server = TestServer::start_with(|settings| {
        settings.database.sqlite.busy_timeout_ms = DEADLINE.as_millis() as u64;
        settings.server.shutdown_grace_secs = GRACE_SECS;
    })
    .await;
    let db = server.db.clone();
    let feed = ResourceServiceClient::new(server.channel.clone());
    // Answered only once start-up, which writes, is over.
    feed.clone().info(InfoRequest {}).await.expect("info");
    let mut outsider = rusqlite::Connection::open(&db).expect("open");
    let lock = outsider
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("take the write lock");
    let command = AgentCommandControllerClient::new(server.channel.clone());
    let in_flight = tokio::spawn({
        let mut command = command.clone();
        async move { command.create(agent("In flight")).await }
    });
    poll("the write reached the writer", || {
        let mut feed = feed.clone();
        async move {
            let info = feed.info(InfoRequest {}).await.expect("info").into_inner();
            (info.writes_pending > 0).then_some(())
        }
    })
    .await;

    server.begin_stop();
    shutting_down(&server.channel).await;
    // Answered by the server itself, on the connection it keeps open while it drains.
    let refused = [
        expect_code(feed.clone().info(InfoRequest {}).await, Code::Unavailable),
        expect_code(
            command.clone().create(agent("Too late")).await,
            Code::Unavailable,
        ),
    ];
    for status in refused {
        assert!(
            status.message().contains("shutting down") && status.get_details_retry_info().is_some(),
            "{status:?}"
        );
    }
    assert!(!in_flight.is_finished(), "the held call is still in flight");

    drop(lock);
    let created = in_flight
        .await
        .expect("task")
        .expect("the call in flight succeeds")
        .into_inner();
    let dir = tokio::time::timeout(DEADLINE, server.stop())
        .await
        .expect("stopped once the call in flight was answered");

    let again = TestServer::start_at(&db).await;
    let mut query = AgentQueryControllerClient::new(again.channel.clone());
    let stored = query
        .get(AgentId {
            value: id_of(&created),
            ..Default::default()
        })
        .await
        .expect("the answered write is there after a restart")
        .into_inner();
    assert_eq!(stored, created);
    let agents: i64 = again
        .sqlite()
        .query_row(
            "SELECT count(*) FROM resources WHERE kind = 'Agent'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(agents, 1, "the refused call stored nothing");
    again.stop().await;
    drop(dir);
}

async fn next_event(events: &mut Streaming<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(DEADLINE, events.message())
        .await
        .expect("an event in time")
        .expect("an event")
        .expect("the watch goes on")
}

/// Fails when watches are not ended at shutdown (`stop: None`): the watch holds the shutdown
/// up for its whole grace period, "the watch ended in time: Elapsed(())".
#[tokio::test]
async fn sigterm_ends_open_watches_with_unavailable_and_the_revision_to_resume_from() {
    let mut server = TestServer::start_with(|settings| {
        settings.server.shutdown_grace_secs = GRACE_SECS;
    })
    .await;
    let db = server.db.clone();
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let first = command
        .create(agent("First"))
        .await
        .expect("create")
        .into_inner();
    let mut feed = ResourceServiceClient::new(server.channel.clone());
    let watch = || WatchRequest {
        kind: "Agent".into(),
        ..Default::default()
    };
    let mut events = feed.watch(watch()).await.expect("watch").into_inner();
    let snapshot = next_event(&mut events).await;
    assert_eq!(snapshot.r#type(), EventType::Snapshot);
    assert_eq!(snapshot.id, id_of(&first));
    let second = command
        .create(agent("Second"))
        .await
        .expect("create")
        .into_inner();
    let live = next_event(&mut events).await;
    assert_eq!(
        (live.r#type(), live.id.as_str()),
        (EventType::Created, id_of(&second).as_str())
    );

    server.begin_stop();
    let ended = tokio::time::timeout(DEADLINE, events.message())
        .await
        .expect("the watch ended in time")
        .expect_err("the watch ends with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let resume = format!("watch again from revision {}", live.revision);
    assert!(
        ended.message().contains("shutting down") && ended.message().contains(&resume),
        "{}",
        ended.message()
    );
    let dir = tokio::time::timeout(DEADLINE, server.stop())
        .await
        .expect("stopped without waiting for the watch");

    // The revision it names loses nothing: a watch from there sees the next change first.
    let again = TestServer::start_at(&db).await;
    let third = AgentCommandControllerClient::new(again.channel.clone())
        .create(agent("Third"))
        .await
        .expect("create")
        .into_inner();
    let mut events = ResourceServiceClient::new(again.channel.clone())
        .watch(WatchRequest {
            since_revision: live.revision,
            ..watch()
        })
        .await
        .expect("watch")
        .into_inner();
    let next = next_event(&mut events).await;
    assert_eq!(
        (next.r#type(), next.id.as_str()),
        (EventType::Created, id_of(&third).as_str())
    );
    drop(events);
    again.stop().await;
    drop(dir);
}

/// A subscription to a running execution never ends by itself; at shutdown it ends at once with
/// UNAVAILABLE, like a watch, instead of holding the shutdown for its grace period.
#[tokio::test]
async fn sigterm_ends_open_subscriptions_with_unavailable() {
    use stigmer_api::ai::stigmer::agentic::agentexecution::v1::agent_execution_command_controller_client::AgentExecutionCommandControllerClient;
    use stigmer_api::ai::stigmer::agentic::agentexecution::v1::agent_execution_query_controller_client::AgentExecutionQueryControllerClient;
    use stigmer_api::ai::stigmer::agentic::agentexecution::v1::{
        AgentExecution, AgentExecutionId, AgentExecutionSpec,
    };
    let mut server = TestServer::start_with(|settings| {
        settings.server.shutdown_grace_secs = GRACE_SECS;
    })
    .await;
    let runner = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("Runner"))
        .await
        .expect("agent")
        .into_inner();
    let execution = AgentExecutionCommandControllerClient::new(server.channel.clone())
        .create(AgentExecution {
            spec: Some(AgentExecutionSpec {
                agent_id: id_of(&runner),
                message: "Summarise the open incidents.".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("execution")
        .into_inner();
    let id = execution.metadata.as_ref().expect("metadata").id.clone();
    let mut stream = AgentExecutionQueryControllerClient::new(server.channel.clone())
        .subscribe(AgentExecutionId { value: id })
        .await
        .expect("subscribe")
        .into_inner();
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the current state in time")
        .expect("ok")
        .expect("the execution as it is");

    server.begin_stop();
    let ended = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the subscription ended in time")
        .expect_err("the subscription ends with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("shutting down"),
        "{}",
        ended.message()
    );
    tokio::time::timeout(DEADLINE, server.stop())
        .await
        .expect("stopped without waiting for the subscription");
}
