//! Hostile boot images: multiboot kernels (ELF32 and a.out kludge), modules
//! and flat binaries generated here, their header fields pushed to every edge.
//! Booting one must give a machine or a clear error, never a panic or a hang;
//! the legitimate edges (an image ending exactly at the top of RAM, an empty
//! module) must boot.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use vm::boot::{Module, MULTIBOOT_BOOTLOADER_MAGIC, MULTIBOOT_HEADER_MAGIC};
use vm::cpu::state::reg;
use vm::host::NoInput;
use vm::machine::{CaptureConsole, Kernel, Machine};

use common::ringback;

/// 512 pages, a whole number of 64-page dirty-bitmap words: a page index one
/// past the end falls outside the bitmap instead of into a spare bit.
const RAM: u64 = 2 << 20;
const TOP: u32 = RAM as u32;
const PAGE: u32 = 4096;
const MIB: u32 = 0x10_0000;
/// `cli; hlt`: a kernel that stops as soon as it runs.
const CODE: [u8; 2] = [0xFA, 0xF4];
const FLAG_AOUT: u32 = 1 << 16;
/// Where the loader keeps its GDT and boot information (boot.rs).
const INFO_ADDR: u32 = 0x1000;

// Layout of the generated ELF kernels: ELF header, up to four program
// headers, the multiboot header, then the segment data.
const PHOFF: usize = 0x34;
const PHENT: usize = 32;
const MB_OFF: usize = 0xC0;
const DATA_OFF: usize = 0x100;
const PT_LOAD: u32 = 1;

fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(f: &mut [u8], off: usize, v: u32) {
    f[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(f: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([f[off], f[off + 1], f[off + 2], f[off + 3]])
}

/// Writes a multiboot header at `off` with a valid checksum; `addrs` are the
/// a.out-kludge fields (header, load, load_end, bss_end, entry).
fn put_mb_header(f: &mut [u8], off: usize, flags: u32, addrs: Option<[u32; 5]>) {
    put32(f, off, MULTIBOOT_HEADER_MAGIC);
    put32(f, off + 4, flags);
    put32(
        f,
        off + 8,
        0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC.wrapping_add(flags)),
    );
    for (i, v) in addrs.into_iter().flatten().enumerate() {
        put32(f, off + 12 + 4 * i, v);
    }
}

/// Makes the checksum at `off` valid again after a field was changed.
fn fix_checksum(f: &mut [u8], off: usize) {
    let sum = get32(f, off).wrapping_add(get32(f, off + 4));
    put32(f, off + 8, 0u32.wrapping_sub(sum));
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    p_type: u32,
    offset: u32,
    vaddr: u32,
    paddr: u32,
    filesz: u32,
    memsz: u32,
}

/// A PT_LOAD segment whose file data is the kernel's body.
fn seg(paddr: u32, filesz: u32, memsz: u32) -> Seg {
    Seg {
        p_type: PT_LOAD,
        offset: DATA_OFF as u32,
        vaddr: paddr,
        paddr,
        filesz,
        memsz,
    }
}

/// A multiboot ELF32 kernel with `segs` as its program headers and `body` at
/// DATA_OFF, every field written as given, consistent or not.
fn elf(segs: &[Seg], entry: u32, body: &[u8]) -> Vec<u8> {
    assert!(PHOFF + segs.len() * PHENT <= MB_OFF, "room for the program headers");
    let mut f = vec![0u8; DATA_OFF + body.len()];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4..7].copy_from_slice(&[1, 1, 1]); // 32-bit, little-endian, version 1
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 3); // EM_386
    put32(&mut f, 20, 1);
    put32(&mut f, 24, entry);
    put32(&mut f, 28, PHOFF as u32);
    put16(&mut f, 40, 52);
    put16(&mut f, 42, PHENT as u16);
    put16(&mut f, 44, segs.len() as u16);
    put16(&mut f, 46, 40);
    for (i, s) in segs.iter().enumerate() {
        let o = PHOFF + i * PHENT;
        for (j, v) in [s.p_type, s.offset, s.vaddr, s.paddr, s.filesz, s.memsz, 5, PAGE]
            .into_iter()
            .enumerate()
        {
            put32(&mut f, o + 4 * j, v);
        }
    }
    put_mb_header(&mut f, MB_OFF, 0, None);
    f[DATA_OFF..].copy_from_slice(body);
    f
}

/// The smallest sensible kernel: `cli; hlt` loaded at 1 MiB.
fn small_elf() -> Vec<u8> {
    elf(&[seg(MIB, 2, 2)], MIB, &CODE)
}

/// An ELF kernel with one segment of `filesz` bytes of code (padded) and
/// `memsz` in memory at `paddr`, entered at its start.
fn elf_at(paddr: u32, filesz: u32, memsz: u32) -> Vec<u8> {
    let mut body = vec![0x90u8; filesz as usize];
    let n = body.len().min(CODE.len());
    body[..n].copy_from_slice(&CODE[..n]);
    elf(&[seg(paddr, filesz, memsz)], paddr, &body)
}

/// The a.out-kludge fields, named as the spec names them.
#[derive(Clone, Copy, Debug)]
struct Aout {
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
}

const AOUT_HDR: u32 = 32;

/// The fields of a kernel that loads its whole file (header and `code_len`
/// bytes of code) at `load`, with `bss` bytes of bss after it.
fn aout_fields(load: u32, code_len: u32, bss: u32) -> Aout {
    let end = load.wrapping_add(AOUT_HDR + code_len);
    Aout {
        header_addr: load,
        load_addr: load,
        load_end_addr: end,
        bss_end_addr: if bss == 0 { 0 } else { end.wrapping_add(bss) },
        entry_addr: load.wrapping_add(AOUT_HDR),
    }
}

