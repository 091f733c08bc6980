//! The threads the public HTTP connections run on: one current-thread
//! tokio runtime per thread, connections handed to them in turn.
//!
//! On the process's multi-thread runtime every wake-up of a connection
//! goes through its work-stealing scheduler (shared run queues, atomics,
//! a cross-thread unpark when another worker is idle); a keep-alive
//! connection answering one request after another pays that on each
//! request. On a current-thread runtime a connection's task stays on the
//! thread that polls its socket: `/v1/config` answers about 15% more
//! requests per second on one core (`bench/http-compare.sh`), the level of a
//! bare hyper server. The accept loop stays on the main runtime; an
//! accepted socket moves to the next worker's reactor (deregistered from
//! one epoll, registered with the other: two system calls per connection,
//! none per request).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The HTTP threads of the listeners that share them (public and DoH).
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Cancelled when the last listener lets go: each thread then drops
    /// its runtime (and the connections on it) and ends.
    stop: CancellationToken,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// Starts `threads` (at least one) threads named `http-N`.
    pub(crate) fn start(threads: usize) -> std::io::Result<Arc<Workers>> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || rt.block_on(stop.cancelled()))?;
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        }))
    }

    /// The runtime the next connection goes to.
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// How many threads there are.
    pub(crate) fn threads(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::Workers;

    #[test]
    fn connections_go_to_each_thread_in_turn_and_threads_end_with_the_workers() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.threads(), 3);
        let names: Vec<String> = (0..6)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                workers.next().spawn(async move {
                    let name = std::thread::current().name().unwrap().to_string();
                    tx.send(name).unwrap();
                });
                rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap()
            })
            .collect();
        assert_eq!(
            names,
            ["http-0", "http-1", "http-2", "http-0", "http-1", "http-2"]
        );
        let handle = workers.next().clone();
        drop(workers);
        // The runtime ends: a task spawned on it no longer runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            handle.spawn(async move {
                let _ = tx.send(());
            });
            if rx
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a runtime kept running"
            );
        }
    }
}
