//! An invalid change is rejected with a log line naming file:line and the
//! reason; the previous snapshot keeps serving; the fix is then published.

use std::time::Duration;

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, shipped_copy, write_by_rename};

#[test]
fn bad_zone_then_bad_state_are_rejected_and_fixes_published() {
    let dir = shipped_copy();
    let zone_path = dir.path().join("zones/yingzi.com.zone");
    let state_path = dir.path().join("state.yaml");
    let zone = std::fs::read_to_string(&zone_path).unwrap();
    let state = std::fs::read_to_string(&state_path).unwrap();
    let server = TestServer::start(&dir.path().join("zones"), &state_path, &[]);
    let www = || answer_addrs(&Query::new("www.yingzi.com", 1).send(server.dns).unwrap());
    let api = || {
        answer_addrs(
            &Query::new("vdh-api.yingzi.com", 1)
                .send(server.dns)
                .unwrap(),
        )
    };
    assert_eq!(www(), vec!["192.0.2.80"]);

    // A broken zone: bad address on a known line.
    let broken = zone.replace("www     IN A    192.0.2.80", "www     IN A    192.0.2.800");
    let bad_line = broken
        .lines()
        .position(|l| l.contains("192.0.2.800"))
        .unwrap()
        + 1;
    write_by_rename(&zone_path, &broken);
    let needle = format!("yingzi.com.zone:{bad_line}: A record: bad IPv4 address");
    assert!(
        server.wait_log_count(&needle, 1, Duration::from_secs(5)),
        "no rejection logged for the zone"
    );
    assert_eq!(
        www(),
        vec!["192.0.2.80"],
        "the previous zone must keep serving"
    );
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.contains("vdh_edge_rejected_changes_total 1"),
        "{metrics}"
    );

    // Fix the zone with a new address: published.
    write_by_rename(&zone_path, &zone.replace("192.0.2.80", "192.0.2.81"));
    assert!(
        wait(|| www() == vec!["192.0.2.81"]),
        "the fixed zone was not published"
    );

    // A broken state: a rule pointing at an unknown environment.
    let bad_state = state.replace("environment: prod-v1", "environment: prod-v9");
    let bad_line = bad_state
        .lines()
        .position(|l| l.contains("prod-v9"))
        .unwrap()
        + 1;
    write_by_rename(&state_path, &bad_state);
    let needle = format!(
        "state.yaml:{bad_line}: services.vdh-api.rules[0].environment: unknown environment 'prod-v9'"
    );
    assert!(
        server.wait_log_count(&needle, 1, Duration::from_secs(5)),
        "no rejection logged for the state"
    );
    assert_eq!(api(), vec!["192.0.2.10", "192.0.2.11"]);

    // Fix it with a change DNS can see: published.
    write_by_rename(
        &state_path,
        &state.replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            "addresses: [192.0.2.12]",
        ),
    );
    assert!(
        wait(|| api() == vec!["192.0.2.12"]),
        "the fixed state was not published"
    );
}

fn wait(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
