//! What operators graph and read (issue 14): a real Prometheus scrapes an
//! edge (types, histograms, build_info), `promtool` checks `/metrics`, the
//! alert rules and a rule test, every dashboard query parses, and
//! `--log-format json` gives one JSON object per line through a rejection,
//! an etcd outage and a reload.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dnsclient::Query;
use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, etcd_must, http_request, repo};

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus API query; the `data` of a success.
fn prom_query(prom: SocketAddr, q: &str) -> Value {
    let r = http_request(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", encode(q)),
        &[],
    );
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"].clone()
}

fn promtool(args: &[&str], cwd: &std::path::Path, stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    if let Some(input) = stdin {
        use std::io::Write as _;
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_alert_rules_check_and_their_test_fires() {
    let (ok, out) = promtool(
        &["check", "rules", "deploy/prometheus/alerts.yml"],
        &repo(),
        None,
    );
    assert!(ok && out.contains("SUCCESS: 8 rules found"), "{out}");
    let (ok, out) = promtool(
        &["test", "rules", "alerts_test.yml"],
        &repo().join("tests/fixtures/prometheus"),
        None,
    );
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // The test must be able to fail: with the edges agreeing, the same
    // expectation does not hold.
    let dir = tempfile::tempdir().unwrap();
    let agreeing =
        std::fs::read_to_string(repo().join("tests/fixtures/prometheus/alerts_test.yml"))
            .unwrap()
            .replace("'41 41 42x12'", "'41 41 41x12'")
            .replace("../../../deploy", repo().join("deploy").to_str().unwrap());
    std::fs::write(dir.path().join("t.yml"), agreeing).unwrap();
    let (ok, out) = promtool(&["test", "rules", "t.yml"], dir.path(), None);
    assert!(!ok && out.contains("VdhEdgeRevisionsDiffer"), "{out}");
}

#[test]
fn prometheus_scrapes_an_edge_with_types_histograms_and_build_info() {
    let s = TestServer::start(
        &repo().join("zones"),
        &repo().join("deploy/state.yaml"),
        &[],
    );
    for _ in 0..20 {
        Query::new("vdh-api.yingzi.com.", 1).send(s.dns).unwrap();
        http_request(s.http, "GET", "/v1/config/vdh-api?sdk_version=1.0.0", &[]);
    }
    // Classic text: promtool has nothing to say about it.
    let classic = http_request(s.admin, "GET", "/metrics", &[]);
    assert_eq!(
        classic.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, out) = promtool(&["check", "metrics"], &repo(), Some(&classic.body));
    assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}");
    assert!(
        classic
            .body
            .contains("# TYPE vdh_edge_dns_queries_total counter")
    );
    assert!(!classic.body.contains("# EOF"));
    // OpenMetrics when asked.
    let om = http_request(
        s.admin,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        om.body.ends_with("# EOF\n") && om.body.contains("# TYPE vdh_edge_dns_queries counter")
    );
    // A real Prometheus scraping the admin listener every second.
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: vdh-edge\n    static_configs: [{{ targets: ['{}'] }}]\n", s.admin),
    )
    .unwrap();
    let mut p = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dns, flag) = (s.dns, stop.clone());
    let traffic = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = Query::new("vdh-api.yingzi.com.", 1).send(dns);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let start = Instant::now();
    let wait = |q: &str| loop {
        let ok = std::net::TcpStream::connect(prom).is_ok();
        if ok {
            let d = prom_query(prom, q);
            if d["result"].as_array().is_some_and(|r| !r.is_empty()) {
                break d;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prometheus never answered {q}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let build = wait("vdh_edge_build_info");
    let labels = &build["result"][0]["metric"];
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        labels["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{labels}"
    );
    let q = wait(
        "histogram_quantile(0.9, sum by (le) (rate(vdh_edge_dns_answer_seconds_bucket{transport=\"udp\"}[5s])))",
    );
    let v: f64 = q["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        v.is_finite() && v > 0.0 && v < 1.0,
        "p90 of UDP answer time: {v}"
    );
    wait("rate(vdh_edge_dns_queries_total{transport=\"udp\"}[5s]) > 0");
    // Metadata per family (small answers: no chunked encoding to parse).
    let kind = |m: &str| {
        let r = http_request(prom, "GET", &format!("/api/v1/metadata?metric={m}"), &[]);
        let meta: Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
        meta["data"][m][0]["type"].as_str().map(str::to_string)
    };
    let counter = kind("vdh_edge_dns_queries").or_else(|| kind("vdh_edge_dns_queries_total"));
    assert_eq!(counter.as_deref(), Some("counter"));
    assert_eq!(
        kind("vdh_edge_dns_answer_seconds").as_deref(),
        Some("histogram")
    );
    assert_eq!(
        kind("process_resident_memory_bytes").as_deref(),
        Some("gauge")
    );
    // Every query of the Grafana dashboard parses and runs.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/vdh-edge.json")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            prom_query(
                prom,
                &t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m"),
            );
            n += 1;
        }
    }
    assert!(n >= 15, "{n} dashboard queries");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn json_logs_through_a_rejection_an_etcd_outage_and_a_reload() {
    const P: &str = "/jsonlogs";
    let mut etcd = Etcd::single();
    let ep = etcd.endpoints();
    etcd_must(&ep, P, &["apply", "deploy/state.yaml", "--yes"]);
    let args: Vec<String> = [
        "--zones",
        repo().join("zones").to_str().unwrap(),
        "--etcd",
        &ep,
        "--prefix",
        P,
        "--log-format",
        "json",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let s = TestServer::start_with(&args, "first snapshot live");
    etcd.ctl(&["put", &format!("{P}/services/vdh-api"), "{bad"]);
    assert!(
        s.wait_log_count("change rejected", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    etcd.kill(0);
    assert!(
        s.wait_log_count("etcd watch failed", 1, Duration::from_secs(10)),
        "{}",
        s.log()
    );
    etcd.restart(0);
    etcd.wait_healthy();
    s.signal("HUP");
    assert!(
        s.wait_log_count("SIGHUP", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    s.signal("TERM");
    assert!(
        s.wait_log_count("shutting down", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let log = s.log();
    let mut levels = std::collections::BTreeSet::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["message"].is_string() && v["target"].is_string(),
            "{line}"
        );
        levels.insert(v["level"].as_str().unwrap().to_string());
    }
    let rejected = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["message"] == "change rejected" && v["error"].is_string())
        .expect("the rejection, with its error as a field");
    assert_eq!(rejected["level"], "WARN");
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("services/vdh-api"),
        "{rejected}"
    );
    assert!(
        levels.contains("INFO") && levels.contains("WARN"),
        "{levels:?}"
    );
}
