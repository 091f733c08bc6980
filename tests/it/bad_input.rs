//! Input that cannot be served is refused with its file and line, fast
//! (issue 11): duplicate YAML keys, hostile nesting, RRsets no DNS message
//! can hold, RDATA over 65,535 bytes, bytes that are not UTF-8. An RRset
//! that fits (4,000 A records) is served whole over TCP.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::dnsclient::{Query, answer_addrs, tcp};
use crate::harness::{TestServer, command, repo, shipped_copy};

/// Runs `check` on a zones folder and a state file; returns (exit code,
/// stderr, seconds taken).
fn check(zones: &Path, state: &Path) -> (i32, String, f64) {
    let t = Instant::now();
    let out = command()
        .arg("check")
        .arg("--zones")
        .arg(zones)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed().as_secs_f64(),
    )
}

/// A copy of the shipped zones with `extra` appended to the zone file.
fn zone_with(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = shipped_copy();
    let zone = dir.path().join("zones/yingzi.com.zone");
    let mut text = std::fs::read_to_string(&zone).unwrap();
    text.push_str(extra);
    std::fs::write(&zone, text).unwrap();
    (dir, zone)
}

fn a_records(name: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{name} 60 IN A 10.{}.{}.{}\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect()
}

#[test]
fn duplicate_keys_and_deep_nesting_are_refused_with_their_lines() {
    let dir = shipped_copy();
    let zones = dir.path().join("zones");
    let state = dir.path().join("state.yaml");
    let shipped = std::fs::read_to_string(&state).unwrap();
    // A second `vdh-api:` under services, and a second `prod:` under
    // environments (serde would keep the last one silently).
    let dup_service = shipped.replace(
        "services:\n",
        "services:\n  vdh-api:\n    hostnames: [other.yingzi.com]\n    legacy_sdk_version: 0.9.0\n    rules: [{name: d, environment: prod}]\n",
    );
    std::fs::write(&state, &dup_service).unwrap();
    let (rc, err, _) = check(&zones, &state);
    assert_eq!(rc, 1, "{err}");
    let first = dup_service.lines().position(|l| l == "  vdh-api:").unwrap() + 1;
    let second = dup_service
        .lines()
        .skip(first)
        .position(|l| l == "  vdh-api:")
        .unwrap()
        + first
        + 1;
    assert!(
        err.contains(&format!(
            "{}:{second}: services.vdh-api: duplicate key 'vdh-api' (first at line {first})",
            state.display()
        )),
        "{err}"
    );
    // `apply` refuses it the same way, before talking to etcd.
    let out = command()
        .arg("apply")
        .arg(&state)
        .args(["--etcd", "http://127.0.0.1:9", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let apply_err = String::from_utf8_lossy(&out.stderr);
    assert!(
        apply_err.contains(&format!(
            "{}:{second}: services.vdh-api: duplicate key",
            state.display()
        )),
        "{apply_err}"
    );
    let dup_env = shipped.replace(
        "environments:\n",
        "environments:\n  prod:\n    backend_version: v9\n",
    );
    std::fs::write(&state, &dup_env).unwrap();
    let (rc, err, _) = check(&zones, &state);
    assert_eq!(rc, 1);
    assert!(
        err.contains("environments.prod: duplicate key 'prod' (first at line"),
        "{err}"
    );
    // 100,000 nested flow sequences: refused at once.
    std::fs::write(
        &state,
        format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let (rc, err, secs) = check(&zones, &state);
    assert_eq!(rc, 1);
    assert!(err.contains("nested deeper than 32 levels"), "{err}");
    assert!(err.contains(&format!("{}:1:", state.display())), "{err}");
    assert!(secs < 2.0, "{secs} s");
}

#[test]
fn rrsets_that_cannot_be_served_are_refused_with_their_lines() {
    let _exclusive = crate::harness::exclusive();
    let state = repo().join("deploy/state.yaml");
    // 5,000 A records: 80,043 bytes in an answer.
    let (dir, zone) = zone_with(&a_records("big", 5000));
    let line = std::fs::read_to_string(&zone)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("big "))
        .unwrap()
        + 1;
    let (rc, err, secs) = check(&dir.path().join("zones"), &state);
    assert_eq!(rc, 1);
    assert!(
        err.contains(&format!(
            "{}:{line}: big.yingzi.com. A RRset of 5000 records needs 80043 bytes",
            zone.display()
        )),
        "{err}"
    );
    assert!(secs < 2.0, "{secs} s");
    // One TXT record of 10 MB.
    let strings = format!("\"{}\" ", "x".repeat(250)).repeat(40_000);
    let (dir, zone) = zone_with(&format!("bigtxt 60 IN TXT ( {strings})\n"));
    let (rc, err, secs) = check(&dir.path().join("zones"), &state);
    assert_eq!(rc, 1);
    assert!(
        err.contains(&format!(
            "{}:{line}: bigtxt.yingzi.com. TXT record of 10040000 bytes",
            zone.display()
        )),
        "{err}"
    );
    assert!(secs < 2.0, "{secs} s");
    // 200,000 A records: refused, and in linear time (it did not finish in
    // 120 s before). The debug build the tests run takes ~2.5 s here; the
    // release build 0.65 s (see the note of issue 11).
    let (dir, _) = zone_with(&a_records("huge", 200_000));
    let (rc, err, secs) = check(&dir.path().join("zones"), &state);
    assert_eq!(rc, 1);
    assert!(
        err.contains("huge.yingzi.com. A RRset of 200000 records"),
        "{err}"
    );
    assert!(secs < 10.0, "{secs} s");
    // Bytes that are not UTF-8 are named by line.
    let (dir, zone) = zone_with("ok 60 IN TXT \"fine\"\n");
    let mut bytes = std::fs::read(&zone).unwrap();
    bytes.extend_from_slice(b"bad 60 IN TXT \"\xff\xfe\"\n");
    std::fs::write(&zone, &bytes).unwrap();
    let bad_line = bytes.iter().filter(|&&b| b == b'\n').count();
    let (rc, err, _) = check(&dir.path().join("zones"), &state);
    assert_eq!(rc, 1);
    assert!(
        err.contains(&format!(
            "{}:{bad_line}: not UTF-8 text: byte 0xff at column 16",
            zone.display()
        )),
        "{err}"
    );
}

#[test]
fn a_4000_record_rrset_is_served_whole_over_tcp() {
    let (dir, _) = zone_with(&a_records("big", 4000));
    let t = Instant::now();
    let (rc, err, _) = check(&dir.path().join("zones"), &dir.path().join("state.yaml"));
    assert_eq!(rc, 0, "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let s = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &[],
    );
    let q = Query::new("big.yingzi.com", 1).packet(7);
    let resp = tcp(s.dns, &q, Duration::from_secs(5)).unwrap();
    assert_eq!(answer_addrs(&resp).len(), 4000);
}
