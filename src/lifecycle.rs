//! The session lifecycle: registration, login, refresh with rotation and reuse
//! detection, logout, logout everywhere, session listing and revocation, password
//! change. Knows nothing of HTTP; the `http` module translates.

use std::time::Duration;

use crate::clock::Clock;
use crate::email::Email;
use crate::ids::{SessionId, UserId};
use crate::metrics as m;
use crate::password::{PasswordError, PasswordHasher};
use crate::secret::Secret;
use crate::store::{
    LimitKey, NewSession, RotateOutcome, Rotation, SessionRecord, SessionStore, Store, StoreError,
    UserRecord,
};
use crate::token::access::{AccessSigner, AccessTokenError, AccessVerifier, Claims};
use crate::token::refresh::{RefreshToken, TokenHash, TokenHasher};

/// Longest accepted device label, in bytes.
pub const MAX_DEVICE_LEN: usize = 128;
/// Longest stored `User-Agent`, in bytes; longer ones are cut.
pub const MAX_USER_AGENT_LEN: usize = 256;

/// How far back along a session's rotation chain a presented token is recognised as
/// a genuine, rotated-away token (reuse) rather than a forgery. Each step is two
/// BLAKE3 hashes (about 0.35 µs all told), so the longest walk costs under 2 ms; a
/// client refreshing every 10 minutes for 30 days makes 4,320 rotations. An older
/// token is answered as invalid without revoking.
///
/// Anyone who knows a session id (it is in every access token) can make the service
/// walk this far with an invented secret, so walks run one at a time on a blocking
/// thread: a flood of forged tokens queues there and never stalls the async workers.
pub const MAX_REUSE_WALK: u32 = 5_000;

/// Lifetimes and switches of the lifecycle.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Idle lifetime: a session not refreshed for this long ends.
    pub idle_ttl: Duration,
    /// Absolute lifetime of a session from login.
    pub max_ttl: Duration,
    /// How long a rotated refresh token is still honoured (returning its successor).
    pub refresh_grace: Duration,
    /// Whether `POST /v1/users` is open.
    pub registration_open: bool,
    /// Brute-force limits on login.
    pub login_limits: LoginLimits,
}

/// How many failed logins are evaluated before further attempts are refused.
///
/// Each attempt is counted before its password is checked and given back when it
/// succeeds, so concurrent guesses can never have more than the limit evaluated. A
/// window starts with its first counted attempt and is not extended by attempts made
/// while limited: a lockout always ends `window` after it began.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// Failed attempts per account (by email, registered or not) per window.
    pub per_account: u32,
    /// Failed attempts per client IP per window.
    pub per_client: u32,
    /// Window length.
    pub window: Duration,
}

/// Who is logging in from where.
#[derive(Clone, Debug, Default)]
pub struct ClientMeta {
    /// Client-supplied device label.
    pub device: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// Client IP address.
    pub ip: Option<String>,
}

/// Tokens handed to a client after login or refresh.
#[derive(Debug)]
pub struct Issued {
    /// Signed access token.
    pub access_token: String,
    /// Access token lifetime, seconds.
    pub expires_in: u64,
    /// The refresh token to present next.
    pub refresh_token: RefreshToken,
    /// Seconds until the session ends unless refreshed.
    pub refresh_expires_in: u64,
    /// Seconds until the session ends at the latest, refreshed or not (its absolute
    /// lifetime); a refresh cookie lives this long.
    pub session_expires_in: u64,
    /// The session.
    pub session_id: SessionId,
}

/// A live session as shown to its owner.
#[derive(Debug)]
pub struct SessionView {
    /// Stored fields.
    pub record: SessionRecord,
    /// Whether the caller's access token belongs to this session.
    pub current: bool,
}

/// Why a lifecycle operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The input breaks a rule (bad email, weak password, over-long label).
    #[error("{0}")]
    InvalidRequest(String),
    /// Unknown email or wrong password.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A refresh or access token is unknown, malformed, expired or revoked; the
    /// reason is for logs and metrics only.
    #[error("invalid token ({0})")]
    InvalidToken(&'static str),
    /// A rotated refresh token was replayed after the grace window; the session is gone.
    #[error("refresh token reused; session revoked")]
    TokenReused,
    /// The email is registered already.
    #[error("email already registered")]
    EmailTaken,
    /// No such resource for this caller (or registration is switched off).
    #[error("not found")]
    NotFound,
    /// Too many failed logins for this account or client; retry after this many ms.
    #[error("too many login attempts")]
    RateLimited(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing refused (queue full) or failed (shutting down).
    #[error(transparent)]
    Password(PasswordError),
}

impl From<PasswordError> for LifecycleError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Length => LifecycleError::InvalidRequest(e.to_string()),
            other => LifecycleError::Password(other),
        }
    }
}

