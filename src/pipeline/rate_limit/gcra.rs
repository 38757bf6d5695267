//! GCRA (generic cell rate algorithm) with reservations: the maths shared by
//! the in-process table and the Redis script (`redis.rs` mirrors it in Lua).
//!
//! Contract: every budget is an emission interval `T = 1/rate` (rounded *up*,
//! so the limit is never exceeded through rounding) and a tolerance
//! `(burst - 1) * T`. Per key the only state is the theoretical arrival time
//! (TAT). A request at `now` conforms at `max(now, TAT - tolerance)`; admitting
//! it at slot `s` moves TAT to `max(TAT, s) + T`. Admitting a request that must
//! wait *reserves* its future slot, so waiters are served in arrival order and
//! never exceed `rate x time + burst`. Nothing here can fail; times are
//! nanoseconds on the limiter clock.

use std::collections::HashMap;

use super::{Budget, BudgetKey};

const NANOS_PER_SEC: f64 = 1e9;

/// One budget in the integer form the algorithm works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub(crate) interval: u64,
    pub(crate) tolerance: u64,
    pub(crate) burst: u32,
}

impl Gcra {
    /// `unit` is the time unit per second: 1e9 for the local nanosecond
    /// clock, 1e6 for Redis' microsecond `TIME`.
    pub(crate) fn with_unit(budget: &Budget, unit: f64) -> Self {
        let burst = budget.burst.max(1);
        let rate = if budget.per_second.is_finite() && budget.per_second > 0.0 {
            budget.per_second
        } else {
            // Settings validation rejects this; a tiny rate is the safe reading.
            1e-9
        };
        let interval = (unit / rate).ceil().clamp(1.0, u64::MAX as f64) as u64;
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst) - 1),
            burst,
        }
    }

    pub(crate) fn new(budget: &Budget) -> Self {
        Self::with_unit(budget, NANOS_PER_SEC)
    }

    /// Earliest time at which a request arriving at `now` conforms.
    pub(crate) fn earliest(&self, tat: u64, now: u64) -> u64 {
        now.max(tat.saturating_sub(self.tolerance))
    }

    /// TAT after admitting a request in slot `at`.
    pub(crate) fn after(&self, tat: u64, at: u64) -> u64 {
        tat.max(at).saturating_add(self.interval)
    }
}

/// Which state a TAT belongs to: the upstream key's budget or one caller's
/// quota inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    Budget(BudgetKey),
    Caller(BudgetKey, u64),
}

/// Outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted in slot `at` (== now when no wait is needed); state consumed.
    Admit { at: u64 },
    /// Nothing consumed. `earliest` is when both would have allowed it;
    /// `by_caller` says the caller quota alone was already too far out.
    Refuse { earliest: u64, by_caller: bool },
}

/// In-process GCRA state: one TAT per slot. Idle slots (TAT in the past) hold
/// no information and are dropped by [`Tats::sweep`].
#[derive(Debug, Default)]
pub(crate) struct Tats {
    tats: HashMap<Slot, u64>,
}

impl Tats {
    /// Checks the budget and, if given, the caller quota without consuming
    /// either; then consumes both, or neither when the common slot is more
    /// than `max_wait` away.
    pub(crate) fn decide(
        &mut self,
        now: u64,
        budget: (Slot, &Gcra),
        caller: Option<(Slot, &Gcra)>,
        max_wait: u64,
    ) -> Decision {
        let budget_tat = self.tat(budget.0);
        let mut at = budget.1.earliest(budget_tat, now);
        let mut caller_at = now;
        let caller_tat = caller.map(|(slot, gcra)| {
            let tat = self.tat(slot);
            caller_at = gcra.earliest(tat, now);
            tat
        });
        at = at.max(caller_at);
        let limit = now.saturating_add(max_wait);
        if at > limit {
            return Decision::Refuse {
                earliest: at,
                by_caller: caller_at > limit,
            };
        }
        self.tats.insert(budget.0, budget.1.after(budget_tat, at));
        if let (Some((slot, gcra)), Some(tat)) = (caller, caller_tat) {
            self.tats.insert(slot, gcra.after(tat, at));
        }
        Decision::Admit { at }
    }

    fn tat(&self, slot: Slot) -> u64 {
        self.tats.get(&slot).copied().unwrap_or(0)
    }

    /// Drops slots whose TAT is not after `now`: they behave exactly like
    /// absent ones, so this frees memory without changing any decision.
    pub(crate) fn sweep(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
    }

    pub(crate) fn len(&self) -> usize {
        self.tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn gcra(per_second: f64, burst: u32) -> Gcra {
        Gcra::new(&Budget { per_second, burst })
    }

    #[test]
    fn interval_rounds_up_so_rate_is_never_exceeded() {
        assert_eq!(gcra(8.0, 1).interval, 125 * MS);
        assert_eq!(gcra(3.0, 1).interval, 333_333_334);
        assert_eq!(gcra(4.0, 3).tolerance, 500 * MS);
    }

    #[test]
    fn burst_then_one_interval_per_request() {
        let g = gcra(8.0, 3);
        let key = Slot::Budget(BudgetKey::new("t", true));
        let mut t = Tats::default();
        let now = 10_000 * MS;
        for _ in 0..3 {
            assert_eq!(
                t.decide(now, (key, &g), None, 0),
                Decision::Admit { at: now }
            );
        }
        assert_eq!(
            t.decide(now, (key, &g), None, 0),
            Decision::Refuse {
                earliest: now + 125 * MS,
                by_caller: false
            }
        );
        // Reservations line up one interval apart, in call order.
        assert_eq!(
            t.decide(now, (key, &g), None, 1000 * MS),
            Decision::Admit { at: now + 125 * MS }
        );
        assert_eq!(
            t.decide(now, (key, &g), None, 1000 * MS),
            Decision::Admit { at: now + 250 * MS }
        );
    }

    // Any arrival pattern, any max_wait: in every window [a, b] the admitted
    // slots number at most burst + (b - a) / T, and slots follow arrival order.
    #[test]
    fn no_window_ever_exceeds_burst_plus_rate_times_length() {
        fn prop(rate: u8, burst: u8, gaps: Vec<u16>, waits: Vec<u16>) -> bool {
            let g = gcra(f64::from(rate % 20 + 1), u32::from(burst % 10 + 1));
            let key = Slot::Budget(BudgetKey::new("t", true));
            let mut t = Tats::default();
            let mut now = 5_000 * MS;
            let mut slots = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += u64::from(gap % 300) * MS;
                let max_wait = u64::from(waits.get(i).copied().unwrap_or(0) % 500) * MS;
                if let Decision::Admit { at } = t.decide(now, (key, &g), None, max_wait) {
                    if at < now || at > now + max_wait {
                        return false;
                    }
                    slots.push(at);
                }
            }
            if slots.windows(2).any(|w| w[0] > w[1]) {
                return false;
            }
            (0..slots.len()).all(|i| {
                (i..slots.len()).all(|j| {
                    (j - i + 1) as u64 <= u64::from(g.burst) + (slots[j] - slots[i]) / g.interval
                })
            })
        }
        quickcheck::QuickCheck::new()
            .tests(500)
            .quickcheck(prop as fn(u8, u8, Vec<u16>, Vec<u16>) -> bool);
    }
}
