//! The edge registry: each edge keeps a record of what it serves under
//! `<prefix>-edges/<edge-id>`, held by a lease so a dead edge disappears.
//! `status` reads these records.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::client::EtcdConfig;
use crate::backoff::{Backoff, sleep_or_stop};
use crate::shared::Shared;

/// What an edge publishes about itself under `<prefix>-edges/<edge-id>`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct EdgeRecord {
    pub(crate) edge: String,
    pub(crate) http: String,
    pub(crate) dns: String,
    /// The admin listener (`/census`, `/metrics`); absent in records of
    /// edges older than the admin listener.
    #[serde(default)]
    pub(crate) admin: Option<String>,
    pub(crate) revision: u64,
    pub(crate) source: String,
    pub(crate) serials: std::collections::BTreeMap<String, u32>,
    pub(crate) last_rejection: Option<RejectionRecord>,
    pub(crate) updated: String,
    /// This edge's health observations by environment (true: up).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) health: std::collections::BTreeMap<String, bool>,
    /// Environments this edge answers failed over: to the named one, or
    /// `null` while failing open (every candidate down).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) failed_over: std::collections::BTreeMap<String, Option<String>>,
}

/// The last change an edge refused, as registered.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RejectionRecord {
    pub(crate) at: String,
    pub(crate) revision: u64,
    pub(crate) errors: Vec<String>,
}

/// The live edges' records, by edge id.
pub(crate) async fn read_edges(
    client: &mut Client,
    cfg: &EtcdConfig,
) -> Result<Vec<EdgeRecord>, super::EtcdError> {
    let resp = client
        .get(
            cfg.edges_dir(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    let mut edges: Vec<EdgeRecord> = resp
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    edges.sort_by(|a, b| a.edge.cmp(&b.edge));
    Ok(edges)
}

/// Who this edge is and where it listens.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    /// `--edge-id`, or `host:http-port`.
    pub(crate) id: String,
    /// The public HTTP address.
    pub(crate) http: String,
    /// The DNS address.
    pub(crate) dns: String,
    /// The admin address (`status` fetches `/census` from it).
    pub(crate) admin: String,
}

/// What this edge registers now.
fn record(edge: &Edge, shared: &Shared) -> EdgeRecord {
    let snap = shared.snapshot();
    EdgeRecord {
        edge: edge.id.clone(),
        http: edge.http.clone(),
        dns: edge.dns.clone(),
        admin: Some(edge.admin.clone()),
        revision: snap.revision,
        source: snap.kind.as_str().into(),
        serials: snap
            .serials()
            .into_iter()
            .map(|(k, (s, _))| (k, s))
            .collect(),
        last_rejection: shared
            .last_rejection
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|r| RejectionRecord {
                at: crate::util::rfc3339(r.at),
                revision: r.revision,
                errors: r.errors.clone(),
            }),
        updated: crate::util::rfc3339_now(),
        health: shared.health.lock().expect("not poisoned").observed.clone(),
        failed_over: snap.failed_over.clone(),
    }
}

/// Keeps this edge's registration under a lease and up to date with what
/// it serves, until `shutdown` (then revokes the lease).
pub(crate) async fn register(
    cfg: EtcdConfig,
    mut client: Client,
    edge: Edge,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    const TTL: i64 = 10;
    let key = format!("{}{}", cfg.edges_dir(), edge.id);
    let mut changes = shared.subscribe();
    let mut backoff = Backoff::new();
    'outer: loop {
        let lease = match client.lease_grant(TTL, None).await {
            Ok(l) => l.id(),
            Err(error) => {
                debug!(%error, "lease grant failed");
                if sleep_or_stop(backoff.delay(), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let Ok((mut keeper, mut acks)) = client.lease_keep_alive(lease).await else {
            continue;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(3));
        loop {
            // (Re)write the record when something changed, and on every tick.
            let record = record(&edge, &shared);
            let value = serde_json::to_string(&record).expect("serializable");
            if let Err(error) = client
                .put(
                    key.as_str(),
                    value,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
            {
                debug!(%error, "edge registration failed");
                if sleep_or_stop(backoff.delay(), &shutdown).await {
                    return;
                }
                continue 'outer;
            }
            tokio::select! {
                _ = tick.tick() => {
                    if keeper.keep_alive().await.is_err() {
                        continue 'outer;
                    }
                    match tokio::time::timeout(Duration::from_secs(2), acks.message()).await {
                        Ok(Ok(Some(a))) if a.ttl() > 0 => {}
                        // The lease expired (etcd was away too long): a new one.
                        _ => continue 'outer,
                    }
                }
                _ = changes.changed() => {}
                () = shared.health_changed.notified() => {}
                _ = shutdown.cancelled() => {
                    let _ = client.lease_revoke(lease).await;
                    return;
                }
            }
        }
    }
}
