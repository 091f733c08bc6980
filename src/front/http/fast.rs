//! The hot path of `GET /v1/config/{service}`: a plain config request is
//! answered here, before the router, from documents encoded once per
//! snapshot and [`Variant`]; the rest goes through the router
//! ([`super::config::config`]).
//!
//! Plain means: GET, no body, within the size limits, a known service,
//! valid parameters, no long-poll, no CORS or signing configured. The
//! answer (status, headers, body) is the one the router gives, byte for
//! byte: `tests::hot_path_answers_as_the_router_does` checks it over many
//! clients. On a hit nothing is allocated but hyper's own response: the
//! rules are evaluated on borrowed parameters, the body and ETag are shared
//! bytes, the counters are found once.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::http::{Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::metrics::counter::Counter;

use super::client_addr::Proxies;
use super::config::{check_params, etag_matches};
use super::{MAX_HEADER_BYTES, MAX_URI_BYTES};
use crate::config::routing::Asked;
use crate::config::snapshot::Snapshot;
use crate::document::{self, Asking, Document, Encoded, Variant};
use crate::metrics::{ConfigLabels, HttpLabels, Latency, RouteLabels};
use crate::shared::Shared;

/// SDK majors whose request counter an encoded document keeps (others
/// look theirs up).
const MAJORS: usize = 16;

/// The hot path of one public listener.
pub(crate) struct Fast {
    shared: Arc<Shared>,
    proxies: Arc<Proxies>,
    /// The documents of the live snapshot.
    documents: ArcSwap<Documents>,
    /// `http_responses` for 200 and 304, and the latency of `/v1/config`
    /// and of `/v1/config (long-poll)` (a `wait=0` poll is timed there).
    ok: OnceLock<Counter>,
    not_modified: OnceLock<Counter>,
    latency: [OnceLock<Latency>; 2],
}

/// One snapshot's documents, encoded as clients ask for them.
struct Documents {
    /// [`Shared::generation`] when `snap` was taken.
    generation: u64,
    snap: Arc<Snapshot>,
    by_variant: RwLock<rustc_hash::FxHashMap<(usize, Variant), Arc<Entry>>>,
}

/// One variant's document and its request counters.
struct Entry {
    encoded: Encoded,
    /// `config_requests` per SDK major below [`MAJORS`].
    requests: [OnceLock<Counter>; MAJORS],
}

impl Documents {
    fn new(shared: &Shared) -> Documents {
        let generation = shared.generation();
        Documents {
            generation,
            snap: shared.snapshot(),
            by_variant: RwLock::default(),
        }
    }

    /// The entry of `variant` in service `svc` (by index), encoded on first
    /// use.
    fn entry(&self, svc: usize, variant: Variant, refresh: u32) -> Arc<Entry> {
        let known = self.by_variant.read().expect("not poisoned");
        if let Some(e) = known.get(&(svc, variant)) {
            return e.clone();
        }
        drop(known);
        let service = &self.snap.routing.services[svc];
        let doc = Document::of(&self.snap, service, &variant, refresh);
        let entry = Arc::new(Entry {
            encoded: Encoded::new(&doc, document::refresh_range(service)),
            requests: Default::default(),
        });
        self.by_variant
            .write()
            .expect("not poisoned")
            .entry((svc, variant))
            .or_insert(entry)
            .clone()
    }
}

impl Fast {
    /// The hot path of a listener whose clients' addresses `proxies` tells.
    pub(crate) fn new(shared: Arc<Shared>, proxies: Arc<Proxies>) -> Fast {
        let documents = ArcSwap::from_pointee(Documents::new(&shared));
        Fast {
            shared,
            proxies,
            documents,
            ok: OnceLock::new(),
            not_modified: OnceLock::new(),
            latency: Default::default(),
        }
    }

    /// The documents of the live snapshot (a new, empty set after a
    /// publish).
    fn documents(&self) -> arc_swap::Guard<Arc<Documents>> {
        let docs = self.documents.load();
        if docs.generation == self.shared.generation() {
            return docs;
        }
        self.documents.store(Arc::new(Documents::new(&self.shared)));
        self.documents.load()
    }

