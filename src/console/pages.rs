//! The console's pages: overview, cohorts, census, history, explain.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Html;

use super::Ctx;
use super::chart::{self, Line};
use super::page::{badge, esc, frame, table};
use crate::config::snapshot::Snapshot;
use crate::ops::status::Status;
use crate::shared::{Shared, Verdict};

type Page = Html<String>;

/// A note at the top of a page (etcd unreachable, file mode).
fn note(text: &str) -> String {
    format!("<p class=note>{}</p>", esc(text))
}

/// `/`: edges, environments, the scheme and the autopilot.
pub(super) async fn overview(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<Ctx>>,
) -> Page {
    let snap = shared.snapshot();
    let fleet = ctx.fleet().await;
    let mut b = String::from("<h1>Overview</h1>");
    let verdicts = match &fleet {
        Ok((s, _)) => s.health.clone(),
        Err(e) => {
            b.push_str(&note(e));
            shared.health.lock().expect("not poisoned").verdicts.clone()
        }
    };
    b.push_str(&summary(&shared, &snap, fleet.as_ref().ok().map(|f| &f.0)));
    b.push_str("<h2>Edges</h2>");
    b.push_str(&edges(&shared, &snap, fleet.as_ref().ok().map(|f| &f.0)));
    b.push_str("<h2>Environments</h2>");
    b.push_str(&environments(&snap, &verdicts));
    if let Ok((s, _)) = &fleet {
        b.push_str("<h2>Scheme and drain</h2>");
        b.push_str(&scheme(s));
        b.push_str("<h2>Autopilot</h2>");
        b.push_str(&autopilot(s));
    }
    Html(frame("/", &ctx.edge_id, &b))
}

fn summary(shared: &Shared, snap: &Snapshot, fleet: Option<&Status>) -> String {
    let mut cards = vec![(
        "This edge".to_string(),
        format!(
            "revision {} from {}{}",
            snap.revision,
            snap.kind.as_str(),
            shared
                .etcd_state()
                .map_or(String::new(), |s| format!(", etcd {s}"))
        ),
    )];
    if let Some(s) = fleet {
        cards.push((
            "etcd".into(),
            format!("{} at revision {}", s.prefix, s.prefix_revision),
        ));
        if let Some(c) = &s.last_change {
            cards.push((
                "Last change".into(),
                format!(
                    "{} by {} ({} s ago)",
                    c.change.summary,
                    c.change.actor,
                    s.last_change_age_s.unwrap_or(0)
                ),
            ));
        }
    }
    let mut out = String::from("<div class=cards>");
    for (k, v) in cards {
        let _ = write!(
            out,
            "<div class=card><b>{}</b><span>{}</span></div>",
            esc(&k),
            esc(&v)
        );
    }
    out.push_str("</div>");
    out
}

fn edges(shared: &Shared, snap: &Snapshot, fleet: Option<&Status>) -> String {
    let head = [
        "Edge",
        "Revision",
        "Behind etcd",
        "Source",
        "Updated",
        "Last rejection",
    ];
    let rows: Vec<Vec<String>> = match fleet {
        Some(s) => s
            .edges
            .iter()
            .map(|e| {
                let lag = s.prefix_revision - i64::try_from(e.revision).unwrap_or(i64::MAX);
                let rejection = e.last_rejection.as_ref().map_or("none".into(), |r| {
                    format!(
                        "revision {} at {}: {}",
                        r.revision,
                        r.at,
                        r.errors.join("; ")
                    )
                });
                vec![
                    esc(&e.edge),
                    format!("<span class=rev>{}</span>", e.revision),
                    if lag <= 0 {
                        badge("ok", "in sync")
                    } else {
                        badge("warn", &format!("{lag} revisions"))
                    },
                    source_badge(&e.source),
                    esc(&e.updated),
                    esc(&rejection),
                ]
            })
            .collect(),
        None => {
            let rejection = shared
                .last_rejection
                .lock()
                .expect("not poisoned")
                .as_ref()
                .map_or("none".into(), |r| {
                    format!("revision {}: {}", r.revision, r.errors.join("; "))
                });
            vec![vec![
                "this edge".into(),
                format!("<span class=rev>{}</span>", snap.revision),
                "–".into(),
                source_badge(snap.kind.as_str()),
                "–".into(),
                esc(&rejection),
            ]]
        }
    };
    table("edges", &head, &rows)
}

fn source_badge(source: &str) -> String {
    badge(if source == "cache" { "warn" } else { "ok" }, source)
}

