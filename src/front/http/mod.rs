//! The HTTP front: the routers of the public and admin listeners, our
//! accept loop (PROXY header, TLS, HTTP/1.1 or HTTP/2), request limits and
//! response counting. The SDK config document is in
//! [`config`]; health, readiness, metrics and the census in [`health`].
//!
//! Client input never causes a 5xx: every bad request gets a 4xx with
//! `{"error": {"code", "parameter", "message"}}`.

pub(crate) mod auth;
pub(crate) mod client_addr;
pub(crate) mod config;
pub(crate) mod cors;
pub(crate) mod doh;
pub(crate) mod fast;
pub(crate) mod health;
mod idle;
pub(crate) mod resolve;
pub(crate) mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::Either;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::front::limits::PerAddress;
use crate::front::tls::ALPN_HTTP;
use crate::metrics::HttpLabels;
use crate::shared::Shared;

/// Longest request target accepted (path and query); longer gets 414.
pub(crate) const MAX_URI_BYTES: usize = 4096;
/// Most header bytes accepted (names and values); more gets 431.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest `client_id` or `app_id`.
pub(crate) const MAX_ID_BYTES: usize = 256;
/// Largest request body accepted (every route is GET); more gets 413.
pub(crate) const MAX_BODY_BYTES: u64 = 16 * 1024;
/// Longest long-poll, in seconds.
pub const MAX_WAIT_S: u64 = 60;

/// The connection limits of an HTTP listener (`--http-*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// Connections open at once; more wait in the accept queue.
    pub(crate) max_connections: usize,
    /// Connections from one client address (0: no share); more are closed.
    pub(crate) per_address: usize,
    /// Time to read a request's head (and to finish a TLS handshake); a
    /// slower client (slowloris) is closed.
    pub(crate) header_timeout: Duration,
}

/// How the HTTP front is set up (`--http-*`, `--cors-origin`,
/// `--trusted-proxy`, `--long-polls-*`).
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    /// CORS on `/v1/*`, if configured.
    pub(crate) cors: Option<Arc<cors::Cors>>,
    /// Connection limits.
    pub(crate) limits: HttpLimits,
    /// Proxies whose PROXY header or forwarding headers are believed.
    pub(crate) proxies: Arc<client_addr::Proxies>,
    /// Held long-polls, per edge and per client address.
    pub(crate) long_polls: Arc<config::LongPolls>,
    /// The connection slots (`limits.max_connections`), shared by the
    /// listeners these settings are given to (public and DoH).
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// Admin listener: the console's pages (built by the command layer).
    pub(crate) pages: Option<Router<Arc<Shared>>>,
    /// Admin listener: the bearer token every request needs
    /// (`--admin-token-file`).
    pub(crate) token: auth::Token,
    /// Public listener: answer plain config requests before the router
    /// ([`fast`]); off only to compare the two answers.
    pub(crate) hot_path: bool,
    /// The threads connections run on ([`workers`]); `None`: the caller's
    /// runtime (the admin listener).
    pub(crate) workers: Option<Arc<workers::Workers>>,
}

/// Which routes a listener carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `--http`: the SDK's `/v1/*` and `/healthz`.
    Public,
    /// `--admin`: the console, `/metrics`, `/census`, `/readyz`,
    /// `/healthz`.
    Admin,
    /// `--doh`: DNS over HTTPS on `/dns-query`.
    Doh,
}

impl Role {
    /// The `listener` label of this role's metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Role::Public => "http",
            Role::Admin => "admin",
            Role::Doh => "doh",
        }
    }
}

/// Builds the router of a listener.
pub(crate) fn router(shared: Arc<Shared>, role: Role, settings: &HttpSettings) -> Router {
    let routes = match role {
        Role::Public => Router::new()
            .route("/v1/config/{service}", get(config::config))
            .route("/v1/resolve", get(resolve::resolve))
            .route("/v1/keys", get(resolve::keys))
            .route("/healthz", get(health::healthz)),
        Role::Admin => {
            let r = Router::new()
                .route("/healthz", get(health::healthz))
                .route("/readyz", get(health::readyz))
                .route("/metrics", get(health::metrics))
                .route("/census", get(health::census))
                .route("/login", get(auth::login_page).post(auth::login));
            match &settings.pages {
                Some(pages) => r.merge(pages.clone()),
                None => r,
            }
        }
        Role::Doh => Router::new().route(doh::DOH_PATH, get(doh::get).post(doh::post)),
    };
    let cors = match role {
        Role::Public => settings.cors.clone(),
        Role::Admin | Role::Doh => None,
    };
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(cors, cors::layer));
    // The token check only where a token can be asked for: the public
    // path stays one layer shorter.
    let routes = match role {
        Role::Admin => routes
            .layer(middleware::from_fn_with_state(
                settings.token.clone(),
                auth::layer,
            ))
            .layer(axum::Extension(settings.token.clone())),
        Role::Public | Role::Doh => routes,
    };
    routes
        .layer(axum::Extension(settings.proxies.clone()))
        .layer(axum::Extension(settings.long_polls.clone()))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            limits_and_metrics,
        ))
        .with_state(shared)
}

