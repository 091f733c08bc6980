//! The reference Rust client (`clients/rust`) against real edges (issue 13):
//! it verifies every document and keeps its last good one when a proxy
//! tampers (one flipped byte, another client's document, an expired
//! replay), follows key rotation when it pins both keys, restarts from its
//! store with the edge away, and, for scheme 4 as the operators wrote it,
//! reaches the backend of its cohort at `vdh-api.yingzi.com` through
//! `/v1/resolve` while plain DNS answers as an OLD client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;
use vdh_client::{Client, Config, Event, Keys, Rejected};

use crate::certs::TestCa;
use crate::harness::{TestServer, http_request, keygen, repo, write_by_rename};
use crate::tamper::{FLIP, PASS, REPLAY, SWAP, acceptor, header, proxy, read_head};

/// Waits for an event matching `want`, returning the events skipped.
async fn expect(
    rx: &mut UnboundedReceiver<Event>,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if want(&e) => return seen,
            Ok(Some(e)) => seen.push(e),
            _ => panic!("no {what} event; saw {seen:?}"),
        }
    }
}

/// The shipped state with prod-v1's token epoch at `n`.
pub fn state_with_epoch(n: u64) -> String {
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let from = "    api_base_url: https://vdh-api-v1.yingzi.com\n    status: serving\n    token_epoch: 1\n";
    assert!(shipped.contains(from));
    shipped.replace(from, &format!("    api_base_url: https://vdh-api-v1.yingzi.com\n    status: serving\n    token_epoch: {n}\n"))
}

#[test]
fn the_client_keeps_its_last_good_document_when_a_proxy_tampers_and_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let a = keygen(&dir.path().join("a.pem"));
    let b = keygen(&dir.path().join("b.pem"));
    let keys = dir.path().join("keys.pem");
    std::fs::write(&keys, &a).unwrap();
    let state = dir.path().join("state.yaml");
    std::fs::write(&state, state_with_epoch(1)).unwrap();
    let zones = repo().join("zones");
    let edge = TestServer::start(&zones, &state, &["--signing-key", keys.to_str().unwrap()]);
    // A second edge with the same key whose documents are born expired.
    let stale = TestServer::start(
        &zones,
        &state,
        &[
            "--signing-key",
            keys.to_str().unwrap(),
            "--document-validity",
            "1s",
        ],
    );
    let old = http_request(
        stale.http,
        "GET",
        "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-me",
        &[],
    );
    let replay = (
        old.body.clone().into_bytes(),
        old.header("x-jws-signature").unwrap().to_string(),
    );
    let jwks_a = Keys::from_jwks(&http_request(edge.http, "GET", "/v1/keys", &[]).body).unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf_for(&["localhost"]);
    let store = dir.path().join("doc.json");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mode = Arc::new(AtomicU8::new(PASS));
        let p = proxy(acceptor(&cert, &key), edge.http, mode.clone(), replay).await;
        let config = |keys: Keys, store: &std::path::Path| {
            let mut c = Config::new(&format!("https://localhost:{}", p.port()), "vdh-api", "1.0.0", keys);
            c.edge_addr = Some(p);
            c.client_id = Some("c-me".into());
            c.ca_pem = ca.pem();
            c.store = Some(store.to_path_buf());
            c.long_poll = Some(Duration::from_secs(5));
            c.backoff = (Duration::from_millis(100), Duration::from_millis(400));
            c
        };
        let (client, mut rx) = Client::start(config(jwks_a.clone(), &store)).unwrap();
        expect(&mut rx, "first document", |e| matches!(e, Event::Accepted { .. })).await;
        assert_eq!(client.document().unwrap().auth.epoch, 1);
        // Tampering: each refused, the last good document kept.
        for (m, what, want) in [
            (FLIP, "bad signature", Box::new(|r: &Rejected| *r == Rejected::BadSignature) as Box<dyn Fn(&Rejected) -> bool>),
            (SWAP, "wrong client", Box::new(|r: &Rejected| matches!(r, Rejected::WrongClient { got: Some(g), .. } if g == "c-other"))),
            (REPLAY, "expired", Box::new(|r: &Rejected| matches!(r, Rejected::Expired(_)))),
        ] {
            mode.store(m, Ordering::Relaxed);
            if m == FLIP {
                write_by_rename(&state, &state_with_epoch(2));
            }
            let skipped = expect(&mut rx, what, |e| matches!(e, Event::Rejected { reason } if want(reason))).await;
            assert!(!skipped.iter().any(|e| matches!(e, Event::Accepted { .. })), "{skipped:?}");
            assert_eq!(client.document().unwrap().auth.epoch, 1, "{what}: the last good document stays");
        }
        // Honest answers again: the new epoch, and exactly one token event.
        mode.store(PASS, Ordering::Relaxed);
        let skipped = expect(&mut rx, "token invalidated", |e| {
            matches!(e, Event::TokenInvalidated { realm, epoch: 2 } if realm == "prod-v1/v1")
        })
        .await;
        assert!(skipped.iter().all(|e| !matches!(e, Event::TokenInvalidated { .. })), "{skipped:?}");
        assert_eq!(client.document().unwrap().auth.epoch, 2);
        // Rotation: publish B (A still signs); a client pinning both.
        write_by_rename(&keys, &format!("{a}{b}"));
        let mut both = jwks_a.clone();
        for _ in 0..60 {
            both = Keys::from_jwks(&http_request(edge.http, "GET", "/v1/keys", &[]).body).unwrap();
            if both.kids().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(both.kids().len(), 2);
        let store2 = dir.path().join("doc2.json");
        let (pinned_both, mut rx2) = Client::start(config(both.clone(), &store2)).unwrap();
        expect(&mut rx2, "first document", |e| matches!(e, Event::Accepted { .. })).await;
        // Switch: B signs; the next change reaches the client pinning both;
        // the one pinning A alone refuses it.
        write_by_rename(&keys, &format!("{b}{a}"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        write_by_rename(&state, &state_with_epoch(3));
        expect(&mut rx2, "epoch 3", |e| matches!(e, Event::TokenInvalidated { epoch: 3, .. })).await;
        expect(&mut rx, "unknown key", |e| matches!(e, Event::Rejected { reason: Rejected::UnknownKey(_) })).await;
        assert_eq!(client.document().unwrap().auth.epoch, 2);
        drop(pinned_both);
        // A restart with the edge away: the stored document serves at once.
        let mut offline = config(both, &store2);
        offline.edge_addr = Some("127.0.0.1:9".parse().unwrap());
        let (restarted, mut rx3) = Client::start(offline).unwrap();
        assert_eq!(restarted.document().unwrap().auth.epoch, 3);
        expect(&mut rx3, "unreachable", |e| matches!(e, Event::Unreachable { .. })).await;
        assert_eq!(restarted.document().unwrap().auth.epoch, 3);
    });
}

