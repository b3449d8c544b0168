//! Per-request observation: a span with method, matched route and request id, the
//! latency histogram, and refusal of tokens in URLs. Raw paths and query strings are
//! never logged: they could carry a token.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::ApiError;
use crate::metrics as m;

const REQUEST_ID: &str = "x-request-id";

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
    match supplied {
        Some(id) => id.to_owned(),
        None => {
            let bytes: [u8; 12] = ring::rand::generate(&ring::rand::SystemRandom::new())
                .map(|r| r.expose())
                .unwrap_or_default();
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
        }
    }
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
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
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
        "status" => status.as_str().to_owned(),
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
