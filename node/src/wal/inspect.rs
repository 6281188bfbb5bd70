//! Reading a log file's frames as they lie on disk, without replaying anything: the entries
//! and the byte range of each. For tools and the simulation, which must know which votes a
//! damaged byte range destroyed. Not part of the node's API.

use std::ops::Range;

use super::format;
use super::{WAL_ENTRY_BYTES_MAX, WAL_FILE_HEADER_BYTES, WAL_FRAME_HEADER_BYTES, WalEntry};

/// One frame of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its bytes in the file, header included.
    pub bytes: Range<u64>,
    /// Its entry, if it decodes.
    pub entry: Option<WalEntry>,
}

/// The valid frames of `file` (a segment's or snapshot's bytes), in order from the header
/// on, up to the first byte that is no valid frame (a snapshot's footer, a torn tail, or
/// damage).
pub fn frames(file: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = WAL_FILE_HEADER_BYTES;
    while let Some(header) = file.get(at..at + WAL_FRAME_HEADER_BYTES) {
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (length, stored) = (word(0) as usize, word(4));
        if !(1..=WAL_ENTRY_BYTES_MAX).contains(&length) {
            break;
        }
        let payload_at = at + WAL_FRAME_HEADER_BYTES;
        let Some(payload) = file.get(payload_at..payload_at + length) else {
            break;
        };
        if crc32c::crc32c(payload) != stored {
            break;
        }
        let end = payload_at + length;
        frames.push(Frame {
            bytes: at as u64..end as u64,
            entry: format::decode_entry(payload).ok(),
        });
        at = end;
    }
    frames
}
