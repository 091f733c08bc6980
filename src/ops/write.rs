//! Writing a plan: show it, refuse what needs `--force`, ask, commit.

use anyhow::anyhow;

use super::autopilot::{Job, JobKind, ScheduledWrite};
use super::confirm::confirm;
use super::preview::Prepared;
use crate::cli::WriteArgs;
use crate::config::keyed;
use crate::config::state::RawPolicy;
use crate::etcd::meta::{Audit, ChangeRecord};
use crate::etcd::plan::{Guard, Plan};
use crate::etcd::{EtcdConfig, EtcdError, PrefixState};

/// One change ready to be written.
pub(crate) struct Change<'a> {
    /// The prefix as read.
    pub(crate) current: &'a PrefixState,
    /// The keys to write.
    pub(crate) plan: &'a Plan,
    /// The preview and the extra `meta/` keys.
    pub(crate) prepared: &'a Prepared,
    /// What the change is, for `meta/change` (`apply state.yaml`).
    pub(crate) what: String,
    /// A rollback (which `policy.rollback_without_approval` lets skip the
    /// approvals).
    pub(crate) rollback: bool,
}

/// What came of a write.
#[derive(Debug)]
pub(crate) enum Written {
    /// Committed at this revision.
    Revision(i64),
    /// Stored as a proposal waiting for approvals.
    Proposed { id: String, needed: u32 },
    /// Stored for the autopilot to commit at `at`.
    Scheduled { id: String, at: String, needed: u32 },
}

impl Written {
    /// The line a command prints: `ok` for a commit (e.g. `applied:
    /// revision 7`, given the revision), or how to approve the proposal.
    pub(crate) fn text(&self, ok: impl FnOnce(i64) -> String) -> String {
        match self {
            Written::Revision(rev) => ok(*rev),
            Written::Proposed { id, needed } => format!(
                "proposed {id}: nothing is written until {needed} other actor(s) approve it: vdh-edge approve {id} (or reject {id})"
            ),
            Written::Scheduled { id, at, needed } => format!(
                "scheduled {id}: the autopilot commits it at {at} if the keys it read are unchanged then{} (vdh-edge schedule list; vdh-edge schedule cancel {id})",
                if *needed > 0 {
                    format!(", once {needed} other actor(s) approve it: vdh-edge approve {id}")
                } else {
                    String::new()
                }
            ),
        }
    }

    /// `(outcome, written revision, proposal id)` for `--json`.
    pub(crate) fn json_parts(&self) -> (&'static str, Option<i64>, Option<&str>) {
        match self {
            Written::Revision(r) => ("written", Some(*r), None),
            Written::Proposed { id, .. } => ("proposed", None, Some(id)),
            Written::Scheduled { id, .. } => ("scheduled", None, Some(id)),
        }
    }
}

/// The live state's write policy.
pub(crate) fn live_policy(current: &PrefixState) -> RawPolicy {
    current
        .entries
        .get(keyed::POLICY)
        .and_then(|e| serde_json::from_str(&e.value).ok())
        .unwrap_or_default()
}

