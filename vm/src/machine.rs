//! The machine: one CPU on the PC platform, and the reference engine's run
//! loop. Virtual time is the retired-instruction count plus the ticks the CPU
//! spent halted; timers are deadlines in it. An interrupt is taken at the first
//! instruction boundary at or after its deadline where IF=1 and no interrupt
//! shadow is active (SDM Vol. 3A, 6.8.3), so the instruction that takes it is a
//! pure function of the instruction stream.

use crate::cpu::interrupt::IntSource;
use crate::cpu::state::flags;
use crate::cpu::{Cpu, CpuState, Fault, StepOutcome};
use crate::host::{HostInput, INPUT_POLL_TICKS};
use crate::platform::{DevicesState, Platform};

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
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::ExitDevice(s) => write!(f, "guest exit (status {s})"),
            StopReason::HaltedForever => write!(f, "halted with interrupts disabled"),
            StopReason::IdleForever => write!(f, "halted waiting for input that will not come"),
            StopReason::InsnLimit => write!(f, "instruction limit reached"),
            StopReason::Reset => write!(f, "guest requested a reset"),
            StopReason::TripleFault { fault, .. } => write!(f, "triple fault ({fault})"),
        }
    }
}

/// Counts of the events that take the reference engine off its straight path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExitCounts {
    pub exceptions: u64,
    pub interrupts: u64,
    pub port_io: u64,
    pub halts: u64,
}

/// A complete machine: what a checkpoint must capture.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu: Cpu,
    pub platform: Platform,
    pub exits: ExitCounts,
    /// Virtual time of the next host-input poll.
    next_poll: u64,
    serial_buf: Vec<u8>,
    debugcon_buf: Vec<u8>,
}

/// The machine's full state as plain data, for comparing and hashing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MachineState {
    pub cpu: CpuState,
    pub icount: u64,
    pub devices: DevicesState,
}

impl Machine {
    /// A powered-on PC with `ram_bytes` of RAM, the CPU in its reset state.
    pub fn new(ram_bytes: usize, host: &mut dyn HostInput) -> Self {
        let rtc_start = host.rtc_start();
        Machine {
            cpu: Cpu::new(),
            platform: Platform::new(ram_bytes, rtc_start),
            exits: ExitCounts::default(),
            next_poll: 0,
            serial_buf: Vec::with_capacity(256),
            debugcon_buf: Vec::with_capacity(256),
        }
    }

    pub fn icount(&self) -> u64 {
        self.cpu.icount
    }

    /// Current virtual time in ticks.
    pub fn now(&self) -> u64 {
        self.platform.now(self.cpu.icount)
    }

    pub fn state(&self) -> MachineState {
        MachineState {
            cpu: self.cpu.state.clone(),
            icount: self.cpu.icount,
            devices: self.platform.save_devices(),
        }
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

    /// Takes a pending external interrupt if the CPU can take one now.
    fn maybe_interrupt(&mut self) -> Option<StepOutcome> {
        let st = &self.cpu.state;
        if st.eflags & flags::IF == 0 || st.interrupt_shadow || !self.platform.pic.interrupt_pending() {
            return None;
        }
        let vector = self.platform.pic.acknowledge();
        self.exits.interrupts += 1;
        match self
            .cpu
            .deliver_interrupt(&mut self.platform, vector, IntSource::External)
        {
            Ok(()) => None,
            Err(f) => Some(self.cpu.raise(&mut self.platform, f)),
        }
    }

    /// Runs the reference engine until something stops the machine or the
    /// instruction count reaches `max_icount`.
    pub fn run(&mut self, max_icount: u64, host: &mut dyn HostInput, console: &mut dyn Console) -> StopReason {
        let mut deadline = self.next_deadline();
        loop {
            if self.cpu.icount >= max_icount {
                self.flush_console(console);
                return StopReason::InsnLimit;
            }
            let now = self.now();
            if now >= deadline {
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
            match self.cpu.step(&mut self.platform) {
                StepOutcome::Retired | StepOutcome::Halted => {}
                StepOutcome::Exception(_) => self.exits.exceptions += 1,
                StepOutcome::TripleFault(fault) => {
                    self.flush_console(console);
                    return StopReason::TripleFault {
                        fault,
                        state: Box::new(self.cpu.state.clone()),
                    };
                }
            }
            let att = self.platform.attention;
            if att != Default::default() {
                self.exits.port_io += 1;
                if att.output {
                    self.flush_console(console);
                }
                if att.irq {
                    self.platform.route_all();
                    self.platform.attention.irq = false;
                    deadline = self.next_deadline();
                }
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
        }
    }

    /// The CPU is halted: let virtual time pass to the next event.
    fn idle(&mut self, host: &mut dyn HostInput, console: &mut dyn Console) -> Option<StopReason> {
        self.exits.halts += 1;
        self.flush_console(console);
        if self.cpu.state.eflags & flags::IF == 0 {
            return Some(StopReason::HaltedForever);
        }
        let now = self.now();
        match self.platform.next_timer_deadline() {
            Some(_) => {
                // Warp to the next timer or input poll, whichever comes first.
                let target = self.next_deadline().max(now);
                self.platform.idle_ticks += target - now;
                self.service(target, host);
            }
            None => {
                if !host.wait_for_input(now) {
                    return Some(StopReason::IdleForever);
                }
                self.next_poll = now;
                self.service(now, host);
            }
        }
        None
    }
}

/// What to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// A multiboot v1 kernel with its command line and modules.
    Multiboot {
        image: Vec<u8>,
        cmdline: String,
        modules: Vec<crate::boot::Module>,
    },
    /// A flat binary entered in real mode at `addr`.
    Flat { image: Vec<u8>, addr: u32 },
}

impl Machine {
    /// Builds a machine with `ram_bytes` of RAM and loads `kernel` into it,
    /// the CPU in the state the boot protocol defines.
    pub fn boot(ram_bytes: u64, kernel: &Kernel, host: &mut dyn HostInput) -> Result<Self, crate::VmError> {
        if !(crate::boot::MIN_RAM..=crate::boot::MAX_RAM).contains(&ram_bytes) {
            return Err(crate::VmError::BadMemorySize(format!("{ram_bytes} bytes")));
        }
        let mut m = Machine::new(ram_bytes as usize, host);
        let (state, _) = match kernel {
            Kernel::Multiboot {
                image,
                cmdline,
                modules,
            } => crate::boot::load_multiboot(&mut m.platform, image, cmdline, modules)?,
            Kernel::Flat { image, addr } => crate::boot::load_flat(&mut m.platform, image, *addr)?,
        };
        m.cpu.set_state(state);
        Ok(m)
    }
}
