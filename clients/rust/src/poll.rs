//! The refresh loop: the state machine of `docs/sdk.md`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use crate::http::{self, Endpoint};
use crate::verify::{Rejected, check_document};
use crate::{Config, Document, Error, Event, Held};

/// The stored last good answer: the body and signature as received.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    body: String,
    signature: String,
    etag: Option<String>,
}

/// Start: the stored document if it verifies, else the bundled one.
pub(crate) fn load_start(cfg: &Config, held: &Mutex<Held>) {
    let stored = cfg
        .store
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
        .map(|s| (s.body.into_bytes(), s.signature, s.etag));
    let bundled = cfg.bundled.clone().map(|(b, s)| (b, s, None));
    for (body, sig, etag) in stored.into_iter().chain(bundled) {
        if let Ok(doc) = verified(cfg, None, &body, Some(&sig)) {
            let mut h = held.lock().expect("not poisoned");
            h.doc = Some(doc);
            h.etag = etag;
            return;
        }
    }
}

/// Signature, then the document's binding and validity.
fn verified(
    cfg: &Config,
    held: Option<&Document>,
    body: &[u8],
    sig: Option<&str>,
) -> Result<Document, Rejected> {
    cfg.keys.verify(sig, body)?;
    check_document(
        body,
        &cfg.service,
        cfg.client_id.as_deref(),
        held,
        SystemTime::now(),
    )
}

/// The events a new document raises after `prev`.
pub(crate) fn events(prev: Option<&Document>, new: &Document) -> Vec<Event> {
    let mut out = vec![Event::Accepted {
        revision: new.revision,
        environment: new.environment.clone(),
    }];
    if let Some(p) = prev {
        if p.api_base_url != new.api_base_url {
            out.push(Event::BaseUrlChanged {
                from: p.api_base_url.clone(),
                to: new.api_base_url.clone(),
            });
        }
        if p.auth != new.auth {
            out.push(Event::TokenInvalidated {
                realm: new.auth.realm.clone(),
                epoch: new.auth.epoch,
            });
        }
    }
    if new.update.required && !prev.is_some_and(|p| p.update.required) {
        out.push(Event::UpdateRequired {
            min_version: new.update.min_version.clone(),
            url: new.update.url.clone(),
            message: new.update.message.clone(),
        });
    }
    if new.update.recommended && !prev.is_some_and(|p| p.update.recommended) {
        out.push(Event::UpdateRecommended {
            latest_version: new.update.latest_version.clone(),
            url: new.update.url.clone(),
        });
    }
    if new.maintenance.active && !prev.is_some_and(|p| p.maintenance.active) {
        out.push(Event::Maintenance {
            until: new.maintenance.until.clone(),
            message: new.maintenance.message.clone(),
        });
    }
    out
}

/// A random duration in `[0, cap)` (full jitter).
fn jitter(cap: Duration) -> Duration {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(u64::from_le_bytes(b) % ms)
}

/// Accepts a 200: verify, keep, persist, raise events. `Err` leaves what
/// is held as it was.
fn accept(
    cfg: &Config,
    held: &Mutex<Held>,
    a: &http::Answer,
    tx: &UnboundedSender<Event>,
) -> Result<(), Rejected> {
    let sig = a.header("x-jws-signature");
    let prev = held.lock().expect("not poisoned").doc.clone();
    let doc = match verified(cfg, prev.as_ref(), &a.body, sig) {
        Ok(d) => d,
        Err(r) => {
            held.lock().expect("not poisoned").last_rejection = Some(r.clone());
            let _ = tx.send(Event::Rejected { reason: r.clone() });
            return Err(r);
        }
    };
    if let Some(path) = &cfg.store {
        let stored = Stored {
            body: String::from_utf8_lossy(&a.body).into_owned(),
            signature: sig.unwrap_or_default().to_string(),
            etag: a.header("etag").map(str::to_string),
        };
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, serde_json::to_vec(&stored).expect("serializes")).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    let changed = prev.as_ref() != Some(&doc);
    {
        let mut h = held.lock().expect("not poisoned");
        h.doc = Some(doc.clone());
        h.etag = a.header("etag").map(str::to_string);
    }
    if changed {
        for e in events(prev.as_ref(), &doc) {
            let _ = tx.send(e);
        }
    }
    Ok(())
}

