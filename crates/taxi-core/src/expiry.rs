//! When a window's partials may already be gone: DynamoDB's TTL deletes an
//! item at any time after its `expires_at` has passed on the wall clock, and
//! a window closed from a partly deleted set of partials would be wrong
//! without a trace. The closer refuses such a window (and alarms) instead.
//!
//! The aggregate function sets `expires_at = max(last_use, written_at) +
//! retention` on every write ([`crate::ingest`]), where `last_use` is the end
//! of the last window reading the pane plus the allowed lateness (event time,
//! epoch seconds) and `written_at` the wall clock of the write. The closer
//! does not see `expires_at` (it reads only the values), so it bounds it from
//! below, per pane, with what it knows:
//!
//! - `last_use >= end of the last window containing the pane` (the lateness
//!   left out only makes the bound lower): enough for live data, whose event
//!   time follows the wall clock;
//! - `written_at >` the last recorded observation of the shard states that
//!   did not list the pane, minus [`CHECKPOINT_LAG_S`]: a batch's partial
//!   writes land before the state save that lists their pane, within one
//!   invocation. The closer records, on its passes, the time it read the
//!   states and every open pane they listed ([`PaneObservation`]), and every
//!   pane of the windows its re-emit markers name: late data for a closed
//!   window is never listed open, but its marker is written with its partials
//!   and outlives them by one more retention, so the closer sees it even after
//!   an outage that long. The bound is what replays of old data rely on.
//!
//! A pane *may have expired* at wall time `t` when `t` is past either bound's
//! `+ retention`, whichever is later, for the pane's earliest possible write.
//! The check uses the pass's deadline as `t`, since the reads come later.

use std::collections::BTreeMap;

use crate::time::{EventTime, WallTime};
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// How long a batch's partial writes can precede the state save listing
/// their pane: one invocation, at most Lambda's longest timeout (900 s).
pub const CHECKPOINT_LAG_S: i64 = 900;

/// What the closer knows about when each open pane was first written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaneObservation {
    /// When the closer last read the shard states and recorded every open pane they listed.
    pub observed_at: Option<WallTime>,
    /// Each recorded pane, with the observation before the one that first
    /// listed it: none of its partials was written more than
    /// [`CHECKPOINT_LAG_S`] before then.
    pub since: BTreeMap<PaneStart, WallTime>,
    /// Panes up to here were dropped from `since` once past their retention:
    /// any of them may have expired.
    pub pruned_through: Option<PaneStart>,
}

impl PaneObservation {
    /// The observation after reading the shard states at `now`, which list
    /// `open` panes. A pane seen for the first time was written after the
    /// previous observation (or, with none recorded yet, after now: the
    /// closer starts observing with the pipeline). Entries of panes whose
    /// windows are closed are dropped once they are past retention.
    pub fn observe(
        &self,
        open: impl IntoIterator<Item = PaneStart>,
        spec: &WindowSpec,
        closed_through: Option<EventTime>,
        now: WallTime,
        retention_s: i64,
    ) -> PaneObservation {
        let before = self.observed_at.unwrap_or(now);
        let mut since = self.since.clone();
        for pane in open {
            if self.pruned_through.is_none_or(|p| pane > p) {
                since.entry(pane).or_insert(before);
            }
        }
        let mut pruned_through = self.pruned_through;
        since.retain(|pane, at| {
            let closed = closed_through.is_some_and(|c| spec.window_end(spec.last_window_containing(*pane)) <= c);
            let expired = at.as_event_time().0 - CHECKPOINT_LAG_S + retention_s < now.as_event_time().0;
            if closed && expired {
                pruned_through = pruned_through.max(Some(*pane));
            }
            !(closed && expired)
        });
        PaneObservation { observed_at: Some(now), since, pruned_through }
    }

    /// The earliest wall time (epoch seconds) at which TTL may delete a
    /// partial of `pane`, or `None` when the closer holds no record of the
    /// pane (no shard listed it: it holds only late data, or none).
    pub fn earliest_expiry(&self, spec: &WindowSpec, pane: PaneStart, retention_s: i64) -> Option<i64> {
        let written_after = match self.since.get(&pane) {
            Some(at) => at.as_event_time().0 - CHECKPOINT_LAG_S,
            None if self.pruned_through.is_some_and(|p| pane <= p) => i64::MIN / 2,
            None => return None,
        };
        let last_use = spec.window_end(spec.last_window_containing(pane)).0;
        Some(last_use.max(written_after) + retention_s)
    }

