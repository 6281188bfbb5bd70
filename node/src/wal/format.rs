//! The write-ahead log's bytes on disk, and nothing else: file names, the file header, entry
//! frames, the snapshot footer, and a windowed reader that walks frames during recovery.
//!
//! Every integer is little-endian.
//!
//! ```text
//! file header (32 bytes):
//!   [0..8)   magic  b"TALLYWAL"
//!   [8..12)  format version (u32) = WAL_FORMAT_VERSION
//!   [12..16) kind (u32): 1 = log segment, 2 = snapshot
//!   [16..24) number (u64): the N in the file name
//!   [24..28) zero
//!   [28..32) CRC-32C of bytes [0..28)
//! frame, repeated:
//!   [u32 length: 1..=WAL_ENTRY_BYTES_MAX][u32 CRC-32C of payload][payload = postcard(WalEntry)]
//! snapshot footer (24 bytes, last in a snapshot, absent from segments):
//!   [u32 0xFFFF_FFFF][u32 CRC-32C of the next 16 bytes][u64 entries][u64 frame bytes]
//! fill (segments only, after the last frame: space written ahead of appends):
//!   the byte at file offset o is FILL_PATTERN[o % 8], to the end of the file
//! ```
//!
//! What it promises: a frame is accepted only if its length is in range, all its bytes are
//! present and its checksum matches; a zero-filled region never passes (length 0 is refused).
//! [`find_frame`] looks for the next such frame after a bad one, byte by byte, so recovery
//! can tell damage (valid frames follow) from a torn tail (none does).

use crate::storage::{Storage, StorageFile};

use super::{
    CorruptionReason, WAL_ENTRY_BYTES_MAX, WAL_FILE_HEADER_BYTES, WAL_FORMAT_VERSION,
    WAL_FRAME_HEADER_BYTES, WAL_READ_CHUNK_BYTES, WalEntry, WalError,
};

/// The first bytes of every log file.
const MAGIC: [u8; 8] = *b"TALLYWAL";

/// The length field that marks a snapshot's footer instead of a frame.
const FOOTER_MARK: u32 = u32::MAX;

/// Bytes of a snapshot footer.
pub(super) const FOOTER_BYTES: usize = 24;

/// What a segment holds after its last frame where the log wrote space ahead of its appends
/// ([`super::Wal::fill_ahead`]): the byte at file offset `o` is `FILL_PATTERN[o % 8]`.
/// Recovery reads a segment that holds nothing but this pattern after a valid frame as
/// ending cleanly there. The pattern is never a frame (any 4 of its bytes read as a length
/// exceed [`WAL_ENTRY_BYTES_MAX`]), and no failing disk writes it: a zeroed sector, a flipped
/// byte or a torn append in the last frames or in the fill still reads as a torn tail.
pub(super) const FILL_PATTERN: [u8; 8] = *b"TallyPad";

/// Bytes of [`FILL`], the largest piece of fill written at once.
pub(super) const FILL_CHUNK_BYTES: usize = 64 << 10;

/// [`FILL_PATTERN`] from phase 0, 8 bytes longer than a chunk so that a write at any offset
/// takes its piece from the right phase (`&FILL[o % 8..][..n]`).
pub(super) static FILL: [u8; FILL_CHUNK_BYTES + 8] = {
    let mut fill = [0u8; FILL_CHUNK_BYTES + 8];
    let mut i = 0;
    while i < fill.len() {
        fill[i] = FILL_PATTERN[i % 8];
        i += 1;
    }
    fill
};

// Every byte of the pattern is printable ASCII (≥ 0x20), so any 4 of them read as a
// little-endian length are ≥ 0x2000_0000: never a frame's length, never the footer's mark.
const _: () = {
    let mut i = 0;
    while i < 8 {
        assert!(FILL_PATTERN[i] >= 0x20 && FILL_PATTERN[i] < 0x7f);
        i += 1;
    }
    assert!(0x2000_0000 > WAL_ENTRY_BYTES_MAX);
};

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";
/// What a damaged file's copy adds to its name: `wal-….log.damaged-1`. The log ignores such
/// names (they are not its own), so the copy stays for the operator until removed by hand.
const DAMAGED_SUFFIX: &str = ".damaged-";
/// Digits of the number in a file name: every u64 fits, and names sort by number.
const NUMBER_DIGITS: usize = 20;

