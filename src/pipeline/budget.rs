//! The `body budget` stage, just before `read body`: how much memory request
//! bodies may hold at once, in total and per caller, so a flood of large
//! uploads waits or is refused instead of exhausting the process.
//!
//! A request reserves its charge before its body is read and keeps it until
//! the request is done (the parsed body and its re-serialised copy live
//! through the upstream exchange). The charge is twice the body's exact
//! length as hyper knows it (Content-Length; 0 without a body), or twice the
//! route's cap when chunked, never more than that, and at most the caller's
//! share: twice, because the raw bytes and the parsed copy coexist while
//! parsing. When the budget or the caller's share is full the request waits
//! up to the configured time for a release, then fails with [`Overloaded`]
//! (503 `gateway_overloaded`, `Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::telemetry;

/// The budget's limits, from `[body]` (read per request, so a reload applies
/// to the next reservation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimits {
    pub total: usize,
    pub per_caller: usize,
    /// Longest wait for room before the 503.
    pub wait: Duration,
}

/// The budget stayed full for the whole wait.
#[derive(Debug, thiserror::Error)]
#[error("the in-flight body budget ({scope}) stayed full for {waited_ms} ms")]
pub struct Overloaded {
    /// `global` or `caller`.
    pub scope: &'static str,
    pub waited_ms: u64,
}

/// Seconds a refused caller is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 1;

#[derive(Default)]
struct Held {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// Process-wide: lives in `Shared`, across reloads.
#[derive(Default)]
pub struct BodyBudget {
    held: Mutex<Held>,
    released: Notify,
}

/// A held charge; released on drop.
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    caller: String,
    charge: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.charge == 0 {
            return;
        }
        let total = {
            let mut held = self.budget.lock();
            held.total = held.total.saturating_sub(self.charge);
            if let Some(c) = held.by_caller.get_mut(&self.caller) {
                *c = c.saturating_sub(self.charge);
                if *c == 0 {
                    held.by_caller.remove(&self.caller);
                }
            }
            held.total
        };
        telemetry::body_budget_held(total);
        self.budget.released.notify_waiters();
    }
}

/// What a body is charged: twice its declared length, the route's cap when
/// none is declared (chunked), never more than twice the cap.
pub fn charge(declared: Option<u64>, cap: usize) -> usize {
    let len = declared.map_or(cap, |d| usize::try_from(d).unwrap_or(cap).min(cap));
    len.saturating_mul(2)
}

impl BodyBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding the lock cannot leave the counts half-updated
        // (each update is one statement), so a poisoned lock is still sound.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    /// Takes `charge` for `caller` if both the total and the caller's share
    /// have room; else names the full scope.
    fn try_take(
        &self,
        caller: &str,
        charge: usize,
        l: BudgetLimits,
    ) -> Result<usize, &'static str> {
        let mut held = self.lock();
        let mine = held.by_caller.get(caller).copied().unwrap_or(0);
        if mine.saturating_add(charge) > l.per_caller {
            return Err("caller");
        }
        if held.total.saturating_add(charge) > l.total {
            return Err("global");
        }
        held.total += charge;
        *held.by_caller.entry(caller.to_string()).or_insert(0) += charge;
        Ok(held.total)
    }

    /// Reserves `charge` bytes for `caller`, waiting up to `l.wait` for room.
    /// A charge larger than the caller's share is cut to it, so one request
    /// alone always fits.
    pub async fn reserve(
        &self,
        caller: &str,
        charge: usize,
        l: BudgetLimits,
    ) -> Result<Reservation<'_>, Overloaded> {
        let charge = charge.min(l.per_caller);
        let reservation = || Reservation {
            budget: self,
            caller: caller.to_string(),
            charge,
        };
        if charge == 0 {
            return Ok(reservation());
        }
        let deadline = tokio::time::Instant::now() + l.wait;
        loop {
            // Registered before the check, so a release between the check
            // and the wait still wakes this request.
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            let scope = match self.try_take(caller, charge, l) {
                Ok(total) => {
                    telemetry::body_budget_held(total);
                    return Ok(reservation());
                }
                Err(scope) => scope,
            };
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                telemetry::body_budget_refused(scope);
                return Err(Overloaded {
                    scope,
                    waited_ms: l.wait.as_millis() as u64,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: BudgetLimits = BudgetLimits {
        total: 100,
        per_caller: 60,
        wait: Duration::from_millis(50),
    };

    #[tokio::test]
    async fn holds_the_total_and_the_share_and_releases_on_drop() {
        let b = BodyBudget::default();
        let a1 = b.reserve("a", 40, L).await.unwrap();
        assert!(
            b.reserve("a", 40, L)
                .await
                .is_err_and(|e| e.scope == "caller")
        );
        let c1 = b.reserve("c", 50, L).await.unwrap();
        assert!(
            b.reserve("d", 20, L)
                .await
                .is_err_and(|e| e.scope == "global")
        );
        assert_eq!(b.held(), 90);
        drop(a1);
        assert_eq!(b.held(), 50);
        let waiter = b.reserve("d", 50, L);
        drop(c1);
        assert!(waiter.await.is_ok());
        assert_eq!(b.held(), 0);
        // Larger than a share: cut to it, so it fits alone.
        let big = b.reserve("e", 1000, L).await.unwrap();
        assert_eq!(b.held(), 60);
        drop(big);
        assert_eq!(charge(Some(10), 100), 20);
        assert_eq!(charge(None, 100), 200);
        assert_eq!(charge(Some(u64::MAX), 100), 200);
    }
}
