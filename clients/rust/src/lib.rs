//! The reference client of vdh-edge (see `docs/sdk.md` for the state
//! machine an SDK in any language can copy).
//!
//! It starts from the last good document on disk (or one bundled with the
//! app), refreshes in the background with long-polls (`If-None-Match`,
//! `wait`), verifies every document's signature and validity against pinned
//! keys (a bad one is refused and the last good one kept), resolves the API
//! host through `/v1/resolve` (honouring its TTL, falling back to the system
//! resolver), and raises typed [`Event`]s.

mod http;
mod poll;
mod resolve;
mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use http::{Answer, Endpoint, get, tls_trusting};
pub use resolve::{Resolved, Source};
pub use verify::{Keys, Rejected};

/// What can go wrong talking to an edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bad URL {0}")]
    Url(String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out")]
    Timeout,
    #[error("HTTP {0}")]
    Status(u16),
    #[error("refused: {0}")]
    Rejected(Rejected),
}

/// The config document (the edge's `Document` schema).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Document {
    pub schema_version: u32,
    pub service: String,
    pub revision: u64,
    pub environment: String,
    pub backend_version: String,
    pub api_base_url: String,
    pub update: Update,
    pub maintenance: Maintenance,
    pub auth: Auth,
    pub refresh_after_s: u32,
    pub rule: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Update {
    pub required: bool,
    pub recommended: bool,
    pub min_version: Option<String>,
    pub latest_version: Option<String>,
    pub url: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Maintenance {
    pub active: bool,
    pub until: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Auth {
    pub realm: String,
    pub epoch: u64,
}

/// What the client tells the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A verified document was accepted (first one, or a changed one).
    Accepted { revision: u64, environment: String },
    /// The API base URL changed.
    BaseUrlChanged { from: String, to: String },
    /// The token's realm or epoch differs from the one the token was
    /// stored with: get a new token.
    TokenInvalidated { realm: String, epoch: u64 },
    /// The SDK must update before going on.
    UpdateRequired {
        min_version: Option<String>,
        url: Option<String>,
        message: Option<String>,
    },
    /// A newer SDK exists.
    UpdateRecommended {
        latest_version: Option<String>,
        url: Option<String>,
    },
    /// The environment went into maintenance.
    Maintenance {
        until: Option<String>,
        message: Option<String>,
    },
    /// An answer was refused; the last good document stays.
    Rejected { reason: Rejected },
    /// The edge could not be reached (the client backs off and retries).
    Unreachable { error: Error },
}

/// How the client is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The edge, e.g. `https://edge.example.com`.
    pub edge: String,
    /// Connect here instead of resolving the edge's host (tests, pinning).
    pub edge_addr: Option<std::net::SocketAddr>,
    pub service: String,
    pub sdk_version: String,
    pub client_id: Option<String>,
    pub platform: Option<String>,
    pub app_id: Option<String>,
    /// Pinned public keys.
    pub keys: Keys,
    /// Where the last good document (and its signature) is kept.
    pub store: Option<PathBuf>,
    /// A document shipped with the app, verified like any other.
    pub bundled: Option<(Vec<u8>, String)>,
    /// Trusted CAs (PEM) for HTTPS.
    pub ca_pem: Vec<u8>,
    /// Long-poll hold (`wait`); `None`: poll every `refresh_after_s`.
    pub long_poll: Option<Duration>,
    /// First backoff step and cap (full jitter).
    pub backoff: (Duration, Duration),
    /// Ask the system resolver when `/v1/resolve` cannot answer.
    pub system_fallback: bool,
}

impl Config {
    /// Defaults: long-polls of 30 s, backoff from 1 s to 60 s.
    pub fn new(edge: &str, service: &str, sdk_version: &str, keys: Keys) -> Config {
        Config {
            edge: edge.to_string(),
            edge_addr: None,
            service: service.to_string(),
            sdk_version: sdk_version.to_string(),
            client_id: None,
            platform: None,
            app_id: None,
            keys,
            store: None,
            bundled: None,
            ca_pem: Vec::new(),
            long_poll: Some(Duration::from_secs(30)),
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            system_fallback: true,
        }
    }

    /// The query string describing this client.
    fn query(&self) -> String {
        let mut q = format!("sdk_version={}", enc(&self.sdk_version));
        for (k, v) in [
            ("client_id", &self.client_id),
            ("platform", &self.platform),
            ("app_id", &self.app_id),
        ] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        q
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the client holds; shared with its background task.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) doc: Option<Document>,
    pub(crate) etag: Option<String>,
    pub(crate) last_rejection: Option<Rejected>,
}

/// A running client.
pub struct Client {
    cfg: Arc<Config>,
    held: Arc<Mutex<Held>>,
    tls: Arc<rustls::ClientConfig>,
    ep: Endpoint,
    resolver: resolve::Cache,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Loads the last good (or bundled) document, then refreshes in the
    /// background; events go to the returned receiver.
    pub fn start(
        cfg: Config,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<Event>), Error> {
        let ep = Endpoint::parse(&cfg.edge)?;
        let tls = tls_trusting(&cfg.ca_pem)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = Arc::new(cfg);
        let held = Arc::new(Mutex::new(Held::default()));
        poll::load_start(&cfg, &held);
        let task = tokio::spawn(poll::run(
            cfg.clone(),
            held.clone(),
            ep.clone(),
            tls.clone(),
            tx,
        ));
        Ok((
            Client {
                cfg,
                held,
                tls,
                ep,
                resolver: resolve::Cache::default(),
                task,
            },
            rx,
        ))
    }

    /// The document in use (the last good one).
    pub fn document(&self) -> Option<Document> {
        self.held.lock().expect("not poisoned").doc.clone()
    }

    /// Why the last refused answer was refused, if any.
    pub fn last_rejection(&self) -> Option<Rejected> {
        self.held
            .lock()
            .expect("not poisoned")
            .last_rejection
            .clone()
    }

    /// The addresses to use for `host` (e.g. the API host): `/v1/resolve`
    /// for this client, cached for its TTL; the system resolver when the
    /// edge cannot answer.
    pub async fn resolve(&self, host: &str) -> Resolved {
        self.resolver
            .resolve(&self.cfg, &self.ep, &self.tls, host)
            .await
    }

    /// Stops the background refresh.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}
