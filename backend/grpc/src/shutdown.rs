//! Shutting down without failing calls: once it begins, new calls are answered UNAVAILABLE by
//! the server itself (on connections still open, so clients get a real status with a retry
//! hint rather than a reset), streams that would never end (watch, subscribe) end with
//! UNAVAILABLE and where to resume, and the calls already in flight are counted until they
//! have sent their last byte. Only then are connections closed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct Shutdown {
    begun: Arc<watch::Sender<bool>>,
    calls: Arc<watch::Sender<usize>>,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Self {
            begun: Arc::new(watch::Sender::new(false)),
            calls: Arc::new(watch::Sender::new(0)),
        }
    }

    pub(crate) fn begin(&self) {
        self.begun.send_replace(true);
    }

    /// Holds true from the moment the shutdown begins.
    pub(crate) fn signal(&self) -> watch::Receiver<bool> {
        self.begun.subscribe()
    }

    /// A call starting, counted until the guard drops; `None` once the shutdown has begun.
    pub(crate) fn enter(&self) -> Option<CallGuard> {
        // Counted before the check, so that `drained` cannot see zero while a call that
        // passed the check is not counted yet.
        self.calls.send_modify(|calls| *calls += 1);
        let guard = CallGuard(Arc::clone(&self.calls));
        (!*self.begun.borrow()).then_some(guard)
    }

    /// Resolves once no call admitted by [`Self::enter`] is left.
    pub(crate) async fn drained(&self) {
        let mut calls = self.calls.subscribe();
        let _ = calls.wait_for(|calls| *calls == 0).await;
    }
}

pub(crate) struct CallGuard(Arc<watch::Sender<usize>>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.send_modify(|calls| *calls = calls.saturating_sub(1));
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call counted until it is over: a stream's call is in
    /// flight until its last message, not just until its first.
    pub(crate) struct Counted<B> {
        #[pin]
        inner: B,
        call: CallGuard,
    }
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, call: CallGuard) -> Self {
        Self { inner, call }
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
