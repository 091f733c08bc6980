//! `vdh-edge serve`: start-up in named steps, the reload loop ([`reload`])
//! and the cache folder ([`cache`]). The state the reload loop and the
//! fronts share is [`crate::shared`].
//!
//! Start-up order: load the first snapshot (files must be valid; etcd may
//! be down, then the cache or nothing), spawn the source and the reload
//! loop, bind every socket and log its address, spawn the fronts, register
//! the edge, then wait for a signal and drain within a grace period.

pub(crate) mod cache;
pub(crate) mod health;
pub(crate) mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{ServeArgs, SourceArgs};
use crate::config::snapshot::SourceKind;
use crate::error::Invalid;
use crate::etcd::{EtcdConfig, EtcdSource, PrefixState};
use crate::front::dns::rrl::Rrl;
use crate::front::dns::tcp::{TcpFront, TcpLimits};
use crate::front::http::client_addr::Proxies;
use crate::front::http::config::LongPolls;
use crate::front::http::{HttpLimits, HttpSettings, Role};
use crate::front::tls::{ALPN_DOT, CertStore, TlsFiles};
use crate::shared::{EtcdState, Shared};
use crate::source::StateEvent;
use cache::CacheDir;

/// Binds UDP (one `SO_REUSEPORT` socket per worker) and TCP on the same
/// address; with port 0 both get one port.
pub(crate) async fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    for _ in 0..20 {
        let udp = crate::front::dns::udp::bind(addr, workers)
            .with_context(|| format!("binding DNS UDP on {addr}"))?;
        let local = udp[0].local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => {
                warn!(error = %e, "TCP port taken; trying another");
            }
            Err(e) => return Err(e).with_context(|| format!("binding DNS TCP on {local}")),
        }
    }
    bail!("could not bind UDP and TCP on one port")
}

/// The sockets of one edge, bound before anything is served.
struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    dot: Option<TcpListener>,
    doh: Option<TcpListener>,
}

/// What an edge hands the autopilot executor (which lives with the
/// commands, above this module: the edge is given it as a function).
pub(crate) struct AutopilotCtx {
    pub(crate) cfg: EtcdConfig,
    pub(crate) client: etcd_client::Client,
    /// This edge's id (`autopilot@<id>` in the audit trail).
    pub(crate) edge_id: String,
    /// The edge's source settings (zones folder, for the previews).
    pub(crate) source: SourceArgs,
    /// Seconds the leader's lease lives.
    pub(crate) lease_ttl: i64,
    /// For the `autopilot_executor` gauge.
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: CancellationToken,
}

/// Starts the autopilot executor of one edge.
pub(crate) type Executor = fn(AutopilotCtx) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// What an edge hands the console (which reads through the commands'
/// code, above this module: the edge is given it as a function).
pub(crate) struct ConsoleCtx {
    /// The etcd settings and client in etcd mode.
    pub(crate) etcd: Option<(EtcdConfig, etcd_client::Client)>,
    /// This edge's id.
    pub(crate) edge_id: String,
    /// The admin token, sent to the other edges' admin listeners.
    pub(crate) token: crate::front::http::auth::Token,
}

/// Builds the console's routes for the admin listener.
pub(crate) type Console = fn(ConsoleCtx) -> axum::Router<Arc<Shared>>;

