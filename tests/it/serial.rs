//! SOA serials (SPEC §4): the file's serial until the zone's content changes
//! (derived names included), then strictly greater than any served before,
//! also across a restart with the same cache folder.

use std::time::Duration;

use crate::dnsclient::{Query, soa_serial};
use crate::harness::{TestServer, shipped_copy, write_by_rename};

const FILE_SERIAL: u32 = 2026112601;

fn serial(server: &TestServer) -> u32 {
    soa_serial(&Query::new("yingzi.com", 6).send(server.dns).unwrap()).unwrap()
}

fn wait_serial(server: &TestServer, want: u32) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = serial(server);
        if s == want || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serial_moves_forward_on_derived_changes_and_survives_restart() {
    let dir = shipped_copy();
    let zones = dir.path().join("zones");
    let state = dir.path().join("state.yaml");
    let cache = dir.path().join("cache");
    let extra = ["--cache-dir", cache.to_str().unwrap()];
    let text = std::fs::read_to_string(&state).unwrap();
    {
        let server = TestServer::start(&zones, &state, &extra);
        assert_eq!(
            serial(&server),
            FILE_SERIAL,
            "unchanged zone keeps the file's serial"
        );
        // A state change that alters a derived name in the zone bumps it.
        write_by_rename(
            &state,
            &text.replace(
                "addresses: [192.0.2.10, 192.0.2.11]",
                "addresses: [192.0.2.12]",
            ),
        );
        assert_eq!(wait_serial(&server, FILE_SERIAL + 1), FILE_SERIAL + 1);
        // A change outside the zone's content (the update message) does not.
        let t2 = std::fs::read_to_string(&state)
            .unwrap()
            .replace("A new SDK is available.", "Please update.");
        write_by_rename(&state, &t2);
        assert!(server.wait_log_count("snapshot published", 2, Duration::from_secs(5)));
        assert_eq!(serial(&server), FILE_SERIAL + 1);
    }
    {
        // Restart on the same content: the serial does not go back.
        let server = TestServer::start(&zones, &state, &extra);
        assert_eq!(serial(&server), FILE_SERIAL + 1);
    }
    // Restart after going back to the original content: still forward.
    write_by_rename(&state, &text);
    let server = TestServer::start(&zones, &state, &extra);
    assert_eq!(serial(&server), FILE_SERIAL + 2);
}
