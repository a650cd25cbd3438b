//! Multiboot v1 kernels (ELF32 or with the a.out-kludge address fields) as
//! GRUB and `qemu -kernel` load them.
//!
//! Multiboot Specification 0.6.96: 3.1 (the OS image header), 3.2 (machine
//! state at entry), 3.3 (the boot information structure).

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::program_header::{self, ProgramHeader};
use goblin::elf::{header, Elf};

use super::{e820_map, install_boot_gdt, multiboot_entry_state, Module, ADDR_LIMIT, GDT_ADDR};
use crate::cpu::state::reg;
use crate::cpu::CpuState;
use crate::mem::PAGE_SIZE;
use crate::platform::Platform;
use crate::VmError;

pub const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;

pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// The header must lie 32-bit aligned within the first 8192 bytes.
const HEADER_SEARCH: usize = 8192;

/// Header flag 16: the a.out-kludge address fields are valid.
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// Required-feature bits we cannot honour (bits 0-2 are alignment, memory
/// info and video mode; the rest of 0-15 are reserved and must be refused).
const UNSUPPORTED_REQUIRED: u32 = 0xFFF8;

/// Where the loader puts the boot information structure and everything it
/// points to, after the GDT (`super::GDT_ADDR`): below 0x9FC00 and above
/// the real-mode IVT and BIOS data area, where GRUB puts them too.
const INFO_ADDR: u32 = 0x1000;

const INFO_END: u32 = 0x9_0000;

/// The conventional memory a kernel loaded below 1 MiB leaves the loader:
/// above the real-mode IVT and BIOS data area, below the EBDA.
const LOW_START: u64 = GDT_ADDR as u64;
const LOW_END: u64 = 0x9_F000;

/// Where the loader's own structures go: the GDT at `gdt`, the boot
/// information at `info`, what it points to up to `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoaderArea {
    gdt: u32,
    info: u32,
    end: u32,
}

impl LoaderArea {
    /// The usual place (GDT at 0x800, information at 0x1000, as GRUB), or,
    /// for a kernel that loads there (some load at 0x8000, and QEMU boots
    /// them), the largest stretch of conventional memory the kernel's
    /// `start..end` leaves free.
    fn clear_of(start: u64, end: u64) -> Result<LoaderArea, VmError> {
        if start >= u64::from(INFO_END) || end <= LOW_START {
            return Ok(LoaderArea {
                gdt: GDT_ADDR,
                info: INFO_ADDR,
                end: INFO_END,
            });
        }
        let below = (LOW_START, start.clamp(LOW_START, LOW_END));
        let above = (end.div_ceil(16) * 16, LOW_END);
        let (from, to) = [below, above]
            .into_iter()
            .filter(|(a, b)| a < b)
            .max_by_key(|(a, b)| b - a)
            .filter(|(a, b)| b - a >= 0x1000)
            .ok_or_else(|| {
                VmError::BadImage(format!(
                    "the kernel loads at {start:#x}-{end:#x} and leaves no room for the boot information \
                     area (4 KiB of conventional memory, {LOW_START:#x}-{LOW_END:#x})"
                ))
            })?;
        // Below LOW_END, so 32-bit.
        let (from, to) = (from as u32, to as u32);
        Ok(LoaderArea {
            gdt: from,
            info: from + 0x20,
            end: to,
        })
    }
}

/// The parsed multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    offset: usize,
    flags: u32,
    /// The a.out-kludge address fields, if the file holds all of them.
    addrs: Option<AoutAddrs>,
}

/// The a.out-kludge address fields (spec 3.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AoutAddrs {
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn find_header(image: &[u8]) -> Option<Header> {
    let limit = image.len().min(HEADER_SEARCH);
    (0..limit.saturating_sub(11)).step_by(4).find_map(|off| {
        let magic = le32(image, off)?;
        let flags = le32(image, off + 4)?;
        let checksum = le32(image, off + 8)?;
        if magic != MULTIBOOT_HEADER_MAGIC || magic.wrapping_add(flags).wrapping_add(checksum) != 0 {
            return None;
        }
        let field = |i: usize| le32(image, off + 12 + 4 * i);
        let addrs = (|| {
            Some(AoutAddrs {
                header_addr: field(0)?,
                load_addr: field(1)?,
                load_end_addr: field(2)?,
                bss_end_addr: field(3)?,
                entry_addr: field(4)?,
            })
        })();
        Some(Header {
            offset: off,
            flags,
            addrs,
        })
    })
}

