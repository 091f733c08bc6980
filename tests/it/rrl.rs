//! Response rate limiting on DNS over UDP (issue 10): an authoritative
//! server without it is an amplification reflector.

use std::net::UdpSocket;
use std::time::Duration;

use crate::dnsclient::Query;
use crate::harness::{TestServer, shipped_copy};

/// Sends `n` identical queries from `from` and counts the full and the
/// truncated answers that come back.
fn blast(server: &TestServer, from: &str, n: usize) -> (usize, usize) {
    let sock = UdpSocket::bind(format!("{from}:0")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let reader = sock.try_clone().unwrap();
    let counter = std::thread::spawn(move || {
        let (mut full, mut truncated) = (0, 0);
        let mut buf = [0u8; 1500];
        while let Ok(len) = reader.recv(&mut buf) {
            let tc = buf[2] & 0x02 != 0;
            let ancount = u16::from_be_bytes([buf[6], buf[7]]);
            if tc && ancount == 0 && len < 60 {
                truncated += 1;
            } else if ancount > 0 {
                full += 1;
            }
        }
        (full, truncated)
    });
    let q = Query::new("vdh-api.yingzi.com", 1).packet(9);
    for _ in 0..n {
        sock.send_to(&q, server.dns).unwrap();
    }
    counter.join().unwrap()
}

#[test]
fn identical_queries_from_one_network_are_limited_with_slip() {
    let _exclusive = crate::harness::exclusive();
    let dir = shipped_copy();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &[
            "--rrl-rate",
            "100",
            "--rrl-slip",
            "2",
            "--rrl-whitelist",
            "127.0.2.0/24",
        ],
    );
    // 20,000 queries in well under a second or two: about `rate` answers
    // per second, every second limited one truncated, the rest dropped.
    let (full, truncated) = blast(&server, "127.0.0.2", 20_000);
    assert!((100..=400).contains(&full), "{full} full answers");
    assert!(
        (5_000..=10_500).contains(&truncated),
        "{truncated} truncated answers"
    );
    // Another /24 has its own budget.
    let (full, truncated) = blast(&server, "127.0.1.2", 50);
    assert_eq!((full, truncated), (50, 0));
    // A whitelisted network is never limited: no truncated answers, and far
    // more full ones than a limited network gets (at most 400 above, for
    // ten times the queries). A burst of 2,000 datagrams overflows the
    // socket buffer when the machine is busy, so the bar is well below
    // 2,000 but well above 400.
    let (full, truncated) = blast(&server, "127.0.2.2", 2_000);
    assert!(
        full > 800 && truncated == 0,
        "{full} full, {truncated} truncated"
    );
    let (_, metrics) = server.admin_get("/metrics");
    for action in ["slip", "drop"] {
        let key = format!("vdh_edge_dns_rrl_limited_total{{action=\"{action}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(n > 5_000, "{action}: {n}");
    }
}
