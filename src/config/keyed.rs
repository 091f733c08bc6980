//! The routing state as keys (README "Production: etcd"): `environments/<name>` and
//! `services/<name>` hold JSON, `meta/allow_empty` holds `true`, and
//! `zones/<origin>` holds zone-file text.
//!
//! This is the form etcd stores and the cache folder keeps. It lives in
//! `config` because the compiler needs it too: errors name the key they
//! come from, and a zone's serial follows the revisions of the keys that
//! feed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::config::routing::Routing;
use crate::config::state::{RawEnvironment, RawService, RawState};
use crate::proto::name::Name;

/// Key groups (relative to the prefix) the state is written to.
pub(crate) const ENVIRONMENTS: &str = "environments/";
/// See [`ENVIRONMENTS`].
pub(crate) const SERVICES: &str = "services/";
/// Zone-file texts, by origin.
pub(crate) const ZONES: &str = "zones/";
/// `true` allows a change that removes every service or zone.
pub(crate) const ALLOW_EMPTY: &str = "meta/allow_empty";
/// The write policy (`policy:` of the state file), as JSON.
pub(crate) const POLICY: &str = "meta/policy";

/// A value under the prefix with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) value: String,
    pub(crate) mod_revision: i64,
}

/// The state part of a prefix: keys relative to it, with their values and
/// mod revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyedState {
    /// The prefix, e.g. `/vdh-edge` (keys are `<prefix>/<relative key>`).
    pub(crate) prefix: String,
    /// By key relative to the prefix, with mod revisions.
    pub(crate) entries: BTreeMap<String, Entry>,
}

impl KeyedState {
    /// The full key of a relative key.
    pub(crate) fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix.trim_end_matches('/'))
    }

    /// Reads the state the entries hold. Errors name the key.
    pub(crate) fn raw(&self) -> Result<RawState, Vec<ConfigError>> {
        raw_from_entries(&self.prefix, &self.entries)
    }

    /// Maps a validation path (`services.vdh-api.rules[0]`) to the key it
    /// lives in and the path inside that key's JSON.
    pub(crate) fn locate(&self, path: &str) -> (String, String) {
        for group in ["environments", "services"] {
            if let Some(rest) = path.strip_prefix(&format!("{group}.")) {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let inner = rest[end..].trim_start_matches('.');
                return (
                    self.key(&format!("{group}/{}", &rest[..end])),
                    inner.to_string(),
                );
            }
        }
        (self.key(""), path.to_string())
    }

    /// Highest mod revision among the keys `rels` that exist.
    pub(crate) fn max_revision<'a>(&self, rels: impl Iterator<Item = &'a str>) -> Option<i64> {
        rels.filter_map(|r| self.entries.get(r).map(|e| e.mod_revision))
            .max()
    }

    /// The keys (relative) whose values feed a zone: its own text (when it
    /// came from a key), the environments named in it, and the services
    /// with hostnames in it together with the environments their rules use.
    pub(crate) fn feeding_keys(
        &self,
        routing: &Routing,
        origin: &Name,
        zone_source: &str,
    ) -> Vec<String> {
        let mut keys = Vec::new();
        if zone_source == self.key(&format!("{ZONES}{origin}")) {
            keys.push(format!("{ZONES}{origin}"));
        }
        for env in &routing.environments {
            if env.names.iter().any(|n| n.is_subdomain_of(origin)) {
                keys.push(format!("{ENVIRONMENTS}{}", env.name));
            }
        }
        for svc in &routing.services {
            if svc.hostnames.iter().any(|n| n.is_subdomain_of(origin)) {
                keys.push(format!("{SERVICES}{}", svc.name));
                for r in &svc.rules {
                    keys.push(format!(
                        "{ENVIRONMENTS}{}",
                        routing.environments[r.environment].name
                    ));
                }
            }
        }
        keys
    }
}

/// Reads a state from etcd entries. Errors name the key.
fn raw_from_entries(
    cfg_prefix: &str,
    entries: &BTreeMap<String, Entry>,
) -> Result<RawState, Vec<ConfigError>> {
    let mut raw = RawState::default();
    let mut errors = Vec::new();
    let key = |rel: &str| format!("{}/{rel}", cfg_prefix.trim_end_matches('/'));
    for (rel, e) in entries {
        let err = |m: String| ConfigError {
            source: key(rel),
            line: None,
            message: m,
        };
        if let Some(name) = rel.strip_prefix(ENVIRONMENTS) {
            match serde_json::from_str::<RawEnvironment>(&e.value) {
                Ok(v) => {
                    raw.environments.insert(name.to_string(), v);
                }
                Err(x) => errors.push(err(format!("not a valid environment: {x}"))),
            }
        } else if let Some(name) = rel.strip_prefix(SERVICES) {
            match serde_json::from_str::<RawService>(&e.value) {
                Ok(v) => {
                    raw.services.insert(name.to_string(), v);
                }
                Err(x) => errors.push(err(format!("not a valid service: {x}"))),
            }
        } else if rel == POLICY {
            match serde_json::from_str(&e.value) {
                Ok(p) => raw.policy = p,
                Err(x) => errors.push(err(format!("not a valid policy: {x}"))),
            }
        } else if rel == ALLOW_EMPTY {
            match serde_json::from_str::<bool>(e.value.trim()) {
                Ok(b) => raw.allow_empty = b,
                Err(_) => errors.push(err("must be true or false".into())),
            }
        }
    }
    if errors.is_empty() {
        Ok(raw)
    } else {
        Err(errors)
    }
}

/// The keys (relative) and JSON values that represent `raw`'s
/// environments, services and `allow_empty`.
pub(crate) fn entries_from_raw(raw: &RawState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (n, e) in &raw.environments {
        out.insert(
            format!("{ENVIRONMENTS}{n}"),
            serde_json::to_string(e).expect("serializable"),
        );
    }
    for (n, s) in &raw.services {
        out.insert(
            format!("{SERVICES}{n}"),
            serde_json::to_string(s).expect("serializable"),
        );
    }
    if raw.allow_empty {
        out.insert(ALLOW_EMPTY.into(), "true".into());
    }
    if raw.policy != super::state::RawPolicy::default() {
        out.insert(
            POLICY.into(),
            serde_json::to_string(&raw.policy).expect("serializable"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_state() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap();
        let raw = crate::config::state::from_yaml(&text).unwrap();
        let entries: BTreeMap<String, Entry> = entries_from_raw(&raw)
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    Entry {
                        value: v,
                        mod_revision: 1,
                    },
                )
            })
            .collect();
        assert_eq!(raw_from_entries("/p", &entries).unwrap(), raw);
        let mut bad = entries.clone();
        bad.insert(
            "environments/x".into(),
            Entry {
                value: "{bad".into(),
                mod_revision: 2,
            },
        );
        let e = raw_from_entries("/p", &bad).unwrap_err();
        assert_eq!(e[0].source, "/p/environments/x");
    }
}
