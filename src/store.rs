//! Where users and sessions live. [`SessionStore`] is the contract; [`redis`] keeps it
//! in Redis (standalone today, keys laid out for Cluster), [`memory`] in this process.
//! Every method that changes a session is one atomic operation in the backend, and
//! both backends pass the same conformance suite (`tests/store_conformance.rs`).
//!
//! The store never sees a refresh token, only [`TokenHash`]es; time is passed in as
//! epoch milliseconds so that the lifecycle, not the store, owns the clock.

pub mod memory;
pub mod redis;

use std::future::Future;

use crate::ids::{SessionId, UserId};
use crate::token::refresh::TokenHash;

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Stable random id; the access token's `sub`.
    pub id: UserId,
    /// Normalised email address.
    pub email: String,
    /// argon2id hash in PHC string form.
    pub password_hash: String,
}

/// What the store is given to create a session at login.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// Owner.
    pub user_id: UserId,
    /// Fresh random session id.
    pub session_id: SessionId,
    /// Hash of the first refresh token.
    pub token_hash: TokenHash,
    /// Client-supplied device label.
    pub device: Option<String>,
    /// `User-Agent` at login, truncated.
    pub user_agent: Option<String>,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Creation time, epoch ms.
    pub now_ms: u64,
    /// When the session ends if never refreshed: `min(now + idle, absolute)`.
    pub expires_at_ms: u64,
    /// Absolute end of the session, epoch ms; no refresh extends past it.
    pub absolute_expires_at_ms: u64,
    /// The password hash the login verified. When set, the session is created only if
    /// the user's stored hash is still this one, in the same atomic step: a login that
    /// checked the old password while a password change revoked every session cannot
    /// add a session after it.
    pub password_hash: Option<String>,
}

/// A live session as listed to its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub session_id: SessionId,
    /// Client-supplied device label.
    pub device: Option<String>,
    /// `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Login time, epoch ms.
    pub created_at_ms: u64,
    /// Last login or refresh, epoch ms.
    pub last_used_at_ms: u64,
    /// When the session ends unless refreshed (idle) or at the latest (absolute), epoch ms.
    pub expires_at_ms: u64,
}

