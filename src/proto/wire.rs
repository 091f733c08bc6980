//! DNS wire format: parsing requests and writing responses.
//!
//! [`Request::parse`] reads exactly what an authoritative server needs (the
//! header, one question, the OPT record and its client-subnet option) and
//! says precisely why a packet is malformed. [`Writer`] appends records to a
//! response with name compression and stops cleanly at the size limit so the
//! caller can set TC.

use super::name::{MAX_NAME_LEN, lower_in_place};
use super::types::*;

/// EDNS UDP payload we advertise and the largest we ever send over UDP
/// (DNS flag day 2020 value; Knot's default).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;

/// EDNS option code of Client Subnet (RFC 7871).
pub(crate) const OPT_ECS: u16 = 8;
/// EDNS option code of Extended DNS Errors (RFC 8914).
pub(crate) const OPT_EDE: u16 = 15;
/// EDE info code "Not Authoritative".
pub(crate) const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// The Client Subnet option of a query (RFC 7871).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientSubnet {
    /// 1 = IPv4, 2 = IPv6.
    pub(crate) family: u16,
    pub(crate) source_prefix: u8,
    pub(crate) scope_prefix: u8,
    /// The address, zero-padded to 16 bytes (IPv4 uses the first 4).
    pub(crate) addr: [u8; 16],
}

/// The parts of the OPT record a response depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    pub(crate) payload: u16,
    pub(crate) version: u8,
    pub(crate) dnssec_ok: bool,
    pub(crate) ecs: Option<ClientSubnet>,
}

/// A parsed query. The question name is kept as received (case included)
/// and lower-cased for lookups.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) id: u16,
    pub(crate) opcode: u8,
    pub(crate) rd: bool,
    /// The question name exactly as sent.
    pub(crate) qname: [u8; MAX_NAME_LEN],
    pub(crate) qname_len: usize,
    /// The question name in lower case.
    pub(crate) qname_lower: [u8; MAX_NAME_LEN],
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    pub(crate) edns: Option<Edns>,
}

/// Why a request gets no normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseOutcome {
    /// Too short for a header, or a response: no answer at all.
    Drop,
    /// Answer with just the header (and question when it parsed) and this rcode.
    Error {
        rcode: u8,
        question_end: Option<usize>,
    },
}

impl Request {
    /// The question name as sent.
    pub(crate) fn qname(&self) -> &[u8] {
        &self.qname[..self.qname_len]
    }
    /// The question name in lower case.
    pub(crate) fn qname_lower(&self) -> &[u8] {
        &self.qname_lower[..self.qname_len]
    }

    /// True for a query without a question (QDCOUNT 0).
    pub(crate) fn has_question(&self) -> bool {
        self.qname_len > 0
    }

