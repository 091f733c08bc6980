//! The Debian package and the systemd unit, as an operator meets them:
//! `script/package` builds the .deb (from the test's own binary, so no
//! release build), `dpkg -i` installs it on this machine, the installed
//! binary serves the installed example and answers DNS, `man -l` renders
//! the page, the bash completion loads and completes, the installed unit
//! passes `systemd-analyze verify` and scores 2.0 or lower in
//! `systemd-analyze security`; `dpkg --purge` removes it all. And the
//! readiness notification `Type=notify` waits for: READY=1 only once a
//! snapshot is live, STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{BIN, TestServer, command, command_for, repo};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The exposure score `systemd-analyze security --offline=true` gives a unit.
fn security_score(unit: &Path) -> f64 {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall score:\n{out}"));
    let score = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score: {line}"));
    eprintln!("{}: {line}", unit.display());
    score
}

#[test]
fn the_unit_in_the_repository_is_hardened() {
    let score = security_score(&repo().join("deploy/vdh-edge.service"));
    assert!(score <= 2.0, "exposure {score} > 2.0");
}

#[test]
fn the_package_installs_serves_documents_completes_and_purges() {
    // dpkg is one database: nothing else in the suite installs packages.
    let _exclusive = crate::harness::exclusive();
    let out = tempfile::tempdir().unwrap();
    let deb = run(Command::new(repo().join("script/package"))
        .args(["--binary", BIN, "--out"])
        .arg(out.path()));
    let deb = deb.trim();
    let listing = run(Command::new("dpkg-deb").args(["-c", deb]));
    for path in [
        "./usr/bin/vdh-edge",
        "./usr/share/man/man1/vdh-edge.1.gz",
        "./usr/share/man/man1/vdh-edge-serve.1.gz",
        "./usr/share/bash-completion/completions/vdh-edge",
        "./usr/share/zsh/vendor-completions/_vdh-edge",
        "./usr/share/fish/vendor_completions.d/vdh-edge.fish",
        "./lib/systemd/system/vdh-edge.service",
        "./etc/vdh-edge/vdh-edge.env",
        "./etc/vdh-edge/state.yaml",
        "./etc/vdh-edge/zones/yingzi.com.zone",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }
    let control = run(Command::new("dpkg-deb").args(["-f", deb, "Package", "Depends"]));
    assert!(control.contains("Package: vdh-edge"), "{control}");
    let info = run(Command::new("dpkg-deb").args(["-I", deb, "conffiles"]));
    assert!(info.contains("/etc/vdh-edge/vdh-edge.env"), "{info}");

    run(Command::new("dpkg").args(["-i", deb]));
    let purge = Purge;
    let bin = Path::new("/usr/bin/vdh-edge");
    let version = run(command_for(bin).arg("--version"));
    assert!(version.contains("(commit "), "{version}");
    assert!(run(Command::new("id").arg("vdh-edge")).contains("vdh-edge"));
    let cache = std::fs::metadata("/var/lib/vdh-edge").expect("the cache folder");
    assert!(cache.is_dir());

    // The installed binary serves the installed example.
    let args: Vec<String> = [
        "--state",
        "/etc/vdh-edge/state.yaml",
        "--zones",
        "/etc/vdh-edge/zones",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let edge = TestServer::start_cmd(command_for(bin), &args, "first snapshot live");
    let addrs = answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(edge.dns).unwrap());
    assert_eq!(addrs, ["192.0.2.10", "192.0.2.11"]);
    drop(edge);

    // The packaged environment file: VDH_EDGE_ETCD empty is file mode.
    let mut check = command_for(bin);
    check.arg("check").current_dir("/");
    for line in std::fs::read_to_string("/etc/vdh-edge/vdh-edge.env")
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        if let Some((k, v)) = line.split_once('=') {
            check.env(k.trim(), v.trim());
        }
    }
    check.env("VDH_EDGE_STATE", "/etc/vdh-edge/state.yaml");
    check.env("VDH_EDGE_ZONES", "/etc/vdh-edge/zones");
    assert!(run(&mut check).starts_with("ok:"));

    let man = run(Command::new("man")
        .args(["-l", "/usr/share/man/man1/vdh-edge-serve.1.gz"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100"));
    for want in [
        "NAME",
        "SYNOPSIS",
        "--etcd",
        "VDH_EDGE_ETCD",
        "--admin-token-file",
    ] {
        assert!(man.contains(want), "man page lacks {want}:\n{man}");
    }
    let completed = run(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/vdh-edge \
         && COMP_WORDS=(vdh-edge sch) && COMP_CWORD=1 && _vdh__edge vdh-edge sch vdh-edge \
         && echo \"${COMPREPLY[@]}\"",
    ]));
    assert!(
        completed.contains("scheme") && completed.contains("schedule"),
        "{completed}"
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/vdh-edge.service"])
        .output()
        .unwrap();
    assert!(verify.status.success());
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !said.contains("vdh-edge.service"),
        "systemd-analyze verify:\n{said}"
    );
    assert!(security_score(Path::new("/lib/systemd/system/vdh-edge.service")) <= 2.0);

    drop(purge);
    assert!(!bin.exists(), "purge left the binary");
    assert!(!Path::new("/var/lib/vdh-edge").exists());
    assert!(!Path::new("/etc/vdh-edge/vdh-edge.env").exists());
}

