//! The reload loop: the single writer of the live snapshot.
//!
//! Sources send [`StateEvent`]s on one channel; the loop compiles each
//! candidate against the live snapshot ([`decide`]) and either publishes it
//! with one atomic swap or rejects it, logs every error and keeps serving
//! the old one.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cache::CacheDir;
use crate::config::ConfigError;
use crate::config::snapshot::{self, Inputs, SavedSerials, Snapshot, SourceKind};
use crate::shared::{Rejection, Shared};
use crate::source::StateEvent;

/// Environments whose health verdict is down (their clients fail over).
pub(crate) type Down = std::collections::BTreeSet<String>;

/// Compiles `inputs` against `prev` (the live snapshot, if any) and says
/// whether to publish the result. A change that empties a non-empty
/// configuration is refused unless the state sets `allow_empty`. File
/// snapshots are numbered by publish (files have no revision of their own).
pub(crate) fn decide(
    prev: Option<&Snapshot>,
    inputs: &Inputs,
    saved: &SavedSerials,
    down: &Down,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut snap = snapshot::compile_with_down(inputs, prev, saved, down)?;
    if let Some(p) = prev
        && !snap.routing.allow_empty
    {
        let mut refused = Vec::new();
        if !p.routing.services.is_empty() && snap.routing.services.is_empty() {
            refused.push(ConfigError::at(
                &inputs.state_source,
                "the change removes every service; set allow_empty: true to allow it",
            ));
        }
        if !p.zones.is_empty() && snap.zones.is_empty() {
            refused.push(ConfigError::at(
                &inputs.state_source,
                "the change removes every zone; set allow_empty: true in the state to allow it",
            ));
        }
        if !refused.is_empty() {
            return Err(refused);
        }
    }
    if snap.kind == SourceKind::File {
        snap.revision = prev.map_or(1, |p| p.revision + 1);
    }
    Ok(snap)
}

/// Compiles `inputs` against the live snapshot and publishes or rejects
/// (the rejection is logged, counted and kept for `status`). Returns the
/// published snapshot.
pub(crate) fn apply(
    shared: &Shared,
    inputs: &Inputs,
    cache: &CacheDir,
    down: &Down,
) -> Result<Arc<Snapshot>, Vec<ConfigError>> {
    let prev = shared.is_ready().then(|| shared.snapshot());
    // The saved serials matter for the first snapshot after a start; after
    // that the live snapshot carries them (and is saved after each publish).
    let saved = if prev.is_none() {
        cache.load_serials()
    } else {
        SavedSerials::default()
    };
    let snap = match decide(prev.as_deref(), inputs, &saved, down) {
        Ok(s) => Arc::new(s),
        Err(errors) => {
            reject(shared, inputs.revision, &errors);
            return Err(errors);
        }
    };
    shared.publish(snap.clone());
    shared.metrics.set_failover(
        snap.routing
            .environments
            .iter()
            .filter(|e| !e.failover.is_empty())
            .map(|e| e.name.as_str()),
        &snap.failed_over,
    );
    if let Err(error) = cache.save_serials(&snap.serials()) {
        warn!(%error, "could not save zone serials");
    }
    shared
        .metrics
        .serving_from_cache
        .set(i64::from(snap.kind == SourceKind::Cache));
    if snap.kind == SourceKind::Etcd
        && let Err(error) = cache.save_prefix(inputs)
    {
        warn!(%error, "could not save the last-known-good state");
    }
    Ok(snap)
}

/// Logs, counts and records a refused candidate.
pub(crate) fn reject(shared: &Shared, revision: u64, errors: &[ConfigError]) {
    for e in errors {
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
        errors: errors.iter().map(ToString::to_string).collect(),
    });
}

/// True when `new` is what was last published: the loop skips it (a
/// watch event that changed nothing the compiler reads).
fn unchanged(last: Option<&Inputs>, new: &Inputs) -> bool {
    last.is_some_and(|l| {
        l.kind == new.kind
            && l.zones == new.zones
            && l.state_text == new.state_text
            && l.keyed == new.keyed
    })
}

/// [`apply`], off the async workers: compiling a large zone takes a while.
/// On the multi-thread runtime the loop's own thread compiles (the
/// runtime hands its other tasks to another thread), which saves a thread
/// hand-off each way on every change; elsewhere a blocking thread does.
async fn compile_off_the_workers(
    shared: &Arc<Shared>,
    inputs: &Inputs,
    cache: &CacheDir,
    down: &Down,
) -> Result<Result<Arc<Snapshot>, Vec<ConfigError>>, tokio::task::JoinError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Ok(tokio::task::block_in_place(|| {
            apply(shared, inputs, cache, down)
        }));
    }
    let (shared, cache, inputs, down) =
        (shared.clone(), cache.clone(), inputs.clone(), down.clone());
    tokio::task::spawn_blocking(move || apply(&shared, &inputs, &cache, &down)).await
}

