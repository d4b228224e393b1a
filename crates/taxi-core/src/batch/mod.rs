//! Batch mode's pure parts (`taxi-pipeline batch`): the same analytics over
//! files, in chunks that can be read on any core, merged in input order.
//!
//! The result is what the streaming pipeline indexes for the same input:
//! `taxi-pipeline replay` reads the rows, skips what it cannot send and hands
//! the rest to its reorder buffer, which refuses a trip behind one already
//! released; the aggregate function validates and pre-aggregates; the closer
//! merges the partials of each window with data and builds its documents.
//! Batch mode runs the same steps: [`chunk::aggregate_chunk`] reads and
//! pre-aggregates a chunk (in parallel), [`Backfill`] passes the chunk's
//! dropoffs in input order through the reorder buffer's rules (the
//! [`horizon::DropoffHorizon`], property-tested against the buffer), and the
//! [`finisher::WindowFinisher`] finishes each window once the buffer has
//! released a trip at or past its end (no later trip can fall into it), with
//! the closer's merge and documents.
//!
//! - [`chunk`]: reading, validating and pre-aggregating one chunk of lines.
//! - [`finisher`]: the open panes, and the windows finished as event time advances.
//! - [`horizon`]: which dropoffs the producer refuses, and how far it has released.

pub mod chunk;
pub mod finisher;
pub mod horizon;

use crate::batch::chunk::{ChunkAggregate, RejectedRow};
use crate::batch::finisher::{FinishedWindow, WindowFinisher};
use crate::batch::horizon::DropoffHorizon;
use crate::documents::{window_documents, Document, DocumentSettings};
use crate::ingest::IngestSettings;
use crate::replay::trip::{SkipCounts, SkipReason};
use crate::shard::ReasonCounts;
use crate::time::EventTime;

/// What a batch computes, and with which rules.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSettings {
    /// Windows, cells, areas and the future guard, as the aggregate function has them.
    pub ingest: IngestSettings,
    /// Minimum counts and index names, as the closer has them.
    pub documents: DocumentSettings,
    /// The producer's reorder horizon (`replay --horizon`).
    pub horizon_s: i64,
    /// Event times after this are `future_timestamp` (wall clock + tolerance at the start).
    pub latest_plausible: EventTime,
}

/// Counts over the whole input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub rows: u64,
    pub valid: u64,
    /// Rows the producer would not send, per reason (including `behind_horizon`).
    pub skipped: SkipCounts,
    /// Rows the aggregate function would reject, per reason.
    pub invalid: ReasonCounts,
    pub windows: u64,
    pub documents: u64,
}

/// The merge side: chunk aggregates in, in input order; documents of finished windows out.
#[derive(Debug)]
pub struct Backfill {
    settings: BatchSettings,
    /// The producer's reorder buffer, reduced to which trips it refuses and how far it has released.
    horizon: DropoffHorizon,
    finisher: WindowFinisher,
    totals: Totals,
}

