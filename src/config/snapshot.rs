//! `Snapshot`: everything one answer needs, compiled once and never changed.
//!
//! [`compile`] turns [`Inputs`] (zone texts and the routing state) into a
//! snapshot: zones parsed and built, routing validated, derived names
//! (environment names, service hostnames) added to their zones as records,
//! SOA serials chosen by [`super::serial`]. It collects every error instead
//! of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::error::ConfigError;
use super::keyed::KeyedState;
use super::routing::{Asked, Client, ENV_NAME_TTL, Environment, Routing};
use super::serial::{self, SerialChoice, SerialMode, serial_gt};
use super::state::{RawState, StateError};
use super::zone::{self, Zone, ZoneRecord};
use crate::proto::name::Name;
use crate::proto::types::{A, AAAA};

/// Zones by lower-cased wire origin.
pub(crate) type Zones = rustc_hash::FxHashMap<Box<[u8]>, Arc<Zone>>;

/// Service hostnames (lower-case wire) whose DNS answers depend on the
/// client network, with the service's index in `routing.services`.
pub(crate) type ServicesByName = rustc_hash::FxHashMap<Box<[u8]>, usize>;

/// Last serial served and content hash per zone origin (the cache folder's
/// `serials.json`).
pub(crate) type SavedSerials = BTreeMap<String, serial::Served>;

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Zone files and a state file.
    File,
    /// An etcd prefix.
    Etcd,
    /// The last-known-good etcd prefix kept in the cache folder.
    Cache,
}

impl SourceKind {
    /// `file`, `etcd` or `cache` (readiness, status, the edge registry).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Etcd => "etcd",
            SourceKind::Cache => "cache",
        }
    }
}

/// One zone file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZoneText {
    /// Where it came from (a path, or an etcd key), for error messages.
    pub(crate) source: String,
    /// The origin, from the file name or the key.
    pub(crate) origin: Name,
    /// The master-file text.
    pub(crate) text: Text,
}

/// A zone's master-file text, shared between reads and snapshots, with its
/// hash computed once: a change elsewhere does not copy or hash a big
/// zone's text again (see `source::file`'s read cache).
#[derive(Debug, Clone)]
pub(crate) struct Text {
    text: Arc<str>,
    hash: u64,
}

impl Text {
    /// The FxHash of the text (part of the zone's input fingerprint).
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        use std::hash::BuildHasher;
        Text {
            text: s.into(),
            hash: rustc_hash::FxBuildHasher.hash_one(s),
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::from(s.as_str())
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        Arc::ptr_eq(&self.text, &other.text) || (self.hash == other.hash && self.text == other.text)
    }
}

impl Eq for Text {}

/// The raw material of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Zone texts; an origin may appear once.
    pub(crate) zones: Vec<ZoneText>,
    /// Where the state came from, for error messages.
    pub(crate) state_source: String,
    /// The state as YAML (file mode; unused when `keyed` is set).
    pub(crate) state_text: String,
    /// The state as keys, when it comes from etcd (then errors name keys
    /// and serials follow revisions).
    pub(crate) keyed: Option<KeyedState>,
    /// Revision of the source (etcd revision; a counter for files).
    pub(crate) revision: u64,
    /// Which kind of source produced these inputs.
    pub kind: SourceKind,
}

/// An immutable, fully compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The source revision it was compiled from.
    pub(crate) revision: u64,
    /// Which kind of source it came from.
    pub(crate) kind: SourceKind,
    /// The served zones, by lower-case wire origin.
    pub(crate) zones: Zones,
    /// The validated routing state.
    pub(crate) routing: Routing,
    /// Service hostnames answered per client network.
    pub(crate) services_by_name: ServicesByName,
    /// When it was compiled (readiness reports its age).
    pub(crate) published: SystemTime,
    /// Environments whose clients are failed over, by name: to the named
    /// environment, or `None` when every candidate is down too (fail open).
    pub(crate) failed_over: BTreeMap<String, Option<String>>,
}

impl Snapshot {
    /// A snapshot with nothing in it (used before the first publish).
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            kind: SourceKind::File,
            zones: Zones::default(),
            routing: Routing::default(),
            services_by_name: ServicesByName::default(),
            published: SystemTime::now(),
            failed_over: BTreeMap::new(),
        }
    }

    /// Serial served and content hash of each zone, by origin text.
    pub(crate) fn serials(&self) -> SavedSerials {
        self.zones
            .values()
            .map(|z| (z.origin.to_string(), (z.serial, z.content_hash)))
            .collect()
    }
}

