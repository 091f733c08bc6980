//! DNS over HTTPS (RFC 8484): `GET /dns-query?dns=<base64url>` and
//! `POST /dns-query` with an `application/dns-message` body, on the
//! `--doh` listener (TLS, HTTP/2 or HTTP/1.1 by ALPN). The answer is
//! [`respond`]'s, as over TCP, from the client's address (after the PROXY
//! header of a trusted proxy), with a freshness lifetime no longer than
//! the smallest TTL in it (RFC 8484 §5.1), padded to 468-byte blocks when
//! the query is padded (RFC 7830, RFC 8467).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::error;
use crate::front::dns::{Transport, respond};
use crate::proto::wire;
use crate::shared::Shared;

/// The path DNS over HTTPS answers on.
pub(crate) const DOH_PATH: &str = "/dns-query";

/// The media type of a DNS message.
const DNS_MESSAGE: &str = "application/dns-message";

/// `GET /dns-query?dns=...`.
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
) -> Response {
    let encoded = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "dns")
        .map(|(_, v)| v.into_owned());
    let Some(encoded) = encoded else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            Some("dns"),
            "dns is required: the query, base64url without padding",
        );
    };
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')) {
        Ok(packet) => answer(&shared, &packet, client),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("dns"),
            format!("dns is not base64url: {e}"),
        ),
    }
}

/// `POST /dns-query` with an `application/dns-message` body.
pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.eq_ignore_ascii_case(DNS_MESSAGE) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
            format!("the body must be {DNS_MESSAGE}"),
        );
    }
    answer(&shared, &body, client)
}

fn answer(shared: &Shared, packet: &[u8], client: SocketAddr) -> Response {
    let arrived = std::time::Instant::now();
    let mut out = Vec::with_capacity(512);
    let snap = shared.snapshot();
    let Some(outcome) = respond(&snap, packet, client.ip(), Transport::Tcp, &mut out) else {
        shared.metrics.dns_dropped.inc();
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_dns_message",
            None,
            "not a DNS query",
        );
    };
    drop(snap);
    shared
        .metrics
        .dns_query(Transport::Tcp, outcome.qtype, outcome.rcode);
    shared.metrics.dns_encrypted("doh");
    shared.metrics.dns_answered_in("doh", arrived.elapsed());
    if wire::has_padding(packet) {
        wire::pad(&mut out, wire::PADDING_BLOCK);
    }
    let max_age = wire::min_ttl(&out).unwrap_or(0);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("max-age={max_age}")).expect("ASCII"),
            ),
        ],
        out,
    )
        .into_response()
}
