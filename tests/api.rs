//! The HTTP contract, end to end over loopback, against both stores: each case runs
//! once on the embedded store and once on a private `redis-server`.

#[macro_use]
mod common;

use std::time::Duration;

use common::{RedisServer, TestApp, Tokens};
use serde_json::json;
use tokend::cli::ServeArgs;

/// A running app plus the Redis server it uses, if any (kept alive for the test).
struct Env {
    app: TestApp,
    _redis: Option<RedisServer>,
}

async fn env_with(backend: &str, tweak: impl FnOnce(&mut ServeArgs)) -> Env {
    let (app, redis) = common::app_on(backend, tweak).await;
    Env { app, _redis: redis }
}

on_both_stores!(
    login_issues_tokens_that_verify_against_the_served_jwks,
    registration_refuses_bad_input_with_contract_codes,
    closed_registration_answers_not_found,
    login_answers_unknown_email_and_wrong_password_alike,
    refresh_rotates_and_a_lost_response_retry_gets_the_same_successor,
    a_rotation_chain_of_fifty_refreshes_works,
    eight_parallel_refreshes_share_one_successor_that_keeps_working,
    replay_after_the_grace_window_revokes_the_session,
    replay_of_an_older_token_revokes_the_session,
    zero_grace_treats_any_replay_as_reuse,
    a_forged_token_for_a_real_session_cannot_revoke_it,
    refresh_refuses_malformed_and_missing_tokens,
    logout_needs_no_access_token_and_is_idempotent,
    logout_all_by_refresh_token_ends_three_devices,
    logout_all_by_access_token_ends_every_session,
    logout_all_refuses_unidentified_callers,
    sessions_are_listed_newest_first_with_the_current_one_marked,
    a_user_can_revoke_their_own_other_device,
    another_users_session_is_not_revocable,
    password_change_revokes_every_session,
    bearer_endpoints_refuse_missing_and_bad_tokens,
    jwks_is_cacheable_and_answers_not_modified,
    health_readiness_and_unknown_routes,
    tokens_in_the_url_are_refused,
    cookie_transport_keeps_the_refresh_token_out_of_the_body,
    cookie_requests_refused_for_csrf_rotate_and_revoke_nothing,
    the_cookie_lives_to_the_sessions_absolute_end_and_both_transports_coexist,
    the_cookie_max_age_is_the_sessions_remaining_lifetime_as_time_passes,
    logout_all_by_cookie_clears_it_with_the_same_scope_even_for_a_gone_session,
    pages_of_other_origins_cannot_plant_use_or_drop_the_cookie,
    cors_answers_listed_origins_only,
    failed_logins_lock_the_account_for_a_bounded_window,
    concurrent_wrong_guesses_never_evaluate_more_than_the_limit,
    a_successful_login_clears_the_account_failures,
    failed_logins_are_limited_per_client_ip,
    forwarded_for_counts_only_from_trusted_proxies,
    guessing_the_current_password_is_limited_like_logins,
    encoded_token_names_in_the_url_are_refused_too,
    user_agents_are_kept_and_device_labels_must_be_printable,
);

