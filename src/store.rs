//! The etcd layout (SPEC §7) and everything that reads or writes it as a
//! whole: connecting, reading the prefix at a revision, turning keys into a
//! [`RawState`] and back, and writing a change in one compared transaction
//! within etcd's limits.
//!
//! Keys, under a prefix such as `/vdh-edge` (always read as `<prefix>/`):
//! `environments/<name>` and `services/<name>` (JSON), `zones/<origin>`
//! (zone-file text), `meta/allow_empty` (`true`), `meta/scheme` and
//! `meta/change` (JSON written by vdh-edge). Edges register under
//! `<prefix>-edges/<edge-id>`, outside the prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::snapshot::ConfigError;
use crate::state::{RawEnvironment, RawService, RawState};

/// Most operations (and, separately, compares) in one transaction
/// (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;
/// Largest request etcd accepts by default (`--max-request-bytes`).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<(String, String)>,
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// Errors talking to etcd or about what is in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Config(String),
    #[error("revision {wanted} is no longer in etcd (compacted); the oldest available is {oldest}")]
    Compacted { wanted: i64, oldest: i64 },
    #[error(
        "etcd changed since the state was read (a key was written or deleted concurrently); read again, or use --force"
    )]
    Conflict,
    #[error("{0}")]
    Limit(String),
}

impl EtcdConfig {
    /// `<prefix>/`: the range every read, watch, compare and delete uses.
    pub fn dir(&self) -> String {
        format!("{}/", self.prefix.trim_end_matches('/'))
    }

    /// Where edges register.
    pub fn edges_dir(&self) -> String {
        format!("{}-edges/", self.prefix.trim_end_matches('/'))
    }

    /// Full key of a key relative to the prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.dir())
    }

    /// Connects (lazily: etcd may be down; the first call then fails).
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let mut opts = ConnectOptions::new()
            // Below 5 s etcd drops the connection; 10 s works (FACTS).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_require_leader(true);
        if let Some((u, p)) = &self.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if self.ca.is_some() || self.cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| StoreError::Config(format!("{}: {e}", ca.display())))?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    let cert = std::fs::read(c)
                        .map_err(|e| StoreError::Config(format!("{}: {e}", c.display())))?;
                    let key = std::fs::read(k)
                        .map_err(|e| StoreError::Config(format!("{}: {e}", k.display())))?;
                    tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "--etcd-cert and --etcd-key go together".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        Ok(Client::connect(&self.endpoints, Some(opts)).await?)
    }
}

/// A value under the prefix with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub value: String,
    pub mod_revision: i64,
}

/// The prefix as read at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixState {
    pub revision: i64,
    pub cluster_id: u64,
    /// By key relative to the prefix (`environments/prod`).
    pub entries: BTreeMap<String, Entry>,
}

impl PrefixState {
    /// Reads `<prefix>/` at `revision` (0: the latest).
    pub async fn read(
        client: &mut Client,
        cfg: &EtcdConfig,
        revision: i64,
    ) -> Result<PrefixState, StoreError> {
        let mut opts = GetOptions::new().with_prefix();
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = match client.get(cfg.dir(), Some(opts)).await {
            Ok(r) => r,
            Err(e) if e.to_string().contains("compacted") => {
                return Err(StoreError::Compacted {
                    wanted: revision,
                    oldest: oldest_revision(client, cfg).await.unwrap_or(0),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let header = resp
            .header()
            .ok_or_else(|| StoreError::Config("etcd answered without a header".into()))?;
        let dir = cfg.dir();
        let mut entries = BTreeMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let Some(rel) = key.strip_prefix(&dir) else {
                continue;
            };
            entries.insert(
                rel.to_string(),
                Entry {
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    mod_revision: kv.mod_revision(),
                },
            );
        }
        Ok(PrefixState {
            revision: if revision > 0 {
                revision
            } else {
                header.revision()
            },
            cluster_id: header.cluster_id(),
            entries,
        })
    }

    /// Zone texts stored in etcd, by origin.
    pub fn zones(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| k.strip_prefix("zones/").map(|o| (o, e)))
    }
}

/// True for errors that say "try again" (no leader, leader changed, member
/// unreachable, timeout) rather than "no".
pub fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Etcd(etcd_client::Error::GRpcStatus(s)) => {
            matches!(
                s.code(),
                tonic_code::Unavailable | tonic_code::DeadlineExceeded | tonic_code::Unknown
            ) || s.message().contains("leader")
        }
        StoreError::Etcd(
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_),
        ) => true,
        _ => false,
    }
}

