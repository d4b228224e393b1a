//! The dashboard page in a real headless Chromium (Debian's, over the
//! DevTools protocol), against `taxi-pipeline local` on the real sample:
//! follow-live moves to each newly closed window during the run; afterwards
//! (`--keep-serving`) the map holds exactly the index's hot-spot documents of
//! the window shown, in the colours of their counts, the chart a point per
//! window with trips for each airport, and choosing another window changes
//! both; screenshots at 1280x800 and phone size have the map's content; an
//! unreachable endpoint is shown as an error instead of a blank map; and no
//! console error anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use taxi_core::documents::DocumentSettings;
use taxi_integration_tests::browser::{Browser, Page};
use taxi_integration_tests::pipeline::search_all;
use taxi_integration_tests::standins::{dynamodb_endpoint, kinesis_endpoint, opensearch_endpoint, unique_name};
use taxi_integration_tests::{sample_path, workspace_root};
use taxi_pipeline::args::{Cli, Command};
use taxi_pipeline::local::run_local;
use taxi_pipeline::report::model::ColourScale;
use taxi_standins::free_port;

/// Event time at 300 times wall time: the sample's 130 minutes of dropoffs
/// take 26 s, a 10-minute window closing every 2 s.
const SPEEDUP: &str = "300";
const WAIT: Duration = Duration::from_secs(20);

/// Where the screenshots go (kept, to be looked at).
fn screenshot_dir() -> PathBuf {
    let dir = workspace_root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
}

/// Hot-spot documents per window start: geohash -> pickups.
async fn indexed_windows(documents: &DocumentSettings) -> BTreeMap<i64, BTreeMap<String, u64>> {
    let mut windows: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for source in search_all(opensearch_endpoint(), &documents.pickup_index).await.values() {
        windows
            .entry(rfc3339_ms(source["window_start"].as_str().unwrap()))
            .or_default()
            .insert(source["geohash"].as_str().unwrap().to_owned(), source["pickup_count"].as_u64().unwrap());
    }
    windows
}

/// The latest window start the dashboard's API lists.
async fn latest_listed(base: &str) -> Option<i64> {
    let body: Value = reqwest::get(format!("{base}api/windows")).await.ok()?.json().await.ok()?;
    body["windows"].as_array()?.last()?["start_ms"].as_i64()
}

/// What the page shows and says, for a failure's message.
async fn page_state(page: &Page) -> String {
    let state = page
        .evaluate(
            "JSON.stringify({window: document.body.dataset.window, polls: document.body.dataset.polls, follow: document.body.dataset.follow, \
             error: document.getElementById('error').textContent, label: document.getElementById('window-label').textContent})",
        )
        .await;
    format!("page {state:?}, problems {:?}", page.problems())
}

/// The map's cells: geohash -> (fill colour, pickups).
async fn cells_on_map(page: &Page) -> BTreeMap<String, (String, u64)> {
    let cells = page
        .evaluate("[...document.querySelectorAll('path.hot-spot-cell')].map(p => [p.dataset.geohash, p.getAttribute('fill'), Number(p.dataset.pickups)])")
        .await
        .unwrap();
    cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().to_owned(), (c[1].as_str().unwrap().to_owned(), c[2].as_u64().unwrap())))
        .collect()
}

/// Checks the map against the index's documents of `window`: the same cells, each in the colour of its count.
async fn assert_map_is(page: &Page, window: i64, index: &BTreeMap<String, u64>) {
    page.wait_for(&format!("document.body.dataset.window === '{window}' && document.body.dataset.cells === '{}'", index.len()), WAIT)
        .await
        .unwrap_or_else(|e| panic!("the map shows window {window}: {e}"));
    let cells = cells_on_map(page).await;
    assert_eq!(
        cells.keys().collect::<BTreeSet<_>>(),
        index.keys().collect::<BTreeSet<_>>(),
        "one rectangle per hot-spot document of {window}"
    );
    let scale = ColourScale::for_counts(*index.values().min().unwrap(), *index.values().max().unwrap());
    for (geohash, (fill, pickups)) in &cells {
        let (r, g, b) = scale.colour(index[geohash] as f64);
        assert_eq!((fill.clone(), *pickups), (format!("#{r:02x}{g:02x}{b:02x}"), index[geohash]), "{geohash} in window {window}");
    }
}

/// The share of pixels of a PNG screenshot that pass `keep`, and its size.
fn pixels(path: &Path) -> ((u32, u32), Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = frame.color_type.samples();
    let rgb = buffer[..frame.buffer_size()].chunks_exact(channels).map(|p| [p[0], p[1], p[2]]).collect();
    ((frame.width, frame.height), rgb)
}

fn share(pixels: &[[u8; 3]], keep: impl Fn([u8; 3]) -> bool) -> f64 {
    pixels.iter().filter(|p| keep(**p)).count() as f64 / pixels.len() as f64
}

