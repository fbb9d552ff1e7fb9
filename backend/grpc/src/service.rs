//! The tower service behind every controller: decodes the request into a `DynamicMessage` of
//! the method's input type, runs the generic controller, encodes the answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use prost_reflect::DynamicMessage;
use tonic::codegen::{Bytes, StdError};
use tonic::server::{Grpc, UnaryService};
use tonic::{Code, Status};
use tracing::Span;

use crate::catalog::Method;
use crate::codec::DynamicCodec;
use crate::controller::App;
use crate::error::ApiError;
use crate::naming::is_valid_slug;
use crate::resource::{Caller, meta};

/// Largest request or response, both ways (CONTRACT.md).
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Header that selects the org a local-mode caller works in.
pub const ORG_HEADER: &str = "x-stigmer-org";
/// The org of local mode, and the identity recorded in audits there.
pub const LOCAL: &str = "local";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Serves every method in the catalog.
#[derive(Clone)]
pub(crate) struct ResourceRpc {
    app: Arc<App>,
}

impl ResourceRpc {
    pub(crate) fn new(app: Arc<App>) -> Self {
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
            let path = request.uri().path().to_string();
            let Some(method) = app.catalog.method(&path).cloned() else {
                return Ok(Status::unimplemented(format!("unknown method {path}")).into_http());
            };
            if method.server_streaming {
                let status: Status =
                    ApiError::Unimplemented(format!("{path} is not offered by this server yet"))
                        .into();
                return Ok(status.into_http());
            }
            let codec = DynamicCodec::new(method.input.clone());
            let mut grpc = Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_MESSAGE_SIZE), Some(MAX_MESSAGE_SIZE));
            let mut response = grpc.unary(UnaryCall { app, method }, request).await;
            oversize_is_resource_exhausted(&mut response);
            Ok(response)
        })
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

struct UnaryCall {
    app: Arc<App>,
    method: Arc<Method>,
}

impl UnaryService<DynamicMessage> for UnaryCall {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<tonic::Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: tonic::Request<DynamicMessage>) -> Self::Future {
        let app = Arc::clone(&self.app);
        let method = Arc::clone(&self.method);
        Box::pin(async move {
            let span = Span::current();
            span.record("kind", method.kind.name.as_str());
            let caller = caller_of(request.metadata())?;
            let request = request.into_inner();
            record_id(&span, &request);
            let response = app.handle(&method, &caller, request).await?;
            record_id(&span, &response);
            Ok(tonic::Response::new(response))
        })
    }
}

fn record_id(span: &Span, message: &DynamicMessage) {
    let id = ["value", "resource_id"]
        .iter()
        .map(|field| crate::fields::get_str(message, field))
        .find(|id| !id.is_empty())
        .unwrap_or_else(|| meta(message).id);
    if !id.is_empty() {
        span.record("id", id.as_str());
    }
}

fn caller_of(metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
    let org = match metadata.get(ORG_HEADER) {
        None => LOCAL.to_string(),
        Some(value) => match value.to_str() {
            Ok(org) if is_valid_slug(org) => org.to_string(),
            _ => {
                return Err(ApiError::invalid_field(
                    "request metadata",
                    ORG_HEADER,
                    "must be an org slug: 1-63 lowercase letters, digits or '-'",
                )
                .into());
            }
        },
    };
    Ok(Caller {
        org,
        identity: LOCAL.to_string(),
    })
}
