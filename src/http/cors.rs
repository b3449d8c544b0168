//! Cross-origin access for browser front ends, by tower-http's CORS layer: pages on the
//! origins of `TOKEND_CORS_ORIGINS` may call the API with credentials (the refresh
//! cookie) and the headers the API needs; preflights are answered; every other origin
//! gets no CORS header at all, so its script cannot read any answer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

use super::cookie::CSRF_HEADER;

/// How long a browser may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for the listed origins (exactly as browsers send `Origin`).
pub fn layer(origins: &Arc<[HeaderValue]>) -> CorsLayer {
    let listed = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
            listed.contains(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            HeaderName::from_static(CSRF_HEADER),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Removes the `Access-Control-*` headers the CORS layer adds for every preflight
/// (allowed methods and headers, max age) when the origin is not listed, so an
/// unlisted origin learns nothing; `Vary: Origin` stays for caches.
pub async fn unlisted_get_none(
    State(origins): State<Arc<[HeaderValue]>>,
    request: Request,
    next: Next,
) -> Response {
    let unlisted = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| !origins.contains(o));
    let mut response = next.run(request).await;
    if unlisted {
        let cors: Vec<HeaderName> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            response.headers_mut().remove(name);
        }
    }
    response
}
