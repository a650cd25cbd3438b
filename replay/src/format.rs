//! The trace file's byte layout (docs/trace-format.md): a 16-byte preamble,
//! then self-delimiting frames, each a 28-byte header and a zstd frame, and
//! for a finished trace a 16-byte trailer pointing at the index frame.

use std::io::{self, Write};

use crate::error::TraceError;

pub const FILE_MAGIC: &[u8; 8] = b"RINGBACK";
/// Bumped on any change to the layout or to a frame's contents.
pub const FORMAT_VERSION: u32 = 8;
pub const PREAMBLE_LEN: usize = 16;

pub const FRAME_MAGIC: &[u8; 4] = b"RBFR";
pub const FRAME_HEADER_LEN: usize = 28;
/// A frame's uncompressed size at most; a larger claim is corruption.
pub const MAX_RAW_LEN: u32 = 1 << 30;

pub const TRAILER_MAGIC: &[u8; 8] = b"RBINDEX1";
pub const TRAILER_LEN: usize = 16;

/// zstd level: fast enough to keep up with the guest on one thread. Level
/// 3 did not with event-heavy guests (a port loop recorded at 0.55x its
/// speed, the writer thread the bottleneck; 0.75x at level 1), and a Linux
/// boot's trace is only 6% larger at 1.
pub const ZSTD_LEVEL: i32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FrameKind {
    Header = 1,
    Inputs = 2,
    Events = 3,
    Checkpoint = 4,
    Index = 5,
    End = 6,
    /// What the raw engine learned, just before each checkpoint.
    Learning = 7,
}

impl FrameKind {
    pub fn from_u8(v: u8) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Header,
            2 => FrameKind::Inputs,
            3 => FrameKind::Events,
            4 => FrameKind::Checkpoint,
            5 => FrameKind::Index,
            6 => FrameKind::End,
            7 => FrameKind::Learning,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Header => "header",
            FrameKind::Inputs => "inputs",
            FrameKind::Events => "events",
            FrameKind::Checkpoint => "checkpoint",
            FrameKind::Index => "index",
            FrameKind::End => "end",
            FrameKind::Learning => "learning",
        }
    }
}

/// A frame header as read from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub payload_len: u32,
    pub raw_len: u32,
    /// The icount the frame is about (a checkpoint's, an event batch's first).
    pub icount: u64,
    pub crc: u32,
}

pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(FILE_MAGIC);
    p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p
}

/// Checks the preamble: magic, then the format version.
pub fn check_preamble(bytes: &[u8]) -> Result<(), TraceError> {
    if bytes.len() < PREAMBLE_LEN {
        return Err(TraceError::Truncated {
            offset: 0,
            what: "the file preamble".into(),
        });
    }
    if &bytes[..8] != FILE_MAGIC {
        return Err(TraceError::NotATrace);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(TraceError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if bytes[12..PREAMBLE_LEN].iter().any(|&b| b != 0) {
        return Err(TraceError::Corrupt {
            offset: 12,
            what: "the preamble's reserved bytes are not zero".into(),
        });
    }
    Ok(())
}

fn crc_of(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    h.finalize()
}

/// A compressor for frames, kept from one frame to the next by a writer
/// (making one costs more than compressing a small frame).
pub fn frame_compressor() -> io::Result<zstd::bulk::Compressor<'static>> {
    zstd::bulk::Compressor::new(ZSTD_LEVEL)
}

/// Compresses `raw` and writes it as one frame; returns the bytes written.
pub fn write_frame(out: &mut impl Write, kind: FrameKind, icount: u64, raw: &[u8]) -> io::Result<u64> {
    write_frame_with(&mut frame_compressor()?, out, kind, icount, raw)
}

/// [`write_frame`] with a compressor of [`frame_compressor`]'s.
pub fn write_frame_with(
    compressor: &mut zstd::bulk::Compressor<'static>,
    out: &mut impl Write,
    kind: FrameKind,
    icount: u64,
    raw: &[u8],
) -> io::Result<u64> {
    let payload = compressor.compress(raw)?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..4].copy_from_slice(FRAME_MAGIC);
    header[4] = kind as u8;
    header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    header[16..24].copy_from_slice(&icount.to_le_bytes());
    let crc = crc_of(&header[..24], &payload);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    out.write_all(&header)?;
    out.write_all(&payload)?;
    Ok((FRAME_HEADER_LEN + payload.len()) as u64)
}