/// An HTTPS backend on `ip:port` answering who it is, the Host it was
/// asked for and the SNI name.
async fn backend(
    ip: [u8; 4],
    port: u16,
    who: &'static str,
    tls: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind((std::net::Ipv4Addr::from(ip), port)).await?;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut s) = tls.accept(tcp).await else {
                    return;
                };
                let sni = s.get_ref().1.server_name().unwrap_or("").to_string();
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let host = header(&head, "host").unwrap_or_default();
                let body = format!(r#"{{"backend":"{who}","host":"{host}","sni":"{sni}"}}"#);
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(())
}

#[test]
fn scheme_4_as_written_new_and_old_sdks_reach_their_backend_at_one_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (api_cert, api_key) = ca.leaf_for(&["vdh-api.yingzi.com"]);
    let (edge_cert, edge_key) = ca.leaf_for(&["localhost"]);
    let (cert_file, key_file) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
    std::fs::write(&cert_file, edge_cert).unwrap();
    std::fs::write(&key_file, edge_key).unwrap();
    let key = dir.path().join("k.pem");
    keygen(&key);
    // prod (v0) at 127.0.0.2, prod-v1 (v1) at 127.0.0.3; new-env phase 1.
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let state = shipped
        .replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [127.0.0.2]",
        )
        .replace(
            "addresses: [203.0.113.10, 203.0.113.11]",
            "addresses: [127.0.0.3]",
        );
    assert_ne!(state, shipped);
    let f = dir.path().join("state.yaml");
    std::fs::write(&f, state).unwrap();
    let edge = TestServer::start(
        &repo().join("zones"),
        &f,
        &[
            "--signing-key",
            key.to_str().unwrap(),
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The same port on both backend addresses.
        let tls = acceptor(&api_cert, &api_key);
        let mut port = 0;
        for _ in 0..20 {
            let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
            port = probe.local_addr().unwrap().port();
            drop(probe);
            if backend([127, 0, 0, 2], port, "v0", tls.clone())
                .await
                .is_ok()
                && backend([127, 0, 0, 3], port, "v1", tls.clone())
                    .await
                    .is_ok()
            {
                break;
            }
        }
        let keys = vdh_client::get(
            &vdh_client::Endpoint::parse(&format!("https://localhost:{}", edge.http.port()))
                .unwrap(),
            Some(edge.http),
            "/v1/keys",
            &[],
            &vdh_client::tls_trusting(&ca.pem()).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let keys = Keys::from_jwks(std::str::from_utf8(&keys.body).unwrap()).unwrap();
        for (version, want, env) in [("1.0.0", "v1", "prod-v1"), ("0.9.0", "v0", "prod")] {
            let mut c = Config::new(
                &format!("https://localhost:{}", edge.http.port()),
                "vdh-api",
                version,
                keys.clone(),
            );
            c.edge_addr = Some(edge.http);
            c.client_id = Some(format!("sdk-{version}"));
            c.ca_pem = ca.pem();
            c.system_fallback = false;
            let (client, mut rx) = Client::start(c).unwrap();
            expect(&mut rx, "document", |e| matches!(e, Event::Accepted { .. })).await;
            assert_eq!(client.document().unwrap().environment, env);
            // The SDK's own host, resolved for this client.
            let r = client.resolve("vdh-api.yingzi.com").await;
            assert_eq!(
                r.source,
                vdh_client::Source::Edge {
                    environment: Some(env.to_string())
                },
                "{version}"
            );
            assert_eq!(r.ttl, Duration::from_secs(60));
            let addr = SocketAddr::new(r.addresses[0], port);
            let api =
                vdh_client::Endpoint::parse(&format!("https://vdh-api.yingzi.com:{port}")).unwrap();
            let a = vdh_client::get(
                &api,
                Some(addr),
                "/who",
                &[],
                &vdh_client::tls_trusting(&ca.pem()).unwrap(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            let who: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(who["backend"], want, "{version} reached {who}");
            assert_eq!(who["sni"], "vdh-api.yingzi.com");
            assert_eq!(who["host"], format!("vdh-api.yingzi.com:{port}"));
        }
    });
    // An SDK that knows only DNS gets the OLD (v0) addresses.
    let out = std::process::Command::new("dig")
        .args([
            "+short",
            "+tries=1",
            "+time=2",
            "-p",
            &edge.dns.port().to_string(),
            "@127.0.0.1",
            "vdh-api.yingzi.com",
            "A",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.2");
}
