//! The local APIC, xAPIC mode (SDM Vol. 3A, chapter 10 "Advanced
//! Programmable Interrupt Controller (APIC)"): its 4 KiB register page at
//! the address IA32_APIC_BASE names (10.4.1, 10.4.4), task and processor
//! priority (10.8.3), IRR/ISR/TMR and EOI (10.8.4, 10.8.5), the spurious
//! vector and software enable (10.9, 10.4.7), the LVT (10.5.1), the error
//! status register (10.5.3), the timer in one-shot, periodic and
//! TSC-deadline modes (10.5.4) and the interrupt command register with its
//! shorthands (10.6.1).
//!
//! One CPU, so an IPI reaches this APIC or nobody: the delivery-status bit
//! never stays busy. The timer counts the APIC bus clock, which is the
//! virtual clock ([`crate::time::NOMINAL_HZ`]) divided as the divide
//! configuration register says, so it fires at an exact instruction count
//! like the PIT.
//!
//! What the platform does with it: the APIC's requests and the 8259's INTR
//! (through LINT0 in ExtINT mode, the "virtual wire") become the CPU's INTR
//! in [`crate::irq::InterruptRouter`]; the I/O APIC's messages arrive
//! through [`LocalApic::accept`]; EOIs of level-triggered vectors go back
//! to it through [`LocalApic::take_eoi_broadcasts`].

use crate::snapshot::Snapshot;

/// IA32_APIC_BASE after reset: 0xFEE00000, enabled, bootstrap processor.
pub const DEFAULT_BASE: u64 = 0xFEE0_0000 | BASE_ENABLE | BASE_BSP;
pub const BASE_BSP: u64 = 1 << 8;
pub const BASE_ENABLE: u64 = 1 << 11;
/// Physical-address bits the base may use: 32, as the CPU has no PAE.
const BASE_ADDRESS_MASK: u64 = 0xFFFF_F000;
pub const WINDOW_BYTES: u32 = 0x1000;

/// The one CPU's APIC ID; the ID register is read-only on this model.
const APIC_ID: u8 = 0;
/// Version 0x14 (an integrated xAPIC), six LVT entries: QEMU's.
const VERSION: u32 = 0x0005_0014;

/// LVT entries, in register order (timer, thermal, performance, LINT0,
/// LINT1, error).
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_LINT1: usize = 4;
const LVT_ERROR: usize = 5;
const LVT_MASKED: u32 = 1 << 16;
/// Delivery modes (LVT and ICR bits 8-10).
const MODE_FIXED: u32 = 0;
const MODE_LOWEST: u32 = 1;
const MODE_NMI: u32 = 4;
const MODE_EXTINT: u32 = 7;

const SVR_ENABLE: u32 = 1 << 8;

/// Error status bits (10.5.3).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// Timer modes, LVT timer bits 17-18.
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;

/// The register set, in the state a BIOS leaves it (SeaBIOS on QEMU's PC):
/// software-enabled, LINT0 in ExtINT mode so the 8259's INTR reaches the
/// CPU as before (virtual wire), LINT1 delivering NMI.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LocalApic {
    /// IA32_APIC_BASE.
    base: u64,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: [u32; 8],
    isr: [u32; 8],
    tmr: [u32; 8],
    /// ESR as last latched, and the errors seen since.
    esr: u32,
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; 6],
    divide_config: u32,
    initial_count: u32,
    /// The count period in progress: the tick it started at and the count
    /// it started from (the initial count, or what was left when the
    /// divider changed).
    period_start: u64,
    period_count: u32,
    /// IA32_TSC_DEADLINE as written (its tick is `next_fire`).
    tsc_deadline: u64,
    /// When the timer next fires, if it is counting.
    next_fire: Option<u64>,
    /// Level-triggered vectors whose EOI the I/O APIC has yet to hear.
    eoi_broadcasts: [u32; 8],
    /// An NMI for the CPU (an NMI IPI or message), not yet taken.
    nmi_pending: bool,
}

