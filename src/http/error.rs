//! The one place where failures become HTTP responses: every error is
//! `{"error": code, "message": sentence}` with the status of the contract's table.
//! Internal detail goes to the log, never into a body.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    /// 429 (code `rate_limited`): more passwords waiting to be checked than the
    /// hashing queue holds; retry after a second.
    Busy,
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
            ApiError::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many passwords are being checked right now; retry shortly",
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
        match self {
            ApiError::RateLimited(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            ApiError::Busy | ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Seconds between two warnings that the store is unavailable. An outage fails every
/// request; one warning per request would flood the log with the same line, so the
/// others go to debug and the next warning says how many there were.
const UNAVAILABLE_WARN_EVERY_S: u64 = 10;

static UNAVAILABLE_LOG: LogThrottle = LogThrottle::new();

/// Lets one warning through per [`UNAVAILABLE_WARN_EVERY_S`], counting the rest.
struct LogThrottle {
    /// Seconds on the process's monotonic clock of the last warning; `NEVER` before it.
    last_s: AtomicU64,
    skipped: AtomicU64,
}

const NEVER: u64 = u64::MAX;

/// Whole seconds since the first call, on a clock that never steps back (the wall
/// clock can, and would then silence the warning until it caught up).
fn monotonic_s() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

impl LogThrottle {
    const fn new() -> Self {
        Self {
            last_s: AtomicU64::new(NEVER),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(calls held back since the last warning)` if this one is to warn.
    fn pass(&self, now_s: u64) -> Option<u64> {
        let last = self.last_s.load(Ordering::Relaxed);
        if (last == NEVER || now_s.saturating_sub(last) >= UNAVAILABLE_WARN_EVERY_S)
            && self
                .last_s
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                match UNAVAILABLE_LOG.pass(monotonic_s()) {
                    Some(skipped) => tracing::warn!(
                        error = %detail,
                        unlogged_since_last = skipped,
                        "session store unavailable"
                    ),
                    None => tracing::debug!(error = %detail, "session store unavailable"),
                }
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
            LifecycleError::Password(PasswordError::Busy) => {
                tracing::debug!("password hashing queue full");
                ApiError::Busy
            }
            LifecycleError::Password(e) => {
                tracing::error!(error = %e, "password hashing failed");
                ApiError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_once_per_period_and_counts_the_rest() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.pass(0), Some(0), "the first failure warns at once");
        assert_eq!(throttle.pass(1), None);
        let throttle = LogThrottle::new();
        assert_eq!(throttle.pass(1_000), Some(0), "the first failure warns");
        assert_eq!(throttle.pass(1_001), None);
        assert_eq!(throttle.pass(1_009), None);
        assert_eq!(
            throttle.pass(1_000 + UNAVAILABLE_WARN_EVERY_S),
            Some(2),
            "the next warning counts the failures logged at debug"
        );
        assert_eq!(throttle.pass(1_000 + UNAVAILABLE_WARN_EVERY_S), None);
    }
}
