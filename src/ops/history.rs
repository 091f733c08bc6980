//! `vdh-edge history`: the versions of `meta/change` (the audit trail),
//! newest first, filtered by actor, key and time; `history show REV`, the
//! fields one change changed; `history --follow`, new changes as they
//! are written.

use std::fmt::Write as _;

use serde::Serialize;

use super::{UsageError, require_etcd};
use crate::cli::HistoryArgs;
use crate::etcd::EtcdConfig;
use crate::etcd::client::is_out_of_range;
use crate::etcd::meta::{self, ChangeRecord};
use crate::etcd::plan::field_diff;
use crate::etcd::prefix::read_with_retry;

/// One entry of `history`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HistoryEntry {
    /// The revision the change was written at.
    pub(crate) revision: i64,
    /// Who, when, what.
    #[serde(flatten)]
    pub(crate) change: ChangeRecord,
}

/// Most versions of `meta/change` one listing reads while filtering.
const MAX_SCAN: usize = 10_000;

/// Reads the versions of `meta/change`, newest first.
pub(crate) async fn read_history(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    limit: usize,
) -> anyhow::Result<(Vec<HistoryEntry>, bool)> {
    read_history_where(client, cfg, limit, |_| true).await
}

/// Reads the versions of `meta/change` that `keep`, newest first, up to
/// `limit` of them (scanning at most [`MAX_SCAN`]).
async fn read_history_where(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    limit: usize,
    keep: impl Fn(&HistoryEntry) -> bool,
) -> anyhow::Result<(Vec<HistoryEntry>, bool)> {
    let mut out = Vec::new();
    let mut scanned = 0;
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
            let e = HistoryEntry {
                revision: rev,
                change,
            };
            if keep(&e) {
                out.push(e);
            }
        }
        scanned += 1;
        if rev <= 1 || scanned >= MAX_SCAN {
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
    if let Some(rev) = args.revision {
        return show(&mut client, &cfg, rev, args.json).await;
    }
    let since = time_arg("--since", args.since.as_deref())?;
    let until = time_arg("--until", args.until.as_deref())?;
    let keep = |e: &HistoryEntry| {
        let t = crate::util::parse_rfc3339(&e.change.time);
        args.actor.as_ref().is_none_or(|a| &e.change.actor == a)
            && args
                .key
                .as_ref()
                .is_none_or(|k| e.change.keys.iter().any(|x| x == k))
            && since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t < u))
    };
    if args.follow {
        return follow(&mut client, &cfg, args.json, keep).await;
    }
    let (entries, truncated) = read_history_where(&mut client, &cfg, args.limit, keep).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&entries).expect("serializable"));
    }
    Ok(render(&cfg.dir(), &entries, truncated))
}

/// Parses an RFC 3339 time flag.
fn time_arg(flag: &str, v: Option<&str>) -> anyhow::Result<Option<std::time::SystemTime>> {
    v.map(|t| {
        crate::util::parse_rfc3339(t).ok_or_else(|| {
            anyhow::Error::from(UsageError(format!(
                "{flag} {t}: not an RFC 3339 time such as 2026-12-01T09:00:00Z"
            )))
        })
    })
    .transpose()
}

/// `history show REV`: the change written at REV and, key by key, the
/// fields it changed.
async fn show(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    rev: i64,
    json: bool,
) -> anyhow::Result<String> {
    let key = cfg.key(meta::CHANGE);
    let none = || {
        anyhow::anyhow!("no vdh-edge change was written at revision {rev} (see `vdh-edge history`)")
    };
    let opts = etcd_client::GetOptions::new().with_revision(rev.max(1));
    let resp = match client.get(key.as_str(), Some(opts)).await {
        Ok(r) => r,
        // A future or compacted revision holds no change to show.
        Err(e) if is_out_of_range(&e) => return Err(none()),
        Err(e) => return Err(crate::etcd::EtcdError::from(e).into()),
    };
    let entry = resp
        .kvs()
        .first()
        .filter(|kv| kv.mod_revision() == rev)
        .and_then(|kv| serde_json::from_slice::<ChangeRecord>(kv.value()).ok())
        .ok_or_else(none)?;
    let changes = field_changes(client, cfg, rev).await?;
    let entry = HistoryEntry {
        revision: rev,
        change: entry,
    };
    if json {
        let v = serde_json::json!({ "entry": entry, "changes": changes });
        return Ok(serde_json::to_string_pretty(&v).expect("serializable"));
    }
    let mut out = render(&cfg.dir(), std::slice::from_ref(&entry), false);
    for c in changes {
        let _ = writeln!(out, "  {c}");
    }
    Ok(out)
}

