//! Redis-specific guarantees: what is stored (hashes only, every session key with a
//! TTL), and behaviour while Redis is down and after it comes back.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Backend, RedisServer, TestApp, Tokens, test_args};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_plaintext_secret_and_every_session_key_expires() {
    let redis = RedisServer::private();
    let mut args = test_args(&Backend::Redis(redis.url.clone()));
    args.session_max_ttl = Some("2h".into());
    args.session_idle_ttl = Some("1h".into());
    let app = TestApp::start(args).await;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let b = app.login(&email, &password, "phone").await;
    let a2 = Tokens::from(&app.refresh(&a.refresh).await.body);

    let mut secrets: Vec<Vec<u8>> = vec![password.clone().into_bytes()];
    for t in [&a, &b, &a2] {
        secrets.push(t.refresh.clone().into_bytes());
        let secret = t.refresh.rsplit('.').next().expect("secret part");
        secrets.push(secret.as_bytes().to_vec());
        secrets.push(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(secret)
                .expect("base64url"),
        );
        secrets.push(t.access.clone().into_bytes());
    }

    let keys: Vec<String> = redis
        .cli(&["--scan", "--pattern", "tokend:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(keys.len() >= 4, "user, email and two sessions: {keys:?}");
    let mut session_keys = 0;
    for key in &keys {
        let dump = redis.cli_raw(&["--no-raw", "DUMP", key]);
        let kind = redis.cli(&["TYPE", key]);
        let content = match kind.trim() {
            "hash" => redis.cli_raw(&["HGETALL", key]),
            "string" => redis.cli_raw(&["GET", key]),
            other => panic!("unexpected type {other} for {key}"),
        };
        for s in &secrets {
            for blob in [&dump, &content] {
                assert!(
                    !blob.windows(s.len()).any(|w| w == s.as_slice()),
                    "{key} holds a secret in plaintext"
                );
            }
        }
        let pttl: i64 = redis.cli(&["PTTL", key]).trim().parse().expect("pttl");
        if key.contains(":s:") {
            session_keys += 1;
            assert!(pttl > 0, "{key} has no TTL");
            assert!(pttl <= 3_600_000, "{key} outlives its idle end");
        }
        if key.ends_with(":user") {
            let stored = String::from_utf8_lossy(&content).into_owned();
            assert!(stored.contains("$argon2id$"), "password stored as argon2id");
            let indexed = redis
                .cli(&["HKEYS", key])
                .lines()
                .filter(|field| field.starts_with("s:"))
                .count();
            assert_eq!(indexed, 2, "the user hash indexes both sessions");
        }
    }
    assert_eq!(session_keys, 2, "two sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_answers_503_quickly_and_recovers_without_restart() {
    let mut redis = RedisServer::private_persistent();
    let app = TestApp::start(test_args(&Backend::Redis(redis.url.clone()))).await;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;

    redis.kill();
    let started = Instant::now();
    let r = app.refresh(&t.refresh).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the command timeout"
    );
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!((r.status, r.code()), (503, "unavailable"));
    let r = common::Reply::read(app.http.get(app.url("/readyz")).send().await).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"));
    let r = common::Reply::read(app.http.get(app.url("/healthz")).send().await).await;
    assert_eq!(r.status, 200, "the process stays up");
    // Verifying access tokens needs no store.
    let r = app.get_bearer("/v1/sessions", &t.access).await;
    assert_eq!(r.status, 503);

    redis.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = common::Reply::read(app.http.get(app.url("/readyz")).send().await).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app.refresh(&t.refresh).await;
    assert_eq!(r.status, 200, "the session survived the outage: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokend_starts_while_redis_is_down_and_becomes_ready_when_it_comes() {
    let mut redis = RedisServer::not_started();
    let app = TestApp::start(test_args(&Backend::Redis(redis.url.clone()))).await;
    let r = common::Reply::read(app.http.get(app.url("/readyz")).send().await).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"));

    redis.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    while common::Reply::read(app.http.get(app.url("/readyz")).send().await)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (email, password) = app.user().await;
    app.login(&email, &password, "laptop").await;
}

/// A rotation Redis carries out later than its caller's clock says (the caller gave up
/// with a 503 while the command waited in a stalled Redis) is stamped with Redis's own
/// time, so the client's retry inside the grace window still gets the successor instead
/// of being taken for theft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_carried_out_late_is_stamped_with_the_time_it_happened() {
    use tokend::clock::Clock;
    use tokend::ids::{SessionId, UserId};
    use tokend::store::{NewSession, RotateOutcome, Rotation, SessionStore};
    use tokend::token::refresh::TokenHash;

    let redis = RedisServer::private();
    let store = common::connected_store(&redis.url).await;
    let rng = ring::rand::SystemRandom::new();
    let (user, session) = (UserId::generate(&rng), SessionId::generate(&rng));
    let now = Clock::System.now_ms();
    store
        .create_session(&NewSession {
            user_id: user.clone(),
            session_id: session.clone(),
            token_hash: TokenHash([1; 32]),
            device: None,
            user_agent: None,
            ip: None,
            now_ms: now - 60_000,
            expires_at_ms: now + 3_600_000,
            absolute_expires_at_ms: now + 3_600_000,
            password_hash: None,
        })
        .await
        .expect("create");
    let rotation = |at: u64| Rotation {
        user_id: &user,
        session_id: &session,
        presented: TokenHash([1; 32]),
        successor: TokenHash([2; 32]),
        now_ms: at,
        idle_ms: 3_600_000,
        grace_ms: 1_000,
    };
    // The caller stamped its request 5 s before Redis ran it.
    let late = store.rotate(&rotation(now - 5_000)).await.expect("rotate");
    assert!(matches!(late, RotateOutcome::Rotated { .. }), "{late:?}");
    let retry = store
        .rotate(&rotation(Clock::System.now_ms()))
        .await
        .expect("retry");
    assert!(
        matches!(retry, RotateOutcome::Replayed { .. }),
        "the retry was taken for theft: {retry:?}"
    );
}

/// Sessions written by a build that kept the index in a sorted set per user
/// (`tokend:{u:<uid>}:sessions`) still refresh, are listed, and end with logout
/// everywhere and a password change; the sorted set is folded into the user hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_indexed_by_an_earlier_build_are_listed_and_revoked() {
    use tokend::clock::Clock;
    use tokend::ids::{SessionId, UserId};
    use tokend::store::{RotateOutcome, Rotation, SessionStore};
    use tokend::token::refresh::TokenHash;

    let redis = RedisServer::private();
    let store = common::connected_store(&redis.url).await;
    let rng = ring::rand::SystemRandom::new();
    let now = Clock::System.now_ms();
    let end = (now + 3_600_000).to_string();
    let current = *b"abcdefghijklmnopqrstuvwxyz012345";

    // Writes a user with two sessions in the earlier layout; returns their ids, oldest first.
    let old_layout = |user: &UserId| {
        let legacy = format!("tokend:{{u:{user}}}:sessions");
        let mut ids = Vec::new();
        for age in [2_000, 1_000] {
            let id = SessionId::generate(&rng);
            let created = (now - age).to_string();
            let key = format!("tokend:{{u:{user}}}:s:{id}");
            redis.cli(&[
                "HSET",
                &key,
                "h",
                std::str::from_utf8(&current).expect("ascii"),
                "r",
                &created,
                "c",
                &created,
                "l",
                &created,
                "x",
                &end,
            ]);
            redis.cli(&["PEXPIREAT", &key, &end]);
            redis.cli(&["ZADD", &legacy, &created, id.as_str()]);
            ids.push(id);
        }
        redis.cli(&[
            "HSET",
            &format!("tokend:{{u:{user}}}:user"),
            "e",
            "old@example.com",
            "p",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        ]);
        (legacy, ids)
    };
    let live = |user: &UserId, id: &SessionId| {
        redis
            .cli(&["HEXISTS", &format!("tokend:{{u:{user}}}:s:{id}"), "h"])
            .trim()
            == "1"
    };

    let alice = UserId::generate(&rng);
    let (legacy, ids) = old_layout(&alice);
    let rotated = store
        .rotate(&Rotation {
            user_id: &alice,
            session_id: &ids[0],
            presented: TokenHash(current),
            successor: TokenHash([7; 32]),
            now_ms: now,
            idle_ms: 600_000,
            grace_ms: 10_000,
        })
        .await
        .expect("rotate");
    assert!(
        matches!(rotated, RotateOutcome::Rotated { .. }),
        "{rotated:?}"
    );
    let listed: Vec<SessionId> = store
        .list_sessions(&alice, now)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(listed, vec![ids[1].clone(), ids[0].clone()], "newest first");
    assert_eq!(redis.cli(&["EXISTS", &legacy]).trim(), "0", "folded in");
    assert_eq!(store.revoke_all(&alice).await.expect("revoke all"), 2);
    assert!(!live(&alice, &ids[0]) && !live(&alice, &ids[1]));

    // Logout everywhere and a password change reach them without a listing first.
    let bob = UserId::generate(&rng);
    let (_, ids) = old_layout(&bob);
    assert_eq!(store.revoke_all(&bob).await.expect("revoke all"), 2);
    assert!(!live(&bob, &ids[0]) && !live(&bob, &ids[1]));
    let carol = UserId::generate(&rng);
    let (legacy, ids) = old_layout(&carol);
    let ended = store
        .set_password_and_revoke_all(
            &carol,
            "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA",
        )
        .await
        .expect("set password");
    assert_eq!(ended, Some(2));
    assert!(!live(&carol, &ids[0]) && !live(&carol, &ids[1]));
    assert_eq!(redis.cli(&["EXISTS", &legacy]).trim(), "0");
}

