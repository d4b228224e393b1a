//! One chunk of input lines: read as the producer reads them, judged by the
//! aggregate function's rules, and pre-aggregated by (pane, metric, key).

use rustc_hash::FxHashMap;

use crate::aggregate::{MetricKey, PartialKey, PartialValue};
use crate::event::{validate_trip, InvalidReason, Trip, MAX_TRIP_DURATION_S};
use crate::geo::GeoPoint;
use crate::ingest::IngestSettings;
use crate::replay::trip::{trip_from_json_line, SkipCounts, SkipReason, Skipped};
use crate::shard::ReasonCounts;
use crate::time::EventTime;
use crate::tlc::{NewYorkClock, TlcColumns};

/// Rows kept with their line number and message, per reason and chunk.
pub const SAMPLES_PER_REASON: usize = 5;

/// How the lines of a chunk are read.
#[derive(Clone, Copy, Debug)]
pub enum ChunkFormat<'a> {
    /// TLC CSV data lines (the header is read once per file, before the chunks).
    Csv(&'a TlcColumns),
    /// One trip event per line; blank lines are not rows.
    JsonLines,
}

/// Why a row did not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowReason {
    /// Refused while reading, as `taxi-pipeline replay` refuses it.
    Skipped(SkipReason),
    /// Refused by the aggregate function's validity rules.
    Invalid(InvalidReason),
}

impl RowReason {
    pub fn name(self) -> &'static str {
        match self {
            RowReason::Skipped(reason) => reason.name(),
            RowReason::Invalid(reason) => reason.name(),
        }
    }
}

/// A row that did not count, with its line (from the start of its chunk, 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    pub line: u64,
    pub reason: RowReason,
    pub message: String,
}

/// What one chunk adds up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkAggregate {
    /// Lines in the chunk (to number the lines of the next one).
    pub lines: u64,
    pub rows: u64,
    /// The dropoff of every row that the producer would hand to its reorder
    /// buffer, in input order: what decides which rows are behind the horizon.
    pub event_times: Vec<EventTime>,
    /// The same dropoffs, sorted, each second once.
    pub distinct_event_times: Vec<EventTime>,
    pub valid: u64,
    pub skipped: SkipCounts,
    pub invalid: ReasonCounts,
    pub partials: FxHashMap<PartialKey, PartialValue>,
    /// The first [`SAMPLES_PER_REASON`] rejected rows of each reason.
    pub samples: Vec<RejectedRow>,
}

impl ChunkAggregate {
    fn reject(&mut self, line: u64, reason: RowReason, message: impl FnOnce() -> String) {
        match reason {
            RowReason::Skipped(r) => self.skipped.add(r, 1),
            RowReason::Invalid(r) => self.invalid.add(r, 1),
        }
        let seen = match reason {
            RowReason::Skipped(r) => self.skipped.get(r),
            RowReason::Invalid(r) => self.invalid.get(r),
        };
        if seen as usize <= SAMPLES_PER_REASON {
            self.samples.push(RejectedRow { line, reason, message: message() });
        }
    }
}

