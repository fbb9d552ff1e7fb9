//! The Stigmer client: one interface to every RPC of every kind, whether the server runs in
//! this process, as a local daemon, or remotely. [`connect`] picks the transport from
//! configuration; typed generated clients and the generic, kind-by-name calls the CLI uses
//! both go through the same [`Transport`].
#![forbid(unsafe_code)]

mod backup;
mod config;
#[cfg(feature = "in-process")]
mod in_process;
#[cfg(not(feature = "in-process"))]
#[path = "no_in_process.rs"]
mod in_process;
mod kinds;
mod references;
mod resources;
mod search;
mod skill_package;
mod skills;
mod transport;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use prost_reflect::{DynamicMessage, MessageDescriptor};
use stigmer_core::codec::DynamicCodec;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

pub use backup::Backup;
pub use config::{
    BackendConfig, BackendType, ClientConfig, CloudConfig, ConfigFile, DEFAULT_CALL_TIMEOUT,
    DEFAULT_KEEPALIVE, DEFAULT_LOCAL_ENDPOINT, LocalConfig, LocalTransport, format_duration,
    parse_duration, stigmer_home,
};
pub use kinds::{KindNames, Operation, kinds_for};
pub use references::Reference;
pub use resources::{Applied, EXPORTED_VERSIONS, Export, ImportSummary, Outcome, WatchStream};
pub use skill_package::{SKILL_MD, SkillInfo, SkillPackage, SkillPackageError};
pub use skills::SkillVersion;
pub use stigmer_core::API_VERSION;
pub use stigmer_core::naming::{is_valid_slug, slug_from_name};
pub use transport::Transport;

/// What can go wrong on the client side. Server answers keep their gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("cannot start the in-process server: {0}")]
    InProcess(String),
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    File(String),
    /// What the server sent does not check out (a backup whose size or SHA-256 is wrong).
    #[error("{0}")]
    Damaged(String),
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
}

impl ClientError {
    /// The server's field violations (`google.rpc.BadRequest`): (field path, description).
    pub fn field_violations(&self) -> Vec<(String, String)> {
        use tonic_types::StatusExt;
        let Self::Status(status) = self else {
            return Vec::new();
        };
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
}

/// The kinds and methods this client knows, read once from the compiled descriptors: the
/// same catalog the server builds, so it says what the server serves.
pub(crate) fn shared_catalog() -> Result<Arc<stigmer_core::catalog::Catalog>, ClientError> {
    static CATALOG: std::sync::OnceLock<Result<Arc<stigmer_core::catalog::Catalog>, String>> =
        std::sync::OnceLock::new();
    CATALOG
        .get_or_init(|| {
            stigmer_core::catalog::Catalog::build(
                &stigmer_api::DESCRIPTOR_POOL,
                stigmer_core::kinds::KINDS,
            )
            .map(Arc::new)
            .map_err(|err| err.to_string())
        })
        .clone()
        .map_err(ClientError::Config)
}

/// A connection to a Stigmer backend.
pub struct Client {
    transport: Transport,
    catalog: Arc<stigmer_core::catalog::Catalog>,
    in_process: Option<in_process::Server>,
    endpoint: String,
    /// The deadline of each unary call; `None` waits as long as the server takes.
    call_timeout: Option<Duration>,
}

/// The factory: a client over the transport `config` names.
pub async fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
    let catalog = shared_catalog()?;
    let org = config
        .org()
        .map(|org| {
            org.parse().map_err(|_| {
                ClientError::Config(format!("org {org:?} is not a valid header value"))
            })
        })
        .transpose()?;
    let (transport, in_process, endpoint) = match config.backend.kind {
        BackendType::Local if config.backend.local.transport == LocalTransport::InProcess => {
            let (server, database) =
                in_process::Server::start(config.backend.local.database.as_deref())
                    .await
                    .map_err(ClientError::InProcess)?;
            let transport = server.transport();
            (transport, Some(server), format!("in-process ({database})"))
        }
        BackendType::Local => {
            let endpoint = config.backend.local.endpoint.clone();
            let channel = channel(&endpoint, None, config.keepalive).await?;
            (Transport::remote(channel), None, endpoint)
        }
        BackendType::Cloud => {
            let cloud = config.backend.cloud.clone().unwrap_or_default();
            if cloud.endpoint.is_empty() {
                return Err(ClientError::Config(
                    "cloud mode needs an endpoint: run `stigmer login --endpoint HOST:PORT --token TOKEN --org ORG`".into(),
                ));
            }
            let token = (!cloud.token.is_empty())
                .then(|| format!("Bearer {}", cloud.token).parse())
                .transpose()
                .map_err(|_| ClientError::Config("the token is not a valid header value".into()))?;
            if token.is_some() {
                refuse_plaintext_token(&cloud.endpoint)?;
            }
            let ca_file = (!cloud.ca_file.is_empty()).then(|| std::path::Path::new(&cloud.ca_file));
            let channel = channel(&cloud.endpoint, ca_file, config.keepalive).await?;
            let transport = Transport::remote(channel).with_token(token);
            (transport, None, cloud.endpoint)
        }
    };
    Ok(Client {
        transport: transport.with_org(org),
        catalog,
        in_process,
        endpoint,
        call_timeout: config.call_timeout(),
    })
}

