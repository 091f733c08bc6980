//! The SDK config document (README "The SDK config document",
//! `docs/openapi.yaml`): what one client gets from one
//! snapshot, and its ETag.
//!
//! The HTTP front and `explain` both call [`Document::build`], so what
//! `explain` prints is what the server answers.

use std::net::IpAddr;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::cohort::{self, cmp_precedence};
use crate::config::routing::{Asked, Client, Platform, Service, UpdateFields};
use crate::config::snapshot::Snapshot;

/// Version of the document's shape.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Who is asking, as the SDK describes itself.
#[derive(Debug, Clone)]
pub(crate) struct Asker {
    pub(crate) sdk_version: semver::Version,
    pub(crate) client_id: Option<String>,
    pub(crate) platform: Option<Platform>,
    pub(crate) app_id: Option<String>,
    /// Source address (for CIDR matchers).
    pub(crate) addr: Option<IpAddr>,
}

/// The document's `update` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Update {
    /// The SDK must update before going on.
    pub(crate) required: bool,
    /// A newer SDK exists.
    pub(crate) recommended: bool,
    /// Oldest SDK version allowed, as written.
    pub(crate) min_version: Option<String>,
    /// Newest SDK version, as written.
    pub(crate) latest_version: Option<String>,
    /// Where to get it.
    pub(crate) url: Option<String>,
    /// Shown with it.
    pub(crate) message: Option<String>,
}

/// The document's `maintenance` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MaintenanceDoc {
    /// The environment is in maintenance.
    pub(crate) active: bool,
    /// When it is expected to end.
    pub(crate) until: Option<String>,
    /// Shown to users.
    pub(crate) message: Option<String>,
}

/// The document's `auth` object: which token realm, and its epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Auth {
    /// The realm tokens belong to (the environment's backend).
    pub(crate) realm: String,
    /// Bumped to make SDKs refresh their token.
    pub(crate) epoch: u64,
}

/// The config document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Document {
    pub(crate) schema_version: u32,
    pub(crate) service: String,
    pub(crate) revision: u64,
    pub(crate) environment: String,
    pub(crate) backend_version: String,
    pub(crate) api_base_url: String,
    pub(crate) update: Update,
    pub(crate) maintenance: MaintenanceDoc,
    pub(crate) auth: Auth,
    pub(crate) refresh_after_s: u32,
    pub(crate) rule: String,
    /// Signed documents only: the client it was issued for, when the
    /// request named one (a document swapped between clients is refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_id: Option<String>,
    /// Signed documents only: when it was issued and until when a client
    /// may use it (an old document cannot be replayed forever).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) issued_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<String>,
}

/// Salt of the cohort that a staged minimum version applies to.
pub(crate) fn min_version_salt(service: &str) -> String {
    format!("{service}/min_version")
}

/// Who is asking, borrowed: what [`Asker`] holds, or what the HTTP front's
/// hot path read from the query string without copying it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asking<'a> {
    pub(crate) sdk_version: &'a semver::Version,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) platform: Option<Platform>,
    pub(crate) app_id: Option<&'a str>,
    pub(crate) addr: Option<IpAddr>,
}

impl Asker {
    /// This asker, borrowed.
    pub(crate) fn asking(&self) -> Asking<'_> {
        Asking {
            sdk_version: &self.sdk_version,
            client_id: self.client_id.as_deref(),
            platform: self.platform,
            app_id: self.app_id.as_deref(),
            addr: self.addr,
        }
    }
}

impl<'a> Asking<'a> {
    /// What the rules see of this client over HTTP.
    pub(crate) fn client(&self) -> Client<'a> {
        Client {
            sdk_version: Some(self.sdk_version),
            platform: self.platform,
            app_id: self.app_id,
            client_id: self.client_id,
            addr: self.addr,
            network_key: None,
        }
    }
}

/// The update fields that apply to a client, borrowed from the service.
#[derive(Debug, Clone, Copy)]
struct UpdateRefs<'a> {
    latest_version: Option<&'a semver::Version>,
    min_version: Option<&'a semver::Version>,
    min_version_bp: Option<u16>,
    url: Option<&'a str>,
    message: Option<&'a str>,
}

impl<'a> UpdateRefs<'a> {
    fn of(f: &'a UpdateFields) -> Self {
        UpdateRefs {
            latest_version: f.latest_version.as_ref(),
            min_version: f.min_version.as_ref(),
            min_version_bp: f.min_version_bp,
            url: f.url.as_deref(),
            message: f.message.as_deref(),
        }
    }

