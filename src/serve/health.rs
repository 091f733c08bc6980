//! Environment health checks: every edge probes every environment that
//! declares `health:` (an HTTP GET every `interval_s`), turns the results
//! into an observation (down after `unhealthy_after` bad probes in a row,
//! up again after `healthy_after` good ones), and publishes it in its
//! registry record; the verdict is the majority of the live edges'
//! observations (`verdicts`), so one flaky edge cannot fail an environment
//! and a dead edge's vote leaves with its lease. Without etcd the edge's
//! own observation is the verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::routing::Health;
use crate::etcd::EtcdConfig;
use crate::shared::{Shared, Verdict};
use crate::source::StateEvent;

/// One probe: true when the answer's status is the expected one in time.
async fn probe(h: &Health, source: Option<std::net::IpAddr>) -> bool {
    http_status(&h.addr, &h.path, source, h.timeout).await == Some(h.expect_status)
}

/// The status line's code of a plain-HTTP `GET path` at `addr`
/// (`host:port`), from `source` if given, within `timeout`; `None` when
/// there is no answer in time.
pub(crate) async fn http_status(
    addr: &str,
    path: &str,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> Option<u16> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: vdh-edge\r\n\r\n"
    );
    let attempt = async {
        let mut s = connect(addr, source).await?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let m = s.read(&mut head[n..]).await.ok()?;
            if m == 0 {
                break;
            }
            n += m;
        }
        let line = std::str::from_utf8(&head[..n]).ok()?;
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// Connects to `addr` (`host:port`), from `source` when given.
async fn connect(addr: &str, source: Option<std::net::IpAddr>) -> Option<tokio::net::TcpStream> {
    let Some(source) = source else {
        return tokio::net::TcpStream::connect(addr).await.ok();
    };
    let to = tokio::net::lookup_host(addr)
        .await
        .ok()?
        .find(|a| a.is_ipv4() == source.is_ipv4())?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .ok()?;
    socket.bind(std::net::SocketAddr::new(source, 0)).ok()?;
    socket.connect(to).await.ok()
}

/// Probes one environment until `stop`, reporting each change of this
/// edge's view to `shared`.
async fn watch_env(
    env: String,
    h: Health,
    source: Option<std::net::IpAddr>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let (mut good, mut bad) = (0u32, 0u32);
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let ok = probe(&h, source).await;
        if ok {
            good += 1;
            bad = 0;
        } else {
            bad += 1;
            good = 0;
        }
        let seen = shared
            .health
            .lock()
            .expect("not poisoned")
            .observed
            .get(&env)
            .copied();
        let now = match seen {
            // Until the first verdict of this edge: the first probe decides.
            None => Some(ok),
            Some(true) if bad >= h.unhealthy_after => Some(false),
            Some(false) if good >= h.healthy_after => Some(true),
            _ => None,
        };
        if let Some(up) = now
            && seen != Some(up)
        {
            if up {
                info!(environment = %env, url = %h.url, "health check: up");
            } else {
                warn!(environment = %env, url = %h.url, probes = bad, "health check: down");
            }
            shared.observe(&env, up);
        }
    }
}

