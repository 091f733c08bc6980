//! The web client in a real headless Chromium (Debian's `chromium`, driven
//! by `chromedriver` over WebDriver): a page from another origin loads the
//! client, gets a verified document over HTTPS (CORS, a CA the test makes
//! and puts in the browser's NSS store), follows a published change through
//! a long-poll, refuses a document tampered by a proxy, and after a reload
//! with the edge stopped serves the document kept in `localStorage`.
//! Screenshots go to `target/test-output/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::certs::TestCa;
use crate::harness::{TestServer, http_request, repo, write_by_rename};
use crate::sdk_client::state_with_epoch;
use crate::tamper::{FLIP, acceptor, proxy};

/// One WebDriver call: `method path` with a JSON body; returns `value`.
pub(crate) fn wd(driver: SocketAddr, method: &str, path: &str, body: &Value) -> Value {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut s = TcpStream::connect(driver).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly Content-Length bytes (chromedriver keeps
    // the connection open).
    let mut reader = std::io::BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    let resp = String::from_utf8_lossy(&body).into_owned();
    let text = resp.as_str();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {resp}"));
    assert!(
        v["value"]["error"].is_null(),
        "WebDriver {method} {path}: {v}"
    );
    v["value"].clone()
}

/// chromedriver on a free port, with HOME set to `home` (the NSS store).
pub(crate) fn chromedriver(home: &std::path::Path) -> (Child, SocketAddr) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; script/test installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

/// Serves the test page (with `config` inlined) and the client module.
fn page_server(config: Arc<std::sync::Mutex<String>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split(' ').nth(1).unwrap_or("/");
            let (ctype, body) = match path {
                "/vdh-client.js" => (
                    "text/javascript",
                    std::fs::read_to_string(repo().join("clients/js/vdh-client.js")).unwrap(),
                ),
                "/" => (
                    "text/html; charset=utf-8",
                    std::fs::read_to_string(repo().join("tests/fixtures/browser/index.html"))
                        .unwrap()
                        .replace("__CONFIG__", &config.lock().unwrap()),
                ),
                _ => ("text/plain", String::new()),
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// The page's visible text, polled until `want` is in it.
pub(crate) fn wait_text(driver: SocketAddr, session: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let text = wd(
            driver,
            "POST",
            &format!("/session/{session}/execute/sync"),
            &json!({"script": "return document.body.innerText", "args": []}),
        );
        let text = text.as_str().unwrap_or("").to_string();
        if text.contains(want) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "page never showed {want:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn screenshot(driver: SocketAddr, session: &str, name: &str) -> std::path::PathBuf {
    let png = wd(
        driver,
        "GET",
        &format!("/session/{session}/screenshot"),
        &Value::Null,
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let dir = repo().join("target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

#[test]
fn the_web_client_in_chromium_verifies_follows_rejects_and_survives_a_reload() {
    let _exclusive = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let nss = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nss).unwrap();
    let ca = TestCa::new();
    let db = format!("sql:{}", nss.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "vdh-test-ca",
            "-i",
            ca.ca_file.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("certutil")
            .args(&args)
            .output()
            .expect("certutil (libnss3-tools)");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = dir.path().join("k.pem");
    crate::harness::keygen(&key);
    let (cert_pem, key_pem) = ca.leaf_for(&["localhost"]);
    let (cert, tls_key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&tls_key, &key_pem).unwrap();
    let state = dir.path().join("state.yaml");
    std::fs::write(&state, state_with_epoch(1)).unwrap();
    let config = Arc::new(std::sync::Mutex::new(String::new()));
    let page = page_server(config.clone());
    let origin = format!("http://127.0.0.1:{}", page.port());
    let zones = repo().join("zones");
    let common = [
        "--signing-key",
        key.to_str().unwrap(),
        "--cors-origin",
        &origin,
    ];
    let mut https_args: Vec<&str> = common.to_vec();
    https_args.extend([
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        tls_key.to_str().unwrap(),
    ]);
    let edge = TestServer::start(&zones, &state, &https_args);
    let upstream = TestServer::start(&zones, &state, &common);
    let jwks = http_request(upstream.http, "GET", "/v1/keys", &[]).body;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy_addr = rt.block_on(proxy(
        acceptor(&cert_pem, &key_pem),
        upstream.http,
        Arc::new(AtomicU8::new(FLIP)),
        (Vec::new(), String::new()),
    ));
    *config.lock().unwrap() = json!({
        "edge": format!("https://localhost:{}", edge.http.port()),
        "proxy": format!("https://localhost:{}", proxy_addr.port()),
        "jwks": serde_json::from_str::<Value>(&jwks).unwrap(),
    })
    .to_string();
    let (mut driver_proc, driver) = chromedriver(&home);
    let profile = dir.path().join("profile");
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,800", format!("--user-data-dir={}", profile.display())]
    }}}});
    let session = wd(driver, "POST", "/session", &caps)["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let url = json!({"url": format!("{origin}/")});
    wd(driver, "POST", &format!("/session/{session}/url"), &url);
    wait_text(driver, &session, "environment prod-v1, epoch 1");
    let text = wait_text(
        driver,
        &session,
        "through the tampering proxy: rejected bad_signature",
    );
    assert!(!text.contains("ACCEPTED"), "{text}");
    // A published change arrives through the long-poll.
    write_by_rename(&state, &state_with_epoch(2));
    wait_text(
        driver,
        &session,
        r#"tokeninvalidated {"realm":"prod-v1/v1","epoch":2}"#,
    );
    let text = wait_text(driver, &session, "environment prod-v1, epoch 2");
    assert!(text.contains("verified, from network"), "{text}");
    let shot = screenshot(driver, &session, "web-client-live.png");
    assert!(std::fs::metadata(&shot).unwrap().len() > 5_000);
    // The edge stops; a reload serves the stored document.
    drop(edge);
    wd(
        driver,
        "POST",
        &format!("/session/{session}/refresh"),
        &json!({}),
    );
    let text = wait_text(driver, &session, "started from storage");
    assert!(
        text.contains("environment prod-v1, epoch 2, revision"),
        "{text}"
    );
    assert!(text.contains("from storage"), "{text}");
    wait_text(driver, &session, "unreachable");
    screenshot(driver, &session, "web-client-offline.png");
    wd(
        driver,
        "DELETE",
        &format!("/session/{session}"),
        &Value::Null,
    );
    let _ = driver_proc.kill();
    let _ = driver_proc.wait();
}