/// Runs the reload loop until the channel closes or `shutdown`. `last` is
/// what was published before the loop started, if anything.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<StateEvent>,
    shared: Arc<Shared>,
    cache: CacheDir,
    shutdown: CancellationToken,
    mut last: Option<Inputs>,
) {
    let mut down = Down::new();
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(e) => e, None => return },
            () = shutdown.cancelled() => return,
        };
        let inputs = match ev {
            StateEvent::Unreadable { revision, errors } => {
                reject(&shared, revision, &errors);
                continue;
            }
            StateEvent::Candidate(inputs) if unchanged(last.as_ref(), &inputs) => continue,
            StateEvent::Candidate(inputs) => inputs,
            // A health verdict changed: the same inputs, failed over anew.
            StateEvent::Down(now) if now == down => continue,
            StateEvent::Down(now) => {
                down = now;
                let Some(inputs) = last.clone() else { continue };
                info!(down = ?down, "health verdicts changed; recompiling for failover");
                inputs
            }
        };
        let res = compile_off_the_workers(&shared, &inputs, &cache, &down).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::snapshot::ZoneText;
    use crate::proto::name::Name;

    const ZONE: &str = "$TTL 300\n@ SOA ns h 1 1 1 1 60\n@ NS ns\nns A 192.0.2.1\n";
    const STATE: &str = "environments:\n  prod:\n    backend_version: v1\n    names: [prod.example.com.]\n    addresses: [192.0.2.10]\n    api_base_url: https://prod.example.com/\nservices:\n  api:\n    hostnames: [api.example.com.]\n    legacy_sdk_version: 0.9.0\n    rules:\n      - name: all\n        environment: prod\n";

    fn inputs(zone: Option<&str>, state: &str) -> Inputs {
        Inputs {
            zones: zone
                .map(|z| ZoneText {
                    source: "example.com.zone".into(),
                    origin: Name::parse("example.com.", None).unwrap(),
                    text: z.into(),
                })
                .into_iter()
                .collect(),
            state_source: "state.yaml".into(),
            state_text: state.into(),
            keyed: None,
            revision: 7,
            kind: SourceKind::File,
        }
    }

    #[test]
    fn publishes_a_valid_candidate_and_numbers_file_revisions() {
        let first = decide(
            None,
            &inputs(Some(ZONE), STATE),
            &SavedSerials::default(),
            &Down::new(),
        )
        .unwrap();
        assert_eq!(first.revision, 1, "file snapshots count publishes");
        let second = decide(
            Some(&first),
            &inputs(Some(ZONE), STATE),
            &SavedSerials::default(),
            &Down::new(),
        )
        .unwrap();
        assert_eq!(second.revision, 2);
    }

    #[test]
    fn rejects_an_invalid_candidate_with_every_error() {
        let bad = STATE.replace("environment: prod", "environment: nope");
        let errors = decide(
            None,
            &inputs(Some("$TTL x\n"), &bad),
            &SavedSerials::default(),
            &Down::new(),
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.source == "state.yaml"
                    && e.message.contains("unknown environment 'nope'")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.source == "example.com.zone" && e.line == Some(1)),
            "{errors:?}"
        );
    }

    #[test]
    fn refuses_to_empty_a_live_configuration() {
        let live = decide(
            None,
            &inputs(Some(ZONE), STATE),
            &SavedSerials::default(),
            &Down::new(),
        )
        .unwrap();
        let errors = decide(
            Some(&live),
            &inputs(Some(ZONE), ""),
            &SavedSerials::default(),
            &Down::new(),
        )
        .unwrap_err();
        assert!(
            errors[0].message.contains("removes every service"),
            "{errors:?}"
        );
        let errors = decide(
            Some(&live),
            &inputs(None, ""),
            &SavedSerials::default(),
            &Down::new(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let allowed = decide(
            Some(&live),
            &inputs(None, "allow_empty: true\n"),
            &SavedSerials::default(),
            &Down::new(),
        );
        assert!(allowed.is_ok());
        // Nothing to compare with before the first publish.
        assert!(
            decide(
                None,
                &inputs(None, ""),
                &SavedSerials::default(),
                &Down::new()
            )
            .is_ok()
        );
    }

    #[test]
    fn keeps_serving_when_inputs_did_not_change() {
        let a = inputs(Some(ZONE), STATE);
        let mut b = a.clone();
        b.revision = 8;
        assert!(
            unchanged(Some(&a), &b),
            "a new revision alone is not a change"
        );
        b.state_text.push_str("# comment\n");
        assert!(!unchanged(Some(&a), &b));
        assert!(!unchanged(None, &a));
    }
}
