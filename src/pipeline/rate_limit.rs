//! Rate-limit stage: keeps every upstream key (tenant + environment) under its
//! ComplyCube budget, and every caller under its quota inside that budget.
//!
//! Input: a [`BudgetKey`], its [`Budget`], optionally a caller id with its
//! quota, and how long the request may wait. Output: an [`Admission`] (after
//! waiting, if a slot was reserved) or a [`Refusal`] carrying `Retry-After`
//! and `RateLimit-Policy`/`RateLimit` headers for the 429
//! `rate_limit_exceeded` response.
//!
//! Behaviour:
//! - GCRA with reservations (`gcra.rs`): a request over budget is given the
//!   next free slot if it is at most `max_wait` away and sleeps until then
//!   (shaping); slots are handed out in arrival order, so waiters are served
//!   first come, first served. If the slot is further away the request is
//!   refused at once, consuming nothing. Budget and caller quota are checked
//!   together and both or neither are consumed.
//! - At most `max_waiters` requests per key wait at a time (`QueueFull`).
//! - [`RateLimiter::pause`] (upstream answered 429) refuses the key with
//!   `Paused` until the pause ends.
//! - `backend = "redis"`: one Lua script per decision on Redis' clock shares
//!   the state between replicas (`redis.rs`). When Redis errs or exceeds
//!   `redis_timeout_ms`, `fail = "closed"` refuses (`BackendUnavailable`,
//!   retry after 1 s) and `fail = "local"` decides in-process at
//!   budget ÷ `replicas`.
//! - Idle state is swept every `idle_cleanup_secs`, so memory follows the
//!   number of active keys.
//!
//! Failures: [`RateLimiter::new`] fails only on invalid settings
//! ([`LimiterError`]); deciding never fails, it admits or refuses. Tenant and
//! caller names are hashed in keys; the Redis URL (which may hold a password)
//! never appears in Debug output, errors or logs.

mod admit;
mod clock;
mod gcra;
mod redis;
pub mod refusals;
mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The `[rate_limit]` section and its budgets are plain config types.
pub use crate::config::{Backend, Budget, FailMode, LimiterSettings};

pub use admit::{RateLimited, admit, refused, upstream_429};
pub use clock::{Clock, ManualClock, MonotonicClock};
use gcra::{Decision, Gcra, Slot, Tats};
use redis::{RedisBackend, Verdict};

/// Longest pause an upstream `Retry-After` can impose: a broken or hostile
/// header must not take a tenant offline for days.
const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Retry-After given when the shared backend is unavailable.
const BACKEND_RETRY: Duration = Duration::from_secs(1);

/// One upstream key: a tenant and its environment. Copy, hash-sized; the
/// tenant name is kept only as a stable 64-bit hash (the same on every
/// replica, so it can name Redis keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    tenant: u64,
    live: bool,
}

impl BudgetKey {
    pub fn new(tenant: &str, live: bool) -> Self {
        Self {
            tenant: fnv1a(tenant),
            live,
        }
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    pub(crate) fn tenant_hash(&self) -> u64 {
        self.tenant
    }
}

impl Budget {
    /// This replica's share when `replicas` share the budget without
    /// coordination (the `fail = "local"` fallback). Never below one request.
    pub fn divided(&self, replicas: u32) -> Budget {
        let n = replicas.max(1);
        Budget {
            per_second: self.per_second / f64::from(n),
            burst: (self.burst / n).max(1),
        }
    }

    fn validate(&self, what: &str) -> Result<(), LimiterError> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(LimiterError::Invalid(format!(
                "{what}.per_second must be a positive number"
            )));
        }
        if self.burst == 0 {
            return Err(LimiterError::Invalid(format!("{what}.burst must be >= 1")));
        }
        Ok(())
    }

    // Seconds to refill the whole burst: the `w` of RateLimit-Policy.
    fn window_secs(&self) -> u64 {
        let secs = (f64::from(self.burst) / self.per_second).ceil();
        if secs.is_finite() && secs >= 1.0 {
            secs as u64
        } else {
            1
        }
    }
}

/// What start-up, a reload and `check-config` say when `enabled = false`.
pub const OFF_NOTICE: &str = "rate limiting is OFF ([rate_limit] enabled = false): no budget, quota or upstream-429 pause is enforced";

