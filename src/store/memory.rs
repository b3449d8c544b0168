//! The embedded store: users and sessions in this process's memory, with the same
//! semantics as Redis (expiry by time, atomic rotation, per-user index). Used when no
//! Redis URL is configured; everything is lost when the process exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{
    LimitKey, NewSession, RotateOutcome, Rotation, SessionRecord, SessionStore, StoreResult,
    UserRecord,
};
use crate::clock::Clock;
use crate::ids::{SessionId, UserId};
use crate::token::refresh::TokenHash;

/// In-process store; cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Decides when sessions have ended; the same clock the lifecycle uses.
    clock: Clock,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, UserRecord>,
    emails: HashMap<String, UserId>,
    /// Per-user index of sessions: the map is the index.
    sessions: HashMap<UserId, HashMap<SessionId, Entry>>,
    /// Revoked sessions, remembered until this epoch ms (the session's end, at most
    /// a day), so a refresh can say "revoked" rather than "expired".
    tombstones: HashMap<(UserId, SessionId), u64>,
    /// Login attempt counters: (count, window end epoch ms).
    limits: HashMap<LimitKey, (u32, u64)>,
}

/// Longest a revocation is remembered, ms.
const TOMBSTONE_MAX_MS: u64 = 24 * 3_600_000;

struct Entry {
    hash: TokenHash,
    rotated_at_ms: u64,
    created_at_ms: u64,
    last_used_at_ms: u64,
    absolute_ms: u64,
    expires_at_ms: u64,
    device: Option<String>,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl Inner {
    /// The user's live sessions, with ended ones dropped first.
    fn live(&mut self, user: &UserId, now_ms: u64) -> Option<&mut HashMap<SessionId, Entry>> {
        let sessions = self.sessions.get_mut(user)?;
        sessions.retain(|_, e| e.expires_at_ms > now_ms);
        if sessions.is_empty() {
            self.sessions.remove(user);
            return None;
        }
        self.sessions.get_mut(user)
    }

    /// Revokes one session, leaving a tombstone; `false` if it was not live.
    fn revoke(&mut self, user: &UserId, session: &SessionId, now_ms: u64) -> bool {
        let Some(sessions) = self.sessions.get_mut(user) else {
            return false;
        };
        let removed = sessions.remove(session);
        if sessions.is_empty() {
            self.sessions.remove(user);
        }
        match removed {
            Some(entry) => {
                let until = entry.expires_at_ms.min(now_ms + TOMBSTONE_MAX_MS);
                self.tombstones
                    .insert((user.clone(), session.clone()), until);
                true
            }
            None => false,
        }
    }

    /// Revokes every session of a user; returns how many were live.
    fn revoke_all(&mut self, user: &UserId, now_ms: u64) -> u64 {
        self.live(user, now_ms);
        let Some(sessions) = self.sessions.remove(user) else {
            return 0;
        };
        let live = sessions.len() as u64;
        for (id, entry) in sessions {
            let until = entry.expires_at_ms.min(now_ms + TOMBSTONE_MAX_MS);
            self.tombstones.insert((user.clone(), id), until);
        }
        live
    }

    /// Whether `presented` is the current token of a live session, or that token's
    /// predecessor (whose successor hash is `successor`).
    fn holds(
        &mut self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
        now_ms: u64,
    ) -> bool {
        self.live(user, now_ms)
            .and_then(|s| s.get(session))
            .is_some_and(|e| e.hash == presented || e.hash == successor)
    }

    fn is_revoked(&self, user: &UserId, session: &SessionId, now_ms: u64) -> bool {
        self.tombstones
            .get(&(user.clone(), session.clone()))
            .is_some_and(|until| *until > now_ms)
    }
}

impl MemoryStore {
    /// An empty store judging expiry by `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            inner: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied operation: every
        // operation mutates after all its checks. Keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops every ended session; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let mut dropped = 0;
        inner.sessions.retain(|_, sessions| {
            let before = sessions.len();
            sessions.retain(|_, e| e.expires_at_ms > now);
            dropped += before - sessions.len();
            !sessions.is_empty()
        });
        inner.tombstones.retain(|_, until| *until > now);
        inner.limits.retain(|_, (_, until)| *until > now);
        dropped
    }

    /// Sweeps ended sessions every `every` until the store is dropped, so memory
    /// follows the live sessions even for users who never come back.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                MemoryStore {
                    inner,
                    clock: clock.clone(),
                }
                .sweep();
            }
        })
    }

    /// Entries in a user's session index, ended or not (for tests of pruning).
    pub fn indexed_sessions(&self, user: &UserId) -> usize {
        self.lock().sessions.get(user).map_or(0, HashMap::len)
    }
}

