//! The one integration-test binary: every test here starts real processes
//! (the `vdh-edge` binary, Knot DNS) on loopback.

mod certs;
mod dnsclient;
mod harness;
mod knot;
mod load;

mod audit;
mod autopilot;
mod bad_input;
mod browser;
mod cli;
mod cluster;
mod config_http;
mod configmap;
mod console;
mod ecs;
mod etcd;
mod etcd_harness;
mod explain;
mod fleet;
mod health;
mod hot_swap;
mod http_limits;
mod invalid_change;
mod js_client;
mod knot_diff;
mod malformed;
mod observability;
mod openapi;
mod package;
mod proxy;
mod reload_signal;
mod rrl;
mod schemes;
mod sdk_client;
mod serial;
mod signing;
mod soak;
mod tamper;
mod tcp_limits;
mod tls;
mod transient_read;