impl LimiterSettings {
    /// Checks the values a config file can get wrong.
    pub fn validate(&self) -> Result<(), LimiterError> {
        self.default_live.validate("rate_limit.default_live")?;
        self.default_test.validate("rate_limit.default_test")?;
        self.refusals.validate("rate_limit.refusals")?;
        if self.refusal_summary_secs == 0 {
            return Err(LimiterError::Invalid(
                "rate_limit.refusal_summary_secs must be >= 1".into(),
            ));
        }
        if self.backend == Backend::Redis && self.redis_url.is_none() {
            return Err(LimiterError::Invalid(
                "rate_limit.backend = \"redis\" needs rate_limit.redis_url".into(),
            ));
        }
        if self.redis_timeout_ms == 0 {
            return Err(LimiterError::Invalid(
                "rate_limit.redis_timeout_ms must be >= 1".into(),
            ));
        }
        if self.replicas == 0 {
            return Err(LimiterError::Invalid(
                "rate_limit.replicas must be >= 1".into(),
            ));
        }
        if self.idle_cleanup_secs == 0 {
            return Err(LimiterError::Invalid(
                "rate_limit.idle_cleanup_secs must be >= 1".into(),
            ));
        }
        Ok(())
    }

    /// The settings the running limiter was built with and a reload cannot
    /// change (backend, Redis connection, fail mode, replicas, queue bound,
    /// default pause, sweep interval): the names of those that differ in
    /// `new`. `enabled`, budgets, quotas and `max_wait_ms` are read per
    /// request from the current snapshot and so do apply on reload.
    pub fn restart_only_changes(&self, new: &LimiterSettings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("backend", self.backend != new.backend);
        check("redis_url", self.redis_url != new.redis_url);
        check(
            "redis_timeout_ms",
            self.redis_timeout_ms != new.redis_timeout_ms,
        );
        check("fail", self.fail != new.fail);
        check("replicas", self.replicas != new.replicas);
        check("max_waiters", self.max_waiters != new.max_waiters);
        check(
            "upstream_429_pause_secs",
            self.upstream_429_pause_secs != new.upstream_429_pause_secs,
        );
        check(
            "idle_cleanup_secs",
            self.idle_cleanup_secs != new.idle_cleanup_secs,
        );
        changed
    }

    /// The default budget for a key's environment.
    pub fn default_budget(&self, live: bool) -> &Budget {
        if live {
            &self.default_live
        } else {
            &self.default_test
        }
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("invalid rate limit settings: {0}")]
    Invalid(String),
    #[error("invalid rate_limit.redis_url ({0:?})")]
    RedisUrl(::redis::ErrorKind),
}

/// A request may go upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Time spent waiting for a reserved slot; exactly zero when admitted at
    /// once (the decision's own cost, e.g. a Redis round trip, is not a wait).
    pub waited: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The upstream key's budget has no slot within the allowed wait.
    Budget,
    /// The caller's own quota has no slot within the allowed wait.
    CallerQuota,
    /// The upstream answered 429 recently; the key is paused.
    Paused,
    /// Too many requests already wait for this key.
    QueueFull,
    /// The shared backend could not decide and `fail = "closed"`.
    BackendUnavailable,
}

impl RefusalReason {
    /// The `reason` label of `cubegate_rate_limit_refusals_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Budget => "budget",
            RefusalReason::CallerQuota => "caller_quota",
            RefusalReason::Paused => "paused",
            RefusalReason::QueueFull => "queue_full",
            RefusalReason::BackendUnavailable => "backend_unavailable",
        }
    }
}

/// A request must be answered 429 `rate_limit_exceeded` and not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after: Duration,
    pub reason: RefusalReason,
    /// Burst of the policy that refused (`q` of RateLimit-Policy).
    pub limit: u32,
    /// Requests left without waiting (`r` of RateLimit).
    pub remaining: u32,
    /// Until the policy admits again (`t` of RateLimit).
    pub reset: Duration,
    /// Time the policy takes to refill its burst (`w` of RateLimit-Policy).
    pub window: Duration,
}

impl Refusal {
    /// `Retry-After` (whole seconds, rounded up, at least 1) and the
    /// draft-ietf-httpapi-ratelimit-headers fields, e.g.
    /// `RateLimit-Policy: "budget";q=8;w=1` and `RateLimit: "budget";r=0;t=1`.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let policy = match self.reason {
            RefusalReason::CallerQuota => "caller",
            _ => "budget",
        };
        let retry = ceil_secs(self.retry_after).max(1);
        let window = ceil_secs(self.window).max(1);
        let reset = ceil_secs(self.reset);
        vec![
            (http::header::RETRY_AFTER, HeaderValue::from(retry)),
            (
                HeaderName::from_static("ratelimit-policy"),
                header_value(format!("\"{policy}\";q={};w={window}", self.limit)),
            ),
            (
                HeaderName::from_static("ratelimit"),
                header_value(format!("\"{policy}\";r={};t={reset}", self.remaining)),
            ),
        ]
    }
}

