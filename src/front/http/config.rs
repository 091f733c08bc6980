//! `GET /v1/config/{service}`: the SDK config document, with ETag, 304 and
//! long-poll (`wait`), answered as soon as this client's document changes.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::client_addr::Proxies;
use super::{MAX_ID_BYTES, MAX_WAIT_S, error};
use crate::config::routing::Platform;
use crate::document::{Asker, Document};
use crate::front::limits::PerAddress;
use crate::metrics::ConfigLabels;
use crate::shared::Shared;

/// The parsed query parameters of a config request.
pub(crate) struct ConfigParams {
    pub(crate) asker: Asker,
    pub(crate) wait: Option<u64>,
}

/// The query parameters of a config request, checked, borrowed from the
/// query string where no decoding was needed.
pub(crate) struct Checked<'a> {
    pub(crate) sdk_version: semver::Version,
    /// `sdk_version` as sent (decoded): SemVer parsing is strict, so this
    /// text, trimmed, is the version's own spelling.
    sdk_text: Cow<'a, str>,
    pub(crate) client_id: Option<Cow<'a, str>>,
    pub(crate) platform: Option<Platform>,
    pub(crate) app_id: Option<Cow<'a, str>>,
    pub(crate) wait: Option<u64>,
}

impl Checked<'_> {
    /// The SDK version without build metadata (`1.2.0-rc.1+b.7` is
    /// `1.2.0-rc.1`), as the census counts it; no formatting needed.
    pub(crate) fn version_text(&self) -> &str {
        let t = self.sdk_text.trim();
        t.as_bytes()
            .iter()
            .position(|&b| b == b'+')
            .map_or(t, |i| &t[..i])
    }
}

/// Parses and validates the query string. Unknown parameters are ignored;
/// for a repeated parameter the first wins. The error is the 400 to send
/// (a cold path: its size does not matter).
#[allow(clippy::result_large_err)]
pub(crate) fn parse_params(
    raw: Option<&str>,
    addr: Option<IpAddr>,
) -> Result<ConfigParams, Response> {
    let c = check_params(raw.unwrap_or(""))?;
    Ok(ConfigParams {
        asker: Asker {
            sdk_version: c.sdk_version,
            client_id: c.client_id.map(Cow::into_owned),
            platform: c.platform,
            app_id: c.app_id.map(Cow::into_owned),
            addr,
        },
        wait: c.wait,
    })
}

/// [`parse_params`] without copying what needs no decoding.
#[allow(clippy::result_large_err)]
pub(crate) fn check_params(raw: &str) -> Result<Checked<'_>, Response> {
    let bad = |p: &str, m: String| error(StatusCode::BAD_REQUEST, "invalid_parameter", Some(p), m);
    let (mut sdk, mut client_id, mut platform, mut app_id, mut wait) =
        (None, None, None, None, None);
    for (k, v) in query_pairs(raw) {
        let slot = match k.as_ref() {
            "sdk_version" => &mut sdk,
            "client_id" => &mut client_id,
            "platform" => &mut platform,
            "app_id" => &mut app_id,
            "wait" => &mut wait,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v);
        }
    }
    // SemVer build metadata is often sent unencoded (`1.0.0+build.1`): for
    // this parameter a literal `+` is a plus, not a space.
    // (A value read without decoding had no `+`: nothing to look again for.)
    let sdk = sdk.map(|v| match v {
        Cow::Owned(_) => raw_plus(raw, "sdk_version").map_or(v, Cow::Owned),
        borrowed @ Cow::Borrowed(_) => borrowed,
    });
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
    Ok(Checked {
        sdk_version,
        sdk_text: sdk,
        client_id,
        platform,
        app_id,
        wait,
    })
}

/// The pairs of a query string as `form_urlencoded::parse` reads them,
/// borrowed where nothing needs decoding (no `%`, no `+`): the usual SDK
/// query costs no allocation. One pass over the bytes: the pair's end, its
/// `=` and whether it needs decoding are found together (`str::split` and
/// `split_once` each searched again).
pub(crate) fn query_pairs(raw: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let (mut end, mut eq, mut coded) = (rest.len(), None, false);
            for (i, &b) in rest.as_bytes().iter().enumerate() {
                match b {
                    b'&' => {
                        end = i;
                        break;
                    }
                    b'=' if eq.is_none() => eq = Some(i),
                    b'%' | b'+' => coded = true,
                    _ => {}
                }
            }
            // `end` and `eq` are at ASCII bytes: char boundaries.
            let pair = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            if pair.is_empty() {
                continue;
            }
            if coded {
                let (k, v) = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .expect("a non-empty pair");
                return Some((Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())));
            }
            return Some(match eq {
                Some(i) => (Cow::Borrowed(&pair[..i]), Cow::Borrowed(&pair[i + 1..])),
                None => (Cow::Borrowed(pair), Cow::Borrowed("")),
            });
        }
    })
}

