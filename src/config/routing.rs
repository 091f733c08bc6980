//! The compiled routing state: environments, services and their rules, and
//! rule evaluation for a described client.
//!
//! Built once per snapshot by [`Routing::compile`] from a
//! [`crate::config::state::RawState`]; immutable afterwards.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::cohort::{self, VersionRange};
use crate::config::state::{
    RawEnvironment, RawMaintenance, RawRule, RawService, RawState, RawStatus, RawUpdateFields,
    RawUpdateOverride, StateError,
};
use crate::proto::name::{Name, NameError};

/// Client platforms a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Platform {
    Android,
    Ios,
    Web,
    Other,
}

impl Platform {
    /// `android`, `ios`, `web` or `other`, any case.
    pub(crate) fn parse(s: &str) -> Option<Platform> {
        [
            ("android", Platform::Android),
            ("ios", Platform::Ios),
            ("web", Platform::Web),
            ("other", Platform::Other),
        ]
        .into_iter()
        .find_map(|(name, p)| s.eq_ignore_ascii_case(name).then_some(p))
    }
}

/// An environment's maintenance window, as shown to SDKs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Maintenance {
    /// RFC 3339 time it is expected to end (informational).
    pub(crate) until: Option<String>,
    /// Shown to users.
    pub(crate) message: Option<String>,
}

/// A backend environment: where its names point and what SDKs sent there
/// are told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Environment {
    /// Its key in the state (`prod`).
    pub(crate) name: String,
    /// Backend version served (`v0`, `v1`).
    pub(crate) backend_version: String,
    /// DNS names answered with its addresses (lower case).
    pub(crate) names: Vec<Name>,
    /// IPv4 addresses.
    pub(crate) v4: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub(crate) v6: Vec<Ipv6Addr>,
    /// The same addresses as RDATA, for DNS answers.
    pub(crate) v4_rdata: Vec<[u8; 4]>,
    pub(crate) v6_rdata: Vec<[u8; 16]>,
    /// Base URL SDKs use.
    pub(crate) api_base_url: String,
    /// Some while the environment is in maintenance.
    pub(crate) maintenance: Option<Maintenance>,
    /// Bumped to make every SDK of this environment refresh its token.
    pub(crate) token_epoch: u64,
    /// Its health check, if declared.
    pub(crate) health: Option<Health>,
    /// Indexes of the environments that take its clients while it is down,
    /// in order of preference (same backend version, checked).
    pub(crate) failover: Vec<usize>,
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Health {
    /// `host:port` to connect to.
    pub(crate) addr: String,
    /// The request target (`/healthz`).
    pub(crate) path: String,
    /// The URL as written (for logs and `status`).
    pub(crate) url: String,
    pub(crate) interval: std::time::Duration,
    pub(crate) timeout: std::time::Duration,
    pub(crate) expect_status: u16,
    pub(crate) healthy_after: u32,
    pub(crate) unhealthy_after: u32,
}

/// Update policy fields after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UpdateFields {
    /// Newest SDK version (update recommended below it).
    pub(crate) latest_version: Option<semver::Version>,
    /// Oldest SDK version allowed (update required below it).
    pub(crate) min_version: Option<semver::Version>,
    /// Basis points of clients the minimum applies to (None = everyone).
    pub(crate) min_version_bp: Option<u16>,
    /// Where to get the update.
    pub(crate) url: Option<String>,
    /// Shown with the update.
    pub(crate) message: Option<String>,
}

/// Update fields for a platform and/or app id; the most specific wins.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpdateOverride {
    /// The platform it applies to, if limited to one.
    pub(crate) platform: Option<Platform>,
    /// The app id it applies to, if limited to one.
    pub(crate) app_id: Option<String>,
    /// The fields it sets.
    pub(crate) fields: UpdateFields,
}