    /// The answer to `req` from `peer` when it is a plain config request;
    /// `None` sends it to the router.
    pub(crate) fn answer<B: hyper::body::Body>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        arrived: Instant,
    ) -> Option<Response<Full<Bytes>>> {
        let service = req.uri().path().strip_prefix("/v1/config/")?;
        let plain = req.method() == Method::GET
            && !service.is_empty()
            && !service.bytes().any(|b| b == b'/' || b == b'%')
            && req.body().is_end_stream()
            && req.uri().path_and_query().map_or(0, |p| p.as_str().len()) <= MAX_URI_BYTES
            && header_bytes(req.headers()) <= MAX_HEADER_BYTES
            && self.shared.is_ready()
            && self.shared.signer.load().is_none();
        if !plain {
            return None;
        }
        let q = check_params(req.uri().query().unwrap_or("")).ok()?;
        let inm = req.headers().get(header::IF_NONE_MATCH);
        if inm.is_some() && q.wait.is_some_and(|w| w > 0) {
            return None;
        }
        let docs = self.documents();
        let snap = &docs.snap;
        let svc_index = snap.routing.service_index(service)?;
        let svc = &snap.routing.services[svc_index];
        let asking = Asking {
            sdk_version: &q.sdk_version,
            client_id: q.client_id.as_deref(),
            platform: q.platform,
            app_id: q.app_id.as_deref(),
            addr: Some(self.proxies.client(peer.ip(), req.headers())),
        };
        let rule = svc.decide(&asking.client(), Asked::OverHttp).rule;
        let variant = Variant::of(svc, rule, &asking);
        let refresh = document::refresh_after(svc, asking.client_id);
        let entry = docs.entry(svc_index, variant, refresh);
        let body = entry.encoded.get(refresh);
        let environment = &snap.routing.environments[svc.rules[rule].environment].name;
        if let Some(id) = asking.client_id {
            let version = q.version_text();
            census_count(
                &self.shared,
                snap,
                id,
                version,
                &asking,
                environment,
                arrived,
            );
        }
        let etag = &body.etag;
        let matched = inm.and_then(|v| v.to_str().ok()).is_some_and(|v| {
            etag_matches(v, std::str::from_utf8(etag.as_bytes()).unwrap_or_default())
        });
        let resp = if matched {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = body.not_modified_headers.clone();
            r
        } else {
            self.count(&entry, svc, &variant, &q.sdk_version, environment);
            let mut r = Response::new(Full::new(body.bytes.clone()));
            *r.headers_mut() = body.ok_headers.clone();
            r
        };
        // The router's layer times a request with If-None-Match and
        // `wait=` as a long-poll.
        let poll = inm.is_some() && req.uri().query().is_some_and(|q| q.contains("wait="));
        self.done(resp.status(), poll, arrived);
        Some(resp)
    }

    /// Counts a document sent (`config_requests`).
    fn count(
        &self,
        entry: &Entry,
        svc: &crate::config::routing::Service,
        variant: &Variant,
        version: &semver::Version,
        environment: &str,
    ) {
        let make = || {
            let labels = ConfigLabels {
                service: svc.name.clone(),
                environment: environment.to_string(),
                rule: svc.rules[variant.rule].name.clone(),
                sdk_major: version.major.min(1000).to_string(),
                update: variant.update_label(),
            };
            self.shared
                .metrics
                .config_requests
                .get_or_create(&labels)
                .clone()
        };
        match entry.requests.get(version.major as usize) {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(),
        };
    }

    /// Counts the response and its time, as the router's layer does.
    fn done(&self, status: StatusCode, poll: bool, arrived: Instant) {
        let m = &self.shared.metrics;
        let counter = |slot: &OnceLock<Counter>| {
            slot.get_or_init(|| {
                m.http_responses
                    .get_or_create(&HttpLabels {
                        path: "/v1/config",
                        status: status.as_u16(),
                    })
                    .clone()
            })
            .inc();
        };
        if status == StatusCode::NOT_MODIFIED {
            counter(&self.not_modified);
        } else {
            counter(&self.ok);
        }
        let path = ["/v1/config", "/v1/config (long-poll)"][usize::from(poll)];
        self.latency[usize::from(poll)]
            .get_or_init(|| m.http_latency.get_or_create(&RouteLabels { path }).clone())
            .observe(arrived.elapsed());
    }
}

