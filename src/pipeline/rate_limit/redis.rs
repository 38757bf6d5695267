//! Redis backend: the same GCRA as `gcra.rs`, decided by one atomic Lua script
//! on Redis' own clock so that every replica shares one budget.
//!
//! Contract: [`RedisBackend::decide`] runs one `EVALSHA` that reads the pause
//! key, the budget TAT and (optionally) the caller TAT, and either reserves a
//! slot in both (returning the wait) or consumes nothing (returning when the
//! request would conform). Keys carry a PX expiry equal to the time their
//! state stays meaningful, so idle keys vanish by themselves. Every call is
//! bounded by the configured timeout; any Redis error, a timeout or a reply of
//! the wrong shape is a [`BackendError`] and the caller applies its fail mode.
//! Neither the Redis URL nor reply payloads appear in errors.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::Gcra;
use super::{Budget, BudgetKey};

const MICROS_PER_SEC: f64 = 1e6;

// KEYS[1] pause, KEYS[2] budget TAT, KEYS[3] caller TAT (optional).
// ARGV: max_wait, budget interval, budget tolerance, caller interval, caller
// tolerance; all in microseconds of Redis' TIME.
// Reply {code, micros}: 0 admitted after `micros` wait (slot reserved);
// 1 budget / 2 caller quota would need `micros`, nothing consumed;
// 3 paused for `micros` more.
// Integers travel as '%.0f' strings: Lua 5.1's tostring() would print 14
// significant digits and lose microseconds.
const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = redis.call('PTTL', KEYS[1])
if pause > 0 then return {3, pause * 1000} end
local max_wait = tonumber(ARGV[1])
local function base(key)
  local v = redis.call('GET', key)
  if v then return math.max(tonumber(v), now) end
  return now
end
local function commit(key, tat, interval, at)
  local new = math.max(tat, at) + interval
  redis.call('SET', key, string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1)
end
local bt = base(KEYS[2])
local at = math.max(now, bt - tonumber(ARGV[3]))
local ct, cat
if #KEYS >= 3 then
  ct = base(KEYS[3])
  cat = math.max(now, ct - tonumber(ARGV[5]))
  if cat > at then at = cat end
end
if at - now > max_wait then
  if cat and cat - now > max_wait then return {2, at - now} end
  return {1, at - now}
end
commit(KEYS[2], bt, tonumber(ARGV[2]), at)
if ct then commit(KEYS[3], ct, tonumber(ARGV[4]), at) end
return {0, at - now}
";

// KEYS[1] pause, ARGV[1] pause in ms. Keeps the longer of the current and the
// new pause, so a late short Retry-After never shortens a long one.
const PAUSE_SCRIPT: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// What the script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit { wait: Duration },
    Refuse { earliest: Duration, by_caller: bool },
    Paused { remaining: Duration },
}

/// Why Redis could not decide. Carries no URL, key or payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("redis call timed out")]
    Timeout,
    #[error("redis call failed ({0:?})")]
    Redis(redis::ErrorKind),
    #[error("redis script returned an unexpected reply")]
    BadReply,
}

pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    script: redis::Script,
    pause_script: redis::Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Builds a lazily connecting manager: returns at once, the first call
    /// connects, and reconnects happen in the background.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, redis::ErrorKind> {
        let client = redis::Client::open(url).map_err(|e| e.kind())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.kind())?;
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
            pause_script: redis::Script::new(PAUSE_SCRIPT),
            timeout,
        })
    }

    pub(crate) async fn decide(
        &self,
        key: BudgetKey,
        budget: &Budget,
        caller: Option<(u64, &Budget)>,
        max_wait: Duration,
    ) -> Result<Verdict, BackendError> {
        let b = Gcra::with_unit(budget, MICROS_PER_SEC);
        let mut inv = self.script.prepare_invoke();
        inv.key(pause_key(key))
            .key(budget_key(key))
            .arg(micros(max_wait))
            .arg(b.interval)
            .arg(b.tolerance);
        if let Some((caller, quota)) = caller {
            let c = Gcra::with_unit(quota, MICROS_PER_SEC);
            inv.key(caller_key(key, caller))
                .arg(c.interval)
                .arg(c.tolerance);
        }
        let mut conn = self.conn.clone();
        let (code, us): (i64, i64) =
            tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| BackendError::Timeout)?
                .map_err(|e| BackendError::Redis(e.kind()))?;
        let d = Duration::from_micros(u64::try_from(us).map_err(|_| BackendError::BadReply)?);
        match code {
            0 => Ok(Verdict::Admit { wait: d }),
            1 => Ok(Verdict::Refuse {
                earliest: d,
                by_caller: false,
            }),
            2 => Ok(Verdict::Refuse {
                earliest: d,
                by_caller: true,
            }),
            3 => Ok(Verdict::Paused { remaining: d }),
            _ => Err(BackendError::BadReply),
        }
    }

    /// Shares an upstream-429 pause with every replica. Only lengthens: a
    /// shorter pause than the one in place is ignored.
    pub(crate) async fn pause(&self, key: BudgetKey, for_: Duration) -> Result<(), BackendError> {
        let ms = u64::try_from(for_.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let mut inv = self.pause_script.prepare_invoke();
        inv.key(pause_key(key)).arg(ms);
        tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map_err(|_| BackendError::Timeout)?
            .map(|_| ())
            .map_err(|e| BackendError::Redis(e.kind()))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// The `{...}` hash tag keeps a key's budget, caller and pause keys in one
// Redis Cluster slot, which a multi-key script requires.
fn tag(key: BudgetKey) -> String {
    format!(
        "cubegate:rl:{{{:016x}:{}}}",
        key.tenant_hash(),
        if key.is_live() { "live" } else { "test" }
    )
}

fn pause_key(key: BudgetKey) -> String {
    format!("{}:pause", tag(key))
}

fn budget_key(key: BudgetKey) -> String {
    format!("{}:tat", tag(key))
}

fn caller_key(key: BudgetKey, caller: u64) -> String {
    format!("{}:caller:{caller:016x}", tag(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_cluster_hash_tag_and_separate_environments() {
        let live = BudgetKey::new("acme", true);
        let test = BudgetKey::new("acme", false);
        let p = pause_key(live);
        let b = budget_key(live);
        let c = caller_key(live, 7);
        let tag_of = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_owned();
        assert_eq!(tag_of(&p), tag_of(&b));
        assert_eq!(tag_of(&b), tag_of(&c));
        assert_ne!(budget_key(live), budget_key(test));
        assert!(!b.contains("acme"), "tenant names are hashed, not stored");
    }
}
