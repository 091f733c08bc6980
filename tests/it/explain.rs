//! `explain` agrees with the live server: the same document over HTTP and
//! the same DNS answer, for a table of clients.

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, command, http_request, repo};

struct Client {
    sdk: &'static str,
    id: Option<&'static str>,
    platform: Option<&'static str>,
    app: Option<&'static str>,
}

fn clients() -> Vec<Client> {
    let c = |sdk, id, platform, app| Client {
        sdk,
        id,
        platform,
        app,
    };
    vec![
        c("0.9.0", None, None, None),
        c("0.9.0", Some("c-1"), None, None),
        c("0.9.0", Some("c-2"), Some("android"), None),
        c("0.9.0", Some("c-3"), Some("ios"), Some("demo")),
        c("0.9.0", Some("c-tester-1"), None, None),
        c("0.9.4", Some("c-4"), Some("web"), Some("demo")),
        c("0.9.5", Some("c-5"), Some("web"), Some("demo")),
        c("1.0.0-rc.1", Some("c-6"), None, None),
        c("1.0.0", Some("c-7"), None, None),
        c("1.0.0", None, Some("android"), None),
        c("1.2.0", Some("c-8"), Some("android"), Some("shop")),
        c("1.2.1", Some("c-9"), Some("android"), None),
        c("2.0.0", Some("c-10"), None, None),
        c("2.0.0", Some("c-tester-2"), Some("ios"), None),
        c("0.1.0", Some("c-11"), Some("other"), None),
        c("0.8.0+build.5", Some("c-12"), None, None),
        c("0.9.0", Some("c-13"), Some("IOS"), Some("demo")),
        c("0.9.0", Some("c-14"), None, Some("demo")),
        c("0.9.0", Some("c-15"), None, None),
        c("0.9.0", Some("c-16"), None, None),
        c("0.9.0", Some("c-17"), None, None),
        c("0.9.0", Some("c-18"), None, None),
        c("1.1.0", Some("c-19"), Some("web"), None),
        c("0.9.0", Some("c-20"), Some("web"), Some("demo")),
    ]
}

#[test]
fn explain_agrees_with_the_live_server() {
    let r = repo();
    let zones = r.join("zones");
    let state = r.join("tests/fixtures/states/rich.yaml");
    let s = TestServer::start(&zones, &state, &[]);
    let cs = clients();
    assert!(cs.len() >= 20);
    let mut environments = std::collections::BTreeSet::new();
    for c in cs {
        let mut path = format!(
            "/v1/config/vdh-api?sdk_version={}",
            c.sdk.replace('+', "%2B")
        );
        let mut args = vec![
            "explain".to_string(),
            "--json".into(),
            "--service".into(),
            "vdh-api".into(),
            "--sdk-version".into(),
            c.sdk.into(),
        ];
        args.extend([
            "--zones".into(),
            zones.display().to_string(),
            "--state".into(),
            state.display().to_string(),
        ]);
        for (flag, param, v) in [
            ("--client-id", "client_id", c.id),
            ("--platform", "platform", c.platform),
            ("--app-id", "app_id", c.app),
        ] {
            if let Some(v) = v {
                path.push_str(&format!("&{param}={v}"));
                args.extend([flag.to_string(), v.to_string()]);
            }
        }
        let live = http_request(s.http, "GET", &path, &[]);
        assert_eq!(live.status, 200, "{path}: {}", live.body);
        let out = command().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let explained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            explained["document"],
            live.json(),
            "document differs for {path}"
        );
        environments.insert(live.json()["environment"].as_str().unwrap().to_string());
        // DNS: explain's answer for the hostname from 127.0.0.1 is what the
        // server answers a resolver on 127.0.0.1.
        let dns = &explained["dns"][0];
        let mut want: Vec<String> = dns["a"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        want.sort();
        let got = answer_addrs(&Query::new("vdh-api.yingzi.com", 1).send(s.dns).unwrap());
        assert_eq!(got, want, "DNS differs");
    }
    assert!(
        environments.len() == 3,
        "the table should reach every environment: {environments:?}"
    );
}