/// Compiles inputs into a snapshot. `prev` (the live snapshot) carries SOA
/// serials forward; `saved` holds the last serial served per zone before a
/// restart (from the cache), so serials never go backwards.
pub fn compile(
    inputs: &Inputs,
    prev: Option<&Snapshot>,
    saved: &SavedSerials,
) -> Result<Snapshot, Vec<ConfigError>> {
    compile_with_down(inputs, prev, saved, &std::collections::BTreeSet::new())
}

/// [`compile`], with the environments whose health verdict is `down`
/// failed over ([`Routing::fail_over`]) before the service hostnames'
/// records are derived.
pub(crate) fn compile_with_down(
    inputs: &Inputs,
    prev: Option<&Snapshot>,
    saved: &SavedSerials,
    down: &std::collections::BTreeSet<String>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let raw = read_state(inputs)?;
    let unique = unique_zones(&inputs.zones, &mut errors);
    let origins: Vec<Name> = unique.iter().map(|zt| zt.origin.to_lower()).collect();
    let mut failed_over = BTreeMap::new();
    let routing = match Routing::compile(&raw, &origins) {
        Ok(mut r) => {
            failed_over = r.fail_over(down);
            Some(r)
        }
        Err(es) => {
            errors.extend(locate_state_errors(inputs, es));
            None
        }
    };
    let derived = routing
        .as_ref()
        .map(|r| derived_records(r, &origins))
        .unwrap_or_default();
    let services_by_name = routing.as_ref().map(per_network_names).unwrap_or_default();
    let mut c = ZoneCompiler {
        inputs,
        prev,
        saved,
        routing: routing.as_ref(),
        derived: &derived,
        services_by_name: &services_by_name,
        zones: Zones::default(),
        errors,
    };
    // Reuse first, then parse everything that changed, then build: errors
    // come out grouped the same way whatever the order of the zones.
    let changed: Vec<(&ZoneText, u64)> = unique
        .into_iter()
        .filter_map(|zt| c.reuse_or_fingerprint(zt).map(|fp| (zt, fp)))
        .collect();
    let parsed: Vec<_> = changed
        .into_iter()
        .map(|(zt, fp)| (zt, c.parse(zt), fp))
        .collect();
    for (zt, records, fp) in parsed {
        c.build(zt, records, fp);
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Snapshot {
        revision: inputs.revision,
        kind: inputs.kind,
        zones: c.zones,
        routing: routing.expect("no errors means routing compiled"),
        services_by_name,
        published: SystemTime::now(),
        failed_over,
    })
}

/// The routing state as written: from keys, or from YAML text.
fn read_state(inputs: &Inputs) -> Result<RawState, Vec<ConfigError>> {
    match &inputs.keyed {
        Some(k) => k.raw(),
        None => super::state::from_yaml(&inputs.state_text).map_err(|e| {
            vec![ConfigError {
                source: inputs.state_source.clone(),
                line: e.line,
                message: e.message,
            }]
        }),
    }
}

/// Zone texts with each origin once; a repeated origin is an error.
fn unique_zones<'a>(zones: &'a [ZoneText], errors: &mut Vec<ConfigError>) -> Vec<&'a ZoneText> {
    let mut seen = HashMap::new();
    let mut unique = Vec::new();
    for zt in zones {
        let origin = zt.origin.to_lower();
        if let Some(prev_src) = seen.insert(origin.clone(), zt.source.clone()) {
            errors.push(ConfigError::at(
                &zt.source,
                format!("zone {origin} is also defined by {prev_src}"),
            ));
            continue;
        }
        unique.push(zt);
    }
    unique
}

/// Names each validation error by where it is: the etcd key and the path
/// inside it, or the state file and its line.
fn locate_state_errors(inputs: &Inputs, errors: Vec<StateError>) -> Vec<ConfigError> {
    match &inputs.keyed {
        Some(k) => errors
            .into_iter()
            .map(|e| {
                let (key, inner) = k.locate(&e.path);
                let message = if inner.is_empty() {
                    e.message
                } else {
                    format!("{inner}: {}", e.message)
                };
                ConfigError::at(key, message)
            })
            .collect(),
        None => StateError::with_lines(errors, &inputs.state_text)
            .into_iter()
            .map(|e| ConfigError {
                source: inputs.state_source.clone(),
                line: e.line,
                message: format!("{}: {}", e.path, e.message),
            })
            .collect(),
    }
}

