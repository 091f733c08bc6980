//! The cutover autopilot: writes scheduled with `--at` and timed ramps of a
//! staged phase, stored as jobs under `<prefix>-schedule/<id>` and executed
//! by one edge at a time ([`executor`]: the holder of the etcd election
//! `<prefix>-autopilot/leader`).
//!
//! A job is advanced only by a transaction that compares its
//! `mod_revision` (the commit of a step and the job's new state land
//! together), so a step is never executed twice, even by two executors,
//! and a cancelled job never runs. Every write goes through the plan and
//! commit of [`crate::etcd::plan`], audited as `autopilot@<edge-id>`.

pub(crate) mod executor;
pub(crate) mod ramp;

use std::fmt::Write as _;
use std::time::SystemTime;

use anyhow::anyhow;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::require_etcd;
use super::write::actor_of;
use crate::cli::{AutopilotArgs, ProposalArgs, ProposalsArgs};
use crate::etcd::meta::Audit;
use crate::etcd::plan::Plan;
use crate::etcd::{EtcdConfig, EtcdError};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobState {
    /// Waiting for its time (and approvals).
    Pending,
    /// A ramp with steps left.
    Running,
    /// A ramp stopped by a failing gate or a refused step: `autopilot
    /// resume` continues it.
    Paused,
    /// Every step committed.
    Done,
    /// Not written: the state moved since it was planned, or it was not
    /// approved in time.
    Refused,
    /// Cancelled (`schedule cancel`, `scheme abort`).
    Cancelled,
}

impl JobState {
    /// True while the executor still has something to do.
    pub(crate) fn is_open(self) -> bool {
        matches!(
            self,
            JobState::Pending | JobState::Running | JobState::Paused
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Paused => "PAUSED",
            JobState::Done => "done",
            JobState::Refused => "REFUSED",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A scheduled write: a plan made at `base_revision`, committed at `at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScheduledWrite {
    /// RFC 3339.
    pub(crate) at: String,
    pub(crate) base_revision: i64,
    pub(crate) plan: Plan,
    pub(crate) extra: Vec<(String, String)>,
    /// `--force` given: commit without the per-key compares.
    pub(crate) force: bool,
}

/// What a job does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobKind {
    Write(ScheduledWrite),
    Ramp(ramp::Ramp),
}

/// A scheduled write or a ramp, as stored under `<prefix>-schedule/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) created: String,
    /// Who scheduled it.
    pub(crate) actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ticket: Option<String>,
    /// The command line that made it.
    pub(crate) command: String,
    /// What it changes, in words.
    pub(crate) summary: String,
    /// Approvals it needs before it may run (`policy.approvals`).
    #[serde(default)]
    pub(crate) needed: u32,
    #[serde(default)]
    pub(crate) approvals: Vec<String>,
    pub(crate) state: JobState,
    /// Why it is paused, refused or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// What happened, oldest first (`<time> step 1 (10%): revision 42 by
    /// autopilot@e1`).
    #[serde(default)]
    pub(crate) events: Vec<String>,
    pub(crate) kind: JobKind,
}

impl Job {
    /// A new job by the audited actor.
    pub(crate) fn new(audit: &Audit, summary: String, needed: u32, kind: JobKind) -> Job {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Job {
            id: format!("s{now:x}{:x}", std::process::id() & 0xfff),
            created: crate::util::rfc3339_now(),
            actor: audit.actor.clone(),
            reason: audit.reason.clone(),
            ticket: audit.ticket.clone(),
            command: super::write::command_line(),
            summary,
            needed,
            approvals: Vec::new(),
            state: JobState::Pending,
            note: None,
            events: Vec::new(),
            kind,
        }
    }

    /// The audit record of the job's writes: its author's, with the
    /// executing edge's name in front of the reason.
    pub(crate) fn audit(&self, executor: &str) -> Audit {
        Audit {
            actor: executor.to_string(),
            reason: Some(format!(
                "{} {} by {}{}",
                self.kind_name(),
                self.id,
                self.actor,
                self.reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(": {r}"))
            )),
            ticket: self.ticket.clone(),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            JobKind::Write(_) => "scheduled write",
            JobKind::Ramp(_) => "ramp",
        }
    }

