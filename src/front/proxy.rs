//! The PROXY protocol (haproxy's `send-proxy` v1 text and `send-proxy-v2`
//! binary header) on DNS-over-TCP and HTTP connections.
//!
//! Only a peer in `--trusted-proxy` may send one: from such a peer a
//! connection that begins with the v1 (`PROXY `) or v2 signature has its
//! header read, and the source address it names becomes the client's
//! address; a connection that begins otherwise is served as it is (a
//! balancer in HTTP mode sends `X-Forwarded-For` instead). From any other
//! peer nothing is read ahead, so a PROXY header is just a bad request.
//! A malformed header closes the connection and is counted.
//!
//! Parsing is the `ppp` crate's; this module reads just enough bytes for
//! it and hands the rest of the stream on through [`Rewind`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ppp::{PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::front::http::client_addr::Proxies;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Most bytes read for a header (v1 is at most 107; v2 with the TLVs
/// haproxy adds stays well below).
const MAX_HEADER: usize = 4096;
/// How long a trusted peer may take to send its header.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection from a trusted proxy was closed before it was served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The connection began like a PROXY header but is not a valid one.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The header did not arrive in time.
    #[error("PROXY protocol header not received within {HEADER_TIMEOUT:?}")]
    Timeout,
    /// The connection failed while reading.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// A stream with bytes already read put back in front of it.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner` with nothing put back.
    pub(crate) fn new(inner: S) -> Self {
        Rewind {
            prefix: Vec::new(),
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not a PROXY header: serve the bytes as they are.
    NotProxy,
    /// More bytes are needed to tell.
    Incomplete,
    /// A header of this many bytes naming this client (None: the proxy's
    /// own connection, such as a health check: keep the peer).
    Header(usize, Option<SocketAddr>),
}

/// Parses the start of a connection.
fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if starts(V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        let r = v2::Header::try_from(buf);
        if r.is_incomplete() {
            return Ok(Parsed::Incomplete);
        }
        let h = r.map_err(|e| ProxyError::Malformed(e.to_string()))?;
        let client = match (h.command, h.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        };
        return Ok(Parsed::Header(h.len(), client));
    }
    if starts(V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        let r = v1::Header::try_from(buf);
        if r.is_incomplete() && !buf.contains(&b'\n') {
            return Ok(Parsed::Incomplete);
        }
        let h = r.map_err(|e| ProxyError::Malformed(e.to_string()))?;
        let client = match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        };
        return Ok(Parsed::Header(h.header.len(), client));
    }
    Ok(Parsed::NotProxy)
}

/// Takes the PROXY header off a connection from `peer` if `peer` is a
/// trusted proxy and the connection starts with one. Returns the stream
/// (with any bytes read past the header put back) and the client address.
pub(crate) async fn accept<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    proxies: &Proxies,
) -> Result<(Rewind<S>, SocketAddr), ProxyError> {
    if !proxies.trusts(peer.ip()) {
        return Ok((Rewind::new(stream), peer));
    }
    let mut buf = Vec::with_capacity(256);
    let read = async {
        loop {
            let mut chunk = [0u8; 512];
            let room = (MAX_HEADER - buf.len()).min(chunk.len());
            let n = stream.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Err(ProxyError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse(&buf)? {
                Parsed::Incomplete if buf.len() < MAX_HEADER => {}
                Parsed::Incomplete => {
                    return Err(ProxyError::Malformed(format!(
                        "no complete header in {MAX_HEADER} bytes"
                    )));
                }
                Parsed::NotProxy => return Ok((0, peer)),
                Parsed::Header(len, client) => return Ok((len, client.unwrap_or(peer))),
            }
        }
    };
    let (len, client) = tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .map_err(|_| ProxyError::Timeout)??;
    buf.drain(..len);
    Ok((
        Rewind {
            prefix: buf,
            at: 0,
            inner: stream,
        },
        client,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_name_the_client() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 53\r\nrest";
        assert_eq!(
            parse(v1).unwrap(),
            Parsed::Header(v1.len() - 4, Some("192.0.2.7:40000".parse().unwrap()))
        );
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"PRO").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").unwrap(), Parsed::NotProxy);
        assert_eq!(parse(&[0, 29, 1, 2]).unwrap(), Parsed::NotProxy);
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense here\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        // v2: signature, version 2 / PROXY, TCP over IPv4, 12 address bytes.
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 53,
        ]);
        let len = v2.len();
        v2.extend_from_slice(b"\0\x1d");
        assert_eq!(
            parse(&v2).unwrap(),
            Parsed::Header(len, Some("192.0.2.9:40000".parse().unwrap()))
        );
        assert_eq!(parse(&v2[..14]).unwrap(), Parsed::Incomplete);
        // LOCAL (a health check from the proxy itself): keep the peer.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap(), Parsed::Header(16, None));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x91, 0x11, 0, 0]);
        assert!(matches!(parse(&bad), Err(ProxyError::Malformed(_))));
    }

    #[tokio::test]
    async fn accept_puts_back_what_follows_and_ignores_untrusted_peers() {
        let trusted = Proxies(vec!["127.0.0.0/8".parse().unwrap()]);
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let data = b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 80\r\nGET / HTTP/1.1\r\n\r\n";
        let (mut s, client) = accept(&data[..], peer, &trusted).await.unwrap();
        assert_eq!(client, "[2001:db8::5]:4000".parse().unwrap());
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET / HTTP/1.1\r\n\r\n");

        let (mut s, client) = accept(&data[..], peer, &Proxies::default()).await.unwrap();
        assert_eq!(client, peer, "an untrusted peer's header is not read");
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, data);
    }
}
