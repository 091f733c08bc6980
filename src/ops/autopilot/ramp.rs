//! Timed ramps: `scheme apply NAME --phase N --ramp 10,25,50,100 --every D
//! [--gate ...]` stores a ramp job; the executor commits one percent step
//! at a time, each at least `--every` and at least the recorded DNS drain
//! after the previous one, and only while every gate passes (a failing gate
//! pauses the ramp until `autopilot resume`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use etcd_client::Client;
use serde::{Deserialize, Serialize};

use super::{Job, JobKind, JobState};
use crate::cli::{SchemeApplyArgs, SourceArgs, WriteArgs};
use crate::error::UsageError;
use crate::etcd::meta::{self, ChangeRecord, Drain};
use crate::etcd::plan::{Companion, Guard};
use crate::etcd::{EtcdConfig, EtcdError};
use crate::scheme::Scheme;

/// A ramp of one staged phase through increasing percents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ramp {
    /// The scheme as it was when the ramp was made (the executor does not
    /// depend on the edges' scheme files).
    pub(crate) scheme: Scheme,
    pub(crate) phase: u32,
    /// `--set` overrides of the scheme's parameters.
    #[serde(default)]
    pub(crate) set: Vec<String>,
    /// The percents, in order.
    pub(crate) steps: Vec<String>,
    pub(crate) every_s: u64,
    /// `health:ENV` / `http:URL`.
    #[serde(default)]
    pub(crate) gates: Vec<String>,
    /// Index of the next step.
    pub(crate) next: usize,
    /// Not before (RFC 3339).
    pub(crate) next_at: String,
    /// The revision each step was committed at.
    #[serde(default)]
    pub(crate) revisions: Vec<i64>,
}

impl Ramp {
    /// `step 2 of 4 (25%) not before <time>` or `all 4 steps done`.
    pub(crate) fn position(&self) -> String {
        match self.steps.get(self.next) {
            Some(p) => format!(
                "phase {} step {} of {} ({p}%) not before {}",
                self.phase,
                self.next + 1,
                self.steps.len(),
                self.next_at
            ),
            None => format!("phase {} all {} steps done", self.phase, self.steps.len()),
        }
    }
}

/// A gate: what must hold before each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// The environment's health verdict is up.
    Health(String),
    /// `GET url` answers 2xx within 2 s (plain `http://host:port/path`).
    Http {
        url: String,
        addr: String,
        path: String,
    },
}

impl Gate {
    /// Parses `health:ENV` or `http:URL`.
    pub(crate) fn parse(s: &str) -> Result<Gate, String> {
        if let Some(env) = s.strip_prefix("health:") {
            return Ok(Gate::Health(env.to_string()));
        }
        if let Some(url) = s.strip_prefix("http:") {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!("gate '{s}': give a plain http://host:port/path URL after http:")
            })?;
            let (addr, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let addr = if addr.contains(':') {
                addr.to_string()
            } else {
                format!("{addr}:80")
            };
            return Ok(Gate::Http {
                url: url.to_string(),
                addr,
                path: path.to_string(),
            });
        }
        Err(format!("gate '{s}': use health:ENV or http:URL"))
    }

    /// `None` when it passes, else why not.
    async fn check(&self, verdicts: &BTreeMap<String, crate::shared::Verdict>) -> Option<String> {
        match self {
            Gate::Health(env) => match verdicts.get(env) {
                Some(v) if !v.up => Some(format!("gate health:{env}: {env} is {}", v.describe())),
                _ => None,
            },
            Gate::Http { url, addr, path } => {
                let status =
                    crate::serve::health::http_status(addr, path, None, Duration::from_secs(2))
                        .await;
                match status {
                    Some(s) if (200..300).contains(&s) => None,
                    Some(s) => Some(format!("gate http:{url} answered {s}")),
                    None => Some(format!("gate http:{url} did not answer within 2 s")),
                }
            }
        }
    }
}

