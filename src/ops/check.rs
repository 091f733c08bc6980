//! `vdh-edge check` and `vdh-edge explain`: compile the source once, with
//! the server's own compiler, and report.

use super::{block_on, read_inputs, read_inputs_and_edges};
use crate::cli::{CheckArgs, ExplainArgs};
use crate::config::snapshot;
use crate::error::Invalid;
use crate::explain::Query;

/// `vdh-edge check`: validates and prints a summary.
pub(crate) fn check(args: &CheckArgs) -> anyhow::Result<String> {
    let inputs = block_on(read_inputs(&args.source))?;
    let snap = snapshot::compile(&inputs, None, &snapshot::SavedSerials::default())
        .map_err(Invalid::from)?;
    if args.json {
        let v = serde_json::json!({
            "ok": true,
            "revision": inputs.revision,
            "zones": snap.zones.len(),
            "records": snap.zones.values().map(|z| z.record_count()).sum::<usize>(),
            "environments": snap.routing.environments.len(),
            "services": snap.routing.services.len(),
        });
        return Ok(serde_json::to_string_pretty(&v).expect("serializable"));
    }
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
    let (inputs, edges) = block_on(read_inputs_and_edges(&args.source, true))?;
    // The edges' health verdicts, so the answer shown is the failed-over
    // one the edges give while an environment is down.
    let health = crate::serve::health::verdicts(edges.iter().flatten().map(|e| &e.health));
    let down = health
        .iter()
        .filter(|(_, v)| !v.up)
        .map(|(env, _)| env.clone())
        .collect();
    let snap =
        snapshot::compile_with_down(&inputs, None, &snapshot::SavedSerials::default(), &down)
            .map_err(Invalid::from)?;
    let query = Query::from_args(args)?;
    let mut e = crate::explain::explain(&snap, &query)?;
    e.health = health;
    if args.json {
        return Ok(serde_json::to_string_pretty(&e).expect("serializable"));
    }
    let (Some(cfg), Some(edges)) = (args.source.etcd_config(), edges) else {
        return Ok(e.render(&args.source.state.display().to_string(), &args.sdk_version));
    };
    // What the edges serve, to set against the revision evaluated here.
    let mut out = e.render(&cfg.dir(), &args.sdk_version);
    let line: Vec<String> = edges
        .iter()
        .map(|r| format!("{} at revision {}", r.edge, r.revision))
        .collect();
    out.push_str(&format!(
        "edges: {}\n",
        if line.is_empty() {
            "none registered".to_string()
        } else {
            line.join(", ")
        }
    ));
    Ok(out)
}

/// `vdh-edge keygen FILE`: a new Ed25519 signing key, mode 0600, never
/// over an existing file.
pub(crate) fn keygen(args: &crate::cli::KeygenArgs) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (pem, kid) = crate::signing::generate().map_err(anyhow::Error::msg)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    Ok(format!(
        "wrote {} (Ed25519, kid {kid}); serve with --signing-key {}",
        args.file.display(),
        args.file.display()
    ))
}
