//! The Linux/x86 boot protocol, 32-bit entry (the kernel's
//! Documentation/arch/x86/boot.rst, "The Linux/x86 Boot Protocol", and
//! zero-page.rst): what `qemu-system-i386 -kernel bzImage -initrd FILE
//! -append CMDLINE` hands a kernel, without the real-mode setup code.
//!
//! The loader reads the setup header of a bzImage, loads the protected-mode
//! kernel at 1 MiB, builds the zero page (`boot_params`: the setup header,
//! the e820 map, the command line and initrd pointers) and enters at
//! `code32_start` in flat protected mode with ESI pointing at the zero page,
//! interrupts off, as the protocol's "32-bit boot protocol" section asks.

use crate::cpu::state::{reg, SegReg, TableReg};
use crate::cpu::CpuState;
use crate::platform::Platform;
use crate::VmError;

/// Offsets in the bzImage and in the zero page (the setup header sits at the
/// same place in both).
mod off {
    pub const EXT_MEM_K: usize = 0x002;
    pub const ALT_MEM_K: usize = 0x1E0;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const SETUP_SECTS: usize = 0x1F1;
    pub const BOOT_FLAG: usize = 0x1FE;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22C;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    pub const E820_TABLE: usize = 0x2D0;
}

/// "HdrS": the setup header's magic.
const HDRS: u32 = 0x5372_6448;
/// The oldest protocol we load: 2.06 has the command line size and the
/// initrd limit, which every kernel since 2.6.22 (2007) offers.
const MIN_VERSION: u16 = 0x0206;
/// loadflags bit 0: the protected-mode code loads at 1 MiB (a bzImage).
const LOADED_HIGH: u8 = 1;
/// Where the protected-mode kernel of a bzImage loads.
const KERNEL_ADDR: u32 = 0x10_0000;
/// The zero page, the command line and the GDT, in conventional memory
/// below the EBDA, where QEMU's Linux loader puts its own.
const ZERO_PAGE: u32 = 0x7000;
const GDT: u32 = 0x6000;
const CMDLINE: u32 = 0x2_0000;
/// The entries of the zero page's e820 table.
const E820_MAX: usize = 128;
/// "Undefined" boot loader ID: not one of the registered loaders.
const LOADER_UNDEFINED: u8 = 0xFF;
/// The boot protocol's segment selectors (`__BOOT_CS`, `__BOOT_DS`).
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;

/// Whether `image` is a Linux kernel with a setup header (bzImage).
pub fn is_linux(image: &[u8]) -> bool {
    u16_at(image, off::BOOT_FLAG) == Some(0xAA55) && u32_at(image, off::HEADER) == Some(HDRS)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn bad(what: String) -> VmError {
    VmError::BadImage(format!("Linux kernel: {what}"))
}

/// What the loader reads from a bzImage's setup header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    pub version: u16,
    /// Bytes of real-mode setup code before the protected-mode kernel.
    pub setup_len: usize,
    /// The header's extent in the image (copied into the zero page).
    pub header_end: usize,
    pub initrd_addr_max: u32,
    pub cmdline_size: u32,
    /// Where the kernel decompresses itself, and the memory it needs
    /// there (protocol 2.10; zero before).
    pub pref_address: u64,
    pub init_size: u32,
}