/// Whether `image` carries a multiboot v1 header.
pub fn is_multiboot(image: &[u8]) -> bool {
    find_header(image).is_some()
}

/// Loads a multiboot kernel and its modules into RAM, writes the boot
/// information structure, and returns the entry state the spec defines.
pub fn load_multiboot(
    platform: &mut Platform,
    image: &[u8],
    cmdline: &str,
    modules: &[Module],
) -> Result<CpuState, VmError> {
    let hdr = find_header(image).ok_or_else(|| {
        let what = if image.starts_with(b"\x7fELF") {
            "an ELF file"
        } else {
            "a file"
        };
        VmError::NotMultiboot(format!(
            "{what} with no multiboot v1 header (magic 0x1BADB002 with a valid checksum) in its first 8192 bytes"
        ))
    })?;
    if hdr.flags & UNSUPPORTED_REQUIRED != 0 {
        return Err(VmError::NotMultiboot(format!(
            "the header requires features this loader does not have (flags {:#x})",
            hdr.flags
        )));
    }
    let (entry, image_start, image_end) = if hdr.flags & FLAG_AOUT_KLUDGE != 0 {
        let addrs = hdr.addrs.ok_or_else(|| {
            VmError::BadImage(
                "multiboot a.out-kludge fields: the header is truncated (flag 16 says its address fields \
                 follow, but the file ends first)"
                    .into(),
            )
        })?;
        load_aout_kludge(platform, image, hdr.offset, &addrs)?
    } else {
        load_elf(platform, image)?
    };
    let area = LoaderArea::clear_of(image_start, image_end)?;
    install_boot_gdt(platform, area.gdt)?;
    let info_addr = write_boot_info(platform, area, cmdline, modules, image_end)?;
    let mut st = multiboot_entry_state(area.gdt);
    st.eip = entry;
    st.regs[reg::EAX] = MULTIBOOT_BOOTLOADER_MAGIC;
    st.regs[reg::EBX] = info_addr;
    Ok(st)
}

/// The RAM a loader may fill: all of it, up to 4 GiB.
fn loadable_ram(platform: &Platform) -> u64 {
    (platform.mem.ram_size() as u64).min(ADDR_LIMIT)
}