/// Saved state of a [`LocalApic`]: every register and the timer's period.
pub type LocalApicState = LocalApic;

impl Default for LocalApic {
    fn default() -> Self {
        Self::new()
    }
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| bits[i] != 0)
        .map(|i| (i * 32 + 31 - bits[i].leading_zeros() as usize) as u8)
}

fn set(bits: &mut [u32; 8], vector: u8, on: bool) {
    let (word, bit) = (usize::from(vector / 32), 1u32 << (vector % 32));
    if on {
        bits[word] |= bit;
    } else {
        bits[word] &= !bit;
    }
}

fn test(bits: &[u32; 8], vector: u8) -> bool {
    bits[usize::from(vector / 32)] & (1 << (vector % 32)) != 0
}

impl LocalApic {
    /// Where the NMI request lies, for compiled code that looks whether an
    /// interrupt waits.
    pub const NMI_PENDING: usize = std::mem::offset_of!(LocalApic, nmi_pending);

    pub fn new() -> Self {
        LocalApic {
            base: DEFAULT_BASE,
            tpr: 0,
            ldr: 0,
            dfr: 0xFFFF_FFFF,
            svr: 0xFF | SVR_ENABLE,
            irr: [0; 8],
            isr: [0; 8],
            tmr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [
                LVT_MASKED,
                LVT_MASKED,
                LVT_MASKED,
                (1 << 15) | (MODE_EXTINT << 8),
                (1 << 15) | (MODE_NMI << 8),
                LVT_MASKED,
            ],
            divide_config: 0,
            initial_count: 0,
            period_start: 0,
            period_count: 0,
            tsc_deadline: 0,
            next_fire: None,
            eoi_broadcasts: [0; 8],
            nmi_pending: false,
        }
    }

    /// The state after RESET (SDM Vol. 3A, 10.4.7.1): software-disabled,
    /// every LVT masked but LINT0, which passes the 8259 as QEMU's does
    /// after reset (virtual wire without a BIOS to program it).
    pub fn reset(&mut self) {
        *self = LocalApic {
            svr: 0xFF,
            lvt: [
                LVT_MASKED,
                LVT_MASKED,
                LVT_MASKED,
                MODE_EXTINT << 8,
                LVT_MASKED,
                LVT_MASKED,
            ],
            ..LocalApic::new()
        };
    }

    /// Whether IA32_APIC_BASE has it on (hardware-enabled).
    pub fn enabled(&self) -> bool {
        self.base & BASE_ENABLE != 0
    }

    fn software_enabled(&self) -> bool {
        self.enabled() && self.svr & SVR_ENABLE != 0
    }

    /// Its register window, while it is hardware-enabled.
    pub fn window(&self) -> Option<u32> {
        self.enabled().then_some((self.base & 0xFFFF_F000) as u32)
    }

    pub fn base_msr(&self) -> u64 {
        self.base
    }

    /// A write of IA32_APIC_BASE; false where it sets reserved bits (#GP).
    /// Turning the APIC off resets its registers, as the SDM describes
    /// (10.4.3): it comes back software-disabled, every LVT masked.
    pub fn write_base_msr(&mut self, value: u64) -> bool {
        if value & !(BASE_ADDRESS_MASK | BASE_ENABLE | BASE_BSP) != 0 {
            return false;
        }
        let was = self.enabled();
        self.base = value;
        if was && !self.enabled() {
            let base = self.base;
            *self = LocalApic {
                base,
                svr: 0xFF,
                lvt: [LVT_MASKED; 6],
                ..LocalApic::new()
            };
        }
        true
    }

