//! Record types, classes and response codes as plain numbers, with the
//! mnemonics the zone parser and the logs use.

pub(crate) const A: u16 = 1;
pub(crate) const NS: u16 = 2;
pub(crate) const CNAME: u16 = 5;
pub(crate) const SOA: u16 = 6;
pub(crate) const PTR: u16 = 12;
pub(crate) const NULL: u16 = 10;
pub(crate) const HINFO: u16 = 13;
pub(crate) const MX: u16 = 15;
pub(crate) const TXT: u16 = 16;
pub(crate) const AAAA: u16 = 28;
pub(crate) const SRV: u16 = 33;
pub(crate) const NAPTR: u16 = 35;
pub(crate) const DNAME: u16 = 39;
pub(crate) const OPT: u16 = 41;
pub(crate) const DS: u16 = 43;
pub(crate) const SSHFP: u16 = 44;
pub(crate) const RRSIG: u16 = 46;
pub(crate) const NSEC: u16 = 47;
pub(crate) const DNSKEY: u16 = 48;
pub(crate) const NSEC3: u16 = 50;
pub(crate) const NSEC3PARAM: u16 = 51;
pub(crate) const TLSA: u16 = 52;
pub(crate) const SPF: u16 = 99;
pub(crate) const TKEY: u16 = 249;
pub(crate) const TSIG: u16 = 250;
pub(crate) const IXFR: u16 = 251;
pub(crate) const AXFR: u16 = 252;
pub(crate) const MAILB: u16 = 253;
pub(crate) const MAILA: u16 = 254;
pub(crate) const ANY: u16 = 255;
pub(crate) const CAA: u16 = 257;

pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const CLASS_CH: u16 = 3;
pub(crate) const CLASS_HS: u16 = 4;
pub(crate) const CLASS_NONE: u16 = 254;
pub(crate) const CLASS_ANY: u16 = 255;

pub(crate) const OPCODE_QUERY: u8 = 0;
pub(crate) const OPCODE_NOTIFY: u8 = 4;
pub(crate) const OPCODE_UPDATE: u8 = 5;

pub(crate) const RCODE_NOERROR: u8 = 0;
pub(crate) const RCODE_FORMERR: u8 = 1;
pub(crate) const RCODE_NXDOMAIN: u8 = 3;
pub(crate) const RCODE_NOTIMP: u8 = 4;
pub(crate) const RCODE_REFUSED: u8 = 5;
pub(crate) const RCODE_NOTAUTH: u8 = 9;
/// Extended rcode 16 (RFC 6891): upper 8 bits go in the OPT TTL.
pub(crate) const RCODE_BADVERS: u16 = 16;

const NAMES: &[(u16, &str)] = &[
    (A, "A"),
    (NS, "NS"),
    (CNAME, "CNAME"),
    (SOA, "SOA"),
    (PTR, "PTR"),
    (NULL, "NULL"),
    (HINFO, "HINFO"),
    (MX, "MX"),
    (TXT, "TXT"),
    (AAAA, "AAAA"),
    (SRV, "SRV"),
    (NAPTR, "NAPTR"),
    (DNAME, "DNAME"),
    (OPT, "OPT"),
    (DS, "DS"),
    (SSHFP, "SSHFP"),
    (RRSIG, "RRSIG"),
    (NSEC, "NSEC"),
    (DNSKEY, "DNSKEY"),
    (NSEC3, "NSEC3"),
    (NSEC3PARAM, "NSEC3PARAM"),
    (TLSA, "TLSA"),
    (SPF, "SPF"),
    (TKEY, "TKEY"),
    (TSIG, "TSIG"),
    (IXFR, "IXFR"),
    (AXFR, "AXFR"),
    (MAILB, "MAILB"),
    (MAILA, "MAILA"),
    (ANY, "ANY"),
    (CAA, "CAA"),
];

/// The mnemonic of a type, or `TYPEnnn` (RFC 3597).
pub(crate) fn type_name(t: u16) -> String {
    NAMES
        .iter()
        .find(|(n, _)| *n == t)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("TYPE{t}"))
}

/// A type from its mnemonic or `TYPEnnn`, ignoring case.
pub fn type_from_str(s: &str) -> Option<u16> {
    if let Some(&(n, _)) = NAMES.iter().find(|(_, m)| m.eq_ignore_ascii_case(s)) {
        return Some(n);
    }
    let upper = s.to_ascii_uppercase();
    upper.strip_prefix("TYPE").and_then(|d| d.parse().ok())
}

/// A class from its mnemonic or `CLASSnnn`, ignoring case.
pub fn class_from_str(s: &str) -> Option<u16> {
    match s.to_ascii_uppercase().as_str() {
        "IN" => Some(CLASS_IN),
        "CH" | "CHAOS" => Some(CLASS_CH),
        "HS" => Some(CLASS_HS),
        "NONE" => Some(CLASS_NONE),
        "ANY" => Some(CLASS_ANY),
        u => u.strip_prefix("CLASS").and_then(|d| d.parse().ok()),
    }
}

/// Meta and question-only types (RFC 6895 §3.1): never stored in a zone.
pub(crate) fn is_meta(t: u16) -> bool {
    t == OPT || (128..=255).contains(&t)
}

/// Types whose RDATA names may be compressed on the wire (RFC 3597 §4).
pub(crate) fn rdata_names_compressible(t: u16) -> bool {
    matches!(t, NS | CNAME | SOA | PTR | MX | 3 | 4 | 7 | 8 | 9 | 14)
}
