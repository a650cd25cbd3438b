//! The machine: one CPU on the PC platform, and the reference engine's run
//! loop. Virtual time is the retired-instruction count plus the ticks the CPU
//! spent halted; timers are deadlines in it. An interrupt is taken at the first
//! instruction boundary at or after its deadline where IF=1 and no interrupt
//! shadow is active (SDM Vol. 3A, 6.8.3), so the instruction that takes it is a
//! pure function of the instruction stream.

use crate::cpu::interrupt::IntSource;
use crate::cpu::state::flags;
use crate::cpu::{vector, Cpu, CpuState, Fault, StepOutcome};
use crate::engine::blocks::BlockCache;
use crate::engine::raw::learning::{LearningError, RawLearning};
use crate::engine::raw::RawEngine;
use crate::events::{Event, SinkSlot};
use crate::host::{HostInput, INPUT_POLL_TICKS};
use crate::platform::{DevicesState, Platform};
use crate::snapshot::{SectionReader, SectionWriter, Snapshot};

/// How many timer deadlines a halted CPU may pass without an interrupt
/// reaching it before the machine concludes no timer can wake it.
const MAX_IDLE_DEADLINES: u64 = 1 << 20;

/// How many exceptions may be delivered in a row without an instruction
/// retiring before the machine reports a fault loop instead of spinning.
const MAX_FAULTS_WITHOUT_PROGRESS: u64 = 1 << 20;

/// The engine a machine runs with (it lives with the engines).
pub use crate::engine::Engine;

/// Where the guest's console output goes.
pub trait Console {
    /// Bytes the guest wrote to COM1.
    fn serial(&mut self, bytes: &[u8]);
    /// Bytes the guest wrote to the port 0xE9 debug console.
    fn debugcon(&mut self, bytes: &[u8]);
}

/// A console that keeps everything in memory (tests, replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureConsole {
    pub serial: Vec<u8>,
    pub debugcon: Vec<u8>,
}

impl Console for CaptureConsole {
    fn serial(&mut self, bytes: &[u8]) {
        self.serial.extend_from_slice(bytes);
    }
    fn debugcon(&mut self, bytes: &[u8]) {
        self.debugcon.extend_from_slice(bytes);
    }
}

/// Why a run stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote to the isa-debug-exit port; the status QEMU would exit with.
    ExitDevice(u32),
    /// HLT with interrupts disabled: nothing can ever wake the CPU.
    HaltedForever,
    /// HLT with interrupts enabled but no timer armed and no more host input.
    IdleForever,
    /// The instruction limit was reached.
    InsnLimit,
    /// The guest asked for a reset (i8042 0xFE, port 0x92 bit 0); like QEMU's
    /// -no-reboot, the run ends there.
    Reset,
    /// A fault while delivering a double fault shut the processor down.
    TripleFault { fault: Fault, state: Box<CpuState> },
    /// Exceptions kept being delivered without any instruction retiring (a
    /// handler that faults at once, forever): the guest can make no progress.
    FaultLoop { fault: Fault, state: Box<CpuState> },
    /// The user ended the run (the console's escape key).
    Stopped,
    /// A debugger's breakpoint: the next instruction is at this linear address.
    Breakpoint(u32),
    /// A debugger's watchpoint: the last instruction accessed this
    /// guest-physical address (`Platform::watches[index]`).
    Watchpoint { index: usize, addr: u32, write: bool },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::ExitDevice(s) => write!(f, "guest exit (status {s})"),
            StopReason::HaltedForever => write!(f, "halted with interrupts disabled"),
            StopReason::IdleForever => write!(f, "halted waiting for input that will not come"),
            StopReason::InsnLimit => write!(f, "instruction limit reached"),
            StopReason::Reset => write!(f, "guest requested a reset"),
            StopReason::Stopped => write!(f, "stopped by the user"),
            StopReason::TripleFault { fault, .. } => write!(f, "triple fault ({fault})"),
            StopReason::FaultLoop { fault, .. } => {
                write!(
                    f,
                    "fault loop: {fault} delivered {MAX_FAULTS_WITHOUT_PROGRESS} times with no instruction retiring"
                )
            }
            StopReason::Breakpoint(pc) => write!(f, "breakpoint at {pc:#x}"),
            StopReason::Watchpoint { addr, write, .. } => {
                write!(f, "watchpoint: {} at {addr:#x}", if *write { "write" } else { "read" })
            }
        }
    }
}

/// Counts of the events that take the reference engine off its straight path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExitCounts {
    pub exceptions: u64,
    pub interrupts: u64,
    pub halts: u64,
}