/// Writes a change after showing it and asking: commits it, or with
/// `policy.approvals` stores it as a proposal.
pub(crate) async fn write_plan(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    change: Change<'_>,
    write: &WriteArgs,
) -> anyhow::Result<Written> {
    let Change {
        current,
        plan,
        prepared,
        what,
        rollback,
    } = change;
    let audit = audit(cfg, current, write)?;
    let policy = live_policy(current);
    let needs_approval = policy.approvals > 0 && !(rollback && policy.rollback_without_approval);
    let lines = plan.summary_lines(current);
    eprintln!(
        "{} at revision {}: {} key(s) change",
        cfg.dir(),
        current.revision,
        lines.len()
    );
    for l in plan
        .field_lines(current)
        .iter()
        .chain(prepared.lines.iter())
    {
        eprintln!("  {l}");
    }
    if let Some(r) = &prepared.refusal
        && !write.force
    {
        return Err(anyhow!("refused: {r}"));
    }
    let summary = format!("{what}: {}", lines.join(", "));
    if let Some(at) = &write.at {
        let when = parse_at(at)?;
        let at = crate::util::rfc3339(when);
        confirm(write, &format!("schedule this change for {at}?"))?;
        let needed = if needs_approval && !write.break_glass {
            policy.approvals
        } else {
            0
        };
        let job = Job::new(
            &audit,
            summary,
            needed,
            JobKind::Write(ScheduledWrite {
                at: at.clone(),
                base_revision: current.revision,
                plan: plan.clone(),
                extra: prepared.extra.clone(),
                force: write.force,
            }),
        );
        super::autopilot::store(client, cfg, &job).await?;
        return Ok(Written::Scheduled {
            id: job.id,
            at,
            needed,
        });
    }
    if needs_approval && !write.break_glass {
        confirm(write, "propose this change?")?;
        let id = super::approve::propose(
            client,
            cfg,
            super::approve::Proposal::new(
                &audit,
                &summary,
                &command_line(),
                current.revision,
                plan.clone(),
                prepared.extra.clone(),
                policy.approvals,
                write.force,
            ),
        )
        .await?;
        return Ok(Written::Proposed {
            id,
            needed: policy.approvals,
        });
    }
    confirm(write, "write this change?")?;
    let keys = plan.ops.iter().map(|op| op.key().to_string()).collect();
    let mut record = ChangeRecord::now(&command_line(), summary, audit, keys);
    record.break_glass = needs_approval && write.break_glass;
    match plan
        .commit(
            client,
            cfg,
            &record,
            &prepared.extra,
            Guard::from_force(write.force),
        )
        .await
    {
        Ok(rev) => Ok(Written::Revision(rev)),
        Err(EtcdError::Conflict) => Err(anyhow!(
            "refused: etcd changed since revision {} (another writer, or a key read was changed or deleted); nothing was written. Run again to apply on top of the new state, or add --force",
            current.revision
        )),
        Err(e) => Err(e.into()),
    }
}

/// The end of every write command (`apply`, `rollback`, `scheme apply`):
/// `nothing` (the text to print when nothing would change), else the dry
/// run, else the write; as text, or with `--json` as one object.
pub(crate) async fn finish(
    client: &mut etcd_client::Client,
    cfg: &EtcdConfig,
    change: Change<'_>,
    (write, dry): (&WriteArgs, bool),
    nothing: Option<String>,
    ok: impl FnOnce(i64) -> String,
) -> anyhow::Result<String> {
    let (current, plan, prepared) = (change.current, change.plan, change.prepared);
    let json = |outcome: &str, rev: Option<i64>, id: Option<&str>| {
        json_outcome(current, plan, Some(prepared), outcome, rev, id)
    };
    if let Some(text) = nothing {
        return Ok(if write.json {
            json("nothing_to_change", None, None)
        } else {
            text
        });
    }
    if dry {
        return Ok(if write.json {
            json("dry_run", None, None)
        } else {
            dry_run(current, plan, prepared).replacen(
                "dry run: ",
                &format!("dry run: {}: ", change.what),
                1,
            )
        });
    }
    let w = write_plan(client, cfg, change, write).await?;
    if write.json {
        let (outcome, rev, id) = w.json_parts();
        return Ok(json(outcome, rev, id));
    }
    Ok(w.text(ok))
}

/// What a write command reports with `--json`: the plan and what came of
/// it. `outcome` is `dry_run`, `nothing_to_change` or `written`.
pub(crate) fn json_outcome(
    current: &PrefixState,
    plan: &Plan,
    prepared: Option<&Prepared>,
    outcome: &str,
    written: Option<i64>,
    proposal: Option<&str>,
) -> String {
    let keys: Vec<serde_json::Value> = plan
        .ops
        .iter()
        .map(|op| {
            let (change, fields) = match op {
                crate::etcd::plan::Op::Put { key, value } => match current.entries.get(key) {
                    Some(old) => ("changed", crate::etcd::plan::field_diff(&old.value, value)),
                    None => ("added", vec![]),
                },
                crate::etcd::plan::Op::Delete { .. } => ("deleted", vec![]),
            };
            serde_json::json!({ "key": op.key(), "change": change, "fields": fields })
        })
        .collect();
    let v = serde_json::json!({
        "outcome": outcome,
        "read_revision": current.revision,
        "written_revision": written,
        "proposal": proposal,
        "keys": keys,
        "preview": prepared.map(|p| p.lines.clone()).unwrap_or_default(),
        "refusal": prepared.and_then(|p| p.refusal.clone()),
    });
    serde_json::to_string_pretty(&v).expect("serializable")
}

