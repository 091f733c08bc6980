//! The web client (`clients/js/vdh-client.js`) under Node 20 against a real
//! edge over HTTPS with a CA the test makes: it verifies the edge's
//! signatures with WebCrypto Ed25519, refuses a flipped byte and another
//! client's document, and resolves its host for its cohort.

use crate::certs::TestCa;
use crate::harness::{TestServer, http_request, repo};

#[test]
fn the_web_client_verifies_documents_under_node() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    crate::harness::keygen(&key);
    let ca = TestCa::new();
    let (cert_pem, key_pem) = ca.leaf_for(&["localhost"]);
    let (cert, tls_key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&tls_key, key_pem).unwrap();
    let plain = TestServer::start(
        &repo().join("zones"),
        &repo().join("deploy/state.yaml"),
        &["--signing-key", key.to_str().unwrap()],
    );
    let jwks = http_request(plain.http, "GET", "/v1/keys", &[]).body;
    let edge = TestServer::start(
        &repo().join("zones"),
        &repo().join("deploy/state.yaml"),
        &[
            "--signing-key",
            key.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            tls_key.to_str().unwrap(),
        ],
    );
    let out = std::process::Command::new("node")
        .arg(repo().join("tests/tools/js_client_check.mjs"))
        .arg(format!("https://localhost:{}", edge.http.port()))
        .arg(&jwks)
        .env("NODE_EXTRA_CA_CERTS", &ca.ca_file)
        .output()
        .expect("node (Node 20) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["environment"], "prod-v1", "{v}");
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["verdicts"]["good"], "ok", "{v}");
    assert_eq!(v["verdicts"]["flipped"], "bad_signature", "{v}");
    assert_eq!(v["verdicts"]["swapped"], "wrong_client", "{v}");
    assert_eq!(v["resolved"]["environment"], "prod-v1");
    assert_eq!(
        v["resolved"]["addresses"],
        serde_json::json!(["203.0.113.10", "203.0.113.11"])
    );
    assert_eq!(v["seen"][0]["type"], "accepted", "{v}");
    assert_eq!(v["b64"], "-_8", "base64url alphabet");
}
