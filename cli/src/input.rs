//! Reading trips: TLC CSV (columns by header name) or JSON lines, plain or gzip.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use taxi_core::replay::trip::{trip_from_json_line, ReplayTrip, SkipReason, Skipped};
use taxi_core::tlc::{MissingColumns, TlcColumns};

use crate::args::InputFormat;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open input {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("input {path} is not a TLC trip file")]
    Columns { path: PathBuf, source: MissingColumns },
    #[error("reading input {path} failed near line {line}")]
    Read { path: PathBuf, line: u64, source: io::Error },
}

/// A row that is not sent, with its line number in the file.
#[derive(Debug)]
pub struct BadRow {
    pub line: u64,
    pub skipped: Skipped,
}

/// Opens a file, decompressing it if it starts with the gzip magic bytes.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, InputError> {
    let error = |source| InputError::Open { path: path.to_owned(), source };
    let mut file = BufReader::with_capacity(256 * 1024, File::open(path).map_err(error)?);
    let gzip = file.fill_buf().map_err(error)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip { Box::new(BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(file))) } else { Box::new(file) })
}

/// The format of a file, from `--format` or its name.
pub fn resolve_format(path: &Path, format: InputFormat) -> InputFormat {
    if format != InputFormat::Auto {
        return format;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if [".jsonl", ".ndjson", ".json"].iter().any(|ext| name.ends_with(ext)) {
        InputFormat::Jsonl
    } else {
        InputFormat::Csv
    }
}

/// Calls `each` with every data row in file order, numbered from 1: a trip, or
/// why the row is skipped. A missing file, a header without the needed columns
/// or a failing read stops it; a bad row does not.
pub fn read_trips(
    path: &Path,
    format: InputFormat,
    mut each: impl FnMut(u64, Result<ReplayTrip, BadRow>) -> ControlFlow<()>,
) -> Result<(), InputError> {
    let input = open(path)?;
    let read_error = |line: u64, source: io::Error| InputError::Read { path: path.to_owned(), line, source };
    match resolve_format(path, format) {
        InputFormat::Jsonl => read_json_lines(input, read_error, each),
        _ => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
            let header = reader.headers().map_err(|e| read_error(1, e.into()))?;
            let columns = TlcColumns::from_header(header).map_err(|source| InputError::Columns { path: path.to_owned(), source })?;
            let mut record = csv::StringRecord::new();
            let mut row = 0;
            loop {
                let line = reader.position().line();
                let result = match reader.read_record(&mut record) {
                    Ok(false) => return Ok(()),
                    Ok(true) => columns.trip_event(&record, row + 1).map_err(Skipped::from).and_then(ReplayTrip::new),
                    Err(e) if e.is_io_error() => return Err(read_error(line, e.into())),
                    Err(e) => Err(Skipped::new(SkipReason::UnreadableRow, e.to_string())),
                };
                row += 1;
                let line = record.position().map_or(line, |p| p.line());
                if each(row, result.map_err(|skipped| BadRow { line, skipped })).is_break() {
                    return Ok(());
                }
            }
        }
    }
}