/// What `--dry-run` prints: the keys and fields that would change, the
/// preview, and whether the write would be refused. Nothing is written.
pub(crate) fn dry_run(current: &PrefixState, plan: &Plan, prepared: &Prepared) -> String {
    let mut out = format!(
        "dry run: {} key(s) would change at revision {}",
        plan.ops.len(),
        current.revision
    );
    for l in plan.field_lines(current).iter().chain(&prepared.lines) {
        out.push_str("\n  ");
        out.push_str(l);
    }
    if let Some(r) = &prepared.refusal {
        out.push_str(&format!("\n  would be refused without --force: {r}"));
    }
    out
}

/// Who and why for this write; refused when the live state's policy
/// requires a reason and none was given.
pub(crate) fn audit(
    cfg: &EtcdConfig,
    current: &PrefixState,
    write: &WriteArgs,
) -> anyhow::Result<Audit> {
    let policy = live_policy(current);
    let reason = write
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if policy.reason_required && reason.is_none() {
        return Err(anyhow!(
            "refused: the state's policy requires a reason for every change (policy.reason_required): add --reason TEXT; nothing was written"
        ));
    }
    let actor = actor_of(cfg, write.actor.as_deref());
    Ok(Audit {
        actor,
        reason: reason.map(str::to_string),
        ticket: write.ticket.clone(),
    })
}

/// `--at`: an RFC 3339 time, not in the past.
pub(crate) fn parse_at(at: &str) -> anyhow::Result<std::time::SystemTime> {
    let when = crate::util::parse_rfc3339(at).ok_or_else(|| {
        super::UsageError(format!(
            "--at '{at}' is not an RFC 3339 time such as 2026-12-01T06:00:00Z"
        ))
    })?;
    if when + std::time::Duration::from_secs(5) < std::time::SystemTime::now() {
        return Err(super::UsageError(format!("--at {at} is in the past")).into());
    }
    Ok(when)
}

/// `--actor`, else the etcd user, else the OS user.
pub(crate) fn actor_of(cfg: &EtcdConfig, flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| cfg.user.as_ref().map(|(u, _)| u.clone()))
        .unwrap_or_else(crate::util::username)
}

/// This process's command line without secrets, for `meta/change`.
pub(crate) fn command_line() -> String {
    redact(std::env::args().skip(1)).join(" ")
}

/// Flags whose value is a secret (`--etcd-password`, and any later
/// `--...-password`).
fn is_secret_flag(flag: &str) -> bool {
    flag.starts_with("--") && flag.ends_with("password")
}

/// The arguments with every secret value replaced by `***`, in both the
/// `--flag VALUE` and the `--flag=VALUE` form.
fn redact(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
        } else if let Some((flag, _)) = a.split_once('=')
            && is_secret_flag(flag)
        {
            out.push(format!("{flag}=***"));
        } else {
            hide_next = is_secret_flag(&a);
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_are_redacted_in_both_forms() {
        let args = [
            "apply",
            "s.yaml",
            "--etcd-user",
            "root",
            "--etcd-password",
            "S3CR3T",
            "--etcd-password=S3CR3T",
            "--yes",
        ];
        let out = redact(args.iter().map(ToString::to_string)).join(" ");
        assert_eq!(
            out,
            "apply s.yaml --etcd-user root --etcd-password *** --etcd-password=*** --yes"
        );
    }
}
