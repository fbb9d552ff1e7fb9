//! Shutting down without failing calls: once it begins, new calls are answered UNAVAILABLE by
//! the server itself (on connections still open, so clients get a real status with a retry
//! hint rather than a reset), streams that would never end (watch, subscribe) end with
//! UNAVAILABLE and where to resume, and the calls already in flight are counted until they
//! have sent their last byte. Only then are connections closed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, watch};

/// Atomics rather than a lock: every call passes here twice.
#[derive(Clone)]
pub(crate) struct Shutdown(Arc<State>);

struct State {
    begun: AtomicBool,
    signal: watch::Sender<bool>,
    calls: AtomicUsize,
    idle: Notify,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Self(Arc::new(State {
            begun: AtomicBool::new(false),
            signal: watch::Sender::new(false),
            calls: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    pub(crate) fn begin(&self) {
        self.0.begun.store(true, Ordering::SeqCst);
        self.0.signal.send_replace(true);
    }

    /// Holds true from the moment the shutdown begins.
    pub(crate) fn signal(&self) -> watch::Receiver<bool> {
        self.0.signal.subscribe()
    }

    /// A call starting, counted until the guard drops; `None` once the shutdown has begun.
    pub(crate) fn enter(&self) -> Option<CallGuard> {
        // Counted before the check (both SeqCst), so that `drained` cannot see no call while
        // one that passed the check is not counted yet.
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let guard = CallGuard(Arc::clone(&self.0));
        (!self.0.begun.load(Ordering::SeqCst)).then_some(guard)
    }

    /// Resolves once no call admitted by [`Self::enter`] is left.
    pub(crate) async fn drained(&self) {
        loop {
            let idle = self.0.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if self.0.calls.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

pub(crate) struct CallGuard(Arc<State>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
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