    /// Parses a query packet the way Knot does: a broken header or question
    /// gets no answer at all; a broken rest of the packet gets FORMERR.
    pub(crate) fn parse(p: &[u8]) -> Result<Request, ParseOutcome> {
        if p.len() < 12 {
            return Err(ParseOutcome::Drop);
        }
        let flags = u16::from_be_bytes([p[2], p[3]]);
        if flags & 0x8000 != 0 {
            return Err(ParseOutcome::Drop);
        }
        let opcode = ((flags >> 11) & 0xf) as u8;
        let qdcount = u16::from_be_bytes([p[4], p[5]]);
        let ancount = u16::from_be_bytes([p[6], p[7]]);
        let nscount = u16::from_be_bytes([p[8], p[9]]);
        let arcount = u16::from_be_bytes([p[10], p[11]]);
        if qdcount > 1 {
            return Err(ParseOutcome::Drop);
        }
        let mut req = Request {
            id: u16::from_be_bytes([p[0], p[1]]),
            opcode,
            rd: flags & 0x0100 != 0,
            qname: [0; MAX_NAME_LEN],
            qname_len: 0,
            qname_lower: [0; MAX_NAME_LEN],
            qtype: 0,
            qclass: 0,
            edns: None,
        };
        let mut i = 12;
        if qdcount == 1 {
            // The question name: plain labels only; a pointer cannot point
            // anywhere valid this early in the message.
            loop {
                let Some(&len) = p.get(i) else {
                    return Err(ParseOutcome::Drop);
                };
                if len & 0xc0 != 0 {
                    return Err(ParseOutcome::Drop);
                }
                let len = len as usize;
                let end = i + 1 + len;
                if end > p.len() || req.qname_len + 1 + len > MAX_NAME_LEN {
                    return Err(ParseOutcome::Drop);
                }
                req.qname[req.qname_len..req.qname_len + 1 + len].copy_from_slice(&p[i..end]);
                req.qname_len += 1 + len;
                i = end;
                if len == 0 {
                    break;
                }
            }
            if i + 4 > p.len() {
                return Err(ParseOutcome::Drop);
            }
            req.qtype = u16::from_be_bytes([p[i], p[i + 1]]);
            req.qclass = u16::from_be_bytes([p[i + 2], p[i + 3]]);
            i += 4;
            req.qname_lower[..req.qname_len].copy_from_slice(&p[12..12 + req.qname_len]);
            lower_in_place(&mut req.qname_lower[..req.qname_len]);
        }
        let question_end = (qdcount == 1).then_some(i);
        let formerr = ParseOutcome::Error {
            rcode: RCODE_FORMERR,
            question_end,
        };
        // Answer and authority records are skipped (they carry nothing for a
        // query) but must be well formed; an OPT may only be in additional.
        for _ in 0..(ancount as u32 + nscount as u32) {
            let (next, rtype) = skip_rr(p, i).ok_or(formerr)?;
            if rtype == OPT {
                return Err(formerr);
            }
            i = next;
        }
        for _ in 0..arcount {
            let (next, rtype) = skip_rr(p, i).ok_or(formerr)?;
            if rtype == OPT {
                if req.edns.is_some() {
                    return Err(formerr);
                }
                let owner_len = name_end(p, i).ok_or(formerr)? - i;
                req.edns = Some(parse_opt(&p[i + owner_len..next]).ok_or(formerr)?);
            }
            i = next;
        }
        if i != p.len() {
            return Err(formerr);
        }
        Ok(req)
    }
}

/// The offset just after a (possibly compressed) name starting at `i`.
fn name_end(p: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    loop {
        let len = *p.get(i)?;
        match len & 0xc0 {
            0 => {
                i += 1 + len as usize;
                if len == 0 {
                    return Some(i);
                }
            }
            0xc0 => return Some(i + 2),
            _ => return None,
        }
        if i - start > MAX_NAME_LEN {
            return None;
        }
    }
}

/// Skips one resource record; returns the offset after it and its type.
fn skip_rr(p: &[u8], i: usize) -> Option<(usize, u16)> {
    let i = name_end(p, i)?;
    if i + 10 > p.len() {
        return None;
    }
    let rtype = u16::from_be_bytes([p[i], p[i + 1]]);
    let rdlen = u16::from_be_bytes([p[i + 8], p[i + 9]]) as usize;
    let end = i + 10 + rdlen;
    if end > p.len() {
        return None;
    }
    Some((end, rtype))
}

/// Parses an OPT record from just after its owner name.
fn parse_opt(rr: &[u8]) -> Option<Edns> {
    let payload = u16::from_be_bytes([rr[2], rr[3]]);
    let version = rr[5];
    let dnssec_ok = rr[6] & 0x80 != 0;
    let rdata = &rr[10..];
    let mut ecs = None;
    let mut j = 0;
    while j < rdata.len() {
        if j + 4 > rdata.len() {
            return None;
        }
        let code = u16::from_be_bytes([rdata[j], rdata[j + 1]]);
        let len = u16::from_be_bytes([rdata[j + 2], rdata[j + 3]]) as usize;
        let body = rdata.get(j + 4..j + 4 + len)?;
        if code == OPT_ECS {
            if ecs.is_some() {
                return None;
            }
            ecs = Some(parse_ecs(body)?);
        }
        j += 4 + len;
    }
    Some(Edns {
        payload,
        version,
        dnssec_ok,
        ecs,
    })
}

