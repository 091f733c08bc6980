//! Signed documents (issue 13): the edge's detached JWS verified by an
//! independent verifier (`openssl pkeyutl`), key rotation through the key
//! file, `/v1/keys`, 304 without a signature, and `/v1/resolve` agreeing
//! with the document for every client.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::harness::{TestServer, command, http_request, repo, write_by_rename};

/// `vdh-edge keygen` into `dir/name`; returns the PEM and the public key
/// (PEM) as OpenSSL derives it.
fn keygen(dir: &Path, name: &str) -> (String, std::path::PathBuf) {
    let key = dir.join(name);
    let out = command().arg("keygen").arg(&key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = dir.join(format!("{name}.pub"));
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl reads the key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (std::fs::read_to_string(&key).unwrap(), public)
}

/// True when OpenSSL accepts `jws` (detached) over `body` with `public`.
fn openssl_verifies(dir: &Path, public: &Path, jws: &str, body: &[u8]) -> bool {
    let (header, sig) = jws.split_once("..").expect("detached compact JWS");
    let input = dir.join("input.bin");
    std::fs::write(&input, format!("{header}.{}", B64.encode(body))).unwrap();
    let sigf = dir.join("sig.bin");
    std::fs::write(&sigf, B64.decode(sig).unwrap()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(public)
        .arg("-in")
        .arg(&input)
        .arg("-sigfile")
        .arg(&sigf)
        .output()
        .unwrap();
    out.status.success()
}

/// The `kid` in a JWS header.
fn kid(jws: &str) -> String {
    let h: serde_json::Value =
        serde_json::from_slice(&B64.decode(jws.split("..").next().unwrap()).unwrap()).unwrap();
    assert_eq!(h["alg"], "EdDSA");
    h["kid"].as_str().unwrap().to_string()
}

const DOC: &str = "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-1";

#[test]
fn signatures_verify_independently_and_keys_rotate_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_pub) = keygen(dir.path(), "a.pem");
    let (b, b_pub) = keygen(dir.path(), "b.pem");
    let keys = dir.path().join("keys.pem");
    std::fs::write(&keys, &a).unwrap();
    let s = TestServer::start(
        &repo().join("zones"),
        &repo().join("deploy/state.yaml"),
        &[
            "--signing-key",
            keys.to_str().unwrap(),
            "--document-validity",
            "2d",
        ],
    );
    let r = http_request(s.http, "GET", DOC, &[]);
    assert_eq!(r.status, 200);
    let jws = r.header("x-jws-signature").expect("signed").to_string();
    assert!(
        openssl_verifies(dir.path(), &a_pub, &jws, r.body.as_bytes()),
        "OpenSSL verifies the edge's signature"
    );
    // One flipped byte, or another client's document: refused.
    let mut flipped = r.body.clone().into_bytes();
    flipped[10] ^= 1;
    assert!(!openssl_verifies(dir.path(), &a_pub, &jws, &flipped));
    let other = http_request(
        s.http,
        "GET",
        "/v1/config/vdh-api?sdk_version=1.0.0&client_id=c-2",
        &[],
    );
    assert!(!openssl_verifies(
        dir.path(),
        &a_pub,
        &jws,
        other.body.as_bytes()
    ));
    // The document is bound to its client and time.
    let d = r.json();
    assert_eq!(d["client_id"], "c-1");
    let issued = vdh_edge::parse_rfc3339(d["issued_at"].as_str().unwrap()).unwrap();
    let expires = vdh_edge::parse_rfc3339(d["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.duration_since(issued).unwrap(),
        Duration::from_secs(2 * 86_400)
    );
    assert!(issued <= std::time::SystemTime::now());
    // /v1/keys: the JWKS, with the key's RFC 7638 thumbprint as kid.
    let k = http_request(s.http, "GET", "/v1/keys", &[]);
    assert_eq!(k.header("content-type"), Some("application/jwk-set+json"));
    let jwks = k.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"].as_str().unwrap(), kid(&jws));
    assert_eq!(
        (
            jwks["keys"][0]["kty"].as_str(),
            jwks["keys"][0]["crv"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"))
    );
    // 304: no body, no signature.
    let etag = r.header("etag").unwrap().to_string();
    let nm = http_request(s.http, "GET", DOC, &[("If-None-Match", &etag)]);
    assert_eq!(nm.status, 304);
    assert!(nm.header("x-jws-signature").is_none());
    // Rotation: publish the next key (A still signs), then switch.
    write_by_rename(&keys, &format!("{a}{b}"));
    let kids = |s: &TestServer| -> Vec<String> {
        http_request(s.http, "GET", "/v1/keys", &[]).json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    wait(|| kids(&s).len() == 2);
    let r = http_request(s.http, "GET", DOC, &[]);
    let jws_a = r.header("x-jws-signature").unwrap().to_string();
    assert_eq!(kid(&jws_a), kids(&s)[0]);
    assert!(openssl_verifies(
        dir.path(),
        &a_pub,
        &jws_a,
        r.body.as_bytes()
    ));
    write_by_rename(&keys, &format!("{b}{a}"));
    wait(|| kids(&s)[0] != kid(&jws_a));
    let r = http_request(s.http, "GET", DOC, &[]);
    let jws_b = r.header("x-jws-signature").unwrap().to_string();
    assert!(
        openssl_verifies(dir.path(), &b_pub, &jws_b, r.body.as_bytes()),
        "the next key signs"
    );
    assert!(!openssl_verifies(
        dir.path(),
        &a_pub,
        &jws_b,
        r.body.as_bytes()
    ));
    // A broken key file is refused; B keeps signing.
    write_by_rename(&keys, "not a key\n");
    assert!(
        s.wait_log_count("signing key refused", 1, Duration::from_secs(3)),
        "{}",
        s.log()
    );
    let r = http_request(s.http, "GET", DOC, &[]);
    assert_eq!(kid(r.header("x-jws-signature").unwrap()), kid(&jws_b));
    // /v1/resolve is signed the same way.
    let r = http_request(
        s.http,
        "GET",
        "/v1/resolve?host=vdh-api.yingzi.com&sdk_version=1.0.0&client_id=c-1",
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(openssl_verifies(
        dir.path(),
        &b_pub,
        r.header("x-jws-signature").unwrap(),
        r.body.as_bytes()
    ));
}

fn wait(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(3), "not within 3 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_signing_key_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.pem");
    std::fs::write(
        &k,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = command()
        .args([
            "serve",
            "--zones",
            "zones",
            "--state",
            "deploy/state.yaml",
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--signing-key",
        ])
        .arg(&k)
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: not an Ed25519 PKCS#8 key", k.display())),
        "{err}"
    );
    // keygen never overwrites.
    let out = command().arg("keygen").arg(&k).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn resolve_agrees_with_the_document_for_every_client() {
    // new-env phase 2 with a percent rule DNS can see: 30% of OLD clients
    // (by client id) go to prod-v1 too.
    let shipped = std::fs::read_to_string(repo().join("deploy/state.yaml")).unwrap();
    let state = shipped.replace(
        "      - name: default\n",
        "      - name: canary\n        match: { percent: \"30\" }\n        environment: prod-v1\n      - name: default\n",
    );
    assert_ne!(state, shipped);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, state).unwrap();
    let s = TestServer::start(&repo().join("zones"), &f, &[]);
    let addrs = |env: &str| match env {
        "prod" => vec!["192.0.2.10", "192.0.2.11"],
        "prod-v1" => vec!["203.0.113.10", "203.0.113.11"],
        other => panic!("unexpected environment {other}"),
    };
    let mut by_env = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..1000 {
        let v = if i % 2 == 0 { "0.9.0" } else { "1.0.0" };
        let q = format!("sdk_version={v}&client_id=id-{i}");
        let doc = http_request(s.http, "GET", &format!("/v1/config/vdh-api?{q}"), &[]).json();
        let res = http_request(
            s.http,
            "GET",
            &format!("/v1/resolve?host=vdh-api.yingzi.com&{q}"),
            &[],
        )
        .json();
        let env = doc["environment"].as_str().unwrap();
        assert_eq!(res["environment"], env, "client id-{i}");
        assert_eq!(res["rule"], doc["rule"], "client id-{i}");
        let got: Vec<&str> = res["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(got, addrs(env), "client id-{i}");
        assert_eq!(res["ttl"], 60);
        *by_env.entry(format!("{v} {env}")).or_default() += 1;
    }
    // Both cohorts of OLD clients exist (the split is real).
    let canary = by_env.get("0.9.0 prod-v1").copied().unwrap_or(0);
    assert!((100..200).contains(&canary), "{by_env:?}");
    assert_eq!(by_env.get("1.0.0 prod-v1"), Some(&500), "{by_env:?}");
    // Bad input as in SPEC §5.
    let r = http_request(s.http, "GET", "/v1/resolve?sdk_version=1.0.0", &[]);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("missing_parameter"))
    );
    let r = http_request(
        s.http,
        "GET",
        "/v1/resolve?host=a..b&sdk_version=1.0.0",
        &[],
    );
    assert_eq!(
        (r.status, r.json()["error"]["parameter"].as_str()),
        (400, Some("host"))
    );
    let r = http_request(
        s.http,
        "GET",
        "/v1/resolve?host=nope.yingzi.com&sdk_version=1.0.0",
        &[],
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("unknown_host"))
    );
    let r = http_request(
        s.http,
        "GET",
        "/v1/resolve?host=example.org&sdk_version=1.0.0",
        &[],
    );
    assert_eq!(r.status, 404, "not a zone this edge serves");
    // Unsigned edge: no signature header, no /v1/keys.
    let r = http_request(
        s.http,
        "GET",
        "/v1/resolve?host=vdh-api-prod.yingzi.com&sdk_version=1.0.0",
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(r.header("x-jws-signature").is_none());
    assert_eq!(
        r.json()["addresses"],
        serde_json::json!(["192.0.2.10", "192.0.2.11"])
    );
    assert_eq!(http_request(s.http, "GET", "/v1/keys", &[]).status, 404);
    // ETag and 304.
    let etag = r.header("etag").unwrap().to_string();
    let nm = http_request(
        s.http,
        "GET",
        "/v1/resolve?host=vdh-api-prod.yingzi.com&sdk_version=1.0.0",
        &[("If-None-Match", &etag)],
    );
    assert_eq!(nm.status, 304);
}
