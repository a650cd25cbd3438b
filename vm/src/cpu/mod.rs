//! The IA-32 processor: state, address translation, segmentation, interrupts.
//!
//! Instruction semantics live in `crate::exec`, one file per family; this module
//! holds what every family shares.

pub mod interrupt;
pub mod mmu;
pub mod seg;
pub mod state;

pub use state::{CpuState, SegReg, Segment, TableReg};

use mmu::Tlb;

/// Exception vectors (SDM Vol. 3A, table 6-1).
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;

    pub fn name(v: u8) -> &'static str {
        match v {
            DE => "#DE divide error",
            DB => "#DB debug",
            NMI => "NMI",
            BP => "#BP breakpoint",
            OF => "#OF overflow",
            BR => "#BR bound range",
            UD => "#UD invalid opcode",
            NM => "#NM device not available",
            DF => "#DF double fault",
            TS => "#TS invalid TSS",
            NP => "#NP segment not present",
            SS => "#SS stack fault",
            GP => "#GP general protection",
            PF => "#PF page fault",
            MF => "#MF x87 error",
            AC => "#AC alignment check",
            _ => "interrupt",
        }
    }
}

/// A processor exception raised by an instruction (SDM Vol. 3A, 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    pub vector: u8,
    pub error: Option<u32>,
}

impl Fault {
    pub const fn new(vector: u8) -> Self {
        Fault { vector, error: None }
    }
    pub const fn with_error(vector: u8, error: u32) -> Self {
        Fault {
            vector,
            error: Some(error),
        }
    }
    pub const fn gp(error: u32) -> Self {
        Fault::with_error(vector::GP, error)
    }
    pub const fn ud() -> Self {
        Fault::new(vector::UD)
    }
    /// Contributory exceptions for the double-fault rules (SDM Vol. 3A, table 6-4).
    pub fn contributory(&self) -> bool {
        matches!(
            self.vector,
            vector::DE | vector::TS | vector::NP | vector::SS | vector::GP
        )
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (vector {})", vector::name(self.vector), self.vector)?;
        if let Some(e) = self.error {
            write!(f, " error code {e:#x}")?;
        }
        Ok(())
    }
}

pub type Result<T> = std::result::Result<T, Fault>;

/// What ended a call to [`Cpu::step`](crate::exec) other than a retired instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// One instruction (or one iteration of a REP string instruction) retired.
    Retired,
    /// An exception was delivered to the guest instead.
    Exception(Fault),
    /// The processor is halted waiting for an interrupt.
    Halted,
    /// A fault occurred while delivering a double fault: the processor shuts down
    /// (SDM Vol. 3A, 6.15, interrupt 8).
    TripleFault(Fault),
}

/// A processor: architectural state plus the structures that only cache it.
#[derive(Clone, Debug)]
pub struct Cpu {
    pub state: CpuState,
    pub tlb: Tlb,
    /// Instructions retired since reset.
    pub icount: u64,
    /// Virtual ticks spent halted. Virtual time is `icount + idle_ticks`:
    /// one tick per retired instruction, and while the CPU waits in HLT, time
    /// jumps to the next timer deadline.
    pub idle_ticks: u64,
    /// EIP of the instruction being executed (for fault restarts).
    pub(crate) start_eip: u32,
    /// General registers at instruction start, restored when it faults.
    pub(crate) start_regs: [u32; 8],
    pub(crate) start_eflags: u32,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpu {
    pub fn new() -> Self {
        Cpu {
            state: CpuState::reset(),
            tlb: Tlb::new(),
            icount: 0,
            idle_ticks: 0,
            start_eip: 0,
            start_regs: [0; 8],
            start_eflags: 0,
        }
    }

    pub fn with_state(state: CpuState) -> Self {
        let mut cpu = Cpu::new();
        cpu.state = state;
        cpu
    }

    /// Virtual time in ticks (see [`crate::time`]): what every device, the
    /// TSC and the RTC read.
    #[inline]
    pub fn now(&self) -> u64 {
        self.icount + self.idle_ticks
    }

    /// Replaces the architectural state, dropping every cached translation.
    pub fn set_state(&mut self, state: CpuState) {
        self.state = state;
        self.tlb.flush_all();
    }
}
