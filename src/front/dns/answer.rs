//! The authoritative answer algorithm (RFC 1034 §4.3.2 with RFC 2308
//! negative answers, RFC 4592 wildcards, RFC 8482 minimal ANY), shaped to
//! give what Knot DNS gives for the same zone.
//!
//! It reads only compiled structures ([`crate::config::zone::Zone`]) and writes
//! straight into the response buffer: no parsing and no allocation per query.

use super::Network;
use crate::config::routing::{Asked, Client, Decision, Environment, Service};
use crate::config::snapshot::Snapshot;
use crate::config::zone::{Node, Target, Zone};
use crate::proto::name::{Name, suffix_offsets};
use crate::proto::types::*;
use crate::proto::wire::{ClientSubnet, Section, Writer};

/// Longest CNAME chain followed inside one answer (Knot follows 5 links).
pub(crate) const MAX_CNAME_CHAIN: usize = 5;

/// Finds the zone that holds `qname_lower`: the longest origin that is a
/// suffix of it.
///
/// A DS RRset lives on the parent side of a zone cut, so a DS question for
/// the apex of a served zone goes to the parent zone when that is served too.
pub(crate) fn find_zone<'z>(
    zones: &'z crate::config::snapshot::Zones,
    qname_lower: &[u8],
    qtype: u16,
) -> Option<&'z Zone> {
    let mut offs = [0u8; 128];
    let n = suffix_offsets(qname_lower, &mut offs);
    let skip = usize::from(
        qtype == DS
            && n > 0
            && zones.contains_key(qname_lower)
            && has_parent_zone(zones, &qname_lower[1 + qname_lower[0] as usize..]),
    );
    for &o in &offs[skip..n] {
        if let Some(z) = zones.get(&qname_lower[o as usize..]) {
            return Some(z);
        }
    }
    zones.get(&[0u8][..]).map(|z| &**z)
}

fn has_parent_zone(zones: &crate::config::snapshot::Zones, name: &[u8]) -> bool {
    let mut offs = [0u8; 128];
    let n = suffix_offsets(name, &mut offs);
    offs[..n]
        .iter()
        .any(|&o| zones.contains_key(&name[o as usize..]))
        || zones.contains_key(&[0u8][..])
}

enum Found<'z> {
    /// The name exists (possibly as an empty non-terminal).
    Exact(&'z Node),
    /// A zone cut at or above the name.
    Cut(&'z Node),
    /// The name does not exist; its closest encloser is given.
    Missing(&'z Node),
}

/// Walks from the apex down to `name`, stopping at the first zone cut.
fn find<'z>(zone: &'z Zone, name: &[u8], qtype: u16) -> Found<'z> {
    let mut offs = [0u8; 128];
    let n = suffix_offsets(name, &mut offs);
    let apex_labels = zone.origin.label_count();
    let below = n - apex_labels;
    let mut encloser = zone.apex();
    // Suffixes from just below the apex down to the name itself.
    for k in (0..below).rev() {
        let suffix = &name[offs[k] as usize..];
        match zone.lookup(suffix) {
            Some(node) => {
                if node.delegation && !(k == 0 && qtype == DS) {
                    return Found::Cut(node);
                }
                encloser = node;
            }
            None => return Found::Missing(encloser),
        }
    }
    Found::Exact(encloser)
}

/// Writes the A and AAAA RRsets of the given nodes into the additional
/// section; what does not fit is left out without setting TC.
/// For each target, A then AAAA; when A does not fit, that target's AAAA is
/// skipped and the next target is tried (as Knot does). Returns false when
/// a target below `required_below` (mandatory glue of a referral) did not fit.
fn additional(
    w: &mut Writer,
    zone: &Zone,
    targets: &[Target],
    required_below: Option<&[u8]>,
) -> bool {
    let mut ok = true;
    for t in targets {
        let node = zone.node(t.node);
        let owner = t.owner.as_deref().or(node.owner.as_ref().map(Name::wire));
        for rtype in [A, AAAA] {
            if let Some(set) = node.get(rtype)
                && w.rrset(Section::Additional, owner, rtype, set.ttl, set.rdata_iter())
                    .is_err()
            {
                if let (Some(cut), Some(o)) = (required_below, owner)
                    && crate::proto::name::is_subdomain(o, cut)
                {
                    ok = false;
                }
                break;
            }
        }
    }
    ok
}

