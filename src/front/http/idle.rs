//! The header timeout of an HTTP/1 connection, kept per connection rather
//! than per request.
//!
//! hyper's own `header_read_timeout` arms a timer (a boxed sleep in the
//! runtime's timer wheel, and its removal) for every request head, even on
//! a keep-alive connection whose next request arrives at once: about 5% of
//! the instructions of a hot-path answer. Here a connection notes the time
//! of its last progress (bytes written, a routed request answered) in an
//! atomic, and one sleep per connection wakes at most once per timeout to
//! look at it. A connection is closed when, with no request being answered
//! (a long-poll is one), it has made no progress for the timeout: a head
//! that does not complete (slowloris), an idle keep-alive connection, a
//! reader that stops reading its answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection last did.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted: `last` counts from here.
    start: Instant,
    /// Nanoseconds from `start` to the last progress.
    last: AtomicU64,
    /// Requests being answered (a routed request until its response).
    busy: AtomicU32,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicU32::new(0),
        })
    }

    /// Notes progress now.
    pub(crate) fn touch(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
    }

    /// A request is being answered until [`Activity::done`].
    pub(crate) fn begin(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A request begun is answered.
    pub(crate) fn done(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// Resolves once the connection has made no progress for `timeout`
    /// with no request being answered.
    pub(crate) async fn stalled(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let deadline = if self.busy.load(Ordering::Relaxed) > 0 {
                now + timeout
            } else {
                self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed)) + timeout
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A connection's stream that notes each write that made progress.
pub(crate) struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub(crate) fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        Watched { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
