//! State shared by the fronts and the reload loop: the live snapshot,
//! readiness, metrics and the last rejected change.
//!
//! Only [`crate::serve::reload`] calls [`Shared::publish`]; the fronts only
//! read. This module sits below the fronts, the sources and `serve`, so
//! none of them depends on another through it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::census::Census;
use crate::config::snapshot::Snapshot;
use crate::metrics::Metrics;

/// A candidate configuration that was refused.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    /// When it was refused.
    pub(crate) at: SystemTime,
    /// The source revision refused.
    pub(crate) revision: u64,
    /// Every error, as `file:line: message` or `key: message`.
    pub(crate) errors: Vec<String>,
}

/// The etcd connection as readiness and metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum EtcdState {
    /// File mode: no etcd.
    NotConfigured = 0,
    /// The watch is healthy.
    Up = 1,
    /// etcd cannot be reached (serving the last snapshot).
    Down = 2,
}

impl EtcdState {
    fn from_u8(v: u8) -> EtcdState {
        match v {
            1 => EtcdState::Up,
            2 => EtcdState::Down,
            _ => EtcdState::NotConfigured,
        }
    }
}

/// Everything the fronts read and the reload loop writes: the live
/// snapshot, readiness, the etcd state, metrics, the census and the last
/// rejected change. One per process, behind an `Arc`.
pub(crate) struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Snapshots published so far: a reader that cached what it built from
    /// one snapshot checks this counter, not the snapshot pointer.
    generation: AtomicU64,
    /// Tells long-polls that a new snapshot was published (its revision).
    published: tokio::sync::watch::Sender<u64>,
    ready: AtomicBool,
    /// An [`EtcdState`].
    etcd: AtomicU8,
    /// Prometheus metrics.
    pub(crate) metrics: Metrics,
    /// The last refused change (reported by `/readyz`'s neighbours and the
    /// edge registry); written only on a rejection.
    pub(crate) last_rejection: Mutex<Option<Rejection>>,
    /// Distinct clients seen by this edge.
    pub(crate) census: Census,
    /// Reuse whole UDP answers that do not depend on the client.
    pub(crate) answer_cache: bool,
    /// Environment health: this edge's observations and the verdicts.
    pub(crate) health: Mutex<HealthState>,
    /// Woken when this edge's observations change (the registry then
    /// publishes them at once). Set by [`Shared::observe`] with a stored
    /// permit, so a change made while the registry is busy writing is seen
    /// by its next wait, not lost until its next periodic write.
    pub(crate) health_changed: tokio::sync::Notify,
    /// Signs documents (`--signing-key`); swapped whole on a key reload.
    pub(crate) signer: arc_swap::ArcSwapOption<crate::signing::Signer>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    /// With census windows of an hour and a day.
    pub(crate) fn new() -> Shared {
        Self::with_census(Census::new(
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(86_400),
        ))
    }

    /// With this census (its window lengths and series step).
    pub(crate) fn with_census(census: Census) -> Shared {
        Shared {
            census,
            answer_cache: true,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            generation: AtomicU64::new(0),
            published: tokio::sync::watch::Sender::new(0),
            ready: AtomicBool::new(false),
            etcd: AtomicU8::new(EtcdState::NotConfigured as u8),
            metrics: Metrics::new(),
            last_rejection: Mutex::new(None),
            health: Mutex::new(HealthState::default()),
            health_changed: tokio::sync::Notify::new(),
            signer: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// The live snapshot. Take it once per request so one snapshot answers.
    #[inline]
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Records whether the etcd watch is healthy (readiness and metrics).
    pub(crate) fn set_etcd(&self, state: EtcdState) {
        self.etcd.store(state as u8, Ordering::Relaxed);
        self.metrics.etcd_up.set(i64::from(state == EtcdState::Up));
    }

    /// `Some("up" | "down")` in etcd mode, `None` otherwise.
    pub(crate) fn etcd_state(&self) -> Option<&'static str> {
        match EtcdState::from_u8(self.etcd.load(Ordering::Relaxed)) {
            EtcdState::Up => Some("up"),
            EtcdState::Down => Some("down"),
            EtcdState::NotConfigured => None,
        }
    }

    /// A per-thread cache of the live snapshot: `load()` costs a pointer
    /// check, not a reference-count update, while the snapshot is unchanged.
    pub(crate) fn snapshot_cache(&self) -> arc_swap::Cache<&ArcSwap<Snapshot>, Arc<Snapshot>> {
        arc_swap::Cache::new(&self.snapshot)
    }

    /// Snapshots published so far; a snapshot taken after reading it is
    /// that one or newer.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True once a snapshot has been published.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Makes `snap` the live snapshot (reload only).
    pub(crate) fn publish(&self, snap: Arc<Snapshot>) {
        let rev = snap.revision;
        self.snapshot.store(snap);
        self.generation.fetch_add(1, Ordering::Release);
        self.ready.store(true, Ordering::Release);
        self.metrics.published(rev);
        self.published.send_replace(rev);
    }

    /// A receiver that wakes on every publish.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Counts and keeps a refused change (reload only).
    pub(crate) fn reject(&self, r: Rejection) {
        self.metrics.rejected_changes.inc();
        *self.last_rejection.lock().expect("not poisoned") = Some(r);
    }
}

/// Environment health as this edge knows it.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    /// This edge's own view of each checked environment (true: up).
    pub(crate) observed: std::collections::BTreeMap<String, bool>,
    /// The verdict per environment: the majority of the live edges'
    /// observations (of this edge's alone without etcd).
    pub(crate) verdicts: std::collections::BTreeMap<String, Verdict>,
}

/// An environment's verdict and the votes behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Verdict {
    pub(crate) up: bool,
    pub(crate) up_votes: u32,
    pub(crate) down_votes: u32,
}

impl Verdict {
    /// Down when a strict majority of the observers say so; up otherwise
    /// (no observer, or a tie, keeps it up).
    pub(crate) fn from_votes(up_votes: u32, down_votes: u32) -> Verdict {
        Verdict {
            up: down_votes <= up_votes,
            up_votes,
            down_votes,
        }
    }

    /// `up (1 of 3 edges see it down)` / `DOWN (2 of 3 edges see it down)`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} ({} of {} edges see it down)",
            if self.up { "up" } else { "DOWN" },
            self.down_votes,
            self.up_votes + self.down_votes
        )
    }
}

impl Shared {
    /// Replaces the verdicts and their metrics.
    pub(crate) fn set_verdicts(&self, verdicts: std::collections::BTreeMap<String, Verdict>) {
        for (env, v) in &verdicts {
            self.metrics
                .set_environment(env, v.up, (v.up_votes, v.down_votes));
        }
        self.health.lock().expect("not poisoned").verdicts = verdicts;
    }

    /// Records this edge's own view of `env` and wakes the registry (now,
    /// or at its next wait when it is busy).
    pub(crate) fn observe(&self, env: &str, up: bool) {
        self.health
            .lock()
            .expect("not poisoned")
            .observed
            .insert(env.to_string(), up);
        // notify_one keeps a permit when no one waits: notify_waiters would
        // drop a change made during the registry's put or lease renewal.
        self.health_changed.notify_one();
    }
}
