//! `taxi-pipeline dashboard`'s JSON API and files against osmem-server and
//! DynamoDB Local, after the real aggregate handler and closer have indexed
//! the real sample: every answer checked against the indexed documents and
//! the table read with none of the dashboard's code; bad parameters 400, a
//! window without hot spots 404, an unreachable endpoint 502, each with the
//! reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use taxi_aws::dynamo::DynamoStore;
use taxi_aws::search::{SearchAuth, SearchConfig};
use taxi_core::bulk::BulkLimits;
use taxi_core::documents::DocumentSettings;
use taxi_core::geo::Areas;
use taxi_core::time::WallTime;
use taxi_integration_tests::pipeline::{far_deadline, search_all, Deployment};
use taxi_integration_tests::standins::{opensearch_endpoint, unique_name};
use taxi_integration_tests::{sample_path, workspace_root};
use taxi_pipeline::dashboard::progress::TableProgress;
use taxi_pipeline::dashboard::{Dashboard, DashboardServer};
use taxi_pipeline::report::model::ColourScale;
use taxi_standins::free_port;

fn search_config(endpoint: &str, documents: &DocumentSettings) -> SearchConfig {
    SearchConfig {
        endpoint: endpoint.to_owned(),
        auth: SearchAuth::None,
        documents: documents.clone(),
        limits: BulkLimits::default(),
        gzip: false,
        tls_skip_verify: false,
        request_timeout: Duration::from_secs(10),
    }
}

/// Serves a dashboard on a free port for the rest of the test; its URL.
async fn serve(dashboard: Dashboard) -> String {
    let server = DashboardServer::bind("127.0.0.1:0".parse().unwrap(), dashboard).await.expect("binding a free port");
    let url = server.url();
    tokio::spawn(server.serve());
    url.trim_end_matches('/').to_owned()
}

/// GET `path`: the status and the JSON answer.
async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
    (status, body)
}

fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_what_the_index_and_the_table_hold() {
    let deployment = Deployment::new("dashboard-api").await;
    let store = || DynamoStore::new(deployment.dynamodb.clone(), &deployment.table);
    let dashboard = |documents: &DocumentSettings| {
        Dashboard::new(search_config(opensearch_endpoint(), documents), Areas::default(), Some(TableProgress::new(store(), documents)))
            .unwrap()
    };
    let base = serve(dashboard(&deployment.documents)).await;

    // Before anything is indexed: empty lists, not errors.
    let (status, windows) = get(&base, "/api/windows").await;
    assert_eq!((status, windows["windows"].as_array().map(Vec::len)), (200, Some(0)), "{windows}");
    let (status, airports) = get(&base, "/api/airports").await;
    assert_eq!((status, airports["series"].as_array().map(Vec::len)), (200, Some(0)), "{airports}");
    let (status, before) = get(&base, "/api/status").await;
    assert_eq!((status, before["windows"].as_u64(), before["documents"].as_u64()), (200, Some(0), Some(0)), "{before}");
    assert_eq!(before["progress"]["watermark"], Value::Null, "no closer has run yet: {before}");

    deployment.aggregate_file(&sample_path()).await;
    let closed = deployment.closer(opensearch_endpoint(), 300_000).run_once(&WallTime::now, far_deadline()).await;
    assert_eq!(closed.error, None);
    let hot_spots = search_all(opensearch_endpoint(), &deployment.documents.pickup_index).await;
    let durations = search_all(opensearch_endpoint(), &deployment.documents.duration_index).await;

    // /api/windows: every window of the index, oldest first, with its pickups and cells.
    let mut expected_windows: BTreeMap<i64, (i64, u64, u64)> = BTreeMap::new();
    for source in hot_spots.values() {
        let entry = expected_windows.entry(rfc3339_ms(source["window_start"].as_str().unwrap())).or_default();
        entry.0 = rfc3339_ms(source["window_end"].as_str().unwrap());
        entry.1 += source["pickup_count"].as_u64().unwrap();
        entry.2 += 1;
    }
    let (status, windows) = get(&base, "/api/windows").await;
    assert_eq!(status, 200, "{windows}");
    let listed: BTreeMap<i64, (i64, u64, u64)> = windows["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (w["start_ms"].as_i64().unwrap(), (w["end_ms"].as_i64().unwrap(), w["pickups"].as_u64().unwrap(), w["cells"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(listed, expected_windows);
    let starts: Vec<i64> = windows["windows"].as_array().unwrap().iter().map(|w| w["start_ms"].as_i64().unwrap()).collect();
    assert!(starts.windows(2).all(|p| p[0] < p[1]) && starts.len() > 5, "oldest first: {starts:?}");
    let first = &windows["windows"][0];
    assert!(first["new_york"].as_str().unwrap().ends_with("EST") && first["utc"].as_str().unwrap().ends_with("UTC"), "{first}");

    // /api/hotspots: exactly the window's documents, each in its geohash box, coloured by its count.
    let (&busiest, _) = expected_windows.iter().max_by_key(|(start, (_, pickups, _))| (*pickups, std::cmp::Reverse(**start))).unwrap();
    let (status, map) = get(&base, &format!("/api/hotspots?window={}", busiest / 1000)).await;
    assert_eq!(status, 200, "{map}");
    let expected_cells: BTreeMap<String, (u64, f64, f64)> = hot_spots
        .values()
        .filter(|s| rfc3339_ms(s["window_start"].as_str().unwrap()) == busiest)
        .map(|s| {
            let location = &s["location"];
            (
                s["geohash"].as_str().unwrap().to_owned(),
                (s["pickup_count"].as_u64().unwrap(), location["lat"].as_f64().unwrap(), location["lon"].as_f64().unwrap()),
            )
        })
        .collect();
    let cells = map["cells"].as_array().unwrap();
    assert_eq!(cells.len(), expected_cells.len());
    let (min, max) = (expected_cells.values().map(|c| c.0).min().unwrap(), expected_cells.values().map(|c| c.0).max().unwrap());
    let scale = ColourScale::for_counts(min, max);
    for cell in cells {
        let geohash = cell["geohash"].as_str().unwrap();
        let &(pickups, lat, lon) = expected_cells.get(geohash).unwrap_or_else(|| panic!("{geohash} is not a document of the window"));
        assert_eq!(cell["pickups"].as_u64(), Some(pickups), "{cell}");
        let (r, g, b) = scale.colour(pickups as f64);
        assert_eq!(cell["colour"].as_str().unwrap(), format!("#{r:02x}{g:02x}{b:02x}"), "{cell}");
        let inside = cell["south"].as_f64().unwrap() < lat
            && lat < cell["north"].as_f64().unwrap()
            && cell["west"].as_f64().unwrap() < lon
            && lon < cell["east"].as_f64().unwrap();
        assert!(inside, "the document's location is inside its cell: {cell}");
    }
    assert!(cells.iter().any(|c| c["colour"] == "#800026"), "the busiest cell is the darkest");
    assert_eq!(
        (map["scale"]["min"].as_u64(), map["scale"]["max"].as_u64(), map["scale"]["log"].as_bool()),
        (Some(min), Some(max), Some(scale.log))
    );
    assert_eq!(map["window"]["start_ms"].as_i64(), Some(busiest));
    // RFC 3339 names the same window.
    let start = chrono::DateTime::from_timestamp_millis(busiest).unwrap().to_rfc3339();
    let (status, same) = get(&base, &format!("/api/hotspots?window={}", start.replace('+', "%2B"))).await;
    assert_eq!((status, same["cells"].as_array().map(Vec::len)), (200, Some(cells.len())));

    // /api/airports: a point per window with trips to the airport, its trip-weighted average.
    let (status, chart) = get(&base, "/api/airports").await;
    assert_eq!(status, 200, "{chart}");
    for code in ["JFK", "LGA"] {
        let expected: BTreeMap<i64, (u64, f64)> = durations
            .values()
            .filter(|s| s["scope"] == "airport" && s["airport_code"] == code && s["trip_count"].as_u64() > Some(0))
            .map(|s| {
                let (trips, sum) = (s["trip_count"].as_u64().unwrap(), s["sum_trip_duration"].as_u64().unwrap());
                (rfc3339_ms(s["window_end"].as_str().unwrap()), (trips, sum as f64 / trips as f64 / 60.0))
            })
            .collect();
        assert!(!expected.is_empty(), "the sample has trips to {code}");
        let series = chart["series"].as_array().unwrap().iter().find(|s| s["airport"] == code).unwrap_or_else(|| panic!("{code}: {chart}"));
        let points: BTreeMap<i64, (u64, f64)> = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["window_end_ms"].as_i64().unwrap(), (p["trips"].as_u64().unwrap(), p["average_minutes"].as_f64().unwrap())))
            .collect();
        assert_eq!(points.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{code}: one point per window with trips");
        for (end, (trips, minutes)) in &expected {
            assert_eq!(points[end].0, *trips, "{code} {end}");
            assert!((points[end].1 - minutes).abs() < 1e-9, "{code} {end}: {} vs {minutes}", points[end].1);
        }
    }
    let (_, latest_two) = get(&base, "/api/airports?windows=2").await;
    assert_eq!(latest_two["window_ends_ms"].as_array().map(Vec::len), Some(2), "{latest_two}");
    assert_eq!(latest_two["older_left_out"], true);

    // /api/status: the index's counts, and the closer's progress as the table holds it.
    let state = deployment
        .dynamodb
        .get_item()
        .table_name(&deployment.table)
        .key("pk", AttributeValue::S("C".into()))
        .key("sk", AttributeValue::S("STATE".into()))
        .send()
        .await
        .unwrap();
    let watermark_s: i64 = state.item().unwrap()["watermark"].as_n().unwrap().parse().unwrap();
    let (status, now) = get(&base, "/api/status").await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["windows"].as_u64(), Some(expected_windows.len() as u64));
    assert_eq!(now["documents"].as_u64(), Some((hot_spots.len() + durations.len()) as u64));
    assert_eq!(now["last_window"]["start_ms"].as_i64(), expected_windows.keys().last().copied());
    let progress = &now["progress"];
    assert_eq!(progress["watermark"].as_str().map(rfc3339_ms), Some(watermark_s * 1000), "{now}");
    let lag = progress["watermark_lag_s"].as_i64().unwrap();
    assert!((lag - (chrono::Utc::now().timestamp() - watermark_s)).abs() <= 5, "lag behind the wall clock: {lag}");
    assert_eq!(progress["dead_letters"].as_u64(), Some(0));
    // Dead letters as the closer keeps them (pk DLQ#<index>), counted over both indices.
    for (index, id) in [
        (&deployment.documents.pickup_index, "a"),
        (&deployment.documents.duration_index, "b"),
        (&deployment.documents.duration_index, "c"),
    ] {
        deployment
            .dynamodb
            .put_item()
            .table_name(&deployment.table)
            .item("pk", AttributeValue::S(format!("DLQ#{index}")))
            .item("sk", AttributeValue::S(id.into()))
            .send()
            .await
            .unwrap();
    }
    let (_, now) = get(&base, "/api/status").await;
    assert_eq!(now["progress"]["dead_letters"].as_u64(), Some(3), "{now}");

    // /api/areas: the boxes the analytics use.
    let (_, areas) = get(&base, "/api/areas").await;
    let jfk = areas["airports"].as_array().unwrap().iter().find(|a| a["airport"] == "JFK").unwrap();
    assert_eq!((jfk["min_lat"].as_f64(), jfk["max_lon"].as_f64()), (Some(40.632), Some(-73.761)));

    // Bad parameters: 400 with a message naming them.
    for (path, words) in [
        ("/api/hotspots", "window is required"),
        ("/api/hotspots?window=yesterday", "\"yesterday\""),
        ("/api/hotspots?window=1420866000&colour=red", "\"colour\""),
        ("/api/airports?windows=0", "windows=\"0\""),
        ("/api/airports?windows=many", "from 1 to"),
        ("/api/windows?limit=3", "\"limit\""),
    ] {
        let (status, body) = get(&base, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(words), "{path}: {body}");
    }
    // A window without hot spots, and no such page: 404 with the reason.
    let (status, body) = get(&base, "/api/hotspots?window=2001-01-01T00:00:00Z").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("2001-01-01T00:00:00+00:00"), "{body}");
    let (status, _) = get(&base, "/api/nothing").await;
    assert_eq!(status, 404);

    // The table unreadable (no such table): the status still answers, saying why.
    let documents = deployment.documents.clone();
    let broken = Dashboard::new(
        search_config(opensearch_endpoint(), &documents),
        Areas::default(),
        Some(TableProgress::new(DynamoStore::new(deployment.dynamodb.clone(), unique_name("no-such-table")), &documents)),
    )
    .unwrap();
    let (status, body) = get(&serve(broken).await, "/api/status").await;
    assert_eq!((status, body["windows"].as_u64()), (200, Some(expected_windows.len() as u64)), "{body}");
    assert!(body["progress_error"].as_str().unwrap().contains("no-such-table"), "{body}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_502_with_the_reason() {
    let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
    let documents = DocumentSettings::default();
    let base = serve(Dashboard::new(search_config(&nowhere, &documents), Areas::default(), None).unwrap()).await;
    for path in ["/api/windows", "/api/hotspots?window=1420866000", "/api/airports", "/api/status"] {
        let (status, body) = get(&base, path).await;
        assert_eq!(status, 502, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("cannot reach") && error.contains(&nowhere), "{path}: {error}");
    }
}

