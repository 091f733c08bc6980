//! `vdh-edge scheme list|show|apply`: the cutover schemes as phases, each
//! written through the same plan, preview and commit as `apply`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, anyhow};

use super::UsageError;
use super::confirm::confirm;
use super::preview::{doc_preview, prepare};
use super::write::{Change, finish};
use crate::cli::{SchemeApplyArgs, SchemeListArgs, SchemeShowArgs};
use crate::config::keyed::{self, KeyedState, entries_from_raw};
use crate::config::snapshot::{self, SavedSerials, Snapshot};
use crate::config::state::RawState;
use crate::error::Invalid;
use crate::etcd::meta;
use crate::etcd::plan::plan;
use crate::etcd::prefix::read_with_retry;
use crate::scheme::{self, Scheme, SchemeRecord, check_order};

/// `vdh-edge scheme list`.
pub(crate) fn scheme_list(args: &SchemeListArgs) -> anyhow::Result<String> {
    let all = scheme::load(args.schemes.as_deref())?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&all).expect("serializable"));
    }
    let mut out = String::new();
    for s in &all {
        let _ = writeln!(
            out,
            "{:<11} {} ({} phases)",
            s.name,
            s.title,
            s.phases.len()
        );
        let params = s.params(&[], Some("P"))?;
        for p in &s.phases {
            let _ = writeln!(
                out,
                "            {}. {}",
                p.phase,
                scheme::subst_str(&p.title, &params)?
            );
        }
    }
    Ok(out)
}

/// `vdh-edge scheme show NAME`.
pub(crate) fn scheme_show(args: &SchemeShowArgs) -> anyhow::Result<String> {
    let all = scheme::load(args.schemes.as_deref())?;
    let s = scheme::find(&all, &args.name)?;
    if args.json {
        return Ok(serde_json::to_string_pretty(s).expect("serializable"));
    }
    Ok(scheme::show(s, &s.params(&args.set, Some("P"))?)?)
}

/// Refuses what the command line gets wrong before anything is read.
fn check_args(args: &SchemeApplyArgs, s: &Scheme) -> anyhow::Result<()> {
    if !args.ramp.is_empty() {
        super::autopilot::ramp::check_args(args, s)?;
        return Ok(());
    }
    if args.every.is_some() || !args.gate.is_empty() {
        return Err(UsageError("--every and --gate go with --ramp".into()).into());
    }
    if args.phase.is_none() && args.lower_ttl.is_none() && args.bump_auth_epoch.is_empty() {
        return Err(UsageError(
            "give --phase N (or --lower-ttl SECONDS / --bump-auth-epoch ENV)".into(),
        )
        .into());
    }
    if let Some(n) = args.phase {
        let ph = s.phase(n)?;
        match (&args.percent, ph.percent) {
            (None, true) => {
                return Err(UsageError(format!(
                    "phase {n} of {} is staged: give --percent P (e.g. 10, then 50, then 100)",
                    s.name
                ))
                .into());
            }
            (Some(_), false) => {
                return Err(
                    UsageError(format!("phase {n} of {} takes no --percent", s.name)).into(),
                );
            }
            (Some(p), true) => {
                crate::config::cohort::parse_percent(p).map_err(|e| UsageError(e.to_string()))?;
            }
            (None, false) => {}
        }
    }
    Ok(())
}

/// The new state: the phase (if any), then `--lower-ttl` and
/// `--bump-auth-epoch`.
fn transform(
    args: &SchemeApplyArgs,
    s: &Scheme,
    params: &BTreeMap<String, String>,
    raw: &RawState,
) -> anyhow::Result<RawState> {
    let service = params.get("service").cloned().unwrap_or_default();
    let mut new = match args.phase {
        Some(n) => s.transform(raw, n, params)?,
        None => raw.clone(),
    };
    if let Some(ttl) = args.lower_ttl {
        let svc = new
            .services
            .get_mut(&service)
            .ok_or_else(|| anyhow!("service '{service}' is not in the live state"))?;
        if ttl >= svc.ttl {
            return Err(UsageError(format!(
                "--lower-ttl {ttl} is not lower than the current TTL {} of {service}",
                svc.ttl
            ))
            .into());
        }
        svc.ttl = ttl;
    }
    for env in &args.bump_auth_epoch {
        let e = new
            .environments
            .get_mut(env)
            .ok_or_else(|| anyhow!("--bump-auth-epoch: no environment '{env}'"))?;
        e.token_epoch += 1;
    }
    Ok(new)
}