type Result<T> = std::result::Result<T, LifecycleError>;

/// Everything the lifecycle needs, built once at start.
pub struct Lifecycle {
    store: Store,
    passwords: PasswordHasher,
    refresh: TokenHasher,
    signer: AccessSigner,
    verifier: AccessVerifier,
    rng: ring::rand::SystemRandom,
    clock: Clock,
    policy: Policy,
    /// Lets one reuse walk run at a time (see [`MAX_REUSE_WALK`]).
    walks: tokio::sync::Semaphore,
    /// Token ids without a system call per token.
    jti: JtiSource,
}

/// Unique, unguessable `jti` values: a keyed BLAKE3 hash of a counter under a key
/// drawn once per process. Unique within the process by the counter, across processes
/// by the key; about 0.1 µs instead of a `getrandom` call per token.
struct JtiSource {
    key: [u8; 32],
    counter: std::sync::atomic::AtomicU64,
}

impl JtiSource {
    fn new(rng: &ring::rand::SystemRandom) -> Self {
        Self {
            key: ring::rand::generate(rng)
                .expect("the system random source does not fail once initialised")
                .expose(),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let digest = blake3::keyed_hash(&self.key, &n.to_le_bytes());
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &digest.as_bytes()[..16],
        )
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

fn secs_until(end_ms: u64, now_ms: u64) -> u64 {
    end_ms.saturating_sub(now_ms) / 1000
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Lifecycle {
    /// Wires the parts together.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        passwords: PasswordHasher,
        refresh: TokenHasher,
        signer: AccessSigner,
        verifier: AccessVerifier,
        clock: Clock,
        policy: Policy,
    ) -> Self {
        Self {
            store,
            passwords,
            refresh,
            signer,
            verifier,
            rng: ring::rand::SystemRandom::new(),
            clock,
            policy,
            walks: tokio::sync::Semaphore::new(1),
            jti: JtiSource::new(&ring::rand::SystemRandom::new()),
        }
    }

    /// The session store (for readiness checks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The password hasher (for its queue gauge).
    pub fn passwords(&self) -> &PasswordHasher {
        &self.passwords
    }

    /// Whether `POST /v1/users` is open.
    pub fn registration_open(&self) -> bool {
        self.policy.registration_open
    }

    /// Registers a user.
    ///
    /// # Errors
    /// `NotFound` when registration is closed, `InvalidRequest` for a bad email or
    /// password, `EmailTaken`, or a store failure.
    pub async fn register(&self, email: &str, password: &Secret) -> Result<UserId> {
        if !self.policy.registration_open {
            return Err(LifecycleError::NotFound);
        }
        let email =
            Email::parse(email).map_err(|e| LifecycleError::InvalidRequest(e.to_string()))?;
        PasswordHasher::check_policy(password)?;

        // Cheap duplicate check first, so a taken email costs no hashing.
        if self.store.user_by_email(email.as_str()).await?.is_some() {
            return Err(LifecycleError::EmailTaken);
        }
        let user = UserRecord {
            id: UserId::generate(&self.rng),
            email: email.as_str().to_owned(),
            password_hash: self.passwords.hash(password).await?,
        };
        if !self.store.insert_user(&user).await? {
            return Err(LifecycleError::EmailTaken);
        }
        metrics::counter!(m::REGISTRATIONS).increment(1);
        Ok(user.id)
    }

    /// Checks a password and opens a new session.
    ///
    /// # Errors
    /// `InvalidCredentials` for an unknown email or a wrong password (same work for
    /// both), `InvalidRequest` for an over-long device label, or a store failure.
    pub async fn login(&self, email: &str, password: &Secret, meta: ClientMeta) -> Result<Issued> {
        let outcome = self.login_inner(email, password, meta).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(LifecycleError::InvalidCredentials) => "invalid_credentials",
            Err(LifecycleError::InvalidRequest(_)) => "invalid_request",
            Err(LifecycleError::RateLimited(_)) => "rate_limited",
            Err(LifecycleError::Password(PasswordError::Busy)) => "busy",
            Err(_) => "error",
        };
        metrics::counter!(m::LOGINS, "outcome" => label).increment(1);
        outcome
    }

    async fn login_inner(
        &self,
        email: &str,
        password: &Secret,
        meta: ClientMeta,
    ) -> Result<Issued> {
        if meta
            .device
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DEVICE_LEN || d.chars().any(char::is_control))
        {
            return Err(LifecycleError::InvalidRequest(format!(
                "device must be at most {MAX_DEVICE_LEN} bytes of printable text"
            )));
        }
        let email =
            Email::parse(email).map_err(|e| LifecycleError::InvalidRequest(e.to_string()))?;
        let account = LimitKey::Account(email.as_str().to_owned());
        let client = meta.ip.clone().map(LimitKey::Client);
        let limits = self.policy.login_limits;
        let window_ms = ms(limits.window);
        if let Some(key) = &client {
            if let Some(retry) = self
                .store
                .hit_limit(key, limits.per_client, window_ms)
                .await?
            {
                return Err(LifecycleError::RateLimited(retry));
            }
        }
        if let Some(retry) = self
            .store
            .hit_limit(&account, limits.per_account, window_ms)
            .await?
        {
            return Err(LifecycleError::RateLimited(retry));
        }

        let user = self.store.user_by_email(email.as_str()).await?;
        let ok = self
            .verify_counted(
                password,
                user.as_ref().map(|u| u.password_hash.as_str()),
                [Some(&account), client.as_ref()],
            )
            .await?;
        let user = match user {
            Some(user) if ok => user,
            _ => return Err(LifecycleError::InvalidCredentials),
        };
        // A success proves the password: the account's failures no longer matter,
        // and the client's attempt is given back.
        self.store.release_limit(&account, true).await?;
        if let Some(key) = &client {
            self.store.release_limit(key, false).await?;
        }

        let now = self.clock.now_ms();
        let session_id = SessionId::generate(&self.rng);
        let token = RefreshToken::generate(&self.rng, user.id.clone(), session_id.clone());
        let absolute = now + ms(self.policy.max_ttl);
        let expires = (now + ms(self.policy.idle_ttl)).min(absolute);
        let created = self
            .store
            .create_session(&NewSession {
                user_id: user.id.clone(),
                session_id: session_id.clone(),
                token_hash: self.refresh.hash(&token),
                device: meta.device.filter(|d| !d.is_empty()),
                user_agent: meta
                    .user_agent
                    .filter(|a| !a.is_empty())
                    .map(|a| truncate(a, MAX_USER_AGENT_LEN)),
                ip: meta.ip,
                now_ms: now,
                expires_at_ms: expires,
                absolute_expires_at_ms: absolute,
                password_hash: Some(user.password_hash.clone()),
            })
            .await?;
        if !created {
            // The password changed while this login checked the old one.
            return Err(LifecycleError::InvalidCredentials);
        }
        Ok(self.issue(token, now, expires, absolute))
    }