    /// IA32_TSC_DEADLINE: zero outside TSC-deadline mode (10.5.4.1).
    pub fn tsc_deadline_msr(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// A write of IA32_TSC_DEADLINE; `tick` is when the TSC reaches it.
    /// Zero disarms; a time already past fires at the next boundary.
    /// Outside TSC-deadline mode the write is ignored (10.5.4.1).
    pub fn write_tsc_deadline_msr(&mut self, value: u64, tick: u64) {
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.tsc_deadline = value;
        self.next_fire = (value != 0).then_some(tick);
    }

    /// The processor priority (10.8.3.1).
    fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// Whether it asks the CPU for an interrupt: a requested vector in a
    /// priority class above the processor priority.
    pub fn interrupt_pending(&self) -> bool {
        self.software_enabled() && highest(&self.irr).is_some_and(|v| v >> 4 > self.ppr() >> 4)
    }

    /// Whether the 8259's INTR reaches the CPU: straight when the APIC is
    /// off, otherwise through LINT0 unmasked in ExtINT mode.
    pub fn passes_pic(&self) -> bool {
        if !self.enabled() {
            return true;
        }
        let lint0 = self.lvt[LVT_LINT0];
        lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == MODE_EXTINT
    }

    /// The interrupt-acknowledge cycle: the highest requested vector moves
    /// to in-service. The spurious vector if nothing is deliverable any
    /// more (10.9).
    pub fn acknowledge(&mut self) -> u8 {
        match highest(&self.irr) {
            Some(v) if self.software_enabled() && v >> 4 > self.ppr() >> 4 => {
                set(&mut self.irr, v, false);
                set(&mut self.isr, v, true);
                v
            }
            _ => self.svr as u8,
        }
    }

    /// An interrupt message for this APIC (from its own LVT, an IPI or the
    /// I/O APIC): fixed delivery of `vector`, edge or level triggered.
    /// Vectors 0-15 are illegal: an error, and nothing is requested. A
    /// software-disabled APIC holds what it accepts until it is enabled
    /// again (10.4.7.2; QEMU's does the same), so a level-triggered pin's
    /// remote IRR is never left waiting for an EOI that cannot come.
    pub fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        set(&mut self.irr, vector, true);
        set(&mut self.tmr, vector, level);
    }

