//! [`AnswerCache`]: a per-thread memo of whole UDP answers that do not
//! depend on the client.

use std::net::IpAddr;

use super::{Outcome, respond};
use crate::config::snapshot::Snapshot;
use crate::proto::wire::{MAX_UDP_PAYLOAD, Transport};

/// A per-thread memo of whole answers, for questions whose answer does not
/// depend on the client: the key is the lower-cased question, the EDNS
/// presence and DO bit, and the size limit; a hit copies the stored answer
/// and patches the id, the RD bit and the question's spelling. It is
/// emptied whenever a new snapshot is live, and when full.
pub(crate) struct AnswerCache {
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
            #[allow(clippy::cast_possible_truncation)] // len <= 63, checked above
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
    pub(crate) fn respond(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::snapshot::{Inputs, SourceKind, ZoneText, compile};

    #[test]
    fn answer_cache_reuses_and_patches() {
        let zone = "$TTL 300\n@ SOA ns h 1 1 1 1 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\n";
        let inputs = Inputs {
            zones: vec![ZoneText {
                source: "z".into(),
                origin: crate::proto::name::Name::parse("example.com.", None).unwrap(),
                text: zone.into(),
            }],
            state_source: "s".into(),
            state_text: String::new(),
            keyed: None,
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
