//! State shared by the fronts and the reload loop: the live snapshot,
//! readiness, metrics and the last rejected change.
//!
//! Only [`crate::reload`] calls [`Shared::publish`]; the fronts only read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// A candidate configuration that was refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub at: SystemTime,
    pub revision: u64,
    pub errors: Vec<String>,
}

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Tells long-polls that a new snapshot was published (its revision).
    published: tokio::sync::watch::Sender<u64>,
    ready: AtomicBool,
    /// 0: no etcd configured; 1: up; 2: down.
    etcd_up: std::sync::atomic::AtomicU8,
    pub metrics: Metrics,
    pub last_rejection: Mutex<Option<Rejection>>,
    /// Distinct clients seen by this edge.
    pub census: crate::census::Census,
    /// Reuse whole UDP answers that do not depend on the client.
    pub answer_cache: bool,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    pub fn new() -> Shared {
        Self::with_census(
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(86_400),
        )
    }

    /// With census windows of the given lengths.
    pub fn with_census(hour: std::time::Duration, day: std::time::Duration) -> Shared {
        Shared {
            census: crate::census::Census::new(hour, day),
            answer_cache: true,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            published: tokio::sync::watch::Sender::new(0),
            ready: AtomicBool::new(false),
            etcd_up: std::sync::atomic::AtomicU8::new(0),
            metrics: Metrics::new(),
            last_rejection: Mutex::new(None),
        }
    }

    /// The live snapshot. Take it once per request so one snapshot answers.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Records whether the etcd watch is healthy (readiness and metrics).
    pub fn set_etcd_up(&self, up: bool) {
        self.etcd_up
            .store(if up { 1 } else { 2 }, Ordering::Relaxed);
        self.metrics.etcd_up.set(i64::from(up));
    }

    /// `Some("up" | "down")` in etcd mode, `None` otherwise.
    pub fn etcd_state(&self) -> Option<&'static str> {
        match self.etcd_up.load(Ordering::Relaxed) {
            1 => Some("up"),
            2 => Some("down"),
            _ => None,
        }
    }

    /// A per-thread cache of the live snapshot: `load()` costs a pointer
    /// check, not a reference-count update, while the snapshot is unchanged.
    pub fn snapshot_cache(&self) -> arc_swap::Cache<&ArcSwap<Snapshot>, Arc<Snapshot>> {
        arc_swap::Cache::new(&self.snapshot)
    }

    /// True once a snapshot has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Makes `snap` the live snapshot (reload only).
    pub(crate) fn publish(&self, snap: Arc<Snapshot>) {
        let rev = snap.revision;
        self.snapshot.store(snap);
        self.ready.store(true, Ordering::Release);
        self.metrics.published(rev);
        self.published.send_replace(rev);
    }

    /// A receiver that wakes on every publish.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    pub(crate) fn reject(&self, r: Rejection) {
        self.metrics.rejected_changes.inc();
        *self.last_rejection.lock().expect("not poisoned") = Some(r);
    }
}
