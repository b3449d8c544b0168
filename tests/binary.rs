//! The real `tokend` binary, started as a user would: configuration errors, keyring
//! files, a full session against real Redis verified with jsonwebtoken from the served
//! JWKS, metrics, restart with the same keyring, and graceful shutdown.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RedisServer, free_port};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tokend");

struct Running {
    child: Child,
    api: String,
    metrics: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(redis_url: &str, keys: &std::path::Path) -> Running {
    start_with(redis_url, keys, &[])
}

fn start_with(redis_url: &str, keys: &std::path::Path, env: &[(&str, &str)]) -> Running {
    let (api, metrics) = (free_port(), free_port());
    let child = Command::new(BIN)
        .envs(env.iter().copied())
        .env("TOKEND_LISTEN", format!("127.0.0.1:{api}"))
        .env("TOKEND_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .env("TOKEND_REDIS_URL", redis_url)
        .env("TOKEND_KEYS", keys)
        .env("TOKEND_ARGON2_MEMORY_KIB", "1024")
        .env("TOKEND_ARGON2_ITERATIONS", "1")
        .env("TOKEND_ISSUER", "https://auth.example.test")
        .env("TOKEND_AUDIENCE", "example-api")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tokend");
    let running = Running {
        child,
        api: format!("http://127.0.0.1:{api}"),
        metrics: format!("http://127.0.0.1:{metrics}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "tokend did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http.post(url).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The Prometheus text of the running binary's metrics listener.
async fn scrape(http: &reqwest::Client, server: &Running) -> String {
    http.get(format!("{}/metrics", server.metrics))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

async fn verify_with_jwks(http: &reqwest::Client, base: &str, access: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let kid = jsonwebtoken::decode_header(access)
        .expect("header")
        .kid
        .expect("kid");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).expect("kid published"))
        .expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["https://auth.example.test"]);
    validation.set_audience(&["example-api"]);
    jsonwebtoken::decode::<Value>(access, &key, &validation)
        .expect("access token verifies against the JWKS")
        .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_full_session_that_survives_a_restart() {
    let redis = RedisServer::private();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = common::generate_keys(dir.path());
    let http = reqwest::Client::new();

    let server = start(&redis.url, &keys);
    // Counters of the fixed label sets exist from the start, so the first event of each
    // shows in rate() and increase() and alerts have data before anything happened.
    let fresh = scrape(&http, &server).await;
    for series in [
        r#"tokend_refresh_total{outcome="reused"} 0"#,
        r#"tokend_refresh_total{outcome="ok"} 0"#,
        r#"tokend_login_total{outcome="rate_limited"} 0"#,
        r#"tokend_login_total{outcome="busy"} 0"#,
        r#"tokend_login_total{outcome="invalid_credentials"} 0"#,
        r#"tokend_logout_total{scope="all",outcome="revoked"} 0"#,
        "tokend_registrations_total 0",
        "tokend_password_changes_total 0",
        "tokend_password_hashes_queued 0",
    ] {
        assert!(
            fresh.contains(series),
            "{series} missing at start:\n{fresh}"
        );
    }
    let (status, body) = post(
        &http,
        format!("{}/v1/users", server.api),
        json!({"email": "e2e@example.com", "password": "e2e password"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let user_id = body["user_id"].as_str().expect("user_id").to_owned();
    let (status, body) = post(
        &http,
        format!("{}/v1/auth/login", server.api),
        json!({"email": "E2E@example.com", "password": "e2e password", "device": "cli"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = verify_with_jwks(
        &http,
        &server.api,
        body["access_token"].as_str().expect("at"),
    )
    .await;
    assert_eq!(
        claims["sub"],
        user_id.as_str(),
        "sub names the registered user"
    );
    assert_eq!(claims["sid"], body["session_id"]);
    let refresh = body["refresh_token"].as_str().expect("rt").to_owned();

    let metrics = scrape(&http, &server).await;
    for family in [
        "tokend_http_request_duration_seconds_bucket",
        "tokend_login_total",
        "tokend_store_operation_duration_seconds_bucket",
        "tokend_signing_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }
    assert!(metrics.contains("route=\"/v1/auth/login\""));
    assert!(!metrics.contains(&refresh));
    drop(server);

    // Same keyring, same Redis: the session and its tokens outlive the process.
    let server = start(&redis.url, &keys);
    let (status, body) = post(
        &http,
        format!("{}/v1/auth/refresh", server.api),
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    verify_with_jwks(
        &http,
        &server.api,
        body["access_token"].as_str().expect("at"),
    )
    .await;
    let (status, latest) = post(
        &http,
        format!("{}/v1/auth/refresh", server.api),
        json!({"refresh_token": body["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 200);

    // The first token, two rotations old, is theft: the session is revoked, and a
    // refresh with the latest token then reports a revoked session.
    let (status, body) = post(
        &http,
        format!("{}/v1/auth/refresh", server.api),
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!((status, &body["error"]), (401, &json!("token_reused")));
    let (status, body) = post(
        &http,
        format!("{}/v1/auth/refresh", server.api),
        json!({"refresh_token": latest["refresh_token"]}),
    )
    .await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_token")));
    let metrics = scrape(&http, &server).await;
    for outcome in ["ok", "reused", "revoked"] {
        let line = format!("tokend_refresh_total{{outcome=\"{outcome}\"}} ");
        assert!(metrics.contains(&line), "no {line} in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let redis = RedisServer::private();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = common::generate_keys(dir.path());
    let mut server = start(&redis.url, &keys);
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(code) = server.child.try_wait().expect("wait") {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_configuration_exits_with_one_line_naming_the_variable() {
    let cases = [
        ("TOKEND_ACCESS_TTL", "ten minutes"),
        ("TOKEND_LISTEN", "localhost"),
        ("TOKEND_REDIS_URL", "http://admin:hunter2secret@redis:6379"),
        ("TOKEND_REFRESH_GRACE", "-1"),
        ("TOKEND_REGISTRATION", "maybe"),
        ("TOKEND_WORKERS", "0"),
    ];
    for (var, value) in cases {
        let out = Command::new(BIN)
            .env(var, value)
            .output()
            .expect("run tokend");
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{var}: {stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert!(!stderr.contains(value), "{var} echoed its value: {stderr}");
    }
    let out = Command::new(BIN)
        .env("TOKEND_KEYS", "/nonexistent/keys.json")
        .env("TOKEND_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "TOKEND_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .output()
        .expect("run tokend");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKEND_KEYS"));
}

/// CPU time (clock ticks) of each of the process's `worker-*` threads.
fn worker_cpu_ticks(pid: u32) -> Vec<u64> {
    let mut ticks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with("worker-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).expect("stat");
        // Fields after the parenthesised name: state is 3rd, utime 14th, stime 15th.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .expect("fields after the name")
            .split_whitespace()
            .collect();
        let tick = |i: usize| fields[i].parse::<u64>().expect("a tick count");
        ticks.push(tick(11) + tick(12));
    }
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_worker_threads() {
    let redis = RedisServer::private();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = common::generate_keys(dir.path());
    let server = start_with(&redis.url, &keys, &[("TOKEND_WORKERS", "3")]);
    assert_eq!(
        worker_cpu_ticks(server.child.id()).len(),
        3,
        "three workers"
    );

    // Six keep-alive connections, opened together, each busy with its own requests.
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let url = format!("{}/.well-known/jwks.json", server.api);
            tokio::spawn(async move {
                for _ in 0..3_000 {
                    let r = http.get(&url).send().await.expect("request");
                    assert_eq!(r.status(), 200);
                    r.bytes().await.expect("body");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client task");
    }
    let ticks = worker_cpu_ticks(server.child.id());
    let total: u64 = ticks.iter().sum();
    assert!(total > 0, "{ticks:?}");
    // Two connections each: every worker carries a real share, none carries it all.
    for t in &ticks {
        assert!(*t * 8 >= total, "one worker starved: {ticks:?}");
    }
}
