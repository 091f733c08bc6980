//! The API host's addresses for this client: `/v1/resolve` (verified like
//! the document, cached for its TTL), else the system resolver.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::http::{self, Endpoint};
use crate::{Config, Rejected};

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `/v1/resolve`, with the environment it chose.
    Edge { environment: Option<String> },
    /// The system resolver (the edge could not answer).
    System,
}

/// Addresses for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addresses: Vec<IpAddr>,
    pub ttl: Duration,
    pub source: Source,
}

/// Answers by host until they expire.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, (Resolved, Instant)>>,
}

impl Cache {
    pub(crate) async fn resolve(
        &self,
        cfg: &Config,
        ep: &Endpoint,
        tls: &Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Resolved {
        if let Some((r, until)) = self.entries.lock().expect("not poisoned").get(host)
            && *until > Instant::now()
        {
            return r.clone();
        }
        match from_edge(cfg, ep, tls, host).await {
            Some(r) => {
                self.entries
                    .lock()
                    .expect("not poisoned")
                    .insert(host.to_string(), (r.clone(), Instant::now() + r.ttl));
                r
            }
            None if !cfg.system_fallback => Resolved {
                addresses: Vec::new(),
                ttl: Duration::ZERO,
                source: Source::System,
            },
            None => {
                let addresses = tokio::net::lookup_host((host, 443))
                    .await
                    .map(|it| it.map(|a| a.ip()).collect())
                    .unwrap_or_default();
                Resolved {
                    addresses,
                    ttl: Duration::ZERO,
                    source: Source::System,
                }
            }
        }
    }
}

/// `/v1/resolve`, verified.
async fn from_edge(
    cfg: &Config,
    ep: &Endpoint,
    tls: &Arc<rustls::ClientConfig>,
    host: &str,
) -> Option<Resolved> {
    let path = format!("/v1/resolve?host={}&{}", crate::enc(host), cfg.query());
    let a = http::get(ep, cfg.edge_addr, &path, &[], tls, Duration::from_secs(5))
        .await
        .ok()?;
    if a.status != 200 {
        return None;
    }
    check(cfg, &a).ok()
}

fn check(cfg: &Config, a: &http::Answer) -> Result<Resolved, Rejected> {
    cfg.keys.verify(a.header("x-jws-signature"), &a.body)?;
    let v: serde_json::Value =
        serde_json::from_slice(&a.body).map_err(|e| Rejected::NotADocument(e.to_string()))?;
    if v["client_id"].as_str() != cfg.client_id.as_deref() {
        return Err(Rejected::WrongClient {
            want: cfg.client_id.clone(),
            got: v["client_id"].as_str().map(str::to_string),
        });
    }
    let expires = v["expires_at"].as_str().ok_or(Rejected::NoValidity)?;
    if crate::verify::parse_time(expires).is_none_or(|t| t <= SystemTime::now()) {
        return Err(Rejected::Expired(expires.to_string()));
    }
    let addresses = v["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    Ok(Resolved {
        addresses,
        ttl: Duration::from_secs(v["ttl"].as_u64().unwrap_or(0)),
        source: Source::Edge {
            environment: v["environment"].as_str().map(str::to_string),
        },
    })
}
