//! Races, outages and hostile input: each case is a fault real token services have
//! shipped, run against both stores where it applies.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Backend, RedisServer, TestApp, Tokens, app_on, test_args};
use serde_json::json;

on_both_stores!(
    sixty_four_racers_with_zero_grace_mint_at_most_one_successor,
    sixty_four_racers_with_grace_share_one_session_and_one_live_successor,
    a_chain_rotated_within_one_second_still_catches_its_first_token,
    oversized_headers_and_broken_jwts_never_reach_a_500,
    idle_expiry_slides_with_use_but_never_past_the_absolute_end,
    bodies_over_16_kib_are_refused_before_any_other_check,
    session_ids_that_cannot_exist_get_a_json_not_found,
    logout_all_succeeds_with_whichever_credential_is_valid,
    logins_racing_a_password_change_leave_no_session_behind,
    connections_that_never_finish_a_request_are_closed,
);

/// Logins with the old password keep arriving while the password changes: a login
/// that checked the old password just before the change must not add its session just
/// after the change revoked every session.
async fn logins_racing_a_password_change_leave_no_session_behind(backend: &str) {
    let (app, _redis) = app_on(backend, |args| {
        args.login_max_failures = Some("100000".into());
        args.login_max_failures_per_ip = Some("100000".into());
    })
    .await;
    let (email, old) = app.user().await;
    let owner = app.login(&email, &old, "laptop").await;
    let changed = std::sync::atomic::AtomicBool::new(false);
    let login_with_old = || async {
        let mut tokens = Vec::new();
        let mut after_change = 0;
        while after_change < 5 {
            if changed.load(std::sync::atomic::Ordering::SeqCst) {
                after_change += 1;
            }
            let r = app
                .post("/v1/auth/login", json!({"email": email, "password": old}))
                .await;
            match r.status {
                200 => tokens.push(Tokens::from(&r.body).refresh),
                401 => assert_eq!(r.code(), "invalid_credentials"),
                other => panic!("login answered {other}: {}", r.body),
            }
        }
        tokens
    };
    let change = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let r = app
            .post_bearer(
                "/v1/auth/password",
                &owner.access,
                Some(json!({"current_password": old, "new_password": "the new password"})),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
        changed.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (_, a, b, c, d) = tokio::join!(
        change,
        login_with_old(),
        login_with_old(),
        login_with_old(),
        login_with_old()
    );
    let old_tokens: Vec<String> = [a, b, c, d].into_iter().flatten().collect();
    assert!(!old_tokens.is_empty(), "no login got in before the change");
    for token in &old_tokens {
        let r = app.refresh(token).await;
        assert_eq!(
            r.status, 401,
            "a session opened with the old password lives on"
        );
    }
    let fresh = app.login(&email, "the new password", "phone").await;
    let listed = app.get_bearer("/v1/sessions", &fresh.access).await;
    let ids: Vec<&str> = listed.body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["session_id"].as_str())
        .collect();
    assert_eq!(ids, vec![fresh.session_id.as_str()]);
}

