//! Zones: parsed from master files, compiled into lookup tables.
//!
//! A [`Zone`] is immutable once built. Every node (owner names, and the
//! empty non-terminals between them and the apex) sits in one hash map keyed
//! by the lower-cased wire name, so a lookup costs a few hash probes whatever
//! the zone's size. Additional-section targets are resolved at build time.

pub(crate) mod parse;

use rustc_hash::FxHashMap as HashMap;
use smallvec::{SmallVec, smallvec};

use crate::proto::name::Name;
use crate::proto::types::*;
pub(crate) use parse::{ZoneRecord, parse_zone};

/// One RRset of a node.
#[derive(Debug, Clone)]
pub(crate) struct RRset {
    pub(crate) rtype: u16,
    pub(crate) ttl: u32,
    /// Uncompressed wire RDATA of each record, in file order (most RRsets
    /// hold one record: kept inline, no list allocated for it).
    pub(crate) rdatas: SmallVec<[Box<[u8]>; 1]>,
    /// For NS, MX and SRV: in-zone targets whose A/AAAA go in the
    /// additional section, in record order.
    pub(crate) targets: Vec<Target>,
}

/// A name whose addresses go in the additional section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The node holding the addresses (a wildcard node when synthesized).
    pub(crate) node: u32,
    /// The owner to write when it differs from the node's (wildcard synthesis).
    pub(crate) owner: Option<Box<[u8]>>,
}

impl RRset {
    pub(crate) fn rdata_iter(&self) -> impl Iterator<Item = &[u8]> {
        self.rdatas.iter().map(|r| &r[..])
    }
}

/// One name in the zone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    /// The owner as written in the zone file (or derived), lower-cased when
    /// the node exists only as an empty non-terminal.
    pub(crate) owner: Option<Name>,
    /// RRsets ordered by type (most nodes have one: kept inline).
    pub(crate) rrsets: SmallVec<[RRset; 1]>,
    /// An NS RRset below the apex: a zone cut.
    pub(crate) delegation: bool,
    /// A service hostname: its A/AAAA answer depends on the client network
    /// (see `Snapshot::services_by_name`); the stored records are the answer
    /// for a client with no network-specific rule.
    pub(crate) dynamic: bool,
}

impl Node {
    /// The RRset of type `rtype`, if the node has one.
    pub(crate) fn get(&self, rtype: u16) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }
}

/// A compiled zone.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// The origin, lower-cased.
    pub(crate) origin: Name,
    pub(crate) nodes: Vec<Node>,
    index: HashMap<Box<[u8]>, u32>,
    pub(crate) apex: u32,
    /// The SOA serial served.
    pub(crate) serial: u32,
    /// The SOA serial written in the zone's text.
    pub(crate) file_serial: u32,
    /// min(SOA TTL, SOA MINIMUM): the TTL of the SOA in negative answers.
    pub(crate) negative_ttl: u32,
    /// Hash of every record (serial excluded), to tell whether content changed.
    pub(crate) content_hash: u64,
    /// Hash of the inputs the zone was built from (text, derived records);
    /// equal inputs mean the built zone can be reused as is.
    pub(crate) input_fingerprint: u64,
}

/// A zone problem found while compiling records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZoneIssue {
    pub(crate) line: usize,
    pub(crate) message: String,
}

fn soa_fields(rdata: &[u8]) -> (usize, u32, u32) {
    let n1 = crate::proto::wire::name_len(rdata);
    let n2 = crate::proto::wire::name_len(&rdata[n1..]);
    let at = n1 + n2;
    let serial = u32::from_be_bytes(rdata[at..at + 4].try_into().unwrap());
    let minimum = u32::from_be_bytes(rdata[at + 16..at + 20].try_into().unwrap());
    (at, serial, minimum)
}

/// RDATA with its domain names lower-cased (for the types whose names we
/// know), as Knot stores zone data; owners are lower-cased the same way.
/// `None` when it is already (most zones write names in lower case).
fn canonical_rdata(rtype: u16, rdata: &[u8]) -> Option<Vec<u8>> {
    use crate::proto::name::lower_in_place;
    use crate::proto::wire::name_len;
    let names = match rtype {
        NS | CNAME | PTR | DNAME => rdata,
        MX => &rdata[2..],
        SRV => &rdata[6..],
        SOA => {
            let n1 = name_len(rdata);
            &rdata[..n1 + name_len(&rdata[n1..])]
        }
        _ => return None,
    };
    // Label lengths are below 64: only name characters can match.
    if !names.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut v = rdata.to_vec();
    match rtype {
        NS | CNAME | PTR | DNAME => lower_in_place(&mut v),
        MX => lower_in_place(&mut v[2..]),
        SRV => lower_in_place(&mut v[6..]),
        SOA => {
            let n1 = name_len(&v);
            lower_in_place(&mut v[..n1]);
            lower_in_place(&mut v[n1..]);
        }
        _ => {}
    }
    Some(v)
}

