//! Starts the real `vdh-edge` binary on loopback ports chosen by the kernel
//! and learns them from its "listening" log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vdh-edge");

/// The repository root (for shipped zones and state).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `vdh-edge serve` child process. Dropping it kills the process and, if
/// the test is failing, prints its log.
pub struct TestServer {
    child: Child,
    pub dns: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Every "listening" address by protocol (udp, tcp, http, admin, dot, doh).
    pub listening: std::collections::HashMap<String, SocketAddr>,
    log: Arc<Mutex<String>>,
}

/// A command for the binary with etcd settings scrubbed from the environment.
pub fn command() -> Command {
    command_for(Path::new(BIN))
}

/// [`command`] for another binary (the packaged one).
pub fn command_for(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCD") || k.starts_with("VDH_EDGE") {
            c.env_remove(k);
        }
    }
    c.env("VDH_EDGE_LOG", "info");
    c
}

/// A `listening` line of `--log-format json`: (protocol, address).
fn json_listening(line: &str) -> Option<(String, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "listening" {
        return None;
    }
    Some((
        v["protocol"].as_str()?.to_string(),
        v["address"].as_str()?.parse().ok()?,
    ))
}

fn parse_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("address=")? + "address=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

impl TestServer {
    /// Starts `serve` with the given zones folder and state file.
    pub fn start(zones: &Path, state: &Path, extra: &[&str]) -> TestServer {
        let mut args = vec![
            "--zones".to_string(),
            zones.display().to_string(),
            "--state".into(),
            state.display().to_string(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        Self::start_with(&args, "first snapshot live")
    }

    /// Starts `serve` with these arguments (plus loopback port 0 for DNS,
    /// HTTP and admin unless given) and waits until the log shows
    /// `ready_line`.
    pub fn start_with(args: &[String], ready_line: &str) -> TestServer {
        Self::start_cmd(command(), args, ready_line)
    }

    /// [`TestServer::start_with`] with this command (its binary and
    /// environment).
    pub fn start_cmd(mut cmd: Command, args: &[String], ready_line: &str) -> TestServer {
        cmd.arg("serve").args(args);
        for flag in ["--dns", "--http", "--admin"] {
            if !args.iter().any(|a| a == flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start vdh-edge");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&line);
                    log.lock().unwrap().push('\n');
                    let _ = tx.send(line);
                }
            });
        }
        let (mut dns, mut http, mut admin, mut ready) = (None, None, None, false);
        let mut listening = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "vdh-edge did not become ready; log:\n{}",
                    log.lock().unwrap()
                );
            };
            if let Some((protocol, addr)) = json_listening(&line) {
                match protocol.as_str() {
                    "udp" => dns = Some(addr),
                    "http" => http = Some(addr),
                    "admin" => admin = Some(addr),
                    _ => {}
                }
                listening.insert(protocol, addr);
            } else if line.contains("listening") {
                if let (Some(at), Some(addr)) = (line.find("protocol=\""), parse_addr(&line)) {
                    let name = line[at + 10..].split('"').next().unwrap_or("");
                    listening.insert(name.to_string(), addr);
                }
                if line.contains("protocol=\"udp\"") {
                    dns = parse_addr(&line);
                } else if line.contains("protocol=\"http\"") {
                    http = parse_addr(&line);
                } else if line.contains("protocol=\"admin\"") {
                    admin = parse_addr(&line);
                }
            }
            ready |= line.contains(ready_line);
            if ready && admin.is_some() {
                break;
            }
        }
        // Keep draining the channel in the background (the reader thread owns it).
        std::thread::spawn(move || while rx.recv().is_ok() {});
        TestServer {
            child,
            dns: dns.expect("udp address logged"),
            http: http.expect("http address logged"),
            admin: admin.expect("admin address logged"),
            listening,
            log,
        }
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` `count` times.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) with kill(2), so the tests
    /// need no kill(1) (procps is not on every minimal Debian).
    pub fn signal(&self, name: &str) {
        let sig = match name {
            "HUP" => libc::SIGHUP,
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            other => panic!("no signal {other} in the harness"),
        };
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with our own child's pid and a valid signal.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill -{name} failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// A plain HTTP/1.1 GET on the public listener; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    /// A plain HTTP/1.1 GET on the admin listener (`/metrics`, `/census`,
    /// `/readyz`); returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- vdh-edge log ----\n{}", self.log());
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection, with extra header lines.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(70))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    parse_http(&resp)
}

/// Parses a whole HTTP/1.1 response (not chunked).
pub fn parse_http(resp: &str) -> HttpResponse {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Minimal HTTP/1.1 client (one request per connection).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Writes a file by rename, as the README tells operators to.
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fresh temp dir holding a copy of the shipped zones and state.
pub fn shipped_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    for e in std::fs::read_dir(repo().join("zones")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join("zones").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        repo().join("deploy/state.yaml"),
        dir.path().join("state.yaml"),
    )
    .unwrap();
    dir
}

/// A backend (health check or gate) answering any GET 200 or 503 as `healthy` says.
pub fn backend(healthy: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    backend_by_peer(move |_| healthy.load(std::sync::atomic::Ordering::Relaxed))
}

/// A backend (health check or gate) answering any GET 200 or 503 as `healthy(peer address)`
/// says.
pub fn backend_by_peer(healthy: impl Fn(std::net::IpAddr) -> bool + Send + 'static) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let peer = s.peer_addr().map(|a| a.ip());
            let status = if peer.is_ok_and(&healthy) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = std::io::Write::write_fmt(
                &mut s,
                format_args!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            );
        }
    });
    port
}

/// Runs a vdh-edge command against etcd under `prefix`; returns (ok, stdout, stderr).
pub fn etcd_run(ep: &str, prefix: &str, args: &[&str]) -> (bool, String, String) {
    let out = command()
        .current_dir(repo())
        .args(args)
        .args(["--etcd", ep, "--prefix", prefix])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`etcd_run`], failing the test when the command fails; returns stdout.
pub fn etcd_must(ep: &str, prefix: &str, args: &[&str]) -> String {
    let (ok, out, err) = etcd_run(ep, prefix, args);
    assert!(ok, "{args:?} failed: {out}{err}");
    out
}

/// `vdh-edge keygen PATH` (failing the test if it fails); returns the PEM.
pub fn keygen(path: &Path) -> String {
    let out = command().arg("keygen").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path).unwrap()
}

/// Taken for the whole of a test that loads both cores (the client fleets)
/// and of the tests that time something or count loopback datagrams: they
/// never run at the same time, so one does not measure the other.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
