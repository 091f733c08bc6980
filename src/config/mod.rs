//! Configuration: the routing state as written ([`state`]) and as keys
//! ([`keyed`]), its validation ([`routing`], [`cohort`]), zones ([`zone`]),
//! and the compiler that turns them into one immutable
//! [`snapshot::Snapshot`] with serials chosen by [`serial`].
//!
//! `config` depends only on [`crate::proto`]; sources, fronts and commands
//! depend on it, never the other way round.

pub(crate) mod cohort;
pub(crate) mod error;
pub(crate) mod keyed;
pub(crate) mod routing;
pub(crate) mod serial;
pub(crate) mod snapshot;
pub(crate) mod state;
pub(crate) mod zone;

pub(crate) use error::ConfigError;
