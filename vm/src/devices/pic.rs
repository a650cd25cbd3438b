//! The PC's pair of programmable interrupt controllers, after the Intel 8259A
//! datasheet (Intel order no. 231468): a master at 0x20/0x21 and a slave at
//! 0xA0/0xA1 whose INT output drives the master's IR2.
//!
//! Modelled: the ICW1-ICW4 initialisation sequence (ICW4 optional, single or
//! cascade, auto-EOI, special fully nested mode), OCW1 (IMR), OCW2 (all EOI and
//! rotation commands), OCW3 (IRR/ISR read select, poll, special mask mode),
//! edge- and level-triggered inputs and the INTA cycle. Not modelled: the
//! buffered-mode and MCS-80 bits (stored, no effect), and ELCR.

use crate::snapshot::Snapshot;
/// One 8259A. The fields are its whole register state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Pic8259 {
    /// Interrupt request register: latched requests.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// Current level of each IR input, for edge detection.
    pub pins: u8,
    /// Vector base from ICW2 (low three bits clear).
    pub vector_base: u8,
    /// ICW3 as written (cascade bitmap on a master, identity on a slave).
    pub icw3: u8,
    /// ICW4 as written (0 when ICW1 said no ICW4 follows).
    pub icw4: u8,
    /// Which initialisation word the next odd-port write is: 0 = none
    /// (it is OCW1), 2, 3 or 4.
    pub init_step: u8,
    /// ICW1 bit 0: an ICW4 follows.
    pub icw4_needed: bool,
    /// ICW1 bit 1: single 8259, no ICW3.
    pub single: bool,
    /// ICW1 bit 3: level-triggered inputs.
    pub level_triggered: bool,
    /// Priority rotation: the IR with highest priority.
    pub highest_priority: u8,
    /// OCW2 "rotate in automatic EOI mode" flag.
    pub rotate_on_auto_eoi: bool,
    /// OCW3 special mask mode.
    pub special_mask: bool,
    /// OCW3 read-register select: true reads ISR, false IRR.
    pub read_isr: bool,
    /// OCW3 poll command: the next read of this chip is a poll.
    pub poll: bool,
}

impl Pic8259 {
    fn auto_eoi(&self) -> bool {
        self.icw4 & 0x02 != 0
    }

    fn special_fully_nested(&self) -> bool {
        self.icw4 & 0x10 != 0
    }

    /// Priority rank of IR `irq` (0 = highest) under the current rotation.
    fn rank(&self, irq: u8) -> u8 {
        irq.wrapping_sub(self.highest_priority) & 7
    }

    /// The highest-priority IR set in `bits`, if any.
    fn highest_in(&self, bits: u8) -> Option<u8> {
        (0..8u8)
            .map(|r| (r + self.highest_priority) & 7)
            .find(|&irq| bits & (1 << irq) != 0)
    }

    /// The IR this chip would present on INTA now, if any. `cascade_bits` are
    /// the inputs wired to slaves (only relevant for special fully nested
    /// mode, where an in-service slave does not block that slave's IR).
    fn pending(&self, cascade_bits: u8) -> Option<u8> {
        let req = self.highest_in(self.irr & !self.imr)?;
        let mut blocking = self.isr;
        if self.special_mask {
            // Special mask mode: masked in-service levels no longer inhibit
            // lower priorities.
            blocking &= !self.imr;
        }
        if self.special_fully_nested() {
            // A further request from an in-service slave may interrupt it.
            blocking &= !(cascade_bits & (1 << req));
        }
        match self.highest_in(blocking) {
            Some(busy) if self.rank(busy) <= self.rank(req) => None,
            _ => Some(req),
        }
    }

