//! One conformance suite for every `SessionStore`: each rule runs against the embedded
//! store and against a real `redis-server`.

mod common;

use std::time::Duration;

use common::RedisServer;
use tokend::clock::Clock;
use tokend::ids::{SessionId, UserId};
use tokend::store::memory::MemoryStore;
use tokend::store::redis::RedisStore;
use tokend::store::{LimitKey, NewSession, RotateOutcome, Rotation, SessionStore, UserRecord};
use tokend::token::refresh::TokenHash;

const HOUR_MS: u64 = 3_600_000;

struct Fixture<S> {
    store: S,
    rng: ring::rand::SystemRandom,
    _redis: Option<RedisServer>,
}

fn memory() -> Fixture<MemoryStore> {
    Fixture {
        store: MemoryStore::new(Clock::System),
        rng: ring::rand::SystemRandom::new(),
        _redis: None,
    }
}

async fn redis() -> Fixture<RedisStore> {
    let server = RedisServer::any();
    let store = common::connected_store(&server.url).await;
    Fixture {
        store,
        rng: ring::rand::SystemRandom::new(),
        _redis: Some(server),
    }
}

fn now() -> u64 {
    Clock::System.now_ms()
}

fn hash(byte: u8) -> TokenHash {
    TokenHash([byte; 32])
}

impl<S: SessionStore> Fixture<S> {
    fn user(&self) -> UserId {
        UserId::generate(&self.rng)
    }

    async fn session(&self, user: &UserId, token: TokenHash, ttl_ms: u64) -> SessionId {
        let id = SessionId::generate(&self.rng);
        let now = now();
        self.store
            .create_session(&NewSession {
                user_id: user.clone(),
                session_id: id.clone(),
                token_hash: token,
                device: Some("laptop".into()),
                user_agent: Some("agent/1.0".into()),
                ip: Some("192.0.2.7".into()),
                now_ms: now,
                expires_at_ms: now + ttl_ms,
                absolute_expires_at_ms: now + 24 * HOUR_MS,
                password_hash: None,
            })
            .await
            .expect("create");
        id
    }

    async fn rotate(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: u8,
        successor: u8,
        at: u64,
        grace_ms: u64,
    ) -> RotateOutcome {
        self.store
            .rotate(&Rotation {
                user_id: user,
                session_id: session,
                presented: hash(presented),
                successor: hash(successor),
                now_ms: at,
                idle_ms: HOUR_MS,
                grace_ms,
            })
            .await
            .expect("rotate")
    }

    async fn live(&self, user: &UserId) -> Vec<SessionId> {
        self.store
            .list_sessions(user, now())
            .await
            .expect("list")
            .into_iter()
            .map(|s| s.session_id)
            .collect()
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::memory()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::redis().await).await;
                }
            )*
        }
    };
}

conformance!(
    users_are_unique_by_email_and_found_by_email_and_id,
    rotation_moves_the_session_to_its_successor,
    predecessor_within_grace_replays_without_change,
    predecessor_after_grace_revokes_the_session,
    an_unrelated_token_reports_the_current_hash,
    unknown_sessions_are_unknown,
    revoke_by_token_accepts_current_and_predecessor_only,
    revoke_session_touches_only_that_session,
    revoke_all_ends_every_session_of_one_user,
    revoke_all_by_token_requires_a_live_token,
    every_kind_of_revocation_is_reported_as_revoked,
    login_limits_count_atomically_in_a_fixed_window,
    password_change_revokes_all_atomically,
    a_session_is_created_only_while_the_verified_password_stands,
    sessions_end_at_their_expiry_and_leave_the_index,
    listing_is_newest_first_with_all_fields,
);

