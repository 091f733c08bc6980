//! The HTTP front: the axum router, our HTTP/1 accept loop, request
//! limits and response counting. The SDK config document is in
//! [`config`]; health, readiness, metrics and the census in [`health`].
//!
//! Client input never causes a 5xx: every bad request gets a 4xx with
//! `{"error": {"code", "parameter", "message"}}`.

pub(crate) mod client_addr;
pub(crate) mod config;
pub(crate) mod cors;
pub(crate) mod health;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::front::limits::PerAddress;
use crate::metrics::HttpLabels;
use crate::shared::Shared;

/// Longest request target accepted (path and query); longer gets 414.
pub(crate) const MAX_URI_BYTES: usize = 4096;
/// Most header bytes accepted (names and values); more gets 431.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest `client_id` or `app_id`.
pub(crate) const MAX_ID_BYTES: usize = 256;
/// Longest long-poll, in seconds.
pub const MAX_WAIT_S: u64 = 60;

/// The connection limits of the HTTP listener (`--http-*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// Connections open at once; more wait in the accept queue.
    pub(crate) max_connections: usize,
    /// Connections from one client address (0: no share); more are closed.
    pub(crate) per_address: usize,
}

/// How the HTTP front is set up (`--http-*`, `--cors-origin`,
/// `--trusted-proxy`).
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    /// CORS on `/v1/*`, if configured.
    pub(crate) cors: Option<Arc<cors::Cors>>,
    /// Connection limits.
    pub(crate) limits: HttpLimits,
    /// Proxies whose forwarding headers are believed.
    pub(crate) proxies: Arc<client_addr::Proxies>,
}

/// Builds the router.
pub(crate) fn router(
    shared: Arc<Shared>,
    cors: Option<Arc<cors::Cors>>,
    proxies: Arc<client_addr::Proxies>,
) -> Router {
    Router::new()
        .route("/v1/config/{service}", get(config::config))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/census", get(health::census))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(cors, cors::layer))
        .layer(axum::Extension(proxies))
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
///
/// At most `settings.limits.max_connections` connections are open at once; more
/// wait in the accept queue, so a flood of held connections cannot use the
/// file descriptors the config source, DNS over TCP and the cache need.
/// With `settings.limits.per_address`, a client address past its share is closed at
/// once.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = settings.limits;
    let max_connections = limits.max_connections;
    let per_address = Arc::new(PerAddress::default());
    let app = router(shared.clone(), settings.cors, settings.proxies);
    let mut conns = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut full_logged = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => {
                full_logged = false;
                p
            }
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max_connections,
                        "HTTP connection limit reached; new connections wait"
                    );
                    full_logged = true;
                }
                shared.metrics.http_limit_reached.inc();
                tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                    () = shutdown.cancelled() => break,
                }
            }
        };
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
        if limits.per_address > 0 && !per_address.admit(peer.ip(), limits.per_address) {
            shared.metrics.http_per_address_refused.inc();
            continue;
        }
        let _ = stream.set_nodelay(true);
        // The peer address goes in each request's extensions (what
        // `ConnectInfo` reads); the router itself is shared, not rebuilt.
        let router = app.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), req)
        });
        let (shutdown, shared, per_address) =
            (shutdown.clone(), shared.clone(), per_address.clone());
        conns.spawn(async move {
            shared.metrics.http_connections.inc();
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
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
            shared.metrics.http_connections.dec();
            if limits.per_address > 0 {
                per_address.release(peer.ip());
            }
            drop(permit);
        });
        // Reap finished connection tasks.
        while conns.try_join_next().is_some() {}
    }
    Ok(())
}

/// An error answer: `{"error": {"code", "parameter", "message"}}`.
pub(crate) fn error(
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
    } else if req.method() == axum::http::Method::CONNECT {
        // CONNECT names no path (authority form): the router would say 404.
        method_not_allowed().await
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