/// Validates an ECS option body (RFC 7871 §6): known family, prefix within
/// the family, address exactly as long as the prefix needs, no bits set
/// beyond the prefix, scope zero in a query.
fn parse_ecs(b: &[u8]) -> Option<ClientSubnet> {
    if b.len() < 4 {
        return None;
    }
    let family = u16::from_be_bytes([b[0], b[1]]);
    let source_prefix = b[2];
    let scope_prefix = b[3];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > max || scope_prefix != 0 {
        return None;
    }
    let addr_bytes = &b[4..];
    if addr_bytes.len() != (source_prefix as usize).div_ceil(8) {
        return None;
    }
    let mut addr = [0u8; 16];
    addr[..addr_bytes.len()].copy_from_slice(addr_bytes);
    if source_prefix % 8 != 0 {
        let last = addr_bytes[addr_bytes.len() - 1];
        let mask = 0xffu8 >> (source_prefix % 8);
        if last & mask != 0 {
            return None;
        }
    }
    Some(ClientSubnet {
        family,
        source_prefix,
        scope_prefix,
        addr,
    })
}

/// Section a record goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Answer,
    Authority,
    Additional,
}

/// The message did not fit; the writer is back where it was before the
/// failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// Appends a response to a buffer with name compression.
///
/// Compression remembers where each written name suffix starts; lookups
/// compare case-insensitively, as Knot does, so the question's spelling is
/// reused for names below it.
pub(crate) struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    limit: usize,
    counts: [u16; 3],
    /// Offsets of names (or name suffixes) already in the message.
    ptrs: [u16; 64],
    nptrs: usize,
}