    /// Drive input `irq` to `level`.
    fn set_pin(&mut self, irq: u8, level: bool) {
        let bit = 1u8 << (irq & 7);
        if self.level_triggered {
            // Level mode: the request follows the input.
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.pins & bit == 0 {
            self.irr |= bit;
        }
        // Edge mode keeps a latched request when the input drops before INTA.
        // The datasheet asks the input to stay high until then, but PC timer
        // lines (PIT mode 3) drop while interrupts are off, and guests written
        // for QEMU, whose PIC keeps the request, expect the tick to survive.
        if level {
            self.pins |= bit;
        } else {
            self.pins &= !bit;
        }
    }

    /// INTA for IR `irq` on this chip: IRR -> ISR (unless auto-EOI).
    fn ack(&mut self, irq: u8) {
        let bit = 1u8 << irq;
        if !self.level_triggered || self.pins & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi() {
            if self.rotate_on_auto_eoi {
                self.highest_priority = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn eoi(&mut self, irq: u8, rotate: bool) {
        self.isr &= !(1 << irq);
        if rotate {
            self.highest_priority = (irq + 1) & 7;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: restart initialisation. The datasheet: IMR cleared, IR7
            // lowest priority, special mask mode off, IRR selected for read,
            // edge-sense latches reset (an input must go low then high again).
            self.icw4_needed = value & 0x01 != 0;
            self.single = value & 0x02 != 0;
            self.level_triggered = value & 0x08 != 0;
            self.imr = 0;
            self.isr = 0;
            self.irr = if self.level_triggered { self.pins } else { 0 };
            self.icw4 = 0;
            self.highest_priority = 0;
            self.rotate_on_auto_eoi = false;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            self.init_step = 2;
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2: R, SL, EOI in bits 7-5, level in bits 2-0.
            let level = value & 7;
            match value >> 5 {
                // Non-specific EOI, and rotate on non-specific EOI.
                1 | 5 => {
                    if let Some(irq) = self.highest_in(self.isr) {
                        self.eoi(irq, value >> 5 == 5);
                    }
                }
                3 => self.eoi(level, false),
                7 => self.eoi(level, true),
                4 => self.rotate_on_auto_eoi = true,
                0 => self.rotate_on_auto_eoi = false,
                6 => self.highest_priority = (level + 1) & 7,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_step {
            2 => {
                self.vector_base = value & 0xF8;
                self.init_step = if !self.single {
                    3
                } else if self.icw4_needed {
                    4
                } else {
                    0
                };
            }
            3 => {
                self.icw3 = value;
                self.init_step = if self.icw4_needed { 4 } else { 0 };
            }
            4 => {
                self.icw4 = value & 0x1F;
                self.init_step = 0;
            }
            _ => self.imr = value,
        }
    }
}

/// The master/slave pair of a PC/AT.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PicPair {
    pub master: Pic8259,
    pub slave: Pic8259,
    /// Level of the external IRQ2 line, which only reaches the master when
    /// it is programmed single (no slave on IR2).
    pub ext_irq2: bool,
}

/// Saved state of a [`PicPair`]: the pair's full register state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PicState {
    pub master: Pic8259,
    pub slave: Pic8259,
    pub ext_irq2: bool,
}

/// The master input the slave's INT output is wired to.
const CASCADE_IRQ: u8 = 2;

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    pub fn new() -> Self {
        PicPair {
            master: Pic8259::default(),
            slave: Pic8259::default(),
            ext_irq2: false,
        }
    }

    fn cascade_bits(&self) -> u8 {
        if self.master.single {
            0
        } else {
            1 << CASCADE_IRQ
        }
    }

    /// Re-drive the master's IR2 from the slave's INT output (or from the
    /// external line when the master runs single).
    fn update_cascade(&mut self) {
        let level = if self.master.single {
            self.ext_irq2
        } else {
            self.slave.pending(0).is_some()
        };
        self.master.set_pin(CASCADE_IRQ, level);
    }

    pub fn io_read(&mut self, port: u16) -> u8 {
        let is_slave = port & 0x80 != 0;
        let chip = if is_slave { &mut self.slave } else { &mut self.master };
        if !chip.poll {
            // IRR, ISR or the mask: a read that changes nothing (the
            // cascade line is kept up to date by every change).
            return if port & 1 == 1 {
                chip.imr
            } else if chip.read_isr {
                chip.isr
            } else {
                chip.irr
            };
        }
        // Poll command: this read is the INTA of the chip (no cascade
        // handling), returning 0x80 | level when a request was pending.
        chip.poll = false;
        let value = match chip.pending(0) {
            Some(irq) => {
                chip.ack(irq);
                0x80 | irq
            }
            None => 0,
        };
        self.update_cascade();
        value
    }

    pub fn io_write(&mut self, port: u16, value: u8) {
        let chip = if port & 0x80 != 0 {
            &mut self.slave
        } else {
            &mut self.master
        };
        if port & 1 == 0 {
            chip.write_command(value);
        } else {
            chip.write_data(value);
        }
        self.update_cascade();
    }

    /// Drive ISA IRQ line `irq` (0-15) to `level`. Lines above 15 are ignored.
    /// IRQ2 is the cascade input on a PC, so driving it only has an effect
    /// when the master has been programmed single.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 if irq == CASCADE_IRQ => self.ext_irq2 = level,
            0..=7 => self.master.set_pin(irq, level),
            8..=15 => self.slave.set_pin(irq - 8, level),
            _ => return,
        }
        self.update_cascade();
    }

    /// The master's INT output.
    pub fn interrupt_pending(&self) -> bool {
        self.master.pending(self.cascade_bits()).is_some()
    }

    /// The INTA cycle: the vector the CPU receives.
    pub fn acknowledge(&mut self) -> u8 {
        let Some(irq) = self.master.pending(self.cascade_bits()) else {
            // Nothing pending by the time of INTA: the 8259A answers IR7's
            // vector without setting ISR.
            return self.master.vector_base | 7;
        };
        self.master.ack(irq);
        let vector = if irq == CASCADE_IRQ && !self.master.single {
            match self.slave.pending(0) {
                Some(sirq) => {
                    self.slave.ack(sirq);
                    self.slave.vector_base | sirq
                }
                // The slave's request went away: its spurious vector. The
                // master's IR2 stays in service, as on hardware, so the
                // guest's EOI to the master balances it.
                None => self.slave.vector_base | 7,
            }
        } else {
            self.master.vector_base | irq
        };
        self.update_cascade();
        vector
    }
}

impl Snapshot for PicPair {
    const SECTION: &'static str = "pic";
    const VERSION: u16 = 1;
    type State = PicState;