    /// Verifies a password whose attempt was counted against `counted`. If the hashing
    /// queue refuses it, no password was checked, so each attempt is given back. Best
    /// effort: if the store fails now, that attempt stays counted (the limit errs on the
    /// safe side) and the caller still gets its answer.
    async fn verify_counted(
        &self,
        password: &Secret,
        hash: Option<&str>,
        counted: [Option<&LimitKey>; 2],
    ) -> Result<bool> {
        match self.passwords.verify(password, hash).await {
            Err(PasswordError::Busy) => {
                for key in counted.into_iter().flatten() {
                    if let Err(e) = self.store.release_limit(key, false).await {
                        tracing::debug!(error = %e, "a refused attempt could not be given back");
                    }
                }
                Err(PasswordError::Busy.into())
            }
            checked => Ok(checked?),
        }
    }

    fn issue(
        &self,
        refresh_token: RefreshToken,
        now_ms: u64,
        expires_at_ms: u64,
        absolute_expires_at_ms: u64,
    ) -> Issued {
        let jti = self.jti.next();
        let started = std::time::Instant::now();
        let access_token = self.signer.sign(
            &refresh_token.user_id,
            &refresh_token.session_id,
            &jti,
            now_ms / 1000,
        );
        metrics::histogram!(m::SIGNING_SECONDS).record(started.elapsed().as_secs_f64());
        Issued {
            access_token,
            expires_in: self.signer.ttl_secs(),
            session_id: refresh_token.session_id.clone(),
            refresh_token,
            refresh_expires_in: secs_until(expires_at_ms, now_ms),
            session_expires_in: secs_until(absolute_expires_at_ms, now_ms),
        }
    }