/// Returns the entry point and the end of the image (bss included).
fn load_aout_kludge(
    platform: &mut Platform,
    image: &[u8],
    offset: usize,
    a: &AoutAddrs,
) -> Result<(u32, u64, u64), VmError> {
    let bad = |why: String| VmError::BadImage(format!("multiboot a.out-kludge fields: {why}"));
    let ram = loadable_ram(platform);
    // header_addr - load_addr is how far into the loaded image the header
    // lies, which fixes the file offset loading starts from.
    let skip = a.header_addr.checked_sub(a.load_addr).ok_or_else(|| {
        bad(format!(
            "header_addr {:#x} is below load_addr {:#x}",
            a.header_addr, a.load_addr
        ))
    })?;
    let file_start = usize::try_from(skip)
        .ok()
        .and_then(|skip| offset.checked_sub(skip))
        .ok_or_else(|| {
            bad(format!(
                "header_addr - load_addr is {skip:#x} but the header is at file offset {offset:#x}, \
                 so load_addr is before the file's start"
            ))
        })?;
    let available = image.len().saturating_sub(file_start);
    let load_len = if a.load_end_addr == 0 {
        available
    } else {
        let len = a.load_end_addr.checked_sub(a.load_addr).ok_or_else(|| {
            bad(format!(
                "load_end_addr {:#x} is below load_addr {:#x}",
                a.load_end_addr, a.load_addr
            ))
        })?;
        usize::try_from(len).map_err(|_| bad(format!("{len} bytes to load do not fit in host memory")))?
    };
    let data = image
        .get(file_start..)
        .and_then(|rest| rest.get(..load_len))
        .ok_or_else(|| bad(format!("{load_len} bytes to load but the file has {available}")))?;
    let load_end = u64::from(a.load_addr) + load_len as u64;
    if load_end > ADDR_LIMIT {
        return Err(bad(format!(
            "the image would end beyond 4 GiB (load_addr {:#x}, {load_len} bytes)",
            a.load_addr
        )));
    }
    let end = if a.bss_end_addr == 0 {
        load_end
    } else if u64::from(a.bss_end_addr) < load_end {
        return Err(bad(format!(
            "bss_end_addr {:#x} is below the loaded image's end {load_end:#x}",
            a.bss_end_addr
        )));
    } else {
        u64::from(a.bss_end_addr)
    };
    if end > ram {
        return Err(VmError::DoesNotFit {
            addr: u64::from(a.load_addr),
            len: end - u64::from(a.load_addr),
            ram,
        });
    }
    platform.mem.load(a.load_addr, data)?;
    if end > load_end {
        // RAM starts zeroed, but the loader writing the bss is what marks
        // its pages written for snapshots.
        let bss = u32::try_from(load_end).map_err(|_| VmError::DoesNotFit {
            addr: load_end,
            len: end - load_end,
            ram,
        })?;
        platform.mem.fill(bss, end - load_end, 0)?;
    }
    Ok((a.entry_addr, u64::from(a.load_addr), end))
}

/// A PT_LOAD segment checked to lie in RAM.
struct LoadSegment<'a> {
    paddr: u32,
    vaddr: u64,
    /// End of its memory image (bss included), at most 4 GiB.
    end: u64,
    data: &'a [u8],
}

