//! Recording: runs a machine in checkpoint-sized segments and writes the
//! header, the input log, the event log and the checkpoints as frames.
//! Event encoding, compression and file writes happen on a writer thread:
//! the guest's thread hands it batches of events and serializes the rest.
//! A recorder killed at any moment leaves every frame it finished readable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;
use vm::events::{EventBatch, EventSink};
use vm::host::HostInput;
use vm::machine::{Console, Machine, StopReason};

use crate::digest::RamHasher;
use crate::error::{Result, TraceError};
use crate::event_codec;
use crate::format::{self, FrameKind};
use crate::model::{Checkpoint, EndInfo, FrameEntry, InputBatch, InputRecord, LearningFrame, TraceHeader, TraceIndex};

/// Default instructions between checkpoints.
/// Small enough that a step backwards replays at most this many
/// instructions (tens of milliseconds), large enough that a CPU-bound guest
/// spends next to nothing on checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 5_000_000;
/// Adaptive checkpoints: fewer dirty pages than this doubles the interval,
/// more halves it, within a factor of 8 of the configured one. Seeks stay
/// short where the guest computes, checkpoints stay small where it writes.
/// Between the two, where the pages written do not grow with the interval
/// (a guest rewriting one working set), a longer one costs no more pages
/// per checkpoint and fewer checkpoints ([`Adapt`]).
const ADAPT_FEW_PAGES: usize = 256;
const ADAPT_MANY_PAGES: usize = 2048;
const ADAPT_RANGE: u64 = 8;
/// A doubled interval is kept when the pages written grew by at most this
/// many quarters (a working set); otherwise it is halved again and not
/// tried for [`ADAPT_RETRY`] checkpoints.
const ADAPT_SAME_SET_QUARTERS: usize = 5;
const ADAPT_RETRY: u32 = 16;

/// The adaptive interval between checkpoints: a pure function of the dirty
/// page counts it is told, so its choices are the same on every host.
#[derive(Clone, Debug)]
struct Adapt {
    base: u64,
    interval: u64,
    /// The pages the checkpoint before the last doubling found, while the
    /// doubled interval is on trial.
    trial: Option<usize>,
    /// Checkpoints until the middle band may try a longer interval again.
    wait: u32,
}

impl Adapt {
    fn new(base: u64) -> Adapt {
        Adapt {
            base,
            interval: base,
            trial: None,
            wait: 0,
        }
    }

    fn longest(&self) -> u64 {
        self.base * ADAPT_RANGE
    }

    /// The interval after a checkpoint that found `dirtied` pages.
    fn next(&mut self, dirtied: usize) -> u64 {
        // The pages grew with the doubled interval: the guest streams.
        let grew = self
            .trial
            .take()
            .is_some_and(|before| dirtied * 4 > before * ADAPT_SAME_SET_QUARTERS);
        self.wait = if grew { ADAPT_RETRY } else { self.wait.saturating_sub(1) };
        if dirtied < ADAPT_FEW_PAGES {
            self.interval = (self.interval * 2).min(self.longest());
        } else if dirtied > ADAPT_MANY_PAGES {
            self.interval = (self.interval / 2).max(self.base / ADAPT_RANGE).max(1);
        } else if grew {
            self.interval = (self.interval / 2).max(1);
        } else if self.wait == 0 && self.interval < self.longest() {
            // Within the range even where halving a base that is not a
            // power of two's multiple rounded down.
            self.interval = (self.interval * 2).min(self.longest());
            self.trial = Some(dirtied);
        }
        self.interval
    }
}

/// Events per event frame at most.
const EVENT_BATCH: usize = event_codec::MAX_EVENTS;
/// Frames queued for the writer thread before the guest waits for it.
const QUEUE: usize = 64;
/// Emptied event batches the writer keeps for the guest's thread to fill
/// again: a fresh one costs page faults on every one of its pages. As many
/// as can be in flight, so that keeping them holds no more memory than the
/// recording's peak did: with 4, a port loop whose writer fell behind
/// recorded 20% slower (`trap 1000`: 0.74 s against 0.59, median of five).
const SPARE_BATCHES: usize = QUEUE;
/// Bytes an event frame's buffer starts with: a port access takes about 7.
const EVENT_BATCH_BYTES: usize = EVENT_BATCH * 8;

/// Event batches, going back emptied from the writer to the guest's thread.
type SpareBatches = Arc<Mutex<Vec<EventBatch>>>;

