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
        // Long-polls not limited below the connection cap: this test is
        // about connections waiting in the accept queue.
        &[
            "--http-max-connections",
            &CAP.to_string(),
            "--long-polls-max",
            "1000",
        ],
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

/// `--long-polls-per-address` and `--long-polls-max`: a poll over either
/// limit is answered 429 at once with Retry-After, and counted; a request
/// body over the limit gets 413.
#[test]
fn long_polls_are_limited_per_address_and_per_edge() {
    let dir = shipped_copy();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &[
            "--long-polls-per-address",
            "3",
            "--long-polls-max",
            "5",
            "--trusted-proxy",
            "127.0.0.0/8",
        ],
    );
    let doc = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";
    let etag = http_request(server.http, "GET", doc, &[])
        .header("etag")
        .unwrap()
        .to_string();
    let http = server.http;
    let poll = |client: &'static str| {
        let etag = etag.clone();
        std::thread::spawn(move || {
            let r = http_request(
                http,
                "GET",
                &format!("{doc}&wait=3"),
                &[
                    ("If-None-Match", etag.as_str()),
                    ("X-Forwarded-For", client),
                ],
            );
            (
                r.status,
                r.header("retry-after").map(str::to_string),
                r.body,
            )
        })
    };
    let first: Vec<_> = (0..4).map(|_| poll("198.51.100.1")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let second: Vec<_> = (0..3).map(|_| poll("198.51.100.2")).collect();
    let results = |v: Vec<std::thread::JoinHandle<(u16, Option<String>, String)>>| {
        let mut r: Vec<_> = v.into_iter().map(|h| h.join().unwrap()).collect();
        r.sort();
        r
    };
    let (first, second) = (results(first), results(second));
    // The first address: 3 held (304 after the wait), 1 refused.
    assert_eq!(first.iter().filter(|r| r.0 == 304).count(), 3, "{first:?}");
    let refused = first.iter().find(|r| r.0 == 429).expect("one refused");
    assert_eq!(refused.1.as_deref(), Some("5"));
    assert!(refused.2.contains("too_many_long_polls"), "{}", refused.2);
    // The second address: 2 fit under the edge's 5, the third is refused.
    assert_eq!(
        second.iter().filter(|r| r.0 == 304).count(),
        2,
        "{second:?}"
    );
    assert_eq!(
        second.iter().filter(|r| r.0 == 429).count(),
        1,
        "{second:?}"
    );
    let (_, m) = server.admin_get("/metrics");
    assert!(
        m.contains("vdh_edge_http_long_polls_refused_total{scope=\"address\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("vdh_edge_http_long_polls_refused_total{scope=\"edge\"} 1"),
        "{m}"
    );
    // Plain requests are never refused by the long-poll limits.
    assert_eq!(http_request(server.http, "GET", doc, &[]).status, 200);
    let big = http_request(server.http, "GET", doc, &[("Content-Length", "100000")]);
    assert_eq!(big.status, 413, "{}", big.body);
    assert_eq!(big.json()["error"]["code"], "body_too_large");
}

/// Slowloris: connections that send one header byte every 2 s are closed
/// at `--http-header-timeout`, and a normal client meanwhile is served.
#[test]
fn slow_headers_are_closed_and_do_not_stop_normal_requests() {
    use std::io::{Read, Write};
    const SLOW: usize = 1000;
    let dir = shipped_copy();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &["--http-header-timeout", "3"],
    );
    let mut slow: Vec<std::net::TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(server.http).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let doc = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";
    let mut times = Vec::new();
    let mut next_byte = started + Duration::from_secs(2);
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        assert_eq!(http_request(server.http, "GET", doc, &[]).status, 200);
        times.push(t.elapsed());
        if Instant::now() >= next_byte {
            for s in &mut slow {
                let _ = s.write_all(b"E");
            }
            next_byte += Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    assert!(times.len() >= 100, "{} requests", times.len());
    eprintln!(
        "slowloris: {} requests, median {:?}, p99 {p99:?}",
        times.len(),
        times[times.len() / 2]
    );
    assert!(
        p99 < Duration::from_millis(50),
        "p99 {p99:?} under a slowloris"
    );
    // Past the header timeout every slow connection has been closed (an
    // answer, if any, then end of stream or a reset).
    let closed = slow
        .iter()
        .filter(|s| {
            let mut s: &std::net::TcpStream = s;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) => {
                        return !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        );
                    }
                }
            }
        })
        .count();
    assert_eq!(closed, SLOW, "slow connections left open");
}

/// The header timeout is kept per connection (not a timer per request):
/// an idle keep-alive connection is closed once it has passed, a connection
/// that sent half a head too, but a long-poll held longer than the timeout
/// is answered on its connection, which then serves another request.
#[test]
fn the_header_timeout_closes_idle_connections_but_not_long_polls() {
    use std::io::{Read, Write};
    let dir = shipped_copy();
    let server = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &["--http-header-timeout", "2"],
    );
    let doc = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";
    let etag = http_request(server.http, "GET", doc, &[])
        .header("etag")
        .unwrap()
        .to_string();
    // Reads one response head (and its body by Content-Length): its status.
    let read_response = |s: &mut std::net::TcpStream| -> Option<u16> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    return head.split(' ').nth(1).and_then(|c| c.parse().ok());
                }
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let request = |path: &str, inm: Option<&str>| {
        let inm = inm.map_or(String::new(), |e| format!("If-None-Match: {e}\r\n"));
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{inm}\r\n")
    };
    let connect = || {
        let s = std::net::TcpStream::connect(server.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        s
    };
    // Idle after one answer: closed about 2 s later (not early, before 4 s).
    let mut idle = connect();
    idle.write_all(request(doc, None).as_bytes()).unwrap();
    assert_eq!(read_response(&mut idle), Some(200));
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection got bytes");
    let closed_after = t.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(4),
        "idle connection closed after {closed_after:?}"
    );
    // Half a head: closed too.
    let mut half = connect();
    half.write_all(b"GET /v1/config/vdh-api HTTP/1.1\r\nHost")
        .unwrap();
    let t = Instant::now();
    assert_eq!(half.read(&mut buf).unwrap_or(0), 0);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // A 4 s long-poll (twice the timeout) is answered 304 on its
    // connection, which then answers another request.
    let mut poll = connect();
    let t = Instant::now();
    poll.write_all(request(&format!("{doc}&wait=4"), Some(&etag)).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut poll), Some(304));
    assert!(
        t.elapsed() >= Duration::from_millis(3900),
        "{:?}",
        t.elapsed()
    );
    poll.write_all(request(doc, None).as_bytes()).unwrap();
    assert_eq!(read_response(&mut poll), Some(200));
}
