//! `Snapshot`: everything one answer needs, compiled once and never changed.
//!
//! [`compile`] turns [`Inputs`] (zone texts and the routing state) into a
//! snapshot: zones parsed and built, routing validated, derived names
//! (environment names, service hostnames) added to their zones as records,
//! SOA serials chosen so they never go backwards. It collects every error
//! instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::dns::name::Name;
use crate::dns::types::{A, AAAA};
use crate::routing::{Client, ENV_NAME_TTL, Routing};
use crate::state::RawState;
use crate::zone::{self, Zone, ZoneRecord};

/// Zones by lower-cased wire origin.
pub type Zones = rustc_hash::FxHashMap<Box<[u8]>, Arc<Zone>>;

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Etcd,
    Cache,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Etcd => "etcd",
            SourceKind::Cache => "cache",
        }
    }
}

/// One zone file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneText {
    /// Where it came from (a path, or an etcd key), for error messages.
    pub source: String,
    pub origin: Name,
    pub text: String,
}

/// The raw material of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub zones: Vec<ZoneText>,
    /// Where the state came from, for error messages.
    pub state_source: String,
    pub state_text: String,
    /// The state as etcd entries, when it comes from etcd (then
    /// `state_text` is unused and errors name keys).
    pub etcd: Option<EtcdInputs>,
    /// Revision of the source (etcd revision; a counter for files).
    pub revision: u64,
    pub kind: SourceKind,
}

/// The state part of a prefix read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdInputs {
    pub prefix: String,
    /// By key relative to the prefix, with mod revisions.
    pub entries: BTreeMap<String, crate::store::Entry>,
}

impl EtcdInputs {
    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix.trim_end_matches('/'))
    }

    /// Maps a validation path (`services.vdh-api.rules[0]`) to the key it
    /// lives in and the path inside that key's JSON.
    fn locate(&self, path: &str) -> (String, String) {
        for group in ["environments", "services"] {
            if let Some(rest) = path.strip_prefix(&format!("{group}.")) {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let inner = rest[end..].trim_start_matches('.');
                return (
                    self.key(&format!("{group}/{}", &rest[..end])),
                    inner.to_string(),
                );
            }
        }
        (self.key(""), path.to_string())
    }

    /// Highest mod revision among `rels` that exist.
    fn max_revision<'a>(&self, rels: impl Iterator<Item = &'a str>) -> Option<i64> {
        rels.filter_map(|r| self.entries.get(r).map(|e| e.mod_revision))
            .max()
    }
}

/// A problem that keeps a candidate from being published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) if l > 0 => write!(f, "{}:{}: {}", self.source, l, self.message),
            _ => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// An immutable, fully compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: u64,
    pub kind: SourceKind,
    pub zones: Zones,
    pub routing: Routing,
    /// Service hostnames (lower-case wire) whose DNS answers depend on the
    /// client network, with the service's index in `routing.services`.
    pub services_by_name: rustc_hash::FxHashMap<Box<[u8]>, usize>,
    pub raw_state: RawState,
    pub published: SystemTime,
}

impl Snapshot {
    /// A snapshot with nothing in it (used before the first publish).
    pub fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            kind: SourceKind::File,
            zones: Default::default(),
            routing: Routing::default(),
            services_by_name: Default::default(),
            raw_state: RawState::default(),
            published: SystemTime::now(),
        }
    }

    /// Serial served and content hash of each zone, by origin text.
    pub fn serials(&self) -> BTreeMap<String, (u32, u64)> {
        self.zones
            .values()
            .map(|z| (z.origin.to_string(), (z.serial, z.content_hash)))
            .collect()
    }
}

