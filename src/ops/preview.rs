//! What a write will do beyond its keys, worked out before it is written:
//! compiled before/after snapshots, DNS answers that change, TTL lowerings,
//! the drain of a repointed hostname, and what OLD and NEW SDKs will see.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::cohort::parse_version;
use crate::config::keyed::Entry;
use crate::config::snapshot::{self, SavedSerials, Snapshot, SourceKind};
use crate::document::{Asker, Document};
use crate::error::Invalid;
use crate::etcd::meta::{self, Drain, TtlLowering};
use crate::etcd::plan::Plan;
use crate::etcd::{EtcdConfig, PrefixState};
use crate::proto::name::Name;
use crate::util::{parse_rfc3339, rfc3339};

/// Compiles a (would-be) prefix content with the same compiler the edges use.
pub(crate) fn compile_entries(
    cfg: &EtcdConfig,
    zones_dir: Option<&PathBuf>,
    entries: BTreeMap<String, Entry>,
) -> Result<Snapshot, Invalid> {
    let p = PrefixState {
        revision: 0,
        cluster_id: 0,
        entries,
    };
    let inputs = crate::etcd::watch::inputs_from(cfg, zones_dir, &p, SourceKind::Etcd)?;
    Ok(snapshot::compile(&inputs, None, &SavedSerials::default())?)
}

/// The A/AAAA a name answers for a resolver no network-specific rule
/// matches (the zone's static records).
pub(crate) fn static_addrs(snap: &Snapshot, name: &Name) -> Vec<String> {
    use crate::proto::types::{A, AAAA};
    let lower = name.to_lower();
    let Some(zone) = crate::front::dns::answer::find_zone(&snap.zones, lower.wire(), A) else {
        return vec![];
    };
    let Some(node) = zone.lookup(lower.wire()) else {
        return vec![];
    };
    [A, AAAA]
        .into_iter()
        .filter_map(|t| node.get(t))
        .flat_map(|set| set.rdatas.iter())
        .filter_map(|rd| crate::proto::wire::rdata_to_ip(rd))
        .map(|ip| ip.to_string())
        .collect()
}

/// What a write will do beyond its keys: the preview lines, the extra meta
/// keys (TTL lowering, drain), and why it must not happen without --force.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Lines shown under the key changes.
    pub(crate) lines: Vec<String>,
    /// `meta/` keys written in the same transaction.
    pub(crate) extra: Vec<(String, String)>,
    /// Why the write needs `--force`, if it does.
    pub(crate) refusal: Option<String>,
    /// The state compiled before (`None` when the live state is invalid)
    /// and after the write, for previews that need more than the above.
    pub(crate) before: Option<Box<Snapshot>>,
    pub(crate) after: Option<Box<Snapshot>>,
}

/// Compiles the state before and after, and works out DNS changes, TTL
/// lowerings and the drain.
pub(crate) fn prepare(
    cfg: &EtcdConfig,
    zones_dir: Option<&PathBuf>,
    current: &PrefixState,
    p: &Plan,
) -> Result<Prepared, Invalid> {
    let after = compile_entries(cfg, zones_dir, p.after(current))?;
    // The live state may itself be invalid (that is why one writes); then
    // there is nothing to compare with.
    let Ok(before) = compile_entries(cfg, zones_dir, current.entries.clone()) else {
        return Ok(Prepared {
            after: Some(Box::new(after)),
            ..Prepared::default()
        });
    };
    let lowered: BTreeMap<String, TtlLowering> = current
        .entries
        .get(meta::TTL)
        .and_then(|e| serde_json::from_str(&e.value).ok())
        .unwrap_or_default();
    let mut w = Repoints {
        now: SystemTime::now(),
        lowered: &lowered,
        new_lowered: lowered.clone(),
        prepared: Prepared::default(),
        drained: Vec::new(),
        max_ttl: 0,
    };
    w.services(&before, &after);
    w.environment_names(&before, &after);
    Ok(Prepared {
        before: Some(Box::new(before)),
        after: Some(Box::new(after)),
        ..w.finish()
    })
}

/// The DNS side of a write, gathered service by service.
struct Repoints<'a> {
    now: SystemTime,
    /// `meta/ttl` as read.
    lowered: &'a BTreeMap<String, TtlLowering>,
    /// `meta/ttl` after this write.
    new_lowered: BTreeMap<String, TtlLowering>,
    prepared: Prepared,
    /// Shared hostnames whose answer changes.
    drained: Vec<String>,
    /// The largest TTL resolvers may hold for an old answer.
    max_ttl: u32,
}

