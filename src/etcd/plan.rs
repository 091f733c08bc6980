//! Planning a change to a prefix and writing it in one compared
//! transaction within etcd's limits.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::client::{EtcdConfig, EtcdError, Retry};
use super::meta::{self, ChangeRecord};
use super::prefix::PrefixState;
use crate::config::keyed::Entry;

/// Most operations (and, separately, compares) in one transaction
/// (etcd's `--max-txn-ops` default).
pub(crate) const MAX_TXN_OPS: usize = 128;
/// Largest request etcd accepts by default (`--max-request-bytes`).
pub(crate) const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Whether a commit compares the keys it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Compare every key read (`mod_revision ==`): a concurrent write makes
    /// the commit fail with [`EtcdError::Conflict`].
    CompareReads,
    /// `--force`: write whatever happened meanwhile.
    Force,
}

impl Guard {
    /// From the `--force` flag.
    pub(crate) fn from_force(force: bool) -> Guard {
        if force {
            Guard::Force
        } else {
            Guard::CompareReads
        }
    }
}

/// One planned key change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// Create or replace a key (relative to the prefix).
    Put { key: String, value: String },
    /// Delete a key (relative to the prefix).
    Delete { key: String },
}

impl Op {
    /// The key it writes or deletes.
    pub(crate) fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A planned change: what to write, and what was read to decide it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    /// The writes, in order.
    pub(crate) ops: Vec<Op>,
    /// Keys read (relative) with the mod_revision seen (0: absent).
    pub(crate) compares: BTreeMap<String, i64>,
}

