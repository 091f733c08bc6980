//! The reload loop: the single writer of the live snapshot.
//!
//! Sources send [`StateEvent`]s on one channel; the loop compiles each
//! candidate against the live snapshot and either publishes it with one
//! atomic swap or rejects it, logs every error and keeps serving the old one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::shared::{Rejection, Shared};
use crate::snapshot::{self, ConfigError, Inputs, Snapshot};

/// What a source tells the reload loop.
#[derive(Debug)]
pub enum StateEvent {
    /// New inputs to compile and, if valid, publish.
    Candidate(Inputs),
    /// The source changed but could not be read.
    Unreadable {
        revision: u64,
        errors: Vec<ConfigError>,
    },
}

/// The cache folder (`--cache-dir`): the last serial served per zone, so
/// serials survive restarts, and in etcd mode the last published prefix
/// (the last-known-good state), so an edge can start while etcd is down.
#[derive(Debug, Clone)]
pub struct SerialStore {
    path: Option<PathBuf>,
    prefix_path: Option<PathBuf>,
}

/// The etcd prefix as last published, as kept on disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CachedPrefix {
    pub prefix: String,
    pub state: crate::store::PrefixState,
}

impl SerialStore {
    pub fn new(cache_dir: Option<PathBuf>) -> SerialStore {
        SerialStore {
            path: cache_dir.as_ref().map(|d| d.join("serials.json")),
            prefix_path: cache_dir.map(|d| d.join("etcd-state.json")),
        }
    }

    /// The last published etcd prefix, if one was saved for `prefix`.
    pub fn load_prefix(&self, prefix: &str) -> Option<crate::store::PrefixState> {
        let p = self.prefix_path.as_ref()?;
        let c: CachedPrefix = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        (c.prefix == prefix).then_some(c.state)
    }

    fn save_prefix(&self, inputs: &Inputs) -> std::io::Result<()> {
        let (Some(p), Some(et)) = (&self.prefix_path, &inputs.etcd) else {
            return Ok(());
        };
        let c = CachedPrefix {
            prefix: et.prefix.clone(),
            state: crate::store::PrefixState {
                revision: inputs.revision as i64,
                cluster_id: 0,
                entries: et.entries.clone(),
            },
        };
        crate::util::write_atomic(p, &serde_json::to_vec(&c).expect("serializable"))
    }

    /// The serials saved by a previous run (empty when none).
    pub fn load(&self) -> BTreeMap<String, (u32, u64)> {
        self.path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves serials atomically (temp file, fsync, rename).
    pub fn save(&self, serials: &BTreeMap<String, (u32, u64)>) -> std::io::Result<()> {
        let Some(p) = &self.path else { return Ok(()) };
        crate::util::write_atomic(
            p,
            &serde_json::to_vec_pretty(serials).expect("serializable"),
        )
    }
}

/// Compiles `inputs` against the live snapshot and publishes or rejects.
/// Returns true when published.
pub fn apply(
    shared: &Shared,
    inputs: &Inputs,
    serials: &SerialStore,
) -> Result<Arc<Snapshot>, Vec<String>> {
    let prev = shared.is_ready().then(|| shared.snapshot());
    // The saved serials matter for the first snapshot after a start; after
    // that the live snapshot carries them (and is saved after each publish).
    let floor = if prev.is_none() {
        serials.load()
    } else {
        Default::default()
    };
    let result = snapshot::compile(inputs, prev.as_deref(), &floor)
        .map_err(|es| es.iter().map(ToString::to_string).collect::<Vec<_>>());
    let mut snap = match result {
        Ok(s) => s,
        Err(errors) => {
            reject(shared, inputs.revision, errors.clone());
            return Err(errors);
        }
    };
    if let Some(p) = &prev {
        let mut refused = Vec::new();
        if !snap.routing.allow_empty {
            if !p.routing.services.is_empty() && snap.routing.services.is_empty() {
                refused.push(format!(
                    "{}: the change removes every service; set allow_empty: true to allow it",
                    inputs.state_source
                ));
            }
            if !p.zones.is_empty() && snap.zones.is_empty() {
                refused.push(
                    "the change removes every zone; set allow_empty: true in the state to allow it"
                        .to_string(),
                );
            }
        }
        if !refused.is_empty() {
            reject(shared, inputs.revision, refused.clone());
            return Err(refused);
        }
    }
    // Files have no revision of their own: count publishes.
    if snap.kind == crate::snapshot::SourceKind::File {
        snap.revision = prev.as_ref().map_or(1, |p| p.revision + 1);
    }
    let snap = Arc::new(snap);
    shared.publish(snap.clone());
    if let Err(error) = serials.save(&snap.serials()) {
        warn!(%error, "could not save zone serials");
    }
    shared
        .metrics
        .serving_from_cache
        .set(i64::from(snap.kind == crate::snapshot::SourceKind::Cache));
    if snap.kind == crate::snapshot::SourceKind::Etcd
        && let Err(error) = serials.save_prefix(inputs)
    {
        warn!(%error, "could not save the last-known-good state");
    }
    Ok(snap)
}

fn reject(shared: &Shared, revision: u64, errors: Vec<String>) {
    for e in &errors {
        warn!(revision, error = %e, "change rejected");
    }
    warn!(
        revision,
        errors = errors.len(),
        "change rejected; still serving the previous snapshot"
    );
    shared.reject(Rejection {
        at: SystemTime::now(),
        revision,
        errors,
    });
}

/// Runs the reload loop until the channel closes or `shutdown`.
pub async fn run(
    mut rx: mpsc::Receiver<StateEvent>,
    shared: Arc<Shared>,
    serials: SerialStore,
    shutdown: CancellationToken,
) {
    let mut last: Option<Inputs> = None;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(e) => e, None => return },
            _ = shutdown.cancelled() => return,
        };
        match ev {
            StateEvent::Unreadable { revision, errors } => {
                reject(
                    shared.as_ref(),
                    revision,
                    errors.iter().map(ToString::to_string).collect(),
                );
            }
            StateEvent::Candidate(inputs) => {
                if last.as_ref().is_some_and(|l| {
                    l.kind == inputs.kind
                        && l.zones == inputs.zones
                        && l.state_text == inputs.state_text
                        && l.etcd == inputs.etcd
                }) {
                    continue;
                }
                let shared2 = shared.clone();
                let serials2 = serials.clone();
                let inputs2 = inputs.clone();
                // Compiling a large zone takes a while: keep it off the async workers.
                let res =
                    tokio::task::spawn_blocking(move || apply(&shared2, &inputs2, &serials2)).await;
                match res {
                    Ok(Ok(snap)) => {
                        let serials: Vec<String> = snap
                            .serials()
                            .iter()
                            .map(|(z, (s, _))| format!("{z}={s}"))
                            .collect();
                        info!(revision = snap.revision, serials = %serials.join(","), "snapshot published");
                        last = Some(inputs);
                    }
                    Ok(Err(_)) => {}
                    Err(error) => warn!(%error, "compile task failed"),
                }
            }
        }
    }
}
