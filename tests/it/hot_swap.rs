//! Hot swap under load: the zone file and the state change 100 times while
//! clients query without pause. No query may fail, and every answer must
//! come from one published snapshot: the zone version (an MX preference in
//! the zone file) and the state version (the derived address of
//! vdh-api.yingzi.com, in the same answer's additional section) must be a
//! pair that was published, and neither may go backwards for any client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RData;

use crate::dnsclient::Query;
use crate::harness::{TestServer, shipped_copy, write_by_rename};

const CHANGES: u32 = 100;
const BASE_SERIAL: u32 = 2026112601;

fn zone_text(base: &str, v: u32) -> String {
    let z = base.replace(&BASE_SERIAL.to_string(), &(BASE_SERIAL + v).to_string());
    format!("{z}probe IN MX {} vdh-api\n", 1000 + v)
}

fn state_text(base: &str, v: u32) -> String {
    base.replace(
        "addresses: [192.0.2.10, 192.0.2.11]",
        &format!("addresses: [198.18.0.{v}]"),
    )
}

/// (zone version, state version) seen in one answer.
fn observe(resp: &[u8]) -> Option<(u32, u32)> {
    let m = Message::from_vec(resp).ok()?;
    let zone_v = m.answers.iter().find_map(|r| match &r.data {
        RData::MX(mx) => Some(mx.preference as u32 - 1000),
        _ => None,
    })?;
    let state_v = m.additionals.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0.octets()[3] as u32),
        _ => None,
    })?;
    Some((zone_v, state_v))
}

#[test]
fn zone_and_state_change_100_times_under_load() {
    let dir = shipped_copy();
    let zone_path = dir.path().join("zones/yingzi.com.zone");
    let state_path = dir.path().join("state.yaml");
    let base_zone = std::fs::read_to_string(&zone_path).unwrap();
    let base_state = std::fs::read_to_string(&state_path).unwrap();
    write_by_rename(&zone_path, &zone_text(&base_zone, 0));
    write_by_rename(&state_path, &state_text(&base_state, 0));
    let server = TestServer::start(&dir.path().join("zones"), &state_path, &[]);
    let addr = server.dns;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stop, failures, answered) = (stop.clone(), failures.clone(), answered.clone());
        clients.push(std::thread::spawn(move || {
            let mut probe = Query::new("probe.yingzi.com", 15);
            let mut soa = Query::new("yingzi.com", 6);
            probe.tcp = c == 3;
            soa.tcp = c == 3;
            let mut last = (0, 0);
            let mut last_serial = 0;
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match probe.send(addr) {
                    Ok(r) => match observe(&r) {
                        Some(p) => {
                            if p < last || p.0 < last.0 || p.1 < last.1 {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("client {c}: went back from {last:?} to {p:?}"));
                            }
                            last = p;
                            seen.push(p);
                        }
                        None => failures
                            .lock()
                            .unwrap()
                            .push(format!("client {c}: answer without a version pair")),
                    },
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("client {c}: probe failed: {e}")),
                }
                match soa.send(addr) {
                    Ok(r) => match crate::dnsclient::soa_serial(&r) {
                        Some(s) if s >= last_serial => last_serial = s,
                        Some(s) => failures
                            .lock()
                            .unwrap()
                            .push(format!("client {c}: serial went back {last_serial} -> {s}")),
                        None => failures
                            .lock()
                            .unwrap()
                            .push(format!("client {c}: SOA answer without SOA")),
                    },
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("client {c}: SOA query failed: {e}")),
                }
                answered.fetch_add(2, Ordering::Relaxed);
            }
            seen
        }));
    }

    let started = Instant::now();
    for v in 1..=CHANGES {
        write_by_rename(&zone_path, &zone_text(&base_zone, v));
        write_by_rename(&state_path, &state_text(&base_state, v));
        // Wait until the new pair is live before the next change.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = Query::new("probe.yingzi.com", 15).send(addr).unwrap();
            if observe(&r) == Some((v, v)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {v} not published within 10 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.join().unwrap());
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Published snapshots are (v, v) or, when the two writes were picked up
    // separately, (v, v-1). Anything else is a mix.
    for &(z, s) in &seen {
        assert!(
            z == s || z == s + 1,
            "answer mixed zone version {z} with state version {s}"
        );
    }
    let n = answered.load(Ordering::Relaxed);
    assert!(n > 1000, "clients made only {n} queries");
    let versions: std::collections::BTreeSet<u32> = seen.iter().map(|p| p.0).collect();
    assert!(
        versions.len() > 50,
        "clients saw only {} zone versions",
        versions.len()
    );
    eprintln!(
        "{n} queries during {CHANGES} changes in {:?}",
        started.elapsed()
    );
}

/// Reading the watched files (as the server itself does) is not a change:
/// an idle server publishes nothing and its revision stays put.
#[test]
fn reads_do_not_trigger_reloads() {
    let dir = shipped_copy();
    let state = dir.path().join("state.yaml");
    let server = TestServer::start(&dir.path().join("zones"), &state, &[]);
    for _ in 0..5 {
        let _ = std::fs::read_to_string(&state).unwrap();
        let _ = std::fs::read_to_string(dir.path().join("zones/yingzi.com.zone")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.contains("vdh_edge_snapshot_swaps_total 1\n"),
        "{metrics}"
    );
    let (_, ready) = server.admin_get("/readyz");
    assert!(ready.contains("\"revision\":1"), "{ready}");
}
