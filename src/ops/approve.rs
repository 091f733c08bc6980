//! Four eyes: with `policy.approvals: N` in the live state a write becomes
//! a proposal under `<prefix>-proposals/<id>` (its plan, the revision it
//! was read at, proposer, reason); `approve ID` by other actors adds
//! approvals, and the Nth commits the plan with the usual per-key compares
//! (refused, and the proposal dropped, when the live state moved since);
//! `reject ID` drops it; `proposals` lists them.

use std::fmt::Write as _;

use anyhow::anyhow;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::require_etcd;
use super::write::actor_of;
use crate::cli::{ProposalArgs, ProposalsArgs};
use crate::etcd::meta::{Audit, ChangeRecord};
use crate::etcd::plan::{Guard, Plan};
use crate::etcd::{EtcdConfig, EtcdError};

/// A change waiting for approvals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Proposal {
    pub(crate) id: String,
    pub(crate) created: String,
    pub(crate) proposer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ticket: Option<String>,
    pub(crate) summary: String,
    pub(crate) command: String,
    /// The revision the plan was made against.
    pub(crate) base_revision: i64,
    pub(crate) plan: Plan,
    pub(crate) extra: Vec<(String, String)>,
    /// `--force` given when proposing: commit without the compares.
    pub(crate) force: bool,
    pub(crate) needed: u32,
    pub(crate) approvals: Vec<String>,
}

impl Proposal {
    /// A proposal of `plan` by the audited actor.
    #[allow(clippy::too_many_arguments)] // one call site, every field named there
    pub(crate) fn new(
        audit: &Audit,
        summary: &str,
        command: &str,
        base_revision: i64,
        plan: Plan,
        extra: Vec<(String, String)>,
        needed: u32,
        force: bool,
    ) -> Proposal {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Proposal {
            id: format!("p{now:x}{:x}", std::process::id() & 0xfff),
            created: crate::util::rfc3339_now(),
            proposer: audit.actor.clone(),
            reason: audit.reason.clone(),
            ticket: audit.ticket.clone(),
            summary: summary.to_string(),
            command: command.to_string(),
            base_revision,
            plan,
            extra,
            force,
            needed,
            approvals: Vec::new(),
        }
    }
}

/// `<prefix>-proposals/`.
fn dir(cfg: &EtcdConfig) -> String {
    format!("{}-proposals/", cfg.prefix.trim_end_matches('/'))
}

/// Stores a new proposal; returns its id.
pub(crate) async fn propose(
    client: &mut Client,
    cfg: &EtcdConfig,
    p: Proposal,
) -> anyhow::Result<String> {
    let key = format!("{}{}", dir(cfg), p.id);
    let value = serde_json::to_string(&p).expect("serializable");
    // Create only: never overwrite a proposal.
    let txn = Txn::new()
        .when(vec![Compare::version(key.as_str(), CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(key.as_str(), value, None)]);
    let r = client.txn(txn).await.map_err(EtcdError::from)?;
    if !r.succeeded() {
        return Err(anyhow!("proposal {} exists already; try again", p.id));
    }
    Ok(p.id)
}

/// Reads one proposal and its mod_revision.
async fn read(client: &mut Client, cfg: &EtcdConfig, id: &str) -> anyhow::Result<(Proposal, i64)> {
    let key = format!("{}{id}", dir(cfg));
    let r = client
        .get(key.as_str(), None)
        .await
        .map_err(EtcdError::from)?;
    let kv = r
        .kvs()
        .first()
        .ok_or_else(|| anyhow!("no proposal {id} (see `vdh-edge proposals`)"))?;
    let p = serde_json::from_slice(kv.value())
        .map_err(|e| anyhow!("proposal {id} is not readable: {e}"))?;
    Ok((p, kv.mod_revision()))
}

/// Deletes a proposal.
async fn drop_proposal(client: &mut Client, cfg: &EtcdConfig, id: &str) -> anyhow::Result<()> {
    client
        .delete(format!("{}{id}", dir(cfg)), None)
        .await
        .map_err(EtcdError::from)?;
    Ok(())
}

/// `vdh-edge approve ID`.
pub(crate) async fn approve(args: &ProposalArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "approve")?;
    let mut client = cfg.connect_live().await?;
    let actor = actor_of(&cfg, args.actor.as_deref());
    if super::autopilot::is_job_id(&args.id) {
        return super::autopilot::approve(&mut client, &cfg, &args.id, &actor).await;
    }
    let (mut p, at) = read(&mut client, &cfg, &args.id).await?;
    if actor == p.proposer {
        return Err(anyhow!(
            "refused: {actor} proposed {}; an approval must come from another actor",
            p.id
        ));
    }
    if p.approvals.contains(&actor) {
        return Err(anyhow!("refused: {actor} has approved {} already", p.id));
    }
    p.approvals.push(actor.clone());
    let have = u32::try_from(p.approvals.len()).unwrap_or(u32::MAX);
    if have < p.needed {
        // Record the approval unless someone else changed the proposal.
        let key = format!("{}{}", dir(&cfg), p.id);
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                at,
            )])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                serde_json::to_string(&p).expect("serializable"),
                None,
            )]);
        let r = client.txn(txn).await.map_err(EtcdError::from)?;
        if !r.succeeded() {
            return Err(anyhow!(
                "proposal {} changed meanwhile; approve again",
                p.id
            ));
        }
        return Ok(format!(
            "approved {} by {actor} ({have} of {})",
            p.id, p.needed
        ));
    }
    commit(&mut client, &cfg, &p, &actor).await
}

