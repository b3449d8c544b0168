//! Seeds a running tokend for the load tests in `load-tests/`.
//!
//! - `users`: registers users over HTTP and writes `email password` lines, for the
//!   login and mixed scenarios.
//! - `sessions-http`: registers one user per session over HTTP, logs each in once and
//!   writes the refresh tokens, one a line. Works with either store; every session costs
//!   two password hashes, so point it at an instance with cheap argon2.
//! - `sessions-redis`: writes the users (email and a real argon2id hash, as registration
//!   writes them), then opens sessions straight in Redis through the crate's own
//!   `RedisStore::create_session`, with tokens hashed under the keyring's secret, so the
//!   key layout is exactly what a login writes. Fast enough for 100,000 sessions. With
//!   `--memory-report` it prints Redis `used_memory` after the users and after the
//!   sessions, so the difference is what the sessions alone cost.
//!
//! `cargo run --release --example load_seed -- sessions-redis --help` lists the flags.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use fred::prelude::ClientLike as _;
use fred::types::InfoKind;
use futures::StreamExt as _;
use serde_json::json;
use tokend::clock::Clock;
use tokend::ids::{SessionId, UserId};
use tokend::password::{Cost, PasswordHasher};
use tokend::secret::Secret;
use tokend::store::SessionStore as _;
use tokend::store::redis::{RedisSettings, RedisStore};
use tokend::store::{NewSession, UserRecord};
use tokend::token::keyring::Keyring;
use tokend::token::refresh::{RefreshToken, TokenHasher};

/// Seeds users and sessions for a load test.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Seed,
}

