//! The refusal budget: refused requests cost the caller who sent them.
//!
//! Input: who was refused (a caller, or for an unauthenticated request the
//! source address), the kind of refusal (its audit decision), the budget
//! (`[rate_limit] refusals`, governor's keyed GCRA) and the summary
//! interval. Output: a [`Verdict`]: within the budget the refusal is
//! answered and recorded as usual; past it the caller gets 429 with
//! `Retry-After`, its record is not written, and at most once per interval
//! per who and kind a summary ("N refusals of kind K suppressed") is due.
//! Failures: none. Why: a refusal writes an audit record, so without a
//! budget one caller with any token could fill the audit disk with them.
//! State is per replica (refusals never reach Redis) and idle entries are
//! dropped as the table grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::Budget;
use crate::audit::Decision;

/// Entries kept before idle ones are swept.
const SWEEP_AT: usize = 4096;

/// Who a refusal is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// An identified caller, by id.
    Caller(String),
    /// An unidentified request, by source address (or none known).
    Peer(Option<IpAddr>),
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget: answer and record it as usual.
    Record,
    /// Over the budget: answer 429 after `retry_after`, write no record of
    /// it; `summary` is the count to write in one summary record, when due.
    Suppress {
        retry_after: Duration,
        summary: Option<u64>,
    },
}

/// Suppressed since the last summary, and when that summary was due (ns
/// since the table's origin).
type Pending = (u64, Option<u64>);

/// governor's keyed GCRA, one cell per [`Who`].
type Keyed<C> = RateLimiter<Who, HashMapStateStore<Who>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The per-replica refusal table: governor decides within or past the
/// budget; beside it, per who and kind, the count suppressed since the last
/// summary and when that summary was due.
pub struct Refusals<C: Clock = DefaultClock> {
    clock: C,
    origin: C::Instant,
    /// The limiter for the budget it was built with; a reload that changes
    /// the budget builds a new one (governor's quota is fixed per limiter).
    limiter: Mutex<Option<(Budget, Arc<Keyed<C>>)>>,
    summaries: Mutex<HashMap<(Who, Decision), Pending>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals::with_clock(DefaultClock::default())
    }
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The governor quota of a budget: one cell every 1/rate, `burst` at once.
fn quota(budget: &Budget) -> Quota {
    let burst = NonZeroU32::new(budget.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs_f64(1.0 / budget.per_second))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

impl<C: Clock + Clone> Refusals<C> {
    pub fn with_clock(clock: C) -> Self {
        Refusals {
            origin: clock.now(),
            clock,
            limiter: Mutex::new(None),
            summaries: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, budget: &Budget) -> Arc<Keyed<C>> {
        let mut slot = lock(&self.limiter);
        match slot.as_ref() {
            Some((b, l)) if b == budget => l.clone(),
            _ => {
                let l = Arc::new(RateLimiter::new(
                    quota(budget),
                    HashMapStateStore::default(),
                    self.clock.clone(),
                ));
                *slot = Some((*budget, l.clone()));
                l
            }
        }
    }

    /// Charges one refusal of `kind` to `who`.
    pub fn charge(&self, who: Who, kind: Decision, budget: &Budget, every: Duration) -> Verdict {
        let limiter = self.limiter(budget);
        if limiter.len() >= SWEEP_AT {
            limiter.retain_recent();
        }
        let not_until = match limiter.check_key(&who) {
            Ok(()) => return Verdict::Record,
            Err(n) => n,
        };
        let now = self.clock.now();
        let retry_after = not_until.wait_time_from(now);
        let now = u64::from(now.duration_since(self.origin));
        let mut summaries = lock(&self.summaries);
        if summaries.len() >= SWEEP_AT {
            summaries.retain(|_, (n, _)| *n > 0);
        }
        let (count, last) = summaries.entry((who, kind)).or_insert((0, None));
        *count += 1;
        let every = every.as_nanos() as u64;
        let due = last.is_none_or(|l| now.saturating_sub(l) >= every);
        let summary = due.then(|| {
            *last = Some(now);
            std::mem::take(count)
        });
        Verdict::Suppress {
            retry_after: retry_after.max(Duration::from_nanos(1)),
            summary,
        }
    }
}

/// Whether a decision is a refusal the caller caused and pays for: not a
/// rate limit (already limited) nor the audit failing (cubegate's fault).
pub fn charged(d: Decision) -> bool {
    !matches!(
        d,
        Decision::Allowed | Decision::RefusedRateLimit | Decision::RefusedAudit
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn past_the_budget_refusals_are_suppressed_with_one_summary_per_interval() {
        let clock = FakeRelativeClock::default();
        let r = Refusals::with_clock(clock.clone());
        let b = Budget {
            per_second: 20.0,
            burst: 40,
        };
        let every = Duration::from_secs(10);
        let who = || Who::Caller("svc".into());
        let body = Decision::RefusedBody;
        clock.advance(Duration::from_secs(1));
        for _ in 0..40 {
            assert_eq!(r.charge(who(), body, &b, every), Verdict::Record);
        }
        let mut summaries = Vec::new();
        for i in 0..160 {
            clock.advance(Duration::from_nanos(1));
            match r.charge(who(), body, &b, every) {
                Verdict::Suppress {
                    retry_after,
                    summary,
                } => {
                    assert!(retry_after > Duration::ZERO);
                    summaries.extend(summary);
                }
                Verdict::Record => panic!("refusal {i} recorded past the budget"),
            }
        }
        assert_eq!(summaries, [1], "one summary at the first suppression");
        // Another caller and another source address are not affected.
        let other = Who::Caller("other".into());
        assert_eq!(r.charge(other, body, &b, every), Verdict::Record);
        let peer = Who::Peer(Some([10, 0, 0, 1].into()));
        assert_eq!(r.charge(peer, body, &b, every), Verdict::Record);
        // Eleven seconds on: the budget has refilled, and the next
        // suppression carries the count since the summary.
        clock.advance(Duration::from_secs(11));
        for _ in 0..40 {
            assert_eq!(r.charge(who(), body, &b, every), Verdict::Record);
        }
        match r.charge(who(), body, &b, every) {
            Verdict::Suppress { summary, .. } => assert_eq!(summary, Some(160)),
            Verdict::Record => panic!("over the budget again"),
        }
        assert!(charged(Decision::RefusedValidation));
        assert!(!charged(Decision::RefusedRateLimit));
    }

    /// A reload that changes the budget takes effect: governor's quota is
    /// fixed per limiter, so a new one is built for the new budget.
    #[test]
    fn a_changed_budget_builds_a_new_limiter() {
        let clock = FakeRelativeClock::default();
        let r = Refusals::with_clock(clock.clone());
        let every = Duration::from_secs(10);
        let who = || Who::Caller("svc".into());
        let one = Budget {
            per_second: 1.0,
            burst: 1,
        };
        assert_eq!(
            r.charge(who(), Decision::RefusedBody, &one, every),
            Verdict::Record
        );
        assert!(matches!(
            r.charge(who(), Decision::RefusedBody, &one, every),
            Verdict::Suppress { .. }
        ));
        let more = Budget {
            per_second: 1.0,
            burst: 5,
        };
        for _ in 0..5 {
            assert_eq!(
                r.charge(who(), Decision::RefusedBody, &more, every),
                Verdict::Record
            );
        }
    }
}