/// A client that opens connections and then stalls (headers never finished, a body
/// that never comes, nothing sent at all) cannot hold them: each is closed once the
/// idle timeout (headers) or the body deadline passes, and the service keeps answering.
async fn connections_that_never_finish_a_request_are_closed(backend: &str) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (app, _redis) = app_on(backend, |args| {
        args.idle_timeout = Some("1s".into());
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let stall = |sent: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            stream.write_all(sent).await.expect("send");
            let started = Instant::now();
            let mut answer = Vec::new();
            // The read ends when tokend closes the connection; the outer timeout only
            // keeps a regression from hanging the suite.
            let read =
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
                    .await;
            assert!(read.is_ok(), "still open after 30 s: {sent:?}");
            (
                started.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        }
    };
    let (headers, body, idle, kept_alive) = tokio::join!(
        stall(b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\n"),
        stall(b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{\"email\""),
        stall(b""),
        stall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    for (what, (waited, _)) in [
        ("headers", &headers),
        ("idle", &idle),
        ("keep-alive", &kept_alive),
    ] {
        assert!(
            *waited < Duration::from_secs(5),
            "{what}: closed only after {waited:?}"
        );
    }
    assert!(
        headers.1.is_empty(),
        "unfinished headers get no answer: {}",
        headers.1
    );
    assert!(kept_alive.1.starts_with("HTTP/1.1 200"), "{}", kept_alive.1);
    // The stalled body gets a JSON 400 once its deadline passes, then the close.
    assert!(
        body.0 < Duration::from_secs(20),
        "body: closed after {:?}",
        body.0
    );
    assert!(body.1.starts_with("HTTP/1.1 400"), "{}", body.1);
    assert!(body.1.contains("\"invalid_request\""), "{}", body.1);
    let r = app.get_bearer("/healthz", "none").await;
    assert_eq!(r.status, 200, "still serving");
}

async fn logout_all_succeeds_with_whichever_credential_is_valid(backend: &str) {
    let (app, _redis) = app_on(backend, |_| {}).await;
    let logout_all = |bearer: &str, refresh: Option<&str>, cookie: Option<(&str, bool)>| {
        let mut req = app
            .http
            .post(app.url("/v1/auth/logout-all"))
            .bearer_auth(bearer);
        if let Some(token) = refresh {
            req = req.json(&json!({ "refresh_token": token }));
        }
        if let Some((pair, csrf)) = cookie {
            req = req.header("cookie", pair);
            if csrf {
                req = req.header("x-requested-with", "tokend");
            }
        }
        async move { common::Reply::read(req.send().await).await }
    };
    // The user's own access token with a broken signature, as an expired or rotated-out
    // one is: well formed, refused by the verifier.
    let spoiled = |access: &str| {
        let (rest, sig) = access.rsplit_once('.').expect("jws");
        let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
        format!("{rest}.{flipped}{}", &sig[1..])
    };
    let (other_email, other_password) = app.user().await;
    let bystander = app.login(&other_email, &other_password, "laptop").await;

    // A bad bearer token and a live refresh token in the body: everything ends.
    let (email, password) = app.user().await;
    let laptop = app.login(&email, &password, "laptop").await;
    let phone = app.login(&email, &password, "phone").await;
    let bad = spoiled(&laptop.access);
    assert_eq!(app.get_bearer("/v1/sessions", &bad).await.status, 401);
    let r = logout_all(&bad, Some(&laptop.refresh), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.refresh(&laptop.refresh).await.status, 401);
    assert_eq!(app.refresh(&phone.refresh).await.status, 401);

    // A bad bearer token and the refresh cookie: the CSRF header is still required.
    let (email, password) = app.user().await;
    let phone = app.login(&email, &password, "phone").await;
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password, "transport": "cookie"}),
        )
        .await;
    let set = r.header("set-cookie").expect("cookie set");
    let pair = set.split(';').next().expect("name=value").to_owned();
    let bad = spoiled(r.body["access_token"].as_str().expect("access token"));
    let r = logout_all(&bad, None, Some((&pair, false))).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app.refresh(&phone.refresh).await;
    assert_eq!(r.status, 200, "nothing ended");
    let phone = Tokens::from(&r.body);
    let r = logout_all(&bad, None, Some((&pair, true))).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.refresh(&phone.refresh).await.status, 401);

    // A valid bearer token is enough, whatever refresh token comes with it.
    let (email, password) = app.user().await;
    let laptop = app.login(&email, &password, "laptop").await;
    let r = logout_all(&laptop.access, Some("v1.nope"), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.refresh(&laptop.refresh).await.status, 401);

    // Neither valid: 401, and nothing ends.
    let (email, password) = app.user().await;
    let laptop = app.login(&email, &password, "laptop").await;
    for refresh in [None, Some("v1.nope"), Some(phone.refresh.as_str())] {
        let r = logout_all(&spoiled(&laptop.access), refresh, None).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{refresh:?}");
    }
    assert_eq!(app.refresh(&laptop.refresh).await.status, 200);
    assert_eq!(app.refresh(&bystander.refresh).await.status, 200);
}

