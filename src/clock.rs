//! Wall-clock time in milliseconds since the Unix epoch, as the session lifecycle sees
//! it. Production reads the system clock; tests use a clock driven by tokio's time so
//! that expiry can be tested under paused time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Source of "now" for session timestamps, expiry and the grace window.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The operating system's wall clock.
    System,
    /// A wall clock that starts at the system time and then advances with tokio's
    /// clock, so `tokio::time::pause` and `advance` move it.
    Tokio {
        /// Epoch milliseconds when the clock was created.
        base_ms: u64,
        /// Tokio instant when the clock was created.
        start: tokio::time::Instant,
    },
    /// A wall clock that starts at the system time and moves only when told to
    /// ([`Clock::advance`]); for tests that step through grace windows and lifetimes
    /// while talking to a real Redis.
    Manual(std::sync::Arc<std::sync::atomic::AtomicU64>),
}

impl Clock {
    /// A clock that follows tokio's (possibly paused) time.
    pub fn tokio() -> Self {
        Clock::Tokio {
            base_ms: system_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    /// A manual clock set to the current system time.
    pub fn manual() -> Self {
        Clock::Manual(std::sync::Arc::new(system_ms().into()))
    }

    /// Moves a manual clock forward; other clocks ignore it.
    pub fn advance(&self, by: std::time::Duration) {
        if let Clock::Manual(now) = self {
            let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 4);
            now.fetch_add(by, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_ms(),
            Clock::Manual(now) => now.load(std::sync::atomic::Ordering::SeqCst),
            Clock::Tokio { base_ms, start } => {
                base_ms + u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
            }
        }
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

/// Formats epoch milliseconds as RFC 3339 (UTC, second precision).
pub fn rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_310_000_123), "2026-12-03T15:00:00Z");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let before = clock.now_ms();
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - before, 3_600_000);
    }
}
