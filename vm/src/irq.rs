//! Interrupt routing: between the devices' interrupt lines and the CPU.
//! Devices drive ISA lines; the router decides what the CPU is asked to
//! take (INTR) and answers its acknowledge cycle with a vector. Today the
//! 8259 pair does all of that, as on a PC/AT; the I/O APIC and the local
//! APIC plug in here (the PIC then in "PIC mode" or virtual-wire), so that
//! neither the devices nor the CPU ever talk to a controller directly.

use crate::devices::pic::PicPair;
use crate::devices::IrqLine;

#[derive(Clone, Debug)]
pub struct InterruptRouter {
    pub pic: PicPair,
    /// The CPU's INTR input as of the last `update`: the machine loop reads
    /// this instead of asking the controllers before every instruction.
    intr: bool,
}

impl InterruptRouter {
    pub fn new() -> Self {
        InterruptRouter {
            pic: PicPair::new(),
            intr: false,
        }
    }

    /// A device line at a level.
    #[inline]
    pub fn set_line(&mut self, line: IrqLine) {
        self.pic.set_irq(line.irq, line.level);
    }

    /// A rising edge on `irq` (low, then high): a timer's tick.
    pub fn pulse(&mut self, irq: u8) {
        self.pic.set_irq(irq, false);
        self.pic.set_irq(irq, true);
    }

    /// Brings INTR up to date with the controllers.
    #[inline]
    pub fn update(&mut self) {
        self.intr = self.pic.interrupt_pending();
    }

    /// Whether the CPU is asked to take an interrupt (as of `update`).
    #[inline]
    pub fn intr(&self) -> bool {
        self.intr
    }

    /// The CPU's interrupt-acknowledge cycle: the vector, INTR updated.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = self.pic.acknowledge();
        self.update();
        vector
    }
}

impl Default for InterruptRouter {
    fn default() -> Self {
        Self::new()
    }
}