fn header_value(s: String) -> HeaderValue {
    // Built only from a fixed name and integers, so always valid.
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("\"budget\""))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Counters since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    pub admitted: u64,
    /// Admitted after waiting for a slot.
    pub waits: u64,
    pub refusals: u64,
    /// Refusals by reason (they add up to `refusals`).
    pub refused: RefusalCounts,
    /// Upstream 429s that paused a key.
    pub pauses: u64,
    pub redis_errors: u64,
    /// Decisions taken by the local fallback because Redis failed.
    pub fallbacks: u64,
    /// Keys with in-process state right now (budgets, caller quotas, pauses).
    pub tracked_keys: u64,
}

/// Refusals of one limiter, by [`RefusalReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    pub budget: u64,
    pub caller_quota: u64,
    pub paused: u64,
    pub queue_full: u64,
    pub backend_unavailable: u64,
}

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    waits: AtomicU64,
    refusals: AtomicU64,
    // Indexed by `RefusalReason as usize`.
    by_reason: [AtomicU64; 5],
    pauses: AtomicU64,
    redis_errors: AtomicU64,
    fallbacks: AtomicU64,
}

struct Shared {
    clock: Arc<dyn Clock>,
    max_waiters: usize,
    default_pause: Duration,
    fail: FailMode,
    replicas: u32,
    // Local backend state, or the fallback state when Redis is the backend.
    tats: Mutex<Tats>,
    waiters: Mutex<HashMap<BudgetKey, usize>>,
    // Pause end per key, on the limiter clock in nanoseconds.
    paused: Mutex<HashMap<BudgetKey, u64>>,
    redis: Option<RedisBackend>,
    // Until when (limiter clock, ns) Redis is considered down after an error.
    redis_down_until: AtomicU64,
    counters: Counters,
}

/// The rate limiter; cheap to share behind an `Arc` (all methods take `&self`).
pub struct RateLimiter {
    shared: Arc<Shared>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("redis", &self.shared.redis.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        if let Some(task) = self.sweeper.take() {
            task.abort();
        }
    }
}