/// A complete machine: what a checkpoint must capture.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu: Cpu,
    pub platform: Platform,
    pub exits: ExitCounts,
    /// Which engine executes guest code; both give the same results.
    pub engine: Engine,
    pub blocks: BlockCache,
    /// The raw engine's monitor, scanner and patches.
    pub raw: RawEngine,
    /// Where events go (none by default).
    pub events: SinkSlot,
    /// A debugger's breakpoints (linear addresses). With any breakpoint or
    /// watchpoint set, the loop runs one reference step at a time.
    pub breakpoints: Vec<u32>,
    /// The next run starts with the instruction at a breakpoint without
    /// stopping there (a debugger resuming from it).
    pub resume_past_breakpoint: bool,
    /// Watchpoints stop the run after the block that made the access, not
    /// the instruction: the engines keep their speed, and `last_step_start`
    /// says where that block began (a backwards search narrows it down).
    pub coarse_watch: bool,
    /// Icount at the start of the last engine step (one instruction, or a
    /// whole block on the cached engines).
    pub last_step_start: u64,
    /// Virtual time of the next host-input poll.
    next_poll: u64,
    /// Timer deadlines passed while halted since the last interrupt.
    idle_without_wakeup: u64,
    /// (icount, count) of exceptions delivered with no instruction retiring.
    fault_loop: (u64, u64),
    serial_buf: Vec<u8>,
    debugcon_buf: Vec<u8>,
}

/// A machine's place in its run between checkpoints ([`Machine::position`]).
#[derive(Clone, Debug)]
pub struct Position {
    pub state: MachineState,
    tlb: crate::cpu::mmu::Tlb,
    fault_loop: (u64, u64),
}

impl Position {
    /// A checkpoint's position: restoring it is [`Machine::restore_state`].
    pub fn from_state(state: MachineState) -> Self {
        Position {
            state,
            tlb: crate::cpu::mmu::Tlb::new(),
            fault_loop: (u64::MAX, 0),
        }
    }
}

/// The machine's full state as plain data, for comparing and hashing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MachineState {
    pub cpu: CpuState,
    pub icount: u64,
    pub idle_ticks: u64,
    /// The run loop's own schedule: it decides when input is next asked for
    /// and when idling gives up on timers, so it is part of the state.
    pub next_input_poll: u64,
    pub idle_without_wakeup: u64,
    pub devices: DevicesState,
}

impl MachineState {
    /// Its parts as saved-state sections: the CPU, then each device.
    pub fn write_sections(&self, w: &mut impl SectionWriter) {
        w.section(Cpu::SECTION, Cpu::VERSION, &self.cpu);
        self.devices.write_sections(w);
    }

    /// The parts [`MachineState::write_sections`] wrote, read back.
    pub fn read_sections<R: SectionReader>(r: &mut R) -> Result<(CpuState, DevicesState), R::Error> {
        let cpu = r.section(Cpu::SECTION, Cpu::VERSION)?;
        Ok((cpu, DevicesState::read_sections(r)?))
    }
}

impl Machine {
    /// A powered-on PC with `ram_bytes` of RAM, the CPU in its reset state.
    pub fn new(ram_bytes: usize, host: &mut dyn HostInput) -> Self {
        let rtc_start = host.rtc_start();
        Machine {
            cpu: Cpu::new(),
            platform: Platform::new(ram_bytes, rtc_start),
            exits: ExitCounts::default(),
            engine: Engine::default(),
            blocks: BlockCache::default(),
            raw: RawEngine::default(),
            events: SinkSlot::default(),
            breakpoints: Vec::new(),
            resume_past_breakpoint: false,
            coarse_watch: false,
            last_step_start: 0,
            next_poll: 0,
            idle_without_wakeup: 0,
            fault_loop: (u64::MAX, 0),
            serial_buf: Vec::with_capacity(256),
            debugcon_buf: Vec::with_capacity(256),
        }
    }

    pub fn icount(&self) -> u64 {
        self.cpu.icount
    }

    /// Current virtual time in ticks.
    pub fn now(&self) -> u64 {
        self.cpu.now()
    }

    pub fn state(&self) -> MachineState {
        MachineState {
            cpu: self.cpu.save(),
            icount: self.cpu.icount,
            idle_ticks: self.cpu.idle_ticks,
            next_input_poll: self.next_poll,
            idle_without_wakeup: self.idle_without_wakeup,
            devices: self.platform.save_devices(),
        }
    }

    /// Puts the machine in a saved state (a checkpoint): CPU, devices, time
    /// and the run loop's schedule; RAM is the caller's to restore. Cached
    /// translations, blocks, scan results and patches are dropped: they
    /// describe the old memory. What the raw engine had learned there is
    /// the caller's to put back ([`Machine::restore_learning`]) where it
    /// matters: under a patch bug or without the scanner the guest can
    /// tell.
    pub fn restore_state(&mut self, s: &MachineState) {
        self.cpu.restore(&s.cpu);
        self.cpu.icount = s.icount;
        self.cpu.idle_ticks = s.idle_ticks;
        self.next_poll = s.next_input_poll;
        self.idle_without_wakeup = s.idle_without_wakeup;
        self.platform.restore_devices(&s.devices);
        self.fault_loop = (u64::MAX, 0);
        self.forget_cached_code();
    }

