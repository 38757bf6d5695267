//! The refusal budget: refused requests cost the caller who sent them.
//!
//! Input: who was refused (a caller, or for an unauthenticated request the
//! source address), the kind of refusal (its audit decision), the budget
//! (`[rate_limit] refusals`, GCRA like the other budgets) and the summary
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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Budget;
use super::gcra::Gcra;
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

#[derive(Debug, Default)]
struct Entry {
    tat: u64,
    /// Per kind: suppressed since the last summary, and when that was.
    kinds: HashMap<Decision, (u64, Option<u64>)>,
}

/// The per-replica refusal table.
#[derive(Debug)]
pub struct Refusals {
    start: Instant,
    table: Mutex<HashMap<Who, Entry>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            start: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl Refusals {
    /// Charges one refusal of `kind` to `who`.
    pub fn charge(&self, who: Who, kind: Decision, budget: &Budget, every: Duration) -> Verdict {
        let now = self.start.elapsed().as_nanos() as u64;
        self.charge_at(who, kind, budget, every, now)
    }

    fn charge_at(
        &self,
        who: Who,
        kind: Decision,
        budget: &Budget,
        every: Duration,
        now: u64,
    ) -> Verdict {
        let gcra = Gcra::new(budget);
        let mut table = match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if table.len() >= SWEEP_AT {
            table.retain(|_, e| e.tat > now || e.kinds.values().any(|(n, _)| *n > 0));
        }
        let e = table.entry(who).or_default();
        let at = gcra.earliest(e.tat, now);
        if at <= now {
            e.tat = gcra.after(e.tat, now);
            return Verdict::Record;
        }
        let (count, last) = e.kinds.entry(kind).or_insert((0, None));
        *count += 1;
        let every = every.as_nanos() as u64;
        let due = last.is_none_or(|l| now.saturating_sub(l) >= every);
        let summary = due.then(|| {
            *last = Some(now);
            std::mem::take(count)
        });
        Verdict::Suppress {
            retry_after: Duration::from_nanos(at - now),
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

    const S: u64 = 1_000_000_000;

    #[test]
    fn past_the_budget_refusals_are_suppressed_with_one_summary_per_interval() {
        let r = Refusals::default();
        let b = Budget {
            per_second: 20.0,
            burst: 40,
        };
        let every = Duration::from_secs(10);
        let who = || Who::Caller("svc".into());
        let body = Decision::RefusedBody;
        for _ in 0..40 {
            assert_eq!(r.charge_at(who(), body, &b, every, S), Verdict::Record);
        }
        let mut summaries = Vec::new();
        for i in 0..160 {
            match r.charge_at(who(), body, &b, every, S + i) {
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
        assert_eq!(r.charge_at(other, body, &b, every, S), Verdict::Record);
        let peer = Who::Peer(Some([10, 0, 0, 1].into()));
        assert_eq!(r.charge_at(peer, body, &b, every, S), Verdict::Record);
        // Eleven seconds on: the budget has refilled, and the next
        // suppression carries the count since the summary.
        let later = S + 11 * S;
        for _ in 0..40 {
            assert_eq!(r.charge_at(who(), body, &b, every, later), Verdict::Record);
        }
        match r.charge_at(who(), body, &b, every, later) {
            Verdict::Suppress { summary, .. } => assert_eq!(summary, Some(160)),
            Verdict::Record => panic!("over the budget again"),
        }
        assert!(charged(Decision::RefusedValidation));
        assert!(!charged(Decision::RefusedRateLimit));
    }
}
