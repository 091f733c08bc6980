//! vdh-edge: an authoritative DNS server and remote-config service that moves
//! SDK clients between backends by publishing routing changes.
//!
//! # Layout
//!
//! - [`cli`]: command-line arguments.
//! - [`state`]: the routing state as written (serde types) and its validation.
//! - [`routing`]: the compiled routing state and rule evaluation.
//! - [`census`]: distinct-client counts per SDK version, app id and environment.
//! - [`cohort`]: sticky percent buckets, percent parsing, SemVer ranges.
//! - [`zone`]: zone-file parsing and compiled zones.
//! - [`snapshot`]: compiles zones and state into one immutable `Snapshot`.
//! - [`source`]: config sources (`FileSource`, `EtcdSource`) that send candidates.
//! - [`store`]: the etcd layout, reading the prefix, compared transactions.
//! - [`reload`]: the single writer of the live snapshot.
//! - [`shared`]: the live snapshot, readiness and metrics handed to fronts.
//! - [`dns`]: the DNS front (wire format, answers, sockets).
//! - [`document`]: the SDK config document and its ETag.
//! - [`http`]: the HTTP front (config document, health, readiness, metrics).
//! - [`metrics`]: Prometheus metrics.
//! - [`schemes`]: the four cutover schemes as phases that transform the state.
//! - [`app`]: `serve`, `check` and `explain` wiring.
//! - [`ops`]: `apply`, `status`, `history`, `rollback` against etcd.

pub mod app;
pub mod census;
pub mod cli;
pub mod cohort;
pub mod dns;
pub mod document;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod reload;
pub mod routing;
pub mod schemes;
pub mod shared;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod store;
pub mod util;
pub mod zone;