/// How long a keepalive ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The URL of `endpoint` (`host:port`, or a URL; `https://` and port 443 use TLS).
fn url_of(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if endpoint.ends_with(":443") {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// A token is a password: it may travel in plain text only to this machine.
fn refuse_plaintext_token(endpoint: &str) -> Result<(), ClientError> {
    let url = url_of(endpoint);
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = http::Uri::from_str(&url)
        .ok()
        .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(ClientError::Config(format!(
        "refusing to send the token unencrypted to {endpoint}: use https://{} or a TLS port \
         (443) (`stigmer login --endpoint https://HOST:PORT`); plain text is only for loopback \
         addresses",
        endpoint.trim_start_matches("http://")
    )))
}

/// A lazy channel to `endpoint` (`host:port`, or a URL; `https://` and port 443 use TLS); over
/// TLS it trusts the public web roots and, when given, the certificate authority in `ca_file`
/// (PEM). Pinged every `keepalive` (zero: never), so that a stream over a dead path ends.
async fn channel(
    endpoint: &str,
    ca_file: Option<&std::path::Path>,
    keepalive: Duration,
) -> Result<Channel, ClientError> {
    let url = url_of(endpoint);
    let fail = |reason: String| ClientError::Connect {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut builder = Endpoint::from_str(&url)
        .map_err(|err| fail(err.to_string()))?
        .connect_timeout(Duration::from_secs(5));
    if !keepalive.is_zero() {
        // Idle connections too: a client kept for long learns of a dead path before a call
        // waits on it. The server pings as well (ADR 0020) and accepts pings this often.
        builder = builder
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive.min(KEEPALIVE_TIMEOUT))
            .keep_alive_while_idle(true);
    }
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca_file) = ca_file {
            let pem = std::fs::read(ca_file).map_err(|err| {
                ClientError::Config(format!(
                    "cannot read the CA file {}: {err}",
                    ca_file.display()
                ))
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|err| fail(err.to_string()))?;
    } else if ca_file.is_some() {
        return Err(ClientError::Config(format!(
            "a CA file is set but {endpoint} is not https://; write the endpoint as https://HOST:PORT"
        )));
    }
    Ok(builder.connect_lazy())
}

impl Client {
    /// The transport, for generated clients: `AgentQueryControllerClient::new(client.transport())`.
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// Where calls go, for people.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn catalog(&self) -> &stigmer_core::catalog::Catalog {
        &self.catalog
    }

    /// The deadline of each unary call, `None` for none.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// Calls any unary RPC with a message of its input type, within the call deadline: past
    /// it the call ends with DEADLINE_EXCEEDED, whatever the server or the network do.
    pub async fn call(
        &self,
        path: &str,
        request: DynamicMessage,
        output: MessageDescriptor,
    ) -> Result<DynamicMessage, tonic::Status> {
        let mut request = tonic::Request::new(request);
        if let Some(timeout) = self.call_timeout {
            // The server learns the deadline too (grpc-timeout) and can give up on its side.
            request.set_timeout(timeout);
        }
        self.within_deadline(self.unary(path, request, output))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn unary(
        &self,
        path: &str,
        request: tonic::Request<DynamicMessage>,
        output: MessageDescriptor,
    ) -> Result<tonic::Response<DynamicMessage>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.transport.clone())
            .max_decoding_message_size(stigmer_core::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(stigmer_core::MAX_MESSAGE_SIZE);
        grpc.ready()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let path = http::uri::PathAndQuery::from_str(path)
            .map_err(|err| tonic::Status::invalid_argument(err.to_string()))?;
        grpc.unary(request, path, DynamicCodec::new(output)).await
    }

    /// `call` bounded by the call deadline.
    async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        within(self.call_timeout, call).await
    }

    /// Whether the server answers health checks with SERVING.
    pub async fn is_serving(&self) -> bool {
        matches!(self.check_serving().await, Ok(true))
    }

    /// Whether the server answers health checks with SERVING: `Ok(false)` when nothing
    /// answers (nothing listens, the connection fails, another answer), and DEADLINE_EXCEEDED
    /// when something accepts the connection but does not answer within the call deadline,
    /// which starting a daemon would not cure.
    pub async fn check_serving(&self) -> Result<bool, ClientError> {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.transport.clone());
        let check = health.check(tonic_health::pb::HealthCheckRequest::default());
        match self.within_deadline(check).await {
            Ok(answer) => Ok(answer.into_inner().status()
                == tonic_health::pb::health_check_response::ServingStatus::Serving),
            Err(status) if is_client_deadline(&status) => Err(ClientError::Status(status)),
            Err(_) => Ok(false),
        }
    }

    /// Closes the in-process server, if this client runs one; a no-op otherwise.
    pub async fn close(self) -> Result<(), ClientError> {
        if let Some(server) = self.in_process {
            server.close().await.map_err(ClientError::InProcess)?;
        }
        Ok(())
    }
}

