//! The compiled routing state: environments, services and their rules, and
//! rule evaluation for a described client.
//!
//! Built once per snapshot by [`Routing::compile`] from a
//! [`crate::state::RawState`]; immutable afterwards.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::cohort::{self, VersionRange};
use crate::dns::name::Name;
use crate::state::{RawState, RawStatus, RawUpdateFields, StateError};

/// Client platforms a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Android,
    Ios,
    Web,
    Other,
}

impl Platform {
    pub fn parse(s: &str) -> Option<Platform> {
        match s.to_ascii_lowercase().as_str() {
            "android" => Some(Platform::Android),
            "ios" => Some(Platform::Ios),
            "web" => Some(Platform::Web),
            "other" => Some(Platform::Other),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    pub until: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub backend_version: String,
    pub names: Vec<Name>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    /// The same addresses as RDATA, for DNS answers.
    pub v4_rdata: Vec<[u8; 4]>,
    pub v6_rdata: Vec<[u8; 16]>,
    pub api_base_url: String,
    /// Some while the environment is in maintenance.
    pub maintenance: Option<Maintenance>,
    pub token_epoch: u64,
}

/// Update policy fields after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateFields {
    pub latest_version: Option<semver::Version>,
    pub min_version: Option<semver::Version>,
    /// Basis points of clients the minimum applies to (None = everyone).
    pub min_version_bp: Option<u16>,
    pub url: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpdateOverride {
    pub platform: Option<Platform>,
    pub app_id: Option<String>,
    pub fields: UpdateFields,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub salt: String,
    pub sdk_version: Option<VersionRange>,
    pub platforms: Vec<Platform>,
    pub app_ids: Vec<String>,
    pub client_ids: HashSet<String>,
    pub networks: Vec<IpNet>,
    /// Basis points (0..=10000).
    pub percent: Option<u16>,
    /// Index into [`Routing::environments`].
    pub environment: usize,
    pub update: Option<UpdateFields>,
}

impl Service {
    /// True when the DNS answer can depend on the client network: a rule
    /// that DNS evaluates, before the default, has a CIDR or percent matcher.
    pub fn dns_depends_on_network(&self) -> bool {
        self.rules
            .iter()
            .filter(|r| !r.needs_client_facts())
            .any(|r| !r.networks.is_empty() || r.percent.is_some())
    }
}

impl Rule {
    /// Needs facts DNS never has (platform, app id, client id).
    pub fn needs_client_facts(&self) -> bool {
        !self.platforms.is_empty() || !self.app_ids.is_empty() || !self.client_ids.is_empty()
    }
    pub fn is_match_all(&self) -> bool {
        self.sdk_version.is_none()
            && !self.needs_client_facts()
            && self.networks.is_empty()
            && self.percent.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub hostnames: Vec<Name>,
    pub legacy_sdk_version: semver::Version,
    pub ttl: u32,
    pub refresh_s: u32,
    pub rules: Vec<Rule>,
    pub update: UpdateFields,
    pub overrides: Vec<UpdateOverride>,
}

/// The compiled routing state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub allow_empty: bool,
    pub environments: Vec<Environment>,
    pub services: Vec<Service>,
    service_index: HashMap<String, usize>,
}

/// What a client is, as far as rules can tell.
#[derive(Debug, Clone, Default)]
pub struct Client<'a> {
    pub sdk_version: Option<&'a semver::Version>,
    pub platform: Option<Platform>,
    pub app_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    /// Source address for CIDR matchers.
    pub addr: Option<IpAddr>,
    /// Key for percent matchers when there is no client id (DNS: the
    /// client network).
    pub network_key: Option<&'a [u8]>,
}

/// TTL of the A/AAAA answers for environment names.
pub const ENV_NAME_TTL: u32 = 60;

fn name_of(text: &str) -> Result<Name, String> {
    let t = text.trim();
    let abs = if t.ends_with('.') {
        t.to_string()
    } else {
        format!("{t}.")
    };
    Name::parse(&abs, None)
        .map(|n| n.to_lower())
        .map_err(|e| e.to_string())
}

fn looks_like_rfc3339(s: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)) {
        return false;
    }
    if !(matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let (mo, d, h, mi, se) = (&s[5..7], &s[8..10], &s[11..13], &s[14..16], &s[17..19]);
    let num = |x: &str| x.parse::<u32>().unwrap_or(99);
    if !(1..=12).contains(&num(mo))
        || !(1..=31).contains(&num(d))
        || num(h) > 23
        || num(mi) > 59
        || num(se) > 60
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == st {
            return false;
        }
    }
    match &s[i..] {
        "Z" | "z" => true,
        tz => {
            let t = tz.as_bytes();
            t.len() == 6
                && matches!(t[0], b'+' | b'-')
                && t[1..3].iter().all(u8::is_ascii_digit)
                && t[3] == b':'
                && t[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}

fn compile_update(f: &RawUpdateFields, path: &str, errors: &mut Vec<StateError>) -> UpdateFields {
    let mut out = UpdateFields {
        url: f.url.clone(),
        message: f.message.clone(),
        ..Default::default()
    };
    let mut version = |v: &Option<String>, key: &str| {
        v.as_ref().and_then(|t| match cohort::parse_version(t) {
            Ok(v) => Some(v),
            Err(m) => {
                errors.push(StateError::new(format!("{path}.{key}"), m));
                None
            }
        })
    };
    out.latest_version = version(&f.latest_version, "latest_version");
    out.min_version = version(&f.min_version, "min_version");
    if let Some(p) = &f.min_version_percent {
        match cohort::parse_percent(p) {
            Ok(bp) => out.min_version_bp = Some(bp),
            Err(m) => errors.push(StateError::new(format!("{path}.min_version_percent"), m)),
        }
    }
    out
}

impl Routing {
    /// Validates and compiles a raw state. `zone_origins` are the served
    /// zones (lower-case); every DNS name of the state must fall in one.
    pub fn compile(raw: &RawState, zone_origins: &[Name]) -> Result<Routing, Vec<StateError>> {
        let mut errors = Vec::new();
        let mut env_index: HashMap<&str, usize> = HashMap::new();
        let mut environments = Vec::new();
        // Every DNS name the state answers, to catch duplicates.
        let mut names_seen: HashMap<Name, String> = HashMap::new();
        for (ename, e) in &raw.environments {
            let p = format!("environments.{ename}");
            if !valid_key(ename) {
                errors.push(StateError::new(
                    &p,
                    "environment names may use only letters, digits, '-', '_' and '.'",
                ));
            }
            if e.backend_version.trim().is_empty() {
                errors.push(StateError::new(
                    format!("{p}.backend_version"),
                    "must not be empty",
                ));
            }
            let names = dns_names(
                &e.names,
                &format!("{p}.names"),
                &p,
                zone_origins,
                &mut names_seen,
                &mut errors,
            );
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for (i, a) in e.addresses.iter().enumerate() {
                match a.trim().parse::<IpAddr>() {
                    Ok(IpAddr::V4(x)) => v4.push(x),
                    Ok(IpAddr::V6(x)) => v6.push(x),
                    Err(_) => errors.push(StateError::new(
                        format!("{p}.addresses[{i}]"),
                        format!("'{a}' is not an IP address"),
                    )),
                }
            }
            if e.addresses.is_empty() {
                errors.push(StateError::new(
                    format!("{p}.addresses"),
                    "an environment needs at least one address",
                ));
            }
            match url_host(&e.api_base_url) {
                Some(host) => match name_of(host) {
                    Ok(h) if names.contains(&h) => {}
                    _ => errors.push(StateError::new(
                        format!("{p}.api_base_url"),
                        format!(
                            "host '{host}' must be one of this environment's names ({})",
                            e.names.join(", ")
                        ),
                    )),
                },
                None => errors.push(StateError::new(
                    format!("{p}.api_base_url"),
                    format!("'{}' is not an http(s) URL", e.api_base_url),
                )),
            }
            let maintenance = match e.status {
                RawStatus::Serving => None,
                RawStatus::Maintenance => {
                    let m = e
                        .maintenance
                        .clone()
                        .unwrap_or(crate::state::RawMaintenance {
                            until: None,
                            message: None,
                        });
                    Some(Maintenance {
                        until: m.until,
                        message: m.message,
                    })
                }
            };
            if let Some(until) = e.maintenance.as_ref().and_then(|m| m.until.as_ref())
                && !looks_like_rfc3339(until)
            {
                errors.push(StateError::new(
                    format!("{p}.maintenance.until"),
                    format!("'{until}' is not an RFC 3339 time such as 2026-12-01T06:00:00Z"),
                ));
            }
            env_index.insert(ename, environments.len());
            environments.push(Environment {
                name: ename.clone(),
                backend_version: e.backend_version.clone(),
                names,
                v4_rdata: v4.iter().map(|a| a.octets()).collect(),
                v6_rdata: v6.iter().map(|a| a.octets()).collect(),
                v4,
                v6,
                api_base_url: e.api_base_url.clone(),
                maintenance,
                token_epoch: e.token_epoch,
            });
        }
        let mut services = Vec::new();
        let mut service_index = HashMap::new();
        for (sname, s) in &raw.services {
            let p = format!("services.{sname}");
            if !valid_key(sname) {
                errors.push(StateError::new(
                    &p,
                    "service names may use only letters, digits, '-', '_' and '.'",
                ));
            }
            let hostnames = dns_names(
                &s.hostnames,
                &format!("{p}.hostnames"),
                &p,
                zone_origins,
                &mut names_seen,
                &mut errors,
            );
            if s.hostnames.is_empty() {
                errors.push(StateError::new(
                    format!("{p}.hostnames"),
                    "a service needs at least one hostname",
                ));
            }
            let legacy = match cohort::parse_version(&s.legacy_sdk_version) {
                Ok(v) => v,
                Err(m) => {
                    errors.push(StateError::new(format!("{p}.legacy_sdk_version"), m));
                    semver::Version::new(0, 0, 0)
                }
            };
            if s.refresh_s == 0 {
                errors.push(StateError::new(
                    format!("{p}.refresh_s"),
                    "must be at least 1 second",
                ));
            }
            let mut rules = Vec::new();
            let mut rule_names = BTreeSet::new();
            for (i, r) in s.rules.iter().enumerate() {
                let rp = format!("{p}.rules[{i}]");
                if !rule_names.insert(r.name.clone()) {
                    errors.push(StateError::new(
                        format!("{rp}.name"),
                        format!("rule name '{}' is used twice in {sname}", r.name),
                    ));
                }
                let m = &r.matcher;
                let sdk_version =
                    m.sdk_version
                        .as_ref()
                        .and_then(|t| match VersionRange::parse(t) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                errors.push(StateError::new(format!("{rp}.match.sdk_version"), e));
                                None
                            }
                        });
                let mut platforms = Vec::new();
                for (j, pl) in m.platforms.iter().enumerate() {
                    match Platform::parse(pl) {
                        Some(x) => platforms.push(x),
                        None => errors.push(StateError::new(
                            format!("{rp}.match.platforms[{j}]"),
                            format!("unknown platform '{pl}': use android, ios, web or other"),
                        )),
                    }
                }
                let mut networks = Vec::new();
                for (j, n) in m.networks.iter().enumerate() {
                    match n.trim().parse::<IpNet>() {
                        Ok(net) if net.trunc() == net => networks.push(net),
                        Ok(net) => errors.push(StateError::new(
                            format!("{rp}.match.networks[{j}]"),
                            format!("'{n}' has host bits set; did you mean {}?", net.trunc()),
                        )),
                        Err(_) => errors.push(StateError::new(
                            format!("{rp}.match.networks[{j}]"),
                            format!("'{n}' is not a CIDR network"),
                        )),
                    }
                }
                let percent = m
                    .percent
                    .as_ref()
                    .and_then(|t| match cohort::parse_percent(t) {
                        Ok(bp) => Some(bp),
                        Err(e) => {
                            errors.push(StateError::new(format!("{rp}.match.percent"), e));
                            None
                        }
                    });
                let environment = match env_index.get(r.environment.as_str()) {
                    Some(&i) => i,
                    None => {
                        errors.push(StateError::new(
                            format!("{rp}.environment"),
                            format!("unknown environment '{}'", r.environment),
                        ));
                        0
                    }
                };
                let update = r
                    .update
                    .as_ref()
                    .map(|u| compile_update(u, &format!("{rp}.update"), &mut errors));
                rules.push(Rule {
                    name: r.name.clone(),
                    salt: r
                        .salt
                        .clone()
                        .unwrap_or_else(|| format!("{sname}/{}", r.name)),
                    sdk_version,
                    platforms,
                    app_ids: m.app_ids.clone(),
                    client_ids: m.client_ids.iter().cloned().collect(),
                    networks,
                    percent,
                    environment,
                    update,
                });
            }
            match rules.iter().position(Rule::is_match_all) {
                None => errors.push(StateError::new(
                    format!("{p}.rules"),
                    "the service has no default rule: end the list with a rule without 'match'",
                )),
                Some(i) if i + 1 < rules.len() => errors.push(StateError::new(
                    format!("{p}.rules[{}]", i + 1),
                    format!(
                        "unreachable: rule '{}' before it matches every client",
                        rules[i].name
                    ),
                )),
                _ => {}
            }
            let update = compile_update(&s.update.fields, &format!("{p}.update"), &mut errors);
            let mut overrides = Vec::new();
            for (i, o) in s.update.overrides.iter().enumerate() {
                let op = format!("{p}.update.overrides[{i}]");
                let platform = o
                    .platform
                    .as_ref()
                    .and_then(|pl| match Platform::parse(pl) {
                        Some(x) => Some(x),
                        None => {
                            errors.push(StateError::new(
                                format!("{op}.platform"),
                                format!("unknown platform '{pl}'"),
                            ));
                            None
                        }
                    });
                if o.platform.is_none() && o.app_id.is_none() {
                    errors.push(StateError::new(
                        &op,
                        "an override needs a platform, an app_id or both",
                    ));
                }
                overrides.push(UpdateOverride {
                    platform,
                    app_id: o.app_id.clone(),
                    fields: compile_update(&o.fields, &op, &mut errors),
                });
            }
            service_index.insert(sname.clone(), services.len());
            services.push(Service {
                name: sname.clone(),
                hostnames,
                legacy_sdk_version: legacy,
                ttl: s.ttl,
                refresh_s: s.refresh_s,
                rules,
                update,
                overrides,
            });
        }
        if errors.is_empty() {
            Ok(Routing {
                allow_empty: raw.allow_empty,
                environments,
                services,
                service_index,
            })
        } else {
            Err(errors)
        }
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.service_index.get(name).map(|&i| &self.services[i])
    }
}

