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
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::ConfigError;
use crate::config::snapshot::{Inputs, SourceKind, Text, ZoneText};
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

/// Why the inputs could not be read.
#[derive(Debug, PartialEq)]
pub(crate) struct ReadFailure {
    /// Each naming its file.
    pub(crate) errors: Vec<ConfigError>,
    /// Every error says "try again" (out of file descriptors or memory, an
    /// I/O error, an interrupted call): the watch retries on its own.
    pub(crate) transient: bool,
}

/// True for read errors that a later try may not meet.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EIO | libc::EAGAIN | libc::EINTR | libc::ENOMEM)
    ) || matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
    )
}

/// The errors of one read, and whether all of them were transient.
#[derive(Default)]
struct Errors {
    errors: Vec<ConfigError>,
    permanent: bool,
}

impl Errors {
    fn io(&mut self, path: &Path, e: &std::io::Error) {
        self.permanent |= !is_transient(e);
        self.errors.push(ConfigError {
            source: path.display().to_string(),
            line: None,
            message: format!("cannot read: {e}"),
        });
    }

    fn other(&mut self, e: ConfigError) {
        self.permanent = true;
        self.errors.push(e);
    }
}

/// Why a file's text could not be had.
enum Unreadable {
    Io(std::io::Error),
    /// Not UTF-8: the error names the line of the first bad byte.
    Utf8(ConfigError),
}

/// A file's identity, size and change times, as `fstat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A file's text is taken from the read cache only when its change time is
/// at least this old: the kernel stamps files with a coarse clock, so two
/// writes of the same size within one tick could leave equal stamps; a file
/// quiet for this long cannot still be in the tick of a write we missed.
const TRUSTED_AFTER: Duration = Duration::from_secs(2);

/// Zone texts read before, by path, with the stamp they were read at. A
/// change to the state (or to one zone) re-reads the zones folder; a big
/// zone whose file did not change is neither read, checked nor hashed
/// again, and its text is shared with the live snapshot.
static READ_CACHE: std::sync::Mutex<Option<rustc_hash::FxHashMap<PathBuf, (Stamp, Text)>>> =
    std::sync::Mutex::new(None);

/// Reads a zone file's text, from the read cache when the file is
/// unchanged and has been quiet for [`TRUSTED_AFTER`].
fn read_zone_text(path: &Path) -> Result<Text, Unreadable> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(Unreadable::Io)?;
    let stamp = Stamp::of(&file.metadata().map_err(Unreadable::Io)?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let quiet = now - stamp.ctime_ns >= TRUSTED_AFTER.as_nanos() as i128;
    let mut cache = READ_CACHE.lock().expect("not poisoned");
    let cache = cache.get_or_insert_with(Default::default);
    if quiet
        && let Some((s, text)) = cache.get(path)
        && *s == stamp
    {
        return Ok(text.clone());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(stamp.len).unwrap_or(0) + 1);
    file.read_to_end(&mut bytes).map_err(Unreadable::Io)?;
    let text = Text::from(utf8(path, bytes)?);
    if quiet {
        cache.insert(path.to_path_buf(), (stamp, text.clone()));
    } else {
        cache.remove(path);
    }
    Ok(text)
}

/// Drops the cached texts of files in `dir` that are not in `paths` (zone
/// files removed or renamed away).
fn forget_others(dir: &Path, paths: &[PathBuf]) {
    if let Some(cache) = READ_CACHE.lock().expect("not poisoned").as_mut() {
        cache.retain(|p, _| p.parent() != Some(dir) || paths.contains(p));
    }
}

/// Reads a file as UTF-8 text; bad bytes are reported with their line.
fn read_text(path: &Path) -> Result<String, Unreadable> {
    let bytes = std::fs::read(path).map_err(Unreadable::Io)?;
    utf8(path, bytes)
}

/// `bytes` as UTF-8 text, or an error naming the line of the first bad byte.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, Unreadable> {
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..good].iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good
            - bytes[..good]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        Unreadable::Utf8(ConfigError {
            source: path.display().to_string(),
            line: Some(line),
            message: format!(
                "not UTF-8 text: byte 0x{:02x} at column {column}",
                bytes[good]
            ),
        })
    })
}

impl FileSource {
    /// Reads every input once. `revision` labels the result.
    pub fn read(&self, revision: u64) -> Result<Inputs, Vec<ConfigError>> {
        self.try_read(revision).map_err(|f| f.errors)
    }

