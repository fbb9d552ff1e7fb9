//! The tower service behind every controller: decodes the request into a `DynamicMessage` of
//! the method's input type, runs the generic controller, encodes the answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use prost_reflect::{DynamicMessage, ReflectMessage};
use tonic::codegen::{Bytes, StdError};
use tonic::server::{Grpc, ServerStreamingService, UnaryService};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service as _;
use tracing::Span;

use crate::auth::{IAM_POLICY, OrgNeed};
use crate::catalog::{BackendMethod, BackendStream, BackendUnary, BackendVerb, Method, Verb};
use crate::codec::{Reply, ServerCodec};
use crate::connect::Protocol;
use crate::controller::Controller;
use crate::error::{ApiError, SHUTTING_DOWN};
use crate::feed::EventStream;
use crate::panics::{Caught, CaughtBody};
use crate::resource::{Caller, meta};
use crate::shutdown::Counted;

pub use stigmer_core::{LOCAL, MAX_MESSAGE_SIZE, ORG_HEADER};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Serves every method in the catalog.
#[derive(Clone)]
pub(crate) struct ResourceRpc {
    app: Arc<Controller>,
}

impl ResourceRpc {
    pub(crate) fn new(app: Arc<Controller>) -> Self {
        Self { app }
    }
}

impl<B> tower_service::Service<http::Request<B>> for ResourceRpc
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let app = Arc::clone(&self.app);
        Box::pin(async move {
            let Some(call) = app.shutdown.enter() else {
                let status: Status = ApiError::Unavailable(SHUTTING_DOWN.into()).into();
                return Ok(status.into_http());
            };
            #[cfg(feature = "test-faults")]
            let fault = crate::panics::faults::Fault::of(request.headers());
            let served = Caught::new(async move {
                #[cfg(feature = "test-faults")]
                fault.strike_call();
                match Protocol::of(&request) {
                    Protocol::Grpc => serve(app, request).await,
                    Protocol::GrpcWeb => grpc_web(app, request).await,
                    protocol @ (Protocol::Json | Protocol::ConnectStream) => {
                        let grpc_app = Arc::clone(&app);
                        let shape = crate::connect::Shape::served(&app, request.uri().path());
                        crate::connect::serve_http(shape, protocol, request, |grpc| {
                            serve(grpc_app, grpc)
                        })
                        .await
                    }
                }
            });
            let response = served
                .await
                .unwrap_or_else(|panic| crate::panics::internal(&panic).into_http());
            #[cfg(feature = "test-faults")]
            let response = response.map(|body| fault.body(body));
            Ok(response
                .map(|body| tonic::body::Body::new(Counted::new(CaughtBody::new(body), call))))
        })
    }
}

