//! PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, 3.2.2.3.2
//! "Software Generation of Configuration Transactions") with one device on
//! bus 0: a host bridge at 00:00.0 with the identity of the i440FX that
//! QEMU's `pc` machine has (8086:1237, class 0x060000).
//!
//! CONFIG_ADDRESS at 0xCF8 takes and returns whole dwords (bit 31 enable,
//! bus, device, function, register); CONFIG_DATA at 0xCFC-0xCFF reads and
//! writes the selected dword's bytes. A function that is not there reads as
//! all ones, as a master abort does. Kernels look here before anything else
//! on the bus: Linux accepts configuration type 1 only when it finds a host
//! bridge on bus 0, and without it says "No config space access function
//! found". The bridge has no chipset behaviour (no PAM shadowing, no SMRAM):
//! its registers past the header hold what is written.

use crate::snapshot::Snapshot;

/// The host bridge's identity, as on QEMU's i440FX.
const VENDOR_INTEL: u16 = 0x8086;
const DEVICE_I440FX: u16 = 0x1237;
const REVISION: u8 = 0x02;
/// Class 06 (bridge), subclass 00 (host), interface 00.
const CLASS_HOST_BRIDGE: u32 = 0x06_0000;
/// Medium DEVSEL timing and fast back-to-back capable.
const STATUS: u16 = 0x0280;
/// Command register bits a host bridge implements: memory space, bus
/// master, memory write and invalidate.
const COMMAND_MASK: u16 = 0x0016;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PciHost {
    /// CONFIG_ADDRESS as last written (reserved bits 0-1 read as 0).
    pub address: u32,
    pub command: u16,
    pub latency_timer: u8,
    /// Registers 0x40-0xFF: device-specific, kept as written.
    #[serde(with = "serde_big_array::BigArray")]
    pub device_specific: [u8; 192],
}

/// Saved state of a [`PciHost`].
pub type PciHostState = PciHost;

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    pub fn new() -> Self {
        PciHost {
            address: 0,
            command: 0,
            latency_timer: 0,
            device_specific: [0; 192],
        }
    }

    /// The selected configuration register's dword offset, when the address
    /// enables a cycle to the one function there is (bus 0, device 0,
    /// function 0).
    fn selected(&self) -> Option<u8> {
        let enabled = self.address & 0x8000_0000 != 0;
        let bus_dev_fn = (self.address >> 8) & 0xFFFF;
        (enabled && bus_dev_fn == 0).then_some((self.address & 0xFC) as u8)
    }

    /// The host bridge's configuration dword at `reg` (a multiple of 4).
    fn config_dword(&self, reg: u8) -> u32 {
        match reg {
            0x00 => u32::from(VENDOR_INTEL) | u32::from(DEVICE_I440FX) << 16,
            0x04 => u32::from(self.command) | u32::from(STATUS) << 16,
            0x08 => u32::from(REVISION) | CLASS_HOST_BRIDGE << 8,
            // Cache line size 0, latency timer, header type 0 (one function).
            0x0C => u32::from(self.latency_timer) << 8,
            0x40..=0xFF => {
                let at = usize::from(reg - 0x40);
                u32::from_le_bytes([
                    self.device_specific[at],
                    self.device_specific[at + 1],
                    self.device_specific[at + 2],
                    self.device_specific[at + 3],
                ])
            }
            // BARs, subsystem IDs, capabilities, interrupt line: all zero.
            _ => 0,
        }
    }

    fn write_config_byte(&mut self, reg: u8, value: u8) {
        match reg {
            0x04 => self.command = (self.command & 0xFF00) | u16::from(value) & COMMAND_MASK,
            0x0D => self.latency_timer = value,
            0x40..=0xFF => self.device_specific[usize::from(reg - 0x40)] = value,
            // Read-only or not implemented (status bits are write-1-to-clear
            // and none are ever set here).
            _ => {}
        }
    }

    /// A read at `port` (0xCF8-0xCFF) of `size` bytes; `None` where nothing
    /// decodes it (CONFIG_ADDRESS answers dword accesses only).
    pub fn io_read(&mut self, port: u16, size: u8) -> Option<u32> {
        match port {
            0xCF8 if size == 4 => Some(self.address),
            0xCFC..=0xCFF => {
                let shift = 8 * u32::from(port - 0xCFC);
                let mask = if size >= 4 {
                    u32::MAX
                } else {
                    (1 << (8 * u32::from(size))) - 1
                };
                Some(match self.selected() {
                    Some(reg) => (self.config_dword(reg) >> shift) & mask,
                    None => mask,
                })
            }
            _ => None,
        }
    }

    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        match port {
            0xCF8 if size == 4 => self.address = value & !0x3,
            0xCFC..=0xCFF => {
                if let Some(reg) = self.selected() {
                    let first = (port - 0xCFC) as u8;
                    for i in 0..size.min(4 - first) {
                        self.write_config_byte(reg + first + i, (value >> (8 * i)) as u8);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Snapshot for PciHost {
    const SECTION: &'static str = "pci";
    const VERSION: u16 = 1;
    type State = PciHostState;

    fn save(&self) -> PciHostState {
        self.clone()
    }

    fn restore(&mut self, s: &PciHostState) {
        *self = s.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_config(p: &mut PciHost, bus_dev_fn: u32, reg: u32) -> u32 {
        p.io_write(0xCF8, 4, 0x8000_0000 | bus_dev_fn << 8 | reg);
        p.io_read(0xCFC, 4).expect("data port")
    }

    #[test]
    fn the_host_bridge_answers_on_bus_0_and_nothing_else_does() {
        let mut p = PciHost::new();
        assert_eq!(read_config(&mut p, 0, 0), 0x1237_8086);
        assert_eq!(read_config(&mut p, 0, 8) >> 8, 0x06_0000, "class: host bridge");
        assert_eq!(p.io_read(0xCF8, 4), Some(0x8000_0008), "the address reads back");
        assert_eq!(p.io_read(0xCFE, 2), Some(0x0600), "class word, as Linux reads it");
        for other in [1 << 3, 1, 1 << 8, 0xFFFF] {
            assert_eq!(read_config(&mut p, other, 0), 0xFFFF_FFFF, "bus/dev/fn {other:#x}");
        }
        // Without the enable bit nothing is selected.
        p.io_write(0xCF8, 4, 0);
        assert_eq!(p.io_read(0xCFC, 2), Some(0xFFFF));
        // CONFIG_ADDRESS is a dword register: byte accesses do not reach it.
        assert_eq!(p.io_read(0xCF8, 1), None);
        p.io_write(0xCFB, 1, 0x01);
        assert_eq!(p.io_read(0xCF8, 4), Some(0));
    }

    #[test]
    fn writable_registers_keep_what_is_written_and_others_do_not() {
        let mut p = PciHost::new();
        p.io_write(0xCF8, 4, 0x8000_0004);
        p.io_write(0xCFC, 2, 0xFFFF);
        assert_eq!(
            read_config(&mut p, 0, 4),
            0x0280_0016,
            "command bits it has; status unchanged"
        );
        p.io_write(0xCF8, 4, 0x8000_0000);
        p.io_write(0xCFC, 4, 0);
        assert_eq!(read_config(&mut p, 0, 0), 0x1237_8086, "IDs are read-only");
        p.io_write(0xCF8, 4, 0x8000_0058);
        p.io_write(0xCFD, 2, 0x3311);
        assert_eq!(read_config(&mut p, 0, 0x58), 0x0033_1100);
        let saved = p.save();
        let mut q = PciHost::new();
        q.restore(&saved);
        assert_eq!(q, p);
    }
}
