//! Structure-aware fuzzing on stable Rust: proptest strategies that build
//! inputs the way the parsers see them (DNS queries with EDNS and ECS, zone
//! files, state documents in YAML and as etcd JSON values, HTTP query
//! strings and forwarding headers), plus raw bytes, each checked for no
//! panic and bounded output; `respond`'s answers to well-formed queries
//! must parse with hickory-proto.
//!
//! The suite runs [`CASES`] cases per target. `bench/fuzz.sh MINUTES` sets
//! `VDH_FUZZ_SECONDS` and runs each target that long with fresh seeds,
//! printing the case count. A failing case is written to
//! `target/fuzz-failures/` and should become a regression case in
//! `tests/fixtures/fuzz/` (replayed by [`regressions_stay_fixed`]).

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::config::snapshot::{Inputs, SavedSerials, Snapshot, SourceKind, ZoneText, compile};
use crate::front::dns::respond;
use crate::proto::name::Name;
use crate::proto::wire::Transport;

/// Cases per target in the test suite.
const CASES: u32 = 20_000;

const ZONE: &str = include_str!("../zones/yingzi.com.zone");
const STATE: &str = include_str!("../deploy/state.yaml");
/// A service answered per client network (ECS, percent), so ECS options
/// reach the network-dependent path.
const NETWORK_RULES: &str = r#"
      - name: lab
        match: { networks: [198.51.100.0/24, "2001:db8::/32"] }
        environment: test-v1
      - name: canary
        match: { percent: "25" }
        environment: prod-v1
"#;

fn inputs(zone: &str, state: &str) -> Inputs {
    Inputs {
        zones: vec![ZoneText {
            source: "yingzi.com.zone".into(),
            origin: Name::parse("yingzi.com.", None).expect("valid"),
            text: zone.into(),
        }],
        state_source: "state.yaml".into(),
        state_text: state.into(),
        keyed: None,
        revision: 1,
        kind: SourceKind::File,
    }
}

/// The shipped example with two network-dependent rules in front.
fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let state = STATE.replace("    rules:\n", &format!("    rules:{NETWORK_RULES}"));
        compile(&inputs(ZONE, &state), None, &SavedSerials::default())
            .expect("the example compiles")
    })
}

/// Runs `check` on `CASES` values of `strategy`, or for `VDH_FUZZ_SECONDS`
/// with fresh seeds; panics with the smallest failing value, written to
/// `target/fuzz-failures/<name>`.
fn drive<S>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let seconds: Option<u64> = std::env::var("VDH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut total: u64 = 0;
    let mut round: u64 = 0;
    loop {
        let cases = if deadline.is_some() { 5_000 } else { CASES };
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2_000,
            ..Config::default()
        };
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        if deadline.is_some() {
            seed[8..16].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
        }
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(e) = runner.run(&strategy, &check) {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(name), format!("{e:#?}"));
            panic!("fuzz target {name}: {e}");
        }
        total += u64::from(cases);
        round += 1;
        match deadline {
            Some(d) if Instant::now() < d => {}
            _ => break,
        }
    }
    println!("fuzz {name}: {total} cases");
}

/// Answers `packet` over both transports; checks the size bound.
fn answer(packet: &[u8], src: IpAddr) -> Result<Vec<(Transport, Vec<u8>)>, TestCaseError> {
    let mut out = Vec::new();
    for t in [Transport::Udp, Transport::Tcp] {
        let mut buf = Vec::new();
        if respond(snapshot(), packet, src, t, &mut buf).is_some() {
            let limit = match t {
                Transport::Udp => 1232,
                Transport::Tcp => 65_535,
            };
            prop_assert!(buf.len() <= limit, "{t:?} answer of {} bytes", buf.len());
            prop_assert!(buf.len() >= 12, "answer shorter than a header");
            out.push((t, buf));
        }
    }
    Ok(out)
}

fn src_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        Just(IpAddr::from([198, 51, 100, 7])),
    ]
}

/// An OPT record: UDP size, EDNS version, flags, options (code, data).
type Opt = (u16, u8, u16, Vec<(u16, Vec<u8>)>);

/// A DNS query as the parser meets it: names near and far from the zone,
/// any type and class, header flags, and an OPT record with options (ECS
/// of any family and length, cookies, padding, unknown).
#[derive(Debug, Clone)]
struct Query {
    id: u16,
    flags: u16,
    labels: Vec<Vec<u8>>,
    qtype: u16,
    qclass: u16,
    qdcount: u16,
    edns: Option<Opt>,
    trailing: Vec<u8>,
}

