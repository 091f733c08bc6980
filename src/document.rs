//! The SDK config document (README "The SDK config document",
//! `docs/openapi.yaml`): what one client gets from one
//! snapshot, and its ETag.
//!
//! The HTTP front and `explain` both call [`Document::build`], so what
//! `explain` prints is what the server answers.

use std::net::IpAddr;

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

/// Salt of the refresh jitter.
pub(crate) fn refresh_salt(service: &str) -> String {
    format!("{service}/refresh")
}

/// Merges `over` into `base` (set fields win).
fn overlay(base: &mut UpdateFields, over: &UpdateFields) {
    if over.latest_version.is_some() {
        base.latest_version.clone_from(&over.latest_version);
    }
    if over.min_version.is_some() {
        base.min_version.clone_from(&over.min_version);
        base.min_version_bp = over.min_version_bp;
    } else if over.min_version_bp.is_some() {
        base.min_version_bp = over.min_version_bp;
    }
    if over.url.is_some() {
        base.url.clone_from(&over.url);
    }
    if over.message.is_some() {
        base.message.clone_from(&over.message);
    }
}

/// The update policy for a client: the service's, then overrides for its
/// platform, its app id, and both (most specific last), then the rule's.
pub(crate) fn effective_update(svc: &Service, rule: usize, asker: &Asker) -> UpdateFields {
    let mut u = svc.update.clone();
    let mut matching: Vec<(u8, &crate::config::routing::UpdateOverride)> = svc
        .overrides
        .iter()
        .filter(|o| o.platform.is_none_or(|p| Some(p) == asker.platform))
        .filter(|o| {
            o.app_id
                .as_ref()
                .is_none_or(|a| Some(a) == asker.app_id.as_ref())
        })
        .map(|o| {
            (
                u8::from(o.platform.is_some()) + 2 * u8::from(o.app_id.is_some()),
                o,
            )
        })
        .collect();
    matching.sort_by_key(|(specificity, _)| *specificity);
    for (_, o) in matching {
        overlay(&mut u, &o.fields);
    }
    if let Some(r) = &svc.rules[rule].update {
        overlay(&mut u, r);
    }
    u
}

/// Refresh interval jittered into [0.8, 1.0] × base by the client-id hash.
pub(crate) fn refresh_after(svc: &Service, client_id: Option<&str>) -> u32 {
    match client_id {
        None => svc.refresh_s,
        Some(id) => {
            let b = cohort::bucket(&refresh_salt(&svc.name), id.as_bytes()) as u64;
            // 0.8 + 0.2 × b / 10000, in integers.
            ((svc.refresh_s as u64 * (80_000 + 2 * b)) / 100_000).max(1) as u32
        }
    }
}

impl Document {
    /// The document `asker` gets for `service` from `snap`, or `None` for an
    /// unknown service.
    pub(crate) fn build(snap: &Snapshot, service: &str, asker: &Asker) -> Option<Document> {
        let svc = snap.routing.service(service)?;
        let client = Client {
            sdk_version: Some(&asker.sdk_version),
            platform: asker.platform,
            app_id: asker.app_id.as_deref(),
            client_id: asker.client_id.as_deref(),
            addr: asker.addr,
            network_key: None,
        };
        let decision = svc.decide(&client, Asked::OverHttp);
        let rule = &svc.rules[decision.rule];
        let env = &snap.routing.environments[rule.environment];
        let u = effective_update(svc, decision.rule, asker);
        // A staged minimum applies to a sticky cohort of client ids.
        let min_applies = match u.min_version_bp {
            None => true,
            Some(bp) if bp >= 10_000 => true,
            Some(bp) => asker
                .client_id
                .as_deref()
                .is_some_and(|id| cohort::bucket(&min_version_salt(&svc.name), id.as_bytes()) < bp),
        };
        let min = u.min_version.as_ref().filter(|_| min_applies);
        let required = min.is_some_and(|m| cmp_precedence(&asker.sdk_version, m).is_lt());
        let recommended = !required
            && u.latest_version
                .as_ref()
                .is_some_and(|l| cmp_precedence(&asker.sdk_version, l).is_lt());
        Some(Document {
            schema_version: SCHEMA_VERSION,
            service: svc.name.clone(),
            revision: snap.revision,
            environment: env.name.clone(),
            backend_version: env.backend_version.clone(),
            api_base_url: env.api_base_url.clone(),
            update: Update {
                required,
                recommended,
                min_version: min.map(ToString::to_string),
                latest_version: u.latest_version.as_ref().map(ToString::to_string),
                url: u.url,
                message: u.message,
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
            refresh_after_s: refresh_after(svc, asker.client_id.as_deref()),
            rule: rule.name.clone(),
            client_id: None,
            issued_at: None,
            expires_at: None,
        })
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