async fn session_ids_that_cannot_exist_get_a_json_not_found(backend: &str) {
    let (app, _redis) = app_on(backend, |_| {}).await;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;

    // Not UTF-8 once percent-decoded, an encoded slash, far too long: none can name a
    // session, and each gets the API's JSON error like any unknown session.
    let long = "A".repeat(4096);
    for id in ["%FF", "%C3%28", "a%2Fb", "%00", long.as_str()] {
        let path = format!("/v1/sessions/{id}");
        let r = app.delete_bearer(&path, &t.access).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "{id:.20}: {}",
            r.body
        );
        assert!(r.body["message"].is_string(), "{id:.20}: {}", r.body);
        let r = app.delete_bearer(&path, "not.a.jwt").await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{id:.20}");
    }
    assert_eq!(
        app.refresh(&t.refresh).await.status,
        200,
        "nothing was revoked"
    );
}

/// Sends `request` as raw bytes on a new connection and returns the status and JSON body
/// of the answer, which must come within 5 seconds.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read all of a refused body; the
    // write can then fail while the answer is already there to read.
    let _ = stream.write_all(request).await;
    let read = async {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read the answer");
            assert!(n > 0, "connection closed before a full answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("the answer declares its length");
            if body.len() >= length {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
                let json = serde_json::from_str(&body[..length]).expect("a JSON body");
                return (status.expect("a status line"), json);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("answered without waiting for the body")
}

async fn bodies_over_16_kib_are_refused_before_any_other_check(backend: &str) {
    let (app, _redis) = app_on(backend, |_| {}).await;

    // A declared length over the limit is refused at once: no token (or a bad one) would
    // be 401, and the body, never sent here, is not waited for.
    for (route, authorization) in [
        ("/v1/auth/password", ""),
        ("/v1/auth/logout-all", "authorization: Bearer not.a.jwt\r\n"),
        ("/v1/auth/refresh", ""),
    ] {
        let head = format!(
            "POST {route} HTTP/1.1\r\nhost: tokend\r\ncontent-type: application/json\r\n\
             {authorization}content-length: 1048576\r\nconnection: close\r\n\r\n"
        );
        let (status, body) = raw_exchange(&app, head.as_bytes()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (413, Some("payload_too_large")),
            "{route}"
        );
    }

    // A chunked body announces no length: it is cut off once it passes the limit.
    let mut chunked = b"POST /v1/auth/refresh HTTP/1.1\r\nhost: tokend\r\n\
        content-type: application/json\r\ntransfer-encoding: chunked\r\n\
        connection: close\r\n\r\n"
        .to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_exchange(&app, &chunked).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
}

fn now_ms() -> u64 {
    tokend::clock::Clock::System.now_ms()
}

async fn idle_expiry_slides_with_use_but_never_past_the_absolute_end(backend: &str) {
    use tokend::store::SessionStore as _;

    const IDLE: Duration = Duration::from_millis(1500);
    const MAX: Duration = Duration::from_secs(3);
    const STEP: Duration = Duration::from_millis(400);
    let (app, redis) = app_on(backend, |a| {
        a.session_idle_ttl = Some("1500ms".into());
        a.session_max_ttl = Some("3s".into());
    })
    .await;
    let (email, password) = app.user().await;

    // Left idle for longer than the idle lifetime, a session ends.
    let idle = app.login(&email, &password, "idle").await;
    tokio::time::sleep(IDLE + Duration::from_millis(300)).await;
    assert_eq!(app.refresh(&idle.refresh).await.code(), "invalid_token");

    // Refreshed every 400 ms it lives on, but never past its absolute end, which lies
    // MAX after the login.
    let started = Instant::now();
    let earliest_end_ms = now_ms() + MAX.as_millis() as u64;
    let mut t = app.login(&email, &password, "busy").await;
    let logged_in = Instant::now();
    let latest_end_ms = now_ms() + MAX.as_millis() as u64;
    let mut fields = t.refresh.split('.').skip(1);
    let user = tokend::ids::UserId::parse(fields.next().expect("user id")).expect("user id");
    let key = format!("tokend:{{u:{user}}}:s:{}", t.session_id);
    let mut last_ok = logged_in;
    let mut capped = false;
    // The last refresh comes 2.2 to 2.6 s after the login: within the idle lifetime of
    // the final attempt below, and late enough that the absolute end caps its idle end.
    while started.elapsed() + STEP < MAX - Duration::from_millis(400) {
        tokio::time::sleep(STEP).await;
        let r = app.refresh(&t.refresh).await;
        assert_eq!(r.status, 200, "at {:?}: {}", started.elapsed(), r.body);
        last_ok = Instant::now();
        t = Tokens::from(&r.body);

        // What the store reports as the session's end never passes the absolute end.
        let listed = app
            .state
            .lifecycle
            .store()
            .list_sessions(&user, now_ms())
            .await
            .expect("list");
        let busy = listed
            .iter()
            .find(|s| s.session_id.as_str() == t.session_id)
            .expect("the busy session is live");
        assert!(
            busy.expires_at_ms <= latest_end_ms,
            "ends {} ms past its absolute end",
            busy.expires_at_ms - latest_end_ms
        );
        capped |= busy.expires_at_ms >= earliest_end_ms;

        // In Redis the key itself expires at the absolute end at the latest.
        if let Some(redis) = &redis {
            let out = redis.cli(&[
                "EVAL",
                "local t = redis.call('TIME') \
                 return {redis.call('PTTL', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1]), \
                 redis.call('HGET', KEYS[1], 'x'), t[1] * 1000 + math.floor(t[2] / 1000)}",
                "1",
                &key,
            ]);
            let v: Vec<u64> = out
                .lines()
                .map(|l| l.trim().parse().expect("integer"))
                .collect();
            let [pttl, expire_at, absolute, redis_now] = v[..] else {
                panic!("EVAL answered {out:?}");
            };
            assert!(
                (earliest_end_ms..=latest_end_ms).contains(&absolute),
                "absolute end {absolute} not MAX after the login"
            );
            assert!(
                expire_at <= absolute,
                "key expires {expire_at}, after {absolute}"
            );
            assert!(
                pttl <= absolute.saturating_sub(redis_now),
                "PTTL {pttl} ms reaches past the absolute end"
            );
        }
    }
    assert!(
        capped,
        "no refresh came close enough to the absolute end to test it"
    );

    // Just past the absolute end, but well within the idle lifetime of the last refresh:
    // the session is over all the same.
    tokio::time::sleep((MAX + Duration::from_millis(200)).saturating_sub(logged_in.elapsed()))
        .await;
    assert!(
        last_ok.elapsed() < IDLE,
        "too slow to tell the absolute end from idle expiry: {:?} since the last refresh",
        last_ok.elapsed()
    );
    let r = app.refresh(&t.refresh).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "invalid_token"),
        "refreshed recently, but past its end"
    );
    if let Some(redis) = &redis {
        assert_eq!(
            redis.cli(&["EXISTS", &key]).trim(),
            "0",
            "the key outlived its session"
        );
    }
}

