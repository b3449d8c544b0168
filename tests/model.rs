//! A state-machine property test: random sequences of login, refresh (current,
//! replayed and stale tokens), logout, logout-all, password change and time passing,
//! checked after every step against a small model of which sessions must be live and
//! what each call must answer. Runs on both stores, with a manual clock.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, RedisServer, test_args};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokend::clock::Clock;
use tokend::config;
use tokend::lifecycle::{ClientMeta, Lifecycle, LifecycleError};
use tokend::secret::Secret;

const GRACE_MS: u64 = 10_000;
const USERS: usize = 2;

#[derive(Clone, Copy, Debug)]
enum Which {
    Current,
    Previous,
    Older,
}

#[derive(Clone, Debug)]
enum Op {
    Login(usize),
    Refresh(usize, Which),
    Logout(usize),
    LogoutAll(usize),
    ChangePassword(usize, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let which = prop_oneof![
        6 => Just(Which::Current),
        3 => Just(Which::Previous),
        1 => Just(Which::Older),
    ];
    prop_oneof![
        3 => (0..USERS).prop_map(Op::Login),
        8 => (0..3usize, which).prop_map(|(s, w)| Op::Refresh(s, w)),
        1 => (0..3usize).prop_map(Op::Logout),
        1 => (0..USERS).prop_map(Op::LogoutAll),
        1 => (0..USERS, any::<bool>()).prop_map(|(u, ok)| Op::ChangePassword(u, ok)),
        3 => prop_oneof![Just(1_000u64), Just(GRACE_MS - 1), Just(GRACE_MS + 1)].prop_map(Op::Advance),
    ]
}

struct ModelSession {
    user: usize,
    id: String,
    tokens: Vec<String>,
    access: String,
    rotated_at: u64,
    live: bool,
}

struct ModelUser {
    email: String,
    password: String,
    access: Option<String>,
}

struct Model {
    now: u64,
    users: Vec<ModelUser>,
    sessions: Vec<ModelSession>,
}

fn reason(e: &LifecycleError) -> String {
    match e {
        LifecycleError::InvalidToken(_) => "invalid_token".into(),
        LifecycleError::TokenReused => "token_reused".into(),
        LifecycleError::InvalidCredentials => "invalid_credentials".into(),
        other => format!("{other:?}"),
    }
}

async fn run_case(life: &Lifecycle, clock: &Clock, ops: &[Op]) -> Result<(), String> {
    let mut m = Model {
        now: clock.now_ms(),
        users: Vec::new(),
        sessions: Vec::new(),
    };
    for _ in 0..USERS {
        let email = format!("model-{}@example.com", common::unique());
        let password = "model password 0".to_owned();
        life.register(&email, &Secret::new(password.clone()))
            .await
            .map_err(|e| format!("register: {e}"))?;
        m.users.push(ModelUser {
            email,
            password,
            access: None,
        });
    }

    for (step, op) in ops.iter().enumerate() {
        let ctx = |what: String| format!("step {step} {op:?}: {what}");
        match *op {
            Op::Login(u) => {
                let user = &m.users[u];
                let issued = life
                    .login(
                        &user.email,
                        &Secret::new(user.password.clone()),
                        ClientMeta::default(),
                    )
                    .await
                    .map_err(|e| ctx(format!("login failed: {e}")))?;
                m.users[u].access = Some(issued.access_token.clone());
                m.sessions.push(ModelSession {
                    user: u,
                    id: issued.session_id.as_str().to_owned(),
                    tokens: vec![issued.refresh_token.encode()],
                    access: issued.access_token,
                    rotated_at: 0,
                    live: true,
                });
            }
            Op::Refresh(s, which) => {
                if m.sessions.is_empty() {
                    continue;
                }
                let i = s % m.sessions.len();
                let sess = &m.sessions[i];
                let back = match which {
                    Which::Current => 0,
                    Which::Previous => 1,
                    Which::Older => 2,
                };
                if sess.tokens.len() <= back {
                    continue;
                }
                let presented = sess.tokens[sess.tokens.len() - 1 - back].clone();
                let expected: Result<Option<String>, &str> = match (sess.live, back) {
                    (false, _) => Err("invalid_token"),
                    (true, 0) => Ok(None),
                    (true, 1) if m.now - sess.rotated_at < GRACE_MS => {
                        Ok(sess.tokens.last().cloned())
                    }
                    (true, _) => Err("token_reused"),
                };
                let got = life.refresh(&presented).await;
                match (expected, got) {
                    (Ok(same), Ok(issued)) => {
                        let token = issued.refresh_token.encode();
                        let sess = &mut m.sessions[i];
                        match same {
                            Some(successor) => {
                                if token != successor {
                                    return Err(ctx("grace replay forked the session".into()));
                                }
                            }
                            None => {
                                if sess.tokens.contains(&token) {
                                    return Err(ctx("rotation repeated a token".into()));
                                }
                                sess.tokens.push(token);
                                sess.rotated_at = m.now;
                            }
                        }
                        sess.access = issued.access_token;
                    }
                    (Err(code), Err(e)) if reason(&e) == code => {
                        if code == "token_reused" {
                            m.sessions[i].live = false;
                        }
                    }
                    (expected, got) => {
                        return Err(ctx(format!(
                            "expected {expected:?}, got {:?}",
                            got.map(|_| "200").map_err(|e| reason(&e))
                        )));
                    }
                }
            }
            Op::Logout(s) => {
                if m.sessions.is_empty() {
                    continue;
                }
                let i = s % m.sessions.len();
                let token = m.sessions[i].tokens.last().cloned().unwrap_or_default();
                life.logout(&token)
                    .await
                    .map_err(|e| ctx(format!("logout: {e}")))?;
                m.sessions[i].live = false;
            }
            Op::LogoutAll(u) => {
                let Some(access) = m.users[u].access.clone() else {
                    continue;
                };
                let claims = life
                    .verify_access(&access)
                    .map_err(|e| ctx(format!("verify: {e}")))?;
                life.logout_all(&claims)
                    .await
                    .map_err(|e| ctx(format!("logout-all: {e}")))?;
                for s in m.sessions.iter_mut().filter(|s| s.user == u) {
                    s.live = false;
                }
            }
            Op::ChangePassword(u, correct) => {
                let Some(access) = m.users[u].access.clone() else {
                    continue;
                };
                let claims = life
                    .verify_access(&access)
                    .map_err(|e| ctx(format!("verify: {e}")))?;
                let current = if correct {
                    m.users[u].password.clone()
                } else {
                    "not the password".into()
                };
                let new = format!("model password {step}");
                let got = life
                    .change_password(&claims, &Secret::new(current), &Secret::new(new.clone()))
                    .await;
                match (correct, got) {
                    (true, Ok(())) => {
                        m.users[u].password = new;
                        for s in m.sessions.iter_mut().filter(|s| s.user == u) {
                            s.live = false;
                        }
                    }
                    (false, Err(LifecycleError::InvalidCredentials)) => {}
                    (_, got) => return Err(ctx(format!("password change answered {got:?}"))),
                }
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms));
                m.now += ms;
            }
        }

