//! Differential test: vdh-edge and Knot DNS load the same zone files and
//! must give the same answers to a corpus of queries (rcode, AA/TC, the
//! question as asked, and each section as a set of records with TTLs).

use std::fmt::Write;

use hickory_proto::op::Message;

use crate::dnsclient::Query;
use crate::harness::{TestServer, repo};
use crate::knot::Knot;

#[derive(Debug, PartialEq, Eq)]
struct Summary {
    /// The whole flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode).
    flags: u16,
    /// The OPT record's RDATA (its options), when present.
    opt_rdata: Option<Vec<u8>>,
    rcode: u16,
    aa: bool,
    tc: bool,
    rd: bool,
    question: Vec<u8>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    /// OPT present, its DO bit and advertised payload.
    opt: Option<(bool, u16)>,
}

fn question_bytes(resp: &[u8]) -> Vec<u8> {
    if resp.len() < 12 || resp[5] == 0 {
        return vec![];
    }
    let mut i = 12;
    while i < resp.len() && resp[i] != 0 {
        i += 1 + resp[i] as usize;
    }
    resp[12..(i + 5).min(resp.len())].to_vec()
}

/// Reads a possibly compressed name at `i`; returns it in lower case and
/// the offset after it.
fn raw_name(p: &[u8], mut i: usize) -> (String, usize) {
    let mut out = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = p[i] as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(i + 2);
            i = ((len & 0x3f) << 8) | p[i + 1] as usize;
            continue;
        }
        if len == 0 {
            end.get_or_insert(i + 1);
            break;
        }
        out.push_str(&String::from_utf8_lossy(&p[i + 1..i + 1 + len]).to_lowercase());
        out.push('.');
        i += 1 + len;
    }
    (if out.is_empty() { ".".into() } else { out }, end.unwrap())
}

/// Sections parsed without hickory, for messages it refuses (e.g. a record
/// with empty RDATA of an unknown type). RDATA is shown as hex.
fn raw_sections(p: &[u8]) -> [Vec<String>; 3] {
    let count = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]) as usize;
    let mut i = question_bytes(p).len() + 12;
    let mut out: [Vec<String>; 3] = Default::default();
    for (s, n) in [count(6), count(8), count(10)].into_iter().enumerate() {
        for _ in 0..n {
            let (name, j) = raw_name(p, i);
            let rtype = u16::from_be_bytes([p[j], p[j + 1]]);
            let ttl = u32::from_be_bytes([p[j + 4], p[j + 5], p[j + 6], p[j + 7]]);
            let rdlen = count(j + 8);
            let rdata: String = p[j + 10..j + 10 + rdlen]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if rtype != 41 {
                out[s].push(format!("{name} {ttl} TYPE{rtype} {rdata}"));
            }
            i = j + 10 + rdlen;
        }
        out[s].sort();
    }
    out
}

/// The RDATA of the OPT record (the last additional record when present).
fn opt_rdata(p: &[u8]) -> Option<Vec<u8>> {
    let arcount = u16::from_be_bytes([p[10], p[11]]);
    if arcount == 0 {
        return None;
    }
    // Walk to the last record.
    let count = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]) as usize;
    let mut i = question_bytes(p).len() + 12;
    let total = count(6) + count(8) + count(10);
    for n in 0..total {
        let (_, j) = raw_name(p, i);
        let rtype = u16::from_be_bytes([p[j], p[j + 1]]);
        let rdlen = count(j + 8);
        if n == total - 1 && rtype == 41 {
            return Some(p[j + 10..j + 10 + rdlen].to_vec());
        }
        i = j + 10 + rdlen;
    }
    None
}

