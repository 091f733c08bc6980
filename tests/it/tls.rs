//! HTTPS on the public listener, DNS over TLS and DNS over HTTPS: real
//! clients (curl, kdig) trusting a CA the test makes; certificate reload by
//! rename while an HTTP/2 long-poll is held; a broken PEM keeps the old
//! certificate; the encrypted DNS answers equal the TCP answers on the
//! differential corpus.

use std::path::Path;
use std::time::Duration;

use crate::certs::{TestCa, curl, served_cn};
use crate::harness::{TestServer, command, repo, shipped_copy, write_by_rename};

const DOC: &str = "/v1/config/vdh-api?sdk_version=1.0.0";

fn tls_args(cert: &Path, key: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    a.extend(extra.iter().map(ToString::to_string));
    a
}

#[test]
fn https_over_http1_and_http2_with_reload_by_rename() {
    let ca = TestCa::new();
    let dir = shipped_copy();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    ca.install("first", &cert, &key);
    let state = dir.path().join("state.yaml");
    let mut args = vec![
        "--zones".to_string(),
        dir.path().join("zones").display().to_string(),
        "--state".into(),
        state.display().to_string(),
    ];
    args.extend(tls_args(&cert, &key, &[]));
    let s = TestServer::start_with(&args, "first snapshot live");
    let url = format!("https://127.0.0.1:{}{DOC}", s.http.port());
    let cafile = ca.ca_file.to_str().unwrap();

    // HTTP/1.1 and HTTP/2 (ALPN) both get the document.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (rc, out, err) = curl(&[
            "--cacert",
            cafile,
            flag,
            "-w",
            "\n%{http_version} %{http_code}",
            &url,
        ]);
        assert_eq!(rc, 0, "{err}");
        assert!(out.ends_with(&format!("\n{version} 200")), "{flag}: {out}");
        assert!(out.contains("\"api_base_url\""), "{out}");
    }
    // Plain HTTP on the TLS port is refused, not served in the clear.
    let (rc, _, _) = curl(&[&format!("http://127.0.0.1:{}{DOC}", s.http.port())]);
    assert_ne!(rc, 0);
    assert_eq!(served_cn(&ca.ca_file, &url), "first");

    // Hold a long-poll over HTTP/2 across a certificate change.
    let (_, head, _) = curl(&[
        "--cacert",
        cafile,
        "--http2",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &url,
    ]);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("etag header")
        .trim()
        .to_string();
    let poll = {
        let (cafile, url, etag) = (cafile.to_string(), url.clone(), etag.clone());
        std::thread::spawn(move || {
            curl(&[
                "--cacert",
                &cafile,
                "--http2",
                "-H",
                &format!("If-None-Match: {etag}"),
                "-w",
                "\n%{http_version} %{http_code}",
                &format!("{url}&wait=30"),
            ])
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    ca.install("second", &cert, &key);
    assert!(
        s.wait_log_count("TLS certificate reloaded", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    assert_eq!(
        served_cn(&ca.ca_file, &url),
        "second",
        "new connections get the new certificate"
    );
    assert!(!poll.is_finished(), "the held poll survives the reload");
    let text = std::fs::read_to_string(&state)
        .unwrap()
        .replace("token_epoch: 1\nservices", "token_epoch: 7\nservices");
    write_by_rename(&state, &text);
    let (rc, out, err) = poll.join().unwrap();
    assert_eq!(rc, 0, "{err}");
    assert!(out.ends_with("\n2 200"), "{out}");
    assert!(out.contains("\"epoch\":7"), "{out}");

    // A broken PEM is named and refused; the last good certificate serves.
    write_by_rename(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    assert!(
        s.wait_log_count("not reloaded", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let log = s.log();
    let line = log.lines().find(|l| l.contains("not reloaded")).unwrap();
    assert!(line.contains(&cert.display().to_string()), "{line}");
    assert_eq!(served_cn(&ca.ca_file, &url), "second");
    let (_, m) = s.admin_get("/metrics");
    assert!(
        m.contains("vdh_edge_tls_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("vdh_edge_tls_reloads_total{result=\"ok\"}"),
        "{m}"
    );

    // SIGHUP reloads at once (the file is fixed meanwhile).
    ca.install("third", &cert, &key);
    s.signal("HUP");
    assert!(s.wait_log_count("TLS certificate reloaded", 2, Duration::from_secs(5)));
    assert_eq!(served_cn(&ca.ca_file, &url), "third");
}

#[test]
fn a_bad_certificate_at_start_is_named_and_exits_1() {
    let ca = TestCa::new();
    let dir = shipped_copy();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    ca.install("x", &cert, &key);
    let (_, other_key) = ca.leaf("y");
    std::fs::write(&key, other_key).unwrap();
    let out = command()
        .arg("serve")
        .arg("--zones")
        .arg(dir.path().join("zones"))
        .arg("--state")
        .arg(dir.path().join("state.yaml"))
        .args(tls_args(&cert, &key, &[]))
        .args([
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("does not match"), "{err}");
}

/// The kdig arguments of one corpus line, or None for what kdig cannot
/// send (meta types, odd classes, a zero buffer).
fn kdig_query(line: &str) -> Option<Vec<String>> {
    let p: Vec<&str> = line.split_whitespace().collect();
    let skip = [
        "AXFR", "IXFR", "OPT", "TSIG", "TKEY", "MAILA", "MAILB", "TYPE0",
    ];
    if skip.contains(&p[1]) || p.contains(&"bufsize=0") {
        return None;
    }
    let mut q = vec![p[0].to_string(), p[1].to_string()];
    let mut rd = false;
    for o in &p[2..] {
        match *o {
            "noedns" => q.push("+noedns".into()),
            "do" => q.push("+dnssec".into()),
            "rd" => rd = true,
            "tcp" => {}
            "class=CH" | "class=ANY" => q.extend(["-c".into(), o[6..].to_string()]),
            o if o.starts_with("class=") => return None,
            o if o.starts_with("bufsize=") => q.push(format!("+bufsize={}", &o[8..])),
            o => panic!("unknown corpus option {o}"),
        }
    }
    if !p
        .iter()
        .any(|o| *o == "noedns" || o.starts_with("bufsize="))
    {
        q.push("+bufsize=1232".into());
    }
    q.push(if rd { "+rec" } else { "+norec" }.into());
    Some(q)
}

/// Runs kdig over every query; returns one normalised answer per query
/// (transport lines, ids, sizes and times removed).
fn kdig_all(transport: &[String], queries: &[Vec<String>]) -> Vec<String> {
    let out = std::process::Command::new("kdig")
        .args(transport)
        .args(queries.iter().flatten())
        .output()
        .expect("kdig runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut answers: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(";; ->>HEADER") {
            let id_free = line.split("id:").next().unwrap().to_string();
            answers.push(id_free);
            continue;
        }
        let noise = [
            ";; Received",
            ";; Time",
            ";; From",
            ";; TLS session",
            ";; HTTP session",
        ];
        if line.trim().is_empty() || noise.iter().any(|n| line.starts_with(n)) {
            continue;
        }
        if let Some(a) = answers.last_mut() {
            a.push('\n');
            a.push_str(line);
        }
    }
    answers
}

#[test]
fn dns_over_tls_and_https_answer_as_tcp_on_the_corpus() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    ca.install("dns", &cert, &key);
    let fixtures = repo().join("tests/fixtures/diff");
    let state = tmp.path().join("state.yaml");
    std::fs::write(&state, "{}\n").unwrap();
    let mut args = vec![
        "--zones".to_string(),
        fixtures.join("zones").display().to_string(),
        "--state".into(),
        state.display().to_string(),
    ];
    args.extend(tls_args(
        &cert,
        &key,
        &["--dot", "127.0.0.1:0", "--doh", "127.0.0.1:0"],
    ));
    let s = TestServer::start_with(&args, "first snapshot live");
    let queries: Vec<Vec<String>> = std::fs::read_to_string(fixtures.join("queries.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(kdig_query)
        .collect();
    assert!(queries.len() >= 300, "{}", queries.len());
    let at = |proto: &str| {
        let a = s.listening[proto];
        vec![format!("@{}", a.ip()), "-p".into(), a.port().to_string()]
    };
    let tls = |proto: &str, extra: &[&str]| {
        let mut t = at(proto);
        t.extend(extra.iter().map(ToString::to_string));
        // Padding (on by default over TLS) needs EDNS: off, so +noedns
        // queries are sent as they are over TCP.
        t.extend([
            "+nopadding".to_string(),
            format!("+tls-ca={}", ca.ca_file.display()),
            "+tls-hostname=localhost".into(),
        ]);
        t
    };
    let mut tcp = at("tcp");
    tcp.push("+tcp".into());
    let want = kdig_all(&tcp, &queries);
    assert_eq!(want.len(), queries.len(), "every query answered over TCP");
    for (name, transport) in [
        ("DoT", tls("dot", &[])),
        ("DoH POST", tls("doh", &["+https"])),
        ("DoH GET", tls("doh", &["+https-get"])),
    ] {
        let got = kdig_all(&transport, &queries);
        assert_eq!(got.len(), queries.len(), "{name}: every query answered");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w, g, "{name}: {:?}", queries[i]);
        }
    }
    // With kdig's default padding over TLS the answers are padded to
    // 468-byte blocks (RFC 7830 and 8467); over TCP, unpadded.
    for (name, transport) in [
        ("DoT", &at("dot")),
        ("DoH", &{
            let mut t = at("doh");
            t.push("+https".into());
            t
        }),
    ] {
        let out = std::process::Command::new("kdig")
            .args(transport)
            .args([
                format!("+tls-ca={}", ca.ca_file.display()),
                "+tls-hostname=localhost".into(),
                "example.com".into(),
                "SOA".into(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let size: usize = text
            .lines()
            .find_map(|l| l.strip_prefix(";; Received "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert_eq!(size % 468, 0, "{name}: {text}");
        assert!(text.contains("PADDING"), "{name}: {text}");
    }
    let (_, m) = s.admin_get("/metrics");
    let n = queries.len() + 1;
    assert!(
        m.contains(&format!(
            "vdh_edge_dns_encrypted_queries_total{{transport=\"dot\"}} {n}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "vdh_edge_dns_encrypted_queries_total{{transport=\"doh\"}} {}",
            2 * n - 1
        )),
        "{m}"
    );

    // DoH errors: no dns parameter, a wrong media type.
    let cafile = ca.ca_file.to_str().unwrap();
    let doh = format!("https://127.0.0.1:{}/dns-query", s.listening["doh"].port());
    let (_, out, _) = curl(&["--cacert", cafile, "-w", "\n%{http_code}", &doh]);
    assert!(
        out.ends_with("\n400") && out.contains("\"parameter\":\"dns\""),
        "{out}"
    );
    let (_, out, _) = curl(&["--cacert", cafile, "-w", "\n%{http_code}", "-d", "x", &doh]);
    assert!(out.ends_with("\n415"), "{out}");
}

/// A Kubernetes Secret mount: `tls.crt -> ..data/tls.crt`, `..data ->
/// ..v1`; an update writes `..v2` and swaps `..data` by rename. The new
/// certificate is served.
#[test]
fn certificate_follows_a_secret_symlink_swap() {
    use std::os::unix::fs::symlink;
    let ca = TestCa::new();
    let dir = shipped_copy();
    let secret = dir.path().join("secret");
    let v1 = secret.join("..v1");
    std::fs::create_dir_all(&v1).unwrap();
    ca.install("one", &v1.join("tls.crt"), &v1.join("tls.key"));
    symlink("..v1", secret.join("..data")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let mut args = vec![
        "--zones".to_string(),
        dir.path().join("zones").display().to_string(),
        "--state".into(),
        dir.path().join("state.yaml").display().to_string(),
    ];
    args.extend(tls_args(
        &secret.join("tls.crt"),
        &secret.join("tls.key"),
        &[],
    ));
    let s = TestServer::start_with(&args, "first snapshot live");
    let url = format!("https://127.0.0.1:{}/healthz", s.http.port());
    assert_eq!(served_cn(&ca.ca_file, &url), "one");
    let v2 = secret.join("..v2");
    std::fs::create_dir_all(&v2).unwrap();
    ca.install("two", &v2.join("tls.crt"), &v2.join("tls.key"));
    symlink("..v2", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    assert!(
        s.wait_log_count("TLS certificate reloaded", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    assert_eq!(served_cn(&ca.ca_file, &url), "two");
    // No failed reload on the way (both files changed in one swap).
    assert!(!s.log().contains("not reloaded"), "{}", s.log());
}

/// `--admin-tls`: the admin listener speaks TLS, the edge registers it as
/// `https://`, and `status --admin-ca` gathers its census over TLS (and
/// without the CA cannot).
#[test]
fn status_reads_the_census_from_a_tls_admin_listener() {
    let etcd = crate::etcd_harness::Etcd::single();
    let ep = etcd.endpoints();
    let ca = TestCa::new();
    let dir = shipped_copy();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    ca.install("admin", &cert, &key);
    let cli = |args: &[&str]| {
        let out = command()
            .current_dir(repo())
            .args(args)
            .args(["--etcd", &ep, "--prefix", "/atls"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&[
        "apply",
        dir.path().join("state.yaml").to_str().unwrap(),
        "--yes",
    ]);
    let mut args = vec![
        "--zones".to_string(),
        dir.path().join("zones").display().to_string(),
        "--etcd".into(),
        ep.clone(),
        "--prefix".into(),
        "/atls".into(),
        "--admin-tls".into(),
    ];
    args.extend(tls_args(&cert, &key, &[]));
    let s = TestServer::start_with(&args, "first snapshot live");
    let https = format!("https://127.0.0.1:{}", s.admin.port());
    let (rc, out, err) = curl(&[
        "--cacert",
        ca.ca_file.to_str().unwrap(),
        &format!("{https}/readyz"),
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("\"revision\""), "{out}");
    let url = format!(
        "https://127.0.0.1:{}/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1",
        s.http.port()
    );
    assert_eq!(curl(&["--cacert", ca.ca_file.to_str().unwrap(), &url]).0, 0);
    let ca_file = ca.ca_file.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st: serde_json::Value =
            serde_json::from_str(&cli(&["status", "--json", "--admin-ca", &ca_file])).unwrap();
        if st["census_edges"] == 1 {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no census over TLS: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(st["edges"][0]["admin"], https);
    assert!(
        st["census"]["hour"]["sdk_version"]["1.0.0"]
            .as_f64()
            .unwrap()
            >= 1.0,
        "{st}"
    );
    let without: serde_json::Value = serde_json::from_str(&cli(&["status", "--json"])).unwrap();
    assert_eq!(without["census_edges"], 0);
}
