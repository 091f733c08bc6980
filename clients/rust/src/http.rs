//! A minimal GET over HTTP/1.1 (hyper's client connection), plain or TLS
//! (rustls): one connection per request, a deadline for the whole
//! exchange.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::Error;

/// Where an edge (or a backend) is: `http://host:port` or `https://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Host name (SNI, certificate check, `Host:`).
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `http(s)://host[:port]` (a path is ignored).
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(Error::Url(url.to_string()));
        };
        let hostport = rest.split('/').next().unwrap_or("");
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| Error::Url(url.to_string()))?,
            ),
            _ => (hostport.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(Error::Url(url.to_string()));
        }
        Ok(Endpoint { tls, host, port })
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `path` from `ep`, connecting to `connect` (an address) when given
/// instead of resolving `ep.host` (the name still goes in SNI and Host).
pub async fn get(
    ep: &Endpoint,
    connect: Option<std::net::SocketAddr>,
    path: &str,
    headers: &[(&str, &str)],
    tls: &Arc<rustls::ClientConfig>,
    deadline: Duration,
) -> Result<Answer, Error> {
    tokio::time::timeout(deadline, exchange(ep, connect, path, headers, tls))
        .await
        .map_err(|_| Error::Timeout)?
}

async fn exchange(
    ep: &Endpoint,
    connect: Option<std::net::SocketAddr>,
    path: &str,
    headers: &[(&str, &str)],
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Answer, Error> {
    let tcp = match connect {
        Some(a) => tokio::net::TcpStream::connect(a).await,
        None => tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await,
    }
    .map_err(|e| Error::Io(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut req = hyper::Request::get(path).header(
        hyper::header::HOST,
        if (ep.tls && ep.port == 443) || (!ep.tls && ep.port == 80) {
            ep.host.clone()
        } else {
            format!("{}:{}", ep.host, ep.port)
        },
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Io(e.to_string()))?;
    if ep.tls {
        let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
            .map_err(|_| Error::Url(ep.host.clone()))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Tls(e.to_string()))?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<T>(io: T, req: hyper::Request<Empty<Bytes>>) -> Result<Answer, Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::Io(e.to_string()))?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A TLS client configuration trusting the PEM certificates in `ca`.
pub fn tls_trusting(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| Error::Tls(e.to_string()))?;
        roots.add(c).map_err(|e| Error::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