    fn save(&self) -> PicState {
        PicState {
            master: self.master.clone(),
            slave: self.slave.clone(),
            ext_irq2: self.ext_irq2,
        }
    }

    fn restore(&mut self, s: &PicState) {
        self.master = s.master.clone();
        self.slave = s.slave.clone();
        self.ext_irq2 = s.ext_irq2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PC BIOS / Linux initialisation: master at 0x20, slave at 0x28.
    fn init(pic: &mut PicPair, master_base: u8, slave_base: u8, icw4: u8) {
        pic.io_write(0x20, 0x11);
        pic.io_write(0x21, master_base);
        pic.io_write(0x21, 0x04);
        pic.io_write(0x21, icw4);
        pic.io_write(0xA0, 0x11);
        pic.io_write(0xA1, slave_base);
        pic.io_write(0xA1, 0x02);
        pic.io_write(0xA1, icw4);
        pic.io_write(0x21, 0x00);
        pic.io_write(0xA1, 0x00);
    }

    fn pulse(pic: &mut PicPair, irq: u8) {
        pic.set_irq(irq, true);
        pic.set_irq(irq, false);
    }

    #[test]
    fn master_irq_vector_and_eoi() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        assert!(!pic.interrupt_pending());
        pic.set_irq(0, true);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x20);
        assert!(!pic.interrupt_pending());
        // ISR readable through OCW3.
        pic.io_write(0x20, 0x0B);
        assert_eq!(pic.io_read(0x20), 0x01);
        pic.io_write(0x20, 0x20); // non-specific EOI
        assert_eq!(pic.io_read(0x20), 0x00);
        // Line still high: no new edge, no new interrupt.
        assert!(!pic.interrupt_pending());
        pic.set_irq(0, false);
        pic.set_irq(0, true);
        assert!(pic.interrupt_pending());
    }