/// Returns the entry point and the end of the highest segment.
fn load_elf(platform: &mut Platform, image: &[u8]) -> Result<(u32, u64, u64), VmError> {
    let bad = |reason: String| VmError::BadElf { reason, source: None };
    // Only the ELF header and the program headers: a loader needs nothing
    // else, so mangled or stripped section headers cannot get a kernel
    // refused, and less of the file is interpreted.
    let eh = Elf::parse_header(image).map_err(|e| VmError::BadElf {
        reason: "the multiboot header has no a.out-kludge fields, so the kernel must be ELF, but it does not parse"
            .into(),
        source: Some(e),
    })?;
    let class = eh.e_ident[header::EI_CLASS];
    if eh.e_ident[header::EI_DATA] != header::ELFDATA2LSB {
        return Err(bad(
            "a multiboot kernel must be a little-endian ELF (this one is not)".into()
        ));
    }
    if class != header::ELFCLASS32 || eh.e_machine != header::EM_386 {
        return Err(bad(format!(
            "a multiboot kernel must be a 32-bit x86 ELF (this one is {}, machine {})",
            match class {
                header::ELFCLASS32 => "32-bit",
                header::ELFCLASS64 => "64-bit",
                _ => "of unknown class",
            },
            eh.e_machine
        )));
    }
    if eh.e_type != header::ET_EXEC {
        return Err(bad(format!("not an executable ELF (type {})", eh.e_type)));
    }
    let phent = program_header::program_header32::SIZEOF_PHDR;
    if eh.e_phnum > 0 && usize::from(eh.e_phentsize) != phent {
        return Err(bad(format!(
            "program header entries of {} bytes (ELF32 has {phent})",
            eh.e_phentsize
        )));
    }
    let phdrs = usize::try_from(eh.e_phoff)
        .map_err(|_| bad(format!("program header offset {:#x} is beyond the file", eh.e_phoff)))
        .and_then(|phoff| {
            ProgramHeader::parse(
                image,
                phoff,
                usize::from(eh.e_phnum),
                Ctx::new(Container::Little, Endian::Little),
            )
            .map_err(|e| VmError::BadElf {
                reason: format!(
                    "{} program headers at file offset {:#x} run past the file's {} bytes",
                    eh.e_phnum,
                    eh.e_phoff,
                    image.len()
                ),
                source: Some(e),
            })
        })?;
    let ram = loadable_ram(platform);
    let mut segs = Vec::new();
    for ph in phdrs.iter().filter(|p| p.p_type == program_header::PT_LOAD) {
        if ph.p_filesz > ph.p_memsz {
            return Err(bad(format!(
                "segment at {:#x} has filesz {:#x} larger than memsz {:#x}",
                ph.p_paddr, ph.p_filesz, ph.p_memsz
            )));
        }
        if ph.p_memsz == 0 {
            continue;
        }
        let data = usize::try_from(ph.p_offset)
            .ok()
            .zip(usize::try_from(ph.p_filesz).ok())
            .and_then(|(off, len)| image.get(off..off.checked_add(len)?))
            .ok_or_else(|| {
                bad(format!(
                    "segment data at file offset {:#x} (+{:#x}) is beyond the file's {} bytes",
                    ph.p_offset,
                    ph.p_filesz,
                    image.len()
                ))
            })?;
        let paddr = u32::try_from(ph.p_paddr)
            .map_err(|_| bad(format!("segment physical address {:#x} is not 32-bit", ph.p_paddr)))?;
        let end = u64::from(paddr).saturating_add(ph.p_memsz);
        if end > ram {
            return Err(VmError::DoesNotFit {
                addr: u64::from(paddr),
                len: ph.p_memsz,
                ram,
            });
        }
        segs.push(LoadSegment {
            paddr,
            vaddr: ph.p_vaddr,
            end,
            data,
        });
    }
    if segs.is_empty() {
        return Err(bad("no loadable segments".into()));
    }
    // Overlapping segments would overwrite each other (a later bss zeroing
    // an earlier segment's code) in an order the file does not define.
    let mut by_addr: Vec<&LoadSegment> = segs.iter().collect();
    by_addr.sort_by_key(|s| s.paddr);
    if let Some(w) = by_addr.windows(2).find(|w| u64::from(w[1].paddr) < w[0].end) {
        return Err(bad(format!(
            "segments at {:#x}-{:#x} and {:#x}-{:#x} overlap",
            w[0].paddr, w[0].end, w[1].paddr, w[1].end
        )));
    }
    let mut entry =
        u32::try_from(eh.e_entry).map_err(|_| bad(format!("entry point {:#x} is not 32-bit", eh.e_entry)))?;
    let mut end = 0;
    let start = segs.iter().map(|s| u64::from(s.paddr)).min().unwrap_or(0);
    for s in &segs {
        platform.mem.load(s.paddr, s.data)?;
        let bss = u64::from(s.paddr) + s.data.len() as u64;
        if s.end > bss {
            // Below `s.end`, itself at most 4 GiB: a 32-bit address.
            let at = u32::try_from(bss).map_err(|_| VmError::DoesNotFit {
                addr: bss,
                len: s.end - bss,
                ram,
            })?;
            platform.mem.fill(at, s.end - bss, 0)?;
        }
        end = end.max(s.end);
        // A kernel linked at a virtual address gets its entry translated to
        // the physical load address, as QEMU does.
        let memsz = s.end - u64::from(s.paddr);
        if s.vaddr != u64::from(s.paddr) && u64::from(entry) >= s.vaddr && u64::from(entry) - s.vaddr < memsz {
            // Below `s.end` again.
            entry = u32::try_from(u64::from(entry) - s.vaddr + u64::from(s.paddr)).unwrap_or(entry);
        }
    }
    Ok((entry, start, end))
}

/// A simple bump allocator for the loader's structures below 640 KiB.
struct InfoArea {
    next: u32,
    end: u32,
}

impl InfoArea {
    fn put(&mut self, platform: &mut Platform, bytes: &[u8]) -> Result<u32, VmError> {
        let addr = self.next;
        let end = addr as usize + bytes.len();
        if end > self.end as usize {
            return Err(VmError::BadImage(format!(
                "boot information (command lines, module list) does not fit below {:#x}",
                self.end
            )));
        }
        platform.mem.load(addr, bytes)?;
        self.next = (end as u32 + 3) & !3;
        Ok(addr)
    }

