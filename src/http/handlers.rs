//! Route handlers: parse the request, call the lifecycle, shape the response.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::cookie::{RefreshCookie, has_csrf_header, may_touch_cookie};
use super::error::ApiError;
use super::extract::{Caller, ClientInfo, JsonBody, OptionalJsonBody, bearer};
use crate::clock::rfc3339;
use crate::lifecycle::{ClientMeta, Issued, LifecycleError};
use crate::secret::Secret;
use crate::store::SessionStore as _;

/// Body of `POST /v1/users`.
#[derive(Deserialize)]
pub struct RegisterRequest {
    email: String,
    password: Secret,
}

/// Where the refresh token travels.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// In the JSON body (mobile and server clients).
    #[default]
    Body,
    /// In an HttpOnly cookie (browsers).
    Cookie,
}

/// Body of `POST /v1/auth/login`.
#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: Secret,
    device: Option<String>,
    #[serde(default)]
    transport: Transport,
}

/// Body of refresh, logout and logout-all.
#[derive(Deserialize)]
pub struct TokenRequest {
    refresh_token: Option<Secret>,
}

/// Body of `POST /v1/auth/password`.
#[derive(Deserialize)]
pub struct PasswordRequest {
    current_password: Secret,
    new_password: Secret,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    refresh_expires_in: u64,
    session_id: &'a str,
}

#[derive(Serialize)]
struct SessionJson {
    session_id: String,
    device: Option<String>,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    current: bool,
}

/// The token response; in cookie transport the refresh token goes into the cookie,
/// which lives until the session's absolute end: refreshes keep replacing it, and the
/// session's idle end is enforced by the store whatever the browser keeps.
fn token_response(
    issued: &Issued,
    transport: Transport,
    cookie: &RefreshCookie,
    jar: CookieJar,
) -> Response {
    let refresh = issued.refresh_token.encode();
    let (refresh_in_body, jar) = match transport {
        Transport::Body => (Some(refresh), jar),
        Transport::Cookie => (
            None,
            jar.add(cookie.set(refresh, issued.session_expires_in)),
        ),
    };
    let body = TokenResponse {
        access_token: &issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token: refresh_in_body,
        refresh_expires_in: issued.refresh_expires_in,
        session_id: issued.session_id.as_str(),
    };
    let mut response = (jar, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The refresh token of a request: from the body, else from the cookie.
///
/// # Errors
/// `Forbidden` when a request without a token in its body lacks the anti-CSRF header
/// and either carries the cookie or comes, by the browser's word, from another origin
/// (a form another site submits).
fn presented_token(
    body: Option<TokenRequest>,
    cookie: &RefreshCookie,
    jar: &CookieJar,
    headers: &HeaderMap,
) -> Result<Option<(String, Transport)>, ApiError> {
    if let Some(token) = body.and_then(|b| b.refresh_token) {
        return Ok(Some((token.expose().to_owned(), Transport::Body)));
    }
    let value = cookie.read(jar);
    if !has_csrf_header(headers) && (value.is_some() || !may_touch_cookie(headers)) {
        return Err(ApiError::Forbidden);
    }
    Ok(value.map(|v| (v.to_owned(), Transport::Cookie)))
}

/// An answer of logout or logout-all: it clears the cookie, errors included, unless a
/// browser marked the request as coming from another site without the anti-CSRF
/// header (see [`may_touch_cookie`]), so that another site cannot log the browser out.
fn clearing_cookie(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    outcome: Result<StatusCode, ApiError>,
) -> Response {
    // The contract clears the cookie on every answer; only a request a browser marked
    // as coming from another site may not drop it (logout CSRF).
    if !may_touch_cookie(headers) {
        return outcome.into_response();
    }
    (jar.add(state.cookie.cleared()), outcome).into_response()
}

/// `POST /v1/users`: registers a user.
///
/// Rejects a bad email or a password outside 8..=1024 bytes (400) and a registered
/// email (409). Not routed while registration is closed (see [`super::app`]).
pub async fn users_create(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let user_id = state.lifecycle.register(&req.email, &req.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "user_id": user_id })),
    )
        .into_response())
}

/// `POST /v1/auth/login`: checks the password and opens a session.
///
/// Rejects unknown email and wrong password alike (401 `invalid_credentials`), and
/// cookie transport asked by a page of another origin without the anti-CSRF header
/// (403: a forged login would plant the attacker's session in the browser).
pub async fn auth_login(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    jar: CookieJar,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    if req.transport == Transport::Cookie && !may_touch_cookie(&headers) {
        return Err(ApiError::Forbidden);
    }
    let meta = ClientMeta {
        device: req.device,
        user_agent: client.user_agent,
        ip: client.ip,
    };
    let issued = state
        .lifecycle
        .login(&req.email, &req.password, meta)
        .await?;
    Ok(token_response(&issued, req.transport, &state.cookie, jar))
}

/// `POST /v1/auth/refresh`: rotates the refresh token and issues a new access token.
///
/// Rejects a missing token (400), an invalid one (401 `invalid_token`), a replay after
/// the grace window (401 `token_reused`), and a cookie without the CSRF header (403).
pub async fn auth_refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    OptionalJsonBody(body): OptionalJsonBody<TokenRequest>,
) -> Result<Response, ApiError> {
    let (token, transport) = presented_token(body, &state.cookie, &jar, &headers)?
        .ok_or_else(|| ApiError::InvalidRequest("missing field `refresh_token`".to_owned()))?;
    let issued = state.lifecycle.refresh(&token).await?;
    Ok(token_response(&issued, transport, &state.cookie, jar))
}

