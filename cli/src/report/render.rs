//! Drawing the two pictures with plotters into an RGB buffer, encoded as PNG
//! with the `png` crate. Text uses DejaVu Sans, embedded in the binary by the
//! `dejavu` crate and handed to plotters' `ab_glyph` font backend, so nothing
//! depends on the fonts (or fontconfig) of the machine.
//!
//! Everything is drawn at [`SUPERSAMPLING`] times the size and averaged
//! down: plotters' bitmap lines are not anti-aliased, and its `ab_glyph`
//! backend puts every glyph on a whole pixel, which at 1:1 leaves uneven gaps
//! inside words. Sizes below are in output pixels, scaled by [`px`].

use std::error::Error;
use std::io::BufWriter;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use taxi_core::geo::{Airport, Areas, GeoBox};

use super::model::{self, AirportChart, ColourScale, HotSpotWindow};

type Drawn<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;

/// Drawn at this many times the size in each direction, then averaged down.
const SUPERSAMPLING: u32 = 2;

/// Output pixels to drawing pixels.
fn px(n: i32) -> i32 {
    n * SUPERSAMPLING as i32
}

fn upx(n: u32) -> u32 {
    n * SUPERSAMPLING
}

const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);
/// Water, and the boroughs' land: a cell left the land's colour had too few pickups to be a hot spot.
/// The dashboard's page uses the same colours (style.css, app.js).
const WATER: RGBColor = RGBColor(0xc6, 0xdb, 0xef);
const NO_HOT_SPOT: RGBColor = RGBColor(0xf4, 0xf1, 0xea);
const BOROUGH_OUTLINE: RGBColor = RGBColor(0x8a, 0x8a, 0x8a);
const GRID: RGBColor = RGBColor(0xd4, 0xd4, 0xd4);
const AIRPORT_OUTLINE: RGBColor = RGBColor(0x08, 0x30, 0x6b);
/// Okabe-Ito blue and vermillion: apart for every common colour-vision deficiency.
const JFK_COLOUR: RGBColor = RGBColor(0x00, 0x72, 0xb2);
const LGA_COLOUR: RGBColor = RGBColor(0xd5, 0x5e, 0x00);

/// Places a reader finds on a map of New York without help (centre points).
const LANDMARKS: [(&str, f64, f64); 6] = [
    ("Central Park", 40.7812, -73.9665),
    ("Midtown", 40.7549, -73.9840),
    ("Financial District", 40.7075, -74.0090),
    ("Harlem", 40.8116, -73.9465),
    ("Downtown Brooklyn", 40.6930, -73.9880),
    ("Williamsburg", 40.7140, -73.9560),
];

/// Registers the embedded font once per process.
fn fonts() -> Drawn {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let invalid = |_| "the embedded DejaVu Sans font does not parse".to_owned();
            register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).map_err(invalid)?;
            register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).map_err(invalid)
        })
        .clone()
        .map_err(Into::into)
}

fn text(size: u32, colour: &RGBColor) -> TextStyle<'static> {
    (FONT, f64::from(upx(size)), FontStyle::Normal).into_font().color(colour)
}

/// (`FontDesc::style` would keep the regular face: the style must be given when the font is made.)
fn bold(size: u32, colour: &RGBColor) -> TextStyle<'static> {
    (FONT, f64::from(upx(size)), FontStyle::Bold).into_font().color(colour)
}