    /// Whether `dest` in `logical` or physical destination mode names this
    /// APIC (10.6.2).
    pub fn is_destination(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xFF || dest == APIC_ID;
        }
        let mine = (self.ldr >> 24) as u8;
        if dest == 0xFF {
            return true;
        }
        if self.dfr >> 28 == 0xF {
            mine & dest != 0
        } else {
            // Cluster model: high nibble the cluster, low nibble a bitmap.
            dest >> 4 == mine >> 4 && mine & dest & 0xF != 0
        }
    }

    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 {
            // An illegal error vector is one more error, not another
            // interrupt (which would be an error again, without end).
            if (lvt as u8) < 16 {
                self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
            } else {
                self.accept(lvt as u8, false);
            }
        }
    }

    /// Errors seen and not yet latched into the ESR.
    pub fn pending_errors(&self) -> u32 {
        self.esr_pending
    }

    /// EOIs of level-triggered vectors since the last call, for the I/O
    /// APIC's remote-IRR bits.
    pub fn take_eoi_broadcasts(&mut self) -> Option<[u32; 8]> {
        (self.eoi_broadcasts != [0; 8]).then(|| std::mem::take(&mut self.eoi_broadcasts))
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER] >> 17) & 3
    }

    fn divisor(&self) -> u64 {
        let v = ((self.divide_config & 8) >> 1) | (self.divide_config & 3);
        1 << ((v + 1) & 7)
    }

    /// The current-count register at `now`.
    fn current_count(&self, now: u64) -> u32 {
        if self.timer_mode() == TIMER_TSC_DEADLINE || self.period_count == 0 {
            return 0;
        }
        let ticks = (now.saturating_sub(self.period_start)) / self.divisor();
        let count = u64::from(self.period_count);
        if ticks < count {
            return (count - ticks) as u32;
        }
        if self.timer_mode() != TIMER_PERIODIC || self.initial_count == 0 {
            return 0;
        }
        let initial = u64::from(self.initial_count);
        (initial - (ticks - count) % initial) as u32
    }

    /// Starts a period at `now` counting down from `count`.
    fn start_period(&mut self, count: u32, now: u64) {
        self.period_start = now;
        self.period_count = count;
        self.next_fire = (count != 0).then(|| now + u64::from(count) * self.divisor());
    }

    /// The next tick its timer fires.
    pub fn next_deadline(&self) -> Option<u64> {
        self.next_fire
    }

    /// Fires the timer if its time has come, and arms the next period;
    /// whether it fired.
    pub fn advance(&mut self, now: u64) -> bool {
        let Some(fire) = self.next_fire.filter(|&t| now >= t) else {
            return false;
        };
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept(lvt as u8, false);
        }
        self.next_fire = match self.timer_mode() {
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                None
            }
            TIMER_PERIODIC if self.initial_count != 0 => {
                // Periods missed in one step coalesce, as one IRR bit does.
                let period = u64::from(self.initial_count) * self.divisor();
                let next = fire + ((now - fire) / period + 1) * period;
                // The running period is now one of whole initial counts.
                self.period_start = next - period;
                self.period_count = self.initial_count;
                Some(next)
            }
            _ => None,
        };
        true
    }

    /// A read of the register page at `offset`: the naturally aligned
    /// dword at the start of each 16-byte slot holds the register; the
    /// rest reads as zero.
    pub fn mmio_read(&mut self, offset: u32, size: u8, now: u64) -> u32 {
        let value = self.read_register(offset & 0xFF0, now);
        let shift = 8 * (offset & 3);
        if offset & 0xC != 0 {
            return 0;
        }
        let v = value >> shift;
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    fn read_register(&mut self, reg: u32, now: u64) -> u32 {
        match reg {
            0x20 => u32::from(APIC_ID) << 24,
            0x30 => VERSION,
            0x80 => u32::from(self.tpr),
            // Arbitration priority: only a P6-family APIC bus has it.
            0x90 => 0,
            0xA0 => u32::from(self.ppr()),
            0xB0 => 0,
            0xD0 => self.ldr,
            0xE0 => self.dfr,
            0xF0 => self.svr,
            0x100..=0x170 => self.isr[((reg - 0x100) >> 4) as usize],
            0x180..=0x1F0 => self.tmr[((reg - 0x180) >> 4) as usize],
            0x200..=0x270 => self.irr[((reg - 0x200) >> 4) as usize],
            0x280 => self.esr,
            0x300 => self.icr_low,
            0x310 => self.icr_high,
            0x320..=0x370 => self.lvt[((reg - 0x320) >> 4) as usize],
            0x380 => self.initial_count,
            0x390 => self.current_count(now),
            0x3E0 => self.divide_config,
            _ => {
                self.error(ESR_ILLEGAL_REGISTER);
                0
            }
        }
    }

    /// A write of the register page. Only whole aligned dwords reach a
    /// register (the SDM makes other accesses undefined; they are dropped).
    pub fn mmio_write(&mut self, offset: u32, size: u8, value: u32, now: u64) {
        if size != 4 || offset & 0xF != 0 {
            return;
        }
        match offset {
            0x80 => self.tpr = value as u8,
            0xB0 => self.end_of_interrupt(),
            0xD0 => self.ldr = value & 0xFF00_0000,
            0xE0 => self.dfr = value | 0x0FFF_FFFF,
            0xF0 => {
                self.svr = value & 0x3FF;
                if value & SVR_ENABLE == 0 {
                    for lvt in &mut self.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            0x280 => {
                self.esr = std::mem::take(&mut self.esr_pending);
            }
            0x300 => {
                // The delivery-status bit (12) is never busy: one CPU.
                self.icr_low = value & 0x000C_CFFF;
                self.send_ipi();
            }
            0x310 => self.icr_high = value & 0xFF00_0000,
            0x320..=0x370 => self.write_lvt(((offset - 0x320) >> 4) as usize, value),
            0x380 => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.initial_count = value;
                    self.start_period(value, now);
                }
            }
            0x3E0 => {
                let left = self.current_count(now);
                self.divide_config = value & 0xB;
                if self.timer_mode() != TIMER_TSC_DEADLINE && left != 0 {
                    self.start_period(left, now);
                }
            }
            // ID is read-only on this model, as the version, PPR, ISR,
            // TMR, IRR, current count and the reserved slots are.
            0x20 | 0x30 | 0x90 | 0xA0 | 0x100..=0x270 | 0x390 => {}
            _ => self.error(ESR_ILLEGAL_REGISTER),
        }
    }

    fn write_lvt(&mut self, index: usize, value: u32) {
        let writable = match index {
            LVT_TIMER => 0x0006_00FF | LVT_MASKED,
            LVT_LINT0 | LVT_LINT1 => 0xA7FF | LVT_MASKED,
            LVT_ERROR => 0xFF | LVT_MASKED,
            _ => 0x07FF | LVT_MASKED,
        };
        // Delivery status (12) and remote IRR (14) read as idle.
        let mut value = value & writable;
        if self.svr & SVR_ENABLE == 0 {
            value |= LVT_MASKED;
        }
        let old_mode = self.timer_mode();
        self.lvt[index] = value;
        let new_mode = self.timer_mode();
        if index == LVT_TIMER
            && new_mode != old_mode
            && (old_mode == TIMER_TSC_DEADLINE || new_mode == TIMER_TSC_DEADLINE)
        {
            // Into or out of TSC-deadline mode disarms the timer (10.5.4.1);
            // between one-shot and periodic it counts on, as QEMU's and
            // KVM's do.
            self.initial_count = 0;
            self.period_count = 0;
            self.tsc_deadline = 0;
            self.next_fire = None;
        }
    }

    fn end_of_interrupt(&mut self) {
        if let Some(v) = highest(&self.isr) {
            set(&mut self.isr, v, false);
            if test(&self.tmr, v) {
                set(&mut self.eoi_broadcasts, v, true);
            }
        }
    }

    /// Whether an NMI waits for the CPU.
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// An NMI for this CPU (an IPI or an I/O APIC message in NMI mode):
    /// delivered whether or not the APIC is software-enabled (10.4.7.2).
    pub fn raise_nmi(&mut self) {
        self.nmi_pending = true;
    }

    /// The CPU takes the pending NMI.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi_pending)
    }

    /// Sends the interrupt the ICR describes. Fixed, lowest-priority and
    /// NMI deliveries to this CPU have an effect: there is no other CPU to
    /// receive INIT or STARTUP, and no SMM for SMI.
    fn send_ipi(&mut self) {
        let low = self.icr_low;
        let vector = low as u8;
        let mode = (low >> 8) & 7;
        let to_self = match (low >> 18) & 3 {
            1 | 2 => true,
            3 => false,
            _ => self.is_destination((self.icr_high >> 24) as u8, low & (1 << 11) != 0),
        };
        if matches!(mode, MODE_FIXED | MODE_LOWEST) {
            if vector < 16 {
                self.error(ESR_SEND_ILLEGAL_VECTOR);
            }
            if to_self {
                self.accept(vector, false);
            }
        } else if mode == MODE_NMI && to_self {
            self.raise_nmi();
        }
    }
}

impl Snapshot for LocalApic {
    const SECTION: &'static str = "lapic";
    const VERSION: u16 = 1;
    type State = LocalApicState;

    fn save(&self) -> LocalApicState {
        self.clone()
    }

    fn restore(&mut self, s: &LocalApicState) {
        *self = s.clone();
    }
}
