//! The cutover autopilot (issue 12): scheduled writes committed at their
//! time by the edge holding the election, timed ramps of a staged phase
//! with gates, pause/resume, `scheme abort`, and the executor dying
//! mid-ramp. Real etcd, three edges, a gate backend on loopback, and DNS
//! and HTTP load on the edges all along.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, backend, etcd_must as must, etcd_run as run, http_get, repo};
use crate::load::Load;

fn edge(ep: &str, prefix: &str, id: &str) -> TestServer {
    let args: Vec<String> = [
        "--zones",
        repo().join("zones").to_str().unwrap(),
        "--etcd",
        ep,
        "--prefix",
        prefix,
        "--edge-id",
        id,
        "--autopilot-lease",
        "2",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    TestServer::start_with(&args, "first snapshot live")
}

/// RFC 3339 (UTC, seconds) of `t`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The next whole second at least `ahead` from now.
fn at_least(ahead: Duration) -> SystemTime {
    let t = SystemTime::now() + ahead + Duration::from_secs(1);
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The job `id` as `schedule list --json` shows it.
fn job(ep: &str, prefix: &str, id: &str) -> serde_json::Value {
    let out = must(ep, prefix, &["schedule", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no job {id} in {out}"))
}

/// The id in "scheduled ID: ...".
fn id_of(out: &str) -> String {
    out.trim()
        .strip_prefix("scheduled ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no job id in {out:?}"))
        .to_string()
}

fn wait_state(
    ep: &str,
    prefix: &str,
    id: &str,
    state: &str,
    within: Duration,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let j = job(ep, prefix, id);
        if j["state"] == state {
            return j;
        }
        assert!(
            start.elapsed() < within,
            "job {id} not {state} within {within:?}: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn history(ep: &str, prefix: &str) -> Vec<serde_json::Value> {
    let out = must(ep, prefix, &["history", "--json", "--limit", "100"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// etcd with the shipped phase-0 state, three edges, then phase 1 of
/// new-env; also returns what sample clients got before phase 1.
fn start(
    prefix: &str,
) -> (
    Etcd,
    String,
    Vec<Option<TestServer>>,
    Vec<serde_json::Value>,
) {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    must(&ep, prefix, &["apply", "deploy/state-phase0.yaml", "--yes"]);
    let edges: Vec<Option<TestServer>> = ["e1", "e2", "e3"]
        .iter()
        .map(|id| Some(edge(&ep, prefix, id)))
        .collect();
    let before = sample_docs(edges[0].as_ref().unwrap().http);
    must(
        &ep,
        prefix,
        &["scheme", "apply", "new-env", "--phase", "1", "--yes"],
    );
    (etcd, ep, edges, before)
}

/// Documents of a few OLD and NEW clients, without their revision.
fn sample_docs(http: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for v in ["0.9.0", "1.0.0"] {
        for c in 0..10 {
            let (status, body) = http_get(
                http,
                &format!("/v1/config/vdh-api?sdk_version={v}&client_id=s{c}"),
            );
            assert_eq!(status, 200, "{body}");
            let mut d: serde_json::Value = serde_json::from_str(&body).unwrap();
            d.as_object_mut().unwrap().remove("revision");
            out.push(d);
        }
    }
    out
}

/// The OLD client ids (of `ids`) whose document requires the update, and
/// the revision they were served at (every document of one fetch must come
/// from the same revision; `None` if not).
fn forced(http: std::net::SocketAddr, ids: &[String]) -> Option<(u64, BTreeSet<String>)> {
    let mut rev = None;
    let mut set = BTreeSet::new();
    for id in ids {
        let (status, body) = http_get(
            http,
            &format!("/v1/config/vdh-api?sdk_version=0.9.0&client_id={id}"),
        );
        assert_eq!(status, 200, "{body}");
        let d: serde_json::Value = serde_json::from_str(&body).unwrap();
        let r = d["revision"].as_u64().unwrap();
        if rev.is_some_and(|x| x != r) {
            return None;
        }
        rev = Some(r);
        if d["update"]["required"] == true {
            set.insert(id.clone());
        }
    }
    Some((rev?, set))
}

/// The step events of a ramp job (`step K of N (P%): committed by ...`).
fn step_events(j: &serde_json::Value) -> Vec<String> {
    j["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .filter(|e| e.contains("%): committed by "))
        .map(str::to_string)
        .collect()
}

/// The executing edge's id.
fn executor(ep: &str, prefix: &str) -> String {
    let out = must(ep, prefix, &["autopilot", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["executor"]
        .as_str()
        .unwrap_or_else(|| panic!("no executor: {out}"))
        .to_string()
}

#[test]
fn a_ramp_steps_in_order_survives_its_executor_pauses_on_a_gate_and_aborts() {
    let _exclusive = crate::harness::exclusive();
    const P: &str = "/ramp";
    let (_etcd, ep, mut edges, before) = start(P);
    let load = Load::start(&edges);
    let ids: Vec<String> = (0..400).map(|i| format!("old-{i}")).collect();
    let out = must(
        &ep,
        P,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--ramp",
            "10,25,50,100",
            "--every",
            "2s",
            "--yes",
            "--reason",
            "ramp test",
        ],
    );
    let id = id_of(&out);
    // Watch each step land; kill the executor after the second.
    let mut steps: Vec<(u64, BTreeSet<String>)> = Vec::new();
    let mut killed = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while steps.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "ramp not done: {}",
            job(&ep, P, &id)
        );
        let j = job(&ep, P, &id);
        let done = step_events(&j).len();
        if done > steps.len() {
            std::thread::sleep(Duration::from_millis(150));
            let http = edges.iter().flatten().next().unwrap().http;
            let (rev, set) = loop {
                if let Some(x) = forced(http, &ids) {
                    break x;
                }
            };
            steps.push((rev, set));
            if steps.len() == 2 {
                let who = executor(&ep, P);
                let i = ["e1", "e2", "e3"].iter().position(|e| *e == who).unwrap();
                load.forget(edges[i].as_ref().unwrap());
                edges[i] = None;
                killed = Some(who);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let j = wait_state(&ep, P, &id, "done", Duration::from_secs(5));
    // Each step once, in order.
    let ev = step_events(&j);
    assert_eq!(ev.len(), 4, "{j}");
    for (k, e) in ev.iter().enumerate() {
        assert!(e.contains(&format!("step {} of 4", k + 1)), "{ev:?}");
    }
    let killed = killed.unwrap();
    assert!(ev[0].contains(&killed) && ev[1].contains(&killed), "{ev:?}");
    assert!(
        !ev[2].contains(&killed) && !ev[3].contains(&killed),
        "another edge finished: {ev:?}"
    );
    let now = executor(&ep, P);
    assert_ne!(now, killed);
    for (k, id) in ["e1", "e2", "e3"].iter().enumerate() {
        if let Some(s) = &edges[k] {
            let (_, m) = s.admin_get("/metrics");
            let want = u8::from(*id == now);
            assert!(
                m.contains(&format!("vdh_edge_autopilot_executor {want}\n")),
                "{id}: {m}"
            );
        }
    }
    // Four audit entries, one per step, by the autopilot.
    let h = history(&ep, P);
    let ramp_entries: Vec<_> = h
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&format!("ramp {id}")))
        })
        .collect();
    assert_eq!(ramp_entries.len(), 4, "{ramp_entries:?}");
    let revisions: Vec<u64> = ramp_entries
        .iter()
        .rev()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(
        ramp_entries
            .iter()
            .all(|e| e["reason"].as_str().unwrap().ends_with("ramp test"))
    );
    // The forced share follows the steps; each set contains the one before.
    let shares = [10.0, 25.0, 50.0, 100.0];
    for (k, (rev, set)) in steps.iter().enumerate() {
        assert_eq!(
            *rev,
            revisions[k],
            "step {} observed at its own revision",
            k + 1
        );
        let share = set.len() as f64 * 100.0 / ids.len() as f64;
        assert!(
            (share - shares[k]).abs() <= 8.0,
            "step {}: {share}% forced, want ~{}%",
            k + 1,
            shares[k]
        );
        if k > 0 {
            assert!(
                steps[k - 1].1.is_subset(set),
                "step {} dropped clients",
                k + 1
            );
        }
    }
    assert_eq!(steps[3].1.len(), ids.len());
    // scheme abort: every document as before phase 1.
    let out = must(&ep, P, &["scheme", "abort", "new-env", "--yes"]);
    assert!(out.contains("aborted scheme new-env (phase 2)"), "{out}");
    let http = edges.iter().flatten().next().unwrap().http;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sample_docs(http), before);
    gated_ramp(&ep, P);
    load.finish();
}

#[test]
fn ramp_arguments_are_checked() {
    let (ok, _, err) = run(
        "http://127.0.0.1:1",
        "/x",
        &[
            "scheme", "apply", "new-env", "--phase", "1", "--ramp", "10,50", "--every", "1m",
        ],
    );
    assert!(
        !ok && err.contains("phase 1 of new-env is not staged: it takes no --ramp"),
        "{err}"
    );
    let (ok, _, err) = run(
        "http://127.0.0.1:1",
        "/x",
        &[
            "scheme", "apply", "new-env", "--phase", "2", "--ramp", "50,10", "--every", "1m",
        ],
    );
    assert!(
        !ok && err.contains("--ramp: the percents must increase"),
        "{err}"
    );
    let (ok, _, err) = run(
        "http://127.0.0.1:1",
        "/x",
        &[
            "scheme", "apply", "new-env", "--phase", "2", "--ramp", "10,50",
        ],
    );
    assert!(
        !ok && err.contains("--ramp needs --every DURATION"),
        "{err}"
    );
    let (ok, _, err) = run(
        "http://127.0.0.1:1",
        "/x",
        &[
            "scheme", "apply", "new-env", "--phase", "2", "--ramp", "10,50", "--every", "1m",
            "--gate", "tcp:x",
        ],
    );
    assert!(
        !ok && err.contains("gate 'tcp:x': use health:ENV or http:URL"),
        "{err}"
    );
}

#[test]
fn scheduled_writes_run_at_their_time_and_not_when_cancelled_or_stale() {
    let _exclusive = crate::harness::exclusive();
    const P: &str = "/sched";
    let (_etcd, ep, edges, _) = start(P);
    // A phase scheduled 3 s ahead, and a cancelled one at the same time.
    let t = at_least(Duration::from_secs(3));
    let at = rfc3339(t);
    let out = must(
        &ep,
        P,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "10",
            "--at",
            &at,
            "--yes",
        ],
    );
    let committed = id_of(&out);
    let out = must(
        &ep,
        P,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "30",
            "--at",
            &at,
            "--yes",
            "--actor",
            "carol",
        ],
    );
    let cancelled = id_of(&out);
    let out = must(&ep, P, &["schedule", "cancel", &cancelled]);
    assert!(out.contains(&format!("cancelled {cancelled}")), "{out}");
    assert_eq!(job(&ep, P, &committed)["state"], "pending");
    // Committed within 1 s of its time (not before).
    let j = wait_state(&ep, P, &committed, "done", Duration::from_secs(8));
    let late = SystemTime::now()
        .duration_since(t)
        .expect("not before its time");
    eprintln!("scheduled write seen committed {late:?} after its time");
    assert!(
        late < Duration::from_millis(1500),
        "committed {late:?} after its time: {j}"
    );
    let h = history(&ep, P);
    assert_eq!(
        h[0]["actor"]
            .as_str()
            .unwrap()
            .strip_prefix("autopilot@")
            .map(|e| e.starts_with('e')),
        Some(true),
        "{:?}",
        h[0]
    );
    assert!(
        h[0]["summary"]
            .as_str()
            .unwrap()
            .contains("scheme new-env phase 2 (10%)"),
        "{:?}",
        h[0]
    );
    // The cancelled one never ran.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(job(&ep, P, &cancelled)["state"], "cancelled");
    assert!(
        history(&ep, P)
            .iter()
            .all(|e| !e["summary"].as_str().unwrap().contains("(30%)")),
        "a cancelled write ran"
    );
    // Every edge serves it.
    let rev = h[0]["revision"].as_u64().unwrap();
    for s in edges.iter().flatten() {
        let start = Instant::now();
        loop {
            let (_, doc) = s.http_get("/v1/config/vdh-api?sdk_version=0.9.0&client_id=c1");
            let d: serde_json::Value = serde_json::from_str(&doc).unwrap();
            if d["revision"].as_u64().unwrap() >= rev {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(2), "{doc}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    refused_when_stale(&ep, P);
}

#[test]
fn a_scheduled_write_runs_only_if_approved_before_its_time() {
    const P: &str = "/approvals";
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let shipped = std::fs::read_to_string(repo().join("deploy/state-phase0.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, format!("policy:\n  approvals: 1\n{shipped}")).unwrap();
    must(&ep, P, &["apply", f.to_str().unwrap(), "--yes"]);
    let _edge = edge(&ep, P, "e1");
    let t = at_least(Duration::from_secs(3));
    let at = rfc3339(t);
    let alice = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--at", &at, "--yes", "--actor", "alice"]);
        must(&ep, P, &a)
    };
    let out = alice(&["scheme", "apply", "new-env", "--phase", "1"]);
    assert!(out.contains("once 1 other actor(s) approve it"), "{out}");
    let approved = id_of(&out);
    let unapproved = id_of(&alice(&["scheme", "apply", "new-env", "--lower-ttl", "30"]));
    let (ok, _, err) = run(&ep, P, &["approve", &approved, "--actor", "alice"]);
    assert!(
        !ok && err.contains("an approval must come from another actor"),
        "{err}"
    );
    let out = must(&ep, P, &["approve", &approved, "--actor", "bob"]);
    assert!(
        out.contains(&format!("approved {approved} by bob (1 of 1)")),
        "{out}"
    );
    let j = wait_state(&ep, P, &approved, "done", Duration::from_secs(8));
    assert!(j["events"].to_string().contains("approved by bob"), "{j}");
    let h = history(&ep, P);
    let entry = h
        .iter()
        .find(|e| {
            e["summary"]
                .as_str()
                .unwrap()
                .contains("scheme new-env phase 1")
        })
        .unwrap_or_else(|| panic!("{h:?}"));
    assert_eq!(entry["approved_by"], serde_json::json!(["bob"]), "{entry}");
    let j = wait_state(&ep, P, &unapproved, "refused", Duration::from_secs(3));
    assert_eq!(
        j["note"], "not approved before its time (0 of 1 approvals); nothing was written",
        "{j}"
    );
}

/// A gated ramp: the gate answers 503, so it pauses before its first step;
/// 200 again is not enough, `autopilot resume` continues it; after its
/// first step `autopilot pause` holds it and `resume` finishes it.
fn gated_ramp(ep: &str, prefix: &str) {
    must(
        ep,
        prefix,
        &["scheme", "apply", "new-env", "--phase", "1", "--yes"],
    );
    let healthy = Arc::new(AtomicBool::new(false));
    let port = backend(healthy.clone());
    let gate = format!("http:http://127.0.0.1:{port}/ok");
    let out = must(
        ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--ramp",
            "10,50,100",
            "--every",
            "2s",
            "--gate",
            &gate,
            "--yes",
        ],
    );
    let gated = id_of(&out);
    let j = wait_state(ep, prefix, &gated, "paused", Duration::from_secs(3));
    assert!(
        j["note"]
            .as_str()
            .unwrap()
            .starts_with(&format!("gate {gate} answered 503")),
        "{j}"
    );
    let st = must(ep, prefix, &["status"]);
    assert!(
        st.contains(&format!(
            "paused: gate {gate} answered 503; step 1 of 3 (10%) waits"
        )),
        "{st}"
    );
    healthy.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(job(ep, prefix, &gated)["state"], "paused");
    assert!(step_events(&job(ep, prefix, &gated)).is_empty());
    let out = must(ep, prefix, &["autopilot", "resume"]);
    assert!(out.contains(&format!("ramps continuing: {gated}")), "{out}");
    // After its first step, `autopilot pause` holds it; resume finishes it.
    let start = Instant::now();
    while step_events(&job(ep, prefix, &gated)).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(50));
    }
    must(
        ep,
        prefix,
        &["autopilot", "pause", "--reason", "looking at errors"],
    );
    let st = must(ep, prefix, &["autopilot", "status"]);
    assert!(
        st.contains("PAUSED by") && st.contains("looking at errors"),
        "{st}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        step_events(&job(ep, prefix, &gated)).len(),
        1,
        "paused, no step"
    );
    must(ep, prefix, &["autopilot", "resume"]);
    wait_state(ep, prefix, &gated, "done", Duration::from_secs(8));
}

/// A write whose keys change between its planning and its time is refused
/// then, and the refusal is in history; a time in the past is refused at
/// once.
fn refused_when_stale(ep: &str, prefix: &str) {
    // A write whose keys change in between is refused at its time, and the
    // refusal is in history.
    let t = at_least(Duration::from_secs(3));
    let out = must(
        ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "50",
            "--at",
            &rfc3339(t),
            "--yes",
        ],
    );
    let stale = id_of(&out);
    must(
        ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "20",
            "--yes",
        ],
    );
    let j = wait_state(ep, prefix, &stale, "refused", Duration::from_secs(8));
    assert!(
        j["note"]
            .as_str()
            .unwrap()
            .contains("the keys it read changed since revision"),
        "{j}"
    );
    let h = history(ep, prefix);
    assert!(
        h[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("REFUSED scheduled write {stale}")),
        "{:?}",
        h[0]
    );
    assert!(
        h[0]["keys"].as_array().is_none_or(Vec::is_empty),
        "a refusal writes no key: {:?}",
        h[0]
    );
    let (ok, _, err) = run(
        ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "30",
            "--yes",
            "--at",
            "2001-01-01T00:00:00Z",
        ],
    );
    assert!(
        !ok && err.contains("--at 2001-01-01T00:00:00Z is in the past"),
        "{err}"
    );
}
