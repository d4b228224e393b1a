//! Pure shaping of the fetched documents into what the pictures show: the
//! busiest window, the trip-weighted average duration per window and airport,
//! the colour scale of the hot-spot map and the ticks of both pictures. No I/O,
//! so all of it is unit-tested against hand-built documents.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::America::New_York;
use chrono_tz::Tz;
use taxi_core::geo::Airport;

/// The sum of the hot-spot counts of one window (from a terms aggregation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowTotal {
    pub start_ms: i64,
    pub pickups: u64,
}

/// One window of the hot-spot index: its bounds (epoch milliseconds), the
/// sum of its cells' pickups and the number of cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSummary {
    pub start_ms: i64,
    pub end_ms: i64,
    pub pickups: u64,
    pub cells: u64,
}

/// The window with the most pickups; on a tie, the earliest, so the choice
/// does not depend on the order the endpoint answers in.
pub fn busiest_window(totals: &[WindowTotal]) -> Option<WindowTotal> {
    totals.iter().copied().max_by(|a, b| a.pickups.cmp(&b.pickups).then(b.start_ms.cmp(&a.start_ms)))
}

/// One hot-spot document: a geohash cell and its pickups in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotSpot {
    pub geohash: String,
    pub pickups: u64,
}

/// The hot spots of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct HotSpotWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub cells: Vec<HotSpot>,
    /// The cells fetched stopped at the bound before the window's last one.
    pub truncated: bool,
}

impl HotSpotWindow {
    pub fn pickups(&self) -> u64 {
        self.cells.iter().map(|c| c.pickups).sum()
    }

    /// The smallest and largest cell count, `None` without cells.
    pub fn count_range(&self) -> Option<(u64, u64)> {
        let min = self.cells.iter().map(|c| c.pickups).min()?;
        let max = self.cells.iter().map(|c| c.pickups).max()?;
        Some((min, max))
    }
}

/// One per-airport duration document (`scope: airport`): every trip of the
/// window to that airport, whatever its pickup cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AirportDocument {
    pub window_end_ms: i64,
    pub airport: Airport,
    pub trip_count: u64,
    pub sum_trip_duration_s: u64,
}

/// Trips to one airport in one window, and their average duration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AirportPoint {
    pub trips: u64,
    pub average_minutes: f64,
}

