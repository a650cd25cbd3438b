//! Replaying: the recorded machine built again from the trace's header, fed
//! the recorded inputs at the icounts they arrived, stopping at every
//! checkpoint to do what the recorder did there (and, verifying, to compare
//! digests). Seeking restores the nearest checkpoint at or before the target
//! and runs forward.

use vm::engine::jit::JitConfig;
use vm::engine::raw::learning::RawLearning;
use vm::engine::raw::RawConfig;
use vm::host::HostInput;
use vm::machine::{CaptureConsole, Engine, Machine, MachineState, StopReason};

use crate::digest::RamHasher;
use crate::error::{Result, TraceError};
use crate::model::{Checkpoint, FrameEntry, InputRecord};
use crate::reader::Trace;

/// Feeds recorded inputs back at the virtual times they were asked for.
#[derive(Clone, Debug)]
pub struct ReplayInput {
    rtc_start: u64,
    /// Shared: snapshots of a replay (bisect) copy the cursor, not the log.
    pub(crate) records: std::sync::Arc<[InputRecord]>,
    pub cursor: usize,
    /// An ask the log did not expect: the replay has diverged.
    pub mismatch: Option<(u64, String)>,
}

impl ReplayInput {
    pub fn new(rtc_start: u64, records: Vec<InputRecord>) -> Self {
        ReplayInput {
            rtc_start,
            records: records.into(),
            cursor: 0,
            mismatch: None,
        }
    }
}

impl HostInput for ReplayInput {
    fn rtc_start(&mut self) -> u64 {
        self.rtc_start
    }

    fn serial_input(&mut self, now: u64) -> Option<u8> {
        match self.records.get(self.cursor) {
            Some(&InputRecord::Serial { now: t, byte }) if t == now => {
                self.cursor += 1;
                Some(byte)
            }
            _ => None,
        }
    }

    fn stop_requested(&mut self, now: u64) -> bool {
        match self.records.get(self.cursor) {
            Some(&InputRecord::Stop { now: t }) if t == now => {
                self.cursor += 1;
                true
            }
            _ => false,
        }
    }

    fn wait_for_input(&mut self, now: u64) -> bool {
        match self.records.get(self.cursor) {
            Some(&InputRecord::Wait { now: t, ready }) if t == now => {
                self.cursor += 1;
                ready
            }
            other => {
                if self.mismatch.is_none() {
                    self.mismatch = Some((now, format!("the guest waited for input; the log has {other:?}")));
                }
                false
            }
        }
    }
}

/// How guest code should run in the replay (default: as recorded).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOptions {
    pub engine: Option<Engine>,
    pub raw: Option<RawConfig>,
    /// The compiler tier (default: on); never guest-visible, so not recorded.
    pub jit: Option<JitConfig>,
}

/// Where a replay first departed from the recording.
#[derive(Clone, Debug)]
pub struct Divergence {
    pub icount: u64,
    /// Linear address of the next instruction.
    pub pc: u32,
    /// Human-readable differences: registers, devices, pages.
    pub differences: Vec<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "divergence at icount {} (next instruction at {:#010x}):",
            self.icount, self.pc
        )?;
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// The trace a replayer reads: borrowed, or shared with a live recording
/// that replaces it as the file grows.
pub enum TraceRef<'t> {
    Borrowed(&'t Trace),
    Shared(std::sync::Arc<Trace>),
}

impl std::ops::Deref for TraceRef<'_> {
    type Target = Trace;
    fn deref(&self) -> &Trace {
        match self {
            TraceRef::Borrowed(t) => t,
            TraceRef::Shared(t) => t,
        }
    }
}

