//! Metric names, units and buckets in one place, and the Prometheus recorder. Labels
//! come only from fixed sets (route template, method, status, outcome), never from
//! user or token values.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram: HTTP request latency, labelled `method`, `route`, `status`.
pub const HTTP_SECONDS: &str = "tokend_http_request_duration_seconds";
/// Counter: refresh attempts by `outcome`: ok, grace (a replay inside the grace window),
/// invalid (malformed or forged), expired (or never existed), revoked, reused, error.
pub const REFRESHES: &str = "tokend_refresh_total";
/// Counter: login attempts by `outcome` (ok, invalid_credentials, invalid_request, error).
pub const LOGINS: &str = "tokend_login_total";
/// Counter: logouts by `scope` (session, all) and `outcome` (revoked, noop).
pub const LOGOUTS: &str = "tokend_logout_total";
/// Counter: new users.
pub const REGISTRATIONS: &str = "tokend_registrations_total";
/// Counter: password changes.
pub const PASSWORD_CHANGES: &str = "tokend_password_changes_total";
/// Histogram: session store operation latency, labelled `op`, `result`.
pub const STORE_SECONDS: &str = "tokend_store_operation_duration_seconds";
/// Histogram: access-token signing latency.
pub const SIGNING_SECONDS: &str = "tokend_signing_duration_seconds";
/// Gauge: keys in the keyring (published in the JWKS).
pub const KEYRING_KEYS: &str = "tokend_keyring_keys";
/// Gauge: build information, labelled `version`; always 1.
pub const BUILD_INFO: &str = "tokend_build_info";

/// Installs the global recorder and returns the handle that renders `/metrics`.
///
/// # Errors
/// When a recorder is already installed (the process builds two apps).
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = recorder()?.install_recorder().map_err(|e| e.to_string())?;
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// The recorder with tokend's buckets, not yet installed.
///
/// # Errors
/// Never for the built-in bucket lists; kept fallible for the builder's API.
pub fn recorder() -> Result<PrometheusBuilder, String> {
    let fast = [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
    ];
    let store = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    let http = [
        0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(SIGNING_SECONDS.into()), &fast)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STORE_SECONDS.into()), &store))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HTTP_SECONDS.into()), &http))
        .map_err(|e| e.to_string())
}