/// Finds the node that answers for `target` (exactly, or through a
/// wildcard), as additional-section processing does.
fn resolve_target(
    index: &HashMap<Box<[u8]>, u32>,
    nodes: &[Node],
    origin: &Name,
    target: &[u8],
) -> Option<Target> {
    let mut key = target.to_vec();
    crate::proto::name::lower_in_place(&mut key);
    if !crate::proto::name::is_subdomain(&key, origin.wire()) {
        return None;
    }
    if let Some(&i) = index.get(&key[..]) {
        return Some(Target {
            node: i,
            owner: None,
        });
    }
    // Closest encloser, then its wildcard; never through a zone cut.
    let mut at = 0;
    while key[at] != 0 {
        let next = at + 1 + key[at] as usize;
        if let Some(&enc) = index.get(&key[next..]) {
            if nodes[enc as usize].delegation {
                return None;
            }
            let mut wild = vec![1u8, b'*'];
            wild.extend_from_slice(&key[next..]);
            return index.get(&wild[..]).map(|&w| Target {
                node: w,
                owner: Some(target.into()),
            });
        }
        at = next;
    }
    None
}

/// The size of an answer holding the whole RRset, names uncompressed but
/// each owner a 2-byte pointer: header, question, records, an OPT record.
/// Over 65,535 no transport can carry it.
fn answer_size(owner: Option<&Name>, set: &RRset) -> usize {
    let qname = owner.map_or(1, |o| o.wire().len());
    let records: usize = set.rdatas.iter().map(|r| 2 + 10 + r.len()).sum();
    12 + qname + 4 + records + 11
}

/// RRsets smaller than this are scanned for a repeated record; bigger ones
/// use the builder's seen-set.
const SCAN_UP_TO: usize = 8;

/// A 64-bit hash of RDATA.
fn digest(rdata: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(rdata)
}

/// A zone being built: nodes by lower-cased wire name, the lines their
/// RRsets came from, the problems found, and the content hash so far.
struct Builder {
    origin: Name,
    index: HashMap<Box<[u8]>, u32>,
    nodes: Vec<Node>,
    /// (node, type, line) of the first record of each RRset, in the order
    /// the RRsets were made (looked up only to report a problem).
    lines: Vec<(u32, u16, usize)>,
    issues: Vec<ZoneIssue>,
    hasher: std::hash::DefaultHasher,
    /// A hash of every (node, type, RDATA) added to an RRset of
    /// [`SCAN_UP_TO`] records or more: finds a repeated record in O(1) (a
    /// hash seen before is checked against the RRset), so an RRset of n
    /// records builds in O(n), not O(n²). Smaller RRsets are scanned.
    seen: rustc_hash::FxHashSet<(u32, u16, u64)>,
}

impl Builder {
    fn new(origin: Name, records: usize) -> Builder {
        Builder {
            origin,
            index: HashMap::with_capacity_and_hasher(records + 1, Default::default()),
            nodes: Vec::with_capacity(records + 1),
            lines: Vec::new(),
            issues: Vec::new(),
            hasher: std::hash::DefaultHasher::new(),
            seen: rustc_hash::FxHashSet::default(),
        }
    }

    fn issue(&mut self, line: usize, message: String) {
        self.issues.push(ZoneIssue { line, message });
    }

    /// The node of `name`, created when new.
    fn node(&mut self, name: &Name) -> u32 {
        self.node_lower(name.to_lower().wire())
    }

    /// The node of the lower-cased wire name `key`, created when new (the
    /// key is copied only then).
    fn node_lower(&mut self, key: &[u8]) -> u32 {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = u32::try_from(self.nodes.len()).expect("fewer than 2^32 nodes");
        self.nodes.push(Node::default());
        self.index.insert(key.into(), i);
        i
    }

