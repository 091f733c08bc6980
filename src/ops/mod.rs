//! The commands besides `serve`: `check` and `explain` read the source
//! once; `apply`, `rollback`, `history`, `status` and `scheme` work on an
//! etcd prefix (`scheme apply` also on a state file).
//!
//! Every write goes through [`crate::etcd::plan::Plan::commit`]: one
//! transaction, compared on every key read, with a `meta/change` record,
//! after a preview ([`preview`]) and a confirmation ([`confirm`]). Reading
//! is kept apart from rendering so `--json` and text show the same facts.

pub(crate) mod apply;
pub(crate) mod approve;
pub(crate) mod autopilot;
pub(crate) mod check;
pub(crate) mod confirm;
pub(crate) mod history;
pub(crate) mod preview;
pub(crate) mod rollback;
pub(crate) mod scheme;
pub(crate) mod status;
pub(crate) mod write;

use anyhow::Context;

use crate::cli::SourceArgs;
use crate::config::snapshot::{Inputs, SourceKind};
use crate::error::Invalid;
pub(crate) use crate::error::UsageError;
use crate::etcd::{EtcdConfig, PrefixState};

/// The etcd settings a command needs, or a usage error naming `command`.
fn require_etcd(args: &SourceArgs, command: &str) -> Result<EtcdConfig, UsageError> {
    args.etcd_config().ok_or_else(|| {
        UsageError(format!(
            "{command} needs --etcd URLS (and --prefix if not /vdh-edge)"
        ))
    })
}

/// Reads the configured source once (files, or etcd at its latest revision).
pub(crate) async fn read_inputs(args: &SourceArgs) -> anyhow::Result<Inputs> {
    Ok(read_inputs_and_edges(args, false).await?.0)
}

/// [`read_inputs`], and in etcd mode with `edges` also the live edges'
/// records, over the same connection.
pub(crate) async fn read_inputs_and_edges(
    args: &SourceArgs,
    edges: bool,
) -> anyhow::Result<(Inputs, Option<Vec<crate::etcd::registry::EdgeRecord>>)> {
    let Some(cfg) = args.etcd_config() else {
        return Ok((args.file_source()?.read(1).map_err(Invalid::from)?, None));
    };
    let mut client = cfg.connect_live().await?;
    let p = PrefixState::read(&mut client, &cfg, 0)
        .await
        .with_context(|| {
            format!(
                "reading {} from etcd at {}",
                cfg.dir(),
                cfg.endpoints.join(",")
            )
        })?;
    let inputs =
        crate::etcd::watch::inputs_from(&cfg, args.zones_dir().as_ref(), &p, SourceKind::Etcd)
            .map_err(Invalid::from)?;
    let records = if edges {
        Some(crate::etcd::registry::read_edges(&mut client, &cfg).await?)
    } else {
        None
    };
    Ok((inputs, records))
}

/// Runs a future on a small runtime (for the one-shot commands).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