pub struct Replayer<'t> {
    pub trace: TraceRef<'t>,
    pub machine: Machine,
    pub input: ReplayInput,
    /// Serial output from the start of the recording up to the position.
    pub console: CaptureConsole,
    pub(crate) checkpoints: Vec<FrameEntry>,
    /// Index of the next checkpoint the replay will reach.
    pub(crate) next_checkpoint: usize,
    pub(crate) ram: Option<RamHasher>,
    /// The recording's RAM as the checkpoints so far describe it (verify).
    pub(crate) recorded_ram: Option<Vec<u8>>,
    /// The image, undo records and snapshots that make going back quick.
    pub(crate) rewind: crate::rewind::Rewind,
    /// The checkpoint where the recording stopped other than at an
    /// instruction count (the last one, if so).
    pub(crate) stop_checkpoint: Option<usize>,
    pub(crate) final_stop: FinalStop,
    /// The raw engine's learning at a checkpoint, folded from the learning
    /// frames, to fold on from when the next restore is further on.
    pub(crate) learning: Option<(usize, RawLearning)>,
    /// The raw engine started cold where the recorder's had learned (a
    /// snapshot was restored): it gets the recorded learning back at the
    /// next checkpoint.
    pub(crate) engine_cold: bool,
}

/// The stop a recording ended in (a halt with interrupts off, a triple
/// fault, a fault loop, an exit), replayed where it happened.
#[derive(Clone, Debug, Default)]
pub struct FinalStop {
    /// The icount where the recording stopped other than at its limit.
    pub at: Option<u64>,
    /// How the replay stopped there, once it has.
    pub replayed: Option<String>,
}

impl FinalStop {
    /// Runs `machine` to `target` at most. Reaching the stop's icount, a run
    /// that stopped there (an exit: it retires its instruction) has
    /// replayed the stop; otherwise, with `complete`, the machine runs on
    /// until it stops: a halt, a triple fault or a fault loop changes the
    /// machine without retiring anything. A replay that has diverged
    /// retires one more instruction instead, which the digests show. A
    /// breakpoint or watchpoint interrupts this (returned; the stop stays
    /// to be replayed).
    pub fn run(
        &mut self,
        machine: &mut Machine,
        input: &mut ReplayInput,
        console: &mut CaptureConsole,
        target: u64,
        complete: bool,
    ) -> StopReason {
        let debug = |s: &StopReason| matches!(s, StopReason::Breakpoint(_) | StopReason::Watchpoint { .. });
        let mut stop = StopReason::InsnLimit;
        if machine.icount() < target {
            stop = machine.run(target, input, console);
        }
        if self.at != Some(machine.icount()) || self.replayed.is_some() || debug(&stop) {
            return stop;
        }
        if stop == StopReason::InsnLimit {
            if !complete {
                return stop;
            }
            let at = machine.icount();
            stop = machine.run(at + 1, input, console);
            if debug(&stop) {
                return stop;
            }
        }
        self.replayed = Some(stop.to_string());
        stop
    }
}

impl<'t> Replayer<'t> {
    /// The machine at icount 0, as recorded.
    pub fn new(trace: &'t Trace, options: ReplayOptions) -> Result<Self> {
        Replayer::over(TraceRef::Borrowed(trace), options)
    }