// Lock that survives a poisoned mutex: the maps hold plain numbers that are
// consistent after any panic point, so recovering is safe.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl RateLimiter {
    /// Builds the limiter on the production clock and starts the idle sweep.
    /// Redis is connected lazily (first decision), so this never blocks.
    /// Must be called inside a tokio runtime.
    pub async fn new(settings: &LimiterSettings) -> Result<RateLimiter, LimiterError> {
        Self::with_clock(settings, Arc::new(MonotonicClock::new()))
    }

    /// As [`RateLimiter::new`] on a given clock (tests use [`ManualClock`]).
    pub fn with_clock(
        settings: &LimiterSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<RateLimiter, LimiterError> {
        settings.validate()?;
        let redis = match (settings.backend, settings.redis_url.as_deref()) {
            (Backend::Redis, Some(url)) => Some(
                RedisBackend::new(url, Duration::from_millis(settings.redis_timeout_ms))
                    .map_err(LimiterError::RedisUrl)?,
            ),
            _ => None,
        };
        let shared = Arc::new(Shared {
            clock,
            max_waiters: settings.max_waiters,
            default_pause: Duration::from_secs(settings.upstream_429_pause_secs),
            fail: settings.fail,
            replicas: settings.replicas.max(1),
            tats: Mutex::new(Tats::default()),
            waiters: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            redis,
            redis_down_until: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let every = Duration::from_secs(settings.idle_cleanup_secs.max(1));
        let weak = Arc::downgrade(&shared);
        let sweeper = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(shared) => shared.sweep(),
                        None => break,
                    }
                }
            })
        });
        Ok(RateLimiter { shared, sweeper })
    }

    /// Admits one request for `key` under `budget` and, if given, under the
    /// quota of `caller`. Waits (first come, first served) up to `max_wait`
    /// for a slot; refuses at once when the slot is further away.
    pub async fn acquire(
        &self,
        key: BudgetKey,
        budget: &Budget,
        caller: Option<(&str, &Budget)>,
        max_wait: Duration,
    ) -> Result<Admission, Refusal> {
        let shared = &*self.shared;
        let start = shared.clock.now();
        let result = self.decide(key, budget, caller, max_wait, start).await;
        let c = &shared.counters;
        match result {
            Ok((slot, guard)) => {
                // Only a reserved future slot is a wait; the time the decision
                // itself took (a Redis round trip) is not shaping.
                let waited = match slot {
                    Some(slot) => {
                        shared.clock.sleep_until(slot).await;
                        c.waits.fetch_add(1, Ordering::Relaxed);
                        shared.clock.now().saturating_sub(start)
                    }
                    None => Duration::ZERO,
                };
                drop(guard);
                c.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(Admission { waited })
            }
            Err(refusal) => {
                c.refusals.fetch_add(1, Ordering::Relaxed);
                c.by_reason[refusal.reason as usize].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason = ?refusal.reason, retry_after_ms = refusal.retry_after.as_millis() as u64, "rate limit refusal");
                Err(refusal)
            }
        }
    }

    // Decides and reserves; returns the slot to sleep until (None: go now)
    // and, when waiting, the guard holding this request's waiter place.
    async fn decide(
        &self,
        key: BudgetKey,
        budget: &Budget,
        caller: Option<(&str, &Budget)>,
        max_wait: Duration,
        now: Duration,
    ) -> Result<(Option<Duration>, Option<WaiterGuard<'_>>), Refusal> {
        let shared = &*self.shared;
        if let Some(left) = shared.paused_for(key, now) {
            return Err(refusal(RefusalReason::Paused, left, budget, 0));
        }
        // Take a waiter place before deciding: Redis reserves the slot in the
        // same step that tells us we must wait, so the bound must be known
        // beforehand (no place left = may not wait at all).
        let guard = WaiterGuard::enter(shared, key);
        let allowed_wait = if guard.is_some() {
            max_wait
        } else {
            Duration::ZERO
        };
        let caller = caller.map(|(id, quota)| (fnv1a(id), quota));

        let verdict = match &shared.redis {
            Some(redis) => {
                self.decide_shared(redis, key, budget, caller, allowed_wait)
                    .await?
            }
            None => shared.decide_local(key, budget, caller, allowed_wait),
        };
        // A verdict is relative to when it was decided (under the lock, or
        // when Redis answered), not to `now`.
        let now = shared.clock.now();

        match verdict {
            Verdict::Admit { wait } if wait.is_zero() => Ok((None, None)),
            Verdict::Admit { wait } => Ok((Some(now + wait), guard)),
            Verdict::Paused { remaining } => {
                // Learned from another replica: remember it locally too.
                shared.pause_until(key, now + remaining);
                Err(refusal(RefusalReason::Paused, remaining, budget, 0))
            }
            Verdict::Refuse {
                earliest,
                by_caller,
            } => {
                let (reason, policy) = match (by_caller, caller) {
                    // Would have waited, had there been room in the queue.
                    _ if guard.is_none() && earliest <= max_wait => {
                        (RefusalReason::QueueFull, budget)
                    }
                    (true, Some((_, quota))) => (RefusalReason::CallerQuota, quota),
                    _ => (RefusalReason::Budget, budget),
                };
                Err(refusal(reason, earliest, policy, 0))
            }
        }
    }

    // Asks Redis; on failure applies the fail mode. After a failure Redis is
    // left alone for BACKEND_RETRY so that an outage costs one timeout per
    // second, not one per request.
    async fn decide_shared(
        &self,
        redis: &RedisBackend,
        key: BudgetKey,
        budget: &Budget,
        caller: Option<(u64, &Budget)>,
        max_wait: Duration,
    ) -> Result<Verdict, Refusal> {
        let shared = &*self.shared;
        let down_until = shared.redis_down_until.load(Ordering::Relaxed);
        if nanos(shared.clock.now()) >= down_until {
            match redis.decide(key, budget, caller, max_wait).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    shared.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::rate_limit_backend_error();
                    let retry = nanos(shared.clock.now() + BACKEND_RETRY);
                    shared.redis_down_until.fetch_max(retry, Ordering::Relaxed);
                    tracing::warn!(error = %e, fail = ?shared.fail, "rate limit backend unavailable");
                }
            }
        }
        match shared.fail {
            FailMode::Closed => Err(refusal(
                RefusalReason::BackendUnavailable,
                BACKEND_RETRY,
                budget,
                0,
            )),
            FailMode::Local => {
                shared.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::rate_limit_fallback();
                let n = shared.replicas;
                let quota = caller.map(|(id, q)| (id, q.divided(n)));
                Ok(shared.decide_local(
                    key,
                    &budget.divided(n),
                    quota.as_ref().map(|(id, q)| (*id, q)),
                    max_wait,
                ))
            }
        }
    }

    /// The upstream answered 429 for `key`: refuse it locally (and, with the
    /// Redis backend, on every replica) until `retry_after` — or the
    /// configured default — has passed. Never shortens a longer pause.
    pub fn pause(&self, key: BudgetKey, retry_after: Option<Duration>) {
        let shared = &self.shared;
        let length = retry_after
            .unwrap_or(shared.default_pause)
            .clamp(Duration::from_secs(1), MAX_PAUSE);
        shared.pause_until(key, shared.clock.now() + length);
        shared.counters.pauses.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            pause_secs = length.as_secs(),
            live = key.is_live(),
            "upstream 429: budget key paused"
        );
        if shared.redis.is_some() {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let shared = Arc::clone(shared);
            rt.spawn(async move {
                if let Some(redis) = &shared.redis
                    && let Err(e) = redis.pause(key, length).await
                {
                    shared.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::rate_limit_backend_error();
                    tracing::warn!(error = %e, "could not share the upstream pause through redis");
                }
            });
        }
    }

    pub fn stats(&self) -> LimiterStats {
        let s = &self.shared;
        let c = &s.counters;
        let tracked = lock(&s.tats).len() + lock(&s.paused).len();
        LimiterStats {
            admitted: c.admitted.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            refusals: c.refusals.load(Ordering::Relaxed),
            refused: RefusalCounts {
                budget: c.by_reason[RefusalReason::Budget as usize].load(Ordering::Relaxed),
                caller_quota: c.by_reason[RefusalReason::CallerQuota as usize]
                    .load(Ordering::Relaxed),
                paused: c.by_reason[RefusalReason::Paused as usize].load(Ordering::Relaxed),
                queue_full: c.by_reason[RefusalReason::QueueFull as usize].load(Ordering::Relaxed),
                backend_unavailable: c.by_reason[RefusalReason::BackendUnavailable as usize]
                    .load(Ordering::Relaxed),
            },
            pauses: c.pauses.load(Ordering::Relaxed),
            redis_errors: c.redis_errors.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            tracked_keys: tracked as u64,
        }
    }

    /// Drops idle state now (the background sweep calls this periodically).
    pub fn sweep(&self) {
        self.shared.sweep();
    }
}

