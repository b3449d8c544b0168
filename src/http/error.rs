//! The one place where failures become HTTP responses: every error is
//! `{"error": code, "message": sentence}` with the status of the contract's table.
//! Internal detail goes to the log, never into a body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::lifecycle::LifecycleError;
use crate::password::PasswordError;
use crate::store::StoreError;

/// An error answer of the HTTP API.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 400: malformed JSON, missing or mistyped field, bad email, weak password.
    InvalidRequest(String),
    /// 401: unknown email or wrong password.
    InvalidCredentials,
    /// 401 (code `invalid_credentials`): a password change with a wrong current password.
    WrongCurrentPassword,
    /// 401: refresh or access token unknown, malformed, expired or revoked, or missing.
    InvalidToken,
    /// 401: a rotated refresh token was replayed after the grace window.
    TokenReused,
    /// 403: cookie request without the anti-CSRF header.
    Forbidden,
    /// 404: no such route, or a session that is not the caller's.
    NotFound,
    /// 409: email already registered.
    Conflict,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 431 (code `payload_too_large`): request headers over the limit.
    HeadersTooLarge,
    /// 429: too many login attempts; retry after this many seconds.
    RateLimited(u64),
    /// 503: the session store cannot be reached.
    Unavailable,
    /// 500: a bug; the detail is logged where it happened.
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// Status, machine code and human message.
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            ApiError::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m),
            ApiError::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "email or password is incorrect",
            ),
            ApiError::WrongCurrentPassword => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the current password is incorrect",
            ),
            ApiError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token is missing, malformed, expired or revoked",
            ),
            ApiError::TokenReused => (
                StatusCode::UNAUTHORIZED,
                "token_reused",
                "this refresh token was already used; the session has been revoked, log in again",
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "cookie requests must carry the header X-Requested-With: tokend",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource"),
            ApiError::Conflict => (
                StatusCode::CONFLICT,
                "conflict",
                "an account with this email already exists",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than 16 KiB",
            ),
            ApiError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "payload_too_large",
                "request headers are larger than 16 KiB",
            ),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many login attempts; retry later",
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the session store is unavailable; retry shortly",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = self.parts();
        let mut response = (status, axum::Json(Body { error, message })).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::RateLimited(secs) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "session store unavailable");
                ApiError::Unavailable
            }
            StoreError::Protocol(detail) => {
                tracing::error!(error = %detail, "session store protocol error");
                ApiError::Internal
            }
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::InvalidRequest(m) => ApiError::InvalidRequest(m),
            LifecycleError::InvalidCredentials => ApiError::InvalidCredentials,
            LifecycleError::InvalidToken(reason) => {
                tracing::debug!(reason, "token refused");
                ApiError::InvalidToken
            }
            LifecycleError::TokenReused => ApiError::TokenReused,
            LifecycleError::EmailTaken => ApiError::Conflict,
            LifecycleError::NotFound => ApiError::NotFound,
            LifecycleError::RateLimited(ms) => ApiError::RateLimited(ms.div_ceil(1000)),
            LifecycleError::Store(e) => e.into(),
            LifecycleError::Password(PasswordError::PoolClosed) => ApiError::Unavailable,
            LifecycleError::Password(e) => {
                tracing::error!(error = %e, "password hashing failed");
                ApiError::Internal
            }
        }
    }
}