/// One line of the chart: a point per window of [`AirportChart::window_ends_ms`],
/// `None` where the airport had no trips (the line breaks there).
#[derive(Clone, Debug, PartialEq)]
pub struct AirportSeries {
    pub airport: Airport,
    pub points: Vec<Option<AirportPoint>>,
    pub trips: u64,
    /// Trip-weighted over every window shown.
    pub average_minutes: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AirportChart {
    /// Ascending; every window that has a point on either line.
    pub window_ends_ms: Vec<i64>,
    /// JFK first, then LGA; only airports with trips.
    pub series: Vec<AirportSeries>,
}

/// Sums counts and durations per (window, airport) and divides once: the
/// average of averages would weigh a window of 1 trip like one of 50.
pub fn airport_chart(documents: &[AirportDocument]) -> AirportChart {
    let mut sums: BTreeMap<(Airport, i64), (u64, u64)> = BTreeMap::new();
    for d in documents.iter().filter(|d| d.trip_count > 0) {
        let entry = sums.entry((d.airport, d.window_end_ms)).or_default();
        entry.0 += d.trip_count;
        entry.1 += d.sum_trip_duration_s;
    }
    let window_ends_ms: Vec<i64> = sums.keys().map(|(_, end)| *end).collect::<BTreeSet<_>>().into_iter().collect();
    let series = Airport::ALL
        .into_iter()
        .filter_map(|airport| {
            let points: Vec<Option<AirportPoint>> = window_ends_ms
                .iter()
                .map(|end| sums.get(&(airport, *end)).map(|&(trips, sum_s)| AirportPoint { trips, average_minutes: minutes(sum_s, trips) }))
                .collect();
            let (trips, sum_s) = sums.iter().filter(|((a, _), _)| *a == airport).fold((0, 0), |(n, s), (_, (dn, ds))| (n + dn, s + ds));
            (trips > 0).then(|| AirportSeries { airport, points, trips, average_minutes: minutes(sum_s, trips) })
        })
        .collect();
    AirportChart { window_ends_ms, series }
}

fn minutes(sum_s: u64, trips: u64) -> f64 {
    sum_s as f64 / trips as f64 / 60.0
}

/// ColorBrewer's sequential YlOrRd without its palest step (it vanishes on a
/// white page): lightness falls monotonically, so darker reads as busier
/// without a legend, and it survives the common colour-vision deficiencies.
const YL_OR_RD: [(u8, u8, u8); 8] = [
    (0xff, 0xed, 0xa0),
    (0xfe, 0xd9, 0x76),
    (0xfe, 0xb2, 0x4c),
    (0xfd, 0x8d, 0x3c),
    (0xfc, 0x4e, 0x2a),
    (0xe3, 0x1a, 0x1c),
    (0xbd, 0x00, 0x26),
    (0x80, 0x00, 0x26),
];

/// Counts at least this many times the smallest get a logarithmic scale:
/// pickups per cell span two or three orders of magnitude in Manhattan, and a
/// linear scale would paint all but a few cells the palest colour.
const LOG_SCALE_FROM_RATIO: f64 = 10.0;

/// Maps a pickup count to a colour, linearly or logarithmically between the
/// smallest and largest count of the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColourScale {
    min: f64,
    max: f64,
    pub log: bool,
}

impl ColourScale {
    pub fn for_counts(min: u64, max: u64) -> ColourScale {
        let min = min.max(1) as f64;
        let max = (max as f64).max(min);
        ColourScale { min, max, log: max / min >= LOG_SCALE_FROM_RATIO }
    }

    pub fn min(&self) -> u64 {
        self.min as u64
    }

    pub fn max(&self) -> u64 {
        self.max as u64
    }

    /// Where `count` sits on the scale, 0 (smallest) to 1 (largest), clamped.
    pub fn position(&self, count: f64) -> f64 {
        if self.max <= self.min {
            return 1.0;
        }
        let count = count.clamp(self.min, self.max);
        if self.log {
            (count.ln() - self.min.ln()) / (self.max.ln() - self.min.ln())
        } else {
            (count - self.min) / (self.max - self.min)
        }
    }

    pub fn colour(&self, count: f64) -> (u8, u8, u8) {
        colour_at(self.position(count))
    }

    /// Round counts (1, 2, 5 times a power of ten, or an even linear step)
    /// to label the legend with, always with the smallest and largest count,
    /// and none so close to those two that the labels would overlap.
    pub fn ticks(&self) -> Vec<u64> {
        let (min, max) = (self.min(), self.max());
        let round: Vec<u64> = if self.log {
            (0..19).flat_map(|e| [1, 2, 5].map(|m| m * 10u64.pow(e))).filter(|v| *v > min && *v < max).collect()
        } else {
            let step = nice_step((max - min) as f64 / 5.0).max(1.0) as u64;
            (1..).map(|i| (min / step + i) * step).take_while(|v| *v < max).collect()
        };
        let mut ticks = vec![min];
        for value in round {
            let p = self.position(value as f64);
            if p > 0.06 && p < 0.94 {
                ticks.push(value);
            }
        }
        if max > min {
            ticks.push(max);
        }
        ticks
    }
}

