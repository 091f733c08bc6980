//! docs/openapi.yaml stays true: its paths, parameters and schemas are
//! checked against what the running server answers.

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

/// Checks that `value` has exactly the properties of `schema` (recursively
/// for nested objects), and that required lists every property.
fn check_object(schema: &Value, value: &Value, at: &str) {
    let props = &schema["properties"];
    assert_eq!(keys(props), keys(value), "properties of {at}");
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(required, keys(value), "required of {at}");
    for (k, sub) in props.as_object().unwrap() {
        if sub["type"] == "object" {
            check_object(sub, &value[k], &format!("{at}.{k}"));
        }
        let v = &value[k];
        let ok = match sub["type"].as_str() {
            Some("string") => v.is_string() || (v.is_null() && sub["nullable"] == true),
            Some("integer") => v.is_u64() || v.is_i64(),
            Some("boolean") => v.is_boolean(),
            Some("object") => v.is_object(),
            _ => true,
        };
        assert!(ok, "{at}.{k}: {v} does not fit {sub}");
    }
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
    let params: BTreeSet<String> = op["parameters"]
        .as_array()
        .unwrap()
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
    let wait = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wait")
        .unwrap();
    assert_eq!(wait["schema"]["maximum"], vdh_edge::MAX_WAIT_S);

    // The document, with every optional field filled in.
    let r = http_request(
        s.http,
        "GET",
        "/v1/config/vdh-api?sdk_version=0.9.0&client_id=c-1&platform=ios&app_id=demo",
        &[],
    );
    assert_eq!(r.status, 200);
    check_object(
        &spec["components"]["schemas"]["Document"],
        &r.json(),
        "Document",
    );

    // Every error status the server gives is documented with the Error shape.
    let responses = keys(&op["responses"]);
    for (path, status) in [
        ("/v1/config/vdh-api".to_string(), "400"),
        ("/v1/config/none?sdk_version=1.0.0".to_string(), "404"),
        (
            format!(
                "/v1/config/vdh-api?sdk_version=1.0.0&client_id={}",
                "x".repeat(5000)
            ),
            "414",
        ),
    ] {
        let e = http_request(s.http, "GET", &path, &[]);
        assert_eq!(e.status.to_string(), status);
        assert!(responses.contains(status), "{status} undocumented");
        check_object(&spec["components"]["schemas"]["Error"], &e.json(), "Error");
    }

    let census = http_request(s.admin, "GET", "/census", &[]).json();
    assert_eq!(
        keys(&census),
        keys(&spec["components"]["schemas"]["Census"]["properties"])
    );

    let ready = http_request(s.admin, "GET", "/readyz", &[]).json();
    let ready_props = keys(&spec["components"]["schemas"]["Ready"]["properties"]);
    for k in keys(&ready) {
        assert!(ready_props.contains(&k), "readyz field {k} undocumented");
    }
}
