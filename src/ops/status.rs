//! `vdh-edge status`: the prefix, the live edges, the last rejection, the
//! drain and the census union, read first and rendered apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::history::{HistoryEntry, read_history};
use super::require_etcd;
use crate::cli::StatusArgs;
use crate::etcd::EtcdConfig;
use crate::etcd::meta::{self, Drain};
use crate::etcd::registry::{EdgeRecord, RejectionRecord};

/// What `status` reports.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    /// `<prefix>/`.
    pub(crate) prefix: String,
    /// etcd's current revision.
    pub(crate) revision: i64,
    /// The newest revision that wrote under the prefix: what edges should serve.
    pub(crate) prefix_revision: i64,
    /// When the last vdh-edge change was written, and its age in seconds.
    pub(crate) last_change: Option<HistoryEntry>,
    /// Seconds since the last change (by the writer's clock).
    pub(crate) last_change_age_s: Option<u64>,
    /// `meta/scheme` as written.
    pub(crate) scheme: Option<serde_json::Value>,
    /// The live edges' registrations, by edge id.
    pub(crate) edges: Vec<EdgeRecord>,
    /// The newest rejection any live edge reports.
    pub(crate) last_rejection: Option<(String, RejectionRecord)>,
    /// The oldest revision `rollback --to-revision` can restore.
    pub(crate) oldest_revision: i64,
    /// The last repoint of a shared hostname and how long it drains.
    pub(crate) drain: Option<Drain>,
    /// Seconds the drain has left (0 when over).
    pub(crate) drain_remaining_s: u64,
    /// Distinct clients across the live edges: window → dimension → value.
    pub(crate) census: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
    /// How many edges answered `/census`.
    pub(crate) census_edges: usize,
    /// The length of each census window in seconds (`hour`, `day`), as the
    /// answering edges count them.
    pub(crate) census_windows: BTreeMap<String, u64>,
    /// Each checked environment's verdict and votes, from the edges'
    /// observations.
    pub(crate) health: BTreeMap<String, crate::shared::Verdict>,
    /// Environments answered failed over, by name: where to (`null`: fail
    /// open, every target down) → how many edges answer so.
    pub(crate) failover: BTreeMap<String, BTreeMap<String, usize>>,
    /// The edge executing schedules and ramps.
    pub(crate) autopilot_executor: Option<String>,
    /// Set while `autopilot pause` holds.
    pub(crate) autopilot_paused: Option<crate::ops::autopilot::Pause>,
    /// Scheduled writes and ramps not finished yet.
    pub(crate) autopilot_jobs: Vec<crate::ops::autopilot::Job>,
}

/// How `failover` names an environment that keeps its clients because
/// every failover target is down too.
const FAIL_OPEN: &str = "(fail open)";

/// How the edges' admin listeners are reached: TLS roots for `https://`
/// addresses, the bearer token.
#[derive(Default, Clone)]
pub(crate) struct AdminAccess {
    pub(crate) tls: Option<tokio_rustls::TlsConnector>,
    pub(crate) token: Option<std::sync::Arc<str>>,
}

/// GETs a path from an edge's admin address (`host:port`, or
/// `https://host:port` for an admin listener with TLS, verified against
/// `access`'s roots); returns the body of a 200.
async fn http_get(addr: &str, path: &str, access: &AdminAccess) -> Option<String> {
    let (https, hostport) = match addr.strip_prefix("https://") {
        Some(h) => (true, h),
        None => (false, addr),
    };
    let auth = access
        .token
        .as_ref()
        .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}Connection: close\r\n\r\n");
    let tls = access.tls.as_ref();
    let fut = async {
        let s = tokio::net::TcpStream::connect(hostport).await.ok()?;
        let buf = if https {
            let host = hostport.rsplit_once(':')?.0.trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
            let t = tls?.connect(name, s).await.ok()?;
            exchange(t, &req).await?
        } else {
            exchange(s, &req).await?
        };
        let text = String::from_utf8(buf).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
}

/// Writes `req` and reads the answer until the server closes.
async fn exchange<S>(mut s: S, req: &str) -> Option<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req.as_bytes()).await.ok()?;
    s.flush().await.ok()?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) => Some(buf),
        // A TLS peer that closes without close_notify: keep what came.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Some(buf),
        Err(_) => None,
    }
}