/// Draws into a fresh white `width` x `height` picture and writes it as PNG.
pub fn picture(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Drawn) -> Drawn {
    fonts()?;
    let (big_w, big_h) = (upx(width), upx(height));
    let mut big = vec![0u8; big_w as usize * big_h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut big, (big_w, big_h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    let pixels = downsample(&big, width, height);
    let mut encoder = png::Encoder::new(BufWriter::new(std::fs::File::create(path)?), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(())
}

/// Each output pixel is the mean of its [`SUPERSAMPLING`]² drawn pixels.
fn downsample(big: &[u8], width: u32, height: u32) -> Vec<u8> {
    let s = SUPERSAMPLING as usize;
    let (width, height) = (width as usize, height as usize);
    let mut sums = vec![0u32; width * 3];
    let mut out = Vec::with_capacity(width * height * 3);
    // `s` drawn rows make one output row.
    for big_rows in big.chunks_exact(width * s * 3 * s).take(height) {
        sums.fill(0);
        for row in big_rows.chunks_exact(width * s * 3) {
            for (i, value) in row.iter().enumerate() {
                sums[i / (3 * s) * 3 + i % 3] += u32::from(*value);
            }
        }
        let n = (s * s) as u32;
        out.extend(sums.iter().map(|sum| ((sum + n / 2) / n) as u8));
    }
    out
}

/// Title lines at the top of a picture: the first bold, the others smaller.
fn title_block(area: &DrawingArea<BitMapBackend, Shift>, lines: &[String]) -> Drawn {
    let mut y = 14;
    for (i, line) in lines.iter().enumerate() {
        let (style, step) = if i == 0 { (bold(24, &INK), 38) } else { (text(17, &MUTED), 26) };
        area.draw_text(line, &style, (px(24), px(y)))?;
        y += step;
    }
    Ok(())
}

/// The hot-spot map of one window.
pub struct HotSpotMap<'a> {
    pub window: &'a HotSpotWindow,
    pub areas: &'a Areas,
    pub title: Vec<String>,
    pub min_count: u64,
}

impl HotSpotMap<'_> {
    pub fn draw(&self, root: &DrawingArea<BitMapBackend, Shift>) -> Drawn {
        let (width, _) = root.dim_in_pixel();
        let (title_area, body) = root.split_vertically(upx(40 + 26 * self.title.len() as u32));
        title_block(&title_area, &self.title)?;
        let (map_area, legend_area) = body.split_horizontally(width.saturating_sub(upx(200)));

        let cells: Vec<(GeoBox, u64)> = self
            .window
            .cells
            .iter()
            .map(|c| {
                let r = geohash::decode_bbox(&c.geohash).map_err(|e| format!("geohash {:?}: {e}", c.geohash))?;
                Ok((GeoBox::new(r.min().y, r.max().y, r.min().x, r.max().x), c.pickups))
            })
            .collect::<Result<_, String>>()?;
        let (min, max) = self.window.count_range().ok_or("no cells to draw")?;
        let scale = ColourScale::for_counts(min, max);

        // Measure the plot area once, then widen the narrower side of the
        // extent so a kilometre is as long across as up and down.
        let builder = |area, x: std::ops::Range<f64>, y: std::ops::Range<f64>| {
            ChartBuilder::on(area)
                .margin(px(12))
                .margin_right(px(28))
                .x_label_area_size(px(56))
                .y_label_area_size(px(92))
                .build_cartesian_2d(x, y)
        };
        let extent = self.extent(&cells);
        let measured = builder(&map_area, extent.min_lon..extent.max_lon, extent.min_lat..extent.max_lat)?;
        let (plot_w, plot_h) = measured.plotting_area().dim_in_pixel();
        let extent = true_to_shape(extent, f64::from(plot_w), f64::from(plot_h));
        let mut chart = builder(&map_area, extent.min_lon..extent.max_lon, extent.min_lat..extent.max_lat)?;

        chart.plotting_area().fill(&WATER)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .bold_line_style(GRID.stroke_width(upx(1)))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|lon| format!("{:.2}°W", -lon))
            .y_label_formatter(&|lat| format!("{lat:.2}°N"))
            .x_desc("Longitude")
            .y_desc("Latitude")
            .label_style(text(15, &INK))
            .axis_desc_style(text(17, &INK))
            .draw()?;
        // Land under the cells, outlines over them, so both stay visible.
        let boroughs = super::boroughs::boroughs()?;
        let rings = || boroughs.iter().flat_map(|b| &b.polygons).flat_map(|polygon| polygon.iter().enumerate());
        chart.draw_series(rings().map(|(i, ring)| Polygon::new(ring.clone(), if i == 0 { NO_HOT_SPOT } else { WATER }.filled())))?;
        chart.draw_series(cells.iter().map(|(b, count)| {
            let (r, g, b_) = scale.colour(*count as f64);
            Rectangle::new([(b.min_lon, b.max_lat), (b.max_lon, b.min_lat)], RGBColor(r, g, b_).filled())
        }))?;

        chart.draw_series(rings().map(|(_, ring)| PathElement::new(ring.clone(), BOROUGH_OUTLINE.stroke_width(upx(1)))))?;
        for (airport, area) in &self.areas.airports {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(area.min_lon, area.max_lat), (area.max_lon, area.min_lat)],
                AIRPORT_OUTLINE.stroke_width(upx(3)),
            )))?;
            let name = match airport {
                Airport::Jfk => "JFK airport",
                Airport::Lga => "LaGuardia airport (LGA)",
            };
            halo_label(&mut chart, name, (area.min_lon, area.max_lat), (0, px(-14)), bold(16, &AIRPORT_OUTLINE))?;
        }
        for (name, lat, lon) in LANDMARKS {
            if extent.contains(taxi_core::geo::GeoPoint { lat, lon }) {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((lon, lat))
                        + Circle::new((0, 0), px(4), ShapeStyle { color: INK.to_rgba(), filled: false, stroke_width: upx(2) }),
                ))?;
                halo_label(&mut chart, name, (lon, lat), (px(8), 0), text(15, &INK))?;
            }
        }
        self.legend(&legend_area, &scale)
    }

    /// The cells, both airports and the landmarks among the cells, with a margin.
    fn extent(&self, cells: &[(GeoBox, u64)]) -> GeoBox {
        let boxes = cells.iter().map(|(b, _)| *b).chain(self.areas.airports.iter().map(|(_, b)| *b));
        let mut extent = GeoBox::new(f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for b in boxes {
            extent = GeoBox::new(
                extent.min_lat.min(b.min_lat),
                extent.max_lat.max(b.max_lat),
                extent.min_lon.min(b.min_lon),
                extent.max_lon.max(b.max_lon),
            );
        }
        let (dlat, dlon) = ((extent.max_lat - extent.min_lat) * 0.05, (extent.max_lon - extent.min_lon) * 0.05);
        GeoBox::new(extent.min_lat - dlat, extent.max_lat + dlat, extent.min_lon - dlon, extent.max_lon + dlon)
    }

    /// A colour bar with round counts beside it, and what a blank cell means.
    fn legend(&self, area: &DrawingArea<BitMapBackend, Shift>, scale: &ColourScale) -> Drawn {
        let (_, height) = area.dim_in_pixel();
        area.draw_text("Pickups", &bold(17, &INK), (px(10), px(14)))?;
        area.draw_text("per cell", &text(15, &INK), (px(10), px(36)))?;
        let (x0, x1, top) = (px(14), px(44), px(74));
        let bottom = height as i32 - px(150);
        let span = f64::from((bottom - top).max(1));
        for y in top..=bottom {
            let (r, g, b) = model::colour_at(f64::from(bottom - y) / span);
            area.draw(&PathElement::new(vec![(x0, y), (x1, y)], RGBColor(r, g, b)))?;
        }
        area.draw(&Rectangle::new([(x0, top), (x1, bottom)], INK.stroke_width(upx(1))))?;
        let label = text(15, &INK).pos(Pos::new(HPos::Left, VPos::Center));
        for tick in scale.ticks() {
            let y = bottom - (scale.position(tick as f64) * span).round() as i32;
            area.draw(&PathElement::new(vec![(x1, y), (x1 + px(6), y)], INK.stroke_width(upx(1))))?;
            area.draw_text(&model::thousands(tick), &label, (x1 + px(10), y))?;
        }
        let mut y = bottom + px(18);
        if scale.log {
            area.draw_text("(log scale)", &text(14, &MUTED), (px(10), y))?;
            y += px(30);
        }
        area.draw(&Rectangle::new([(x0, y), (x1, y + px(20))], NO_HOT_SPOT.filled()))?;
        area.draw(&Rectangle::new([(x0, y), (x1, y + px(20))], INK.stroke_width(upx(1))))?;
        area.draw_text(&format!("fewer than {}", self.min_count), &text(14, &INK), (x1 + px(8), y))?;
        area.draw_text("pickups", &text(14, &INK), (x1 + px(8), y + px(18)))?;
        Ok(())
    }
}