/// Refreshes until aborted.
pub(crate) async fn run(
    cfg: Arc<Config>,
    held: Arc<Mutex<Held>>,
    ep: Endpoint,
    tls: Arc<rustls::ClientConfig>,
    tx: UnboundedSender<Event>,
) {
    // The document loaded at start raises its events once.
    if let Some(d) = held.lock().expect("not poisoned").doc.clone() {
        for e in events(None, &d) {
            let _ = tx.send(e);
        }
    }
    let (base, cap) = cfg.backoff;
    let mut step = base;
    // Polling: the first wait is a random part of the period, so clients
    // started together (an app release, an outage's end) spread out.
    let mut first = true;
    loop {
        let etag = held.lock().expect("not poisoned").etag.clone();
        let mut path = format!("/v1/config/{}?{}", cfg.service, cfg.query());
        let wait = cfg.long_poll.filter(|_| etag.is_some());
        if let Some(w) = wait {
            path.push_str(&format!("&wait={}", w.as_secs()));
        }
        let mut headers = Vec::new();
        if let Some(e) = &etag {
            headers.push(("if-none-match", e.as_str()));
        }
        let deadline = wait.unwrap_or_default() + Duration::from_secs(10);
        let outcome = http::get(&ep, cfg.edge_addr, &path, &headers, &tls, deadline).await;
        let pause = match outcome {
            Ok(a) if a.status == 200 || a.status == 304 => {
                let ok = a.status == 304 || accept(&cfg, &held, &a, &tx).is_ok();
                if ok {
                    step = base;
                    // The period of the document held now (this answer's).
                    let refresh = held
                        .lock()
                        .expect("not poisoned")
                        .doc
                        .as_ref()
                        .map(|d| d.refresh_after_s);
                    match (cfg.long_poll, refresh) {
                        // Long-polls: ask again at once (the edge holds it).
                        (Some(_), _) => Duration::ZERO,
                        (None, r) => {
                            let period = Duration::from_secs(u64::from(r.unwrap_or(300)));
                            if std::mem::take(&mut first) {
                                jitter(period)
                            } else {
                                period
                            }
                        }
                    }
                } else {
                    step = (step * 2).min(cap);
                    jitter(step)
                }
            }
            Ok(a) => {
                let _ = tx.send(Event::Unreachable {
                    error: Error::Status(a.status),
                });
                let retry = a
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs);
                step = (step * 2).min(cap);
                jitter(step).max(retry.unwrap_or_default())
            }
            Err(error) => {
                let _ = tx.send(Event::Unreachable { error });
                step = (step * 2).min(cap);
                jitter(step)
            }
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Auth, Maintenance, Update};

    fn doc(realm: &str, epoch: u64, url: &str, required: bool) -> Document {
        Document {
            schema_version: 1,
            service: "s".into(),
            revision: 1,
            environment: "e".into(),
            backend_version: "v1".into(),
            api_base_url: url.into(),
            update: Update {
                required,
                recommended: false,
                min_version: None,
                latest_version: None,
                url: None,
                message: None,
            },
            maintenance: Maintenance {
                active: false,
                until: None,
                message: None,
            },
            auth: Auth {
                realm: realm.into(),
                epoch,
            },
            refresh_after_s: 300,
            rule: "r".into(),
            client_id: None,
            issued_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn events_fire_on_changes_only() {
        let a = doc("p/v0", 1, "https://a", false);
        let first = events(None, &a);
        assert_eq!(
            first.len(),
            1,
            "a first document raises no token event: {first:?}"
        );
        let same_realm = events(Some(&a), &doc("p/v0", 1, "https://b", false));
        assert!(same_realm.contains(&Event::BaseUrlChanged {
            from: "https://a".into(),
            to: "https://b".into()
        }));
        assert!(
            !same_realm
                .iter()
                .any(|e| matches!(e, Event::TokenInvalidated { .. }))
        );
        let new_realm = events(Some(&a), &doc("p1/v1", 1, "https://a", true));
        assert!(new_realm.contains(&Event::TokenInvalidated {
            realm: "p1/v1".into(),
            epoch: 1
        }));
        assert!(
            new_realm
                .iter()
                .any(|e| matches!(e, Event::UpdateRequired { .. }))
        );
        let again = events(
            Some(&doc("p1/v1", 1, "https://a", true)),
            &doc("p1/v1", 2, "https://a", true),
        );
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, Event::UpdateRequired { .. })),
            "required already"
        );
        assert!(again.contains(&Event::TokenInvalidated {
            realm: "p1/v1".into(),
            epoch: 2
        }));
    }

    #[test]
    fn times_and_endpoints_parse() {
        let t = crate::verify::parse_time("2026-12-01T10:42:13Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_796_121_733
        );
        assert!(crate::verify::parse_time("2026-12-01 10:42:13").is_none());
        let e = Endpoint::parse("https://edge.example.com:8443/x").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "edge.example.com", 8443)
        );
        assert_eq!(Endpoint::parse("http://h").unwrap().port, 80);
        assert!(Endpoint::parse("ftp://h").is_err());
    }
}
