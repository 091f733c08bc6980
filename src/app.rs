//! Wiring for the `serve` and `check` commands.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{ServeArgs, SourceArgs};
use crate::reload::{self, SerialStore};
use crate::shared::Shared;
use crate::snapshot::{self, ConfigError};
use crate::source::FileSource;

/// An error that maps to a specific exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The configuration is invalid (exit 1); each line is one error.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// A path given (or defaulted) does not exist (exit 1).
    #[error("{0}")]
    Missing(String),
}

fn file_source(args: &SourceArgs) -> Result<FileSource, AppError> {
    if !args.zones.is_dir() {
        return Err(AppError::Missing(format!(
            "{}: zones folder not found (use --zones DIR)",
            args.zones.display()
        )));
    }
    if !args.state.is_file() {
        return Err(AppError::Missing(format!(
            "{}: state file not found (use --state FILE)",
            args.state.display()
        )));
    }
    Ok(FileSource {
        zones_dir: args.zones.clone(),
        state_file: Some(args.state.clone()),
    })
}

fn invalid(errors: Vec<ConfigError>) -> AppError {
    AppError::Invalid(errors.iter().map(ToString::to_string).collect())
}

/// In etcd mode the zones folder is optional (zones may live in etcd).
fn zones_dir(args: &SourceArgs) -> Option<std::path::PathBuf> {
    args.zones.is_dir().then(|| args.zones.clone())
}

/// Reads the configured source once (files, or etcd at its latest revision).
pub async fn read_inputs(args: &SourceArgs) -> anyhow::Result<snapshot::Inputs> {
    match args.etcd_config() {
        None => Ok(file_source(args)?.read(1).map_err(invalid)?),
        Some(cfg) => {
            let mut client = cfg.connect().await?;
            let p = crate::store::PrefixState::read(&mut client, &cfg, 0)
                .await
                .with_context(|| {
                    format!(
                        "reading {} from etcd at {}",
                        cfg.dir(),
                        cfg.endpoints.join(",")
                    )
                })?;
            Ok(crate::source::etcd::inputs_from(
                &cfg,
                zones_dir(args).as_ref(),
                &p,
                snapshot::SourceKind::Etcd,
            )
            .map_err(invalid)?)
        }
    }
}

/// Runs a future on a small runtime (for the one-shot commands).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// `vdh-edge check`: validates and prints a summary.
pub fn check(args: &SourceArgs) -> anyhow::Result<String> {
    let inputs = block_on(read_inputs(args))?;
    let snap = snapshot::compile(&inputs, None, &Default::default()).map_err(invalid)?;
    Ok(format!(
        "ok: {} zone(s), {} record(s), {} environment(s), {} service(s)",
        snap.zones.len(),
        snap.zones.values().map(|z| z.record_count()).sum::<usize>(),
        snap.routing.environments.len(),
        snap.routing.services.len()
    ))
}

/// Binds UDP (one SO_REUSEPORT socket per worker) and TCP on the same
/// address; with port 0 both get one port.
pub async fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    for _ in 0..20 {
        let udp = crate::dns::fastpath::bind(addr, workers)
            .with_context(|| format!("binding DNS UDP on {addr}"))?;
        let local = udp[0].local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => {
                warn!(error = %e, "TCP port taken; trying another");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("binding DNS TCP on {local}")),
        }
    }
    bail!("could not bind UDP and TCP on one port")
}

