//! Opening a trace: the preamble, the index (validated, and checked against
//! the frames it names) or, for a trace whose recorder was killed, a scan of
//! the frames up to the first one that is cut short or damaged.

use std::path::Path;

use serde::de::DeserializeOwned;
use vm::events::EventRecord;

use crate::error::{Result, TraceError};
use crate::format::{self, FrameKind};
use crate::model::{
    ArchivedTraceIndex, Checkpoint, CheckpointFrame, EndInfo, EventBatch, FrameEntry, InputBatch, InputRecord,
    LearningFrame, TraceHeader,
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
    /// Why the frames stop early, for a trace whose recorder died in the
    /// middle of a frame (`None` with no end frame: it died between frames).
    pub damage: Option<String>,
}

/// Decodes a whole payload: bytes left over mean the frame is not what its
/// kind says.
pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8], offset: u64, frame: &'static str) -> Result<T> {
    let (value, rest) =
        postcard::take_from_bytes(raw).map_err(|source| TraceError::Decode { offset, frame, source })?;
    if !rest.is_empty() {
        return Err(TraceError::Corrupt {
            offset,
            what: format!("the {frame} frame has {} bytes after its contents", rest.len()),
        });
    }
    Ok(value)
}

/// How the walk over the frames ended.
enum Tail {
    /// At the end of the file, between frames.
    Clean,
    /// At a trailer (the last 16 bytes) pointing at `index`.
    Trailer { index: u64 },
    /// In a frame the file ends before: where, and what is cut short.
    Truncated(TraceError),
}

impl Trace {
    pub fn open(path: &Path) -> Result<Trace> {
        let bytes = std::fs::read(path).map_err(|source| TraceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Trace::from_bytes(bytes)
    }

    /// Opens a trace from its bytes. Every frame header and checksum is
    /// checked, and the frames' order and positions against each other and
    /// against the index: a finished recording (one with an end frame, an
    /// index or a trailer) must be whole, or this is an error naming what is
    /// wrong. A recording whose recorder died opens up to its last complete
    /// frame, with `end` `None`. Frame contents are checked by
    /// [`Trace::check_contents`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Trace> {
        format::check_preamble(&bytes)?;
        let (frames, tail) = walk_frames(&bytes)?;
        let first = frames.first().cloned().ok_or(match &tail {
            Tail::Truncated(_) => TraceError::Truncated {
                offset: format::PREAMBLE_LEN as u64,
                what: "the header frame".into(),
            },
            _ => TraceError::Missing("header frame"),
        })?;
        if first.kind != FrameKind::Header as u8 {
            return Err(TraceError::Corrupt {
                offset: first.offset,
                what: "the first frame is not the header".into(),
            });
        }
        let finished = matches!(tail, Tail::Trailer { .. })
            || frames
                .iter()
                .any(|f| f.kind == FrameKind::End as u8 || f.kind == FrameKind::Index as u8);
        let (frames, damage) = if finished {
            (check_finished(&bytes, frames, tail)?, None)
        } else {
            let damage = match tail {
                Tail::Truncated(e) => Some(e.to_string()),
                _ => None,
            };
            (frames, damage)
        };
        check_order(&frames, finished)?;
        let (_, raw) = format::read_frame(&bytes, first.offset as usize)?;
        let header: TraceHeader = decode(&raw, first.offset, "header")?;
        let mut trace = Trace {
            bytes,
            header,
            frames,
            end: None,
            indexed: finished,
            damage,
        };
        if let Some(e) = trace.frames_of(FrameKind::End).last().cloned() {
            let end: EndInfo = trace.decode_frame(&e, "end")?;
            if end.icount != e.icount {
                return Err(TraceError::Corrupt {
                    offset: e.offset,
                    what: format!(
                        "the end frame's header says icount {} but its contents say {}",
                        e.icount, end.icount
                    ),
                });
            }
            trace.end = Some(end);
        }
        Ok(trace)
    }