/// The wildcard node `*.<encloser>`, looked up without allocating.
fn wildcard_of<'z>(zone: &'z Zone, encloser: &Node) -> Option<&'z Node> {
    let owner = encloser.owner.as_ref()?.wire();
    if owner.len() + 2 > 255 {
        return None;
    }
    let mut key = [0u8; 255];
    key[0] = 1;
    key[1] = b'*';
    key[2..2 + owner.len()].copy_from_slice(owner);
    crate::proto::name::lower_in_place(&mut key[2..2 + owner.len()]);
    zone.lookup(&key[..2 + owner.len()])
}

/// The SOA of a negative answer; left out silently when it does not fit.
fn negative(w: &mut Writer, zone: &Zone) {
    let soa = zone.soa();
    let _ = w.rrset(
        Section::Authority,
        Some(zone.origin.wire()),
        SOA,
        zone.negative_ttl,
        soa.rdata_iter(),
    );
}

/// The rule DNS picks for a service hostname asked from `net` (as a client
/// running the service's `legacy_sdk_version`), and the ECS scope that
/// decision implies: the longest CIDR prefix evaluated, raised to 24 | 56
/// when a percent matcher was evaluated; 0 for an ECS source prefix of 0.
pub(crate) fn decide_for_network(svc: &Service, net: &Network) -> (Decision, u8) {
    let client = Client {
        sdk_version: Some(&svc.legacy_sdk_version),
        addr: Some(net.addr),
        network_key: Some(net.key()),
        ..Default::default()
    };
    let d = svc.decide(&client, Asked::OverDns);
    let mut scope = d.longest_cidr;
    if d.percent_evaluated {
        scope = scope.max(if net.addr.is_ipv4() { 24 } else { 56 });
    }
    if net.zero_scope {
        scope = 0;
    }
    (d, scope)
}

/// Per-query answers for service hostnames: the routing state and the
/// client network, and the ECS scope the answer ends up depending on.
pub(crate) struct Dynamic<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) src: std::net::IpAddr,
    pub(crate) ecs: Option<ClientSubnet>,
    /// Worked out on first use: most answers never need it.
    net: Option<Network>,
    /// Largest scope of any network-dependent decision in this answer.
    pub(crate) scope: u8,
}

impl<'a> Dynamic<'a> {
    pub(crate) fn new(
        snap: &'a Snapshot,
        src: std::net::IpAddr,
        ecs: Option<ClientSubnet>,
    ) -> Self {
        Dynamic {
            snap,
            src,
            ecs,
            net: None,
            scope: 0,
        }
    }

    /// True once the answer looked at the client network.
    pub(crate) fn used_network(&self) -> bool {
        self.net.is_some()
    }

    /// The client network (computed once).
    pub(crate) fn network(&mut self) -> &Network {
        let (src, ecs) = (self.src, self.ecs);
        self.net
            .get_or_insert_with(|| Network::new(src, ecs.as_ref()))
    }

    /// The environment a service hostname resolves to for this network,
    /// and the hostname's TTL. Raises `scope` as the rules looked at require.
    fn resolve(&mut self, name_lower: &[u8]) -> Option<(&'a Environment, u32)> {
        let snap = self.snap;
        let &i = snap.services_by_name.get(name_lower)?;
        let svc = &snap.routing.services[i];
        let (d, scope) = decide_for_network(svc, self.network());
        self.scope = self.scope.max(scope);
        Some((
            &snap.routing.environments[svc.rules[d.rule].environment],
            svc.ttl,
        ))
    }
}