/// The scheme record, refusing a phase out of order unless `--force`.
fn check_progress(
    args: &SchemeApplyArgs,
    s: &Scheme,
    record: Option<&SchemeRecord>,
) -> anyhow::Result<()> {
    if let Some(n) = args.phase
        && let Err(why) = check_order(record, s, n, args.percent.as_deref())
        && !args.write.force
    {
        return Err(anyhow!("refused: {why} (or add --force)"));
    }
    Ok(())
}

/// What the applied phase is, in words (`scheme new-env phase 2 (10%): ...`).
fn describe(args: &SchemeApplyArgs, s: &Scheme) -> anyhow::Result<String> {
    Ok(match args.phase {
        Some(n) => format!(
            "scheme {} phase {n}{}: {}",
            s.name,
            args.percent
                .as_ref()
                .map_or(String::new(), |p| format!(" ({p}%)")),
            s.phase(n)?.title
        ),
        None => format!("scheme {} preparation", s.name),
    })
}

/// The NEW version previews compare, from the scheme's parameters.
fn new_version(params: &BTreeMap<String, String>) -> &str {
    params.get("new_version").map_or("1.0.0", String::as_str)
}

/// What applying a phase to the live prefix would do.
pub(crate) struct PhaseChange {
    pub(crate) current: crate::etcd::PrefixState,
    pub(crate) plan: crate::etcd::plan::Plan,
    pub(crate) prepared: super::preview::Prepared,
    /// `scheme new-env phase 2 (10%): ...`.
    pub(crate) what: String,
    /// Set when nothing would change (the text to print).
    pub(crate) nothing: Option<String>,
}

/// Reads the live prefix and plans `args`' phase on it, with the preview
/// (the same for a person and for the autopilot).
pub(crate) async fn phase_change(
    client: &mut etcd_client::Client,
    cfg: &crate::etcd::EtcdConfig,
    args: &SchemeApplyArgs,
    s: &Scheme,
    params: &BTreeMap<String, String>,
) -> anyhow::Result<PhaseChange> {
    let current = read_with_retry(client, cfg, 0).await?;
    let live = KeyedState {
        prefix: cfg.prefix.clone(),
        entries: current.entries.clone(),
    };
    let raw = live.raw().map_err(|e| {
        anyhow!(
            "the live state under {} is invalid; fix it before applying a scheme:\n{}",
            cfg.dir(),
            Invalid::from(e)
        )
    })?;
    let record: Option<SchemeRecord> = current
        .entries
        .get(meta::SCHEME)
        .and_then(|e| serde_json::from_str(&e.value).ok());
    check_progress(args, s, record.as_ref())?;
    let new_raw = transform(args, s, params, &raw)?;
    let p = plan(
        &current,
        &entries_from_raw(&new_raw),
        &[
            keyed::ENVIRONMENTS,
            keyed::SERVICES,
            keyed::ALLOW_EMPTY,
            keyed::POLICY,
        ],
    );
    let zdir = args.source.zones_dir();
    let mut prepared = prepare(cfg, zdir.as_ref(), &current, &p)?;
    let service = params.get("service").cloned().unwrap_or_default();
    let after = prepared
        .after
        .as_deref()
        .expect("prepare compiles the state after");
    let mut preview = doc_preview(
        prepared.before.as_deref(),
        after,
        &service,
        new_version(params),
    );
    preview.append(&mut prepared.lines);
    prepared.lines = preview;
    if let Some(n) = args.phase {
        let before_revision = match &record {
            Some(r) if r.scheme == s.name && n > 1 => r.before_revision,
            _ => current.revision,
        };
        let rec = SchemeRecord::now(&s.name, n, args.percent.clone(), before_revision);
        prepared.extra.push((
            meta::SCHEME.into(),
            serde_json::to_string(&rec).expect("serializable"),
        ));
    }
    let what = describe(args, s)?;
    // Re-applying the phase the prefix is at changes nothing: no new
    // revision just for a new timestamp in meta/scheme.
    let same_phase = record.as_ref().is_some_and(|r| {
        r.scheme == s.name && Some(r.phase) == args.phase && r.percent == args.percent
    });
    let nothing = (p.ops.is_empty() && (prepared.extra.is_empty() || same_phase))
        .then(|| format!("nothing to change: the live state already is {what}"));
    Ok(PhaseChange {
        current,
        plan: p,
        prepared,
        what,
        nothing,
    })
}