/// Counts a client with an id in the census: its SDK version without build
/// metadata (`version`), its app id when the state names it (made-up ones
/// cannot fill the census: they count as `other`), the environment its
/// document names.
pub(crate) fn census_count(
    shared: &Shared,
    snap: &Snapshot,
    id: &str,
    version: &str,
    asking: &Asking,
    environment: &str,
    now: Instant,
) {
    let app_id = asking.app_id.map(|a| {
        if snap.routing.names_app_id(a) {
            a
        } else {
            "other"
        }
    });
    shared
        .census
        .record_at(id, version, app_id, environment, now);
}

/// The bytes of a request's header names and values, as the router's
/// limit counts them.
pub(crate) fn header_bytes(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::config::snapshot::{Inputs, SavedSerials, SourceKind, ZoneText, compile};
    use crate::front::http::client_addr::Proxies;
    use crate::front::http::{HttpLimits, HttpSettings, Role, config::LongPolls, run};
    use crate::shared::Shared;

    /// Every feature a document depends on: rules on version, platform,
    /// app id, network and percent, a rule's own update policy, a staged
    /// minimum, overrides by platform, app id and both, maintenance.
    const STATE: &str = r#"
environments:
  prod:
    backend_version: v0
    names: [vdh-api-prod.yingzi.com]
    addresses: [192.0.2.10]
    api_base_url: https://vdh-api-prod.yingzi.com
    status: maintenance
    maintenance: { until: "2026-12-01T06:00:00Z", message: "Upgrading \"now\"" }
    token_epoch: 3
  prod-v1:
    backend_version: v1
    names: [vdh-api-v1.yingzi.com]
    addresses: [203.0.113.10]
    api_base_url: https://vdh-api-v1.yingzi.com
    status: serving
    token_epoch: 1
services:
  vdh-api:
    hostnames: [vdh-api.yingzi.com]
    legacy_sdk_version: 0.9.0
    refresh_s: 300
    rules:
      - name: lab
        match: { networks: [198.51.100.0/24] }
        environment: prod-v1
      - name: ios-demo
        match: { platforms: [ios], app_ids: [demo], sdk_version: ">=0.9.0" }
        environment: prod-v1
        update: { latest_version: 2.0.0 }
      - name: canary
        match: { percent: "30" }
        environment: prod-v1
      - name: default
        environment: prod
    update:
      latest_version: 1.2.0
      min_version: 1.0.0
      min_version_percent: "50"
      url: https://example.com/sdk
      message: A new SDK is available.
      overrides:
        - { platform: ios, min_version: 1.0.1 }
        - { app_id: demo, message: "For demo." }
        - { platform: android, app_id: demo, url: https://example.com/demo }
        - { platform: ios, message: "From the App Store." }
"#;

    fn snapshot(state: &str, revision: u64) -> Arc<crate::config::snapshot::Snapshot> {
        let inputs = Inputs {
            zones: vec![ZoneText {
                source: "yingzi.com.zone".into(),
                origin: crate::proto::name::Name::parse("yingzi.com.", None).unwrap(),
                text: include_str!("../../../zones/yingzi.com.zone").into(),
            }],
            state_source: "state.yaml".into(),
            state_text: state.into(),
            keyed: None,
            revision,
            kind: SourceKind::File,
        };
        Arc::new(compile(&inputs, None, &SavedSerials::default()).unwrap())
    }

    /// An edge's public listener on loopback, with or without the hot
    /// path; loopback is a trusted proxy, so requests name their client
    /// address in `X-Forwarded-For`.
    async fn edge(hot_path: bool) -> (Arc<Shared>, std::net::SocketAddr) {
        let shared = Arc::new(Shared::new());
        shared.publish(snapshot(STATE, 42));
        let settings = HttpSettings {
            cors: None,
            limits: HttpLimits {
                max_connections: 64,
                per_address: 0,
                header_timeout: std::time::Duration::from_secs(5),
            },
            proxies: Arc::new(Proxies(vec!["127.0.0.0/8".parse().unwrap()])),
            long_polls: Arc::new(LongPolls::new(0, 0)),
            permits: Arc::new(tokio::sync::Semaphore::new(64)),
            pages: None,
            token: None,
            hot_path,
            // The hot path's edge on HTTP threads, the router's on the
            // test's runtime: both ways of running a connection answer.
            workers: hot_path.then(|| crate::front::http::workers::Workers::start(2).unwrap()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(run(
            listener,
            Role::Public,
            None,
            shared.clone(),
            settings,
            tokio_util::sync::CancellationToken::new(),
        ));
        (shared, addr)
    }

    /// The response bytes to `head` (request line and headers), without
    /// the `date` header (the clock's, not ours).
    async fn exchange(to: std::net::SocketAddr, head: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        s.write_all(format!("{head}Host: edge\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out)
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// The requests of the comparison: versions around every bound,
    /// every platform, named and unnamed app ids, many client ids, three
    /// client addresses, and requests the hot path leaves to the router.
    fn requests() -> Vec<String> {
        let mut out = Vec::new();
        let mut n = 0;
        for v in [
            "0.9.0",
            "1.0.0",
            "1.0.1-rc.1",
            "1.0.1",
            "1.2.0+b.7",
            "2.0.0",
            "10.0.0",
        ] {
            for platform in ["", "&platform=ios", "&platform=Android", "&platform=web"] {
                for app in ["", "&app_id=demo", "&app_id=made-up"] {
                    for i in 0..6 {
                        n += 1;
                        let id = match i {
                            0 => String::new(),
                            _ => format!("&client_id=c-{n}-{i}"),
                        };
                        let from = ["192.0.2.7", "198.51.100.9", "2001:db8::1"][n % 3];
                        out.push(format!(
                            "GET /v1/config/vdh-api?sdk_version={v}{id}{platform}{app} HTTP/1.1\r\n\
                             X-Forwarded-For: {from}\r\n"
                        ));
                    }
                }
            }
        }
        for q in [
            "/v1/config/nope?sdk_version=1.0.0",
            "/v1/config/vdh-api",
            "/v1/config/vdh-api?sdk_version=x",
            "/v1/config/vdh-api?sdk_version=1.0.0&wait=61",
            "/v1/config/vdh-api/?sdk_version=1.0.0",
            "/v1/config/vdh%2Dapi?sdk_version=1.0.0",
            "/v1/config/vdh-api?sdk_version=1.0.0&platform=tv",
            "/v1/config/vdh-api?sdk_version=1.0.0&wait=0",
        ] {
            out.push(format!("GET {q} HTTP/1.1\r\n"));
        }
        out.push("HEAD /v1/config/vdh-api?sdk_version=1.0.0 HTTP/1.1\r\n".into());
        out.push(
            "POST /v1/config/vdh-api?sdk_version=1.0.0 HTTP/1.1\r\nContent-Length: 2\r\n".into(),
        );
        out
    }

    /// What an edge counted: requests by rule and update, responses by
    /// status, response times, and the census.
    fn counted(shared: &Shared) -> (Vec<String>, Vec<String>) {
        let text = shared.metrics.render(false);
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with("vdh_edge_config_requests_total{")
                    || l.starts_with("vdh_edge_http_responses_total{")
                    || l.starts_with("vdh_edge_http_request_seconds_count")
            })
            .map(str::to_string)
            .collect();
        lines.sort();
        let mut census: Vec<String> = shared
            .census
            .estimates()
            .into_iter()
            .map(|(w, d, v, e)| format!("{w} {} {v} {e}", d.as_str()))
            .collect();
        census.sort();
        (lines, census)
    }

    #[tokio::test]
    async fn hot_path_answers_as_the_router_does() {
        let (hot_edge, hot) = edge(true).await;
        let (router_edge, router) = edge(false).await;
        let mut documents = std::collections::HashSet::new();
        for head in requests() {
            let want = exchange(router, &head).await;
            assert_eq!(exchange(hot, &head).await, want, "{head}");
            if !want.starts_with("HTTP/1.1 200") || head.starts_with("HEAD") {
                continue;
            }
            let body = want.split("\r\n\r\n").nth(1).unwrap();
            documents.insert(body.to_string());
            assert!(want.contains("content-length: "), "{want}");
            // Again with its ETag (304), and with a stale one (200).
            let etag = want
                .lines()
                .find_map(|l| l.strip_prefix("etag: "))
                .unwrap()
                .to_string();
            for tag in [etag.as_str(), "\"0000\"", "W/\"0000\", *"] {
                let head = format!("{head}If-None-Match: {tag}\r\n");
                let want = exchange(router, &head).await;
                assert_eq!(exchange(hot, &head).await, want, "{head}");
            }
        }
        assert!(documents.len() > 100, "{}", documents.len());
        assert_eq!(counted(&hot_edge), counted(&router_edge));
        let (lines, _) = counted(&hot_edge);
        for update in ["required", "recommended", "none"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&format!("update=\"{update}\""))),
                "{lines:?}"
            );
        }
        // The hot path answered: it counts what the router does, so look
        // at the 304s, which only plain requests with a fresh ETag get.
        assert!(
            lines.iter().any(|l| l.contains("status=\"304\"")),
            "{lines:?}"
        );

        // A publish: the next answers come from the new snapshot.
        let head = "GET /v1/config/vdh-api?sdk_version=0.9.0&client_id=c-1 HTTP/1.1\r\n";
        let before = exchange(hot, head).await;
        let text = STATE
            .replace("token_epoch: 3", "token_epoch: 4")
            .replace("token_epoch: 1", "token_epoch: 7");
        for e in [&hot_edge, &router_edge] {
            e.publish(snapshot(&text, 43));
        }
        let after = exchange(hot, head).await;
        assert_ne!(before, after);
        assert!(after.contains("\"revision\":43"), "{after}");
        assert!(after.contains("\"epoch\":7"), "{after}");
        assert_eq!(after, exchange(router, head).await);
    }

    #[test]
    fn hot_path_takes_plain_requests_only() {
        let shared = Arc::new(Shared::new());
        shared.publish(snapshot(STATE, 42));
        let fast = super::Fast::new(shared.clone(), Arc::new(Proxies::default()));
        let peer = "192.0.2.7:4000".parse().unwrap();
        let get = |uri: &str| {
            axum::http::Request::get(uri)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        assert!(
            fast.answer(
                &get("/v1/config/vdh-api?sdk_version=1.0.0"),
                peer,
                Instant::now()
            )
            .is_some()
        );
        for uri in [
            "/v1/config/nope?sdk_version=1.0.0",
            "/v1/config/vdh-api?sdk_version=x",
            "/v1/config/vdh-api/?sdk_version=1.0.0",
            "/v1/config/vdh%2Dapi?sdk_version=1.0.0",
            "/v1/resolve?sdk_version=1.0.0",
        ] {
            assert!(
                fast.answer(&get(uri), peer, Instant::now()).is_none(),
                "{uri}"
            );
        }
        let mut poll = get("/v1/config/vdh-api?sdk_version=1.0.0&wait=30");
        poll.headers_mut()
            .insert("if-none-match", "\"x\"".parse().unwrap());
        assert!(
            fast.answer(&poll, peer, Instant::now()).is_none(),
            "a long-poll goes to the router"
        );
        let long = format!(
            "/v1/config/vdh-api?sdk_version=1.0.0&x={}",
            "a".repeat(5000)
        );
        assert!(
            fast.answer(&get(&long), peer, Instant::now()).is_none(),
            "414 is the router's"
        );
    }
}