/// A TLS client trusting the CA certificates in `ca` (PEM), for admin
/// listeners served with `--admin-tls`.
fn admin_tls(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    anyhow::ensure!(added > 0, "{}: no CA certificate", ca.display());
    let config = rustls::ClientConfig::builder_with_provider(crate::front::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Every live edge's `/census` (with `?series=1`: its points over time);
/// edges that do not answer are left out.
pub(crate) async fn census_exports(
    edges: &[EdgeRecord],
    access: &AdminAccess,
    series: bool,
) -> Vec<crate::census::CensusExport> {
    let path = if series {
        "/census?series=1"
    } else {
        "/census"
    };
    let mut out = Vec::new();
    for e in edges {
        // Edges register their admin address; older ones served the
        // census on their public address.
        let admin = e.admin.as_deref().unwrap_or(&e.http);
        if let Some(body) = http_get(admin, path, access).await
            && let Ok(x) = serde_json::from_str(&body)
        {
            out.push(x);
        }
    }
    out
}

/// Reads everything `status` shows.
pub(crate) async fn read_status(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    access: &AdminAccess,
) -> anyhow::Result<Status> {
    let current = crate::etcd::prefix::read_with_retry(client, cfg, 0).await?;
    let (hist, _) = read_history(client, cfg, 1).await?;
    let last_change = hist.into_iter().next();
    let age = last_change
        .as_ref()
        .and_then(|h| crate::util::parse_rfc3339(&h.change.time))
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    let scheme = current
        .entries
        .get(meta::SCHEME)
        .and_then(|e| serde_json::from_str(&e.value).ok());
    let edges = crate::etcd::registry::read_edges(client, cfg).await?;
    let autopilot_executor = crate::ops::autopilot::executor::leader(client, cfg).await;
    let autopilot_paused = crate::ops::autopilot::paused(client, cfg).await?;
    let autopilot_jobs = crate::ops::autopilot::jobs(client, cfg)
        .await?
        .into_iter()
        .map(|(j, _)| j)
        .filter(|j| j.state.is_open())
        .collect();
    let health = crate::serve::health::verdicts(edges.iter().map(|e| &e.health));
    let mut failover: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (env, to) in edges.iter().flat_map(|e| &e.failed_over) {
        let to = to.clone().unwrap_or_else(|| FAIL_OPEN.to_string());
        *failover
            .entry(env.clone())
            .or_default()
            .entry(to)
            .or_default() += 1;
    }
    let last_rejection = edges
        .iter()
        .filter_map(|e| e.last_rejection.clone().map(|r| (e.edge.clone(), r)))
        .max_by(|a, b| a.1.at.cmp(&b.1.at));
    let oldest_revision = crate::etcd::prefix::oldest_revision(client, cfg).await?;
    let drain: Option<Drain> = current
        .entries
        .get(meta::DRAIN)
        .and_then(|e| serde_json::from_str(&e.value).ok());
    let drain_remaining_s = drain.as_ref().map_or(0, Drain::remaining_s);
    let exports = census_exports(&edges, access, false).await;
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
        health,
        failover,
        autopilot_executor,
        autopilot_paused,
        autopilot_jobs,
        census_edges: exports.len(),
        census_windows: exports
            .first()
            .map(|e| BTreeMap::from([("hour".to_string(), e.hour_s), ("day".to_string(), e.day_s)]))
            .unwrap_or_default(),
    })
}

/// `vdh-edge status`.
pub(crate) async fn status(args: &StatusArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "status")?;
    let access = AdminAccess {
        tls: args.admin_ca.as_deref().map(admin_tls).transpose()?,
        token: args
            .admin_token_file
            .as_deref()
            .map(crate::front::http::auth::read_token)
            .transpose()?,
    };
    let mut client = cfg.connect_live().await?;
    let s = read_status(&mut client, &cfg, &access).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&s).expect("serializable"));
    }
    Ok(s.render())
}