    /// Appends a timestamped event.
    pub(crate) fn event(&mut self, what: impl std::fmt::Display) {
        self.events
            .push(format!("{} {what}", crate::util::rfc3339_now()));
    }

    /// True once it has the approvals it needs.
    pub(crate) fn approved(&self) -> bool {
        u32::try_from(self.approvals.len()).unwrap_or(u32::MAX) >= self.needed
    }

    /// When the executor should next look at it.
    pub(crate) fn due(&self) -> Option<SystemTime> {
        match &self.kind {
            JobKind::Write(w) => crate::util::parse_rfc3339(&w.at),
            JobKind::Ramp(r) => crate::util::parse_rfc3339(&r.next_at),
        }
    }
}

/// `<prefix>-schedule/`.
pub(crate) fn dir(cfg: &EtcdConfig) -> String {
    format!("{}-schedule/", cfg.prefix.trim_end_matches('/'))
}

/// `<prefix>-autopilot/`: the election and the pause switch.
pub(crate) fn control_dir(cfg: &EtcdConfig) -> String {
    format!("{}-autopilot/", cfg.prefix.trim_end_matches('/'))
}

/// The pause switch (`autopilot pause`), present while paused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pause {
    pub(crate) by: String,
    pub(crate) at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

fn pause_key(cfg: &EtcdConfig) -> String {
    format!("{}paused", control_dir(cfg))
}

/// The election every edge campaigns in.
pub(crate) fn election(cfg: &EtcdConfig) -> String {
    format!("{}leader", control_dir(cfg))
}

/// Stores a new job (never overwriting one); returns its id.
pub(crate) async fn store(client: &mut Client, cfg: &EtcdConfig, job: &Job) -> anyhow::Result<()> {
    let key = format!("{}{}", dir(cfg), job.id);
    let txn = Txn::new()
        .when(vec![Compare::version(key.as_str(), CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(
            key.as_str(),
            serde_json::to_string(job).expect("serializable"),
            None,
        )]);
    let r = client.txn(txn).await.map_err(EtcdError::from)?;
    if !r.succeeded() {
        return Err(anyhow!("job {} exists already; try again", job.id));
    }
    Ok(())
}

/// Every job with its `mod_revision`, oldest first.
pub(crate) async fn jobs(
    client: &mut Client,
    cfg: &EtcdConfig,
) -> Result<Vec<(Job, i64)>, EtcdError> {
    let r = client
        .get(dir(cfg), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut all: Vec<(Job, i64)> = r
        .kvs()
        .iter()
        .filter_map(|kv| Some((serde_json::from_slice(kv.value()).ok()?, kv.mod_revision())))
        .collect();
    all.sort_by(|a, b| a.0.created.cmp(&b.0.created).then(a.0.id.cmp(&b.0.id)));
    Ok(all)
}

/// One job and its `mod_revision`.
async fn job(client: &mut Client, cfg: &EtcdConfig, id: &str) -> anyhow::Result<(Job, i64)> {
    let r = client
        .get(format!("{}{id}", dir(cfg)), None)
        .await
        .map_err(EtcdError::from)?;
    let kv = r
        .kvs()
        .first()
        .ok_or_else(|| anyhow!("no scheduled job {id} (see `vdh-edge schedule list`)"))?;
    let j =
        serde_json::from_slice(kv.value()).map_err(|e| anyhow!("job {id} is not readable: {e}"))?;
    Ok((j, kv.mod_revision()))
}

/// Rewrites a job if it is still at `at`; false when it moved meanwhile.
pub(crate) async fn update(
    client: &mut Client,
    cfg: &EtcdConfig,
    job: &Job,
    at: i64,
) -> Result<bool, EtcdError> {
    let key = format!("{}{}", dir(cfg), job.id);
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            at,
        )])
        .and_then(vec![TxnOp::put(
            key.as_str(),
            serde_json::to_string(job).expect("serializable"),
            None,
        )]);
    Ok(client.txn(txn).await?.succeeded())
}