impl Query {
    fn packet(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.flags.to_be_bytes());
        p.extend_from_slice(&self.qdcount.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&u16::from(self.edns.is_some()).to_be_bytes());
        for l in &self.labels {
            p.push(u8::try_from(l.len().min(63)).expect("≤ 63"));
            p.extend_from_slice(&l[..l.len().min(63)]);
        }
        p.push(0);
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some((size, version, flags, options)) = &self.edns {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            p.push(0);
            p.push(*version);
            p.extend_from_slice(&flags.to_be_bytes());
            let rdata: Vec<u8> = options
                .iter()
                .flat_map(|(code, data)| {
                    let mut o = code.to_be_bytes().to_vec();
                    o.extend_from_slice(&u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
                    o.extend_from_slice(data);
                    o
                })
                .collect();
            p.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
            p.extend_from_slice(&rdata);
        }
        p.extend_from_slice(&self.trailing);
        p
    }

    /// One question, a standard query, no trailing bytes, a known class:
    /// the server must answer with a message hickory-proto parses.
    fn well_formed(&self) -> bool {
        self.qdcount == 1
            && self.trailing.is_empty()
            && self.flags & 0x8000 == 0
            && (self.flags >> 11) & 0xf == 0
            && self.labels.iter().all(|l| !l.is_empty() && l.len() <= 63)
            && self.labels.iter().map(|l| l.len() + 1).sum::<usize>() < 255
            && self.edns.as_ref().is_none_or(|(_, v, _, _)| *v == 0)
    }
}

fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            b"vdh-api".to_vec(), b"yingzi".to_vec(), b"com".to_vec(), b"ns1".to_vec(),
            b"vdh-api-v1".to_vec(), b"test".to_vec(), b"*".to_vec(), b"www".to_vec(),
        ]),
        1 => prop::collection::vec(any::<u8>(), 0..70),
        1 => "[a-zA-Z0-9-]{1,63}".prop_map(String::into_bytes),
    ]
}

fn ecs() -> impl Strategy<Value = Vec<u8>> {
    (
        0u16..4,
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(family, source, scope, addr)| {
            let mut o = family.to_be_bytes().to_vec();
            o.push(source);
            o.push(scope);
            o.extend_from_slice(&addr);
            o
        })
}

fn option() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        3 => ecs().prop_map(|d| (8, d)),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|d| (10, d)),
        1 => prop::collection::vec(Just(0u8), 0..64).prop_map(|d| (12, d)),
        1 => (any::<u16>(), prop::collection::vec(any::<u8>(), 0..16)),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    let qtype = prop_oneof![
        4 => prop::sample::select(vec![1u16, 28, 2, 6, 15, 16, 5, 33, 255, 252, 251, 46, 48, 43]),
        1 => any::<u16>(),
    ];
    let edns = prop::option::of((
        prop_oneof![Just(512u16), Just(1232), Just(4096), any::<u16>()],
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![Just(0u16), Just(0x8000), any::<u16>()],
        prop::collection::vec(option(), 0..4),
    ));
    (
        any::<u16>(),
        prop_oneof![4 => Just(0x0100u16), 1 => Just(0u16), 1 => any::<u16>()],
        prop::collection::vec(label(), 0..6),
        qtype,
        prop_oneof![6 => Just(1u16), 1 => Just(3u16), 1 => Just(255u16), 1 => any::<u16>()],
        prop_oneof![8 => Just(1u16), 1 => 0u16..4],
        edns,
        prop_oneof![8 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..20)],
    )
        .prop_map(
            |(id, flags, labels, qtype, qclass, qdcount, edns, trailing)| Query {
                id,
                flags,
                labels,
                qtype,
                qclass,
                qdcount,
                edns,
                trailing,
            },
        )
}

#[test]
fn dns_raw_bytes() {
    drive(
        "dns_raw_bytes",
        (prop::collection::vec(any::<u8>(), 0..600), src_addr()),
        |(packet, src)| answer(&packet, src).map(|_| ()),
    );
}

#[test]
fn dns_queries_with_edns_and_ecs() {
    use hickory_proto::op::Message;
    drive("dns_queries", (query(), src_addr()), |(q, src)| {
        let packet = q.packet();
        for (t, out) in answer(&packet, src)? {
            prop_assert_eq!(&out[..2], &packet[..2], "the id is echoed");
            if q.well_formed() {
                let m = Message::from_vec(&out);
                prop_assert!(m.is_ok(), "{t:?} answer does not parse: {:?}", m.err());
            }
        }
        Ok(())
    });
}

