//! Holds N long-polls on a vdh-edge, changes the state file, and measures
//! how long until every poll was answered with the new document, and the
//! server's resident memory while it held them.
//!
//! usage: longpolls --http ADDR --pid PID --state FILE --from TEXT --to TEXT [--n 10000]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn get(addr: &str, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

use vdh_bench_tools::arg;

fn main() {
    let http = arg("--http").expect("--http");
    let admin = arg("--admin").expect("--admin");
    let pid = arg("--pid").expect("--pid");
    let state = arg("--state").expect("--state");
    let (from, to) = (arg("--from").expect("--from"), arg("--to").expect("--to"));
    let n: usize = arg("--n").map_or(10_000, |v| v.parse().unwrap());
    // Descriptors for n sockets.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let path = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=bench";
    let first = get(&http, path, "");
    let etag = first
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("etag:"))
        .expect("an ETag")
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_string();
    let rss_before = rss_kib(&pid);
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(&http).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        write!(s, "GET {path}&wait=60 HTTP/1.1\r\nHost: b\r\nConnection: close\r\nIf-None-Match: {etag}\r\n\r\n").unwrap();
        socks.push(s);
    }
    // Wait until the server holds them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get(&admin, "/metrics", "");
        let held = m
            .lines()
            .find(|l| l.starts_with("vdh_edge_config_long_polls "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if held >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server holds only {held} of {n} polls"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_held = rss_kib(&pid);
    // One change.
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains(&from), "--from text not in the state file");
    let tmp = format!("{state}.tmp-bench");
    std::fs::write(&tmp, text.replacen(&from, &to, 1)).unwrap();
    let t0 = Instant::now();
    std::fs::rename(&tmp, &state).unwrap();
    // Read every answer with poll(2) over all sockets.
    let mut pending: Vec<(TcpStream, Vec<u8>)> =
        socks.into_iter().map(|s| (s, Vec::new())).collect();
    for (s, _) in &pending {
        s.set_nonblocking(true).unwrap();
    }
    let mut ok = 0usize;
    let mut last = Duration::ZERO;
    while !pending.is_empty() && t0.elapsed() < Duration::from_secs(70) {
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(s, _)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a valid array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, 1000) };
        let mut still = Vec::with_capacity(pending.len());
        for ((mut s, mut buf), fd) in pending.into_iter().zip(fds) {
            if fd.revents == 0 {
                still.push((s, buf));
                continue;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_)
                    if fd.revents & (libc::POLLHUP | libc::POLLERR) != 0 || !buf.is_empty() =>
                {
                    if buf.starts_with(b"HTTP/1.1 200") {
                        ok += 1;
                    }
                    last = t0.elapsed();
                }
                Ok(k) => {
                    buf.extend_from_slice(&chunk[..k]);
                    still.push((s, buf));
                }
                Err(_) => still.push((s, buf)),
            }
        }
        pending = still;
    }
    println!(
        "{{\"polls\": {n}, \"answered_200\": {ok}, \"all_answered_s\": {:.3}, \"rss_before_mib\": {:.1}, \"rss_holding_mib\": {:.1}}}",
        last.as_secs_f64(),
        rss_before as f64 / 1024.0,
        rss_held as f64 / 1024.0
    );
}
