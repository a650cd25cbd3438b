//! Boot loaders: how a kernel image becomes a machine state and RAM
//! contents, one file per protocol. `multiboot` loads multiboot v1 kernels
//! (ELF32 or with the a.out-kludge address fields) as GRUB and `qemu
//! -kernel` do; `flat` loads flat binaries entered in real mode (boot
//! sectors at 0000:7C00); `linux` loads bzImages by the Linux boot
//! protocol's 32-bit entry. A new protocol is a file here and a variant of
//! [`Kernel`]; this module keeps what they
//! share: RAM limits, reading image files, the e820 map, the flat
//! protected-mode entry state.

mod bios;
mod flat;
mod linux;
mod mptable;
mod multiboot;

use std::io::Read;
use std::path::Path;

use crate::cpu::state::{attr, cr0, flags, SegReg, Segment, TableReg};
use crate::cpu::CpuState;
use crate::mem::PAGE_SIZE;
use crate::platform::Platform;
use crate::VmError;

pub use bios::load_bios;
pub use flat::{is_boot_sector, load_flat};
pub use linux::{is_linux, load_linux, setup_header, SetupHeader};
pub use multiboot::{is_multiboot, load_multiboot, MULTIBOOT_BOOTLOADER_MAGIC, MULTIBOOT_HEADER_MAGIC};

/// What to boot: the images themselves, so a trace that holds a `Kernel`
/// is self-contained.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kernel {
    /// A multiboot v1 kernel with its command line and modules.
    Multiboot {
        image: Vec<u8>,
        cmdline: String,
        modules: Vec<Module>,
    },
    /// A flat binary entered in real mode at `addr`.
    Flat { image: Vec<u8>, addr: u32 },
    /// A Linux bzImage, entered by the 32-bit boot protocol.
    Linux {
        image: Vec<u8>,
        initrd: Option<Vec<u8>>,
        cmdline: String,
    },
    /// A firmware ROM, started from the reset vector (QEMU's `-bios`).
    Bios { image: Vec<u8> },
}

impl Kernel {
    /// Loads the kernel into `platform` by its protocol; the entry state.
    /// The firmware's tables (the MP table) come first, as a BIOS leaves
    /// them before any loader runs.
    pub fn load(&self, platform: &mut Platform) -> Result<CpuState, VmError> {
        if let Kernel::Bios { image } = self {
            // The ROM is the firmware: it builds its own tables.
            return load_bios(platform, image);
        }
        mptable::install(platform)?;
        match self {
            Kernel::Multiboot {
                image,
                cmdline,
                modules,
            } => load_multiboot(platform, image, cmdline, modules),
            Kernel::Flat { image, addr } => load_flat(platform, image, *addr),
            Kernel::Linux { image, initrd, cmdline } => load_linux(platform, image, initrd.as_deref(), cmdline),
            Kernel::Bios { image } => load_bios(platform, image),
        }
    }

    /// Every image the kernel brings, the kernel's own first (a trace
    /// header hashes them).
    pub fn images(&self) -> Vec<&[u8]> {
        match self {
            Kernel::Multiboot { image, modules, .. } => std::iter::once(image.as_slice())
                .chain(modules.iter().map(|m| m.data.as_slice()))
                .collect(),
            Kernel::Flat { image, .. } => vec![image.as_slice()],
            Kernel::Linux { image, initrd, .. } => std::iter::once(image.as_slice()).chain(initrd.as_deref()).collect(),
            Kernel::Bios { image } => vec![image.as_slice()],
        }
    }

    /// The image a debugger may find symbols in (an ELF kernel's).
    pub fn symbols(&self) -> Option<&[u8]> {
        match self {
            Kernel::Multiboot { image, .. } => Some(image),
            Kernel::Flat { .. } | Kernel::Linux { .. } | Kernel::Bios { .. } => None,
        }
    }
}

/// The GDT the loaders install for a flat protected-mode entry, below the
/// boot information, above the real-mode IVT and BIOS data area.
const GDT_ADDR: u32 = 0x800;

/// Smallest RAM we boot with: 1 MiB of conventional memory plus 1 MiB above.
pub const MIN_RAM: u64 = 2 << 20;

/// Largest: below the 32-bit PCI hole, as QEMU's `pc` machine keeps low RAM.
pub const MAX_RAM: u64 = 0xE000_0000;