/// Dark text on a white halo, readable over any cell colour.
fn halo_label(
    chart: &mut ChartContext<BitMapBackend, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    label: &str,
    at: (f64, f64),
    (dx, dy): (i32, i32),
    style: TextStyle<'static>,
) -> Drawn {
    let style = style.pos(Pos::new(HPos::Left, VPos::Center));
    let halo = style.color(&WHITE);
    for (ox, oy) in [(-2, 0), (2, 0), (0, -2), (0, 2), (-1, -1), (1, 1), (-1, 1), (1, -1)] {
        chart.draw_series(std::iter::once(EmptyElement::at(at) + Text::new(label.to_owned(), (dx + px(ox), dy + px(oy)), halo.clone())))?;
    }
    chart.draw_series(std::iter::once(EmptyElement::at(at) + Text::new(label.to_owned(), (dx, dy), style)))?;
    Ok(())
}

/// Widens the narrower side of `extent` (about its centre) so that, drawn in
/// a `plot_w` x `plot_h` area, a degree of longitude is cos(latitude) times
/// as long as a degree of latitude, as on the ground.
pub fn true_to_shape(extent: GeoBox, plot_w: f64, plot_h: f64) -> GeoBox {
    let centre_lat = (extent.min_lat + extent.max_lat) / 2.0;
    let centre_lon = (extent.min_lon + extent.max_lon) / 2.0;
    let lon_per_lat = 1.0 / centre_lat.to_radians().cos();
    let (mut lat_span, mut lon_span) = (extent.max_lat - extent.min_lat, extent.max_lon - extent.min_lon);
    // Degrees of latitude per pixel if the latitudes fill the height, and if the longitudes fill the width.
    let by_height = lat_span / plot_h;
    let by_width = lon_span / lon_per_lat / plot_w;
    if by_height > by_width {
        lon_span = by_height * plot_w * lon_per_lat;
    } else {
        lat_span = by_width * plot_h;
    }
    GeoBox::new(centre_lat - lat_span / 2.0, centre_lat + lat_span / 2.0, centre_lon - lon_span / 2.0, centre_lon + lon_span / 2.0)
}