async fn users_are_unique_by_email_and_found_by_email_and_id<S: SessionStore>(f: Fixture<S>) {
    let email = format!("u-{}@example.com", common::unique());
    let user = UserRecord {
        id: f.user(),
        email: email.clone(),
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
    };
    assert!(f.store.insert_user(&user).await.expect("insert"));
    let twin = UserRecord {
        id: f.user(),
        ..user.clone()
    };
    assert!(!f.store.insert_user(&twin).await.expect("insert twin"));
    assert_eq!(
        f.store.user_by_email(&email).await.expect("by email"),
        Some(user.clone())
    );
    assert_eq!(
        f.store.user_by_id(&user.id).await.expect("by id"),
        Some(user.clone())
    );
    assert_eq!(
        f.store.user_by_id(&twin.id).await.expect("twin by id"),
        None
    );
    assert_eq!(
        f.store
            .user_by_email("nobody@example.com")
            .await
            .expect("none"),
        None
    );
}

async fn rotation_moves_the_session_to_its_successor<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let s = f.session(&user, hash(1), HOUR_MS).await;
    let t = now();
    assert!(
        // The idle end moves to an hour after the rotation (Redis stamps it with the
        // later of the caller's clock and its own, a few ms on).
        matches!(f.rotate(&user, &s, 1, 2, t, 10_000).await, RotateOutcome::Rotated { expires_at_ms, .. } if (t + HOUR_MS..t + HOUR_MS + 1_000).contains(&expires_at_ms))
    );
    assert!(matches!(
        f.rotate(&user, &s, 2, 3, t + 1, 10_000).await,
        RotateOutcome::Rotated { .. }
    ));
    assert!(matches!(
        f.rotate(&user, &s, 3, 4, t + 2, 10_000).await,
        RotateOutcome::Rotated { .. }
    ));
}

async fn predecessor_within_grace_replays_without_change<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let s = f.session(&user, hash(1), HOUR_MS).await;
    let t = now();
    let RotateOutcome::Rotated {
        absolute_expires_at_ms: absolute,
        ..
    } = f.rotate(&user, &s, 1, 2, t, 10_000).await
    else {
        panic!("the first rotation rotates");
    };
    // The session was created a moment before `t` with a 24 h absolute lifetime.
    assert!((t + 24 * HOUR_MS - 1_000..=t + 24 * HOUR_MS).contains(&absolute));
    for dt in [0, 5_000, 9_999] {
        assert!(
            matches!(
                f.rotate(&user, &s, 1, 2, t + dt, 10_000).await,
                RotateOutcome::Replayed { absolute_expires_at_ms, .. } if absolute_expires_at_ms == absolute
            ),
            "at +{dt}ms"
        );
    }
    // The successor is still current.
    assert!(matches!(
        f.rotate(&user, &s, 2, 3, t + 1, 10_000).await,
        RotateOutcome::Rotated { .. }
    ));
}

async fn predecessor_after_grace_revokes_the_session<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let s = f.session(&user, hash(1), HOUR_MS).await;
    let keep = f.session(&user, hash(9), HOUR_MS).await;
    let t = now();
    f.rotate(&user, &s, 1, 2, t, 10_000).await;
    assert_eq!(
        f.rotate(&user, &s, 1, 2, t + 10_500, 10_000).await,
        RotateOutcome::Reused
    );
    assert_eq!(
        f.rotate(&user, &s, 2, 3, t + 10_501, 10_000).await,
        RotateOutcome::Revoked
    );
    assert_eq!(f.live(&user).await, vec![keep]);
}

async fn an_unrelated_token_reports_the_current_hash<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let s = f.session(&user, hash(1), HOUR_MS).await;
    assert_eq!(
        f.rotate(&user, &s, 7, 8, now(), 10_000).await,
        RotateOutcome::Superseded { current: hash(1) }
    );
    assert!(matches!(
        f.rotate(&user, &s, 1, 2, now(), 10_000).await,
        RotateOutcome::Rotated { .. }
    ));
}

async fn unknown_sessions_are_unknown<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let s = SessionId::generate(&f.rng);
    assert_eq!(
        f.rotate(&user, &s, 1, 2, now(), 10_000).await,
        RotateOutcome::Unknown
    );
    assert!(!f.store.revoke_session(&user, &s).await.expect("revoke"));
    assert!(f.live(&user).await.is_empty());
}

