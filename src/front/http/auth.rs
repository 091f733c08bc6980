//! `--admin-token-file`: a bearer token on the admin listener. Programs
//! send `Authorization: Bearer <token>` (Prometheus: `authorization:
//! credentials_file`); a browser signs in once at `/login`, which sets the
//! token as an HttpOnly, SameSite=Strict cookie. `/healthz` stays open for
//! liveness probes, and `/login` with its stylesheet.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

/// The cookie `/login` sets.
pub(crate) const COOKIE: &str = "vdh_admin_token";

/// The token, when one is required.
pub(crate) type Token = Option<Arc<str>>;

/// Reads the token: the file's first line, trimmed; an empty one is an
/// error (it would let anyone in).
pub(crate) fn read_token(path: &std::path::Path) -> anyhow::Result<Arc<str>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--admin-token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(
        token.len() >= 16,
        "--admin-token-file {}: the token must be at least 16 characters",
        path.display()
    );
    // It travels in a header and a cookie: visible ASCII, no separators.
    anyhow::ensure!(
        token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\')),
        "--admin-token-file {}: use visible ASCII without spaces, quotes, commas, semicolons or backslashes (base64 is fine)",
        path.display()
    );
    Ok(token.into())
}

/// Equal in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the request carries `token` (bearer header or cookie).
fn carries(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
    bearer
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && same(v.as_bytes(), token.as_bytes()))
}

/// The middleware: without the token, a browser is sent to `/login` and a
/// program gets 401.
pub(crate) async fn layer(State(token): State<Token>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    // The sign-in page and its stylesheet are open; so is liveness.
    let open = matches!(path, "/healthz" | "/login" | "/console.css");
    if open || carries(req.headers(), &token) {
        return next.run(req).await;
    }
    let html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html && req.method() == axum::http::Method::GET {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer realm=\"vdh-edge admin\""),
            (header::CONTENT_TYPE, "application/json"),
        ],
        "{\"error\":{\"code\":\"unauthorized\",\"parameter\":null,\"message\":\"this admin listener needs its bearer token (Authorization: Bearer ...)\"}}\n",
    )
        .into_response()
}

fn login_form(message: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><title>vdh-edge: sign in</title><link rel=icon href=\"data:,\"><link rel=stylesheet href=/console.css></head><body><main class=login><h1>vdh-edge console</h1><p>{message}</p><form method=post action=/login><label>Admin token <input type=password name=token autocomplete=current-password autofocus></label> <button type=submit>Sign in</button></form></main></body></html>"
    )
}

/// `GET /login`: the sign-in form.
pub(crate) async fn login_page() -> Html<String> {
    Html(login_form(
        "This console needs the admin token (the file given to <code>--admin-token-file</code>).",
    ))
}

/// `POST /login` (form `token=...`): sets the cookie and goes to `/`.
pub(crate) async fn login(
    axum::Extension(token): axum::Extension<Token>,
    body: String,
) -> Response {
    let Some(token) = token else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    };
    let given = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !same(given.trim().as_bytes(), token.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, Html(login_form("Wrong token."))).into_response();
    }
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_from_the_header_or_the_cookie_only_when_equal() {
        let t = "0123456789abcdef";
        let mut h = HeaderMap::new();
        assert!(!carries(&h, t));
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdeX".parse().unwrap(),
        );
        assert!(!carries(&h, t));
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert!(carries(&h, t));
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={t}").parse().unwrap(),
        );
        assert!(carries(&c, t));
        c.insert(header::COOKIE, format!("{COOKIE}={t}x").parse().unwrap());
        assert!(!carries(&c, t));
    }
}