    /// Whether the recording finished: an end frame, a valid index and
    /// trailer, every frame present.
    pub fn complete(&self) -> bool {
        self.indexed && self.end.is_some()
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
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

    fn decode_events(&self, f: &FrameEntry) -> Result<EventBatch> {
        let (_, raw) = format::read_frame(&self.bytes, f.offset as usize)?;
        EventBatch::decode(&raw, f.offset)
    }

    /// The checkpoints' icounts and frames, in order.
    pub fn checkpoint_frames(&self) -> Vec<FrameEntry> {
        self.frames_of(FrameKind::Checkpoint).cloned().collect()
    }

    pub fn checkpoint(&self, f: &FrameEntry) -> Result<Checkpoint> {
        let frame: CheckpointFrame = self.decode_frame(f, "checkpoint")?;
        frame.into_checkpoint().map_err(|source| TraceError::State {
            offset: f.offset,
            source,
        })
    }

    pub fn learning(&self, f: &FrameEntry) -> Result<LearningFrame> {
        self.decode_frame(f, "learning")
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
        Ok(self.decode_events(f)?.events)
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
            let b = self.decode_events(f)?;
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
            let b = self.decode_events(f)?;
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
            let b = self.decode_events(f)?;
            if let Some(e) = b.events.into_iter().rev().find(|e| e.icount < icount && filter(e)) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

/// Walks the frames from the start, checking each header and checksum (not
/// the contents). Stops at the end of the file, at the trailer, or at a
/// frame the file ends inside of; any other damage is an error.
fn walk_frames(bytes: &[u8]) -> Result<(Vec<FrameEntry>, Tail)> {
    // A file that ends with a trailer was finished: its frames end there.
    let trailer = format::read_trailer(bytes);
    let limit = match trailer {
        Some(_) => bytes.len() - format::TRAILER_LEN,
        None => bytes.len(),
    };
    let within = &bytes[..limit];
    let mut frames = Vec::new();
    let mut offset = format::PREAMBLE_LEN;
    while offset < limit {
        match format::check_frame(within, offset) {
            Ok(h) => {
                frames.push(FrameEntry {
                    kind: h.kind as u8,
                    offset: offset as u64,
                    icount: h.icount,
                    payload_len: h.payload_len,
                    raw_len: h.raw_len,
                });
                offset += format::FRAME_HEADER_LEN + h.payload_len as usize;
            }
            Err(e @ TraceError::Truncated { .. }) => return Ok((frames, Tail::Truncated(e))),
            Err(e) => return Err(e),
        }
    }
    Ok((
        frames,
        match trailer {
            Some(index) => Tail::Trailer { index },
            None => Tail::Clean,
        },
    ))
}

fn corrupt(offset: u64, what: String) -> TraceError {
    TraceError::Corrupt { offset, what }
}

/// A finished recording: the frames end with End, then Index, then the
/// trailer pointing at it, and the index lists every frame before it
/// exactly. Returns the frames without the index.
fn check_finished(bytes: &[u8], mut frames: Vec<FrameEntry>, tail: Tail) -> Result<Vec<FrameEntry>> {
    let index_at = match tail {
        Tail::Trailer { index } => index,
        Tail::Truncated(e) => {
            return Err(corrupt(
                frames.last().map_or(0, |f| f.offset),
                format!("a finished recording (it has an end or index frame) is cut short: {e}"),
            ))
        }
        Tail::Clean => {
            return Err(corrupt(
                bytes.len() as u64,
                "a finished recording (it has an end or index frame) has no trailer".into(),
            ))
        }
    };
    let last = frames
        .pop()
        .ok_or_else(|| corrupt(index_at, "a trailer but no frames".into()))?;
    if last.kind != FrameKind::Index as u8 {
        return Err(corrupt(
            last.offset,
            format!(
                "the last frame is a {} frame, not the index",
                FrameKind::from_u8(last.kind).map_or("unknown", |k| k.name())
            ),
        ));
    }
    if last.offset != index_at {
        return Err(corrupt(
            (bytes.len() - format::TRAILER_LEN) as u64,
            format!(
                "the trailer points at byte {index_at} but the index frame is at byte {}",
                last.offset
            ),
        ));
    }
    match frames.last() {
        Some(f) if f.kind == FrameKind::End as u8 => {}
        Some(f) => {
            return Err(corrupt(
                f.offset,
                format!(
                    "the frame before the index is a {} frame, not the end frame",
                    FrameKind::from_u8(f.kind).map_or("unknown", |k| k.name())
                ),
            ))
        }
        None => return Err(corrupt(last.offset, "an index with no frames before it".into())),
    }
    let (_, raw) = format::read_frame(bytes, last.offset as usize)?;
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&raw);
    let archived = rkyv::access::<ArchivedTraceIndex, rkyv::rancor::Error>(&aligned)
        .map_err(|e| corrupt(last.offset, format!("the index does not validate: {e}")))?;
    if archived.frames.len() != frames.len() {
        return Err(corrupt(
            last.offset,
            format!(
                "the index lists {} frames but the file has {} before it",
                archived.frames.len(),
                frames.len()
            ),
        ));
    }
    for (i, (e, f)) in archived.frames.iter().zip(&frames).enumerate() {
        let listed = FrameEntry {
            kind: e.kind,
            offset: e.offset.to_native(),
            icount: e.icount.to_native(),
            payload_len: e.payload_len.to_native(),
            raw_len: e.raw_len.to_native(),
        };
        if listed != *f {
            return Err(corrupt(
                last.offset,
                format!("index entry {i} says {listed:?} but the file has {f:?}"),
            ));
        }
    }
    Ok(frames)
}

/// The frames' order and icounts as the recorder writes them: the header
/// first and only once; checkpoints from icount 0 on, never going back;
/// event and input batches in order between the checkpoints that enclose
/// them; each input batch right before the checkpoint it belongs to; in a
/// finished recording, the end frame last, at the last checkpoint.
fn check_order(frames: &[FrameEntry], finished: bool) -> Result<()> {
    let name = |f: &FrameEntry| FrameKind::from_u8(f.kind).map_or("unknown", |k| k.name());
    let mut last_checkpoint: Option<u64> = None;
    let mut last_events: Option<u64> = None;
    let mut last_inputs: Option<u64> = None;
    for (i, f) in frames.iter().enumerate() {
        let kind =
            FrameKind::from_u8(f.kind).ok_or_else(|| corrupt(f.offset, format!("unknown frame kind {}", f.kind)))?;
        let behind = |prev: Option<u64>, what: &str| match prev {
            Some(p) if f.icount < p => Err(corrupt(
                f.offset,
                format!(
                    "{} frame at icount {} comes after {what} at icount {p}",
                    name(f),
                    f.icount
                ),
            )),
            _ => Ok(()),
        };
        match kind {
            FrameKind::Header => {
                if i != 0 {
                    return Err(corrupt(f.offset, "a second header frame".into()));
                }
                if f.icount != 0 {
                    return Err(corrupt(f.offset, format!("the header frame says icount {}", f.icount)));
                }
            }
            FrameKind::Checkpoint => {
                if last_checkpoint.is_none() && f.icount != 0 {
                    return Err(corrupt(
                        f.offset,
                        format!("the first checkpoint is at icount {}, not 0", f.icount),
                    ));
                }
                behind(last_checkpoint, "a checkpoint")?;
                behind(last_events, "an event batch")?;
                behind(last_inputs, "an input batch")?;
                last_checkpoint = Some(f.icount);
            }
            FrameKind::Events => {
                behind(last_events, "an event batch")?;
                behind(last_checkpoint, "a checkpoint")?;
                last_events = Some(f.icount);
            }
            FrameKind::Inputs => {
                behind(last_inputs, "an input batch")?;
                behind(last_checkpoint, "a checkpoint")?;
                match frames.get(i + 1) {
                    Some(n) if n.kind == FrameKind::Checkpoint as u8 && n.icount == f.icount => {}
                    None if !finished => {}
                    _ => {
                        return Err(corrupt(
                            f.offset,
                            format!(
                                "the input batch at icount {} is not followed by its checkpoint",
                                f.icount
                            ),
                        ))
                    }
                }
                last_inputs = Some(f.icount);
            }
            FrameKind::End => {
                if i + 1 != frames.len() {
                    return Err(corrupt(f.offset, "an end frame before the last frame".into()));
                }
                if last_checkpoint != Some(f.icount) {
                    return Err(corrupt(
                        f.offset,
                        format!(
                            "the end frame says icount {} but the last checkpoint is at {}",
                            f.icount,
                            last_checkpoint.map_or("(none)".into(), |c| c.to_string())
                        ),
                    ));
                }
                if last_events.is_some_and(|e| e > f.icount) {
                    return Err(corrupt(f.offset, "events after the end of the recording".into()));
                }
            }
            FrameKind::Learning => {
                behind(last_checkpoint, "a checkpoint")?;
                // Right before its checkpoint, or before the input batch
                // that comes right before it.
                let next = |j: usize| frames.get(j).map(|n| (n.kind, n.icount));
                let here = |kind: FrameKind| Some((kind as u8, f.icount));
                let followed = next(i + 1) == here(FrameKind::Checkpoint)
                    || (next(i + 1) == here(FrameKind::Inputs) && next(i + 2) == here(FrameKind::Checkpoint));
                // A killed recorder may have written it and the input batch
                // but not the checkpoint.
                let cut_short = !finished
                    && frames[i + 1..]
                        .iter()
                        .all(|n| n.kind == FrameKind::Inputs as u8 && n.icount == f.icount);
                if !followed && !cut_short {
                    return Err(corrupt(
                        f.offset,
                        format!(
                            "the learning frame at icount {} is not followed by its checkpoint",
                            f.icount
                        ),
                    ));
                }
            }
            FrameKind::Index => return Err(corrupt(f.offset, "an index frame before the last frame".into())),
        }
    }
    if finished && last_checkpoint.is_none() {
        return Err(TraceError::Missing("checkpoint"));
    }
    Ok(())
}
