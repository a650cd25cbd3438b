//! QEMU's firmware configuration device, traditional I/O-port interface, as
//! described in QEMU's docs/specs/fw_cfg.rst: a 16-bit little-endian
//! selector at 0x510 and a data port at 0x511 that streams the selected
//! item's bytes. The DMA interface is not offered (the ID item has only the
//! "traditional interface" bit), writes to items are ignored, and the file
//! directory is empty. Items are fixed at construction.

use crate::snapshot::Snapshot;
/// Well-known selector keys (fw_cfg.rst, "Selector Register").
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
pub const FW_CFG_ID: u16 = 0x0001;
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
pub const FW_CFG_MAX_CPUS: u16 = 0x000F;
pub const FW_CFG_FILE_DIR: u16 = 0x0019;

/// Selector bit 15 picks the architecture-specific item table (x86's is
/// empty here); bit 14 is the write-enable flag, not part of the key.
const ARCH_LOCAL: u16 = 0x8000;
const ENTRY_MASK: u16 = 0x3FFF;

pub const SELECTOR_PORT: u16 = 0x510;
pub const DATA_PORT: u16 = 0x511;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FwCfg {
    pub ram_bytes: u64,
    pub cpus: u16,
    /// Selector as last written.
    pub selector: u16,
    /// Offset of the next data byte within the selected item.
    pub offset: u32,
}

/// Saved state of an [`FwCfg`]: its whole state (items are derived from
/// `ram_bytes` and `cpus`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FwCfgState {
    pub ram_bytes: u64,
    pub cpus: u16,
    pub selector: u16,
    pub offset: u32,
}

impl FwCfg {
    pub fn new(ram_bytes: u64, cpus: u16) -> Self {
        FwCfg {
            ram_bytes,
            cpus,
            selector: 0,
            offset: 0,
        }
    }

    /// Byte `index` of the selected item; 0 past its end or for absent items.
    fn item_byte(&self, index: u32) -> u8 {
        if self.selector & ARCH_LOCAL != 0 {
            return 0;
        }
        let i = index as usize;
        let pick = |bytes: &[u8]| bytes.get(i).copied().unwrap_or(0);
        match self.selector & ENTRY_MASK {
            FW_CFG_SIGNATURE => pick(b"QEMU"),
            // Bit 0: traditional interface; bit 1 (DMA) clear.
            FW_CFG_ID => pick(&1u32.to_le_bytes()),
            FW_CFG_RAM_SIZE => pick(&self.ram_bytes.to_le_bytes()),
            FW_CFG_NB_CPUS | FW_CFG_MAX_CPUS => pick(&self.cpus.to_le_bytes()),
            // The directory's file count is big-endian; zero files.
            FW_CFG_FILE_DIR => pick(&0u32.to_be_bytes()),
            _ => 0,
        }
    }

    /// A read of `size` bytes (1-4; others clamped) from `port`. The data
    /// port returns successive item bytes, assembled little-endian; the
    /// selector and anything else read 0.
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        if port != DATA_PORT {
            return 0;
        }
        let mut value = 0u32;
        for i in 0..u32::from(size.clamp(1, 4)) {
            value |= u32::from(self.item_byte(self.offset)) << (8 * i);
            self.offset = self.offset.saturating_add(1);
        }
        value
    }

    /// A selector write picks an item and rewinds to its start. Data port
    /// writes are ignored (no writable items).
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        if port == SELECTOR_PORT {
            self.selector = if size == 1 { value as u8 as u16 } else { value as u16 };
            self.offset = 0;
        }
    }
}

impl Snapshot for FwCfg {
    const SECTION: &'static str = "fw_cfg";
    const VERSION: u16 = 1;
    type State = FwCfgState;

    fn save(&self) -> FwCfgState {
        FwCfgState {
            ram_bytes: self.ram_bytes,
            cpus: self.cpus,
            selector: self.selector,
            offset: self.offset,
        }
    }

    fn restore(&mut self, s: &FwCfgState) {
        self.ram_bytes = s.ram_bytes;
        self.cpus = s.cpus;
        self.selector = s.selector;
        self.offset = s.offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(f: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        f.io_write(SELECTOR_PORT, 2, u32::from(key));
        (0..len).map(|_| f.io_read(DATA_PORT, 1) as u8).collect()
    }

    #[test]
    fn signature_and_id() {
        let mut f = FwCfg::new(256 << 20, 2);
        assert_eq!(read_item(&mut f, FW_CFG_SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut f, FW_CFG_ID, 4), [1, 0, 0, 0]);
    }

    #[test]
    fn numeric_items() {
        let mut f = FwCfg::new(0x1_2345_6000, 3);
        assert_eq!(read_item(&mut f, FW_CFG_RAM_SIZE, 8), 0x1_2345_6000u64.to_le_bytes());
        assert_eq!(read_item(&mut f, FW_CFG_NB_CPUS, 2), [3, 0]);
        assert_eq!(read_item(&mut f, FW_CFG_MAX_CPUS, 2), [3, 0]);
        assert_eq!(read_item(&mut f, FW_CFG_FILE_DIR, 4), [0, 0, 0, 0]);
        assert_eq!(read_item(&mut f, 0x0009, 4), [0, 0, 0, 0], "absent item");
        assert_eq!(read_item(&mut f, 0x8000, 4), [0, 0, 0, 0], "arch-local table empty");
        // The write-channel bit does not change which item is read.
        assert_eq!(read_item(&mut f, 0x4005, 2), [3, 0]);
    }

    #[test]
    fn wide_reads_assemble_little_endian_and_selector_rewinds() {
        let mut f = FwCfg::new(0, 1);
        f.io_write(SELECTOR_PORT, 2, 0);
        assert_eq!(f.io_read(DATA_PORT, 4), u32::from_le_bytes(*b"QEMU"));
        assert_eq!(f.io_read(DATA_PORT, 4), 0, "past the end");
        f.io_write(SELECTOR_PORT, 2, 0);
        assert_eq!(f.io_read(DATA_PORT, 2), u32::from(u16::from_le_bytes(*b"QE")));
        f.io_write(DATA_PORT, 1, 0xFF);
        assert_eq!(f.io_read(DATA_PORT, 1), u32::from(b'M'), "data writes ignored");
        assert_eq!(f.io_read(SELECTOR_PORT, 2), 0);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut f = FwCfg::new(u64::MAX, u16::MAX);
        f.offset = u32::MAX - 1;
        for size in [0u8, 1, 3, 4, 9, 255] {
            let _ = f.io_read(DATA_PORT, size);
            let _ = f.io_read(0xFFFF, size);
            f.io_write(0x514, size, u32::MAX);
        }
        assert_eq!(f.offset, u32::MAX);
    }

    #[test]
    fn save_restore_roundtrip() {
        let mut f = FwCfg::new(64 << 20, 1);
        f.io_write(SELECTOR_PORT, 2, u32::from(FW_CFG_RAM_SIZE));
        let _ = f.io_read(DATA_PORT, 2);
        let s = f.save();
        let mut g = FwCfg::new(0, 0);
        g.restore(&s);
        assert_eq!(g, f);
        assert_eq!(g.io_read(DATA_PORT, 4), f.io_read(DATA_PORT, 4));
    }
}
