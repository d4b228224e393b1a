//! The reading thread: each file opened with replay's reader (gzip by its
//! magic bytes), its header read once, the rest cut into chunks of whole lines.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use taxi_core::tlc::TlcColumns;

use crate::args::InputFormat;
use crate::input::{open, resolve_format, InputError};

/// About this much text per chunk: big enough that handing chunks around
/// costs nothing next to parsing them, small enough to keep every core busy.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// How the lines of one file are read.
#[derive(Clone, Debug)]
pub enum FileFormat {
    Csv(Arc<TlcColumns>),
    JsonLines,
}

/// Whole lines of one file.
#[derive(Debug)]
pub struct Chunk {
    /// Position in the whole input, from 0: chunks are merged in this order.
    pub seq: u64,
    /// Index of the file among the inputs.
    pub file: usize,
    pub format: FileFormat,
    /// The lines are `buffer[..len]`; the rest is left over from an earlier chunk.
    buffer: Vec<u8>,
    len: usize,
}

impl Chunk {
    pub fn text(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    /// The buffer, to be handed back to [`read_chunks`] for a later chunk.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }
}

/// An open input file, its header read.
pub struct OpenFile {
    pub reader: Box<dyn BufRead + Send>,
    pub format: FileFormat,
    /// Line number of the first line after the header.
    pub first_line: u64,
}

/// Opens a file and reads its header, as `replay` does: a missing file or a
/// header without the needed columns is an error.
pub fn open_file(path: &Path, format: InputFormat) -> Result<OpenFile, InputError> {
    let mut reader = open(path)?;
    if resolve_format(path, format) == InputFormat::Jsonl {
        return Ok(OpenFile { reader, format: FileFormat::JsonLines, first_line: 1 });
    }
    let mut header = Vec::new();
    reader.read_until(b'\n', &mut header).map_err(|source| read_error(path, 1, source))?;
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(header.as_slice());
    let header = csv.headers().map_err(|e| read_error(path, 1, e.into()))?;
    let columns = TlcColumns::from_header(header).map_err(|source| InputError::Columns { path: path.to_owned(), source })?;
    Ok(OpenFile { reader, format: FileFormat::Csv(Arc::new(columns)), first_line: 2 })
}

fn read_error(path: &Path, line: u64, source: io::Error) -> InputError {
    InputError::Read { path: path.to_owned(), line, source }
}

/// Reads every file in turn and hands its chunks to `send`, in order; stops
/// early (without error) when `send` returns false (the consumer is gone).
///
/// A chunk's buffer comes from `spare_buffer` when it has one: buffers handed
/// back from chunks already done are filled again without being zeroed or
/// allocated anew, which the reading thread, serial as it is, would otherwise pay for.
pub fn read_chunks(
    paths: &[PathBuf],
    format: InputFormat,
    bytes_read: impl Fn(usize),
    mut spare_buffer: impl FnMut() -> Option<Vec<u8>>,
    mut send: impl FnMut(Chunk) -> bool,
) -> Result<(), InputError> {
    let mut seq = 0;
    for (file, path) in paths.iter().enumerate() {
        let OpenFile { mut reader, format, first_line } = open_file(path, format)?;
        let mut carry: Vec<u8> = Vec::new();
        let mut line = first_line;
        let mut want = CHUNK_BYTES;
        loop {
            let mut buffer = spare_buffer().unwrap_or_default();
            let mut len = carry.len();
            if buffer.len() < len {
                buffer.resize(len, 0);
            }
            buffer[..len].copy_from_slice(&carry);
            carry.clear();
            let end_of_file = fill(&mut reader, &mut buffer, &mut len, want).map_err(|source| read_error(path, line, source))?;
            want = CHUNK_BYTES;
            if !end_of_file {
                // Keep the unfinished last line for the next chunk.
                match memchr::memrchr(b'\n', &buffer[..len]) {
                    Some(last) => {
                        carry.extend_from_slice(&buffer[last + 1..len]);
                        len = last + 1;
                    }
                    None => {
                        // A line longer than a chunk: read on until it ends.
                        want = len + CHUNK_BYTES;
                        carry.extend_from_slice(&buffer[..len]);
                        continue;
                    }
                }
            }
            let text = &buffer[..len];
            bytes_read(text.len());
            line += memchr::memchr_iter(b'\n', text).count() as u64;
            if len > 0 {
                if !send(Chunk { seq, file, format: format.clone(), buffer, len }) {
                    return Ok(());
                }
                seq += 1;
            }
            if end_of_file {
                break;
            }
        }
    }
    Ok(())
}

/// Reads until `buffer[..len]` holds `want` bytes or the input ends (`true`).
/// The buffer only grows: bytes past `len` are overwritten, never cleared.
fn fill(reader: &mut impl Read, buffer: &mut Vec<u8>, len: &mut usize, want: usize) -> io::Result<bool> {
    while *len < want {
        if buffer.len() < want {
            buffer.resize(want, 0);
        }
        let n = loop {
            match reader.read(&mut buffer[*len..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Ok(true);
        }
        *len += n;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_lines_in_order_and_nothing_is_lost() {
        let dir = std::env::temp_dir().join(format!("taxi-batch-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.jsonl");
        // Lines of every length up to 3 chunks, and no newline at the very end.
        let mut text = String::new();
        for n in 0..2_000usize {
            text.push_str(&"x".repeat(n * 7 % 1_000));
            text.push('\n');
        }
        text.push_str(&"y".repeat(CHUNK_BYTES * 3));
        text.push_str("\nlast");
        std::fs::write(&path, &text).unwrap();
        let mut chunks = Vec::new();
        let bytes = std::sync::atomic::AtomicUsize::new(0);
        // Every other chunk reuses a buffer that still holds old bytes.
        let spare = std::cell::RefCell::new(Some(vec![b'#'; CHUNK_BYTES * 2]));
        read_chunks(
            &[path],
            InputFormat::Auto,
            |n| _ = bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed),
            || spare.borrow_mut().take(),
            |chunk| {
                if chunks.len() % 2 == 1 {
                    *spare.borrow_mut() = Some(vec![b'#'; CHUNK_BYTES * 2]);
                }
                chunks.push(chunk);
                true
            },
        )
        .unwrap();
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        assert!(chunks.iter().enumerate().all(|(i, c)| c.seq == i as u64 && c.file == 0));
        let (last, whole) = chunks.split_last().unwrap();
        assert!(whole.iter().all(|c| c.text().ends_with(b"\n")), "every chunk but the last ends a line");
        assert!(last.text().ends_with(b"last"));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.text().iter().copied()).collect();
        assert_eq!(joined, text.as_bytes());
        assert_eq!(bytes.into_inner(), text.len());
    }
}
