//! DNS routing by client network with EDNS Client Subnet (SPEC §4).

use hickory_proto::op::Message;

use crate::dnsclient::Query;
use crate::harness::{TestServer, repo};

fn server() -> TestServer {
    let r = repo();
    TestServer::start(
        &r.join("zones"),
        &r.join("tests/fixtures/states/ecs.yaml"),
        &[],
    )
}

/// An ECS option body for `addr` with `prefix` bits.
fn ecs_body(addr: std::net::IpAddr, prefix: u8) -> Vec<u8> {
    let (family, bytes): (u16, Vec<u8>) = match addr {
        std::net::IpAddr::V4(a) => (1, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (2, a.octets().to_vec()),
    };
    let n = (prefix as usize).div_ceil(8);
    let mut b = family.to_be_bytes().to_vec();
    b.extend_from_slice(&[prefix, 0]);
    b.extend_from_slice(&bytes[..n]);
    b
}

/// Asks `name` `qtype` with ECS; returns (addresses, ECS in the answer as
/// (source, scope)).
fn ask(
    s: &TestServer,
    name: &str,
    qtype: u16,
    ecs: Option<(&str, u8)>,
) -> (Vec<String>, Option<(u8, u8)>) {
    let mut q = Query::new(name, qtype);
    if let Some((a, p)) = ecs {
        q.options.push((8, ecs_body(a.parse().unwrap(), p)));
    }
    let r = q.send(s.dns).unwrap();
    assert_eq!(r[3] & 0xf, 0, "rcode for {name} {ecs:?}");
    let m = Message::from_vec(&r).unwrap();
    let mut addrs: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    addrs.sort();
    (addrs, echoed_ecs(&r))
}

/// The ECS option of a response's OPT record, as (source prefix, scope).
fn echoed_ecs(r: &[u8]) -> Option<(u8, u8)> {
    let i = r
        .windows(4)
        .rposition(|w| w == [0, 8, 0, w[3]] && w[3] >= 4)?;
    Some((r[i + 6], r[i + 7]))
}

/// A /24 inside 192.0.2.0-203.0.x whose cohort bucket is (or is not) below 50%.
fn net24(inside: bool) -> String {
    for i in 0..255u32 {
        let net = format!("100.64.{i}.0/24");
        let b = vdh_edge::bucket("vdh-api/half", net.as_bytes());
        if (b < 5000) == inside {
            return format!("100.64.{i}.7");
        }
    }
    unreachable!("no /24 on that side of the split")
}

#[test]
fn percent_split_by_network_with_scope_24() {
    let s = server();
    let (a, ea) = ask(&s, "vdh-api.yingzi.com", 1, Some((&net24(true), 24)));
    let (b, eb) = ask(&s, "vdh-api.yingzi.com", 1, Some((&net24(false), 24)));
    assert_eq!(a, vec!["203.0.113.10"], "inside the 50% cohort: prod-v1");
    assert_eq!(b, vec!["192.0.2.10"], "outside: prod");
    assert_eq!(ea, Some((24, 24)));
    assert_eq!(eb, Some((24, 24)));
    // A /32 source is masked to /24: same answer as the /24.
    let (c, ec) = ask(&s, "vdh-api.yingzi.com", 1, Some((&net24(true), 32)));
    assert_eq!(c, a);
    assert_eq!(ec, Some((32, 24)));
}

#[test]
fn scope_is_the_longest_prefix_evaluated() {
    let s = server();
    // Matches the /8 rule after the /16 rule was evaluated: scope 16.
    let (a, e) = ask(&s, "vdh-api.yingzi.com", 1, Some(("10.2.3.4", 24)));
    assert_eq!(a, vec!["203.0.113.10"]);
    assert_eq!(e, Some((24, 16)));
    // Matches the /16 rule itself: scope 16.
    let (a, e) = ask(&s, "vdh-api.yingzi.com", 1, Some(("10.1.3.4", 24)));
    assert_eq!(a, vec!["198.51.100.10"]);
    assert_eq!(e, Some((24, 16)));
    // IPv6 client, AAAA: the percent rule is evaluated, scope raised to 56.
    let (_, e) = ask(
        &s,
        "vdh-api.yingzi.com",
        28,
        Some(("2001:db8:aa:bb::1", 64)),
    );
    assert_eq!(e, Some((64, 56)));
}

#[test]
fn network_independent_answers_have_scope_0() {
    let s = server();
    let (a, e) = ask(&s, "vdh-api-v1.yingzi.com", 1, Some(("10.2.3.4", 24)));
    assert_eq!(a, vec!["203.0.113.10"]);
    assert_eq!(e, Some((24, 0)));
    let (_, e) = ask(&s, "www.yingzi.com", 1, Some(("10.2.3.4", 24)));
    assert_eq!(e, Some((24, 0)));
    // Source prefix 0: decided on the packet source, scope 0.
    let (_, e) = ask(&s, "vdh-api.yingzi.com", 1, Some(("0.0.0.0", 0)));
    assert_eq!(e, Some((0, 0)));
}

#[test]
fn no_ecs_in_query_means_none_in_answer() {
    let s = server();
    let (a, e) = ask(&s, "vdh-api.yingzi.com", 1, None);
    assert_eq!(e, None);
    // 127.0.0.0/24 from the packet source decides.
    let b = vdh_edge::bucket("vdh-api/half", b"127.0.0.0/24");
    assert_eq!(
        a,
        if b < 5000 {
            vec!["203.0.113.10"]
        } else {
            vec!["192.0.2.10"]
        }
    );
}

#[test]
fn malformed_ecs_gets_formerr() {
    let s = server();
    for (what, body) in [
        ("bits beyond the prefix", vec![0, 1, 23, 0, 10, 1, 3]),
        ("address longer than the prefix", vec![0, 1, 8, 0, 10, 1]),
        ("unknown family", vec![0, 7, 8, 0, 10]),
        ("prefix over 32", vec![0, 1, 33, 0, 1, 2, 3, 4, 5]),
        ("scope set in a query", vec![0, 1, 8, 8, 10]),
        ("too short", vec![0, 1]),
    ] {
        let mut q = Query::new("vdh-api.yingzi.com", 1);
        q.options.push((8, body));
        let r = q.send(s.dns).unwrap();
        assert_eq!(r[3] & 0xf, 1, "{what}: expected FORMERR");
    }
}