/// A routing rule: matchers that must all hold, and the environment the
/// clients it matches use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    /// Unique within its service.
    pub(crate) name: String,
    /// Cohort salt for percent matchers.
    pub(crate) salt: String,
    /// SDK versions it matches.
    pub(crate) sdk_version: Option<VersionRange>,
    /// Platforms it matches (empty: any).
    pub(crate) platforms: Vec<Platform>,
    /// App ids it matches (empty: any).
    pub(crate) app_ids: Vec<String>,
    /// Client ids it matches (empty: any).
    pub(crate) client_ids: HashSet<String>,
    /// Source networks it matches (empty: any).
    pub(crate) networks: Vec<IpNet>,
    /// Basis points (0..=10000).
    pub(crate) percent: Option<u16>,
    /// Index into [`Routing::environments`].
    pub(crate) environment: usize,
    /// Update fields that override the service's for these clients.
    pub(crate) update: Option<UpdateFields>,
}

impl Service {
    /// True when the DNS answer can depend on the client network: a rule
    /// that DNS evaluates, before the default, has a CIDR or percent matcher.
    pub(crate) fn dns_depends_on_network(&self) -> bool {
        self.rules
            .iter()
            .filter(|r| !r.needs_client_facts())
            .any(|r| !r.networks.is_empty() || r.percent.is_some())
    }
}

impl Rule {
    /// Needs facts DNS never has (platform, app id, client id).
    pub(crate) fn needs_client_facts(&self) -> bool {
        !self.platforms.is_empty() || !self.app_ids.is_empty() || !self.client_ids.is_empty()
    }
    /// Matches every client (a default rule).
    pub(crate) fn is_match_all(&self) -> bool {
        self.sdk_version.is_none()
            && !self.needs_client_facts()
            && self.networks.is_empty()
            && self.percent.is_none()
    }
}

/// A service: the shared hostnames SDKs hard-code, and the rules that
/// route its clients to environments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Service {
    /// Its key in the state (`vdh-api`).
    pub(crate) name: String,
    /// Shared hostnames (lower case).
    pub(crate) hostnames: Vec<Name>,
    /// The SDK version DNS answers as (clients that only see DNS).
    pub(crate) legacy_sdk_version: semver::Version,
    /// TTL of DNS answers for the hostnames.
    pub(crate) ttl: u32,
    /// Base refresh interval of the config document, in seconds.
    pub(crate) refresh_s: u32,
    /// Ordered rules; the last matches everyone.
    pub(crate) rules: Vec<Rule>,
    /// Update policy for every client.
    pub(crate) update: UpdateFields,
    /// Per-platform/app update policy.
    pub(crate) overrides: Vec<UpdateOverride>,
}

/// The compiled routing state.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Routing {
    /// The state allows a change that removes every service or zone.
    pub(crate) allow_empty: bool,
    /// Environments, in name order (rules refer to them by index).
    pub(crate) environments: Vec<Environment>,
    /// Services, in name order.
    pub(crate) services: Vec<Service>,
    service_index: rustc_hash::FxHashMap<String, usize>,
    /// App ids the state names (in rules and update overrides): the census
    /// counts only these by name.
    app_ids: rustc_hash::FxHashSet<String>,
}

/// What a client is, as far as rules can tell.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client<'a> {
    /// The SDK version it runs.
    pub(crate) sdk_version: Option<&'a semver::Version>,
    /// Its platform.
    pub(crate) platform: Option<Platform>,
    /// Its app id.
    pub(crate) app_id: Option<&'a str>,
    /// Its client id (the key of percent matchers over HTTP).
    pub(crate) client_id: Option<&'a str>,
    /// Source address for CIDR matchers.
    pub(crate) addr: Option<IpAddr>,
    /// Key for percent matchers when there is no client id (DNS: the
    /// client network).
    pub(crate) network_key: Option<&'a [u8]>,
}

/// TTL of the A/AAAA answers for environment names.
pub(crate) const ENV_NAME_TTL: u32 = 60;

