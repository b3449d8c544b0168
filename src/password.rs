//! Password hashing with argon2id, run on tokio's blocking threads behind a semaphore,
//! so a burst of logins queues here instead of starving the async workers that serve
//! refreshes. The queue is bounded: past it a call is refused at once
//! ([`PasswordError::Busy`]) rather than left to wait longer than any client would. The
//! queue and the running hashes are gauges, so a burst shows on the dashboard before
//! it shows as login latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::{Semaphore, TryAcquireError};

use crate::metrics as m;
use crate::secret::Secret;

/// Shortest accepted password, in bytes.
pub const MIN_LEN: usize = 8;
/// Longest accepted password, in bytes; bounds the hashing work one request can ask for.
pub const MAX_LEN: usize = 1024;
/// Calls that may wait for a hashing slot, per slot, unless configured otherwise. At the
/// default cost one slot of a current server core computes about 50 hashes a second, so
/// a full queue is a wait of two to three seconds (more on a slower core): longer would
/// outlast many clients' own timeouts.
pub const DEFAULT_QUEUE_PER_SLOT: usize = 128;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Memory, KiB (default 19456, the OWASP minimum for argon2id).
    pub memory_kib: u32,
    /// Passes over memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// Why a password operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password is shorter than [`MIN_LEN`] or longer than [`MAX_LEN`] bytes.
    #[error("password must be {MIN_LEN} to {MAX_LEN} bytes")]
    Length,
    /// The cost parameters are out of argon2's range.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// The blocking pool is gone (shutting down).
    #[error("password hashing pool unavailable")]
    PoolClosed,
    /// Every slot is busy and the queue is full: nothing was hashed.
    #[error("too many password checks are waiting")]
    Busy,
}

/// Hashes and verifies passwords on a bounded pool.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Calls waiting for a permit now, and how many may.
    waiting: Arc<AtomicUsize>,
    queue_limit: usize,
    /// A real hash of a random password, verified against when the email is unknown
    /// so that unknown and known emails cost the same.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("available_permits", &self.permits.available_permits())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .field("queue_limit", &self.queue_limit)
            .finish_non_exhaustive()
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &[u8]) -> String {
    let rng = ring::rand::SystemRandom::new();
    let salt: [u8; 16] = ring::rand::generate(&rng)
        .expect("the system random source does not fail once initialised")
        .expose();
    argon2(params)
        .hash_password_with_salt(password, &salt)
        .expect("argon2 accepts any password up to MAX_LEN with validated params")
        .to_string()
}

impl PasswordHasher {
    /// A hasher with `cost`, running at most `concurrency` hashes at once, with up to
    /// [`DEFAULT_QUEUE_PER_SLOT`] calls per slot waiting (see [`Self::with_queue_limit`]).
    ///
    /// # Errors
    /// [`PasswordError::Params`] if argon2 refuses the cost parameters.
    pub fn new(cost: Cost, concurrency: usize) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let rng = ring::rand::SystemRandom::new();
        let dummy: [u8; 32] = ring::rand::generate(&rng)
            .expect("the system random source does not fail once initialised")
            .expose();
        let dummy_hash = hash_blocking(&params, &dummy).into();
        metrics::gauge!(m::PASSWORD_HASH_SLOTS).set(concurrency.max(1) as f64);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue_limit: concurrency.max(1).saturating_mul(DEFAULT_QUEUE_PER_SLOT),
            dummy_hash,
        })
    }

    /// At most `limit` calls wait for a slot; further ones fail with
    /// [`PasswordError::Busy`] at once. With 0, a call finding every slot busy fails.
    #[must_use]
    pub fn with_queue_limit(mut self, limit: usize) -> Self {
        self.queue_limit = limit;
        self
    }

    /// Checks the length rule of the HTTP contract.
    ///
    /// # Errors
    /// [`PasswordError::Length`] outside [`MIN_LEN`]..=[`MAX_LEN`] bytes.
    pub fn check_policy(password: &Secret) -> Result<(), PasswordError> {
        let len = password.expose().len();
        if (MIN_LEN..=MAX_LEN).contains(&len) {
            Ok(())
        } else {
            Err(PasswordError::Length)
        }
    }

    /// Hashes a password (PHC string).
    ///
    /// # Errors
    /// [`PasswordError::Busy`] when the queue is full, [`PasswordError::PoolClosed`]
    /// while shutting down.
    pub async fn hash(&self, password: &Secret) -> Result<String, PasswordError> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_blocking(&params, password.expose().as_bytes()))
            .await
    }

    /// Whether `password` matches `hash`; with `hash` absent, verifies against a dummy
    /// hash and answers `false`, costing the same as a real check.
    ///
    /// # Errors
    /// [`PasswordError::Busy`] when the queue is full, [`PasswordError::PoolClosed`]
    /// while shutting down.
    pub async fn verify(
        &self,
        password: &Secret,
        hash: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash: Arc<str> = hash.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let password = password.clone();
        let params = self.params.clone();
        let matches = self
            .run(move || {
                argon2(&params)
                    .verify_password(password.expose().as_bytes(), &*hash)
                    .is_ok()
            })
            .await?;
        Ok(known && matches)
    }

    /// Slots of the pool free right now.
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    /// Runs `work` on a blocking thread once a slot is free. The slot is held by the
    /// blocking work itself, so a caller that goes away (a client hanging up) neither
    /// frees it early nor lets more than the pool's size run at once.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(PasswordError::PoolClosed),
            Err(TryAcquireError::NoPermits) => {
                let place =
                    QueuePlace::take(&self.waiting, self.queue_limit).ok_or(PasswordError::Busy)?;
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PasswordError::PoolClosed)?;
                drop(place);
                permit
            }
        };

        let running = GaugeGuard::enter(m::PASSWORD_HASHES_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = work();
            metrics::histogram!(m::PASSWORD_HASH_SECONDS).record(started.elapsed().as_secs_f64());
            drop((running, permit));
            out
        })
        .await
        .map_err(|_| PasswordError::PoolClosed)
    }
}

