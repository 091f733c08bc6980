//! The records vdh-edge keeps under `<prefix>/meta/`: who changed what
//! (`meta/change`), lowered TTLs (`meta/ttl`) and the drain after a repoint
//! (`meta/drain`). The scheme progress record lives in [`crate::scheme`].

use serde::{Deserialize, Serialize};

/// Who changed what, written with every change.
pub(crate) const CHANGE: &str = "meta/change";
/// Service TTLs lowered ahead of a repoint.
pub(crate) const TTL: &str = "meta/ttl";
/// The drain of the last repoint of a shared hostname.
pub(crate) const DRAIN: &str = "meta/drain";
/// The scheme in progress ([`crate::scheme::SchemeRecord`]).
pub(crate) const SCHEME: &str = "meta/scheme";

/// The `meta/change` record every vdh-edge write carries: the audit
/// trail (`history` reads its versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChangeRecord {
    pub(crate) time: String,
    /// The OS user that ran the command.
    pub(crate) user: String,
    pub(crate) host: String,
    /// The command line, secrets redacted.
    pub(crate) command: String,
    /// What changed: one `+`/`~`/`-` entry per key.
    pub(crate) summary: String,
    /// Who is accountable (`--actor`, else the etcd user, else `user`).
    #[serde(default)]
    pub(crate) actor: String,
    /// Why (`--reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The ticket (`--ticket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ticket: Option<String>,
    /// The keys written or deleted (relative to the prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) keys: Vec<String>,
    /// The actors who approved it (`policy.approvals`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) approved_by: Vec<String>,
    /// Written with `--break-glass`, without the approvals the policy asks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) break_glass: bool,
}

/// Who and why, for a [`ChangeRecord`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Audit {
    pub(crate) actor: String,
    pub(crate) reason: Option<String>,
    pub(crate) ticket: Option<String>,
}

impl ChangeRecord {
    /// A record of `command` written now by this user on this host.
    pub(crate) fn now(
        command: &str,
        summary: String,
        audit: Audit,
        keys: Vec<String>,
    ) -> ChangeRecord {
        let user = crate::util::username();
        ChangeRecord {
            time: crate::util::rfc3339_now(),
            actor: if audit.actor.is_empty() {
                user.clone()
            } else {
                audit.actor
            },
            user,
            host: crate::util::hostname(),
            command: command.to_string(),
            summary,
            reason: audit.reason,
            ticket: audit.ticket,
            keys,
            approved_by: Vec::new(),
            break_glass: false,
        }
    }
}

/// A service TTL lowered ahead of a repoint (`<prefix>/meta/ttl`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TtlLowering {
    pub(crate) old_ttl: u32,
    pub(crate) new_ttl: u32,
    pub(crate) lowered_at: String,
}

/// The drain after a shared hostname was repointed (`<prefix>/meta/drain`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Drain {
    pub(crate) names: Vec<String>,
    pub(crate) changed_at: String,
    /// The largest TTL resolvers may hold for the old answer.
    pub(crate) max_ttl: u32,
    /// changed_at + max_ttl: a lower bound on when every resolver has the
    /// new answer (TTL floors and long-lived connections can hold longer).
    pub(crate) until: String,
}

impl Drain {
    /// Seconds left, 0 when over.
    pub(crate) fn remaining_s(&self) -> u64 {
        crate::util::parse_rfc3339(&self.until)
            .and_then(|u| u.duration_since(std::time::SystemTime::now()).ok())
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}
