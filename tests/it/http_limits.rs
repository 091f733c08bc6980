//! HTTP connections are capped (issue 10): ~20,000 held long-polls used
//! every file descriptor, and a state edit made meanwhile could not be
//! read. Past `--http-max-connections` new connections wait in the accept
//! queue; descriptors stay free for the config source and DNS over TCP.

use std::time::{Duration, Instant};

use crate::dnsclient::{Query, answer_addrs, tcp};
use crate::harness::{TestServer, http_request, shipped_copy, write_by_rename};

fn open_fds(server: &TestServer) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count()
}

#[test]
fn held_long_polls_beyond_the_cap_wait_and_leave_descriptors_free() {
    const CAP: usize = 40;
    const POLLS: usize = 70;
    let dir = shipped_copy();
    let state_path = dir.path().join("state.yaml");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &state_path,
        &["--http-max-connections", &CAP.to_string()],
    );
    let doc = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";
    let first = http_request(server.http, "GET", doc, &[]);
    let etag = first.header("etag").unwrap().to_string();
    let base = open_fds(&server);
    let http = server.http;
    let polls: Vec<_> = (0..POLLS)
        .map(|_| {
            let etag = etag.clone();
            std::thread::spawn(move || {
                http_request(
                    http,
                    "GET",
                    &format!("{doc}&wait=30"),
                    &[("If-None-Match", etag.as_str())],
                )
                .status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = open_fds(&server) - base;
    assert!(
        held <= CAP + 2,
        "{held} descriptors for {POLLS} long-polls with a cap of {CAP}"
    );
    // DNS over TCP and a state change still work.
    let q = Query::new("vdh-api.yingzi.com", 1).packet(1);
    let resp = tcp(server.dns, &q, Duration::from_secs(1)).expect("DNS over TCP answers");
    assert_eq!(answer_addrs(&resp), vec!["192.0.2.10", "192.0.2.11"]);
    let started = Instant::now();
    write_by_rename(
        &state_path,
        &state.replace(
            "api_base_url: https://vdh-api-v1.yingzi.com",
            "api_base_url: https://vdh-api-v1.yingzi.com/v2",
        ),
    );
    // Every poll is answered: the held ones by the change, the waiting ones
    // once a slot frees (their ETag is then stale).
    for p in polls {
        assert_eq!(p.join().unwrap(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("vdh_edge_http_connection_limit_reached_total ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}

/// `--http-per-address`: connections past an address's share are closed at
/// once; other addresses are served.
#[test]
fn one_address_gets_its_share_of_http_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = shipped_copy();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &["--http-per-address", "5"],
    );
    let doc = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";
    let etag = http_request(server.http, "GET", doc, &[])
        .header("etag")
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.http;
    let (held, closed) = rt.block_on(async move {
        let mut conns = Vec::new();
        for _ in 0..8 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut s = sock.connect(addr).await.unwrap();
            let req =
                format!("GET {doc}&wait=30 HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n");
            let _ = s.write_all(req.as_bytes()).await;
            conns.push(s);
        }
        let (mut held, mut closed) = (0, 0);
        for s in &mut conns {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Err(_) => held += 1,
                Ok(Ok(0) | Err(_)) => closed += 1,
                Ok(Ok(_)) => panic!("a long-poll was answered early"),
            }
        }
        (held, closed)
    });
    assert_eq!((held, closed), (5, 3));
    // Another address is served.
    assert_eq!(http_request(server.http, "GET", doc, &[]).status, 200);
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.contains("vdh_edge_http_per_address_refused_total 3\n"),
        "{metrics}"
    );
}