fn name_of(text: &str) -> Result<Name, NameError> {
    let t = text.trim();
    let abs = if t.ends_with('.') {
        t.to_string()
    } else {
        format!("{t}.")
    };
    Name::parse(&abs, None).map(|n| n.to_lower())
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
                errors.push(StateError::new(format!("{path}.{key}"), m.to_string()));
                None
            }
        })
    };
    out.latest_version = version(&f.latest_version, "latest_version");
    out.min_version = version(&f.min_version, "min_version");
    if let Some(p) = &f.min_version_percent {
        match cohort::parse_percent(p) {
            Ok(bp) => out.min_version_bp = Some(bp),
            Err(m) => errors.push(StateError::new(
                format!("{path}.min_version_percent"),
                m.to_string(),
            )),
        }
    }
    out
}

/// What validation carries from one part of the state to the next.
struct Validator<'a> {
    zone_origins: &'a [Name],
    /// Environment indexes by name, for rules.
    env_index: HashMap<&'a str, usize>,
    /// Every DNS name the state answers, to catch duplicates.
    names_seen: HashMap<Name, String>,
    errors: Vec<StateError>,
}

impl<'a> Validator<'a> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(StateError::new(path, message));
    }

    fn environment(&mut self, ename: &'a str, e: &RawEnvironment) -> Environment {
        let p = format!("environments.{ename}");
        if !valid_key(ename) {
            self.error(
                &p,
                "environment names may use only letters, digits, '-', '_' and '.'",
            );
        }
        if e.backend_version.trim().is_empty() {
            self.error(format!("{p}.backend_version"), "must not be empty");
        }
        let names = self.dns_names(&e.names, &format!("{p}.names"), &p);
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, a) in e.addresses.iter().enumerate() {
            match a.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(x)) => v4.push(x),
                Ok(IpAddr::V6(x)) => v6.push(x),
                Err(_) => self.error(
                    format!("{p}.addresses[{i}]"),
                    format!("'{a}' is not an IP address"),
                ),
            }
        }
        if e.addresses.is_empty() {
            self.error(
                format!("{p}.addresses"),
                "an environment needs at least one address",
            );
        }
        match url_host(&e.api_base_url) {
            Some(host) => match name_of(host) {
                Ok(h) if names.contains(&h) => {}
                _ => self.error(
                    format!("{p}.api_base_url"),
                    format!(
                        "host '{host}' must be one of this environment's names ({})",
                        e.names.join(", ")
                    ),
                ),
            },
            None => self.error(
                format!("{p}.api_base_url"),
                format!("'{}' is not an http(s) URL", e.api_base_url),
            ),
        }
        let maintenance = match e.status {
            RawStatus::Serving => None,
            RawStatus::Maintenance => {
                let m = e.maintenance.clone().unwrap_or(RawMaintenance {
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
            self.error(
                format!("{p}.maintenance.until"),
                format!("'{until}' is not an RFC 3339 time such as 2026-12-01T06:00:00Z"),
            );
        }
        let health = e
            .health
            .as_ref()
            .and_then(|h| self.health(&format!("{p}.health"), h));
        self.env_index.insert(ename, self.env_index.len());
        Environment {
            name: ename.to_string(),
            backend_version: e.backend_version.clone(),
            names,
            v4_rdata: v4.iter().map(Ipv4Addr::octets).collect(),
            v6_rdata: v6.iter().map(Ipv6Addr::octets).collect(),
            v4,
            v6,
            api_base_url: e.api_base_url.clone(),
            maintenance,
            token_epoch: e.token_epoch,
            health,
            failover: Vec::new(),
        }
    }

    /// Resolves every environment's `failover:` list once all environments
    /// are known: each target must exist, differ from the environment,
    /// appear once, and serve the same backend version (a client sent to
    /// another generation's backend breaks).
    fn failovers(&mut self, raw: &RawState, environments: &mut [Environment]) {
        for (ename, e) in &raw.environments {
            let Some(&i) = self.env_index.get(ename.as_str()) else {
                continue;
            };
            let mut targets = Vec::new();
            for (k, t) in e.failover.iter().enumerate() {
                let p = format!("environments.{ename}.failover[{k}]");
                let Some(&j) = self.env_index.get(t.as_str()) else {
                    let hint = super::did_you_mean(t, self.env_index.keys().copied());
                    self.error(p, format!("no environment named '{t}'{hint}"));
                    continue;
                };
                if j == i {
                    self.error(p, "an environment cannot fail over to itself");
                } else if targets.contains(&j) {
                    self.error(p, format!("'{t}' is listed twice"));
                } else if environments[j].backend_version != e.backend_version {
                    self.error(
                        p,
                        format!(
                            "'{t}' serves backend {}, '{ename}' serves {}: clients failed over there would break",
                            environments[j].backend_version, e.backend_version
                        ),
                    );
                } else {
                    targets.push(j);
                }
            }
            if !e.failover.is_empty() && e.health.is_none() {
                self.error(
                    format!("environments.{ename}.failover"),
                    "failover needs a health check on this environment (health:)",
                );
            }
            environments[i].failover = targets;
        }
    }

    /// Validates a health check: a plain `http://host:port/path` URL and
    /// sane counts and times.
    fn health(&mut self, p: &str, h: &crate::config::state::RawHealth) -> Option<Health> {
        let mut ok = true;
        let rest = h.url.strip_prefix("http://");
        let (addr, path) = match rest {
            Some(r) => match r.find('/') {
                Some(i) => (r[..i].to_string(), r[i..].to_string()),
                None => (r.to_string(), "/".to_string()),
            },
            None => (String::new(), String::new()),
        };
        let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0)
        });
        if !port_ok {
            self.error(
                format!("{p}.url"),
                format!(
                    "'{}' is not a plain http://host:port/path URL (probes do not speak TLS)",
                    h.url
                ),
            );
            ok = false;
        }
        if h.interval_s == 0 || h.interval_s > 3600 {
            self.error(format!("{p}.interval_s"), "must be from 1 to 3600 seconds");
            ok = false;
        }
        if h.timeout_ms < 10 || h.timeout_ms > h.interval_s.saturating_mul(1000) {
            self.error(
                format!("{p}.timeout_ms"),
                "must be at least 10 ms and at most the interval",
            );
            ok = false;
        }
        for (field, n) in [
            ("healthy_after", h.healthy_after),
            ("unhealthy_after", h.unhealthy_after),
        ] {
            if n == 0 || n > 100 {
                self.error(format!("{p}.{field}"), "must be from 1 to 100 probes");
                ok = false;
            }
        }
        ok.then(|| Health {
            addr,
            path,
            url: h.url.clone(),
            interval: std::time::Duration::from_secs(h.interval_s),
            timeout: std::time::Duration::from_millis(h.timeout_ms),
            expect_status: h.expect_status,
            healthy_after: h.healthy_after,
            unhealthy_after: h.unhealthy_after,
        })
    }

    fn service(&mut self, sname: &str, s: &RawService) -> Service {
        let p = format!("services.{sname}");
        if !valid_key(sname) {
            self.error(
                &p,
                "service names may use only letters, digits, '-', '_' and '.'",
            );
        }
        let hostnames = self.dns_names(&s.hostnames, &format!("{p}.hostnames"), &p);
        if s.hostnames.is_empty() {
            self.error(
                format!("{p}.hostnames"),
                "a service needs at least one hostname",
            );
        }
        let legacy = match cohort::parse_version(&s.legacy_sdk_version) {
            Ok(v) => v,
            Err(m) => {
                self.error(format!("{p}.legacy_sdk_version"), m.to_string());
                semver::Version::new(0, 0, 0)
            }
        };
        if s.refresh_s == 0 {
            self.error(format!("{p}.refresh_s"), "must be at least 1 second");
        }
        let mut rules = Vec::new();
        // Whether each rule matches every client, counting a rule whose
        // matcher did not compile (a bad CIDR) as matching some: its error
        // is reported once, not again as "unreachable" rules after it.
        let mut match_all = Vec::new();
        let mut rule_names = BTreeSet::new();
        for (i, r) in s.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{i}]");
            if !rule_names.insert(r.name.clone()) {
                self.error(
                    format!("{rp}.name"),
                    format!("rule name '{}' is used twice in {sname}", r.name),
                );
            }
            let before = self.errors.len();
            let rule = self.rule(sname, &rp, r);
            let match_prefix = format!("{rp}.match");
            let bad_matcher = self.errors[before..]
                .iter()
                .any(|e| e.path.starts_with(&match_prefix));
            match_all.push(rule.is_match_all() && !bad_matcher);
            rules.push(rule);
        }
        match match_all.iter().position(|&m| m) {
            None => self.error(
                format!("{p}.rules"),
                "the service has no default rule: end the list with a rule without 'match'",
            ),
            Some(i) if i + 1 < rules.len() => self.error(
                format!("{p}.rules[{}]", i + 1),
                format!(
                    "unreachable: rule '{}' before it matches every client",
                    rules[i].name
                ),
            ),
            _ => {}
        }
        let update = compile_update(&s.update.fields, &format!("{p}.update"), &mut self.errors);
        let overrides = s
            .update
            .overrides
            .iter()
            .enumerate()
            .map(|(i, o)| self.update_override(&format!("{p}.update.overrides[{i}]"), o))
            .collect();
        Service {
            name: sname.to_string(),
            hostnames,
            legacy_sdk_version: legacy,
            ttl: s.ttl,
            refresh_s: s.refresh_s,
            rules,
            update,
            overrides,
        }
    }

    fn rule(&mut self, sname: &str, rp: &str, r: &RawRule) -> Rule {
        let m = &r.matcher;
        let sdk_version = m
            .sdk_version
            .as_ref()
            .and_then(|t| match VersionRange::parse(t) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(format!("{rp}.match.sdk_version"), e.to_string());
                    None
                }
            });
        let mut platforms = Vec::new();
        for (j, pl) in m.platforms.iter().enumerate() {
            match Platform::parse(pl) {
                Some(x) => platforms.push(x),
                None => self.error(
                    format!("{rp}.match.platforms[{j}]"),
                    format!("unknown platform '{pl}': use android, ios, web or other"),
                ),
            }
        }
        let mut networks = Vec::new();
        for (j, n) in m.networks.iter().enumerate() {
            match n.trim().parse::<IpNet>() {
                Ok(net) if net.trunc() == net => networks.push(net),
                Ok(net) => self.error(
                    format!("{rp}.match.networks[{j}]"),
                    format!("'{n}' has host bits set; did you mean {}?", net.trunc()),
                ),
                Err(_) => self.error(
                    format!("{rp}.match.networks[{j}]"),
                    format!("'{n}' is not a CIDR network"),
                ),
            }
        }
        let percent = m
            .percent
            .as_ref()
            .and_then(|t| match cohort::parse_percent(t) {
                Ok(bp) => Some(bp),
                Err(e) => {
                    self.error(format!("{rp}.match.percent"), e.to_string());
                    None
                }
            });
        let environment = if let Some(&i) = self.env_index.get(r.environment.as_str()) {
            i
        } else {
            let hint = super::did_you_mean(&r.environment, self.env_index.keys().copied());
            self.error(
                format!("{rp}.environment"),
                format!("unknown environment '{}'{hint}", r.environment),
            );
            0
        };
        let update = r
            .update
            .as_ref()
            .map(|u| compile_update(u, &format!("{rp}.update"), &mut self.errors));
        Rule {
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
        }
    }

    fn update_override(&mut self, op: &str, o: &RawUpdateOverride) -> UpdateOverride {
        let platform = o
            .platform
            .as_ref()
            .and_then(|pl| match Platform::parse(pl) {
                Some(x) => Some(x),
                None => {
                    self.error(format!("{op}.platform"), format!("unknown platform '{pl}'"));
                    None
                }
            });
        if o.platform.is_none() && o.app_id.is_none() {
            self.error(op, "an override needs a platform, an app_id or both");
        }
        UpdateOverride {
            platform,
            app_id: o.app_id.clone(),
            fields: compile_update(&o.fields, op, &mut self.errors),
        }
    }

    /// Validates DNS names of the state: syntax, inside a served zone, not
    /// used twice (`names_seen` maps each name to its owner's path).
    fn dns_names(&mut self, texts: &[String], path: &str, owner: &str) -> Vec<Name> {
        let mut out = Vec::new();
        for (i, n) in texts.iter().enumerate() {
            let at = format!("{path}[{i}]");
            match name_of(n) {
                Ok(name) => {
                    if !self.zone_origins.iter().any(|z| name.is_subdomain_of(z)) {
                        self.error(&at, format!("{name} is outside every served zone"));
                    }
                    if let Some(prev) = self.names_seen.insert(name.clone(), owner.to_string()) {
                        self.error(&at, format!("{name} is already used by {prev}"));
                    }
                    out.push(name);
                }
                Err(m) => self.error(&at, m.to_string()),
            }
        }
        out
    }
}

