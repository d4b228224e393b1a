//! Where the documents go: `_bulk` NDJSON (a file or stdout) encoded by the
//! core's bulk encoder, or an Elasticsearch / OpenSearch endpoint through the
//! closer's own search sink (templates, chunks, retries, authentication).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use taxi_aws::search::SearchSink;
use taxi_core::bulk::{encode_chunks, BulkLimits};
use taxi_core::closer::{DocumentSink, SinkError};
use taxi_core::documents::Document;
use taxi_core::time::WallTime;

/// How long the sink may keep retrying one group of documents (429 / 5xx).
const INDEX_DEADLINE: Duration = Duration::from_secs(600);
/// Dead letters logged one by one; the rest are only counted.
const LOGGED_REJECTIONS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("indexing into {endpoint} failed")]
    Index { endpoint: String, source: SinkError },
}

/// Documents written or indexed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub documents: u64,
    /// Refused by the endpoint for good (a mapping error, say).
    pub rejected: u64,
    /// Sent again after a 429 / 5xx.
    pub retried: u64,
}

pub enum Output {
    Ndjson { path: PathBuf, writer: BufWriter<Box<dyn Write + Send>>, delivered: Delivered },
    // Boxed: the sink is several times the size of the NDJSON writer.
    Search { sink: Box<SearchSink>, runtime: tokio::runtime::Handle, pending: Vec<Document>, delivered: Delivered },
}

impl Output {
    /// NDJSON into `path`, or stdout for `-`.
    pub fn ndjson(path: &Path) -> Result<Output, OutputError> {
        let writer: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path).map_err(|source| OutputError::Write { path: path.to_owned(), source })?)
        };
        Ok(Output::Ndjson { path: path.to_owned(), writer: BufWriter::with_capacity(1 << 20, writer), delivered: Delivered::default() })
    }

    /// Into the sink's endpoint; `runtime` drives its requests from the merging thread.
    pub fn search(sink: SearchSink, runtime: tokio::runtime::Handle) -> Output {
        Output::Search { sink: Box::new(sink), runtime, pending: Vec::new(), delivered: Delivered::default() }
    }

    /// Takes the documents of finished windows; the search endpoint gets them
    /// in `_bulk` requests of the configured size.
    pub fn write(&mut self, documents: Vec<Document>) -> Result<(), OutputError> {
        match self {
            Output::Ndjson { path, writer, delivered } => {
                let all: Vec<usize> = (0..documents.len()).collect();
                for chunk in encode_chunks(&documents, &all, BulkLimits::default()) {
                    writer.write_all(&chunk.body).map_err(|source| OutputError::Write { path: path.clone(), source })?;
                }
                delivered.documents += documents.len() as u64;
                Ok(())
            }
            Output::Search { sink, pending, .. } => {
                pending.extend(documents);
                if pending.len() >= sink.config().limits.max_documents {
                    self.flush_search()?;
                }
                Ok(())
            }
        }
    }

    /// Writes out what is buffered; returns what was delivered in all.
    pub fn finish(mut self) -> Result<Delivered, OutputError> {
        self.flush_search()?;
        match &mut self {
            Output::Ndjson { path, writer, delivered } => {
                writer.flush().map_err(|source| OutputError::Write { path: path.clone(), source })?;
                Ok(*delivered)
            }
            Output::Search { delivered, .. } => Ok(*delivered),
        }
    }

    fn flush_search(&mut self) -> Result<(), OutputError> {
        let Output::Search { sink, runtime, pending, delivered } = self else { return Ok(()) };
        if pending.is_empty() {
            return Ok(());
        }
        let deadline = WallTime(WallTime::now().0 + INDEX_DEADLINE.as_millis() as i64);
        let report = runtime
            .block_on(sink.index(pending, deadline))
            .map_err(|source| OutputError::Index { endpoint: sink.config().endpoint.clone(), source })?;
        for letter in &report.rejected {
            delivered.rejected += 1;
            if delivered.rejected <= LOGGED_REJECTIONS {
                tracing::error!(index = %letter.document.index, id = %letter.document.id, status = letter.status, "document rejected: {}", letter.reason);
            }
        }
        delivered.documents += report.indexed;
        delivered.retried += report.retried;
        pending.clear();
        Ok(())
    }
}
