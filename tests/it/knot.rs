//! Starts Knot DNS (knotd from Debian's `knot` package) on a free loopback
//! port with its default behaviour, serving a folder of `<origin>.zone` files.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::dnsclient::Query;

pub struct Knot {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Knot {
    pub fn start(zones: &Path) -> Knot {
        let knotd = which("knotd")
            .expect("knotd not found: install Debian's knot package (the test command does)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut origins = Vec::new();
        for e in std::fs::read_dir(zones).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "zone") {
                origins.push(p.file_stem().unwrap().to_string_lossy().to_string());
            }
        }
        let mut conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             database:\n    storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             template:\n  - id: default\n    storage: \"{z}\"\n    zonefile-sync: -1\n    journal-content: none\n\
             zone:\n",
            d = dir.path().display(),
            z = zones.canonicalize().unwrap().display()
        );
        for o in &origins {
            conf.push_str(&format!("  - domain: {o}.\n    file: \"{o}.zone\"\n"));
        }
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start knotd");
        let knot = Knot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        // Wait until every zone answers its SOA authoritatively.
        let deadline = Instant::now() + Duration::from_secs(20);
        for o in &origins {
            loop {
                let ok = Query::new(o, 6)
                    .send(knot.addr)
                    .map(|r| r[2] & 0x04 != 0 && r[3] & 0xf == 0)
                    .unwrap_or(false);
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "knotd did not load zone {o}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        knot
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds a program in PATH or the sbin folders.
pub fn which(prog: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}
