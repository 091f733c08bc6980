//! The DNS front: packet in, packet out, from one snapshot.
//!
//! [`respond`] is the whole protocol decision for one query; [`server`]
//! owns the sockets. `dns` never talks to etcd or the file system: it reads
//! the snapshot it is handed.

pub mod answer;
pub mod fastpath;
pub mod name;
pub mod server;
pub mod types;
pub mod wire;

use std::net::IpAddr;

use crate::snapshot::Snapshot;
use types::*;
use wire::{MAX_UDP_PAYLOAD, ParseOutcome, Request, Writer};

/// What was answered, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub qtype: u16,
    /// Full (extended) rcode.
    pub rcode: u16,
    /// The packet was malformed: a TCP connection should be closed after
    /// this answer.
    pub close: bool,
    /// The answer depends only on the question, the EDNS flags and the size
    /// limit (not on the client's network): it may be reused for the same
    /// question (see [`AnswerCache`]).
    pub cacheable: bool,
}

/// Transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A per-thread memo of whole answers, for questions whose answer does not
/// depend on the client: the key is the lower-cased question, the EDNS
/// presence and DO bit, and the size limit; a hit copies the stored answer
/// and patches the id, the RD bit and the question's spelling. It is
/// emptied whenever a new snapshot is live, and when full.
pub struct AnswerCache {
    map: rustc_hash::FxHashMap<Box<[u8]>, Box<[u8]>>,
    /// The snapshot the entries came from.
    snapshot: *const Snapshot,
    key: Vec<u8>,
}

/// Entries kept per thread before the cache starts over.
const ANSWER_CACHE_ENTRIES: usize = 16_384;

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            map: Default::default(),
            snapshot: std::ptr::null(),
            key: Vec::with_capacity(300),
        }
    }
}

impl AnswerCache {
    /// Builds the key of a UDP query without parsing it fully; `None` when
    /// the packet is not a plain query this cache can serve.
    fn key_of(&mut self, p: &[u8]) -> Option<usize> {
        // Header: QUERY opcode, QR clear, one question, nothing in answer or
        // authority, at most the OPT in additional.
        if p.len() < 17
            || p[2] & 0xf8 != 0
            || p[4..10] != [0, 1, 0, 0, 0, 0]
            || p[10] != 0
            || p[11] > 1
        {
            return None;
        }
        self.key.clear();
        let mut i = 12;
        loop {
            let len = *p.get(i)? as usize;
            if len > 63 || i + 1 + len > p.len() || i + len >= 12 + 255 {
                return None;
            }
            self.key.push(len as u8);
            self.key
                .extend(p[i + 1..i + 1 + len].iter().map(u8::to_ascii_lowercase));
            i += 1 + len;
            if len == 0 {
                break;
            }
        }
        let qend = i + 4;
        self.key.extend_from_slice(p.get(i..qend)?);
        // EDNS: none, or exactly one bare OPT (no options) at the end.
        let (limit, flags): (u16, u8) = if p[11] == 0 {
            if qend != p.len() {
                return None;
            }
            (512, 0)
        } else {
            let opt = p.get(qend..)?;
            if opt.len() != 11
                || opt[0] != 0
                || opt[1..3] != [0, 41]
                || opt[5] != 0
                || opt[6] != 0
                || opt[9..11] != [0, 0]
            {
                return None;
            }
            let size = u16::from_be_bytes([opt[3], opt[4]]).clamp(512, MAX_UDP_PAYLOAD);
            (size, 1 | (opt[7] & 0x80))
        };
        self.key.extend_from_slice(&limit.to_be_bytes());
        self.key.push(flags);
        Some(qend)
    }

    /// Answers from the cache, or with [`respond`] (storing what may be
    /// reused). UDP only.
    pub fn respond(
        &mut self,
        snap: &Snapshot,
        packet: &[u8],
        src: IpAddr,
        out: &mut Vec<u8>,
    ) -> Option<Outcome> {
        if !std::ptr::eq(self.snapshot, snap) {
            self.map.clear();
            self.snapshot = snap;
        }
        let Some(qend) = self.key_of(packet) else {
            return respond(snap, packet, src, Transport::Udp, out);
        };
        if let Some(hit) = self.map.get(&self.key[..]) {
            out.clear();
            out.extend_from_slice(hit);
            out[..2].copy_from_slice(&packet[..2]);
            out[2] = (out[2] & !1) | (packet[2] & 1);
            out[12..qend].copy_from_slice(&packet[12..qend]);
            let qtype = u16::from_be_bytes([packet[qend - 4], packet[qend - 3]]);
            // Cached answers are never BADVERS (version 0 only), so the
            // header holds the whole rcode.
            return Some(Outcome {
                qtype,
                rcode: (out[3] & 0xf) as u16,
                close: false,
                cacheable: true,
            });
        }
        let o = respond(snap, packet, src, Transport::Udp, out)?;
        if o.cacheable {
            if self.map.len() >= ANSWER_CACHE_ENTRIES {
                self.map.clear();
            }
            self.map
                .insert(self.key.as_slice().into(), out.as_slice().into());
        }
        Some(o)
    }
}

