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
use crate::store::{
    ChangeRecord, Entry, EtcdConfig, Plan, PrefixState, StoreError, entries_from_raw, plan,
};

/// A usage problem (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn etcd(args: &SourceArgs, command: &str) -> anyhow::Result<EtcdConfig> {
    args.etcd_config().ok_or_else(|| {
        UsageError(format!(
            "{command} needs --etcd URLS (and --prefix if not /vdh-edge)"
        ))
        .into()
    })
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

/// Compiles a (would-be) prefix content with the same compiler the edges use.
fn compile_entries(
    cfg: &EtcdConfig,
    zones_dir: Option<&std::path::PathBuf>,
    entries: BTreeMap<String, Entry>,
) -> anyhow::Result<snapshot::Snapshot> {
    let p = PrefixState {
        revision: 0,
        cluster_id: 0,
        entries,
    };
    let inputs: Inputs = crate::source::etcd::inputs_from(cfg, zones_dir, &p, SourceKind::Etcd)
        .map_err(|e| invalid(&e))?;
    snapshot::compile(&inputs, None, &Default::default()).map_err(|e| invalid(&e))
}

/// The A/AAAA a name answers for a resolver no network-specific rule
/// matches (the zone's static records).
pub fn static_addrs(snap: &snapshot::Snapshot, name: &crate::dns::name::Name) -> Vec<String> {
    use crate::dns::types::{A, AAAA};
    let lower = name.to_lower();
    let Some(zone) = crate::dns::answer::find_zone(&snap.zones, lower.wire(), A) else {
        return vec![];
    };
    let Some(node) = zone.lookup(lower.wire()) else {
        return vec![];
    };
    let mut out = Vec::new();
    for t in [A, AAAA] {
        for rd in node.get(t).map(|s| s.rdatas.clone()).unwrap_or_default() {
            out.push(match rd.len() {
                4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&rd[..]).unwrap()).to_string(),
                _ => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&rd[..16]).unwrap()).to_string(),
            });
        }
    }
    out
}

/// A service TTL lowered ahead of a repoint (`<prefix>/meta/ttl`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TtlLowering {
    pub old_ttl: u32,
    pub new_ttl: u32,
    pub lowered_at: String,
}

/// The drain after a shared hostname was repointed (`<prefix>/meta/drain`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Drain {
    pub names: Vec<String>,
    pub changed_at: String,
    /// The largest TTL resolvers may hold for the old answer.
    pub max_ttl: u32,
    /// changed_at + max_ttl: a lower bound on when every resolver has the
    /// new answer (TTL floors and long-lived connections can hold longer).
    pub until: String,
}