enum Job {
    Frame {
        kind: FrameKind,
        icount: u64,
        raw: Vec<u8>,
    },
    /// Events as the machine's slot batched them (24 bytes each for the
    /// frequent ones): the writer encodes them ([`event_codec`]) into
    /// frames of `EVENT_BATCH`, so that a trap loop's thousands of port
    /// accesses cost the guest's thread a store each.
    Events(EventBatch),
    /// Writes the events not yet in a frame as one.
    EndEvents,
    /// A checkpoint without its digest: the writer hashes the pages it
    /// carries into its own page hashes, computes the digest and encodes
    /// the frame, off the guest's thread. `ram_pages` on the first, whose
    /// pages are all the nonzero ones.
    Checkpoint {
        icount: u64,
        checkpoint: Box<Checkpoint>,
        ram_pages: Option<usize>,
    },
    /// The end record: the writer counts the events in it.
    End {
        icount: u64,
        end: EndInfo,
    },
    /// Acknowledged once every earlier frame is in the file.
    Sync(std::sync::mpsc::Sender<()>),
    Finish,
}

/// The writer thread's side: compresses and appends frames, keeps the index.
struct WriterThread {
    /// The hash of every RAM page as of the last checkpoint.
    ram: Option<RamHasher>,
    compressor: zstd::bulk::Compressor<'static>,
    out: BufWriter<File>,
    offset: u64,
    index: Vec<FrameEntry>,
    compressed: u64,
    raw: u64,
    spare: SpareBatches,
    /// The event frame being filled.
    events: event_codec::Encoder,
    /// Events written so far: the writer counts them as it encodes (a
    /// batch's grouped entries hold several, which only a pass over it
    /// would tell the guest's thread).
    events_written: u64,
}

/// What the writer reports when it finishes.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    pub compressed_bytes: u64,
    pub raw_bytes: u64,
    pub frames: u64,
    pub events: u64,
}

impl WriterThread {
    fn write(&mut self, kind: FrameKind, icount: u64, raw: &[u8]) -> std::io::Result<()> {
        let start = self.offset;
        let n = format::write_frame_with(&mut self.compressor, &mut self.out, kind, icount, raw)?;
        self.offset += n;
        self.compressed += n;
        self.raw += raw.len() as u64;
        // Each frame reaches the file whole before the next is started, so a
        // killed recorder leaves complete frames behind.
        self.out.flush()?;
        self.index.push(FrameEntry {
            kind: kind as u8,
            offset: start,
            icount,
            payload_len: (n - format::FRAME_HEADER_LEN as u64) as u32,
            raw_len: raw.len() as u32,
        });
        Ok(())
    }

    /// Writes the events encoded so far as a frame, if there are any.
    fn end_events(&mut self) -> std::io::Result<()> {
        let Some(icount) = self.events.first_icount() else {
            return Ok(());
        };
        let mut events = std::mem::take(&mut self.events);
        let written = self.write(FrameKind::Events, icount, events.bytes());
        events.clear();
        self.events = events;
        written
    }

    /// Completes a checkpoint with its digest and writes it.
    fn checkpoint(&mut self, icount: u64, mut cp: Checkpoint, ram_pages: Option<usize>) -> std::io::Result<()> {
        if let Some(n) = ram_pages {
            // Its pages are every page that is not all zeros.
            self.ram = Some(RamHasher::zeroed(n));
        }
        let ram = self
            .ram
            .as_mut()
            .ok_or_else(|| std::io::Error::other("a checkpoint before the first"))?;
        for (page, bytes) in &cp.pages {
            ram.set_page(*page as usize, bytes);
        }
        cp.digest = ram.digest(&cp.state);
        let frame = cp.into_frame().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let raw = postcard::to_allocvec(&frame).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.write(FrameKind::Checkpoint, icount, &raw)
    }