fn environments(snap: &Snapshot, verdicts: &BTreeMap<String, Verdict>) -> String {
    let head = [
        "Environment",
        "Backend",
        "Addresses",
        "Health",
        "Failover",
        "Maintenance",
    ];
    let rows: Vec<Vec<String>> = snap
        .routing
        .environments
        .iter()
        .map(|e| {
            let addrs: Vec<String> =
                e.v4.iter()
                    .map(ToString::to_string)
                    .chain(e.v6.iter().map(ToString::to_string))
                    .collect();
            let health = match (verdicts.get(&e.name), &e.health) {
                (Some(v), _) => badge(if v.up { "ok" } else { "bad" }, &v.describe()),
                (None, Some(_)) => badge("warn", "no observations yet"),
                (None, None) => "not checked".into(),
            };
            let failover = match snap.failed_over.get(&e.name) {
                Some(Some(to)) => badge("bad", &format!("clients sent to {to}")),
                Some(None) => badge("bad", "every candidate down: failing open"),
                None => esc(&e
                    .failover
                    .iter()
                    .filter_map(|i| snap.routing.environments.get(*i))
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")),
            };
            let maintenance = e.maintenance.as_ref().map_or(String::new(), |m| {
                badge(
                    "warn",
                    &format!(
                        "until {}: {}",
                        m.until.as_deref().unwrap_or("?"),
                        m.message.as_deref().unwrap_or("")
                    ),
                )
            });
            vec![
                esc(&e.name),
                esc(&e.backend_version),
                esc(&addrs.join(" ")),
                health,
                failover,
                maintenance,
            ]
        })
        .collect();
    table("environments", &head, &rows)
}

fn scheme(s: &Status) -> String {
    let mut out = String::new();
    match &s.scheme {
        Some(v) => {
            let name = v["scheme"].as_str().unwrap_or("?");
            let percent = v["percent"]
                .as_str()
                .map_or(String::new(), |p| format!(" at {p}%"));
            let _ = write!(
                out,
                "<p class=scheme><b>{} phase {}{}</b> applied by {} at {}. Undo the whole scheme: <code>vdh-edge scheme abort {}</code></p>",
                esc(name),
                v["phase"],
                esc(&percent),
                esc(v["user"].as_str().unwrap_or("?")),
                esc(v["time"].as_str().unwrap_or("?")),
                esc(name)
            );
        }
        None => out.push_str("<p>No scheme applied.</p>"),
    }
    match &s.drain {
        Some(d) if s.drain_remaining_s > 0 => {
            let _ = write!(
                out,
                "<p>DNS drain of {}: {} until {} ({} s left; resolvers may still hold the old answer).</p>",
                esc(&d.names.join(", ")),
                badge("warn", &format!("{} s left", s.drain_remaining_s)),
                esc(&d.until),
                s.drain_remaining_s
            );
        }
        Some(d) => {
            let _ = write!(
                out,
                "<p>DNS drain of {} {} since {}.</p>",
                esc(&d.names.join(", ")),
                badge("ok", "over"),
                esc(&d.until)
            );
        }
        None => out.push_str("<p>No DNS drain recorded.</p>"),
    }
    out
}

fn autopilot(s: &Status) -> String {
    let mut out = format!(
        "<p>Executor: <b>{}</b></p>",
        esc(s.autopilot_executor.as_deref().unwrap_or("none"))
    );
    if let Some(p) = &s.autopilot_paused {
        let _ = write!(
            out,
            "<p>{} by {} at {}{}. Continue with <code>vdh-edge autopilot resume</code>.</p>",
            badge("warn", "PAUSED"),
            esc(&p.by),
            esc(&p.at),
            esc(&p
                .reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {r}")))
        );
    }
    if s.autopilot_jobs.is_empty() {
        out.push_str("<p>No open schedules or ramps.</p>");
    } else {
        out.push_str("<pre class=jobs>");
        for j in &s.autopilot_jobs {
            let _ = writeln!(out, "{}", esc(&crate::ops::autopilot::one_line(j)));
        }
        out.push_str("</pre>");
    }
    out
}

/// `/cohorts`: each service's rules in order, their matchers and exact
/// shares, and what OLD and NEW SDKs get.
pub(super) async fn cohorts(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<Ctx>>,
) -> Page {
    let snap = shared.snapshot();
    let mut b = String::from("<h1>Cohorts</h1>");
    for svc in &snap.routing.services {
        let _ = write!(
            b,
            "<h2>{}</h2><p>Hostnames {}; OLD SDKs report {}.</p>",
            esc(&svc.name),
            esc(&svc
                .hostnames
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")),
            esc(&svc.legacy_sdk_version.to_string())
        );
        let rows: Vec<Vec<String>> = svc
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let env = snap
                    .routing
                    .environments
                    .get(r.environment)
                    .map_or("?", |e| e.name.as_str());
                vec![
                    (i + 1).to_string(),
                    esc(&r.name),
                    esc(&matchers(r)),
                    esc(env),
                    esc(&share(r.percent, &r.salt)),
                ]
            })
            .collect();
        b.push_str(&table(
            "rules",
            &[
                "#",
                "Rule",
                "Matches",
                "Environment",
                "Share of cohort buckets",
            ],
            &rows,
        ));
        b.push_str(&update_line(svc));
        let new = svc.update.latest_version.as_ref().map(ToString::to_string);
        b.push_str("<ul class=gets>");
        for line in crate::ops::preview::doc_preview(
            None,
            &snap,
            &svc.name,
            new.as_deref().unwrap_or("999.0.0"),
        ) {
            let _ = write!(b, "<li>{}</li>", esc(&line));
        }
        b.push_str("</ul>");
    }
    Html(frame("/cohorts", &ctx.edge_id, &b))
}

fn matchers(r: &crate::config::routing::Rule) -> String {
    let mut m = Vec::new();
    if let Some(v) = &r.sdk_version {
        m.push(format!("sdk_version {}", v.as_str()));
    }
    if !r.platforms.is_empty() {
        let p: Vec<String> = r
            .platforms
            .iter()
            .map(|p| format!("{p:?}").to_lowercase())
            .collect();
        m.push(format!("platform {}", p.join("|")));
    }
    if !r.app_ids.is_empty() {
        m.push(format!("app_id {}", r.app_ids.join("|")));
    }
    if !r.client_ids.is_empty() {
        m.push(format!("{} client ids", r.client_ids.len()));
    }
    if !r.networks.is_empty() {
        let n: Vec<String> = r.networks.iter().map(ToString::to_string).collect();
        m.push(format!("network {}", n.join(", ")));
    }
    if m.is_empty() && r.percent.is_none() {
        return "everyone left".into();
    }
    m.join("; ")
}

/// `buckets 0-999 of 10000 (salt 'x'): 10.00%`, or who reaches the rule.
fn share(bp: Option<u16>, salt: &str) -> String {
    match bp {
        Some(0) => format!("none (0 of 10000 buckets, salt '{salt}')"),
        Some(bp) => format!(
            "buckets 0-{} of 10000 (salt '{salt}'): {:.2}%",
            bp - 1,
            f64::from(bp) / 100.0
        ),
        None => "all clients that reach it".into(),
    }
}

fn update_line(svc: &crate::config::routing::Service) -> String {
    let u = &svc.update;
    let mut parts = Vec::new();
    if let Some(v) = &u.latest_version {
        parts.push(format!("update recommended below {v}"));
    }
    if let Some(v) = &u.min_version {
        let who = match u.min_version_bp {
            Some(bp) if bp < 10_000 => {
                share(Some(bp), &crate::document::min_version_salt(&svc.name))
            }
            _ => "every client".into(),
        };
        parts.push(format!("update required below {v} for {who}"));
    }
    if parts.is_empty() {
        return "<p>No update fields.</p>".into();
    }
    format!("<p class=update>{}</p>", esc(&parts.join("; ")))
}

/// `/census`: distinct clients over time per SDK version, environment and
/// app id (the union over the live edges), the OLD share, and the
/// current windows' numbers.
pub(super) async fn census(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<Ctx>>,
) -> Page {
    let snap = shared.snapshot();
    let mut b = String::from("<h1>Census</h1>");
    let exports = match ctx.edges().await {
        Ok(edges) => {
            let exports = crate::ops::status::census_exports(&edges, &ctx.access, true).await;
            let _ = write!(
                b,
                "<p>Distinct clients across {} of {} live edges (HyperLogLog, about 1.6% error).</p>",
                exports.len(),
                edges.len()
            );
            exports
        }
        Err(e) => {
            b.push_str(&note(&e));
            let mut own = shared.census.export();
            own.series = Some(shared.census.export_series());
            vec![own]
        }
    };
    let step = shared.census.series_step();
    let series: Vec<_> = exports.iter().filter_map(|e| e.series.clone()).collect();
    let points = crate::census::series::union(&series, step);
    let legacy = snap
        .routing
        .services
        .iter()
        .map(|s| s.legacy_sdk_version.clone())
        .max();
    let _ = write!(
        b,
        "<p>One point per {} s (the last 48 kept); OLD = SDK version {}.</p>",
        step,
        legacy
            .as_ref()
            .map_or("none (no service)".into(), |v| format!("≤ {v}"))
    );
    b.push_str("<div class=census>");
    for dim in ["sdk_version", "environment", "app_id"] {
        let _ = write!(b, "<section><h2>By {}</h2>", dim.replace('_', " "));
        let share = (dim == "sdk_version").then(|| old_share(&points, legacy.as_ref()));
        b.push_str(&chart::render(
            &format!("chart-{dim}"),
            &lines(&points, dim),
            share.as_ref(),
            step,
        ));
        b.push_str("</section>");
    }
    b.push_str("</div><h2>Now</h2>");
    b.push_str(&windows(&crate::census::union_estimates(&exports)));
    Html(frame("/clients", &ctx.edge_id, &b))
}

type Points = BTreeMap<u64, BTreeMap<String, BTreeMap<String, f64>>>;

/// One line per value of `dim`, the 8 largest at the last point.
fn lines(points: &Points, dim: &str) -> Vec<Line> {
    let mut by: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
    for (t, dims) in points {
        for (v, n) in dims.get(dim).into_iter().flatten() {
            by.entry(v).or_default().push((*t, *n));
        }
    }
    let mut lines: Vec<Line> = by
        .into_iter()
        .map(|(name, points)| Line {
            name: name.to_string(),
            points,
        })
        .collect();
    lines.sort_by(|a, b| {
        let last = |l: &Line| l.points.last().map_or(0.0, |p| p.1);
        last(b).total_cmp(&last(a))
    });
    lines.truncate(8);
    lines
}

/// The share of OLD clients (SDK version at or below `legacy`) per point.
fn old_share(points: &Points, legacy: Option<&semver::Version>) -> Line {
    let points = points
        .iter()
        .filter_map(|(t, dims)| {
            let versions = dims.get("sdk_version")?;
            let total: f64 = versions.values().sum();
            let old: f64 = versions
                .iter()
                .filter(|(v, _)| {
                    crate::config::cohort::parse_version(v)
                        .ok()
                        .zip(legacy)
                        .is_some_and(|(v, l)| v <= *l)
                })
                .map(|(_, n)| n)
                .sum();
            (total > 0.0).then(|| (*t, (old * 1000.0 / total).round() / 10.0))
        })
        .collect();
    Line {
        name: "OLD share".into(),
        points,
    }
}

/// The sliding windows (`status`'s census): dimension → value → hour, day.
fn windows(u: &BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>) -> String {
    let mut rows = Vec::new();
    let dims: std::collections::BTreeSet<&String> = u.values().flat_map(|d| d.keys()).collect();
    for dim in dims {
        let values: std::collections::BTreeSet<&String> = u
            .values()
            .filter_map(|d| d.get(dim))
            .flat_map(|v| v.keys())
            .collect();
        for v in values {
            let cell = |w: &str| {
                let n = u.get(w).and_then(|d| d.get(dim)).and_then(|x| x.get(v));
                format!(
                    "<span data-window={w} data-dim=\"{}\" data-value=\"{}\">{}</span>",
                    esc(dim),
                    esc(v),
                    n.map_or("0".into(), |n| format!("{n:.0}"))
                )
            };
            rows.push(vec![esc(dim), esc(v), cell("hour"), cell("day")]);
        }
    }
    table(
        "windows",
        &["Dimension", "Value", "Last hour", "Last day"],
        &rows,
    )
}

/// How many of the newest entries `/history` shows field by field (each
/// reads the prefix twice).
const DIFFS: usize = 5;

/// `/history`: the audit trail with field diffs and the command that rolls
/// back to each change.
pub(super) async fn history(Extension(ctx): Extension<Arc<Ctx>>) -> Page {
    let mut b = String::from("<h1>History</h1>");
    let read = ctx
        .etcd_read(|mut client, cfg| async move {
            let (entries, truncated) =
                crate::ops::history::read_history(&mut client, cfg, 25).await?;
            let mut diffs = Vec::new();
            for e in entries.iter().take(DIFFS) {
                diffs.push(crate::ops::history::field_changes(&mut client, cfg, e.revision).await?);
            }
            anyhow::Ok((entries, truncated, diffs))
        })
        .await;
    match read {
        Ok(((entries, truncated, diffs), cfg)) => {
            b.push_str(&history_table(cfg, &entries, &diffs));
            if truncated {
                b.push_str(&note("older changes were compacted"));
            }
        }
        Err(e) if ctx.etcd.is_none() => b.push_str(&note(&format!(
            "{e} (the audit trail lives in etcd; keep the state file under version control)"
        ))),
        Err(e) => b.push_str(&note(&e)),
    }
    Html(frame("/history", &ctx.edge_id, &b))
}

fn history_table(
    cfg: &crate::etcd::EtcdConfig,
    entries: &[crate::ops::history::HistoryEntry],
    diffs: &[Vec<String>],
) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let c = &e.change;
            let why = [
                c.reason.clone().unwrap_or_default(),
                c.ticket.clone().map_or(String::new(), |t| format!("ticket {t}")),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
            let changes = diffs.get(i).map_or(format!("<code>vdh-edge history show {}</code>", e.revision), |d| {
                let items: String = d.iter().map(|x| format!("<li>{}</li>", esc(x))).collect();
                format!("<ul class=diff>{items}</ul>")
            });
            let undo = if i == 0 {
                "(the live state)".to_string()
            } else {
                format!(
                    "<code class=cmd>vdh-edge rollback --etcd {} --prefix {} --to-revision {}</code>",
                    esc(&cfg.endpoints.join(",")),
                    esc(&cfg.prefix),
                    e.revision
                )
            };
            vec![
                format!("<span class=rev>{}</span>", e.revision),
                esc(&c.time),
                esc(&format!("{} ({}@{})", c.actor, c.user, c.host)),
                format!("{}<br><small>{}</small>", esc(&c.summary), esc(&why)),
                changes,
                undo,
            ]
        })
        .collect();
    table(
        "history",
        &[
            "Revision",
            "Time",
            "Actor",
            "Change and reason",
            "Fields",
            "Roll back to it",
        ],
        &rows,
    )
}