async fn revoke_by_token_accepts_current_and_predecessor_only<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let a = f.session(&user, hash(1), HOUR_MS).await;
    let b = f.session(&user, hash(5), HOUR_MS).await;
    f.rotate(&user, &a, 1, 2, now(), 10_000).await;
    assert!(
        !f.store
            .revoke_by_token(&user, &a, hash(7), hash(8))
            .await
            .expect("wrong")
    );
    assert!(
        f.store
            .revoke_by_token(&user, &a, hash(1), hash(2))
            .await
            .expect("predecessor")
    );
    assert!(
        !f.store
            .revoke_by_token(&user, &a, hash(2), hash(3))
            .await
            .expect("gone")
    );
    assert!(
        f.store
            .revoke_by_token(&user, &b, hash(5), hash(6))
            .await
            .expect("current")
    );
    assert!(f.live(&user).await.is_empty());
}

async fn revoke_session_touches_only_that_session<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let other = f.user();
    let a = f.session(&user, hash(1), HOUR_MS).await;
    let b = f.session(&user, hash(2), HOUR_MS).await;
    let c = f.session(&other, hash(3), HOUR_MS).await;
    assert!(!f.store.revoke_session(&user, &c).await.expect("not theirs"));
    assert!(f.store.revoke_session(&user, &a).await.expect("own"));
    assert_eq!(f.live(&user).await, vec![b]);
    assert_eq!(f.live(&other).await, vec![c]);
}

async fn revoke_all_ends_every_session_of_one_user<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let other = f.user();
    for i in 0..3 {
        f.session(&user, hash(i), HOUR_MS).await;
    }
    let keep = f.session(&other, hash(9), HOUR_MS).await;
    assert_eq!(f.store.revoke_all(&user).await.expect("revoke all"), 3);
    assert!(f.live(&user).await.is_empty());
    assert_eq!(f.store.revoke_all(&user).await.expect("again"), 0);
    assert_eq!(f.live(&other).await, vec![keep]);
}

async fn revoke_all_by_token_requires_a_live_token<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let a = f.session(&user, hash(1), HOUR_MS).await;
    f.session(&user, hash(2), HOUR_MS).await;
    assert_eq!(
        f.store
            .revoke_all_by_token(&user, &a, hash(7), hash(8))
            .await
            .expect("bad"),
        None
    );
    assert_eq!(f.live(&user).await.len(), 2);
    assert_eq!(
        f.store
            .revoke_all_by_token(&user, &a, hash(1), hash(9))
            .await
            .expect("good"),
        Some(2)
    );
    assert!(f.live(&user).await.is_empty());
}

async fn password_change_revokes_all_atomically<S: SessionStore>(f: Fixture<S>) {
    let user = UserRecord {
        id: f.user(),
        email: format!("p-{}@example.com", common::unique()),
        password_hash: "old".into(),
    };
    f.store.insert_user(&user).await.expect("insert");
    f.session(&user.id, hash(1), HOUR_MS).await;
    f.session(&user.id, hash(2), HOUR_MS).await;
    assert_eq!(
        f.store
            .set_password_and_revoke_all(&user.id, "new")
            .await
            .expect("set"),
        Some(2)
    );
    assert!(f.live(&user.id).await.is_empty());
    let stored = f
        .store
        .user_by_id(&user.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.password_hash, "new");
    assert_eq!(
        f.store
            .set_password_and_revoke_all(&f.user(), "x")
            .await
            .expect("unknown"),
        None
    );
}

