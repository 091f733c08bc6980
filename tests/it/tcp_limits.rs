//! DNS over TCP against hostile clients (issue 10): a flood of connections
//! from one address that pipeline queries and never read used to hold every
//! slot; now one address gets its share (`--tcp-per-address`) and a client
//! that does not read loses its connection after the I/O timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::dnsclient::{Query, answer_addrs, tcp};
use crate::harness::{TestServer, shipped_copy};

/// Opens `n` connections from `from` and writes `queries` pipelined
/// queries on each (as far as the server takes them within `write_for`),
/// never reading.
async fn hostile(
    to: SocketAddr,
    from: &str,
    n: usize,
    queries: usize,
    write_for: Duration,
) -> Vec<tokio::net::TcpStream> {
    let q = Query::new("yingzi.com", 2).packet(7);
    let mut framed = Vec::new();
    for _ in 0..queries {
        framed.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&q);
    }
    let mut held = Vec::new();
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        // A small receive window, as a client that never reads ends up with.
        sock.set_recv_buffer_size(4096).unwrap();
        let Ok(mut s) = sock.connect(to).await else {
            continue;
        };
        // The server may close or stop reading: write what it takes.
        let _ = tokio::time::timeout(write_for, s.write_all(&framed)).await;
        held.push(s);
    }
    held
}

fn metric(server: &TestServer, reason: &str) -> u64 {
    let (_, m) = server.admin_get("/metrics");
    let key = format!("vdh_edge_dns_tcp_closed_total{{reason=\"{reason}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_address_cannot_take_every_slot_and_non_readers_lose_theirs() {
    vdh_edge::raise_nofile_limit().unwrap();
    let dir = shipped_copy();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &["--tcp-io-timeout", "500"],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 1,300 connections from 127.0.0.2, ~30 KB of queries each, never read.
    let flood = rt.block_on(hostile(
        server.dns,
        "127.0.0.2",
        1300,
        1000,
        Duration::from_millis(20),
    ));
    assert!(
        flood.len() > 1100,
        "only {} connections opened",
        flood.len()
    );
    // A client at another address is answered at once.
    let started = Instant::now();
    let q = Query::new("vdh-api.yingzi.com", 1).packet(1);
    let resp = tcp(server.dns, &q, Duration::from_secs(1)).expect("answered over TCP");
    assert_eq!(answer_addrs(&resp), vec!["192.0.2.10", "192.0.2.11"]);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        metric(&server, "per_address_limit") >= 1000,
        "the share per address did not bite"
    );
    // A client that sends ~3 MB of queries and never reads fills the
    // socket buffers with answers: it loses its slot after the I/O timeout.
    let heavy = rt.block_on(hostile(
        server.dns,
        "127.0.0.3",
        2,
        100_000,
        Duration::from_secs(3),
    ));
    assert_eq!(heavy.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "write_timeout") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        metric(&server, "write_timeout") >= 1,
        "no connection lost its slot to the write timeout"
    );
    drop((flood, heavy));
    // Still answering.
    let resp = tcp(server.dns, &q, Duration::from_secs(1)).expect("answered over TCP");
    assert_eq!(answer_addrs(&resp), vec!["192.0.2.10", "192.0.2.11"]);
}