    /// Merges `over` in (set fields win).
    fn overlay(&mut self, over: &'a UpdateFields) {
        if over.latest_version.is_some() {
            self.latest_version = over.latest_version.as_ref();
        }
        if over.min_version.is_some() {
            self.min_version = over.min_version.as_ref();
            self.min_version_bp = over.min_version_bp;
        } else if over.min_version_bp.is_some() {
            self.min_version_bp = over.min_version_bp;
        }
        if over.url.is_some() {
            self.url = over.url.as_deref();
        }
        if over.message.is_some() {
            self.message = over.message.as_deref();
        }
    }
}

/// The update policy for a client of `platform` and `app_id`: the
/// service's, then overrides for its platform, its app id, and both (most
/// specific last; in state order within one specificity), then the rule's.
fn effective_update<'a>(
    svc: &'a Service,
    rule: usize,
    platform: Option<Platform>,
    app_id: Option<&str>,
) -> UpdateRefs<'a> {
    let mut u = UpdateRefs::of(&svc.update);
    for specificity in 0..4u8 {
        for o in &svc.overrides {
            let level = u8::from(o.platform.is_some()) + 2 * u8::from(o.app_id.is_some());
            if level == specificity
                && o.platform.is_none_or(|p| Some(p) == platform)
                && o.app_id.as_deref().is_none_or(|a| Some(a) == app_id)
            {
                u.overlay(&o.fields);
            }
        }
    }
    if let Some(r) = &svc.rules[rule].update {
        u.overlay(r);
    }
    u
}

/// Refresh interval jittered into [0.8, 1.0] × base by the client-id hash.
pub(crate) fn refresh_after(svc: &Service, client_id: Option<&str>) -> u32 {
    match client_id {
        None => svc.refresh_s,
        Some(id) => {
            let b = cohort::salted_bucket(&[&svc.name, "/refresh"], id.as_bytes()) as u64;
            // 0.8 + 0.2 × b / 10000, in integers.
            jitter(svc.refresh_s, b)
        }
    }
}

fn jitter(refresh_s: u32, bucket: u64) -> u32 {
    ((refresh_s as u64 * (80_000 + 2 * bucket)) / 100_000).max(1) as u32
}

/// The refresh intervals a service's clients can get: from the shortest
/// jitter to the base (a client without id gets the base).
pub(crate) fn refresh_range(svc: &Service) -> std::ops::RangeInclusive<u32> {
    jitter(svc.refresh_s, 0)..=svc.refresh_s.max(1)
}

/// Where a client stands in a service: the rule it matched, what of the
/// state's update overrides concerns it, and the update flags. Two clients
/// with the same variant get, from one snapshot, the same document but for
/// `refresh_after_s`: the HTTP front encodes each variant once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    /// The rule matched.
    pub(crate) rule: usize,
    /// The platform asked with (overrides may name it).
    platform: Option<Platform>,
    /// The first update override naming the app id asked with (an app id
    /// no override names is like none).
    app_override: Option<usize>,
    /// A minimum version applies to this client (staged minimums apply to
    /// a cohort of client ids).
    min_applies: bool,
    required: bool,
    recommended: bool,
}

impl Variant {
    /// The variant of `asking`, who matched `rule` of `svc`.
    pub(crate) fn of(svc: &Service, rule: usize, asking: &Asking) -> Variant {
        let app_override = asking.app_id.and_then(|id| {
            svc.overrides
                .iter()
                .position(|o| o.app_id.as_deref() == Some(id))
        });
        let u = effective_update(svc, rule, asking.platform, asking.app_id);
        // A staged minimum applies to a sticky cohort of client ids.
        let min_applies = match u.min_version_bp {
            None => true,
            Some(bp) if bp >= 10_000 => true,
            Some(bp) => asking.client_id.is_some_and(|id| {
                cohort::salted_bucket(&[&svc.name, "/min_version"], id.as_bytes()) < bp
            }),
        };
        let min = u.min_version.filter(|_| min_applies);
        let v = asking.sdk_version;
        let required = min.is_some_and(|m| cmp_precedence(v, m).is_lt());
        let recommended = !required
            && u.latest_version
                .is_some_and(|l| cmp_precedence(v, l).is_lt());
        Variant {
            rule,
            platform: asking.platform,
            app_override,
            min_applies: min.is_some(),
            required,
            recommended,
        }
    }