/// An a.out-kludge kernel: the multiboot header at file offset 0, then code.
fn aout(a: Aout, code_len: usize) -> Vec<u8> {
    let mut f = vec![0x90u8; AOUT_HDR as usize + code_len];
    let n = code_len.min(CODE.len());
    f[AOUT_HDR as usize..AOUT_HDR as usize + n].copy_from_slice(&CODE[..n]);
    put_mb_header(
        &mut f,
        0,
        FLAG_AOUT,
        Some([
            a.header_addr,
            a.load_addr,
            a.load_end_addr,
            a.bss_end_addr,
            a.entry_addr,
        ]),
    );
    f
}

fn small_aout() -> Vec<u8> {
    aout(aout_fields(MIB, 2, PAGE), 2)
}

fn multiboot(image: Vec<u8>) -> Kernel {
    with_modules(image, Vec::new())
}

fn with_modules(image: Vec<u8>, modules: Vec<Module>) -> Kernel {
    Kernel::Multiboot {
        image,
        cmdline: "hostile".into(),
        modules,
    }
}

fn module(len: usize) -> Module {
    Module {
        data: vec![0xA5; len],
        cmdline: format!("mod{len}"),
    }
}

fn flat(addr: u32, len: usize) -> Kernel {
    Kernel::Flat {
        image: vec![0xF4; len],
        addr,
    }
}

enum Outcome {
    Booted(Box<Machine>),
    Refused(String),
    Panicked(String),
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-text panic".into())
}

/// Boots `kernel`; a machine that boots then runs a few instructions, so a
/// loader that left it unrunnable shows here too.
fn boot(ram: u64, kernel: &Kernel) -> Outcome {
    let booted = catch_unwind(AssertUnwindSafe(|| {
        Machine::boot(ram, kernel, &mut NoInput { rtc_start: 0 })
    }));
    let mut m = match booted {
        Err(p) => return Outcome::Panicked(panic_text(&*p)),
        Ok(Err(e)) => {
            // The message as the CLI prints it: the error and its causes.
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text += &format!(": {s}");
                src = s.source();
            }
            return Outcome::Refused(text);
        }
        Ok(Ok(m)) => m,
    };
    let pages = m.platform.mem.ram_size() / PAGE as usize;
    let dirty = m.platform.mem.take_dirty();
    if let Some(p) = dirty.iter().find(|&&p| p >= pages) {
        return Outcome::Panicked(format!("page {p} marked dirty in a RAM of {pages} pages"));
    }
    let ran = catch_unwind(AssertUnwindSafe(|| {
        m.run(200, &mut NoInput { rtc_start: 0 }, &mut CaptureConsole::default());
    }));
    match ran {
        Ok(()) => Outcome::Booted(Box::new(m)),
        Err(p) => Outcome::Panicked(format!("running the booted machine: {}", panic_text(&*p))),
    }
}