async fn race(app: &TestApp, token: &str, n: usize) -> Vec<common::Reply> {
    let racers = (0..n).map(|_| app.refresh(token));
    futures::future::join_all(racers).await
}

async fn sixty_four_racers_with_zero_grace_mint_at_most_one_successor(backend: &str) {
    let (app, _redis) = app_on(backend, |a| a.refresh_grace = Some("0".into())).await;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;
    let replies = race(&app, &t.refresh, 64).await;
    let ok: Vec<&common::Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert!(ok.len() <= 1, "{} successors minted", ok.len());
    for r in &replies {
        assert!(
            r.status == 200
                || (r.status == 401 && ["token_reused", "invalid_token"].contains(&r.code())),
            "unexpected {} {}",
            r.status,
            r.body
        );
    }
    // Any replay with zero grace is reuse: the session is gone, the minted token too.
    if let Some(winner) = ok.first() {
        assert_eq!(
            app.refresh(&Tokens::from(&winner.body).refresh)
                .await
                .status,
            401
        );
    }
}

async fn sixty_four_racers_with_grace_share_one_session_and_one_live_successor(backend: &str) {
    const GRACE: Duration = Duration::from_secs(1);
    let (app, _redis) = app_on(backend, |a| a.refresh_grace = Some("1s".into())).await;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;
    let replies = race(&app, &t.refresh, 64).await;
    let successors: HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["session_id"], t.session_id.as_str());
            Tokens::from(&r.body).refresh
        })
        .collect();
    assert_eq!(successors.len(), 1);
    let successor = successors.into_iter().next().expect("one");

    // Once the grace window has passed, the shared successor is the session's one live
    // token, and the original is a replay.
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    let next = app.refresh(&successor).await;
    assert_eq!(next.status, 200, "{}", next.body);
    let next = Tokens::from(&next.body);
    let sessions = app.get_bearer("/v1/sessions", &next.access).await;
    assert_eq!(sessions.body["sessions"].as_array().map(Vec::len), Some(1));
    let r = app.refresh(&t.refresh).await;
    assert_eq!((r.status, r.code()), (401, "token_reused"), "{}", r.body);
    let r = app.refresh(&next.refresh).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "invalid_token"),
        "the reuse revoked the session"
    );
}