/// `vdh-edge serve`: runs until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    match crate::util::raise_nofile_limit() {
        Ok(n) => info!(limit = n, "open-file limit"),
        Err(error) => warn!(%error, "could not raise the open-file limit"),
    }
    let mut shared = Shared::with_census(
        Duration::from_secs(args.census_hour.max(4)),
        Duration::from_secs(args.census_day.max(6)),
    );
    shared.answer_cache = !args.no_answer_cache;
    let shared = Arc::new(shared);
    let serials = SerialStore::new(args.cache_dir.clone());
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(16);
    let mut tasks = tokio::task::JoinSet::new();
    // The source: load the first snapshot, then keep watching.
    let etcd = args.source.etcd_config();
    let mut etcd_parts = None;
    match &etcd {
        None => {
            let src = file_source(&args.source)?;
            // Watch first, so a change made while we load is not missed.
            let watch = src.clone().start_watch()?;
            // The first snapshot must be valid: refuse to start on bad files.
            let inputs = src.read(1).map_err(invalid)?;
            reload::apply(&shared, &inputs, &serials).map_err(AppError::Invalid)?;
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = watch.run(tx, 1, shutdown).await {
                    warn!(%error, "file watcher failed; changes will not be picked up");
                }
            });
        }
        Some(cfg) => {
            let client = cfg.connect().await?;
            let mut source = crate::source::EtcdSource {
                cfg: cfg.clone(),
                zones_dir: zones_dir(&args.source),
                client: client.clone(),
            };
            shared.set_etcd_up(false);
            // Start from etcd when it answers with a valid state; otherwise
            // from the last-known-good cache; otherwise not ready until etcd
            // gives a valid state. Never exit over bad or missing data.
            let first = match tokio::time::timeout(Duration::from_secs(3), source.read()).await {
                Ok(Ok(p)) => {
                    shared.set_etcd_up(true);
                    Some(p)
                }
                Ok(Err(error)) => {
                    warn!(%error, "etcd unavailable at start");
                    None
                }
                Err(_) => {
                    warn!("etcd did not answer within 3 s at start");
                    None
                }
            };
            let from_etcd = first.as_ref().and_then(|p| {
                let inputs = crate::source::etcd::inputs_from(
                    cfg,
                    source.zones_dir.as_ref(),
                    p,
                    snapshot::SourceKind::Etcd,
                )
                .ok()?;
                reload::apply(&shared, &inputs, &serials).ok()
            });
            if from_etcd.is_none() {
                match serials.load_prefix(&cfg.prefix) {
                    Some(cached) => {
                        match crate::source::etcd::inputs_from(
                            cfg,
                            source.zones_dir.as_ref(),
                            &cached,
                            snapshot::SourceKind::Cache,
                        )
                        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
                        .and_then(|i| reload::apply(&shared, &i, &serials))
                        {
                            Ok(s) => warn!(
                                revision = s.revision,
                                "serving the last-known-good state from the cache"
                            ),
                            Err(errors) => {
                                warn!(errors = errors.len(), "the cached state is not usable")
                            }
                        }
                    }
                    None => warn!(
                        "no usable state yet (etcd down or invalid, no cache); not ready, retrying"
                    ),
                }
            }
            // A valid etcd state is already published; an invalid one is
            // watched from (the next valid revision replaces the cache).
            let start = if from_etcd.is_some() { first } else { None };
            let (shared2, shutdown2) = (shared.clone(), shutdown.clone());
            tasks.spawn(async move { source.run(start, tx, shared2, shutdown2).await });
            etcd_parts = Some((cfg.clone(), client));
        }
    }
    tasks.spawn(reload::run(rx, shared.clone(), serials, shutdown.clone()));

    let workers = args
        .udp_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let (udp, tcp) = bind_dns(args.dns, workers).await?;
    let dns_addr = udp[0].local_addr()?;
    info!(protocol = "udp", address = %dns_addr, workers, "listening");
    info!(protocol = "tcp", address = %tcp.local_addr()?, "listening");
    let http = TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding HTTP on {}", args.http))?;
    let http_addr = http.local_addr()?;
    info!(protocol = "http", address = %http_addr, "listening");
    {
        // Log when the first snapshot is live (now, or once etcd gives one).
        let shared = shared.clone();
        let mut changes = shared.subscribe();
        tasks.spawn(async move {
            while !shared.is_ready() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
            let snap = shared.snapshot();
            info!(
                revision = snap.revision,
                source = snap.kind.as_str(),
                zones = snap.zones.len(),
                "first snapshot live"
            );
        });
    }
    {
        // Give freed heap pages back to the kernel now and then: after a
        // burst of connections glibc keeps them resident otherwise.
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // SAFETY: malloc_trim only releases free memory.
                        unsafe { libc::malloc_trim(0) };
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
    if let Some((cfg, client)) = etcd_parts {
        let edge_id = args
            .edge_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", crate::util::hostname(), http_addr.port()));
        tasks.spawn(crate::source::etcd::register(
            cfg,
            client,
            edge_id,
            http_addr.to_string(),
            dns_addr.to_string(),
            shared.clone(),
            shutdown.clone(),
        ));
    }
    let udp_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let udp_threads = crate::dns::fastpath::spawn(udp, shared.clone(), udp_stop.clone())?;
    {
        // Stop the UDP threads with everything else.
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            shutdown.cancelled().await;
            udp_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || {
                udp_threads.into_iter().for_each(|t| {
                    let _ = t.join();
                })
            })
            .await;
        });
    }
    tasks.spawn(crate::dns::server::run_tcp(
        tcp,
        shared.clone(),
        shutdown.clone(),
    ));
    {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(error) = crate::http::run(http, shared, shutdown).await {
                warn!(%error, "http server failed");
            }
        });
    }

    wait_for_signal().await;
    info!("shutting down");
    shutdown.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    tokio::select! {
        _ = drain => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => warn!("grace period over; exiting"),
        _ = wait_for_signal() => warn!("second signal; exiting now"),
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// What `explain` reports.
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    pub document: crate::document::Document,
    pub dns: Vec<DnsExplanation>,
}