fn read_json_lines(
    mut input: impl BufRead,
    read_error: impl Fn(u64, io::Error) -> InputError,
    mut each: impl FnMut(u64, Result<ReplayTrip, BadRow>) -> ControlFlow<()>,
) -> Result<(), InputError> {
    let (mut line, mut number, mut row) = (String::new(), 0, 0);
    loop {
        line.clear();
        number += 1;
        if input.read_line(&mut line).map_err(|e| read_error(number, e))? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        row += 1;
        let result = trip_from_json_line(&line, row).map_err(|skipped| BadRow { line: number, skipped });
        if each(row, result).is_break() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn read_all(path: &Path) -> String {
        let mut text = String::new();
        open(path).unwrap().read_to_string(&mut text).unwrap();
        text
    }

    const HEADER_2016: &str = "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,pickup_longitude,pickup_latitude,RatecodeID,store_and_fwd_flag,dropoff_longitude,dropoff_latitude,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount";

    fn write(dir: &Path, name: &str, text: &str, gzip: bool) -> PathBuf {
        let path = dir.join(name);
        let mut file = File::create(&path).unwrap();
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap();
        } else {
            file.write_all(text.as_bytes()).unwrap();
        }
        path
    }

    fn collect(path: &Path, format: InputFormat) -> Result<Vec<Result<ReplayTrip, BadRow>>, InputError> {
        let mut rows = Vec::new();
        read_trips(path, format, |_, r| {
            rows.push(r);
            ControlFlow::Continue(())
        })?;
        Ok(rows)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("taxi-pipeline-input-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn csv_with_the_2016_header_gzip_and_bad_rows_by_line() {
        let dir = temp_dir("csv");
        let text = format!(
            "{HEADER_2016}\n\
             2,2016-03-13 01:50:00,2016-03-13 03:10:00,1,2.5,-73.99,40.73,1,N,-73.98,40.74,1,20,0.5,0.5,0,0,0.3,21.3\n\
             2,2016-03-13 01:50:00,never,1,2.5,-73.99,40.73,1,N,-73.98,40.74,1,20,0.5,0.5,0,0,0.3,21.3\n\
             2,2016-03-13 01:50:00\n\
             2,2016-03-13 05:00:00,2016-03-13 04:00:00,1,2.5,-73.99,40.73,1,N,-73.98,40.74,1,20,0.5,0.5,0,0,0.3,21.3\n"
        );
        let path = write(&dir, "trips.csv.gz", &text, true);
        assert!(read_all(&path).starts_with("VendorID"), "gzip is detected by its magic bytes");
        let rows = collect(&path, InputFormat::Auto).unwrap();
        let trip = rows[0].as_ref().unwrap();
        // 01:50 EST is 06:50Z; 03:10 is after the spring-forward change, EDT, 07:10Z.
        assert_eq!(
            (trip.event.pickup_datetime.as_str(), trip.event.dropoff_datetime.as_str()),
            ("2016-03-13T06:50:00Z", "2016-03-13T07:10:00Z")
        );
        let bad: Vec<(u64, SkipReason)> = rows.iter().filter_map(|r| r.as_ref().err()).map(|b| (b.line, b.skipped.reason)).collect();
        assert_eq!(bad, vec![(3, SkipReason::BadValue), (4, SkipReason::ShortRow), (5, SkipReason::BadDuration)]);
    }

    #[test]
    fn json_lines_and_the_errors_that_stop() {
        let dir = temp_dir("jsonl");
        let line = r#"{"type":"trip","pickup_datetime":"2015-01-10T05:12:34Z","dropoff_datetime":"2015-01-10T05:31:02Z","pickup_latitude":40.73,"pickup_longitude":-73.99,"dropoff_latitude":40.64,"dropoff_longitude":-73.78}"#;
        let path = write(&dir, "trips.jsonl", &format!("{line}\n\n{{oops\n{line}\n"), false);
        let rows = collect(&path, InputFormat::Auto).unwrap();
        assert_eq!(rows.len(), 3, "blank lines are not rows");
        assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
        assert_eq!(rows[2].as_ref().unwrap().event.trip_id, 3, "numbered by row");

        let missing = collect(&dir.join("nope.csv"), InputFormat::Auto).unwrap_err();
        assert!(matches!(missing, InputError::Open { .. }), "{missing}");
        let no_coordinates = write(&dir, "fhv.csv", "dispatching_base_num,pickup_datetime\nB1,2015-01-01 00:00:00\n", false);
        let error = collect(&no_coordinates, InputFormat::Auto).unwrap_err();
        let InputError::Columns { source, .. } = error else { panic!("expected missing columns, got {error}") };
        assert!(source.missing.contains(&"pickup_latitude"), "{source}");
    }
}
