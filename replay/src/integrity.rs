//! Checking what a trace's frames hold, before anything is replayed: every
//! frame decodes exactly, and the frames agree with their headers and with
//! each other (counts, positions, digests). A trace that passes can still
//! diverge on replay, but only because the machine computes something else
//! now: every inconsistency inside the file is found here, named by frame
//! and field, so it is never mistaken for a divergence.

use vm::events::EventRecord;

use crate::digest::RamHasher;
use crate::error::{Result, TraceError};
use crate::format::{self, FrameKind};
use crate::model::{
    CheckpointFrame, EndInfo, EventBatch, FrameEntry, InputBatch, InputRecord, LearningFrame, TraceHeader,
};
use crate::reader::{decode, Trace};

/// What the check counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub frames: usize,
    pub checkpoints: usize,
    /// Learning frames (one before each checkpoint).
    pub learning: usize,
    pub events: u64,
    pub inputs: u64,
    pub serial_bytes: u64,
}

fn corrupt(f: &FrameEntry, what: String) -> TraceError {
    TraceError::Corrupt { offset: f.offset, what }
}

impl Trace {
    /// Decodes every frame and checks it against its header and the frames
    /// before it: the header's image hashes; each checkpoint's icount, input
    /// and event counts, page list and digest (recomputed from its own
    /// state and the RAM the checkpoints describe); each event batch's
    /// icounts; each input batch's virtual times; the end frame's totals.
    /// `progress` hears the icount of each checkpoint checked.
    pub fn check_contents(&self, progress: &mut dyn FnMut(u64)) -> Result<Contents> {
        let mut c = Contents::default();
        // Checked before anything is sized by it: a forged header could ask
        // for a page table of any size.
        let ram = self.header.config.ram_bytes;
        if !vm::boot::valid_ram_size(ram) {
            let at = self.frames.first().map_or(0, |f| f.offset);
            return Err(TraceError::Corrupt {
                offset: at,
                what: format!("the header's RAM size ({ram} bytes) is not one a machine can have"),
            });
        }
        let ram_pages = ram as usize / vm::mem::PAGE_SIZE;
        let mut recorded_ram: Option<RamHasher> = None;
        let mut last_event_icount = 0u64;
        let mut last_input_time = 0u64;
        let mut stopped_by_user = false;
        // The last checkpoint's icount and how the run stopped there, if it did.
        let mut last_checkpoint: Option<(u64, Option<String>)> = None;
        let mut learning = vm::engine::raw::learning::RawLearning::default();
        for f in &self.frames {
            let kind =
                FrameKind::from_u8(f.kind).ok_or_else(|| corrupt(f, format!("unknown frame kind {}", f.kind)))?;
            let (_, raw) = format::read_frame(self.bytes(), f.offset as usize)?;
            c.frames += 1;
            match kind {
                FrameKind::Header => {
                    let h: TraceHeader = decode(&raw, f.offset, "header")?;
                    let hashes = crate::kernel_hashes(&h.kernel);
                    if hashes != h.image_hashes {
                        return Err(corrupt(
                            f,
                            "the header's image hashes do not match the images it holds".into(),
                        ));
                    }
                }
                FrameKind::Inputs => {
                    let b: InputBatch = decode(&raw, f.offset, "inputs")?;
                    if b.records.is_empty() {
                        return Err(corrupt(f, "an empty input batch".into()));
                    }
                    for r in &b.records {
                        // The user's stop ends the run: nothing can follow it.
                        if stopped_by_user {
                            return Err(corrupt(f, "an input record after the user's stop".into()));
                        }
                        stopped_by_user = matches!(r, InputRecord::Stop { .. });
                        let now = match *r {
                            InputRecord::Serial { now, .. }
                            | InputRecord::Wait { now, .. }
                            | InputRecord::Stop { now } => now,
                        };
                        if now < last_input_time {
                            return Err(corrupt(
                                f,
                                format!("input at virtual time {now} after one at {last_input_time}"),
                            ));
                        }
                        last_input_time = now;
                    }
                    c.inputs += b.records.len() as u64;
                }
                FrameKind::Events => {
                    let b = EventBatch::decode(&raw, f.offset)?;
                    check_events(
                        f,
                        &b.events,
                        &mut last_event_icount,
                        last_checkpoint.as_ref().map(|(i, _)| *i),
                    )?;
                    c.events += b.events.len() as u64;
                }
                FrameKind::Checkpoint => {
                    let frame: CheckpointFrame = decode(&raw, f.offset, "checkpoint")?;
                    let cp = frame.into_checkpoint().map_err(|source| TraceError::State {
                        offset: f.offset,
                        source,
                    })?;
                    if let Some((_, Some(_))) = last_checkpoint {
                        return Err(corrupt(f, "a checkpoint after the one where the run stopped".into()));
                    }
                    if c.learning != c.checkpoints + 1 {
                        return Err(corrupt(
                            f,
                            "a checkpoint without the engine's learning before it".into(),
                        ));
                    }
                    if cp.sequence != c.checkpoints as u64 {
                        return Err(corrupt(
                            f,
                            format!(
                                "checkpoint number {} comes where number {} belongs",
                                cp.sequence, c.checkpoints
                            ),
                        ));
                    }
                    if cp.state.icount != f.icount {
                        return Err(corrupt(
                            f,
                            format!(
                                "the checkpoint frame's header says icount {} but its state says {}",
                                f.icount, cp.state.icount
                            ),
                        ));
                    }
                    if last_event_icount > f.icount {
                        return Err(corrupt(
                            f,
                            format!("an event at icount {last_event_icount} before this checkpoint"),
                        ));
                    }
                    if cp.inputs_consumed != c.inputs {
                        return Err(corrupt(
                            f,
                            format!(
                                "the checkpoint says {} inputs were consumed but the input batches before it hold {}",
                                cp.inputs_consumed, c.inputs
                            ),
                        ));
                    }
                    if cp.events_before != c.events {
                        return Err(corrupt(
                            f,
                            format!(
                                "the checkpoint says {} events came before it but the event batches before it hold {}",
                                cp.events_before, c.events
                            ),
                        ));
                    }
                    let ram = recorded_ram.get_or_insert_with(|| RamHasher::zeroed(ram_pages));
                    let mut previous: Option<u32> = None;
                    for (page, bytes) in &cp.pages {
                        if previous.is_some_and(|p| p >= *page) {
                            return Err(corrupt(f, format!("page {page:#x} is out of order or repeated")));
                        }
                        previous = Some(*page);
                        if *page as usize >= ram_pages || bytes.len() != vm::mem::PAGE_SIZE {
                            return Err(corrupt(
                                f,
                                format!(
                                    "page {page:#x} ({} bytes) is not a page of the recorded {ram_pages}-page RAM",
                                    bytes.len()
                                ),
                            ));
                        }
                        ram.set_page(*page as usize, bytes);
                    }
                    if ram.digest(&cp.state) != cp.digest {
                        return Err(corrupt(
                            f,
                            format!(
                                "the checkpoint at icount {}: its digest does not match its own state and pages",
                                f.icount
                            ),
                        ));
                    }
                    c.serial_bytes += cp.serial.len() as u64;
                    c.checkpoints += 1;
                    last_checkpoint = Some((f.icount, cp.stopped));
                    progress(f.icount);
                }
                FrameKind::End => {
                    let end: EndInfo = decode(&raw, f.offset, "end")?;
                    let stopped = last_checkpoint.as_ref().and_then(|(_, s)| s.as_deref());
                    // The user's stop in the input log and the run's end
                    // must tell the same story.
                    if stopped_by_user != (end.stop == vm::machine::StopReason::Stopped.to_string()) {
                        return Err(corrupt(
                            f,
                            format!(
                                "the end frame says the run stopped with \"{}\" but the input log {} the user's stop",
                                end.stop,
                                if stopped_by_user { "ends with" } else { "has no" }
                            ),
                        ));
                    }
                    check_end(f, &end, &c, stopped)?;
                }
                FrameKind::Learning => {
                    let l: LearningFrame = decode(&raw, f.offset, "learning")?;
                    if l.sequence != c.checkpoints as u64 || c.learning != c.checkpoints {
                        return Err(corrupt(
                            f,
                            format!(
                                "learning for checkpoint number {} comes where number {} belongs",
                                l.sequence, c.checkpoints
                            ),
                        ));
                    }
                    if l.learning.full != (l.sequence == 0) {
                        return Err(corrupt(
                            f,
                            "the first checkpoint's learning must be whole, the others' changes".into(),
                        ));
                    }
                    let bad =
                        |e: vm::engine::raw::learning::LearningError| corrupt(f, format!("the engine's learning: {e}"));
                    l.learning.check_contents().map_err(bad)?;
                    learning.merge(&l.learning);
                    learning.check_complete().map_err(bad)?;
                    c.learning += 1;
                }
                FrameKind::Index => return Err(corrupt(f, "an index frame among the frames".into())),
            }
        }
        Ok(c)
    }
}