impl SessionStore for MemoryStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let mut inner = self.lock();
        if inner.emails.contains_key(&user.email) {
            return Ok(false);
        }
        inner.emails.insert(user.email.clone(), user.id.clone());
        inner.users.insert(user.id.clone(), user.clone());
        Ok(true)
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let inner = self.lock();
        Ok(inner
            .emails
            .get(email)
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        Ok(self.lock().users.get(id).cloned())
    }

    async fn create_session(&self, s: &NewSession) -> StoreResult<bool> {
        let mut inner = self.lock();
        if let Some(expected) = &s.password_hash {
            let current = inner
                .users
                .get(&s.user_id)
                .map(|u| u.password_hash.as_str());
            if current != Some(expected.as_str()) {
                return Ok(false);
            }
        }
        inner.live(&s.user_id, self.clock.now_ms());
        inner.sessions.entry(s.user_id.clone()).or_default().insert(
            s.session_id.clone(),
            Entry {
                hash: s.token_hash,
                rotated_at_ms: s.now_ms,
                created_at_ms: s.now_ms,
                last_used_at_ms: s.now_ms,
                absolute_ms: s.absolute_expires_at_ms,
                expires_at_ms: s.expires_at_ms,
                device: s.device.clone(),
                user_agent: s.user_agent.clone(),
                ip: s.ip.clone(),
            },
        );
        Ok(true)
    }

    async fn rotate(&self, r: &Rotation<'_>) -> StoreResult<RotateOutcome> {
        let now = r.now_ms;
        let clock_now = self.clock.now_ms();
        let mut inner = self.lock();
        let Some(entry) = inner
            .live(r.user_id, clock_now)
            .and_then(|s| s.get_mut(r.session_id))
        else {
            if inner.is_revoked(r.user_id, r.session_id, clock_now) {
                return Ok(RotateOutcome::Revoked);
            }
            return Ok(RotateOutcome::Unknown);
        };
        if entry.hash == r.presented {
            let expires_at_ms = (now + r.idle_ms).min(entry.absolute_ms);
            if expires_at_ms <= now {
                // Ended by time, not revoked: no tombstone.
                entry.expires_at_ms = now;
                inner.live(r.user_id, now);
                return Ok(RotateOutcome::Unknown);
            }
            entry.hash = r.successor;
            entry.rotated_at_ms = now;
            entry.last_used_at_ms = now;
            entry.expires_at_ms = expires_at_ms;
            return Ok(RotateOutcome::Rotated {
                expires_at_ms,
                absolute_expires_at_ms: entry.absolute_ms,
            });
        }
        if entry.hash == r.successor {
            if now.saturating_sub(entry.rotated_at_ms) < r.grace_ms {
                return Ok(RotateOutcome::Replayed {
                    expires_at_ms: entry.expires_at_ms,
                    absolute_expires_at_ms: entry.absolute_ms,
                });
            }
            inner.revoke(r.user_id, r.session_id, clock_now);
            return Ok(RotateOutcome::Reused);
        }
        Ok(RotateOutcome::Superseded {
            current: entry.hash,
        })
    }

    async fn revoke_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> StoreResult<bool> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let holds = inner.holds(user, session, presented, successor, now);
        Ok(holds && inner.revoke(user, session, now))
    }

    async fn revoke_session(&self, user: &UserId, session: &SessionId) -> StoreResult<bool> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.live(user, now);
        Ok(inner.revoke(user, session, now))
    }

    async fn revoke_all(&self, user: &UserId) -> StoreResult<u64> {
        let now = self.clock.now_ms();
        Ok(self.lock().revoke_all(user, now))
    }

    async fn revoke_all_by_token(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: TokenHash,
        successor: TokenHash,
    ) -> StoreResult<Option<u64>> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let holds = inner.holds(user, session, presented, successor, now);
        Ok(holds.then(|| inner.revoke_all(user, now)))
    }

    async fn list_sessions(&self, user: &UserId, _now_ms: u64) -> StoreResult<Vec<SessionRecord>> {
        let mut inner = self.lock();
        let Some(sessions) = inner.live(user, self.clock.now_ms()) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<SessionRecord> = sessions
            .iter()
            .map(|(id, e)| SessionRecord {
                session_id: id.clone(),
                device: e.device.clone(),
                user_agent: e.user_agent.clone(),
                ip: e.ip.clone(),
                created_at_ms: e.created_at_ms,
                last_used_at_ms: e.last_used_at_ms,
                expires_at_ms: e.expires_at_ms,
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
        Ok(out)
    }

    async fn set_password_and_revoke_all(
        &self,
        user: &UserId,
        password_hash: &str,
    ) -> StoreResult<Option<u64>> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let Some(record) = inner.users.get_mut(user) else {
            return Ok(None);
        };
        record.password_hash = password_hash.to_owned();
        Ok(Some(inner.revoke_all(user, now)))
    }

    async fn hit_limit(
        &self,
        key: &LimitKey,
        limit: u32,
        window_ms: u64,
    ) -> StoreResult<Option<u64>> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let entry = inner
            .limits
            .entry(key.clone())
            .or_insert((0, now + window_ms));
        if entry.1 <= now {
            *entry = (0, now + window_ms);
        }
        entry.0 = entry.0.saturating_add(1);
        Ok((entry.0 > limit).then(|| entry.1 - now))
    }

    async fn release_limit(&self, key: &LimitKey, reset: bool) -> StoreResult<()> {
        let mut inner = self.lock();
        if reset {
            inner.limits.remove(key);
        } else if let Some(entry) = inner.limits.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
