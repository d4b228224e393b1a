//! Areas (the city, the airports) and geohash pickup cells.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A latitude / longitude point in degrees (WGS 84).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// An axis-aligned box, bounds inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoBox {
    pub min_lat: f64,
    pub max_lat: f64,
    pub min_lon: f64,
    pub max_lon: f64,
}

impl GeoBox {
    pub const fn new(min_lat: f64, max_lat: f64, min_lon: f64, max_lon: f64) -> GeoBox {
        GeoBox { min_lat, max_lat, min_lon, max_lon }
    }

    /// False for NaN coordinates as well, since every comparison with NaN fails.
    pub fn contains(&self, p: GeoPoint) -> bool {
        p.lat >= self.min_lat && p.lat <= self.max_lat && p.lon >= self.min_lon && p.lon <= self.max_lon
    }
}

/// The airports whose trip durations are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Airport {
    Jfk,
    Lga,
}

impl Airport {
    pub const ALL: [Airport; 2] = [Airport::Jfk, Airport::Lga];

    /// The code used in document `_id`s and the `airport_code` field.
    pub fn code(self) -> &'static str {
        match self {
            Airport::Jfk => "JFK",
            Airport::Lga => "LGA",
        }
    }

    pub fn from_code(code: &str) -> Option<Airport> {
        Airport::ALL.into_iter().find(|a| a.code() == code)
    }
}

/// The areas the analytics use: where a trip must start and end to be valid,
/// and where a dropoff counts as an airport trip.
#[derive(Clone, Debug, PartialEq)]
pub struct Areas {
    pub city: GeoBox,
    pub airports: Vec<(Airport, GeoBox)>,
}

impl Default for Areas {
    /// The NYC box and the JFK / LGA boxes of the reference architecture.
    fn default() -> Areas {
        Areas {
            city: GeoBox::new(40.4774, 40.9176, -74.2591, -73.7004),
            airports: vec![
                (Airport::Jfk, GeoBox::new(40.632, 40.654, -73.800, -73.761)),
                (Airport::Lga, GeoBox::new(40.766, 40.778, -73.881, -73.859)),
            ],
        }
    }
}

impl Areas {
    pub fn airport_of(&self, p: GeoPoint) -> Option<Airport> {
        self.airports.iter().find(|(_, area)| area.contains(p)).map(|(a, _)| *a)
    }
}

/// Geohash precision (cell size), 1 to 12 characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeohashPrecision(u8);

impl GeohashPrecision {
    pub const MAX: u8 = 12;

    pub fn new(chars: u8) -> Option<GeohashPrecision> {
        (1..=Self::MAX).contains(&chars).then_some(GeohashPrecision(chars))
    }

    pub fn chars(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for GeohashPrecision {
    fn default() -> Self {
        GeohashPrecision(6)
    }
}

/// The geohash base-32 alphabet, in ascending ASCII order.
const GEOHASH_ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// A geohash cell, stored inline so that aggregation keys are `Copy` and
/// hashing them allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    len: u8,
    chars: [u8; GeohashPrecision::MAX as usize],
}

impl Cell {
    /// The cell containing `p`; `None` only for coordinates outside the globe,
    /// which validation has already rejected.
    ///
    /// The geohash crate's own bit arithmetic (`geohash::encode`, which the
    /// property test below checks this against), written into the cell's
    /// bytes: the crate returns a `String`, one allocation per trip, which
    /// batch mode cannot afford.
    pub fn containing(p: GeoPoint, precision: GeohashPrecision) -> Option<Cell> {
        const ALPHABET: &[u8; 32] = GEOHASH_ALPHABET;
        if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
            return None;
        }
        // The degrees scaled into [1, 2]: the top 32 bits of the significand are the position.
        let lat = ((p.lat * 0.005555555555555556 + 1.5).to_bits() >> 20) as u32;
        let lon = ((p.lon * 0.002777777777777778 + 1.5).to_bits() >> 20) as u32;
        let mut bits = spread_bits(lat) | (spread_bits(lon) << 1);
        let mut chars = [0u8; GeohashPrecision::MAX as usize];
        for char in &mut chars[..precision.chars()] {
            *char = ALPHABET[(bits >> 59) as usize & 0x1f];
            bits <<= 5;
        }
        Some(Cell { len: precision.0, chars })
    }

    /// Accepts a geohash string of 1 to 12 characters of the geohash alphabet.
    pub fn parse(hash: &str) -> Option<Cell> {
        const ALPHABET: &[u8] = GEOHASH_ALPHABET;
        let bytes = hash.as_bytes();
        if bytes.is_empty() || bytes.len() > usize::from(GeohashPrecision::MAX) || !bytes.iter().all(|b| ALPHABET.contains(b)) {
            return None;
        }
        let mut chars = [0u8; GeohashPrecision::MAX as usize];
        chars[..bytes.len()].copy_from_slice(bytes);
        Some(Cell { len: bytes.len() as u8, chars })
    }

    /// The cell as its length and its 5-bit characters packed into an integer,
    /// higher characters first: within one length, integers order as cells do.
    pub fn to_bits(&self) -> (u8, u64) {
        let bits = self.chars[..usize::from(self.len)]
            .iter()
            .fold(0u64, |bits, c| (bits << 5) | GEOHASH_ALPHABET.iter().position(|a| a == c).unwrap_or(0) as u64);
        (self.len, bits)
    }