/// A place in the queue for a slot, counted in the queue gauge too; given back on
/// drop (cancellation included).
struct QueuePlace {
    waiting: Arc<AtomicUsize>,
    _gauge: GaugeGuard,
}

impl QueuePlace {
    /// A place if fewer than `limit` calls are waiting.
    fn take(waiting: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self {
                waiting: waiting.clone(),
                _gauge: GaugeGuard::enter(m::PASSWORD_HASHES_QUEUED),
            })
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds one to a gauge while alive; the drop takes it back on every path, cancellation
/// included.
struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    fn enter(name: &'static str) -> Self {
        let gauge = metrics::gauge!(name);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(
            Cost {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .expect("valid params")
    }

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let hasher = cheap();
        let pw = Secret::new("correct horse battery");
        let hash = hasher.hash(&pw).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        assert!(hasher.verify(&pw, Some(&hash)).await.expect("verify"));
        let wrong = Secret::new("wrong horse battery");
        assert!(!hasher.verify(&wrong, Some(&hash)).await.expect("verify"));
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let hasher = cheap();
        let pw = Secret::new("anything at all");
        assert!(!hasher.verify(&pw, None).await.expect("verify"));
    }

    /// Every slot of `hasher` held by blocking work until the returned call lets go.
    async fn hold_every_slot(hasher: &PasswordHasher) -> impl AsyncFnOnce() {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let slots = hasher.available_permits();
        let holders: Vec<_> = (0..slots)
            .map(|_| {
                let (h, hold) = (hasher.clone(), hold.clone());
                tokio::spawn(async move {
                    h.run(move || {
                        let _ = hold.lock().expect("lock").recv();
                    })
                    .await
                })
            })
            .collect();
        while hasher.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        async move || {
            for _ in 0..slots {
                release.send(()).expect("holder");
            }
            for holder in holders {
                holder.await.expect("join").expect("held slot");
            }
        }
    }

    /// A hash of `pw` that waits in the queue; returns once it is waiting.
    async fn queue_one(
        hasher: &PasswordHasher,
        pw: &Secret,
    ) -> tokio::task::JoinHandle<Result<String, PasswordError>> {
        let (h, pw) = (hasher.clone(), pw.clone());
        let queued = tokio::spawn(async move { h.hash(&pw).await });
        while hasher.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        queued
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_its_places() {
        let hasher = cheap().with_queue_limit(1);
        let release = hold_every_slot(&hasher).await;
        // One call may wait; the next is refused without hashing anything.
        let pw = Secret::new("correct horse battery");
        let queued = queue_one(&hasher, &pw).await;
        assert!(matches!(hasher.hash(&pw).await, Err(PasswordError::Busy)));
        assert!(matches!(
            hasher.verify(&pw, None).await,
            Err(PasswordError::Busy)
        ));

        release().await;
        let hash = queued.await.expect("join").expect("the queued call ran");
        assert!(hasher.verify(&pw, Some(&hash)).await.expect("verify"));
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_leaves_the_queue() {
        let hasher = cheap().with_queue_limit(1);
        let release = hold_every_slot(&hasher).await;
        let pw = Secret::new("correct horse battery");
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(20), hasher.hash(&pw)).await;
        assert!(gave_up.is_err(), "the call waited for a slot");
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
        // Its place is free again: the next caller may wait instead of being refused.
        let queued = queue_one(&hasher, &pw).await;
        release().await;
        assert!(queued.await.expect("join").is_ok());
    }

    #[test]
    fn length_policy_counts_bytes() {
        assert!(PasswordHasher::check_policy(&Secret::new("1234567")).is_err());
        assert!(PasswordHasher::check_policy(&Secret::new("12345678")).is_ok());
        assert!(PasswordHasher::check_policy(&Secret::new("é".repeat(512))).is_ok());
        assert!(PasswordHasher::check_policy(&Secret::new("é".repeat(513))).is_err());
    }
}