fn summarize(resp: &[u8]) -> Summary {
    let Ok(m) = Message::from_vec(resp) else {
        let [answer, authority, additional] = raw_sections(resp);
        let opt = resp.windows(3).rposition(|w| w == [0, 0, 41]).map(|at| {
            (
                resp[at + 7] & 0x80 != 0,
                u16::from_be_bytes([resp[at + 3], resp[at + 4]]),
            )
        });
        return Summary {
            flags: u16::from_be_bytes([resp[2], resp[3]]),
            opt_rdata: opt_rdata(resp),
            rcode: (resp[3] & 0xf) as u16,
            aa: resp[2] & 0x04 != 0,
            tc: resp[2] & 0x02 != 0,
            rd: resp[2] & 0x01 != 0,
            question: question_bytes(resp),
            answer,
            authority,
            additional,
            opt,
        };
    };
    let rr = |rs: &[hickory_proto::rr::Record]| {
        let mut v: Vec<String> = rs
            .iter()
            .map(|r| {
                // Names inside RDATA are compared without case: which
                // spelling compression reuses is not part of the answer.
                let t = r.record_type();
                let data = r.data.to_string();
                let data = if matches!(u16::from(t), 2 | 5 | 6 | 12 | 15 | 33 | 35 | 39) {
                    data.to_lowercase()
                } else {
                    data
                };
                format!(
                    "{} {} {} {}",
                    r.name.to_ascii().to_lowercase(),
                    r.ttl,
                    t,
                    data
                )
            })
            .collect();
        v.sort();
        v
    };
    let ext = m.edns.as_ref().map_or(0u16, |e| e.rcode_high() as u16) << 4;
    Summary {
        flags: u16::from_be_bytes([resp[2], resp[3]]),
        opt_rdata: opt_rdata(resp),
        rcode: ext | (resp[3] & 0xf) as u16,
        aa: resp[2] & 0x04 != 0,
        tc: resp[2] & 0x02 != 0,
        rd: resp[2] & 0x01 != 0,
        question: question_bytes(resp),
        answer: rr(&m.answers),
        authority: rr(&m.authorities),
        additional: rr(&m.additionals),
        opt: m
            .edns
            .as_ref()
            .map(|e| (e.flags().dnssec_ok, e.max_payload())),
    }
}

/// Parses one corpus line: `<qname> <QTYPE> [tcp] [noedns] [bufsize=N] [do] [class=CH] [rd]`.
fn parse_line(line: &str) -> Option<Query> {
    let mut it = line.split_whitespace();
    let name = it.next()?;
    let qtype = vdh_edge::type_from_str(it.next()?).expect("known qtype in corpus");
    let mut q = Query::new(name, qtype);
    for opt in it {
        match opt {
            "tcp" => q.tcp = true,
            "noedns" => q.edns = None,
            "do" => q.do_bit = true,
            "rd" => q.rd = true,
            o if o.starts_with("bufsize=") => {
                q.edns = Some(o[8..].parse().expect("bufsize number"));
            }
            o if o.starts_with("class=") => {
                q.class = vdh_edge::class_from_str(&o[6..]).expect("class");
            }
            o => panic!("unknown corpus option {o}"),
        }
    }
    Some(q)
}

#[test]
fn answers_match_knot_on_the_corpus() {
    let fixtures = repo().join("tests/fixtures/diff");
    let zones = fixtures.join("zones");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.yaml");
    std::fs::write(&state, "{}\n").unwrap();
    let cache = tmp.path().join("cache");
    let edge = TestServer::start(&zones, &state, &["--cache-dir", cache.to_str().unwrap()]);
    let knot = Knot::start(&zones);
    let corpus = std::fs::read_to_string(fixtures.join("queries.txt")).unwrap();
    let mut total = 0;
    let mut report = String::new();
    let mut failures = 0;
    for line in corpus
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let q = parse_line(line).unwrap();
        total += 1;
        let ours = q
            .send(edge.dns)
            .unwrap_or_else(|e| panic!("vdh-edge gave no answer to {line}: {e}"));
        let theirs = q
            .send(knot.addr)
            .unwrap_or_else(|e| panic!("knot gave no answer to {line}: {e}"));
        let (mut a, mut b) = (summarize(&ours), summarize(&theirs));
        // The server version string differs by design.
        if q.class == 3 {
            for s in [&mut a, &mut b] {
                for r in &mut s.answer {
                    if let Some(at) = r.find(" TXT ") {
                        r.truncate(at + 4);
                    }
                }
            }
        }
        if a != b {
            failures += 1;
            writeln!(
                report,
                "\n== {line}\n   vdh-edge: {a:?}\n   knot:     {b:?}"
            )
            .unwrap();
        }
    }
    assert!(
        total >= 200,
        "the corpus must hold at least 200 queries, found {total}"
    );
    assert_eq!(
        failures, 0,
        "{failures} of {total} queries differ from Knot:{report}"
    );
}

