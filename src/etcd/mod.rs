//! Everything that talks to etcd: connecting ([`client`]), reading a prefix
//! ([`prefix`]), planning and committing compared transactions ([`plan`]),
//! the records under `meta/` ([`meta`]), the watch that feeds the reload
//! loop ([`watch`]), and the edge registry ([`registry`]). They retry on
//! the schedule of [`crate::backoff`].
//!
//! The key layout itself (which key holds what) is
//! [`crate::config::keyed`]: the compiler needs it too.

pub(crate) mod client;
pub(crate) mod meta;
pub(crate) mod plan;
pub(crate) mod prefix;
pub(crate) mod registry;
pub(crate) mod watch;

pub(crate) use client::{EtcdConfig, EtcdError};
pub(crate) use prefix::PrefixState;
pub(crate) use watch::EtcdSource;
