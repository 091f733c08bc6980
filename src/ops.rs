//! Operator commands against etcd: `apply`, `status`, `history`,
//! `rollback`. Every write goes through [`crate::store::Plan::commit`]: one
//! transaction, compared on every key read, with a `meta/change` record.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow};
use serde::Serialize;

use crate::cli::{ApplyArgs, HistoryArgs, RollbackArgs, SourceArgs, StatusArgs, WriteArgs};
use crate::snapshot::{self, Inputs, SourceKind};
use crate::source::etcd::EdgeRecord;
use crate::store::{ChangeRecord, EtcdConfig, Entry, Plan, PrefixState, StoreError, entries_from_raw, plan};

/// A usage problem (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn etcd(args: &SourceArgs, command: &str) -> anyhow::Result<EtcdConfig> {
    args.etcd_config().ok_or_else(|| UsageError(format!("{command} needs --etcd URLS (and --prefix if not /vdh-edge)")).into())
}

/// Asks on the terminal, or requires `--yes` without one.
pub fn confirm(write: &WriteArgs, question: &str) -> anyhow::Result<bool> {
    if write.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError("not a terminal: add --yes to confirm the change".into()).into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Validates a would-be prefix content with the same compiler the edges use.
fn validate(cfg: &EtcdConfig, zones_dir: Option<&std::path::PathBuf>, entries: BTreeMap<String, Entry>) -> anyhow::Result<()> {
    let p = PrefixState { revision: 0, cluster_id: 0, entries };
    let inputs: Inputs = crate::source::etcd::inputs_from(cfg, zones_dir, &p, SourceKind::Etcd).map_err(|e| invalid(&e))?;
    snapshot::compile(&inputs, None, &Default::default()).map_err(|e| invalid(&e))?;
    Ok(())
}

fn invalid(errors: &[snapshot::ConfigError]) -> anyhow::Error {
    crate::app::AppError::Invalid(errors.iter().map(ToString::to_string).collect()).into()
}

fn zones_dir(args: &SourceArgs) -> Option<std::path::PathBuf> {
    args.zones.is_dir().then(|| args.zones.clone())
}

/// The entries a plan would leave.
fn after(current: &PrefixState, p: &Plan) -> BTreeMap<String, Entry> {
    let mut e = current.entries.clone();
    for op in &p.ops {
        match op {
            crate::store::Op::Put { key, value } => {
                e.insert(key.clone(), Entry { value: value.clone(), mod_revision: current.revision + 1 });
            }
            crate::store::Op::Delete { key } => {
                e.remove(key);
            }
        }
    }
    e
}

/// Writes a plan after showing it and asking; returns the new revision.
async fn write_plan(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    current: &PrefixState,
    p: &Plan,
    write: &WriteArgs,
    command: &str,
    summary: String,
) -> anyhow::Result<Option<i64>> {
    let lines = p.summary_lines(current);
    eprintln!("{} at revision {}: {} key(s) change", cfg.dir(), current.revision, lines.len());
    for l in &lines {
        eprintln!("  {l}");
    }
    if !confirm(write, "write this change?")? {
        eprintln!("nothing written");
        return Ok(None);
    }
    let change = ChangeRecord::now(command, summary);
    match p.commit(client, cfg, &change, &[], write.force).await {
        Ok(rev) => Ok(Some(rev)),
        Err(StoreError::Conflict) => Err(anyhow!(
            "refused: etcd changed since revision {} (another writer, or a key read was changed or deleted); nothing was written. Run again to apply on top of the new state, or add --force",
            current.revision
        )),
        Err(e) => Err(e.into()),
    }
}

fn command_line() -> String {
    std::env::args().skip(1).filter(|a| !a.contains("password")).collect::<Vec<_>>().join(" ")
}

/// `vdh-edge apply FILE`.
pub async fn apply(args: &ApplyArgs) -> anyhow::Result<String> {
    let cfg = etcd(&args.source, "apply")?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("{}: cannot read", args.file.display()))?;
    let raw = crate::state::from_yaml(&text).map_err(|e| {
        let at = e.line.map_or(String::new(), |l| format!(":{l}"));
        crate::app::AppError::Invalid(vec![format!("{}{at}: {}", args.file.display(), e.message)])
    })?;
    let mut client = cfg.connect().await?;
    let current = PrefixState::read(&mut client, &cfg, args.base_revision.unwrap_or(0)).await?;
    let mut desired = entries_from_raw(&raw);
    let mut owned = vec!["environments/", "services/", "meta/allow_empty"];
    let zdir = zones_dir(&args.source);
    if args.upload_zones {
        let dir = zdir.clone().ok_or_else(|| UsageError(format!("--upload-zones: {} is not a folder", args.source.zones.display())))?;
        let files = crate::source::FileSource { zones_dir: dir, state_file: None }.read(0).map_err(|e| invalid(&e))?;
        for z in files.zones {
            desired.insert(format!("zones/{}", z.origin.to_lower()), z.text);
        }
        owned.push("zones/");
    }
    let p = plan(&current, &desired, &owned);
    // Validate what the edges would see, with file errors named by file.
    let after_entries = after(&current, &p);
    if let Err(e) = validate(&cfg, zdir.as_ref(), after_entries) {
        // Re-run the file-based validation for line numbers when possible.
        let inputs = Inputs {
            zones: crate::source::etcd::inputs_from(&cfg, zdir.as_ref(), &current, SourceKind::Etcd).map(|i| i.zones).unwrap_or_default(),
            state_source: args.file.display().to_string(),
            state_text: text.clone(),
            etcd: None,
            revision: 0,
            kind: SourceKind::File,
        };
        if let Err(errors) = snapshot::compile(&inputs, None, &Default::default()) {
            return Err(invalid(&errors));
        }
        return Err(e);
    }
    if p.ops.is_empty() {
        return Ok(format!("nothing to change: {} already holds this state (revision {})", cfg.dir(), current.revision));
    }
    if args.dry_run {
        let lines = p.summary_lines(&current);
        return Ok(format!("dry run: {} key(s) would change at revision {}\n  {}", lines.len(), current.revision, lines.join("\n  ")));
    }
    let summary = format!("apply {}: {}", args.file.display(), p.summary_lines(&current).join(", "));
    match write_plan(&mut client, &cfg, &current, &p, &args.write, &command_line(), summary).await? {
        Some(rev) => Ok(format!("applied: revision {rev}")),
        None => Ok(String::new()),
    }
}