    /// What its document says of an update: `required`, `recommended` or
    /// `none` (the `update` label of the request counter).
    pub(crate) fn update_label(&self) -> &'static str {
        if self.required {
            "required"
        } else if self.recommended {
            "recommended"
        } else {
            "none"
        }
    }

    /// The update policy of this variant.
    fn update<'a>(&self, svc: &'a Service) -> UpdateRefs<'a> {
        let app_id = self
            .app_override
            .and_then(|i| svc.overrides[i].app_id.as_deref());
        effective_update(svc, self.rule, self.platform, app_id)
    }
}

impl Document {
    /// The document `asker` gets for `service` from `snap`, or `None` for an
    /// unknown service.
    pub(crate) fn build(snap: &Snapshot, service: &str, asker: &Asker) -> Option<Document> {
        let svc = snap.routing.service(service)?;
        let asking = asker.asking();
        let decision = svc.decide(&asking.client(), Asked::OverHttp);
        let variant = Variant::of(svc, decision.rule, &asking);
        Some(Document::of(
            snap,
            svc,
            &variant,
            refresh_after(svc, asking.client_id),
        ))
    }

    /// The document of a client of `variant` in `svc`, refreshing after
    /// `refresh_after_s`.
    pub(crate) fn of(
        snap: &Snapshot,
        svc: &Service,
        variant: &Variant,
        refresh_after_s: u32,
    ) -> Document {
        let rule = &svc.rules[variant.rule];
        let env = &snap.routing.environments[rule.environment];
        let u = variant.update(svc);
        let min = u.min_version.filter(|_| variant.min_applies);
        Document {
            schema_version: SCHEMA_VERSION,
            service: svc.name.clone(),
            revision: snap.revision,
            environment: env.name.clone(),
            backend_version: env.backend_version.clone(),
            api_base_url: env.api_base_url.clone(),
            update: Update {
                required: variant.required,
                recommended: variant.recommended,
                min_version: min.map(ToString::to_string),
                latest_version: u.latest_version.map(ToString::to_string),
                url: u.url.map(str::to_string),
                message: u.message.map(str::to_string),
            },
            maintenance: MaintenanceDoc {
                active: env.maintenance.is_some(),
                until: env.maintenance.as_ref().and_then(|m| m.until.clone()),
                message: env.maintenance.as_ref().and_then(|m| m.message.clone()),
            },
            auth: Auth {
                realm: format!("{}/{}", env.name, env.backend_version),
                epoch: env.token_epoch,
            },
            refresh_after_s,
            rule: rule.name.clone(),
            client_id: None,
            issued_at: None,
            expires_at: None,
        }
    }

    /// Adds what a signed document carries: the client id it is for and
    /// its validity window (`(issued_at, expires_at)`).
    pub(crate) fn stamp(&mut self, client_id: Option<&str>, window: (String, String)) {
        self.client_id = client_id.map(str::to_string);
        self.issued_at = Some(window.0);
        self.expires_at = Some(window.1);
    }

    /// The JSON body and the ETag, serializing once. The ETag is a hash of
    /// the body with its revision left out, so a publish that does not
    /// change this client's document keeps its ETag.
    pub(crate) fn encode(&self) -> (Vec<u8>, String) {
        let body = serde_json::to_vec(self).expect("document serializes");
        let etag = etag_of(&body);
        (body, etag)
    }
}

/// Most refresh values one [`Encoded`] keeps a body for (a service
/// refreshing every 5,000 s or less: all of them).
const MAX_BODIES: u32 = 1024;

/// One variant's document encoded once: the bytes around its
/// `refresh_after_s` value, and for each value a client can get the whole
/// body and its ETag, made on first use. What it gives is what
/// [`Document::encode`] gives for that value, byte for byte.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// Up to and with `"refresh_after_s":`.
    head: Vec<u8>,
    /// After the value.
    tail: Vec<u8>,
    /// The refresh value of `bodies[0]`.
    low: u32,
    /// Body, ETag and body length per refresh value from `low`.
    bodies: Box<[std::sync::OnceLock<Body>]>,
}

/// An encoded document: its bytes, its ETag (with its quotes), and the
/// response headers of a 200 and of a 304 with them, made once when the
/// body is made: a response clones a map (two allocations, no hashing)
/// instead of inserting each header.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub(crate) bytes: Bytes,
    pub(crate) etag: axum::http::HeaderValue,
    /// `Content-Type`, `ETag`, `Cache-Control` and `Content-Length`, in the
    /// router's order.
    pub(crate) ok_headers: axum::http::HeaderMap,
    /// `ETag` and `Cache-Control`.
    pub(crate) not_modified_headers: axum::http::HeaderMap,
}

