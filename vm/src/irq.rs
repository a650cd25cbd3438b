//! Interrupt routing: between the devices' interrupt lines and the CPU,
//! as on a PC since the Pentium Pro (SDM Vol. 3A, 10.1; MP specification
//! 1.4, 3.6.2):
//!
//! ```text
//! ISA lines ─┬─► 8259 pair ──INTR──► LAPIC LINT0 (ExtINT: virtual wire) ─┐
//!            └─► I/O APIC (pin n = IRQ n, IRQ 0 on pin 2) ──messages──► LAPIC ─► CPU INTR
//!                LAPIC timer, error and IPIs ───────────────────────────► LAPIC
//! ```
//!
//! The CPU's INTR is the local APIC's request, or the 8259's INTR where
//! LINT0 passes it (or the APIC is off). The acknowledge cycle serves the
//! 8259's ExtINT first, as QEMU's PC does. A guest that
//! never programs the APICs sees the 8259s alone, as before: the I/O
//! APIC starts with every pin masked and LINT0 in ExtINT mode. Neither the
//! devices nor the CPU talk to a controller directly.

use crate::devices::ioapic::{self, IoApic};
use crate::devices::lapic::LocalApic;
use crate::devices::pic::PicPair;
use crate::devices::IrqLine;

#[derive(Clone, Debug)]
pub struct InterruptRouter {
    pub pic: PicPair,
    pub ioapic: IoApic,
    pub lapic: LocalApic,
    /// The CPU's INTR input as of the last `update`: the machine loop reads
    /// this instead of asking the controllers before every instruction.
    intr: bool,
    /// Whether the local APIC drove it (else the 8259 through LINT0): the
    /// acknowledge cycle goes to the one that asked, even if its request
    /// has lost its priority since (the local APIC then answers with its
    /// spurious vector).
    from_lapic: bool,
}

impl InterruptRouter {
    /// Where INTR and the NMI request lie in the router, for compiled code
    /// that looks whether an interrupt waits (as `intr` and `nmi` do).
    pub const INTR: usize = std::mem::offset_of!(InterruptRouter, intr);
    pub const NMI: usize = std::mem::offset_of!(InterruptRouter, lapic) + LocalApic::NMI_PENDING;

    pub fn new() -> Self {
        InterruptRouter {
            pic: PicPair::new(),
            ioapic: IoApic::new(),
            lapic: LocalApic::new(),
            intr: false,
            from_lapic: false,
        }
    }

    /// A device line at a level.
    #[inline]
    pub fn set_line(&mut self, line: IrqLine) {
        self.pic.set_irq(line.irq, line.level);
        self.ioapic.set_pin(ioapic::pin_of_isa_irq(line.irq), line.level);
    }

    /// A rising edge on `irq` (low, then high): a timer's tick.
    pub fn pulse(&mut self, irq: u8) {
        for level in [false, true] {
            self.set_line(IrqLine { irq, level });
        }
    }

    /// Carries the I/O APIC's messages to the local APIC and its EOIs back,
    /// and brings INTR up to date with the controllers.
    #[inline]
    pub fn update(&mut self) {
        if let Some(vectors) = self.lapic.take_eoi_broadcasts() {
            self.ioapic.end_of_interrupt(&vectors);
        }
        for m in self.ioapic.take_messages() {
            // Fixed and lowest-priority messages for this CPU; nothing
            // else has a receiver on a one-CPU machine.
            if !self.lapic.is_destination(m.dest, m.logical) {
                continue;
            }
            match m.mode {
                0 | 1 => self.lapic.accept(m.vector, m.level),
                4 => self.lapic.raise_nmi(),
                _ => {}
            }
        }
        // The 8259's ExtINT goes first, ignoring priorities, as QEMU's
        // local APIC lets it.
        let pic = self.lapic.passes_pic() && self.pic.interrupt_pending();
        self.from_lapic = !pic && self.lapic.interrupt_pending();
        self.intr = pic || self.from_lapic;
    }

    /// Whether an NMI waits for the CPU (it ignores IF).
    #[inline]
    pub fn nmi(&self) -> bool {
        self.lapic.nmi_pending()
    }

    /// Whether the CPU is asked to take an interrupt (as of `update`).
    #[inline]
    pub fn intr(&self) -> bool {
        self.intr
    }

    /// The CPU's interrupt-acknowledge cycle: the vector, INTR updated.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = if self.from_lapic || !self.lapic.passes_pic() {
            self.lapic.acknowledge()
        } else {
            self.pic.acknowledge()
        };
        self.update();
        vector
    }
}

impl Default for InterruptRouter {
    fn default() -> Self {
        Self::new()
    }
}
