//! Process-wide state shared by every request: the current [`Runtime`]
//! (config snapshot + the upstream client built for it), swapped atomically
//! on reload; the rate limiter and the audit log, which outlive reloads (so
//! limiter state and the audit chain survive them); the draining flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderMap;

use crate::audit::AuditLog;
use crate::error::GatewayError;
use crate::model::Environment;
use crate::pipeline::forward::Upstream;
use crate::pipeline::rate_limit::{BudgetKey, RateLimiter};
use crate::snapshot::{Caller, Snapshot, Tenant};

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
    audit: Option<AuditLog>,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    pub started: Instant,
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
            audit,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            started: Instant::now(),
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

    /// The limiter, unless `[rate_limit] enabled = false` in `snap` (read
    /// per request, so a reload switches it): the one place that decides.
    fn limiter_for(&self, snap: &Snapshot) -> Option<&RateLimiter> {
        snap.rate_limit.enabled.then_some(&self.limiter)
    }

    /// Admit the request under its tenant budget and caller quota, waiting
    /// (shaping) up to the caller's `max_wait`. Returns the time waited, or
    /// None when rate limiting is off (not limited, rather than "no wait").
    pub async fn rate_limit(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        tenant: &Tenant,
    ) -> Result<Option<Duration>, GatewayError> {
        let Some(limiter) = self.limiter_for(snap) else {
            return Ok(None);
        };
        let live = caller.environment == Environment::Live;
        let key = BudgetKey::new(&tenant.id, live);
        let budget = tenant.budget(caller.environment, &snap.rate_limit);
        let quota = caller.quota.as_ref().map(|q| (caller.id.as_str(), q));
        let max_wait = caller
            .max_wait
            .unwrap_or_else(|| snap.rate_limit.max_wait());
        match limiter.acquire(key, &budget, quota, max_wait).await {
            Ok(a) => {
                crate::telemetry::rate_limit_waited(&tenant.id, a.waited);
                Ok(Some(a.waited))
            }
            Err(refusal) => {
                crate::telemetry::rate_limit_refused(&tenant.id, refusal.reason.as_str());
                Err(GatewayError::RateLimited {
                    message: "rate limit exceeded for this tenant or caller; retry after the time in Retry-After",
                    headers: refusal.headers(),
                })
            }
        }
    }

    /// ComplyCube said 429 anyway: pause that key so we stop hammering it
    /// (counted, but nothing paused, while rate limiting is off).
    pub fn upstream_429(
        &self,
        snap: &Snapshot,
        caller: &Caller,
        tenant: &Tenant,
        headers: &HeaderMap,
    ) {
        crate::telemetry::upstream_429(&tenant.id);
        let Some(limiter) = self.limiter_for(snap) else {
            return;
        };
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let key = BudgetKey::new(&tenant.id, caller.environment == Environment::Live);
        limiter.pause(key, retry_after);
        crate::telemetry::key_paused(&tenant.id);
    }
}
