//! The "bare hyper" column of the HTTP benchmark: hyper 1's HTTP/1 server
//! on a current-thread tokio runtime, one `service_fn` answering every
//! request with the same pre-built document (the bytes vdh-edge serves,
//! fetched once from it) and the same headers. No routing, no parsing, no
//! per-request work: it marks what this HTTP stack allows on this machine.
//!
//! usage: bare-hyper --listen ADDR --body FILE --etag ETAG

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue};
use hyper::{Request, Response};

use vdh_bench_tools::arg;

fn main() {
    let get = |k: &str| arg(k).unwrap_or_else(|| panic!("{k} is required"));
    let listen: std::net::SocketAddr = get("--listen").parse().expect("--listen ADDR");
    let body = Bytes::from(std::fs::read(get("--body")).expect("--body FILE"));
    let etag = HeaderValue::from_str(&get("--etag")).expect("--etag");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (body, etag) = (body.clone(), etag.clone());
            tokio::task::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let mut resp = Response::new(Full::new(body.clone()));
                        let h = resp.headers_mut();
                        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        h.insert(ETAG, etag.clone());
                        h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
}
