//! Prometheus metrics (prometheus-client), served at `/metrics`.
//!
//! DNS counters are created up front for every (qtype, rcode) pair we label,
//! so counting a query is one atomic add with no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) mod format;
mod latency;
mod process;

pub(crate) use latency::{Latency, LocalLatency};

use crate::proto::types::*;
use crate::proto::wire::Transport;

const QTYPES: &[u16] = &[
    A, AAAA, NS, CNAME, SOA, MX, TXT, SRV, PTR, CAA, ANY, DS, AXFR, IXFR,
];
const RCODES: &[(u16, &str)] = &[
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (9, "NOTAUTH"),
    (16, "BADVERS"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    qtype: String,
    rcode: String,
    transport: String,
}

/// Labels of `vdh_edge_config_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConfigLabels {
    pub(crate) service: String,
    pub(crate) environment: String,
    pub(crate) rule: String,
    pub(crate) sdk_major: String,
    /// `required`, `recommended` or `none`: what the document says of an
    /// update (a forced phase shows as `required`).
    pub(crate) update: &'static str,
}

/// Labels of `vdh_edge_census_clients`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CensusLabels {
    pub(crate) window: &'static str,
    pub(crate) dimension: &'static str,
    pub(crate) value: String,
}

/// Labels of `vdh_edge_http_request_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) path: &'static str,
}

/// Labels of `vdh_edge_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// Labels of `vdh_edge_http_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) path: &'static str,
    pub(crate) status: u16,
}

/// Per-thread DNS counts, flushed to the shared counters once per batch so
/// busy threads do not fight over counter cache lines.
pub(crate) struct DnsTally {
    /// Answer times of this thread's UDP answers.
    pub(crate) latency: LocalLatency,
    counts: Vec<u64>,
    /// Slots counted since the last flush (so a flush touches only those).
    touched: Vec<usize>,
    pub(crate) dropped: u64,
}

impl Default for DnsTally {
    fn default() -> Self {
        DnsTally {
            latency: LocalLatency::default(),
            counts: vec![0; 2 * (QTYPES.len() + 1) * (RCODES.len() + 1)],
            touched: Vec::with_capacity(64),
            dropped: 0,
        }
    }
}

impl DnsTally {
    /// Counts one answered query.
    #[inline]
    pub(crate) fn count(&mut self, transport: Transport, qtype: u16, rcode: u16) {
        let i = Metrics::dns_index(transport, qtype, rcode);
        if self.counts[i] == 0 {
            self.touched.push(i);
        }
        self.counts[i] += 1;
    }
}

/// Why the server closed a DNS-over-TCP connection (label `reason` of
/// `vdh_edge_dns_tcp_closed_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum TcpClose {
    /// The client address already had its share of connections.
    PerAddressLimit,
    /// No new query within the idle timeout.
    Idle,
    /// A query started but did not arrive within the I/O timeout.
    ReadTimeout,
    /// An answer could not be written within the I/O timeout (the client
    /// does not read).
    WriteTimeout,
}

impl TcpClose {
    const ALL: [TcpClose; 4] = [
        TcpClose::PerAddressLimit,
        TcpClose::Idle,
        TcpClose::ReadTimeout,
        TcpClose::WriteTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            TcpClose::PerAddressLimit => "per_address_limit",
            TcpClose::Idle => "idle",
            TcpClose::ReadTimeout => "read_timeout",
            TcpClose::WriteTimeout => "write_timeout",
        }
    }
}

/// Labels of `vdh_edge_dns_tcp_closed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpCloseLabels {
    reason: &'static str,
}

/// Labels of the per-listener counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) listener: &'static str,
}

/// Labels of `vdh_edge_http_long_polls_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScopeLabels {
    pub(crate) scope: &'static str,
}

/// Labels of `vdh_edge_environment_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    environment: String,
}

/// Labels of `vdh_edge_environment_failover`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    environment: String,
    /// `failed_over` or `failing_open`.
    state: &'static str,
}

/// Labels of `vdh_edge_environment_votes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoteLabels {
    environment: String,
    vote: &'static str,
}

/// Labels of `vdh_edge_tls_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Labels of `vdh_edge_dns_encrypted_queries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