impl Drain {
    /// Seconds left, 0 when over.
    pub fn remaining_s(&self) -> u64 {
        crate::util::parse_rfc3339(&self.until)
            .and_then(|u| u.duration_since(std::time::SystemTime::now()).ok())
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

/// What a write will do beyond its keys: the preview lines, the extra meta
/// keys (TTL lowering, drain), and why it must not happen without --force.
struct Prepared {
    lines: Vec<String>,
    extra: Vec<(String, String)>,
    refusal: Option<String>,
}

/// Compiles the state before and after, and works out DNS changes, TTL
/// lowerings and the drain.
fn prepare(
    cfg: &EtcdConfig,
    zones_dir: Option<&std::path::PathBuf>,
    current: &PrefixState,
    p: &Plan,
) -> anyhow::Result<Prepared> {
    let after_entries = after(current, p);
    let after_snap = compile_entries(cfg, zones_dir, after_entries)?;
    // The live state may itself be invalid (that is why one writes); then
    // there is nothing to compare with.
    let before_snap = compile_entries(cfg, zones_dir, current.entries.clone()).ok();
    let mut lines = Vec::new();
    let mut extra = Vec::new();
    let mut refusal = None;
    let now = std::time::SystemTime::now();
    let lowered: BTreeMap<String, TtlLowering> = current
        .entries
        .get("meta/ttl")
        .and_then(|e| serde_json::from_str(&e.value).ok())
        .unwrap_or_default();
    let mut new_lowered = lowered.clone();
    let mut drained = Vec::new();
    let mut max_ttl = 0u32;
    if let Some(before) = &before_snap {
        for svc in &after_snap.routing.services {
            let Some(old_svc) = before.routing.service(&svc.name) else {
                continue;
            };
            if svc.ttl < old_svc.ttl {
                new_lowered.insert(
                    svc.name.clone(),
                    TtlLowering {
                        old_ttl: old_svc.ttl,
                        new_ttl: svc.ttl,
                        lowered_at: crate::util::rfc3339(now),
                    },
                );
                lines.push(format!(
                    "DNS TTL of {} lowered {} s → {} s",
                    svc.name, old_svc.ttl, svc.ttl
                ));
            }
            for h in &svc.hostnames {
                let (a, b) = (static_addrs(before, h), static_addrs(&after_snap, h));
                if a == b {
                    continue;
                }
                lines.push(format!("DNS {h}: {} → {}", a.join(", "), b.join(", ")));
                drained.push(h.to_string());
                let mut ttl = old_svc.ttl.max(svc.ttl);
                if let Some(l) = lowered.get(&svc.name) {
                    let held_until = crate::util::parse_rfc3339(&l.lowered_at)
                        .map(|t| t + std::time::Duration::from_secs(u64::from(l.old_ttl)));
                    if held_until.is_some_and(|u| u > now) {
                        ttl = ttl.max(l.old_ttl);
                        refusal = Some(format!(
                            "{h}: its TTL was lowered from {} s at {}; resolvers may hold the old answer until {}: repoint after that, or add --force",
                            l.old_ttl,
                            l.lowered_at,
                            crate::util::rfc3339(held_until.expect("checked"))
                        ));
                    }
                }
                max_ttl = max_ttl.max(ttl);
            }
        }
        for env in &after_snap.routing.environments {
            for n in &env.names {
                let (a, b) = (static_addrs(before, n), static_addrs(&after_snap, n));
                if a != b {
                    lines.push(format!(
                        "DNS {n}: {} → {}",
                        if a.is_empty() {
                            "-".into()
                        } else {
                            a.join(", ")
                        },
                        b.join(", ")
                    ));
                }
            }
        }
    }
    if new_lowered != lowered {
        extra.push((
            "meta/ttl".to_string(),
            serde_json::to_string(&new_lowered).expect("serializable"),
        ));
    }
    if !drained.is_empty() {
        let until = now + std::time::Duration::from_secs(u64::from(max_ttl));
        let d = Drain {
            names: drained,
            changed_at: crate::util::rfc3339(now),
            max_ttl,
            until: crate::util::rfc3339(until),
        };
        lines.push(format!(
            "drain: resolvers move to the new answer by {} at the earliest (TTL {} s; resolvers with TTL floors and long-lived connections can hold longer)",
            d.until, d.max_ttl
        ));
        extra.push((
            "meta/drain".to_string(),
            serde_json::to_string(&d).expect("serializable"),
        ));
    }
    Ok(Prepared {
        lines,
        extra,
        refusal,
    })
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
                e.insert(
                    key.clone(),
                    Entry {
                        value: value.clone(),
                        mod_revision: current.revision + 1,
                    },
                );
            }
            crate::store::Op::Delete { key } => {
                e.remove(key);
            }
        }
    }
    e
}