/// What a named case must do.
enum Expect {
    Boots,
    /// Refused with a message containing this text.
    Refused(&'static str),
}

struct Case {
    name: String,
    ram: u64,
    kernel: Kernel,
    expect: Expect,
}

fn case(name: impl Into<String>, kernel: Kernel, expect: Expect) -> Case {
    Case {
        name: name.into(),
        ram: RAM,
        kernel,
        expect,
    }
}

/// Runs every case and fails with the list of those that went wrong, so one
/// run shows the whole damage.
fn check_cases(cases: Vec<Case>) {
    let total = cases.len();
    let mut failures = Vec::new();
    for c in cases {
        match (boot(c.ram, &c.kernel), &c.expect) {
            (Outcome::Booted(_), Expect::Boots) => {}
            (Outcome::Refused(msg), Expect::Refused(needle)) if msg.contains(needle) => {}
            (Outcome::Booted(_), Expect::Refused(needle)) => {
                failures.push(format!("{}: booted, expected an error with {needle:?}", c.name))
            }
            (Outcome::Refused(msg), _) => failures.push(format!("{}: refused: {msg}", c.name)),
            (Outcome::Panicked(msg), _) => failures.push(format!("{}: PANIC: {msg}", c.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Boots every image in `images`: each must boot or be refused with a
/// message; panics and empty messages are collected and reported.
fn check_no_panics(what: &str, images: impl IntoIterator<Item = (String, u64, Kernel)>) -> usize {
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, ram, kernel) in images {
        n += 1;
        match boot(ram, &kernel) {
            Outcome::Booted(_) => {}
            Outcome::Refused(msg) if msg.len() > 20 => {}
            Outcome::Refused(msg) => failures.push(format!("{name}: unclear error {msg:?}")),
            Outcome::Panicked(msg) => failures.push(format!("{name}: PANIC: {msg}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {n} images failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}

const DOES_NOT_FIT: &str = "does not fit in memory";
const BOOT_INFO: &str = "boot information area";
const NO_HEADER: &str = "no multiboot v1 header";

#[test]
fn elf_kernels_at_the_edges() {
    use Expect::*;
    let mut overlap = elf(&[seg(MIB, 2, PAGE), seg(MIB + PAGE - 1, 2, 2)], MIB, &CODE);
    let mut cases = vec![
        case("valid at 1 MiB", multiboot(small_elf()), Boots),
        case(
            "data ends exactly at the top of RAM",
            multiboot(elf_at(TOP - 2, 2, 2)),
            Boots,
        ),
        case(
            "a page of data ends exactly at the top of RAM",
            multiboot(elf_at(TOP - PAGE, PAGE, PAGE)),
            Boots,
        ),
        case(
            "bss ends exactly at the top of RAM",
            multiboot(elf_at(TOP - 0x1002, 2, 0x1002)),
            Boots,
        ),
        case("all of RAM above 1 MiB", multiboot(elf_at(MIB, 2, TOP - MIB)), Boots),
        case(
            "right after the boot-info area",
            multiboot(elf_at(0x9_0000, 2, 2)),
            Boots,
        ),
        case(
            "ends where the loader's GDT starts",
            multiboot(elf_at(0x600, 2, 0x200)),
            Boots,
        ),
        case(
            "an empty PT_LOAD at the top of RAM beside a real one",
            multiboot(elf(&[seg(MIB, 2, 2), seg(TOP, 0, 0)], MIB, &CODE)),
            Boots,
        ),
        case(
            "a non-load segment claiming all of 4 GiB",
            multiboot(elf(
                &[
                    seg(MIB, 2, 2),
                    Seg {
                        p_type: 4,
                        offset: u32::MAX,
                        vaddr: u32::MAX,
                        paddr: u32::MAX,
                        filesz: u32::MAX,
                        memsz: u32::MAX,
                    },
                ],
                MIB,
                &CODE,
            )),
            Boots,
        ),
        case(
            "adjacent segments",
            multiboot(elf(&[seg(MIB, 2, PAGE), seg(MIB + PAGE, 2, 2)], MIB, &CODE)),
            Boots,
        ),
        // Where the entry points is the guest's business: it runs into
        // whatever is there, as under GRUB or QEMU.
        case(
            "entry outside every segment",
            multiboot(elf(&[seg(MIB, 2, 2)], TOP + 5, &CODE)),
            Boots,
        ),
        case(
            "a segment one byte past the top of RAM",
            multiboot(elf_at(TOP - 1, 2, 2)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "a segment at the top of RAM",
            multiboot(elf_at(TOP, 2, 2)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "bss one byte past the top of RAM",
            multiboot(elf_at(TOP - 0x1001, 2, 0x1002)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "p_memsz 0xFFFFFFFF",
            multiboot(elf_at(MIB, 2, u32::MAX)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "wraps past 4 GiB",
            multiboot(elf_at(0xFFFF_F000, 2, 0x2000)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "ends at 4 GiB",
            multiboot(elf_at(0xFFFF_FFFE, 2, 2)),
            Refused(DOES_NOT_FIT),
        ),
        // Kernels that load where the boot information usually goes boot
        // (as under QEMU): the loader moves its structures out of the way.
        case("over the boot-info area", multiboot(elf_at(INFO_ADDR, 2, 2)), Boots),
        case("one byte into the GDT", multiboot(elf_at(0x7FF, 2, 2)), Boots),
        case(
            "last byte of the boot-info area",
            multiboot(elf_at(0x8_FFFF, 2, 2)),
            Boots,
        ),
        case("all of low memory", multiboot(elf_at(0, 2, MIB)), Refused(BOOT_INFO)),
        case(
            "p_filesz larger than p_memsz",
            multiboot(elf(&[seg(MIB, 2, 1)], MIB, &CODE)),
            Refused("larger than memsz"),
        ),
        case(
            "p_filesz larger than p_memsz 0",
            multiboot(elf(&[seg(MIB, 2, 2), seg(MIB + PAGE, 2, 0)], MIB, &CODE)),
            Refused("larger than memsz"),
        ),
        case(
            "p_offset+p_filesz one past the end of the file",
            multiboot(elf(&[seg(MIB, 3, 3)], MIB, &CODE)),
            Refused("beyond the file"),
        ),
        case(
            "p_offset past the end of the file",
            multiboot(elf(
                &[Seg {
                    offset: 0x1_0000,
                    ..seg(MIB, 2, 2)
                }],
                MIB,
                &CODE,
            )),
            Refused("beyond the file"),
        ),
        case(
            "p_offset+p_filesz wraps 32 bits",
            multiboot(elf(
                &[Seg {
                    offset: u32::MAX,
                    ..seg(MIB, 2, 2)
                }],
                MIB,
                &CODE,
            )),
            Refused("beyond the file"),
        ),
        case("overlapping segments", multiboot(overlap.clone()), Refused("overlap")),
        case(
            "the same segment twice",
            multiboot(elf(&[seg(MIB, 2, 2), seg(MIB, 2, 2)], MIB, &CODE)),
            Refused("overlap"),
        ),
        case(
            "a segment inside another's bss",
            multiboot(elf(&[seg(MIB, 2, 0x4000), seg(MIB + 0x2000, 2, 2)], MIB, &CODE)),
            Refused("overlap"),
        ),
        case(
            "no program headers",
            multiboot(elf(&[], MIB, &CODE)),
            Refused("no loadable segments"),
        ),
        case(
            "only empty segments",
            multiboot(elf(&[seg(MIB, 0, 0)], MIB, &CODE)),
            Refused("no loadable segments"),
        ),
    ];
    // The overlap also caught when the segments come in the other order.
    let (a, b) = (PHOFF, PHOFF + PHENT);
    let first: Vec<u8> = overlap[a..b].to_vec();
    overlap.copy_within(b..b + PHENT, a);
    overlap[b..b + PHENT].copy_from_slice(&first);
    cases.push(case(
        "overlapping segments, reversed",
        multiboot(overlap),
        Refused("overlap"),
    ));

    // Header fields patched into the small kernel.
    let patched = |name: &str, patch: &dyn Fn(&mut Vec<u8>), expect: Expect| {
        let mut f = small_elf();
        patch(&mut f);
        case(name, multiboot(f), expect)
    };
    cases.extend([
        patched("bad multiboot magic", &|f| f[MB_OFF] ^= 1, Refused(NO_HEADER)),
        patched("bad multiboot checksum", &|f| f[MB_OFF + 8] ^= 1, Refused(NO_HEADER)),
        patched("bad ELF magic", &|f| f[1] = b'X', Refused("does not parse")),
        patched("64-bit class", &|f| f[4] = 2, Refused("malformed ELF")),
        patched("x86-64 machine", &|f| put16(f, 18, 62), Refused("32-bit x86")),
        patched("shared object", &|f| put16(f, 16, 3), Refused("not an executable")),
        patched(
            "e_phoff past the file",
            &|f| put32(f, 28, 0x1_0000),
            Refused("malformed ELF"),
        ),
        patched(
            "e_phoff wraps",
            &|f| put32(f, 28, 0xFFFF_FFF0),
            Refused("malformed ELF"),
        ),
        patched(
            "e_phnum past the file",
            &|f| put16(f, 44, 0xFFFF),
            Refused("malformed ELF"),
        ),
        patched(
            "e_phnum just past the file",
            &|f| put16(f, 44, 7),
            Refused("malformed ELF"),
        ),
    ]);
    for bit in 3..16 {
        cases.push(patched(
            &format!("required flag bit {bit}"),
            &|f| {
                put32(f, MB_OFF + 4, 1 << bit);
                fix_checksum(f, MB_OFF);
            },
            Refused("requires features"),
        ));
    }
    // The header's 12 bytes must lie within the first 8 KiB: at 8184 they do not.
    for (off, expect) in [(8180, Boots), (8184, Refused(NO_HEADER)), (8192, Refused(NO_HEADER))] {
        let mut f = elf(&[seg(MIB, 2, 2)], MIB, &CODE);
        f[MB_OFF..MB_OFF + 12].fill(0);
        f.resize(off + 12, 0);
        put_mb_header(&mut f, off, 0, None);
        cases.push(case(format!("multiboot header at {off}"), multiboot(f), expect));
    }
    check_cases(cases);
}

#[test]
fn a_higher_half_kernel_enters_at_its_physical_address() {
    let mut s = seg(MIB, 2, 2);
    s.vaddr = 0xC010_0000;
    let kernel = multiboot(elf(&[s], 0xC010_0000 + 1, &CODE));
    let m = Machine::boot(RAM, &kernel, &mut NoInput { rtc_start: 0 }).expect("a higher-half kernel boots");
    assert_eq!(m.cpu.state.eip, MIB + 1);
}

#[test]
fn aout_kludge_kernels_at_the_edges() {
    use Expect::*;
    let small = |a: Aout| multiboot(aout(a, 2));
    let base = aout_fields(MIB, 2, PAGE);
    let file_end = MIB + AOUT_HDR + 2;
    // The header later in the file, with header_addr following it.
    let mut late = vec![0x90u8; 64 + 32 + 2];
    late[96..98].copy_from_slice(&CODE);
    put_mb_header(&mut late, 64, FLAG_AOUT, Some([MIB + 64, MIB, MIB + 98, 0, MIB + 96]));
    let mut truncated = vec![0u8; 24];
    put_mb_header(&mut truncated, 0, FLAG_AOUT, None);
    let cases = vec![
        case("valid", small(base), Boots),
        case("header later in the file", multiboot(late.clone()), Boots),
        case(
            "load_end_addr 0 loads the whole file",
            small(Aout {
                load_end_addr: 0,
                bss_end_addr: 0,
                ..base
            }),
            Boots,
        ),
        case("no bss", small(aout_fields(MIB, 2, 0)), Boots),
        case(
            "image ends exactly at the top of RAM",
            small(aout_fields(TOP - 34, 2, 0)),
            Boots,
        ),
        case(
            "empty bss ending exactly at the top of RAM",
            small(Aout {
                bss_end_addr: TOP,
                ..aout_fields(TOP - 34, 2, 0)
            }),
            Boots,
        ),
        case(
            "bss ends exactly at the top of RAM",
            small(aout_fields(MIB, 2, TOP - file_end)),
            Boots,
        ),
        case(
            "header_addr below load_addr",
            small(Aout {
                header_addr: MIB - 4,
                ..base
            }),
            Refused("below load_addr"),
        ),
        case(
            "header_addr further in than the header is in the file",
            small(Aout {
                header_addr: MIB + 4,
                ..base
            }),
            Refused("before the file's start"),
        ),
        case(
            "header_addr 0xFFFFFFFF",
            small(Aout {
                header_addr: u32::MAX,
                load_addr: 0,
                ..base
            }),
            Refused("before the file's start"),
        ),
        case(
            "load_end_addr below load_addr",
            small(Aout {
                load_end_addr: MIB - 1,
                ..base
            }),
            Refused("below load_addr"),
        ),
        case(
            "load_end_addr one past the file",
            small(Aout {
                load_end_addr: file_end + 1,
                ..base
            }),
            Refused("the file has"),
        ),
        case(
            "load_end_addr 0xFFFFFFFF",
            small(Aout {
                load_end_addr: u32::MAX,
                ..base
            }),
            Refused("the file has"),
        ),
        case(
            "image one byte past the top of RAM",
            small(aout_fields(TOP - 33, 2, 0)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "load_addr at the top of RAM",
            small(aout_fields(TOP, 2, 0)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "load_addr near 4 GiB, whole file",
            small(Aout {
                load_end_addr: 0,
                bss_end_addr: 0,
                ..aout_fields(0xFFFF_FFF0, 2, 0)
            }),
            Refused("beyond 4 GiB"),
        ),
        case(
            "bss_end_addr below the image's end",
            small(Aout {
                bss_end_addr: file_end - 1,
                ..base
            }),
            Refused("below the loaded image's end"),
        ),
        case(
            "bss_end_addr one past the top of RAM",
            small(aout_fields(MIB, 2, TOP - file_end + 1)),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "bss_end_addr 0xFFFFFFFF",
            small(Aout {
                bss_end_addr: u32::MAX,
                ..base
            }),
            Refused(DOES_NOT_FIT),
        ),
        case("over the boot-info area", small(aout_fields(INFO_ADDR, 2, 0)), Boots),
        case(
            "bss over the boot-info area",
            small(aout_fields(0x600, 2, 0x1000)),
            Boots,
        ),
        case(
            "bss over all of conventional memory",
            small(aout_fields(0x600, 2, 0xA_0000)),
            Refused(BOOT_INFO),
        ),
        case(
            "address fields cut off by the end of the file",
            multiboot(truncated),
            Refused("truncated"),
        ),
    ];
    check_cases(cases);
}

/// The module list entry `i` of a booted machine: (start, end).
fn module_range(m: &Machine, i: usize) -> (u32, u32) {
    let ram = m.platform.mem.ram();
    let info = m.cpu.state.regs[reg::EBX] as usize;
    assert_eq!(m.cpu.state.regs[reg::EAX], MULTIBOOT_BOOTLOADER_MAGIC);
    assert!(get32(ram, info + 20) as usize > i, "mods_count");
    let list = get32(ram, info + 24) as usize + 16 * i;
    (get32(ram, list), get32(ram, list + 4))
}

#[test]
fn an_empty_module_after_a_kernel_ending_at_the_top_of_ram_boots() {
    // Page counts that fill their last bitmap word exactly and ones that do
    // not: the first kind is where an index one past the end fell outside.
    for ram in [RAM, RAM + u64::from(PAGE), 4 << 20, 3 << 20] {
        let top = ram as u32;
        for (what, image) in [
            ("ELF", elf_at(top - 2, 2, 2)),
            ("a.out", aout(aout_fields(top - 34, 2, 0), 2)),
        ] {
            let kernel = with_modules(image, vec![module(0), module(0)]);
            let Outcome::Booted(m) = boot(ram, &kernel) else {
                panic!("{what} kernel with RAM {ram:#x} should boot");
            };
            assert_eq!(module_range(&m, 0), (top, top), "{what}, RAM {ram:#x}");
            assert_eq!(module_range(&m, 1), (top, top), "{what}, RAM {ram:#x}");
            assert_eq!(
                m.platform.mem.ram()[top as usize - 1],
                CODE[1],
                "{what}: last byte loaded"
            );
        }
    }
}

#[test]
fn modules_at_the_edges() {
    use Expect::*;
    let after_kernel = MIB + PAGE;
    let cases = vec![
        case("an empty module", with_modules(small_elf(), vec![module(0)]), Boots),
        case(
            "a module ending exactly at the top of RAM",
            with_modules(small_elf(), vec![module((TOP - after_kernel) as usize)]),
            Boots,
        ),
        case(
            "an empty module after one ending at the top",
            with_modules(small_elf(), vec![module((TOP - after_kernel) as usize), module(0)]),
            Boots,
        ),
        case(
            "a module one byte too big",
            with_modules(small_elf(), vec![module((TOP - after_kernel + 1) as usize)]),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "a module larger than RAM",
            with_modules(small_elf(), vec![module(RAM as usize + 1)]),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "a 1-byte module after a kernel ending at the top",
            with_modules(elf_at(TOP - 2, 2, 2), vec![module(1)]),
            Refused(DOES_NOT_FIT),
        ),
        case(
            "more modules than the boot-info area can list",
            with_modules(
                small_elf(),
                (0..40_000)
                    .map(|_| Module {
                        data: Vec::new(),
                        cmdline: String::new(),
                    })
                    .collect(),
            ),
            Refused("does not fit below"),
        ),
        case(
            "a command line longer than the boot-info area",
            Kernel::Multiboot {
                image: small_elf(),
                cmdline: "x".repeat(0x9_0000),
                modules: Vec::new(),
            },
            Refused("does not fit below"),
        ),
    ];
    check_cases(cases);

    let Outcome::Booted(m) = boot(RAM, &with_modules(small_elf(), vec![module(0), module(3)])) else {
        panic!("two modules should boot");
    };
    // Page-aligned after the kernel; the empty one takes no room.
    assert_eq!(module_range(&m, 0), (after_kernel, after_kernel));
    assert_eq!(module_range(&m, 1), (after_kernel, after_kernel + 3));
}

#[test]
fn flat_binaries_at_the_edges() {
    use Expect::*;
    let cases = vec![
        case("a boot sector", flat(0x7C00, 512), Boots),
        case("empty", flat(0x7C00, 0), Boots),
        case("empty just below 1 MiB", flat(0xF_FFFF, 0), Boots),
        case("last byte just below 1 MiB", flat(0xF_FFFF, 1), Boots),
        case("crossing 1 MiB", flat(0xF_FFF0, 0x20), Boots),
        case("over the VGA and BIOS area", flat(0x9_0000, 0x7_0000), Boots),
        case("up to the top of RAM", flat(0x7C00, (TOP - 0x7C00) as usize), Boots),
        case(
            "one byte past the top of RAM",
            flat(0, TOP as usize + 1),
            Refused(DOES_NOT_FIT),
        ),
        case("at 1 MiB", flat(MIB, 1), Refused("below 1 MiB")),
        case("empty at 1 MiB", flat(MIB, 0), Refused("below 1 MiB")),
        case("at the top of RAM", flat(TOP, 1), Refused("below 1 MiB")),
        case("at 4 GiB - 1", flat(u32::MAX, 2), Refused("below 1 MiB")),
    ];
    check_cases(cases);
}

/// Values at every edge a 32-bit field can hit: the boot-info area, 1 MiB,
/// the top of RAM, the file's own size and 4 GiB.
fn edges32(file_len: usize) -> Vec<u32> {
    let l = file_len as u32;
    let mut v = vec![
        0,
        1,
        2,
        0x7FF,
        0x800,
        INFO_ADDR,
        0x8_FFFF,
        0x9_0000,
        0xF_FFFF,
        MIB,
        MIB + 1,
        TOP - PAGE,
        TOP - 2,
        TOP - 1,
        TOP,
        TOP + 1,
        0x7FFF_FFFF,
        0x8000_0000,
        0xFFFF_F000,
        0xFFFF_FFFE,
        0xFFFF_FFFF,
    ];
    v.extend([l.wrapping_sub(1), l, l + 1, DATA_OFF as u32, MB_OFF as u32]);
    v
}

const EDGES16: [u16; 12] = [0, 1, 2, 3, 4, 0x20, 0x28, 0x34, 0x38, 0x40, 0x7FFF, 0xFFFF];

#[test]
fn every_elf_header_field_at_every_edge() {
    let base = small_elf();
    let mut images = Vec::new();
    let u32_fields = [
        ("e_version", 20),
        ("e_entry", 24),
        ("e_phoff", 28),
        ("e_shoff", 32),
        ("p_type", PHOFF),
        ("p_offset", PHOFF + 4),
        ("p_vaddr", PHOFF + 8),
        ("p_paddr", PHOFF + 12),
        ("p_filesz", PHOFF + 16),
        ("p_memsz", PHOFF + 20),
        ("p_align", PHOFF + 28),
    ];
    for (field, off) in u32_fields {
        for v in edges32(base.len()) {
            let mut f = base.clone();
            put32(&mut f, off, v);
            images.push((format!("{field}={v:#x}"), RAM, multiboot(f)));
        }
    }
    let u16_fields = [
        ("e_type", 16),
        ("e_machine", 18),
        ("e_ehsize", 40),
        ("e_phentsize", 42),
        ("e_phnum", 44),
        ("e_shentsize", 46),
        ("e_shnum", 48),
        ("e_shstrndx", 50),
    ];
    for (field, off) in u16_fields {
        for v in EDGES16 {
            let mut f = base.clone();
            put16(&mut f, off, v);
            images.push((format!("{field}={v:#x}"), RAM, multiboot(f)));
        }
    }
    for (i, field) in [(4, "EI_CLASS"), (5, "EI_DATA"), (6, "EI_VERSION")] {
        for v in [0u8, 1, 2, 3, 0xFF] {
            let mut f = base.clone();
            f[i] = v;
            images.push((format!("{field}={v}"), RAM, multiboot(f)));
        }
    }
    // Section headers that point anywhere: a loader needs none of them.
    for shoff in edges32(base.len()) {
        for shnum in [1u16, 2, 0xFFFF] {
            let mut f = base.clone();
            put32(&mut f, 32, shoff);
            put16(&mut f, 48, shnum);
            images.push((format!("e_shoff={shoff:#x} e_shnum={shnum}"), RAM, multiboot(f)));
        }
    }
    let n = check_no_panics("ELF header fields", images);
    assert!(n > 400, "{n} images");
}

#[test]
fn a_second_segment_at_every_edge() {
    let mut images = Vec::new();
    let sizes = [0u32, 1, 2, PAGE, TOP - MIB, 0x7FFF_FFFF, u32::MAX];
    for paddr in edges32(DATA_OFF + 2) {
        for memsz in sizes {
            for filesz in [0u32, 2] {
                let segs = [seg(MIB, 2, 2), seg(paddr, filesz, memsz)];
                let f = elf(&segs, MIB, &CODE);
                images.push((
                    format!("paddr={paddr:#x} filesz={filesz} memsz={memsz:#x}"),
                    RAM,
                    multiboot(f),
                ));
            }
        }
    }
    check_no_panics("two segments", images);
}

#[test]
fn every_aout_field_at_every_edge() {
    let base = small_aout();
    let mut images = Vec::new();
    let fields = [
        "header_addr",
        "load_addr",
        "load_end_addr",
        "bss_end_addr",
        "entry_addr",
    ];
    for (i, field) in fields.into_iter().enumerate() {
        for v in edges32(base.len()) {
            let mut f = base.clone();
            put32(&mut f, 12 + 4 * i, v);
            images.push((format!("{field}={v:#x}"), RAM, multiboot(f)));
        }
    }
    // load_addr and header_addr moved together keep the header consistent,
    // so the other checks are reached at every address.
    for v in edges32(base.len()) {
        for load_end_zero in [false, true] {
            let mut a = aout_fields(v, 2, PAGE);
            if load_end_zero {
                a.load_end_addr = 0;
            }
            images.push((format!("loaded at {v:#x}, {a:?}"), RAM, multiboot(aout(a, 2))));
        }
    }
    // Every multiboot flag bit, on both kinds of kernel.
    for bit in 0..32 {
        for (kind, image) in [("ELF", small_elf()), ("a.out", small_aout())] {
            let off = if kind == "ELF" { MB_OFF } else { 0 };
            let mut f = image;
            let flags = get32(&f, off + 4) ^ (1 << bit);
            put32(&mut f, off + 4, flags);
            fix_checksum(&mut f, off);
            images.push((format!("{kind} with flag bit {bit} flipped"), RAM, multiboot(f)));
        }
    }
    let n = check_no_panics("a.out fields", images);
    assert!(n > 150, "{n} images");
}

#[test]
fn every_byte_flipped() {
    let mut images = Vec::new();
    for (kind, base, mb) in [("ELF", small_elf(), MB_OFF), ("a.out", small_aout(), 0)] {
        for i in 0..base.len() {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut f = base.clone();
                f[i] ^= x;
                // With the checksum repaired the flip reaches the loader
                // rather than stopping at the header search.
                let mut fixed = f.clone();
                if (mb..mb + 8).contains(&i) {
                    fix_checksum(&mut fixed, mb);
                }
                images.push((format!("{kind} byte {i} ^ {x:#x}"), RAM, multiboot(f)));
                images.push((
                    format!("{kind} byte {i} ^ {x:#x}, checksum fixed"),
                    RAM,
                    multiboot(fixed),
                ));
            }
        }
    }
    check_no_panics("flipped bytes", images);
}

#[test]
fn every_prefix_of_a_valid_image() {
    // A bigger ELF kernel too: the multiboot header deep in the file and two
    // segments after it.
    let mut big = elf(
        &[
            Seg {
                offset: 0x1100,
                ..seg(MIB, 0x200, 0x200)
            },
            Seg {
                offset: 0x1300,
                ..seg(MIB + PAGE, 0x100, 0x2000)
            },
        ],
        MIB,
        &vec![0x90; 0x1300],
    );
    big[MB_OFF..MB_OFF + 12].fill(0);
    put_mb_header(&mut big, 0x1000, 0, None);
    let no_load_end = aout(
        Aout {
            load_end_addr: 0,
            ..aout_fields(MIB, 2, PAGE)
        },
        2,
    );
    let mut images = Vec::new();
    for (kind, full) in [
        ("ELF", small_elf()),
        ("a.out", small_aout()),
        ("a.out to the end of file", no_load_end),
        ("big ELF", big),
    ] {
        let Outcome::Booted(_) = boot(RAM, &multiboot(full.clone())) else {
            panic!("the whole {kind} image should boot");
        };
        for len in 0..full.len() {
            images.push((
                format!("{kind} cut to {len} bytes"),
                RAM,
                multiboot(full[..len].to_vec()),
            ));
        }
    }
    let n = check_no_panics("prefixes", images);
    assert!(n > 5000, "{n} images");
    // Cut anywhere, the small ELF kernel loses something it needs.
    let full = small_elf();
    for len in 0..full.len() {
        assert!(
            matches!(boot(RAM, &multiboot(full[..len].to_vec())), Outcome::Refused(_)),
            "ELF kernel cut to {len} bytes should be refused"
        );
    }
}

// The command line, end to end: hostile files are refused with exit status 2
// and a message naming the problem; legitimate edges run.

fn scratch(name: &str, bytes: &[u8]) -> String {
    common::scratch("hostile", name, bytes)
}

#[test]
fn the_cli_refuses_hostile_files_with_a_message() {
    let top = 2u32 << 20;
    let mut bad_checksum = small_elf();
    bad_checksum[MB_OFF + 8] ^= 1;
    let mut phoff_past_eof = small_elf();
    put32(&mut phoff_past_eof, 28, 0x1_0000);
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad-checksum.elf", bad_checksum, NO_HEADER),
        ("past-ram.elf", elf_at(top - 1, 2, 2), DOES_NOT_FIT),
        ("huge-memsz.elf", elf_at(MIB, 2, u32::MAX), DOES_NOT_FIT),
        ("past-eof.elf", elf(&[seg(MIB, 3, 3)], MIB, &CODE), "beyond the file"),
        ("low-memory.elf", elf_at(0, 2, MIB), BOOT_INFO),
        (
            "overlap.elf",
            elf(&[seg(MIB, 2, PAGE), seg(MIB + 2, 2, 2)], MIB, &CODE),
            "overlap",
        ),
        (
            "bss-below-end.aout",
            aout(
                Aout {
                    bss_end_addr: MIB + 1,
                    ..aout_fields(MIB, 2, PAGE)
                },
                2,
            ),
            "below the loaded image's end",
        ),
        ("cut.elf", small_elf()[..DATA_OFF + 1].to_vec(), "beyond the file"),
        ("phoff.elf", phoff_past_eof, "program headers"),
    ];
    for (name, bytes, needle) in files {
        let path = scratch(name, &bytes);
        let out = ringback(&["run", &path, "--mem", "2M", "--max-insns", "1000"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn the_cli_runs_kernels_ending_at_the_top_of_ram() {
    let top = 2u32 << 20;
    let elf_top = scratch("top.elf", &elf_at(top - 2, 2, 2));
    let aout_top = scratch(
        "top.aout",
        &aout(
            Aout {
                bss_end_addr: top,
                ..aout_fields(top - 34, 2, 0)
            },
            2,
        ),
    );
    let empty = scratch("empty.mod", b"");
    for args in [
        vec!["run", &elf_top],
        vec!["run", &elf_top, "--module", &empty],
        vec!["run", &aout_top, "--module", &empty],
    ] {
        let mut args = args;
        args.extend(["--mem", "2M", "--max-insns", "1000"]);
        let out = ringback(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

// Linux bzImages: a setup header of protocol 2.15 with one setup sector,
// and `cli; hlt` as the protected-mode kernel at 1 MiB.

const HDR_VERSION: usize = 0x206;
const HDR_FIELDS: [(usize, u8); 9] = [
    (0x1F1, 1), // setup_sects
    (0x201, 1), // the jump's offset: the header's length
    (0x206, 2), // version
    (0x211, 1), // loadflags
    (0x214, 4), // code32_start
    (0x22C, 4), // initrd_addr_max
    (0x238, 4), // cmdline_size
    (0x258, 4), // pref_address (low half)
    (0x260, 4), // init_size
];

fn bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    b[0x1F1] = 1;
    put16(&mut b, 0x1FE, 0xAA55);
    b[0x200] = 0xEB;
    b[0x201] = 0x66;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut b, HDR_VERSION, 0x020F);
    b[0x211] = 1;
    put32(&mut b, 0x214, MIB);
    put32(&mut b, 0x22C, 0x37FF_FFFF);
    put32(&mut b, 0x238, 255);
    put32(&mut b, 0x258, MIB);
    put32(&mut b, 0x260, 0x1_0000);
    b.extend_from_slice(&CODE);
    b
}

fn linux(image: Vec<u8>, initrd: Option<Vec<u8>>, cmdline: &str) -> Kernel {
    Kernel::Linux {
        image,
        initrd,
        cmdline: cmdline.into(),
    }
}

#[test]
fn linux_kernels_at_the_edges() {
    let Outcome::Booted(m) = boot(
        RAM,
        &linux(bzimage(), Some(vec![7; 3 * PAGE as usize]), "console=ttyS0"),
    ) else {
        panic!("the bzImage should boot");
    };
    assert_eq!(m.cpu.state.regs[reg::ESI], 0x7000, "ESI points at the zero page");
    assert!(m.cpu.state.halted, "the kernel ran to its hlt");
    let mut old = bzimage();
    put16(&mut old, HDR_VERSION, 0x0205);
    let mut zimage = bzimage();
    zimage[0x211] = 0;
    let mut huge_init = bzimage();
    put32(&mut huge_init, 0x260, RAM as u32);
    check_cases(vec![
        case(
            "cut before the kernel",
            linux(bzimage()[..1024].to_vec(), None, ""),
            Expect::Refused("before its protected-mode code"),
        ),
        case(
            "protocol 2.05",
            linux(old, None, ""),
            Expect::Refused("older than 2.06"),
        ),
        case("a zImage", linux(zimage, None, ""), Expect::Refused("zImage")),
        case(
            "init_size past RAM",
            linux(huge_init, None, ""),
            Expect::Refused("needs RAM up to"),
        ),
        case(
            "a command line of 255 bytes",
            linux(bzimage(), None, &"x".repeat(255)),
            Expect::Boots,
        ),
        case(
            "a command line of 256 bytes",
            linux(bzimage(), None, &"x".repeat(256)),
            Expect::Refused("at most 255"),
        ),
        case(
            "an initrd as large as RAM",
            linux(bzimage(), Some(vec![0; RAM as usize]), ""),
            Expect::Refused("does not fit"),
        ),
        case(
            "an empty initrd",
            linux(bzimage(), Some(Vec::new()), ""),
            Expect::Refused("initrd (0 bytes)"),
        ),
        case(
            "an initrd filling the RAM the kernel leaves",
            linux(bzimage(), Some(vec![1; (TOP - 0x2_0000 - MIB - 0x1_0000) as usize]), ""),
            Expect::Boots,
        ),
        case(
            "one page more",
            linux(
                bzimage(),
                Some(vec![1; (TOP - 0x2_0000 - MIB - 0x1_0000 + PAGE) as usize]),
                "",
            ),
            Expect::Refused("does not fit"),
        ),
    ]);
}

#[test]
fn every_linux_header_field_at_every_edge_and_every_prefix() {
    let base = bzimage();
    let mut images = Vec::new();
    for (at, width) in HDR_FIELDS {
        let max = if width == 4 {
            u32::MAX
        } else {
            (1u32 << (8 * width)) - 1
        };
        for v in [
            0,
            1,
            2,
            0x7F,
            0x80,
            0xFF,
            0x100,
            0x206,
            0x20A,
            0xFFFF,
            0x10_0000,
            max - 1,
            max,
        ] {
            let v = v.min(max);
            let mut f = base.clone();
            f[at..at + usize::from(width)].copy_from_slice(&v.to_le_bytes()[..usize::from(width)]);
            for initrd in [None, Some(vec![9u8; 5000])] {
                let with = if initrd.is_some() { " with an initrd" } else { "" };
                images.push((
                    format!("field {at:#x} = {v:#x}{with}"),
                    RAM,
                    linux(f.clone(), initrd, "x"),
                ));
            }
        }
    }
    for len in 0..base.len() {
        images.push((
            format!("cut to {len} bytes"),
            RAM,
            linux(base[..len].to_vec(), None, ""),
        ));
    }
    for i in 0x1F0..0x270 {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut f = base.clone();
            f[i] ^= x;
            images.push((format!("byte {i:#x} ^ {x:#x}"), RAM, linux(f, None, "")));
        }
    }
    let n = check_no_panics("bzImages", images);
    assert!(n > 1500, "{n} images");
}

#[test]
fn the_cli_boots_linux_images_and_refuses_bad_ones_with_a_message() {
    let good = scratch("good.bzimage", &bzimage());
    let initrd = scratch("initrd.cpio", &[5u8; 4096]);
    let out = ringback(&["run", &good, "--initrd", &initrd, "--append", "quiet", "--mem", "2M"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("halted with interrupts disabled"));
    let cut = scratch("cut.bzimage", &bzimage()[..1000]);
    let big = scratch("big.cpio", &vec![0u8; 2 << 20]);
    for (args, needle) in [
        (
            vec!["run", cut.as_str(), "--mem", "2M"],
            "ends (1000 bytes) before its protected-mode code",
        ),
        (
            vec!["run", good.as_str(), "--initrd", big.as_str(), "--mem", "2M"],
            "does not fit",
        ),
        (
            vec!["run", good.as_str(), "--module", initrd.as_str(), "--mem", "2M"],
            "a Linux kernel takes its initramfs with --initrd",
        ),
    ] {
        let out = ringback(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err}");
    }
}
