//! SIGHUP (`systemctl reload`) re-reads the file inputs and never stops the
//! process (issue 10): it used to kill the edge without a log line.

use std::time::Duration;

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, shipped_copy, write_by_rename};

#[test]
fn sighup_rereads_the_files_and_keeps_serving() {
    let dir = shipped_copy();
    let state_path = dir.path().join("state.yaml");
    let state = std::fs::read_to_string(&state_path).unwrap();
    // Debug logging shows the re-read the signal starts.
    let mut server = TestServer::start(
        &dir.path().join("zones"),
        &state_path,
        &["--log", "vdh_edge=debug"],
    );
    let api =
        |s: &TestServer| answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(s.dns).unwrap());
    for n in 1..=3 {
        server.signal("HUP");
        assert!(
            server.wait_log_count(
                "SIGHUP: re-reading the zones folder and the state file",
                n,
                Duration::from_secs(5)
            ),
            "no log line for SIGHUP {n}"
        );
        assert!(
            server.wait_log_count("files changed", n, Duration::from_secs(5)),
            "SIGHUP {n} did not re-read the files"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.alive(), "SIGHUP stopped the process");
    assert_eq!(server.admin_get("/readyz").0, 200);
    assert_eq!(api(&server), vec!["192.0.2.10", "192.0.2.11"]);
    // Re-reading unchanged files publishes nothing.
    assert_eq!(server.log().matches("snapshot published").count(), 0);
    // The watcher still works after the signals.
    write_by_rename(
        &state_path,
        &state.replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [192.0.2.44]",
        ),
    );
    assert!(
        server.wait_log_count("snapshot published", 1, Duration::from_secs(5)),
        "the edit after SIGHUP was not published"
    );
    assert_eq!(api(&server), vec!["192.0.2.44"]);
}