/// Writes a plan after showing it (with `preview` lines) and asking;
/// returns the new revision.
#[allow(clippy::too_many_arguments)]
async fn write_plan(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    current: &PrefixState,
    p: &Plan,
    prepared: &Prepared,
    write: &WriteArgs,
    command: &str,
    summary: String,
) -> anyhow::Result<Option<i64>> {
    let lines = p.summary_lines(current);
    eprintln!(
        "{} at revision {}: {} key(s) change",
        cfg.dir(),
        current.revision,
        lines.len()
    );
    for l in lines.iter().chain(prepared.lines.iter()) {
        eprintln!("  {l}");
    }
    if let Some(r) = &prepared.refusal
        && !write.force
    {
        return Err(anyhow!("refused: {r}"));
    }
    if !confirm(write, "write this change?")? {
        eprintln!("nothing written");
        return Ok(None);
    }
    let change = ChangeRecord::now(command, summary);
    match p
        .commit_with_retry(client, cfg, &change, &prepared.extra, write.force)
        .await
    {
        Ok(rev) => Ok(Some(rev)),
        Err(StoreError::Conflict) => Err(anyhow!(
            "refused: etcd changed since revision {} (another writer, or a key read was changed or deleted); nothing was written. Run again to apply on top of the new state, or add --force",
            current.revision
        )),
        Err(e) => Err(e.into()),
    }
}

