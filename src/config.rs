//! Typed configuration, parsed once before any port is bound. A bad value is reported
//! by its variable and flag name, never by its value (it may be a secret). [`web`] holds
//! the browser settings (refresh cookie and CORS).

pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::password::{Cost, DEFAULT_QUEUE_PER_SLOT};
use crate::secret::Secret;
use web::{WebArgs, WebConfig};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `tokend serve` needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// API listener (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Metrics listener (default 127.0.0.1:9091).
    pub metrics_listen: SocketAddr,
    /// Redis URL; `None` selects the embedded store.
    pub redis_url: Option<Secret>,
    /// Upper bound on one Redis command (default 500 ms).
    pub redis_timeout: Duration,
    /// Redis connections (default: one per worker).
    pub redis_pool_size: usize,
    /// Threads serving requests (default: one per CPU).
    pub workers: usize,
    /// `iss` claim (default `tokend`).
    pub issuer: String,
    /// `aud` claim (default `tokend`).
    pub audience: String,
    /// Access token lifetime (default 10 min).
    pub access_ttl: Duration,
    /// Session idle lifetime (default 7 days).
    pub session_idle_ttl: Duration,
    /// Session absolute lifetime (default 30 days).
    pub session_max_ttl: Duration,
    /// Grace window of a rotated refresh token (default 10 s).
    pub refresh_grace: Duration,
    /// Keyring file; `None` generates an ephemeral key.
    pub keys: Option<PathBuf>,
    /// Whether registration is open (default true).
    pub registration_open: bool,
    /// argon2id cost.
    pub argon2: Cost,
    /// Concurrent password hashes.
    pub hash_concurrency: usize,
    /// Calls that may wait for a hashing slot.
    pub hash_queue: usize,
    /// Failed logins per account per window (default 10).
    pub login_max_failures: u32,
    /// Failed logins per client IP per window (default 100).
    pub login_max_failures_per_ip: u32,
    /// Login limit window (default 15 min).
    pub login_window: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Log filter directive.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Drain timeout at shutdown (default 10 s).
    pub shutdown_timeout: Duration,
    /// How long a connection may wait for a request's headers, idle keep-alive time
    /// included (default 75 s).
    pub idle_timeout: Duration,
    /// Refresh cookie and CORS settings for browser front ends.
    pub web: WebConfig,
}

/// A setting that failed validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var} (--{}): {expected}", flag.replace('_', "-"))]
pub struct ConfigError {
    /// Environment variable name.
    pub var: &'static str,
    /// Settings field name; the flag is this with dashes for underscores.
    pub flag: &'static str,
    /// What a valid value looks like.
    pub expected: &'static str,
}

/// Longest duration any setting accepts: 3650 days.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Parses whole seconds (`600`) or a whole number with one unit: `250ms`, `30s`,
/// `10m`, `12h`, `7d`. Units are lower case only, so `10M` (months, elsewhere) is an
/// error rather than a surprise; anything above 3650 days is refused.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    if number.is_empty() {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let ms_per_unit: u64 = match unit {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let d = Duration::from_millis(n.checked_mul(ms_per_unit)?);
    (d <= MAX_DURATION).then_some(d)
}

/// One worker thread per CPU.
fn default_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 64) as u32)
}

fn default_hash_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

struct Field<'a> {
    value: Option<&'a str>,
    var: &'static str,
    flag: &'static str,
}