#[test]
fn each_worker_sends_through_its_own_connections_while_they_are_up() {
    use fred::prelude::*;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use tokend::store::redis::{RedisSettings, RedisStore};

    let redis = RedisServer::private();
    let workers = tokend::worker::Workers::start(2).expect("workers");
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Error reporting runs on the caller's runtime, the connections on the workers'.
    let _control = control.enter();
    let store = Arc::new(
        RedisStore::connect(&RedisSettings {
            url: tokend::secret::Secret::new(redis.url.clone()),
            command_timeout: Duration::from_secs(2),
            pool_size: 4,
            workers: workers.handles().to_vec(),
        })
        .expect("valid URL"),
    );
    assert!(control.block_on(store.wait_connected(Duration::from_secs(10))));
    let ids: Vec<String> = store
        .pool()
        .clients()
        .iter()
        .map(|c| c.id().to_owned())
        .collect();
    // The clients each command from a task on `worker` went through.
    let used_by = |worker: usize| -> BTreeSet<String> {
        let store = store.clone();
        control
            .block_on(workers.handles()[worker].spawn(async move {
                let mut used = BTreeSet::new();
                for _ in 0..6 {
                    let client = store.client();
                    client.ping::<()>(None).await.expect("ping");
                    used.insert(client.id().to_owned());
                }
                used
            }))
            .expect("task")
    };
    let set = |of: &[usize]| of.iter().map(|&i| ids[i].clone()).collect::<BTreeSet<_>>();

    // Connection i belongs to worker i % 2, and a worker spreads over its own.
    assert_eq!(used_by(0), set(&[0, 2]));
    assert_eq!(used_by(1), set(&[1, 3]));

    // A worker whose connections are down borrows the others'.
    control.block_on(async {
        for i in [0, 2] {
            store.pool().clients()[i].quit().await.expect("quit");
        }
    });
    let borrowed = used_by(0);
    assert!(
        !borrowed.is_empty() && borrowed.is_subset(&set(&[1, 3])),
        "{borrowed:?}"
    );
}
