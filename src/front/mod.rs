//! The fronts: DNS (UDP and TCP) and HTTP. Each reads the live snapshot
//! from [`crate::shared::Shared`] once per request and never talks to
//! a config source.

pub(crate) mod dns;
pub(crate) mod http;
pub(crate) mod limits;
