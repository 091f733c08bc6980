//! `FileSource`: zones from a folder of `*.zone` files and the routing state
//! from one YAML file, watched for changes.
//!
//! Changes are debounced, and a candidate is sent only after two reads in a
//! row give the same bytes, so a file caught half-written is not published.
//! Editors and tools should still write by rename (write a temp file, then
//! `mv` it over), which makes every read see a whole file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::ConfigError;
use crate::config::snapshot::{Inputs, SourceKind, ZoneText};
use crate::proto::name::Name;
use crate::source::StateEvent;

/// Quiet time after the last file event before reading.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(30);
/// Pause between the two reads that must agree.
const SETTLE: Duration = Duration::from_millis(10);

/// The file source: a folder of zone files and a state file.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// Each `<origin>.zone` directly in it is one zone.
    pub zones_dir: PathBuf,
    /// The routing state (YAML); `None` reads zones only.
    pub state_file: Option<PathBuf>,
}

fn read_err(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError {
        source: path.display().to_string(),
        line: None,
        message: format!("cannot read: {e}"),
    }
}

impl FileSource {
    /// Reads every input once. `revision` labels the result.
    pub fn read(&self, revision: u64) -> Result<Inputs, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut zones = Vec::new();
        match std::fs::read_dir(&self.zones_dir) {
            Err(e) => errors.push(read_err(&self.zones_dir, &e)),
            Ok(rd) => {
                let mut paths: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "zone") && p.is_file())
                    .collect();
                paths.sort();
                for p in paths {
                    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    let origin_text = if stem.ends_with('.') {
                        stem.to_string()
                    } else {
                        format!("{stem}.")
                    };
                    let origin = match Name::parse(&origin_text, None) {
                        Ok(o) if !stem.is_empty() => o,
                        _ => {
                            errors.push(ConfigError {
                                source: p.display().to_string(),
                                line: None,
                                message: "file name must be the zone origin followed by .zone, e.g. example.com.zone".into(),
                            });
                            continue;
                        }
                    };
                    match std::fs::read_to_string(&p) {
                        Ok(text) => zones.push(ZoneText {
                            source: p.display().to_string(),
                            origin,
                            text,
                        }),
                        Err(e) => errors.push(read_err(&p, &e)),
                    }
                }
            }
        }
        let (state_source, state_text) = match &self.state_file {
            None => ("(no state)".to_string(), String::new()),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => (p.display().to_string(), t),
                Err(e) => {
                    errors.push(read_err(p, &e));
                    (p.display().to_string(), String::new())
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Inputs {
            zones,
            state_source,
            state_text,
            keyed: None,
            revision,
            kind: SourceKind::File,
        })
    }

    /// Reads until two reads agree.
    async fn read_settled(&self, revision: u64) -> Result<Inputs, Vec<ConfigError>> {
        let mut last = self.read(revision);
        for _ in 0..20 {
            tokio::time::sleep(SETTLE).await;
            let again = self.read(revision);
            let same = match (&last, &again) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a == b,
                _ => false,
            };
            if same {
                return again;
            }
            last = again;
        }
        last
    }

    /// Starts watching the inputs. Call it before the first [`FileSource::read`]
    /// so no change slips between that read and the watch.
    pub(crate) fn start_watch(self) -> notify::Result<FileWatch> {
        let (etx, erx) = mpsc::unbounded_channel::<()>();
        let zones_dir = self
            .zones_dir
            .canonicalize()
            .unwrap_or(self.zones_dir.clone());
        let state = self.state_file.as_deref().map(StateWatch::new);
        let zd = zones_dir.clone();
        let st = state.clone();
        let reread = etx.clone();
        let mut watcher = notify::recommended_watcher(
            move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                // Reads (ours included) and metadata changes are not changes.
                use notify::EventKind;
                use notify::event::ModifyKind;
                let changed = matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any
                ) || matches!(ev.kind, EventKind::Modify(k) if !matches!(k, ModifyKind::Metadata(_)));
                if !changed {
                    return;
                }
                let relevant = ev.paths.iter().any(|p| {
                    let in_zones = p.parent() == Some(zd.as_path())
                        && (p.extension().is_some_and(|x| x == "zone") || is_data_swap(p));
                    in_zones || st.as_ref().is_some_and(|s| s.matches(p))
                });
                if relevant {
                    let _ = etx.send(());
                }
            },
        )?;
        watcher.watch(&zones_dir, RecursiveMode::NonRecursive)?;
        for dir in state.iter().flat_map(|s| s.dirs.iter()) {
            if *dir != zones_dir {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
        }
        Ok(FileWatch {
            source: self,
            _watcher: watcher,
            events: erx,
            reread,
        })
    }
}