/// The first value of parameter `name` in a raw query, percent-decoded with
/// a literal `+` kept as `+`; `None` when the value has no `+` (then form
/// decoding already gave the right text).
fn raw_plus(raw: &str, name: &str) -> Option<String> {
    let value = raw
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    if !value.contains('+') {
        return None;
    }
    let escaped = format!("v={}", value.replace('+', "%2B"));
    form_urlencoded::parse(escaped.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// True when an If-None-Match header value matches `etag`.
pub(crate) fn etag_matches(inm: &str, etag: &str) -> bool {
    inm.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The document `asker` gets, stamped for signing when a key is loaded.
pub(crate) fn build(
    shared: &Shared,
    snap: &crate::config::snapshot::Snapshot,
    service: &str,
    asker: &Asker,
) -> Option<Document> {
    let mut doc = Document::build(snap, service, asker)?;
    if let Some(s) = shared.signer.load().as_ref() {
        doc.stamp(
            asker.client_id.as_deref(),
            s.window(std::time::SystemTime::now()),
        );
    }
    Some(doc)
}

/// The detached JWS of `body` as a header value, when a key is loaded.
pub(crate) fn signature(shared: &Shared, body: &[u8]) -> Option<HeaderValue> {
    let s = shared.signer.load();
    let jws = s.as_ref()?.sign(body);
    Some(HeaderValue::from_str(&jws).expect("base64url"))
}

fn document_response(shared: &Shared, body: Vec<u8>, etag: &str) -> Response {
    let sig = signature(shared, &body);
    let mut resp = Response::new(axum::body::Body::from(body));
    let h = resp.headers_mut();
    if let Some(sig) = sig {
        h.insert(crate::signing::SIGNATURE_HEADER, sig);
    }
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

pub(crate) fn not_modified(etag: &str) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    resp.headers_mut()
        .insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    resp
}

fn unknown_service(service: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_service",
        None,
        format!("no service named '{}'", truncate(service)),
    )
}

/// `GET /v1/config/{service}`.
pub(crate) async fn config(
    State(shared): State<Arc<Shared>>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(proxies): axum::Extension<Arc<Proxies>>,
    axum::Extension(long_polls): axum::Extension<Arc<LongPolls>>,
    headers: HeaderMap,
) -> Response {
    let client = proxies.client(peer.ip(), &headers);
    let addr = Some(client);
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
    let changes = shared.subscribe();
    let snap = shared.snapshot();
    let Some(doc) = build(&shared, &snap, &service, &params.asker) else {
        return unknown_service(&service);
    };
    let (body, etag) = doc.encode();
    if let Some(id) = &params.asker.client_id {
        let asking = params.asker.asking();
        let version = semver::Version {
            build: semver::BuildMetadata::EMPTY,
            ..params.asker.sdk_version.clone()
        };
        let version = version.to_string();
        let now = std::time::Instant::now();
        super::fast::census_count(&shared, &snap, id, &version, &asking, &doc.environment, now);
    }
    let count = |doc: &Document| {
        let labels = ConfigLabels {
            service: doc.service.clone(),
            environment: doc.environment.clone(),
            rule: doc.rule.clone(),
            sdk_major: params.asker.sdk_version.major.min(1000).to_string(),
            update: if doc.update.required {
                "required"
            } else if doc.update.recommended {
                "recommended"
            } else {
                "none"
            },
        };
        shared.metrics.config_requests.get_or_create(&labels).inc();
    };
    let Some(inm) = inm.filter(|i| etag_matches(i, &etag)) else {
        count(&doc);
        return document_response(&shared, body, &etag);
    };
    let Some(wait) = params.wait.filter(|w| *w > 0) else {
        return not_modified(&etag);
    };
    drop((doc, body, snap));
    let _held = match long_polls.admit(client) {
        Ok(held) => held,
        Err(scope) => return too_many_long_polls(&shared, scope),
    };
    hold(
        &shared,
        changes,
        &service,
        &params.asker,
        (&inm, &etag),
        wait,
        count,
    )
    .await
}

/// Holds a long-poll: the document as soon as this client's changes, or
/// 304 when `wait` seconds pass (or the server shuts down).
async fn hold(
    shared: &Shared,
    mut changes: tokio::sync::watch::Receiver<u64>,
    service: &str,
    asker: &Asker,
    (inm, etag): (&str, &str),
    wait: u64,
    count: impl Fn(&Document),
) -> Response {
    shared.metrics.long_polls.inc();
    let _guard = scopeguard(|| {
        shared.metrics.long_polls.dec();
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {
                let snap = shared.snapshot();
                let Some(doc) = build(shared, &snap, service, asker) else {
                    return unknown_service(service);
                };
                let (body, new_etag) = doc.encode();
                if !etag_matches(inm, &new_etag) {
                    count(&doc);
                    return document_response(shared, body, &new_etag);
                }
            }
            // Shutdown (sender gone) or timeout: nothing changed for this client.
            Ok(Err(_)) | Err(_) => return not_modified(etag),
        }
    }
}

/// Limits on held long-polls (`--long-polls-max`,
/// `--long-polls-per-address`; 0: none).
#[derive(Debug, Default)]
pub(crate) struct LongPolls {
    /// Most held at once on this edge.
    pub(crate) max: usize,
    /// Most held at once by one client address.
    pub(crate) per_address: usize,
    held: std::sync::atomic::AtomicUsize,
    by_address: PerAddress,
}

/// A held long-poll; released when dropped.
pub(crate) struct Held<'a> {
    polls: &'a LongPolls,
    ip: Option<IpAddr>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.polls.held.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            self.polls.by_address.release(ip);
        }
    }
}