/// Reads, judges and pre-aggregates the rows of `text` (whole lines).
///
/// A row goes through the producer's reading checks (`taxi-pipeline replay`:
/// readable, the needed columns, times and numbers, 0 < duration <= 4 h); the
/// `n`-th row that passes them is refused as `behind_horizon` if
/// `behind_horizon(n)`, which the caller decides with the producer's reorder
/// buffer; the rest meet the aggregate function's rules (`validate_trip`,
/// with `latest_plausible` as the future guard) and the valid trips are added
/// to their pane's partials.
pub fn aggregate_chunk(
    text: &[u8],
    format: ChunkFormat<'_>,
    settings: &IngestSettings,
    latest_plausible: EventTime,
    clock: &mut NewYorkClock,
    behind_horizon: impl Fn(usize) -> bool,
) -> ChunkAggregate {
    let mut out = ChunkAggregate { lines: memchr::memchr_iter(b'\n', text).count() as u64, ..ChunkAggregate::default() };
    if text.last().is_some_and(|b| *b != b'\n') {
        out.lines += 1;
    }
    out.event_times.reserve(out.lines as usize);
    let take = |out: &mut ChunkAggregate, line: u64, read: Result<Trip, Skipped>| {
        out.rows += 1;
        let trip = match read.and_then(within_four_hours) {
            Ok(trip) => trip,
            Err(skipped) => return out.reject(line, RowReason::Skipped(skipped.reason), || skipped.message),
        };
        let candidate = out.event_times.len();
        out.event_times.push(trip.event_time());
        if behind_horizon(candidate) {
            let at = trip.event_time();
            return out.reject(line, RowReason::Skipped(SkipReason::BehindHorizon), || {
                format!("dropoff {} is behind a trip already released", at.to_rfc3339())
            });
        }
        match validate_trip(&trip, &settings.areas, settings.precision, latest_plausible) {
            Ok(facts) => {
                out.valid += 1;
                let pane = settings.window.pane_of(facts.event_time);
                let value = PartialValue { count: 1, sum_s: u64::from(facts.duration_s) };
                for metric in MetricKey::of_trip(&facts) {
                    out.partials.entry(PartialKey { pane, metric }).or_default().add(value);
                }
            }
            Err(reason) => out.reject(line, RowReason::Invalid(reason), || describe(&trip)),
        }
    };
    match format {
        ChunkFormat::Csv(columns) => {
            // TLC rows have no quoting: a row is split on commas here, only as
            // far as the last column read, which is several times faster than
            // the csv reader; a line with a quote or a carriage return inside goes to the csv reader, as in `replay`.
            let wanted = columns.fields_read_by_trip();
            let mut fields: Vec<&str> = Vec::with_capacity(wanted);
            for (index, line) in lines(text).enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    continue;
                }
                let number = index as u64 + 1;
                if memchr::memchr2(b'"', b'\r', line).is_some() {
                    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line);
                    for record in reader.records() {
                        let read = match record {
                            Ok(record) => columns.trip(&record.iter().collect::<Vec<_>>(), clock).map_err(Skipped::from),
                            Err(e) => Err(Skipped::new(SkipReason::UnreadableRow, e.to_string())),
                        };
                        take(&mut out, number, read);
                    }
                    continue;
                }
                let read = match std::str::from_utf8(line) {
                    Ok(line) => {
                        split_fields(line, wanted, &mut fields);
                        columns.trip(&fields, clock).map_err(Skipped::from)
                    }
                    Err(e) => Err(Skipped::new(SkipReason::UnreadableRow, format!("the row is not UTF-8: {e}"))),
                };
                take(&mut out, number, read);
            }
        }
        ChunkFormat::JsonLines => {
            for (index, line) in lines(text).enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let read = match std::str::from_utf8(line) {
                    Ok(line) => trip_from_json_line(line, 0).map(|t| Trip {
                        pickup_time: t.pickup,
                        dropoff_time: t.dropoff,
                        pickup: GeoPoint { lat: t.event.pickup_lat, lon: t.event.pickup_lon },
                        dropoff: GeoPoint { lat: t.event.dropoff_lat, lon: t.event.dropoff_lon },
                    }),
                    Err(e) => Err(Skipped::new(SkipReason::BadJson, e.to_string())),
                };
                take(&mut out, index as u64 + 1, read);
            }
        }
    }
    out.distinct_event_times = out.event_times.clone();
    out.distinct_event_times.sort_unstable();
    out.distinct_event_times.dedup();
    out
}

/// The lines of `text`, as `text.split(|b| *b == b'\n')` gives them.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let (line, after) = match memchr::memchr(b'\n', text) {
            Some(end) => (&text[..end], Some(&text[end + 1..])),
            None => (text, None),
        };
        rest = after;
        Some(line)
    })
}

/// The first `wanted` comma-separated fields of `line` (fewer if it has
/// fewer) into `fields`: what `line.split(',')` gives, without splitting the rest.
fn split_fields<'a>(line: &'a str, wanted: usize, fields: &mut Vec<&'a str>) {
    fields.clear();
    let mut start = 0;
    for at in memchr::memchr_iter(b',', line.as_bytes()) {
        fields.push(&line[start..at]);
        if fields.len() == wanted {
            return;
        }
        start = at + 1;
    }
    fields.push(&line[start..]);
}

/// The producer's duration rule (`ReplayTrip::new`): it never sends a trip of
/// 0 s, negative or over 4 h, whose bogus dropoff would push the horizon on.
fn within_four_hours(trip: Trip) -> Result<Trip, Skipped> {
    let duration = trip.duration_s();
    if duration <= 0 || duration > MAX_TRIP_DURATION_S {
        return Err(Skipped::new(
            SkipReason::BadDuration,
            format!("pickup {} to dropoff {} is not a trip of 0 to 4 h", trip.pickup_time.to_rfc3339(), trip.dropoff_time.to_rfc3339()),
        ));
    }
    Ok(trip)
}

