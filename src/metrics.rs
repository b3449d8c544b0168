//! Metric names, units, help texts and buckets in one place, and the Prometheus
//! recorder. Labels come only from fixed sets (route template, method, status, outcome,
//! store operation), never from user or token values. Process metrics (`process_*`)
//! are collected at each scrape.

use metrics::Unit;
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
/// Histogram: session store operation latency, labelled `op`, `result` (ok, error).
pub const STORE_SECONDS: &str = "tokend_store_operation_duration_seconds";
/// Gauge: 1 while the session store answered its last background probe, else 0.
pub const STORE_UP: &str = "tokend_store_up";
/// Histogram: access-token signing latency.
pub const SIGNING_SECONDS: &str = "tokend_signing_duration_seconds";
/// Histogram: one argon2id hash or verification on the blocking pool, queueing excluded.
pub const PASSWORD_HASH_SECONDS: &str = "tokend_password_hash_duration_seconds";
/// Gauge: password hashes waiting for a slot of the hashing pool.
pub const PASSWORD_HASHES_QUEUED: &str = "tokend_password_hashes_queued";
/// Gauge: password hashes running on the hashing pool.
pub const PASSWORD_HASHES_IN_FLIGHT: &str = "tokend_password_hashes_in_flight";
/// Gauge: slots of the hashing pool (`TOKEND_HASH_CONCURRENCY`).
pub const PASSWORD_HASH_SLOTS: &str = "tokend_password_hash_slots";
/// Gauge: keys in the keyring (published in the JWKS).
pub const KEYRING_KEYS: &str = "tokend_keyring_keys";
/// Gauge: build information, labelled `version`; always 1.
pub const BUILD_INFO: &str = "tokend_build_info";

/// Ed25519 signing with a parsed key takes tens of microseconds; a millisecond means a
/// starved CPU.
const SIGNING_BUCKETS: [f64; 10] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01,
];
/// One store round trip: microseconds in process, a few hundred microseconds to a few
/// milliseconds to Redis, up to `TOKEND_REDIS_TIMEOUT` (500ms by default) when it is sick.
const STORE_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];
/// argon2id at the default cost takes tens of milliseconds per core; cheap test costs
/// take about one.
const PASSWORD_BUCKETS: [f64; 11] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Requests: a refresh or JWKS fetch is sub-millisecond to a few milliseconds, a login
/// tens of milliseconds, and a login queued behind a burst can wait seconds.
const HTTP_BUCKETS: [f64; 15] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Installs the global recorder, registers help texts and returns the handle that
/// renders `/metrics`.
///
/// # Errors
/// When a recorder is already installed (the process builds two apps).
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = recorder()?.install_recorder().map_err(|e| e.to_string())?;
    describe();
    zero_series();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// The recorder with tokend's buckets, not yet installed.
///
/// # Errors
/// Never for the built-in bucket lists; kept fallible for the builder's API.
pub fn recorder() -> Result<PrometheusBuilder, String> {
    let buckets: [(&str, &[f64]); 4] = [
        (SIGNING_SECONDS, &SIGNING_BUCKETS),
        (STORE_SECONDS, &STORE_BUCKETS),
        (PASSWORD_HASH_SECONDS, &PASSWORD_BUCKETS),
        (HTTP_SECONDS, &HTTP_BUCKETS),
    ];
    buckets
        .into_iter()
        .try_fold(PrometheusBuilder::new(), |builder, (name, list)| {
            builder.set_buckets_for_metric(Matcher::Full(name.into()), list)
        })
        .map_err(|e| e.to_string())
}

/// Registers the `# HELP` text and unit of every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};

    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "API request latency by route template"
    );
    describe_counter!(REFRESHES, "Refresh attempts by outcome");
    describe_counter!(LOGINS, "Login attempts by outcome");
    describe_counter!(LOGOUTS, "Logouts by scope and outcome");
    describe_counter!(REGISTRATIONS, "Users registered");
    describe_counter!(PASSWORD_CHANGES, "Passwords changed");
    describe_histogram!(
        STORE_SECONDS,
        Unit::Seconds,
        "Session store operation latency"
    );
    describe_gauge!(STORE_UP, "1 if the session store answered the last probe");
    describe_histogram!(
        SIGNING_SECONDS,
        Unit::Seconds,
        "Access-token signing latency"
    );
    describe_histogram!(
        PASSWORD_HASH_SECONDS,
        Unit::Seconds,
        "One argon2id hash or verification, queueing excluded"
    );
    describe_gauge!(
        PASSWORD_HASHES_QUEUED,
        "Password hashes waiting for a pool slot"
    );
    describe_gauge!(PASSWORD_HASHES_IN_FLIGHT, "Password hashes running");
    describe_gauge!(PASSWORD_HASH_SLOTS, "Slots of the password hashing pool");
    describe_gauge!(KEYRING_KEYS, "Keys published in the JWKS");
    describe_gauge!(BUILD_INFO, "Build information; always 1");
}

/// Creates every counter series of the fixed label sets at zero, and the hashing
/// pool's gauges, so that they are scraped from the start: a series that first appears
/// with its first event hides that event from `rate()` and `increase()`, and leaves
/// dashboards and alerts without data until then.
fn zero_series() {
    for outcome in [
        "ok", "grace", "invalid", "expired", "revoked", "reused", "error",
    ] {
        metrics::counter!(REFRESHES, "outcome" => outcome).increment(0);
    }
    for outcome in [
        "ok",
        "invalid_credentials",
        "invalid_request",
        "rate_limited",
        "busy",
        "error",
    ] {
        metrics::counter!(LOGINS, "outcome" => outcome).increment(0);
    }
    for (scope, outcome) in [
        ("session", "revoked"),
        ("session", "noop"),
        ("all", "revoked"),
    ] {
        metrics::counter!(LOGOUTS, "scope" => scope, "outcome" => outcome).increment(0);
    }
    metrics::counter!(REGISTRATIONS).increment(0);
    metrics::counter!(PASSWORD_CHANGES).increment(0);
    metrics::gauge!(PASSWORD_HASHES_QUEUED).increment(0.0);
    metrics::gauge!(PASSWORD_HASHES_IN_FLIGHT).increment(0.0);
}

/// Collects the `process_*` metrics (CPU, memory, file descriptors, threads, start
/// time); [`ProcessMetrics::collect`] runs at each scrape.
pub struct ProcessMetrics(metrics_process::Collector);

impl ProcessMetrics {
    /// Registers the process metrics' help texts.
    pub fn new() -> Self {
        let collector = metrics_process::Collector::default();
        collector.describe();
        Self(collector)
    }

    /// Reads the process's current figures into the recorder.
    pub fn collect(&self) {
        self.0.collect();
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_lists_are_sorted_and_bracket_their_operation() {
        for list in [
            &SIGNING_BUCKETS[..],
            &STORE_BUCKETS[..],
            &PASSWORD_BUCKETS[..],
            &HTTP_BUCKETS[..],
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        assert!(SIGNING_BUCKETS.contains(&0.000_025), "a typical signature");
        assert!(
            STORE_BUCKETS.contains(&0.5),
            "the default Redis timeout is a bucket"
        );
        assert!(
            HTTP_BUCKETS.contains(&0.1),
            "the refresh latency alert is a bucket"
        );
        assert!(recorder().is_ok());
    }
}