impl Shared {
    fn decide_local(
        &self,
        key: BudgetKey,
        budget: &Budget,
        caller: Option<(u64, &Budget)>,
        max_wait: Duration,
    ) -> Verdict {
        let b = Gcra::new(budget);
        let c = caller.map(|(id, q)| (Slot::Caller(key, id), Gcra::new(q)));
        // The clock is read under the lock: a time read before it could be
        // older than one a request that took the lock first already used,
        // and that request's slot would make this one wait (spuriously).
        let mut tats = lock(&self.tats);
        let now_ns = nanos(self.clock.now());
        let decision = tats.decide(
            now_ns,
            (Slot::Budget(key), &b),
            c.as_ref().map(|(slot, g)| (*slot, g)),
            nanos(max_wait),
        );
        match decision {
            Decision::Admit { at } => Verdict::Admit {
                wait: Duration::from_nanos(at.saturating_sub(now_ns)),
            },
            Decision::Refuse {
                earliest,
                by_caller,
            } => Verdict::Refuse {
                earliest: Duration::from_nanos(earliest.saturating_sub(now_ns)),
                by_caller,
            },
        }
    }

    fn paused_for(&self, key: BudgetKey, now: Duration) -> Option<Duration> {
        let until = *lock(&self.paused).get(&key)?;
        let now = nanos(now);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    fn pause_until(&self, key: BudgetKey, until: Duration) {
        let until = nanos(until);
        let mut paused = lock(&self.paused);
        let entry = paused.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn sweep(&self) {
        let now = nanos(self.clock.now());
        let tats = {
            let mut t = lock(&self.tats);
            t.sweep(now);
            t.len()
        };
        let paused = {
            let mut p = lock(&self.paused);
            p.retain(|_, until| *until > now);
            p.len()
        };
        crate::telemetry::rate_limit_tracked_keys(tats + paused);
    }
}

fn refusal(
    reason: RefusalReason,
    retry_after: Duration,
    policy: &Budget,
    remaining: u32,
) -> Refusal {
    Refusal {
        retry_after,
        reason,
        limit: policy.burst,
        remaining,
        reset: retry_after,
        window: Duration::from_secs(policy.window_secs()),
    }
}

/// Holds one place in a key's waiter count; frees it when dropped, including
/// when the waiting request is cancelled.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    key: BudgetKey,
}

impl<'a> WaiterGuard<'a> {
    fn enter(shared: &'a Shared, key: BudgetKey) -> Option<Self> {
        let mut waiters = lock(&shared.waiters);
        let n = waiters.entry(key).or_insert(0);
        if *n >= shared.max_waiters {
            return None;
        }
        *n += 1;
        Some(Self { shared, key })
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = lock(&self.shared.waiters);
        if let Some(n) = waiters.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waiters.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
