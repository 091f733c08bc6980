//! A state change that cannot be read for a passing reason (out of file
//! descriptors) is retried until it is published (issue 10): it used to be
//! rejected once and never retried, and the edge kept serving the old
//! revision with `/readyz` 200 until the file was edited again.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, shipped_copy, write_by_rename};

/// Sets the server's soft open-file limit with prlimit(1).
fn set_nofile(server: &TestServer, soft: &str) {
    let hard = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .expect("hard limit");
    let ok = Command::new("prlimit")
        .args([
            "--pid",
            &server.pid().to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .expect("prlimit (util-linux) runs")
        .success();
    assert!(ok, "prlimit failed");
}

#[test]
fn a_change_read_while_out_of_descriptors_is_published_once_they_are_back() {
    let dir = shipped_copy();
    let state_path = dir.path().join("state.yaml");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let server = TestServer::start(&dir.path().join("zones"), &state_path, &[]);
    // UDP needs no new descriptor: it keeps answering throughout.
    let api = || {
        answer_addrs(
            &Query::new("vdh-api.yingzi.com", 1)
                .send(server.dns)
                .unwrap(),
        )
    };
    assert_eq!(api(), vec!["192.0.2.10", "192.0.2.11"]);
    // Every descriptor number from 3 up is refused: opening a file fails.
    set_nofile(&server, "3");
    write_by_rename(
        &state_path,
        &state.replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [192.0.2.66]",
        ),
    );
    assert!(
        server.wait_log_count("Too many open files", 1, Duration::from_secs(5)),
        "the read did not fail"
    );
    assert!(
        server.wait_log_count("retrying", 2, Duration::from_secs(5)),
        "the read was not retried"
    );
    assert_eq!(
        api(),
        vec!["192.0.2.10", "192.0.2.11"],
        "old state kept meanwhile"
    );
    let back = Instant::now();
    set_nofile(&server, "4096");
    // No further edit: the retry publishes the change.
    while api() != vec!["192.0.2.66"] {
        assert!(
            back.elapsed() < Duration::from_secs(3),
            "the change was not published after descriptors came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.log().contains("the files could be read again"));
}
