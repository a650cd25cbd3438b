//! PC devices as pure register logic. A device sees port accesses (offset
//! within its range), the virtual clock `now` (ticks, see [`crate::time`]) and
//! nothing else; its interrupt output is an [`IrqLine`] the platform routes to
//! the PIC, and its host side (bytes to print, bytes received) is a plain buffer
//! the platform drains or fills. So every device is deterministic, `Clone`, and
//! has a state type that can be saved and restored exactly.

pub mod bus;
pub mod cmos;
pub mod debug;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod testdev;
pub mod uart;

/// An interrupt line a device drives. The platform copies its level into the
/// PIC after every access and timer event (the PIC latches rising edges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IrqLine {
    /// ISA IRQ number (0-15).
    pub irq: u8,
    pub level: bool,
}

impl IrqLine {
    pub const fn new(irq: u8) -> Self {
        IrqLine { irq, level: false }
    }
}
