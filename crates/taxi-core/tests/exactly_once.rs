//! Exactly-once effect under Lambda's at-least-once delivery.
//!
//! Random trip streams over several shards are delivered the way a Kinesis
//! event source mapping may deliver them: in random batch sizes, with
//! duplicated deliveries of already-applied records, retries from the record
//! the function reports, transient store failures, and the function dying
//! before any store call or while waiting for its answer (the call landed).
//! The store must end exactly as after one clean pass.

use std::collections::BTreeMap;

use futures::executor::block_on;
use proptest::prelude::*;
use taxi_core::aggregate::MetricKey;
use taxi_core::event::{watermark_event_json, TripEvent};
use taxi_core::ingest::{Aggregator, IngestSettings, InputRecord, MAX_OPEN_PANES};
use taxi_core::seq::SeqNum;
use taxi_core::shard::{PaneLog, ShardId, ShardState};
use taxi_core::testing::{FaultyStore, MemoryStore, MemoryTables};
use taxi_core::time::{EventTime, WallTime};
use taxi_core::watermark::{CloserProgress, WatermarkMode};
use taxi_core::window::WindowSpec;

/// 2015-01-10T00:00:00Z
const BASE: i64 = 1_420_848_000;
/// The function's wall clock: a day after the data.
const NOW: WallTime = WallTime((BASE + 86_400) * 1000);

/// Pickup points (a few cells, so partials collect records across batches).
const PICKUPS: [(f64, f64); 4] = [(40.7580, -73.9855), (40.7527, -73.9772), (40.7306, -73.9866), (40.6413, -73.7781)];
/// Dropoff points: midtown, JFK, LGA, and (0, 0) which is outside the city.
const DROPOFFS: [(f64, f64); 4] = [(40.7614, -73.9776), (40.6441, -73.7822), (40.7729, -73.8702), (0.0, 0.0)];
const MALFORMED: [&[u8]; 5] = [b"", b"{\"type\":\"trip\",\"pickup_lat\"", b"\xff\xfe", b"{\"type\":\"fare\"}", b"{\"type\":\"trip\"}"];

#[derive(Clone, Debug)]
enum Spec {
    Trip { pickup: usize, dropoff: usize, dropoff_offset_s: i64, duration_s: i64 },
    Watermark { offset_s: i64 },
    Malformed(usize),
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        8 => (0..PICKUPS.len(), 0..DROPOFFS.len(), 0i64..7200, prop_oneof![9 => 60i64..3000, 1 => -100i64..20_000])
            .prop_map(|(pickup, dropoff, dropoff_offset_s, duration_s)| Spec::Trip { pickup, dropoff, dropoff_offset_s, duration_s }),
        1 => (0i64..7200).prop_map(|offset_s| Spec::Watermark { offset_s }),
        1 => (0..MALFORMED.len()).prop_map(Spec::Malformed),
    ]
}

fn encode(spec: &Spec, trip_id: u64) -> Vec<u8> {
    let time = |t: i64| EventTime(t).to_rfc3339();
    match *spec {
        Spec::Trip { pickup, dropoff, dropoff_offset_s, duration_s } => {
            let dropoff_t = BASE + dropoff_offset_s;
            TripEvent {
                kind: "trip".into(),
                trip_id,
                pickup_datetime: time(dropoff_t - duration_s),
                dropoff_datetime: time(dropoff_t),
                pickup_lat: PICKUPS[pickup].0,
                pickup_lon: PICKUPS[pickup].1,
                dropoff_lat: DROPOFFS[dropoff].0,
                dropoff_lon: DROPOFFS[dropoff].1,
                passenger_count: Some(1),
                trip_distance: None,
                fare_amount: None,
                total_amount: None,
            }
            .to_json()
        }
        Spec::Watermark { offset_s } => watermark_event_json(EventTime(BASE + offset_s)),
        Spec::Malformed(i) => MALFORMED[i].to_vec(),
    }
}

/// Kinesis-like sequence numbers: long, increasing, with gaps.
fn records(specs: &[Spec], gaps: &[u64]) -> Vec<InputRecord> {
    let mut n: u128 = 49_545_115_243_490_985_018_280_067_714_973_144_582;
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            n += 1 + u128::from(gaps[i % gaps.len()]);
            InputRecord { seq: SeqNum::parse(&format!("{n}{:015}", i)).unwrap(), data: encode(spec, i as u64) }
        })
        .collect()
}