/// Linear interpolation between the palette's stops, `t` in 0..=1.
pub fn colour_at(t: f64) -> (u8, u8, u8) {
    let scaled = t.clamp(0.0, 1.0) * (YL_OR_RD.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(YL_OR_RD.len() - 2);
    let f = scaled - i as f64;
    let (a, b) = (YL_OR_RD[i], YL_OR_RD[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power)
}

/// Tick steps for the time axis, in seconds.
const TIME_STEPS_S: [i64; 11] = [600, 1_200, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800];

/// Times (epoch seconds) for the chart's x ticks between `first_s` and
/// `last_s`: at most `max_ticks`, on round New York wall-clock times (a
/// multiple of the step counted from local midnight), so a reader sees 19:00,
/// 19:30, 20:00 rather than arbitrary instants.
pub fn time_ticks(first_s: i64, last_s: i64, max_ticks: usize) -> Vec<i64> {
    let span = (last_s - first_s).max(1);
    let step = TIME_STEPS_S.into_iter().find(|s| span / s < max_ticks.max(2) as i64).unwrap_or(TIME_STEPS_S[TIME_STEPS_S.len() - 1]);
    let offset_s = i64::from(chrono::Offset::fix(&New_York.offset_from_utc_datetime(&utc(first_s).naive_utc())).local_minus_utc());
    let local_first = first_s + offset_s;
    let mut tick = local_first.div_euclid(step) * step - offset_s;
    if tick < first_s {
        tick += step;
    }
    std::iter::successors(Some(tick), |t| Some(t + step)).take_while(|t| *t <= last_s).collect()
}

pub fn utc(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
}

pub fn new_york(time: DateTime<Utc>) -> DateTime<Tz> {
    time.with_timezone(&New_York)
}

/// "10-minute", "1-hour", "90-second": the window length as an adjective.
pub fn window_length(seconds: i64) -> String {
    match seconds {
        s if s > 0 && s % 3_600 == 0 => format!("{}-hour", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}-minute", s / 60),
        s => format!("{s}-second"),
    }
}

/// 12345 -> "12,345".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    use super::*;

    #[test]
    fn the_busiest_window_has_the_most_pickups_and_ties_go_to_the_earliest() {
        let totals = [
            WindowTotal { start_ms: 3_000, pickups: 40 },
            WindowTotal { start_ms: 1_000, pickups: 90 },
            WindowTotal { start_ms: 2_000, pickups: 90 },
            WindowTotal { start_ms: 4_000, pickups: 12 },
        ];
        assert_eq!(busiest_window(&totals), Some(WindowTotal { start_ms: 1_000, pickups: 90 }));
        let mut reversed = totals;
        reversed.reverse();
        assert_eq!(busiest_window(&reversed), Some(WindowTotal { start_ms: 1_000, pickups: 90 }), "independent of order");
        assert_eq!(busiest_window(&[]), None);
    }

    #[test]
    fn airport_averages_are_weighted_by_trips() {
        let doc = |window_end_ms, airport, trip_count, sum_trip_duration_s| AirportDocument {
            window_end_ms,
            airport,
            trip_count,
            sum_trip_duration_s,
        };
        let chart = airport_chart(&[
            // LGA in the first window only; JFK in both, one trip then three.
            doc(1_200_000, Airport::Jfk, 3, 3 * 40 * 60),
            doc(600_000, Airport::Jfk, 1, 20 * 60),
            doc(600_000, Airport::Lga, 2, 2 * 25 * 60),
            // The same window and airport twice (two re-emits of a window
            // with another size, say) are summed before dividing.
            doc(600_000, Airport::Lga, 1, 40 * 60),
            doc(1_800_000, Airport::Lga, 0, 0),
        ]);
        assert_eq!(chart.window_ends_ms, vec![600_000, 1_200_000], "a window with no trips is no point");
        let [jfk, lga] = &chart.series[..] else { panic!("two lines: {chart:?}") };
        assert_eq!((jfk.airport, lga.airport), (Airport::Jfk, Airport::Lga));
        assert_eq!(
            jfk.points,
            vec![Some(AirportPoint { trips: 1, average_minutes: 20.0 }), Some(AirportPoint { trips: 3, average_minutes: 40.0 })]
        );
        assert_eq!(jfk.trips, 4);
        assert!((jfk.average_minutes - 35.0).abs() < 1e-9, "(20 + 3 * 40) / 4 = 35, not the mean of averages 30");
        assert_eq!(lga.points, vec![Some(AirportPoint { trips: 3, average_minutes: 30.0 }), None], "(2 * 25 + 40) / 3 = 30");
        assert_eq!(airport_chart(&[]).series, vec![], "no airport, no line");
    }

    fn luma((r, g, b): (u8, u8, u8)) -> f64 {
        0.2126 * f64::from(r) + 0.7152 * f64::from(g) + 0.0722 * f64::from(b)
    }

    #[test]
    fn more_pickups_are_always_darker_on_both_scales() {
        for (min, max, log) in [(2, 9, false), (2, 900, true)] {
            let scale = ColourScale::for_counts(min, max);
            assert_eq!(scale.log, log, "{min}..{max}");
            let lumas: Vec<f64> = (min..=max).map(|n| luma(scale.colour(n as f64))).collect();
            // Within 8-bit rounding: from dark red to wine blue rises by a step while red falls.
            assert!(lumas.windows(2).all(|w| w[1] <= w[0] + 0.1), "{min}..{max}: monotonic");
            assert!(
                (min..max).all(|n| scale.position((n + 1) as f64) > scale.position(n as f64)),
                "{min}..{max}: every count its own shade"
            );
            assert!(lumas[0] - lumas[lumas.len() - 1] > 100.0, "{min}..{max}: from pale to dark");
            assert_eq!((scale.position(min as f64), scale.position(max as f64)), (0.0, 1.0));
            assert_eq!(scale.colour(0.0), scale.colour(min as f64), "clamped below");
        }
        let stops: Vec<f64> = YL_OR_RD.iter().map(|c| luma(*c)).collect();
        assert!(stops.windows(2).all(|w| w[1] < w[0]), "the palette itself darkens step by step");
    }

    #[test]
    fn legend_ticks_are_round_and_span_the_counts() {
        assert_eq!(ColourScale::for_counts(2, 913).ticks(), vec![2, 5, 10, 20, 50, 100, 200, 500, 913]);
        assert_eq!(ColourScale::for_counts(2, 9).ticks(), vec![2, 4, 6, 8, 9]);
        assert_eq!(ColourScale::for_counts(3, 3).ticks(), vec![3]);
        assert_eq!(ColourScale::for_counts(2, 60).ticks(), vec![2, 5, 10, 20, 60]);
    }

    #[test]
    fn time_ticks_fall_on_round_new_york_times() {
        // 2015-01-10 00:10 to 02:40 UTC is 19:10 to 21:40 EST (UTC-5).
        let first = 1_420_848_600;
        let ticks = time_ticks(first, first + 9_000, 12);
        let local: Vec<String> = ticks.iter().map(|t| new_york(utc(*t)).format("%H:%M").to_string()).collect();
        assert_eq!(local, ["19:20", "19:40", "20:00", "20:20", "20:40", "21:00", "21:20", "21:40"]);
        // Two days: six-hourly ticks at New York midnight, 06:00, noon and 18:00.
        let day = time_ticks(first, first + 2 * 86_400, 10);
        assert!(day.iter().all(|t| new_york(utc(*t)).format("%M").to_string() == "00" && new_york(utc(*t)).hour() % 6 == 0), "{day:?}");
        assert!(day.len() <= 10 && day.len() >= 7);
    }

    #[test]
    fn words_and_numbers() {
        assert_eq!(
            (window_length(600), window_length(3_600), window_length(90)),
            ("10-minute".into(), "1-hour".into(), "90-second".into())
        );
        assert_eq!((thousands(7), thousands(1_000), thousands(1_234_567)), ("7".into(), "1,000".into(), "1,234,567".into()));
    }
}