/// A gRPC-Web call, translated by tonic-web into the gRPC call it stands for and back.
async fn grpc_web<B>(
    app: Arc<Controller>,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let mut web = tonic_web::GrpcWebLayer::new().layer(GrpcPath(app));
    match web.call(request.map(tonic::body::Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The gRPC path alone, as the service tonic-web wraps.
#[derive(Clone)]
struct GrpcPath(Arc<Controller>);

impl tower_service::Service<http::Request<tonic::body::Body>> for GrpcPath {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let app = Arc::clone(&self.0);
        Box::pin(async move { Ok(serve(app, request).await) })
    }
}

async fn serve<B>(
    app: Arc<Controller>,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let path = request.uri().path().to_string();
    let mut response = if let Some(method) = app.catalog.method(&path).cloned() {
        serve_kind_method(app, method, request).await
    } else if let Some(method) = app.catalog.backend_method(&path).cloned() {
        serve_backend_method(app, method, request).await
    } else {
        Status::unimplemented(format!("unknown method {path}")).into_http()
    };
    oversize_is_resource_exhausted(&mut response);
    response
}

fn grpc_for(input: &prost_reflect::MessageDescriptor) -> Grpc<ServerCodec> {
    Grpc::new(ServerCodec::new(input.clone()))
        .apply_max_message_size_config(Some(MAX_MESSAGE_SIZE), Some(MAX_MESSAGE_SIZE))
}

async fn serve_kind_method<B>(
    app: Arc<Controller>,
    method: Arc<Method>,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    if method.server_streaming {
        if method.verb == Verb::Subscribe {
            return grpc_for(&method.input)
                .server_streaming(
                    StreamCall {
                        app,
                        target: Target::Kind(method),
                    },
                    request,
                )
                .await;
        }
        let status: Status =
            ApiError::Unimplemented(format!("{} is not offered by this server yet", method.path))
                .into();
        return status.into_http();
    }
    grpc_for(&method.input)
        .unary(
            UnaryCall {
                app,
                target: Target::Kind(method),
            },
            request,
        )
        .await
}

async fn serve_backend_method<B>(
    app: Arc<Controller>,
    method: Arc<BackendMethod>,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let mut grpc = grpc_for(&method.input);
    match method.verb {
        BackendVerb::Stream(verb) => {
            let target = Target::Backend(method, verb);
            grpc.server_streaming(StreamCall { app, target }, request)
                .await
        }
        BackendVerb::Unary(verb) => {
            let target = Target::Backend(method, verb);
            grpc.unary(UnaryCall { app, target }, request).await
        }
    }
}

/// Which RPC a call serves: a kind's controller method or a backend-wide one, with what the
/// backend-wide one does among those of its transport (`BackendStream` or `BackendUnary`).
#[derive(Clone)]
enum Target<V> {
    Kind(Arc<Method>),
    Backend(Arc<BackendMethod>, V),
}

impl<V> Target<V> {
    fn path(&self) -> &str {
        match self {
            Self::Kind(method) => &method.path,
            Self::Backend(method, _) => &method.path,
        }
    }

    /// Calls about the caller's own identity (its account, its keys) need no org.
    fn org_need(&self) -> OrgNeed {
        match self {
            Self::Kind(method) if method.kind.is_iam() && method.kind.name != IAM_POLICY => {
                OrgNeed::Optional
            }
            _ => OrgNeed::Required,
        }
    }
}

struct StreamCall {
    app: Arc<Controller>,
    target: Target<BackendStream>,
}

impl ServerStreamingService<DynamicMessage> for StreamCall {
    type Response = Reply;
    type ResponseStream = EventStream;
    type Future = BoxFuture<Result<tonic::Response<EventStream>, Status>>;

    fn call(&mut self, request: tonic::Request<DynamicMessage>) -> Self::Future {
        let app = Arc::clone(&self.app);
        let target = self.target.clone();
        Box::pin(async move {
            let span = Span::current();
            let caller = app
                .auth
                .caller(request.metadata(), target.org_need())
                .await?;
            let request = request.into_inner();
            record_id(&span, &request);
            let input = request.descriptor();
            let stream = open_stream(&app, target, &caller, request)
                .await
                .map_err(|err| err.in_json_names(&input))?;
            Ok(tonic::Response::new(stream))
        })
    }
}

async fn open_stream(
    app: &Arc<Controller>,
    target: Target<BackendStream>,
    caller: &Caller,
    request: DynamicMessage,
) -> Result<EventStream, ApiError> {
    only_own_org(caller, &request)?;
    app.auth.authorize(target.path(), caller, &request)?;
    match target {
        Target::Kind(method) => {
            Span::current().record("kind", method.kind.name.as_str());
            app.subscribe(&method.kind, caller, request).await
        }
        Target::Backend(method, verb) => {
            let kind = crate::fields::get_str(&request, "kind");
            if !kind.is_empty() {
                Span::current().record("kind", kind.as_str());
            }
            match verb {
                BackendStream::Watch => app.watch(caller, request, method.output.clone()).await,
                BackendStream::Export => app.export(caller, request, method.output.clone()).await,
                BackendStream::Backup => app.backup(method.output.clone()).await,
            }
        }
    }
}

/// tonic reports an oversized message as OUT_OF_RANGE; the contract (and grpc-go) say
/// RESOURCE_EXHAUSTED. tonic percent-encodes the message header, spaces included.
fn oversize_is_resource_exhausted(response: &mut http::Response<tonic::body::Body>) {
    let headers = response.headers_mut();
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == (Code::OutOfRange as i32).to_string().as_bytes());
    if too_large && out_of_range {
        headers.insert(
            "grpc-status",
            HeaderValue::from((Code::ResourceExhausted as i32) as u16),
        );
    }
}

/// A unary call of a kind's controller or of the backend-wide service.
struct UnaryCall {
    app: Arc<Controller>,
    target: Target<BackendUnary>,
}

impl UnaryService<DynamicMessage> for UnaryCall {
    type Response = Reply;
    type Future = BoxFuture<Result<tonic::Response<Reply>, Status>>;

    fn call(&mut self, request: tonic::Request<DynamicMessage>) -> Self::Future {
        let app = Arc::clone(&self.app);
        let target = self.target.clone();
        Box::pin(async move {
            let span = Span::current();
            if let Target::Kind(method) = &target {
                span.record("kind", method.kind.name.as_str());
            }
            let caller = app
                .auth
                .caller(request.metadata(), target.org_need())
                .await?;
            let request = request.into_inner();
            record_id(&span, &request);
            let input = request.descriptor();
            let (response, omitted) =
                crate::limits::collecting_omitted(serve_unary(&app, target, &caller, request))
                    .await;
            let response = response.map_err(|err| err.in_json_names(&input))?;
            if let Reply::Message(response) = &response {
                record_id(&span, response);
            }
            let mut response = tonic::Response::new(response);
            for item in omitted {
                if let Ok(value) = item.parse() {
                    response
                        .metadata_mut()
                        .append(crate::limits::OMITTED_HEADER, value);
                }
            }
            Ok(response)
        })
    }
}

async fn serve_unary(
    app: &Controller,
    target: Target<BackendUnary>,
    caller: &Caller,
    request: DynamicMessage,
) -> Result<Reply, ApiError> {
    only_own_org(caller, &request)?;
    app.auth.authorize(target.path(), caller, &request)?;
    let span = Span::current();
    let response = match target {
        Target::Kind(method) => app.handle(&method, caller, request).await?,
        Target::Backend(method, verb) => match verb {
            BackendUnary::GetAtRevision => {
                span.record("kind", crate::fields::get_str(&request, "kind").as_str());
                app.get_at_revision(caller, request, &method.output)
                    .await?
                    .into()
            }
            BackendUnary::Info => app.info(caller, &method.output).await?.into(),
            BackendUnary::Find => app
                .find_resources(caller, request, &method.output)
                .await?
                .into(),
            BackendUnary::Import => app.import(caller, request, &method.output).await?.into(),
            BackendUnary::ApplyBatch => app
                .apply_batch(caller, request, &method.output)
                .await?
                .into(),
            BackendUnary::Txn => app.txn(caller, request, &method.output).await?.into(),
        },
    };
    Ok(response)
}

fn record_id(span: &Span, message: &DynamicMessage) {
    let id = ["value", "resource_id", "id", "execution_id"]
        .iter()
        .map(|field| crate::fields::get_str(message, field))
        .find(|id| !id.is_empty())
        .unwrap_or_else(|| meta(message).id);
    if !id.is_empty() {
        span.record(
            "id",
            crate::error::clipped(&id, crate::error::MAX_ECHO).as_ref(),
        );
    }
}

/// A request body may name only the org the call works in (the `x-stigmer-org` header's, or
/// in cloud mode the caller's only org):
/// reads and writes alike, so that no org's resources, and no secret, are reached from
/// another. Checked here, for every method, on the fields a body names an org in: `org`
/// (references, watch, push) and `metadata.org` (resources).
pub(crate) fn only_own_org(caller: &Caller, request: &DynamicMessage) -> Result<(), ApiError> {
    let named = [
        ("org", crate::fields::get_str(request, "org")),
        ("metadata.org", meta(request).org),
    ];
    match named
        .into_iter()
        .find(|(_, org)| !org.is_empty() && *org != caller.org)
    {
        None => Ok(()),
        // An org the caller has no role in is answered as if it did not exist.
        Some((_, org))
            if caller
                .grants
                .as_ref()
                .is_some_and(|grants| !grants.orgs().contains(&org.as_str())) =>
        {
            Err(ApiError::NotFound {
                kind: "organization".into(),
                id: org,
            })
        }
        Some((field, org)) => Err(ApiError::OtherOrg {
            field: field.to_string(),
            named: org,
            caller: caller.org.clone(),
        }),
    }
}
