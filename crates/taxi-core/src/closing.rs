//! What the closer may close: the global watermark over the live shards, the
//! windows it has passed, and the merge of their partials.

use std::collections::{BTreeMap, BTreeSet};

use crate::aggregate::{MetricKey, PartialValue};
use crate::seq::SeqNum;
use crate::shard::{ShardId, ShardState, StreamShard};
use crate::time::{EventTime, WallTime};
use crate::watermark::WatermarkMode;
use crate::window::{PaneStart, WindowSpec, WindowStart};

/// How one shard counts towards the global watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardVerdict {
    /// Reporting: its watermark counts (`None` holds every window back).
    Live { watermark: Option<EventTime> },
    /// No state yet (a new shard, or a child after a reshard): holds back
    /// every window beyond its parents' watermarks (all of them for a shard
    /// without parents) until it reports or, in bounded mode, stays silent
    /// past the idle timeout.
    Awaiting { since: WallTime, inherited: Option<EventTime> },
    /// No report for longer than the idle timeout: left out; when it comes
    /// back, what it brings for closed windows is late data.
    Idle,
    /// A shard without state that stayed silent past the idle timeout.
    NeverReported,
    /// Bounded mode, the whole stream quiet: idle (or never reported), and
    /// Kinesis holds no record after the last one it applied, so it is caught
    /// up, not stuck (see [`quiet_advance`]). Not excluded: whatever it brings
    /// later arrived after the windows closed, and is late data.
    Quiet,
    /// Closed by a reshard, and its children have started: Kinesis hands a
    /// parent to the function to its end before any child, so it is drained.
    Retired,
}

impl ShardVerdict {
    pub fn name(&self) -> &'static str {
        match self {
            ShardVerdict::Live { .. } => "live",
            ShardVerdict::Awaiting { .. } => "awaiting",
            ShardVerdict::Idle => "idle",
            ShardVerdict::NeverReported => "never_reported",
            ShardVerdict::Quiet => "quiet",
            ShardVerdict::Retired => "retired",
        }
    }
}

/// The outcome of the watermark decision table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalWatermark {
    /// Every window ending at or before this may close; `None`: none may.
    pub watermark: Option<EventTime>,
    pub verdicts: BTreeMap<ShardId, ShardVerdict>,
    /// When each shard without state was first seen, to keep for next time.
    pub first_seen: BTreeMap<ShardId, WallTime>,
    /// Every shard was idle, so the ones that fell silent last decided.
    pub all_idle: bool,
}

/// When a shard that stops reporting may be left out of the global watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idleness {
    /// Producer mode: the producer writes watermark events to every open
    /// shard, so a shard that stops reporting is stuck (throttled, failing,
    /// behind), never idle: it holds every window back until it reports.
    Never,
    /// Bounded mode: a shard silent for this long is idle and left out; what
    /// it brings when it comes back is late data. With `advance_when_quiet`,
    /// a stream whose every shard is idle and caught up lets the watermark
    /// advance with the wall clock ([`quiet_advance`]).
    After { timeout_ms: i64, advance_when_quiet: bool },
}

impl Idleness {
    /// The rule that fits the aggregate function's watermark mode.
    pub fn for_mode(mode: WatermarkMode, idle_timeout_ms: i64, advance_when_quiet: bool) -> Idleness {
        match mode {
            WatermarkMode::Producer => Idleness::Never,
            WatermarkMode::Bounded { .. } => Idleness::After { timeout_ms: idle_timeout_ms, advance_when_quiet },
        }
    }

    fn silent_too_long(self, since: WallTime, now: WallTime) -> bool {
        match self {
            Idleness::Never => false,
            Idleness::After { timeout_ms, .. } => now.0 - since.0 > timeout_ms,
        }
    }
}