/// A screenshot at `width` x `height`, checked for the map's content: water, land, cells, outlines.
async fn screenshot(page: &Page, name: &str, width: u32, height: u32, mobile: bool) -> PathBuf {
    page.set_viewport(width, height, mobile).await.unwrap();
    // Leaflet and the chart redraw on resize; give them a frame or two.
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 300))))").await.unwrap();
    let fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth").await.unwrap();
    assert_eq!(fits, Value::Bool(true), "{name}: no horizontal scrolling at {width} px");
    let path = screenshot_dir().join(format!("{name}.png"));
    page.screenshot(&path).await.unwrap();
    let (size, rgb) = pixels(&path);
    assert_eq!(size, (width, height), "{name}");
    let near = |[r, g, b]: [u8; 3], [x, y, z]: [u8; 3]| {
        (r as i32 - x as i32).abs() + (g as i32 - y as i32).abs() + (b as i32 - z as i32).abs() < 12
    };
    let water = share(&rgb, |p| near(p, [0xc6, 0xdb, 0xef]));
    let land = share(&rgb, |p| near(p, [0xf4, 0xf1, 0xea]));
    let cells = share(&rgb, |[r, g, b]| r as i32 - b as i32 > 80 && r > 120 && g < 230);
    let outlines = share(&rgb, |p| near(p, [0x8a, 0x8a, 0x8a]));
    eprintln!("{name}: water {water:.3}, land {land:.3}, cells {cells:.4}, outlines {outlines:.4}");
    assert!(water > 0.03 && land > 0.03, "{name}: water and boroughs on the map: {water:.3} / {land:.3}");
    assert!(cells > 0.002, "{name}: hot-spot cells visible: {cells:.4}");
    assert!(outlines > 0.0005, "{name}: borough outlines visible: {outlines:.4}");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_local_run_and_shows_what_the_index_holds() {
    let started = Instant::now();
    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let name = unique_name("dashboard-browser");
    let documents = DocumentSettings {
        min_count: 2,
        pickup_index: format!("pickup_count-{name}"),
        duration_index: format!("trip_duration-{name}"),
        index_retention_days: None,
    };
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let base = format!("http://{listen}/");
    let mut line: Vec<String> = ["taxi-pipeline", "local"].map(String::from).to_vec();
    for (flag, value) in [
        ("--input", sample_path().display().to_string()),
        ("--kinesis-endpoint", kinesis_endpoint().to_owned()),
        ("--dynamodb-endpoint", dynamodb_endpoint().to_owned()),
        ("--es-endpoint", opensearch_endpoint().to_owned()),
        ("--stream", name.clone()),
        ("--table", name.clone()),
        ("--set", format!("PICKUP_INDEX={}", documents.pickup_index)),
        ("--set", format!("DURATION_INDEX={}", documents.duration_index)),
        ("--close-interval", "1s".to_owned()),
        ("--speedup", SPEEDUP.to_owned()),
        ("--listen", listen.clone()),
    ] {
        line.extend([flag.to_owned(), value]);
    }
    line.extend(["--quiet", "--no-report", "--keep-serving"].map(String::from));
    let Command::Local(args) = Cli::try_parse_from(line).unwrap().command else { panic!("local") };

    // During the run: the page, following live, moves to each newly closed window (or a later one,
    // when two close between its polls).
    let page = browser.new_page().await.unwrap();
    page.set_viewport(1280, 800, false).await.unwrap();
    let finished = AtomicBool::new(false);
    let run = async {
        let summary = run_local(args).await;
        finished.store(true, Ordering::SeqCst);
        summary
    };
    let follow = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{base}api/status")).await.is_err() {
            assert!(Instant::now() < deadline, "the local run serves its dashboard at {base}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        page.navigate(&base).await.unwrap();
        let mut followed = Vec::new();
        while !finished.load(Ordering::SeqCst) {
            if let Some(latest) = latest_listed(&base).await {
                if followed.last() != Some(&latest) {
                    if let Err(e) = page.wait_for(&format!("Number(document.body.dataset.window) >= {latest}"), WAIT).await {
                        panic!("follow live moves to the new window {latest}: {e}; {}", page_state(&page).await);
                    }
                    followed.push(latest);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        followed
    };
    let (summary, followed) = tokio::join!(run, follow);
    let summary = summary.expect("the local run");
    assert_eq!(summary.dashboard_url.as_deref(), Some(base.as_str()));
    assert!(summary.kept_serving.is_some());
    assert!(followed.len() >= 3, "windows closed one after another during the run, and the page followed: {followed:?}");
    eprintln!("followed {} windows during the run ({:.1} s)", followed.len(), started.elapsed().as_secs_f64());

    // After the run (--keep-serving): the map is the index's latest window, exactly.
    let windows = indexed_windows(&documents).await;
    let (&last, last_cells) = windows.last_key_value().unwrap();
    assert_map_is(&page, last, last_cells).await;

    // The chart: one series per airport, a point per window with trips to it.
    let durations = search_all(opensearch_endpoint(), &documents.duration_index).await;
    for airport in ["JFK", "LGA"] {
        let expected: BTreeSet<i64> = durations
            .values()
            .filter(|s| s["scope"] == "airport" && s["airport_code"] == airport && s["trip_count"].as_u64() > Some(0))
            .map(|s| rfc3339_ms(s["window_end"].as_str().unwrap()))
            .collect();
        let drawn = page
            .wait_for(
                &format!("[...document.querySelectorAll('circle.point[data-airport={airport}]')].map(c => Number(c.dataset.windowEnd))"),
                WAIT,
            )
            .await
            .unwrap();
        let drawn: BTreeSet<i64> = drawn.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(drawn, expected, "{airport}: a point per window with trips");
        let lines = page.evaluate(&format!("document.querySelectorAll('polyline.series-{airport}').length")).await.unwrap();
        assert!(lines.as_u64() >= Some(1), "{airport}: a line through its points");
    }
    let series = page.evaluate("document.querySelectorAll('.chart-legend').length").await.unwrap();
    assert_eq!(series.as_u64(), Some(2), "one series per airport");
    let marked = |end: i64| format!("document.querySelector('line.chosen-window')?.dataset.windowEnd === '{end}'");
    let last_end = last + 600_000;
    page.wait_for(&marked(last_end), WAIT).await.expect("the chart marks the window on the map");

    // A tooltip per cell: geohash, pickups and window.
    let (geohash, pickups) = last_cells.iter().next().unwrap();
    let tooltip = page
        .evaluate(&format!(
            "(() => {{ const p = document.querySelector('path.hot-spot-cell[data-geohash={geohash}]'); const b = p.getBoundingClientRect();
                p.dispatchEvent(new MouseEvent('mouseover', {{bubbles: true, clientX: b.x + b.width / 2, clientY: b.y + b.height / 2}}));
                return document.querySelector('.leaflet-tooltip')?.textContent; }})()"
        ))
        .await
        .unwrap();
    let tooltip = tooltip.as_str().unwrap_or_default();
    assert!(
        tooltip.contains(geohash.as_str()) && tooltip.contains(&format!("{pickups} pickups")) && tooltip.contains("UTC"),
        "{tooltip:?}"
    );

    // Choosing another window (the busiest) changes the map and the chart's mark, and leaves follow-live.
    let (&busiest, busiest_cells) =
        windows.iter().max_by_key(|(start, cells)| (cells.values().sum::<u64>(), std::cmp::Reverse(**start))).unwrap();
    assert_ne!(busiest, last);
    let position = windows.keys().position(|w| *w == busiest).unwrap();
    page.evaluate(&format!(
        "(() => {{ const s = document.getElementById('window-slider'); s.value = '{position}'; s.dispatchEvent(new Event('input')); }})()"
    ))
    .await
    .unwrap();
    assert_map_is(&page, busiest, busiest_cells).await;
    page.wait_for(&marked(busiest + 600_000), WAIT).await.expect("the chart's mark moves with the choice");
    assert_eq!(page.evaluate("document.getElementById('follow-live').checked").await.unwrap(), Value::Bool(false));
    let label = page.evaluate("document.getElementById('window-label').textContent").await.unwrap();
    assert!(label.as_str().unwrap().contains("EST") && label.as_str().unwrap().contains("UTC"), "New York and UTC times: {label}");

    let desktop = screenshot(&page, "dashboard-1280x800", 1280, 800, false).await;
    let phone = screenshot(&page, "dashboard-phone-390x844", 390, 844, true).await;
    assert_eq!(page.problems(), Vec::<String>::new(), "no console error, exception or failed load");
    eprintln!("screenshots {} and {}; {:.1} s in all", desktop.display(), phone.display(), started.elapsed().as_secs_f64());
    drop(summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_shown_instead_of_a_blank_map() {
    use taxi_pipeline::dashboard::{Dashboard, DashboardServer};
    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
    let search = taxi_aws::search::SearchConfig {
        endpoint: nowhere.clone(),
        auth: taxi_aws::search::SearchAuth::None,
        documents: DocumentSettings::default(),
        limits: taxi_core::bulk::BulkLimits::default(),
        gzip: false,
        tls_skip_verify: false,
        request_timeout: Duration::from_secs(5),
    };
    let dashboard = Dashboard::new(search, taxi_core::geo::Areas::default(), None).unwrap();
    let server = DashboardServer::bind("127.0.0.1:0".parse().unwrap(), dashboard).await.unwrap();
    let url = server.url();
    tokio::spawn(server.serve());
    let page = browser.new_page().await.unwrap();
    page.navigate(&url).await.unwrap();
    let shown =
        page.wait_for("!document.getElementById('error').hidden && document.getElementById('error').textContent", WAIT).await.unwrap();
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("cannot reach the search endpoint") && shown.contains(&nowhere), "{shown}");
    // The borough outlines are drawn all the same.
    let boroughs = page.evaluate("document.querySelectorAll('path.borough').length").await.unwrap();
    assert_eq!(boroughs.as_u64(), Some(5), "five boroughs");
    // The page itself raised nothing; only the browser's own log lines for the 502 answers.
    let problems: Vec<String> = page.problems().into_iter().filter(|p| !p.contains("502")).collect();
    assert_eq!(problems, Vec::<String>::new());
}
