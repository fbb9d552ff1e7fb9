//! A panic while serving a call becomes INTERNAL with a correlation id, like any other
//! internal error (`error.rs`), logged at error with the panic's message: the client sees
//! neither a reset stream nor the panic's text. Both places a call's code runs are covered:
//! the handler's future, and the response body (a stream's items are made as it is polled).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tonic::codegen::Bytes;
use tracing::Span;

use crate::error::ApiError;

pin_project_lite::pin_project! {
    /// `inner`, or the message of its panic. Not polled again after it panicked.
    pub(crate) struct Caught<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Caught<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for Caught<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(polled) => polled.map(Ok),
            Err(payload) => Poll::Ready(Err(message(payload))),
        }
    }
}

/// The status a call that panicked gets; logs the panic with its correlation id.
pub(crate) fn internal(panic: &str) -> Status {
    ApiError::Internal(format!("panicked while serving the call: {panic}")).into()
}

/// A response body that ends with an INTERNAL status in its trailers if making the next frame
/// panics, logged in the call's span.
pub(crate) struct CaughtBody {
    inner: tonic::body::Body,
    span: Span,
    ended: bool,
}

impl CaughtBody {
    /// Keeps the current span, the call's, for the log line of a panic.
    pub(crate) fn new(inner: tonic::body::Body) -> Self {
        Self {
            inner,
            span: Span::current(),
            ended: false,
        }
    }
}

impl Body for CaughtBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let inner = &mut this.inner;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll_frame(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                this.ended = true;
                let status = this.span.in_scope(|| internal(&message(payload)));
                let mut trailers = http::HeaderMap::new();
                Poll::Ready(Some(match status.add_header(&mut trailers) {
                    Ok(()) => Ok(Frame::trailers(trailers)),
                    Err(status) => Err(status),
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "a panic without a message".to_string(),
            |m| m.to_string(),
        ),
    }
}

/// Only with the `test-faults` feature, which only stigmer-server's tests turn on: the header
/// `x-stigmer-test-panic: call` makes a call panic in its handler, `body` in its response
/// body, so that tests can prove what a client and the log get from a panic.
#[cfg(feature = "test-faults")]
pub(crate) mod faults {
    use super::*;

    const HEADER: &str = "x-stigmer-test-panic";

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Fault {
        None,
        Call,
        Body,
    }

    impl Fault {
        pub(crate) fn of(headers: &http::HeaderMap) -> Self {
            match headers.get(HEADER).map(|value| value.as_bytes()) {
                Some(b"call") => Self::Call,
                Some(b"body") => Self::Body,
                _ => Self::None,
            }
        }

        pub(crate) fn strike_call(self) {
            assert!(
                self != Self::Call,
                "a test asked this call to panic ({HEADER})"
            );
        }

        pub(crate) fn body(self, body: tonic::body::Body) -> tonic::body::Body {
            if self == Self::Body {
                tonic::body::Body::new(Panicking)
            } else {
                body
            }
        }
    }

    struct Panicking;

    impl Body for Panicking {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            panic!("a test asked this response body to panic ({HEADER})")
        }
    }
}