    /// Adds one record (and the empty non-terminals above it).
    fn add(&mut self, r: ZoneRecord) {
        if !r.owner.is_subdomain_of(&self.origin) {
            let message = format!("{} is outside the zone {}", r.owner, self.origin);
            self.issue(r.line, message);
            return;
        }
        if r.rtype == SOA && r.owner.to_lower() != self.origin {
            let message = format!(
                "SOA owner {} disagrees with the zone origin {} (from the file name)",
                r.owner, self.origin
            );
            self.issue(r.line, message);
            return;
        }
        if r.rdata.len() > usize::from(u16::MAX) {
            let message = format!(
                "{} {} record of {} bytes: RDATA holds at most 65535",
                r.owner,
                type_name(r.rtype),
                r.rdata.len()
            );
            self.issue(r.line, message);
            return;
        }
        let ZoneRecord {
            owner,
            rtype,
            ttl,
            rdata,
            line,
        } = r;
        // Most owners are written in lower case already: no copy then.
        let (lower, written) = if owner.wire().iter().any(u8::is_ascii_uppercase) {
            (owner.to_lower(), Some(owner))
        } else {
            (owner, None)
        };
        let id = self.node_lower(lower.wire());
        // The empty non-terminals: each parent's wire name is a suffix.
        let wire = lower.wire();
        let (mut at, mut labels) = (0, lower.label_count());
        while labels > self.origin.label_count() + 1 {
            at += 1 + wire[at] as usize;
            labels -= 1;
            self.node_lower(&wire[at..]);
        }
        let owner = written.as_ref().unwrap_or(&lower);
        self.add_rdata(id, &lower, owner, (rtype, ttl, line), rdata);
        let node = &mut self.nodes[id as usize];
        if node.owner.is_none() {
            node.owner = Some(lower);
        }
    }

    /// Adds one record's RDATA to node `id` (`lower` its name, `owner` as
    /// written), unless it repeats one (then only its TTL applies).
    fn add_rdata(
        &mut self,
        id: u32,
        lower: &Name,
        owner: &Name,
        (rtype, ttl, line): (u16, u32, usize),
        rdata: Vec<u8>,
    ) {
        use std::hash::Hash;
        let canonical = canonical_rdata(rtype, &rdata);
        let stored = canonical.as_deref().unwrap_or(&rdata);
        let node = &mut self.nodes[id as usize];
        let existing = node.rrsets.iter().position(|s| s.rtype == rtype);
        let repeated = existing.is_some_and(|i| {
            let set = &node.rrsets[i];
            if set.rdatas.len() < SCAN_UP_TO {
                return set.rdatas.iter().any(|d| **d == *stored);
            }
            // A big RRset: its records' digests go in the seen-set (all of
            // them once it reaches the size), and only a digest seen
            // before is looked for in it.
            if set.rdatas.len() == SCAN_UP_TO {
                for d in &set.rdatas {
                    self.seen.insert((id, rtype, digest(d)));
                }
            }
            !self.seen.insert((id, rtype, digest(stored)))
                && set.rdatas.iter().any(|d| **d == *stored)
        });
        if let Some(i) = existing {
            if repeated {
                node.rrsets[i].ttl = ttl;
                return;
            }
            match rtype {
                SOA => return self.issue(line, "more than one SOA record".into()),
                CNAME => return self.issue(line, format!("more than one CNAME at {owner}")),
                _ => {}
            }
        }
        lower.hash(&mut self.hasher);
        rtype.hash(&mut self.hasher);
        if rtype != SOA {
            rdata.hash(&mut self.hasher);
        }
        let stored = canonical.unwrap_or(rdata).into_boxed_slice();
        let node = &mut self.nodes[id as usize];
        match existing {
            Some(i) => {
                let set = &mut node.rrsets[i];
                set.rdatas.push(stored);
                // As Knot: the TTL read last applies to the whole RRset.
                set.ttl = ttl;
            }
            None => {
                node.rrsets.push(RRset {
                    rtype,
                    ttl,
                    rdatas: smallvec![stored],
                    targets: vec![],
                });
                self.lines.push((id, rtype, line));
            }
        }
    }

    /// Reads the apex SOA (hashed without its serial) and writes the served
    /// serial into it. Returns the file's serial and the negative TTL.
    fn soa(&mut self, apex: u32, serial: Option<u32>) -> (u32, u32) {
        use std::hash::Hash;
        let Some(soa) = self.nodes[apex as usize]
            .rrsets
            .iter_mut()
            .find(|s| s.rtype == SOA)
        else {
            let message = format!("no SOA record at the apex {}", self.origin);
            self.issue(0, message);
            return (0, 0);
        };
        let (at, s, minimum) = soa_fields(&soa.rdatas[0]);
        soa.rdatas[0][..at].hash(&mut self.hasher);
        soa.rdatas[0][at + 4..].hash(&mut self.hasher);
        soa.rdatas[0][at..at + 4].copy_from_slice(&serial.unwrap_or(s).to_be_bytes());
        (s, soa.ttl.min(minimum))
    }

