//! `--metrics-listen`: /metrics in the Prometheus text format, scraped over HTTP as Prometheus
//! would: calls by service, method and code, latency histograms, the store's commits, revision,
//! WAL and resources per kind, open watch streams and their lag; and the flag's errors.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::binary::{BINARY, Binary};
use common::{TestServer, agent, expect_code};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{InfoRequest, WatchRequest};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(30);
const QUERY: &str = "ai.stigmer.agentic.agent.v1.AgentQueryController";
const COMMAND: &str = "ai.stigmer.agentic.agent.v1.AgentCommandController";
const FEED: &str = "ai.stigmer.backend.v1.ResourceService";

/// One HTTP/1.1 GET, as a scraper sends it: (status code, headers in lower case, body).
async fn http_get(address: SocketAddr, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    common::http1(address, &request).await
}

/// The samples of a scrape: (metric name, labels) → value.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    async fn of(address: SocketAddr) -> Self {
        let (status, head, body) = http_get(address, "/metrics").await;
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "the Prometheus text format: {head}"
        );
        Self::parse(&body)
    }

    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let value: f64 = value.parse().expect("a number");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                        (key.to_string(), value.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels, value)
            })
            .collect();
        Self(samples)
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.0.iter().filter(|(sample, sample_labels, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(key, value)| sample_labels.get(*key).map(String::as_str) == Some(value))
        });
        let (_, _, value) = found.next()?;
        assert!(
            found.next().is_none(),
            "several samples of {name} {labels:?}"
        );
        Some(*value)
    }

    fn calls(&self, service: &str, method: &str, code: &str) -> Option<f64> {
        self.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", service),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    }
}

