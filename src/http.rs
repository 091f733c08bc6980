//! `HttpFront`: the axum router for the SDK config document, health,
//! readiness and metrics.
//!
//! Client input never causes a 5xx: every bad request gets a 4xx with
//! `{"error": {"code", "parameter", "message"}}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::document::{Asker, Document};
use crate::metrics::{ConfigLabels, HttpLabels};
use crate::routing::Platform;
use crate::shared::Shared;

/// Longest request target accepted (path and query); longer gets 414.
pub const MAX_URI_BYTES: usize = 4096;
/// Most header bytes accepted (names and values); more gets 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest `client_id` or `app_id`.
pub const MAX_ID_BYTES: usize = 256;
/// Longest long-poll, in seconds.
pub const MAX_WAIT_S: u64 = 60;

/// Builds the router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/config/{service}", get(config))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/census", get(census))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            limits_and_metrics,
        ))
        .with_state(shared)
}

/// Serves HTTP/1.1 on `listener` until `shutdown`.
///
/// The accept loop is ours (hyper's HTTP/1 connection, no protocol
/// sniffing) so an idle or long-polling connection holds as little memory
/// as hyper allows: thousands of long-polls are the normal case here.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(shared);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    tracing::debug!(%error, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer address goes in each request's extensions (what
        // `ConnectInfo` reads); the router itself is shared, not rebuilt.
        let router = app.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), req)
        });
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(error) = r {
                    tracing::debug!(%error, %peer, "http connection ended");
                },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
        // Reap finished connection tasks.
        while conns.try_join_next().is_some() {}
    }
    Ok(())
}

/// An error answer.
fn error(
    status: StatusCode,
    code: &str,
    parameter: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let body =
        json!({ "error": { "code": code, "parameter": parameter, "message": message.into() } });
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

fn route_label(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/v1/config/") => "/v1/config",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/census" => "/census",
        _ => "other",
    }
}