/// Labels of `vdh_edge_dns_rrl_limited_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RrlLabels {
    action: &'static str,
}

/// Every metric the process exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// [transport][qtype index][rcode index]
    dns: Vec<Counter>,
    pub(crate) snapshot_revision: Gauge,
    pub(crate) snapshot_age_seconds: Gauge,
    pub(crate) snapshot_swaps: Counter,
    pub(crate) rejected_changes: Counter,
    pub(crate) dns_dropped: Counter,
    pub(crate) tcp_connections: Gauge,
    /// DNS TCP connections the server closed, by reason (indexed by
    /// `TcpClose`).
    tcp_closed: Vec<Counter>,
    /// Config documents served, by service, environment, rule and SDK major.
    pub(crate) config_requests: Family<ConfigLabels, Counter>,
    /// HTTP responses by route and status.
    pub(crate) http_responses: Family<HttpLabels, Counter>,
    /// Responses limited by RRL: [slipped, dropped].
    rrl: [Counter; 2],
    /// Open HTTP connections.
    pub(crate) http_connections: Gauge,
    /// Times the HTTP listener stopped accepting at its connection limit.
    pub(crate) http_limit_reached: Counter,
    /// HTTP connections closed because their address had its share.
    pub(crate) http_per_address_refused: Counter,
    /// Long-polls waiting now.
    pub(crate) long_polls: Gauge,
    /// Long-polls answered at once because a limit was reached.
    pub(crate) long_polls_refused: Family<ScopeLabels, Counter>,
    /// Connections closed for a bad or missing PROXY header.
    pub(crate) proxy_rejected: Family<ListenerLabels, Counter>,
    /// TLS handshakes that failed or timed out.
    pub(crate) tls_handshake_failed: Family<ListenerLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    dns_encrypted: Family<TransportLabels, Counter>,
    environment_up: Family<EnvLabels, Gauge>,
    environment_votes: Family<VoteLabels, Gauge>,
    environment_failover: Family<FailoverLabels, Gauge>,
    /// 1 while the etcd watch is healthy, 0 when not (etcd mode only).
    pub(crate) etcd_up: Gauge,
    /// 1 while this edge holds the autopilot election.
    pub(crate) autopilot_executor: Gauge,
    /// 1 once a snapshot is live (what `/readyz` says).
    ready: Gauge,
    /// Time from a DNS query's arrival to its answer handed to the kernel,
    /// by transport.
    dns_latency: Family<TransportLabels, Latency>,
    /// The `udp` member of `dns_latency` (the UDP threads merge into it).
    dns_latency_udp: Latency,
    /// Time from an HTTP request's arrival to its response, by route.
    pub(crate) http_latency: Family<RouteLabels, Latency>,
    /// `process_*`.
    process: process::Process,
    /// 1 while serving from the on-disk cache instead of etcd.
    pub(crate) serving_from_cache: Gauge,
    /// Distinct clients estimated by the census (set at scrape time).
    pub(crate) census_clients: Family<CensusLabels, Gauge>,
    published_unix: AtomicU64,
}

fn qtype_index(q: u16) -> usize {
    QTYPES.iter().position(|&t| t == q).unwrap_or(QTYPES.len())
}

fn rcode_index(r: u16) -> usize {
    RCODES
        .iter()
        .position(|&(c, _)| c == r)
        .unwrap_or(RCODES.len())
}

