//! Versions, the change feed and listing under concurrent writes, through real gRPC clients:
//! replay and live watch lose nothing and repeat nothing, stale writers are told, compaction
//! is reported as OUT_OF_RANGE, slow watchers are ended, and pages stay exact while rows move.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{TestServer, expect_code};
use prost::Message;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_command_controller_client::EnvironmentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_query_controller_client::EnvironmentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::{
    Environment, EnvironmentSpec, ListEnvironmentsRequest,
};
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{
    EventType, GetAtRevisionRequest, InfoRequest, WatchEvent, WatchRequest,
};
use stigmer_api::ai::stigmer::commons::apiresource::{ApiResourceDeleteInput, ApiResourceMetadata};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(60);

// Environments have no parents and no children, so each write is exactly one change.
type Commands = EnvironmentCommandControllerClient<Channel>;
type Queries = EnvironmentQueryControllerClient<Channel>;
type Agent = Environment;
const KIND: &str = "Environment";

fn agent(name: &str) -> Environment {
    Environment {
        metadata: Some(ApiResourceMetadata {
            name: name.to_string(),
            ..Default::default()
        }),
        spec: Some(EnvironmentSpec {
            description: "A place to run things.".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn delete_input(id: String) -> ApiResourceDeleteInput {
    ApiResourceDeleteInput {
        resource_id: id,
        ..Default::default()
    }
}

fn id_of(agent: &Agent) -> String {
    agent.metadata.as_ref().expect("metadata").id.clone()
}

fn revision_of(agent: &Agent) -> i64 {
    agent.metadata.as_ref().expect("metadata").revision
}

fn unpack(event: &WatchEvent) -> Agent {
    let any = event.resource.as_ref().expect("resource");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/ai.stigmer.agentic.environment.v1.Environment"
    );
    Agent::decode(any.value.as_slice()).expect("an Environment")
}

async fn watch(server: &TestServer, request: WatchRequest) -> Streaming<WatchEvent> {
    ResourceServiceClient::new(server.channel.clone())
        .watch(request)
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut Streaming<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("an event in time")
        .expect("a healthy stream")
        .expect("the stream goes on")
}

/// Writes one throwaway resource so the log has a revision to start after (a watch from
/// revision 0 means "snapshot first", not "from the beginning").
async fn warm_up(server: &TestServer) -> i64 {
    let created = Commands::new(server.channel.clone())
        .create(agent("warm-up"))
        .await
        .expect("warm-up write")
        .into_inner();
    revision_of(&created)
}

async fn current_revision(server: &TestServer) -> i64 {
    ResourceServiceClient::new(server.channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .revision
}

/// One committed write as its caller saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    revision: i64,
    event: EventType,
    id: String,
    resource: Agent,
}

/// `count` mixed writes (creates, updates, deletes) from `writers` concurrent clients.
async fn mixed_writes(server: &TestServer, writers: usize, count: usize) -> Vec<Seen> {
    let per_writer = count / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut command = Commands::new(server.channel.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut live: Vec<Agent> = Vec::new();
                for n in 0..per_writer {
                    let step = n % 5;
                    let record = if step < 2 || live.is_empty() {
                        let created = command
                            .create(agent(&format!("w{w} n{n}")))
                            .await
                            .expect("create")
                            .into_inner();
                        live.push(created.clone());
                        (EventType::Created, created)
                    } else if step < 4 {
                        let mut changed = live.pop().expect("live agent");
                        changed.spec.as_mut().expect("spec").description = format!("edit {n}");
                        let updated = command.update(changed).await.expect("update").into_inner();
                        live.push(updated.clone());
                        (EventType::Updated, updated)
                    } else {
                        let gone = live.remove(0);
                        let deleted = command
                            .delete(delete_input(id_of(&gone)))
                            .await
                            .expect("delete")
                            .into_inner();
                        (EventType::Deleted, deleted)
                    };
                    seen.push(Seen {
                        revision: match record.0 {
                            EventType::Deleted => 0,
                            _ => revision_of(&record.1),
                        },
                        event: record.0,
                        id: id_of(&record.1),
                        resource: record.1,
                    });
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all
}

#[tokio::test]
async fn a_watch_from_a_revision_replays_a_thousand_mixed_writes_exactly_then_goes_live() {
    let server = TestServer::start().await;
    let start = warm_up(&server).await;
    let writes = mixed_writes(&server, 8, 1000).await;
    let end = current_revision(&server).await;
    assert_eq!(end - start, 1000, "every write took exactly one revision");

    let mut stream = watch(
        &server,
        WatchRequest {
            since_revision: start,
            ..Default::default()
        },
    )
    .await;
    let mut replayed = Vec::new();
    for _ in 0..1000 {
        replayed.push(next(&mut stream).await);
    }
    let revisions: Vec<i64> = replayed.iter().map(|e| e.revision).collect();
    assert_eq!(
        revisions,
        ((start + 1)..=end).collect::<Vec<_>>(),
        "in order, none missing"
    );

    // Each writer's view of its own writes matches the log, write for write.
    let by_revision: HashMap<i64, &WatchEvent> = replayed.iter().map(|e| (e.revision, e)).collect();
    for seen in &writes {
        match seen.event {
            EventType::Deleted => {
                let event = replayed
                    .iter()
                    .find(|e| e.id == seen.id && e.r#type() == EventType::Deleted)
                    .expect("the delete is in the log");
                assert_eq!(
                    unpack(event),
                    seen.resource,
                    "a delete carries the resource before it"
                );
            }
            _ => {
                let event = by_revision[&seen.revision];
                assert_eq!(event.r#type(), seen.event);
                assert_eq!(event.kind, KIND);
                assert_eq!(event.id, seen.id);
                assert_eq!(unpack(event), seen.resource);
            }
        }
    }

    // Then live: the next write arrives on the same stream.
    let mut command = Commands::new(server.channel.clone());
    let live = command
        .create(agent("after the replay"))
        .await
        .expect("create")
        .into_inner();
    let event = next(&mut stream).await;
    assert_eq!(
        (event.revision, event.r#type()),
        (revision_of(&live), EventType::Created)
    );
    assert_eq!(unpack(&event), live);

    // A watch from 0 starts with a snapshot that is exactly the current state.
    let mut stream = watch(&server, WatchRequest::default()).await;
    let mut query = Queries::new(server.channel.clone());
    let listed = query
        .list(ListEnvironmentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let now = listed.revision;
    let mut snapshot = Vec::new();
    for _ in 0..listed.items.len() {
        let event = next(&mut stream).await;
        assert_eq!(event.r#type(), EventType::Snapshot);
        assert_eq!(
            event.revision, now,
            "the whole snapshot is read at one revision"
        );
        snapshot.push(unpack(&event));
    }
    assert_eq!(snapshot, listed.items);
    let after = command
        .create(agent("after the snapshot"))
        .await
        .expect("create")
        .into_inner();
    let event = next(&mut stream).await;
    assert_eq!(
        (event.r#type(), event.id.as_str()),
        (EventType::Created, id_of(&after).as_str())
    );
}

#[tokio::test]
async fn watches_started_while_writes_run_see_each_write_exactly_once_in_order() {
    let server = TestServer::start().await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut command = Commands::new(server.channel.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..150 {
                    let created = command
                        .create(agent(&format!("busy {w} {n}")))
                        .await
                        .expect("create")
                        .into_inner();
                    ids.push((id_of(&created), revision_of(&created)));
                }
                ids
            })
        })
        .collect();
    // Start watchers while the writers are busy: one from a snapshot, one from revision 0 of
    // the log (everything), one from wherever the log is now.
    let mut snapshot_watch = watch(&server, WatchRequest::default()).await;
    // since_revision 0 asks for a snapshot, so the replaying watcher needs a write to start
    // after: wait for the writers' first commit.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mid = loop {
        let revision = current_revision(&server).await;
        if revision > 0 {
            break revision;
        }
        assert!(tokio::time::Instant::now() < deadline, "no write committed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut replay_watch = watch(
        &server,
        WatchRequest {
            since_revision: mid,
            kind: KIND.into(),
            ..Default::default()
        },
    )
    .await;
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    let all_ids: HashSet<String> = written.iter().map(|(id, _)| id.clone()).collect();

    // The snapshot watcher: snapshot ids plus created ids are every id, each once.
    let mut seen = Vec::new();
    let mut snapshot_revision = None;
    let mut last_change = 0;
    loop {
        let event = next(&mut snapshot_watch).await;
        match event.r#type() {
            EventType::Snapshot => {
                assert!(snapshot_revision.is_none_or(|r| r == event.revision));
                snapshot_revision = Some(event.revision);
            }
            EventType::Created => {
                assert!(
                    event.revision > snapshot_revision.unwrap_or(0),
                    "changes follow the snapshot"
                );
                assert!(
                    event.revision > last_change,
                    "strictly increasing revisions"
                );
                last_change = event.revision;
            }
            other => panic!("unexpected {other:?}"),
        }
        seen.push(event.id.clone());
        // Every id once: a repeat would end this early and fail the checks below.
        if seen.len() == all_ids.len() {
            break;
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no id delivered twice");
    assert_eq!(unique, all_ids);

    // The replaying watcher: exactly the writes after `mid`, in order.
    let expected: Vec<i64> = {
        let mut r: Vec<i64> = written
            .iter()
            .map(|(_, r)| *r)
            .filter(|r| *r > mid)
            .collect();
        r.sort_unstable();
        r
    };
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(next(&mut replay_watch).await.revision);
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn pages_stay_exact_while_rows_are_inserted_and_deleted() {
    let server = TestServer::start().await;
    let mut command = Commands::new(server.channel.clone());
    let mut stable = Vec::new();
    let mut doomed = Vec::new();
    for n in 0..300 {
        let created = command
            .create(agent(&format!("row {n}")))
            .await
            .expect("create")
            .into_inner();
        if n % 3 == 0 {
            doomed.push(id_of(&created));
        } else {
            stable.push(id_of(&created));
        }
    }
    let churn = {
        let mut command = Commands::new(server.channel.clone());
        let doomed = doomed.clone();
        tokio::spawn(async move {
            for (n, id) in doomed.into_iter().enumerate() {
                command.delete(delete_input(id)).await.expect("delete");
                command
                    .create(agent(&format!("newcomer {n}")))
                    .await
                    .expect("create");
            }
        })
    };
    let mut query = Queries::new(server.channel.clone());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = query
            .list(ListEnvironmentsRequest {
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        for item in &page.items {
            *seen.entry(id_of(item)).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    churn.await.expect("churn");
    assert!(pages > 1);
    assert!(
        seen.values().all(|count| *count == 1),
        "nothing listed twice"
    );
    for id in &stable {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} existed throughout and must be listed once"
        );
    }
}

#[tokio::test]
async fn past_revisions_are_readable_until_compacted() {
    let server = TestServer::start_with(|settings| {
        settings.server.retain_revisions = 5;
        settings.server.retain_secs = 0;
        settings.server.compact_every_secs = 1;
    })
    .await;
    let mut command = Commands::new(server.channel.clone());
    let mut feed = ResourceServiceClient::new(server.channel.clone());
    let v1 = command
        .create(agent("Versioned"))
        .await
        .expect("create")
        .into_inner();
    let mut change = v1.clone();
    change.spec.as_mut().expect("spec").description = "second".into();
    let v2 = command.update(change).await.expect("update").into_inner();
    let deleted = command
        .delete(delete_input(id_of(&v1)))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted, v2);
    let at = |revision: i64| GetAtRevisionRequest {
        kind: KIND.into(),
        id: id_of(&v1),
        revision,
    };
    let first = feed
        .get_at_revision(at(revision_of(&v1)))
        .await
        .expect("v1")
        .into_inner();
    assert_eq!(unpack(&first), v1);
    let second = feed
        .get_at_revision(at(revision_of(&v2)))
        .await
        .expect("v2")
        .into_inner();
    assert_eq!(unpack(&second), v2);
    let now = current_revision(&server).await;
    expect_code(feed.get_at_revision(at(now)).await, Code::NotFound);
    expect_code(feed.get_at_revision(at(now + 100)).await, Code::OutOfRange);
    let status = expect_code(
        feed.get_at_revision(GetAtRevisionRequest {
            kind: "Gadget".into(),
            id: "x".into(),
            revision: 1,
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(common::violated_fields(&status), vec!["kind".to_string()]);

    // Push the log past its retention and wait for the background compaction.
    for n in 0..20 {
        command
            .create(agent(&format!("filler {n}")))
            .await
            .expect("create");
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let compacted = loop {
        let info = feed.info(InfoRequest {}).await.expect("info").into_inner();
        if info.compacted_revision >= revision_of(&v2) {
            assert!(
                info.revision - info.compacted_revision >= 5,
                "keeps the last 5 revisions"
            );
            break info.compacted_revision;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "compaction did not run: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = expect_code(
        feed.get_at_revision(at(revision_of(&v1))).await,
        Code::OutOfRange,
    );
    assert!(
        status.message().contains("retained"),
        "{}",
        status.message()
    );

    let mut stream = watch(
        &server,
        WatchRequest {
            since_revision: 1,
            ..Default::default()
        },
    )
    .await;
    let status = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("in time")
        .expect_err("a compacted start is refused");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("list again"),
        "{}",
        status.message()
    );
    // Watching from the compaction point itself still works.
    let mut stream = watch(
        &server,
        WatchRequest {
            since_revision: compacted,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(next(&mut stream).await.revision, compacted + 1);
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_ended_and_can_resume_without_losing_anything() {
    let server = TestServer::start_with(|settings| settings.database.watch_buffer = 8).await;
    let start = warm_up(&server).await;
    // This watcher reads nothing while the writers run, on a connection of its own with
    // HTTP/2's smallest flow-control windows, so the server soon cannot send it more.
    let narrow = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let mut slow = ResourceServiceClient::new(narrow)
        .watch(WatchRequest {
            since_revision: start,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut command = Commands::new(server.channel.clone());
    let mut big = agent("big");
    big.spec.as_mut().expect("spec").description = "x".repeat(4096);
    // A writer held up by the watcher would wait forever: the deadline turns that into a
    // failure.
    tokio::time::timeout(DEADLINE, async {
        for n in 0..600 {
            let mut next_agent = big.clone();
            next_agent.metadata.as_mut().expect("metadata").name = format!("big {n}");
            command.create(next_agent).await.expect("create");
        }
    })
    .await
    .expect("writers are never held up by a slow watcher");
    let end = current_revision(&server).await;
    // The slow watcher gets what was buffered, then RESOURCE_EXHAUSTED naming where to resume.
    let mut received = Vec::new();
    let status = loop {
        match tokio::time::timeout(DEADLINE, slow.message())
            .await
            .expect("in time")
        {
            Ok(Some(event)) => received.push(event.revision),
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let resume_from = received.last().copied().unwrap_or(start);
    assert!(
        status
            .message()
            .contains(&format!("revision {resume_from}")),
        "{}",
        status.message()
    );
    assert!(
        received.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap before the end"
    );
    let mut resumed = watch(
        &server,
        WatchRequest {
            since_revision: resume_from,
            ..Default::default()
        },
    )
    .await;
    for expected in (resume_from + 1)..=end {
        assert_eq!(next(&mut resumed).await.revision, expected);
    }
}

#[tokio::test]
async fn lists_filter_by_label_selector_and_name_prefix_and_report_their_revision() {
    let server = TestServer::start().await;
    let mut command = Commands::new(server.channel.clone());
    for (name, labels) in [
        ("web frontend", vec![("tier", "web"), ("env", "prod")]),
        (
            "web canary",
            vec![("tier", "web"), ("env", "staging"), ("canary", "")],
        ),
        ("db primary", vec![("tier", "db"), ("env", "prod")]),
        ("batch", vec![]),
    ] {
        let mut a = agent(name);
        a.metadata.as_mut().expect("metadata").labels = labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        command.create(a).await.expect("create");
    }
    let mut query = Queries::new(server.channel.clone());
    let mut names = async |selector: &str, prefix: &str| -> Vec<String> {
        let page = query
            .list(ListEnvironmentsRequest {
                label_selector: selector.into(),
                name_prefix: prefix.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        page.items
            .into_iter()
            .map(|a| a.metadata.expect("metadata").name)
            .collect()
    };
    assert_eq!(names("tier=web", "").await, ["web frontend", "web canary"]);
    assert_eq!(names("tier!=web", "").await, ["db primary", "batch"]);
    assert_eq!(
        names("env in (prod, staging),tier=web", "").await,
        ["web frontend", "web canary"]
    );
    assert_eq!(names("env notin (prod)", "").await, ["web canary", "batch"]);
    assert_eq!(names("canary", "").await, ["web canary"]);
    assert_eq!(names("!tier", "").await, ["batch"]);
    assert_eq!(names("", "web").await, ["web frontend", "web canary"]);
    assert_eq!(names("env=prod", "db").await, ["db primary"]);
    assert!(
        names("", "Web").await.is_empty(),
        "the prefix is case-sensitive"
    );

    let status = expect_code(
        query
            .list(ListEnvironmentsRequest {
                label_selector: "tier in web".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        common::violated_fields(&status),
        vec!["labelSelector".to_string()]
    );

    let page = query
        .list(ListEnvironmentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.revision, current_revision(&server).await);
}

#[tokio::test]
async fn watches_filter_by_kind_org_and_id_and_refuse_unknown_kinds() {
    let server = TestServer::start().await;
    let start = warm_up(&server).await;
    let mut command = Commands::new(server.channel.clone());
    let watched = command
        .create(agent("watched"))
        .await
        .expect("create")
        .into_inner();
    command.create(agent("other")).await.expect("create");
    let mut elsewhere = tonic::Request::new(agent("elsewhere"));
    elsewhere
        .metadata_mut()
        .insert("x-stigmer-org", "team-x".parse().expect("header"));
    command.create(elsewhere).await.expect("create in team-x");
    let mut renamed = watched.clone();
    renamed.spec.as_mut().expect("spec").description = "changed".into();
    let updated = command.update(renamed).await.expect("update").into_inner();

    let mut by_id = watch(
        &server,
        WatchRequest {
            since_revision: start,
            kind: KIND.into(),
            id: id_of(&watched),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(next(&mut by_id).await.revision, revision_of(&watched));
    assert_eq!(next(&mut by_id).await.revision, revision_of(&updated));

    // Another org is watched from that org (the header); the body may repeat it.
    let mut in_team = tonic::Request::new(WatchRequest {
        since_revision: start,
        org: "team-x".into(),
        ..Default::default()
    });
    in_team
        .metadata_mut()
        .insert("x-stigmer-org", "team-x".parse().expect("header"));
    let mut team = ResourceServiceClient::new(server.channel.clone())
        .watch(in_team)
        .await
        .expect("watch team-x")
        .into_inner();
    let event = next(&mut team).await;
    assert_eq!(unpack(&event).metadata.expect("metadata").name, "elsewhere");

    let mut tools = watch(
        &server,
        WatchRequest {
            since_revision: start,
            kind: "McpServer".into(),
            ..Default::default()
        },
    )
    .await;
    let tool = common::TestServer::call_json(
        &server,
        "/ai.stigmer.agentic.mcpserver.v1.McpServerCommandController/create",
        r#"{"metadata":{"name":"files"},"spec":{"stdio":{"command":"npx"}}}"#,
    )
    .await
    .expect("mcp server");
    let event = next(&mut tools).await;
    assert_eq!(event.kind, "McpServer");
    assert_eq!(event.id, common::to_json(&tool)["metadata"]["id"]);

    let mut refused = ResourceServiceClient::new(server.channel.clone());
    let status = match refused
        .watch(WatchRequest {
            kind: "Gadget".into(),
            ..Default::default()
        })
        .await
    {
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("an unknown kind is refused"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(common::violated_fields(&status), vec!["kind".to_string()]);
}

#[tokio::test]
async fn info_reports_the_revision_backend_and_counts() {
    let server = TestServer::start().await;
    let mut command = Commands::new(server.channel.clone());
    let before = ResourceServiceClient::new(server.channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    for n in 0..3 {
        command
            .create(agent(&format!("counted {n}")))
            .await
            .expect("create");
    }
    let info = ResourceServiceClient::new(server.channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    // One after the other, each create is a write of its own transaction.
    assert_eq!(info.writes_committed - before.writes_committed, 3);
    assert_eq!(
        info.transactions_committed - before.transactions_committed,
        3
    );
    assert_eq!(info.backend, "sqlite");
    assert_eq!(info.revision, 3);
    assert_eq!(info.counts.get(KIND), Some(&3));
    assert_eq!(info.compacted_revision, 0);
    assert!(info.database.starts_with("SQLite 3."), "{}", info.database);
    assert!(
        !info.database.contains('/'),
        "no file path: {}",
        info.database
    );
    assert!(!info.version.is_empty());
}

#[tokio::test]
async fn a_watch_with_an_until_revision_replays_its_window_and_ends() {
    let server = TestServer::start().await;
    let start = warm_up(&server).await;
    mixed_writes(&server, 2, 20).await;
    let end = current_revision(&server).await;
    let window = (start + 5, start + 12);
    let mut stream = watch(
        &server,
        WatchRequest {
            since_revision: window.0,
            until_revision: window.1,
            ..Default::default()
        },
    )
    .await;
    let mut revisions = Vec::new();
    while let Some(event) = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the window in time")
        .expect("a stream that ends cleanly")
    {
        revisions.push(event.revision);
    }
    assert_eq!(revisions, ((window.0 + 1)..=window.1).collect::<Vec<_>>());
    assert!(end > window.1, "later writes were left out");

    let refused = ResourceServiceClient::new(server.channel.clone())
        .watch(WatchRequest {
            since_revision: window.1,
            until_revision: window.0,
            ..Default::default()
        })
        .await;
    let status = expect_code(refused, Code::InvalidArgument);
    assert!(
        status.message().contains("untilRevision"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_agent_and_its_default_instance_arrive_as_one_transaction_with_its_commit_time() {
    use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
    let server = TestServer::start().await;
    let start = warm_up(&server).await;
    let mut live = watch(
        &server,
        WatchRequest {
            since_revision: start,
            ..Default::default()
        },
    )
    .await;
    AgentCommandControllerClient::new(server.channel.clone())
        .create(common::agent("Transactional"))
        .await
        .expect("create an agent");
    let (first, second) = (next(&mut live).await, next(&mut live).await);
    let kinds = [first.kind.as_str(), second.kind.as_str()];
    assert!(
        kinds.contains(&"Agent") && kinds.contains(&"AgentInstance"),
        "{kinds:?}"
    );
    assert_eq!(second.revision, first.revision + 1);
    assert_eq!(
        (first.transaction, second.transaction),
        (first.revision, first.revision)
    );
    let committed = first.commit_time.expect("a commit time");
    assert_eq!(second.commit_time, Some(committed));
    assert!(committed.seconds > 1_700_000_000, "{committed:?}");

    // A replay from the log says the same.
    let mut replayed = watch(
        &server,
        WatchRequest {
            since_revision: start,
            until_revision: second.revision,
            ..Default::default()
        },
    )
    .await;
    let again = (next(&mut replayed).await, next(&mut replayed).await);
    assert_eq!(again, (first, second));
}