/// What a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileKind {
    /// Entries appended since the snapshot of the same number.
    Segment = 1,
    /// The whole state at the start of the segment of the same number.
    Snapshot = 2,
}

/// A file name the log recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogFile {
    /// `wal-N.log`
    Segment(u64),
    /// `snapshot-N.snap`
    Snapshot(u64),
    /// `snapshot-N.snap.tmp`: a snapshot that was never finished.
    SnapshotTemp(u64),
}

pub(super) fn segment_name(number: u64) -> String {
    format!("{SEGMENT_PREFIX}{number:020}{SEGMENT_SUFFIX}")
}

pub(super) fn snapshot_name(number: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{number:020}{SNAPSHOT_SUFFIX}")
}

pub(super) fn snapshot_temp_name(number: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{number:020}{SNAPSHOT_SUFFIX}{TEMP_SUFFIX}")
}

/// The first name `name.damaged-N` (N = 1, 2, …) that `taken` does not hold.
pub(super) fn damaged_copy_name(name: &str, taken: &[String]) -> String {
    (1u32..)
        .map(|n| format!("{name}{DAMAGED_SUFFIX}{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| unreachable!("u32 copies of one file"))
}

fn parse_number(digits: &str) -> Option<u64> {
    let well_formed = digits.len() == NUMBER_DIGITS && digits.bytes().all(|b| b.is_ascii_digit());
    well_formed.then(|| digits.parse().ok()).flatten()
}

/// Recognises the log's own file names; anything else is not ours.
pub(super) fn parse_name(name: &str) -> Option<LogFile> {
    if let Some(rest) = name.strip_prefix(SEGMENT_PREFIX) {
        return parse_number(rest.strip_suffix(SEGMENT_SUFFIX)?).map(LogFile::Segment);
    }
    let rest = name.strip_prefix(SNAPSHOT_PREFIX)?;
    if let Some(rest) = rest.strip_suffix(TEMP_SUFFIX) {
        return parse_number(rest.strip_suffix(SNAPSHOT_SUFFIX)?).map(LogFile::SnapshotTemp);
    }
    parse_number(rest.strip_suffix(SNAPSHOT_SUFFIX)?).map(LogFile::Snapshot)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The header of file `number` of `kind`.
pub(super) fn file_header(kind: FileKind, number: u64) -> [u8; WAL_FILE_HEADER_BYTES] {
    let mut header = [0u8; WAL_FILE_HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    header[16..24].copy_from_slice(&number.to_le_bytes());
    let checksum = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Checks a file's header against the file's name. A version this build does not read is an
/// error (never "corruption": the file must not be truncated).
pub(super) fn check_file_header(
    reader: &mut FileReader<'_>,
    name: &str,
    kind: FileKind,
    number: u64,
) -> Result<Result<(), CorruptionReason>, WalError> {
    let available = reader.len();
    let header = match reader.bytes(0, WAL_FILE_HEADER_BYTES) {
        Ok(Some(header)) => header,
        Ok(None) => return Ok(Err(CorruptionReason::TornFileHeader { available })),
        Err(error) => return Err(WalError::io("read", name, error)),
    };
    if header[0..8] != MAGIC {
        return Ok(Err(CorruptionReason::BadMagic));
    }
    if crc32c::crc32c(&header[..28]) != u32_at(header, 28) {
        return Ok(Err(CorruptionReason::BadHeaderChecksum));
    }
    let version = u32_at(header, 8);
    if version != WAL_FORMAT_VERSION {
        return Err(WalError::UnsupportedVersion {
            file: name.to_owned(),
            found: version,
        });
    }
    let (found_kind, found_number) = (u32_at(header, 12), u64_at(header, 16));
    if found_kind != kind as u32 || found_number != number {
        return Ok(Err(CorruptionReason::HeaderMismatch {
            kind: found_kind,
            number: found_number,
        }));
    }
    Ok(Ok(()))
}

/// Creates file `number` of `kind` holding only its header, fsynced (the name is durable only
/// after the caller syncs the directory).
pub(super) fn create_file<S: Storage>(
    storage: &S,
    kind: FileKind,
    number: u64,
) -> Result<S::File, WalError> {
    let name = match kind {
        FileKind::Segment => segment_name(number),
        FileKind::Snapshot => snapshot_name(number),
    };
    let mut file = storage
        .create(&name)
        .map_err(|error| WalError::io("create", &name, error))?;
    file.write_all_at(&file_header(kind, number), 0)
        .map_err(|error| WalError::io("write", &name, error))?;
    file.sync_data()
        .map_err(|error| WalError::io("sync", &name, error))?;
    Ok(file)
}

/// Lets postcard append to a borrowed `Vec` (its `Extend` flavor takes the sink by value).
struct VecSink<'a>(&'a mut Vec<u8>);

impl Extend<u8> for VecSink<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Appends `entry`'s frame to `buffer` and returns its size (header included). On error the
/// buffer is as it was.
pub(super) fn encode_frame(buffer: &mut Vec<u8>, entry: &WalEntry) -> Result<usize, WalError> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; WAL_FRAME_HEADER_BYTES]);
    if let Err(error) = postcard::to_extend(entry, VecSink(buffer)) {
        buffer.truncate(start);
        return Err(WalError::Encode {
            message: error.to_string(),
        });
    }
    let payload_start = start + WAL_FRAME_HEADER_BYTES;
    let length = buffer.len() - payload_start;
    if length > WAL_ENTRY_BYTES_MAX {
        buffer.truncate(start);
        return Err(WalError::EntryTooLarge { bytes: length });
    }
    // Every entry encodes its variant tag, so no frame is empty (length 0 means "not ours").
    assert!(length >= 1, "an encoded entry is never empty");
    let checksum = crc32c::crc32c(&buffer[payload_start..]);
    // Lossless: WAL_ENTRY_BYTES_MAX < u32::MAX (asserted at compile time in log.rs).
    let length_field = length as u32;
    buffer[start..start + 4].copy_from_slice(&length_field.to_le_bytes());
    buffer[start + 4..payload_start].copy_from_slice(&checksum.to_le_bytes());
    Ok(WAL_FRAME_HEADER_BYTES + length)
}

/// Asserts, right before `frames` are written, that they are whole frames of legal lengths
/// laid end to end (TigerBeetle: assert on both sides of the disk).
pub(super) fn assert_frames(frames: &[u8]) {
    let mut at = 0;
    while at < frames.len() {
        assert!(
            frames.len() - at >= WAL_FRAME_HEADER_BYTES,
            "a frame header is cut at byte {at}"
        );
        let length = u32_at(frames, at) as usize;
        assert!(
            (1..=WAL_ENTRY_BYTES_MAX).contains(&length),
            "frame length {length} out of range at byte {at}"
        );
        at += WAL_FRAME_HEADER_BYTES + length;
    }
    assert_eq!(at, frames.len(), "the last frame overruns the buffer");
}

/// The footer that closes a snapshot of `entries` entries in `bytes` frame bytes.
pub(super) fn snapshot_footer(entries: u64, bytes: u64) -> [u8; FOOTER_BYTES] {
    let mut footer = [0u8; FOOTER_BYTES];
    footer[0..4].copy_from_slice(&FOOTER_MARK.to_le_bytes());
    footer[8..16].copy_from_slice(&entries.to_le_bytes());
    footer[16..24].copy_from_slice(&bytes.to_le_bytes());
    let checksum = crc32c::crc32c(&footer[8..24]);
    footer[4..8].copy_from_slice(&checksum.to_le_bytes());
    footer
}

/// Reads a file through a window of [`WAL_READ_CHUNK_BYTES`], so walking small frames does
/// not cost one storage read each.
pub(super) struct FileReader<'a> {
    file: &'a dyn StorageFile,
    len: u64,
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> FileReader<'a> {
    pub(super) fn new(file: &'a dyn StorageFile, len: u64) -> Self {
        Self {
            file,
            len,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// The file's length when the reader was made.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes `[offset, offset + count)`, or `None` if the file ends first.
    pub(super) fn bytes(&mut self, offset: u64, count: usize) -> std::io::Result<Option<&[u8]>> {
        let Some(end) = offset
            .checked_add(count as u64)
            .filter(|&end| end <= self.len)
        else {
            return Ok(None);
        };
        let window_end = self.window_start + self.window.len() as u64;
        if offset < self.window_start || end > window_end {
            let wanted = count.max(WAL_READ_CHUNK_BYTES) as u64;
            let refill = wanted.min(self.len - offset) as usize;
            self.window.clear();
            self.window.resize(refill, 0);
            self.file.read_exact_at(&mut self.window, offset)?;
            self.window_start = offset;
        }
        let from = (offset - self.window_start) as usize;
        Ok(Some(&self.window[from..from + count]))
    }
}

/// One step of walking a file's frames.
#[derive(Debug)]
pub(super) enum Step<'r> {
    /// The file ends exactly here.
    End,
    /// A frame whose length and checksum are good.
    Frame(&'r [u8]),
    /// A snapshot footer (only when footers are allowed): (entries, frame bytes), checked.
    Footer {
        /// Entries the footer counts.
        entries: u64,
        /// Frame bytes the footer counts.
        bytes: u64,
    },
    /// Damage: nothing from here on can be trusted.
    Corrupt(CorruptionReason),
}

/// Reads the frame (or footer, if `footers`) at `offset`.
pub(super) fn read_step<'r>(
    reader: &'r mut FileReader<'_>,
    offset: u64,
    footers: bool,
) -> std::io::Result<Step<'r>> {
    let available = reader.len() - offset;
    if available == 0 {
        return Ok(Step::End);
    }
    let Some(header) = reader.bytes(offset, WAL_FRAME_HEADER_BYTES)? else {
        return Ok(Step::Corrupt(CorruptionReason::TornFrameHeader {
            available,
        }));
    };
    let (length, stored) = (u32_at(header, 0), u32_at(header, 4));
    if footers && length == FOOTER_MARK {
        return read_footer(reader, offset);
    }
    if length == 0 {
        return Ok(Step::Corrupt(CorruptionReason::ZeroLength));
    }
    if length as usize > WAL_ENTRY_BYTES_MAX {
        return Ok(Step::Corrupt(CorruptionReason::LengthTooLarge { length }));
    }
    let payload_offset = offset + WAL_FRAME_HEADER_BYTES as u64;
    let Some(payload) = reader.bytes(payload_offset, length as usize)? else {
        let available = available - WAL_FRAME_HEADER_BYTES as u64;
        return Ok(Step::Corrupt(CorruptionReason::TornPayload {
            length,
            available,
        }));
    };
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Ok(Step::Corrupt(CorruptionReason::BadChecksum {
            stored,
            computed,
        }));
    }
    // Asserted right after reading: the frame is exactly what its header promised.
    assert_eq!(
        payload.len(),
        length as usize,
        "the reader returned a short frame"
    );
    Ok(Step::Frame(payload))
}

