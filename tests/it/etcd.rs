//! etcd as the source of truth (SPEC §7), against real etcd processes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RData;

use crate::dnsclient::{Query, answer_addrs};
use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, command, http_request, repo};

const PREFIX: &str = "/vdh-test";
const NEW: &str = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-new";

fn shipped_state() -> String {
    std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap()
}

/// Runs `vdh-edge apply` with a state text; returns the output.
fn apply(endpoints: &str, state: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("state.yaml");
    std::fs::write(&f, state).unwrap();
    command()
        .current_dir(repo())
        .arg("apply")
        .arg(&f)
        .args(["--etcd", endpoints, "--prefix", PREFIX, "--yes"])
        .args(extra)
        .output()
        .unwrap()
}

fn apply_ok(endpoints: &str, state: &str) {
    apply_ok_with(endpoints, state, &[]);
}

/// [`apply`] with extra arguments, asserting success.
fn apply_ok_with(endpoints: &str, state: &str, extra: &[&str]) {
    let out = apply(endpoints, state, extra);
    assert!(
        out.status.success(),
        "apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vdh-edge CLI command against etcd; returns stdout (asserting success).
fn cli(endpoints: &str, args: &[&str]) -> String {
    let out = command()
        .current_dir(repo())
        .args(args)
        .args(["--etcd", endpoints, "--prefix", PREFIX])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn edge(endpoints: &str, extra: &[&str]) -> TestServer {
    let mut args: Vec<String> = vec![
        "--zones".into(),
        repo().join("zones").display().to_string(),
        "--etcd".into(),
        endpoints.into(),
        "--prefix".into(),
        PREFIX.into(),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    TestServer::start_with(&args, "protocol=\"http\"")
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready(s: &TestServer) -> serde_json::Value {
    let (_, body) = s.admin_get("/readyz");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

fn api_addrs(s: &TestServer) -> Vec<String> {
    answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(s.dns).unwrap())
}

/// The shipped state with version `v` written into the prod-v1 environment
/// (address and token epoch) and the service (TTL and update message), with
/// every client routed to prod-v1.
fn versioned(v: u32) -> String {
    shipped_state()
        .replace("addresses: [203.0.113.10, 203.0.113.11]", &format!("addresses: [198.18.0.{v}]"))
        .replace("api_base_url: https://vdh-api-v1.yingzi.com\n    status: serving\n    token_epoch: 1", &format!("api_base_url: https://vdh-api-v1.yingzi.com\n    status: serving\n    token_epoch: {v}"))
        .replace("    ttl: 60\n", &format!("    ttl: {}\n", 100 + v))
        .replace("message: A new SDK is available.", &format!("message: m{v}"))
        .replace("      - name: default\n        environment: prod\n", "      - name: default\n        environment: prod-v1\n")
}

#[test]
fn fifty_transactions_under_load_are_never_mixed() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    apply_ok(&ep, &versioned(0));
    let s = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (stop, failures, count, dns, http) =
            (stop.clone(), failures.clone(), count.clone(), s.dns, s.http);
        clients.push(std::thread::spawn(move || {
            let mut last = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let seen = if c < 2 {
                    // DNS: the TTL comes from the service key, the address from
                    // the environment key; one answer holds both.
                    match Query::new("vdh-api.yingzi.com", 1).send(dns) {
                        Ok(r) => {
                            let m = Message::from_vec(&r).unwrap();
                            let a = m.answers.first().expect("an answer");
                            let from_env = match &a.data {
                                RData::A(x) => x.0.octets()[3] as u32,
                                other => panic!("{other:?}"),
                            };
                            let from_service = a.ttl - 100;
                            if from_env != from_service {
                                failures.lock().unwrap().push(format!(
                                    "DNS mixed revisions: env {from_env}, service {from_service}"
                                ));
                            }
                            from_env
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(format!("DNS failed: {e}"));
                            continue;
                        }
                    }
                } else {
                    let r = http_request(http, "GET", NEW, &[]);
                    if r.status != 200 {
                        failures.lock().unwrap().push(format!("HTTP {}", r.status));
                        continue;
                    }
                    let d = r.json();
                    let epoch = d["auth"]["epoch"].as_u64().unwrap() as u32;
                    let msg: u32 = d["update"]["message"].as_str().unwrap()[1..]
                        .parse()
                        .unwrap();
                    if epoch != msg {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("HTTP mixed revisions: env {epoch}, service {msg}"));
                    }
                    epoch
                };
                if seen < last {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("client {c} went back from {last} to {seen}"));
                }
                last = seen;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for v in 1..=50 {
        apply_ok(&ep, &versioned(v));
    }
    wait_for("the last change", Duration::from_secs(10), || {
        api_addrs(&s) == vec!["198.18.0.50"]
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let f = failures.lock().unwrap();
    assert!(
        f.is_empty(),
        "{} failures: {:?}",
        f.len(),
        &f[..f.len().min(5)]
    );
    assert!(
        count.load(Ordering::Relaxed) > 200,
        "too few requests during the changes"
    );
    // The document carries the etcd revision of the last change.
    let rev = etcd.revision();
    let doc = http_request(s.http, "GET", NEW, &[]).json();
    assert!(doc["revision"].as_i64().unwrap() <= rev && doc["revision"].as_i64().unwrap() > 50);
}

#[test]
fn invalid_change_in_etcd_is_rejected_and_the_next_valid_one_published() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    apply_ok(&ep, &shipped_state());
    let s = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    etcd.ctl(&["put", &format!("{PREFIX}/environments/prod"), "{bad"]);
    let key = format!("{PREFIX}/environments/prod: not a valid environment");
    assert!(
        s.wait_log_count(&key, 1, Duration::from_secs(5)),
        "rejection not logged with its key"
    );
    assert_eq!(
        api_addrs(&s),
        vec!["192.0.2.10", "192.0.2.11"],
        "the previous snapshot keeps serving"
    );
    let (_, m) = s.admin_get("/metrics");
    assert!(m.contains("vdh_edge_rejected_changes_total 1"), "{m}");
    wait_for(
        "status to show the rejection",
        Duration::from_secs(8),
        || cli(&ep, &["status"]).contains(&key),
    );
    // A semantically invalid change (unknown environment) is rejected too.
    apply_ok(&ep, &shipped_state());
    assert!(s.wait_log_count("snapshot published", 1, Duration::from_secs(5)));
    let bad = serde_json::json!({"hostnames": ["vdh-api.yingzi.com"], "legacy_sdk_version": "0.9.0", "rules": [{"name": "d", "environment": "nowhere"}]});
    etcd.ctl(&[
        "put",
        &format!("{PREFIX}/services/vdh-api"),
        &bad.to_string(),
    ]);
    assert!(s.wait_log_count(
        &format!("{PREFIX}/services/vdh-api: rules[0].environment: unknown environment 'nowhere'"),
        1,
        Duration::from_secs(5)
    ));
    // The next valid revision is published.
    apply_ok(
        &ep,
        &shipped_state().replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [192.0.2.12]",
        ),
    );
    wait_for("the valid change", Duration::from_secs(5), || {
        api_addrs(&s) == vec!["192.0.2.12"]
    });
}

#[test]
fn a_wipe_is_refused_by_every_edge() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    apply_ok(&ep, &shipped_state());
    let a = edge(&ep, &[]);
    let b = edge(&ep, &[]);
    for s in [&a, &b] {
        wait_for("first snapshot", Duration::from_secs(10), || {
            ready(s)["source"] == "etcd"
        });
    }
    etcd.ctl(&["del", "--prefix", &format!("{PREFIX}/")]);
    for s in [&a, &b] {
        assert!(
            s.wait_log_count("removes every service", 1, Duration::from_secs(5)),
            "wipe not refused"
        );
        assert_eq!(api_addrs(s), vec!["192.0.2.10", "192.0.2.11"]);
        let d = http_request(s.http, "GET", NEW, &[]);
        assert_eq!(d.status, 200);
    }
    wait_for(
        "status to show the refused wipe",
        Duration::from_secs(8),
        || cli(&ep, &["status"]).contains("removes every service"),
    );
    let st: serde_json::Value = serde_json::from_str(&cli(&ep, &["status", "--json"])).unwrap();
    assert_eq!(st["edges"].as_array().unwrap().len(), 2);
}

#[test]
fn two_applies_from_one_base_revision_exactly_one_wins() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    apply_ok(&ep, &shipped_state());
    let base = etcd.revision().to_string();
    let one = shipped_state().replace("ttl: 60", "ttl: 61");
    let two = shipped_state().replace("ttl: 60", "ttl: 62");
    let r1 = apply(&ep, &one, &["--base-revision", &base]);
    let r2 = apply(&ep, &two, &["--base-revision", &base]);
    assert!(
        r1.status.success(),
        "{}",
        String::from_utf8_lossy(&r1.stderr)
    );
    assert!(
        !r2.status.success(),
        "the second apply from the same base must be refused"
    );
    let err2 = String::from_utf8_lossy(&r2.stderr);
    assert!(
        err2.contains(&format!("refused: --base-revision {base} is stale")),
        "{err2}"
    );
    assert_eq!(r2.status.code(), Some(1));
    // The same file against the stale base is not "nothing to change".
    let r2b = apply(&ep, &one, &["--base-revision", &base]);
    assert!(!r2b.status.success());
    assert!(String::from_utf8_lossy(&r2b.stderr).contains("is stale"));
    let v = etcd.ctl(&[
        "get",
        &format!("{PREFIX}/services/vdh-api"),
        "--print-value-only",
    ]);
    assert!(v.contains("\"ttl\":61"), "{v}");
    // A concurrent delete of a key that apply read also makes it refuse.
    let base = etcd.revision().to_string();
    etcd.ctl(&["del", &format!("{PREFIX}/environments/test-v1")]);
    let r3 = apply(&ep, &shipped_state(), &["--base-revision", &base]);
    assert!(!r3.status.success());
    assert!(String::from_utf8_lossy(&r3.stderr).contains("is stale"));
    // Without --yes and without a terminal, nothing is written: exit 2.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, &one).unwrap();
    let out = command()
        .current_dir(repo())
        .arg("apply")
        .arg(&f)
        .args(["--etcd", &ep, "--prefix", PREFIX])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
}

#[test]
fn apply_names_the_transaction_limit() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let mut state = String::from("environments:\n");
    for i in 0..130 {
        state.push_str(&format!(
            "  e{i}:\n    backend_version: v1\n    names: [e{i}.yingzi.com]\n    addresses: [192.0.2.1]\n    api_base_url: https://e{i}.yingzi.com\n"
        ));
    }
    let out = apply(&ep, &state, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd allows 128 (--max-txn-ops)"), "{err}");
    assert_eq!(
        etcd.ctl(&["get", &format!("{PREFIX}/"), "--prefix", "--keys-only"])
            .trim(),
        "",
        "nothing written"
    );
}

#[test]
fn history_and_rollback() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    apply_ok(&ep, &shipped_state());
    let first = etcd.revision();
    let s = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    apply_ok(
        &ep,
        &shipped_state().replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [192.0.2.99]",
        ),
    );
    wait_for("the change", Duration::from_secs(5), || {
        api_addrs(&s) == vec!["192.0.2.99"]
    });
    let h: serde_json::Value = serde_json::from_str(&cli(&ep, &["history", "--json"])).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert!(
        h[0]["summary"]
            .as_str()
            .unwrap()
            .contains("~ environments/prod")
    );
    assert!(h[1]["revision"].as_i64().unwrap() == first);
    for field in ["time", "user", "host", "command"] {
        assert!(
            h[0][field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}"
        );
    }
    let out = cli(
        &ep,
        &["rollback", "--to-revision", &first.to_string(), "--yes"],
    );
    assert!(out.contains("rolled back"), "{out}");
    wait_for("the rollback", Duration::from_secs(5), || {
        api_addrs(&s) == vec!["192.0.2.10", "192.0.2.11"]
    });
    // A compacted revision gives a clear error naming the oldest one.
    let now = etcd.revision();
    etcd.ctl(&["compaction", &now.to_string()]);
    let out = command()
        .current_dir(repo())
        .args([
            "rollback",
            "--to-revision",
            &first.to_string(),
            "--yes",
            "--etcd",
            &ep,
            "--prefix",
            PREFIX,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("revision {first} was compacted"))
            && err.contains(&format!("oldest revision available is {now}")),
        "{err}"
    );
    assert!(cli(&ep, &["status"]).contains(&format!("oldest revision for rollback: {now}")));
    // etcd answers a future revision with the same gRPC code as a compacted
    // one; it is told apart by the latest revision, not by etcd's text.
    let future = (now + 1000).to_string();
    let rollback_to = |rev: &str| {
        let out = command()
            .current_dir(repo())
            .args(["rollback", "--to-revision", rev, "--yes"])
            .args(["--etcd", &ep, "--prefix", PREFIX])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = rollback_to(&future);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("revision {future} is in the future")) && !err.contains("etcdserver"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Revision 0 is not a revision (it used to mean "the latest": nothing
    // to change, exit 0).
    let (code, err) = rollback_to("0");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("revision 0 is not a revision"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn edge_restarted_while_etcd_is_down_serves_its_cache() {
    let mut etcd = Etcd::single();
    let ep = etcd.endpoints();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    apply_ok(
        &ep,
        &shipped_state().replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [192.0.2.77]",
        ),
    );
    let doc = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";
    let (revision, etag) = {
        let s = edge(&ep, &["--cache-dir", &cache_arg]);
        wait_for("first snapshot", Duration::from_secs(10), || {
            ready(&s)["source"] == "etcd"
        });
        // Writes elsewhere in etcd (the edge registry) do not move the
        // revision an edge reports: it is the prefix's own.
        std::thread::sleep(Duration::from_millis(300));
        let etag = http_request(s.http, "GET", doc, &[])
            .header("etag")
            .unwrap()
            .to_string();
        (ready(&s)["revision"].clone(), etag)
    };
    etcd.kill_all();
    let s = edge(&ep, &["--cache-dir", &cache_arg]);
    wait_for("the cache", Duration::from_secs(10), || {
        ready(&s)["source"] == "cache"
    });
    let r = ready(&s);
    assert_eq!(r["etcd"], "down");
    // From the cache: the same revision and the same ETags as before.
    assert_eq!(r["revision"], revision, "{r}");
    assert_eq!(
        http_request(s.http, "GET", doc, &[])
            .header("etag")
            .unwrap(),
        etag
    );
    assert_eq!(api_addrs(&s), vec!["192.0.2.77"]);
    let (_, m) = s.admin_get("/metrics");
    assert!(m.contains("vdh_edge_serving_from_cache 1"), "{m}");
    assert!(
        s.log()
            .contains("serving the last-known-good state from the cache")
    );
    // etcd returns: the edge catches up and says so.
    etcd.restart_all();
    wait_for("etcd again", Duration::from_secs(15), || {
        ready(&s)["source"] == "etcd"
    });
    assert_eq!(ready(&s)["etcd"], "up");
    apply_ok(&ep, &shipped_state());
    wait_for("a change after the outage", Duration::from_secs(5), || {
        api_addrs(&s) == vec!["192.0.2.10", "192.0.2.11"]
    });
}

#[test]
fn without_etcd_or_cache_an_edge_waits_not_ready() {
    let mut etcd = Etcd::single();
    let ep = etcd.endpoints();
    etcd.kill_all();
    let mut s = edge(&ep, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(s.alive(), "the edge must not exit");
    let (status, body) = s.admin_get("/readyz");
    assert_eq!(status, 503, "{body}");
    etcd.restart_all();
    apply_ok(&ep, &shipped_state());
    wait_for(
        "ready once etcd has a state",
        Duration::from_secs(15),
        || ready(&s)["source"] == "etcd",
    );
    wait_for("the applied state", Duration::from_secs(5), || {
        api_addrs(&s) == vec!["192.0.2.10", "192.0.2.11"]
    });
}

/// Load that counts failed DNS and HTTP requests until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(s: &TestServer) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for c in 0..2 {
            let (stop, failed, done, dns, http) =
                (stop.clone(), failed.clone(), done.clone(), s.dns, s.http);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = if c == 0 {
                        Query::new("vdh-api.yingzi.com", 1)
                            .send(dns)
                            .map(|r| r[3] & 0xf == 0)
                            .unwrap_or(false)
                    } else {
                        http_request(http, "GET", NEW, &[]).status == 200
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        Load {
            stop,
            failed,
            done,
            threads,
        }
    }

    /// Stops; returns (failed, done).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.failed.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
        )
    }
}

/// A 3-member cluster holding the shipped state, an edge on it, and load.
fn cluster_under_load() -> (Etcd, String, TestServer, Load) {
    let etcd = Etcd::cluster3();
    let ep = etcd.endpoints();
    apply_ok(&ep, &shipped_state());
    let s = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    let load = Load::start(&s);
    (etcd, ep, s, load)
}

#[test]
fn leader_killed_under_load_loses_nothing() {
    let (mut etcd, _ep, s, load) = cluster_under_load();
    let leader = etcd.leader();
    etcd.kill(leader);
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| etcd.endpoint(i))
        .collect();
    let survivors = survivors.join(",");
    // Changes made while the cluster elects and after.
    for v in 1..=5 {
        let text = shipped_state().replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            &format!("addresses: [192.0.2.{}]", 20 + v),
        );
        let mut tries = 0;
        loop {
            let out = apply(&survivors, &text, &[]);
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(
                tries < 20,
                "apply kept failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    wait_for("the last change", Duration::from_secs(20), || {
        api_addrs(&s) == vec!["192.0.2.25"]
    });
    let (failed, done) = load.finish();
    assert_eq!(failed, 0, "{failed} of {done} requests failed");
    assert!(done > 50);
    // No revision missed: the edge serves the newest revision under the prefix.
    let st: serde_json::Value =
        serde_json::from_str(&cli(&survivors, &["status", "--json"])).unwrap();
    assert_eq!(
        ready(&s)["revision"].as_i64(),
        st["prefix_revision"].as_i64()
    );
}

#[test]
fn all_members_down_for_30_s_then_back() {
    let (mut etcd, ep, s, load) = cluster_under_load();
    etcd.kill_all();
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(ready(&s)["etcd"], "down");
    etcd.restart_all();
    let text = shipped_state().replace(
        "addresses: [192.0.2.10, 192.0.2.11]",
        "addresses: [192.0.2.44]",
    );
    apply_ok(&ep, &text);
    let t = Instant::now();
    wait_for(
        "the change after the restart",
        Duration::from_secs(10),
        || api_addrs(&s) == vec!["192.0.2.44"],
    );
    let lag = t.elapsed();
    let (failed, done) = load.finish();
    assert_eq!(
        failed, 0,
        "{failed} of {done} requests failed while etcd was down"
    );
    assert!(
        lag < Duration::from_secs(2),
        "change live {lag:?} after the restart"
    );
}

#[test]
fn compaction_while_disconnected_triggers_a_full_reload() {
    let mut etcd = Etcd::cluster3();
    let ep = etcd.endpoints();
    apply_ok(&ep, &shipped_state());
    // The edge talks to member 0 only.
    let s = edge(&etcd.endpoint(0), &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    etcd.kill(0);
    let others = format!("{},{}", etcd.endpoint(1), etcd.endpoint(2));
    for v in 1..=5 {
        apply_ok(
            &others,
            &shipped_state().replace(
                "addresses: [192.0.2.10, 192.0.2.11]",
                &format!("addresses: [192.0.2.{}]", 50 + v),
            ),
        );
    }
    let rev = etcd.revision();
    etcd.ctl(&["compaction", &rev.to_string()]);
    etcd.restart(0);
    etcd.wait_healthy();
    wait_for(
        "the state after compaction",
        Duration::from_secs(20),
        || api_addrs(&s) == vec!["192.0.2.55"],
    );
    assert!(
        s.log().contains("compacted; reloading in full"),
        "no full reload logged"
    );
}

#[test]
fn username_and_password() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    etcd.ctl(&["user", "add", "root:rootpw"]);
    etcd.ctl(&["auth", "enable"]);
    let auth = ["--etcd-user", "root", "--etcd-password", "rootpw"];
    apply_ok_with(&ep, &shipped_state(), &auth);
    let s = edge(&ep, &auth);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    assert_eq!(api_addrs(&s), vec!["192.0.2.10", "192.0.2.11"]);
    // Without credentials etcd refuses.
    let out = apply(&ep, &shipped_state(), &[]);
    assert!(!out.status.success());
    // The password never reaches etcd or history, in the `=` form either
    // (issue 10).
    let changed = shipped_state().replace("token_epoch: 1", "token_epoch: 2");
    apply_ok_with(
        &ep,
        &changed,
        &["--etcd-user", "root", "--etcd-password=rootpw"],
    );
    let stored = etcd.ctl(&["--user", "root:rootpw", "get", "", "--prefix"]);
    assert!(stored.contains("meta/change"), "{stored}");
    assert!(!stored.contains("rootpw"), "{stored}");
    let history = cli(
        &ep,
        &[
            "history",
            "--json",
            "--etcd-user",
            "root",
            "--etcd-password",
            "rootpw",
        ],
    );
    assert!(history.contains("--etcd-password ***"), "{history}");
    assert!(history.contains("--etcd-password=***"), "{history}");
    assert!(!history.contains("rootpw"), "{history}");
    // The password from the environment.
    let changed_env = shipped_state().replace("token_epoch: 1", "token_epoch: 4");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("state.yaml");
    std::fs::write(&f, &changed_env).unwrap();
    let out = command()
        .current_dir(repo())
        .env("VDH_EDGE_ETCD_PASSWORD", "rootpw")
        .arg("apply")
        .arg(&f)
        .args([
            "--etcd",
            &ep,
            "--prefix",
            PREFIX,
            "--yes",
            "--etcd-user",
            "root",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("rootpw"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("rootpw"));
    let stored = etcd.ctl(&["--user", "root:rootpw", "get", "", "--prefix"]);
    assert!(stored.contains("\"token_epoch\":4"), "{stored}");
    assert!(!stored.contains("rootpw"), "{stored}");
    // The password from a file (rotatable; never on the command line).
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "rootpw\n").unwrap();
    let pw_path = pw.path().display().to_string();
    let changed = shipped_state().replace("token_epoch: 1", "token_epoch: 3");
    apply_ok_with(
        &ep,
        &changed,
        &["--etcd-user", "root", "--etcd-password-file", &pw_path],
    );
    let stored = etcd.ctl(&["--user", "root:rootpw", "get", "", "--prefix"]);
    assert!(stored.contains("\"token_epoch\":3"), "{stored}");
    assert!(!stored.contains("rootpw"), "{stored}");
    // A missing file is named.
    let out = apply(
        &ep,
        &changed,
        &[
            "--etcd-user",
            "root",
            "--etcd-password-file",
            "/nonexistent/pw",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pw"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zones_in_etcd_override_files_and_serials_agree_across_edges() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    // Upload the zone files with the state.
    let out = apply(&ep, &shipped_state(), &["--upload-zones"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zone_key = format!("{PREFIX}/zones/yingzi.com.");
    assert!(
        etcd.ctl(&["get", &zone_key, "--print-value-only"])
            .contains("SOA")
    );
    let a = edge(&ep, &[]);
    let b = edge(&ep, &[]);
    for s in [&a, &b] {
        wait_for("first snapshot", Duration::from_secs(10), || {
            ready(s)["source"] == "etcd"
        });
    }
    // The zone text in etcd wins over the file: edit it with etcdctl.
    let text = std::fs::read_to_string(repo().join("zones/yingzi.com.zone"))
        .unwrap()
        .replace("192.0.2.80", "192.0.2.81");
    etcd.ctl(&["put", &zone_key, &text]);
    let www = |s: &TestServer| answer_addrs(&Query::new("www.yingzi.com", 1).send(s.dns).unwrap());
    for s in [&a, &b] {
        wait_for("the zone change", Duration::from_secs(5), || {
            www(s) == vec!["192.0.2.81"]
        });
    }
    // Each edge says the zone file it holds is ignored, and which key wins.
    for s in [&a, &b] {
        // The log is written by its own thread: the line may land just
        // after the answer changed.
        s.wait_log_count("zone file ignored", 1, Duration::from_secs(5));
        let log = s.log();
        let line = log
            .lines()
            .find(|l| l.contains("zone file ignored"))
            .unwrap_or_else(|| panic!("no override logged:\n{log}"));
        assert!(
            line.contains(&zone_key) && line.contains("yingzi.com.zone"),
            "{line}"
        );
    }
    // Both edges serve the same serial: the file's serial plus the newest
    // revision among the keys feeding the zone (here the zone text's).
    let serial = |s: &TestServer| {
        crate::dnsclient::soa_serial(&Query::new("yingzi.com", 6).send(s.dns).unwrap()).unwrap()
    };
    let kv: serde_json::Value =
        serde_json::from_str(&etcd.ctl(&["get", &zone_key, "-w", "json"])).unwrap();
    let rev = kv["kvs"][0]["mod_revision"].as_u64().unwrap() as u32;
    assert_eq!(serial(&a), 2026112601 + rev);
    assert_eq!(serial(&a), serial(&b));
    // A third edge started later computes the same serial.
    let c = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&c)["source"] == "etcd"
    });
    assert_eq!(serial(&c), serial(&a));
    // A change to a feeding key that leaves the zone's records alone (the
    // update message) still moves every edge to the same new serial, the
    // same one an edge started afterwards computes.
    let msg = shipped_state().replace("A new SDK is available.", "Please update.");
    assert!(apply(&ep, &msg, &[]).status.success());
    let kv: serde_json::Value = serde_json::from_str(&etcd.ctl(&[
        "get",
        &format!("{PREFIX}/services/vdh-api"),
        "-w",
        "json",
    ]))
    .unwrap();
    let want = 2026112601 + kv["kvs"][0]["mod_revision"].as_u64().unwrap() as u32;
    for s in [&a, &b, &c] {
        wait_for("the new serial", Duration::from_secs(5), || {
            serial(s) == want
        });
    }
    let d = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&d)["source"] == "etcd"
    });
    assert_eq!(serial(&d), want);
    // check and explain read etcd too.
    assert!(cli(&ep, &["check"]).starts_with("ok: 1 zone(s)"));
    let e: serde_json::Value = serde_json::from_str(&cli(
        &ep,
        &[
            "explain",
            "--service",
            "vdh-api",
            "--sdk-version",
            "1.0.0",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(e["document"]["environment"], "prod-v1");
}

/// The development cluster script starts three healthy members an edge can use.
#[test]
fn deploy_script_starts_a_three_member_cluster() {
    // Find a base port with the six ports free.
    let base = loop {
        let b = crate::knot::free_port();
        if b < 60000
            && [0, 1, 10, 11, 20, 21]
                .iter()
                .all(|d| std::net::TcpListener::bind(("127.0.0.1", b + d)).is_ok())
        {
            break b;
        }
    };
    let data = format!("/dev/shm/vdh-edge-script-test-{base}");
    let script = repo().join("deploy/etcd-cluster.sh");
    let run = |cmd: &str| {
        std::process::Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("VDH_ETCD_PORT", base.to_string())
            .env("VDH_ETCD_DATA", &data)
            .output()
            .unwrap()
    };
    let out = run("start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ep = format!(
        "http://127.0.0.1:{base},http://127.0.0.1:{},http://127.0.0.1:{}",
        base + 10,
        base + 20
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ep));
    let status = String::from_utf8_lossy(&run("status").stdout).to_string();
    assert_eq!(status.matches("3.4.").count(), 3, "{status}");
    apply_ok(&ep, &shipped_state());
    let s = edge(&ep, &[]);
    wait_for("first snapshot", Duration::from_secs(10), || {
        ready(&s)["source"] == "etcd"
    });
    drop(s);
    assert!(run("stop").status.success());
    assert!(!std::path::Path::new(&data).exists());
}
