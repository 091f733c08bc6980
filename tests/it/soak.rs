//! A soak with faults: 3 etcd members and 3 edges on loopback, DNS (UDP,
//! TCP, DoT with kdig) and HTTP (config documents, long-polls, resolve)
//! at fixed rates, one change per second, and every 20 s one fault in
//! rotation: SIGKILL an edge and restart it, SIGKILL the etcd leader and
//! restart it, SIGSTOP an etcd member for 15 s, compact etcd past a
//! (stopped) edge's revision, fill an edge's cache file system.
//!
//! Checks: every query outside its edge's own downtime is answered; no
//! answer mixes two changes (each change writes its number into two keys,
//! and into both addresses of one environment); every edge ends on the
//! last committed revision; RSS and open descriptors stay bounded. The
//! suite runs 2 minutes; `bench/soak.sh MINUTES` runs longer and prints
//! the same report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::certs::TestCa;
use crate::dnsclient::{Query, answer_addrs, tcp};
use crate::etcd_harness::{Etcd, stable_port};
use crate::harness::{TestServer, etcd_must, repo};

const P: &str = "/soak";
const EDGES: usize = 3;
/// UDP queries per second per edge (fixed rate).
const UDP_RATE: u64 = 200;

/// One edge: its process (None while killed), ports and counters.
struct Edge {
    id: String,
    args: Vec<String>,
    server: Mutex<Option<TestServer>>,
    dns: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    dot: SocketAddr,
    /// Counts each start and end of a fault that takes this edge down
    /// (killed or stopped): odd while it is down. An exchange that saw it
    /// change overlapped a downtime, even one shorter than its timeout.
    down: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    /// Unanswered while the edge itself was down (counted apart).
    lost_down: AtomicU64,
    mixed: AtomicU64,
    /// A TLS client trusting the test's CA (the public listener is HTTPS).
    tls: Arc<rustls::ClientConfig>,
    /// Unanswered while up, by kind: UDP, TCP, HTTP, DoT and long-polls.
    lost_kind: [AtomicU64; 4],
    cache: std::path::PathBuf,
}