impl Routing {
    /// Validates and compiles a raw state. `zone_origins` are the served
    /// zones (lower-case); every DNS name of the state must fall in one.
    /// Every problem is reported, each with its document path.
    pub(crate) fn compile(
        raw: &RawState,
        zone_origins: &[Name],
    ) -> Result<Routing, Vec<StateError>> {
        let mut v = Validator {
            zone_origins,
            env_index: HashMap::new(),
            names_seen: HashMap::new(),
            errors: Vec::new(),
        };
        let mut environments: Vec<Environment> = raw
            .environments
            .iter()
            .map(|(name, e)| v.environment(name, e))
            .collect();
        v.failovers(raw, &mut environments);
        let services: Vec<Service> = raw
            .services
            .iter()
            .map(|(name, s)| v.service(name, s))
            .collect();
        if !v.errors.is_empty() {
            return Err(v.errors);
        }
        let service_index = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let app_ids = services
            .iter()
            .flat_map(|s| {
                let in_rules = s.rules.iter().flat_map(|r| r.app_ids.iter());
                in_rules.chain(s.overrides.iter().filter_map(|o| o.app_id.as_ref()))
            })
            .cloned()
            .collect();
        Ok(Routing {
            allow_empty: raw.allow_empty,
            environments,
            services,
            service_index,
            app_ids,
        })
    }