/// `vdh-edge serve`: runs until SIGINT or SIGTERM; in etcd mode `executor`
/// takes part in the autopilot election (unless `--no-autopilot`); the
/// admin listener carries the pages `console` builds.
pub(crate) async fn serve(
    args: ServeArgs,
    executor: Executor,
    console: Console,
) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let nofile = match crate::util::raise_nofile_limit() {
        Ok(n) => {
            info!(limit = n, "open-file limit");
            n
        }
        Err(error) => {
            warn!(%error, "could not raise the open-file limit");
            1024
        }
    };
    let mut shared = Shared::with_census(crate::census::Census::with_step(
        Duration::from_secs(args.census_hour.max(4)),
        Duration::from_secs(args.census_day.max(6)),
        args.census_point.max(1),
    ));
    shared.answer_cache = !args.no_answer_cache;
    let shared = Arc::new(shared);
    let cache = CacheDir::new(args.cache_dir.clone());
    restore_census(&shared, &cache);
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let (tx, rx) = mpsc::channel(16);
    let health_tx = tx.clone();
    let started = start_source(&args.source, &shared, &cache, tx, &shutdown, &mut tasks).await?;
    tasks.spawn(keep_census(shared.clone(), cache.clone(), shutdown.clone()));
    tasks.spawn(reload::run(
        rx,
        shared.clone(),
        cache,
        shutdown.clone(),
        started.published,
    ));
    let admin_token = args
        .admin_token_file
        .as_deref()
        .map(crate::front::http::auth::read_token)
        .transpose()?;
    let certs = open_certs(&args, &shared, &shutdown, &mut tasks)?;
    open_signing_keys(&args, &shared, &shutdown, &mut tasks)?;
    tasks.spawn(on_sighup(started.reread, certs.clone(), shutdown.clone()));
    let listeners = bind(&args).await?;
    let dns_addr = listeners.udp[0].local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    spawn_chores(&shared, &shutdown, &mut tasks);
    if admin_token.is_none() && !admin_addr.ip().is_loopback() {
        warn!(address = %admin_addr, "the admin listener is not on loopback and has no --admin-token-file: anyone who reaches it sees the console and the metrics");
    }
    let edge_id = args
        .edge_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", crate::util::hostname(), http_addr.port()));
    let pages = console(ConsoleCtx {
        etcd: started.etcd.clone(),
        edge_id: edge_id.clone(),
        token: admin_token.clone(),
    });
    tasks.spawn(health::run(
        shared.clone(),
        started.etcd.clone(),
        health_tx,
        args.health_source,
        shutdown.clone(),
    ));
    if let Some((cfg, client)) = started.etcd {
        if !args.no_autopilot {
            tasks.spawn(executor(AutopilotCtx {
                cfg: cfg.clone(),
                client: client.clone(),
                edge_id: edge_id.clone(),
                source: args.source.clone(),
                lease_ttl: args.autopilot_lease,
                shared: shared.clone(),
                shutdown: shutdown.clone(),
            }));
        }
        tasks.spawn(crate::etcd::registry::register(
            cfg,
            client,
            crate::etcd::registry::Edge {
                id: edge_id,
                http: http_addr.to_string(),
                dns: dns_addr.to_string(),
                admin: if args.admin_tls {
                    format!("https://{admin_addr}")
                } else {
                    admin_addr.to_string()
                },
            },
            shared.clone(),
            shutdown.clone(),
        ));
    }
    let fronts = Fronts {
        tcp: TcpLimits {
            max_connections: args.tcp_max_connections,
            per_address: args.tcp_per_address.max(1),
            idle: Duration::from_secs(args.tcp_idle_timeout.max(1)),
            io: Duration::from_millis(args.tcp_io_timeout.max(100)),
        },
        rrl: rrl(&args),
        http: http_settings(&args, nofile)?,
        certs,
        admin_tls: args.admin_tls,
        pages,
        admin_token,
    };
    spawn_fronts(listeners, fronts, &shared, &shutdown, &mut tasks)?;
    signals.next().await;
    info!("shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    tokio::select! {
        () = drain => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => warn!("grace period over; exiting"),
        () = signals.next() => warn!("second signal; exiting now"),
    }
    Ok(())
}

/// What [`start_source`] leaves for the next steps.
struct Started {
    /// The etcd settings and client in etcd mode (for the edge registry).
    etcd: Option<(EtcdConfig, etcd_client::Client)>,
    /// Asks the file watcher to re-read the inputs (file mode; SIGHUP).
    reread: Option<mpsc::UnboundedSender<()>>,
    /// The inputs already published, so the reload loop does not publish
    /// them again when a watch event or SIGHUP re-reads the same files, and
    /// can recompile them when a health verdict changes.
    published: Option<crate::config::snapshot::Inputs>,
}

