//! The DNS wire format: names, record types and classes, query parsing and
//! the response writer.
//!
//! A leaf: nothing here imports anything else of the crate, so the zone
//! compiler, the fronts and the tests share one reading of the protocol.

// Wire code: every narrowing cast must be shown to fit.
#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub(crate) mod name;
pub(crate) mod types;
pub(crate) mod wire;
