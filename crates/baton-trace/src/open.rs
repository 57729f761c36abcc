//! Opening log files: `.xz` and `.gz` are decompressed transparently, recognised by their
//! magic bytes rather than their names, so a renamed file still reads.

use baton_core::sync::Unpoisoned;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;
use xz2::read::XzDecoder;

/// Why a log could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The file could not be opened or its first bytes read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The compression a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain text.
    None,
    /// gzip.
    Gzip,
    /// xz.
    Xz,
}

/// Detects the compression from the first bytes.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub fn decompress<R: Read + Send + 'static>(reader: R) -> io::Result<Box<dyn BufRead + Send>> {
    let mut buffered = BufReader::with_capacity(1 << 16, reader);
    let head = buffered.fill_buf()?.to_vec();
    Ok(match detect(&head) {
        Compression::Xz => Box::new(BufReader::with_capacity(1 << 16, XzDecoder::new(buffered))),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(buffered),
        )),
        Compression::None => Box::new(buffered),
    })
}

/// A log reader.
pub type LogReader = Box<dyn BufRead + Send>;

/// Streams (pipes, FIFOs, `/dev/stdin`) can be read only once: what a look at their first
/// line ([`peek_first_line`]) opened and read is kept here, and the next [`open_log`] of
/// the same path goes on with it, first line included.
static PENDING: Mutex<Vec<(PathBuf, LogReader)>> = Mutex::new(Vec::new());

/// Opens `path` for line reading, decompressing when needed (or takes the stream a peek
/// left open).
pub fn open_log(path: &Path) -> Result<LogReader, OpenError> {
    {
        let mut pending = PENDING.lock_unpoisoned();
        if let Some(at) = pending.iter().position(|(p, _)| p == path) {
            return Ok(pending.swap_remove(at).1);
        }
    }
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    decompress(file).map_err(io_error)
}

/// The first non-empty line of `path` (decompressed), without losing it for a stream: a
/// pipe's reader is kept, with the bytes read so far put back in front, for the next
/// [`open_log`] of `path`.
pub fn peek_first_line(path: &Path) -> Result<String, OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = open_log(path)?;
    let mut consumed = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io_error)?;
        consumed.extend_from_slice(line.as_bytes());
        if n == 0 || !line.trim().is_empty() {
            break;
        }
    }
    let is_stream = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    if is_stream {
        let replay: LogReader = Box::new(io::Cursor::new(consumed).chain(reader));
        PENDING.lock_unpoisoned().push((path.to_owned(), replay));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_pipe_peeked_at_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut out = File::create(&fifo).unwrap();
                writeln!(out).unwrap();
                for i in 0..2000 {
                    writeln!(
                        out,
                        "{{\"line\": {i}, \"padding\": \"{}\"}}",
                        "x".repeat(60)
                    )
                    .unwrap();
                }
            })
        };
        let first = peek_first_line(&fifo).unwrap();
        assert!(first.starts_with("{\"line\": 0,"), "{first}");
        let mut all = String::new();
        open_log(&fifo).unwrap().read_to_string(&mut all).unwrap();
        writer.join().unwrap();
        assert_eq!(
            all.lines().filter(|l| !l.is_empty()).count(),
            2000,
            "every line read"
        );
    }

    #[test]
    fn gzip_and_plain_read_the_same() {
        let text = b"line one\nline two\n";
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).unwrap();
        let gz = encoder.finish().unwrap();
        let mut out = String::new();
        decompress(io::Cursor::new(gz))
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), text);
        let mut plain = String::new();
        decompress(io::Cursor::new(text.to_vec()))
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain.as_bytes(), text);
    }

    #[test]
    fn truncated_xz_is_an_error_not_a_panic() {
        let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
        for i in 0..2000 {
            writeln!(encoder, "line {i} with some padding to make it longer").unwrap();
        }
        let xz = encoder.finish().unwrap();
        let cut = xz[..xz.len() / 2].to_vec();
        let mut reader = decompress(io::Cursor::new(cut)).unwrap();
        let mut lines = 0;
        let mut failed = false;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => lines += 1,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a cut stream must report an error");
        assert!(lines > 0 && lines < 2000);
    }
}
