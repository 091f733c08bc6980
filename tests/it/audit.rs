//! The audit trail (issue 11): every write records actor, reason, ticket,
//! keys and the command without secrets; `policy.reason_required` is
//! enforced; `history` filters by actor, key and time, shows one change
//! field by field, and `--follow --json` streams new changes; dry runs
//! show field diffs and write nothing.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd_harness::Etcd;
use crate::harness::{command, repo};

const PREFIX: &str = "/audit";

fn run(ep: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = command();
    c.current_dir(repo())
        .args(args)
        .args(["--etcd", ep, "--prefix", PREFIX]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn state_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let f = dir.path().join(name);
    std::fs::write(&f, text).unwrap();
    f.display().to_string()
}

#[test]
fn writes_are_audited_and_history_reads_them() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let with_policy = format!("policy:\n  reason_required: true\n{shipped}");
    let f0 = state_file(&dir, "s0.yaml", &with_policy);
    // The first write sets the policy (no policy is live yet).
    let (ok, out, err) = run(
        &ep,
        &[
            "apply", &f0, "--yes", "--actor", "alice", "--ticket", "CHG-1",
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    let first: i64 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
    // Now every write needs a reason.
    let f1 = state_file(&dir, "s1.yaml", &with_policy.replace("ttl: 60", "ttl: 30"));
    let (ok, _, err) = run(&ep, &["apply", &f1, "--yes"], &[]);
    assert!(!ok);
    assert!(
        err.contains("requires a reason") && err.contains("--reason"),
        "{err}"
    );
    assert_eq!(etcd.revision(), first, "a refused write wrote nothing");
    // A dry run shows the field that changes and writes nothing.
    let (ok, out, err) = run(&ep, &["apply", &f1, "--dry-run"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("~ services/vdh-api: ttl: 60 -> 30"), "{out}");
    assert_eq!(etcd.revision(), first);
    let (ok, out, err) = run(
        &ep,
        &[
            "apply",
            &f1,
            "--yes",
            "--reason",
            "shorter TTL before the repoint",
            "--etcd-password",
            "S3CR3T",
        ],
        &[("VDH_EDGE_ACTOR", "bob")],
    );
    assert!(ok, "{out}{err}");
    let second: i64 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();

    let (ok, out, err) = run(&ep, &["history", "--json"], &[]);
    assert!(ok, "{err}");
    assert!(!out.contains("S3CR3T"), "{out}");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h[0]["revision"], second);
    assert_eq!(h[0]["actor"], "bob");
    assert_eq!(h[0]["reason"], "shorter TTL before the repoint");
    assert_eq!(h[0]["keys"], serde_json::json!(["services/vdh-api"]));
    assert!(
        h[0]["command"]
            .as_str()
            .unwrap()
            .contains("--etcd-password ***")
    );
    assert_eq!(h[1]["actor"], "alice");
    assert_eq!(h[1]["ticket"], "CHG-1");
    // Filters.
    let only = |args: &[&str]| -> Vec<i64> {
        let mut a = vec!["history", "--json"];
        a.extend_from_slice(args);
        let (ok, out, err) = run(&ep, &a, &[]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["revision"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(only(&["--actor", "alice"]), vec![first]);
    assert_eq!(only(&["--key", "meta/policy"]), vec![first]);
    assert_eq!(only(&["--key", "services/vdh-api"]), vec![second, first]);
    assert_eq!(
        only(&["--since", "2999-01-01T00:00:00Z"]),
        Vec::<i64>::new()
    );
    assert_eq!(
        only(&["--until", "2000-01-01T00:00:00Z"]),
        Vec::<i64>::new()
    );
    let (ok, _, err) = run(&ep, &["history", "--since", "yesterday"], &[]);
    assert!(!ok && err.contains("not an RFC 3339 time"), "{err}");
    // One change, field by field.
    let (ok, out, err) = run(&ep, &["history", "show", &second.to_string()], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("~ services/vdh-api: ttl: 60 -> 30"), "{out}");
    assert!(
        out.contains("reason: shorter TTL before the repoint"),
        "{out}"
    );
    let (ok, _, err) = run(&ep, &["history", "show", &(second + 100).to_string()], &[]);
    assert!(
        !ok && err.contains("no vdh-edge change was written at revision"),
        "{err}"
    );
    // rollback --dry-run writes nothing.
    let (ok, out, err) = run(
        &ep,
        &["rollback", "--to-revision", &first.to_string(), "--dry-run"],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("~ services/vdh-api: ttl: 30 -> 60"), "{out}");
    assert_eq!(etcd.revision(), second);
    // Answering `n` at the prompt (a real terminal, through script(1))
    // exits 1 and writes nothing.
    let cmd = format!(
        "{} apply {f0} --etcd {ep} --prefix {PREFIX} --reason r",
        crate::harness::BIN
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"n\n");
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("aborted, nothing written"), "{text}");
    assert_eq!(etcd.revision(), second);
    // The rollback itself needs a reason too.
    let (ok, _, err) = run(
        &ep,
        &["rollback", "--to-revision", &first.to_string(), "--yes"],
        &[],
    );
    assert!(!ok && err.contains("requires a reason"), "{err}");
}

#[test]
fn history_follow_streams_each_write() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let mut follower = Command::new(crate::harness::BIN)
        .current_dir(repo())
        .args([
            "history", "--follow", "--json", "--etcd", &ep, "--prefix", PREFIX,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send((Instant::now(), line));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=5 {
        let f = state_file(
            &dir,
            &format!("s{i}.yaml"),
            &shipped.replace(
                "token_epoch: 1\nservices",
                &format!("token_epoch: {i}\nservices"),
            ),
        );
        let (ok, out, err) = run(
            &ep,
            &["apply", &f, "--yes", "--reason", &format!("write {i}")],
            &[],
        );
        let written = Instant::now();
        assert!(ok, "{out}{err}");
        let rev: i64 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
        let (at, line) = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("an entry per write");
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(e["revision"], rev, "{line}");
        assert_eq!(e["reason"], format!("write {i}"));
        assert!(at.saturating_duration_since(written) < Duration::from_secs(1));
    }
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn approvals_need_another_actor_and_a_base_that_did_not_move() {
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let state = |name: &str, epoch: u32| {
        state_file(
            &dir,
            name,
            &format!(
                "policy:\n  approvals: 1\n{}",
                shipped.replace(
                    "token_epoch: 1\nservices",
                    &format!("token_epoch: {epoch}\nservices")
                )
            ),
        )
    };
    // Setting the policy itself needs no approval (none is live yet).
    let (ok, out, err) = run(&ep, &["apply", &state("s1.yaml", 1), "--yes"], &[]);
    assert!(ok, "{out}{err}");
    let rev = etcd.revision();
    // Now a write by alice is a proposal: its id, nothing written.
    let propose = |file: &str, extra: &[&str]| -> String {
        let mut args = vec!["apply", file, "--yes", "--actor", "alice"];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&ep, &args, &[]);
        assert!(ok, "{err}");
        assert!(out.starts_with("proposed p"), "{out}");
        out.split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches(':')
            .to_string()
    };
    let id = propose(&state("s2.yaml", 2), &["--reason", "epoch 2"]);
    // The proposal lives beside the prefix: no vdh-edge change was written.
    let newest = || -> i64 {
        let (_, out, _) = run(&ep, &["history", "--json", "--limit", "1"], &[]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["revision"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(newest(), rev);
    let (ok, out, _) = run(&ep, &["proposals", "--json"], &[]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["proposer"], "alice");
    // The proposer cannot approve; another actor commits it.
    let (ok, _, err) = run(&ep, &["approve", &id, "--actor", "alice"], &[]);
    assert!(!ok && err.contains("must come from another actor"), "{err}");
    let (ok, out, err) = run(&ep, &["approve", &id, "--actor", "bob"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("committed, revision"), "{out}");
    let (_, out, _) = run(&ep, &["history", "--json", "--limit", "1"], &[]);
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h[0]["actor"], "alice");
    assert_eq!(h[0]["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(h[0]["reason"], "epoch 2");
    // A proposal whose base moved (a break-glass write meanwhile) is
    // refused on approval.
    let stale = propose(&state("s3.yaml", 3), &[]);
    let (ok, out, err) = run(
        &ep,
        &[
            "apply",
            &state("s4.yaml", 4),
            "--yes",
            "--actor",
            "carol",
            "--break-glass",
            "--reason",
            "outage",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("applied: revision"), "{out}");
    let (_, out, _) = run(&ep, &["history", "--json", "--limit", "1"], &[]);
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h[0]["break_glass"], true);
    let at = etcd.revision();
    let (ok, _, err) = run(&ep, &["approve", &stale, "--actor", "bob"], &[]);
    assert!(!ok && err.contains("changed since proposal"), "{err}");
    assert_eq!(
        etcd.revision(),
        at + 1,
        "only the proposal's deletion was written"
    );
    // Reject drops a proposal.
    let third = propose(&state("s5.yaml", 5), &[]);
    let (ok, out, err) = run(
        &ep,
        &["reject", &third, "--actor", "bob", "--reason", "not now"],
        &[],
    );
    assert!(ok && out.contains("rejected"), "{out}{err}");
    let (_, out, _) = run(&ep, &["proposals"], &[]);
    assert!(out.contains("no proposals"), "{out}");
    // A rollback needs no approval by default.
    let (ok, out, err) = run(
        &ep,
        &["rollback", "--to-revision", &rev.to_string(), "--yes"],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("new revision"), "{out}");
}
