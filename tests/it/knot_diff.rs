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
            let rdata: String = p[j + 10..j + 10 + rdlen].iter().map(|b| format!("{b:02x}")).collect();
            if rtype != 41 {
                out[s].push(format!("{name} {ttl} TYPE{rtype} {rdata}"));
            }
            i = j + 10 + rdlen;
        }
        out[s].sort();
    }
    out
}

fn summarize(resp: &[u8]) -> Summary {
    let m = match Message::from_vec(resp) {
        Ok(m) => m,
        Err(_) => {
            let [answer, authority, additional] = raw_sections(resp);
            let opt = resp.windows(3).rposition(|w| w == [0, 0, 41]).map(|at| (resp[at + 7] & 0x80 != 0, u16::from_be_bytes([resp[at + 3], resp[at + 4]])));
            return Summary {
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
        }
    };
    let rr = |rs: &[hickory_proto::rr::Record]| {
        let mut v: Vec<String> = rs
            .iter()
            .map(|r| {
                // Names inside RDATA are compared without case: which
                // spelling compression reuses is not part of the answer.
                let t = r.record_type();
                let data = r.data.to_string();
                let data = if matches!(u16::from(t), 2 | 5 | 6 | 12 | 15 | 33 | 35 | 39) { data.to_lowercase() } else { data };
                format!("{} {} {} {}", r.name.to_ascii().to_lowercase(), r.ttl, t, data)
            })
            .collect();
        v.sort();
        v
    };
    let ext = m.edns.as_ref().map_or(0u16, |e| e.rcode_high() as u16) << 4;
    Summary {
        rcode: ext | (resp[3] & 0xf) as u16,
        aa: resp[2] & 0x04 != 0,
        tc: resp[2] & 0x02 != 0,
        rd: resp[2] & 0x01 != 0,
        question: question_bytes(resp),
        answer: rr(&m.answers),
        authority: rr(&m.authorities),
        additional: rr(&m.additionals),
        opt: m.edns.as_ref().map(|e| (e.flags().dnssec_ok, e.max_payload())),
    }
}

/// Parses one corpus line: `<qname> <QTYPE> [tcp] [noedns] [bufsize=N] [do] [class=CH] [rd]`.
fn parse_line(line: &str) -> Option<Query> {
    let mut it = line.split_whitespace();
    let name = it.next()?;
    let qtype = vdh_edge::dns::types::type_from_str(it.next()?).expect("known qtype in corpus");
    let mut q = Query::new(name, qtype);
    for opt in it {
        match opt {
            "tcp" => q.tcp = true,
            "noedns" => q.edns = None,
            "do" => q.do_bit = true,
            "rd" => q.rd = true,
            o if o.starts_with("bufsize=") => q.edns = Some(o[8..].parse().expect("bufsize number")),
            o if o.starts_with("class=") => q.class = vdh_edge::dns::types::class_from_str(&o[6..]).expect("class"),
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
    for line in corpus.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let q = parse_line(line).unwrap();
        total += 1;
        let ours = q.send(edge.dns).unwrap_or_else(|e| panic!("vdh-edge gave no answer to {line}: {e}"));
        let theirs = q.send(knot.addr).unwrap_or_else(|e| panic!("knot gave no answer to {line}: {e}"));
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
            writeln!(report, "\n== {line}\n   vdh-edge: {a:?}\n   knot:     {b:?}").unwrap();
        }
    }
    assert!(total >= 200, "the corpus must hold at least 200 queries, found {total}");
    assert_eq!(failures, 0, "{failures} of {total} queries differ from Knot:{report}");
}