    /// Puts RRsets and records in canonical order, checks CNAMEs, marks
    /// zone cuts and names every node.
    fn finish_nodes(&mut self, apex: u32) {
        if self.nodes[apex as usize].get(NS).is_none() {
            let message = format!("no NS records at the apex {}", self.origin);
            self.issue(0, message);
        }
        // (node, type, message): their lines are looked up at the end.
        let mut problems: Vec<(u32, u16, String)> = Vec::new();
        for (i, node) in (0u32..).zip(self.nodes.iter_mut()) {
            node.rrsets.sort_by_key(|s| s.rtype);
            // Canonical order inside each RRset (bytewise, shorter first), as Knot serves.
            for set in &mut node.rrsets {
                set.rdatas.sort();
            }
            if node.get(CNAME).is_some() && node.rrsets.len() > 1 {
                let message = format!(
                    "CNAME at {} has other records beside it",
                    node.owner
                        .as_ref()
                        .expect("a node with records has an owner")
                );
                problems.push((i, CNAME, message));
            }
            node.delegation = i != apex && node.get(NS).is_some();
            for set in &node.rrsets {
                let size = answer_size(node.owner.as_ref(), set);
                if size > usize::from(u16::MAX) {
                    let message = format!(
                        "{} {} RRset of {} records needs {size} bytes in an answer; a DNS message holds at most 65535",
                        node.owner
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        type_name(set.rtype),
                        set.rdatas.len()
                    );
                    problems.push((i, set.rtype, message));
                }
            }
            if node.owner.is_none() && i == apex {
                node.owner = Some(self.origin.clone());
            }
        }
        if !problems.is_empty() {
            // One entry per RRset made.
            let first: HashMap<(u32, u16), usize> = self
                .lines
                .iter()
                .map(|&(n, t, line)| ((n, t), line))
                .collect();
            for (n, t, message) in problems {
                let line = first.get(&(n, t)).copied().unwrap_or(0);
                self.issues.push(ZoneIssue { line, message });
            }
        }
        // Empty non-terminals get their lower-cased name as owner.
        for (k, &i) in &self.index {
            if self.nodes[i as usize].owner.is_none() {
                self.nodes[i as usize].owner = Some(Name::from_wire_unchecked(k));
            }
        }
    }

    /// Resolves the additional-section targets of NS, MX and SRV RRsets.
    fn resolve_targets(&mut self) {
        for i in 0..self.nodes.len() {
            for s in 0..self.nodes[i].rrsets.len() {
                let set = &self.nodes[i].rrsets[s];
                let off = match set.rtype {
                    NS => 0,
                    MX => 2,
                    SRV => 6,
                    _ => continue,
                };
                let targets: Vec<Target> = set
                    .rdatas
                    .iter()
                    .filter_map(|rd| {
                        resolve_target(&self.index, &self.nodes, &self.origin, &rd[off..])
                    })
                    .collect();
                self.nodes[i].rrsets[s].targets = targets;
            }
        }
    }
}

impl Zone {
    /// Builds a zone from records. `serial` overrides the SOA serial when
    /// given; `dynamic` are the names (lower-case) whose answers are
    /// computed per query. Reports every problem found (line 0 when not tied
    /// to a line).
    pub(crate) fn build(
        origin: &Name,
        records: Vec<ZoneRecord>,
        serial: Option<u32>,
        dynamic: &[Name],
    ) -> Result<Zone, Vec<ZoneIssue>> {
        use std::hash::{Hash, Hasher};
        let mut b = Builder::new(origin.to_lower(), records.len());
        let apex = b.node(&origin.to_lower());
        for r in records {
            b.add(r);
        }
        let (file_serial, negative_ttl) = b.soa(apex, serial);
        b.finish_nodes(apex);
        if !b.issues.is_empty() {
            return Err(b.issues);
        }
        b.resolve_targets();
        for d in dynamic {
            d.hash(&mut b.hasher);
            if let Some(&i) = b.index.get(d.wire()) {
                b.nodes[i as usize].dynamic = true;
            }
        }
        Ok(Zone {
            origin: b.origin,
            nodes: b.nodes,
            index: b.index,
            apex,
            serial: serial.unwrap_or(file_serial),
            file_serial,
            negative_ttl,
            content_hash: b.hasher.finish(),
            input_fingerprint: 0,
        })
    }

