//! Opening a trace: the preamble, the index (validated, and checked against
//! the frames it names) or, for a trace whose recorder was killed, a scan of
//! the frames up to the first one that is cut short or damaged.

use std::path::Path;

use serde::de::DeserializeOwned;
use vm::events::EventRecord;

use crate::error::{Result, TraceError};
use crate::format::{self, FrameKind};
use crate::model::{
    ArchivedTraceIndex, Checkpoint, EndInfo, EventBatch, FrameEntry, InputBatch, InputRecord, TraceHeader,
};

/// An open trace.
#[derive(Debug)]
pub struct Trace {
    bytes: Vec<u8>,
    pub header: TraceHeader,
    /// Every readable frame, in file order.
    pub frames: Vec<FrameEntry>,
    /// The End frame, when the recording finished.
    pub end: Option<EndInfo>,
    /// Whether the frames came from a valid index (a finished recording).
    pub indexed: bool,
    /// Why the frames stop early, for a trace whose recorder died.
    pub damage: Option<String>,
}

fn decode<T: DeserializeOwned>(raw: &[u8], offset: u64, frame: &'static str) -> Result<T> {
    postcard::from_bytes(raw).map_err(|source| TraceError::Decode { offset, frame, source })
}

impl Trace {
    pub fn open(path: &Path) -> Result<Trace> {
        let bytes = std::fs::read(path).map_err(|source| TraceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Trace::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Trace> {
        format::check_preamble(&bytes)?;
        let (frames, indexed, damage) = match index_frames(&bytes) {
            Some(frames) => (frames, true, None),
            None => {
                let (frames, damage) = scan_frames(&bytes);
                (frames, false, damage)
            }
        };
        let first = frames.first().ok_or(TraceError::Missing("header frame"))?;
        if first.kind != FrameKind::Header as u8 {
            return Err(TraceError::Corrupt {
                offset: first.offset,
                what: "the first frame is not the header".into(),
            });
        }
        let (_, raw) = format::read_frame(&bytes, first.offset as usize)?;
        let header: TraceHeader = decode(&raw, first.offset, "header")?;
        let mut trace = Trace {
            bytes,
            header,
            frames,
            end: None,
            indexed,
            damage,
        };
        if let Some(e) = trace.frames_of(FrameKind::End).last().cloned() {
            trace.end = Some(trace.decode_frame(&e, "end")?);
        }
        Ok(trace)
    }

    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn frames_of(&self, kind: FrameKind) -> impl Iterator<Item = &FrameEntry> + '_ {
        self.frames.iter().filter(move |f| f.kind == kind as u8)
    }

    fn decode_frame<T: DeserializeOwned>(&self, f: &FrameEntry, name: &'static str) -> Result<T> {
        let (_, raw) = format::read_frame(&self.bytes, f.offset as usize)?;
        decode(&raw, f.offset, name)
    }

    /// The checkpoints' icounts and frames, in order.
    pub fn checkpoint_frames(&self) -> Vec<FrameEntry> {
        self.frames_of(FrameKind::Checkpoint).cloned().collect()
    }

    pub fn checkpoint(&self, f: &FrameEntry) -> Result<Checkpoint> {
        self.decode_frame(f, "checkpoint")
    }

    /// The whole input log, in the order the machine asked.
    pub fn inputs(&self) -> Result<Vec<InputRecord>> {
        let mut out = Vec::new();
        for f in self.frames_of(FrameKind::Inputs) {
            let b: InputBatch = self.decode_frame(f, "inputs")?;
            out.extend(b.records);
        }
        Ok(out)
    }

    /// The events of one batch frame.
    pub fn event_batch(&self, f: &FrameEntry) -> Result<Vec<EventRecord>> {
        Ok(self.decode_frame::<EventBatch>(f, "events")?.events)
    }

    /// Events of the batches overlapping `[from, to)`, filtered to that range.
    pub fn events(&self, from: u64, to: u64) -> Result<Vec<EventRecord>> {
        let batches: Vec<&FrameEntry> = self.frames_of(FrameKind::Events).collect();
        let mut out = Vec::new();
        for (i, f) in batches.iter().enumerate() {
            let next_start = batches.get(i + 1).map_or(u64::MAX, |n| n.icount);
            if f.icount >= to || next_start < from {
                continue;
            }
            let b: EventBatch = self.decode_frame(f, "events")?;
            out.extend(b.events.into_iter().filter(|e| e.icount >= from && e.icount < to));
        }
        Ok(out)
    }

    /// The first event after `icount` (exclusive) that `filter` accepts.
    pub fn next_event(&self, icount: u64, filter: &dyn Fn(&EventRecord) -> bool) -> Result<Option<EventRecord>> {
        let batches: Vec<&FrameEntry> = self.frames_of(FrameKind::Events).collect();
        for (i, f) in batches.iter().enumerate() {
            let next_start = batches.get(i + 1).map_or(u64::MAX, |n| n.icount);
            // Batch i holds events up to the next batch's first icount.
            if next_start <= icount {
                continue;
            }
            let b: EventBatch = self.decode_frame(f, "events")?;
            if let Some(e) = b.events.into_iter().find(|e| e.icount > icount && filter(e)) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The last event before `icount` (exclusive) that `filter` accepts.
    pub fn prev_event(&self, icount: u64, filter: &dyn Fn(&EventRecord) -> bool) -> Result<Option<EventRecord>> {
        let batches: Vec<&FrameEntry> = self.frames_of(FrameKind::Events).collect();
        for f in batches.iter().rev() {
            if f.icount >= icount {
                continue;
            }
            let b: EventBatch = self.decode_frame(f, "events")?;
            if let Some(e) = b.events.into_iter().rev().find(|e| e.icount < icount && filter(e)) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Every frame's payload checks out (checksum, decompression, decoding).
    pub fn check_all(&self) -> Result<()> {
        for f in &self.frames {
            let (_, raw) = format::read_frame(&self.bytes, f.offset as usize)?;
            match FrameKind::from_u8(f.kind) {
                Some(FrameKind::Checkpoint) => drop(decode::<Checkpoint>(&raw, f.offset, "checkpoint")?),
                Some(FrameKind::Events) => drop(decode::<EventBatch>(&raw, f.offset, "events")?),
                Some(FrameKind::Inputs) => drop(decode::<InputBatch>(&raw, f.offset, "inputs")?),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The frames the index lists, if the file ends with a trailer whose index
/// validates and agrees with every frame header it names.
fn index_frames(bytes: &[u8]) -> Option<Vec<FrameEntry>> {
    let at = format::read_trailer(bytes)? as usize;
    let (h, raw) = format::read_frame(bytes, at).ok()?;
    if h.kind != FrameKind::Index {
        return None;
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&raw);
    let archived = rkyv::access::<ArchivedTraceIndex, rkyv::rancor::Error>(&aligned).ok()?;
    let mut frames = Vec::with_capacity(archived.frames.len());
    for e in archived.frames.iter() {
        let entry = FrameEntry {
            kind: e.kind,
            offset: e.offset.to_native(),
            icount: e.icount.to_native(),
            payload_len: e.payload_len.to_native(),
            raw_len: e.raw_len.to_native(),
        };
        // Never trusted blindly: each entry must name a real frame header.
        let fh = format::read_frame_header(bytes, usize::try_from(entry.offset).ok()?).ok()?;
        if fh.kind as u8 != entry.kind || fh.icount != entry.icount || fh.payload_len != entry.payload_len {
            return None;
        }
        frames.push(entry);
    }
    Some(frames)
}

/// Walks the frames from the start; stops at the end of the file or at the
/// first frame that is cut short or damaged, saying why.
fn scan_frames(bytes: &[u8]) -> (Vec<FrameEntry>, Option<String>) {
    let mut frames = Vec::new();
    let mut offset = format::PREAMBLE_LEN;
    while offset < bytes.len() {
        if bytes.len() - offset == format::TRAILER_LEN && format::read_trailer(bytes).is_some() {
            break;
        }
        match format::read_frame(bytes, offset) {
            Ok((h, _)) => {
                frames.push(FrameEntry {
                    kind: h.kind as u8,
                    offset: offset as u64,
                    icount: h.icount,
                    payload_len: h.payload_len,
                    raw_len: h.raw_len,
                });
                offset += format::FRAME_HEADER_LEN + h.payload_len as usize;
            }
            Err(e) => return (frames, Some(e.to_string())),
        }
    }
    (frames, None)
}
