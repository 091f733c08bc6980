//! DNS over TCP: an accept loop with a cap on connections, each closed
//! after an idle timeout. UDP is served by [`super::udp`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Transport, respond};
use crate::shared::Shared;

/// Most TCP connections served at once; more wait in the accept queue.
pub(crate) const MAX_TCP_CONNECTIONS: usize = 1024;
/// A TCP connection with no complete query for this long is closed.
pub(crate) const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts DNS-over-TCP connections on `listener` until `shutdown`.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.cancelled() => return,
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
            _ = shutdown.cancelled() => return,
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shared.metrics.tcp_connections.inc();
            tokio::select! {
                r = serve_tcp(stream, peer, &shared) => if let Err(error) = r {
                    debug!(%error, %peer, "tcp connection ended");
                },
                _ = shutdown.cancelled() => {}
            }
            shared.metrics.tcp_connections.dec();
            drop(permit);
        });
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4098);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let len = u16::from_be_bytes(len) as usize;
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut buf[..len]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "incomplete query"))??;
        let snap = shared.snapshot();
        match respond(&snap, &buf[..len], peer.ip(), Transport::Tcp, &mut out) {
            Some(o) => {
                shared.metrics.dns_query(Transport::Tcp, o.qtype, o.rcode);
                framed.clear();
                let len = u16::try_from(out.len()).expect("TCP answers are limited to 65535 bytes");
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&out);
                stream.write_all(&framed).await?;
                if o.close {
                    return Ok(());
                }
            }
            None => {
                shared.metrics.dns_dropped.inc();
                // A packet we will not answer ends the connection.
                return Ok(());
            }
        }
    }
}