/// Packets with header, opcode and EDNS anomalies: whether an answer comes,
/// and if so its every byte after the id, must match Knot.
#[allow(clippy::too_many_lines)] // a table of packets, one per case
fn raw_cases() -> Vec<(&'static str, Vec<u8>, bool)> {
    let q = |flags: u16, counts: [u16; 4], name: &[u8], qtype: u16, class: u16, tail: &[u8]| {
        let mut p = vec![0x12, 0x34];
        p.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(name);
        if !name.is_empty() {
            p.extend_from_slice(&qtype.to_be_bytes());
            p.extend_from_slice(&class.to_be_bytes());
        }
        p.extend_from_slice(tail);
        p
    };
    let www = b"\x03www\x07example\x03com\x00";
    let apex = b"\x07example\x03com\x00";
    let opt = |version: u8, rdata: &[u8]| {
        let mut o = vec![0, 0, 41, 0x04, 0xd0, 0, version, 0, 0];
        o.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        o.extend_from_slice(rdata);
        o
    };
    let plain_opt = opt(0, &[]);
    let mut two_opts = plain_opt.clone();
    two_opts.extend_from_slice(&plain_opt);
    let mut opt_www_owner = www.to_vec();
    opt_www_owner.extend_from_slice(&plain_opt[1..]);
    let a_rr = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9];
    vec![
        ("no question", q(0, [0, 0, 0, 0], b"", 0, 0, &[]), false),
        (
            "no question, OPT",
            q(0, [0, 0, 0, 1], b"", 0, 0, &plain_opt),
            false,
        ),
        (
            "two questions",
            q(
                0,
                [2, 0, 0, 0],
                www,
                1,
                1,
                &[3, b'f', b'o', b'o', 0, 0, 1, 0, 1],
            ),
            false,
        ),
        (
            "answer record ignored",
            q(0, [1, 1, 0, 0], www, 1, 1, &a_rr),
            false,
        ),
        (
            "answer count without record",
            q(0, [1, 1, 0, 0], www, 1, 1, &[]),
            false,
        ),
        ("QR set", q(0x8000, [1, 0, 0, 0], www, 1, 1, &[]), false),
        (
            "TC set in query",
            q(0x0200, [1, 0, 0, 0], www, 1, 1, &[]),
            false,
        ),
        (
            "all flags set",
            q(0x05f0 | 0x0100, [1, 0, 0, 0], www, 1, 1, &[]),
            false,
        ),
        (
            "rcode in query",
            q(0x0005, [1, 0, 0, 0], www, 1, 1, &[]),
            false,
        ),
        ("IQUERY", q(1 << 11, [1, 0, 0, 0], www, 1, 1, &[]), false),
        ("STATUS", q(2 << 11, [1, 0, 0, 0], www, 1, 1, &[]), false),
        (
            "opcode 15 with OPT",
            q(15 << 11, [1, 0, 0, 1], www, 1, 1, &plain_opt),
            false,
        ),
        ("NOTIFY", q(4 << 11, [1, 0, 0, 0], apex, 6, 1, &[]), false),
        (
            "NOTIFY without question",
            q(4 << 11, [0, 0, 0, 0], b"", 0, 0, &[]),
            false,
        ),
        (
            "UPDATE SOA",
            q(5 << 11, [1, 0, 0, 0], apex, 6, 1, &[]),
            false,
        ),
        ("UPDATE A", q(5 << 11, [1, 0, 0, 0], apex, 1, 1, &[]), false),
        (
            "IQUERY class HS",
            q(1 << 11, [1, 0, 0, 0], www, 1, 4, &[]),
            false,
        ),
        ("class HS", q(0, [1, 0, 0, 0], www, 1, 4, &[]), false),
        ("class NONE", q(0, [1, 0, 0, 0], www, 1, 254, &[]), false),
        (
            "trailing garbage",
            q(0, [1, 0, 0, 0], www, 1, 1, &[0xde, 0xad, 0xbe]),
            false,
        ),
        (
            "trailing garbage after OPT",
            q(
                0,
                [1, 0, 0, 1],
                www,
                1,
                1,
                &[&plain_opt[..], &[1, 2]].concat(),
            ),
            false,
        ),
        (
            "trailing garbage over TCP",
            q(0, [1, 0, 0, 0], www, 1, 1, &[0xde, 0xad]),
            true,
        ),
        (
            "EDNS version 1",
            q(0, [1, 0, 0, 1], www, 1, 1, &opt(1, &[])),
            false,
        ),
        (
            "EDNS version 1 out of zone",
            q(
                0,
                [1, 0, 0, 1],
                b"\x03www\x07example\x03org\x00",
                1,
                1,
                &opt(1, &[]),
            ),
            false,
        ),
        (
            "EDNS version 1 over TCP",
            q(0, [1, 0, 0, 1], www, 1, 1, &opt(1, &[])),
            true,
        ),
        (
            "two OPT records",
            q(0, [1, 0, 0, 2], www, 1, 1, &two_opts),
            false,
        ),
        (
            "OPT in the answer section",
            q(0, [1, 1, 0, 0], www, 1, 1, &plain_opt),
            false,
        ),
        (
            "OPT owner not root",
            q(0, [1, 0, 0, 1], www, 1, 1, &opt_www_owner),
            false,
        ),
        (
            "option longer than RDATA",
            q(0, [1, 0, 0, 1], www, 1, 1, &opt(0, &[0, 10, 0, 8])),
            false,
        ),
        (
            "RDATA shorter than an option header",
            q(0, [1, 0, 0, 1], www, 1, 1, &opt(0, &[0, 10])),
            false,
        ),
        (
            "unknown option",
            q(
                0,
                [1, 0, 0, 1],
                www,
                1,
                1,
                &opt(0, &[0xfd, 0xe9, 0, 2, 1, 2]),
            ),
            false,
        ),
        (
            "padding option",
            q(
                0,
                [1, 0, 0, 1],
                www,
                1,
                1,
                &opt(0, &[0, 12, 0, 4, 0, 0, 0, 0]),
            ),
            false,
        ),
        (
            "cookie option",
            q(
                0,
                [1, 0, 0, 1],
                www,
                1,
                1,
                &opt(0, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
            ),
            false,
        ),
        (
            "out of zone with EDNS",
            q(
                0,
                [1, 0, 0, 1],
                b"\x03www\x07example\x03org\x00",
                1,
                1,
                &plain_opt,
            ),
            false,
        ),
        (
            "out of zone without EDNS",
            q(0, [1, 0, 0, 0], b"\x03www\x07example\x03org\x00", 1, 1, &[]),
            false,
        ),
        (
            "label over 63 bytes",
            q(
                0,
                [1, 0, 0, 0],
                &[&[64u8][..], &[b'a'; 64][..], &[0][..]].concat(),
                1,
                1,
                &[],
            ),
            false,
        ),
        (
            "pointer in question",
            q(0, [1, 0, 0, 0], &[0xc0, 0x0c], 1, 1, &[]),
            false,
        ),
        (
            "question cut short",
            q(0, [1, 0, 0, 0], www, 1, 1, &[])[..20].to_vec(),
            false,
        ),
        ("short header", vec![0x12, 0x34, 0, 0, 0, 1], false),
    ]
}

