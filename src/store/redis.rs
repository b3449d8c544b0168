//! The Redis store, through fred. Every key of one user's sessions carries the hash
//! tag `{u:<user id>}`, so each lifecycle script touches a single Cluster slot:
//!
//! | key | type | TTL |
//! | --- | --- | --- |
//! | `tokend:{u:<uid>}:s:<sid>` | hash: `h` token hash, `l` last used (and rotated) ms, `x` absolute end ms, `d` device, `a` user agent, `i` ip | the session's end |
//! | same key, once revoked | hash: `v` (a tombstone, so a refresh can say "revoked") | the session's end, at most a day |
//! | `tokend:{u:<uid>}:user` | hash: `e` email, `p` argon2id hash, and the session index: `s:<sid>` created ms per session | none |
//! | `tokend:{e:<blake3(email)>}` | string: user id | none |
//! | `tokend:{rl:<a or i>:<blake3(email or ip)>}` | string: login attempts in the window | the window |
//!
//! The session index (for listing and logout everywhere) is a set of fields in the user
//! hash rather than a key of its own: a key costs a keyspace entry, an expiry entry and
//! object headers, about 200 bytes per user, where a field costs a few dozen. Entries of
//! sessions that expired by TTL are pruned whenever the index is read (login, listing,
//! logout everywhere, password change), so a user's index never holds more than the
//! sessions the user had at once. Earlier builds kept the index in a sorted set,
//! `tokend:{u:<uid>}:sessions`; the scripts that read the index move its members into
//! the user hash and delete it, so sessions opened by such a build stay listed and are
//! ended by logout everywhere and password changes.
//!
//! Scripts are sent by SHA and reloaded on `NOSCRIPT`.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use super::{
    LimitKey, NewSession, RotateOutcome, Rotation, SessionRecord, SessionStore, StoreError,
    StoreResult, UserRecord,
};
use crate::ids::{SessionId, UserId};
use crate::secret::Secret;
use crate::token::refresh::TokenHash;

/// Connection settings for [`RedisStore::connect`].
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; may hold a password.
    pub url: Secret,
    /// Upper bound on one command, queueing during a reconnect included.
    pub command_timeout: Duration,
    /// Number of multiplexed connections.
    pub pool_size: usize,
    /// The worker runtimes ([`crate::worker`]) the connections run on, connection `i`
    /// on `workers[i % workers.len()]`, each used by its own worker's requests; empty:
    /// all on the caller's runtime, shared by every task.
    pub workers: Vec<tokio::runtime::Handle>,
}

struct Scripts {
    create_session: Script,
    rotate: Script,
    revoke_by_token: Script,
    revoke_session: Script,
    revoke_all: Script,
    set_password: Script,
    list_sessions: Script,
    hit_limit: Script,
    release_limit: Script,
}

