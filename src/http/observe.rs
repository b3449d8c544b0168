//! Per-request observation: a span with method, matched route and request id, the
//! latency histogram, and refusal of tokens in URLs. Raw paths and query strings are
//! never logged: they could carry a token.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::ApiError;
use crate::metrics as m;

const REQUEST_ID: &str = "x-request-id";

/// Route templates as metric labels, so labelling a request allocates nothing.
const ROUTE_LABELS: [&str; 11] = [
    "/v1/users",
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/auth/logout",
    "/v1/auth/logout-all",
    "/v1/auth/password",
    "/v1/sessions",
    "/v1/sessions/{session_id}",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
];

fn route_label(req: &Request) -> &'static str {
    req.extensions()
        .get::<MatchedPath>()
        .and_then(|p| ROUTE_LABELS.iter().find(|r| **r == p.as_str()).copied())
        .unwrap_or("unmatched")
}

/// The status code as a label, from a table built once, so labelling allocates nothing.
fn status_label(status: StatusCode) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..1000).map(|code| code.to_string()).collect());
    labels
        .get(usize::from(status.as_u16()))
        .map_or("other", String::as_str)
}

/// A request id unique within the process and unpredictable across processes: a
/// random per-process prefix and a counter, with no system call per request.
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let bytes: [u8; 6] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map(|r| r.expose())
            .unwrap_or_default();
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

fn request_id(req: &Request) -> String {
    let supplied = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    supplied.map_or_else(next_request_id, str::to_owned)
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Whether the query string names a token parameter: tokens are never taken from
/// URLs, which end up in logs, histories and `Referer` headers.
fn query_carries_token(req: &Request) -> bool {
    // Names are compared after percent-decoding, so `tok%65n` is `token`.
    req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(name, _)| {
            matches!(
                name.to_ascii_lowercase().as_str(),
                "access_token" | "refresh_token" | "token" | "password"
            )
        })
    })
}

/// Largest total of header names and values accepted, in bytes. hyper bounds what it
/// buffers before this point, so memory stays flat whatever a client sends.
const MAX_HEADER_BYTES: usize = 16 * 1024;

fn header_bytes(req: &Request) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// Wraps every request of the API router.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(&req);
    let method = method_label(req.method());
    let id = request_id(&req);
    let span = tracing::debug_span!("request", method, route = %route, request_id = %id);

    let mut response = if query_carries_token(&req) {
        ApiError::InvalidRequest("tokens and passwords are never accepted in the URL".to_owned())
            .into_response()
    } else if header_bytes(&req) > MAX_HEADER_BYTES {
        ApiError::HeadersTooLarge.into_response()
    } else {
        next.run(req).instrument(span.clone()).await
    };

    let status = response.status();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let elapsed = started.elapsed();
    metrics::histogram!(
        m::HTTP_SECONDS,
        "method" => method,
        "route" => route,
        "status" => status_label(status),
    )
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            micros = elapsed.as_micros() as u64,
            "served"
        );
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_short() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() <= 64));
    }

    #[test]
    fn every_route_of_the_api_has_a_static_label() {
        let source = include_str!("../http.rs");
        let routes: Vec<&str> = source
            .match_indices(".route(")
            .filter_map(|(i, _)| source[i..].split('"').nth(1))
            .filter(|r| r.starts_with('/') && *r != "/metrics")
            .collect();
        assert_eq!(routes.len(), ROUTE_LABELS.len(), "{routes:?}");
        for route in routes {
            assert!(ROUTE_LABELS.contains(&route), "{route} has no label");
        }
    }

    #[test]
    fn statuses_map_to_fixed_labels() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "418");
    }
}