/// Serves HTTP on `listener` until `shutdown`: HTTP/1.1 in the clear, or
/// over TLS with `tls` (HTTP/2 or HTTP/1.1 as ALPN chooses).
///
/// The accept loop is ours (hyper's connections, no protocol sniffing) so
/// an idle or long-polling connection holds as little memory as hyper
/// allows: thousands of long-polls are the normal case here.
///
/// At most `settings.limits.max_connections` connections are open at once;
/// more wait in the accept queue, so a flood of held connections cannot use
/// the file descriptors the config source, DNS over TCP and the cache need.
/// With `settings.limits.per_address`, a client address past its share is
/// closed at once.
pub(crate) async fn run(
    listener: TcpListener,
    role: Role,
    tls: Option<Arc<crate::front::tls::CertStore>>,
    shared: Arc<Shared>,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = settings.limits;
    let max_connections = limits.max_connections;
    let per_address = Arc::new(PerAddress::default());
    // The hot path where nothing of the router's is needed on it (CORS
    // adds headers).
    let fast = (role == Role::Public && settings.hot_path && settings.cors.is_none())
        .then(|| Arc::new(fast::Fast::new(shared.clone(), settings.proxies.clone())));
    let conn = Arc::new(Conn {
        router: router(shared.clone(), role, &settings),
        fast,
        tls: tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server_config(ALPN_HTTP))),
        proxies: settings.proxies.clone(),
        header_timeout: limits.header_timeout,
        label: role.label(),
    });
    let mut conns = tokio::task::JoinSet::new();
    let permits = settings.permits.clone();
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
                        listener = role.label(),
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
        let (conn, shutdown, shared, per_address) = (
            conn.clone(),
            shutdown.clone(),
            shared.clone(),
            per_address.clone(),
        );
        // A socket that could not move to its thread is closed, and its
        // slots given back all the same.
        let serve = move |stream: std::io::Result<tokio::net::TcpStream>| async move {
            match stream {
                Ok(stream) => {
                    shared.metrics.http_connections.inc();
                    conn.serve(stream, peer, &shared, shutdown).await;
                    shared.metrics.http_connections.dec();
                }
                Err(error) => tracing::debug!(%error, %peer, "http connection lost"),
            }
            if limits.per_address > 0 {
                per_address.release(peer.ip());
            }
            drop(permit);
        };
        match &settings.workers {
            None => {
                conns.spawn(serve(Ok(stream)));
            }
            // The socket moves to the worker's reactor.
            Some(workers) => match stream.into_std() {
                Ok(stream) => {
                    let moved = async move { serve(tokio::net::TcpStream::from_std(stream)).await };
                    conns.spawn_on(moved, workers.next());
                }
                Err(error) => {
                    conns.spawn(serve(Err(error)));
                }
            },
        }
        // Reap finished connection tasks.
        while conns.try_join_next().is_some() {}
    }
    Ok(())
}

/// A response body: the hot path's bytes or the router's body.
type Body = Either<http_body_util::Full<bytes::Bytes>, axum::body::Body>;

/// A request's answer: ready from the hot path, or the router's future
/// (boxed, so the hot path's future hyper moves around stays small).
enum Answer {
    Ready(Option<hyper::Response<Body>>),
    Routed(std::pin::Pin<Box<dyn Future<Output = hyper::Response<Body>> + Send>>),
}

impl Future for Answer {
    type Output = Result<hyper::Response<Body>, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Answer::Ready(resp) => std::task::Poll::Ready(Ok(resp.take().expect("polled once"))),
            Answer::Routed(routed) => routed.as_mut().poll(cx).map(Ok),
        }
    }
}

/// What every connection of one listener shares.
struct Conn {
    router: Router,
    /// `GET /v1/config/...` before the router (public listener).
    fast: Option<Arc<fast::Fast>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxies: Arc<client_addr::Proxies>,
    header_timeout: Duration,
    label: &'static str,
}

/// Drives a hyper connection until it ends or `shutdown`, then lets it
/// finish its requests for up to 2 s.
/// With `stalled`, closes it when that resolves (no request head or
/// response progress within the header timeout). The stall timer and the
/// shutdown token are polled only when they wake ([`idle::guarded`]).
macro_rules! drive {
    ($conn:expr, $client:expr, $shutdown:expr) => {
        drive!($conn, $client, $shutdown, std::future::pending::<()>())
    };
    ($conn:expr, $client:expr, $shutdown:expr, $stalled:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let guard = std::pin::pin!(async {
            tokio::select! {
                () = $stalled => false,
                () = $shutdown.cancelled() => true,
            }
        });
        match idle::guarded(conn.as_mut(), guard).await {
            idle::Ended::Conn(r) => if let Err(error) = r {
                tracing::debug!(%error, client = %$client, "http connection ended");
            },
            idle::Ended::Guard(false) => {
                tracing::debug!(client = %$client, "no request head or progress within the header timeout; closed");
            },
            idle::Ended::Guard(true) => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        }
    }};
}