    /// Runs the jobs; an error is also left in `failure`, for the guest's
    /// thread to report when its next send finds the writer gone.
    fn run(self, jobs: Receiver<Job>, failure: Arc<Mutex<Option<std::io::Error>>>) -> std::io::Result<WriteStats> {
        // The receiver is dropped only after the error is left, so a sender
        // that finds the channel closed finds the error too.
        let result = self.run_jobs(&jobs);
        if let Err(e) = &result {
            if let Ok(mut f) = failure.lock() {
                *f = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        }
        result
    }

    fn run_jobs(mut self, jobs: &Receiver<Job>) -> std::io::Result<WriteStats> {
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Frame { kind, icount, raw } => self.write(kind, icount, &raw)?,
                Job::Sync(ack) => {
                    self.out.flush()?;
                    let _ = ack.send(());
                }
                Job::Events(mut batch) => {
                    let mut at = 0;
                    loop {
                        let before = self.events.len();
                        let full = self.events.push_from(&batch, &mut at);
                        self.events_written += (self.events.len() - before) as u64;
                        if !full {
                            break;
                        }
                        self.end_events()?;
                    }
                    batch.clear();
                    if let Ok(mut spare) = self.spare.lock() {
                        if spare.len() < SPARE_BATCHES {
                            spare.push(batch);
                        }
                    }
                }
                Job::EndEvents => self.end_events()?,
                Job::Checkpoint {
                    icount,
                    checkpoint,
                    ram_pages,
                } => {
                    let mut checkpoint = *checkpoint;
                    // Every event before it came first (the slot is
                    // flushed before a checkpoint is taken).
                    checkpoint.events_before = self.events_written;
                    self.checkpoint(icount, checkpoint, ram_pages)?;
                }
                Job::End { icount, mut end } => {
                    self.end_events()?;
                    end.events = self.events_written;
                    let raw = postcard::to_allocvec(&end).map_err(std::io::Error::other)?;
                    self.write(FrameKind::End, icount, &raw)?;
                }
                Job::Finish => {
                    let index = TraceIndex {
                        frames: std::mem::take(&mut self.index),
                    };
                    let bytes = index.to_bytes()?;
                    let at = self.offset;
                    let frames = index.frames.len() as u64;
                    self.write(FrameKind::Index, 0, &bytes)?;
                    self.out.write_all(&format::trailer(at))?;
                    self.out.flush()?;
                    return Ok(WriteStats {
                        compressed_bytes: self.compressed,
                        raw_bytes: self.raw,
                        frames: frames + 1,
                        events: self.events_written,
                    });
                }
            }
        }
        Err(std::io::Error::other("the recorder went away"))
    }
}

/// The guest thread's handle on the writer.
pub struct TraceWriter {
    jobs: SyncSender<Job>,
    thread: Option<JoinHandle<std::io::Result<WriteStats>>>,
    path: String,
    failure: Arc<Mutex<Option<std::io::Error>>>,
    spare: SpareBatches,
}

impl TraceWriter {
    pub fn create(path: &Path) -> Result<TraceWriter> {
        let io = |source| TraceError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        out.write_all(&format::preamble()).map_err(io)?;
        out.flush().map_err(io)?;
        let (jobs, rx) = sync_channel(QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let thread_failure = failure.clone();
        let spare = SpareBatches::default();
        let writer = WriterThread {
            spare: spare.clone(),
            ram: None,
            compressor: format::frame_compressor().map_err(io)?,
            out,
            offset: format::PREAMBLE_LEN as u64,
            index: Vec::new(),
            compressed: format::PREAMBLE_LEN as u64,
            raw: 0,
            events: event_codec::Encoder::with_capacity(EVENT_BATCH_BYTES),
            events_written: 0,
        };
        let thread = std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || writer.run(rx, thread_failure))
            .map_err(io)?;
        Ok(TraceWriter {
            jobs,
            thread: Some(thread),
            path: path.display().to_string(),
            failure,
            spare,
        })
    }

    pub fn sender(&self) -> FrameSender {
        FrameSender {
            jobs: self.jobs.clone(),
            failure: self.failure.clone(),
            path: self.path.clone().into(),
            spare: self.spare.clone(),
        }
    }

    /// Writes the index and the trailer and waits for the writer.
    pub fn finish(mut self) -> Result<WriteStats> {
        let _ = self.jobs.send(Job::Finish);
        self.join()
    }

    fn join(&mut self) -> Result<WriteStats> {
        let thread = self
            .thread
            .take()
            .ok_or(TraceError::Writer("already finished".into()))?;
        match thread.join() {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(source)) => Err(TraceError::Io {
                path: self.path.clone(),
                source,
            }),
            Err(_) => Err(TraceError::Writer("the writer thread panicked".into())),
        }
    }
}

