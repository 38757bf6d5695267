//! Time source of the rate limiter.
//!
//! Contract: `now()` is monotonic time since the clock's origin (never a wall
//! clock, which can jump); `sleep_until(t)` completes once `now() >= t`.
//! [`MonotonicClock`] is the production clock (tokio's monotonic instant);
//! [`ManualClock`] only moves when a test calls `advance`, so limiter tests are
//! exact and never sleep for real. Neither can fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Monotonic time and sleeping on that same time line.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;
    /// Completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: Duration) -> Sleep;
}

/// Production clock: tokio's monotonic `Instant` (so sleeping and reading the
/// time share one time line, including under tokio's paused test time).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: tokio::time::Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep_until(&self, deadline: Duration) -> Sleep {
        Box::pin(tokio::time::sleep_until(self.origin + deadline))
    }
}

/// Test clock: stands still until [`ManualClock::advance`]; sleepers wake when
/// the advanced time reaches their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    nanos: AtomicU64,
    // Broadcasts every advance so sleepers can re-check their deadline.
    tick: tokio::sync::watch::Sender<u64>,
}

impl ManualClock {
    pub fn new() -> Self {
        let (tick, _) = tokio::sync::watch::channel(0);
        Self {
            inner: Arc::new(ManualInner {
                nanos: AtomicU64::new(0),
                tick,
            }),
        }
    }

    /// Moves time forward by `by` and wakes the sleepers whose deadline passed.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let now = self
            .inner
            .nanos
            .fetch_add(by, Ordering::SeqCst)
            .saturating_add(by);
        self.inner.tick.send_replace(now);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, deadline: Duration) -> Sleep {
        let mut rx = self.inner.tick.subscribe();
        let deadline = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if it is gone
            // nobody can advance time any more, so give up waiting.
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_only_after_advance() {
        let clock = ManualClock::new();
        let sleeper = tokio::spawn(clock.sleep_until(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(99));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), Duration::from_millis(100));
    }
}