    /// Rotates a refresh token: one hash, one store round trip, one signature.
    ///
    /// # Errors
    /// `InvalidToken` for a malformed, unknown, expired or revoked token;
    /// `TokenReused` when a rotated token comes back after the grace window (the
    /// session is then revoked); or a store failure.
    pub async fn refresh(&self, presented: &str) -> Result<Issued> {
        let outcome = self.refresh_inner(presented).await;
        let label = match &outcome {
            Ok((_, false)) => "ok",
            Ok((_, true)) => "grace",
            Err(LifecycleError::InvalidToken(reason)) => reason,
            Err(LifecycleError::TokenReused) => "reused",
            Err(_) => "error",
        };
        metrics::counter!(m::REFRESHES, "outcome" => label).increment(1);
        outcome.map(|(issued, _)| issued)
    }

    async fn refresh_inner(&self, presented: &str) -> Result<(Issued, bool)> {
        let token =
            RefreshToken::parse(presented).map_err(|_| LifecycleError::InvalidToken("invalid"))?;
        let successor = self.refresh.successor(&token);
        let now = self.clock.now_ms();

        let outcome = self
            .store
            .rotate(&Rotation {
                user_id: &token.user_id,
                session_id: &token.session_id,
                presented: self.refresh.hash(&token),
                successor: self.refresh.hash(&successor),
                now_ms: now,
                idle_ms: ms(self.policy.idle_ttl),
                grace_ms: ms(self.policy.refresh_grace),
            })
            .await?;

        match outcome {
            RotateOutcome::Rotated {
                expires_at_ms,
                absolute_expires_at_ms,
            } => Ok((
                self.issue(successor, now, expires_at_ms, absolute_expires_at_ms),
                false,
            )),
            RotateOutcome::Replayed {
                expires_at_ms,
                absolute_expires_at_ms,
            } => Ok((
                self.issue(successor, now, expires_at_ms, absolute_expires_at_ms),
                true,
            )),
            RotateOutcome::Reused => {
                tracing::warn!(
                    user_id = %token.user_id,
                    session_id = %token.session_id,
                    "rotated refresh token replayed after the grace window; session revoked"
                );
                Err(LifecycleError::TokenReused)
            }
            RotateOutcome::Superseded { current } => {
                if self.is_stale_ancestor(&token, current).await? {
                    self.store
                        .revoke_session(&token.user_id, &token.session_id)
                        .await?;
                    tracing::warn!(
                        user_id = %token.user_id,
                        session_id = %token.session_id,
                        "old refresh token replayed; session revoked"
                    );
                    Err(LifecycleError::TokenReused)
                } else {
                    Err(LifecycleError::InvalidToken("invalid"))
                }
            }
            RotateOutcome::Revoked => Err(LifecycleError::InvalidToken("revoked")),
            RotateOutcome::Unknown => Err(LifecycleError::InvalidToken("expired")),
        }
    }