/// Random choices for the delivery emulator, consumed in turn.
struct Choices<'a> {
    values: &'a [u32],
    next: usize,
}

impl Choices<'_> {
    fn below(&mut self, n: usize) -> usize {
        let v = self.values[self.next % self.values.len()];
        self.next += 1;
        v as usize % n.max(1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    CrashAt(usize),
    CrashAfter(usize),
    FailOperation(usize),
}

/// Delivers every shard's records the way an at-least-once event source may.
fn deliver_chaotically(
    aggregator: &Aggregator<FaultyStore<MemoryStore>>,
    shards: &[(ShardId, Vec<InputRecord>)],
    choices: &mut Choices,
    max_batch: usize,
) {
    let store = aggregator.store();
    let mut checkpoints = vec![0usize; shards.len()];
    for _ in 0..400 {
        let pending: Vec<usize> = (0..shards.len()).filter(|&i| checkpoints[i] < shards[i].1.len()).collect();
        if pending.is_empty() {
            return;
        }
        let s = pending[choices.below(pending.len())];
        let (shard, records) = &shards[s];
        // Mostly from the checkpoint; sometimes a duplicate delivery from earlier.
        let start = if choices.below(4) == 0 { choices.below(checkpoints[s] + 1) } else { checkpoints[s] };
        let end = (start + 1 + choices.below(max_batch)).min(records.len());
        let fault = match choices.below(7) {
            0 | 1 => Fault::CrashAt(choices.below(8)),
            2 => Fault::CrashAfter(choices.below(8)),
            3 => Fault::FailOperation(choices.below(8)),
            _ => Fault::None,
        };
        match fault {
            Fault::CrashAt(n) => store.crash_at(n),
            Fault::CrashAfter(n) => store.crash_after(n),
            Fault::FailOperation(n) => store.fail_operation(n),
            Fault::None => {}
        }
        let report = block_on(aggregator.process_batch(shard, &records[start..end], NOW));
        if store.revive() {
            continue; // The function died: no answer, the same records come again.
        }
        checkpoints[s] = match report.retry_from {
            Some(seq) => {
                let at = records.iter().position(|r| r.seq == seq).expect("retry_from names a record of the batch");
                assert!((start..end).contains(&at), "retry from {at} outside the batch {start}..{end}");
                at
            }
            None => checkpoints[s].max(end),
        };
    }
    // Let the rest through without faults, as the event source eventually does.
    for (s, (shard, records)) in shards.iter().enumerate() {
        while checkpoints[s] < records.len() {
            let report = block_on(aggregator.process_batch(shard, &records[checkpoints[s]..], NOW));
            assert_eq!(report.retry_from, None, "no faults, no retry");
            checkpoints[s] = records.len();
        }
    }
}

fn clean_pass(settings: &IngestSettings, progress: CloserProgress, shards: &[(ShardId, Vec<InputRecord>)]) -> MemoryTables {
    let aggregator = Aggregator::new(MemoryStore::new(), settings.clone());
    aggregator.store().set_closer_progress(progress);
    for (shard, records) in shards {
        let report = block_on(aggregator.process_batch(shard, records, NOW));
        assert_eq!(report.retry_from, None);
    }
    aggregator.store().snapshot()
}

fn settings_strategy() -> impl Strategy<Value = IngestSettings> {
    // Compactions and batches split over several commits are frequent here, rare in production.
    (prop_oneof![Just((600, 600)), Just((1200, 600)), Just((900, 300))], any::<bool>(), 0u32..200, 1usize..6).prop_map(
        |((size, slide), bounded, compaction_min_bytes, max_touched_per_commit)| IngestSettings {
            window: WindowSpec::new(size, slide).unwrap(),
            watermark_mode: if bounded { WatermarkMode::Bounded { max_out_of_orderness_s: 120 } } else { WatermarkMode::Producer },
            compaction_min_bytes,
            max_touched_per_commit,
            ..IngestSettings::default()
        },
    )
}

/// The shard states without their pane logs and pending seals, which depend on how the batches were cut
/// (their content is compared through `MemoryTables::partials`).
fn comparable(tables: &MemoryTables) -> BTreeMap<ShardId, ShardState> {
    let without_sizes = |state: &ShardState| ShardState {
        open_panes: state.open_panes.keys().map(|pane| (*pane, PaneLog::default())).collect(),
        sealing: Default::default(),
        ..state.clone()
    };
    tables.shard_states.iter().map(|(id, state)| (id.clone(), without_sizes(state))).collect()
}

fn progress_strategy() -> impl Strategy<Value = CloserProgress> {
    prop_oneof![
        Just(CloserProgress::default()),
        // Windows ending by 00:30 are emitted; the closer's watermark is 00:32.
        Just(CloserProgress {
            closed_through: Some(EventTime(BASE + 1800)),
            watermark: Some(EventTime(BASE + 1920)),
            closing_through: None,
            excluded_since: None,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_history_equals_one_clean_pass(
        streams in proptest::collection::vec(proptest::collection::vec(spec(), 1..60), 1..4),
        gaps in proptest::collection::vec(0u64..1000, 1..8),
        choices in proptest::collection::vec(any::<u32>(), 64..256),
        max_batch in 1usize..20,
        settings in settings_strategy(),
        progress in progress_strategy(),
    ) {
        let shards: Vec<(ShardId, Vec<InputRecord>)> = streams
            .iter()
            .enumerate()
            .map(|(i, specs)| (ShardId(format!("shardId-{i:012}")), records(specs, &gaps)))
            .collect();
        let expected = clean_pass(&settings, progress, &shards);

        let aggregator = Aggregator::new(FaultyStore::new(MemoryStore::new()), settings.clone());
        aggregator.store().inner().set_closer_progress(progress);
        deliver_chaotically(&aggregator, &shards, &mut Choices { values: &choices, next: 0 }, max_batch);
        let actual = aggregator.store().inner().snapshot();

        prop_assert_eq!(actual.partials(), expected.partials());
        prop_assert_eq!(comparable(&actual), comparable(&expected));
        // Markers name the windows to re-emit; which record last touched them depends on the batch cuts.
        let windows = |t: &MemoryTables| t.markers.keys().cloned().collect::<Vec<_>>();
        prop_assert_eq!(windows(&actual), windows(&expected));

        // The clean pass accounts for every record exactly once.
        for (shard, records) in &shards {
            let c = expected.shard_states[shard].counters;
            prop_assert_eq!(c.records, records.len() as u64);
            prop_assert_eq!(c.trips_aggregated + c.watermark_events + c.invalid.total() + c.dropped_late, c.records);
        }
    }
}

#[test]
fn a_failed_write_asks_for_a_retry_from_its_first_record_and_the_retry_completes() {
    let specs: Vec<Spec> =
        (0..10).map(|i| Spec::Trip { pickup: i % 2, dropoff: i % 3, dropoff_offset_s: 60 * i as i64, duration_s: 300 }).collect();
    let records = records(&specs, &[3]);
    let shard = ShardId("shardId-000000000000".into());
    let aggregator = Aggregator::new(FaultyStore::new(MemoryStore::new()), IngestSettings::default());
    // Operation 0 and 1 load state; fail the commit.
    aggregator.store().fail_operation(2);
    let report = block_on(aggregator.process_batch(&shard, &records, NOW));
    let retry_from = report.retry_from.expect("a failed write asks for a retry");
    assert!(report.metrics.retry_requested);
    let at = records.iter().position(|r| r.seq == retry_from).unwrap();
    let durable_records = aggregator.store().inner().snapshot().shard_states.get(&shard).map_or(0, |s| s.counters.records);
    assert_eq!(durable_records, at as u64, "state covers exactly the durable prefix");

    let report = block_on(aggregator.process_batch(&shard, &records[at..], NOW));
    assert_eq!(report.retry_from, None);
    assert_eq!(aggregator.store().inner().snapshot(), clean_pass(aggregator.settings(), CloserProgress::default(), &[(shard, records)]));
}

/// Issue 12, hole 5: a shard state listing the most open panes it may holds the
/// batch back at the first trip that would open another (a retry from that
/// record, with a log line naming why), never a panic or an item past
/// DynamoDB's limit; once the closer has closed windows, the redelivery commits
/// the rest and nothing is lost or counted twice.
#[test]
fn a_state_with_the_most_open_panes_holds_the_batch_back_until_the_closer_closes_windows() {
    let panes = MAX_OPEN_PANES + 10;
    // One trip per 10-minute pane; the wall clock past them all (none is from the future).
    let specs: Vec<Spec> =
        (0..panes).map(|p| Spec::Trip { pickup: 0, dropoff: 0, dropoff_offset_s: 600 * p as i64 + 60, duration_s: 300 }).collect();
    let now = WallTime((BASE + 600 * panes as i64 + 86_400) * 1000);
    let records = records(&specs, &[1]);
    let shard = ShardId("shardId-000000000000".into());
    let aggregator = Aggregator::new(MemoryStore::new(), IngestSettings::default());
    let state = || aggregator.store().snapshot().shard_states.get(&shard).cloned().expect("a state");

    let report = block_on(aggregator.process_batch(&shard, &records, now));
    let held = MAX_OPEN_PANES;
    assert_eq!(report.retry_from.as_ref(), Some(&records[held].seq), "held back at the trip that would open one pane too many");
    assert!(report.metrics.retry_requested);
    assert_eq!(state().open_panes.len(), MAX_OPEN_PANES);
    assert_eq!(state().applied_seq.as_ref(), Some(&records[held - 1].seq));

    // The same redelivery waits while the closer stands still...
    let report = block_on(aggregator.process_batch(&shard, &records[held..], now));
    assert_eq!(report.retry_from.as_ref(), Some(&records[held].seq));
    // ...and commits once it has closed the first 100 windows.
    let closed = EventTime(BASE + 600 * 100);
    let progress =
        CloserProgress { closed_through: Some(closed), watermark: Some(closed), closing_through: Some(closed), excluded_since: None };
    aggregator.store().set_closer_progress(progress);
    let report = block_on(aggregator.process_batch(&shard, &records[held..], now));
    assert_eq!(report.retry_from, None);
    let state = state();
    assert_eq!(state.applied_seq.as_ref(), records.last().map(|r| &r.seq));
    assert_eq!(state.counters.trips_aggregated, panes as u64, "every trip once");
    assert_eq!(state.open_panes.len(), panes - 100, "the closed panes pruned, the rest open");
}

#[test]
fn a_store_that_is_down_moves_nothing() {
    let records = records(&[Spec::Trip { pickup: 0, dropoff: 0, dropoff_offset_s: 0, duration_s: 60 }], &[1]);
    let shard = ShardId("shardId-000000000000".into());
    let aggregator = Aggregator::new(FaultyStore::new(MemoryStore::new()), IngestSettings::default());
    aggregator.store().crash_at(0);
    let report = block_on(aggregator.process_batch(&shard, &records, NOW));
    assert_eq!(report.retry_from, Some(records[0].seq.clone()));
    assert!(aggregator.store().revive());
    assert_eq!(aggregator.store().inner().snapshot(), MemoryTables::default());
}

#[test]
fn late_trips_mark_exactly_the_emitted_windows_within_lateness() {
    // Sliding windows of 20 min every 10 min; the closer emitted every window
    // ending by 00:30 and acted on watermark 00:32; lateness 5 min.
    let settings = IngestSettings { window: WindowSpec::new(1200, 600).unwrap(), allowed_lateness_s: 300, ..IngestSettings::default() };
    let progress = CloserProgress {
        closed_through: Some(EventTime(BASE + 1800)),
        watermark: Some(EventTime(BASE + 1920)),
        closing_through: None,
        excluded_since: None,
    };
    let trip = |dropoff_offset_s| Spec::Trip { pickup: 0, dropoff: 0, dropoff_offset_s, duration_s: 300 };
    // 00:25 is in windows [00:10, 00:30) (emitted, within lateness) and [00:20, 00:40) (open);
    // 00:15 is in [00:00, 00:20) (past lateness) and [00:10, 00:30) (within);
    // 00:05 is in [23:50, 00:10) and [00:00, 00:20), both past lateness: dropped;
    // 00:35 is only in open windows.
    let records = records(&[trip(1500), trip(900), trip(300), trip(2100)], &[1]);
    let shard = ShardId("shardId-000000000000".into());
    let aggregator = Aggregator::new(MemoryStore::new(), settings);
    aggregator.store().set_closer_progress(progress);
    let report = block_on(aggregator.process_batch(&shard, &records, NOW));
    assert_eq!(report.retry_from, None);

    let tables = aggregator.store().snapshot();
    let marked: Vec<i64> = tables.markers.keys().map(|(w, _)| w.0 - BASE).collect();
    assert_eq!(marked, vec![600], "only [00:10, 00:30) is emitted and within lateness");
    let counters = tables.shard_states[&shard].counters;
    assert_eq!((counters.trips_aggregated, counters.late, counters.dropped_late), (3, 2, 1));
    let pickups: u64 = tables.partials().values().flatten().filter(|(k, _)| matches!(k, MetricKey::Pickups(_))).map(|(_, p)| p.count).sum();
    assert_eq!(pickups, 3, "the dropped trip is not written");
}
