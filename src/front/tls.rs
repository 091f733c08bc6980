//! TLS for the HTTP listeners, DNS over TLS and DNS over HTTPS: one
//! certificate chain and key (`--tls-cert`, `--tls-key`, PEM) held in a
//! [`CertStore`] that every TLS listener resolves through, so a reload
//! swaps the certificate for new handshakes without touching open
//! connections.
//!
//! The files are polled (two `stat`s a second, following symlinks): that
//! sees an edit, a rename over the file and a Kubernetes Secret's `..data`
//! symlink swap alike, where directory watches miss the last. SIGHUP
//! reloads at once. A bad PEM or a key that does not match is logged with
//! the file and reason, counted, and the old certificate keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::shared::Shared;

/// ALPN of the HTTP listeners: HTTP/2 first, HTTP/1.1 otherwise.
pub(crate) const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of DNS over TLS (RFC 7858 registers `dot`).
pub(crate) const ALPN_DOT: &[&[u8]] = &[b"dot"];

/// The certificate and key files.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Why a certificate or key could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: the key does not match the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The crypto provider every TLS listener uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub(crate) fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(&files.key, e))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(_) => Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
    }
}

/// What `stat` says of a file (following symlinks): changes when the
/// file is edited, replaced by rename, or its symlink is swapped.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// The live certificate, swapped whole on reload.
pub(crate) struct CertStore {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<(Stamp, Stamp)>,
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Loads the files; fails (naming the file) if they are not usable.
    pub(crate) fn open(
        files: TlsFiles,
        shared: Option<Arc<Shared>>,
    ) -> Result<Arc<Self>, TlsError> {
        let seen = (stamp(&files.cert), stamp(&files.key));
        let current = ArcSwap::from_pointee(load(&files)?);
        Ok(Arc::new(CertStore {
            files,
            current,
            seen: Mutex::new(seen),
            shared,
        }))
    }

    /// Reloads the files; on failure the old certificate stays.
    pub(crate) fn reload(&self, why: &str) -> Result<(), TlsError> {
        *self.seen.lock().expect("not poisoned") =
            (stamp(&self.files.cert), stamp(&self.files.key));
        let r = load(&self.files).map(|c| self.current.store(Arc::new(c)));
        match &r {
            Ok(()) => info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded"),
            Err(error) => {
                warn!(%error, why, "TLS certificate not reloaded; the old one keeps serving");
            }
        }
        if let Some(s) = &self.shared {
            s.metrics.tls_reload(r.is_ok());
        }
        r
    }

    /// Reloads if either file changed since the last look.
    fn reload_if_changed(&self) {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        if *self.seen.lock().expect("not poisoned") != now {
            let _ = self.reload("file changed");
        }
    }

    /// A rustls server configuration resolving through this store.
    pub(crate) fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Polls the files until `shutdown`, reloading on change.
    pub(crate) async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn bad_files_are_named_and_the_old_certificate_stays() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let (cert, key) = pair("a.example");
        std::fs::write(&files.cert, &cert).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        let store = CertStore::open(files.clone(), None).unwrap();
        let first = store.current.load_full();

        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let e = store.reload("test").unwrap_err().to_string();
        assert!(e.starts_with(&files.cert.display().to_string()), "{e}");
        assert!(Arc::ptr_eq(&first, &store.current.load_full()));

        std::fs::write(&files.cert, "").unwrap();
        let e = store.reload("test").unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");

        let (other_cert, _) = pair("b.example");
        std::fs::write(&files.cert, other_cert).unwrap();
        let e = store.reload("test").unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(Arc::ptr_eq(&first, &store.current.load_full()));

        let (cert2, key2) = pair("c.example");
        std::fs::write(&files.cert, cert2).unwrap();
        std::fs::write(&files.key, key2).unwrap();
        store.reload("test").unwrap();
        assert!(!Arc::ptr_eq(&first, &store.current.load_full()));
    }
}