/// The chart of average durations to the airports per window.
pub struct AirportDurations<'a> {
    pub chart: &'a AirportChart,
    pub title: Vec<String>,
    /// The length of a window, for the margin either side of the first and last.
    pub window_s: i64,
    /// Above this many windows the trip counts are left off the points (they would overlap).
    pub max_labelled_points: usize,
}

impl AirportDurations<'_> {
    pub fn draw(&self, root: &DrawingArea<BitMapBackend, Shift>) -> Drawn {
        let (title_area, body) = root.split_vertically(upx(40 + 26 * self.title.len() as u32));
        title_block(&title_area, &self.title)?;
        let ends_s: Vec<i64> = self.chart.window_ends_ms.iter().map(|ms| ms / 1000).collect();
        let (first, last) = (*ends_s.first().ok_or("no windows")?, *ends_s.last().ok_or("no windows")?);
        let pad = (self.window_s / 2).max(60);
        let ticks = model::time_ticks(first, last, 12);
        let top = self.chart.series.iter().flat_map(|s| s.points.iter().flatten()).map(|p| p.average_minutes).fold(0.0, f64::max);
        let y_max = (top * 1.3).max(10.0).ceil();
        let one_day = ticks.first().map(|t| model::new_york(model::utc(*t)).date_naive())
            == ticks.last().map(|t| model::new_york(model::utc(*t)).date_naive());
        let zone = model::new_york(model::utc(first)).format("%Z").to_string();
        let x_desc = if one_day {
            format!("Window end, New York time ({zone}), {}", model::new_york(model::utc(first)).format("%a %-d %b %Y"))
        } else {
            format!("Window end, New York time ({zone})")
        };
        let mut chart = ChartBuilder::on(&body)
            .margin(px(16))
            .margin_right(px(32))
            .x_label_area_size(px(64))
            .y_label_area_size(px(84))
            .build_cartesian_2d(((first - pad)..(last + pad)).with_key_points(ticks), 0f64..y_max)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .bold_line_style(GRID.stroke_width(upx(1)))
            .x_label_formatter(&|t| {
                let local = model::new_york(model::utc(*t));
                if one_day { local.format("%H:%M") } else { local.format("%a %-d %b %H:%M") }.to_string()
            })
            .y_label_formatter(&|m| format!("{m:.0}"))
            .x_desc(x_desc)
            .y_desc("Average trip duration (minutes)")
            .label_style(text(15, &INK))
            .axis_desc_style(text(17, &INK))
            .draw()?;

        let labelled = ends_s.len() <= self.max_labelled_points;
        // Hundreds of windows: smaller markers and thinner lines, or they merge into a band.
        let (radius, line_width) = if ends_s.len() > 2 * self.max_labelled_points { (3, 2) } else { (6, 3) };
        for series in &self.chart.series {
            let colour = match series.airport {
                Airport::Jfk => JFK_COLOUR,
                Airport::Lga => LGA_COLOUR,
            };
            let present: Vec<(i64, f64, u64)> =
                series.points.iter().zip(&ends_s).filter_map(|(p, end)| p.map(|p| (*end, p.average_minutes, p.trips))).collect();
            // A line joins only neighbouring windows; a window without trips to the airport breaks it.
            for run in present.chunk_by(|a, b| b.0 - a.0 <= self.window_s).filter(|run| run.len() > 1) {
                chart.draw_series(LineSeries::new(run.iter().map(|(x, y, _)| (*x, *y)), colour.stroke_width(upx(line_width))))?;
            }
            let legend = format!(
                "{}: {} trips in {} windows, {:.1} min on average",
                series.airport.code(),
                model::thousands(series.trips),
                present.len(),
                series.average_minutes
            );
            let airport = series.airport;
            chart.draw_series(present.iter().map(|(x, y, _)| marker(airport, (*x, *y), radius, colour)))?.label(legend).legend(
                move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(px(-6), 0), (px(18), 0)], colour.stroke_width(upx(3)))
                        + marker(airport, (px(6), 0), 6, colour)
                },
            );
            if labelled {
                // JFK's counts above its points, LGA's below, so they do not collide.
                let dy = if series.airport == Airport::Jfk { px(-18) } else { px(18) };
                let style = bold(13, &colour).pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(
                    present.iter().map(|(x, y, n)| EmptyElement::at((*x, *y)) + Text::new(model::thousands(*n), (0, dy), style.clone())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(px(12))
            .legend_area_size(px(34))
            .label_font(text(16, &INK))
            .background_style(WHITE)
            .border_style(MUTED)
            .draw()?;
        Ok(())
    }
}

/// JFK's points are circles and LGA's triangles, so the lines differ without colour too.
fn marker<'b, C: Copy + 'static>(airport: Airport, at: C, radius: i32, colour: RGBColor) -> DynElement<'static, BitMapBackend<'b>, C> {
    match airport {
        Airport::Jfk => Circle::new(at, px(radius), colour.filled()).into_dyn(),
        // A triangle looks smaller than a circle of the same radius.
        Airport::Lga => TriangleMarker::new(at, px(radius + radius / 3), colour.filled()).into_dyn(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_averages_each_block() {
        let s = SUPERSAMPLING as usize;
        // 2 x 1 output pixels: a white block beside a block of black and white halves.
        let (width, height) = (2usize, 1usize);
        let mut big = vec![255u8; width * s * height * s * 3];
        for row in 0..s / 2 {
            for x in s..2 * s {
                big[(row * width * s + x) * 3..][..3].fill(0);
            }
        }
        assert_eq!(downsample(&big, width as u32, height as u32), vec![255, 255, 255, 128, 128, 128]);
    }

    #[test]
    fn the_map_extent_keeps_kilometres_square() {
        let wide = true_to_shape(GeoBox::new(40.6, 40.8, -74.1, -73.7), 800.0, 800.0);
        let lat_km = (wide.max_lat - wide.min_lat) * 111.0;
        let lon_km = (wide.max_lon - wide.min_lon) * 111.0 * 40.7f64.to_radians().cos();
        assert!((lat_km / lon_km - 1.0).abs() < 0.01, "a square area shows as many km each way: {lat_km} {lon_km}");
        let e = 1e-9;
        assert!(
            wide.min_lon <= -74.1 + e && wide.max_lon >= -73.7 - e && wide.min_lat <= 40.6 + e && wide.max_lat >= 40.8 - e,
            "only ever widened"
        );
    }
}
