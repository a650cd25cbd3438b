//! The I/O APIC (Intel 82093AA datasheet, "I/O Advanced Programmable
//! Interrupt Controller"; the ICH's, for version 0x20): an index register
//! at 0xFEC00000, a data window at 0xFEC00010 and the EOI register at
//! 0xFEC00040; registers 0 (ID), 1 (version 0x20, as QEMU's: 24 pins), 2
//! (arbitration) and 0x10-0x3F (the redirection table, two dwords a pin).
//!
//! Its pins are the ISA IRQs as QEMU's PC wires them: pin n is IRQ n,
//! except the timer, IRQ 0, which is pin 2 (the MP table's interrupt
//! override says so). An unmasked pin sends its vector to the local APIC
//! as a message: on a rising edge when edge-triggered; while asserted and
//! not already in service (remote IRR) when level-triggered, until the
//! local APIC's EOI of that vector. Every pin starts masked, so a guest
//! that never programs it sees the 8259s alone.

use crate::snapshot::Snapshot;

pub const BASE: u32 = 0xFEC0_0000;
pub const WINDOW_BYTES: u32 = 0x44;
/// Version 0x20 (with the EOI register), 24 redirection entries.
pub const VERSION: u32 = 0x0017_0020;
pub const PINS: usize = 24;

const MASKED: u64 = 1 << 16;
const REMOTE_IRR: u64 = 1 << 14;
const LEVEL: u64 = 1 << 15;
const ACTIVE_LOW: u64 = 1 << 13;
const DELIVERY_STATUS: u64 = 1 << 12;
/// Bits software writes: vector, delivery and destination mode, polarity,
/// trigger mode, mask, destination.
const WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// An interrupt message for the local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub vector: u8,
    pub dest: u8,
    pub logical: bool,
    pub level: bool,
    /// Delivery mode (0 fixed, 1 lowest priority, 7 ExtINT, ...).
    pub mode: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IoApic {
    id: u8,
    index: u8,
    redirection: [u64; PINS],
    /// The pins' input levels (asserted = true, before polarity).
    pins: u32,
    /// Messages sent and not yet taken by the router (which takes them
    /// before the instruction that sent them ends, so a saved machine
    /// has none).
    outbox: Vec<Message>,
}

/// Saved state of an [`IoApic`].
pub type IoApicState = IoApic;

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

/// The pin an ISA IRQ arrives on.
pub fn pin_of_isa_irq(irq: u8) -> usize {
    if irq == 0 {
        2
    } else {
        usize::from(irq)
    }
}

impl IoApic {
    pub fn new() -> Self {
        IoApic {
            // ID 0 as after reset, which QEMU's firmware leaves too (an
            // xAPIC's I/O APIC IDs need not differ from the CPUs').
            id: 0,
            index: 0,
            redirection: [MASKED; PINS],
            pins: 0,
            outbox: Vec::new(),
        }
    }

    fn message(&self, pin: usize) -> Message {
        let entry = self.redirection[pin];
        Message {
            vector: entry as u8,
            dest: (entry >> 56) as u8,
            logical: entry & (1 << 11) != 0,
            level: entry & LEVEL != 0,
            mode: ((entry >> 8) & 7) as u8,
        }
    }

    fn asserted(&self, pin: usize) -> bool {
        let high = self.pins & (1 << pin) != 0;
        high != (self.redirection[pin] & ACTIVE_LOW != 0)
    }

    /// Whether a level-triggered pin must send (again): asserted, unmasked
    /// and not in service.
    fn level_due(&self, pin: usize) -> bool {
        let entry = self.redirection[pin];
        entry & LEVEL != 0 && entry & (MASKED | REMOTE_IRR) == 0 && self.asserted(pin)
    }

    fn send(&mut self, pin: usize) {
        if self.redirection[pin] & LEVEL != 0 {
            self.redirection[pin] |= REMOTE_IRR;
        }
        let message = self.message(pin);
        self.outbox.push(message);
    }

    /// The messages sent since the last call.
    pub fn take_messages(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.outbox.drain(..)
    }

    /// A pin's input at `level`.
    pub fn set_pin(&mut self, pin: usize, level: bool) {
        if pin >= PINS {
            return;
        }
        let was = self.asserted(pin);
        self.pins = (self.pins & !(1 << pin)) | (u32::from(level) << pin);
        let now = self.asserted(pin);
        let entry = self.redirection[pin];
        if entry & LEVEL == 0 {
            if now && !was && entry & MASKED == 0 {
                self.send(pin);
            }
        } else if self.level_due(pin) {
            self.send(pin);
        }
    }

    /// The local APIC's EOI of level-triggered `vectors` (a 256-bit set):
    /// pins in service with those vectors may send again.
    pub fn end_of_interrupt(&mut self, vectors: &[u32; 8]) {
        for pin in 0..PINS {
            let v = self.redirection[pin] as u8;
            if self.redirection[pin] & REMOTE_IRR != 0 && vectors[usize::from(v / 32)] & (1 << (v % 32)) != 0 {
                self.redirection[pin] &= !REMOTE_IRR;
                if self.level_due(pin) {
                    self.send(pin);
                }
            }
        }
    }

    pub fn mmio_read(&mut self, offset: u32, size: u8) -> u32 {
        let value = match offset & !3 {
            0x00 => u32::from(self.index),
            0x10 => self.read_register(),
            _ => 0,
        };
        let v = value >> (8 * (offset & 3));
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    fn read_register(&self) -> u32 {
        match self.index {
            0 => u32::from(self.id) << 24,
            1 => VERSION,
            2 => u32::from(self.id) << 24,
            i @ 0x10..=0x3F => {
                let entry = self.redirection[usize::from((i - 0x10) / 2)];
                if i & 1 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// A write of the index or data register; unmasking a level pin that is
    /// asserted sends its message.
    pub fn mmio_write(&mut self, offset: u32, size: u8, value: u32) {
        match (offset, size) {
            (0x00, _) => self.index = value as u8,
            // The EOI register: pins in service with this vector may send
            // again.
            (0x40, 4) => {
                let mut vectors = [0u32; 8];
                let v = value as u8;
                vectors[usize::from(v / 32)] = 1 << (v % 32);
                self.end_of_interrupt(&vectors);
            }
            (0x10, 4) => match self.index {
                0 => self.id = ((value >> 24) & 0xF) as u8,
                i @ 0x10..=0x3F => {
                    let pin = usize::from((i - 0x10) / 2);
                    let entry = self.redirection[pin];
                    let merged = if i & 1 == 0 {
                        (entry & !0xFFFF_FFFF) | u64::from(value)
                    } else {
                        (entry & 0xFFFF_FFFF) | (u64::from(value) << 32)
                    };
                    // Remote IRR and delivery status are the chip's own.
                    let mut next = (merged & WRITABLE) | (entry & (REMOTE_IRR | DELIVERY_STATUS));
                    if next & LEVEL == 0 {
                        next &= !REMOTE_IRR;
                    }
                    self.redirection[pin] = next;
                    if self.level_due(pin) {
                        self.send(pin);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

impl Snapshot for IoApic {
    const SECTION: &'static str = "ioapic";
    const VERSION: u16 = 1;
    type State = IoApicState;

    fn save(&self) -> IoApicState {
        self.clone()
    }

    fn restore(&mut self, s: &IoApicState) {
        *self = s.clone();
    }
}