/// The fields the change written at `rev` changed, key by key (`~ key:
/// field: old → new`, `+ key`, `- key`).
pub(crate) async fn field_changes(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    rev: i64,
) -> anyhow::Result<Vec<String>> {
    let before = read_with_retry(client, cfg, rev - 1).await?;
    let after = read_with_retry(client, cfg, rev).await?;
    let mut changes = Vec::new();
    let keys: std::collections::BTreeSet<&String> = before
        .entries
        .keys()
        .chain(after.entries.keys())
        .filter(|k| k.as_str() != meta::CHANGE)
        .collect();
    for k in keys {
        match (before.entries.get(k), after.entries.get(k)) {
            (Some(a), Some(b)) => {
                for d in field_diff(&a.value, &b.value) {
                    changes.push(format!("~ {k}: {d}"));
                }
            }
            (None, Some(_)) => changes.push(format!("+ {k}")),
            (Some(_), None) => changes.push(format!("- {k}")),
            (None, None) => {}
        }
    }
    Ok(changes)
}

/// `history --follow`: prints each new change as it is written, until
/// interrupted.
async fn follow(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    json: bool,
    keep: impl Fn(&HistoryEntry) -> bool,
) -> anyhow::Result<String> {
    use std::io::Write;
    let key = cfg.key(meta::CHANGE);
    let mut stream = client
        .watch(key.as_str(), None)
        .await
        .map_err(crate::etcd::EtcdError::from)?;
    let mut stdout = std::io::stdout();
    loop {
        let resp = tokio::select! {
            r = stream.message() => r.map_err(crate::etcd::EtcdError::from)?,
            _ = tokio::signal::ctrl_c() => return Ok(String::new()),
        };
        let Some(resp) = resp else {
            return Err(anyhow::anyhow!("the etcd watch ended"));
        };
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(change) = serde_json::from_slice::<ChangeRecord>(kv.value()) else {
                continue;
            };
            let e = HistoryEntry {
                revision: kv.mod_revision(),
                change,
            };
            if !keep(&e) {
                continue;
            }
            if json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string(&e).expect("serializable")
                );
            } else {
                let _ = write!(
                    stdout,
                    "{}",
                    render(&cfg.dir(), std::slice::from_ref(&e), false)
                );
            }
            let _ = stdout.flush();
        }
    }
}

/// The text `history` prints.
fn render(dir: &str, entries: &[HistoryEntry], truncated: bool) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        let _ = writeln!(out, "no changes recorded by vdh-edge under {dir}");
    }
    for e in entries {
        let why = e
            .change
            .reason
            .as_deref()
            .map_or(String::new(), |r| format!("  reason: {r}"));
        let ticket = e
            .change
            .ticket
            .as_deref()
            .map_or(String::new(), |t| format!("  ticket: {t}"));
        let actor = if e.change.actor.is_empty() || e.change.actor == e.change.user {
            String::new()
        } else {
            format!(" as {}", e.change.actor)
        };
        let _ = writeln!(
            out,
            "{:>8}  {}  {}@{}{actor}  {}{why}{ticket}",
            e.revision, e.change.time, e.change.user, e.change.host, e.change.summary
        );
    }
    if truncated {
        out.push_str("(older changes were compacted)\n");
    }
    out
}
