//! Starts real etcd members (Debian's etcd-server) on loopback ports, with
//! data on /dev/shm (etcd 3.4 cannot skip fsync; on disk, elections flap on
//! two busy cores).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::knot::which;

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// One etcd member or a cluster of three.
pub struct Etcd {
    members: Vec<Member>,
    cluster: String,
}

/// A free TCP port outside the kernel's ephemeral range (32768-60999), so a
/// member stopped for a while gets its port back: ports picked with port 0
/// elsewhere in the suite never land there.
pub fn stable_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 20000 + (std::process::id() % 1000) * 10;
    loop {
        let p = (start + NEXT.fetch_add(1, Ordering::Relaxed) % 12000) as u16;
        let p = if p >= 32000 { p - 12000 } else { p };
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn etcd_bin() -> PathBuf {
    which("etcd").expect("etcd not found: install Debian's etcd-server (the test command does)")
}

impl Etcd {
    pub fn single() -> Etcd {
        Self::start(1)
    }

    pub fn cluster3() -> Etcd {
        Self::start(3)
    }

    fn start(n: usize) -> Etcd {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("n{i}"),
                client: stable_port(),
                peer: stable_port(),
                data: PathBuf::from(format!(
                    "/dev/shm/vdh-edge-test-{}-{}",
                    std::process::id(),
                    stable_port()
                )),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut e = Etcd { members, cluster };
        for i in 0..n {
            e.start_member(i);
        }
        e.wait_healthy();
        e
    }

    fn start_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        let child = Command::new(etcd_bin())
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &self.cluster,
                "--initial-cluster-token",
                &format!("t{}", self.members[0].peer),
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Client URLs, comma-separated, for `--etcd`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of one member.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    /// Runs etcdctl against the running members; panics on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_raw(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ctl_raw(&self, args: &[&str]) -> std::process::Output {
        let live: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .map(|i| self.endpoint(i))
            .collect();
        Command::new(which("etcdctl").expect("etcdctl not found: install Debian's etcd-client"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &live.join(","), "--command-timeout", "10s"])
            .args(args)
            .output()
            .unwrap()
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit",
            "1",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }

    /// Waits until every running member answers.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.ctl_raw(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the current leader.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.ctl_raw(&["endpoint", "status", "-w", "json"]);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                for s in v.as_array().into_iter().flatten() {
                    let st = &s["Status"];
                    if st["leader"] == st["header"]["member_id"]
                        && st["leader"].as_u64().unwrap_or(0) != 0
                    {
                        let ep = s["Endpoint"].as_str().unwrap_or("");
                        if let Some(i) = (0..self.members.len()).find(|&i| self.endpoint(i) == ep) {
                            return i;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id of a running member.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts a stopped member again on its data.
    pub fn restart(&mut self, i: usize) {
        if self.members[i].child.is_none() {
            self.start_member(i);
        }
    }

    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.restart(i);
        }
        self.wait_healthy();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill_all();
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.data);
        }
    }
}
