//! CORS for web SDKs on `/v1/*` (`--cors-origin`): preflights are answered,
//! allowed origins get `Access-Control-Allow-Origin` and can read the
//! `ETag` (for `If-None-Match`). Without `--cors-origin` nothing changes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error;

/// The origins allowed to read `/v1/*` from a browser.
#[derive(Debug)]
pub(crate) struct Cors {
    /// `*` was given: every origin.
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// From `--cors-origin` values (`*`, or origins such as
    /// `https://app.example.com`); `None` when there are none.
    pub(crate) fn new(values: &[String]) -> Option<Arc<Cors>> {
        if values.is_empty() {
            return None;
        }
        Some(Arc::new(Cors {
            any: values.iter().any(|v| v == "*"),
            origins: values
                .iter()
                .map(|v| v.trim_end_matches('/').to_string())
                .collect(),
        }))
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`.
    fn allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }
}

/// Answers preflights and decorates answers to allowed origins.
pub(crate) async fn layer(
    State(cors): State<Option<Arc<Cors>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cors) = cors.filter(|_| req.uri().path().starts_with("/v1/")) else {
        return next.run(req).await;
    };
    let allowed = cors.allow(req.headers());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(origin) = allowed else {
            return error(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                None,
                "this origin may not read the config document (see --cors-origin)",
            );
        };
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("If-None-Match"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag, X-JWS-Signature"),
        );
    }
    resp
}