/// Loads the first snapshot and spawns the task that keeps watching the
/// source.
async fn start_source(
    args: &SourceArgs,
    shared: &Arc<Shared>,
    cache: &CacheDir,
    tx: mpsc::Sender<StateEvent>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Started> {
    let Some(cfg) = args.etcd_config() else {
        let src = args.file_source()?;
        // Watch first, so a change made while we load is not missed.
        let watch = src
            .clone()
            .start_watch()
            .context("watching the zones folder and the state file")?;
        // The first snapshot must be valid: refuse to start on bad files.
        let inputs = src.read(1).map_err(Invalid::from)?;
        reload::apply(shared, &inputs, cache, &reload::Down::new()).map_err(Invalid::from)?;
        let reread = Some(watch.rereader());
        tasks.spawn(watch.run(tx, 1, shutdown.clone()));
        return Ok(Started {
            etcd: None,
            reread,
            published: Some(inputs),
        });
    };
    let client = cfg.connect().await?;
    let mut source = EtcdSource {
        cfg: cfg.clone(),
        zones_dir: args.zones_dir(),
        client: client.clone(),
    };
    let (start, published) = first_etcd_snapshot(&mut source, shared, cache).await;
    let (shared, shutdown) = (shared.clone(), shutdown.clone());
    tasks.spawn(async move { source.run(start, tx, shared, shutdown).await });
    Ok(Started {
        etcd: Some((cfg, client)),
        reread: None,
        published,
    })
}

/// Publishes the first snapshot in etcd mode: from etcd when it answers
/// with a valid state, otherwise from the last-known-good cache, otherwise
/// none (not ready until etcd gives a valid state). Never fails over bad or
/// missing data. Returns the prefix to watch from when it was published,
/// and the inputs published (from etcd or the cache), if any.
async fn first_etcd_snapshot(
    source: &mut EtcdSource,
    shared: &Shared,
    cache: &CacheDir,
) -> (Option<PrefixState>, Option<crate::config::snapshot::Inputs>) {
    let down = reload::Down::new();
    shared.set_etcd(EtcdState::Down);
    let first = match tokio::time::timeout(Duration::from_secs(3), source.read()).await {
        Ok(Ok(p)) => {
            shared.set_etcd(EtcdState::Up);
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
    if let Some(p) = &first
        && let Ok(inputs) = source.inputs(p, SourceKind::Etcd)
        && reload::apply(shared, &inputs, cache, &down).is_ok()
    {
        return (first, Some(inputs));
    }
    // An invalid etcd state is watched from scratch: the next valid
    // revision replaces whatever the cache gives now.
    match cache.load_prefix(&source.cfg.prefix) {
        Some(cached) => match source
            .inputs(&cached, SourceKind::Cache)
            .and_then(|i| reload::apply(shared, &i, cache, &down).map(|s| (s, i)))
        {
            Ok((s, inputs)) => {
                warn!(
                    revision = s.revision,
                    "serving the last-known-good state from the cache"
                );
                return (None, Some(inputs));
            }
            Err(errors) => warn!(errors = errors.len(), "the cached state is not usable"),
        },
        None => warn!("no usable state yet (etcd down or invalid, no cache); not ready, retrying"),
    }
    (None, None)
}

/// The CPUs this process may run on (the default count of UDP and HTTP
/// threads).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Binds DNS (UDP and TCP) and HTTP, and logs each bound address (tests
/// and operators read these lines to learn ports given as 0).
async fn bind(args: &ServeArgs) -> anyhow::Result<Listeners> {
    let workers = args.udp_workers.unwrap_or_else(cpus).max(1);
    let (udp, tcp) = bind_dns(args.dns, workers).await?;
    info!(protocol = "udp", address = %udp[0].local_addr()?, workers, "listening");
    info!(protocol = "tcp", address = %tcp.local_addr()?, "listening");
    let http = bind_tcp("http", args.http).await?;
    let admin = bind_tcp("admin", args.admin).await?;
    let dot = match args.dot {
        Some(a) => Some(bind_tcp("dot", a).await?),
        None => None,
    };
    let doh = match args.doh {
        Some(a) => Some(bind_tcp("doh", a).await?),
        None => None,
    };
    Ok(Listeners {
        udp,
        tcp,
        http,
        admin,
        dot,
        doh,
    })
}

/// Binds one TCP listener and logs its address.
async fn bind_tcp(protocol: &'static str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {protocol} on {addr}"))?;
    info!(protocol, address = %l.local_addr()?, "listening");
    Ok(l)
}

/// Loads `--tls-cert`/`--tls-key` (failing start-up, naming the file, when
/// they are bad) and keeps watching them.
fn open_certs(
    args: &ServeArgs,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Option<Arc<CertStore>>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let store =
        CertStore::open(files, Some(shared.clone())).map_err(|e| Invalid(vec![e.to_string()]))?;
    info!(cert = %cert.display(), key = %key.display(), "TLS certificate loaded");
    tasks.spawn(store.clone().watch(shutdown.clone()));
    Ok(Some(store))
}

/// `--signing-key`: loads the keys (a bad file stops the start, naming
/// it) and keeps following the files: a changed file is read again every
/// second; a bad one is logged and the keys in use stay.
fn open_signing_keys(
    args: &ServeArgs,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    if args.signing_key.is_empty() {
        return Ok(());
    }
    let validity = crate::util::parse_duration(&args.document_validity)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Invalid(vec![format!(
                "--document-validity '{}': use e.g. 7d, 12h",
                args.document_validity
            )])
        })?;
    let files = args.signing_key.clone();
    let read = move || -> Result<Vec<(String, Vec<u8>)>, String> {
        files
            .iter()
            .map(|f| {
                std::fs::read(f)
                    .map(|b| (f.display().to_string(), b))
                    .map_err(|e| format!("{}: {e}", f.display()))
            })
            .collect()
    };
    let load = move |pems: &[(String, Vec<u8>)]| crate::signing::Signer::from_pems(pems, validity);
    let mut last = read().map_err(|e| Invalid(vec![e]))?;
    let signer = load(&last).map_err(|e| Invalid(vec![e]))?;
    info!(kid = signer.kid(), "signing documents");
    shared.signer.store(Some(Arc::new(signer)));
    let (shared, shutdown) = (shared.clone(), shutdown.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = match read() {
                Ok(p) if p != last => p,
                Ok(_) => continue,
                Err(error) => {
                    warn!(%error, "signing key unreadable; still signing with the keys loaded");
                    continue;
                }
            };
            match load(&now) {
                Ok(s) => {
                    info!(kid = s.kid(), "signing keys reloaded");
                    shared.signer.store(Some(Arc::new(s)));
                }
                Err(error) => {
                    warn!(%error, "signing key refused; still signing with the keys loaded");
                }
            }
            last = now;
        }
    });
    Ok(())
}