fn describe(trip: &Trip) -> String {
    format!(
        "pickup {} at {},{} to dropoff {} at {},{}",
        trip.pickup_time.to_rfc3339(),
        trip.pickup.lat,
        trip.pickup.lon,
        trip.dropoff_time.to_rfc3339(),
        trip.dropoff.lat,
        trip.dropoff.lon
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lines_and_fields_are_what_the_std_splits_give(text in "[a,\n\r]{0,40}", wanted in 1usize..8) {
            let want: Vec<&[u8]> = text.as_bytes().split(|b| *b == b'\n').collect();
            prop_assert_eq!(lines(text.as_bytes()).collect::<Vec<_>>(), want);
            let mut fields = vec!["left over"];
            split_fields(&text, wanted, &mut fields);
            let all: Vec<&str> = text.split(',').collect();
            prop_assert_eq!(&fields[..], &all[..all.len().min(wanted)]);
        }
    }

    const HEADER: &str = "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,pickup_longitude,pickup_latitude,RateCodeID,store_and_fwd_flag,dropoff_longitude,dropoff_latitude,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount";
    const ROW: &str = "2,2015-01-10 00:00:00,2015-01-10 00:10:00,1,2.5,-73.99,40.73,1,N,-73.78,40.645,1,20,0.5,0.5,0,0,0.3,21.3";

    /// The rows of a chunk, read by hand where that is safe and by the csv
    /// reader otherwise, against the csv reader on every row (what `replay` does).
    #[test]
    fn split_rows_read_as_the_csv_reader_reads_them() {
        let columns = TlcColumns::from_header(&csv::StringRecord::from(HEADER.split(',').collect::<Vec<_>>())).unwrap();
        let quoted = ROW.replace(",N,", ",\"N\",");
        let lines: Vec<Vec<u8>> = vec![
            ROW.into(),
            format!("{ROW}\r").into(),
            Vec::new(),
            quoted.into(),
            ROW.replace("40.73", "40,73").into(),
            ROW.replace("40.73", "4\u{e9}.73").into(),
            [b"2,2015-01-10 00:00:00,2015-01-10 00:10:00,1,2.5,-73.99,40.73,1,N,\xff".as_slice()].concat(),
            "2".into(),
            ROW.replace("2015-01-10 00:10:00", " 2015-01-10 00:10:00 ").into(),
        ];
        let text: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
        let settings = IngestSettings::default();
        let got =
            aggregate_chunk(&text, ChunkFormat::Csv(&columns), &settings, EventTime(i64::MAX), &mut NewYorkClock::default(), |_| false);

        let mut want = ChunkAggregate::default();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_slice());
        let mut record = csv::StringRecord::new();
        let mut clock = NewYorkClock::default();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    want.rows += 1;
                    match columns.trip(&record.iter().collect::<Vec<_>>(), &mut clock).map_err(Skipped::from).and_then(within_four_hours) {
                        Ok(trip) => match validate_trip(&trip, &settings.areas, settings.precision, EventTime(i64::MAX)) {
                            Ok(_) => want.valid += 1,
                            Err(reason) => want.invalid.add(reason, 1),
                        },
                        Err(skipped) => want.skipped.add(skipped.reason, 1),
                    }
                }
                Err(_) => {
                    want.rows += 1;
                    want.skipped.add(SkipReason::UnreadableRow, 1);
                }
            }
        }
        assert_eq!((got.rows, got.valid, got.skipped, got.invalid), (want.rows, want.valid, want.skipped, want.invalid));
        assert_eq!((got.rows, got.valid), (8, 4), "blank lines are not rows; CRLF, quotes and padding are read");
        let lines_of =
            |reason: SkipReason| got.samples.iter().filter(|s| s.reason == RowReason::Skipped(reason)).map(|s| s.line).collect::<Vec<_>>();
        assert_eq!(lines_of(SkipReason::UnreadableRow), vec![7]);
        assert_eq!(lines_of(SkipReason::ShortRow), vec![8]);
        assert_eq!(lines_of(SkipReason::BadValue), vec![5, 6]);
        assert_eq!(got.lines, 9);
    }
}