/// Reads and checks the setup header.
pub fn setup_header(image: &[u8]) -> Result<SetupHeader, VmError> {
    if !is_linux(image) {
        return Err(bad(
            "no setup header (boot flag 0xAA55 at 0x1FE and \"HdrS\" at 0x202)".into()
        ));
    }
    let truncated = |field: &str| bad(format!("the file ends inside the setup header ({field})"));
    let version = u16_at(image, off::VERSION).ok_or_else(|| truncated("version"))?;
    if version < MIN_VERSION {
        return Err(bad(format!(
            "boot protocol {}.{:02} is older than {}.{:02}, the oldest this loader supports",
            version >> 8,
            version & 0xFF,
            MIN_VERSION >> 8,
            MIN_VERSION & 0xFF
        )));
    }
    let loadflags = *image.get(off::LOADFLAGS).ok_or_else(|| truncated("loadflags"))?;
    if loadflags & LOADED_HIGH == 0 {
        return Err(bad(
            "a zImage (loaded below 1 MiB) rather than a bzImage; only bzImages load".into(),
        ));
    }
    let setup_sects = match image[off::SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let setup_len = (setup_sects + 1) * 512;
    let header_end = off::HEADER + usize::from(*image.get(off::JUMP + 1).ok_or_else(|| truncated("jump"))?);
    if header_end > setup_len || header_end > image.len() {
        return Err(bad(format!(
            "the setup header claims to end at {header_end:#x}, past the setup code or the file"
        )));
    }
    let field = |at: usize, name: &str| {
        u32_at(image, at)
            .filter(|_| at + 4 <= header_end)
            .ok_or_else(|| truncated(name))
    };
    let initrd_addr_max = field(off::INITRD_ADDR_MAX, "initrd_addr_max")?;
    let cmdline_size = field(off::CMDLINE_SIZE, "cmdline_size")?;
    let (pref_address, init_size) = if version >= 0x020A {
        (
            u64_at(image, off::PREF_ADDRESS)
                .filter(|_| off::PREF_ADDRESS + 8 <= header_end)
                .ok_or_else(|| truncated("pref_address"))?,
            field(off::INIT_SIZE, "init_size")?,
        )
    } else {
        (0, 0)
    };
    if image.len() <= setup_len {
        return Err(bad(format!(
            "the file ends ({} bytes) before its protected-mode code (after {setup_len} bytes of setup)",
            image.len()
        )));
    }
    Ok(SetupHeader {
        version,
        setup_len,
        header_end,
        initrd_addr_max,
        cmdline_size,
        pref_address,
        init_size,
    })
}

/// Loads a bzImage with an optional initrd and a command line; the entry
/// state.
pub fn load_linux(
    platform: &mut Platform,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<CpuState, VmError> {
    let hdr = setup_header(image)?;
    let ram = platform.mem.ram_size() as u64;
    let kernel = &image[hdr.setup_len..];
    let kernel_end = u64::from(KERNEL_ADDR) + kernel.len() as u64;
    // The kernel decompresses itself to pref_address and needs init_size
    // bytes from there (or from where it was loaded, if that is higher).
    let needed = kernel_end.max(hdr.pref_address.max(u64::from(KERNEL_ADDR)) + u64::from(hdr.init_size));
    let map = super::e820_map(ram);
    // The usable RAM above 1 MiB, as the e820 map tells the kernel.
    let usable_top = map
        .iter()
        .find(|e| e.kind == 1 && e.base == 0x10_0000)
        .map_or(0, |e| e.base + e.len);
    if needed > usable_top {
        return Err(bad(format!(
            "it needs RAM up to {needed:#x} to load and decompress (protocol {}.{:02}, init_size {:#x}), \
             but usable RAM ends at {usable_top:#x}; give the machine more (--mem)",
            hdr.version >> 8,
            hdr.version & 0xFF,
            hdr.init_size
        )));
    }
    if cmdline.len() as u64 > u64::from(hdr.cmdline_size) || cmdline.contains('\0') {
        return Err(bad(format!(
            "the command line is {} bytes; this kernel takes at most {} (and no NUL)",
            cmdline.len(),
            hdr.cmdline_size
        )));
    }
    platform.mem.load(KERNEL_ADDR, kernel)?;

    let mut zero = vec![0u8; 4096];
    zero[off::SETUP_SECTS..hdr.header_end].copy_from_slice(&image[off::SETUP_SECTS..hdr.header_end]);
    let put32 = |z: &mut [u8], at: usize, v: u32| z[at..at + 4].copy_from_slice(&v.to_le_bytes());
    zero[off::TYPE_OF_LOADER] = LOADER_UNDEFINED;
    put32(&mut zero, off::CODE32_START, KERNEL_ADDR);
    put32(&mut zero, off::CMD_LINE_PTR, CMDLINE);
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    platform.mem.load(CMDLINE, &line)?;

    if let Some(initrd) = initrd {
        // As high as the kernel allows, page-aligned, as QEMU places it.
        let limit = (u64::from(hdr.initrd_addr_max) + 1).min(usable_top);
        let size = initrd.len() as u64;
        let addr = limit.saturating_sub(size) & !0xFFF;
        if size == 0 || size > limit || addr < needed {
            return Err(bad(format!(
                "the initrd ({size} bytes) does not fit between the kernel's end at {needed:#x} and {limit:#x} \
                 (the lower of the kernel's initrd limit and the end of usable RAM); give the machine more RAM \
                 (--mem)"
            )));
        }
        // Both below 4 GiB: `limit` is.
        platform.mem.load(addr as u32, initrd)?;
        put32(&mut zero, off::RAMDISK_IMAGE, addr as u32);
        put32(&mut zero, off::RAMDISK_SIZE, size as u32);
    }

    let entries: Vec<_> = map.iter().filter(|e| e.len > 0).take(E820_MAX).collect();
    zero[off::E820_ENTRIES] = entries.len() as u8;
    for (i, e) in entries.iter().enumerate() {
        let at = off::E820_TABLE + i * 20;
        zero[at..at + 8].copy_from_slice(&e.base.to_le_bytes());
        zero[at + 8..at + 16].copy_from_slice(&e.len.to_le_bytes());
        put32(&mut zero, at + 16, e.kind);
    }
    // The memory above 1 MiB in KiB, for kernels that look before e820.
    let above = ((usable_top - 0x10_0000) >> 10) as u32;
    put32(&mut zero, off::ALT_MEM_K, above);
    zero[off::EXT_MEM_K..off::EXT_MEM_K + 2].copy_from_slice(&(above.min(0xFC00) as u16).to_le_bytes());
    platform.mem.load(ZERO_PAGE, &zero)?;

    // The protocol's GDT: __BOOT_CS at 0x10, __BOOT_DS at 0x18.
    super::install_gdt(platform, GDT, &[0, 0, super::code_desc(), super::data_desc()])?;
    let mut st = super::protected_flat_state(BOOT_CS, BOOT_DS);
    st.gdtr = TableReg {
        base: GDT,
        limit: 4 * 8 - 1,
    };
    st.eip = KERNEL_ADDR;
    st.regs[reg::ESI] = ZERO_PAGE;
    debug_assert_eq!(st.segs[SegReg::Cs as usize].selector, BOOT_CS);
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: a setup header of protocol `version`, one setup
    /// sector, and `code` as the protected-mode kernel.
    pub(crate) fn bzimage(version: u16, code: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[off::SETUP_SECTS] = 1;
        b[off::BOOT_FLAG..off::BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        b[off::JUMP] = 0xEB;
        b[off::JUMP + 1] = 0x66; // the header runs to 0x268
        b[off::HEADER..off::HEADER + 4].copy_from_slice(&HDRS.to_le_bytes());
        b[off::VERSION..off::VERSION + 2].copy_from_slice(&version.to_le_bytes());
        b[off::LOADFLAGS] = LOADED_HIGH;
        b[off::CODE32_START..off::CODE32_START + 4].copy_from_slice(&KERNEL_ADDR.to_le_bytes());
        b[off::INITRD_ADDR_MAX..off::INITRD_ADDR_MAX + 4].copy_from_slice(&0x37FF_FFFFu32.to_le_bytes());
        b[off::CMDLINE_SIZE..off::CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        b[off::PREF_ADDRESS..off::PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[off::INIT_SIZE..off::INIT_SIZE + 4].copy_from_slice(&0x80_0000u32.to_le_bytes());
        b.extend_from_slice(code);
        b
    }

    fn read32(p: &mut Platform, addr: u32) -> u32 {
        use crate::bus::Bus;
        p.read_phys(addr, 4, 0)
    }

    #[test]
    fn a_bzimage_loads_with_its_zero_page_initrd_and_command_line() {
        let mut p = Platform::new(64 << 20, 0);
        let image = bzimage(0x020F, &[0xF4; 16]);
        let initrd = vec![0x5A; 10_000];
        let st = load_linux(&mut p, &image, Some(&initrd), "console=ttyS0 quiet").expect("loads");
        assert_eq!(st.eip, KERNEL_ADDR);
        assert_eq!(st.regs[reg::ESI], ZERO_PAGE);
        assert_eq!(st.segs[SegReg::Cs as usize].selector, BOOT_CS);
        assert_eq!(st.segs[SegReg::Ds as usize].selector, BOOT_DS);
        assert_eq!(st.eflags & crate::cpu::state::flags::IF, 0, "interrupts off");
        assert_eq!(p.mem.ram()[KERNEL_ADDR as usize], 0xF4);
        let z = ZERO_PAGE as usize;
        assert_eq!(&p.mem.ram()[z + off::HEADER..z + off::HEADER + 4], b"HdrS");
        assert_eq!(p.mem.ram()[z + off::TYPE_OF_LOADER], LOADER_UNDEFINED);
        let cmd = read32(&mut p, ZERO_PAGE + off::CMD_LINE_PTR as u32) as usize;
        assert_eq!(&p.mem.ram()[cmd..cmd + 20], b"console=ttyS0 quiet\0");
        let rd = read32(&mut p, ZERO_PAGE + off::RAMDISK_IMAGE as u32);
        let rd_size = read32(&mut p, ZERO_PAGE + off::RAMDISK_SIZE as u32);
        assert_eq!(rd_size, 10_000);
        assert_eq!(rd % 4096, 0, "page-aligned");
        assert!(
            u64::from(rd) + 10_000 <= (64 << 20) - 0x2_0000,
            "below the reserved top of RAM"
        );
        assert!(rd >= 0x180_0000, "above the decompressed kernel");
        assert_eq!(p.mem.ram()[rd as usize], 0x5A);
        let entries = p.mem.ram()[z + off::E820_ENTRIES] as usize;
        assert_eq!(entries, super::super::e820_map(64 << 20).len());
        let at = z + off::E820_TABLE + 3 * 20;
        let base = u64::from_le_bytes(p.mem.ram()[at..at + 8].try_into().unwrap());
        let kind = u32::from_le_bytes(p.mem.ram()[at + 16..at + 20].try_into().unwrap());
        assert_eq!((base, kind), (0x10_0000, 1));
        // The GDT the selectors name: flat code at 0x10, flat data at 0x18.
        let code = u64::from_le_bytes(p.mem.ram()[GDT as usize + 16..GDT as usize + 24].try_into().unwrap());
        assert_eq!(code, super::super::code_desc());
    }

    #[test]
    fn bad_images_and_arguments_are_refused_naming_the_problem() {
        let mut p = Platform::new(64 << 20, 0);
        let good = bzimage(0x020F, &[0x90; 64]);
        let refuse = |p: &mut Platform, image: &[u8], initrd: Option<&[u8]>, cmdline: &str| {
            load_linux(p, image, initrd, cmdline).expect_err("refused").to_string()
        };
        let e = refuse(&mut p, &good[..0x300], None, "");
        assert!(
            e.contains("ends") && e.contains("before its protected-mode code"),
            "{e}"
        );
        let e = refuse(&mut p, &good[..0x204], None, "");
        assert!(e.contains("no setup header"), "{e}");
        let e = refuse(&mut p, &bzimage(0x0204, &[0x90]), None, "");
        assert!(e.contains("boot protocol 2.04 is older than 2.06"), "{e}");
        let mut zimage = good.clone();
        zimage[off::LOADFLAGS] = 0;
        assert!(refuse(&mut p, &zimage, None, "").contains("zImage"));
        let mut long_header = good.clone();
        long_header[off::JUMP + 1] = 0xFF;
        long_header[off::SETUP_SECTS] = 0; // 4 sectors: the header fits; the file is shorter
        assert!(refuse(&mut p, &long_header[..0x280], None, "").contains("past the setup code or the file"));
        let e = refuse(&mut p, &good, None, &"x".repeat(2048));
        assert!(e.contains("2048 bytes; this kernel takes at most 2047"), "{e}");
        let e = refuse(&mut p, &good, Some(&vec![1; 60 << 20]), "");
        assert!(e.contains("initrd") && e.contains("does not fit"), "{e}");
        let e = refuse(&mut p, &good, Some(&[]), "");
        assert!(e.contains("initrd (0 bytes)"), "{e}");
        let mut small = Platform::new(16 << 20, 0);
        let e = refuse(&mut small, &good, None, "");
        assert!(e.contains("needs RAM up to 0x1800000"), "{e}");
    }
}