impl Body {
    fn new(bytes: Vec<u8>) -> Body {
        use axum::http::{HeaderMap, HeaderValue, header};
        let etag = HeaderValue::from_maybe_shared(Bytes::from(etag_of(&bytes)))
            .expect("a quoted hex digest");
        let private = HeaderValue::from_static("private, no-cache");
        let mut not_modified_headers = HeaderMap::with_capacity(2);
        not_modified_headers.insert(header::ETAG, etag.clone());
        not_modified_headers.insert(header::CACHE_CONTROL, private.clone());
        let mut ok_headers = HeaderMap::with_capacity(4);
        ok_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        ok_headers.insert(header::ETAG, etag.clone());
        ok_headers.insert(header::CACHE_CONTROL, private);
        ok_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Body {
            bytes: Bytes::from(bytes),
            etag,
            ok_headers,
            not_modified_headers,
        }
    }
}

impl Encoded {
    /// Encodes `doc`, whose clients refresh after a value in `range`.
    pub(crate) fn new(doc: &Document, range: std::ops::RangeInclusive<u32>) -> Encoded {
        let body = serde_json::to_vec(doc).expect("document serializes");
        // A quote inside a string is escaped, so the field's name with its
        // quotes occurs once.
        let marker = b"\"refresh_after_s\":";
        let at = body
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("refresh field")
            + marker.len();
        let end = at + body[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        let (low, high) = range.into_inner();
        let n = if high >= low && high - low < MAX_BODIES {
            high - low + 1
        } else {
            0
        };
        Encoded {
            head: body[..at].to_vec(),
            tail: body[end..].to_vec(),
            low,
            bodies: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// The document with `refresh_after_s` = `refresh` (made once per
    /// value in the refresh range, borrowed from then on).
    pub(crate) fn get(&self, refresh: u32) -> std::borrow::Cow<'_, Body> {
        let make = || {
            let mut b = Vec::with_capacity(self.head.len() + 10 + self.tail.len());
            b.extend_from_slice(&self.head);
            b.extend_from_slice(refresh.to_string().as_bytes());
            b.extend_from_slice(&self.tail);
            Body::new(b)
        };
        match refresh
            .checked_sub(self.low)
            .and_then(|i| self.bodies.get(i as usize))
        {
            Some(slot) => std::borrow::Cow::Borrowed(slot.get_or_init(make)),
            None => std::borrow::Cow::Owned(make()),
        }
    }
}

/// The ETag of a JSON body with a `"revision":N` field: a hash of the body
/// with the revision left out.
pub(crate) fn etag_of(body: &[u8]) -> String {
    let marker = b"\"revision\":";
    let at = body
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("revision field")
        + marker.len();
    let end = at + body[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut h = Sha256::new();
    h.update(&body[..at]);
    h.update(&body[end..]);
    let d = h.finalize();
    let mut etag = String::with_capacity(26);
    etag.push('"');
    for b in &d[..12] {
        etag.push(char::from_digit((b >> 4) as u32, 16).expect("hex"));
        etag.push(char::from_digit((b & 15) as u32, 16).expect("hex"));
    }
    etag.push('"');
    etag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::snapshot::{Inputs, SourceKind, ZoneText, compile};

    fn snap(state: &str) -> Snapshot {
        let zone = "@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n";
        let inputs = Inputs {
            zones: vec![ZoneText {
                source: "t.zone".into(),
                origin: crate::proto::name::Name::parse("yingzi.com.", None).unwrap(),
                text: zone.into(),
            }],
            state_source: "state.yaml".into(),
            state_text: state.into(),
            keyed: None,
            revision: 7,
            kind: SourceKind::File,
        };
        compile(&inputs, None, &Default::default()).unwrap()
    }

    fn asker(v: &str, id: Option<&str>) -> Asker {
        Asker {
            sdk_version: semver::Version::parse(v).unwrap(),
            client_id: id.map(Into::into),
            platform: None,
            app_id: None,
            addr: None,
        }
    }

    #[test]
    fn shipped_example_routes_old_and_new() {
        let s = snap(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap(),
        );
        let old = Document::build(&s, "vdh-api", &asker("0.9.0", Some("c-1"))).unwrap();
        assert_eq!(old.environment, "prod");
        assert_eq!(old.auth.realm, "prod/v0");
        assert!(old.update.recommended && !old.update.required);
        let new = Document::build(&s, "vdh-api", &asker("1.0.0", Some("c-1"))).unwrap();
        assert_eq!(new.environment, "prod-v1");
        assert_eq!(new.rule, "v1-sdk");
        assert!(!new.update.recommended);
        assert_eq!(new.revision, 7);
        assert!(Document::build(&s, "nope", &asker("1.0.0", None)).is_none());
    }

    #[test]
    fn staged_minimum_and_jitter() {
        let mut text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap();
        text = text.replace("      latest_version: 1.0.0\n", "      latest_version: 1.0.0\n      min_version: 1.0.0\n      min_version_percent: \"50\"\n");
        let s = snap(&text);
        let forced = (0..1000)
            .filter(|i| {
                Document::build(&s, "vdh-api", &asker("0.9.0", Some(&format!("c-{i}"))))
                    .unwrap()
                    .update
                    .required
            })
            .count();
        assert!((450..=550).contains(&forced), "{forced}");
        // No client id: not in a partial cohort.
        assert!(
            !Document::build(&s, "vdh-api", &asker("0.9.0", None))
                .unwrap()
                .update
                .required
        );
        for i in 0..200 {
            let d =
                Document::build(&s, "vdh-api", &asker("1.0.0", Some(&format!("c-{i}")))).unwrap();
            assert!(
                (240..=300).contains(&d.refresh_after_s),
                "{}",
                d.refresh_after_s
            );
        }
    }

    #[test]
    fn encoded_bodies_are_the_encoded_documents() {
        let s = snap(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap(),
        );
        let svc = s.routing.service("vdh-api").unwrap();
        for (v, id) in [
            ("0.9.0", Some("c-1")),
            ("1.0.0", Some("c-2")),
            ("1.0.0", None),
        ] {
            let a = asker(v, id);
            let doc = Document::build(&s, "vdh-api", &a).unwrap();
            let rule = svc.decide(&a.asking().client(), Asked::OverHttp).rule;
            let variant = Variant::of(svc, rule, &a.asking());
            let enc = Encoded::new(&doc, refresh_range(svc));
            assert!(refresh_range(svc).contains(&doc.refresh_after_s));
            // Every value in the range, twice (made, then kept), and one
            // outside it (made each time).
            for r in refresh_range(svc)
                .chain(refresh_range(svc))
                .chain([1, 100_000])
            {
                let want = Document::of(&s, svc, &variant, r).encode();
                let body = enc.get(r);
                assert_eq!(&body.bytes[..], &want.0[..]);
                assert_eq!(body.etag.as_bytes(), want.1.as_bytes());
                // The headers of a 200 and a 304, in the router's order.
                let length = want.0.len().to_string();
                let header_list = |h: &axum::http::HeaderMap| -> Vec<(String, Vec<u8>)> {
                    h.iter()
                        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                        .collect()
                };
                let pair = |k: &str, v: &[u8]| (k.to_string(), v.to_vec());
                assert_eq!(
                    header_list(&body.ok_headers),
                    [
                        pair("content-type", b"application/json"),
                        pair("etag", want.1.as_bytes()),
                        pair("cache-control", b"private, no-cache"),
                        pair("content-length", length.as_bytes()),
                    ]
                );
                assert_eq!(
                    header_list(&body.not_modified_headers),
                    [
                        pair("etag", want.1.as_bytes()),
                        pair("cache-control", b"private, no-cache"),
                    ]
                );
            }
        }
    }

    #[test]
    fn salts_built_in_pieces_give_the_same_buckets() {
        for id in ["c-1", "c-2", "", "ü"] {
            assert_eq!(
                cohort::salted_bucket(&["vdh-api", "/min_version"], id.as_bytes()),
                cohort::bucket(&min_version_salt("vdh-api"), id.as_bytes())
            );
            assert_eq!(
                cohort::salted_bucket(&["vdh-api", "/refresh"], id.as_bytes()),
                cohort::bucket("vdh-api/refresh", id.as_bytes())
            );
        }
    }

    #[test]
    fn etag_ignores_revision_only() {
        let s = snap(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap(),
        );
        let mut d = Document::build(&s, "vdh-api", &asker("1.0.0", Some("c-1"))).unwrap();
        let e = d.encode().1;
        d.revision += 1;
        assert_eq!(d.encode().1, e);
        d.environment = "x".into();
        assert_ne!(d.encode().1, e);
    }
}
