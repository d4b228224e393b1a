//! The real sample as Kinesis shards, and Lambda-shaped batches of them.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use flate2::read::GzDecoder;
use serde_json::json;
use taxi_core::event::{watermark_event_json, TripEvent};
use taxi_core::time::EventTime;
use taxi_core::tlc::TlcColumns;

/// One record as it sits in a shard.
#[derive(Clone, Debug)]
pub struct StreamRecord {
    pub seq: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// One shard's records, in order.
#[derive(Clone, Debug)]
pub struct ShardStream {
    pub shard_id: String,
    pub records: Vec<StreamRecord>,
}

/// Opens a plain or gzip CSV.
pub fn open(path: &Path) -> Box<dyn Read> {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    }
}

/// Every row of a TLC CSV as a trip event (the sample has no unreadable rows;
/// one would fail the test here rather than vanish).
pub fn trip_events(path: &Path) -> Vec<TripEvent> {
    let mut reader = csv::Reader::from_reader(open(path));
    let columns = TlcColumns::from_header(reader.headers().expect("a header row")).expect("TLC columns");
    reader
        .records()
        .enumerate()
        .map(|(i, row)| columns.trip_event(&row.expect("a CSV row"), i as u64 + 1).expect("a readable TLC row"))
        .collect()
}

/// Spreads trips over `shards` shards by trip id (as partition keys would), each
/// shard in dropoff order with a watermark event after every
/// `watermark_every` trips, and at the end of every shard the closing
/// watermark, an hour past the last dropoff of all, as the producer sends it.
pub fn shard_streams(trips: &[TripEvent], shards: usize, watermark_every: usize) -> Vec<ShardStream> {
    let closing = trips.iter().filter_map(|t| EventTime::parse_rfc3339(&t.dropoff_datetime)).max().map(|last| last.plus_seconds(3600));
    (0..shards)
        .map(|shard| {
            let mut mine: Vec<&TripEvent> = trips.iter().filter(|t| t.trip_id as usize % shards == shard).collect();
            // RFC 3339 UTC strings of one width sort in time order.
            mine.sort_by(|a, b| a.dropoff_datetime.cmp(&b.dropoff_datetime));
            let mut datas = Vec::new();
            for (i, trip) in mine.iter().enumerate() {
                datas.push((trip.trip_id.to_string(), trip.to_json()));
                if (i + 1) % watermark_every == 0 {
                    // Sorted by dropoff: every trip before this dropoff is written.
                    let w = EventTime::parse_rfc3339(&trip.dropoff_datetime).expect("producer times parse");
                    datas.push(("watermark".into(), watermark_event_json(w)));
                }
            }
            if let Some(w) = closing {
                datas.push(("watermark".into(), watermark_event_json(w)));
            }
            ShardStream {
                shard_id: format!("shardId-{shard:012}"),
                records: datas
                    .into_iter()
                    .enumerate()
                    .map(|(n, (partition_key, data))| StreamRecord { seq: kinesis_seq(shard, n), partition_key, data })
                    .collect(),
            }
        })
        .collect()
}

/// 56-digit, increasing, Kinesis-like sequence numbers.
pub fn kinesis_seq(shard: usize, n: usize) -> String {
    format!("49{shard:03}{:051}", 1_000 + n * 7)
}

/// The exact JSON Lambda sends for these records of a shard.
pub fn lambda_event_json(shard_id: &str, records: &[StreamRecord]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "Records": records.iter().map(|r| json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r.partition_key,
                "sequenceNumber": r.seq,
                "data": b64.encode(&r.data),
                "approximateArrivalTimestamp": 1_420_848_000.123
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{shard_id}:{}", r.seq),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/taxi-aggregate",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/taxi-trips"
        })).collect::<Vec<_>>()
    })
}

/// [`lambda_event_json`], deserialized as the runtime does.
pub fn lambda_event(shard_id: &str, records: &[StreamRecord]) -> KinesisEvent {
    serde_json::from_value(lambda_event_json(shard_id, records)).expect("a Lambda Kinesis event")
}