    /// The first pane of `window` whose partials may have been deleted by
    /// `at`, with the earliest time they may have been (epoch seconds).
    pub fn expired_pane(&self, spec: &WindowSpec, window: WindowStart, retention_s: i64, at: WallTime) -> Option<(PaneStart, i64)> {
        spec.panes_of(window)
            .filter_map(|pane| self.earliest_expiry(spec, pane, retention_s).map(|expiry| (pane, expiry)))
            .find(|(_, expiry)| *expiry < at.as_event_time().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;
    const RETENTION_S: i64 = 48 * 3600;

    fn spec() -> WindowSpec {
        WindowSpec::tumbling(600).unwrap()
    }

    /// A replay of 2015 data: event time far behind the wall clock.
    const OLD_PANE: PaneStart = PaneStart(1_420_848_000);
    const T0: WallTime = WallTime(1_796_000_000_000);

    #[test]
    fn replayed_data_expires_retention_after_its_first_observed_write() {
        let first = PaneObservation::default().observe([], &spec(), None, T0, RETENTION_S);
        // The next observation lists the pane: written after the first one, less the checkpoint lag.
        let seen = first.observe([OLD_PANE], &spec(), None, WallTime(T0.0 + 60_000), RETENTION_S);
        assert_eq!(seen.since.get(&OLD_PANE), Some(&T0));
        let expiry = T0.as_event_time().0 - CHECKPOINT_LAG_S + RETENTION_S;
        assert_eq!(seen.earliest_expiry(&spec(), OLD_PANE, RETENTION_S), Some(expiry));
        let window = WindowStart(OLD_PANE.0);
        // Within retention (the closer stuck for a day): safe to close.
        assert_eq!(seen.expired_pane(&spec(), window, RETENTION_S, WallTime(T0.0 + 24 * HOUR_MS)), None);
        // Stuck past retention: refused, even though later observations keep listing the pane.
        let later = seen.observe([OLD_PANE], &spec(), None, WallTime(T0.0 + 49 * HOUR_MS), RETENTION_S);
        assert_eq!(later.since.get(&OLD_PANE), Some(&T0), "the first sighting counts, not the latest");
        assert_eq!(later.expired_pane(&spec(), window, RETENTION_S, WallTime(T0.0 + 49 * HOUR_MS)), Some((OLD_PANE, expiry)));
    }

    #[test]
    fn live_data_lasts_at_least_retention_past_its_window() {
        // Event time near the wall clock: the event-time part of expires_at decides.
        let pane = PaneStart(T0.as_event_time().0 + 3600);
        let seen = PaneObservation::default().observe([pane], &spec(), None, T0, RETENTION_S);
        let window_end = pane.0 + 600;
        assert_eq!(seen.earliest_expiry(&spec(), pane, RETENTION_S), Some(window_end + RETENTION_S));
        let at = WallTime((window_end + RETENTION_S - 1) * 1000);
        assert_eq!(seen.expired_pane(&spec(), WindowStart(pane.0), RETENTION_S, at), None);
    }

    #[test]
    fn closed_panes_past_retention_are_pruned_and_still_count_as_expired() {
        let seen = PaneObservation::default().observe([OLD_PANE], &spec(), None, T0, RETENTION_S);
        let closed = Some(EventTime(OLD_PANE.0 + 600));
        let kept = seen.observe([], &spec(), closed, WallTime(T0.0 + HOUR_MS), RETENTION_S);
        assert!(kept.since.contains_key(&OLD_PANE), "kept for re-emissions within retention");
        let pruned = kept.observe([], &spec(), closed, WallTime(T0.0 + 50 * HOUR_MS), RETENTION_S);
        assert!(pruned.since.is_empty());
        assert_eq!(pruned.pruned_through, Some(OLD_PANE));
        assert!(pruned.expired_pane(&spec(), WindowStart(OLD_PANE.0), RETENTION_S, WallTime(T0.0 + 50 * HOUR_MS)).is_some());
        // A pane no shard ever listed (late data only) has no record and no verdict.
        assert_eq!(pruned.earliest_expiry(&spec(), PaneStart(OLD_PANE.0 + 6000), RETENTION_S), None);
    }
}
