//! The gdbstub target: registers, memory, breakpoints, watchpoints and
//! execution in both directions, over a `Replayer`.

use gdbstub::common::Signal;
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep, SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86CoreRegs;
use gdbstub_arch::x86::X86_SSE;

use replay::live::Live;
use replay::replay::Stop;
use replay::timeline::Predicate;
use replay::Replayer;
use vm::cpu::state::SegReg;
use vm::platform::Watch;

use crate::GdbError;

/// Instructions a forward continue runs between looks for a Ctrl-C (and,
/// live, records at a time).
const SLICE: u64 = 2_000_000;
/// Instructions a live guest records ahead when a step reaches the end.
const LIVE_STEP: u64 = 10_000;
/// Breakpoints at once: the machine looks for each at every instruction,
/// so their number is a cost on every instruction run.
const MAX_BREAKPOINTS: usize = 1024;
/// Watchpoints at once, and the bytes one may cover: each is translated
/// page by page at every step or continue, and every guest memory access
/// is compared with each resulting range.
const MAX_WATCHES: usize = 64;
const MAX_WATCH_LEN: u32 = 64 * 1024;

/// What gdb asked for last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Stopped,
    Continue,
    Step,
    ReverseStep,
    ReverseContinue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GdbWatch {
    addr: u32,
    len: u32,
    kind: WatchKind,
}

pub struct DebugTarget<'t> {
    pub replayer: Replayer<'t>,
    pub live: Option<Live>,
    breakpoints: Vec<u32>,
    watches: Vec<GdbWatch>,
    pub(crate) mode: Mode,
    pub(crate) quit: bool,
    /// gdb wrote registers or memory: the machine may be off the recording.
    edited: bool,
}

impl<'t> DebugTarget<'t> {
    pub fn new(mut replayer: Replayer<'t>) -> Self {
        replayer.keep_history();
        DebugTarget {
            replayer,
            breakpoints: Vec::new(),
            watches: Vec::new(),
            mode: Mode::Stopped,
            quit: false,
            edited: false,
            live: None,
        }
    }

    /// Readies the target for the next gdb. The replay stays where the last
    /// one left it, but nothing else of that session does: a breakpoint or
    /// watchpoint it never removed (a gdb that crashed, or a client that
    /// just hung up) would stop this one where it never asked, and its
    /// edits would show as if recorded.
    pub(crate) fn begin_session(&mut self) -> Result<(), GdbError> {
        self.breakpoints.clear();
        self.watches.clear();
        self.mode = Mode::Stopped;
        self.quit = false;
        if std::mem::take(&mut self.edited) {
            // The recorded state at the same position: from the checkpoint
            // before it, replayed (a seek from here would keep the edits).
            let r = &mut self.replayer;
            let here = r.icount();
            let k = r
                .checkpoint_icounts()
                .iter()
                .rposition(|&c| c <= here)
                .ok_or(GdbError::Trace(replay::TraceError::Missing("checkpoint")))?;
            r.restore(k).map_err(GdbError::Trace)?;
            r.run_to(here, false).map_err(GdbError::Trace)?;
        }
        Ok(())
    }

    /// At the end of what was recorded: with a live guest, record `n` more
    /// instructions and take them in. Whether there is more to replay.
    fn grow(&mut self, n: u64) -> Result<bool, GdbError> {
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        match live.extend(n).map_err(GdbError::Trace)? {
            Some(trace) => {
                self.replayer.extend_trace(trace).map_err(GdbError::Trace)?;
                Ok(!self.replayer.at_end())
            }
            None => Ok(false),
        }
    }

    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    /// The watches as guest-physical ranges, translated through the page
    /// tables at the current position (a range crossing a page is split),
    /// with the index of the gdb watch each came from.
    fn physical_watches(&mut self) -> (Vec<Watch>, Vec<usize>) {
        let mut out = Vec::new();
        let mut owners = Vec::new();
        for (i, w) in self.watches.clone().iter().enumerate() {
            let (read, write) = match w.kind {
                WatchKind::Write => (false, true),
                WatchKind::Read => (true, false),
                WatchKind::ReadWrite => (true, true),
            };
            let mut lin = w.addr;
            let end = w.addr.wrapping_add(w.len.max(1));
            while lin != end {
                let page_end = (lin & !0xFFF).wrapping_add(0x1000);
                let chunk_end = if end.wrapping_sub(lin) <= page_end.wrapping_sub(lin) {
                    end
                } else {
                    page_end
                };
                let m = &mut self.replayer.machine;
                if let Some(phys) = m.cpu.probe_translate(&mut m.platform, lin) {
                    out.push(Watch {
                        start: phys,
                        end: phys.wrapping_add(chunk_end.wrapping_sub(lin)),
                        read,
                        write,
                    });
                    owners.push(i);
                }
                lin = chunk_end;
            }
        }
        (out, owners)
    }

    fn watch_stop(&self, owner: usize) -> SingleThreadStopReason<u32> {
        let w = self.watches[owner];
        SingleThreadStopReason::Watch {
            tid: (),
            kind: w.kind,
            addr: w.addr,
        }
    }