/// Serial arithmetic (RFC 1982): is `a` after `b`?
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Derived records per zone origin, from the routing state.
fn derived_records(routing: &Routing, origins: &[Name]) -> HashMap<Name, Vec<ZoneRecord>> {
    let mut out: HashMap<Name, Vec<ZoneRecord>> = HashMap::new();
    let zone_of = |n: &Name| {
        origins
            .iter()
            .filter(|o| n.is_subdomain_of(o))
            .max_by_key(|o| o.label_count())
            .cloned()
    };
    let mut push = |name: &Name, ttl: u32, env: &crate::routing::Environment| {
        let Some(z) = zone_of(name) else { return };
        let v = out.entry(z).or_default();
        for a in &env.v4 {
            v.push(ZoneRecord {
                owner: name.clone(),
                rtype: A,
                ttl,
                rdata: a.octets().to_vec(),
                line: 0,
            });
        }
        for a in &env.v6 {
            v.push(ZoneRecord {
                owner: name.clone(),
                rtype: AAAA,
                ttl,
                rdata: a.octets().to_vec(),
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
        let d = svc.decide(&client, true);
        let env = &routing.environments[svc.rules[d.rule].environment];
        for h in &svc.hostnames {
            push(h, svc.ttl, env);
        }
    }
    out
}

/// In etcd mode: the file's serial plus the newest revision of the keys
/// that feed the zone (`None` in file mode).
fn etcd_serial(
    inputs: &Inputs,
    routing: Option<&Routing>,
    origin: &Name,
    source: &str,
    file_serial: u32,
) -> Option<u32> {
    let (et, r) = (inputs.etcd.as_ref()?, routing?);
    let rev = et.max_revision(
        feeding_keys(r, origin, source, et)
            .iter()
            .map(String::as_str),
    )?;
    Some(file_serial.wrapping_add(rev as u32))
}

/// A hash of everything a zone is built from.
fn fingerprint(
    zt: &ZoneText,
    derived: Option<&Vec<ZoneRecord>>,
    dynamic: &rustc_hash::FxHashMap<Box<[u8]>, usize>,
    origin: &Name,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    zt.text.hash(&mut h);
    zt.source.hash(&mut h);
    for d in derived.into_iter().flatten() {
        (d.owner.wire(), d.rtype, d.ttl, &d.rdata).hash(&mut h);
    }
    let mut names: Vec<&[u8]> = dynamic
        .keys()
        .map(|k| &k[..])
        .filter(|k| crate::dns::name::is_subdomain(k, origin.wire()))
        .collect();
    names.sort();
    names.hash(&mut h);
    h.finish()
}

/// The etcd keys (relative) whose values feed a zone: its own text, the
/// environments named in it, and the services with hostnames in it together
/// with the environments their rules use.
fn feeding_keys(
    routing: &Routing,
    origin: &Name,
    zone_source: &str,
    et: &EtcdInputs,
) -> Vec<String> {
    let mut keys = Vec::new();
    if zone_source == et.key(&format!("zones/{origin}")) {
        keys.push(format!("zones/{origin}"));
    }
    for env in &routing.environments {
        if env.names.iter().any(|n| n.is_subdomain_of(origin)) {
            keys.push(format!("environments/{}", env.name));
        }
    }
    for svc in &routing.services {
        if svc.hostnames.iter().any(|n| n.is_subdomain_of(origin)) {
            keys.push(format!("services/{}", svc.name));
            for r in &svc.rules {
                keys.push(format!(
                    "environments/{}",
                    routing.environments[r.environment].name
                ));
            }
        }
    }
    keys
}

/// Compiles inputs into a snapshot. `prev` (the live snapshot) carries SOA
/// serials forward; `serial_floor` holds the last serial served per zone
/// before a restart (from the cache), so serials never go backwards.
pub fn compile(
    inputs: &Inputs,
    prev: Option<&Snapshot>,
    serial_floor: &BTreeMap<String, (u32, u64)>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let raw = match &inputs.etcd {
        Some(e) => crate::store::raw_from_entries(&e.prefix, &e.entries)?,
        None => match crate::state::from_yaml(&inputs.state_text) {
            Ok(r) => r,
            Err(e) => {
                errors.push(ConfigError {
                    source: inputs.state_source.clone(),
                    line: e.line,
                    message: e.message,
                });
                return Err(errors);
            }
        },
    };
    // Parse zones first: the routing state needs their origins.
    let mut parsed: Vec<(&ZoneText, Vec<ZoneRecord>, u64)> = Vec::new();
    let mut zones: Zones = Default::default();
    let mut seen = HashMap::new();
    let mut unique: Vec<&ZoneText> = Vec::new();
    for zt in &inputs.zones {
        let origin = zt.origin.to_lower();
        if let Some(prev_src) = seen.insert(origin.clone(), zt.source.clone()) {
            errors.push(ConfigError {
                source: zt.source.clone(),
                line: None,
                message: format!("zone {origin} is also defined by {prev_src}"),
            });
            continue;
        }
        unique.push(zt);
    }
    let origins: Vec<Name> = unique.iter().map(|zt| zt.origin.to_lower()).collect();
    let routing = match Routing::compile(&raw, &origins) {
        Ok(r) => Some(r),
        Err(es) => {
            match &inputs.etcd {
                Some(et) => {
                    for e in es {
                        let (key, inner) = et.locate(&e.path);
                        let message = if inner.is_empty() {
                            e.message
                        } else {
                            format!("{inner}: {}", e.message)
                        };
                        errors.push(ConfigError {
                            source: key,
                            line: None,
                            message,
                        });
                    }
                }
                None => {
                    for e in crate::state::StateError::with_lines(es, &inputs.state_text) {
                        errors.push(ConfigError {
                            source: inputs.state_source.clone(),
                            line: e.line,
                            message: format!("{}: {}", e.path, e.message),
                        });
                    }
                }
            }
            None
        }
    };
    let derived = routing
        .as_ref()
        .map(|r| derived_records(r, &origins))
        .unwrap_or_default();
    let mut services_by_name: rustc_hash::FxHashMap<Box<[u8]>, usize> = Default::default();
    if let Some(r) = &routing {
        for (i, svc) in r.services.iter().enumerate() {
            if svc.dns_depends_on_network() {
                for h in &svc.hostnames {
                    services_by_name.insert(h.wire().into(), i);
                }
            }
        }
    }
    // A zone whose inputs (text, derived records, per-query names) are the
    // same as in the live snapshot is reused as built: no parsing, same
    // serial. This keeps a state-only change fast next to huge zones.
    let mut fingerprints: HashMap<Name, u64> = HashMap::new();
    for zt in &unique {
        let origin = zt.origin.to_lower();
        let fp = fingerprint(zt, derived.get(&origin), &services_by_name, &origin);
        let key: Box<[u8]> = origin.wire().into();
        if let Some(old) = prev.and_then(|p| p.zones.get(&key))
            && old.input_fingerprint == fp
        {
            // In etcd mode a feeding key may have moved on without changing
            // the zone: follow the revision so every edge agrees.
            match etcd_serial(
                inputs,
                routing.as_ref(),
                &origin,
                &zt.source,
                old.file_serial,
            ) {
                Some(c) if serial_gt(c, old.serial) => {
                    let mut z = (**old).clone();
                    z.set_serial(c);
                    zones.insert(key, Arc::new(z));
                }
                _ => {
                    zones.insert(key, old.clone());
                }
            }
        } else {
            fingerprints.insert(origin, fp);
        }
    }
    for zt in unique {
        let origin = zt.origin.to_lower();
        let Some(&fp) = fingerprints.get(&origin) else {
            continue;
        };
        let p = zone::parse_zone(&zt.text, &zt.origin);
        for e in p.errors {
            errors.push(ConfigError {
                source: zt.source.clone(),
                line: Some(e.line),
                message: e.message,
            });
        }
        parsed.push((zt, p.records, fp));
    }
    for (zt, records, fp) in parsed {
        let origin = zt.origin.to_lower();
        let mut all = records;
        if let Some(extra) = derived.get(&origin) {
            // Derived names own their node: the zone file must not hold records there.
            for d in extra {
                let clash = all
                    .iter()
                    .find(|r| r.line > 0 && r.owner.to_lower() == d.owner);
                if let Some(c) = clash {
                    let msg = format!(
                        "{} is a derived name of the routing state and cannot also have records in the zone file",
                        d.owner
                    );
                    if !errors.iter().any(|e| e.message == msg) {
                        errors.push(ConfigError {
                            source: zt.source.clone(),
                            line: Some(c.line),
                            message: msg,
                        });
                    }
                }
            }
            all.extend(extra.iter().cloned());
        }
        if !errors.is_empty() {
            continue;
        }
        let mut dynamic: Vec<Name> = services_by_name
            .keys()
            .map(|k| Name::from_wire_unchecked(k))
            .filter(|n| n.is_subdomain_of(&origin))
            .collect();
        dynamic.sort();
        // First build with the file's serial to learn the content hash.
        let built = match Zone::build_with(&zt.origin, &all, None, &dynamic) {
            Ok(z) => z,
            Err(issues) => {
                for i in issues {
                    errors.push(ConfigError {
                        source: zt.source.clone(),
                        line: Some(i.line),
                        message: i.message,
                    });
                }
                continue;
            }
        };
        let key: Box<[u8]> = origin.wire().into();
        let old = prev.and_then(|p| p.zones.get(&key));
        let floor = serial_floor.get(&origin.to_string()).copied();
        let file_serial = built.serial;
        // In etcd mode the serial after a change is the file's serial plus
        // the newest revision of the keys that feed the zone, so every edge
        // reading the same revision computes the same serial.
        let candidate = etcd_serial(inputs, routing.as_ref(), &origin, &zt.source, file_serial)
            .unwrap_or(file_serial);
        let serial = match old {
            // Unchanged content keeps its serial (and its built zone),
            // unless etcd's revision says otherwise (see above).
            Some(o)
                if o.content_hash == built.content_hash
                    && !(inputs.etcd.is_some() && serial_gt(candidate, o.serial)) =>
            {
                zones.insert(key, o.clone());
                continue;
            }
            Some(o) => {
                if serial_gt(candidate, o.serial) {
                    candidate
                } else {
                    o.serial.wrapping_add(1)
                }
            }
            // After a restart: the last serial served and its content.
            None => match floor {
                Some((f, _)) if !serial_gt(f, candidate) => candidate,
                Some((f, hash)) if hash == built.content_hash => f,
                Some((f, _)) => f.wrapping_add(1),
                None => candidate,
            },
        };
        let mut zone = built;
        if serial != file_serial {
            zone.set_serial(serial);
        }
        zone.input_fingerprint = fp;
        zones.insert(key, Arc::new(zone));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Snapshot {
        revision: inputs.revision,
        kind: inputs.kind,
        zones,
        routing: routing.expect("no errors means routing compiled"),
        services_by_name,
        raw_state: raw,
        published: SystemTime::now(),
    })
}