    /// A replayer over a shared trace (a live recording's, say).
    pub fn shared(trace: std::sync::Arc<Trace>, options: ReplayOptions) -> Result<Replayer<'static>> {
        Replayer::over(TraceRef::Shared(trace), options)
    }

    /// Takes a longer version of the same trace (a live recording that has
    /// written more frames): what was replayed so far stays valid.
    pub fn extend_trace(&mut self, longer: std::sync::Arc<Trace>) -> Result<()> {
        self.input.records = longer.inputs()?.into();
        self.checkpoints = longer.checkpoint_frames();
        self.stop_checkpoint = stop_checkpoint(&longer, &self.checkpoints)?;
        self.final_stop.at = self.stop_checkpoint.map(|k| self.checkpoints[k].icount);
        self.trace = TraceRef::Shared(longer);
        Ok(())
    }

    fn over(trace: TraceRef<'t>, options: ReplayOptions) -> Result<Self> {
        let h = &trace.header;
        let mut input = ReplayInput::new(h.rtc_start, trace.inputs()?);
        let mut machine = Machine::boot(h.config.ram_bytes, &h.kernel, &mut input).map_err(TraceError::Boot)?;
        machine.engine = options.engine.unwrap_or(h.config.engine);
        machine.raw.config = options.raw.unwrap_or(h.config.raw);
        if let Some(jit) = options.jit {
            machine.blocks.jit.config = jit;
        }
        let checkpoints = trace.checkpoint_frames();
        if checkpoints.is_empty() {
            return Err(TraceError::Missing("checkpoint"));
        }
        let stop_checkpoint = stop_checkpoint(&trace, &checkpoints)?;
        Ok(Replayer {
            final_stop: FinalStop {
                at: stop_checkpoint.map(|k| checkpoints[k].icount),
                replayed: None,
            },
            stop_checkpoint,
            trace,
            machine,
            input,
            console: CaptureConsole::default(),
            checkpoints,
            next_checkpoint: 0,
            ram: None,
            recorded_ram: None,
            rewind: Default::default(),
            learning: None,
            engine_cold: false,
        })
    }

    /// Folds the learning frames of checkpoints 0 to `k` (from the last
    /// fold, when it was at or before `k`): the raw engine's learning as
    /// the recorder had it at checkpoint `k`, kept in `self.learning`.
    fn fold_learning_to(&mut self, k: usize) -> Result<()> {
        let (mut at, mut learning) = match self.learning.take() {
            Some((j, l)) if j <= k => (Some(j), l),
            _ => (None, RawLearning::default()),
        };
        for j in at.map_or(0, |j| j + 1)..=k {
            learning.merge(&self.learning_frame(j)?);
            at = Some(j);
        }
        self.learning = at.map(|j| (j, learning));
        Ok(())
    }

    /// What checkpoint `j`'s learning frame holds (whole at the first,
    /// changes after).
    fn learning_frame(&self, j: usize) -> Result<RawLearning> {
        let f = self
            .trace
            .frames_of(crate::format::FrameKind::Learning)
            .nth(j)
            .ok_or(TraceError::Missing("the engine's learning"))?;
        let frame = self.trace.learning(f)?;
        if frame.sequence != j as u64 || frame.learning.full != (j == 0) {
            return Err(TraceError::Corrupt {
                offset: f.offset,
                what: format!("learning frame {j} is for checkpoint {}", frame.sequence),
            });
        }
        Ok(frame.learning)
    }

    /// The raw engine's learning as the recorder had it at checkpoint `k`.
    pub(crate) fn learning_at(&mut self, k: usize) -> Result<&RawLearning> {
        self.fold_learning_to(k)?;
        match &self.learning {
            Some((_, learning)) => Ok(learning),
            None => Err(TraceError::Missing("the engine's learning")),
        }
    }

    /// Whether this replay runs the engine as recorded, so that what the
    /// recorder's engine learned belongs in it.
    fn engine_as_recorded(&self) -> bool {
        let h = &self.trace.header.config;
        self.machine.engine == h.engine && self.machine.raw.config == h.raw
    }

    /// Puts what the recorder's engine had learned at checkpoint `k` into
    /// the machine's, which has forgotten everything.
    pub(crate) fn put_back_learning(&mut self, k: usize) -> Result<()> {
        if !self.engine_as_recorded() {
            self.engine_cold = false;
            return Ok(());
        }
        // Until it is back, the engine is cold: a failure here is reported
        // again at the next checkpoint, never compared as a divergence.
        self.engine_cold = true;
        let offset = self.checkpoints.get(k).map_or(0, |c| c.offset);
        self.fold_learning_to(k)?;
        let Some((_, learning)) = &self.learning else {
            return Err(TraceError::Missing("the engine's learning"));
        };
        put_learning(&mut self.machine, learning, k, offset)?;
        self.engine_cold = false;
        Ok(())
    }

    pub fn icount(&self) -> u64 {
        self.machine.icount()
    }

    /// The last icount the trace covers.
    pub fn end_icount(&self) -> u64 {
        self.checkpoints.last().map_or(0, |c| c.icount)
    }

    pub fn checkpoint_icounts(&self) -> Vec<u64> {
        self.checkpoints.iter().map(|c| c.icount).collect()
    }

    /// Does at a checkpoint what the recorder did there. With `verify`,
    /// compares the digest; returns the divergence if it differs.
    fn at_checkpoint(&mut self, index: usize, verify: bool) -> Result<Option<Divergence>> {
        let learned = self.machine.at_checkpoint(index == 0);
        if self.engine_cold {
            self.machine.forget_cached_code();
            self.put_back_learning(index)?;
        } else if verify && self.engine_as_recorded() {
            // What a restore here would put back must be what this engine
            // learned: else the file lies, or the engine does not decide
            // alike on the same run.
            let recorded = self.learning_frame(index)?;
            if recorded != learned {
                return Ok(Some(Divergence {
                    icount: self.machine.icount(),
                    pc: vm::engine::raw::pc(&self.machine.cpu),
                    differences: vec![learning_difference(&recorded, &learned)],
                }));
            }
        }
        let dirty = self.machine.platform.mem.take_dirty();
        if !verify {
            self.passed_checkpoint(index, &dirty);
            return Ok(None);
        }
        let f = self.checkpoints[index].clone();
        let cp = self.trace.checkpoint(&f)?;
        let ram = self
            .ram
            .get_or_insert_with(|| RamHasher::new(&self.machine.platform.mem));
        ram.update(&self.machine.platform.mem, &dirty);
        if self.recorded_ram.is_none() {
            // After a restore, the recording's RAM is the image it rebuilt.
            self.recorded_ram = Some(match &self.rewind.image {
                Some(image) if image.index + 1 == index => image.ram.clone(),
                _ => vec![0; self.machine.platform.mem.ram_size()],
            });
        }
        let Some(recorded) = self.recorded_ram.as_mut() else {
            return Ok(None);
        };
        for (page, bytes) in &cp.pages {
            let start = *page as usize * vm::mem::PAGE_SIZE;
            if let Some(dst) = recorded.get_mut(start..start + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        let state = self.machine.state();
        let stop_matches = Some(index) != self.stop_checkpoint || self.final_stop.replayed == cp.stopped;
        if ram.digest(&state) == cp.digest && self.input.mismatch.is_none() && stop_matches {
            // Only RAM shown to be the recording's becomes the image.
            self.passed_checkpoint(index, &dirty);
            return Ok(None);
        }
        self.rewind.note_written(&dirty);
        Ok(Some(self.divergence(&cp, &state)))
    }

    /// Whether the replay stands at the checkpoint where the recording
    /// stopped, with that stop not replayed yet.
    fn stop_pending(&self) -> bool {
        self.stop_checkpoint == Some(self.next_checkpoint)
            && self.final_stop.replayed.is_none()
            && self
                .checkpoints
                .get(self.next_checkpoint)
                .is_some_and(|c| c.icount == self.machine.icount())
    }

    /// Replays the recorded stop: a halt with interrupts off, a triple
    /// fault or a fault loop changes the machine without retiring an
    /// instruction, so the machine runs on from the stop's icount until it
    /// stops again. Where the replay has diverged it retires one more
    /// instruction instead, and the checkpoint's comparison says so. A
    /// breakpoint or watchpoint there interrupts it (returned).
    fn replay_stop(&mut self) -> Option<StopReason> {
        let at = self.machine.icount();
        match self.run_machine(at) {
            stop @ (StopReason::Breakpoint(_) | StopReason::Watchpoint { .. }) => Some(stop),
            _ => None,
        }
    }

    /// Runs the machine to `target` at most, replaying the recorded stop
    /// where the replay reaches the checkpoint that holds it.
    fn run_machine(&mut self, target: u64) -> StopReason {
        let complete = self.stop_checkpoint == Some(self.next_checkpoint);
        self.final_stop
            .run(&mut self.machine, &mut self.input, &mut self.console, target, complete)
    }

    fn divergence(&self, cp: &Checkpoint, state: &MachineState) -> Divergence {
        let mut differences = state_differences(&cp.state, state);
        if let Some(recorded) = &self.recorded_ram {
            let mem = &self.machine.platform.mem;
            let ps = vm::mem::PAGE_SIZE;
            let pages: Vec<usize> = (0..mem.ram_size() / ps)
                .filter(|&p| mem.page(p) != recorded.get(p * ps..(p + 1) * ps))
                .collect();
            if !pages.is_empty() {
                let shown: Vec<String> = pages.iter().take(8).map(|p| format!("{:#x}", p * ps)).collect();
                differences.push(format!(
                    "RAM: {} page(s) differ, first at {}",
                    pages.len(),
                    shown.join(", ")
                ));
            }
        }
        if let Some((now, what)) = &self.input.mismatch {
            differences.push(format!("input at virtual time {now}: {what}"));
        }
        if self.final_stop.replayed != cp.stopped {
            let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "(still running)".into());
            differences.push(format!(
                "how the run stopped: recorded \"{}\", replayed \"{}\"",
                show(&cp.stopped),
                show(&self.final_stop.replayed)
            ));
        }
        if differences.is_empty() {
            differences.push("digests differ but no field does (hash collision or format bug)".into());
        }
        Divergence {
            icount: state.icount,
            pc: vm::engine::raw::pc(&self.machine.cpu),
            differences,
        }
    }

    /// Runs forward to `target` (at most the trace's end), stopping at each
    /// checkpoint on the way. Returns the first divergence when verifying.
    pub fn run_to(&mut self, target: u64, verify: bool) -> Result<Option<Divergence>> {
        let target = target.min(self.end_icount());
        loop {
            let Some(next) = self.checkpoints.get(self.next_checkpoint).map(|c| c.icount) else {
                return Ok(None);
            };
            if next > target {
                if self.machine.icount() < target {
                    self.run_machine(target);
                }
                return Ok(None);
            }
            if self.machine.icount() < next {
                self.run_machine(next);
            }
            if self.stop_pending() {
                self.replay_stop();
            }
            let index = self.next_checkpoint;
            self.next_checkpoint += 1;
            if let Some(d) = self.at_checkpoint(index, verify)? {
                return Ok(Some(d));
            }
            if next >= target {
                return Ok(None);
            }
        }
    }

    /// Replays the whole trace, verifying every checkpoint when asked.
    pub fn run_all(&mut self, verify: bool, progress: &mut dyn FnMut(u64)) -> Result<Option<Divergence>> {
        self.run_until(verify, None, progress)
    }

    /// [`Replayer::run_all`] up to the first checkpoint at or after `until`
    /// (all of them when `None`): a prefix of a long trace.
    pub fn run_until(
        &mut self,
        verify: bool,
        until: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<Divergence>> {
        let mut marks = self.checkpoint_icounts();
        if let Some(limit) = until {
            if let Some(last) = marks.iter().position(|&m| m >= limit) {
                marks.truncate(last + 1);
            }
        }
        for icount in marks {
            if let Some(d) = self.run_to(icount, verify)? {
                return Ok(Some(d));
            }
            progress(icount);
        }
        Ok(None)
    }

    /// One instruction forward (or none at the trace's end).
    pub fn step(&mut self) -> Result<()> {
        let t = self.machine.icount() + 1;
        self.run_to(t, false)?;
        Ok(())
    }

    /// The recorded stop reason, when the recording finished.
    pub fn recorded_stop(&self) -> Option<&str> {
        self.trace.end.as_ref().map(|e| e.stop.as_str())
    }

    /// Whether the replay has reached the end of the trace.
    pub fn at_end(&self) -> bool {
        self.machine.icount() >= self.end_icount()
    }
}

impl Replayer<'_> {
    /// Runs forward to `limit` (the trace's `end` at most) with whatever
    /// breakpoints and watches the machine has armed, doing at each
    /// checkpoint what the recorder did there.
    pub(crate) fn resume_inner(&mut self, limit: u64, end: u64) -> Result<Stop> {
        let debug_stop = |stop: StopReason| match stop {
            StopReason::Breakpoint(pc) => Some(Stop::Breakpoint(pc)),
            StopReason::Watchpoint { index, addr, write } => Some(Stop::Watch { index, addr, write }),
            _ => None,
        };
        loop {
            let here = self.machine.icount();
            let next_cp = self.checkpoints.get(self.next_checkpoint).map(|c| c.icount);
            if next_cp == Some(here) {
                // At a checkpoint: what the recorder did there, first the
                // stop it recorded there, if any.
                if self.stop_pending() {
                    if let Some(stop) = self.replay_stop().and_then(debug_stop) {
                        return Ok(stop);
                    }
                }
                let index = self.next_checkpoint;
                self.next_checkpoint += 1;
                self.at_checkpoint(index, false)?;
                continue;
            }
            if here >= limit {
                return Ok(if here >= end { Stop::End } else { Stop::Reached });
            }
            let mut target = next_cp.map_or(limit, |c| c.min(limit));
            let snapshot_at = (here / crate::rewind::RUN_SNAPSHOT_SPACING + 1) * crate::rewind::RUN_SNAPSHOT_SPACING;
            let snapshot = self.rewind.image.is_some() && snapshot_at < target;
            if snapshot {
                target = snapshot_at;
            }
            if let Some(stop) = debug_stop(self.run_machine(target)) {
                return Ok(stop);
            }
            if snapshot && self.machine.icount() == snapshot_at {
                self.take_snapshot();
            }
            if self.machine.icount() == here {
                // Halted for good short of the target: nothing more runs.
                return Ok(Stop::End);
            }
        }
    }

    /// Reads guest memory at a linear address through the guest's page
    /// tables, without side effects; `None` where a page is not mapped.
    pub fn read_linear(&mut self, addr: u32, len: usize) -> Option<Vec<u8>> {
        self.machine.read_linear(addr, len)
    }
}