/// Kubernetes updates a mounted ConfigMap or Secret by pointing its
/// `..data` symlink at a new folder: the files themselves (symlinks through
/// `..data`) raise no event, the swap does.
fn is_data_swap(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "..data")
}

/// What to watch for the state file: the folder it is named in (where a
/// Kubernetes `..data` swap happens) and, when it is a symlink, the folder
/// of its target; and both names.
#[derive(Debug, Clone)]
struct StateWatch {
    dirs: Vec<PathBuf>,
    names: Vec<std::ffi::OsString>,
    /// The folder the state file is named in.
    named_in: Option<PathBuf>,
}

impl StateWatch {
    fn new(path: &Path) -> StateWatch {
        let named_in = path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .and_then(|d| d.canonicalize().ok());
        let target = path.canonicalize().unwrap_or(path.to_path_buf());
        let mut dirs: Vec<PathBuf> = named_in.iter().cloned().collect();
        if let Some(d) = target.parent()
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_path_buf());
        }
        let mut names: Vec<std::ffi::OsString> = path
            .file_name()
            .map(ToOwned::to_owned)
            .into_iter()
            .collect();
        if let Some(n) = target.file_name()
            && !names.iter().any(|x| x == n)
        {
            names.push(n.to_owned());
        }
        StateWatch {
            dirs,
            names,
            named_in,
        }
    }

    /// True when an event at `p` may change the state file.
    fn matches(&self, p: &Path) -> bool {
        p.file_name()
            .is_some_and(|n| self.names.iter().any(|x| x == n))
            || (is_data_swap(p) && p.parent() == self.named_in.as_deref())
    }
}

/// A running watch on a [`FileSource`]'s files.
pub(crate) struct FileWatch {
    source: FileSource,
    /// Dropping the watcher stops the events.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    /// Sends into `events`: a re-read asked for (SIGHUP).
    reread: mpsc::UnboundedSender<()>,
}

impl FileWatch {
    /// A handle that makes the watch read every input again, as if they
    /// had changed (SIGHUP). Unchanged inputs publish nothing.
    pub(crate) fn rereader(&self) -> mpsc::UnboundedSender<()> {
        self.reread.clone()
    }

    /// Sends a candidate after each burst of changes until `shutdown` or
    /// until the reload loop is gone. `first_revision` is the revision of
    /// the snapshot already loaded.
    pub(crate) async fn run(
        mut self,
        tx: mpsc::Sender<StateEvent>,
        first_revision: u64,
        shutdown: CancellationToken,
    ) {
        let erx = &mut self.events;
        let mut revision = first_revision;
        loop {
            tokio::select! {
                e = erx.recv() => if e.is_none() { return },
                () = shutdown.cancelled() => return,
            }
            // Debounce: wait for a quiet period.
            loop {
                match tokio::time::timeout(DEBOUNCE, erx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            revision += 1;
            debug!(revision, "files changed");
            let ev = match self.source.read_settled(revision).await {
                Ok(inputs) => StateEvent::Candidate(inputs),
                Err(errors) => StateEvent::Unreadable { revision, errors },
            };
            if tx.send(ev).await.is_err() {
                if !shutdown.is_cancelled() {
                    warn!("reload loop has stopped; file watcher exits");
                }
                return;
            }
        }
    }
}