impl LongPolls {
    /// Limits of `max` in all and `per_address` per client (0: none).
    pub(crate) fn new(max: usize, per_address: usize) -> Self {
        LongPolls {
            max,
            per_address,
            ..LongPolls::default()
        }
    }

    /// Holds a long-poll for `ip`, or names the limit (`edge`, `address`)
    /// that is full.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Held<'_>, &'static str> {
        let n = self.held.fetch_add(1, Ordering::Relaxed);
        if self.max > 0 && n >= self.max {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err("edge");
        }
        let ip = (self.per_address > 0).then_some(ip);
        if let Some(ip) = ip
            && !self.by_address.admit(ip, self.per_address)
        {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err("address");
        }
        Ok(Held { polls: self, ip })
    }
}

/// 429 for a long-poll over a limit (counted): the SDK retries after a
/// while.
fn too_many_long_polls(shared: &Shared, scope: &'static str) -> Response {
    let labels = crate::metrics::ScopeLabels { scope };
    shared
        .metrics
        .long_polls_refused
        .get_or_create(&labels)
        .inc();
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_long_polls",
        Some("wait"),
        format!("the {scope} limit of held long-polls is reached; poll again later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
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

#[cfg(test)]
mod tests {
    #[test]
    fn query_pairs_read_as_form_decoding_does() {
        for q in [
            "",
            "&&",
            "a=1&b=2",
            "a",
            "a=",
            "=b",
            "a=b=c",
            "a=%41%zz+b&c+d=e",
            "sdk_version=1.0.0+build&x=%C3%A9",
            "k=%FF",
            "é=ü&%26=%3D",
        ] {
            let ours: Vec<(String, String)> = super::query_pairs(q)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{q}");
        }
    }

    /// The census's version text is the parsed version printed without
    /// its build metadata, however the version was sent.
    #[test]
    fn the_version_text_is_the_parsed_version_without_build_metadata() {
        let mut checked = 0;
        for sent in [
            "1.0.0",
            "0.9.0",
            "10.20.30",
            "1.0.1-rc.1",
            "1.0.0-alpha.beta.1",
            "1.0.0-0.3.7",
            "1.0.0-x-y-z.--",
            "1.2.0+b.7",
            "1.2.0%2Bb.7",
            "1.0.0-alpha+001",
            "1.0.0-rc.1%2Bexp.sha.5114f85",
            "%201.0.0%20",
            "+1.0.0+",
            "1.0.0-a%2Db",
        ] {
            let query = format!("sdk_version={sent}");
            let Ok(q) = super::check_params(&query) else {
                continue;
            };
            let want = semver::Version {
                build: semver::BuildMetadata::EMPTY,
                ..q.sdk_version.clone()
            }
            .to_string();
            assert_eq!(q.version_text(), want, "{sent}");
            checked += 1;
        }
        // Only `+1.0.0+` is not a version.
        assert_eq!(checked, 13);
    }
}