impl<'b> Writer<'b> {
    /// Starts a response in `buf` (cleared) with a header copied from the
    /// request: id, opcode and RD; QR set. CD is cleared, as Knot does for
    /// zones it does not sign.
    pub(crate) fn new(buf: &'b mut Vec<u8>, limit: usize, id: u16, opcode: u8, rd: bool) -> Self {
        buf.clear();
        buf.extend_from_slice(&id.to_be_bytes());
        let mut f1 = 0x80 | (opcode << 3);
        if rd {
            f1 |= 1;
        }
        buf.extend_from_slice(&[f1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        Writer {
            buf,
            limit,
            counts: [0; 3],
            ptrs: [0; 64],
            nptrs: 0,
        }
    }

    /// Writes the question section with the name exactly as asked.
    pub(crate) fn question(&mut self, qname: &[u8], qtype: u16, qclass: u16) {
        let off = self.buf.len();
        self.buf.extend_from_slice(qname);
        self.buf.extend_from_slice(&qtype.to_be_bytes());
        self.buf.extend_from_slice(&qclass.to_be_bytes());
        self.buf[5] = 1;
        self.remember(off, qname);
    }

    /// Copies a raw question section (for error answers).
    pub(crate) fn raw_question(&mut self, raw: &[u8]) {
        self.buf.extend_from_slice(raw);
        self.buf[5] = 1;
    }

    /// Sets AA (an authoritative answer).
    pub(crate) fn set_aa(&mut self) {
        self.buf[2] |= 0x04;
    }
    /// Clears AA (a referral).
    pub(crate) fn clear_aa(&mut self) {
        self.buf[2] &= !0x04;
    }
    /// Sets TC: something did not fit.
    pub(crate) fn set_tc(&mut self) {
        self.buf[2] |= 0x02;
    }
    /// Sets the header's 4-bit rcode.
    pub(crate) fn set_rcode(&mut self, rcode: u8) {
        self.buf[3] = (self.buf[3] & 0xf0) | (rcode & 0x0f);
    }
    /// Reserves room (for the OPT record) that records may not use.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.limit = self.limit.saturating_sub(n);
    }
    /// Gives back what [`Writer::reserve`] took.
    pub(crate) fn unreserve(&mut self, n: usize) {
        self.limit += n;
    }

    fn remember(&mut self, off: usize, name: &[u8]) {
        let mut i = 0;
        while i < name.len() && name[i] != 0 && off + i < 0x4000 {
            if self.nptrs < self.ptrs.len() {
                #[allow(clippy::cast_possible_truncation)] // below 0x4000, checked above
                let at = (off + i) as u16;
                self.ptrs[self.nptrs] = at;
                self.nptrs += 1;
            }
            i += 1 + name[i] as usize;
        }
    }

    /// Finds an earlier occurrence of `suffix` (a wire name) in the message.
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        'cand: for &p in &self.ptrs[..self.nptrs] {
            let mut m = p as usize;
            let mut s = 0;
            let mut hops = 0;
            loop {
                let b = self.buf[m];
                if b & 0xc0 == 0xc0 {
                    m = (((b & 0x3f) as usize) << 8) | self.buf[m + 1] as usize;
                    hops += 1;
                    if hops > 16 {
                        continue 'cand;
                    }
                    continue;
                }
                let len = b as usize;
                if suffix[s] as usize != len {
                    continue 'cand;
                }
                if len == 0 {
                    return Some(p);
                }
                if !self.buf[m + 1..m + 1 + len].eq_ignore_ascii_case(&suffix[s + 1..s + 1 + len]) {
                    continue 'cand;
                }
                m += 1 + len;
                s += 1 + len;
            }
        }
        None
    }

    /// Writes a name, compressed against earlier names.
    pub(crate) fn name(&mut self, name: &[u8]) {
        let start = self.buf.len();
        let mut i = 0;
        while name[i] != 0 {
            if let Some(p) = self.find(&name[i..]) {
                self.buf.extend_from_slice(&(0xc000 | p).to_be_bytes());
                self.remember(start, &name[..i]);
                return;
            }
            let len = name[i] as usize;
            self.buf.extend_from_slice(&name[i..i + 1 + len]);
            i += 1 + len;
        }
        self.buf.push(0);
        self.remember(start, name);
    }

    /// Writes a pointer to an offset already in the message (the question
    /// name is at 12).
    fn pointer(&mut self, off: u16) {
        self.buf.extend_from_slice(&(0xc000 | off).to_be_bytes());
    }

    fn rdata(&mut self, rtype: u16, rdata: &[u8]) {
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        if rdata_names_compressible(rtype) {
            match rtype {
                MX => {
                    self.buf.extend_from_slice(&rdata[..2]);
                    self.name(&rdata[2..]);
                }
                SOA => {
                    let n1 = name_len(rdata);
                    let n2 = name_len(&rdata[n1..]);
                    self.name(&rdata[..n1]);
                    self.name(&rdata[n1..n1 + n2]);
                    self.buf.extend_from_slice(&rdata[n1 + n2..]);
                }
                _ => self.name(rdata),
            }
        } else {
            self.buf.extend_from_slice(rdata);
        }
        // The writer's limit keeps a message (and so any RDATA) under 64 KiB.
        #[allow(clippy::cast_possible_truncation)]
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// Writes a whole RRset or nothing. `owner` is either a wire name or
    /// `None` for "the question name" (a pointer to offset 12, keeping the
    /// asker's case).
    pub(crate) fn rrset<'r>(
        &mut self,
        section: Section,
        owner: Option<&[u8]>,
        rtype: u16,
        ttl: u32,
        rdatas: impl IntoIterator<Item = &'r [u8]>,
    ) -> Result<(), Full> {
        self.rrset_class(section, owner, rtype, CLASS_IN, ttl, rdatas)
    }

    /// [`Writer::rrset`] with a class other than IN.
    pub(crate) fn rrset_class<'r>(
        &mut self,
        section: Section,
        owner: Option<&[u8]>,
        rtype: u16,
        class: u16,
        ttl: u32,
        rdatas: impl IntoIterator<Item = &'r [u8]>,
    ) -> Result<(), Full> {
        let mark = (self.buf.len(), self.nptrs);
        let mut n = 0u16;
        for rd in rdatas {
            match owner {
                None => self.pointer(12),
                Some(o) => self.name(o),
            }
            self.buf.extend_from_slice(&rtype.to_be_bytes());
            self.buf.extend_from_slice(&class.to_be_bytes());
            self.buf.extend_from_slice(&ttl.to_be_bytes());
            self.rdata(rtype, rd);
            n += 1;
            if self.buf.len() > self.limit {
                self.buf.truncate(mark.0);
                self.nptrs = mark.1;
                return Err(Full);
            }
        }
        self.add_count(section, n);
        Ok(())
    }

    fn add_count(&mut self, section: Section, n: u16) {
        self.counts[section as usize] += n;
        let at = 6 + 2 * section as usize;
        self.buf[at..at + 2].copy_from_slice(&self.counts[section as usize].to_be_bytes());
    }

    /// Appends the OPT record (never refused: room was reserved for it).
    /// `ede` adds an Extended DNS Error option (RFC 8914) with that info code.
    pub(crate) fn opt(
        &mut self,
        payload: u16,
        ext_rcode: u8,
        dnssec_ok: bool,
        ecs: Option<(ClientSubnet, u8)>,
        ede: Option<u16>,
    ) {
        self.buf.push(0);
        self.buf.extend_from_slice(&OPT.to_be_bytes());
        self.buf.extend_from_slice(&payload.to_be_bytes());
        self.buf
            .extend_from_slice(&[ext_rcode, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        let rdlen_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        if let Some(code) = ede {
            self.buf.extend_from_slice(&OPT_EDE.to_be_bytes());
            self.buf.extend_from_slice(&2u16.to_be_bytes());
            self.buf.extend_from_slice(&code.to_be_bytes());
        }
        match ecs {
            None => {}
            Some((cs, scope)) => {
                let alen = (cs.source_prefix as usize).div_ceil(8);
                let olen = 4 + alen;
                self.buf.extend_from_slice(&OPT_ECS.to_be_bytes());
                #[allow(clippy::cast_possible_truncation)] // 4 + at most 16 address bytes
                let olen = olen as u16;
                self.buf.extend_from_slice(&olen.to_be_bytes());
                self.buf.extend_from_slice(&cs.family.to_be_bytes());
                self.buf.extend_from_slice(&[cs.source_prefix, scope]);
                self.buf.extend_from_slice(&cs.addr[..alen]);
            }
        }
        #[allow(clippy::cast_possible_truncation)] // a few options, far under 64 KiB
        let rdlen = (self.buf.len() - rdlen_at - 2) as u16;
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        self.add_count(Section::Additional, 1);
    }

    /// Size of the OPT record [`Writer::opt`] would write without EDE (EDE
    /// only goes on answers that carry no records).
    pub(crate) fn opt_len(ecs: Option<&ClientSubnet>) -> usize {
        11 + ecs.map_or(0, |c| 8 + (c.source_prefix as usize).div_ceil(8))
    }
}

/// The answer-section records of a response as (type, TTL, RDATA); names
/// are skipped. `None` when the message is malformed.
pub(crate) fn answer_records(p: &[u8]) -> Option<Vec<(u16, u32, Vec<u8>)>> {
    let qd = u16::from_be_bytes([*p.get(4)?, *p.get(5)?]);
    let an = u16::from_be_bytes([p[6], p[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = name_end(p, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let j = name_end(p, i)?;
        let (next, rtype) = skip_rr(p, i)?;
        let ttl = u32::from_be_bytes(p.get(j + 4..j + 8)?.try_into().ok()?);
        out.push((rtype, ttl, p[j + 10..next].to_vec()));
        i = next;
    }
    Some(out)
}

/// Option code of EDNS padding (RFC 7830).
const OPT_PADDING: u16 = 12;
/// The block responses are padded to over encrypted transports (RFC 8467's
/// recommendation for servers).
pub(crate) const PADDING_BLOCK: usize = 468;

/// Where a message's OPT record is: (offset after its owner name, offset
/// after the record). `None` without one or when malformed.
fn find_opt(p: &[u8]) -> Option<(usize, usize)> {
    let count = |at: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *p.get(at)?,
            *p.get(at + 1)?,
        ])))
    };
    let (qd, records) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut i = 12;
    for _ in 0..qd {
        i = name_end(p, i)? + 4;
    }
    for _ in 0..records {
        let j = name_end(p, i)?;
        let (next, rtype) = skip_rr(p, i)?;
        if rtype == OPT {
            return Some((j, next));
        }
        i = next;
    }
    None
}