    /// The inverse of [`Cell::to_bits`]; `None` for a length out of range or bits beyond it.
    pub fn from_bits(len: u8, bits: u64) -> Option<Cell> {
        if len == 0 || len > GeohashPrecision::MAX || bits >> (5 * u32::from(len)) != 0 {
            return None;
        }
        let mut chars = [0u8; GeohashPrecision::MAX as usize];
        for (i, char) in chars[..usize::from(len)].iter_mut().enumerate() {
            *char = GEOHASH_ALPHABET[(bits >> (5 * (usize::from(len) - 1 - i))) as usize & 0x1f];
        }
        Some(Cell { len, chars })
    }

    pub fn as_str(&self) -> &str {
        // Only geohash-alphabet ASCII bytes are ever stored.
        std::str::from_utf8(&self.chars[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Centre of the cell, the `location` of a document.
    pub fn centre(&self) -> GeoPoint {
        match geohash::decode(self.as_str()) {
            Ok((c, _, _)) => GeoPoint { lat: c.y, lon: c.x },
            Err(_) => GeoPoint { lat: f64::NAN, lon: f64::NAN },
        }
    }
}

/// The bits of `x` moved to the even positions of a u64.
fn spread_bits(x: u32) -> u64 {
    let mut x = u64::from(x);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cell({})", self.as_str())
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_square_is_in_city_cell_dr5ru7() {
        let p = GeoPoint { lat: 40.758, lon: -73.9855 };
        let areas = Areas::default();
        assert!(areas.city.contains(p));
        assert_eq!(Cell::containing(p, GeohashPrecision::default()).unwrap().as_str(), "dr5ru7");
        assert_eq!(Cell::containing(p, GeohashPrecision::new(3).unwrap()).unwrap().as_str(), "dr5");
        assert_eq!(areas.airport_of(p), None);
    }

    #[test]
    fn airports_and_outside() {
        let areas = Areas::default();
        assert_eq!(areas.airport_of(GeoPoint { lat: 40.645, lon: -73.78 }), Some(Airport::Jfk));
        assert_eq!(areas.airport_of(GeoPoint { lat: 40.773, lon: -73.87 }), Some(Airport::Lga));
        assert!(!areas.city.contains(GeoPoint { lat: 0.0, lon: 0.0 }));
        assert!(!areas.city.contains(GeoPoint { lat: f64::NAN, lon: -73.9 }));
    }

    proptest::proptest! {
        #[test]
        fn cells_are_the_geohash_crates(lat in -91.0f64..91.0, lon in -181.0f64..181.0, chars in 1u8..=12) {
            let precision = GeohashPrecision::new(chars).unwrap();
            let ours = Cell::containing(GeoPoint { lat, lon }, precision).map(|c| c.as_str().to_owned());
            let crates = geohash::encode(geohash::Coord { x: lon, y: lat }, precision.chars()).ok();
            proptest::prop_assert_eq!(ours, crates);
        }
    }

    #[test]
    fn cells_at_the_edges_of_the_globe_are_the_geohash_crates() {
        for (lat, lon) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (-0.0, -0.0), (90.0, -180.0), (f64::NAN, 0.0), (0.0, f64::INFINITY)]
        {
            let ours = Cell::containing(GeoPoint { lat, lon }, GeohashPrecision::new(12).unwrap()).map(|c| c.as_str().to_owned());
            assert_eq!(ours, geohash::encode(geohash::Coord { x: lon, y: lat }, 12).ok(), "{lat},{lon}");
        }
    }

    #[test]
    fn cell_centre_is_inside_its_cell() {
        let p = GeoPoint { lat: 40.7, lon: -73.95 };
        let cell = Cell::containing(p, GeohashPrecision::default()).unwrap();
        let centre = cell.centre();
        assert!((centre.lat - p.lat).abs() < 0.01 && (centre.lon - p.lon).abs() < 0.01);
        assert_eq!(Cell::containing(centre, GeohashPrecision::default()), Some(cell));
        assert_eq!(Cell::parse(cell.as_str()), Some(cell));
        assert_eq!(Cell::parse("dr5ru7").unwrap().as_str(), "dr5ru7");
        assert_eq!(Cell::parse("dr5ra!"), None);
        assert_eq!(Cell::parse("a"), None, "'a' is not in the geohash alphabet");
    }

    proptest::proptest! {
        #[test]
        fn cell_bits_round_trip_and_keep_the_order(a in "[0-9b-hjkmnp-z]{1,12}", b in "[0-9b-hjkmnp-z]{1,12}") {
            let (a, b) = (Cell::parse(&a).unwrap(), Cell::parse(&b).unwrap());
            let (len, bits) = a.to_bits();
            proptest::prop_assert_eq!(Cell::from_bits(len, bits), Some(a));
            if a.len == b.len {
                proptest::prop_assert_eq!(a.cmp(&b), bits.cmp(&b.to_bits().1));
            }
        }
    }

    #[test]
    fn cell_bits_out_of_range_are_refused() {
        assert_eq!(Cell::from_bits(0, 0), None);
        assert_eq!(Cell::from_bits(13, 0), None);
        assert_eq!(Cell::from_bits(1, 32), None);
        assert_eq!(Cell::from_bits(6, Cell::parse("dr5ru7").unwrap().to_bits().1).unwrap().as_str(), "dr5ru7");
    }
}