fn read_footer<'r>(reader: &'r mut FileReader<'_>, offset: u64) -> std::io::Result<Step<'r>> {
    let bad = |what| Ok(Step::Corrupt(CorruptionReason::BadFooter { what }));
    let Some(footer) = reader.bytes(offset, FOOTER_BYTES)? else {
        return bad("torn");
    };
    if crc32c::crc32c(&footer[8..24]) != u32_at(footer, 4) {
        return bad("checksum mismatch");
    }
    let (entries, bytes) = (u64_at(footer, 8), u64_at(footer, 16));
    if offset + FOOTER_BYTES as u64 != reader.len() {
        return bad("bytes follow it");
    }
    Ok(Step::Footer { entries, bytes })
}

/// The offset of the first valid frame (length in range, every byte present, checksum
/// matching) that starts at or after `from`, if any: where replay resumes after damage.
///
/// Byte by byte: a candidate's length and its payload's first byte (the entry's variant tag,
/// below [`super::WAL_ENTRY_TAGS`]) are checked before its checksum, so random bytes cost
/// little and zeros nothing (length 0 is never a frame). A false match needs a 32-bit
/// checksum to agree by chance, and replay still decodes the entry.
pub(super) fn find_frame(reader: &mut FileReader<'_>, from: u64) -> std::io::Result<Option<u64>> {
    let len = reader.len();
    let mut at = from;
    while at + (WAL_FRAME_HEADER_BYTES as u64) < len {
        if let Some(header) = reader.bytes(at, WAL_FRAME_HEADER_BYTES)? {
            let (length, stored) = (u32_at(header, 0), u32_at(header, 4));
            let payload_at = at + WAL_FRAME_HEADER_BYTES as u64;
            let fits = (1..=WAL_ENTRY_BYTES_MAX as u64).contains(&u64::from(length))
                && payload_at + u64::from(length) <= len;
            let tag_ok = fits
                && reader
                    .bytes(payload_at, 1)?
                    .is_some_and(|tag| tag[0] < super::WAL_ENTRY_TAGS);
            if tag_ok {
                if let Some(payload) = reader.bytes(payload_at, length as usize)? {
                    if crc32c::crc32c(payload) == stored {
                        return Ok(Some(at));
                    }
                }
            }
        }
        at += 1;
    }
    Ok(None)
}