/// True if a query's OPT record carries a Padding option (RFC 7830): its
/// answer must then be padded too.
pub(crate) fn has_padding(query: &[u8]) -> bool {
    let Some((j, end)) = find_opt(query) else {
        return false;
    };
    let rdata = &query[j + 10..end];
    let mut k = 0;
    while k + 4 <= rdata.len() {
        let code = u16::from_be_bytes([rdata[k], rdata[k + 1]]);
        if code == OPT_PADDING {
            return true;
        }
        k += 4 + usize::from(u16::from_be_bytes([rdata[k + 2], rdata[k + 3]]));
    }
    false
}

/// Pads a response to a multiple of `block` bytes with a Padding option in
/// its OPT record (RFC 7830, RFC 8467). Does nothing when the OPT record is
/// missing or not the last record, or when the padded message would not
/// fit in 65535 bytes.
pub(crate) fn pad(resp: &mut Vec<u8>, block: usize) {
    let Some((j, end)) = find_opt(resp) else {
        return;
    };
    if end != resp.len() {
        return;
    }
    let pad = (block - (resp.len() + 4) % block) % block;
    let rdlen = usize::from(u16::from_be_bytes([resp[j + 8], resp[j + 9]])) + 4 + pad;
    let (Ok(rdlen), Ok(pad16)) = (u16::try_from(rdlen), u16::try_from(pad)) else {
        return;
    };
    if resp.len() + 4 + pad > usize::from(u16::MAX) {
        return;
    }
    resp[j + 8..j + 10].copy_from_slice(&rdlen.to_be_bytes());
    resp.extend_from_slice(&OPT_PADDING.to_be_bytes());
    resp.extend_from_slice(&pad16.to_be_bytes());
    resp.resize(resp.len() + pad, 0);
}

