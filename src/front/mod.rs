//! The fronts: DNS (UDP, TCP, and over TLS and HTTPS through
//! hickory-server) and HTTP (public and admin listeners, TLS, PROXY header). Each reads the live snapshot
//! from [`crate::shared::Shared`] once per request and never talks to
//! a config source.

pub(crate) mod dns;
pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod proxy;
pub(crate) mod tls;
