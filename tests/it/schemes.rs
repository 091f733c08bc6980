//! The four schemes of SPEC §8 applied against a real etcd: OLD (0.9.0) and
//! NEW (1.0.0) clients see exactly what the table says, over HTTP and DNS,
//! and rolling a phase back returns to the state before it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::dnsclient::{Query, answer_addrs};
use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, etcd_must as must, etcd_run as run, http_request, repo};

fn baseline() -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/states/baseline.yaml")).unwrap()
}

fn apply_text(ep: &str, prefix: &str, text: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, text).unwrap();
    let mut args = vec!["apply", f.to_str().unwrap(), "--yes"];
    args.extend_from_slice(extra);
    run(ep, prefix, &args)
}

/// The revision in "…: revision N" output.
fn revision_of(out: &str) -> i64 {
    out.rsplit("revision ")
        .next()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in {out:?}"))
}

fn edge(ep: &str, prefix: &str, extra: &[&str]) -> TestServer {
    let mut args: Vec<String> = vec![
        "--zones".into(),
        repo().join("zones").display().to_string(),
        "--etcd".into(),
        ep.into(),
        "--prefix".into(),
        prefix.into(),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    TestServer::start_with(&args, "first snapshot live")
}

fn wait_revision(s: &TestServer, rev: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = s.admin_get("/readyz");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        if v["revision"].as_i64().unwrap_or(0) >= rev {
            return;
        }
        assert!(Instant::now() < deadline, "revision {rev} not live: {b}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn doc(s: &TestServer, version: &str, id: &str) -> serde_json::Value {
    let r = http_request(
        s.http,
        "GET",
        &format!("/v1/config/vdh-api?sdk_version={version}&client_id={id}"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Share (0..=1) of 400 OLD clients whose update is required.
fn old_required_share(s: &TestServer) -> f64 {
    (0..400)
        .filter(|i| doc(s, "0.9.0", &format!("old-{i}"))["update"]["required"] == true)
        .count() as f64
        / 400.0
}

/// Everything but the revision, for comparing states.
fn strip(mut d: serde_json::Value) -> serde_json::Value {
    d.as_object_mut().unwrap().remove("revision");
    d
}

#[derive(Clone, Copy, Debug)]
enum Share {
    None,
    All,
    About(f64),
}

/// What the SPEC §8 table says for one phase.
struct Expect {
    new_env: &'static str,
    new_backend: &'static str,
    new_maintenance: bool,
    new_realm_changes: bool,
    old_env: Option<(&'static str, &'static str)>,
    old_required: Share,
    old_recommended: Option<bool>,
    old_maintenance: Option<bool>,
}

fn e(new_env: &'static str, new_backend: &'static str) -> Expect {
    Expect {
        new_env,
        new_backend,
        new_maintenance: false,
        new_realm_changes: false,
        old_env: None,
        old_required: Share::None,
        old_recommended: None,
        old_maintenance: None,
    }
}

const PERCENT: &str = "30";

fn check_phase(s: &TestServer, what: &str, x: &Expect, new_before: &serde_json::Value) {
    let new = doc(s, "1.0.0", "new-1");
    assert_eq!(new["environment"], x.new_env, "{what}: NEW environment");
    assert_eq!(new["backend_version"], x.new_backend, "{what}: NEW backend");
    assert_eq!(
        new["maintenance"]["active"], x.new_maintenance,
        "{what}: NEW maintenance"
    );
    assert_eq!(
        new["update"]["required"], false,
        "{what}: NEW is never forced"
    );
    let realm_changed = new["auth"]["realm"] != new_before["auth"]["realm"];
    if x.new_realm_changes {
        assert!(
            realm_changed,
            "{what}: NEW's auth realm must change ({} → {})",
            new_before["auth"]["realm"], new["auth"]["realm"]
        );
    }
    assert_eq!(
        new["auth"]["realm"],
        format!("{}/{}", x.new_env, x.new_backend)
    );
    let old = doc(s, "0.9.0", "old-1");
    if let Some((env, backend)) = x.old_env {
        assert_eq!(old["environment"], env, "{what}: OLD environment");
        assert_eq!(old["backend_version"], backend, "{what}: OLD backend");
    }
    if let Some(r) = x.old_recommended {
        assert_eq!(old["update"]["recommended"], r, "{what}: OLD recommended");
    }
    if let Some(m) = x.old_maintenance {
        assert_eq!(old["maintenance"]["active"], m, "{what}: OLD maintenance");
    }
    let share = old_required_share(s);
    match x.old_required {
        Share::None => assert_eq!(share, 0.0, "{what}: OLD must not be forced"),
        Share::All => assert_eq!(share, 1.0, "{what}: every OLD client must be forced"),
        Share::About(p) => assert!(
            (share - p).abs() < 0.08,
            "{what}: {share} of OLD forced, want about {p}"
        ),
    }
    // Throughout, the hard-coded name resolves to prod's addresses.
    assert_eq!(
        answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(s.dns).unwrap()),
        vec!["192.0.2.10", "192.0.2.11"],
        "{what}: DNS"
    );
}

fn run_scheme(etcd: &Etcd, name: &str, table: &[Expect]) {
    let ep = etcd.endpoints();
    let prefix = format!("/scheme-{name}");
    let (ok, _, err) = apply_text(&ep, &prefix, &baseline(), &[]);
    assert!(ok, "{err}");
    let s = edge(&ep, &prefix, &[]);
    for (i, x) in table.iter().enumerate() {
        let phase = (i + 1).to_string();
        let what = format!("{name} phase {phase}");
        let before_rev = etcd.revision();
        let new_before = doc(&s, "1.0.0", "new-1");
        let old_before = doc(&s, "0.9.0", "old-1");
        let mut args = vec!["scheme", "apply", name, "--phase", phase.as_str(), "--yes"];
        if matches!(x.old_required, Share::About(_)) {
            args.extend(["--percent", PERCENT]);
        }
        let out = must(&ep, &prefix, &args);
        let rev = revision_of(&out);
        wait_revision(&s, rev);
        check_phase(&s, &what, x, &new_before);
        // Rolling the phase back returns to the state before it...
        let out = must(
            &ep,
            &prefix,
            &[
                "rollback",
                "--to-revision",
                &before_rev.to_string(),
                "--yes",
            ],
        );
        wait_revision(&s, revision_of(&out));
        assert_eq!(
            strip(doc(&s, "1.0.0", "new-1")),
            strip(new_before.clone()),
            "{what}: rollback (NEW)"
        );
        assert_eq!(
            strip(doc(&s, "0.9.0", "old-1")),
            strip(old_before),
            "{what}: rollback (OLD)"
        );
        // ...and the phase can then be applied again.
        let out = must(&ep, &prefix, &args);
        wait_revision(&s, revision_of(&out));
        check_phase(&s, &what, x, &new_before);
        // Once more is a no-op: nothing written under the prefix, exit 0.
        // (etcd's own revision moves with the edge registry; the prefix's
        // does not.)
        let prefix_revision = || {
            let st: serde_json::Value =
                serde_json::from_str(&must(&ep, &prefix, &["status", "--json"])).unwrap();
            st["prefix_revision"].as_i64().unwrap()
        };
        let at = prefix_revision();
        let out = must(&ep, &prefix, &args);
        assert!(out.contains("nothing to change"), "{what}: {out}");
        assert_eq!(prefix_revision(), at, "{what}: a no-op wrote a revision");
    }
    let st: serde_json::Value =
        serde_json::from_str(&must(&ep, &prefix, &["status", "--json"])).unwrap();
    assert_eq!(st["scheme"]["scheme"], name);
    assert_eq!(st["scheme"]["phase"], table.len());
}

#[test]
fn scheme_force() {
    let etcd = Etcd::single();
    run_scheme(
        &etcd,
        "force",
        &[
            Expect {
                old_required: Share::All,
                old_maintenance: Some(true),
                ..e("test-v1", "v1")
            },
            Expect {
                new_realm_changes: true,
                old_required: Share::All,
                old_env: Some(("prod", "v1")),
                ..e("prod", "v1")
            },
        ],
    );
}

#[test]
fn scheme_transition() {
    let etcd = Etcd::single();
    run_scheme(
        &etcd,
        "transition",
        &[
            Expect {
                old_env: Some(("prod", "v0")),
                old_recommended: Some(true),
                ..e("test-v1", "v1")
            },
            Expect {
                old_env: Some(("prod", "v0")),
                old_required: Share::About(0.3),
                ..e("test-v1", "v1")
            },
            Expect {
                old_required: Share::All,
                old_maintenance: Some(true),
                ..e("test-v1", "v1")
            },
            Expect {
                new_realm_changes: true,
                old_required: Share::All,
                ..e("prod", "v1")
            },
        ],
    );
}

#[test]
fn scheme_sync() {
    let etcd = Etcd::single();
    run_scheme(
        &etcd,
        "sync",
        &[
            Expect {
                new_maintenance: true,
                old_required: Share::All,
                old_maintenance: Some(true),
                ..e("prod", "v1")
            },
            Expect {
                old_required: Share::All,
                old_maintenance: Some(false),
                ..e("prod", "v1")
            },
        ],
    );
}

#[test]
fn scheme_new_env() {
    let etcd = Etcd::single();
    run_scheme(
        &etcd,
        "new-env",
        &[
            Expect {
                old_env: Some(("prod", "v0")),
                ..e("prod-v1", "v1")
            },
            Expect {
                old_env: Some(("prod", "v0")),
                old_required: Share::About(0.3),
                ..e("prod-v1", "v1")
            },
            Expect {
                old_env: Some(("prod", "v0")),
                old_required: Share::All,
                ..e("prod-v1", "v1")
            },
        ],
    );
}

#[test]
fn staged_force_only_ever_adds_clients() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let prefix = "/staged";
    assert!(apply_text(&ep, prefix, &baseline(), &[]).0);
    let s = edge(&ep, prefix, &[]);
    must(
        &ep,
        prefix,
        &["scheme", "apply", "new-env", "--phase", "1", "--yes"],
    );
    let forced = |s: &TestServer| -> BTreeSet<usize> {
        (0..1000)
            .filter(|i| doc(s, "0.9.0", &format!("c-{i}"))["update"]["required"] == true)
            .collect()
    };
    let out = must(
        &ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "10",
            "--yes",
        ],
    );
    wait_revision(&s, revision_of(&out));
    let at10 = forced(&s);
    let out = must(
        &ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "50",
            "--yes",
        ],
    );
    wait_revision(&s, revision_of(&out));
    let at50 = forced(&s);
    assert!(
        (70..=130).contains(&at10.len()),
        "{} forced at 10%",
        at10.len()
    );
    assert!(
        (440..=560).contains(&at50.len()),
        "{} forced at 50%",
        at50.len()
    );
    assert!(
        at10.is_subset(&at50),
        "a client forced at 10% was released at 50%"
    );
    // Going down is refused.
    let (ok, _, err) = run(
        &ep,
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
    assert!(
        !ok && err.contains("would release clients already forced"),
        "{err}"
    );
    // Skipping a phase is refused.
    let (ok, _, err) = run(
        &ep,
        prefix,
        &["scheme", "apply", "force", "--phase", "2", "--yes"],
    );
    assert!(!ok && err.contains("in progress"), "{err}");
}

#[test]
fn drain_eta_after_a_repoint() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let prefix = "/drain";
    let short = baseline().replace("ttl: 60", "ttl: 3");
    assert!(apply_text(&ep, prefix, &short, &[]).0);
    let s = edge(&ep, prefix, &[]);
    // Repoint the shared hostname: everyone to prod-v1.
    let repointed = short.replace(
        "      - name: default\n        environment: prod\n",
        "      - name: default\n        environment: prod-v1\n",
    );
    let (ok, _, err) = apply_text(&ep, prefix, &repointed, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("drain:"),
        "apply should announce the drain: {err}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&must(&ep, prefix, &["status", "--json"])).unwrap();
    let d = &st["drain"];
    assert_eq!(d["max_ttl"], 3);
    let at = vdh_edge::parse_rfc3339(d["changed_at"].as_str().unwrap()).unwrap();
    let until = vdh_edge::parse_rfc3339(d["until"].as_str().unwrap()).unwrap();
    assert_eq!(
        until.duration_since(at).unwrap(),
        Duration::from_secs(3),
        "drain ends one TTL after the change"
    );
    assert!(st["drain_remaining_s"].as_u64().unwrap() <= 3);
    assert!(must(&ep, prefix, &["status"]).contains("vdh-api.yingzi.com."));
    std::thread::sleep(Duration::from_millis(3500));
    let st: serde_json::Value =
        serde_json::from_str(&must(&ep, prefix, &["status", "--json"])).unwrap();
    assert_eq!(st["drain_remaining_s"], 0);
    drop(s);
}

#[test]
fn lowering_the_ttl_guards_the_repoint() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let prefix = "/lower";
    assert!(apply_text(&ep, prefix, &baseline(), &[]).0);
    must(
        &ep,
        prefix,
        &["scheme", "apply", "new-env", "--lower-ttl", "5", "--yes"],
    );
    let st: serde_json::Value =
        serde_json::from_str(&must(&ep, prefix, &["status", "--json"])).unwrap();
    assert!(st["drain"].is_null(), "lowering the TTL repoints nothing");
    // A repoint sooner than one old TTL (60 s) after lowering is refused...
    let repointed = baseline().replace("ttl: 60", "ttl: 5").replace(
        "      - name: default\n        environment: prod\n",
        "      - name: default\n        environment: prod-v1\n",
    );
    let (ok, _, err) = apply_text(&ep, prefix, &repointed, &[]);
    assert!(
        !ok && err.contains("its TTL was lowered from 60 s"),
        "{err}"
    );
    // ...unless forced; the drain then covers the old TTL.
    let (ok, _, err) = apply_text(&ep, prefix, &repointed, &["--force"]);
    assert!(ok, "{err}");
    let st: serde_json::Value =
        serde_json::from_str(&must(&ep, prefix, &["status", "--json"])).unwrap();
    assert_eq!(st["drain"]["max_ttl"], 60);
    // Bumping an environment's auth epoch.
    must(
        &ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--bump-auth-epoch",
            "prod-v1",
            "--yes",
        ],
    );
    let v = String::from_utf8(
        etcd.ctl_raw(&[
            "get",
            &format!("{prefix}/environments/prod-v1"),
            "--print-value-only",
        ])
        .stdout,
    )
    .unwrap();
    assert!(v.contains("\"token_epoch\":2"), "{v}");
}

