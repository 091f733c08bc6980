//! The client's real address behind a real haproxy: in TCP mode with
//! `send-proxy-v2` (DNS over TCP) and `send-proxy` (HTTP), and in HTTP mode
//! with `X-Forwarded-For`. haproxy reaches the edge from 127.0.0.2 (the
//! trusted proxy); the client talks to haproxy from 127.0.3.3, whose /24 a
//! `networks` rule names. The same headers from an untrusted peer are
//! ignored, and a malformed PROXY header closes the connection and is
//! counted.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::curl;
use crate::harness::{TestServer, http_request, shipped_copy};
use crate::knot::{free_port, which};

/// haproxy in the foreground; killed on drop.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    fn start(config: &str, ports: &[u16]) -> Haproxy {
        let bin = which("haproxy").expect("haproxy is installed (script/test installs it)");
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let check = Command::new(&bin)
            .args(["-c", "-f"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let child = Command::new(&bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in ports {
            while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
                assert!(Instant::now() < deadline, "haproxy did not listen on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Haproxy { child, _dir: dir }
    }
}

/// The A records of vdh-api.yingzi.com. asked over TCP from 127.0.3.3.
fn dig_from_client(server: SocketAddr) -> String {
    let out = Command::new("dig")
        .args(["-b", "127.0.3.3", "+tcp", "+short", "+tries=1", "+time=5"])
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "vdh-api.yingzi.com", "A"])
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.join(" ")
}

/// The rule a config request from 127.0.3.3 through `url` matched.
fn rule_from_client(url: &str, headers: &[&str]) -> String {
    let mut args = vec!["--interface", "127.0.3.3"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let (rc, out, err) = curl(&args);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    v["rule"].as_str().unwrap_or_default().to_string()
}

/// Sends `bytes` from 127.0.0.2 (a trusted proxy) and reads what comes
/// back until the server closes.
fn from_trusted_peer(to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(to).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut back = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await;
        assert!(r.is_ok(), "the server did not close the connection");
        back
    })
}

#[test]
fn client_address_through_haproxy() {
    let dir = shipped_copy();
    let state = dir.path().join("state.yaml");
    let text = std::fs::read_to_string(&state).unwrap().replace(
        "    rules:\n",
        "    rules:\n      - name: office\n        match: { networks: [127.0.3.0/24] }\n        environment: test-v1\n",
    );
    std::fs::write(&state, text).unwrap();
    let s = TestServer::start(
        &dir.path().join("zones"),
        &state,
        &["--trusted-proxy", "127.0.0.2/32"],
    );
    let (dns_p, web_tcp_p, web_p) = (free_port(), free_port(), free_port());
    let config = format!(
        "defaults
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend dns
  mode tcp
  bind 127.0.0.1:{dns_p}
  default_backend dns
backend dns
  mode tcp
  server edge {tcp} send-proxy-v2 source 127.0.0.2
frontend web_tcp
  mode tcp
  bind 127.0.0.1:{web_tcp_p}
  default_backend web_tcp
backend web_tcp
  mode tcp
  server edge {http} send-proxy source 127.0.0.2
frontend web
  mode http
  bind 127.0.0.1:{web_p}
  option forwardfor
  default_backend web
backend web
  mode http
  server edge {http} source 127.0.0.2
",
        tcp = s.dns,
        http = s.http,
    );
    let _haproxy = Haproxy::start(&config, &[dns_p, web_tcp_p, web_p]);

    // DNS over TCP through send-proxy-v2: the rule sees 127.0.3.3.
    let test_v1 = "198.51.100.10";
    assert_eq!(
        dig_from_client(format!("127.0.0.1:{dns_p}").parse().unwrap()),
        test_v1
    );
    // Directly, the client is itself (not in the trusted range): prod.
    let direct = Command::new("dig")
        .args([
            "-b",
            "127.0.0.1",
            "+tcp",
            "+short",
            &format!("@{}", s.dns.ip()),
        ])
        .args(["-p", &s.dns.port().to_string(), "vdh-api.yingzi.com", "A"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&direct.stdout).contains(test_v1),
        "{}",
        String::from_utf8_lossy(&direct.stdout)
    );

    // HTTP through send-proxy (v1) and through X-Forwarded-For.
    let doc = "/v1/config/vdh-api?sdk_version=0.9.0";
    assert_eq!(
        rule_from_client(&format!("http://127.0.0.1:{web_tcp_p}{doc}"), &[]),
        "office"
    );
    assert_eq!(
        rule_from_client(&format!("http://127.0.0.1:{web_p}{doc}"), &[]),
        "office"
    );
    // A client cannot pick its address by a header haproxy passes on:
    // the rightmost untrusted hop is haproxy's view of the client.
    assert_eq!(
        rule_from_client(
            &format!("http://127.0.0.1:{web_p}{doc}"),
            &["X-Forwarded-For: 10.9.9.9"]
        ),
        "office"
    );

    // From an untrusted peer (127.0.0.1) the same headers are ignored.
    let r = http_request(s.http, "GET", doc, &[("X-Forwarded-For", "127.0.3.3")]);
    assert_eq!(r.json()["rule"], "default");
    let mut raw = std::net::TcpStream::connect(s.http).unwrap();
    raw.write_all(
        format!("PROXY TCP4 127.0.3.3 127.0.0.1 5000 80\r\nGET {doc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut resp = String::new();
    let _ = raw.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");

    // A malformed PROXY header from a trusted peer closes the connection.
    let back = from_trusted_peer(
        s.http,
        b"PROXY TCP4 not an address\r\nGET / HTTP/1.1\r\n\r\n",
    );
    assert!(back.is_empty(), "{}", String::from_utf8_lossy(&back));
    let mut v2_bad = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2_bad.extend_from_slice(&[0x91, 0x11, 0, 0]);
    assert!(from_trusted_peer(s.dns, &v2_bad).is_empty());
    // A trusted peer without a header is served as it is (haproxy's HTTP mode).
    let plain = from_trusted_peer(
        s.http,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(
        plain.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&plain)
    );
    let (_, m) = s.admin_get("/metrics");
    assert!(
        m.contains("vdh_edge_proxy_header_rejected_total{listener=\"http\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("vdh_edge_proxy_header_rejected_total{listener=\"tcp\"} 1"),
        "{m}"
    );
}