/// One refresh attempt, as the store sees it.
#[derive(Clone, Debug)]
pub struct Rotation<'a> {
    /// Owner named by the presented token.
    pub user_id: &'a UserId,
    /// Session named by the presented token.
    pub session_id: &'a SessionId,
    /// Hash of the presented token.
    pub presented: TokenHash,
    /// Hash of the presented token's successor.
    pub successor: TokenHash,
    /// Now, epoch ms.
    pub now_ms: u64,
    /// Idle lifetime, ms: a rotation moves the session's end to `min(now + idle, absolute)`.
    pub idle_ms: u64,
    /// How long after a rotation its predecessor is still honoured, ms.
    pub grace_ms: u64,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented token was current and is now replaced by its successor.
    Rotated {
        /// New end of the session, epoch ms.
        expires_at_ms: u64,
        /// Absolute end of the session, epoch ms (unchanged by rotation).
        absolute_expires_at_ms: u64,
    },
    /// The presented token was rotated moments ago (within the grace window): its
    /// successor is current and stays so. Nothing changed.
    Replayed {
        /// End of the session, epoch ms.
        expires_at_ms: u64,
        /// Absolute end of the session, epoch ms.
        absolute_expires_at_ms: u64,
    },
    /// The presented token was rotated longer ago than the grace window: the session
    /// has been revoked.
    Reused,
    /// The session exists but the presented token is neither current nor the current
    /// token's predecessor. It is either an older link of the chain (reuse) or a
    /// forgery; only the caller, which can derive successors, can tell.
    Superseded {
        /// Hash of the session's current token.
        current: TokenHash,
    },
    /// The session was revoked (logout, logout-all, password change, reuse). Revocations
    /// are remembered until the session would have ended, for at most a day.
    Revoked,
    /// No such session: never existed, or expired.
    Unknown,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer in time or the connection is down; retry later.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this code does not understand (a bug).
    #[error("unexpected session store reply: {0}")]
    Protocol(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The operations the session lifecycle needs from a store. Each is one round trip
/// and, where it writes, atomic.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new user; `false` if the email is already registered.
    fn insert_user(&self, user: &UserRecord) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Finds a user by normalised email.
    fn user_by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = StoreResult<Option<UserRecord>>> + Send;

    /// Finds a user by id.
    fn user_by_id(
        &self,
        id: &UserId,
    ) -> impl Future<Output = StoreResult<Option<UserRecord>>> + Send;

    /// Creates a session and adds it to its owner's index, pruning index members whose
    /// sessions have ended. `false`, with nothing written, when
    /// [`NewSession::password_hash`] no longer matches the user's password.
    fn create_session(
        &self,
        session: &NewSession,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Rotates a session's refresh token, honouring the grace window and revoking the
    /// session on reuse of its immediate predecessor.
    fn rotate(
        &self,
        rotation: &Rotation<'_>,
    ) -> impl Future<Output = StoreResult<RotateOutcome>> + Send;

    /// Revokes a session if `presented` is its current token or that token's
    /// predecessor (whose successor hash is `successor`); `false` otherwise.
    fn revoke_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Revokes one session of `user`; `false` if it is not a live session of theirs.
    fn revoke_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Revokes every session of `user`; returns how many were live.
    fn revoke_all(&self, user: &UserId) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Revokes every session of `user` if `presented` is the current token of
    /// `session` or that token's predecessor; `None` (nothing revoked) otherwise.
    fn revoke_all_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send;

    /// Live sessions of `user`, newest first; prunes index members that have ended.
    fn list_sessions(
        &self,
        user: &UserId,
        now_ms: u64,
    ) -> impl Future<Output = StoreResult<Vec<SessionRecord>>> + Send;

    /// Replaces the user's password hash and revokes all their sessions, atomically;
    /// `None` if the user does not exist, else how many sessions were revoked.
    fn set_password_and_revoke_all(
        &self,
        user: &UserId,
        password_hash: &str,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send;

    /// Counts one login attempt against `key` in a fixed window of `window_ms` that
    /// starts with the window's first attempt. Returns `None` if the attempt may
    /// proceed (it was one of the first `limit`), else how many ms until the window
    /// ends. Atomic: concurrent attempts never let more than `limit` through.
    fn hit_limit(
        &self,
        key: &LimitKey,
        limit: u32,
        window_ms: u64,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send;

    /// Gives back one attempt counted against `key` (a login that succeeded), or
    /// forgets all of them with `reset`.
    fn release_limit(
        &self,
        key: &LimitKey,
        reset: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Checks that the backend answers.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What a login attempt is counted against. The values are hashed before they reach
/// the store, so no email address or IP appears in a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One account (by normalised email, registered or not).
    Account(String),
    /// One client IP address.
    Client(String),
}

impl LimitKey {
    /// Stable store key: kind plus a BLAKE3 digest of the value.
    pub fn storage_id(&self) -> String {
        let (kind, value) = match self {
            LimitKey::Account(v) => ("a", v),
            LimitKey::Client(v) => ("i", v),
        };
        format!("{kind}:{}", &blake3::hash(value.as_bytes()).to_hex()[..32])
    }
}

/// The store chosen by configuration.
// One value lives for the whole process; boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    /// Redis through fred.
    Redis(redis::RedisStore),
    /// In-process maps.
    Memory(memory::MemoryStore),
}

impl Store {
    /// Short name for logs and the start-up summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Redis(_) => "redis",
            Store::Memory(_) => "memory",
        }
    }
}

/// Runs one backend call and records its latency under `op`.
macro_rules! delegate {
    ($self:ident, $op:literal, $s:ident => $call:expr) => {{
        let started = std::time::Instant::now();
        let result = match $self {
            Store::Redis($s) => $call.await,
            Store::Memory($s) => $call.await,
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(crate::metrics::STORE_SECONDS, "op" => $op, "result" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }};
}

impl SessionStore for Store {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        delegate!(self, "insert_user", s => s.insert_user(user))
    }
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        delegate!(self, "user_by_email", s => s.user_by_email(email))
    }
    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        delegate!(self, "user_by_id", s => s.user_by_id(id))
    }
    async fn create_session(&self, session: &NewSession) -> StoreResult<bool> {
        delegate!(self, "create_session", s => s.create_session(session))
    }
    async fn rotate(&self, rotation: &Rotation<'_>) -> StoreResult<RotateOutcome> {
        delegate!(self, "rotate", s => s.rotate(rotation))
    }
    async fn revoke_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> StoreResult<bool> {
        delegate!(self, "revoke_by_token", s => s.revoke_by_token(user, session, presented, successor))
    }
    async fn revoke_session(&self, user: &UserId, session: &SessionId) -> StoreResult<bool> {
        delegate!(self, "revoke_session", s => s.revoke_session(user, session))
    }
    async fn revoke_all(&self, user: &UserId) -> StoreResult<u64> {
        delegate!(self, "revoke_all", s => s.revoke_all(user))
    }
    async fn revoke_all_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> StoreResult<Option<u64>> {
        delegate!(self, "revoke_all_by_token", s => s.revoke_all_by_token(user, session, presented, successor))
    }
    async fn list_sessions(&self, user: &UserId, now_ms: u64) -> StoreResult<Vec<SessionRecord>> {
        delegate!(self, "list_sessions", s => s.list_sessions(user, now_ms))
    }
    async fn set_password_and_revoke_all(
        &self,
        user: &UserId,
        password_hash: &str,
    ) -> StoreResult<Option<u64>> {
        delegate!(self, "set_password_and_revoke_all", s => s.set_password_and_revoke_all(user, password_hash))
    }
    async fn hit_limit(
        &self,
        key: &LimitKey,
        limit: u32,
        window_ms: u64,
    ) -> StoreResult<Option<u64>> {
        delegate!(self, "hit_limit", s => s.hit_limit(key, limit, window_ms))
    }
    async fn release_limit(&self, key: &LimitKey, reset: bool) -> StoreResult<()> {
        delegate!(self, "release_limit", s => s.release_limit(key, reset))
    }
    async fn ping(&self) -> StoreResult<()> {
        delegate!(self, "ping", s => s.ping())
    }
}