/// Rejects oversize requests before routing and counts every response.
async fn limits_and_metrics(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let path = route_label(req.uri().path());
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let resp = if uri_len > MAX_URI_BYTES {
        error(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            None,
            format!("request target longer than {MAX_URI_BYTES} bytes"),
        )
    } else if header_bytes > MAX_HEADER_BYTES {
        error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            None,
            format!("request headers larger than {MAX_HEADER_BYTES} bytes"),
        )
    } else {
        next.run(req).await
    };
    shared
        .metrics
        .http_responses
        .get_or_create(&HttpLabels {
            path,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        "no such path; the config document is at /v1/config/{service}",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
        "only GET is supported",
    )
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}\n",
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.is_ready() {
        let body = json!({ "revision": null, "source": null, "age_s": null, "etcd": shared.etcd_state(), "error": "no snapshot loaded yet" });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let snap = shared.snapshot();
    let age = SystemTime::now()
        .duration_since(snap.published)
        .unwrap_or_default()
        .as_secs();
    let body = json!({
        "revision": snap.revision,
        "source": snap.kind.as_str(),
        "age_s": age,
        // null in file mode, which has no etcd connection.
        "etcd": shared.etcd_state(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.metrics.set_census(&shared.census.estimates());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

/// `GET /census`: this edge's mergeable sketches.
async fn census(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.census.export()).into_response()
}

/// The parsed query parameters of a config request.
struct ConfigParams {
    asker: Asker,
    wait: Option<u64>,
}

/// Parses and validates the query string. Unknown parameters are ignored;
/// for a repeated parameter the first wins.
fn parse_params(
    raw: Option<&str>,
    addr: Option<std::net::IpAddr>,
) -> Result<ConfigParams, Response> {
    let bad = |p: &str, m: String| error(StatusCode::BAD_REQUEST, "invalid_parameter", Some(p), m);
    let (mut sdk, mut client_id, mut platform, mut app_id, mut wait) =
        (None, None, None, None, None);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "sdk_version" => &mut sdk,
            "client_id" => &mut client_id,
            "platform" => &mut platform,
            "app_id" => &mut app_id,
            "wait" => &mut wait,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    let sdk = sdk.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            Some("sdk_version"),
            "sdk_version is required, e.g. ?sdk_version=1.0.0",
        )
    })?;
    let sdk_version = semver::Version::parse(sdk.trim()).map_err(|e| {
        bad(
            "sdk_version",
            format!("'{}' is not a SemVer 2.0 version: {e}", truncate(&sdk)),
        )
    })?;
    for (name, v) in [("client_id", &client_id), ("app_id", &app_id)] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > MAX_ID_BYTES {
                return Err(bad(
                    name,
                    format!("{name} must be 1 to {MAX_ID_BYTES} bytes"),
                ));
            }
        }
    }
    let platform = match platform {
        None => None,
        Some(p) => Some(Platform::parse(&p).ok_or_else(|| {
            bad(
                "platform",
                format!(
                    "unknown platform '{}': use android, ios, web or other",
                    truncate(&p)
                ),
            )
        })?),
    };
    let wait = match wait {
        None => None,
        Some(w) => match w.parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_S => Some(n),
            _ => {
                return Err(bad(
                    "wait",
                    format!("wait must be a whole number of seconds from 0 to {MAX_WAIT_S}"),
                ));
            }
        },
    };
    Ok(ConfigParams {
        asker: Asker {
            sdk_version,
            client_id,
            platform,
            app_id,
            addr,
        },
        wait,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// True when an If-None-Match header value matches `etag`.
fn etag_matches(inm: &str, etag: &str) -> bool {
    inm.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn document_response(body: Vec<u8>, etag: &str) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    resp
}

fn not_modified(etag: &str) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    resp.headers_mut()
        .insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    resp
}

/// `GET /v1/config/{service}`.
async fn config(
    State(shared): State<Arc<Shared>>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let addr = Some(peer.ip());
    let params = match parse_params(query.as_deref(), addr) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !shared.is_ready() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            None,
            "no configuration loaded yet; retry shortly",
        );
    }
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Nothing else of the request is needed: keep long-polls small.
    drop(headers);
    drop(query);
    // Subscribe before reading the snapshot so no publish is missed.
    let mut changes = shared.subscribe();
    let snap = shared.snapshot();
    let Some(doc) = Document::build(&snap, &service, &params.asker) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_service",
            None,
            format!("no service named '{}'", truncate(&service)),
        );
    };
    let (body, etag) = doc.encode();
    if let Some(id) = &params.asker.client_id {
        let mut v = params.asker.sdk_version.clone();
        v.build = semver::BuildMetadata::EMPTY;
        shared.census.record(
            id,
            &v.to_string(),
            params.asker.app_id.as_deref(),
            &doc.environment,
        );
    }
    let count = |doc: &Document| {
        let labels = ConfigLabels {
            service: doc.service.clone(),
            environment: doc.environment.clone(),
            rule: doc.rule.clone(),
            sdk_major: params.asker.sdk_version.major.min(1000).to_string(),
        };
        shared.metrics.config_requests.get_or_create(&labels).inc();
    };
    let Some(inm) = inm.filter(|i| etag_matches(i, &etag)) else {
        count(&doc);
        return document_response(body, &etag);
    };
    let Some(wait) = params.wait.filter(|w| *w > 0) else {
        return not_modified(&etag);
    };
    drop((doc, body, snap));
    // Long-poll: answer as soon as this client's document changes.
    shared.metrics.long_polls.inc();
    let _guard = scopeguard(|| {
        shared.metrics.long_polls.dec();
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {
                let snap = shared.snapshot();
                let Some(doc) = Document::build(&snap, &service, &params.asker) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "unknown_service",
                        None,
                        format!("no service named '{}'", truncate(&service)),
                    );
                };
                let (body, new_etag) = doc.encode();
                if !etag_matches(&inm, &new_etag) {
                    count(&doc);
                    return document_response(body, &new_etag);
                }
            }
            // Shutdown (sender gone) or timeout: nothing changed for this client.
            Ok(Err(_)) | Err(_) => return not_modified(&etag),
        }
    }
}

/// Runs `f` when dropped (also when the client goes away mid-poll).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