impl Repoints<'_> {
    /// TTL lowerings and repointed service hostnames.
    fn services(&mut self, before: &Snapshot, after: &Snapshot) {
        for svc in &after.routing.services {
            let Some(old_svc) = before.routing.service(&svc.name) else {
                continue;
            };
            if svc.ttl < old_svc.ttl {
                self.new_lowered.insert(
                    svc.name.clone(),
                    TtlLowering {
                        old_ttl: old_svc.ttl,
                        new_ttl: svc.ttl,
                        lowered_at: rfc3339(self.now),
                    },
                );
                self.prepared.lines.push(format!(
                    "DNS TTL of {} lowered {} s → {} s",
                    svc.name, old_svc.ttl, svc.ttl
                ));
            }
            for h in &svc.hostnames {
                let (a, b) = (static_addrs(before, h), static_addrs(after, h));
                if a != b {
                    self.prepared.lines.push(format!(
                        "DNS {h}: {} → {}",
                        a.join(", "),
                        b.join(", ")
                    ));
                    self.repointed(h, &svc.name, old_svc.ttl.max(svc.ttl));
                }
            }
        }
    }

    /// A shared hostname changes its answer: it drains for the largest TTL
    /// resolvers may hold, and a TTL lowered less than one old TTL ago
    /// means resolvers may still hold the old, longer TTL.
    fn repointed(&mut self, h: &Name, service: &str, ttl: u32) {
        self.drained.push(h.to_string());
        let mut ttl = ttl;
        if let Some(l) = self.lowered.get(service) {
            let held_until =
                parse_rfc3339(&l.lowered_at).map(|t| t + Duration::from_secs(u64::from(l.old_ttl)));
            if let Some(until) = held_until.filter(|u| *u > self.now) {
                ttl = ttl.max(l.old_ttl);
                self.prepared.refusal = Some(format!(
                    "{h}: its TTL was lowered from {} s at {}; resolvers may hold the old answer until {}: repoint after that, or add --force",
                    l.old_ttl,
                    l.lowered_at,
                    rfc3339(until)
                ));
            }
        }
        self.max_ttl = self.max_ttl.max(ttl);
    }

    /// Environment names whose addresses change (no drain: SDKs that use
    /// them were told to by their document).
    fn environment_names(&mut self, before: &Snapshot, after: &Snapshot) {
        for env in &after.routing.environments {
            for n in &env.names {
                let (a, b) = (static_addrs(before, n), static_addrs(after, n));
                if a != b {
                    let was = if a.is_empty() {
                        "-".into()
                    } else {
                        a.join(", ")
                    };
                    self.prepared
                        .lines
                        .push(format!("DNS {n}: {was} → {}", b.join(", ")));
                }
            }
        }
    }

    /// The `meta/ttl` and `meta/drain` records this write carries.
    fn finish(mut self) -> Prepared {
        if self.new_lowered != *self.lowered {
            self.prepared.extra.push((
                meta::TTL.to_string(),
                serde_json::to_string(&self.new_lowered).expect("serializable"),
            ));
        }
        if !self.drained.is_empty() {
            let until = self.now + Duration::from_secs(u64::from(self.max_ttl));
            let d = Drain {
                names: self.drained,
                changed_at: rfc3339(self.now),
                max_ttl: self.max_ttl,
                until: rfc3339(until),
            };
            self.prepared.lines.push(format!(
                "drain: resolvers move to the new answer by {} at the earliest (TTL {} s; resolvers with TTL floors and long-lived connections can hold longer)",
                d.until, d.max_ttl
            ));
            self.prepared.extra.push((
                meta::DRAIN.to_string(),
                serde_json::to_string(&d).expect("serializable"),
            ));
        }
        self.prepared
    }
}

/// How a client of `version` fares in `snap`, field by field. A staged
/// minimum is shown as the share of client ids it applies to.
fn doc_facts(
    snap: &Snapshot,
    service: &str,
    version: &semver::Version,
) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let asker = |id: Option<String>| Asker {
        sdk_version: version.clone(),
        client_id: id,
        platform: None,
        app_id: None,
        addr: None,
    };
    let Some(d) = Document::build(snap, service, &asker(Some("preview".into()))) else {
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
    // Recommended as requests without a client id see it: they are never
    // in a staged cohort.
    if let Some(n) = Document::build(snap, service, &asker(None)) {
        out.insert("update.recommended", n.update.recommended.to_string());
    }
    out.insert("update.required", required_share(snap, service, version));
    out
}

