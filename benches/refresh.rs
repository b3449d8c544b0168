//! The whole refresh path in process: `POST /v1/auth/refresh` through `tokend::app`
//! with `tower::ServiceExt::oneshot`, then the lifecycle call alone and the store call
//! alone, so the HTTP, lifecycle and store shares can be told apart. Runs against the
//! embedded store, and against Redis when one answers at `TOKEND_BENCH_REDIS_URL`
//! (default `redis://127.0.0.1:6379`); without Redis those benches are skipped with a
//! note. Sessions written to Redis expire within 15 minutes and no user record is
//! written, so a shared server is left as it was found.
//!
//! The Prometheus recorder and the log subscriber are installed as `tokend` installs
//! them, so metric recording and span filtering cost what they cost in production.
//!
//! Run with `cargo bench --bench refresh`.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt as _;
use tokend::AppState;
use tokend::cli::ServeArgs;
use tokend::clock::Clock;
use tokend::config::Config;
use tokend::ids::{SessionId, UserId};
use tokend::store::{NewSession, Rotation, SessionStore as _};
use tokend::token::keyring::{Keyring, file};
use tokend::token::refresh::{RefreshToken, TokenHasher};
use tower::ServiceExt as _;

/// Live sessions each bench rotates through, as in the load test's target.
const SESSIONS: usize = 1024;
const IDLE_TTL: &str = "15m";
const GRACE_MS: u64 = 10_000;

fn redis_url() -> Option<String> {
    let url = std::env::var("TOKEND_BENCH_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let hostport = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        });
    if reachable {
        Some(url)
    } else {
        eprintln!(
            "note: no Redis answers at {hostport}; skipping the Redis refresh benches \
             (set TOKEND_BENCH_REDIS_URL to point at one)"
        );
        None
    }
}

/// Settings as a test instance uses them: cheap argon2 (nothing here hashes a
/// password), sessions that expire soon, the given keyring.
fn config(redis: Option<&str>, keys: &Path) -> Config {
    let args = ServeArgs {
        redis_url: redis.map(str::to_owned),
        argon2_memory_kib: Some("256".into()),
        argon2_iterations: Some("1".into()),
        session_idle_ttl: Some(IDLE_TTL.into()),
        session_max_ttl: Some("1h".into()),
        keys: Some(keys.to_path_buf()),
        issuer: Some("https://auth.example.test".into()),
        audience: Some("example-api".into()),
        ..ServeArgs::default()
    };
    Config::from_args(&args).expect("valid bench config")
}

fn now_ms() -> u64 {
    Clock::System.now_ms()
}

/// Opens `SESSIONS` sessions through the store, one user each, as login would, and
/// returns their first refresh tokens.
async fn seed(state: &AppState, hasher: &TokenHasher) -> Vec<RefreshToken> {
    let rng = ring::rand::SystemRandom::new();
    let now = now_ms();
    let expires = now + 15 * 60 * 1000;
    let mut tokens = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let token = RefreshToken::generate(&rng, UserId::generate(&rng), SessionId::generate(&rng));
        state
            .lifecycle
            .store()
            .create_session(&NewSession {
                user_id: token.user_id.clone(),
                session_id: token.session_id.clone(),
                token_hash: hasher.hash(&token),
                device: None,
                user_agent: Some("tokend-bench".into()),
                ip: Some("127.0.0.1".into()),
                now_ms: now,
                expires_at_ms: expires,
                absolute_expires_at_ms: now + 3600 * 1000,
                password_hash: None,
            })
            .await
            .expect("session created");
        tokens.push(token);
    }
    tokens
}

/// Finds `"refresh_token":"..."` in a response body without a JSON parse, as the
/// load test does.
fn refresh_token_in(body: &[u8]) -> Option<String> {
    const FIELD: &[u8] = b"\"refresh_token\":\"";
    let start = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    String::from_utf8(body[start..start + len].to_vec()).ok()
}