/// Where a forward run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The requested position.
    Reached,
    /// The end of the trace.
    End,
    Breakpoint(u32),
    /// The last instruction accessed watched memory (`index` into the
    /// watches given).
    Watch {
        index: usize,
        addr: u32,
        write: bool,
    },
}

/// The last checkpoint, when the recording stopped there other than at an
/// instruction count.
fn stop_checkpoint(trace: &Trace, checkpoints: &[FrameEntry]) -> Result<Option<usize>> {
    let Some(last) = checkpoints.last() else {
        return Ok(None);
    };
    Ok(trace.checkpoint(last)?.stopped.is_some().then(|| checkpoints.len() - 1))
}

/// What differs between two machine states: the general registers, EIP
/// and EFLAGS by name, then every other field by path.
pub fn state_differences(recorded: &MachineState, replayed: &MachineState) -> Vec<String> {
    let (a, b) = (&recorded.cpu, &replayed.cpu);
    let mut out: Vec<String> = vm::cpu::state::reg::NAMES
        .iter()
        .enumerate()
        .filter(|&(i, _)| a.regs[i] != b.regs[i])
        .map(|(i, name)| format!("{name}: recorded {:#010x}, replayed {:#010x}", a.regs[i], b.regs[i]))
        .collect();
    if a.eip != b.eip {
        out.push(format!("eip: recorded {:#010x}, replayed {:#010x}", a.eip, b.eip));
    }
    if a.eflags != b.eflags {
        out.push(format!(
            "eflags: recorded {:#010x}, replayed {:#010x}",
            a.eflags, b.eflags
        ));
    }
    for f in crate::state_diff::other_fields(recorded, replayed) {
        out.push(format!("{}: recorded {}, replayed {}", f.field, f.a, f.b));
    }
    out
}