    /// Carries out what gdb asked for, or a slice of it. `None`: a forward
    /// continue goes on (after a look for Ctrl-C).
    pub(crate) fn run_slice(&mut self) -> Result<Option<SingleThreadStopReason<u32>>, GdbError> {
        let r = &mut self.replayer;
        let stop = match self.mode {
            Mode::Stopped => Some(SingleThreadStopReason::DoneStep),
            Mode::Step => {
                if r.at_end() && !self.grow(LIVE_STEP)? {
                    Some(end_of_log())
                } else {
                    let (watches, owners) = self.physical_watches();
                    let here = self.replayer.icount();
                    match self.replayer.resume(here + 1, &[], &watches).map_err(GdbError::Trace)? {
                        Stop::Watch { index, .. } => owners.get(index).map(|&o| self.watch_stop(o)),
                        _ => Some(SingleThreadStopReason::DoneStep),
                    }
                }
            }
            Mode::Continue => {
                if r.at_end() && !self.grow(SLICE)? {
                    Some(end_of_log())
                } else {
                    let (watches, owners) = self.physical_watches();
                    let here = self.replayer.icount();
                    let stop = self
                        .replayer
                        .resume(here + SLICE, &self.breakpoints, &watches)
                        .map_err(GdbError::Trace)?;
                    match stop {
                        Stop::Reached => None,
                        // A live guest goes on: the next slice records more.
                        Stop::End if self.live.as_ref().is_some_and(|l| l.stop.is_none()) => None,
                        Stop::End => Some(end_of_log()),
                        Stop::Breakpoint(_) => Some(SingleThreadStopReason::SwBreak(())),
                        Stop::Watch { index, .. } => owners.get(index).map(|&o| self.watch_stop(o)),
                    }
                }
            }
            Mode::ReverseStep => {
                let here = r.icount();
                if here == 0 {
                    Some(begin_of_log())
                } else {
                    r.seek(here - 1).map_err(GdbError::Trace)?;
                    Some(SingleThreadStopReason::DoneStep)
                }
            }
            Mode::ReverseContinue => {
                let (watches, owners) = self.physical_watches();
                let mut preds: Vec<Predicate> = self.breakpoints.iter().map(|&pc| Predicate::Pc(pc)).collect();
                let nbp = preds.len();
                preds.extend(watches.iter().map(|w| Predicate::Accesses {
                    start: w.start,
                    end: w.end,
                    read: w.read,
                    write: w.write,
                }));
                match self.replayer.find_previous_any(&preds).map_err(GdbError::Trace)? {
                    Some((_, i)) if i < nbp => Some(SingleThreadStopReason::SwBreak(())),
                    Some((_, i)) => owners.get(i - nbp).map(|&o| self.watch_stop(o)),
                    None => {
                        self.replayer.seek(0).map_err(GdbError::Trace)?;
                        Some(begin_of_log())
                    }
                }
            }
        };
        if stop.is_some() {
            self.mode = Mode::Stopped;
        }
        Ok(stop)
    }
}

fn end_of_log() -> SingleThreadStopReason<u32> {
    SingleThreadStopReason::ReplayLog {
        tid: None,
        pos: ReplayLogPosition::End,
    }
}

fn begin_of_log() -> SingleThreadStopReason<u32> {
    SingleThreadStopReason::ReplayLog {
        tid: None,
        pos: ReplayLogPosition::Begin,
    }
}