/// Registers `vdh_edge_dns_queries_total` and creates every (transport,
/// qtype, rcode) counter up front, so counting a query is one atomic add.
fn dns_counters(registry: &mut Registry) -> Vec<Counter> {
    let family = Family::<DnsLabels, Counter>::default();
    registry.register(
        "dns_queries",
        "DNS queries answered, by query type, response code and transport",
        family.clone(),
    );
    let mut dns = Vec::new();
    for transport in ["udp", "tcp"] {
        for qi in 0..=QTYPES.len() {
            for ri in 0..=RCODES.len() {
                let qtype = QTYPES
                    .get(qi)
                    .map_or("other".to_string(), |&t| type_name(t));
                let rcode = RCODES.get(ri).map_or("other", |r| r.1).to_string();
                dns.push(
                    family
                        .get_or_create(&DnsLabels {
                            qtype,
                            rcode,
                            transport: transport.into(),
                        })
                        .clone(),
                );
            }
        }
    }
    dns
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vdh_edge");
        let dns = dns_counters(&mut registry);
        let m = Metrics {
            registry,
            dns,
            snapshot_revision: Gauge::default(),
            snapshot_age_seconds: Gauge::default(),
            snapshot_swaps: Counter::default(),
            rejected_changes: Counter::default(),
            dns_dropped: Counter::default(),
            tcp_connections: Gauge::default(),
            tcp_closed: Vec::new(),
            config_requests: Family::default(),
            http_responses: Family::default(),
            long_polls: Gauge::default(),
            long_polls_refused: Family::default(),
            proxy_rejected: Family::default(),
            tls_handshake_failed: Family::default(),
            tls_reloads: Family::default(),
            dns_encrypted: Family::default(),
            environment_up: Family::default(),
            environment_votes: Family::default(),
            environment_failover: Family::default(),
            rrl: [Counter::default(), Counter::default()],
            http_connections: Gauge::default(),
            http_limit_reached: Counter::default(),
            http_per_address_refused: Counter::default(),
            etcd_up: Gauge::default(),
            autopilot_executor: Gauge::default(),
            ready: Gauge::default(),
            dns_latency: Family::default(),
            dns_latency_udp: Latency::default(),
            http_latency: Family::default(),
            process: process::Process::new(),
            serving_from_cache: Gauge::default(),
            census_clients: Family::default(),
            published_unix: AtomicU64::new(0),
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "snapshot_revision",
            "Revision of the snapshot being served",
            m.snapshot_revision.clone(),
        );
        r.register(
            "snapshot_age_seconds",
            "Seconds since the served snapshot was published",
            m.snapshot_age_seconds.clone(),
        );
        r.register(
            "snapshot_swaps",
            "Snapshots published",
            m.snapshot_swaps.clone(),
        );
        r.register(
            "rejected_changes",
            "Candidate configurations rejected as invalid",
            m.rejected_changes.clone(),
        );
        r.register(
            "dns_dropped",
            "DNS packets dropped without an answer",
            m.dns_dropped.clone(),
        );
        r.register(
            "dns_tcp_connections",
            "Open DNS TCP connections",
            m.tcp_connections.clone(),
        );
        let closed = Family::<TcpCloseLabels, Counter>::default();
        r.register(
            "dns_tcp_closed",
            "DNS TCP connections the server closed, by reason: the per-address limit, the idle timeout, or the I/O timeout of a read or a write",
            closed.clone(),
        );
        m.tcp_closed = TcpClose::ALL
            .iter()
            .map(|c| {
                closed
                    .get_or_create(&TcpCloseLabels { reason: c.as_str() })
                    .clone()
            })
            .collect();
        let r = &mut m.registry;
        r.register(
            "config_requests",
            "Config documents served, by service, environment, rule and SDK major version",
            m.config_requests.clone(),
        );
        r.register(
            "http_responses",
            "HTTP responses by route and status",
            m.http_responses.clone(),
        );
        let rrl = Family::<RrlLabels, Counter>::default();
        r.register(
            "dns_rrl_limited",
            "UDP responses over the rate limit, by action: slip (sent truncated) or drop",
            rrl.clone(),
        );
        // One statement each: a family's guard lives to the end of its
        // statement, and creating the second label set needs the write lock.
        let slip = rrl.get_or_create(&RrlLabels { action: "slip" }).clone();
        let drop = rrl.get_or_create(&RrlLabels { action: "drop" }).clone();
        m.rrl = [slip, drop];
        m.register_front_limits();
        let r = &mut m.registry;
        r.register(
            "http_connections",
            "Open HTTP connections",
            m.http_connections.clone(),
        );
        r.register(
            "http_connection_limit_reached",
            "Times the HTTP listener stopped accepting because --http-max-connections were open",
            m.http_limit_reached.clone(),
        );
        r.register(
            "http_per_address_refused",
            "HTTP connections closed at once because their client address had --http-per-address open",
            m.http_per_address_refused.clone(),
        );
        r.register(
            "config_long_polls",
            "Long-polls waiting for a change",
            m.long_polls.clone(),
        );
        r.register(
            "etcd_up",
            "1 while the etcd watch is healthy (etcd mode)",
            m.etcd_up.clone(),
        );
        r.register(
            "autopilot_executor",
            "1 while this edge holds the autopilot election and executes scheduled writes and ramps",
            m.autopilot_executor.clone(),
        );
        r.register(
            "census_clients",
            "Distinct clients seen in the window, by SDK version, app id or environment (HyperLogLog estimate)",
            m.census_clients.clone(),
        );
        r.register(
            "serving_from_cache",
            "1 while serving the last-known-good state from the cache folder",
            m.serving_from_cache.clone(),
        );
        m.register_latency();
        m
    }

    /// Latency histograms and build information.
    fn register_latency(&mut self) {
        self.dns_latency_udp = self
            .dns_latency
            .get_or_create(&TransportLabels { transport: "udp" })
            .clone();
        let r = &mut self.registry;
        r.register(
            "ready",
            "1 once a snapshot is live and served (what /readyz says)",
            self.ready.clone(),
        );
        r.register(
            "dns_answer_seconds",
            "Time from a DNS query's arrival to its answer handed to the kernel, by transport (udp, tcp, dot, doh); UDP measures each receive batch",
            self.dns_latency.clone(),
        );
        r.register(
            "http_request_seconds",
            "Time from an HTTP request's arrival to its response head, by route (long-polls apart)",
            self.http_latency.clone(),
        );
        r.register(
            "build",
            "The running build: version and commit",
            prometheus_client::metrics::info::Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("VDH_EDGE_COMMIT"),
            }),
        );
    }

    /// Records a DNS answer time over `transport` (not UDP: the UDP
    /// threads merge their own buckets in `flush`).
    pub(crate) fn dns_answered_in(&self, transport: &'static str, d: std::time::Duration) {
        self.dns_latency
            .get_or_create(&TransportLabels { transport })
            .observe(d);
    }

    /// Counts a response over the RRL rate: slipped (sent truncated) or
    /// dropped.
    pub(crate) fn rrl_limited(&self, slipped: bool) {
        self.rrl[usize::from(!slipped)].inc();
    }

    /// The counters of the Internet-facing limits: long-polls refused,
    /// PROXY headers rejected, TLS handshakes and reloads, encrypted DNS.
    fn register_front_limits(&mut self) {
        let long_polls_refused = self.long_polls_refused.clone();
        let proxy_rejected = self.proxy_rejected.clone();
        let tls_handshake_failed = self.tls_handshake_failed.clone();
        let tls_reloads = self.tls_reloads.clone();
        let dns_encrypted = self.dns_encrypted.clone();
        let (environment_up, environment_votes) =
            (self.environment_up.clone(), self.environment_votes.clone());
        let environment_failover = self.environment_failover.clone();
        let r = &mut self.registry;
        r.register(
            "environment_failover",
            "1 while the environment's clients are answered by a failover target (state=failed_over), or while it and every failover target are down and it keeps its clients (state=failing_open)",
            environment_failover,
        );
        r.register(
            "environment_up",
            "1 while the environment's health verdict (the majority of the edges' checks) is up, 0 while down",
            environment_up,
        );
        r.register(
            "environment_votes",
            "Edges whose last health check of the environment says up or down",
            environment_votes,
        );
        r.register(
            "http_long_polls_refused",
            "Long-polls answered at once because the edge (scope=edge) or the client address (scope=address) held its limit",
            long_polls_refused,
        );
        r.register(
            "proxy_header_rejected",
            "Connections from trusted proxies closed for a malformed or late PROXY protocol header, by listener",
            proxy_rejected,
        );
        r.register(
            "tls_handshake_failed",
            "TLS handshakes that failed or timed out, by listener",
            tls_handshake_failed,
        );
        r.register(
            "tls_reloads",
            "Certificate reloads, by result (ok, error: the old certificate kept serving)",
            tls_reloads,
        );
        r.register(
            "dns_encrypted_queries",
            "DNS queries answered over TLS (dot) and HTTPS (doh)",
            dns_encrypted,
        );
    }

    /// Sets an environment's health verdict and votes.
    pub(crate) fn set_environment(&self, env: &str, up: bool, votes: (u32, u32)) {
        let environment = env.to_string();
        self.environment_up
            .get_or_create(&EnvLabels {
                environment: environment.clone(),
            })
            .set(i64::from(up));
        for (vote, n) in [("up", votes.0), ("down", votes.1)] {
            self.environment_votes
                .get_or_create(&VoteLabels {
                    environment: environment.clone(),
                    vote,
                })
                .set(i64::from(n));
        }
    }

    /// Sets the failover gauges of every environment that names failover
    /// targets, from the live snapshot's `failed_over`.
    pub(crate) fn set_failover<'a>(
        &self,
        with_targets: impl Iterator<Item = &'a str>,
        failed_over: &std::collections::BTreeMap<String, Option<String>>,
    ) {
        for env in with_targets {
            let now = failed_over.get(env);
            for (state, on) in [
                ("failed_over", matches!(now, Some(Some(_)))),
                ("failing_open", matches!(now, Some(None))),
            ] {
                self.environment_failover
                    .get_or_create(&FailoverLabels {
                        environment: env.to_string(),
                        state,
                    })
                    .set(i64::from(on));
            }
        }
    }

    /// Counts a certificate reload.
    pub(crate) fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a query answered over DNS-over-TLS or DNS-over-HTTPS.
    pub(crate) fn dns_encrypted(&self, transport: &'static str) {
        self.dns_encrypted
            .get_or_create(&TransportLabels { transport })
            .inc();
    }

    /// Counts a TCP connection the server closed.
    pub(crate) fn tcp_closed(&self, reason: TcpClose) {
        self.tcp_closed[reason as usize].inc();
    }

    /// Counts one answered query.
    #[inline]
    pub(crate) fn dns_query(&self, transport: Transport, qtype: u16, rcode: u16) {
        self.dns[Self::dns_index(transport, qtype, rcode)].inc();
    }

    /// Slot of a (transport, qtype, rcode) counter, for [`DnsTally`].
    #[inline]
    pub(crate) fn dns_index(transport: Transport, qtype: u16, rcode: u16) -> usize {
        let per_transport = (QTYPES.len() + 1) * (RCODES.len() + 1);
        usize::from(transport == Transport::Tcp) * per_transport
            + qtype_index(qtype) * (RCODES.len() + 1)
            + rcode_index(rcode)
    }

    /// Adds a thread's local tallies to the shared counters.
    pub(crate) fn flush(&self, tally: &mut DnsTally) {
        self.dns_latency_udp.merge(&mut tally.latency);
        for i in tally.touched.drain(..) {
            self.dns[i].inc_by(tally.counts[i]);
            tally.counts[i] = 0;
        }
        if tally.dropped > 0 {
            self.dns_dropped.inc_by(tally.dropped);
            tally.dropped = 0;
        }
    }

    /// Records a publish.
    pub(crate) fn published(&self, revision: u64) {
        self.ready.set(1);
        self.snapshot_revision.set(revision as i64);
        self.snapshot_swaps.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.published_unix.store(now, Ordering::Relaxed);
    }

    /// Sets the census gauges from current estimates.
    pub(crate) fn set_census(
        &self,
        estimates: &[(&'static str, crate::census::Dimension, String, f64)],
    ) {
        self.census_clients.clear();
        for (window, dim, value, est) in estimates {
            self.census_clients
                .get_or_create(&CensusLabels {
                    window,
                    dimension: dim.as_str(),
                    value: value.clone(),
                })
                .set(est.round() as i64);
        }
    }

    /// The exposition: OpenMetrics text, or the classic text format.
    pub(crate) fn render(&self, openmetrics: bool) -> String {
        let published = self.published_unix.load(Ordering::Relaxed);
        if published > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            self.snapshot_age_seconds
                .set(now.saturating_sub(published) as i64);
        }
        self.process.update();
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .and_then(|()| {
                prometheus_client::encoding::text::encode_registry(&mut out, &self.process.registry)
            })
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out))
            .expect("writing to a String");
        if openmetrics {
            out
        } else {
            format::to_classic(&out)
        }
    }
}
