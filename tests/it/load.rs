//! Load for the tests that change what edges serve: DNS and HTTP queries
//! on every live edge until stopped, each checked.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, http_get};

/// DNS and HTTP queries on every live edge until stopped: every one must
/// be answered, DNS with prod's addresses, HTTP with one document per
/// (edge, revision).
pub struct Load {
    stop: Arc<AtomicBool>,
    dead: Arc<Mutex<BTreeSet<std::net::SocketAddr>>>,
    failures: Arc<Mutex<Vec<String>>>,
    queries: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(edges: &[Option<TestServer>]) -> Load {
        let targets: Vec<_> = edges.iter().flatten().map(|s| (s.dns, s.http)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(Mutex::new(BTreeSet::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let queries = Arc::new(AtomicU64::new(0));
        let (st, de, fa, qu) = (
            stop.clone(),
            dead.clone(),
            failures.clone(),
            queries.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut seen: HashMap<(std::net::SocketAddr, u64), String> = HashMap::new();
            let q = Query::new("vdh-api.yingzi.com.", 1);
            while !st.load(Ordering::Relaxed) {
                for &(dns, http) in &targets {
                    if de.lock().unwrap().contains(&http) {
                        continue;
                    }
                    match q.send(dns) {
                        Ok(r) => {
                            let mut a = answer_addrs(&r);
                            a.sort();
                            if a != ["192.0.2.10", "192.0.2.11"] {
                                fa.lock().unwrap().push(format!("DNS {dns}: {a:?}"));
                            }
                        }
                        Err(e) => fa.lock().unwrap().push(format!("DNS {dns}: {e}")),
                    }
                    let (status, body) = http_get(
                        http,
                        "/v1/config/vdh-api?sdk_version=0.9.0&client_id=load-1",
                    );
                    let rev = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|d| d["revision"].as_u64());
                    match rev {
                        Some(rev) if status == 200 => {
                            let prev = seen.entry((http, rev)).or_insert_with(|| body.clone());
                            if *prev != body {
                                fa.lock()
                                    .unwrap()
                                    .push(format!("HTTP {http}: two documents at revision {rev}"));
                            }
                        }
                        _ => fa
                            .lock()
                            .unwrap()
                            .push(format!("HTTP {http}: {status} {body}")),
                    }
                    qu.fetch_add(2, Ordering::Relaxed);
                }
            }
        });
        Load {
            stop,
            dead,
            failures,
            queries,
            thread: Some(thread),
        }
    }

    /// Stops sending to `edge` (before it is killed).
    pub fn forget(&self, edge: &TestServer) {
        self.dead.lock().unwrap().insert(edge.http);
        std::thread::sleep(Duration::from_millis(200));
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let f = self.failures.lock().unwrap();
        let n = self.queries.load(Ordering::Relaxed);
        eprintln!("load: {n} queries, {} failed", f.len());
        assert!(n > 500, "the load ran: {n} queries");
        assert!(
            f.is_empty(),
            "{} of {n} queries failed: {:?}",
            f.len(),
            &f[..f.len().min(10)]
        );
    }
}