/// The DNS answer for one service hostname.
#[derive(Debug, serde::Serialize)]
pub struct DnsExplanation {
    pub name: String,
    /// The network key rules see (`198.51.100.0/24`).
    pub network: String,
    pub rule: String,
    pub environment: String,
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    pub ttl: Option<u32>,
    /// The ECS scope an answer to a query with ECS would carry.
    pub ecs_scope: u8,
}

/// `vdh-edge explain`: runs the same code as the server on a snapshot
/// compiled from the given source.
pub fn explain(args: &crate::cli::ExplainArgs) -> anyhow::Result<String> {
    use crate::dns::wire::answer_records;
    use crate::dns::{Network, Transport, respond, types};
    let inputs = block_on(read_inputs(&args.source))?;
    let snap = snapshot::compile(&inputs, None, &Default::default()).map_err(invalid)?;
    let sdk_version = crate::cohort::parse_version(&args.sdk_version)
        .map_err(|m| anyhow::anyhow!("--sdk-version: {m}"))?;
    let platform = match &args.platform {
        None => None,
        Some(p) => Some(
            crate::routing::Platform::parse(p)
                .ok_or_else(|| anyhow::anyhow!("--platform: use android, ios, web or other"))?,
        ),
    };
    let asker = crate::document::Asker {
        sdk_version,
        client_id: args.client_id.clone(),
        platform,
        app_id: args.app_id.clone(),
        addr: Some(args.source_ip),
    };
    let Some(document) = crate::document::Document::build(&snap, &args.service, &asker) else {
        let known: Vec<&str> = snap
            .routing
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        anyhow::bail!(
            "no service named '{}' (known: {})",
            args.service,
            known.join(", ")
        );
    };
    let svc = snap.routing.service(&args.service).expect("document built");
    let mut dns = Vec::new();
    let net = Network::new(args.source_ip, None);
    let (decision, scope) = crate::dns::answer::decide_for_network(svc, &net);
    let rule = &svc.rules[decision.rule];
    for h in &svc.hostnames {
        // Ask the real answering code, as a resolver at --source would.
        let mut addrs = [Vec::new(), Vec::new()];
        let mut ttl = None;
        for (k, qtype) in [types::A, types::AAAA].into_iter().enumerate() {
            let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            q.extend_from_slice(h.wire());
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&1u16.to_be_bytes());
            let mut out = Vec::new();
            respond(&snap, &q, args.source_ip, Transport::Udp, &mut out);
            for (rtype, t, rdata) in answer_records(&out).unwrap_or_default() {
                ttl = Some(t);
                match (rtype, rdata.len()) {
                    (types::A, 4) => addrs[k].push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&rdata[..]).unwrap())
                            .to_string(),
                    ),
                    (types::AAAA, 16) => addrs[k].push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&rdata[..]).unwrap())
                            .to_string(),
                    ),
                    _ => {}
                }
            }
        }
        let [a, aaaa] = addrs;
        dns.push(DnsExplanation {
            name: h.to_string(),
            network: String::from_utf8_lossy(net.key()).into_owned(),
            rule: rule.name.clone(),
            environment: snap.routing.environments[rule.environment].name.clone(),
            a,
            aaaa,
            ttl,
            ecs_scope: scope,
        });
    }
    let e = Explanation { document, dns };
    if args.json {
        return Ok(serde_json::to_string_pretty(&e).expect("serializable"));
    }
    let d = &e.document;
    let mut out = String::new();
    use std::fmt::Write;
    let from = args
        .source
        .etcd_config()
        .map_or_else(|| args.source.state.display().to_string(), |c| c.dir());
    let _ = writeln!(
        out,
        "service {} at revision {} ({} SDK {})",
        d.service, d.revision, from, args.sdk_version
    );
    let _ = writeln!(
        out,
        "HTTP: rule '{}' -> environment {} ({}), realm {} epoch {}",
        d.rule, d.environment, d.backend_version, d.auth.realm, d.auth.epoch
    );
    let _ = writeln!(
        out,
        "      update: required={} recommended={} min={} latest={}; maintenance: {}",
        d.update.required,
        d.update.recommended,
        d.update.min_version.as_deref().unwrap_or("-"),
        d.update.latest_version.as_deref().unwrap_or("-"),
        if d.maintenance.active { "active" } else { "no" }
    );
    for x in &e.dns {
        let mut addrs = x.a.clone();
        addrs.extend(x.aaaa.iter().cloned());
        let _ = writeln!(
            out,
            "DNS:  {} from {}: rule '{}' -> {} [{}] ttl {} (ECS scope {})",
            x.name,
            x.network,
            x.rule,
            x.environment,
            addrs.join(", "),
            x.ttl.map_or("-".into(), |t| t.to_string()),
            x.ecs_scope
        );
    }
    let _ = writeln!(
        out,
        "document:\n{}",
        serde_json::to_string_pretty(d).expect("serializable")
    );
    Ok(out)
}