impl Conn {
    /// Serves one accepted connection: the PROXY header from a trusted
    /// peer, the TLS handshake, then HTTP.
    async fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        shared: &Shared,
        shutdown: CancellationToken,
    ) {
        let listener = crate::metrics::ListenerLabels {
            listener: self.label,
        };
        let (io, client) = match crate::front::proxy::accept(stream, peer, &self.proxies).await {
            Ok(x) => x,
            Err(error) => {
                tracing::debug!(%error, %peer, "connection closed");
                shared.metrics.proxy_rejected.get_or_create(&listener).inc();
                return;
            }
        };
        // The client address goes in each request's extensions (what
        // `ConnectInfo` reads); the router itself is shared, not rebuilt.
        let (router, fast) = (self.router.clone(), self.fast.clone());
        let activity = idle::Activity::new();
        let busy = activity.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            // A ready answer is written at once (the write is the
            // connection's progress); a routed one may be held (long-poll).
            // One clock reading: the answer's timing and the connection's
            // progress.
            let arrived = std::time::Instant::now();
            if let Some(resp) = fast.as_ref().and_then(|f| f.answer(&req, client, arrived)) {
                busy.answered_at(arrived);
                return Answer::Ready(Some(resp.map(Either::Left)));
            }
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(client));
            let routed = tower::ServiceExt::oneshot(router.clone(), req);
            busy.begin();
            let busy = busy.clone();
            Answer::Routed(Box::pin(async move {
                let resp = match routed.await {
                    Ok(resp) => resp.map(Either::Right),
                    Err(never) => match never {},
                };
                busy.done();
                resp
            }))
        });
        let Some(acceptor) = &self.tls else {
            return self
                .serve_http(io, (false, false), svc, client, activity, shutdown)
                .await;
        };
        let tls = match tokio::time::timeout(self.header_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            failed => {
                if let Ok(Err(error)) = failed {
                    tracing::debug!(%error, %client, "TLS handshake failed");
                }
                let m = &shared.metrics;
                m.tls_handshake_failed.get_or_create(&listener).inc();
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve_http(tls, (true, h2), svc, client, activity, shutdown)
            .await;
    }

    async fn serve_http<I, S>(
        &self,
        io: I,
        (tls, h2): (bool, bool),
        svc: S,
        client: SocketAddr,
        activity: Arc<idle::Activity>,
        shutdown: CancellationToken,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if h2 {
            let io = hyper_util::rt::TokioIo::new(io);
            let conn =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .max_concurrent_streams(256)
                    .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
                    .keep_alive_interval(Some(Duration::from_secs(30)))
                    .serve_connection(io, svc);
            drive!(conn, client, shutdown);
        } else {
            // The header timeout is the connection's (idle.rs), not
            // hyper's per-request timer.
            let io = hyper_util::rt::TokioIo::new(idle::Watched::new(io, activity.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                // Over TLS, head and body in one buffer make one record
                // and one write instead of two.
                .writev(!tls)
                .serve_connection(io, svc);
            let stalled = activity.stalled(self.header_timeout);
            drive!(conn, client, shutdown, stalled);
        }
    }
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
        "/v1/resolve" => "/v1/resolve",
        "/v1/keys" => "/v1/keys",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/census" => "/census",
        "/dns-query" => "/dns-query",
        _ => "other",
    }
}

/// Rejects oversize requests before routing and counts every response.
async fn limits_and_metrics(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let arrived = std::time::Instant::now();
    let path = route_label(req.uri().path());
    // A long-poll is held on purpose: timed apart from the other requests.
    let timed = if path == "/v1/config"
        && req.headers().contains_key(header::IF_NONE_MATCH)
        && req.uri().query().is_some_and(|q| q.contains("wait="))
    {
        "/v1/config (long-poll)"
    } else {
        path
    };
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let header_bytes = fast::header_bytes(req.headers());
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
    } else if body_len(&req) > MAX_BODY_BYTES {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
            format!("request body larger than {MAX_BODY_BYTES} bytes"),
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
    shared
        .metrics
        .http_latency
        .get_or_create(&crate::metrics::RouteLabels { path: timed })
        .observe(arrived.elapsed());
    resp
}

/// The declared body length (`Content-Length`, or the size hint of a
/// chunked body).
fn body_len(req: &Request) -> u64 {
    use axum::body::HttpBody;
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or_else(|| req.body().size_hint().lower())
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
        "this path answers GET only (POST too on /dns-query)",
    )
}