#[test]
fn header_and_edns_anomalies_match_knot() {
    let zones = repo().join("tests/fixtures/diff/zones");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.yaml");
    std::fs::write(&state, "{}\n").unwrap();
    let edge = TestServer::start(&zones, &state, &[]);
    let knot = Knot::start(&zones);
    let timeout = std::time::Duration::from_millis(700);
    let mut report = String::new();
    for (what, packet, tcp) in raw_cases() {
        let send = |to| {
            if tcp {
                crate::dnsclient::tcp(to, &packet, timeout).ok()
            } else {
                crate::dnsclient::udp(to, &packet, timeout).ok()
            }
        };
        let (ours, theirs) = (send(edge.dns), send(knot.addr));
        let strip = |r: Option<Vec<u8>>| r.map(|r| r[2..].to_vec());
        let (a, b) = (strip(ours), strip(theirs));
        if a != b {
            writeln!(
                report,
                "\n== {what}\n   vdh-edge: {a:02x?}\n   knot:     {b:02x?}"
            )
            .unwrap();
        }
    }
    assert!(report.is_empty(), "answers differ from Knot:{report}");
}

/// The UDP answer cache gives byte-identical answers to the full lookup over
/// the whole corpus, also for a second asking with other case and id.
#[test]
fn cached_and_uncached_answers_are_byte_identical() {
    let fixtures = repo().join("tests/fixtures/diff");
    let zones = fixtures.join("zones");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.yaml");
    std::fs::write(&state, "{}\n").unwrap();
    let cached = TestServer::start(&zones, &state, &[]);
    let plain = TestServer::start(&zones, &state, &["--no-answer-cache"]);
    let corpus = std::fs::read_to_string(fixtures.join("queries.txt")).unwrap();
    let mut compared = 0;
    for line in corpus
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let q = parse_line(line).unwrap();
        if q.tcp {
            continue;
        }
        // Flip the case of every other letter for the second asking.
        let mut q2 = q.clone();
        q2.name = q
            .name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        for q in [&q, &q, &q2] {
            let p = q.packet(0x5151);
            let a =
                crate::dnsclient::udp(cached.dns, &p, std::time::Duration::from_secs(2)).unwrap();
            let b =
                crate::dnsclient::udp(plain.dns, &p, std::time::Duration::from_secs(2)).unwrap();
            assert_eq!(a, b, "answers differ for {line} asked as {}", q.name);
            compared += 1;
        }
    }
    assert!(compared > 500, "{compared}");
}