/// The client network a DNS answer may depend on (SPEC §4): the ECS
/// address masked to min(source prefix, 24 | 56), or else the packet source
/// masked to 24 | 56.
#[derive(Debug, Clone)]
pub struct Network {
    /// The masked network address.
    pub addr: IpAddr,
    pub prefix: u8,
    /// ECS with source prefix 0: decide on the packet source, answer scope 0.
    pub zero_scope: bool,
    key: [u8; 48],
    key_len: usize,
}

impl Network {
    /// From the packet source and the query's ECS option, if any.
    pub fn new(src: IpAddr, ecs: Option<&wire::ClientSubnet>) -> Network {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        let (addr, source, zero_scope) = match ecs {
            Some(cs) if cs.source_prefix > 0 => {
                let addr = if cs.family == 1 {
                    IpAddr::from(<[u8; 4]>::try_from(&cs.addr[..4]).expect("4 bytes"))
                } else {
                    IpAddr::from(cs.addr)
                };
                (addr, cs.source_prefix, false)
            }
            Some(_) => (src, 128, true),
            None => (src, 128, false),
        };
        let cap = if addr.is_ipv4() { 24 } else { 56 };
        let prefix = source.min(cap);
        let net = ipnet::IpNet::new(addr, prefix)
            .expect("prefix within family")
            .trunc();
        let mut n = Network {
            addr: net.addr(),
            prefix,
            zero_scope,
            key: [0; 48],
            key_len: 0,
        };
        let mut cur = std::io::Cursor::new(&mut n.key[..]);
        let _ = std::io::Write::write_fmt(&mut cur, format_args!("{}/{}", net.addr(), prefix));
        n.key_len = cur.position() as usize;
        n
    }

    /// The key percent matchers hash: the network in CIDR text, e.g.
    /// `198.51.100.0/24`.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }
}

/// Answers one query packet into `out`. Returns `None` when nothing is to be
/// sent (runt packets, responses, a broken question).
pub fn respond(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    let req = match Request::parse(packet) {
        Ok(r) => r,
        Err(ParseOutcome::Drop) => return None,
        Err(ParseOutcome::Error {
            rcode,
            question_end,
        }) => {
            // FORMERR with the header and question echoed, no OPT.
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let opcode = (packet[2] >> 3) & 0xf;
            let mut w = Writer::new(out, usize::MAX, id, opcode, packet[2] & 1 != 0);
            if let Some(end) = question_end {
                w.raw_question(&packet[12..end]);
            }
            w.set_rcode(rcode);
            return Some(Outcome {
                qtype: 0,
                rcode: rcode as u16,
                close: true,
                cacheable: false,
            });
        }
    };
    let limit = match (transport, &req.edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(e)) => e.payload.clamp(512, MAX_UDP_PAYLOAD) as usize,
    };
    let mut w = Writer::new(out, limit, req.id, req.opcode, req.rd);
    if req.has_question() {
        w.question(req.qname(), req.qtype, req.qclass);
    }
    let opt_len = req
        .edns
        .as_ref()
        .map_or(0, |e| Writer::opt_len(e.ecs.as_ref()));
    w.reserve(opt_len);
    let mut ede = None;
    let ecs = req.edns.as_ref().and_then(|e| e.ecs);
    let mut dynamic = answer::Dynamic::new(snap, src, ecs);
    let rcode: u16 = if req.edns.as_ref().is_some_and(|e| e.version != 0) {
        RCODE_BADVERS
    } else {
        let r = dispatch(snap, &req, transport, &mut w, &mut dynamic);
        if r == RCODE_REFUSED_NO_ZONE {
            ede = Some(wire::EDE_NOT_AUTHORITATIVE);
            RCODE_REFUSED as u16
        } else {
            r as u16
        }
    };
    w.set_rcode((rcode & 0xf) as u8);
    w.unreserve(opt_len);
    if let Some(e) = &req.edns {
        // ECS is echoed with the scope the answer depended on (RFC 7871 §7.2.1).
        w.opt(
            MAX_UDP_PAYLOAD,
            (rcode >> 4) as u8,
            e.dnssec_ok,
            ecs.map(|cs| (cs, dynamic.scope)),
            ede,
        );
    }
    let cacheable = req.opcode == OPCODE_QUERY
        && req.has_question()
        && ecs.is_none()
        && !dynamic.used_network();
    Some(Outcome {
        qtype: req.qtype,
        rcode,
        close: false,
        cacheable,
    })
}