fn command_line() -> String {
    std::env::args()
        .skip(1)
        .filter(|a| !a.contains("password"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `vdh-edge apply FILE`.
pub async fn apply(args: &ApplyArgs) -> anyhow::Result<String> {
    let cfg = etcd(&args.source, "apply")?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("{}: cannot read", args.file.display()))?;
    let raw = crate::state::from_yaml(&text).map_err(|e| {
        let at = e.line.map_or(String::new(), |l| format!(":{l}"));
        crate::app::AppError::Invalid(vec![format!("{}{at}: {}", args.file.display(), e.message)])
    })?;
    let mut client = cfg.connect().await?;
    let current =
        crate::store::read_with_retry(&mut client, &cfg, args.base_revision.unwrap_or(0)).await?;
    let mut desired = entries_from_raw(&raw);
    let mut owned = vec!["environments/", "services/", "meta/allow_empty"];
    let zdir = zones_dir(&args.source);
    if args.upload_zones {
        let dir = zdir.clone().ok_or_else(|| {
            UsageError(format!(
                "--upload-zones: {} is not a folder",
                args.source.zones.display()
            ))
        })?;
        let files = crate::source::FileSource {
            zones_dir: dir,
            state_file: None,
        }
        .read(0)
        .map_err(|e| invalid(&e))?;
        for z in files.zones {
            desired.insert(format!("zones/{}", z.origin.to_lower()), z.text);
        }
        owned.push("zones/");
    }
    let p = plan(&current, &desired, &owned);
    // Validate what the edges would see, with file errors named by file.
    let prepared = prepare(&cfg, zdir.as_ref(), &current, &p);
    if let Err(e) = &prepared {
        // Re-run the file-based validation for line numbers when possible.
        let inputs = Inputs {
            zones: crate::source::etcd::inputs_from(
                &cfg,
                zdir.as_ref(),
                &current,
                SourceKind::Etcd,
            )
            .map(|i| i.zones)
            .unwrap_or_default(),
            state_source: args.file.display().to_string(),
            state_text: text.clone(),
            etcd: None,
            revision: 0,
            kind: SourceKind::File,
        };
        if let Err(errors) = snapshot::compile(&inputs, None, &Default::default()) {
            return Err(invalid(&errors));
        }
        return Err(anyhow!("{e:#}"));
    }
    let prepared = prepared?;
    if p.ops.is_empty() {
        return Ok(format!(
            "nothing to change: {} already holds this state (revision {})",
            cfg.dir(),
            current.revision
        ));
    }
    if args.dry_run {
        let mut lines = p.summary_lines(&current);
        let n = lines.len();
        lines.extend(prepared.lines.iter().cloned());
        return Ok(format!(
            "dry run: {n} key(s) would change at revision {}\n  {}",
            current.revision,
            lines.join("\n  ")
        ));
    }
    let summary = format!(
        "apply {}: {}",
        args.file.display(),
        p.summary_lines(&current).join(", ")
    );
    match write_plan(
        &mut client,
        &cfg,
        &current,
        &p,
        &prepared,
        &args.write,
        &command_line(),
        summary,
    )
    .await?
    {
        Some(rev) => Ok(format!("applied: revision {rev}")),
        None => Ok(String::new()),
    }
}

/// `vdh-edge rollback --to-revision R`.
pub async fn rollback(args: &RollbackArgs) -> anyhow::Result<String> {
    let cfg = etcd(&args.source, "rollback")?;
    let mut client = cfg.connect().await?;
    let old = crate::store::read_with_retry(&mut client, &cfg, args.to_revision).await.map_err(|e| match e {
        StoreError::Compacted { wanted, oldest } => {
            anyhow!("revision {wanted} was compacted and cannot be restored; the oldest revision available is {oldest} (see `vdh-edge status`)")
        }
        other => other.into(),
    })?;
    let current = crate::store::read_with_retry(&mut client, &cfg, 0).await?;
    if args.to_revision > current.revision {
        return Err(UsageError(format!(
            "revision {} is in the future (latest is {})",
            args.to_revision, current.revision
        ))
        .into());
    }
    let owned = [
        "environments/",
        "services/",
        "zones/",
        "meta/allow_empty",
        "meta/scheme",
    ];
    let desired: BTreeMap<String, String> = old
        .entries
        .iter()
        .filter(|(k, _)| owned.iter().any(|o| k.starts_with(o)))
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect();
    let p = plan(&current, &desired, &owned);
    let prepared = prepare(&cfg, zones_dir(&args.source).as_ref(), &current, &p)?;
    if p.ops.is_empty() {
        return Ok(format!(
            "nothing to change: the live state already equals revision {}",
            args.to_revision
        ));
    }
    let summary = format!(
        "rollback to revision {}: {}",
        args.to_revision,
        p.summary_lines(&current).join(", ")
    );
    match write_plan(
        &mut client,
        &cfg,
        &current,
        &p,
        &prepared,
        &args.write,
        &command_line(),
        summary,
    )
    .await?
    {
        Some(rev) => Ok(format!(
            "rolled back to the state of revision {}: new revision {rev}",
            args.to_revision
        )),
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
pub async fn read_history(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    limit: usize,
) -> anyhow::Result<(Vec<HistoryEntry>, bool)> {
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
        out.push_str(&format!(
            "{:>8}  {}  {}@{}  {}\n",
            e.revision, e.change.time, e.change.user, e.change.host, e.change.summary
        ));
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
    /// The last repoint of a shared hostname and how long it drains.
    pub drain: Option<Drain>,
    pub drain_remaining_s: u64,
    /// Distinct clients across the live edges: window → dimension → value.
    pub census: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
    /// How many edges answered `/census`.
    pub census_edges: usize,
}

/// GETs a path from an edge's HTTP address; returns the body of a 200.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
}

/// Reads everything `status` shows.
pub async fn read_status(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
) -> anyhow::Result<Status> {
    let current = crate::store::read_with_retry(client, cfg, 0).await?;
    let (hist, _) = read_history(client, cfg, 1).await?;
    let last_change = hist.into_iter().next();
    let age = last_change
        .as_ref()
        .and_then(|h| crate::util::parse_rfc3339(&h.change.time))
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    let scheme = current
        .entries
        .get("meta/scheme")
        .and_then(|e| serde_json::from_str(&e.value).ok());
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
    let last_rejection = edges
        .iter()
        .filter_map(|e| e.last_rejection.clone().map(|r| (e.edge.clone(), r)))
        .max_by(|a, b| a.1.at.cmp(&b.1.at));
    let oldest_revision = crate::store::oldest_revision(client, cfg).await?;
    let drain: Option<Drain> = current
        .entries
        .get("meta/drain")
        .and_then(|e| serde_json::from_str(&e.value).ok());
    let drain_remaining_s = drain.as_ref().map_or(0, Drain::remaining_s);
    let mut exports = Vec::new();
    for e in &edges {
        if let Some(body) = http_get(&e.http, "/census").await
            && let Ok(x) = serde_json::from_str::<crate::census::CensusExport>(&body)
        {
            exports.push(x);
        }
    }
    let census = crate::census::union_estimates(&exports);
    let prefix_revision = current
        .entries
        .values()
        .map(|e| e.mod_revision)
        .max()
        .unwrap_or(0);
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
        drain,
        drain_remaining_s,
        census,
        census_edges: exports.len(),
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
    out.push_str(&format!(
        "prefix {}  live revision {} (etcd at {})\n",
        s.prefix, s.prefix_revision, s.revision
    ));
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
        let rejected_newer = e
            .last_rejection
            .as_ref()
            .is_some_and(|r| r.revision as i64 >= s.prefix_revision);
        let lag = if e.revision as i64 >= s.prefix_revision {
            String::new()
        } else if rejected_newer {
            "  (kept its snapshot: the newer change was rejected)".to_string()
        } else {
            format!("  (behind: live is {})", s.prefix_revision)
        };
        out.push_str(&format!(
            "  {}  http {}  dns {}  revision {}  source {}  updated {}{lag}\n",
            e.edge, e.http, e.dns, e.revision, e.source, e.updated
        ));
    }
    match &s.last_rejection {
        Some((edge, r)) => {
            out.push_str(&format!(
                "last rejected change: revision {} at {} (reported by {edge}):\n",
                r.revision, r.at
            ));
            for e in &r.errors {
                out.push_str(&format!("  {e}\n"));
            }
        }
        None => out.push_str("last rejected change: none\n"),
    }
    out.push_str(&format!(
        "oldest revision for rollback: {}\n",
        s.oldest_revision
    ));
    if let Some(d) = &s.drain {
        if s.drain_remaining_s > 0 {
            out.push_str(&format!(
                "drain: {} repointed at {}; at least {} s left (until {}, TTL {} s; resolvers with TTL floors and long-lived connections can hold longer)\n",
                d.names.join(", "),
                d.changed_at,
                s.drain_remaining_s,
                d.until,
                d.max_ttl
            ));
        } else {
            out.push_str(&format!(
                "drain: {} repointed at {}; drained since {} (lower bound)\n",
                d.names.join(", "),
                d.changed_at,
                d.until
            ));
        }
    }
    out.push_str(&format!(
        "census (distinct clients, {} of {} edges answered):\n",
        s.census_edges,
        s.edges.len()
    ));
    for (window, dims) in &s.census {
        for (dim, values) in dims {
            let v: Vec<String> = values.iter().map(|(k, n)| format!("{k}={n:.0}")).collect();
            out.push_str(&format!(
                "  last {window:<4} by {dim:<12} {}\n",
                v.join("  ")
            ));
        }
    }
    Ok(out)
}

/// How a client of `version` fares in `snap`, field by field. A staged
/// minimum is shown as the share of client ids it applies to.
fn doc_facts(
    snap: &snapshot::Snapshot,
    service: &str,
    version: &semver::Version,
) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let asker = |id: Option<String>| crate::document::Asker {
        sdk_version: version.clone(),
        client_id: id,
        platform: None,
        app_id: None,
        addr: None,
    };
    let Some(d) = crate::document::Document::build(snap, service, &asker(Some("preview".into())))
    else {
        return out;
    };
    out.insert(
        "environment",
        format!("{} ({})", d.environment, d.backend_version),
    );
    out.insert("api_base_url", d.api_base_url.clone());
    out.insert(
        "auth.realm",
        format!("{} epoch {}", d.auth.realm, d.auth.epoch),
    );
    out.insert("maintenance.active", d.maintenance.active.to_string());
    out.insert("update.recommended", d.update.recommended.to_string());
    // The share of clients an update is required for (staged minimums).
    let n = 2000;
    let required = (0..n)
        .filter(|i| {
            crate::document::Document::build(snap, service, &asker(Some(format!("preview-{i}"))))
                .is_some_and(|d| d.update.required)
        })
        .count();
    out.insert(
        "update.required",
        match required {
            0 => "false".into(),
            r if r == n => "true".into(),
            r => format!("for about {:.0}% of clients", r as f64 * 100.0 / n as f64),
        },
    );
    out
}

/// `NEW 1.0.0: environment test-v1 (v1) → prod (v1); ...` lines.
fn doc_preview(
    before: Option<&snapshot::Snapshot>,
    after: &snapshot::Snapshot,
    service: &str,
    new_version: &str,
) -> Vec<String> {
    let Some(svc) = after.routing.service(service) else {
        return vec![];
    };
    let mut lines = Vec::new();
    let versions = [
        ("NEW", crate::cohort::parse_version(new_version).ok()),
        ("OLD", Some(svc.legacy_sdk_version.clone())),
    ];
    for (label, v) in versions {
        let Some(v) = v else { continue };
        let a = after
            .routing
            .service(service)
            .map(|_| doc_facts(after, service, &v))
            .unwrap_or_default();
        let b = before
            .map(|s| doc_facts(s, service, &v))
            .unwrap_or_default();
        let mut parts = Vec::new();
        for (k, now) in &a {
            match b.get(k) {
                Some(was) if was != now => parts.push(format!("{k} {was} → {now}")),
                None => parts.push(format!("{k} {now}")),
                _ if *k == "environment" => parts.push(format!("{k} {now} (unchanged)")),
                _ => {}
            }
        }
        lines.push(format!("{label} SDK {v}: {}", parts.join("; ")));
    }
    lines
}

/// `vdh-edge scheme list`.
pub fn scheme_list(args: &crate::cli::SchemeListArgs) -> anyhow::Result<String> {
    let all = crate::schemes::load(args.schemes.as_deref())?;
    let mut out = String::new();
    for s in &all {
        out.push_str(&format!(
            "{:<11} {} ({} phases)\n",
            s.name,
            s.title,
            s.phases.len()
        ));
        for p in &s.phases {
            let params = s.params(&[], Some("P"))?;
            out.push_str(&format!(
                "            {}. {}\n",
                p.phase,
                crate::schemes::subst_str(&p.title, &params)?
            ));
        }
    }
    Ok(out)
}

/// `vdh-edge scheme show NAME`.
pub fn scheme_show(args: &crate::cli::SchemeShowArgs) -> anyhow::Result<String> {
    let all = crate::schemes::load(args.schemes.as_deref())?;
    let s = crate::schemes::find(&all, &args.name)?;
    crate::schemes::show(s, &s.params(&args.set, Some("P"))?)
}

/// `vdh-edge scheme apply NAME --phase N`.
pub async fn scheme_apply(args: &crate::cli::SchemeApplyArgs) -> anyhow::Result<String> {
    use crate::schemes::{SchemeRecord, check_order};
    let all = crate::schemes::load(args.schemes.as_deref())?;
    let s = crate::schemes::find(&all, &args.name)?;
    if args.phase.is_none() && args.lower_ttl.is_none() && args.bump_auth_epoch.is_empty() {
        return Err(UsageError(
            "give --phase N (or --lower-ttl SECONDS / --bump-auth-epoch ENV)".into(),
        )
        .into());
    }
    if let Some(n) = args.phase {
        let ph = s.phase(n)?;
        match (&args.percent, ph.percent) {
            (None, true) => {
                return Err(UsageError(format!(
                    "phase {n} of {} is staged: give --percent P (e.g. 10, then 50, then 100)",
                    s.name
                ))
                .into());
            }
            (Some(_), false) => {
                return Err(
                    UsageError(format!("phase {n} of {} takes no --percent", s.name)).into(),
                );
            }
            (Some(p), true) => {
                crate::cohort::parse_percent(p).map_err(UsageError)?;
            }
            _ => {}
        }
    }
    let params = s.params(&args.set, args.percent.as_deref())?;
    let service = params.get("service").cloned().unwrap_or_default();
    let transform = |raw: &crate::state::RawState| -> anyhow::Result<crate::state::RawState> {
        let mut new = match args.phase {
            Some(n) => s.transform(raw, n, &params)?,
            None => raw.clone(),
        };
        if let Some(ttl) = args.lower_ttl {
            let svc = new
                .services
                .get_mut(&service)
                .ok_or_else(|| anyhow!("service '{service}' is not in the live state"))?;
            if ttl >= svc.ttl {
                return Err(UsageError(format!(
                    "--lower-ttl {ttl} is not lower than the current TTL {} of {service}",
                    svc.ttl
                ))
                .into());
            }
            svc.ttl = ttl;
        }
        for env in &args.bump_auth_epoch {
            let e = new
                .environments
                .get_mut(env)
                .ok_or_else(|| anyhow!("--bump-auth-epoch: no environment '{env}'"))?;
            e.token_epoch += 1;
        }
        Ok(new)
    };
    let Some(cfg) = args.source.etcd_config() else {
        return scheme_apply_file(args, s, &params, &service, transform);
    };
    let mut client = cfg.connect().await?;
    let current = crate::store::read_with_retry(&mut client, &cfg, 0).await?;
    let raw = crate::store::raw_from_entries(&cfg.prefix, &current.entries).map_err(|e| {
        anyhow!(
            "the live state under {} is invalid; fix it before applying a scheme:\n{}",
            cfg.dir(),
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let record: Option<SchemeRecord> = current
        .entries
        .get("meta/scheme")
        .and_then(|e| serde_json::from_str(&e.value).ok());
    if let Some(n) = args.phase
        && let Err(why) = check_order(record.as_ref(), s, n, args.percent.as_deref())
        && !args.write.force
    {
        return Err(anyhow!("refused: {why} (or add --force)"));
    }
    let new_raw = transform(&raw)?;
    let p = plan(
        &current,
        &entries_from_raw(&new_raw),
        &["environments/", "services/", "meta/allow_empty"],
    );
    let zdir = zones_dir(&args.source);
    let mut prepared = prepare(&cfg, zdir.as_ref(), &current, &p)?;
    let before = compile_entries(&cfg, zdir.as_ref(), current.entries.clone()).ok();
    let after_snap = compile_entries(&cfg, zdir.as_ref(), after(&current, &p))?;
    let mut preview = doc_preview(
        before.as_ref(),
        &after_snap,
        &service,
        params.get("new_version").map_or("1.0.0", |v| v.as_str()),
    );
    preview.extend(prepared.lines.drain(..));
    prepared.lines = preview;
    if let Some(n) = args.phase {
        let before_revision = match (&record, n) {
            (Some(r), _) if r.scheme == s.name && n > 1 => r.before_revision,
            _ => current.revision,
        };
        let rec = SchemeRecord {
            scheme: s.name.clone(),
            phase: n,
            percent: args.percent.clone(),
            before_revision,
            time: crate::util::rfc3339_now(),
            user: crate::util::username(),
        };
        prepared.extra.push((
            "meta/scheme".into(),
            serde_json::to_string(&rec).expect("serializable"),
        ));
    }
    let what = match args.phase {
        Some(n) => format!(
            "scheme {} phase {n}{}: {}",
            s.name,
            args.percent
                .as_ref()
                .map_or(String::new(), |p| format!(" ({p}%)")),
            s.phase(n)?.title
        ),
        None => format!("scheme {} preparation", s.name),
    };
    if args.dry_run {
        let mut out = format!("dry run: {what}\n");
        for l in p
            .summary_lines(&current)
            .iter()
            .chain(prepared.lines.iter())
        {
            out.push_str(&format!("  {l}\n"));
        }
        if let Some(r) = &prepared.refusal {
            out.push_str(&format!("  would be refused: {r}\n"));
        }
        return Ok(out);
    }
    if p.ops.is_empty() && prepared.extra.is_empty() {
        return Ok(format!(
            "nothing to change: the live state already is {what}"
        ));
    }
    let summary = format!("{what}: {}", p.summary_lines(&current).join(", "));
    match write_plan(
        &mut client,
        &cfg,
        &current,
        &p,
        &prepared,
        &args.write,
        &command_line(),
        summary,
    )
    .await?
    {
        Some(rev) => Ok(format!("applied {what}: revision {rev}")),
        None => Ok(String::new()),
    }
}

/// `scheme apply` on the `--state` file: the file is rewritten by rename and
/// the scheme's progress kept beside it in `<state>.scheme.json`.
fn scheme_apply_file(
    args: &crate::cli::SchemeApplyArgs,
    s: &crate::schemes::Scheme,
    params: &BTreeMap<String, String>,
    service: &str,
    transform: impl Fn(&crate::state::RawState) -> anyhow::Result<crate::state::RawState>,
) -> anyhow::Result<String> {
    use crate::schemes::{SchemeRecord, check_order};
    let state_path = &args.source.state;
    let text = std::fs::read_to_string(state_path)
        .with_context(|| format!("{}: cannot read", state_path.display()))?;
    let raw = crate::state::from_yaml(&text)
        .map_err(|e| anyhow!("{}: {}", state_path.display(), e.message))?;
    let progress_path = state_path.with_extension("scheme.json");
    let record: Option<SchemeRecord> = std::fs::read(&progress_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(n) = args.phase
        && let Err(why) = check_order(record.as_ref(), s, n, args.percent.as_deref())
        && !args.write.force
    {
        return Err(anyhow!("refused: {why} (or add --force)"));
    }
    let new_raw = transform(&raw)?;
    let new_text = format!(
        "# Written by `vdh-edge scheme apply {}`; progress in {}.\n{}",
        s.name,
        progress_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(""),
        serde_norway::to_string(&new_raw)?
    );
    let compile = |t: &str| {
        let mut inputs = crate::source::FileSource {
            zones_dir: args.source.zones.clone(),
            state_file: Some(state_path.clone()),
        }
        .read(1)
        .map_err(|e| invalid(&e))?;
        inputs.state_text = t.to_string();
        snapshot::compile(&inputs, None, &Default::default()).map_err(|e| invalid(&e))
    };
    let before = compile(&text).ok();
    let after_snap = compile(&new_text)?;
    let mut out = String::new();
    for l in doc_preview(
        before.as_ref(),
        &after_snap,
        service,
        params.get("new_version").map_or("1.0.0", |v| v.as_str()),
    ) {
        out.push_str(&format!("  {l}\n"));
    }
    if args.dry_run {
        return Ok(format!("dry run: {}\n{out}", state_path.display()));
    }
    eprint!("{out}");
    if !confirm(&args.write, &format!("rewrite {}?", state_path.display()))? {
        return Ok(String::new());
    }
    crate::util::write_atomic(state_path, new_text.as_bytes())?;
    if let Some(n) = args.phase {
        let rec = SchemeRecord {
            scheme: s.name.clone(),
            phase: n,
            percent: args.percent.clone(),
            before_revision: 0,
            time: crate::util::rfc3339_now(),
            user: crate::util::username(),
        };
        crate::util::write_atomic(&progress_path, &serde_json::to_vec_pretty(&rec)?)?;
    }
    Ok(format!("wrote {}", state_path.display()))
}