/// The minimum watermark over the live shards of the stream.
///
/// A shard without state whose parents are not drained yet (no child of
/// theirs has started) is awaited, and its idle timeout starts only once
/// they are: under a backlog a parent can take longer than any timeout.
///
/// When every shard is idle (bounded mode: the end of a replay, a quiet night), idleness
/// is judged among the shards themselves: those that fell silent within the
/// idle timeout of the last one decide, so the final watermark events close
/// the last windows while a shard silent for hours does not drag anything back.
pub fn global_watermark(
    shards: &[StreamShard],
    states: &BTreeMap<ShardId, ShardState>,
    first_seen: &BTreeMap<ShardId, WallTime>,
    now: WallTime,
    idleness: Idleness,
) -> GlobalWatermark {
    let child_started = |parent: &ShardId| shards.iter().any(|s| s.parents().any(|p| p == parent) && states.contains_key(&s.id));
    let parents_drained = |shard: &StreamShard| shard.parents().all(|p| child_started(p) || !shards.iter().any(|s| s.id == *p));
    // A child that has not reported holds no trip below its parents' watermarks: every
    // trip before a watermark was written before it, and the parent took every record
    // until the split (a watermark written after the split reaches the child too, which
    // would then have state). So it holds windows back only beyond them.
    let inherited = |shard: &StreamShard| -> Option<EventTime> {
        let mut parents = shard.parents().peekable();
        parents.peek()?;
        minimum(parents.map(|p| states.get(p).and_then(|s| s.watermark.watermark)))
    };
    let mut verdicts = BTreeMap::new();
    let mut seen = BTreeMap::new();
    for shard in shards {
        let verdict = match states.get(&shard.id) {
            _ if shard.closed && child_started(&shard.id) => ShardVerdict::Retired,
            Some(state) if state.updated_at.is_none_or(|t| idleness.silent_too_long(t, now)) => ShardVerdict::Idle,
            Some(state) => ShardVerdict::Live { watermark: state.watermark.watermark },
            None if !parents_drained(shard) => ShardVerdict::Awaiting { since: now, inherited: inherited(shard) },
            None => {
                let since = first_seen.get(&shard.id).copied().unwrap_or(now);
                seen.insert(shard.id.clone(), since);
                if idleness.silent_too_long(since, now) {
                    ShardVerdict::NeverReported
                } else {
                    ShardVerdict::Awaiting { since, inherited: inherited(shard) }
                }
            }
        };
        verdicts.insert(shard.id.clone(), verdict);
    }

    let deciding: Vec<Option<EventTime>> = verdicts
        .values()
        .filter_map(|v| match v {
            ShardVerdict::Live { watermark } => Some(*watermark),
            ShardVerdict::Awaiting { inherited, .. } => Some(*inherited),
            _ => None,
        })
        .collect();
    let all_idle = deciding.is_empty() && verdicts.values().any(|v| *v == ShardVerdict::Idle);
    let watermark = if all_idle {
        let idle: Vec<&ShardState> = verdicts.iter().filter(|(_, v)| **v == ShardVerdict::Idle).map(|(id, _)| &states[id]).collect();
        let last_report = idle.iter().filter_map(|s| s.updated_at).max();
        let fell_silent_last = idle.iter().filter(|s| match (s.updated_at, last_report) {
            (Some(t), Some(last)) => !idleness.silent_too_long(t, last),
            _ => false,
        });
        minimum(fell_silent_last.map(|s| s.watermark.watermark))
    } else {
        minimum(deciding.into_iter())
    };
    GlobalWatermark { watermark, verdicts, first_seen: seen, all_idle }
}

/// What the quiet rule would let the global watermark reach, and the shards
/// that must be caught up for it (each with the last sequence number it applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuietAdvance {
    pub watermark: EventTime,
    pub shards: Vec<(ShardId, Option<SeqNum>)>,
}

/// Bounded mode, with `advance_when_quiet`: a stream that goes quiet without
/// a final watermark. Once every shard has been silent past the idle timeout
/// (all idle or never reported, none live or awaited), the wall clock stands
/// in for the event time that no trip brings any more: the watermark is the
/// most advanced shard's (its event time seen less the bound) plus the wall
/// time since the last report of any shard. In a live stream that is the
/// bounded rule continued (a trip within the bound of the clock stays on
/// time); in a replay it closes the last windows a bounded time after traffic
/// stops. It applies only if every one of `shards` is caught up (no record in
/// Kinesis after its `applied_seq`), which the closer asks Kinesis; a shard
/// with unread or unapplied records is stuck, and holds it back.
pub fn quiet_advance(
    global: &GlobalWatermark,
    states: &BTreeMap<ShardId, ShardState>,
    now: WallTime,
    idleness: Idleness,
) -> Option<QuietAdvance> {
    if !matches!(idleness, Idleness::After { advance_when_quiet: true, .. }) || !global.all_idle {
        return None;
    }
    let reported = || global.verdicts.keys().filter_map(|id| states.get(id));
    let base = reported().filter_map(|s| s.watermark.watermark).max()?;
    let last_report = reported().filter_map(|s| s.updated_at).max()?;
    let shards = global
        .verdicts
        .iter()
        .filter(|(_, v)| matches!(v, ShardVerdict::Idle | ShardVerdict::NeverReported))
        .map(|(id, _)| (id.clone(), states.get(id).and_then(|s| s.applied_seq.clone())))
        .collect();
    Some(QuietAdvance { watermark: base.plus_seconds((now.0 - last_report.0).max(0) / 1000), shards })
}

