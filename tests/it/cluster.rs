//! `deploy/etcd-cluster.sh` and the operator commands against its three
//! members (issue 11): the script stops, starts and restarts members
//! reliably; with one member down every command works, and with all down
//! each fails within `--timeout` + 1 s with one line naming what it tried.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{command, repo};

/// A cluster run by the script on free ports, stopped on drop.
struct Cluster {
    base: u16,
    data: tempfile::TempDir,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo().join("deploy/etcd-cluster.sh"))
            .args(args)
            .env("VDH_ETCD_PORT", self.base.to_string())
            .env("VDH_ETCD_DATA", self.data.path().join("etcd"))
            .output()
            .unwrap()
    }

    fn must(&self, args: &[&str]) {
        let out = self.script(args);
        assert!(
            out.status.success(),
            "etcd-cluster.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new() -> Cluster {
        // Six ports: base, +1, +10, +11, +20, +21, all free now.
        let base = loop {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = l.local_addr().unwrap().port();
            drop(l);
            if b > 60000 {
                continue;
            }
            if [0, 1, 10, 11, 20, 21]
                .iter()
                .all(|d| std::net::TcpListener::bind(("127.0.0.1", b + d)).is_ok())
            {
                break b;
            }
        };
        Cluster {
            base,
            data: tempfile::tempdir_in("/dev/shm").unwrap(),
        }
    }

    fn endpoints(&self) -> String {
        [0, 10, 20]
            .iter()
            .map(|d| format!("http://127.0.0.1:{}", self.base + d))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn pid_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data.path().join("etcd"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pid"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
    }
}

#[test]
fn the_cluster_script_stops_starts_and_restarts_members() {
    let c = Cluster::new();
    for round in 0..3 {
        c.must(&["start"]);
        let out = c.script(&["start-member", "1"]);
        assert!(
            !out.status.success(),
            "round {round}: a running member is not started twice"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("n1 already runs"));
        c.must(&["restart-member", "1"]);
        let status = String::from_utf8_lossy(&c.script(&["status"]).stdout).into_owned();
        assert_eq!(
            status.matches("running").count(),
            3,
            "round {round}: {status}"
        );
        c.must(&["stop"]);
        assert!(
            c.pid_files().is_empty(),
            "round {round}: members left behind"
        );
        assert!(
            !c.data.path().join("etcd").exists(),
            "round {round}: data left behind"
        );
    }
}

fn run(ep: &str, args: &[&str]) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = command()
        .current_dir(repo())
        .args(args)
        .args(["--etcd", ep, "--prefix", "/fo"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        t.elapsed(),
    )
}

#[test]
fn commands_work_with_one_member_down_and_fail_fast_with_none() {
    let c = Cluster::new();
    c.must(&["start"]);
    let ep = c.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let state = |epoch: usize| {
        let f = dir.path().join(format!("s{epoch}.yaml"));
        std::fs::write(
            &f,
            shipped.replace(
                "token_epoch: 1\nservices",
                &format!("token_epoch: {epoch}\nservices"),
            ),
        )
        .unwrap();
        f.display().to_string()
    };
    let (ok, out, _) = run(&ep, &["apply", &state(1), "--yes"]);
    assert!(ok, "{out}");
    let first = out
        .lines()
        .find_map(|l| l.strip_prefix("applied: revision "))
        .unwrap_or_else(|| panic!("no revision in {out}"))
        .trim()
        .to_string();
    // The first endpoint is the one that dies: every command meets it.
    c.must(&["stop-member", "0"]);
    let explain = ["explain", "--service", "vdh-api", "--sdk-version", "1.0.0"];
    for i in 0..50 {
        for args in [vec!["status"], vec!["history"], explain.to_vec()] {
            let (ok, out, _) = run(&ep, &args);
            assert!(ok, "run {i}: {args:?}: {out}");
        }
        let s = state(i + 2);
        let (ok, out, _) = run(&ep, &["apply", &s, "--yes"]);
        assert!(ok, "run {i}: apply: {out}");
        let (ok, out, _) = run(&ep, &["rollback", "--to-revision", &first, "--yes"]);
        assert!(ok, "run {i}: rollback: {out}");
    }
    // All down: each command gives up within --timeout + 1 s, in one line.
    c.must(&["stop-member", "1"]);
    c.must(&["stop-member", "2"]);
    for args in [
        vec!["status", "--timeout", "2"],
        vec!["history", "--timeout", "2"],
        vec![
            "explain",
            "--service",
            "vdh-api",
            "--sdk-version",
            "1.0.0",
            "--timeout",
            "2",
        ],
        vec!["apply", "deploy/state.yaml", "--yes", "--timeout", "2"],
        vec!["rollback", "--to-revision", "2", "--yes", "--timeout", "2"],
    ] {
        let (ok, out, took) = run(&ep, &args);
        assert!(!ok, "{args:?}");
        assert!(took < Duration::from_secs(3), "{args:?} took {took:?}");
        assert_eq!(out.trim().lines().count(), 1, "{args:?}: {out}");
        assert!(
            out.contains("no etcd endpoint answered within 2 s (3 tried: "),
            "{args:?}: {out}"
        );
        assert!(
            out.contains(&format!("127.0.0.1:{} (connection refused)", c.base)),
            "{out}"
        );
    }
}