/// Scrapes until `ready` holds, or fails with the last scrape after [`DEADLINE`]: a call is
/// counted when its response has ended on the server's side, a moment after the client has it.
async fn scrape_until(address: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let started = Instant::now();
    loop {
        let scrape = Scrape::of(address).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "/metrics never showed {what}: {:#?}",
            scrape.0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics_server() -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(|settings| {
        settings.server.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let address = server.metrics.expect("serving metrics");
    (server, address)
}

#[tokio::test]
async fn metrics_count_calls_by_code_time_them_and_read_the_store_when_scraped() {
    let (server, address) = metrics_server().await;
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let mut query = AgentQueryControllerClient::new(server.channel.clone());
    let created = command
        .create(agent("Measured"))
        .await
        .expect("create")
        .into_inner();
    let id = created.metadata.expect("metadata").id;
    query
        .get(AgentId {
            value: id.clone(),
            ..Default::default()
        })
        .await
        .expect("get an agent there");
    expect_code(
        query
            .get(AgentId {
                value: "agt-nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );

    let scrape = scrape_until(address, "the get that found nothing", |scrape| {
        scrape.calls(QUERY, "get", "NotFound") == Some(1.0)
    })
    .await;
    assert_eq!(scrape.calls(QUERY, "get", "OK"), Some(1.0));
    assert_eq!(scrape.calls(COMMAND, "create", "OK"), Some(1.0));
    assert_eq!(
        scrape.calls(QUERY, "list", "OK"),
        None,
        "no call, no series"
    );
    assert_eq!(
        scrape.value(
            "grpc_server_handled_total",
            &[("grpc_method", "get"), ("grpc_code", "OK")]
        ),
        Some(1.0)
    );
    let get = [
        ("grpc_type", "unary"),
        ("grpc_service", QUERY),
        ("grpc_method", "get"),
    ];
    assert_eq!(
        scrape.value("grpc_server_handling_seconds_count", &get),
        Some(2.0),
        "one histogram for the method, whatever the code"
    );
    let every = [get.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        scrape.value("grpc_server_handling_seconds_bucket", &every),
        Some(2.0)
    );
    let within_a_minute = [get.as_slice(), &[("le", "10")]].concat();
    assert_eq!(
        scrape.value("grpc_server_handling_seconds_bucket", &within_a_minute),
        Some(2.0)
    );
    let sum = scrape
        .value("grpc_server_handling_seconds_sum", &get)
        .expect("sum");
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    let info = ResourceServiceClient::new(server.channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        scrape.value("stigmer_store_revision", &[]),
        Some(info.revision as f64)
    );
    assert!(info.revision >= 2, "the agent and its default instance");
    assert_eq!(
        scrape.value("stigmer_resources", &[("kind", "Agent")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("stigmer_resources", &[("kind", "AgentInstance")]),
        Some(1.0),
        "the default instance"
    );
    assert_eq!(
        scrape.value("stigmer_resources", &[("kind", "Skill")]),
        Some(0.0),
        "every kind, none of this one"
    );
    let commits = scrape
        .value("stigmer_store_writes_per_commit_count", &[])
        .expect("commits");
    assert!(commits >= 1.0, "{commits}");
    assert_eq!(
        scrape.value("stigmer_store_writes_per_commit_sum", &[]),
        Some(info.writes_committed as f64),
        "every write committed, in some commit"
    );
    assert_eq!(
        scrape.value("stigmer_store_commit_seconds_count", &[]),
        Some(commits)
    );
    assert_eq!(
        scrape.value("stigmer_store_fsync_seconds_count", &[]),
        Some(commits)
    );
    let wal = scrape
        .value("stigmer_store_wal_bytes", &[])
        .expect("a SQLite WAL");
    assert!(wal > 0.0, "the create went through the WAL: {wal}");

    let (status, _, _) = http_get(address, "/").await;
    assert_eq!(status, 404, "only /metrics");
    server.stop().await;
}

#[tokio::test]
async fn open_watch_streams_are_counted_and_their_events_lag_measured() {
    let (server, address) = metrics_server().await;
    let streams =
        |n: f64| move |scrape: &Scrape| scrape.value("stigmer_watch_streams", &[]) == Some(n);
    scrape_until(address, "no watch stream", streams(0.0)).await;

    let mut watch = ResourceServiceClient::new(server.channel.clone())
        .watch(WatchRequest {
            kind: "Agent".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    scrape_until(address, "one open watch stream", streams(1.0)).await;
    AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("Watched"))
        .await
        .expect("create");
    let event = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("an event in time")
        .expect("an event")
        .expect("the stream goes on");
    assert_eq!(event.kind, "Agent");
    let scrape = scrape_until(address, "the event's lag", |scrape| {
        scrape.value("stigmer_watch_lag_revisions_count", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        scrape.value("stigmer_watch_lag_revisions_bucket", &[("le", "+Inf")]),
        Some(1.0)
    );
    assert_eq!(scrape.calls(FEED, "watch", "Canceled"), None, "still open");

    drop(watch);
    let scrape = scrape_until(address, "the watch stream closed", streams(0.0)).await;
    assert_eq!(
        scrape.calls(FEED, "watch", "Canceled"),
        Some(1.0),
        "a stream the client ends is counted as Canceled"
    );
    assert_eq!(
        scrape.value(
            "grpc_server_handling_seconds_count",
            &[("grpc_type", "server_stream"), ("grpc_method", "watch")]
        ),
        Some(1.0)
    );
    server.stop().await;
}

/// The binary reads STIGMER_METRICS_LISTEN, says where it serves before it serves gRPC, and
/// stops serving /metrics when it stops.
#[tokio::test]
async fn the_binary_serves_metrics_from_the_environment_variable_until_sigterm() {
    let home = tempfile::tempdir().expect("home");
    let mut command = Binary::configure(
        tokio::process::Command::new(BINARY),
        home.path(),
        None,
        "info",
    );
    command.env("STIGMER_METRICS_LISTEN", "127.0.0.1:0");
    let server = Binary::spawn(command).await;
    let announced = server
        .before_serving
        .iter()
        .find(|line| line["fields"]["message"] == "serving metrics at /metrics")
        .expect("the metrics address is logged before gRPC is served");
    let address: SocketAddr = announced["fields"]["metrics_address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("an address");
    let channel = server.channel().await;
    ResourceServiceClient::new(channel)
        .info(InfoRequest {})
        .await
        .expect("info");
    scrape_until(address, "the info call", |scrape| {
        scrape.calls(FEED, "info", "OK") == Some(1.0)
    })
    .await;
    server.signal("-TERM");
    assert!(server.wait().await.success());
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "nothing listens once the server has stopped"
    );
}

/// An address in use stops the start, naming the flag and the address, before the database
/// is opened (so nothing is created).
#[tokio::test]
async fn a_metrics_address_in_use_stops_the_start_naming_the_flag() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let home = tempfile::tempdir().expect("home");
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .env("HOME", home.path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", &address])
        .output()
        .expect("run stigmer-server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started anyway:\n{stderr}");
    assert!(
        stderr.contains(&format!("--metrics-listen {address}")) && stderr.contains("in use"),
        "the error names neither the flag nor the reason:\n{stderr}"
    );
    assert!(
        !home.path().join(".stigmer").exists(),
        "refused before touching the database"
    );
}

#[tokio::test]
async fn http_calls_are_counted_by_the_code_they_answer() {
    use common::http_client::{Reader, post};
    let (server, address) = metrics_server().await;
    let json = [("content-type", "application/json")];
    let missing = post(
        server.addr,
        &format!("/{QUERY}/get"),
        &json,
        r#"{"value":"agt-nobody"}"#,
    )
    .await;
    assert_eq!(missing.status(), 404);
    let refused = post(
        server.addr,
        &format!("/{FEED}/watch"),
        &json,
        r#"{"kind":"Agent","sinceRevision":"-1"}"#,
    )
    .await;
    assert_eq!(refused.status(), 400);
    let exported = post(server.addr, &format!("/{FEED}/export"), &json, "{}").await;
    let events = String::from_utf8(Reader::new(exported).read_to_end().await).expect("UTF-8");
    assert!(events.ends_with("event: end\ndata: {}\n\n"), "{events}");

    let scrape = scrape_until(address, "the three HTTP calls", |scrape| {
        scrape.calls(FEED, "export", "OK") == Some(1.0)
    })
    .await;
    assert_eq!(scrape.calls(QUERY, "get", "NotFound"), Some(1.0));
    assert_eq!(scrape.calls(QUERY, "get", "OK"), None);
    assert_eq!(scrape.calls(FEED, "watch", "InvalidArgument"), Some(1.0));
}
