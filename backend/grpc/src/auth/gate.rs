//! Services other than the controllers that still need a valid key in cloud mode: server
//! reflection describes every RPC, which is the server's whole attack surface.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

use crate::controller::Controller;

/// `inner`, reached only with a valid API key (in local mode, always).
#[derive(Clone)]
pub(crate) struct KeyRequired<S> {
    inner: S,
    app: Arc<Controller>,
}

impl<S> KeyRequired<S> {
    pub(crate) fn new(inner: S, app: Arc<Controller>) -> Self {
        Self { inner, app }
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for KeyRequired<S>
where
    S: tower_service::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = Arc::clone(&self.app);
        Box::pin(async move {
            if app.auth.mode() == crate::config::AuthMode::ApiKey {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok());
                if let Err(err) = app.auth.identity(header).await {
                    return Ok(Status::from(err).into_http());
                }
            }
            inner.call(request).await
        })
    }
}
