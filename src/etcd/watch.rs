//! `EtcdSource`: the routing state (and optionally zones) from a watched
//! etcd prefix.
//!
//! It reads `<prefix>/` at a revision, sends that as one candidate, then
//! watches from the next revision and sends a candidate after each watch
//! response, which always holds whole revisions (one transaction's events
//! share a revision and arrive together). It never sends a half-applied
//! revision. On a compacted watch, a revision going backwards or a new
//! cluster id it reloads in full; on `Unavailable` it retries with backoff
//! (100 ms doubling to 1 s, ±20%); a stream that stays silent is probed with
//! progress requests and replaced when it does not answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{EtcdConfig, EtcdError};
use super::prefix::PrefixState;
use crate::backoff::{Backoff, sleep_or_stop};
use crate::config::ConfigError;
use crate::config::keyed::{Entry, KeyedState};
use crate::config::snapshot::{Inputs, SourceKind, ZoneText};
use crate::shared::{EtcdState, Shared};
use crate::source::StateEvent;

/// A silent watch stream gets a progress request after this long.
const PROGRESS_AFTER: Duration = Duration::from_secs(5);
/// A watch stream that answers nothing for this long is replaced.
const DEAD_AFTER: Duration = Duration::from_secs(12);

/// Builds snapshot inputs from a prefix read: zones from the zones folder,
/// overridden per origin by `<prefix>/zones/<origin>` keys.
pub(crate) fn inputs_from(
    cfg: &EtcdConfig,
    zones_dir: Option<&PathBuf>,
    p: &PrefixState,
    kind: SourceKind,
) -> Result<Inputs, Vec<ConfigError>> {
    let mut zones: Vec<ZoneText> = Vec::new();
    if let Some(dir) = zones_dir {
        let files = crate::source::FileSource {
            zones_dir: dir.clone(),
            state_file: None,
        }
        .read(0)?;
        zones = files.zones;
    }
    for (origin, e) in p.zones() {
        let name = match crate::proto::name::Name::parse(
            &format!("{}.", origin.trim_end_matches('.')),
            None,
        ) {
            Ok(n) => n,
            Err(x) => {
                return Err(vec![ConfigError::at(
                    cfg.key(&format!("zones/{origin}")),
                    format!("bad zone origin: {x}"),
                )]);
            }
        };
        zones.retain(|z| {
            let overridden = z.origin.to_lower() == name.to_lower();
            if overridden && *z.text != *e.value {
                log_overridden(&z.source, &cfg.key(&format!("zones/{origin}")), &z.text);
            }
            !overridden
        });
        zones.push(ZoneText {
            source: cfg.key(&format!("zones/{origin}")),
            origin: name,
            text: e.value.as_str().into(),
        });
    }
    let entries = p.entries.clone();
    Ok(Inputs {
        zones,
        state_source: cfg.dir(),
        state_text: String::new(),
        keyed: Some(KeyedState {
            prefix: cfg.prefix.clone(),
            entries,
        }),
        revision: p.content_revision().max(0) as u64,
        kind,
    })
}

/// Logs, once per distinct content, that a zone file differs from the etcd
/// key that overrides it (so an operator who edits the file learns why the
/// edit is not served).
fn log_overridden(file: &str, key: &str, text: &str) {
    use std::hash::{Hash, Hasher};
    static SEEN: std::sync::Mutex<Option<HashMap<String, u64>>> = std::sync::Mutex::new(None);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let hash = h.finish();
    let mut seen = SEEN.lock().expect("not poisoned");
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.insert(file.to_string(), hash) != Some(hash) {
        info!(file, key, "zone file ignored: the etcd key overrides it");
    }
}

/// The etcd source: reads the prefix, then watches it and sends a
/// candidate per watch response (whole revisions).
pub(crate) struct EtcdSource {
    /// Where the prefix is.
    pub(crate) cfg: EtcdConfig,
    /// Zone files that etcd's `zones/<origin>` keys override, if any.
    pub(crate) zones_dir: Option<PathBuf>,
    /// The connection (shared with the edge registry).
    pub(crate) client: Client,
}

impl EtcdSource {
    /// Reads the whole prefix now.
    pub(crate) async fn read(&mut self) -> Result<PrefixState, EtcdError> {
        PrefixState::read(&mut self.client, &self.cfg, 0).await
    }

    /// Snapshot inputs from a prefix read with this source's settings.
    pub(crate) fn inputs(
        &self,
        p: &PrefixState,
        kind: SourceKind,
    ) -> Result<Inputs, Vec<ConfigError>> {
        inputs_from(&self.cfg, self.zones_dir.as_ref(), p, kind)
    }

    fn send_inputs(&self, p: &PrefixState) -> StateEvent {
        match self.inputs(p, SourceKind::Etcd) {
            Ok(i) => StateEvent::Candidate(i),
            Err(errors) => StateEvent::Unreadable {
                revision: p.content_revision().max(0) as u64,
                errors,
            },
        }
    }

