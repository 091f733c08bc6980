//! The four cutover schemes (README "Cutover schemes") as data: each a list of phases
//! that transform the routing state.
//!
//! A scheme file (`deploy/schemes/*.yaml`, compiled in; `--schemes DIR`
//! overrides) names its parameters (environment and service names, the new
//! SDK range and version) and, per phase, what it sets: the service's rules
//! (replaced whole, so rule names and salts stay stable), update-policy
//! fields (`null` removes one), and environment fields (status, maintenance,
//! backend version). `{name}` in any string is a parameter; `{percent}` is
//! the `--percent` of a staged phase.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::state::RawState;

/// A scheme that cannot be loaded or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SchemeError {
    /// The `--schemes` folder or a file in it cannot be read.
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// A scheme file is not a valid scheme.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// Phases are not numbered 1, 2, 3, ...
    #[error("{0}: phases must be numbered 1, 2, 3, ... in order")]
    Numbering(String),
    /// No scheme has that name.
    #[error("no scheme named '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    /// A `{param}` in a scheme names no parameter.
    #[error("unknown parameter {{{key}}} (have: {have})")]
    UnknownParam { key: String, have: String },
    /// `--set` without `=`.
    #[error("--set expects KEY=VALUE, got '{0}'")]
    SetSyntax(String),
    /// `--set` of a parameter the scheme does not have.
    #[error("scheme {scheme} has no parameter '{key}' (has: {has})")]
    NoSuchParam {
        scheme: String,
        key: String,
        has: String,
    },
    /// A phase number outside the scheme.
    #[error("scheme {scheme} has phases 1 to {count}; phase 0 is the state before it")]
    NoSuchPhase { scheme: String, count: usize },
    /// The scheme file lacks the `service` parameter.
    #[error("scheme {0} has no 'service' parameter")]
    NoServiceParam(String),
    /// The service the scheme works on is not in the state.
    #[error("service '{0}' is not in the live state; set it with --set service=NAME")]
    MissingService(String),
    /// An environment a phase changes is not in the state.
    #[error("environment '{0}' is not in the live state; define it first, or --set the parameter")]
    MissingEnvironment(String),
    /// The phase's result is not a valid state.
    #[error("phase {phase} of {scheme} gives an invalid state: {error}")]
    InvalidResult {
        phase: u32,
        scheme: String,
        error: serde_json::Error,
    },
}

/// Why a phase may not be applied now (unless `--force`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum OrderError {
    /// Skipping a phase.
    #[error("{scheme} is at phase {at}; apply phase {next} first (phases go in order)", next = at + 1)]
    Skip { scheme: String, at: u32 },
    /// Going back a phase.
    #[error(
        "{scheme} is at phase {at}; going back is a rollback: `vdh-edge rollback --to-revision R` (see `vdh-edge history`)"
    )]
    Back { scheme: String, at: u32 },
    /// Lowering a staged percent.
    #[error(
        "lowering the staged share from {from}% to {to}% would release clients already forced; roll back instead"
    )]
    Lower { from: String, to: String },
    /// Another scheme is mid-way.
    #[error("scheme {scheme} is in progress (phase {phase}); finish or roll it back first")]
    InProgress { scheme: String, phase: u32 },
    /// A scheme starts at phase 1.
    #[error("{0} starts at phase 1")]
    StartsAtOne(String),
}

/// A scheme as written in its file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scheme {
    /// `force`, `transition`, `sync`, `new-env`, ...
    pub(crate) name: String,
    /// One line.
    pub(crate) title: String,
    /// A paragraph for `scheme show`.
    pub(crate) description: String,
    /// Parameter defaults; `--set KEY=VALUE` overrides.
    pub(crate) params: BTreeMap<String, String>,
    /// Phases 1, 2, 3, ... in order.
    pub(crate) phases: Vec<Phase>,
}

/// One phase of a scheme.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Phase {
    /// Its number, from 1.
    pub(crate) phase: u32,
    /// One line.
    pub(crate) title: String,
    /// The phase takes `--percent` (a staged forced update).
    #[serde(default)]
    pub(crate) percent: bool,
    /// What a new SDK sees, in words.
    pub(crate) new: String,
    /// What an old (config-aware v0) SDK sees, in words.
    pub(crate) old: String,
    /// What it changes.
    pub(crate) set: PhaseSet,
}