impl Target for DebugTarget<'_> {
    type Arch = X86_SSE;
    type Error = GdbError;

    #[inline(always)]
    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    #[inline(always)]
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for DebugTarget<'_> {
    fn read_registers(&mut self, regs: &mut X86CoreRegs) -> TargetResult<(), Self> {
        let st = &self.replayer.machine.cpu.state;
        let r = &st.regs;
        regs.eax = r[0];
        regs.ecx = r[1];
        regs.edx = r[2];
        regs.ebx = r[3];
        regs.esp = r[4];
        regs.ebp = r[5];
        regs.esi = r[6];
        regs.edi = r[7];
        regs.eip = st.eip;
        regs.eflags = st.eflags;
        let sel = |s: SegReg| u32::from(st.segs[s as usize].selector);
        regs.segments.cs = sel(SegReg::Cs);
        regs.segments.ss = sel(SegReg::Ss);
        regs.segments.ds = sel(SegReg::Ds);
        regs.segments.es = sel(SegReg::Es);
        regs.segments.fs = sel(SegReg::Fs);
        regs.segments.gs = sel(SegReg::Gs);
        // The x87 registers in stack order, and its control words as
        // FNSTENV stores them (gdb's ftag is the full tag word).
        let fpu = &st.fpu;
        for (i, reg) in regs.st.iter_mut().enumerate() {
            *reg = fpu.st(i as u8).to_bytes();
        }
        regs.fpu.fctrl = u32::from(fpu.control);
        regs.fpu.fstat = u32::from(fpu.status);
        regs.fpu.ftag = u32::from(fpu.full_tag_word());
        regs.fpu.fiseg = u32::from(fpu.cs);
        regs.fpu.fioff = fpu.ip;
        regs.fpu.foseg = u32::from(fpu.ds);
        regs.fpu.fooff = fpu.dp;
        regs.fpu.fop = u32::from(fpu.opcode);
        // No SSE: MXCSR reads as after reset.
        regs.mxcsr = 0x1F80;
        Ok(())
    }

    /// Edits the guest at the current position, as rr allows: going on
    /// from here departs from the recording (the run is no longer the
    /// recorded one), and any move backwards restores recorded state and
    /// forgets the edit. Segment registers keep their descriptors; only an
    /// unchanged selector is accepted.
    fn write_registers(&mut self, regs: &X86CoreRegs) -> TargetResult<(), Self> {
        let st = &self.replayer.machine.cpu.state;
        let sel = |s: SegReg| u32::from(st.segs[s as usize].selector);
        let segs = &regs.segments;
        if [segs.cs, segs.ss, segs.ds, segs.es, segs.fs, segs.gs]
            != [
                sel(SegReg::Cs),
                sel(SegReg::Ss),
                sel(SegReg::Ds),
                sel(SegReg::Es),
                sel(SegReg::Fs),
                sel(SegReg::Gs),
            ]
        {
            return Err(TargetError::NonFatal);
        }
        self.edited = true;
        self.replayer.note_edit();
        let st = &mut self.replayer.machine.cpu.state;
        st.regs = [
            regs.eax, regs.ecx, regs.edx, regs.ebx, regs.esp, regs.ebp, regs.esi, regs.edi,
        ];
        st.eip = regs.eip;
        // Reserved bits keep their fixed values.
        st.eflags = (regs.eflags & 0x003F_7FD5) | 0x2;
        Ok(())
    }

    /// Reads guest memory at linear addresses: as much as is mapped from
    /// `start_addr` on (gdb asks again for the rest), or an error when
    /// nothing is.
    fn read_addrs(&mut self, start_addr: u32, data: &mut [u8]) -> TargetResult<usize, Self> {
        let n = vm::linear::read(&mut self.replayer.machine, start_addr, data);
        if n == 0 && !data.is_empty() {
            // Not mapped: an error reply, as from a real target.
            return Err(TargetError::Errno(14));
        }
        Ok(n)
    }

    /// Writes guest memory at linear addresses (see `write_registers` on
    /// what an edit means for the replay); any unmapped byte is an error,
    /// and then nothing is written.
    fn write_addrs(&mut self, start_addr: u32, data: &[u8]) -> TargetResult<(), Self> {
        if !vm::linear::write(&mut self.replayer.machine, start_addr, data) {
            return Err(TargetError::Errno(14));
        }
        self.edited = true;
        self.replayer.note_edit();
        Ok(())
    }

    #[inline(always)]
    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for DebugTarget<'_> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.mode = Mode::Continue;
        Ok(())
    }

    #[inline(always)]
    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, (), Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, (), Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for DebugTarget<'_> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.mode = Mode::Step;
        Ok(())
    }
}

impl ReverseStep<()> for DebugTarget<'_> {
    fn reverse_step(&mut self, _tid: ()) -> Result<(), Self::Error> {
        self.mode = Mode::ReverseStep;
        Ok(())
    }
}

impl ReverseCont<()> for DebugTarget<'_> {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.mode = Mode::ReverseContinue;
        Ok(())
    }
}

impl Breakpoints for DebugTarget<'_> {
    #[inline(always)]
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl DebugTarget<'_> {
    /// False (gdb reports it cannot insert the breakpoint) past the limit.
    fn add_break(&mut self, addr: u32) -> bool {
        if self.breakpoints.contains(&addr) {
            return true;
        }
        if self.breakpoints.len() >= MAX_BREAKPOINTS {
            return false;
        }
        self.breakpoints.push(addr);
        true
    }

    fn remove_break(&mut self, addr: u32) -> bool {
        let before = self.breakpoints.len();
        self.breakpoints.retain(|&a| a != addr);
        before != self.breakpoints.len()
    }
}

impl SwBreakpoint for DebugTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_break(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_break(addr))
    }
}

impl HwBreakpoint for DebugTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_break(addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_break(addr))
    }
}

impl HwWatchpoint for DebugTarget<'_> {
    /// Refused (gdb reports it cannot insert the watchpoint) past the
    /// limits.
    fn add_hw_watchpoint(&mut self, addr: u32, len: u32, kind: WatchKind) -> TargetResult<bool, Self> {
        if len > MAX_WATCH_LEN || self.watches.len() >= MAX_WATCHES {
            return Ok(false);
        }
        self.watches.push(GdbWatch { addr, len, kind });
        Ok(true)
    }

    fn remove_hw_watchpoint(&mut self, addr: u32, len: u32, kind: WatchKind) -> TargetResult<bool, Self> {
        match self.watches.iter().position(|w| *w == GdbWatch { addr, len, kind }) {
            Some(i) => {
                self.watches.remove(i);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
