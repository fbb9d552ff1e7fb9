//! Accepting connections. Each one holds a file descriptor, so a peer must earn it: a listener
//! error backs off instead of spinning on the accept queue, and a connection that has not sent
//! the HTTP/2 client preface by its deadline is closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpIncoming};

/// Length of "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", the first bytes of every HTTP/2 client
/// (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;

/// First pause after a listener error; doubles on each further error up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Long enough that a process out of descriptors stops burning a core, short enough that it
/// serves again within a second of one being freed.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this period, however many accepts fail.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The connections of a listener, for tonic's `serve_with_incoming_shutdown`. Yields no errors:
/// it logs them and backs off itself, since tonic would retry at once and log only at trace.
pub struct Incoming {
    tcp: TcpIncoming,
    handshake_timeout: Duration,
    backoff: Backoff,
    pause: Option<Pin<Box<Sleep>>>,
}

impl Incoming {
    pub fn new(listener: TcpListener, handshake_timeout: Duration) -> Self {
        // TCP_NODELAY: without it, Nagle's algorithm holds back the last frame of a response
        // until the client's delayed ACK, adding ~40 ms to larger replies. TCP keepalive finds
        // peers that vanished without a FIN even when HTTP/2 pings are not yet running.
        let tcp = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        Self {
            tcp,
            handshake_timeout,
            backoff: Backoff::default(),
            pause: None,
        }
    }

    fn accepted(&mut self, stream: TcpStream) -> Handshake<TcpStream> {
        self.backoff.succeeded();
        Handshake::new(stream, self.handshake_timeout)
    }

    fn failed(&mut self, err: &io::Error) {
        if is_per_connection(err) {
            tracing::debug!(error = %err, "a connection failed before it was accepted");
            return;
        }
        let now = Instant::now();
        let (delay, warn) = self.backoff.failed(now);
        if let Some(failures) = warn {
            tracing::warn!(
                failures,
                "accept failed: {err}; backing off {}ms",
                delay.as_millis()
            );
        }
        self.pause = Some(Box::pin(tokio::time::sleep_until(now + delay)));
    }
}

impl Stream for Incoming {
    type Item = Result<Handshake<TcpStream>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(Pin::new(&mut this.tcp).poll_next(cx)) {
                Some(Ok(stream)) => return Poll::Ready(Some(Ok(this.accepted(stream)))),
                Some(Err(err)) => this.failed(&err),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Errors about one connection that died in the accept queue (accept(2) reports some of them):
/// the listener is fine and the next accept may succeed at once.
fn is_per_connection(err: &io::Error) -> bool {
    use io::ErrorKind::{
        ConnectionAborted, ConnectionRefused, ConnectionReset, HostUnreachable, Interrupted,
        NetworkDown, NetworkUnreachable,
    };
    matches!(
        err.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// Exponential back-off after listener errors, and the rate limit of their warnings.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    /// Failures since the last warning.
    unreported: u64,
    last_warning: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: FIRST_BACKOFF,
            unreported: 0,
            last_warning: None,
        }
    }
}

impl Backoff {
    /// How long to pause after a failure at `now`, and, when a warning is due, how many
    /// failures it reports.
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_BACKOFF);
        self.unreported += 1;
        let due = self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY);
        if !due {
            return (delay, None);
        }
        self.last_warning = Some(now);
        (delay, Some(std::mem::take(&mut self.unreported)))
    }

    /// Keeps the warning clock: a listener that flaps between failing and succeeding still
    /// warns at most once per [`WARN_EVERY`].
    fn succeeded(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

pin_project! {
    /// A connection that must deliver the HTTP/2 client preface before a deadline: until then
    /// a read that would wait past it fails with `TimedOut` (and hyper closes the connection);
    /// afterwards it is a plain pass-through, and HTTP/2 keepalive takes over.
    pub struct Handshake<IO> {
        #[pin]
        io: IO,
        awaiting: usize,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<IO> Handshake<IO> {
    pub fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            awaiting: PREFACE_LEN,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Handshake<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let Some(deadline) = this.deadline.as_mut() else {
            return this.io.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                *this.awaiting = this.awaiting.saturating_sub(read);
                if *this.awaiting == 0 {
                    // Frees the timer: a long-lived connection should not keep one.
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface before the handshake timeout",
                )))
            }
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for Handshake<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Handshake<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PREFACE: &[u8; PREFACE_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_the_whole_preface_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = Handshake::new(server, TIMEOUT);
        tokio::time::advance(TIMEOUT / 2).await;
        client.write_all(&PREFACE[..10]).await.expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).await.expect("partial preface"), 10);

        let waiting = Instant::now();
        let err = tokio::time::timeout(TIMEOUT * 2, server.read(&mut buf))
            .await
            .expect("the wrapper gave up, not the test")
            .expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // The deadline runs from accept: bytes that trickle in do not extend it.
        assert_eq!(waiting.elapsed(), TIMEOUT / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_preface_it_is_a_pass_through() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = Handshake::new(server, TIMEOUT);
        client.write_all(PREFACE).await.expect("write");
        let mut buf = [0u8; PREFACE_LEN];
        server.read_exact(&mut buf).await.expect("preface");

        // A read waiting when the deadline passes keeps waiting: the peer may just be quiet.
        let mut later = [0u8; 5];
        let quiet = tokio::time::timeout(TIMEOUT * 10, server.read(&mut later)).await;
        assert!(quiet.is_err(), "still waiting, not {quiet:?}");
        client.write_all(b"later").await.expect("write");
        server
            .read_exact(&mut later)
            .await
            .expect("read past the deadline");
        assert_eq!(&later, b"later");
        server.write_all(b"reply").await.expect("write");
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.expect("read");
        assert_eq!(&reply, b"reply");
    }

    #[tokio::test(start_paused = true)]
    async fn a_preface_in_pieces_counts_as_a_whole() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = Handshake::new(server, TIMEOUT);
        let mut buf = [0u8; PREFACE_LEN];
        for piece in PREFACE.chunks(7) {
            client.write_all(piece).await.expect("write");
            let read = server.read(&mut buf).await.expect("piece");
            assert_eq!(read, piece.len());
        }
        assert!(server.deadline.is_none(), "the timer is gone");
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_on_success() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..9).map(|_| backoff.failed(now).0).collect();
        let ms: Vec<_> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(now).0, FIRST_BACKOFF);
    }

    #[test]
    fn warnings_are_rate_limited_and_count_the_failures_between_them() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.failed(start).1, Some(1));
        for n in 1..100u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            assert_eq!(backoff.failed(at).1, None, "failure {n}");
        }
        backoff.succeeded();
        assert_eq!(backoff.failed(start + WARN_EVERY).1, Some(100));
    }

    #[test]
    fn only_listener_errors_back_off() {
        let per_connection = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(is_per_connection(&per_connection));
        // EMFILE: the process is out of descriptors.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }
}
