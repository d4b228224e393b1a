//! The page's files, embedded in the binary so the dashboard needs no CDN,
//! no tile server and no files beside the binary. Leaflet is the npm
//! package pinned in package.json, its `dist/` files copied in
//! `assets/leaflet/` with its licence (a test checks the copy against
//! `node_modules`); the borough outlines are `data/nyc-boroughs.geojson`,
//! which `report` draws too.

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file the page loads, by the path it is served at.
pub static ASSETS: [Asset; 6] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("assets/index.html") },
    Asset { path: "/app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/app.js") },
    Asset { path: "/style.css", content_type: "text/css; charset=utf-8", body: include_str!("assets/style.css") },
    Asset { path: "/leaflet/leaflet.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/leaflet/leaflet.js") },
    Asset { path: "/leaflet/leaflet.css", content_type: "text/css; charset=utf-8", body: include_str!("assets/leaflet/leaflet.css") },
    Asset { path: "/boroughs.geojson", content_type: "application/geo+json", body: crate::report::boroughs::GEOJSON },
];
