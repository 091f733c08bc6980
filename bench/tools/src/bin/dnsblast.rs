//! A closed-loop DNS load generator: keeps `--inflight` queries
//! outstanding on one UDP socket with sendmmsg/recvmmsg, or paces them at
//! `--rate` queries per second. Prints one JSON line: queries per second
//! answered, lost, and latency percentiles.
//!
//! usage: dnsblast --server ADDR --queries FILE [--seconds S] [--inflight N]
//!                 [--rate QPS] [--ecs]

use std::time::{Duration, Instant};

use vdh_bench_tools::*;

fn main() {
    let get = arg;
    let server = parse_addr(&get("--server").expect("--server"));
    let queries = read_queries(&get("--queries").expect("--queries"));
    let seconds: f64 = get("--seconds").map_or(10.0, |s| s.parse().unwrap());
    let inflight: usize = get("--inflight").map_or(200, |s| s.parse().unwrap());
    let rate: Option<f64> = get("--rate").map(|s| s.parse().unwrap());
    let ecs = std::env::args().any(|a| a == "--ecs");
    // Pre-encode: the id is patched per send. ECS from 4096 /24s on the
    // service name so answers cannot all be memoised.
    let mut packets: Vec<Vec<u8>> = Vec::with_capacity(queries.len());
    for (i, (name, t)) in queries.iter().enumerate() {
        let e = (ecs && name.starts_with("vdh-api."))
            .then(|| [100, 64 + ((i >> 8) % 16) as u8, (i % 256) as u8]);
        packets.push(query(0, name, *t, e));
    }
    // Sleeps of a few microseconds between paced queries: no timer slack.
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65536];
    let mut lat_us: Vec<u32> = Vec::with_capacity(4_000_000);
    let mut batch = Batch::new(64);
    let (mut next, mut id, mut outstanding, mut answered, mut sent, mut lost) =
        (0usize, 0u16, 0usize, 0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut last_progress = Instant::now();
    let mut out: Vec<Vec<u8>> = (0..64).map(|_| Vec::new()).collect();
    while Instant::now() < end {
        // How many to send now.
        let want = match rate {
            None => inflight.saturating_sub(outstanding).min(64),
            Some(r) => {
                let due = (start.elapsed().as_secs_f64() * r) as u64;
                (due.saturating_sub(sent) as usize).min(64)
            }
        };
        if want > 0 {
            for slot in out.iter_mut().take(want) {
                let p = &packets[next % packets.len()];
                next += 1;
                slot.clear();
                slot.extend_from_slice(p);
                slot[..2].copy_from_slice(&id.to_be_bytes());
                if sent_at[id as usize].is_some() {
                    lost += 1;
                    outstanding = outstanding.saturating_sub(1);
                }
                sent_at[id as usize] = Some(Instant::now());
                id = id.wrapping_add(1);
            }
            let refs: Vec<&[u8]> = out[..want].iter().map(|v| &v[..]).collect();
            let n = send_batch(&sock, &refs, &[], &[]);
            sent += n as u64;
            outstanding += n;
        }
        // At a fixed rate, wait for answers only until the next query is
        // due: queries leave evenly spaced whatever the server's latency
        // (a blocking receive would hold them back into bursts, and a
        // server that answers slowly would be sent larger batches).
        let got = match rate {
            Some(r) => {
                let due = start + Duration::from_secs_f64((sent + 1) as f64 / r);
                if readable(&sock, due.saturating_duration_since(Instant::now())) {
                    batch.recv(&sock)
                } else {
                    0
                }
            }
            None => batch.recv(&sock),
        };
        let now = Instant::now();
        take_answers(
            &batch,
            got,
            now,
            &mut sent_at,
            &mut answered,
            &mut outstanding,
            &mut lat_us,
        );
        if got > 0 {
            last_progress = now;
        } else if rate.is_none() && now.duration_since(last_progress) > Duration::from_millis(200) {
            // Everything outstanding is lost: start the window again.
            lost += outstanding as u64;
            outstanding = 0;
            sent_at.iter_mut().for_each(|s| *s = None);
            last_progress = now;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Collect stragglers for up to a second: an answer that comes late is
    // late, not lost.
    let drain_until = Instant::now() + Duration::from_secs(1);
    while outstanding > 0 && Instant::now() < drain_until {
        let got = batch.recv(&sock);
        take_answers(
            &batch,
            got,
            Instant::now(),
            &mut sent_at,
            &mut answered,
            &mut outstanding,
            &mut lat_us,
        );
    }
    if rate.is_some() {
        lost = sent - answered;
    }
    lat_us.sort_unstable();
    let pct = |p: f64| percentile(&lat_us, p);
    println!(
        "{{\"qps\": {:.0}, \"sent\": {sent}, \"answered\": {answered}, \"lost\": {lost}, \"p50_us\": {}, \"p99_us\": {}, \"seconds\": {elapsed:.2}}}",
        answered as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// Matches received answers to their queries by id.
fn take_answers(
    batch: &Batch,
    got: usize,
    now: Instant,
    sent_at: &mut [Option<Instant>],
    answered: &mut u64,
    outstanding: &mut usize,
    lat_us: &mut Vec<u32>,
) {
    for i in 0..got {
        if batch.lens[i] < 12 {
            continue;
        }
        let rid = u16::from_be_bytes([batch.bufs[i][0], batch.bufs[i][1]]);
        if let Some(t) = sent_at[rid as usize].take() {
            *answered += 1;
            *outstanding = outstanding.saturating_sub(1);
            lat_us.push(now.duration_since(t).as_micros() as u32);
        }
    }
}

/// True when `sock` has a datagram within `wait` (ppoll: microsecond waits,
/// unlike a socket receive timeout).
fn readable(sock: &std::net::UdpSocket, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) > 0 }
}