impl GlobalWatermark {
    /// The quiet rule applied: every shard it names was found caught up.
    pub fn with_quiet_advance(mut self, quiet: &QuietAdvance) -> GlobalWatermark {
        self.watermark = self.watermark.max(Some(quiet.watermark));
        for (shard, _) in &quiet.shards {
            self.verdicts.insert(shard.clone(), ShardVerdict::Quiet);
        }
        self
    }
}

/// The shards left out of the global watermark for silence (bounded mode),
/// each with the `closed_through` from which windows closed without it: kept
/// until the shard reports again with a watermark past `closed_through` (it
/// has caught up, so what it brings below that is late by its own rule).
/// Until then its trips for those windows are emitted again whatever the
/// allowed lateness ([`crate::watermark::CloserProgress::excluded_since`]),
/// since a silent shard may have been stuck with a backlog rather than idle.
pub fn exclusions(
    global: &GlobalWatermark,
    previous: &BTreeMap<ShardId, EventTime>,
    closed_through: Option<EventTime>,
) -> BTreeMap<ShardId, EventTime> {
    let since = closed_through.unwrap_or(EventTime(i64::MIN));
    global
        .verdicts
        .iter()
        .filter_map(|(shard, verdict)| {
            let kept = previous.get(shard).copied();
            let entry = match verdict {
                ShardVerdict::Idle | ShardVerdict::NeverReported => Some(kept.unwrap_or(since)),
                ShardVerdict::Live { watermark } if watermark.is_some_and(|w| w >= since) => None,
                ShardVerdict::Live { .. } | ShardVerdict::Awaiting { .. } => kept,
                ShardVerdict::Retired | ShardVerdict::Quiet => None,
            };
            entry.map(|t| (shard.clone(), t))
        })
        .collect()
}

/// The minimum, where any `None` (a shard that has promised nothing) wins, and
/// no shard at all means no watermark.
fn minimum(watermarks: impl Iterator<Item = Option<EventTime>>) -> Option<EventTime> {
    let mut result: Option<Option<EventTime>> = None;
    for w in watermarks {
        result = Some(match (result, w) {
            (None, w) => w,
            (Some(None), _) | (Some(_), None) => None,
            (Some(Some(a)), Some(b)) => Some(a.min(b)),
        });
    }
    result.flatten()
}

/// Windows that hold data (contain one of `panes`) and that the watermark has
/// passed since `closed_through`, oldest first.
pub fn windows_to_close(
    spec: &WindowSpec,
    panes: impl IntoIterator<Item = PaneStart>,
    closed_through: Option<EventTime>,
    watermark: EventTime,
) -> Vec<WindowStart> {
    let windows: BTreeSet<WindowStart> = panes
        .into_iter()
        .flat_map(|pane| spec.windows_containing(pane).collect::<Vec<_>>())
        .filter(|w| {
            let end = spec.window_end(*w);
            end <= watermark && closed_through.is_none_or(|c| end > c)
        })
        .collect();
    windows.into_iter().collect()
}

/// The end of the last window the watermark has passed: once every window
/// with data up to there is closed, `closed_through` may move here.
pub fn closable_through(spec: &WindowSpec, watermark: EventTime) -> EventTime {
    EventTime(watermark.0.div_euclid(spec.slide_s()) * spec.slide_s())
}