    /// Sends the clients of every environment in `down` that names a
    /// failover to its first candidate not in `down` (its rules then
    /// point there, so DNS and documents follow together). Returns what
    /// happened per such environment: `Some(target)`, or `None` when every
    /// candidate is down too and the environment keeps its clients (fail
    /// open).
    pub(crate) fn fail_over(
        &mut self,
        down: &BTreeSet<String>,
    ) -> std::collections::BTreeMap<String, Option<String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut remap: Vec<usize> = (0..self.environments.len()).collect();
        for (i, env) in self.environments.iter().enumerate() {
            if env.failover.is_empty() || !down.contains(&env.name) {
                continue;
            }
            let target = env
                .failover
                .iter()
                .copied()
                .find(|&j| !down.contains(&self.environments[j].name));
            if let Some(j) = target {
                remap[i] = j;
            }
            out.insert(
                env.name.clone(),
                target.map(|j| self.environments[j].name.clone()),
            );
        }
        for svc in &mut self.services {
            for rule in &mut svc.rules {
                rule.environment = remap[rule.environment];
            }
        }
        out
    }

    /// True when the state names `app_id` in a rule or an update override.
    pub(crate) fn names_app_id(&self, app_id: &str) -> bool {
        self.app_ids.contains(app_id)
    }

    /// The service named `name`.
    pub(crate) fn service(&self, name: &str) -> Option<&Service> {
        self.service_index(name).map(|i| &self.services[i])
    }

    /// Where the service named `name` is in `services`.
    pub(crate) fn service_index(&self, name: &str) -> Option<usize> {
        self.service_index.get(name).copied()
    }
}

fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The host of an `http://` or `https://` URL.
pub(crate) fn url_host(url: &str) -> Option<&str> {
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

/// How a client asked, which decides what rules can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A DNS query: rules that need platform, app id or client id are
    /// skipped, and percent matchers hash the client network.
    OverDns,
    /// A config request: every matcher applies, and percent matchers hash
    /// the client id.
    OverHttp,
}

/// Which rule a client gets, and what was looked at to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Index of the rule in the service.
    pub(crate) rule: usize,
    /// Longest CIDR prefix among the rules evaluated up to the match.
    pub(crate) longest_cidr: u8,
    /// A percent matcher was evaluated.
    pub(crate) percent_evaluated: bool,
}

impl Service {
    /// Evaluates the rules in order for `client`, asked as `asked` says.
    /// Falls back to the last rule.
    pub(crate) fn decide(&self, client: &Client, asked: Asked) -> Decision {
        let dns = asked == Asked::OverDns;
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
environments:
  prod:
    backend_version: v0
    names: [prod.example.com]
    addresses: [192.0.2.10, 2001:db8::10]
    api_base_url: https://prod.example.com/api
  next:
    backend_version: v1
    names: [next.example.com]
    addresses: [192.0.2.20]
    api_base_url: https://next.example.com
services:
  api:
    hostnames: [api.example.com]
    legacy_sdk_version: 0.9.0
    rules:
      - name: new
        match: { sdk_version: '>=1.0.0' }
        environment: next
      - name: default
        environment: prod
";

    fn origins() -> Vec<Name> {
        vec![Name::parse("example.com.", None).unwrap()]
    }

    /// Compiles `yaml` and returns its errors as `path: message` lines.
    fn errors(yaml: &str) -> Vec<String> {
        let raw = crate::config::state::from_yaml(yaml).expect("valid YAML");
        match Routing::compile(&raw, &origins()) {
            Ok(_) => vec![],
            Err(es) => es.iter().map(ToString::to_string).collect(),
        }
    }

    fn has(errors: &[String], path: &str, fragment: &str) -> bool {
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(fragment))
    }