/// Sends frames to the writer thread.
#[derive(Clone)]
pub struct FrameSender {
    jobs: SyncSender<Job>,
    failure: Arc<Mutex<Option<std::io::Error>>>,
    path: Arc<str>,
    spare: SpareBatches,
}

impl FrameSender {
    pub fn send<T: Serialize>(&self, kind: FrameKind, icount: u64, value: &T) -> Result<()> {
        let raw = postcard::to_allocvec(value).map_err(|e| TraceError::Writer(e.to_string()))?;
        self.jobs
            .send(Job::Frame { kind, icount, raw })
            .map_err(|_| self.writer_error())
    }

    fn send_end(&self, icount: u64, end: EndInfo) -> Result<()> {
        self.jobs
            .send(Job::End { icount, end })
            .map_err(|_| self.writer_error())
    }

    fn send_checkpoint(&self, icount: u64, checkpoint: Checkpoint, ram_pages: Option<usize>) -> Result<()> {
        self.jobs
            .send(Job::Checkpoint {
                icount,
                checkpoint: Box::new(checkpoint),
                ram_pages,
            })
            .map_err(|_| self.writer_error())
    }

    /// An event batch the writer is done with, or a new one.
    fn empty_batch(&self) -> EventBatch {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_else(EventBatch::for_slot)
    }

    /// Why the writer thread stopped: its I/O error (a full disk, say),
    /// named with the file.
    fn writer_error(&self) -> TraceError {
        let copy = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self.failure.lock().ok().and_then(|f| f.as_ref().map(copy)) {
            Some(source) => TraceError::Io {
                path: self.path.to_string(),
                source,
            },
            None => TraceError::Writer("the writer thread stopped without saying why".into()),
        }
    }
}

/// Sends the machine's event batches to the writer thread.
struct EventWriter {
    frames: FrameSender,
    failed: Arc<Mutex<bool>>,
}

impl EventWriter {
    fn send(&mut self, job: Job) {
        if self.frames.jobs.send(job).is_err() {
            if let Ok(mut f) = self.failed.lock() {
                *f = true;
            }
        }
    }
}

impl EventSink for EventWriter {
    fn events(&mut self, batch: EventBatch) -> EventBatch {
        self.send(Job::Events(batch));
        self.frames.empty_batch()
    }

    fn flush(&mut self) {
        self.send(Job::EndEvents);
    }
}

/// A host input that logs every answer it passes on.
pub struct RecordingInput<'a> {
    pub host: &'a mut dyn HostInput,
    pub log: Vec<InputRecord>,
    pub consumed: u64,
}

impl HostInput for RecordingInput<'_> {
    fn rtc_start(&mut self) -> u64 {
        self.host.rtc_start()
    }

    fn serial_input(&mut self, now: u64) -> Option<u8> {
        let b = self.host.serial_input(now);
        if let Some(byte) = b {
            self.log.push(InputRecord::Serial { now, byte });
            self.consumed += 1;
        }
        b
    }

    fn wait_for_input(&mut self, now: u64) -> bool {
        let ready = self.host.wait_for_input(now);
        self.log.push(InputRecord::Wait { now, ready });
        self.consumed += 1;
        ready
    }

    fn stop_requested(&mut self, now: u64) -> bool {
        let stop = self.host.stop_requested(now);
        if stop {
            self.log.push(InputRecord::Stop { now });
            self.consumed += 1;
        }
        stop
    }
}

/// A console that passes output on and keeps what was written since the
/// last checkpoint.
pub struct TeeConsole<'a> {
    pub inner: &'a mut dyn Console,
    pub serial: Vec<u8>,
    pub total: u64,
}

impl Console for TeeConsole<'_> {
    fn serial(&mut self, bytes: &[u8]) {
        self.serial.extend_from_slice(bytes);
        self.total += bytes.len() as u64;
        self.inner.serial(bytes);
    }
    fn debugcon(&mut self, bytes: &[u8]) {
        self.inner.debugcon(bytes);
    }
}

/// How a recording went.
#[derive(Clone, Debug)]
pub struct RecordSummary {
    pub stop: StopReason,
    pub icount: u64,
    pub wall_seconds: f64,
    pub checkpoints: u64,
    pub events: u64,
    pub write: WriteStats,
}