/// REFUSED because no served zone holds the name (gets an EDE option).
const RCODE_REFUSED_NO_ZONE: u8 = 0x80 | RCODE_REFUSED;

/// Class and opcode checks, then the answer (Knot's order).
fn dispatch(
    snap: &Snapshot,
    req: &Request,
    transport: Transport,
    w: &mut Writer,
    dynamic: &mut answer::Dynamic,
) -> u8 {
    if req.has_question() && !matches!(req.qclass, CLASS_IN | CLASS_CH | CLASS_ANY) {
        return RCODE_REFUSED;
    }
    match req.opcode {
        OPCODE_QUERY if req.has_question() => answer(snap, req, transport, w, dynamic),
        OPCODE_QUERY | OPCODE_NOTIFY | OPCODE_UPDATE if !req.has_question() => RCODE_FORMERR,
        // We take no NOTIFY and no UPDATE: not authorized (as Knot without ACLs).
        OPCODE_NOTIFY => RCODE_NOTAUTH,
        OPCODE_UPDATE if req.qtype == SOA => RCODE_NOTAUTH,
        OPCODE_UPDATE => RCODE_FORMERR,
        _ => RCODE_NOTIMP,
    }
}

/// The text of `version.bind`/`version.server` in class CH.
const VERSION_TXT: &[u8] = concat!("vdh-edge ", env!("CARGO_PKG_VERSION")).as_bytes();

fn answer(
    snap: &Snapshot,
    req: &Request,
    transport: Transport,
    w: &mut Writer,
    dynamic: &mut answer::Dynamic,
) -> u8 {
    match req.qtype {
        // Zone transfers are not offered: not over UDP at all, and refused
        // as not authorized over TCP (as Knot does without an ACL).
        AXFR if transport == Transport::Udp => return RCODE_NOTIMP,
        AXFR | IXFR => return RCODE_NOTAUTH,
        0 => return RCODE_NOTIMP,
        _ => {}
    }
    if req.qclass == CLASS_CH {
        return chaos(req, w);
    }
    let Some(zone) = answer::find_zone(&snap.zones, req.qname_lower(), req.qtype) else {
        return RCODE_REFUSED_NO_ZONE;
    };
    answer::answer_in_zone(w, zone, req.qname_lower(), req.qtype, dynamic)
}

/// `version.bind` and `version.server` TXT in class CH; REFUSED otherwise.
fn chaos(req: &Request, w: &mut Writer) -> u8 {
    let q = req.qname_lower();
    let is_version = q == b"\x07version\x04bind\x00" || q == b"\x07version\x06server\x00";
    if !is_version || req.qtype != TXT {
        return RCODE_REFUSED;
    }
    let mut rdata = [0u8; 64];
    rdata[0] = VERSION_TXT.len() as u8;
    rdata[1..1 + VERSION_TXT.len()].copy_from_slice(VERSION_TXT);
    let _ = w.rrset_class(
        wire::Section::Answer,
        None,
        TXT,
        CLASS_CH,
        0,
        [&rdata[..1 + VERSION_TXT.len()]],
    );
    RCODE_NOERROR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Inputs, SourceKind, ZoneText, compile};

    #[test]
    fn answer_cache_reuses_and_patches() {
        let zone = "$TTL 300\n@ SOA ns h 1 1 1 1 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\n";
        let inputs = Inputs {
            zones: vec![ZoneText {
                source: "z".into(),
                origin: name::Name::parse("example.com.", None).unwrap(),
                text: zone.into(),
            }],
            state_source: "s".into(),
            state_text: String::new(),
            etcd: None,
            revision: 1,
            kind: SourceKind::File,
        };
        let snap = compile(&inputs, None, &Default::default()).unwrap();
        let q = |id: u16, name: &[u8], rd: bool| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&[u8::from(rd), 0, 0, 1, 0, 0, 0, 0, 0, 1]);
            p.extend_from_slice(name);
            p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
            p
        };
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let mut cache = AnswerCache::default();
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        cache
            .respond(
                &snap,
                &q(1, b"\x03www\x07example\x03com\x00", false),
                src,
                &mut a,
            )
            .unwrap();
        assert_eq!(cache.map.len(), 1);
        let second = q(2, b"\x03WwW\x07ExAmPle\x03cOm\x00", true);
        cache.respond(&snap, &second, src, &mut b).unwrap();
        respond(&snap, &second, src, Transport::Udp, &mut c).unwrap();
        assert_eq!(b, c, "a hit equals the full lookup for that packet");
        assert_ne!(a, b);
    }
}