impl Field<'_> {
    fn err(&self, expected: &'static str) -> ConfigError {
        ConfigError {
            var: self.var,
            flag: self.flag,
            expected,
        }
    }

    fn duration(&self, default: Duration, allow_zero: bool) -> Result<Duration, ConfigError> {
        let Some(raw) = self.value else {
            return Ok(default);
        };
        match parse_duration(raw) {
            Some(d) if allow_zero || !d.is_zero() => Ok(d),
            _ => Err(self.err(if allow_zero {
                "whole seconds or a whole number with a unit (ms, s, m, h, d) like 10m, zero or more, at most 3650d"
            } else {
                "whole seconds or a whole number with a unit (ms, s, m, h, d) like 10m, above zero, at most 3650d"
            })),
        }
    }

    /// A duration in whole seconds (for lifetimes written into tokens in seconds).
    fn whole_seconds(&self, default: Duration) -> Result<Duration, ConfigError> {
        let d = self.duration(default, false)?;
        if d.subsec_nanos() != 0 {
            return Err(self.err("whole seconds, like 600 or 10m"));
        }
        Ok(d)
    }

    fn addr(&self, default: &str) -> Result<SocketAddr, ConfigError> {
        self.value
            .unwrap_or(default)
            .parse()
            .map_err(|_| self.err("an IP address and port, like 127.0.0.1:8080"))
    }

    fn number(
        &self,
        default: u32,
        min: u32,
        max: u32,
        expected: &'static str,
    ) -> Result<u32, ConfigError> {
        let Some(raw) = self.value else {
            return Ok(default);
        };
        match raw.trim().parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(expected)),
        }
    }

    fn text(&self, default: &str) -> Result<String, ConfigError> {
        let v = self.value.unwrap_or(default);
        if v.is_empty() || v.len() > 256 {
            return Err(self.err("non-empty text of at most 256 bytes"));
        }
        Ok(v.to_owned())
    }
}

macro_rules! field {
    ($args:ident . $name:ident, $var:literal) => {
        Field {
            value: $args.$name.as_deref(),
            var: $var,
            flag: stringify!($name),
        }
    };
}

impl Config {
    /// Validates the command-line and environment settings.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let redis = field!(args.redis_url, "TOKEND_REDIS_URL");
        let redis_url = match redis.value {
            None => None,
            Some(url)
                if ["redis://", "redis-cluster://", "redis-sentinel://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                    && fred::prelude::Config::from_url(url).is_ok() =>
            {
                Some(Secret::new(url))
            }
            Some(_) => {
                return Err(redis.err(
                    "a Redis URL like redis://127.0.0.1:6379 or redis://:password@host:6379/0",
                ));
            }
        };
        let registration = field!(args.registration, "TOKEND_REGISTRATION");
        let registration_open = match registration.value.unwrap_or("open") {
            "open" => true,
            "closed" => false,
            _ => return Err(registration.err("open or closed")),
        };
        let log_format = field!(args.log_format, "TOKEND_LOG_FORMAT");
        let log_format = match log_format.value.unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(log_format.err("text or json")),
        };
        let log = field!(args.log, "TOKEND_LOG");
        let log_filter = log.text("info")?;
        if !crate::telemetry::is_valid_filter(&log_filter) {
            return Err(log.err("a level like debug, or a filter like debug,fred=info"));
        }
        let proxies = field!(args.trusted_proxies, "TOKEND_TRUSTED_PROXIES");
        let trusted_proxies = proxies
            .value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        proxies.err("comma-separated IP addresses or CIDRs, like 10.0.0.0/8")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let issuer = field!(args.issuer, "TOKEND_ISSUER").text("tokend")?;
        let workers = field!(args.workers, "TOKEND_WORKERS").number(
            default_workers(),
            1,
            64,
            "a whole number from 1 to 64",
        )?;
        let web = WebConfig::from_args(
            &WebArgs {
                cookie_suffix: args.cookie_suffix.as_deref(),
                cookie_domain: args.cookie_domain.as_deref(),
                cookie_samesite: args.cookie_samesite.as_deref(),
                cors_origins: args.cors_origins.as_deref(),
            },
            &issuer,
        )?;
        let keys = match &args.keys {
            Some(p) if p.as_os_str().is_empty() => None,
            other => other.clone(),
        };
        let hash_concurrency = field!(args.hash_concurrency, "TOKEND_HASH_CONCURRENCY").number(
            u32::try_from(default_hash_concurrency()).unwrap_or(1),
            1,
            1024,
            "a whole number from 1 to 1024",
        )?;