/// `call` bounded by `timeout`, on the client's own clock, so that a server that never
/// answers (or never reads the grpc-timeout header) cannot hold the caller. A call that fails
/// once the deadline has passed failed because of it, whoever noticed first (tonic's channel
/// enforces grpc-timeout too, as CANCELLED "Timeout expired").
async fn within<T>(
    timeout: Option<Duration>,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let Some(timeout) = timeout else {
        return call.await;
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(timeout, call).await {
        Ok(Err(_)) | Err(_) if started.elapsed() >= timeout => Err(deadline_exceeded(timeout)),
        Ok(result) => result,
        Err(_) => Err(deadline_exceeded(timeout)),
    }
}

/// What marks a deadline this client enforced, as opposed to one the server reports.
const CLIENT_DEADLINE: &str = "no answer within ";

/// The status of a call that outlived the call deadline.
fn deadline_exceeded(timeout: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!("{CLIENT_DEADLINE}{}", format_duration(timeout)))
}

fn is_client_deadline(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::DeadlineExceeded && status.message().starts_with(CLIENT_DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_ends_ends_at_the_deadline_and_says_which() {
        let never = std::future::pending::<Result<(), tonic::Status>>();
        let status = within(Some(Duration::from_millis(20)), never)
            .await
            .expect_err("past the deadline");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(status.message(), "no answer within 20ms");
        assert!(is_client_deadline(&status));

        // No deadline: the call's own answer, however long it takes.
        let answer = within(None, async { Ok::<_, tonic::Status>(7) }).await;
        assert_eq!(answer.expect("answered"), 7);
        let refused = within(Some(Duration::from_secs(5)), async {
            Err::<(), _>(tonic::Status::not_found("agt-1"))
        })
        .await
        .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::NotFound);
    }

    #[test]
    fn a_token_travels_in_plain_text_only_to_loopback() {
        for ok in [
            "https://api.example.com:8443",
            "api.example.com:443",
            "127.0.0.1:50051",
            "localhost:50051",
            "http://[::1]:50051",
        ] {
            assert!(refuse_plaintext_token(ok).is_ok(), "{ok}");
        }
        for refused in [
            "api.example.com:50051",
            "http://10.0.0.5:50051",
            "0.0.0.0:1",
        ] {
            let err = refuse_plaintext_token(refused)
                .expect_err(refused)
                .to_string();
            assert!(err.contains("https://"), "{err}");
        }
    }
}