/// Purges the package when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let out = Command::new("dpkg")
            .args(["--purge", "vdh-edge"])
            .output()
            .unwrap();
        assert!(
            out.status.success() || std::thread::panicking(),
            "dpkg --purge: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Waits for one notification datagram.
fn next_notification(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn readiness_is_notified_once_a_snapshot_is_live_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // etcd mode with nothing at the endpoint and no cache: not ready, so
    // no READY=1.
    let path = dir.path().join("notify-etcd");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut cmd = command();
    cmd.env("NOTIFY_SOCKET", &path);
    let unreachable = crate::etcd_harness::stable_port();
    let etcd = format!("http://127.0.0.1:{unreachable}");
    let args: Vec<String> = [
        "--etcd",
        &etcd,
        "--zones",
        repo().join("zones").to_str().unwrap(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let waiting = TestServer::start_cmd(cmd, &args, "listening");
    assert_eq!(next_notification(&sock, Duration::from_secs(4)), None);
    drop(waiting);

    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut cmd = command();
    cmd.env("NOTIFY_SOCKET", &path);
    let args: Vec<String> = [
        "--zones",
        repo().join("zones").to_str().unwrap(),
        "--state",
        repo().join("deploy/state.yaml").to_str().unwrap(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let mut edge = TestServer::start_cmd(cmd, &args, "first snapshot live");
    let ready = next_notification(&sock, Duration::from_secs(5)).expect("READY=1");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains("STATUS=serving revision 1 from file"),
        "{ready}"
    );
    // Ready means answering.
    let addrs = answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(edge.dns).unwrap());
    assert!(!addrs.is_empty());
    edge.signal("TERM");
    let stopping = next_notification(&sock, Duration::from_secs(5)).expect("STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    while edge.alive() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Kubernetes example keeps what it promises: the restricted
/// securityContext, a PodDisruptionBudget, topology spread, probes on the
/// admin port, `externalTrafficPolicy: Local` on the client Service, a
/// ServiceMonitor, and etcd settings from the environment.
#[test]
fn the_kubernetes_example_is_restricted_and_highly_available() {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d).expect("valid YAML"))
        .collect();
    let kind =
        |k: &str| -> Vec<&serde_json::Value> { docs.iter().filter(|d| d["kind"] == k).collect() };
    let deploy = kind("Deployment")[0];
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["topologySpreadConstraints"].as_array().unwrap().len() >= 2);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_BIND_SERVICE"])
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for v in [
        "VDH_EDGE_ETCD",
        "VDH_EDGE_PREFIX",
        "VDH_EDGE_ETCD_CA",
        "VDH_EDGE_ETCD_PASSWORD",
    ] {
        assert!(env.contains(&v), "{v} not set");
    }
    assert!(
        !c["args"].to_string().contains("--etcd"),
        "etcd settings belong in the environment"
    );
    assert_eq!(kind("PodDisruptionBudget").len(), 1);
    assert_eq!(kind("ServiceMonitor").len(), 1);
    let lb: Vec<_> = kind("Service")
        .into_iter()
        .filter(|s| s["spec"]["type"] == "LoadBalancer")
        .collect();
    assert_eq!(lb[0]["spec"]["externalTrafficPolicy"], "Local");
    // The variables the manifest sets are ones the binary reads.
    let man = run(command().args(["serve", "--help"]));
    for v in env.iter().filter(|v| v.starts_with("VDH_EDGE_")) {
        assert!(man.contains(v), "serve --help does not know {v}");
    }
}