        // After every step, each user's listed sessions are exactly the model's live ones.
        for (u, user) in m.users.iter().enumerate() {
            let Some(access) = &user.access else { continue };
            let claims = life
                .verify_access(access)
                .map_err(|e| ctx(format!("verify: {e}")))?;
            let listed: BTreeSet<String> = life
                .sessions(&claims)
                .await
                .map_err(|e| ctx(format!("list: {e}")))?
                .into_iter()
                .map(|v| v.record.session_id.as_str().to_owned())
                .collect();
            let live: BTreeSet<String> = m
                .sessions
                .iter()
                .filter(|s| s.user == u && s.live)
                .map(|s| s.id.clone())
                .collect();
            if listed != live {
                return Err(ctx(format!(
                    "user {u}: listed {listed:?}, model says {live:?}"
                )));
            }
        }
    }
    // Every live session's latest token still works; every ended one does not.
    for s in &m.sessions {
        let got = life.refresh(s.tokens.last().expect("one token")).await;
        if got.is_ok() != s.live {
            return Err(format!(
                "final refresh of {} answered {:?}, live {}",
                s.id,
                got.map(|_| ()),
                s.live
            ));
        }
        let _ = &s.access;
    }
    Ok(())
}

fn check(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Clock::manual();
    let mut args = test_args(&backend);
    args.refresh_grace = Some(format!("{GRACE_MS}ms"));
    let config = config::Config::from_args(&args).expect("config");
    let state = runtime
        .block_on(tokend::serve::build_state(&config, clock.clone()))
        .expect("state");
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        runtime
            .block_on(run_case(&state.lifecycle, &clock, &ops))
            .map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn the_embedded_store_follows_the_session_model() {
    check(Backend::Memory);
}

#[test]
fn the_redis_store_follows_the_session_model() {
    let redis = RedisServer::any();
    check(Backend::Redis(redis.url.clone()));
}