/// A login verifies the password, then creates the session; a password change in
/// between revoked every session, so the creation must see the change and write nothing.
async fn a_session_is_created_only_while_the_verified_password_stands<S: SessionStore>(
    f: Fixture<S>,
) {
    let user = UserRecord {
        id: f.user(),
        email: format!("c-{}@example.com", common::unique()),
        password_hash: "old".into(),
    };
    f.store.insert_user(&user).await.expect("insert");
    let login = |id: SessionId, verified: &str| {
        let now = now();
        NewSession {
            user_id: user.id.clone(),
            session_id: id,
            token_hash: hash(9),
            device: None,
            user_agent: None,
            ip: None,
            now_ms: now,
            expires_at_ms: now + HOUR_MS,
            absolute_expires_at_ms: now + 24 * HOUR_MS,
            password_hash: Some(verified.to_owned()),
        }
    };
    let before = SessionId::generate(&f.rng);
    assert!(
        f.store
            .create_session(&login(before, "old"))
            .await
            .expect("create")
    );
    f.store
        .set_password_and_revoke_all(&user.id, "new")
        .await
        .expect("set");

    let late = SessionId::generate(&f.rng);
    assert!(
        !f.store
            .create_session(&login(late.clone(), "old"))
            .await
            .expect("create late")
    );
    assert!(
        f.live(&user.id).await.is_empty(),
        "a stale login left a session"
    );
    assert_eq!(
        f.rotate(&user.id, &late, 9, 10, now(), 10_000).await,
        RotateOutcome::Unknown,
        "nothing of the refused session was written"
    );

    let after = SessionId::generate(&f.rng);
    assert!(
        f.store
            .create_session(&login(after.clone(), "new"))
            .await
            .expect("create with the new password")
    );
    assert_eq!(f.live(&user.id).await, vec![after]);
    let stranger = f.user();
    let mut orphan = login(SessionId::generate(&f.rng), "new");
    orphan.user_id = stranger;
    assert!(
        !f.store.create_session(&orphan).await.expect("create"),
        "no session for a user that does not exist"
    );
}

async fn sessions_end_at_their_expiry_and_leave_the_index<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let short = f.session(&user, hash(1), 300).await;
    let long = f.session(&user, hash(2), HOUR_MS).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        f.rotate(&user, &short, 1, 3, now(), 10_000).await,
        RotateOutcome::Unknown
    );
    assert_eq!(f.live(&user).await, vec![long.clone()]);
    // A login prunes index members whose sessions expired.
    for i in 0..5 {
        f.session(&user, hash(10 + i), 200).await;
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fresh = f.session(&user, hash(20), HOUR_MS).await;
    assert_eq!(f.live(&user).await, vec![fresh, long]);
}

async fn listing_is_newest_first_with_all_fields<S: SessionStore>(f: Fixture<S>) {
    let user = f.user();
    let first = f.session(&user, hash(1), HOUR_MS).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = f.session(&user, hash(2), HOUR_MS).await;
    let list = f.store.list_sessions(&user, now()).await.expect("list");
    assert_eq!(
        list.iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>(),
        vec![second, first]
    );
    let s = &list[0];
    assert_eq!(s.device.as_deref(), Some("laptop"));
    assert_eq!(s.user_agent.as_deref(), Some("agent/1.0"));
    assert_eq!(s.ip.as_deref(), Some("192.0.2.7"));
    assert!(s.created_at_ms <= s.last_used_at_ms);
    assert!(s.expires_at_ms > s.created_at_ms + HOUR_MS - 1_000);
}

