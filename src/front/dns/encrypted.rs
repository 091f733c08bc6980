//! DNS over TLS (RFC 7858, `--dot`), served by hickory-server's listener
//! with a request handler that answers from the live snapshot through
//! [`respond`], the same function as UDP and TCP.
//!
//! hickory-server owns the connections and TLS (through our
//! [`CertStore`], so a reload reaches this listener too); our answer is
//! parsed back into hickory's message and re-encoded by it. The RR sets,
//! flags and rcode are ours; the bytes may differ in name compression, and
//! hickory itself answers what it cannot parse (FORMERR) before our
//! handler sees it.
//!
//! DNS over HTTPS is served by our HTTP front instead
//! ([`crate::front::http::doh`]): hickory-server's DoH accepts POST only,
//! and RFC 8484 clients use GET as well.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, MessageType, Metadata};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Transport, respond};
use crate::front::tls::{ALPN_DOT, CertStore};
use crate::shared::Shared;

/// The path DNS over HTTPS answers on.
pub(crate) const DOH_PATH: &str = "/dns-query";

/// Answers every query from the live snapshot.
struct Handler {
    shared: Arc<Shared>,
}

/// A header-only answer (for queries we drop: the client sees SERVFAIL).
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = hickory_server::proto::op::ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut out = Vec::with_capacity(1024);
        let snap = self.shared.snapshot();
        let answered = respond(
            &snap,
            request.as_slice(),
            request.src().ip(),
            Transport::Tcp,
            &mut out,
        );
        drop(snap);
        let Some(_outcome) = answered else {
            self.shared.metrics.dns_dropped.inc();
            return failed(request);
        };
        let message = match Message::from_vec(&out) {
            Ok(m) => m,
            Err(error) => {
                warn!(%error, "an answer did not parse back; sent SERVFAIL");
                return failed(request);
            }
        };
        self.shared.metrics.dns_encrypted("dot");
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &message.edns {
            builder.edns(edns);
        }
        let response = builder.build(
            message.metadata,
            message.answers.iter(),
            message.authorities.iter(),
            std::iter::empty(),
            message.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "answer not sent");
                failed(request)
            }
        }
    }
}

/// Serves DNS over TLS on `dot` until `shutdown`. `timeout` bounds the
/// TLS handshake and an idle connection.
pub(crate) async fn run(
    dot: TcpListener,
    certs: Arc<CertStore>,
    shared: Arc<Shared>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut server = Server::new(Handler { shared });
    if let Err(error) =
        server.register_tls_listener_with_tls_config(dot, timeout, certs.server_config(ALPN_DOT))
    {
        warn!(%error, "DNS over TLS not started");
        return;
    }
    tokio::select! {
        r = server.block_until_done() => if let Err(error) = r {
            warn!(%error, "DNS over TLS stopped");
        },
        () = shutdown.cancelled() => {
            let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await;
        }
    }
}
