//! No token, password or password hash ever reaches a log line, at any level, through
//! the whole lifecycle and its error paths, on both stores; and the real binary's JSON
//! logs: one object per line, a start-up summary without secrets, dependencies quiet.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, RedisServer, TestApp, Tokens, test_args};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drives every endpoint, including failures, and returns every secret it handled.
async fn exercise(app: &TestApp) -> Vec<String> {
    let (email, password) = app.user().await;
    let mut secrets = vec![password.clone()];
    let a = app.login(&email, &password, "laptop").await;
    let b = app.login(&email, &password, "phone").await;
    let a2 = Tokens::from(&app.refresh(&a.refresh).await.body);
    let _ = app.refresh(&a.refresh).await; // grace replay
    let a3 = Tokens::from(&app.refresh(&a2.refresh).await.body);
    let _ = app.refresh(&a.refresh).await; // reuse: revokes
    let _ = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": "wrong-password-1"}),
        )
        .await;
    let _ = app.get_bearer("/v1/sessions", &b.access).await;
    let _ = app.get_bearer("/v1/sessions", "bad.token.here").await;
    let _ = app
        .post_bearer(
            "/v1/auth/password",
            &b.access,
            Some(json!({"current_password": password, "new_password": "brand-new-password"})),
        )
        .await;
    let c = app.login(&email, "brand-new-password", "tablet").await;
    let _ = app
        .post("/v1/auth/logout", json!({"refresh_token": c.refresh}))
        .await;
    let _ = app
        .post(
            &format!("/v1/auth/refresh?refresh_token={}", c.refresh),
            json!({}),
        )
        .await;
    secrets.extend([
        "wrong-password-1".to_owned(),
        "brand-new-password".to_owned(),
    ]);
    for t in [&a, &b, &a2, &a3, &c] {
        secrets.push(t.refresh.clone());
        secrets.push(t.refresh.rsplit('.').next().expect("secret").to_owned());
        secrets.push(t.access.clone());
        secrets.push(t.access.rsplit('.').next().expect("signature").to_owned());
    }
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_at_any_level() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test binary installs the only subscriber");

    let memory = TestApp::start(test_args(&Backend::Memory)).await;
    let mut secrets = exercise(&memory).await;
    let redis = RedisServer::private();
    let with_redis = TestApp::start(test_args(&Backend::Redis(redis.url.clone()))).await;
    secrets.extend(exercise(&with_redis).await);

    let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8 logs");
    assert!(
        logs.contains("request"),
        "the capture saw request spans: {:.200}",
        logs
    );
    assert!(
        logs.contains("route=/v1/auth/refresh"),
        "routes are logged by template"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {secret:.12}…"
        );
    }
    assert!(
        !logs.contains("$argon2id$"),
        "a password hash reached the logs"
    );
}

/// A `redis-server` that requires a password, on a free port, killed on drop.
struct PasswordRedis {
    child: std::process::Child,
    port: u16,
}

impl PasswordRedis {
    fn start(password: &str) -> Self {
        common::require_program("redis-server", "redis-server");
        let port = common::free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        wait_for_port(port);
        PasswordRedis { child, port }
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What must never reach a log from a keyring file: the token secret, each signing
/// key's PKCS#8 document and the private seed inside it, in any usual encoding.
fn key_material(keyring: &Value) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut secrets = Vec::new();
    let token_secret = keyring["token_secret"].as_str().expect("token secret");
    secrets.push(token_secret.to_owned());
    let raw = URL_SAFE_NO_PAD
        .decode(token_secret)
        .expect("base64url secret");
    secrets.extend([STANDARD.encode(&raw), hex(&raw)]);
    for key in keyring["keys"].as_array().expect("keys") {
        let pkcs8 = key["pkcs8"].as_str().expect("pkcs8");
        secrets.push(pkcs8.to_owned());
        // An Ed25519 PKCS#8 v2 document: a 16-byte header, then the 32-byte seed.
        let der = URL_SAFE_NO_PAD.decode(pkcs8).expect("base64url pkcs8");
        let seed = &der[16..48];
        secrets.extend([
            URL_SAFE_NO_PAD.encode(seed),
            STANDARD.encode(seed),
            hex(seed),
        ]);
    }
    secrets
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_json_lines_with_a_redacted_start_up_summary() {
    const REDIS_PASSWORD: &str = "s3cretpw";
    let redis = PasswordRedis::start(REDIS_PASSWORD);
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = common::generate_keys(dir.path());
    let keyring: Value =
        serde_json::from_str(&std::fs::read_to_string(&keys).expect("keyring")).expect("JSON");
    let log_path = dir.path().join("tokend.log");
    let (api, metrics) = (common::free_port(), common::free_port());
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let mut tokend = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .env("TOKEND_LISTEN", format!("127.0.0.1:{api}"))
        .env("TOKEND_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .env("TOKEND_REDIS_URL", &redis_url)
        .env("TOKEND_KEYS", &keys)
        .env("TOKEND_LOG_FORMAT", "json")
        .env("TOKEND_LOG", "debug")
        .env("TOKEND_ARGON2_MEMORY_KIB", "256")
        .env("TOKEND_ARGON2_ITERATIONS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn tokend");
    wait_for_port(api);

    // Traffic that needs the password-protected Redis: tokend authenticated with it.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}");
    let (email, password) = (
        format!("logs-{}@example.com", common::unique()),
        "logs password 1",
    );
    let body = json!({"email": email, "password": password});
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&body)
        .send()
        .await;
    assert_eq!(r.expect("register").status(), 201);
    let r = http
        .post(format!("{base}/v1/auth/login"))
        .json(&body)
        .send()
        .await;
    let r = r.expect("login");
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.expect("tokens");

    let status = Command::new("kill")
        .args(["-TERM", &tokend.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokend.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "tokend did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }

    let log = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect();
    let event = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in\n{log}"))
    };

    let summary = event("configured");
    assert_eq!(summary["level"], "INFO", "{summary}");
    assert_eq!(summary["store"], "redis", "{summary}");
    let signing = keyring["signing_kid"].as_str().expect("signing kid");
    assert_eq!(summary["signing_kid"], signing, "{summary}");
    let published = summary["published_kids"].as_str().unwrap_or_default();
    for key in keyring["keys"].as_array().expect("keys") {
        let kid = key["kid"].as_str().expect("kid");
        assert!(published.split(',').any(|p| p == kid), "{kid}: {summary}");
    }
    let listening = event("listening");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["api"], format!("127.0.0.1:{api}"), "{listening}");
    assert_eq!(
        listening["metrics"],
        format!("127.0.0.1:{metrics}"),
        "{listening}"
    );
    let served = event("served");
    assert_eq!(served["level"], "DEBUG");
    assert!(served["status"].is_u64(), "{served}");

    // TOKEND_LOG=debug is tokend's level: the crates it uses say only what goes wrong.
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        let level = line["level"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("tokend") || ["WARN", "ERROR"].contains(&level),
            "a dependency logs below warn: {line}"
        );
    }

    let mut secrets = key_material(&keyring);
    secrets.extend([REDIS_PASSWORD.to_owned(), redis_url, password.to_owned()]);
    for token in ["access_token", "refresh_token"] {
        secrets.push(tokens[token].as_str().expect("token").to_owned());
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the logs: {secret:.6}…"
        );
    }
}
