//! The cache folder (`--cache-dir`): the last serial served per zone, so
//! serials survive restarts, and in etcd mode the last published prefix
//! (the last-known-good state), so an edge can start while etcd is down;
//! and the census sketches, so a restart does not forget the clients seen.

use std::path::PathBuf;

use crate::config::snapshot::{Inputs, SavedSerials};
use crate::etcd::PrefixState;

/// The files of the cache folder (nothing is kept without `--cache-dir`).
#[derive(Debug, Clone)]
pub(crate) struct CacheDir {
    serials_path: Option<PathBuf>,
    prefix_path: Option<PathBuf>,
    census_path: Option<PathBuf>,
}

/// The etcd prefix as last published, as kept on disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CachedPrefix {
    prefix: String,
    state: PrefixState,
}

impl CacheDir {
    /// The cache in `dir`, or none.
    pub(crate) fn new(dir: Option<PathBuf>) -> CacheDir {
        CacheDir {
            serials_path: dir.as_ref().map(|d| d.join("serials.json")),
            census_path: dir.as_ref().map(|d| d.join("census.json")),
            prefix_path: dir.map(|d| d.join("etcd-state.json")),
        }
    }

    /// The last published etcd prefix, if one was saved for `prefix`.
    pub(crate) fn load_prefix(&self, prefix: &str) -> Option<PrefixState> {
        let p = self.prefix_path.as_ref()?;
        let c: CachedPrefix = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        (c.prefix == prefix).then_some(c.state)
    }

    /// Saves the prefix `inputs` were read from (etcd mode only).
    pub(crate) fn save_prefix(&self, inputs: &Inputs) -> std::io::Result<()> {
        let (Some(p), Some(keyed)) = (&self.prefix_path, &inputs.keyed) else {
            return Ok(());
        };
        let c = CachedPrefix {
            prefix: keyed.prefix.clone(),
            state: PrefixState {
                revision: i64::try_from(inputs.revision).unwrap_or(i64::MAX),
                cluster_id: 0,
                entries: keyed.entries.clone(),
            },
        };
        crate::util::write_atomic(p, &serde_json::to_vec(&c).expect("serializable"))
    }

    /// The census saved by a previous run, if any.
    pub(crate) fn load_census(&self) -> Option<crate::census::SavedCensus> {
        let p = self.census_path.as_ref()?;
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    }

    /// Saves the census atomically.
    pub(crate) fn save_census(&self, census: &crate::census::Census) -> std::io::Result<()> {
        let Some(p) = &self.census_path else {
            return Ok(());
        };
        crate::util::write_atomic(
            p,
            &serde_json::to_vec(&census.save()).expect("serializable"),
        )
    }

    /// The serials saved by a previous run (empty when none).
    pub(crate) fn load_serials(&self) -> SavedSerials {
        self.serials_path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves serials atomically (temp file, fsync, rename).
    pub(crate) fn save_serials(&self, serials: &SavedSerials) -> std::io::Result<()> {
        let Some(p) = &self.serials_path else {
            return Ok(());
        };
        crate::util::write_atomic(
            p,
            &serde_json::to_vec_pretty(serials).expect("serializable"),
        )
    }
}