/// The smallest TTL of a response's answer and authority records; `None`
/// when there are none or the message is malformed.
pub(crate) fn min_ttl(p: &[u8]) -> Option<u32> {
    let qd = u16::from_be_bytes([*p.get(4)?, *p.get(5)?]);
    let an = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
    let ns = u16::from_be_bytes([*p.get(8)?, *p.get(9)?]);
    let mut i = 12;
    for _ in 0..qd {
        i = name_end(p, i)? + 4;
    }
    let mut min = None;
    for _ in 0..u32::from(an) + u32::from(ns) {
        let j = name_end(p, i)?;
        let (next, _) = skip_rr(p, i)?;
        let ttl = u32::from_be_bytes(p.get(j + 4..j + 8)?.try_into().ok()?);
        min = Some(min.map_or(ttl, |m: u32| m.min(ttl)));
        i = next;
    }
    min
}

/// Transport a query came over (it sets the size limit of the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS size up to 1232.
    Udp,
    /// TCP: 65535 bytes.
    Tcp,
}

/// The address an A (4 bytes) or AAAA (16 bytes) RDATA holds.
pub(crate) fn rdata_to_ip(rdata: &[u8]) -> Option<std::net::IpAddr> {
    match rdata.len() {
        4 => Some(<[u8; 4]>::try_from(rdata).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(rdata).ok()?.into()),
        _ => None,
    }
}