/// Keeps one prober per checked environment of the live snapshot (started,
/// restarted on a changed check, stopped when gone), and, without etcd,
/// makes this edge's observations the verdicts.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut etcd: Option<(EtcdConfig, etcd_client::Client)>,
    reload: tokio::sync::mpsc::Sender<StateEvent>,
    source: Option<std::net::IpAddr>,
    shutdown: CancellationToken,
) {
    let mut running: BTreeMap<String, (Health, CancellationToken)> = BTreeMap::new();
    // What the reload loop was last told is down.
    let mut down_sent = BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let snap = shared.snapshot();
        let wanted: BTreeMap<String, Health> = snap
            .routing
            .environments
            .iter()
            .filter_map(|e| e.health.clone().map(|h| (e.name.clone(), h)))
            .collect();
        running.retain(|env, (h, stop)| {
            let keep = wanted.get(env) == Some(h);
            if !keep {
                stop.cancel();
                shared
                    .health
                    .lock()
                    .expect("not poisoned")
                    .observed
                    .remove(env);
            }
            keep
        });
        for (env, h) in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(env) {
                let stop = shutdown.child_token();
                let env = slot.key().clone();
                tokio::spawn(watch_env(
                    env,
                    h.clone(),
                    source,
                    shared.clone(),
                    stop.clone(),
                ));
                slot.insert((h, stop));
            }
        }
        // Nothing checked here: no verdict to compute, no etcd read. (An
        // environment is checked by every edge or by none: they all serve
        // the same state.)
        if running.is_empty() {
            if !shared
                .health
                .lock()
                .expect("not poisoned")
                .verdicts
                .is_empty()
            {
                shared.set_verdicts(BTreeMap::new());
            }
            tell_reload(&reload, &mut down_sent, BTreeSet::new()).await;
            continue;
        }
        let verdicts = match &mut etcd {
            None => {
                let observed = shared.health.lock().expect("not poisoned").observed.clone();
                observed
                    .into_iter()
                    .map(|(env, up)| (env, Verdict::from_votes(u32::from(up), u32::from(!up))))
                    .collect()
            }
            Some((cfg, client)) => match crate::etcd::registry::read_edges(client, cfg).await {
                Ok(edges) => verdicts(edges.iter().map(|e| &e.health)),
                Err(_) => continue,
            },
        };
        let down = verdicts
            .iter()
            .filter(|(_, v)| !v.up)
            .map(|(env, _)| env.clone())
            .collect();
        shared.set_verdicts(verdicts);
        tell_reload(&reload, &mut down_sent, down).await;
    }
}

/// Tells the reload loop which environments are down when that changed
/// (it then recompiles the live inputs with their clients failed over).
async fn tell_reload(
    reload: &tokio::sync::mpsc::Sender<StateEvent>,
    sent: &mut BTreeSet<String>,
    down: BTreeSet<String>,
) {
    if *sent != down && reload.send(StateEvent::Down(down.clone())).await.is_ok() {
        *sent = down;
    }
}

/// The verdict per environment from the edges' observations.
pub(crate) fn verdicts<'a>(
    observations: impl Iterator<Item = &'a BTreeMap<String, bool>>,
) -> BTreeMap<String, Verdict> {
    let mut votes: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for obs in observations {
        for (env, up) in obs {
            let v = votes.entry(env.clone()).or_default();
            if *up {
                v.0 += 1;
            } else {
                v.1 += 1;
            }
        }
    }
    votes
        .into_iter()
        .map(|(env, (u, d))| (env, Verdict::from_votes(u, d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_of_observers_decides() {
        let obs = |pairs: &[(&str, bool)]| -> BTreeMap<String, bool> {
            pairs.iter().map(|(e, u)| ((*e).to_string(), *u)).collect()
        };
        let edges = [
            obs(&[("a", false), ("b", true)]),
            obs(&[("a", false), ("b", false)]),
            obs(&[("a", true), ("b", true)]),
        ];
        let v = verdicts(edges.iter());
        assert!(!v["a"].up, "2 of 3 say down");
        assert!(v["b"].up, "1 of 3 says down");
        assert_eq!((v["a"].up_votes, v["a"].down_votes), (1, 2));
        // A tie keeps it up (fail open).
        let tie = [obs(&[("a", false)]), obs(&[("a", true)])];
        assert!(verdicts(tie.iter())["a"].up);
    }

    #[tokio::test]
    async fn a_change_observed_while_no_one_waits_still_wakes_the_registry() {
        let shared = Shared::new();
        // The registry is busy (writing, renewing its lease): nobody waits.
        shared.observe("prod-v1b", true);
        // Its next wait returns at once, not at its next periodic write.
        tokio::time::timeout(Duration::from_millis(100), shared.health_changed.notified())
            .await
            .expect("the change is not lost");
        assert_eq!(
            shared.health.lock().unwrap().observed.get("prod-v1b"),
            Some(&true)
        );
    }
}
