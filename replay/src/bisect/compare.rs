//! Two recordings compared without replaying: digests at common
//! checkpoints, then the first differing event.

use serde::Serialize;
use vm::events::EventRecord;

use crate::error::{Result, TraceError};
use crate::reader::Trace;

/// Two recordings compared without replaying: are they of the same guest
/// and input, where do their checkpoint digests first differ, which event
/// differs first.
#[derive(Clone, Debug, Serialize)]
pub struct RecordingComparison {
    /// Icounts where both have a checkpoint.
    pub common_checkpoints: usize,
    /// The last common checkpoint with equal digests before the first
    /// differing one.
    pub last_agreeing: Option<u64>,
    pub first_differing: Option<u64>,
    pub first_event_difference: Option<EventDifference>,
    /// Where each recording ends (its last checkpoint).
    pub a_instructions: u64,
    pub b_instructions: u64,
    pub a_build: String,
    pub b_build: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventDifference {
    /// Position in each event stream.
    pub index: u64,
    pub a: Option<String>,
    pub b: Option<String>,
    pub icount: u64,
}

pub(super) fn show_event(e: &EventRecord) -> String {
    format!("icount {} pc {:#010x}: {}", e.icount, e.pc, e.event)
}

/// Fails with [`TraceError::NotComparable`] unless both traces record the
/// same guest images, RAM and input.
pub fn compare_recordings(a: &Trace, b: &Trace) -> Result<RecordingComparison> {
    let (ha, hb) = (&a.header, &b.header);
    let mut why = Vec::new();
    if ha.image_hashes != hb.image_hashes {
        why.push("the guest images differ".to_string());
    }
    if ha.config.ram_bytes != hb.config.ram_bytes {
        why.push(format!(
            "RAM sizes differ ({} and {} bytes)",
            ha.config.ram_bytes, hb.config.ram_bytes
        ));
    }
    if ha.rtc_start != hb.rtc_start {
        why.push("the RTC start times differ".into());
    }
    let (ia, ib) = (a.inputs()?, b.inputs()?);
    let common = ia.len().min(ib.len());
    if ia[..common] != ib[..common] {
        why.push("the input logs differ".into());
    }
    if !why.is_empty() {
        return Err(TraceError::NotComparable(why.join("; ")));
    }
    let digests = |t: &Trace| -> Result<Vec<(u64, [u8; 32])>> {
        t.checkpoint_frames()
            .iter()
            .map(|f| Ok((f.icount, t.checkpoint(f)?.digest)))
            .collect()
    };
    let (da, db) = (digests(a)?, digests(b)?);
    let db: std::collections::HashMap<u64, [u8; 32]> = db.into_iter().collect();
    let mut common_checkpoints = 0;
    let mut last_agreeing = None;
    let mut first_differing = None;
    for (icount, d) in &da {
        let Some(other) = db.get(icount) else {
            continue;
        };
        common_checkpoints += 1;
        if other == d {
            last_agreeing = Some(*icount);
        } else {
            first_differing = Some(*icount);
            break;
        }
    }
    Ok(RecordingComparison {
        common_checkpoints,
        last_agreeing,
        first_differing,
        first_event_difference: first_event_difference(a, b)?,
        a_instructions: da.last().map_or(0, |c| c.0),
        b_instructions: b.checkpoint_frames().last().map_or(0, |f| f.icount),
        a_build: ha.build.clone(),
        b_build: hb.build.clone(),
    })
}

/// The first position where the two event streams differ.
pub(super) fn first_event_difference(a: &Trace, b: &Trace) -> Result<Option<EventDifference>> {
    let (mut ea, mut eb) = (EventStream::new(a), EventStream::new(b));
    let mut index = 0u64;
    loop {
        match (ea.next()?, eb.next()?) {
            (None, None) => return Ok(None),
            (x, y) if x == y => index += 1,
            (x, y) => {
                return Ok(Some(EventDifference {
                    index,
                    icount: x.as_ref().or(y.as_ref()).map_or(0, |e| e.icount),
                    a: x.as_ref().map(show_event),
                    b: y.as_ref().map(show_event),
                }))
            }
        }
    }
}

/// A trace's events in order, one batch decoded at a time.
pub(super) struct EventStream<'t> {
    trace: &'t Trace,
    frames: Vec<crate::model::FrameEntry>,
    next_frame: usize,
    batch: std::vec::IntoIter<EventRecord>,
}

impl<'t> EventStream<'t> {
    pub(super) fn new(trace: &'t Trace) -> Self {
        EventStream {
            trace,
            frames: trace.frames_of(crate::format::FrameKind::Events).cloned().collect(),
            next_frame: 0,
            batch: Vec::new().into_iter(),
        }
    }

    pub(super) fn next(&mut self) -> Result<Option<EventRecord>> {
        loop {
            if let Some(e) = self.batch.next() {
                return Ok(Some(e));
            }
            let Some(f) = self.frames.get(self.next_frame) else {
                return Ok(None);
            };
            self.next_frame += 1;
            self.batch = self.trace.event_batch(f)?.into_iter();
        }
    }
}

/// The checkpoint indices of `trace` covering `(from, to]` in icount, for
/// bisecting between two common checkpoints of two recordings.
pub fn interval_range(trace: &Trace, from: u64, to: u64) -> Option<(usize, usize)> {
    let icounts: Vec<u64> = trace.checkpoint_frames().iter().map(|f| f.icount).collect();
    let start = icounts.iter().position(|&c| c == from)?;
    let end = icounts.iter().position(|&c| c == to)?;
    Some((start, end))
}