/// True when two values mean the same (JSON compared as values, so
/// formatting done by hand with etcdctl does not count as a change).
fn same_value(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Plans the change from `current` to `desired` over the key groups
/// `owned` (relative prefixes such as `environments/`): puts for new or
/// changed keys, deletes for keys that are gone. Every key of those groups
/// that was read, and every key created, is compared.
pub(crate) fn plan(
    current: &PrefixState,
    desired: &BTreeMap<String, String>,
    owned: &[&str],
) -> Plan {
    let mut p = Plan::default();
    let is_owned = |k: &str| owned.iter().any(|o| k.starts_with(o));
    for (k, e) in current.entries.iter().filter(|(k, _)| is_owned(k)) {
        p.compares.insert(k.clone(), e.mod_revision);
        if !desired.contains_key(k) {
            p.ops.push(Op::Delete { key: k.clone() });
        }
    }
    for (k, v) in desired.iter().filter(|(k, _)| is_owned(k)) {
        match current.entries.get(k) {
            Some(e) if same_value(&e.value, v) => {}
            Some(_) => p.ops.push(Op::Put {
                key: k.clone(),
                value: v.clone(),
            }),
            None => {
                p.compares.insert(k.clone(), 0);
                p.ops.push(Op::Put {
                    key: k.clone(),
                    value: v.clone(),
                });
            }
        }
    }
    p
}

impl Plan {
    /// `+ key`, `~ key`, `- key` lines.
    pub(crate) fn summary_lines(&self, current: &PrefixState) -> Vec<String> {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } if current.entries.contains_key(key) => format!("~ {key}"),
                Op::Put { key, .. } => format!("+ {key}"),
                Op::Delete { key } => format!("- {key}"),
            })
            .collect()
    }

    /// Per changed key, the fields that change (`~ services/vdh-api:
    /// rules[0].environment: "prod" -> "prod-v1"`); added and removed keys
    /// are one line each.
    pub(crate) fn field_lines(&self, current: &PrefixState) -> Vec<String> {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                Op::Put { key, value } => match current.entries.get(key) {
                    Some(old) => {
                        for d in field_diff(&old.value, value) {
                            out.push(format!("~ {key}: {d}"));
                        }
                    }
                    None => out.push(format!("+ {key}")),
                },
                Op::Delete { key } => out.push(format!("- {key}")),
            }
        }
        out
    }

    /// The entries the prefix holds after this plan (new values carry the
    /// next revision).
    pub(crate) fn after(&self, current: &PrefixState) -> BTreeMap<String, Entry> {
        let mut e = current.entries.clone();
        for op in &self.ops {
            match op {
                Op::Put { key, value } => {
                    e.insert(
                        key.clone(),
                        Entry {
                            value: value.clone(),
                            mod_revision: current.revision + 1,
                        },
                    );
                }
                Op::Delete { key } => {
                    e.remove(key);
                }
            }
        }
        e
    }

    /// Refuses a transaction etcd would refuse: more than
    /// [`MAX_TXN_OPS`] operations or compares, or over
    /// [`MAX_REQUEST_BYTES`]. `dir_len` is the length of `<prefix>/`.
    pub(crate) fn check_limits(
        &self,
        dir_len: usize,
        change_json: &str,
        extra: &[(String, String)],
        guard: Guard,
    ) -> Result<(), EtcdError> {
        let mut bytes = 0usize;
        for op in &self.ops {
            bytes += match op {
                Op::Put { key, value } => key.len() + value.len() + dir_len + 16,
                Op::Delete { key } => key.len() + dir_len + 16,
            };
        }
        for (k, v) in extra {
            bytes += k.len() + v.len() + dir_len + 16;
        }
        bytes += change_json.len() + 64;
        let ops = self.ops.len() + extra.len() + 1;
        let compares = match guard {
            Guard::CompareReads => self.compares.len(),
            Guard::Force => 0,
        };
        bytes += compares * (dir_len + 48);
        if ops > MAX_TXN_OPS {
            return Err(EtcdError::TooManyOps(ops));
        }
        if compares > MAX_TXN_OPS {
            return Err(EtcdError::TooManyCompares(compares));
        }
        if bytes > MAX_REQUEST_BYTES {
            return Err(EtcdError::TooLarge(bytes / 1024));
        }
        Ok(())
    }

    /// Writes the plan and `meta/change` (and any `extra` puts) in one
    /// transaction that compares every key read (unless `guard` is
    /// [`Guard::Force`]); returns the new revision.
    ///
    /// Retried through elections: after a transient error it checks whether
    /// the write landed (its `meta/change` record is there) before trying
    /// again, so a write is never applied twice and a landed write is not
    /// reported as a conflict.
    pub(crate) async fn commit(
        &self,
        client: &mut Client,
        cfg: &EtcdConfig,
        change: &ChangeRecord,
        extra: &[(String, String)],
        guard: Guard,
    ) -> Result<i64, EtcdError> {
        self.commit_with(client, cfg, change, extra, guard, None)
            .await
    }

    /// [`Plan::commit`], also comparing and rewriting `companion` (a key
    /// outside the prefix, e.g. the autopilot job this commit advances) in
    /// the same transaction: the commit happens only if the companion is
    /// still at its `mod_revision`.
    pub(crate) async fn commit_with(
        &self,
        client: &mut Client,
        cfg: &EtcdConfig,
        change: &ChangeRecord,
        extra: &[(String, String)],
        guard: Guard,
        companion: Option<&Companion>,
    ) -> Result<i64, EtcdError> {
        let change_json = serde_json::to_string(change).expect("serializable");
        self.check_limits(cfg.dir().len(), &change_json, extra, guard)?;
        let txn = self.txn(cfg, &change_json, extra, guard, companion);
        let mut retry = Retry::new();
        loop {
            match send(client, txn.clone()).await {
                Err(e) if retry.again(&e).await => {
                    if let Ok(r) = client.get(cfg.key(meta::CHANGE), None).await
                        && let Some(kv) = r.kvs().first()
                        && kv.value() == change_json.as_bytes()
                    {
                        return Ok(kv.mod_revision());
                    }
                }
                other => return other,
            }
        }
    }

    /// The transaction: compares (per `guard`), then the plan's operations,
    /// the `extra` puts and `meta/change`.
    fn txn(
        &self,
        cfg: &EtcdConfig,
        change_json: &str,
        extra: &[(String, String)],
        guard: Guard,
        companion: Option<&Companion>,
    ) -> Txn {
        let mut ops: Vec<TxnOp> = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(cfg.key(key), value.as_str(), None),
                Op::Delete { key } => TxnOp::delete(cfg.key(key), None),
            })
            .collect();
        for (k, v) in extra {
            ops.push(TxnOp::put(cfg.key(k), v.as_str(), None));
        }
        ops.push(TxnOp::put(cfg.key(meta::CHANGE), change_json, None));
        let mut compares: Vec<Compare> = match guard {
            Guard::Force => Vec::new(),
            Guard::CompareReads => self
                .compares
                .iter()
                .map(|(k, rev)| Compare::mod_revision(cfg.key(k), CompareOp::Equal, *rev))
                .collect(),
        };
        if let Some(c) = companion {
            compares.push(Compare::mod_revision(
                c.key.as_str(),
                CompareOp::Equal,
                c.mod_revision,
            ));
            ops.push(TxnOp::put(c.key.as_str(), c.value.as_str(), None));
        }
        Txn::new().when(compares).and_then(ops)
    }
}