/// The pause switch, if set.
pub(crate) async fn paused(
    client: &mut Client,
    cfg: &EtcdConfig,
) -> Result<Option<Pause>, EtcdError> {
    let r = client.get(pause_key(cfg), None).await?;
    Ok(r.kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
}

/// Reads a job, changes it with `f` and writes it back if nobody else did
/// meanwhile (retried a few times).
async fn modify(
    client: &mut Client,
    cfg: &EtcdConfig,
    id: &str,
    mut f: impl FnMut(&mut Job) -> anyhow::Result<()>,
) -> anyhow::Result<Job> {
    for _ in 0..5 {
        let (mut j, at) = job(client, cfg, id).await?;
        f(&mut j)?;
        if update(client, cfg, &j, at).await? {
            return Ok(j);
        }
    }
    Err(anyhow!("job {id} keeps changing; try again"))
}

/// `vdh-edge schedule cancel ID`.
pub(crate) async fn cancel(args: &ProposalArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "schedule cancel")?;
    let mut client = cfg.connect_live().await?;
    let actor = actor_of(&cfg, args.actor.as_deref());
    let why = args.reason.clone();
    let j = modify(&mut client, &cfg, &args.id, |j| {
        if !j.state.is_open() {
            return Err(anyhow!(
                "job {} is {} already; nothing to cancel",
                j.id,
                j.state.as_str()
            ));
        }
        j.state = JobState::Cancelled;
        j.note = Some(format!(
            "cancelled by {actor}{}",
            why.as_deref().map_or(String::new(), |r| format!(": {r}"))
        ));
        j.event(j.note.clone().unwrap_or_default());
        Ok(())
    })
    .await?;
    Ok(format!("cancelled {}: {}", j.id, j.summary))
}

/// Cancels every open ramp of `scheme` (for `scheme abort`); returns their ids.
pub(crate) async fn cancel_ramps(
    client: &mut Client,
    cfg: &EtcdConfig,
    scheme: &str,
    actor: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for (j, _) in jobs(client, cfg).await? {
        let of_scheme = matches!(&j.kind, JobKind::Ramp(r) if r.scheme.name == scheme);
        if of_scheme && j.state.is_open() {
            modify(client, cfg, &j.id, |j| {
                j.state = JobState::Cancelled;
                j.note = Some(format!("cancelled by {actor}: scheme abort"));
                j.event("cancelled: scheme abort");
                Ok(())
            })
            .await?;
            ids.push(j.id);
        }
    }
    Ok(ids)
}

/// `approve ID` for a job: records the approval; the executor runs the job
/// at its time once it has the approvals it needs.
pub(crate) async fn approve(
    client: &mut Client,
    cfg: &EtcdConfig,
    id: &str,
    actor: &str,
) -> anyhow::Result<String> {
    let j = modify(client, cfg, id, |j| {
        if actor == j.actor {
            return Err(anyhow!(
                "refused: {actor} scheduled {}; an approval must come from another actor",
                j.id
            ));
        }
        if j.approvals.iter().any(|a| a == actor) {
            return Err(anyhow!("refused: {actor} has approved {} already", j.id));
        }
        if !j.state.is_open() {
            return Err(anyhow!(
                "job {} is {}; nothing to approve",
                j.id,
                j.state.as_str()
            ));
        }
        j.approvals.push(actor.to_string());
        j.event(format!("approved by {actor}"));
        Ok(())
    })
    .await?;
    Ok(format!(
        "approved {} by {actor} ({} of {}); the autopilot runs it at its time",
        j.id,
        j.approvals.len(),
        j.needed
    ))
}

/// True when `id` names a job rather than a proposal.
pub(crate) fn is_job_id(id: &str) -> bool {
    id.starts_with('s')
}