/// `vdh-edge scheme apply NAME --phase N`.
pub(crate) async fn scheme_apply(args: &SchemeApplyArgs) -> anyhow::Result<String> {
    let all = scheme::load(args.schemes.as_deref())?;
    let s = scheme::find(&all, &args.name)?;
    check_args(args, s)?;
    if !args.ramp.is_empty() {
        return super::autopilot::ramp::create(args, s).await;
    }
    let params = s.params(&args.set, args.percent.as_deref())?;
    let Some(cfg) = args.source.etcd_config() else {
        return scheme_apply_file(args, s, &params);
    };
    let mut client = cfg.connect_live().await?;
    let c = phase_change(&mut client, &cfg, args, s, &params).await?;
    let change = Change {
        current: &c.current,
        plan: &c.plan,
        prepared: &c.prepared,
        what: c.what.clone(),
        rollback: false,
    };
    let what = c.what.clone();
    finish(
        &mut client,
        &cfg,
        change,
        (&args.write, args.dry_run),
        c.nothing,
        |rev| format!("applied {what}: revision {rev}"),
    )
    .await
}

/// `vdh-edge scheme abort NAME`: cancels the scheme's ramps, then rolls
/// the prefix back to the revision before its phase 1 (the usual plan,
/// preview and confirmation of `rollback`).
pub(crate) async fn scheme_abort(args: &crate::cli::SchemeAbortArgs) -> anyhow::Result<String> {
    let cfg = super::require_etcd(&args.source, "scheme abort")?;
    let mut client = cfg.connect_live().await?;
    let current = read_with_retry(&mut client, &cfg, 0).await?;
    let record: SchemeRecord = current
        .entries
        .get(meta::SCHEME)
        .and_then(|e| serde_json::from_str(&e.value).ok())
        .ok_or_else(|| {
            anyhow!(
                "no scheme in progress under {}: nothing to abort",
                cfg.dir()
            )
        })?;
    if record.scheme != args.name {
        return Err(anyhow!(
            "the scheme in progress under {} is {}, not {}",
            cfg.dir(),
            record.scheme,
            args.name
        ));
    }
    let mut out = String::new();
    if !args.dry_run {
        let actor = super::write::actor_of(&cfg, args.write.actor.as_deref());
        let ramps = super::autopilot::cancel_ramps(&mut client, &cfg, &args.name, &actor).await?;
        if !ramps.is_empty() {
            let _ = writeln!(out, "cancelled ramp(s) {}", ramps.join(", "));
        }
    }
    let done = super::rollback::rollback(&crate::cli::RollbackArgs {
        source: args.source.clone(),
        write: args.write.clone(),
        to_revision: record.before_revision,
        dry_run: args.dry_run,
    })
    .await?;
    out.push_str(&done.replacen(
        "rolled back",
        &format!(
            "aborted scheme {} (phase {}): rolled back",
            args.name, record.phase
        ),
        1,
    ));
    Ok(out)
}

/// `scheme apply` on the `--state` file: the file is rewritten by rename and
/// the scheme's progress kept beside it in `<state>.scheme.json`.
fn scheme_apply_file(
    args: &SchemeApplyArgs,
    s: &Scheme,
    params: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let state_path = &args.source.state;
    let text = std::fs::read_to_string(state_path)
        .with_context(|| format!("{}: cannot read", state_path.display()))?;
    let raw = crate::config::state::from_yaml(&text)
        .map_err(|e| anyhow!("{}: {}", state_path.display(), e.message))?;
    let progress_path = state_path.with_extension("scheme.json");
    let record: Option<SchemeRecord> = std::fs::read(&progress_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    check_progress(args, s, record.as_ref())?;
    let new_raw = transform(args, s, params, &raw)?;
    let new_text = format!(
        "# Written by `vdh-edge scheme apply {}`; progress in {}.\n{}",
        s.name,
        progress_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(""),
        serde_norway::to_string(&new_raw)?
    );
    let compile = |t: &str| -> anyhow::Result<Snapshot> {
        let mut inputs = crate::source::FileSource {
            zones_dir: args.source.zones.clone(),
            state_file: Some(state_path.clone()),
        }
        .read(1)
        .map_err(Invalid::from)?;
        inputs.state_text = t.to_string();
        Ok(snapshot::compile(&inputs, None, &SavedSerials::default()).map_err(Invalid::from)?)
    };
    let before = compile(&text).ok();
    let after = compile(&new_text)?;
    let service = params.get("service").cloned().unwrap_or_default();
    let mut out = String::new();
    for l in doc_preview(before.as_ref(), &after, &service, new_version(params)) {
        let _ = writeln!(out, "  {l}");
    }
    if args.dry_run {
        return Ok(format!("dry run: {}\n{out}", state_path.display()));
    }
    eprint!("{out}");
    confirm(&args.write, &format!("rewrite {}?", state_path.display()))?;
    crate::util::write_atomic(state_path, new_text.as_bytes())?;
    if let Some(n) = args.phase {
        let rec = SchemeRecord::now(&s.name, n, args.percent.clone(), 0);
        crate::util::write_atomic(&progress_path, &serde_json::to_vec_pretty(&rec)?)?;
    }
    Ok(format!("wrote {}", state_path.display()))
}