impl Backfill {
    pub fn new(settings: BatchSettings) -> Backfill {
        Backfill {
            horizon: DropoffHorizon::new(settings.horizon_s),
            finisher: WindowFinisher::new(settings.ingest.window),
            totals: Totals::default(),
            settings,
        }
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// How far event time has advanced: every window ending here is finished.
    pub fn released_through(&self) -> Option<EventTime> {
        self.horizon.released_through()
    }

    /// Panes held in memory now.
    pub fn open_panes(&self) -> usize {
        self.finisher.open_panes()
    }

    /// Takes the next chunk in input order. Its dropoffs go through the
    /// reorder buffer as the producer pushes them (see `reorder`); if the buffer
    /// refuses any, `reread` aggregates the chunk again with those rows
    /// (their positions among the chunk's `event_times`) left out. Returns the
    /// chunk's rejected rows and the documents of the windows it finished.
    pub fn apply(
        &mut self,
        chunk: ChunkAggregate,
        reread: impl FnOnce(&dyn Fn(usize) -> bool) -> ChunkAggregate,
    ) -> (Vec<RejectedRow>, Vec<Document>) {
        let refused = self.reorder(&chunk);
        let chunk = if refused.is_empty() { chunk } else { reread(&|position| refused.binary_search(&position).is_ok()) };
        let totals = &mut self.totals;
        totals.rows += chunk.rows;
        totals.valid += chunk.valid;
        totals.skipped.add_all(&chunk.skipped);
        totals.invalid.add_all(&chunk.invalid);
        debug_assert_eq!(chunk.skipped.get(SkipReason::BehindHorizon), refused.len() as u64);
        for (key, value) in chunk.partials {
            self.finisher.add(key, value);
        }
        let finished = match self.horizon.released_through() {
            Some(through) => self.finisher.advance(through),
            None => Vec::new(),
        };
        (chunk.samples, self.documents(finished))
    }

    /// Passes the chunk's dropoffs through the reorder buffer, in input
    /// order; returns the positions it refuses.
    ///
    /// When even the chunk's earliest dropoff is within the horizon of the
    /// latest the buffer will have seen, none can be refused (the buffer only
    /// releases dropoffs a horizon behind the latest, and refuses only what is
    /// earlier than a released one). Then what the buffer does next depends
    /// only on which seconds it holds, not on their order or how many trips
    /// share one, so each second goes in once: the buffer holds at most a
    /// horizon of seconds, not a horizon of trips. Otherwise every
    /// dropoff goes in, in order, exactly as the producer pushes them.
    fn reorder(&mut self, chunk: &ChunkAggregate) -> Vec<usize> {
        let (Some(&earliest), Some(&last)) = (chunk.distinct_event_times.first(), chunk.distinct_event_times.last()) else {
            return Vec::new();
        };
        let latest = self.horizon.latest().map_or(last, |l| l.max(last));
        let in_order = earliest.plus_seconds(self.settings.horizon_s) < latest;
        let dropoffs = if in_order { &chunk.event_times } else { &chunk.distinct_event_times };
        let mut refused = Vec::new();
        for (position, at) in dropoffs.iter().enumerate() {
            if !self.horizon.push(*at) {
                refused.push(position);
            }
        }
        debug_assert!(in_order || refused.is_empty());
        refused
    }

    /// The end of the input: every window left is finished.
    pub fn finish(mut self) -> (Totals, Vec<Document>) {
        let finisher = std::mem::replace(&mut self.finisher, WindowFinisher::new(self.settings.ingest.window));
        let documents = self.documents(finisher.finish());
        (self.totals, documents)
    }

    fn documents(&mut self, finished: Vec<FinishedWindow>) -> Vec<Document> {
        let spec = self.settings.ingest.window;
        let mut documents = Vec::new();
        for (window, merged) in finished {
            self.totals.windows += 1;
            documents.extend(window_documents(&spec, window, &merged, &self.settings.documents));
        }
        self.totals.documents += documents.len() as u64;
        documents
    }
}

#[cfg(test)]
mod tests {
    use super::chunk::{aggregate_chunk, ChunkFormat};
    use super::*;
    use crate::replay::reorder::ReorderBuffer;
    use crate::tlc::{NewYorkClock, TlcColumns};
    use crate::window::WindowSpec;
    use chrono::DateTime;
    use proptest::prelude::*;

    const HEADER: &str = "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,pickup_longitude,pickup_latitude,RateCodeID,store_and_fwd_flag,dropoff_longitude,dropoff_latitude,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount";
    /// 2015-01-10 00:00:00 as a naive time (New York local, EST all through).
    const LOCAL_START: i64 = 1_420_848_000;

    /// Pickup places: three cells in town, one outside the city box.
    const PICKUPS: [(f64, f64); 4] = [(40.758, -73.9855), (40.7505, -73.9934), (40.7128, -74.006), (0.0, 0.0)];
    /// Dropoff places: town, JFK, LGA.
    const DROPOFFS: [(f64, f64); 3] = [(40.73, -73.99), (40.645, -73.78), (40.773, -73.87)];

    #[derive(Clone, Debug)]
    struct Row {
        dropoff_s: i64,
        duration_s: i64,
        pickup: usize,
        dropoff: usize,
        garbage: bool,
    }