/// `vdh-edge autopilot pause` / `resume`.
pub(crate) async fn pause(args: &AutopilotArgs, on: bool) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "autopilot")?;
    let mut client = cfg.connect_live().await?;
    let actor = actor_of(&cfg, args.actor.as_deref());
    if on {
        let p = Pause {
            by: actor.clone(),
            at: crate::util::rfc3339_now(),
            reason: args.reason.clone(),
        };
        client
            .put(
                pause_key(&cfg),
                serde_json::to_string(&p).expect("serializable"),
                None,
            )
            .await
            .map_err(EtcdError::from)?;
        return Ok(format!(
            "autopilot paused by {actor}: no schedule or ramp step runs until `vdh-edge autopilot resume`"
        ));
    }
    client
        .delete(pause_key(&cfg), None)
        .await
        .map_err(EtcdError::from)?;
    // Ramps paused by a gate continue (their gates are checked again first).
    let mut resumed = Vec::new();
    for (j, _) in jobs(&mut client, &cfg).await? {
        if j.state == JobState::Paused {
            modify(&mut client, &cfg, &j.id, |j| {
                j.state = JobState::Running;
                j.note = None;
                j.event(format!("resumed by {actor}"));
                Ok(())
            })
            .await?;
            resumed.push(j.id);
        }
    }
    Ok(format!(
        "autopilot resumed by {actor}{}",
        if resumed.is_empty() {
            String::new()
        } else {
            format!("; ramps continuing: {}", resumed.join(", "))
        }
    ))
}

/// `vdh-edge schedule list` and `autopilot status`.
pub(crate) async fn status(args: &ProposalsArgs, with_executor: bool) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "schedule")?;
    let mut client = cfg.connect_live().await?;
    let all = jobs(&mut client, &cfg).await?;
    let pause = paused(&mut client, &cfg).await?;
    let leader = if with_executor {
        executor::leader(&mut client, &cfg).await
    } else {
        None
    };
    if args.json {
        let jobs: Vec<&Job> = all.iter().map(|(j, _)| j).collect();
        let v = serde_json::json!({ "executor": leader, "paused": pause, "jobs": jobs });
        return Ok(serde_json::to_string_pretty(&v).expect("serializable"));
    }
    let mut out = String::new();
    if with_executor {
        let _ = writeln!(
            out,
            "executor: {}",
            leader
                .as_deref()
                .unwrap_or("none (no edge holds the election)")
        );
        let _ = match &pause {
            Some(p) => writeln!(
                out,
                "PAUSED by {} at {}{}",
                p.by,
                p.at,
                p.reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(": {r}"))
            ),
            None => writeln!(out, "running"),
        };
    }
    if all.is_empty() {
        let _ = writeln!(out, "no scheduled writes or ramps under {}", dir(&cfg));
    }
    for (j, _) in &all {
        render_job(&mut out, j);
    }
    Ok(out)
}

/// One job, as `schedule list` shows it.
fn render_job(out: &mut String, j: &Job) {
    let _ = writeln!(out, "{}", one_line(j));
    if let Some(n) = j.note.as_ref().filter(|_| j.state != JobState::Paused) {
        let _ = writeln!(out, "    {n}");
    }
    for e in &j.events {
        let _ = writeln!(out, "    {e}");
    }
}

/// A job on one line: id, state, where it is, what, who, approvals; with
/// the reason of a pause.
pub(crate) fn one_line(j: &Job) -> String {
    let next = match &j.kind {
        JobKind::Write(w) => format!("at {}", w.at),
        JobKind::Ramp(r) => r.position(),
    };
    format!(
        "{}  {:<9} {}  {}  by {}{}{}",
        j.id,
        j.state.as_str(),
        next,
        j.summary,
        j.actor,
        if j.needed > 0 {
            format!("  {} of {} approvals", j.approvals.len(), j.needed)
        } else {
            String::new()
        },
        match (&j.note, j.state) {
            (Some(n), JobState::Paused) => format!("\n    paused: {n}"),
            _ => String::new(),
        }
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::util::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("2x"), None);
        assert_eq!(parse_duration(""), None);
    }
}