/// Whether a machine can have this much RAM: within [`MIN_RAM`]..=[`MAX_RAM`]
/// and whole pages (RAM is kept in pages; the CMOS and fw_cfg report the
/// size as given, and a trace header may say anything).
pub fn valid_ram_size(bytes: u64) -> bool {
    (MIN_RAM..=MAX_RAM).contains(&bytes) && bytes.is_multiple_of(PAGE_SIZE as u64)
}

/// A 32-bit loader places nothing at or above 4 GiB, whatever the RAM.
const ADDR_LIMIT: u64 = 1 << 32;

/// Reads a kernel or module file of at most `limit` bytes; the CLI passes
/// the guest RAM size, since nothing larger can load. At most `limit + 1`
/// bytes are read, so a file that never ends (`/dev/zero`, a pipe) is
/// refused instead of filling host memory.
pub fn read_image(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>, VmError> {
    let io = |source| VmError::ReadImage {
        what: what.into(),
        path: path.display().to_string(),
        source,
    };
    let too_large = || VmError::ImageTooLarge {
        what: what.into(),
        path: path.display().to_string(),
        limit,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut data = Vec::new();
    // A regular file's size is known up front: refuse it unread, or read it
    // into one allocation.
    if let Ok(meta) = file.metadata() {
        if meta.is_file() {
            if meta.len() > limit {
                return Err(too_large());
            }
            data.reserve(usize::try_from(meta.len()).unwrap_or(0));
        }
    }
    file.take(limit.saturating_add(1)).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(data)
}

/// A module for the kernel: its contents and its command line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Module {
    pub data: Vec<u8>,
    pub cmdline: String,
}

/// One BIOS E820 memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub base: u64,
    pub len: u64,
    /// 1 = usable RAM, 2 = reserved.
    pub kind: u32,
}

/// The memory map the machine reports, shaped like SeaBIOS's on QEMU's `pc`
/// machine (EBDA below 640 KiB, the BIOS area, the top 128 KiB of RAM kept
/// for firmware tables, the BIOS ROM alias below 4 GiB), so a kernel sees the
/// same map under ringback as under `qemu -kernel`.
pub fn e820_map(ram: u64) -> Vec<E820Entry> {
    let top_reserved = 0x2_0000;
    vec![
        E820Entry {
            base: 0,
            len: 0x9_FC00,
            kind: 1,
        },
        E820Entry {
            base: 0x9_FC00,
            len: 0x400,
            kind: 2,
        },
        E820Entry {
            base: 0xF_0000,
            len: 0x1_0000,
            kind: 2,
        },
        // Saturating: a RAM too small for these regions (no machine boots
        // one) gets empty ones rather than a panic.
        E820Entry {
            base: 0x10_0000,
            len: ram.saturating_sub(0x10_0000 + top_reserved),
            kind: 1,
        },
        E820Entry {
            base: ram.saturating_sub(top_reserved),
            len: top_reserved,
            kind: 2,
        },
        E820Entry {
            base: 0xFFFC_0000,
            len: 0x4_0000,
            kind: 2,
        },
    ]
}

/// Multiboot entry state (spec 3.2): protected mode without paging, flat
/// 4 GiB code and data segments, interrupts off. We also install a GDT with
/// those descriptors (0x08 code, 0x10 data) so a kernel that reloads a
/// segment register before its own LGDT keeps working, as under GRUB.
fn multiboot_entry_state(gdt: u32) -> CpuState {
    let mut st = protected_flat_state(0x08, 0x10);
    st.gdtr = TableReg {
        base: gdt,
        limit: 3 * 8 - 1,
    };
    st
}

/// Flat protected mode without paging: 4 GiB code at selector `cs`, data at
/// `ds` in every other segment register, interrupts off. The caller points
/// GDTR at descriptors that match.
fn protected_flat_state(cs: u16, ds: u16) -> CpuState {
    let mut st = CpuState::reset();
    let code = Segment {
        selector: cs,
        base: 0,
        limit: 0xFFFF_FFFF,
        attr: code_attr(),
    };
    let data = Segment {
        selector: ds,
        base: 0,
        limit: 0xFFFF_FFFF,
        attr: data_attr(),
    };
    for s in SegReg::ALL {
        st.segs[s as usize] = if s == SegReg::Cs { code } else { data };
    }
    st.idtr = TableReg { base: 0, limit: 0x3FF };
    st.cr0 = cr0::PE | cr0::ET;
    st.eflags = flags::FIXED1;
    st
}

fn code_attr() -> u16 {
    attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED | attr::DB | attr::G
}

fn data_attr() -> u16 {
    attr::P | attr::S | attr::RW | attr::ACCESSED | attr::DB | attr::G
}