    fn put_str(&mut self, platform: &mut Platform, s: &str) -> Result<u32, VmError> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(platform, &b)
    }
}

fn write_boot_info(
    platform: &mut Platform,
    loader: LoaderArea,
    cmdline: &str,
    modules: &[Module],
    image_end: u64,
) -> Result<u32, VmError> {
    let ram = platform.mem.ram_size() as u64;
    let page = PAGE_SIZE as u64;
    let mut area = InfoArea {
        next: loader.info + 0x80,
        end: loader.end,
    };
    let cmdline_addr = area.put_str(platform, cmdline)?;
    let loader_name = area.put_str(platform, concat!("ringback ", env!("CARGO_PKG_VERSION")))?;

    let mut mmap = Vec::new();
    let map = e820_map(ram);
    for e in &map {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.base.to_le_bytes());
        mmap.extend_from_slice(&e.len.to_le_bytes());
        mmap.extend_from_slice(&e.kind.to_le_bytes());
    }
    let mmap_addr = area.put(platform, &mmap)?;

    // Modules go page-aligned after the kernel, as QEMU places them, and
    // never into the loader's own area.
    // An empty module takes no room: it starts and ends where the next
    // one starts, which may be the very top of RAM.
    let mut next = image_end.max(u64::from(INFO_END)).max(u64::from(loader.end));
    if (LOW_END..0x10_0000).contains(&next) {
        // Not into the EBDA, the video memory or the BIOS.
        next = 0x10_0000;
    }
    let mut next = next.div_ceil(page) * page;
    let mut mod_list = Vec::new();
    for m in modules {
        let len = m.data.len() as u64;
        let end = next.saturating_add(len);
        let does_not_fit = VmError::DoesNotFit { addr: next, len, ram };
        // Both ends go into 32-bit fields of the module list.
        let (Ok(start), Ok(end32)) = (u32::try_from(next), u32::try_from(end)) else {
            return Err(does_not_fit);
        };
        platform.mem.load(start, &m.data)?;
        let string = area.put_str(platform, &m.cmdline)?;
        for v in [start, end32, string, 0] {
            mod_list.extend_from_slice(&v.to_le_bytes());
        }
        next = end.div_ceil(page) * page;
    }
    let mods_addr = if mod_list.is_empty() {
        area.next
    } else {
        area.put(platform, &mod_list)?
    };

    let low = map[0].len / 1024;
    let upper = map[3].len / 1024;
    let mut info = [0u32; 22];
    info[0] = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9);
    info[1] = low as u32;
    info[2] = upper as u32;
    info[3] = 0x8000_FFFF; // boot device: first hard disk, no partition
    info[4] = cmdline_addr;
    info[5] = modules.len() as u32;
    info[6] = mods_addr;
    info[11] = mmap.len() as u32;
    info[12] = mmap_addr;
    info[16] = loader_name;
    let bytes: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();
    platform.mem.load(loader.info, &bytes)?;
    Ok(loader.info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_must_checksum() {
        let mut img = vec![0u8; 64];
        img[8..12].copy_from_slice(&MULTIBOOT_HEADER_MAGIC.to_le_bytes());
        img[12..16].copy_from_slice(&3u32.to_le_bytes());
        img[16..20].copy_from_slice(&0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC + 3).to_le_bytes());
        assert_eq!(find_header(&img).map(|h| h.offset), Some(8));
        img[16] ^= 1;
        assert!(find_header(&img).is_none());
        assert!(find_header(&img[..10]).is_none());
    }

    #[test]
    fn a_kludge_header_cut_before_its_address_fields_is_refused() {
        let mut p = Platform::new(4 << 20, 0);
        for len in 12..32 {
            let mut img = aout_image(0x10_0000, &[], 0);
            img.truncate(len);
            // Before, the missing fields read as zero: the file loaded at
            // address 0, over the real-mode IVT.
            let err = load_multiboot(&mut p, &img, "", &[]).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{len} bytes: {err}");
        }
    }

    #[test]
    fn garbage_images_are_refused_with_errors() {
        let mut p = Platform::new(4 << 20, 0);
        assert!(matches!(
            load_multiboot(&mut p, b"\x7fELF garbage", "", &[]),
            Err(VmError::NotMultiboot(_))
        ));
        // A valid header claiming ELF, followed by no ELF at all.
        let mut img = vec![0u8; 64];
        img[0..4].copy_from_slice(&MULTIBOOT_HEADER_MAGIC.to_le_bytes());
        img[8..12].copy_from_slice(&0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC).to_le_bytes());
        assert!(matches!(
            load_multiboot(&mut p, &img, "", &[]),
            Err(VmError::BadElf { .. })
        ));
        // a.out kludge whose load range runs past the file.
        let flags = FLAG_AOUT_KLUDGE;
        img[4..8].copy_from_slice(&flags.to_le_bytes());
        img[8..12].copy_from_slice(
            &0u32
                .wrapping_sub(MULTIBOOT_HEADER_MAGIC.wrapping_add(flags))
                .to_le_bytes(),
        );
        for (i, v) in [0x10_0000u32, 0x10_0000, 0x20_0000, 0, 0x10_0000].iter().enumerate() {
            img[12 + 4 * i..16 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        assert!(matches!(
            load_multiboot(&mut p, &img, "", &[]),
            Err(VmError::BadImage(_))
        ));
    }

    /// An a.out-kludge image of `code` loaded at `load` (entry there too),
    /// with `bss` bytes after it.
    fn aout_image(load: u32, code: &[u8], bss: u32) -> Vec<u8> {
        let flags = FLAG_AOUT_KLUDGE;
        let mut img = vec![0u8; 32];
        img[0..4].copy_from_slice(&MULTIBOOT_HEADER_MAGIC.to_le_bytes());
        img[4..8].copy_from_slice(&flags.to_le_bytes());
        img[8..12].copy_from_slice(
            &0u32
                .wrapping_sub(MULTIBOOT_HEADER_MAGIC.wrapping_add(flags))
                .to_le_bytes(),
        );
        let load_end = load + 32 + code.len() as u32;
        for (i, v) in [load, load, load_end, load_end + bss, load + 32].iter().enumerate() {
            img[12 + 4 * i..16 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        img.extend_from_slice(code);
        img
    }

    // A kernel at 0x8000, where the boot information usually lies, boots
    // as under QEMU: the GDT and the information move out of its way, and
    // what EBX points to is intact after the load.
    #[test]
    fn a_kernel_in_conventional_memory_gets_its_boot_information_elsewhere() {
        for (load, bss) in [(0x8000u32, 0x1000u32), (0x1000, 0x8_0000), (0x600, 0x4000)] {
            let mut p = Platform::new(4 << 20, 0);
            let code = [0xFA, 0xF4];
            let img = aout_image(load, &code, bss);
            let st = load_multiboot(&mut p, &img, "console=ttyS0", &[]).expect("boots");
            let kernel = u64::from(load)..u64::from(load) + img.len() as u64 + u64::from(bss);
            let info = st.regs[reg::EBX];
            let gdt = st.gdtr.base;
            for (what, at, len) in [("info", info, 88u64), ("gdt", gdt, 24)] {
                let r = u64::from(at)..u64::from(at) + len;
                assert!(
                    r.end <= kernel.start || r.start >= kernel.end,
                    "{what} at {at:#x} in {kernel:x?}"
                );
            }
            assert_eq!(st.eip, load + 32);
            let mut bytes = [0u8; 2];
            p.mem.read_bytes(load + 32, &mut bytes);
            assert_eq!(bytes, code, "the kernel is intact");
            let cmdline = p.mem.read(info + 16, 4);
            let mut text = [0u8; 14];
            p.mem.read_bytes(cmdline, &mut text);
            assert_eq!(&text, b"console=ttyS0\0");
            assert_eq!(p.mem.read(gdt + 8, 4), 0xFFFF, "the flat code descriptor");
        }
    }
}
