//! `vdh-edge history`: the versions of `meta/change`, newest first.

use std::fmt::Write as _;

use serde::Serialize;

use super::require_etcd;
use crate::cli::HistoryArgs;
use crate::etcd::EtcdConfig;
use crate::etcd::client::is_out_of_range;
use crate::etcd::meta::{self, ChangeRecord};

/// One entry of `history`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HistoryEntry {
    /// The revision the change was written at.
    pub(crate) revision: i64,
    /// Who, when, what.
    #[serde(flatten)]
    pub(crate) change: ChangeRecord,
}

/// Reads the versions of `meta/change`, newest first.
pub(crate) async fn read_history(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    limit: usize,
) -> anyhow::Result<(Vec<HistoryEntry>, bool)> {
    let mut out = Vec::new();
    let key = cfg.key(meta::CHANGE);
    let mut at = 0i64;
    let mut truncated = false;
    while out.len() < limit {
        let opts = (at > 0).then(|| etcd_client::GetOptions::new().with_revision(at));
        let resp = match client.get(key.as_str(), opts).await {
            Ok(r) => r,
            // Older versions than `at` (< the latest) were compacted away.
            Err(e) if is_out_of_range(&e) => {
                truncated = true;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(kv) = resp.kvs().first() else { break };
        let rev = kv.mod_revision();
        if let Ok(change) = serde_json::from_slice::<ChangeRecord>(kv.value()) {
            out.push(HistoryEntry {
                revision: rev,
                change,
            });
        }
        if rev <= 1 {
            break;
        }
        at = rev - 1;
    }
    Ok((out, truncated))
}

/// `vdh-edge history`.
pub(crate) async fn history(args: &HistoryArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "history")?;
    let mut client = cfg.connect_live().await?;
    let (entries, truncated) = read_history(&mut client, &cfg, args.limit).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&entries).expect("serializable"));
    }
    Ok(render(&cfg.dir(), &entries, truncated))
}

/// The text `history` prints.
fn render(dir: &str, entries: &[HistoryEntry], truncated: bool) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        let _ = writeln!(out, "no changes recorded by vdh-edge under {dir}");
    }
    for e in entries {
        let _ = writeln!(
            out,
            "{:>8}  {}  {}@{}  {}",
            e.revision, e.change.time, e.change.user, e.change.host, e.change.summary
        );
    }
    if truncated {
        out.push_str("(older changes were compacted)\n");
    }
    out
}