#[derive(Subcommand)]
enum Seed {
    /// Register users over HTTP; write `email password` lines.
    Users {
        /// Base URL of tokend, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        base: String,
        /// How many users.
        #[arg(long)]
        count: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// One user and one login per session over HTTP; write refresh tokens.
    SessionsHttp {
        /// Base URL of tokend.
        #[arg(long)]
        base: String,
        /// How many sessions.
        #[arg(long)]
        count: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Sessions written straight to Redis by the crate's store code.
    SessionsRedis {
        /// Redis URL.
        #[arg(long)]
        redis_url: String,
        /// Keyring file tokend runs with (its token secret keys the hashes).
        #[arg(long)]
        keys: PathBuf,
        /// How many sessions.
        #[arg(long)]
        count: usize,
        /// Sessions per user (1: each session has its own user and index).
        #[arg(long, default_value_t = 1)]
        per_user: usize,
        /// Output file for the refresh tokens; omit to discard them.
        #[arg(long)]
        out: Option<PathBuf>,
        /// `User-Agent` stored with each session, as a login would store it.
        #[arg(long, default_value = "")]
        user_agent: String,
        /// Device label stored with each session.
        #[arg(long, default_value = "")]
        device: String,
        /// Session idle lifetime in seconds (tokend's default: 7 days).
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        idle_secs: u64,
        /// Session absolute lifetime in seconds (tokend's default: 30 days).
        #[arg(long, default_value_t = 30 * 24 * 3600)]
        max_secs: u64,
        /// Store calls in flight at once (fred pipelines them).
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Print `used_memory_users=<bytes>` once the users are written and
        /// `used_memory_sessions=<bytes>` once the sessions are, on standard output.
        #[arg(long)]
        memory_report: bool,
    },
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

fn write_lines(path: &PathBuf, lines: &[String]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create output"));
    for line in lines {
        writeln!(out, "{line}").expect("write output");
    }
    out.flush().expect("flush output");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

async fn post(http: &reqwest::Client, url: &str, body: serde_json::Value) -> serde_json::Value {
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url} answered {status}: {body}");
    body
}

async fn register(http: &reqwest::Client, base: &str, email: &str, password: &str) {
    post(
        http,
        &format!("{base}/v1/users"),
        json!({"email": email, "password": password}),
    )
    .await;
}

async fn users(base: &str, count: usize, out: &PathBuf, concurrency: usize) {
    let http = client();
    let prefix = unique_prefix();
    let lines: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let http = &http;
            let prefix = &prefix;
            async move {
                let email = format!("load-{prefix}-{i}@example.com");
                let password = format!("load-password-{i}");
                register(http, base, &email, &password).await;
                format!("{email} {password}")
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    write_lines(out, &lines);
}

async fn sessions_http(base: &str, count: usize, out: &PathBuf, concurrency: usize) {
    let http = client();
    let prefix = unique_prefix();
    let tokens: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let http = &http;
            let prefix = &prefix;
            async move {
                let email = format!("seed-{prefix}-{i}@example.com");
                let password = format!("seed-password-{i}");
                register(http, base, &email, &password).await;
                let body = post(
                    http,
                    &format!("{base}/v1/auth/login"),
                    json!({"email": email, "password": password}),
                )
                .await;
                body["refresh_token"]
                    .as_str()
                    .expect("refresh_token in the login response")
                    .to_owned()
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    write_lines(out, &tokens);
}

struct RedisSeed {
    redis_url: String,
    keys: PathBuf,
    count: usize,
    per_user: usize,
    out: Option<PathBuf>,
    user_agent: String,
    device: String,
    idle_secs: u64,
    max_secs: u64,
    concurrency: usize,
    memory_report: bool,
}

async fn used_memory(store: &RedisStore) -> u64 {
    let info: String = store
        .pool()
        .next()
        .info(Some(InfoKind::Memory))
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

async fn sessions_redis(seed: RedisSeed) {
    let keyring = Keyring::load(&seed.keys).expect("load the keyring");
    let hasher = TokenHasher::new(keyring.token_secret());
    let store = RedisStore::connect(&RedisSettings {
        url: Secret::new(seed.redis_url.clone()),
        command_timeout: Duration::from_secs(5),
        pool_size: 4,
        workers: Vec::new(),
    })
    .expect("valid Redis URL");
    assert!(
        store.wait_connected(Duration::from_secs(5)).await,
        "Redis does not answer"
    );
    let rng = ring::rand::SystemRandom::new();
    let now = Clock::System.now_ms();
    let absolute = now + seed.max_secs * 1000;
    let expires = (now + seed.idle_secs * 1000).min(absolute);
    let label = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let per_user = seed.per_user.max(1);
    let users: Vec<UserId> = (0..seed.count.div_ceil(per_user))
        .map(|_| UserId::generate(&rng))
        .collect();

    // One real hash at the default cost: every record holds a PHC string of the length
    // registration writes.
    let password_hash = PasswordHasher::new(Cost::default(), 1)
        .expect("default argon2 cost")
        .hash(&Secret::new("load-test password".to_owned()))
        .await
        .expect("hash");
    futures::stream::iter(&users)
        .map(|id| {
            let record = UserRecord {
                id: id.clone(),
                email: format!("seed-{id}@load.test").to_lowercase(),
                password_hash: password_hash.clone(),
            };
            let store = &store;
            async move {
                assert!(
                    store.insert_user(&record).await.expect("user written"),
                    "seeded email already taken"
                );
            }
        })
        .buffer_unordered(seed.concurrency.max(1))
        .collect::<()>()
        .await;
    if seed.memory_report {
        println!("used_memory_users={}", used_memory(&store).await);
    }

    let started = Instant::now();
    let tokens: Vec<String> = futures::stream::iter(0..seed.count)
        .map(|i| {
            let token = RefreshToken::generate(
                &rng,
                users[i / per_user].clone(),
                SessionId::generate(&rng),
            );
            let session = NewSession {
                user_id: token.user_id.clone(),
                session_id: token.session_id.clone(),
                token_hash: hasher.hash(&token),
                device: label(&seed.device),
                user_agent: label(&seed.user_agent),
                ip: Some("127.0.0.1".to_owned()),
                now_ms: now,
                expires_at_ms: expires,
                absolute_expires_at_ms: absolute,
                password_hash: None,
            };
            let store = &store;
            async move {
                store
                    .create_session(&session)
                    .await
                    .expect("session created");
                token.encode()
            }
        })
        .buffer_unordered(seed.concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    eprintln!(
        "created {} sessions in {:.2} s ({:.0}/s)",
        tokens.len(),
        elapsed.as_secs_f64(),
        tokens.len() as f64 / elapsed.as_secs_f64()
    );
    if seed.memory_report {
        println!("used_memory_sessions={}", used_memory(&store).await);
    }
    if let Some(out) = &seed.out {
        write_lines(out, &tokens);
    }
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Seed::Users {
            base,
            count,
            out,
            concurrency,
        } => users(&base, count, &out, concurrency).await,
        Seed::SessionsHttp {
            base,
            count,
            out,
            concurrency,
        } => sessions_http(&base, count, &out, concurrency).await,
        Seed::SessionsRedis {
            redis_url,
            keys,
            count,
            per_user,
            out,
            user_agent,
            device,
            idle_secs,
            max_secs,
            concurrency,
            memory_report,
        } => {
            sessions_redis(RedisSeed {
                redis_url,
                keys,
                count,
                per_user,
                out,
                user_agent,
                device,
                idle_secs,
                max_secs,
                concurrency,
                memory_report,
            })
            .await
        }
    }
}