    fn local(seconds: i64) -> String {
        DateTime::from_timestamp(LOCAL_START + seconds, 0).unwrap().naive_utc().format("%Y-%m-%d %H:%M:%S").to_string()
    }

    fn line(row: &Row) -> String {
        if row.garbage {
            return format!("2,{},not a time,1", local(row.dropoff_s));
        }
        let ((plat, plon), (dlat, dlon)) = (PICKUPS[row.pickup], DROPOFFS[row.dropoff]);
        format!(
            "2,{},{},1,1.0,{plon},{plat},1,N,{dlon},{dlat},1,5,0,0,0,0,0.3,6",
            local(row.dropoff_s - row.duration_s),
            local(row.dropoff_s)
        )
    }

    fn settings(spec: WindowSpec, horizon_s: i64) -> BatchSettings {
        BatchSettings {
            ingest: IngestSettings { window: spec, ..IngestSettings::default() },
            documents: DocumentSettings::default(),
            horizon_s,
            latest_plausible: EventTime(i64::MAX),
        }
    }

    /// Runs the rows through `Backfill`, cut into chunks after the given rows;
    /// also checks that memory stays within the horizon and the window.
    fn run(rows: &[Row], cuts: &[usize], settings: &BatchSettings) -> (Totals, Vec<Document>) {
        let columns = TlcColumns::from_header(&csv::StringRecord::from(HEADER.split(',').collect::<Vec<_>>())).unwrap();
        let mut backfill = Backfill::new(settings.clone());
        let mut documents = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < rows.len()).collect();
        bounds.extend([0, rows.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let spec = settings.ingest.window;
        let max_panes = ((settings.horizon_s + 4 * 3600 + spec.size_s()) / spec.slide_s() + 2) as usize;
        for range in bounds.windows(2) {
            let text: String = rows[range[0]..range[1]].iter().map(|r| line(r) + "\n").collect();
            let aggregate = |refused: &dyn Fn(usize) -> bool| {
                aggregate_chunk(
                    text.as_bytes(),
                    ChunkFormat::Csv(&columns),
                    &settings.ingest,
                    settings.latest_plausible,
                    &mut NewYorkClock::default(),
                    refused,
                )
            };
            let (_, finished) = backfill.apply(aggregate(&|_| false), aggregate);
            documents.extend(finished);
            assert!(backfill.open_panes() <= max_panes, "{} panes held", backfill.open_panes());
        }
        let (totals, rest) = backfill.finish();
        documents.extend(rest);
        (totals, documents)
    }

    fn rows_strategy() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec((0i64..120, 1i64..5000, 0usize..4, 0usize..3, prop::bool::weighted(0.03)), 1..300).prop_map(|steps| {
            let mut at = 0;
            steps
                .into_iter()
                .map(|(step, duration_s, pickup, dropoff, garbage)| {
                    at += step;
                    Row { dropoff_s: at, duration_s, pickup, dropoff, garbage }
                })
                .collect()
        })
    }

    fn spec_strategy() -> impl Strategy<Value = WindowSpec> {
        prop_oneof![
            Just(WindowSpec::tumbling(600).unwrap()),
            Just(WindowSpec::new(1200, 600).unwrap()),
            Just(WindowSpec::new(1800, 300).unwrap())
        ]
    }