/// Answers a question that falls in `zone`. The writer already holds the
/// question. Returns the rcode; sets AA and TC on the writer as due.
pub(crate) fn answer_in_zone(
    w: &mut Writer,
    zone: &Zone,
    qname_lower: &[u8],
    qtype: u16,
    dynamic: &mut Dynamic,
) -> u8 {
    // `sname` is the name being resolved: first the question, then CNAME
    // targets. `owner` is how to write it (None: pointer to the question).
    let mut sname_buf = [0u8; 255];
    let mut sname_len = qname_lower.len();
    sname_buf[..sname_len].copy_from_slice(qname_lower);
    let mut owner_buf = [0u8; 255];
    let mut owner_len = 0usize;
    let mut chain = 0;
    // CNAME RRsets already written (by node), and wildcard nodes already
    // used for a CNAME: meeting either again means a loop.
    let mut written: [*const Node; MAX_CNAME_CHAIN] = [std::ptr::null(); MAX_CNAME_CHAIN];
    let mut wild_seen: [*const Node; MAX_CNAME_CHAIN] = [std::ptr::null(); MAX_CNAME_CHAIN];
    w.set_aa();
    loop {
        let sname = &sname_buf[..sname_len];
        let owner = if chain == 0 {
            None
        } else {
            Some(&owner_buf[..owner_len])
        };
        let (node, synthesized) = match find(zone, sname, qtype) {
            Found::Cut(cut) => return referral(w, zone, cut, chain == 0),
            Found::Exact(node) => (node, false),
            Found::Missing(encloser) => match wildcard_of(zone, encloser) {
                Some(node) => (node, true),
                None => {
                    negative(w, zone);
                    return RCODE_NXDOMAIN;
                }
            },
        };
        // CNAME is not followed for ANY (minimal answer) nor for the types
        // that may sit beside a CNAME (RRSIG, NSEC).
        if !matches!(qtype, CNAME | ANY | RRSIG | NSEC)
            && let Some(cname) = node.get(CNAME)
        {
            let ptr = node as *const Node;
            if chain >= MAX_CNAME_CHAIN || (!synthesized && written[..chain].contains(&ptr)) {
                return RCODE_NOERROR;
            }
            if w.rrset(Section::Answer, owner, CNAME, cname.ttl, cname.rdata_iter())
                .is_err()
            {
                w.set_tc();
                return RCODE_NOERROR;
            }
            written[chain] = ptr;
            chain += 1;
            if synthesized {
                if wild_seen.contains(&ptr) {
                    return RCODE_NOERROR;
                }
                wild_seen[chain - 1] = ptr;
            }
            let target = &cname.rdatas[0][..];
            // Follow only inside this zone.
            if !crate::proto::name::is_subdomain(target, zone.origin.wire()) {
                return RCODE_NOERROR;
            }
            owner_len = target.len();
            owner_buf[..owner_len].copy_from_slice(target);
            sname_len = target.len();
            sname_buf[..sname_len].copy_from_slice(target);
            crate::proto::name::lower_in_place(&mut sname_buf[..sname_len]);
            continue;
        }
        if node.dynamic
            && matches!(qtype, A | AAAA | ANY)
            && let Some((env, ttl)) = dynamic.resolve(&sname_buf[..sname_len])
        {
            per_network(w, zone, owner, qtype, env, ttl);
            return RCODE_NOERROR;
        }
        // RFC 8482: for ANY one RRset suffices; take the lowest type.
        let set = if qtype == ANY {
            node.rrsets.first()
        } else {
            node.get(qtype)
        };
        match set {
            Some(set) => {
                if w.rrset(Section::Answer, owner, set.rtype, set.ttl, set.rdata_iter())
                    .is_err()
                {
                    w.set_tc();
                } else {
                    additional(w, zone, &set.targets, None);
                }
            }
            None => negative(w, zone),
        }
        return RCODE_NOERROR;
    }
}

/// A referral to the zone cut `cut`: its NS RRset in the authority section
/// and the glue that fits. AA is cleared unless a CNAME was followed first
/// (`first` is true for the question itself).
#[inline]
fn referral(w: &mut Writer, zone: &Zone, cut: &Node, first: bool) -> u8 {
    if first {
        w.clear_aa();
    }
    let ns = cut.get(NS).expect("a cut has NS");
    let cut_owner = cut.owner.as_ref().map(Name::wire);
    if w.rrset(Section::Authority, cut_owner, NS, ns.ttl, ns.rdata_iter())
        .is_err()
    {
        w.set_tc();
        return RCODE_NOERROR;
    }
    // Glue below the cut that does not fit truncates the referral.
    if !additional(w, zone, &ns.targets, cut_owner) {
        w.set_tc();
    }
    RCODE_NOERROR
}

/// The answer for a service hostname asked from a network: the addresses
/// of the environment its rules chose (A, AAAA, or for ANY the first family
/// there is), or a negative answer when it has none of that family.
#[inline]
fn per_network(
    w: &mut Writer,
    zone: &Zone,
    owner: Option<&[u8]>,
    qtype: u16,
    env: &Environment,
    ttl: u32,
) {
    let v4 = env.v4_rdata.iter().map(|a| &a[..]);
    let v6 = env.v6_rdata.iter().map(|a| &a[..]);
    let wrote = match qtype {
        AAAA if !env.v6_rdata.is_empty() => Some(w.rrset(Section::Answer, owner, AAAA, ttl, v6)),
        A | ANY if !env.v4_rdata.is_empty() => Some(w.rrset(Section::Answer, owner, A, ttl, v4)),
        ANY if !env.v6_rdata.is_empty() => Some(w.rrset(Section::Answer, owner, AAAA, ttl, v6)),
        _ => None,
    };
    match wrote {
        Some(Err(_)) => w.set_tc(),
        Some(Ok(())) => {}
        None => negative(w, zone),
    }
}