/// The cohorts (salt, basis points) that can split clients of `version`:
/// staged rules, by their salt, and staged minimums, by the service's
/// min_version salt.
fn staged_cohorts(snap: &Snapshot, service: &str, version: &semver::Version) -> Vec<(String, u16)> {
    let mut staged: Vec<(String, u16)> = Vec::new();
    if let Some(s) = snap.routing.service(service) {
        for r in &s.rules {
            if let Some(bp) = r.percent
                && !r.needs_client_facts()
                && r.networks.is_empty()
                && r.sdk_version.as_ref().is_none_or(|v| v.matches(version))
            {
                staged.push((r.salt.clone(), bp));
            }
        }
        let updates =
            std::iter::once(&s.update).chain(s.rules.iter().filter_map(|r| r.update.as_ref()));
        for u in updates {
            if let Some(bp) = u.min_version_bp.filter(|bp| *bp < 10_000) {
                staged.push((crate::document::min_version_salt(service), bp));
            }
        }
    }
    staged.sort();
    staged.dedup();
    staged
}

/// For whom an update is required. With one staged (percent) rule for
/// this version the share is exact: the rule's buckets of 10,000 under its
/// salt, and who is outside them is said; otherwise it is estimated from
/// 2,000 client ids.
fn required_share(snap: &Snapshot, service: &str, version: &semver::Version) -> String {
    let doc = |client_id: Option<String>| {
        let asker = Asker {
            sdk_version: version.clone(),
            client_id,
            platform: None,
            app_id: None,
            addr: None,
        };
        Document::build(snap, service, &asker)
    };
    let required = |id: String| doc(Some(id)).is_some_and(|d| d.update.required);
    // Who the staged minimum leaves out, and what they get instead.
    let rest = |id: Option<String>| {
        doc(id).map_or(String::new(), |d| {
            if d.update.required {
                "required".into()
            } else {
                format!("recommended {}", d.update.recommended)
            }
        })
    };
    let staged = staged_cohorts(snap, service, version);
    if let [(salt, bp)] = &staged[..] {
        let (salt, bp) = (salt.clone(), *bp);
        let id = |inside: bool| {
            (0..100_000)
                .map(|i| format!("preview-{i}"))
                .find(|id| (crate::config::cohort::bucket(&salt, id.as_bytes()) < bp) == inside)
        };
        let (inside, outside) = (id(true), id(false));
        let (r_in, r_out) = (
            inside.clone().is_some_and(&required),
            outside.clone().is_some_and(&required),
        );
        let pct = f64::from(bp) / 100.0;
        let without = rest(None);
        return match (r_in, r_out) {
            (true, true) => "true".into(),
            (false, false) => "false".into(),
            (true, false) => format!(
                "for exactly {pct:.2}% of client ids (buckets 0-{} of 10000, salt '{}'); the other {:.2}% get {}, requests without client_id get {without}",
                bp.saturating_sub(1),
                salt,
                100.0 - pct,
                rest(outside)
            ),
            (false, true) => format!(
                "for exactly {:.2}% of client ids (buckets {bp}-9999 of 10000, salt '{}'); the {pct:.2}% in the cohort get {}, requests without client_id get {without}",
                100.0 - pct,
                salt,
                rest(inside)
            ),
        };
    }
    let n = 2000;
    let count = (0..n).filter(|i| required(format!("preview-{i}"))).count();
    match count {
        0 => "false".into(),
        r if r == n => "true".into(),
        r => format!(
            "for about {:.0}% of clients (estimated from {n} ids)",
            share(r, n)
        ),
    }
}

/// `part` of `n` as a percent.
#[allow(clippy::cast_precision_loss)] // counts of at most a few thousand
fn share(part: usize, n: usize) -> f64 {
    part as f64 * 100.0 / n as f64
}

/// `NEW 1.0.0: environment test-v1 (v1) → prod (v1); ...` lines.
pub(crate) fn doc_preview(
    before: Option<&Snapshot>,
    after: &Snapshot,
    service: &str,
    new_version: &str,
) -> Vec<String> {
    let Some(svc) = after.routing.service(service) else {
        return vec![];
    };
    let mut lines = Vec::new();
    let versions = [
        ("NEW", parse_version(new_version).ok()),
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