/// Validates DNS names of the state: syntax, inside a served zone, not
/// used twice (`seen` maps each name to its owner's path).
fn dns_names(
    texts: &[String],
    path: &str,
    owner: &str,
    zone_origins: &[Name],
    seen: &mut HashMap<Name, String>,
    errors: &mut Vec<StateError>,
) -> Vec<Name> {
    let mut out = Vec::new();
    for (i, n) in texts.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match name_of(n) {
            Ok(name) => {
                if !zone_origins.iter().any(|z| name.is_subdomain_of(z)) {
                    errors.push(StateError::new(
                        &at,
                        format!("{name} is outside every served zone"),
                    ));
                }
                if let Some(prev) = seen.insert(name.clone(), owner.to_string()) {
                    errors.push(StateError::new(
                        &at,
                        format!("{name} is already used by {prev}"),
                    ));
                }
                out.push(name);
            }
            Err(m) => errors.push(StateError::new(&at, m)),
        }
    }
    out
}

fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The host of an `http://` or `https://` URL.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    let host = match hostport.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    (!host.is_empty()).then_some(host)
}

/// Which rule a client gets, and what was looked at to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub rule: usize,
    /// Longest CIDR prefix among the rules evaluated up to the match.
    pub longest_cidr: u8,
    /// A percent matcher was evaluated.
    pub percent_evaluated: bool,
}