/// A key written with a commit, only if unchanged since it was read.
#[derive(Debug, Clone)]
pub(crate) struct Companion {
    /// The full etcd key.
    pub(crate) key: String,
    /// Its `mod_revision` when read.
    pub(crate) mod_revision: i64,
    /// What to write there with the commit.
    pub(crate) value: String,
}

/// Sends one transaction; a failed compare is a [`EtcdError::Conflict`].
async fn send(client: &mut Client, txn: Txn) -> Result<i64, EtcdError> {
    let resp = client.txn(txn).await?;
    if !resp.succeeded() {
        return Err(EtcdError::Conflict);
    }
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// The leaves of a JSON value by path (`rules[0].match.sdk_version`).
fn leaves(v: &serde_json::Value, path: &str, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, &join(k), out);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().any(|x| x.is_object() || x.is_array()) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, &format!("{path}[{i}]"), out);
            }
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

/// The fields that differ between two JSON texts, one line each:
/// `path: old -> new`, `path: + new`, `path: - old`. Texts that are not
/// JSON compare whole.
pub(crate) fn field_diff(old: &str, new: &str) -> Vec<String> {
    let (Ok(a), Ok(b)) = (
        serde_json::from_str::<serde_json::Value>(old),
        serde_json::from_str::<serde_json::Value>(new),
    ) else {
        return if old == new {
            vec![]
        } else {
            vec![format!("{} bytes -> {} bytes", old.len(), new.len())]
        };
    };
    let (mut la, mut lb) = (BTreeMap::new(), BTreeMap::new());
    leaves(&a, "", &mut la);
    leaves(&b, "", &mut lb);
    let mut out = Vec::new();
    for (p, va) in &la {
        let name = if p.is_empty() { "(value)" } else { p.as_str() };
        match lb.get(p) {
            Some(vb) if vb == va => {}
            Some(vb) => out.push(format!("{name}: {va} -> {vb}")),
            None => out.push(format!("{name}: - {va}")),
        }
    }
    for (p, vb) in &lb {
        if !la.contains_key(p) {
            let name = if p.is_empty() { "(value)" } else { p.as_str() };
            out.push(format!("{name}: + {vb}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(&str, &str, i64)]) -> PrefixState {
        PrefixState {
            revision: 10,
            cluster_id: 1,
            entries: entries
                .iter()
                .map(|(k, v, r)| {
                    (
                        k.to_string(),
                        Entry {
                            value: v.to_string(),
                            mod_revision: *r,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn plans_only_what_changed() {
        let cur = state(&[
            ("environments/a", "{\"x\": 1}", 3),
            ("environments/b", "{}", 4),
            ("zones/z.", "text", 5),
        ]);
        let desired: BTreeMap<String, String> =
            [("environments/a", "{\"x\":1}"), ("services/s", "{}")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let p = plan(&cur, &desired, &["environments/", "services/"]);
        assert_eq!(
            p.ops,
            vec![
                Op::Delete {
                    key: "environments/b".into()
                },
                Op::Put {
                    key: "services/s".into(),
                    value: "{}".into()
                }
            ]
        );
        let want: BTreeMap<String, i64> = [
            ("environments/a", 3),
            ("environments/b", 4),
            ("services/s", 0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(
            p.compares, want,
            "every key read is compared, zones are not owned"
        );
    }

    #[test]
    fn after_applies_puts_and_deletes() {
        let cur = state(&[("environments/a", "1", 3), ("environments/b", "2", 4)]);
        let desired: BTreeMap<String, String> = [("environments/a", "9")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = plan(&cur, &desired, &["environments/"]);
        let after = p.after(&cur);
        assert_eq!(after.len(), 1);
        assert_eq!(after["environments/a"].value, "9");
        assert_eq!(after["environments/a"].mod_revision, 11);
        assert_eq!(
            p.summary_lines(&cur),
            vec![
                "- environments/b".to_string(),
                "~ environments/a".to_string()
            ]
        );
    }

    #[test]
    fn field_diffs_name_each_changed_leaf() {
        let old = r#"{"ttl":60,"rules":[{"name":"a","environment":"prod"}],"hostnames":["x."]}"#;
        let new = r#"{"ttl":30,"rules":[{"name":"a","environment":"prod-v1"}],"hostnames":["x.","y."],"refresh_s":5}"#;
        assert_eq!(
            field_diff(old, new),
            vec![
                r#"hostnames: ["x."] -> ["x.","y."]"#.to_string(),
                r#"rules[0].environment: "prod" -> "prod-v1""#.to_string(),
                "ttl: 60 -> 30".to_string(),
                "refresh_s: + 5".to_string(),
            ]
        );
        assert!(field_diff(old, old).is_empty());
        assert_eq!(field_diff("true", "false"), vec!["(value): true -> false"]);
    }

    #[test]
    fn limits_are_checked_before_writing() {
        let cur = state(&[]);
        let many: BTreeMap<String, String> = (0..MAX_TXN_OPS)
            .map(|i| (format!("environments/e{i}"), "{}".to_string()))
            .collect();
        let p = plan(&cur, &many, &["environments/"]);
        // 128 puts plus meta/change: one operation too many.
        let e = p
            .check_limits(10, "{}", &[], Guard::CompareReads)
            .unwrap_err();
        assert!(matches!(e, EtcdError::TooManyOps(129)), "{e}");
        assert!(e.to_string().contains("--max-txn-ops"), "{e}");
        let fits: BTreeMap<String, String> = many.into_iter().take(MAX_TXN_OPS - 1).collect();
        let p = plan(&cur, &fits, &["environments/"]);
        assert!(p.check_limits(10, "{}", &[], Guard::CompareReads).is_ok());
        // One extra meta key tips it over again.
        let extra = [("meta/drain".to_string(), "{}".to_string())];
        assert!(
            p.check_limits(10, "{}", &extra, Guard::CompareReads)
                .is_err()
        );
        let big: BTreeMap<String, String> =
            [("services/s".to_string(), "x".repeat(MAX_REQUEST_BYTES))].into();
        let p = plan(&cur, &big, &["services/"]);
        let e = p.check_limits(10, "{}", &[], Guard::Force).unwrap_err();
        assert!(matches!(e, EtcdError::TooLarge(_)), "{e}");
    }

    #[test]
    fn compares_are_limited_unless_forced() {
        let entries: Vec<(String, String, i64)> = (0..=MAX_TXN_OPS)
            .map(|i| (format!("services/s{i}"), "{}".to_string(), 2))
            .collect();
        let refs: Vec<(&str, &str, i64)> = entries
            .iter()
            .map(|(k, v, r)| (k.as_str(), v.as_str(), *r))
            .collect();
        let cur = state(&refs);
        let desired: BTreeMap<String, String> = entries
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        let p = plan(&cur, &desired, &["services/"]);
        assert!(p.ops.is_empty(), "nothing changed");
        let e = p
            .check_limits(10, "{}", &[], Guard::CompareReads)
            .unwrap_err();
        assert!(matches!(e, EtcdError::TooManyCompares(129)), "{e}");
        assert!(p.check_limits(10, "{}", &[], Guard::Force).is_ok());
    }
}
