//! `taxi-pipeline report` against osmem-server, after the real aggregate
//! handler and closer have indexed the real sample: both pictures are PNGs of
//! the asked size with real content, the map is of the busiest window, and
//! the errors name what is wrong.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use taxi_aws::search::{SearchAuth, SearchConfig};
use taxi_core::bulk::BulkLimits;
use taxi_core::documents::DocumentSettings;
use taxi_core::time::WallTime;
use taxi_integration_tests::pipeline::{far_deadline, search_all, Deployment};
use taxi_integration_tests::sample_path;
use taxi_integration_tests::standins::{opensearch_endpoint, unique_name};
use taxi_pipeline::report::{render_report, ReportError, ReportOptions, AIRPORT_DURATIONS_FILE, HOT_SPOTS_FILE};
use taxi_standins::free_port;

/// The hot-spot colour of the busiest cell (the darkest of the palette), and the two airport lines'.
const DARKEST_CELL: [u8; 3] = [0x80, 0x00, 0x26];
const JFK_LINE: [u8; 3] = [0x00, 0x72, 0xb2];
const LGA_LINE: [u8; 3] = [0xd5, 0x5e, 0x00];

fn search_config(endpoint: &str, documents: &DocumentSettings) -> SearchConfig {
    SearchConfig {
        endpoint: endpoint.to_owned(),
        auth: SearchAuth::None,
        documents: documents.clone(),
        limits: BulkLimits { max_bytes: 1 << 20, max_documents: 1_000 },
        gzip: false,
        tls_skip_verify: false,
        request_timeout: Duration::from_secs(10),
    }
}

/// A PNG's size and its RGB pixels (it must be 8-bit RGB, as written).
fn decode(path: &Path) -> ((u32, u32), Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a sane size")];
    let frame = reader.next_frame(&mut pixels).expect("PNG image data");
    assert_eq!((frame.color_type, frame.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight), "{}", path.display());
    let rgb = pixels[..frame.buffer_size()].chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    ((frame.width, frame.height), rgb)
}

