//! Environment health checks (issue 12, first part): every edge probes a
//! backend's health URL; the verdict is the majority of the live edges'
//! observations, the same on every edge, in `/metrics` and `status`.
//! The backend is a small HTTP server on loopback that the test turns
//! healthy and unhealthy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dnsclient::{Query, answer_addrs};
use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, backend, backend_by_peer, command, etcd_run, repo};

const PREFIX: &str = "/health";

fn run(ep: &str, args: &[&str]) -> (bool, String, String) {
    etcd_run(ep, PREFIX, args)
}

/// `environment_up{environment="prod-v1"}` on one edge, if exported.
fn env_up(s: &TestServer) -> Option<i64> {
    let (_, m) = s.admin_get("/metrics");
    m.lines()
        .find_map(|l| l.strip_prefix("vdh_edge_environment_up{environment=\"prod-v1\"} "))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_all(edges: &[TestServer], want: i64, within: Duration) -> Duration {
    let start = Instant::now();
    while !edges.iter().all(|s| env_up(s) == Some(want)) {
        assert!(
            start.elapsed() < within,
            "edges did not agree on {want} within {within:?}: {:?}",
            edges.iter().map(env_up).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn a_majority_of_edges_decides_an_environments_health() {
    // Times verdicts: not while another test loads both cores.
    let _exclusive = crate::harness::exclusive();
    let healthy = Arc::new(AtomicBool::new(true));
    let port = backend(healthy.clone());
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let state = shipped.replace(
        "    api_base_url: https://vdh-api-v1.yingzi.com\n",
        &format!(
            "    api_base_url: https://vdh-api-v1.yingzi.com\n    health: {{ url: \"http://127.0.0.1:{port}/healthz\", interval_s: 1, unhealthy_after: 2, healthy_after: 1 }}\n"
        ),
    );
    assert_ne!(state, shipped);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, &state).unwrap();
    let (ok, out, err) = run(&ep, &["apply", f.to_str().unwrap(), "--yes"]);
    assert!(ok, "{out}{err}");
    let edge = || {
        let args: Vec<String> = [
            "--zones",
            repo().join("zones").to_str().unwrap(),
            "--etcd",
            &ep,
            "--prefix",
            PREFIX,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        TestServer::start_with(&args, "first snapshot live")
    };
    let edges = [edge(), edge(), edge()];
    wait_all(&edges, 1, Duration::from_secs(10));
    // The backend fails: down on every edge within interval x
    // unhealthy_after + 2 s.
    healthy.store(false, Ordering::Relaxed);
    let took = wait_all(&edges, 0, Duration::from_secs(4));
    eprintln!("down seen by all edges after {took:?}");
    // Each edge's observation reaches the registry on its next write: the
    // verdict of all three may lag the gauges by a poll.
    let start = Instant::now();
    let out = loop {
        let (ok, out, err) = run(&ep, &["status"]);
        assert!(ok, "{err}");
        if out.contains("3 of 3 edges see it down") || start.elapsed() > Duration::from_secs(2) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.contains("health: prod-v1 DOWN (3 of 3 edges see it down)"),
        "{out}"
    );
    // The edge reads the other edges' votes from the registry when they
    // change: its gauge may follow `status` (which reads etcd itself) by a
    // moment.
    let start = Instant::now();
    let m = loop {
        let (_, m) = edges[0].admin_get("/metrics");
        if m.contains("vdh_edge_environment_votes{environment=\"prod-v1\",vote=\"down\"} 3")
            || start.elapsed() > Duration::from_secs(2)
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        m.contains("vdh_edge_environment_votes{environment=\"prod-v1\",vote=\"down\"} 3"),
        "{m}"
    );
    // Back: up again within interval x healthy_after + 2 s.
    healthy.store(true, Ordering::Relaxed);
    let took = wait_all(&edges, 1, Duration::from_secs(3));
    eprintln!("up seen by all edges after {took:?}");
    // The verdict is up once a majority is; every edge's own view follows
    // within interval x healthy_after + 2 s.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, out, _) = run(&ep, &["status", "--json"]);
        let st: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(st["health"]["prod-v1"]["up"], true, "{st}");
        if st["health"]["prod-v1"]["up_votes"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not every edge sees it up: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_checks_are_validated() {
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(
        &f,
        shipped.replace(
            "    api_base_url: https://vdh-api-v1.yingzi.com\n",
            "    api_base_url: https://vdh-api-v1.yingzi.com\n    health: { url: \"https://backend/healthz\", interval_s: 0 }\n",
        ),
    )
    .unwrap();
    let out = command()
        .args(["check", "--zones"])
        .arg(repo().join("zones"))
        .arg("--state")
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("environments.prod-v1.health.url: 'https://backend/healthz' is not a plain http://host:port/path URL"), "{err}");
    assert!(
        err.contains("environments.prod-v1.health.interval_s: must be from 1 to 3600 seconds"),
        "{err}"
    );
}

/// The failover fixture: prod-v1 (checked, failing over to prod-v1b, both
/// v1) and a service `vdh-api-new` whose DNS answer is prod-v1, so DNS and
/// the NEW SDK's document both show where prod-v1's clients go.
fn failover_state(primary: u16, secondary: u16) -> String {
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let check = |port: u16| {
        format!(
            "    health: {{ url: \"http://127.0.0.1:{port}/healthz\", interval_s: 1, unhealthy_after: 2, healthy_after: 1 }}\n"
        )
    };
    let state = shipped
        .replace(
            "    api_base_url: https://vdh-api-v1.yingzi.com\n",
            &format!(
                "    api_base_url: https://vdh-api-v1.yingzi.com\n{}    failover: [prod-v1b]\n",
                check(primary)
            ),
        )
        .replace(
            "services:\n",
            &format!(
                "  prod-v1b:\n    backend_version: v1\n    names: [vdh-api-v1b.yingzi.com]\n    addresses: [203.0.113.50]\n    api_base_url: https://vdh-api-v1b.yingzi.com\n{}services:\n  vdh-api-new:\n    hostnames: [vdh-api-new.yingzi.com]\n    legacy_sdk_version: 1.0.0\n    rules:\n      - name: all\n        environment: prod-v1\n",
                check(secondary)
            ),
        );
    assert!(
        state.contains("prod-v1b]") && state.contains("vdh-api-new:"),
        "{state}"
    );
    state
}

const NEW_DOC: &str = "/v1/config/vdh-api?sdk_version=1.2.0&client_id=c-new&platform=ios";

/// What one edge answers for prod-v1's clients: the DNS addresses of the
/// service bound to prod-v1, and the NEW document's base URL and
/// environment.
fn answers(s: &TestServer) -> (Vec<String>, String, String) {
    let resp = Query::new("vdh-api-new.yingzi.com.", 1)
        .send(s.dns)
        .unwrap();
    let mut addrs = answer_addrs(&resp);
    addrs.sort();
    let (status, body) = s.http_get(NEW_DOC);
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        addrs,
        doc["api_base_url"].as_str().unwrap().to_string(),
        doc["environment"].as_str().unwrap().to_string(),
    )
}

/// Waits until every edge answers `want`; returns how long it took.
fn wait_answers(
    edges: &[TestServer],
    want: &(Vec<String>, String, String),
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got: Vec<_> = edges.iter().map(answers).collect();
        if got.iter().all(|g| g == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "edges did not all answer {want:?} within {within:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn etcd_edge(ep: &str, extra: &[&str]) -> TestServer {
    let mut args: Vec<String> = [
        "--zones",
        repo().join("zones").to_str().unwrap(),
        "--etcd",
        ep,
        "--prefix",
        PREFIX_FAILOVER,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().map(ToString::to_string));
    TestServer::start_with(&args, "first snapshot live")
}

const PREFIX_FAILOVER: &str = "/failover";

#[test]
fn a_down_environment_fails_over_on_every_edge_and_fails_open_when_all_are_down() {
    let _exclusive = crate::harness::exclusive();
    let primary_up = Arc::new(AtomicBool::new(true));
    let secondary_up = Arc::new(AtomicBool::new(true));
    // The primary's check always fails from 127.0.0.2: the one edge that
    // probes from there sees it down alone.
    let p = primary_up.clone();
    let primary = backend_by_peer(move |peer| {
        p.load(Ordering::Relaxed) && peer != std::net::IpAddr::from([127, 0, 0, 2])
    });
    let secondary = backend(secondary_up.clone());
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, failover_state(primary, secondary)).unwrap();
    let (ok, out, err) = etcd_run(
        &ep,
        PREFIX_FAILOVER,
        &["apply", f.to_str().unwrap(), "--yes"],
    );
    assert!(ok, "{out}{err}");
    let edges = [
        etcd_edge(&ep, &["--health-source", "127.0.0.2"]),
        etcd_edge(&ep, &[]),
        etcd_edge(&ep, &[]),
    ];
    let primary_answer = (
        vec!["203.0.113.10".to_string(), "203.0.113.11".to_string()],
        "https://vdh-api-v1.yingzi.com".to_string(),
        "prod-v1".to_string(),
    );
    let failed_over = (
        vec!["203.0.113.50".to_string()],
        "https://vdh-api-v1b.yingzi.com".to_string(),
        "prod-v1b".to_string(),
    );
    wait_answers(&edges, &primary_answer, Duration::from_secs(10));
    // Load on every edge all along: no failed query, one document per
    // revision.
    let edges: Vec<Option<TestServer>> = edges.into_iter().map(Some).collect();
    let load = crate::load::Load::start(&edges);
    let edges: Vec<TestServer> = edges.into_iter().flatten().collect();
    // One edge alone sees prod-v1 down: its vote is outvoted, nothing
    // fails over (give it several probe rounds).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        for s in &edges {
            assert_eq!(answers(s), primary_answer, "one edge's view failed it over");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    status_shows(&ep, |o| {
        o.contains("health: prod-v1 up (1 of 3 edges see it down)")
    });
    // prod-v1 fails for everyone: within interval x unhealthy_after + 2 s
    // every edge answers prod-v1b, in DNS and in the document.
    primary_up.store(false, Ordering::Relaxed);
    let took = wait_answers(&edges, &failed_over, Duration::from_secs(4));
    eprintln!("failed over on every edge after {took:?}");
    // Each edge's registration follows its publish within moments.
    status_shows(&ep, |o| {
        o.contains("failover: prod-v1 -> prod-v1b on 3 of 3 edges")
    });
    let (_, m) = edges[1].admin_get("/metrics");
    assert!(
        m.contains(
            "vdh_edge_environment_failover{environment=\"prod-v1\",state=\"failed_over\"} 1"
        ),
        "{m}"
    );
    // explain shows the verdict and the failed-over answer the edges give.
    let (ok, out, err) = etcd_run(
        &ep,
        PREFIX_FAILOVER,
        &[
            "explain",
            "--zones",
            "zones",
            "--service",
            "vdh-api",
            "--sdk-version",
            "1.2.0",
        ],
    );
    assert!(ok, "{err}");
    // (The third edge's own probe may not have counted yet: 2 or 3 votes.)
    assert!(
        out.contains("health: prod-v1 DOWN (")
            && out.contains(" of 3 edges see it down); its clients are answered with prod-v1b"),
        "{out}"
    );
    assert!(out.contains("-> environment prod-v1b (v1)"), "{out}");
    // The OLD SDK's document is not touched (its rule sends it to prod).
    let (_, old) = edges[2].http_get("/v1/config/vdh-api?sdk_version=0.9.0&client_id=c-old");
    assert!(old.contains("\"environment\":\"prod\""), "{old}");
    // Every candidate down too: fail open, the primary is answered, and
    // status and the metric say so.
    secondary_up.store(false, Ordering::Relaxed);
    let took = wait_answers(&edges, &primary_answer, Duration::from_secs(4));
    eprintln!("failing open on every edge after {took:?}");
    status_shows(&ep, |o| {
        o.contains("failover: prod-v1 FAILING OPEN on 3 of 3 edges")
    });
    let (_, m) = edges[0].admin_get("/metrics");
    assert!(
        m.contains(
            "vdh_edge_environment_failover{environment=\"prod-v1\",state=\"failing_open\"} 1"
        ),
        "{m}"
    );
    // prod-v1b back: failed over again; then prod-v1 back: home within
    // interval x healthy_after + 2 s.
    secondary_up.store(true, Ordering::Relaxed);
    wait_answers(&edges, &failed_over, Duration::from_secs(3));
    primary_up.store(true, Ordering::Relaxed);
    let took = wait_answers(&edges, &primary_answer, Duration::from_secs(3));
    eprintln!("back on the primary after {took:?}");
    status_shows(&ep, |o| {
        o.contains("health: prod-v1 up") && !o.contains("failover:")
    });
    load.finish();
}

/// Polls `status` until `want` holds (2 s at most).
fn status_shows(ep: &str, want: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let (_, out, _) = etcd_run(ep, PREFIX_FAILOVER, &["status"]);
        if want(&out) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failover_to_another_backend_version_is_refused() {
    let state = failover_state(1, 2).replace("failover: [prod-v1b]", "failover: [prod]");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, &state).unwrap();
    let want = "environments.prod-v1.failover[0]: 'prod' serves backend v0, 'prod-v1' serves v1: clients failed over there would break";
    let out = command()
        .current_dir(repo())
        .args(["check", "--zones", "zones", "--state", f.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(want), "{err}");
    let etcd = Etcd::single();
    let (ok, out, err) = etcd_run(
        &etcd.endpoints(),
        "/refused",
        &["apply", f.to_str().unwrap(), "--yes"],
    );
    assert!(!ok, "{out}");
    assert!(err.contains(want), "{err}");
    let keys = etcd.ctl(&["get", "--prefix", "--keys-only", "/refused"]);
    assert!(keys.trim().is_empty(), "nothing was written: {keys}");
}