/// One event batch: not empty, its header's icount its first event's, in
/// icount order, none before the events already seen or the checkpoint
/// before it.
fn check_events(
    f: &FrameEntry,
    events: &[EventRecord],
    last_event_icount: &mut u64,
    last_checkpoint: Option<u64>,
) -> Result<()> {
    let first = events
        .first()
        .ok_or_else(|| corrupt(f, "an empty event batch".into()))?;
    if first.icount != f.icount {
        return Err(corrupt(
            f,
            format!(
                "the event batch's header says icount {} but its first event is at {}",
                f.icount, first.icount
            ),
        ));
    }
    let floor = (*last_event_icount).max(last_checkpoint.unwrap_or(0));
    let mut previous = floor;
    for e in events {
        if e.icount < previous {
            return Err(corrupt(
                f,
                format!("an event at icount {} after one at {previous}", e.icount),
            ));
        }
        previous = e.icount;
    }
    *last_event_icount = previous;
    Ok(())
}

/// The end frame: its totals are the file's.
/// `stopped` is what the last checkpoint says of how the run stopped.
fn check_end(f: &FrameEntry, end: &EndInfo, c: &Contents, stopped: Option<&str>) -> Result<()> {
    if end.events != c.events {
        return Err(corrupt(
            f,
            format!(
                "the end frame counts {} events but the event batches hold {}",
                end.events, c.events
            ),
        ));
    }
    if end.serial_bytes != c.serial_bytes {
        return Err(corrupt(
            f,
            format!(
                "the end frame counts {} bytes of serial output but the checkpoints hold {}",
                end.serial_bytes, c.serial_bytes
            ),
        ));
    }
    let consistent = match stopped {
        Some(stop) => stop == end.stop,
        None => end.stop == vm::machine::StopReason::InsnLimit.to_string(),
    };
    if !consistent {
        return Err(corrupt(
            f,
            format!(
                "the end frame says the run stopped with \"{}\" but the last checkpoint says {:?}",
                end.stop, stopped
            ),
        ));
    }
    Ok(())
}