    /// Walks the chain back from `current` on the blocking pool, one walk at a time.
    async fn is_stale_ancestor(&self, token: &RefreshToken, current: TokenHash) -> Result<bool> {
        let _turn = self
            .walks
            .acquire()
            .await
            .map_err(|_| LifecycleError::Password(PasswordError::PoolClosed))?;
        let hasher = self.refresh.clone();
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            hasher.is_stale_ancestor(&token, &current, MAX_REUSE_WALK)
        })
        .await
        .map_err(|_| LifecycleError::Password(PasswordError::PoolClosed))
    }

    /// Ends the session of a refresh token. Unknown or malformed tokens are ignored:
    /// logout is idempotent and needs no access token.
    ///
    /// # Errors
    /// Only a store failure.
    pub async fn logout(&self, presented: &str) -> Result<()> {
        let Ok(token) = RefreshToken::parse(presented) else {
            metrics::counter!(m::LOGOUTS, "scope" => "session", "outcome" => "noop").increment(1);
            return Ok(());
        };
        let successor = self.refresh.successor(&token);
        let revoked = self
            .store
            .revoke_by_token(
                &token.user_id,
                &token.session_id,
                self.refresh.hash(&token),
                self.refresh.hash(&successor),
            )
            .await?;
        let outcome = if revoked { "revoked" } else { "noop" };
        metrics::counter!(m::LOGOUTS, "scope" => "session", "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Ends every session of the owner of a live refresh token.
    ///
    /// # Errors
    /// `InvalidToken` unless the token is a live session's current token (or its
    /// predecessor), or a store failure.
    pub async fn logout_all_by_refresh(&self, presented: &str) -> Result<u64> {
        let token =
            RefreshToken::parse(presented).map_err(|_| LifecycleError::InvalidToken("invalid"))?;
        let successor = self.refresh.successor(&token);
        let revoked = self
            .store
            .revoke_all_by_token(
                &token.user_id,
                &token.session_id,
                self.refresh.hash(&token),
                self.refresh.hash(&successor),
            )
            .await?
            .ok_or(LifecycleError::InvalidToken("not_live"))?;
        metrics::counter!(m::LOGOUTS, "scope" => "all", "outcome" => "revoked").increment(1);
        Ok(revoked)
    }

    /// Ends every session of the access token's user.
    ///
    /// # Errors
    /// Only a store failure.
    pub async fn logout_all(&self, caller: &Claims) -> Result<u64> {
        let user = UserId::parse(&caller.sub).ok_or(LifecycleError::InvalidToken("claims"))?;
        let revoked = self.store.revoke_all(&user).await?;
        metrics::counter!(m::LOGOUTS, "scope" => "all", "outcome" => "revoked").increment(1);
        Ok(revoked)
    }

    /// Verifies a bearer access token; no store call.
    ///
    /// # Errors
    /// `InvalidToken` with the reason.
    pub fn verify_access(&self, token: &str) -> Result<Claims> {
        self.verifier
            .verify(token, self.clock.now_ms() / 1000)
            .map_err(|e: AccessTokenError| LifecycleError::InvalidToken(e.reason()))
    }

    /// The caller's live sessions, newest first.
    ///
    /// # Errors
    /// Only a store failure.
    pub async fn sessions(&self, caller: &Claims) -> Result<Vec<SessionView>> {
        let user = UserId::parse(&caller.sub).ok_or(LifecycleError::InvalidToken("claims"))?;
        let records = self.store.list_sessions(&user, self.clock.now_ms()).await?;
        Ok(records
            .into_iter()
            .map(|record| SessionView {
                current: record.session_id.as_str() == caller.sid,
                record,
            })
            .collect())
    }

    /// Revokes one of the caller's own sessions.
    ///
    /// # Errors
    /// `NotFound` if `session_id` is not a live session of the caller, or a store failure.
    pub async fn revoke(&self, caller: &Claims, session_id: &str) -> Result<()> {
        let user = UserId::parse(&caller.sub).ok_or(LifecycleError::InvalidToken("claims"))?;
        let session = SessionId::parse(session_id).ok_or(LifecycleError::NotFound)?;
        if !self.store.revoke_session(&user, &session).await? {
            return Err(LifecycleError::NotFound);
        }
        metrics::counter!(m::LOGOUTS, "scope" => "session", "outcome" => "revoked").increment(1);
        Ok(())
    }

    /// Changes the caller's password and revokes every session of theirs.
    ///
    /// # Errors
    /// `InvalidCredentials` for a wrong current password, `RateLimited` once too many
    /// wrong ones were tried (the failed-login limit of the account), `InvalidRequest`
    /// for a new password outside the length rule, or a store failure.
    pub async fn change_password(
        &self,
        caller: &Claims,
        current: &Secret,
        new: &Secret,
    ) -> Result<()> {
        let user_id = UserId::parse(&caller.sub).ok_or(LifecycleError::InvalidToken("claims"))?;
        PasswordHasher::check_policy(new)?;

        let user = self.store.user_by_id(&user_id).await?;
        // Guesses of the current password count against the same per-account limit as
        // failed logins: a stolen access token must not become an unlimited oracle.
        let account = user.as_ref().map(|u| LimitKey::Account(u.email.clone()));
        let limits = self.policy.login_limits;
        if let Some(key) = &account {
            if let Some(retry) = self
                .store
                .hit_limit(key, limits.per_account, ms(limits.window))
                .await?
            {
                return Err(LifecycleError::RateLimited(retry));
            }
        }
        let ok = self
            .verify_counted(
                current,
                user.as_ref().map(|u| u.password_hash.as_str()),
                [account.as_ref(), None],
            )
            .await?;
        if !ok {
            return Err(LifecycleError::InvalidCredentials);
        }
        if let Some(key) = &account {
            self.store.release_limit(key, true).await?;
        }
        let hash = self.passwords.hash(new).await?;
        self.store
            .set_password_and_revoke_all(&user_id, &hash)
            .await?
            .ok_or(LifecycleError::InvalidCredentials)?;
        metrics::counter!(m::PASSWORD_CHANGES).increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_unique_and_differ_between_processes() {
        let rng = ring::rand::SystemRandom::new();
        let (a, b) = (JtiSource::new(&rng), JtiSource::new(&rng));
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| a.next()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&b.next()), "another source starts elsewhere");
        assert!(ids.iter().all(|id| id.len() == 22));
    }
}