/// Idle and absolute expiry under paused time (embedded store): a session not
/// refreshed for its idle lifetime ends; refreshing slides the idle end but never past
/// the absolute end.
#[tokio::test(start_paused = true)]
async fn embedded_store_expiry_slides_but_never_past_the_absolute_end() {
    let clock = Clock::tokio();
    let store = MemoryStore::new(clock.clone());
    let rng = ring::rand::SystemRandom::new();
    let user = UserId::generate(&rng);
    let s = SessionId::generate(&rng);
    let day = 24 * HOUR_MS;
    let t0 = clock.now_ms();
    store
        .create_session(&NewSession {
            user_id: user.clone(),
            session_id: s.clone(),
            token_hash: hash(0),
            device: None,
            user_agent: None,
            ip: None,
            now_ms: t0,
            expires_at_ms: t0 + 7 * day,
            absolute_expires_at_ms: t0 + 30 * day,
            password_hash: None,
        })
        .await
        .expect("create");
    let rotation = |presented: u8, at: u64| Rotation {
        user_id: &user,
        session_id: &s,
        presented: hash(presented),
        successor: hash(presented + 1),
        now_ms: at,
        idle_ms: 7 * day,
        grace_ms: 10_000,
    };
    // Refresh every 6 days: each slides the idle end, capped at day 30.
    let mut token = 0u8;
    for step in 1..=4u64 {
        tokio::time::advance(Duration::from_millis(6 * day)).await;
        let outcome = store
            .rotate(&rotation(token, clock.now_ms()))
            .await
            .expect("rotate");
        let expected = (clock.now_ms() + 7 * day).min(t0 + 30 * day);
        assert_eq!(
            outcome,
            RotateOutcome::Rotated {
                expires_at_ms: expected,
                absolute_expires_at_ms: t0 + 30 * day,
            },
            "step {step}"
        );
        token += 1;
    }
    // Day 24 now; the session ends at day 30 whatever happens.
    tokio::time::advance(Duration::from_millis(6 * day)).await;
    assert_eq!(
        store
            .rotate(&rotation(token, clock.now_ms()))
            .await
            .expect("rotate"),
        RotateOutcome::Unknown
    );
    assert_eq!(store.sweep(), 0);

    // A session left idle for its idle lifetime ends.
    let s2 = SessionId::generate(&rng);
    let t1 = clock.now_ms();
    store
        .create_session(&NewSession {
            user_id: user.clone(),
            session_id: s2.clone(),
            token_hash: hash(50),
            device: None,
            user_agent: None,
            ip: None,
            now_ms: t1,
            expires_at_ms: t1 + 7 * day,
            absolute_expires_at_ms: t1 + 30 * day,
            password_hash: None,
        })
        .await
        .expect("create");
    tokio::time::advance(Duration::from_millis(7 * day)).await;
    assert!(
        store
            .list_sessions(&user, clock.now_ms())
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store.indexed_sessions(&user),
        0,
        "ended sessions leave the index"
    );
}

async fn every_kind_of_revocation_is_reported_as_revoked<S: SessionStore>(f: Fixture<S>) {
    let user = UserRecord {
        id: f.user(),
        email: format!("r-{}@example.com", common::unique()),
        password_hash: "h".into(),
    };
    f.store.insert_user(&user).await.expect("insert");
    let u = &user.id;
    let by_token = f.session(u, hash(1), HOUR_MS).await;
    let by_id = f.session(u, hash(2), HOUR_MS).await;
    f.store
        .revoke_by_token(u, &by_token, hash(1), hash(9))
        .await
        .expect("logout");
    f.store.revoke_session(u, &by_id).await.expect("delete");
    assert_eq!(
        f.rotate(u, &by_token, 1, 3, now(), 10_000).await,
        RotateOutcome::Revoked
    );
    assert_eq!(
        f.rotate(u, &by_id, 2, 3, now(), 10_000).await,
        RotateOutcome::Revoked
    );
    assert!(
        !f.store.revoke_session(u, &by_id).await.expect("again"),
        "a tombstone is not live"
    );

    let all = [
        f.session(u, hash(4), HOUR_MS).await,
        f.session(u, hash(5), HOUR_MS).await,
    ];
    assert_eq!(f.store.revoke_all(u).await.expect("logout-all"), 2);
    for (s, h) in all.iter().zip([4, 5]) {
        assert_eq!(
            f.rotate(u, s, h, 6, now(), 10_000).await,
            RotateOutcome::Revoked
        );
    }
    let pw = f.session(u, hash(7), HOUR_MS).await;
    assert_eq!(
        f.store
            .set_password_and_revoke_all(u, "new")
            .await
            .expect("set"),
        Some(1)
    );
    assert_eq!(
        f.rotate(u, &pw, 7, 8, now(), 10_000).await,
        RotateOutcome::Revoked
    );
    assert!(f.live(u).await.is_empty(), "tombstones are not listed");
    let fresh = f.session(u, hash(10), HOUR_MS).await;
    assert_eq!(f.live(u).await, vec![fresh], "nor counted by a new login");
}