    /// Where the machine stands, RAM aside, complete enough to resume from
    /// between checkpoints: the state, the TLB (a guest that edits page
    /// tables without invalidating sees its stale entries) and the run
    /// loop's fault-loop count. The engines' caches and learning are left
    /// out: a restore starts them cold, which only the engine's own events
    /// show, except where the learning is guest-visible
    /// (`RawConfig::learning_guest_visible`: no position is kept there).
    pub fn position(&self) -> Position {
        Position {
            state: self.state(),
            tlb: self.cpu.tlb.clone(),
            fault_loop: self.fault_loop,
        }
    }

    /// Puts the machine where [`Machine::position`] found it (RAM is the
    /// caller's to restore, first).
    pub fn restore_position(&mut self, p: &Position) {
        self.restore_state(&p.state);
        self.cpu.tlb.copy_from(&p.tlb);
        self.fault_loop = p.fault_loop;
    }

    /// Forgets every cached translation and everything the engines learned
    /// about guest code (the block cache sets its blocks aside, to take
    /// back those whose bytes are unchanged as if built anew). The TLB flush is guest-visible only to a guest that
    /// edits page tables without invalidating (the SDM lets a processor
    /// flush at any time); recorder and replayer flush at the same points.
    pub fn forget_cached_code(&mut self) {
        self.count_compiled_patch_hits();
        self.cpu.tlb.flush_all();
        self.blocks.forget_all();
        self.raw.reset_caches();
        self.platform.mem.unwatch_all_code();
    }

    /// The next virtual time at which the loop must look outside the CPU.
    fn next_deadline(&self) -> u64 {
        let poll = if self.platform.uart.rx_space() > 0 {
            self.next_poll
        } else {
            u64::MAX
        };
        self.platform.next_timer_deadline().map_or(poll, |t| t.min(poll))
    }

    /// Handles timers and host input due at `now`.
    fn service(&mut self, now: u64, host: &mut dyn HostInput) {
        self.platform.advance_timers(now);
        if now >= self.next_poll {
            if self.platform.uart.rx_space() > 0 {
                if let Some(b) = host.serial_input(now) {
                    self.platform.uart.receive(b);
                }
            }
            self.next_poll = (now / INPUT_POLL_TICKS + 1) * INPUT_POLL_TICKS;
        }
        self.platform.route_all();
    }

    fn flush_console(&mut self, console: &mut dyn Console) {
        self.platform
            .drain_console(&mut self.serial_buf, &mut self.debugcon_buf);
        if !self.serial_buf.is_empty() {
            console.serial(&self.serial_buf);
            self.serial_buf.clear();
        }
        if !self.debugcon_buf.is_empty() {
            console.debugcon(&self.debugcon_buf);
            self.debugcon_buf.clear();
        }
    }

    /// Takes a pending NMI or external interrupt if the CPU can take one now.
    fn maybe_interrupt(&mut self) -> Option<StepOutcome> {
        let st = &self.cpu.state;
        // An NMI ignores IF; it waits out an interrupt shadow and a handler
        // of the last NMI until its IRET.
        if self.platform.irq.nmi() && !st.nmi_blocked && !st.interrupt_shadow {
            self.platform.irq.lapic.take_nmi();
            self.exits.interrupts += 1;
            let pc = crate::engine::raw::pc(&self.cpu);
            self.events
                .emit(self.cpu.icount, pc, || Event::Interrupt { vector: vector::NMI });
            self.idle_without_wakeup = 0;
            self.cpu.state.nmi_blocked = true;
            return match self
                .cpu
                .deliver_interrupt(&mut self.platform, vector::NMI, IntSource::External)
            {
                Ok(()) if self.cpu.take_task_trap() => Some(self.cpu.raise(&mut self.platform, Fault::new(vector::DB))),
                Ok(()) => None,
                Err(f) => Some(self.cpu.raise(&mut self.platform, f)),
            };
        }
        if st.eflags & flags::IF == 0 || st.interrupt_shadow || !self.platform.intr() {
            return None;
        }
        let vector = self.platform.acknowledge_interrupt();
        self.exits.interrupts += 1;
        let pc = crate::engine::raw::pc(&self.cpu);
        self.events.emit(self.cpu.icount, pc, || Event::Interrupt { vector });
        self.idle_without_wakeup = 0;
        match self
            .cpu
            .deliver_interrupt(&mut self.platform, vector, IntSource::External)
        {
            // Through a task gate to a task with its T flag: its #DB next.
            Ok(()) if self.cpu.take_task_trap() => Some(self.cpu.raise(&mut self.platform, Fault::new(vector::DB))),
            Ok(()) => None,
            Err(f) => Some(self.cpu.raise(&mut self.platform, f)),
        }
    }

    /// Runs the reference engine until something stops the machine or the
    /// instruction count reaches `max_icount`.
    pub fn run(&mut self, max_icount: u64, host: &mut dyn HostInput, console: &mut dyn Console) -> StopReason {
        let stop = self.run_loop(max_icount, host, console);
        self.count_compiled_patch_hits();
        // The sink has every event of the run when it returns.
        self.events.pass_on();
        stop
    }

