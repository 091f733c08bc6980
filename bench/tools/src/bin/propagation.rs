//! Propagation: the time from an etcd put being acknowledged to every edge
//! answering the new value over DNS. Each change puts `--template` with
//! `@ADDR@` replaced by a new address (10.0.a.b) at `--key` through etcd's
//! JSON gateway (`POST /v3/kv/put`, one kept-alive connection), then polls
//! every edge for `--name` A (one UDP socket per edge, a query to every edge
//! not yet answering the new address each millisecond) until all do.
//! Prints one JSON line: p50/p99/max over the changes (microseconds), and
//! how many changes some edge did not answer within 2 s.
//!
//! usage: propagation --etcd HOST:PORT --key KEY --template FILE
//!                    --edges ADDR,ADDR,... --name NAME
//!                    [--changes N] [--interval-ms MS]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vdh_bench_tools::*;

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One HTTP/1.1 POST on a kept-alive connection; the status line.
fn post(conn: &mut BufReader<TcpStream>, host: &str, path: &str, body: &str) -> String {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut()
        .write_all(req.as_bytes())
        .expect("etcd write");
    let mut status = String::new();
    conn.read_line(&mut status).expect("etcd status");
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).expect("etcd header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).expect("etcd body");
    status
}

/// True when `answer` carries an A record with `addr`.
fn has_addr(answer: &[u8], addr: [u8; 4]) -> bool {
    answer
        .windows(6)
        .any(|w| w[..2] == [0, 4] && w[2..] == addr)
}

fn main() {
    let get = arg;
    let etcd = get("--etcd").expect("--etcd HOST:PORT");
    let key = get("--key").expect("--key");
    let template = std::fs::read_to_string(get("--template").expect("--template FILE")).unwrap();
    let name = get("--name").expect("--name");
    let changes: u32 = get("--changes").map_or(100, |s| s.parse().unwrap());
    let interval = Duration::from_millis(get("--interval-ms").map_or(100, |s| s.parse().unwrap()));
    let edges: Vec<UdpSocket> = get("--edges")
        .expect("--edges")
        .split(',')
        .map(|a| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(parse_addr(a)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut conn = BufReader::new(TcpStream::connect(&etcd).expect("etcd"));
    conn.get_ref().set_nodelay(true).unwrap();
    let q = query(7, &name, 1, None);
    let mut times_us: Vec<u64> = Vec::new();
    let mut timeouts = 0;
    let mut buf = [0u8; 1500];
    for i in 1..=changes {
        let addr = [10, 0, (i / 256) as u8, (i % 256) as u8];
        let value = template.replace("@ADDR@", &format!("10.0.{}.{}", addr[2], addr[3]));
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64(key.as_bytes()),
            base64(value.as_bytes())
        );
        let status = post(&mut conn, &etcd, "/v3/kv/put", &body);
        assert!(status.contains(" 200 "), "etcd put: {status}");
        let acked = Instant::now();
        let mut pending: Vec<usize> = (0..edges.len()).collect();
        let mut last = acked;
        while !pending.is_empty() && acked.elapsed() < Duration::from_secs(2) {
            for &e in &pending {
                let _ = edges[e].send(&q);
            }
            // Wait up to a millisecond for answers, then ask again.
            let resend = Instant::now() + Duration::from_millis(1);
            while !pending.is_empty() {
                let left = resend.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut fds: Vec<libc::pollfd> = pending
                    .iter()
                    .map(|&e| libc::pollfd {
                        fd: edges[e].as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: left.as_nanos() as libc::c_long,
                };
                // SAFETY: `fds` is a valid array of its length.
                unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as _, &ts, std::ptr::null()) };
                pending.retain(|&e| {
                    let mut new = false;
                    while let Ok(n) = edges[e].recv(&mut buf) {
                        new |= has_addr(&buf[..n], addr);
                    }
                    if new {
                        last = Instant::now();
                    }
                    !new
                });
            }
        }
        if pending.is_empty() {
            times_us.push(last.duration_since(acked).as_micros() as u64);
        } else {
            timeouts += 1;
        }
        std::thread::sleep(interval);
    }
    times_us.sort_unstable();
    let pct = |p: f64| percentile(&times_us, p);
    println!(
        "{{\"changes\": {changes}, \"measured\": {}, \"timeouts\": {timeouts}, \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}}}",
        times_us.len(),
        pct(0.5),
        pct(0.99),
        times_us.last().copied().unwrap_or(0)
    );
}
