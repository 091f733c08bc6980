//! Kubernetes ConfigMap updates (issue 10): the mounted files are symlinks
//! through `..data`, and an update points `..data` at a new folder. The
//! watcher used to miss these (the zones folder at once, the state file
//! from the second update on) and the edge kept serving old data.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, repo};

/// Publishes `files` in `dir` as kubelet does: a new `..<version>` folder,
/// then the `..data` symlink swapped by rename, then the old folder removed.
fn publish(dir: &Path, version: &str, files: &[(&str, String)]) {
    let new = dir.join(format!("..{version}"));
    std::fs::create_dir(&new).unwrap();
    for (name, text) in files {
        std::fs::write(new.join(name), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("..") && name != "..data" && name != format!("..{version}") {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[test]
fn configmap_updates_of_zones_and_state_are_published() {
    let root = tempfile::tempdir().unwrap();
    let (zones, state) = (root.path().join("zones"), root.path().join("state"));
    std::fs::create_dir(&zones).unwrap();
    std::fs::create_dir(&state).unwrap();
    let zone = std::fs::read_to_string(repo().join("zones/yingzi.com.zone")).unwrap();
    let base = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let with_addr = |a: &str| {
        base.replace(
            "addresses: [192.0.2.10, 192.0.2.11]",
            &format!("addresses: [{a}]"),
        )
    };
    publish(&zones, "z1", &[("yingzi.com.zone", zone.clone())]);
    publish(&state, "s1", &[("state.yaml", base.clone())]);
    let s = TestServer::start(&zones, &state.join("state.yaml"), &[]);
    let api = || answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(s.dns).unwrap());
    let www = || answer_addrs(&Query::new("www.yingzi.com", 1).send(s.dns).unwrap());
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} was not published"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(api(), vec!["192.0.2.10", "192.0.2.11"]);
    for (version, addr) in [
        ("s2", "192.0.2.21"),
        ("s3", "192.0.2.22"),
        ("s4", "192.0.2.23"),
    ] {
        publish(&state, version, &[("state.yaml", with_addr(addr))]);
        wait(&format!("state update {version}"), &|| api() == vec![addr]);
    }
    assert_eq!(www(), vec!["192.0.2.80"]);
    for (version, addr) in [("z2", "192.0.2.81"), ("z3", "192.0.2.82")] {
        publish(
            &zones,
            version,
            &[("yingzi.com.zone", zone.replace("192.0.2.80", addr))],
        );
        wait(&format!("zone update {version}"), &|| www() == vec![addr]);
    }
}