/// A recording in progress: `record` runs one start to finish; a live
/// debugging session drives it piece by piece.
pub struct Recorder {
    writer: Option<TraceWriter>,
    frames: FrameSender,
    failed: Arc<Mutex<bool>>,
    log: Vec<InputRecord>,
    consumed: u64,
    serial: Vec<u8>,
    serial_total: u64,
    base: u64,
    adapt: Adapt,
    adaptive: bool,
    pub checkpoints: u64,
    started: Instant,
}

impl Recorder {
    /// Creates the trace, writes its header, attaches the event writer to
    /// `machine` (booted and configured as `header` says) and takes the
    /// first checkpoint.
    pub fn start(path: &Path, header: &TraceHeader, machine: &mut Machine) -> Result<Recorder> {
        let writer = TraceWriter::create(path)?;
        let frames = writer.sender();
        frames.send(FrameKind::Header, 0, header)?;
        let failed = Arc::new(Mutex::new(false));
        machine.events.attach(Box::new(EventWriter {
            frames: frames.clone(),
            failed: failed.clone(),
        }));
        let base = header.checkpoint_interval.max(1);
        let mut rec = Recorder {
            writer: Some(writer),
            frames,
            failed,
            log: Vec::new(),
            consumed: 0,
            serial: Vec::new(),
            serial_total: 0,
            base,
            adapt: Adapt::new(base),
            adaptive: header.adaptive_checkpoints,
            checkpoints: 0,
            started: Instant::now(),
        };
        rec.checkpoint_inner(machine, true, None)?;
        Ok(rec)
    }

