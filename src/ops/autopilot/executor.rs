//! The executor: every edge in etcd mode campaigns in the election
//! `<prefix>-autopilot/leader` with a lease of `--autopilot-lease` seconds;
//! the winner looks at the jobs four times a second and runs what is due.
//! When it dies its lease expires and the next edge in line takes over.
//! A job only advances by a transaction comparing its `mod_revision`, so
//! even two executors never run a step twice.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tracing::{debug, info, warn};

use super::ramp::{self, Stepped};
use super::{Job, JobKind, JobState, ScheduledWrite};
use crate::backoff::{Backoff, sleep_or_stop};
use crate::cli::SourceArgs;
use crate::etcd::meta::ChangeRecord;
use crate::etcd::plan::{Companion, Guard, Plan};
use crate::etcd::{EtcdConfig, EtcdError};

pub(crate) use crate::serve::AutopilotCtx as Ctx;

/// The executor as the edge spawns it.
pub(crate) fn spawn(ctx: Ctx) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(run(ctx))
}

/// The edge holding the election, if any.
pub(crate) async fn leader(client: &mut Client, cfg: &EtcdConfig) -> Option<String> {
    let r = client.leader(super::election(cfg)).await.ok()?;
    Some(r.kv()?.value_str().ok()?.to_string())
}

/// Keeps the lease alive once; false when it is gone.
async fn keep(keeper: &mut LeaseKeeper, acks: &mut LeaseKeepAliveStream) -> bool {
    if keeper.keep_alive().await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(2), acks.message()).await,
        Ok(Ok(Some(a))) if a.ttl() > 0
    )
}

async fn run(mut ctx: Ctx) {
    let me = format!("autopilot@{}", ctx.edge_id);
    let ttl = ctx.lease_ttl.clamp(2, 60);
    let beat = Duration::from_millis(u64::try_from(ttl).unwrap_or(5) * 1000 / 3);
    let mut backoff = Backoff::new();
    loop {
        let lease = match ctx.client.lease_grant(ttl, None).await {
            Ok(l) => l.id(),
            Err(error) => {
                debug!(%error, "autopilot: lease grant failed");
                if sleep_or_stop(backoff.delay(), &ctx.shutdown).await {
                    return;
                }
                continue;
            }
        };
        let Ok((mut keeper, mut acks)) = ctx.client.lease_keep_alive(lease).await else {
            continue;
        };
        let mut elections = ctx.client.clone();
        let campaign = elections.campaign(super::election(&ctx.cfg), ctx.edge_id.clone(), lease);
        tokio::pin!(campaign);
        let mut beats = tokio::time::interval(beat);
        let won = loop {
            tokio::select! {
                r = &mut campaign => break r.is_ok(),
                _ = beats.tick() => if !keep(&mut keeper, &mut acks).await { break false },
                () = ctx.shutdown.cancelled() => {
                    let _ = ctx.client.lease_revoke(lease).await;
                    return;
                }
            }
        };
        if !won {
            let _ = ctx.client.lease_revoke(lease).await;
            if sleep_or_stop(backoff.delay(), &ctx.shutdown).await {
                return;
            }
            continue;
        }
        info!(executor = %me, "autopilot: this edge executes schedules and ramps");
        ctx.shared.metrics.autopilot_executor.set(1);
        let mut rounds = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = rounds.tick() => {
                    if let Err(error) = round(&mut ctx.client, &ctx.cfg, &ctx.source, &me).await {
                        debug!(%error, "autopilot round failed");
                    }
                }
                _ = beats.tick() => if !keep(&mut keeper, &mut acks).await {
                    warn!("autopilot: lost the leader lease; campaigning again");
                    ctx.shared.metrics.autopilot_executor.set(0);
                    break;
                },
                () = ctx.shutdown.cancelled() => {
                    let _ = ctx.client.lease_revoke(lease).await;
                    return;
                }
            }
        }
    }
}

