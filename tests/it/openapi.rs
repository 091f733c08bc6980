//! docs/openapi.yaml stays true: it passes a real OpenAPI 3.1 validator
//! (`openapi-spec-validator`), its listeners and parameters match the
//! server, and live responses of every kind validate against it (schemas,
//! formats, statuses, headers) with `tests/tools/openapi_check.py`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{TestServer, http_request, repo, shipped_copy};

fn spec() -> Value {
    let text = std::fs::read_to_string(repo().join("docs/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).expect("openapi.yaml is valid YAML")
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn openapi_matches_the_server() {
    let spec = spec();
    let dir = shipped_copy();
    let s = TestServer::start(
        &dir.path().join("zones"),
        &dir.path().join("state.yaml"),
        &[],
    );
    let paths = keys(&spec["paths"]);
    let want: BTreeSet<String> = [
        "/v1/config/{service}",
        "/v1/resolve",
        "/v1/keys",
        "/healthz",
        "/readyz",
        "/metrics",
        "/census",
        "/dns-query",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(paths, want);
    // Each operator path names the admin listener, and the public listener
    // does not serve it; the admin listener does not serve /v1.
    for path in ["/readyz", "/metrics", "/census"] {
        let servers = &spec["paths"][path]["servers"][0]["description"];
        assert!(servers.as_str().unwrap().contains("--admin"), "{path}");
        assert_eq!(http_request(s.http, "GET", path, &[]).status, 404, "{path}");
        assert_eq!(
            http_request(s.admin, "GET", path, &[]).status,
            200,
            "{path}"
        );
    }
    assert_eq!(
        http_request(s.admin, "GET", "/v1/config/vdh-api?sdk_version=1.0.0", &[]).status,
        404
    );
    assert_eq!(http_request(s.http, "GET", "/healthz", &[]).status, 200);
    assert_eq!(http_request(s.admin, "GET", "/healthz", &[]).status, 200);

    let op = &spec["paths"]["/v1/config/{service}"]["get"];
    // Parameters, through their `$ref`s.
    let resolved: Vec<&Value> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match p["$ref"].as_str() {
            Some(r) => &spec["components"]["parameters"][r.rsplit('/').next().unwrap()],
            None => p,
        })
        .collect();
    let params: BTreeSet<String> = resolved
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for p in [
        "service",
        "sdk_version",
        "client_id",
        "platform",
        "app_id",
        "wait",
        "If-None-Match",
    ] {
        assert!(params.contains(p), "parameter {p} undocumented");
    }
    let wait = resolved.iter().find(|p| p["name"] == "wait").unwrap();
    assert_eq!(wait["schema"]["maximum"], vdh_edge::MAX_WAIT_S);

    let census_props = keys(&spec["components"]["schemas"]["Census"]["properties"]);
    let census = http_request(s.admin, "GET", "/census", &[]).json();
    let mut plain = census_props.clone();
    plain.remove("series");
    assert_eq!(keys(&census), plain);
    let census = http_request(s.admin, "GET", "/census?series=1", &[]).json();
    assert_eq!(keys(&census), census_props);
    assert_eq!(
        keys(&census["series"]),
        keys(&spec["components"]["schemas"]["Census"]["properties"]["series"]["properties"])
    );

    let ready = http_request(s.admin, "GET", "/readyz", &[]).json();
    let ready_props = keys(&spec["components"]["schemas"]["Ready"]["properties"]);
    for k in keys(&ready) {
        assert!(ready_props.contains(&k), "readyz field {k} undocumented");
    }
}

/// The Python with the OpenAPI validators (`script/test` sets it).
fn python() -> String {
    std::env::var("VDH_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One recorded response, as `openapi_check.py` reads it.
fn record(method: &str, template: &str, r: &crate::harness::HttpResponse) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "method": method,
        "path": template,
        "status": r.status,
        "headers": headers,
        "body": r.body,
    })
}

#[test]
fn the_spec_passes_an_openapi_3_1_validator() {
    let out = std::process::Command::new(python())
        .args(["-m", "openapi_spec_validator"])
        .arg(repo().join("docs/openapi.yaml"))
        .output()
        .expect("a Python with openapi-spec-validator (script/test installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn live_responses_validate_against_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    crate::harness::keygen(&key);
    let zones = repo().join("zones");
    let state = repo().join("deploy/state.yaml");
    let signed = TestServer::start(
        &zones,
        &state,
        &[
            "--signing-key",
            key.to_str().unwrap(),
            "--cors-origin",
            "https://app.example",
        ],
    );
    let plain = TestServer::start(&zones, &state, &[]);
    let origin = [("Origin", "https://app.example")];
    let mut records = Vec::new();
    let mut get = |s: &TestServer, template: &str, path: &str, headers: &[(&str, &str)]| {
        let r = http_request(s.http, "GET", path, headers);
        records.push(record("GET", template, &r));
        r
    };
    const CONFIG: &str = "/v1/config/{service}";
    const RESOLVE: &str = "/v1/resolve";
    for s in [&signed, &plain] {
        for (i, q) in [
            "sdk_version=0.9.0",
            "sdk_version=1.0.0&client_id=c-1&platform=ios&app_id=demo",
            "sdk_version=0.9.0&client_id=c-2&platform=android",
            "sdk_version=1.2.3-beta.1+build.7&client_id=c-3",
            "sdk_version=2.0.0&platform=web",
        ]
        .iter()
        .enumerate()
        {
            let r = get(s, CONFIG, &format!("/v1/config/vdh-api?{q}"), &origin);
            assert_eq!(r.status, 200, "{}", r.body);
            let etag = r.header("etag").unwrap().to_string();
            if i < 2 {
                let nm = get(
                    s,
                    CONFIG,
                    &format!("/v1/config/vdh-api?{q}"),
                    &[("If-None-Match", &etag)],
                );
                assert_eq!(nm.status, 304);
            }
            for host in ["vdh-api.yingzi.com", "vdh-api-prod.yingzi.com."] {
                let r = get(s, RESOLVE, &format!("/v1/resolve?host={host}&{q}"), &origin);
                assert_eq!(r.status, 200, "{}", r.body);
            }
        }
        let r = get(
            s,
            RESOLVE,
            "/v1/resolve?host=vdh-api.yingzi.com&sdk_version=1.0.0",
            &[],
        );
        let etag = r.header("etag").unwrap().to_string();
        get(
            s,
            RESOLVE,
            "/v1/resolve?host=vdh-api.yingzi.com&sdk_version=1.0.0",
            &[("If-None-Match", &etag)],
        );
        for (template, path, status) in [
            (CONFIG, "/v1/config/vdh-api".to_string(), 400),
            (
                CONFIG,
                "/v1/config/vdh-api?sdk_version=1.x".to_string(),
                400,
            ),
            (
                CONFIG,
                "/v1/config/vdh-api?sdk_version=1.0.0&platform=toaster".to_string(),
                400,
            ),
            (
                CONFIG,
                "/v1/config/vdh-api?sdk_version=1.0.0&wait=99".to_string(),
                400,
            ),
            (CONFIG, "/v1/config/none?sdk_version=1.0.0".to_string(), 404),
            (
                CONFIG,
                format!(
                    "/v1/config/vdh-api?sdk_version=1.0.0&client_id={}",
                    "x".repeat(5000)
                ),
                414,
            ),
            (RESOLVE, "/v1/resolve?sdk_version=1.0.0".to_string(), 400),
            (
                RESOLVE,
                "/v1/resolve?host=a..b&sdk_version=1.0.0".to_string(),
                400,
            ),
            (
                RESOLVE,
                "/v1/resolve?host=vdh-api.yingzi.com".to_string(),
                400,
            ),
            (
                RESOLVE,
                "/v1/resolve?host=nope.yingzi.com&sdk_version=1.0.0".to_string(),
                404,
            ),
            (
                RESOLVE,
                "/v1/resolve?host=example.org&sdk_version=1.0.0".to_string(),
                404,
            ),
        ] {
            let r = get(s, template, &path, &[]);
            assert_eq!(r.status, status, "{path}: {}", r.body);
        }
        get(s, "/healthz", "/healthz", &[]);
    }
    assert_eq!(get(&signed, "/v1/keys", "/v1/keys", &[]).status, 200);
    assert_eq!(get(&plain, "/v1/keys", "/v1/keys", &[]).status, 404);
    for (path, s) in [("/readyz", &plain), ("/census", &plain)] {
        let r = http_request(s.admin, "GET", path, &[]);
        records.push(record("GET", path, &r));
    }
    check_records(&records, dir.path());
}

/// Runs `openapi_check.py` on the recorded responses (at least 50).
fn check_records(records: &[Value], dir: &std::path::Path) {
    assert!(records.len() >= 50, "{} responses", records.len());
    let f = dir.join("records.json");
    std::fs::write(&f, serde_json::to_vec(records).unwrap()).unwrap();
    let out = std::process::Command::new(python())
        .arg(repo().join("tests/tools/openapi_check.py"))
        .arg(repo().join("docs/openapi.yaml"))
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "validated {} responses, 0 problems",
            records.len()
        )),
        "{text}"
    );
}
