//! The DNS wire format: names, record types and classes, query parsing and
//! the response writer.
//!
//! A leaf: nothing here imports anything else of the crate, so the zone
//! compiler, the fronts and the tests share one reading of the protocol.

pub mod name;
pub mod types;
pub mod wire;