async fn a_chain_rotated_within_one_second_still_catches_its_first_token(backend: &str) {
    let (app, _redis) = app_on(backend, |_| {}).await;
    let (email, password) = app.user().await;
    let first = app.login(&email, &password, "laptop").await;
    let started = Instant::now();
    let mut t = first.clone();
    for _ in 0..20 {
        t = Tokens::from(&app.refresh(&t.refresh).await.body);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "chain took {:?}",
        started.elapsed()
    );
    let r = app.refresh(&first.refresh).await;
    assert_eq!((r.status, r.code()), (401, "token_reused"));
    assert_eq!(
        app.refresh(&t.refresh).await.status,
        401,
        "the session was revoked"
    );
}

async fn oversized_headers_and_broken_jwts_never_reach_a_500(backend: &str) {
    let (app, _redis) = app_on(backend, |_| {}).await;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;

    let padded = |kib: usize| {
        app.http
            .get(app.url("/healthz"))
            .header("x-padding", "x".repeat(kib * 1024))
            .send()
    };
    // Headers over 16 KiB that hyper still buffers reach the API, which refuses them
    // with its JSON error.
    for kib in [17, 64] {
        let r = common::Reply::read(padded(kib).await).await;
        assert_eq!(
            (r.status, r.code()),
            (431, "payload_too_large"),
            "{kib} KiB"
        );
    }
    // Past hyper's own buffer (about 408 KiB) hyper answers a bare 431 and closes the
    // connection without reading the rest; a client still sending may then see the
    // connection reset before it reads that answer. Either is a refusal, never a hang
    // or a 5xx, and the server goes on serving.
    match padded(4096).await {
        Ok(r) => assert_eq!(r.status().as_u16(), 431, "4 MiB of headers"),
        Err(e) => assert!(
            !e.is_timeout() && (e.is_request() || e.is_connect()),
            "4 MiB of headers: {e:?}"
        ),
    }
    let r = common::Reply::read(app.http.get(app.url("/healthz")).send().await).await;
    assert_eq!(r.status, 200, "the server still serves");

    let b64 =
        |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    let (_, payload_and_sig) = t.access.split_once('.').expect("jws");
    let jwk_header = b64(
        r#"{"alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}"#,
    );
    let jku_header = b64(r#"{"alg":"EdDSA","kid":"x","jku":"http://127.0.0.1:1/jwks"}"#);
    let hs_header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    let cases = vec![
        "a".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "!!!.***.###".to_owned(),
        format!("{}.{}", b64("not json"), payload_and_sig),
        format!("{jwk_header}.{payload_and_sig}"),
        format!("{jku_header}.{payload_and_sig}"),
        format!("{hs_header}.{payload_and_sig}"),
        format!("{}.{}.{}", b64("{}"), "A".repeat(3000), "B".repeat(3000)),
        format!("{}.", t.access.rsplit_once('.').expect("sig").0),
    ];
    for bad in cases {
        let r = app.get_bearer("/v1/sessions", &bad).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{bad:.40}");
    }
}

/// Redis killed in the middle of a refresh load: every client either keeps a working
/// token or gets a clear 503/401, and no rotation is half-applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_loses_no_session() {
    let mut redis = RedisServer::private_persistent();
    let app = TestApp::start(test_args(&Backend::Redis(redis.url.clone()))).await;
    let (email, password) = app.user().await;
    let mut clients = Vec::new();
    for i in 0..16 {
        clients.push(
            app.login(&email, &password, &format!("device-{i}"))
                .await
                .refresh,
        );
    }

    let stop_at = Instant::now() + Duration::from_secs(3);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.start();
    };
    let load = futures::future::join_all(clients.iter_mut().map(|token| {
        let app = &app;
        async move {
            let mut unavailable = 0;
            while Instant::now() < stop_at {
                let r = app.refresh(token).await;
                match r.status {
                    200 => *token = Tokens::from(&r.body).refresh,
                    // The rotation may or may not have happened: retry with the same
                    // token, which inside the grace window yields the same successor.
                    503 => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("refresh answered {other}: {}", r.body),
                }
            }
            unavailable
        }
    }));
    let (unavailable, ()) = tokio::join!(load, outage);
    assert!(
        unavailable.iter().sum::<u32>() > 0,
        "the outage was observed"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    for token in &clients {
        loop {
            let r = app.refresh(token).await;
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 503, "a session was lost: {}", r.body);
            assert!(Instant::now() < deadline, "Redis did not come back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Thousands of logins whose sessions expire by TTL: the per-user index keeps only the
/// live ones, and logout-all still ends them in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_index_never_outgrows_the_live_sessions() {
    use tokend::ids::{SessionId, UserId};
    use tokend::store::{NewSession, SessionStore};
    use tokend::token::refresh::TokenHash;

    let redis = RedisServer::private();
    let store = common::connected_store(&redis.url).await;
    let rng = ring::rand::SystemRandom::new();
    let user = UserId::generate(&rng);
    let session = |ttl_ms: u64| {
        let now = tokend::clock::Clock::System.now_ms();
        NewSession {
            user_id: user.clone(),
            session_id: SessionId::generate(&rng),
            token_hash: TokenHash([1; 32]),
            device: None,
            user_agent: None,
            ip: None,
            now_ms: now,
            expires_at_ms: now + ttl_ms,
            absolute_expires_at_ms: now + 3_600_000,
            password_hash: None,
        }
    };
    // The index is the `s:<session id>` fields of the user hash.
    let user_key = format!("tokend:{{u:{user}}}:user");
    let indexed = || {
        redis
            .cli(&["HKEYS", &user_key])
            .lines()
            .filter(|field| field.starts_with("s:"))
            .count()
    };
    for round in 0..40 {
        for _ in 0..50 {
            store.create_session(&session(30)).await.expect("create");
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        let size = indexed();
        assert!(size <= 50, "round {round}: index holds {size} after expiry");
    }
    store
        .create_session(&session(3_600_000))
        .await
        .expect("create");
    store
        .create_session(&session(3_600_000))
        .await
        .expect("create");
    assert_eq!(indexed(), 2, "2000 expired sessions were pruned");
    assert_eq!(store.list_sessions(&user, 0).await.expect("list").len(), 2);
    assert_eq!(store.revoke_all(&user).await.expect("revoke all"), 2);
    assert_eq!(indexed(), 0, "logout everywhere empties the index");
    assert_eq!(store.list_sessions(&user, 0).await.expect("list").len(), 0);
}

/// The same pruning in the embedded store, under paused time.
#[tokio::test(start_paused = true)]
async fn the_embedded_index_never_outgrows_the_live_sessions() {
    use tokend::clock::Clock;
    use tokend::ids::{SessionId, UserId};
    use tokend::store::memory::MemoryStore;
    use tokend::store::{NewSession, SessionStore};
    use tokend::token::refresh::TokenHash;

    let clock = Clock::tokio();
    let store = MemoryStore::new(clock.clone());
    let rng = ring::rand::SystemRandom::new();
    let user = UserId::generate(&rng);
    for _ in 0..2000 {
        let now = clock.now_ms();
        store
            .create_session(&NewSession {
                user_id: user.clone(),
                session_id: SessionId::generate(&rng),
                token_hash: TokenHash([1; 32]),
                device: None,
                user_agent: None,
                ip: None,
                now_ms: now,
                expires_at_ms: now + 1_000,
                absolute_expires_at_ms: now + 3_600_000,
                password_hash: None,
            })
            .await
            .expect("create");
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert!(store.indexed_sessions(&user) <= 1);
    }
    assert_eq!(store.revoke_all(&user).await.expect("revoke"), 0);
}

/// A flood of logins waits for the bounded hashing pool; refreshes, which hash no
/// password, keep being served meanwhile instead of queueing behind the hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_queues_on_the_hashing_pool() {
    let mut args = test_args(&Backend::Memory);
    args.argon2_memory_kib = Some("8192".into());
    args.hash_concurrency = Some("1".into());
    args.login_max_failures_per_ip = Some("100000".into());
    args.login_max_failures = Some("100000".into());
    let app = TestApp::start(args).await;
    let (email, password) = app.user().await;
    let t = app.login(&email, &password, "laptop").await;
    let failed_login = |i: usize| {
        app.post(
            "/v1/auth/login",
            json!({"email": format!("flood-{i}@example.com"), "password": "wrong password"}),
        )
    };

    // One login alone: a hash plus the request around it.
    let started = Instant::now();
    assert_eq!(failed_login(1000).await.status, 401);
    let one_login = started.elapsed();

    let started = Instant::now();
    let flood = async {
        let replies = futures::future::join_all((0..40).map(failed_login)).await;
        (replies, started.elapsed())
    };
    let refreshes = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut token = t.refresh.clone();
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let sent = Instant::now();
            let r = app.refresh(&token).await;
            slowest = slowest.max(sent.elapsed());
            assert_eq!(r.status, 200);
            token = Tokens::from(&r.body).refresh;
        }
        (slowest, started.elapsed())
    };
    let ((flood, flood_took), (slowest, refreshes_took)) = tokio::join!(flood, refreshes);
    assert!(flood.iter().all(|r| r.status == 401));

    // With one hashing slot the 40 hashes run one after another.
    assert!(
        flood_took >= one_login * 10,
        "40 logins took {flood_took:?}, one alone {one_login:?}: they did not queue"
    );
    // The refreshes ran while that queue drained, and none waited behind it: the first
    // one comes 20 ms into the flood, so queued behind the hashes pending then it would
    // take most of the flood's time, not a quarter of it.
    assert!(
        refreshes_took < flood_took,
        "20 refreshes took {refreshes_took:?}, longer than the flood ({flood_took:?})"
    );
    assert!(
        slowest < flood_took / 4,
        "a refresh took {slowest:?} while 40 logins took {flood_took:?}"
    );
}