/// Puts whole learning, the recorder's at checkpoint `k` (its frame at
/// `offset`), into `machine`'s raw engine, which has forgotten everything.
pub(crate) fn put_learning(machine: &mut Machine, learning: &RawLearning, k: usize, offset: u64) -> Result<()> {
    machine.restore_learning(learning).map_err(|e| TraceError::Corrupt {
        offset,
        what: format!("the engine's learning at checkpoint {k}: {e}"),
    })
}

/// The first way the raw engine's learning at a checkpoint differs from the
/// recorded one, for a divergence report.
fn learning_difference(recorded: &RawLearning, replayed: &RawLearning) -> String {
    let what = if recorded.scanned != replayed.scanned {
        let page = recorded
            .scanned
            .iter()
            .zip(&replayed.scanned)
            .find(|(a, b)| a != b)
            .map_or_else(
                || {
                    format!(
                        "{} pages recorded, {} replayed",
                        recorded.scanned.len(),
                        replayed.scanned.len()
                    )
                },
                |((p, _), _)| format!("first at page {:#x}", p << 12),
            );
        format!("scan results ({page})")
    } else if recorded.patch_count != replayed.patch_count || recorded.patches != replayed.patches {
        format!(
            "patches ({} recorded, {} replayed)",
            recorded.patch_count, replayed.patch_count
        )
    } else if recorded.hot != replayed.hot || recorded.hot_entries != replayed.hot_entries {
        "trap counts towards patches".to_string()
    } else {
        "which engine ran last".to_string()
    };
    format!("the raw engine learned otherwise than recorded: {what}")
}