    /// What the recorder (and a replay passing the point) does at a
    /// checkpoint: flushes the TLB, which a replay restoring the checkpoint
    /// starts without, and saves what the raw engine learned since the last
    /// checkpoint (all of it at the first), which such a replay puts back.
    /// The engines go on learning: nothing cached is forgotten.
    pub fn at_checkpoint(&mut self, first: bool) -> RawLearning {
        self.cpu.tlb.flush_all();
        self.save_learning(first)
    }

    /// What the raw engine learned, whole or changed since the last save
    /// ([`RawEngine::save_learning`]), with the hits compiled patches
    /// counted so far.
    pub fn save_learning(&mut self, full: bool) -> RawLearning {
        self.count_compiled_patch_hits();
        self.raw.save_learning(full)
    }

    /// Puts whole saved learning into the raw engine, which has forgotten
    /// everything (as [`Machine::restore_state`] leaves it).
    pub fn restore_learning(&mut self, learning: &RawLearning) -> Result<(), LearningError> {
        self.raw.restore_learning(learning, &mut self.platform.mem)
    }

    /// Adds the hits that compiled patches counted to the patch table,
    /// where everyone reads them.
    fn count_compiled_patch_hits(&mut self) {
        let patches = &mut self.raw.patches;
        self.blocks.jit.drain_patch_hits(|index, hits| {
            if let Some(p) = patches.counted(index) {
                p.hits += hits;
                p.traps_avoided += hits;
            }
        });
    }

    fn run_loop(&mut self, max_icount: u64, host: &mut dyn HostInput, console: &mut dyn Console) -> StopReason {
        // Port and MMIO accesses are events only while someone listens.
        match (self.events.is_attached(), &self.platform.io_log) {
            (true, None) => self.platform.io_log = Some(Vec::new()),
            (false, Some(_)) => self.platform.io_log = None,
            _ => {}
        }
        // Left set by a run that stopped before it logged its last access,
        // it would end every block from here on.
        self.platform.attention.logged = false;
        let mut deadline = self.next_deadline();
        loop {
            if self.cpu.icount >= max_icount {
                self.flush_console(console);
                return StopReason::InsnLimit;
            }
            let now = self.now();
            if now >= deadline {
                if host.stop_requested(now) {
                    self.flush_console(console);
                    return StopReason::Stopped;
                }
                self.service(now, host);
                deadline = self.next_deadline();
            }
            if let Some(StepOutcome::TripleFault(fault)) = self.maybe_interrupt() {
                self.flush_console(console);
                return StopReason::TripleFault {
                    fault,
                    state: Box::new(self.cpu.state.clone()),
                };
            }
            if self.cpu.state.halted {
                if let Some(stop) = self.idle(host, console) {
                    return stop;
                }
                deadline = self.next_deadline();
                continue;
            }
            let debugging = !self.breakpoints.is_empty() || (!self.platform.watches.is_empty() && !self.coarse_watch);
            if debugging && !std::mem::take(&mut self.resume_past_breakpoint) {
                let pc = crate::engine::raw::pc(&self.cpu);
                if self.breakpoints.contains(&pc) {
                    self.flush_console(console);
                    return StopReason::Breakpoint(pc);
                }
            }
            let engine = if debugging { Engine::Emulate } else { self.engine };
            self.last_step_start = self.cpu.icount;
            // Engines stop at the next deadline, so timers and input are
            // serviced at the same instruction whichever runs.
            let stop = max_icount.min(deadline.saturating_sub(self.cpu.idle_ticks));
            let parts = crate::engine::Parts {
                cpu: &mut self.cpu,
                platform: &mut self.platform,
                blocks: &mut self.blocks,
                events: &mut self.events,
            };
            let outcome = engine.step(&mut self.raw, parts, stop);
            match outcome {
                StepOutcome::Retired | StepOutcome::Halted => {}
                StepOutcome::Exception(fault) => {
                    self.exits.exceptions += 1;
                    let pc = self.cpu.last_fault_pc;
                    self.events
                        .emit(self.cpu.icount, pc, || Event::GuestException { fault });
                    if self.cpu.icount == self.fault_loop.0 {
                        self.fault_loop.1 += 1;
                        if self.fault_loop.1 >= MAX_FAULTS_WITHOUT_PROGRESS {
                            self.flush_console(console);
                            return StopReason::FaultLoop {
                                fault,
                                state: Box::new(self.cpu.state.clone()),
                            };
                        }
                    } else {
                        self.fault_loop = (self.cpu.icount, 1);
                    }
                }
                StepOutcome::TripleFault(fault) => {
                    self.flush_console(console);
                    return StopReason::TripleFault {
                        fault,
                        state: Box::new(self.cpu.state.clone()),
                    };
                }
            }
            if self.platform.attention.logged {
                // The engine left the rest: they belong to the instruction
                // that ran last.
                let icount = self.cpu.icount.saturating_sub(1);
                let pc = self.cpu.start_pc();
                self.platform.emit_logged(&mut self.events, icount, pc);
            }
            let att = self.platform.attention;
            if att != Default::default() {
                if att.output {
                    self.flush_console(console);
                }
                if att.irq {
                    self.platform.route_changed();
                    self.platform.attention.irq = false;
                    deadline = self.next_deadline();
                }
                // Nothing to do but to have ended the block.
                self.platform.attention.memory_map = false;
                if att.stop {
                    self.platform.attention.stop = false;
                    if let Some(status) = self.platform.exit.exit_status() {
                        self.flush_console(console);
                        return StopReason::ExitDevice(status);
                    }
                    if self.platform.take_reset_request() {
                        self.flush_console(console);
                        return StopReason::Reset;
                    }
                }
            }
            // The hit stays noted until the debugger clears it.
            if let Some(hit) = self.platform.watch_hit {
                self.flush_console(console);
                return StopReason::Watchpoint {
                    index: hit.index,
                    addr: hit.addr,
                    write: hit.write,
                };
            }
        }
    }