/// [`FILL_CHUNK_BYTES`] zeros, what zero-filled space holds.
static ZEROS: [u8; FILL_CHUNK_BYTES] = [0; FILL_CHUNK_BYTES];

/// Whether every byte from `from` to the end of the file is zero.
pub(super) fn zeros_to_end(reader: &mut FileReader<'_>, from: u64) -> std::io::Result<bool> {
    Ok(first_difference(reader, from, |_, count| &ZEROS[..count])?.is_none())
}

/// The first byte from `from` to the end of the file that is not the fill
/// ([`FILL_PATTERN`] at its offset), or `None` if every one is.
pub(super) fn fill_differs(reader: &mut FileReader<'_>, from: u64) -> std::io::Result<Option<u64>> {
    first_difference(reader, from, |at, count| {
        &FILL[(at % 8) as usize..][..count]
    })
}

/// The first byte from `from` to the end of the file that differs from what `expected` says
/// the `count` (at most [`FILL_CHUNK_BYTES`]) bytes at an offset should be, or `None`.
fn first_difference(
    reader: &mut FileReader<'_>,
    from: u64,
    expected: impl Fn(u64, usize) -> &'static [u8],
) -> std::io::Result<Option<u64>> {
    let len = reader.len();
    let mut at = from;
    while at < len {
        let count = (len - at).min(FILL_CHUNK_BYTES as u64) as usize;
        let Some(bytes) = reader.bytes(at, count)? else {
            return Ok(Some(at));
        };
        if let Some(i) = bytes
            .iter()
            .zip(expected(at, count))
            .position(|(a, b)| a != b)
        {
            return Ok(Some(at + i as u64));
        }
        at += count as u64;
    }
    Ok(None)
}