async fn login_limits_count_atomically_in_a_fixed_window<S: SessionStore>(f: Fixture<S>) {
    let key = LimitKey::Account(format!("l-{}@example.com", common::unique()));
    let attempts = (0..20).map(|_| f.store.hit_limit(&key, 4, 400));
    let results = futures::future::join_all(attempts).await;
    let allowed = results.iter().filter(|r| matches!(r, Ok(None))).count();
    assert_eq!(allowed, 4, "exactly the limit got through");
    let retry = f
        .store
        .hit_limit(&key, 4, 400)
        .await
        .expect("hit")
        .expect("limited");
    assert!(retry <= 400, "retry {retry}");

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        f.store.hit_limit(&key, 4, 400).await.expect("new window"),
        None
    );
    for _ in 0..3 {
        f.store.hit_limit(&key, 4, 400).await.expect("hit");
    }
    f.store
        .release_limit(&key, false)
        .await
        .expect("give back one");
    assert_eq!(f.store.hit_limit(&key, 4, 400).await.expect("hit"), None);
    assert!(
        f.store
            .hit_limit(&key, 4, 400)
            .await
            .expect("hit")
            .is_some()
    );
    f.store.release_limit(&key, true).await.expect("reset");
    assert_eq!(
        f.store.hit_limit(&key, 4, 400).await.expect("after reset"),
        None
    );
    let other = LimitKey::Client("192.0.2.1".into());
    assert_eq!(
        f.store.hit_limit(&other, 1, 400).await.expect("other key"),
        None
    );
}

async fn cluster_fixture(cluster: &common::RedisCluster) -> Fixture<RedisStore> {
    let store = common::connected_store(&cluster.url).await;
    Fixture {
        store,
        rng: ring::rand::SystemRandom::new(),
        _redis: None,
    }
}

/// Every rule holds on a three-primary Redis Cluster too: each script touches one
/// slot, because every key of a user shares the `{u:<user id>}` hash tag.
#[tokio::test]
async fn a_redis_cluster_passes_the_whole_conformance_suite() {
    let cluster = common::RedisCluster::start();
    users_are_unique_by_email_and_found_by_email_and_id(cluster_fixture(&cluster).await).await;
    rotation_moves_the_session_to_its_successor(cluster_fixture(&cluster).await).await;
    predecessor_within_grace_replays_without_change(cluster_fixture(&cluster).await).await;
    predecessor_after_grace_revokes_the_session(cluster_fixture(&cluster).await).await;
    an_unrelated_token_reports_the_current_hash(cluster_fixture(&cluster).await).await;
    unknown_sessions_are_unknown(cluster_fixture(&cluster).await).await;
    revoke_by_token_accepts_current_and_predecessor_only(cluster_fixture(&cluster).await).await;
    revoke_session_touches_only_that_session(cluster_fixture(&cluster).await).await;
    revoke_all_ends_every_session_of_one_user(cluster_fixture(&cluster).await).await;
    revoke_all_by_token_requires_a_live_token(cluster_fixture(&cluster).await).await;
    every_kind_of_revocation_is_reported_as_revoked(cluster_fixture(&cluster).await).await;
    login_limits_count_atomically_in_a_fixed_window(cluster_fixture(&cluster).await).await;
    password_change_revokes_all_atomically(cluster_fixture(&cluster).await).await;
    a_session_is_created_only_while_the_verified_password_stands(cluster_fixture(&cluster).await)
        .await;
    sessions_end_at_their_expiry_and_leave_the_index(cluster_fixture(&cluster).await).await;
    listing_is_newest_first_with_all_fields(cluster_fixture(&cluster).await).await;
}