const UDP: usize = 0;
const TCP: usize = 1;
const HTTP: usize = 2;
const DOT_LP: usize = 3;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Edge {
    fn new(i: usize, ep: &str, dir: &std::path::Path, cert: &str, key: &str, ca: &[u8]) -> Edge {
        let (dns, http, admin, dot) = (
            addr(stable_port()),
            addr(stable_port()),
            addr(stable_port()),
            addr(stable_port()),
        );
        let cache = dir.join(format!("cache{i}"));
        std::fs::create_dir_all(&cache).unwrap();
        let id = format!("soak-{i}");
        let args: Vec<String> = [
            "--etcd",
            ep,
            "--prefix",
            P,
            "--zones",
            repo().join("zones").to_str().unwrap(),
            "--edge-id",
            &id,
            "--udp-workers",
            "1",
            "--no-autopilot",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--dns",
            &dns.to_string(),
            "--http",
            &http.to_string(),
            "--admin",
            &admin.to_string(),
            "--dot",
            &dot.to_string(),
            "--long-polls-per-address",
            "0",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let e = Edge {
            id,
            args,
            server: Mutex::new(None),
            dns,
            http,
            admin,
            dot,
            down: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            lost_down: AtomicU64::new(0),
            mixed: AtomicU64::new(0),
            lost_kind: Default::default(),
            tls: tls_client(ca),
            cache,
        };
        e.start();
        e
    }

    fn start(&self) {
        *self.server.lock().unwrap() =
            Some(TestServer::start_with(&self.args, "first snapshot live"));
    }

    fn pid(&self) -> Option<u32> {
        self.server.lock().unwrap().as_ref().map(TestServer::pid)
    }

    /// Whether the edge is down now.
    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst) % 2 == 1
    }

    /// Marks the start (`true`) or end of a downtime.
    fn set_down(&self, down: bool) {
        let was = self.down.fetch_add(1, Ordering::SeqCst);
        assert_eq!(was % 2 == 0, down, "downtimes do not nest");
    }

    /// The downtime epoch, read before an exchange starts.
    fn epoch(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    /// Counts one exchange of a kind started at `epoch`: answered, or
    /// lost — apart when the edge was down at any time during it (down
    /// when it started, or a downtime began or ended since).
    fn count(&self, kind: usize, epoch: u64, answered: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if answered {
            self.answered.fetch_add(1, Ordering::Relaxed);
        } else if epoch % 2 == 1 || self.epoch() != epoch {
            self.lost_down.fetch_add(1, Ordering::Relaxed);
        } else {
            self.lost_kind[kind].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The change number both addresses of `prod` encode (10.0.a.b, 10.1.a.b).
fn change_of(addrs: &[String]) -> Option<(u64, bool)> {
    let n: Vec<u64> = addrs
        .iter()
        .filter_map(|a| {
            let o: Vec<u64> = a.split('.').filter_map(|x| x.parse().ok()).collect();
            (o.len() == 4 && o[0] == 10).then(|| o[2] * 256 + o[3])
        })
        .collect();
    let first = *n.first()?;
    Some((first, n.iter().all(|&x| x == first)))
}

/// `/proc/PID` figures: (RSS in KiB, open descriptors).
fn rss_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    (rss, fds)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process of this test.
    let rc = unsafe { libc::kill(i32::try_from(pid).unwrap(), sig) };
    assert_eq!(rc, 0, "kill {pid} {sig}");
}

/// Load on one edge until `stop`: UDP at a fixed rate, TCP, HTTP config
/// and resolve; every answer checked for a mix of changes.
fn load(e: &Edge, stop: &AtomicBool) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    let mut n: u64 = 0;
    let q = Query::new("vdh-api.yingzi.com", 1);
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = u16::try_from(n % 65_536).unwrap();
        let d = e.epoch();
        let ok = sock.send_to(&q.packet(id), e.dns).is_ok()
            && loop {
                match sock.recv(&mut buf) {
                    Ok(len) if len >= 2 && buf[..2] == id.to_be_bytes() => break true,
                    Ok(_) => {}
                    Err(_) => break false,
                }
            };
        e.count(UDP, d, ok);
        if ok && change_of(&answer_addrs(&buf)).is_some_and(|(_, same)| !same) {
            e.mixed.fetch_add(1, Ordering::Relaxed);
        }
        if n % 10 == 0 {
            let d = e.epoch();
            let r = tcp(e.dns, &q.packet(id), Duration::from_millis(500));
            e.count(TCP, d, r.is_ok());
        }
        if n % 8 == 0 {
            http_checks(e, n);
        }
        let due = start + Duration::from_micros(n * 1_000_000 / UDP_RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// A rustls client trusting `ca` (PEM).
fn tls_client(ca: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTPS GET on its own connection: (status, body).
fn https_get(tls: &Arc<rustls::ClientConfig>, to: SocketAddr, path: &str) -> Option<(u16, String)> {
    let (status, text) = https_get_with(tls, to, path, "")?;
    Some((
        status,
        text.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string()),
    ))
}

/// One HTTPS GET with extra header lines: (status, head and body).
fn https_get_with(
    tls: &Arc<rustls::ClientConfig>,
    to: SocketAddr,
    path: &str,
    headers: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let mut conn = rustls::ClientConnection::new(tls.clone(), name).ok()?;
    let mut sock = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut s = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// A config document (its base URL and message must come from the same
/// change) and a resolve answer (both addresses from one change).
fn http_checks(e: &Edge, n: u64) {
    let get = |path: &str| {
        https_get(&e.tls, e.http, path)
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
    };
    let d = e.epoch();
    let doc = get(&format!(
        "/v1/config/vdh-api?sdk_version=0.9.0&client_id=s{n}"
    ));
    e.count(HTTP, d, doc.is_some());
    if let Some(d) = doc {
        let url = d["api_base_url"].as_str().unwrap_or("").to_string();
        let msg = d["update"]["message"].as_str().unwrap_or("").to_string();
        let from_url = url.rsplit('/').next().unwrap_or("");
        if msg.starts_with('c') && msg != from_url {
            e.mixed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let d = e.epoch();
    let r = get("/v1/resolve?host=vdh-api.yingzi.com&sdk_version=0.9.0");
    e.count(HTTP, d, r.is_some());
    if let Some(r) = r {
        let addrs: Vec<String> = r["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        if change_of(&addrs).is_some_and(|(_, same)| !same) {
            e.mixed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Long-polls held on every edge (20 s, with the last ETag), and a DoT
/// query with kdig every 2 s, round robin.
fn long_polls_and_dot(edges: &[Arc<Edge>], ca: &std::path::Path, stop: &AtomicBool) {
    let mut k = 0usize;
    let mut etags = vec![String::new(); edges.len()];
    while !stop.load(Ordering::Relaxed) {
        let e = &edges[k % edges.len()];
        let d = e.epoch();
        let out = std::process::Command::new("kdig")
            .args([
                "+tls",
                &format!("+tls-ca={}", ca.display()),
                "+tls-hostname=localhost",
                "+short",
                "+timeout=1",
                "+retry=0",
                "@127.0.0.1",
                "-p",
                &e.dot.port().to_string(),
                "vdh-api.yingzi.com",
                "A",
            ])
            .output()
            .unwrap();
        e.count(DOT_LP, d, out.status.success() && !out.stdout.is_empty());
        let d = e.epoch();
        let i = k % edges.len();
        let etag = etags[i].clone();
        let r = https_get_with(
            &e.tls,
            e.http,
            "/v1/config/vdh-api?sdk_version=0.9.0&client_id=lp&wait=2",
            &format!("If-None-Match: {etag}\r\n"),
        );
        e.count(
            DOT_LP,
            d,
            r.as_ref().is_some_and(|r| r.0 == 200 || r.0 == 304),
        );
        if let Some((_, head)) = r.as_ref().filter(|r| r.0 == 200)
            && let Some(t) = head.lines().find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
        {
            etags[i] = t.trim().to_string();
        }
        k += 1;
    }
}

/// What the writer measured.
#[derive(Default)]
struct Writes {
    committed: u64,
    failed: u64,
    last_revision: i64,
    /// Commit to the last live edge answering it, in microseconds.
    propagation_us: Vec<u64>,
}

/// One change per second until `stop`: change `i` writes `i` into prod's
/// base URL (`/c<i>`) and addresses and the service's message (`c<i>`), in
/// one transaction;
/// then waits for every live edge to answer it.
fn writer(ep: &str, edges: &[Arc<Edge>], stop: &AtomicBool) -> Writes {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut w = Writes::default();
    rt.block_on(async {
        let eps: Vec<String> = ep.split(',').map(String::from).collect();
        let mut c = etcd_client::Client::connect(eps, None).await.unwrap();
        let get = |v: &etcd_client::GetResponse| -> Value {
            serde_json::from_slice(v.kvs()[0].value()).unwrap()
        };
        let env_key = format!("{P}/environments/prod");
        let svc_key = format!("{P}/services/vdh-api");
        let mut env = get(&c.get(env_key.as_str(), None).await.unwrap());
        let mut svc = get(&c.get(svc_key.as_str(), None).await.unwrap());
        let mut i: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            env["api_base_url"] = format!("https://vdh-api-prod.yingzi.com/c{i}").into();
            env["addresses"] = serde_json::json!([
                format!("10.0.{}.{}", i / 256, i % 256),
                format!("10.1.{}.{}", i / 256, i % 256)
            ]);
            svc["update"]["message"] = format!("c{i}").into();
            let txn = etcd_client::Txn::new().and_then(vec![
                etcd_client::TxnOp::put(env_key.as_str(), env.to_string(), None),
                etcd_client::TxnOp::put(svc_key.as_str(), svc.to_string(), None),
            ]);
            let t0 = Instant::now();
            match tokio::time::timeout(Duration::from_secs(3), c.txn(txn)).await {
                Ok(Ok(r)) => {
                    w.committed += 1;
                    w.last_revision = r.header().map_or(0, |h| h.revision());
                    if let Some(us) = propagation(edges, i, t0).await {
                        w.propagation_us.push(us);
                    }
                }
                _ => w.failed += 1,
            }
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed())).await;
        }
    });
    w
}

/// Polls every live edge's DNS until it answers change `i`; the time from
/// `t0` to the last of them.
async fn propagation(edges: &[Arc<Edge>], i: u64, t0: Instant) -> Option<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let q = Query::new("vdh-api.yingzi.com", 1).packet(7);
    let mut pending: Vec<&Arc<Edge>> = edges.iter().filter(|e| !e.is_down()).collect();
    let mut buf = [0u8; 1500];
    while !pending.is_empty() {
        if t0.elapsed() > Duration::from_secs(3) {
            return None;
        }
        // Keep the live edges that do not answer change `i` yet.
        pending.retain(|e| {
            let caught_up = sock.send_to(&q, e.dns).is_ok()
                && sock.recv(&mut buf).is_ok()
                && change_of(&answer_addrs(&buf)).is_some_and(|(n, _)| n >= i);
            !caught_up && !e.is_down()
        });
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Some(u64::try_from(t0.elapsed().as_micros()).unwrap())
}

/// Sets the flag when dropped (also while unwinding from a panic).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A tmpfs mounted for the run (an edge's cache folder), unmounted at the end.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mount -t tmpfs {} (the soak runs as root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The revision an edge serves (`/readyz`), if it answers.
fn served_revision(e: &Edge) -> Option<i64> {
    let (status, body) = crate::harness::http_get(e.admin, "/readyz");
    (status == 200)
        .then(|| serde_json::from_str::<Value>(&body).ok()?["revision"].as_i64())
        .flatten()
}

/// Waits until `e` serves the newest revision under the prefix.
fn caught_up(e: &Edge, etcd: &Etcd, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        let want: i64 = etcd
            .ctl(&[
                "get",
                &format!("{P}/"),
                "--prefix",
                "-w",
                "json",
                "--keys-only",
            ])
            .parse::<Value>()
            .ok()
            .and_then(|v| {
                v["kvs"]
                    .as_array()?
                    .iter()
                    .filter_map(|kv| kv["mod_revision"].as_i64())
                    .max()
            })
            .unwrap_or(0);
        if served_revision(e).is_some_and(|r| r >= want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// One fault every `period` in rotation until `until`; returns what was done.
fn faults(
    etcd: &mut Etcd,
    edges: &[Arc<Edge>],
    period: Duration,
    started: Instant,
    until: Instant,
) -> Vec<String> {
    let mut done = Vec::new();
    let mut k = 0u32;
    loop {
        // Fault k starts at (k + 1) x period (at once if the last ran over).
        let at = started + period * (k + 1);
        if at + Duration::from_secs(16) > until {
            break;
        }
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let e = &edges[(k as usize / 5) % edges.len()];
        let t = Instant::now();
        let what = match k % 5 {
            0 => {
                e.set_down(true);
                *e.server.lock().unwrap() = None; // SIGKILL
                e.start();
                e.set_down(false);
                format!("SIGKILL {} and restart", e.id)
            }
            1 => {
                let leader = etcd.leader();
                etcd.kill(leader);
                std::thread::sleep(Duration::from_secs(2));
                etcd.restart(leader);
                format!("SIGKILL etcd leader n{leader} and restart after 2 s")
            }
            2 => {
                let m = (etcd.leader() + 1) % 3;
                let pid = etcd.pid(m).expect("running member");
                signal(pid, libc::SIGSTOP);
                std::thread::sleep(Duration::from_secs(15));
                signal(pid, libc::SIGCONT);
                format!("SIGSTOP etcd member n{m} for 15 s")
            }
            3 => {
                let pid = e.pid().expect("running edge");
                e.set_down(true);
                signal(pid, libc::SIGSTOP);
                std::thread::sleep(Duration::from_secs(4));
                let rev = etcd.revision();
                etcd.ctl(&["compact", &rev.to_string()]);
                signal(pid, libc::SIGCONT);
                let ok = caught_up(e, etcd, Duration::from_secs(10));
                e.set_down(false);
                format!(
                    "SIGSTOP {}, compact etcd at {rev} past it, SIGCONT: {}",
                    e.id,
                    if ok {
                        "caught up"
                    } else {
                        "DID NOT CATCH UP within 10 s"
                    }
                )
            }
            _ => {
                let full = edges[EDGES - 1].cache.join("filler");
                let _ = std::process::Command::new("dd")
                    .args(["if=/dev/zero", "bs=4k"])
                    .arg(format!("of={}", full.display()))
                    .output();
                std::thread::sleep(Duration::from_secs(8));
                std::fs::remove_file(&full).unwrap();
                format!("cache file system of {} full for 8 s", edges[EDGES - 1].id)
            }
        };
        done.push(format!(
            "at {:>5.1} s: {what} ({:.1} s)",
            t.duration_since(started).as_secs_f64(),
            t.elapsed().as_secs_f64()
        ));
        k += 1;
    }
    done
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
fn soak_with_faults() {
    let _exclusive = crate::harness::exclusive();
    let minutes: f64 = std::env::var("VDH_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let mut etcd = Etcd::cluster3();
    let ep = etcd.endpoints();
    etcd_must(&ep, P, &["apply", "deploy/state.yaml", "--yes"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf_for(&["localhost", "127.0.0.1"]);
    let (cert_path, key_path, ca_path) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let last_cache = dir.path().join(format!("cache{}", EDGES - 1));
    std::fs::create_dir_all(&last_cache).unwrap();
    let _tmpfs = Tmpfs::mount(&last_cache, "512k");
    let edges: Arc<Vec<Arc<Edge>>> = Arc::new(
        (0..EDGES)
            .map(|i| {
                let (c, k) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
                Arc::new(Edge::new(i, &ep, dir.path(), c, k, &ca.pem()))
            })
            .collect(),
    );
    let start_figures: Vec<(u64, usize)> =
        edges.iter().map(|e| rss_fds(e.pid().unwrap())).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // On a panic the load threads stop and drop their edges (killing them).
    let _stop_on_unwind = StopOnDrop(stop.clone());
    let mut threads = Vec::new();
    for e in edges.iter() {
        let (e, stop) = (e.clone(), stop.clone());
        threads.push(std::thread::spawn(move || load(&e, &stop)));
    }
    {
        let (edges, stop, ca) = (edges.clone(), stop.clone(), ca_path.clone());
        threads.push(std::thread::spawn(move || {
            long_polls_and_dot(&edges, &ca, &stop);
        }));
    }
    let w = {
        let (edges, stop, ep) = (edges.clone(), stop.clone(), ep.clone());
        std::thread::spawn(move || writer(&ep, &edges, &stop))
    };
    let started = Instant::now();
    let done = faults(
        &mut etcd,
        &edges,
        Duration::from_secs(20),
        started,
        started + duration,
    );
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let w = w.join().unwrap();
    report_and_check(&etcd, &edges, &w, &done, &start_figures, started.elapsed());
}

fn report_and_check(
    etcd: &Etcd,
    edges: &[Arc<Edge>],
    w: &Writes,
    done: &[String],
    start_figures: &[(u64, usize)],
    took: Duration,
) {
    let mut prop = w.propagation_us.clone();
    prop.sort_unstable();
    let mut report = format!(
        "soak: {:.1} min, {} changes committed ({} refused or timed out during faults), last revision {}\n\
         propagation (commit to the last live edge answering it): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} changes\n\
         faults:\n  {}\n",
        took.as_secs_f64() / 60.0,
        w.committed,
        w.failed,
        w.last_revision,
        percentile(&prop, 0.5) as f64 / 1000.0,
        percentile(&prop, 0.99) as f64 / 1000.0,
        prop.last().copied().unwrap_or(0) as f64 / 1000.0,
        prop.len(),
        done.join("\n  ")
    );
    let mut failures = Vec::new();
    for (e, (rss0, fds0)) in edges.iter().zip(start_figures) {
        let caught = caught_up(e, etcd, Duration::from_secs(10));
        let served = served_revision(e);
        let (rss1, fds1) = rss_fds(e.pid().unwrap());
        let (sent, answered, down, mixed) = (
            e.sent.load(Ordering::Relaxed),
            e.answered.load(Ordering::Relaxed),
            e.lost_down.load(Ordering::Relaxed),
            e.mixed.load(Ordering::Relaxed),
        );
        let lost = sent - answered - down;
        let kinds: Vec<u64> = e
            .lost_kind
            .iter()
            .map(|k| k.load(Ordering::Relaxed))
            .collect();
        report.push_str(&format!(
            "{}: sent {sent}, answered {answered}, lost during its own downtime {down}, lost otherwise {lost} (udp {}, tcp {}, http {}, dot/long-poll {}), mixed {mixed}; serves revision {served:?} (last committed {}); RSS {rss0} -> {rss1} KiB, fds {fds0} -> {fds1}\n",
            e.id, kinds[0], kinds[1], kinds[2], kinds[3], w.last_revision
        ));
        if lost > 0 {
            failures.push(format!(
                "{}: {lost} queries unanswered while it was up",
                e.id
            ));
        }
        if mixed > 0 {
            failures.push(format!("{}: {mixed} answers mixed two changes", e.id));
        }
        if !caught || served < Some(w.last_revision) {
            failures.push(format!(
                "{}: serves {served:?}, not the last revision {}",
                e.id, w.last_revision
            ));
        }
        if fds1 > fds0 + 64 {
            failures.push(format!("{}: open descriptors grew {fds0} -> {fds1}", e.id));
        }
    }
    if done.iter().any(|d| d.contains("DID NOT")) {
        failures.push("a fault was not recovered from (see faults)".into());
    }
    println!("{report}");
    eprintln!("{report}");
    if !failures.is_empty() {
        for e in edges {
            if let Some(s) = e.server.lock().unwrap().as_ref() {
                let log = s.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- {} log (last 40 lines) ----", e.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
    let expected = took.as_secs() / 2;
    if w.committed < expected {
        failures.push(format!(
            "only {} changes committed in {took:?}",
            w.committed
        ));
    }
    assert!(failures.is_empty(), "{}\n{report}", failures.join("\n"));
}
