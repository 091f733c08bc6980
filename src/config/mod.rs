//! Configuration: the routing state as written ([`state`]) and as keys
//! ([`keyed`]), its validation ([`routing`], [`cohort`]), zones ([`zone`]),
//! and the compiler that turns them into one immutable
//! [`snapshot::Snapshot`] with serials chosen by [`serial`].
//!
//! `config` depends only on [`crate::proto`]; sources, fronts and commands
//! depend on it, never the other way round.

pub mod cohort;
pub mod error;
pub mod keyed;
pub mod routing;
pub mod serial;
pub mod snapshot;
pub mod state;
pub mod zone;

pub use error::ConfigError;