/// `--rrl-*`: the UDP rate limiter, if on.
fn rrl(args: &ServeArgs) -> Option<Arc<Rrl>> {
    (args.rrl_rate > 0).then(|| {
        info!(
            rate = args.rrl_rate,
            slip = args.rrl_slip,
            "response rate limiting on"
        );
        Arc::new(Rrl::new(
            args.rrl_rate,
            args.rrl_slip,
            args.rrl_whitelist.clone(),
        ))
    })
}

/// `--http-*`, `--long-polls-*`, `--cors-origin`, `--trusted-proxy`.
fn http_settings(args: &ServeArgs, nofile: u64) -> anyhow::Result<HttpSettings> {
    let max_connections = http_max_connections(args, nofile);
    let long_polls = LongPolls::new(
        if args.long_polls_max > 0 {
            args.long_polls_max
        } else {
            (max_connections / 8 * 7).max(1)
        },
        args.long_polls_per_address,
    );
    let settings = HttpSettings {
        cors: crate::front::http::cors::Cors::new(&args.cors_origin),
        limits: HttpLimits {
            max_connections,
            per_address: args.http_per_address,
            header_timeout: Duration::from_secs(args.http_header_timeout.max(1)),
        },
        proxies: Arc::new(Proxies(args.trusted_proxy.clone())),
        long_polls: Arc::new(long_polls),
        permits: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))),
        pages: None,
        token: None,
        hot_path: true,
        workers: Some(crate::front::http::workers::Workers::start(
            args.http_threads.unwrap_or_else(cpus),
        )?),
    };
    info!(
        max_connections,
        threads = settings.workers.as_ref().map_or(0, |w| w.threads()),
        per_address = settings.limits.per_address,
        long_polls = settings.long_polls.max,
        long_polls_per_address = settings.long_polls.per_address,
        "http limits"
    );
    Ok(settings)
}

