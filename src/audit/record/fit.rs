//! The record size bound: [`AuditEvent::fit`] cuts an event so that its
//! line (envelope included) stays within a byte budget, whatever the
//! request held.
//!
//! The cut is deterministic, and the result is an ordinary record, so the
//! chain and `verify` see nothing special: the writer links the line it
//! wrote. Order of what goes first: field pointers from the end, then
//! stripped pointers, then field HMACs, then query parameter names, then
//! resource ids (last, because they are what `audit query` joins on), and
//! `truncated: true` says a list was cut.

use super::{AuditEvent, write_event};

/// The most the parts of a line outside the event can take: `v`, `seq`
/// (20 digits), `time`, `instance` (64 chars), `prev` (64 hex) and the
/// punctuation around them.
pub const ENVELOPE_BYTES: usize = 240;

/// The bytes the event's fields add to a line.
pub fn event_len(ev: &AuditEvent) -> usize {
    let mut buf = Vec::with_capacity(512);
    write_event(&mut buf, ev);
    buf.len()
}

/// An upper bound of [`event_len`] without writing anything: the
/// fixed-size parts at their longest, plus every list entry. Most records
/// are far below the bound, and this keeps them from being written twice.
pub fn event_len_bound(ev: &AuditEvent) -> usize {
    const FIXED: usize = 1100;
    let list = |v: &mut dyn Iterator<Item = usize>| v.sum::<usize>();
    FIXED
        + list(&mut ev.fields.iter().map(|p| entry(p.as_str())))
        + list(&mut ev.stripped.iter().map(|p| entry(p.as_str())))
        + list(&mut ev.query_params.iter().map(|p| entry(p.as_str())))
        + list(&mut ev.field_hmacs.keys().map(|p| entry(p.as_str()) + 67))
        + list(
            &mut ev
                .resource_ids
                .iter()
                .map(|(k, v)| entry(k.as_str()) + v.as_str().len() + 3),
        )
}

/// What one list entry adds to a line at most: the text, its quotes and a
/// comma (a map entry also its value and colon).
fn entry(s: &str) -> usize {
    s.len() + 3
}

impl AuditEvent {
    /// Cuts the event so that a line holding it is at most `max_line`
    /// bytes. Returns whether anything was cut. The event's identity
    /// (kind, ids, caller, operation, decision, status) is never cut.
    pub fn fit(&mut self, max_line: usize) -> bool {
        let budget = max_line.saturating_sub(ENVELOPE_BYTES);
        if event_len_bound(self) <= budget {
            return false;
        }
        let mut size = event_len(self);
        if size <= budget {
            return false;
        }
        if !self.truncated {
            self.truncated = true;
            if self.fields_total.is_none() {
                self.fields_total = Some(self.fields.len() as u64);
            }
            size = event_len(self);
        }
        // Each pass removes by an estimate (an entry's exact cost depends on
        // whether a comma precedes it), then measures again.
        while size > budget {
            let before = size;
            self.shed(size - budget);
            size = event_len(self);
            if size >= before {
                break;
            }
        }
        true
    }

    /// Removes entries worth at least `excess` bytes, in the cut order.
    fn shed(&mut self, mut excess: usize) {
        let mut take = |cost: usize| {
            excess = excess.saturating_sub(cost);
            excess > 0
        };
        while let Some(p) = self.fields.pop() {
            if !take(entry(p.as_str())) {
                return;
            }
        }
        while let Some(p) = self.stripped.pop() {
            if !take(entry(p.as_str())) {
                return;
            }
        }
        while let Some((k, v)) = self.field_hmacs.pop_last() {
            if !take(entry(k.as_str()) + v.as_str().len() + 3) {
                return;
            }
        }
        while let Some(q) = self.query_params.pop() {
            if !take(entry(q.as_str())) {
                return;
            }
        }
        while let Some((k, v)) = self.resource_ids.pop_last() {
            if !take(entry(k.as_str()) + v.as_str().len() + 3) {
                return;
            }
        }
    }
}
