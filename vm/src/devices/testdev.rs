//! QEMU's `pc-testdev`, the ISA test device that test suites for PC
//! emulators (kvm-unit-tests and the like) drive, as QEMU documents it in
//! its source: a 32-bit scratch register at ports 0xE0-0xE3 that keeps
//! whatever byte lanes are written, a "flush page" port at 0xE4 (for a
//! host's page protection; nothing to do here), one port per ISA interrupt
//! line at 0x2000-0x200F (writing n sets line n's level), and 2 MiB of
//! scratch memory behind MMIO at 0xFF000000 for testing instructions on
//! device memory.
//!
//! Under QEMU it exists only with `-device pc-testdev`; ringback always has
//! it, as it always has isa-debug-exit: neither is at an address any other
//! PC device uses. The scratch memory is kept a page at a time, so a guest
//! that never touches it saves nothing in a checkpoint.

use std::collections::BTreeMap;

use super::IrqLine;
use crate::snapshot::Snapshot;

pub const IOMEM_BASE: u32 = 0xFF00_0000;
pub const IOMEM_BYTES: u32 = 2 << 20;
const PAGE: u32 = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PcTestdev {
    ioport: u32,
    /// The scratch memory's pages that were written, by page number.
    iomem: BTreeMap<u32, Vec<u8>>,
}

/// Saved state of a [`PcTestdev`].
pub type PcTestdevState = PcTestdev;

impl PcTestdev {
    pub fn new() -> Self {
        Self::default()
    }

    /// A read of the scratch register from byte `lane` (0-3) up.
    pub fn ioport_read(&self, lane: u16) -> u32 {
        self.ioport >> (8 * u32::from(lane & 3))
    }

    /// A write of `size` bytes at byte `lane`: those lanes change.
    pub fn ioport_write(&mut self, lane: u16, size: u8, value: u32) {
        let shift = 8 * u32::from(lane & 3);
        let bits = 8 * u32::from(size.min(4));
        let mask = (u32::MAX >> (32 - bits)) << shift;
        self.ioport = (self.ioport & !mask) | ((value << shift) & mask);
    }

    /// The line a write to the IRQ ports sets, if it names an ISA line.
    pub fn irq_write(port: u16, value: u32) -> Option<IrqLine> {
        let irq = port.checked_sub(0x2000)?;
        (irq < 16).then_some(IrqLine {
            irq: irq as u8,
            level: value & 0xFF != 0,
        })
    }

    pub fn iomem_read(&self, offset: u32, size: u8) -> u32 {
        (0..u32::from(size)).fold(0, |v, i| {
            let at = offset.wrapping_add(i);
            let byte = self
                .iomem
                .get(&(at / PAGE))
                .and_then(|page| page.get((at % PAGE) as usize))
                .copied()
                .unwrap_or(0);
            v | (u32::from(byte) << (8 * i))
        })
    }

    pub fn iomem_write(&mut self, offset: u32, size: u8, value: u32) {
        for i in 0..u32::from(size) {
            let at = offset.wrapping_add(i);
            if at >= IOMEM_BYTES {
                continue;
            }
            let page = self.iomem.entry(at / PAGE).or_insert_with(|| vec![0; PAGE as usize]);
            // A page restored from a damaged trace may be short: such a
            // byte is not kept, rather than a panic.
            if let Some(byte) = page.get_mut((at % PAGE) as usize) {
                *byte = (value >> (8 * i)) as u8;
            }
        }
    }
}

impl Snapshot for PcTestdev {
    const SECTION: &'static str = "testdev";
    const VERSION: u16 = 1;
    type State = PcTestdevState;

    fn save(&self) -> PcTestdevState {
        self.clone()
    }

    fn restore(&mut self, s: &PcTestdevState) {
        *self = s.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_register_keeps_the_lanes_written() {
        let mut d = PcTestdev::new();
        d.ioport_write(0, 4, 0x1122_3344);
        d.ioport_write(1, 1, 0xAB);
        assert_eq!(d.ioport_read(0), 0x1122_AB44);
        d.ioport_write(2, 2, 0xCDEF);
        assert_eq!(d.ioport_read(0), 0xCDEF_AB44);
        assert_eq!(d.ioport_read(3) & 0xFF, 0xCD);
    }

    #[test]
    fn scratch_memory_reads_back_and_starts_zero() {
        let mut d = PcTestdev::new();
        assert_eq!(d.iomem_read(0x1234, 4), 0);
        d.iomem_write(0xFFE, 4, 0xA1B2_C3D4);
        assert_eq!(d.iomem_read(0xFFE, 4), 0xA1B2_C3D4, "across a page");
        assert_eq!(d.iomem_read(0x1000, 1), 0xB2);
        d.iomem_write(IOMEM_BYTES - 1, 4, 0xFFFF_FFFF);
        assert_eq!(d.iomem.len(), 3, "only written pages are kept; nothing past the end");
    }

    // A page from a damaged trace may be short; writes past it are lost,
    // not a panic, and reads past it are zero.
    #[test]
    fn a_short_page_from_a_damaged_trace_is_no_panic() {
        let mut d = PcTestdev::new();
        d.iomem.insert(0, vec![1; 10]);
        d.iomem_write(100, 4, 0xFFFF_FFFF);
        assert_eq!(d.iomem_read(100, 4), 0);
        assert_eq!(d.iomem_read(8, 4), 0x0101);
    }
}