impl Status {
    /// The text `status` prints.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_head(&mut out);
        self.render_edges(&mut out);
        self.render_rejection(&mut out);
        let _ = writeln!(
            out,
            "oldest revision for rollback: {}",
            self.oldest_revision
        );
        self.render_drain(&mut out);
        self.render_health(&mut out);
        self.render_autopilot(&mut out);
        self.render_census(&mut out);
        out
    }

    fn render_head(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "prefix {}  live revision {} (etcd at {})",
            self.prefix, self.prefix_revision, self.revision
        );
        match &self.last_change {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "last change: revision {} at {} ({} s ago) by {}@{}: {}",
                    h.revision,
                    h.change.time,
                    self.last_change_age_s.unwrap_or(0),
                    h.change.user,
                    h.change.host,
                    h.change.summary
                );
            }
            None => out.push_str("last change: none recorded by vdh-edge\n"),
        }
        if let Some(sc) = &self.scheme {
            let _ = writeln!(out, "scheme: {sc}");
        }
    }

    /// One line per edge, saying when it is behind and why.
    fn render_edges(&self, out: &mut String) {
        let live = self.prefix_revision;
        let _ = writeln!(out, "edges: {}", self.edges.len());
        for e in &self.edges {
            let rejected_newer = e
                .last_rejection
                .as_ref()
                .is_some_and(|r| i64::try_from(r.revision).unwrap_or(i64::MAX) >= live);
            let lag = if i64::try_from(e.revision).unwrap_or(i64::MAX) >= live {
                String::new()
            } else if rejected_newer {
                "  (kept its snapshot: the newer change was rejected)".to_string()
            } else {
                format!("  (behind: live is {live})")
            };
            let _ = writeln!(
                out,
                "  {}  http {}  admin {}  dns {}  revision {}  source {}  updated {}{lag}",
                e.edge,
                e.http,
                e.admin.as_deref().unwrap_or("-"),
                e.dns,
                e.revision,
                e.source,
                e.updated
            );
        }
    }

    fn render_rejection(&self, out: &mut String) {
        match &self.last_rejection {
            Some((edge, r)) => {
                let _ = writeln!(
                    out,
                    "last rejected change: revision {} at {} (reported by {edge}):",
                    r.revision, r.at
                );
                for e in &r.errors {
                    let _ = writeln!(out, "  {e}");
                }
            }
            None => out.push_str("last rejected change: none\n"),
        }
    }

    fn render_drain(&self, out: &mut String) {
        let Some(d) = &self.drain else { return };
        if self.drain_remaining_s > 0 {
            let _ = writeln!(
                out,
                "drain: {} repointed at {}; at least {} s left (until {}, TTL {} s; resolvers with TTL floors and long-lived connections can hold longer)",
                d.names.join(", "),
                d.changed_at,
                self.drain_remaining_s,
                d.until,
                d.max_ttl
            );
        } else {
            let _ = writeln!(
                out,
                "drain: {} repointed at {}; drained since {} (lower bound)",
                d.names.join(", "),
                d.changed_at,
                d.until
            );
        }
    }

    fn render_health(&self, out: &mut String) {
        for (env, v) in &self.health {
            let _ = writeln!(out, "health: {env} {}", v.describe());
        }
        for (env, targets) in &self.failover {
            for (to, n) in targets {
                let _ = if to == FAIL_OPEN {
                    writeln!(
                        out,
                        "failover: {env} FAILING OPEN on {n} of {} edges: every failover target is down too, its clients stay on {env}",
                        self.edges.len()
                    )
                } else {
                    writeln!(
                        out,
                        "failover: {env} -> {to} on {n} of {} edges (its clients are answered with {to})",
                        self.edges.len()
                    )
                };
            }
        }
    }

    fn render_autopilot(&self, out: &mut String) {
        if self.autopilot_jobs.is_empty() && self.autopilot_paused.is_none() {
            return;
        }
        let _ = writeln!(
            out,
            "autopilot: executor {}{}",
            self.autopilot_executor.as_deref().unwrap_or("none"),
            self.autopilot_paused
                .as_ref()
                .map_or(String::new(), |p| format!(
                    "; PAUSED by {} at {}",
                    p.by, p.at
                ))
        );
        for j in &self.autopilot_jobs {
            let _ = writeln!(out, "  {}", crate::ops::autopilot::one_line(j));
        }
    }

    fn render_census(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "census (distinct clients, {} of {} edges answered):",
            self.census_edges,
            self.edges.len()
        );
        for (window, dims) in &self.census {
            let covers = self
                .census_windows
                .get(window)
                .map_or(String::new(), |s| format!(" ({s} s)"));
            for (dim, values) in dims {
                let v: Vec<String> = values.iter().map(|(k, n)| format!("{k}={n:.0}")).collect();
                let _ = writeln!(
                    out,
                    "  last {window:<4}{covers} by {dim:<12} {}",
                    v.join("  ")
                );
            }
        }
    }
}
