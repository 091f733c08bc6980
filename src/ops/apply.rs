//! `vdh-edge apply FILE`: make the prefix hold a state file.

use anyhow::{Context, anyhow};

use super::preview::prepare;
use super::write::{Change, finish};
use super::{UsageError, require_etcd};
use crate::cli::ApplyArgs;
use crate::config::keyed::{self, entries_from_raw};
use crate::config::snapshot::{self, Inputs, SavedSerials, SourceKind};
use crate::error::Invalid;
use crate::etcd::plan::plan;
use crate::etcd::prefix::read_with_retry;

/// `vdh-edge apply FILE`.
pub(crate) async fn apply(args: &ApplyArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "apply")?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("{}: cannot read", args.file.display()))?;
    let raw = crate::config::state::from_yaml(&text).map_err(|e| {
        let at = e.line.map_or(String::new(), |l| format!(":{l}"));
        Invalid(vec![format!("{}{at}: {}", args.file.display(), e.message)])
    })?;
    let mut client = cfg.connect_live().await?;
    let current = read_base(&mut client, &cfg, args.base_revision).await?;
    let mut desired = entries_from_raw(&raw);
    let mut owned = vec![
        keyed::ENVIRONMENTS,
        keyed::SERVICES,
        keyed::ALLOW_EMPTY,
        keyed::POLICY,
    ];
    let zdir = args.source.zones_dir();
    if args.upload_zones {
        let dir = zdir.clone().ok_or_else(|| {
            UsageError(format!(
                "--upload-zones: {} is not a folder",
                args.source.zones.display()
            ))
        })?;
        let files = crate::source::FileSource {
            zones_dir: dir,
            state_file: None,
        }
        .read(0)
        .map_err(Invalid::from)?;
        for z in files.zones {
            desired.insert(
                format!("{}{}", keyed::ZONES, z.origin.to_lower()),
                z.text.to_string(),
            );
        }
        owned.push(keyed::ZONES);
    }
    let p = plan(&current, &desired, &owned);
    // Validate what the edges would see, with file errors named by file.
    let prepared = prepare(&cfg, zdir.as_ref(), &current, &p);
    if let Err(e) = &prepared {
        // Re-run the file-based validation for line numbers when possible.
        let inputs = Inputs {
            zones: crate::etcd::watch::inputs_from(&cfg, zdir.as_ref(), &current, SourceKind::Etcd)
                .map(|i| i.zones)
                .unwrap_or_default(),
            state_source: args.file.display().to_string(),
            state_text: text.clone(),
            keyed: None,
            revision: 0,
            kind: SourceKind::File,
        };
        if let Err(errors) = snapshot::compile(&inputs, None, &SavedSerials::default()) {
            return Err(Invalid::from(errors).into());
        }
        return Err(anyhow!("{e}"));
    }
    let mut prepared = prepared?;
    let mut impact = impact_lines(&prepared);
    impact.append(&mut prepared.lines);
    prepared.lines = impact;
    guard_scheme(&current, &raw, &mut prepared);
    let nothing = p.ops.is_empty().then(|| {
        format!(
            "nothing to change: {} already holds this state (revision {})",
            cfg.dir(),
            current.revision
        )
    });
    let change = Change {
        current: &current,
        plan: &p,
        prepared: &prepared,
        what: format!("apply {}", args.file.display()),
        rollback: false,
    };
    finish(
        &mut client,
        &cfg,
        change,
        (&args.write, args.dry_run),
        nothing,
        |rev| format!("applied: revision {rev}"),
    )
    .await
}

/// The prefix as of `--base-revision` (or the latest), refused when it
/// changed after that revision: a plan against stale content is never
/// reported as "nothing to change".
async fn read_base(
    client: &mut etcd_client::Client,
    cfg: &crate::etcd::EtcdConfig,
    base: Option<i64>,
) -> anyhow::Result<crate::etcd::PrefixState> {
    let current = read_with_retry(client, cfg, base.unwrap_or(0)).await?;
    let Some(base) = base else {
        return Ok(current);
    };
    let live = read_with_retry(client, cfg, 0).await?;
    let moved = live.entries.len() != current.entries.len()
        || live
            .entries
            .iter()
            .any(|(k, e)| current.entries.get(k).map(|c| c.mod_revision) != Some(e.mod_revision));
    if moved {
        return Err(anyhow!(
            "refused: --base-revision {base} is stale: {} changed since (live is revision {}); nothing was written. Read it again (vdh-edge status) and retry",
            cfg.dir(),
            live.revision
        ));
    }
    Ok(current)
}

/// A plain `apply` while a scheme is recorded (`meta/scheme`) that does
/// not hold what the scheme's current phase sets (applying the phase again
/// to it would change it) undoes or skips that phase: warn, and refuse
/// without `--force`.
fn guard_scheme(
    current: &crate::etcd::PrefixState,
    raw: &crate::config::state::RawState,
    prepared: &mut super::preview::Prepared,
) {
    let Some(rec) = current
        .entries
        .get(crate::etcd::meta::SCHEME)
        .and_then(|e| serde_json::from_str::<crate::scheme::SchemeRecord>(&e.value).ok())
    else {
        return;
    };
    let Ok(all) = crate::scheme::load(None) else {
        return;
    };
    let Ok(s) = crate::scheme::find(&all, &rec.scheme) else {
        return;
    };
    let Ok(params) = s.params(&[], rec.percent.as_deref()) else {
        return;
    };
    let Ok(again) = s.transform(raw, rec.phase, &params) else {
        return;
    };
    if entries_from_raw(&again) == entries_from_raw(raw) {
        return;
    }
    let why = format!(
        "scheme {} is at phase {} (applied {} by {}) and this state does not hold what that phase sets: it would undo or skip it. Move phases with `vdh-edge scheme apply {} --phase N` (or roll back), or add --force",
        rec.scheme, rec.phase, rec.time, rec.user, rec.scheme
    );
    prepared.lines.push(format!("warning: {why}"));
    prepared.refusal.get_or_insert(why);
}

/// What OLD and NEW SDKs of each service see before and after (NEW: the
/// newest version either side names), from the states `prepare` compiled.
fn impact_lines(prepared: &super::preview::Prepared) -> Vec<String> {
    use super::preview::doc_preview;
    let Some(after) = prepared.after.as_deref() else {
        return vec![];
    };
    let before = prepared.before.as_deref();
    let mut out = Vec::new();
    for svc in &after.routing.services {
        // NEW: the newest version either side names.
        let was = before
            .and_then(|b| b.routing.service(&svc.name))
            .and_then(|s| s.update.latest_version.clone());
        let new = [svc.update.latest_version.clone(), was]
            .into_iter()
            .flatten()
            .max_by(crate::config::cohort::cmp_precedence)
            .map_or_else(|| svc.legacy_sdk_version.to_string(), |v| v.to_string());
        for l in doc_preview(before, after, &svc.name, &new) {
            out.push(format!("{}: {l}", svc.name));
        }
    }
    out
}
