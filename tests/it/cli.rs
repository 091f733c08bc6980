//! The `check` and `serve` commands as an operator runs them.

use std::process::Stdio;

use crate::harness::{command, repo};

#[test]
fn check_accepts_the_shipped_example() {
    let out = command().current_dir(repo()).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 zone(s)"));
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    std::fs::write(
        zones.join("example.com.zone"),
        "$TTL 300\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\nbad A 999.1.1.1\n",
    )
    .unwrap();
    let state = dir.path().join("state.yaml");
    std::fs::write(
        &state,
        "environments:\n  e:\n    backend_version: v1\n    names: [e.example.com]\n    addresses: [192.0.2.9]\n    api_base_url: https://e.example.com\n\
         services:\n  s:\n    hostnames: [s.example.org]\n    legacy_sdk_version: 0.9\n    rules:\n      - name: r\n        environment: nope\n",
    )
    .unwrap();
    let out = command()
        .arg("check")
        .arg("--zones")
        .arg(&zones)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let zone_file = zones.join("example.com.zone");
    assert!(
        err.contains(&format!(
            "{}:5: A record: bad IPv4 address",
            zone_file.display()
        )),
        "{err}"
    );
    let s = state.display();
    assert!(
        err.contains(&format!(
            "{s}:9: services.s.hostnames[0]: s.example.org. is outside every served zone"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{s}:10: services.s.legacy_sdk_version")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{s}:13: services.s.rules[0].environment: unknown environment 'nope'"
        )),
        "{err}"
    );
}

#[test]
fn serve_names_a_missing_path_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .current_dir(dir.path())
        .args([
            "serve",
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zones: zones folder not found"));
}

#[test]
fn usage_errors_exit_2() {
    let out = command().args(["serve", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn published_schema_matches_the_types() {
    let out = command().arg("schema").output().unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/state.schema.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        shipped,
        "regenerate with: vdh-edge schema > deploy/state.schema.json"
    );
}

#[test]
fn serve_refuses_an_invalid_initial_state() {
    let dir = crate::harness::shipped_copy();
    let state = dir.path().join("state.yaml");
    let text = std::fs::read_to_string(&state)
        .unwrap()
        .replace("legacy_sdk_version: 0.9.0", "legacy_sdk_version: nine");
    std::fs::write(&state, text).unwrap();
    let out = command()
        .arg("serve")
        .arg("--zones")
        .arg(dir.path().join("zones"))
        .arg("--state")
        .arg(&state)
        .args([
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("services.vdh-api.legacy_sdk_version: 'nine' is not a SemVer 2.0 version"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:", state.display())), "{err}");
}