/// Puts back the census the last run saved in the cache folder.
fn restore_census(shared: &Shared, cache: &CacheDir) {
    let Some(saved) = cache.load_census() else {
        return;
    };
    if shared.census.restore(&saved) {
        info!("census restored from the cache folder");
    } else {
        warn!("the saved census has other window lengths; starting empty");
    }
}

/// Saves the census to the cache folder every minute and at shutdown.
async fn keep_census(shared: Arc<Shared>, cache: CacheDir, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            () = shutdown.cancelled() => true,
        };
        let (s, c) = (shared.clone(), cache.clone());
        let r = tokio::task::spawn_blocking(move || c.save_census(&s.census)).await;
        if let Ok(Err(error)) = r {
            warn!(%error, "could not save the census");
        }
        if stop {
            return;
        }
    }
}

/// Tells systemd (`NOTIFY_SOCKET`, under `Type=notify`) a state change;
/// nothing without systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        warn!(%error, "could not notify systemd");
    }
}

/// Background chores: log when the first snapshot is live, and give freed
/// heap pages back to the kernel now and then.
fn spawn_chores(shared: &Arc<Shared>, shutdown: &CancellationToken, tasks: &mut JoinSet<()>) {
    let first = shared.clone();
    let mut changes = first.subscribe();
    tasks.spawn(async move {
        while !first.is_ready() {
            if changes.changed().await.is_err() {
                return;
            }
        }
        let snap = first.snapshot();
        info!(
            revision = snap.revision,
            source = snap.kind.as_str(),
            zones = snap.zones.len(),
            "first snapshot live"
        );
        // Type=notify: systemd considers the service started now (the
        // sockets are bound and answer from a live snapshot).
        let status = format!(
            "serving revision {} from {}",
            snap.revision,
            snap.kind.as_str()
        );
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
    });
    // After a burst of connections glibc keeps freed pages resident.
    #[cfg(target_env = "gnu")]
    fn trim_heap() {
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
    }
    // Other C libraries (musl) have no malloc_trim; their allocator gives
    // memory back by itself.
    #[cfg(not(target_env = "gnu"))]
    fn trim_heap() {}
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => trim_heap(),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Connections the admin listener serves at once.
const ADMIN_CONNECTIONS: usize = 256;

/// `--http-max-connections` (shared by the public and DoH listeners), or
/// by default the open-file limit less the DNS TCP (and DoT) connections,
/// the admin listener's, and 512 descriptors for everything else (etcd,
/// the files read on a change, the cache, the UDP sockets).
fn http_max_connections(args: &ServeArgs, nofile: u64) -> usize {
    if args.http_max_connections > 0 {
        return args.http_max_connections;
    }
    let tcp_listeners = 1 + usize::from(args.dot.is_some());
    let reserve = (args.tcp_max_connections.saturating_mul(tcp_listeners))
        .saturating_add(ADMIN_CONNECTIONS + 512);
    usize::try_from(nofile)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .max(64)
}

/// How the fronts are set up.
struct Fronts {
    tcp: TcpLimits,
    rrl: Option<Arc<Rrl>>,
    http: HttpSettings,
    certs: Option<Arc<CertStore>>,
    admin_tls: bool,
    /// The console's routes.
    pages: axum::Router<Arc<Shared>>,
    admin_token: crate::front::http::auth::Token,
}

/// Starts the UDP threads, the TCP loop, the HTTP listeners and the
/// encrypted DNS listeners; all stop with `shutdown`.
fn spawn_fronts(
    listeners: Listeners,
    fronts: Fronts,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let udp_stop = Arc::new(AtomicBool::new(false));
    let udp_threads =
        crate::front::dns::udp::spawn(listeners.udp, shared, fronts.rrl.as_ref(), &udp_stop)?;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        stop.cancelled().await;
        udp_stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || {
            for t in udp_threads {
                let _ = t.join();
            }
        })
        .await;
    });
    let http = fronts.http;
    let tcp = TcpFront {
        limits: fronts.tcp,
        proxies: http.proxies.clone(),
        tls: None,
    };
    if let (Some(certs), Some(dot)) = (&fronts.certs, listeners.dot) {
        let dot_front = TcpFront {
            tls: Some(certs.server_config(ALPN_DOT).into()),
            ..tcp.clone()
        };
        tasks.spawn(crate::front::dns::tcp::run(
            dot,
            shared.clone(),
            dot_front,
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::front::dns::tcp::run(
        listeners.tcp,
        shared.clone(),
        tcp,
        shutdown.clone(),
    ));
    let admin = HttpSettings {
        cors: None,
        limits: HttpLimits {
            max_connections: ADMIN_CONNECTIONS,
            per_address: 0,
            ..http.limits
        },
        proxies: Arc::new(Proxies::default()),
        long_polls: Arc::new(LongPolls::default()),
        permits: Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS)),
        pages: Some(fronts.pages),
        token: fronts.admin_token,
        hot_path: false,
        workers: None,
    };
    let admin_certs = fronts.certs.clone().filter(|_| fronts.admin_tls);
    let mut servers = vec![
        (
            listeners.http,
            Role::Public,
            fronts.certs.clone(),
            http.clone(),
        ),
        (listeners.admin, Role::Admin, admin_certs, admin),
    ];
    if let (Some(certs), Some(doh)) = (fronts.certs, listeners.doh) {
        servers.push((doh, Role::Doh, Some(certs), http));
    }
    for (listener, role, certs, settings) in servers {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(error) =
                crate::front::http::run(listener, role, certs, shared, settings, shutdown).await
            {
                warn!(%error, listener = role.label(), "http server failed");
            }
        });
    }
    Ok(())
}

/// SIGHUP (what `systemctl reload` sends): re-read the file inputs (file
/// mode) and the TLS files, log it, and go on serving; never stop the
/// process.
async fn on_sighup(
    reread: Option<mpsc::UnboundedSender<()>>,
    certs: Option<Arc<CertStore>>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, "cannot handle SIGHUP");
            return;
        }
    };
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            () = shutdown.cancelled() => return,
        }
        match &reread {
            Some(tx) => {
                info!("SIGHUP: re-reading the zones folder and the state file");
                let _ = tx.send(());
            }
            None => info!("SIGHUP: the state follows etcd; nothing to re-read"),
        }
        if let Some(certs) = &certs {
            let certs = certs.clone();
            let _ = tokio::task::spawn_blocking(move || certs.reload("SIGHUP")).await;
        }
    }
}

/// SIGTERM and SIGINT, listened for from the start of `serve` (before the
/// first snapshot is announced), so a stop that follows readiness at once
/// still drains instead of killing the process.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