/// Checks `--ramp`, `--every` and `--gate` before anything is read.
pub(crate) fn check_args(args: &SchemeApplyArgs, s: &Scheme) -> Result<Duration, UsageError> {
    let n = args
        .phase
        .ok_or_else(|| UsageError("--ramp needs --phase N (a staged phase)".into()))?;
    let staged = s.phase(n).map(|p| p.percent).unwrap_or(false);
    if !staged {
        return Err(UsageError(format!(
            "phase {n} of {} is not staged: it takes no --ramp",
            s.name
        )));
    }
    if args.percent.is_some() {
        return Err(UsageError(
            "--ramp gives the percents: drop --percent".into(),
        ));
    }
    let mut last = None;
    for p in &args.ramp {
        let bp = crate::config::cohort::parse_percent(p)
            .map_err(|e| UsageError(format!("--ramp: {e}")))?;
        if last.is_some_and(|l| bp <= l) {
            return Err(UsageError(format!(
                "--ramp: the percents must increase ({p} after {})",
                last.unwrap_or(0) / 100
            )));
        }
        last = Some(bp);
    }
    for g in &args.gate {
        Gate::parse(g).map_err(UsageError)?;
    }
    let every = args
        .every
        .as_deref()
        .ok_or_else(|| UsageError("--ramp needs --every DURATION (e.g. 30m)".into()))?;
    crate::util::parse_duration(every)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| UsageError(format!("--every '{every}': use e.g. 30s, 10m, 2h")))
}

/// `scheme apply ... --ramp`: plans the first step (so a ramp that cannot
/// start is refused now, with its preview) and stores the ramp.
pub(crate) async fn create(args: &SchemeApplyArgs, s: &Scheme) -> anyhow::Result<String> {
    let every = check_args(args, s)?;
    let cfg = super::require_etcd(&args.source, "scheme apply --ramp")?;
    let mut client = cfg.connect_live().await?;
    let first = step_args(
        args.source.clone(),
        &args.name,
        args.phase.unwrap_or(1),
        &args.ramp[0],
        &args.set,
        args.write.clone(),
    );
    let params = s.params(&args.set, Some(&args.ramp[0]))?;
    let c = crate::ops::scheme::phase_change(&mut client, &cfg, &first, s, &params).await?;
    for g in &args.gate {
        if let Ok(Gate::Health(env)) = Gate::parse(g)
            && c.prepared
                .after
                .as_deref()
                .is_some_and(|a| !a.routing.environments.iter().any(|e| e.name == env))
        {
            return Err(UsageError(format!("gate '{g}': no environment named '{env}'")).into());
        }
    }
    let start = match &args.write.at {
        Some(at) => super::super::write::parse_at(at)?,
        None => SystemTime::now(),
    };
    let audit = super::super::write::audit(&cfg, &c.current, &args.write)?;
    let policy = super::super::write::live_policy(&c.current);
    let needed = if args.write.break_glass {
        0
    } else {
        policy.approvals
    };
    let summary = format!(
        "scheme {} phase {} ramp {}% every {}{}",
        s.name,
        args.phase.unwrap_or(1),
        args.ramp.join(","),
        args.every.as_deref().unwrap_or(""),
        if args.gate.is_empty() {
            String::new()
        } else {
            format!(" gated by {}", args.gate.join(", "))
        }
    );
    eprintln!("{summary}; first step:");
    for l in c
        .plan
        .field_lines(&c.current)
        .iter()
        .chain(c.prepared.lines.iter())
    {
        eprintln!("  {l}");
    }
    if args.dry_run {
        return Ok(format!("dry run: {summary}: nothing stored"));
    }
    super::super::confirm::confirm(&args.write, "schedule this ramp?")?;
    let ramp = Ramp {
        scheme: s.clone(),
        phase: args.phase.unwrap_or(1),
        set: args.set.clone(),
        steps: args.ramp.clone(),
        every_s: every.as_secs(),
        gates: args.gate.clone(),
        next: 0,
        next_at: crate::util::rfc3339(start),
        revisions: Vec::new(),
    };
    let mut job = Job::new(&audit, summary.clone(), needed, JobKind::Ramp(ramp));
    job.state = JobState::Running;
    super::store(&mut client, &cfg, &job).await?;
    Ok(format!(
        "scheduled {}: {summary}; the autopilot commits each step (`vdh-edge autopilot status`){}",
        job.id,
        if needed > 0 {
            format!(
                "; it needs {needed} approval(s) first: vdh-edge approve {}",
                job.id
            )
        } else {
            String::new()
        }
    ))
}

/// The `scheme apply` of one step, as the autopilot runs it.
fn step_args(
    source: SourceArgs,
    name: &str,
    phase: u32,
    percent: &str,
    set: &[String],
    write: WriteArgs,
) -> SchemeApplyArgs {
    SchemeApplyArgs {
        name: name.to_string(),
        phase: Some(phase),
        percent: Some(percent.to_string()),
        dry_run: false,
        lower_ttl: None,
        bump_auth_epoch: Vec::new(),
        schemes: None,
        set: set.to_vec(),
        ramp: Vec::new(),
        every: None,
        gate: Vec::new(),
        source,
        write,
    }
}

/// What one look at a ramp did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stepped {
    /// Nothing to do yet.
    Wait,
    /// A step was committed (or found live already).
    Committed,
    /// Paused (a gate failed, or the step was refused).
    Paused,
    /// Someone else changed the job meanwhile, or the state moved: look
    /// again next round.
    Raced,
}