#[tokio::test]
async fn the_page_and_its_files_are_served_from_the_binary() {
    let base =
        serve(Dashboard::new(search_config(opensearch_endpoint(), &DocumentSettings::default()), Areas::default(), None).unwrap()).await;
    let http = reqwest::Client::new();
    let mut total = 0;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/leaflet/leaflet.js", "text/javascript"),
        ("/leaflet/leaflet.css", "text/css"),
        ("/boroughs.geojson", "application/geo+json"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(content_type), "{path}");
        let body = response.bytes().await.unwrap();
        total += body.len();
        match path {
            "/" => assert!(String::from_utf8_lossy(&body).contains("/app.js")),
            // The vendored Leaflet is the npm package pinned in package.json.
            "/leaflet/leaflet.js" | "/leaflet/leaflet.css" => {
                let file = workspace_root().join("node_modules/leaflet/dist").join(path.trim_start_matches("/leaflet/"));
                let pinned = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e} (run npm ci)", file.display()));
                assert!(pinned == body, "{path} differs from {}: copy it again after changing the pin", file.display());
            }
            "/boroughs.geojson" => {
                let boroughs: Value = serde_json::from_slice(&body).unwrap();
                let names: BTreeSet<&str> =
                    boroughs["features"].as_array().unwrap().iter().map(|f| f["properties"]["name"].as_str().unwrap()).collect();
                assert_eq!(names, BTreeSet::from(["Bronx", "Brooklyn", "Manhattan", "Queens", "Staten Island"]));
            }
            _ => {}
        }
    }
    assert!(total < 400_000, "the whole page is small: {total} bytes");
    eprintln!("page: {total} bytes");
}

