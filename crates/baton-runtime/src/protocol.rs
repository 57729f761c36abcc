//! The worker protocol: frames on a worker's stdin and stdout. A frame is one kind byte, a
//! big-endian `u32` length and that many payload bytes. The worker writes `R` (ready) once
//! its imports are done; the host writes `I` (invoke, the payload); the worker answers `O`
//! (ok, the result) or `E` (error, a message). Nothing else is written on stdout (the
//! Python helper sends `print` to stderr).

use std::io::{self, Read, Write};
use thiserror::Error;

/// Largest payload a frame may carry (64 MiB).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Worker → host: initialised.
    Ready,
    /// Host → worker: run with this payload.
    Invoke,
    /// Worker → host: the result.
    Ok,
    /// Worker → host: the function failed, with a message.
    Error,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Ready => b'R',
            FrameKind::Invoke => b'I',
            FrameKind::Ok => b'O',
            FrameKind::Error => b'E',
        }
    }

    fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            b'R' => FrameKind::Ready,
            b'I' => FrameKind::Invoke,
            b'O' => FrameKind::Ok,
            b'E' => FrameKind::Error,
            _ => return None,
        })
    }
}

/// A broken frame.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// Reading or writing failed.
    #[error("worker pipe: {0}")]
    Io(#[from] io::Error),
    /// An unknown kind byte.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A payload over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Writes one frame.
pub fn write_frame(
    out: &mut impl Write,
    kind: FrameKind,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(payload.len()));
    }
    let mut head = [0u8; 5];
    head[0] = kind.byte();
    head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    out.write_all(&head)?;
    out.write_all(payload)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> Result<Option<(FrameKind, Vec<u8>)>, ProtocolError> {
    let mut head = [0u8; 5];
    let mut filled = 0;
    while filled < head.len() {
        match input.read(&mut head[filled..])? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(ProtocolError::Truncated),
            n => filled += n,
        }
    }
    let kind = FrameKind::from_byte(head[0]).ok_or(ProtocolError::UnknownKind(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    Ok(Some((kind, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, FrameKind::Invoke, b"hello").unwrap();
        write_frame(&mut buffer, FrameKind::Ready, b"").unwrap();
        let mut reader = buffer.as_slice();
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            Some((FrameKind::Invoke, b"hello".to_vec()))
        );
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            Some((FrameKind::Ready, Vec::new()))
        );
        assert!(read_frame(&mut reader).unwrap().is_none());
        assert!(matches!(
            read_frame(&mut &b"X\0\0\0\0"[..]),
            Err(ProtocolError::UnknownKind(b'X'))
        ));
        assert!(matches!(
            read_frame(&mut &b"O\0\0\0\x05ab"[..]),
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut &b"O\xff\xff\xff\xff"[..]),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame(&mut &b"O\0"[..]),
            Err(ProtocolError::Truncated)
        ));
    }
}
