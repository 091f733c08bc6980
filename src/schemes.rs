//! The four cutover schemes (SPEC §1, §8) as data: each a list of phases
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

use crate::state::RawState;

/// A scheme as written in its file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scheme {
    pub name: String,
    pub title: String,
    pub description: String,
    /// Parameter defaults; `--set KEY=VALUE` overrides.
    pub params: BTreeMap<String, String>,
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub phase: u32,
    pub title: String,
    /// The phase takes `--percent` (a staged forced update).
    #[serde(default)]
    pub percent: bool,
    /// What a new SDK sees, in words.
    pub new: String,
    /// What an old (config-aware v0) SDK sees, in words.
    pub old: String,
    pub set: PhaseSet,
}

/// What a phase changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSet {
    /// The service's rules, replaced whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Value>>,
    /// Update-policy fields of the service (null removes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Map<String, Value>>,
    /// Fields per environment (null removes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<BTreeMap<String, Map<String, Value>>>,
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
pub fn load(dir: Option<&Path>) -> anyhow::Result<Vec<Scheme>> {
    let mut texts: Vec<(String, String)> = Vec::new();
    match dir {
        None => texts.extend(
            BUILTIN
                .iter()
                .map(|(n, t)| (format!("{n}.yaml (built in)"), t.to_string())),
        ),
        Some(d) => {
            let mut paths: Vec<_> = std::fs::read_dir(d)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            paths.sort();
            for p in paths {
                texts.push((p.display().to_string(), std::fs::read_to_string(&p)?));
            }
        }
    }
    let mut out = Vec::new();
    for (src, text) in texts {
        let s: Scheme = serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{src}: {e}"))?;
        for (i, p) in s.phases.iter().enumerate() {
            if p.phase as usize != i + 1 {
                anyhow::bail!("{src}: phases must be numbered 1, 2, 3, ... in order");
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Finds a scheme by name.
pub fn find<'a>(schemes: &'a [Scheme], name: &str) -> anyhow::Result<&'a Scheme> {
    schemes.iter().find(|s| s.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "no scheme named '{name}' (known: {})",
            schemes
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Replaces `{param}` in every string (and map key) of `v`.
fn substitute(v: &Value, params: &BTreeMap<String, String>) -> anyhow::Result<Value> {
    Ok(match v {
        Value::String(s) => Value::String(subst_str(s, params)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute(x, params))
                .collect::<anyhow::Result<_>>()?,
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
pub fn subst_str(s: &str, params: &BTreeMap<String, String>) -> anyhow::Result<String> {
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
        let v = params.get(key).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown parameter {{{key}}} (have: {})",
                params.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Scheme {
    /// The parameters with `overrides` (KEY=VALUE) and `percent` applied.
    pub fn params(
        &self,
        overrides: &[String],
        percent: Option<&str>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut p = self.params.clone();
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got '{o}'"))?;
            if !p.contains_key(k) {
                anyhow::bail!(
                    "scheme {} has no parameter '{k}' (has: {})",
                    self.name,
                    p.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            p.insert(k.to_string(), v.to_string());
        }
        p.insert("percent".into(), percent.unwrap_or("100").to_string());
        Ok(p)
    }

    pub fn phase(&self, n: u32) -> anyhow::Result<&Phase> {
        self.phases.iter().find(|p| p.phase == n).ok_or_else(|| {
            anyhow::anyhow!(
                "scheme {} has phases 1 to {}; phase 0 is the state before it",
                self.name,
                self.phases.len()
            )
        })
    }

    /// Applies phase `n` to a state.
    pub fn transform(
        &self,
        raw: &RawState,
        n: u32,
        params: &BTreeMap<String, String>,
    ) -> anyhow::Result<RawState> {
        let phase = self.phase(n)?;
        let service = params
            .get("service")
            .ok_or_else(|| anyhow::anyhow!("scheme {} has no 'service' parameter", self.name))?;
        let mut doc = serde_json::to_value(raw)?;
        let svc = doc
            .get_mut("services")
            .and_then(|s| s.get_mut(service.as_str()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "service '{service}' is not in the live state; set it with --set service=NAME"
                )
            })?;
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
                    .ok_or_else(|| anyhow::anyhow!("environment '{name}' is not in the live state; define it first, or --set the parameter"))?;
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
        serde_json::from_value(doc)
            .map_err(|e| anyhow::anyhow!("phase {n} of {} gives an invalid state: {e}", self.name))
    }
}

/// What `<prefix>/meta/scheme` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SchemeRecord {
    pub scheme: String,
    pub phase: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// The revision just before phase 1: where rolling back the scheme goes.
    pub before_revision: i64,
    pub time: String,
    pub user: String,
}

/// Why a phase may not be applied now (unless `--force`).
pub fn check_order(
    record: Option<&SchemeRecord>,
    scheme: &Scheme,
    phase: u32,
    percent: Option<&str>,
) -> Result<(), String> {
    let last = scheme.phases.len() as u32;
    match record {
        Some(r) if r.scheme == scheme.name => {
            if phase > r.phase + 1 {
                return Err(format!(
                    "{} is at phase {}; apply phase {} first (phases go in order)",
                    r.scheme,
                    r.phase,
                    r.phase + 1
                ));
            }
            if phase < r.phase {
                return Err(format!(
                    "{} is at phase {}; going back is a rollback: `vdh-edge rollback --to-revision R` (see `vdh-edge history`)",
                    r.scheme, r.phase
                ));
            }
            if phase == r.phase {
                let (old, new) = (
                    r.percent
                        .as_deref()
                        .and_then(|p| crate::cohort::parse_percent(p).ok())
                        .unwrap_or(10_000),
                    percent
                        .and_then(|p| crate::cohort::parse_percent(p).ok())
                        .unwrap_or(10_000),
                );
                if new < old {
                    return Err(format!(
                        "lowering the staged share from {}% to {}% would release clients already forced; roll back instead",
                        r.percent.as_deref().unwrap_or("100"),
                        percent.unwrap_or("100")
                    ));
                }
            }
            Ok(())
        }
        Some(r) => {
            let other_last = r.phase >= 1
                && r.phase == crate::schemes::phase_count(&r.scheme).unwrap_or(r.phase);
            if !other_last {
                return Err(format!(
                    "scheme {} is in progress (phase {}); finish or roll it back first",
                    r.scheme, r.phase
                ));
            }
            if phase != 1 {
                return Err(format!("{} starts at phase 1", scheme.name));
            }
            let _ = last;
            Ok(())
        }
        None if phase != 1 => Err(format!("{} starts at phase 1", scheme.name)),
        None => Ok(()),
    }
}

/// Number of phases of a built-in scheme.
pub fn phase_count(name: &str) -> Option<u32> {
    load(None)
        .ok()?
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.phases.len() as u32)
}

/// `scheme show`: each phase, what it changes, what OLD and NEW SDKs see.
pub fn show(s: &Scheme, params: &BTreeMap<String, String>) -> anyhow::Result<String> {
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
        let base = crate::state::from_yaml(
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
}