/// Service hostnames whose answers depend on the client network.
fn per_network_names(routing: &Routing) -> ServicesByName {
    let mut out = ServicesByName::default();
    for (i, svc) in routing.services.iter().enumerate() {
        if svc.dns_depends_on_network() {
            for h in &svc.hostnames {
                out.insert(h.wire().into(), i);
            }
        }
    }
    out
}

/// Derived records per zone origin, from the routing state: environment
/// names, and service hostnames with the answer a resolver gets when no
/// network-specific rule matches.
fn derived_records(routing: &Routing, origins: &[Name]) -> HashMap<Name, Vec<ZoneRecord>> {
    let mut out: HashMap<Name, Vec<ZoneRecord>> = HashMap::new();
    let zone_of = |n: &Name| {
        origins
            .iter()
            .filter(|o| n.is_subdomain_of(o))
            .max_by_key(|o| o.label_count())
            .cloned()
    };
    let mut push = |name: &Name, ttl: u32, env: &Environment| {
        let Some(z) = zone_of(name) else { return };
        let v = out.entry(z).or_default();
        let v4 = env.v4.iter().map(|a| (A, a.octets().to_vec()));
        let v6 = env.v6.iter().map(|a| (AAAA, a.octets().to_vec()));
        for (rtype, rdata) in v4.chain(v6) {
            v.push(ZoneRecord {
                owner: name.clone(),
                rtype,
                ttl,
                rdata,
                line: 0,
            });
        }
    };
    for env in &routing.environments {
        for n in &env.names {
            push(n, ENV_NAME_TTL, env);
        }
    }
    for svc in &routing.services {
        let client = Client {
            sdk_version: Some(&svc.legacy_sdk_version),
            ..Default::default()
        };
        let d = svc.decide(&client, Asked::OverDns);
        let env = &routing.environments[svc.rules[d.rule].environment];
        for h in &svc.hostnames {
            push(h, svc.ttl, env);
        }
    }
    out
}

/// A hash of everything a zone is built from.
fn fingerprint(
    zt: &ZoneText,
    derived: Option<&Vec<ZoneRecord>>,
    dynamic: &ServicesByName,
    origin: &Name,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    zt.text.hash().hash(&mut h);
    zt.source.hash(&mut h);
    for d in derived.into_iter().flatten() {
        (d.owner.wire(), d.rtype, d.ttl, &d.rdata).hash(&mut h);
    }
    let mut names: Vec<&[u8]> = dynamic
        .keys()
        .map(|k| &k[..])
        .filter(|k| crate::proto::name::is_subdomain(k, origin.wire()))
        .collect();
    names.sort_unstable();
    names.hash(&mut h);
    h.finish()
}

/// Builds (or reuses) each zone of one compile and collects the errors.
struct ZoneCompiler<'a> {
    inputs: &'a Inputs,
    prev: Option<&'a Snapshot>,
    saved: &'a SavedSerials,
    routing: Option<&'a Routing>,
    derived: &'a HashMap<Name, Vec<ZoneRecord>>,
    services_by_name: &'a ServicesByName,
    zones: Zones,
    errors: Vec<ConfigError>,
}