/// Past the hashing queue a login is refused at once with 429 and `Retry-After`, and
/// the refusal costs the account nothing: no password was checked, so the attempt is
/// given back and the right password still logs in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_hashing_queue_is_refused_at_once_without_counting() {
    let mut args = test_args(&Backend::Memory);
    // A slow hash, one slot and no queue: while one login hashes, others are refused.
    args.argon2_memory_kib = Some("65536".into());
    args.argon2_iterations = Some("8".into());
    args.hash_concurrency = Some("1".into());
    args.hash_queue = Some("0".into());
    args.login_max_failures = Some("3".into());
    let app = TestApp::start(args).await;
    let (email, password) = app.user().await;

    let holder_sent = Instant::now();
    let holder = {
        let (http, url) = (app.http.clone(), app.url("/v1/auth/login"));
        tokio::spawn(async move {
            let body = json!({"email": "someone-else@example.com", "password": "wrong password"});
            let r = common::Reply::read(http.post(url).json(&body).send().await).await;
            (r, holder_sent.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut refused = 0;
    let mut slowest_refusal = Duration::ZERO;
    while !holder.is_finished() {
        let sent = Instant::now();
        let r = app
            .post(
                "/v1/auth/login",
                json!({"email": email, "password": password}),
            )
            .await;
        if r.status == 200 {
            // The holder's hash ended between the check and this login.
            break;
        }
        assert_eq!(r.status, 429, "{:?}", r.body);
        assert_eq!(r.body["error"], "rate_limited");
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("being checked")),
            "{:?}",
            r.body
        );
        assert_eq!(r.headers["retry-after"], "1");
        slowest_refusal = slowest_refusal.max(sent.elapsed());
        refused += 1;
    }
    let (held, hashing) = holder.await.expect("holder");
    assert_eq!(held.status, 401);
    // Refused at once, not after waiting for the slot.
    assert!(
        slowest_refusal < hashing / 4,
        "a refusal took {slowest_refusal:?}, the one login hashing {hashing:?}"
    );
    assert!(
        refused > 3,
        "only {refused} logins were refused while one hash ran: the test proves nothing"
    );
    // More refusals than the account's limit of 3, and still the right password works.
    let r = app
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}