/// A script with the index and revocation helpers of `lua/index.lua` in front of it.
macro_rules! with_index_helpers {
    ($file:literal) => {
        Script::from_lua(concat!(
            include_str!("lua/index.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

impl Scripts {
    fn new() -> Self {
        Self {
            create_session: with_index_helpers!("create_session.lua"),
            rotate: with_index_helpers!("rotate.lua"),
            revoke_by_token: with_index_helpers!("revoke_by_token.lua"),
            revoke_session: with_index_helpers!("revoke_session.lua"),
            revoke_all: with_index_helpers!("revoke_all.lua"),
            set_password: with_index_helpers!("set_password.lua"),
            list_sessions: with_index_helpers!("list_sessions.lua"),
            hit_limit: Script::from_lua(include_str!("lua/hit_limit.lua")),
            release_limit: Script::from_lua(include_str!("lua/release_limit.lua")),
        }
    }
}

/// Sessions and users in Redis.
pub struct RedisStore {
    pool: Pool,
    scripts: Scripts,
    /// How many worker runtimes the connections are spread over (0: none).
    workers: usize,
}

thread_local! {
    /// Round-robin position among the calling worker's own connections.
    static NEXT_OWN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TOKEND_REDIS_URL is not a valid Redis URL (expected redis://host:port)")]
pub struct InvalidRedisUrl;

fn session_key(user: &UserId, session: &SessionId) -> String {
    format!("tokend:{{u:{user}}}:s:{session}")
}

fn session_prefix(user: &UserId) -> String {
    format!("tokend:{{u:{user}}}:s:")
}

/// The sorted set that held a user's session index before it moved into the user hash;
/// the scripts that read the index move its members over and delete it.
fn legacy_index_key(user: &UserId) -> String {
    format!("tokend:{{u:{user}}}:sessions")
}

fn user_key(user: &UserId) -> String {
    format!("tokend:{{u:{user}}}:user")
}

fn limit_key(key: &LimitKey) -> String {
    format!("tokend:{{rl:{}}}", key.storage_id())
}

fn email_key(email: &str) -> String {
    format!(
        "tokend:{{e:{}}}",
        &blake3::hash(email.as_bytes()).to_hex()[..32]
    )
}

fn unavailable_or_protocol(e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::Timeout
        | ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Cluster
        | ErrorKind::Routing
        | ErrorKind::Sentinel
        | ErrorKind::Auth => StoreError::Unavailable(e.to_string()),
        _ if is_transient_reply(e.details()) => StoreError::Unavailable(e.to_string()),
        // fred reports a command that found no live connection (Redis went away between
        // two commands, "Failed to route command.") as an unknown error, not as I/O.
        // Such client-side failures carry no server prefix; server replies start "ERR".
        ErrorKind::Unknown if !e.details().starts_with("ERR") => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Protocol(e.to_string()),
    }
}

/// Server replies that mean "not now" rather than "wrong".
fn is_transient_reply(details: &str) -> bool {
    [
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "READONLY",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "OOM",
    ]
    .iter()
    .any(|p| details.starts_with(p))
}

fn bytes(h: &TokenHash) -> Value {
    Value::Bytes(bytes::Bytes::copy_from_slice(&h.0))
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn hash_from(raw: &[u8]) -> StoreResult<RotateOutcome> {
    <[u8; 32]>::try_from(raw)
        .map(|current| RotateOutcome::Superseded {
            current: TokenHash(current),
        })
        .map_err(|_| protocol("rotate"))
}

fn protocol(what: &str) -> StoreError {
    StoreError::Protocol(format!("unexpected reply to {what}"))
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        Value::String(s) => s.parse().ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn as_opt_string(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Logs connection errors at warn, once per distinct message until it changes, so a
/// wrong password or database number is told apart from an outage without flooding
/// the log while fred keeps reconnecting. Messages from fred and Redis name the
/// problem (`WRONGPASS`, `DB index is out of range`), never the credentials.
fn report_connection_errors(pool: &Pool) {
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    for client in pool.clients() {
        let last = last.clone();
        client.on_error(move |(error, _server)| {
            let last = last.clone();
            async move {
                let message = error.to_string();
                let mut seen = last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *seen != message {
                    tracing::warn!(error = %message, "Redis connection error");
                    *seen = message;
                }
                Ok(())
            }
        });
    }
}

impl RedisStore {
    /// Builds the client pool and starts connecting in the background; returns
    /// without waiting, so tokend starts (not ready) while Redis is down.
    ///
    /// # Errors
    /// [`InvalidRedisUrl`] if the URL cannot be parsed; the message never includes it.
    pub fn connect(settings: &RedisSettings) -> Result<Self, InvalidRedisUrl> {
        let mut config = Config::from_url(settings.url.expose()).map_err(|_| InvalidRedisUrl)?;
        // Keep retrying the first connection instead of failing start-up.
        config.fail_fast = false;
        let timeout = settings.command_timeout;
        let pool = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout.max(Duration::from_millis(250));
                c.internal_command_timeout = timeout.max(Duration::from_millis(250));
                // A command cut off by a dropped connection fails (the caller answers
                // 503 and the client retries) rather than being replayed blindly.
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build_pool(settings.pool_size.max(1))
            .map_err(|_| InvalidRedisUrl)?;
        report_connection_errors(&pool);
        if settings.workers.is_empty() {
            pool.connect_pool();
        } else {
            for (i, client) in pool.clients().iter().enumerate() {
                // fred spawns the connection's task on the current runtime.
                let _worker = settings.workers[i % settings.workers.len()].enter();
                client.connect();
            }
        }
        Ok(Self {
            pool,
            scripts: Scripts::new(),
            workers: settings.workers.len(),
        })
    }

    /// The client a command from the calling task goes through: one of the calling
    /// worker's own connections (those whose task runs on the same thread), round-robin
    /// among them; otherwise (a caller that is not a worker, more workers than
    /// connections, or the worker's own connections down) any connected one.
    pub fn client(&self) -> &Client {
        if let Some(worker) = crate::worker::current().filter(|_| self.workers > 0) {
            let clients = self.pool.clients();
            let first = worker % self.workers;
            let own = clients.len().saturating_sub(first).div_ceil(self.workers);
            let start = NEXT_OWN.with(|n| {
                let v = n.get();
                n.set(v.wrapping_add(1));
                v
            });
            for k in 0..own {
                let client = &clients[first + ((start + k) % own) * self.workers];
                if client.is_connected() {
                    return client;
                }
            }
        }
        self.pool.next_connected()
    }

    /// Waits up to `timeout` for every connection of the pool; `false` if one did not
    /// come (or failed).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.pool.wait_for_connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The underlying client pool, for tests and diagnostics.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn run<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> StoreResult<R> {
        script
            .evalsha_with_reload(self.client(), keys, args)
            .await
            .map_err(unavailable_or_protocol)
    }
}

impl SessionStore for RedisStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        // The user record first, then the email claim: a crash in between leaves an
        // unreachable record, never an email that points nowhere.
        let key = user_key(&user.id);
        let client = self.client();
        client
            .hset::<(), _, _>(
                &key,
                [
                    ("e", user.email.as_str()),
                    ("p", user.password_hash.as_str()),
                ],
            )
            .await
            .map_err(unavailable_or_protocol)?;
        let claimed: Option<String> = client
            .set(
                email_key(&user.email),
                user.id.as_str(),
                None,
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable_or_protocol)?;
        if claimed.is_none() {
            client
                .del::<(), _>(&key)
                .await
                .map_err(unavailable_or_protocol)?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let id: Option<String> = self
            .client()
            .get(email_key(email))
            .await
            .map_err(unavailable_or_protocol)?;
        match id.as_deref().and_then(UserId::parse) {
            Some(id) => self.user_by_id(&id).await,
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        let (email, hash): (Option<String>, Option<String>) = self
            .client()
            .hmget(user_key(id), vec!["e", "p"])
            .await
            .map_err(unavailable_or_protocol)?;
        Ok(email.zip(hash).map(|(email, password_hash)| UserRecord {
            id: id.clone(),
            email,
            password_hash,
        }))
    }

    async fn create_session(&self, s: &NewSession) -> StoreResult<bool> {
        let keys = vec![
            session_key(&s.user_id, &s.session_id),
            user_key(&s.user_id),
            legacy_index_key(&s.user_id),
        ];
        let opt = |v: &Option<String>| Value::from(v.as_deref().unwrap_or(""));
        let args = vec![
            Value::from(s.session_id.as_str()),
            bytes(&s.token_hash),
            int(s.now_ms),
            int(s.expires_at_ms),
            int(s.absolute_expires_at_ms),
            opt(&s.device),
            opt(&s.user_agent),
            opt(&s.ip),
            Value::from(session_prefix(&s.user_id)),
            opt(&s.password_hash),
        ];
        let created: i64 = self.run(&self.scripts.create_session, keys, args).await?;
        Ok(created == 1)
    }

    async fn rotate(&self, r: &Rotation<'_>) -> StoreResult<RotateOutcome> {
        let keys = vec![session_key(r.user_id, r.session_id), user_key(r.user_id)];
        let args = vec![
            bytes(&r.presented),
            bytes(&r.successor),
            int(r.now_ms),
            int(r.idle_ms),
            int(r.grace_ms),
            Value::from(r.session_id.as_str()),
        ];
        let reply: Vec<Value> = self.run(&self.scripts.rotate, keys, args).await?;
        let at = |i: usize| {
            reply
                .get(i)
                .and_then(as_u64)
                .ok_or_else(|| protocol("rotate"))
        };
        match reply.first().and_then(as_u64) {
            Some(0) => Ok(RotateOutcome::Unknown),
            Some(1) => Ok(RotateOutcome::Rotated {
                expires_at_ms: at(1)?,
                absolute_expires_at_ms: at(2)?,
            }),
            Some(2) => Ok(RotateOutcome::Replayed {
                expires_at_ms: at(1)?,
                absolute_expires_at_ms: at(2)?,
            }),
            Some(3) => Ok(RotateOutcome::Reused),
            Some(5) => Ok(RotateOutcome::Revoked),
            // A hash that happens to be valid UTF-8 arrives as a string.
            Some(4) => match reply.get(1) {
                Some(Value::Bytes(b)) => hash_from(b),
                Some(Value::String(s)) => hash_from(s.as_bytes()),
                _ => Err(protocol("rotate")),
            },
            _ => Err(protocol("rotate")),
        }
    }

    async fn revoke_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> StoreResult<bool> {
        let keys = vec![session_key(user, session), user_key(user)];
        let args = vec![
            bytes(&presented),
            bytes(&successor),
            Value::from(session.as_str()),
        ];
        let n: i64 = self.run(&self.scripts.revoke_by_token, keys, args).await?;
        Ok(n == 1)
    }

    async fn revoke_session(&self, user: &UserId, session: &SessionId) -> StoreResult<bool> {
        let keys = vec![session_key(user, session), user_key(user)];
        let n: i64 = self
            .run(
                &self.scripts.revoke_session,
                keys,
                vec![Value::from(session.as_str())],
            )
            .await?;
        Ok(n == 1)
    }

    async fn revoke_all(&self, user: &UserId) -> StoreResult<u64> {
        let n: i64 = self
            .run(
                &self.scripts.revoke_all,
                vec![user_key(user), legacy_index_key(user)],
                vec![Value::from(session_prefix(user))],
            )
            .await?;
        u64::try_from(n).map_err(|_| protocol("revoke_all"))
    }

    async fn revoke_all_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> StoreResult<Option<u64>> {
        let n: i64 = self
            .run(
                &self.scripts.revoke_all,
                vec![
                    user_key(user),
                    legacy_index_key(user),
                    session_key(user, session),
                ],
                vec![
                    Value::from(session_prefix(user)),
                    bytes(&presented),
                    bytes(&successor),
                ],
            )
            .await?;
        Ok(u64::try_from(n).ok())
    }

    async fn list_sessions(&self, user: &UserId, _now_ms: u64) -> StoreResult<Vec<SessionRecord>> {
        let rows: Vec<Vec<Value>> = self
            .run(
                &self.scripts.list_sessions,
                vec![user_key(user), legacy_index_key(user)],
                vec![Value::from(session_prefix(user))],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let field = |i: usize| row.get(i).ok_or_else(|| protocol("list_sessions"));
                let number = |i: usize| {
                    field(i)
                        .map(as_u64)?
                        .ok_or_else(|| protocol("list_sessions"))
                };
                Ok(SessionRecord {
                    session_id: as_opt_string(field(0)?)
                        .as_deref()
                        .and_then(SessionId::parse)
                        .ok_or_else(|| protocol("list_sessions"))?,
                    created_at_ms: number(1)?,
                    last_used_at_ms: number(2)?,
                    device: as_opt_string(field(3)?),
                    user_agent: as_opt_string(field(4)?),
                    ip: as_opt_string(field(5)?),
                    expires_at_ms: number(6)?,
                })
            })
            .collect()
    }

    async fn set_password_and_revoke_all(
        &self,
        user: &UserId,
        password_hash: &str,
    ) -> StoreResult<Option<u64>> {
        let n: i64 = self
            .run(
                &self.scripts.set_password,
                vec![user_key(user), legacy_index_key(user)],
                vec![
                    Value::from(password_hash),
                    Value::from(session_prefix(user)),
                ],
            )
            .await?;
        Ok(u64::try_from(n).ok())
    }

    async fn hit_limit(
        &self,
        key: &LimitKey,
        limit: u32,
        window_ms: u64,
    ) -> StoreResult<Option<u64>> {
        let retry: i64 = self
            .run(
                &self.scripts.hit_limit,
                vec![limit_key(key)],
                vec![int(u64::from(limit)), int(window_ms)],
            )
            .await?;
        Ok(u64::try_from(retry).ok())
    }

    async fn release_limit(&self, key: &LimitKey, reset: bool) -> StoreResult<()> {
        self.run::<i64>(
            &self.scripts.release_limit,
            vec![limit_key(key)],
            vec![int(u64::from(reset))],
        )
        .await
        .map(drop)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .ping::<()>(None)
            .await
            .map_err(unavailable_or_protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_user_shares_one_hash_tag() {
        let rng = ring::rand::SystemRandom::new();
        let user = UserId::generate(&rng);
        let session = SessionId::generate(&rng);
        let tag = format!("{{u:{user}}}");
        for key in [
            session_key(&user, &session),
            user_key(&user),
            legacy_index_key(&user),
        ] {
            assert!(key.contains(&tag), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
        }
        assert!(session_key(&user, &session).starts_with(&session_prefix(&user)));
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_a_bad_reply_is_not() {
        let unavailable = [
            Error::new(ErrorKind::Unknown, "Failed to route command."),
            Error::new(ErrorKind::IO, "Connection closed."),
            Error::new(ErrorKind::Timeout, "Request timed out."),
            Error::new(ErrorKind::Unknown, "LOADING Redis is loading the dataset"),
        ];
        for e in unavailable {
            assert!(
                matches!(unavailable_or_protocol(e), StoreError::Unavailable(_)),
                "must answer 503"
            );
        }
        let bad = Error::new(ErrorKind::Unknown, "ERR unknown command");
        assert!(matches!(
            unavailable_or_protocol(bad),
            StoreError::Protocol(_)
        ));
    }

    #[test]
    fn email_keys_hold_no_plaintext_address() {
        let key = email_key("alice@example.com");
        assert!(!key.contains("alice"));
        assert_eq!(key, email_key("alice@example.com"));
    }
}