async fn login_issues_tokens_that_verify_against_the_served_jwks(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let email = format!("New.User-{}@Example.COM", common::unique());
    let r = app
        .post(
            "/v1/users",
            json!({"email": email, "password": "long enough pw"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let user_id = r.body["user_id"].as_str().expect("user_id").to_owned();

    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email.to_lowercase(), "password": "long enough pw", "device": "phone"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 600);
    assert_eq!(r.body["refresh_expires_in"], 7 * 24 * 3600);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let tokens = Tokens::from(&r.body);

    let jwks: jsonwebtoken::jwk::JwkSet = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(&tokens.access).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in jwks");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["https://tokend.test"]);
    validation.set_audience(&["test-api"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&tokens.access, &key, &validation)
        .expect("verifies")
        .claims;
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["sid"], tokens.session_id.as_str());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        600
    );
}

async fn registration_refuses_bad_input_with_contract_codes(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, _) = app.user().await;

    let r = app
        .post(
            "/v1/users",
            json!({"email": email.to_uppercase(), "password": "another pw 1"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    let cases = [
        json!({"email": "not-an-email", "password": "long enough pw"}),
        json!({"email": "x@example.com", "password": "short"}),
        json!({"email": "x@example.com", "password": "a".repeat(1025)}),
        json!({"email": "x@example.com"}),
        json!({"email": "x@example.com", "password": 12345678}),
        json!(["not", "an", "object"]),
    ];
    for body in cases {
        let r = app.post("/v1/users", body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}");
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!r.body.to_string().contains("12345678"), "password echoed");
    }

    let r = common::Reply::read(
        app.http
            .post(app.url("/v1/users"))
            .header("content-type", "application/json")
            .body("{\"email\": ")
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));

    let big = json!({"email": "x@example.com", "password": "p".repeat(20 * 1024)});
    let r = app.post("/v1/users", big).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
}

async fn closed_registration_answers_not_found(backend: &str) {
    let env = env_with(backend, |a| a.registration = Some("closed".into())).await;
    let r = env
        .app
        .post(
            "/v1/users",
            json!({"email": "a@example.com", "password": "long enough pw"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // Whatever the body: a closed door does not say what it would have refused.
    for body in ["{", "", "[1]", r#"{"email": "not an email"}"#] {
        let r = common::Reply::read(
            env.app
                .http
                .post(env.app.url("/v1/users"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await,
        )
        .await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "body {body:?}");
    }
}

async fn login_answers_unknown_email_and_wrong_password_alike(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;

    let unknown = app
        .post(
            "/v1/auth/login",
            json!({"email": "nobody@example.com", "password": password}),
        )
        .await;
    let wrong = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": "wrong password"}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (401, "invalid_credentials")
    );
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(unknown.status, wrong.status);

    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password, "device": "d".repeat(200)}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = app.post("/v1/auth/login", json!({"email": email})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": "not-an-email", "password": password}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
}

async fn refresh_rotates_and_a_lost_response_retry_gets_the_same_successor(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let first = app.login(&email, &password, "laptop").await;

    let r = app.refresh(&first.refresh).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second = Tokens::from(&r.body);
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(second.session_id, first.session_id);

    // The response was "lost": the client retries with the token it still holds.
    let retry = app.refresh(&first.refresh).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(Tokens::from(&retry.body).refresh, second.refresh);

    let r = app.refresh(&second.refresh).await;
    assert_eq!(r.status, 200);
    assert_ne!(Tokens::from(&r.body).refresh, second.refresh);
}

async fn a_rotation_chain_of_fifty_refreshes_works(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let mut tokens = app.login(&email, &password, "laptop").await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..50 {
        let r = app.refresh(&tokens.refresh).await;
        assert_eq!(r.status, 200, "refresh {i}: {}", r.body);
        tokens = Tokens::from(&r.body);
        assert!(
            seen.insert(tokens.refresh.clone()),
            "refresh token repeated at {i}"
        );
    }
    let r = app.get_bearer("/v1/sessions", &tokens.access).await;
    assert_eq!(r.body["sessions"].as_array().map(Vec::len), Some(1));
}

async fn eight_parallel_refreshes_share_one_successor_that_keeps_working(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let tokens = app.login(&email, &password, "laptop").await;

    let racers = (0..8).map(|_| app.refresh(&tokens.refresh));
    let replies = futures::future::join_all(racers).await;
    let successors: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            Tokens::from(&r.body).refresh
        })
        .collect();
    assert_eq!(successors.len(), 1, "the session forked");
    let successor = successors.into_iter().next().expect("one");

    let r = app.refresh(&successor).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .get_bearer("/v1/sessions", &Tokens::from(&r.body).access)
        .await;
    assert_eq!(r.body["sessions"].as_array().map(Vec::len), Some(1));
}

async fn replay_after_the_grace_window_revokes_the_session(backend: &str) {
    let env = env_with(backend, |a| a.refresh_grace = Some("300ms".into())).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let first = app.login(&email, &password, "laptop").await;
    let other_device = app.login(&email, &password, "phone").await;
    let second = Tokens::from(&app.refresh(&first.refresh).await.body);

    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = app.refresh(&first.refresh).await;
    assert_eq!((r.status, r.code()), (401, "token_reused"));

    let r = app.refresh(&second.refresh).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "invalid_token"),
        "the thief's token died too"
    );
    let r = app.get_bearer("/v1/sessions", &other_device.access).await;
    let ids: Vec<&str> = r.body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["session_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![other_device.session_id.as_str()],
        "only that session ended"
    );
}

