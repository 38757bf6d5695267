//! The stage's glue: admits a request under its tenant's budget and its
//! caller's quota (waiting up to the caller's `max_wait`), and pauses a key
//! when ComplyCube answers 429 anyway. Whether limiting is on is read from
//! the request's snapshot, so a reload switches it.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{BudgetKey, RateLimiter};
use crate::model::Environment;
use crate::snapshot::{Caller, Snapshot, Tenant};
use crate::state::Shared;

/// Refused after the allowed wait; the headers (`Retry-After`,
/// `RateLimit-Policy`, `RateLimit`) go on the 429.
#[derive(Debug, thiserror::Error)]
#[error("over the tenant budget or the caller quota ({reason})")]
pub struct RateLimited {
    pub reason: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The limiter, unless `[rate_limit] enabled = false` in `snap`: the one
/// place that decides.
fn limiter_for<'a>(shared: &'a Shared, snap: &Snapshot) -> Option<&'a RateLimiter> {
    snap.rate_limit.enabled.then_some(&shared.limiter)
}

/// Returns the time waited, or None when rate limiting is off (not limited,
/// rather than "no wait").
pub async fn admit(
    shared: &Shared,
    snap: &Snapshot,
    caller: &Caller,
    tenant: &Tenant,
) -> Result<Option<Duration>, RateLimited> {
    let Some(limiter) = limiter_for(shared, snap) else {
        return Ok(None);
    };
    let key = BudgetKey::new(&tenant.id, caller.environment == Environment::Live);
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
            Err(RateLimited {
                reason: refusal.reason.as_str(),
                headers: refusal.headers(),
            })
        }
    }
}

/// Charges a refusal to the caller (or, unidentified, the source
/// address): `None` to answer and record it as usual, else the 429 to
/// answer instead and the count of a summary record, when one is due.
pub fn refused(
    shared: &Shared,
    snap: &Snapshot,
    caller: Option<&Caller>,
    peer: Option<std::net::IpAddr>,
    kind: crate::audit::Decision,
) -> Option<(RateLimited, Option<u64>)> {
    use super::refusals::{Verdict, Who};
    limiter_for(shared, snap)?;
    let who = match caller {
        Some(c) => Who::Caller(c.id.clone()),
        None => Who::Peer(peer),
    };
    let rl = &snap.rate_limit;
    let every = Duration::from_secs(rl.refusal_summary_secs);
    match shared.refusals.charge(who, kind, &rl.refusals, every) {
        Verdict::Record => None,
        Verdict::Suppress {
            retry_after,
            summary,
        } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let headers = HeaderValue::from_str(&secs.to_string())
                .map(|v| vec![(http::header::RETRY_AFTER, v)])
                .unwrap_or_default();
            let limited = RateLimited {
                reason: "refusal_budget",
                headers,
            };
            Some((limited, summary))
        }
    }
}

/// ComplyCube said 429 anyway: pause that key so we stop hammering it
/// (counted, but nothing paused, while rate limiting is off).
pub fn upstream_429(
    shared: &Shared,
    snap: &Snapshot,
    caller: &Caller,
    tenant: &Tenant,
    headers: &HeaderMap,
) {
    crate::telemetry::upstream_429(&tenant.id);
    let Some(limiter) = limiter_for(shared, snap) else {
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