fn share(pixels: &[[u8; 3]], keep: impl Fn(&[u8; 3]) -> bool) -> f64 {
    pixels.iter().filter(|p| keep(p)).count() as f64 / pixels.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_of_the_real_sample_show_the_busiest_window_and_both_airports() {
    let deployment = Deployment::new("report").await;
    deployment.aggregate_file(&sample_path()).await;
    let closed = deployment.closer(opensearch_endpoint(), 300_000).run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(closed.error, None);

    // The busiest window, from the indexed documents with none of the report's code.
    let mut per_window: BTreeMap<String, u64> = BTreeMap::new();
    for source in search_all(opensearch_endpoint(), &deployment.documents.pickup_index).await.values() {
        *per_window.entry(source["window_start"].as_str().unwrap().to_owned()).or_default() += source["pickup_count"].as_u64().unwrap();
    }
    let (busiest_start, busiest_pickups) = per_window.iter().max_by_key(|(start, n)| (**n, std::cmp::Reverse(*start))).unwrap();
    let busiest_start = chrono::DateTime::parse_from_rfc3339(busiest_start).unwrap();

    let out = std::env::temp_dir().join(unique_name("report-pictures"));
    let mut options = ReportOptions::new(search_config(opensearch_endpoint(), &deployment.documents), &out);
    options.map_size = (1200, 1000);
    options.chart_size = (1100, 600);
    let output = render_report(&options).await.expect("the report");
    assert_eq!(output.skipped, Vec::<String>::new());
    let [map, chart] = &output.pictures[..] else { panic!("two pictures: {output:?}") };
    assert_eq!((map.path.clone(), chart.path.clone()), (out.join(HOT_SPOTS_FILE), out.join(AIRPORT_DURATIONS_FILE)));
    let busiest_utc = busiest_start.format("%H:%M UTC").to_string();
    assert!(map.description.contains(&busiest_utc), "the map is of the busiest window ({busiest_utc}): {}", map.description);
    assert!(map.description.contains(&format!("busiest of {} windows", per_window.len())), "{}", map.description);
    let pickups = busiest_pickups.to_string();
    let pickups = if pickups.len() > 3 { format!("{},{}", &pickups[..pickups.len() - 3], &pickups[pickups.len() - 3..]) } else { pickups };
    assert!(map.description.contains(&format!("{pickups} pickups")), "{}", map.description);
    assert!(chart.description.contains("JFK") && chart.description.contains("LGA"), "{}", chart.description);

    let (size, pixels) = decode(&map.path);
    assert_eq!(size, (1200, 1000));
    let colours: HashSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(colours.len() > 200, "a map with a colour scale, text and lines: {} colours", colours.len());
    let warm = share(&pixels, |[r, g, b]| *r as i32 - *b as i32 > 60 && r >= g);
    assert!(warm > 0.02, "hot-spot cells cover a real part of the map: {warm:.4}");
    assert!(pixels.contains(&DARKEST_CELL), "the busiest cell gets the darkest colour");
    let white = share(&pixels, |p| *p == [255, 255, 255]);
    assert!(white < 0.8, "not a blank page: {white:.3} white");
    // Water around the borough outlines of data/nyc-boroughs.geojson, the boroughs' land under the cells.
    let water = share(&pixels, |p| *p == [0xc6, 0xdb, 0xef]);
    let land = share(&pixels, |p| *p == [0xf4, 0xf1, 0xea]);
    assert!(water > 0.05 && land > 0.1, "water {water:.3} and land {land:.3} on the map");

    let (size, pixels) = decode(&chart.path);
    assert_eq!(size, (1100, 600));
    for (airport, colour) in [("JFK", JFK_LINE), ("LGA", LGA_LINE)] {
        // The legend's sample line and marker alone are about 200 pixels.
        let drawn = pixels.iter().filter(|p| **p == colour).count();
        assert!(drawn > 400, "{airport}'s line and markers are drawn: {drawn} pixels");
    }
    assert!(pixels.iter().copied().collect::<HashSet<_>>().len() > 50, "lines, markers and anti-aliased text");

    // The window asked for, by its start; and one that has no documents.
    options.window = Some(busiest_start.with_timezone(&chrono::Utc) + chrono::Duration::minutes(10));
    let next = render_report(&options).await;
    match per_window.contains_key(&options.window.unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()) {
        true => assert!(next.expect("the next window").pictures[0].description.contains("the window asked for")),
        false => assert!(matches!(next, Err(ReportError::WindowNotFound { .. })), "{next:?}"),
    }
    options.window = Some(chrono::DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc));
    let error = render_report(&options).await.unwrap_err();
    assert!(matches!(error, ReportError::WindowNotFound { .. }), "{error}");
    assert!(error.to_string().contains("2001-01-01T00:00:00+00:00"), "{error}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[tokio::test]
async fn errors_say_what_is_wrong() {
    let out = std::env::temp_dir().join(unique_name("report-errors"));
    let missing = DocumentSettings {
        min_count: 2,
        pickup_index: unique_name("no-such-index"),
        duration_index: unique_name("nor-this"),
        index_retention_days: None,
    };
    let error = render_report(&ReportOptions::new(search_config(opensearch_endpoint(), &missing), &out)).await.unwrap_err();
    assert!(matches!(&error, ReportError::IndexMissing { index, .. } if *index == missing.pickup_index), "{error}");

    let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
    let error = render_report(&ReportOptions::new(search_config(&nowhere, &missing), &out)).await.unwrap_err();
    assert!(matches!(error, ReportError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains(&nowhere), "{error}");

    let file = std::env::temp_dir().join(unique_name("report-not-a-dir"));
    std::fs::write(&file, b"a file, not a directory").unwrap();
    let error = render_report(&ReportOptions::new(search_config(opensearch_endpoint(), &missing), &file)).await.unwrap_err();
    assert!(matches!(&error, ReportError::Write { path, .. } if *path == file), "{error}");
    std::fs::remove_file(&file).unwrap();
    let _ = std::fs::remove_dir_all(&out);
}
