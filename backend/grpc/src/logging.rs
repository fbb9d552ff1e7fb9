//! One log line per call (method, kind, id, code, duration), as a tower layer around every
//! service, so controllers never log calls themselves. Failed calls log at info (server faults
//! at error); successful, not-found and cancelled ones at debug. Being the layer around every
//! service, it also gives each one's answer to an unreadable request the same code
//! (`error::unreadable_request_is_invalid_argument`). With `--metrics-listen`, it counts each
//! call by method and code and times it (`metrics.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use tonic::Code;
use tracing::Span;
use tracing::field::Empty;

use crate::metrics::{CallMetrics, RpcMetrics};

/// Wraps a service so each call is logged (and, with metrics, counted) when its response ends.
#[derive(Debug, Clone, Default)]
pub struct RpcLogLayer {
    metrics: Option<Arc<RpcMetrics>>,
}

impl RpcLogLayer {
    pub(crate) fn new(metrics: Option<Arc<RpcMetrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
    metrics: Option<Arc<RpcMetrics>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span =
            tracing::info_span!("rpc", method = %request.uri().path(), kind = Empty, id = Empty);
        let started = Instant::now();
        let metrics = self
            .metrics
            .as_ref()
            .map(|metrics| metrics.start(request.uri().path()));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let mut response = tracing::Instrument::instrument(future, span.clone()).await?;
            crate::error::unreadable_request_is_invalid_argument(response.headers_mut());
            let code = grpc_status(response.headers()).or_else(|| {
                response
                    .extensions()
                    .get::<AnsweredCode>()
                    .map(|answered| answered.0)
            });
            let pending = PendingLog {
                span,
                started,
                code,
                metrics,
            };
            Ok(response.map(|body| LoggedBody {
                inner: body,
                pending: Some(pending),
            }))
        })
    }
}

/// The gRPC code of an answer that carries none in its headers (a JSON call's, `connect/`),
/// put in the response's extensions so that its log line and metrics say how it ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AnsweredCode(pub(crate) Code);

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// The log line of one call, written when dropped: at the end of the response, or when the
/// client goes away first.
struct PendingLog {
    span: Span,
    started: Instant,
    code: Option<Code>,
    metrics: Option<CallMetrics>,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.finish(self.code);
        }
        let duration_ms = readable_ms(self.started.elapsed());
        match self.code {
            Some(code @ (Code::Internal | Code::Unknown | Code::DataLoss)) => {
                tracing::error!(parent: &self.span, code = ?code, duration_ms, "rpc")
            }
            // A line per successful call costs a write to stderr per call, about 8% of the
            // server's CPU on point reads; `--log debug` shows them.
            // NotFound is how a lookup says "not there yet" (the CLI asks before it creates):
            // an answer, not a failure, so a healthy session does not read like one.
            Some(code @ (Code::Ok | Code::NotFound)) => {
                tracing::debug!(parent: &self.span, code = ?code, duration_ms, "rpc")
            }
            Some(code) => tracing::info!(parent: &self.span, code = ?code, duration_ms, "rpc"),
            None => tracing::debug!(parent: &self.span, code = "Cancelled", duration_ms, "rpc"),
        }
    }
}

/// Milliseconds to the microsecond (`0.48`, not `0.47989099999999996`), still a number for log
/// collectors.
fn readable_ms(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pin_project_lite::pin_project! {
    /// A response body that finishes its call's log line when the trailers (or the end) arrive.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        pending: Option<PendingLog>,
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let mut polled = this.inner.poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    crate::error::unreadable_request_is_invalid_argument(trailers);
                }
                if let (Some(trailers), Some(pending)) =
                    (frame.trailers_ref(), this.pending.as_mut())
                {
                    pending.code = grpc_status(trailers).or(pending.code);
                    this.pending.take();
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.as_mut() {
                    pending.code.get_or_insert(Code::Ok);
                }
                this.pending.take();
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = this.pending.as_mut() {
                    pending.code.get_or_insert(Code::Unknown);
                }
                this.pending.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_logged_in_milliseconds_to_the_microsecond() {
        assert_eq!(readable_ms(std::time::Duration::from_nanos(479_891)), 0.48);
        assert_eq!(
            readable_ms(std::time::Duration::from_micros(12_345)),
            12.345
        );
        assert_eq!(readable_ms(std::time::Duration::from_secs(2)), 2000.0);
    }
}
