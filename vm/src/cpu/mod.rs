//! The IA-32 processor: state, address translation, segmentation, interrupts.
//!
//! Instruction semantics live in `crate::exec`, one file per family; this module
//! holds what every family shares.

pub mod interrupt;
pub mod mmu;
pub mod seg;
pub mod state;
pub mod task;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

/// The monitor's own GDT and IDT, which the processor's GDTR and IDTR point
/// at while guest ring-0 code runs compressed into ring 1. Like VirtualBox's,
/// they sit in a hypervisor area at the top of the linear address space; the
/// guest's tables stay where it put them and descriptor loads read those.
/// SGDT and SIDT are not privileged, so run raw they reveal these bases.
pub const MONITOR_GDT_BASE: u32 = 0xFFC0_0000;
pub const MONITOR_IDT_BASE: u32 = 0xFFC0_1000;

/// How the executing state relates to the guest's true state: the raw
/// engine's ring compression (see docs/raw-engine.md). Outside the raw engine
/// the view is always `True`, and `CpuState` is the guest's state.
/// `repr(C, u32)`: a tag word, then the variant's fields, so compiled code
/// finds `virtual_flags` at [`RingView::VIRTUAL_FLAGS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, u32)]
pub enum RingView {
    #[default]
    True,
    /// Guest ring 3 run raw: the state is the guest's, but exceptions and
    /// software interrupts go to the monitor instead of the guest IDT.
    Ring3,
    /// Guest ring 0 run as ring 1: CS and SS carry RPL 1, EFLAGS.IF is 1 and
    /// IOPL 0; the guest's own IF and IOPL are kept in `virtual_flags`.
    Compressed { virtual_flags: u32 },
}

impl RingView {
    /// The offset of `Compressed`'s `virtual_flags` in a `RingView`: the
    /// fields of a `repr(C, u32)` enum's variant follow its 4-byte tag.
    pub const VIRTUAL_FLAGS: usize = 4;
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
    /// Ring compression in effect (the raw engine sets and clears it around
    /// each block it runs).
    pub ring_view: RingView,
    /// Linear address of the instruction whose fault was delivered last.
    pub last_fault_pc: u32,
    /// A task switch reached a TSS with its debug trap flag set: #DB is
    /// due once the switch is complete (taken by whoever made the switch).
    pub(crate) task_trap: bool,
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
            ring_view: RingView::True,
            last_fault_pc: 0,
            task_trap: false,
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

/// The CPU's section of saved state: its architectural registers; since
/// version 2 the x87's too; since version 4 without IA32_APIC_BASE, which
/// the local APIC's section holds, and with NMI blocking.
impl crate::snapshot::Snapshot for Cpu {
    const SECTION: &'static str = "cpu";
    const VERSION: u16 = 4;
    type State = CpuState;

    fn save(&self) -> CpuState {
        self.state.clone()
    }

    fn restore(&mut self, state: &CpuState) {
        self.set_state(state.clone());
    }
}

impl Cpu {
    /// Switches the executing state to `view` (from the true view). Guest
    /// ring 0 becomes ring 1 with IF forced on and IOPL 0. A pure function of
    /// the state, undone exactly by [`Cpu::leave_view`].
    #[inline]
    pub fn enter_view(&mut self, view: RingView) {
        debug_assert_eq!(self.ring_view, RingView::True);
        let st = &mut self.state;
        self.ring_view = match view {
            RingView::Compressed { .. } => {
                let virtual_flags = st.eflags & (state::flags::IF | state::flags::IOPL);
                st.eflags = (st.eflags & !state::flags::IOPL) | state::flags::IF;
                st.segs[SegReg::Cs as usize].selector |= 1;
                st.segs[SegReg::Ss as usize].selector |= 1;
                RingView::Compressed { virtual_flags }
            }
            other => other,
        };
    }

    /// Returns to the guest's true state.
    #[inline]
    pub fn leave_view(&mut self) {
        if let RingView::Compressed { virtual_flags } = self.ring_view {
            let st = &mut self.state;
            st.eflags = (st.eflags & !(state::flags::IF | state::flags::IOPL)) | virtual_flags;
            // Ring 1 is the compressed ring 0; a raw return to ring 3 keeps RPL 3.
            for s in [SegReg::Cs, SegReg::Ss] {
                let seg = &mut st.segs[s as usize];
                if seg.selector & 3 == 1 {
                    seg.selector &= !3;
                }
            }
        }
        self.ring_view = RingView::True;
    }

    /// The selector the guest sees in `seg`, whatever the view: under ring
    /// compression CS and SS carry RPL 1 where the guest's have 0 (what
    /// [`Cpu::leave_view`] undoes).
    #[inline]
    pub fn guest_selector(&self, seg: SegReg) -> u16 {
        let selector = self.state.segs[seg as usize].selector;
        match self.ring_view {
            RingView::Compressed { .. } if matches!(seg, SegReg::Cs | SegReg::Ss) && selector & 3 == 1 => selector & !3,
            _ => selector,
        }
    }

    /// Linear address of the instruction that ran last (or faulted): what
    /// its events name.
    #[inline]
    pub fn start_pc(&self) -> u32 {
        self.state.segs[SegReg::Cs as usize].base.wrapping_add(self.start_eip)
    }

    /// The guest's IF, whatever the view.
    #[inline]
    pub fn virtual_if(&self) -> bool {
        match self.ring_view {
            RingView::Compressed { virtual_flags } => virtual_flags & state::flags::IF != 0,
            _ => self.state.eflags & state::flags::IF != 0,
        }
    }
}