/// Decodes a frame's payload; the whole payload must be one entry.
pub(super) fn decode_entry(payload: &[u8]) -> Result<WalEntry, CorruptionReason> {
    match postcard::take_from_bytes::<WalEntry>(payload) {
        Ok((entry, [])) => Ok(entry),
        Ok((_, rest)) => Err(CorruptionReason::Undecodable {
            message: format!("{} bytes follow the entry", rest.len()),
        }),
        Err(error) => Err(CorruptionReason::Undecodable {
            message: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the log's file names round-trip and nothing else is taken for one. Method: parse
    /// generated names and near misses.
    #[test]
    fn only_the_logs_own_names_are_recognised() {
        assert_eq!(parse_name(&segment_name(7)), Some(LogFile::Segment(7)));
        assert_eq!(
            parse_name(&snapshot_name(u64::MAX)),
            Some(LogFile::Snapshot(u64::MAX))
        );
        assert_eq!(
            parse_name(&snapshot_temp_name(3)),
            Some(LogFile::SnapshotTemp(3))
        );
        let copy = damaged_copy_name(&segment_name(7), &[]);
        assert_eq!(copy, "wal-00000000000000000007.log.damaged-1");
        assert_eq!(
            damaged_copy_name(&segment_name(7), std::slice::from_ref(&copy)),
            "wal-00000000000000000007.log.damaged-2"
        );
        for other in [
            copy.as_str(),
            "wal-7.log",
            "wal-0000000000000000000x.log",
            "wal-00000000000000000007.log.bak",
            "snapshot-00000000000000000007.snapx",
            "snapshot-99999999999999999999.snap",
            "README",
        ] {
            assert_eq!(parse_name(other), None, "{other:?}");
        }
    }

    /// Goal: `WAL_ENTRY_TAGS` bounds every entry's variant tag, which recovery's search for
    /// a valid frame after damage relies on. Method: encode one entry of each variant (the
    /// match breaks the build when a variant is added) and read its payload's first byte.
    #[test]
    fn every_entry_variant_tag_is_below_wal_entry_tags() {
        use tally_core::{ActorId, NodeId, PollId, RecordBatch};
        let actor = ActorId {
            node: NodeId::new("n").expect("valid name"),
            incarnation: 1,
        };
        let poll = PollId::new("p").expect("valid name");
        let entries = [
            WalEntry::Records(RecordBatch::new(poll.clone(), actor.clone(), 1)),
            WalEntry::Poll(
                tally_core::PollSpec::new(
                    poll.clone(),
                    ["a", "b"]
                        .map(|n| tally_core::OptionName::new(n).expect("valid name"))
                        .to_vec(),
                    tally_core::PollWindow::default(),
                )
                .expect("valid poll"),
            ),
            WalEntry::Identity(actor.clone()),
            WalEntry::Reserve {
                poll: poll.clone(),
                vote_ids: 1,
            },
            WalEntry::Incarnation {
                actor: actor.clone(),
                retired: actor,
                durable_through: vec![(poll, 1)],
            },
        ];
        for (index, entry) in entries.iter().enumerate() {
            let expected = match entry {
                WalEntry::Records(_) => 0,
                WalEntry::Poll(_) => 1,
                WalEntry::Identity(_) => 2,
                WalEntry::Reserve { .. } => 3,
                WalEntry::Incarnation { .. } => 4,
            };
            assert_eq!(expected, index);
            let mut buffer = Vec::new();
            encode_frame(&mut buffer, entry).expect("encodes");
            let tag = buffer[WAL_FRAME_HEADER_BYTES];
            assert_eq!(usize::from(tag), index);
            assert!(tag < super::super::WAL_ENTRY_TAGS);
        }
        assert_eq!(usize::from(super::super::WAL_ENTRY_TAGS), entries.len());
    }

    /// Goal: a frame header written for an entry passes the pre-write assertion. Method:
    /// encode two polls and assert the buffer.
    #[test]
    fn encoded_frames_pass_the_write_assertion() {
        use tally_core::{OptionName, PollId, PollSpec, PollWindow};
        let options = ["a", "b"].map(|n| OptionName::new(n).expect("valid name"));
        let spec = PollSpec::new(
            PollId::new("p").expect("valid name"),
            options.to_vec(),
            PollWindow::default(),
        )
        .expect("valid poll");
        let mut buffer = Vec::new();
        let first = encode_frame(&mut buffer, &WalEntry::Poll(spec.clone())).expect("encodes");
        let second = encode_frame(&mut buffer, &WalEntry::Poll(spec)).expect("encodes");
        assert_eq!(first + second, buffer.len());
        assert_frames(&buffer);
    }
}