    /// [`FileSource::read`], saying whether a failure may pass by itself.
    fn try_read(&self, revision: u64) -> Result<Inputs, ReadFailure> {
        let mut errors = Errors::default();
        let mut zones = Vec::new();
        match std::fs::read_dir(&self.zones_dir) {
            Err(e) => errors.io(&self.zones_dir, &e),
            Ok(rd) => {
                let mut paths: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "zone") && p.is_file())
                    .collect();
                paths.sort();
                forget_others(&self.zones_dir, &paths);
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
                            errors.other(ConfigError {
                                source: p.display().to_string(),
                                line: None,
                                message: "file name must be the zone origin followed by .zone, e.g. example.com.zone".into(),
                            });
                            continue;
                        }
                    };
                    match read_zone_text(&p) {
                        Ok(text) => zones.push(ZoneText {
                            source: p.display().to_string(),
                            origin,
                            text,
                        }),
                        Err(Unreadable::Io(e)) => errors.io(&p, &e),
                        Err(Unreadable::Utf8(e)) => errors.other(e),
                    }
                }
            }
        }
        let (state_source, state_text) = match &self.state_file {
            None => ("(no state)".to_string(), String::new()),
            Some(p) => match read_text(p) {
                Ok(t) => (p.display().to_string(), t),
                Err(Unreadable::Io(e)) => {
                    errors.io(p, &e);
                    (p.display().to_string(), String::new())
                }
                Err(Unreadable::Utf8(e)) => {
                    errors.other(e);
                    (p.display().to_string(), String::new())
                }
            },
        };
        if !errors.errors.is_empty() {
            return Err(ReadFailure {
                errors: errors.errors,
                transient: !errors.permanent,
            });
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
    async fn read_settled(&self, revision: u64) -> Result<Inputs, ReadFailure> {
        let mut last = self.try_read(revision);
        for _ in 0..20 {
            tokio::time::sleep(SETTLE).await;
            let again = self.try_read(revision);
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
        let mut revision = first_revision;
        let mut pending = false;
        loop {
            if !pending {
                tokio::select! {
                    e = self.events.recv() => if e.is_none() { return },
                    () = shutdown.cancelled() => return,
                }
            }
            // Debounce: wait for a quiet period.
            loop {
                match tokio::time::timeout(DEBOUNCE, self.events.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            revision += 1;
            debug!(revision, "files changed");
            pending = match self.read_until_settled(&tx, revision, &shutdown).await {
                Some(p) => p,
                None => return,
            };
        }
    }

    /// Reads the inputs and sends the candidate, or the errors. A failure
    /// that may pass by itself (out of file descriptors, an I/O error) is
    /// retried with backoff until the read succeeds or a file changes
    /// again. Returns whether a change event is pending, or `None` to stop.
    async fn read_until_settled(
        &mut self,
        tx: &mpsc::Sender<StateEvent>,
        revision: u64,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
        let mut backoff = Backoff::new();
        let mut reported = false;
        loop {
            let failure = match self.source.read_settled(revision).await {
                Ok(inputs) => {
                    if reported {
                        info!(revision, "the files could be read again");
                    }
                    return self
                        .send(tx, StateEvent::Candidate(inputs), shutdown)
                        .await
                        .then_some(false);
                }
                Err(f) => f,
            };
            let transient = failure.transient;
            // The reload loop records and counts the first failure only.
            if !reported {
                let ev = StateEvent::Unreadable {
                    revision,
                    errors: failure.errors,
                };
                if !self.send(tx, ev, shutdown).await {
                    return None;
                }
                reported = true;
            }
            if !transient {
                return Some(false);
            }
            let delay = backoff.delay();
            warn!(
                revision,
                ?delay,
                "the files could not be read for a passing reason; retrying"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                e = self.events.recv() => return e.map(|()| true),
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// Sends an event to the reload loop; false when it is gone.
    async fn send(
        &self,
        tx: &mpsc::Sender<StateEvent>,
        ev: StateEvent,
        shutdown: &CancellationToken,
    ) -> bool {
        if tx.send(ev).await.is_ok() {
            return true;
        }
        if !shutdown.is_cancelled() {
            warn!("reload loop has stopped; file watcher exits");
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(serial: u32) -> String {
        format!("@ 3600 SOA ns h {serial:010} 1 1 1 300\n@ NS ns\nns A 192.0.2.1\n")
    }

    fn read(dir: &Path) -> Inputs {
        FileSource {
            zones_dir: dir.to_path_buf(),
            state_file: None,
        }
        .read(0)
        .unwrap()
    }

    #[test]
    fn an_unchanged_quiet_zone_file_is_not_read_again_and_a_rewritten_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.com.zone");
        std::fs::write(&path, zone(1)).unwrap();
        // Just written: read every time, never cached.
        let (a, b) = (read(dir.path()), read(dir.path()));
        assert_ne!(a.zones[0].text.as_ptr(), b.zones[0].text.as_ptr());
        std::thread::sleep(TRUSTED_AFTER + Duration::from_millis(100));
        // Quiet: the second read shares the first one's text.
        let (a, b) = (read(dir.path()), read(dir.path()));
        assert_eq!(a.zones[0].text.as_ptr(), b.zones[0].text.as_ptr());
        assert_eq!(&*b.zones[0].text, zone(1));
        // Rewritten in place with the same size, within the same second:
        // the change time moved, so the new bytes are read.
        std::fs::write(&path, zone(2)).unwrap();
        let c = read(dir.path());
        assert_eq!(&*c.zones[0].text, zone(2));
        assert_ne!(c.zones[0].text.hash(), b.zones[0].text.hash());
        // A removed file is forgotten.
        std::fs::remove_file(&path).unwrap();
        assert!(read(dir.path()).zones.is_empty());
        let cache = READ_CACHE.lock().unwrap();
        assert!(!cache.as_ref().unwrap().contains_key(&path));
    }
}
