//! Command-line interface. Every serve setting is a flag and a `TOKEND_*` variable;
//! values are taken as text here and checked in [`crate::config`], so a bad one is
//! reported by variable name without echoing it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// tokend: sessions, rotating refresh tokens and Ed25519 access tokens.
#[derive(Debug, Parser)]
#[command(name = "tokend", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
// Parsed once at start; the size of the serve settings does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(ServeArgs),
    /// Manage the signing keyring file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Exit 0 if the service answers `/healthz` at the given address (for container
    /// health checks, where no curl is installed).
    Healthcheck {
        /// Address of the service.
        #[arg(long, env = "TOKEND_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

/// Keyring subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new keyring with one signing key and a fresh token secret.
    Generate {
        /// Where to write it.
        #[arg(long, default_value = "tokend-keys.json")]
        out: PathBuf,
        /// Replace an existing file (every issued token stops verifying).
        #[arg(long, conflicts_with = "if_missing")]
        force: bool,
        /// Keep an existing, valid file and exit 0 (for a first start in a container).
        #[arg(long)]
        if_missing: bool,
    },
    /// Add a new key, published in the JWKS but not yet signing.
    Add {
        /// The keyring file.
        #[arg(long, env = "TOKEND_KEYS")]
        file: PathBuf,
    },
    /// Make a published key the signing key.
    Promote {
        /// The keyring file.
        #[arg(long, env = "TOKEND_KEYS")]
        file: PathBuf,
        /// Key id to sign with.
        kid: String,
    },
    /// Remove a key that no longer signs.
    Remove {
        /// The keyring file.
        #[arg(long, env = "TOKEND_KEYS")]
        file: PathBuf,
        /// Key id to remove.
        kid: String,
    },
    /// List the keys.
    List {
        /// The keyring file.
        #[arg(long, env = "TOKEND_KEYS")]
        file: PathBuf,
    },
}

/// Settings of the `serve` command; see the README's configuration table.
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Address of the API listener.
    #[arg(long, env = "TOKEND_LISTEN")]
    pub listen: Option<String>,
    /// Address of the Prometheus `/metrics` listener.
    #[arg(long, env = "TOKEND_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Redis URL; unset runs on the embedded in-process store.
    #[arg(long, env = "TOKEND_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Upper bound on one Redis command (default 500ms).
    #[arg(long, env = "TOKEND_REDIS_TIMEOUT")]
    pub redis_timeout: Option<String>,
    /// Redis connections (default one per worker thread).
    #[arg(long, env = "TOKEND_REDIS_POOL_SIZE")]
    pub redis_pool_size: Option<String>,
    /// Threads serving requests, each with its own connections (default one per CPU).
    #[arg(long, env = "TOKEND_WORKERS")]
    pub workers: Option<String>,
    /// `iss` of access tokens (default `tokend`).
    #[arg(long, env = "TOKEND_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` of access tokens (default `tokend`).
    #[arg(long, env = "TOKEND_AUDIENCE")]
    pub audience: Option<String>,
    /// Access token lifetime (default 10m).
    #[arg(long, env = "TOKEND_ACCESS_TTL")]
    pub access_ttl: Option<String>,
    /// Session idle lifetime (default 7d).
    #[arg(long, env = "TOKEND_SESSION_IDLE_TTL")]
    pub session_idle_ttl: Option<String>,
    /// Session absolute lifetime (default 30d).
    #[arg(long, env = "TOKEND_SESSION_MAX_TTL")]
    pub session_max_ttl: Option<String>,
    /// Grace window for a rotated refresh token (default 10s; 0 disables).
    #[arg(long, env = "TOKEND_REFRESH_GRACE")]
    pub refresh_grace: Option<String>,
    /// Keyring file from `tokend keys generate`; unset generates a throwaway key.
    #[arg(long, env = "TOKEND_KEYS")]
    pub keys: Option<PathBuf>,
    /// `open` (default) or `closed`: whether `POST /v1/users` registers users.
    #[arg(long, env = "TOKEND_REGISTRATION")]
    pub registration: Option<String>,
    /// argon2id memory cost in KiB (default 19456).
    #[arg(long, env = "TOKEND_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<String>,
    /// argon2id passes (default 2).
    #[arg(long, env = "TOKEND_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<String>,
    /// Password hashes computed at once (default: half the CPUs, at least 1).
    #[arg(long, env = "TOKEND_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<String>,
    /// Logins, registrations and password changes that may wait for a hashing slot
    /// (default 128 per slot); more are refused with 429 at once.
    #[arg(long, env = "TOKEND_HASH_QUEUE")]
    pub hash_queue: Option<String>,
    /// Failed logins evaluated per account per window (default 10).
    #[arg(long, env = "TOKEND_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<String>,
    /// Failed logins evaluated per client IP per window (default 100).
    #[arg(long, env = "TOKEND_LOGIN_MAX_FAILURES_PER_IP")]
    pub login_max_failures_per_ip: Option<String>,
    /// Login limit window; also the longest lockout (default 15m).
    #[arg(long, env = "TOKEND_LOGIN_WINDOW")]
    pub login_window: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed: comma-separated IPs or CIDRs
    /// (default none: the socket peer is the client).
    #[arg(long, env = "TOKEND_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// tokend's log level, e.g. `debug` (default `info`); dependencies log at `warn`
    /// unless a directive names them, e.g. `debug,fred=debug`.
    #[arg(long, env = "TOKEND_LOG")]
    pub log: Option<String>,
    /// `text` (default) or `json`.
    #[arg(long, env = "TOKEND_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// How long in-flight requests may take to finish at shutdown (default 10s).
    #[arg(long, env = "TOKEND_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
    /// How long a connection may wait for a request's headers, keep-alive idle time
    /// included, before it is closed (default 75s).
    #[arg(long, env = "TOKEND_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Refresh cookie name after `__Secure-` (default `tokend_refresh`).
    #[arg(long, env = "TOKEND_COOKIE_SUFFIX")]
    pub cookie_suffix: Option<String>,
    /// Refresh cookie `Domain`; unset (default) makes a host-only cookie.
    #[arg(long, env = "TOKEND_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,
    /// Refresh cookie `SameSite`: `strict` (default), `lax`, or `none` (needs CORS origins).
    #[arg(long, env = "TOKEND_COOKIE_SAMESITE")]
    pub cookie_samesite: Option<String>,
    /// Comma-separated origins whose pages may call the API with credentials.
    #[arg(long, env = "TOKEND_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
}
