//! A fleet of 1,000 reference Rust clients (OLD 0.9.0 and NEW 1.0.0 ids)
//! in one process against two edges and a real etcd, walking new-env
//! phases 1 -> 2 (10%, 50%) -> 3 and a rollback: after each step every
//! client holds the document its cohort implies within 2 s;
//! `TokenInvalidated` fires exactly for the clients whose realm changed;
//! etcd stopped for 10 s and one edge restarted midway lose no document
//! and let no invalid one in. A second fleet in polling mode shows the
//! refresh times spread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vdh_client::{Client, Config, Event, Keys};

use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, etcd_must, http_request, repo};

const P: &str = "/fleet";
const N: usize = 1000;

/// The cohort bucket of docs/cohort.md.
fn bucket(salt: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap()) % 10_000
}

/// Where the fleet should be.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Zero,
    One,
    Two(u64),
    Three,
}

/// (environment, update.required, realm) client `i` must hold in `phase`.
fn expected(phase: Phase, i: usize) -> (&'static str, bool, &'static str) {
    let new = i % 2 == 1;
    match (phase, new) {
        (Phase::Zero, _) => ("prod", false, "prod/v0"),
        (_, true) => ("prod-v1", false, "prod-v1/v1"),
        (Phase::One, false) => ("prod", false, "prod/v0"),
        (Phase::Two(p), false) => (
            "prod",
            bucket("vdh-api/min_version", &format!("f-{i}")) < p * 100,
            "prod/v0",
        ),
        (Phase::Three, false) => ("prod", true, "prod/v0"),
    }
}

/// An edge with its own cache folder (so a restart while etcd is away
/// serves the last-known-good state), on `http` if given.
fn edge(
    ep: &str,
    key: &std::path::Path,
    cache: &std::path::Path,
    http: Option<std::net::SocketAddr>,
) -> TestServer {
    let mut args: Vec<String> = [
        "--zones",
        repo().join("zones").to_str().unwrap(),
        "--etcd",
        ep,
        "--prefix",
        P,
        "--signing-key",
        key.to_str().unwrap(),
        "--no-autopilot",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if let Some(a) = http {
        args.extend(["--http".to_string(), a.to_string()]);
    }
    TestServer::start_with(&args, "first snapshot live")
}

/// Waits until every client holds what `phase` implies; returns the time.
async fn converged(clients: &[Client], phase: Phase, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let wrong: Vec<usize> = (0..clients.len())
            .filter(|&i| {
                let want = expected(phase, i);
                clients[i].document().is_none_or(|d| {
                    (
                        d.environment.as_str(),
                        d.update.required,
                        d.auth.realm.as_str(),
                    ) != want
                })
            })
            .collect();
        if wrong.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} clients not at {phase:?} after {within:?}, e.g. f-{}: {:?}",
            wrong.len(),
            wrong[0],
            clients[wrong[0]].document()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_fleet_of_1000_clients_follows_new_env_and_its_rollback() {
    let _exclusive = crate::harness::exclusive();
    let mut etcd = Etcd::single();
    let ep = etcd.endpoints();
    etcd_must(&ep, P, &["apply", "deploy/state-phase0.yaml", "--yes"]);
    let before: i64 = etcd_must(&ep, P, &["status", "--json"])
        .parse::<serde_json::Value>()
        .unwrap()["prefix_revision"]
        .as_i64()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    crate::harness::keygen(&key);
    let caches = [dir.path().join("c0"), dir.path().join("c1")];
    let mut edges = vec![
        edge(&ep, &key, &caches[0], None),
        edge(&ep, &key, &caches[1], None),
    ];
    let keys = Keys::from_jwks(&http_request(edges[0].http, "GET", "/v1/keys", &[]).body).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tokens: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
        let rejected = Arc::new(AtomicU32::new(0));
        let mut clients = Vec::new();
        for i in 0..N {
            let e = edges[i % 2].http;
            let mut c = Config::new(
                &format!("http://127.0.0.1:{}", e.port()),
                "vdh-api",
                if i % 2 == 1 { "1.0.0" } else { "0.9.0" },
                keys.clone(),
            );
            c.edge_addr = Some(e);
            c.client_id = Some(format!("f-{i}"));
            c.long_poll = Some(Duration::from_secs(20));
            c.backoff = (Duration::from_millis(200), Duration::from_secs(2));
            let (client, mut rx) = Client::start(c).unwrap();
            let (tokens, rejected) = (tokens.clone(), rejected.clone());
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    match e {
                        Event::TokenInvalidated { .. } => {
                            tokens[i].fetch_add(1, Ordering::Relaxed);
                        }
                        Event::Rejected { .. } => {
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            });
            clients.push(client);
        }
        let took = converged(&clients, Phase::Zero, Duration::from_secs(20)).await;
        eprintln!("{N} clients started in {took:?}");
        for (args, phase) in [
            (
                &["scheme", "apply", "new-env", "--phase", "1", "--yes"][..],
                Phase::One,
            ),
            (
                &[
                    "scheme",
                    "apply",
                    "new-env",
                    "--phase",
                    "2",
                    "--percent",
                    "10",
                    "--yes",
                ][..],
                Phase::Two(10),
            ),
        ] {
            run_step(&ep, args).await;
            let took = converged(&clients, phase, Duration::from_secs(2)).await;
            eprintln!("{phase:?}: every client converged in {took:?}");
        }
        // etcd away for 10 s and one edge restarted (same port): nobody
        // loses the document, nobody takes an invalid one.
        etcd.kill(0);
        let stopped = Instant::now();
        let http = edges[1].http;
        edges.pop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (ep2, key2, cache) = (ep.clone(), key.clone(), caches[1].clone());
        edges.push(
            tokio::task::spawn_blocking(move || edge(&ep2, &key2, &cache, Some(http)))
                .await
                .unwrap(),
        );
        while stopped.elapsed() < Duration::from_secs(10) {
            converged(&clients, Phase::Two(10), Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        etcd.restart(0);
        etcd.wait_healthy();
        for (args, phase) in [
            (
                &[
                    "scheme",
                    "apply",
                    "new-env",
                    "--phase",
                    "2",
                    "--percent",
                    "50",
                    "--yes",
                ][..],
                Phase::Two(50),
            ),
            (
                &["scheme", "apply", "new-env", "--phase", "3", "--yes"][..],
                Phase::Three,
            ),
        ] {
            run_step(&ep, args).await;
            let took = converged(&clients, phase, Duration::from_secs(2)).await;
            eprintln!("{phase:?}: every client converged in {took:?}");
        }
        let to = before.to_string();
        let args: Vec<&str> = vec!["rollback", "--to-revision", &to, "--yes"];
        run_step(&ep, &args).await;
        let took = converged(&clients, Phase::Zero, Duration::from_secs(2)).await;
        eprintln!("rollback: every client converged in {took:?}");
        // Realms changed twice for NEW clients (prod -> prod-v1 -> prod),
        // never for OLD ones.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..N {
            let want = if i % 2 == 1 { 2 } else { 0 };
            assert_eq!(
                tokens[i].load(Ordering::Relaxed),
                want,
                "TokenInvalidated of f-{i}"
            );
        }
        assert_eq!(rejected.load(Ordering::Relaxed), 0, "no answer was refused");
    });
}