    /// Runs until `shutdown`: keeps `state` in step with etcd and sends a
    /// candidate for every change. `state` is what was last read (None: read
    /// in full first).
    pub(crate) async fn run(
        mut self,
        mut state: Option<PrefixState>,
        tx: mpsc::Sender<StateEvent>,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            // Full read when we have nothing (or must start over).
            let current = match state.take() {
                Some(s) => s,
                None => match self.read().await {
                    Ok(s) => {
                        shared.set_etcd(EtcdState::Up);
                        backoff.reset();
                        info!(
                            revision = s.revision,
                            keys = s.entries.len(),
                            "read the etcd prefix"
                        );
                        if tx.send(self.send_inputs(&s)).await.is_err() {
                            return;
                        }
                        s
                    }
                    Err(error) => {
                        shared.set_etcd(EtcdState::Down);
                        warn!(%error, "etcd read failed; retrying");
                        if sleep_or_stop(backoff.delay(), &shutdown).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self
                .watch(current, &tx, &shared, &shutdown, &mut backoff)
                .await
            {
                WatchEnd::Stop => return,
                WatchEnd::Reload => state = None,
                WatchEnd::Retry(s) => {
                    state = Some(s);
                    if sleep_or_stop(backoff.delay(), &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Watches from `state.revision + 1`, applying events to `state`.
    async fn watch(
        &mut self,
        mut state: PrefixState,
        tx: &mpsc::Sender<StateEvent>,
        shared: &Shared,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> WatchEnd {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(state.revision + 1)
            .with_progress_notify();
        let mut stream = match self.client.watch(self.cfg.dir(), Some(opts)).await {
            Ok(s) => s,
            Err(error) => {
                shared.set_etcd(EtcdState::Down);
                warn!(%error, revision = state.revision, "etcd watch failed; retrying");
                return WatchEnd::Retry(state);
            }
        };
        let dir = self.cfg.dir();
        let mut last_heard = Instant::now();
        let mut probed = false;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep(PROGRESS_AFTER) => {
                    if last_heard.elapsed() >= DEAD_AFTER {
                        shared.set_etcd(EtcdState::Down);
                        warn!(revision = state.revision, "etcd watch silent; reconnecting");
                        return WatchEnd::Retry(state);
                    }
                    if !probed || last_heard.elapsed() >= PROGRESS_AFTER {
                        probed = true;
                        if let Err(error) = stream.request_progress().await {
                            debug!(%error, "progress request failed");
                        }
                    }
                    continue;
                }
                _ = shutdown.cancelled() => return WatchEnd::Stop,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => {
                    shared.set_etcd(EtcdState::Down);
                    warn!(revision = state.revision, "etcd watch ended; reconnecting");
                    return WatchEnd::Retry(state);
                }
                Err(error) => {
                    shared.set_etcd(EtcdState::Down);
                    warn!(%error, revision = state.revision, "etcd watch broke; reconnecting");
                    return WatchEnd::Retry(state);
                }
            };
            last_heard = Instant::now();
            probed = false;
            shared.set_etcd(EtcdState::Up);
            backoff.reset();
            if must_reload(&resp, &state) {
                return WatchEnd::Reload;
            }
            if resp.events().is_empty() {
                continue;
            }
            let newest = apply_events(&mut state, &resp, &dir);
            state.revision = newest;
            debug!(
                revision = newest,
                events = resp.events().len(),
                "etcd change"
            );
            if tx.send(self.send_inputs(&state)).await.is_err() {
                return WatchEnd::Stop;
            }
        }
    }
}

/// Why a watch stopped.
enum WatchEnd {
    /// Shutdown, or the reload loop is gone.
    Stop,
    /// Start over with a full read.
    Reload,
    /// Watch again from this state after a pause.
    Retry(PrefixState),
}

/// True when a watch response means the copy of the prefix can no longer
/// be followed event by event: the watch was canceled (compaction), the
/// cluster changed, or the revision went backwards (etcd was restored or
/// wiped).
fn must_reload(resp: &etcd_client::WatchResponse, state: &PrefixState) -> bool {
    if resp.canceled() {
        if resp.compact_revision() > 0 {
            warn!(
                revision = state.revision,
                compacted = resp.compact_revision(),
                "watch start was compacted; reloading in full"
            );
        } else {
            warn!(
                reason = resp.cancel_reason(),
                "etcd canceled the watch; reloading in full"
            );
        }
        return true;
    }
    let Some(h) = resp.header() else {
        return false;
    };
    if h.cluster_id() != 0 && state.cluster_id != 0 && h.cluster_id() != state.cluster_id {
        warn!(
            old = state.cluster_id,
            new = h.cluster_id(),
            "etcd cluster id changed; reloading in full"
        );
        return true;
    }
    if h.revision() < state.revision {
        warn!(
            old = state.revision,
            new = h.revision(),
            "etcd revision went backwards; reloading in full"
        );
        return true;
    }
    false
}

/// Applies a watch response's events (whole revisions) to `state`; returns
/// the newest revision they carry.
fn apply_events(state: &mut PrefixState, resp: &etcd_client::WatchResponse, dir: &str) -> i64 {
    let mut newest = state.revision;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        newest = newest.max(kv.mod_revision());
        let Ok(key) = kv.key_str() else { continue };
        let Some(rel) = key.strip_prefix(dir) else {
            continue;
        };
        match ev.event_type() {
            EventType::Put => {
                state.entries.insert(
                    rel.to_string(),
                    Entry {
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                        mod_revision: kv.mod_revision(),
                    },
                );
            }
            EventType::Delete => {
                state.entries.remove(rel);
            }
        }
    }
    newest
}