/// The three benches for one backend.
fn bench_backend(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    backend: &str,
    redis: Option<&str>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys.json");
    file::generate(&keys, false).expect("write a keyring");
    let hasher = TokenHasher::new(
        Keyring::load(&keys)
            .expect("load the keyring")
            .token_secret(),
    );
    let state = rt
        .block_on(tokend::serve::build_state(
            &config(redis, &keys),
            Clock::System,
        ))
        .expect("state builds");
    let router = tokend::app(state.clone());

    // Full HTTP path: each iteration presents the next session's current token and
    // keeps the successor from the body.
    let pool = RefCell::new(
        rt.block_on(seed(&state, &hasher))
            .iter()
            .map(RefreshToken::encode)
            .collect::<Vec<_>>(),
    );
    let next = RefCell::new(0usize);
    group.bench_function(format!("http_app_oneshot/{backend}"), |b| {
        b.to_async(rt).iter(|| {
            let router = router.clone();
            let (pool, next) = (&pool, &next);
            async move {
                let i = {
                    let mut n = next.borrow_mut();
                    *n = (*n + 1) % SESSIONS;
                    *n
                };
                let body = format!(r#"{{"refresh_token":"{}"}}"#, pool.borrow()[i]);
                let request = Request::post("/v1/auth/refresh")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("request");
                let response = router.oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                pool.borrow_mut()[i] = refresh_token_in(&bytes).expect("a rotated token");
            }
        });
    });

    // The lifecycle alone: hash, store call, signature, no HTTP.
    let tokens = pool.borrow().clone();
    let pool = RefCell::new(tokens);
    group.bench_function(format!("lifecycle_refresh/{backend}"), |b| {
        b.to_async(rt).iter(|| {
            let (pool, next, state) = (&pool, &next, &state);
            async move {
                let i = {
                    let mut n = next.borrow_mut();
                    *n = (*n + 1) % SESSIONS;
                    *n
                };
                let token = pool.borrow()[i].clone();
                let issued = state.lifecycle.refresh(&token).await.expect("rotated");
                pool.borrow_mut()[i] = issued.refresh_token.encode();
            }
        });
    });

    // The store call alone: one rotation script (or map update).
    let pool = RefCell::new(
        pool.borrow()
            .iter()
            .map(|t| RefreshToken::parse(t).expect("valid token"))
            .collect::<Vec<_>>(),
    );
    group.bench_function(format!("store_rotate/{backend}"), |b| {
        b.to_async(rt).iter(|| {
            let (pool, next, state, hasher) = (&pool, &next, &state, &hasher);
            async move {
                let i = {
                    let mut n = next.borrow_mut();
                    *n = (*n + 1) % SESSIONS;
                    *n
                };
                let token = pool.borrow()[i].clone();
                let successor = hasher.successor(&token);
                let outcome = state
                    .lifecycle
                    .store()
                    .rotate(&Rotation {
                        user_id: &token.user_id,
                        session_id: &token.session_id,
                        presented: hasher.hash(&token),
                        successor: hasher.hash(&successor),
                        now_ms: now_ms(),
                        idle_ms: 15 * 60 * 1000,
                        grace_ms: GRACE_MS,
                    })
                    .await
                    .expect("store answers");
                assert!(
                    matches!(outcome, tokend::store::RotateOutcome::Rotated { .. }),
                    "{outcome:?}"
                );
                pool.borrow_mut()[i] = successor;
            }
        });
    });
}

fn refresh(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = config(None, Path::new("unused"));
    tokend::telemetry::init(&config);
    let _handle = tokend::metrics::install().expect("first recorder of the process");

    let mut group = c.benchmark_group("refresh");
    let started = Instant::now();
    bench_backend(&mut group, &rt, "memory", None);
    if let Some(url) = redis_url() {
        bench_backend(&mut group, &rt, "redis", Some(&url));
    }
    group.finish();
    eprintln!("refresh benches took {:?}", started.elapsed());
}

fn config_criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config_criterion();
    targets = refresh
}
criterion_main!(benches);