    /// Sets the SOA serial served (the zone is still being built, so not
    /// yet shared).
    pub(crate) fn set_serial(&mut self, serial: u32) {
        let apex = self.apex as usize;
        if let Some(soa) = self.nodes[apex].rrsets.iter_mut().find(|s| s.rtype == SOA) {
            let (at, _, _) = soa_fields(&soa.rdatas[0]);
            soa.rdatas[0][at..at + 4].copy_from_slice(&serial.to_be_bytes());
            self.serial = serial;
        }
    }

    /// The node of a lower-cased wire name.
    pub(crate) fn lookup(&self, lower_wire: &[u8]) -> Option<&Node> {
        self.index.get(lower_wire).map(|&i| &self.nodes[i as usize])
    }

    pub(crate) fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    pub(crate) fn apex(&self) -> &Node {
        &self.nodes[self.apex as usize]
    }

    /// Number of records (not RRsets) in the zone.
    pub(crate) fn record_count(&self) -> usize {
        self.nodes
            .iter()
            .flat_map(|n| &n.rrsets)
            .map(|s| s.rdatas.len())
            .sum()
    }

    /// The apex SOA RRset, carrying the serial as served.
    pub(crate) fn soa(&self) -> &RRset {
        self.apex().get(SOA).expect("a built zone has an SOA")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Zone, Vec<ZoneIssue>> {
        let o = Name::parse("example.com.", None).unwrap();
        let p = parse_zone(text, &o);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        Zone::build(&o, p.records, None, &[])
    }

    #[test]
    fn builds_nodes_and_ents() {
        let z = build(
            "@ 3600 SOA ns h 7 1 1 1 300\n@ NS ns\nns A 192.0.2.1\na.b.c A 192.0.2.2\nmx MX 1 ns\n",
        )
        .unwrap();
        assert_eq!(z.serial, 7);
        assert_eq!(z.negative_ttl, 300);
        let ent = z.lookup(b"\x01b\x01c\x07example\x03com\x00").unwrap();
        assert!(ent.rrsets.is_empty());
        let mx = z
            .lookup(b"\x02mx\x07example\x03com\x00")
            .unwrap()
            .get(MX)
            .unwrap();
        assert_eq!(mx.targets.len(), 1);
        assert_eq!(z.record_count(), 5);
    }

    #[test]
    fn rejects_bad_zones() {
        let e = build("@ NS ns\nwww CNAME x\nwww A 192.0.2.1\nout.example.net. A 192.0.2.1\n")
            .unwrap_err();
        let msgs: Vec<&str> = e.iter().map(|i| i.message.as_str()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("outside the zone")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("no SOA")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("CNAME")), "{msgs:?}");
    }

    #[test]
    fn repeated_records_are_dropped_in_small_and_big_rrsets() {
        // 20 addresses, each written twice or three times at various
        // points: before, at and after the size where the seen-set starts.
        let mut text = String::from("@ 3600 SOA ns h 7 1 1 1 300\n@ NS ns\nns A 192.0.2.1\n");
        for i in 0..20 {
            text.push_str(&format!("many 60 A 192.0.2.{i}\n"));
            text.push_str(&format!("many 60 A 192.0.2.{}\n", i / 2));
            if i % 7 == 0 {
                text.push_str("MANY 90 A 192.0.2.0\n");
            }
        }
        let z = build(&text).unwrap();
        let set = z
            .lookup(b"\x04many\x07example\x03com\x00")
            .unwrap()
            .get(A)
            .unwrap();
        assert_eq!(set.rdatas.len(), 20);
        assert_eq!(set.ttl, 60, "the TTL read last applies");
        assert_eq!(z.record_count(), 23);
    }

    #[test]
    fn serial_override_and_content_hash() {
        let o = Name::parse("example.com.", None).unwrap();
        let p = parse_zone("@ SOA ns h 7 1 1 1 300\n@ NS ns\n", &o);
        let a = Zone::build(&o, p.records.clone(), None, &[]).unwrap();
        let b = Zone::build(&o, p.records, Some(9), &[]).unwrap();
        assert_eq!(soa_fields(&b.soa().rdatas[0]).1, 9);
        assert_eq!(a.content_hash, b.content_hash);
    }
}