/// `/explain`: the form, and for a filled one what `explain --json` gives.
pub(super) async fn explain(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<Ctx>>,
    uri: Uri,
) -> Page {
    let snap = shared.snapshot();
    let q: BTreeMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.trim().to_string()))
        .collect();
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let service = get("service").or_else(|| snap.routing.services.first().map(|s| s.name.clone()));
    let mut b = String::from("<h1>Explain</h1>");
    b.push_str(&explain_form(&snap, &q, service.as_deref()));
    if let (Some(service), Some(sdk)) = (service, get("sdk_version")) {
        let source = get("source")
            .and_then(|s| s.parse().ok())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let result = crate::explain::Query::new(
            &service,
            &sdk,
            get("client_id"),
            get("platform").as_deref(),
            get("app_id"),
            source,
        )
        .and_then(|query| crate::explain::explain(&snap, &query));
        match result {
            Ok(mut e) => {
                e.health = shared.health.lock().expect("not poisoned").verdicts.clone();
                let json = serde_json::to_string_pretty(&e).expect("serializable");
                let _ = write!(
                    b,
                    "<h2>What this client gets</h2><pre class=explain>{}</pre><h2>As JSON (<code>explain --json</code>)</h2><pre id=explain-json>{}</pre>",
                    esc(&e.render(&format!("edge {},", ctx.edge_id), &sdk)),
                    esc(&json)
                );
            }
            Err(e) => {
                let _ = write!(b, "<p class=\"note error\">{}</p>", esc(&e.to_string()));
            }
        }
    }
    Html(frame("/explain", &ctx.edge_id, &b))
}