/// Parses the frame header at `offset` in `bytes`, checking what can be
/// checked without the payload.
pub fn read_frame_header(bytes: &[u8], offset: usize) -> Result<FrameHeader, TraceError> {
    let h = bytes
        .get(offset..offset + FRAME_HEADER_LEN)
        .ok_or_else(|| TraceError::Truncated {
            offset: offset as u64,
            what: "a frame header".into(),
        })?;
    if &h[..4] != FRAME_MAGIC {
        return Err(TraceError::Corrupt {
            offset: offset as u64,
            what: "no frame starts here (bad frame magic)".into(),
        });
    }
    let kind = FrameKind::from_u8(h[4]).ok_or_else(|| TraceError::Corrupt {
        offset: offset as u64,
        what: format!("unknown frame kind {}", h[4]),
    })?;
    if h[5..8].iter().any(|&b| b != 0) {
        return Err(TraceError::Corrupt {
            offset: offset as u64,
            what: format!("{} frame header's reserved bytes are not zero", kind.name()),
        });
    }
    let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut icount = [0u8; 8];
    icount.copy_from_slice(&h[16..24]);
    let header = FrameHeader {
        kind,
        payload_len: le32(8),
        raw_len: le32(12),
        icount: u64::from_le_bytes(icount),
        crc: le32(24),
    };
    if header.raw_len > MAX_RAW_LEN {
        return Err(TraceError::Corrupt {
            offset: offset as u64,
            what: format!("{} frame claims {} bytes uncompressed", kind.name(), header.raw_len),
        });
    }
    Ok(header)
}

/// The header of the frame at `offset`, with its payload present and its
/// checksum verified (the payload is not decompressed).
pub fn check_frame(bytes: &[u8], offset: usize) -> Result<FrameHeader, TraceError> {
    Ok(checked_payload(bytes, offset)?.0)
}

fn checked_payload(bytes: &[u8], offset: usize) -> Result<(FrameHeader, &[u8]), TraceError> {
    let header = read_frame_header(bytes, offset)?;
    let start = offset + FRAME_HEADER_LEN;
    let payload = bytes
        .get(start..start + header.payload_len as usize)
        .ok_or_else(|| TraceError::Truncated {
            offset: offset as u64,
            what: format!("the {} frame's payload", header.kind.name()),
        })?;
    if crc_of(&bytes[offset..offset + 24], payload) != header.crc {
        return Err(TraceError::Corrupt {
            offset: offset as u64,
            what: format!("{} frame checksum mismatch", header.kind.name()),
        });
    }
    Ok((header, payload))
}

/// The payload of the frame at `offset`, checksum verified, decompressed.
pub fn read_frame(bytes: &[u8], offset: usize) -> Result<(FrameHeader, Vec<u8>), TraceError> {
    let (header, payload) = checked_payload(bytes, offset)?;
    let raw = zstd::bulk::decompress(payload, header.raw_len as usize).map_err(|e| TraceError::Corrupt {
        offset: offset as u64,
        what: format!("{} frame does not decompress: {e}", header.kind.name()),
    })?;
    if raw.len() != header.raw_len as usize {
        return Err(TraceError::Corrupt {
            offset: offset as u64,
            what: format!("{} frame decompresses to the wrong size", header.kind.name()),
        });
    }
    Ok((header, raw))
}

pub fn trailer(index_offset: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(TRAILER_MAGIC);
    t[8..].copy_from_slice(&index_offset.to_le_bytes());
    t
}

/// The index frame's offset, if the file ends with a trailer.
pub fn read_trailer(bytes: &[u8]) -> Option<u64> {
    let t = bytes.get(bytes.len().checked_sub(TRAILER_LEN)?..)?;
    if &t[..8] != TRAILER_MAGIC {
        return None;
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&t[8..]);
    Some(u64::from_le_bytes(off))
}
