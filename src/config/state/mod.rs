//! The routing state as operators write it (YAML file or etcd keys), and its
//! validation into [`crate::config::routing::Routing`].
//!
//! Serde types stop here: everything past [`crate::config::routing::Routing::compile`] sees checked, built
//! values. Validation reports every problem at once, each with the document
//! path it concerns; [`StateError::with_lines`] turns paths into lines.

pub(crate) mod yaml_lines;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The whole desired state: backend environments, and the services whose
/// rules route clients to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    /// Allow a published change that removes every service or every zone.
    /// A wiped etcd prefix must not take the fleet down, so this is off by
    /// default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) allow_empty: bool,
    /// Rules for changing this state (audit).
    #[serde(default, skip_serializing_if = "RawPolicy::is_default")]
    pub(crate) policy: RawPolicy,
    /// Backend environments by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) environments: BTreeMap<String, RawEnvironment>,
    /// Services (shared hostnames that SDKs hard-code) by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) services: BTreeMap<String, RawService>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How changes to the state must be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    /// Every write must say why (`--reason`); refused otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) reason_required: bool,
    /// Approvals by other actors a write needs (`vdh-edge approve`); 0:
    /// none. With N > 0 a write becomes a proposal.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) approvals: u32,
    /// Whether `rollback` may skip the approvals (default true: undoing
    /// must stay one command).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub(crate) rollback_without_approval: bool,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            reason_required: false,
            approvals: 0,
            rollback_without_approval: true,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

impl RawPolicy {
    fn is_default(&self) -> bool {
        *self == RawPolicy::default()
    }
}

/// A backend environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvironment {
    /// Backend version served (`v0`, `v1`, ...). During an in-place upgrade,
    /// the version it will serve when maintenance ends.
    pub(crate) backend_version: String,
    /// DNS names of this environment; each answers its addresses.
    #[serde(default)]
    pub(crate) names: Vec<String>,
    /// IPv4 and IPv6 addresses.
    #[serde(default)]
    pub(crate) addresses: Vec<String>,
    /// Base URL SDKs use; its host must be one of `names`.
    pub(crate) api_base_url: String,
    /// `serving` or `maintenance`.
    #[serde(default)]
    pub(crate) status: RawStatus,
    /// Shown while in maintenance. `until` is informational only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maintenance: Option<RawMaintenance>,
    /// Bump to make every SDK of this environment refresh its token.
    #[serde(default)]
    pub(crate) token_epoch: u64,
    /// A health check every edge runs against this environment; the
    /// majority of the edges' observations is its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) health: Option<RawHealth>,
    /// Environments (same `backend_version`) that take this one's clients,
    /// first healthy one first, while its health verdict is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) failover: Vec<String>,
}

/// An environment's health check: an HTTP GET (plain `http://`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    /// What to GET, e.g. `http://10.0.0.5:8080/healthz`.
    pub(crate) url: String,
    /// Seconds between probes.
    #[serde(default = "five")]
    pub(crate) interval_s: u64,
    /// Milliseconds a probe may take.
    #[serde(default = "thousand")]
    pub(crate) timeout_ms: u64,
    /// The status a healthy answer has.
    #[serde(default = "two_hundred")]
    pub(crate) expect_status: u16,
    /// Consecutive good probes before an edge sees it up again.
    #[serde(default = "two")]
    pub(crate) healthy_after: u32,
    /// Consecutive bad probes before an edge sees it down.
    #[serde(default = "three")]
    pub(crate) unhealthy_after: u32,
}

fn five() -> u64 {
    5
}
fn thousand() -> u64 {
    1000
}
fn two_hundred() -> u16 {
    200
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

/// Whether an environment serves or is in maintenance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawStatus {
    #[default]
    Serving,
    Maintenance,
}

/// What SDKs are told during maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaintenance {
    /// RFC 3339 time the maintenance is expected to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

/// A service: the hostnames old SDKs hard-code and the rules that route
/// clients to environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    /// Shared hostnames (e.g. `vdh-api.yingzi.com.`), each inside a served zone.
    pub(crate) hostnames: Vec<String>,
    /// SDK version that SDKs seeing only DNS run; DNS answers as if asked by one.
    pub(crate) legacy_sdk_version: String,
    /// TTL of DNS answers for the hostnames.
    #[serde(default = "default_ttl")]
    pub(crate) ttl: u32,
    /// Base refresh interval of the config document, in seconds.
    #[serde(default = "default_refresh")]
    pub(crate) refresh_s: u32,
    /// Ordered rules; the first that matches wins; the last must match all.
    pub(crate) rules: Vec<RawRule>,
    /// Update policy for every client of this service.
    #[serde(default)]
    pub(crate) update: RawUpdate,
}

fn default_ttl() -> u32 {
    60
}
fn default_refresh() -> u32 {
    300
}

/// A routing rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// Unique within the service; shown in documents and metrics.
    pub(crate) name: String,
    /// Cohort salt; default `<service>/<name>`. Keep it when editing a
    /// percent so cohorts stay nested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) salt: Option<String>,
    /// Conditions that must all hold; empty matches everyone.
    #[serde(default, rename = "match", skip_serializing_if = "RawMatch::is_empty")]
    pub(crate) matcher: RawMatch,
    /// Environment clients matching this rule use.
    pub(crate) environment: String,
    /// Update policy fields that override the service's for these clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) update: Option<RawUpdateFields>,
}

