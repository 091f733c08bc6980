//! DNS over TCP and DNS over TLS (RFC 7858): an accept loop with a cap on connections in total and per
//! client address; each connection is closed after an idle timeout, and
//! when reading the rest of a query or writing an answer takes longer than
//! the I/O timeout (a client that does not read loses its slot). UDP is
//! served by [`super::udp`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Transport, respond};
use crate::front::http::client_addr::Proxies;
use crate::front::limits::PerAddress;
use crate::front::proxy;
use crate::metrics::{ListenerLabels, TcpClose};
use crate::proto::wire;
use crate::shared::Shared;

/// The limits of the TCP front (`--tcp-*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Connections served at once; more wait in the accept queue.
    pub(crate) max_connections: usize,
    /// Connections from one client address; more are closed at once.
    pub(crate) per_address: usize,
    /// How long a connection may wait for its next query.
    pub(crate) idle: Duration,
    /// How long reading the rest of a query, or writing one answer, may take.
    pub(crate) io: Duration,
}

/// How one TCP listener serves: its limits, the proxies it believes, and
/// TLS for DNS over TLS (RFC 7858).
#[derive(Clone)]
pub(crate) struct TcpFront {
    pub(crate) limits: TcpLimits,
    pub(crate) proxies: Arc<Proxies>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts DNS-over-TCP (or, with `front.tls`, DNS-over-TLS) connections
/// on `listener` until `shutdown`. From a `front.proxies` peer, a PROXY
/// protocol header names the client.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    front: TcpFront,
    shutdown: CancellationToken,
) {
    let limits = front.limits;
    let label = ListenerLabels {
        listener: if front.tls.is_some() { "dot" } else { "tcp" },
    };
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    warn!(%error, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        if !per_address.admit(peer.ip(), limits.per_address) {
            shared.metrics.tcp_closed(TcpClose::PerAddressLimit);
            continue;
        }
        let (shared, shutdown, per_address, front, label) = (
            shared.clone(),
            shutdown.clone(),
            per_address.clone(),
            front.clone(),
            label.clone(),
        );
        tokio::spawn(async move {
            shared.metrics.tcp_connections.inc();
            let _ = stream.set_nodelay(true);
            let serve = async {
                let (stream, client) = match proxy::accept(stream, peer, &front.proxies).await {
                    Ok(x) => x,
                    Err(error) => {
                        debug!(%error, %peer, "tcp connection closed");
                        shared.metrics.proxy_rejected.get_or_create(&label).inc();
                        return Ok(None);
                    }
                };
                let Some(acceptor) = &front.tls else {
                    return serve_tcp(stream, client, &shared, limits, false).await;
                };
                match tokio::time::timeout(limits.idle, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_tcp(tls, client, &shared, limits, true).await,
                    failed => {
                        if let Ok(Err(error)) = failed {
                            debug!(%error, %client, "TLS handshake failed");
                        }
                        let m = &shared.metrics;
                        m.tls_handshake_failed.get_or_create(&label).inc();
                        Ok(None)
                    }
                }
            };
            tokio::select! {
                r = serve => match r {
                    Ok(Some(reason)) => shared.metrics.tcp_closed(reason),
                    Ok(None) => {}
                    Err(error) => debug!(%error, %peer, "tcp connection ended"),
                },
                () = shutdown.cancelled() => {}
            }
            shared.metrics.tcp_connections.dec();
            per_address.release(peer.ip());
            drop(permit);
        });
    }
}

/// Answers the queries of one connection. Returns why the server closed
/// it, when a limit did.
async fn serve_tcp<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
    limits: TcpLimits,
    encrypted: bool,
) -> std::io::Result<Option<TcpClose>> {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4098);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(limits.idle, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(Some(TcpClose::Idle)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Ok(r) => r?,
        };
        let len = usize::from(u16::from_be_bytes(len));
        match tokio::time::timeout(limits.io, stream.read_exact(&mut buf[..len])).await {
            Err(_) => return Ok(Some(TcpClose::ReadTimeout)),
            Ok(r) => r?,
        };
        let arrived = std::time::Instant::now();
        let snap = shared.snapshot();
        let Some(o) = respond(&snap, &buf[..len], peer.ip(), Transport::Tcp, &mut out) else {
            shared.metrics.dns_dropped.inc();
            // A packet we will not answer ends the connection.
            return Ok(None);
        };
        shared.metrics.dns_query(Transport::Tcp, o.qtype, o.rcode);
        if encrypted {
            shared.metrics.dns_encrypted("dot");
            if wire::has_padding(&buf[..len]) {
                wire::pad(&mut out, wire::PADDING_BLOCK);
            }
        }
        framed.clear();
        let len = u16::try_from(out.len()).expect("TCP answers are limited to 65535 bytes");
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        let write = async {
            stream.write_all(&framed).await?;
            // TLS buffers what it encrypts: push it to the socket.
            stream.flush().await
        };
        match tokio::time::timeout(limits.io, write).await {
            Err(_) => return Ok(Some(TcpClose::WriteTimeout)),
            Ok(r) => r?,
        }
        shared
            .metrics
            .dns_answered_in(if encrypted { "dot" } else { "tcp" }, arrived.elapsed());
        if o.close {
            return Ok(None);
        }
    }
}