/// Partials of one window (any panes, any shards), merged per key.
pub fn merge(partials: impl IntoIterator<Item = (MetricKey, PartialValue)>) -> BTreeMap<MetricKey, PartialValue> {
    let mut merged: BTreeMap<MetricKey, PartialValue> = BTreeMap::new();
    for (key, value) in partials {
        merged.entry(key).or_default().add(value);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{Airport, Cell};
    use crate::watermark::ShardWatermark;

    const TIMEOUT: i64 = 60_000;
    const NOW: WallTime = WallTime(1_000_000);
    const QUIET: Idleness = Idleness::After { timeout_ms: TIMEOUT, advance_when_quiet: true };

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> StreamShard {
        StreamShard {
            id: ShardId(id.into()),
            parent: parent.map(|p| ShardId(p.into())),
            adjacent_parent: None,
            starting_hash_key: "0".into(),
            closed,
        }
    }

    fn state(watermark: Option<i64>, reported_ms_ago: i64) -> ShardState {
        ShardState {
            watermark: ShardWatermark { watermark: watermark.map(EventTime), ..Default::default() },
            updated_at: Some(WallTime(NOW.0 - reported_ms_ago)),
            ..Default::default()
        }
    }

    fn decide(shards: &[StreamShard], states: &[(&str, ShardState)], first_seen: &[(&str, i64)]) -> GlobalWatermark {
        let states = states.iter().map(|(id, s)| (ShardId(id.to_string()), s.clone())).collect();
        let first_seen = first_seen.iter().map(|(id, t)| (ShardId(id.to_string()), WallTime(*t))).collect();
        global_watermark(shards, &states, &first_seen, NOW, QUIET)
    }

    fn verdict(g: &GlobalWatermark, id: &str) -> ShardVerdict {
        g.verdicts[&ShardId(id.into())].clone()
    }

    #[test]
    fn minimum_over_live_shards() {
        let shards = [shard("a", None, false), shard("b", None, false)];
        let g = decide(&shards, &[("a", state(Some(500), 0)), ("b", state(Some(300), 1000))], &[]);
        assert_eq!(g.watermark, Some(EventTime(300)));
        assert_eq!(verdict(&g, "a"), ShardVerdict::Live { watermark: Some(EventTime(500)) });
    }

    #[test]
    fn a_live_shard_without_a_watermark_holds_everything_back() {
        let shards = [shard("a", None, false), shard("b", None, false)];
        let g = decide(&shards, &[("a", state(Some(500), 0)), ("b", state(None, 0))], &[]);
        assert_eq!(g.watermark, None);
    }

    #[test]
    fn idle_shard_is_left_out() {
        let shards = [shard("a", None, false), shard("b", None, false)];
        let g = decide(&shards, &[("a", state(Some(500), 0)), ("b", state(Some(100), TIMEOUT + 1))], &[]);
        assert_eq!(verdict(&g, "b"), ShardVerdict::Idle);
        assert_eq!(g.watermark, Some(EventTime(500)));
        assert!(!g.all_idle);
    }

    #[test]
    fn in_producer_mode_a_silent_shard_is_stuck_not_idle() {
        let shards = [shard("a", None, false), shard("b", None, false), shard("new", None, false)];
        let states = [("a", state(Some(500), 0)), ("b", state(Some(100), 100 * TIMEOUT))];
        let states: BTreeMap<ShardId, ShardState> = states.iter().map(|(id, s)| (ShardId(id.to_string()), s.clone())).collect();
        let first_seen = [(ShardId("new".into()), WallTime(NOW.0 - 100 * TIMEOUT))].into();
        let g = global_watermark(&shards, &states, &first_seen, NOW, Idleness::for_mode(WatermarkMode::Producer, TIMEOUT, true));
        assert_eq!(verdict(&g, "b"), ShardVerdict::Live { watermark: Some(EventTime(100)) }, "its backlog holds windows back");
        assert!(matches!(verdict(&g, "new"), ShardVerdict::Awaiting { .. }), "a shard that never reported is awaited");
        assert_eq!(g.watermark, None);
    }

    #[test]
    fn an_idle_shard_stays_excluded_until_it_has_caught_up() {
        let shards = [shard("a", None, false), shard("b", None, false)];
        let silent = decide(&shards, &[("a", state(Some(5000), 0)), ("b", state(Some(100), TIMEOUT + 1))], &[]);
        let excluded = exclusions(&silent, &BTreeMap::new(), Some(EventTime(1200)));
        assert_eq!(excluded, [(ShardId("b".into()), EventTime(1200))].into());
        // Still behind when it reports again (a backlog): still excluded, from the same point.
        let behind = decide(&shards, &[("a", state(Some(5000), 0)), ("b", state(Some(900), 0))], &[]);
        assert_eq!(exclusions(&behind, &excluded, Some(EventTime(3000))), excluded);
        // Caught up: what it brings from now on is judged like any shard's.
        let caught_up = decide(&shards, &[("a", state(Some(5000), 0)), ("b", state(Some(3000), 0))], &[]);
        assert!(exclusions(&caught_up, &excluded, Some(EventTime(3000))).is_empty());
    }

    #[test]
    fn new_shard_holds_back_until_it_reports_or_times_out() {
        let shards = [shard("a", None, false), shard("new", None, false)];
        let g = decide(&shards, &[("a", state(Some(500), 0))], &[]);
        assert_eq!(verdict(&g, "new"), ShardVerdict::Awaiting { since: NOW, inherited: None });
        assert_eq!(g.watermark, None);
        assert_eq!(g.first_seen.get(&ShardId("new".into())), Some(&NOW), "first sighting is remembered");

        let g = decide(&shards, &[("a", state(Some(500), 0))], &[("new", NOW.0 - TIMEOUT - 1)]);
        assert_eq!(verdict(&g, "new"), ShardVerdict::NeverReported);
        assert_eq!(g.watermark, Some(EventTime(500)));
    }

    #[test]
    fn closed_parent_counts_until_its_children_start() {
        let shards = [shard("p", None, true), shard("c1", Some("p"), false), shard("c2", Some("p"), false)];
        // Children have no state yet: the parent still counts, children hold back
        // everything beyond it (they took no record before its last watermark).
        let g = decide(&shards, &[("p", state(Some(400), 0))], &[]);
        assert_eq!(verdict(&g, "p"), ShardVerdict::Live { watermark: Some(EventTime(400)) });
        assert_eq!(g.watermark, Some(EventTime(400)));
        assert_eq!(decide(&shards, &[("p", state(None, 0))], &[]).watermark, None);
        // However long the parent takes to drain (a backlog), its children wait:
        // their idle timeout has not started.
        let old = NOW.0 - TIMEOUT - 1;
        let g = decide(&shards, &[("p", state(Some(400), 0))], &[("c1", old), ("c2", old)]);
        assert_eq!(verdict(&g, "c2"), ShardVerdict::Awaiting { since: NOW, inherited: Some(EventTime(400)) });
        assert_eq!(g.watermark, Some(EventTime(400)));
        assert!(g.first_seen.is_empty(), "no timeout starts before the parent is drained");
        // One child started: the parent is drained and leaves; the other child still
        // holds back, and its timeout starts now.
        let g = decide(&shards, &[("p", state(Some(400), 0)), ("c1", state(Some(900), 0))], &[]);
        assert_eq!(verdict(&g, "p"), ShardVerdict::Retired);
        assert_eq!(g.watermark, Some(EventTime(400)));
        assert_eq!(g.first_seen.get(&ShardId("c2".into())), Some(&NOW));
        let g = decide(&shards, &[("p", state(Some(400), 0)), ("c1", state(Some(900), 0))], &[("c2", old)]);
        assert_eq!(verdict(&g, "c2"), ShardVerdict::NeverReported);
        assert_eq!(g.watermark, Some(EventTime(900)));
        let g = decide(&shards, &[("p", state(Some(400), 0)), ("c1", state(Some(900), 0)), ("c2", state(Some(700), 0))], &[]);
        assert_eq!(g.watermark, Some(EventTime(700)));
    }

    #[test]
    fn when_all_are_idle_the_last_to_fall_silent_decide() {
        let shards = [shard("a", None, false), shard("b", None, false), shard("stale", None, false)];
        let g = decide(
            &shards,
            &[("a", state(Some(900), TIMEOUT + 10)), ("b", state(Some(800), TIMEOUT + 5_000)), ("stale", state(Some(100), 10 * TIMEOUT))],
            &[],
        );
        assert!(g.all_idle);
        assert_eq!(g.watermark, Some(EventTime(800)), "the stale shard does not drag it back");
        assert_eq!(decide(&[], &[], &[]).watermark, None, "no shard, no watermark");
    }

    #[test]
    fn a_quiet_stream_advances_with_the_wall_clock_from_the_most_advanced_shard() {
        let shards = [shard("a", None, false), shard("b", None, false), shard("new", None, false)];
        let quiet_states = || {
            let mut a = state(Some(900), TIMEOUT + 10_000);
            a.applied_seq = Some(SeqNum::parse("12").unwrap());
            [("a", a), ("b", state(Some(800), TIMEOUT + 90_000))]
        };
        let g = decide(&shards, &quiet_states(), &[("new", NOW.0 - TIMEOUT - 1)]);
        assert!(g.all_idle);
        let states: BTreeMap<ShardId, ShardState> = quiet_states().into_iter().map(|(id, s)| (ShardId(id.into()), s)).collect();
        let quiet = quiet_advance(&g, &states, NOW, QUIET).expect("every shard silent past the timeout");
        // From a's 900, the latest report 70 s ago: 900 + 70.
        assert_eq!(quiet.watermark, EventTime(970));
        let to_check: Vec<(&str, Option<String>)> =
            quiet.shards.iter().map(|(id, seq)| (id.as_str(), seq.as_ref().map(|s| s.to_string()))).collect();
        assert_eq!(to_check, vec![("a", Some("12".into())), ("b", None), ("new", None)], "every idle or unreported shard");
        let g = g.with_quiet_advance(&quiet);
        assert_eq!(g.watermark, Some(EventTime(970)));
        assert_eq!(verdict(&g, "b"), ShardVerdict::Quiet);
        assert!(exclusions(&g, &[(ShardId("b".into()), EventTime(0))].into(), Some(EventTime(600))).is_empty(), "caught up: not excluded");

        // Off, not all silent yet, or no shard with a watermark: no advance.
        let off = Idleness::After { timeout_ms: TIMEOUT, advance_when_quiet: false };
        assert_eq!(quiet_advance(&decide(&shards, &quiet_states(), &[("new", 0)]), &states, NOW, off), None);
        let live = decide(&shards, &[("a", state(Some(900), 0)), ("b", state(Some(800), TIMEOUT + 1))], &[("new", 0)]);
        assert_eq!(quiet_advance(&live, &states, NOW, QUIET), None);
        let awaiting = decide(&shards, &quiet_states(), &[]);
        assert_eq!(quiet_advance(&awaiting, &states, NOW, QUIET), None, "a shard first seen now is awaited");
        let none = decide(&shards, &[("a", state(None, TIMEOUT + 1))], &[("new", 0)]);
        assert_eq!(quiet_advance(&none, &[(ShardId("a".into()), state(None, TIMEOUT + 1))].into(), NOW, QUIET), None);
        assert_eq!(quiet_advance(&decide(&shards, &quiet_states(), &[("new", 0)]), &states, NOW, Idleness::Never), None);
    }

    #[test]
    fn windows_to_close_are_the_passed_windows_with_data() {
        let spec = WindowSpec::tumbling(600).unwrap();
        let panes = [PaneStart(0), PaneStart(600), PaneStart(1800), PaneStart(2400)];
        assert_eq!(windows_to_close(&spec, panes, None, EventTime(2400)), vec![WindowStart(0), WindowStart(600), WindowStart(1800)]);
        assert_eq!(windows_to_close(&spec, panes, Some(EventTime(1200)), EventTime(2400)), vec![WindowStart(1800)]);
        assert_eq!(windows_to_close(&spec, panes, Some(EventTime(1200)), EventTime(2399)), vec![]);
        assert_eq!(closable_through(&spec, EventTime(2399)), EventTime(1800));

        let sliding = WindowSpec::new(1200, 600).unwrap();
        assert_eq!(windows_to_close(&sliding, [PaneStart(600)], None, EventTime(3000)), vec![WindowStart(0), WindowStart(600)]);
        assert_eq!(windows_to_close(&sliding, [PaneStart(600)], Some(EventTime(1200)), EventTime(3000)), vec![WindowStart(600)]);
    }

    #[test]
    fn merging_adds_exactly() {
        let cell = Cell::parse("dr5ru7").unwrap();
        let merged = merge([
            (MetricKey::Pickups(cell), PartialValue { count: 2, sum_s: 100 }),
            (MetricKey::Airport(Airport::Jfk), PartialValue { count: 1, sum_s: 1800 }),
            (MetricKey::Pickups(cell), PartialValue { count: 3, sum_s: 50 }),
        ]);
        assert_eq!(merged[&MetricKey::Pickups(cell)], PartialValue { count: 5, sum_s: 150 });
        assert_eq!(merged.len(), 2);
    }
}
