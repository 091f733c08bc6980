//! Environment health checks (issue 12, first part): every edge probes a
//! backend's health URL; the verdict is the majority of the live edges'
//! observations, the same on every edge, in `/metrics` and `status`.
//! The backend is a small HTTP server on loopback that the test turns
//! healthy and unhealthy.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, command, repo};

const PREFIX: &str = "/health";

/// A backend answering `/healthz` 200 or 503 as `healthy` says.
fn backend(healthy: Arc<AtomicBool>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let status = if healthy.load(Ordering::Relaxed) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    port
}

fn run(ep: &str, args: &[&str]) -> (bool, String, String) {
    let out = command()
        .current_dir(repo())
        .args(args)
        .args(["--etcd", ep, "--prefix", PREFIX])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let (ok, out, err) = run(&ep, &["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("health: prod-v1 DOWN (3 of 3 edges see it down)"),
        "{out}"
    );
    let (_, m) = edges[0].admin_get("/metrics");
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