/// `vdh-edge rollback --to-revision R`.
pub async fn rollback(args: &RollbackArgs) -> anyhow::Result<String> {
    let cfg = etcd(&args.source, "rollback")?;
    let mut client = cfg.connect().await?;
    let old = PrefixState::read(&mut client, &cfg, args.to_revision).await.map_err(|e| match e {
        StoreError::Compacted { wanted, oldest } => {
            anyhow!("revision {wanted} was compacted and cannot be restored; the oldest revision available is {oldest} (see `vdh-edge status`)")
        }
        other => other.into(),
    })?;
    let current = PrefixState::read(&mut client, &cfg, 0).await?;
    if args.to_revision > current.revision {
        return Err(UsageError(format!("revision {} is in the future (latest is {})", args.to_revision, current.revision)).into());
    }
    let owned = ["environments/", "services/", "zones/", "meta/allow_empty", "meta/scheme"];
    let desired: BTreeMap<String, String> = old
        .entries
        .iter()
        .filter(|(k, _)| owned.iter().any(|o| k.starts_with(o)))
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect();
    let p = plan(&current, &desired, &owned);
    validate(&cfg, zones_dir(&args.source).as_ref(), after(&current, &p))?;
    if p.ops.is_empty() {
        return Ok(format!("nothing to change: the live state already equals revision {}", args.to_revision));
    }
    let summary = format!("rollback to revision {}: {}", args.to_revision, p.summary_lines(&current).join(", "));
    match write_plan(&mut client, &cfg, &current, &p, &args.write, &command_line(), summary).await? {
        Some(rev) => Ok(format!("rolled back to the state of revision {}: new revision {rev}", args.to_revision)),
        None => Ok(String::new()),
    }
}

/// One entry of `history`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub revision: i64,
    #[serde(flatten)]
    pub change: ChangeRecord,
}

/// Reads the versions of `meta/change`, newest first.
pub async fn read_history(client: &mut etcd_client::Client, cfg: &EtcdConfig, limit: usize) -> anyhow::Result<(Vec<HistoryEntry>, bool)> {
    let mut out = Vec::new();
    let key = cfg.key("meta/change");
    let mut at = 0i64;
    let mut truncated = false;
    while out.len() < limit {
        let opts = (at > 0).then(|| etcd_client::GetOptions::new().with_revision(at));
        let resp = match client.get(key.as_str(), opts).await {
            Ok(r) => r,
            Err(e) if e.to_string().contains("compacted") => {
                truncated = true;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(kv) = resp.kvs().first() else { break };
        let rev = kv.mod_revision();
        if let Ok(change) = serde_json::from_slice::<ChangeRecord>(kv.value()) {
            out.push(HistoryEntry { revision: rev, change });
        }
        if rev <= 1 {
            break;
        }
        at = rev - 1;
    }
    Ok((out, truncated))
}

/// `vdh-edge history`.
pub async fn history(args: &HistoryArgs) -> anyhow::Result<String> {
    let cfg = etcd(&args.source, "history")?;
    let mut client = cfg.connect().await?;
    let (entries, truncated) = read_history(&mut client, &cfg, args.limit).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&entries).expect("serializable"));
    }
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no changes recorded by vdh-edge under ");
        out.push_str(&cfg.dir());
        out.push('\n');
    }
    for e in &entries {
        out.push_str(&format!("{:>8}  {}  {}@{}  {}\n", e.revision, e.change.time, e.change.user, e.change.host, e.change.summary));
    }
    if truncated {
        out.push_str("(older changes were compacted)\n");
    }
    Ok(out)
}