/// Rule conditions (all optional, all must hold).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    /// SemVer range, e.g. `>=1.0.0, <2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sdk_version: Option<String>,
    /// `android`, `ios`, `web`, `other` (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) app_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) client_ids: Vec<String>,
    /// Source networks (CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) networks: Vec<String>,
    /// 0 to 100 with up to two decimals, e.g. `"12.5"`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "percent_text"
    )]
    #[schemars(with = "Option<String>")]
    pub(crate) percent: Option<String>,
}

impl RawMatch {
    pub(crate) fn is_empty(&self) -> bool {
        *self == RawMatch::default()
    }
}

/// Accepts a percent written as a YAML number or string and keeps its text.
fn percent_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        S(String),
        U(u64),
        F(f64),
    }
    Ok(Option::<P>::deserialize(d)?.map(|p| match p {
        P::S(s) => s,
        P::U(u) => u.to_string(),
        // Rust prints the shortest text that reads back as the same float,
        // which is the text the operator wrote for any sane percent.
        P::F(f) => f.to_string(),
    }))
}

/// Update policy of a service, with per-platform/app overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdate {
    #[serde(flatten)]
    pub(crate) fields: RawUpdateFields,
    /// Overrides for a platform and/or app id; the most specific wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) overrides: Vec<RawUpdateOverride>,
}

/// Update policy fields; unset fields inherit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdateFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) latest_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_version: Option<String>,
    /// Share of clients (sticky cohort) to which `min_version` applies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "percent_text"
    )]
    #[schemars(with = "Option<String>")]
    pub(crate) min_version_percent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

/// Update fields for a platform and/or app id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdateOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) app_id: Option<String>,
    #[serde(flatten)]
    pub(crate) fields: RawUpdateFields,
}

/// One problem in a state document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub(crate) struct StateError {
    /// Path in the document, e.g. `services.vdh-api.rules[0].environment`.
    pub(crate) path: String,
    pub(crate) message: String,
    /// Line in the source text, when known.
    pub(crate) line: Option<usize>,
}

impl StateError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        StateError {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }

    /// Fills in lines from the YAML text the state was read from.
    pub(crate) fn with_lines(mut errors: Vec<StateError>, text: &str) -> Vec<StateError> {
        let lines = yaml_lines::yaml_lines(text);
        for e in &mut errors {
            if e.line.is_none() {
                e.line = yaml_lines::line_of(&lines, &e.path);
            }
        }
        errors
    }
}

/// Reads a state from YAML (JSON is YAML too). An empty document is `{}`.
pub(crate) fn from_yaml(text: &str) -> Result<RawState, StateError> {
    if text.trim().is_empty() {
        return Ok(RawState::default());
    }
    if let Some((line, path, message)) = yaml_lines::structure_error(text) {
        // As for serde's errors the path goes in the message, which every
        // caller prints after `file:line`.
        let message = if path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        };
        return Err(StateError {
            path: String::new(),
            message,
            line: Some(line),
        });
    }
    serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let msg = e.to_string();
        // serde_norway appends " at line N column M"; the line goes in front.
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        StateError {
            path: String::new(),
            message: msg,
            line,
        }
    })
}

/// The JSON Schema of [`RawState`], for editors.
pub(crate) fn json_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(RawState)).expect("schema serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_valid() {
        assert_eq!(from_yaml("").unwrap(), RawState::default());
        assert_eq!(from_yaml("{}").unwrap(), RawState::default());
    }

    /// Adds an unknown key to every mapping of the shipped example in turn;
    /// each must be rejected.
    #[test]
    fn unknown_fields_are_rejected_everywhere() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
        fn objects(v: &serde_json::Value, path: &[String], out: &mut Vec<Vec<String>>) {
            match v {
                serde_json::Value::Object(m) => {
                    out.push(path.to_vec());
                    for (k, c) in m {
                        let mut p = path.to_vec();
                        p.push(k.clone());
                        objects(c, &p, out);
                    }
                }
                serde_json::Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        let mut p = path.to_vec();
                        p.push(i.to_string());
                        objects(c, &p, out);
                    }
                }
                _ => {}
            }
        }
        let mut paths = Vec::new();
        objects(&doc, &[], &mut paths);
        assert!(paths.len() > 8);
        for p in paths {
            let mut d = doc.clone();
            let mut cur = &mut d;
            for k in &p {
                cur = match cur {
                    serde_json::Value::Object(m) => m.get_mut(k).unwrap(),
                    serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                    _ => unreachable!(),
                };
            }
            cur.as_object_mut()
                .unwrap()
                .insert("bogus_field".into(), serde_json::json!({"x": 1}));
            let yaml = serde_norway::to_string(&d).unwrap();
            assert!(
                from_yaml(&yaml).is_err(),
                "unknown field at {p:?} was accepted"
            );
        }
    }

    #[test]
    fn percent_keeps_text() {
        let s = from_yaml("services:\n  s:\n    hostnames: [a.]\n    legacy_sdk_version: 0.9.0\n    rules:\n      - name: r\n        match: { percent: 12.5 }\n        environment: e\n").unwrap();
        assert_eq!(
            s.services["s"].rules[0].matcher.percent.as_deref(),
            Some("12.5")
        );
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = from_yaml("environments:\n  prod: [\n").unwrap_err();
        assert!(e.line.is_some());
    }
}
