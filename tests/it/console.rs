//! The console in a real headless Chromium against two edges on a real
//! etcd, mid-way through new-env phase 2, with an admin token: sign-in,
//! the overview (both edges' revisions, the phase), the census chart
//! (points of three batches of clients on both edges, one edge restarted
//! in between, numbers against `status --json`), the explain form against
//! `explain --json` for 5 clients, no console errors, screenshots of every
//! page at 1280x800 and 390x844 in `target/test-output/`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::browser::{chromedriver, screenshot, wait_text, wd};
use crate::etcd_harness::Etcd;
use crate::harness::{TestServer, etcd_must, http_request, repo};

const P: &str = "/console";
/// Seconds per census point.
const STEP: u64 = 3;

fn edge(ep: &str, id: &str, cache: &std::path::Path, token: &std::path::Path) -> TestServer {
    let mut args: Vec<String> = [
        "--zones",
        repo().join("zones").to_str().unwrap(),
        "--etcd",
        ep,
        "--prefix",
        P,
        "--edge-id",
        id,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--census-point",
        &STEP.to_string(),
        "--admin-token-file",
        token.to_str().unwrap(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if id == "edge-b" {
        args.push("--no-autopilot".into());
    }
    TestServer::start_with(&args, "first snapshot live")
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Sends batch `b`: `old` OLD (0.9.0) and `new` NEW (1.0.0) distinct
/// clients, alternating edges, every third OLD client on both edges; all
/// within one census point. Returns the point's start.
fn batch(edges: [SocketAddr; 2], b: usize, old: usize, new: usize) -> u64 {
    // Start as the next census point opens: a batch that ended early in
    // its point must not share it with the next one.
    let next = (now_ms() / (STEP * 1000) + 1) * STEP * 1000;
    while now_ms() < next {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = now_ms() / 1000 / STEP * STEP;
    let get = |e: SocketAddr, v: &str, id: &str| {
        let r = http_request(
            e,
            "GET",
            &format!("/v1/config/vdh-api?sdk_version={v}&client_id={id}"),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    for i in 0..old {
        let id = format!("b{b}-old-{i}");
        get(edges[i % 2], "0.9.0", &id);
        if i % 3 == 0 {
            get(edges[(i + 1) % 2], "0.9.0", &id);
        }
    }
    for i in 0..new {
        get(edges[i % 2], "1.0.0", &format!("b{b}-new-{i}"));
    }
    assert_eq!(
        now_ms() / 1000 / STEP * STEP,
        start,
        "batch {b} did not fit in one {STEP} s census point"
    );
    start
}

/// The cohort bucket of docs/cohort.md.
fn bucket(salt: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap()) % 10_000
}

fn js(driver: SocketAddr, session: &str, script: &str) -> Value {
    wd(
        driver,
        "POST",
        &format!("/session/{session}/execute/sync"),
        &json!({"script": script, "args": []}),
    )
}

fn open(driver: SocketAddr, session: &str, url: &str) {
    wd(
        driver,
        "POST",
        &format!("/session/{session}/url"),
        &json!({ "url": url }),
    );
}

/// The browser console's messages since the last call; fails on errors.
fn no_console_errors(driver: SocketAddr, session: &str, page: &str) {
    let log = wd(
        driver,
        "POST",
        &format!("/session/{session}/se/log"),
        &json!({"type": "browser"}),
    );
    let errors: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .collect();
    assert!(errors.is_empty(), "{page}: console says {errors:?}");
}

/// Width and height of a PNG (its IHDR).
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    (
        u32::from_be_bytes(b[16..20].try_into().unwrap()),
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    )
}

fn within(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= want.abs() * 0.03,
        "{what}: {got}, expected {want} within 3%"
    );
}

#[test]
fn the_console_shows_the_fleet_census_and_explain_as_the_commands_do() {
    let _exclusive = crate::harness::exclusive();
    let etcd = Etcd::single();
    let ep = etcd.endpoints();
    etcd_must(&ep, P, &["apply", "deploy/state-phase0.yaml", "--yes"]);
    etcd_must(
        &ep,
        P,
        &["scheme", "apply", "new-env", "--phase", "1", "--yes"],
    );
    etcd_must(
        &ep,
        P,
        &[
            "scheme",
            "apply",
            "new-env",
            "--phase",
            "2",
            "--percent",
            "10",
            "--yes",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    let secret = "console-test-token-0123456789";
    std::fs::write(&token, format!("{secret}\n")).unwrap();
    let tok = token.to_str().unwrap();
    let (ca, cb) = (dir.path().join("ca"), dir.path().join("cb"));
    let mut a = edge(&ep, "edge-a", &ca, &token);
    let b = edge(&ep, "edge-b", &cb, &token);
    check_token(&a, secret);

    // Three batches in three census points; edge-a restarts (SIGTERM saves
    // its census) between the second and the third.
    let t1 = batch([a.http, b.http], 1, 300, 100);
    let t2 = batch([a.http, b.http], 2, 200, 200);
    a.signal("TERM");
    let stopped = Instant::now();
    while a.alive() {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "edge-a did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(a);
    let a = edge(&ep, "edge-a", &ca, &token);
    let t3 = batch([a.http, b.http], 3, 100, 300);
    let status: Value = {
        let start = Instant::now();
        loop {
            let s: Value = serde_json::from_str(&etcd_must(
                &ep,
                P,
                &["status", "--json", "--admin-token-file", tok],
            ))
            .unwrap();
            if s["census_edges"] == 2 && s["edges"].as_array().unwrap().len() == 2 {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (mut driver_proc, driver) = chromedriver(&home);
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
    "goog:loggingPrefs": {"browser": "ALL"},
    "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", format!("--user-data-dir={}", dir.path().join("profile").display())]
    }}}});
    let session = wd(driver, "POST", "/session", &caps)["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let s = session.as_str();
    let base = format!("http://127.0.0.1:{}", a.admin.port());

    // Sign in: the console sends a browser without the token to /login.
    open(driver, s, &format!("{base}/"));
    wait_text(driver, s, "Admin token");
    js(
        driver,
        s,
        &format!(
            "document.querySelector('input[name=token]').value = '{secret}'; document.querySelector('form').submit();"
        ),
    );
    let text = wait_text(driver, s, "Environments");
    no_console_errors(driver, s, "/");
    for e in status["edges"].as_array().unwrap() {
        let line = format!("{}\t{}\t", e["edge"].as_str().unwrap(), e["revision"]);
        assert!(text.contains(&line), "overview lacks {line:?}:\n{text}");
    }
    assert!(text.contains("new-env phase 2 at 10%"), "{text}");
    assert!(text.contains("in sync"), "{text}");

    check_census(driver, s, &base, &status, [t1, t2, t3]);
    check_explain(driver, s, &base, &ep);
    shoot_every_page(driver, s, &base);

    wd(
        driver,
        "DELETE",
        &format!("/session/{session}"),
        &Value::Null,
    );
    let _ = driver_proc.kill();
    let _ = driver_proc.wait();
    drop((a, b, etcd));
}

/// The admin listener wants the token: programs get 401 without it, the
/// liveness probe stays open.
fn check_token(e: &TestServer, secret: &str) {
    assert_eq!(http_request(e.admin, "GET", "/metrics", &[]).status, 401);
    assert_eq!(http_request(e.admin, "GET", "/census", &[]).status, 401);
    let wrong = http_request(
        e.admin,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let bearer = format!("Bearer {secret}");
    let ok = http_request(e.admin, "GET", "/metrics", &[("Authorization", &bearer)]);
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("vdh_edge_build_info"));
    assert_eq!(http_request(e.admin, "GET", "/healthz", &[]).status, 200);
    let page = http_request(e.admin, "GET", "/", &[("Accept", "text/html")]);
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    // The public listener never asks for it.
    assert_eq!(http_request(e.http, "GET", "/healthz", &[]).status, 200);
}

fn check_census(driver: SocketAddr, s: &str, base: &str, status: &Value, t: [u64; 3]) {
    open(driver, s, &format!("{base}/clients"));
    wait_text(driver, s, "By sdk version");
    no_console_errors(driver, s, "/clients");
    let chart = js(
        driver,
        s,
        "const c = document.querySelector('#chart-sdk_version'); return [c.dataset.points, Array.from(c.querySelectorAll('circle')).map(p => [p.dataset.series, Number(p.dataset.t), Number(p.dataset.v)])];",
    );
    assert_eq!(
        chart[0], "9",
        "3 points each for 0.9.0, 1.0.0 and the OLD share: {chart}"
    );
    let points = chart[1].as_array().unwrap();
    let want = [
        ("0.9.0", [300.0, 200.0, 100.0]),
        ("1.0.0", [100.0, 200.0, 300.0]),
        ("OLD share", [75.0, 50.0, 25.0]),
    ];
    for (series, values) in want {
        let got: Vec<(u64, f64)> = points
            .iter()
            .filter(|p| p[0] == series)
            .map(|p| (p[1].as_u64().unwrap(), p[2].as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), 3, "{series}: {got:?}");
        for ((ts, v), (want_t, want_v)) in got.iter().zip(t.iter().zip(values)) {
            assert_eq!(ts, want_t, "{series}: {got:?}");
            within(*v, want_v, &format!("{series} at {ts}"));
        }
    }
    // The numbers beside the chart are status --json's.
    let cells = js(
        driver,
        s,
        "return Array.from(document.querySelectorAll('[data-window]')).map(c => [c.dataset.window, c.dataset.dim, c.dataset.value, Number(c.textContent)]);",
    );
    let cells = cells.as_array().unwrap();
    let mut compared = 0;
    for (window, dims) in status["census"].as_object().unwrap() {
        for (dim, values) in dims.as_object().unwrap() {
            for (value, n) in values.as_object().unwrap() {
                let cell = cells
                    .iter()
                    .find(|c| {
                        c[0] == window.as_str() && c[1] == dim.as_str() && c[2] == value.as_str()
                    })
                    .unwrap_or_else(|| panic!("no cell for {window} {dim} {value}"));
                within(
                    cell[3].as_f64().unwrap(),
                    n.as_f64().unwrap(),
                    &format!("{window} {dim} {value}"),
                );
                compared += 1;
            }
        }
    }
    within(
        status["census"]["hour"]["sdk_version"]["0.9.0"]
            .as_f64()
            .unwrap(),
        600.0,
        "status: OLD clients in the hour",
    );
    assert!(compared >= 8, "{compared} numbers compared");
}

fn check_explain(driver: SocketAddr, s: &str, base: &str, ep: &str) {
    let salt = "vdh-api/min_version";
    let find = |inside: bool| {
        (0..)
            .map(|i| format!("x-{i}"))
            .find(|id| (bucket(salt, id) < 1000) == inside)
            .unwrap()
    };
    let (inside, outside) = (find(true), find(false));
    let clients: [[&str; 5]; 5] = [
        ["0.9.0", &inside, "", "", ""],
        ["0.9.0", &outside, "android", "", ""],
        ["1.0.0", "n-1", "ios", "demo", "198.51.100.7"],
        ["1.2.0", "", "web", "", ""],
        ["0.8.0", "o-2", "", "other-app", "2001:db8::1"],
    ];
    let mut required = Vec::new();
    for [v, id, platform, app, source] in clients {
        open(driver, s, &format!("{base}/explain"));
        wait_text(driver, s, "SDK version");
        let fill = format!(
            "const f = document.querySelector('form.explain'); f.sdk_version.value = '{v}'; f.client_id.value = '{id}'; f.platform.value = '{platform}'; f.app_id.value = '{app}'; f.source.value = '{source}'; f.submit();"
        );
        js(driver, s, &fill);
        wait_text(driver, s, "As JSON");
        no_console_errors(driver, s, "/explain");
        let page: Value = serde_json::from_str(
            js(
                driver,
                s,
                "return document.querySelector('#explain-json').textContent",
            )
            .as_str()
            .unwrap(),
        )
        .unwrap();
        let mut args = vec![
            "explain",
            "--service",
            "vdh-api",
            "--sdk-version",
            v,
            "--json",
        ];
        for (flag, val) in [
            ("--client-id", id),
            ("--platform", platform),
            ("--app-id", app),
            ("--source", source),
        ] {
            if !val.is_empty() {
                args.extend([flag, val]);
            }
        }
        let cli: Value = serde_json::from_str(&etcd_must(ep, P, &args)).unwrap();
        assert_eq!(
            page, cli,
            "the console and explain --json differ for {args:?}"
        );
        required.push(cli["document"]["update"]["required"].as_bool().unwrap());
    }
    // Inside and outside the 10% cohort: both answers were compared.
    assert_eq!(&required[..2], &[true, false], "{required:?}");
}

fn shoot_every_page(driver: SocketAddr, s: &str, base: &str) {
    let pages = [
        ("overview", "/"),
        ("cohorts", "/cohorts"),
        ("census", "/clients"),
        ("history", "/history"),
        (
            "explain",
            "/explain?service=vdh-api&sdk_version=0.9.0&client_id=x-1&platform=ios",
        ),
    ];
    for (w, h) in [(1280u32, 800u32), (390, 844)] {
        // Size the window so the page itself (the viewport) is w x h.
        let mut size = (w, h);
        for _ in 0..3 {
            wd(
                driver,
                "POST",
                &format!("/session/{s}/window/rect"),
                &json!({"width": size.0, "height": size.1}),
            );
            let inner = js(driver, s, "return [window.innerWidth, window.innerHeight]");
            let (iw, ih) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
            size = (
                size.0 + w - u32::try_from(iw).unwrap(),
                size.1 + h - u32::try_from(ih).unwrap(),
            );
        }
        let inner = js(driver, s, "return [window.innerWidth, window.innerHeight]");
        assert_eq!(inner, json!([w, h]), "viewport for {w}x{h}");
        for (name, path) in pages {
            open(driver, s, &format!("{base}{path}"));
            wait_text(driver, s, "Read-only");
            no_console_errors(driver, s, path);
            // Nothing wider than the screen but the scrolling boxes.
            let wide = js(
                driver,
                s,
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            );
            assert!(
                wide.as_i64().unwrap() <= 0,
                "{path} at {w}x{h} scrolls sideways by {wide}"
            );
            let shot = screenshot(driver, s, &format!("console-{name}-{w}x{h}.png"));
            let (pw, ph) = png_size(&shot);
            assert_eq!(
                json!([pw, ph]),
                inner,
                "{name}: the screenshot is the viewport"
            );
        }
    }
}
