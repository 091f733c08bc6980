//! `vdh-edge check` and `vdh-edge explain`: compile the source once, with
//! the server's own compiler, and report.

use super::{block_on, read_inputs};
use crate::cli::{ExplainArgs, SourceArgs};
use crate::config::snapshot;
use crate::error::Invalid;
use crate::explain::Query;

/// `vdh-edge check`: validates and prints a summary.
pub(crate) fn check(args: &SourceArgs) -> anyhow::Result<String> {
    let inputs = block_on(read_inputs(args))?;
    let snap = snapshot::compile(&inputs, None, &snapshot::SavedSerials::default())
        .map_err(Invalid::from)?;
    Ok(format!(
        "ok: {} zone(s), {} record(s), {} environment(s), {} service(s)",
        snap.zones.len(),
        snap.zones.values().map(|z| z.record_count()).sum::<usize>(),
        snap.routing.environments.len(),
        snap.routing.services.len()
    ))
}

/// `vdh-edge explain`: runs the same code as the server on a snapshot
/// compiled from the given source.
pub(crate) fn explain(args: &ExplainArgs) -> anyhow::Result<String> {
    let inputs = block_on(read_inputs(&args.source))?;
    let snap = snapshot::compile(&inputs, None, &snapshot::SavedSerials::default())
        .map_err(Invalid::from)?;
    let query = Query::from_args(args)?;
    let e = crate::explain::explain(&snap, &query)?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&e).expect("serializable"));
    }
    let from = args
        .source
        .etcd_config()
        .map_or_else(|| args.source.state.display().to_string(), |c| c.dir());
    Ok(e.render(&from, &args.sdk_version))
}
