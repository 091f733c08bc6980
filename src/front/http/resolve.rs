//! `GET /v1/resolve?host=H&sdk_version=..`: per-client resolution over
//! HTTPS. For a service hostname the environment is chosen by the same
//! rules and cohort hash as the client's config document (so a client's
//! addresses and its document never disagree); any other name this edge
//! serves is answered as DNS would answer it. Signed, ETag and 304 like
//! the document. `GET /v1/keys`: the public keys (JWKS).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::client_addr::Proxies;
use super::config::{etag_matches, not_modified, parse_params, signature};
use super::error;
use crate::config::routing::{Asked, Client};
use crate::proto::name::Name;
use crate::shared::Shared;

/// The `/v1/resolve` body.
#[derive(Debug, Serialize)]
struct Resolved {
    host: String,
    addresses: Vec<String>,
    ttl: u32,
    /// The environment (service hostnames only).
    environment: Option<String>,
    /// The rule that chose it (service hostnames only).
    rule: Option<String>,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

/// The `host` parameter (first one wins).
#[allow(clippy::result_large_err)] // the error is the 400 to send
fn host_param(raw: Option<&str>) -> Result<Name, Response> {
    let host = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "missing_parameter",
                Some("host"),
                "host is required, e.g. ?host=vdh-api.yingzi.com&sdk_version=1.0.0",
            )
        })?;
    let fqdn = if host.ends_with('.') {
        host.clone()
    } else {
        format!("{host}.")
    };
    Name::parse(&fqdn, None).map(|n| n.to_lower()).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("host"),
            format!(
                "'{}' is not a DNS name: {e}",
                host.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// `GET /v1/resolve`.
pub(crate) async fn resolve(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(proxies): axum::Extension<Arc<Proxies>>,
    headers: HeaderMap,
) -> Response {
    let src = proxies.client(peer.ip(), &headers);
    let host = match host_param(query.as_deref()) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let params = match parse_params(query.as_deref(), Some(src)) {
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
    let snap = shared.snapshot();
    let asker = &params.asker;
    let service = snap.routing.services.iter().find(|s| {
        s.hostnames
            .iter()
            .any(|h| h.wire().eq_ignore_ascii_case(host.wire()))
    });
    let mut r = match service {
        Some(svc) => {
            let client = Client {
                sdk_version: Some(&asker.sdk_version),
                platform: asker.platform,
                app_id: asker.app_id.as_deref(),
                client_id: asker.client_id.as_deref(),
                addr: asker.addr,
                network_key: None,
            };
            let rule = &svc.rules[svc.decide(&client, Asked::OverHttp).rule];
            let env = &snap.routing.environments[rule.environment];
            let mut addresses: Vec<String> = env.v4.iter().map(ToString::to_string).collect();
            addresses.extend(env.v6.iter().map(ToString::to_string));
            Resolved {
                host: host.to_string(),
                addresses,
                ttl: svc.ttl,
                environment: Some(env.name.clone()),
                rule: Some(rule.name.clone()),
                revision: snap.revision,
                client_id: None,
                issued_at: None,
                expires_at: None,
            }
        }
        None => {
            let l = crate::front::dns::lookup(&snap, &host, src);
            if !l.authoritative || l.rcode != 0 || l.a.len() + l.aaaa.len() == 0 {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_host",
                    Some("host"),
                    format!("{host} has no address this edge serves"),
                );
            }
            let mut addresses = l.a;
            addresses.extend(l.aaaa);
            Resolved {
                host: host.to_string(),
                addresses,
                ttl: l.ttl.unwrap_or(0),
                environment: None,
                rule: None,
                revision: snap.revision,
                client_id: None,
                issued_at: None,
                expires_at: None,
            }
        }
    };
    if let Some(s) = shared.signer.load().as_ref() {
        let (issued, expires) = s.window(std::time::SystemTime::now());
        r.client_id.clone_from(&asker.client_id);
        r.issued_at = Some(issued);
        r.expires_at = Some(expires);
    }
    let body = serde_json::to_vec(&r).expect("serializes");
    let etag = crate::document::etag_of(&body);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| etag_matches(inm, &etag))
    {
        return not_modified(&etag);
    }
    let sig = signature(&shared, &body);
    let mut resp = Response::new(axum::body::Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex etag"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if let Some(sig) = sig {
        h.insert(crate::signing::SIGNATURE_HEADER, sig);
    }
    resp
}

/// `GET /v1/keys`: the JWKS of the signing keys (404 when documents are
/// not signed).
pub(crate) async fn keys(State(shared): State<Arc<Shared>>) -> Response {
    let Some(s) = shared.signer.load_full() else {
        return error(
            StatusCode::NOT_FOUND,
            "signing_off",
            None,
            "this edge does not sign documents (no --signing-key)",
        );
    };
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        s.jwks().to_string(),
    )
        .into_response()
}