    proptest! {
        /// Reordered within the horizon and cut into any chunks, the rows give
        /// the documents of one pass over them in dropoff order.
        #[test]
        fn any_chunking_and_order_within_the_horizon_gives_the_documents_of_one_pass(
            rows in rows_strategy(),
            jitter in prop::collection::vec(0i64..600, 300),
            cuts in prop::collection::vec(0usize..300, 0..12),
            spec in spec_strategy(),
        ) {
            let settings = settings(spec, 600);
            let (sorted_totals, sorted) = run(&rows, &[], &settings);
            // Sorting by dropoff plus up to the horizon keeps each row within
            // the horizon of every dropoff before it.
            let mut shuffled = rows.clone();
            let mut keyed: Vec<(i64, usize)> = rows.iter().enumerate().map(|(i, r)| (r.dropoff_s + jitter[i], i)).collect();
            keyed.sort_unstable();
            for (slot, (_, i)) in keyed.into_iter().enumerate() {
                shuffled[slot] = rows[i].clone();
            }
            let (totals, documents) = run(&shuffled, &cuts, &settings);
            prop_assert_eq!(totals, sorted_totals);
            prop_assert_eq!(totals.skipped.get(SkipReason::BehindHorizon), 0);
            prop_assert_eq!(&documents, &sorted);
            prop_assert_eq!(totals.rows, rows.len() as u64);
            prop_assert_eq!(totals.rows, totals.valid + totals.skipped.total() + totals.invalid.total(), "every row counted once");
        }

        /// Rows far behind the horizon are refused exactly as the producer's
        /// reorder buffer refuses them, whatever the chunking.
        #[test]
        fn rows_behind_the_horizon_are_refused_alike_in_any_chunking(
            rows in rows_strategy(),
            jumps in prop::collection::vec((0usize..300, 700i64..4000), 1..6),
            cuts in prop::collection::vec(0usize..300, 0..12),
            spec in spec_strategy(),
        ) {
            let mut rows = rows;
            for (at, back) in jumps {
                if let Some(row) = rows.get_mut(at) {
                    row.dropoff_s -= back;
                }
            }
            let settings = settings(spec, 600);
            let (one_totals, one) = run(&rows, &[], &settings);
            let (totals, documents) = run(&rows, &cuts, &settings);
            prop_assert_eq!(totals, one_totals);
            prop_assert_eq!(&documents, &one);

            // The producer's buffer over the rows it would send.
            let mut buffer = ReorderBuffer::new(600);
            let mut refused = 0;
            for row in rows.iter().filter(|r| !r.garbage) {
                refused += u64::from(!buffer.push(EventTime(row.dropoff_s), ()));
                while buffer.pop_ready().is_some() {}
            }
            prop_assert_eq!(totals.skipped.get(SkipReason::BehindHorizon), refused);
        }
    }

    #[test]
    fn documents_of_a_small_input_by_hand() {
        // Two trips from Times Square to JFK and one to town in the first
        // window; one in the second; a garbage row and one outside the city.
        let rows = [
            Row { dropoff_s: 100, duration_s: 1000, pickup: 0, dropoff: 1, garbage: false },
            Row { dropoff_s: 200, duration_s: 2000, pickup: 0, dropoff: 1, garbage: false },
            Row { dropoff_s: 300, duration_s: 60, pickup: 0, dropoff: 0, garbage: false },
            Row { dropoff_s: 400, duration_s: 60, pickup: 3, dropoff: 0, garbage: false },
            Row { dropoff_s: 500, duration_s: 60, pickup: 0, dropoff: 0, garbage: true },
            Row { dropoff_s: 700, duration_s: 60, pickup: 1, dropoff: 2, garbage: false },
        ];
        let (totals, documents) = run(&rows, &[2], &settings(WindowSpec::tumbling(600).unwrap(), 600));
        let ids: Vec<&str> = documents.iter().map(|d| d.id.as_str()).collect();
        // 00:00 EST is 05:00Z: the first window starts at 1420866000.
        assert_eq!(
            ids,
            [
                "pickups-1420866000-600s-dr5ru7",
                "airport-1420866000-600s-JFK-dr5ru7",
                "airport-1420866000-600s-JFK",
                "airport-1420866600-600s-LGA"
            ]
        );
        assert_eq!(documents[0].source["pickup_count"], 3);
        assert_eq!(documents[1].source["sum_trip_duration"], 3000);
        assert_eq!(documents[3].source["trip_count"], 1);
        assert_eq!((totals.rows, totals.valid, totals.windows, totals.documents), (6, 4, 2, 4));
        assert_eq!((totals.skipped.get(SkipReason::BadValue), totals.invalid.get(crate::event::InvalidReason::OutsideArea)), (1, 1));
    }
}
