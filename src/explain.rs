//! `explain`: what a described client gets, computed by the code that
//! serves it: the document through [`Document::build`], the DNS answer
//! through [`crate::front::dns::respond`] and the rule through
//! [`decide_for_network`]. What it prints is what the server answers.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::routing::Platform;
use crate::config::snapshot::Snapshot;
use crate::document::{Asker, Document};
use crate::front::dns::Network;
use crate::front::dns::answer::decide_for_network;

/// What keeps a client from being explained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExplainError {
    /// `--sdk-version` is not SemVer.
    #[error("--sdk-version: {0}")]
    SdkVersion(crate::config::cohort::CohortError),
    /// `--platform` is not a platform.
    #[error("--platform: use android, ios, web or other")]
    Platform,
    /// No such service.
    #[error("no service named '{service}' (known: {known})")]
    UnknownService { service: String, known: String },
}

/// The client to explain.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The service asked for.
    pub(crate) service: String,
    /// Who asks (version, ids, platform, address).
    pub(crate) asker: Asker,
}

impl Query {
    /// From `explain`'s command line.
    pub(crate) fn from_args(args: &crate::cli::ExplainArgs) -> Result<Query, ExplainError> {
        Query::new(
            &args.service,
            &args.sdk_version,
            args.client_id.clone(),
            args.platform.as_deref(),
            args.app_id.clone(),
            args.source_ip,
        )
    }

    /// From the parts `explain` takes (the console's form too).
    pub(crate) fn new(
        service: &str,
        sdk_version: &str,
        client_id: Option<String>,
        platform: Option<&str>,
        app_id: Option<String>,
        source: IpAddr,
    ) -> Result<Query, ExplainError> {
        let sdk_version =
            crate::config::cohort::parse_version(sdk_version).map_err(ExplainError::SdkVersion)?;
        let platform = match platform {
            None => None,
            Some(p) => Some(Platform::parse(p).ok_or(ExplainError::Platform)?),
        };
        Ok(Query {
            service: service.to_string(),
            asker: Asker {
                sdk_version,
                client_id,
                platform,
                app_id,
                addr: Some(source),
            },
        })
    }
}

/// What `explain` reports.
#[derive(Debug, Serialize)]
pub(crate) struct Explanation {
    /// The config document the client gets over HTTP.
    pub(crate) document: Document,
    /// The DNS answer of each service hostname, asked from the client's address.
    pub(crate) dns: Vec<DnsExplanation>,
    /// The environments' health verdicts (etcd mode: from the edges).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) health: std::collections::BTreeMap<String, crate::shared::Verdict>,
    /// Environments answered failed over: to the named one, or `None`
    /// while failing open.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) failed_over: std::collections::BTreeMap<String, Option<String>>,
}

/// The DNS answer for one service hostname.
#[derive(Debug, Serialize)]
pub(crate) struct DnsExplanation {
    /// The hostname.
    pub(crate) name: String,
    /// The network key rules see (`198.51.100.0/24`).
    pub(crate) network: String,
    /// The rule DNS picked.
    pub(crate) rule: String,
    /// Its environment.
    pub(crate) environment: String,
    /// A records answered.
    pub(crate) a: Vec<String>,
    /// AAAA records answered.
    pub(crate) aaaa: Vec<String>,
    /// Their TTL.
    pub(crate) ttl: Option<u32>,
    /// The ECS scope an answer to a query with ECS would carry.
    pub(crate) ecs_scope: u8,
}

/// Explains `query` against `snap`. Fails for an unknown service, naming
/// the known ones.
pub(crate) fn explain(snap: &Snapshot, query: &Query) -> Result<Explanation, ExplainError> {
    let Some(document) = Document::build(snap, &query.service, &query.asker) else {
        let known: Vec<&str> = snap
            .routing
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        return Err(ExplainError::UnknownService {
            service: query.service.clone(),
            known: known.join(", "),
        });
    };
    let svc = snap
        .routing
        .service(&query.service)
        .expect("document built");
    let src = query.asker.addr.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let net = Network::new(src, None);
    let (decision, scope) = decide_for_network(svc, &net);
    let rule = &svc.rules[decision.rule];
    let dns = svc
        .hostnames
        .iter()
        .map(|h| {
            let l = crate::front::dns::lookup(snap, h, src);
            let (a, aaaa, ttl) = (l.a, l.aaaa, l.ttl);
            DnsExplanation {
                name: h.to_string(),
                network: String::from_utf8_lossy(net.key()).into_owned(),
                rule: rule.name.clone(),
                environment: snap.routing.environments[rule.environment].name.clone(),
                a,
                aaaa,
                ttl,
                ecs_scope: scope,
            }
        })
        .collect();
    Ok(Explanation {
        document,
        dns,
        health: Default::default(),
        failed_over: snap.failed_over.clone(),
    })
}

impl Explanation {
    /// The text `explain` prints: `from` names the source, `sdk_version`
    /// is the version as given.
    pub(crate) fn render(&self, from: &str, sdk_version: &str) -> String {
        let d = &self.document;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "service {} at revision {} ({} SDK {})",
            d.service, d.revision, from, sdk_version
        );
        let _ = writeln!(
            out,
            "HTTP: rule '{}' -> environment {} ({}), realm {} epoch {}",
            d.rule, d.environment, d.backend_version, d.auth.realm, d.auth.epoch
        );
        let _ = writeln!(
            out,
            "      update: required={} recommended={} min={} latest={}; maintenance: {}",
            d.update.required,
            d.update.recommended,
            d.update.min_version.as_deref().unwrap_or("-"),
            d.update.latest_version.as_deref().unwrap_or("-"),
            if d.maintenance.active { "active" } else { "no" }
        );
        for x in &self.dns {
            let mut addrs = x.a.clone();
            addrs.extend(x.aaaa.iter().cloned());
            let _ = writeln!(
                out,
                "DNS:  {} from {}: rule '{}' -> {} [{}] ttl {} (ECS scope {})",
                x.name,
                x.network,
                x.rule,
                x.environment,
                addrs.join(", "),
                x.ttl.map_or("-".into(), |t| t.to_string()),
                x.ecs_scope
            );
        }
        for (env, v) in &self.health {
            let failover = match self.failed_over.get(env) {
                Some(Some(to)) => format!("; its clients are answered with {to}"),
                Some(None) => "; every failover target is down too: failing open".into(),
                None => String::new(),
            };
            let _ = writeln!(out, "health: {env} {}{failover}", v.describe());
        }
        let _ = writeln!(
            out,
            "document:\n{}",
            serde_json::to_string_pretty(d).expect("serializable")
        );
        out
    }
}