/// Takes the ramp's next step if it is due, its drain is over and every
/// gate passes; the commit and the job's advance land in one transaction.
pub(crate) async fn step(
    client: &mut Client,
    cfg: &EtcdConfig,
    source: &SourceArgs,
    (job, at): (&Job, i64),
    me: &str,
    verdicts: &BTreeMap<String, crate::shared::Verdict>,
) -> Result<Stepped, EtcdError> {
    let JobKind::Ramp(r) = &job.kind else {
        return Ok(Stepped::Wait);
    };
    let Some(percent) = r.steps.get(r.next) else {
        return Ok(Stepped::Wait);
    };
    if job.due().is_some_and(|t| t > SystemTime::now()) {
        return Ok(Stepped::Wait);
    }
    let drain: Option<Drain> = client
        .get(cfg.key(meta::DRAIN), None)
        .await?
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok());
    if r.next > 0 && drain.as_ref().is_some_and(|d| d.remaining_s() > 0) {
        return Ok(Stepped::Wait);
    }
    let label = format!("step {} of {} ({percent}%)", r.next + 1, r.steps.len());
    for g in &r.gates {
        let why = match Gate::parse(g) {
            Ok(gate) => gate.check(verdicts).await,
            Err(e) => Some(e),
        };
        if let Some(why) = why {
            return pause(
                client,
                cfg,
                job,
                at,
                format!("{why}; {label} waits: fix it, then `vdh-edge autopilot resume`"),
            )
            .await;
        }
    }
    let write = WriteArgs {
        yes: true,
        force: false,
        actor: Some(me.to_string()),
        reason: None,
        ticket: None,
        json: false,
        break_glass: false,
        at: None,
    };
    let args = step_args(
        source.clone(),
        &r.scheme.name,
        r.phase,
        percent,
        &r.set,
        write,
    );
    let change = match r.scheme.params(&r.set, Some(percent)) {
        Ok(params) => {
            crate::ops::scheme::phase_change(client, cfg, &args, &r.scheme, &params).await
        }
        Err(e) => Err(e.into()),
    };
    let c = match change {
        Ok(c) => c,
        Err(e) => return pause(client, cfg, job, at, format!("{label} refused: {e:#}")).await,
    };
    let mut next = job.clone();
    let JobKind::Ramp(nr) = &mut next.kind else {
        unreachable!("a ramp")
    };
    nr.next += 1;
    nr.next_at = crate::util::rfc3339(SystemTime::now() + Duration::from_secs(nr.every_s));
    let done = nr.next == nr.steps.len();
    if done {
        next.state = JobState::Done;
    }
    if c.nothing.is_some() {
        next.event(format!("{label}: already live, by {me}"));
        return Ok(if super::update(client, cfg, &next, at).await? {
            Stepped::Committed
        } else {
            Stepped::Raced
        });
    }
    next.event(format!("{label}: committed by {me}"));
    let lines = c.plan.summary_lines(&c.current);
    let record = ChangeRecord::now(
        &job.command,
        format!("{}: {}", c.what, lines.join(", ")),
        job.audit(me),
        c.plan.ops.iter().map(|op| op.key().to_string()).collect(),
    );
    let companion = Companion {
        key: format!("{}{}", super::dir(cfg), job.id),
        mod_revision: at,
        value: serde_json::to_string(&next).expect("serializable"),
    };
    match c
        .plan
        .commit_with(
            client,
            cfg,
            &record,
            &c.prepared.extra,
            Guard::CompareReads,
            Some(&companion),
        )
        .await
    {
        Ok(rev) => {
            tracing::info!(job = %job.id, step = r.next + 1, revision = rev, "autopilot: ramp step committed");
            Ok(Stepped::Committed)
        }
        Err(EtcdError::Conflict) => Ok(Stepped::Raced),
        Err(e) => Err(e),
    }
}

/// Pauses a ramp with a reason (if nobody changed it meanwhile).
async fn pause(
    client: &mut Client,
    cfg: &EtcdConfig,
    job: &Job,
    at: i64,
    why: String,
) -> Result<Stepped, EtcdError> {
    let mut j = job.clone();
    j.state = JobState::Paused;
    j.event(format!("paused: {why}"));
    j.note = Some(why);
    tracing::warn!(job = %j.id, note = j.note.as_deref().unwrap_or(""), "autopilot: ramp paused");
    Ok(if super::update(client, cfg, &j, at).await? {
        Stepped::Paused
    } else {
        Stepped::Raced
    })
}
