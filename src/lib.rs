//! tokend: the whole session lifecycle for other applications. Password login opens a
//! server-side session per device; short-lived Ed25519 JWT access tokens authorise
//! requests anywhere without a store call; long-lived refresh tokens, stored only as
//! BLAKE3 hashes, rotate on every use with reuse detection.
//!
//! Map of the crate:
//! - [`lifecycle`]: the session rules (login, refresh, logout, revocation); no HTTP.
//! - [`store`]: the [`store::SessionStore`] contract, with Redis and in-process backends.
//! - [`token`]: access tokens (sign, verify, JWKS), refresh tokens, the keyring.
//! - [`password`], [`email`]: credentials.
//! - [`http`]: the HTTP API; [`app`] builds its router.
//! - [`config`], [`cli`], [`serve`], [`worker`], [`telemetry`], [`metrics`]: running
//!   the service.
//! - [`clock`], [`ids`], [`secret`]: small shared types.

pub mod cli;
pub mod clock;
pub mod config;
pub mod email;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod metrics;
pub mod password;
pub mod secret;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod worker;

pub use http::{AppState, app};