/// What a phase changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhaseSet {
    /// The service's rules, replaced whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rules: Option<Vec<Value>>,
    /// Update-policy fields of the service (null removes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) update: Option<Map<String, Value>>,
    /// Fields per environment (null removes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) environments: Option<BTreeMap<String, Map<String, Value>>>,
}

const BUILTIN: [(&str, &str); 4] = [
    ("force", include_str!("../deploy/schemes/force.yaml")),
    (
        "transition",
        include_str!("../deploy/schemes/transition.yaml"),
    ),
    ("sync", include_str!("../deploy/schemes/sync.yaml")),
    ("new-env", include_str!("../deploy/schemes/new-env.yaml")),
];

/// Loads the schemes: those compiled in, or every `*.yaml` in `dir`.
pub(crate) fn load(dir: Option<&Path>) -> Result<Vec<Scheme>, SchemeError> {
    let mut texts: Vec<(String, String)> = Vec::new();
    match dir {
        None => texts.extend(
            BUILTIN
                .iter()
                .map(|(n, t)| (format!("{n}.yaml (built in)"), t.to_string())),
        ),
        Some(d) => {
            let read = |path: &Path, error| SchemeError::Read {
                path: path.display().to_string(),
                error,
            };
            let mut paths: Vec<_> = std::fs::read_dir(d)
                .map_err(|e| read(d, e))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).map_err(|e| read(&p, e))?;
                texts.push((p.display().to_string(), text));
            }
        }
    }
    let mut out = Vec::new();
    for (src, text) in texts {
        let s: Scheme = serde_norway::from_str(&text).map_err(|e| SchemeError::Parse {
            file: src.clone(),
            message: e.to_string(),
        })?;
        if !s.phases.iter().zip(1..).all(|(p, n)| p.phase == n) {
            return Err(SchemeError::Numbering(src));
        }
        out.push(s);
    }
    Ok(out)
}

/// Finds a scheme by name.
pub(crate) fn find<'a>(schemes: &'a [Scheme], name: &str) -> Result<&'a Scheme, SchemeError> {
    schemes
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| SchemeError::Unknown {
            name: name.to_string(),
            known: schemes
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Replaces `{param}` in every string (and map key) of `v`.
fn substitute(v: &Value, params: &BTreeMap<String, String>) -> Result<Value, SchemeError> {
    Ok(match v {
        Value::String(s) => Value::String(subst_str(s, params)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute(x, params))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut o = Map::new();
            for (k, x) in m {
                o.insert(subst_str(k, params)?, substitute(x, params)?);
            }
            Value::Object(o)
        }
        other => other.clone(),
    })
}