/// Commits an approved proposal with the usual compares; a proposal whose
/// base moved is refused and dropped. Either way it leaves the list.
async fn commit(
    client: &mut Client,
    cfg: &EtcdConfig,
    p: &Proposal,
    actor: &str,
) -> anyhow::Result<String> {
    let mut record = ChangeRecord::now(
        &p.command,
        p.summary.clone(),
        Audit {
            actor: p.proposer.clone(),
            reason: p.reason.clone(),
            ticket: p.ticket.clone(),
        },
        p.plan.ops.iter().map(|op| op.key().to_string()).collect(),
    );
    record.approved_by = p.approvals.clone();
    let committed = p
        .plan
        .commit(client, cfg, &record, &p.extra, Guard::from_force(p.force))
        .await;
    match committed {
        Ok(rev) => {
            drop_proposal(client, cfg, &p.id).await?;
            Ok(format!(
                "approved {} by {actor}: committed, revision {rev} (approved by {})",
                p.id,
                p.approvals.join(", ")
            ))
        }
        Err(EtcdError::Conflict) => {
            drop_proposal(client, cfg, &p.id).await?;
            Err(anyhow!(
                "refused: {} changed since proposal {} was made at revision {}; nothing was written and the proposal is dropped: propose it again",
                cfg.dir(),
                p.id,
                p.base_revision
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `vdh-edge reject ID`.
pub(crate) async fn reject(args: &ProposalArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "reject")?;
    let mut client = cfg.connect_live().await?;
    let (p, _) = read(&mut client, &cfg, &args.id).await?;
    drop_proposal(&mut client, &cfg, &p.id).await?;
    let actor = actor_of(&cfg, args.actor.as_deref());
    let why = args
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(": {r}"));
    Ok(format!(
        "rejected {} (proposed by {}) by {actor}{why}",
        p.id, p.proposer
    ))
}

/// `vdh-edge proposals`.
pub(crate) async fn list(args: &ProposalsArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "proposals")?;
    let mut client = cfg.connect_live().await?;
    let r = client
        .get(dir(&cfg), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(EtcdError::from)?;
    let all: Vec<Proposal> = r
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    if args.json {
        return Ok(serde_json::to_string_pretty(&all).expect("serializable"));
    }
    let mut out = String::new();
    if all.is_empty() {
        let _ = writeln!(out, "no proposals under {}", dir(&cfg));
    }
    for p in &all {
        let _ = writeln!(
            out,
            "{}  {} by {}  {} of {} approvals  base revision {}  {}{}",
            p.id,
            p.created,
            p.proposer,
            p.approvals.len(),
            p.needed,
            p.base_revision,
            p.summary,
            p.reason
                .as_deref()
                .map_or(String::new(), |r| format!("  reason: {r}"))
        );
    }
    Ok(out)
}
