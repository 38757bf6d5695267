//! A circuit breaker per upstream.
//!
//! Input: the outcome of each upstream exchange — [`Breaker::success`] for
//! any HTTP answer (ComplyCube's own 4xx/5xx included: the upstream is up and
//! talking), [`Breaker::failure`] for a transport failure (connect/TLS error,
//! reset, timeout), neither ([`Permit::no_verdict`]) when the upstream ended a
//! connection gracefully (GOAWAY with NO_ERROR: routine connection turnover,
//! not a failure). Output: [`Breaker::admit`] says whether a request may go
//! upstream now. After `failures` consecutive transport failures the breaker
//! opens and refuses at once (callers get 503 instead of waiting for a
//! timeout that will come anyway); after `cooldown` one probe request is let
//! through (half-open); its success closes the breaker, its failure reopens
//! it for another cool-down. `failures == 0` disables the breaker.
//! State changes are counted in `cubegate_upstream_breaker_transitions_total`
//! and shown in the `cubegate_upstream_breaker_open` gauge.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else is refused until it ends.
    HalfOpen,
}

/// Breaker state shared by every request to one upstream (and carried across
/// reloads that keep the same upstream authority).
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// Permission to send one request. Report its outcome with
/// [`Permit::success`] / [`Permit::failure`]; a permit dropped without an
/// outcome (the caller went away) frees the probe slot so the next request
/// can probe instead.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.done = true;
        self.breaker.success();
    }
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.failure(self.probe);
    }
    /// The exchange says nothing about the upstream's health: the failure
    /// count stays as it is, and a probe's slot is freed as when the permit
    /// is dropped.
    pub fn no_verdict(self) {}
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut s = self.breaker.lock();
            if *s == State::HalfOpen {
                *s = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May a request go upstream now? `None` = the breaker is open: fail fast.
    pub fn admit(&self) -> Option<Permit<'_>> {
        if self.threshold == 0 {
            return Some(self.permit(false));
        }
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Some(self.permit(false)),
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen;
                transition("half_open");
                Some(self.permit(true))
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    /// True while requests are refused without trying.
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { .. } | State::HalfOpen)
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            done: false,
        }
    }

    fn success(&self) {
        let mut s = self.lock();
        if !matches!(*s, State::Closed { .. }) {
            transition("closed");
        }
        *s = State::Closed { failures: 0 };
    }

    fn failure(&self, probe: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut s = self.lock();
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        match *s {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                *s = open;
                transition("open");
            }
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                }
            }
            State::HalfOpen if probe => {
                *s = open;
                transition("open");
            }
            // A request admitted before the breaker opened failed late:
            // the breaker is already open, nothing to add.
            State::HalfOpen | State::Open { .. } => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The guarded value is a plain enum, always consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn transition(to: &'static str) {
    crate::telemetry::breaker_transition(to);
    match to {
        "open" => tracing::warn!(
            breaker = to,
            "upstream circuit breaker opened: failing fast"
        ),
        _ => tracing::info!(breaker = to, "upstream circuit breaker state change"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(0));
        for _ in 0..2 {
            b.admit().unwrap().failure();
        }
        assert!(!b.is_open(), "two failures are below the threshold");
        b.admit().unwrap().failure();
        assert!(b.is_open());
        // cool-down 0: the next request is the probe; others are refused meanwhile
        let probe = b.admit().unwrap();
        assert!(b.admit().is_none(), "only one probe while half-open");
        probe.failure();
        assert!(b.is_open());
        b.admit().unwrap().success();
        assert!(!b.is_open());
        assert!(b.admit().is_some());
    }

    #[test]
    fn open_breaker_refuses_until_cooldown_and_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(3600));
        b.admit().unwrap().failure();
        b.admit().unwrap().success();
        b.admit().unwrap().failure();
        assert!(!b.is_open(), "a success in between resets the count");
        b.admit().unwrap().failure();
        assert!(b.admit().is_none());
    }

    #[test]
    fn no_verdict_neither_counts_nor_resets_and_frees_a_probe() {
        let b = Breaker::new(2, Duration::ZERO);
        b.admit().unwrap().failure();
        for _ in 0..5 {
            b.admit().unwrap().no_verdict();
        }
        assert!(!b.is_open(), "graceful GOAWAYs are not failures");
        b.admit().unwrap().failure();
        assert!(b.is_open(), "nor successes: the count was kept");
        b.admit().unwrap().no_verdict();
        assert!(b.admit().is_some(), "the probe slot is free again");
    }

    #[test]
    fn dropped_probe_frees_the_slot_and_zero_disables() {
        let b = Breaker::new(1, Duration::ZERO);
        b.admit().unwrap().failure();
        drop(b.admit().unwrap());
        assert!(
            b.admit().is_some(),
            "a new probe may go after an abandoned one"
        );
        let off = Breaker::new(0, Duration::ZERO);
        for _ in 0..10 {
            off.admit().unwrap().failure();
        }
        assert!(off.admit().is_some());
    }
}