/// A flat 4 GiB descriptor (base 0, limit 0xFFFFF pages) with attributes `a`.
fn flat_desc(a: u16) -> u64 {
    let a = u64::from(a);
    0xFFFF | ((a & 0xFF) << 40) | (0xF << 48) | (((a >> 12) & 0xF) << 52)
}

/// The flat code descriptor of the entry states.
fn code_desc() -> u64 {
    flat_desc(code_attr())
}

/// The flat data descriptor of the entry states.
fn data_desc() -> u64 {
    flat_desc(data_attr())
}

/// Writes a GDT of `descriptors` at `addr`.
fn install_gdt(platform: &mut Platform, addr: u32, descriptors: &[u64]) -> Result<(), VmError> {
    let gdt: Vec<u8> = descriptors.iter().flat_map(|d| d.to_le_bytes()).collect();
    platform.mem.load(addr, &gdt)
}

/// The GDT the multiboot entry state refers to, at `addr`.
fn install_boot_gdt(platform: &mut Platform, addr: u32) -> Result<(), VmError> {
    install_gdt(platform, addr, &[0, code_desc(), data_desc()])
}

/// Parses a RAM size the way QEMU's `-m` does: a number of MiB, or a number
/// with a K, M or G suffix. It must lie within [`MIN_RAM`]..=[`MAX_RAM`] and
/// be a whole number of 4 KiB pages.
pub fn parse_mem_size(text: &str) -> Result<u64, VmError> {
    let bad = |why: &str| VmError::BadMemorySize(format!("'{text}': {why}"));
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "M"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("expected a number with an optional K, M or G suffix"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(bad("unknown unit (use K, M or G)")),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if bytes < MIN_RAM {
        return Err(bad(&format!("at least {} MiB are needed", MIN_RAM >> 20)));
    }
    if bytes > MAX_RAM {
        return Err(bad(&format!("at most {} MiB fit below the PCI hole", MAX_RAM >> 20)));
    }
    if bytes % PAGE_SIZE as u64 != 0 {
        return Err(bad("must be a whole number of 4 KiB pages"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ringback-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn mem_sizes_parse_like_qemu() {
        assert_eq!(parse_mem_size("32").unwrap(), 32 << 20);
        assert_eq!(parse_mem_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_mem_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_mem_size("4096k").unwrap(), 4 << 20);
        for bad in ["", "abc", "1", "12X", "5000G", "2049K", "-3"] {
            assert!(parse_mem_size(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn e820_matches_qemu_for_32_mib() {
        let m = e820_map(32 << 20);
        assert_eq!(m.len(), 6);
        assert_eq!(
            m[3],
            E820Entry {
                base: 0x10_0000,
                len: 0x1ee_0000,
                kind: 1
            }
        );
        assert_eq!(
            m[4],
            E820Entry {
                base: 0x1fe_0000,
                len: 0x2_0000,
                kind: 2
            }
        );
    }

    #[test]
    fn read_image_stops_at_the_limit_of_a_file_that_never_ends() {
        let err = read_image(Path::new("/dev/zero"), "kernel", 4096).unwrap_err();
        assert!(matches!(err, VmError::ImageTooLarge { limit: 4096, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "kernel /dev/zero is larger than guest RAM (4096 bytes); nothing that big can load"
        );
    }

    #[test]
    fn read_image_takes_a_file_of_exactly_the_limit() {
        let path = scratch_dir().join("limit.bin");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_image(&path, "module", 100).unwrap(), vec![7u8; 100]);
        let err = read_image(&path, "module", 99).unwrap_err();
        assert!(
            err.to_string().contains("module") && err.to_string().contains("(99 bytes)"),
            "{err}"
        );
        std::fs::write(&path, []).unwrap();
        assert_eq!(read_image(&path, "module", 0).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn read_image_keeps_the_io_error_as_its_source() {
        let err = read_image(Path::new("/nonexistent/kernel.elf"), "kernel", 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "cannot read kernel /nonexistent/kernel.elf");
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(std::io::Error::kind), Some(std::io::ErrorKind::NotFound));
        // A directory opens but does not read.
        let err = read_image(&scratch_dir(), "kernel", 1 << 20).unwrap_err();
        assert!(matches!(err, VmError::ReadImage { .. }), "{err:?}");
    }

    #[test]
    fn e820_map_of_a_tiny_ram_does_not_underflow() {
        for ram in [0, 0x10_0000, 0x11_FFFF] {
            let m = e820_map(ram);
            assert_eq!(m[3].len, 0, "{ram:#x}");
        }
    }
}