async fn replay_of_an_older_token_revokes_the_session(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let b = Tokens::from(&app.refresh(&a.refresh).await.body);
    let c = Tokens::from(&app.refresh(&b.refresh).await.body);
    let d = Tokens::from(&app.refresh(&c.refresh).await.body);

    // `a` is three rotations old: no grace window applies, this is theft.
    let r = app.refresh(&a.refresh).await;
    assert_eq!((r.status, r.code()), (401, "token_reused"));
    let r = app.refresh(&d.refresh).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

async fn zero_grace_treats_any_replay_as_reuse(backend: &str) {
    let env = env_with(backend, |a| a.refresh_grace = Some("0".into())).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let b = Tokens::from(&app.refresh(&a.refresh).await.body);
    let r = app.refresh(&a.refresh).await;
    assert_eq!((r.status, r.code()), (401, "token_reused"));
    let r = app.refresh(&b.refresh).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

async fn a_forged_token_for_a_real_session_cannot_revoke_it(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let b = Tokens::from(&app.refresh(&a.refresh).await.body);

    // Same user and session ids (both visible in the access token), invented secret.
    let (prefix, _) = b.refresh.rsplit_once('.').expect("four parts");
    let forged = format!("{prefix}.{}", "A".repeat(43));
    let r = app.refresh(&forged).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = app
        .post("/v1/auth/logout", json!({"refresh_token": forged}))
        .await;
    assert_eq!(r.status, 204);

    let r = app.refresh(&b.refresh).await;
    assert_eq!(r.status, 200, "the real session survived: {}", r.body);
}

async fn refresh_refuses_malformed_and_missing_tokens(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    for bad in [
        "",
        "garbage",
        "v1.a.b.c",
        "eyJhbGciOiJFZERTQSJ9.e30.c2ln",
        &"x".repeat(5000),
    ] {
        let r = app.refresh(bad).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{bad:.20}");
    }
    let r = app.post("/v1/auth/refresh", json!({})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = app
        .post("/v1/auth/refresh", json!({"refresh_token": 42}))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = common::Reply::read(app.http.post(app.url("/v1/auth/refresh")).send().await).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
}

async fn logout_needs_no_access_token_and_is_idempotent(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let laptop = app.login(&email, &password, "laptop").await;
    let phone = app.login(&email, &password, "phone").await;

    for _ in 0..2 {
        let r = app
            .post("/v1/auth/logout", json!({"refresh_token": laptop.refresh}))
            .await;
        assert_eq!(r.status, 204);
        assert!(
            r.header("set-cookie")
                .is_some_and(|c| c.contains("Max-Age=0"))
        );
    }
    let r = app
        .post("/v1/auth/logout", json!({"refresh_token": "nonsense"}))
        .await;
    assert_eq!(r.status, 204);

    let r = app.refresh(&laptop.refresh).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = app.refresh(&phone.refresh).await;
    assert_eq!(r.status, 200, "the other device stays logged in");
}

async fn logout_all_by_refresh_token_ends_three_devices(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let devices = [
        app.login(&email, &password, "laptop").await,
        app.login(&email, &password, "phone").await,
        app.login(&email, &password, "tablet").await,
    ];
    let (other_email, other_password) = app.user().await;
    let bystander = app.login(&other_email, &other_password, "laptop").await;

    let r = app
        .post(
            "/v1/auth/logout-all",
            json!({"refresh_token": devices[1].refresh}),
        )
        .await;
    assert_eq!(r.status, 204);
    for d in &devices {
        let r = app.refresh(&d.refresh).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
    }
    let r = app.get_bearer("/v1/sessions", &devices[0].access).await;
    assert_eq!(r.body["sessions"], json!([]));
    assert_eq!(app.refresh(&bystander.refresh).await.status, 200);
}

async fn logout_all_by_access_token_ends_every_session(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let b = app.login(&email, &password, "phone").await;
    let r = app
        .post_bearer("/v1/auth/logout-all", &a.access, None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.refresh(&a.refresh).await.status, 401);
    assert_eq!(app.refresh(&b.refresh).await.status, 401);
}

async fn logout_all_refuses_unidentified_callers(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let r = app
        .post("/v1/auth/logout-all", json!({"refresh_token": "v1.nope"}))
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = app.post("/v1/auth/logout-all", json!({})).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = app
        .post_bearer("/v1/auth/logout-all", "not.a.jwt", None)
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    assert_eq!(
        app.refresh(&a.refresh).await.status,
        200,
        "nothing was revoked"
    );
}

async fn sessions_are_listed_newest_first_with_the_current_one_marked(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let mut made = Vec::new();
    for device in ["laptop", "phone", "tablet"] {
        made.push(app.login(&email, &password, device).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app.get_bearer("/v1/sessions", &made[1].access).await;
    assert_eq!(r.status, 200);
    let sessions = r.body["sessions"].as_array().expect("array");
    let ids: Vec<&str> = sessions
        .iter()
        .filter_map(|s| s["session_id"].as_str())
        .collect();
    let expected: Vec<&str> = made.iter().rev().map(|t| t.session_id.as_str()).collect();
    assert_eq!(ids, expected, "newest first");
    let current: Vec<bool> = sessions.iter().map(|s| s["current"] == true).collect();
    assert_eq!(current, vec![false, true, false]);
    let phone = &sessions[1];
    assert_eq!(phone["device"], "phone");
    assert_eq!(phone["ip"], "127.0.0.1");
    for field in ["created_at", "last_used_at", "expires_at"] {
        let text = phone[field].as_str().expect(field);
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| panic!("{field} is RFC 3339: {text}"));
    }
}

async fn a_user_can_revoke_their_own_other_device(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let laptop = app.login(&email, &password, "laptop").await;
    let phone = app.login(&email, &password, "phone").await;
    let path = format!("/v1/sessions/{}", phone.session_id);
    let r = app.delete_bearer(&path, &laptop.access).await;
    assert_eq!(r.status, 204);
    assert_eq!(app.refresh(&phone.refresh).await.status, 401);
    assert_eq!(app.refresh(&laptop.refresh).await.status, 200);
    let r = app.delete_bearer(&path, &laptop.access).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "already gone");
    let r = app
        .delete_bearer("/v1/sessions/not-an-id", &laptop.access)
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
}

async fn another_users_session_is_not_revocable(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (alice, alice_pw) = app.user().await;
    let (mallory, mallory_pw) = app.user().await;
    let victim = app.login(&alice, &alice_pw, "laptop").await;
    let attacker = app.login(&mallory, &mallory_pw, "laptop").await;
    let r = app
        .delete_bearer(
            &format!("/v1/sessions/{}", victim.session_id),
            &attacker.access,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_eq!(app.refresh(&victim.refresh).await.status, 200);
}

async fn password_change_revokes_every_session(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let a = app.login(&email, &password, "laptop").await;
    let b = app.login(&email, &password, "phone").await;

    let r = app
        .post_bearer(
            "/v1/auth/password",
            &a.access,
            Some(json!({"current_password": "wrong password", "new_password": "a new password"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    assert_eq!(r.body["message"], "the current password is incorrect");
    let r = app
        .post_bearer(
            "/v1/auth/password",
            &a.access,
            Some(json!({"current_password": password, "new_password": "short"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(
        app.refresh(&b.refresh).await.status,
        200,
        "refused changes revoke nothing"
    );
    let b = app.login(&email, &password, "phone").await;

    let r = app
        .post_bearer(
            "/v1/auth/password",
            &a.access,
            Some(json!({"current_password": password, "new_password": "a new password"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.refresh(&a.refresh).await.status, 401);
    assert_eq!(app.refresh(&b.refresh).await.status, 401);
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    app.login(&email, "a new password", "laptop").await;
}

async fn bearer_endpoints_refuse_missing_and_bad_tokens(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let other = env_with("memory", |_| {}).await;
    let (email, password) = other.app.user().await;
    let foreign = other.app.login(&email, &password, "x").await;

    let r = common::Reply::read(app.http.get(app.url("/v1/sessions")).send().await).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    for bad in ["", "garbage", "a.b.c", &foreign.access, &"e".repeat(9000)] {
        let r = app.get_bearer("/v1/sessions", bad).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{bad:.20}");
        let r = app
            .post_bearer(
                "/v1/auth/password",
                bad,
                Some(json!({"current_password": "x", "new_password": "yyyyyyyy"})),
            )
            .await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
        let r = app
            .delete_bearer("/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA", bad)
            .await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
    }
    // A refresh token is not an access token.
    let (email, password) = app.user().await;
    let own = app.login(&email, &password, "x").await;
    let r = app.get_bearer("/v1/sessions", &own.refresh).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

async fn jwks_is_cacheable_and_answers_not_modified(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let r = common::Reply::read(app.http.get(app.url("/.well-known/jwks.json")).send().await).await;
    assert_eq!(r.status, 200);
    let key = &r.body["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("OKP"),
            &json!("Ed25519"),
            &json!("EdDSA"),
            &json!("sig")
        )
    );
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("max-age="))
    );
    let etag = r.header("etag").expect("etag").to_owned();
    let r = common::Reply::read(
        app.http
            .get(app.url("/.well-known/jwks.json"))
            .header("if-none-match", &etag)
            .send()
            .await,
    )
    .await;
    assert_eq!(r.status, 304);
    let r = common::Reply::read(
        app.http
            .get(app.url("/.well-known/jwks.json"))
            .header("if-none-match", "\"something-else\"")
            .send()
            .await,
    )
    .await;
    assert_eq!(r.status, 200);
}

async fn health_readiness_and_unknown_routes(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    for path in ["/healthz", "/readyz"] {
        let r = common::Reply::read(app.http.get(app.url(path)).send().await).await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = common::Reply::read(app.http.get(app.url("/v2/nothing")).send().await).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = common::Reply::read(app.http.get(app.url("/v1/auth/login")).send().await).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert!(r.header("x-request-id").is_some());
}

async fn tokens_in_the_url_are_refused(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;
    let r = common::Reply::read(
        app.http
            .post(app.url(&format!("/v1/auth/refresh?refresh_token={}", t.refresh)))
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = common::Reply::read(
        app.http
            .get(app.url(&format!("/v1/sessions?access_token={}", t.access)))
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(
        app.refresh(&t.refresh).await.status,
        200,
        "the token was not consumed"
    );
}

async fn cookie_transport_keeps_the_refresh_token_out_of_the_body(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password, "transport": "cookie"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("refresh_token").is_none());
    let cookie = r.header("set-cookie").expect("cookie").to_owned();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/v1/auth",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let pair = cookie.split(';').next().expect("name=value").to_owned();

    // A POST carrying only the cookie, with or without the anti-CSRF header.
    let post_cookie = |path: &str, pair: &str, csrf: bool| {
        let mut req = app.http.post(app.url(path)).header("cookie", pair);
        if csrf {
            req = req.header("x-requested-with", "tokend");
        }
        req.send()
    };
    let r = common::Reply::read(post_cookie("/v1/auth/refresh", &pair, false).await).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = common::Reply::read(post_cookie("/v1/auth/refresh", &pair, true).await).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("refresh_token").is_none());
    let rotated = r.header("set-cookie").expect("replaced cookie").to_owned();
    assert_ne!(rotated.split(';').next(), Some(pair.as_str()));
    let rotated_pair = rotated.split(';').next().expect("name=value").to_owned();

    // Logout by cookie without the CSRF header is refused (that it revokes nothing is
    // shown without a grace window, below); with the header it ends the session and
    // clears the cookie.
    let logout = |csrf: bool| post_cookie("/v1/auth/logout", &rotated_pair, csrf);
    let r = common::Reply::read(logout(false).await).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "logout clears the cookie on every answer to a non-browser or same-site caller"
    );
    let r = common::Reply::read(
        app.http
            .post(app.url("/v1/auth/logout"))
            .header("cookie", &rotated_pair)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert!(
        r.header("set-cookie").is_none(),
        "a page of another site can neither log out nor drop the cookie"
    );
    let r = common::Reply::read(logout(true).await).await;
    assert_eq!(r.status, 204);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let r = common::Reply::read(
        app.http
            .post(app.url("/v1/auth/refresh"))
            .header("cookie", &rotated_pair)
            .header("x-requested-with", "tokend")
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

/// A cookie request without the anti-CSRF header, as a page of another site could send
/// it if the browser attached the cookie.
async fn without_csrf_header(app: &TestApp, path: &str, pair: &str) -> common::Reply {
    common::Reply::read(
        app.http
            .post(app.url(path))
            .header("cookie", pair)
            .send()
            .await,
    )
    .await
}

async fn cookie_requests_refused_for_csrf_rotate_and_revoke_nothing(backend: &str) {
    // With no grace window, a refused refresh that had rotated the token would make the
    // next use of the same cookie a replay (401 token_reused), and a refused logout that
    // had revoked the session would make it 401.
    let env = env_with(backend, |a| a.refresh_grace = Some("0".into())).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let phone = app.login(&email, &password, "phone").await;
    let r = cookie_login(app, &email, &password).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (first, _) = cookie_parts(r.header("set-cookie").expect("cookie"));

    let r = without_csrf_header(app, "/v1/auth/refresh", &first).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = with_cookie(app, "/v1/auth/refresh", &first).await;
    assert_eq!(
        r.status, 200,
        "the refused refresh rotated the token: {}",
        r.body
    );
    let (second, _) = cookie_parts(r.header("set-cookie").expect("rotated cookie"));
    assert_ne!(second, first);

    let mut current = second;
    for path in ["/v1/auth/logout", "/v1/auth/logout-all"] {
        let r = without_csrf_header(app, path, &current).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{path}");
        let r = with_cookie(app, "/v1/auth/refresh", &current).await;
        assert_eq!(
            r.status, 200,
            "the refused {path} revoked the session: {}",
            r.body
        );
        (current, _) = cookie_parts(r.header("set-cookie").expect("rotated cookie"));
    }
    let r = app.refresh(&phone.refresh).await;
    assert_eq!(
        r.status, 200,
        "the refused logout-all revoked the other device"
    );

    // The premise: without a grace window, the spent first cookie is a replay.
    let r = with_cookie(app, "/v1/auth/refresh", &first).await;
    assert_eq!((r.status, r.code()), (401, "token_reused"));
}

/// The `name=value` part and the attributes of a `Set-Cookie` header.
fn cookie_parts(set_cookie: &str) -> (String, Vec<String>) {
    let mut parts = set_cookie.split(';').map(|p| p.trim().to_owned());
    let pair = parts.next().expect("name=value");
    let mut attrs: Vec<String> = parts.filter(|p| !p.starts_with("Max-Age")).collect();
    attrs.sort();
    (pair, attrs)
}

fn max_age(set_cookie: &str) -> u64 {
    set_cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .expect("Max-Age")
}

async fn cookie_login(app: &TestApp, email: &str, password: &str) -> common::Reply {
    app.post(
        "/v1/auth/login",
        json!({"email": email, "password": password, "transport": "cookie"}),
    )
    .await
}

/// A cookie request as a same-origin page sends it: the cookie and the CSRF header.
async fn with_cookie(app: &TestApp, path: &str, pair: &str) -> common::Reply {
    common::Reply::read(
        app.http
            .post(app.url(path))
            .header("cookie", pair)
            .header("x-requested-with", "tokend")
            .send()
            .await,
    )
    .await
}

async fn the_cookie_lives_to_the_sessions_absolute_end_and_both_transports_coexist(backend: &str) {
    let env = env_with(backend, |a| {
        a.session_idle_ttl = Some("1h".into());
        a.session_max_ttl = Some("1d".into());
    })
    .await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let mobile = app.login(&email, &password, "phone").await;

    let r = cookie_login(app, &email, &password).await;
    assert_eq!(r.status, 200);
    let set = r.header("set-cookie").expect("cookie").to_owned();
    let idle = r.body["refresh_expires_in"].as_u64().expect("seconds");
    assert!(
        (3590..=3600).contains(&idle),
        "body keeps the idle end: {idle}"
    );
    assert!((86_390..=86_400).contains(&max_age(&set)), "{set}");

    let (pair, _) = cookie_parts(&set);
    let r = with_cookie(app, "/v1/auth/refresh", &pair).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").expect("replaced").to_owned();
    assert!((86_390..=86_400).contains(&max_age(&set)), "{set}");

    // The phone's body transport is untouched by the browser's cookie session.
    let r = app.refresh(&mobile.refresh).await;
    assert_eq!(r.status, 200);
    assert!(r.body["refresh_token"].is_string());
    assert!(r.header("set-cookie").is_none());
    let t = Tokens::from(&r.body);
    let r = app.get_bearer("/v1/sessions", &t.access).await;
    assert_eq!(r.body["sessions"].as_array().map(Vec::len), Some(2));
}

async fn the_cookie_max_age_is_the_sessions_remaining_lifetime_as_time_passes(backend: &str) {
    const MAX_TTL: u64 = 3 * 3600;
    // The Redis server, if any, lives as long as `_redis`.
    let (_redis, store) = match backend {
        "memory" => (None, common::Backend::Memory),
        _ => {
            let redis = RedisServer::any();
            let url = redis.url.clone();
            (Some(redis), common::Backend::Redis(url))
        }
    };
    let mut args = common::test_args(&store);
    args.session_idle_ttl = Some("2h".into());
    args.session_max_ttl = Some(format!("{MAX_TTL}s"));
    let config = tokend::config::Config::from_args(&args).expect("valid config");
    let clock = tokend::clock::Clock::manual();
    let app = TestApp::start_with(config, clock.clone()).await;
    let (email, password) = app.user().await;

    let r = cookie_login(&app, &email, &password).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").expect("cookie").to_owned();
    let at_login = max_age(&set);
    assert!((MAX_TTL - 1..=MAX_TTL).contains(&at_login), "{set}");
    let (mut pair, _) = cookie_parts(&set);

    // Refreshes within the idle lifetime keep the session, but never move its end: the
    // cookie must be gone from the browser exactly when the session ends.
    let mut elapsed = 0;
    for step in [90 * 60, 60 * 60, 20 * 60] {
        clock.advance(Duration::from_secs(step));
        elapsed += step;
        let r = with_cookie(&app, "/v1/auth/refresh", &pair).await;
        assert_eq!(r.status, 200, "after {elapsed} s: {}", r.body);
        let set = r.header("set-cookie").expect("replaced cookie").to_owned();
        let remaining = max_age(&set);
        assert!(remaining <= MAX_TTL, "{set}");
        assert!(
            remaining.abs_diff(at_login - elapsed) <= 1,
            "after {elapsed} s the cookie lives {remaining} s, not {} s",
            at_login - elapsed
        );
        let idle = r.body["refresh_expires_in"].as_u64().expect("seconds");
        assert!(idle <= remaining + 1, "{idle} > {remaining}");
        (pair, _) = cookie_parts(&set);
    }

    // Past the absolute end the cookie's session is gone too.
    clock.advance(Duration::from_secs(at_login - elapsed + 2));
    let r = with_cookie(&app, "/v1/auth/refresh", &pair).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

async fn logout_all_by_cookie_clears_it_with_the_same_scope_even_for_a_gone_session(backend: &str) {
    let env = env_with(backend, |a| {
        a.cookie_domain = Some("tokend.test".into());
        a.cookie_suffix = Some("web".into());
    })
    .await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let other = app.login(&email, &password, "phone").await;
    let r = cookie_login(app, &email, &password).await;
    let set = r.header("set-cookie").expect("cookie").to_owned();
    let (pair, attrs) = cookie_parts(&set);
    assert!(pair.starts_with("__Secure-web="), "{pair}");
    assert!(attrs.contains(&"Domain=tokend.test".to_owned()), "{set}");

    for round in ["live", "gone"] {
        let r = with_cookie(app, "/v1/auth/logout-all", &pair).await;
        match round {
            "live" => assert_eq!(r.status, 204, "{}", r.body),
            _ => assert_eq!((r.status, r.code()), (401, "invalid_token")),
        }
        let cleared = r.header("set-cookie").expect("cleared").to_owned();
        assert_eq!(max_age(&cleared), 0, "{round}: {cleared}");
        let (cleared_pair, cleared_attrs) = cookie_parts(&cleared);
        assert_eq!(cleared_pair, "__Secure-web=");
        assert_eq!(cleared_attrs, attrs, "{round}: same Path, Domain and flags");
    }
    assert_eq!(app.refresh(&other.refresh).await.status, 401);
}

async fn pages_of_other_origins_cannot_plant_use_or_drop_the_cookie(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let cross = |path: &str| {
        app.http
            .post(app.url(path))
            .header("sec-fetch-site", "cross-site")
            .header("origin", "http://evil.test")
    };

    // A forged cookie-transport login would plant the attacker's session.
    let r = common::Reply::read(
        cross("/v1/auth/login")
            .json(&json!({"email": email, "password": password, "transport": "cookie"}))
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert!(r.header("set-cookie").is_none());

    let r = cookie_login(app, &email, &password).await;
    let (pair, _) = cookie_parts(r.header("set-cookie").expect("cookie"));

    // A form posted by another site: SameSite kept the cookie home, and the request is
    // refused without dropping the cookie.
    for path in ["/v1/auth/refresh", "/v1/auth/logout", "/v1/auth/logout-all"] {
        let r = common::Reply::read(cross(path).send().await).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{path}");
        assert!(r.header("set-cookie").is_none(), "{path}");
    }
    // With SameSite=None a cross-site form would carry the cookie: still refused.
    let r = common::Reply::read(
        cross("/v1/auth/logout")
            .header("cookie", &pair)
            .send()
            .await,
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // A JSON body in a text/plain form logs out an unknown token but cannot drop the
    // browser's cookie.
    let r = common::Reply::read(
        cross("/v1/auth/logout")
            .header("content-type", "text/plain")
            .body(r#"{"refresh_token": "v1.nope"}"#)
            .send()
            .await,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").is_none());

    let r = with_cookie(app, "/v1/auth/refresh", &pair).await;
    assert_eq!(r.status, 200, "the session is still live: {}", r.body);
}

async fn cors_answers_listed_origins_only(backend: &str) {
    let env = env_with(backend, |a| {
        a.cors_origins = Some("https://app.tokend.test, http://localhost:5173".into());
    })
    .await;
    let app = &env.app;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/v1/auth/refresh"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "x-requested-with,content-type",
            )
            .send()
    };
    let cors_headers = |r: &common::Reply| {
        r.headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .count()
    };

    for origin in ["https://app.tokend.test", "http://localhost:5173"] {
        let r = common::Reply::read(preflight(origin).await).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let allowed = r
            .header("access-control-allow-headers")
            .expect("allowed headers")
            .to_ascii_lowercase();
        for h in ["x-requested-with", "content-type", "authorization"] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        assert!(r.header("access-control-allow-methods").is_some());
        assert!(r.header("vary").is_some_and(|v| v.contains("origin")));
    }

    let r = common::Reply::read(preflight("https://evil.test").await).await;
    assert_eq!(cors_headers(&r), 0, "{:?}", r.headers);
    assert!(r.header("vary").is_some_and(|v| v.contains("origin")));

    for (origin, listed) in [
        ("https://app.tokend.test", true),
        ("https://evil.test", false),
    ] {
        let r = common::Reply::read(
            app.http
                .get(app.url("/healthz"))
                .header("origin", origin)
                .send()
                .await,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(cors_headers(&r) > 0, listed, "{origin}: {:?}", r.headers);
        assert!(r.header("vary").is_some_and(|v| v.contains("origin")));
    }
}

async fn failed_logins_lock_the_account_for_a_bounded_window(backend: &str) {
    let env = env_with(backend, |a| {
        a.login_max_failures = Some("3".into());
        a.login_window = Some("1500ms".into());
    })
    .await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let r = app
            .post(
                "/v1/auth/login",
                json!({"email": email, "password": "wrong password"}),
            )
            .await;
        assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    }
    // Locked: even the right password is refused, and hammering does not extend it.
    while started.elapsed() < Duration::from_millis(1200) {
        let r = app
            .post(
                "/v1/auth/login",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!((r.status, r.code()), (429, "rate_limited"));
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("secs");
        assert!((1..=2).contains(&retry), "retry-after {retry}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed())).await;
    app.login(&email, &password, "laptop").await;
}

async fn concurrent_wrong_guesses_never_evaluate_more_than_the_limit(backend: &str) {
    let env = env_with(backend, |a| a.login_max_failures = Some("5".into())).await;
    let app = &env.app;
    let (email, _) = app.user().await;
    let guesses = (0..50).map(|i| {
        app.post(
            "/v1/auth/login",
            json!({"email": email, "password": format!("guess number {i}")}),
        )
    });
    let replies = futures::future::join_all(guesses).await;
    let evaluated = replies.iter().filter(|r| r.status == 401).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!((evaluated, limited), (5, 45));
}

async fn a_successful_login_clears_the_account_failures(backend: &str) {
    let env = env_with(backend, |a| a.login_max_failures = Some("3".into())).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    for round in 0..3 {
        for _ in 0..2 {
            let r = app
                .post(
                    "/v1/auth/login",
                    json!({"email": email, "password": "wrong password"}),
                )
                .await;
            assert_eq!(r.status, 401, "round {round}");
        }
        app.login(&email, &password, "laptop").await;
    }
}

async fn failed_logins_are_limited_per_client_ip(backend: &str) {
    let env = env_with(backend, |a| a.login_max_failures_per_ip = Some("4".into())).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    for i in 0..4 {
        let r = app
            .post(
                "/v1/auth/login",
                json!({"email": format!("spray-{i}@example.com"), "password": "password1"}),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (429, "rate_limited"),
        "this client is limited"
    );
}

async fn forwarded_for_counts_only_from_trusted_proxies(backend: &str) {
    let login = |app: &TestApp, xff: &'static str, email: String, password: String| {
        app.http
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", xff)
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    // Untrusted peer: the header is ignored, the socket address is recorded.
    let env = env_with(backend, |_| {}).await;
    let (email, password) = env.app.user().await;
    let r =
        common::Reply::read(login(&env.app, "198.51.100.7", email.clone(), password.clone()).await)
            .await;
    let t = Tokens::from(&r.body);
    let r = env.app.get_bearer("/v1/sessions", &t.access).await;
    assert_eq!(r.body["sessions"][0]["ip"], "127.0.0.1");

    // Loopback as a trusted proxy: the forwarded client is recorded and limited alone.
    let env = env_with(backend, |a| {
        a.trusted_proxies = Some("127.0.0.1/32, ::1".into());
        a.login_max_failures_per_ip = Some("2".into());
    })
    .await;
    let (email, password) = env.app.user().await;
    let r = common::Reply::read(
        login(
            &env.app,
            "1.2.3.4, 198.51.100.7",
            email.clone(),
            password.clone(),
        )
        .await,
    )
    .await;
    let t = Tokens::from(&r.body);
    let r = env.app.get_bearer("/v1/sessions", &t.access).await;
    assert_eq!(r.body["sessions"][0]["ip"], "198.51.100.7");
    for _ in 0..2 {
        let r = common::Reply::read(
            login(
                &env.app,
                "198.51.100.66",
                email.clone(),
                "wrong pw 1".into(),
            )
            .await,
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = common::Reply::read(
        login(&env.app, "198.51.100.66", email.clone(), password.clone()).await,
    )
    .await;
    assert_eq!(r.status, 429, "that client is limited");
    let r =
        common::Reply::read(login(&env.app, "198.51.100.7", email.clone(), password.clone()).await)
            .await;
    assert_eq!(r.status, 200, "another client is not");
}

async fn guessing_the_current_password_is_limited_like_logins(backend: &str) {
    let env = env_with(backend, |a| a.login_max_failures = Some("3".into())).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;
    let change = |current: &str| {
        app.post_bearer(
            "/v1/auth/password",
            &t.access,
            Some(json!({"current_password": current, "new_password": "a brand new password"})),
        )
    };
    for i in 0..3 {
        let r = change(&format!("guess {i} of the password")).await;
        assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    }
    let r = change(&password).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        app.refresh(&t.refresh).await.status,
        200,
        "nothing was revoked"
    );
}

async fn encoded_token_names_in_the_url_are_refused_too(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    for query in [
        "tok%65n=x",
        "access%5Ftoken=x",
        "pass%77ord=x",
        "REFRESH_TOKEN=x",
        "a=1&token=x",
    ] {
        let r = common::Reply::read(
            app.http
                .get(app.url(&format!("/healthz?{query}")))
                .send()
                .await,
        )
        .await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{query}");
    }
    let r = common::Reply::read(
        app.http
            .get(app.url("/healthz?tokens=1&x=token"))
            .send()
            .await,
    )
    .await;
    assert_eq!(r.status, 200, "other names are fine");
}

async fn user_agents_are_kept_and_device_labels_must_be_printable(backend: &str) {
    let env = env_with(backend, |_| {}).await;
    let app = &env.app;
    let (email, password) = app.user().await;
    let agent = format!("{}é", "a".repeat(255));
    let r = common::Reply::read(
        app.http
            .post(app.url("/v1/auth/login"))
            .header(
                "user-agent",
                reqwest::header::HeaderValue::from_bytes(agent.as_bytes()).expect("header"),
            )
            .json(&json!({"email": email, "password": password}))
            .send()
            .await,
    )
    .await;
    let t = Tokens::from(&r.body);
    let r = app.get_bearer("/v1/sessions", &t.access).await;
    let stored = r.body["sessions"][0]["user_agent"]
        .as_str()
        .expect("user agent kept");
    assert_eq!(
        stored,
        "a".repeat(255),
        "cut to 256 bytes at a character boundary"
    );

    for device in ["line\nbreak", "nul\u{0}byte", "tab\there"] {
        let r = app
            .post(
                "/v1/auth/login",
                json!({"email": email, "password": password, "device": device}),
            )
            .await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{device:?}");
    }
}
