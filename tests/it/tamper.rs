//! A tampering HTTPS proxy for the client tests: it forwards to a plain
//! HTTP edge and passes its answers, or changes the 200s of `/v1/config`
//! (one flipped byte, another client's document, a replayed one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS acceptor for a PEM chain and key.
pub fn acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Reads an HTTP request head.
pub async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        buf.push(b[0]);
    }
    String::from_utf8(buf).ok()
}

/// A raw HTTP/1.1 exchange with the edge (connection closed after).
async fn ask_edge(edge: SocketAddr, head: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (
        String::from_utf8_lossy(&all[..at]).into_owned(),
        all[at..].to_vec(),
    )
}

pub const PASS: u8 = 0;
pub const FLIP: u8 = 1;
pub const SWAP: u8 = 2;
pub const REPLAY: u8 = 3;

/// An HTTPS proxy in front of an edge that passes answers, or tampers with
/// the 200s of `/v1/config` as `mode` says.
pub async fn proxy(
    tls: tokio_rustls::TlsAcceptor,
    edge: SocketAddr,
    mode: Arc<AtomicU8>,
    replay: (Vec<u8>, String),
) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (tls, mode, replay) = (tls.clone(), mode.clone(), replay.clone());
            tokio::spawn(async move {
                let Ok(mut s) = tls.accept(tcp).await else {
                    return;
                };
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let (mut rhead, mut body) = ask_edge(edge, &head).await;
                let is_doc =
                    head.starts_with("GET /v1/config/") && rhead.starts_with("HTTP/1.1 200");
                let mut sig = header(&rhead, "x-jws-signature");
                match mode.load(Ordering::Relaxed) {
                    FLIP if is_doc => body[20] ^= 1,
                    SWAP if is_doc => {
                        let path = head
                            .split(' ')
                            .nth(1)
                            .unwrap()
                            .replace("client_id=c-me", "client_id=c-other");
                        let (h, b) =
                            ask_edge(edge, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
                                .await;
                        sig = header(&h, "x-jws-signature");
                        body = b;
                    }
                    REPLAY if is_doc => {
                        body = replay.0.clone();
                        sig = Some(replay.1.clone());
                    }
                    _ => {}
                }
                // The edge's head, with the (new) signature and length.
                rhead = rhead
                    .lines()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        !l.starts_with("content-length")
                            && !l.starts_with("x-jws-signature")
                            && !l.is_empty()
                    })
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                if let Some(sig) = sig.filter(|_| is_doc) {
                    rhead.push_str(&format!("x-jws-signature: {sig}\r\n"));
                }
                rhead.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                let _ = s.write_all(rhead.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}