impl ZoneCompiler<'_> {
    fn mode(&self) -> SerialMode {
        if self.inputs.keyed.is_some() {
            SerialMode::Etcd
        } else {
            SerialMode::File
        }
    }

    /// In etcd mode: the file's serial plus the newest revision of the keys
    /// that feed the zone (`None` in file mode).
    fn etcd_serial(&self, origin: &Name, source: &str, file_serial: u32) -> Option<u32> {
        let (keyed, routing) = (self.inputs.keyed.as_ref()?, self.routing?);
        let keys = keyed.feeding_keys(routing, origin, source);
        let rev = keyed.max_revision(keys.iter().map(String::as_str))?;
        // Serials are 32-bit and wrap (RFC 1982): the low bits are the point.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(file_serial.wrapping_add(rev as u32))
    }

    /// Reuses the live zone when its inputs are unchanged (a state-only
    /// change next to a huge zone then costs no parsing); otherwise returns
    /// the fingerprint the new build will carry.
    fn reuse_or_fingerprint(&mut self, zt: &ZoneText) -> Option<u64> {
        let origin = zt.origin.to_lower();
        let fp = fingerprint(
            zt,
            self.derived.get(&origin),
            self.services_by_name,
            &origin,
        );
        let key: Box<[u8]> = origin.wire().into();
        match self.prev.and_then(|p| p.zones.get(&key)).cloned() {
            Some(old) if old.input_fingerprint == fp => {
                self.reuse(key, &old, &origin, &zt.source);
                None
            }
            _ => Some(fp),
        }
    }

    /// Parses a zone text, recording its errors.
    fn parse(&mut self, zt: &ZoneText) -> Vec<ZoneRecord> {
        let parsed = zone::parse_zone(&zt.text, &zt.origin);
        self.errors
            .extend(parsed.errors.into_iter().map(|e| ConfigError {
                source: zt.source.clone(),
                line: Some(e.line),
                message: e.message,
            }));
        parsed.records
    }

    /// Adds the derived records to a parsed zone and builds it with its
    /// serial, unless there were errors anywhere.
    fn build(&mut self, zt: &ZoneText, mut records: Vec<ZoneRecord>, fp: u64) {
        let origin = zt.origin.to_lower();
        if let Some(extra) = self.derived.get(&origin) {
            self.check_clashes(zt, &records, extra);
            records.extend(extra.iter().cloned());
        }
        // Errors elsewhere make this compile fail anyway: skip the build.
        if !self.errors.is_empty() {
            return;
        }
        let mut dynamic: Vec<Name> = self
            .services_by_name
            .keys()
            .map(|k| Name::from_wire_unchecked(k))
            .filter(|n| n.is_subdomain_of(&origin))
            .collect();
        dynamic.sort();
        // First build with the file's serial to learn the content hash.
        let mut built = match Zone::build(&zt.origin, records, None, &dynamic) {
            Ok(z) => z,
            Err(issues) => {
                // Line 0: the whole zone (no SOA) or a derived record.
                self.errors.extend(issues.into_iter().map(|i| ConfigError {
                    source: zt.source.clone(),
                    line: (i.line > 0).then_some(i.line),
                    message: i.message,
                }));
                return;
            }
        };
        let key: Box<[u8]> = origin.wire().into();
        let file_serial = built.serial;
        let candidate = self
            .etcd_serial(&origin, &zt.source, file_serial)
            .unwrap_or(file_serial);
        let old = self.prev.and_then(|p| p.zones.get(&key));
        let choice = serial::choose(
            candidate,
            built.content_hash,
            old.map(|o| (o.serial, o.content_hash)),
            self.saved.get(&origin.to_string()).copied(),
            self.mode(),
        );
        match choice {
            SerialChoice::KeepLive => {
                let old = old.expect("kept only when live").clone();
                self.zones.insert(key, old);
            }
            SerialChoice::Serve(s) => {
                if s != file_serial {
                    built.set_serial(s);
                }
                built.input_fingerprint = fp;
                self.zones.insert(key, Arc::new(built));
            }
        }
    }

    /// Derived names own their node: the zone file must not hold records
    /// there.
    fn check_clashes(&mut self, zt: &ZoneText, records: &[ZoneRecord], derived: &[ZoneRecord]) {
        for d in derived {
            let clash = records
                .iter()
                .find(|r| r.line > 0 && r.owner.to_lower() == d.owner);
            if let Some(c) = clash {
                let msg = format!(
                    "{} is a derived name of the routing state and cannot also have records in the zone file",
                    d.owner
                );
                if !self.errors.iter().any(|e| e.message == msg) {
                    self.errors.push(ConfigError {
                        source: zt.source.clone(),
                        line: Some(c.line),
                        message: msg,
                    });
                }
            }
        }
    }

    /// Reuses a built zone whose inputs are unchanged. In etcd mode a
    /// feeding key may have moved on without changing the zone: its serial
    /// follows the revision so every edge agrees.
    fn reuse(&mut self, key: Box<[u8]>, old: &Arc<Zone>, origin: &Name, source: &str) {
        match self.etcd_serial(origin, source, old.file_serial) {
            Some(c) if serial_gt(c, old.serial) => {
                let mut z = (**old).clone();
                z.set_serial(c);
                self.zones.insert(key, Arc::new(z));
            }
            _ => {
                self.zones.insert(key, old.clone());
            }
        }
    }
}
