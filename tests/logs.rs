//! No token, password or password hash ever reaches a log line, at any level, through
//! the whole lifecycle and its error paths, on both stores.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Backend, RedisServer, TestApp, Tokens, test_args};
use serde_json::json;

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
