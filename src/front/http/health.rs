//! Health, readiness, metrics and the census endpoint.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::shared::Shared;

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}\n",
    )
}

/// `GET /readyz`: a snapshot is live (its revision, source and age).
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
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

/// `GET /metrics`: OpenMetrics when the `Accept` header asks for it, the
/// classic Prometheus text format otherwise.
pub(crate) async fn metrics(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    use crate::metrics::format;
    shared.metrics.set_census(&shared.census.estimates());
    let om = format::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            if om {
                format::OPENMETRICS
            } else {
                format::CLASSIC
            },
        )],
        shared.metrics.render(om),
    )
}

/// `GET /census`: this edge's mergeable sketches; with `?series=1` the
/// points over time too.
pub(crate) async fn census(State(shared): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let mut export = shared.census.export();
    if uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "series=1"))
    {
        export.series = Some(shared.census.export_series());
    }
    axum::Json(export).into_response()
}