/// What `status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub prefix: String,
    /// etcd's current revision.
    pub revision: i64,
    /// The newest revision that wrote under the prefix: what edges should serve.
    pub prefix_revision: i64,
    /// When the last vdh-edge change was written, and its age in seconds.
    pub last_change: Option<HistoryEntry>,
    pub last_change_age_s: Option<u64>,
    pub scheme: Option<serde_json::Value>,
    pub edges: Vec<EdgeRecord>,
    /// The newest rejection any live edge reports.
    pub last_rejection: Option<(String, crate::source::etcd::RejectionRecord)>,
    /// The oldest revision `rollback --to-revision` can restore.
    pub oldest_revision: i64,
}

/// Reads everything `status` shows.
pub async fn read_status(client: &mut etcd_client::Client, cfg: &EtcdConfig) -> anyhow::Result<Status> {
    let current = PrefixState::read(client, cfg, 0).await?;
    let (hist, _) = read_history(client, cfg, 1).await?;
    let last_change = hist.into_iter().next();
    let age = last_change
        .as_ref()
        .and_then(|h| crate::util::parse_rfc3339(&h.change.time))
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    let scheme = current.entries.get("meta/scheme").and_then(|e| serde_json::from_str(&e.value).ok());
    let resp = client.get(cfg.edges_dir(), Some(etcd_client::GetOptions::new().with_prefix())).await?;
    let mut edges: Vec<EdgeRecord> = resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect();
    edges.sort_by(|a, b| a.edge.cmp(&b.edge));
    let last_rejection = edges
        .iter()
        .filter_map(|e| e.last_rejection.clone().map(|r| (e.edge.clone(), r)))
        .max_by(|a, b| a.1.at.cmp(&b.1.at));
    let oldest_revision = crate::store::oldest_revision(client, cfg).await?;
    let prefix_revision = current.entries.values().map(|e| e.mod_revision).max().unwrap_or(0);
    Ok(Status {
        prefix: cfg.dir(),
        revision: current.revision,
        prefix_revision,
        last_change,
        last_change_age_s: age,
        scheme,
        edges,
        last_rejection,
        oldest_revision,
    })
}

/// `vdh-edge status`.
pub async fn status(args: &StatusArgs) -> anyhow::Result<String> {
    let cfg = etcd(&args.source, "status")?;
    let mut client = cfg.connect().await?;
    let s = read_status(&mut client, &cfg).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&s).expect("serializable"));
    }
    let mut out = String::new();
    out.push_str(&format!("prefix {}  live revision {} (etcd at {})\n", s.prefix, s.prefix_revision, s.revision));
    match &s.last_change {
        Some(h) => out.push_str(&format!(
            "last change: revision {} at {} ({} s ago) by {}@{}: {}\n",
            h.revision,
            h.change.time,
            s.last_change_age_s.unwrap_or(0),
            h.change.user,
            h.change.host,
            h.change.summary
        )),
        None => out.push_str("last change: none recorded by vdh-edge\n"),
    }
    if let Some(sc) = &s.scheme {
        out.push_str(&format!("scheme: {sc}\n"));
    }
    out.push_str(&format!("edges: {}\n", s.edges.len()));
    for e in &s.edges {
        let rejected_newer = e.last_rejection.as_ref().is_some_and(|r| r.revision as i64 >= s.prefix_revision);
        let lag = if e.revision as i64 >= s.prefix_revision {
            String::new()
        } else if rejected_newer {
            "  (kept its snapshot: the newer change was rejected)".to_string()
        } else {
            format!("  (behind: live is {})", s.prefix_revision)
        };
        out.push_str(&format!("  {}  http {}  dns {}  revision {}  source {}  updated {}{lag}\n", e.edge, e.http, e.dns, e.revision, e.source, e.updated));
    }
    match &s.last_rejection {
        Some((edge, r)) => {
            out.push_str(&format!("last rejected change: revision {} at {} (reported by {edge}):\n", r.revision, r.at));
            for e in &r.errors {
                out.push_str(&format!("  {e}\n"));
            }
        }
        None => out.push_str("last rejected change: none\n"),
    }
    out.push_str(&format!("oldest revision for rollback: {}\n", s.oldest_revision));
    Ok(out)
}