    #[test]
    fn compiles_a_valid_state() {
        let raw = crate::config::state::from_yaml(BASE).unwrap();
        let r = Routing::compile(&raw, &origins()).unwrap();
        assert_eq!(r.environments.len(), 2);
        let prod = &r.environments[r.service("api").unwrap().rules[1].environment];
        assert_eq!(prod.name, "prod");
        assert_eq!(prod.v4_rdata, vec![[192, 0, 2, 10]]);
        assert_eq!(prod.v6.len(), 1);
        assert_eq!(r.services[0].rules[0].salt, "api/new", "default salt");
        assert!(r.service("nope").is_none());
    }

    #[test]
    fn reports_every_environment_problem_with_its_path() {
        let bad = BASE
            .replace("addresses: [192.0.2.20]", "addresses: [192.0.2.300]")
            .replace(
                "api_base_url: https://prod.example.com/api",
                "api_base_url: https://elsewhere.example.com",
            )
            .replace("names: [next.example.com]", "names: [next.example.org]")
            .replace("backend_version: v0", "backend_version: ' '");
        let e = errors(&bad);
        assert!(
            has(&e, "environments.next.addresses[0]", "not an IP address"),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "environments.prod.api_base_url",
                "must be one of this environment's names"
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "environments.next.names[0]",
                "outside every served zone"
            ),
            "{e:?}"
        );
        assert!(
            has(&e, "environments.prod.backend_version", "must not be empty"),
            "{e:?}"
        );
        // next's URL host is no longer one of its (changed) names either.
        assert!(
            has(&e, "environments.next.api_base_url", "(next.example.org)"),
            "{e:?}"
        );
        assert_eq!(e.len(), 5, "{e:?}");
    }

    #[test]
    fn reports_rule_problems() {
        let bad = BASE
            .replace(
                "sdk_version: '>=1.0.0'",
                "sdk_version: '>=1.x', networks: [10.0.0.1/8], percent: '101'",
            )
            .replace("environment: next", "environment: nowhere");
        let e = errors(&bad);
        let r = "services.api.rules[0]";
        assert!(
            has(
                &e,
                &format!("{r}.match.sdk_version"),
                "not a SemVer version"
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                &format!("{r}.match.networks[0]"),
                "did you mean 10.0.0.0/8?"
            ),
            "{e:?}"
        );
        assert!(
            has(&e, &format!("{r}.match.percent"), "from 0 to 100"),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                &format!("{r}.environment"),
                "unknown environment 'nowhere'"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn needs_a_last_default_rule_and_no_unreachable_rules() {
        let no_default = BASE.replace("      - name: default\n        environment: prod\n", "");
        assert!(has(
            &errors(&no_default),
            "services.api.rules",
            "no default rule"
        ));
        let unreachable = BASE.replace(
            "      - name: new\n        match: { sdk_version: '>=1.0.0' }\n        environment: next\n",
            "",
        ) + "      - name: late\n        match: { platforms: [ios] }\n        environment: next\n";
        let e = errors(&unreachable);
        assert!(
            has(&e, "services.api.rules[1]", "unreachable: rule 'default'"),
            "{e:?}"
        );
        // A rule whose only matcher is a bad CIDR gets one error, not a
        // second "unreachable" for the rules after it.
        let bad_cidr = BASE.replace(
            "match: { sdk_version: '>=1.0.0' }",
            "match: { networks: [10.0.0.0/33] }",
        );
        let e = errors(&bad_cidr);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            has(&e, "services.api.rules[0].match.networks[0]", "not a CIDR"),
            "{e:?}"
        );
        // An unknown environment names the closest known one.
        let typo = BASE.replace("environment: next", "environment: nxet");
        assert!(
            has(
                &errors(&typo),
                "services.api.rules[0].environment",
                "did you mean 'next'?"
            ),
            "{:?}",
            errors(&typo)
        );
        let twice = BASE.replace("name: new", "name: default");
        assert!(has(
            &errors(&twice),
            "services.api.rules[1].name",
            "used twice"
        ));
    }

    #[test]
    fn a_dns_name_is_used_once() {
        let dup = BASE.replace(
            "hostnames: [api.example.com]",
            "hostnames: [prod.example.com]",
        );
        let e = errors(&dup);
        assert!(
            has(
                &e,
                "services.api.hostnames[0]",
                "already used by environments.prod"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn dns_skips_rules_that_need_client_facts() {
        let state = BASE.replace(
            "        match: { sdk_version: '>=1.0.0' }",
            "        match: { app_ids: [shop] }",
        );
        let raw = crate::config::state::from_yaml(&state).unwrap();
        let r = Routing::compile(&raw, &origins()).unwrap();
        let svc = r.service("api").unwrap();
        let client = Client {
            app_id: Some("shop"),
            ..Default::default()
        };
        assert_eq!(svc.decide(&client, Asked::OverHttp).rule, 0);
        assert_eq!(svc.decide(&client, Asked::OverDns).rule, 1);
        assert!(!svc.dns_depends_on_network());
        assert!(r.names_app_id("shop"));
        assert!(!r.names_app_id("made-up"));
    }
}