/// `POST /v1/auth/logout`: ends the refresh token's session; 204 even when the token
/// is unknown. Every answer clears the cookie, except to a cross-site browser request
/// without the anti-CSRF header.
pub async fn auth_logout(State(state): State<AppState>, req: Request) -> Response {
    let jar = CookieJar::from_headers(req.headers());
    let headers = req.headers().clone();
    let outcome = async {
        let OptionalJsonBody(body) =
            <OptionalJsonBody<TokenRequest> as axum::extract::FromRequest<_>>::from_request(
                req, &state,
            )
            .await?;
        if let Some((token, _)) = presented_token(body, &state.cookie, &jar, &headers)? {
            state.lifecycle.logout(&token).await?;
        }
        Ok::<_, ApiError>(StatusCode::NO_CONTENT)
    }
    .await;
    clearing_cookie(&state, jar, &headers, outcome)
}

/// `POST /v1/auth/logout-all`: ends every session of the user identified by a bearer
/// access token or a refresh token (body, else cookie), whichever is valid: a client
/// whose access token has expired can still log out everywhere with its refresh token.
///
/// Rejects a caller it cannot identify (401 `invalid_token`: no credential, or none
/// valid) and falling back on the cookie without the anti-CSRF header (403). Every
/// answer clears the cookie, except to a cross-site browser request without the
/// anti-CSRF header.
pub async fn auth_logout_all(State(state): State<AppState>, req: Request) -> Response {
    let jar = CookieJar::from_headers(req.headers());
    let headers = req.headers().clone();
    let outcome = logout_all(&state, &jar, &headers, req).await;
    clearing_cookie(&state, jar, &headers, outcome)
}

async fn logout_all(
    state: &AppState,
    jar: &CookieJar,
    headers: &HeaderMap,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let (parts, body) = req.into_parts();
    let verified = bearer(&parts).map(|token| state.lifecycle.verify_access(token));
    let req = Request::from_parts(parts, body);
    let OptionalJsonBody(body) =
        <OptionalJsonBody<TokenRequest> as axum::extract::FromRequest<_>>::from_request(req, state)
            .await?;
    let body_token = body.and_then(|b| b.refresh_token);

    // A valid bearer token is enough and needs no store lookup to identify the user.
    let bearer_failure = match verified {
        Some(Ok(claims)) => {
            state.lifecycle.logout_all(&claims).await?;
            return Ok(StatusCode::NO_CONTENT);
        }
        Some(Err(e)) => Some(ApiError::from(e)),
        None => None,
    };
    let token = match (body_token, bearer_failure) {
        (Some(token), _) => token.expose().to_owned(),
        // No cookie to fall back on: the bad bearer token is the answer, rather than the
        // 403 a cross-site request without the anti-CSRF header would get for a cookie.
        (None, Some(failure)) if state.cookie.read(jar).is_none() => return Err(failure),
        (None, _) => {
            presented_token(None, &state.cookie, jar, headers)?
                .ok_or(ApiError::InvalidToken)?
                .0
        }
    };
    state.lifecycle.logout_all_by_refresh(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/sessions`: the caller's live sessions, newest first.
pub async fn sessions_list(
    State(state): State<AppState>,
    Caller(claims): Caller,
) -> Result<Response, ApiError> {
    let sessions: Vec<SessionJson> = state
        .lifecycle
        .sessions(&claims)
        .await?
        .into_iter()
        .map(|v| SessionJson {
            session_id: v.record.session_id.as_str().to_owned(),
            device: v.record.device,
            user_agent: v.record.user_agent,
            ip: v.record.ip,
            created_at: rfc3339(v.record.created_at_ms),
            last_used_at: rfc3339(v.record.last_used_at_ms),
            expires_at: rfc3339(v.record.expires_at_ms),
            current: v.current,
        })
        .collect();
    let mut response = Json(serde_json::json!({ "sessions": sessions })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/sessions/{session_id}`: revokes one of the caller's sessions; 404 for
/// a session that is not theirs or no longer live.
///
/// An id that cannot be a session id, such as one that is not UTF-8 once
/// percent-decoded (`%FF`), is also 404 `not_found`, never axum's plain-text 400.
pub async fn sessions_delete(
    State(state): State<AppState>,
    Caller(claims): Caller,
    session_id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(session_id) = session_id.map_err(|_| ApiError::NotFound)?;
    state.lifecycle.revoke(&claims, &session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/password`: changes the password and revokes every session.
///
/// Rejects a wrong current password (401 `invalid_credentials`) and a new password
/// outside 8..=1024 bytes (400).
pub async fn auth_password(
    State(state): State<AppState>,
    Caller(claims): Caller,
    JsonBody(req): JsonBody<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .lifecycle
        .change_password(&claims, &req.current_password, &req.new_password)
        .await
        .map_err(|e| match e {
            LifecycleError::InvalidCredentials => ApiError::WrongCurrentPassword,
            e => e.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /.well-known/jwks.json`: the public keys, cacheable, 304 on a matching
/// `If-None-Match`.
pub async fn jwks_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let jwks = &state.jwks;
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == jwks.etag);
    let etag = HeaderValue::from_str(&jwks.etag).expect("the etag is quoted hex");
    let cache = HeaderValue::from_static("public, max-age=300");
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        jwks.body.clone(),
    )
        .into_response()
}

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the session store answers, else 503 `unavailable`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.lifecycle.store().ping().await?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// Any other route or method: 404 `not_found`.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