    /// Makes this machine a copy of `src`, given that their RAM differs at
    /// most on `pages` (the pages either dirtied since they were last
    /// equal): copies those pages and clones everything else. A clone of a
    /// machine allocates and copies all of its RAM; this copies a few pages.
    pub fn copy_from(&mut self, src: &mut Machine, pages: &[usize]) {
        let src_ram = src.platform.mem.take_ram();
        let mut ram = self.platform.mem.take_ram();
        let ps = crate::mem::PAGE_SIZE;
        for &p in pages {
            if let (Some(dst), Some(from)) = (ram.get_mut(p * ps..(p + 1) * ps), src_ram.get(p * ps..(p + 1) * ps)) {
                dst.copy_from_slice(from);
            }
        }
        *self = src.clone();
        self.platform.mem.put_ram(ram);
        src.platform.mem.put_ram(src_ram);
    }

    /// Reads guest memory at a linear address through the guest's page
    /// tables, without side effects; `None` where a page is not mapped.
    pub fn read_linear(&mut self, addr: u32, len: usize) -> Option<Vec<u8>> {
        let mut out = vec![0; len];
        (crate::linear::read(self, addr, &mut out) == len).then_some(out)
    }

    /// Suppresses the patches with these keys (bisect's delta debugging):
    /// those installed from now on are installed switched off, and those
    /// enabled now (a restore put them back) are switched off as if they
    /// had been.
    pub fn suppress_patches(&mut self, keys: std::collections::HashSet<crate::engine::raw::patm::PatchKey>) {
        use crate::engine::raw::patm::PatchState;
        let enabled: Vec<u32> = (0..self.raw.patches.patches.len() as u32)
            .filter(|&i| {
                self.raw
                    .patches
                    .get(i)
                    .is_some_and(|p| p.state == PatchState::Enabled && keys.contains(&p.key()))
            })
            .collect();
        for index in enabled {
            for page in self.raw.patches.switch_off(index) {
                self.blocks.drop_page(page);
            }
        }
        self.raw.suppressed = keys;
    }

    /// Switches an inline patch off (its site traps again) or back on.
    /// Returns false when there is no such inline patch, or it is dirty or
    /// refused.
    pub fn set_patch_enabled(&mut self, index: u32, enabled: bool) -> bool {
        use crate::engine::raw::patm::PatchState;
        let Some(p) = self.raw.patches.get_mut(index) else {
            return false;
        };
        let state = if enabled {
            PatchState::Enabled
        } else {
            PatchState::Disabled
        };
        if p.kind != crate::engine::raw::patm::PatchKind::Inline
            || !matches!(p.state, PatchState::Enabled | PatchState::Disabled)
        {
            return false;
        }
        if p.state != state {
            p.state = state;
            let (site, phys) = (p.site, p.phys);
            self.blocks.drop_page(phys >> 12);
            self.events
                .emit(self.cpu.icount, site, || Event::PatchToggled { site, phys, enabled });
            // Outside a run: the sink has it now, as after a run.
            self.events.pass_on();
        }
        true
    }

    /// The CPU is halted: let virtual time pass to the next event.
    fn idle(&mut self, host: &mut dyn HostInput, console: &mut dyn Console) -> Option<StopReason> {
        self.flush_console(console);
        if self.idle_without_wakeup == 0 {
            self.exits.halts += 1;
        }
        self.idle_without_wakeup += 1;
        if self.cpu.state.eflags & flags::IF == 0 {
            return Some(StopReason::HaltedForever);
        }
        let now = self.now();
        // A timer that fires into a masked line or one blocked by an
        // unacknowledged in-service IRQ wakes nothing; after this many such
        // deadlines only input can help.
        let timer = self
            .platform
            .next_timer_deadline()
            .filter(|_| self.idle_without_wakeup <= MAX_IDLE_DEADLINES);
        match timer {
            Some(_) => {
                // Warp to the next timer or input poll, whichever comes first.
                let target = self.next_deadline().max(now);
                self.cpu.idle_ticks += target - now;
                self.service(target, host);
            }
            None => {
                if self.platform.uart.rx_space() == 0 || !host.wait_for_input(now) {
                    if host.stop_requested(now) {
                        return Some(StopReason::Stopped);
                    }
                    return Some(StopReason::IdleForever);
                }
                self.next_poll = now;
                self.service(now, host);
            }
        }
        None
    }
}

