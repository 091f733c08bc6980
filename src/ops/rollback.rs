//! `vdh-edge rollback --to-revision R`: make the prefix hold what it held
//! at an older revision (as a new revision).

use std::collections::BTreeMap;

use anyhow::anyhow;

use super::preview::prepare;
use super::require_etcd;
use super::write::{Change, finish};
use crate::cli::RollbackArgs;
use crate::config::keyed;
use crate::etcd::EtcdError;
use crate::etcd::meta;
use crate::etcd::plan::plan;
use crate::etcd::prefix::read_with_retry;

/// `vdh-edge rollback --to-revision R`.
pub(crate) async fn rollback(args: &RollbackArgs) -> anyhow::Result<String> {
    let cfg = require_etcd(&args.source, "rollback")?;
    if args.to_revision <= 0 {
        return Err(anyhow!(
            "revision {} is not a revision: etcd counts from 1 (`vdh-edge history` lists the ones to roll back to)",
            args.to_revision
        ));
    }
    let mut client = cfg.connect_live().await?;
    let old = read_with_retry(&mut client, &cfg, args.to_revision)
        .await
        .map_err(|e| -> anyhow::Error {
            match e {
                EtcdError::Compacted { wanted, oldest } => anyhow!(
                    "revision {wanted} was compacted and cannot be restored; the oldest revision available is {oldest} (see `vdh-edge status`)"
                ),
                EtcdError::FutureRevision { wanted, latest } => {
                    anyhow!("revision {wanted} is in the future (latest is {latest})")
                }
                other => other.into(),
            }
        })?;
    let current = read_with_retry(&mut client, &cfg, 0).await?;
    if args.to_revision > current.revision {
        return Err(anyhow!(
            "revision {} is in the future (latest is {})",
            args.to_revision,
            current.revision
        ));
    }
    let owned = [
        keyed::ENVIRONMENTS,
        keyed::SERVICES,
        keyed::ZONES,
        keyed::ALLOW_EMPTY,
        keyed::POLICY,
        meta::SCHEME,
    ];
    let desired: BTreeMap<String, String> = old
        .entries
        .iter()
        .filter(|(k, _)| owned.iter().any(|o| k.starts_with(o)))
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect();
    let p = plan(&current, &desired, &owned);
    let prepared = prepare(&cfg, args.source.zones_dir().as_ref(), &current, &p)?;
    let nothing = p.ops.is_empty().then(|| {
        format!(
            "nothing to change: the live state already equals revision {}",
            args.to_revision
        )
    });
    let change = Change {
        current: &current,
        plan: &p,
        prepared: &prepared,
        what: format!("rollback to revision {}", args.to_revision),
        rollback: true,
    };
    finish(
        &mut client,
        &cfg,
        change,
        (&args.write, args.dry_run),
        nothing,
        |rev| {
            format!(
                "rolled back to the state of revision {}: new revision {rev}",
                args.to_revision
            )
        },
    )
    .await
}