use tonic::Code as tonic_code;

/// Retries of an operator command through an election: up to 15 s, waits
/// doubling from 100 ms to 1 s.
struct Retry {
    deadline: std::time::Instant,
    delay: Duration,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            deadline: std::time::Instant::now() + Duration::from_secs(15),
            delay: Duration::from_millis(100),
        }
    }

    /// Waits before the next try; false when `e` is final or time is up.
    async fn again(&mut self, e: &StoreError) -> bool {
        if !is_transient(e) || std::time::Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(1));
        true
    }
}

/// Reads the prefix, retrying transient errors for up to 15 s (an election
/// takes a second or two).
pub async fn read_with_retry(
    client: &mut Client,
    cfg: &EtcdConfig,
    revision: i64,
) -> Result<PrefixState, StoreError> {
    let mut retry = Retry::new();
    loop {
        match PrefixState::read(client, cfg, revision).await {
            Err(e) if retry.again(&e).await => {}
            other => return other,
        }
    }
}

/// The oldest revision etcd still holds (its compaction point + 1, or 1).
pub async fn oldest_revision(client: &mut Client, cfg: &EtcdConfig) -> Result<i64, StoreError> {
    // Watching from revision 1 is canceled with the compaction point when
    // history was compacted; otherwise it is created and stays open.
    let opts = etcd_client::WatchOptions::new()
        .with_start_revision(1)
        .with_prefix();
    let mut stream = client.watch(cfg.dir(), Some(opts)).await?;
    let mut oldest = 1;
    // First comes `created`; a compacted start then gets `canceled`.
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_millis(800), stream.message()).await {
            Ok(Ok(Some(resp))) if resp.canceled() => {
                if resp.compact_revision() > 0 {
                    oldest = resp.compact_revision();
                }
                break;
            }
            Ok(Ok(Some(resp))) if resp.created() => continue,
            _ => break,
        }
    }
    Ok(oldest)
}

/// The `meta/change` record every vdh-edge write carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub time: String,
    pub user: String,
    pub host: String,
    pub command: String,
    pub summary: String,
}

impl ChangeRecord {
    pub fn now(command: &str, summary: String) -> ChangeRecord {
        ChangeRecord {
            time: crate::util::rfc3339_now(),
            user: crate::util::username(),
            host: crate::util::hostname(),
            command: command.to_string(),
            summary,
        }
    }
}