/// A gate in front of the search stand-in that wants HTTP basic auth, as a
/// secured Elasticsearch does: 401 without the right credentials, else the
/// request is passed on.
async fn basic_auth_gate(upstream: &'static str, username: &str, password: &str) -> String {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use base64::Engine;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")));
    let handle = move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
        let expected = expected.clone();
        async move {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return (StatusCode::UNAUTHORIZED, r#"{"error":"missing authentication credentials"}"#.as_bytes().to_vec());
            }
            let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let answer = reqwest::Client::new()
                .request(method, format!("{upstream}{uri}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (StatusCode::from_u16(answer.status().as_u16()).unwrap(), answer.bytes().await.unwrap().to_vec())
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(handle)).await });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_stays_in_the_cli_and_never_reaches_the_browser() {
    let password = "s3cret-Pa55-for-the-gate";
    let gate = basic_auth_gate(opensearch_endpoint(), "reader", password).await;
    let documents = DocumentSettings {
        min_count: 2,
        pickup_index: unique_name("auth-pickups"),
        duration_index: unique_name("auth-durations"),
        index_retention_days: None,
    };
    let with = |password: &str| SearchConfig {
        auth: SearchAuth::Basic { username: "reader".into(), password: taxi_aws::secrets::Password::new(password) },
        ..search_config(&gate, &documents)
    };
    let base = serve(Dashboard::new(with(password), Areas::default(), None).unwrap()).await;
    let http = reqwest::Client::new();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("reader:{password}"));
    for path in ["/api/windows", "/api/airports", "/api/status", "/api/areas", "/", "/app.js"] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} through the gate");
        let body = response.text().await.unwrap();
        assert!(!body.contains(password) && !body.contains(&encoded), "{path} shows no credential");
    }
    let wrong = serve(Dashboard::new(with("not-it"), Areas::default(), None).unwrap()).await;
    let (status, body) = get(&wrong, "/api/windows").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("401"), "the endpoint's refusal is the reason: {body}");
    assert!(!body.to_string().contains("not-it"), "{body}");
}