/// A zone file as a person writes one: directives, owners, TTLs, classes,
/// types and RDATA tokens (quotes, parentheses, escapes, comments), or
/// arbitrary text.
fn zone_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "@",
            "www",
            "*.w",
            "ns1",
            "3600",
            "1h",
            "IN",
            "CH",
            "A",
            "AAAA",
            "NS",
            "MX",
            "TXT",
            "SOA",
            "CNAME",
            "SRV",
            "CAA",
            "TYPE65280",
            "\\#",
            "0",
            "10",
            "192.0.2.1",
            "2001:db8::1",
            "\"a b\"",
            "\"\\\"",
            "(",
            ")",
            ";c",
            "$TTL",
            "$ORIGIN",
            "$INCLUDE",
            "x.",
            "\\046",
            "\\999",
            "..",
            "-1",
            "4294967296",
        ])
        .prop_map(String::from),
        "[ -~]{0,12}",
    ];
    let line = prop::collection::vec(token, 0..9).prop_map(|t| t.join(" "));
    prop_oneof![
        4 => prop::collection::vec(line, 0..12).prop_map(|l| format!("{ZONE}{}\n", l.join("\n"))),
        1 => "(?s).{0,400}",
    ]
}

#[test]
fn zone_files() {
    drive("zone_files", zone_text(), |text| {
        let lines = text.lines().count().max(1);
        if let Err(errors) = compile(&inputs(&text, STATE), None, &SavedSerials::default()) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(!e.message.is_empty());
                prop_assert!(
                    e.line.is_none_or(|l| l >= 1 && l <= lines + 1),
                    "line {:?} of {lines}",
                    e.line
                );
            }
        }
        Ok(())
    });
}

/// State documents: the example with fields replaced by odd values, or
/// arbitrary text.
fn state_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        prop::sample::select(vec![
            "null",
            "[]",
            "{}",
            "\"\"",
            "-1",
            "1e999",
            "\"*\"",
            "\">=1.0.0\"",
            "\"abc\"",
            "[192.0.2.1, \"::1\"]",
            "\"10.0.0.0/33\"",
            "\"101\"",
            "\"50.5\"",
            "&a x",
            "*a",
            "!!binary AA==",
            "{ a: { b: { c: [1, [2, [3]]] } } }",
            "\"\\u0000\"",
        ])
        .prop_map(String::from),
        "[ -~]{0,16}",
    ];
    let field = prop::sample::select(vec![
        "backend_version",
        "names",
        "addresses",
        "api_base_url",
        "status",
        "token_epoch",
        "hostnames",
        "legacy_sdk_version",
        "ttl",
        "refresh_s",
        "sdk_version",
        "environment",
        "latest_version",
        "url",
        "name",
    ]);
    prop_oneof![
        4 => prop::collection::vec((field, value), 1..5).prop_map(|edits| {
            let mut s = STATE.to_string();
            for (field, value) in edits {
                let key = format!("{field}: ");
                if let Some(i) = s.find(&key) {
                    let end = s[i..].find('\n').map_or(s.len(), |e| i + e);
                    s.replace_range(i..end, &format!("{key}{value}"));
                }
            }
            s
        }),
        1 => "(?s).{0,300}",
    ]
}

#[test]
fn state_documents_in_yaml() {
    drive("state_yaml", state_text(), |text| {
        if let Err(errors) = compile(&inputs(ZONE, &text), None, &SavedSerials::default()) {
            prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
        Ok(())
    });
}

#[test]
fn state_as_etcd_json_values() {
    use crate::config::keyed::{Entry, KeyedState};
    let key = prop::sample::select(vec![
        "environments/prod",
        "environments/x y",
        "services/vdh-api",
        "services/",
        "meta/allow_empty",
        "meta/policy",
        "zones/yingzi.com.",
        "other",
    ]);
    let value = prop_oneof![
        "(?s).{0,80}",
        Just(r#"{"backend_version":"v0","names":["a.yingzi.com"],"addresses":["192.0.2.1"],"api_base_url":"https://a"}"#.to_string()),
        Just(r#"{"hostnames":["vdh-api.yingzi.com"],"legacy_sdk_version":"0.9.0","rules":[{"name":"d","environment":"prod"}]}"#.to_string()),
        Just("true".to_string()),
        Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_string()),
    ];
    drive(
        "state_etcd",
        prop::collection::vec((key, value), 0..6),
        |entries| {
            let keyed = KeyedState {
                prefix: "/f".into(),
                entries: entries
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Entry {
                                value: v,
                                mod_revision: 2,
                            },
                        )
                    })
                    .collect(),
            };
            let mut i = inputs(ZONE, "");
            i.keyed = Some(keyed);
            i.kind = SourceKind::Etcd;
            if let Err(errors) = compile(&i, None, &SavedSerials::default()) {
                prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
            Ok(())
        },
    );
}

