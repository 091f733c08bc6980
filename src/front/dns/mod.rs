//! The DNS front: packet in, packet out, from one snapshot.
//!
//! [`respond`] is the whole protocol decision for one query, [`mod@answer`] the
//! lookup inside a zone, [`cache`] the per-thread memo of answers that do
//! not depend on the client; [`udp`] and [`tcp`] own the sockets ([`tcp`]
//! also serves DNS over TLS). This
//! front never talks to etcd or the file system: it reads the snapshot it
//! is handed.

// Wire code: every narrowing cast must be shown to fit.
#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub(crate) mod answer;
pub(crate) mod cache;
pub(crate) mod rrl;
pub(crate) mod tcp;
pub(crate) mod udp;

pub(crate) use cache::AnswerCache;

use std::net::IpAddr;

use crate::config::snapshot::Snapshot;
use crate::proto::types::*;
pub use crate::proto::wire::Transport;
use crate::proto::wire::{self, MAX_UDP_PAYLOAD, ParseOutcome, Request, Writer};

/// What was answered, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The question's type (0 when there was none).
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

/// The client network a DNS answer may depend on (README "DNS routing by
/// client network"): the ECS
/// address masked to min(source prefix, 24 | 56), or else the packet source
/// masked to 24 | 56.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    /// The masked network address.
    pub(crate) addr: IpAddr,
    /// ECS with source prefix 0: decide on the packet source, answer scope 0.
    pub(crate) zero_scope: bool,
    key: [u8; 48],
    key_len: usize,
}

impl Network {
    /// From the packet source and the query's ECS option, if any.
    pub(crate) fn new(src: IpAddr, ecs: Option<&wire::ClientSubnet>) -> Network {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
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
            zero_scope,
            key: [0; 48],
            key_len: 0,
        };
        let mut cur = std::io::Cursor::new(&mut n.key[..]);
        let _ = std::io::Write::write_fmt(&mut cur, format_args!("{}/{}", net.addr(), prefix));
        #[allow(clippy::cast_possible_truncation)] // at most the 48-byte buffer
        let len = cur.position() as usize;
        n.key_len = len;
        n
    }

    /// The key percent matchers hash: the network in CIDR text, e.g.
    /// `198.51.100.0/24`.
    pub(crate) fn key(&self) -> &[u8] {
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
    // An extended rcode has 12 bits: the low 4 go in the header, the high 8
    // in the OPT record.
    #[allow(clippy::cast_possible_truncation)]
    let (low, high) = ((rcode & 0xf) as u8, (rcode >> 4) as u8);
    w.set_rcode(low);
    w.unreserve(opt_len);
    if let Some(e) = &req.edns {
        // ECS is echoed with the scope the answer depended on (RFC 7871 §7.2.1).
        w.opt(
            MAX_UDP_PAYLOAD,
            high,
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
    #[allow(clippy::cast_possible_truncation)] // a short constant
    let len = VERSION_TXT.len() as u8;
    rdata[0] = len;
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

/// What [`lookup`] found.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    /// The A addresses, as text.
    pub(crate) a: Vec<String>,
    /// The AAAA addresses, as text.
    pub(crate) aaaa: Vec<String>,
    /// The TTL of the last address record seen.
    pub(crate) ttl: Option<u32>,
    /// The response code of the A query.
    pub(crate) rcode: u8,
    /// The AA bit of the A answer (false: not a name this edge serves).
    pub(crate) authoritative: bool,
}

/// Asks the real answering code for `name` A and AAAA, as a resolver at
/// `src` would (over TCP: no truncation); `explain` and `/v1/resolve` use it.
pub(crate) fn lookup(snap: &Snapshot, name: &crate::proto::name::Name, src: IpAddr) -> Lookup {
    let mut l = Lookup::default();
    for (k, qtype) in [A, AAAA].into_iter().enumerate() {
        let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(name.wire());
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        let mut out = Vec::new();
        respond(snap, &q, src, Transport::Tcp, &mut out);
        if k == 0 && out.len() >= 4 {
            l.rcode = out[3] & 0x0f;
            l.authoritative = out[2] & 0x04 != 0;
        }
        for (rtype, t, rdata) in wire::answer_records(&out).unwrap_or_default() {
            if matches!(rtype, A | AAAA)
                && let Some(ip) = wire::rdata_to_ip(&rdata)
            {
                l.ttl = Some(t);
                if k == 0 { &mut l.a } else { &mut l.aaaa }.push(ip.to_string());
            }
        }
    }
    l
}