/// One look at every open job: commit what is due.
async fn round(
    client: &mut Client,
    cfg: &EtcdConfig,
    source: &SourceArgs,
    me: &str,
) -> Result<(), EtcdError> {
    if super::paused(client, cfg).await?.is_some() {
        return Ok(());
    }
    let now = SystemTime::now();
    let mut verdicts = None;
    for (job, at) in super::jobs(client, cfg).await? {
        let due = job.due().is_none_or(|t| t <= now);
        match (&job.kind, job.state) {
            (JobKind::Write(w), JobState::Pending) if due => {
                run_write(client, cfg, (&job, at), w, me).await?;
            }
            (JobKind::Ramp(_), JobState::Running) if due && job.approved() => {
                if verdicts.is_none() {
                    let edges = crate::etcd::registry::read_edges(client, cfg).await?;
                    verdicts = Some(crate::serve::health::verdicts(
                        edges.iter().map(|e| &e.health),
                    ));
                }
                let v = verdicts.as_ref().expect("read above");
                if ramp::step(client, cfg, source, (&job, at), me, v).await? == Stepped::Committed {
                    // One step per round: the next one reads the new state.
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Commits a due scheduled write with its per-key compares, or records why
/// not (in the job, and in the audit trail `history` reads).
async fn run_write(
    client: &mut Client,
    cfg: &EtcdConfig,
    (job, at): (&Job, i64),
    w: &ScheduledWrite,
    me: &str,
) -> Result<(), EtcdError> {
    if !job.approved() {
        let why = format!(
            "not approved before its time ({} of {} approvals); nothing was written",
            job.approvals.len(),
            job.needed
        );
        return refuse(client, cfg, (job, at), &why, me).await;
    }
    let mut next = job.clone();
    next.state = JobState::Done;
    next.event(format!("committed by {me}"));
    let mut record = ChangeRecord::now(
        &job.command,
        job.summary.clone(),
        job.audit(me),
        w.plan.ops.iter().map(|op| op.key().to_string()).collect(),
    );
    record.approved_by = job.approvals.clone();
    let companion = companion(cfg, &next, at);
    match w
        .plan
        .commit_with(
            client,
            cfg,
            &record,
            &w.extra,
            Guard::from_force(w.force),
            Some(&companion),
        )
        .await
    {
        Ok(rev) => {
            info!(job = %job.id, revision = rev, "autopilot: scheduled write committed");
            Ok(())
        }
        Err(EtcdError::Conflict) => {
            // The job moved (cancelled, or another executor): nothing to
            // do. Otherwise the state moved since the plan was made.
            let still = client
                .get(companion.key.as_str(), None)
                .await?
                .kvs()
                .first()
                .is_some_and(|kv| kv.mod_revision() == at);
            if !still {
                return Ok(());
            }
            let why = format!(
                "the keys it read changed since revision {} (it was planned there); nothing was written: plan it again",
                w.base_revision
            );
            refuse(client, cfg, (job, at), &why, me).await
        }
        Err(e) => Err(e),
    }
}

/// The job as the companion of a commit.
fn companion(cfg: &EtcdConfig, next: &Job, at: i64) -> Companion {
    Companion {
        key: format!("{}{}", super::dir(cfg), next.id),
        mod_revision: at,
        value: serde_json::to_string(next).expect("serializable"),
    }
}

/// Marks a job refused and records the refusal in the audit trail (a
/// `meta/change` that writes no state key), in one transaction.
async fn refuse(
    client: &mut Client,
    cfg: &EtcdConfig,
    (job, at): (&Job, i64),
    why: &str,
    me: &str,
) -> Result<(), EtcdError> {
    let mut next = job.clone();
    next.state = JobState::Refused;
    next.note = Some(why.to_string());
    next.event(format!("refused by {me}: {why}"));
    let record = ChangeRecord::now(
        &job.command,
        format!(
            "REFUSED {} {} ({}): {why}",
            job.kind_name(),
            job.id,
            job.summary
        ),
        job.audit(me),
        Vec::new(),
    );
    let nothing = Plan {
        ops: Vec::new(),
        compares: BTreeMap::new(),
    };
    match nothing
        .commit_with(
            client,
            cfg,
            &record,
            &[],
            Guard::Force,
            Some(&companion(cfg, &next, at)),
        )
        .await
    {
        Ok(_) => {
            warn!(job = %job.id, why, "autopilot: scheduled write refused");
            Ok(())
        }
        Err(EtcdError::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}