#[test]
fn http_query_strings_and_forwarding_headers() {
    let query = prop_oneof![
        "[ -~]{0,120}",
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "sdk_version",
                    "client_id",
                    "platform",
                    "app_id",
                    "wait",
                    "x",
                    "",
                    "name",
                ]),
                "[ -~]{0,20}|%[0-9a-fA-F]{2}|%[^0-9a-fA-F]?",
            ),
            0..6,
        )
        .prop_map(|kv| {
            kv.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
    ];
    let header = "[ -~]{0,80}";
    drive(
        "http",
        (query, header, header, src_addr()),
        |(q, xff, fwd, peer)| check_http(&q, &xff, &fwd, peer),
    );
}

/// One HTTP case: the query string's parameters checked (a 4xx or a valid
/// wait), read as form decoding reads them; the client address through
/// the forwarding headers, with loopback as the trusted proxy.
fn check_http(q: &str, xff: &str, fwd: &str, peer: IpAddr) -> Result<(), TestCaseError> {
    use axum::http::{HeaderMap, HeaderValue};
    match crate::front::http::config::parse_params(Some(q), Some(peer)) {
        Ok(p) => prop_assert!(p.wait.is_none_or(|w| w <= crate::front::http::MAX_WAIT_S)),
        Err(r) => prop_assert!(r.status().is_client_error(), "{}", r.status()),
    }
    // The borrowing query reader reads what form decoding reads.
    let ours: Vec<(String, String)> = crate::front::http::config::query_pairs(q)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    prop_assert_eq!(ours, theirs);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(xff) {
        h.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(fwd) {
        h.insert("forwarded", v);
    }
    let proxies =
        crate::front::http::client_addr::Proxies(vec!["127.0.0.0/8".parse().expect("net")]);
    let client = proxies.client(peer, &h);
    if proxies.trusts(peer) {
        // Through a trusted proxy: the peer or an address the headers name.
        prop_assert!(
            client == peer
                || xff.contains(&client.to_string())
                || fwd.contains(&client.to_string())
                || xff.contains(':')
                || fwd.contains(':'),
            "{client} from {peer}"
        );
    } else {
        prop_assert_eq!(client, peer, "an untrusted peer is never replaced");
    }
    Ok(())
}

/// Every case kept in `tests/fixtures/fuzz/` (a crash found once, or a
/// hand-made hard case) stays answered: raw DNS packets (`*.bin`), zone
/// texts (`*.zone`), state documents (`*.yaml`), HTTP cases (`*.http`).
#[test]
fn regressions_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("tests/fixtures/fuzz") {
        let p = e.expect("entry").path();
        let bytes = std::fs::read(&p).expect("readable");
        match p.extension().and_then(|x| x.to_str()) {
            Some("bin") => {
                answer(&bytes, IpAddr::from([192, 0, 2, 1])).expect("bounded answer");
            }
            Some("zone") => {
                let _ = compile(
                    &inputs(&String::from_utf8_lossy(&bytes), STATE),
                    None,
                    &SavedSerials::default(),
                );
            }
            Some("http") => {
                // Lines: query, X-Forwarded-For, Forwarded, peer address.
                let text = String::from_utf8_lossy(&bytes);
                let l: Vec<&str> = text.split('\n').collect();
                check_http(l[0], l[1], l[2], l[3].trim().parse().expect("peer"))
                    .expect("an HTTP case holds");
            }
            Some("yaml") => {
                let _ = compile(
                    &inputs(ZONE, &String::from_utf8_lossy(&bytes)),
                    None,
                    &SavedSerials::default(),
                );
            }
            _ => continue,
        }
        n += 1;
    }
    assert!(n >= 3, "{n} regression cases in {}", dir.display());
}
