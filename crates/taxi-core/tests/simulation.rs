//! The whole pipeline under random interleavings and faults (see `sim`).
//!
//! - `seeds`: a few hundred seeds in every `make test`;
//! - `regressions`: one scenario per correctness hole the simulation found,
//!   each of which failed before its fix;
//! - `quiet_seeds`: bounded-mode streams that stop without a final watermark;
//! - `seed`: `SEED=S` replays one seed alone, with its trace (`QUIET=1`: its quiet variant);
//! - `soak` (ignored; `make soak`): `SEEDS=N` seeds from `FIRST_SEED`, with figures.

mod sim;

use std::time::Instant;

use sim::{describe, run, Scenario};

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Runs the seeds, failing with the first failing seed's report.
fn run_seeds(seeds: impl Iterator<Item = u64>, scenario_of: fn(u64) -> Scenario, print_figures: bool) {
    let started = Instant::now();
    let mut figures = sim::Stats::default();
    let mut count = 0u64;
    let mut failures = Vec::new();
    for seed in seeds {
        let scenario = scenario_of(seed);
        let result = run(&scenario);
        count += 1;
        figures.records += result.stats.records;
        figures.invocations += result.stats.invocations;
        figures.closer_invocations += result.stats.closer_invocations;
        figures.steps += result.stats.steps;
        for (kind, n) in &result.stats.faults {
            *figures.faults.entry(kind).or_default() += n;
        }
        for (kind, n) in &result.stats.requests {
            *figures.requests.entry(kind).or_default() += n;
        }
        figures.windows_closed += result.stats.windows_closed;
        figures.windows_resumed += result.stats.windows_resumed;
        figures.windows_refused_expired += result.stats.windows_refused_expired;
        if !result.violations.is_empty() {
            if std::env::var("SIM_LIST").is_ok() {
                println!("seed {seed}: {:?}", result.violations);
            }
            failures.push(describe(&scenario, &result));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if print_figures {
        println!("seeds: {count} in {elapsed:.1} s ({:.1} seeds/s)", count as f64 / elapsed);
        println!("simulated trips read by the producer: {}", figures.records);
        println!("aggregate invocations: {}, close-windows invocations: {}", figures.invocations, figures.closer_invocations);
        for (kind, n) in &figures.faults {
            println!("  fault {kind}: {n}");
        }
        let queries = figures.requests.get("BatchGetItem batch items (closer)").copied().unwrap_or(0);
        println!(
            "windows closed or re-emitted: {}, batch item reads: {queries} ({:.1} per window)",
            figures.windows_closed,
            queries as f64 / figures.windows_closed.max(1) as f64
        );
        println!(
            "window emissions resumed from an earlier invocation: {}, refused as expired (per pass): {}",
            figures.windows_resumed, figures.windows_refused_expired
        );
        for (kind, n) in &figures.requests {
            println!("  request {kind}: {n}");
        }
        println!("failing seeds: {}", failures.len());
    }
    assert!(failures.is_empty(), "{} of {count} seeds failed; the first:\n{}", failures.len(), failures[0]);
}

#[test]
fn seeds() {
    run_seeds(0..env_number("SIM_SEEDS").unwrap_or(200), Scenario::random, false);
}

/// Every seed's scenario in bounded mode, the producer stopping without a
/// final watermark: the quiet rule closes the last windows within its bound,
/// and no trip it makes late is lost without a count.
#[test]
fn quiet_seeds() {
    run_seeds(0..env_number("SIM_QUIET_SEEDS").unwrap_or(60), Scenario::quiet, false);
}

/// A quiet stream without faults: its last window closes within the documented
/// bound, max(idle timeout, last window end - most advanced shard's watermark)
/// after the last report, plus one closer period.
#[test]
fn a_stream_that_stops_without_a_final_watermark_closes_its_last_window_within_the_bound() {
    for seed in [3, 8, 21] {
        let scenario = Scenario {
            kill: 0,
            throttle: 0,
            function_error: 0,
            closer_crash: 0,
            shard_pause: 0,
            search: sim::services::SearchFaults::default(),
            ..Scenario::quiet(seed)
        };
        let result = run(&scenario);
        assert!(result.violations.is_empty(), "{}", describe(&scenario, &result));
        let (closed_after_ms, bound_ms) = result.quiet_close.expect("the last window closed");
        let tight = bound_ms - 3 * 60_000 + 60_000;
        assert!(closed_after_ms <= tight, "seed {seed}: closed {closed_after_ms} ms after the last report, bound {tight} ms");
    }
}

/// Seeds of this simulator that failed before the fix named, each shown by
/// undoing that fix alone (a change to the simulator or its generator
/// reshuffles seeds: find them again by undoing each fix, as the note of
/// issue 12 describes). Re-derived on state layout 3, except 90 and 144:
/// their fix is now the layout itself (a trip is judged in the commit that
/// applies it, and a batch item no landed state names is never read), so no
/// single change undoes it; they stay as scenarios of that race.
const REGRESSIONS: [(u64, &str); 15] = [
    (4, "TTL compared event time with the wall clock: a historic replay's partials expired before their windows closed"),
    (7, "producer mode judged a stuck shard idle: windows closed without its backlog (historic replay)"),
    (18, "producer mode judged a stuck shard idle (live stream)"),
    (1013, "stale closer progress: a partial landing after the closer read its window was lost"),
    (32, "an older document landing late overwrote a newer one (no external versions)"),
    (637, "a parent past the stream's retention was forgotten: its partials were missing from a re-emission"),
    (90, "a trip written by an attempt that died was counted dropped by the redelivery and indexed"),
    (144, "a trip partly written by an attempt that died was dropped by the redelivery"),
    (45, "bogus event times on a shard dragged the bounded watermark ahead"),
    (16, "bounded mode: bogus event times, and a stuck shard judged idle"),
    (216, "bounded mode: a stuck shard judged idle had its on-time trips dropped instead of re-emitted"),
    (270, "bounded mode: a stuck shard judged idle (sliding windows)"),
    (6, "a wrong date in the producer's input moved its reorder horizon: in-order trips were refused"),
    (19, "a wrong date in the producer's input moved its reorder horizon (historic replay)"),
    (1122, "a split after the producer's last watermark: children that never report stalled the stream"),
];

/// Seeds of the closer's knobs (`Scenario::random`: deadlines too short for a
/// window, a search outage past the retention), each failing with its fix undone:
/// the first three with the whole window in one chunk (or with the progress
/// within a window ignored), the fourth with a window's progress resumed under
/// markers whose commits had not landed when it was recorded, the next two with `close_expired` on, as the
/// closer was before it refused expired windows, the last with the closer's
/// observation of open panes saved unconditionally (a late write went backwards;
/// on state layout 3 it passes with that undone, and no seed of 0..2,000 and
/// 1,000,000..1,014,000 fails by it alone: kept as a scenario of that race),
/// and the last with the closer observing only the panes listed open (not those
/// of the windows marked for late data).
const CLOSER_REGRESSIONS: [(u64, &str); 8] = [
    (1, "a window too big for one invocation never closed (historic replay)"),
    (13, "a window too big for one invocation never closed (live stream)"),
    (5, "a re-emission too big for one invocation never finished: its markers stayed"),
    (1008538, "a resumed re-emission skipped documents indexed before its marker's commit landed: 1 trip missing"),
    (7, "windows closed after their partials expired: 624 trips missing, unreported (historic replay)"),
    (2, "windows closed after their partials expired (live stream)"),
    (1002561, "an observation of the open panes landing late replaced a newer one: a re-emission read expired partials unrefused"),
    (1010953, "late data waited out a search outage past the retention: TTL deleted its marker, 1 trip lost unreported"),
];

/// Quiet streams (`Scenario::quiet`): the first two failed with no quiet rule
/// (as before issue 17), the others with the rule but without asking Kinesis
/// whether every shard is caught up.
const QUIET_REGRESSIONS: [(u64, &str); 4] = [
    (0, "a live stream that stops without a final watermark: its last windows never closed"),
    (1, "a historic replay that stops without a final watermark: its last windows never closed"),
    (7, "the quiet rule over a stuck shard (reading paused): windows closed over its unapplied on-time trips"),
    (32, "the quiet rule over a shard with unapplied records: closed beyond what the records promise"),
];

#[test]
fn regressions() {
    for (seed, hole) in QUIET_REGRESSIONS {
        let scenario = Scenario::quiet(seed);
        let result = run(&scenario);
        assert!(result.violations.is_empty(), "quiet seed {seed} (kept for: {hole}) fails:\n{}", describe(&scenario, &result));
    }
    let original = REGRESSIONS.iter().map(|(seed, hole)| (Scenario::original(*seed), hole));
    let closer = CLOSER_REGRESSIONS.iter().map(|(seed, hole)| (Scenario::random(*seed), hole));
    for (scenario, hole) in original.chain(closer) {
        let result = run(&scenario);
        assert!(result.violations.is_empty(), "seed {} (kept for: {hole}) fails:\n{}", scenario.seed, describe(&scenario, &result));
    }
}

#[test]
fn the_closer_regression_seeds_exercise_their_knobs() {
    for (seed, _) in &CLOSER_REGRESSIONS[..4] {
        let result = run(&Scenario::random(*seed));
        assert!(Scenario::random(*seed).slow_close.is_some() && result.stats.windows_resumed > 0, "seed {seed}");
    }
    for (seed, _) in &CLOSER_REGRESSIONS[4..] {
        let result = run(&Scenario::random(*seed));
        assert!(Scenario::random(*seed).expiring_outage && result.stats.windows_refused_expired > 0, "seed {seed}");
    }
}

#[test]
fn replay_seed() {
    let Some(seed) = env_number("SEED") else { return };
    let scenario = if env_number("QUIET").is_some_and(|q| q != 0) { Scenario::quiet(seed) } else { Scenario::random(seed) };
    let result = run(&scenario);
    println!("{}", result.trace.join("\n"));
    assert!(result.violations.is_empty(), "{}", describe(&scenario, &result));
}

#[test]
#[ignore = "the soak: make soak (SEEDS=N, FIRST_SEED=S)"]
fn soak() {
    let first = env_number("FIRST_SEED").unwrap_or(1_000_000);
    run_seeds(first..first + env_number("SEEDS").unwrap_or(5000), Scenario::random, true);
    run_seeds(first..first + env_number("SEEDS").unwrap_or(5000) / 4, Scenario::quiet, true);
}