    #[test]
    fn edge_latched_survives_the_line_dropping_before_ack() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pulse(&mut pic, 4);
        assert!(pic.interrupt_pending(), "the edge stays latched in IRR");
        assert_eq!(pic.acknowledge(), 0x24);
    }

    #[test]
    fn ack_with_nothing_pending_is_spurious_irq7() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        assert!(!pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x27, "spurious IRQ7");
        pic.io_write(0x20, 0x0B);
        assert_eq!(pic.io_read(0x20), 0, "spurious INTA sets no ISR bit");
    }

    #[test]
    fn priority_and_nesting() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x08, 0x70, 0x01);
        pic.set_irq(4, true);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x09);
        // IRQ4 is lower priority than in-service IRQ1.
        assert!(!pic.interrupt_pending());
        pic.set_irq(0, true);
        assert!(pic.interrupt_pending(), "higher priority nests");
        assert_eq!(pic.acknowledge(), 0x08);
        pic.io_write(0x20, 0x20); // ends IRQ0 (highest in service)
        pic.io_write(0x20, 0x0B);
        assert_eq!(pic.io_read(0x20), 0x02);
        pic.io_write(0x20, 0x61); // specific EOI for IRQ1
        assert_eq!(pic.io_read(0x20), 0x00);
        assert_eq!(pic.acknowledge(), 0x0C);
    }

    #[test]
    fn mask_and_irr_read() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.io_write(0x21, 0xFE);
        assert_eq!(pic.io_read(0x21), 0xFE);
        pic.set_irq(3, true);
        assert!(!pic.interrupt_pending());
        pic.io_write(0x20, 0x0A); // read IRR
        assert_eq!(pic.io_read(0x20), 0x08);
        pic.io_write(0x21, 0x00);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x23);
    }

    #[test]
    fn cascade_slave_irq() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.set_irq(14, true);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x2E);
        assert!(!pic.interrupt_pending());
        pic.io_write(0xA0, 0x0B);
        assert_eq!(pic.io_read(0xA0), 0x40);
        pic.io_write(0x20, 0x0B);
        assert_eq!(pic.io_read(0x20), 0x04);
        pic.io_write(0xA0, 0x20);
        pic.io_write(0x20, 0x20);
        assert_eq!(pic.io_read(0xA0), 0);
        assert_eq!(pic.io_read(0x20), 0);
        // A second slave request raises a fresh edge on the master.
        pic.set_irq(8, true);
        assert_eq!(pic.acknowledge(), 0x28);
        // Masking the cascade input hides slave requests.
        pic.io_write(0xA0, 0x20);
        pic.io_write(0x20, 0x20);
        pic.io_write(0x21, 0x04);
        pic.set_irq(9, true);
        assert!(!pic.interrupt_pending());
        pic.io_write(0x21, 0x00);
        assert_eq!(pic.acknowledge(), 0x29);
    }

    #[test]
    fn slave_spurious_when_request_vanishes() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.set_irq(12, true);
        assert!(pic.interrupt_pending());
        // The slave masks the line between the master's request and INTA: the
        // master already latched IR2 but the slave has nothing to give.
        let mut pic2 = pic.clone();
        pic2.slave.imr = 0x10;
        assert_eq!(pic2.acknowledge(), 0x2F);
        assert_eq!(pic2.master.isr, 0x04);
        assert_eq!(pic2.slave.isr, 0x00);
    }

    #[test]
    fn auto_eoi() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x03);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x25);
        pic.io_write(0x20, 0x0B);
        assert_eq!(pic.io_read(0x20), 0, "auto-EOI leaves ISR clear");
        pic.set_irq(6, true);
        assert!(pic.interrupt_pending());
    }

    #[test]
    fn icw4_optional_and_single_mode() {
        let mut pic = PicPair::new();
        // ICW1: single, no ICW4 -> only ICW2 follows; the next data write is OCW1.
        pic.io_write(0x20, 0x12);
        pic.io_write(0x21, 0x40);
        pic.io_write(0x21, 0x04);
        assert_eq!(pic.io_read(0x21), 0x04);
        pic.set_irq(0, true);
        assert_eq!(pic.acknowledge(), 0x40);
        // In single mode IRQ2 is an ordinary input (here masked).
        pic.set_irq(2, true);
        assert!(!pic.interrupt_pending());
        pic.io_write(0x20, 0x20);
        pic.io_write(0x21, 0x00);
        assert_eq!(pic.acknowledge(), 0x42);
    }

    #[test]
    fn level_triggered_mode_rerequests_after_eoi() {
        let mut pic = PicPair::new();
        pic.io_write(0x20, 0x19); // ICW1 with LTIM
        pic.io_write(0x21, 0x20);
        pic.io_write(0x21, 0x04);
        pic.io_write(0x21, 0x01);
        pic.io_write(0x21, 0x00);
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), 0x23);
        assert!(!pic.interrupt_pending());
        pic.io_write(0x20, 0x20);
        assert!(pic.interrupt_pending(), "still-high level requests again");
        pic.set_irq(3, false);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn rotation_changes_priority() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.io_write(0x20, 0xC4); // set priority: IR4 lowest, IR5 highest
        pic.set_irq(1, true);
        pic.set_irq(6, true);
        assert_eq!(pic.acknowledge(), 0x26);
        pic.io_write(0x20, 0xA0); // rotate on non-specific EOI: IR6 lowest now
        assert_eq!(pic.master.highest_priority, 7);
        assert_eq!(pic.acknowledge(), 0x21);
    }

    #[test]
    fn special_mask_mode_allows_lower_priority() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x21);
        pic.set_irq(5, true);
        assert!(!pic.interrupt_pending());
        pic.io_write(0x21, 0x02); // mask the in-service level
        pic.io_write(0x20, 0x68); // set special mask mode
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), 0x25);
    }

    #[test]
    fn poll_command() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.set_irq(3, true);
        pic.io_write(0x20, 0x0C);
        assert_eq!(pic.io_read(0x20), 0x83);
        pic.io_write(0x20, 0x0C);
        assert_eq!(pic.io_read(0x20), 0x00);
    }

    #[test]
    fn out_of_range_inputs_do_not_panic() {
        let mut pic = PicPair::new();
        for port in [0x20u16, 0x21, 0xA0, 0xA1, 0x22, 0xFFFF] {
            for v in [0u8, 0x10, 0x1F, 0xFF, 0x08, 0x0C, 0xE7] {
                pic.io_write(port, v);
                let _ = pic.io_read(port);
            }
        }
        pic.set_irq(200, true);
        let _ = pic.acknowledge();
    }

    #[test]
    fn save_restore_roundtrip() {
        let mut pic = PicPair::new();
        init(&mut pic, 0x20, 0x28, 0x01);
        pic.set_irq(1, true);
        pic.set_irq(10, true);
        let s = pic.save();
        let mut other = PicPair::new();
        other.restore(&s);
        assert_eq!(other, pic);
        assert_eq!(other.acknowledge(), pic.acknowledge());
        assert_eq!(other.acknowledge(), pic.acknowledge());
    }
}