        Ok(Self {
            listen: field!(args.listen, "TOKEND_LISTEN").addr("127.0.0.1:8080")?,
            metrics_listen: field!(args.metrics_listen, "TOKEND_METRICS_LISTEN")
                .addr("127.0.0.1:9091")?,
            redis_url,
            redis_timeout: field!(args.redis_timeout, "TOKEND_REDIS_TIMEOUT")
                .duration(Duration::from_millis(500), false)?,
            redis_pool_size: field!(args.redis_pool_size, "TOKEND_REDIS_POOL_SIZE").number(
                workers,
                1,
                64,
                "a whole number from 1 to 64",
            )? as usize,
            workers: workers as usize,
            issuer,
            audience: field!(args.audience, "TOKEND_AUDIENCE").text("tokend")?,
            access_ttl: field!(args.access_ttl, "TOKEND_ACCESS_TTL")
                .whole_seconds(Duration::from_secs(600))?,
            session_idle_ttl: field!(args.session_idle_ttl, "TOKEND_SESSION_IDLE_TTL")
                .duration(Duration::from_secs(7 * 24 * 3600), false)?,
            session_max_ttl: field!(args.session_max_ttl, "TOKEND_SESSION_MAX_TTL")
                .duration(Duration::from_secs(30 * 24 * 3600), false)?,
            refresh_grace: field!(args.refresh_grace, "TOKEND_REFRESH_GRACE")
                .duration(Duration::from_secs(10), true)?,
            keys,
            registration_open,
            argon2: Cost {
                memory_kib: field!(args.argon2_memory_kib, "TOKEND_ARGON2_MEMORY_KIB").number(
                    Cost::default().memory_kib,
                    8,
                    4 * 1024 * 1024,
                    "KiB from 8 to 4194304",
                )?,
                iterations: field!(args.argon2_iterations, "TOKEND_ARGON2_ITERATIONS").number(
                    Cost::default().iterations,
                    1,
                    100,
                    "a whole number from 1 to 100",
                )?,
                parallelism: 1,
            },
            hash_concurrency: hash_concurrency as usize,
            hash_queue: field!(args.hash_queue, "TOKEND_HASH_QUEUE").number(
                hash_concurrency.saturating_mul(DEFAULT_QUEUE_PER_SLOT as u32),
                0,
                1_000_000,
                "a whole number from 0 to 1000000",
            )? as usize,
            login_max_failures: field!(args.login_max_failures, "TOKEND_LOGIN_MAX_FAILURES")
                .number(10, 1, 1_000_000, "a whole number from 1 to 1000000")?,
            login_max_failures_per_ip: field!(
                args.login_max_failures_per_ip,
                "TOKEND_LOGIN_MAX_FAILURES_PER_IP"
            )
            .number(100, 1, 1_000_000, "a whole number from 1 to 1000000")?,
            login_window: field!(args.login_window, "TOKEND_LOGIN_WINDOW")
                .duration(Duration::from_secs(15 * 60), false)?,
            trusted_proxies,
            log: log_filter,
            log_format,
            shutdown_timeout: field!(args.shutdown_timeout, "TOKEND_SHUTDOWN_TIMEOUT")
                .duration(Duration::from_secs(10), true)?,
            idle_timeout: field!(args.idle_timeout, "TOKEND_IDLE_TIMEOUT")
                .duration(Duration::from_secs(75), false)?,
            web,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("3650d"),
            Some(Duration::from_secs(3650 * 86400))
        );
        for bad in [
            "",
            "ten",
            "10x",
            "-5",
            "99999999999999999999",
            "100y",
            "10M",
            "1h 30m",
            "3651d",
            "s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults_serve_a_local_trial() {
        let c = Config::from_args(&ServeArgs::default()).expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9091");
        assert!(c.redis_url.is_none());
        assert_eq!(c.access_ttl, Duration::from_secs(600));
        assert_eq!(c.session_idle_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(c.session_max_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.refresh_grace, Duration::from_secs(10));
        assert!(c.registration_open);
    }

    /// The message start-up fails with for these settings.
    fn refusal(args: &ServeArgs) -> String {
        Config::from_args(args)
            .expect_err("settings refused")
            .to_string()
    }

    #[test]
    fn bad_values_name_the_variable_and_hide_the_value() {
        let args = ServeArgs {
            access_ttl: Some("ten minutes please".into()),
            ..ServeArgs::default()
        };
        let err = refusal(&args);
        assert!(err.contains("TOKEND_ACCESS_TTL"), "{err}");
        assert!(err.contains("--access-ttl"), "names the real flag: {err}");
        assert!(!err.contains("ten minutes"), "{err}");

        let args = ServeArgs {
            redis_url: Some("http://user:s3cret-pw@host".into()),
            ..ServeArgs::default()
        };
        let err = refusal(&args);
        assert!(err.contains("TOKEND_REDIS_URL"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn the_hashing_queue_defaults_to_a_multiple_of_the_slots() {
        let args = ServeArgs {
            hash_concurrency: Some("3".into()),
            ..ServeArgs::default()
        };
        let config = Config::from_args(&args).expect("valid");
        assert_eq!(config.hash_queue, 3 * DEFAULT_QUEUE_PER_SLOT);
        let args = ServeArgs {
            hash_concurrency: Some("3".into()),
            hash_queue: Some("0".into()),
            ..ServeArgs::default()
        };
        assert_eq!(Config::from_args(&args).expect("valid").hash_queue, 0);
        let err = refusal(&ServeArgs {
            hash_queue: Some("-1".into()),
            ..ServeArgs::default()
        });
        assert!(err.contains("TOKEND_HASH_QUEUE"), "{err}");
    }

    #[test]
    fn redis_connections_default_to_one_per_worker() {
        let args = ServeArgs {
            workers: Some("3".into()),
            ..ServeArgs::default()
        };
        let config = Config::from_args(&args).expect("valid");
        assert_eq!((config.workers, config.redis_pool_size), (3, 3));
        let args = ServeArgs {
            workers: Some("3".into()),
            redis_pool_size: Some("1".into()),
            ..ServeArgs::default()
        };
        let config = Config::from_args(&args).expect("valid");
        assert_eq!((config.workers, config.redis_pool_size), (3, 1));
        for bad in ["0", "65", "two"] {
            let err = refusal(&ServeArgs {
                workers: Some(bad.into()),
                ..ServeArgs::default()
            });
            assert!(err.contains("TOKEND_WORKERS"), "{bad}: {err}");
            assert!(err.contains("from 1 to 64"), "{bad}: {err}");
        }
    }

    #[test]
    fn log_filters_are_levels_or_target_directives() {
        let with = |log: &str| {
            Config::from_args(&ServeArgs {
                log: Some(log.into()),
                ..ServeArgs::default()
            })
        };
        for good in ["debug", "WARN", "info,fred=debug", "tokend=trace", "off"] {
            assert!(with(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "debug,loud", "debug,[", "warn,tokend=bogus"] {
            let err = with(bad).expect_err(bad).to_string();
            assert!(err.contains("TOKEND_LOG"), "{bad}: {err}");
        }
    }

    #[test]
    fn zero_grace_is_allowed_but_zero_lifetimes_are_not() {
        let args = ServeArgs {
            refresh_grace: Some("0".into()),
            ..ServeArgs::default()
        };
        assert_eq!(
            Config::from_args(&args).expect("valid").refresh_grace,
            Duration::ZERO
        );
        let args = ServeArgs {
            access_ttl: Some("0".into()),
            ..ServeArgs::default()
        };
        let err = refusal(&args);
        assert!(err.contains("above zero"), "{err}");
        // Each message states the range its own setting accepts.
        let args = ServeArgs {
            refresh_grace: Some("-1".into()),
            ..ServeArgs::default()
        };
        let err = refusal(&args);
        assert!(err.contains("zero or more"), "{err}");
        assert!(!err.contains("above zero"), "{err}");
    }
}