    /// Runs `machine` to `max_icount` or until it stops, taking checkpoints
    /// on the way and where it stopped. `progress` hears each checkpoint.
    pub fn run(
        &mut self,
        machine: &mut Machine,
        host: &mut dyn HostInput,
        console: &mut dyn Console,
        max_icount: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StopReason> {
        loop {
            let target = if self.adaptive {
                machine.icount().saturating_add(self.adapt.interval)
            } else {
                (machine.icount() / self.base + 1).saturating_mul(self.base)
            }
            .min(max_icount);
            let mut input = RecordingInput {
                host: &mut *host,
                log: std::mem::take(&mut self.log),
                consumed: self.consumed,
            };
            let mut tee = TeeConsole {
                inner: &mut *console,
                serial: std::mem::take(&mut self.serial),
                total: self.serial_total,
            };
            let stop = machine.run(target, &mut input, &mut tee);
            self.log = input.log;
            self.consumed = input.consumed;
            self.serial = tee.serial;
            self.serial_total = tee.total;
            let stopped = (stop != StopReason::InsnLimit).then(|| stop.to_string());
            let dirtied = self.checkpoint_inner(machine, false, stopped)?;
            self.adapt.next(dirtied);
            progress(machine.icount());
            if stop != StopReason::InsnLimit || machine.icount() >= max_icount {
                return Ok(stop);
            }
        }
    }

    /// Waits until everything sent so far is in the file.
    pub fn sync(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.frames
            .jobs
            .send(Job::Sync(tx))
            .map_err(|_| self.frames.writer_error())?;
        rx.recv().map_err(|_| self.frames.writer_error())
    }

    /// Writes the inputs and events so far and a checkpoint; returns how
    /// many pages were dirty.
    fn checkpoint_inner(&mut self, machine: &mut Machine, first: bool, stopped: Option<String>) -> Result<usize> {
        machine.events.flush();
        let learning = LearningFrame {
            sequence: self.checkpoints,
            learning: machine.at_checkpoint(first),
        };
        self.frames.send(FrameKind::Learning, machine.icount(), &learning)?;
        if !self.log.is_empty() {
            let batch = InputBatch {
                records: std::mem::take(&mut self.log),
            };
            self.frames.send(FrameKind::Inputs, machine.icount(), &batch)?;
        }
        let dirty = machine.platform.mem.take_dirty();
        let state = machine.state();
        let pages = if first {
            RamHasher::nonzero_pages(&machine.platform.mem)
        } else {
            dirty
                .iter()
                .filter_map(|&p| machine.platform.mem.page(p).map(|b| (p as u32, b.to_vec())))
                .collect()
        };
        let cp = Checkpoint {
            sequence: self.checkpoints,
            // The writer's, from the pages.
            digest: [0; 32],
            state,
            pages,
            inputs_consumed: self.consumed,
            serial: std::mem::take(&mut self.serial),
            // The writer's, from the events it wrote.
            events_before: 0,
            stopped,
        };
        let ram_pages = first.then(|| machine.platform.mem.ram_size() / vm::mem::PAGE_SIZE);
        self.frames.send_checkpoint(machine.icount(), cp, ram_pages)?;
        self.checkpoints += 1;
        Ok(dirty.len())
    }

    /// Writes the end record, the index and the trailer.
    pub fn finish(mut self, machine: &mut Machine, stop: &StopReason) -> Result<RecordSummary> {
        let wall_seconds = self.started.elapsed().as_secs_f64();
        let exit_status = match stop {
            StopReason::ExitDevice(s) => Some(*s),
            _ => None,
        };
        // Any event still in the slot goes before the end record.
        machine.events.detach();
        self.frames.send_end(
            machine.icount(),
            EndInfo {
                icount: machine.icount(),
                stop: stop.to_string(),
                exit_status,
                wall_seconds,
                serial_bytes: self.serial_total,
                // The writer's, from the events it wrote.
                events: 0,
            },
        )?;
        if self.failed.lock().map(|f| *f).unwrap_or(true) {
            return Err(self.frames.writer_error());
        }
        let writer = self
            .writer
            .take()
            .ok_or(TraceError::Writer("already finished".into()))?;
        let write = writer.finish()?;
        Ok(RecordSummary {
            stop: stop.clone(),
            icount: machine.icount(),
            wall_seconds,
            checkpoints: self.checkpoints,
            events: write.events,
            write,
        })
    }
}

/// Records a run of `machine` (already booted and configured as `header`
/// says) into `path`, up to `max_icount`. `progress` is told the icount after
/// every checkpoint.
pub fn record(
    path: &Path,
    header: &TraceHeader,
    machine: &mut Machine,
    host: &mut dyn HostInput,
    console: &mut dyn Console,
    max_icount: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<RecordSummary> {
    let mut rec = Recorder::start(path, header, machine)?;
    let stop = rec.run(machine, host, console, max_icount, progress)?;
    rec.finish(machine, &stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 5_000_000;

    /// Runs the policy over a guest that dirties `pages(interval)` pages per
    /// interval; the intervals chosen.
    fn intervals(rounds: usize, pages: impl Fn(u64) -> usize) -> Vec<u64> {
        let mut adapt = Adapt::new(BASE);
        (0..rounds).map(|_| adapt.next(pages(adapt.interval))).collect()
    }

    #[test]
    fn a_guest_rewriting_one_working_set_gets_the_longest_interval() {
        // 260 pages whatever the interval (a loop over 1 MiB).
        let got = intervals(8, |_| 260);
        assert_eq!(got[..4], [2 * BASE, 4 * BASE, 8 * BASE, 8 * BASE]);
        assert!(got.iter().skip(2).all(|&i| i == 8 * BASE), "{got:?}");
    }

    #[test]
    fn a_streaming_guest_keeps_its_interval_and_tries_a_longer_one_seldom() {
        // Pages in proportion to the interval: 300 per base interval.
        let got = intervals(40, |i| (300 * i / BASE) as usize);
        let longer = got.iter().filter(|&&i| i > BASE).count();
        assert!(got.iter().all(|&i| i <= 2 * BASE), "{got:?}");
        assert!((1..=3).contains(&longer), "tried {longer} times: {got:?}");
        assert_eq!(got[0], 2 * BASE, "the first checkpoint tries");
        assert_eq!(got[1], BASE, "and the pages doubling undoes it");
    }

    #[test]
    fn no_interval_leaves_the_range_whatever_the_base() {
        // A base that halving does not divide evenly.
        let mut adapt = Adapt::new(1_000_003);
        for pages in [5000, 5000, 5000, 300, 300, 300, 300, 300, 300, 300] {
            let i = adapt.next(pages);
            assert!((1_000_003 / 8..=8 * 1_000_003).contains(&i), "{i}");
        }
    }

    #[test]
    fn the_bands_still_rule_few_and_many_pages() {
        assert!(intervals(6, |_| 10).iter().skip(2).all(|&i| i == 8 * BASE));
        let many = intervals(6, |_| 5000);
        assert_eq!(many[..3], [BASE / 2, BASE / 4, BASE / 8]);
        // A trial that lands above the band is undone, and waits too.
        let got = intervals(40, |i| (1500 * i / BASE) as usize);
        assert!(got.iter().filter(|&&i| i > BASE).count() <= 3, "{got:?}");
    }
}