/// Reads a state from etcd entries. Errors name the key.
pub fn raw_from_entries(
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
        if let Some(name) = rel.strip_prefix("environments/") {
            match serde_json::from_str::<RawEnvironment>(&e.value) {
                Ok(v) => {
                    raw.environments.insert(name.to_string(), v);
                }
                Err(x) => errors.push(err(format!("not a valid environment: {x}"))),
            }
        } else if let Some(name) = rel.strip_prefix("services/") {
            match serde_json::from_str::<RawService>(&e.value) {
                Ok(v) => {
                    raw.services.insert(name.to_string(), v);
                }
                Err(x) => errors.push(err(format!("not a valid service: {x}"))),
            }
        } else if rel == "meta/allow_empty" {
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
pub fn entries_from_raw(raw: &RawState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (n, e) in &raw.environments {
        out.insert(
            format!("environments/{n}"),
            serde_json::to_string(e).expect("serializable"),
        );
    }
    for (n, s) in &raw.services {
        out.insert(
            format!("services/{n}"),
            serde_json::to_string(s).expect("serializable"),
        );
    }
    if raw.allow_empty {
        out.insert("meta/allow_empty".into(), "true".into());
    }
    out
}

/// One planned key change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: String },
    Delete { key: String },
}

/// A planned change: what to write, and what was read to decide it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Keys read (relative) with the mod_revision seen (0: absent).
    pub compares: BTreeMap<String, i64>,
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
pub fn plan(current: &PrefixState, desired: &BTreeMap<String, String>, owned: &[&str]) -> Plan {
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
    pub fn summary_lines(&self, current: &PrefixState) -> Vec<String> {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } if current.entries.contains_key(key) => format!("~ {key}"),
                Op::Put { key, .. } => format!("+ {key}"),
                Op::Delete { key } => format!("- {key}"),
            })
            .collect()
    }

    /// [`Plan::commit`], retried through elections: after a transient error
    /// it checks whether the write landed (its `meta/change` record is
    /// there) before trying again, so a write is never applied twice and a
    /// landed write is not reported as a conflict.
    pub async fn commit_with_retry(
        &self,
        client: &mut Client,
        cfg: &EtcdConfig,
        change: &ChangeRecord,
        extra: &[(String, String)],
        force: bool,
    ) -> Result<i64, StoreError> {
        let ours = serde_json::to_string(change).expect("serializable");
        let mut retry = Retry::new();
        loop {
            match self.commit(client, cfg, change, extra, force).await {
                Err(e) if retry.again(&e).await => {
                    if let Ok(r) = client.get(cfg.key("meta/change"), None).await
                        && let Some(kv) = r.kvs().first()
                        && kv.value() == ours.as_bytes()
                    {
                        return Ok(kv.mod_revision());
                    }
                }
                other => return other,
            }
        }
    }

    /// Writes the plan and `meta/change` (and any `extra` puts) in one
    /// transaction that compares every key read, unless `force`. Returns the
    /// new revision.
    pub async fn commit(
        &self,
        client: &mut Client,
        cfg: &EtcdConfig,
        change: &ChangeRecord,
        extra: &[(String, String)],
        force: bool,
    ) -> Result<i64, StoreError> {
        let mut ops = Vec::new();
        let mut bytes = 0usize;
        for op in &self.ops {
            match op {
                Op::Put { key, value } => {
                    bytes += key.len() + value.len() + cfg.dir().len() + 16;
                    ops.push(TxnOp::put(cfg.key(key), value.as_str(), None));
                }
                Op::Delete { key } => {
                    bytes += key.len() + cfg.dir().len() + 16;
                    ops.push(TxnOp::delete(cfg.key(key), None));
                }
            }
        }
        for (k, v) in extra {
            bytes += k.len() + v.len() + cfg.dir().len() + 16;
            ops.push(TxnOp::put(cfg.key(k), v.as_str(), None));
        }
        let change_json = serde_json::to_string(change).expect("serializable");
        bytes += change_json.len() + 64;
        ops.push(TxnOp::put(cfg.key("meta/change"), change_json, None));
        let compares: Vec<Compare> = if force {
            Vec::new()
        } else {
            self.compares
                .iter()
                .map(|(k, rev)| Compare::mod_revision(cfg.key(k), CompareOp::Equal, *rev))
                .collect()
        };
        bytes += compares.len() * (cfg.dir().len() + 48);
        if ops.len() > MAX_TXN_OPS {
            return Err(StoreError::Limit(format!(
                "the change needs {} operations in one transaction; etcd allows {MAX_TXN_OPS} (--max-txn-ops): split it into smaller changes",
                ops.len()
            )));
        }
        if compares.len() > MAX_TXN_OPS {
            return Err(StoreError::Limit(format!(
                "the change compares {} keys in one transaction; etcd allows {MAX_TXN_OPS} (--max-txn-ops): use fewer environments and services per prefix, or --force",
                compares.len()
            )));
        }
        if bytes > MAX_REQUEST_BYTES {
            return Err(StoreError::Limit(format!(
                "the change is about {} KiB; etcd accepts requests up to 1.5 MiB (--max-request-bytes): split it into smaller changes",
                bytes / 1024
            )));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = client.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::Conflict);
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }
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
    fn round_trips_a_state() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap();
        let raw = crate::state::from_yaml(&text).unwrap();
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