/// Replaces `{param}` in one string.
pub(crate) fn subst_str(s: &str, params: &BTreeMap<String, String>) -> Result<String, SchemeError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let key = &after[..end];
        let v = params.get(key).ok_or_else(|| SchemeError::UnknownParam {
            key: key.to_string(),
            have: params.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        out.push_str(v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Scheme {
    /// The parameters with `overrides` (KEY=VALUE) and `percent` applied.
    pub(crate) fn params(
        &self,
        overrides: &[String],
        percent: Option<&str>,
    ) -> Result<BTreeMap<String, String>, SchemeError> {
        let mut p = self.params.clone();
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| SchemeError::SetSyntax(o.clone()))?;
            if !p.contains_key(k) {
                return Err(SchemeError::NoSuchParam {
                    scheme: self.name.clone(),
                    key: k.to_string(),
                    has: p.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
            p.insert(k.to_string(), v.to_string());
        }
        p.insert("percent".into(), percent.unwrap_or("100").to_string());
        Ok(p)
    }

    /// Phase `n` (from 1).
    pub(crate) fn phase(&self, n: u32) -> Result<&Phase, SchemeError> {
        self.phases
            .iter()
            .find(|p| p.phase == n)
            .ok_or_else(|| SchemeError::NoSuchPhase {
                scheme: self.name.clone(),
                count: self.phases.len(),
            })
    }

    /// Applies phase `n` to a state.
    pub(crate) fn transform(
        &self,
        raw: &RawState,
        n: u32,
        params: &BTreeMap<String, String>,
    ) -> Result<RawState, SchemeError> {
        let phase = self.phase(n)?;
        let service = params
            .get("service")
            .ok_or_else(|| SchemeError::NoServiceParam(self.name.clone()))?;
        let mut doc = serde_json::to_value(raw).expect("a state serializes");
        let svc = doc
            .get_mut("services")
            .and_then(|s| s.get_mut(service.as_str()))
            .ok_or_else(|| SchemeError::MissingService(service.clone()))?;
        if let Some(rules) = &phase.set.rules {
            svc["rules"] = substitute(&Value::Array(rules.clone()), params)?;
        }
        if let Some(update) = &phase.set.update {
            let u = svc
                .as_object_mut()
                .expect("a service is an object")
                .entry("update")
                .or_insert_with(|| Value::Object(Map::new()));
            for (k, v) in update {
                let v = substitute(v, params)?;
                let um = u.as_object_mut().expect("update is an object");
                if v.is_null() {
                    um.remove(k);
                } else {
                    um.insert(k.clone(), v);
                }
            }
        }
        if let Some(envs) = &phase.set.environments {
            for (name, fields) in envs {
                let name = subst_str(name, params)?;
                let env = doc
                    .get_mut("environments")
                    .and_then(|e| e.get_mut(name.as_str()))
                    .ok_or_else(|| SchemeError::MissingEnvironment(name.clone()))?;
                let em = env.as_object_mut().expect("an environment is an object");
                for (k, v) in fields {
                    let v = substitute(v, params)?;
                    if v.is_null() {
                        em.remove(k);
                    } else {
                        em.insert(k.clone(), v);
                    }
                }
            }
        }
        serde_json::from_value(doc).map_err(|error| SchemeError::InvalidResult {
            phase: n,
            scheme: self.name.clone(),
            error,
        })
    }
}

/// What `<prefix>/meta/scheme` (or, in file mode, `<state>.scheme.json`)
/// records: the scheme in progress and its phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SchemeRecord {
    /// The scheme's name.
    pub(crate) scheme: String,
    /// The phase applied last.
    pub(crate) phase: u32,
    /// Its `--percent`, for a staged phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) percent: Option<String>,
    /// The revision just before phase 1: where rolling back the scheme goes.
    pub(crate) before_revision: i64,
    /// When (RFC 3339).
    pub(crate) time: String,
    /// Who.
    pub(crate) user: String,
}

impl SchemeRecord {
    /// A record of phase `phase` applied now by this user.
    pub(crate) fn now(
        scheme: &str,
        phase: u32,
        percent: Option<String>,
        before_revision: i64,
    ) -> Self {
        SchemeRecord {
            scheme: scheme.to_string(),
            phase,
            percent,
            before_revision,
            time: crate::util::rfc3339_now(),
            user: crate::util::username(),
        }
    }
}

/// Checks that phase `phase` (at `percent`) may be applied after `record`.
pub(crate) fn check_order(
    record: Option<&SchemeRecord>,
    scheme: &Scheme,
    phase: u32,
    percent: Option<&str>,
) -> Result<(), OrderError> {
    let basis_points = |p: Option<&str>| {
        p.and_then(|p| crate::config::cohort::parse_percent(p).ok())
            .unwrap_or(10_000)
    };
    match record {
        Some(r) if r.scheme == scheme.name => {
            if phase > r.phase + 1 {
                return Err(OrderError::Skip {
                    scheme: r.scheme.clone(),
                    at: r.phase,
                });
            }
            if phase < r.phase {
                return Err(OrderError::Back {
                    scheme: r.scheme.clone(),
                    at: r.phase,
                });
            }
            if phase == r.phase && basis_points(percent) < basis_points(r.percent.as_deref()) {
                return Err(OrderError::Lower {
                    from: r.percent.as_deref().unwrap_or("100").to_string(),
                    to: percent.unwrap_or("100").to_string(),
                });
            }
            Ok(())
        }
        Some(r) => {
            let other_done = r.phase >= 1 && r.phase == phase_count(&r.scheme).unwrap_or(r.phase);
            if !other_done {
                return Err(OrderError::InProgress {
                    scheme: r.scheme.clone(),
                    phase: r.phase,
                });
            }
            if phase != 1 {
                return Err(OrderError::StartsAtOne(scheme.name.clone()));
            }
            Ok(())
        }
        None if phase != 1 => Err(OrderError::StartsAtOne(scheme.name.clone())),
        None => Ok(()),
    }
}

/// Number of phases of a built-in scheme.
pub(crate) fn phase_count(name: &str) -> Option<u32> {
    load(None)
        .ok()?
        .into_iter()
        .find(|s| s.name == name)
        .and_then(|s| u32::try_from(s.phases.len()).ok())
}

/// `scheme show`: each phase, what it changes, what OLD and NEW SDKs see.
pub(crate) fn show(s: &Scheme, params: &BTreeMap<String, String>) -> Result<String, SchemeError> {
    let mut out = format!(
        "{} — {}\n{}\n\nparameters:",
        s.name,
        s.title,
        s.description.trim()
    );
    for (k, v) in params.iter().filter(|(k, _)| *k != "percent") {
        out.push_str(&format!(" {k}={v}"));
    }
    out.push_str("\n\nphase 0: the state before the scheme (rolling back phase 1 returns to it)\n");
    for p in &s.phases {
        out.push_str(&format!(
            "\nphase {}: {}{}\n",
            p.phase,
            subst_str(&p.title, params)?,
            if p.percent { " [takes --percent]" } else { "" }
        ));
        out.push_str(&format!(
            "  NEW SDKs ({}): {}\n",
            params.get("new_sdk").map_or("", |v| v),
            subst_str(&p.new, params)?
        ));
        out.push_str(&format!("  OLD SDKs: {}\n", subst_str(&p.old, params)?));
        if let Some(r) = &p.set.rules {
            let rules: Vec<String> = r
                .iter()
                .map(|v| {
                    let v = substitute(v, params).unwrap_or_default();
                    let m = v
                        .get("match")
                        .map(|m| format!(" if {m}"))
                        .unwrap_or_default();
                    format!(
                        "{} → {}{m}",
                        v["name"].as_str().unwrap_or("?"),
                        v["environment"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            out.push_str(&format!("  rules: {}\n", rules.join("; ")));
        }
        if let Some(u) = &p.set.update {
            let u = substitute(&Value::Object(u.clone()), params)?;
            out.push_str(&format!("  update: {u}\n"));
        }
        if let Some(e) = &p.set.environments {
            for (name, f) in e {
                let f = substitute(&Value::Object(f.clone()), params)?;
                out.push_str(&format!(
                    "  environment {}: {f}\n",
                    subst_str(name, params)?
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemes_load_and_transform() {
        let all = load(None).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["force", "transition", "sync", "new-env"]);
        let base = crate::config::state::from_yaml(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap(),
        )
        .unwrap();
        for s in &all {
            let mut raw = base.clone();
            for p in &s.phases {
                let params = s.params(&[], Some("25")).unwrap();
                raw = s.transform(&raw, p.phase, &params).unwrap();
            }
            assert!(
                show(s, &s.params(&[], None).unwrap())
                    .unwrap()
                    .contains("phase 1:")
            );
        }
        let f = find(&all, "force").unwrap();
        let raw = f
            .transform(&base, 1, &f.params(&[], None).unwrap())
            .unwrap();
        assert_eq!(raw.environments["prod"].backend_version, "v1");
        assert_eq!(
            raw.services["vdh-api"].update.fields.min_version.as_deref(),
            Some("1.0.0")
        );
        assert!(f.params(&["nope=1".into()], None).is_err());
    }

    #[test]
    fn phases_go_in_order() {
        let all = load(None).unwrap();
        let s = find(&all, "new-env").unwrap();
        let rec = |phase, percent: Option<&str>| SchemeRecord {
            scheme: "new-env".into(),
            phase,
            percent: percent.map(Into::into),
            before_revision: 1,
            time: String::new(),
            user: String::new(),
        };
        assert!(check_order(None, s, 1, None).is_ok());
        assert!(check_order(None, s, 2, None).is_err());
        assert!(check_order(Some(&rec(1, None)), s, 3, None).is_err());
        assert!(check_order(Some(&rec(2, Some("10"))), s, 2, Some("50")).is_ok());
        assert!(check_order(Some(&rec(2, Some("50"))), s, 2, Some("10")).is_err());
        assert!(check_order(Some(&rec(2, Some("50"))), s, 3, None).is_ok());
    }

    /// `main` prints errors with their causes (`{:#}`): the OS error must
    /// show once.
    #[test]
    fn a_missing_folder_is_named_once() {
        let e = load(Some(Path::new("/nonexistent"))).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.starts_with("/nonexistent: "), "{text}");
    }
}
