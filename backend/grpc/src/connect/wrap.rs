//! JSON calls for a gRPC service the controllers do not serve (health), described by its own
//! descriptors: `curl -d '{}' -H 'content-type: application/json' …/grpc.health.v1.Health/Check`
//! answers as every other JSON call does.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use prost_reflect::DescriptorPool;
use tonic::codegen::{Bytes, StdError};
use tower_service::Service;

use super::{Protocol, Shape, serve_http};

/// `inner`, a tonic service, that also answers JSON calls and server-sent events.
#[derive(Clone)]
pub(crate) struct JsonCalls<S> {
    inner: S,
    pool: DescriptorPool,
}

impl<S> JsonCalls<S> {
    /// `inner`, its methods described by the encoded `FileDescriptorSet` `descriptors`.
    pub(crate) fn new(
        inner: S,
        descriptors: &[u8],
    ) -> Result<Self, prost_reflect::DescriptorError> {
        Ok(Self {
            inner,
            pool: DescriptorPool::decode(descriptors)?,
        })
    }
}

impl<S, B> Service<http::Request<B>> for JsonCalls<S>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone serves this call; `self.inner`, made ready by `poll_ready`, stays for the
        // next (tower's rule for services called from a future).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let protocol = Protocol::of(&request);
        if !matches!(protocol, Protocol::Json | Protocol::ConnectStream) {
            return Box::pin(inner.call(request.map(tonic::body::Body::new)));
        }
        let shape = Shape::described(&self.pool, request.uri().path());
        Box::pin(async move {
            let answer = serve_http(shape, protocol, request, |grpc| async move {
                match inner.call(grpc.map(tonic::body::Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
            .await;
            Ok(answer)
        })
    }
}
