//! Shared test harness: the real server on 127.0.0.1:0 with a temporary database, reached
//! through real tonic clients.
#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod disk;
pub mod http_client;
pub mod postgres;
pub mod random;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};
use stigmer_database::DatabaseOptions;
use stigmer_grpc::ServerConfig;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What a test may change before its server starts.
pub struct Settings {
    pub server: ServerConfig,
    pub database: DatabaseOptions,
}

/// Opens the SQLite database at `db` as the binary does, with a server configuration for
/// `listen` whose key file is the database's default.
pub async fn open_database(
    db: &Path,
    listen: SocketAddr,
) -> (ServerConfig, std::sync::Arc<dyn stigmer_store::Store>) {
    let database = stigmer_database::open(&DatabaseOptions::sqlite(db))
        .await
        .expect("open the database");
    let mut config = ServerConfig::new(listen);
    config.master_key_file = database.default_key_file();
    (config, database.store)
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// Where /metrics is served, when the settings set `metrics_listen` (port 0 picks one).
    pub metrics: Option<SocketAddr>,
    pub channel: Channel,
    pub db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), stigmer_grpc::ServerError>>>,
    _dir: Option<TempDir>,
}

impl TestServer {
    /// A server on a fresh temporary database.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("stigmer.db");
        let mut server = Self::start_at(&db).await;
        server._dir = Some(dir);
        server
    }

    /// A server on a fresh temporary database, with settings changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("stigmer.db");
        let mut server = Self::start_configured(&db, configure).await;
        server._dir = Some(dir);
        server
    }

    /// A server on the database at `db` (kept when the server stops).
    pub async fn start_at(db: &Path) -> Self {
        Self::start_configured(db, |_| {}).await
    }

    /// A server on the database at `db`, with settings changed by `configure`.
    pub async fn start_at_with(db: &Path, configure: impl FnOnce(&mut Settings)) -> Self {
        Self::start_configured(db, configure).await
    }

    async fn start_configured(db: &Path, configure: impl FnOnce(&mut Settings)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut settings = Settings {
            server: ServerConfig::new(addr),
            database: DatabaseOptions::sqlite(db),
        };
        settings.server.shutdown_grace_secs = 5;
        configure(&mut settings);
        let Settings {
            server: mut config,
            database,
        } = settings;
        let database = stigmer_database::open(&database)
            .await
            .expect("open the test database");
        config.master_key_file = config.master_key_file.or(database.default_key_file());
        let metrics = stigmer_grpc::bind_metrics(&config)
            .await
            .expect("bind --metrics-listen");
        let metrics_addr = metrics
            .as_ref()
            .map(|metrics| metrics.local_addr().expect("metrics address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            stigmer_grpc::run_with_metrics(&config, database.store, listener, metrics, async {
                let _ = stopped.await;
            })
            .await
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to test server");
        Self {
            addr,
            metrics: metrics_addr,
            channel,
            db: db.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    /// Signals the server to stop, the way SIGTERM does, without waiting; [`Self::stop`] waits.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server the way SIGTERM does and waits until the database is closed.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self._dir.take()
    }

    /// A read-only view of the database, as the sqlite3 CLI would see it.
    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db read-only")
    }

    /// How many rows of `kind` the database holds, in every org.
    pub fn rows_of_kind(&self, kind: &str) -> i64 {
        self.sqlite()
            .query_row(
                "SELECT count(*) FROM resources WHERE kind = ?1",
                [kind],
                |row| row.get(0),
            )
            .expect("count")
    }

    /// The `data` column of one row, parsed.
    pub fn stored_json(&self, id: &str) -> serde_json::Value {
        let data: String = self
            .sqlite()
            .query_row("SELECT data FROM resources WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .expect("row exists");
        serde_json::from_str(&data).expect("data is JSON")
    }

    /// Drops the row's cached protobuf encoding, so reads decode its `data` instead. Returns
    /// whether the row had one.
    pub fn drop_cached_encoding(&self, id: &str) -> bool {
        let conn = rusqlite::Connection::open(&self.db).expect("open db");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        let cleared = conn
            .execute(
                "UPDATE resources SET proto = NULL WHERE id = ?1 AND proto IS NOT NULL",
                [id],
            )
            .expect("update the row");
        cleared == 1
    }

    /// The row's cached protobuf encoding, `None` when it has none.
    pub fn cached_encoding(&self, id: &str) -> Option<Vec<u8>> {
        self.sqlite()
            .query_row("SELECT proto FROM resources WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .expect("row exists")
    }

    /// Calls any method with a message built from JSON, as grpcurl -d would.
    pub async fn call_json(
        &self,
        path: &str,
        request_json: &str,
    ) -> Result<DynamicMessage, Status> {
        self.call_json_as(stigmer_grpc::LOCAL, path, request_json)
            .await
    }

    /// [`Self::call_json`] in another org (`x-stigmer-org`).
    pub async fn call_json_as(
        &self,
        org: &str,
        path: &str,
        request_json: &str,
    ) -> Result<DynamicMessage, Status> {
        let (input, output) = method_types(path);
        let mut deserializer = serde_json::Deserializer::from_str(request_json);
        let request = DynamicMessage::deserialize(input, &mut deserializer).expect("request JSON");
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert(
            stigmer_grpc::ORG_HEADER,
            org.parse().expect("an org is a valid header value"),
        );
        call_request(&self.channel, path, request, output).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An Agent that passes every rule, named `name`.
pub fn agent(name: &str) -> stigmer_api::ai::stigmer::agentic::agent::v1::Agent {
    use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentSpec};
    use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;
    Agent {
        metadata: Some(ApiResourceMetadata {
            name: name.to_string(),
            ..Default::default()
        }),
        spec: Some(AgentSpec {
            instructions: "You review pull requests carefully.".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Input and output message types of `/pkg.Service/method`.
pub fn method_types(path: &str) -> (MessageDescriptor, MessageDescriptor) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .expect("path is /service/method");
    let service = stigmer_api::DESCRIPTOR_POOL
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("no service {service}"));
    let method = service
        .methods()
        .find(|m| m.name() == method)
        .unwrap_or_else(|| panic!("no method {method}"));
    (method.input(), method.output())
}

/// A unary call through tonic's client with a codec for run-time message types.
pub async fn call(
    channel: &Channel,
    path: &str,
    request: DynamicMessage,
    output: MessageDescriptor,
) -> Result<DynamicMessage, Status> {
    call_request(channel, path, tonic::Request::new(request), output).await
}

async fn call_request(
    channel: &Channel,
    path: &str,
    request: tonic::Request<DynamicMessage>,
    output: MessageDescriptor,
) -> Result<DynamicMessage, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client
        .ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let path = http::uri::PathAndQuery::from_str(path).expect("path");
    client
        .unary(
            request,
            path,
            stigmer_grpc::codec::DynamicCodec::new(output),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// proto3 JSON of a message, as the server stores it.
pub fn to_json(message: &DynamicMessage) -> serde_json::Value {
    serde_json::to_value(message).expect("message to JSON")
}

/// proto3 JSON of a generated message.
pub fn typed_to_json<M: ReflectMessage>(message: &M) -> serde_json::Value {
    to_json(&message.transcode_to_dynamic())
}

/// Asserts the status code and returns the BadRequest violations (field, description).
pub fn expect_code(result: Result<impl std::fmt::Debug, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            assert_no_leak(&status);
            status
        }
    }
}

/// Field paths named in the status's google.rpc.BadRequest.
pub fn violated_fields(status: &Status) -> Vec<String> {
    violations(status)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

/// The (field, description) pairs of the status's google.rpc.BadRequest.
pub fn violations(status: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// No SQL, file path or panic text in what a client sees.
pub fn assert_no_leak(status: &Status) {
    let text = status.message().to_lowercase();
    for word in [
        "sqlite",
        "select ",
        "insert ",
        "constraint",
        "/tmp",
        ".db",
        "panicked",
        "rusqlite",
    ] {
        assert!(
            !text.contains(word),
            "status leaks {word:?}: {}",
            status.message()
        );
    }
}

/// Polls `done` every few milliseconds until it holds; fails the test after 10 s.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `request` (a whole HTTP/1.1 request that asks to close the connection) to `address`
/// and returns (status code, headers in lower case, body).
pub async fn http1(address: std::net::SocketAddr, request: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = std::time::Duration::from_secs(30);
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = Vec::new();
    tokio::time::timeout(deadline, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read the response");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers, then body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, head.to_lowercase(), body.to_string())
}