fn explain_form(snap: &Snapshot, q: &BTreeMap<String, String>, service: Option<&str>) -> String {
    let val = |k: &str| esc(q.get(k).map_or("", String::as_str));
    let mut options = String::new();
    for s in &snap.routing.services {
        let sel = if Some(s.name.as_str()) == service {
            " selected"
        } else {
            ""
        };
        let _ = write!(options, "<option{sel}>{}</option>", esc(&s.name));
    }
    let platform = q.get("platform").map_or("", String::as_str);
    let mut platforms = String::from("<option value=\"\">(none)</option>");
    for p in ["android", "ios", "web", "other"] {
        let sel = if p == platform { " selected" } else { "" };
        let _ = write!(platforms, "<option{sel}>{p}</option>");
    }
    format!(
        "<form class=explain method=get action=/explain>\
<label>Service <select name=service>{options}</select></label>\
<label>SDK version <input name=sdk_version required placeholder=0.9.0 value=\"{}\"></label>\
<label>Client id <input name=client_id value=\"{}\"></label>\
<label>Platform <select name=platform>{platforms}</select></label>\
<label>App id <input name=app_id value=\"{}\"></label>\
<label>Source address <input name=source placeholder=127.0.0.1 value=\"{}\"></label>\
<button type=submit>Explain</button></form>",
        val("sdk_version"),
        val("client_id"),
        val("app_id"),
        val("source")
    )
}