#[test]
fn census_across_two_edges() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let prefix = "/counts";
    assert!(
        apply_text(
            &ep,
            prefix,
            // The census counts only app ids the state names (issue 10):
            // name `demo` in an update override.
            &std::fs::read_to_string(repo().join("deploy/state.yaml"))
                .unwrap()
                .replace(
                    "      message: A new SDK is available.\n",
                    "      message: A new SDK is available.\n      overrides:\n        - app_id: demo\n          message: A new SDK is available for demo.\n",
                ),
            &[]
        )
        .0
    );
    let a = edge(&ep, prefix, &["--census-hour", "60", "--census-day", "600"]);
    let b = edge(&ep, prefix, &["--census-hour", "60", "--census-day", "600"]);
    for (n, version) in [(1000, "0.9.0"), (500, "1.0.0")] {
        for i in 0..n {
            let id = format!("{version}-client-{i}");
            let path =
                format!("/v1/config/vdh-api?sdk_version={version}&client_id={id}&app_id=demo");
            // Half on each edge, and every tenth on both (counted once).
            let both = i % 10 == 0;
            if i % 2 == 0 || both {
                assert_eq!(http_request(a.http, "GET", &path, &[]).status, 200);
            }
            if i % 2 == 1 || both {
                assert_eq!(http_request(b.http, "GET", &path, &[]).status, 200);
            }
        }
    }
    // Each edge exports its own estimates in /metrics.
    let (_, m) = a.admin_get("/metrics");
    assert!(
        m.contains(
            "vdh_edge_census_clients{window=\"hour\",dimension=\"sdk_version\",value=\"0.9.0\"}"
        ),
        "{m}"
    );
    // status finds both edges and reports the union.
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st: serde_json::Value =
            serde_json::from_str(&must(&ep, prefix, &["status", "--json"])).unwrap();
        if st["census_edges"] == 2 {
            break st;
        }
        assert!(Instant::now() < deadline, "edges not registered: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The census comes from each edge's admin listener, as registered;
    // the public listeners do not serve it.
    let mut admins: Vec<String> = st["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["admin"].as_str().unwrap().to_string())
        .collect();
    admins.sort();
    let mut want = vec![a.admin.to_string(), b.admin.to_string()];
    want.sort();
    assert_eq!(admins, want);
    assert_eq!(a.http_get("/census").0, 404);
    assert_eq!(st["census_windows"]["hour"], 60, "{st}");
    // explain --etcd names the revision it evaluated and the edges' own:
    // the same number (the prefix's revision, not etcd's).
    let ex = must(
        &ep,
        prefix,
        &["explain", "--service", "vdh-api", "--sdk-version", "1.0.0"],
    );
    let evaluated = ex
        .lines()
        .next()
        .and_then(|l| l.split("at revision ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{ex}"))
        .to_string();
    let edges_line = ex
        .lines()
        .find(|l| l.starts_with("edges: "))
        .unwrap_or_else(|| panic!("{ex}"));
    assert_eq!(
        edges_line
            .matches(&format!("at revision {evaluated}"))
            .count(),
        2,
        "{ex}"
    );
    assert_eq!(st["census_windows"]["day"], 600, "{st}");
    for window in ["hour", "day"] {
        let by = &st["census"][window]["sdk_version"];
        let old = by["0.9.0"].as_f64().unwrap();
        let new = by["1.0.0"].as_f64().unwrap();
        assert!((old - 1000.0).abs() <= 30.0, "{window}: OLD {old}");
        assert!((new - 500.0).abs() <= 15.0, "{window}: NEW {new}");
        let env = &st["census"][window]["environment"];
        assert!((env["prod"].as_f64().unwrap() - 1000.0).abs() <= 30.0);
        assert!((env["prod-v1"].as_f64().unwrap() - 500.0).abs() <= 15.0);
        assert!((st["census"][window]["app_id"]["demo"].as_f64().unwrap() - 1500.0).abs() <= 45.0);
    }
    // Nothing of the census is written under the prefix.
    let keys = String::from_utf8(
        etcd.ctl_raw(&["get", &format!("{prefix}/"), "--prefix", "--keys-only"])
            .stdout,
    )
    .unwrap();
    assert!(!keys.contains("census"), "{keys}");
}

/// Plans (issue 11): the staged phase's JSON plan gives the exact share
/// of buckets; a plain apply that would undo the live phase of new-env
/// shows the field diff, the OLD/NEW impact and the scheme warning, and is
/// refused without --force.
#[test]
fn plans_are_exact_and_a_plain_apply_cannot_undo_a_phase() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let prefix = "/plans";
    assert!(apply_text(&ep, prefix, &baseline(), &[]).0);
    must(
        &ep,
        prefix,
        &["scheme", "apply", "new-env", "--phase", "1", "--yes"],
    );
    let plan: serde_json::Value = serde_json::from_str(&must(
        &ep,
        prefix,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "50",
            "--dry-run",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(plan["outcome"], "dry_run");
    let preview = plan["preview"].to_string();
    assert!(
        preview.contains(
            "for exactly 50.00% of client ids (buckets 0-4999 of 10000, salt 'vdh-api/min_version')"
        ),
        "{plan}"
    );
    assert!(
        preview.contains(
            "the other 50.00% get recommended true, requests without client_id get recommended true"
        ),
        "{plan}"
    );
    let fields = plan["keys"][0]["fields"].to_string();
    assert!(fields.contains("update.min_version_percent"), "{plan}");
    for (phase, extra) in [("2", Some("50")), ("3", None)] {
        let mut args = vec!["scheme", "apply", "new-env", "--phase", phase, "--yes"];
        if let Some(p) = extra {
            args.extend(["--percent", p]);
        }
        must(&ep, prefix, &args);
    }
    // A plain apply of the baseline undoes phase 3 (and 2 and 1).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("baseline.yaml");
    std::fs::write(&f, baseline()).unwrap();
    let f = f.display().to_string();
    let (ok, out, err) = run(&ep, prefix, &["apply", &f, "--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("~ services/vdh-api: update.min_version: - \"1.0.0\""),
        "{out}"
    );
    assert!(out.contains("vdh-api: OLD SDK 0.9.0: "), "{out}");
    assert!(out.contains("update.required true → false"), "{out}");
    assert!(
        out.contains("warning: scheme new-env is at phase 3"),
        "{out}"
    );
    assert!(out.contains("would be refused without --force"), "{out}");
    let at = etcd.revision();
    let (ok, _, err) = run(&ep, prefix, &["apply", &f, "--yes"]);
    assert!(!ok);
    assert!(
        err.contains("refused: scheme new-env is at phase 3"),
        "{err}"
    );
    assert_eq!(etcd.revision(), at);
    let (ok, out, err) = run(&ep, prefix, &["apply", &f, "--yes", "--force", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "written");
    assert!(v["written_revision"].as_i64().unwrap() > at);
}
