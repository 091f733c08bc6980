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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// Set by [`Activity::answered_at`]: the next write is that answer's,
    /// and its progress time is already noted.
    noted: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            noted: AtomicBool::new(false),
        })
    }

    /// Notes progress now.
    pub(crate) fn touch(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
    }

    /// Notes progress at `at`, when a request answered at once arrived
    /// (microseconds ago): the write of that answer then reads no clock.
    pub(crate) fn answered_at(&self, at: Instant) {
        let ns =
            u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
        self.noted.store(true, Ordering::Relaxed);
    }

    /// Notes a write's progress (now, unless the write is of an answer
    /// whose time [`Activity::answered_at`] noted).
    fn wrote(&self) {
        if self.noted.load(Ordering::Relaxed) {
            self.noted.store(false, Ordering::Relaxed);
        } else {
            self.touch();
        }
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
            self.activity.wrote();
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
            self.activity.wrote();
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

/// What ended a [`guarded`] connection first.
pub(crate) enum Ended<T, G> {
    /// The connection itself, with its result.
    Conn(T),
    /// The guard: a stall or a shutdown.
    Guard(G),
}

/// Runs `conn` until it ends or `guard` resolves, polling `guard` only
/// when its own waker has fired.
///
/// `tokio::select!` polls every branch on each wake-up of the task: on a
/// keep-alive connection that is the stall timer and the shutdown token on
/// every request, about 500 instructions of a hot-path answer's 21,000.
/// Here a request costs one atomic swap; the guard runs when its timer or
/// token wakes it (and once at the start, to arm them).
pub(crate) async fn guarded<C: Future, G: Future>(
    conn: Pin<&mut C>,
    guard: Pin<&mut G>,
) -> Ended<C::Output, G::Output> {
    let flag = Arc::new(Flag {
        woken: AtomicBool::new(true),
        task: atomic_waker::AtomicWaker::new(),
    });
    Guarded {
        conn,
        guard,
        waker: std::task::Waker::from(flag.clone()),
        flag,
    }
    .await
}

/// Whether the guard was woken, and the task to wake when it is.
struct Flag {
    woken: AtomicBool,
    task: atomic_waker::AtomicWaker,
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

struct Guarded<'a, C, G> {
    conn: Pin<&'a mut C>,
    guard: Pin<&'a mut G>,
    flag: Arc<Flag>,
    /// The guard's waker: sets the flag, then wakes the task.
    waker: std::task::Waker,
}

impl<C: Future, G: Future> Future for Guarded<'_, C, G> {
    type Output = Ended<C::Output, G::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(Ended::Conn(out));
        }
        // Registered before the flag is read: a wake after the read wakes
        // this task.
        this.flag.task.register(cx.waker());
        if this.flag.woken.swap(false, Ordering::Acquire)
            && let Poll::Ready(out) = this
                .guard
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker))
        {
            return Poll::Ready(Ended::Guard(out));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

    use super::{Ended, guarded};

    /// An answer's arrival is its write's progress time (no clock read);
    /// a later write notes its own time.
    #[test]
    fn an_answer_noted_at_its_arrival_covers_its_write() {
        let a = super::Activity::new();
        let arrived = a.start + std::time::Duration::from_millis(5);
        let last = || a.last.load(Ordering::Relaxed);
        a.answered_at(arrived);
        assert_eq!(last(), 5_000_000);
        a.wrote();
        assert_eq!(last(), 5_000_000, "the answer's write keeps its arrival");
        std::thread::sleep(std::time::Duration::from_millis(10));
        a.wrote();
        assert!(last() >= 10_000_000, "a later write notes now: {}", last());
    }

    /// The connection is polled on each of its wake-ups, the guard only
    /// at the start and when its own waker fires; whichever ends first
    /// ends the drive.
    #[tokio::test]
    async fn the_guard_is_polled_only_when_it_wakes() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let conn_polls = Arc::new(AtomicU32::new(0));
        let polls = conn_polls.clone();
        let mut conn = std::pin::pin!(async move {
            let mut sum = 0;
            loop {
                polls.fetch_add(1, Ordering::Relaxed);
                match rx.recv().await {
                    Some(n) => sum += n,
                    None => return sum,
                }
            }
        });
        let guard_polls = Arc::new(AtomicU32::new(0));
        let guard_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let fire = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (gp, gw, gf) = (guard_polls.clone(), guard_waker.clone(), fire.clone());
        let mut guard = std::pin::pin!(std::future::poll_fn(move |cx| {
            gp.fetch_add(1, Ordering::Relaxed);
            *gw.lock().unwrap() = Some(cx.waker().clone());
            if gf.load(Ordering::Relaxed) {
                Poll::Ready("fired")
            } else {
                Poll::Pending
            }
        }));

        // 50 wake-ups of the connection, then the guard fires.
        let sender = tokio::spawn(async move {
            for n in 0..50 {
                tx.send(n).unwrap();
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            fire.store(true, Ordering::Relaxed);
            let waker = guard_waker.lock().unwrap().clone().unwrap();
            waker.wake();
            tx
        });
        match guarded(conn.as_mut(), guard.as_mut()).await {
            Ended::Guard(g) => assert_eq!(g, "fired"),
            Ended::Conn(sum) => panic!("the connection ended first: {sum}"),
        }
        assert!(
            conn_polls.load(Ordering::Relaxed) >= 50,
            "{conn_polls:?} polls of the connection"
        );
        assert_eq!(
            guard_polls.load(Ordering::Relaxed),
            2,
            "the guard is polled at the start and when it fires"
        );

        // The connection ending first ends the drive with its output.
        let tx = sender.await.unwrap();
        tx.send(7).unwrap();
        drop(tx);
        let never = std::pin::pin!(std::future::pending::<()>());
        match guarded(conn.as_mut(), never).await {
            Ended::Conn(sum) => assert_eq!(sum, (0..50).sum::<u32>() + 7),
            Ended::Guard(()) => panic!("the guard never fires"),
        }
    }
}
