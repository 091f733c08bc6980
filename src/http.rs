//! `HttpFront`: the axum router for health, readiness and metrics (and,
//! later, the SDK config document).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

/// Builds the router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Serves HTTP on `listener` until `shutdown`.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(shared)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}\n")
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.is_ready() {
        let body = json!({ "revision": null, "source": null, "age_s": null, "etcd": null, "error": "no snapshot loaded yet" });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let snap = shared.snapshot();
    let age = SystemTime::now().duration_since(snap.published).unwrap_or_default().as_secs();
    let body = json!({
        "revision": snap.revision,
        "source": snap.kind.as_str(),
        "age_s": age,
        // File mode has no etcd connection to report.
        "etcd": null,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.metrics.render(),
    )
}
