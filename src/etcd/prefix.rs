//! Reading a prefix as a whole: [`PrefixState`] at one revision, retried
//! through elections, and the oldest revision etcd still holds.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};

use super::client::{EtcdConfig, EtcdError, Retry, is_out_of_range};
use crate::config::keyed::Entry;

/// The prefix as read at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrefixState {
    pub(crate) revision: i64,
    pub(crate) cluster_id: u64,
    /// By key relative to the prefix (`environments/prod`).
    pub(crate) entries: BTreeMap<String, Entry>,
}

impl PrefixState {
    /// The revision of what the prefix holds: the newest `mod_revision` of
    /// its keys (every vdh-edge write touches `meta/change`), or the read
    /// revision when it is empty. Unlike the read revision it does not move
    /// with writes elsewhere in etcd, so every edge and every command give
    /// the same number for the same content.
    pub(crate) fn content_revision(&self) -> i64 {
        self.entries
            .values()
            .map(|e| e.mod_revision)
            .max()
            .unwrap_or(self.revision)
    }

    /// Reads `<prefix>/` at `revision` (0: the latest).
    pub(crate) async fn read(
        client: &mut Client,
        cfg: &EtcdConfig,
        revision: i64,
    ) -> Result<PrefixState, EtcdError> {
        let mut opts = GetOptions::new().with_prefix();
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = match client.get(cfg.dir(), Some(opts)).await {
            Ok(r) => r,
            Err(e) if revision > 0 && is_out_of_range(&e) => {
                return Err(out_of_range(client, cfg, revision).await);
            }
            Err(e) => return Err(e.into()),
        };
        let header = resp.header().ok_or(EtcdError::NoHeader)?;
        let dir = cfg.dir();
        let mut entries = BTreeMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let Some(rel) = key.strip_prefix(&dir) else {
                continue;
            };
            entries.insert(
                rel.to_string(),
                Entry {
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    mod_revision: kv.mod_revision(),
                },
            );
        }
        Ok(PrefixState {
            revision: if revision > 0 {
                revision
            } else {
                header.revision()
            },
            cluster_id: header.cluster_id(),
            entries,
        })
    }

    /// Zone texts stored in etcd, by origin.
    pub(crate) fn zones(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| k.strip_prefix("zones/").map(|o| (o, e)))
    }
}

/// etcd answers `OutOfRange` both for a revision compacted away and for one
/// not written yet: the latest revision tells which.
async fn out_of_range(client: &mut Client, cfg: &EtcdConfig, wanted: i64) -> EtcdError {
    let latest = client
        .get(
            cfg.dir(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .ok()
        .and_then(|r| r.header().map(etcd_client::ResponseHeader::revision));
    match latest {
        Some(latest) if wanted > latest => EtcdError::FutureRevision { wanted, latest },
        _ => EtcdError::Compacted {
            wanted,
            oldest: oldest_revision(client, cfg).await.unwrap_or(0),
        },
    }
}

/// Reads the prefix, retrying transient errors for up to 15 s (an election
/// takes a second or two).
pub(crate) async fn read_with_retry(
    client: &mut Client,
    cfg: &EtcdConfig,
    revision: i64,
) -> Result<PrefixState, EtcdError> {
    let mut retry = Retry::new();
    loop {
        match PrefixState::read(client, cfg, revision).await {
            Err(e) if retry.again(&e).await => {}
            other => return other,
        }
    }
}

/// The oldest revision etcd still holds (its compaction point + 1, or 1).
pub(crate) async fn oldest_revision(
    client: &mut Client,
    cfg: &EtcdConfig,
) -> Result<i64, EtcdError> {
    // Watching from revision 1 is canceled with the compaction point when
    // history was compacted; otherwise it is created and stays open.
    let opts = etcd_client::WatchOptions::new()
        .with_start_revision(1)
        .with_prefix();
    let mut stream = client.watch(cfg.dir(), Some(opts)).await?;
    let mut oldest = 1;
    // First comes `created`; a compacted start then gets `canceled`.
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_millis(800), stream.message()).await {
            Ok(Ok(Some(resp))) if resp.canceled() => {
                if resp.compact_revision() > 0 {
                    oldest = resp.compact_revision();
                }
                break;
            }
            Ok(Ok(Some(resp))) if resp.created() => continue,
            _ => break,
        }
    }
    Ok(oldest)
}