impl Service {
    /// Evaluates the rules in order for `client`. `dns` skips rules that need
    /// platform, app id or client id. Falls back to the last rule.
    pub fn decide(&self, client: &Client, dns: bool) -> Decision {
        let mut d = Decision {
            rule: self.rules.len() - 1,
            longest_cidr: 0,
            percent_evaluated: false,
        };
        for (i, r) in self.rules.iter().enumerate() {
            if dns && r.needs_client_facts() {
                continue;
            }
            if let Some(range) = &r.sdk_version {
                match client.sdk_version {
                    Some(v) if range.matches(v) => {}
                    _ => continue,
                }
            }
            if !r.platforms.is_empty() && !client.platform.is_some_and(|p| r.platforms.contains(&p))
            {
                continue;
            }
            if !r.app_ids.is_empty()
                && !client
                    .app_id
                    .is_some_and(|a| r.app_ids.iter().any(|x| x == a))
            {
                continue;
            }
            if !r.client_ids.is_empty()
                && !client.client_id.is_some_and(|c| r.client_ids.contains(c))
            {
                continue;
            }
            if !r.networks.is_empty() {
                let longest = r.networks.iter().map(IpNet::prefix_len).max().unwrap_or(0);
                d.longest_cidr = d.longest_cidr.max(longest);
                if !client
                    .addr
                    .is_some_and(|a| r.networks.iter().any(|n| n.contains(&a)))
                {
                    continue;
                }
            }
            if let Some(bp) = r.percent {
                d.percent_evaluated = true;
                let key: Option<&[u8]> = if dns {
                    client.network_key
                } else {
                    client.client_id.map(str::as_bytes)
                };
                let inside = bp >= 10_000 || key.is_some_and(|k| cohort::bucket(&r.salt, k) < bp);
                if !inside {
                    continue;
                }
            }
            d.rule = i;
            return d;
        }
        d
    }
}
