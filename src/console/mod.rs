//! The operator console on the admin listener: read-only pages rendered on
//! the server (HTML, a stylesheet, inline SVG charts; no script, no build
//! step, nothing from a CDN), compiled into the binary.
//!
//! Every page reads through the code the commands use: the fleet through
//! `ops::status::read_status` (the same numbers as `status --json`), the
//! audit trail through `ops::history`, the explain form through
//! [`crate::explain::explain`] on the live snapshot (the same JSON as
//! `explain --json`). Nothing here writes: every change stays a command
//! with its plan, audit and approvals.

mod chart;
mod page;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::etcd::EtcdConfig;
use crate::ops::status::{AdminAccess, Status};
use crate::serve::ConsoleCtx;
use crate::shared::Shared;

/// What the pages read from.
pub(crate) struct Ctx {
    etcd: Option<(EtcdConfig, etcd_client::Client)>,
    edge_id: String,
    access: AdminAccess,
}

/// How long a page waits for etcd and the other edges.
const FLEET_TIMEOUT: Duration = Duration::from_secs(5);

/// The console's routes (`/`, `/cohorts`, `/clients` (the census), `/history`,
/// `/explain`, `/console.css`).
pub(crate) fn routes(ctx: ConsoleCtx) -> Router<Arc<Shared>> {
    let ctx = Arc::new(Ctx {
        etcd: ctx.etcd,
        edge_id: ctx.edge_id,
        access: AdminAccess {
            tls: None,
            token: ctx.token,
        },
    });
    Router::new()
        .route("/", get(pages::overview))
        .route("/cohorts", get(pages::cohorts))
        .route("/clients", get(pages::census))
        .route("/history", get(pages::history))
        .route("/explain", get(pages::explain))
        .route("/console.css", get(css))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::Extension(ctx))
}

/// The pages load nothing but their stylesheet and run no script; say so,
/// so a browser refuses anything else (an injected tag, a frame).
async fn security_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("console.css"),
    )
}

impl Ctx {
    /// Runs `read` against etcd within [`FLEET_TIMEOUT`]; `Err` with the
    /// reason in file mode or when etcd does not answer in time (the page
    /// says so and shows this edge alone).
    pub(super) async fn etcd_read<'a, T, E, F>(
        &'a self,
        read: impl FnOnce(etcd_client::Client, &'a EtcdConfig) -> F,
    ) -> Result<(T, &'a EtcdConfig), String>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let Some((cfg, client)) = &self.etcd else {
            return Err("file mode: no etcd, this edge alone".into());
        };
        match tokio::time::timeout(FLEET_TIMEOUT, read(client.clone(), cfg)).await {
            Ok(Ok(v)) => Ok((v, cfg)),
            Ok(Err(e)) => Err(format!("etcd: {e:#}")),
            Err(_) => Err(format!(
                "etcd did not answer within {} s",
                FLEET_TIMEOUT.as_secs()
            )),
        }
    }

    /// The live edges' records.
    async fn edges(&self) -> Result<Vec<crate::etcd::registry::EdgeRecord>, String> {
        self.etcd_read(
            |mut c, cfg| async move { crate::etcd::registry::read_edges(&mut c, cfg).await },
        )
        .await
        .map(|(e, _)| e)
    }

    /// The fleet as `status` reads it.
    async fn fleet(&self) -> Result<(Status, &EtcdConfig), String> {
        let access = &self.access;
        self.etcd_read(|mut c, cfg| async move {
            crate::ops::status::read_status(&mut c, cfg, access).await
        })
        .await
    }
}