/// Length of an uncompressed wire name at the start of `b`.
pub(crate) fn name_len(b: &[u8]) -> usize {
    let mut i = 0;
    while b[i] != 0 {
        i += 1 + b[i] as usize;
    }
    i + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&arcount.to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn padding_is_seen_in_queries_and_added_to_responses() {
        // OPT with a Padding option of 3 bytes.
        let padded = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 7, 0, 12, 0, 3, 0, 0, 0];
        let plain = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
        assert!(has_padding(&query(b"\x01a\0", 1, &padded, 1)));
        assert!(!has_padding(&query(b"\x01a\0", 1, &plain, 1)));
        assert!(!has_padding(&query(b"\x01a\0", 1, &[], 0)));
        let mut resp = query(b"\x01a\0", 1, &plain, 1);
        resp[2] |= 0x80;
        pad(&mut resp, PADDING_BLOCK);
        assert_eq!(resp.len(), PADDING_BLOCK);
        let (j, end) = find_opt(&resp).unwrap();
        assert_eq!(end, resp.len(), "the OPT record grew to the end");
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[j + 8], resp[j + 9]])),
            PADDING_BLOCK - (j + 10)
        );
        // Without an OPT record nothing changes.
        let mut bare = query(b"\x01a\0", 1, &[], 0);
        let before = bare.clone();
        pad(&mut bare, PADDING_BLOCK);
        assert_eq!(bare, before);
    }

    #[test]
    fn parses_query_with_opt_and_ecs() {
        let opt = [
            0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2,
        ];
        let p = query(b"\x03WwW\x07example\x03com\x00", A, &opt, 1);
        let r = Request::parse(&p).unwrap();
        assert_eq!(r.qname(), b"\x03WwW\x07example\x03com\x00");
        assert_eq!(r.qname_lower(), b"\x03www\x07example\x03com\x00");
        let e = r.edns.unwrap();
        assert_eq!(e.payload, 1232);
        assert!(e.dnssec_ok);
        let ecs = e.ecs.unwrap();
        assert_eq!((ecs.family, ecs.source_prefix), (1, 24));
        assert_eq!(&ecs.addr[..3], &[192, 0, 2]);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Request::parse(&[0; 5]).unwrap_err(), ParseOutcome::Drop);
        let mut p = query(b"\x03www\x00", A, &[], 0);
        p.push(0);
        assert!(matches!(
            Request::parse(&p),
            Err(ParseOutcome::Error {
                rcode: RCODE_FORMERR,
                ..
            })
        ));
        let p = query(b"\xc0\x0c", A, &[], 0);
        assert_eq!(Request::parse(&p).unwrap_err(), ParseOutcome::Drop);
        // ECS with bits set beyond the source prefix.
        let opt = [
            0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 23, 0, 192, 0, 3,
        ];
        assert!(Request::parse(&query(b"\x00", A, &opt, 1)).is_err());
    }

    #[test]
    fn compresses_case_insensitively() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, 512, 1, 0, false);
        w.question(b"\x03WWW\x07Example\x03com\x00", A, 1);
        w.rrset(Section::Answer, None, A, 60, [&[192u8, 0, 2, 1][..]])
            .unwrap();
        w.rrset(
            Section::Authority,
            Some(b"\x07example\x03com\x00"),
            NS,
            60,
            [&b"\x03ns1\x07example\x03com\x00"[..]],
        )
        .unwrap();
        // The authority owner is a pointer to "Example.com" inside the question.
        let owner_at = 12 + 17 + 4 + 16;
        assert_eq!(&buf[owner_at..owner_at + 2], &[0xc0, 16]);
        assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 1);
        assert_eq!(u16::from_be_bytes([buf[8], buf[9]]), 1);
    }
}
