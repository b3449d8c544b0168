//! The HTTP API of the contract in `docs/openapi.yaml`. This module translates between
//! HTTP and the lifecycle; it holds no session logic. Routes:
//!
//! | route | handler |
//! | --- | --- |
//! | `POST /v1/users` | [`handlers::users_create`] |
//! | `POST /v1/auth/login` | [`handlers::auth_login`] |
//! | `POST /v1/auth/refresh` | [`handlers::auth_refresh`] |
//! | `POST /v1/auth/logout` | [`handlers::auth_logout`] |
//! | `POST /v1/auth/logout-all` | [`handlers::auth_logout_all`] |
//! | `POST /v1/auth/password` | [`handlers::auth_password`] |
//! | `GET /v1/sessions` | [`handlers::sessions_list`] |
//! | `DELETE /v1/sessions/{session_id}` | [`handlers::sessions_delete`] |
//! | `GET /.well-known/jwks.json` | [`handlers::jwks_get`] |
//! | `GET /healthz`, `GET /readyz` | [`handlers::healthz`], [`handlers::readyz`] |
//!
//! Every route answers CORS preflights and carries CORS headers for the origins of
//! `TOKEND_CORS_ORIGINS` ([`cors`]). A request declaring a body over 16 KiB gets 413 on
//! every route before its handler runs ([`extract::refuse_declared_oversize`]).
//! `/metrics` is served by [`metrics_app`] on its own listener.

pub mod cookie;
pub mod cors;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod observe;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use self::cookie::RefreshCookie;

use crate::lifecycle::Lifecycle;
use crate::metrics::ProcessMetrics;
use crate::token::access::Jwks;

/// Shared state of the API; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The session lifecycle.
    pub lifecycle: Arc<Lifecycle>,
    /// Pre-serialized JWKS.
    pub jwks: Arc<Jwks>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// The refresh cookie of cookie transport.
    pub cookie: Arc<RefreshCookie>,
    /// Origins allowed cross-origin access with credentials, as browsers send `Origin`.
    pub cors_origins: Arc<[HeaderValue]>,
}

/// The API router. With registration closed, `/v1/users` is not routed at all, so it
/// answers the fallback's 404 whatever the request holds.
pub fn app(state: AppState) -> Router {
    let origins = state.cors_origins.clone();
    let router = if state.lifecycle.registration_open() {
        Router::new().route("/v1/users", post(handlers::users_create))
    } else {
        Router::new()
    };
    router
        .route("/v1/auth/login", post(handlers::auth_login))
        .route("/v1/auth/refresh", post(handlers::auth_refresh))
        .route("/v1/auth/logout", post(handlers::auth_logout))
        .route("/v1/auth/logout-all", post(handlers::auth_logout_all))
        .route("/v1/auth/password", post(handlers::auth_password))
        .route("/v1/sessions", get(handlers::sessions_list))
        .route(
            "/v1/sessions/{session_id}",
            delete(handlers::sessions_delete),
        )
        .route("/.well-known/jwks.json", get(handlers::jwks_get))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn(extract::refuse_declared_oversize))
        .layer(cors::layer(&origins))
        .layer(axum::middleware::from_fn_with_state(
            origins,
            cors::unlisted_get_none,
        ))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}

/// The metrics router, for the separate metrics listener. Process metrics are read
/// at each scrape, so they are as fresh as the scrape.
pub fn metrics_app(handle: PrometheusHandle) -> Router {
    let process = Arc::new(ProcessMetrics::new());
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let process = process.clone();
            async move {
                process.collect();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}