async fn run_step(ep: &str, args: &[&str]) {
    let (ep, args): (String, Vec<String>) = (
        ep.to_string(),
        args.iter().map(ToString::to_string).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        etcd_must(&ep, P, &a)
    })
    .await
    .unwrap();
}

/// Requests to `/v1/config` the edge has answered (any status).
fn config_requests(s: &TestServer) -> u64 {
    let (_, m) = s.admin_get("/metrics");
    m.lines()
        .filter(|l| l.starts_with("vdh_edge_http_responses_total{") && l.contains("\"/v1/config\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_polling_fleet_spreads_its_refreshes() {
    let _exclusive = crate::harness::exclusive();
    // refresh_s 10: each client refreshes every 8-10 s (the edge's jitter),
    // its first wait a random part of that (the client's).
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let state = shipped.replace("    refresh_s: 300\n", "    refresh_s: 10\n");
    assert_ne!(state, shipped);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, state).unwrap();
    let key = dir.path().join("k.pem");
    crate::harness::keygen(&key);
    let s = TestServer::start(
        &repo().join("zones"),
        &f,
        &["--signing-key", key.to_str().unwrap()],
    );
    let keys = Keys::from_jwks(&http_request(s.http, "GET", "/v1/keys", &[]).body).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let errors = Arc::new(AtomicU32::new(0));
    let per_second = rt.block_on(async {
        let mut clients = Vec::new();
        for i in 0..N {
            let mut c = Config::new(
                &format!("http://127.0.0.1:{}", s.http.port()),
                "vdh-api",
                "1.0.0",
                keys.clone(),
            );
            c.edge_addr = Some(s.http);
            c.client_id = Some(format!("p-{i}"));
            c.long_poll = None;
            c.backoff = (Duration::from_millis(200), Duration::from_secs(2));
            let (client, mut rx) = Client::start(c).unwrap();
            let errors = errors.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if matches!(e, Event::Unreachable { .. } | Event::Rejected { .. }) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            clients.push(client);
        }
        // Every client has its document; then count answers per second.
        let start = Instant::now();
        while !clients.iter().all(|c| c.document().is_some()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not every client got a document"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut last = config_requests(&s);
        let mut per_second = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..20 {
            tick.tick().await;
            let now = config_requests(&s);
            per_second.push(now - last);
            last = now;
        }
        assert!(clients.iter().all(|c| c.document().is_some()));
        per_second
    });
    let mean = per_second.iter().sum::<u64>() as f64 / per_second.len() as f64;
    let max = *per_second.iter().max().unwrap();
    eprintln!(
        "refreshes per second: {per_second:?} (mean {mean:.1}, max {max}); {} errors",
        errors.load(Ordering::Relaxed)
    );
    assert!(mean > 50.0, "the clients refresh: {per_second:?}");
    assert!(
        (max as f64) <= 3.0 * mean,
        "a 1-second bucket holds {max}, over 3x the mean {mean:.1}: {per_second:?}"
    );
}