impl crate::linear::GuestMemory for Machine {
    fn translate(&mut self, lin: u32) -> Option<u32> {
        self.cpu.probe_translate(&mut self.platform, lin)
    }

    fn ram(&self) -> &[u8] {
        self.platform.mem.ram()
    }

    fn write_ram(&mut self, phys: u32, bytes: &[u8]) {
        for (p, b) in (phys..).zip(bytes) {
            self.platform.mem.write(p, 1, u32::from(*b));
        }
    }
}

/// What to boot (the boot loaders' kinds of kernel).
pub use crate::boot::Kernel;

impl Machine {
    /// Builds a machine with `ram_bytes` of RAM and loads `kernel` into it,
    /// the CPU in the state the boot protocol defines.
    pub fn boot(ram_bytes: u64, kernel: &Kernel, host: &mut dyn HostInput) -> Result<Self, crate::VmError> {
        if !crate::boot::valid_ram_size(ram_bytes) {
            return Err(crate::VmError::BadMemorySize(format!("{ram_bytes} bytes")));
        }
        let mut m = Machine::new(ram_bytes as usize, host);
        let state = kernel.load(&mut m.platform)?;
        m.cpu.set_state(state);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use crate::host::NoInput;
    use crate::platform::Attention;

    #[test]
    fn ram_that_is_not_whole_pages_is_refused() {
        let kernel = Kernel::Flat {
            image: vec![0xF4],
            addr: 0x7C00,
        };
        for ram in [(4 << 20) + 1, (4 << 20) - 100] {
            let r = Machine::boot(ram, &kernel, &mut NoInput::default());
            assert!(matches!(r, Err(crate::VmError::BadMemorySize(_))), "{ram}");
        }
        assert!(Machine::boot(4 << 20, &kernel, &mut NoInput::default()).is_ok());
    }

    const HANDLER: u32 = 0x600;
    const MAIN: u32 = 0x700;
    /// Where the handler stores the IP the interrupt pushed.
    const SAVED_IP: u32 = 0x500;

    /// A real-mode machine with the PIC at vector 0x20, IRQ0 unmasked, PIT
    /// channel 0 in mode 2 with `divisor`, and `main` at 0000:0700. The IRQ0
    /// handler stores the interrupted IP at 0x500 and halts with IF=0.
    fn machine(main: &[u8], divisor: u16) -> Machine {
        let mut host = NoInput::default();
        let image = main.to_vec();
        let mut m = Machine::boot(2 << 20, &Kernel::Flat { image, addr: MAIN }, &mut host).unwrap();
        let p = &mut m.platform;
        // IVT[0x20] = 0000:0600
        p.write_phys(0x20 * 4, 4, HANDLER, 0);
        // mov bp,sp; mov ax,[bp+0]; mov [0x500],ax; hlt
        p.mem
            .load(HANDLER, &[0x89, 0xE5, 0x8B, 0x46, 0x00, 0xA3, 0x00, 0x05, 0xF4])
            .unwrap();
        for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0xFE)] {
            p.io_write(port, 1, v, 0);
        }
        for (port, v) in [(0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01), (0xA1, 0xFF)] {
            p.io_write(port, 1, v, 0);
        }
        p.io_write(0x43, 1, 0x34, 0);
        p.io_write(0x40, 1, u32::from(divisor & 0xFF), 0);
        p.io_write(0x40, 1, u32::from(divisor >> 8), 0);
        m.platform.attention = Attention::default();
        m
    }

    fn run_to_handler(m: &mut Machine) -> u16 {
        let stop = m.run(1_000_000, &mut NoInput::default(), &mut CaptureConsole::default());
        assert_eq!(stop, StopReason::HaltedForever);
        m.platform.read_phys(SAVED_IP, 2, 0) as u16
    }

    #[test]
    fn irq_is_taken_at_the_first_boundary_at_or_after_its_deadline() {
        // sti; jmp $
        let mut m = machine(&[0xFB, 0xEB, 0xFE], 100);
        let deadline = m.platform.next_timer_deadline().expect("PIT armed");
        // Step one instruction at a time: the handler's first instruction
        // runs in the call that crosses the boundary where the IRQ is taken.
        let mut taken_at = None;
        for limit in 1..deadline + 10 {
            m.run(limit, &mut NoInput::default(), &mut CaptureConsole::default());
            if (HANDLER..HANDLER + 9).contains(&m.cpu.state.eip) {
                taken_at = Some(limit - 1);
                break;
            }
        }
        assert_eq!(taken_at, Some(deadline));
    }

    // The local APIC's timer is a deadline in virtual time like the PIT's:
    // its interrupt is taken at exactly that boundary on every engine.
    #[test]
    fn apic_timer_interrupts_at_its_exact_instruction_count_on_every_engine() {
        for engine in Engine::ALL {
            for (count, divide, expected) in [(500, 0xB, 500), (333, 0x0, 666), (37, 0x1, 148)] {
                // sti; jmp $ with the 8259 masked: only the APIC interrupts.
                let mut m = machine(&[0xFB, 0xEB, 0xFE], 100);
                m.engine = engine;
                m.platform.io_write(0x21, 1, 0xFF, 0);
                p_write_lapic(&mut m.platform, 0x3E0, divide);
                p_write_lapic(&mut m.platform, 0x320, 0x20);
                p_write_lapic(&mut m.platform, 0x380, count);
                m.platform.route_all();
                m.platform.attention = Attention::default();
                let mut taken_at = None;
                for limit in 1..expected + 10 {
                    m.run(limit, &mut NoInput::default(), &mut CaptureConsole::default());
                    if (HANDLER..HANDLER + 9).contains(&m.cpu.state.eip) {
                        taken_at = Some(limit - 1);
                        break;
                    }
                }
                assert_eq!(
                    taken_at,
                    Some(expected),
                    "{engine:?}: count {count}, divide {divide:#x}"
                );
            }
        }
    }

    fn p_write_lapic(p: &mut Platform, reg: u32, value: u32) {
        p.write_phys(0xFEE0_0000 + reg, 4, value, 0);
    }

    #[test]
    fn sti_delays_a_pending_irq_by_one_instruction() {
        // cli; mov cx,2000; loop $; sti; nop; nop; nop; jmp $
        let main = [0xFA, 0xB9, 0xD0, 0x07, 0xE2, 0xFE, 0xFB, 0x90, 0x90, 0x90, 0xEB, 0xFE];
        let mut m = machine(&main, 10);
        assert!(
            m.platform.next_timer_deadline().unwrap() < 2000,
            "the IRQ must be pending before STI"
        );
        // Taken after the NOP that follows STI: the pushed IP is the second NOP.
        assert_eq!(u32::from(run_to_handler(&mut m)), MAIN + 8);
    }

    #[test]
    fn mov_ss_extends_the_interrupt_shadow() {
        // cli; mov cx,2000; loop $; sti; mov ss,ax; nop; jmp $
        let main = [0xFA, 0xB9, 0xD0, 0x07, 0xE2, 0xFE, 0xFB, 0x8E, 0xD0, 0x90, 0xEB, 0xFE];
        let mut m = machine(&main, 10);
        // STI shadows the boundary after itself, MOV SS the one after it.
        assert_eq!(u32::from(run_to_handler(&mut m)), MAIN + 10);
    }

    #[test]
    fn halted_cpu_waits_in_virtual_time_for_the_timer() {
        // sti; hlt; jmp $
        let mut m = machine(&[0xFB, 0xF4, 0xEB, 0xFE], 1193);
        let deadline = m.platform.next_timer_deadline().unwrap();
        assert_eq!(u32::from(run_to_handler(&mut m)), MAIN + 2);
        // Two instructions ran before HLT; the rest of the wait was idle time.
        assert_eq!(m.cpu.idle_ticks + 2, deadline);
        assert_eq!(m.exits.halts, 2);
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;
    use crate::host::{NoInput, ScriptedInput};

    fn flat(code: &[u8]) -> Machine {
        Machine::boot(
            2 << 20,
            &Kernel::Flat {
                image: code.to_vec(),
                addr: 0x7C00,
            },
            &mut NoInput::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_timer_into_a_masked_line_does_not_spin_forever() {
        // PIT channel 0 mode 2; mask every PIC line; sti; hlt
        let code = [
            0xB0, 0x34, 0xE6, 0x43, 0xB0, 0x00, 0xE6, 0x40, 0xE6, 0x40, // mov al,34h; out 43h,al; out 40h,al x2
            0xB0, 0xFF, 0xE6, 0x21, // mov al,0FFh; out 21h,al
            0xFB, 0xF4, // sti; hlt
        ];
        let mut m = flat(&code);
        let stop = m.run(1000, &mut NoInput::default(), &mut CaptureConsole::default());
        assert_eq!(stop, StopReason::IdleForever);
        assert_eq!(m.exits.halts, 1);
        assert_eq!(m.icount(), 9);
    }

    #[test]
    fn a_full_receive_buffer_ends_the_wait_for_input() {
        // sti; hlt with the UART's IRQ off: the first byte fills the 1-byte
        // buffer (FIFOs off) and no further input can be taken.
        let mut m = flat(&[0xFB, 0xF4]);
        let mut host = ScriptedInput::new(0, b"ab");
        let stop = m.run(1000, &mut host, &mut CaptureConsole::default());
        assert_eq!(stop, StopReason::IdleForever);
        assert_eq!(host.bytes.len(), 1, "one byte taken, one left");
    }

    #[test]
    fn copy_from_with_the_dirty_pages_equals_a_clone() {
        // A loop storing a counter across pages: mov ebx, 0x1000; l: inc dword
        // [ebx]; add ebx, 0x1000; and ebx, 0xFFFFF; jmp l (real mode, 16-bit
        // operands with 32-bit prefixes).
        let code = [
            0x66, 0xBB, 0x00, 0x10, 0x00, 0x00, // mov ebx, 0x1000
            0x67, 0x66, 0xFF, 0x03, // inc dword [ebx]
            0x66, 0x81, 0xC3, 0x00, 0x10, 0x00, 0x00, // add ebx, 0x1000
            0x66, 0x81, 0xE3, 0xFF, 0xFF, 0x00, 0x00, // and ebx, 0xFFFF
            0xEB, 0xEA, // jmp inc
        ];
        let mut a = flat(&code);
        a.platform.mem.take_dirty();
        let mut b = a.clone();
        a.run(500, &mut NoInput::default(), &mut CaptureConsole::default());
        let dirty = a.platform.mem.take_dirty();
        assert!(dirty.len() > 3, "{dirty:?}");
        assert!(dirty.windows(2).all(|w| w[0] < w[1]), "ascending: {dirty:?}");
        b.copy_from(&mut a, &dirty);
        assert_eq!(b.state(), a.state());
        assert_eq!(b.platform.mem.ram(), a.platform.mem.ram());
        // And back: the pages b has since written, copied from a, undo them.
        let before = a.clone();
        b.run(900, &mut NoInput::default(), &mut CaptureConsole::default());
        let dirty = b.platform.mem.take_dirty();
        b.copy_from(&mut a, &dirty);
        assert_eq!(b.state(), before.state());
        assert_eq!(b.platform.mem.ram(), before.platform.mem.ram());
        assert!(b.platform.mem.take_dirty().is_empty());
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;
    use crate::cpu::state::cr0;
    use crate::host::NoInput;

    const PAGE_DIR: u32 = 0x2_0000;
    const PAGE_TABLE: u32 = 0x2_1000;

    /// A guest that remaps a page it has just read without INVLPG, then
    /// reads it again: the second read sees the stale TLB entry.
    fn stale_tlb_guest(engine: Engine) -> Machine {
        let mut code = vec![0xA1, 0x00, 0x50, 0x00, 0x00]; // mov eax, [0x5000]
        code.extend([0xC7, 0x05]); // mov dword [PAGE_TABLE + 5 * 4], 0x6003
        code.extend((PAGE_TABLE + 5 * 4).to_le_bytes());
        code.extend(0x6003u32.to_le_bytes());
        code.extend([0x8B, 0x1D, 0x00, 0x50, 0x00, 0x00, 0xF4]); // mov ebx, [0x5000]; hlt
        let kernel = Kernel::Flat {
            image: code,
            addr: 0x1_0000,
        };
        let mut m = Machine::boot(4 << 20, &kernel, &mut NoInput::default()).expect("boot");
        let mem = &mut m.platform.mem;
        mem.write(PAGE_DIR, 4, PAGE_TABLE | 3);
        for p in 0..1024u32 {
            mem.write(PAGE_TABLE + 4 * p, 4, (p << 12) | 3);
        }
        mem.write(0x5000, 4, 0x1111_1111);
        mem.write(0x6000, 4, 0x2222_2222);
        let st = &mut m.cpu.state;
        st.flat_segments();
        st.cr0 = cr0::PE | cr0::ET | cr0::PG;
        st.cr3 = PAGE_DIR;
        st.eip = 0x1_0000;
        m.engine = engine;
        m
    }

    /// A position keeps the TLB: resuming from one, the guest reads what it
    /// read the first time, stale entry and all; restoring only the state
    /// (as at a checkpoint, where the recording flushes too) does not.
    #[test]
    fn a_position_resumes_with_the_tlb_it_had() {
        for engine in [Engine::Emulate, Engine::Blocks, Engine::Raw] {
            let mut m = stale_tlb_guest(engine);
            let run = |m: &mut Machine, limit| m.run(limit, &mut NoInput::default(), &mut CaptureConsole::default());
            run(&mut m, 2);
            let here = m.position();
            run(&mut m, 3);
            assert_eq!(m.cpu.state.regs[3], 0x1111_1111, "{engine:?}: the stale entry is read");
            m.restore_position(&here);
            run(&mut m, 3);
            assert_eq!(m.cpu.state.regs[3], 0x1111_1111, "{engine:?}: again from the position");
            m.restore_state(&here.state);
            run(&mut m, 3);
            assert_eq!(
                m.cpu.state.regs[3], 0x2222_2222,
                "{engine:?}: a flushed TLB reads the new mapping"
            );
        }
    }
}
