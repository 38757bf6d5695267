//! Process-wide state shared by every request: the current [`Runtime`]
//! (config snapshot + the upstream client built for it), swapped atomically
//! on reload; the rate limiter and the audit log, which outlive reloads (so
//! limiter state and the audit chain survive them); the in-flight body
//! budget; the draining flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::audit::AuditLog;
use crate::pipeline::budget::BodyBudget;
use crate::pipeline::forward::Upstream;
use crate::pipeline::rate_limit::RateLimiter;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;

/// A snapshot and the upstream client built from it. Requests hold an `Arc`
/// for their whole life, so in-flight requests finish on the snapshot they
/// started with.
pub struct Runtime {
    pub snapshot: Arc<Snapshot>,
    pub upstream: Arc<Upstream>,
}

pub struct Shared {
    current: ArcSwap<Runtime>,
    pub limiter: RateLimiter,
    /// The refusal budget's table (per replica).
    pub refusals: crate::pipeline::rate_limit::refusals::Refusals,
    audit: Option<AuditLog>,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    pub started: Instant,
    /// Memory request bodies in flight may hold (limits from the snapshot).
    pub body_budget: BodyBudget,
}

/// Counts a request as in flight for as long as it lives (drain waits on it).
pub struct InFlightGuard<'a>(&'a AtomicUsize);
impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub fn new(runtime: Runtime, limiter: RateLimiter, audit: Option<AuditLog>) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(runtime),
            limiter,
            refusals: Default::default(),
            audit,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            started: Instant::now(),
            body_budget: BodyBudget::default(),
        }
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    pub fn swap(&self, rt: Runtime) {
        self.current.store(Arc::new(rt));
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn enter(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(&self.in_flight)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
